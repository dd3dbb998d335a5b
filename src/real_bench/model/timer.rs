//! The hook through which a forward reports the times of its ops ([`Op`], the shared op
//! registry).

use std::time::{Duration, Instant};

use candle_core::Device;

use crate::io::ops::Op;
use crate::Result;

/// Receives the time of each op of a forward.
///
/// On the CPU that is the wall time around the call, reported as the op returns (candle's
/// CPU backend is synchronous, so it measures the op itself). On a CUDA device, where ops
/// only queue kernels, it is the GPU time between CUDA events recorded around the op on
/// candle's stream, reported in forward order when the forward ends. On other devices the
/// forward synchronizes the device around each op and reports wall time.
pub trait OpTimer: Send {
    /// `layer` is `Some` for per-layer ops, `None` for per-iteration ones.
    fn record(&mut self, op: Op, layer: Option<usize>, elapsed: Duration);

    /// The GPU time of a whole forward (CUDA events at its start and end, so it includes
    /// the gaps between ops). Only GPU forwards report it; the default ignores it.
    fn record_device_forward(&mut self, elapsed: Duration) {
        let _ = elapsed;
    }

    /// Whether this forward wants each op's time. On a GPU, `false` records only the two
    /// events around the whole forward (and no op is reported), so that iterations not
    /// sampled for op times carry no per-op event overhead. The CPU's wall clock costs
    /// nothing worth saving, so CPU forwards report every op regardless.
    fn per_op(&self) -> bool {
        true
    }
}

/// An [`OpTimer`] that sums time and counts calls per op over all layers.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTotals {
    totals: [Duration; Op::COUNT],
    calls: [u64; Op::COUNT],
    device_forward: Option<Duration>,
    per_op: bool,
}

impl Default for OpTotals {
    fn default() -> Self {
        Self {
            totals: Default::default(),
            calls: Default::default(),
            device_forward: None,
            per_op: true,
        }
    }
}

impl OpTotals {
    /// Summed time of `op`.
    pub fn total(&self, op: Op) -> Duration {
        self.totals[op.index()]
    }

    /// How many times `op` was recorded.
    pub fn calls(&self, op: Op) -> u64 {
        self.calls[op.index()]
    }

    /// Summed time of all ops.
    pub fn sum(&self) -> Duration {
        self.totals.iter().sum()
    }

    /// Summed GPU time of the forwards recorded since the last reset (`None` on the CPU).
    pub fn device_forward(&self) -> Option<Duration> {
        self.device_forward
    }

    /// Whether any op was recorded since the last reset (`false` after a GPU forward that
    /// timed only the whole forward).
    pub fn has_op_times(&self) -> bool {
        self.calls.iter().any(|&c| c > 0)
    }

    /// Asks the next forwards for each op's time or, on a GPU, for the whole forward's only
    /// ([`OpTimer::per_op`]). Kept by [`Self::reset`].
    pub fn set_per_op(&mut self, per_op: bool) {
        self.per_op = per_op;
    }

    /// Clears all totals (the per-op setting stays).
    pub fn reset(&mut self) {
        *self = Self {
            per_op: self.per_op,
            ..Self::default()
        };
    }
}

impl OpTimer for OpTotals {
    fn record(&mut self, op: Op, _layer: Option<usize>, elapsed: Duration) {
        self.totals[op.index()] += elapsed;
        self.calls[op.index()] += 1;
    }

    fn record_device_forward(&mut self, elapsed: Duration) {
        *self.device_forward.get_or_insert(Duration::ZERO) += elapsed;
    }

    fn per_op(&self) -> bool {
        self.per_op
    }
}

/// The CUDA events a model times its forwards with: one [`EventPool`] on candle's stream,
/// created by the first timed forward on a GPU and reused by every later one. A forward takes
/// the pool out for its duration and puts it back when it finishes; one that fails drops it
/// (the next timed forward makes a new one).
///
/// [`EventPool`]: crate::real_bench::cuda::EventPool
#[derive(Debug, Default)]
pub(crate) struct ForwardEvents {
    #[cfg(any(feature = "cuda", feature = "cuda-check"))]
    pool: std::sync::Arc<std::sync::Mutex<Option<crate::real_bench::cuda::EventPool>>>,
}

/// How one forward measures its ops for an optional [`OpTimer`] (see there for what each
/// device reports).
pub(crate) enum OpClock<'t> {
    /// No timer: ops just run, no clock is read.
    Off,
    /// Wall time around each op; `sync` is the device to synchronize first (`None` on the CPU).
    Wall {
        timer: &'t mut dyn OpTimer,
        sync: Option<Device>,
    },
    /// CUDA events around each op, resolved by [`OpClock::finish`].
    #[cfg(any(feature = "cuda", feature = "cuda-check"))]
    Events(EventSpans<'t>),
}

impl<'t> OpClock<'t> {
    /// The clock for a forward of a `num_layers`-layer model on `device`; `events` is the
    /// model's pool of CUDA events.
    pub(crate) fn new(
        timer: Option<&'t mut dyn OpTimer>,
        device: &Device,
        events: &ForwardEvents,
        num_layers: usize,
    ) -> Result<Self> {
        let Some(timer) = timer else {
            return Ok(OpClock::Off);
        };
        if device.is_cpu() {
            return Ok(OpClock::Wall { timer, sync: None });
        }
        #[cfg(any(feature = "cuda", feature = "cuda-check"))]
        if device.is_cuda() {
            return Ok(OpClock::Events(EventSpans::start(
                timer, device, events, num_layers,
            )?));
        }
        let _ = (events, num_layers);
        Ok(OpClock::Wall {
            timer,
            sync: Some(device.clone()),
        })
    }

    /// Runs `f` as `op` of `layer` and measures it.
    #[inline]
    pub(crate) fn time<R>(
        &mut self,
        op: Op,
        layer: Option<usize>,
        f: impl FnOnce() -> Result<R>,
    ) -> Result<R> {
        match self {
            OpClock::Off => f(),
            OpClock::Wall { timer, sync } => {
                if let Some(d) = sync {
                    d.synchronize()?;
                }
                let start = Instant::now();
                let r = f();
                if let Some(d) = sync {
                    d.synchronize()?;
                }
                timer.record(op, layer, start.elapsed());
                r
            }
            #[cfg(any(feature = "cuda", feature = "cuda-check"))]
            OpClock::Events(spans) => spans.time(op, layer, f),
        }
    }

    /// Ends the forward: reports event-timed ops (waiting for the GPU to finish them).
    pub(crate) fn finish(self) -> Result<()> {
        match self {
            OpClock::Off | OpClock::Wall { .. } => Ok(()),
            #[cfg(any(feature = "cuda", feature = "cuda-check"))]
            OpClock::Events(spans) => spans.finish(),
        }
    }
}

/// Upper bound of the marks one layer's ops take (15 ops, two marks each).
#[cfg(any(feature = "cuda", feature = "cuda-check"))]
const MARKS_PER_LAYER: usize = 30;

/// Events recorded around each op of one forward (or only around the whole forward, when the
/// timer does not want op times) on candle's CUDA stream, from the model's [`ForwardEvents`].
#[cfg(any(feature = "cuda", feature = "cuda-check"))]
type EventPoolSlot = std::sync::Arc<std::sync::Mutex<Option<crate::real_bench::cuda::EventPool>>>;

#[cfg(any(feature = "cuda", feature = "cuda-check"))]
pub(crate) struct EventSpans<'t> {
    timer: &'t mut dyn OpTimer,
    /// The model's pool, taken out of `home` for this forward.
    pool: crate::real_bench::cuda::EventPool,
    home: EventPoolSlot,
    per_op: bool,
    forward_start: crate::real_bench::cuda::Mark,
    spans: Vec<(
        Op,
        Option<usize>,
        crate::real_bench::cuda::Mark,
        crate::real_bench::cuda::Mark,
    )>,
}

#[cfg(any(feature = "cuda", feature = "cuda-check"))]
fn lock_slot(
    slot: &EventPoolSlot,
) -> Result<std::sync::MutexGuard<'_, Option<crate::real_bench::cuda::EventPool>>> {
    slot.lock()
        .map_err(|_| crate::Error::Device("the CUDA event pool is poisoned".into()))
}

#[cfg(any(feature = "cuda", feature = "cuda-check"))]
impl<'t> EventSpans<'t> {
    fn start(
        timer: &'t mut dyn OpTimer,
        device: &Device,
        events: &ForwardEvents,
        num_layers: usize,
    ) -> Result<Self> {
        use crate::real_bench::cuda::{candle_stream, EventPool};
        let taken = lock_slot(&events.pool)?.take();
        let mut pool = match taken {
            Some(pool) => pool,
            // Forward start and end, every layer's op marks, and the per-iteration ops'.
            None => EventPool::new(candle_stream(device)?, 2 + MARKS_PER_LAYER * num_layers + 8)?,
        };
        pool.clear();
        let forward_start = pool.mark()?;
        let per_op = timer.per_op();
        Ok(Self {
            timer,
            pool,
            home: std::sync::Arc::clone(&events.pool),
            per_op,
            forward_start,
            spans: Vec::with_capacity(if per_op {
                MARKS_PER_LAYER / 2 * num_layers + 4
            } else {
                0
            }),
        })
    }

    fn time<R>(
        &mut self,
        op: Op,
        layer: Option<usize>,
        f: impl FnOnce() -> Result<R>,
    ) -> Result<R> {
        if !self.per_op {
            return f();
        }
        let start = self.pool.mark()?;
        let r = f()?;
        let end = self.pool.mark()?;
        self.spans.push((op, layer, start, end));
        Ok(r)
    }

    fn finish(self) -> Result<()> {
        let Self {
            timer,
            mut pool,
            home,
            forward_start,
            spans,
            ..
        } = self;
        let end = pool.mark()?;
        for (op, layer, start, stop) in spans {
            timer.record(op, layer, pool.elapsed(start, stop)?);
        }
        timer.record_device_forward(pool.elapsed(forward_start, end)?);
        pool.clear();
        *lock_slot(&home)? = Some(pool);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_accumulate_per_op() {
        let mut t = OpTotals::default();
        t.record(Op::Add, Some(0), Duration::from_micros(3));
        t.record(Op::Add, Some(1), Duration::from_micros(4));
        t.record(Op::LmHead, None, Duration::from_micros(10));
        assert_eq!(t.total(Op::Add), Duration::from_micros(7));
        assert_eq!(t.calls(Op::Add), 2);
        assert_eq!(t.sum(), Duration::from_micros(17));
        assert!(t.has_op_times());
        // The per-op request survives a reset; the totals do not.
        t.set_per_op(false);
        t.reset();
        assert!(!t.per_op() && !t.has_op_times() && t.sum().is_zero());
        assert!(OpTotals::default().per_op());
    }
}
