//! The comparison's figures, drawn with `analysis::plots` (real run first, simulated second,
//! so colours match across figures).

use std::path::Path;

use crate::analysis::plots::{
    cdf_envelope, cdf_overlay, error_bars, error_histogram, grouped_bars, line_chart,
    paired_scatter, timeline, Axis, ErrorBar, FigureFiles, FigureSize, FigureSpec, Panel, Series,
    TimelineSpec, XySeries,
};
use crate::analysis::stats::Stat;
use crate::vidur_ext::device_speed::{DeviceTimeline, ProbeKind};
use crate::Result;

use super::attribution::{describe_source, Attribution, IterationPredictions};
use super::report::ComparisonResults;
use super::runs::RunData;
use super::statistics::{Metric, PairedSamples};
use super::verdict::AlignedSamples;

/// One drawn figure and the caption the report gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// File stem under `figures/`, e.g. `cdf_ttft`.
    pub key: String,
    pub files: FigureFiles,
    pub caption: String,
}

/// Names of the two sides in legends.
pub const REAL: &str = "real";
/// Names of the two sides in legends.
pub const SIM: &str = "simulated";

/// A log axis when the sample spans more than two decades (latencies under load), else
/// linear.
fn wants_log(values: impl Iterator<Item = f64>) -> bool {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    lo > 0.0 && hi / lo > 100.0
}

/// Signed per-pair relative errors, %, leaving out pairs whose real value is 0.
pub fn signed_errors_pct(samples: &PairedSamples) -> Vec<f64> {
    samples
        .real_ms
        .iter()
        .zip(&samples.sim_ms)
        .filter(|(r, _)| **r != 0.0)
        .map(|(r, s)| 100.0 * (s - r) / r)
        .collect()
}

/// The CDFs of one metric: with two or more real runs, their envelope shaded behind the
/// pooled real and the simulated CDF; with one, the two CDFs.
fn cdf_figure(
    dir: &Path,
    size: FigureSize,
    metric: Metric,
    paired: &PairedSamples,
    aligned: Option<&AlignedSamples>,
) -> Result<Figure> {
    let (label, key) = (metric.label(), metric.key());
    let units = if metric == Metric::Itl {
        "token gaps"
    } else {
        "requests"
    };
    let runs = aligned.filter(|a| a.real_ms.len() > 1 && !a.is_empty());
    let n = runs.map_or(paired.real_ms.len(), AlignedSamples::len);
    let mut spec = FigureSpec::new(
        format!("{label}: real vs simulated (n = {n} {units})"),
        format!("{label} (ms)"),
        format!("fraction of {units} ≤ x"),
    )
    .with_size(size.width_px, size.height_px);
    let stem = dir.join(format!("cdf_{key}"));
    let (files, caption) = match runs {
        Some(a) => {
            let pooled = a.real_ms.concat();
            if wants_log(pooled.iter().chain(&a.sim_ms).copied()) {
                spec = spec.log_x();
            }
            let envelope: Vec<&[f64]> = a.real_ms.iter().map(Vec::as_slice).collect();
            let runs_name = format!("{} real runs (min–max)", a.real_ms.len());
            let files = cdf_envelope(
                &stem,
                &spec,
                &runs_name,
                &envelope,
                &[
                    Series {
                        name: "real (pooled)",
                        values: &pooled,
                    },
                    Series {
                        name: SIM,
                        values: &a.sim_ms,
                    },
                ],
            )?;
            let caption = format!(
                "Empirical CDFs of {label} over the {n} {units} present in every run: the shaded band spans the {} real runs' CDFs (lowest to highest at each value), the real line pools them; where the simulated CDF leaves the band it differs from the real engine by more than a rerun does.",
                a.real_ms.len()
            );
            (files, caption)
        }
        None => {
            if wants_log(paired.real_ms.iter().chain(&paired.sim_ms).copied()) {
                spec = spec.log_x();
            }
            let files = cdf_overlay(
                &stem,
                &spec,
                &[
                    Series {
                        name: REAL,
                        values: &paired.real_ms,
                    },
                    Series {
                        name: SIM,
                        values: &paired.sim_ms,
                    },
                ],
            )?;
            let why = match aligned {
                Some(a) if a.real_ms.len() > 1 => {
                    "no value is in every real run, so their envelope is not drawn"
                }
                _ => "one real run: its run-to-run noise is unmeasured",
            };
            let caption = format!(
                "Empirical CDFs of {label}, real and simulated, over the {n} compared {units} ({why})."
            );
            (files, caption)
        }
    };
    Ok(Figure {
        key: format!("cdf_{key}"),
        files,
        caption,
    })
}

/// Draws the CDFs (with the real runs' envelope when there are several), the paired
/// scatter and the error histogram of every metric that has samples (ITL and queue delay:
/// CDF only).
pub fn metric_figures(
    dir: &Path,
    size: FigureSize,
    samples: &[(Metric, PairedSamples)],
    aligned: &[(Metric, AlignedSamples)],
) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    for (metric, s) in samples {
        if s.real_ms.is_empty() {
            continue;
        }
        let label = metric.label();
        let key = metric.key();
        let runs = aligned.iter().find(|(m, _)| m == metric).map(|(_, a)| a);
        out.push(cdf_figure(dir, size, *metric, s, runs)?);
        if matches!(metric, Metric::Itl | Metric::QueueDelay) {
            continue;
        }
        let mut spec = FigureSpec::new(
            format!("{label} per request: simulated vs real"),
            format!("real {label} (ms)"),
            format!("simulated {label} (ms)"),
        )
        .with_size(size.width_px, size.height_px);
        if wants_log(s.real_ms.iter().chain(&s.sim_ms).copied()) {
            spec = spec.log_x().log_y();
        }
        let files = paired_scatter(
            &dir.join(format!("scatter_{key}")),
            &spec,
            "requests",
            &s.real_ms,
            &s.sim_ms,
        )?;
        out.push(Figure {
            key: format!("scatter_{key}"),
            files,
            caption: format!(
                "Simulated against real {label}, one point per request; points above the diagonal are over-predicted."
            ),
        });
        let errors = signed_errors_pct(s);
        let spec = FigureSpec::new(
            format!("{label}: per-request error of the simulator"),
            format!("{label} error, 100 · (sim − real) / real (%)"),
            "requests",
        )
        .with_size(size.width_px, size.height_px);
        let bins = (errors.len() as f64).sqrt().ceil().clamp(5.0, 60.0) as usize;
        let files = error_histogram(
            &dir.join(format!("error_hist_{key}")),
            &spec,
            &errors,
            bins,
            None,
        )?;
        out.push(Figure {
            key: format!("error_hist_{key}"),
            files,
            caption: format!("Distribution of the per-request signed {label} error; right of 0 means the simulator is slower."),
        });
    }
    Ok(out)
}

/// Per metric, the simulator's error on every reported statistic with its confidence
/// interval, against the real runs' band (around the pooled value, in %) and the target.
pub fn error_bar_figures(
    dir: &Path,
    size: FigureSize,
    results: &ComparisonResults,
) -> Result<Vec<Figure>> {
    let interval_name = format!(
        "simulator ({:.0} % CI)",
        100.0 * results.fidelity.bootstrap.confidence
    );
    let mut out = Vec::new();
    for m in &results.metrics {
        let Some(f) = &m.fidelity else { continue };
        let mut names = Vec::new();
        let mut bars = Vec::new();
        for stat in Stat::ALL {
            let c = f.cell(stat);
            let Some(e) = &c.estimate else { continue };
            let Some(err) = e.err_pct else { continue };
            let relative = |v: f64| 100.0 * (v - e.real_ms) / e.real_ms;
            names.push(stat.label());
            bars.push(ErrorBar {
                value: err,
                interval: e.err_ci_pct,
                band: e.real_band_ms.map(|[lo, hi]| [relative(lo), relative(hi)]),
                target: Some(c.target_pct),
            });
        }
        if bars.is_empty() {
            continue;
        }
        let (label, key) = (m.metric.label(), m.metric.key());
        let spec = FigureSpec::new(
            match f.num_real_runs {
                1 => format!("{label}: simulator error against one real run"),
                k => format!("{label}: simulator error against {k} real runs"),
            },
            "statistic",
            "error vs pooled real value, 100 · (sim − real) / real (%)",
        )
        .with_size(size.width_px, size.height_px);
        let files = error_bars(
            &dir.join(format!("error_bars_{key}")),
            &spec,
            &names,
            &bars,
            "real runs' band",
            &interval_name,
        )?;
        out.push(Figure {
            key: format!("error_bars_{key}"),
            files,
            caption: format!(
                "{label}: the simulator's error on each statistic with its bootstrap interval; the shaded box is the real runs' own spread around their pooled value{}, the dark ticks the ± target. A point inside the box is as close as a rerun.",
                if f.num_real_runs > 1 { "" } else { " (absent: one real run, noise unmeasured)" }
            ),
        });
    }
    Ok(out)
}

/// Predicted against measured duration of every covered real iteration.
pub fn iteration_figure(
    dir: &Path,
    size: FigureSize,
    p: &IterationPredictions,
) -> Result<Option<Figure>> {
    if p.iterations.is_empty() {
        return Ok(None);
    }
    let measured: Vec<f64> = p
        .iterations
        .iter()
        .map(|i| i.measured_ns as f64 / 1e6)
        .collect();
    let predicted: Vec<f64> = p
        .iterations
        .iter()
        .map(|i| i.predicted_ns as f64 / 1e6)
        .collect();
    let mut spec = FigureSpec::new(
        "Iteration time: predicted vs measured, same composition",
        "measured iteration time (ms)",
        "predicted iteration time (ms)",
    )
    .with_size(size.width_px, size.height_px);
    if wants_log(measured.iter().chain(&predicted).copied()) {
        spec = spec.log_x().log_y();
    }
    let files = paired_scatter(
        &dir.join("iteration_time"),
        &spec,
        "real iterations",
        &measured,
        &predicted,
    )?;
    Ok(Some(Figure {
        key: "iteration_time".into(),
        files,
        caption: format!(
            "Predicted against measured duration of {} of the real run's {} iterations, each with its exact composition ({}).",
            p.iterations.len(),
            p.real_iterations,
            describe_source(&p.source)
        ),
    }))
}

/// Batch size, queue depth and KV blocks used over time, real and simulated.
pub fn timeline_figure(
    dir: &Path,
    size: FigureSize,
    real: &RunData,
    sim: &RunData,
    speed: Option<&DeviceSpeedPanels>,
) -> Result<Option<Figure>> {
    let (Some(rb), Some(sb)) = (&real.batches, &sim.batches) else {
        return Ok(None);
    };
    type Get = fn(&crate::io::records::BatchMetricsRow) -> Option<f64>;
    let series = |rows: &[crate::io::records::BatchMetricsRow], get: Get| -> Vec<(f64, f64)> {
        let mut pts: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|b| Some((b.start_time_ns as f64 / 1e9, get(b)?)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        pts
    };
    let quantities: [(&str, Get); 3] = [
        ("batch size (requests)", |b| Some(f64::from(b.num_requests))),
        ("queue depth (requests)", |b| {
            b.num_waiting_requests.map(f64::from)
        }),
        ("KV blocks used", |b| Some(f64::from(b.num_kv_blocks_used))),
    ];
    type Points = Vec<(f64, f64)>;
    let data: Vec<(&str, Points, Points)> = quantities
        .iter()
        .map(|(label, get)| (*label, series(rb, *get), series(sb, *get)))
        .filter(|(_, r, s)| !r.is_empty() || !s.is_empty())
        .collect();
    if data.is_empty() {
        return Ok(None);
    }
    let mut panels: Vec<Panel<'_>> = data
        .iter()
        .map(|(label, r, s)| Panel {
            y: Axis::linear(*label),
            series: vec![
                XySeries {
                    name: REAL,
                    points: r,
                },
                XySeries {
                    name: SIM,
                    points: s,
                },
            ],
            steps: true,
        })
        .collect();
    if let Some(speed) = speed {
        panels.push(Panel {
            y: Axis::linear(speed.probe_label),
            series: vec![
                XySeries {
                    name: "memory-bound probe",
                    points: &speed.memory_ratio,
                },
                XySeries {
                    name: "quick memory probe (between iterations)",
                    points: &speed.quick_memory_ratio,
                },
                XySeries {
                    name: "compute-bound probe",
                    points: &speed.compute_ratio,
                },
            ],
            steps: false,
        });
        panels.push(Panel {
            y: Axis::linear("CPU time taken (%)"),
            series: vec![
                XySeries {
                    name: "stolen by the hypervisor (of the host)",
                    points: &speed.steal_pct,
                },
                XySeries {
                    name: "run by other processes (of the host)",
                    points: &speed.competing_pct,
                },
                XySeries {
                    name: "our threads waited for a CPU (of wall time)",
                    points: &speed.wait_pct,
                },
            ],
            steps: true,
        });
    }
    let spec = TimelineSpec {
        title: "Engine state over time: real vs simulated".into(),
        x: Axis::linear("time since the trace origin (s)"),
        size,
    };
    let files = timeline(&dir.join("timeline"), &spec, &panels)?;
    Ok(Some(Figure {
        key: "timeline".into(),
        files,
        caption: if speed.is_some() {
            "Per-iteration batch size, waiting requests and KV blocks in use, real and simulated, on the trace's clock; below, the device's speed during the real run: calibration-probe time against the profile's (above 1 = slower than when the bundle was profiled) and what was taken from it: the host's CPU time stolen by the hypervisor or run by other processes, and the time the engine's threads waited for a CPU."
        } else {
            "Per-iteration batch size, waiting requests and KV blocks in use, real and simulated, on the trace's clock."
        }
        .into(),
    }))
}

/// The real run's device-speed timeline as timeline panels (time in s).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpeedPanels {
    /// What the probe ratios are relative to.
    pub probe_label: &'static str,
    pub memory_ratio: Vec<(f64, f64)>,
    /// The quick memory probes between iterations, against the reference's quick ones.
    pub quick_memory_ratio: Vec<(f64, f64)>,
    pub compute_ratio: Vec<(f64, f64)>,
    pub steal_pct: Vec<(f64, f64)>,
    pub competing_pct: Vec<(f64, f64)>,
    pub wait_pct: Vec<(f64, f64)>,
}

impl DeviceSpeedPanels {
    /// The run's probes relative to the bundle's median (or, without a bundle timeline, to
    /// the run's own median), and its host samples.
    pub fn of(run: &DeviceTimeline, bundle: Option<&DeviceTimeline>) -> DeviceSpeedPanels {
        let (reference, probe_label) = match bundle {
            Some(b) => (b.median_levels(), "probe slowdown vs profile (×)"),
            None => (run.median_levels(), "probe slowdown vs run median (×)"),
        };
        let s = |t: i64| t as f64 / 1e9;
        // Quick readings against quick ones where there are enough, as the correction does.
        let quick_reference = bundle
            .unwrap_or(run)
            .quick_median_gb_per_s()
            .unwrap_or(reference.memory_gb_per_s);
        DeviceSpeedPanels {
            probe_label,
            // The probes the correction can use: a kernel whose threads did not run
            // together timed the host's scheduler, not the device.
            memory_ratio: run
                .usable_rates(ProbeKind::Memory)
                .iter()
                .map(|(t, rate)| (s(*t), reference.memory_gb_per_s / rate))
                .collect(),
            quick_memory_ratio: run
                .quick_readings()
                .iter()
                .filter(|q| q.usable)
                .map(|q| (s(q.time_ns), quick_reference / q.memory_gb_per_s))
                .collect(),
            compute_ratio: run
                .usable_rates(ProbeKind::Compute)
                .iter()
                .map(|(t, rate)| (s(*t), reference.compute_gflop_per_s / rate))
                .collect(),
            steal_pct: run
                .host_samples()
                .iter()
                .map(|(t, h)| (s(*t), h.steal_pct))
                .collect(),
            competing_pct: run
                .host_samples()
                .iter()
                .map(|(t, h)| (s(*t), h.competing_cpu_pct))
                .collect(),
            wait_pct: run
                .host_samples()
                .iter()
                .map(|(t, h)| (s(*t), h.run_queue_wait_pct))
                .collect(),
        }
    }
}

/// The attribution as bars: each component's contribution to the busy-time gap, ms.
pub fn attribution_figure(dir: &Path, size: FigureSize, a: &Attribution) -> Result<Option<Figure>> {
    // At most five op classes by themselves; the rest summed, so the labels stay legible.
    const SHOWN: usize = 5;
    let mut categories: Vec<String> = Vec::new();
    let mut values: Vec<f64> = Vec::new();
    for c in a.by_op_class.iter().take(SHOWN) {
        categories.push(c.name.clone());
        values.push(c.diff_ms);
    }
    if a.by_op_class.len() > SHOWN {
        categories.push("other ops".into());
        values.push(a.by_op_class[SHOWN..].iter().map(|c| c.diff_ms).sum());
    }
    if a.by_op_class.is_empty() {
        if let Some(e) = &a.execution {
            categories.push("execution".into());
            values.push(e.diff_ms);
        }
    }
    if let Some(c) = &a.cpu_overhead {
        categories.push("CPU overhead".into());
        values.push(c.diff_ms);
    }
    if let Some(d) = &a.decomposition {
        categories.push("scheduling".into());
        values.push(d.scheduling_ms);
    }
    if categories.is_empty() {
        return Ok(None);
    }
    let names: Vec<&str> = categories.iter().map(String::as_str).collect();
    let spec = FigureSpec::new(
        "Where the gap comes from: simulated − real busy time",
        "component",
        "contribution to the gap (ms)",
    )
    .with_size(size.width_px, size.height_px);
    let files = grouped_bars(
        &dir.join("attribution"),
        &spec,
        &names,
        &[Series {
            name: "simulated − real (ms)",
            values: &values,
        }],
    )?;
    Ok(Some(Figure {
        key: "attribution".into(),
        files,
        caption: format!(
            "Contribution of each source to the difference in busy time over {} of {} real iterations ({}); positive means the simulator spends more time.",
            a.iterations_covered,
            a.real_iterations,
            a.source.as_deref().map_or_else(|| "no per-iteration predictions".into(), describe_source)
        ),
    }))
}

/// Mean iteration time against batch size, real and simulated.
pub fn batch_size_figure(dir: &Path, size: FigureSize, a: &Attribution) -> Result<Option<Figure>> {
    let side = |get: fn(&super::attribution::BatchSizeTiming) -> Option<f64>| -> Vec<(f64, f64)> {
        a.by_batch_size
            .iter()
            .filter_map(|b| Some((f64::from(b.num_requests), get(b)?)))
            .collect()
    };
    let (real, sim) = (side(|b| b.real_mean_ms), side(|b| b.sim_mean_ms));
    if real.is_empty() || sim.is_empty() {
        return Ok(None);
    }
    let spec = FigureSpec::new(
        "Mean iteration time by batch size",
        "batch size (requests in the iteration)",
        "mean iteration time (ms)",
    )
    .with_size(size.width_px, size.height_px);
    let files = line_chart(
        &dir.join("iteration_time_by_batch_size"),
        &spec,
        &[
            XySeries {
                name: REAL,
                points: &real,
            },
            XySeries {
                name: SIM,
                points: &sim,
            },
        ],
    )?;
    Ok(Some(Figure {
        key: "iteration_time_by_batch_size".into(),
        files,
        caption: "Mean duration of the iterations of each batch size in each run, over all iterations; the gap between the lines is the execution-time error at that size, free of scheduling divergence.".into(),
    }))
}
