//! Summary statistics of one op's repeated timings, as Vidur stores them.

use crate::quantile::percentile_of_valid;
use crate::{Error, Result};

/// `time_stats.<op>.{min,max,mean,median,std}` of one grid point, in milliseconds.
///
/// Predictors use `median_ms` (as Vidur does) or, when asked, `mean_ms` ([`OpStatistic`]); the
/// rest is kept so that bundles round-trip and reports can show the spread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpStats {
    pub min_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub median_ms: f64,
    pub std_ms: f64,
}

/// Which of a grid point's statistics a predictor fits.
///
/// A forward's time is a sum of per-layer op calls, so its expectation is the number of
/// layers times the op's *mean*; the median is the typical call and Vidur's choice. On a
/// host whose calls have a slow tail the two differ by a few per cent, and so do the
/// predictions (`docs/ground_truth.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpStatistic {
    #[default]
    Median,
    Mean,
}

/// The five statistic suffixes, in Vidur's column order.
pub(crate) const STAT_SUFFIXES: [&str; 5] = ["min", "max", "mean", "median", "std"];

impl OpStats {
    /// Summarises repeated timings the way Vidur's profiler does with numpy: `median` averages
    /// the two middle samples of an even count, `std` is the population standard deviation.
    pub fn from_samples_ms(samples_ms: &[f64]) -> Result<OpStats> {
        if samples_ms.is_empty() {
            return Err(Error::InvalidInput("no timing samples to summarise".into()));
        }
        if let Some(bad) = samples_ms.iter().find(|s| !s.is_finite() || **s < 0.0) {
            return Err(Error::InvalidInput(format!(
                "timing sample {bad} ms is not a finite non-negative duration"
            )));
        }
        let mut sorted = samples_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median_ms = percentile_of_valid(&sorted, 50.0);
        let mean_ms = sorted.iter().sum::<f64>() / n as f64;
        let var = sorted.iter().map(|s| (s - mean_ms).powi(2)).sum::<f64>() / n as f64;
        Ok(OpStats {
            min_ms: sorted[0],
            max_ms: sorted[n - 1],
            mean_ms,
            median_ms,
            std_ms: var.sqrt(),
        })
    }

    /// The value of `statistic`, ms.
    pub fn get(&self, statistic: OpStatistic) -> f64 {
        match statistic {
            OpStatistic::Median => self.median_ms,
            OpStatistic::Mean => self.mean_ms,
        }
    }

    /// The five values in [`STAT_SUFFIXES`] order.
    pub(crate) fn values(&self) -> [f64; 5] {
        [
            self.min_ms,
            self.max_ms,
            self.mean_ms,
            self.median_ms,
            self.std_ms,
        ]
    }

    /// Builds from values in [`STAT_SUFFIXES`] order.
    pub(crate) fn from_values(v: [f64; 5]) -> OpStats {
        OpStats {
            min_ms: v[0],
            max_ms: v[1],
            mean_ms: v[2],
            median_ms: v[3],
            std_ms: v[4],
        }
    }

    /// Checks what a predictor relies on: every value finite and non-negative, and a strictly
    /// positive median (a zero-time op means the timer missed it). Returns the offending
    /// suffix and a message. No ordering check (min ≤ median ≤ max): Vidur's own files break
    /// it in the last digits of the mean.
    pub(crate) fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        for (suffix, v) in STAT_SUFFIXES.into_iter().zip(self.values()) {
            if !v.is_finite() || v < 0.0 {
                return Err((
                    suffix,
                    format!("{v} is not a finite non-negative time in ms"),
                ));
            }
        }
        if self.median_ms <= 0.0 {
            return Err((
                "median",
                format!("median {} ms is not positive", self.median_ms),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_samples_matches_numpy() {
        // numpy: median([4,1,3,2]) = 2.5, std = sqrt(1.25), mean 2.5
        let s = OpStats::from_samples_ms(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.min_ms, 1.0);
        assert_eq!(s.max_ms, 4.0);
        assert_eq!(s.median_ms, 2.5);
        assert_eq!(s.mean_ms, 2.5);
        assert!((s.std_ms - 1.25f64.sqrt()).abs() < 1e-15);
        let odd = OpStats::from_samples_ms(&[5.0, 1.0, 2.0]).unwrap();
        assert_eq!(odd.median_ms, 2.0);
        assert!(OpStats::from_samples_ms(&[]).is_err());
        assert!(OpStats::from_samples_ms(&[1.0, f64::NAN]).is_err());
    }

    #[test]
    fn check_rejects_zero_median_and_nan() {
        let ok = OpStats::from_samples_ms(&[1.0]).unwrap();
        assert!(ok.check().is_ok());
        let zero = OpStats {
            median_ms: 0.0,
            ..ok
        };
        assert_eq!(zero.check().unwrap_err().0, "median");
        let nan = OpStats {
            std_ms: f64::NAN,
            ..ok
        };
        assert_eq!(nan.check().unwrap_err().0, "std");
    }
}
