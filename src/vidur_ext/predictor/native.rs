//! `native`: this project's model of our CPU engine.
//!
//! Differences from Vidur's formula, each following how our engine actually runs:
//! - **attention per request**: our engine computes attention sequence by sequence, so the
//!   batch's attention is the sum over requests — decodes at (batch 1, the request's cached
//!   tokens), prefill chunks at (chunk, cached tokens) — instead of Vidur's aggregation into
//!   one (batch, mean KV) decode and one sum-of-squares prefill, and without its GQA
//!   batching overheads;
//! - **interpolation at exact sizes** instead of rounding tokens to 8 and KV to 64. KV keys
//!   are cached tokens, the profiler's `kv_cache_size` (Vidur looks decodes up at
//!   `num_processed_tokens`, one more);
//! - **the ops Vidur leaves out**, when the bundle has them: `attn_qk_norm` per layer,
//!   `add` [`NativeConfig::adds_per_layer`] times per layer (Qwen3 has two residual adds, the
//!   profiler times one), and per iteration `emb` (first stage), `final_norm`, `lm_head` and
//!   `sampler` (last stage; the last two keyed by logits rows).
//!
//! Each op family has one method below, so the model can be tuned family by family on real
//! measurements.

use super::curves::BundleCurves;
use super::interp::Lookup;
use super::{
    BatchPrediction, ExecutionTimePredictor, IterationContext, PredictorConfig, RequestShape,
};
use crate::vidur_ext::bundle::{Bundle, CpuOverheadTerm, Op, OpSet};
use crate::Result;

/// Knobs of the native model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NativeConfig {
    /// Residual adds per layer; the bundle's `add` times one.
    pub adds_per_layer: u32,
    /// Key `final_norm` by logits rows (an engine that selects the last rows before the norm)
    /// instead of by all scheduled tokens (candle's Qwen3 normalises every row).
    pub final_norm_over_logits_rows: bool,
}

impl Default for NativeConfig {
    fn default() -> Self {
        NativeConfig {
            adds_per_layer: 2,
            final_norm_over_logits_rows: false,
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
        let curves = BundleCurves::fit(bundle)?;
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

    /// Attention, request by request.
    fn attention(&self, acc: &mut Acc, batch: &[RequestShape], layers: f64) {
        for r in batch {
            let kv = f64::from(r.num_context_tokens);
            if r.is_prefill {
                let l = self.curves.attn_prefill(f64::from(r.num_tokens), kv);
                acc.add(Op::AttnPrefill, layers, l);
            } else {
                acc.add(Op::AttnDecode, layers, self.curves.attn_decode(1.0, kv));
            }
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
        for term in CpuOverheadTerm::ALL {
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
