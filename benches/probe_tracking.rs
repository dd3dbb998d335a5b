//! Which probe tracks the model's own speed over minutes?
//!
//! The drift correction scales a bundle by how much faster or slower the device ran during the
//! real run than during profiling, as read by probes. This bench asks which probe follows the
//! model's ops: for `SIMREAL_PT_SECONDS` (default 600) one process repeats, round by round,
//! both device probes (memory- and compute-bound kernels: the synthetic ones of probe version
//! 3 and the model kernels of version 4, which `device_speed.csv` records), a decode forward (one sequence over 128 cached tokens: weight streaming) and a
//! 128-token prefill forward (GEMMs), with the profiler's 10 % gap after each forward. The
//! rounds are cut into windows of `SIMREAL_PT_WINDOW_S` (default 60, about a real run); per
//! window, the medians of every series. Across windows it reports how well each candidate
//! predicts the forwards' window-to-window change:
//!
//! - each probe's window medians;
//! - a *sparse model probe*: the median of the window's first `SIMREAL_PT_SPARSE` (default 3)
//!   forwards of each kind, predicting the median of the rest of the window (what a few
//!   grid points timed right before a run would say of it).
//!
//! `cargo bench --bench probe_tracking` (release, real-time priority where permitted, as the
//! stages run). Uses the stages' synthesized `qwen3_0_6b` f32 weights. Writes
//! `benches/results/probe_tracking.{json,md}`.

mod common;

use common::median;
use common::probe_forwards::{forward_ms, Shapes, DECODE_CONTEXT, PREFILL_TOKENS};

use std::time::Instant;

use anyhow::{ensure, Result};
use serde::Serialize;
use serde_json::json;
use simreal::real_bench::device_probe::{load_average_1min, DeviceProbe, ProbeKernels};

/// One round's readings.
#[derive(Serialize, Clone, Copy)]
struct Round {
    t_s: f64,
    memory_gb_per_s: f64,
    compute_gflop_per_s: f64,
    model_memory_gb_per_s: f64,
    model_compute_gflop_per_s: f64,
    decode_ms: f64,
    prefill_ms: f64,
}

/// One window's medians; `*_rest` leave out the first `sparse` rounds, `*_sparse` are of them.
#[derive(Serialize)]
struct Window {
    start_s: f64,
    rounds: usize,
    memory_gb_per_s: f64,
    compute_gflop_per_s: f64,
    model_memory_gb_per_s: f64,
    model_compute_gflop_per_s: f64,
    decode_ms_sparse: f64,
    decode_ms_rest: f64,
    prefill_ms_sparse: f64,
    prefill_ms_rest: f64,
}

/// Pearson correlation of two series (NaN when either is constant).
fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// How well `predictor` (a time, or a rate when `is_rate`) predicts the change of `truth`
/// (a time) from window to window: every window is scaled from the first by the predictor's
/// ratio, as the correction scales a bundle, and the median |error| of the scaled
/// prediction is returned (%), next to the median |change| of the truth itself (the error of
/// not correcting at all).
fn tracking_error_pct(predictor: &[f64], is_rate: bool, truth: &[f64]) -> (f64, f64) {
    let mut corrected = Vec::new();
    let mut uncorrected = Vec::new();
    for i in 0..truth.len() {
        for j in 0..truth.len() {
            if i == j {
                continue;
            }
            // Predict window j's truth from window i's, scaled by the predictor's change.
            let ratio = if is_rate {
                predictor[i] / predictor[j]
            } else {
                predictor[j] / predictor[i]
            };
            corrected.push(100.0 * (truth[i] * ratio / truth[j] - 1.0).abs());
            uncorrected.push(100.0 * (truth[i] / truth[j] - 1.0).abs());
        }
    }
    (median(&corrected), median(&uncorrected))
}

fn main() -> Result<()> {
    let seconds = common::env_usize("SIMREAL_PT_SECONDS", 600)?;
    let window_s = common::env_usize("SIMREAL_PT_WINDOW_S", 60)?;
    let sparse = common::env_usize("SIMREAL_PT_SPARSE", 3)?;
    ensure!(
        window_s > 0 && seconds >= 2 * window_s,
        "SIMREAL_PT_SECONDS must hold at least two windows of SIMREAL_PT_WINDOW_S"
    );
    let (model, timing) = common::stage_like_qwen3_0_6b()?;
    let shapes = Shapes::new();
    let mut cache = shapes.cache(&model)?;
    let (decode, prefill) = shapes.batches(&model, &cache)?;
    let mut probe = DeviceProbe::with_kernels(ProbeKernels::Synthetic);
    let mut model_probe = DeviceProbe::with_kernels(ProbeKernels::Model);
    let started_utc = simreal::io::provenance::utc_now();
    let load_start = load_average_1min();
    forward_ms(&model, &decode, &mut cache)?;
    forward_ms(&model, &prefill, &mut cache)?;
    let origin = Instant::now();
    let mut rounds = Vec::new();
    while origin.elapsed().as_secs() < seconds as u64 {
        let t_s = origin.elapsed().as_secs_f64();
        let p = probe.measure();
        let m = model_probe.measure();
        rounds.push(Round {
            t_s,
            memory_gb_per_s: p.memory_gb_per_s(),
            compute_gflop_per_s: p.compute_gflop_per_s(),
            model_memory_gb_per_s: m.memory_gb_per_s(),
            model_compute_gflop_per_s: m.compute_gflop_per_s(),
            decode_ms: forward_ms(&model, &decode, &mut cache)?,
            prefill_ms: forward_ms(&model, &prefill, &mut cache)?,
        });
    }
    let windows: Vec<Window> = rounds
        .chunk_by(|a, b| (a.t_s / window_s as f64) as u64 == (b.t_s / window_s as f64) as u64)
        .filter(|w| w.len() > sparse + 2)
        .map(|w| {
            let of =
                |f: fn(&Round) -> f64, r: &[Round]| median(&r.iter().map(f).collect::<Vec<_>>());
            let (head, rest) = w.split_at(sparse.min(w.len()));
            Window {
                start_s: w[0].t_s,
                rounds: w.len(),
                memory_gb_per_s: of(|r| r.memory_gb_per_s, w),
                compute_gflop_per_s: of(|r| r.compute_gflop_per_s, w),
                model_memory_gb_per_s: of(|r| r.model_memory_gb_per_s, w),
                model_compute_gflop_per_s: of(|r| r.model_compute_gflop_per_s, w),
                decode_ms_sparse: of(|r| r.decode_ms, head),
                decode_ms_rest: of(|r| r.decode_ms, rest),
                prefill_ms_sparse: of(|r| r.prefill_ms, head),
                prefill_ms_rest: of(|r| r.prefill_ms, rest),
            }
        })
        .collect();
    ensure!(windows.len() >= 2, "fewer than two usable windows");
    let col = |f: fn(&Window) -> f64| windows.iter().map(f).collect::<Vec<_>>();
    let decode_rest = col(|w| w.decode_ms_rest);
    let prefill_rest = col(|w| w.prefill_ms_rest);
    let memory = col(|w| w.memory_gb_per_s);
    let compute = col(|w| w.compute_gflop_per_s);
    let model_memory = col(|w| w.model_memory_gb_per_s);
    let model_compute = col(|w| w.model_compute_gflop_per_s);
    // Every probe's window rates against each forward's rest-of-window times, then the
    // window's first few forwards of that shape.
    let probes: [(&str, &[f64]); 4] = [
        ("synthetic memory probe", &memory),
        ("synthetic compute probe", &compute),
        ("model memory probe", &model_memory),
        ("model compute probe", &model_compute),
    ];
    let forwards = [
        ("decode", &decode_rest, col(|w| w.decode_ms_sparse)),
        ("prefill", &prefill_rest, col(|w| w.prefill_ms_sparse)),
    ];
    let mut candidates = Vec::new();
    for (target, truth, sparse_ms) in &forwards {
        for (probe, rates) in probes {
            candidates.push((
                *target,
                probe.to_string(),
                tracking_error_pct(rates, true, truth),
            ));
        }
        candidates.push((
            *target,
            format!("sparse {target} forwards"),
            tracking_error_pct(sparse_ms, false, truth),
        ));
    }
    let per_round = |f: fn(&Round) -> f64| rounds.iter().map(f).collect::<Vec<_>>();
    let decode_speed: Vec<f64> = per_round(|r| 1.0 / r.decode_ms);
    let prefill_speed: Vec<f64> = per_round(|r| 1.0 / r.prefill_ms);
    let round_correlations = [
        (
            "synthetic memory probe rate",
            "decode speed",
            correlation(&per_round(|r| r.memory_gb_per_s), &decode_speed),
        ),
        (
            "synthetic compute probe rate",
            "prefill speed",
            correlation(&per_round(|r| r.compute_gflop_per_s), &prefill_speed),
        ),
        (
            "model memory probe rate",
            "decode speed",
            correlation(&per_round(|r| r.model_memory_gb_per_s), &decode_speed),
        ),
        (
            "model compute probe rate",
            "prefill speed",
            correlation(&per_round(|r| r.model_compute_gflop_per_s), &prefill_speed),
        ),
        (
            "decode speed",
            "prefill speed",
            correlation(&decode_speed, &prefill_speed),
        ),
    ];
    let report = json!({
        "started_utc": started_utc,
        "ended_utc": simreal::io::provenance::utc_now(),
        "load_average_1min": [load_start, load_average_1min()],
        "timing": timing.applied(),
        "seconds": seconds,
        "window_s": window_s,
        "sparse_forwards": sparse,
        "decode_context": DECODE_CONTEXT,
        "prefill_tokens": PREFILL_TOKENS,
        "windows": windows,
        "tracking": candidates.iter().map(|(target, by, (c, u))| json!({
            "target": target, "predictor": by,
            "median_abs_error_pct": c, "uncorrected_median_abs_change_pct": u,
        })).collect::<Vec<_>>(),
        "round_correlations": round_correlations.iter().map(|(a, b, r)| json!({
            "a": a, "b": b, "pearson": r,
        })).collect::<Vec<_>>(),
        "rounds": rounds,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    std::fs::write(
        dir.join("probe_tracking.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    let mut md = format!(
        "# probe tracking: which probe follows the model's speed\n\n\
         `cargo bench --bench probe_tracking`, {} → {} (UTC), load average (1 min) {:.2} → {:.2}, \
         {} rounds in {} windows of {} s; real-time priority: {}. Decode: one sequence over {} cached tokens; \
         prefill: {} tokens. Probes: *synthetic* (version 3: a plain read of 64 MiB, FMA chains) and \
         *model* (version 4, what `device_speed.csv` records: the engine's decode projection over \
         64 MiB of weights, its prefill GEMM on cache-resident operands).\n\n\
         | window start s | rounds | synthetic memory GB/s | synthetic compute GFLOP/s | model memory GB/s | model compute GFLOP/s | decode ms (first {s}) | decode ms (rest) | prefill ms (first {s}) | prefill ms (rest) |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        report["started_utc"].as_str().unwrap_or("?"),
        report["ended_utc"].as_str().unwrap_or("?"),
        load_start.unwrap_or(f64::NAN),
        load_average_1min().unwrap_or(f64::NAN),
        rounds.len(),
        windows.len(),
        window_s,
        if timing.applied().refused.is_empty() { "applied" } else { "refused" },
        DECODE_CONTEXT,
        PREFILL_TOKENS,
        s = sparse,
    );
    for w in &windows {
        md += &format!(
            "| {:.0} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            w.start_s,
            w.rounds,
            w.memory_gb_per_s,
            w.compute_gflop_per_s,
            w.model_memory_gb_per_s,
            w.model_compute_gflop_per_s,
            w.decode_ms_sparse,
            w.decode_ms_rest,
            w.prefill_ms_sparse,
            w.prefill_ms_rest
        );
    }
    md += "\nPredicting one window's forward time (median of its rounds after the first few) from \
           another window's, scaled by the predictor's change between them, over all ordered \
           pairs of windows: median |error|, against the median |change| left uncorrected.\n\n\
           | forward | predictor | median abs error % | uncorrected median abs change % |\n|---|---|---|---|\n";
    for (target, by, (c, u)) in &candidates {
        md += &format!("| {target} | {by} | {c:.1} | {u:.1} |\n");
    }
    md += "\nRound by round (one probe and the forwards right after it), Pearson correlation:\n\n\
           | a | b | r |\n|---|---|---|\n";
    for (a, b, r) in &round_correlations {
        md += &format!("| {a} | {b} | {r:.2} |\n");
    }
    std::fs::write(dir.join("probe_tracking.md"), md)?;
    eprintln!("wrote benches/results/probe_tracking.{{json,md}}");
    Ok(())
}
