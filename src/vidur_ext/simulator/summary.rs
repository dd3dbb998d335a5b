//! Run-wide bookkeeping: the counts and time integrals a simulation reports, and the
//! [`Recorder`] that feeds rows to the sink in the documented order while keeping them.

use std::collections::BTreeMap;

use serde::Serialize;

use super::clock::ClockKind;
use super::sink::SimSink;
use crate::io::bundle::OpSet;
use crate::io::records::{BatchMetricsRow, RequestMetricsRow, RequestStatus, TokenMetricsRow};
use crate::scheduler::BatchEntry;
use crate::{Error, Result};

/// What one simulation did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SimSummary {
    /// Requests taken from the stream.
    pub num_requests: u64,
    pub num_ok: u64,
    /// Rejected (context overflow, KV capacity) or left incomplete.
    pub num_error: u64,
    /// Output tokens emitted.
    pub num_tokens: u64,
    pub num_batches: u64,
    /// Batches with at least one prediction outside the profiled (or Vidur's) grid.
    pub num_extrapolated_batches: u64,
    /// The ops whose lookups were extrapolated in any batch.
    pub extrapolated_ops: Vec<String>,
    /// Preemptions over all requests.
    pub num_preemptions: u64,
    /// Virtual time of the last event: the end of the last batch, or the last arrival.
    pub makespan_ns: u64,
    /// Events processed.
    pub num_events: u64,
    /// The event clock the run used.
    pub clock: ClockKind,
    /// ∫ (requests in the system) dt over [0, makespan]: arrived and not yet finished.
    pub request_area_ns: u128,
    /// ∫ (requests waiting for their first batch) dt over [0, makespan].
    pub queue_area_ns: u128,
}

impl SimSummary {
    /// Time-average number of requests in the system, L, over [0, makespan].
    pub fn mean_in_system(&self) -> f64 {
        ratio(self.request_area_ns, self.makespan_ns)
    }

    /// Time-average number of requests waiting for their first batch, Lq.
    pub fn mean_waiting(&self) -> f64 {
        ratio(self.queue_area_ns, self.makespan_ns)
    }
}

fn ratio(area_ns: u128, horizon_ns: u64) -> f64 {
    if horizon_ns == 0 {
        0.0
    } else {
        area_ns as f64 / horizon_ns as f64
    }
}

/// Little's law, `L = λ·W`, over the horizon [0, makespan] of a run that starts and ends
/// empty: the time integral of the number in the system equals the sum of the time each
/// request spends in it, so with λ = N / T both sides are that sum over T. The simulator
/// integrates the left side from its event loop; the right side comes from the output rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LittleCheck {
    /// L from the event loop's integral.
    pub mean_in_system: f64,
    /// λ·W from the rows' `e2e_ns`.
    pub arrival_rate_times_mean_e2e: f64,
    /// Lq from the event loop's integral.
    pub mean_waiting: f64,
    /// λ·Wq from the rows' `queue_delay_ns`.
    pub arrival_rate_times_mean_queue_delay: f64,
    /// Both identities hold exactly (integer ns).
    pub exact: bool,
}

/// Checks Little's law on a run's request rows against its summary. Rejected requests
/// enter and leave at their arrival, so they count with zero time in the system.
pub fn little_check(summary: &SimSummary, rows: &[RequestMetricsRow]) -> LittleCheck {
    let mut sum_e2e: u128 = 0;
    let mut sum_queue: u128 = 0;
    for r in rows {
        sum_e2e += u128::from(r.e2e_ns.unwrap_or(0));
        if r.status == RequestStatus::Ok {
            sum_queue += u128::from(r.queue_delay_ns.unwrap_or(0));
        }
    }
    let t = summary.makespan_ns;
    LittleCheck {
        mean_in_system: summary.mean_in_system(),
        arrival_rate_times_mean_e2e: ratio(sum_e2e, t),
        mean_waiting: summary.mean_waiting(),
        arrival_rate_times_mean_queue_delay: ratio(sum_queue, t),
        exact: sum_e2e == summary.request_area_ns && sum_queue == summary.queue_area_ns,
    }
}

/// Feeds the sink and keeps the summary: reorders finished requests into arrival order,
/// counts, and integrates the number of requests in the system and in the queue.
pub(super) struct Recorder<'s> {
    sink: &'s mut dyn SimSink,
    /// Finished requests waiting for an earlier arrival to finish, by arrival sequence.
    pending: BTreeMap<u64, RequestMetricsRow>,
    next_seq: u64,
    summary: SimSummary,
    extrapolated_ops: OpSet,
    last_time_ns: u64,
    in_system: u64,
    waiting: u64,
}

impl<'s> Recorder<'s> {
    pub fn new(sink: &'s mut dyn SimSink) -> Self {
        Recorder {
            sink,
            pending: BTreeMap::new(),
            next_seq: 0,
            summary: SimSummary::default(),
            extrapolated_ops: OpSet::EMPTY,
            last_time_ns: 0,
            in_system: 0,
            waiting: 0,
        }
    }

    /// Moves the clock to `time_ns`, integrating the counts over the elapsed interval.
    pub fn advance(&mut self, time_ns: u64) {
        let dt = u128::from(time_ns - self.last_time_ns);
        self.summary.request_area_ns += u128::from(self.in_system) * dt;
        self.summary.queue_area_ns += u128::from(self.waiting) * dt;
        self.last_time_ns = time_ns;
    }

    /// A request arrived.
    pub fn arrived(&mut self) {
        self.summary.num_requests += 1;
        self.in_system += 1;
        self.waiting += 1;
    }

    /// A request was put into its first batch.
    pub fn first_scheduled(&mut self) {
        self.waiting -= 1;
    }

    /// A request left the system: completed, rejected at admission (then `was_waiting`) or
    /// abandoned at the end.
    pub fn finished(&mut self, seq: u64, row: RequestMetricsRow, was_waiting: bool) -> Result<()> {
        self.in_system -= 1;
        if was_waiting {
            self.waiting -= 1;
        }
        match row.status {
            RequestStatus::Ok => self.summary.num_ok += 1,
            RequestStatus::Error => self.summary.num_error += 1,
        }
        self.summary.num_preemptions += u64::from(row.num_preemptions.unwrap_or(0));
        if seq != self.next_seq {
            self.pending.insert(seq, row);
            return Ok(());
        }
        self.sink.on_request(row)?;
        self.next_seq += 1;
        while let Some(row) = self.pending.remove(&self.next_seq) {
            self.sink.on_request(row)?;
            self.next_seq += 1;
        }
        Ok(())
    }

    pub fn token(&mut self, row: &TokenMetricsRow) -> Result<()> {
        self.summary.num_tokens += 1;
        self.sink.on_token(row)
    }

    pub fn batch(
        &mut self,
        row: &BatchMetricsRow,
        entries: &[BatchEntry],
        extrapolated_ops: OpSet,
    ) -> Result<()> {
        self.summary.num_batches += 1;
        if row.extrapolated == Some(true) {
            self.summary.num_extrapolated_batches += 1;
        }
        self.extrapolated_ops = self.extrapolated_ops.union(extrapolated_ops);
        self.sink.on_batch(row, entries)
    }

    /// Closes the run at the last event's time.
    pub fn finish(mut self, num_events: u64, clock: ClockKind) -> Result<SimSummary> {
        if !self.pending.is_empty() || self.next_seq != self.summary.num_requests {
            return Err(Error::Msg(format!(
                "simulator bookkeeping: {} of {} requests were reported ({} held back)",
                self.next_seq,
                self.summary.num_requests,
                self.pending.len()
            )));
        }
        self.summary.makespan_ns = self.last_time_ns;
        self.summary.num_events = num_events;
        self.summary.clock = clock;
        self.summary.extrapolated_ops = self
            .extrapolated_ops
            .iter()
            .map(|op| op.name().to_string())
            .collect();
        Ok(self.summary)
    }
}
