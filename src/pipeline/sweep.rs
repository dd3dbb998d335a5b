//! Sweeps: every combination of comma-separated override values (`pipeline -m
//! workload.qps=0.5,1,2 model=qwen3_tiny,qwen3_0_6b`) is one study, each in its own run dirs;
//! their comparisons are summarised in `tmp/sweeps/<id>/`: `sweep.csv` (schema `SWEEP`),
//! `sweep_report.md` and error-vs-load figures for P50/P90/P99 of TTFT, TPOT and E2E.
//! Load is the offered rate, and the fraction of capacity where a capacity search of that
//! configuration has completed (`pipeline --capacity`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::analysis::plots::{line_chart, FigureFiles, FigureSpec, XySeries};
use crate::analysis::report_doc::{Cell, Document, FigureRef, Table};
use crate::io::ids::stable_id;
use crate::io::provenance::{utc_now, InputRef};
use crate::io::read_json;
use crate::io::rundir::{prepare_fresh, Stage};
use crate::io::schema::SWEEP;
use crate::io::{write_json, CsvWriter};
use crate::pipeline::{
    capacity, run_study, stat_error, StudyOutcome, SUMMARY_METRICS, SUMMARY_QUANTILES,
};
use crate::stages::Job;
use crate::{Error, Result};

/// A `sweep.csv` value: serializes as the bare value (empty for `None`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
enum Field {
    Text(String),
    Count(u64),
    Number(Option<f64>),
}

/// What one sweep point measured.
#[derive(Debug, Clone)]
struct PointResult {
    overrides: Vec<String>,
    model: String,
    policy: String,
    qps: Option<f64>,
    capacity_qps: Option<f64>,
    compare_dir: PathBuf,
    summary: Value,
}

impl PointResult {
    fn load_fraction(&self) -> Option<f64> {
        Some(self.qps? / self.capacity_qps?)
    }

    fn stat(&self, metric: &str, quantile: &str, field: &str) -> Option<f64> {
        stat_error(&self.summary, metric, quantile, field)
    }

    fn row(&self, point: usize) -> Vec<Field> {
        let mut row = vec![
            Field::Count(point as u64),
            Field::Text(self.overrides.join(" ")),
            Field::Text(self.model.clone()),
            Field::Text(self.policy.clone()),
            Field::Number(self.qps),
            Field::Number(self.capacity_qps),
            Field::Number(self.load_fraction()),
            Field::Text(self.compare_dir.display().to_string()),
            Field::Count(
                self.summary["join"]["requests_compared"]
                    .as_u64()
                    .unwrap_or(0),
            ),
            Field::Number(self.summary["throughput"]["real"]["requests_per_s"].as_f64()),
            Field::Number(self.summary["throughput"]["sim"]["requests_per_s"].as_f64()),
        ];
        for (m, _) in SUMMARY_METRICS {
            for q in SUMMARY_QUANTILES {
                for field in ["real_ms", "sim_ms", "err_pct"] {
                    row.push(Field::Number(self.stat(m, q, field)));
                }
            }
            row.push(Field::Number(
                self.summary["metrics"][m]["paired"]["mape_pct"].as_f64(),
            ));
        }
        row
    }
}

fn point_result(job: &Job, outcome: &StudyOutcome) -> Result<PointResult> {
    let compare_dir = outcome
        .dirs
        .get("compare")
        .cloned()
        .ok_or_else(|| Error::Msg("study without a comparison".into()))?;
    let summary: Value = read_json(compare_dir.join("summary.json"))?;
    Ok(PointResult {
        overrides: job.overrides.clone(),
        model: job.config.model.name.clone(),
        policy: job.config.scheduler.policy.name().to_string(),
        qps: job.config.workload.qps,
        capacity_qps: capacity::lookup(job)?.and_then(|c| c.capacity_qps),
        compare_dir,
        summary,
    })
}

/// Runs every point's study, then writes the sweep summary; returns the sweep dir.
pub fn run(jobs: &[Job]) -> Result<PathBuf> {
    let first = jobs
        .first()
        .ok_or_else(|| Error::InvalidInput("a sweep needs at least one point".into()))?;
    let mut points = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        eprintln!(
            "== sweep point {}/{}: {}",
            i + 1,
            jobs.len(),
            job.overrides.join(" ")
        );
        let outcome = run_study(job)?;
        points.push(point_result(job, &outcome)?);
    }
    let compare_dirs: Vec<String> = points
        .iter()
        .map(|p| p.compare_dir.display().to_string())
        .collect();
    let id = format!("sweep-{}", stable_id(&compare_dirs, "", 12)?);
    let location = first.config.location(Stage::Sweep, id.clone());
    let Some(staging) = prepare_fresh(&location, first.config.output.force)? else {
        return Ok(location.path().join("sweep_report.md"));
    };
    let mut writer = CsvWriter::create_in(staging.path(), &SWEEP)?;
    for (i, p) in points.iter().enumerate() {
        writer.write(&p.row(i))?;
    }
    writer.finish()?;

    let figures = error_vs_load_figures(&staging.path().join("figures"), &points)?;
    let doc = report(&id, &points, &figures, staging.path())?;
    doc.write_markdown(&staging.file("sweep_report.md"))?;
    doc.write_html(&staging.file("sweep_report.html"))?;

    let mut meta = first.for_stage(Stage::Sweep).run_meta(&id)?;
    for (i, p) in points.iter().enumerate() {
        meta.inputs.insert(
            format!("point_{i:03}"),
            InputRef::run(p.overrides.join(" "), &p.compare_dir)?,
        );
    }
    meta.ended_at = utc_now();
    write_json(staging.file("run_meta.json"), &meta)?;
    let dir = staging.commit()?;
    Ok(dir.join("sweep_report.md"))
}

/// The x value of a point: load fraction when every point has one, else the offered rate.
fn x_axis(points: &[PointResult]) -> (&'static str, Vec<Option<f64>>) {
    if points.iter().all(|p| p.load_fraction().is_some()) {
        (
            "load (fraction of measured capacity)",
            points.iter().map(PointResult::load_fraction).collect(),
        )
    } else {
        (
            "offered load (requests/s)",
            points.iter().map(|p| p.qps).collect(),
        )
    }
}

fn error_vs_load_figures(dir: &Path, points: &[PointResult]) -> Result<Vec<(String, FigureFiles)>> {
    let (x_label, xs) = x_axis(points);
    let mut figures = Vec::new();
    for (m, label) in SUMMARY_METRICS {
        // One series per (model, policy, quantile).
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (p, x) in points.iter().zip(&xs) {
            let Some(x) = x else { continue };
            for q in SUMMARY_QUANTILES {
                if let Some(err) = p.stat(m, q, "err_pct") {
                    series
                        .entry(format!("{} {} {}", p.model, p.policy, q.to_uppercase()))
                        .or_default()
                        .push((*x, err));
                }
            }
        }
        if series.is_empty() {
            continue;
        }
        for pts in series.values_mut() {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let xy: Vec<XySeries<'_>> = series
            .iter()
            .map(|(name, pts)| XySeries { name, points: pts })
            .collect();
        let spec = FigureSpec::new(
            format!("{label} error of the simulator vs load"),
            x_label,
            format!("{label} error, 100·(sim − real)/real (%)"),
        );
        let files = line_chart(&dir.join(format!("{m}_error_vs_load")), &spec, &xy)?;
        figures.push((label.to_string(), files));
    }
    Ok(figures)
}

fn report(
    id: &str,
    points: &[PointResult],
    figures: &[(String, FigureFiles)],
    dir: &Path,
) -> Result<Document> {
    let mut doc = Document::new(format!("Sweep {id}"));
    doc.text(format!(
        "{} points. Errors are 100·(sim − real)/real of each percentile; negative means the \
         simulator is faster. Each point's full report is in its comparison directory.",
        points.len()
    ));
    let mut table = Table::new([
        "point",
        "overrides",
        "qps",
        "load",
        "TTFT P50",
        "TTFT P99",
        "TPOT P50",
        "TPOT P99",
        "E2E P50",
        "E2E P99",
    ])?
    .with_caption("Signed % error of the simulator per percentile; empty where not compared or from fewer samples than the percentile needs (P99: 100).");
    for (i, p) in points.iter().enumerate() {
        let pct = |m: &str, q: &str| match p.stat(m, q, "err_pct") {
            Some(v) => Cell::num(v, 1),
            None => Cell::Empty,
        };
        table.push_row([
            Cell::int(i as i64),
            Cell::text(p.overrides.join(" ")),
            p.qps.map_or(Cell::Empty, |q| Cell::num(q, 3)),
            p.load_fraction().map_or(Cell::Empty, |l| Cell::num(l, 2)),
            pct("ttft", "p50"),
            pct("ttft", "p99"),
            pct("tpot", "p50"),
            pct("tpot", "p99"),
            pct("e2e", "p50"),
            pct("e2e", "p99"),
        ])?;
    }
    doc.section("Errors by point");
    doc.table(table);
    doc.section("Error vs load");
    for (label, files) in figures {
        doc.figure(FigureRef::from_files(
            dir,
            files,
            format!("{label}: simulator error at P50/P90/P99 against load."),
        )?);
    }
    Ok(doc)
}
