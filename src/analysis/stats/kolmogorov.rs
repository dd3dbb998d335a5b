//! Null distributions of Kolmogorov–Smirnov statistics.
//!
//! Two families are needed to reproduce `scipy.stats.ks_2samp(a, b)` (two-sided,
//! `method='auto'`):
//!
//! * the **exact two-sample** distribution of D_{m,n}, counted as lattice paths
//!   (Hodges 1958), used when both samples have at most [`MAX_EXACT_N`] values;
//! * the **one-sample** two-sided distribution of D_n (scipy's `kstwo`), evaluated at the
//!   effective size round(m·n/(m+n)) when the samples are larger. Its value is computed
//!   the way Simard & L'Ecuyer (2011, "Computing the Two-Sided Kolmogorov-Smirnov
//!   Distribution", J. Stat. Softw. 39(11)) recommend, which is also what scipy does: a
//!   closed form near the ends of the support (Ruben & Gambino 1982), Durbin's matrix
//!   method in the Marsaglia–Tsang–Wang formulation for small n·d², Pomeranz's recursion
//!   for moderate n·d² and n ≤ 140, the Pelz–Good expansion for large n, and twice the
//!   one-sided Smirnov tail (Birnbaum & Tingey 1951) where the two one-sided events
//!   cannot both happen or the overlap is negligible.
//!
//! All functions here take validated arguments (the public wrappers in `stats` check them)
//! and return probabilities clipped to [0, 1].

use std::f64::consts::PI;

/// Both samples at most this large ⇒ exact p-value (scipy's `MAX_AUTO_N`).
pub(super) const MAX_EXACT_N: usize = 10_000;

/// Below this, `exp` underflows to zero (scipy's `_MIN_LOG` in `_ksstats.py`).
const MIN_LOG: f64 = -708.0;

/// `ln(f64::MIN_POSITIVE)`: the one-sided tail is zero in double precision below this.
const MIN_EXP_ARG: f64 = -708.396_418_532_264_1;

/// Largest n for which the exact one-sided Smirnov sum is evaluated; above it the
/// tail uses the asymptotic `exp(-(6nx+1)²/(18n))` (as cephes does).
const SMIRNOV_MAX_EXACT_N: u64 = 1_000_000;

fn clip_prob(p: f64) -> f64 {
    p.clamp(0.0, 1.0)
}

/// `v · 2^e` without intermediate overflow or underflow of `2^e` itself.
fn scale_by_pow2(mut v: f64, mut e: i64) -> f64 {
    const STEP: i64 = 512;
    let up = 2f64.powi(STEP as i32);
    let down = 2f64.powi(-STEP as i32);
    while e > STEP {
        v *= up;
        e -= STEP;
    }
    while e < -STEP {
        v *= down;
        e += STEP;
    }
    v * 2f64.powi(e as i32)
}

pub(super) fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

// ---------------------------------------------------------------------------------------
// Exact two-sample distribution
// ---------------------------------------------------------------------------------------

/// P(D_{n1,n2} ≥ h / lcm(n1, n2)) under the null hypothesis, two-sided.
///
/// Returns `None` when the result is not a valid probability (rounding pushed it outside
/// [0, 1]); scipy then falls back to the asymptotic distribution, and so do we.
pub(super) fn two_sample_exact_sf(n1: u64, n2: u64, h: u64) -> Option<f64> {
    if h == 0 {
        return Some(1.0);
    }
    let p = if n1 == n2 {
        equal_sizes_sf(n1, h)
    } else {
        unequal_sizes_sf(n1, n2, h)
    };
    (0.0..=1.0).contains(&p).then_some(p)
}

/// Equal sample sizes n: the classical reflection formula
/// `P = 2 Σ_{k≥1} (-1)^{k+1} C(2n, n−kh) / C(2n, n)`.
///
/// The alternating sum cancels badly when evaluated term by term, so it is nested:
/// with `r_k = C(2n, n−kh) / C(2n, n−(k−1)h)` (a product of h ratios, all ≤ 1),
/// `P/2 = r_1 (1 − r_2 (1 − r_3 (1 − …)))`, evaluated from the innermost term out.
fn equal_sizes_sf(n: u64, h: u64) -> f64 {
    let mut nested = 0.0;
    for k in (1..=n / h).rev() {
        let shift = (k - 1) * h;
        let mut r_k = 1.0;
        for j in 0..h {
            // shift + j ≤ kh − 1 ≤ n − 1, so the numerator stays positive.
            r_k *= (n - shift - j) as f64 / (n + shift + j + 1) as f64;
        }
        nested = r_k * (1.0 - nested);
    }
    2.0 * nested
}

/// Unequal sample sizes: the fraction of monotone lattice paths from (0, 0) to (m, n)
/// that touch or cross |x/m − y/n| ≥ h/lcm, i.e. |x·n/g − y·m/g| ≥ h with g = gcd.
///
/// Each cell holds the *fraction* of paths reaching it that have already left the band
/// (Viehmann 2021, arXiv:2102.08037), rather than a path count: a count grows like a
/// binomial coefficient and overflows, while the fraction obeys the convex recursion
/// `U(x, y) = (x·U(x−1, y) + y·U(x, y−1)) / (x + y)` inside the band and is 1 outside,
/// so it stays in [0, 1] and the answer needs no final division.
/// Only the band of each column is visited: O(m · band width) time, O(n) memory.
fn unequal_sizes_sf(n1: u64, n2: u64, h: u64) -> f64 {
    // The distribution is symmetric in the sizes; walk the longer side as columns.
    let (m, n) = if n1 >= n2 { (n1, n2) } else { (n2, n1) };
    let g = gcd(m, n);
    let (m_g, n_g, h) = ((m / g) as i64, (n / g) as i64, h as i64);
    let rows = n as usize + 1;
    // Rows y with |n_g·x − m_g·y| < h, as a half-open range clamped to the grid.
    let band = |x: i64| -> (usize, usize) {
        let lo = (n_g * x - h).div_euclid(m_g) + 1;
        let hi = (n_g * x + h + m_g - 1).div_euclid(m_g);
        let clamp = |v: i64| v.clamp(0, rows as i64) as usize;
        (clamp(lo), clamp(hi))
    };

    // Column x = 0: inside cells have not left (0), cells above the band have (1).
    let mut col = vec![1.0_f64; rows];
    let (lo0, hi0) = band(0);
    col[lo0..hi0].fill(0.0);
    let mut prev_lo = lo0;
    for x in 1..=m as i64 {
        let (lo, hi) = band(x);
        if lo >= hi {
            return 1.0;
        }
        // Rows that dropped below the band in this column: every path there has left.
        col[prev_lo..lo].fill(1.0);
        let xf = x as f64;
        for y in lo..hi {
            // Row y − 1 of this column is either computed already or outside (value 1);
            // rows entering the band from above still hold 1 from the previous column.
            let from_below = if y == 0 { 0.0 } else { col[y - 1] };
            let yf = y as f64;
            col[y] = (xf * col[y] + yf * from_below) / (xf + yf);
        }
        prev_lo = lo;
    }
    col[rows - 1]
}

// ---------------------------------------------------------------------------------------
// One-sample two-sided distribution (scipy's `kstwo`)
// ---------------------------------------------------------------------------------------

/// P(D_n ≥ d): survival function of the two-sided one-sample Kolmogorov–Smirnov
/// statistic for a sample of size `n` (scipy's `kstwo.sf(d, n)`), choosing the method by
/// Simard & L'Ecuyer's rules.
pub(super) fn kstwo_sf(n: u64, d: f64) -> f64 {
    if d >= 1.0 {
        return 0.0;
    }
    if d <= 0.0 {
        return 1.0;
    }
    let nf = n as f64;
    let t = nf * d;
    if t <= 1.0 {
        // Ruben–Gambino: for 1/(2n) ≤ d ≤ 1/n the CDF is n!/n^n · (2t − 1)^n.
        if t <= 0.5 {
            return 1.0;
        }
        return clip_prob(1.0 - ruben_gambino_cdf(n, t));
    }
    if t >= nf - 1.0 {
        // Ruben–Gambino at the top of the support.
        return clip_prob(2.0 * (1.0 - d).powf(nf));
    }
    if d >= 0.5 {
        // D_n⁺ ≥ d and D_n⁻ ≥ d cannot both hold, so the tail is exactly twice one side.
        return clip_prob(2.0 * smirnov_sf(n, d));
    }
    let n_d2 = t * d;
    if n <= 140 {
        if n_d2 <= 0.754_693 {
            return clip_prob(1.0 - durbin_mtw_cdf(n, d));
        }
        if n_d2 <= 4.0 {
            return clip_prob(1.0 - pomeranz_cdf(n, d));
        }
        return clip_prob(2.0 * smirnov_sf(n, d));
    }
    if n_d2 >= 370.0 {
        return 0.0;
    }
    if n_d2 >= 2.2 {
        // Miller's approximation: the overlap of the two one-sided tails is negligible.
        return clip_prob(2.0 * smirnov_sf(n, d));
    }
    let cdf = if n <= 100_000 && nf * d.powf(1.5) <= 1.4 {
        durbin_mtw_cdf(n, d)
    } else {
        pelz_good_cdf(n, d)
    };
    clip_prob(1.0 - cdf)
}

/// n!/n^n · (2t − 1)^n, for 1/2 < t = n·d ≤ 1.
fn ruben_gambino_cdf(n: u64, t: f64) -> f64 {
    let base = 2.0 * t - 1.0;
    if n <= 140 {
        let inv_n = 1.0 / n as f64;
        (1..=n).fold(1.0, |acc, i| acc * (i as f64 * inv_n * base))
    } else {
        (ln_factorial_over_n_pow_n(n) + n as f64 * base.ln()).exp()
    }
}

/// ln(n! / n^n) by Stirling's series with the n·ln n terms cancelled analytically,
/// accurate to double precision for n > 140.
fn ln_factorial_over_n_pow_n(n: u64) -> f64 {
    let nf = n as f64;
    0.5 * (2.0 * PI * nf).ln() - nf + stirling_remainder(n)
}

/// Square matrix in row-major order, only as much as Durbin's method needs.
struct Matrix {
    size: usize,
    data: Vec<f64>,
}

impl Matrix {
    fn identity(size: usize) -> Self {
        let mut data = vec![0.0; size * size];
        for i in 0..size {
            data[i * size + i] = 1.0;
        }
        Self { size, data }
    }

    fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.size + j]
    }

    fn at_mut(&mut self, i: usize, j: usize) -> &mut f64 {
        &mut self.data[i * self.size + j]
    }

    fn mul(&self, other: &Matrix) -> Matrix {
        let s = self.size;
        let mut out = vec![0.0; s * s];
        for i in 0..s {
            for k in 0..s {
                let a = self.data[i * s + k];
                if a == 0.0 {
                    continue;
                }
                let row = &other.data[k * s..(k + 1) * s];
                for (o, b) in out[i * s..(i + 1) * s].iter_mut().zip(row) {
                    *o += a * b;
                }
            }
        }
        Matrix { size: s, data: out }
    }

    fn max_abs(&self) -> f64 {
        self.data.iter().fold(0.0, |m, v| m.max(v.abs()))
    }

    fn scale(&mut self, factor: f64) {
        self.data.iter_mut().for_each(|v| *v *= factor);
    }
}

/// P(D_n < d) by Durbin's matrix formula, as organised by Marsaglia, Tsang & Wang (2003):
/// with n·d = k − h (k integer, 0 ≤ h < 1) and an m×m matrix H (m = 2k − 1) of
/// inverse factorials with corrections in its first column and last row,
/// P = n!/n^n · (H^n)_{k,k}. Intermediate powers are rescaled by powers of two, which is
/// exact, and the exponent is carried separately.
fn durbin_mtw_cdf(n: u64, d: f64) -> f64 {
    let nd = n as f64 * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;

    let mut inv_fact = vec![1.0_f64; m + 1];
    for i in 1..=m {
        inv_fact[i] = inv_fact[i - 1] / i as f64;
    }
    let mut hm = Matrix {
        size: m,
        data: vec![0.0; m * m],
    };
    for i in 0..m {
        for j in 0..m {
            // H_ij = 1/(i − j + 1)! on and below the superdiagonal, 0 above it.
            *hm.at_mut(i, j) = if i + 1 >= j { inv_fact[i + 1 - j] } else { 0.0 };
        }
    }
    for i in 0..m {
        *hm.at_mut(i, 0) -= h.powi(i as i32 + 1) * inv_fact[i + 1];
        *hm.at_mut(m - 1, i) -= h.powi((m - i) as i32) * inv_fact[m - i];
    }
    if 2.0 * h - 1.0 > 0.0 {
        *hm.at_mut(m - 1, 0) += (2.0 * h - 1.0).powi(m as i32) * inv_fact[m];
    }

    const SCALE_EXP: i64 = 128;
    let big = 2f64.powi(SCALE_EXP as i32);
    let small = 2f64.powi(-SCALE_EXP as i32);
    let mut result = Matrix::identity(m);
    let mut result_exp: i64 = 0;
    let mut power = hm;
    let mut power_exp: i64 = 0;
    let mut remaining = n;
    while remaining > 0 {
        if remaining % 2 == 1 {
            result = result.mul(&power);
            result_exp += power_exp;
            if result.max_abs() > big {
                result.scale(small);
                result_exp += SCALE_EXP;
            }
        }
        remaining /= 2;
        if remaining > 0 {
            power = power.mul(&power);
            power_exp *= 2;
            if power.max_abs() > big {
                power.scale(small);
                power_exp += SCALE_EXP;
            }
        }
    }

    let mut p = result.at(k - 1, k - 1);
    let nf = n as f64;
    for i in 1..=n {
        p = p * i as f64 / nf;
        if p.abs() < small {
            p *= big;
            result_exp -= SCALE_EXP;
        }
    }
    clip_prob(scale_by_pow2(p, result_exp))
}

/// P(D_n < d) by Pomeranz's recursion (1974), for n ≤ 140.
///
/// D_n < d holds iff every order statistic satisfies i − t < n·U_(i) < i − 1 + t
/// (t = n·d). In terms of N(s), the number of the n points (scaled to [0, n]) at or
/// below s, that is N(i − t) ≤ i − 1 and N(i − 1 + t) ≥ i for all i. Walking the
/// boundary points in order, the weight of "N = j points so far" evolves by convolution
/// with Poisson terms (δ/n)^k / k! over each gap δ, the boundary conditions zero out
/// forbidden counts, and the probability is n! times the weight of N(n) = n.
fn pomeranz_cdf(n: u64, d: f64) -> f64 {
    let size = n as usize;
    let nf = n as f64;
    let t = nf * d;

    enum Bound {
        AtMost(usize),
        AtLeast(usize),
    }
    let mut checks: Vec<(f64, Bound)> = Vec::with_capacity(2 * size);
    for i in 1..=size {
        let upper_at = i as f64 - t;
        if upper_at > 0.0 && upper_at < nf {
            checks.push((upper_at, Bound::AtMost(i - 1)));
        }
        let lower_at = (i - 1) as f64 + t;
        if lower_at > 0.0 && lower_at < nf {
            checks.push((lower_at, Bound::AtLeast(i)));
        }
    }
    checks.sort_by(|a, b| a.0.total_cmp(&b.0));

    let mut weights = vec![0.0_f64; size + 1];
    weights[0] = 1.0;
    let mut poisson = vec![0.0_f64; size + 1];
    let mut next = vec![0.0_f64; size + 1];
    let mut advance = |weights: &mut Vec<f64>, gap: f64| {
        if gap <= 0.0 {
            return;
        }
        let rate = gap / nf;
        poisson[0] = 1.0;
        for k in 1..=size {
            poisson[k] = poisson[k - 1] * rate / k as f64;
        }
        for (j, out) in next.iter_mut().enumerate() {
            *out = (0..=j).map(|i| weights[i] * poisson[j - i]).sum();
        }
        std::mem::swap(weights, &mut next);
    };

    let mut position = 0.0;
    for (at, bound) in &checks {
        advance(&mut weights, at - position);
        position = *at;
        match *bound {
            Bound::AtMost(max) => weights[max + 1..].fill(0.0),
            Bound::AtLeast(min) => weights[..min].fill(0.0),
        }
    }
    advance(&mut weights, nf - position);

    let n_factorial = (1..=n).fold(1.0_f64, |acc, i| acc * i as f64);
    clip_prob(weights[size] * n_factorial)
}

/// P(D_n < d) by the Pelz–Good (1976) asymptotic expansion
/// P ≈ K0(z) + K1(z)/√n + K2(z)/n + K3(z)/n^{3/2}, z = d·√n, each K_i written with the
/// Jacobi theta transformation so that the series converge fast for small z.
fn pelz_good_cdf(n: u64, d: f64) -> f64 {
    if d <= 0.0 {
        return 0.0;
    }
    if d >= 1.0 {
        return 1.0;
    }
    let nf = n as f64;
    let z = nf.sqrt() * d;
    let (z2, z3) = (z * z, z * z * z);
    let (z4, z6) = (z2 * z2, z3 * z3);
    let (z7, z8, z10) = (z6 * z, z4 * z4, z6 * z4);
    let (pi2, pi4, pi6) = (PI * PI, PI.powi(4), PI.powi(6));

    let log_q = -pi2 / (8.0 * z2);
    if log_q < MIN_LOG {
        return 0.0;
    }
    let terms = (16.0 * z / PI).ceil() as u64;

    // Sums over odd m = 2k − 1 of q^{m²} times a polynomial in m² (coefficients from the
    // published expansion), then the extra integer sums of K2 and K3.
    let mut odd = [0.0_f64; 4];
    for k in 1..=terms {
        let m2 = ((2 * k - 1) as f64).powi(2);
        let (m4, m6) = (m2 * m2, m2 * m2 * m2);
        let w = (log_q * m2).exp();
        odd[0] += w;
        odd[1] += w * (-z2 + pi2 * m2 / 4.0);
        odd[2] += w
            * ((6.0 * z6 + 2.0 * z4)
                + (2.0 * z4 - 5.0 * z2) * pi2 * m2 / 4.0
                + (1.0 - 2.0 * z2) * pi4 * m4 / 16.0);
        odd[3] += w
            * ((-30.0 * z6 - 90.0 * z8)
                + (135.0 * z4 - 96.0 * z6) * pi2 * m2 / 4.0
                + (-60.0 * z2 + 212.0 * z4) * pi4 * m4 / 16.0
                + (5.0 - 30.0 * z2) * pi6 * m6 / 64.0);
    }
    let log_q_int = -pi2 / (2.0 * z2);
    let (mut extra2, mut extra3) = (0.0_f64, 0.0_f64);
    for k in 1..=terms {
        let k2 = (k as f64).powi(2);
        let w = (log_q_int * k2).exp();
        extra2 += k2 * w;
        extra3 += (3.0 * z2 - pi2 * k2) * k2 * w;
    }
    let sqrt_2pi = (2.0 * PI).sqrt();
    let k0 = sqrt_2pi * odd[0] / z;
    let k1 = sqrt_2pi * odd[1] / (6.0 * z4);
    let k2 = sqrt_2pi * odd[2] / (72.0 * z7) - pi2 * sqrt_2pi * extra2 / (36.0 * z3);
    let k3 = sqrt_2pi * odd[3] / (6480.0 * z10) + pi2 * sqrt_2pi * extra3 / (216.0 * z6);
    clip_prob(k0 + k1 / nf.sqrt() + k2 / nf + k3 / nf.powf(1.5))
}

/// P(D_n⁺ ≥ x): the one-sided Smirnov tail, by the Birnbaum–Tingey sum
/// `x Σ_{j=0}^{⌊n(1−x)⌋} C(n, j) (1 − x − j/n)^{n−j} (x + j/n)^{j−1}`.
///
/// All terms are positive, so the sum itself is stable; the difficulty is each term,
/// whose factors overflow and cancel (ln C(n, j) alone reaches n·ln 2). See
/// [`ln_birnbaum_tingey_term`] for how the logarithm of a term is kept accurate.
pub(super) fn smirnov_sf(n: u64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    if n == 1 {
        return 1.0 - x;
    }
    let nf = n as f64;
    let nx = nf * x;
    if nx <= 1.0 {
        // For x ≤ 1/n the distribution has the closed form CDF = x (1 + x)^{n−1}.
        return clip_prob(1.0 - x * (1.0 + x).powf(nf - 1.0));
    }
    if -2.0 * nf * x * x < MIN_EXP_ARG {
        return 0.0;
    }
    if nx >= nf - 1.0 {
        return clip_prob((1.0 - x).powf(nf));
    }
    if n > SMIRNOV_MAX_EXACT_N {
        let log_p = -(6.0 * nx + 1.0).powi(2) / (18.0 * nf);
        return clip_prob(log_p.exp());
    }

    let last = (nf - nx).floor() as u64;
    // The (1 − x − j/n)^{n−j} factor is 0 when n(1 − x) is an integer and j reaches it.
    let ln_terms: Vec<f64> = (0..=last)
        .filter(|&j| (-x).mul_add(nf, nf - j as f64) > 0.0)
        .map(|j| ln_birnbaum_tingey_term(n, x, j))
        .collect();
    // Sum relative to the largest term so nothing overflows; negligible terms vanish.
    let top = ln_terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !top.is_finite() {
        return 0.0;
    }
    let mut sum = 0.0;
    let mut compensation = 0.0;
    for &ln_term in &ln_terms {
        let v = (ln_term - top).exp();
        // Kahan summation keeps the error independent of the number of terms.
        let y = v - compensation;
        let s = sum + y;
        compensation = (s - sum) - y;
        sum = s;
    }
    clip_prob(x * (top + sum.ln()).exp())
}

/// ln[C(n, j) (1 − x − j/n)^{n−j} (x + j/n)^{j−1}] for 0 ≤ j < n(1 − x).
///
/// Summing ln C(n, j), (n−j)·ln(1 − x − j/n) and (j−1)·ln(x + j/n) separately loses
/// about eps·n·ln 2 of absolute accuracy (≈1e-8 relative error for n = 10⁶) because
/// those parts are huge and nearly cancel. Instead, Stirling's formula for the three
/// factorials (with exact remainders, see [`stirling_remainder`]) lets the large parts
/// cancel analytically (as in Loader's binomial algorithm), leaving
/// `(n−j)·ln(1 − nx/(n−j)) + j·ln(1 + nx/j) − ln(x + j/n) − ½ln(2πj(n−j)/n) + δ(n) − δ(j) − δ(n−j)`,
/// whose first two terms are each about ±nx and computed with `ln_1p`.
fn ln_birnbaum_tingey_term(n: u64, x: f64, j: u64) -> f64 {
    let nf = n as f64;
    let nx = nf * x;
    if j == 0 {
        return nf * (-x).ln_1p() - x.ln();
    }
    let (jf, rest) = (j as f64, (n - j) as f64);
    rest * (-nx / rest).ln_1p() + jf * (nx / jf).ln_1p()
        - (x + jf / nf).ln()
        - 0.5 * (2.0 * PI * jf * rest / nf).ln()
        + stirling_remainder(n)
        - stirling_remainder(j)
        - stirling_remainder(n - j)
}

/// δ(k) = ln k! − (k ln k − k + ½ ln(2πk)), the remainder of Stirling's formula, for k ≥ 1.
fn stirling_remainder(k: u64) -> f64 {
    if k <= 15 {
        // k! is exact in a double here, so the difference is accurate.
        let kf = k as f64;
        let ln_factorial = (1..=k).map(|i| i as f64).product::<f64>().ln();
        return ln_factorial - (kf * kf.ln() - kf + 0.5 * (2.0 * PI * kf).ln());
    }
    let r = 1.0 / k as f64;
    let r2 = r * r;
    // B_{2j} / (2j (2j−1) k^{2j−1}), j = 1..4: below 1e-17 truncation error for k > 15.
    r * (1.0 / 12.0 - r2 * (1.0 / 360.0 - r2 * (1.0 / 1260.0 - r2 / 1680.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binom(n: u64, k: u64) -> f64 {
        (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
    }

    /// Brute force over all C(m+n, n) interleavings: P(D ≥ h/lcm) for tiny samples.
    fn brute_force_two_sample_sf(m: u64, n: u64, h: u64) -> f64 {
        let total = m + n;
        let lcm = m / gcd(m, n) * n;
        let mut hits = 0u64;
        let mut all = 0u64;
        for mask in 0u64..(1 << total) {
            if mask.count_ones() as u64 != n {
                continue;
            }
            all += 1;
            let (mut x, mut y, mut worst) = (0i64, 0i64, 0i64);
            for bit in 0..total {
                if mask & (1 << bit) != 0 {
                    y += 1;
                } else {
                    x += 1;
                }
                // |x/m − y/n| · lcm
                let diff = (x * (lcm / m) as i64 - y * (lcm / n) as i64).abs();
                worst = worst.max(diff);
            }
            if worst >= h as i64 {
                hits += 1;
            }
        }
        hits as f64 / all as f64
    }

    #[test]
    fn exact_two_sample_matches_brute_force_enumeration() {
        for (m, n) in [(3, 3), (4, 4), (3, 5), (4, 6), (2, 7), (6, 5)] {
            let lcm = m / gcd(m, n) * n;
            for h in 1..=lcm {
                let exact = two_sample_exact_sf(m, n, h).unwrap();
                let brute = brute_force_two_sample_sf(m, n, h);
                assert!(
                    (exact - brute).abs() < 1e-12,
                    "m={m} n={n} h={h}: {exact} vs {brute}"
                );
            }
        }
    }

    #[test]
    fn equal_sizes_formula_by_hand() {
        // n = 2, h = 1 (D ≥ 1/2): 2·(C(4,1) − C(4,0))/C(4,2) = 2·3/6 = 1, and h = 2
        // (D = 1, samples fully separated): 2·C(4,0)/C(4,2) = 1/3.
        assert!((equal_sizes_sf(2, 1) - 1.0).abs() < 1e-15);
        assert!((equal_sizes_sf(2, 2) - 1.0 / 3.0).abs() < 1e-15);
        // General check against the unnested alternating sum for a moderate size.
        let (n, h) = (20u64, 7u64);
        let direct: f64 = (1..=n / h)
            .map(|k| {
                let sign = if k % 2 == 1 { 1.0 } else { -1.0 };
                sign * binom(2 * n, n - k * h) / binom(2 * n, n)
            })
            .sum::<f64>()
            * 2.0;
        assert!((equal_sizes_sf(n, h) - direct).abs() < 1e-14);
    }

    #[test]
    fn kstwo_closed_forms_at_the_ends_of_the_support() {
        // n = 1: D_1 = max(U, 1 − U) ∈ [1/2, 1], P(D_1 ≥ d) = 2(1 − d).
        assert!((kstwo_sf(1, 0.75) - 0.5).abs() < 1e-15);
        // n = 3, d = 0.25 ≤ 1/n: CDF = 3!/3³ (2·0.75 − 1)³ = (6/27)/8.
        assert!((kstwo_sf(3, 0.25) - (1.0 - 6.0 / 27.0 / 8.0)).abs() < 1e-15);
        // Below 1/(2n) the statistic cannot be.
        assert_eq!(kstwo_sf(10, 0.04), 1.0);
        assert_eq!(kstwo_sf(10, 1.0), 0.0);
    }

    #[test]
    fn durbin_and_pomeranz_agree_where_both_apply() {
        for n in [5u64, 10, 37, 100, 140] {
            for &d in &[0.08, 0.12, 0.2, 0.3] {
                if n as f64 * d <= 1.0 {
                    continue;
                }
                let a = durbin_mtw_cdf(n, d);
                let b = pomeranz_cdf(n, d);
                assert!((a - b).abs() < 1e-12, "n={n} d={d}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn smirnov_sum_matches_plain_evaluation_for_small_n() {
        // Direct Birnbaum–Tingey sum in linear space is fine for n = 12.
        let (n, x) = (12u64, 0.23);
        let nf = n as f64;
        let last = (nf * (1.0 - x)).floor() as u64;
        let direct: f64 = x
            * (0..=last)
                .map(|j| {
                    let jf = j as f64;
                    binom(n, j) * (1.0 - x - jf / nf).powf(nf - jf) * (x + jf / nf).powf(jf - 1.0)
                })
                .sum::<f64>();
        assert!((smirnov_sf(n, x) - direct).abs() < 1e-14);
    }
}
