//! The comparison's results as one value, rendered to `summary.json`, `report.md` and
//! `report.html`. The report opens with a verdict paragraph built from the numbers.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use crate::analysis::report_doc::{Cell, Document, FigureRef, Inline, Table};
use crate::analysis::stats::Stat;
use crate::io::json_schemas::{contract_schema, Contract};
use crate::io::schema::SCHEMA_VERSION;
use crate::Result;

use super::attribution::{describe_source, Attribution};
use super::figures::Figure;
use super::join::{RequestDrops, TokenDrops};
use super::runs::{RunData, RunSource};
use super::statistics::{Metric, MetricComparison, ThroughputComparison};
use super::verdict::{CellVerdict, DistanceCheck, FidelitySummary, StatCell};
use super::DEFINITIONS;

/// What `summary.json` and the report say about one compared run.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct JoinSummary {
    #[schemars(range(min = 1))]
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
    /// The verdict against every real run, over all metrics.
    pub fidelity: FidelitySummary,
    pub throughput: Option<ThroughputComparison>,
    pub attribution: Attribution,
    /// Notes from loading the runs and from the figures.
    pub notes: Vec<String>,
    /// Set when the simulated run's bundle was measured on another device or dtype than the
    /// real runs (allowed by `vidur.cross_device`): the sentence the verdict opens with.
    pub cross_device: Option<String>,
}

/// `summary.json`, as the `compare` stage writes it; its schema
/// (`specs/json/summary.schema.json`) is derived from this type.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CompareSummary<'a> {
    #[schemars(extend("const" = SCHEMA_VERSION))]
    pub schema_version: u32,
    pub compare_id: &'a str,
    pub created_at: &'a str,
    /// The verdict paragraph the report opens with.
    pub verdict: String,
    /// What each compared metric is, by its report name.
    pub definitions: BTreeMap<&'static str, &'static str>,
    pub runs: SummaryRuns<'a>,
    pub join: &'a JoinSummary,
    /// `null` for a metric with no compared value (see `unavailable_metrics`).
    pub metrics: SummaryMetrics<'a>,
    /// Why a metric was not compared, by metric key.
    pub unavailable_metrics: BTreeMap<&'static str, &'a str>,
    pub fidelity: &'a FidelitySummary,
    pub throughput: Option<&'a ThroughputComparison>,
    pub attribution: &'a Attribution,
    pub notes: &'a [String],
    /// Set when the bundle was measured on another device or dtype than the real runs.
    pub cross_device: Option<&'a str>,
}

/// The compared runs.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SummaryRuns<'a> {
    /// The first is the reference; the others only measure noise.
    pub real: &'a [RunInfo],
    pub sim: &'a RunInfo,
}

/// One comparison per metric, by metric key.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SummaryMetrics<'a> {
    pub ttft: Option<&'a MetricComparison>,
    pub tpot: Option<&'a MetricComparison>,
    pub itl: Option<&'a MetricComparison>,
    pub e2e: Option<&'a MetricComparison>,
    pub queue_delay: Option<&'a MetricComparison>,
}

impl CompareSummary<'_> {
    /// The JSON Schema of `summary.json`: exactly what the stage writes.
    pub fn schema() -> serde_json::Value {
        contract_schema::<CompareSummary<'static>>(
            Contract::Write,
            "summary.json",
            "what the compare stage found: statistics, attribution and verdict",
        )
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:+.1}%"))
}

fn cell_opt(v: Option<f64>, decimals: usize) -> Cell {
    v.map_or(Cell::Empty, |v| Cell::num(v, decimals))
}

/// `12.3 [11.9, 12.8]`: a value with its interval.
fn with_interval(value: f64, interval: Option<[f64; 2]>, decimals: usize, signed: bool) -> String {
    let f = |v: f64| {
        if signed {
            format!("{v:+.decimals$}")
        } else {
            format!("{v:.decimals$}")
        }
    };
    match interval {
        Some([lo, hi]) => format!("{} [{}, {}]", f(value), f(lo), f(hi)),
        None => f(value),
    }
}

/// `TTFT P99`.
fn cell_name(metric: Metric, stat: Stat) -> String {
    format!("{} {}", metric.label(), stat.label())
}

/// At most this many cells are named in a verdict sentence; the rest are counted.
const NAMED_CELLS: usize = 4;

/// `a, b, c and 2 more`.
fn name_some(names: &[String]) -> String {
    let shown = names.len().min(NAMED_CELLS);
    let mut text = names[..shown].join(", ");
    if names.len() > shown {
        text.push_str(&format!(" and {} more", names.len() - shown));
    }
    text
}

/// A distance's real-vs-real range as `lo–hi`, or `–` with one real run.
fn range_text(d: &DistanceCheck, decimals: usize) -> String {
    d.real_range.map_or_else(
        || "–".into(),
        |[lo, hi]| format!("{lo:.decimals$}–{hi:.decimals$}"),
    )
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "–",
    }
}

impl ComparisonResults {
    /// The comparison of `metric`, if it was compared.
    pub fn metric(&self, metric: Metric) -> Option<&MetricComparison> {
        self.metrics.iter().find(|m| m.metric == metric)
    }

    /// Every statistic of every compared metric that has a cell, in report order.
    pub fn cells(&self) -> impl Iterator<Item = (Metric, &StatCell)> + '_ {
        self.metrics.iter().flat_map(|m| {
            m.fidelity
                .iter()
                .flat_map(|f| f.cells.values())
                .map(move |c| (m.metric, c))
        })
    }

    /// The verdict paragraph: one sentence per part, in the order [`Self::verdict_sentences`]
    /// gives.
    pub fn verdict(&self) -> String {
        self.verdict_sentences().join(" ")
    }

    /// The verdict's sentences: the simulator against the real runs first, then what
    /// explains the gap. Each part is its own method, so a new part is one more line here.
    pub fn verdict_sentences(&self) -> Vec<String> {
        [
            self.cross_device.clone(),
            self.rerun_sentence(),
            self.not_judged_sentence(),
            self.distribution_sentence(),
            self.per_request_sentence(),
            self.throughput_sentence(),
            self.execution_sentence(),
            self.speed_corrected_sentence(),
            self.decomposition_sentence(),
            self.device_speed_sentence(),
            self.scheduling_sentence(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Requests in every run (those the TTFT verdict resamples), else those compared.
    fn requests_in_every_run(&self) -> usize {
        self.metric(Metric::Ttft)
            .and_then(|m| m.fidelity.as_ref())
            .map_or(self.join.requests_compared, |f| f.groups)
    }

    /// Names of the cells with `verdict`, with their numbers: the farthest from the real
    /// runs first (by noise ratio when there is a band, then by |error|).
    fn described(&self, verdict: CellVerdict) -> Vec<String> {
        let mut cells: Vec<(Metric, &StatCell)> =
            self.cells().filter(|(_, c)| c.verdict == verdict).collect();
        let measured = self.fidelity.noise_measured;
        let key = |c: &StatCell| {
            let e = c.estimate.as_ref();
            let ratio = match e {
                // A band of zero width has no ratio: any distance from it is the largest.
                Some(e) if measured => e.noise_ratio.unwrap_or(f64::INFINITY),
                _ => 0.0,
            };
            (ratio, e.and_then(|e| e.err_pct).map_or(0.0, f64::abs))
        };
        cells.sort_by(|a, b| {
            let (ka, kb) = (key(a.1), key(b.1));
            kb.0.total_cmp(&ka.0).then(kb.1.total_cmp(&ka.1))
        });
        cells
            .into_iter()
            .map(|(m, c)| {
                let name = cell_name(m, c.stat);
                let Some(e) = &c.estimate else { return name };
                let Some(err) = e.err_pct else { return name };
                let mut text = format!("{name} ({err:+.1}%");
                if let Some([lo, hi]) = e.err_ci_pct {
                    text.push_str(&format!(" [{lo:+.1}, {hi:+.1}]"));
                }
                if let Some(r) = e.noise_ratio {
                    text.push_str(&format!(", {r:.1}× the runs' spread"));
                }
                text.push(')');
                text
            })
            .collect()
    }

    /// The lead: how the simulator compares with a rerun of the real engine.
    fn rerun_sentence(&self) -> Option<String> {
        let f = &self.fidelity;
        let c = &f.counts;
        if c.judged() == 0 {
            return Some(
                "No statistic could be judged against the real runs (too few requests in every run)."
                    .into(),
            );
        }
        let n = self.requests_in_every_run();
        let mut text = if f.noise_measured {
            let mut t = format!(
                "Against {} real runs of the same workload ({n} requests in every run), the simulator is as close to the real engine as a rerun is for {} of {} statistics (inside the real runs' band, itself narrower than twice the target)",
                f.num_real_runs, c.indistinguishable, c.judged()
            );
            if c.within_target > 0 {
                t.push_str(&format!(
                    "; {} more {} within target though outside the band",
                    c.within_target,
                    if c.within_target == 1 { "is" } else { "are" }
                ));
            }
            if c.noise_limited > 0 {
                t.push_str(&format!(
                    "; {} {} noise-limited, inside a band too wide to decide: {}",
                    c.noise_limited,
                    if c.noise_limited == 1 { "is" } else { "are" },
                    name_some(&self.described(CellVerdict::NoiseLimited))
                ));
            }
            t
        } else {
            format!(
                "With one real run the real engine's run-to-run noise is unmeasured, so the simulator's error cannot be set against it (compare several real runs: real_run=a,b,c). Against the absolute targets alone ({n} requests), {} of {} statistics {} within target",
                c.within_target,
                c.judged(),
                if c.within_target == 1 { "is" } else { "are" }
            )
        };
        if c.off > 0 {
            text.push_str(&format!(
                "; it is off on {}: {}",
                c.off,
                name_some(&self.described(CellVerdict::Off))
            ));
        }
        text.push('.');
        Some(text)
    }

    /// Cells not judged, and why.
    fn not_judged_sentence(&self) -> Option<String> {
        let c = &self.fidelity.counts;
        let mut parts = Vec::new();
        if c.n_too_small > 0 {
            let names: Vec<String> = self
                .cells()
                .filter(|(_, c)| c.verdict == CellVerdict::NTooSmall)
                .map(|(m, c)| format!("{} (n < {})", cell_name(m, c.stat), c.min_samples))
                .collect();
            parts.push(format!(
                "Not reported, from fewer samples than they need: {}",
                name_some(&names)
            ));
        }
        if c.undefined > 0 {
            let names: Vec<String> = self
                .cells()
                .filter(|(_, c)| c.verdict == CellVerdict::Undefined)
                .map(|(m, c)| cell_name(m, c.stat))
                .collect();
            parts.push(format!(
                "Without a relative error, the real value being 0: {}",
                name_some(&names)
            ));
        }
        (!parts.is_empty()).then(|| format!("{}.", parts.join(". ")))
    }

    /// Distribution level: KS and Wasserstein-1 against the real runs' own distances.
    fn distribution_sentence(&self) -> Option<String> {
        let f = &self.fidelity;
        (f.distribution_metrics > 0).then(|| {
            format!(
                "Distribution-level, the simulator is as close to a real run as another real run is for {} of {} metrics by KS distance and {} of {} by Wasserstein-1.",
                f.ks_within_real_range,
                f.distribution_metrics,
                f.wasserstein_within_real_range,
                f.distribution_metrics
            )
        })
    }

    fn per_request_sentence(&self) -> Option<String> {
        let p = self.metric(Metric::E2e)?.paired.as_ref()?;
        Some(format!(
            "Per request, E2E is off by {:.1}% on average (median {:.1}%) against the reference real run.",
            p.mape_pct, p.median_ape_pct
        ))
    }

    fn throughput_sentence(&self) -> Option<String> {
        let t = self.throughput.as_ref()?;
        Some(format!(
            "Throughput: {:.2} vs {:.2} requests/s ({}).",
            t.real.requests_per_s,
            t.sim.requests_per_s,
            pct(t.requests_per_s_err_pct)
        ))
    }

    /// The execution-time error of the batch replay and its largest source.
    fn execution_sentence(&self) -> Option<String> {
        let a = &self.attribution;
        match (a.dominant_source(), &a.execution, &a.source) {
            (Some(src), Some(exec), Some(how)) => Some(format!(
                "On {} of {} real iterations predicted with their exact composition ({}), model execution time is off by {} and the largest single error is {src}.",
                a.iterations_covered,
                a.real_iterations,
                describe_source(how),
                pct(exec.err_pct)
            )),
            (Some(src), _, _) => Some(format!("The largest error source is {src}.")),
            _ => None,
        }
    }

    /// The busy-time gap split into its parts, or the busy times when it cannot be split.
    fn decomposition_sentence(&self) -> Option<String> {
        let a = &self.attribution;
        if let Some(d) = &a.decomposition {
            return Some(format!(
                "Of the {:+.1} ms busy-time gap, execution-time prediction accounts for {:+.1} ms, CPU overhead for {:+.1} ms and scheduling divergence for {:+.1} ms.",
                d.gap_ms, d.execution_ms, d.cpu_overhead_ms, d.scheduling_ms
            ));
        }
        let b = a.busy.as_ref()?;
        let mut text = format!(
            "Over the whole runs the engine is busy {:.2} s real vs {:.2} s simulated ({})",
            b.real_busy_ms / 1e3,
            b.sim_busy_ms / 1e3,
            pct(b.busy_err_pct)
        );
        match a.same_batch_size_err_pct() {
            Some(e) => text.push_str(&format!(
                ", and at equal batch size simulated iterations are {:.1}% {} than real ones.",
                e.abs(),
                if e >= 0.0 { "longer" } else { "shorter" }
            )),
            None => text.push('.'),
        }
        Some(text)
    }

    /// The execution-time error with predictions following the device's measured speed.
    fn speed_corrected_sentence(&self) -> Option<String> {
        let a = &self.attribution;
        let (raw, c) = (a.execution.as_ref()?, a.speed_corrected.as_ref()?);
        Some(format!(
            "Corrected for the device's measured speed during the real run, execution time is off by {} instead of {}.",
            pct(c.execution.err_pct),
            pct(raw.err_pct)
        ))
    }

    fn device_speed_sentence(&self) -> Option<String> {
        let d = self
            .attribution
            .device_speed
            .as_ref()
            .filter(|d| d.real_slower_pct.abs() >= 1.0)?;
        Some(format!(
            "The device itself ran a fixed reference iteration {:.1}% {} around the real run than when the bundle was profiled ({:.1} vs {:.1} ms); a few forwards at a run's ends are a weak guide to its speed throughout (docs/ground_truth.md).",
            d.real_slower_pct.abs(),
            if d.real_slower_pct > 0.0 { "slower" } else { "faster" },
            d.real_reference_ms,
            d.profile_reference_ms
        ))
    }

    fn scheduling_sentence(&self) -> Option<String> {
        let s = self.attribution.scheduling.as_ref()?;
        Some(match s.first_divergence_ms {
            Some(t) => format!(
                "The two runs form identical batches {} and diverge at {:.0} ms; {} of {} iterations differ.",
                match s.identical_prefix {
                    0 => "in no iteration".to_string(),
                    1 => "for the first iteration".to_string(),
                    n => format!("for the first {n} iterations"),
                },
                t,
                s.differing_iterations,
                s.real_iterations.max(s.sim_iterations)
            ),
            None => "Both runs form identical batches throughout.".into(),
        })
    }

    /// `summary.json` content.
    pub fn summary<'s>(&'s self, created_at: &'s str) -> CompareSummary<'s> {
        let metric = |m| self.metric(m);
        CompareSummary {
            schema_version: SCHEMA_VERSION,
            compare_id: &self.compare_id,
            created_at,
            verdict: self.verdict(),
            definitions: DEFINITIONS.into_iter().collect(),
            runs: SummaryRuns {
                real: &self.real_runs,
                sim: &self.sim_run,
            },
            join: &self.join,
            metrics: SummaryMetrics {
                ttft: metric(Metric::Ttft),
                tpot: metric(Metric::Tpot),
                itl: metric(Metric::Itl),
                e2e: metric(Metric::E2e),
                queue_delay: metric(Metric::QueueDelay),
            },
            unavailable_metrics: self
                .unavailable
                .iter()
                .map(|(m, why)| (m.key(), why.as_str()))
                .collect(),
            fidelity: &self.fidelity,
            throughput: self.throughput.as_ref(),
            attribution: &self.attribution,
            notes: &self.notes,
            cross_device: self.cross_device.as_deref(),
        }
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

        doc.section("Statistic by statistic");
        doc.table(self.verdict_table()?);
        for m in Metric::ALL {
            place(&mut doc, &format!("error_bars_{}", m.key()))?;
        }

        doc.section("Error table");
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

        doc.section("Method");
        doc.bullets(self.method().into_iter().map(|l| vec![Inline::text(l)]));

        doc.section("Definitions");
        doc.bullets(
            DEFINITIONS
                .iter()
                .map(|(k, v)| vec![Inline::strong(*k), Inline::text(format!(": {v}."))]),
        );
        doc.bullets([
            vec![Inline::text("Statistics are computed on the paired samples: the requests (tokens, for ITL) both runs produced, so both sides summarise the same requests.")],
            vec![Inline::text("MAPE / median APE: mean / median of the per-request absolute relative errors; bias: mean of the signed ones (positive = simulator slower).")],
            vec![Inline::text("KS: two-sample Kolmogorov–Smirnov statistic (scipy's ks_2samp); W1: Wasserstein-1 distance between two distributions, in ms.")],
        ]);
        if !self.notes.is_empty() {
            doc.section("Notes");
            doc.bullets(self.notes.iter().map(|n| vec![Inline::text(n.clone())]));
        }
        Ok(doc)
    }

    /// How the verdict was computed, one sentence each (the report's method section).
    pub fn method(&self) -> Vec<String> {
        let f = &self.fidelity;
        let t = &f.targets_pct;
        let confidence = 100.0 * f.bootstrap.confidence;
        vec![
            format!(
                "Real value: each statistic of every real run's values pooled ({} run(s)), over the requests (ITL: token gaps) present in every run and in the simulated run. Real band: the smallest and largest of the runs' own statistics; with one run there is no band and the noise is unmeasured.",
                f.num_real_runs
            ),
            format!(
                "Confidence intervals ({confidence:.0} %): percentile bootstrap, {} resamples of the requests with replacement (ChaCha8, seed {}, one stream per metric). A drawn request brings every run's and the simulator's values, and for ITL all its token gaps, so the interval of the error is a paired one and the runs' correlation is kept.",
                f.bootstrap.resamples, f.bootstrap.seed
            ),
            "Error: 100 · (sim − real) / real against the pooled real value. Noise ratio: |sim − real| / (band's max − min), the simulator's distance in units of the real runs' spread.".into(),
            format!(
                "Verdict: indistinguishable = inside the band and the band narrower than twice the target; noise-limited = inside a band too wide to decide (not a pass); within target = outside the band, |error| ≤ target; off = neither. Targets (|error|, %): mean {}, P50 {}, P90 {}, P95 {}, P99 {} (compare.targets).",
                t.mean, t.p50, t.p90, t.p95, t.p99
            ),
            format!(
                "A percentile is reported only from samples that put at least one value beyond it — n · (1 − q) ≥ 1: P99 from {}, P95 from {}, P90 from {}, P50 and the mean from {} — else \"n too small\".",
                Stat::P99.min_samples(),
                Stat::P95.min_samples(),
                Stat::P90.min_samples(),
                Stat::P50.min_samples()
            ),
            "Distribution level: the KS statistic and the Wasserstein-1 distance between the simulated run and each real run (mean over runs), against the same distances between every pair of real runs; \"as close as a rerun\" when the mean is at most the largest real-vs-real distance.".into(),
        ]
    }

    fn verdict_table(&self) -> Result<Table> {
        let confidence = 100.0 * self.fidelity.bootstrap.confidence;
        let mut t = Table::new([
            "metric".to_string(),
            "statistic".into(),
            "n".into(),
            format!("real (ms) [{confidence:.0} % CI]"),
            "real band (ms)".into(),
            "band (%)".into(),
            "sim (ms)".into(),
            format!("error (%) [{confidence:.0} % CI]"),
            "noise ratio".into(),
            "target (%)".into(),
            "verdict".into(),
        ])?
        .with_caption("The simulator against every real run: the pooled real value with its bootstrap interval, the band of the runs' own values, the simulator's error with its interval, and the error in units of the band's width.");
        for m in &self.metrics {
            let Some(f) = &m.fidelity else { continue };
            for stat in Stat::ALL {
                let c = f.cell(stat);
                let mut row = vec![
                    Cell::text(m.metric.label()),
                    Cell::text(stat.label()),
                    Cell::int(f.count as i64),
                ];
                match &c.estimate {
                    Some(e) => row.extend([
                        Cell::text(with_interval(e.real_ms, Some(e.real_ci_ms), 3, false)),
                        e.real_band_ms.map_or(Cell::text("unmeasured"), |[lo, hi]| {
                            Cell::text(format!("{lo:.3}–{hi:.3}"))
                        }),
                        cell_opt(e.band_width_pct, 1),
                        Cell::num(e.sim_ms, 3),
                        e.err_pct.map_or(Cell::Empty, |err| {
                            Cell::text(with_interval(err, e.err_ci_pct, 1, true))
                        }),
                        cell_opt(e.noise_ratio, 2),
                    ]),
                    None => row.extend(std::iter::repeat_n(Cell::Empty, 6)),
                }
                row.push(Cell::num(c.target_pct, 1));
                row.push(Cell::text(match c.verdict {
                    CellVerdict::NTooSmall => {
                        format!("n too small (needs ≥ {})", c.min_samples)
                    }
                    v => v.label().to_string(),
                }));
                t.push_row(row)?;
            }
        }
        Ok(t)
    }

    fn distribution_table(&self) -> Result<Table> {
        let mut t = Table::new([
            "metric",
            "MAPE (%)",
            "median APE (%)",
            "bias (%)",
            "KS D sim–real",
            "KS D real–real",
            "W1 sim–real (ms)",
            "W1 real–real (ms)",
            "as close as a rerun (KS / W1)",
        ])?
        .with_caption("Per-request errors against the reference real run (MAPE, median APE, bias), and distribution distances: the simulated run against each real run (mean), beside the range of distances between the real runs themselves.");
        for m in &self.metrics {
            let paired = m.paired.as_ref();
            let (ks, w1, close) = match &m.fidelity {
                Some(f) => {
                    let d = &f.distribution;
                    (
                        (
                            Cell::num(d.ks.sim_mean, 3),
                            Cell::text(range_text(&d.ks, 3)),
                        ),
                        (
                            Cell::num(d.wasserstein_ms.sim_mean, 3),
                            Cell::text(range_text(&d.wasserstein_ms, 3)),
                        ),
                        Cell::text(format!(
                            "{} / {}",
                            yes_no(d.ks.within_real_range),
                            yes_no(d.wasserstein_ms.within_real_range)
                        )),
                    )
                }
                None => (
                    (Cell::num(m.ks.statistic, 3), Cell::text("–")),
                    (Cell::num(m.wasserstein_ms, 3), Cell::text("–")),
                    Cell::text("–"),
                ),
            };
            t.push_row([
                Cell::text(m.metric.label()),
                cell_opt(paired.map(|p| p.mape_pct), 1),
                cell_opt(paired.map(|p| p.median_ape_pct), 1),
                cell_opt(paired.map(|p| p.mean_signed_pct), 1),
                ks.0,
                ks.1,
                w1.0,
                w1.1,
                close,
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
                "Device speed: a fixed reference iteration (32-token prefill + 1 decode) took {:.1} ms when the bundle was profiled and {:.1} ms around the real run ({:+.1}%); (a) includes this drift.",
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
            None => "(a) corrected for the device's speed: not available (the real run or the bundle has no device_speed.csv, or the run is on a GPU, whose speed the calibration probes on the host's CPU do not measure).".into(),
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
