//! Does an op cost the same in the profiler as in the engine, and which projection kernel
//! should serve how many rows?
//!
//! **Batch structure.** The profiler pools token-level ops (projections, norms, adds) by
//! token count, from forwards of one-token sequences or of decode batches; the engine's
//! prefill iterations run the same token count as one long sequence, or as a chunk next to
//! decodes. One token count is timed in each of those structures, each both in the
//! profiler's way (the batch prepared once, a 10 % gap after the forward) and in the engine's
//! (the batch prepared before every forward, forwards back to back), all interleaved; the
//! per-op medians give the profile-vs-engine gap per op.
//!
//! **Kernel crossover.** Prefill forwards of one sequence over a range of row counts, with the
//! small-m kernel serving every projection up to the crossover (today's setting), and with the
//! GEMM serving all of them, interleaved forward by forward; medians of the per-layer
//! projection times inside real forwards, which is what the engine pays (the isolated
//! best-of-N table of `benches/engine.rs` hides the small-m kernel's call-to-call spread).
//!
//! **KV placement.** Decode attention over the same contexts with each sequence's blocks side
//! by side, where a fresh pool puts decodes growing together (interleaved; the profiler lays
//! its tables out so), and anywhere in the pool (after churn), and with ragged lengths of the
//! same mean, which the predictor looks up at the mean.
//!
//! `cargo bench --bench op_context` (release, real-time priority where permitted, as the
//! stages run). Knobs: `SIMREAL_OPCTX_REPS` (timed forwards per cell, default 8),
//! `SIMREAL_OPCTX_PLACEMENT_ONLY` (only the KV-placement table),
//! `SIMREAL_OPCTX_TOKENS` (the structures' token count, default 155). Uses the stages'
//! synthesized `qwen3_0_6b` f32 weights. Writes `benches/results/op_context.{json,md}`.

mod common;

use common::median;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use serde::Serialize;
use serde_json::json;
use simreal::io::ops::Op;
use simreal::real_bench::device_probe::{load_average_1min, DeviceProbe};
use simreal::real_bench::model::*;
use simreal::real_bench::profiler::growing_block_tables;

const BLOCK: usize = 16;
/// Cached tokens of every decoding sequence.
const CONTEXT: usize = 256;
/// Decodes next to the chunk in the mixed structure.
const MIXED_DECODES: usize = 8;
/// The ops whose gap is reported (each ≥ 2 % of a prefill iteration's busy time, or `add`,
/// which the replays mis-predicted most).
const OPS: [Op; 6] = [
    Op::AttnPreProj,
    Op::AttnPostProj,
    Op::MlpUpProj,
    Op::MlpDownProj,
    Op::Add,
    Op::InputLayernorm,
];
/// Projections timed in the crossover table.
const PROJECTIONS: [Op; 4] = [
    Op::AttnPreProj,
    Op::AttnPostProj,
    Op::MlpUpProj,
    Op::MlpDownProj,
];
/// Decode batch sizes and mean context of the KV-placement table.
const PLACEMENT_BATCHES: [usize; 2] = [2, 8];
const PLACEMENT_CONTEXT: usize = 512;
/// The pool the scattered placement draws from, in multiples of the blocks the batch holds.
const PLACEMENT_POOL_FACTOR: usize = 3;
const CROSSOVER_ROWS: [usize; 12] = [16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192];

/// One batch structure: per sequence, (new tokens, cached tokens).
struct Structure {
    name: &'static str,
    seqs: Vec<(usize, usize)>,
}

fn structures(n: usize) -> Vec<Structure> {
    vec![
        Structure {
            name: "one sequence's prefill (engine)",
            seqs: vec![(n, 0)],
        },
        Structure {
            name: "chunk + 8 decodes (engine, sarathi)",
            seqs: std::iter::once((n - MIXED_DECODES, 0))
                .chain(std::iter::repeat_n((1, CONTEXT), MIXED_DECODES))
                .collect(),
        },
        Structure {
            name: "one-token sequences, empty cache (profiler)",
            seqs: vec![(1, 0); n],
        },
        Structure {
            name: "decode batch, 256 cached (profiler)",
            seqs: vec![(1, CONTEXT); n],
        },
    ]
}

/// How a forward is run.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Prepared once, a 10 % gap after each forward.
    Profiler,
    /// Prepared before each forward, back to back.
    Engine,
}

const MODES: [Mode; 2] = [Mode::Profiler, Mode::Engine];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Profiler => "profiler",
            Mode::Engine => "engine",
        }
    }
}

#[derive(Serialize)]
struct GapRow {
    structure: &'static str,
    mode: &'static str,
    forward_ms: f64,
    /// Per op: median ms per layer.
    op_ms: Vec<(String, f64)>,
}

#[derive(Serialize)]
struct CrossoverRow {
    rows: usize,
    /// Median ms per layer of the four projections summed, small-m kernel / GEMM.
    small_m_ms: f64,
    gemm_ms: f64,
    /// Median ÷ min of the same, a measure of the call-to-call spread.
    small_m_spread: f64,
    gemm_spread: f64,
}

fn per_layer_ms(t: &OpTotals, op: Op, layers: usize) -> f64 {
    t.total(op).as_secs_f64() * 1e3 / layers as f64
}

/// Token ids and disjoint block tables for up to `max_seqs` sequences of up to `max_len`.
struct Inputs {
    ids: Vec<u32>,
    tables: Vec<Vec<usize>>,
}

impl Inputs {
    fn new(max_seqs: usize, max_len: usize) -> Inputs {
        let per_seq = max_len.div_ceil(BLOCK);
        Inputs {
            ids: (0..max_len as u32)
                .map(|i| (i * 7919 + 11) % 151_936)
                .collect(),
            tables: (0..max_seqs)
                .map(|s| (s * per_seq..(s + 1) * per_seq).collect())
                .collect(),
        }
    }

    fn blocks(&self) -> usize {
        self.tables.iter().map(Vec::len).sum()
    }

    /// Every sequence asks for logits, as decodes do and a prefill's last token does.
    fn seqs(&self, layout: &[(usize, usize)]) -> Vec<SequenceInput<'_>> {
        layout
            .iter()
            .zip(&self.tables)
            .map(|(&(tokens, cached), table)| SequenceInput {
                token_ids: &self.ids[..tokens],
                num_cached_tokens: cached,
                block_table: table,
                wants_logits: true,
            })
            .collect()
    }
}

fn gap_table(model: &Qwen3Model, n: usize, reps: usize) -> Result<Vec<GapRow>> {
    let structures = structures(n);
    let inputs = Inputs::new(n, CONTEXT + n);
    let mut cache = model.new_kv_cache(inputs.blocks(), BLOCK)?;
    // Every block its own written page, so attention reads real memory.
    cache.map_blocks(inputs.blocks());
    let prepared = structures
        .iter()
        .map(|s| model.prepare_batch(&cache, &inputs.seqs(&s.seqs)))
        .collect::<simreal::Result<Vec<_>>>()?;
    let layers = model.config().num_hidden_layers;
    let mut samples: Vec<Vec<(Vec<f64>, Vec<OpTotals>)>> = (0..structures.len())
        .map(|_| vec![Default::default(); MODES.len()])
        .collect();
    // The first round warms up and is dropped.
    for round in 0..=reps {
        for (k, s) in structures.iter().enumerate() {
            for (m, &mode) in MODES.iter().enumerate() {
                let mut totals = OpTotals::default();
                let start = Instant::now();
                let logits = match mode {
                    Mode::Profiler => model.forward(&prepared[k], &mut cache, Some(&mut totals))?,
                    Mode::Engine => {
                        let batch = model.prepare_batch(&cache, &inputs.seqs(&s.seqs))?;
                        model.forward(&batch, &mut cache, Some(&mut totals))?
                    }
                };
                let wall = start.elapsed();
                model.sampler(&logits)?;
                if mode == Mode::Profiler {
                    std::thread::sleep(wall.mul_f64(0.1).max(Duration::from_millis(1)));
                }
                if round > 0 {
                    samples[k][m].0.push(wall.as_secs_f64() * 1e3);
                    samples[k][m].1.push(totals);
                }
            }
        }
    }
    let mut rows = Vec::new();
    for (s, per_mode) in structures.iter().zip(&samples) {
        for (&mode, (wall, totals)) in MODES.iter().zip(per_mode) {
            let op_ms = OPS
                .iter()
                .map(|&op| {
                    let v: Vec<f64> = totals.iter().map(|t| per_layer_ms(t, op, layers)).collect();
                    (op.name().to_string(), median(&v))
                })
                .collect();
            rows.push(GapRow {
                structure: s.name,
                mode: mode.name(),
                forward_ms: median(wall),
                op_ms,
            });
        }
    }
    Ok(rows)
}

/// One decode batch's KV layout: each sequence's cached tokens and block table.
struct Placement {
    name: &'static str,
    batch: usize,
    lens: Vec<usize>,
    tables: Vec<Vec<usize>>,
}

/// The KV layouts of a decode batch of `batch` sequences with `PLACEMENT_CONTEXT` cached
/// tokens on average. *contiguous*: each sequence's blocks side by side, sequences one after
/// another from block 0 (the profiler's tables until 2026-12-04). *growing*: what the
/// scheduler's LIFO pool hands out when the prompts (half the context) are admitted one after
/// another and the decodes then grow together, one block per sequence in turn (a fresh pool;
/// the profiler's tables now, `growing_block_tables`). *scattered*: blocks drawn at random
/// from a pool `PLACEMENT_POOL_FACTOR` times the batch's, as after much churn. *ragged*:
/// contiguous, with lengths spread from 0.25× to 1.75× the mean, which the predictor looks
/// up at the mean.
fn placements(batch: usize, pool_blocks: usize, rng: &mut impl rand::Rng) -> Vec<Placement> {
    use rand::seq::SliceRandom;
    let blocks_for = |len: usize| (len + 1).div_ceil(BLOCK);
    let uniform = vec![PLACEMENT_CONTEXT; batch];
    let contiguous = |lens: &[usize]| {
        let mut next = 0;
        lens.iter()
            .map(|&len| {
                let t: Vec<usize> = (next..next + blocks_for(len)).collect();
                next += t.len();
                t
            })
            .collect::<Vec<_>>()
    };
    let per_seq = blocks_for(PLACEMENT_CONTEXT);
    let growing = growing_block_tables(&vec![per_seq; batch], 0);
    let mut ids: Vec<usize> = (0..pool_blocks).collect();
    ids.shuffle(rng);
    let scattered = ids
        .chunks(per_seq)
        .take(batch)
        .map(<[usize]>::to_vec)
        .collect();
    let ragged: Vec<usize> = (0..batch)
        .map(|i| {
            let spread = if batch > 1 {
                1.5 * i as f64 / (batch - 1) as f64
            } else {
                0.75
            };
            (PLACEMENT_CONTEXT as f64 * (0.25 + spread)).round() as usize
        })
        .collect();
    vec![
        Placement {
            name: "contiguous",
            batch,
            tables: contiguous(&uniform),
            lens: uniform.clone(),
        },
        Placement {
            name: "growing: prompts, then decodes together (the profiler's)",
            batch,
            tables: growing,
            lens: uniform.clone(),
        },
        Placement {
            name: "scattered over the pool",
            batch,
            tables: scattered,
            lens: uniform,
        },
        Placement {
            name: "ragged lengths, contiguous",
            batch,
            tables: contiguous(&ragged),
            lens: ragged,
        },
    ]
}

#[derive(Serialize)]
struct PlacementRow {
    placement: &'static str,
    batch: usize,
    /// Median ms per layer of `attn_decode`, and median forward ms.
    attn_decode_ms: f64,
    forward_ms: f64,
    /// Median ÷ min of attn_decode per layer.
    attn_decode_spread: f64,
}

/// Decode forwards of every placement, interleaved round by round (the first round dropped),
/// each forward followed by the profiler's 10 % gap.
fn placement_table(model: &Qwen3Model, reps: usize) -> Result<Vec<PlacementRow>> {
    use rand::SeedableRng;
    let max_batch = *PLACEMENT_BATCHES.iter().max().unwrap_or(&1);
    let pool_blocks =
        PLACEMENT_POOL_FACTOR * max_batch * (2 * PLACEMENT_CONTEXT + 1).div_ceil(BLOCK);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let cells: Vec<Placement> = PLACEMENT_BATCHES
        .iter()
        .flat_map(|&b| placements(b, pool_blocks, &mut rng))
        .collect();
    let mut cache = model.new_kv_cache(pool_blocks, BLOCK)?;
    // Every block its own written page, so attention reads real memory.
    cache.map_blocks(pool_blocks);
    let ids = [1u32];
    let layers = model.config().num_hidden_layers;
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); cells.len()];
    for round in 0..=reps {
        for (cell, (attn, wall)) in cells.iter().zip(&mut samples) {
            let seqs: Vec<SequenceInput<'_>> = cell
                .lens
                .iter()
                .zip(&cell.tables)
                .map(|(&len, table)| SequenceInput {
                    token_ids: &ids,
                    num_cached_tokens: len,
                    block_table: table,
                    wants_logits: true,
                })
                .collect();
            let batch = model.prepare_batch(&cache, &seqs)?;
            let mut totals = OpTotals::default();
            let start = Instant::now();
            let logits = model.forward(&batch, &mut cache, Some(&mut totals))?;
            let elapsed = start.elapsed();
            model.sampler(&logits)?;
            std::thread::sleep(elapsed.mul_f64(0.1).max(Duration::from_millis(1)));
            if round > 0 {
                attn.push(per_layer_ms(&totals, Op::AttnDecode, layers));
                wall.push(elapsed.as_secs_f64() * 1e3);
            }
        }
    }
    Ok(cells
        .iter()
        .zip(&samples)
        .map(|(cell, (attn, wall))| PlacementRow {
            placement: cell.name,
            batch: cell.batch,
            attn_decode_ms: median(attn),
            forward_ms: median(wall),
            attn_decode_spread: median(attn) / attn.iter().copied().fold(f64::INFINITY, f64::min),
        })
        .collect())
}

fn crossover_table(model: &Qwen3Model, reps: usize) -> Result<Vec<CrossoverRow>> {
    let max_rows = *CROSSOVER_ROWS.iter().max().unwrap_or(&1);
    let inputs = Inputs::new(1, max_rows);
    let mut cache = model.new_kv_cache(inputs.blocks(), BLOCK)?;
    cache.map_blocks(inputs.blocks());
    let layers = model.config().num_hidden_layers;
    // Per row count, per kernel (small-m, GEMM): summed projection ms per layer.
    let mut samples = vec![[Vec::new(), Vec::new()]; CROSSOVER_ROWS.len()];
    let default_crossover = small_m_max_rows();
    for round in 0..=reps {
        for (i, &rows) in CROSSOVER_ROWS.iter().enumerate() {
            for (kernel, crossover) in [usize::MAX, 0].into_iter().enumerate() {
                set_small_m_max_rows(crossover);
                let batch = model.prepare_batch(&cache, &inputs.seqs(&[(rows, 0)]))?;
                let mut totals = OpTotals::default();
                let logits = model.forward(&batch, &mut cache, Some(&mut totals))?;
                model.sampler(&logits)?;
                if round > 0 {
                    let ms = PROJECTIONS
                        .iter()
                        .map(|&op| per_layer_ms(&totals, op, layers))
                        .sum::<f64>();
                    samples[i][kernel].push(ms);
                }
            }
        }
    }
    set_small_m_max_rows(default_crossover);
    let spread = |v: &[f64]| median(v) / v.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(CROSSOVER_ROWS
        .iter()
        .zip(&samples)
        .map(|(&rows, [small_m, gemm])| CrossoverRow {
            rows,
            small_m_ms: median(small_m),
            gemm_ms: median(gemm),
            small_m_spread: spread(small_m),
            gemm_spread: spread(gemm),
        })
        .collect())
}

fn main() -> Result<()> {
    let reps = common::env_usize("SIMREAL_OPCTX_REPS", 8)?;
    let n = common::env_usize("SIMREAL_OPCTX_TOKENS", 155)?;
    ensure!(
        n > MIXED_DECODES,
        "SIMREAL_OPCTX_TOKENS must exceed {MIXED_DECODES}"
    );
    let (model, timing) = common::stage_like_qwen3_0_6b()?;
    let started_utc = simreal::io::provenance::utc_now();
    let load_start = load_average_1min();
    let mut probe = DeviceProbe::new();
    let probe_start = probe.measure();
    let placement_only = std::env::var_os("SIMREAL_OPCTX_PLACEMENT_ONLY").is_some();
    let (gap, crossover) = if placement_only {
        (Vec::new(), Vec::new())
    } else {
        (gap_table(&model, n, reps)?, crossover_table(&model, reps)?)
    };
    let placement = placement_table(&model, reps)?;
    let probe_end = probe.measure();
    let report = json!({
        "started_utc": started_utc,
        "ended_utc": simreal::io::provenance::utc_now(),
        "load_average_1min": [load_start, load_average_1min()],
        "device_probe": {
            "memory_gb_per_s": [probe_start.memory_gb_per_s(), probe_end.memory_gb_per_s()],
            "compute_gflop_per_s": [probe_start.compute_gflop_per_s(), probe_end.compute_gflop_per_s()],
        },
        "timing": timing.applied(),
        "reps": reps,
        "structure_tokens": n,
        "small_m_max_rows": SMALL_M_MAX_ROWS,
        "structures": gap,
        "crossover": crossover,
        "placement_context": PLACEMENT_CONTEXT,
        "placement": placement,
    });
    write_results(&report, &gap, &crossover, &placement)
}

fn write_results(
    report: &serde_json::Value,
    gap: &[GapRow],
    crossover: &[CrossoverRow],
    placement: &[PlacementRow],
) -> Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("op_context.json"),
        serde_json::to_string_pretty(report)? + "\n",
    )?;
    let pair = |k: &str| {
        let v = &report[k];
        format!(
            "{:.2} → {:.2}",
            v[0].as_f64().unwrap_or(f64::NAN),
            v[1].as_f64().unwrap_or(f64::NAN)
        )
    };
    let probe = &report["device_probe"];
    let rate = |k: &str| {
        format!(
            "{:.1} → {:.1}",
            probe[k][0].as_f64().unwrap_or(f64::NAN),
            probe[k][1].as_f64().unwrap_or(f64::NAN)
        )
    };
    let mut md = format!(
        "# Op cost by context: batch structure, projection kernel, KV placement\n\n\
         `cargo bench --bench op_context` — qwen3_0_6b f32, 2 threads, {} timed forwards per cell, \
         interleaved; {} → {}; load average {}; device probe memory {} GB/s, compute {} GFLOP/s.\n",
        report["reps"],
        report["started_utc"].as_str().unwrap_or(""),
        report["ended_utc"].as_str().unwrap_or(""),
        pair("load_average_1min"),
        rate("memory_gb_per_s"),
        rate("compute_gflop_per_s"),
    );
    // SIMREAL_OPCTX_PLACEMENT_ONLY runs neither of the first two tables.
    if !gap.is_empty() {
        md += &format!(
            "\n## The same {} tokens in four batch structures\n\n\
             Median ms per layer. *profiler*: batch prepared once, a 10 % idle gap after each \
             forward; *engine*: batch prepared before each forward, back to back.\n\n\
             | structure | mode | forward ms |",
            report["structure_tokens"],
        );
        for op in OPS {
            md += &format!(" {} |", op.name());
        }
        md += "\n|---|---|---:|";
        md += &"---:|".repeat(OPS.len());
        md += "\n";
        for r in gap {
            md += &format!("| {} | {} | {:.0} |", r.structure, r.mode, r.forward_ms);
            for (_, ms) in &r.op_ms {
                md += &format!(" {ms:.3} |");
            }
            md += "\n";
        }
    }
    if !crossover.is_empty() {
        md += &format!(
            "\n## Projection kernel by rows, inside prefill forwards\n\n\
         The four projections' median ms per layer, summed, with the small-m kernel serving \
         every row count and with the GEMM serving every row count; spread = median ÷ min. \
         The engine uses the small-m kernel up to {} rows.\n\n\
         | rows | small-m ms | GEMM ms | GEMM ÷ small-m | small-m spread | GEMM spread |\n\
         |---:|---:|---:|---:|---:|---:|\n",
            SMALL_M_MAX_ROWS
        );
        for r in crossover {
            md += &format!(
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                r.rows,
                r.small_m_ms,
                r.gemm_ms,
                r.gemm_ms / r.small_m_ms,
                r.small_m_spread,
                r.gemm_spread
            );
        }
    }
    md += &format!(
        "\n## Decode attention by where the KV blocks sit\n\n\
         Decode batches with {PLACEMENT_CONTEXT} cached tokens per sequence on average, the same \
         forward with the blocks placed in four ways (see `placements` in the bench); median \
         `attn_decode` ms per layer, spread = median ÷ min; ratio to the contiguous placement \
         at the same batch size.\n\n\
         | batch | placement | attn_decode ms | ÷ contiguous | spread | forward ms |\n\
         |---:|---|---:|---:|---:|---:|\n"
    );
    for r in placement {
        let base = placement
            .iter()
            .find(|p| p.batch == r.batch)
            .map_or(f64::NAN, |p| p.attn_decode_ms);
        md += &format!(
            "| {} | {} | {:.3} | {:.3} | {:.2} | {:.0} |\n",
            r.batch,
            r.placement,
            r.attn_decode_ms,
            r.attn_decode_ms / base,
            r.attn_decode_spread,
            r.forward_ms
        );
    }
    std::fs::write(dir.join("op_context.md"), md)?;
    println!("wrote benches/results/op_context.{{json,md}}");
    Ok(())
}
