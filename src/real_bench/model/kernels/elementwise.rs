//! The per-element and per-row ops between the projections (RMSNorm, SiLU·up) for f32 on the
//! CPU.
//!
//! Each costs microseconds per token, but candle runs them as separate unary/binary passes
//! with an allocation each, scalar `exp`, and its own worker pool next to rayon's: at a batch
//! of 8 decodes they took ~10 ms of a ~200 ms step, five times their single-sequence time.
//! Here each is one pass, split over rayon's threads when there is enough work, with an AVX2
//! `exp`.

use rayon::prelude::*;

use super::has_avx2_fma;

/// Elements below which one thread does the whole op: handing work to rayon's sleeping
/// workers costs tens of microseconds, which is what one thread needs for ~100k elements.
const PARALLEL_MIN_ELEMENTS: usize = 128 * 1024;

/// RMSNorm of every `weight.len()`-wide segment of `x` (a row, or one head of a row):
/// `y = x / sqrt(mean(x²) + eps) · weight`, accumulated in f32 like candle's `rms_norm`.
/// Panics if `x.len()` is not a multiple of `weight.len()`; callers pass tensor shapes.
pub fn rms_norm_f32(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let width = weight.len();
    assert!(
        width > 0 && x.len().is_multiple_of(width),
        "x is not [rows, weight.len()]"
    );
    let mut y = vec![0f32; x.len()];
    let norm = |(src, dst): (&[f32], &mut [f32])| {
        for (s, d) in src.chunks_exact(width).zip(dst.chunks_exact_mut(width)) {
            let sum2 = sum_of_squares(s);
            let inv = 1.0 / (sum2 / width as f32 + eps).sqrt();
            for ((o, v), w) in d.iter_mut().zip(s).zip(weight) {
                *o = v * inv * w;
            }
        }
    };
    if x.len() < PARALLEL_MIN_ELEMENTS {
        norm((x, &mut y));
    } else {
        let rows_per_task = (PARALLEL_MIN_ELEMENTS / 8 / width).max(1) * width;
        x.par_chunks(rows_per_task)
            .zip(y.par_chunks_mut(rows_per_task))
            .for_each(norm);
    }
    y
}

/// `Σ v²` in 8 interleaved partial sums: a single running sum is a chain of dependent adds
/// that the compiler may not reorder, and it made the per-head norms of a prefill chunk
/// (rows of 128) several times slower than the memory traffic.
#[inline]
fn sum_of_squares(v: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|x| x * x).sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x * x;
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Rotary embedding of `x: [rows, heads·head_dim]` (heads side by side in a row), with each
/// row's angles `cos, sin: [rows, head_dim / 2]`: the rotate-half form, dimension `i` paired
/// with `i + head_dim / 2`. The products and sums are those of candle's `rope_thd`, in the same
/// order, so the result is bit for bit the same; this is one parallel pass instead of candle's
/// separate layout and copy passes. Panics on inconsistent lengths.
pub fn rope_f32(x: &[f32], head_dim: usize, cos: &[f32], sin: &[f32]) -> Vec<f32> {
    let half = head_dim / 2;
    assert!(
        half > 0
            && head_dim.is_multiple_of(2)
            && cos.len() == sin.len()
            && cos.len().is_multiple_of(half),
        "cos and sin are not [rows, head_dim / 2]"
    );
    let rows = cos.len() / half;
    assert!(
        rows > 0 && x.len().is_multiple_of(rows) && (x.len() / rows).is_multiple_of(head_dim),
        "x is not [rows, heads · head_dim]"
    );
    let width = x.len() / rows;
    let mut y = vec![0f32; x.len()];
    let rotate = |(t, (src, dst)): (usize, (&[f32], &mut [f32]))| {
        let (c, s) = (
            &cos[t * half..(t + 1) * half],
            &sin[t * half..(t + 1) * half],
        );
        for (xh, yh) in src
            .chunks_exact(head_dim)
            .zip(dst.chunks_exact_mut(head_dim))
        {
            let (x1, x2) = xh.split_at(half);
            let (y1, y2) = yh.split_at_mut(half);
            for i in 0..half {
                y1[i] = x1[i] * c[i] - x2[i] * s[i];
                y2[i] = x1[i] * s[i] + x2[i] * c[i];
            }
        }
    };
    if x.len() < PARALLEL_MIN_ELEMENTS {
        x.chunks_exact(width)
            .zip(y.chunks_exact_mut(width))
            .enumerate()
            .for_each(rotate);
    } else {
        x.par_chunks_exact(width)
            .zip(y.par_chunks_exact_mut(width))
            .enumerate()
            .for_each(rotate);
    }
    y
}

/// `a + b` element-wise (the residual connection): candle's binary ops run on one thread.
/// Panics on unequal lengths.
pub fn add_f32(a: &[f32], b: &[f32]) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "the summands differ in length");
    let mut y = vec![0f32; a.len()];
    let add = |((a, b), y): ((&[f32], &[f32]), &mut [f32])| {
        for ((y, a), b) in y.iter_mut().zip(a).zip(b) {
            *y = a + b;
        }
    };
    if a.len() < PARALLEL_MIN_ELEMENTS {
        add(((a, b), &mut y));
    } else {
        let chunk = PARALLEL_MIN_ELEMENTS / 8;
        a.par_chunks(chunk)
            .zip(b.par_chunks(chunk))
            .zip(y.par_chunks_mut(chunk))
            .for_each(add);
    }
    y
}

/// `silu(gate) · up` element-wise, `silu(g) = g / (1 + e^-g)`. Panics on unequal lengths.
pub fn silu_mul_f32(gate: &[f32], up: &[f32]) -> Vec<f32> {
    assert_eq!(gate.len(), up.len(), "gate and up differ in length");
    let mut y = vec![0f32; gate.len()];
    let simd = has_avx2_fma();
    let act = |((g, u), o): ((&[f32], &[f32]), &mut [f32])| {
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `has_avx2_fma()` confirmed the target features.
            return unsafe { avx2::silu_mul(g, u, o) };
        }
        let _ = simd;
        silu_mul_portable(g, u, o)
    };
    if gate.len() < PARALLEL_MIN_ELEMENTS {
        act(((gate, up), &mut y));
    } else {
        let chunk = PARALLEL_MIN_ELEMENTS / 8;
        gate.par_chunks(chunk)
            .zip(up.par_chunks(chunk))
            .zip(y.par_chunks_mut(chunk))
            .for_each(act);
    }
    y
}

/// Softmax numerators in place: `s[i] = e^(s[i] - max(s))`; returns their sum (≥ 1 for a
/// non-empty slice). Subtracting the maximum keeps `e^x` from overflowing.
pub(crate) fn exp_minus_max_in_place(scores: &mut [f32]) -> f32 {
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, s| m.max(*s));
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: `has_avx2_fma()` confirmed the target features.
        return unsafe { avx2::exp_minus_max(scores, max) };
    }
    exp_minus_max_portable(scores, max)
}

fn exp_minus_max_portable(scores: &mut [f32], max: f32) -> f32 {
    let mut sum = 0f32;
    for s in scores {
        *s = (*s - max).exp();
        sum += *s;
    }
    sum
}

fn silu_mul_portable(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let n = gate.len().min(up.len()).min(out.len());
        let one = _mm256_set1_ps(1.0);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n, the length of all three slices.
            let g = _mm256_loadu_ps(gate.as_ptr().add(i));
            let u = _mm256_loadu_ps(up.as_ptr().add(i));
            let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), g));
            let s = _mm256_div_ps(g, _mm256_add_ps(one, e));
            _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_mul_ps(s, u));
            i += 8;
        }
        super::silu_mul_portable(&gate[i..n], &up[i..n], &mut out[i..n]);
    }

    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_minus_max(scores: &mut [f32], max: f32) -> f32 {
        let n = scores.len();
        let m = _mm256_set1_ps(max);
        let mut sum = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n = scores.len().
            let p = scores.as_mut_ptr().add(i);
            let e = exp(_mm256_sub_ps(_mm256_loadu_ps(p), m));
            _mm256_storeu_ps(p, e);
            sum = _mm256_add_ps(sum, e);
            i += 8;
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
        lanes.iter().sum::<f32>() + super::exp_minus_max_portable(&mut scores[i..], max)
    }

    /// `e^x` per lane, within 2 ulp of the exact value on [-87.3, 88.3]; outside, the value
    /// at the nearer bound (what `silu` needs: `g / (1 + e^-g)` is then `g` or ~0). Cody–Waite
    /// range reduction `x = k·ln2 + r`, a degree-7 Taylor polynomial for `e^r` on
    /// |r| ≤ ln2/2 (remainder < 6e-9), then `2^k` built in the exponent bits.
    #[target_feature(enable = "avx2,fma")]
    fn exp(x: __m256) -> __m256 {
        let x = _mm256_max_ps(
            _mm256_min_ps(x, _mm256_set1_ps(88.3)),
            _mm256_set1_ps(-87.3),
        );
        let k = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        // ln 2 split in a part exact in f32 and the rest, so `r` loses no bits.
        let r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693_145_75), x);
        let r = _mm256_fnmadd_ps(k, _mm256_set1_ps(1.428_606_8e-6), r);
        // Taylor coefficients 1/7! … 1/2!, then 1 + r + r²·p(r).
        let mut p = _mm256_set1_ps(1.0 / 5040.0);
        for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let r2 = _mm256_mul_ps(r, r);
        let er = _mm256_add_ps(_mm256_fmadd_ps(r2, p, r), _mm256_set1_ps(1.0));
        // 2^k: k + 127 in the exponent field (k ∈ [-126, 127] after the clamp).
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(k),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(er, _mm256_castsi256_ps(bits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_matches_the_definition_per_segment() {
        // Two segments of width 2: [3, 4] has mean square 12.5, [0, 2] has 2.
        let y = rms_norm_f32(&[3.0, 4.0, 0.0, 2.0], &[1.0, 2.0], 0.0);
        let (a, b) = (12.5f32.sqrt(), 2f32.sqrt());
        let want = [3.0 / a, 8.0 / a, 0.0, 4.0 / b];
        for (got, want) in y.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{y:?}");
        }
    }

    /// Bit for bit candle's `rope_thd` (the op it replaces), on both the serial and the
    /// parallel path.
    #[test]
    fn rope_equals_candles_rope_thd() {
        use candle_core::{Device, Tensor};
        let (heads, hd) = (3, 16);
        for rows in [5, PARALLEL_MIN_ELEMENTS / (heads * hd) + 7] {
            let x: Vec<f32> = (0..rows * heads * hd)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let cos: Vec<f32> = (0..rows * hd / 2)
                .map(|i| (i as f32 * 0.37).cos())
                .collect();
            let sin: Vec<f32> = (0..rows * hd / 2)
                .map(|i| (i as f32 * 0.37).sin())
                .collect();
            let dev = Device::Cpu;
            let t = |v: &[f32], shape: &[usize]| Tensor::from_slice(v, shape, &dev).unwrap();
            let want = candle_nn::rotary_emb::rope_thd(
                &t(&x, &[1, rows, heads, hd]),
                &t(&cos, &[rows, hd / 2]),
                &t(&sin, &[rows, hd / 2]),
            )
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
            assert_eq!(rope_f32(&x, hd, &cos, &sin), want, "{rows} rows");
        }
    }

    #[test]
    fn add_is_elementwise_on_the_serial_and_the_parallel_path() {
        for len in [5, 3 * PARALLEL_MIN_ELEMENTS + 3] {
            let a: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let b: Vec<f32> = (0..len).map(|i| 0.5 - (i % 7) as f32).collect();
            let y = add_f32(&a, &b);
            assert!(
                y.iter().enumerate().all(|(i, v)| *v == a[i] + b[i]),
                "{len}"
            );
        }
    }

    #[test]
    fn rms_norm_parallel_path_equals_serial_rows() {
        let width = 128;
        let x: Vec<f32> = (0..PARALLEL_MIN_ELEMENTS * 3 + width)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let w: Vec<f32> = (0..width).map(|i| 0.5 + i as f32 / 256.0).collect();
        let y = rms_norm_f32(&x, &w, 1e-6);
        for (row, got) in x.chunks(width).zip(y.chunks(width)) {
            assert_eq!(got, rms_norm_f32(row, &w, 1e-6).as_slice());
        }
    }

    #[test]
    fn exp_minus_max_matches_f64_softmax_numerators() {
        // 21 values: two full AVX2 chunks plus a scalar tail, spanning e^0 down to underflow.
        let mut s: Vec<f32> = (0..21).map(|i| 3.0 - 4.5 * i as f32).collect();
        s.swap(0, 13);
        let orig = s.clone();
        let sum = exp_minus_max_in_place(&mut s);
        let want: Vec<f64> = orig.iter().map(|v| (*v as f64 - 3.0).exp()).collect();
        for (got, w) in s.iter().zip(&want) {
            assert!((*got as f64 - w).abs() <= 2e-7 * w + 1e-37, "{got} vs {w}");
        }
        let want_sum: f64 = want.iter().sum();
        assert!((sum as f64 - want_sum).abs() <= 1e-6 * want_sum);
    }

    #[test]
    fn silu_mul_matches_f64_over_the_whole_range() {
        // Lengths with a scalar tail; gates from deep negative (e^-g overflows to inf, silu →
        // -0) to large positive (silu → g), including 0 and the clamp bounds.
        let mut gate: Vec<f32> = (0..PARALLEL_MIN_ELEMENTS + 13)
            .map(|i| (i as f32 / PARALLEL_MIN_ELEMENTS as f32 - 0.5) * 220.0)
            .collect();
        gate.extend([0.0, -87.3, 88.3, -1e-3, 1e-3, 20.0, -20.0]);
        let up: Vec<f32> = (0..gate.len()).map(|i| 1.0 + (i % 7) as f32).collect();
        let y = silu_mul_f32(&gate, &up);
        for ((g, u), got) in gate.iter().zip(&up).zip(&y) {
            let (g, u) = (*g as f64, *u as f64);
            let want = g / (1.0 + (-g).exp()) * u;
            // A few roundings (exp, add, divide, multiply); below g ≈ -87 the result is ~0.
            let tol = 8.0 * f32::EPSILON as f64 * want.abs() + 1e-30;
            assert!(
                (*got as f64 - want).abs() <= tol,
                "silu({g}) * {u}: {got} vs {want}"
            );
        }
    }
}
