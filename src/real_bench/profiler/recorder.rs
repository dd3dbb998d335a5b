//! Collects the wall time of every op call of a forward, per call (one sample per layer).

use std::time::Duration;

use crate::io::ops::Op;
use crate::real_bench::model::OpTimer;

/// An [`OpTimer`] that keeps every call's duration (ms), per op, in call order.
///
/// A forward of an `L`-layer model reports each per-layer op `L` times (`add` `2L` times),
/// so one forward yields `L` samples of each op, all taken in the cache and allocator state
/// of a real iteration.
#[derive(Debug, Clone, Default)]
pub struct SampleRecorder {
    samples_ms: [Vec<f64>; Op::COUNT],
}

impl SampleRecorder {
    /// The samples of `op` recorded since the last [`SampleRecorder::clear`].
    pub fn samples_ms(&self, op: Op) -> &[f64] {
        &self.samples_ms[op.index()]
    }

    /// Summed time of every recorded call, ms.
    pub fn total_ms(&self) -> f64 {
        self.samples_ms.iter().flatten().sum()
    }

    /// Forgets every sample (keeps the allocations).
    pub fn clear(&mut self) {
        self.samples_ms.iter_mut().for_each(Vec::clear);
    }
}

impl OpTimer for SampleRecorder {
    fn record(&mut self, op: Op, _layer: Option<usize>, elapsed: Duration) {
        self.samples_ms[op.index()].push(elapsed.as_secs_f64() * 1e3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_every_call_per_op() {
        let mut r = SampleRecorder::default();
        r.record(Op::Add, Some(0), Duration::from_micros(1500));
        r.record(Op::Add, Some(0), Duration::from_micros(500));
        r.record(Op::LmHead, None, Duration::from_millis(3));
        assert_eq!(r.samples_ms(Op::Add), &[1.5, 0.5]);
        assert_eq!(r.samples_ms(Op::LmHead), &[3.0]);
        assert!((r.total_ms() - 5.0).abs() < 1e-12);
        r.clear();
        assert!(r.samples_ms(Op::Add).is_empty());
    }
}
