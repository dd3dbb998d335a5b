//! Percentiles: the one implementation every module uses (workload summaries, the
//! predictor's cross-validation, the profiler's and the device-speed medians, the
//! comparison's statistics), interpolating linearly between order statistics exactly as
//! `numpy.percentile` does by default, so any number in a report can be reproduced there.
//! Pure functions over `&[f64]`, at the bottom of the layers so that every layer may use it.

use crate::{bail, ensure, Result};

/// Rejects empty samples and non-finite values.
pub fn validate(what: &str, values: &[f64]) -> Result<()> {
    ensure!(!values.is_empty(), InvalidInput: "{what}: the sample is empty");
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        bail!(InvalidInput: "{what}: value #{i} is {v}; samples must be finite");
    }
    Ok(())
}

/// Rejects a sample that is not ascending, naming the first pair out of order.
pub fn validate_sorted(what: &str, sorted: &[f64]) -> Result<()> {
    if let Some(i) = sorted.windows(2).position(|w| w[0] > w[1]) {
        bail!(
            InvalidInput: "{what}: input must be sorted ascending, but value #{} ({}) > value #{} ({})",
            i, sorted[i], i + 1, sorted[i + 1]
        );
    }
    Ok(())
}

/// The `q`-th percentile (`q` in 0..=100) of an ascending-sorted sample, interpolating
/// linearly between the two nearest order statistics as `numpy.percentile` does by
/// default: with `i = (n − 1)·q/100`, the result is `x[⌊i⌋] + (i − ⌊i⌋)(x[⌊i⌋+1] − x[⌊i⌋])`.
///
/// Errors if the sample is empty, contains a non-finite value or is not sorted, or if
/// `q` is outside 0..=100.
pub fn percentile(sorted: &[f64], q: f64) -> Result<f64> {
    validate("percentile", sorted)?;
    validate_sorted("percentile", sorted)?;
    ensure!(
        (0.0..=100.0).contains(&q),
        InvalidInput: "percentile: q = {q} is outside 0..=100"
    );
    Ok(percentile_of_valid(sorted, q))
}

/// [`percentile`] without the checks, for callers that have validated already.
pub fn percentile_of_valid(sorted: &[f64], q: f64) -> f64 {
    let last = sorted.len() - 1;
    let virtual_index = last as f64 * (q / 100.0);
    let below = virtual_index.floor();
    let i = below as usize;
    if i >= last {
        return sorted[last];
    }
    interpolate(sorted[i], sorted[i + 1], virtual_index - below)
}

/// The value `weight` of the way from `a` to `b`, as numpy computes it: from the nearer
/// end, which keeps percentiles monotone in q and exact at the order statistics.
pub fn interpolate(a: f64, b: f64, weight: f64) -> f64 {
    let span = b - a;
    if weight >= 0.5 {
        b - span * (1.0 - weight)
    } else {
        a + span * weight
    }
}

/// The median (50th percentile) of an unsorted sample.
pub fn median(values: &[f64]) -> Result<f64> {
    validate("median", values)?;
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Ok(percentile_of_valid(&sorted, 50.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_medians_match_numpy() {
        // numpy.percentile([1, 2, 3, 4], [0, 50, 90, 100]) = [1, 2.5, 3.7, 4]
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.0).unwrap(), 1.0);
        assert_eq!(percentile(&v, 50.0).unwrap(), 2.5);
        assert!((percentile(&v, 90.0).unwrap() - 3.7).abs() < 1e-12);
        assert_eq!(percentile(&v, 100.0).unwrap(), 4.0);
        assert_eq!(percentile(&[7.0], 90.0).unwrap(), 7.0);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]).unwrap(), 2.5);
        assert_eq!(median(&[3.0, 1.0, 2.0]).unwrap(), 2.0);
    }

    #[test]
    fn bad_samples_are_typed_errors() {
        for (sample, q) in [
            (&[][..], 50.0),
            (&[1.0, f64::NAN][..], 50.0),
            (&[2.0, 1.0][..], 50.0),
            (&[1.0][..], 101.0),
        ] {
            let err = percentile(sample, q).unwrap_err();
            assert!(matches!(err, crate::Error::InvalidInput(_)), "{err}");
        }
        assert!(median(&[]).is_err());
    }
}
