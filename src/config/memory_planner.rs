//! Vidur's memory planner (`vidur/scheduler/utils/memory_planner.py`,
//! `vidur/utils/param_counter.py`), reproduced exactly so a Vidur-parity simulation sizes its
//! KV pool as Vidur would.
//!
//! - available = `total_memory_gb · 2^30 · (1 − memory_margin_fraction)`;
//! - parameter bytes per device = 2 · params_per_layer · layers/PP, with params_per_layer =
//!   `E·hd·(q/TP + 2·⌈kv/TP⌉) + E·hd·q/TP + (3 if gated else 2)·E·H / TP` — no embedding, LM
//!   head or norm weights;
//! - KV bytes per request = 2 (fp16) · 2 (K and V) · hd · ⌈kv/TP⌉ · max_request_tokens ·
//!   **all** layers (Vidur ignores PP here);
//! - max batch size = ⌊(available − params) / kv_per_request⌋ (Python float floor division),
//!   request slots = that × PP, blocks = (max_request_tokens // block_size) · slots.
//!
//! Vidur's head dimension is `E / q_heads`; Qwen3 declares its own (`head_dim = 128` with
//! `E = 1024`, 16 heads), so [`MemoryPlannerInput::head_dim`] can override it.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Model, device and deployment inputs of the planner.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryPlannerInput {
    /// Device memory in GiB (Vidur's `total_memory_gb`: A100 = 80).
    pub total_memory_gb: f64,
    /// Fraction held back (Vidur: 0.1).
    pub memory_margin_fraction: f64,
    pub num_layers: u32,
    pub num_q_heads: u32,
    pub num_kv_heads: u32,
    pub embedding_dim: u32,
    pub mlp_hidden_dim: u32,
    pub use_gated_mlp: bool,
    /// `None`: Vidur's `embedding_dim / num_q_heads`.
    pub head_dim: Option<u32>,
    pub tensor_parallel_size: u32,
    pub pipeline_parallel_size: u32,
    /// The request generator's `max_tokens` (Vidur: 4096): every request reserves this much KV.
    pub max_request_tokens: u32,
    /// KV block size in tokens (Vidur: 16).
    pub block_size: u32,
}

/// The planner's results.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryPlan {
    pub available_bytes: f64,
    pub param_bytes_per_device: u64,
    pub kv_bytes_per_request: u64,
    /// Requests whose full-context KV fits next to the weights (Vidur's `get_max_batch_size`).
    pub max_batch_size: u64,
    /// `max_batch_size × PP`.
    pub max_request_slots: u64,
    pub max_blocks_per_sequence: u64,
    /// KV blocks in the pool when Vidur's `num_blocks` is not given.
    pub num_blocks: u64,
}

/// Runs Vidur's memory planner. Fails where Vidur asserts: q heads or hidden size not
/// divisible by TP, layers not divisible by PP, hidden size not divisible by q heads (without
/// an explicit head dimension), or not even one request fitting.
pub fn plan_memory(input: &MemoryPlannerInput) -> Result<MemoryPlan> {
    let i = input;
    let bad = |msg: String| Err(Error::InvalidInput(format!("memory planner: {msg}")));
    for (name, v) in [
        ("num_layers", i.num_layers),
        ("num_q_heads", i.num_q_heads),
        ("num_kv_heads", i.num_kv_heads),
        ("embedding_dim", i.embedding_dim),
        ("mlp_hidden_dim", i.mlp_hidden_dim),
        ("tensor_parallel_size", i.tensor_parallel_size),
        ("pipeline_parallel_size", i.pipeline_parallel_size),
        ("max_request_tokens", i.max_request_tokens),
        ("block_size", i.block_size),
    ] {
        if v == 0 {
            return bad(format!("{name} must be positive"));
        }
    }
    let memory_ok = i.total_memory_gb.is_finite()
        && i.total_memory_gb > 0.0
        && (0.0..1.0).contains(&i.memory_margin_fraction);
    if !memory_ok {
        return bad(format!(
            "total_memory_gb {} / memory_margin_fraction {} out of range",
            i.total_memory_gb, i.memory_margin_fraction
        ));
    }
    let (tp, pp) = (
        u64::from(i.tensor_parallel_size),
        u64::from(i.pipeline_parallel_size),
    );
    let (e, q, kv) = (
        u64::from(i.embedding_dim),
        u64::from(i.num_q_heads),
        u64::from(i.num_kv_heads),
    );
    if q % tp != 0 || e % tp != 0 {
        return bad(format!(
            "q heads {q} and hidden size {e} must be divisible by TP {tp}"
        ));
    }
    if u64::from(i.num_layers) % pp != 0 {
        return bad(format!(
            "{} layers must be divisible by PP {pp}",
            i.num_layers
        ));
    }
    let hd = match i.head_dim {
        Some(hd) if hd > 0 => u64::from(hd),
        Some(_) => return bad("head_dim must be positive".into()),
        None if e % q == 0 => e / q,
        None => return bad(format!("hidden size {e} is not divisible by {q} q heads")),
    };
    let q_per_tp = q / tp;
    let kv_per_tp = kv.div_ceil(tp);
    let mlp_factor = if i.use_gated_mlp { 3 } else { 2 };
    let params_per_layer = e * hd * (q_per_tp + 2 * kv_per_tp)
        + e * hd * q_per_tp
        + mlp_factor * e * u64::from(i.mlp_hidden_dim) / tp;
    let layers_per_stage = u64::from(i.num_layers) / pp;
    let param_bytes_per_device = 2 * params_per_layer * layers_per_stage;
    let kv_bytes_per_request =
        2 * 2 * hd * kv_per_tp * u64::from(i.max_request_tokens) * u64::from(i.num_layers);

    let available_bytes = i.total_memory_gb * 1024f64.powi(3) * (1.0 - i.memory_margin_fraction);
    let for_kv = available_bytes - param_bytes_per_device as f64;
    let requests = python_floor_div(for_kv, kv_bytes_per_request as f64);
    if requests.is_nan() || requests < 1.0 {
        return Err(Error::OutOfRange(format!(
            "memory planner: not enough memory for a single request ({:.0} bytes of weights, \
             {kv_bytes_per_request} bytes of KV per request, {available_bytes:.0} bytes available)",
            param_bytes_per_device as f64
        )));
    }
    let max_batch_size = requests as u64;
    let max_request_slots = max_batch_size * pp;
    let max_blocks_per_sequence = u64::from(i.max_request_tokens / i.block_size);
    Ok(MemoryPlan {
        available_bytes,
        param_bytes_per_device,
        kv_bytes_per_request,
        max_batch_size,
        max_request_slots,
        max_blocks_per_sequence,
        num_blocks: max_blocks_per_sequence * max_request_slots,
    })
}

/// Python's `a // b` for floats (CPython `float_floor_div`): exact floor of the true
/// quotient, which `(a / b).floor()` is not when the division rounds up to an integer.
fn python_floor_div(a: f64, b: f64) -> f64 {
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    let floor = div.floor();
    if div - floor > 0.5 {
        floor + 1.0
    } else {
        floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama2(layers: u32, q: u32, kv: u32, e: u32, h: u32, tp: u32) -> MemoryPlannerInput {
        MemoryPlannerInput {
            total_memory_gb: 80.0,
            memory_margin_fraction: 0.1,
            num_layers: layers,
            num_q_heads: q,
            num_kv_heads: kv,
            embedding_dim: e,
            mlp_hidden_dim: h,
            use_gated_mlp: true,
            head_dim: None,
            tensor_parallel_size: tp,
            pipeline_parallel_size: 1,
            max_request_tokens: 4096,
            block_size: 16,
        }
    }

    #[test]
    fn reproduces_vidur_notes_worked_values() {
        // VIDUR_NOTES.md §1c: A100-80GB, margin 0.1, 4096-token requests.
        let p = plan_memory(&llama2(32, 32, 32, 4096, 11008, 1)).unwrap();
        // 2 · 32 · (4096·128·(32+64) + 4096·128·32 + 3·4096·11008) by hand:
        assert_eq!(p.param_bytes_per_device, 12_952_010_752);
        assert_eq!(p.kv_bytes_per_request, 2 * 2 * 128 * 32 * 4096 * 32);
        assert_eq!((p.max_batch_size, p.num_blocks), (29, 7_424));
        assert_eq!(p.num_blocks * 16, 118_784);

        let p = plan_memory(&llama2(80, 64, 8, 8192, 28672, 2)).unwrap();
        assert_eq!(p.param_bytes_per_device, 68_451_041_280);
        assert_eq!((p.max_batch_size, p.num_blocks), (13, 3_328));

        let p = plan_memory(&llama2(80, 64, 8, 8192, 28672, 4)).unwrap();
        assert_eq!((p.max_batch_size, p.num_blocks), (128, 32_768));

        let p = plan_memory(&llama2(32, 32, 8, 4096, 14336, 1)).unwrap();
        assert_eq!((p.max_batch_size, p.num_blocks), (118, 30_208));
    }

    #[test]
    fn pipeline_parallelism_multiplies_slots_but_not_kv_layers() {
        let mut input = llama2(80, 64, 8, 8192, 28672, 2);
        input.pipeline_parallel_size = 2;
        let p = plan_memory(&input).unwrap();
        assert_eq!(p.param_bytes_per_device, 68_451_041_280 / 2);
        assert_eq!(p.kv_bytes_per_request, 2 * 2 * 128 * 4 * 4096 * 80);
        assert_eq!(p.max_request_slots, p.max_batch_size * 2);
    }

    #[test]
    fn rejects_what_vidur_asserts() {
        let mut input = llama2(32, 32, 32, 4096, 11008, 3);
        assert!(matches!(plan_memory(&input), Err(Error::InvalidInput(_))));
        input = llama2(80, 64, 8, 8192, 28672, 1);
        input.total_memory_gb = 40.0;
        assert!(matches!(plan_memory(&input), Err(Error::OutOfRange(_))));
    }

    #[test]
    fn floor_div_matches_python() {
        assert_eq!(python_floor_div(7.0, 2.0), 3.0);
        assert_eq!(python_floor_div(-7.0, 2.0), -4.0);
        assert_eq!(python_floor_div(6.0, 2.0), 3.0);
        // 1 // 0.1 is 9.0 in Python although 1 / 0.1 rounds to exactly 10.0.
        assert_eq!(python_floor_div(1.0, 0.1), 9.0);
    }
}
