//! Tensor-level entry points to the kernels: the CPU f32 cases go to a hand-written kernel
//! over the tensor's slice, everything else to candle.

use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Storage, Tensor, WithDType};

use super::gemm;
use super::linear as small_m;
use super::Isa;
use crate::{bail, ensure, Error, Result};

/// Up to this many input rows, f32 projections use the streaming small-m kernel; above it,
/// the register-blocked GEMM (which packs and tiles, and wins once the weights are reused
/// enough). Chosen on the median time inside real forwards (`benches/op_context.rs`, the
/// crossover table): there the two are about even from 80 to 112 rows, the GEMM is 9–20 %
/// faster from 128 to 192 and varies less from call to call; isolated best-of-N calls
/// (`benches/engine.rs`) hide that spread and put the crossover near 128.
pub const SMALL_M_MAX_ROWS: usize = 80;

static SMALL_M_MAX_ROWS_NOW: AtomicUsize = AtomicUsize::new(SMALL_M_MAX_ROWS);

/// The row count up to which projections use the small-m kernel in this process.
pub fn small_m_max_rows() -> usize {
    SMALL_M_MAX_ROWS_NOW.load(Ordering::Relaxed)
}

/// Moves the small-m/GEMM crossover for this process, for benchmarks that time both kernels
/// inside whole forwards. The two kernels sum in different orders, so results may change in
/// the last bits; stages never call this.
pub fn set_small_m_max_rows(rows: usize) {
    SMALL_M_MAX_ROWS_NOW.store(rows, Ordering::Relaxed);
}

/// `x·wᵀ` for `x: [m, in]` and a checkpoint-layout weight `w: [out, in]`.
pub(crate) fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (m, k) = x.dims2()?;
    let (n, k_w) = w.dims2()?;
    ensure!(k == k_w, InvalidInput: "linear: input width {k} does not match weight {:?}", w.dims());
    if host_f32(&[x, w]) {
        let kernel = |xs: &[f32], ws: &[f32]| {
            if m <= small_m_max_rows() {
                small_m::matmul_xwt(Isa::best(), xs, m, ws, n, k)
            } else {
                gemm::matmul_xwt(Isa::best(), xs, m, ws, n, k)
            }
        };
        let y = with_slice::<f32, _>(x, |xs| with_slice::<f32, _>(w, |ws| kernel(xs, ws)))??;
        return Ok(Tensor::from_vec(y, (m, n), x.device())?);
    }
    Ok(x.matmul(&w.t()?)?)
}

/// Whether every tensor is f32 on the CPU: the case the hand-written kernels cover.
pub(crate) fn host_f32(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// Calls `f` with the elements of a CPU tensor (made contiguous first if needed).
pub(crate) fn with_slice<T: WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> Result<R> {
    let t = if t.is_contiguous() {
        t.clone()
    } else {
        t.contiguous()?
    };
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        bail!(InvalidInput: "expected a CPU tensor");
    };
    let data = cpu.as_slice::<T>()?;
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| Error::InvalidInput("tensor is not contiguous".into()))?;
    Ok(f(&data[start..end]))
}
