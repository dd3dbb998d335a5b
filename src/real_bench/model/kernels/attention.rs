//! Causal attention of query rows against a paged KV cache.
//!
//! Cache layout per layer and per K/V: `[num_blocks, num_kv_heads, block_size, head_dim]`, so
//! the keys of one head in one block are contiguous. A sequence's logical token `j` lives in
//! physical block `block_table[j / block_size]`, slot `j % block_size`.
//!
//! Work is split into tasks of (sequence, kv head, tile of query rows), which rayon's threads
//! take longest first as they free up (prefill chunks of 64 rows or more run as two GEMMs per
//! kv head instead); each task handles the whole GQA group of query heads that share the kv
//! head. Softmax is max-subtracted and accumulated in f32 whatever the storage type.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use super::elementwise::exp_minus_max_in_place;
use super::{fmadd, gemm, Element, Isa, IsaLevel};

/// Query rows per task in a prefill chunk: keeps tasks numerous enough to balance a single
/// long prefill over the cores, while the K/V of one head (≈ context × head_dim × 8 bytes)
/// stays in L2 across the rows of a task.
const QUERY_TILE: usize = 32;
/// Query rows from which a sequence goes through [`sequence_by_gemm`]: a prefill chunk (a
/// decode step, or a chunk of a few tokens, stays with the row-by-row kernel).
const GEMM_MIN_ROWS: usize = 64;
/// Query rows per tile of [`sequence_by_gemm`]: the causal mask wastes at most half a tile of
/// keys per row, and `S` for a tile (`64 · group × keys` f32) stays in L2.
const GEMM_TILE_ROWS: usize = 64;
const LANES: usize = 16;

/// Shape of the attention problem shared by all sequences of a batch.
#[derive(Debug, Clone, Copy)]
pub struct AttnDims {
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads; query head `h` reads kv head `h / (num_heads / num_kv_heads)`.
    pub num_kv_heads: usize,
    /// Dimensions per head.
    pub head_dim: usize,
    /// Token slots per cache block.
    pub block_size: usize,
    /// Softmax temperature, `1/sqrt(head_dim)`.
    pub scale: f32,
}

/// One sequence's slice of the batch.
#[derive(Debug, Clone, Copy)]
pub struct AttnSeq<'a> {
    /// First row of this sequence in the query/output tensors.
    pub row_offset: usize,
    /// Query rows (tokens this iteration).
    pub num_rows: usize,
    /// Tokens already in the cache before this iteration: row `t` has position
    /// `num_cached + t` and attends to positions `0..=num_cached + t`.
    pub num_cached: usize,
    /// Physical block of each logical block of the sequence.
    pub block_table: &'a [usize],
}

/// The cache of one layer, as seen by the kernel.
#[derive(Debug, Clone, Copy)]
pub struct LayerKv<'a, T> {
    /// Keys, `[num_blocks, num_kv_heads, block_size, head_dim]`.
    pub k: &'a [T],
    /// Values, same layout.
    pub v: &'a [T],
}

/// Computes attention for `seqs` and writes each output row into `out` (`[rows, num_heads ·
/// head_dim]`, the same row indexing as `q`). Rows not belonging to `seqs` are untouched.
/// The caller guarantees (and `ForwardBatch` validates) that block tables cover every
/// attended position with valid block ids; the cache must already hold this iteration's K/V.
pub fn paged_attention<T: AttnElement>(
    isa: Isa,
    dims: AttnDims,
    q: &[T],
    kv: LayerKv<'_, T>,
    seqs: &[AttnSeq<'_>],
    out: &mut [T],
) {
    paged_attention_with(isa, dims, q, kv, seqs, out, GEMM_MIN_ROWS)
}

/// [`paged_attention`], with sequences of at least `gemm_min_rows` query rows going through
/// [`sequence_by_gemm`] (tests lower the threshold to run both paths on small problems).
fn paged_attention_with<T: AttnElement>(
    isa: Isa,
    dims: AttnDims,
    q: &[T],
    kv: LayerKv<'_, T>,
    seqs: &[AttnSeq<'_>],
    out: &mut [T],
    gemm_min_rows: usize,
) {
    let kv_heads = dims.num_kv_heads;
    let out = SharedOut {
        ptr: out.as_mut_ptr(),
        len: out.len(),
    };
    let (long, short): (Vec<&AttnSeq>, Vec<&AttnSeq>) =
        seqs.iter().partition(|s| s.num_rows >= gemm_min_rows);
    for seq in long {
        sequence_by_gemm(isa, dims, q, kv, seq, &out);
    }
    let mut tasks: Vec<(usize, usize, usize, usize)> = short
        .iter()
        .enumerate()
        .flat_map(|(s, seq)| {
            (0..kv_heads).flat_map(move |h| {
                (0..seq.num_rows)
                    .step_by(QUERY_TILE)
                    .map(move |r0| (s, h, r0, (r0 + QUERY_TILE).min(seq.num_rows)))
            })
        })
        .collect();
    // Longest first (keys read × rows), each thread taking the next task as it frees up: then
    // the threads finish within about one short task of each other. With rayon's splitting
    // and stealing over the batch order, a ragged decode batch ended on one thread's long
    // tasks: a batch of two at 128 and 896 cached tokens took 9–11 % longer than two at 512
    // (benches/op_context.rs), sorting alone still 6–12 %. Each task's result is independent
    // of the order and of the thread; a stable sort keeps batch order among equal tasks.
    let work =
        |&(s, _, r0, r1): &(usize, usize, usize, usize)| (short[s].num_cached + r1) * (r1 - r0);
    tasks.sort_by_key(|t| std::cmp::Reverse(work(t)));
    let path = BlockPath::of(isa, dims.head_dim);
    let next = AtomicUsize::new(0);
    let workers = rayon::current_num_threads().min(tasks.len());
    (0..workers).into_par_iter().with_max_len(1).for_each(|_| {
        while let Some(&(s, h, r0, r1)) = tasks.get(next.fetch_add(1, Ordering::Relaxed)) {
            // `task` starts no parallel work, so a thread never holds this borrow twice.
            SCRATCH.with_borrow_mut(|scratch| {
                task(dims, q, kv, short[s], h, r0, r1, path, scratch, &out)
            })
        }
    });
}

/// One sequence's attention as two GEMMs per kv head and tile of query rows: `S = Q·Kᵀ` over
/// the keys the tile's last row attends, the causal softmax of each row in place, then
/// `O = P·V`. A prefill chunk's rows share every key, and the row-by-row kernel ([`task`])
/// reads each key once per row from L2 with one FMA per load; the GEMM's register tiles
/// reuse each loaded key across 14 rows. Keys and values are gathered once per kv head out of
/// the paged cache into contiguous f32 (`K: [keys, hd]`, `Vᵀ: [hd, keys]`).
fn sequence_by_gemm<T: AttnElement>(
    isa: Isa,
    dims: AttnDims,
    q: &[T],
    kv: LayerKv<'_, T>,
    seq: &AttnSeq<'_>,
    out: &SharedOut<T>,
) {
    let AttnDims {
        num_heads,
        num_kv_heads,
        head_dim: hd,
        block_size: bs,
        scale,
    } = dims;
    let group = num_heads / num_kv_heads;
    let width = num_heads * hd;
    let total = seq.num_cached + seq.num_rows;
    let head_stride = bs * hd;
    let block_stride = num_kv_heads * head_stride;
    (0..num_kv_heads).into_par_iter().for_each(|h| {
        let mut k = vec![0f32; total * hd];
        let mut vt = vec![0f32; hd * total];
        for (j, k_row) in k.chunks_exact_mut(hd).enumerate() {
            let base = seq.block_table[j / bs] * block_stride + h * head_stride + (j % bs) * hd;
            for (d, (kd, vd)) in k_row.iter_mut().zip(&kv.v[base..base + hd]).enumerate() {
                *kd = kv.k[base + d].to_f32();
                vt[d * total + j] = vd.to_f32();
            }
        }
        let mut q_tile = Vec::new();
        let mut vt_tile = Vec::new();
        for r0 in (0..seq.num_rows).step_by(GEMM_TILE_ROWS) {
            let r1 = seq.num_rows.min(r0 + GEMM_TILE_ROWS);
            let keys = seq.num_cached + r1;
            // Rows of the tile, each with its group of query heads: `[(r1 - r0)·group, hd]`.
            q_tile.clear();
            for t in r0..r1 {
                let q_off = (seq.row_offset + t) * width + h * group * hd;
                q_tile.extend(
                    q[q_off..q_off + group * hd]
                        .iter()
                        .map(|v| v.to_f32() * scale),
                );
            }
            let m = (r1 - r0) * group;
            let mut probs = gemm::matmul_xwt(isa, &q_tile, m, &k[..keys * hd], keys, hd);
            for (i, row) in probs.chunks_exact_mut(keys).enumerate() {
                let ctx = seq.num_cached + r0 + i / group + 1;
                let inv = 1.0 / exp_minus_max_in_place(&mut row[..ctx]);
                row[..ctx].iter_mut().for_each(|p| *p *= inv);
                row[ctx..].fill(0.0);
            }
            vt_tile.clear();
            for d in 0..hd {
                vt_tile.extend_from_slice(&vt[d * total..d * total + keys]);
            }
            let o = gemm::matmul_xwt(isa, &probs, m, &vt_tile, hd, keys);
            for (t, o_rows) in (r0..r1).zip(o.chunks_exact(group * hd)) {
                let q_off = (seq.row_offset + t) * width + h * group * hd;
                // SAFETY: only this kv head's task writes its query heads' columns, and no
                // other sequence has these rows.
                let dst = unsafe { out.range(q_off, group * hd) };
                for (d, v) in dst.iter_mut().zip(o_rows) {
                    *d = T::from_f32(*v);
                }
            }
        }
    });
}

/// The output rows, written in place by tasks that own disjoint pieces of them (one
/// sequence's rows, one kv head's group of query heads): no per-task result buffer, and no
/// serial copy after the parallel part.
struct SharedOut<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: tasks only write disjoint ranges through `range` (see `paged_attention`'s split).
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// Elements `start..start + len`.
    ///
    /// # Safety
    /// No other thread may access them while the slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start + len <= self.len, "attention output row out of range");
        // SAFETY: in bounds (asserted), exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

thread_local! {
    /// Each thread's [`Scratch`], kept across calls: grown to the longest context once, then
    /// reused by every task of every layer and step.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Buffers of [`task`], per thread, so that a decode step (one task per sequence and kv head
/// in each of 28 layers) does not allocate thousands of times.
#[derive(Default)]
struct Scratch {
    /// `[group, max context]` scores, then softmax numerators.
    scores: Vec<f32>,
    /// `[group, head_dim]` scaled queries.
    q: Vec<f32>,
    /// `[group, head_dim]` weighted sums of values.
    acc: Vec<f32>,
    /// `[group]` reciprocal softmax denominators.
    inv_sums: Vec<f32>,
}

/// Rows `r0..r1` of one sequence for the query heads of `kv_head`, written into their places
/// in `out`, with `path`'s block loops.
///
/// The group's query heads share each block of keys and values while it is in L1: per row,
/// one pass over the sequence's K and one over its V, not one per query head (Qwen3 0.6B has
/// two query heads per kv head).
#[allow(clippy::too_many_arguments)]
fn task<T: AttnElement>(
    dims: AttnDims,
    q: &[T],
    kv: LayerKv<'_, T>,
    seq: &AttnSeq<'_>,
    kv_head: usize,
    r0: usize,
    r1: usize,
    path: BlockPath,
    scratch: &mut Scratch,
    out: &SharedOut<T>,
) {
    let AttnDims {
        num_heads,
        num_kv_heads,
        head_dim: hd,
        block_size: bs,
        scale,
    } = dims;
    let group = num_heads / num_kv_heads;
    let width = num_heads * hd;
    let stride = seq.num_cached + r1;
    let Scratch {
        scores,
        q: q_f32,
        acc,
        inv_sums,
    } = scratch;
    scores.resize(group * stride, 0.0);
    q_f32.resize(group * hd, 0.0);
    acc.resize(group * hd, 0.0);
    inv_sums.resize(group, 0.0);
    let head_stride = bs * hd;
    let block_stride = num_kv_heads * head_stride;
    // (start of this head's slots in block `b`, number of slots used) for a context `ctx`.
    let block = |b: usize, ctx: usize| {
        let base = seq.block_table[b] * block_stride + kv_head * head_stride;
        (base, bs.min(ctx - b * bs))
    };
    for t in r0..r1 {
        let ctx = seq.num_cached + t + 1;
        let num_blocks = ctx.div_ceil(bs);
        // The group's query heads are adjacent in the row: one contiguous `[group, hd]` slice.
        let q_off = (seq.row_offset + t) * width + kv_head * group * hd;
        for (dst, src) in q_f32.iter_mut().zip(&q[q_off..q_off + group * hd]) {
            *dst = src.to_f32() * scale;
        }
        for b in 0..num_blocks {
            let (base, slots) = block(b, ctx);
            if b + 1 < num_blocks {
                let (next, n) = block(b + 1, ctx);
                prefetch_range(&kv.k[next..next + n * hd]);
            }
            let keys = &kv.k[base..base + slots * hd];
            for (qg, sg) in q_f32.chunks_exact(hd).zip(scores.chunks_exact_mut(stride)) {
                T::qk_block(qg, keys, &mut sg[b * bs..b * bs + slots], path);
            }
        }
        for (inv, sg) in inv_sums.iter_mut().zip(scores.chunks_exact_mut(stride)) {
            *inv = 1.0 / exp_minus_max_in_place(&mut sg[..ctx]);
        }
        acc.fill(0.0);
        for b in 0..num_blocks {
            let (base, slots) = block(b, ctx);
            if b + 1 < num_blocks {
                let (next, n) = block(b + 1, ctx);
                prefetch_range(&kv.v[next..next + n * hd]);
            }
            let values = &kv.v[base..base + slots * hd];
            for (ag, sg) in acc.chunks_exact_mut(hd).zip(scores.chunks_exact(stride)) {
                T::pv_block(ag, &sg[b * bs..b * bs + slots], values, path);
            }
        }
        // SAFETY: this task alone writes this row's columns of its kv head's query heads.
        let out_row = unsafe { out.range(q_off, group * hd) };
        let heads = out_row.chunks_exact_mut(hd).zip(acc.chunks_exact(hd));
        for ((o, a), inv) in heads.zip(inv_sums.iter()) {
            for (o, a) in o.iter_mut().zip(a) {
                *o = T::from_f32(a * inv);
            }
        }
    }
}

/// Asks for every cache line of `data` to be brought into L1: the next block's keys or values
/// while this block's are used. A block's slots of one head (8 KiB in f32 at head_dim 128) lie
/// wherever the pool put the block, so the hardware prefetchers, which follow a stream within
/// a 4 KiB page or a constant stride, start cold at every block. Measured with
/// benches/op_context.rs' placement table (2026-12-04, alternating runs): ~8 % off
/// `attn_decode` at batches of 2 and 8 over 512 tokens, whatever the placement.
#[inline]
fn prefetch_range<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = data.as_ptr() as *const i8;
        let bytes = std::mem::size_of_val(data);
        for off in (0..bytes).step_by(64) {
            // SAFETY: prefetching is a hint; the addresses are inside `data`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.add(off)) };
        }
    }
}

/// Which block loops [`task`] runs: the hand-vectorised ones need the ISA and whole vectors
/// per head (`head_dim` a multiple of their lanes). A value is proof of both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockPath(IsaLevel);

impl BlockPath {
    /// The widest loops `isa` and `head_dim` allow.
    pub fn of(isa: Isa, head_dim: usize) -> BlockPath {
        let level = match isa.level() {
            IsaLevel::Avx512 if head_dim.is_multiple_of(16) => IsaLevel::Avx512,
            IsaLevel::Avx512 | IsaLevel::Avx2 if head_dim.is_multiple_of(8) => IsaLevel::Avx2,
            _ => IsaLevel::Scalar,
        };
        BlockPath(level)
    }

    /// The instruction-set level of its loops.
    pub fn level(self) -> IsaLevel {
        self.0
    }
}

/// Element types the attention kernel can read from the cache, with its two inner loops.
pub trait AttnElement: Element {
    /// `scores[j] = q · keys[j]` for the `scores.len()` keys of one block (`q` pre-scaled,
    /// `q.len()` the head dim `path` was made for).
    fn qk_block(q: &[f32], keys: &[Self], scores: &mut [f32], path: BlockPath);
    /// `acc += Σ_j probs[j] · values[j]` over the values of one block; `path` as above.
    fn pv_block(acc: &mut [f32], probs: &[f32], values: &[Self], path: BlockPath);
}

macro_rules! attn_element {
    ($t:ty, $qk:ident, $pv:ident) => {
        impl AttnElement for $t {
            #[inline]
            fn qk_block(q: &[f32], keys: &[Self], scores: &mut [f32], path: BlockPath) {
                match path.level() {
                    // SAFETY: a `BlockPath` of this level proves the CPU's features and a
                    // head dim of whole vectors (`BlockPath::of`).
                    #[cfg(target_arch = "x86_64")]
                    IsaLevel::Avx512 => unsafe { avx512::$qk(q, keys, scores) },
                    // SAFETY: as above.
                    #[cfg(target_arch = "x86_64")]
                    IsaLevel::Avx2 => unsafe { avx2::$qk(q, keys, scores) },
                    _ => qk_portable(q, keys, scores),
                }
            }
            #[inline]
            fn pv_block(acc: &mut [f32], probs: &[f32], values: &[Self], path: BlockPath) {
                match path.level() {
                    // SAFETY: as in `qk_block`.
                    #[cfg(target_arch = "x86_64")]
                    IsaLevel::Avx512 => unsafe { avx512::$pv(acc, probs, values) },
                    // SAFETY: as in `qk_block`.
                    #[cfg(target_arch = "x86_64")]
                    IsaLevel::Avx2 => unsafe { avx2::$pv(acc, probs, values) },
                    _ => pv_portable(acc, probs, values),
                }
            }
        }
    };
}
attn_element!(f32, qk_f32, pv_f32);
attn_element!(half::bf16, qk_bf16, pv_bf16);
attn_element!(half::f16, qk_f16, pv_f16);

fn qk_portable<T: Element>(q: &[f32], keys: &[T], scores: &mut [f32]) {
    for (s, key) in scores.iter_mut().zip(keys.chunks_exact(q.len())) {
        let mut acc = [0f32; LANES];
        let (qc, kc) = (q.chunks_exact(LANES), key.chunks_exact(LANES));
        let (qt, kt) = (qc.remainder(), kc.remainder());
        for (x, y) in qc.zip(kc) {
            for l in 0..LANES {
                acc[l] = fmadd::<false>(x[l], y[l].to_f32(), acc[l]);
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for (x, y) in qt.iter().zip(kt) {
            sum += x * y.to_f32();
        }
        *s = sum;
    }
}

fn pv_portable<T: Element>(acc: &mut [f32], probs: &[f32], values: &[T]) {
    for (p, v) in probs.iter().zip(values.chunks_exact(acc.len())) {
        for (a, x) in acc.iter_mut().zip(v) {
            *a += p * x.to_f32();
        }
    }
}

/// AVX2 block loops; one pair per storage type, differing only in how 8 elements are loaded
/// and widened to f32.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    macro_rules! block_fns {
        ($qk:ident, $pv:ident, $t:ty, |$p:ident| $load:expr) => {
            /// # Safety
            /// AVX2, FMA and F16C must be available; `q.len() % 8 == 0`.
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(super) unsafe fn $qk(q: &[f32], keys: &[$t], scores: &mut [f32]) {
                let hd = q.len();
                let n = scores.len().min(keys.len() / hd);
                let mut j = 0;
                // Eight keys at a time: eight independent FMA chains hide the FMA latency
                // that a single key's dot product (one chain of hd / 8 FMAs) is bound by.
                while j + 8 <= n {
                    let mut acc = [_mm256_setzero_ps(); 8];
                    let base = keys.as_ptr().add(j * hd);
                    let mut d = 0;
                    // SAFETY (all loads): d + 8 <= hd; key `j + i` spans hd elements of `keys`.
                    while d + 8 <= hd {
                        let qv = _mm256_loadu_ps(q.as_ptr().add(d));
                        for (i, a) in acc.iter_mut().enumerate() {
                            let $p = base.add(i * hd + d);
                            *a = _mm256_fmadd_ps(qv, $load, *a);
                        }
                        d += 8;
                    }
                    // SAFETY: j + 8 <= n <= scores.len().
                    _mm256_storeu_ps(scores.as_mut_ptr().add(j), hsum8(acc));
                    j += 8;
                }
                for (s, key) in scores[j..n].iter_mut().zip(keys[j * hd..].chunks_exact(hd)) {
                    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                    let mut d = 0;
                    // SAFETY (all loads): d + 8 <= hd = q.len() = key.len().
                    while d + 16 <= hd {
                        let ($p, qp) = (key.as_ptr().add(d), q.as_ptr().add(d));
                        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qp), $load, a0);
                        let ($p, qp) = (key.as_ptr().add(d + 8), q.as_ptr().add(d + 8));
                        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qp), $load, a1);
                        d += 16;
                    }
                    if d + 8 <= hd {
                        let ($p, qp) = (key.as_ptr().add(d), q.as_ptr().add(d));
                        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qp), $load, a0);
                    }
                    *s = hsum(_mm256_add_ps(a0, a1));
                }
            }

            /// # Safety
            /// AVX2, FMA and F16C must be available; `acc.len() % 8 == 0`.
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(super) unsafe fn $pv(acc: &mut [f32], probs: &[f32], values: &[$t]) {
                let hd = acc.len();
                let mut d0 = 0;
                // 64 dimensions at a time stay in 8 registers across all the block's values,
                // instead of a load and a store of `acc` per value.
                while d0 + 64 <= hd {
                    let mut r = [_mm256_setzero_ps(); 8];
                    for (i, ri) in r.iter_mut().enumerate() {
                        // SAFETY: d0 + 8i + 8 <= d0 + 64 <= hd = acc.len().
                        *ri = _mm256_loadu_ps(acc.as_ptr().add(d0 + 8 * i));
                    }
                    for (p, v) in probs.iter().zip(values.chunks_exact(hd)) {
                        let pv = _mm256_set1_ps(*p);
                        for (i, ri) in r.iter_mut().enumerate() {
                            // SAFETY: as above, v.len() = hd.
                            let $p = v.as_ptr().add(d0 + 8 * i);
                            *ri = _mm256_fmadd_ps(pv, $load, *ri);
                        }
                    }
                    for (i, ri) in r.iter().enumerate() {
                        // SAFETY: as above.
                        _mm256_storeu_ps(acc.as_mut_ptr().add(d0 + 8 * i), *ri);
                    }
                    d0 += 64;
                }
                for (p, v) in probs.iter().zip(values.chunks_exact(hd)) {
                    let pv = _mm256_set1_ps(*p);
                    let mut d = d0;
                    // SAFETY: d + 8 <= hd = acc.len() = v.len().
                    while d + 8 <= hd {
                        let $p = v.as_ptr().add(d);
                        let a = acc.as_mut_ptr().add(d);
                        _mm256_storeu_ps(a, _mm256_fmadd_ps(pv, $load, _mm256_loadu_ps(a)));
                        d += 8;
                    }
                }
            }
        };
    }

    block_fns!(qk_f32, pv_f32, f32, |p| _mm256_loadu_ps(p));
    // bf16 is the top half of an f32: widen to 32 bits and shift left by 16.
    block_fns!(qk_bf16, pv_bf16, bf16, |p| _mm256_castsi256_ps(
        _mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)),
            16
        )
    ));
    block_fns!(qk_f16, pv_f16, f16, |p| _mm256_cvtph_ps(_mm_loadu_si128(
        p as *const __m128i
    )));

    /// The eight horizontal sums of `a`, as one vector (lane `i` = Σ lanes of `a[i]`).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn hsum8(a: [__m256; 8]) -> __m256 {
        // Pairwise hadds leave each 128-bit half with partial sums of four inputs; adding
        // the halves finishes them.
        let t0 = _mm256_hadd_ps(a[0], a[1]);
        let t1 = _mm256_hadd_ps(a[2], a[3]);
        let t2 = _mm256_hadd_ps(a[4], a[5]);
        let t3 = _mm256_hadd_ps(a[6], a[7]);
        let u0 = _mm256_hadd_ps(t0, t1);
        let u1 = _mm256_hadd_ps(t2, t3);
        _mm256_add_ps(
            _mm256_permute2f128_ps(u0, u1, 0x20),
            _mm256_permute2f128_ps(u0, u1, 0x31),
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256) -> f32 {
        let pair = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let quad = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
        _mm_cvtss_f32(_mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1)))
    }
}

/// AVX-512 block loops: 16 lanes, so a 128-wide head is 8 registers — eight keys scored per
/// pass over `q`, and a head's output kept in registers across all of a block's values. On
/// Zen 4 (512-bit FMAs as two 256-bit halves) they time as the AVX2 ones; CPUs with
/// full-width units are what they are for.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    use super::avx2::hsum8;

    macro_rules! block_fns {
        ($qk:ident, $pv:ident, $t:ty, |$p:ident| $load:expr) => {
            /// # Safety
            /// AVX-512 F/DQ, AVX2, FMA and F16C must be available; `q.len() % 16 == 0`.
            #[target_feature(enable = "avx512f,avx512dq,avx2,fma,f16c")]
            pub(super) unsafe fn $qk(q: &[f32], keys: &[$t], scores: &mut [f32]) {
                let hd = q.len();
                let n = scores.len().min(keys.len() / hd);
                let mut j = 0;
                // Eight keys at a time: eight independent FMA chains, one load of `q` for eight
                // keys, and a reduction of whole registers (sixteen keys measured slower).
                while j + 8 <= n {
                    let mut acc = [_mm512_setzero_ps(); 8];
                    let base = keys.as_ptr().add(j * hd);
                    let mut d = 0;
                    // SAFETY (all loads): d + 16 <= hd; key `j + i` spans hd elements of `keys`.
                    while d + 16 <= hd {
                        let qv = _mm512_loadu_ps(q.as_ptr().add(d));
                        for (i, a) in acc.iter_mut().enumerate() {
                            let $p = base.add(i * hd + d);
                            *a = _mm512_fmadd_ps(qv, $load, *a);
                        }
                        d += 16;
                    }
                    let mut halves = [_mm256_setzero_ps(); 8];
                    for (h, a) in halves.iter_mut().zip(acc) {
                        *h = fold(a);
                    }
                    // SAFETY: j + 8 <= n <= scores.len().
                    _mm256_storeu_ps(scores.as_mut_ptr().add(j), hsum8(halves));
                    j += 8;
                }
                for (s, key) in scores[j..n].iter_mut().zip(keys[j * hd..].chunks_exact(hd)) {
                    let mut a = _mm512_setzero_ps();
                    let mut d = 0;
                    // SAFETY (all loads): d + 16 <= hd = q.len() = key.len().
                    while d + 16 <= hd {
                        let $p = key.as_ptr().add(d);
                        a = _mm512_fmadd_ps(_mm512_loadu_ps(q.as_ptr().add(d)), $load, a);
                        d += 16;
                    }
                    *s = _mm512_reduce_add_ps(a);
                }
            }

            /// # Safety
            /// As for the score loop; `acc.len() % 16 == 0`.
            #[target_feature(enable = "avx512f,avx512dq,avx2,fma,f16c")]
            pub(super) unsafe fn $pv(acc: &mut [f32], probs: &[f32], values: &[$t]) {
                let hd = acc.len();
                let mut d0 = 0;
                // 128 dimensions at a time stay in 8 registers across all the block's values.
                while d0 + 128 <= hd {
                    let mut r = [_mm512_setzero_ps(); 8];
                    for (i, ri) in r.iter_mut().enumerate() {
                        // SAFETY: d0 + 16i + 16 <= d0 + 128 <= hd = acc.len().
                        *ri = _mm512_loadu_ps(acc.as_ptr().add(d0 + 16 * i));
                    }
                    for (p, v) in probs.iter().zip(values.chunks_exact(hd)) {
                        let pv = _mm512_set1_ps(*p);
                        for (i, ri) in r.iter_mut().enumerate() {
                            // SAFETY: as above, v.len() = hd.
                            let $p = v.as_ptr().add(d0 + 16 * i);
                            *ri = _mm512_fmadd_ps(pv, $load, *ri);
                        }
                    }
                    for (i, ri) in r.iter().enumerate() {
                        // SAFETY: as above.
                        _mm512_storeu_ps(acc.as_mut_ptr().add(d0 + 16 * i), *ri);
                    }
                    d0 += 128;
                }
                for (p, v) in probs.iter().zip(values.chunks_exact(hd)) {
                    let pv = _mm512_set1_ps(*p);
                    let mut d = d0;
                    // SAFETY: d + 16 <= hd = acc.len() = v.len().
                    while d + 16 <= hd {
                        let $p = v.as_ptr().add(d);
                        let a = acc.as_mut_ptr().add(d);
                        _mm512_storeu_ps(a, _mm512_fmadd_ps(pv, $load, _mm512_loadu_ps(a)));
                        d += 16;
                    }
                }
            }
        };
    }

    block_fns!(qk_f32, pv_f32, f32, |p| _mm512_loadu_ps(p));
    // bf16 is the top half of an f32: widen to 32 bits and shift left by 16.
    block_fns!(qk_bf16, pv_bf16, bf16, |p| _mm512_castsi512_ps(
        _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(
            p as *const __m256i
        )))
    ));
    block_fns!(qk_f16, pv_f16, f16, |p| _mm512_cvtph_ps(
        _mm256_loadu_si256(p as *const __m256i)
    ));

    /// The two 8-lane halves of `a` added.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,avx2")]
    fn fold(a: __m512) -> __m256 {
        _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps::<1>(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};
    use rand::{Rng, SeedableRng};

    /// Dense, unpaged, f64 causal attention: `k`, `v` are `[ctx, num_kv_heads, hd]` per sequence.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        nh: usize,
        nkv: usize,
        hd: usize,
        num_cached: usize,
        rows: usize,
    ) -> Vec<f32> {
        let group = nh / nkv;
        let mut out = vec![0f32; rows * nh * hd];
        for t in 0..rows {
            let ctx = num_cached + t + 1;
            for h in 0..nh {
                let kvh = h / group;
                let qv = &q[(t * nh + h) * hd..(t * nh + h + 1) * hd];
                let s: Vec<f64> = (0..ctx)
                    .map(|j| {
                        let kj = &k[(j * nkv + kvh) * hd..(j * nkv + kvh + 1) * hd];
                        qv.iter()
                            .zip(kj)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hd {
                    let o: f64 = (0..ctx)
                        .map(|j| e[j] * v[(j * nkv + kvh) * hd + d] as f64)
                        .sum::<f64>()
                        / z;
                    out[(t * nh + h) * hd + d] = o as f32;
                }
            }
        }
        out
    }

    /// Scatters dense `[ctx, nkv, hd]` K into a paged layout following `table`.
    fn page(
        dense: &[f32],
        table: &[usize],
        num_blocks: usize,
        nkv: usize,
        hd: usize,
        bs: usize,
    ) -> Vec<f32> {
        let mut paged = vec![0f32; num_blocks * nkv * bs * hd];
        for j in 0..dense.len() / (nkv * hd) {
            for h in 0..nkv {
                let dst = ((table[j / bs] * nkv + h) * bs + j % bs) * hd;
                paged[dst..dst + hd]
                    .copy_from_slice(&dense[(j * nkv + h) * hd..(j * nkv + h + 1) * hd]);
            }
        }
        paged
    }

    #[test]
    fn single_key_returns_its_value() {
        // One cached token: softmax over one score is 1, so the output is V whatever q is.
        let dims = AttnDims {
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 2,
            block_size: 2,
            scale: 0.7,
        };
        let k = [0.0, 0.0, 0.0, 0.0, 5.0, 5.0, 0.0, 0.0]; // block 1, slot 0 = [5, 5]
        let v = [0.0, 0.0, 0.0, 0.0, 1.5, -2.0, 0.0, 0.0];
        let seq = AttnSeq {
            row_offset: 0,
            num_rows: 1,
            num_cached: 0,
            block_table: &[1],
        };
        let mut out = [0f32; 4];
        paged_attention(
            Isa::best(),
            dims,
            &[1.0, 2.0, -3.0, 0.5],
            LayerKv { k: &k, v: &v },
            &[seq],
            &mut out,
        );
        assert_eq!(out, [1.5, -2.0, 1.5, -2.0]);
    }

    #[test]
    fn two_keys_hand_computed() {
        // q·k0 = 0, q·k1 = ln 3 (scale 1) → weights 1/4, 3/4 → out = v0/4 + 3 v1/4.
        let dims = AttnDims {
            num_heads: 1,
            num_kv_heads: 1,
            head_dim: 2,
            block_size: 1,
            scale: 1.0,
        };
        let ln3 = 3f32.ln();
        let k = [ln3, 0.0, 0.0, 0.0]; // block 0 holds token 1, block 1 holds token 0
        let v = [4.0, 8.0, 0.0, 4.0];
        let seq = AttnSeq {
            row_offset: 1,
            num_rows: 1,
            num_cached: 1,
            block_table: &[1, 0],
        };
        let mut out = [9f32; 4];
        paged_attention(
            Isa::best(),
            dims,
            &[0.0, 0.0, 1.0, 0.0],
            LayerKv { k: &k, v: &v },
            &[seq],
            &mut out,
        );
        assert_eq!(
            &out[..2],
            &[9.0, 9.0],
            "rows outside the sequences stay untouched"
        );
        assert!(
            (out[2] - 3.0).abs() < 1e-6 && (out[3] - 7.0).abs() < 1e-6,
            "{out:?}"
        );
    }

    #[test]
    fn matches_naive_reference_for_a_mixed_batch_with_shuffled_blocks() {
        // head_dim 16: portable-width tails only; 80: one 64-wide register block plus a tail;
        // 128: the real head size. Blocks of 4 slots take the one-key score loop only, blocks of
        // 16 (the default) also the eight-key one, with partly filled last blocks.
        for (hd, bs) in [(16usize, 4usize), (80, 4), (128, 4), (80, 16), (128, 16)] {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
            let (nh, nkv, num_blocks) = (4, 2, 64);
            let dims = AttnDims {
                num_heads: nh,
                num_kv_heads: nkv,
                head_dim: hd,
                block_size: bs,
                scale: 1.0 / (hd as f32).sqrt(),
            };
            // (num_cached, rows): a fresh prefill longer than a query tile, a chunk on top of a
            // cache, and two decodes; and a chunk over several GEMM tiles, on top of a cache.
            let shapes = [(0usize, 37usize), (9, 6), (21, 1), (4, 1), (7, 140)];
            let mut free: Vec<usize> = (0..num_blocks).collect();
            // Deterministic shuffle so that tables are non-contiguous and interleaved.
            for i in (1..free.len()).rev() {
                free.swap(i, rng.random_range(0..=i));
            }
            let mut k_paged = vec![0f32; num_blocks * nkv * bs * hd];
            let mut v_paged = k_paged.clone();
            let total_rows: usize = shapes.iter().map(|s| s.1).sum();
            let mut q = vec![0f32; total_rows * nh * hd];
            let mut want = vec![0f32; total_rows * nh * hd];
            let mut tables = Vec::new();
            let mut row = 0;
            for &(cached, rows) in &shapes {
                let ctx = cached + rows;
                let table: Vec<usize> =
                    (0..ctx.div_ceil(bs)).map(|_| free.pop().unwrap()).collect();
                let kd: Vec<f32> = (0..ctx * nkv * hd)
                    .map(|_| rng.random_range(-2.0..2.0))
                    .collect();
                let vd: Vec<f32> = (0..ctx * nkv * hd)
                    .map(|_| rng.random_range(-2.0..2.0))
                    .collect();
                let qd: Vec<f32> = (0..rows * nh * hd)
                    .map(|_| rng.random_range(-2.0..2.0))
                    .collect();
                for (dst, src) in [(&mut k_paged, &kd), (&mut v_paged, &vd)] {
                    let p = page(src, &table, num_blocks, nkv, hd, bs);
                    for (d, s) in dst.iter_mut().zip(p) {
                        *d += s; // blocks are disjoint across sequences
                    }
                }
                q[row * nh * hd..(row + rows) * nh * hd].copy_from_slice(&qd);
                let r = naive(&qd, &kd, &vd, nh, nkv, hd, cached, rows);
                want[row * nh * hd..(row + rows) * nh * hd].copy_from_slice(&r);
                tables.push((row, rows, cached, table));
                row += rows;
            }
            let seqs: Vec<AttnSeq> = tables
                .iter()
                .map(|(r, n, c, t)| AttnSeq {
                    row_offset: *r,
                    num_rows: *n,
                    num_cached: *c,
                    block_table: t,
                })
                .collect();
            // As the model runs it (the 140-row chunk by GEMM), every chunk by GEMM, none; with
            // every block-loop path this CPU has.
            let runs = Isa::all_supported()
                .into_iter()
                .flat_map(|isa| [GEMM_MIN_ROWS, 2, usize::MAX].map(|g| (isa, g)));
            for (isa, gemm_min_rows) in runs {
                let mut out = vec![0f32; q.len()];
                paged_attention_with(
                    isa,
                    dims,
                    &q,
                    LayerKv {
                        k: &k_paged,
                        v: &v_paged,
                    },
                    &seqs,
                    &mut out,
                    gemm_min_rows,
                );
                let max_err = out
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    max_err < 1e-5,
                    "{:?} loops, head_dim {hd}, block {bs}, GEMM from {gemm_min_rows} rows: max abs error {max_err}",
                    BlockPath::of(isa, hd).level()
                );
            }

            // The same problem stored in bf16 and f16 stays within their rounding of the f32
            // answer, on every path.
            for isa in Isa::all_supported() {
                let level = BlockPath::of(isa, hd).level();
                let bf16_err =
                    half_precision_error::<bf16>(isa, dims, &q, &k_paged, &v_paged, &seqs, &want);
                assert!(
                    bf16_err < 0.05,
                    "{level:?}, head_dim {hd}: bf16 max abs error {bf16_err}"
                );
                let f16_err =
                    half_precision_error::<f16>(isa, dims, &q, &k_paged, &v_paged, &seqs, &want);
                assert!(
                    f16_err < 0.01,
                    "{level:?}, head_dim {hd}: f16 max abs error {f16_err}"
                );
            }
        }
    }

    /// Max abs error against `want` of the problem stored as `T`.
    #[allow(clippy::too_many_arguments)]
    fn half_precision_error<T: AttnElement>(
        isa: Isa,
        dims: AttnDims,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        seqs: &[AttnSeq<'_>],
        want: &[f32],
    ) -> f32 {
        let to_t = |x: &[f32]| x.iter().map(|v| T::from_f32(*v)).collect::<Vec<_>>();
        let (qt, kt, vt) = (to_t(q), to_t(k), to_t(v));
        let mut out = vec![T::default(); q.len()];
        paged_attention(isa, dims, &qt, LayerKv { k: &kt, v: &vt }, seqs, &mut out);
        out.iter()
            .zip(want)
            .map(|(a, b)| (a.to_f32() - b).abs())
            .fold(0f32, f32::max)
    }

    #[test]
    fn block_paths_follow_the_isa_and_head_dim() {
        for isa in Isa::all_supported() {
            assert_eq!(BlockPath::of(isa, 2).level(), IsaLevel::Scalar);
            let want_128 = isa.level();
            assert_eq!(BlockPath::of(isa, 128).level(), want_128);
            let want_24 = match isa.level() {
                IsaLevel::Scalar => IsaLevel::Scalar,
                _ => IsaLevel::Avx2, // 24 is whole 8-lane vectors, not 16-lane ones
            };
            assert_eq!(BlockPath::of(isa, 24).level(), want_24);
        }
    }

    #[test]
    fn huge_scores_do_not_overflow() {
        // Scores of ±1e4 would overflow exp() without max subtraction.
        let dims = AttnDims {
            num_heads: 1,
            num_kv_heads: 1,
            head_dim: 1,
            block_size: 2,
            scale: 1.0,
        };
        let k = [100.0, -100.0];
        let v = [1.0, 2.0];
        let seq = AttnSeq {
            row_offset: 0,
            num_rows: 2,
            num_cached: 0,
            block_table: &[0],
        };
        let mut out = [0f32; 2];
        paged_attention(
            Isa::best(),
            dims,
            &[100.0, 100.0],
            LayerKv { k: &k, v: &v },
            &[seq],
            &mut out,
        );
        assert_eq!(out, [1.0, 1.0]);
    }
}
