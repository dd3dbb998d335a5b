//! The comparison's results as one value, rendered to `summary.json`, `report.md` and
//! `report.html`. The report opens with a verdict paragraph built from the numbers.

use serde::Serialize;

use crate::analysis::report_doc::{Cell, Document, FigureRef, Inline, Table};
use crate::Result;

use super::attribution::{describe_source, Attribution};
use super::figures::Figure;
use super::join::{RequestDrops, TokenDrops};
use super::runs::{RunData, RunSource};
use super::statistics::{Metric, MetricComparison, ThroughputComparison};
use super::DEFINITIONS;

/// What `summary.json` and the report say about one compared run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    pub run_id: String,
    pub path: String,
    pub source: RunSource,
    pub backend: String,
    pub model: Option<String>,
    pub workload_id: Option<String>,
    pub kv_blocks: Option<u64>,
    pub num_requests: usize,
    pub has_tokens: bool,
    pub has_iterations: bool,
}

impl RunInfo {
    /// The facts of a loaded run.
    pub fn of(run: &RunData) -> Self {
        RunInfo {
            run_id: run.identity.run_id.clone(),
            path: run.path.display().to_string(),
            source: run.source,
            backend: run.backend.clone(),
            model: run.identity.model.clone(),
            workload_id: run.identity.workload_id.clone(),
            kv_blocks: run.identity.kv_blocks,
            num_requests: run.requests.len(),
            has_tokens: run.tokens.is_some(),
            has_iterations: run.batches.is_some(),
        }
    }
}

/// How the two runs were aligned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JoinSummary {
    pub requests_compared: usize,
    pub requests_dropped: usize,
    pub request_drops: RequestDrops,
    /// `None` when a side has no token rows.
    pub tokens_compared: Option<usize>,
    pub token_drops: Option<TokenDrops>,
    /// Every drop reason as a sentence.
    pub explanations: Vec<String>,
}

/// Everything a comparison found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparisonResults {
    pub compare_id: String,
    /// The first is the reference; the others only measure noise.
    pub real_runs: Vec<RunInfo>,
    pub sim_run: RunInfo,
    pub join: JoinSummary,
    /// Metrics with at least one compared value, in [`Metric::ALL`] order.
    pub metrics: Vec<MetricComparison>,
    /// Metrics that could not be compared, with the reason.
    pub unavailable: Vec<(Metric, String)>,
    pub throughput: Option<ThroughputComparison>,
    pub attribution: Attribution,
    /// Notes from loading the runs and from the figures.
    pub notes: Vec<String>,
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:+.1}%"))
}

fn within(err: Option<f64>) -> String {
    match err {
        Some(e) if e.abs() < 0.05 => "within 0.1%".into(),
        Some(e) => format!(
            "within {:.1}% ({})",
            e.abs(),
            if e > 0.0 {
                "simulator slower"
            } else {
                "simulator faster"
            }
        ),
        None => "not comparable (real value 0)".into(),
    }
}

fn cell_opt(v: Option<f64>, decimals: usize) -> Cell {
    v.map_or(Cell::Empty, |v| Cell::num(v, decimals))
}

impl ComparisonResults {
    /// The comparison of `metric`, if it was compared.
    pub fn metric(&self, metric: Metric) -> Option<&MetricComparison> {
        self.metrics.iter().find(|m| m.metric == metric)
    }

    /// The verdict paragraph: headline percentiles, noise, and the dominant error source.
    pub fn verdict(&self) -> String {
        let mut parts = Vec::new();
        for (metric, stat, name) in [
            (Metric::Ttft, "p50", "P50 TTFT"),
            (Metric::Ttft, "p99", "P99 TTFT"),
            (Metric::Tpot, "p50", "P50 TPOT"),
            (Metric::E2e, "p50", "P50 E2E"),
            (Metric::E2e, "p99", "P99 E2E"),
        ] {
            if let Some(e) = self.metric(metric).and_then(|m| m.stat_error(stat)) {
                parts.push(format!("{name} {}", within(e.err_pct)));
            }
        }
        let mut text = if parts.is_empty() {
            "No latency metric could be compared.".to_string()
        } else {
            format!(
                "Against the real engine ({} requests compared), the simulator reproduces {}.",
                self.join.requests_compared,
                parts.join(", ")
            )
        };
        if let Some(p) = self.metric(Metric::E2e).and_then(|m| m.paired.as_ref()) {
            text.push_str(&format!(
                " Per request, E2E is off by {:.1}% on average (median {:.1}%).",
                p.mape_pct, p.median_ape_pct
            ));
        }
        if let Some(noise) = self.metric(Metric::E2e).and_then(|m| m.noise.as_ref()) {
            let p50 = noise
                .max_abs_stat_diff_pct
                .get("p50")
                .copied()
                .unwrap_or(0.0);
            let p99 = noise
                .max_abs_stat_diff_pct
                .get("p99")
                .copied()
                .unwrap_or(0.0);
            text.push_str(&format!(
                " For scale, the real engine itself varies by up to {p50:.1}% (P50 E2E) and {p99:.1}% (P99 E2E) across {} repeated runs.",
                noise.num_other_runs + 1
            ));
        }
        if let Some(t) = &self.throughput {
            text.push_str(&format!(
                " Throughput: {:.2} vs {:.2} requests/s ({}).",
                t.real.requests_per_s,
                t.sim.requests_per_s,
                pct(t.requests_per_s_err_pct)
            ));
        }
        let a = &self.attribution;
        match (a.dominant_source(), &a.execution, &a.source) {
            (Some(src), Some(exec), Some(how)) => text.push_str(&format!(
                " On {} of {} real iterations predicted with their exact composition ({}), model execution time is off by {} and the largest single error is {src}.",
                a.iterations_covered,
                a.real_iterations,
                describe_source(how),
                pct(exec.err_pct)
            )),
            (Some(src), _, _) => text.push_str(&format!(" The largest error source is {src}.")),
            _ => {}
        }
        if let Some(d) = &a.decomposition {
            text.push_str(&format!(
                " Of the {:+.1} ms busy-time gap, execution-time prediction accounts for {:+.1} ms, CPU overhead for {:+.1} ms and scheduling divergence for {:+.1} ms.",
                d.gap_ms, d.execution_ms, d.cpu_overhead_ms, d.scheduling_ms
            ));
        } else if let Some(b) = &a.busy {
            text.push_str(&format!(
                " Over the whole runs the engine is busy {:.2} s real vs {:.2} s simulated ({})",
                b.real_busy_ms / 1e3,
                b.sim_busy_ms / 1e3,
                pct(b.busy_err_pct)
            ));
            match a.same_batch_size_err_pct() {
                Some(e) => text.push_str(&format!(
                    ", and at equal batch size simulated iterations are {:.1}% {} than real ones.",
                    e.abs(),
                    if e >= 0.0 { "longer" } else { "shorter" }
                )),
                None => text.push('.'),
            }
        }
        if let (Some(raw), Some(c)) = (&a.execution, &a.speed_corrected) {
            text.push_str(&format!(
                " Corrected for the device's measured speed during the real run, execution time is off by {} instead of {}.",
                pct(c.execution.err_pct),
                pct(raw.err_pct)
            ));
        }
        if let Some(d) = a
            .device_speed
            .as_ref()
            .filter(|d| d.real_slower_pct.abs() >= 1.0)
        {
            text.push_str(&format!(
                " The device itself ran a fixed reference iteration {:.1}% {} during the real run than when the bundle was profiled ({:.1} vs {:.1} ms), which moves every prediction by about as much.",
                d.real_slower_pct.abs(),
                if d.real_slower_pct > 0.0 { "slower" } else { "faster" },
                d.real_reference_ms,
                d.profile_reference_ms
            ));
        }
        if let Some(s) = &self.attribution.scheduling {
            match s.first_divergence_ms {
                Some(t) => text.push_str(&format!(
                    " The two runs form identical batches {} and diverge at {:.0} ms; {} of {} iterations differ.",
                    match s.identical_prefix {
                        0 => "in no iteration".to_string(),
                        1 => "for the first iteration".to_string(),
                        n => format!("for the first {n} iterations"),
                    },
                    t,
                    s.differing_iterations,
                    s.real_iterations.max(s.sim_iterations)
                )),
                None => text.push_str(" Both runs form identical batches throughout."),
            }
        }
        text
    }

    /// `summary.json` content.
    pub fn summary_json(&self, created_at: &str) -> Result<serde_json::Value> {
        let metrics: serde_json::Map<String, serde_json::Value> = Metric::ALL
            .iter()
            .map(|&m| {
                let value = match self.metric(m) {
                    Some(c) => to(c)?,
                    None => serde_json::Value::Null,
                };
                Ok((m.key().to_string(), value))
            })
            .collect::<Result<_>>()?;
        let unavailable: serde_json::Map<String, serde_json::Value> = self
            .unavailable
            .iter()
            .map(|(m, why)| (m.key().to_string(), serde_json::Value::String(why.clone())))
            .collect();
        Ok(serde_json::json!({
            "schema_version": crate::io::schema::SCHEMA_VERSION,
            "compare_id": self.compare_id,
            "created_at": created_at,
            "verdict": self.verdict(),
            "definitions": DEFINITIONS.iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string()))).collect::<serde_json::Map<_, _>>(),
            "runs": {"real": to(&self.real_runs)?, "sim": to(&self.sim_run)?},
            "join": to(&self.join)?,
            "metrics": metrics,
            "unavailable_metrics": unavailable,
            "throughput": match &self.throughput { Some(t) => to(t)?, None => serde_json::Value::Null },
            "attribution": to(&self.attribution)?,
            "notes": self.notes,
        }))
    }

    /// The report document; `figures` are placed in their sections.
    pub fn document(&self, doc_dir: &std::path::Path, figures: &[Figure]) -> Result<Document> {
        let mut doc = Document::new(format!(
            "Real vs simulated: {} against {}",
            self.sim_run.run_id,
            self.real_runs.first().map_or("", |r| r.run_id.as_str())
        ));
        doc.section("Verdict");
        doc.paragraph([Inline::text(self.verdict())]);

        let figure = |key: &str| figures.iter().find(|f| f.key == key);
        let place = |doc: &mut Document, key: &str| -> Result<()> {
            if let Some(f) = figure(key) {
                doc.figure(FigureRef::from_files(doc_dir, &f.files, f.caption.clone())?);
            }
            Ok(())
        };

        doc.section("Error table");
        doc.table(self.percentile_table()?);
        doc.table(self.distribution_table()?);
        if !self.unavailable.is_empty() {
            doc.bullets(self.unavailable.iter().map(|(m, why)| {
                vec![
                    Inline::strong(m.label()),
                    Inline::text(format!(" not compared: {why}")),
                ]
            }));
        }
        if let Some(t) = &self.throughput {
            let mut table = Table::new(["", "real", "simulated", "error (%)"])?.with_caption(
                "Throughput over each run's span (first arrival to last completion).",
            );
            table.push_row([
                Cell::text("requests/s"),
                Cell::num(t.real.requests_per_s, 3),
                Cell::num(t.sim.requests_per_s, 3),
                cell_opt(t.requests_per_s_err_pct, 1),
            ])?;
            table.push_row([
                Cell::text("output tokens/s"),
                Cell::num(t.real.output_tokens_per_s, 1),
                Cell::num(t.sim.output_tokens_per_s, 1),
                cell_opt(t.output_tokens_per_s_err_pct, 1),
            ])?;
            table.push_row([
                Cell::text("span (s)"),
                Cell::num(t.real.span_s, 3),
                Cell::num(t.sim.span_s, 3),
                Cell::Empty,
            ])?;
            doc.table(table);
        }

        doc.section("Where the gap comes from");
        self.attribution_blocks(&mut doc)?;
        place(&mut doc, "attribution")?;
        place(&mut doc, "iteration_time")?;
        place(&mut doc, "iteration_time_by_batch_size")?;
        place(&mut doc, "timeline")?;

        doc.section("Distributions");
        for m in [
            Metric::Ttft,
            Metric::Tpot,
            Metric::Itl,
            Metric::E2e,
            Metric::QueueDelay,
        ] {
            place(&mut doc, &format!("cdf_{}", m.key()))?;
        }
        doc.section("Per-request agreement");
        for m in [Metric::Ttft, Metric::Tpot, Metric::E2e] {
            place(&mut doc, &format!("scatter_{}", m.key()))?;
            place(&mut doc, &format!("error_hist_{}", m.key()))?;
        }

        doc.section("Runs compared");
        let mut runs = Table::new([
            "role",
            "run",
            "source",
            "backend",
            "requests",
            "model",
            "workload",
            "KV blocks",
        ])?;
        let row = |role: &str, r: &RunInfo| {
            [
                Cell::text(role),
                Cell::text(r.run_id.clone()),
                Cell::text(r.source.describe()),
                Cell::text(r.backend.clone()),
                Cell::int(r.num_requests as i64),
                Cell::text(r.model.clone().unwrap_or_else(|| "–".into())),
                Cell::text(r.workload_id.clone().unwrap_or_else(|| "–".into())),
                r.kv_blocks.map_or(Cell::text("–"), |b| Cell::int(b as i64)),
            ]
        };
        for (i, r) in self.real_runs.iter().enumerate() {
            runs.push_row(row(
                if i == 0 {
                    "real (reference)"
                } else {
                    "real (noise)"
                },
                r,
            ))?;
        }
        runs.push_row(row("simulated", &self.sim_run))?;
        doc.table(runs);
        let mut alignment = vec![format!(
            "{} request(s) compared, {} dropped.",
            self.join.requests_compared, self.join.requests_dropped
        )];
        if let Some(n) = self.join.tokens_compared {
            alignment.push(format!("{n} token(s) compared."));
        }
        alignment.extend(self.join.explanations.iter().cloned());
        doc.bullets(alignment.into_iter().map(|s| vec![Inline::text(s)]));
        for r in self.real_runs.iter().chain([&self.sim_run]) {
            doc.paragraph([
                Inline::text(format!("{}: ", r.run_id)),
                Inline::code(r.path.clone()),
            ]);
        }

        doc.section("Definitions");
        doc.bullets(
            DEFINITIONS
                .iter()
                .map(|(k, v)| vec![Inline::strong(*k), Inline::text(format!(": {v}."))]),
        );
        doc.bullets([
            vec![Inline::text("Statistics are computed on the paired samples: the requests (tokens, for ITL) both runs produced, so both sides summarise the same requests.")],
            vec![Inline::text("MAPE / median APE: mean / median of the per-request absolute relative errors; bias: mean of the signed ones (positive = simulator slower).")],
            vec![Inline::text("KS: two-sample Kolmogorov–Smirnov statistic and p-value (scipy's ks_2samp, method auto); W1: Wasserstein-1 distance between the two distributions, in ms.")],
            vec![Inline::text("Noise: with several real runs, the largest difference between the first real run and any other, computed exactly as the simulator's error.")],
        ]);
        if !self.notes.is_empty() {
            doc.section("Notes");
            doc.bullets(self.notes.iter().map(|n| vec![Inline::text(n.clone())]));
        }
        Ok(doc)
    }

    fn percentile_table(&self) -> Result<Table> {
        let mut t = Table::new([
            "metric",
            "n",
            "real P50 (ms)",
            "sim P50 (ms)",
            "P50 err (%)",
            "real P90 (ms)",
            "sim P90 (ms)",
            "P90 err (%)",
            "real P99 (ms)",
            "sim P99 (ms)",
            "P99 err (%)",
            "mean err (%)",
        ])?
        .with_caption("Summary statistics of real and simulated latencies; error = 100 · (sim − real) / real.");
        for m in &self.metrics {
            let e = |k: &str| m.stat_error(k);
            let num = |k: &str, real: bool| {
                e(k).map_or(Cell::Empty, |s| {
                    Cell::num(if real { s.real_ms } else { s.sim_ms }, 3)
                })
            };
            let err = |k: &str| cell_opt(e(k).and_then(|s| s.err_pct), 1);
            t.push_row([
                Cell::text(m.metric.label()),
                Cell::int(m.count as i64),
                num("p50", true),
                num("p50", false),
                err("p50"),
                num("p90", true),
                num("p90", false),
                err("p90"),
                num("p99", true),
                num("p99", false),
                err("p99"),
                err("mean"),
            ])?;
        }
        Ok(t)
    }

    fn distribution_table(&self) -> Result<Table> {
        let mut t = Table::new([
            "metric",
            "MAPE (%)",
            "median APE (%)",
            "bias (%)",
            "KS D",
            "KS p",
            "W1 (ms)",
            "noise: max |ΔP50| (%)",
            "noise: max |ΔP99| (%)",
            "noise: max MAPE (%)",
        ])?
        .with_caption("Per-request errors, distribution distances, and the real engine's run-to-run noise (empty with a single real run).");
        for m in &self.metrics {
            let noise = m.noise.as_ref();
            let n = |k: &str| {
                cell_opt(
                    noise.and_then(|n| n.max_abs_stat_diff_pct.get(k).copied()),
                    1,
                )
            };
            t.push_row([
                Cell::text(m.metric.label()),
                cell_opt(m.paired.as_ref().map(|p| p.mape_pct), 1),
                cell_opt(m.paired.as_ref().map(|p| p.median_ape_pct), 1),
                cell_opt(m.paired.as_ref().map(|p| p.mean_signed_pct), 1),
                Cell::num(m.ks.statistic, 3),
                Cell::num(m.ks.p_value, 3),
                Cell::num(m.wasserstein_ms, 3),
                n("p50"),
                n("p99"),
                cell_opt(noise.and_then(|n| n.max_mape_pct), 1),
            ])?;
        }
        Ok(t)
    }

    fn attribution_blocks(&self, doc: &mut Document) -> Result<()> {
        let a = &self.attribution;
        let mut lines = Vec::new();
        match &a.source {
            Some(src) => lines.push(format!(
                "Per-iteration predictions: {}, covering {} of {} real iterations.",
                describe_source(src),
                a.iterations_covered,
                a.real_iterations
            )),
            None => lines.push("No per-iteration predictions were available.".into()),
        }
        if let Some(e) = &a.execution {
            lines.push(format!(
                "(a) Execution-time prediction: {:.1} ms predicted vs {:.1} ms measured ({}), i.e. {:+.1}% of busy time.",
                e.predicted_ms,
                e.measured_ms,
                pct(e.err_pct),
                e.diff_pct_of_busy
            ));
        }
        lines.push(match &a.device_speed {
            Some(d) => format!(
                "Device speed: a fixed reference iteration (32-token prefill + 1 decode) took {:.1} ms when the bundle was profiled and {:.1} ms before the real run ({:+.1}%); (a) includes this drift.",
                d.profile_reference_ms, d.real_reference_ms, d.real_slower_pct
            ),
            None => "Device speed: not comparable (the real run or the bundle did not record the reference iteration), so a change of the machine's speed cannot be told from (a).".into(),
        });
        lines.push(match &a.speed_corrected {
            Some(c) => format!(
                "(a) corrected for the device's measured speed (calibration probes and host CPU load during the real run against during profiling; never the run's own timings): {:.1} ms predicted vs {:.1} ms measured ({}), median |error| of an iteration {}{}.",
                c.execution.predicted_ms,
                c.execution.measured_ms,
                pct(c.execution.err_pct),
                c.iteration_median_abs_err_pct.map_or("n/a".into(), |e| format!("{e:.1}%")),
                c.drift_explains_pct.map_or(String::new(), |e| format!("; the device's speed explains {e:.0}% of the raw execution-time gap"))
            ),
            None => "(a) corrected for the device's speed: not available (the real run or the bundle has no device_speed.csv).".into(),
        });
        if let Some(c) = &a.cpu_overhead {
            lines.push(format!(
                "(b) CPU overhead: {:.1} ms predicted vs {:.1} ms measured ({}), i.e. {:+.1}% of busy time.",
                c.predicted_ms,
                c.measured_ms,
                pct(c.err_pct),
                c.diff_pct_of_busy
            ));
        }
        if let Some(s) = &a.scheduling {
            lines.push(format!(
                "(c) Scheduling divergence: {} real vs {} simulated iterations; identical for the first {}; {} differ ({:.0}%){} (compared by {}).",
                s.real_iterations,
                s.sim_iterations,
                s.identical_prefix,
                s.differing_iterations,
                100.0 * s.differing_fraction,
                s.first_divergence_ms
                    .map(|t| format!(", first at {t:.1} ms"))
                    .unwrap_or_default(),
                s.compared_by
            ));
        }
        if let Some(b) = &a.busy {
            lines.push(format!(
                "Busy time (Σ iteration durations): {:.1} ms real over {} iterations ({:.2} ms each) vs {:.1} ms simulated over {} ({:.2} ms each), {}.",
                b.real_busy_ms,
                b.real_iterations,
                b.real_mean_iteration_ms,
                b.sim_busy_ms,
                b.sim_iterations,
                b.sim_mean_iteration_ms,
                pct(b.busy_err_pct)
            ));
        }
        if let Some(e) = a.same_batch_size_err_pct() {
            lines.push(format!(
                "At equal batch size, simulated iterations are {:.1}% {} than real ones (per-size difference of the mean iteration time, weighted by the real run's iterations; figure below).",
                e.abs(),
                if e >= 0.0 { "longer" } else { "shorter" }
            ));
        }
        if let Some(m) = a.iteration_median_abs_err_pct {
            lines.push(format!("Median |error| of a predicted iteration: {m:.1}%."));
        }
        lines.extend(a.notes.iter().cloned());
        doc.bullets(lines.into_iter().map(|l| vec![Inline::text(l)]));
        if let Some(d) = &a.decomposition {
            let mut t = Table::new([
                "component",
                "contribution (ms)",
                "share of real busy time (%)",
            ])?
            .with_caption(
                "Exact split of the busy-time gap: Σ simulated − Σ real iteration durations.",
            );
            let share = |v: f64| {
                if d.real_busy_ms > 0.0 {
                    100.0 * v / d.real_busy_ms
                } else {
                    0.0
                }
            };
            for (name, v) in [
                ("(a) execution-time prediction", d.execution_ms),
                ("(b) CPU overhead", d.cpu_overhead_ms),
                ("(c) scheduling divergence", d.scheduling_ms),
                ("total gap", d.gap_ms),
            ] {
                t.push_row([Cell::text(name), Cell::num(v, 2), Cell::num(share(v), 2)])?;
            }
            doc.table(t);
        }
        if !a.by_op_class.is_empty() {
            let mut t = Table::new([
                "op class",
                "measured (ms)",
                "predicted (ms)",
                "difference (ms)",
                "error (%)",
                "share of busy time (%)",
            ])?
            .with_caption(
                "Execution-time error by op class over the covered iterations, largest first.",
            );
            for c in &a.by_op_class {
                t.push_row([
                    Cell::text(c.name.clone()),
                    Cell::num(c.measured_ms, 2),
                    Cell::num(c.predicted_ms, 2),
                    Cell::num(c.diff_ms, 2),
                    cell_opt(c.err_pct, 1),
                    Cell::num(c.diff_pct_of_busy, 2),
                ])?;
            }
            doc.table(t);
        }
        Ok(())
    }
}

/// `serde_json::to_value` with the library's error type.
fn to<T: Serialize + ?Sized>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value)
        .map_err(|e| crate::Error::InvalidInput(format!("not serializable to JSON: {e}")))
}
