//! The bundle a stage uses: which rows a config selects, where it is, whether it is complete,
//! and whether it was measured on the device of the run it predicts. Shared by the profiler
//! (which writes it) and by `vidur`, `replay` and `compare` (which read it), so it needs
//! neither candle nor the engine.

use std::path::{Path, PathBuf};

use crate::config::types::SimrealConfig;
use crate::io::bundle::{Bundle, BundleLocation, BundleModelSpec, LoadOptions, ProfilingMeta};
use crate::io::device::{check_bundle_device, CrossDevice, DeviceIdentity};
use crate::io::provenance::RunMeta;
use crate::io::rundir::{require_complete, Stage};
use crate::stages::Job;
use crate::{Error, Result};

/// The bundle rows a config's model selects: its key columns (every architecture configured
/// here, Llama and Qwen3, has a gated SwiGLU MLP). Shared by the profiler and the simulator.
pub fn bundle_spec(cfg: &SimrealConfig) -> BundleModelSpec {
    let m = &cfg.model;
    BundleModelSpec {
        n_head: m.num_attention_heads,
        n_kv_head: m.num_key_value_heads,
        n_embd: m.hidden_size,
        n_expanded_embd: m.intermediate_size,
        vocab_size: m.vocab_size,
        use_gated_mlp: true,
        num_tensor_parallel_workers: cfg.vidur.tensor_parallel_size,
        block_size: cfg.scheduler.block_size,
    }
}

/// Loads the bundle at `dir` for the config's model. A bundle of ours (with
/// `profiling_meta.json`) must have been profiled for the same model (`model.hf_name`); any
/// bundle must have rows for the model's dimensions. Errors name what differs.
pub fn load_bundle(cfg: &SimrealConfig, dir: &Path) -> Result<Bundle> {
    let spec = bundle_spec(cfg);
    let location = if dir.join("profiling_meta.json").is_file() {
        let (location, meta) = BundleLocation::from_meta(dir)?;
        if meta.model_name != cfg.model.hf_name {
            return Err(Error::Mismatch(format!(
                "bundle {} was profiled for `{}`, but the configured model `{}` is `{}`",
                dir.display(),
                meta.model_name,
                cfg.model.name,
                cfg.model.hf_name
            )));
        }
        if !meta.models.contains(&spec) {
            return Err(Error::Mismatch(format!(
                "bundle {} holds {}, but the config needs {spec}",
                dir.display(),
                meta.models
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        location
    } else {
        BundleLocation::new(dir, &cfg.hardware.device_sku, &cfg.model.hf_name)
    };
    Bundle::load(&location, &spec, &LoadOptions::default())
}

/// The device and dtype the bundle at `dir` was measured on; `None` for a bundle without
/// `profiling_meta.json` (Vidur's) or an old one of ours that says too little.
pub fn bundle_device(dir: &Path) -> Result<Option<DeviceIdentity>> {
    let path = dir.join("profiling_meta.json");
    if !path.is_file() {
        return Ok(None);
    }
    Ok(ProfilingMeta::read(&path)?.device_identity())
}

/// Checks that the bundle at `bundle_dir` was measured on the device and dtype the real run
/// at `real_run` ran with ([`check_bundle_device`]): `Ok(None)` when they match or when
/// either side records no identity (Vidur's bundles, vLLM results); with `allow_cross_device`
/// the difference, otherwise [`Error::Mismatch`] naming both.
pub fn check_bundle_for_real_run(
    bundle_dir: &Path,
    real_run: &Path,
    allow_cross_device: bool,
) -> Result<Option<CrossDevice>> {
    let Some(bundle) = bundle_device(bundle_dir)? else {
        return Ok(None);
    };
    let meta_path = real_run.join("run_meta.json");
    if !meta_path.is_file() {
        return Ok(None);
    }
    let meta = RunMeta::read(real_run)?;
    if meta.run_type != Stage::Real {
        return Ok(None);
    }
    let Some(run) = DeviceIdentity::of_real_run(&meta) else {
        return Ok(None);
    };
    check_bundle_device(
        bundle_dir,
        &bundle,
        &format!("real run {} ran on", real_run.display()),
        &run,
        allow_cross_device,
    )
}

/// Finds the bundle a config uses: `vidur.bundle`, or the one this stage writes for it,
/// which must be complete.
pub fn configured_bundle_dir(job: &Job) -> Result<PathBuf> {
    let dir = job.config.bundle_dir()?;
    if job.config.vidur.bundle.is_none() {
        require_complete(
            &dir,
            "profiling bundle",
            &job.command_for(Stage::VidurProfile),
        )?;
    }
    Ok(dir)
}
