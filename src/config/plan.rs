//! Stable run ids of every stage, derived from the same config.
//!
//! Each id hashes exactly what determines that stage's output (and the ids of its inputs),
//! so every stage can find the others' runs from the same overrides: `compare -- model=X`
//! knows which `real` and `vidur` runs `real -- model=X` and `vidur -- model=X` wrote.

use std::path::PathBuf;

use serde_json::json;

use crate::config::types::SimrealConfig;
use crate::io::ids::stable_id;
use crate::io::rundir::{RunLocation, Stage};
use crate::Result;

/// Hex digits of the hash part of run ids.
const ID_HEX_LEN: usize = 12;

impl SimrealConfig {
    fn id(&self, prefix: &str, parts: serde_json::Value) -> Result<String> {
        let hash = stable_id(&parts, "", ID_HEX_LEN)?;
        Ok(format!("{prefix}-{}-{hash}", self.model.name))
    }

    /// What determines the tokens a workload's prompts encode to.
    fn tokenizer_identity(&self) -> serde_json::Value {
        json!({
            "tokenizer": self.model.tokenizer,
            "vocab_size": self.model.vocab_size,
        })
    }

    /// Workload: the workload section, the model's context and tokenizer.
    pub fn workload_id(&self) -> Result<String> {
        self.id(
            "wl",
            json!({
                "workload": self.workload,
                "max_model_len": self.model.max_model_len,
                "tokenizer": self.tokenizer_identity(),
            }),
        )
    }

    /// The weight source as recorded in provenance and hashed into real run ids.
    pub fn weight_source(&self) -> String {
        match &self.model.weights_dir {
            Some(dir) => format!("dir:{}", dir.display()),
            None => format!("random:{}", self.model.weights_seed),
        }
    }

    /// Profiling bundle: architecture, device, dtype, threads and grid. Weight values do not
    /// change a dense model's timing, so the weight source is not part of it.
    pub fn bundle_id(&self) -> Result<String> {
        let mut model = serde_json::to_value(&self.model)
            .map_err(|e| crate::Error::InvalidInput(e.to_string()))?;
        if let Some(m) = model.as_object_mut() {
            for k in ["weights_dir", "weights_seed", "tokenizer", "max_model_len"] {
                m.remove(k);
            }
        }
        self.id(
            "prof",
            json!({
                "model": model,
                "device_sku": self.hardware.device_sku,
                "cpu_threads": self.hardware.cpu_threads,
                "device": self.backend.device,
                "dtype": self.dtype(),
                "block_size": self.scheduler.block_size,
                "profile": self.profile,
                "timing": self.timing,
            }),
        )
    }

    /// Real run: the workload, model and weights, hardware, backend and scheduler.
    pub fn real_run_id(&self) -> Result<String> {
        self.id(
            "real",
            json!({
                "workload_id": self.workload_id()?,
                "model": self.model,
                "weights": self.weight_source(),
                "hardware": self.hardware,
                "backend": self.backend,
                "scheduler": self.scheduler,
                "kv_pool_blocks": self.kv_pool()?.num_blocks,
                "timing": self.timing,
            }),
        )
    }

    /// Simulated run: the workload, the bundle it predicts from, the scheduler, the
    /// simulator's own settings and the KV pool (which must equal the real run's).
    pub fn sim_run_id(&self) -> Result<String> {
        let bundle = match &self.vidur.bundle {
            Some(path) => json!({"path": path}),
            None => json!({"id": self.bundle_id()?}),
        };
        self.id(
            "sim",
            json!({
                "workload_id": self.workload_id()?,
                "bundle": bundle,
                "model": self.model,
                "hardware": self.hardware,
                "dtype": self.dtype(),
                "scheduler": self.scheduler,
                "vidur": self.vidur,
                "kv_pool_blocks": self.kv_pool()?.num_blocks,
                "device_speed_of": self.device_speed_run_dir()?,
            }),
        )
    }

    /// The real run whose device speed the simulator's predictions are scaled to
    /// (`vidur.device_speed_correction`): `compare.real_run`'s first, else this config's.
    pub fn device_speed_run_dir(&self) -> Result<Option<PathBuf>> {
        if !self.vidur.device_speed_correction {
            return Ok(None);
        }
        match self.compare.real_run_dirs().into_iter().next() {
            Some(dir) => Ok(Some(dir)),
            None => self.real_run_dir().map(Some),
        }
    }

    /// Location of a stage's run for this config (`output.run_id` is applied by the stage
    /// being run, not here, so derived inputs keep their derived ids).
    pub fn location(&self, stage: Stage, id: String) -> RunLocation {
        RunLocation::new(self.output.root.clone(), stage, id)
    }

    pub fn workload_dir(&self) -> Result<PathBuf> {
        Ok(self.location(Stage::Workload, self.workload_id()?).path())
    }

    pub fn bundle_dir(&self) -> Result<PathBuf> {
        Ok(match &self.vidur.bundle {
            Some(p) => crate::config::types::resolve_input_path(p),
            None => self.location(Stage::VidurProfile, self.bundle_id()?).path(),
        })
    }

    pub fn real_run_dir(&self) -> Result<PathBuf> {
        Ok(self.location(Stage::Real, self.real_run_id()?).path())
    }

    pub fn sim_run_dir(&self) -> Result<PathBuf> {
        Ok(self.location(Stage::Vidur, self.sim_run_id()?).path())
    }
}

/// Compare id: the two (or more) runs compared and the comparison's settings
/// ([`CompareConfig::settings_key`](crate::config::types::CompareConfig::settings_key)).
pub fn compare_id(
    real_runs: &[String],
    sim_run: &str,
    settings: &serde_json::Value,
) -> Result<String> {
    let hash = stable_id(
        &json!({"real": real_runs, "sim": sim_run, "settings": settings}),
        "",
        ID_HEX_LEN,
    )?;
    Ok(format!("cmp-{hash}"))
}

/// The command that produces a stage's run for the given overrides, for error hints.
pub fn command_for(stage: Stage, overrides: &[String]) -> String {
    let bin = stage.binary_name();
    let mut cmd = format!("cargo run --release --bin {bin}");
    let passed: Vec<&String> = overrides
        .iter()
        .filter(|o| !o.starts_with("output.run_id=") && !o.starts_with("output.force="))
        .collect();
    if !passed.is_empty() {
        cmd.push_str(" --");
        for o in passed {
            cmd.push(' ');
            cmd.push_str(&shell_quote(o));
        }
    }
    cmd
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-.=/,:+~".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
