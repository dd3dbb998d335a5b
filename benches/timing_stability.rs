//! How steady is the real engine's timing, and which way of running it is steadiest?
//!
//! Identical iterations — the same composition, the same cached context — are timed again and
//! again, under each *setting* of how the process runs (thread count, pinning, scheduling
//! priority, idle policy, memory locking), and the coefficient of variation (CV = standard
//! deviation ÷ mean) of their forward times is the measure. Two contexts per setting:
//!
//! - **back to back**: one forward after the other, as the profiler times ops;
//! - **engine-like**: between forwards the engine's own CPU work (sampling, preparing the
//!   next batch) and a seeded random idle gap of 10–400 ms, as a real run at moderate load
//!   has; the gap is slept (`park`) or spent spinning on every pool thread (`spin`).
//!
//! Their per-op medians also give the **profile-vs-engine gap**: how much more an op costs
//! between idle gaps than back to back, which is what a bundle profiled back to back
//! mis-predicts.
//!
//! Each setting runs in its own child process (rayon's pool, real-time priority and memory
//! locks are per process), and the settings are interleaved round by round (A, B, C, A, B, C,
//! …) so that a change in the machine's speed spreads over all of them. With
//! `SIMREAL_STABILITY_COMPETE=1` a competing busy process (one spinning thread per core) runs
//! during every child, as another job on a shared machine would.
//!
//! `cargo bench --bench timing_stability` (release). Knobs: `SIMREAL_STABILITY_ROUNDS`
//! (default 3), `SIMREAL_STABILITY_ITERATIONS` (per composition and context, default 12),
//! `SIMREAL_STABILITY_SETTINGS` (comma-separated names, default all),
//! `SIMREAL_STABILITY_COMPETE`, `SIMREAL_STABILITY_TAG` (suffix of the result files, for a
//! subset of the settings). Uses the stages' synthesized `qwen3_0_6b` f32 weights
//! (`tmp/weights/qwen3_0_6b-0-f32`, made on first use). Writes
//! `benches/results/timing_stability{,_compete}.{json,md}`.

mod common;

use common::median;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use simreal::io::ops::Op;
use simreal::real_bench::device_probe::load_average_1min;
use simreal::real_bench::model::*;
use simreal::real_bench::threads::{self, Priority, TimingSettings};

const CHILD_ENV: &str = "SIMREAL_STABILITY_CHILD";
const SEED: u64 = 0;
const BLOCK: usize = 16;

/// How the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
struct Setting {
    name: &'static str,
    threads: usize,
    timing: TimingSettings,
    /// Spin every pool thread through idle gaps instead of sleeping.
    spin_idle: bool,
}

const TODAY: TimingSettings = TimingSettings::UNMANAGED;
/// Real-time priority as the stages apply it (the kernel's throttling lifted).
const REALTIME: TimingSettings = TimingSettings {
    priority: Priority::Realtime,
    lift_rt_throttling: true,
    ..TODAY
};

/// One factor changed at a time from today's default, then all of the helpful ones.
fn settings() -> Vec<Setting> {
    let base = Setting {
        name: "default_before",
        threads: 2,
        timing: TODAY,
        spin_idle: false,
    };
    vec![
        base,
        Setting {
            name: "pinned",
            timing: TimingSettings {
                pin_threads: true,
                ..TODAY
            },
            ..base
        },
        Setting {
            name: "one_thread",
            threads: 1,
            ..base
        },
        Setting {
            name: "realtime",
            timing: REALTIME,
            ..base
        },
        Setting {
            name: "realtime_throttled",
            timing: TimingSettings {
                lift_rt_throttling: false,
                ..REALTIME
            },
            ..base
        },
        Setting {
            name: "elevated",
            timing: TimingSettings {
                priority: Priority::Elevated,
                ..TODAY
            },
            ..base
        },
        Setting {
            name: "spin_idle",
            spin_idle: true,
            ..base
        },
        Setting {
            name: "locked_memory",
            timing: TimingSettings {
                lock_memory: true,
                ..TODAY
            },
            ..base
        },
        Setting {
            name: "realtime_spin_idle",
            timing: REALTIME,
            spin_idle: true,
            ..base
        },
        Setting {
            name: "realtime_pinned_locked",
            timing: TimingSettings {
                pin_threads: true,
                lock_memory: true,
                ..REALTIME
            },
            ..base
        },
    ]
}

/// A fixed iteration: `(tokens, cached context)` per sequence.
#[derive(Debug, Clone, Copy)]
struct Composition {
    name: &'static str,
    seqs: &'static [(usize, usize)],
}

const D8: [(usize, usize); 8] = [(1, 256); 8];
const MIXED: [(usize, usize); 9] = [
    (48, 0),
    (1, 256),
    (1, 256),
    (1, 256),
    (1, 256),
    (1, 256),
    (1, 256),
    (1, 256),
    (1, 256),
];
const COMPOSITIONS: [Composition; 3] = [
    Composition {
        name: "decode_1_ctx128",
        seqs: &[(1, 128)],
    },
    Composition {
        name: "decode_8_ctx256",
        seqs: &D8,
    },
    Composition {
        name: "prefill_48_plus_decode_8",
        seqs: &MIXED,
    },
];

/// One child's measurements: per context and composition, forward wall times (ms) and
/// per-op medians (ms per iteration).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChildResult {
    setting: String,
    applied: serde_json::Value,
    /// `[context][composition]` forward times, ms.
    forward_ms: Vec<Vec<Vec<f64>>>,
    /// `[context][composition]` op → median ms per iteration.
    op_median_ms: Vec<Vec<Vec<(String, f64)>>>,
    load_average_start: Option<f64>,
    load_average_end: Option<f64>,
}

const CONTEXTS: [&str; 2] = ["back_to_back", "engine_like"];

/// Sleeps or spins on every pool thread until `deadline`.
fn idle_until(deadline: Instant, spin: bool) {
    if spin {
        rayon::broadcast(|_| {
            while Instant::now() < deadline {
                std::hint::spin_loop();
            }
        });
    }
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

/// Coefficient of variation, %.
fn cv_pct(v: &[f64]) -> f64 {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    100.0 * var.sqrt() / mean
}

fn child(name: &str, iterations: usize) -> Result<()> {
    let setting = settings()
        .into_iter()
        .find(|s| s.name == name)
        .with_context(|| format!("unknown setting {name}"))?;
    let load_average_start = load_average_1min();
    threads::init(setting.threads)?;
    let timing = threads::apply_timing(&setting.timing);
    let model = Qwen3Model::load(
        &WeightSource::Dir(common::qwen3_0_6b_weights()?),
        DType::F32,
        &Device::Cpu,
    )?;
    // Disjoint blocks per sequence of every composition.
    let blocks_per_seq = 512usize.div_ceil(BLOCK);
    let max_seqs = COMPOSITIONS.iter().map(|c| c.seqs.len()).max().unwrap_or(1);
    let mut cache = model.new_kv_cache(blocks_per_seq * max_seqs, BLOCK)?;
    cache.map_blocks(blocks_per_seq * max_seqs);
    let tables: Vec<Vec<usize>> = (0..max_seqs)
        .map(|s| (s * blocks_per_seq..(s + 1) * blocks_per_seq).collect())
        .collect();
    let ids: Vec<u32> = (0..512u32).map(|i| (i * 7919 + 11) % 151_936).collect();
    let inputs = |c: &Composition| -> Vec<SequenceInput<'_>> {
        c.seqs
            .iter()
            .enumerate()
            .map(|(s, &(tokens, context))| SequenceInput {
                token_ids: &ids[..tokens],
                num_cached_tokens: context,
                block_table: &tables[s],
                wants_logits: true,
            })
            .collect()
    };
    // `map_blocks` gave every block its own written page, so attention reads real memory;
    // values do not change a dense model's timing.
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut forward_ms = vec![vec![Vec::new(); COMPOSITIONS.len()]; CONTEXTS.len()];
    let mut op_samples: Vec<Vec<Vec<OpTotals>>> =
        vec![vec![Vec::new(); COMPOSITIONS.len()]; CONTEXTS.len()];
    // Warm-up: one of each.
    for c in &COMPOSITIONS {
        let logits = model.forward_seqs(&inputs(c), &mut cache, None)?;
        model.sampler(&logits)?;
    }
    for (ctx, &context) in CONTEXTS.iter().enumerate() {
        let engine_like = context == "engine_like";
        for _ in 0..iterations {
            for (k, c) in COMPOSITIONS.iter().enumerate() {
                let seqs = inputs(c);
                let batch = model.prepare_batch(&cache, &seqs)?;
                let mut ops = OpTotals::default();
                let start = Instant::now();
                let logits = model.forward(&batch, &mut cache, Some(&mut ops))?;
                let elapsed = start.elapsed();
                drop(batch);
                model.sampler(&logits)?;
                forward_ms[ctx][k].push(elapsed.as_secs_f64() * 1e3);
                op_samples[ctx][k].push(ops);
                if engine_like {
                    let gap = Duration::from_millis(rng.random_range(10..400));
                    idle_until(Instant::now() + gap, setting.spin_idle);
                }
            }
        }
    }
    let op_median_ms = op_samples
        .iter()
        .map(|per_comp| {
            per_comp
                .iter()
                .map(|samples| {
                    Op::MODEL
                        .into_iter()
                        .filter(|&op| op != Op::Sampler)
                        .map(|op| {
                            let v: Vec<f64> = samples
                                .iter()
                                .map(|t| t.total(op).as_secs_f64() * 1e3)
                                .collect();
                            (op.name().to_string(), median(&v))
                        })
                        .filter(|(_, m)| *m > 0.0)
                        .collect()
                })
                .collect()
        })
        .collect();
    let result = ChildResult {
        setting: setting.name.into(),
        applied: serde_json::to_value(timing.applied())?,
        forward_ms,
        op_median_ms,
        load_average_start,
        load_average_end: load_average_1min(),
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// A competing process: one busy thread per core, until killed.
fn start_competitor() -> Result<Child> {
    let cores = std::thread::available_parallelism()?.get();
    let script = format!("for i in $(seq {cores}); do (while :; do :; done) & done; wait");
    Ok(Command::new("sh").arg("-c").arg(script).spawn()?)
}

fn stop_competitor(mut c: Child) {
    // The shell's children: kill the whole process group started by `sh`.
    let _ = Command::new("pkill")
        .arg("-P")
        .arg(c.id().to_string())
        .status();
    let _ = c.kill();
    let _ = c.wait();
}

fn main() -> Result<()> {
    let iterations = common::env_usize("SIMREAL_STABILITY_ITERATIONS", 12)?.max(3);
    if let Ok(name) = std::env::var(CHILD_ENV) {
        return child(&name, iterations);
    }
    let rounds = common::env_usize("SIMREAL_STABILITY_ROUNDS", 3)?.max(1);
    let compete = std::env::var_os("SIMREAL_STABILITY_COMPETE").is_some();
    let mut chosen = settings();
    if let Ok(list) = std::env::var("SIMREAL_STABILITY_SETTINGS") {
        let names: Vec<&str> = list.split(',').map(str::trim).collect();
        chosen.retain(|s| names.contains(&s.name));
        if chosen.is_empty() {
            bail!("SIMREAL_STABILITY_SETTINGS={list} names no setting");
        }
    }
    common::qwen3_0_6b_weights()?;
    let started_utc = simreal::io::provenance::utc_now();
    let load_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let exe = std::env::current_exe()?;
    let mut results: Vec<ChildResult> = Vec::new();
    for round in 0..rounds {
        // Rotate the order every round, so no setting always follows the same one.
        let mut order = chosen.clone();
        order.rotate_left(round % chosen.len());
        for s in &order {
            eprintln!("round {}/{rounds}: {}", round + 1, s.name);
            let competitor = if compete {
                Some(start_competitor()?)
            } else {
                None
            };
            let out = Command::new(&exe)
                .env(CHILD_ENV, s.name)
                .env("SIMREAL_STABILITY_ITERATIONS", iterations.to_string())
                .output();
            if let Some(c) = competitor {
                stop_competitor(c);
            }
            let out = out?;
            if !out.status.success() {
                bail!(
                    "setting {} failed: {}",
                    s.name,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let line = String::from_utf8(out.stdout)?;
            results.push(serde_json::from_str(line.trim()).with_context(|| {
                format!("setting {}: unreadable child output {line:?}", s.name)
            })?);
        }
    }
    let load_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    write_results(
        &chosen,
        &results,
        rounds,
        iterations,
        compete,
        &started_utc,
        &load_start,
        &load_end,
    )
}

#[allow(clippy::too_many_arguments)]
fn write_results(
    chosen: &[Setting],
    results: &[ChildResult],
    rounds: usize,
    iterations: usize,
    compete: bool,
    started_utc: &str,
    load_start: &str,
    load_end: &str,
) -> Result<()> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let loadavg = |s: &str| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    // Per setting, context, composition: the CV of each round, and its median over rounds.
    let mut table = Vec::new();
    let mut md = String::new();
    md.push_str(&format!(
        "# Timing stability of identical iterations{}\n\n`cargo bench --bench timing_stability`{} — {rounds} rounds × {iterations} iterations per composition and context, settings interleaved; qwen3_0_6b f32, {cpu}; started {started_utc}, load average {} → {}.\n\n",
        if compete { " under a competing load" } else { "" },
        if compete { " with `SIMREAL_STABILITY_COMPETE=1` (one busy-looping thread per core in another process)" } else { "" },
        loadavg(load_start),
        loadavg(load_end)
    ));
    md.push_str("CV = standard deviation ÷ mean of the forward times of identical iterations within one process, median over rounds (min–max). Median forward time in ms.\n\n");
    md.push_str("| setting | context | ");
    for c in &COMPOSITIONS {
        md.push_str(&format!("{} CV % | {} ms | ", c.name, c.name));
    }
    md.push_str("applied |\n|---|---|");
    for _ in &COMPOSITIONS {
        md.push_str("---:|---:|");
    }
    md.push_str("---|\n");
    for s in chosen {
        let runs: Vec<&ChildResult> = results.iter().filter(|r| r.setting == s.name).collect();
        for (ctx, context) in CONTEXTS.iter().enumerate() {
            let mut row = json!({"setting": s.name, "threads": s.threads, "timing": s.timing,
                "spin_idle": s.spin_idle, "context": context});
            md.push_str(&format!("| {} | {} | ", s.name, context));
            for (k, c) in COMPOSITIONS.iter().enumerate() {
                let cvs: Vec<f64> = runs.iter().map(|r| cv_pct(&r.forward_ms[ctx][k])).collect();
                let meds: Vec<f64> = runs.iter().map(|r| median(&r.forward_ms[ctx][k])).collect();
                let (lo, hi) = cvs
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
                md.push_str(&format!(
                    "{:.1} ({lo:.1}–{hi:.1}) | {:.1} | ",
                    median(&cvs),
                    median(&meds)
                ));
                row[c.name] = json!({"cv_pct_by_round": cvs, "median_ms_by_round": meds,
                    "cv_pct_median": median(&cvs)});
            }
            let refused: Vec<String> = runs
                .iter()
                .flat_map(|r| {
                    r.applied["refused"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|v| v.as_str().map(String::from))
                })
                .collect();
            md.push_str(if refused.is_empty() {
                "all |\n"
            } else {
                "partly (see JSON) |\n"
            });
            table.push(row);
        }
    }
    // Profile-vs-engine gap per op: engine-like ÷ back-to-back median op time − 1, per
    // setting and composition, median over rounds.
    md.push_str("\n## Profile-vs-engine gap per op\n\n100 · (op time between idle gaps ÷ op time back to back − 1), median over rounds; ops of ≥ 1 % of the composition's forward time. A bundle profiled back to back mis-predicts an engine op by this much.\n\n");
    let mut gaps = Vec::new();
    for s in chosen {
        let runs: Vec<&ChildResult> = results.iter().filter(|r| r.setting == s.name).collect();
        for (k, c) in COMPOSITIONS.iter().enumerate() {
            let Some(first) = runs.first() else { continue };
            let total: f64 = first.op_median_ms[0][k].iter().map(|(_, m)| m).sum();
            let mut parts = Vec::new();
            for (op, ms) in &first.op_median_ms[0][k] {
                if *ms < 0.01 * total {
                    continue;
                }
                let per_round: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| {
                        let b2b = r.op_median_ms[0][k].iter().find(|(o, _)| o == op)?.1;
                        let eng = r.op_median_ms[1][k].iter().find(|(o, _)| o == op)?.1;
                        Some(100.0 * (eng / b2b - 1.0))
                    })
                    .collect();
                let g = median(&per_round);
                parts.push(format!("{op} {g:+.1}"));
                gaps.push(json!({"setting": s.name, "composition": c.name, "op": op,
                    "gap_pct_by_round": per_round, "gap_pct_median": g}));
            }
            md.push_str(&format!(
                "- **{}**, {}: {}\n",
                s.name,
                c.name,
                parts.join(", ")
            ));
        }
    }
    let result = json!({
        "host": {"cpu_model": cpu, "cores": std::thread::available_parallelism()?.get()},
        "started_utc": started_utc, "loadavg_start": loadavg(load_start), "loadavg_end": loadavg(load_end),
        "rounds": rounds, "iterations": iterations, "competing_load": compete,
        "compositions": COMPOSITIONS.iter().map(|c| json!({"name": c.name, "seqs": c.seqs})).collect::<Vec<_>>(),
        "settings": table,
        "op_gaps": gaps,
        "children": results,
    });
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    std::fs::create_dir_all(&root)?;
    // A run of a subset of the settings goes to its own files (`SIMREAL_STABILITY_TAG`), so
    // that it does not replace the full table.
    let tag = std::env::var("SIMREAL_STABILITY_TAG")
        .map(|t| format!("_{t}"))
        .unwrap_or_default();
    let stem = format!(
        "timing_stability{}{tag}",
        if compete { "_compete" } else { "" }
    );
    std::fs::write(
        root.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&result)? + "\n",
    )?;
    std::fs::write(root.join(format!("{stem}.md")), md)?;
    eprintln!("wrote benches/results/{stem}.{{json,md}}");
    Ok(())
}
