//! The discrete-event simulator: a trace replayed through the real engine's scheduler on a
//! virtual clock, each batch timed by an op-time predictor.
//!
//! - [`clock`]: virtual time — integer ns, or Vidur's float seconds for Vidur's formula.
//! - [`events`]: the event queue, ordered by (time, event-type priority, sequence number).
//! - `replica`: one replica — the shared [`crate::scheduler::ReplicaScheduler`], its
//!   pipeline stages, its requests; the real engine's loop in virtual time.
//! - [`cluster`]: the event loop, the global scheduler and the request stream ([`Simulator`]).
//! - [`sink`]: where rows go ([`SimSink`]; streaming CSV files or memory).
//! - [`summary`]: counts, Little's-law integrals ([`SimSummary`], [`little_check`]).
//!
//! The simulator knows nothing about candle or Qwen3: any model a predictor can time runs.
//!
//! # Semantics
//!
//! Virtual time runs from the trace's origin on one of two clocks ([`clock`]): integer
//! nanoseconds, each batch lasting its prediction rounded to whole ns, or — when the
//! predictor is Vidur's formula — Vidur's own float-seconds arithmetic, so that the clock
//! equals Vidur 0.0.1's at any trace length; rows hold integer ns either way. At an instant, arrivals are
//! dispatched first, then pipeline stages and batches end, then replicas schedule — so, as
//! in the real engine, a request that arrives while its replica is busy waits for the next
//! scheduling point (the end of the running batch), and one that arrives at an idle replica
//! is scheduled at its arrival. A replica forms batches while it has fewer than
//! `num_pipeline_stages` in flight. A batch's duration is the predictor's total: model
//! time plus the CPU overheads, which the real loop pays in the order schedule → prepare
//! inputs → forward → sample → process outputs; its tokens are stamped at its end and
//! `scheduled_time_ns` is the start of a request's first batch. With pipeline parallelism
//! each stage is busy for its own prediction (its layers, its send/recv and, as Vidur
//! charges them, the CPU overheads), a batch queues for a busy stage, and the batch row's
//! duration spans formation to the last stage's end. Output tokens are simulated one by one,
//! never interpolated.
//!
//! Where this differs from Vidur 0.0.1, and why, is listed in `docs/vidur_compat.md`.

pub mod clock;
pub mod cluster;
pub mod events;
mod replica;
pub mod sink;
pub mod summary;

pub use clock::{ClockKind, SimTime, VidurSeconds};
pub use cluster::{SimConfig, SimRequest, Simulator};
pub use events::{Event, EventKind, EventQueue};
pub use sink::{
    CsvOutputs, CsvSink, CsvSinkCounts, DiscardSink, MemorySink, RequestsOnlySink, SimSink,
};
pub use summary::{little_check, LittleCheck, SimSummary};

#[cfg(test)]
mod tests;
