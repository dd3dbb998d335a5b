//! The `vidur` stage: replay a workload through the discrete-event simulator.
//!
//! config → inputs (the workload, a profiling bundle or Vidur's prediction tables, the KV
//! pool) → [`Simulator`] → `tmp/vidur/<run_id>/`: `request_metrics.csv`,
//! `token_metrics.csv`, `batch_metrics.csv`, `batch_requests.csv` (schema v1, as `real`
//! writes them, `backend = vidur_sim`), `config.yaml`, `run_meta.json`, `_SUCCESS`.
//! `vidur.token_metrics=false` / `vidur.batch_requests=false` leave out those two files
//! (millions of rows on a long trace; Vidur writes neither).
//!
//! Inputs:
//! - the workload this config names (`LoadedWorkload::for_job`); it must be for this model;
//! - `vidur.bundle = null`: the bundle `vidur_profile` makes for this config
//!   (`cfg.bundle_dir()`, complete with `_SUCCESS`); otherwise any bundle root in Vidur's
//!   layout, e.g. Vidur's own `../shared/vidur_reference/profiling`. A root with a
//!   `profiling_meta.json` (ours) says which device and model it holds, and that must be this
//!   config's; a root without one (Vidur's) is read at `compute/<hardware.device_sku>/
//!   <model.hf_name>/`, averaging the grid points Vidur's files repeat;
//! - `vidur.network` names `<bundle>/network/<name>/` for TP/PP communication (null: the
//!   bundle's only one, if it has exactly one);
//! - CPU overheads (`vidur.cpu_overheads`) are charged when the inputs have them: the
//!   bundle's `cpu_overheads.csv`, the file `vidur.cpu_overheads_file` names, or, for
//!   `vidur_tables`, CPU-term tables next to the op tables; otherwise none are charged
//!   (Vidur's default) and `run_meta.json` says so;
//! - the KV pool is `cfg.kv_pool()`, the very derivation the real engine uses, so both
//!   sides of a comparison have equal pools by construction (`vidur.memory_planner = vidur`
//!   switches both to Vidur's planner).
//!
//! A batch whose prediction leaves the profiled grid is simulated anyway (extrapolated by
//! the predictor's documented rule) and flagged in `batch_metrics.csv`'s `extrapolated`
//! column and in `run_meta.json`'s counts.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::config::types::{resolve_input_path, GlobalSchedulerKind, PredictorKind};
use crate::config::SimrealConfig;
use crate::error::IoContext;
use crate::io::bundle::{
    Bundle, BundleLocation, CpuOverheadSource, CpuOverheadTerm, DuplicatePolicy, LoadOptions,
};
use crate::io::device::{check_bundle_device, DeviceIdentity};
use crate::io::provenance::{absolute_path, InputRef};
use crate::io::read_csv;
use crate::io::rundir::{require_complete, reusable, Stage};
use crate::io::schema::{DEVICE_SPEED, REQUEST_METRICS};
use crate::scheduler::GlobalPolicy;
use crate::stages::bundle::bundle_spec;
use crate::stages::workload::LoadedWorkload;
use crate::stages::Job;
use crate::vidur_ext::device_speed::{SpeedCorrectedPredictor, SpeedCorrection};
use crate::vidur_ext::predictor::{
    CpuOverheadFlags, ExecutionTimePredictor, NativeConfig, NativePredictor, PredictorConfig,
    VidurCompatPredictor, VidurTablesPredictor,
};
use crate::vidur_ext::simulator::{
    little_check, CsvOutputs, CsvSink, CsvSinkCounts, SimConfig, SimRequest, SimSummary, Simulator,
};
use crate::{Error, Result};

/// The `backend` value of simulated rows.
pub const BACKEND_NAME: &str = "vidur_sim";

/// Where the predictor's data came from, for provenance.
#[derive(Debug, Clone, Serialize)]
pub struct PredictorSource {
    /// `native`, `vidur_compat` or `vidur_tables`.
    pub predictor: String,
    /// Bundle root, if a bundle was read.
    pub bundle_dir: Option<PathBuf>,
    /// The bundle's id: `vidur_profile`'s run id, or `path:<dir>` for a given root.
    pub bundle_id: Option<String>,
    /// sha256 over the bundle files read, in load order.
    pub bundle_sha256: Option<String>,
    /// Vidur's prediction tables, for `vidur_tables`.
    pub predictor_tables: Option<PathBuf>,
    /// Whether CPU overheads are charged, and from which file.
    pub cpu_overheads_charged: bool,
    pub cpu_overheads_file: Option<PathBuf>,
    /// `network/<name>` used for TP/PP communication.
    pub network: Option<String>,
    /// The real run whose device speed over time the predictions are scaled to
    /// (`vidur.device_speed_correction`).
    pub device_speed_of: Option<PathBuf>,
}

/// Everything a simulation of one config needs, loaded and checked.
pub struct SimInputs {
    pub workload: LoadedWorkload,
    pub predictor: Box<dyn ExecutionTimePredictor>,
    pub source: PredictorSource,
    pub sim_config: SimConfig,
    /// Warnings to show and record (e.g. CPU overheads requested but not available).
    pub notes: Vec<String>,
}

impl SimInputs {
    /// Loads the workload, the predictor and the KV pool a job's config names.
    pub fn load(job: &Job) -> Result<SimInputs> {
        let cfg = &job.config;
        let workload = LoadedWorkload::for_job(job)?;
        if workload.meta.model != cfg.model.name {
            return Err(Error::Mismatch(format!(
                "workload {} was made for model `{}` but this config simulates `{}`",
                workload.dir.display(),
                workload.meta.model,
                cfg.model.name
            )));
        }
        let mut notes = Vec::new();
        let (predictor, source) = load_predictor(job, &mut notes)?;
        let pool = cfg.kv_pool()?;
        let sim_config = SimConfig {
            scheduler: cfg.scheduler.clone(),
            num_kv_blocks: pool.num_blocks,
            num_replicas: cfg.vidur.num_replicas,
            num_pipeline_stages: cfg.vidur.pipeline_parallel_size,
            global_policy: match cfg.vidur.global_scheduler {
                GlobalSchedulerKind::RoundRobin => GlobalPolicy::RoundRobin,
                GlobalSchedulerKind::Lor => GlobalPolicy::Lor,
                GlobalSchedulerKind::Random => GlobalPolicy::Random,
            },
            seed: cfg.vidur.seed,
            max_model_len: cfg.model.max_model_len,
            backend_name: BACKEND_NAME.into(),
        };
        Ok(SimInputs {
            workload,
            predictor,
            source,
            sim_config,
            notes,
        })
    }

    /// The workload's requests as the simulator takes them.
    pub fn requests(&self) -> impl Iterator<Item = SimRequest> + '_ {
        self.workload.requests.iter().map(|r| SimRequest {
            request_id: r.request_id,
            arrival_time_ns: r.arrival_time_ns,
            num_prefill_tokens: r.lengths.num_prefill_tokens,
            num_decode_tokens: r.lengths.num_decode_tokens,
        })
    }
}

fn predictor_config(cfg: &SimrealConfig, cpu_overheads: bool) -> PredictorConfig {
    let m = &cfg.model;
    PredictorConfig::new(
        m.num_hidden_layers,
        m.num_attention_heads,
        m.num_key_value_heads,
        m.hidden_size,
    )
    .with_parallelism(
        cfg.vidur.tensor_parallel_size,
        cfg.vidur.pipeline_parallel_size,
    )
    .with_cpu_overheads(if cpu_overheads {
        CpuOverheadFlags::ALL
    } else {
        CpuOverheadFlags::NONE
    })
}

/// The predictor `vidur.predictor` names, fitted on `bundle` (`native` or `vidur_compat`;
/// `vidur_tables` reads Vidur's own tables, not a bundle, and is an error here), charging
/// CPU overheads when `cpu_overheads` is set. The one place a config becomes a predictor, for
/// the simulator and the batch replay alike.
pub fn bundle_predictor(
    cfg: &SimrealConfig,
    bundle: &Bundle,
    cpu_overheads: bool,
) -> Result<Box<dyn ExecutionTimePredictor>> {
    let config = predictor_config(cfg, cpu_overheads);
    Ok(match cfg.vidur.predictor {
        PredictorKind::Native => Box::new(NativePredictor::new(
            bundle,
            config,
            NativeConfig {
                statistic: cfg.vidur.statistic(),
                ..NativeConfig::default()
            },
        )?),
        PredictorKind::VidurCompat => Box::new(VidurCompatPredictor::new(bundle, config)?),
        PredictorKind::VidurTables => {
            return Err(Error::config(
                "vidur.predictor",
                "predicting from a bundle needs native or vidur_compat (vidur_tables reads Vidur's tables)",
            ))
        }
    })
}

fn load_predictor(
    job: &Job,
    notes: &mut Vec<String>,
) -> Result<(Box<dyn ExecutionTimePredictor>, PredictorSource)> {
    let cfg = &job.config;
    if cfg.vidur.predictor == PredictorKind::VidurTables {
        let (predictor, source) = load_tables_predictor(cfg, notes)?;
        return speed_corrected(job, predictor, source, notes);
    }
    let (bundle, source) = load_bundle(job, notes)?;
    let predictor = bundle_predictor(cfg, &bundle, source.cpu_overheads_charged)?;
    speed_corrected(job, predictor, source, notes)
}

/// Wraps the predictor in the correction to the real run's device speed when
/// `vidur.device_speed_correction` asks for it; both sides must have a timeline.
fn speed_corrected(
    job: &Job,
    predictor: Box<dyn ExecutionTimePredictor>,
    mut source: PredictorSource,
    notes: &mut Vec<String>,
) -> Result<(Box<dyn ExecutionTimePredictor>, PredictorSource)> {
    let cfg = &job.config;
    let Some(real_run) = cfg.device_speed_run_dir()? else {
        return Ok((predictor, source));
    };
    if cfg.compare.real_run_dirs().is_empty() {
        require_complete(&real_run, "real run", &job.command_for(Stage::Real))?;
    }
    let bundle_dir = source.bundle_dir.clone().ok_or_else(|| {
        Error::config(
            "vidur.device_speed_correction",
            "needs a profiling bundle with a device-speed timeline (not vidur_tables)",
        )
    })?;
    let correction = SpeedCorrection::between(cfg, &bundle_dir, &real_run)?.ok_or_else(|| {
        Error::config(
            "vidur.device_speed_correction",
            format!(
                "needs {} in both the bundle {} and the real run {}; \
                 re-run the stage that lacks it",
                DEVICE_SPEED.file_name,
                bundle_dir.display(),
                real_run.display()
            ),
        )
    })?;
    notes.extend(correction.screening().sentence());
    notes.extend(correction.response_sentence());
    source.device_speed_of = Some(real_run);
    Ok((
        Box::new(SpeedCorrectedPredictor::new(predictor, correction)),
        source,
    ))
}

fn load_tables_predictor(
    cfg: &SimrealConfig,
    notes: &mut Vec<String>,
) -> Result<(Box<dyn ExecutionTimePredictor>, PredictorSource)> {
    let dir = cfg
        .vidur
        .predictor_tables
        .as_deref()
        .map(resolve_input_path)
        .ok_or_else(|| {
            Error::config(
                "vidur.predictor_tables",
                "predictor = vidur_tables needs the directory of Vidur's prediction tables",
            )
        })?;
    // Vidur writes CPU-term tables only when it models CPU overheads.
    let has_cpu_tables = has_prediction_table(&dir, CpuOverheadTerm::Schedule.name())?;
    let charged = cfg.vidur.cpu_overheads && has_cpu_tables;
    if cfg.vidur.cpu_overheads && !has_cpu_tables {
        notes.push(format!(
            "vidur.cpu_overheads is set but {} has no CPU-overhead tables: none are charged \
             (Vidur's default)",
            dir.display()
        ));
    }
    let predictor = VidurTablesPredictor::from_dir(&dir, predictor_config(cfg, charged))?;
    let source = PredictorSource {
        predictor: PredictorKind::VidurTables.name().into(),
        bundle_dir: None,
        bundle_id: None,
        bundle_sha256: None,
        predictor_tables: Some(dir),
        cpu_overheads_charged: charged,
        cpu_overheads_file: None,
        network: cfg.vidur.network.clone(),
        device_speed_of: None,
    };
    Ok((Box::new(predictor), source))
}

fn has_prediction_table(dir: &Path, op: &str) -> Result<bool> {
    let prefix = format!("{op}_");
    for entry in std::fs::read_dir(dir).with_path(dir)? {
        let name = entry.with_path(dir)?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix)
            && (name.ends_with("_predictions.csv") || name.ends_with("_predictions.csv.gz"))
            && !name.ends_with("_training_predictions.csv")
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Finds, checks and loads the bundle the config names.
fn load_bundle(job: &Job, notes: &mut Vec<String>) -> Result<(Bundle, PredictorSource)> {
    let cfg = &job.config;
    let v = &cfg.vidur;
    let root = cfg.bundle_dir()?;
    let bundle_id = match &v.bundle {
        None => {
            require_complete(
                &root,
                "profiling bundle",
                &job.command_for(Stage::VidurProfile),
            )?;
            cfg.bundle_id()?
        }
        Some(_) => format!("path:{}", root.display()),
    };
    let has_meta = root.join("profiling_meta.json").is_file();
    let mut location = if has_meta {
        let (location, meta) = BundleLocation::from_meta(&root)?;
        if meta.device != cfg.hardware.device_sku || meta.model_name != cfg.model.hf_name {
            return Err(Error::Mismatch(format!(
                "bundle {} was profiled for {} on `{}` but this config simulates {} on `{}`",
                root.display(),
                meta.model_name,
                meta.device,
                cfg.model.hf_name,
                cfg.hardware.device_sku
            )));
        }
        if let Some(measured) = meta.device_identity() {
            let simulated = DeviceIdentity::configured(cfg);
            let what = "this config simulates";
            if let Some(cross) =
                check_bundle_device(&root, &measured, what, &simulated, v.cross_device)?
            {
                notes.insert(0, cross.sentence());
            }
        }
        location
    } else {
        BundleLocation::new(&root, &cfg.hardware.device_sku, &cfg.model.hf_name)
    };
    check_model_dir(&location)?;
    if let Some(network) = &v.network {
        location = location.with_network(network.clone());
    }
    let parallel = v.tensor_parallel_size > 1 || v.pipeline_parallel_size > 1;
    if parallel && location.network_device.is_none() {
        let network = only_network(&root, v)?;
        notes.push(format!(
            "vidur.network is null: using the bundle's only network profile `{network}`"
        ));
        location = location.with_network(network);
    }
    let cpu_source = match (&v.cpu_overheads_file, v.cpu_overheads) {
        (_, false) => CpuOverheadSource::None,
        (Some(file), true) => CpuOverheadSource::File(resolve_input_path(file)),
        (None, true) => {
            let standard = location
                .clone()
                .with_cpu_overheads(CpuOverheadSource::Standard);
            match standard.cpu_overheads_csv() {
                Some(path) if path.is_file() => CpuOverheadSource::Standard,
                _ => {
                    notes.push(format!(
                        "vidur.cpu_overheads is set but bundle {} has no cpu_overheads.csv: none \
                         are charged (Vidur's default); set vidur.cpu_overheads_file to use one",
                        root.display()
                    ));
                    CpuOverheadSource::None
                }
            }
        }
    };
    location = location.with_cpu_overheads(cpu_source);
    let options = LoadOptions {
        // Vidur's own files repeat grid points (see `bundle`); ours never do.
        duplicates: if has_meta {
            DuplicatePolicy::Reject
        } else {
            DuplicatePolicy::Average
        },
        pipeline_stages: v.pipeline_parallel_size,
        ..LoadOptions::default()
    };
    let bundle = Bundle::load(&location, &bundle_spec(cfg), &options)?;
    let files: Vec<PathBuf> = [Some(location.mlp_csv()), Some(location.attention_csv())]
        .into_iter()
        .chain([
            bundle.all_reduce.as_ref().and(location.all_reduce_csv()),
            bundle.send_recv.as_ref().and(location.send_recv_csv()),
            location.cpu_overheads_csv(),
        ])
        .flatten()
        .collect();
    let source = PredictorSource {
        predictor: v.predictor.name().into(),
        bundle_dir: Some(root),
        bundle_id: Some(bundle_id),
        bundle_sha256: Some(files_sha256(&files)?),
        predictor_tables: None,
        cpu_overheads_charged: bundle.cpu_overheads.is_some(),
        cpu_overheads_file: location.cpu_overheads_csv(),
        network: location.network_device.clone(),
        device_speed_of: None,
    };
    Ok((bundle, source))
}

/// The one directory under `<root>/network/`, for TP/PP when `vidur.network` is null.
fn only_network(root: &Path, v: &crate::config::types::VidurConfig) -> Result<String> {
    let dir = root.join("network");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(Error::config(
            "vidur.network",
            format!(
                "TP = {} / PP = {} needs collective timings: set vidur.network to one of the \
                 profiles under {} (found: {})",
                v.tensor_parallel_size,
                v.pipeline_parallel_size,
                dir.display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        )),
    }
}

/// A bundle without the model's directory is most likely a bundle of another model: say
/// which models it has.
fn check_model_dir(location: &BundleLocation) -> Result<()> {
    let mlp = location.mlp_csv();
    if mlp.is_file() {
        return Ok(());
    }
    let device_dir = location.root.join("compute").join(&location.device);
    let mut models = Vec::new();
    if let Ok(orgs) = std::fs::read_dir(&device_dir) {
        for org in orgs.flatten() {
            if let Ok(names) = std::fs::read_dir(org.path()) {
                for name in names.flatten() {
                    models.push(format!(
                        "{}/{}",
                        org.file_name().to_string_lossy(),
                        name.file_name().to_string_lossy()
                    ));
                }
            }
        }
    }
    models.sort();
    Err(Error::MissingInput {
        path: mlp,
        msg: format!(
            "the bundle has no profile of {} on `{}`",
            location.model_name, location.device
        ),
        hint: Some(if models.is_empty() {
            format!("{} holds no models", device_dir.display())
        } else {
            format!(
                "it has {} on `{}`: a bundle for another model?",
                models.join(", "),
                location.device
            )
        }),
    })
}

fn files_sha256(files: &[PathBuf]) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for f in files {
        hasher.update(std::fs::read(f).with_path(f)?);
    }
    Ok(crate::io::ids::hex(&hasher.finalize()))
}

/// What `run_meta.json`'s `extra` holds for a simulated run.
#[derive(Debug, Clone, Serialize)]
pub struct SimRunFacts {
    pub predictor: PredictorSource,
    pub kv_pool: crate::config::derived::KvPoolPlan,
    pub sim_config: SimConfig,
    pub summary: SimSummary,
    pub rows: CsvSinkCounts,
    /// Simulated makespan, s.
    pub makespan_s: f64,
    /// Wall time of the simulation (event loop and row streaming), s.
    pub wall_time_s: f64,
    /// Simulated seconds per wall-clock second.
    pub sim_s_per_wall_s: f64,
    pub requests_per_wall_s: f64,
    pub little: crate::vidur_ext::simulator::LittleCheck,
    pub notes: Vec<String>,
}

/// Runs the stage for one job; returns the run dir.
pub fn run(job: &Job) -> Result<PathBuf> {
    let cfg = &job.config;
    let run_id = job.own_run_id(cfg.sim_run_id()?);
    let location = cfg.location(Stage::Vidur, run_id.clone());
    if reusable(&location.path(), cfg.output.force) {
        return Ok(location.path());
    }
    // Inputs are checked before the run dir is touched.
    let inputs = SimInputs::load(job)?;
    for note in &inputs.notes {
        eprintln!("vidur: note: {note}");
    }
    job.write_run(&location, &run_id, |staging, meta| {
        let pool = cfg.kv_pool()?;
        eprintln!(
            "vidur: {} requests of {} on {}, {} predictor, {} × {} KV blocks of {} tokens, {:?}",
            inputs.workload.requests.len(),
            cfg.model.name,
            cfg.hardware.name,
            inputs.source.predictor,
            cfg.vidur.num_replicas,
            pool.num_blocks,
            pool.block_size,
            cfg.scheduler.policy,
        );

        if let Some(dir) = &inputs.source.device_speed_of {
            eprintln!(
                "vidur: predictions scaled to the device speed of real run {}",
                dir.display()
            );
        }
        let started = Instant::now();
        let outputs = CsvOutputs {
            token_metrics: cfg.vidur.token_metrics,
            batch_requests: cfg.vidur.batch_requests,
        };
        let mut sink = CsvSink::create(staging.path(), outputs)?;
        let simulator = Simulator::new(inputs.sim_config.clone(), inputs.predictor.as_ref())?;
        let summary = simulator.run(inputs.requests(), &mut sink)?;
        let rows = sink.finish()?;
        let wall_time_s = started.elapsed().as_secs_f64();

        // Little's law on what was written, as a self-check of the outputs.
        let written = read_csv(staging.file(REQUEST_METRICS.file_name), &REQUEST_METRICS)?;
        let little = little_check(&summary, &written);
        if !little.exact {
            return Err(Error::Msg(format!(
                "simulator self-check failed: Little's law does not hold on the written rows ({little:?})"
            )));
        }

        meta.seed = Some(cfg.vidur.seed);
        meta.inputs.insert(
            "workload".into(),
            InputRef::run(
                inputs.workload.meta.workload_id.clone(),
                &inputs.workload.dir,
            )?,
        );
        if let (Some(id), Some(dir)) = (&inputs.source.bundle_id, &inputs.source.bundle_dir) {
            meta.inputs.insert(
                "bundle".into(),
                InputRef {
                    sha256: inputs.source.bundle_sha256.clone(),
                    ..InputRef::run(id.clone(), dir)?
                },
            );
        }
        if let Some(dir) = &inputs.source.predictor_tables {
            meta.inputs.insert(
                "predictor_tables".into(),
                InputRef::file(
                    format!("path:{}", dir.display()),
                    dir.display().to_string(),
                    None,
                ),
            );
        }
        if let Some(dir) = &inputs.source.device_speed_of {
            meta.inputs.insert(
                "device_speed_of".into(),
                InputRef::run(
                    dir.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    dir,
                )?,
            );
        }
        meta.workload_dir = Some(absolute_path(&inputs.workload.dir));
        meta.profiling_root = inputs
            .source
            .bundle_dir
            .as_ref()
            .or(inputs.source.predictor_tables.as_ref())
            .map(|dir| absolute_path(dir));
        let makespan_s = summary.makespan_ns as f64 / 1e9;
        let facts = SimRunFacts {
            predictor: inputs.source.clone(),
            kv_pool: pool,
            sim_config: inputs.sim_config.clone(),
            summary: summary.clone(),
            rows,
            makespan_s,
            wall_time_s,
            sim_s_per_wall_s: makespan_s / wall_time_s.max(1e-9),
            requests_per_wall_s: summary.num_requests as f64 / wall_time_s.max(1e-9),
            little,
            notes: inputs.notes.clone(),
        };
        meta.extra = serde_json::to_value(&facts).map_err(|e| Error::InvalidInput(e.to_string()))?;
        eprintln!(
            "vidur: {} ok / {} error requests, {} tokens, {} batches ({} extrapolated), {} preemptions; \
             {makespan_s:.1} simulated s in {wall_time_s:.2} wall s",
            summary.num_ok,
            summary.num_error,
            summary.num_tokens,
            summary.num_batches,
            summary.num_extrapolated_batches,
            summary.num_preemptions,
        );
        Ok(())
    })
}
