//! Paired profiling: how well a bundle profiled right next to a real run predicts it,
//! iteration by iteration, raw and corrected to the run's device speed.
//!
//! The protocol (docs/ground_truth.md, section 4): profile P0, then for each round i: one real run
//! per policy, then profile P_i. Every run has a bundle just before it and one just after;
//! it is replayed (`replay`, the real run's own batches through the predictor) with the one
//! nearest to it in device state ([`DeviceTimeline::distance`] of the probe rates), and, for
//! reference, with the other. The replay reports the total execution error, the median
//! per-iteration |error|, per-op errors and errors per kind of iteration (decode steps by
//! batch size, prefills), raw and drift-corrected, and per kind how the iterations ran in a
//! fast memory state against the state the bundle was profiled in (the quick probes around
//! each iteration's start). Acceptance of the
//! ground-truth issue: corrected total within ±3 % and median |error| ≤ 5 % on at least 4 of
//! 5 rounds per policy.
//!
//! `cargo bench --bench paired_replay` (release). Knobs: `SIMREAL_PAIRED_ROUNDS` (default 5),
//! `SIMREAL_PAIRED_POLICIES` (comma-separated `vidur` groups, default `sarathi,vllm`),
//! `SIMREAL_PAIRED_REPORT_ONLY=1` (re-render the Markdown from the JSON, no runs),
//! `SIMREAL_PAIRED_OVERRIDES` (config overrides, space-separated; default
//! `workload.num_requests=48`, ≥ 200 iterations per run). Runs under
//! `tmp/bench_paired/` (removed afterwards unless `SIMREAL_PAIRED_KEEP=1`;
//! `SIMREAL_PAIRED_REUSE=1` with `SIMREAL_PAIRED_KEEP=1` redoes only the replays of the kept
//! runs, keeping the window of the results file they came from). Writes
//! `benches/results/paired_replay.{json,md}`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use simreal::io::records::BatchMetricsRow;
use simreal::io::schema::BATCH_METRICS;
use simreal::io::speed_response::{FAST_STATE, NEAR_REFERENCE};
use simreal::io::{read_csv, read_json, Stage};
use simreal::quantile;
use simreal::stages::graph::run_stage;
use simreal::stages::Job;
use simreal::vidur_ext::device_speed::DeviceTimeline;
use simreal::vidur_ext::predictor::IterationKind;

/// 48 requests of the default workload: ≥ 200 iterations per run with either policy (32 gave
/// 146 and 133 on a quiet machine).
const DEFAULT_OVERRIDES: &str = "workload.num_requests=48";

/// Ops below this share of the measured busy time are left out of the per-op check.
const MIN_OP_SHARE: f64 = 0.02;
/// An iteration ran in the memory state the bundle was profiled in when the quick probes on
/// both sides of its start read within ×/÷ [`AS_PROFILED_MEMORY`] of the bundle's quick
/// median, and in a fast one when both read at least [`FAST_MEMORY`] × it: the bounds the
/// profile's response fit uses for its states.
const AS_PROFILED_MEMORY: f64 = NEAR_REFERENCE;
const FAST_MEMORY: f64 = FAST_STATE;

#[derive(Debug, Serialize, Deserialize)]
struct Errors {
    total_error_pct: f64,
    median_abs_pct: f64,
    p90_abs_pct: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct OpError {
    op: String,
    share_pct: f64,
    total_error_pct: f64,
    median_abs_pct: f64,
    mean_signed_pct: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Replayed {
    bundle: String,
    /// |ln ratio| of probe rates between the bundle and the run.
    distance: f64,
    raw: Errors,
    corrected: Option<Errors>,
    corrected_ops: Vec<OpError>,
    /// The raw prediction scaled by the reference iteration's slowdown (the fixed iteration
    /// the profiler times before and after profiling and `real` before serving), and that
    /// slowdown, %; absent from results before they were recorded.
    #[serde(default)]
    reference_scaled: Option<Errors>,
    #[serde(default)]
    reference_slower_pct: Option<f64>,
    /// Total error per kind of iteration (`decode_1`, …, `prefill`), raw and corrected, %;
    /// empty in results from before they were recorded.
    #[serde(default)]
    raw_by_kind: BTreeMap<String, f64>,
    #[serde(default)]
    corrected_by_kind: BTreeMap<String, f64>,
    /// How each kind of iteration ran in a fast memory state against the state the bundle
    /// was profiled in; absent from results before quick probes (probe version 5).
    #[serde(default)]
    memory_states: Option<MemoryStates>,
}

/// The run's iterations by the memory state the quick probes saw at their start, against the
/// bundle's quick median ([`AS_PROFILED_MEMORY`], [`FAST_MEMORY`]).
#[derive(Debug, Serialize, Deserialize)]
struct MemoryStates {
    /// Share of the bundle's quick probes, and of the run's iterations, in a fast state, %.
    bundle_fast_pct: f64,
    run_fast_pct: f64,
    /// Per kind of iteration ([`IterationKind::name`]).
    by_kind: BTreeMap<String, KindInStates>,
}

/// Median predicted ÷ measured time of one kind's iterations per state (> 1: the engine ran
/// faster than predicted), and how many there were.
#[derive(Debug, Serialize, Deserialize)]
struct KindInStates {
    as_profiled_raw: Option<f64>,
    as_profiled_iterations: usize,
    fast_raw: Option<f64>,
    fast_corrected: Option<f64>,
    fast_iterations: usize,
}

/// The columns of `replay.csv` the state breakdown reads.
#[derive(Deserialize)]
struct ReplayRow {
    batch_id: u64,
    num_requests: usize,
    num_prefill_requests: usize,
    measured_ns: f64,
    predicted_ns: f64,
    predicted_speed_corrected_ns: Option<f64>,
}

/// The memory-state breakdown of the replay in `replay_dir` of `real`; `None` when the run or
/// the bundle has too few quick probes.
fn memory_states(
    replay_dir: &Path,
    real: &Path,
    run: &DeviceTimeline,
    bundle: &DeviceTimeline,
) -> Result<Option<MemoryStates>> {
    let Some(reference) = bundle.quick_median_gb_per_s() else {
        return Ok(None);
    };
    let quick: Vec<(i64, f64)> = run
        .quick_readings()
        .iter()
        .filter(|q| q.usable)
        .map(|q| (q.time_ns, q.memory_gb_per_s / reference))
        .collect();
    if quick.is_empty() {
        return Ok(None);
    }
    let bundle_quick: Vec<f64> = bundle
        .quick_readings()
        .iter()
        .filter(|q| q.usable)
        .map(|q| q.memory_gb_per_s / reference)
        .collect();
    let starts: BTreeMap<u64, i64> =
        read_csv::<BatchMetricsRow>(real.join(BATCH_METRICS.file_name), &BATCH_METRICS)?
            .into_iter()
            .map(|b| {
                (
                    b.batch_id,
                    i64::try_from(b.start_time_ns).unwrap_or(i64::MAX),
                )
            })
            .collect();
    let path = replay_dir.join("replay.csv");
    let rows: Vec<ReplayRow> = csv::Reader::from_path(&path)
        .and_then(|mut r| r.deserialize().collect())
        .with_context(|| format!("reading {}", path.display()))?;
    // (kind, fast?) → (raw, corrected) ratios.
    type Ratios = Vec<(f64, Option<f64>)>;
    let mut ratios: BTreeMap<(String, bool), Ratios> = BTreeMap::new();
    let mut fast_iterations = 0;
    for r in &rows {
        let t = *starts.get(&r.batch_id).with_context(|| {
            format!("batch {} of {} not in the run", r.batch_id, path.display())
        })?;
        // The quick probes just before and just after the start (one of them at the ends).
        let i = quick.partition_point(|(qt, _)| *qt <= t);
        let around: Vec<f64> = [i.checked_sub(1), Some(i)]
            .into_iter()
            .filter_map(|j| quick.get(j?).map(|(_, ratio)| *ratio))
            .collect();
        let fast = around.iter().all(|x| *x >= FAST_MEMORY);
        let as_profiled = around
            .iter()
            .all(|x| (1.0 / AS_PROFILED_MEMORY..=AS_PROFILED_MEMORY).contains(x));
        fast_iterations += usize::from(fast);
        if fast || as_profiled {
            let kind = IterationKind::of_counts(r.num_requests, r.num_prefill_requests > 0).name();
            ratios.entry((kind, fast)).or_default().push((
                r.predicted_ns / r.measured_ns,
                r.predicted_speed_corrected_ns.map(|c| c / r.measured_ns),
            ));
        }
    }
    let median = |v: Vec<f64>| quantile::median(&v).ok();
    let mut by_kind: BTreeMap<String, KindInStates> = BTreeMap::new();
    for ((kind, fast), v) in ratios {
        let e = by_kind.entry(kind).or_insert(KindInStates {
            as_profiled_raw: None,
            as_profiled_iterations: 0,
            fast_raw: None,
            fast_corrected: None,
            fast_iterations: 0,
        });
        let raw = median(v.iter().map(|(raw, _)| *raw).collect());
        if fast {
            e.fast_raw = raw;
            e.fast_corrected = median(v.iter().filter_map(|(_, c)| *c).collect());
            e.fast_iterations = v.len();
        } else {
            e.as_profiled_raw = raw;
            e.as_profiled_iterations = v.len();
        }
    }
    let pct = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
    Ok(Some(MemoryStates {
        bundle_fast_pct: pct(
            bundle_quick.iter().filter(|x| **x >= FAST_MEMORY).count(),
            bundle_quick.len(),
        ),
        run_fast_pct: pct(fast_iterations, rows.len()),
        by_kind,
    }))
}

#[derive(Debug, Serialize, Deserialize)]
struct PairResult {
    policy: String,
    round: usize,
    real_run: String,
    iterations: u64,
    /// Replay with the nearest bundle first, then the other.
    nearest: Replayed,
    other: Replayed,
    /// The nearest bundle again, its op times' means fitted instead of their medians
    /// (`vidur.predictor_statistic=mean`, the native predictor's default since 2026-12-04;
    /// absent from results before it existed).
    #[serde(default)]
    nearest_mean: Option<Replayed>,
}

fn job(stage: Stage, root: &Path, extra: &[String]) -> Result<Job> {
    let mut overrides = vec![format!("output.root={}", root.display())];
    overrides.extend(extra.iter().cloned());
    let refs: Vec<&str> = overrides.iter().map(String::as_str).collect();
    Ok(Job::from_overrides(stage, &refs)?)
}

fn profile(root: &Path, base: &[String], id: &str) -> Result<(PathBuf, DeviceTimeline)> {
    let mut o = base.to_vec();
    o.push(format!("output.run_id={id}"));
    let dir = run_stage(&job(Stage::VidurProfile, root, &o)?, Stage::VidurProfile)?;
    let timeline = DeviceTimeline::read(&dir)?
        .with_context(|| format!("bundle {} has no device_speed.csv", dir.display()))?;
    Ok((dir, timeline))
}

fn errors(v: &Value) -> Result<Errors> {
    let f = |x: &Value| x.as_f64().context("missing number in replay_summary.json");
    Ok(Errors {
        total_error_pct: f(&v["total_error_pct"])?,
        median_abs_pct: f(&v["duration"]["median_abs_pct"])?,
        p90_abs_pct: f(&v["duration"]["p90_abs_pct"])?,
    })
}

fn op_errors(v: &Value) -> Vec<OpError> {
    let Some(ops) = v["by_op"].as_object() else {
        return Vec::new();
    };
    let busy: f64 = ops
        .values()
        .filter_map(|o| o["total_measured_ns"].as_f64())
        .sum();
    ops.iter()
        .filter_map(|(name, o)| {
            let share = o["total_measured_ns"].as_f64()? / busy.max(1.0);
            (share >= MIN_OP_SHARE).then(|| OpError {
                op: name.clone(),
                share_pct: 100.0 * share,
                total_error_pct: o["total_error_pct"].as_f64().unwrap_or(f64::NAN),
                median_abs_pct: o["errors"]["median_abs_pct"].as_f64().unwrap_or(f64::NAN),
                mean_signed_pct: o["errors"]["mean_signed_pct"].as_f64(),
            })
        })
        .collect()
}

/// `by_kind.<kind>.total_error_pct` of a replay summary.
fn kind_errors(v: &Value) -> BTreeMap<String, f64> {
    v["by_kind"]
        .as_object()
        .map(|kinds| {
            kinds
                .iter()
                .filter_map(|(kind, k)| Some((kind.clone(), k["total_error_pct"].as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

fn replay(
    root: &Path,
    base: &[String],
    extra: &[&str],
    real: &Path,
    bundle: &(PathBuf, DeviceTimeline),
    run_timeline: &DeviceTimeline,
) -> Result<Replayed> {
    let mut o = base.to_vec();
    o.extend(extra.iter().map(|s| s.to_string()));
    o.push(format!("compare.real_run={}", real.display()));
    o.push(format!("vidur.bundle={}", bundle.0.display()));
    let j = job(Stage::Vidur, root, &o)?;
    let dir = simreal::stages::replay::run(&j)?;
    let summary: Value = read_json(dir.join("replay_summary.json"))?;
    let corrected = &summary["speed_corrected"];
    let reference = &summary["speed_adjusted"];
    Ok(Replayed {
        bundle: name(&bundle.0),
        distance: run_timeline.distance(&bundle.1),
        raw: errors(&summary["summary"])?,
        corrected: (!corrected.is_null())
            .then(|| errors(corrected))
            .transpose()?,
        corrected_ops: op_errors(corrected),
        reference_scaled: (!reference.is_null())
            .then(|| errors(reference))
            .transpose()?,
        reference_slower_pct: summary["device_speed"]["real_slower_pct"].as_f64(),
        raw_by_kind: kind_errors(&summary["summary"]),
        corrected_by_kind: kind_errors(corrected),
        memory_states: memory_states(&dir, real, run_timeline, &bundle.1)?,
    })
}

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn main() -> Result<()> {
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    if std::env::var_os("SIMREAL_PAIRED_REPORT_ONLY").is_some() {
        // Re-renders the Markdown from the committed JSON (no runs).
        let report: Value = read_json(out.join("paired_replay.json"))?;
        let results: Vec<PairResult> = serde_json::from_value(report["results"].clone())?;
        std::fs::write(out.join("paired_replay.md"), markdown(&report, &results))?;
        return Ok(());
    }
    let rounds = common::env_usize("SIMREAL_PAIRED_ROUNDS", 5)?.max(1);
    let policies: Vec<String> = std::env::var("SIMREAL_PAIRED_POLICIES")
        .unwrap_or_else(|_| "sarathi,vllm".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if policies.is_empty() {
        bail!("SIMREAL_PAIRED_POLICIES names no policy");
    }
    let base: Vec<String> = std::env::var("SIMREAL_PAIRED_OVERRIDES")
        .unwrap_or_else(|_| DEFAULT_OVERRIDES.into())
        .split_whitespace()
        .map(String::from)
        .collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tmp/bench_paired");
    // Reuse: the kept runs and bundles of the last run (SIMREAL_PAIRED_KEEP=1) are up to date,
    // so only the replays are redone; the window stays the one they were measured in.
    let previous: Option<Value> = if std::env::var_os("SIMREAL_PAIRED_REUSE").is_some() {
        let p: Value = read_json(out.join("paired_replay.json"))?;
        // Other rounds or overrides would measure new runs now and file them under the old
        // window.
        if p["rounds"] != rounds || p["overrides"] != serde_json::json!(base) {
            bail!(
                "SIMREAL_PAIRED_REUSE: paired_replay.json has rounds {} and overrides {}, this run {rounds} and {base:?}",
                p["rounds"],
                p["overrides"]
            );
        }
        Some(p)
    } else {
        let _ = std::fs::remove_dir_all(&root);
        None
    };
    let started_utc = simreal::io::provenance::utc_now();
    let load_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    // The workload is the same for every run and policy.
    run_stage(&job(Stage::Workload, &root, &base)?, Stage::Workload)?;
    let mut bundles = vec![profile(&root, &base, "p0")?];
    let mut runs: Vec<(String, usize, PathBuf)> = Vec::new();
    for round in 1..=rounds {
        for policy in &policies {
            eprintln!("paired_replay: round {round}/{rounds}, real run with {policy}");
            let mut o = base.clone();
            o.push(format!("vidur={policy}"));
            o.push(format!("output.run_id={policy}-{round}"));
            let dir = run_stage(&job(Stage::Real, &root, &o)?, Stage::Real)?;
            runs.push((policy.clone(), round, dir));
        }
        bundles.push(profile(&root, &base, &format!("p{round}"))?);
    }

    let mut results = Vec::new();
    for (policy, round, real) in &runs {
        let run_timeline = DeviceTimeline::read(real)?
            .with_context(|| format!("real run {} has no device_speed.csv", real.display()))?;
        let (before, after) = (&bundles[round - 1], &bundles[*round]);
        let (near, far) = if run_timeline.distance(&before.1) <= run_timeline.distance(&after.1) {
            (before, after)
        } else {
            (after, before)
        };
        let policy_override = format!("vidur={policy}");
        let median = [policy_override.as_str(), "vidur.predictor_statistic=median"];
        let nearest = replay(&root, &base, &median, real, near, &run_timeline)?;
        let other = replay(&root, &base, &median, real, far, &run_timeline)?;
        let mean = [policy_override.as_str(), "vidur.predictor_statistic=mean"];
        let nearest_mean = replay(&root, &base, &mean, real, near, &run_timeline)?;
        let meta: Value = read_json(real.join("run_meta.json"))?;
        results.push(PairResult {
            policy: policy.clone(),
            round: *round,
            real_run: name(real),
            iterations: meta["extra"]["summary"]["num_batches"]
                .as_u64()
                .context("real run_meta.json has no extra.summary.num_batches")?,
            nearest,
            other,
            nearest_mean: Some(nearest_mean),
        });
    }
    let load_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let now = Value::from(simreal::io::provenance::utc_now());
    let window = |key: &str, this_run: Value| match &previous {
        Some(p) => p[key].clone(),
        None => this_run,
    };
    let report = serde_json::json!({
        "bench": "paired_replay",
        "started_utc": window("started_utc", started_utc.into()),
        "ended_utc": window("ended_utc", now.clone()),
        "load_average_start": window("load_average_start", load_start.trim().into()),
        "load_average_end": window("load_average_end", load_end.trim().into()),
        "replays_recomputed_utc": previous.is_some().then_some(now),
        "rounds": rounds,
        "overrides": base,
        "min_op_share_pct": 100.0 * MIN_OP_SHARE,
        "results": results,
    });
    std::fs::write(
        out.join("paired_replay.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    std::fs::write(out.join("paired_replay.md"), markdown(&report, &results))?;
    eprintln!("wrote benches/results/paired_replay.{{json,md}}");
    if std::env::var_os("SIMREAL_PAIRED_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok(())
}

/// The per-run target: total within ±3 % and median per-iteration |error| ≤ 5 %.
fn passes(e: &Errors) -> bool {
    e.total_error_pct.abs() <= 3.0 && e.median_abs_pct <= 5.0
}

fn fmt_errors(e: &Errors) -> String {
    format!(
        "{:+.1} / {:.1} / {:.1}",
        e.total_error_pct, e.median_abs_pct, e.p90_abs_pct
    )
}

fn markdown(report: &Value, results: &[PairResult]) -> String {
    let mut md =
        String::from("# Paired profiling: replays of real runs with the bundle next to them\n\n");
    md.push_str(&format!(
        "`cargo bench --bench paired_replay` — {} rounds; started {}, ended {}; load average {} → {}.\n\n",
        report["rounds"],
        report["started_utc"].as_str().unwrap_or(""),
        report["ended_utc"].as_str().unwrap_or(""),
        report["load_average_start"].as_str().unwrap_or(""),
        report["load_average_end"].as_str().unwrap_or(""),
    ));
    if let Some(at) = report["replays_recomputed_utc"].as_str() {
        md.push_str(&format!(
            "Replays recomputed from the kept runs and bundles at {at} (`SIMREAL_PAIRED_REUSE=1`).\n\n"
        ));
    }
    md.push_str(
        "Each real run is replayed with the bundle profiled just before or just after it, \
         whichever is nearer in device state (distance = max |ln ratio| of the median probe \
         rates). Errors of the predicted iteration time against the measured one: total over \
         the run, median and P90 of per-iteration |error|, %. *Pass* = corrected total within \
         ±3 % and median |error| ≤ 5 %. The first columns fit the bundles' op-time medians \
         (`vidur.predictor_statistic=median`, Vidur's statistic); the *means fitted* column \
         replays with the nearest bundle's means (`=mean`, the native predictor's default \
         since 2026-12-04) and has its own pass. *Reference \
         iteration*: how much slower `real` ran its warm-up iteration than the profiler ran the \
         same iteration, and the raw prediction scaled by that (a model-level probe; the \
         correction does not use it).\n\n",
    );
    md.push_str(
        "| policy | round | iterations | nearest bundle | distance | raw total / median / P90 | corrected total / median / P90 | pass | other bundle: corrected total / median | means fitted: raw / corrected total / median / pass | reference iteration: real slower % / scaled total / median |\n|---|---:|---:|---|---:|---|---|---|---|---|---|\n",
    );
    for r in results {
        let c = r.nearest.corrected.as_ref();
        let pass = c.is_some_and(passes);
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.3} | {} | {} | {} | {} | {} | {} |\n",
            r.policy,
            r.round,
            r.iterations,
            r.nearest.bundle,
            r.nearest.distance,
            fmt_errors(&r.nearest.raw),
            c.map_or("–".into(), fmt_errors),
            if pass { "yes" } else { "no" },
            r.other.corrected.as_ref().map_or("–".into(), |e| format!(
                "{:+.1} / {:.1}",
                e.total_error_pct, e.median_abs_pct
            )),
            r.nearest_mean.as_ref().map_or("–".into(), |m| format!(
                "{:+.1} / {}",
                m.raw.total_error_pct,
                m.corrected.as_ref().map_or("–".into(), |e| format!(
                    "{:+.1} / {:.1} / {}",
                    e.total_error_pct,
                    e.median_abs_pct,
                    if passes(e) { "yes" } else { "no" }
                ))
            )),
            match (&r.nearest.reference_scaled, r.nearest.reference_slower_pct) {
                (Some(e), Some(slower)) => format!(
                    "{slower:+.1} / {:+.1} / {:.1}",
                    e.total_error_pct, e.median_abs_pct
                ),
                _ => "–".into(),
            },
        ));
    }
    md.push_str(&format!(
        "\n## Per-op errors after correction (nearest bundle)\n\nOps of ≥ {}% of the measured busy time: share of busy time, total error, median per-iteration |error|, %.\n\n",
        report["min_op_share_pct"]
    ));
    for r in results {
        let ops: Vec<String> = r
            .nearest
            .corrected_ops
            .iter()
            .map(|o| {
                format!(
                    "{} ({:.0}%) {:+.1} / {:.1}",
                    o.op, o.share_pct, o.total_error_pct, o.median_abs_pct
                )
            })
            .collect();
        md.push_str(&format!(
            "- **{} {}**: {}\n",
            r.policy,
            r.round,
            ops.join("; ")
        ));
    }
    md.push_str(
        "\n## By kind of iteration (nearest bundle, medians fitted)\n\nTotal error of each kind's \
         iterations, raw → corrected, %: decode steps of 1, 2–3, 4–7, 8–15 sequences, and \
         iterations with a prefill chunk. A correction that fits the memory-bound single steps \
         and not the larger batches shows here.\n\n",
    );
    for r in results {
        let kinds: Vec<String> = r
            .nearest
            .raw_by_kind
            .iter()
            .map(|(kind, raw)| match r.nearest.corrected_by_kind.get(kind) {
                Some(corrected) => format!("{kind} {raw:+.1} → {corrected:+.1}"),
                None => format!("{kind} {raw:+.1}"),
            })
            .collect();
        if !kinds.is_empty() {
            md.push_str(&format!(
                "- **{} {}**: {}\n",
                r.policy,
                r.round,
                kinds.join("; ")
            ));
        }
    }
    md.push_str(&format!(
        "\n## By memory state (nearest bundle, medians fitted)\n\nThe host's memory \
         bandwidth switches between states within seconds; the quick probes between iterations \
         see it. An iteration ran *as profiled* when the quick probes on both sides of its start \
         read within ×/÷ {AS_PROFILED_MEMORY} of the bundle's quick median, *fast* when both read \
         ≥ {FAST_MEMORY}× it. Per kind: median predicted ÷ measured time as profiled → in the \
         fast state (> 1: the engine ran faster than predicted), raw, then the corrected one in \
         the fast state, and the iterations of each. The bundle's and the run's shares in the \
         fast state first.\n\n"
    ));
    for r in results {
        let Some(states) = &r.nearest.memory_states else {
            continue;
        };
        let ratio = |x: Option<f64>| x.map_or("–".into(), |x| format!("{x:.2}"));
        let kinds: Vec<String> = states
            .by_kind
            .iter()
            .map(|(kind, k)| {
                format!(
                    "{kind} {} ({}) → {} ({}), corrected {}",
                    ratio(k.as_profiled_raw),
                    k.as_profiled_iterations,
                    ratio(k.fast_raw),
                    k.fast_iterations,
                    ratio(k.fast_corrected)
                )
            })
            .collect();
        md.push_str(&format!(
            "- **{} {}** (fast: bundle {:.0} %, run {:.0} %): {}\n",
            r.policy,
            r.round,
            states.bundle_fast_pct,
            states.run_fast_pct,
            kinds.join("; ")
        ));
    }
    md
}
