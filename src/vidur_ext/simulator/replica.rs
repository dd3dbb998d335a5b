//! One simulated replica: the shared [`ReplicaScheduler`], its pipeline stages, and the
//! requests it serves — the real engine's loop on a virtual clock.
//!
//! At a scheduling point the replica forms batches while a pipeline slot is free; each batch
//! passes through the stages in order, each stage busy for the predicted duration of its
//! share (its layers, its send/recv, the CPU overheads Vidur charges per stage). With one
//! stage a batch occupies `[start, start + schedule + prepare + forward + sample + process]`,
//! the phases of the real loop, and its tokens are stamped at its end.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use super::clock::SimTime;
use super::cluster::SimRequest;
use super::events::{EventKind, EventQueue};
use super::summary::Recorder;
use crate::io::bundle::{CpuOverheadTerm, Op, OpSet};
use crate::io::records::{BatchMetricsRow, RequestMetricsRow, RequestTimeSummary, TokenMetricsRow};
use crate::scheduler::{Rejection, ReplicaScheduler, RequestSpec, ScheduledBatch, SchedulerConfig};
use crate::vidur_ext::predictor::{
    ms_to_ns, BatchPrediction, ExecutionTimePredictor, IterationContext, RequestShape,
};
use crate::{Error, Result};

/// Static settings shared by the replicas of a run.
#[derive(Debug, Clone)]
pub(super) struct ReplicaSettings {
    pub scheduler: SchedulerConfig,
    pub num_kv_blocks: usize,
    pub num_stages: u32,
    /// Longest prompt + output a request may have (the real engine's context check).
    pub max_model_len: u32,
    /// `backend` column value.
    pub backend_name: String,
}

/// What a replica needs from the run while handling an event.
pub(super) struct Env<'a, 's, T> {
    pub queue: &'a mut EventQueue<T>,
    pub predictor: &'a dyn ExecutionTimePredictor,
    pub recorder: &'a mut Recorder<'s>,
    /// Run-wide batch ids, in formation order across replicas.
    pub next_batch_id: &'a mut u64,
}

/// A request on this replica, from admission to completion.
struct Tracked {
    /// Arrival order in the run (the order of request rows).
    seq: u64,
    times: RequestTimeSummary,
    num_prefill_tokens: u32,
    num_decode_tokens: u32,
}

/// Time charged to a batch, summed over its pipeline stages.
#[derive(Debug, Default)]
struct Charge {
    model_ns: u64,
    /// Per [`CpuOverheadTerm`], split so that the terms sum to the predicted CPU time.
    cpu_ns: [u64; CpuOverheadTerm::COUNT],
    ops_ns: [u64; Op::COUNT],
    extrapolated: bool,
    extrapolated_ops: OpSet,
}

impl Charge {
    /// Adds one stage's prediction, which the clock charged as `charged_ns` (its end minus
    /// its start as written): the CPU terms as predicted, the model time the rest, so the
    /// phases add up to the charged time on either clock (on the integer clock the rest is
    /// `model_ns` exactly).
    fn add(&mut self, p: &BatchPrediction, charged_ns: u64) {
        // Round at cumulative boundaries, summing in the predictor's order, so the terms add
        // up to exactly `cpu_overhead_ns` (rounding each term alone would not).
        let mut cumulative_ms = 0.0;
        let mut cpu_charged_ns = 0;
        for (i, ms) in p.cpu_overheads_ms.iter().enumerate() {
            cumulative_ms += ms;
            let boundary = ms_to_ns(cumulative_ms);
            self.cpu_ns[i] += boundary.saturating_sub(cpu_charged_ns);
            cpu_charged_ns = cpu_charged_ns.max(boundary);
        }
        self.model_ns += charged_ns.saturating_sub(cpu_charged_ns);
        for (total, ms) in self.ops_ns.iter_mut().zip(p.ops_ms) {
            *total += ms_to_ns(ms);
        }
        self.extrapolated |= p.extrapolated;
        self.extrapolated_ops = self.extrapolated_ops.union(p.extrapolated_ops);
    }
}

/// A formed batch that has not ended.
struct InFlight<T> {
    /// Run-wide id.
    id: u64,
    batch: ScheduledBatch,
    start: T,
    num_waiting: u32,
    shapes: Vec<RequestShape>,
    num_logits_rows: u32,
    charge: Charge,
}

#[derive(Debug, Default)]
struct PipelineStage {
    busy: bool,
    /// Batches waiting for this stage, by run-wide id.
    queue: VecDeque<u64>,
}

/// One replica, on a clock of time type `T`.
pub(super) struct Replica<T> {
    id: u32,
    scheduler: ReplicaScheduler,
    stages: Vec<PipelineStage>,
    in_flight: Vec<InFlight<T>>,
    requests: HashMap<u64, Tracked, BuildHasherDefault<IdHasher>>,
    max_model_len: u32,
    backend_name: String,
    spare_shapes: Vec<Vec<RequestShape>>,
}

impl<T: SimTime> Replica<T> {
    pub fn new(id: u32, settings: &ReplicaSettings) -> Result<Replica<T>> {
        let stages = settings.num_stages as usize;
        Ok(Replica {
            id,
            scheduler: ReplicaScheduler::new(&settings.scheduler, settings.num_kv_blocks, stages)?,
            stages: (0..stages).map(|_| PipelineStage::default()).collect(),
            in_flight: Vec::with_capacity(stages),
            requests: HashMap::default(),
            max_model_len: settings.max_model_len,
            backend_name: settings.backend_name.clone(),
            spare_shapes: Vec::new(),
        })
    }

    /// Requests queued for admission (what `lor` balances).
    pub fn num_waiting(&self) -> usize {
        self.scheduler.num_waiting()
    }

    /// Takes an arrived request, or records it as an error if it can never run here: longer
    /// than the model's context (`context_overflow`), or unschedulable on this KV pool
    /// (`kv_capacity`) — as the real engine does.
    pub fn admit(&mut self, req: &SimRequest, seq: u64, recorder: &mut Recorder) -> Result<()> {
        let total = u64::from(req.num_prefill_tokens) + u64::from(req.num_decode_tokens);
        let rejection = if total > u64::from(self.max_model_len) {
            Some((
                "context_overflow",
                format!(
                    "prompt {} + output {} tokens exceeds the model's {}-token context",
                    req.num_prefill_tokens, req.num_decode_tokens, self.max_model_len
                ),
            ))
        } else {
            let spec = RequestSpec {
                request_id: req.request_id,
                arrival_time_ns: req.arrival_time_ns,
                num_prefill_tokens: req.num_prefill_tokens,
                num_decode_tokens: req.num_decode_tokens,
            };
            self.scheduler.add_request(spec).err().map(|r| {
                let kind = match r {
                    Rejection::InvalidLengths { .. } | Rejection::DuplicateId { .. } => {
                        "invalid_request"
                    }
                    _ => "kv_capacity",
                };
                (kind, r.to_string())
            })
        };
        let times = RequestTimeSummary::arrived(req.arrival_time_ns);
        match rejection {
            None => {
                let tracked = Tracked {
                    seq,
                    times,
                    num_prefill_tokens: req.num_prefill_tokens,
                    num_decode_tokens: req.num_decode_tokens,
                };
                self.requests.insert(req.request_id, tracked);
                Ok(())
            }
            Some((kind, msg)) => {
                let row = RequestMetricsRow::from_summary(
                    req.request_id,
                    &times,
                    req.num_prefill_tokens,
                    req.num_decode_tokens,
                    0,
                    self.id,
                    &self.backend_name,
                    Some((kind, &msg)),
                );
                recorder.finished(seq, row, true)
            }
        }
    }

    /// A scheduling point: forms batches while a pipeline slot is free and sends them to
    /// the first stage.
    pub fn schedule(&mut self, now: T, env: &mut Env<T>) -> Result<()> {
        let now_ns = now.to_ns();
        while let Some(batch) = self.scheduler.schedule() {
            let id = *env.next_batch_id;
            *env.next_batch_id += 1;
            let mut shapes = self.spare_shapes.pop().unwrap_or_default();
            let mut num_logits_rows = 0;
            for e in &batch.entries {
                let tracked = self.requests.get_mut(&e.request_id).ok_or_else(|| {
                    Error::Msg(format!("scheduled unknown request {}", e.request_id))
                })?;
                if tracked.times.scheduled_time_ns.is_none() {
                    tracked.times.scheduled_time_ns = Some(now_ns);
                    env.recorder.first_scheduled();
                }
                shapes.push(RequestShape {
                    num_tokens: e.num_tokens,
                    num_context_tokens: e.num_context_tokens,
                    is_prefill: e.is_prefill,
                });
                num_logits_rows += u32::from(e.emits_token);
            }
            self.in_flight.push(InFlight {
                id,
                batch,
                start: now,
                num_waiting: self.scheduler.num_waiting() as u32,
                shapes,
                num_logits_rows,
                charge: Charge::default(),
            });
            self.stages[0].queue.push_back(id);
        }
        self.start_stage(0, now, env)
    }

    /// Starts the next queued batch on `stage` if the stage is free.
    fn start_stage(&mut self, stage: u32, now: T, env: &mut Env<T>) -> Result<()> {
        let s = &mut self.stages[stage as usize];
        if s.busy {
            return Ok(());
        }
        let Some(id) = s.queue.pop_front() else {
            return Ok(());
        };
        s.busy = true;
        let f = self.in_flight_mut(id)?;
        let ctx = IterationContext {
            pipeline_stage: stage,
            num_logits_rows: Some(f.num_logits_rows),
            start_time_ns: Some(now.to_ns()),
        };
        let prediction = env.predictor.predict_with(&f.shapes, &ctx);
        let end = now.after(&prediction);
        f.charge.add(&prediction, end.to_ns() - now.to_ns());
        env.queue.push(
            end,
            EventKind::StageEnd {
                replica: self.id,
                stage,
                batch: id,
            },
        );
        Ok(())
    }

    /// `stage` finished its share of batch `id`: hand the batch on (or end it) and start the
    /// stage's next batch.
    pub fn on_stage_end(&mut self, stage: u32, id: u64, now: T, env: &mut Env<T>) -> Result<()> {
        self.stages[stage as usize].busy = false;
        let next = stage + 1;
        if next as usize == self.stages.len() {
            env.queue.push(
                now,
                EventKind::BatchEnd {
                    replica: self.id,
                    batch: id,
                },
            );
        } else {
            self.stages[next as usize].queue.push_back(id);
            self.start_stage(next, now, env)?;
        }
        self.start_stage(stage, now, env)
    }

    /// Batch `id` left the last stage: emit its tokens, finish its completed requests, record
    /// it, and schedule again.
    pub fn on_batch_end(&mut self, id: u64, now: T, env: &mut Env<T>) -> Result<()> {
        let now_ns = now.to_ns();
        let pos = self
            .in_flight
            .iter()
            .position(|f| f.id == id)
            .ok_or_else(|| Error::Msg(format!("batch {id} ended but is not in flight")))?;
        let mut f = self.in_flight.swap_remove(pos);
        let outcome = self.scheduler.on_batch_end(&f.batch);
        for emitted in &outcome.tokens {
            let tracked = self.requests.get_mut(&emitted.request_id).ok_or_else(|| {
                Error::Msg(format!("token for unknown request {}", emitted.request_id))
            })?;
            let times = &mut tracked.times;
            if emitted.token_index != times.num_tokens {
                return Err(Error::Msg(format!(
                    "request {} emitted token {} after {} tokens",
                    emitted.request_id, emitted.token_index, times.num_tokens
                )));
            }
            let latency = times.push_token(now_ns);
            env.recorder.token(&TokenMetricsRow {
                request_id: emitted.request_id,
                token_index: emitted.token_index,
                token_time_ns: now_ns,
                token_latency_ns: latency,
                batch_id: id,
                token_id: None,
            })?;
        }
        for request_id in &outcome.completed {
            let tracked = self
                .requests
                .remove(request_id)
                .ok_or_else(|| Error::Msg(format!("unknown request {request_id} completed")))?;
            let row = self.request_row(*request_id, &tracked, None);
            env.recorder.finished(tracked.seq, row, false)?;
        }
        let row = self.batch_row(&f, now_ns);
        env.recorder
            .batch(&row, &f.batch.entries, f.charge.extrapolated_ops)?;
        f.shapes.clear();
        self.spare_shapes.push(std::mem::take(&mut f.shapes));
        env.queue
            .push(now, EventKind::ReplicaSchedule { replica: self.id });
        Ok(())
    }

    /// Records every request still here as incomplete (the event queue ran dry; the shared
    /// scheduler's rejections make this unreachable for valid inputs).
    pub fn abandon_unfinished(&mut self, recorder: &mut Recorder) -> Result<()> {
        let mut left: Vec<(u64, Tracked)> = self.requests.drain().collect();
        left.sort_by_key(|(_, t)| t.seq);
        for (request_id, tracked) in left {
            let waiting = tracked.times.scheduled_time_ns.is_none();
            let row = self.request_row(
                request_id,
                &tracked,
                Some((
                    "incomplete",
                    "the simulation ended before the request completed",
                )),
            );
            recorder.finished(tracked.seq, row, waiting)?;
        }
        Ok(())
    }

    fn in_flight_mut(&mut self, id: u64) -> Result<&mut InFlight<T>> {
        self.in_flight
            .iter_mut()
            .find(|f| f.id == id)
            .ok_or_else(|| Error::Msg(format!("batch {id} is not in flight")))
    }

    fn request_row(
        &self,
        request_id: u64,
        t: &Tracked,
        error: Option<(&str, &str)>,
    ) -> RequestMetricsRow {
        RequestMetricsRow::from_summary(
            request_id,
            &t.times,
            t.num_prefill_tokens,
            t.num_decode_tokens,
            self.scheduler.num_preemptions(request_id).unwrap_or(0),
            self.id,
            &self.backend_name,
            error,
        )
    }

    fn batch_row(&self, f: &InFlight<T>, end_ns: u64) -> BatchMetricsRow {
        let start_ns = f.start.to_ns();
        let c = &f.charge;
        let cpu = |term: CpuOverheadTerm| c.cpu_ns[term.index()];
        let mut row = BatchMetricsRow::of_batch(&f.batch, self.id, start_ns, end_ns, f.num_waiting);
        // Batch ids are run-wide (unique across replicas), not the replica scheduler's own.
        row.batch_id = f.id;
        row.model_forward_ns = Some(c.model_ns);
        row.cpu_schedule_ns = Some(cpu(CpuOverheadTerm::Schedule));
        row.cpu_prepare_inputs_ns = Some(cpu(CpuOverheadTerm::PrepareInputsE2e));
        row.cpu_sampler_ns = Some(cpu(CpuOverheadTerm::SamplerE2e));
        // Ray's driver↔worker hop is part of handing outputs back.
        row.cpu_process_outputs_ns =
            Some(cpu(CpuOverheadTerm::ProcessModelOutputs) + cpu(CpuOverheadTerm::RayCommTime));
        row.extrapolated = Some(c.extrapolated);
        // The `op_<name>_ns` columns are in `Op` order (the registry); an op the predictor
        // attributes no time to is not modelled by it and stays empty.
        row.set_ops(c.ops_ns.map(|ns| (ns > 0).then_some(ns)));
        row
    }
}

/// A hasher for request ids: ids are already well spread, so one multiply and a shift
/// replace SipHash on the per-token lookup path.
#[derive(Default, Clone, Copy)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_terms_sum_exactly_to_the_predicted_cpu_time() {
        let mut p = BatchPrediction::EMPTY;
        // Three terms of 1/3 ms: rounded alone they would sum to 999 999 ns, not 1 ms.
        p.cpu_overheads_ms = [1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 0.0, 0.0];
        p.cpu_overhead_ns = ms_to_ns(p.cpu_overheads_ms.iter().sum());
        let mut c = Charge::default();
        c.add(&p, 2_000_000);
        assert_eq!(c.cpu_ns, [333_333, 333_334, 333_333, 0, 0]);
        assert_eq!(c.cpu_ns.iter().sum::<u64>(), p.cpu_overhead_ns);
        assert_eq!(p.cpu_overhead_ns, 1_000_000);
        // The model time takes the rest of what the clock charged.
        assert_eq!(c.model_ns, 1_000_000);
    }
}
