//! Simulator benchmark: `cargo bench --bench simulator` (release profile).
//!
//! 1. The full `splitwise_conv` trace (19,366 requests) at a sixth of its rate (Vidur's
//!    `time_scale_factor` 6) with Vidur's A100 Llama-2-70B TP2 data and Sarathi: the
//!    simulation alone (rows discarded), per predictor.
//! 2. End to end against Vidur 0.0.1 itself, interleaved (Vidur, ours, ours with every row,
//!    Vidur, …): our `workload` and `vidur` binaries as a user runs them, asked for the rows
//!    Vidur writes (`request_metrics.csv`, `batch_metrics.csv`), against Vidur's own run
//!    (`tools/vidur_golden/run_vidur.py` with Vidur's cached prediction tables, plots off,
//!    per-batch metrics on); wall time and peak RSS of every process. Vidur runs when
//!    `SIMREAL_VIDUR_PYTHON` (its venv's python) and `SIMREAL_VIDUR_SRC` (its source, for
//!    `PYTHONPATH`) are set; otherwise the section says it was skipped.
//! 3. 1,000,000 synthetic requests streamed to CSV files, with peak RSS, next to 100,000
//!    requests, to show that memory stays flat in the number of requests.
//!
//! Writes `benches/results/simulator.json` and `.md` (min/median/max, the time window, load
//! averages, host fingerprint). Targets: simulation < 0.5 s, end to end ≥ 100× faster than
//! Vidur, 1M requests < 60 s.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};
use serde::Serialize;
use simreal::io::provenance::{utc_now, HostFingerprint};
use simreal::io::Stage;
use simreal::stages::vidur::SimInputs;
use simreal::stages::Job;
use simreal::vidur_ext::simulator::{
    CsvOutputs, CsvSink, DiscardSink, SimRequest, SimSummary, Simulator,
};

const SPLITWISE_REQUESTS: usize = 19_366;
/// Vidur's `time_scale_factor`: arrivals at a sixth of the trace's rate.
const TIME_SCALE_FACTOR: f64 = 6.0;
/// Rounds of the interleaved end-to-end comparison.
const ROUNDS: usize = 3;
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
        let warm = Spread::of(&all[1..]);
        Times {
            cold_s: all[0],
            warm_min_s: warm.min,
            warm_median_s: warm.median,
            warm_max_s: warm.max,
            runs: all.len(),
        }
    }
}

/// Min / median / max of a sample.
#[derive(Debug, Clone, Copy, Serialize)]
struct Spread {
    min: f64,
    median: f64,
    max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Spread {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Spread {
            min: v[0],
            median: simreal::quantile::percentile_of_valid(&v, 50.0),
            max: v[v.len() - 1],
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

/// One arm of the end-to-end comparison over the rounds.
#[derive(Debug, Serialize)]
struct EndToEndArm {
    name: String,
    /// What it runs, as a command line.
    command: String,
    /// Wall time of each round (for ours: `workload` + `vidur`), s, in round order.
    wall_s: Vec<f64>,
    wall: Spread,
    /// Largest peak RSS of its processes over the rounds.
    peak_rss_bytes: u64,
    /// Bytes of the files it wrote (last round).
    bytes_written: u64,
}

#[derive(Debug, Serialize)]
struct EndToEnd {
    /// Why Vidur did not run, if it did not.
    skipped: Option<String>,
    arms: Vec<EndToEndArm>,
    /// Vidur's wall ÷ ours (Vidur's outputs), round by round.
    speedup_per_round: Vec<f64>,
    speedup: Option<Spread>,
    target_speedup: f64,
    meets_target: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Report {
    created_at: String,
    ended_at: String,
    host: HostFingerprint,
    /// `/proc/loadavg` at the start and the end: the machine is shared.
    load_average: [String; 2],
    input_load_s: f64,
    simulation: Vec<SimCase>,
    end_to_end: EndToEnd,
    streaming: Vec<StreamCase>,
}

/// The overrides of the full-trace setup (both stages take the same ones).
fn splitwise_overrides(shared: &Path, root: &Path, predictor: &str) -> Vec<String> {
    vec![
        "model=llama2_70b".to_string(),
        "hardware=a100_80g".into(),
        "vidur.tensor_parallel_size=2".into(),
        format!("vidur.bundle={}", shared.join("profiling").display()),
        "vidur.network=a100_pairwise_nvlink".into(),
        format!("vidur.predictor={predictor}"),
        format!(
            "vidur.predictor_tables={}",
            shared.join("predictor_tables").display()
        ),
        "vidur.memory_planner=vidur".into(),
        "vidur.cpu_overheads=false".into(),
        "workload=trace_replay".into(),
        format!("workload.num_requests={SPLITWISE_REQUESTS}"),
        format!(
            "workload.trace_replay.trace_file={}",
            shared.join("processed_traces/splitwise_conv.csv").display()
        ),
        format!("workload.trace_replay.time_scale_factor={TIME_SCALE_FACTOR}"),
        format!("output.root={}", root.display()),
    ]
}

fn splitwise_job(shared: &Path, root: &Path, predictor: &str) -> Result<Job> {
    let o = splitwise_overrides(shared, root, predictor);
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

/// Wall time and peak RSS of one process.
struct ProcessRun {
    wall_s: f64,
    max_rss_bytes: u64,
}

/// Runs `cmd` to completion (its output to `log`), measuring it: wall time from spawn to
/// reaping, and the child's own peak RSS from `wait4`.
fn run_process(cmd: &mut Command, log: &Path) -> Result<ProcessRun> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet reaped (`Child` is never waited on); `status` and
    // `usage` are valid, exclusive out-pointers for the duration of the call.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall_s = start.elapsed().as_secs_f64();
    if reaped != pid {
        bail!("wait4 on {cmd:?}: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{cmd:?} failed (status {status}); see {}", log.display());
    }
    Ok(ProcessRun {
        wall_s,
        // Linux reports KiB.
        max_rss_bytes: usage.ru_maxrss as u64 * 1024,
    })
}

/// Bytes of every file under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// Vidur 0.0.1 through `tools/vidur_golden/run_vidur.py`, if its environment is given.
struct Vidur {
    python: PathBuf,
    source: PathBuf,
}

impl Vidur {
    fn from_env() -> std::result::Result<Vidur, String> {
        let var = |name: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .ok_or_else(|| format!("{name} is not set"))
        };
        let vidur = Vidur {
            python: var("SIMREAL_VIDUR_PYTHON")?,
            source: var("SIMREAL_VIDUR_SRC")?,
        };
        if !vidur.source.join("vidur/main.py").is_file() {
            return Err(format!(
                "SIMREAL_VIDUR_SRC={} has no vidur/main.py",
                vidur.source.display()
            ));
        }
        Ok(vidur)
    }

    /// The full trace as `splitwise_overrides` describes it, per-batch metrics on, plots off.
    fn command(&self, shared: &Path, out: &Path) -> Command {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/vidur_golden/run_vidur.py");
        let mut cmd = Command::new(&self.python);
        cmd.env("PYTHONPATH", &self.source)
            .arg(script)
            .arg("--tables")
            .arg(shared.join("predictor_tables"))
            .args(["--no-plots", "--"])
            .args([
                "--replica_config_model_name",
                "meta-llama/Llama-2-70b-hf",
                "--replica_config_device",
                "a100",
                "--replica_config_tensor_parallel_size",
                "2",
                "--replica_config_network_device",
                "a100_pairwise_nvlink",
                "--request_generator_config_type",
                "trace_replay",
                "--trace_request_generator_config_trace_file",
            ])
            .arg(shared.join("processed_traces/splitwise_conv.csv"))
            .arg("--trace_request_generator_config_time_scale_factor")
            .arg(TIME_SCALE_FACTOR.to_string())
            .args([
                "--replica_scheduler_config_type",
                "sarathi",
                "--metrics_config_keep_individual_batch_metrics",
                "--no-metrics_config_enable_chrome_trace",
                "--metrics_config_output_dir",
            ])
            .arg(out.join("out"))
            .arg("--metrics_config_cache_dir")
            .arg(out.join("cache"))
            .current_dir(out);
        cmd
    }
}

/// Copies of this build's stage binaries: the target dir may be shared with other checkouts,
/// whose builds would replace `target/release/<bin>` while the benchmark runs.
fn own_binaries(root: &Path) -> Result<[PathBuf; 2]> {
    let dir = root.join("bin");
    std::fs::create_dir_all(&dir)?;
    let copy = |built: &str, name: &str| -> Result<PathBuf> {
        let path = dir.join(name);
        std::fs::copy(built, &path).with_context(|| format!("copying {built}"))?;
        Ok(path)
    };
    Ok([
        copy(env!("CARGO_BIN_EXE_workload"), "workload")?,
        copy(env!("CARGO_BIN_EXE_vidur"), "vidur")?,
    ])
}

/// Interleaved rounds: Vidur, ours with Vidur's outputs, ours with every row.
fn end_to_end(shared: &Path, root: &Path, bins: &[PathBuf; 2]) -> Result<EndToEnd> {
    let vidur = Vidur::from_env();
    let ours_overrides = splitwise_overrides(shared, root, "vidur_tables");
    let vidur_rows = ["vidur.token_metrics=false", "vidur.batch_requests=false"];
    let mut arms: Vec<EndToEndArm> = Vec::new();
    let mut arm = |name: &str, command: String| {
        arms.push(EndToEndArm {
            name: name.into(),
            command,
            wall_s: Vec::new(),
            wall: Spread {
                min: 0.0,
                median: 0.0,
                max: 0.0,
            },
            peak_rss_bytes: 0,
            bytes_written: 0,
        });
        arms.len() - 1
    };
    let stage_line = |extra: &[&str]| {
        let o: Vec<&str> = ours_overrides
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .collect();
        format!("workload -- {o} && vidur -- {o}", o = o.join(" "))
    };
    let vidur_arm = vidur.as_ref().ok().map(|v| {
        let cmd = v.command(shared, Path::new("<dir>"));
        arm("Vidur 0.0.1 (request + batch metrics)", format!("{cmd:?}"))
    });
    let ours_arm = arm(
        "simreal workload + vidur (request + batch metrics, as Vidur)",
        stage_line(&vidur_rows),
    );
    let all_arm = arm(
        "simreal workload + vidur (all rows: + token_metrics, batch_requests)",
        stage_line(&[]),
    );

    for round in 0..ROUNDS {
        if let (Some(i), Ok(v)) = (vidur_arm, &vidur) {
            let dir = root.join("vidur_run");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            let run = run_process(&mut v.command(shared, &dir), &root.join("vidur.log"))?;
            record(&mut arms[i], &run, &[], bytes_under(&dir.join("out")));
            eprintln!("round {round}: Vidur {:.2} s", run.wall_s);
        }
        for (i, extra) in [(ours_arm, &vidur_rows[..]), (all_arm, &[][..])] {
            let out_root = root.join("e2e");
            let _ = std::fs::remove_dir_all(&out_root);
            let mut o = ours_overrides.clone();
            o.retain(|s| !s.starts_with("output.root="));
            o.push(format!("output.root={}", out_root.display()));
            o.extend(extra.iter().map(|s| s.to_string()));
            let stage = |bin: &Path| {
                let mut cmd = Command::new(bin);
                cmd.arg("--").args(&o);
                cmd
            };
            let workload = run_process(&mut stage(&bins[0]), &root.join("workload.log"))?;
            let sim = run_process(&mut stage(&bins[1]), &root.join("vidur.log"))?;
            record(&mut arms[i], &workload, &[&sim], bytes_under(&out_root));
            eprintln!(
                "round {round}: {} {:.2} s (workload {:.2} s)",
                arms[i].name,
                workload.wall_s + sim.wall_s,
                workload.wall_s
            );
        }
    }
    for dir in ["e2e", "vidur_run", "bin"] {
        let _ = std::fs::remove_dir_all(root.join(dir));
    }
    for a in &mut arms {
        a.wall = Spread::of(&a.wall_s);
    }
    let speedup_per_round: Vec<f64> = match vidur_arm {
        Some(i) => arms[i]
            .wall_s
            .iter()
            .zip(&arms[ours_arm].wall_s)
            .map(|(v, o)| v / o)
            .collect(),
        None => Vec::new(),
    };
    let speedup = (!speedup_per_round.is_empty()).then(|| Spread::of(&speedup_per_round));
    Ok(EndToEnd {
        skipped: vidur.err(),
        arms,
        speedup,
        meets_target: speedup.map(|s| s.median >= 100.0),
        target_speedup: 100.0,
        speedup_per_round,
    })
}

/// Adds one round: the processes run one after the other.
fn record(arm: &mut EndToEndArm, first: &ProcessRun, rest: &[&ProcessRun], bytes: u64) {
    let runs = std::iter::once(first).chain(rest.iter().copied());
    let (mut wall, mut rss) = (0.0, 0);
    for r in runs {
        wall += r.wall_s;
        rss = rss.max(r.max_rss_bytes);
    }
    arm.wall_s.push(wall);
    arm.peak_rss_bytes = arm.peak_rss_bytes.max(rss);
    arm.bytes_written = bytes;
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
    let mut sink = CsvSink::create(dir, CsvOutputs::ALL)?;
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
    let bins = own_binaries(&root)?;
    let host = HostFingerprint::collect("cpu", 1);
    let created_at = utc_now();
    let load_start = load_average();

    // Setup (not timed): the workload the simulations replay.
    let job = splitwise_job(&shared, &root, "vidur_tables")?;
    simreal::stages::workload::run(&job.for_stage(Stage::Workload))?;

    let t = Instant::now();
    let inputs = SimInputs::load(&job)?;
    let input_load_s = t.elapsed().as_secs_f64();
    let mut simulation = vec![sim_case(
        "splitwise_conv ⅙ rate, simulation alone",
        &inputs,
        6,
        Some(0.5),
    )?];
    eprintln!("{:?}", simulation[0]);
    for predictor in ["vidur_compat", "native"] {
        let inputs = SimInputs::load(&splitwise_job(&shared, &root, predictor)?)?;
        let c = sim_case("splitwise_conv ⅙ rate, simulation alone", &inputs, 4, None)?;
        eprintln!("{c:?}");
        simulation.push(c);
    }

    let end_to_end = end_to_end(&shared, &root, &bins)?;

    let out = root.join("stream");
    let mut streaming = Vec::new();
    for (n, target) in [(100_000u64, None), (1_000_000, Some(60.0))] {
        let c = stream_case(&inputs, n, &out, target)?;
        eprintln!("{c:?}");
        streaming.push(c);
    }

    let report = Report {
        created_at,
        ended_at: utc_now(),
        host,
        load_average: [load_start, load_average()],
        input_load_s,
        simulation,
        end_to_end,
        streaming,
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    std::fs::create_dir_all(&dir)?;
    simreal::io::write_json(dir.join("simulator.json"), &report)?;
    std::fs::write(dir.join("simulator.md"), markdown(&report))?;
    println!("{}", dir.join("simulator.md").display());
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

fn markdown(r: &Report) -> String {
    let mut s = String::new();
    s.push_str("# Simulator benchmark\n\n");
    s.push_str(&format!(
        "`cargo bench --bench simulator`, {} to {}. Host: {} ({} logical cores, {:.1} GiB), {}, {}.\n\n",
        r.created_at,
        r.ended_at,
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
        "Full `splitwise_conv` trace ({SPLITWISE_REQUESTS} requests) at a sixth of its rate \
         (time scale factor {TIME_SCALE_FACTOR}), Llama-2-70B TP2 on A100 (Vidur's data), \
         Sarathi (chunk 512), Vidur's memory planner, one replica.\n\n## Simulation alone\n\n\
         Rows discarded. Loading the inputs (workload, Vidur's prediction tables): {:.2} s. \
         Cold = first run in the process; warm = the others.\n\n",
        r.input_load_s
    ));
    s.push_str("| case | predictor | cold s | warm min / median / max s | target | ok | simulated s per wall s | requests / s | tokens | batches |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for c in &r.simulation {
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
    let e = &r.end_to_end;
    s.push_str(&format!(
        "\n## End to end against Vidur 0.0.1\n\nThe same trace, {ROUNDS} rounds, interleaved \
         (each round runs every arm once, in the order below); wall time from process start to \
         exit (ours: the `workload` and the `vidur` binaries one after the other, outputs \
         forced), peak RSS of the largest process. Vidur runs with its cached prediction tables \
         (`tools/vidur_golden/run_vidur.py --tables`), plots off, per-batch metrics on.\n\n"
    ));
    if let Some(why) = &e.skipped {
        s.push_str(&format!("Vidur was not run: {why}.\n\n"));
    }
    s.push_str("| arm | wall s per round | min / median / max s | peak RSS MiB | written MiB |\n|---|---|---|---|---|\n");
    for a in &e.arms {
        let rounds: Vec<String> = a.wall_s.iter().map(|w| format!("{w:.2}")).collect();
        s.push_str(&format!(
            "| {} | {} | {:.2} / {:.2} / {:.2} | {:.0} | {:.1} |\n",
            a.name,
            rounds.join(", "),
            a.wall.min,
            a.wall.median,
            a.wall.max,
            mib(a.peak_rss_bytes),
            mib(a.bytes_written),
        ));
    }
    if let Some(sp) = e.speedup {
        let rounds: Vec<String> = e
            .speedup_per_round
            .iter()
            .map(|x| format!("{x:.0}×"))
            .collect();
        s.push_str(&format!(
            "\nVidur ÷ ours (Vidur's outputs), round by round: {} — min / median / max \
             {:.0}× / {:.0}× / {:.0}×; target ≥ {:.0}×: {}.\n",
            rounds.join(", "),
            sp.min,
            sp.median,
            sp.max,
            e.target_speedup,
            if e.meets_target == Some(true) {
                "yes"
            } else {
                "**no**"
            },
        ));
    }
    s.push_str("\nCommands:\n\n");
    for a in &e.arms {
        s.push_str(&format!("- {}: `{}`\n", a.name, a.command));
    }
    s.push_str(&format!(
        "\n## Streaming\n\nTo CSV (all four files), synthetic Poisson load at {SYNTHETIC_RATE_PER_S} req/s, \
         prompts U(32, 512), outputs U(4, 32), `vidur_tables`; one run each, peak RSS of the case:\n\n"
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
            mib(c.peak_rss_bytes),
            mib(c.bytes_written),
        ));
    }
    s.push_str("\nWhere the time goes: see `benches/README.md`.\n");
    s
}
