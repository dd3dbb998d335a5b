//! The whole study in one command: workload → vidur_profile → real → vidur → compare.
//!
//! [`run_study`] runs every stage of one configuration's study in this process, in the order
//! of the stage graph ([`crate::stages::graph`]).
//!
//! Every stage is idempotent (a complete run dir is reused), so the pipeline simply runs each
//! stage in order and reports what it did; a second invocation prints `up to date` for every
//! stage and the report path. Sweeps
//! ([`sweep`]), the capacity search ([`capacity`]) and the fidelity benchmark ([`fidelity`])
//! are built on the same study.

pub mod capacity;
pub mod fidelity;
pub mod sweep;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::analysis::stats::Stat;
use crate::stages::graph::{plan, run_stage, stages_of};
use crate::stages::Job;
use crate::{Error, Result};

/// Metrics (key in a comparison's `summary.json`, label) that sweeps and the fidelity
/// benchmark summarise, and the percentiles they summarise them by.
pub const SUMMARY_METRICS: [(&str, &str); 3] = [("ttft", "TTFT"), ("tpot", "TPOT"), ("e2e", "E2E")];
pub const SUMMARY_QUANTILES: [&str; 3] = ["p50", "p90", "p99"];

/// `metrics.<metric>.stat_errors.<quantile>.<field>` of a comparison's `summary.json`
/// (`real_ms`, `sim_ms`, `err_pct`); `None` where the metric was not available or has fewer
/// samples than the percentile needs ([`Stat::min_samples`]: P99 from 100), as no report
/// prints a percentile from too few.
pub fn stat_error(
    summary: &serde_json::Value,
    metric: &str,
    quantile: &str,
    field: &str,
) -> Option<f64> {
    let m = &summary["metrics"][metric];
    let needs = Stat::from_key(quantile)?.min_samples();
    if m["count"].as_u64().is_none_or(|n| n < needs as u64) {
        return None;
    }
    m["stat_errors"][quantile][field].as_f64()
}

/// What one study produced.
#[derive(Debug, Clone)]
pub struct StudyOutcome {
    pub dirs: BTreeMap<&'static str, PathBuf>,
    /// The comparison's `report.md`.
    pub report: PathBuf,
}

/// Runs every stage of `job`'s study in order, skipping complete ones, with a progress line
/// per stage on stderr.
pub fn run_study(job: &Job) -> Result<StudyOutcome> {
    plan(job)?; // rejects what a study cannot take before any work
    let stages = stages_of(job);
    let n = stages.len();
    let mut dirs = BTreeMap::new();
    for (i, stage) in stages.into_iter().enumerate() {
        let name = stage.binary_name();
        eprintln!("[{}/{n}] {name} …", i + 1);
        let started = Instant::now();
        let dir =
            run_stage(job, stage).map_err(|e| Error::Msg(format!("stage `{name}` failed: {e}")))?;
        eprintln!(
            "[{}/{n}] {name} done in {:.1} s: {}",
            i + 1,
            started.elapsed().as_secs_f64(),
            dir.display()
        );
        dirs.insert(name, dir);
    }
    let report = dirs
        .get("compare")
        .map(|d| d.join("report.md"))
        .ok_or_else(|| Error::Msg("the study has no compare stage".into()))?;
    Ok(StudyOutcome { dirs, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_error_leaves_out_percentiles_from_too_few_samples() {
        let summary = |count: u64| {
            serde_json::json!({"metrics": {"ttft": {
                "count": count,
                "stat_errors": {"p50": {"err_pct": 1.0}, "p90": {"err_pct": 2.0}, "p99": {"err_pct": 3.0}}
            }}})
        };
        let s = summary(99);
        assert_eq!(stat_error(&s, "ttft", "p50", "err_pct"), Some(1.0));
        assert_eq!(stat_error(&s, "ttft", "p90", "err_pct"), Some(2.0));
        assert_eq!(stat_error(&s, "ttft", "p99", "err_pct"), None);
        assert_eq!(
            stat_error(&summary(100), "ttft", "p99", "err_pct"),
            Some(3.0)
        );
        assert_eq!(stat_error(&summary(9), "ttft", "p90", "err_pct"), None);
        assert_eq!(stat_error(&s, "tpot", "p50", "err_pct"), None);
    }
}
