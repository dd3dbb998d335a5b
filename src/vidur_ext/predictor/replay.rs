//! Batch replay: predict every iteration of a real run from its recorded shapes, so the
//! prediction error is measured apart from any scheduling divergence.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use super::cross_validation::{pct_error, ErrorStats};
use super::{validate_batch, ExecutionTimePredictor, IterationContext, RequestShape};
use crate::io::bundle::Op;
use crate::{Error, Result};

/// One measured iteration of a real run (a `batch_metrics.csv` row with its
/// `batch_requests.csv` rows).
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayIteration {
    pub batch_id: u64,
    /// Wall-clock duration of the iteration.
    pub measured_duration_ns: u64,
    /// CPU overhead (scheduling, input preparation, sampling, output processing) within the
    /// duration, when the engine measured it.
    pub measured_cpu_overhead_ns: Option<u64>,
    /// Measured time per op (`op_<name>_ns` columns), `None` where not measured.
    pub measured_ops_ns: [Option<u64>; Op::COUNT],
    pub requests: Vec<RequestShape>,
    /// Sequences that emitted a token (from `token_metrics.csv`), if known.
    pub num_logits_rows: Option<u32>,
    /// When the iteration started on the run's clock.
    pub start_time_ns: Option<u64>,
}

impl ReplayIteration {
    /// What a predictor is told about this iteration besides its shapes.
    pub fn context(&self) -> IterationContext {
        IterationContext {
            pipeline_stage: 0,
            num_logits_rows: self.num_logits_rows,
            start_time_ns: self.start_time_ns,
        }
    }
}

/// Predicted vs measured for one iteration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayBatch {
    pub batch_id: u64,
    pub num_requests: usize,
    pub num_tokens: u64,
    pub measured_ns: u64,
    pub predicted_ns: u64,
    pub predicted_model_ns: u64,
    pub predicted_cpu_overhead_ns: u64,
    pub measured_cpu_overhead_ns: Option<u64>,
    /// `100 · (predicted − measured) / measured` of the total.
    pub error_pct: f64,
    pub extrapolated: bool,
}

/// Measured vs predicted summed over a group: one op class over the iterations that
/// measured it, or one kind of iteration ([`IterationKind`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayGroupStats {
    pub total_measured_ns: u64,
    pub total_predicted_ns: u64,
    /// Error of the summed time, %.
    pub total_error_pct: f64,
    /// Per-iteration errors.
    pub errors: ErrorStats,
}

/// Summary over all replayed iterations.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplaySummary {
    pub predictor: String,
    pub num_batches: usize,
    pub num_extrapolated: usize,
    pub total_measured_ns: u64,
    pub total_predicted_ns: u64,
    /// Error of the summed duration (what drives simulated end-to-end time), %.
    pub total_error_pct: f64,
    /// Per-iteration errors of the total duration.
    pub duration: ErrorStats,
    /// Model time (measured duration − measured CPU overhead) vs predicted model time, over
    /// iterations with a measured CPU overhead.
    pub model_time: Option<ErrorStats>,
    /// Measured vs predicted CPU overhead, where measured.
    pub cpu_overhead: Option<ErrorStats>,
    /// By op name, for ops with a measured breakdown: over the iterations that ran the op
    /// or were predicted to.
    pub by_op: BTreeMap<String, ReplayGroupStats>,
    /// By kind of iteration ([`IterationKind::name`]), for the kinds the run has: a
    /// correction that fits single-sequence decode steps and not larger batches shows here,
    /// not in the total.
    pub by_kind: BTreeMap<String, ReplayGroupStats>,
}

/// What limits an iteration, coarsely: whether it prefills, else how many sequences it
/// decodes (powers of two, so that the memory-bound single steps and the batches whose
/// projections do more arithmetic per weight fall apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum IterationKind {
    /// Decode steps of 1, 2–3, 4–7, 8–15 or 16+ sequences (the lower bound).
    Decode(usize),
    /// Iterations with at least one prefill chunk.
    Prefill,
}

impl IterationKind {
    /// The kind of an iteration of `requests`.
    pub fn of(requests: &[RequestShape]) -> IterationKind {
        IterationKind::of_counts(requests.len(), requests.iter().any(|r| r.is_prefill))
    }

    /// The kind of an iteration of `num_requests` requests, any of them prefilling or not
    /// (as `batch_metrics.csv` and `replay.csv` count them).
    pub fn of_counts(num_requests: usize, any_prefill: bool) -> IterationKind {
        if any_prefill {
            IterationKind::Prefill
        } else {
            let n = num_requests.max(1);
            IterationKind::Decode((1usize << n.ilog2()).min(16))
        }
    }

    /// `decode_1`, `decode_2_3`, `decode_4_7`, `decode_8_15`, `decode_16_plus`, `prefill`.
    pub fn name(self) -> String {
        match self {
            IterationKind::Prefill => "prefill".into(),
            IterationKind::Decode(1) => "decode_1".into(),
            IterationKind::Decode(n) if n >= 16 => "decode_16_plus".into(),
            IterationKind::Decode(n) => format!("decode_{n}_{}", 2 * n - 1),
        }
    }
}

/// Sums and per-item errors of `(measured, predicted)` pairs; `None` for none.
fn group_stats(pairs: Vec<(f64, f64)>) -> Option<ReplayGroupStats> {
    let total_measured: f64 = pairs.iter().map(|p| p.0).sum();
    let total_predicted: f64 = pairs.iter().map(|p| p.1).sum();
    let errors = ErrorStats::from_pairs(pairs)?;
    Some(ReplayGroupStats {
        total_measured_ns: total_measured.round() as u64,
        total_predicted_ns: total_predicted.round() as u64,
        total_error_pct: pct_error(total_measured, total_predicted),
        errors,
    })
}

/// Per-iteration results and their summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayReport {
    pub batches: Vec<ReplayBatch>,
    pub summary: ReplaySummary,
}

/// Predicts every iteration with `predictor` and compares with the measurements.
/// Fails on an empty run, a malformed batch, a zero measured duration or a repeated
/// `batch_id` (each names the iteration).
pub fn replay_batches(
    predictor: &dyn ExecutionTimePredictor,
    iterations: &[ReplayIteration],
) -> Result<ReplayReport> {
    if iterations.is_empty() {
        return Err(Error::InvalidInput("batch replay: no iterations".into()));
    }
    let mut seen = HashSet::with_capacity(iterations.len());
    let mut batches = Vec::with_capacity(iterations.len());
    let mut model_pairs = Vec::new();
    let mut cpu_pairs = Vec::new();
    let mut op_pairs: BTreeMap<Op, Vec<(f64, f64)>> = BTreeMap::new();
    for it in iterations {
        let id = it.batch_id;
        if !seen.insert(id) {
            return Err(Error::InvalidInput(format!(
                "batch replay: batch_id {id} appears twice"
            )));
        }
        validate_batch(&it.requests)
            .map_err(|e| Error::InvalidInput(format!("batch replay: batch_id {id}: {e}")))?;
        if it.measured_duration_ns == 0 {
            return Err(Error::InvalidInput(format!(
                "batch replay: batch_id {id} has a measured duration of 0 ns"
            )));
        }
        let ctx = it.context();
        let p = predictor.predict_with(&it.requests, &ctx);
        if let Some(cpu) = it.measured_cpu_overhead_ns {
            let model = it.measured_duration_ns.saturating_sub(cpu);
            model_pairs.push((model as f64, p.model_ns as f64));
            cpu_pairs.push((cpu as f64, p.cpu_overhead_ns as f64));
        }
        for op in Op::ALL {
            // Iterations where the op neither ran nor was predicted say nothing of it (a
            // prefill-attention median over mostly decode-only iterations read 0 %).
            let predicted_ns = p.op_ms(op) * 1e6;
            match it.measured_ops_ns[op.index()] {
                Some(measured) if measured > 0 || predicted_ns > 0.0 => op_pairs
                    .entry(op)
                    .or_default()
                    .push((measured as f64, predicted_ns)),
                _ => {}
            }
        }
        batches.push(ReplayBatch {
            batch_id: id,
            num_requests: it.requests.len(),
            num_tokens: it.requests.iter().map(|r| u64::from(r.num_tokens)).sum(),
            measured_ns: it.measured_duration_ns,
            predicted_ns: p.total_ns,
            predicted_model_ns: p.model_ns,
            predicted_cpu_overhead_ns: p.cpu_overhead_ns,
            measured_cpu_overhead_ns: it.measured_cpu_overhead_ns,
            error_pct: pct_error(it.measured_duration_ns as f64, p.total_ns as f64),
            extrapolated: p.extrapolated,
        });
    }

    let total_measured_ns: u64 = batches.iter().map(|b| b.measured_ns).sum();
    let total_predicted_ns: u64 = batches.iter().map(|b| b.predicted_ns).sum();
    let duration = ErrorStats::from_pairs(
        batches
            .iter()
            .map(|b| (b.measured_ns as f64, b.predicted_ns as f64)),
    )
    .ok_or_else(|| Error::InvalidInput("batch replay: no iterations".into()))?;
    let by_op = op_pairs
        .into_iter()
        .filter_map(|(op, pairs)| Some((op.name().to_owned(), group_stats(pairs)?)))
        .collect();
    let mut kind_pairs: BTreeMap<IterationKind, Vec<(f64, f64)>> = BTreeMap::new();
    for (it, b) in iterations.iter().zip(&batches) {
        kind_pairs
            .entry(IterationKind::of(&it.requests))
            .or_default()
            .push((b.measured_ns as f64, b.predicted_ns as f64));
    }
    let by_kind = kind_pairs
        .into_iter()
        .filter_map(|(kind, pairs)| Some((kind.name(), group_stats(pairs)?)))
        .collect();
    let summary = ReplaySummary {
        predictor: predictor.name().to_owned(),
        num_batches: batches.len(),
        num_extrapolated: batches.iter().filter(|b| b.extrapolated).count(),
        total_measured_ns,
        total_predicted_ns,
        total_error_pct: pct_error(total_measured_ns as f64, total_predicted_ns as f64),
        duration,
        model_time: ErrorStats::from_pairs(model_pairs),
        cpu_overhead: ErrorStats::from_pairs(cpu_pairs),
        by_op,
        by_kind,
    };
    Ok(ReplayReport { batches, summary })
}
