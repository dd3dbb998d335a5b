//! The stage graph and the runner every stage binary shares: which stages a study has
//! ([`STUDY`], [`stages_of`]), which of them a stage reads ([`upstream_of`]), the run id and
//! dir each derives ([`plan`], what `pipeline --print-plan` prints and the Snakemake workflow
//! builds its DAG from), and [`stage_main`], the `main` of every stage binary, which makes a
//! stage's missing upstream stages first, make-style.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use serde::Serialize;

use crate::config::plan::compare_id;
use crate::io::rundir::{is_complete, is_current, Stage, SUCCESS_MARKER};
use crate::stages::{apply_aliases, exit, jobs, Job, StageArgs};
use crate::{Error, Result};

/// The stages of one study, in order.
pub const STUDY: [Stage; 5] = [
    Stage::Workload,
    Stage::VidurProfile,
    Stage::Real,
    Stage::Vidur,
    Stage::Compare,
];

/// Runs one stage of `job`'s configuration in this process.
pub fn run_stage(job: &Job, stage: Stage) -> Result<PathBuf> {
    let job = job.for_stage(stage);
    match stage {
        Stage::Workload => crate::stages::workload::run(&job),
        #[cfg(feature = "engine")]
        Stage::VidurProfile => crate::stages::vidur_profile::run(&job),
        #[cfg(feature = "engine")]
        Stage::Real => crate::stages::real::run(&job),
        #[cfg(not(feature = "engine"))]
        Stage::VidurProfile | Stage::Real => Err(not_built(stage, "engine")),
        Stage::Vidur => crate::stages::vidur::run(&job),
        #[cfg(feature = "report")]
        Stage::Compare => crate::stages::compare::run(&job),
        #[cfg(not(feature = "report"))]
        Stage::Compare => Err(not_built(stage, "report")),
        Stage::Replay => crate::stages::replay::run(&job),
        Stage::Sweep | Stage::Capacity | Stage::Fidelity => Err(Error::InvalidInput(format!(
            "`{}` is not a stage of a study",
            stage.dir_name()
        ))),
    }
}

#[cfg(not(all(feature = "engine", feature = "report")))]
fn not_built(stage: Stage, feature: &'static str) -> Error {
    Error::NotBuilt {
        what: format!("the `{}` stage", stage.binary_name()),
        feature,
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

/// Runs every stage of [`upstream_of`] whose run is missing, incomplete or made from inputs
/// redone since ([`is_current`]), in study order, saying on stderr what it makes and the
/// command that would make it alone.
pub fn make_upstream(job: &Job, stage: Stage) -> Result<()> {
    // `output.run_id` names this stage's own run; the inputs keep their derived ids.
    let mut job = job.clone();
    job.config.output.run_id = None;
    let job = &job;
    for upstream in upstream_of(job, stage) {
        let Some((_, dir)) = study_run(job, upstream)? else {
            continue;
        };
        if is_current(&dir) {
            continue;
        }
        let name = upstream.binary_name();
        let state = if is_complete(&dir) {
            "outdated"
        } else {
            "missing"
        };
        eprintln!(
            "{}: making the {state} `{name}` stage first ({})",
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

/// Relative form of `path` under the working directory, for printing.
pub fn display_path(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}
