//! The whole study in one command: workload → vidur_profile → real → vidur → compare.
//!
//! This module knows the stage graph: [`stage_main`] is what every stage binary runs (it makes
//! a stage's missing upstream stages first, make-style, then the stage), [`run_study`] runs
//! them all.
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
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use serde::Serialize;

use crate::analysis::stats::Stat;
use crate::config::plan::compare_id;
use crate::io::rundir::{is_complete, Stage, SUCCESS_MARKER};
use crate::stage::{apply_aliases, exit, jobs, Job, StageArgs};
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
        Stage::Replay => crate::vidur_ext::replay_stage::run(&job),
        Stage::Sweep | Stage::Capacity | Stage::Fidelity => Err(Error::InvalidInput(format!(
            "`{}` is not a stage of a study",
            stage.dir_name()
        ))),
    }
}

/// The `main` of a stage binary: parse `<bin> [options] -- [overrides]` (each `(alias, key)`
/// of `aliases` rewrites a bare `alias=value` to `key=value`), then for every job make the
/// stage's missing upstream stages ([`make_upstream`]; `--no-upstream` refuses instead) and
/// run the stage, printing each primary output path (the last line is the last job's).
pub fn stage_main(stage: Stage, aliases: &[(&str, &str)]) -> ExitCode {
    let mut args = StageArgs::parse();
    args.overrides = apply_aliases(&args.overrides, aliases);
    exit(run_stage_jobs(&args, stage))
}

fn run_stage_jobs(args: &StageArgs, stage: Stage) -> anyhow::Result<()> {
    use anyhow::Context;
    let jobs = jobs(args, stage)?;
    let n = jobs.len();
    for (i, job) in jobs.iter().enumerate() {
        if n > 1 {
            eprintln!("[{}/{n}] {}", i + 1, job.overrides.join(" "));
        }
        if !args.no_upstream {
            make_upstream(job, stage)?;
        }
        let path =
            run_stage(job, stage).with_context(|| format!("{} stage failed", stage.dir_name()))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// The stages of `job`'s study that `stage` reads, in study order: `real` reads the workload;
/// `vidur` the workload and the profile (and the real run when it corrects for device speed);
/// `replay` the real run and the profile; `compare` the real and simulated runs and what they
/// read. Runs that the configuration names by path (`compare.real_run`, `compare.sim_run`,
/// `vidur.bundle`) are not made.
pub fn upstream_of(job: &Job, stage: Stage) -> Vec<Stage> {
    let cfg = &job.config;
    let real_given = !cfg.compare.real_run_dirs().is_empty();
    let sim_given = cfg.compare.sim_run_dir().is_some();
    let mut needs = Vec::new();
    let add_real = |needs: &mut Vec<Stage>| {
        if !real_given {
            needs.extend([Stage::Workload, Stage::Real]);
        }
    };
    match stage {
        Stage::Real => needs.push(Stage::Workload),
        Stage::Vidur => {
            needs.extend([Stage::Workload, Stage::VidurProfile]);
            if cfg.vidur.device_speed_correction {
                add_real(&mut needs);
            }
        }
        Stage::Replay => {
            needs.push(Stage::VidurProfile);
            add_real(&mut needs);
        }
        Stage::Compare => {
            add_real(&mut needs);
            if !sim_given {
                needs.extend(upstream_of(job, Stage::Vidur));
                needs.push(Stage::Vidur);
            }
        }
        _ => {}
    }
    stages_of(job)
        .into_iter()
        .filter(|s| needs.contains(s))
        .collect()
}

/// Runs every stage of [`upstream_of`] whose run is missing or incomplete, in study order,
/// saying on stderr what it makes and the command that would make it alone.
pub fn make_upstream(job: &Job, stage: Stage) -> Result<()> {
    // `output.run_id` names this stage's own run; the inputs keep their derived ids.
    let mut job = job.clone();
    job.config.output.run_id = None;
    let job = &job;
    for upstream in upstream_of(job, stage) {
        let Some((_, dir)) = study_run(job, upstream)? else {
            continue;
        };
        if is_complete(&dir) {
            continue;
        }
        let name = upstream.binary_name();
        eprintln!(
            "{}: making the missing `{name}` stage first ({})",
            stage.binary_name(),
            job.command_for(upstream)
        );
        let started = Instant::now();
        run_stage(job, upstream)
            .map_err(|e| Error::Msg(format!("upstream stage `{name}` failed: {e}")))?;
        eprintln!(
            "{}: `{name}` done in {:.1} s: {}",
            stage.binary_name(),
            started.elapsed().as_secs_f64(),
            display_path(&dir)
        );
    }
    Ok(())
}

/// The run id and dir of `stage` in `job`'s study, as the stages derive them (`None` for a
/// stage that is not part of a study).
fn study_run(job: &Job, stage: Stage) -> Result<Option<(String, PathBuf)>> {
    let cfg = &job.config;
    Ok(Some(match stage {
        Stage::Workload => (cfg.workload_id()?, cfg.workload_dir()?),
        Stage::VidurProfile => (cfg.bundle_id()?, cfg.bundle_dir()?),
        Stage::Real => (cfg.real_run_id()?, cfg.real_run_dir()?),
        Stage::Vidur => (cfg.sim_run_id()?, cfg.sim_run_dir()?),
        Stage::Compare => {
            let id = compare_id(
                &[cfg.real_run_id()?],
                &cfg.sim_run_id()?,
                &cfg.compare.settings_key()?,
            )?;
            let dir = cfg.location(Stage::Compare, id.clone()).path();
            (id, dir)
        }
        Stage::Replay | Stage::Sweep | Stage::Capacity | Stage::Fidelity => return Ok(None),
    }))
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
    let mut stages = BTreeMap::new();
    for stage in stages_of(job) {
        let Some((id, dir)) = study_run(job, stage)? else {
            continue;
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
