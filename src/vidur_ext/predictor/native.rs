//! `native`: this project's model of our CPU engine.
//!
//! Differences from Vidur's formula, each following how our engine actually runs (and
//! checked against batch replays of real runs, `docs/predictor_accuracy.md`):
//! - **decode attention as one call**: the engine runs every decode of an iteration in one
//!   paged-attention call whose work is the batch's summed context, so it is looked up once
//!   at (number of decodes, mean cached tokens) — like Vidur, but without rounding and
//!   without Vidur's GQA batching overhead (the profiler measured real batches);
//! - **prefill attention per request**, interpolated between profiled chunk sizes in
//!   proportion to the attention work `chunk·kv + chunk·(chunk+1)/2` rather than in chunk²
//!   alone, which is exact for any cost linear in that work;
//! - **interpolation at exact sizes** instead of rounding tokens to 8 and KV to 64. KV keys
//!   are cached tokens, the profiler's `kv_cache_size` (Vidur looks decodes up at
//!   `num_processed_tokens`, one more);
//! - **the ops Vidur leaves out**, when the bundle has them: `attn_qk_norm` per layer,
//!   `add` [`NativeConfig::adds_per_layer`] times per layer (Qwen3 has two residual adds, the
//!   profiler times one), and per iteration `emb` (first stage), `final_norm`, `lm_head` and
//!   `sampler` (last stage; keyed by logits rows, as the engine normalises only those rows);
//! - **sampling is an op**: when the bundle times `sampler` by logits rows, the CPU term
//!   `sampler_e2e` (keyed by batch size) is not charged again.
//!
//! Each op family has one method below, so the model can be tuned family by family on real
//! measurements.

use super::curves::BundleCurves;
use super::interp::Lookup;
use super::{
    BatchPrediction, ExecutionTimePredictor, IterationContext, PredictorConfig, RequestShape,
};
use crate::io::bundle::{Bundle, CpuOverheadTerm, Op, OpSet, OpStatistic};
use crate::Result;

/// Knobs of the native model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NativeConfig {
    /// Residual adds per layer; the bundle's `add` times one.
    pub adds_per_layer: u32,
    /// Key `final_norm` by logits rows (an engine that selects the last rows before the norm)
    /// instead of by all scheduled tokens (candle's Qwen3 normalises every row).
    pub final_norm_over_logits_rows: bool,
    /// The statistic of the bundle's op times that is fitted (`vidur.predictor_statistic`).
    pub statistic: OpStatistic,
}

impl Default for NativeConfig {
    /// Our engine: two residual adds per layer, final norm over the logits rows only.
    fn default() -> Self {
        NativeConfig {
            adds_per_layer: 2,
            final_norm_over_logits_rows: true,
            statistic: OpStatistic::Median,
        }
    }
}

/// The native predictor.
#[derive(Clone, Debug)]
pub struct NativePredictor {
    config: PredictorConfig,
    native: NativeConfig,
    curves: BundleCurves,
}

/// Per-op accumulation for one prediction.
struct Acc {
    ops_ms: [f64; Op::COUNT],
    extrapolated: OpSet,
}

impl Acc {
    /// Adds `times × lookup` to `op`.
    fn add(&mut self, op: Op, times: f64, l: Lookup) {
        self.ops_ms[op.index()] += times * l.value_ms;
        if l.extrapolated {
            self.extrapolated.insert(op);
        }
    }
}

impl NativePredictor {
    /// Fits the bundle; the same checks as [`super::VidurCompatPredictor::new`].
    pub fn new(
        bundle: &Bundle,
        config: PredictorConfig,
        native: NativeConfig,
    ) -> Result<NativePredictor> {
        config.validate()?;
        config.check_bundle(&bundle.spec)?;
        let curves = BundleCurves::fit(bundle, native.statistic)?;
        curves.check_covers(&config, bundle)?;
        Ok(NativePredictor {
            config,
            native,
            curves,
        })
    }

    /// The fitted interpolants.
    pub fn curves(&self) -> &BundleCurves {
        &self.curves
    }

    /// Dense per-layer ops at the exact token count.
    fn token_ops(&self, acc: &mut Acc, tokens: f64, layers: f64) {
        for op in [
            Op::InputLayernorm,
            Op::AttnPreProj,
            Op::AttnQkNorm,
            Op::AttnRope,
            Op::AttnKvCacheSave,
            Op::AttnPostProj,
            Op::MlpUpProj,
            Op::MlpAct,
            Op::MlpDownProj,
        ] {
            acc.add(op, layers, self.curves.token_op(op, tokens));
        }
        if self.config.post_attn_norm {
            let l = self.curves.token_op(Op::PostAttentionLayernorm, tokens);
            acc.add(Op::PostAttentionLayernorm, layers, l);
        }
        let adds = f64::from(self.native.adds_per_layer) * layers;
        acc.add(Op::Add, adds, self.curves.token_op(Op::Add, tokens));
    }

    /// Attention: decodes as one call at (decodes, mean context); prefills one by one.
    fn attention(&self, acc: &mut Acc, batch: &[RequestShape], layers: f64) {
        let (mut decodes, mut decode_kv) = (0.0, 0.0);
        for r in batch {
            if r.is_prefill {
                let l =
                    self.prefill_lookup(f64::from(r.num_tokens), f64::from(r.num_context_tokens));
                acc.add(Op::AttnPrefill, layers, l);
            } else {
                decodes += 1.0;
                decode_kv += f64::from(r.num_context_tokens);
            }
        }
        if decodes > 0.0 {
            let l = self.curves.attn_decode(decodes, decode_kv / decodes);
            acc.add(Op::AttnDecode, layers, l);
        }
    }

    /// Prefill attention of one chunk: exact at profiled chunks; between two profiled chunks
    /// `c0 < chunk < c1`, linear in the attention work `w(c) = c·kv + c·(c+1)/2` between the
    /// two chunks' values at this `kv`; outside them, the grid's documented rule.
    fn prefill_lookup(&self, chunk: f64, kv: f64) -> Lookup {
        let grid = self.curves.prefill();
        let outer = grid.outer_keys();
        let c2 = chunk * chunk;
        let i = outer.partition_point(|&o| o < c2);
        if i == 0 || i >= outer.len() || outer[i] == c2 {
            return self.curves.attn_prefill(chunk, kv);
        }
        let (c0, c1) = (outer[i - 1].sqrt(), outer[i].sqrt());
        let (lo, hi) = (grid.groups()[i - 1].eval(kv), grid.groups()[i].eval(kv));
        let work = |c: f64| c * kv + c * (c + 1.0) / 2.0;
        let t = (work(chunk) - work(c0)) / (work(c1) - work(c0));
        Lookup {
            value_ms: lo.value_ms + t * (hi.value_ms - lo.value_ms),
            extrapolated: lo.extrapolated || hi.extrapolated,
        }
    }

    /// Tensor- and pipeline-parallel communication, as Vidur charges it.
    fn communication(&self, acc: &mut Acc, tokens: f64, layers: f64, last_stage: bool) {
        let tp = self.config.tensor_parallel_size;
        if tp > 1 {
            let l = self.curves.token_op(Op::AllReduce, tokens);
            let overhead = self.config.nccl_cpu_launch_overhead_ms
                + self.config.nccl_cpu_skew_overhead_per_device_ms * f64::from(tp).powf(1.25);
            let with_overhead = Lookup {
                value_ms: l.value_ms + overhead,
                ..l
            };
            acc.add(Op::AllReduce, 2.0 * layers, with_overhead);
        }
        if !last_stage {
            acc.add(
                Op::SendRecv,
                1.0,
                self.curves.token_op(Op::SendRecv, tokens),
            );
        }
    }

    /// Ops that run once per iteration, outside the layers.
    fn per_iteration(&self, acc: &mut Acc, tokens: f64, logits_rows: f64, first: bool, last: bool) {
        if first {
            acc.add(Op::Emb, 1.0, self.curves.token_op(Op::Emb, tokens));
        }
        if last {
            let norm_rows = if self.native.final_norm_over_logits_rows {
                logits_rows
            } else {
                tokens
            };
            if norm_rows > 0.0 {
                acc.add(
                    Op::FinalNorm,
                    1.0,
                    self.curves.token_op(Op::FinalNorm, norm_rows),
                );
            }
            // An iteration of intermediate prefill chunks computes no logits at all.
            if logits_rows > 0.0 {
                acc.add(
                    Op::LmHead,
                    1.0,
                    self.curves.token_op(Op::LmHead, logits_rows),
                );
                acc.add(
                    Op::Sampler,
                    1.0,
                    self.curves.token_op(Op::Sampler, logits_rows),
                );
            }
        }
    }

    /// CPU overheads by batch size, the charged terms only.
    fn cpu_overheads(&self, batch_size: f64) -> ([f64; CpuOverheadTerm::COUNT], bool) {
        let mut ms = [0.0; CpuOverheadTerm::COUNT];
        let mut extrapolated = false;
        // Sampling is charged as the `sampler` op when the bundle times it.
        let sampler_is_op = self.curves.series(Op::Sampler).is_some();
        for term in CpuOverheadTerm::ALL {
            if term == CpuOverheadTerm::SamplerE2e && sampler_is_op {
                continue;
            }
            if self.config.cpu_overheads.contains(term) {
                let l = self.curves.cpu_term(term, batch_size);
                ms[term.index()] = l.value_ms;
                extrapolated |= l.extrapolated;
            }
        }
        (ms, extrapolated)
    }
}

impl ExecutionTimePredictor for NativePredictor {
    fn name(&self) -> &'static str {
        "native"
    }

    fn predict_with(&self, batch: &[RequestShape], ctx: &IterationContext) -> BatchPrediction {
        if batch.is_empty() {
            return BatchPrediction::EMPTY;
        }
        let mut acc = Acc {
            ops_ms: [0.0; Op::COUNT],
            extrapolated: OpSet::EMPTY,
        };
        let tokens: f64 = batch.iter().map(|r| f64::from(r.num_tokens)).sum();
        let layers = f64::from(self.config.layers_per_stage());
        let first = ctx.pipeline_stage == 0;
        let last = ctx.pipeline_stage + 1 >= self.config.pipeline_parallel_size;
        let logits_rows = f64::from(ctx.num_logits_rows.unwrap_or(batch.len() as u32));

        self.token_ops(&mut acc, tokens, layers);
        self.attention(&mut acc, batch, layers);
        self.communication(&mut acc, tokens, layers, last);
        self.per_iteration(&mut acc, tokens, logits_rows, first, last);
        let (cpu_ms, cpu_extrapolated) = self.cpu_overheads(batch.len() as f64);

        let model_ms = acc.ops_ms.iter().sum();
        BatchPrediction::from_parts(
            model_ms,
            acc.ops_ms,
            cpu_ms,
            acc.extrapolated,
            cpu_extrapolated,
        )
    }
}
