//! `y = x·Wᵀ` for a few rows of `x`: the decode-time projection.
//!
//! With one to a few dozen input rows a projection is bound by streaming the weights from
//! memory, and a general GEMM (which packs panels of both operands) wastes bandwidth and
//! parallelism on it. Here each block of weight rows is read from memory once and dotted
//! with all `m` inputs while it is in L1; rayon splits the output rows. `W` stays in its
//! checkpoint layout (`[out_features, in_features]`, row-major), which is exactly the layout
//! this wants.

use rayon::prelude::*;

use super::{fmadd, Isa, IsaLevel};

/// Bounds on the output rows per rayon task: at least enough to amortise scheduling, and few
/// enough that a 1024-row projection still splits into many tasks for load balance. Between
/// the bounds a task count of about 32 per thread is the target, so that the 151,936-row LM
/// head is not cut into ~10,000 tasks whose overhead shows up in its time.
const MIN_ROWS_PER_TASK: usize = 16;
const MAX_ROWS_PER_TASK: usize = 1024;
const TASKS_PER_THREAD: usize = 32;
/// Weight rows processed together for one or two inputs in the portable kernel: 4 rows × 2
/// inputs = 8 independent accumulators.
const ROW_TILE: usize = 4;
/// Task sizes are a multiple of this, so that the SIMD kernels' 3-, 4- and 8-row blocks tile
/// them without single leftover rows.
const TASK_ROW_MULTIPLE: usize = 24;
const LANES: usize = 8;
/// Floats of padding after each input row in the SIMD paths' copy of `x` (one cache line).
/// At k = 1024 the rows of `x` are 4 KiB apart and all of a chunk's loads fall in one set of
/// the 8-way L1; with 8 inputs and the weight rows beside them that set overflows on every
/// chunk. Padded, each row starts in a set of its own.
const X_ROW_PAD: usize = 16;

/// Computes `y[i][o] = Σ_k x[i][k]·w[o][k]` for `x: [m, k]`, `w: [n, k]` (both row-major) with
/// `isa`'s code path, returning `y: [m, n]` row-major. Accumulation is in f32. Panics only on
/// inconsistent slice lengths, which callers rule out from tensor shapes.
pub fn matmul_xwt(isa: Isa, x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "x is not [m, k]");
    assert_eq!(w.len(), n * k, "w is not [n, k]");
    if m == 0 || n == 0 {
        return Vec::new();
    }
    let mut y = vec![0f32; m * n];
    let rows_per_task = (n / (rayon::current_num_threads() * TASKS_PER_THREAD))
        .clamp(MIN_ROWS_PER_TASK, MAX_ROWS_PER_TASK)
        .next_multiple_of(TASK_ROW_MULTIPLE);
    let y_cols = DisjointColumns::new(&mut y, n);
    let vectorised = matches!(isa.level(), IsaLevel::Avx512 | IsaLevel::Avx2);
    let padded = (vectorised && m > 1).then(|| PaddedRows::new(x, m, k));
    let (x_simd, x_stride) = padded.as_ref().map_or((x, k), |p| (&p.data[..], p.stride));
    (0..n.div_ceil(rows_per_task))
        .into_par_iter()
        .for_each_init(Vec::new, |out, task| {
            // The kernel fills a transposed `[rows, m]` block (one weight row's outputs
            // together); this task's columns of `y` get it while it is still in cache.
            let first = task * rows_per_task;
            let rows = rows_per_task.min(n - first);
            let w_rows = first..first + rows;
            out.clear();
            out.resize(rows * m, 0.0);
            match isa.level() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: an `Isa` of this level proves the CPU has the features.
                IsaLevel::Avx512 => unsafe {
                    simd::rows_avx512(x_simd, x_stride, m, w, w_rows, k, out)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                IsaLevel::Avx2 => unsafe {
                    simd::rows_avx2(x_simd, x_stride, m, w, w_rows, k, out)
                },
                _ => rows_generic::<false>(x, m, &w[first * k..(first + rows) * k], k, out),
            }
            // SAFETY: tasks cover disjoint ranges of weight rows, hence of columns.
            unsafe { y_cols.write_block(first, rows, out) };
        });
    y
}

/// A copy of `x: [m, k]` whose rows are `stride` floats apart (see [`X_ROW_PAD`]).
struct PaddedRows {
    data: Vec<f32>,
    stride: usize,
}

impl PaddedRows {
    fn new(x: &[f32], m: usize, k: usize) -> Self {
        let stride = k.next_multiple_of(X_ROW_PAD) + X_ROW_PAD;
        let mut data = vec![0f32; m * stride];
        for (dst, src) in data.chunks_exact_mut(stride).zip(x.chunks_exact(k)) {
            dst[..k].copy_from_slice(src);
        }
        Self { data, stride }
    }
}

/// `y: [m, n]` row-major, written by tasks that each own a range of columns.
struct DisjointColumns<'a> {
    ptr: *mut f32,
    len: usize,
    n: usize,
    _y: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: tasks write disjoint columns (see `write_block`), so sharing the pointer is sound.
unsafe impl Sync for DisjointColumns<'_> {}

impl<'a> DisjointColumns<'a> {
    fn new(y: &'a mut [f32], n: usize) -> Self {
        Self {
            ptr: y.as_mut_ptr(),
            len: y.len(),
            n,
            _y: std::marker::PhantomData,
        }
    }

    /// Stores the transposed block `block: [cols, m]` into columns `first..first + cols`.
    ///
    /// # Safety
    /// No other thread may access these columns during the call.
    unsafe fn write_block(&self, first: usize, cols: usize, block: &[f32]) {
        let m = self.len / self.n;
        assert!(first + cols <= self.n && block.len() == cols * m);
        for i in 0..m {
            // SAFETY: row `i`, columns `first..first + cols` lie inside `y` (asserted above)
            // and are this caller's alone.
            let row =
                unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * self.n + first), cols) };
            for (o, v) in row.iter_mut().enumerate() {
                *v = block[o * m + i];
            }
        }
    }
}

/// The SIMD instantiations, with explicit intrinsics: LLVM does not reliably keep a `R × M`
/// tile of accumulators in registers when left to auto-vectorise. The blocking and
/// prefetching ([`simd::blocks`]) are shared; each ISA supplies its `R × M` dot products.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Inputs that meet each block of weights before the next block is read: their rows
    /// (256 KiB at k = 1024) stay in L2. Larger `m` is done in chunks of this many inputs,
    /// which re-read the task's weight rows (by then in L2).
    const INPUT_CHUNK: usize = 64;
    /// Most inputs the AVX-512 dot products take (see [`rows_avx512`]).
    const AVX512_MAX_ROWS: usize = 16;

    /// One ISA's `R × M` dot products in a pass over `k`.
    pub(super) trait Dots {
        /// Inputs dotted with a block of weight rows in one pass (at most 8).
        const GROUP: usize;
        /// All `R × M` dot products of `w` and `x` (rows of equal length), `R·M` accumulators
        /// in registers. With `PREFETCH`, also asks for each cache line of the `ahead` rows.
        ///
        /// # Safety
        /// The CPU must support the ISA.
        unsafe fn dots<const R: usize, const M: usize, const PREFETCH: bool>(
            w: [&[f32]; R],
            x: [&[f32]; M],
            ahead: [&[f32]; R],
        ) -> [[f32; M]; R];
    }

    pub(super) struct Avx2;
    pub(super) struct Avx512;

    /// Same contract as [`super::rows_generic`], for the rows `w_rows` of `w: [n, k]`, with the
    /// rows of `x` `x_stride` floats apart.
    ///
    /// Blocks are 3 rows from 3 inputs up (3 × 4 accumulators, the 3 weight vectors and one
    /// input vector fill the 16 vector registers) and 4 rows below, where a pass that
    /// streams from memory needs the parallel streams more than the registers.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows_avx2(
        x: &[f32],
        x_stride: usize,
        m: usize,
        w: &[f32],
        w_rows: Range<usize>,
        k: usize,
        out: &mut [f32],
    ) {
        // SAFETY: the caller guarantees AVX2 and FMA.
        unsafe {
            if m <= 2 {
                blocks::<Avx2, 4>(x, x_stride, m, w, w_rows, k, out);
            } else {
                blocks::<Avx2, 3>(x, x_stride, m, w, w_rows, k, out);
            }
        }
    }

    /// [`rows_avx2`] with 32 registers of 16 lanes: 8-row blocks for one or two inputs
    /// (8 parallel weight streams), 3 rows × up to 8 inputs above (24 accumulators), so a
    /// decode batch of 8 reads each block of weights once. Above [`AVX512_MAX_ROWS`] inputs
    /// the groups of 8 no longer fit L1 beside the weight block, and the AVX2 blocking is
    /// faster (`benches/engine.rs`, linear table: AVX-512 ahead by 10–20 % up to 16 rows,
    /// behind by 10–40 % from 32).
    ///
    /// # Safety
    /// The CPU must support AVX-512F (and AVX2, FMA for the tails).
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn rows_avx512(
        x: &[f32],
        x_stride: usize,
        m: usize,
        w: &[f32],
        w_rows: Range<usize>,
        k: usize,
        out: &mut [f32],
    ) {
        // SAFETY: the caller guarantees the features.
        unsafe {
            if m <= 2 {
                blocks::<Avx512, 8>(x, x_stride, m, w, w_rows, k, out);
            } else if m <= AVX512_MAX_ROWS {
                blocks::<Avx512, 3>(x, x_stride, m, w, w_rows, k, out);
            } else {
                blocks::<Avx2, 3>(x, x_stride, m, w, w_rows, k, out);
            }
        }
    }

    /// Block by block of weight rows, every group of up to `D::GROUP` inputs makes one pass
    /// over the block: the first group streams it from memory, the later ones read it from
    /// L1. While they do, the next block is prefetched. Without that, the core does the later
    /// groups' arithmetic and the next block's memory reads one after the other: the hardware
    /// prefetcher does not run into the next rows' 4 KiB pages on its own. With 8 inputs on
    /// AVX2, this made the projections of a 28-layer stack about 5 % faster in paired runs
    /// (2026-11-22, median of 41) than one pass per input group over 192 KiB tiles of rows;
    /// with one or two inputs it makes no measurable difference. The block after the last
    /// one of `w_rows` is prefetched too (usually the same thread's next task). Prefetches go
    /// to L2 (`prefetcht1`): into L1 they evicted the block in use and the inputs (an 8-row
    /// block alone fills the 32 KiB L1), and streaming from L2 was 15–25 % faster at 1 and 8
    /// inputs (interleaved runs over 1.2 GB of weights, 2026-12-04).
    ///
    /// # Safety
    /// The CPU must support `D`'s ISA.
    #[inline(always)]
    unsafe fn blocks<D: Dots, const R: usize>(
        x: &[f32],
        x_stride: usize,
        m: usize,
        w: &[f32],
        w_rows: Range<usize>,
        k: usize,
        out: &mut [f32],
    ) {
        let n = w.len() / k;
        let rows = w_rows.len();
        let row = |r: usize| &w[(w_rows.start + r) * k..(w_rows.start + r + 1) * k];
        for chunk in (0..m).step_by(INPUT_CHUNK) {
            let inputs = chunk..m.min(chunk + INPUT_CHUNK);
            let mut r = 0;
            while r + R <= rows {
                let block: [&[f32]; R] = core::array::from_fn(|t| row(r + t));
                let next = (w_rows.start + r + 2 * R <= n)
                    .then(|| core::array::from_fn(|t| row(r + R + t)));
                let out_rows = &mut out[r * m..(r + R) * m];
                for first in inputs.clone().step_by(D::GROUP) {
                    let count = D::GROUP.min(inputs.end - first);
                    // Prefetching from the last group: with several, the first one streams
                    // this block, and its own misses keep the memory busy meanwhile; with one
                    // (a decode batch of up to 8 on AVX-512), the prefetches run beside it.
                    let last = first + count == inputs.end;
                    let ahead = next.filter(|_| last);
                    // SAFETY: the caller guarantees the ISA.
                    unsafe {
                        group::<D, R>(block, ahead, x, x_stride, m, k, first, count, out_rows)
                    };
                }
                r += R;
            }
            for r in r..rows {
                for first in inputs.clone().step_by(D::GROUP) {
                    let count = D::GROUP.min(inputs.end - first);
                    let out_row = &mut out[r * m..(r + 1) * m];
                    // SAFETY: the caller guarantees the ISA.
                    unsafe {
                        group::<D, 1>([row(r)], None, x, x_stride, m, k, first, count, out_row)
                    };
                }
            }
        }
    }

    /// Inputs `first..first + count` (1 ≤ count ≤ `D::GROUP`) against the `R` rows of `w`,
    /// into `out: [R, m]`; prefetches `ahead` meanwhile if given.
    ///
    /// # Safety
    /// The CPU must support `D`'s ISA.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn group<D: Dots, const R: usize>(
        w: [&[f32]; R],
        ahead: Option<[&[f32]; R]>,
        x: &[f32],
        x_stride: usize,
        m: usize,
        k: usize,
        first: usize,
        count: usize,
        out: &mut [f32],
    ) {
        macro_rules! run {
            ($M:literal) => {{
                let xs: [&[f32]; $M] = core::array::from_fn(|j| &x[(first + j) * x_stride..][..k]);
                // SAFETY: the caller guarantees the ISA.
                let d = unsafe {
                    match ahead {
                        Some(ahead) => D::dots::<R, $M, true>(w, xs, ahead),
                        None => D::dots::<R, $M, false>(w, xs, w),
                    }
                };
                for (t, row) in d.iter().enumerate() {
                    out[t * m + first..t * m + first + $M].copy_from_slice(row);
                }
            }};
        }
        debug_assert!(count <= D::GROUP);
        match count {
            8 => run!(8),
            7 => run!(7),
            6 => run!(6),
            5 => run!(5),
            4 => run!(4),
            3 => run!(3),
            2 => run!(2),
            _ => run!(1),
        }
    }

    /// Checks the lengths every `dots` relies on; returns `k`.
    #[inline(always)]
    fn common_len<const R: usize, const M: usize>(
        w: &[&[f32]; R],
        x: &[&[f32]; M],
        ahead: &[&[f32]; R],
    ) -> usize {
        let k = x[0].len();
        for s in w.iter().chain(ahead).chain(x) {
            assert_eq!(s.len(), k, "weight rows and inputs differ in length");
        }
        k
    }

    /// The products past the last whole vector, added to each lane sum `res`.
    #[inline(always)]
    fn tails<const R: usize, const M: usize>(
        w: [&[f32]; R],
        x: [&[f32]; M],
        from: usize,
        res: &mut [[f32; M]; R],
    ) {
        for r in 0..R {
            for i in 0..M {
                for j in from..x[i].len() {
                    res[r][i] = w[r][j].mul_add(x[i][j], res[r][i]);
                }
            }
        }
    }

    impl Dots for Avx2 {
        const GROUP: usize = 4;

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn dots<const R: usize, const M: usize, const PREFETCH: bool>(
            w: [&[f32]; R],
            x: [&[f32]; M],
            ahead: [&[f32]; R],
        ) -> [[f32; M]; R] {
            const LANES: usize = 8;
            let k = common_len(&w, &x, &ahead);
            let full = k / LANES;
            let mut acc = [[_mm256_setzero_ps(); M]; R];
            // Adds the products of the 8 lanes at `off` to `acc` (a macro, not a closure: the
            // intrinsics must be inlined into this function's target features).
            macro_rules! chunk {
                ($off:expr) => {{
                    let off = $off;
                    let mut wv = [_mm256_setzero_ps(); R];
                    for r in 0..R {
                        // SAFETY: off + LANES <= full·LANES <= k, every row's length.
                        wv[r] = unsafe { _mm256_loadu_ps(w[r].as_ptr().add(off)) };
                    }
                    for i in 0..M {
                        // SAFETY: as above.
                        let xv = unsafe { _mm256_loadu_ps(x[i].as_ptr().add(off)) };
                        for r in 0..R {
                            acc[r][i] = _mm256_fmadd_ps(wv[r], xv, acc[r][i]);
                        }
                    }
                }};
            }
            // Two 8-lane chunks per iteration, so that one prefetch per row covers its
            // 64-byte cache line without a branch.
            let mut c = 0;
            while c + 2 <= full {
                let off = c * LANES;
                if PREFETCH {
                    for a in ahead {
                        // SAFETY: off < k, the length of every row.
                        _mm_prefetch::<_MM_HINT_T1>(unsafe { a.as_ptr().add(off) }.cast());
                    }
                }
                chunk!(off);
                chunk!(off + LANES);
                c += 2;
            }
            if c < full {
                chunk!(c * LANES);
            }
            let mut res = [[0f32; M]; R];
            for r in 0..R {
                for i in 0..M {
                    let v = acc[r][i];
                    let pair = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                    let quad = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
                    res[r][i] = _mm_cvtss_f32(_mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1)));
                }
            }
            tails(w, x, full * LANES, &mut res);
            res
        }
    }

    impl Dots for Avx512 {
        const GROUP: usize = 8;

        #[inline]
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn dots<const R: usize, const M: usize, const PREFETCH: bool>(
            w: [&[f32]; R],
            x: [&[f32]; M],
            ahead: [&[f32]; R],
        ) -> [[f32; M]; R] {
            const LANES: usize = 16;
            let k = common_len(&w, &x, &ahead);
            let full = k / LANES;
            let mut acc = [[_mm512_setzero_ps(); M]; R];
            // One 16-lane chunk is one cache line of each row: one prefetch per row.
            for c in 0..full {
                let off = c * LANES;
                if PREFETCH {
                    for a in ahead {
                        // SAFETY: off < k, the length of every row.
                        _mm_prefetch::<_MM_HINT_T1>(unsafe { a.as_ptr().add(off) }.cast());
                    }
                }
                let mut wv = [_mm512_setzero_ps(); R];
                for r in 0..R {
                    // SAFETY: off + LANES <= full·LANES <= k, every row's length (checked).
                    wv[r] = unsafe { _mm512_loadu_ps(w[r].as_ptr().add(off)) };
                }
                for i in 0..M {
                    // SAFETY: as above.
                    let xv = unsafe { _mm512_loadu_ps(x[i].as_ptr().add(off)) };
                    for r in 0..R {
                        acc[r][i] = _mm512_fmadd_ps(wv[r], xv, acc[r][i]);
                    }
                }
            }
            let mut res = [[0f32; M]; R];
            for r in 0..R {
                for i in 0..M {
                    res[r][i] = _mm512_reduce_add_ps(acc[r][i]);
                }
            }
            tails(w, x, full * LANES, &mut res);
            res
        }
    }
}

/// Fills `out: [rows, m]` (transposed) for the weight rows in `w_rows: [rows, k]`.
#[inline(always)]
fn rows_generic<const FMA: bool>(x: &[f32], m: usize, w_rows: &[f32], k: usize, out: &mut [f32]) {
    let rows = w_rows.len() / k;
    let mut r = 0;
    while r + ROW_TILE <= rows {
        let w: [&[f32]; ROW_TILE] = std::array::from_fn(|t| &w_rows[(r + t) * k..(r + t + 1) * k]);
        let mut i = 0;
        while i + 2 <= m {
            let xs = [&x[i * k..(i + 1) * k], &x[(i + 1) * k..(i + 2) * k]];
            let d = dots::<ROW_TILE, 2, FMA>(w, xs);
            for t in 0..ROW_TILE {
                out[(r + t) * m + i] = d[t][0];
                out[(r + t) * m + i + 1] = d[t][1];
            }
            i += 2;
        }
        if i < m {
            let d = dots::<ROW_TILE, 1, FMA>(w, [&x[i * k..(i + 1) * k]]);
            for t in 0..ROW_TILE {
                out[(r + t) * m + i] = d[t][0];
            }
        }
        r += ROW_TILE;
    }
    for r in r..rows {
        let w = [&w_rows[r * k..(r + 1) * k]];
        for i in 0..m {
            out[r * m + i] = dots::<1, 1, FMA>(w, [&x[i * k..(i + 1) * k]])[0][0];
        }
    }
}

/// All `R × M` dot products of `R` weight rows with `M` input rows, in one pass over `k`.
#[inline(always)]
fn dots<const R: usize, const M: usize, const FMA: bool>(
    w: [&[f32]; R],
    x: [&[f32]; M],
) -> [[f32; M]; R] {
    let k = w[0].len();
    let full = k / LANES;
    let mut acc = [[[0f32; LANES]; M]; R];
    for c in 0..full {
        let base = c * LANES;
        // One bounds check per 8-wide chunk; inside, the lengths are known constants.
        let wv: [&[f32]; R] = std::array::from_fn(|r| &w[r][base..base + LANES]);
        let xv: [&[f32]; M] = std::array::from_fn(|i| &x[i][base..base + LANES]);
        for r in 0..R {
            for i in 0..M {
                for l in 0..LANES {
                    acc[r][i][l] = fmadd::<FMA>(wv[r][l], xv[i][l], acc[r][i][l]);
                }
            }
        }
    }
    let mut res = [[0f32; M]; R];
    for r in 0..R {
        for i in 0..M {
            // Pairwise reduction of the lanes keeps the rounding error at O(log) depth.
            let a = acc[r][i];
            let mut s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
            for j in full * LANES..k {
                s = fmadd::<FMA>(w[r][j], x[i][j], s);
            }
            res[r][i] = s;
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn hand_computed_2x3() {
        for isa in Isa::all_supported() {
            let kernel = |x: &[f32], m, w: &[f32], n, k| matmul_xwt(isa, x, m, w, n, k);
            assert_hand_computed_2x3(isa.level().as_str(), &kernel);
        }
    }

    /// Every ISA path against an f64 reference. Shapes: odd m (pair + single path; every
    /// input-group size 1–8 of the AVX-512 path), n not a multiple of the block (3, 4, 8) or
    /// the task, k with a tail (below one vector, 131), an odd number of 8-lane chunks (40),
    /// more inputs than one chunk of them (70). Tolerance: 1e-5·√k, a few ulps of the sums'
    /// magnitude (√k for random signs) — far below any indexing error.
    #[test]
    fn every_isa_path_matches_an_f64_reference() {
        let shapes = [
            (1, 1, 1),
            (1, 37, 19),
            (2, 45, 1040),
            (3, 70, 64),
            (5, 33, 131),
            (7, 41, 40),
            (8, 100, 96),
            (16, 129, 96),
            (70, 25, 24),
        ];
        for isa in Isa::all_supported() {
            let kernel = |x: &[f32], m, w: &[f32], n, k| matmul_xwt(isa, x, m, w, n, k);
            let tolerance = |k: usize| 1e-5 * (k as f64).sqrt();
            assert_matches_reference(isa.level().as_str(), &shapes, tolerance, &kernel);
        }
    }

    /// On inputs whose products and sums are exact, every path gives the same bits.
    #[test]
    fn every_isa_path_agrees_exactly_on_exact_inputs() {
        let (m, n, k) = (3, 40, 72);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
            .collect();
        let mut generic = vec![0f32; n * m];
        rows_generic::<false>(&x, m, &w, k, &mut generic);
        for isa in Isa::all_supported() {
            let fast = matmul_xwt(isa, &x, m, &w, n, k);
            for o in 0..n {
                for i in 0..m {
                    // Inputs are exact multiples of 1/32, so every order is exact.
                    assert_eq!(generic[o * m + i], fast[i * n + o], "{}", isa.level());
                }
            }
        }
    }
}
