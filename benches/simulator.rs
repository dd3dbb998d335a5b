//! Simulator benchmark: `cargo bench --bench simulator` (release profile).
//!
//! 1. The full `splitwise_conv` trace (19,366 requests) with Vidur's A100 Llama-2-70B TP2
//!    bundle and Sarathi: the simulation alone (rows discarded), per predictor, and the whole
//!    `vidur` stage (inputs, simulation, every token row written, run dir committed).
//! 2. 1,000,000 synthetic requests streamed to CSV files, with peak RSS, next to 100,000
//!    requests, to show that memory stays flat in the number of requests.
//!
//! Writes `benches/results/simulator.json` and `.md` (min/median/max, cold = first run in the
//! process, warm = the rest; host fingerprint). Targets: simulation < 1 s, stage < 5 s,
//! 1M requests < 60 s.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};
use serde::Serialize;
use simreal::io::provenance::{utc_now, HostFingerprint};
use simreal::io::Stage;
use simreal::stage::Job;
use simreal::vidur_ext::sim_stage::{self, SimInputs};
use simreal::vidur_ext::simulator::{CsvSink, DiscardSink, SimRequest, SimSummary, Simulator};

const SPLITWISE_REQUESTS: usize = 19_366;
const SYNTHETIC_SEED: u64 = 7;
/// Synthetic load: Poisson at this rate, prompts U(32, 512), outputs U(4, 32).
const SYNTHETIC_RATE_PER_S: f64 = 8.0;

fn shared() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .skip(1)
        .map(|d| d.join("shared/vidur_reference"))
        .find(|d| d.is_dir())
        .context("shared/vidur_reference not found beside the checkout")
}

/// Min / median / max of wall times, s.
#[derive(Debug, Serialize)]
struct Times {
    cold_s: f64,
    warm_min_s: f64,
    warm_median_s: f64,
    warm_max_s: f64,
    runs: usize,
}

impl Times {
    fn of(all: &[f64]) -> Times {
        let mut warm: Vec<f64> = all[1..].to_vec();
        warm.sort_by(f64::total_cmp);
        Times {
            cold_s: all[0],
            warm_min_s: warm[0],
            warm_median_s: warm[warm.len() / 2],
            warm_max_s: warm[warm.len() - 1],
            runs: all.len(),
        }
    }
}

#[derive(Debug, Serialize)]
struct SimCase {
    name: String,
    predictor: String,
    num_requests: u64,
    num_tokens: u64,
    num_batches: u64,
    simulated_s: f64,
    times: Times,
    sim_s_per_wall_s: f64,
    requests_per_wall_s: f64,
    target_s: Option<f64>,
    meets_target: Option<bool>,
}

#[derive(Debug, Serialize)]
struct StreamCase {
    name: String,
    num_requests: u64,
    num_tokens: u64,
    num_batches: u64,
    simulated_s: f64,
    wall_s: f64,
    sim_s_per_wall_s: f64,
    requests_per_wall_s: f64,
    peak_rss_bytes: u64,
    bytes_written: u64,
    target_s: Option<f64>,
    meets_target: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Report {
    created_at: String,
    host: HostFingerprint,
    /// `/proc/loadavg` at the start and the end: the machine is shared.
    load_average: [String; 2],
    input_load_s: f64,
    simulation: Vec<SimCase>,
    stage: SimCase,
    streaming: Vec<StreamCase>,
}

fn splitwise_job(shared: &Path, root: &Path, predictor: &str, force: bool) -> Result<Job> {
    let o = [
        "model=llama2_70b".to_string(),
        "hardware=a100_80g".into(),
        "vidur.tensor_parallel_size=2".into(),
        format!("vidur.bundle={}", shared.join("profiling").display()),
        format!("vidur.predictor={predictor}"),
        format!(
            "vidur.predictor_tables={}",
            shared.join("predictor_tables").display()
        ),
        "vidur.cpu_overheads=false".into(),
        "workload=trace_replay".into(),
        format!("workload.num_requests={SPLITWISE_REQUESTS}"),
        format!(
            "workload.trace_replay.trace_file={}",
            shared.join("processed_traces/splitwise_conv.csv").display()
        ),
        format!("output.root={}", root.display()),
        format!("output.force={force}"),
    ];
    let o: Vec<&str> = o.iter().map(String::as_str).collect();
    Ok(Job::from_overrides(Stage::Vidur, &o)?)
}

fn sim_case(name: &str, inputs: &SimInputs, runs: usize, target_s: Option<f64>) -> Result<SimCase> {
    let sim = Simulator::new(inputs.sim_config.clone(), inputs.predictor.as_ref())?;
    let mut times = Vec::new();
    let mut summary = SimSummary::default();
    for _ in 0..runs {
        let mut sink = DiscardSink::default();
        let t = Instant::now();
        summary = sim.run(inputs.requests(), &mut sink)?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(case(
        name,
        inputs.predictor.name(),
        &summary,
        Times::of(&times),
        target_s,
    ))
}

fn case(
    name: &str,
    predictor: &str,
    s: &SimSummary,
    times: Times,
    target_s: Option<f64>,
) -> SimCase {
    let simulated_s = s.makespan_ns as f64 / 1e9;
    let wall = times.warm_median_s;
    SimCase {
        name: name.into(),
        predictor: predictor.into(),
        num_requests: s.num_requests,
        num_tokens: s.num_tokens,
        num_batches: s.num_batches,
        simulated_s,
        sim_s_per_wall_s: simulated_s / wall,
        requests_per_wall_s: s.num_requests as f64 / wall,
        meets_target: target_s.map(|t| wall < t),
        target_s,
        times,
    }
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Peak RSS since the last reset (Linux `VmHWM`).
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0), so each case reports its own peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `n` Poisson arrivals with uniform prompt and output lengths, generated lazily.
fn synthetic(n: u64) -> impl Iterator<Item = SimRequest> {
    let mut rng = ChaCha8Rng::seed_from_u64(SYNTHETIC_SEED);
    let gaps = Exp::new(SYNTHETIC_RATE_PER_S / 1e9).expect("positive rate");
    let mut t = 0.0f64;
    (0..n).map(move |request_id| {
        t += gaps.sample(&mut rng);
        SimRequest {
            request_id,
            arrival_time_ns: t as u64,
            num_prefill_tokens: rng.random_range(32..=512),
            num_decode_tokens: rng.random_range(4..=32),
        }
    })
}

fn stream_case(
    inputs: &SimInputs,
    n: u64,
    dir: &Path,
    target_s: Option<f64>,
) -> Result<StreamCase> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let sim = Simulator::new(inputs.sim_config.clone(), inputs.predictor.as_ref())?;
    reset_peak_rss();
    let t = Instant::now();
    let mut sink = CsvSink::create(dir)?;
    let s = sim.run(synthetic(n), &mut sink)?;
    sink.finish()?;
    let wall_s = t.elapsed().as_secs_f64();
    let peak_rss_bytes = peak_rss_bytes();
    let bytes_written = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    std::fs::remove_dir_all(dir)?;
    let simulated_s = s.makespan_ns as f64 / 1e9;
    Ok(StreamCase {
        name: format!("{n} synthetic requests → CSV"),
        num_requests: s.num_requests,
        num_tokens: s.num_tokens,
        num_batches: s.num_batches,
        simulated_s,
        wall_s,
        sim_s_per_wall_s: simulated_s / wall_s,
        requests_per_wall_s: s.num_requests as f64 / wall_s,
        peak_rss_bytes,
        bytes_written,
        meets_target: target_s.map(|t| wall_s < t),
        target_s,
    })
}

fn main() -> Result<()> {
    let shared = shared()?;
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench_simulator");
    std::fs::create_dir_all(&root)?;
    let host = HostFingerprint::collect("cpu", 1);
    let load_start = load_average();

    // Setup (not timed): the workload the stage replays.
    let job = splitwise_job(&shared, &root, "vidur_compat", false)?;
    simreal::workloads::stage::run(&job.for_stage(Stage::Workload))?;

    let t = Instant::now();
    let inputs = SimInputs::load(&job)?;
    let input_load_s = t.elapsed().as_secs_f64();
    let mut simulation = vec![sim_case(
        "splitwise_conv, simulation alone",
        &inputs,
        6,
        Some(1.0),
    )?];
    eprintln!("{:?}", simulation[0]);
    for predictor in ["native", "vidur_tables"] {
        let inputs = SimInputs::load(&splitwise_job(&shared, &root, predictor, false)?)?;
        let c = sim_case("splitwise_conv, simulation alone", &inputs, 4, Some(1.0))?;
        eprintln!("{c:?}");
        simulation.push(c);
    }

    let forced = splitwise_job(&shared, &root, "vidur_compat", true)?;
    let mut stage_times = Vec::new();
    for _ in 0..4 {
        let t = Instant::now();
        sim_stage::run(&forced)?;
        stage_times.push(t.elapsed().as_secs_f64());
    }
    let summary = simulation[0].num_requests;
    let stage_summary = SimSummary {
        num_requests: summary,
        num_tokens: simulation[0].num_tokens,
        num_batches: simulation[0].num_batches,
        makespan_ns: (simulation[0].simulated_s * 1e9) as u64,
        ..SimSummary::default()
    };
    let stage = case(
        "splitwise_conv, whole vidur stage (all rows written)",
        "vidur_compat",
        &stage_summary,
        Times::of(&stage_times),
        Some(5.0),
    );
    eprintln!("{stage:?}");

    let out = root.join("stream");
    let mut streaming = Vec::new();
    for (n, target) in [(100_000u64, None), (1_000_000, Some(60.0))] {
        let c = stream_case(&inputs, n, &out, target)?;
        eprintln!("{c:?}");
        streaming.push(c);
    }

    let report = Report {
        created_at: utc_now(),
        host,
        load_average: [load_start, load_average()],
        input_load_s,
        simulation,
        stage,
        streaming,
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    std::fs::create_dir_all(&dir)?;
    simreal::io::write_json(dir.join("simulator.json"), &report)?;
    std::fs::write(dir.join("simulator.md"), markdown(&report))?;
    println!("{}", dir.join("simulator.md").display());
    Ok(())
}

fn markdown(r: &Report) -> String {
    let mut s = String::new();
    s.push_str("# Simulator benchmark\n\n");
    s.push_str(&format!(
        "`cargo bench --bench simulator`, {}. Host: {} ({} logical cores, {:.1} GiB), {}, {}.\n\n",
        r.created_at,
        r.host.cpu_model,
        r.host.cpu_logical_cores,
        r.host.memory_bytes as f64 / f64::from(1u32 << 30),
        r.host.os,
        r.host
            .crate_versions
            .get("rustc")
            .map_or("rustc ?", String::as_str),
    ));
    s.push_str(&format!(
        "Load average (1/5/15 min) at start {} and end {}: on this shared 2-core machine, \
         anything above 2 means other processes took CPU time from the benchmark.\n\n",
        r.load_average[0], r.load_average[1]
    ));
    s.push_str(&format!(
        "Full `splitwise_conv` trace ({SPLITWISE_REQUESTS} requests), Llama-2-70B TP2 on A100 \
         (Vidur's bundle), Sarathi (chunk 512), one replica. Loading the inputs (workload, bundle, \
         fitting the predictor): {:.2} s. Cold = first run in the process; warm = the others.\n\n",
        r.input_load_s
    ));
    s.push_str("| case | predictor | cold s | warm min / median / max s | target | ok | simulated s per wall s | requests / s | tokens | batches |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for c in r.simulation.iter().chain([&r.stage]) {
        s.push_str(&format!(
            "| {} | {} | {:.3} | {:.3} / {:.3} / {:.3} | {} | {} | {:.0} | {:.0} | {} | {} |\n",
            c.name,
            c.predictor,
            c.times.cold_s,
            c.times.warm_min_s,
            c.times.warm_median_s,
            c.times.warm_max_s,
            c.target_s.map_or("–".into(), |t| format!("< {t} s")),
            c.meets_target
                .map_or("–", |ok| if ok { "yes" } else { "**no**" }),
            c.sim_s_per_wall_s,
            c.requests_per_wall_s,
            c.num_tokens,
            c.num_batches,
        ));
    }
    s.push_str(&format!(
        "\nStreaming to CSV (all four files), synthetic Poisson load at {SYNTHETIC_RATE_PER_S} req/s, \
         prompts U(32, 512), outputs U(4, 32), same predictor; one run each, peak RSS of the case:\n\n"
    ));
    s.push_str("| case | wall s | target | ok | simulated s per wall s | requests / s | tokens | batches | peak RSS MiB | written MiB |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for c in &r.streaming {
        s.push_str(&format!(
            "| {} | {:.2} | {} | {} | {:.0} | {:.0} | {} | {} | {:.0} | {:.0} |\n",
            c.name,
            c.wall_s,
            c.target_s.map_or("–".into(), |t| format!("< {t} s")),
            c.meets_target
                .map_or("–", |ok| if ok { "yes" } else { "**no**" }),
            c.sim_s_per_wall_s,
            c.requests_per_wall_s,
            c.num_tokens,
            c.num_batches,
            c.peak_rss_bytes as f64 / 1048576.0,
            c.bytes_written as f64 / 1048576.0,
        ));
    }
    s.push_str("\nWhere the time goes: see `benches/README.md`.\n");
    s
}
