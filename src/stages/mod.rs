//! The stages, one module per binary, and what every stage binary does before and after its
//! own work: parse the command line, compose and validate the config (all multirun jobs
//! before running any), print it for `--cfg job`, make missing upstream stages
//! ([`graph`]), and report results and errors uniformly.

pub mod bundle;
#[cfg(feature = "report")]
pub mod compare;
pub mod graph;
#[cfg(feature = "engine")]
pub mod real;
pub mod replay;
pub mod specs;
pub mod vidur;
#[cfg(feature = "engine")]
pub mod vidur_profile;
pub mod workload;

pub use graph::stage_main;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use crate::config::plan::command_for;
use crate::config::yaml::to_yaml_string;
use crate::config::{compose, expand_multirun, Composed, ConfigDir, Override, SimrealConfig};
use crate::io::provenance::{utc_now, HostFingerprint, HydraInfo, RunMeta};
use crate::io::rundir::{prepare_fresh, RunLocation, Stage, StagingDir};
use crate::io::write_json;
use crate::Result;

/// Command line shared by all stage binaries: `<bin> [options] -- [overrides...]`.
#[derive(Debug, Clone, Parser)]
#[command(
    about = "simreal stage",
    after_help = "Overrides (Hydra syntax): group=option, a.b=value, +a.b=value, ~a.b.\nExamples: model=qwen3_tiny workload.qps=4 vidur=vllm"
)]
pub struct StageArgs {
    /// Print the composed config and exit (`--cfg job`).
    #[arg(long = "cfg", value_name = "job")]
    pub cfg: Option<String>,
    /// Same as `--cfg job`.
    #[arg(long)]
    pub print_resolved: bool,
    /// Run every combination of comma-separated override values.
    #[arg(short = 'm', long)]
    pub multirun: bool,
    /// Directory of composable configs (default: configs/compare_vidur_real).
    #[arg(long)]
    pub config_dir: Option<PathBuf>,
    /// Primary config to compose (default: the stage's own).
    #[arg(long)]
    pub config_name: Option<String>,
    /// Refuse, naming the command that makes it, when a stage this one reads is missing,
    /// instead of making it first (for scripts and workflow managers that order stages).
    #[arg(long)]
    pub no_upstream: bool,
    /// Overrides.
    #[arg(trailing_var_arg = true, allow_hyphen_values = false)]
    pub overrides: Vec<String>,
}

/// One composed, validated configuration to run.
#[derive(Debug, Clone)]
pub struct Job {
    pub stage: Stage,
    pub config: SimrealConfig,
    pub composed: Composed,
    /// The overrides of this job (one multirun combination).
    pub overrides: Vec<String>,
}

impl Job {
    /// Composes and validates one configuration.
    pub fn compose(
        stage: Stage,
        dir: &ConfigDir,
        config_name: &str,
        overrides: &[String],
    ) -> Result<Self> {
        let parsed = overrides
            .iter()
            .map(|o| Override::parse(o))
            .collect::<Result<Vec<_>>>()?;
        let composed = compose(dir, config_name, &parsed)?;
        let config = SimrealConfig::from_composed(&composed)?;
        // Computed properties can fail (weights larger than the memory budget): fail now,
        // before any work.
        config.computed().map_err(|e| composed.locate_error(e))?;
        Ok(Job {
            stage,
            config,
            composed,
            overrides: overrides.to_vec(),
        })
    }

    /// Convenience for tests and tools: compose the stage's primary config from the
    /// default config dir.
    pub fn from_overrides(stage: Stage, overrides: &[&str]) -> Result<Self> {
        let dir = ConfigDir::locate(None)?;
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        Self::compose(stage, &dir, stage.binary_name(), &overrides)
    }

    /// The same configuration composed for another stage (same overrides).
    pub fn for_stage(&self, stage: Stage) -> Job {
        Job {
            stage,
            ..self.clone()
        }
    }

    /// This job's configuration with `extra` overrides appended (recomposed and revalidated).
    pub fn with_overrides(&self, extra: &[String]) -> Result<Job> {
        let dir = ConfigDir::new(&self.composed.config_dir)?;
        let mut overrides = self.overrides.clone();
        overrides.extend(extra.iter().cloned());
        Self::compose(self.stage, &dir, &self.composed.config_name, &overrides)
    }

    /// The command that runs `stage` with this job's overrides (for error hints).
    pub fn command_for(&self, stage: Stage) -> String {
        command_for(stage, &self.overrides)
    }

    /// The run id of this job's own stage: `output.run_id` if given, else `derived`.
    pub fn own_run_id(&self, derived: String) -> String {
        self.config.output.run_id.clone().unwrap_or(derived)
    }

    /// `hydra` provenance block.
    pub fn hydra(&self) -> HydraInfo {
        HydraInfo {
            config_path: self.composed.config_dir.display().to_string(),
            config_name: self.composed.config_name.clone(),
            overrides: self.overrides.clone(),
            choices: self.composed.choices.clone(),
        }
    }

    /// The resolved config plus its computed properties, as saved in run dirs.
    pub fn params(&self) -> Result<serde_json::Value> {
        let mut v = serde_json::to_value(&self.config)
            .map_err(|e| crate::Error::InvalidInput(e.to_string()))?;
        let computed = serde_json::to_value(self.config.computed()?)
            .map_err(|e| crate::Error::InvalidInput(e.to_string()))?;
        if let Some(m) = v.as_object_mut() {
            m.insert("computed".into(), computed);
        }
        Ok(v)
    }

    /// Provenance record for a run of this job.
    pub fn run_meta(&self, run_id: &str) -> Result<RunMeta> {
        let env = HostFingerprint::collect(
            match self.config.backend.device {
                crate::config::types::Device::Cpu => "cpu",
                crate::config::types::Device::Cuda => "cuda:0",
            },
            self.config.hardware.cpu_threads,
        );
        Ok(RunMeta::begin(
            run_id,
            self.stage,
            &self.config.model.name,
            self.params()?,
            self.hydra(),
            env,
        ))
    }

    /// The one way a stage writes its run dir: a complete run is reused (saying `up to
    /// date`) unless `output.force`; otherwise `write` fills a staging dir, then come the
    /// resolved `config.yaml`, `run_meta.json` (begun before `write`, which adds to it, and
    /// ended after) and `_SUCCESS`, last, with the dir's atomic rename. A failure anywhere
    /// leaves nothing that reads as complete.
    pub fn write_run(
        &self,
        location: &RunLocation,
        run_id: &str,
        write: impl FnOnce(&StagingDir, &mut RunMeta) -> Result<()>,
    ) -> Result<PathBuf> {
        let Some(staging) = prepare_fresh(location, self.config.output.force)? else {
            return Ok(location.path());
        };
        let mut meta = self.run_meta(run_id)?;
        write(&staging, &mut meta)?;
        self.write_resolved_config(staging.path())?;
        meta.ended_at = utc_now();
        write_json(staging.file("run_meta.json"), &meta)?;
        staging.commit()
    }

    /// Writes the resolved config (YAML) into a run dir.
    pub fn write_resolved_config(&self, dir: &Path) -> Result<()> {
        let value = serde_json::to_value(&self.config)
            .map_err(|e| crate::Error::InvalidInput(e.to_string()))?;
        crate::io::write_atomic(dir.join("config.yaml"), to_yaml_string(&value)?.as_bytes())
    }

    /// The resolved config and its computed properties as YAML.
    pub fn render(&self) -> Result<String> {
        let value = serde_json::to_value(&self.config)
            .map_err(|e| crate::Error::InvalidInput(e.to_string()))?;
        let computed = serde_json::to_value(self.config.computed()?)
            .map_err(|e| crate::Error::InvalidInput(e.to_string()))?;
        let mut out = to_yaml_string(&value)?;
        out.push_str("# computed (not settable):\n");
        for line in to_yaml_string(&serde_json::json!({ "computed": computed }))?.lines() {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
        Ok(out)
    }
}

/// Parses arguments into jobs. Every multirun combination is composed and validated before
/// any runs, so a bad value fails before work starts. With `--cfg job` the configs are
/// printed and no job is returned.
pub fn jobs(args: &StageArgs, stage: Stage) -> Result<Vec<Job>> {
    let dir = ConfigDir::locate(args.config_dir.as_deref())?;
    let name = args
        .config_name
        .clone()
        .unwrap_or_else(|| stage.binary_name().to_string());
    let combos = if args.multirun {
        expand_multirun(&args.overrides)?
    } else {
        vec![args.overrides.clone()]
    };
    let jobs = combos
        .iter()
        .map(|o| Job::compose(stage, &dir, &name, o))
        .collect::<Result<Vec<_>>>()?;
    let print = args.print_resolved || args.cfg.is_some();
    if let Some(what) = &args.cfg {
        if what != "job" {
            return Err(crate::Error::InvalidInput(format!(
                "--cfg {what}: only `--cfg job` is supported"
            )));
        }
    }
    if print {
        for job in &jobs {
            if jobs.len() > 1 {
                println!("# overrides: {}", job.overrides.join(" "));
            }
            print!("{}", job.render()?);
        }
        return Ok(Vec::new());
    }
    Ok(jobs)
}

/// Turns a binary's result into an exit code, printing the error chain.
pub fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Rewrites `alias=value` overrides to `key=value`; everything else is kept as given.
pub fn apply_aliases(overrides: &[String], aliases: &[(&str, &str)]) -> Vec<String> {
    overrides
        .iter()
        .map(|o| {
            aliases
                .iter()
                .find_map(|(alias, key)| {
                    let value = o.strip_prefix(alias)?.strip_prefix('=')?;
                    Some(format!("{key}={value}"))
                })
                .unwrap_or_else(|| o.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::apply_aliases;

    #[test]
    fn aliases_rewrite_only_their_own_bare_keys() {
        let given: Vec<String> = [
            "real_run=tmp/real/a,tmp/real/b",
            "sim_run=/x/y.json",
            "real_run_extra=1",
            "model=qwen3_tiny",
            "compare.sim_run=z",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let aliases = [
            ("real_run", "compare.real_run"),
            ("sim_run", "compare.sim_run"),
        ];
        assert_eq!(
            apply_aliases(&given, &aliases),
            [
                "compare.real_run=tmp/real/a,tmp/real/b",
                "compare.sim_run=/x/y.json",
                "real_run_extra=1",
                "model=qwen3_tiny",
                "compare.sim_run=z",
            ]
        );
    }
}
