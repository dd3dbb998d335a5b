//! Times the model's op functions inside real forward passes over a grid of batch shapes.
//!
//! Every grid point is one [`ForwardShape`] — a decode step of `batch_size` sequences with
//! `kv_cache_size` cached tokens each, or one prefill chunk after `kv_cache_size` cached
//! tokens — run through [`Qwen3Model::forward`] itself with a [`SampleRecorder`] attached.
//! So each op is timed by the very call the engine makes, on tensors of a real batch's
//! shapes, between the same neighbours (caches, allocator and thread pool in the state a
//! real iteration leaves them); an `L`-layer forward gives `L` samples of every per-layer op.
//!
//! Token-level ops depend only on the number of tokens, so their samples are pooled over
//! every forward with the same token count. The per-iteration logits ops (`final_norm`,
//! `lm_head`, and `sampler`, which the engine calls right after the forward) are keyed by
//! logits rows: every decode-shaped forward asks for one logits row per sequence, and every
//! token count without a decode grid point (extra `num_tokens`, prefill chunk sizes) is run
//! as that many one-token sequences at an empty cache, so each token count `n` also gives
//! the logits ops at `n` rows — in the same context as in the engine. (Timed in isolation
//! instead, `lm_head` measured up to 2.4× slower than inside the engine's iterations.)
//!
//! The KV cache is filled with random keys and values before timing: attention over
//! never-written (zero-page) memory would read one shared physical page and run
//! unrealistically fast. Sequences use disjoint blocks, laid out as the engine's pool lays out
//! a batch that was admitted and then decoded together ([`growing_block_tables`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::plan::{ComputeGrid, ComputePlan, ForwardShape};
use super::progress::Progress;
use super::recorder::SampleRecorder;
use crate::io::bundle::{AttentionRow, MlpRow, Op, OpStats, OpStatsSet};
use crate::io::speed_response::TimedForward;
use crate::quantile::median;
use crate::real_bench::model::{PagedKvCache, Qwen3Model, SequenceInput};
use crate::real_bench::speed_timeline::{signed_ns_since, SpeedTimeline, QUICK_PROBE_EVERY};
use crate::{Error, Result};

/// Whole-forward time against the sum of its timed ops, per token count: what the per-op
/// rows cannot see (glue between ops: the attention output buffer, loop overhead).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForwardOverhead {
    pub num_tokens: u32,
    /// Median forward wall time, ms.
    pub forward_median_ms: f64,
    /// Median of (forward wall time − sum of its op times), ms.
    pub untimed_median_ms: f64,
}

/// The measured rows.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputeProfile {
    pub mlp_rows: Vec<MlpRow>,
    pub attention_rows: Vec<AttentionRow>,
    pub forward_overhead: Vec<ForwardOverhead>,
    pub num_forwards: usize,
    /// Every timed forward, in the order run: with the timeline's quick probes, how each
    /// size of forward answered the memory state (`io::speed_response`).
    pub timed_forwards: Vec<ForwardTiming>,
}

/// One timed forward of the grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForwardTiming {
    pub start: Instant,
    pub num_tokens: u32,
    /// Index of its shape in the plan (attention points, then token points).
    pub shape: usize,
    pub wall_ms: f64,
    /// Each op's time in it, summed over layers (the sampler's right after it).
    pub op_ms: [f64; Op::COUNT],
}

impl ForwardTiming {
    /// On the clock whose t = 0 is `origin` (the timeline's).
    pub fn on_clock(&self, origin: Instant) -> TimedForward {
        TimedForward {
            num_tokens: self.num_tokens,
            shape: self.shape,
            start_ns: signed_ns_since(origin, self.start),
            wall_ms: self.wall_ms,
            op_ms: self.op_ms,
        }
    }
}

/// Token-level ops kept from forwards and pooled by token count (per layer but `emb`).
const TOKEN_OPS: [Op; 11] = [
    Op::Emb,
    Op::InputLayernorm,
    Op::AttnPreProj,
    Op::AttnQkNorm,
    Op::AttnRope,
    Op::AttnPostProj,
    Op::Add,
    Op::PostAttentionLayernorm,
    Op::MlpUpProj,
    Op::MlpAct,
    Op::MlpDownProj,
];

/// Per-iteration ops keyed by logits rows.
const LOGITS_OPS: [Op; 3] = [Op::FinalNorm, Op::LmHead, Op::Sampler];

fn stats(samples_ms: &[f64], what: &str) -> Result<OpStats> {
    OpStats::from_samples_ms(samples_ms)
        .map_err(|e| Error::Msg(format!("profiling {what}: {e}")))
        .and_then(|s| {
            if s.median_ms > 0.0 {
                Ok(s)
            } else {
                // A zero median means the clock could not resolve the op at all.
                Err(Error::Msg(format!(
                    "profiling {what}: median time is 0 ms (the timer could not resolve it)"
                )))
            }
        })
}

/// Per sequence of a shape: its token ids and its block table.
type ShapeInputs = (Vec<Vec<u32>>, Vec<Vec<usize>>);

/// Samples pooled while running the plan.
#[derive(Default)]
struct Pool {
    /// Per token count, per model op.
    token_ops: BTreeMap<u32, BTreeMap<Op, Vec<f64>>>,
    /// Per attention point: (attention samples, kv-cache-save samples).
    attention: BTreeMap<ForwardShape, (Vec<f64>, Vec<f64>)>,
    /// Per (logits rows, op) of [`LOGITS_OPS`].
    logits: BTreeMap<(u32, Op), Vec<f64>>,
    /// Per token count: (forward wall ms, untimed ms).
    forwards: BTreeMap<u32, (Vec<f64>, Vec<f64>)>,
    num_forwards: usize,
    timed_forwards: Vec<ForwardTiming>,
}

/// Runs `plan` on `model` and summarises every op. `seed` fixes the random token ids and
/// cache contents.
pub fn profile_compute(
    model: &Qwen3Model,
    grid: &ComputeGrid,
    plan: &ComputePlan,
    block_size: u32,
    seed: u64,
    progress: &mut Progress,
    timeline: &mut SpeedTimeline,
) -> Result<ComputeProfile> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let num_blocks = usize::try_from(plan.cache_blocks)
        .map_err(|_| Error::OutOfRange(format!("{} KV blocks", plan.cache_blocks)))?;
    progress.phase("filling the KV cache");
    let mut cache = model.new_kv_cache(num_blocks, block_size as usize)?;
    fill_cache(model, &mut cache, &mut rng)?;

    let mut pool = Pool::default();
    let num_layers = model.config().num_hidden_layers as u32;
    progress.phase("attention and token-count grid");
    run_forwards(
        model, &mut cache, plan, grid, num_layers, &mut rng, &mut pool, progress, timeline,
    )?;
    drop(cache);

    let counts = plan.token_counts();
    let mut mlp_rows = Vec::new();
    let mut forward_overhead = Vec::new();
    for n in counts {
        let mut ops = OpStatsSet::default();
        let pooled = pool.token_ops.remove(&n).unwrap_or_default();
        for op in TOKEN_OPS {
            let samples = pooled.get(&op).map(Vec::as_slice).unwrap_or(&[]);
            ops.set(op, stats(samples, &format!("{op} at {n} tokens"))?);
        }
        for op in LOGITS_OPS {
            let samples = pool.logits.get(&(n, op)).map(Vec::as_slice).unwrap_or(&[]);
            ops.set(op, stats(samples, &format!("{op} at {n} rows"))?);
        }
        mlp_rows.push(MlpRow { num_tokens: n, ops });
        if let Some((wall, untimed)) = pool.forwards.get(&n) {
            forward_overhead.push(ForwardOverhead {
                num_tokens: n,
                forward_median_ms: stats(wall, "forward")?.median_ms,
                untimed_median_ms: median(untimed).unwrap_or(0.0),
            });
        }
    }

    let mut attention_rows = Vec::new();
    for &shape in &plan.attention_points {
        let (attn, save) = pool.attention.remove(&shape).unwrap_or_default();
        let what = shape.label();
        let (batch_size, prefill_chunk_size, kv_cache_size, is_prefill) = match shape {
            ForwardShape::Decode {
                batch_size,
                kv_cache_size,
            } => (batch_size, 0, kv_cache_size, false),
            ForwardShape::Prefill {
                chunk,
                kv_cache_size,
            } => (1, chunk, kv_cache_size, true),
        };
        attention_rows.push(AttentionRow {
            batch_size,
            prefill_chunk_size,
            kv_cache_size,
            is_prefill,
            attention: stats(&attn, &format!("attention, {what}"))?,
            kv_cache_save: Some(stats(&save, &format!("kv-cache save, {what}"))?),
        });
    }
    Ok(ComputeProfile {
        mlp_rows,
        attention_rows,
        forward_overhead,
        num_forwards: pool.num_forwards,
        timed_forwards: pool.timed_forwards,
    })
}

/// Idle time after each profiled forward, as a fraction of its wall time (≥ 5 % keeps a
/// real-time thread clear of the kernel's throttling).
const GAP_FRACTION: f64 = 0.1;
/// The shortest idle gap after a profiled forward.
const MIN_GAP: Duration = Duration::from_millis(1);
/// A device probe between forwards at least this often (~40 ms each: 0.4 % of the profile).
/// The bundle's reference device state is the median of its probes, and its op times are
/// medians over forwards spread through the whole profile: probes at the same cadence make
/// the reference the state the ops were timed in, not that of the few minutes at its ends
/// (one bundle's three probes before profiling read half the compute rate, two between its
/// passes 156 and 197 GFLOP/s, three after it 227–230: its reference was set 23 % below its
/// end, and the run next to it had a −2.3 % raw error corrected to −11.6 %).
const PROBE_EVERY: Duration = Duration::from_secs(10);

/// Runs every shape of the plan, interleaved: `warmup` passes over all shapes, then the
/// timed passes, each in a seeded random order. Interleaving spreads each point's samples
/// over the whole profiling time, so a burst of load from other processes blurs every point
/// a little instead of distorting a few (which would also bend the interpolants between
/// neighbours).
#[allow(clippy::too_many_arguments)]
fn run_forwards(
    model: &Qwen3Model,
    cache: &mut PagedKvCache,
    plan: &ComputePlan,
    grid: &ComputeGrid,
    num_layers: u32,
    rng: &mut ChaCha8Rng,
    pool: &mut Pool,
    progress: &mut Progress,
    timeline: &mut SpeedTimeline,
) -> Result<()> {
    // Attention points first: their attention becomes a row, the token points' does not.
    let shapes: Vec<ForwardShape> = plan
        .attention_points
        .iter()
        .chain(&plan.token_points)
        .copied()
        .collect();
    let bs = cache.block_size();
    let vocab = model.config().vocab_size as u32;
    let passes = grid.warmup + grid.timed_passes(num_layers);
    // Token ids and block tables first: the prepared batches borrow them. Each pass places
    // every shape anew (see [`place_shapes`]).
    let data: Vec<Vec<ShapeInputs>> = (0..passes)
        .map(|_| place_shapes(&shapes, cache.num_blocks(), bs, vocab, rng))
        .collect();
    let inputs: Vec<Vec<Vec<SequenceInput<'_>>>> = data
        .iter()
        .map(|pass_data| {
            shapes
                .iter()
                .zip(pass_data)
                .map(|(shape, (ids, tables))| {
                    let (_, _, kv) = shape.layout();
                    ids.iter()
                        .zip(tables)
                        .map(|(ids, table)| SequenceInput {
                            token_ids: ids,
                            num_cached_tokens: kv as usize,
                            block_table: table,
                            // One logits row per decoding sequence, as in the engine.
                            wants_logits: matches!(shape, ForwardShape::Decode { .. }),
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let batches = inputs
        .iter()
        .map(|pass_inputs| {
            pass_inputs
                .iter()
                .map(|seqs| model.prepare_batch(cache, seqs))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let timed = grid.timed_passes(num_layers);
    let mut recorder = SampleRecorder::default();
    for pass in 0..grid.warmup + timed {
        // Each shape once per warm-up pass, in timed passes as often as its share of its
        // timed forwards (single-token shapes run more).
        let mut order: Vec<usize> = (0..shapes.len())
            .flat_map(|i| {
                let runs = match pass.checked_sub(grid.warmup) {
                    None => 1,
                    Some(timed_pass) => grid.runs_in_pass(shapes[i], timed_pass, num_layers),
                };
                std::iter::repeat_n(i, runs as usize)
            })
            .collect();
        // A new order every pass: with a fixed one, whatever a shape leaves behind (cold
        // caches after the largest prefill, freed buffers) slows the same next shape in every
        // pass, and the median keeps it (`lm_head` at 3 rows measured 2.2× its neighbours).
        order.shuffle(rng);
        for &i in &order {
            let (shape, batch) = (shapes[i], &batches[pass as usize][i]);
            let n = shape.num_tokens();
            progress.step(&format!(
                "pass {}/{} {}",
                pass + 1,
                grid.warmup + timed,
                shape.label()
            ));
            timeline.busy_tick();
            recorder.clear();
            let start = Instant::now();
            let logits = model.forward(batch, cache, Some(&mut recorder))?;
            let wall_ms = start.elapsed().as_secs_f64() * 1e3;
            // The engine samples right after the forward.
            let sample_start = Instant::now();
            std::hint::black_box(model.sampler(&logits)?);
            let sampler_ms = sample_start.elapsed().as_secs_f64() * 1e3;
            drop(logits);
            // Right after the forward, as the engine probes right after an iteration. Taken
            // after the gap below, the profiles' probes read 3–10 % below the runs' in the
            // reference state and ~25 % in the fast one (paired window of 2026-12-05 03:33
            // UTC); taken here, ~3 % and ~11 % (04:26 UTC). Why the rest remains is not known.
            timeline.quick_tick(QUICK_PROBE_EVERY);
            // A gap after every forward, as the engine has between iterations (its CPU
            // phases, idle time): forwards back to back would also run a real-time thread
            // into the kernel's throttling (50 ms paused per second of uninterrupted work),
            // which a real run at moderate load never meets.
            std::thread::sleep(Duration::from_secs_f64(wall_ms * 1e-3 * GAP_FRACTION).max(MIN_GAP));
            timeline.idle_tick(PROBE_EVERY);
            progress.advance(shape.cost());
            if pass < grid.warmup {
                continue;
            }
            pool.num_forwards += 1;
            let mut op_ms = [0.0; Op::COUNT];
            for op in Op::MODEL {
                op_ms[op.index()] = recorder.samples_ms(op).iter().sum();
            }
            op_ms[Op::Sampler.index()] = sampler_ms;
            pool.timed_forwards.push(ForwardTiming {
                start,
                num_tokens: n,
                shape: i,
                wall_ms,
                op_ms,
            });
            let per_n = pool.token_ops.entry(n).or_default();
            for op in TOKEN_OPS {
                per_n
                    .entry(op)
                    .or_default()
                    .extend_from_slice(recorder.samples_ms(op));
            }
            if let ForwardShape::Decode { batch_size, .. } = shape {
                for op in [Op::FinalNorm, Op::LmHead] {
                    pool.logits
                        .entry((batch_size, op))
                        .or_default()
                        .extend_from_slice(recorder.samples_ms(op));
                }
                pool.logits
                    .entry((batch_size, Op::Sampler))
                    .or_default()
                    .push(sampler_ms);
            }
            let f = pool.forwards.entry(n).or_default();
            f.0.push(wall_ms);
            f.1.push((wall_ms - recorder.total_ms()).max(0.0));
            if i < plan.attention_points.len() {
                let attn_op = match shape {
                    ForwardShape::Decode { .. } => Op::AttnDecode,
                    ForwardShape::Prefill { .. } => Op::AttnPrefill,
                };
                let a = pool.attention.entry(shape).or_default();
                a.0.extend_from_slice(recorder.samples_ms(attn_op));
                a.1.extend_from_slice(recorder.samples_ms(Op::AttnKvCacheSave));
            }
        }
    }
    Ok(())
}

/// Random token ids and block tables for every shape, each shape's blocks at a random offset
/// in a pool of `num_blocks` blocks of `block_size` tokens. Drawn anew for every pass, as the
/// engine's sequences sit all over its pool: a shape kept in one place for the whole profile
/// measured that one place. Where the blocks sit is not what makes one profile's attention
/// over 512–1024 cached tokens ~1.5× faster than another's, though: that moves with the hour,
/// and a profile kept its speed in every pass's placement (docs/ground_truth.md, *runs at
/// two speeds*).
fn place_shapes(
    shapes: &[ForwardShape],
    num_blocks: usize,
    block_size: usize,
    vocab: u32,
    rng: &mut ChaCha8Rng,
) -> Vec<ShapeInputs> {
    shapes
        .iter()
        .map(|shape| {
            let (seqs, tokens, kv) = shape.layout();
            let blocks_per_seq = (kv + tokens).div_ceil(block_size as u32) as usize;
            let ids = (0..seqs)
                .map(|_| (0..tokens).map(|_| rng.random_range(0..vocab)).collect())
                .collect();
            let total = seqs as usize * blocks_per_seq;
            let first = rng.random_range(0..=num_blocks - total);
            let tables = growing_block_tables(&vec![blocks_per_seq; seqs as usize], first);
            (ids, tables)
        })
        .collect()
}

/// Block tables laid out as the engine's pool lays out a batch admitted one request after
/// another and then decoded together, from block `first` on: the first half of each
/// sequence's blocks (its prompt, allocated at admission) side by side, then the rest one
/// block per sequence in turn (each decode step that crosses a block boundary takes the next
/// free one). Where a sequence's blocks lie changes decode attention's time:
/// `benches/op_context.rs` measured this layout typically 1–3 % slower than each sequence's
/// blocks side by side and blocks drawn at random from the pool 3–14 %; the profiler used
/// side-by-side tables until 2026-12-04 and under-predicted the engine's attention, then
/// random ones, and over-predicted it by about as much.
pub fn growing_block_tables(blocks_per_seq: &[usize], first: usize) -> Vec<Vec<usize>> {
    let mut next = first;
    let mut tables: Vec<Vec<usize>> = blocks_per_seq
        .iter()
        .map(|&n| {
            let prompt: Vec<usize> = (next..next + n.div_ceil(2)).collect();
            next += prompt.len();
            prompt
        })
        .collect();
    let longest = blocks_per_seq.iter().copied().max().unwrap_or(0);
    for _ in 0..longest / 2 {
        for (table, &n) in tables.iter_mut().zip(blocks_per_seq) {
            if table.len() < n {
                table.push(next);
                next += 1;
            }
        }
    }
    tables
}

/// Writes random keys and values into every block of `cache`, through the model's own
/// kv-cache save, so that attention reads real memory.
fn fill_cache(model: &Qwen3Model, cache: &mut PagedKvCache, rng: &mut ChaCha8Rng) -> Result<()> {
    let cfg = model.config();
    let bs = cache.block_size();
    // One filler sequence per `blocks_per_seq` blocks, within the model's position range.
    let blocks_per_seq = (cfg.max_position_embeddings.min(1024) / bs).max(1);
    let rows_per_seq = blocks_per_seq * bs;
    const SEQS_PER_CALL: usize = 8;
    let max_rows = rows_per_seq * SEQS_PER_CALL;
    let width = cfg.kv_width();
    let random = |rng: &mut ChaCha8Rng| -> Vec<f32> {
        (0..max_rows * width)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect()
    };
    let dtype = model.dtype();
    let k_all =
        Tensor::from_vec(random(rng), (max_rows, width), model.device())?.to_dtype(dtype)?;
    let v_all =
        Tensor::from_vec(random(rng), (max_rows, width), model.device())?.to_dtype(dtype)?;
    let ids = vec![0u32; rows_per_seq];
    let num_blocks = cache.num_blocks();
    let mut first = 0;
    while first < num_blocks {
        let tables: Vec<Vec<usize>> = (0..SEQS_PER_CALL)
            .map(|s| first + s * blocks_per_seq)
            .take_while(|&b| b < num_blocks)
            .map(|b| (b..(b + blocks_per_seq).min(num_blocks)).collect())
            .collect();
        let seqs: Vec<SequenceInput<'_>> = tables
            .iter()
            .map(|t| SequenceInput {
                token_ids: &ids[..t.len() * bs],
                num_cached_tokens: 0,
                block_table: t,
                wants_logits: false,
            })
            .collect();
        let rows: usize = seqs.iter().map(|s| s.token_ids.len()).sum();
        let batch = model.prepare_batch(cache, &seqs)?;
        let (k, v) = (k_all.narrow(0, 0, rows)?, v_all.narrow(0, 0, rows)?);
        for layer in 0..cfg.num_hidden_layers {
            model.attn_kv_cache_save(layer, &k, &v, &batch, cache)?;
        }
        first += tables.len() * blocks_per_seq;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_tables_put_prompts_side_by_side_then_take_turns() {
        // Three sequences of 4, 5 and 2 blocks from block 10: prompts of 2, 3 and 1 blocks,
        // then one block per sequence in turn until each has its count.
        let t = growing_block_tables(&[4, 5, 2], 10);
        assert_eq!(
            t,
            vec![vec![10, 11, 16, 19], vec![12, 13, 14, 17, 20], vec![15, 18]]
        );
        let mut all: Vec<usize> = t.concat();
        all.sort_unstable();
        assert_eq!(all, (10..21).collect::<Vec<_>>(), "disjoint and dense");
        assert_eq!(growing_block_tables(&[3], 0), vec![vec![0, 1, 2]]);
    }

    #[test]
    fn every_pass_places_a_shape_elsewhere_in_the_pool() {
        let shapes = [
            ForwardShape::Prefill {
                chunk: 32,
                kv_cache_size: 96,
            },
            ForwardShape::Decode {
                batch_size: 3,
                kv_cache_size: 40,
            },
        ];
        let (num_blocks, block_size) = (200, 16);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let passes: Vec<Vec<ShapeInputs>> = (0..4)
            .map(|_| place_shapes(&shapes, num_blocks, block_size, 1000, &mut rng))
            .collect();
        for pass in &passes {
            let (ids, tables) = &pass[0];
            assert_eq!((ids.len(), ids[0].len()), (1, 32));
            assert_eq!(tables[0].len(), 8, "128 tokens in blocks of 16");
            let (ids, tables) = &pass[1];
            assert_eq!((ids.len(), ids[0].len()), (3, 1));
            let mut blocks: Vec<usize> = tables.concat();
            assert_eq!(blocks.len(), 9, "3 sequences of 41 tokens: 3 blocks each");
            blocks.sort_unstable();
            blocks.dedup();
            assert_eq!(blocks.len(), 9, "sequences do not share blocks");
            assert!(blocks.iter().all(|&b| b < num_blocks));
        }
        // Four offsets drawn from 193 for the prefill: all equal only by a 1 in 193³ chance,
        // which this seed does not draw.
        let firsts: Vec<usize> = passes.iter().map(|p| p[0].1[0][0]).collect();
        assert!(firsts.iter().any(|&f| f != firsts[0]), "{firsts:?}");
        // Deterministic given the seed.
        let mut again = ChaCha8Rng::seed_from_u64(7);
        assert_eq!(
            place_shapes(&shapes, num_blocks, block_size, 1000, &mut again),
            passes[0]
        );
    }
}
