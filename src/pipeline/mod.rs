//! The whole study in one command: workload → vidur_profile → real → vidur → compare.
//!
//! Every stage is idempotent (a complete run dir is reused), so the pipeline simply runs each
//! stage in order and reports what it did; a second invocation prints `up to date` for every
//! stage and the report path. [`plan`] derives every stage's run id, dir and command without
//! running anything, which is what the Snakemake workflow builds its DAG from. Sweeps
//! ([`sweep`]), the capacity search ([`capacity`]) and the fidelity benchmark ([`fidelity`])
//! are built on the same study.

pub mod capacity;
pub mod fidelity;
pub mod sweep;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::analysis::stats::Stat;
use crate::config::plan::compare_id;
use crate::io::rundir::{is_complete, Stage, SUCCESS_MARKER};
use crate::stage::Job;
use crate::{Error, Result};

/// The stages of one study, in order.
pub const STUDY: [Stage; 5] = [
    Stage::Workload,
    Stage::VidurProfile,
    Stage::Real,
    Stage::Vidur,
    Stage::Compare,
];

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

/// Runs one stage of `job`'s configuration in this process.
pub fn run_stage(job: &Job, stage: Stage) -> Result<PathBuf> {
    let job = job.for_stage(stage);
    match stage {
        Stage::Workload => crate::workloads::stage::run(&job),
        Stage::VidurProfile => crate::vidur_ext::profile_stage::run(&job),
        Stage::Real => crate::real_bench::stage::run(&job),
        Stage::Vidur => crate::vidur_ext::sim_stage::run(&job),
        Stage::Compare => crate::analysis::compare::stage::run(&job),
        Stage::Sweep | Stage::Capacity | Stage::Fidelity => Err(Error::InvalidInput(format!(
            "`{}` is not a stage of a study",
            stage.dir_name()
        ))),
    }
}

/// The stages a configuration needs: the profile is skipped when `vidur.bundle` names an
/// existing bundle.
pub fn stages_of(job: &Job) -> Vec<Stage> {
    STUDY
        .into_iter()
        .filter(|s| *s != Stage::VidurProfile || job.config.vidur.bundle.is_none())
        .collect()
}

/// One stage of a planned study.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedStage {
    pub id: String,
    pub dir: PathBuf,
    /// `<dir>/_SUCCESS`: exists exactly when the stage is complete.
    pub marker: PathBuf,
    /// Binary name followed by the overrides that make this run.
    pub command: Vec<String>,
    pub complete: bool,
}

/// Every stage's run of one configuration, derived without running anything.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub overrides: Vec<String>,
    /// By stage name (`workload`, `vidur_profile`, `real`, `vidur`, `compare`).
    pub stages: BTreeMap<&'static str, PlannedStage>,
}

/// Derives the run ids and dirs of every stage of `job`'s study.
pub fn plan(job: &Job) -> Result<Plan> {
    if job.config.output.run_id.is_some() {
        return Err(Error::config(
            "output.run_id",
            "names a single stage's run dir; a study derives every stage's id (drop it, or run that stage's binary)",
        ));
    }
    let cfg = &job.config;
    let real_id = cfg.real_run_id()?;
    let sim_id = cfg.sim_run_id()?;
    let mut stages = BTreeMap::new();
    for stage in stages_of(job) {
        let (id, dir) = match stage {
            Stage::Workload => (cfg.workload_id()?, cfg.workload_dir()?),
            Stage::VidurProfile => (cfg.bundle_id()?, cfg.bundle_dir()?),
            Stage::Real => (real_id.clone(), cfg.real_run_dir()?),
            Stage::Vidur => (sim_id.clone(), cfg.sim_run_dir()?),
            Stage::Compare => {
                let id = compare_id(
                    std::slice::from_ref(&real_id),
                    &sim_id,
                    &cfg.compare.settings_key()?,
                )?;
                let dir = cfg.location(Stage::Compare, id.clone()).path();
                (id, dir)
            }
            Stage::Sweep | Stage::Capacity | Stage::Fidelity => continue,
        };
        let mut command = vec![stage.binary_name().to_string()];
        command.extend(job.overrides.iter().cloned());
        stages.insert(
            stage.binary_name(),
            PlannedStage {
                id,
                marker: dir.join(SUCCESS_MARKER),
                complete: is_complete(&dir),
                dir,
                command,
            },
        );
    }
    Ok(Plan {
        overrides: job.overrides.clone(),
        stages,
    })
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

/// Relative form of `path` under the working directory, for printing.
pub fn display_path(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
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
