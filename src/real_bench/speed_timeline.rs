//! The device-speed timeline of a timed stage (`device_speed.csv`): calibration probes before
//! and after the run and in idle gaps, quick memory probes between iterations several times a
//! second, and host steal samples while busy.
//!
//! The timeline says how fast the device was *independently of the workload*: probes run
//! fixed kernels ([`DeviceProbe`]), busy samples read only host counters. Nothing here reads
//! the run's own iteration or token timings, so a correction built on it cannot fit the
//! run it corrects.

use std::time::Instant;

use serde::Serialize;

use super::device_probe::{
    load_average_1min, own_run_queue_wait_ns, process_cpu_time_ns, DeviceProbe, HostCpuTimes,
    ProbeSample, QuickProbeSample,
};
use crate::io::records::{DeviceSpeedRow, SpeedPhase};
use crate::quantile;

/// A gap between iterations must be at least this long for a probe to run in it.
pub const MIN_IDLE_GAP_FOR_PROBE_NS: u64 = 150_000_000;
/// A probe ends at least this long before the next arrival (beyond twice the longest probe
/// so far: ~40 ms here, but 0.85 s on a GPU host whose `clflush` is slow).
pub const PROBE_MARGIN_NS: u64 = 60_000_000;
/// [`SpeedTimeline::busy_tick`] samples the host at most this often.
const BUSY_SAMPLE_EVERY_NS: u128 = 2_000_000_000;
/// How often [`SpeedTimeline::quick_tick`] probes while busy. The host's memory bandwidth
/// switches between states (33–40 and 50–72 GB/s here) within seconds, and single-sequence
/// decode steps follow it (56 vs 75 ms): a probe 1.1 s before a decode forward predicted it
/// within 3.4–3.7 % median, one 3.3 s before within 4.3–5.2 %, one in the same second within
/// 1.9–2.2 % (`benches/results/probe_tracking.json`, rounds). A quick probe costs 1–2 ms,
/// so this cadence takes under 1 % of a busy run.
pub const QUICK_PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// One sample as taken; times are made relative to the run's origin when written.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    phase: SpeedPhase,
    probe: Option<ProbeSample>,
    quick: Option<QuickProbeSample>,
    host: HostShares,
    load_average_1min: Option<f64>,
}

/// Shares of the host's CPU time since the previous sample.
#[derive(Debug, Clone, Copy, Default)]
struct HostShares {
    steal_pct: Option<f64>,
    competing_pct: Option<f64>,
    /// This process's threads' run-queue wait, % of the wall time per compute thread.
    wait_pct: Option<f64>,
}

/// Counters read at a sample, to difference at the next.
#[derive(Debug, Clone, Copy)]
struct Counters {
    at: Instant,
    host: Option<HostCpuTimes>,
    own_cpu_ns: u64,
    own_wait_ns: Option<u64>,
}

impl Counters {
    fn read() -> Counters {
        Counters {
            at: Instant::now(),
            host: HostCpuTimes::read(),
            own_cpu_ns: process_cpu_time_ns(),
            own_wait_ns: own_run_queue_wait_ns(),
        }
    }

    /// Shares between `earlier` and `self`.
    fn shares_since(&self, earlier: &Counters) -> HostShares {
        let (host, host_then) = (self.host.as_ref(), earlier.host.as_ref());
        let wall_ns = (self.at - earlier.at).as_nanos() as f64;
        HostShares {
            steal_pct: host.zip(host_then).and_then(|(h, e)| h.steal_pct_since(e)),
            competing_pct: host.zip(host_then).and_then(|(h, e)| {
                h.competing_pct_since(e, self.own_cpu_ns.saturating_sub(earlier.own_cpu_ns))
            }),
            wait_pct: self
                .own_wait_ns
                .zip(earlier.own_wait_ns)
                .filter(|_| wall_ns > 0.0)
                // Per compute thread, so that 100 % means none of them could run at all.
                .map(|(now, then)| {
                    let threads = rayon::current_num_threads().max(1) as f64;
                    100.0 * now.saturating_sub(then) as f64 / (wall_ns * threads)
                }),
        }
    }
}

/// Records a stage's device-speed timeline.
pub struct SpeedTimeline {
    probe: DeviceProbe,
    samples: Vec<Sample>,
    /// Counters at the previous sample.
    last: Counters,
    /// Wall time of the longest probe so far (0 before the first; a timed stage probes
    /// before it starts).
    longest_probe_ns: u64,
    /// Wall time spent in quick probes (what they took from the run), ns.
    quick_probes_ns: u64,
    /// Whether [`SpeedTimeline::quick_tick`] probes at all.
    quick_probes: bool,
}

impl SpeedTimeline {
    /// Allocates the probe (and warms its kernels). Call after the thread pool is set up.
    pub fn new() -> SpeedTimeline {
        SpeedTimeline {
            probe: DeviceProbe::new(),
            samples: Vec::new(),
            last: Counters::read(),
            longest_probe_ns: 0,
            quick_probes_ns: 0,
            quick_probes: true,
        }
    }

    /// Without quick probes: where the CPU probes do not time the device (a GPU serves), a
    /// probe every 250 ms would only stall the serve (2 ms against GPU iterations of a few
    /// ms) for readings nothing uses.
    pub fn without_quick_probes(self) -> SpeedTimeline {
        SpeedTimeline {
            quick_probes: false,
            ..self
        }
    }

    /// Whether an idle gap of `gap_ns` fits a probe with room to spare, so that a probe
    /// never delays the arrival that ends the gap: at least [`MIN_IDLE_GAP_FOR_PROBE_NS`]
    /// and twice the longest probe so far plus [`PROBE_MARGIN_NS`].
    pub fn fits_probe(&self, gap_ns: u64) -> bool {
        let needed = self
            .longest_probe_ns
            .saturating_mul(2)
            .saturating_add(PROBE_MARGIN_NS);
        gap_ns >= MIN_IDLE_GAP_FOR_PROBE_NS.max(needed)
    }

    /// Shares since the previous sample; remembers this reading.
    fn host_shares(&mut self) -> HostShares {
        let now = Counters::read();
        let shares = now.shares_since(&self.last);
        self.last = now;
        shares
    }

    /// Runs a probe now (~40 ms here) and records it under `phase`.
    pub fn probe(&mut self, phase: SpeedPhase) -> ProbeSample {
        let at = Instant::now();
        let sample = self.probe.measure();
        let took_ns = u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.longest_probe_ns = self.longest_probe_ns.max(took_ns);
        let host = self.host_shares();
        self.samples.push(Sample {
            at,
            phase,
            probe: Some(sample),
            quick: None,
            host,
            load_average_1min: load_average_1min(),
        });
        sample
    }

    /// Records the host's steal time while the device is busy (no probe: reads counters).
    pub fn busy_sample(&mut self) {
        let at = Instant::now();
        let host = self.host_shares();
        self.samples.push(Sample {
            at,
            phase: SpeedPhase::Busy,
            probe: None,
            quick: None,
            host,
            load_average_1min: load_average_1min(),
        });
    }

    /// Takes a [`SpeedTimeline::busy_sample`] if the last sample that read the host's
    /// counters (any but a quick probe) is at least two seconds old; cheap enough to call
    /// once per unit of work.
    pub fn busy_tick(&mut self) {
        let due = self
            .samples
            .iter()
            .rev()
            .find(|s| s.phase != SpeedPhase::Quick)
            .is_none_or(|s| s.at.elapsed().as_nanos() >= BUSY_SAMPLE_EVERY_NS);
        if due {
            self.busy_sample();
        }
    }

    /// Runs an idle probe if the latest probe of any phase is at least `every` old (or there
    /// is none); returns whether it did. For a stage that pauses between units of work (the
    /// profiler between forwards) and wants probes spread through its run at that cadence.
    pub fn idle_tick(&mut self, every: std::time::Duration) -> bool {
        let due = self
            .latest_probe_with_age()
            .is_none_or(|(_, age)| age >= every);
        if due {
            self.probe(SpeedPhase::Idle);
        }
        due
    }

    /// Runs a quick probe ([`DeviceProbe::measure_quick`]) if the latest probe of any kind
    /// is at least `every` old; returns whether it did. Call right after a unit of work (an
    /// iteration, a profiled forward): the probe reads its window as cold as the work left it.
    pub fn quick_tick(&mut self, every: std::time::Duration) -> bool {
        let due = self.quick_probes
            && self
                .samples
                .iter()
                .rev()
                .find(|s| s.probe.is_some() || s.quick.is_some())
                .is_none_or(|s| s.at.elapsed() >= every);
        if due {
            let at = Instant::now();
            let quick = self.probe.measure_quick();
            self.quick_probes_ns = self
                .quick_probes_ns
                .saturating_add(u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX));
            self.samples.push(Sample {
                at,
                phase: SpeedPhase::Quick,
                probe: None,
                quick: Some(quick),
                host: HostShares::default(),
                load_average_1min: None,
            });
        }
        due
    }

    /// Median bandwidth of the usable quick probes taken within `window` of now, GB/s;
    /// `None` without one.
    pub fn recent_quick_median_gb_per_s(&self, window: std::time::Duration) -> Option<f64> {
        let rates: Vec<f64> = self
            .samples
            .iter()
            .rev()
            .take_while(|s| s.at.elapsed() <= window)
            .filter_map(|s| s.quick.filter(|q| q.memory.usable()))
            .map(|q| q.memory_gb_per_s())
            .collect();
        quantile::median(&rates).ok()
    }

    /// The latest probe taken, if any.
    pub fn latest_probe(&self) -> Option<ProbeSample> {
        self.latest_probe_with_age().map(|(p, _)| p)
    }

    /// The latest probe taken and how long ago, if any (a busy run has no idle gaps to probe
    /// in, so its latest probe may be the one before the first iteration).
    pub fn latest_probe_with_age(&self) -> Option<(ProbeSample, std::time::Duration)> {
        self.samples
            .iter()
            .rev()
            .find_map(|s| s.probe.map(|p| (p, s.at.elapsed())))
    }

    /// The rows of `device_speed.csv`, timed relative to `origin` (the run's t = 0).
    pub fn rows(&self, origin: Instant) -> Vec<DeviceSpeedRow> {
        self.samples
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let time_ns = signed_ns_since(origin, s.at);
                // A quick probe fills the memory kernel's columns with its one repeat.
                let memory = s
                    .probe
                    .map(|p| (p.memory_ns, p.memory_gb_per_s(), p.memory))
                    .or(s
                        .quick
                        .map(|q| (q.memory_ns, q.memory_gb_per_s(), q.memory)));
                DeviceSpeedRow {
                    sample_id: i as u64,
                    time_ns,
                    phase: s.phase,
                    memory_probe_ns: memory.map(|(ns, _, _)| ns),
                    compute_probe_ns: s.probe.map(|p| p.compute_ns),
                    memory_gb_per_s: memory.map(|(_, rate, _)| rate),
                    compute_gflop_per_s: s.probe.map(|p| p.compute_gflop_per_s()),
                    steal_pct: s.host.steal_pct,
                    competing_cpu_pct: s.host.competing_pct,
                    run_queue_wait_pct: s.host.wait_pct,
                    load_average_1min: s.load_average_1min,
                    probe_repeats: memory.map(|(_, _, k)| u64::from(k.repeats)),
                    memory_probe_kept_repeats: memory.map(|(_, _, k)| u64::from(k.kept_repeats)),
                    compute_probe_kept_repeats: s.probe.map(|p| u64::from(p.compute.kept_repeats)),
                    memory_probe_max_skew: memory.map(|(_, _, k)| k.max_skew),
                    compute_probe_max_skew: s.probe.map(|p| p.compute.max_skew),
                    probe_version: Some(self.probe.kernels().version()),
                }
            })
            .collect()
    }

    /// `(time_ns, GB/s)` of the usable quick probes, timed relative to `origin`.
    pub fn quick_rates(&self, origin: Instant) -> Vec<(i64, f64)> {
        self.samples
            .iter()
            .filter_map(|s| {
                let q = s.quick.filter(|q| q.memory.usable())?;
                Some((signed_ns_since(origin, s.at), q.memory_gb_per_s()))
            })
            .collect()
    }

    /// Counts and medians for `run_meta.json`.
    pub fn summary(&self) -> SpeedSummary {
        let probes: Vec<(SpeedPhase, ProbeSample)> = self
            .samples
            .iter()
            .filter_map(|s| Some((s.phase, s.probe?)))
            .collect();
        let median_of = |phase: Option<SpeedPhase>| -> Option<ProbeMedians> {
            let chosen: Vec<&ProbeSample> = probes
                .iter()
                .filter(|(p, _)| phase.is_none_or(|want| *p == want))
                .map(|(_, s)| s)
                .collect();
            ProbeMedians::of(&chosen)
        };
        let max_of = |f: fn(&HostShares) -> Option<f64>| {
            self.samples
                .iter()
                .filter_map(|s| f(&s.host))
                .reduce(f64::max)
        };
        SpeedSummary {
            probe_version: self.probe.kernels().version(),
            probe_threads: self.probe.threads(),
            num_probes: probes.len(),
            num_busy_samples: self
                .samples
                .iter()
                .filter(|s| s.phase == SpeedPhase::Busy)
                .count(),
            before: median_of(Some(SpeedPhase::Before)),
            idle: median_of(Some(SpeedPhase::Idle)),
            after: median_of(Some(SpeedPhase::After)),
            all: median_of(None),
            max_steal_pct: max_of(|h| h.steal_pct),
            max_competing_cpu_pct: max_of(|h| h.competing_pct),
            max_run_queue_wait_pct: max_of(|h| h.wait_pct),
            num_unusable_memory_probes: probes.iter().filter(|(_, p)| !p.memory.usable()).count(),
            num_unusable_compute_probes: probes.iter().filter(|(_, p)| !p.compute.usable()).count(),
            quick: QuickProbeSummary::of(
                &self
                    .samples
                    .iter()
                    .filter_map(|s| s.quick)
                    .collect::<Vec<_>>(),
                self.quick_probes_ns,
            ),
        }
    }
}

/// `at` on the clock whose t = 0 is `origin`, ns (negative before it).
pub fn signed_ns_since(origin: Instant, at: Instant) -> i64 {
    if at >= origin {
        i64::try_from((at - origin).as_nanos()).unwrap_or(i64::MAX)
    } else {
        -i64::try_from((origin - at).as_nanos()).unwrap_or(i64::MAX)
    }
}

impl Default for SpeedTimeline {
    fn default() -> Self {
        Self::new()
    }
}

/// Median probe times over some probes (`count`: probes taken, usable or not).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProbeMedians {
    pub count: usize,
    pub memory_probe_ns: f64,
    pub compute_probe_ns: f64,
    pub memory_gb_per_s: f64,
    pub compute_gflop_per_s: f64,
}

impl ProbeMedians {
    /// Each kind's medians over the probes whose kernel of that kind is usable (a probe the
    /// host's scheduler disturbed says nothing of the device), over all of them when none
    /// is (as `DeviceTimeline::median_levels` reads them back); `None` without a probe.
    fn of(samples: &[&ProbeSample]) -> Option<ProbeMedians> {
        let median = |v: Vec<f64>| quantile::median(&v).ok();
        let usable_or_all = |usable: fn(&ProbeSample) -> bool| {
            let chosen: Vec<&ProbeSample> = samples.iter().copied().filter(|s| usable(s)).collect();
            if chosen.is_empty() {
                samples.to_vec()
            } else {
                chosen
            }
        };
        let memory = usable_or_all(|s| s.memory.usable());
        let compute = usable_or_all(|s| s.compute.usable());
        Some(ProbeMedians {
            count: samples.len(),
            memory_probe_ns: median(memory.iter().map(|s| s.memory_ns as f64).collect())?,
            compute_probe_ns: median(compute.iter().map(|s| s.compute_ns as f64).collect())?,
            memory_gb_per_s: median(memory.iter().map(|s| s.memory_gb_per_s()).collect())?,
            compute_gflop_per_s: median(compute.iter().map(|s| s.compute_gflop_per_s()).collect())?,
        })
    }
}

/// What `run_meta.json` (and a bundle's `profiling_meta.json`) says of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeedSummary {
    pub probe_version: u32,
    pub probe_threads: usize,
    pub num_probes: usize,
    pub num_busy_samples: usize,
    pub before: Option<ProbeMedians>,
    pub idle: Option<ProbeMedians>,
    pub after: Option<ProbeMedians>,
    pub all: Option<ProbeMedians>,
    pub max_steal_pct: Option<f64>,
    pub max_competing_cpu_pct: Option<f64>,
    pub max_run_queue_wait_pct: Option<f64>,
    /// Probes whose memory (compute) kernel had too few repeats with its threads running
    /// together to time the device; left out of the medians above.
    pub num_unusable_memory_probes: usize,
    pub num_unusable_compute_probes: usize,
    /// The quick probes between iterations; `None` when none was taken.
    pub quick: Option<QuickProbeSummary>,
}

/// What the quick probes measured and what they cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QuickProbeSummary {
    pub count: usize,
    /// Those whose threads did not run together (left out of the median).
    pub num_unusable: usize,
    /// Median bandwidth of the usable ones (of all when none is), GB/s.
    pub memory_gb_per_s: f64,
    /// Wall time they took in all, ms: time the serve waited for them between iterations.
    pub total_ms: f64,
}

impl QuickProbeSummary {
    fn of(quick: &[QuickProbeSample], total_ns: u64) -> Option<QuickProbeSummary> {
        let rates = |usable_only: bool| -> Vec<f64> {
            quick
                .iter()
                .filter(|q| !usable_only || q.memory.usable())
                .map(QuickProbeSample::memory_gb_per_s)
                .collect()
        };
        let usable = rates(true);
        let chosen = if usable.is_empty() {
            rates(false)
        } else {
            usable
        };
        Some(QuickProbeSummary {
            count: quick.len(),
            num_unusable: quick.iter().filter(|q| !q.memory.usable()).count(),
            memory_gb_per_s: quantile::median(&chosen).ok()?,
            total_ms: total_ns as f64 / 1e6,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::real_bench::device_probe::KernelTiming;
    use std::time::Duration;

    #[test]
    fn rows_are_timed_from_the_origin_and_summarised_by_phase() {
        let mut t = SpeedTimeline::new();
        t.probe(SpeedPhase::Before);
        let origin = Instant::now();
        t.busy_sample();
        t.probe(SpeedPhase::Idle);
        t.probe(SpeedPhase::After);
        let rows = t.rows(origin);
        assert_eq!(rows.len(), 4);
        assert!(rows[0].time_ns < 0, "the before-probe precedes t = 0");
        assert!(rows[1..].iter().all(|r| r.time_ns >= 0));
        assert!(rows.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
        assert_eq!(rows[1].phase, SpeedPhase::Busy);
        assert!(rows[1].memory_probe_ns.is_none() && rows[1].compute_probe_ns.is_none());
        assert!(rows[2].memory_probe_ns.is_some() && rows[2].memory_gb_per_s.is_some());
        let s = t.summary();
        assert_eq!((s.num_probes, s.num_busy_samples), (3, 1));
        assert_eq!(s.before.unwrap().count, 1);
        assert_eq!(s.all.unwrap().count, 3);
        assert_eq!(
            t.latest_probe().unwrap().memory_ns as f64,
            s.after.unwrap().memory_probe_ns
        );
    }

    #[test]
    fn quick_probes_fill_the_memory_columns_at_their_cadence_and_leave_busy_samples_due() {
        let mut t = SpeedTimeline::new();
        let origin = Instant::now();
        t.busy_sample();
        assert!(t.quick_tick(Duration::from_secs(3600)), "no probe yet: due");
        assert!(!t.quick_tick(Duration::from_secs(3600)), "one just ran");
        assert!(t.quick_tick(Duration::ZERO));
        // Quick probes read no host counters, so they do not stand in for a busy sample:
        // with the busy sample made older than its cadence, the next tick takes one.
        let busy = &mut t.samples[0];
        busy.at = busy.at.checked_sub(Duration::from_secs(3)).unwrap();
        t.busy_tick();
        // A full probe counts for the quick cadence too.
        t.probe(SpeedPhase::Idle);
        assert!(!t.quick_tick(Duration::from_secs(3600)));
        let rows = t.rows(origin);
        let phases: Vec<SpeedPhase> = rows.iter().map(|r| r.phase).collect();
        use SpeedPhase::*;
        assert_eq!(phases, [Busy, Quick, Quick, Busy, Idle]);
        for r in rows.iter().filter(|r| r.phase == Quick) {
            assert!(r.memory_probe_ns.is_some_and(|ns| ns > 0));
            assert!(r.memory_gb_per_s.is_some_and(|g| g > 0.0));
            assert!(r.compute_probe_ns.is_none() && r.compute_gflop_per_s.is_none());
            assert_eq!(r.probe_repeats, Some(1));
            assert!(r.steal_pct.is_none() && r.load_average_1min.is_none());
        }
        // Usable ones only: whether a repeat's threads ran together is the host's business.
        let usable = rows
            .iter()
            .any(|r| r.phase == Quick && r.memory_probe_usable());
        assert_eq!(
            t.recent_quick_median_gb_per_s(Duration::from_secs(3600))
                .is_some(),
            usable
        );
        assert_eq!(t.recent_quick_median_gb_per_s(Duration::ZERO), None);
        let s = t.summary();
        assert_eq!(s.num_probes, 1, "quick probes are counted apart");
        let q = s.quick.unwrap();
        assert_eq!(q.count, 2);
        assert!(q.total_ms > 0.0 && q.memory_gb_per_s > 0.0);

        let mut t = SpeedTimeline::new().without_quick_probes();
        assert!(!t.quick_tick(Duration::ZERO));
        assert_eq!(t.summary().quick, None);
    }

    #[test]
    fn an_idle_gap_must_hold_twice_the_longest_probe() {
        let mut t = SpeedTimeline::new();
        // Before any probe, the floor alone decides.
        assert!(!t.fits_probe(MIN_IDLE_GAP_FOR_PROBE_NS - 1));
        assert!(t.fits_probe(MIN_IDLE_GAP_FOR_PROBE_NS));
        // A probe that took 0.85 s (as on a GPU host) needs a gap of 1.76 s.
        t.longest_probe_ns = 850_000_000;
        assert!(!t.fits_probe(1_000_000_000));
        assert!(t.fits_probe(2 * 850_000_000 + PROBE_MARGIN_NS));
        // A real probe only raises the bound.
        t.probe(SpeedPhase::Idle);
        assert!(t.longest_probe_ns >= 850_000_000);
    }

    #[test]
    fn idle_ticks_probe_at_the_cadence_asked_for() {
        let mut t = SpeedTimeline::new();
        assert!(t.idle_tick(Duration::from_secs(3600)), "no probe yet: due");
        assert!(
            !t.idle_tick(Duration::from_secs(3600)),
            "the last one is not an hour old"
        );
        assert!(t.idle_tick(Duration::ZERO));
        t.busy_sample();
        assert!(
            !t.idle_tick(Duration::from_secs(3600)),
            "busy samples are not probes"
        );
        let s = t.summary();
        assert_eq!((s.num_probes, s.num_busy_samples), (2, 1));
        assert_eq!(s.idle.unwrap().count, 2);
    }

    #[test]
    fn medians_leave_out_kernels_whose_threads_did_not_run_together() {
        let kernel = |median_ns: u64, kept_repeats: u32| KernelTiming {
            median_ns,
            kept_repeats,
            repeats: 5,
            max_skew: if kept_repeats == 5 { 1.0 } else { 2.0 },
        };
        let sample = |memory: KernelTiming, compute: KernelTiming| ProbeSample {
            memory_ns: memory.median_ns,
            compute_ns: compute.median_ns,
            memory_bytes: 1_000,
            compute_flops: 1_000,
            memory,
            compute,
        };
        // The second probe's compute kernel read half the rate with its threads apart.
        let (a, b) = (
            sample(kernel(100, 5), kernel(10, 5)),
            sample(kernel(100, 5), kernel(20, 1)),
        );
        let m = ProbeMedians::of(&[&a, &b]).unwrap();
        assert_eq!(m.count, 2);
        assert_eq!((m.memory_probe_ns, m.compute_probe_ns), (100.0, 10.0));
        assert_eq!(m.compute_gflop_per_s, 100.0);
        // With no usable one, all of them, so there is a number to show.
        let m = ProbeMedians::of(&[&b]).unwrap();
        assert_eq!(m.compute_probe_ns, 20.0);
        assert_eq!(ProbeMedians::of(&[]), None);
    }
}
