//! Where the gap between the simulated and the real run comes from.
//!
//! Both runs execute the same scheduler, so a difference has three possible sources:
//!
//! * **(a) execution-time prediction** — the predictor's model time for an iteration
//!   differs from the measured forward pass (broken down by op class);
//! * **(b) CPU overhead** — the charged scheduling/preparation/sampling/output costs differ
//!   from what the real loop spent;
//! * **(c) scheduling divergence** — once timings differ, arrivals fall into different
//!   iterations and the two runs form different batches.
//!
//! (a) and (b) need the real run's iterations predicted with their *exact* composition.
//! That is [`IterationPredictions`], which any source can fill: the predictor's batch replay
//! ([`IterationPredictions::from_replay`], every real iteration), or, without a predictor,
//! the simulated iterations that happen to have the same composition at the same position
//! ([`IterationPredictions::from_matched_iterations`], typically the prefix before the runs
//! diverge). When every real iteration is covered, the busy-time gap decomposes exactly:
//!
//! ```text
//! Σ sim durations − Σ real durations
//!   = Σ (predicted model − measured model)      (a) on the real schedule
//!   + Σ (predicted CPU − measured CPU)          (b) on the real schedule
//!   + (Σ sim durations − Σ predicted durations) (c) what the different schedule adds
//! ```

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

pub use crate::vidur_ext::device_speed::DeviceSpeed;

use crate::io::bundle::Op;
use crate::io::records::{BatchMetricsRow, BatchRequestRow};
use crate::io::schema::OP_NAMES;
use crate::vidur_ext::predictor::{
    replay_batches, ExecutionTimePredictor, ReplayIteration, RequestShape,
};
use crate::{Error, Result};

use super::runs::RunData;

/// One real iteration whose duration was also predicted (a row of
/// `iteration_comparison.csv`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IterationTiming {
    pub batch_id: u64,
    pub start_time_ns: u64,
    pub num_requests: u32,
    pub num_tokens: u64,
    pub measured_ns: u64,
    pub predicted_ns: u64,
    pub measured_cpu_overhead_ns: Option<u64>,
    pub predicted_cpu_overhead_ns: Option<u64>,
    pub error_pct: f64,
    pub source: String,
}

/// Measured and predicted time of one op, summed over the covered iterations that
/// measured it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpTotals {
    /// Op name as in `OP_NAMES`.
    pub op: String,
    pub measured_ns: u64,
    pub predicted_ns: u64,
}

/// Predicted vs measured time of real iterations, from any source that can predict an
/// iteration of a given composition. This is the seam between the comparison and the
/// predictor: attribution reads only this.
#[derive(Debug, Clone, PartialEq)]
pub struct IterationPredictions {
    /// `replay:<predictor>` or `matched_sim_iteration`.
    pub source: String,
    pub iterations: Vec<IterationTiming>,
    pub ops: Vec<OpTotals>,
    /// Iterations in the real run (covered or not).
    pub real_iterations: usize,
}

/// Sum of the four measured CPU phases, if the run recorded all of them.
fn cpu_overhead_ns(b: &BatchMetricsRow) -> Option<u64> {
    Some(
        b.cpu_schedule_ns?
            + b.cpu_prepare_inputs_ns?
            + b.cpu_sampler_ns?
            + b.cpu_process_outputs_ns?,
    )
}

/// Each iteration's requests as sorted `(request, tokens, context, prefill)` tuples.
fn compositions(rows: &[BatchRequestRow]) -> BTreeMap<u64, Vec<(u64, u32, u32, bool)>> {
    let mut map: BTreeMap<u64, Vec<(u64, u32, u32, bool)>> = BTreeMap::new();
    for r in rows {
        map.entry(r.batch_id).or_default().push((
            r.request_id,
            r.num_tokens,
            r.num_context_tokens,
            r.is_prefill,
        ));
    }
    for v in map.values_mut() {
        v.sort_unstable();
    }
    map
}

/// A run's iterations in execution order.
fn ordered_batches(run: &RunData) -> Vec<&BatchMetricsRow> {
    let mut batches: Vec<&BatchMetricsRow> = run.batches.iter().flatten().collect();
    batches.sort_by_key(|b| (b.start_time_ns, b.batch_id));
    batches
}

impl IterationPredictions {
    /// Replays every iteration of the real run through `predictor` (the op-time predictor's
    /// batch replay): each iteration's exact composition from `batch_requests.csv`, its
    /// measured duration, CPU phases and per-op times from `batch_metrics.csv`.
    pub fn from_replay(real: &RunData, predictor: &dyn ExecutionTimePredictor) -> Result<Self> {
        let (Some(_), Some(rows)) = (&real.batches, &real.batch_requests) else {
            return Err(Error::InvalidInput(format!(
                "batch replay needs batch_metrics.csv and batch_requests.csv, which {} lacks",
                real.path.display()
            )));
        };
        let shapes = compositions(rows);
        let batches = ordered_batches(real);
        let mut iterations = Vec::with_capacity(batches.len());
        for b in &batches {
            let requests = shapes
                .get(&b.batch_id)
                .map(|v| {
                    v.iter()
                        .map(
                            |&(_, num_tokens, num_context_tokens, is_prefill)| RequestShape {
                                num_tokens,
                                num_context_tokens,
                                is_prefill,
                            },
                        )
                        .collect()
                })
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "{}: batch {} has no rows in batch_requests.csv",
                        real.path.display(),
                        b.batch_id
                    ))
                })?;
            let ops = b.ops();
            let mut measured_ops_ns = [None; Op::COUNT];
            measured_ops_ns.copy_from_slice(&ops);
            iterations.push(ReplayIteration {
                batch_id: b.batch_id,
                measured_duration_ns: b.duration_ns,
                measured_cpu_overhead_ns: cpu_overhead_ns(b),
                measured_ops_ns,
                requests,
                num_logits_rows: None,
                start_time_ns: Some(b.start_time_ns),
            });
        }
        let report = replay_batches(predictor, &iterations)?;
        let source = format!("replay:{}", report.summary.predictor);
        let by_id: BTreeMap<u64, &BatchMetricsRow> =
            batches.iter().map(|b| (b.batch_id, *b)).collect();
        let iterations = report
            .batches
            .iter()
            .map(|r| IterationTiming {
                batch_id: r.batch_id,
                start_time_ns: by_id.get(&r.batch_id).map_or(0, |b| b.start_time_ns),
                num_requests: r.num_requests as u32,
                num_tokens: r.num_tokens,
                measured_ns: r.measured_ns,
                predicted_ns: r.predicted_ns,
                measured_cpu_overhead_ns: r.measured_cpu_overhead_ns,
                predicted_cpu_overhead_ns: Some(r.predicted_cpu_overhead_ns),
                error_pct: r.error_pct,
                source: source.clone(),
            })
            .collect();
        let ops = report
            .summary
            .by_op
            .iter()
            .map(|(op, s)| OpTotals {
                op: op.clone(),
                measured_ns: s.total_measured_ns,
                predicted_ns: s.total_predicted_ns,
            })
            .collect();
        Ok(IterationPredictions {
            source,
            iterations,
            ops,
            real_iterations: batches.len(),
        })
    }

    /// Without a predictor: the real iterations whose composition equals the simulated
    /// iteration at the same position, compared with that simulated iteration's predicted
    /// duration, CPU overhead and per-op breakdown. Compositions come from
    /// `batch_requests.csv` when both runs have it, else from `batch_metrics.csv`'s counts.
    /// `None` when either run has no iterations.
    pub fn from_matched_iterations(real: &RunData, sim: &RunData) -> Option<Self> {
        let (r, s) = (ordered_batches(real), ordered_batches(sim));
        if r.is_empty() || s.is_empty() {
            return None;
        }
        let same = same_composition(real, sim);
        let source = "matched_sim_iteration".to_string();
        let mut iterations = Vec::new();
        let mut op_sums = [(0u64, 0u64, false); OP_NAMES.len()];
        for (a, b) in r.iter().zip(&s) {
            if !same(a, b) {
                continue;
            }
            let error_pct =
                100.0 * (b.duration_ns as f64 - a.duration_ns as f64) / a.duration_ns.max(1) as f64;
            iterations.push(IterationTiming {
                batch_id: a.batch_id,
                start_time_ns: a.start_time_ns,
                num_requests: a.num_requests,
                num_tokens: u64::from(a.num_prefill_tokens) + u64::from(a.num_decode_tokens),
                measured_ns: a.duration_ns,
                predicted_ns: b.duration_ns,
                measured_cpu_overhead_ns: cpu_overhead_ns(a),
                predicted_cpu_overhead_ns: cpu_overhead_ns(b),
                error_pct,
                source: source.clone(),
            });
            for (k, (m, p)) in a.ops().into_iter().zip(b.ops()).enumerate() {
                if let (Some(m), Some(p)) = (m, p) {
                    op_sums[k].0 += m;
                    op_sums[k].1 += p;
                    op_sums[k].2 = true;
                }
            }
        }
        let ops = OP_NAMES
            .iter()
            .zip(op_sums)
            .filter(|(_, (_, _, seen))| *seen)
            .map(|(name, (m, p, _))| OpTotals {
                op: (*name).to_string(),
                measured_ns: m,
                predicted_ns: p,
            })
            .collect();
        Some(IterationPredictions {
            source,
            iterations,
            ops,
            real_iterations: r.len(),
        })
    }

    /// Whether every real iteration was predicted.
    pub fn covers_every_iteration(&self) -> bool {
        self.iterations.len() == self.real_iterations
    }
}

/// Tells whether a real and a simulated iteration have the same composition.
type SameComposition<'a> = Box<dyn Fn(&BatchMetricsRow, &BatchMetricsRow) -> bool + 'a>;

/// The [`SameComposition`] predicate for two runs.
fn same_composition<'a>(real: &'a RunData, sim: &'a RunData) -> SameComposition<'a> {
    match (&real.batch_requests, &sim.batch_requests) {
        (Some(r), Some(s)) => {
            let (r, s) = (compositions(r), compositions(s));
            Box::new(move |a, b| r.get(&a.batch_id) == s.get(&b.batch_id))
        }
        _ => Box::new(|a, b| coarse_composition(a) == coarse_composition(b)),
    }
}

fn coarse_composition(b: &BatchMetricsRow) -> (u32, u32, u32, u32, u64) {
    (
        b.num_prefill_requests,
        b.num_decode_requests,
        b.num_prefill_tokens,
        b.num_decode_tokens,
        b.kv_context_tokens,
    )
}

/// The op classes the report groups ops into (fewer bars, same information). Names are
/// short because they label bars.
pub fn op_class(op: &str) -> &'static str {
    match op {
        "attn_prefill" => "attn prefill",
        "attn_decode" => "attn decode",
        "attn_kv_cache_save" => "KV write",
        "attn_pre_proj" | "attn_post_proj" => "attn proj",
        "mlp_up_proj" | "mlp_down_proj" => "MLP proj",
        "input_layernorm" | "post_attention_layernorm" | "attn_qk_norm" | "final_norm" => "norms",
        "attn_rope" | "mlp_act" | "add" => "RoPE/act/add",
        "emb" | "lm_head" => "emb + LM head",
        "sampler" => "sampler",
        "all_reduce" | "send_recv" => "comm",
        _ => "other ops",
    }
}

/// What an [`IterationPredictions::source`] means, for captions and prose.
pub fn describe_source(source: &str) -> String {
    match source.strip_prefix("replay:") {
        Some(predictor) => format!("batch replay with the {predictor} predictor"),
        None if source == "matched_sim_iteration" => {
            "simulated iterations of identical composition".to_string()
        }
        None => source.to_string(),
    }
}

/// Measured vs predicted time of one component or op class, over the covered iterations.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ComponentError {
    /// The component or op class.
    pub name: String,
    pub measured_ms: f64,
    pub predicted_ms: f64,
    /// `predicted − measured`, ms: this component's contribution to the busy-time gap.
    pub diff_ms: f64,
    /// `diff_ms` as % of the covered iterations' measured busy time.
    pub diff_pct_of_busy: f64,
    /// `100 · (predicted − measured) / measured` of this component alone; `None` if 0.
    pub err_pct: Option<f64>,
}

impl ComponentError {
    fn new(name: impl Into<String>, measured_ns: f64, predicted_ns: f64, busy_ns: f64) -> Self {
        let diff = predicted_ns - measured_ns;
        ComponentError {
            name: name.into(),
            measured_ms: measured_ns / 1e6,
            predicted_ms: predicted_ns / 1e6,
            diff_ms: diff / 1e6,
            diff_pct_of_busy: if busy_ns > 0.0 {
                100.0 * diff / busy_ns
            } else {
                0.0
            },
            err_pct: (measured_ns > 0.0).then(|| 100.0 * diff / measured_ns),
        }
    }
}

/// How far, and from when, the two runs formed different iterations.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct SchedulingDivergence {
    pub real_iterations: usize,
    pub sim_iterations: usize,
    /// `batch_requests` (exact compositions) or `batch_metrics counts`.
    pub compared_by: String,
    /// Iterations identical from the start.
    pub identical_prefix: usize,
    /// Positions (over the shorter run) whose compositions differ, plus the length
    /// difference.
    pub differing_iterations: usize,
    /// `differing_iterations` / the longer run's iteration count.
    pub differing_fraction: f64,
    /// Real start time of the first differing iteration, ms (`None` if none differs).
    pub first_divergence_ms: Option<f64>,
    /// That time as a fraction of the real run's makespan.
    pub first_divergence_fraction: Option<f64>,
}

impl SchedulingDivergence {
    /// Compares the two runs' iterations position by position; `None` without iterations.
    pub fn of(real: &RunData, sim: &RunData) -> Option<Self> {
        let (r, s) = (ordered_batches(real), ordered_batches(sim));
        if r.is_empty() || s.is_empty() {
            return None;
        }
        let same = same_composition(real, sim);
        let flags: Vec<bool> = r.iter().zip(&s).map(|(a, b)| same(a, b)).collect();
        let identical_prefix = flags.iter().take_while(|&&x| x).count();
        let differing = flags.iter().filter(|&&x| !x).count() + r.len().abs_diff(s.len());
        let first = if identical_prefix < r.len().min(s.len()) {
            Some(r[identical_prefix].start_time_ns)
        } else if r.len() != s.len() {
            r.get(identical_prefix)
                .or(r.last())
                .map(|b| b.start_time_ns)
        } else {
            None
        };
        let makespan = r.iter().map(|b| b.end_time_ns).max().unwrap_or(0);
        Some(SchedulingDivergence {
            real_iterations: r.len(),
            sim_iterations: s.len(),
            compared_by: if real.batch_requests.is_some() && sim.batch_requests.is_some() {
                "batch_requests".into()
            } else {
                "batch_metrics counts".into()
            },
            identical_prefix,
            differing_iterations: differing,
            differing_fraction: differing as f64 / r.len().max(s.len()) as f64,
            first_divergence_ms: first.map(|t| t as f64 / 1e6),
            first_divergence_fraction: first
                .filter(|_| makespan > 0)
                .map(|t| t as f64 / makespan as f64),
        })
    }
}

/// The exact split of the busy-time gap (see the module docs), when every real iteration
/// was predicted.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct GapDecomposition {
    /// Σ real iteration durations, ms.
    pub real_busy_ms: f64,
    /// Σ simulated iteration durations, ms.
    pub sim_busy_ms: f64,
    /// `sim_busy_ms − real_busy_ms`.
    pub gap_ms: f64,
    /// (a), ms.
    pub execution_ms: f64,
    /// (b), ms; 0 when the real run did not measure its CPU phases (then inside (a)).
    pub cpu_overhead_ms: f64,
    /// (c), ms.
    pub scheduling_ms: f64,
}

/// Total and per-iteration engine time of both runs, whatever the coverage of the
/// per-iteration predictions.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct BusyTime {
    /// Σ real iteration durations, ms.
    #[schemars(range(min = 0.0))]
    pub real_busy_ms: f64,
    /// Σ simulated iteration durations, ms.
    #[schemars(range(min = 0.0))]
    pub sim_busy_ms: f64,
    /// `100 · (sim − real) / real` of the busy time.
    pub busy_err_pct: Option<f64>,
    #[schemars(range(min = 1))]
    pub real_iterations: usize,
    #[schemars(range(min = 1))]
    pub sim_iterations: usize,
    #[schemars(range(min = 0.0))]
    pub real_mean_iteration_ms: f64,
    #[schemars(range(min = 0.0))]
    pub sim_mean_iteration_ms: f64,
}

/// Mean iteration time at one batch size (requests per iteration), on each side. Unlike
/// the paired predictions this needs no identical batches, so it covers the whole run: it
/// shows at which batch sizes the simulator's iterations are too fast or too slow.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct BatchSizeTiming {
    pub num_requests: u32,
    pub real_iterations: usize,
    pub sim_iterations: usize,
    pub real_mean_ms: Option<f64>,
    pub sim_mean_ms: Option<f64>,
}

fn busy_time(real: &RunData, sim: &RunData) -> Option<BusyTime> {
    let (r, s) = (real.batches.as_ref()?, sim.batches.as_ref()?);
    if r.is_empty() || s.is_empty() {
        return None;
    }
    let total = |b: &[BatchMetricsRow]| b.iter().map(|x| x.duration_ns as f64).sum::<f64>() / 1e6;
    let (rt, st) = (total(r), total(s));
    Some(BusyTime {
        real_busy_ms: rt,
        sim_busy_ms: st,
        busy_err_pct: (rt > 0.0).then(|| 100.0 * (st - rt) / rt),
        real_iterations: r.len(),
        sim_iterations: s.len(),
        real_mean_iteration_ms: rt / r.len() as f64,
        sim_mean_iteration_ms: st / s.len() as f64,
    })
}

fn by_batch_size(real: &RunData, sim: &RunData) -> Vec<BatchSizeTiming> {
    let mut groups: BTreeMap<u32, [(usize, f64); 2]> = BTreeMap::new();
    for (side, run) in [real, sim].into_iter().enumerate() {
        for b in run.batches.iter().flatten() {
            let g = groups.entry(b.num_requests).or_default();
            g[side].0 += 1;
            g[side].1 += b.duration_ns as f64 / 1e6;
        }
    }
    let mean = |(n, sum): (usize, f64)| (n > 0).then(|| sum / n as f64);
    groups
        .into_iter()
        .map(|(num_requests, [r, s])| BatchSizeTiming {
            num_requests,
            real_iterations: r.0,
            sim_iterations: s.0,
            real_mean_ms: mean(r),
            sim_mean_ms: mean(s),
        })
        .collect()
}

/// The whole attribution.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[schemars(transform = appended_after_v1)]
pub struct Attribution {
    /// Where the per-iteration predictions came from; `None` if nothing could be predicted.
    pub source: Option<String>,
    /// Real iterations predicted / in the run.
    pub iterations_covered: usize,
    pub real_iterations: usize,
    /// (a) over the covered iterations.
    pub execution: Option<ComponentError>,
    /// (b) over the covered iterations (where CPU phases were measured).
    pub cpu_overhead: Option<ComponentError>,
    /// (a) by op class, largest |difference| first.
    pub by_op_class: Vec<ComponentError>,
    /// Median |error| of predicted iteration durations, %.
    pub iteration_median_abs_err_pct: Option<f64>,
    /// (c).
    pub scheduling: Option<SchedulingDivergence>,
    pub decomposition: Option<GapDecomposition>,
    /// Busy time of both runs.
    pub busy: Option<BusyTime>,
    /// Mean iteration time by batch size, both runs.
    pub by_batch_size: Vec<BatchSizeTiming>,
    /// What limits this attribution, one sentence each.
    pub notes: Vec<String>,
    /// Speed of the device at profiling vs real-run time, where both runs recorded it.
    pub device_speed: Option<DeviceSpeed>,
    /// (a) again with every prediction scaled to the device's measured speed over the real
    /// run (probes and host load; `vidur_ext::device_speed`), where both the bundle and the
    /// run recorded a device-speed timeline.
    pub speed_corrected: Option<SpeedCorrected>,
}

/// `device_speed` and `speed_corrected` came after v1's first release: optional to
/// readers, so that older summaries still validate (they are always written).
fn appended_after_v1(schema: &mut schemars::Schema) {
    if let Some(serde_json::Value::Array(required)) = schema.get_mut("required") {
        required.retain(|field| field != "device_speed" && field != "speed_corrected");
    }
}

/// The execution-time error once predictions follow the device's measured speed.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct SpeedCorrected {
    /// (a) with the corrected predictions.
    pub execution: ComponentError,
    /// Median |error| of a corrected iteration, %.
    pub iteration_median_abs_err_pct: Option<f64>,
    /// How much of the raw execution-time gap the device's speed explains:
    /// `100 · (raw − corrected) / raw` of the difference; `None` when the raw one is 0.
    pub drift_explains_pct: Option<f64>,
}

impl SpeedCorrected {
    /// From the raw attribution and the same real run replayed with corrected predictions.
    pub fn of(
        raw: &Attribution,
        real: &RunData,
        sim: &RunData,
        corrected: &IterationPredictions,
    ) -> Option<Self> {
        let raw_exec = raw.execution.as_ref()?;
        let c = Attribution::of(real, sim, Some(corrected));
        let execution = c.execution?;
        Some(SpeedCorrected {
            drift_explains_pct: (raw_exec.diff_ms != 0.0)
                .then(|| 100.0 * (raw_exec.diff_ms - execution.diff_ms) / raw_exec.diff_ms),
            execution,
            iteration_median_abs_err_pct: c.iteration_median_abs_err_pct,
        })
    }
}

impl Attribution {
    /// Attributes the gap between `real` and `sim` from `predictions` (if any).
    pub fn of(real: &RunData, sim: &RunData, predictions: Option<&IterationPredictions>) -> Self {
        let mut notes = Vec::new();
        let scheduling = SchedulingDivergence::of(real, sim);
        let busy_totals = busy_time(real, sim);
        let by_batch_size = by_batch_size(real, sim);
        if scheduling.is_none() {
            notes.push("Scheduling divergence needs batch_metrics.csv on both sides; one side has no iterations.".into());
        }
        let Some(p) = predictions.filter(|p| !p.iterations.is_empty()) else {
            notes.push(
                "No real iteration could be predicted with its exact composition (no batch replay and no identically composed simulated iteration), so execution and CPU-overhead errors are not separated.".into(),
            );
            return Attribution {
                source: predictions.map(|p| p.source.clone()),
                iterations_covered: 0,
                real_iterations: predictions.map_or(0, |p| p.real_iterations),
                execution: None,
                cpu_overhead: None,
                by_op_class: Vec::new(),
                iteration_median_abs_err_pct: None,
                scheduling,
                decomposition: None,
                busy: busy_totals,
                by_batch_size,
                notes,
                device_speed: None,
                speed_corrected: None,
            };
        };
        let busy: f64 = p.iterations.iter().map(|i| i.measured_ns as f64).sum();
        let with_cpu: Vec<&IterationTiming> = p
            .iterations
            .iter()
            .filter(|i| {
                i.measured_cpu_overhead_ns.is_some() && i.predicted_cpu_overhead_ns.is_some()
            })
            .collect();
        let cpu_measured: f64 = with_cpu
            .iter()
            .filter_map(|i| i.measured_cpu_overhead_ns)
            .map(|v| v as f64)
            .sum();
        let cpu_predicted: f64 = with_cpu
            .iter()
            .filter_map(|i| i.predicted_cpu_overhead_ns)
            .map(|v| v as f64)
            .sum();
        let cpu_overhead = (!with_cpu.is_empty())
            .then(|| ComponentError::new("CPU overhead", cpu_measured, cpu_predicted, busy));
        if cpu_overhead.is_none() {
            notes.push("CPU phases were not measured on both sides, so CPU-overhead error is counted within execution time.".into());
        } else if with_cpu.len() < p.iterations.len() {
            notes.push(format!(
                "CPU phases were measured for {} of {} covered iterations; the rest count wholly as execution time.",
                with_cpu.len(),
                p.iterations.len()
            ));
        }
        let total_predicted: f64 = p.iterations.iter().map(|i| i.predicted_ns as f64).sum();
        let execution = ComponentError::new(
            "execution time",
            busy - cpu_measured,
            total_predicted - cpu_predicted,
            busy,
        );
        let mut classes: BTreeMap<&'static str, (f64, f64)> = BTreeMap::new();
        // The sampler is one of the CPU phases: when those are separated it is in (b) already.
        let skip_sampler = cpu_overhead.is_some();
        for op in p
            .ops
            .iter()
            .filter(|o| !(skip_sampler && o.op == "sampler"))
        {
            let e = classes.entry(op_class(&op.op)).or_default();
            e.0 += op.measured_ns as f64;
            e.1 += op.predicted_ns as f64;
        }
        let mut by_op_class: Vec<ComponentError> = classes
            .into_iter()
            .map(|(name, (m, pr))| ComponentError::new(name, m, pr, busy))
            .collect();
        by_op_class.sort_by(|a, b| b.diff_ms.abs().total_cmp(&a.diff_ms.abs()));
        if by_op_class.is_empty() {
            notes.push(
                "No per-op times on both sides, so execution error is not broken down by op class."
                    .into(),
            );
        }
        let mut abs_errors: Vec<f64> = p.iterations.iter().map(|i| i.error_pct.abs()).collect();
        abs_errors.sort_by(f64::total_cmp);
        let iteration_median_abs_err_pct =
            crate::analysis::stats::percentile(&abs_errors, 50.0).ok();
        let decomposition = if p.covers_every_iteration() {
            let sim_busy: f64 = sim
                .batches
                .iter()
                .flatten()
                .map(|b| b.duration_ns as f64)
                .sum();
            let gap = sim_busy - busy;
            let a = execution.diff_ms * 1e6;
            let b = cpu_overhead.as_ref().map_or(0.0, |c| c.diff_ms * 1e6);
            Some(GapDecomposition {
                real_busy_ms: busy / 1e6,
                sim_busy_ms: sim_busy / 1e6,
                gap_ms: gap / 1e6,
                execution_ms: a / 1e6,
                cpu_overhead_ms: b / 1e6,
                scheduling_ms: (gap - a - b) / 1e6,
            })
        } else {
            notes.push(format!(
                "Execution and CPU-overhead errors are measured on the {} of {} real iterations that {}; the busy-time gap is not decomposed.",
                p.iterations.len(),
                p.real_iterations,
                if p.source == "matched_sim_iteration" {
                    "the simulator formed identically at the same position (no batch replay was available)"
                } else {
                    "could be replayed"
                }
            ));
            None
        };
        Attribution {
            source: Some(p.source.clone()),
            iterations_covered: p.iterations.len(),
            real_iterations: p.real_iterations,
            execution: Some(execution),
            cpu_overhead,
            by_op_class,
            iteration_median_abs_err_pct,
            scheduling,
            decomposition,
            busy: busy_totals,
            by_batch_size,
            notes,
            device_speed: None,
            speed_corrected: None,
        }
    }

    /// How much longer (positive) or shorter simulated iterations are than real ones of
    /// the same batch size, %: the per-size relative differences of the mean iteration time,
    /// weighted by the real run's iterations at each size. `None` without shared sizes.
    pub fn same_batch_size_err_pct(&self) -> Option<f64> {
        let (mut weighted, mut weight) = (0.0, 0.0);
        for b in &self.by_batch_size {
            if let (Some(r), Some(s)) = (b.real_mean_ms, b.sim_mean_ms) {
                if r > 0.0 {
                    weighted += b.real_iterations as f64 * (s - r) / r;
                    weight += b.real_iterations as f64;
                }
            }
        }
        (weight > 0.0).then(|| 100.0 * weighted / weight)
    }

    /// The largest single contributor, for the verdict: the op class or CPU overhead with
    /// the largest |difference|, or scheduling when the decomposition says it dominates.
    pub fn dominant_source(&self) -> Option<String> {
        let mut candidates: Vec<(f64, String)> = self
            .by_op_class
            .iter()
            .map(|c| (c.diff_ms, format!("{} prediction", c.name)))
            .collect();
        if let Some(c) = &self.cpu_overhead {
            candidates.push((c.diff_ms, "CPU-overhead prediction".into()));
        }
        if let Some(d) = &self.decomposition {
            candidates.push((d.scheduling_ms, "scheduling divergence".into()));
            if self.by_op_class.is_empty() {
                candidates.push((d.execution_ms, "execution-time prediction".into()));
            }
        }
        candidates
            .into_iter()
            .filter(|(d, _)| *d != 0.0)
            .max_by(|a, b| a.0.abs().total_cmp(&b.0.abs()))
            .map(|(d, what)| {
                format!(
                    "{what} ({} {:.1} ms)",
                    if d > 0.0 { "over by" } else { "under by" },
                    d.abs()
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::compare::runs::{RunIdentity, RunSource};
    use crate::vidur_ext::predictor::{BatchPrediction, IterationContext};

    fn batch(id: u64, start: u64, dur: u64, cpu: u64, attn: u64, mlp: u64) -> BatchMetricsRow {
        let mut b = BatchMetricsRow {
            batch_id: id,
            start_time_ns: start,
            end_time_ns: start + dur,
            duration_ns: dur,
            num_requests: 1,
            num_decode_requests: 1,
            num_decode_tokens: 1,
            cpu_schedule_ns: Some(cpu),
            cpu_prepare_inputs_ns: Some(0),
            cpu_sampler_ns: Some(0),
            cpu_process_outputs_ns: Some(0),
            ..BatchMetricsRow::default()
        };
        b.op_attn_decode_ns = Some(attn);
        b.op_mlp_up_proj_ns = Some(mlp);
        b
    }

    fn req(batch_id: u64, request_id: u64, ctx: u32) -> BatchRequestRow {
        BatchRequestRow {
            batch_id,
            request_id,
            num_tokens: 1,
            num_context_tokens: ctx,
            is_prefill: false,
        }
    }

    fn run(batches: Vec<BatchMetricsRow>, rows: Vec<BatchRequestRow>) -> RunData {
        RunData {
            path: "run".into(),
            source: RunSource::Simreal,
            backend: "t".into(),
            identity: RunIdentity::default(),
            requests: Vec::new(),
            tokens: None,
            batches: Some(batches),
            batch_requests: Some(rows),
            notes: Vec::new(),
        }
    }

    /// Real: three decode iterations of 1000 ns (100 CPU, 600 attention, 300 MLP).
    fn real() -> RunData {
        run(
            vec![
                batch(0, 0, 1000, 100, 600, 300),
                batch(1, 1000, 1000, 100, 600, 300),
                batch(2, 2000, 1000, 100, 600, 300),
            ],
            vec![req(0, 0, 10), req(1, 0, 11), req(2, 0, 12)],
        )
    }

    #[test]
    fn matched_iterations_and_divergence_on_a_hand_built_pair() {
        // Sim: same first two iterations (1200 ns: 150 CPU, 750 attention, 300 MLP), then a
        // different third (another request joined) and a fourth.
        let sim = run(
            vec![
                batch(0, 0, 1200, 150, 750, 300),
                batch(1, 1200, 1200, 150, 750, 300),
                batch(2, 2400, 1500, 150, 900, 450),
                batch(3, 3900, 1500, 150, 900, 450),
            ],
            vec![
                req(0, 0, 10),
                req(1, 0, 11),
                req(2, 0, 12),
                req(2, 1, 0),
                req(3, 0, 13),
            ],
        );
        let real = real();
        let p = IterationPredictions::from_matched_iterations(&real, &sim).unwrap();
        assert_eq!(p.iterations.len(), 2);
        assert!(!p.covers_every_iteration());
        let a = Attribution::of(&real, &sim, Some(&p));
        // Busy time of the covered iterations: 2000 ns. CPU 200 → 300 (+100 ns = +5 % of busy);
        // execution 1800 → 2100 (+300 ns, +15 %).
        let cpu = a.cpu_overhead.as_ref().unwrap();
        assert!((cpu.diff_ms - 100e-6).abs() < 1e-12);
        assert!((cpu.diff_pct_of_busy - 5.0).abs() < 1e-9);
        assert!((cpu.err_pct.unwrap() - 50.0).abs() < 1e-9);
        let exec = a.execution.as_ref().unwrap();
        assert!((exec.diff_ms - 300e-6).abs() < 1e-12);
        assert!((exec.diff_pct_of_busy - 15.0).abs() < 1e-9);
        // By op class: attention (decode) +300 ns, MLP projections 0.
        assert_eq!(a.by_op_class[0].name, "attn decode");
        assert!((a.by_op_class[0].diff_ms - 300e-6).abs() < 1e-12);
        assert!((a.by_op_class[0].err_pct.unwrap() - 25.0).abs() < 1e-9);
        assert_eq!(a.by_op_class[1].diff_ms, 0.0);
        assert!((a.iteration_median_abs_err_pct.unwrap() - 20.0).abs() < 1e-9);
        assert!(a.decomposition.is_none());
        // Divergence: iteration 2 differs, the sim has one more → 2 of 4 differ, from t = 2000 ns.
        let s = a.scheduling.as_ref().unwrap();
        assert_eq!((s.identical_prefix, s.differing_iterations), (2, 2));
        assert!((s.differing_fraction - 0.5).abs() < 1e-12);
        assert!((s.first_divergence_ms.unwrap() - 0.002).abs() < 1e-12);
        assert!((s.first_divergence_fraction.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        // Busy time: real 3000 ns over 3 iterations, sim 5400 over 4 (+80 %).
        let b = a.busy.as_ref().unwrap();
        assert!((b.real_busy_ms - 3000e-6).abs() < 1e-12);
        assert!((b.sim_busy_ms - 5400e-6).abs() < 1e-12);
        assert!((b.busy_err_pct.unwrap() - 80.0).abs() < 1e-9);
        assert!((b.sim_mean_iteration_ms - 1350e-6).abs() < 1e-12);
        // Every iteration has one request (num_requests = 1 in `batch`): one size, real mean
        // 1000 ns, sim mean 1350 ns → +35 %.
        assert_eq!(a.by_batch_size.len(), 1);
        assert_eq!(
            (
                a.by_batch_size[0].real_iterations,
                a.by_batch_size[0].sim_iterations
            ),
            (3, 4)
        );
        assert!((a.same_batch_size_err_pct().unwrap() - 35.0).abs() < 1e-9);
        assert_eq!(
            a.dominant_source().unwrap(),
            "attn decode prediction (over by 0.0 ms)"
        );
    }

    /// Predicts 900 ns of attention + 300 ns of MLP + 200 ns CPU for every decode iteration.
    struct Constant;

    impl ExecutionTimePredictor for Constant {
        fn name(&self) -> &'static str {
            "constant"
        }

        fn predict_with(
            &self,
            _batch: &[RequestShape],
            _ctx: &IterationContext,
        ) -> BatchPrediction {
            let mut p = BatchPrediction::EMPTY;
            p.ops_ms[Op::AttnDecode.index()] = 900e-6;
            p.ops_ms[Op::MlpUpProj.index()] = 300e-6;
            p.model_ns = 1200;
            p.cpu_overhead_ns = 200;
            p.total_ns = 1400;
            p
        }
    }

    #[test]
    fn replay_covers_every_iteration_and_decomposes_the_gap_exactly() {
        let real = real();
        // Sim: two iterations of 2000 ns — a different schedule with the same total work.
        let sim = run(
            vec![batch(0, 0, 2000, 0, 0, 0), batch(1, 2000, 2000, 0, 0, 0)],
            vec![req(0, 0, 10), req(0, 1, 0), req(1, 0, 11)],
        );
        let p = IterationPredictions::from_replay(&real, &Constant).unwrap();
        assert!(p.covers_every_iteration());
        assert_eq!(p.source, "replay:constant");
        assert!(p
            .iterations
            .iter()
            .all(|i| (i.error_pct - 40.0).abs() < 1e-9));
        let a = Attribution::of(&real, &sim, Some(&p));
        let d = a.decomposition.as_ref().unwrap();
        // real busy 3000, sim busy 4000: gap +1000 = (a) 3·(1200 − 900) = +900
        // + (b) 3·(200 − 100) = +300 + (c) 4000 − 3·1400 = −200.
        assert!((d.gap_ms - 1000e-6).abs() < 1e-12);
        assert!((d.execution_ms - 900e-6).abs() < 1e-12);
        assert!((d.cpu_overhead_ms - 300e-6).abs() < 1e-12);
        assert!((d.scheduling_ms + 200e-6).abs() < 1e-12);
        assert!((d.execution_ms + d.cpu_overhead_ms + d.scheduling_ms - d.gap_ms).abs() < 1e-12);
        // Op classes: attention +3·300 = 900 ns; MLP 0.
        assert_eq!(a.by_op_class[0].name, "attn decode");
        assert!((a.by_op_class[0].diff_ms - 900e-6).abs() < 1e-12);
        assert!((a.by_op_class[0].diff_pct_of_busy - 30.0).abs() < 1e-9);
    }

    #[test]
    fn nothing_to_predict_is_said_not_invented() {
        let mut sim = real();
        sim.batch_requests = Some(vec![req(0, 5, 0), req(1, 5, 1), req(2, 5, 2)]);
        let real = real();
        let p = IterationPredictions::from_matched_iterations(&real, &sim).unwrap();
        assert!(p.iterations.is_empty());
        let a = Attribution::of(&real, &sim, Some(&p));
        assert!(a.execution.is_none() && a.cpu_overhead.is_none());
        assert!(a.notes.iter().any(|n| n.contains("not separated")));
        assert_eq!(a.scheduling.as_ref().unwrap().differing_iterations, 3);
    }
}
