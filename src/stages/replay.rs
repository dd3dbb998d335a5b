//! Batch replay of a real run: predict every recorded iteration from its composition and
//! compare with what the engine measured — the "oracle schedule" check, which isolates
//! prediction error from scheduling divergence.
//!
//! [`read_real_run`] turns a `real` run dir into [`ReplayIteration`]s, [`replay_run`] predicts
//! them with a predictor ([`bundle_predictor`] fits the configured one on a bundle), and
//! [`write_replay`] writes `replay.csv` (one row per iteration: measured vs predicted total,
//! model time, CPU overhead and every op) and `replay_summary.json`. [`run`] is the `replay`
//! binary: `tmp/replay/<id>/`.
//!
//! Accounting (the same on both sides): an iteration's duration is its CPU overhead —
//! scheduling, input preparation and output processing — plus its model time, which
//! includes sampling (the `sampler` op, keyed by logits rows like the LM head).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use crate::io::bundle::Op;
use crate::io::provenance::{place_key, InputRef};
use crate::io::records::{BatchMetricsRow, BatchRequestRow, TokenMetricsRow};
use crate::io::rundir::{require_complete, reusable, Stage};
use crate::io::schema::{BATCH_METRICS, BATCH_REQUESTS, TOKEN_METRICS};
use crate::io::speed_response::SpeedResponse;
use crate::io::{read_csv, stable_id, write_atomic, write_json};
use crate::stages::bundle::{check_bundle_for_real_run, configured_bundle_dir, load_bundle};
use crate::stages::vidur::bundle_predictor;
use crate::stages::Job;
use crate::vidur_ext::device_speed::{
    DeviceSpeed, ProbeScreening, SpeedCorrectedPredictor, SpeedCorrection,
};
use crate::vidur_ext::predictor::{
    replay_batches, ErrorStats, ExecutionTimePredictor, ReplayIteration, ReplayReport, RequestShape,
};
use crate::{Error, Result};

/// Reads a complete `real` run into one [`ReplayIteration`] per `batch_metrics.csv` row,
/// with its `batch_requests.csv` rows as request shapes and its logits rows counted from
/// `token_metrics.csv` (entries that emitted a token). Errors name the file and batch when
/// the three files disagree.
pub fn read_real_run(dir: &Path) -> Result<Vec<ReplayIteration>> {
    require_complete(
        dir,
        "real run",
        "cargo run --release --bin real -- <overrides>",
    )?;
    let batches: Vec<BatchMetricsRow> =
        read_csv(dir.join(BATCH_METRICS.file_name), &BATCH_METRICS)?;
    let entries: Vec<BatchRequestRow> =
        read_csv(dir.join(BATCH_REQUESTS.file_name), &BATCH_REQUESTS)?;
    let tokens: Vec<TokenMetricsRow> = read_csv(dir.join(TOKEN_METRICS.file_name), &TOKEN_METRICS)?;
    let mut shapes: BTreeMap<u64, Vec<RequestShape>> = BTreeMap::new();
    for e in &entries {
        shapes.entry(e.batch_id).or_default().push(RequestShape {
            num_tokens: e.num_tokens,
            num_context_tokens: e.num_context_tokens,
            is_prefill: e.is_prefill,
        });
    }
    let mut logits_rows: BTreeMap<u64, u32> = BTreeMap::new();
    for t in &tokens {
        *logits_rows.entry(t.batch_id).or_default() += 1;
    }
    let mut iterations = Vec::with_capacity(batches.len());
    for b in &batches {
        let requests = shapes.remove(&b.batch_id).ok_or_else(|| {
            Error::Mismatch(format!(
                "{}: batch_id {} has no rows in {}",
                dir.join(BATCH_METRICS.file_name).display(),
                b.batch_id,
                BATCH_REQUESTS.file_name
            ))
        })?;
        if requests.len() != b.num_requests as usize {
            return Err(Error::Mismatch(format!(
                "{}: batch_id {} has num_requests {} but {} rows in {}",
                dir.display(),
                b.batch_id,
                b.num_requests,
                requests.len(),
                BATCH_REQUESTS.file_name
            )));
        }
        let cpu = match (
            b.cpu_schedule_ns,
            b.cpu_prepare_inputs_ns,
            b.cpu_process_outputs_ns,
        ) {
            (Some(s), Some(p), Some(o)) => Some(s + p + o),
            _ => None,
        };
        iterations.push(ReplayIteration {
            batch_id: b.batch_id,
            measured_duration_ns: b.duration_ns,
            measured_cpu_overhead_ns: cpu,
            // The op columns are in `Op` index order (both come from one list).
            measured_ops_ns: b.ops(),
            requests,
            num_logits_rows: Some(logits_rows.get(&b.batch_id).copied().unwrap_or(0)),
            start_time_ns: Some(b.start_time_ns),
        });
    }
    if let Some(id) = shapes.keys().next() {
        return Err(Error::Mismatch(format!(
            "{}: batch_id {id} is in {} but not in {}",
            dir.display(),
            BATCH_REQUESTS.file_name,
            BATCH_METRICS.file_name
        )));
    }
    Ok(iterations)
}

/// Reads `real_run`, predicts each iteration with `predictor` and compares.
pub fn replay_run(predictor: &dyn ExecutionTimePredictor, real_run: &Path) -> Result<ReplayReport> {
    let iterations = read_real_run(real_run)?;
    replay_batches(predictor, &iterations)
}

/// Header of `replay.csv` before the per-op columns.
const REPLAY_COLUMNS: [&str; 13] = [
    "batch_id",
    "num_requests",
    "num_tokens",
    "num_logits_rows",
    "measured_ns",
    "predicted_ns",
    "error_pct",
    "measured_model_ns",
    "predicted_model_ns",
    "measured_cpu_overhead_ns",
    "predicted_cpu_overhead_ns",
    "extrapolated",
    "num_prefill_requests",
];

/// Ops written to `replay.csv` as `measured_<op>_ns, predicted_<op>_ns` pairs: all but the
/// network ops, which a single-device real run never has.
fn replay_ops() -> impl Iterator<Item = Op> {
    Op::ALL
        .into_iter()
        .filter(|op| !matches!(op, Op::AllReduce | Op::SendRecv))
}

/// A replay with every prediction corrected to the run's device speed, and what the
/// correction went by.
pub struct CorrectedReplay {
    pub report: ReplayReport,
    pub screening: ProbeScreening,
    pub response: Option<SpeedResponse>,
    /// [`SpeedCorrection::response_sentence`].
    pub response_sentence: Option<String>,
}

/// Writes `replay.csv` and `replay_summary.json` into `dir` (atomically, file by file).
/// `iterations` are the replayed ones (for logits rows and measured ops), in report order.
pub fn write_replay(
    dir: &Path,
    predictor: &dyn ExecutionTimePredictor,
    iterations: &[ReplayIteration],
    report: &ReplayReport,
    corrected: Option<&CorrectedReplay>,
    inputs: serde_json::Value,
    speed: Option<&(DeviceSpeed, SpeedAdjusted)>,
) -> Result<()> {
    let screening = corrected.map(|c| &c.screening);
    let response = corrected.and_then(|c| c.response.as_ref());
    let corrected = corrected.map(|c| &c.report);
    let mut header: Vec<String> = REPLAY_COLUMNS.iter().map(|c| c.to_string()).collect();
    for op in replay_ops() {
        header.push(format!("measured_{op}_ns"));
        header.push(format!("predicted_{op}_ns"));
    }
    header.push("predicted_speed_corrected_ns".into());
    let path = dir.join("replay.csv");
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    let csv_err = |e: csv::Error| Error::parse(&path, e.to_string());
    w.write_record(&header).map_err(csv_err)?;
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    for (i, (it, b)) in iterations.iter().zip(&report.batches).enumerate() {
        // Predicted again for the per-op breakdown, which the report does not keep.
        let p = predictor.predict_with(&it.requests, &it.context());
        let measured_model = it
            .measured_cpu_overhead_ns
            .map(|c| it.measured_duration_ns.saturating_sub(c));
        let mut row = vec![
            b.batch_id.to_string(),
            b.num_requests.to_string(),
            b.num_tokens.to_string(),
            opt(it.num_logits_rows.map(u64::from)),
            b.measured_ns.to_string(),
            b.predicted_ns.to_string(),
            format!("{:.4}", b.error_pct),
            opt(measured_model),
            b.predicted_model_ns.to_string(),
            opt(b.measured_cpu_overhead_ns),
            b.predicted_cpu_overhead_ns.to_string(),
            b.extrapolated.to_string(),
            it.requests
                .iter()
                .filter(|r| r.is_prefill)
                .count()
                .to_string(),
        ];
        for op in replay_ops() {
            row.push(opt(it.measured_ops_ns[op.index()]));
            row.push(format!("{}", (p.op_ms(op) * 1e6).round() as u64));
        }
        row.push(opt(corrected.map(|c| c.batches[i].predicted_ns)));
        w.write_record(&row).map_err(csv_err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::parse(&path, e.to_string()))?;
    write_atomic(&path, &bytes)?;
    #[derive(Serialize)]
    struct Summary<'a> {
        inputs: serde_json::Value,
        summary: &'a crate::vidur_ext::predictor::ReplaySummary,
        /// The same replay with every prediction scaled to the run's device speed over time
        /// (probes and host load only; see `vidur_ext::device_speed`).
        speed_corrected: Option<&'a crate::vidur_ext::predictor::ReplaySummary>,
        /// What the correction skipped or capped of the probes, and why.
        speed_correction_probes: Option<&'a ProbeScreening>,
        /// How the bundle's forwards answered the memory state, where its profile measured
        /// it (the correction scales those sizes by it).
        speed_correction_response: Option<&'a SpeedResponse>,
        device_speed: Option<&'a DeviceSpeed>,
        speed_adjusted: Option<&'a SpeedAdjusted>,
    }
    write_json(
        dir.join("replay_summary.json"),
        &Summary {
            inputs,
            summary: &report.summary,
            speed_corrected: corrected.map(|c| &c.summary),
            speed_correction_probes: screening,
            speed_correction_response: response,
            device_speed: speed.map(|s| &s.0),
            speed_adjusted: speed.map(|s| &s.1),
        },
    )
}

/// The replay's errors had every prediction been scaled by the device-speed factor
/// (real ÷ profile reference time): what is left once the device's own drift between
/// profiling and the real run is taken out. Reported beside the raw errors, never instead
/// of them — the factor comes from the real run's warm-up, which a plain simulation would
/// not have.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeedAdjusted {
    /// Real ÷ profile reference time.
    pub factor: f64,
    /// Error of the summed duration, %.
    pub total_error_pct: f64,
    /// Per-iteration errors of the duration, as in the raw summary.
    pub duration: Option<ErrorStats>,
}

impl SpeedAdjusted {
    pub fn of(report: &ReplayReport, speed: &DeviceSpeed) -> SpeedAdjusted {
        let factor = speed.real_over_profile();
        let pairs: Vec<(f64, f64)> = report
            .batches
            .iter()
            .map(|b| (b.measured_ns as f64, b.predicted_ns as f64 * factor))
            .collect();
        let (measured, predicted) = pairs
            .iter()
            .fold((0.0, 0.0), |(m, p), (a, b)| (m + a, p + b));
        SpeedAdjusted {
            factor,
            total_error_pct: 100.0 * (predicted - measured) / measured,
            duration: ErrorStats::from_pairs(pairs),
        }
    }
}

/// Bare command-line keys of the `replay` binary and the config keys they stand for.
pub const ALIASES: [(&str, &str); 2] =
    [("real_run", "compare.real_run"), ("bundle", "vidur.bundle")];

/// Runs a replay for one job; returns `tmp/replay/<id>/`. The real run is the first of
/// `compare.real_run` (`real_run=` on the command line) or the one this config produces; the
/// bundle is `vidur.bundle` (`bundle=`) or the one `vidur_profile` makes for this config.
pub fn run(job: &Job) -> Result<PathBuf> {
    let cfg = &job.config;
    let real_run = match cfg.compare.real_run_dirs().first() {
        Some(p) => p.clone(),
        None => {
            let dir = cfg.real_run_dir()?;
            require_complete(&dir, "real run", &job.command_for(Stage::Real))?;
            dir
        }
    };
    let bundle_dir = configured_bundle_dir(job)?;
    let cross_device = check_bundle_for_real_run(&bundle_dir, &real_run, cfg.vidur.cross_device)?;
    let bundle = load_bundle(cfg, &bundle_dir)?;
    let predictor = bundle_predictor(cfg, &bundle, cfg.vidur.cpu_overheads)?;
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    };
    // Inputs by where they are, not by their dir names: a name alone gave a replay against
    // one paired window's `p5` the id, and then the cached result, of another's. (A run
    // redone in place is caught by its inputs' fingerprints.)
    let id_parts = json!({
        "real_run": place_key(&real_run),
        "bundle": place_key(&bundle_dir),
        "predictor": predictor.name(),
        "predictor_statistic": cfg.vidur.statistic(),
        "cpu_overheads": cfg.vidur.cpu_overheads,
    });
    let id = format!(
        "rpl-{}-{}-{}",
        cfg.model.name,
        predictor.name(),
        stable_id(&id_parts, "", 12)?
    );
    let location = cfg.location(Stage::Replay, id.clone());
    let out = location.path();
    if reusable(&out, cfg.output.force) {
        return Ok(out);
    }
    let iterations = read_real_run(&real_run)?;
    let report = replay_batches(predictor.as_ref(), &iterations)?;
    let correction = SpeedCorrection::between(cfg, &bundle_dir, &real_run)?;
    let corrected = correction
        .map(|c| {
            let (screening, response) = (*c.screening(), c.response().cloned());
            let response_sentence = c.response_sentence();
            let p = SpeedCorrectedPredictor::new(predictor.as_ref(), c);
            replay_batches(&p, &iterations).map(|report| CorrectedReplay {
                report,
                screening,
                response,
                response_sentence,
            })
        })
        .transpose()?;
    let inputs_json = json!({
        "real_run": real_run.display().to_string(),
        "bundle": bundle_dir.display().to_string(),
        "predictor": predictor.name(),
        "predictor_statistic": cfg.vidur.statistic(),
        "cpu_overheads": cfg.vidur.cpu_overheads,
        "cross_device": cross_device,
    });
    let speed = DeviceSpeed::between(&bundle_dir, &real_run).map(|d| {
        let adjusted = SpeedAdjusted::of(&report, &d);
        (d, adjusted)
    });
    let out = job.write_run(&location, &id, |staging, meta| {
        meta.inputs.insert(
            "real_run".into(),
            InputRef::run(name(&real_run), &real_run)?,
        );
        meta.inputs.insert(
            "bundle".into(),
            InputRef::run(name(&bundle_dir), &bundle_dir)?,
        );
        meta.extra = json!({"inputs": inputs_json.clone()});
        write_replay(
            staging.path(),
            predictor.as_ref(),
            &iterations,
            &report,
            corrected.as_ref(),
            inputs_json,
            speed.as_ref(),
        )
    })?;
    if let Some(c) = &cross_device {
        eprintln!("{}", c.sentence());
    }
    if let Some((d, a)) = &speed {
        eprintln!(
            "device speed: the reference iteration took {:.1} ms when profiled, {:.1} ms around \
             the real run ({:+.1}%); with predictions scaled by {:.3}: total {:+.2}%, \
             per-iteration |error| median {:.2}%",
            d.profile_reference_ms,
            d.real_reference_ms,
            d.real_slower_pct,
            a.factor,
            a.total_error_pct,
            a.duration.as_ref().map_or(f64::NAN, |d| d.median_abs_pct)
        );
    }
    if let Some(sentence) = corrected.as_ref().and_then(|c| c.screening.sentence()) {
        eprintln!("{sentence}");
    }
    if let Some(sentence) = corrected
        .as_ref()
        .and_then(|c| c.response_sentence.as_ref())
    {
        eprintln!("{sentence}");
    }
    if let Some(c) = corrected.as_ref().map(|c| &c.report) {
        eprintln!(
            "corrected for the device's speed (probes and host load): total {:+.2}%, \
             per-iteration |error| median {:.2}% p90 {:.2}%",
            c.summary.total_error_pct,
            c.summary.duration.median_abs_pct,
            c.summary.duration.p90_abs_pct
        );
    }
    let s = &report.summary;
    eprintln!(
        "replay ({}): {} iterations, total {:+.2}%, per-iteration |error| median {:.2}% p90 {:.2}%{}",
        s.predictor,
        s.num_batches,
        s.total_error_pct,
        s.duration.median_abs_pct,
        s.duration.p90_abs_pct,
        if s.num_extrapolated > 0 {
            format!(", {} extrapolated", s.num_extrapolated)
        } else {
            String::new()
        }
    );
    Ok(out)
}
