//! The fidelity benchmark: is the simulator distinguishable from running the real engine
//! again? At fixed fractions of the real engine's measured capacity, per replica scheduler,
//! the simulator's P50/P90/P99 TTFT, TPOT and E2E are set against `real_repeats` real runs
//! of the same workload, and every cell gets the comparison's verdict
//! ([`crate::analysis::compare::verdict`]): indistinguishable, noise-limited, within target
//! or off, with the error's bootstrap interval, the real runs' band and the noise ratio.
//!
//! The points run `fidelity.workload` (a `workload` group option; 200 short requests by
//! default, so that P99 is read from 100 or more samples and a real run takes minutes), and
//! refuse a workload of fewer than `fidelity.min_requests` requests. For each policy of
//! `fidelity.policies`: a capacity search ([`capacity`]) on that workload, then at each
//! `fidelity.load_fractions` × capacity a study ([`run_study`]) plus `real_repeats − 1` more
//! real runs, compared together (`compare.real_run=a,b,c`). Every step reuses complete run
//! dirs.
//!
//! Output `tmp/fidelity/<id>/`: `fidelity.json`, `fidelity.md`, `run_meta.json`, `_SUCCESS`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::analysis::compare::verdict::{CellVerdict, StatCell, VerdictCounts};
use crate::analysis::stats::Stat;
use crate::io::ids::stable_id;
use crate::io::provenance::{utc_now, InputRef};
use crate::io::rundir::{prepare_fresh, Stage};
use crate::io::{read_json, write_atomic, write_json};
use crate::pipeline::capacity::{self, CapacityResult, CAPACITY_FILE};
use crate::pipeline::{run_study, SUMMARY_METRICS, SUMMARY_QUANTILES};
use crate::stages::graph::run_stage;
use crate::stages::Job;
use crate::{Error, Result};

/// One statistic of one metric at one point: the comparison's cell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    pub metric: String,
    #[serde(flatten)]
    pub cell: StatCell,
}

/// One (policy, load) point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub policy: String,
    pub load_fraction: f64,
    pub qps: f64,
    pub real_runs: Vec<String>,
    /// Each real run's serving time (first arrival to last completion), s.
    pub real_run_s: Vec<f64>,
    pub compare_dir: String,
    /// Requests present in every run (those the TTFT cells resample).
    pub requests_compared: Option<u64>,
    /// The cells of [`SUMMARY_METRICS`] × [`SUMMARY_QUANTILES`] that were compared.
    pub cells: Vec<Cell>,
    pub counts: VerdictCounts,
    /// The comparison's verdict paragraph, with its error attribution.
    pub verdict: String,
    /// Wall time of this point in this invocation, s (about 0 when its runs were reused).
    pub elapsed_s: f64,
}

impl Point {
    fn cell(&self, metric: &str, quantile: &str) -> Option<&StatCell> {
        self.cells
            .iter()
            .find(|c| c.metric == metric && c.cell.stat.key() == quantile)
            .map(|c| &c.cell)
    }
}

/// `fidelity.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FidelityResult {
    pub fidelity_id: String,
    pub model: String,
    /// The `workload` group option the points ran and its size.
    pub workload: String,
    pub num_requests: u32,
    pub real_repeats: u32,
    pub capacities: Vec<CapacityResult>,
    pub points: Vec<Point>,
    /// Over every cell of every point.
    pub counts: VerdictCounts,
    pub cells_total: usize,
    /// Wall time of this invocation, s.
    pub elapsed_s: f64,
    pub created_at: String,
}

/// The rate of a load fraction, rounded so that run ids stay readable and stable.
fn rate(load_fraction: f64, capacity_qps: f64) -> f64 {
    (load_fraction * capacity_qps * 1e4).round() / 1e4
}

/// A real run's serving time from its `run_meta.json` (`extra.summary.makespan_s`).
fn makespan_s(run: &Path) -> Result<f64> {
    let meta: Value = read_json(run.join("run_meta.json"))?;
    meta["extra"]["summary"]["makespan_s"]
        .as_f64()
        .ok_or_else(|| Error::SchemaMismatch {
            path: run.join("run_meta.json"),
            msg: "no extra.summary.makespan_s (not a real run?)".into(),
        })
}

fn point(job: &Job, policy: &str, load_fraction: f64, capacity_qps: f64) -> Result<Point> {
    let started = Instant::now();
    let qps = rate(load_fraction, capacity_qps);
    if qps <= 0.0 {
        return Err(Error::Msg(format!(
            "{policy}: {load_fraction} of capacity {capacity_qps} req/s rounds to 0 req/s"
        )));
    }
    let job = job.with_overrides(&[format!("workload.qps={qps}")])?;
    eprintln!("== fidelity: {policy} at {load_fraction} of capacity ({qps} req/s)");
    let study = run_study(&job)?;
    let first = study
        .dirs
        .get("real")
        .cloned()
        .ok_or_else(|| Error::Msg("study without a real run".into()))?;
    let real_id = job.config.real_run_id()?;
    let mut real_runs = vec![first];
    for r in 2..=job.config.fidelity.real_repeats {
        let repeat = job.with_overrides(&[format!("output.run_id={real_id}-rep{r}")])?;
        real_runs.push(run_stage(&repeat, Stage::Real)?);
    }
    let compare_dir = if real_runs.len() == 1 {
        study
            .dirs
            .get("compare")
            .cloned()
            .ok_or_else(|| Error::Msg("study without a comparison".into()))?
    } else {
        let list: Vec<String> = real_runs.iter().map(|d| d.display().to_string()).collect();
        let with_repeats = job.with_overrides(&[format!("compare.real_run={}", list.join(","))])?;
        run_stage(&with_repeats, Stage::Compare)?
    };
    let summary_path = compare_dir.join("summary.json");
    let summary: Value = read_json(&summary_path)?;
    let cells = cells(&summary).map_err(|e| Error::SchemaMismatch {
        path: summary_path,
        msg: e.to_string(),
    })?;
    Ok(Point {
        policy: policy.to_string(),
        load_fraction,
        qps,
        real_run_s: real_runs
            .iter()
            .map(|r| makespan_s(r))
            .collect::<Result<_>>()?,
        real_runs: real_runs.iter().map(|d| d.display().to_string()).collect(),
        compare_dir: compare_dir.display().to_string(),
        requests_compared: summary["metrics"]["ttft"]["fidelity"]["groups"].as_u64(),
        counts: VerdictCounts::of(cells.iter().map(|c| c.cell.verdict)),
        cells,
        verdict: summary["verdict"].as_str().unwrap_or_default().to_string(),
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// The benchmark's cells of a comparison's `summary.json`: every metric × quantile that
/// was compared against the real runs.
fn cells(summary: &Value) -> serde_json::Result<Vec<Cell>> {
    let mut out = Vec::new();
    for (m, _) in SUMMARY_METRICS {
        for q in SUMMARY_QUANTILES {
            let cell = &summary["metrics"][m]["fidelity"]["cells"][q];
            if cell.is_null() {
                continue;
            }
            out.push(Cell {
                metric: m.to_string(),
                cell: serde_json::from_value(cell.clone())?,
            });
        }
    }
    Ok(out)
}

/// Runs the benchmark for `job`'s configuration; returns the result dir.
pub fn run(job: &Job) -> Result<PathBuf> {
    let started = Instant::now();
    let settings = job.config.fidelity.clone();
    let job = match &settings.workload {
        Some(w) => job.with_overrides(&[format!("workload={w}")])?,
        None => job.clone(),
    };
    let cfg = &job.config;
    if cfg.workload.num_requests < settings.min_requests {
        return Err(Error::config(
            "fidelity.min_requests",
            format!(
                "is {} but the workload `{}` has {} requests (workload.num_requests): a point needs enough for its percentiles",
                settings.min_requests, cfg.workload.name, cfg.workload.num_requests
            ),
        ));
    }
    // Compose every policy's configuration before any work: a bad option fails now.
    let policy_jobs = settings
        .policies
        .iter()
        .map(|p| Ok((p.clone(), job.with_overrides(&[format!("vidur={p}")])?)))
        .collect::<Result<Vec<_>>>()?;

    let mut capacities = Vec::new();
    let mut points = Vec::new();
    for (policy, pj) in &policy_jobs {
        let dir = capacity::run(pj)?;
        let found: CapacityResult = read_json(dir.join(CAPACITY_FILE))?;
        let capacity_qps = found.capacity_qps.ok_or_else(|| {
            Error::Msg(format!(
                "{policy}: even the lowest probed rate violates the queue-delay SLO ({}); lower capacity.start_qps",
                dir.display()
            ))
        })?;
        for &f in &settings.load_fractions {
            points.push(point(pj, policy, f, capacity_qps)?);
        }
        capacities.push(found);
    }

    let compare_dirs: Vec<&str> = points.iter().map(|p| p.compare_dir.as_str()).collect();
    let id = format!(
        "fid-{}-{}",
        cfg.model.name,
        stable_id(&compare_dirs, "", 12)?
    );
    let location = cfg.location(Stage::Fidelity, id.clone());
    let Some(staging) = prepare_fresh(&location, cfg.output.force)? else {
        return Ok(location.path());
    };
    let result = FidelityResult {
        fidelity_id: id.clone(),
        model: cfg.model.name.clone(),
        workload: cfg.workload.name.clone(),
        num_requests: cfg.workload.num_requests,
        real_repeats: settings.real_repeats,
        capacities,
        counts: VerdictCounts::of(
            points
                .iter()
                .flat_map(|p| p.cells.iter().map(|c| c.cell.verdict)),
        ),
        cells_total: points.iter().map(|p| p.cells.len()).sum(),
        points,
        elapsed_s: started.elapsed().as_secs_f64(),
        created_at: utc_now(),
    };
    write_json(staging.file("fidelity.json"), &result)?;
    write_atomic(
        staging.file("fidelity.md"),
        render(&result, settings.min_requests).as_bytes(),
    )?;
    job.write_resolved_config(staging.path())?;
    let mut meta = job.for_stage(Stage::Fidelity).run_meta(&id)?;
    for (i, p) in result.points.iter().enumerate() {
        meta.inputs.insert(
            format!("point_{i:02}"),
            InputRef::run(
                format!("{} load={}", p.policy, p.load_fraction),
                Path::new(&p.compare_dir),
            )?,
        );
    }
    meta.ended_at = utc_now();
    write_json(staging.file("run_meta.json"), &meta)?;
    staging.commit()
}

/// The symbol of a verdict in the overview table.
fn symbol(v: CellVerdict) -> &'static str {
    match v {
        CellVerdict::Indistinguishable => "●",
        CellVerdict::NoiseLimited => "◐",
        CellVerdict::WithinTarget => "✓",
        CellVerdict::Off => "✗",
        CellVerdict::NTooSmall => "n<",
        CellVerdict::Undefined => "?",
    }
}

fn signed(v: Option<f64>, decimals: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:+.decimals$}"))
}

/// `+1.2 [−0.4, +2.9]`.
fn with_interval(v: Option<f64>, interval: Option<[f64; 2]>) -> String {
    match (v, interval) {
        (Some(v), Some([lo, hi])) => format!("{v:+.1} [{lo:+.1}, {hi:+.1}]"),
        (v, _) => signed(v, 1),
    }
}

/// The headline counts as a sentence fragment.
fn headline(c: &VerdictCounts) -> String {
    let mut parts = vec![
        format!("{} indistinguishable", c.indistinguishable),
        format!("{} noise-limited", c.noise_limited),
        format!("{} within target", c.within_target),
        format!("{} off", c.off),
    ];
    if c.n_too_small > 0 {
        parts.push(format!("{} n too small", c.n_too_small));
    }
    if c.undefined > 0 {
        parts.push(format!("{} undefined", c.undefined));
    }
    parts.join(", ")
}

/// `fidelity.md`: the headline counts, the capacities, an overview of the verdicts per
/// point, every cell's numbers, the real runs' timing and each point's verdict paragraph.
pub fn render(r: &FidelityResult, min_requests: u32) -> String {
    let targets = r
        .points
        .iter()
        .flat_map(|p| &p.cells)
        .map(|c| (c.cell.stat, c.cell.target_pct))
        .fold(Vec::<(Stat, f64)>::new(), |mut acc, t| {
            if !acc.iter().any(|a| a.0 == t.0) {
                acc.push(t);
            }
            acc
        });
    let targets_text = targets
        .iter()
        .map(|(s, t)| format!("{} {t} %", s.label()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = format!(
        "# Fidelity benchmark: {}\n\n\
         Is the simulator distinguishable from running the real engine again? Each point \
         compares the simulator with {} of the same workload (`{}`, {} requests) \
         at a fraction of each policy's measured capacity. Per cell: the simulator's error \
         against the pooled real value with its bootstrap confidence interval, the real runs' \
         band (their own spread, % of the pooled value), the noise ratio |sim − real| / band \
         width, and the verdict — indistinguishable (inside the band, the band narrower than \
         twice the target), noise-limited (inside a band too wide to decide; not a pass), \
         within target (outside the band, |error| ≤ target) or off. Targets on |error|: {}. \
         Method: `docs/fidelity_verdict.md`.\n\n\
         **{} cells: {}.**\n\n\
         Took {:.1} min in this invocation (reused runs cost nothing).\n\n\
         ## Capacity (real engine, P{:.0} queue delay ≤ SLO)\n\n\
         | policy | capacity req/s | lowest rate over SLO | probes |\n|---|---:|---:|---:|\n",
        r.model,
        match r.real_repeats {
            1 => "one real run (its run-to-run noise unmeasured)".to_string(),
            k => format!("{k} real runs"),
        },
        r.workload,
        r.num_requests,
        if targets_text.is_empty() {
            "–".to_string()
        } else {
            targets_text
        },
        r.cells_total,
        headline(&r.counts),
        r.elapsed_s / 60.0,
        r.capacities
            .first()
            .map_or(99.0, |c| c.slo_quantile * 100.0),
    );
    for c in &r.capacities {
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            c.policy,
            c.capacity_qps.map_or("–".into(), |q| format!("{q:.4}")),
            c.min_qps_over_slo.map_or("–".into(), |q| format!("{q:.4}")),
            c.probes.len()
        ));
    }

    s.push_str(
        "\n## Verdicts by point\n\nError % against the pooled real value; ● indistinguishable, \
         ◐ noise-limited, ✓ within target, ✗ off, n< n too small.\n\n\
         | policy | load | req/s | requests |",
    );
    for (_, label) in SUMMARY_METRICS {
        for q in SUMMARY_QUANTILES {
            s.push_str(&format!(" {label} {} |", q.to_uppercase()));
        }
    }
    s.push_str("\n|---|---:|---:|---:|");
    s.push_str(&"---:|".repeat(SUMMARY_METRICS.len() * SUMMARY_QUANTILES.len()));
    s.push('\n');
    for p in &r.points {
        let requests = match p.requests_compared {
            Some(n) if n < u64::from(min_requests) => format!("{n} ⚠"),
            Some(n) => n.to_string(),
            None => "–".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {:.4} | {requests} |",
            p.policy, p.load_fraction, p.qps
        ));
        for (m, _) in SUMMARY_METRICS {
            for q in SUMMARY_QUANTILES {
                let text = match p.cell(m, q) {
                    Some(c) => {
                        let err = c.estimate.as_ref().and_then(|e| e.err_pct);
                        match err {
                            Some(e) => format!("{e:+.1} {}", symbol(c.verdict)),
                            None => symbol(c.verdict).to_string(),
                        }
                    }
                    None => "–".into(),
                };
                s.push_str(&format!(" {text} |"));
            }
        }
        s.push('\n');
    }
    if r.points.iter().any(|p| {
        p.requests_compared
            .is_some_and(|n| n < u64::from(min_requests))
    }) {
        s.push_str(&format!(
            "\n⚠ fewer requests in every run than fidelity.min_requests ({min_requests}): some failed or were dropped in a run; see the point's report.\n"
        ));
    }

    s.push_str(
        "\n## Every cell\n\n\
         | policy | load | metric | stat | real (ms) [CI] | real band (ms) | band (%) | sim error (%) [CI] | noise ratio | verdict |\n\
         |---|---:|---|---|---:|---:|---:|---:|---:|---|\n",
    );
    for p in &r.points {
        for c in &p.cells {
            let label = SUMMARY_METRICS
                .iter()
                .find(|(m, _)| *m == c.metric)
                .map_or(c.metric.as_str(), |(_, l)| l);
            let cell = &c.cell;
            let numbers = match &cell.estimate {
                Some(e) => format!(
                    "{:.1} [{:.1}, {:.1}] | {} | {} | {} | {} |",
                    e.real_ms,
                    e.real_ci_ms[0],
                    e.real_ci_ms[1],
                    e.real_band_ms
                        .map_or("unmeasured".into(), |[lo, hi]| format!("{lo:.1}–{hi:.1}")),
                    e.band_width_pct.map_or("–".into(), |w| format!("{w:.1}")),
                    with_interval(e.err_pct, e.err_ci_pct),
                    e.noise_ratio.map_or("–".into(), |n| format!("{n:.2}")),
                ),
                None => "– | – | – | – | – |".into(),
            };
            s.push_str(&format!(
                "| {} | {} | {label} | {} | {numbers} {} |\n",
                p.policy,
                p.load_fraction,
                cell.stat.label(),
                match cell.verdict {
                    CellVerdict::NTooSmall => format!("n too small (< {})", cell.min_samples),
                    v => v.label().to_string(),
                }
            ));
        }
    }

    s.push_str(
        "\n## Real runs\n\n| policy | load | req/s | serving time of each real run (s) | point wall time (s) |\n|---|---:|---:|---|---:|\n",
    );
    for p in &r.points {
        let times: Vec<String> = p.real_run_s.iter().map(|t| format!("{t:.1}")).collect();
        s.push_str(&format!(
            "| {} | {} | {:.4} | {} | {:.0} |\n",
            p.policy,
            p.load_fraction,
            p.qps,
            times.join(", "),
            p.elapsed_s
        ));
    }

    s.push_str("\n## Where the error comes from (each point's comparison verdict)\n\n");
    for p in &r.points {
        s.push_str(&format!(
            "- **{} at {} of capacity** (`{}`): {}\n",
            p.policy, p.load_fraction, p.compare_dir, p.verdict
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(stat: &str, verdict: &str, err: Option<f64>) -> Value {
        serde_json::json!({
            "stat": stat,
            "verdict": verdict,
            "target_pct": 5.0,
            "min_samples": 100,
            "estimate": err.map(|e| serde_json::json!({
                "real_ms": 100.0, "real_ci_ms": [95.0, 105.0], "real_runs_ms": [98.0, 101.0, 103.0],
                "real_band_ms": [98.0, 103.0], "band_width_pct": 5.0, "sim_ms": 100.0 + e,
                "err_pct": e, "err_ci_pct": [e - 1.0, e + 1.0], "noise_ratio": e.abs() / 5.0
            })),
        })
    }

    #[test]
    fn cells_read_the_comparisons_verdicts() {
        let summary = serde_json::json!({
            "metrics": {
                "ttft": {"fidelity": {"cells": {
                    "p50": cell("p50", "indistinguishable", Some(1.0)),
                    "p90": cell("p90", "off", Some(-8.0)),
                    "p99": cell("p99", "n_too_small", None),
                }}},
                "tpot": null
            }
        });
        let c = cells(&summary).unwrap();
        assert_eq!(c.len(), 3, "TPOT and E2E were not compared");
        assert_eq!(c[0].cell.verdict, CellVerdict::Indistinguishable);
        assert_eq!(c[1].cell.estimate.as_ref().unwrap().err_pct, Some(-8.0));
        assert_eq!(c[2].cell.verdict, CellVerdict::NTooSmall);
        assert!(c[2].cell.estimate.is_none());
        let counts = VerdictCounts::of(c.iter().map(|c| c.cell.verdict));
        assert_eq!(
            (counts.indistinguishable, counts.off, counts.n_too_small),
            (1, 1, 1)
        );

        let bad = serde_json::json!({"metrics": {"ttft": {"fidelity": {"cells": {
            "p50": {"stat": "p50", "verdict": "great"}
        }}}}});
        assert!(cells(&bad).is_err());
    }

    #[test]
    fn render_leads_with_the_headline_counts() {
        let summary = serde_json::json!({"metrics": {"ttft": {"fidelity": {"cells": {
            "p50": cell("p50", "indistinguishable", Some(1.0)),
            "p90": cell("p90", "within_target", Some(-4.0)),
            "p99": cell("p99", "n_too_small", None),
        }}}}});
        let cells = cells(&summary).unwrap();
        let point = Point {
            policy: "sarathi".into(),
            load_fraction: 0.3,
            qps: 1.2,
            real_runs: vec!["a".into(), "b".into()],
            real_run_s: vec![170.0, 172.4],
            compare_dir: "tmp/compare/cmp-x".into(),
            requests_compared: Some(60),
            counts: VerdictCounts::of(cells.iter().map(|c| c.cell.verdict)),
            cells,
            verdict: "Against 2 real runs …".into(),
            elapsed_s: 400.0,
        };
        let result = FidelityResult {
            fidelity_id: "fid-x".into(),
            model: "qwen3_tiny".into(),
            workload: "poisson_short".into(),
            num_requests: 60,
            real_repeats: 2,
            capacities: Vec::new(),
            counts: point.counts,
            cells_total: 3,
            points: vec![point],
            elapsed_s: 600.0,
            created_at: "now".into(),
        };
        let md = render(&result, 200);
        assert!(
            md.contains("**3 cells: 1 indistinguishable, 0 noise-limited, 1 within target, 0 off, 1 n too small.**"),
            "{md}"
        );
        assert!(md.contains("| +1.0 ● | -4.0 ✓ | n< |"), "{md}");
        assert!(
            md.contains("| 60 ⚠ |"),
            "fewer requests than min_requests: {md}"
        );
        assert!(md.contains("-4.0 [-5.0, -3.0]"), "{md}");
        assert!(md.contains("| 170.0, 172.4 |"), "{md}");
        assert!(md.contains("with 2 real runs of the same workload"), "{md}");
        assert!(md.contains("Took 10.0 min"), "{md}");
    }

    #[test]
    fn rates_are_rounded_to_four_decimals() {
        assert_eq!(rate(0.3, 1.234_567), 0.3704);
        assert_eq!(rate(0.85, 2.0), 1.7);
    }
}
