//! Op-time predictors: how long one batch (one engine iteration) takes.
//!
//! Input is one iteration's [`RequestShape`]s — exactly the columns of `batch_requests.csv` —
//! so the same call predicts a simulated batch and replays a real one. Output is a
//! [`BatchPrediction`]: integer-ns model time, CPU overhead and total, a fixed-size per-op
//! breakdown and an extrapolation flag. Predicting allocates nothing: every lookup is a
//! binary search or an index into tables fitted once at construction.
//!
//! Three implementations of [`ExecutionTimePredictor`]:
//! - [`VidurCompatPredictor`] — Vidur's batch formula exactly, with an interpolant of the
//!   profiled medians in place of Vidur's random forest (exact at profiled points).
//! - [`VidurTablesPredictor`] — Vidur's formula over the prediction tables Vidur itself wrote,
//!   reproducing Vidur's batch times exactly.
//! - [`NativePredictor`] — this project's model of our CPU engine: attention per request,
//!   interpolation at exact sizes, and the per-iteration ops Vidur leaves out.
//!
//! Also here: [`cross_validate`] (held-out error of the interpolants per op) and
//! [`replay_batches`] (predicted vs measured over a real run's iterations).
//!
//! # Interpolation and extrapolation
//!
//! Each op's profiled medians become a [`Series1d`] (piecewise linear in its key) or a
//! [`Grid2d`] (one series per outer key, linear between outer keys), exact at every profiled
//! point; repeated points are averaged. Outside the profiled range, per dimension: below the
//! smallest key the smallest key's value is used (small calls are dominated by fixed costs);
//! above the largest key the value scales proportionally to the key (`y_last · x / x_last`;
//! the prefill grid's outer key is chunk², so prefill attention scales with chunk²). Such a
//! lookup is flagged in [`BatchPrediction::extrapolated_ops`], and so is any key outside
//! Vidur's prediction grid ([`GridLimits`]), where Vidur itself would fail with `KeyError`.

mod cross_validation;
mod curves;
mod interp;
mod native;
mod replay;
mod vidur_compat;
mod vidur_formula;
mod vidur_tables;

use serde::{Deserialize, Serialize};

use super::simulator::ClockKind;
use crate::io::bundle::{BundleModelSpec, CpuOverheadTerm, Op, OpSet};
use crate::{Error, Result};

pub use cross_validation::{cross_validate, ErrorStats, OpReport, PredictorReport};
pub use curves::BundleCurves;
pub use interp::{Grid2d, Lookup, Series1d};
pub use native::{NativeConfig, NativePredictor};
pub use replay::{
    replay_batches, IterationKind, ReplayBatch, ReplayGroupStats, ReplayIteration, ReplayReport,
    ReplaySummary,
};
pub use vidur_compat::VidurCompatPredictor;
pub use vidur_tables::VidurTablesPredictor;

/// One request's share of an iteration (a row of `batch_requests.csv`).
///
/// Vidur's `num_processed_tokens` is `num_context_tokens + 1` for a decode (the token being
/// decoded was produced, but not cached, by the previous iteration) and `num_context_tokens`
/// for a prefill chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestShape {
    /// Tokens scheduled this iteration (1 for a decode, the chunk length for a prefill).
    pub num_tokens: u32,
    /// Tokens of this request already in the KV cache.
    pub num_context_tokens: u32,
    pub is_prefill: bool,
}

impl RequestShape {
    /// A decode step over `num_context_tokens` cached tokens.
    pub fn decode(num_context_tokens: u32) -> RequestShape {
        RequestShape {
            num_tokens: 1,
            num_context_tokens,
            is_prefill: false,
        }
    }

    /// A prefill chunk of `num_tokens` tokens after `num_context_tokens` cached ones.
    pub fn prefill(num_tokens: u32, num_context_tokens: u32) -> RequestShape {
        RequestShape {
            num_tokens,
            num_context_tokens,
            is_prefill: true,
        }
    }

    /// Vidur's `request.num_processed_tokens` at the time the batch is formed.
    pub fn vidur_num_processed_tokens(&self) -> u64 {
        u64::from(self.num_context_tokens) + u64::from(!self.is_prefill)
    }
}

/// What a predictor needs besides the request shapes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IterationContext {
    /// 0-based pipeline stage; every stage but the last pays the send/recv to the next.
    pub pipeline_stage: u32,
    /// Sequences that emit a token this iteration (rows of logits). `batch_requests.csv` does
    /// not say which prefill chunk completes its prompt, so `None` counts every scheduled
    /// sequence — exact without chunked prefill, an upper bound with it. Only the native
    /// predictor uses it (Vidur does not model the LM head).
    pub num_logits_rows: Option<u32>,
    /// When the iteration starts on the run's clock, ns: what a correction for the device's
    /// speed over time reads ([`crate::vidur_ext::device_speed::SpeedCorrectedPredictor`]).
    pub start_time_ns: Option<u64>,
}

/// One iteration's predicted duration.
///
/// With pipeline parallelism all times are for one stage (its `num_layers / PP` layers plus
/// its send/recv); with PP = 1 they cover the whole model. `ops_ms` sums to the model time
/// (up to float rounding), so the breakdown accounts for every predicted nanosecond.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchPrediction {
    /// Forward-pass time, rounded to ns.
    pub model_ns: u64,
    /// Sum of the charged CPU-overhead terms, rounded to ns.
    pub cpu_overhead_ns: u64,
    /// `model_ns + cpu_overhead_ns`.
    pub total_ns: u64,
    /// The unrounded total in seconds, computed as Vidur's `ExecutionTime.total_time`:
    /// `model_ms · 10⁻³ + (schedule + sampler_e2e + prepare_inputs_e2e +
    /// process_model_outputs + ray_comm_time) · 10⁻³`, in that order. What the Vidur clock
    /// ([`crate::vidur_ext::simulator::clock`]) adds to its time.
    pub total_s: f64,
    /// Time per op class for the whole stage (per-layer time × layers; per-iteration ops
    /// once), ms. Indexed by [`Op::index`].
    pub ops_ms: [f64; Op::COUNT],
    /// Charged CPU-overhead terms, ms. Indexed by [`CpuOverheadTerm::index`].
    pub cpu_overheads_ms: [f64; CpuOverheadTerm::COUNT],
    /// Whether any lookup (op or CPU term) left the profiled grid or Vidur's prediction grid.
    pub extrapolated: bool,
    /// The ops whose lookup was extrapolated.
    pub extrapolated_ops: OpSet,
}

impl BatchPrediction {
    /// The prediction for an empty batch: nothing runs.
    pub const EMPTY: BatchPrediction = BatchPrediction {
        model_ns: 0,
        cpu_overhead_ns: 0,
        total_ns: 0,
        total_s: 0.0,
        ops_ms: [0.0; Op::COUNT],
        cpu_overheads_ms: [0.0; CpuOverheadTerm::COUNT],
        extrapolated: false,
        extrapolated_ops: OpSet::EMPTY,
    };

    /// Time attributed to `op`, ms.
    pub fn op_ms(&self, op: Op) -> f64 {
        self.ops_ms[op.index()]
    }

    /// Builds the integer totals from the ms breakdown.
    pub(crate) fn from_parts(
        model_ms: f64,
        ops_ms: [f64; Op::COUNT],
        cpu_overheads_ms: [f64; CpuOverheadTerm::COUNT],
        extrapolated_ops: OpSet,
        cpu_extrapolated: bool,
    ) -> BatchPrediction {
        // Summed in index order, which is Vidur's (`ExecutionTime._get_cpu_overhead`).
        let cpu_ms: f64 = cpu_overheads_ms.iter().sum();
        let model_ns = ms_to_ns(model_ms);
        let cpu_overhead_ns = ms_to_ns(cpu_ms);
        BatchPrediction {
            model_ns,
            cpu_overhead_ns,
            total_ns: model_ns + cpu_overhead_ns,
            total_s: model_ms * 1e-3 + cpu_ms * 1e-3,
            ops_ms,
            cpu_overheads_ms,
            extrapolated: cpu_extrapolated || !extrapolated_ops.is_empty(),
            extrapolated_ops,
        }
    }
}

/// ms → ns, rounded to nearest; negative or NaN (impossible from validated data) → 0.
pub(crate) fn ms_to_ns(ms: f64) -> u64 {
    let ns = (ms * 1e6).round();
    if ns.is_finite() && ns > 0.0 {
        ns as u64
    } else {
        0
    }
}

/// A batch-time predictor.
pub trait ExecutionTimePredictor: Send + Sync {
    /// Stable name: `vidur_compat`, `vidur_tables` or `native`.
    fn name(&self) -> &'static str;

    /// Predicts one iteration. Infallible and allocation-free: an empty batch predicts
    /// zero, a lookup outside the grid is extrapolated and flagged.
    fn predict_with(&self, batch: &[RequestShape], ctx: &IterationContext) -> BatchPrediction;

    /// The simulator clock this predictor's times are meant for: Vidur's float seconds for
    /// Vidur's formula (so that long runs reproduce Vidur's clock exactly), integer ns
    /// otherwise.
    fn clock(&self) -> ClockKind {
        ClockKind::IntegerNs
    }

    /// Predicts one iteration of pipeline stage 0 with default context.
    fn predict(&self, batch: &[RequestShape]) -> BatchPrediction {
        self.predict_with(batch, &IterationContext::default())
    }

    /// Like [`ExecutionTimePredictor::predict_with`], but a malformed batch is
    /// `Error::InvalidInput` and any extrapolation is `Error::OutOfRange` naming the ops —
    /// where Vidur itself would raise a `KeyError`.
    fn try_predict(
        &self,
        batch: &[RequestShape],
        ctx: &IterationContext,
    ) -> Result<BatchPrediction> {
        validate_batch(batch)?;
        let p = self.predict_with(batch, ctx);
        if p.extrapolated {
            return Err(Error::OutOfRange(format!(
                "{}: batch of {} requests ({} tokens) is outside the profiled grid for ops [{}]{}",
                self.name(),
                batch.len(),
                batch.iter().map(|r| u64::from(r.num_tokens)).sum::<u64>(),
                p.extrapolated_ops,
                if p.extrapolated_ops.is_empty() {
                    " (CPU-overhead terms)"
                } else {
                    ""
                }
            )));
        }
        Ok(p)
    }
}

/// A borrowed predictor predicts as the one it borrows.
impl<T: ExecutionTimePredictor + ?Sized> ExecutionTimePredictor for &T {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn predict_with(&self, batch: &[RequestShape], ctx: &IterationContext) -> BatchPrediction {
        (**self).predict_with(batch, ctx)
    }

    fn clock(&self) -> ClockKind {
        (**self).clock()
    }
}

/// A boxed predictor predicts as the one it holds.
impl<T: ExecutionTimePredictor + ?Sized> ExecutionTimePredictor for Box<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn predict_with(&self, batch: &[RequestShape], ctx: &IterationContext) -> BatchPrediction {
        (**self).predict_with(batch, ctx)
    }

    fn clock(&self) -> ClockKind {
        (**self).clock()
    }
}

/// A batch is well-formed when it is non-empty, every request schedules at least one token,
/// and decodes schedule exactly one.
pub fn validate_batch(batch: &[RequestShape]) -> Result<()> {
    if batch.is_empty() {
        return Err(Error::InvalidInput("empty batch".into()));
    }
    for (i, r) in batch.iter().enumerate() {
        if r.num_tokens == 0 || (!r.is_prefill && r.num_tokens != 1) {
            return Err(Error::InvalidInput(format!(
                "batch entry {i}: {r:?} (a request schedules ≥ 1 tokens, a decode exactly 1)"
            )));
        }
    }
    Ok(())
}

/// Which of Vidur's CPU-overhead terms to charge (Vidur: all or none, default none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuOverheadFlags {
    pub schedule: bool,
    pub sampler_e2e: bool,
    pub prepare_inputs_e2e: bool,
    pub process_model_outputs: bool,
    pub ray_comm_time: bool,
}

impl CpuOverheadFlags {
    /// Charge every term (Vidur with `--no-…skip_cpu_overhead_modeling`).
    pub const ALL: CpuOverheadFlags = CpuOverheadFlags {
        schedule: true,
        sampler_e2e: true,
        prepare_inputs_e2e: true,
        process_model_outputs: true,
        ray_comm_time: true,
    };

    /// Charge nothing (Vidur's default).
    pub const NONE: CpuOverheadFlags = CpuOverheadFlags {
        schedule: false,
        sampler_e2e: false,
        prepare_inputs_e2e: false,
        process_model_outputs: false,
        ray_comm_time: false,
    };

    /// Whether `term` is charged.
    pub fn contains(&self, term: CpuOverheadTerm) -> bool {
        match term {
            CpuOverheadTerm::Schedule => self.schedule,
            CpuOverheadTerm::SamplerE2e => self.sampler_e2e,
            CpuOverheadTerm::PrepareInputsE2e => self.prepare_inputs_e2e,
            CpuOverheadTerm::ProcessModelOutputs => self.process_model_outputs,
            CpuOverheadTerm::RayCommTime => self.ray_comm_time,
        }
    }

    /// Whether any term is charged.
    pub fn any(&self) -> bool {
        CpuOverheadTerm::ALL.into_iter().any(|t| self.contains(t))
    }
}

/// Vidur's prediction grid (`BaseExecutionTimePredictorConfig`). Vidur raises `KeyError` for
/// a lookup outside it; our predictors extrapolate and flag instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GridLimits {
    /// Token ops are tabulated for 1..=max_tokens (`prediction_max_tokens_per_request`, times
    /// `prediction_max_batch_size` for Orca).
    pub max_tokens: u32,
    /// KV lengths 0..=max_tokens_per_request in steps of `kv_cache_granularity`.
    pub max_tokens_per_request: u32,
    /// Decode batch sizes and CPU-overhead batch sizes 1..=max_batch_size.
    pub max_batch_size: u32,
    /// Prefill chunks 1..=max_prefill_chunk_size.
    pub max_prefill_chunk_size: u32,
    /// KV lengths are rounded up to a multiple of this.
    pub kv_cache_granularity: u32,
}

impl Default for GridLimits {
    fn default() -> Self {
        GridLimits {
            max_tokens: 4096,
            max_tokens_per_request: 4096,
            max_batch_size: 128,
            max_prefill_chunk_size: 4096,
            kv_cache_granularity: 64,
        }
    }
}

/// Model dimensions, parallelism and Vidur's predictor knobs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PredictorConfig {
    pub num_layers: u32,
    pub num_q_heads: u32,
    pub num_kv_heads: u32,
    /// Hidden size (`n_embd`); also maps collective message bytes to tokens.
    pub embedding_dim: u32,
    pub tensor_parallel_size: u32,
    pub pipeline_parallel_size: u32,
    /// Vidur's `post_attn_norm`: whether `post_attention_layernorm` is charged (true for
    /// Llama and Qwen).
    pub post_attn_norm: bool,
    pub cpu_overheads: CpuOverheadFlags,
    pub grid: GridLimits,
    /// Added to every all-reduce (Vidur: `nccl_cpu_launch_overhead_ms = 0.02`).
    pub nccl_cpu_launch_overhead_ms: f64,
    /// Added per all-reduce as `x · TP^1.25` (Vidur: 0).
    pub nccl_cpu_skew_overhead_per_device_ms: f64,
    /// Prefill attention × (1 + this) when a batch has several prefills, GQA models only
    /// (Vidur: 0.1).
    pub attention_prefill_batching_overhead_fraction: f64,
    /// Decode attention × (1 + this) when a batch has several decodes, GQA models only
    /// (Vidur: 0.1).
    pub attention_decode_batching_overhead_fraction: f64,
}

impl PredictorConfig {
    /// A TP = PP = 1 deployment with Vidur's default knobs and no CPU overheads.
    pub fn new(num_layers: u32, num_q_heads: u32, num_kv_heads: u32, embedding_dim: u32) -> Self {
        PredictorConfig {
            num_layers,
            num_q_heads,
            num_kv_heads,
            embedding_dim,
            tensor_parallel_size: 1,
            pipeline_parallel_size: 1,
            post_attn_norm: true,
            cpu_overheads: CpuOverheadFlags::NONE,
            grid: GridLimits::default(),
            nccl_cpu_launch_overhead_ms: 0.02,
            nccl_cpu_skew_overhead_per_device_ms: 0.0,
            attention_prefill_batching_overhead_fraction: 0.1,
            attention_decode_batching_overhead_fraction: 0.1,
        }
    }

    /// Sets tensor and pipeline parallelism.
    pub fn with_parallelism(
        mut self,
        tensor_parallel_size: u32,
        pipeline_parallel_size: u32,
    ) -> Self {
        self.tensor_parallel_size = tensor_parallel_size;
        self.pipeline_parallel_size = pipeline_parallel_size;
        self
    }

    /// Sets the CPU-overhead terms to charge.
    pub fn with_cpu_overheads(mut self, flags: CpuOverheadFlags) -> Self {
        self.cpu_overheads = flags;
        self
    }

    /// Layers run by one pipeline stage (Vidur: `num_layers // PP`).
    pub fn layers_per_stage(&self) -> u32 {
        self.num_layers / self.pipeline_parallel_size.max(1)
    }

    /// Whether the model uses grouped-query attention, which is when Vidur applies the
    /// attention batching overheads.
    pub fn is_gqa(&self) -> bool {
        self.num_q_heads > self.num_kv_heads
    }

    /// Checks the dimensions, as Vidur's asserts do.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("num_layers", self.num_layers),
            ("num_q_heads", self.num_q_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("embedding_dim", self.embedding_dim),
            ("tensor_parallel_size", self.tensor_parallel_size),
            ("pipeline_parallel_size", self.pipeline_parallel_size),
            ("grid.max_tokens", self.grid.max_tokens),
            ("grid.max_batch_size", self.grid.max_batch_size),
            (
                "grid.max_prefill_chunk_size",
                self.grid.max_prefill_chunk_size,
            ),
            ("grid.kv_cache_granularity", self.grid.kv_cache_granularity),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(Error::config(key, "must be positive"));
            }
        }
        if !self.num_layers.is_multiple_of(self.pipeline_parallel_size) {
            return Err(Error::config(
                "pipeline_parallel_size",
                format!(
                    "{} layers do not split into {} stages",
                    self.num_layers, self.pipeline_parallel_size
                ),
            ));
        }
        let knobs = [
            (
                "nccl_cpu_launch_overhead_ms",
                self.nccl_cpu_launch_overhead_ms,
            ),
            (
                "nccl_cpu_skew_overhead_per_device_ms",
                self.nccl_cpu_skew_overhead_per_device_ms,
            ),
            (
                "attention_prefill_batching_overhead_fraction",
                self.attention_prefill_batching_overhead_fraction,
            ),
            (
                "attention_decode_batching_overhead_fraction",
                self.attention_decode_batching_overhead_fraction,
            ),
        ];
        for (key, v) in knobs {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::config(
                    key,
                    format!("{v} is not a finite non-negative number"),
                ));
            }
        }
        Ok(())
    }

    /// Checks that a bundle was profiled for this model and TP degree.
    pub fn check_bundle(&self, spec: &BundleModelSpec) -> Result<()> {
        let pairs = [
            ("num_q_heads / n_head", self.num_q_heads, spec.n_head),
            (
                "num_kv_heads / n_kv_head",
                self.num_kv_heads,
                spec.n_kv_head,
            ),
            ("embedding_dim / n_embd", self.embedding_dim, spec.n_embd),
            (
                "tensor_parallel_size",
                self.tensor_parallel_size,
                spec.num_tensor_parallel_workers,
            ),
        ];
        for (what, ours, bundle) in pairs {
            if ours != bundle {
                return Err(Error::Mismatch(format!(
                    "predictor config has {what} = {ours} but the bundle was profiled with {bundle}"
                )));
            }
        }
        Ok(())
    }
}

/// The predictor implementations, by stable name: one enum shared with the config.
pub use crate::config::types::PredictorKind;
