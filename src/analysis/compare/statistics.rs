//! Per-metric statistics of a comparison: both distributions, the error of each summary
//! statistic, per-request (paired) errors, distribution distances, throughput, and the real
//! engine's own run-to-run noise.
//!
//! Every sample here is the *paired* one — the requests (or tokens) the reference real run
//! and the simulated run both produced — so a real and a simulated percentile summarise the
//! same requests. The verdict against all real runs together is [`super::verdict`]'s.

use schemars::JsonSchema;
use serde::Serialize;

use crate::analysis::stats::{
    abs_rel_error_pct, ks_two_sample, signed_rel_error_pct, wasserstein_1, KsMethod, PerStat,
    RelErrors, Stat, Summary,
};
use crate::io::records::{RequestMetricsRow, RequestStatus};
use crate::Result;

use super::join::{RequestJoin, RequestMetrics, TokenJoin};
use super::verdict::MetricFidelity;

/// The compared metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Ttft,
    Tpot,
    Itl,
    E2e,
    QueueDelay,
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 5] = [
        Metric::Ttft,
        Metric::Tpot,
        Metric::Itl,
        Metric::E2e,
        Metric::QueueDelay,
    ];

    /// Key in `summary.json` and file names.
    pub fn key(self) -> &'static str {
        match self {
            Metric::Ttft => "ttft",
            Metric::Tpot => "tpot",
            Metric::Itl => "itl",
            Metric::E2e => "e2e",
            Metric::QueueDelay => "queue_delay",
        }
    }

    /// Name in prose and tables.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Ttft => "TTFT",
            Metric::Tpot => "TPOT",
            Metric::Itl => "ITL",
            Metric::E2e => "E2E",
            Metric::QueueDelay => "queue delay",
        }
    }

    /// The metric of one side of a request pair (`None` for ITL, a token metric).
    pub fn of(self, m: &RequestMetrics) -> Option<u64> {
        match self {
            Metric::Ttft => m.ttft_ns,
            Metric::Tpot => m.tpot_ns,
            Metric::E2e => m.e2e_ns,
            Metric::QueueDelay => m.queue_delay_ns,
            Metric::Itl => None,
        }
    }
}

/// The paired samples of one metric, ms: `real[i]` and `sim[i]` belong to the same request
/// (or token, for ITL).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairedSamples {
    pub real_ms: Vec<f64>,
    pub sim_ms: Vec<f64>,
}

/// The paired samples of `metric`: request pairs where both sides have the metric, or for
/// ITL the compared tokens after the first of each request.
pub fn paired_samples(
    metric: Metric,
    requests: &RequestJoin,
    tokens: Option<&TokenJoin>,
) -> PairedSamples {
    if metric == Metric::Itl {
        let (real_ms, sim_ms) = tokens.map(TokenJoin::itl_pairs_ms).unwrap_or_default();
        return PairedSamples { real_ms, sim_ms };
    }
    let (real_ms, sim_ms) = requests
        .pairs
        .iter()
        .filter_map(|p| Some((metric.of(&p.real)?, metric.of(&p.sim)?)))
        .map(|(r, s)| (r as f64 / 1e6, s as f64 / 1e6))
        .unzip();
    PairedSamples { real_ms, sim_ms }
}

/// Error of one summary statistic of the simulated distribution against the real one.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct StatError {
    pub real_ms: f64,
    pub sim_ms: f64,
    /// `100 · (sim − real) / real`; `None` when the real value is 0.
    pub err_pct: Option<f64>,
    pub abs_err_pct: Option<f64>,
}

impl StatError {
    fn of(real_ms: f64, sim_ms: f64) -> Result<Self> {
        Ok(StatError {
            real_ms,
            sim_ms,
            err_pct: signed_rel_error_pct(sim_ms, real_ms)?,
            abs_err_pct: abs_rel_error_pct(sim_ms, real_ms)?,
        })
    }
}

/// Per-pair errors of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PairedErrors {
    /// Pairs with a defined relative error.
    #[schemars(range(min = 1))]
    pub pairs: usize,
    /// Pairs left out because the real value is 0.
    pub zero_real: usize,
    /// Mean absolute percentage error.
    #[schemars(range(min = 0.0))]
    pub mape_pct: f64,
    /// Median absolute percentage error.
    #[schemars(range(min = 0.0))]
    pub median_ape_pct: f64,
    /// Mean signed error (bias): positive means the simulator over-predicts.
    pub mean_signed_pct: f64,
}

/// Two-sample Kolmogorov–Smirnov test of the two distributions.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct KsSummary {
    #[schemars(range(min = 0.0, max = 1.0))]
    pub statistic: f64,
    #[schemars(range(min = 0.0, max = 1.0))]
    pub p_value: f64,
    /// As scipy's `method='auto'` chooses.
    pub method: KsMethod,
}

/// The real engine's run-to-run variation of one metric, from repeated real runs: for
/// each other real run against the first, the same errors as for the simulator; the
/// largest over the runs is reported.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Noise {
    /// Real runs compared with the first.
    #[schemars(range(min = 1))]
    pub num_other_runs: usize,
    /// Largest |difference| of each summary statistic, %.
    pub max_abs_stat_diff_pct: PerStat<f64>,
    /// Largest per-request MAPE between two real runs, %.
    pub max_mape_pct: Option<f64>,
}

/// Everything compared for one metric.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct MetricComparison {
    pub metric: Metric,
    /// Paired values compared.
    #[schemars(range(min = 1))]
    pub count: usize,
    pub real: Summary,
    pub sim: Summary,
    pub stat_errors: PerStat<StatError>,
    /// `None` when every real value is 0.
    pub paired: Option<PairedErrors>,
    pub ks: KsSummary,
    /// Wasserstein-1 distance between the two distributions, ms.
    #[schemars(range(min = 0.0))]
    pub wasserstein_ms: f64,
    /// Run-to-run noise of the real engine, when several real runs were given.
    pub noise: Option<Noise>,
    /// Against every real run: pooled value, band, intervals, verdict per statistic;
    /// `None` when no value is in every run.
    pub fidelity: Option<MetricFidelity>,
}

impl MetricComparison {
    /// Compares the paired samples of one metric; `None` when there are none.
    pub fn of(metric: Metric, samples: &PairedSamples) -> Result<Option<Self>> {
        if samples.real_ms.is_empty() {
            return Ok(None);
        }
        let real = Summary::from_samples(&samples.real_ms)?;
        let sim = Summary::from_samples(&samples.sim_ms)?;
        let stat_errors = PerStat::try_from_fn(|s| StatError::of(s.of(&real), s.of(&sim)))?;
        let rel = RelErrors::from_pairs(&samples.sim_ms, &samples.real_ms)?;
        let paired = if rel.signed_pct.is_empty() {
            None
        } else {
            Some(PairedErrors {
                pairs: rel.signed_pct.len(),
                zero_real: rel.zero_real,
                mape_pct: rel.mape_pct()?,
                median_ape_pct: rel.median_ape_pct()?,
                mean_signed_pct: rel.mean_signed_pct()?,
            })
        };
        let ks = ks_two_sample(&samples.real_ms, &samples.sim_ms)?;
        Ok(Some(MetricComparison {
            metric,
            count: samples.real_ms.len(),
            real,
            sim,
            stat_errors,
            paired,
            ks: KsSummary {
                statistic: ks.statistic,
                p_value: ks.p_value,
                method: ks.method,
            },
            wasserstein_ms: wasserstein_1(&samples.real_ms, &samples.sim_ms)?,
            noise: None,
            fidelity: None,
        }))
    }

    /// The error of one summary statistic.
    pub fn stat_error(&self, stat: Stat) -> &StatError {
        self.stat_errors.get(stat)
    }
}

/// Folds the comparisons of other real runs against the first into [`Noise`].
pub fn noise_of(others: &[MetricComparison]) -> Option<Noise> {
    if others.is_empty() {
        return None;
    }
    let max_abs_stat_diff_pct = PerStat::from_fn(|stat| {
        others
            .iter()
            .filter_map(|c| c.stat_error(stat).abs_err_pct)
            .fold(0.0, f64::max)
    });
    let max_mape_pct = others
        .iter()
        .filter_map(|c| c.paired.as_ref().map(|p| p.mape_pct))
        .reduce(f64::max);
    Some(Noise {
        num_other_runs: others.len(),
        max_abs_stat_diff_pct,
        max_mape_pct,
    })
}

/// Throughput of one run over its served requests.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Throughput {
    pub completed_requests: usize,
    pub output_tokens: u64,
    /// From the first arrival to the last completion, s.
    #[schemars(range(min = 0.0))]
    pub span_s: f64,
    #[schemars(range(min = 0.0))]
    pub requests_per_s: f64,
    #[schemars(range(min = 0.0))]
    pub output_tokens_per_s: f64,
}

impl Throughput {
    /// Over the requests of a run that completed (`status = ok` with a completion time);
    /// `None` when none did or the span is 0.
    pub fn of(requests: &[RequestMetricsRow]) -> Option<Throughput> {
        let done: Vec<&RequestMetricsRow> = requests
            .iter()
            .filter(|r| r.status == RequestStatus::Ok && r.completion_time_ns.is_some())
            .collect();
        let first_arrival = requests.iter().map(|r| r.arrival_time_ns).min()?;
        let last_completion = done.iter().filter_map(|r| r.completion_time_ns).max()?;
        let span_ns = last_completion
            .checked_sub(first_arrival)
            .filter(|&s| s > 0)?;
        let span_s = span_ns as f64 / 1e9;
        let output_tokens: u64 = done
            .iter()
            .map(|r| u64::from(r.num_decode_tokens_actual))
            .sum();
        Some(Throughput {
            completed_requests: done.len(),
            output_tokens,
            span_s,
            requests_per_s: done.len() as f64 / span_s,
            output_tokens_per_s: output_tokens as f64 / span_s,
        })
    }
}

/// Real vs simulated throughput.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ThroughputComparison {
    pub real: Throughput,
    pub sim: Throughput,
    pub requests_per_s_err_pct: Option<f64>,
    pub output_tokens_per_s_err_pct: Option<f64>,
}

impl ThroughputComparison {
    /// `None` unless both runs have a throughput.
    pub fn of(real: &[RequestMetricsRow], sim: &[RequestMetricsRow]) -> Result<Option<Self>> {
        let (Some(real), Some(sim)) = (Throughput::of(real), Throughput::of(sim)) else {
            return Ok(None);
        };
        Ok(Some(ThroughputComparison {
            requests_per_s_err_pct: signed_rel_error_pct(sim.requests_per_s, real.requests_per_s)?,
            output_tokens_per_s_err_pct: signed_rel_error_pct(
                sim.output_tokens_per_s,
                real.output_tokens_per_s,
            )?,
            real,
            sim,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::records::RequestTimes;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9 * b.abs().max(1.0), "{a} vs {b}");
    }

    #[test]
    fn metric_comparison_on_hand_computed_values() {
        // real = 1..=5 ms, sim = real · 1.1 except the last, which is 4 (−20 %).
        let samples = PairedSamples {
            real_ms: vec![1.0, 2.0, 3.0, 4.0, 5.0],
            sim_ms: vec![1.1, 2.2, 3.3, 4.4, 4.0],
        };
        let c = MetricComparison::of(Metric::Ttft, &samples)
            .unwrap()
            .unwrap();
        assert_eq!(c.count, 5);
        // real p50 = 3; sim sorted [1.1, 2.2, 3.3, 4.0, 4.4] → p50 = 3.3 (+10 %).
        let p50 = c.stat_error(Stat::P50);
        close(p50.real_ms, 3.0);
        close(p50.sim_ms, 3.3);
        close(p50.err_pct.unwrap(), 10.0);
        // p90 (linear): real 4 + 0.6·1 = 4.6; sim 4.0 + 0.6·0.4 = 4.24 → −7.826 %.
        let p90 = c.stat_error(Stat::P90);
        close(p90.real_ms, 4.6);
        close(p90.sim_ms, 4.24);
        close(p90.err_pct.unwrap(), 100.0 * (4.24 - 4.6) / 4.6);
        close(p90.abs_err_pct.unwrap(), 100.0 * 0.36 / 4.6);
        // mean: 3 vs 3.0 → 0 %.
        close(c.stat_error(Stat::Mean).sim_ms, 3.0);
        let paired = c.paired.as_ref().unwrap();
        // |errors| = 10, 10, 10, 10, 20 → MAPE 12, median 10; signed mean (40 − 20)/5 = 4.
        close(paired.mape_pct, 12.0);
        close(paired.median_ape_pct, 10.0);
        close(paired.mean_signed_pct, 4.0);
        // Wasserstein-1 between sorted samples (equal sizes): mean |x_i − y_i| over sorted
        // pairs = (0.1 + 0.2 + 0.3 + 0 + 0.6) / 5 = 0.24.
        close(c.wasserstein_ms, 0.24);
        // KS: largest ECDF gap. At x in [1, 1.1) real is 0.2 ahead … at [3, 3.3) 0.6 vs 0.4.
        close(c.ks.statistic, 0.2);
    }

    #[test]
    fn noise_is_the_worst_other_run() {
        let base = PairedSamples {
            real_ms: vec![10.0, 20.0, 30.0],
            sim_ms: vec![11.0, 20.0, 30.0],
        };
        let worse = PairedSamples {
            real_ms: vec![10.0, 20.0, 30.0],
            sim_ms: vec![10.0, 24.0, 30.0],
        };
        let a = MetricComparison::of(Metric::E2e, &base).unwrap().unwrap();
        let b = MetricComparison::of(Metric::E2e, &worse).unwrap().unwrap();
        let noise = noise_of(&[a, b]).unwrap();
        assert_eq!(noise.num_other_runs, 2);
        close(noise.max_abs_stat_diff_pct.p50, 20.0);
        // MAPEs: run a (10 + 0 + 0)/3, run b (0 + 20 + 0)/3 → 6.667.
        close(noise.max_mape_pct.unwrap(), 20.0 / 3.0);
        assert!(noise_of(&[]).is_none());
    }

    #[test]
    fn throughput_counts_completed_requests_over_the_span() {
        let row = |id, arrival, times: &[u64]| {
            RequestMetricsRow::from_times(
                id,
                &RequestTimes {
                    arrival_time_ns: arrival,
                    scheduled_time_ns: Some(arrival),
                    token_times_ns: times.to_vec(),
                },
                4,
                times.len() as u32,
                0,
                0,
                "t",
                None,
            )
        };
        let real = [
            row(0, 0, &[1, 2]),
            row(1, 500_000_000, &[600_000_000, 2_000_000_000]),
        ];
        let sim = [
            row(0, 0, &[1, 2]),
            row(1, 500_000_000, &[600_000_000, 1_000_000_000]),
        ];
        let t = ThroughputComparison::of(&real, &sim).unwrap().unwrap();
        close(t.real.span_s, 2.0);
        close(t.real.requests_per_s, 1.0);
        close(t.real.output_tokens_per_s, 2.0);
        close(t.sim.requests_per_s, 2.0);
        close(t.requests_per_s_err_pct.unwrap(), 100.0);
    }
}
