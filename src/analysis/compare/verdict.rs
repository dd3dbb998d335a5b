//! Is the simulator distinguishable from running the real engine again?
//!
//! Given K ≥ 1 real runs of one workload and a simulated run, for every metric and
//! statistic ([`Stat`]): the *pooled* real value (the statistic of all K runs' values
//! together), the *real band* (min..max of the K runs' own statistics), bootstrap confidence
//! intervals of the pooled value and of the simulator's error against it, the *noise ratio*
//! |sim − real| / (band width), and a verdict per cell ([`CellVerdict`]):
//!
//! * **indistinguishable** — the simulated value lies inside the band, and the band is
//!   narrower than twice the absolute target: the simulator is as close as a rerun is, and
//!   a rerun is close enough to tell;
//! * **noise-limited** — inside a band too wide to decide (≥ 2 × target): the machine's own
//!   variation hides any error below it; never a pass;
//! * **within target** — outside the band, but |error| ≤ target;
//! * **off** — outside the band and the target.
//!
//! With one real run there is no band: the noise is *unmeasured* (never invented) and a
//! cell is only within target or off. A percentile is not judged from fewer samples than it
//! needs ([`Stat::min_samples`]: P99 from 100) — *n too small* — nor a relative error against
//! a real value of 0 — *undefined*.
//!
//! All values of one request — every run's and the simulator's, and for ITL every token's —
//! are resampled together ([`crate::analysis::stats::GroupedSample`]); the method is in
//! `docs/fidelity_verdict.md`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analysis::stats::{
    ks_two_sample, signed_rel_error_pct, wasserstein_1, Bootstrap, GroupedSample, PerStat, Stat,
    Summary,
};
use crate::config::types::{CompareConfig, TargetsConfig};
use crate::Result;

use super::join::{RequestJoin, TokenJoin};
use super::statistics::Metric;

/// How cells are judged and intervals computed.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictSettings {
    pub targets: TargetsConfig,
    pub bootstrap: Bootstrap,
}

impl VerdictSettings {
    /// The settings under `compare.` of a config.
    pub fn of(cfg: &CompareConfig) -> Self {
        VerdictSettings {
            targets: cfg.targets.clone(),
            bootstrap: Bootstrap {
                resamples: cfg.bootstrap.resamples as usize,
                confidence: cfg.bootstrap.confidence,
                seed: cfg.bootstrap.seed,
            },
        }
    }

    /// The absolute target on |error| of `stat`, %.
    pub fn target_pct(&self, stat: Stat) -> f64 {
        let t = &self.targets;
        match stat {
            Stat::Mean => t.mean,
            Stat::P50 => t.p50,
            Stat::P90 => t.p90,
            Stat::P95 => t.p95,
            Stat::P99 => t.p99,
        }
    }
}

/// One metric's values in every real run and the simulated run, aligned: position j of
/// every side is the same request (for ITL, the same token gap of the same request), and
/// `groups[j]` numbers that request — the unit the bootstrap resamples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlignedSamples {
    pub groups: Vec<usize>,
    pub num_groups: usize,
    /// `real_ms[k][j]`: real run k's value at position j (run 0 is the reference).
    pub real_ms: Vec<Vec<f64>>,
    pub sim_ms: Vec<f64>,
}

/// A metric's values keyed by (request, token index; 0 for request metrics): `(first run,
/// second run)` of a join.
fn keyed(
    metric: Metric,
    requests: &RequestJoin,
    tokens: Option<&TokenJoin>,
) -> BTreeMap<(u64, u64), (f64, f64)> {
    if metric == Metric::Itl {
        return tokens
            .iter()
            .flat_map(|t| &t.pairs)
            .filter(|p| p.token_index > 0)
            .map(|p| {
                (
                    (p.request_id, p.token_index),
                    (
                        p.real_token_latency_ns as f64 / 1e6,
                        p.sim_token_latency_ns as f64 / 1e6,
                    ),
                )
            })
            .collect();
    }
    requests
        .pairs
        .iter()
        .filter_map(|p| {
            let (r, s) = (metric.of(&p.real)?, metric.of(&p.sim)?);
            Some(((p.request_id, 0), (r as f64 / 1e6, s as f64 / 1e6)))
        })
        .collect()
}

impl AlignedSamples {
    /// Values per side.
    pub fn len(&self) -> usize {
        self.sim_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sim_ms.is_empty()
    }

    /// The values of `metric` that the reference real run, the simulated run and every
    /// other real run all have: `sim` joins the reference with the simulated run, each of
    /// `others` joins the reference with another real run (which is its second side).
    pub fn of(
        metric: Metric,
        sim: (&RequestJoin, Option<&TokenJoin>),
        others: &[(RequestJoin, Option<TokenJoin>)],
    ) -> Self {
        let base = keyed(metric, sim.0, sim.1);
        let others: Vec<_> = others
            .iter()
            .map(|(r, t)| keyed(metric, r, t.as_ref()))
            .collect();
        let mut out = AlignedSamples {
            real_ms: vec![Vec::new(); 1 + others.len()],
            ..AlignedSamples::default()
        };
        let mut last_request = None;
        for (key, &(reference, simulated)) in &base {
            let Some(repeats) = others
                .iter()
                .map(|o| o.get(key).map(|v| v.1))
                .collect::<Option<Vec<f64>>>()
            else {
                continue;
            };
            if last_request != Some(key.0) {
                out.num_groups += 1;
                last_request = Some(key.0);
            }
            out.groups.push(out.num_groups - 1);
            out.real_ms[0].push(reference);
            for (k, v) in repeats.into_iter().enumerate() {
                out.real_ms[k + 1].push(v);
            }
            out.sim_ms.push(simulated);
        }
        out
    }
}

/// The verdict of one cell (module docs).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CellVerdict {
    Indistinguishable,
    NoiseLimited,
    WithinTarget,
    Off,
    /// Fewer samples than the statistic needs; nothing is reported.
    NTooSmall,
    /// The real value is 0, so a relative error is undefined.
    Undefined,
}

impl CellVerdict {
    /// Name in prose and tables.
    pub fn label(self) -> &'static str {
        match self {
            CellVerdict::Indistinguishable => "indistinguishable",
            CellVerdict::NoiseLimited => "noise-limited",
            CellVerdict::WithinTarget => "within target",
            CellVerdict::Off => "off",
            CellVerdict::NTooSmall => "n too small",
            CellVerdict::Undefined => "undefined (real value 0)",
        }
    }

    /// Whether the cell was judged at all (not `n too small` or `undefined`).
    pub fn judged(self) -> bool {
        !matches!(self, CellVerdict::NTooSmall | CellVerdict::Undefined)
    }
}

/// Width of the band in % of the pooled real value: 0 for a band of one value, `None` when
/// the real value is 0 (and the band is not).
pub fn band_width_pct(real_ms: f64, band: [f64; 2]) -> Option<f64> {
    let width = band[1] - band[0];
    if width == 0.0 {
        Some(0.0)
    } else {
        (real_ms != 0.0).then(|| 100.0 * width / real_ms.abs())
    }
}

/// |sim − real| in units of the band's width; `None` without a band or with a band of
/// zero width.
pub fn noise_ratio(real_ms: f64, sim_ms: f64, band: Option<[f64; 2]>) -> Option<f64> {
    let [lo, hi] = band?;
    (hi > lo).then(|| (sim_ms - real_ms).abs() / (hi - lo))
}

/// The verdict of a cell from its numbers (`band`: `None` with one real run).
pub fn judge(real_ms: f64, sim_ms: f64, band: Option<[f64; 2]>, target_pct: f64) -> CellVerdict {
    if let Some(b @ [lo, hi]) = band {
        if (lo..=hi).contains(&sim_ms) {
            return match band_width_pct(real_ms, b) {
                Some(w) if w < 2.0 * target_pct => CellVerdict::Indistinguishable,
                _ => CellVerdict::NoiseLimited,
            };
        }
    }
    match signed_rel_error_pct(sim_ms, real_ms).ok().flatten() {
        None => CellVerdict::Undefined,
        Some(e) if e.abs() <= target_pct => CellVerdict::WithinTarget,
        Some(_) => CellVerdict::Off,
    }
}

/// The numbers of a judged cell (absent when the sample is too small).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CellEstimate {
    /// The statistic of every real run's values pooled, ms.
    pub real_ms: f64,
    /// Its bootstrap confidence interval, ms.
    pub real_ci_ms: [f64; 2],
    /// The statistic of each real run by itself, ms (the reference first).
    pub real_runs_ms: Vec<f64>,
    /// min..max of `real_runs_ms`; `None` with one real run (noise unmeasured).
    pub real_band_ms: Option<[f64; 2]>,
    /// Width of the band, % of `real_ms`.
    pub band_width_pct: Option<f64>,
    pub sim_ms: f64,
    /// `100 · (sim − real) / real`; `None` when the real value is 0.
    pub err_pct: Option<f64>,
    /// Its bootstrap confidence interval (the simulated and real values of each request
    /// resampled together); `None` when some resample has a real value of 0.
    pub err_ci_pct: Option<[f64; 2]>,
    /// |sim − real| / band width; `None` without a band or with a band of zero width.
    pub noise_ratio: Option<f64>,
}

/// One statistic of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatCell {
    pub stat: Stat,
    pub verdict: CellVerdict,
    /// The absolute target on |error|, %.
    #[schemars(range(min = 0.0))]
    pub target_pct: f64,
    /// Samples per run this statistic needs ([`Stat::min_samples`]).
    #[schemars(range(min = 1))]
    pub min_samples: usize,
    pub estimate: Option<CellEstimate>,
}

/// A two-sample distance between the simulated run and each real run, set against the
/// same distance between every pair of real runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DistanceCheck {
    /// Against each real run, in run order.
    #[schemars(inner(range(min = 0.0)))]
    pub sim_vs_real: Vec<f64>,
    /// Between each pair of real runs (1–2, 1–3, …, 2–3, …).
    #[schemars(inner(range(min = 0.0)))]
    pub real_vs_real: Vec<f64>,
    /// Mean of `sim_vs_real`.
    #[schemars(range(min = 0.0))]
    pub sim_mean: f64,
    /// Smallest and largest of `real_vs_real`; `None` with one real run.
    pub real_range: Option<[f64; 2]>,
    /// `sim_mean` ≤ the largest real-vs-real distance: the simulator's distribution is
    /// as close to a real run's as another real run's is. `None` with one real run.
    pub within_real_range: Option<bool>,
}

impl DistanceCheck {
    fn of(
        runs: &[Vec<f64>],
        sim: &[f64],
        distance: impl Fn(&[f64], &[f64]) -> Result<f64>,
    ) -> Result<Self> {
        let sim_vs_real = runs
            .iter()
            .map(|r| distance(sim, r))
            .collect::<Result<Vec<_>>>()?;
        let mut real_vs_real = Vec::new();
        for (j, a) in runs.iter().enumerate() {
            for b in &runs[j + 1..] {
                real_vs_real.push(distance(a, b)?);
            }
        }
        let sim_mean = sim_vs_real.iter().sum::<f64>() / sim_vs_real.len() as f64;
        let real_range = real_vs_real.iter().fold(None, |acc: Option<[f64; 2]>, &d| {
            Some(acc.map_or([d, d], |[lo, hi]| [lo.min(d), hi.max(d)]))
        });
        Ok(DistanceCheck {
            within_real_range: real_range.map(|[_, hi]| sim_mean <= hi),
            sim_vs_real,
            real_vs_real,
            sim_mean,
            real_range,
        })
    }
}

/// Distribution-level check: KS D and Wasserstein-1 (ms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DistributionCheck {
    pub ks: DistanceCheck,
    pub wasserstein_ms: DistanceCheck,
}

/// The assessment of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MetricFidelity {
    #[schemars(range(min = 1))]
    pub num_real_runs: usize,
    /// Values per run (requests, or token gaps for ITL) present in every run.
    #[schemars(range(min = 1))]
    pub count: usize,
    /// Requests they belong to: what the bootstrap resamples.
    #[schemars(range(min = 1))]
    pub groups: usize,
    pub cells: PerStat<StatCell>,
    pub distribution: DistributionCheck,
}

impl MetricFidelity {
    /// Assesses `metric` from its aligned samples; `None` when no value is in every run.
    pub fn assess(
        metric: Metric,
        samples: &AlignedSamples,
        settings: &VerdictSettings,
    ) -> Result<Option<Self>> {
        if samples.is_empty() {
            return Ok(None);
        }
        let k = samples.real_ms.len();
        let n = samples.len();
        let pooled_values: Vec<f64> = samples.real_ms.concat();
        let pooled_groups: Vec<usize> = (0..k)
            .flat_map(|_| samples.groups.iter().copied())
            .collect();
        let pooled = GroupedSample::new(&pooled_values, &pooled_groups, samples.num_groups)?;
        let sim = GroupedSample::new(&samples.sim_ms, &samples.groups, samples.num_groups)?;
        let runs = samples
            .real_ms
            .iter()
            .map(|r| Summary::from_samples(r))
            .collect::<Result<Vec<_>>>()?;

        // Replicates of the pooled real value and of the error, per statistic.
        let mut real_reps: Vec<Vec<f64>> = vec![Vec::new(); Stat::ALL.len()];
        let mut err_reps: Vec<Option<Vec<f64>>> = vec![Some(Vec::new()); Stat::ALL.len()];
        settings
            .bootstrap
            .for_each_resample(metric as u64, samples.num_groups, |counts| {
                let (r, s) = (pooled.resampled(counts)?, sim.resampled(counts)?);
                for stat in Stat::ALL {
                    let i = stat as usize;
                    real_reps[i].push(r.get(stat));
                    let err = signed_rel_error_pct(s.get(stat), r.get(stat))?;
                    err_reps[i] = match (err_reps[i].take(), err) {
                        (Some(mut v), Some(e)) => {
                            v.push(e);
                            Some(v)
                        }
                        _ => None,
                    };
                }
                Ok(())
            })?;

        let (real_point, sim_point) = (pooled.stats(), sim.stats());
        let cells = PerStat::try_from_fn(|stat| -> Result<StatCell> {
            let target_pct = settings.target_pct(stat);
            let min_samples = stat.min_samples();
            let cell = if n < min_samples {
                StatCell {
                    stat,
                    verdict: CellVerdict::NTooSmall,
                    target_pct,
                    min_samples,
                    estimate: None,
                }
            } else {
                let (real_ms, sim_ms) = (real_point.get(stat), sim_point.get(stat));
                let real_runs_ms: Vec<f64> = runs.iter().map(|r| stat.of(r)).collect();
                let real_band_ms = (k > 1).then(|| {
                    real_runs_ms
                        .iter()
                        .fold([f64::INFINITY, f64::NEG_INFINITY], |[lo, hi], &v| {
                            [lo.min(v), hi.max(v)]
                        })
                });
                let i = stat as usize;
                StatCell {
                    stat,
                    verdict: judge(real_ms, sim_ms, real_band_ms, target_pct),
                    target_pct,
                    min_samples,
                    estimate: Some(CellEstimate {
                        real_ms,
                        real_ci_ms: settings.bootstrap.interval(&real_reps[i])?,
                        band_width_pct: real_band_ms.and_then(|b| band_width_pct(real_ms, b)),
                        noise_ratio: noise_ratio(real_ms, sim_ms, real_band_ms),
                        real_runs_ms,
                        real_band_ms,
                        sim_ms,
                        err_pct: signed_rel_error_pct(sim_ms, real_ms)?,
                        err_ci_pct: err_reps[i]
                            .as_deref()
                            .map(|reps| settings.bootstrap.interval(reps))
                            .transpose()?,
                    }),
                }
            };
            Ok(cell)
        })?;

        let distribution = DistributionCheck {
            ks: DistanceCheck::of(&samples.real_ms, &samples.sim_ms, |a, b| {
                Ok(ks_two_sample(a, b)?.statistic)
            })?,
            wasserstein_ms: DistanceCheck::of(&samples.real_ms, &samples.sim_ms, wasserstein_1)?,
        };
        Ok(Some(MetricFidelity {
            num_real_runs: k,
            count: n,
            groups: samples.num_groups,
            cells,
            distribution,
        }))
    }

    /// The cell of `stat`.
    pub fn cell(&self, stat: Stat) -> &StatCell {
        self.cells.get(stat)
    }
}

/// How many cells got each verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VerdictCounts {
    pub indistinguishable: usize,
    pub noise_limited: usize,
    pub within_target: usize,
    pub off: usize,
    pub n_too_small: usize,
    pub undefined: usize,
}

impl VerdictCounts {
    /// Counts `verdicts`.
    pub fn of(verdicts: impl IntoIterator<Item = CellVerdict>) -> Self {
        let mut c = VerdictCounts::default();
        for v in verdicts {
            *c.slot(v) += 1;
        }
        c
    }

    fn slot(&mut self, v: CellVerdict) -> &mut usize {
        match v {
            CellVerdict::Indistinguishable => &mut self.indistinguishable,
            CellVerdict::NoiseLimited => &mut self.noise_limited,
            CellVerdict::WithinTarget => &mut self.within_target,
            CellVerdict::Off => &mut self.off,
            CellVerdict::NTooSmall => &mut self.n_too_small,
            CellVerdict::Undefined => &mut self.undefined,
        }
    }

    /// Cells judged (the four verdicts).
    pub fn judged(&self) -> usize {
        self.indistinguishable + self.noise_limited + self.within_target + self.off
    }
}

/// The method settings, as `summary.json` records them.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct BootstrapInfo {
    pub method: &'static str,
    #[schemars(range(min = 1))]
    pub resamples: usize,
    pub confidence: f64,
    pub seed: u64,
}

/// The comparison-wide part of the assessment (`fidelity` in `summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct FidelitySummary {
    #[schemars(range(min = 1))]
    pub num_real_runs: usize,
    /// Whether there are two or more real runs, so that a band exists.
    pub noise_measured: bool,
    /// Over every cell of every compared metric.
    pub counts: VerdictCounts,
    pub targets_pct: TargetsConfig,
    pub bootstrap: BootstrapInfo,
    /// Metrics whose distribution check has a real range, and of them those within it.
    pub distribution_metrics: usize,
    pub ks_within_real_range: usize,
    pub wasserstein_within_real_range: usize,
}

/// What the bootstrap resamples, as recorded.
pub const BOOTSTRAP_METHOD: &str = "percentile interval; requests resampled with replacement, each bringing every run's and the simulator's values (and, for ITL, all its token gaps)";

impl FidelitySummary {
    /// Folds the per-metric assessments.
    pub fn of<'a>(
        num_real_runs: usize,
        metrics: impl IntoIterator<Item = &'a MetricFidelity> + Clone,
        settings: &VerdictSettings,
    ) -> Self {
        let counts = VerdictCounts::of(
            metrics
                .clone()
                .into_iter()
                .flat_map(|m| m.cells.values().map(|c| c.verdict)),
        );
        let with_range: Vec<&MetricFidelity> = metrics
            .into_iter()
            .filter(|m| m.distribution.ks.real_range.is_some())
            .collect();
        let within = |get: fn(&DistributionCheck) -> &DistanceCheck| {
            with_range
                .iter()
                .filter(|m| get(&m.distribution).within_real_range == Some(true))
                .count()
        };
        FidelitySummary {
            num_real_runs,
            noise_measured: num_real_runs > 1,
            counts,
            targets_pct: settings.targets.clone(),
            bootstrap: BootstrapInfo {
                method: BOOTSTRAP_METHOD,
                resamples: settings.bootstrap.resamples,
                confidence: settings.bootstrap.confidence,
                seed: settings.bootstrap.seed,
            },
            distribution_metrics: with_range.len(),
            ks_within_real_range: within(|d| &d.ks),
            wasserstein_within_real_range: within(|d| &d.wasserstein_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> VerdictSettings {
        VerdictSettings {
            targets: TargetsConfig {
                mean: 3.0,
                p50: 3.0,
                p90: 5.0,
                p95: 5.0,
                p99: 5.0,
            },
            bootstrap: Bootstrap {
                resamples: 1000,
                confidence: 0.95,
                seed: 42,
            },
        }
    }

    #[test]
    fn judge_follows_the_four_rules() {
        // Band 98..102 around 100 (4 % wide, under 2 × 3 %): inside is indistinguishable.
        let band = Some([98.0, 102.0]);
        assert_eq!(
            judge(100.0, 101.5, band, 3.0),
            CellVerdict::Indistinguishable
        );
        assert_eq!(
            judge(100.0, 98.0, band, 3.0),
            CellVerdict::Indistinguishable
        );
        // The same band against a 2 % target (4 % ≥ 2 × 2 %) cannot decide.
        assert_eq!(judge(100.0, 101.5, band, 2.0), CellVerdict::NoiseLimited);
        // Outside the band: the absolute target decides.
        assert_eq!(judge(100.0, 102.5, band, 3.0), CellVerdict::WithinTarget);
        assert_eq!(judge(100.0, 97.0, band, 3.0), CellVerdict::WithinTarget);
        assert_eq!(judge(100.0, 103.5, band, 3.0), CellVerdict::Off);
        // A wide band: inside is noise-limited, never a pass; outside it is still off.
        let wide = Some([80.0, 125.0]);
        assert_eq!(judge(100.0, 120.0, wide, 5.0), CellVerdict::NoiseLimited);
        assert_eq!(judge(100.0, 130.0, wide, 5.0), CellVerdict::Off);
        // One real run: no band, only the target.
        assert_eq!(judge(100.0, 104.0, None, 5.0), CellVerdict::WithinTarget);
        assert_eq!(judge(100.0, 100.0, None, 3.0), CellVerdict::WithinTarget);
        assert_eq!(judge(100.0, 106.0, None, 5.0), CellVerdict::Off);
        // A real value of 0: equal to a zero-width band is indistinguishable; otherwise the
        // relative error is undefined.
        assert_eq!(
            judge(0.0, 0.0, Some([0.0, 0.0]), 3.0),
            CellVerdict::Indistinguishable
        );
        assert_eq!(
            judge(0.0, 0.5, Some([0.0, 0.0]), 3.0),
            CellVerdict::Undefined
        );
        assert_eq!(judge(0.0, 0.5, None, 3.0), CellVerdict::Undefined);
        // A band that starts at 0 has no relative width: inside it cannot decide.
        assert_eq!(
            judge(0.0, 0.1, Some([0.0, 0.2]), 3.0),
            CellVerdict::NoiseLimited
        );
    }

    #[test]
    fn noise_ratio_is_the_distance_in_band_widths() {
        assert_eq!(noise_ratio(100.0, 110.0, Some([98.0, 102.0])), Some(2.5));
        assert_eq!(noise_ratio(100.0, 99.0, Some([98.0, 102.0])), Some(0.25));
        assert_eq!(noise_ratio(100.0, 110.0, None), None);
        assert_eq!(noise_ratio(100.0, 110.0, Some([100.0, 100.0])), None);
        assert_eq!(band_width_pct(50.0, [49.0, 51.0]), Some(4.0));
        assert_eq!(band_width_pct(0.0, [0.0, 0.0]), Some(0.0));
        assert_eq!(band_width_pct(0.0, [0.0, 1.0]), None);
    }

    /// Three real runs of 200 requests: each request's value is its base latency times a
    /// per-run factor; run-to-run the medians differ by a few percent.
    fn hand_built(n: usize, sim_scale: f64) -> AlignedSamples {
        let base: Vec<f64> = (0..n).map(|i| 10.0 + i as f64).collect();
        let run = |scale: f64| base.iter().map(|v| v * scale).collect::<Vec<_>>();
        AlignedSamples {
            groups: (0..n).collect(),
            num_groups: n,
            real_ms: vec![run(1.0), run(1.01), run(0.99)],
            sim_ms: run(sim_scale),
        }
    }

    #[test]
    fn hand_built_runs_get_band_noise_ratio_and_verdicts() {
        let s = settings();
        // Runs at ×1.00, ×1.01, ×0.99: the pooled P50 is the base median (109.5 for 200
        // requests 10..209), the band ±1 % of it; the simulator at ×1.005 is inside.
        let inside = MetricFidelity::assess(Metric::Ttft, &hand_built(200, 1.005), &s)
            .unwrap()
            .unwrap();
        assert_eq!(
            (inside.num_real_runs, inside.count, inside.groups),
            (3, 200, 200)
        );
        let p50 = inside.cell(Stat::P50);
        let e = p50.estimate.as_ref().unwrap();
        assert!((e.real_ms - 109.5).abs() < 0.01 * 109.5, "{e:?}");
        assert_eq!(e.real_runs_ms.len(), 3);
        let [lo, hi] = e.real_band_ms.unwrap();
        assert!((lo - 0.99 * 109.5).abs() < 1e-9 && (hi - 1.01 * 109.5).abs() < 1e-9);
        assert!((e.band_width_pct.unwrap() - 2.0).abs() < 0.05);
        assert_eq!(p50.verdict, CellVerdict::Indistinguishable);
        assert!(e.noise_ratio.unwrap() < 0.5, "{e:?}");
        // The simulator's values are its runs' exactly scaled, so the error's interval is
        // tight around +0.5 %.
        let [elo, ehi] = e.err_ci_pct.unwrap();
        assert!(elo <= e.err_pct.unwrap() && e.err_pct.unwrap() <= ehi);
        assert!(elo > -1.0 && ehi < 2.0, "{elo}..{ehi}");
        let [rlo, rhi] = e.real_ci_ms;
        assert!(rlo < e.real_ms && e.real_ms < rhi);
        assert!(inside.distribution.ks.within_real_range.unwrap());
        assert_eq!(inside.distribution.ks.real_vs_real.len(), 3);

        // ×1.04: outside the band, within the 5 % P90 target but not the 3 % P50 one; the
        // error is 4 % of the pooled value against a 2 % wide band.
        let off = MetricFidelity::assess(Metric::Ttft, &hand_built(200, 1.04), &s)
            .unwrap()
            .unwrap();
        assert_eq!(off.cell(Stat::P50).verdict, CellVerdict::Off);
        assert_eq!(off.cell(Stat::P90).verdict, CellVerdict::WithinTarget);
        let ratio = off.cell(Stat::P50).estimate.as_ref().unwrap().noise_ratio;
        assert!((ratio.unwrap() - 2.0).abs() < 0.1, "{ratio:?}");
        assert!(!off.distribution.wasserstein_ms.within_real_range.unwrap());
        let counts = VerdictCounts::of(off.cells.values().map(|c| c.verdict));
        assert_eq!(counts.judged(), 5);
        assert_eq!(counts.off + counts.within_target, 5, "{counts:?}");
    }

    #[test]
    fn percentiles_from_too_few_samples_are_not_reported() {
        // 99 requests: P99 needs 100; 19: P95 needs 20 too; 9: P90 needs 10.
        for (n, missing) in [
            (99, vec![Stat::P99]),
            (19, vec![Stat::P95, Stat::P99]),
            (9, vec![Stat::P90, Stat::P95, Stat::P99]),
            (100, vec![]),
        ] {
            let f = MetricFidelity::assess(Metric::E2e, &hand_built(n, 1.0), &settings())
                .unwrap()
                .unwrap();
            for stat in Stat::ALL {
                let c = f.cell(stat);
                if missing.contains(&stat) {
                    assert_eq!(c.verdict, CellVerdict::NTooSmall, "{n} {stat:?}");
                    assert!(c.estimate.is_none());
                } else {
                    assert!(c.verdict.judged(), "{n} {stat:?}");
                    assert!(c.estimate.is_some());
                }
            }
        }
    }

    #[test]
    fn one_real_run_leaves_the_noise_unmeasured() {
        let mut one = hand_built(120, 1.02);
        one.real_ms.truncate(1);
        let f = MetricFidelity::assess(Metric::Tpot, &one, &settings())
            .unwrap()
            .unwrap();
        for c in f.cells.values() {
            let e = c.estimate.as_ref().unwrap();
            assert_eq!(e.real_band_ms, None);
            assert_eq!(e.noise_ratio, None);
            assert_eq!(e.band_width_pct, None);
            assert!(matches!(
                c.verdict,
                CellVerdict::WithinTarget | CellVerdict::Off
            ));
        }
        assert_eq!(f.cell(Stat::P90).verdict, CellVerdict::WithinTarget);
        assert_eq!(f.distribution.ks.real_range, None);
        assert_eq!(f.distribution.ks.within_real_range, None);
        let summary = FidelitySummary::of(1, [&f], &settings());
        assert!(!summary.noise_measured);
        assert_eq!(summary.distribution_metrics, 0);
    }

    #[test]
    fn assessment_is_deterministic_for_a_seed() {
        let samples = hand_built(150, 1.02);
        let a = MetricFidelity::assess(Metric::E2e, &samples, &settings()).unwrap();
        let b = MetricFidelity::assess(Metric::E2e, &samples, &settings()).unwrap();
        assert_eq!(a, b);
        let mut other = settings();
        other.bootstrap.seed = 43;
        let c = MetricFidelity::assess(Metric::E2e, &samples, &other).unwrap();
        assert_ne!(
            a.unwrap().cells.p90.estimate.as_ref().unwrap().real_ci_ms,
            c.unwrap().cells.p90.estimate.as_ref().unwrap().real_ci_ms
        );
    }
}
