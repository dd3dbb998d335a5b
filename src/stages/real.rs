//! The `real` stage: serve a workload with the candle engine and record every token.
//!
//! `tmp/real/<run_id>/`: `request_metrics.csv`, `token_metrics.csv`, `batch_metrics.csv`,
//! `batch_requests.csv`, `config.yaml`, `run_meta.json`, `_SUCCESS`.
//!
//! `backend.device=cuda` runs on GPU 0 (after `CUDA_VISIBLE_DEVICES`) in a `--features cuda`
//! build; `run_meta.json` then records the GPU's identity and each iteration's GPU forward
//! time under `gpu` (docs/gpu.md).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device};

use crate::config::resolve_input_path;
use crate::config::types::{Architecture, Device as ConfigDevice, Dtype, SimrealConfig};
use crate::io::device::{DeviceIdentity, GpuFingerprint};
use crate::io::provenance::{absolute_path, InputRef};
use crate::io::records::SpeedPhase;
use crate::io::rundir::Stage;
use crate::io::schema::{
    BATCH_METRICS, BATCH_REQUESTS, DEVICE_SPEED, REQUEST_METRICS, TOKEN_METRICS,
};
use crate::io::write_csv;
use crate::quantile;
use crate::real_bench::engine::{
    Clock, Engine, EngineRecord, EngineRequest, EngineSettings, MonotonicClock, ServeObserver,
    ServeProgress,
};
use crate::real_bench::model::{
    random_weights_dir, sha256_file, synthesize_random_weights, Qwen3Config, Qwen3Model,
    WeightSource, CONFIG_FILE, WEIGHTS_FILE,
};
use crate::real_bench::speed_timeline::{SpeedTimeline, QUICK_PROBE_EVERY};
use crate::real_bench::threads;
use crate::stages::workload::{load_tokenizer, LoadedWorkload};
use crate::stages::Job;
use crate::vidur_ext::device_speed::probes_time_the_device;
use crate::{Error, Result};

/// candle's dtype for a config dtype.
pub fn candle_dtype(d: Dtype) -> DType {
    match d {
        Dtype::F32 => DType::F32,
        Dtype::Bf16 => DType::BF16,
        Dtype::F16 => DType::F16,
    }
}

/// The Qwen3 architecture a config describes, as the model's own config type.
pub fn qwen3_config(cfg: &SimrealConfig) -> Result<Qwen3Config> {
    let m = &cfg.model;
    if m.architecture != Architecture::Qwen3 {
        return Err(Error::config(
            "model",
            format!(
                "the real engine runs Qwen3 models only; `{}` is a {:?} model (it can be simulated with the `vidur` stage)",
                m.name, m.architecture
            ),
        ));
    }
    let mut q = Qwen3Config::tiny();
    q.vocab_size = m.vocab_size as usize;
    q.hidden_size = m.hidden_size as usize;
    q.intermediate_size = m.intermediate_size as usize;
    q.num_hidden_layers = m.num_hidden_layers as usize;
    q.num_attention_heads = m.num_attention_heads as usize;
    q.num_key_value_heads = m.num_key_value_heads as usize;
    q.head_dim = m.head_dim as usize;
    q.max_position_embeddings = m.max_position_embeddings as usize;
    q.rope_theta = m.rope_theta;
    q.rms_norm_eps = m.rms_norm_eps;
    q.tie_word_embeddings = m.tie_word_embeddings;
    q.validate()?;
    Ok(q)
}

/// A resolved weight snapshot: its directory and the sha256 of its safetensors file (or
/// index), for provenance.
pub struct Weights {
    pub dir: PathBuf,
    pub sha256: String,
    /// `<path> sha256:<hash>` or `random:<seed> (<path>)`.
    pub provenance: String,
}

/// Finds the weights a config names: the configured snapshot, or seeded random weights of
/// the architecture synthesized once under `<output.root>/weights/<model>-<seed>-<dtype>/`.
pub fn resolve_weights(cfg: &SimrealConfig) -> Result<Weights> {
    let expected = qwen3_config(cfg)?;
    match &cfg.model.weights_dir {
        Some(dir) => {
            let dir = resolve_input_path(dir);
            let on_disk = Qwen3Config::from_json_file(dir.join(CONFIG_FILE))?;
            check_architecture(&dir, &on_disk, &expected)?;
            let hashed = if dir.join(WEIGHTS_FILE).is_file() {
                dir.join(WEIGHTS_FILE)
            } else {
                dir.join(crate::real_bench::model::WEIGHTS_INDEX_FILE)
            };
            let sha256 = sha256_file(&hashed)?;
            Ok(Weights {
                provenance: format!("{} sha256:{sha256}", dir.display()),
                dir,
                sha256,
            })
        }
        None => {
            let seed = cfg.model.weights_seed;
            let dtype = cfg.dtype();
            let dir = random_weights_dir(&cfg.output.root, &cfg.model.name, seed, dtype.as_str());
            if !dir.join(WEIGHTS_FILE).is_file() {
                eprintln!(
                    "synthesizing random {} weights (seed {seed}) into {}",
                    cfg.model.name,
                    dir.display()
                );
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                }
                synthesize_random_weights(&expected, seed, candle_dtype(dtype), &dir)?;
            }
            let on_disk = Qwen3Config::from_json_file(dir.join(CONFIG_FILE))?;
            check_architecture(&dir, &on_disk, &expected)?;
            let sha256 = sha256_file(&dir.join(WEIGHTS_FILE))?;
            Ok(Weights {
                provenance: format!("random:{seed} ({})", dir.display()),
                dir,
                sha256,
            })
        }
    }
}

fn check_architecture(dir: &Path, on_disk: &Qwen3Config, expected: &Qwen3Config) -> Result<()> {
    let pairs = [
        ("vocab_size", on_disk.vocab_size, expected.vocab_size),
        ("hidden_size", on_disk.hidden_size, expected.hidden_size),
        (
            "intermediate_size",
            on_disk.intermediate_size,
            expected.intermediate_size,
        ),
        (
            "num_hidden_layers",
            on_disk.num_hidden_layers,
            expected.num_hidden_layers,
        ),
        (
            "num_attention_heads",
            on_disk.num_attention_heads,
            expected.num_attention_heads,
        ),
        (
            "num_key_value_heads",
            on_disk.num_key_value_heads,
            expected.num_key_value_heads,
        ),
        ("head_dim", on_disk.head_dim, expected.head_dim),
    ];
    for (name, found, want) in pairs {
        if found != want {
            return Err(Error::Mismatch(format!(
                "{}: config.json has {name} = {found} but the configured model needs {want}; the snapshot is another architecture",
                dir.join(CONFIG_FILE).display()
            )));
        }
    }
    if on_disk.tie_word_embeddings != expected.tie_word_embeddings {
        return Err(Error::Mismatch(format!(
            "{}: tie_word_embeddings differs from the configured model",
            dir.join(CONFIG_FILE).display()
        )));
    }
    Ok(())
}

/// Turns a loaded workload into engine requests, re-encoding each prompt and checking its
/// length against the trace.
pub fn engine_requests(job: &Job, workload: &LoadedWorkload) -> Result<Vec<EngineRequest>> {
    let tokenizer = load_tokenizer(&job.config)?;
    let prompts = workload.read_prompts(&tokenizer)?;
    workload
        .requests
        .iter()
        .zip(prompts)
        .map(|(req, prompt)| {
            let ids = tokenizer.encode(&prompt.text)?;
            if ids.len() != req.lengths.num_prefill_tokens as usize {
                return Err(Error::Mismatch(format!(
                    "prompt {} encodes to {} tokens but the trace says {}",
                    prompt.prompt_id,
                    ids.len(),
                    req.lengths.num_prefill_tokens
                )));
            }
            Ok(EngineRequest {
                request_id: req.request_id,
                arrival_time_ns: req.arrival_time_ns,
                prompt: ids,
                num_decode_tokens: req.lengths.num_decode_tokens,
            })
        })
        .collect()
}

/// The candle device `backend.device` names: the CPU, or CUDA device
/// [`CUDA_ORDINAL`](crate::real_bench::cuda::CUDA_ORDINAL) in a `--features cuda` build.
pub fn open_device(device: ConfigDevice) -> Result<Device> {
    match device {
        ConfigDevice::Cpu => Ok(Device::Cpu),
        ConfigDevice::Cuda => open_cuda(),
    }
}

#[cfg(feature = "cuda")]
fn open_cuda() -> Result<Device> {
    use crate::real_bench::cuda::CUDA_ORDINAL;
    Device::new_cuda(CUDA_ORDINAL)
        .map_err(|e| Error::Device(format!("opening CUDA device {CUDA_ORDINAL}: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda() -> Result<Device> {
    Err(cuda_not_built())
}

/// Refuses, before any work, a CUDA backend in a build without `--features cuda`.
pub fn check_cuda_built(device: ConfigDevice) -> Result<()> {
    if device == ConfigDevice::Cuda && !cfg!(feature = "cuda") {
        return Err(cuda_not_built());
    }
    Ok(())
}

fn cuda_not_built() -> Error {
    Error::config(
        "backend.device",
        "cuda needs a build with `--features cuda` (and a CUDA toolkit); see docs/gpu.md",
    )
}

/// The identity of the GPU a model runs on, for provenance (`None` on the CPU).
#[cfg(any(feature = "cuda", feature = "cuda-check"))]
pub fn gpu_fingerprint(device: &Device) -> Result<Option<GpuFingerprint>> {
    use crate::real_bench::cuda::CUDA_ORDINAL;
    if !device.is_cuda() {
        return Ok(None);
    }
    GpuFingerprint::collect(CUDA_ORDINAL).map(Some)
}

/// Without CUDA support no device is a GPU.
#[cfg(not(any(feature = "cuda", feature = "cuda-check")))]
pub fn gpu_fingerprint(_device: &Device) -> Result<Option<GpuFingerprint>> {
    Ok(None)
}

/// Count, sum, min, median (interpolated, as the project's percentiles), mean and max of
/// per-iteration durations in ns; the statistics are null when there are no values.
fn summarize_ns(values: &[u64]) -> serde_json::Value {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    let sum: u64 = sorted.iter().sum();
    let as_f64: Vec<f64> = sorted.iter().map(|&v| v as f64).collect();
    let median = quantile::median(&as_f64).ok();
    serde_json::json!({
        "count": n,
        "sum_ns": sum,
        "min_ns": sorted.first(),
        "median_ns": median,
        "mean_ns": (n > 0).then(|| sum as f64 / n as f64),
        "max_ns": sorted.last(),
    })
}

/// Runs the stage for one job; returns the run dir.
pub fn run(job: &Job) -> Result<PathBuf> {
    let cfg = &job.config;
    qwen3_config(cfg)?;
    check_cuda_built(cfg.backend.device)?;
    cfg.check_serving_device()?;
    let run_id = job.own_run_id(cfg.real_run_id()?);
    let location = cfg.location(Stage::Real, run_id.clone());
    // Inputs are checked before the run dir is touched.
    let workload = LoadedWorkload::for_job(job)?;
    job.write_run(&location, &run_id, |staging, meta| {
        threads::init(cfg.hardware.cpu_threads)?;
        let timing = threads::apply_timing(&cfg.timing);
        threads::reset_peak_rss();
        let device = open_device(cfg.backend.device)?;
        let gpu = gpu_fingerprint(&device)?;

        let requests = engine_requests(job, &workload)?;
        let weights = resolve_weights(cfg)?;
        let load_start = Instant::now();
        let model = Qwen3Model::load(
            &WeightSource::Dir(weights.dir.clone()),
            candle_dtype(cfg.dtype()),
            &device,
        )?;
        let load_s = load_start.elapsed().as_secs_f64();
        let pool = cfg.kv_pool()?;
        let mut engine = Engine::new(
            &model,
            &cfg.scheduler,
            pool.num_blocks as usize,
            EngineSettings {
                backend_name: cfg.backend.name.clone(),
                replica_id: 0,
                max_model_len: cfg.model.max_model_len,
            },
        )?;
        engine.sample_op_times_every(cfg.backend.op_times_every);
        let mapped_blocks = engine.map_kv_blocks_for(&requests);
        let warmup = engine.warm_up(cfg.backend.warmup_iterations)?;
        eprintln!(
            "real: {} requests on {} ({} KV blocks of {} tokens, {} of them mapped before serving, {} threads)",
            requests.len(),
            cfg.model.name,
            pool.num_blocks,
            pool.block_size,
            mapped_blocks,
            threads::current()
        );
        let mut timeline = SpeedTimeline::new();
        if !probes_time_the_device(cfg) {
            timeline = timeline.without_quick_probes();
        }
        for _ in 0..PROBES_AT_EACH_END {
            timeline.probe(SpeedPhase::Before);
        }
        let profile_reference = ProfileReference::of_configured_bundle(cfg);
        let clock = MonotonicClock::start();
        let mut monitor = ServeMonitor::new(&mut timeline, &clock, profile_reference);
        let record = engine.run_observed(&requests, &clock, &mut monitor)?;
        for _ in 0..PROBES_AT_EACH_END {
            timeline.probe(SpeedPhase::After);
        }
        // The warm-up's fixed iteration again: with the warm-up's own, the model-level
        // reading of the device's speed around the run that `compare` sets against the
        // profile's (two warm samples alone read one run 30 % slow, docs/ground_truth.md).
        let reference_after = engine.warm_up(REFERENCE_ITERATIONS_AFTER)?;

        write_record(staging.path(), &record)?;
        write_csv(
            staging.file(DEVICE_SPEED.file_name),
            &DEVICE_SPEED,
            &timeline.rows(clock.origin()),
        )?;
        meta.seed = Some(cfg.workload.seed);
        meta.weights = Some(weights.provenance.clone());
        meta.backend = Some(cfg.backend.name.clone());
        meta.workload_dir = Some(absolute_path(&workload.dir));
        meta.inputs.insert(
            "workload".into(),
            InputRef::run(workload.meta.workload_id.clone(), &workload.dir)?,
        );
        meta.inputs.insert(
            "weights".into(),
            InputRef::file(
                job.config.weight_source(),
                weights.dir.display().to_string(),
                Some(weights.sha256.clone()),
            ),
        );
        let summary = RunSummary::of(&record);
        meta.extra = serde_json::json!({
            "warmup_iterations": warmup.len(),
            "warmup_iteration_ms": warmup.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "reference_iteration_after_ms": reference_after.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "weights_load_s": load_s,
            "kv_pool": pool,
            "threads": threads::current(),
            "timing": timing.applied(),
            "peak_rss_bytes": threads::peak_rss_bytes(),
            "summary": summary,
            "device_speed": timeline.summary(),
            "device": DeviceIdentity::measured(cfg, &meta.env, gpu.as_ref()),
        });
        if let (Some(identity), Some(extra)) = (gpu, meta.extra.as_object_mut()) {
            // batch_metrics.csv's model_forward_ns is host wall time (device synchronized); this is
            // the GPU's own time for the same forwards, one value per batch_id.
            extra.insert(
                "gpu".into(),
                serde_json::json!({
                    "device": identity,
                    "forward_event": summarize_ns(&record.device_forward_ns),
                    "batch_forward_event_ns": record.device_forward_ns,
                }),
            );
        }
        eprintln!(
            "real: {} ok / {} error requests, {} tokens, {} iterations in {:.2} s",
            summary.num_ok,
            summary.num_error,
            summary.num_tokens,
            summary.num_batches,
            summary.makespan_s
        );
        Ok(())
    })
}

/// Probes taken before the first and after the last iteration.
const PROBES_AT_EACH_END: usize = 3;
/// Times of the warm-up's iteration taken after serving (all warm): ~1.7 s on qwen3_0_6b here.
const REFERENCE_ITERATIONS_AFTER: u32 = 5;
/// At most one idle-gap probe per this much run time.
const MIN_NS_BETWEEN_IDLE_PROBES: u64 = 2_000_000_000;
/// A progress line per this much run time.
const PROGRESS_EVERY_NS: u64 = 5_000_000_000;

/// The profile's probe medians, to say how fast the device is now against when the bundle
/// this config uses was profiled.
#[derive(Debug, Clone, Copy)]
struct ProfileReference {
    memory_gb_per_s: f64,
    compute_gflop_per_s: f64,
    /// Its quick probes' median, where it took them (probe version 5).
    quick_memory_gb_per_s: Option<f64>,
}

impl ProfileReference {
    /// From the configured bundle's `profiling_meta.json`, when it exists and recorded
    /// probes; `None` otherwise (the progress line then shows absolute probe times).
    fn of_configured_bundle(cfg: &SimrealConfig) -> Option<ProfileReference> {
        let dir = cfg.bundle_dir().ok()?;
        let text = std::fs::read_to_string(dir.join("profiling_meta.json")).ok()?;
        let meta: serde_json::Value = serde_json::from_str(&text).ok()?;
        let all = &meta["details"]["device_speed"]["all"];
        Some(ProfileReference {
            memory_gb_per_s: all["memory_gb_per_s"].as_f64()?,
            compute_gflop_per_s: all["compute_gflop_per_s"].as_f64()?,
            quick_memory_gb_per_s: meta["details"]["device_speed"]["quick"]["memory_gb_per_s"]
                .as_f64(),
        })
    }
}

/// Watches a serve: probes the device in idle gaps, samples host steal time while busy,
/// and prints a progress line every few seconds.
struct ServeMonitor<'a> {
    timeline: &'a mut SpeedTimeline,
    clock: &'a MonotonicClock,
    reference: Option<ProfileReference>,
    last_idle_probe_ns: Option<u64>,
    last_progress_ns: u64,
}

impl<'a> ServeMonitor<'a> {
    fn new(
        timeline: &'a mut SpeedTimeline,
        clock: &'a MonotonicClock,
        reference: Option<ProfileReference>,
    ) -> Self {
        ServeMonitor {
            timeline,
            clock,
            reference,
            last_idle_probe_ns: None,
            last_progress_ns: 0,
        }
    }

    /// "probe 12 s ago: memory 21.3 GB/s (−4.1 % vs profile), compute 171 GFLOP/s (+0.3 % …);
    /// quick probes, last 5 s: memory 55.0 GB/s (+46.2 % vs profile)" from the latest probe
    /// and the quick probes since the last progress line.
    fn device_speed_text(&self) -> String {
        let Some((p, age)) = self.timeline.latest_probe_with_age() else {
            return "no probe yet".into();
        };
        let part = |name: &str, unit: &str, rate: f64, reference: Option<f64>| match reference {
            Some(r) if r > 0.0 => format!(
                "{name} {rate:.1} {unit} ({:+.1} % vs profile)",
                100.0 * (rate - r) / r
            ),
            _ => format!("{name} {rate:.1} {unit}"),
        };
        let quick = self
            .timeline
            .recent_quick_median_gb_per_s(Duration::from_nanos(PROGRESS_EVERY_NS))
            .map_or(String::new(), |rate| {
                format!(
                    "; quick probes, last {} s: {}",
                    PROGRESS_EVERY_NS / 1_000_000_000,
                    part(
                        "memory",
                        "GB/s",
                        rate,
                        self.reference.and_then(|r| r.quick_memory_gb_per_s)
                    )
                )
            });
        // A kernel the host's scheduler disturbed is shown, but flagged: it is not the device.
        let flag = |usable: bool| {
            if usable {
                ""
            } else {
                " (threads not run together)"
            }
        };
        format!(
            "probe {:.0} s ago: {}{}, {}{}{quick}",
            age.as_secs_f64(),
            part(
                "memory",
                "GB/s",
                p.memory_gb_per_s(),
                self.reference.map(|r| r.memory_gb_per_s)
            ),
            flag(p.memory.usable()),
            part(
                "compute",
                "GFLOP/s",
                p.compute_gflop_per_s(),
                self.reference.map(|r| r.compute_gflop_per_s)
            ),
            flag(p.compute.usable())
        )
    }
}

impl ServeObserver for ServeMonitor<'_> {
    fn idle(&mut self, now_ns: u64, wake_ns: u64) {
        let gap_ns = wake_ns.saturating_sub(now_ns);
        let due = self
            .last_idle_probe_ns
            .is_none_or(|last| now_ns >= last + MIN_NS_BETWEEN_IDLE_PROBES);
        if due && self.timeline.fits_probe(gap_ns) {
            self.timeline.probe(SpeedPhase::Idle);
            self.last_idle_probe_ns = Some(self.clock.now_ns());
        }
    }

    fn iteration_done(&mut self, p: &ServeProgress) {
        // One host sample per iteration: the steal and run-queue wait each iteration met.
        self.timeline.busy_sample();
        self.timeline.quick_tick(QUICK_PROBE_EVERY);
        if p.now_ns >= self.last_progress_ns + PROGRESS_EVERY_NS {
            self.last_progress_ns = p.now_ns;
            eprintln!(
                "real: {}/{} requests, {} tokens, {} iterations, {:.1} s; {}",
                p.num_requests_done,
                p.num_requests_total,
                p.num_tokens,
                p.num_iterations,
                p.now_ns as f64 / 1e9,
                self.device_speed_text()
            );
        }
    }
}

/// Writes a run's four CSVs into `dir`.
pub fn write_record(dir: &Path, record: &EngineRecord) -> Result<()> {
    write_csv(
        dir.join(REQUEST_METRICS.file_name),
        &REQUEST_METRICS,
        &record.requests,
    )?;
    write_csv(
        dir.join(TOKEN_METRICS.file_name),
        &TOKEN_METRICS,
        &record.tokens,
    )?;
    write_csv(
        dir.join(BATCH_METRICS.file_name),
        &BATCH_METRICS,
        &record.batches,
    )?;
    write_csv(
        dir.join(BATCH_REQUESTS.file_name),
        &BATCH_REQUESTS,
        &record.batch_requests,
    )?;
    Ok(())
}

/// Counts reported in `run_meta.json` and on the console.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub num_ok: usize,
    pub num_error: usize,
    pub num_tokens: usize,
    pub num_batches: usize,
    pub num_preemptions: u64,
    pub makespan_s: f64,
    pub idle_s: f64,
    pub max_batch_size: u32,
}

impl RunSummary {
    pub fn of(record: &EngineRecord) -> Self {
        use crate::io::records::RequestStatus;
        RunSummary {
            num_ok: record
                .requests
                .iter()
                .filter(|r| r.status == RequestStatus::Ok)
                .count(),
            num_error: record
                .requests
                .iter()
                .filter(|r| r.status == RequestStatus::Error)
                .count(),
            num_tokens: record.tokens.len(),
            num_batches: record.batches.len(),
            num_preemptions: record
                .requests
                .iter()
                .map(|r| u64::from(r.num_preemptions.unwrap_or(0)))
                .sum(),
            makespan_s: record.makespan_ns as f64 / 1e9,
            idle_s: record.idle_ns as f64 / 1e9,
            max_batch_size: record
                .batches
                .iter()
                .map(|b| b.num_requests)
                .max()
                .unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_time_summary_is_hand_checkable() {
        let s = summarize_ns(&[40, 10, 30, 20]);
        assert_eq!(
            s,
            serde_json::json!({"count": 4, "sum_ns": 100, "min_ns": 10, "median_ns": 25.0,
                "mean_ns": 25.0, "max_ns": 40})
        );
        assert_eq!(summarize_ns(&[7, 1, 5])["median_ns"], 5.0);
        let empty = summarize_ns(&[]);
        assert_eq!(empty["count"], 0);
        assert!(empty["median_ns"].is_null() && empty["max_ns"].is_null());
    }

    #[test]
    fn devices_open_as_configured() {
        assert!(open_device(ConfigDevice::Cpu).unwrap().is_cpu());
        assert_eq!(gpu_fingerprint(&Device::Cpu).unwrap(), None);
        if !cfg!(feature = "cuda") {
            let e = open_device(ConfigDevice::Cuda).unwrap_err();
            assert!(
                matches!(&e, Error::Config { key, msg, .. } if key == "backend.device" && msg.contains("--features cuda")),
                "{e}"
            );
        }
    }
}
