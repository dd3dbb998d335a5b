//! The paged KV cache: a pool of fixed-size blocks per layer, addressed through per-sequence
//! block tables that the scheduler's block pool hands out.
//!
//! Two storage layouts, one per attention implementation ([`AttentionPath`]): host buffers in
//! the block-major layout the CPU kernel reads, or one candle tensor per layer for K and V that
//! the tensor-op path gathers from on any device.

use candle_core::{DType, Device, Tensor};
use half::vec::HalfBitsVecExt;
use half::{bf16, f16};

use super::config::Qwen3Config;
use super::kernels::attention::LayerKv;
use crate::real_bench::huge_pages::{self, Contents};
use crate::{bail, ensure, Result};

/// Storage of one K or V pool of one layer, in the model's dtype.
#[derive(Debug)]
pub(crate) enum KvBuf {
    F32(Vec<f32>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
}

impl KvBuf {
    /// A zero-filled buffer. The zeroing is lazy: `vec![0; n]` becomes a calloc, which the
    /// OS backs with the shared zero page until a block is first written, so resident memory
    /// tracks the blocks actually used rather than the pool size.
    fn zeroed(dtype: DType, len: usize) -> Result<Self> {
        let buf = match dtype {
            DType::F32 => KvBuf::F32(vec![0f32; len]),
            // Allocated as u16 (which gets the calloc path) and reinterpreted in place.
            DType::BF16 => KvBuf::BF16(vec![0u16; len].reinterpret_into()),
            DType::F16 => KvBuf::F16(vec![0u16; len].reinterpret_into()),
            other => {
                bail!(InvalidInput: "KV cache dtype {other:?} is not supported (f32, bf16, f16)")
            }
        };
        match &buf {
            KvBuf::F32(v) => huge_pages::back(v, Contents::Untouched),
            KvBuf::BF16(v) => huge_pages::back(v, Contents::Untouched),
            KvBuf::F16(v) => huge_pages::back(v, Contents::Untouched),
        }
        Ok(buf)
    }

    /// Rewrites one element of every 4 KiB page of the first `len` elements with its own
    /// value, so that the OS maps them now (a write fault) and the contents stay as they were.
    fn touch_pages(&mut self, len: usize) {
        fn touch<T: Copy>(v: &mut [T], len: usize, elem_bytes: usize) {
            for x in v.iter_mut().take(len).step_by(4096 / elem_bytes) {
                let p: *mut T = x;
                // SAFETY: `p` comes from a live `&mut T`. Volatile, so that rewriting a value
                // with itself is not optimised away.
                unsafe { p.write_volatile(p.read_volatile()) };
            }
        }
        match self {
            KvBuf::F32(v) => touch(v, len, 4),
            KvBuf::BF16(v) => touch(v, len, 2),
            KvBuf::F16(v) => touch(v, len, 2),
        }
    }
}

/// One layer's K and V pools, each `[num_blocks, num_kv_heads, block_size, head_dim]`.
#[derive(Debug)]
pub(crate) struct LayerCache {
    pub(crate) k: KvBuf,
    pub(crate) v: KvBuf,
}

impl LayerCache {
    /// Typed views for the attention kernel, or `None` if `T` is not the storage type.
    pub(crate) fn view<T: CacheElement>(&self) -> Option<LayerKv<'_, T>> {
        Some(LayerKv {
            k: T::slice(&self.k)?,
            v: T::slice(&self.v)?,
        })
    }
}

/// Maps an element type to its variant of [`KvBuf`].
pub(crate) trait CacheElement: super::kernels::attention::AttnElement {
    fn slice(buf: &KvBuf) -> Option<&[Self]>;
    fn slice_mut(buf: &mut KvBuf) -> Option<&mut [Self]>;
}

macro_rules! cache_element {
    ($t:ty, $variant:ident) => {
        impl CacheElement for $t {
            fn slice(buf: &KvBuf) -> Option<&[Self]> {
                match buf {
                    KvBuf::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(buf: &mut KvBuf) -> Option<&mut [Self]> {
                match buf {
                    KvBuf::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
cache_element!(f32, F32);
cache_element!(bf16, BF16);
cache_element!(f16, F16);

/// Which attention implementation a forward runs, fixed by how its [`PagedKvCache`] stores K/V.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionPath {
    /// The hand-written paged kernel ([`super::kernels::attention`]) over host buffers: CPU
    /// only, and much faster there than the tensor path.
    CpuKernel,
    /// Gathers, matmuls and a softmax written with candle tensor ops over one K and one V
    /// tensor per layer: runs on any candle device.
    TensorOps,
    /// The tensor-op layout and path, except that decodes run our paged CUDA kernel, which
    /// reads each context through its block table ([`super::cuda_attention`]): the CUDA
    /// default. Needs a CUDA device (and a `--features cuda` build).
    CudaKernels,
}

impl AttentionPath {
    /// The path a device runs by default: the CPU kernel on the CPU, the CUDA kernels on a
    /// CUDA device, tensor ops elsewhere.
    pub fn for_device(device: &Device) -> Self {
        if device.is_cpu() {
            AttentionPath::CpuKernel
        } else if device.is_cuda() {
            AttentionPath::CudaKernels
        } else {
            AttentionPath::TensorOps
        }
    }
}

/// One layer's K and V for [`AttentionPath::TensorOps`] and [`AttentionPath::CudaKernels`], each
/// `[num_kv_heads, num_blocks · block_size, head_dim]` on the model's device. Head-major, so
/// that gathering a sequence's slots along dim 1 yields `[kv_heads, ctx, head_dim]`, the
/// batched-matmul operand, without a transpose copy per layer.
#[derive(Debug)]
pub(crate) struct LayerTensors {
    pub(crate) k: Tensor,
    pub(crate) v: Tensor,
}

/// The storage of all layers, in the layout of one attention path.
#[derive(Debug)]
pub(crate) enum KvStore {
    Host(Vec<LayerCache>),
    Tensors(Vec<LayerTensors>),
}

/// The KV cache of all layers, organised as `num_blocks` blocks of `block_size` token slots.
///
/// Which blocks a sequence uses is not the cache's business: the scheduler's block pool owns
/// allocation and passes each sequence's block table with every forward. The cache only
/// stores, so it never needs freeing: a reused block is simply overwritten.
#[derive(Debug)]
pub struct PagedKvCache {
    num_blocks: usize,
    block_size: usize,
    num_layers: usize,
    num_kv_heads: usize,
    head_dim: usize,
    dtype: DType,
    device: Device,
    path: AttentionPath,
    pub(crate) store: KvStore,
}

impl PagedKvCache {
    /// Allocates (zeroed) `num_blocks × block_size` token slots for every layer of `cfg` in
    /// `dtype` on `device`, in the layout of the device's default [`AttentionPath`].
    pub fn new(
        cfg: &Qwen3Config,
        num_blocks: usize,
        block_size: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let path = AttentionPath::for_device(device);
        Self::with_path(cfg, num_blocks, block_size, dtype, device, path)
    }

    /// Like [`Self::new`] with an explicit attention path; [`AttentionPath::CpuKernel`] needs
    /// the CPU. Tests use this to run the tensor-op path on the CPU.
    pub fn with_path(
        cfg: &Qwen3Config,
        num_blocks: usize,
        block_size: usize,
        dtype: DType,
        device: &Device,
        path: AttentionPath,
    ) -> Result<Self> {
        ensure!(num_blocks > 0 && block_size > 0, InvalidInput: "KV cache needs at least one block of at least one slot (got {num_blocks} × {block_size})");
        let num_slots = num_blocks.checked_mul(block_size).ok_or_else(|| {
            crate::Error::OutOfRange(format!(
                "KV cache of {num_blocks} blocks × {block_size} slots overflows"
            ))
        })?;
        let len = num_slots.checked_mul(cfg.kv_width()).ok_or_else(|| {
            crate::Error::OutOfRange(format!(
                "KV cache of {num_blocks} blocks × {block_size} slots overflows"
            ))
        })?;
        let store = match path {
            AttentionPath::CpuKernel => {
                ensure!(device.is_cpu(), InvalidInput: "the paged attention kernel runs on the CPU only; {device:?} needs AttentionPath::TensorOps");
                KvStore::Host(
                    (0..cfg.num_hidden_layers)
                        .map(|_| {
                            Ok(LayerCache {
                                k: KvBuf::zeroed(dtype, len)?,
                                v: KvBuf::zeroed(dtype, len)?,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?,
                )
            }
            AttentionPath::TensorOps | AttentionPath::CudaKernels => {
                ensure!(
                    path == AttentionPath::TensorOps || device.is_cuda(),
                    InvalidInput: "AttentionPath::CudaKernels runs on a CUDA device only, not {device:?}"
                );
                ensure!(
                    matches!(dtype, DType::F32 | DType::BF16 | DType::F16),
                    InvalidInput: "KV cache dtype {dtype:?} is not supported (f32, bf16, f16)"
                );
                // Slot ids travel as u32, and candle's scatter skips u32::MAX.
                ensure!(
                    num_slots < u32::MAX as usize,
                    OutOfRange: "KV cache of {num_slots} slots exceeds u32 slot ids"
                );
                let shape = (cfg.num_key_value_heads, num_slots, cfg.head_dim);
                KvStore::Tensors(
                    (0..cfg.num_hidden_layers)
                        .map(|_| {
                            Ok(LayerTensors {
                                k: Tensor::zeros(shape, dtype, device)?,
                                v: Tensor::zeros(shape, dtype, device)?,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?,
                )
            }
        };
        Ok(Self {
            num_blocks,
            block_size,
            num_layers: cfg.num_hidden_layers,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
            dtype,
            device: device.clone(),
            path,
            store,
        })
    }

    /// Maps blocks `0..num_blocks` of the host pool into memory now rather than page by page
    /// when they are first written. A serving engine does this before it serves, as vLLM
    /// allocates its KV pool up front: otherwise every new block's first
    /// `attn_kv_cache_save` pays page faults (4.6× its profiled time over a qwen3_0_6b run),
    /// which the profiler, whose cache is filled before timing, never sees. Device tensors
    /// are allocated eagerly anyway. Block `b` spans one contiguous range of each layer's
    /// buffers, so blocks `0..n` are a prefix of every buffer.
    pub fn map_blocks(&mut self, num_blocks: usize) {
        let len =
            num_blocks.min(self.num_blocks) * self.block_size * self.num_kv_heads * self.head_dim;
        if let KvStore::Host(layers) = &mut self.store {
            for layer in layers {
                layer.k.touch_pages(len);
                layer.v.touch_pages(len);
            }
        }
    }

    /// The attention implementation this cache's layout serves.
    pub fn attention_path(&self) -> AttentionPath {
        self.path
    }

    /// The device the cache lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of physical blocks per layer.
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// Token slots per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Storage dtype (the model's dtype).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.num_layers
    }

    /// Bytes the pool spans (on the CPU a virtual size: resident memory grows as blocks are
    /// written).
    pub fn capacity_bytes(&self) -> u64 {
        (2 * self.num_layers
            * self.num_blocks
            * self.block_size
            * self.num_kv_heads
            * self.head_dim
            * self.dtype.size_in_bytes()) as u64
    }

    /// Whether this cache fits a model of `cfg` (layers, heads, head size).
    pub(crate) fn matches(&self, cfg: &Qwen3Config) -> bool {
        self.num_layers == cfg.num_hidden_layers
            && self.num_kv_heads == cfg.num_key_value_heads
            && self.head_dim == cfg.head_dim
    }

    /// Host layout only: writes `rows` (`[n, num_kv_heads · head_dim]`, one per token) of K
    /// and V for layer `layer`. `slots` gives, per row, `(physical_block, slot_in_block)`;
    /// validated by the caller.
    pub(crate) fn write<T: CacheElement>(
        &mut self,
        layer: usize,
        k_rows: &[T],
        v_rows: &[T],
        slots: &[(usize, usize)],
    ) -> Result<()> {
        let width = self.num_kv_heads * self.head_dim;
        let (hd, bs, nkv) = (self.head_dim, self.block_size, self.num_kv_heads);
        ensure!(
            k_rows.len() == slots.len() * width && v_rows.len() == k_rows.len(),
            InvalidInput: "KV rows ({} / {}) do not match {} slots of width {width}", k_rows.len(), v_rows.len(), slots.len()
        );
        let KvStore::Host(layers) = &mut self.store else {
            bail!(InvalidInput: "host KV rows written into a tensor-layout cache");
        };
        let cache = layers
            .get_mut(layer)
            .ok_or_else(|| crate::Error::InvalidInput(format!("layer {layer} out of range")))?;
        for (buf, rows) in [(&mut cache.k, k_rows), (&mut cache.v, v_rows)] {
            let dst = T::slice_mut(buf).ok_or_else(|| {
                crate::Error::Mismatch(format!(
                    "KV cache is {:?}, rows are another dtype",
                    self.dtype
                ))
            })?;
            for (&(block, slot), row) in slots.iter().zip(rows.chunks_exact(width)) {
                for (h, head) in row.chunks_exact(hd).enumerate() {
                    let off = ((block * nkv + h) * bs + slot) * hd;
                    dst[off..off + hd].copy_from_slice(head);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_and_layout() {
        let cfg = Qwen3Config::tiny(); // 2 layers, 2 kv heads × 16
        let mut cache = PagedKvCache::new(&cfg, 5, 4, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(cache.capacity_bytes(), 2 * 2 * 5 * 4 * 32 * 4);
        let k: Vec<f32> = (0..32).map(|i| i as f32).collect();
        let v: Vec<f32> = (0..32).map(|i| -(i as f32)).collect();
        cache.write(1, &k, &v, &[(3, 2)]).unwrap();
        let KvStore::Host(layers) = &cache.store else {
            panic!()
        };
        let KvBuf::F32(kb) = &layers[1].k else {
            panic!()
        };
        // head 0 of block 3, slot 2: ((3·2 + 0)·4 + 2)·16; head 1: ((3·2 + 1)·4 + 2)·16.
        assert_eq!(&kb[(6 * 4 + 2) * 16..][..16], &k[..16]);
        assert_eq!(&kb[(7 * 4 + 2) * 16..][..16], &k[16..]);
        let KvBuf::F32(k0) = &layers[0].k else {
            panic!()
        };
        assert!(k0.iter().all(|x| *x == 0.0), "other layers untouched");
        assert!(cache
            .write(0, &[bf16::ZERO; 32], &[bf16::ZERO; 32], &[(0, 0)])
            .is_err());
    }

    #[test]
    fn tensor_layout_is_head_major_per_layer() {
        let cfg = Qwen3Config::tiny(); // 2 layers, 2 kv heads × 16
        let cache = PagedKvCache::with_path(
            &cfg,
            5,
            4,
            DType::BF16,
            &Device::Cpu,
            AttentionPath::TensorOps,
        )
        .unwrap();
        assert_eq!(cache.attention_path(), AttentionPath::TensorOps);
        assert_eq!(cache.capacity_bytes(), 2 * 2 * 5 * 4 * 32 * 2);
        let KvStore::Tensors(layers) = &cache.store else {
            panic!()
        };
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[1].v.dims(), &[2, 20, 16]);
        assert_eq!(layers[0].k.dtype(), DType::BF16);
        let sum: f32 = layers[0]
            .k
            .to_dtype(DType::F32)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(sum, 0.0);
        // Host rows cannot go into the tensor layout.
        let mut cache = cache;
        assert!(cache.write(0, &[0f32; 32], &[0f32; 32], &[(0, 0)]).is_err());
        assert_eq!(
            AttentionPath::for_device(&Device::Cpu),
            AttentionPath::CpuKernel
        );
    }

    #[test]
    fn half_caches_are_zero_and_unsupported_dtypes_rejected() {
        let cfg = Qwen3Config::tiny();
        let cache = PagedKvCache::new(&cfg, 2, 2, DType::BF16, &Device::Cpu).unwrap();
        let KvStore::Host(layers) = &cache.store else {
            panic!()
        };
        let KvBuf::BF16(b) = &layers[0].v else {
            panic!()
        };
        assert!(b.iter().all(|x| x.to_f32() == 0.0));
        assert!(PagedKvCache::new(&cfg, 2, 2, DType::U8, &Device::Cpu).is_err());
        assert!(PagedKvCache::new(&cfg, 0, 2, DType::F32, &Device::Cpu).is_err());
    }
}
