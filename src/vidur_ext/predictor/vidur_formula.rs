//! Vidur's batch-time formula (`SklearnExecutionTimePredictor.get_execution_time` and
//! `ExecutionTime`), written once over an abstract per-op lookup so that `vidur_compat`
//! (interpolants) and `vidur_tables` (Vidur's own prediction tables) share it.
//!
//! For one batch and pipeline stage, in ms:
//! - token ops at `ceil(Σ num_tokens / 8) · 8`; `attn_kv_cache_save` at the exact sum;
//! - decode attention at (`n` decodes, `ceil(⌊mean(num_processed)⌋ / 64) · 64`) ×
//!   (1 + 0.1·[n > 1]) — Vidur truncates the mean with `int()` before rounding up;
//! - prefill attention at (`K = Σ ceil(num_processed_i / 64) · 64`, `round(√Σ c_i²)²`) ×
//!   (1 + 0.1·[#prefills > 1]), Python's round-half-even; both 0.1s only for GQA models;
//! - TP: `all_reduce + 0.02 + 0·TP^1.25`, twice per layer; PP: `send_recv` on every stage
//!   but the last;
//! - block = attention (pre_proj + post_proj + rope + kv_save + decode + prefill + tp +
//!   input_norm) plus MLP (up + down + act + tp + post_attn_norm) plus add, summed in that
//!   order so float results match Vidur's bit for bit; stage = block · ⌊layers / PP⌋ +
//!   pp_comm;
//! - CPU: schedule + sampler_e2e + prepare_inputs_e2e + process_model_outputs +
//!   ray_comm_time at the batch size, the enabled terms only.
//!
//! A key outside Vidur's prediction grid ([`GridLimits`]) would be a `KeyError` in Vidur;
//! here the op is flagged as extrapolated.

use super::interp::Lookup;
use super::{BatchPrediction, GridLimits, PredictorConfig, RequestShape};
use crate::io::bundle::{CpuOverheadTerm, Op, OpSet};

/// The per-op values behind Vidur's formula, at Vidur's (already rounded) keys.
pub(crate) trait VidurLookups {
    /// A token-keyed op: the nine dense ops, `attn_kv_cache_save`, `all_reduce`, `send_recv`.
    fn token_op(&self, op: Op, num_tokens: u64) -> Lookup;
    /// Decode attention at (`batch_size`, `kv_cache_size`).
    fn attn_decode(&self, batch_size: u64, kv_cache_size: u64) -> Lookup;
    /// Prefill attention at (`kv_cache_size`, chunk) — Vidur's key is chunk².
    fn attn_prefill(&self, kv_cache_size: u64, chunk: u64) -> Lookup;
    /// A CPU-overhead term at `batch_size`.
    fn cpu(&self, term: CpuOverheadTerm, batch_size: u64) -> Lookup;
}

/// `ceil(x / step) · step`.
pub(crate) fn round_up(x: u64, step: u64) -> u64 {
    x.div_ceil(step) * step
}

/// Vidur's `(decode_batch_size, kv_cache_size)` for the decodes of a batch; `(0, 0)` if none.
pub(crate) fn decode_params(batch: &[RequestShape], granularity: u64) -> (u64, u64) {
    let (mut n, mut sum) = (0u64, 0u64);
    for r in batch.iter().filter(|r| !r.is_prefill) {
        n += 1;
        sum += r.vidur_num_processed_tokens();
    }
    if n == 0 {
        return (0, 0);
    }
    // int(np.mean(...)): integer division equals the truncated float mean for any realistic
    // sum (< 2^53) since the fractional part is at least 1/n away from the next integer.
    (n, round_up(sum / n, granularity))
}

/// Vidur's aggregated prefill key `(Σ kv_i, round(√Σ c_i²))` and the number of prefills.
pub(crate) fn prefill_params(batch: &[RequestShape], granularity: u64) -> (u64, u64, u64) {
    let (mut n, mut kv, mut sum_sq) = (0u64, 0u64, 0u64);
    for r in batch.iter().filter(|r| r.is_prefill) {
        n += 1;
        kv += round_up(r.vidur_num_processed_tokens(), granularity);
        sum_sq += u64::from(r.num_tokens) * u64::from(r.num_tokens);
    }
    let chunk = (sum_sq as f64).sqrt().round_ties_even() as u64;
    (n, kv, chunk)
}

/// Accumulates extrapolation flags while reading lookups.
struct Flags {
    ops: OpSet,
    cpu: bool,
}

impl Flags {
    fn take(&mut self, op: Op, l: Lookup) -> f64 {
        if l.extrapolated {
            self.ops.insert(op);
        }
        l.value_ms
    }
}

/// Predicts one batch on one pipeline stage with Vidur's formula.
pub(crate) fn predict(
    lookups: &impl VidurLookups,
    cfg: &PredictorConfig,
    batch: &[RequestShape],
    pipeline_stage: u32,
) -> BatchPrediction {
    if batch.is_empty() {
        return BatchPrediction::EMPTY;
    }
    let g: GridLimits = cfg.grid;
    let gran = u64::from(g.kv_cache_granularity);
    let max_tokens = u64::from(g.max_tokens);
    let mut flags = Flags {
        ops: OpSet::EMPTY,
        cpu: false,
    };

    let total: u64 = batch.iter().map(|r| u64::from(r.num_tokens)).sum();
    let rounded = round_up(total, 8);
    let tokens_outside = rounded == 0 || rounded > max_tokens;
    let token_op = |flags: &mut Flags, op: Op| {
        flags.take(op, lookups.token_op(op, rounded).flag(tokens_outside))
    };

    let pre_proj = token_op(&mut flags, Op::AttnPreProj);
    let post_proj = token_op(&mut flags, Op::AttnPostProj);
    let rope = token_op(&mut flags, Op::AttnRope);
    let up = token_op(&mut flags, Op::MlpUpProj);
    let down = token_op(&mut flags, Op::MlpDownProj);
    let act = token_op(&mut flags, Op::MlpAct);
    let attn_norm = token_op(&mut flags, Op::InputLayernorm);
    let mlp_norm = if cfg.post_attn_norm {
        token_op(&mut flags, Op::PostAttentionLayernorm)
    } else {
        0.0
    };
    let add = token_op(&mut flags, Op::Add);
    let kv_save = flags.take(
        Op::AttnKvCacheSave,
        lookups
            .token_op(Op::AttnKvCacheSave, total)
            .flag(total > max_tokens),
    );

    let (decode_fraction, prefill_fraction) = if cfg.is_gqa() {
        (
            cfg.attention_decode_batching_overhead_fraction,
            cfg.attention_prefill_batching_overhead_fraction,
        )
    } else {
        (0.0, 0.0)
    };
    let (n_decode, decode_kv) = decode_params(batch, gran);
    let decode = if n_decode == 0 {
        0.0
    } else {
        let outside = n_decode > u64::from(g.max_batch_size)
            || decode_kv > u64::from(g.max_tokens_per_request);
        let v = flags.take(
            Op::AttnDecode,
            lookups.attn_decode(n_decode, decode_kv).flag(outside),
        );
        v * (1.0 + decode_fraction * f64::from(u8::from(n_decode > 1)))
    };
    let (n_prefill, prefill_kv, prefill_chunk) = prefill_params(batch, gran);
    let prefill = if n_prefill == 0 {
        0.0
    } else {
        let outside = prefill_kv > u64::from(g.max_tokens_per_request)
            || prefill_chunk == 0
            || prefill_chunk > u64::from(g.max_prefill_chunk_size);
        let v = flags.take(
            Op::AttnPrefill,
            lookups
                .attn_prefill(prefill_kv, prefill_chunk)
                .flag(outside),
        );
        v * (1.0 + prefill_fraction * f64::from(u8::from(n_prefill > 1)))
    };

    let tp = cfg.tensor_parallel_size;
    let tp_comm = if tp == 1 {
        0.0
    } else {
        // `TP^1.25` only when there is a skew to scale (Vidur's default is none): the power
        // is a noticeable share of a batch's prediction, and 0 · x = 0 exactly.
        let per_device = cfg.nccl_cpu_skew_overhead_per_device_ms;
        let skew = if per_device == 0.0 {
            0.0
        } else {
            per_device * f64::from(tp).powf(1.25)
        };
        token_op(&mut flags, Op::AllReduce) + cfg.nccl_cpu_launch_overhead_ms + skew
    };
    let pp_comm = if pipeline_stage + 1 >= cfg.pipeline_parallel_size {
        0.0
    } else {
        token_op(&mut flags, Op::SendRecv)
    };

    let attention_layer =
        pre_proj + post_proj + rope + kv_save + decode + prefill + tp_comm + attn_norm;
    let mlp_layer = up + down + act + tp_comm + mlp_norm;
    let block = attention_layer + mlp_layer + add;
    let layers = f64::from(cfg.layers_per_stage());
    let model_ms = block * layers + pp_comm;

    let mut ops_ms = [0.0; Op::COUNT];
    for (op, per_layer) in [
        (Op::AttnPreProj, pre_proj),
        (Op::AttnPostProj, post_proj),
        (Op::AttnRope, rope),
        (Op::AttnKvCacheSave, kv_save),
        (Op::AttnDecode, decode),
        (Op::AttnPrefill, prefill),
        (Op::InputLayernorm, attn_norm),
        (Op::MlpUpProj, up),
        (Op::MlpDownProj, down),
        (Op::MlpAct, act),
        (Op::PostAttentionLayernorm, mlp_norm),
        (Op::Add, add),
        (Op::AllReduce, 2.0 * tp_comm),
    ] {
        ops_ms[op.index()] = per_layer * layers;
    }
    ops_ms[Op::SendRecv.index()] = pp_comm;

    let mut cpu_ms = [0.0; CpuOverheadTerm::COUNT];
    let batch_size = batch.len() as u64;
    for term in CpuOverheadTerm::ALL {
        if cfg.cpu_overheads.contains(term) {
            let l = lookups
                .cpu(term, batch_size)
                .flag(batch_size > u64::from(g.max_batch_size));
            flags.cpu |= l.extrapolated;
            cpu_ms[term.index()] = l.value_ms;
        }
    }
    BatchPrediction::from_parts(model_ms, ops_ms, cpu_ms, flags.ops, flags.cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_kv_truncates_the_mean_before_rounding_up() {
        // num_processed = 64 and 65 → mean 64.5 → int 64 → 64 (not 128).
        let batch = [RequestShape::decode(63), RequestShape::decode(64)];
        assert_eq!(decode_params(&batch, 64), (2, 64));
        let batch = [RequestShape::decode(64), RequestShape::decode(64)];
        assert_eq!(decode_params(&batch, 64), (2, 128));
        assert_eq!(decode_params(&[RequestShape::prefill(5, 0)], 64), (0, 0));
    }

    #[test]
    fn prefill_aggregates_by_sum_of_squares() {
        // kv: ceil(100/64)*64 = 128, ceil(0/64)*64 = 0; chunks 30, 40 → √2500 = 50.
        let batch = [
            RequestShape::prefill(30, 100),
            RequestShape::prefill(40, 0),
            RequestShape::decode(7),
        ];
        assert_eq!(prefill_params(&batch, 64), (2, 128, 50));
        // √(3² + 3²) = 4.24 → 4.
        let batch = [RequestShape::prefill(3, 0), RequestShape::prefill(3, 0)];
        assert_eq!(prefill_params(&batch, 64).2, 4);
    }
}
