//! The event clock: what a virtual instant is, and how a batch's duration is added to it.
//!
//! Two clocks, chosen by the predictor ([`ExecutionTimePredictor::clock`]) and monomorphized
//! into the event loop (no per-event dispatch):
//!
//! - [`ClockKind::IntegerNs`] — `u64` nanoseconds; a batch lasts its prediction rounded to
//!   whole ns (`total_ns`). Exact, platform-independent integer arithmetic; the native
//!   predictor's own time base.
//! - [`ClockKind::VidurSeconds`] — Vidur 0.0.1's clock: `f64` seconds, a batch stage ending at
//!   `start + execution_time` where `execution_time` is Vidur's `ExecutionTime.total_time`
//!   computed in Vidur's operation order ([`BatchPrediction::total_s`]). Rounding each
//!   duration to whole ns instead errs low by ~0.17 ns per batch on average; over a busy
//!   stretch of ~10⁵ batches that is ~10 µs, enough to move an arrival across a batch end and
//!   change every batch after it. With Vidur's arithmetic the clock is Vidur's, bit for bit,
//!   from the same start times.
//!
//! Either way the rows hold integer ns: an instant `t` s is written as `round(t · 10⁹)` (an
//! arrival as the workload's own `arrival_time_ns`), and every duration column is the
//! difference of two such values, so outputs stay integers and Little's law holds exactly on
//! them. Ties at one instant are broken as before: (time, event-type priority, push order).
//!
//! Arrivals enter the Vidur clock as `arrival_time_ns / 10⁹`, the correctly rounded value of
//! the workload's integer ns; Vidur computes `arrived_at × time_scale_factor` in floats,
//! which can differ from it by one unit in the last place (≤ 4 ps at 6 h).

use std::cmp::Ordering;
use std::fmt;

use serde::Serialize;

use crate::vidur_ext::predictor::BatchPrediction;
#[cfg(doc)]
use crate::vidur_ext::predictor::ExecutionTimePredictor;

/// Which clock a simulation runs on (recorded in the run's summary).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockKind {
    /// Integer nanoseconds; durations rounded to whole ns.
    #[default]
    IntegerNs,
    /// Vidur's float seconds and duration arithmetic; rounded to ns only in the rows.
    VidurSeconds,
}

/// A virtual instant of one of the clocks.
pub trait SimTime: Copy + Ord + fmt::Debug {
    /// The clock this type implements.
    const KIND: ClockKind;
    /// The instant `ns` nanoseconds after the origin (arrivals).
    fn from_ns(ns: u64) -> Self;
    /// When a stage started now and running for `prediction` ends.
    fn after(self, prediction: &BatchPrediction) -> Self;
    /// The instant as written in the rows: nanoseconds since the origin.
    fn to_ns(self) -> u64;
}

impl SimTime for u64 {
    const KIND: ClockKind = ClockKind::IntegerNs;

    fn from_ns(ns: u64) -> Self {
        ns
    }

    fn after(self, prediction: &BatchPrediction) -> Self {
        self + prediction.total_ns
    }

    fn to_ns(self) -> u64 {
        self
    }
}

/// Seconds since the origin, as Vidur's event loop holds them. Always finite and
/// non-negative (arrivals are, and predictions are finite and non-negative), which is what
/// makes the total order below agree with `<` on floats.
#[derive(Clone, Copy, Debug)]
pub struct VidurSeconds(f64);

impl VidurSeconds {
    /// The value in seconds.
    pub fn seconds(self) -> f64 {
        self.0
    }
}

impl PartialEq for VidurSeconds {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for VidurSeconds {}

impl PartialOrd for VidurSeconds {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for VidurSeconds {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl SimTime for VidurSeconds {
    const KIND: ClockKind = ClockKind::VidurSeconds;

    fn from_ns(ns: u64) -> Self {
        VidurSeconds(ns as f64 / 1e9)
    }

    fn after(self, prediction: &BatchPrediction) -> Self {
        // Vidur: `BatchStageEndEvent(self.time + self._batch_stage.execution_time)`.
        VidurSeconds(self.0 + prediction.total_s)
    }

    fn to_ns(self) -> u64 {
        // < 2^53 ns (104 days) is exact to well under 1 ns; the value is non-negative.
        (self.0 * 1e9).round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_clock_adds_the_rounded_duration() {
        let mut p = BatchPrediction::EMPTY;
        p.total_ns = 7;
        p.total_s = 7.4e-9;
        assert_eq!(10u64.after(&p), 17);
        assert_eq!(<u64 as SimTime>::from_ns(5).to_ns(), 5);
    }

    #[test]
    fn vidur_clock_keeps_what_rounding_loses() {
        // 1,000 batches of 1.4 ns: whole-ns rounding says 1,000 ns, Vidur's floats 1,400.
        let mut p = BatchPrediction::EMPTY;
        p.total_ns = 1;
        p.total_s = 1.4e-9;
        let mut t = VidurSeconds::from_ns(0);
        let mut n = 0u64;
        for _ in 0..1000 {
            t = t.after(&p);
            n = n.after(&p);
        }
        assert_eq!(t.to_ns(), 1400);
        assert_eq!(n, 1000);
    }

    #[test]
    fn vidur_clock_round_trips_arrivals_and_orders_like_floats() {
        for ns in [0u64, 1, 999_999_999, 25_887_474_000, 21_010_200_000_000] {
            assert_eq!(VidurSeconds::from_ns(ns).to_ns(), ns);
        }
        let a = VidurSeconds(0.1 + 0.2);
        let b = VidurSeconds(0.3);
        assert!(b < a, "0.1 + 0.2 > 0.3 in floats, and so on this clock");
        assert_eq!(a, VidurSeconds(0.1 + 0.2));
    }
}
