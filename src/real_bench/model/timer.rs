//! Names of the model's op functions and the hook through which a forward reports their times.

use std::time::Duration;

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

/// Receives the wall time of each op as the forward runs it. candle's CPU backend is
/// synchronous, so an `Instant` around the call measures the op itself.
pub trait OpTimer {
    /// `layer` is `Some` for per-layer ops, `None` for per-iteration ones.
    fn record(&mut self, op: ModelOp, layer: Option<usize>, elapsed: Duration);
}

/// An [`OpTimer`] that sums time and counts calls per op over all layers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpTotals {
    totals: [Duration; ModelOp::ALL.len()],
    calls: [u64; ModelOp::ALL.len()],
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
