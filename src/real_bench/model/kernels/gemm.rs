//! `y = x·Wᵀ` for many rows of `x` (prefill chunks): a register-blocked GEMM over the
//! checkpoint-layout weights.
//!
//! The weights stay as they are loaded (`W: [n, k]` row-major, shared with the small-m decode
//! kernel), and each call packs what its micro-kernel streams: [`PANEL`] output columns of
//! `W` over a block of up to [`KC`] values of `k`, `[kc][PANEL]`, into a per-thread buffer
//! that stays in L2 while every tile of rows meets it; and `x` once per call, as tiles of `MR`
//! rows laid out `[k][MR]` (zero-padded to whole tiles), so that a tile's broadcasts read one
//! sequential stream. With hundreds of rows the packing is a few percent of the arithmetic.
//!
//! **Micro-kernels** (`MR × PANEL` tiles of `y` in registers over one block of `k`): AVX-512
//! `14 × 32` (28 of the 32 vector registers hold accumulators), AVX2 `6 × 32` as two `6 × 16`
//! halves (12 of 16), portable `4 × 32`. Edge tiles (the last rows, a partial panel) are
//! computed whole into a scratch tile and only their valid part is added to `y`.
//!
//! **Summation order.** Every output element is the in-order sum over the blocks of `k` of a
//! sequential sum within the block, whatever the ISA, the tile or the thread split: the AVX2
//! and AVX-512 paths agree bit for bit (both fuse multiply and add), and a row's result does
//! not depend on which other rows share the call.
//!
//! **Loop order.** Rayon tasks own ranges of panels (disjoint columns of `y`); within a task
//! the loop is panel → block of `k` → tile of rows. With `k ≤ KC` a tile's sum stays in
//! registers and `y` is written once, with no read-modify-write of partial sums: an earlier
//! blocking with 128- and 256-wide `k` blocks (the classic L1-sized one) re-read the output
//! tiles from L3 once per block and ran at about candle's GEMM speed, not above it.

use rayon::prelude::*;

use super::{Isa, IsaLevel};

/// Output columns per packed weight panel: two AVX-512 vectors, four AVX2 ones.
pub const PANEL: usize = 32;
/// Values of `k` per block. A packed panel block (`KC × PANEL × 4` bytes, 384 KiB) stays in L2
/// while every tile of rows streams its inputs past it; with `k ≤ KC` (every projection of
/// Qwen3 up to 4B) the sum over `k` stays in registers and each element of `y` is stored once.
pub const KC: usize = 3072;
/// Rayon tasks per thread to aim for: enough for load balance on a noisy host.
const TASKS_PER_THREAD: usize = 4;

/// Computes `y[i][o] = Σ_j x[i][j]·w[o][j]` for `x: [m, k]`, `w: [n, k]` (both row-major) with
/// `isa`'s micro-kernel, returning `y: [m, n]` row-major. Accumulation is in f32. Panics only
/// on inconsistent slice lengths, which callers rule out from tensor shapes.
pub fn matmul_xwt(isa: Isa, x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
    matmul_xwt_blocked(isa, x, m, w, n, k, KC)
}

/// [`matmul_xwt`] with blocks of `kc_max` values of `k` (tests use small blocks to exercise
/// the sums across blocks).
fn matmul_xwt_blocked(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: &[f32],
    n: usize,
    k: usize,
    kc_max: usize,
) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "x is not [m, k]");
    assert_eq!(w.len(), n * k, "w is not [n, k]");
    let mut y = vec![0f32; m * n];
    if m == 0 || n == 0 || k == 0 {
        return y;
    }
    let kernel = MicroKernel::for_isa(isa);
    let mr = kernel.rows;
    let a = pack_rows(x, m, k, mr);
    let panels = n.div_ceil(PANEL);
    let per_task = panels
        .div_ceil(rayon::current_num_threads() * TASKS_PER_THREAD)
        .max(1);
    let out = Out {
        ptr: y.as_mut_ptr(),
        rows: m,
        cols: n,
    };
    (0..panels.div_ceil(per_task))
        .into_par_iter()
        .for_each_init(
            || (vec![0f32; kc_max.min(k) * PANEL], vec![0f32; mr * PANEL]),
            |(b, scratch), task| {
                for p in task * per_task..panels.min((task + 1) * per_task) {
                    let c0 = p * PANEL;
                    let width = PANEL.min(n - c0);
                    for k0 in (0..k).step_by(kc_max) {
                        let kc = kc_max.min(k - k0);
                        let b = &mut b[..kc * PANEL];
                        pack_panel(w, k, c0, width, k0, b);
                        for r0 in (0..m).step_by(mr) {
                            let a_tile = &a[r0 * k + k0 * mr..r0 * k + (k0 + kc) * mr];
                            let rows = mr.min(m - r0);
                            // SAFETY: this task alone owns columns `c0..c0 + width`.
                            unsafe {
                                out.add_tile(
                                    &kernel,
                                    a_tile,
                                    b,
                                    r0,
                                    rows,
                                    c0,
                                    width,
                                    k0 == 0,
                                    scratch,
                                )
                            };
                        }
                    }
                }
            },
        );
    y
}

/// `x: [m, k]` as tiles of `mr` rows, tile `t` at offset `t·mr·k` laid out `[k][mr]`; rows past
/// `m` in the last tile are zero.
fn pack_rows(x: &[f32], m: usize, k: usize, mr: usize) -> Vec<f32> {
    let tiles = m.div_ceil(mr);
    let mut a = vec![0f32; tiles * mr * k];
    a.par_chunks_mut(mr * k).enumerate().for_each(|(t, dst)| {
        for r in 0..mr.min(m - t * mr) {
            let src = &x[(t * mr + r) * k..(t * mr + r + 1) * k];
            for (kk, v) in src.iter().enumerate() {
                dst[kk * mr + r] = *v;
            }
        }
    });
    a
}

/// Packs `w[c0..c0 + width][k0..k0 + kc]` as `[kc][PANEL]` into `b: [kc·PANEL]`, zero past
/// `width`.
fn pack_panel(w: &[f32], k: usize, c0: usize, width: usize, k0: usize, b: &mut [f32]) {
    let kc = b.len() / PANEL;
    if width < PANEL {
        b.fill(0.0);
    }
    for c in 0..width {
        let src = &w[(c0 + c) * k + k0..(c0 + c) * k + k0 + kc];
        for (kk, v) in src.iter().enumerate() {
            b[kk * PANEL + c] = *v;
        }
    }
}

/// A micro-kernel: `c[r][j] (+)= Σ_kk a[kk][r]·b[kk][j]` over an `rows × PANEL` tile, with
/// `a: [kc][rows]` and `b: [kc][PANEL]`; stores when `first`, adds otherwise.
struct MicroKernel {
    rows: usize,
    /// # Safety
    /// `a` and `b` hold `kc·rows` and `kc·PANEL` values; `c` addresses a writable
    /// `rows × PANEL` tile of row stride `ldc`; the CPU supports the kernel's features.
    tile: unsafe fn(a: *const f32, b: *const f32, kc: usize, c: *mut f32, ldc: usize, first: bool),
}

impl MicroKernel {
    fn for_isa(isa: Isa) -> Self {
        match isa.level() {
            #[cfg(target_arch = "x86_64")]
            IsaLevel::Avx512 => Self {
                rows: avx512::ROWS,
                tile: avx512::tile,
            },
            #[cfg(target_arch = "x86_64")]
            IsaLevel::Avx2 => Self {
                rows: avx2::ROWS,
                tile: avx2::tile,
            },
            _ => Self {
                rows: portable::ROWS,
                tile: portable::tile,
            },
        }
    }
}

/// `y: [rows, cols]`, written by tasks that own disjoint column ranges.
struct Out {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
}

// SAFETY: the pointer is only written through `add_tile`, whose callers own disjoint columns.
unsafe impl Sync for Out {}

impl Out {
    /// Adds (or with `first`, stores) the tile product of `a` and `b` into rows
    /// `r0..r0 + rows`, columns `c0..c0 + width` of `y`. A whole `kernel.rows × PANEL` tile
    /// goes straight to `y`; an edge tile goes through `scratch`.
    ///
    /// # Safety
    /// No other thread may access these columns during the call.
    #[allow(clippy::too_many_arguments)]
    unsafe fn add_tile(
        &self,
        kernel: &MicroKernel,
        a: &[f32],
        b: &[f32],
        r0: usize,
        rows: usize,
        c0: usize,
        width: usize,
        first: bool,
        scratch: &mut [f32],
    ) {
        let kc = b.len() / PANEL;
        assert!(
            a.len() == kc * kernel.rows
                && scratch.len() == kernel.rows * PANEL
                && r0 + rows <= self.rows
                && c0 + width <= self.cols,
            "tile outside its operands"
        );
        if rows == kernel.rows && width == PANEL {
            // SAFETY: the tile lies inside `y` (asserted); `Isa` proved the features.
            unsafe {
                (kernel.tile)(
                    a.as_ptr(),
                    b.as_ptr(),
                    kc,
                    self.ptr.add(r0 * self.cols + c0),
                    self.cols,
                    first,
                )
            };
            return;
        }
        // SAFETY: `scratch` is a whole tile of stride PANEL; `Isa` proved the features.
        unsafe {
            (kernel.tile)(
                a.as_ptr(),
                b.as_ptr(),
                kc,
                scratch.as_mut_ptr(),
                PANEL,
                true,
            )
        };
        for r in 0..rows {
            // SAFETY: row `r0 + r`, columns `c0..c0 + width` lie inside `y` (asserted) and
            // belong to this caller.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(self.ptr.add((r0 + r) * self.cols + c0), width)
            };
            for (d, s) in dst.iter_mut().zip(&scratch[r * PANEL..]) {
                *d = if first { *s } else { *d + s };
            }
        }
    }
}

mod portable {
    use super::PANEL;

    pub(super) const ROWS: usize = 4;

    /// See [`super::MicroKernel`].
    pub(super) unsafe fn tile(
        a: *const f32,
        b: *const f32,
        kc: usize,
        c: *mut f32,
        ldc: usize,
        first: bool,
    ) {
        // SAFETY: the caller guarantees the operand lengths.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(a, kc * ROWS),
                std::slice::from_raw_parts(b, kc * PANEL),
            )
        };
        let mut acc = [[0f32; PANEL]; ROWS];
        for (ak, bk) in a.chunks_exact(ROWS).zip(b.chunks_exact(PANEL)) {
            for (acc_r, av) in acc.iter_mut().zip(ak) {
                for (s, bv) in acc_r.iter_mut().zip(bk) {
                    *s += av * bv;
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            // SAFETY: the caller guarantees a writable tile of stride `ldc`.
            let out = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), PANEL) };
            for (o, v) in out.iter_mut().zip(acc_r) {
                *o = if first { *v } else { *o + v };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::PANEL;

    /// 14 rows × 2 vectors = 28 accumulators; with the panel row's 2 vectors and a broadcast,
    /// 31 of the 32 registers.
    pub(super) const ROWS: usize = 14;

    /// See [`super::MicroKernel`]; needs AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile(
        a: *const f32,
        b: *const f32,
        kc: usize,
        c: *mut f32,
        ldc: usize,
        first: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
        for kk in 0..kc {
            // SAFETY (all pointer arithmetic): kk < kc, `b` is `[kc][32]`, `a` is `[kc][14]`,
            // `c` a `14 × 32` tile of stride `ldc` (the caller's contract).
            let b0 = unsafe { _mm512_loadu_ps(b.add(kk * PANEL)) };
            let b1 = unsafe { _mm512_loadu_ps(b.add(kk * PANEL + 16)) };
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(unsafe { *a.add(kk * ROWS + r) });
                acc_r[0] = _mm512_fmadd_ps(av, b0, acc_r[0]);
                acc_r[1] = _mm512_fmadd_ps(av, b1, acc_r[1]);
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            let out = unsafe { c.add(r * ldc) };
            let (mut v0, mut v1) = (acc_r[0], acc_r[1]);
            if !first {
                v0 = _mm512_add_ps(unsafe { _mm512_loadu_ps(out) }, v0);
                v1 = _mm512_add_ps(unsafe { _mm512_loadu_ps(out.add(16)) }, v1);
            }
            unsafe {
                _mm512_storeu_ps(out, v0);
                _mm512_storeu_ps(out.add(16), v1);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::PANEL;

    /// 6 rows × 2 vectors = 12 accumulators per half panel; with 2 panel vectors and a
    /// broadcast, 15 of the 16 registers.
    pub(super) const ROWS: usize = 6;

    /// See [`super::MicroKernel`]; needs AVX2 and FMA. The 32 columns are two passes of 16.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(
        a: *const f32,
        b: *const f32,
        kc: usize,
        c: *mut f32,
        ldc: usize,
        first: bool,
    ) {
        for half in [0, 16] {
            let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
            for kk in 0..kc {
                // SAFETY (all pointer arithmetic): kk < kc, `b` is `[kc][32]`, `a` is
                // `[kc][6]`, `c` a `6 × 32` tile of stride `ldc` (the caller's contract).
                let b0 = unsafe { _mm256_loadu_ps(b.add(kk * PANEL + half)) };
                let b1 = unsafe { _mm256_loadu_ps(b.add(kk * PANEL + half + 8)) };
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let av = _mm256_set1_ps(unsafe { *a.add(kk * ROWS + r) });
                    acc_r[0] = _mm256_fmadd_ps(av, b0, acc_r[0]);
                    acc_r[1] = _mm256_fmadd_ps(av, b1, acc_r[1]);
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                let out = unsafe { c.add(r * ldc + half) };
                let (mut v0, mut v1) = (acc_r[0], acc_r[1]);
                if !first {
                    v0 = _mm256_add_ps(unsafe { _mm256_loadu_ps(out) }, v0);
                    v1 = _mm256_add_ps(unsafe { _mm256_loadu_ps(out.add(8)) }, v1);
                }
                unsafe {
                    _mm256_storeu_ps(out, v0);
                    _mm256_storeu_ps(out.add(8), v1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn hand_computed_2x3() {
        for isa in Isa::all_supported() {
            let kernel = |x: &[f32], m, w: &[f32], n, k| matmul_xwt(isa, x, m, w, n, k);
            assert_hand_computed_2x3(isa.level().as_str(), &kernel);
        }
    }

    /// Every ISA path against an f64 reference, over shapes with partial tiles of rows (m not
    /// a multiple of 4, 6 or 14; one row; many tiles), partial panels (n mod 32 ≠ 0, n < 16)
    /// and blocks of `k` (with blocks of 64: below, at and above one block, a partial last one).
    /// Tolerance: a sum of `k` products of values in [-1, 1] accumulated in f32 stays within
    /// about `k·ε` of the exact one per unit of magnitude; 2e-6·k leaves room for the worst
    /// element of these sizes.
    #[test]
    fn every_isa_path_matches_an_f64_reference() {
        let shapes = [
            (1, 1, 1),
            (1, 37, 19),
            (3, 70, 64),
            (5, 33, 257),
            (14, 32, 300),
            (15, 100, 40),
            (33, 45, 520),
            (70, 8, 24),
            (1100, 40, 33),
        ];
        for isa in Isa::all_supported() {
            for kc_max in [KC, 64] {
                let kernel =
                    |x: &[f32], m, w: &[f32], n, k| matmul_xwt_blocked(isa, x, m, w, n, k, kc_max);
                let what = format!("{} blocks of {kc_max}", isa.level());
                assert_matches_reference(&what, &shapes, |k| 2e-6 * k as f64, &kernel);
            }
        }
    }

    /// The summation order is the same on every SIMD path and for every `m`: AVX2 and AVX-512
    /// agree bit for bit, and a row alone gives exactly its row of a many-row call (`k` above
    /// `KC`, so the sums span blocks).
    #[test]
    fn results_do_not_depend_on_the_isa_or_the_other_rows() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (m, n, k) = (45, 70, KC + 100);
        let x = random(m * k, &mut rng);
        let w = random(n * k, &mut rng);
        let simd: Vec<Isa> = Isa::all_supported()
            .into_iter()
            .filter(|i| i.level() != IsaLevel::Scalar)
            .collect();
        for isa in Isa::all_supported() {
            let all = matmul_xwt(isa, &x, m, &w, n, k);
            for i in [0, 13, 44] {
                let alone = matmul_xwt(isa, &x[i * k..(i + 1) * k], 1, &w, n, k);
                assert_eq!(alone, all[i * n..(i + 1) * n], "{} row {i}", isa.level());
            }
            if let Some(first_simd) = simd.first().filter(|_| isa.level() != IsaLevel::Scalar) {
                assert_eq!(
                    all,
                    matmul_xwt(*first_simd, &x, m, &w, n, k),
                    "{}",
                    isa.level()
                );
            }
        }
    }
}
