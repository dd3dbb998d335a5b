//! The fidelity benchmark: how close the simulator's P50/P90/P99 TTFT, TPOT and E2E come to
//! the real engine's at fixed fractions of the real engine's measured capacity, per replica
//! scheduler, next to the real engine's own run-to-run spread.
//!
//! For each policy of `fidelity.policies`: a capacity search ([`capacity`]), then at each
//! `fidelity.load_fractions` × capacity a study ([`run_study`]) plus `real_repeats − 1` more
//! real runs of the same workload, compared together (`compare.real_run=a,b,c`) so that the
//! comparison reports the real engine's noise. Every step reuses complete run dirs.
//!
//! Output `tmp/fidelity/<id>/`: `fidelity.json`, `fidelity.md`, `run_meta.json`, `_SUCCESS`.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use crate::io::ids::stable_id;
use crate::io::provenance::{utc_now, InputRef};
use crate::io::rundir::{prepare, Prepared, Stage};
use crate::io::{read_json, write_atomic, write_json};
use crate::pipeline::capacity::{self, CapacityResult, CAPACITY_FILE};
use crate::pipeline::{run_stage, run_study, stat_error, SUMMARY_METRICS, SUMMARY_QUANTILES};
use crate::stage::Job;
use crate::{Error, Result};

/// The targets of the benchmark: |error| of every P50 within 3 %, of every P90/P99 within 5 %.
pub fn target_pct(quantile: &str) -> f64 {
    if quantile == "p50" {
        3.0
    } else {
        5.0
    }
}

/// One percentile of one metric at one point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    pub metric: String,
    pub quantile: String,
    pub real_ms: Option<f64>,
    pub sim_ms: Option<f64>,
    /// `100 · (sim − real) / real`.
    pub err_pct: Option<f64>,
    /// Largest |difference| of this percentile between the first real run and the others.
    pub real_spread_pct: Option<f64>,
    pub within_target: Option<bool>,
}

/// One (policy, load) point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub policy: String,
    pub load_fraction: f64,
    pub qps: f64,
    pub real_runs: Vec<String>,
    pub compare_dir: String,
    pub requests_compared: Option<u64>,
    pub cells: Vec<Cell>,
    /// The comparison's verdict, with its error attribution.
    pub verdict: String,
}

/// `fidelity.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FidelityResult {
    pub fidelity_id: String,
    pub model: String,
    pub capacities: Vec<CapacityResult>,
    pub points: Vec<Point>,
    pub cells_within_target: usize,
    pub cells_total: usize,
    pub created_at: String,
}

/// The rate of a load fraction, rounded so that run ids stay readable and stable.
fn rate(load_fraction: f64, capacity_qps: f64) -> f64 {
    (load_fraction * capacity_qps * 1e4).round() / 1e4
}

fn point(job: &Job, policy: &str, load_fraction: f64, capacity_qps: f64) -> Result<Point> {
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
    let summary: Value = read_json(compare_dir.join("summary.json"))?;
    Ok(Point {
        policy: policy.to_string(),
        load_fraction,
        qps,
        real_runs: real_runs.iter().map(|d| d.display().to_string()).collect(),
        compare_dir: compare_dir.display().to_string(),
        requests_compared: summary["join"]["requests_compared"].as_u64(),
        cells: cells(&summary),
        verdict: summary["verdict"].as_str().unwrap_or_default().to_string(),
    })
}

/// The benchmark cells of a comparison's `summary.json`.
fn cells(summary: &Value) -> Vec<Cell> {
    let mut out = Vec::new();
    for (m, _) in SUMMARY_METRICS {
        for q in SUMMARY_QUANTILES {
            let err_pct = stat_error(summary, m, q, "err_pct");
            out.push(Cell {
                metric: m.to_string(),
                quantile: q.to_string(),
                real_ms: stat_error(summary, m, q, "real_ms"),
                sim_ms: stat_error(summary, m, q, "sim_ms"),
                err_pct,
                real_spread_pct: summary["metrics"][m]["noise"]["max_abs_stat_diff_pct"][q]
                    .as_f64(),
                within_target: err_pct.map(|v| v.abs() <= target_pct(q)),
            });
        }
    }
    out
}

/// Runs the benchmark for `job`'s configuration; returns the result dir.
pub fn run(job: &Job) -> Result<PathBuf> {
    let cfg = &job.config;
    let settings = &cfg.fidelity;
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
    let staging = match prepare(&location, cfg.output.force)? {
        Prepared::UpToDate(path) => {
            eprintln!("up to date: {}", path.display());
            return Ok(path);
        }
        Prepared::Fresh(staging) => staging,
    };
    let all: Vec<&Cell> = points.iter().flat_map(|p| &p.cells).collect();
    let result = FidelityResult {
        fidelity_id: id.clone(),
        model: cfg.model.name.clone(),
        capacities,
        cells_within_target: all.iter().filter(|c| c.within_target == Some(true)).count(),
        cells_total: all.len(),
        points,
        created_at: utc_now(),
    };
    write_json(staging.file("fidelity.json"), &result)?;
    write_atomic(staging.file("fidelity.md"), render(&result).as_bytes())?;
    job.write_resolved_config(staging.path())?;
    let mut meta = job.for_stage(Stage::Fidelity).run_meta(&id)?;
    for (i, p) in result.points.iter().enumerate() {
        meta.inputs.insert(
            format!("point_{i:02}"),
            InputRef {
                id: format!("{} load={}", p.policy, p.load_fraction),
                path: p.compare_dir.clone(),
                sha256: None,
            },
        );
    }
    meta.ended_at = utc_now();
    write_json(staging.file("run_meta.json"), &meta)?;
    staging.commit()
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:+.1}"))
}

/// `fidelity.md`: the capacities, then one row per (policy, load) with every cell's error
/// and, beside it, the real engine's own spread.
pub fn render(r: &FidelityResult) -> String {
    let mut s = format!(
        "# Fidelity benchmark: {}\n\n\
         Signed error of the simulator, 100·(sim − real)/real %, per percentile; in brackets \
         the real engine's own run-to-run spread (largest |difference| between its repeated \
         runs). Targets: |P50| ≤ {:.0} %, |P90|, |P99| ≤ {:.0} %. **{} of {} cells within \
         target.**\n\n## Capacity (real engine, P{:.0} queue delay ≤ SLO)\n\n\
         | policy | capacity req/s | lowest rate over SLO | probes |\n|---|---:|---:|---:|\n",
        r.model,
        target_pct("p50"),
        target_pct("p99"),
        r.cells_within_target,
        r.cells_total,
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
    s.push_str("\n## Error by point\n\n| policy | load | req/s |");
    for (_, label) in SUMMARY_METRICS {
        for q in SUMMARY_QUANTILES {
            s.push_str(&format!(" {label} {} |", q.to_uppercase()));
        }
    }
    s.push_str("\n|---|---:|---:|");
    s.push_str(&"---:|".repeat(SUMMARY_METRICS.len() * SUMMARY_QUANTILES.len()));
    s.push('\n');
    for p in &r.points {
        s.push_str(&format!(
            "| {} | {} | {:.4} |",
            p.policy, p.load_fraction, p.qps
        ));
        for c in &p.cells {
            let mark = match c.within_target {
                Some(false) => " ✗",
                _ => "",
            };
            let spread = c
                .real_spread_pct
                .map_or(String::new(), |v| format!(" ({v:.1})"));
            s.push_str(&format!(" {}{spread}{mark} |", pct(c.err_pct)));
        }
        s.push('\n');
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

    #[test]
    fn cells_read_a_summary_and_apply_the_targets() {
        let summary = serde_json::json!({
            "metrics": {
                "ttft": {
                    "stat_errors": {
                        "p50": {"real_ms": 100.0, "sim_ms": 102.0, "err_pct": 2.0},
                        "p90": {"real_ms": 200.0, "sim_ms": 188.0, "err_pct": -6.0},
                        "p99": {"real_ms": 300.0, "sim_ms": 315.0, "err_pct": 5.0}
                    },
                    "noise": {"max_abs_stat_diff_pct": {"p50": 1.5}}
                },
                "tpot": null
            }
        });
        let c = cells(&summary);
        assert_eq!(c.len(), 9);
        assert_eq!(c[0].within_target, Some(true));
        assert_eq!(c[0].real_spread_pct, Some(1.5));
        assert_eq!(c[1].within_target, Some(false));
        assert_eq!(
            c[2].within_target,
            Some(true),
            "5 % is within the P99 target"
        );
        assert_eq!(c[3].err_pct, None);
        assert_eq!(c[3].within_target, None);
    }

    #[test]
    fn rates_are_rounded_to_four_decimals() {
        assert_eq!(rate(0.3, 1.234_567), 0.3704);
        assert_eq!(rate(0.85, 2.0), 1.7);
    }
}
