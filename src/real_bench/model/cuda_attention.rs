//! The GPU's paged decode attention ([`AttentionPath::CudaKernels`](super::AttentionPath)):
//! our kernel `cuda_attention.cu` as a candle custom op. Each decode sequence attends to its
//! own context length straight from the paged cache through its block table, so a batch
//! pays neither the gather of every context nor padding to the longest one, which the
//! tensor-op path ([`super::tensor_attention`]) does. Saving K/V and prefill stay tensor ops.
//!
//! build.rs compiles the kernel to PTX for compute capability 8.0 (A100), which the driver
//! compiles for the GPU it loads on (H100/H200 too) the first time the op runs.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Layout, Shape, Storage, Tensor};
use half::{bf16, f16};

use super::tensor_attention::TensorAttnDims;
use crate::{ensure, Result};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/cuda_attention.ptx"));
const MODULE: &str = "simreal_cuda_attention";
/// Context tokens per thread block; `PARTITION` in the kernel.
const PARTITION: usize = 256;
/// Threads per block of the split kernel; `THREADS` in the kernel.
const THREADS: u32 = 256;
/// Head sizes the kernel is instantiated for; other models take the tensor-op decode.
const HEAD_DIMS: [usize; 3] = [64, 128, 256];

/// Whether the kernel covers a model of these sizes.
pub(crate) fn supports(dims: &TensorAttnDims) -> bool {
    HEAD_DIMS.contains(&dims.head_dim) && dims.num_heads.is_multiple_of(dims.num_kv_heads)
}

/// One iteration's decode sequences for the kernel, built once and shared by all layers.
#[derive(Debug)]
pub(crate) struct PagedDecodeMeta {
    /// First row of the decode sequences in the flattened batch (they are contiguous).
    pub(crate) row_offset: usize,
    num_seqs: usize,
    max_context: usize,
    max_blocks: usize,
    /// `[num_seqs, max_blocks]` u32 block ids, each table padded with zeros (never read).
    block_tables: Tensor,
    /// `[num_seqs]` u32 context lengths, this iteration's token included.
    context_lens: Tensor,
}

impl PagedDecodeMeta {
    /// `tables[i]` holds the blocks of sequence `i`, whose context is `context_lens[i]`.
    pub(crate) fn new(
        row_offset: usize,
        tables: &[&[usize]],
        context_lens: Vec<u32>,
        device: &candle_core::Device,
    ) -> Result<Self> {
        let num_seqs = tables.len();
        ensure!(num_seqs == context_lens.len() && num_seqs > 0, InvalidInput: "paged decode needs one context length per sequence (got {} tables, {} lengths)", num_seqs, context_lens.len());
        let max_blocks = tables.iter().map(|t| t.len()).max().unwrap_or(0).max(1);
        let mut flat = vec![0u32; num_seqs * max_blocks];
        for (row, table) in flat.chunks_mut(max_blocks).zip(tables) {
            for (dst, &block) in row.iter_mut().zip(table.iter()) {
                // In range: the batch validated block ids against the cache, whose slots fit u32.
                *dst = block as u32;
            }
        }
        let max_context = context_lens.iter().copied().max().unwrap_or(0) as usize;
        Ok(Self {
            row_offset,
            num_seqs,
            max_context,
            max_blocks,
            block_tables: Tensor::from_vec(flat, (num_seqs, max_blocks), device)?,
            context_lens: Tensor::from_vec(context_lens, num_seqs, device)?,
        })
    }
}

/// Decode attention of `meta`'s rows of `q` (`[tokens, heads · head_dim]`) against one
/// layer's cache → `[num_seqs, heads · head_dim]` in the dtype of `q`.
pub(crate) fn decode(
    dims: TensorAttnDims,
    meta: &PagedDecodeMeta,
    q: &Tensor,
    cache_k: &Tensor,
    cache_v: &Tensor,
) -> Result<Tensor> {
    let q = q.narrow(0, meta.row_offset, meta.num_seqs)?.contiguous()?;
    let op = PagedDecode {
        dims,
        meta,
        cache_k,
        cache_v,
    };
    Ok(q.apply_op1_no_bwd(&op)?)
}

struct PagedDecode<'a> {
    dims: TensorAttnDims,
    meta: &'a PagedDecodeMeta,
    cache_k: &'a Tensor,
    cache_v: &'a Tensor,
}

/// The contiguous elements of a CUDA tensor, 16-byte aligned as the kernel's vector loads need.
fn view<'s, T: CudaDType + DeviceRepr>(
    storage: &'s CudaStorage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<CudaView<'s, T>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("paged decode: {what} must be contiguous");
    };
    if !(start * std::mem::size_of::<T>()).is_multiple_of(16) {
        candle_core::bail!("paged decode: {what} starts at element {start}, not 16-byte aligned");
    }
    Ok(storage.as_cuda_slice::<T>()?.slice(start..end))
}

fn cuda_storage<'g>(storage: &'g Storage, what: &str) -> candle_core::Result<&'g CudaStorage> {
    match storage {
        Storage::Cuda(s) => Ok(s),
        _ => candle_core::bail!("paged decode: {what} is not on a CUDA device"),
    }
}

impl PagedDecode<'_> {
    fn launch<T: CudaDType + DeviceRepr>(
        &self,
        q: &CudaStorage,
        q_layout: &Layout,
        suffix: &str,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (d, m) = (self.dims, self.meta);
        let dev = q.device().clone();
        let (k_guard, k_layout) = self.cache_k.storage_and_layout();
        let (v_guard, v_layout) = self.cache_v.storage_and_layout();
        let (t_guard, t_layout) = m.block_tables.storage_and_layout();
        let (l_guard, l_layout) = m.context_lens.storage_and_layout();
        let q_view = view::<T>(q, q_layout, "q")?;
        let k = view::<T>(
            cuda_storage(&k_guard, "the K cache")?,
            k_layout,
            "the K cache",
        )?;
        let v = view::<T>(
            cuda_storage(&v_guard, "the V cache")?,
            v_layout,
            "the V cache",
        )?;
        let tables = view::<u32>(
            cuda_storage(&t_guard, "block tables")?,
            t_layout,
            "block tables",
        )?;
        let lens = view::<u32>(
            cuda_storage(&l_guard, "context lengths")?,
            l_layout,
            "context lengths",
        )?;
        if q_layout.dims() != [m.num_seqs, d.num_heads * d.head_dim].as_slice() {
            candle_core::bail!(
                "paged decode: q is {:?}, expected [{}, {}]",
                q_layout.dims(),
                m.num_seqs,
                d.num_heads * d.head_dim
            );
        }
        let num_slots = k_layout.dims()[1];
        let splits = m.max_context.div_ceil(PARTITION).max(1);
        let out_len = m.num_seqs * d.num_heads * d.head_dim;
        // SAFETY: every element is written by the kernel below (one per query head and dim).
        let out = unsafe { dev.alloc::<T>(out_len)? };
        // Per split: the unnormalized output, its running max and its sum of exponentials.
        let partial_len = if splits > 1 {
            m.num_seqs * d.num_heads * splits * (d.head_dim + 2)
        } else {
            1
        };
        // SAFETY: the split kernel writes every entry the reduction reads.
        let partial = unsafe { dev.alloc::<f32>(partial_len)? };
        let (num_heads, num_kv_heads) = (d.num_heads as i32, d.num_kv_heads as i32);
        let (block_size, max_blocks) = (d.block_size as i32, m.max_blocks as i32);
        let (num_slots, max_splits, scale) = (num_slots as i64, splits as i32, d.scale as f32);
        let split = dev.get_or_load_custom_func(
            &format!("paged_decode_{suffix}_hd{}", d.head_dim),
            MODULE,
            PTX,
        )?;
        let mut args = split.builder();
        args.arg(&out);
        args.arg(&partial);
        args.arg(&q_view);
        args.arg(&k);
        args.arg(&v);
        args.arg(&tables);
        args.arg(&lens);
        args.arg(&num_heads);
        args.arg(&num_kv_heads);
        args.arg(&num_slots);
        args.arg(&block_size);
        args.arg(&max_blocks);
        args.arg(&max_splits);
        args.arg(&scale);
        let grid = (d.num_heads as u32, m.num_seqs as u32, splits as u32);
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: argument order and types are the kernel's; sizes were checked above.
        unsafe { args.launch(cfg) }.w()?;
        if splits > 1 {
            let reduce = dev.get_or_load_custom_func(
                &format!("paged_decode_reduce_{suffix}_hd{}", d.head_dim),
                MODULE,
                PTX,
            )?;
            let mut args = reduce.builder();
            args.arg(&out);
            args.arg(&partial);
            args.arg(&lens);
            args.arg(&num_heads);
            args.arg(&max_splits);
            let cfg = LaunchConfig {
                grid_dim: (d.num_heads as u32, m.num_seqs as u32, 1),
                block_dim: (d.head_dim as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: as above.
            unsafe { args.launch(cfg) }.w()?;
        }
        let shape = Shape::from((m.num_seqs, d.num_heads * d.head_dim));
        Ok((T::wrap_cuda_slice(out, dev), shape))
    }
}

impl CustomOp1 for PagedDecode<'_> {
    fn name(&self) -> &'static str {
        "simreal-paged-decode"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("paged decode attention is a CUDA kernel; on the CPU use AttentionPath::CpuKernel or TensorOps")
    }

    fn cuda_fwd(
        &self,
        q: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        match q.dtype() {
            DType::F32 => self.launch::<f32>(q, layout, "f32"),
            DType::BF16 => self.launch::<bf16>(q, layout, "bf16"),
            DType::F16 => self.launch::<f16>(q, layout, "f16"),
            other => {
                candle_core::bail!("paged decode: {other:?} is not supported (f32, bf16, f16)")
            }
        }
    }
}
