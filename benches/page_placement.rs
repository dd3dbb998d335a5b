//! Does a process's speed depend on where its pages landed, and do huge pages fix that?
//!
//! A profile and the real run it predicts are separate processes, each with its own weights,
//! KV pool and probe window. This bench starts `SIMREAL_PP_PROCESSES` (default 6) child
//! processes per setting, the settings alternating (4 KiB pages, huge pages, 4 KiB, …), each
//! as a timed stage starts (real-time priority, `timing.huge_pages` as the setting says). A
//! child loads the stages' `qwen3_0_6b` f32 weights and, for `SIMREAL_PP_SECONDS` (default
//! 15), repeats rounds of: one quick reading of each of `WINDOWS` probe windows (64 MiB
//! each, allocated side by side), a decode forward (one sequence over 128 cached tokens) and
//! a 128-token prefill forward, with the profiler's 10 % gap after each forward. It reports
//! the medians. Across processes of one setting, the spread of those medians is what a
//! bundle and a run can differ by before the device changes at all; within a process, the
//! windows' spread is what the probe's own placement adds.
//!
//! `cargo bench --bench page_placement`; writes `benches/results/page_placement.{json,md}`.

mod common;

use common::median;
use common::probe_forwards::{forward_ms, Shapes, DECODE_CONTEXT, PREFILL_TOKENS};

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use simreal::real_bench::device_probe::{load_average_1min, DeviceProbe};
use simreal::real_bench::model::{Qwen3Model, WeightSource};
use simreal::real_bench::threads::{self, Priority, TimingSettings};

const CHILD_ENV: &str = "SIMREAL_PP_CHILD_HUGE_PAGES";
const WINDOWS: usize = 4;

/// One child process's medians.
#[derive(Serialize, Deserialize, Clone)]
struct ProcessResult {
    huge_pages: bool,
    huge_page_bytes: u64,
    refused: Vec<String>,
    rounds: usize,
    decode_ms: f64,
    prefill_ms: f64,
    /// Each probe window's median quick reading.
    window_gb_per_s: Vec<f64>,
}

fn child(huge_pages: bool, seconds: usize) -> Result<ProcessResult> {
    threads::init(2)?;
    let timing = threads::apply_timing(&TimingSettings {
        priority: Priority::Realtime,
        lift_rt_throttling: true,
        huge_pages,
        ..TimingSettings::UNMANAGED
    });
    let weights = WeightSource::Dir(common::qwen3_0_6b_weights()?);
    let model = Qwen3Model::load(&weights, candle_core::DType::F32, &candle_core::Device::Cpu)?;
    let shapes = Shapes::new();
    let mut cache = shapes.cache(&model)?;
    let (decode, prefill) = shapes.batches(&model, &cache)?;
    let mut probes: Vec<DeviceProbe> = (0..WINDOWS).map(|_| DeviceProbe::new()).collect();
    forward_ms(&model, &decode, &mut cache)?;
    forward_ms(&model, &prefill, &mut cache)?;
    let (mut decode_ms, mut prefill_ms) = (Vec::new(), Vec::new());
    let mut readings = vec![Vec::new(); WINDOWS];
    let origin = Instant::now();
    while origin.elapsed().as_secs() < seconds as u64 {
        for (probe, r) in probes.iter_mut().zip(&mut readings) {
            r.push(probe.measure_quick().memory_gb_per_s());
        }
        decode_ms.push(forward_ms(&model, &decode, &mut cache)?);
        prefill_ms.push(forward_ms(&model, &prefill, &mut cache)?);
    }
    let applied = timing.applied();
    Ok(ProcessResult {
        huge_pages,
        huge_page_bytes: applied.huge_page_bytes,
        refused: applied.refused,
        rounds: decode_ms.len(),
        decode_ms: median(&decode_ms),
        prefill_ms: median(&prefill_ms),
        window_gb_per_s: readings
            .iter()
            .map(|r| {
                median(
                    &r.iter()
                        .copied()
                        .filter(|x| x.is_finite())
                        .collect::<Vec<_>>(),
                )
            })
            .collect(),
    })
}

/// Largest ÷ smallest, and the coefficient of variation (%), of `v`.
fn spread(v: &[f64]) -> (f64, f64) {
    let max = v.iter().copied().fold(f64::MIN, f64::max);
    let min = v.iter().copied().fold(f64::MAX, f64::min);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0)).sqrt();
    (max / min, 100.0 * sd / mean)
}

fn main() -> Result<()> {
    let seconds = common::env_usize("SIMREAL_PP_SECONDS", 15)?;
    if let Ok(flag) = std::env::var(CHILD_ENV) {
        let result = child(flag == "1", seconds)?;
        println!("{}", serde_json::to_string(&result)?);
        return Ok(());
    }
    let processes = common::env_usize("SIMREAL_PP_PROCESSES", 6)?;
    ensure!(processes >= 2, "SIMREAL_PP_PROCESSES must be at least 2");
    common::qwen3_0_6b_weights()?;
    let started_utc = simreal::io::provenance::utc_now();
    let load_start = load_average_1min();
    let mut results: Vec<ProcessResult> = Vec::new();
    for i in 0..2 * processes {
        let huge = i % 2 == 1;
        let out = Command::new(std::env::current_exe()?)
            .env(CHILD_ENV, if huge { "1" } else { "0" })
            .output()
            .context("starting a child process")?;
        if !out.status.success() {
            bail!(
                "child process {i} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let result: ProcessResult = serde_json::from_str(line.trim().lines().last().unwrap_or(""))
            .with_context(|| format!("child process {i} printed `{}`", line.trim()))?;
        eprintln!(
            "process {i} ({}): decode {:.1} ms, prefill {:.1} ms, windows {:?} GB/s, {} MiB on huge pages",
            if huge { "huge pages" } else { "4 KiB pages" },
            result.decode_ms,
            result.prefill_ms,
            result.window_gb_per_s.iter().map(|x| (x * 10.0).round() / 10.0).collect::<Vec<_>>(),
            result.huge_page_bytes >> 20
        );
        results.push(result);
    }
    let load_end = load_average_1min();
    let summary = |huge: bool| {
        let of = |f: fn(&ProcessResult) -> f64| {
            results
                .iter()
                .filter(|r| r.huge_pages == huge)
                .map(f)
                .collect::<Vec<_>>()
        };
        let decode = of(|r| r.decode_ms);
        let prefill = of(|r| r.prefill_ms);
        let probe = of(|r| median(&r.window_gb_per_s));
        let within: Vec<f64> = results
            .iter()
            .filter(|r| r.huge_pages == huge)
            .map(|r| spread(&r.window_gb_per_s).0)
            .collect();
        json!({
            "huge_pages": huge,
            "decode_ms_median": median(&decode),
            "decode_across_processes": spread(&decode),
            "prefill_ms_median": median(&prefill),
            "prefill_across_processes": spread(&prefill),
            "probe_gb_per_s_median": median(&probe),
            "probe_across_processes": spread(&probe),
            "probe_windows_within_process_max_over_min": within,
        })
    };
    let summaries = [summary(false), summary(true)];
    let report = json!({
        "started_utc": started_utc,
        "ended_utc": simreal::io::provenance::utc_now(),
        "load_average_1min": [load_start, load_end],
        "processes_per_setting": processes,
        "seconds_per_process": seconds,
        "summaries": summaries,
        "processes": results,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    std::fs::write(
        dir.join("page_placement.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    let mut md = format!(
        "# Page placement: how much a process's speed depends on where its pages landed\n\n\
         `cargo bench --bench page_placement` — {processes} processes per setting, alternating \
         (4 KiB, huge, 4 KiB, …), {seconds} s of rounds each; {} → {} (UTC), load average (1 min) \
         {:.2} → {:.2}. Each process: the stages' `qwen3_0_6b` f32 weights at real-time priority; \
         per round one quick reading of each of {WINDOWS} probe windows (64 MiB each), a decode \
         forward (one sequence over {DECODE_CONTEXT} cached tokens), a {PREFILL_TOKENS}-token \
         prefill forward. Spread = largest ÷ smallest of the processes' medians, and their CV.\n\n\
         | pages | decode ms (median of processes) | decode spread / CV % | prefill ms | prefill spread / CV % | probe GB/s | probe spread / CV % | windows within a process, largest ÷ smallest |\n\
         |---|---:|---|---:|---|---:|---|---|\n",
        report["started_utc"].as_str().unwrap_or("?"),
        report["ended_utc"].as_str().unwrap_or("?"),
        load_start.unwrap_or(f64::NAN),
        load_end.unwrap_or(f64::NAN),
    );
    for s in &summaries {
        let pair = |k: &str| {
            format!(
                "{:.3} / {:.1}",
                s[k][0].as_f64().unwrap_or(f64::NAN),
                s[k][1].as_f64().unwrap_or(f64::NAN)
            )
        };
        let within: Vec<String> = s["probe_windows_within_process_max_over_min"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| format!("{:.2}", x.as_f64().unwrap_or(f64::NAN)))
            .collect();
        md += &format!(
            "| {} | {:.1} | {} | {:.1} | {} | {:.1} | {} | {} |\n",
            if s["huge_pages"] == true {
                "2 MiB (huge)"
            } else {
                "4 KiB"
            },
            s["decode_ms_median"].as_f64().unwrap_or(f64::NAN),
            pair("decode_across_processes"),
            s["prefill_ms_median"].as_f64().unwrap_or(f64::NAN),
            pair("prefill_across_processes"),
            s["probe_gb_per_s_median"].as_f64().unwrap_or(f64::NAN),
            pair("probe_across_processes"),
            within.join(", ")
        );
    }
    md += "\nPer process, in the order run:\n\n| # | pages | decode ms | prefill ms | windows GB/s | MiB on huge pages |\n|---:|---|---:|---:|---|---:|\n";
    for (i, r) in results.iter().enumerate() {
        md += &format!(
            "| {i} | {} | {:.1} | {:.1} | {} | {} |\n",
            if r.huge_pages { "huge" } else { "4 KiB" },
            r.decode_ms,
            r.prefill_ms,
            r.window_gb_per_s
                .iter()
                .map(|x| format!("{x:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            r.huge_page_bytes >> 20
        );
    }
    std::fs::write(dir.join("page_placement.md"), md)?;
    eprintln!("wrote benches/results/page_placement.{{json,md}}");
    Ok(())
}
