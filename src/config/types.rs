//! The typed, validated config every stage runs on.
//!
//! The composed YAML tree is deserialized with `deny_unknown_fields` everywhere, so a typo
//! anywhere is an error naming its key path (with a suggestion) rather than a silently
//! ignored setting; then [`SimrealConfig::validate`] checks values and cross-field
//! constraints before any work starts.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::compose::{suggestion, Composed};
use crate::io::bundle::OpStatistic;
use crate::scheduler::SchedulerConfig;
use crate::workloads::{IntervalsConfig, LengthsConfig, TraceReplayConfig};
use crate::{Error, Result};

/// The whole resolved config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimrealConfig {
    pub model: ModelConfig,
    pub hardware: HardwareConfig,
    pub backend: BackendConfig,
    /// The replica scheduler, shared by the real engine and the simulator.
    pub scheduler: SchedulerConfig,
    pub workload: WorkloadConfig,
    pub vidur: VidurConfig,
    pub profile: ProfileConfig,
    pub compare: CompareConfig,
    pub capacity: CapacityConfig,
    pub fidelity: FidelityConfig,
    /// How the timed stages (`real`, `vidur_profile`) run their threads and memory.
    pub timing: TimingSettings,
    pub output: OutputConfig,
}

/// Model family; only `qwen3` runs on the real engine, every family can be simulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Qwen3,
    Llama,
}

/// A decoder-only transformer's architecture (Hugging Face `config.json` names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Config option name, e.g. `qwen3_0_6b`.
    pub name: String,
    /// `<org>/<model>` as on the Hugging Face hub; also the bundle path under `compute/<device>/`.
    pub hf_name: String,
    pub architecture: Architecture,
    pub vocab_size: u32,
    pub hidden_size: u32,
    pub intermediate_size: u32,
    pub num_hidden_layers: u32,
    pub num_attention_heads: u32,
    pub num_key_value_heads: u32,
    pub head_dim: u32,
    pub max_position_embeddings: u32,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    /// Longest request (prompt + output tokens) served.
    pub max_model_len: u32,
    /// Hugging Face snapshot; `None` = seeded random weights of this architecture.
    pub weights_dir: Option<PathBuf>,
    pub weights_seed: u64,
    /// `tokenizer.json`; `None` = the bundled Qwen3 tokenizer.
    pub tokenizer: Option<PathBuf>,
}

/// The device's memory budget and identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareConfig {
    pub name: String,
    /// Device directory name in profiling bundles (`cpu`, `a100`, `h100`, `h200`).
    pub device_sku: String,
    /// What kind of device this is. The real engine and the profiler serve on it only with a
    /// backend of the same `device` ([`SimrealConfig::check_serving_device`]).
    pub device: Device,
    /// Memory the engine may use for weights and KV cache.
    pub memory_bytes: u64,
    /// Fraction of `memory_bytes` kept free.
    pub memory_margin_fraction: f64,
    /// Worker threads (rayon pool for candle on CPU).
    pub cpu_threads: usize,
    /// Element type of weights, activations and KV cache on this device unless
    /// `backend.dtype` names another: f32 on the CPU, bf16 on a GPU (Vidur plans 16-bit), so
    /// a simulated A100 plans its memory in 16 bits whatever the backend.
    pub dtype: Dtype,
    /// The element types this device serves; the resolved dtype must be one of them.
    pub dtypes: Vec<Dtype>,
}

/// Where tensors live, and their element type: recorded in bundles and runs, so defined
/// with the device identity in `io`.
pub use crate::io::device::{Device, Dtype};

/// The real engine's execution backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub name: String,
    pub device: Device,
    /// Element type to serve at; `None` = the hardware's (`hardware.dtype`). Read it through
    /// [`SimrealConfig::dtype`].
    pub dtype: Option<Dtype>,
    /// KV pool size in blocks; `None` = derived from the memory budget.
    pub num_kv_blocks: Option<u32>,
    /// Iterations run before t = 0, excluded from the metrics.
    pub warmup_iterations: u32,
    /// The real engine times each op on every this-many-th iteration (1 = all); the others
    /// time the whole forward only. On a GPU that keeps per-op CUDA events off most
    /// iterations; the CPU times every op of every iteration whatever this says.
    pub op_times_every: u32,
}

/// The workload: synthetic (`lengths` + `intervals`) or a replayed trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    pub name: String,
    pub seed: u64,
    pub num_requests: u32,
    /// Mean request rate (requests/s) where arrivals are random; `None` for static bursts
    /// and replayed traces.
    pub qps: Option<f64>,
    pub lengths: Option<LengthsConfig>,
    pub intervals: Option<IntervalsConfig>,
    pub trace_replay: Option<TraceReplayConfig>,
}

/// Which op-time predictor the simulator uses (`native`, `vidur_compat`, `vidur_tables`), by
/// stable name; the predictor module builds the implementation of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictorKind {
    VidurCompat,
    VidurTables,
    Native,
}

impl PredictorKind {
    /// The stable name, equal to the predictor's `ExecutionTimePredictor::name`.
    pub fn name(self) -> &'static str {
        match self {
            PredictorKind::VidurCompat => "vidur_compat",
            PredictorKind::VidurTables => "vidur_tables",
            PredictorKind::Native => "native",
        }
    }
}

impl fmt::Display for PredictorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PredictorKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<PredictorKind> {
        [
            PredictorKind::VidurCompat,
            PredictorKind::VidurTables,
            PredictorKind::Native,
        ]
        .into_iter()
        .find(|k| k.name() == s)
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "unknown predictor `{s}` (known: vidur_compat, vidur_tables, native)"
            ))
        })
    }
}

/// How the simulator dispatches requests to replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GlobalSchedulerKind {
    RoundRobin,
    Lor,
    Random,
}

/// How the KV pool size is planned when `backend.num_kv_blocks` is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryPlanner {
    /// (budget × (1 − margin) − weights) / KV bytes per block: what the real engine allocates.
    Simreal,
    /// Vidur's planner: request slots of `max_tokens` each (VIDUR_NOTES.md §1c).
    Vidur,
}

/// The discrete-event simulator's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VidurConfig {
    pub predictor: PredictorKind,
    /// The statistic of the bundle's op times the `native` predictor fits: `median` (Vidur's)
    /// or `mean` (whose sum over layers and iterations is the expected busy time); `None` =
    /// the predictor's own ([`VidurConfig::statistic`]).
    pub predictor_statistic: Option<OpStatistic>,
    pub bundle: Option<PathBuf>,
    pub predictor_tables: Option<PathBuf>,
    pub network: Option<String>,
    pub cpu_overheads_file: Option<PathBuf>,
    pub cpu_overheads: bool,
    pub num_replicas: u32,
    pub global_scheduler: GlobalSchedulerKind,
    pub tensor_parallel_size: u32,
    pub pipeline_parallel_size: u32,
    pub memory_planner: MemoryPlanner,
    pub max_tokens: u32,
    pub seed: u64,
    /// Write `token_metrics.csv` (one row per simulated output token).
    pub token_metrics: bool,
    /// Write `batch_requests.csv` (one row per request per simulated batch).
    pub batch_requests: bool,
    /// Scale the bundle's predictions to the real run's measured device speed over time
    /// (its `device_speed.csv` against the bundle's): what the simulator would predict on
    /// the device as it was during that run. Off = a prediction that does not depend on any
    /// real run.
    pub device_speed_correction: bool,
    /// Allow a bundle measured on another device or dtype than the run it predicts (a
    /// cross-device study); the report then says so in its first line. Off = refused.
    pub cross_device: bool,
}

/// The operator profiling grid (stage `vidur_profile`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// Extra token counts for the token-level ops (decode batch sizes and prefill chunk
    /// sizes are measured anyway).
    pub num_tokens: Vec<u32>,
    pub decode_batch_sizes: Vec<u32>,
    /// Cached tokens per decoding sequence.
    pub decode_kv_sizes: Vec<u32>,
    /// Prefill chunk lengths (at least 2 tokens).
    pub prefill_chunk_sizes: Vec<u32>,
    /// Cached tokens before a prefill chunk (0 = a whole prompt).
    pub prefill_kv_sizes: Vec<u32>,
    pub cpu_overhead_batch_sizes: Vec<u32>,
    /// Discarded forwards (and logits-op calls) per grid point.
    pub warmup: u32,
    /// Timed forwards per grid point; each gives one sample per layer.
    pub repeats: u32,
    /// Minimum samples per op and grid point: models with few layers run more forwards.
    pub min_samples: u32,
    /// Timed forwards per single-token grid point (a decode step of one sequence), when more
    /// than `repeats`: they carry the memory-state response of the smallest forwards.
    pub single_token_repeats: u32,
    /// Decode iterations of the engine loop timed per CPU-overhead batch size.
    pub cpu_overhead_iterations: u32,
}

/// The `compare` stage's inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareConfig {
    /// Real run dir(s), comma-separated; `None` = the real run of this config.
    pub real_run: Option<String>,
    /// Simulated run dir; `None` = the simulated run of this config.
    pub sim_run: Option<String>,
    pub figure_width_px: u32,
    pub figure_height_px: u32,
    /// The verdict's absolute targets on |simulator error|, by statistic.
    pub targets: TargetsConfig,
    /// Bootstrap confidence intervals of the real values and the simulator's errors.
    pub bootstrap: BootstrapConfig,
}

/// Targets on the simulator's |error| against the pooled real value, in % of that value,
/// by statistic: a statistic outside the real runs' band but within its target is
/// "within target", and a band is narrow enough to decide when it is narrower than twice
/// the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetsConfig {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
}

/// Percentile-method bootstrap over requests (`docs/fidelity_verdict.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    /// Resamples per metric (at least 1000).
    pub resamples: u32,
    /// Coverage of the intervals, in (0, 1).
    pub confidence: f64,
    /// Seed of the ChaCha8 generator (one stream per metric).
    pub seed: u64,
}

/// The capacity search (`pipeline --capacity`): the highest request rate at which the real
/// engine's queue delay stays within an SLO, found by Vidur's binary search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityConfig {
    /// Quantile of the queue delay held to the SLO (0.99 = P99, as Vidur).
    pub slo_quantile: f64,
    /// The SLO on that quantile, seconds (Vidur's default 5).
    pub slo_queue_delay_s: f64,
    /// First probe at `start_qps`; the search brackets from there.
    pub start_qps: f64,
    /// Stop when the bracket is narrower than this % of the current rate (Vidur: 2.5).
    pub min_granularity_pct: f64,
    pub max_iterations: u32,
}

/// `pipeline --fidelity`: real vs simulated percentiles at fractions of the measured capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FidelityConfig {
    /// Options of the `vidur` group (replica schedulers) benchmarked, each with its own
    /// capacity search.
    pub policies: Vec<String>,
    /// Offered loads as fractions of each policy's capacity.
    pub load_fractions: Vec<f64>,
    /// Real runs per point (the first is the study's own); more than one gives the real
    /// engine's run-to-run spread.
    pub real_repeats: u32,
    /// Option of the `workload` group every point runs (`None` = the configured workload).
    pub workload: Option<String>,
    /// Fewest requests a point's workload may have (each is compared in every run).
    pub min_requests: u32,
}

/// How a timed stage runs its threads and memory, so that identical work takes the same
/// time (config `timing`; the choice is measured in `benches/results/timing_stability.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingSettings {
    pub priority: Priority,
    /// Pin worker `i` of the pool to the `i`-th CPU the process may use.
    pub pin_threads: bool,
    /// Lock every current and future page in RAM (`mlockall`).
    pub lock_memory: bool,
    /// Put the weights, the KV pool and the device probe's window on 2 MiB pages
    /// ([`crate::real_bench::huge_pages`]): a plain read of fresh 4 KiB pages streams at a
    /// speed that depends on the mapping.
    pub huge_pages: bool,
    /// With `realtime`: lift the kernel's real-time throttling while the stage runs (see
    /// [`Priority::Realtime`]).
    pub lift_rt_throttling: bool,
}

impl TimingSettings {
    /// What the engine did before these settings existed.
    pub const UNMANAGED: TimingSettings = TimingSettings {
        priority: Priority::Normal,
        pin_threads: false,
        lock_memory: false,
        huge_pages: false,
        lift_rt_throttling: false,
    };
}

/// Scheduling class of the timed threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// The default time-sharing class: other processes on the machine take CPU time from
    /// the timed threads whenever they run.
    Normal,
    /// The time-sharing class at the highest weight: nice −20 for the timed threads and,
    /// where the kernel groups processes by session (autogroup), for the stage's session
    /// group, restored when the stage ends. Other processes still run, but get about 1 % of
    /// a CPU the timed threads want. Needs root or `CAP_SYS_NICE`.
    Elevated,
    /// `SCHED_RR` at the lowest real-time priority: the timed threads run whenever they are
    /// ready, ahead of every normal process. The kernel's real-time throttling (real-time
    /// threads may use 950 ms of each second) pauses them for 50 ms once per second of
    /// uninterrupted work — a busy real run, not the profiler with its gaps — unless
    /// `lift_rt_throttling` lifts it while the stage runs (restored after; only where the
    /// kernel has the fair server, 6.12+, that keeps other processes running without it).
    /// Needs root or `CAP_SYS_NICE`; lifting the throttling needs root, and is recorded as
    /// refused without it.
    Realtime,
}

/// Where outputs go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    pub root: PathBuf,
    /// Replaces the stage's derived run id.
    pub run_id: Option<String>,
    /// Redo a complete run.
    pub force: bool,
    /// The `workload` stage writes `prompts.jsonl` itself instead of leaving it to its first
    /// reader (the texts are the same; see `workloads::stage`). Not part of any run id.
    pub eager_prompts: bool,
}

impl SimrealConfig {
    /// Deserializes a composed tree, turning serde's errors into config errors that name the
    /// key path, the file or override it came from, and the closest valid key.
    pub fn from_composed(composed: &Composed) -> Result<Self> {
        let config: SimrealConfig =
            serde_path_to_error::deserialize(&composed.value).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner().to_string();
                composed.locate_error(typed_error(&path, &inner))
            })?;
        config.validate().map_err(|e| composed.locate_error(e))?;
        Ok(config)
    }

    /// Checks values and cross-field constraints. Cheap: no file is read beyond existence
    /// checks of configured paths.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.hardware.validate()?;
        self.backend.validate()?;
        self.scheduler
            .validate()
            .map_err(|e| prefix_key(e, "scheduler"))?;
        self.workload.validate(self.model.max_model_len)?;
        self.vidur.validate(&self.model)?;
        let dtype = self.dtype();
        if !self.hardware.dtypes.contains(&dtype) {
            return Err(Error::config(
                if self.backend.dtype.is_some() {
                    "backend.dtype"
                } else {
                    "hardware.dtype"
                },
                format!(
                    "{} is not served on {} (hardware.dtypes: {})",
                    dtype.as_str(),
                    self.hardware.name,
                    self.hardware
                        .dtypes
                        .iter()
                        .map(|d| d.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if self.vidur.device_speed_correction && self.hardware.device != Device::Cpu {
            return Err(Error::config(
                "vidur.device_speed_correction",
                format!(
                    "{} is a {} device, and the calibration probes time the host's CPU, not it: \
                     there is no measured device speed to correct to",
                    self.hardware.name,
                    self.hardware.device.as_str()
                ),
            ));
        }
        self.profile.validate()?;
        self.compare.validate()?;
        self.capacity.validate()?;
        self.fidelity.validate()?;
        if self
            .output
            .run_id
            .as_deref()
            .is_some_and(|id| id.is_empty() || id.contains('/') || id.starts_with('.'))
        {
            return Err(Error::config(
                "output.run_id",
                "must be a plain directory name (no `/`, not starting with `.`)",
            ));
        }
        Ok(())
    }
}

/// Maps a serde error at `path` to a config error with a suggestion for unknown fields.
fn typed_error(path: &str, inner: &str) -> Error {
    if let Some(rest) = inner.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let key = if path.is_empty() || path == "." {
            field.to_string()
        } else if path.ends_with(field) {
            path.to_string()
        } else {
            format!("{path}.{field}")
        };
        return Error::config(
            key,
            format!(
                "unknown key `{field}`{}; valid keys here: {}",
                suggestion(field, candidates.iter().copied()),
                candidates.join(", ")
            ),
        );
    }
    let key = if path == "." {
        String::new()
    } else {
        path.to_string()
    };
    Error::config(key, inner.to_string())
}

fn prefix_key(err: Error, prefix: &str) -> Error {
    match err {
        Error::Config { key, origin, msg } => Error::Config {
            key: if key.starts_with(prefix) {
                key
            } else {
                format!("{prefix}.{key}")
            },
            origin,
            msg,
        },
        other => other,
    }
}

fn positive_finite(key: &str, v: f64) -> Result<()> {
    if !v.is_finite() || v <= 0.0 {
        return Err(Error::config(
            key,
            format!("must be a positive finite number, got {v}"),
        ));
    }
    Ok(())
}

fn fraction(key: &str, v: f64) -> Result<()> {
    if !v.is_finite() || !(0.0..1.0).contains(&v) {
        return Err(Error::config(key, format!("must be in [0, 1), got {v}")));
    }
    Ok(())
}

fn nonzero(key: &str, v: u64) -> Result<()> {
    if v == 0 {
        return Err(Error::config(key, "must be a positive integer, got 0"));
    }
    Ok(())
}

/// Resolves a configured input path: as given if it exists (relative to the working
/// directory), else relative to the source tree this binary was built from (so stages work
/// from any directory with the shipped assets).
pub fn resolve_input_path(p: &Path) -> PathBuf {
    if p.is_absolute() || p.exists() {
        return p.to_path_buf();
    }
    let in_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join(p);
    if in_tree.exists() {
        in_tree
    } else {
        p.to_path_buf()
    }
}

fn existing_path(key: &str, p: &Path, what: &str) -> Result<()> {
    let resolved = resolve_input_path(p);
    if !resolved.exists() {
        return Err(Error::config(
            key,
            format!("{what} `{}` does not exist", p.display()),
        ));
    }
    Ok(())
}

impl ModelConfig {
    fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("model.vocab_size", self.vocab_size),
            ("model.hidden_size", self.hidden_size),
            ("model.intermediate_size", self.intermediate_size),
            ("model.num_hidden_layers", self.num_hidden_layers),
            ("model.num_attention_heads", self.num_attention_heads),
            ("model.num_key_value_heads", self.num_key_value_heads),
            ("model.head_dim", self.head_dim),
            (
                "model.max_position_embeddings",
                self.max_position_embeddings,
            ),
            ("model.max_model_len", self.max_model_len),
        ] {
            nonzero(key, u64::from(v))?;
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(Error::config(
                "model.num_key_value_heads",
                format!(
                    "must divide num_attention_heads ({} % {} != 0)",
                    self.num_attention_heads, self.num_key_value_heads
                ),
            ));
        }
        if self.max_model_len > self.max_position_embeddings {
            return Err(Error::config(
                "model.max_model_len",
                format!(
                    "{} exceeds max_position_embeddings {}",
                    self.max_model_len, self.max_position_embeddings
                ),
            ));
        }
        positive_finite("model.rope_theta", self.rope_theta)?;
        positive_finite("model.rms_norm_eps", self.rms_norm_eps)?;
        if let Some(dir) = &self.weights_dir {
            let resolved = resolve_input_path(dir);
            if !resolved.is_dir() {
                return Err(Error::config(
                    "model.weights_dir",
                    format!("weights directory `{}` does not exist", dir.display()),
                ));
            }
        }
        if let Some(t) = &self.tokenizer {
            existing_path("model.tokenizer", t, "tokenizer file")?;
        }
        Ok(())
    }
}

impl HardwareConfig {
    fn validate(&self) -> Result<()> {
        nonzero("hardware.memory_bytes", self.memory_bytes)?;
        nonzero("hardware.cpu_threads", self.cpu_threads as u64)?;
        if !self.dtypes.contains(&self.dtype) {
            return Err(Error::config(
                "hardware.dtypes",
                format!(
                    "must include the device's own dtype {}",
                    self.dtype.as_str()
                ),
            ));
        }
        fraction(
            "hardware.memory_margin_fraction",
            self.memory_margin_fraction,
        )
    }
}

impl BackendConfig {
    fn validate(&self) -> Result<()> {
        if let Some(n) = self.num_kv_blocks {
            nonzero("backend.num_kv_blocks", u64::from(n))?;
        }
        nonzero("backend.op_times_every", u64::from(self.op_times_every))
    }
}

impl WorkloadConfig {
    fn validate(&self, max_model_len: u32) -> Result<()> {
        nonzero("workload.num_requests", u64::from(self.num_requests))?;
        if let Some(qps) = self.qps {
            positive_finite("workload.qps", qps)?;
        }
        match (&self.trace_replay, &self.lengths, &self.intervals) {
            (Some(replay), None, None) => {
                replay.validate()?;
                existing_path(
                    "workload.trace_replay.trace_file",
                    &replay.trace_file,
                    "trace file",
                )?;
            }
            (None, Some(lengths), Some(intervals)) => {
                lengths.validate_for_context(max_model_len)?;
                intervals.validate()?;
                if intervals.uses_qps() && self.qps.is_none() {
                    return Err(Error::config(
                        "workload.qps",
                        format!(
                            "the `{}` interval generator needs a rate; set workload.qps",
                            intervals.name()
                        ),
                    ));
                }
                for (key, file) in lengths
                    .trace_file()
                    .map(|f| ("workload.lengths.trace_file", f))
                    .into_iter()
                    .chain(
                        intervals
                            .trace_file()
                            .map(|f| ("workload.intervals.trace_file", f)),
                    )
                {
                    existing_path(key, file, "trace file")?;
                }
            }
            (Some(_), _, _) => {
                return Err(Error::config(
                    "workload.trace_replay",
                    "a replayed trace takes lengths and arrivals from the trace: set workload.lengths and workload.intervals to null",
                ))
            }
            (None, _, _) => {
                return Err(Error::config(
                    "workload",
                    "set both workload.lengths and workload.intervals (synthetic) or workload.trace_replay",
                ))
            }
        }
        Ok(())
    }
}

impl VidurConfig {
    /// The statistic of the bundle's op times the predictor fits: `vidur.predictor_statistic`,
    /// else the predictor's own. The native predictor fits means: the simulator's error is
    /// judged on sums (busy time, latencies), and a sum of medians misses the op times'
    /// right tail (on this 2-core VM a fresh clone's execution time −5.5…−6.6 % with medians,
    /// −2.1…−3.2 % with means, docs/ground_truth.md). Vidur's predictors fit medians.
    pub fn statistic(&self) -> OpStatistic {
        self.predictor_statistic.unwrap_or(match self.predictor {
            PredictorKind::Native => OpStatistic::Mean,
            PredictorKind::VidurCompat | PredictorKind::VidurTables => OpStatistic::Median,
        })
    }

    fn validate(&self, model: &ModelConfig) -> Result<()> {
        nonzero("vidur.num_replicas", u64::from(self.num_replicas))?;
        nonzero(
            "vidur.tensor_parallel_size",
            u64::from(self.tensor_parallel_size),
        )?;
        nonzero(
            "vidur.pipeline_parallel_size",
            u64::from(self.pipeline_parallel_size),
        )?;
        nonzero("vidur.max_tokens", u64::from(self.max_tokens))?;
        if !model
            .num_attention_heads
            .is_multiple_of(self.tensor_parallel_size)
        {
            return Err(Error::config(
                "vidur.tensor_parallel_size",
                format!(
                    "{} does not divide the model's {} attention heads",
                    self.tensor_parallel_size, model.num_attention_heads
                ),
            ));
        }
        if !model
            .num_hidden_layers
            .is_multiple_of(self.pipeline_parallel_size)
        {
            return Err(Error::config(
                "vidur.pipeline_parallel_size",
                format!(
                    "{} does not divide the model's {} layers",
                    self.pipeline_parallel_size, model.num_hidden_layers
                ),
            ));
        }
        if let Some(b) = &self.bundle {
            existing_path("vidur.bundle", b, "profiling bundle")?;
        }
        if let Some(t) = &self.predictor_tables {
            existing_path("vidur.predictor_tables", t, "predictor tables dir")?;
        }
        if let Some(f) = &self.cpu_overheads_file {
            existing_path("vidur.cpu_overheads_file", f, "cpu overheads file")?;
        }
        if self.predictor != PredictorKind::Native
            && self
                .predictor_statistic
                .is_some_and(|s| s != OpStatistic::Median)
        {
            return Err(Error::config(
                "vidur.predictor_statistic",
                format!(
                    "`{}` fits medians, as Vidur does; only the native predictor can fit another statistic",
                    self.predictor.name()
                ),
            ));
        }
        if self.predictor == PredictorKind::VidurTables && self.predictor_tables.is_none() {
            return Err(Error::config(
                "vidur.predictor_tables",
                "predictor = vidur_tables needs the directory of Vidur's prediction tables",
            ));
        }
        Ok(())
    }
}

impl ProfileConfig {
    fn validate(&self) -> Result<()> {
        for (key, grid) in [
            ("profile.num_tokens", &self.num_tokens),
            ("profile.decode_batch_sizes", &self.decode_batch_sizes),
            ("profile.decode_kv_sizes", &self.decode_kv_sizes),
            ("profile.prefill_chunk_sizes", &self.prefill_chunk_sizes),
            (
                "profile.cpu_overhead_batch_sizes",
                &self.cpu_overhead_batch_sizes,
            ),
        ] {
            if grid.is_empty() {
                return Err(Error::config(key, "the grid is empty"));
            }
            if grid.contains(&0) {
                return Err(Error::config(key, "grid points must be positive"));
            }
        }
        if self.prefill_chunk_sizes.contains(&1) {
            return Err(Error::config(
                "profile.prefill_chunk_sizes",
                "a prefill chunk has at least 2 tokens (1 token is a decode)",
            ));
        }
        if self.prefill_kv_sizes.is_empty() {
            return Err(Error::config(
                "profile.prefill_kv_sizes",
                "the grid is empty",
            ));
        }
        nonzero("profile.repeats", u64::from(self.repeats))?;
        nonzero(
            "profile.cpu_overhead_iterations",
            u64::from(self.cpu_overhead_iterations),
        )
    }
}

impl CapacityConfig {
    fn validate(&self) -> Result<()> {
        if !self.slo_quantile.is_finite() || !(0.0..=1.0).contains(&self.slo_quantile) {
            return Err(Error::config(
                "capacity.slo_quantile",
                format!("must be in [0, 1], got {}", self.slo_quantile),
            ));
        }
        positive_finite("capacity.slo_queue_delay_s", self.slo_queue_delay_s)?;
        positive_finite("capacity.start_qps", self.start_qps)?;
        positive_finite("capacity.min_granularity_pct", self.min_granularity_pct)?;
        nonzero("capacity.max_iterations", u64::from(self.max_iterations))
    }
}

impl FidelityConfig {
    fn validate(&self) -> Result<()> {
        if self.policies.is_empty() {
            return Err(Error::config("fidelity.policies", "is empty"));
        }
        if self.load_fractions.is_empty() {
            return Err(Error::config("fidelity.load_fractions", "is empty"));
        }
        for (i, f) in self.load_fractions.iter().enumerate() {
            positive_finite(&format!("fidelity.load_fractions[{i}]"), *f)?;
        }
        nonzero("fidelity.real_repeats", u64::from(self.real_repeats))?;
        if self.workload.as_deref().is_some_and(str::is_empty) {
            return Err(Error::config(
                "fidelity.workload",
                "is empty; name a workload group option or null",
            ));
        }
        nonzero("fidelity.min_requests", u64::from(self.min_requests))
    }
}

/// Fewest bootstrap resamples allowed: fewer leave the percentile interval's endpoints
/// (the 2.5th and 97.5th of the replicates) to a handful of draws.
pub const MIN_BOOTSTRAP_RESAMPLES: u32 = 1000;

impl CompareConfig {
    fn validate(&self) -> Result<()> {
        nonzero("compare.figure_width_px", u64::from(self.figure_width_px))?;
        nonzero("compare.figure_height_px", u64::from(self.figure_height_px))?;
        let t = &self.targets;
        for (key, v) in [
            ("mean", t.mean),
            ("p50", t.p50),
            ("p90", t.p90),
            ("p95", t.p95),
            ("p99", t.p99),
        ] {
            positive_finite(&format!("compare.targets.{key}"), v)?;
        }
        if self.bootstrap.resamples < MIN_BOOTSTRAP_RESAMPLES {
            return Err(Error::config(
                "compare.bootstrap.resamples",
                format!(
                    "must be at least {MIN_BOOTSTRAP_RESAMPLES}, got {}",
                    self.bootstrap.resamples
                ),
            ));
        }
        let c = self.bootstrap.confidence;
        if !(c > 0.0 && c < 1.0) {
            return Err(Error::config(
                "compare.bootstrap.confidence",
                format!("must be in (0, 1), got {c}"),
            ));
        }
        Ok(())
    }

    /// What shapes a comparison besides the runs it compares (statistics settings, figure
    /// size): part of its id, so that changing a target recomputes the comparison.
    pub fn settings_key(&self) -> Result<serde_json::Value> {
        let mut v = serde_json::to_value(self).map_err(|e| Error::InvalidInput(e.to_string()))?;
        if let Some(m) = v.as_object_mut() {
            m.remove("real_run");
            m.remove("sim_run");
        }
        Ok(v)
    }

    /// The real run dirs named by `real_run` (comma-separated), if any.
    pub fn real_run_dirs(&self) -> Vec<PathBuf> {
        split_dirs(self.real_run.as_deref())
    }

    /// The simulated run dir named by `sim_run`, if any.
    pub fn sim_run_dir(&self) -> Option<PathBuf> {
        split_dirs(self.sim_run.as_deref()).into_iter().next()
    }
}

fn split_dirs(list: Option<&str>) -> Vec<PathBuf> {
    list.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect()
    })
    .unwrap_or_default()
}
