//! The schema registry: one entry per contract file of DESIGN.md (schema v1).
//!
//! Every CSV the stages exchange is described here once — columns, types, units, whether a
//! column must be present and whether it may be empty — and `io::csv` validates against it on
//! both write and read. `specs/` is generated from this registry and a test keeps them in sync.
//! Additions are append-only: new columns go at the end of a schema.

use crate::io::ops::{with_ops, Op};

/// Version of every contract in this registry.
pub const SCHEMA_VERSION: u32 = 1;

/// Value type of a CSV column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// Non-negative integer (ids, counts, nanoseconds).
    U64,
    /// Signed integer.
    I64,
    /// Finite floating-point number (NaN and infinities are rejected).
    F64,
    /// `true` or `false`.
    Bool,
    /// Free text.
    Str,
}

impl ColumnType {
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::U64 => "u64",
            ColumnType::I64 => "i64",
            ColumnType::F64 => "f64",
            ColumnType::Bool => "bool",
            ColumnType::Str => "string",
        }
    }
}

/// One column of a CSV contract.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub dtype: ColumnType,
    /// Readers reject a file without this column.
    pub required: bool,
    /// The value may be empty (e.g. a TTFT for a request that failed).
    pub nullable: bool,
    pub unit: &'static str,
    pub description: &'static str,
}

/// A CSV contract.
#[derive(Debug)]
pub struct CsvSchema {
    /// File name as written in a run dir, e.g. `request_metrics.csv`.
    pub file_name: &'static str,
    pub version: u32,
    pub description: &'static str,
    /// Columns in the order writers emit them.
    pub columns: &'static [Column],
}

impl CsvSchema {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn column_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.columns.iter().map(|c| c.name)
    }
}

const fn col(
    name: &'static str,
    dtype: ColumnType,
    unit: &'static str,
    description: &'static str,
) -> Column {
    Column {
        name,
        dtype,
        required: true,
        nullable: false,
        unit,
        description,
    }
}

/// Required column that may be empty.
const fn col_null(
    name: &'static str,
    dtype: ColumnType,
    unit: &'static str,
    description: &'static str,
) -> Column {
    Column {
        name,
        dtype,
        required: true,
        nullable: true,
        unit,
        description,
    }
}

/// Column that writers always emit but readers do not require (append-only extensions and
/// the "always written as well" columns of DESIGN.md). Always nullable.
const fn opt(
    name: &'static str,
    dtype: ColumnType,
    unit: &'static str,
    description: &'static str,
) -> Column {
    Column {
        name,
        dtype,
        required: false,
        nullable: true,
        unit,
        description,
    }
}

use ColumnType::{Bool, Str, F64, I64, U64};

pub static TRACE_LENGTHS: CsvSchema = CsvSchema {
    file_name: "trace_lengths.csv",
    version: SCHEMA_VERSION,
    description: "One row per request of a workload: its prompt and output lengths in tokens.",
    columns: &[
        col("request_id", U64, "", "0..N-1 in arrival order"),
        col(
            "prompt_id",
            U64,
            "",
            "the `prompt_id` of the request's prompt in prompts.jsonl",
        ),
        col(
            "num_prefill_tokens",
            U64,
            "tokens",
            "prompt length with the run's tokenizer",
        ),
        col(
            "num_decode_tokens",
            U64,
            "tokens",
            "output tokens to generate (EOS ignored)",
        ),
    ],
};

pub static TRACE_INTERVALS: CsvSchema = CsvSchema {
    file_name: "trace_intervals.csv",
    version: SCHEMA_VERSION,
    description: "One row per request: when it arrives, relative to the trace's time origin.",
    columns: &[
        col("request_id", U64, "", "0..N-1 in arrival order"),
        col(
            "inter_arrival_ns",
            U64,
            "ns",
            "gap since the previous request; 0 for request 0",
        ),
        col(
            "arrival_time_ns",
            U64,
            "ns",
            "running sum of inter_arrival_ns",
        ),
    ],
};

pub static REQUEST_METRICS: CsvSchema = CsvSchema {
    file_name: "request_metrics.csv",
    version: SCHEMA_VERSION,
    description:
        "One row per request of a real or simulated run. Times are ns since the run's time origin.",
    columns: &[
        col("request_id", U64, "", "request id from the workload"),
        col("arrival_time_ns", U64, "ns", "when the request arrived"),
        col_null(
            "first_token_time_ns",
            U64,
            "ns",
            "when output token 0 was emitted; empty if none",
        ),
        col_null(
            "ttft_ns",
            U64,
            "ns",
            "first_token_time_ns - arrival_time_ns",
        ),
        col("num_prefill_tokens", U64, "tokens", "prompt length"),
        col(
            "num_decode_tokens",
            U64,
            "tokens",
            "output tokens requested",
        ),
        col(
            "num_decode_tokens_actual",
            U64,
            "tokens",
            "output tokens produced",
        ),
        col("status", Str, "", "`ok` or `error`"),
        opt(
            "scheduled_time_ns",
            U64,
            "ns",
            "when the request was first admitted to a batch",
        ),
        opt(
            "completion_time_ns",
            U64,
            "ns",
            "when its last output token was emitted",
        ),
        opt("e2e_ns", U64, "ns", "completion_time_ns - arrival_time_ns"),
        opt(
            "tpot_ns",
            U64,
            "ns",
            "(completion - first token) / (actual - 1); empty when actual <= 1",
        ),
        opt(
            "queue_delay_ns",
            U64,
            "ns",
            "scheduled_time_ns - arrival_time_ns",
        ),
        opt(
            "num_preemptions",
            U64,
            "",
            "times the request was preempted (recompute)",
        ),
        opt("replica_id", U64, "", "replica that served the request"),
        opt(
            "backend",
            Str,
            "",
            "what produced the row: `candle_cpu`, `vidur_sim`, ...",
        ),
        opt("error_type", Str, "", "error category when status = error"),
        opt("error_msg", Str, "", "error message when status = error"),
    ],
};

pub static TOKEN_METRICS: CsvSchema = CsvSchema {
    file_name: "token_metrics.csv",
    version: SCHEMA_VERSION,
    description: "One row per output token.",
    columns: &[
        col("request_id", U64, "", "request id"),
        col("token_index", U64, "", "0-based, contiguous per request"),
        col(
            "token_time_ns",
            U64,
            "ns",
            "when the token was emitted; non-decreasing per request",
        ),
        col(
            "token_latency_ns",
            U64,
            "ns",
            "gap since the previous token of the request; 0 for token 0",
        ),
        col("batch_id", U64, "", "the iteration that emitted it"),
        opt(
            "token_id",
            U64,
            "",
            "the generated token id (real runs only)",
        ),
    ],
};

/// Op names of the per-op breakdown columns `op_<name>_ns` in `batch_metrics.csv`, in
/// column order: the op registry's ([`Op::NAMES`]).
pub const OP_NAMES: [&str; Op::COUNT] = Op::NAMES;

// The op columns are expanded from the op list (`with_ops!`), like the row's fields.
macro_rules! define_batch_metrics_schema {
    ($($variant:ident $name:ident $column:ident,)*) => {
        pub static BATCH_METRICS: CsvSchema = CsvSchema {
            file_name: "batch_metrics.csv",
            version: SCHEMA_VERSION,
            description: "One row per engine iteration (batch).",
            columns: &[
                col("batch_id", U64, "", "iteration id, unique within the run"),
                col("replica_id", U64, "", "replica that ran it"),
                col(
                    "start_time_ns",
                    U64,
                    "ns",
                    "when the iteration started (scheduling included)",
                ),
                col("end_time_ns", U64, "ns", "when its tokens were emitted"),
                col("duration_ns", U64, "ns", "end_time_ns - start_time_ns"),
                col("num_requests", U64, "", "requests in the batch"),
                col(
                    "num_prefill_requests",
                    U64,
                    "",
                    "requests with a prefill (or recompute) chunk",
                ),
                col(
                    "num_decode_requests",
                    U64,
                    "",
                    "requests decoding one token",
                ),
                col(
                    "num_prefill_tokens",
                    U64,
                    "tokens",
                    "prefill tokens processed",
                ),
                col(
                    "num_decode_tokens",
                    U64,
                    "tokens",
                    "decode tokens processed",
                ),
                col(
                    "kv_context_tokens",
                    U64,
                    "tokens",
                    "sum over requests of attended context (cached + new)",
                ),
                col(
                    "num_kv_blocks_used",
                    U64,
                    "blocks",
                    "KV blocks allocated after scheduling",
                ),
                col(
                    "num_preempted",
                    U64,
                    "",
                    "requests preempted while forming this batch",
                ),
                opt(
                    "num_waiting_requests",
                    U64,
                    "",
                    "queue depth (arrived, not running) after scheduling",
                ),
                opt(
                    "model_forward_ns",
                    U64,
                    "ns",
                    "model execution time (measured or predicted)",
                ),
                opt("cpu_schedule_ns", U64, "ns", "CPU: scheduler decision"),
                opt(
                    "cpu_prepare_inputs_ns",
                    U64,
                    "ns",
                    "CPU: building the flattened batch",
                ),
                opt(
                    "cpu_sampler_ns",
                    U64,
                    "ns",
                    "CPU: sampling tokens from logits",
                ),
                opt(
                    "cpu_process_outputs_ns",
                    U64,
                    "ns",
                    "CPU: recording outputs, updating request state",
                ),
        $(
            opt(
                stringify!($column),
                U64,
                "ns",
                concat!("time in `", stringify!($name), "`, whole model (measured or predicted)"),
            ),
        )*
                opt(
                    "extrapolated",
                    Bool,
                    "",
                    "simulator: a prediction left the profiled grid",
                ),
                opt(
                    "cpu_time_ns",
                    U64,
                    "ns",
                    "real engine: CPU time all threads of the process used during the iteration (with duration_ns and the thread count, how much of the wall time the device really computed)",
                ),
            ],
        };
    };
}
with_ops!(define_batch_metrics_schema);

pub static BATCH_REQUESTS: CsvSchema = CsvSchema {
    file_name: "batch_requests.csv",
    version: SCHEMA_VERSION,
    description: "One row per request per iteration: what the iteration computed for it.",
    columns: &[
        col("batch_id", U64, "", "iteration id"),
        col("request_id", U64, "", "request id"),
        col(
            "num_tokens",
            U64,
            "tokens",
            "tokens scheduled for the request this iteration",
        ),
        col(
            "num_context_tokens",
            U64,
            "tokens",
            "tokens already in the KV cache",
        ),
        col(
            "is_prefill",
            Bool,
            "",
            "prefill (or recompute) chunk rather than a decode",
        ),
    ],
};

pub static REQUEST_COMPARISON: CsvSchema = CsvSchema {
    file_name: "request_comparison.csv",
    version: SCHEMA_VERSION,
    description: "compare: one row per request that both runs served without error, real and \
simulated metrics side by side. Errors are `100 · (sim − real) / real`, empty where the real \
value is 0 or either side lacks the metric (a one-token request has no TPOT; a request that \
stopped early on either side has no comparable E2E or TPOT).",
    columns: &[
        col("request_id", U64, "", "request id from the workload"),
        col("arrival_time_ns", U64, "ns", "arrival in the real run"),
        col("num_prefill_tokens", U64, "tokens", "prompt length"),
        col(
            "num_decode_tokens",
            U64,
            "tokens",
            "output tokens requested",
        ),
        col_null(
            "real_ttft_ns",
            U64,
            "ns",
            "TTFT = first token − arrival, real run",
        ),
        col_null("sim_ttft_ns", U64, "ns", "TTFT, simulated run"),
        col_null(
            "ttft_err_pct",
            F64,
            "%",
            "signed relative error of the simulated TTFT",
        ),
        col_null(
            "ttft_abs_err_pct",
            F64,
            "%",
            "absolute relative error of the simulated TTFT",
        ),
        col_null(
            "real_tpot_ns",
            U64,
            "ns",
            "TPOT = (completion − first token) / (output tokens − 1), real run",
        ),
        col_null("sim_tpot_ns", U64, "ns", "TPOT, simulated run"),
        col_null(
            "tpot_err_pct",
            F64,
            "%",
            "signed relative error of the simulated TPOT",
        ),
        col_null(
            "tpot_abs_err_pct",
            F64,
            "%",
            "absolute relative error of the simulated TPOT",
        ),
        col_null(
            "real_e2e_ns",
            U64,
            "ns",
            "E2E = completion − arrival, real run",
        ),
        col_null("sim_e2e_ns", U64, "ns", "E2E, simulated run"),
        col_null(
            "e2e_err_pct",
            F64,
            "%",
            "signed relative error of the simulated E2E",
        ),
        col_null(
            "e2e_abs_err_pct",
            F64,
            "%",
            "absolute relative error of the simulated E2E",
        ),
        col_null(
            "real_queue_delay_ns",
            U64,
            "ns",
            "queue delay = first scheduled − arrival, real run",
        ),
        col_null(
            "sim_queue_delay_ns",
            U64,
            "ns",
            "queue delay, simulated run",
        ),
        col_null(
            "queue_delay_err_pct",
            F64,
            "%",
            "signed relative error of the simulated queue delay",
        ),
        col_null(
            "queue_delay_abs_err_pct",
            F64,
            "%",
            "absolute relative error of the simulated queue delay",
        ),
    ],
};

pub static TOKEN_COMPARISON: CsvSchema = CsvSchema {
    file_name: "token_comparison.csv",
    version: SCHEMA_VERSION,
    description: "compare: one row per output token that both runs emitted (same request, same \
token index), real and simulated emission times and gaps side by side.",
    columns: &[
        col("request_id", U64, "", "request id"),
        col("token_index", U64, "", "0-based output token index"),
        col(
            "real_token_time_ns",
            U64,
            "ns",
            "emission time since the run's origin, real run",
        ),
        col(
            "sim_token_time_ns",
            U64,
            "ns",
            "emission time, simulated run",
        ),
        col(
            "token_time_diff_ns",
            I64,
            "ns",
            "sim_token_time_ns − real_token_time_ns",
        ),
        col(
            "real_token_latency_ns",
            U64,
            "ns",
            "gap since the request's previous token (ITL), real run; 0 for token 0",
        ),
        col(
            "sim_token_latency_ns",
            U64,
            "ns",
            "the same gap, simulated run",
        ),
        col_null(
            "token_latency_err_pct",
            F64,
            "%",
            "signed relative error of the simulated gap; empty for token 0 and real gaps of 0",
        ),
    ],
};

pub static ITERATION_COMPARISON: CsvSchema = CsvSchema {
    file_name: "iteration_comparison.csv",
    version: SCHEMA_VERSION,
    description: "compare: one row per iteration of the real run whose duration was also \
predicted — by replaying its exact composition through the op-time predictor, or, where no \
replay is available, by the simulated iteration of identical composition at the same position.",
    columns: &[
        col("batch_id", U64, "", "iteration id in the real run"),
        col(
            "start_time_ns",
            U64,
            "ns",
            "when the real iteration started",
        ),
        col("num_requests", U64, "", "requests in the iteration"),
        col(
            "num_tokens",
            U64,
            "tokens",
            "tokens scheduled in the iteration",
        ),
        col(
            "measured_ns",
            U64,
            "ns",
            "measured duration of the real iteration",
        ),
        col(
            "predicted_ns",
            U64,
            "ns",
            "predicted duration of the same composition",
        ),
        col_null(
            "measured_cpu_overhead_ns",
            U64,
            "ns",
            "measured CPU overhead (schedule, prepare, sample, process outputs)",
        ),
        col_null(
            "predicted_cpu_overhead_ns",
            U64,
            "ns",
            "predicted CPU overhead",
        ),
        col(
            "error_pct",
            F64,
            "%",
            "100 · (predicted − measured) / measured",
        ),
        col(
            "source",
            Str,
            "",
            "`replay:<predictor>` or `matched_sim_iteration`",
        ),
    ],
};

/// `sweep.csv`: one row per sweep point (`pipeline -m ...`).
pub static SWEEP: CsvSchema = CsvSchema {
    file_name: "sweep.csv",
    version: SCHEMA_VERSION,
    description: "One row per point of a sweep: its configuration, load and the real-vs-simulated errors of its comparison.",
    columns: &[
        col("point", U64, "", "0-based index of the sweep point"),
        col("overrides", Str, "", "the point's overrides, space-separated"),
        col("model", Str, "", "model option"),
        col("policy", Str, "", "replica scheduler policy"),
        col_null("qps", F64, "req/s", "offered request rate (workload.qps); empty for static/trace arrivals"),
        col_null("capacity_qps", F64, "req/s", "capacity from a completed capacity search of this configuration"),
        col_null("load_fraction", F64, "", "qps / capacity_qps"),
        col("compare_dir", Str, "", "the point's comparison"),
        col("requests_compared", U64, "", "requests paired between the real and simulated runs"),
        col_null("real_requests_per_s", F64, "req/s", "real throughput"),
        col_null("sim_requests_per_s", F64, "req/s", "simulated throughput"),
        col_null("ttft_p50_real_ms", F64, "ms", "real TTFT P50"),
        col_null("ttft_p50_sim_ms", F64, "ms", "simulated TTFT P50"),
        col_null("ttft_p50_err_pct", F64, "%", "100·(sim − real)/real of TTFT P50"),
        col_null("ttft_p90_real_ms", F64, "ms", "real TTFT P90"),
        col_null("ttft_p90_sim_ms", F64, "ms", "simulated TTFT P90"),
        col_null("ttft_p90_err_pct", F64, "%", "100·(sim − real)/real of TTFT P90"),
        col_null("ttft_p99_real_ms", F64, "ms", "real TTFT P99"),
        col_null("ttft_p99_sim_ms", F64, "ms", "simulated TTFT P99"),
        col_null("ttft_p99_err_pct", F64, "%", "100·(sim − real)/real of TTFT P99"),
        col_null("ttft_mape_pct", F64, "%", "per-request mean absolute % error of TTFT"),
        col_null("tpot_p50_real_ms", F64, "ms", "real TPOT P50"),
        col_null("tpot_p50_sim_ms", F64, "ms", "simulated TPOT P50"),
        col_null("tpot_p50_err_pct", F64, "%", "100·(sim − real)/real of TPOT P50"),
        col_null("tpot_p90_real_ms", F64, "ms", "real TPOT P90"),
        col_null("tpot_p90_sim_ms", F64, "ms", "simulated TPOT P90"),
        col_null("tpot_p90_err_pct", F64, "%", "100·(sim − real)/real of TPOT P90"),
        col_null("tpot_p99_real_ms", F64, "ms", "real TPOT P99"),
        col_null("tpot_p99_sim_ms", F64, "ms", "simulated TPOT P99"),
        col_null("tpot_p99_err_pct", F64, "%", "100·(sim − real)/real of TPOT P99"),
        col_null("tpot_mape_pct", F64, "%", "per-request mean absolute % error of TPOT"),
        col_null("e2e_p50_real_ms", F64, "ms", "real E2E P50"),
        col_null("e2e_p50_sim_ms", F64, "ms", "simulated E2E P50"),
        col_null("e2e_p50_err_pct", F64, "%", "100·(sim − real)/real of E2E P50"),
        col_null("e2e_p90_real_ms", F64, "ms", "real E2E P90"),
        col_null("e2e_p90_sim_ms", F64, "ms", "simulated E2E P90"),
        col_null("e2e_p90_err_pct", F64, "%", "100·(sim − real)/real of E2E P90"),
        col_null("e2e_p99_real_ms", F64, "ms", "real E2E P99"),
        col_null("e2e_p99_sim_ms", F64, "ms", "simulated E2E P99"),
        col_null("e2e_p99_err_pct", F64, "%", "100·(sim − real)/real of E2E P99"),
        col_null("e2e_mape_pct", F64, "%", "per-request mean absolute % error of E2E"),
    ],
};

pub static DEVICE_SPEED: CsvSchema = CsvSchema {
    file_name: "device_speed.csv",
    version: SCHEMA_VERSION,
    description: "The device's speed while a timed stage ran (`real`, `vidur_profile`), measured independently of the workload: one row per calibration probe (fixed memory-bound and compute-bound kernels, before and after the run and in idle gaps) and per host sample taken while busy (steal time only).",
    columns: &[
        col("sample_id", U64, "", "0, 1, 2, … in time order"),
        col(
            "time_ns",
            I64,
            "ns",
            "when the sample was taken, relative to the run's time origin (negative before it)",
        ),
        col(
            "phase",
            Str,
            "",
            "`before` or `after` the run, `idle` (a probe in a gap between iterations), `busy` (a host sample while serving or profiling, no probe), `quick` (since probe version 5: one repeat of the memory kernel between iterations, several times a second, on the window as the work left it — no flush, no compute kernel, no host counters)",
        ),
        col_null(
            "memory_probe_ns",
            U64,
            "ns",
            "median time of the memory-bound kernel over a 64 MiB window flushed from the caches, shared by every thread (version 4: the engine's decode projection with the window as weights; 3: a plain read); since probe version 3 the slowest thread's own span, over the repeats kept; on `quick` rows its one repeat, without the flush; empty for `busy` rows",
        ),
        col_null(
            "compute_probe_ns",
            U64,
            "ns",
            "median time of the compute-bound kernel on every thread (version 4: the engine's prefill GEMM on cache-resident operands; 3: FMA chains on registers); since probe version 3 the slowest thread's own span, over the repeats kept; empty for `busy` and `quick` rows",
        ),
        col_null(
            "memory_gb_per_s",
            F64,
            "GB/s",
            "bandwidth the memory probe achieved",
        ),
        col_null(
            "compute_gflop_per_s",
            F64,
            "GFLOP/s",
            "rate the compute probe achieved",
        ),
        col_null(
            "steal_pct",
            F64,
            "%",
            "share of the host's CPU time the hypervisor stole since the previous sample (/proc/stat); empty for the first sample or where unknown",
        ),
        opt(
            "competing_cpu_pct",
            F64,
            "%",
            "share of the host's CPU time other processes ran since the previous sample (/proc/stat busy time minus this process's CPU time); empty for the first sample or where unknown",
        ),
        opt(
            "run_queue_wait_pct",
            F64,
            "%",
            "time the stage's threads waited, runnable, for a CPU since the previous sample (/proc/self/task/*/schedstat, summed over threads), % of the wall time of its compute threads (wall time × their number; 100 = none could run): what other processes took from them; empty for the first sample or where unknown",
        ),
        col_null(
            "load_average_1min",
            F64,
            "",
            "/proc/loadavg 1-minute load average when sampled",
        ),
        opt(
            "probe_repeats",
            U64,
            "",
            "timed repeats of each probe kernel (5; 1 on `quick` rows); empty for `busy` rows and in files written before probe version 3",
        ),
        opt(
            "memory_probe_kept_repeats",
            U64,
            "",
            "memory-kernel repeats whose threads ran together (first thread start to last thread end at most 1.25 × the longest time one thread ran), of `probe_repeats`; `memory_probe_ns` is their median (of all repeats when none was kept); the probe times the device only when most were kept (otherwise the host's scheduler, not the device, set its time); empty where `probe_repeats` is",
        ),
        opt(
            "compute_probe_kept_repeats",
            U64,
            "",
            "compute-kernel repeats whose threads ran together, of `probe_repeats` (as `memory_probe_kept_repeats`); `compute_probe_ns` is their median",
        ),
        opt(
            "memory_probe_max_skew",
            F64,
            "",
            "largest skew over the memory kernel's repeats: its threads' joint span ÷ the longest time one thread ran (its CPU time where known); 1 = they ran together, 2 on two threads = one ran while the other waited",
        ),
        opt(
            "compute_probe_max_skew",
            F64,
            "",
            "largest skew over the compute kernel's repeats (as `memory_probe_max_skew`)",
        ),
        opt(
            "probe_version",
            U64,
            "",
            "version of the probe's kernels and sizes, the same on every row: 5 = version 4 and `quick` rows between iterations; 4 = the engine's decode projection (one row against a 64 MiB weight window flushed from the caches) and its prefill GEMM (256 rows against cache-resident weights); empty in files written before version 4, whose probes were a plain 64 MiB read and FMA chains (version 3). Rates of different versions do not compare",
        ),
    ],
};

/// Every CSV contract the stages produce.
pub fn csv_schemas() -> [&'static CsvSchema; 11] {
    [
        &TRACE_LENGTHS,
        &TRACE_INTERVALS,
        &REQUEST_METRICS,
        &TOKEN_METRICS,
        &BATCH_METRICS,
        &BATCH_REQUESTS,
        &REQUEST_COMPARISON,
        &TOKEN_COMPARISON,
        &ITERATION_COMPARISON,
        &SWEEP,
        &DEVICE_SPEED,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_columns_match_op_names() {
        let op_cols: Vec<&str> = BATCH_METRICS
            .column_names()
            .filter(|c| c.starts_with("op_"))
            .collect();
        let expected: Vec<String> = OP_NAMES.iter().map(|o| format!("op_{o}_ns")).collect();
        assert_eq!(op_cols, expected);
    }

    #[test]
    fn column_names_unique_and_units_in_names() {
        for schema in csv_schemas() {
            let mut names: Vec<&str> = schema.column_names().collect();
            names.sort_unstable();
            let n = names.len();
            names.dedup();
            assert_eq!(n, names.len(), "{} has duplicate columns", schema.file_name);
            for c in schema.columns {
                if c.unit == "ns" {
                    assert!(c.name.ends_with("_ns"), "{} lacks _ns", c.name);
                }
                assert!(!c.required || c.nullable || !c.name.is_empty());
            }
        }
    }
}
