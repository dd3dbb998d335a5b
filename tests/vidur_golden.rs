//! The simulator against Vidur 0.0.1 itself, at scale.
//!
//! Each case of `tests/data/vidur_golden/cases.json` (a prefix of `splitwise_conv`, Llama-2-70B
//! TP2 on A100, a replica scheduler, a KV pool, PP) was run through Vidur 0.0.1 with the
//! prediction tables Vidur cached (`tools/vidur_golden/make_goldens.py`), and its per-request
//! times and per-batch shapes kept. Here the same requests — replayed by the `workload`
//! stage's own `replay_trace`, pool from Vidur's planner unless the case sets one — run
//! through our simulator in its Vidur-compatible mode (`vidur_tables`, Vidur's float clock).
//! Every case must give the same batches (tokens and requests of each, in formation order),
//! every batch within 1 ns of Vidur's duration, every request's E2E, TTFT and scheduling delay
//! within 10 µs (in fact within 1 ns: the clock is Vidur's) and its restart count equal.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};

use common::vidur_formula::vidur_reference;
use serde::Deserialize;
use simreal::config::memory_planner::{plan_memory, MemoryPlannerInput};
use simreal::io::records::{BatchMetricsRow, RequestMetricsRow, RequestStatus, TokenMetricsRow};
use simreal::scheduler::{BatchEntry, Policy, SchedulerConfig};
use simreal::vidur_ext::predictor::{
    BatchPrediction, ExecutionTimePredictor, IterationContext, PredictorConfig, RequestShape,
    VidurTablesPredictor,
};
use simreal::vidur_ext::simulator::{SimConfig, SimRequest, SimSink, Simulator};
use simreal::workloads::{replay_trace, TraceReplayConfig};

/// The request and batch tolerance of the acceptance criteria.
const REQUEST_TOLERANCE_NS: i64 = 10_000;
/// A batch duration is the difference of two instants each rounded to whole ns.
const BATCH_TOLERANCE_NS: i64 = 1;

#[derive(Debug, Deserialize)]
struct Manifest {
    trace: String,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    num_requests: Option<usize>,
    time_scale_factor: f64,
    prefill_scale_factor: f64,
    policy: Policy,
    pipeline_stages: u32,
    /// `None`: Vidur's memory planner.
    num_blocks: Option<u64>,
    /// Prediction tables beside the goldens (Vidur trained them for this case).
    tables: Option<String>,
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/vidur_golden")
}

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(golden_dir().join("cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The rows of a gzipped golden CSV (header skipped), as integers.
fn golden_rows(file: &str) -> Vec<Vec<i64>> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(golden_dir().join(file)).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split(',').map(|c| c.parse().unwrap()).collect())
        .collect()
}

/// Keeps what the goldens hold: request rows and each batch's shape and duration.
#[derive(Default)]
struct GoldenSink {
    requests: Vec<RequestMetricsRow>,
    /// (batch id, tokens, requests, duration ns)
    batches: Vec<(u64, i64, i64, i64)>,
}

impl SimSink for GoldenSink {
    fn on_request(&mut self, row: RequestMetricsRow) -> simreal::Result<()> {
        self.requests.push(row);
        Ok(())
    }

    fn on_token(&mut self, _row: &TokenMetricsRow) -> simreal::Result<()> {
        Ok(())
    }

    fn on_batch(&mut self, row: &BatchMetricsRow, _entries: &[BatchEntry]) -> simreal::Result<()> {
        self.batches.push((
            row.batch_id,
            i64::from(row.num_prefill_tokens + row.num_decode_tokens),
            i64::from(row.num_requests),
            row.duration_ns as i64,
        ));
        Ok(())
    }
}

/// A directory holding Vidur's cached tables and the case's own, as the stage would read
/// one `vidur.predictor_tables` directory.
fn tables_dir(case: &Case) -> PathBuf {
    let shared = vidur_reference("predictor_tables");
    let Some(extra) = &case.tables else {
        return shared;
    };
    let dir = std::env::temp_dir().join(format!(
        "simreal-vidur-golden-{}-{}",
        case.name,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for src in [shared, golden_dir().join(extra)] {
        for entry in std::fs::read_dir(src).unwrap() {
            let path = entry.unwrap().path();
            std::os::unix::fs::symlink(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// Vidur's KV pool for Llama-2-70B TP2 on an A100-80GB with `stages` pipeline stages.
fn vidur_planner_blocks(stages: u32) -> u64 {
    plan_memory(&MemoryPlannerInput {
        total_memory_gb: 80.0,
        memory_margin_fraction: 0.1,
        num_layers: 80,
        num_q_heads: 64,
        num_kv_heads: 8,
        embedding_dim: 8192,
        mlp_hidden_dim: 28672,
        use_gated_mlp: true,
        head_dim: None,
        tensor_parallel_size: 2,
        pipeline_parallel_size: stages,
        max_request_tokens: 4096,
        block_size: 16,
    })
    .unwrap()
    .num_blocks
}

/// The case's requests as the `workload` stage replays them.
fn requests(trace: &Path, case: &Case) -> Vec<SimRequest> {
    let config = TraceReplayConfig {
        trace_file: trace.to_path_buf(),
        time_scale_factor: case.time_scale_factor,
        prefill_scale_factor: case.prefill_scale_factor,
        decode_scale_factor: 1.0,
    };
    let workload = replay_trace(&config, case.num_requests, 4096).unwrap();
    workload
        .arrivals_ns
        .iter()
        .zip(&workload.lengths)
        .zip(0u64..)
        .map(|((&arrival_time_ns, l), request_id)| SimRequest {
            request_id,
            arrival_time_ns,
            num_prefill_tokens: l.num_prefill_tokens,
            num_decode_tokens: l.num_decode_tokens,
        })
        .collect()
}

/// How far a run is from the golden.
#[derive(Debug, Default, PartialEq)]
struct Mismatches {
    /// Batches with another shape than Vidur's (a count mismatch counts as the difference).
    batch_shapes: usize,
    /// Batches of the right shape more than 1 ns off Vidur's duration.
    batch_durations: usize,
    /// Requests with E2E, TTFT or scheduling delay more than 10 µs off, or other restarts.
    requests: usize,
    /// Largest request-time difference, ns.
    max_request_diff_ns: i64,
    first_bad_request: Option<u64>,
}

fn run_case(case: &Case, predictor: &dyn ExecutionTimePredictor) -> (GoldenSink, Mismatches) {
    let m = manifest();
    let trace = vidur_reference(&m.trace);
    let num_blocks = case
        .num_blocks
        .unwrap_or_else(|| vidur_planner_blocks(case.pipeline_stages));
    let mut sim = SimConfig::single_replica(
        SchedulerConfig {
            policy: case.policy,
            ..SchedulerConfig::default()
        },
        num_blocks,
        4096,
    );
    sim.num_pipeline_stages = case.pipeline_stages;
    let mut sink = GoldenSink::default();
    let summary = Simulator::new(sim, predictor)
        .unwrap()
        .run(requests(&trace, case), &mut sink)
        .unwrap();
    assert_eq!(summary.num_extrapolated_batches, 0, "{}", case.name);
    assert!(sink.requests.iter().all(|r| r.status == RequestStatus::Ok));

    let golden_batches = golden_rows(&format!("{}.batches.csv.gz", case.name));
    let golden_requests = golden_rows(&format!("{}.requests.csv.gz", case.name));
    let mut mis = Mismatches {
        batch_shapes: golden_batches.len().abs_diff(sink.batches.len()),
        ..Mismatches::default()
    };
    sink.batches.sort_by_key(|b| b.0);
    for (&(_, tokens, size, ns), g) in sink.batches.iter().zip(&golden_batches) {
        if (tokens, size) != (g[0], g[1]) {
            mis.batch_shapes += 1;
        } else if (ns - g[2]).abs() > BATCH_TOLERANCE_NS {
            mis.batch_durations += 1;
        }
    }
    assert_eq!(sink.requests.len(), golden_requests.len(), "{}", case.name);
    for (ours, g) in sink.requests.iter().zip(&golden_requests) {
        assert_eq!(ours.request_id as i64, g[0]);
        let diffs = [
            (ours.e2e_ns.unwrap() as i64 - g[1]).abs(),
            (ours.ttft_ns.unwrap() as i64 - g[2]).abs(),
            (ours.queue_delay_ns.unwrap() as i64 - g[3]).abs(),
        ];
        let worst = diffs.into_iter().max().unwrap();
        mis.max_request_diff_ns = mis.max_request_diff_ns.max(worst);
        if worst > REQUEST_TOLERANCE_NS || i64::from(ours.num_preemptions.unwrap()) != g[4] {
            mis.requests += 1;
            mis.first_bad_request.get_or_insert(ours.request_id);
        }
    }
    (sink, mis)
}

fn check(name: &str) {
    let m = manifest();
    let case = m.cases.iter().find(|c| c.name == name).unwrap();
    let config = PredictorConfig::new(80, 64, 8, 8192).with_parallelism(2, case.pipeline_stages);
    let dir = tables_dir(case);
    let predictor = VidurTablesPredictor::from_dir(&dir, config).unwrap();
    let (sink, mis) = run_case(case, &predictor);
    if case.tables.is_some() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    let restarts: i64 = golden_rows(&format!("{name}.requests.csv.gz"))
        .iter()
        .map(|r| r[4])
        .sum();
    eprintln!(
        "{name}: {} requests ({restarts} restarts), {} batches; {mis:?}",
        sink.requests.len(),
        sink.batches.len()
    );
    assert_eq!(
        (mis.batch_shapes, mis.batch_durations, mis.requests),
        (0, 0, 0),
        "{name}: {mis:?}"
    );
    // Stricter than asked: on Vidur's clock the times are Vidur's, up to rounding to ns.
    assert!(mis.max_request_diff_ns <= 1, "{name}: {mis:?}");
}

#[test]
fn sarathi_300_requests() {
    check("sarathi_300");
}

#[test]
fn sarathi_10000_requests() {
    check("sarathi_10k");
}

#[test]
fn sarathi_full_trace() {
    check("sarathi_full");
}

#[test]
fn vllm() {
    check("vllm");
}

#[test]
fn orca() {
    check("orca");
}

#[test]
fn sarathi_many_preemptions() {
    check("sarathi_small_pool");
}

#[test]
fn sarathi_two_pipeline_stages() {
    check("sarathi_pp2");
}

/// `vidur_tables` as it was before the Vidur clock: every batch rounded to whole ns.
struct RoundedClock(VidurTablesPredictor);

impl ExecutionTimePredictor for RoundedClock {
    fn name(&self) -> &'static str {
        "vidur_tables_integer_ns"
    }

    fn predict_with(&self, batch: &[RequestShape], ctx: &IterationContext) -> BatchPrediction {
        self.0.predict_with(batch, ctx)
    }
}

/// Why the Vidur clock exists: on the integer clock the same run drifts from Vidur's by
/// ~0.17 ns a batch, and over 10,000 requests an arrival lands on the other side of a batch
/// end and the runs part.
#[test]
fn whole_ns_durations_drift_from_vidur_on_long_traces() {
    let m = manifest();
    let case = m.cases.iter().find(|c| c.name == "sarathi_10k").unwrap();
    let config = PredictorConfig::new(80, 64, 8, 8192).with_parallelism(2, 1);
    let predictor =
        RoundedClock(VidurTablesPredictor::from_dir(&tables_dir(case), config).unwrap());
    let (_, mis) = run_case(case, &predictor);
    eprintln!("sarathi_10k on the integer clock: {mis:?}");
    assert!(mis.requests > 0 && mis.batch_shapes > 0, "{mis:?}");
}
