//! Summary statistics of a workload, for `workload_meta.json` and reports.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::RequestLengths;
use crate::quantile::percentile;
use crate::{Error, Result};

/// Distribution of one token count over the requests. Percentiles use linear
/// interpolation between order statistics (numpy's and pandas' default).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TokenStats {
    /// Smallest value.
    pub min: u32,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Largest value.
    pub max: u32,
    /// Arithmetic mean.
    pub mean: f64,
}

/// What a workload looks like, in numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkloadSummary {
    /// Number of requests.
    #[schemars(range(min = 1))]
    pub num_requests: usize,
    /// Prompt lengths.
    pub prefill_tokens: TokenStats,
    /// Output lengths.
    pub decode_tokens: TokenStats,
    /// Last arrival − first arrival.
    pub duration_ns: u64,
    /// Arrivals after the first per second of `duration_ns`, i.e. the inverse of the mean
    /// gap; `None` when all requests arrive at once.
    pub mean_rate_rps: Option<f64>,
}

fn token_stats(values: impl Iterator<Item = u32>) -> TokenStats {
    let mut sorted: Vec<f64> = values.map(f64::from).collect();
    sorted.sort_by(f64::total_cmp);
    // Callers guarantee a non-empty, NaN-free slice, so every lookup below succeeds.
    let pct = |q| percentile(&sorted, q).unwrap_or(f64::NAN);
    TokenStats {
        min: sorted.first().copied().unwrap_or(0.0) as u32,
        p50: pct(50.0),
        p90: pct(90.0),
        max: sorted.last().copied().unwrap_or(0.0) as u32,
        mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
    }
}

/// Summarises requests given by their arrival times (non-decreasing) and lengths.
pub fn summarize(arrivals_ns: &[u64], lengths: &[RequestLengths]) -> Result<WorkloadSummary> {
    if arrivals_ns.is_empty() {
        return Err(Error::InvalidInput(
            "cannot summarise a workload without requests".to_string(),
        ));
    }
    if arrivals_ns.len() != lengths.len() {
        return Err(Error::InvalidInput(format!(
            "{} arrival times for {} requests",
            arrivals_ns.len(),
            lengths.len()
        )));
    }
    let first = arrivals_ns[0];
    let last = arrivals_ns[arrivals_ns.len() - 1];
    let duration_ns = last
        .checked_sub(first)
        .ok_or_else(|| Error::InvalidInput("arrival times are not non-decreasing".to_string()))?;
    let mean_rate_rps =
        (duration_ns > 0).then(|| (arrivals_ns.len() - 1) as f64 / (duration_ns as f64 / 1e9));
    Ok(WorkloadSummary {
        num_requests: lengths.len(),
        prefill_tokens: token_stats(lengths.iter().map(|l| l.num_prefill_tokens)),
        decode_tokens: token_stats(lengths.iter().map(|l| l.num_decode_tokens)),
        duration_ns,
        mean_rate_rps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_hand_made_requests() {
        let lengths: Vec<RequestLengths> = [(10, 1), (40, 2), (20, 3), (30, 4), (50, 5)]
            .iter()
            .map(|&(p, d)| RequestLengths {
                num_prefill_tokens: p,
                num_decode_tokens: d,
            })
            .collect();
        let arrivals = [
            0,
            1_000_000_000,
            1_000_000_000,
            1_500_000_000,
            2_000_000_000,
        ];
        let s = summarize(&arrivals, &lengths).unwrap();
        assert_eq!(s.num_requests, 5);
        // sorted prefill 10..50: p50 = 30, p90 at h = 3.6 -> 40 + 0.6*10 = 46.
        assert_eq!(s.prefill_tokens.min, 10);
        assert_eq!(s.prefill_tokens.max, 50);
        assert_eq!(s.prefill_tokens.p50, 30.0);
        assert!((s.prefill_tokens.p90 - 46.0).abs() < 1e-12);
        assert_eq!(s.prefill_tokens.mean, 30.0);
        assert_eq!(s.decode_tokens.p50, 3.0);
        assert_eq!(s.duration_ns, 2_000_000_000);
        // 4 gaps in 2 s.
        assert_eq!(s.mean_rate_rps, Some(2.0));
        assert_eq!(
            summarize(&[0, 0], &lengths[..2]).unwrap().mean_rate_rps,
            None
        );
        assert!(summarize(&[], &[]).is_err());
        assert!(summarize(&[0], &lengths).is_err());
    }
}
