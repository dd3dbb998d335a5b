//! Statistics for comparing a simulated run with a real one.
//!
//! Pure functions over `&[f64]`. Conventions follow numpy/scipy so that numbers in a
//! report can be reproduced there:
//!
//! * percentiles interpolate linearly between order statistics (`numpy.percentile`'s
//!   default `method="linear"`);
//! * the standard deviation is the *sample* standard deviation (`ddof = 1`, as pandas'
//!   `describe()`), undefined for a single value;
//! * [`ks_two_sample`] reproduces `scipy.stats.ks_2samp(a, b)` (two-sided,
//!   `method='auto'`), [`wasserstein_1`] reproduces `scipy.stats.wasserstein_distance(a, b)`;
//! * [`GroupedSample`] and [`Bootstrap`] give percentile-method bootstrap confidence
//!   intervals of every [`Stat`], resampling whole groups (requests) with replacement.
//!
//! Every input is validated: an empty sample or a non-finite value (NaN, ±∞) is an
//! [`Error::InvalidInput`](crate::Error::InvalidInput) naming the function and the
//! offending index, never a panic or a NaN in the output.

mod bootstrap;
mod kolmogorov;

pub use bootstrap::{percentile_interval, Bootstrap, GroupedSample, StatValues};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::quantile::percentile;
use crate::quantile::{interpolate, percentile_of_valid, validate, validate_sorted};
use crate::{bail, ensure, Result};

fn sorted_copy(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// Neumaier-compensated sum: the result does not depend on summation order to within a
/// few ulps, so means agree with numpy's pairwise summation.
fn compensated_sum(values: impl IntoIterator<Item = f64>) -> f64 {
    let (mut sum, mut compensation) = (0.0_f64, 0.0_f64);
    for v in values {
        let t = sum + v;
        compensation += if sum.abs() >= v.abs() {
            (sum - t) + v
        } else {
            (v - t) + sum
        };
        sum = t;
    }
    sum + compensation
}

// ---------------------------------------------------------------------------------------
// Percentiles and summaries
// ---------------------------------------------------------------------------------------

/// A summary statistic that comparisons report and judge.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Stat {
    Mean,
    P50,
    P90,
    P95,
    P99,
}

impl Stat {
    /// Every statistic, in report order.
    pub const ALL: [Stat; 5] = [Stat::Mean, Stat::P50, Stat::P90, Stat::P95, Stat::P99];

    /// Key in JSON files (`mean`, `p50`, …).
    pub const fn key(self) -> &'static str {
        match self {
            Stat::Mean => "mean",
            Stat::P50 => "p50",
            Stat::P90 => "p90",
            Stat::P95 => "p95",
            Stat::P99 => "p99",
        }
    }

    /// Name in prose and tables (`mean`, `P50`, …).
    pub fn label(self) -> &'static str {
        match self {
            Stat::Mean => "mean",
            Stat::P50 => "P50",
            Stat::P90 => "P90",
            Stat::P95 => "P95",
            Stat::P99 => "P99",
        }
    }

    /// The statistic with this [`key`](Self::key).
    pub fn from_key(key: &str) -> Option<Stat> {
        Stat::ALL.into_iter().find(|s| s.key() == key)
    }

    /// The percentile (0..=100) of a percentile statistic; `None` for the mean.
    pub fn percentile(self) -> Option<f64> {
        match self {
            Stat::Mean => None,
            Stat::P50 => Some(50.0),
            Stat::P90 => Some(90.0),
            Stat::P95 => Some(95.0),
            Stat::P99 => Some(99.0),
        }
    }

    /// The fewest samples this statistic is reported from: the q-th percentile needs
    /// n·(1 − q/100) ≥ 1, at least one sample beyond it — P99 from 100 samples, P95 from
    /// 20, P90 from 10, P50 (and the mean) from 2. Below that, the percentile is an
    /// extrapolation of the largest value, and no resample can ever exceed it.
    pub fn min_samples(self) -> usize {
        match self.percentile() {
            Some(q) => ((100.0 / (100.0 - q)).round() as usize).max(2),
            None => 2,
        }
    }

    /// This statistic of a summary.
    pub fn of(self, s: &Summary) -> f64 {
        match self {
            Stat::Mean => s.mean,
            Stat::P50 => s.p50,
            Stat::P90 => s.p90,
            Stat::P95 => s.p95,
            Stat::P99 => s.p99,
        }
    }
}

/// One value per [`Stat`], written in JSON under the statistics' keys (`mean`, `p50`, …).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "PerStat_of_{T}")]
pub struct PerStat<T> {
    pub mean: T,
    pub p50: T,
    pub p90: T,
    pub p95: T,
    pub p99: T,
}

impl<T> PerStat<T> {
    /// The value `f` gives each statistic.
    pub fn from_fn(mut f: impl FnMut(Stat) -> T) -> Self {
        PerStat {
            mean: f(Stat::Mean),
            p50: f(Stat::P50),
            p90: f(Stat::P90),
            p95: f(Stat::P95),
            p99: f(Stat::P99),
        }
    }

    /// The values `f` gives each statistic, stopping at the first error.
    pub fn try_from_fn<E>(
        mut f: impl FnMut(Stat) -> std::result::Result<T, E>,
    ) -> std::result::Result<Self, E> {
        Ok(PerStat {
            mean: f(Stat::Mean)?,
            p50: f(Stat::P50)?,
            p90: f(Stat::P90)?,
            p95: f(Stat::P95)?,
            p99: f(Stat::P99)?,
        })
    }

    /// The value of `stat`.
    pub fn get(&self, stat: Stat) -> &T {
        match stat {
            Stat::Mean => &self.mean,
            Stat::P50 => &self.p50,
            Stat::P90 => &self.p90,
            Stat::P95 => &self.p95,
            Stat::P99 => &self.p99,
        }
    }

    /// Every value, in [`Stat::ALL`]'s order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        Stat::ALL.into_iter().map(|s| self.get(s))
    }
}

/// Descriptive statistics of one sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    /// Number of values.
    #[schemars(range(min = 1))]
    pub count: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (`ddof = 1`); `None` for a single value.
    pub std: Option<f64>,
    /// Smallest value.
    pub min: f64,
    /// Median (linear interpolation).
    pub p50: f64,
    /// 90th percentile (linear interpolation).
    pub p90: f64,
    /// 95th percentile (linear interpolation).
    pub p95: f64,
    /// 99th percentile (linear interpolation).
    pub p99: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// Summarises a sample in any order (it is sorted internally).
    pub fn from_samples(values: &[f64]) -> Result<Self> {
        validate("Summary::from_samples", values)?;
        Ok(Self::from_valid_sorted(&sorted_copy(values)))
    }

    /// Summarises an ascending-sorted sample without copying it.
    pub fn from_sorted(sorted: &[f64]) -> Result<Self> {
        validate("Summary::from_sorted", sorted)?;
        validate_sorted("Summary::from_sorted", sorted)?;
        Ok(Self::from_valid_sorted(sorted))
    }

    fn from_valid_sorted(sorted: &[f64]) -> Self {
        let count = sorted.len();
        let mean = compensated_sum(sorted.iter().copied()) / count as f64;
        // Two passes (mean first) avoid the cancellation of the Σx² − n·mean² shortcut.
        let std = (count > 1).then(|| {
            let squares = compensated_sum(sorted.iter().map(|v| (v - mean) * (v - mean)));
            (squares / (count - 1) as f64).sqrt()
        });
        Self {
            count,
            mean,
            std,
            min: sorted[0],
            p50: percentile_of_valid(sorted, 50.0),
            p90: percentile_of_valid(sorted, 90.0),
            p95: percentile_of_valid(sorted, 95.0),
            p99: percentile_of_valid(sorted, 99.0),
            max: sorted[count - 1],
        }
    }
}

/// Points of the empirical CDF for plotting: one `(value, fraction of the sample ≤ value)`
/// pair per distinct value, ascending. The last fraction is 1.
pub fn ecdf(sample: &[f64]) -> Result<Vec<(f64, f64)>> {
    validate("ecdf", sample)?;
    let sorted = sorted_copy(sample);
    let n = sorted.len() as f64;
    let mut points: Vec<(f64, f64)> = Vec::new();
    for (i, &v) in sorted.iter().enumerate() {
        let fraction = (i + 1) as f64 / n;
        match points.last_mut() {
            // Equal values (including −0.0 and 0.0) share one step.
            Some(last) if last.0 == v => last.1 = fraction,
            _ => points.push((v, fraction)),
        }
    }
    Ok(points)
}

// ---------------------------------------------------------------------------------------
// Paired relative errors
// ---------------------------------------------------------------------------------------

/// Signed relative error of a simulated value against the real one, in percent:
/// `100 · (sim − real) / |real|`. Positive means the simulator over-predicts.
///
/// Returns `Ok(None)` when `real` is 0: a relative error against zero is undefined (even
/// when `sim` is 0 too), and callers should count such pairs rather than invent a value.
/// Errors if either value is not finite.
pub fn signed_rel_error_pct(sim: f64, real: f64) -> Result<Option<f64>> {
    ensure!(
        sim.is_finite() && real.is_finite(),
        InvalidInput: "relative error of sim = {sim} against real = {real}: values must be finite"
    );
    Ok((real != 0.0).then(|| 100.0 * (sim - real) / real.abs()))
}

/// Absolute relative error in percent, `100 · |sim − real| / |real|`; `Ok(None)` when
/// `real` is 0 (see [`signed_rel_error_pct`]).
pub fn abs_rel_error_pct(sim: f64, real: f64) -> Result<Option<f64>> {
    Ok(signed_rel_error_pct(sim, real)?.map(f64::abs))
}

/// Per-pair signed relative errors of a simulated sample against a real one, matched by
/// position (request `i` of one run against request `i` of the other).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelErrors {
    /// Number of pairs given.
    pub pairs: usize,
    /// Pairs left out because the real value is 0 (relative error undefined).
    pub zero_real: usize,
    /// Signed relative errors in percent of the remaining pairs, in input order.
    pub signed_pct: Vec<f64>,
}

impl RelErrors {
    /// Computes the errors; the slices must have the same, non-zero length and finite
    /// values.
    pub fn from_pairs(sim: &[f64], real: &[f64]) -> Result<Self> {
        ensure!(
            sim.len() == real.len(),
            InvalidInput: "paired errors: {} simulated values but {} real values",
            sim.len(),
            real.len()
        );
        validate("paired errors: simulated values", sim)?;
        validate("paired errors: real values", real)?;
        let signed_pct: Vec<f64> = sim
            .iter()
            .zip(real)
            .filter(|&(_, &r)| r != 0.0)
            .map(|(&s, &r)| 100.0 * (s - r) / r.abs())
            .collect();
        Ok(Self {
            pairs: sim.len(),
            zero_real: sim.len() - signed_pct.len(),
            signed_pct,
        })
    }

    fn ensure_defined(&self, what: &str) -> Result<()> {
        ensure!(
            !self.signed_pct.is_empty(),
            InvalidInput: "{what}: undefined, all {} real values are 0", self.pairs
        );
        Ok(())
    }

    /// Mean absolute percentage error over the pairs with a non-zero real value.
    pub fn mape_pct(&self) -> Result<f64> {
        self.ensure_defined("MAPE")?;
        Ok(compensated_sum(self.signed_pct.iter().map(|e| e.abs())) / self.signed_pct.len() as f64)
    }

    /// Median absolute percentage error over the pairs with a non-zero real value.
    pub fn median_ape_pct(&self) -> Result<f64> {
        self.ensure_defined("median APE")?;
        let abs: Vec<f64> =
            sorted_copy(&self.signed_pct.iter().map(|e| e.abs()).collect::<Vec<_>>());
        Ok(percentile_of_valid(&abs, 50.0))
    }

    /// Mean signed percentage error (bias: positive when the simulator over-predicts).
    pub fn mean_signed_pct(&self) -> Result<f64> {
        self.ensure_defined("mean signed error")?;
        Ok(compensated_sum(self.signed_pct.iter().copied()) / self.signed_pct.len() as f64)
    }
}

/// Mean absolute percentage error of `sim` against `real`, pairs matched by position;
/// pairs whose real value is 0 are left out (see [`RelErrors`]). Errors if no pair is
/// left.
pub fn mape_pct(sim: &[f64], real: &[f64]) -> Result<f64> {
    RelErrors::from_pairs(sim, real)?.mape_pct()
}

/// Median absolute percentage error of `sim` against `real`; same conventions as
/// [`mape_pct`].
pub fn median_ape_pct(sim: &[f64], real: &[f64]) -> Result<f64> {
    RelErrors::from_pairs(sim, real)?.median_ape_pct()
}

// ---------------------------------------------------------------------------------------
// Two-sample distribution comparisons
// ---------------------------------------------------------------------------------------

/// How a Kolmogorov–Smirnov p-value was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KsMethod {
    /// Exact null distribution of the two-sample statistic.
    Exact,
    /// One-sample distribution at the effective size round(n1·n2/(n1+n2)).
    Asymptotic,
}

/// Result of a two-sample Kolmogorov–Smirnov test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KsResult {
    /// sup_x |F_a(x) − F_b(x)| over the two empirical CDFs.
    pub statistic: f64,
    /// Two-sided p-value under the hypothesis that both samples come from one
    /// continuous distribution.
    pub p_value: f64,
    /// How the p-value was computed.
    pub method: KsMethod,
    /// The smallest value at which the largest difference is attained.
    pub statistic_location: f64,
    /// +1 if F_a > F_b there (sample `a` tends to be smaller), −1 otherwise.
    pub statistic_sign: i8,
}

/// Two-sample, two-sided Kolmogorov–Smirnov test, reproducing `scipy.stats.ks_2samp(a, b)`
/// with its default `method='auto'`:
///
/// * if both samples have at most 10 000 values, the p-value is exact: the statistic is
///   an integer multiple h of 1/lcm(n1, n2) and P(D ≥ h/lcm) is counted over lattice
///   paths (reflection formula for equal sizes, Hodges' inside method otherwise). If
///   rounding makes that count invalid, the asymptotic branch is used, as scipy does;
/// * otherwise the p-value is `kstwo.sf(D, round(n1·n2/(n1+n2)))` — the *finite-n*
///   one-sample distribution at the effective sample size (see [`kstwo_sf`]), not the
///   limiting Kolmogorov distribution, as scipy does (checked against scipy 1.17.1).
///
/// The exact branch costs O(n1·band) time, where the band is about 2·D·n2 wide: up to
/// ~10⁸ cheap steps for two different sizes near 10 000 (equal sizes are O(n)).
///
/// Ties are allowed (the statistic uses right-continuous ECDFs, as scipy's
/// `searchsorted(side='right')`), although the p-value then assumes continuity as
/// scipy's does. Errors on an empty sample or a non-finite value.
pub fn ks_two_sample(a: &[f64], b: &[f64]) -> Result<KsResult> {
    validate("ks_two_sample: first sample", a)?;
    validate("ks_two_sample: second sample", b)?;
    let (sa, sb) = (sorted_copy(a), sorted_copy(b));
    let (n1, n2) = (sa.len(), sb.len());

    // Walk the distinct values of the merged samples; at each one the ECDF difference is
    // (i/n1 − j/n2) = (i·n2 − j·n1)/(n1·n2), compared exactly in integers.
    #[derive(Clone, Copy)]
    struct Extreme {
        scaled: i128,
        i: usize,
        j: usize,
        at: f64,
    }
    let mut above: Option<Extreme> = None; // largest F_a − F_b
    let mut below: Option<Extreme> = None; // largest F_b − F_a
    let (mut i, mut j) = (0usize, 0usize);
    while i < n1 || j < n2 {
        let at = match (sa.get(i), sb.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        while i < n1 && sa[i] <= at {
            i += 1;
        }
        while j < n2 && sb[j] <= at {
            j += 1;
        }
        let scaled = i as i128 * n2 as i128 - j as i128 * n1 as i128;
        if above.is_none_or(|e| scaled > e.scaled) {
            above = Some(Extreme { scaled, i, j, at });
        }
        if below.is_none_or(|e| -scaled > e.scaled) {
            below = Some(Extreme {
                scaled: -scaled,
                i,
                j,
                at,
            });
        }
    }
    let (Some(above), Some(below)) = (above, below) else {
        // Unreachable after validation; kept as an error rather than a panic.
        bail!(InvalidInput: "ks_two_sample: no values to compare");
    };
    // The last point has difference 0, so both extremes are ≥ 0. Ties go to F_a − F_b.
    let (extreme, sign) = if below.scaled > above.scaled {
        (below, -1i8)
    } else {
        (above, 1i8)
    };
    // The statistic as scipy computes it, from the two floating-point ECDF values.
    let float_statistic = {
        let diff = extreme.i as f64 / n1 as f64 - extreme.j as f64 / n2 as f64;
        (f64::from(sign) * diff).clamp(0.0, 1.0)
    };

    let (u1, u2) = (n1 as u64, n2 as u64);
    let g = kolmogorov::gcd(u1, u2);
    let lcm = u1 / g * u2;
    let (mut statistic, mut exact_p) = (float_statistic, None);
    if n1.max(n2) <= kolmogorov::MAX_EXACT_N {
        // Every ECDF difference is a multiple of 1/lcm; scipy reports it in that form.
        let h = (extreme.scaled as u64) / g;
        statistic = h as f64 / lcm as f64;
        exact_p = kolmogorov::two_sample_exact_sf(u1, u2, h);
    }
    let (p_value, method) = match exact_p {
        Some(p) => (p, KsMethod::Exact),
        None => {
            let (big, small) = (n1.max(n2) as f64, n1.min(n2) as f64);
            let effective_n = (big * small / (big + small)).round_ties_even().max(1.0) as u64;
            (
                kolmogorov::kstwo_sf(effective_n, statistic),
                KsMethod::Asymptotic,
            )
        }
    };
    Ok(KsResult {
        statistic,
        p_value: p_value.clamp(0.0, 1.0),
        method,
        statistic_location: extreme.at,
        statistic_sign: sign,
    })
}

/// P(D_n ≥ d) for the two-sided one-sample Kolmogorov–Smirnov statistic D_n of a sample
/// of size `n` from a continuous distribution: scipy's `kstwo.sf(d, n)`.
///
/// Evaluated as Simard & L'Ecuyer (2011) prescribe, with exact methods (Durbin's matrix,
/// Pomeranz's recursion, the Birnbaum–Tingey one-sided sum) wherever they are tractable
/// and the Pelz–Good expansion for large n and small n·d². Errors if `n` is 0 or `d` is
/// not finite; `d` outside [0, 1] gives 1 or 0.
pub fn kstwo_sf(n: u64, d: f64) -> Result<f64> {
    ensure!(n >= 1, InvalidInput: "kstwo_sf: sample size must be at least 1");
    ensure!(d.is_finite(), InvalidInput: "kstwo_sf: statistic d = {d} must be finite");
    Ok(kolmogorov::kstwo_sf(n, d))
}

/// First Wasserstein distance between the empirical distributions of `a` and `b`,
/// `∫ |F_a(x) − F_b(x)| dx`, in the unit of the samples; reproduces
/// `scipy.stats.wasserstein_distance(a, b)` (unweighted). Errors on an empty sample or a
/// non-finite value.
pub fn wasserstein_1(a: &[f64], b: &[f64]) -> Result<f64> {
    validate("wasserstein_1: first sample", a)?;
    validate("wasserstein_1: second sample", b)?;
    let (sa, sb) = (sorted_copy(a), sorted_copy(b));
    let (n1, n2) = (sa.len() as f64, sb.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut areas = Vec::with_capacity(sa.len() + sb.len());
    let mut previous: Option<(f64, f64)> = None; // (value, F_a − F_b just after it)
    while i < sa.len() || j < sb.len() {
        let at = match (sa.get(i), sb.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        if let Some((from, diff)) = previous {
            areas.push(diff.abs() * (at - from));
        }
        while i < sa.len() && sa[i] <= at {
            i += 1;
        }
        while j < sb.len() && sb[j] <= at {
            j += 1;
        }
        previous = Some((at, i as f64 / n1 - j as f64 / n2));
    }
    Ok(compensated_sum(areas))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn percentile_interpolates_like_numpy_linear() {
        let x = [1.0, 2.0, 4.0, 8.0];
        // i = 3q/100: q=50 → i=1.5 → 2 + 0.5·2 = 3; q=90 → i=2.7 → 4 + 0.7·4 = 6.8.
        assert_eq!(percentile(&x, 0.0).unwrap(), 1.0);
        assert_eq!(percentile(&x, 50.0).unwrap(), 3.0);
        assert!(close(percentile(&x, 90.0).unwrap(), 6.8, 1e-15));
        assert_eq!(percentile(&x, 100.0).unwrap(), 8.0);
        assert!(close(percentile(&x, 25.0).unwrap(), 1.75, 1e-15));
        assert_eq!(percentile(&[42.0], 37.0).unwrap(), 42.0);
    }

    #[test]
    fn percentile_rejects_bad_input_with_typed_errors() {
        assert!(matches!(percentile(&[], 50.0), Err(Error::InvalidInput(_))));
        assert!(matches!(
            percentile(&[1.0, f64::NAN], 50.0),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            percentile(&[2.0, 1.0], 50.0),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            percentile(&[1.0], 100.5),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            percentile(&[1.0], f64::NAN),
            Err(Error::InvalidInput(_))
        ));
        let msg = percentile(&[1.0, 2.0, f64::INFINITY], 50.0)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("#2"), "{msg}");
    }

    #[test]
    fn summary_by_hand() {
        let s = Summary::from_samples(&[4.0, 1.0, 3.0, 2.0, 5.0]).unwrap();
        assert_eq!(s.count, 5);
        assert_eq!(s.mean, 3.0);
        // Σ(x − 3)² = 10, ddof = 1 → variance 2.5.
        assert!(close(s.std.unwrap(), 2.5f64.sqrt(), 1e-15));
        assert_eq!((s.min, s.p50, s.max), (1.0, 3.0, 5.0));
        // i = 4·0.9 = 3.6 → 4 + 0.6 = 4.6; p99: i = 3.96 → 4.96.
        assert!(close(s.p90, 4.6, 1e-15));
        assert!(close(s.p95, 4.8, 1e-15));
        assert!(close(s.p99, 4.96, 1e-15));
        assert_eq!(Summary::from_sorted(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap(), s);

        let one = Summary::from_samples(&[7.0]).unwrap();
        assert_eq!((one.mean, one.std, one.p99), (7.0, None, 7.0));
        assert!(Summary::from_sorted(&[3.0, 1.0]).is_err());
        assert!(Summary::from_samples(&[]).is_err());
    }

    #[test]
    fn ecdf_merges_ties() {
        let pts = ecdf(&[3.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(pts, vec![(1.0, 0.25), (2.0, 0.5), (3.0, 1.0)]);
        assert!(ecdf(&[f64::NAN]).is_err());
    }

    #[test]
    fn relative_errors_and_zero_real_policy() {
        assert_eq!(signed_rel_error_pct(110.0, 100.0).unwrap(), Some(10.0));
        assert_eq!(signed_rel_error_pct(90.0, 100.0).unwrap(), Some(-10.0));
        assert_eq!(abs_rel_error_pct(90.0, 100.0).unwrap(), Some(10.0));
        // Against a negative reference the sign still says "sim above real".
        assert_eq!(signed_rel_error_pct(-1.0, -2.0).unwrap(), Some(50.0));
        assert_eq!(signed_rel_error_pct(0.0, 0.0).unwrap(), None);
        assert_eq!(signed_rel_error_pct(5.0, 0.0).unwrap(), None);
        assert!(signed_rel_error_pct(f64::NAN, 1.0).is_err());

        let sim = [110.0, 50.0, 3.0, 100.0];
        let real = [100.0, 100.0, 0.0, 80.0];
        let e = RelErrors::from_pairs(&sim, &real).unwrap();
        assert_eq!((e.pairs, e.zero_real), (4, 1));
        assert_eq!(e.signed_pct, vec![10.0, -50.0, 25.0]);
        assert!(close(e.mape_pct().unwrap(), 85.0 / 3.0, 1e-15));
        assert_eq!(e.median_ape_pct().unwrap(), 25.0);
        assert!(close(e.mean_signed_pct().unwrap(), -5.0, 1e-15));
        assert!(close(mape_pct(&sim, &real).unwrap(), 85.0 / 3.0, 1e-15));
        assert_eq!(median_ape_pct(&sim, &real).unwrap(), 25.0);

        assert!(mape_pct(&[1.0], &[0.0]).is_err());
        assert!(mape_pct(&[1.0, 2.0], &[1.0]).is_err());
        assert!(mape_pct(&[], &[]).is_err());
    }

    #[test]
    fn ks_statistic_and_exact_p_by_hand() {
        // Fully separated samples of 3: D = 1, exact p = 2/C(6,3) = 0.1.
        let r = ks_two_sample(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).unwrap();
        assert_eq!(r.statistic, 1.0);
        assert!(close(r.p_value, 0.1, 1e-15));
        assert_eq!(r.method, KsMethod::Exact);
        assert_eq!((r.statistic_location, r.statistic_sign), (3.0, 1));

        // Reversed roles flip the sign, not the statistic.
        let r = ks_two_sample(&[4.0, 5.0, 6.0], &[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((r.statistic, r.statistic_sign), (1.0, -1));

        // Identical samples: D = 0, p = 1.
        let r = ks_two_sample(&[1.0, 2.0], &[2.0, 1.0]).unwrap();
        assert_eq!((r.statistic, r.p_value), (0.0, 1.0));

        // Unequal sizes with ties: a = {1, 2, 2}, b = {2, 3}. At 1: 1/3 − 0; at 2: 1 − 1/2;
        // at 3: 0. D = 1/2 = 3/6 → h = 3 of lcm 6.
        let r = ks_two_sample(&[1.0, 2.0, 2.0], &[2.0, 3.0]).unwrap();
        assert_eq!(r.statistic, 0.5);
        assert_eq!(r.statistic_location, 2.0);
        // Paths of 3 x-steps and 2 y-steps reaching |2x − 3y| ≥ 3: all but A B A B A,
        // 9 of the 10.
        assert!(close(r.p_value, 0.9, 1e-15), "{}", r.p_value);
    }

    #[test]
    fn ks_rejects_bad_input() {
        assert!(ks_two_sample(&[], &[1.0]).is_err());
        assert!(ks_two_sample(&[1.0], &[f64::NEG_INFINITY]).is_err());
    }

    #[test]
    fn wasserstein_by_hand() {
        // Point masses 1 apart: distance 1.
        assert_eq!(wasserstein_1(&[0.0], &[1.0]).unwrap(), 1.0);
        // {0, 1} vs {0, 3}: |F_a − F_b| = 1/2 on [1, 3) → 1.
        assert_eq!(wasserstein_1(&[0.0, 1.0], &[0.0, 3.0]).unwrap(), 1.0);
        // Shift invariance: the distance between a sample and its shift is the shift.
        let a = [0.3, 1.7, 2.2, 9.0];
        let b: Vec<f64> = a.iter().map(|v| v + 0.5).collect();
        assert!(close(wasserstein_1(&a, &b).unwrap(), 0.5, 1e-15));
        assert_eq!(wasserstein_1(&a, &a).unwrap(), 0.0);
        assert!(wasserstein_1(&a, &[]).is_err());
    }

    #[test]
    fn kstwo_sf_validates() {
        assert!(kstwo_sf(0, 0.1).is_err());
        assert!(kstwo_sf(5, f64::NAN).is_err());
        assert_eq!(kstwo_sf(5, 1.5).unwrap(), 0.0);
        assert_eq!(kstwo_sf(5, -0.5).unwrap(), 1.0);
    }
}
