//! Names of the model's op functions and the hook through which a forward reports their times.

use std::time::{Duration, Instant};

use candle_core::Device;

use crate::Result;

/// One op function of the forward pass. The names are Vidur's profiling op names where Vidur
/// has one (so a bundle's `time_stats.<op>` columns map 1:1), and stable: the profiler and the
/// recorders write them to files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelOp {
    /// Token embedding lookup (once per iteration).
    Emb,
    /// RMSNorm before attention.
    InputLayernorm,
    /// q, k, v projections.
    AttnPreProj,
    /// Per-head RMSNorm of q and k (Qwen3-specific; Vidur has no such op).
    AttnQkNorm,
    /// Rotary position embedding of q and k.
    AttnRope,
    /// Writes this iteration's K and V into the paged cache.
    AttnKvCacheSave,
    /// Attention of every sequence with more than one token this iteration.
    AttnPrefill,
    /// Attention of every single-token sequence.
    AttnDecode,
    /// o projection.
    AttnPostProj,
    /// Residual addition (twice per layer).
    Add,
    /// RMSNorm before the MLP.
    PostAttentionLayernorm,
    /// gate and up projections.
    MlpUpProj,
    /// silu(gate) · up.
    MlpAct,
    /// down projection.
    MlpDownProj,
    /// The last RMSNorm, on the rows that produce logits (once per iteration).
    FinalNorm,
    /// Logits projection (tied to the embedding in small Qwen3 models).
    LmHead,
    /// Greedy argmax over the logits rows (called by the engine, not by `forward`).
    Sampler,
}

impl ModelOp {
    /// Every op, in forward order (per-layer ops between `Emb` and `FinalNorm`).
    pub const ALL: [ModelOp; 17] = [
        ModelOp::Emb,
        ModelOp::InputLayernorm,
        ModelOp::AttnPreProj,
        ModelOp::AttnQkNorm,
        ModelOp::AttnRope,
        ModelOp::AttnKvCacheSave,
        ModelOp::AttnPrefill,
        ModelOp::AttnDecode,
        ModelOp::AttnPostProj,
        ModelOp::Add,
        ModelOp::PostAttentionLayernorm,
        ModelOp::MlpUpProj,
        ModelOp::MlpAct,
        ModelOp::MlpDownProj,
        ModelOp::FinalNorm,
        ModelOp::LmHead,
        ModelOp::Sampler,
    ];

    /// The stable name (Vidur's where it exists).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelOp::Emb => "emb",
            ModelOp::InputLayernorm => "input_layernorm",
            ModelOp::AttnPreProj => "attn_pre_proj",
            ModelOp::AttnQkNorm => "attn_qk_norm",
            ModelOp::AttnRope => "attn_rope",
            ModelOp::AttnKvCacheSave => "attn_kv_cache_save",
            ModelOp::AttnPrefill => "attn_prefill",
            ModelOp::AttnDecode => "attn_decode",
            ModelOp::AttnPostProj => "attn_post_proj",
            ModelOp::Add => "add",
            ModelOp::PostAttentionLayernorm => "post_attention_layernorm",
            ModelOp::MlpUpProj => "mlp_up_proj",
            ModelOp::MlpAct => "mlp_act",
            ModelOp::MlpDownProj => "mlp_down_proj",
            ModelOp::FinalNorm => "final_norm",
            ModelOp::LmHead => "lm_head",
            ModelOp::Sampler => "sampler",
        }
    }

    /// Inverse of [`ModelOp::as_str`].
    pub fn from_name(name: &str) -> Option<ModelOp> {
        ModelOp::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// Whether the op runs once per decoder layer (as opposed to once per iteration).
    pub fn is_per_layer(self) -> bool {
        !matches!(
            self,
            ModelOp::Emb | ModelOp::FinalNorm | ModelOp::LmHead | ModelOp::Sampler
        )
    }
}

impl std::fmt::Display for ModelOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Receives the time of each op of a forward.
///
/// On the CPU that is the wall time around the call, reported as the op returns (candle's
/// CPU backend is synchronous, so it measures the op itself). On a CUDA device, where ops
/// only queue kernels, it is the GPU time between CUDA events recorded around the op on
/// candle's stream, reported in forward order when the forward ends. On other devices the
/// forward synchronizes the device around each op and reports wall time.
pub trait OpTimer: Send {
    /// `layer` is `Some` for per-layer ops, `None` for per-iteration ones.
    fn record(&mut self, op: ModelOp, layer: Option<usize>, elapsed: Duration);

    /// The GPU time of a whole forward (CUDA events at its start and end, so it includes
    /// the gaps between ops). Only GPU forwards report it; the default ignores it.
    fn record_device_forward(&mut self, elapsed: Duration) {
        let _ = elapsed;
    }
}

/// An [`OpTimer`] that sums time and counts calls per op over all layers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpTotals {
    totals: [Duration; ModelOp::ALL.len()],
    calls: [u64; ModelOp::ALL.len()],
    device_forward: Option<Duration>,
}

impl OpTotals {
    /// Summed time of `op`.
    pub fn total(&self, op: ModelOp) -> Duration {
        self.totals[op as usize]
    }

    /// How many times `op` was recorded.
    pub fn calls(&self, op: ModelOp) -> u64 {
        self.calls[op as usize]
    }

    /// Summed time of all ops.
    pub fn sum(&self) -> Duration {
        self.totals.iter().sum()
    }

    /// Summed GPU time of the forwards recorded since the last reset (`None` on the CPU).
    pub fn device_forward(&self) -> Option<Duration> {
        self.device_forward
    }

    /// Clears all totals.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

impl OpTimer for OpTotals {
    fn record(&mut self, op: ModelOp, _layer: Option<usize>, elapsed: Duration) {
        self.totals[op as usize] += elapsed;
        self.calls[op as usize] += 1;
    }

    fn record_device_forward(&mut self, elapsed: Duration) {
        *self.device_forward.get_or_insert(Duration::ZERO) += elapsed;
    }
}

/// How one forward measures its ops for an optional [`OpTimer`] (see there for what each
/// device reports).
pub(crate) enum OpClock<'t> {
    /// No timer: ops just run, no clock is read.
    Off,
    /// Wall time around each op; `sync` is the device to synchronize first (`None` on the CPU).
    Wall {
        timer: &'t mut dyn OpTimer,
        sync: Option<Device>,
    },
    /// CUDA events around each op, resolved by [`OpClock::finish`].
    #[cfg(any(feature = "cuda", feature = "cuda-check"))]
    Events(EventSpans<'t>),
}

impl<'t> OpClock<'t> {
    /// The clock for a forward on `device`.
    pub(crate) fn new(timer: Option<&'t mut dyn OpTimer>, device: &Device) -> Result<Self> {
        let Some(timer) = timer else {
            return Ok(OpClock::Off);
        };
        if device.is_cpu() {
            return Ok(OpClock::Wall { timer, sync: None });
        }
        #[cfg(any(feature = "cuda", feature = "cuda-check"))]
        if device.is_cuda() {
            return Ok(OpClock::Events(EventSpans::start(timer, device)?));
        }
        Ok(OpClock::Wall {
            timer,
            sync: Some(device.clone()),
        })
    }

    /// Runs `f` as `op` of `layer` and measures it.
    #[inline]
    pub(crate) fn time<R>(
        &mut self,
        op: ModelOp,
        layer: Option<usize>,
        f: impl FnOnce() -> Result<R>,
    ) -> Result<R> {
        match self {
            OpClock::Off => f(),
            OpClock::Wall { timer, sync } => {
                if let Some(d) = sync {
                    d.synchronize()?;
                }
                let start = Instant::now();
                let r = f();
                if let Some(d) = sync {
                    d.synchronize()?;
                }
                timer.record(op, layer, start.elapsed());
                r
            }
            #[cfg(any(feature = "cuda", feature = "cuda-check"))]
            OpClock::Events(spans) => spans.time(op, layer, f),
        }
    }

    /// Ends the forward: reports event-timed ops (waiting for the GPU to finish them).
    pub(crate) fn finish(self) -> Result<()> {
        match self {
            OpClock::Off | OpClock::Wall { .. } => Ok(()),
            #[cfg(any(feature = "cuda", feature = "cuda-check"))]
            OpClock::Events(spans) => spans.finish(),
        }
    }
}

/// Event pairs recorded around each op of one forward on candle's CUDA stream.
#[cfg(any(feature = "cuda", feature = "cuda-check"))]
pub(crate) struct EventSpans<'t> {
    timer: &'t mut dyn OpTimer,
    stream: crate::real_bench::cuda::StreamTimer,
    forward_start: crate::real_bench::cuda::StreamMark,
    spans: Vec<(
        ModelOp,
        Option<usize>,
        crate::real_bench::cuda::StreamMark,
        crate::real_bench::cuda::StreamMark,
    )>,
}

#[cfg(any(feature = "cuda", feature = "cuda-check"))]
impl<'t> EventSpans<'t> {
    fn start(timer: &'t mut dyn OpTimer, device: &Device) -> Result<Self> {
        let stream = crate::real_bench::cuda::StreamTimer::for_device(device)?;
        let forward_start = stream.mark()?;
        Ok(Self {
            timer,
            stream,
            forward_start,
            // ~15 ops per layer; a few dozen layers.
            spans: Vec::with_capacity(512),
        })
    }

    fn time<R>(
        &mut self,
        op: ModelOp,
        layer: Option<usize>,
        f: impl FnOnce() -> Result<R>,
    ) -> Result<R> {
        let start = self.stream.mark()?;
        let r = f()?;
        let end = self.stream.mark()?;
        self.spans.push((op, layer, start, end));
        Ok(r)
    }

    fn finish(self) -> Result<()> {
        let end = self.stream.mark()?;
        for (op, layer, start, stop) in &self.spans {
            self.timer.record(*op, *layer, start.elapsed_until(stop)?);
        }
        self.timer
            .record_device_forward(self.forward_start.elapsed_until(&end)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        for (i, op) in ModelOp::ALL.into_iter().enumerate() {
            assert_eq!(op as usize, i, "ALL must be in declaration order");
            assert_eq!(ModelOp::from_name(op.as_str()), Some(op));
        }
        assert_eq!(ModelOp::from_name("attention"), None);
        assert_eq!(ModelOp::MlpUpProj.as_str(), "mlp_up_proj");
        assert!(!ModelOp::LmHead.is_per_layer() && ModelOp::Add.is_per_layer());
    }

    #[test]
    fn totals_accumulate_per_op() {
        let mut t = OpTotals::default();
        t.record(ModelOp::Add, Some(0), Duration::from_micros(3));
        t.record(ModelOp::Add, Some(1), Duration::from_micros(4));
        t.record(ModelOp::LmHead, None, Duration::from_micros(10));
        assert_eq!(t.total(ModelOp::Add), Duration::from_micros(7));
        assert_eq!(t.calls(ModelOp::Add), 2);
        assert_eq!(t.sum(), Duration::from_micros(17));
    }
}
