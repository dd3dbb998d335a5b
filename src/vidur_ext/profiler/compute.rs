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
//! unrealistically fast. Sequences use disjoint blocks, as in the engine.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::progress::Progress;
use super::recorder::SampleRecorder;
use crate::io::records::SpeedPhase;
use crate::real_bench::model::{ModelOp, PagedKvCache, Qwen3Model, SequenceInput};
use crate::real_bench::speed_timeline::SpeedTimeline;
use crate::vidur_ext::bundle::{AttentionRow, MlpRow, Op, OpStats, OpStatsSet};
use crate::{Error, Result};

/// The compute grid, validated and sorted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComputeGrid {
    /// Token counts of the token-level ops (decode batch sizes and prefill chunk sizes are
    /// measured as well; these are extra points).
    pub num_tokens: Vec<u32>,
    pub decode_batch_sizes: Vec<u32>,
    /// Cached tokens per decoding sequence.
    pub decode_kv_sizes: Vec<u32>,
    pub prefill_chunk_sizes: Vec<u32>,
    /// Cached tokens before a prefill chunk.
    pub prefill_kv_sizes: Vec<u32>,
    /// Discarded forwards per grid point.
    pub warmup: u32,
    /// Timed forwards per grid point (each gives one sample per layer).
    pub repeats: u32,
    /// More timed forwards when `repeats × layers` gives fewer samples per op than this
    /// (a 2-layer model needs many cheap forwards for a stable median).
    pub min_samples: u32,
    /// Longest sequence served (`kv + chunk` above it is not profiled, as in Vidur).
    pub max_model_len: u32,
}

impl ComputeGrid {
    /// Sorts and de-duplicates the grids; empty grids and zero sizes are errors.
    pub fn new(mut grid: ComputeGrid) -> Result<ComputeGrid> {
        for (name, g) in [
            ("num_tokens", &mut grid.num_tokens),
            ("decode_batch_sizes", &mut grid.decode_batch_sizes),
            ("decode_kv_sizes", &mut grid.decode_kv_sizes),
            ("prefill_chunk_sizes", &mut grid.prefill_chunk_sizes),
            ("prefill_kv_sizes", &mut grid.prefill_kv_sizes),
        ] {
            g.sort_unstable();
            g.dedup();
            if g.is_empty() {
                return Err(Error::config(
                    format!("profile.{name}"),
                    "the grid is empty",
                ));
            }
        }
        for (name, g) in [
            ("num_tokens", &grid.num_tokens),
            ("decode_batch_sizes", &grid.decode_batch_sizes),
            ("prefill_chunk_sizes", &grid.prefill_chunk_sizes),
        ] {
            if g[0] == 0 {
                return Err(Error::config(
                    format!("profile.{name}"),
                    "grid points must be positive",
                ));
            }
        }
        if grid.prefill_chunk_sizes[0] < 2 {
            return Err(Error::config(
                "profile.prefill_chunk_sizes",
                "a prefill chunk has at least 2 tokens (a 1-token chunk is a decode)",
            ));
        }
        if grid.repeats == 0 {
            return Err(Error::config("profile.repeats", "must be positive"));
        }
        Ok(grid)
    }

    /// Timed forwards per grid point for a model of `num_layers` layers.
    pub fn timed_forwards(&self, num_layers: u32) -> u32 {
        self.repeats
            .max(self.min_samples.div_ceil(num_layers.max(1)))
    }
}

/// One profiled batch shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ForwardShape {
    /// `batch_size` sequences decoding one token each after `kv_cache_size` cached tokens.
    Decode { batch_size: u32, kv_cache_size: u32 },
    /// One sequence's chunk of `chunk` tokens after `kv_cache_size` cached tokens.
    Prefill { chunk: u32, kv_cache_size: u32 },
}

impl ForwardShape {
    /// Tokens in the forward.
    pub fn num_tokens(self) -> u32 {
        match self {
            ForwardShape::Decode { batch_size, .. } => batch_size,
            ForwardShape::Prefill { chunk, .. } => chunk,
        }
    }

    /// Sequences and tokens per sequence.
    fn layout(self) -> (u32, u32, u32) {
        match self {
            ForwardShape::Decode {
                batch_size,
                kv_cache_size,
            } => (batch_size, 1, kv_cache_size),
            ForwardShape::Prefill {
                chunk,
                kv_cache_size,
            } => (1, chunk, kv_cache_size),
        }
    }

    /// KV blocks the shape occupies.
    pub fn blocks_needed(self, block_size: u32) -> u64 {
        let (seqs, tokens, kv) = self.layout();
        u64::from(seqs) * u64::from((kv + tokens).div_ceil(block_size))
    }

    /// Longest sequence in the shape.
    fn max_len(self) -> u32 {
        let (_, tokens, kv) = self.layout();
        kv + tokens
    }

    /// Rough relative cost, for the progress bar: dense work in tokens plus attention work.
    fn cost(self) -> f64 {
        let (seqs, tokens, kv) = self.layout();
        let (s, t, k) = (f64::from(seqs), f64::from(tokens), f64::from(kv));
        s * t + 8.0 + s * t * (k + t / 2.0) / 2048.0
    }

    fn label(self) -> String {
        match self {
            ForwardShape::Decode {
                batch_size,
                kv_cache_size,
            } => format!("decode batch={batch_size} kv={kv_cache_size}"),
            ForwardShape::Prefill {
                chunk,
                kv_cache_size,
            } => format!("prefill chunk={chunk} kv={kv_cache_size}"),
        }
    }
}

/// What will be run: attention grid points (their attention becomes an `attention.csv`
/// row) and token points (one-token sequences at an empty cache, for the token-level and
/// logits ops of token counts no decode point has).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComputePlan {
    pub attention_points: Vec<ForwardShape>,
    pub token_points: Vec<ForwardShape>,
    /// Grid points left out, with the reason.
    pub skipped: Vec<String>,
    /// KV blocks the largest shape needs (the profiler's cache size).
    pub cache_blocks: u64,
}

impl ComputePlan {
    /// Plans `grid` for a cache of at most `max_cache_blocks` blocks of `block_size` tokens.
    pub fn new(grid: &ComputeGrid, block_size: u32, max_cache_blocks: u64) -> Result<ComputePlan> {
        let mut skipped = Vec::new();
        let mut fits = |shape: ForwardShape| -> bool {
            if shape.max_len() > grid.max_model_len {
                skipped.push(format!(
                    "{}: {} tokens exceed max_model_len {}",
                    shape.label(),
                    shape.max_len(),
                    grid.max_model_len
                ));
                return false;
            }
            if shape.blocks_needed(block_size) > max_cache_blocks {
                skipped.push(format!(
                    "{}: needs {} KV blocks, the pool has {max_cache_blocks}",
                    shape.label(),
                    shape.blocks_needed(block_size)
                ));
                return false;
            }
            true
        };
        let mut attention_points = Vec::new();
        for &batch_size in &grid.decode_batch_sizes {
            for &kv_cache_size in &grid.decode_kv_sizes {
                let s = ForwardShape::Decode {
                    batch_size,
                    kv_cache_size,
                };
                if fits(s) {
                    attention_points.push(s);
                }
            }
        }
        for &chunk in &grid.prefill_chunk_sizes {
            for &kv_cache_size in &grid.prefill_kv_sizes {
                let s = ForwardShape::Prefill {
                    chunk,
                    kv_cache_size,
                };
                if fits(s) {
                    attention_points.push(s);
                }
            }
        }
        // Token counts whose logits rows no decode point gives: extra points and chunks.
        let covered: Vec<u32> = attention_points
            .iter()
            .filter(|s| matches!(s, ForwardShape::Decode { .. }))
            .map(|s| s.num_tokens())
            .collect();
        let mut wanted: Vec<u32> = grid
            .num_tokens
            .iter()
            .chain(&grid.prefill_chunk_sizes)
            .copied()
            .filter(|n| !covered.contains(n))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut token_points = Vec::new();
        for n in wanted {
            let s = ForwardShape::Decode {
                batch_size: n,
                kv_cache_size: 0,
            };
            if fits(s) {
                token_points.push(s);
            }
        }
        let has_decode = attention_points
            .iter()
            .any(|s| matches!(s, ForwardShape::Decode { .. }));
        let has_prefill = attention_points
            .iter()
            .any(|s| matches!(s, ForwardShape::Prefill { .. }));
        if !has_decode || !has_prefill {
            return Err(Error::config(
                "profile",
                format!(
                    "no {} attention grid point fits (max_model_len {}, KV pool {max_cache_blocks} blocks): {}",
                    if has_decode { "prefill" } else { "decode" },
                    grid.max_model_len,
                    skipped.join("; ")
                ),
            ));
        }
        let cache_blocks = attention_points
            .iter()
            .chain(&token_points)
            .map(|s| s.blocks_needed(block_size))
            .max()
            .unwrap_or(1);
        Ok(ComputePlan {
            attention_points,
            token_points,
            skipped,
            cache_blocks,
        })
    }

    /// Estimated cost of running the plan on a `num_layers`-layer model (progress units).
    pub fn cost(&self, grid: &ComputeGrid, num_layers: u32) -> f64 {
        let per_point = f64::from(grid.warmup + grid.timed_forwards(num_layers));
        let forwards: f64 = self
            .attention_points
            .iter()
            .chain(&self.token_points)
            .map(|s| s.cost() * per_point)
            .sum();
        forwards
    }

    /// Every token count measured (the `mlp.csv` rows, each with its logits ops), ascending.
    pub fn token_counts(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .attention_points
            .iter()
            .chain(&self.token_points)
            .map(|s| s.num_tokens())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

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
}

/// Token-level ops kept from forwards (per layer unless noted), model op → bundle op.
const TOKEN_OPS: [ModelOp; 11] = [
    ModelOp::Emb,
    ModelOp::InputLayernorm,
    ModelOp::AttnPreProj,
    ModelOp::AttnQkNorm,
    ModelOp::AttnRope,
    ModelOp::AttnPostProj,
    ModelOp::Add,
    ModelOp::PostAttentionLayernorm,
    ModelOp::MlpUpProj,
    ModelOp::MlpAct,
    ModelOp::MlpDownProj,
];

/// Per-iteration ops keyed by logits rows.
const LOGITS_OPS: [ModelOp; 3] = [ModelOp::FinalNorm, ModelOp::LmHead, ModelOp::Sampler];

/// The bundle's op for a model op (same stable names).
fn bundle_op(op: ModelOp) -> Result<Op> {
    Op::from_name(op.as_str())
        .ok_or_else(|| Error::InvalidInput(format!("model op `{op}` has no bundle column")))
}

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
    token_ops: BTreeMap<u32, BTreeMap<ModelOp, Vec<f64>>>,
    /// Per attention point: (attention samples, kv-cache-save samples).
    attention: BTreeMap<ForwardShape, (Vec<f64>, Vec<f64>)>,
    /// Per (logits rows, op) of [`LOGITS_OPS`].
    logits: BTreeMap<(u32, ModelOp), Vec<f64>>,
    /// Per token count: (forward wall ms, untimed ms).
    forwards: BTreeMap<u32, (Vec<f64>, Vec<f64>)>,
    num_forwards: usize,
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
            ops.set(
                bundle_op(op)?,
                stats(samples, &format!("{op} at {n} tokens"))?,
            );
        }
        for op in LOGITS_OPS {
            let samples = pool.logits.get(&(n, op)).map(Vec::as_slice).unwrap_or(&[]);
            ops.set(
                bundle_op(op)?,
                stats(samples, &format!("{op} at {n} rows"))?,
            );
        }
        mlp_rows.push(MlpRow { num_tokens: n, ops });
        if let Some((wall, untimed)) = pool.forwards.get(&n) {
            forward_overhead.push(ForwardOverhead {
                num_tokens: n,
                forward_median_ms: stats(wall, "forward")?.median_ms,
                untimed_median_ms: median(untimed),
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
    })
}

/// Median of a non-empty slice (0 for an empty one).
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Idle time after each profiled forward, as a fraction of its wall time (≥ 5 % keeps a
/// real-time thread clear of the kernel's throttling).
const GAP_FRACTION: f64 = 0.1;
/// The shortest idle gap after a profiled forward.
const MIN_GAP: Duration = Duration::from_millis(1);

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
    let shapes: Vec<(ForwardShape, bool)> = plan
        .attention_points
        .iter()
        .map(|s| (*s, true))
        .chain(plan.token_points.iter().map(|s| (*s, false)))
        .collect();
    let bs = cache.block_size();
    let vocab = model.config().vocab_size as u32;
    // Token ids and block tables first: the prepared batches borrow them.
    let data: Vec<ShapeInputs> = shapes
        .iter()
        .map(|(shape, _)| {
            let (seqs, tokens, kv) = shape.layout();
            let blocks_per_seq = (kv + tokens).div_ceil(bs as u32) as usize;
            let ids = (0..seqs)
                .map(|_| (0..tokens).map(|_| rng.random_range(0..vocab)).collect())
                .collect();
            let tables = (0..seqs as usize)
                .map(|i| (i * blocks_per_seq..(i + 1) * blocks_per_seq).collect())
                .collect();
            (ids, tables)
        })
        .collect();
    let inputs: Vec<Vec<SequenceInput<'_>>> = shapes
        .iter()
        .zip(&data)
        .map(|((shape, _), (ids, tables))| {
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
        .collect();
    let batches = inputs
        .iter()
        .map(|seqs| model.prepare_batch(cache, seqs))
        .collect::<Result<Vec<_>>>()?;
    let timed = grid.timed_forwards(num_layers);
    let mut recorder = SampleRecorder::default();
    let mut order: Vec<usize> = (0..shapes.len()).collect();
    for pass in 0..grid.warmup + timed {
        if pass > 0 {
            // The device's speed between passes, for the bundle's timeline.
            timeline.probe(SpeedPhase::Idle);
        }
        // A new order every pass: with a fixed one, whatever a shape leaves behind (cold
        // caches after the largest prefill, freed buffers) slows the same next shape in every
        // pass, and the median keeps it (`lm_head` at 3 rows measured 2.2× its neighbours).
        order.shuffle(rng);
        for &i in &order {
            let ((shape, keep_attention), batch) = (&shapes[i], &batches[i]);
            let (shape, n) = (*shape, shape.num_tokens());
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
            // A gap after every forward, as the engine has between iterations (its CPU
            // phases, idle time): forwards back to back would also run a real-time thread
            // into the kernel's throttling (50 ms paused per second of uninterrupted work),
            // which a real run at moderate load never meets.
            std::thread::sleep(Duration::from_secs_f64(wall_ms * 1e-3 * GAP_FRACTION).max(MIN_GAP));
            progress.advance(shape.cost());
            if pass < grid.warmup {
                continue;
            }
            pool.num_forwards += 1;
            let per_n = pool.token_ops.entry(n).or_default();
            for op in TOKEN_OPS {
                per_n
                    .entry(op)
                    .or_default()
                    .extend_from_slice(recorder.samples_ms(op));
            }
            if let ForwardShape::Decode { batch_size, .. } = shape {
                for op in [ModelOp::FinalNorm, ModelOp::LmHead] {
                    pool.logits
                        .entry((batch_size, op))
                        .or_default()
                        .extend_from_slice(recorder.samples_ms(op));
                }
                pool.logits
                    .entry((batch_size, ModelOp::Sampler))
                    .or_default()
                    .push(sampler_ms);
            }
            let f = pool.forwards.entry(n).or_default();
            f.0.push(wall_ms);
            f.1.push((wall_ms - recorder.total_ms()).max(0.0));
            if *keep_attention {
                let attn_op = match shape {
                    ForwardShape::Decode { .. } => ModelOp::AttnDecode,
                    ForwardShape::Prefill { .. } => ModelOp::AttnPrefill,
                };
                let a = pool.attention.entry(shape).or_default();
                a.0.extend_from_slice(recorder.samples_ms(attn_op));
                a.1.extend_from_slice(recorder.samples_ms(ModelOp::AttnKvCacheSave));
            }
        }
    }
    Ok(())
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

    fn grid() -> ComputeGrid {
        ComputeGrid {
            num_tokens: vec![1, 3, 8],
            decode_batch_sizes: vec![2, 1],
            decode_kv_sizes: vec![16, 100],
            prefill_chunk_sizes: vec![8, 64],
            prefill_kv_sizes: vec![0, 32],
            warmup: 1,
            repeats: 2,
            min_samples: 8,
            max_model_len: 128,
        }
    }

    #[test]
    fn plan_covers_the_grid_within_limits() {
        let g = ComputeGrid::new(grid()).unwrap();
        assert_eq!(g.decode_batch_sizes, vec![1, 2]);
        // Pool of 12 blocks of 16: decode batch 2 at kv 100 needs 2 × 7 = 14 blocks.
        let plan = ComputePlan::new(&g, 16, 12).unwrap();
        let decode = |b, k| ForwardShape::Decode {
            batch_size: b,
            kv_cache_size: k,
        };
        let prefill = |c, k| ForwardShape::Prefill {
            chunk: c,
            kv_cache_size: k,
        };
        assert_eq!(
            plan.attention_points,
            vec![
                decode(1, 16),
                decode(1, 100),
                decode(2, 16),
                prefill(8, 0),
                prefill(8, 32),
                prefill(64, 0),
                prefill(64, 32),
            ]
        );
        assert!(plan
            .skipped
            .iter()
            .any(|s| s.contains("decode batch=2 kv=100")));
        // 1 and 2 have decode points; 3 and 8 run as one-token sequences at kv 0, while
        // 64 one-token sequences would need 64 blocks of the pool's 12.
        assert_eq!(plan.token_points, vec![decode(3, 0), decode(8, 0)]);
        assert!(plan
            .skipped
            .iter()
            .any(|s| s.contains("decode batch=64 kv=0") && s.contains("64 KV blocks")));
        // The prefill chunks still time the token ops at 8 and 64 rows.
        assert_eq!(plan.token_counts(), vec![1, 2, 3, 8, 64]);
        // Largest kept: 8 one-token sequences = 8 blocks (decode(1, 100) needs 7).
        assert_eq!(plan.cache_blocks, 8);
    }

    #[test]
    fn empty_or_unfittable_grids_are_config_errors() {
        let mut g = grid();
        g.prefill_kv_sizes.clear();
        let e = ComputeGrid::new(g).unwrap_err().to_string();
        assert!(
            e.contains("profile.prefill_kv_sizes") && e.contains("empty"),
            "{e}"
        );
        let mut g = grid();
        g.prefill_chunk_sizes = vec![1];
        assert!(ComputeGrid::new(g).is_err());
        let g = ComputeGrid::new(grid()).unwrap();
        let e = ComputePlan::new(&g, 16, 1).unwrap_err().to_string();
        assert!(e.contains("attention grid point fits"), "{e}");
    }

    #[test]
    fn shapes_count_blocks_and_tokens() {
        let d = ForwardShape::Decode {
            batch_size: 4,
            kv_cache_size: 16,
        };
        assert_eq!((d.num_tokens(), d.blocks_needed(16)), (4, 8));
        let p = ForwardShape::Prefill {
            chunk: 17,
            kv_cache_size: 15,
        };
        assert_eq!((p.num_tokens(), p.blocks_needed(16)), (17, 2));
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    }
}
