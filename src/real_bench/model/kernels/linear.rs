//! `y = x·Wᵀ` for a few rows of `x`: the decode-time projection.
//!
//! With one to a few dozen input rows a projection is bound by streaming the weights from
//! memory, and a general GEMM (which packs panels of both operands) wastes bandwidth and
//! parallelism on it. Here each weight row is read once and dotted with all `m` inputs while
//! it is in cache; rayon splits the output rows. `W` stays in its checkpoint layout
//! (`[out_features, in_features]`, row-major), which is exactly the layout this wants.

use rayon::prelude::*;

use super::{fmadd, has_avx2_fma};

/// Bounds on the output rows per rayon task: at least enough to amortise scheduling, and few
/// enough that a 1024-row projection still splits into many tasks for load balance. Between
/// the bounds a task count of about 32 per thread is the target, so that the 151,936-row LM
/// head is not cut into ~10,000 tasks whose overhead shows up in its time.
const MIN_ROWS_PER_TASK: usize = 16;
const MAX_ROWS_PER_TASK: usize = 1024;
const TASKS_PER_THREAD: usize = 32;
/// Weight rows processed together for one or two inputs: 4 rows × 2 inputs = 8 independent
/// 8-lane accumulators, which fills the FMA pipeline without spilling the 16 vector registers.
const ROW_TILE: usize = 4;
const LANES: usize = 8;
/// Weight bytes one pass over the inputs works on: small enough to stay in L2 (512 KiB per
/// core on the reference host) while every group of inputs is dotted with it, so that `m`
/// inputs cost one streaming read of the weights from DRAM instead of `m / 4`.
const CACHE_TILE_BYTES: usize = 192 * 1024;

/// Weight rows per cache tile for rows of `k` f32 elements (a multiple of [`ROW_TILE`]).
fn cache_tile_rows(k: usize) -> usize {
    (CACHE_TILE_BYTES / (k * std::mem::size_of::<f32>()))
        .max(ROW_TILE)
        .next_multiple_of(ROW_TILE)
}

/// Computes `y[i][o] = Σ_k x[i][k]·w[o][k]` for `x: [m, k]`, `w: [n, k]` (both row-major),
/// returning `y: [m, n]` row-major. Accumulation is in f32. Panics only on inconsistent slice
/// lengths, which callers rule out from tensor shapes.
pub fn matmul_xwt_f32(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "x is not [m, k]");
    assert_eq!(w.len(), n * k, "w is not [n, k]");
    if m == 0 || n == 0 {
        return Vec::new();
    }
    let mut y = vec![0f32; m * n];
    let use_simd = has_avx2_fma();
    let rows_per_task = (n / (rayon::current_num_threads() * TASKS_PER_THREAD))
        .clamp(MIN_ROWS_PER_TASK, MAX_ROWS_PER_TASK)
        .next_multiple_of(ROW_TILE);
    let tile = cache_tile_rows(k);
    let y_cols = DisjointColumns::new(&mut y, n);
    (0..n.div_ceil(rows_per_task))
        .into_par_iter()
        .for_each_init(Vec::new, |out, task| {
            // The kernel fills a transposed `[rows, m]` block (one weight row's outputs
            // together); this task's columns of `y` get it while it is still in cache.
            let task_end = n.min((task + 1) * rows_per_task);
            for first in (task * rows_per_task..task_end).step_by(tile) {
                let rows = tile.min(task_end - first);
                let w_rows = &w[first * k..(first + rows) * k];
                out.clear();
                out.resize(rows * m, 0.0);
                #[cfg(target_arch = "x86_64")]
                if use_simd {
                    // SAFETY: `has_avx2_fma()` confirmed the CPU supports the target features
                    // `rows_avx2_fma` is compiled with; it has no other safety requirement.
                    unsafe { rows_avx2_fma(x, m, w_rows, k, out) };
                } else {
                    rows_generic::<false>(x, m, w_rows, k, out);
                }
                #[cfg(not(target_arch = "x86_64"))]
                rows_generic::<false>(x, m, w_rows, k, out);
                let _ = use_simd;
                // SAFETY: tasks cover disjoint ranges of weight rows, hence of columns.
                unsafe { y_cols.write_block(first, rows, out) };
            }
        });
    y
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

#[cfg(target_arch = "x86_64")]
use avx2::rows as rows_avx2_fma;

/// The AVX2+FMA instantiation, with explicit intrinsics: LLVM does not reliably keep a
/// `R × M` tile of accumulators in registers when left to auto-vectorise.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{LANES, ROW_TILE};

    /// Same contract as [`super::rows_generic`].
    ///
    /// Inputs are taken in groups of up to 4 (the last of 1–3); each group makes one pass
    /// over this cache tile of weight rows (the first from DRAM, later ones from L2), so any
    /// number of inputs costs a single streaming read of the weights. Within a group, the
    /// tile shape keeps `R × M ≤ 12` accumulators plus the `R` weight vectors and one input
    /// vector in the 16 vector registers (3 × 4 measured 6 % faster than 2 × 4 at 8 inputs).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows(x: &[f32], m: usize, w_rows: &[f32], k: usize, out: &mut [f32]) {
        let mut i0 = 0;
        while i0 < m {
            let left = m - i0;
            if left >= 4 {
                group::<3, 4>(x, m, w_rows, k, out, i0);
                i0 += 4;
            } else if left == 3 {
                // One pass for three inputs rather than two (2 + 1): every pass re-reads the
                // tile, so the time grows with ⌈m / 4⌉, smoothly in m. Three weight rows at a
                // time, not two: a pass that streams from DRAM needs the parallel streams
                // (8 % faster in a paired run than 2 × 3).
                group::<3, 3>(x, m, w_rows, k, out, i0);
                i0 += 3;
            } else if left >= 2 {
                group::<ROW_TILE, 2>(x, m, w_rows, k, out, i0);
                i0 += 2;
            } else {
                group::<ROW_TILE, 1>(x, m, w_rows, k, out, i0);
                i0 += 1;
            }
        }
    }

    /// Inputs `i0..i0 + M` against every row of `w_rows`, in tiles of `R` rows.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn group<const R: usize, const M: usize>(
        x: &[f32],
        m: usize,
        w_rows: &[f32],
        k: usize,
        out: &mut [f32],
        i0: usize,
    ) {
        let rows = w_rows.len() / k;
        let inputs: [&[f32]; M] = core::array::from_fn(|j| &x[(i0 + j) * k..(i0 + j + 1) * k]);
        let row = |r: usize| &w_rows[r * k..(r + 1) * k];
        let mut r = 0;
        while r + R <= rows {
            let w: [&[f32]; R] = core::array::from_fn(|t| row(r + t));
            // SAFETY: the caller of `rows` guaranteed AVX2+FMA.
            let d = unsafe { dots::<R, M>(w, inputs) };
            for t in 0..R {
                for j in 0..M {
                    out[(r + t) * m + i0 + j] = d[t][j];
                }
            }
            r += R;
        }
        for r in r..rows {
            // SAFETY: as above.
            let d = unsafe { dots::<1, M>([row(r)], inputs) };
            for j in 0..M {
                out[r * m + i0 + j] = d[0][j];
            }
        }
    }

    /// `R × M` dot products in one pass over `k`, `R·M` accumulators in registers.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn dots<const R: usize, const M: usize>(
        w: [&[f32]; R],
        x: [&[f32]; M],
    ) -> [[f32; M]; R] {
        let k = x[0].len();
        for s in w.iter() {
            assert_eq!(s.len(), k, "weight row and input differ in length");
        }
        let full = k / LANES;
        let mut acc = [[_mm256_setzero_ps(); M]; R];
        for c in 0..full {
            let off = c * LANES;
            let mut wv = [_mm256_setzero_ps(); R];
            for r in 0..R {
                // SAFETY: off + LANES <= full·LANES <= k = len of every row (asserted above).
                wv[r] = unsafe { _mm256_loadu_ps(w[r].as_ptr().add(off)) };
            }
            for i in 0..M {
                // SAFETY: as above, for the input rows.
                let xv = unsafe { _mm256_loadu_ps(x[i].as_ptr().add(off)) };
                for r in 0..R {
                    acc[r][i] = _mm256_fmadd_ps(wv[r], xv, acc[r][i]);
                }
            }
        }
        let mut res = [[0f32; M]; R];
        for r in 0..R {
            for i in 0..M {
                let mut s = hsum(acc[r][i]);
                for j in full * LANES..k {
                    s = w[r][j].mul_add(x[i][j], s);
                }
                res[r][i] = s;
            }
        }
        res
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn hsum(v: __m256) -> f32 {
        let pair = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let quad = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
        _mm_cvtss_f32(_mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1)))
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
    use super::*;
    use rand::{Rng, SeedableRng};

    fn naive(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for i in 0..m {
            for o in 0..n {
                y[i * n + o] = (0..k)
                    .map(|j| x[i * k + j] as f64 * w[o * k + j] as f64)
                    .sum();
            }
        }
        y
    }

    #[test]
    fn hand_computed_2x3() {
        // x = [[1,2],[3,4]], w = [[1,0],[0,1],[1,1]] → y = [[1,2,3],[3,4,7]].
        let y = matmul_xwt_f32(&[1., 2., 3., 4.], 2, &[1., 0., 0., 1., 1., 1.], 3, 2);
        assert_eq!(y, vec![1., 2., 3., 3., 4., 7.]);
    }

    #[test]
    fn matches_f64_reference_over_awkward_shapes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // Odd m (pair + single path), n not a multiple of the tile or task, k with a tail.
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 37, 19),
            (3, 70, 64),
            (5, 33, 131),
            (7, 41, 40),
            (16, 129, 96),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let y = matmul_xwt_f32(&x, m, &w, n, k);
            let want = naive(&x, m, &w, n, k);
            for (a, b) in y.iter().zip(&want) {
                assert!(
                    (*a as f64 - b).abs() <= 1e-5 * (k as f64).sqrt(),
                    "{m}x{n}x{k}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn simd_and_generic_paths_agree() {
        let (m, n, k) = (3, 40, 72);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
            .collect();
        let mut generic = vec![0f32; n * m];
        rows_generic::<false>(&x, m, &w, k, &mut generic);
        let fast = matmul_xwt_f32(&x, m, &w, n, k);
        for o in 0..n {
            for i in 0..m {
                // Inputs are exact multiples of 1/32, so both orders are exact.
                assert_eq!(generic[o * m + i], fast[i * n + o]);
            }
        }
    }
}
