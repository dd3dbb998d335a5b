//! Capacity search: the highest request rate at which the real engine's queue delay stays
//! within an SLO (`capacity.slo_quantile` of the queue delay ≤ `capacity.slo_queue_delay_s`),
//! found by the bracketing binary search of Vidur's config explorer
//! (`vidur/config_optimizer/config_explorer/capacity_search.py`). Each probe is a real run at
//! `workload.qps = q` (a complete run is reused), so a later sweep at those rates costs nothing.
//!
//! One deliberate difference: when a probe is far over the SLO, Vidur tests "delay > 500 s"
//! before "delay > 1000 s", so its 1000 s branch can never run; we test the larger first, as
//! evidently intended (shrink the bracket 4× above 1000 s, 2× above 500 s).
//!
//! Output `tmp/capacity/<id>/`: `capacity.json`, `capacity.md`, `config.yaml`,
//! `run_meta.json`, `_SUCCESS`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::analysis::stats::percentile;
use crate::io::ids::stable_id;
use crate::io::provenance::{utc_now, InputRef};
use crate::io::records::{RequestMetricsRow, RequestStatus};
use crate::io::rundir::{prepare_fresh, Stage};
use crate::io::schema::REQUEST_METRICS;
use crate::io::{read_csv, read_json, write_atomic, write_json};
use crate::stages::graph::run_stage;
use crate::stages::Job;
use crate::{Error, Result};

/// File holding the search's result.
pub const CAPACITY_FILE: &str = "capacity.json";

/// One probe of the search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub qps: f64,
    /// The configured quantile of the queue delay over completed requests, seconds.
    pub queue_delay_quantile_s: f64,
    pub under_slo: bool,
    pub num_ok: usize,
    pub num_error: usize,
    pub real_run: String,
}

/// `capacity.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityResult {
    pub capacity_id: String,
    pub model: String,
    pub policy: String,
    /// Highest probed rate within the SLO (`None`: even the lowest probe violated it).
    pub capacity_qps: Option<f64>,
    /// Lowest probed rate over the SLO, if any.
    pub min_qps_over_slo: Option<f64>,
    pub slo_quantile: f64,
    pub slo_queue_delay_s: f64,
    pub probes: Vec<Probe>,
    pub created_at: String,
}

/// Id of the capacity search for `job`'s configuration: everything that shapes a real run
/// except the rate being searched, plus the search settings.
pub fn capacity_id(job: &Job) -> Result<String> {
    let mut config =
        serde_json::to_value(&job.config).map_err(|e| Error::InvalidInput(e.to_string()))?;
    if let Some(m) = config.as_object_mut() {
        for k in ["output", "compare", "profile", "vidur", "fidelity"] {
            m.remove(k);
        }
        if let Some(w) = m.get_mut("workload").and_then(|w| w.as_object_mut()) {
            w.remove("qps");
        }
    }
    let hash = stable_id(&config, "", 12)?;
    Ok(format!("cap-{}-{hash}", job.config.model.name))
}

/// The capacity found earlier for `job`'s configuration, if a complete search exists.
pub fn lookup(job: &Job) -> Result<Option<CapacityResult>> {
    let dir = job
        .config
        .location(Stage::Capacity, capacity_id(job)?)
        .path();
    if !crate::io::rundir::is_current(&dir) {
        return Ok(None);
    }
    read_json(dir.join(CAPACITY_FILE)).map(Some)
}

/// Runs one probe: workload and real run at `qps` (reused when complete).
fn probe(job: &Job, qps: f64) -> Result<Probe> {
    let probe_job = job.with_overrides(&[format!("workload.qps={qps}")])?;
    run_stage(&probe_job, Stage::Workload)?;
    let dir = run_stage(&probe_job, Stage::Real)?;
    let rows: Vec<RequestMetricsRow> =
        read_csv(dir.join(REQUEST_METRICS.file_name), &REQUEST_METRICS)?;
    let mut delays_s: Vec<f64> = rows
        .iter()
        .filter(|r| r.status == RequestStatus::Ok)
        .filter_map(|r| r.queue_delay_ns)
        .map(|ns| ns as f64 / 1e9)
        .collect();
    let num_ok = delays_s.len();
    if delays_s.is_empty() {
        return Err(Error::Msg(format!(
            "probe at {qps} req/s: no request completed ({})",
            dir.display()
        )));
    }
    delays_s.sort_by(f64::total_cmp);
    let cap = &job.config.capacity;
    let q = percentile(&delays_s, cap.slo_quantile * 100.0)?;
    Ok(Probe {
        qps,
        queue_delay_quantile_s: q,
        under_slo: q <= cap.slo_queue_delay_s,
        num_ok,
        num_error: rows.len() - num_ok,
        real_run: dir.display().to_string(),
    })
}

/// The bracketing search over any probe function (unit-testable without an engine).
pub fn search(
    cap: &crate::config::types::CapacityConfig,
    mut probe_at: impl FnMut(f64) -> Result<(bool, f64)>,
) -> Result<(Option<f64>, Option<f64>)> {
    let slo = cap.slo_queue_delay_s;
    let mut left = 0.0f64;
    let mut right = cap.start_qps * 2.0;
    let mut qps = 0.0f64;
    let mut max_under: Option<f64> = None;
    let mut min_over = f64::INFINITY;
    for _ in 0..cap.max_iterations {
        if (left - right).abs() < cap.min_granularity_pct * qps / 100.0 {
            break;
        }
        qps = (left + right) / 2.0;
        let (under, delay_s) = probe_at(qps)?;
        if under {
            max_under = Some(qps);
            if delay_s < slo / 8.0 {
                right = (right * 4.0).min(min_over);
            } else if delay_s < slo / 4.0 || qps > 0.8 * right {
                right = (right * 2.0).min(min_over);
            }
            left = qps;
        } else {
            right = if delay_s > 1000.0 {
                qps / 4.0
            } else if delay_s > 500.0 {
                qps / 2.0
            } else {
                qps
            };
            min_over = min_over.min(qps);
        }
    }
    Ok((max_under, min_over.is_finite().then_some(min_over)))
}

/// Runs the search for `job`'s configuration; returns the capacity dir.
pub fn run(job: &Job) -> Result<PathBuf> {
    let cfg = &job.config;
    if !cfg
        .workload
        .intervals
        .as_ref()
        .is_some_and(|i| i.uses_qps())
    {
        return Err(Error::config(
            "workload.intervals",
            "the capacity search varies workload.qps: it needs a rate-driven interval generator (poisson, gamma, fixed_interval)",
        ));
    }
    let id = capacity_id(job)?;
    let location = cfg.location(Stage::Capacity, id.clone());
    let Some(staging) = prepare_fresh(&location, cfg.output.force)? else {
        return Ok(location.path());
    };
    let mut meta = job.for_stage(Stage::Capacity).run_meta(&id)?;
    let mut probes: Vec<Probe> = Vec::new();
    let (capacity_qps, min_over) = search(&cfg.capacity, |qps| {
        eprintln!("capacity: probing {qps:.4} req/s");
        let p = probe(job, qps)?;
        eprintln!(
            "capacity: {:.4} req/s → P{:.0} queue delay {:.3} s ({})",
            qps,
            cfg.capacity.slo_quantile * 100.0,
            p.queue_delay_quantile_s,
            if p.under_slo {
                "within SLO"
            } else {
                "over SLO"
            }
        );
        let out = (p.under_slo, p.queue_delay_quantile_s);
        probes.push(p);
        Ok(out)
    })?;
    let result = CapacityResult {
        capacity_id: id.clone(),
        model: cfg.model.name.clone(),
        policy: cfg.scheduler.policy.name().to_string(),
        capacity_qps,
        min_qps_over_slo: min_over,
        slo_quantile: cfg.capacity.slo_quantile,
        slo_queue_delay_s: cfg.capacity.slo_queue_delay_s,
        probes,
        created_at: utc_now(),
    };
    write_json(staging.file(CAPACITY_FILE), &result)?;
    write_atomic(staging.file("capacity.md"), render(&result).as_bytes())?;
    job.write_resolved_config(staging.path())?;
    for (i, p) in result.probes.iter().enumerate() {
        meta.inputs.insert(
            format!("probe_{i:02}"),
            InputRef::run(format!("qps={}", p.qps), Path::new(&p.real_run))?,
        );
    }
    meta.extra = serde_json::to_value(&result).map_err(|e| Error::InvalidInput(e.to_string()))?;
    meta.ended_at = utc_now();
    write_json(staging.file("run_meta.json"), &meta)?;
    eprintln!(
        "capacity of {} ({}): {}",
        result.model,
        result.policy,
        result
            .capacity_qps
            .map(|q| format!("{q:.4} req/s"))
            .unwrap_or_else(|| "below the lowest probe".into())
    );
    staging.commit()
}

fn render(r: &CapacityResult) -> String {
    let mut s = format!(
        "# Capacity of {} ({})\n\nHighest request rate whose P{:.0} queue delay is at most {} s: **{}**.\n\n",
        r.model,
        r.policy,
        r.slo_quantile * 100.0,
        r.slo_queue_delay_s,
        r.capacity_qps
            .map(|q| format!("{q:.4} req/s"))
            .unwrap_or_else(|| "none of the probed rates".into())
    );
    s.push_str("| probe | rate (req/s) | queue delay quantile (s) | within SLO | ok | error | real run |\n|---:|---:|---:|---|---:|---:|---|\n");
    for (i, p) in r.probes.iter().enumerate() {
        s.push_str(&format!(
            "| {} | {:.4} | {:.3} | {} | {} | {} | `{}` |\n",
            i + 1,
            p.qps,
            p.queue_delay_quantile_s,
            if p.under_slo { "yes" } else { "no" },
            p.num_ok,
            p.num_error,
            p.real_run
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::CapacityConfig;

    fn cfg() -> CapacityConfig {
        CapacityConfig {
            slo_quantile: 0.99,
            slo_queue_delay_s: 5.0,
            start_qps: 1.0,
            min_granularity_pct: 2.5,
            max_iterations: 20,
        }
    }

    /// A queue whose delay explodes above a true capacity: the search must bracket it
    /// within the granularity.
    #[test]
    fn search_converges_on_a_threshold() {
        for true_capacity in [0.37, 1.0, 3.3, 17.0] {
            let mut probes = Vec::new();
            let (found, over) = search(&cfg(), |q| {
                probes.push(q);
                let delay = if q <= true_capacity {
                    0.5 * q / true_capacity
                } else {
                    60.0
                };
                Ok((delay <= 5.0, delay))
            })
            .unwrap();
            let found = found.unwrap();
            assert!(found <= true_capacity, "{found} > {true_capacity}");
            assert!(
                found >= true_capacity * (1.0 - 0.06),
                "{found} too far below {true_capacity} after {probes:?}"
            );
            assert!(over.unwrap() > true_capacity);
            assert!(probes.len() <= 20);
        }
    }

    #[test]
    fn nothing_under_the_slo_gives_none() {
        let (found, over) = search(&cfg(), |_| Ok((false, 100.0))).unwrap();
        assert_eq!(found, None);
        assert!(over.is_some());
    }
}
