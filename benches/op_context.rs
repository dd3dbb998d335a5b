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
//! `cargo bench --bench op_context` (release, real-time priority where permitted, as the
//! stages run). Knobs: `SIMREAL_OPCTX_REPS` (timed forwards per cell, default 8),
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
    let gap = gap_table(&model, n, reps)?;
    let crossover = crossover_table(&model, reps)?;
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
    });
    write_results(&report, &gap, &crossover)
}

fn write_results(
    report: &serde_json::Value,
    gap: &[GapRow],
    crossover: &[CrossoverRow],
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
        "# Op cost by context: batch structure and projection kernel\n\n\
         `cargo bench --bench op_context` — qwen3_0_6b f32, 2 threads, {} timed forwards per cell, \
         interleaved; {} → {}; load average {}; device probe memory {} GB/s, compute {} GFLOP/s.\n\n\
         ## The same {} tokens in four batch structures\n\n\
         Median ms per layer. *profiler*: batch prepared once, a 10 % idle gap after each forward; \
         *engine*: batch prepared before each forward, back to back.\n\n\
         | structure | mode | forward ms |",
        report["reps"],
        report["started_utc"].as_str().unwrap_or(""),
        report["ended_utc"].as_str().unwrap_or(""),
        pair("load_average_1min"),
        rate("memory_gb_per_s"),
        rate("compute_gflop_per_s"),
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
    std::fs::write(dir.join("op_context.md"), md)?;
    println!("wrote benches/results/op_context.{{json,md}}");
    Ok(())
}
