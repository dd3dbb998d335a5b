//! How fast the device was when a bundle was profiled vs when a real run ran, from one fixed
//! iteration both processes time (the real engine's warm-up iteration). `compare` reports it
//! in its error attribution and `replay` next to its errors; on a shared or throttled machine
//! it bounds how right any bundle can be.

use std::path::Path;

use serde::Serialize;

use crate::config::SimrealConfig;
use crate::io::bundle::Op;
use crate::io::read_csv;
use crate::io::records::{probe_version_label, timeline_probe_version, DeviceSpeedRow, SpeedPhase};
use crate::io::schema::DEVICE_SPEED;
use crate::io::speed_response::{SpeedResponse, FAST_STATE};
use crate::quantile;
use crate::vidur_ext::predictor::{
    BatchPrediction, ExecutionTimePredictor, IterationContext, RequestShape,
};
use crate::vidur_ext::simulator::clock::ClockKind;
use crate::{Error, Result};

/// The device's speed when the bundle was profiled vs when the real run ran, from the same
/// fixed iteration timed in both processes (the real engine's warm-up iteration: a 32-token
/// prefill plus one decode). A shared or throttled machine changes speed between the two,
/// and the predictor can only be as right as that.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DeviceSpeed {
    /// Median time of the reference iteration in the profiling process, ms.
    #[schemars(range(min = 0.0))]
    pub profile_reference_ms: f64,
    /// Median time of the reference iteration around the real run (its warm-up, and the same
    /// iteration after serving where recorded), ms.
    #[schemars(range(min = 0.0))]
    pub real_reference_ms: f64,
    /// `100 · (real − profile) / profile`: positive = the device was slower for the real run.
    pub real_slower_pct: f64,
}

impl DeviceSpeed {
    /// From the two runs' samples (each list's first time is a cold start and is left out);
    /// `None` when either side has fewer than two samples.
    pub fn of(profile_ms: &[f64], real_ms: &[f64]) -> Option<DeviceSpeed> {
        let warm_median = |v: &[f64]| -> Option<f64> {
            let warm = v.get(1..).filter(|w| !w.is_empty())?;
            let w: Vec<f64> = warm.iter().copied().filter(|x| x.is_finite()).collect();
            quantile::median(&w).ok()
        };
        let profile_reference_ms = warm_median(profile_ms)?;
        let real_reference_ms = warm_median(real_ms)?;
        (profile_reference_ms > 0.0).then(|| DeviceSpeed {
            profile_reference_ms,
            real_reference_ms,
            real_slower_pct: 100.0 * (real_reference_ms - profile_reference_ms)
                / profile_reference_ms,
        })
    }
}

impl DeviceSpeed {
    /// From a bundle's `profiling_meta.json` (`details.reference_iteration_ms`) and a real
    /// run's `run_meta.json` (`extra.warmup_iteration_ms`, then
    /// `extra.reference_iteration_after_ms` where recorded). `None` when either is missing:
    /// bundles from elsewhere, runs made before the reference iteration was recorded.
    pub fn between(bundle_dir: &Path, real_run_dir: &Path) -> Option<DeviceSpeed> {
        let json = |path: &Path| -> Option<serde_json::Value> {
            serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
        };
        let floats = |v: &serde_json::Value| -> Option<Vec<f64>> {
            v.as_array()?
                .iter()
                .map(serde_json::Value::as_f64)
                .collect()
        };
        let profiling = json(&bundle_dir.join("profiling_meta.json"))?;
        let real_meta = json(&real_run_dir.join("run_meta.json"))?;
        // The warm-up's first time is cold (`of` leaves it out); those after serving are warm.
        let mut real_ms = floats(&real_meta["extra"]["warmup_iteration_ms"])?;
        real_ms.extend(
            floats(&real_meta["extra"]["reference_iteration_after_ms"]).unwrap_or_default(),
        );
        DeviceSpeed::of(
            &floats(&profiling["details"]["reference_iteration_ms"])?,
            &real_ms,
        )
    }

    /// Real ÷ profile reference time: how much slower (> 1) the device ran the real run.
    pub fn real_over_profile(&self) -> f64 {
        self.real_reference_ms / self.profile_reference_ms
    }
}

/// The probe levels of a device state: kernel times, ns, and the rates they achieved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProbeLevels {
    pub memory_probe_ns: f64,
    pub compute_probe_ns: f64,
    pub memory_gb_per_s: f64,
    pub compute_gflop_per_s: f64,
}

/// What the host took from the timed threads over a sample interval, %.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct HostLoad {
    /// Share of the host's CPU time the hypervisor stole.
    pub steal_pct: f64,
    /// Share of the host's CPU time other processes ran (diagnostic only).
    pub competing_cpu_pct: f64,
    /// The timed threads' run-queue wait, % of the wall time: what other processes took
    /// from them while they had work.
    pub run_queue_wait_pct: f64,
}

impl HostLoad {
    /// The fraction of the wall time the timed threads could compute, in (0, 1]: less the
    /// hypervisor's steal and their own run-queue wait. Other processes' CPU time counts
    /// only through that wait (a real-time stage runs ahead of them, and they use what it
    /// leaves idle), so `competing_cpu_pct` stays a diagnostic.
    fn available_fraction(&self) -> f64 {
        (1.0 - (self.steal_pct + self.run_queue_wait_pct) / 100.0).clamp(MIN_AVAILABLE, 1.0)
    }
}

/// Below this available fraction a correction stops scaling (a 10× slowdown is already
/// far outside what any prediction can be trusted for).
const MIN_AVAILABLE: f64 = 0.1;

/// The two kinds of calibration probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    Memory,
    Compute,
}

impl ProbeKind {
    pub const ALL: [ProbeKind; 2] = [ProbeKind::Memory, ProbeKind::Compute];
}

/// One probe of a timeline: what it measured and which of its kernels time the device.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimelineProbe {
    pub time_ns: i64,
    pub levels: ProbeLevels,
    /// Whether each kernel's median times the device (most of its repeats had their threads
    /// run together; [`DeviceSpeedRow::memory_probe_usable`]). Always true in files written
    /// before the probe screened its repeats.
    pub memory_usable: bool,
    pub compute_usable: bool,
}

impl TimelineProbe {
    pub fn usable(&self, kind: ProbeKind) -> bool {
        match kind {
            ProbeKind::Memory => self.memory_usable,
            ProbeKind::Compute => self.compute_usable,
        }
    }

    /// The kernel's rate: GB/s for memory, GFLOP/s for compute.
    pub fn rate(&self, kind: ProbeKind) -> f64 {
        match kind {
            ProbeKind::Memory => self.levels.memory_gb_per_s,
            ProbeKind::Compute => self.levels.compute_gflop_per_s,
        }
    }
}

/// A quick probe of a timeline: one repeat of the memory kernel between iterations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QuickReading {
    pub time_ns: i64,
    pub memory_gb_per_s: f64,
    /// Whether its threads ran together (it times the device).
    pub usable: bool,
}

/// A bundle's quick probes are the reference of a run's when it has at least this many
/// usable ones; otherwise its full probes' memory median is (the same kernel on the same
/// window, after a flush instead of a forward).
pub const MIN_QUICK_REFERENCE: usize = 5;

/// A stage's device-speed timeline, read back from its `device_speed.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceTimeline {
    /// Every probe, usable or not, in time order.
    probes: Vec<TimelineProbe>,
    /// Every quick probe (phase `quick`: one repeat of the memory kernel between
    /// iterations), usable or not, in time order.
    quick: Vec<QuickReading>,
    /// `(time_ns, load)` of every sample with host counters: each describes the interval
    /// since the previous sample.
    host: Vec<(i64, HostLoad)>,
    /// The probes' version (`None`: a file written before versions were recorded, ≤ 3).
    probe_version: Option<u32>,
}

impl DeviceTimeline {
    /// From the rows of a `device_speed.csv`; `None` without a single probe.
    pub fn from_rows(rows: &[DeviceSpeedRow]) -> Option<DeviceTimeline> {
        let probe_version = timeline_probe_version(rows);
        let mut rows: Vec<&DeviceSpeedRow> = rows.iter().collect();
        rows.sort_by_key(|r| (r.time_ns, r.sample_id));
        let probes: Vec<TimelineProbe> = rows
            .iter()
            .filter(|r| r.phase != SpeedPhase::Quick)
            .filter_map(|r| {
                Some(TimelineProbe {
                    time_ns: r.time_ns,
                    levels: ProbeLevels {
                        memory_probe_ns: r.memory_probe_ns? as f64,
                        compute_probe_ns: r.compute_probe_ns? as f64,
                        memory_gb_per_s: r.memory_gb_per_s?,
                        compute_gflop_per_s: r.compute_gflop_per_s?,
                    },
                    memory_usable: r.memory_probe_usable(),
                    compute_usable: r.compute_probe_usable(),
                })
            })
            .collect();
        let quick = rows
            .iter()
            .filter(|r| r.phase == SpeedPhase::Quick)
            .filter_map(|r| {
                Some(QuickReading {
                    time_ns: r.time_ns,
                    memory_gb_per_s: r.memory_gb_per_s?,
                    usable: r.memory_probe_usable(),
                })
            })
            .collect();
        let host = rows
            .iter()
            .filter(|r| {
                r.steal_pct.is_some()
                    || r.competing_cpu_pct.is_some()
                    || r.run_queue_wait_pct.is_some()
            })
            .map(|r| {
                (
                    r.time_ns,
                    HostLoad {
                        steal_pct: r.steal_pct.unwrap_or(0.0),
                        competing_cpu_pct: r.competing_cpu_pct.unwrap_or(0.0),
                        run_queue_wait_pct: r.run_queue_wait_pct.unwrap_or(0.0),
                    },
                )
            })
            .collect();
        (!probes.is_empty()).then_some(DeviceTimeline {
            probes,
            quick,
            host,
            probe_version,
        })
    }

    /// Reads `<dir>/device_speed.csv`; `Ok(None)` when the stage did not record one (runs
    /// and bundles made before it existed, bundles from elsewhere) or it has no probe.
    pub fn read(dir: &Path) -> Result<Option<DeviceTimeline>> {
        let path = dir.join(DEVICE_SPEED.file_name);
        if !path.is_file() {
            return Ok(None);
        }
        let rows: Vec<DeviceSpeedRow> = read_csv(&path, &DEVICE_SPEED)?;
        Ok(DeviceTimeline::from_rows(&rows))
    }

    /// The probes' version (`None`: written before versions were recorded, version ≤ 3).
    pub fn probe_version(&self) -> Option<u32> {
        self.probe_version
    }

    /// Every probe, usable or not, in time order.
    pub fn probes(&self) -> &[TimelineProbe] {
        &self.probes
    }

    /// `(time_ns, rate)` of the probes whose `kind` kernel times the device, in time order
    /// (full probes only; quick ones: [`DeviceTimeline::quick_readings`]).
    pub fn usable_rates(&self, kind: ProbeKind) -> Vec<(i64, f64)> {
        self.probes
            .iter()
            .filter(|p| p.usable(kind))
            .map(|p| (p.time_ns, p.rate(kind)))
            .collect()
    }

    /// Every quick probe, usable or not, in time order.
    pub fn quick_readings(&self) -> &[QuickReading] {
        &self.quick
    }

    /// Median bandwidth of the usable quick probes, GB/s; `None` with fewer than
    /// [`MIN_QUICK_REFERENCE`] of them (too few to stand for a state).
    pub fn quick_median_gb_per_s(&self) -> Option<f64> {
        let usable: Vec<f64> = self
            .quick
            .iter()
            .filter(|q| q.usable)
            .map(|q| q.memory_gb_per_s)
            .collect();
        (usable.len() >= MIN_QUICK_REFERENCE).then(|| median(usable))
    }

    /// Probes whose `kind` kernel does not time the device.
    pub fn unusable_probes(&self, kind: ProbeKind) -> usize {
        self.probes.iter().filter(|p| !p.usable(kind)).count()
    }

    /// `(time_ns, load)` of every host sample, in time order (each covers the interval since
    /// the previous one).
    pub fn host_samples(&self) -> &[(i64, HostLoad)] {
        &self.host
    }

    /// Median probe levels over the whole timeline, each kind over its usable probes (over
    /// all of them when none is usable, so that there is a number to show).
    pub fn median_levels(&self) -> ProbeLevels {
        let med = |kind: ProbeKind, f: fn(&ProbeLevels) -> f64| {
            let usable: Vec<f64> = self
                .probes
                .iter()
                .filter(|p| p.usable(kind))
                .map(|p| f(&p.levels))
                .collect();
            if usable.is_empty() {
                median(self.probes.iter().map(|p| f(&p.levels)).collect())
            } else {
                median(usable)
            }
        };
        ProbeLevels {
            memory_probe_ns: med(ProbeKind::Memory, |l| l.memory_probe_ns),
            compute_probe_ns: med(ProbeKind::Compute, |l| l.compute_probe_ns),
            memory_gb_per_s: med(ProbeKind::Memory, |l| l.memory_gb_per_s),
            compute_gflop_per_s: med(ProbeKind::Compute, |l| l.compute_gflop_per_s),
        }
    }

    /// How far apart two device states are: the larger |ln ratio| of the median memory and
    /// compute probe rates (0 = the same speed; 0.1 ≈ 10 % apart), memory from the quick
    /// probes where both have enough of them: spread through the work, they say which state
    /// it mostly ran in, where a dozen full probes in idle gaps may all fall in a surge
    /// (a run's read 58 GB/s, its quick probes 36). Paired profiling predicts a run with the
    /// bundle nearest to it by this measure.
    pub fn distance(&self, other: &DeviceTimeline) -> f64 {
        let (a, b) = (self.median_levels(), other.median_levels());
        let ln_ratio = |x: f64, y: f64| {
            (x.max(f64::MIN_POSITIVE) / y.max(f64::MIN_POSITIVE))
                .ln()
                .abs()
        };
        let memory = match (self.quick_median_gb_per_s(), other.quick_median_gb_per_s()) {
            (Some(x), Some(y)) => ln_ratio(x, y),
            _ => ln_ratio(a.memory_gb_per_s, b.memory_gb_per_s),
        };
        memory.max(ln_ratio(a.compute_gflop_per_s, b.compute_gflop_per_s))
    }

    /// Median host load over the timeline (the profile's usual state).
    pub fn median_host_load(&self) -> HostLoad {
        HostLoad {
            steal_pct: median(self.host.iter().map(|(_, h)| h.steal_pct).collect()),
            competing_cpu_pct: median(self.host.iter().map(|(_, h)| h.competing_cpu_pct).collect()),
            run_queue_wait_pct: median(
                self.host
                    .iter()
                    .map(|(_, h)| h.run_queue_wait_pct)
                    .collect(),
            ),
        }
    }

    /// Host load over the sample interval that contains `t_ns` (zero outside the samples).
    pub fn host_load_at(&self, t_ns: i64) -> HostLoad {
        let i = self.host.partition_point(|(t, _)| *t < t_ns);
        self.host.get(i).map(|(_, h)| *h).unwrap_or_default()
    }
}

/// The value of `series` (`(time_ns, value)` in time order) at `t_ns`: linear between the
/// points around it, the nearest point's outside them; `None` for an empty series.
fn interpolate(series: &[(i64, f64)], t_ns: i64) -> Option<f64> {
    let i = series.partition_point(|(t, _)| *t <= t_ns);
    match (i.checked_sub(1).and_then(|j| series.get(j)), series.get(i)) {
        (Some(&(t0, a)), Some(&(t1, b))) if t1 > t0 => {
            let w = (t_ns - t0) as f64 / (t1 - t0) as f64;
            Some(a + w * (b - a))
        }
        (Some(&(_, a)), _) => Some(a),
        (None, Some(&(_, b))) => Some(b),
        (None, None) => None,
    }
}

/// A probe reading that puts the device more than this factor (×) from the profile's speed
/// while nothing else moved is capped at it: on its own it is more likely the host than the
/// device (a probe thread not run for the kernel's duration reads exactly half the rate).
pub const MAX_UNCORROBORATED_FACTOR: f64 = 1.2;
/// The other probe kind, or the timed threads' available CPU time (steal, run-queue wait),
/// corroborates a reading when it moves the same way by at least this factor (×).
pub const MIN_CORROBORATING_FACTOR: f64 = 1.1;

/// A probe's slowdown against the profile, `own_ln` (ln of profile rate ÷ probe rate), capped
/// at ± ln [`MAX_UNCORROBORATED_FACTOR`] unless one of `corroborating` — the same probe's
/// other kind, the host's availability (ln of profile ÷ run available fraction), the readings
/// of the same kind just before and after it — moves the same way by at least ln
/// [`MIN_CORROBORATING_FACTOR`]. Pure, so the rule is testable on its own.
pub fn cap_uncorroborated(own_ln: f64, corroborating: impl IntoIterator<Item = f64>) -> f64 {
    let limit = MAX_UNCORROBORATED_FACTOR.ln();
    if own_ln.abs() <= limit {
        return own_ln;
    }
    let corroborates = |ln: f64| ln * own_ln.signum() >= MIN_CORROBORATING_FACTOR.ln();
    if corroborating.into_iter().any(corroborates) {
        own_ln
    } else {
        own_ln.clamp(-limit, limit)
    }
}

/// What the correction did with the probes before using them: the explanation `replay`,
/// `compare` and `vidur` give with a corrected prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ProbeScreening {
    /// Probes in the run's timeline.
    pub run_probes: usize,
    /// Quick probes in it (one memory repeat between iterations).
    pub run_quick_probes: usize,
    /// Run probes whose memory / compute kernel was skipped: most repeats' threads did not
    /// run together (the host's scheduler, not the device).
    pub unusable_memory: usize,
    pub unusable_compute: usize,
    /// Run probes whose memory / compute reading was capped at
    /// [`MAX_UNCORROBORATED_FACTOR`]: far from the profile with nothing else moving.
    pub capped_memory: usize,
    pub capped_compute: usize,
    /// Run readings of memory / compute far beyond both neighbours in time, replaced by the
    /// nearer of them ([`replace_lone_spikes`]).
    pub isolated_memory: usize,
    pub isolated_compute: usize,
    /// Bundle probes whose memory / compute kernel was left out of its reference.
    pub bundle_unusable_memory: usize,
    pub bundle_unusable_compute: usize,
}

impl ProbeScreening {
    fn unusable_mut(&mut self, kind: ProbeKind) -> &mut usize {
        match kind {
            ProbeKind::Memory => &mut self.unusable_memory,
            ProbeKind::Compute => &mut self.unusable_compute,
        }
    }

    fn capped_mut(&mut self, kind: ProbeKind) -> &mut usize {
        match kind {
            ProbeKind::Memory => &mut self.capped_memory,
            ProbeKind::Compute => &mut self.capped_compute,
        }
    }

    /// One sentence on what was skipped or capped; `None` when every probe was used as read.
    pub fn sentence(&self) -> Option<String> {
        let skipped =
            "skipped (the probe's threads did not run together: host scheduling, not device speed)";
        let cap_pct = 100.0 * (MAX_UNCORROBORATED_FACTOR - 1.0);
        let capped = |other: &str| {
            format!(
                "capped at {cap_pct:.0} % from the profile's (neither the {other} probe, the \
                 readings just before and after it, nor the host's steal and run-queue wait \
                 moved with it)"
            )
        };
        let isolated = format!(
            "replaced by the nearer of the probes before and after it (more than {:.0} % beyond \
             both: a moment's contention, not the run's speed)",
            100.0 * (MIN_CORROBORATING_FACTOR - 1.0)
        );
        let mut parts = Vec::new();
        for (n, what, action) in [
            (self.unusable_memory, "memory", skipped.to_string()),
            (self.unusable_compute, "compute", skipped.to_string()),
            (self.capped_memory, "memory", capped("compute")),
            (self.capped_compute, "compute", capped("memory")),
            (self.isolated_memory, "memory", isolated.clone()),
            (self.isolated_compute, "compute", isolated),
            (
                self.bundle_unusable_memory,
                "bundle memory",
                "left out of its reference (threads did not run together)".to_string(),
            ),
            (
                self.bundle_unusable_compute,
                "bundle compute",
                "left out of its reference (threads did not run together)".to_string(),
            ),
        ] {
            if n > 0 {
                let s = if n == 1 { "" } else { "s" };
                parts.push(format!("{n} {what} reading{s} {action}"));
            }
        }
        (!parts.is_empty()).then(|| {
            let quick = match self.run_quick_probes {
                0 => String::new(),
                n => format!(" and {n} quick memory probes"),
            };
            format!(
                "Device-speed correction (the real run has {} probes{quick}): {}.",
                self.run_probes,
                parts.join("; ")
            )
        })
    }
}

/// The median of the finite values (0 for none: a timeline without probes says nothing).
fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    quantile::median(&v).unwrap_or(0.0)
}

/// What limits an op's time, as the share of it spent waiting for memory: the rest scales
/// with compute speed. From the op's arithmetic intensity `I` (FLOP per byte it must move)
/// and the device's balance `B` (the probes' FLOP/s ÷ bytes/s): a roofline with both terms
/// added, memory share = B / (B + I).
fn memory_share(intensity_flop_per_byte: f64, balance_flop_per_byte: f64) -> f64 {
    balance_flop_per_byte / (balance_flop_per_byte + intensity_flop_per_byte.max(0.0))
}

/// The run's probe rates per kind as the correction uses them, and what was done to them:
/// kernels unusable on either side left out; readings far from the profile's (`reference`)
/// that nothing else corroborates capped ([`cap_uncorroborated`]); lone readings that
/// neither neighbour in time confirms replaced ([`replace_lone_spikes`]). The memory series
/// holds the full probes' readings and the quick probes', each against the bundle's reading
/// of its own kind ([`DeviceTimeline::quick_median_gb_per_s`]), as rates on the full
/// probes' scale.
fn screen(
    bundle: &DeviceTimeline,
    reference: ProbeLevels,
    reference_host: HostLoad,
    run: &DeviceTimeline,
) -> ([Vec<(i64, f64)>; 2], ProbeScreening) {
    let mut screening = ProbeScreening {
        run_probes: run.probes().len(),
        run_quick_probes: run.quick_readings().len(),
        ..ProbeScreening::default()
    };
    let reference_rate = |kind: ProbeKind| match kind {
        ProbeKind::Memory => reference.memory_gb_per_s,
        ProbeKind::Compute => reference.compute_gflop_per_s,
    };
    // A kind the bundle never measured usably has no reference to scale from: its run
    // readings neither count nor corroborate (the bundle's count in the screening says why).
    let bundle_has = |kind: ProbeKind| bundle.unusable_probes(kind) < bundle.probes().len();
    let bundle_has = [
        bundle_has(ProbeKind::Memory),
        bundle_has(ProbeKind::Compute),
    ];
    let quick_reference = bundle
        .quick_median_gb_per_s()
        .or(bundle_has[ProbeKind::Memory as usize].then_some(reference.memory_gb_per_s));
    // ln(profile ÷ probe rate): > 0 when the device is slower than when profiled.
    let ln_ratio = |reference: f64, rate: f64| {
        (reference.max(f64::MIN_POSITIVE) / rate.max(f64::MIN_POSITIVE)).ln()
    };
    let slowdown_ln = |p: &TimelineProbe, kind: ProbeKind| {
        (p.usable(kind) && bundle_has[kind as usize])
            .then(|| ln_ratio(reference_rate(kind), p.rate(kind)))
    };
    let host_ln = |t_ns: i64| {
        (reference_host.available_fraction() / run.host_load_at(t_ns).available_fraction()).ln()
    };
    // Per kind, in time order: (time, own slowdown, the other kind's at the same probe).
    let mut readings: [Vec<(i64, f64, Option<f64>)>; 2] = [Vec::new(), Vec::new()];
    for p in run.probes() {
        let memory_ln = slowdown_ln(p, ProbeKind::Memory);
        let compute_ln = slowdown_ln(p, ProbeKind::Compute);
        for (kind, own, other) in [
            (ProbeKind::Memory, memory_ln, compute_ln),
            (ProbeKind::Compute, compute_ln, memory_ln),
        ] {
            match (bundle_has[kind as usize], own) {
                (false, _) => {}
                (true, Some(own)) => readings[kind as usize].push((p.time_ns, own, other)),
                (true, None) => *screening.unusable_mut(kind) += 1,
            }
        }
    }
    if let Some(quick_reference) = quick_reference {
        for q in run.quick_readings() {
            if q.usable {
                let own = ln_ratio(quick_reference, q.memory_gb_per_s);
                readings[ProbeKind::Memory as usize].push((q.time_ns, own, None));
            } else {
                screening.unusable_memory += 1;
            }
        }
    }
    let mut rates: [Vec<(i64, f64)>; 2] = [Vec::new(), Vec::new()];
    for kind in ProbeKind::ALL {
        let series = &mut readings[kind as usize];
        series.sort_by_key(|(t, _, _)| *t);
        for (i, &(t_ns, own, other)) in series.iter().enumerate() {
            let neighbours = [i.checked_sub(1), Some(i + 1)]
                .into_iter()
                .filter_map(|j| series.get(j?).map(|(_, ln, _)| *ln));
            let corroborating = other.into_iter().chain([host_ln(t_ns)]).chain(neighbours);
            let capped = cap_uncorroborated(own, corroborating);
            if capped != own {
                *screening.capped_mut(kind) += 1;
            }
            rates[kind as usize].push((t_ns, reference_rate(kind) / capped.exp()));
        }
    }
    let [memory, compute] = &mut rates;
    screening.isolated_memory = replace_lone_spikes(memory);
    screening.isolated_compute = replace_lone_spikes(compute);
    (rates, screening)
}

/// Replaces each inner reading of `series` (time order) that lies more than
/// [`MIN_CORROBORATING_FACTOR`] beyond both its neighbours, the same way, by the nearer of
/// them (the median of the three); returns how many it replaced. A probe catches one
/// instant, and the correction holds each reading until the next probe, seconds later: a
/// lone reading that neither neighbour confirms (seen on this VM: compute −50 % in one idle
/// gap while the engine around it ran at its usual speed) would scale all of that span. A
/// change seen by two probes in a row stays, and so does the ordinary scatter between them.
fn replace_lone_spikes(series: &mut [(i64, f64)]) -> usize {
    let raw: Vec<f64> = series.iter().map(|(_, rate)| *rate).collect();
    let mut replaced = 0;
    for (i, w) in raw.windows(3).enumerate() {
        let (low, high) = (w[0].min(w[2]), w[0].max(w[2]));
        let spike = w[1] > high * MIN_CORROBORATING_FACTOR || w[1] * MIN_CORROBORATING_FACTOR < low;
        if spike {
            series[i + 1].1 = w[1].clamp(low, high);
            replaced += 1;
        }
    }
    replaced
}

/// Scales predictions made from a bundle to the device state of a real run, using only the
/// two stages' device-speed timelines: calibration probes (memory-bound and compute-bound)
/// and host CPU shares (steal, other processes). It never sees the run's own iteration or
/// token timings, so it cannot fit the run it corrects.
///
/// Probes are screened first ([`ProbeScreening`]): a kernel whose threads did not run
/// together is skipped on either side, and a run probe's reading far from the profile's that
/// neither its other kind nor the host counters corroborate is capped
/// ([`cap_uncorroborated`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SpeedCorrection {
    /// The bundle's device state: its median probes and host load.
    reference: ProbeLevels,
    reference_host: HostLoad,
    run: DeviceTimeline,
    /// `(time_ns, rate)` of the run's probes, per kind ([`ProbeKind::ALL`] order), as
    /// screened: unusable ones left out, uncorroborated ones capped.
    run_rates: [Vec<(i64, f64)>; 2],
    screening: ProbeScreening,
    /// FLOP per byte at which the device's memory and compute time are equal.
    balance_flop_per_byte: f64,
    /// Bytes per weight and KV element.
    element_bytes: f64,
    /// Query heads per KV head (how often attention reuses each cached element).
    kv_group: f64,
    /// How the bundle's forwards answered the memory state, per size, where its profile
    /// measured it: used instead of the roofline's memory share for those sizes.
    response: Option<SpeedResponse>,
}

/// Whether the calibration probes (CPU kernels) time the device `cfg` serves on: only on
/// CPU hardware. A GPU run records them too, as a record of the host's load.
pub fn probes_time_the_device(cfg: &SimrealConfig) -> bool {
    cfg.hardware.device == crate::io::device::Device::Cpu
}

/// The bundle's measured response to the memory state (`details.device_speed_response` of
/// its `profiling_meta.json`); `None` for bundles without one (from elsewhere, or profiled
/// before probe version 5). A malformed one is a parse error naming the file.
fn read_response(bundle_dir: &Path) -> Result<Option<SpeedResponse>> {
    let path = bundle_dir.join("profiling_meta.json");
    if !path.is_file() {
        return Ok(None);
    }
    let meta: serde_json::Value = crate::io::read_json(&path)?;
    let value = &meta["details"]["device_speed_response"];
    if value.is_null() {
        return Ok(None);
    }
    let response: SpeedResponse = serde_json::from_value(value.clone())
        .map_err(|e| Error::parse(&path, format!("details.device_speed_response: {e}")))?;
    for bucket in &response.buckets {
        if let Some(name) = bucket
            .op_fast_time_ratio
            .keys()
            .find(|n| Op::from_name(n).is_none())
        {
            return Err(Error::parse(
                &path,
                format!(
                    "details.device_speed_response: unknown op `{name}` in the fast-state \
                     ratios of the bucket from {} tokens",
                    bucket.min_tokens
                ),
            ));
        }
    }
    Ok(Some(response))
}

/// One correction factor per kind of work at one instant: predicted × factor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SpeedFactors {
    /// Memory-bound work (the memory probe's ratio, with host load).
    pub memory: f64,
    /// Compute-bound work (the compute probe's ratio, with host load).
    pub compute: f64,
}

impl SpeedFactors {
    /// Both factors scaled by the host's availability factor.
    fn times(self, host: f64) -> SpeedFactors {
        SpeedFactors {
            memory: self.memory * host,
            compute: self.compute * host,
        }
    }
}

impl SpeedCorrection {
    /// The correction of the predictions of the bundle at `bundle_dir` to the device speed
    /// over time of the real run at `real_run`, for `cfg`'s model and dtype, when both
    /// recorded a device-speed timeline (`device_speed.csv`); `None` otherwise, and always
    /// on GPU hardware: the calibration probes time the host's CPU, which says nothing of
    /// the GPU's speed (on an H200 the correction turned a −7.2 % error into +15.9 %).
    /// Timelines whose probes are of different versions time different kernels: a
    /// [`Error::Mismatch`] naming both.
    pub fn between(
        cfg: &SimrealConfig,
        bundle_dir: &Path,
        real_run: &Path,
    ) -> Result<Option<SpeedCorrection>> {
        if !probes_time_the_device(cfg) {
            return Ok(None);
        }
        let (Some(bundle), Some(run)) = (
            DeviceTimeline::read(bundle_dir)?,
            DeviceTimeline::read(real_run)?,
        ) else {
            return Ok(None);
        };
        if bundle.probe_version() != run.probe_version() {
            return Err(Error::Mismatch(format!(
                "the device-speed probes of the bundle {} are version {} and those of the real \
                 run {} version {}: they time different kernels, so neither can correct the \
                 other; redo the older one (`output.force=true`)",
                bundle_dir.display(),
                probe_version_label(bundle.probe_version()),
                real_run.display(),
                probe_version_label(run.probe_version()),
            )));
        }
        let m = &cfg.model;
        let correction = SpeedCorrection::new(
            &bundle,
            run,
            cfg.dtype().size_bytes(),
            m.num_attention_heads / m.num_key_value_heads.max(1),
        );
        Ok(Some(match read_response(bundle_dir)? {
            Some(response) => correction.with_response(response),
            None => correction,
        }))
    }

    /// Goes by the memory state `response` measured (see [`Self::correct`]) instead of the
    /// roofline's memory share.
    pub fn with_response(self, response: SpeedResponse) -> SpeedCorrection {
        SpeedCorrection {
            response: Some(response),
            ..self
        }
    }

    /// The bundle's measured response to the memory state, if it has one.
    pub fn response(&self) -> Option<&SpeedResponse> {
        self.response.as_ref()
    }

    /// One sentence on which sizes of iteration the bundle's measured response scales, and
    /// by what (or that it measured none); `None` for a bundle without a response.
    pub fn response_sentence(&self) -> Option<String> {
        let buckets = &self.response.as_ref()?.buckets;
        let measured: Vec<String> = buckets
            .iter()
            .filter_map(|b| {
                let sizes = match b.max_tokens {
                    Some(max) if max == b.min_tokens => format!("{max}"),
                    Some(max) => format!("{}–{max}", b.min_tokens),
                    None => format!("{}+", b.min_tokens),
                };
                Some(format!("{sizes} tokens ×{:.2}", b.fast_time_ratio?))
            })
            .collect();
        // The spread of the ops' own ratios in the smallest size that has them.
        let ops = buckets.iter().find_map(|b| {
            let by_value = |x: &(&String, &f64), y: &(&String, &f64)| x.1.total_cmp(y.1);
            let lowest = b.op_fast_time_ratio.iter().min_by(by_value)?;
            let highest = b.op_fast_time_ratio.iter().max_by(by_value)?;
            Some(format!(
                "; each op takes its own where measured ({} of them at {} token(s), from {} ×{:.2} \
                 to {} ×{:.2})",
                b.op_fast_time_ratio.len(),
                b.min_tokens,
                lowest.0,
                lowest.1,
                highest.0,
                highest.1
            ))
        });
        if measured.is_empty() {
            return Some(format!(
                "Device-speed correction: the bundle's profile saw too little of the host's fast \
                 memory state to measure how its forwards answer it; iterations the run's \
                 probes place within ×/÷ {FAST_STATE} of the profile's or faster keep its \
                 memory speed, slower ones take the roofline."
            ));
        }
        Some(format!(
            "Device-speed correction: the bundle's profile measured how its forwards' time \
             changes in the host's fast memory state (quick probes ≥ {FAST_STATE}× its \
             median; < 1 = faster): {}{}; iterations the run's probes place in that state \
             take these (sizes between measured ones geometrically between them), other \
             sizes in it and those in the profiled state keep the profile's memory speed, \
             slower states take the roofline.",
            measured.join(", "),
            ops.unwrap_or_default()
        ))
    }

    /// From the bundle's timeline and the run's; `element_bytes` of the served dtype and
    /// `kv_group` = query heads ÷ KV heads of the model.
    pub fn new(
        bundle: &DeviceTimeline,
        run: DeviceTimeline,
        element_bytes: u64,
        kv_group: u32,
    ) -> SpeedCorrection {
        let reference = bundle.median_levels();
        let reference_host = bundle.median_host_load();
        let (run_rates, mut screening) = screen(bundle, reference, reference_host, &run);
        screening.bundle_unusable_memory = bundle.unusable_probes(ProbeKind::Memory);
        screening.bundle_unusable_compute = bundle.unusable_probes(ProbeKind::Compute);
        SpeedCorrection {
            reference,
            reference_host,
            run,
            run_rates,
            screening,
            // Both kernels use every thread, so their rates' ratio is the device's balance.
            balance_flop_per_byte: reference.compute_gflop_per_s
                / reference.memory_gb_per_s.max(f64::MIN_POSITIVE),
            element_bytes: element_bytes.max(1) as f64,
            kv_group: f64::from(kv_group.max(1)),
            response: None,
        }
    }

    /// What was skipped or capped of the probes.
    pub fn screening(&self) -> &ProbeScreening {
        &self.screening
    }

    /// The factors at `t_ns` of the run's clock.
    pub fn factors_at(&self, t_ns: i64) -> SpeedFactors {
        let (device, host) = self.device_factors_at(t_ns);
        device.times(host)
    }

    /// The probes' factors alone at `t_ns`, and the host's availability factor.
    fn device_factors_at(&self, t_ns: i64) -> (SpeedFactors, f64) {
        let host = self.reference_host.available_fraction()
            / self.run.host_load_at(t_ns).available_fraction();
        // Rates, not times: they compare across probe versions (kernel sizes). A kind with
        // no usable probe on the run's side has no evidence of a change: 1.
        let device = |kind: ProbeKind, reference: f64| {
            interpolate(&self.run_rates[kind as usize], t_ns)
                .map_or(1.0, |now| reference / now.max(f64::MIN_POSITIVE))
        };
        let factors = SpeedFactors {
            memory: device(ProbeKind::Memory, self.reference.memory_gb_per_s),
            compute: device(ProbeKind::Compute, self.reference.compute_gflop_per_s),
        };
        (factors, host)
    }

    /// The device's balance (FLOP per byte) in the bundle's state.
    pub fn balance_flop_per_byte(&self) -> f64 {
        self.balance_flop_per_byte
    }

    /// Arithmetic intensity of `op` in an iteration of `batch` with `logits_rows` sequences
    /// producing logits, FLOP per byte.
    fn intensity(&self, op: Op, batch: &[RequestShape], logits_rows: u32) -> f64 {
        let b = self.element_bytes;
        let tokens: f64 = batch.iter().map(|r| f64::from(r.num_tokens)).sum();
        match op {
            // Each weight element: 2 FLOP per row of input.
            Op::AttnPreProj | Op::AttnPostProj | Op::MlpUpProj | Op::MlpDownProj => {
                2.0 * tokens / b
            }
            Op::LmHead => 2.0 * f64::from(logits_rows.max(1)) / b,
            // Each cached element: 2 FLOP per query head of its group per query token.
            Op::AttnDecode => 2.0 * self.kv_group / b,
            Op::AttnPrefill => {
                let prefill: Vec<&RequestShape> = batch.iter().filter(|r| r.is_prefill).collect();
                let chunk = prefill.iter().map(|r| f64::from(r.num_tokens)).sum::<f64>()
                    / prefill.len().max(1) as f64;
                2.0 * self.kv_group * chunk / b
            }
            // Elementwise ops and copies: about one FLOP per element moved.
            _ => 1.0 / b,
        }
    }

    /// `p` (predicted for `batch` at `t_ns` of the run) scaled to the run's device state:
    /// each op by its memory/compute mix, CPU overheads as compute. Where the bundle measured
    /// how forwards answer the host's fast memory state ([`SpeedResponse`]), the memory side
    /// goes by state instead: an iteration whose memory reading is within ×/÷
    /// [`FAST_STATE`] of the profile's keeps the profile's memory speed (the probes' level
    /// moves with their context by more than the engine does), one at least that much faster
    /// takes the op's fast-state ratio (where the profile measured one, else the forward's;
    /// neither: the profile's memory speed), a slower one the roofline. The compute probe's
    /// factor scales only the op's compute share (the memory state does not move it, but a
    /// compute slowdown of its own, an FMA unit shared with a neighbour, still counts).
    pub fn correct(
        &self,
        p: &BatchPrediction,
        batch: &[RequestShape],
        logits_rows: u32,
        t_ns: i64,
    ) -> BatchPrediction {
        let (device, host) = self.device_factors_at(t_ns);
        let f = device.times(host);
        let num_tokens: u32 = batch.iter().map(|r| r.num_tokens).sum();
        // A bundle that fitted a response has a reference state for its probes, measured
        // fast-state ratios or not: the band around it holds either way (the probes' context
        // moves their level by up to ~10 % while the engine runs as profiled: a profile that
        // never saw the fast state read its runs 10 % fast in the 05:35 paired window).
        let response = self.response.as_ref();
        // The run's memory reading against the profile's (the factor is reference ÷ now).
        let memory_ratio = 1.0 / device.memory.max(f64::MIN_POSITIVE);
        let forward_ratio = response.and_then(|r| r.fast_time_ratio(num_tokens));
        let mut ops_ms = p.ops_ms;
        for op in Op::ALL {
            let share = memory_share(
                self.intensity(op, batch, logits_rows),
                self.balance_flop_per_byte,
            );
            let compute_and_host = device.compute.powf(1.0 - share) * host;
            let fast_ratio = response
                .and_then(|r| r.op_fast_time_ratio(op, num_tokens))
                .or(forward_ratio);
            ops_ms[op.index()] *= match (response, fast_ratio) {
                (Some(_), Some(ratio)) if memory_ratio >= FAST_STATE => ratio * compute_and_host,
                // The profiled state, or a fast one the profile measured no answer to: no
                // evidence the forward moves with that. Where bundles saw no fast state (vllm
                // 3 of the 00:58 and 11:53 paired windows of 2026-12-05, sarathi 3 and 5 of
                // 11:53), the engine ran as profiled in it (predicted ÷ measured 0.96–1.04
                // raw) and the roofline made that 0.78–0.92.
                (Some(_), _) if memory_ratio > 1.0 / FAST_STATE => compute_and_host,
                _ => share * f.memory + (1.0 - share) * f.compute,
            };
        }
        let cpu_overheads_ms = p.cpu_overheads_ms.map(|ms| ms * f.compute);
        // The model time grows with the ops that make it up (a predictor's model time is the
        // sum of its ops, up to what it leaves unattributed, which keeps its ratio).
        let ops_before: f64 = p.ops_ms.iter().sum();
        let ops_after: f64 = ops_ms.iter().sum();
        let model_ms = p.model_ns as f64 / 1e6
            * if ops_before > 0.0 {
                ops_after / ops_before
            } else {
                f.compute
            };
        BatchPrediction::from_parts(
            model_ms,
            ops_ms,
            cpu_overheads_ms,
            p.extrapolated_ops,
            p.extrapolated && p.extrapolated_ops.is_empty(),
        )
    }
}

/// A predictor whose every prediction is scaled to a real run's device state at the
/// iteration's start ([`IterationContext::start_time_ns`]; without it, at t = 0). `P` is the
/// predictor itself, a reference or a box.
pub struct SpeedCorrectedPredictor<P> {
    inner: P,
    correction: SpeedCorrection,
}

impl<P: ExecutionTimePredictor> SpeedCorrectedPredictor<P> {
    pub fn new(inner: P, correction: SpeedCorrection) -> Self {
        SpeedCorrectedPredictor { inner, correction }
    }

    /// The correction applied.
    pub fn correction(&self) -> &SpeedCorrection {
        &self.correction
    }
}

impl<P: ExecutionTimePredictor> ExecutionTimePredictor for SpeedCorrectedPredictor<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn clock(&self) -> ClockKind {
        self.inner.clock()
    }

    fn predict_with(&self, batch: &[RequestShape], ctx: &IterationContext) -> BatchPrediction {
        let p = self.inner.predict_with(batch, ctx);
        let rows = ctx.num_logits_rows.unwrap_or(batch.len() as u32);
        let t_ns = ctx
            .start_time_ns
            .map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX));
        self.correction.correct(&p, batch, rows, t_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::bundle::CpuOverheadTerm;
    use crate::io::bundle::OpSet;

    #[test]
    fn device_speed_leaves_out_the_cold_first_time() {
        // Profile 100 ms warm (the 300 ms first time is cold), real run 110 ms warm.
        let d =
            DeviceSpeed::of(&[300.0, 99.0, 100.0, 101.0], &[500.0, 110.0, 112.0, 108.0]).unwrap();
        assert_eq!(d.profile_reference_ms, 100.0);
        assert_eq!(d.real_reference_ms, 110.0);
        assert!((d.real_slower_pct - 10.0).abs() < 1e-9);
        assert!(
            DeviceSpeed::of(&[100.0], &[100.0, 100.0]).is_none(),
            "no warm profile time"
        );
        assert!(
            DeviceSpeed::of(&[1.0, 0.0], &[1.0, 5.0]).is_none(),
            "zero reference"
        );
    }

    #[test]
    fn between_reads_the_bundle_and_the_run_and_tolerates_their_absence() {
        let dir = std::env::temp_dir().join(format!("simreal-devspeed-{}", std::process::id()));
        let (bundle, run) = (dir.join("bundle"), dir.join("run"));
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::create_dir_all(&run).unwrap();
        assert!(DeviceSpeed::between(&bundle, &run).is_none());
        std::fs::write(
            bundle.join("profiling_meta.json"),
            r#"{"details": {"reference_iteration_ms": [90, 50, 50]}}"#,
        )
        .unwrap();
        std::fs::write(
            run.join("run_meta.json"),
            r#"{"extra": {"warmup_iteration_ms": [80, 60, 60]}}"#,
        )
        .unwrap();
        let d = DeviceSpeed::between(&bundle, &run).unwrap();
        assert_eq!((d.profile_reference_ms, d.real_reference_ms), (50.0, 60.0));
        assert!((d.real_over_profile() - 1.2).abs() < 1e-12);
        // Times after serving join the warm-up's warm ones (the cold first stays out).
        std::fs::write(
            run.join("run_meta.json"),
            r#"{"extra": {"warmup_iteration_ms": [80, 60, 60],
                          "reference_iteration_after_ms": [70, 70, 70]}}"#,
        )
        .unwrap();
        let d = DeviceSpeed::between(&bundle, &run).unwrap();
        assert_eq!(d.real_reference_ms, 70.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn probe_row(time_ns: i64, memory_gb_per_s: f64, compute_gflop_per_s: f64) -> DeviceSpeedRow {
        DeviceSpeedRow::idle_probe(time_ns, memory_gb_per_s, compute_gflop_per_s)
    }

    fn host_row(time_ns: i64, steal_pct: f64, run_queue_wait_pct: f64) -> DeviceSpeedRow {
        DeviceSpeedRow {
            memory_probe_ns: None,
            compute_probe_ns: None,
            memory_gb_per_s: None,
            compute_gflop_per_s: None,
            steal_pct: Some(steal_pct),
            competing_cpu_pct: Some(50.0),
            run_queue_wait_pct: Some(run_queue_wait_pct),
            phase: SpeedPhase::Busy,
            ..probe_row(time_ns, 0.0, 0.0)
        }
    }

    /// A profile at 10 GB/s and 100 GFLOP/s (balance 10 FLOP/byte).
    fn profile() -> DeviceTimeline {
        DeviceTimeline::from_rows(&[probe_row(0, 10.0, 100.0), probe_row(1, 10.0, 100.0)]).unwrap()
    }

    fn ops_prediction(op: Op, ms: f64) -> BatchPrediction {
        let mut ops_ms = [0.0; Op::COUNT];
        ops_ms[op.index()] = ms;
        BatchPrediction::from_parts(
            ms,
            ops_ms,
            [0.0; CpuOverheadTerm::COUNT],
            OpSet::default(),
            false,
        )
    }

    #[test]
    fn memory_bound_ops_follow_the_memory_probe_and_compute_bound_ones_the_compute_probe() {
        // The run's memory is half as fast, its compute 10 % slower than the profile's (which
        // corroborates the memory probe: it moved the same way).
        let run = DeviceTimeline::from_rows(&[probe_row(0, 5.0, 100.0 / 1.1)]).unwrap();
        assert!((run.distance(&profile()) - 2f64.ln()).abs() < 1e-12);
        assert_eq!(profile().distance(&profile()), 0.0);
        let c = SpeedCorrection::new(&profile(), run, 4, 2);
        assert_eq!(c.balance_flop_per_byte(), 10.0);
        assert_eq!(c.screening().sentence(), None);
        let decode = [RequestShape::decode(1000); 4];
        let p = c.correct(&ops_prediction(Op::AttnDecode, 10.0), &decode, 4, 0);
        // Decode attention: 1 FLOP/byte, memory share 10/11.
        let expected = 10.0 * (10.0 / 11.0 * 2.0 + 1.0 / 11.0 * 1.1);
        assert!((p.ops_ms[Op::AttnDecode.index()] - expected).abs() < 1e-9);
        // A 2048-token prefill's projections: 1024 FLOP/byte, almost all compute.
        let prefill = [RequestShape::prefill(2048, 0)];
        let p = c.correct(&ops_prediction(Op::MlpUpProj, 10.0), &prefill, 1, 0);
        let f = p.ops_ms[Op::MlpUpProj.index()] / 10.0;
        assert!(f > 1.1 && f < 1.11, "{f}");
        assert!((p.model_ns as f64 / 1e6 / 10.0 - f).abs() < 1e-6);
    }

    #[test]
    fn a_lone_reading_beyond_both_neighbours_takes_the_nearer_one() {
        let series = |rates: &[f64]| -> Vec<(i64, f64)> {
            rates
                .iter()
                .enumerate()
                .map(|(i, r)| (i as i64, *r))
                .collect()
        };
        let rates = |s: &[(i64, f64)]| s.iter().map(|(_, r)| *r).collect::<Vec<_>>();
        // A dip and a peak, each alone: replaced; the ends have one neighbour and stay.
        let mut s = series(&[220.0, 230.0, 115.0, 228.0, 300.0, 225.0, 10.0]);
        assert_eq!(replace_lone_spikes(&mut s), 2);
        assert_eq!(rates(&s), [220.0, 230.0, 228.0, 228.0, 228.0, 225.0, 10.0]);
        // A slowdown two probes in a row see stays, and so does scatter within 10 %.
        let mut s = series(&[230.0, 115.0, 120.0, 228.0, 215.0, 232.0]);
        assert_eq!(replace_lone_spikes(&mut s), 0);
        assert_eq!(rates(&s), [230.0, 115.0, 120.0, 228.0, 215.0, 232.0]);
        assert_eq!(replace_lone_spikes(&mut []), 0);
        assert_eq!(replace_lone_spikes(&mut series(&[1.0, 100.0])), 0);
    }

    #[test]
    fn a_lone_slow_probe_does_not_scale_the_span_around_it() {
        // Both kinds read half speed in one idle gap (they corroborate each other, so the cap
        // leaves them), with the profile's speed in the probes before and after it.
        let run = DeviceTimeline::from_rows(&[
            probe_row(0, 10.0, 100.0),
            probe_row(10_000_000_000, 5.0, 50.0),
            probe_row(20_000_000_000, 10.0, 100.0),
        ])
        .unwrap();
        let c = SpeedCorrection::new(&profile(), run, 4, 2);
        for t_ns in [5_000_000_000, 10_000_000_000, 15_000_000_000] {
            assert_eq!(c.factors_at(t_ns).memory, 1.0);
            assert_eq!(c.factors_at(t_ns).compute, 1.0);
        }
        let sentence = c.screening().sentence().unwrap();
        assert!(
            sentence.contains("1 memory reading replaced") && sentence.contains("1 compute"),
            "{sentence}"
        );
    }

    #[test]
    fn the_factor_follows_the_timeline_and_the_host_load() {
        // Both probes slow down from the profile's speed to half of it over 10 s; from 10 s
        // on, the timed threads wait 50 % of the time in the run queue.
        let run = DeviceTimeline::from_rows(&[
            probe_row(0, 10.0, 100.0),
            probe_row(10_000_000_000, 5.0, 50.0),
            host_row(10_000_000_000, 0.0, 0.0),
            host_row(20_000_000_000, 0.0, 50.0),
        ])
        .unwrap();
        let c = SpeedCorrection::new(&profile(), run, 2, 2);
        let at = |t_ns: i64| c.factors_at(t_ns);
        assert_eq!(at(0).memory, 1.0);
        assert!((at(5_000_000_000).memory - 10.0 / 7.5).abs() < 1e-12);
        assert!((at(10_000_000_000).compute - 2.0).abs() < 1e-12);
        // Half the wall time left to compute: twice again. Other processes' CPU time alone
        // (competing_cpu_pct) is not a slowdown.
        assert!((at(15_000_000_000).compute - 4.0).abs() < 1e-12);
        assert!((at(30_000_000_000).compute - 2.0).abs() < 1e-12);
    }

    #[test]
    fn an_uncorroborated_reading_is_capped_and_a_corroborated_one_is_not() {
        let cap = MAX_UNCORROBORATED_FACTOR.ln();
        let (two, small) = (2f64.ln(), 1.05f64.ln());
        // Within the cap: as read, whatever else did.
        assert_eq!(cap_uncorroborated(1.15f64.ln(), [0.0, 0.0]), 1.15f64.ln());
        // Twice as slow with everything else flat (or barely moving): capped, either way.
        assert_eq!(cap_uncorroborated(two, [0.0, 0.0]), cap);
        assert_eq!(cap_uncorroborated(two, [small, small, small]), cap);
        assert_eq!(cap_uncorroborated(-two, [0.0]), -cap);
        // Nothing to corroborate it, or only moves the other way: capped.
        assert_eq!(cap_uncorroborated(two, []), cap);
        assert_eq!(cap_uncorroborated(two, [-two, 0.0]), cap);
        // Anything moving the same way by 10 %: in full.
        assert_eq!(cap_uncorroborated(two, [0.0, 1.1f64.ln()]), two);
        assert_eq!(cap_uncorroborated(two, [1.25f64.ln()]), two);
        assert_eq!(cap_uncorroborated(-two, [0.0, -two]), -two);
    }

    #[test]
    fn quick_probes_track_the_memory_state_between_full_probes() {
        let quick = |time_ns: i64, gb_per_s: f64| DeviceSpeedRow {
            phase: SpeedPhase::Quick,
            compute_probe_ns: None,
            compute_gflop_per_s: None,
            compute_probe_kept_repeats: None,
            compute_probe_max_skew: None,
            probe_repeats: Some(1),
            memory_probe_kept_repeats: Some(1),
            ..probe_row(time_ns, gb_per_s, 0.0)
        };
        let s = 1_000_000_000;
        // The bundle's full probes read 10 GB/s, its quick ones 11 (no flush before them).
        let mut bundle_rows = vec![probe_row(0, 10.0, 100.0), probe_row(1, 10.0, 100.0)];
        bundle_rows.extend((0..5).map(|i| quick(2 + i, 11.0)));
        let bundle = DeviceTimeline::from_rows(&bundle_rows).unwrap();
        assert_eq!(bundle.probes().len(), 2, "quick rows are not full probes");
        assert_eq!(bundle.quick_median_gb_per_s(), Some(11.0));
        // The run: memory 1.6× faster for three quick probes in a row (a surge no full probe
        // saw), a lone quick reading at half speed, and one whose threads did not run together.
        let run = DeviceTimeline::from_rows(&[
            probe_row(0, 10.0, 100.0),
            quick(s, 11.0),
            quick(2 * s, 17.6),
            quick(3 * s, 17.6),
            quick(4 * s, 17.6),
            quick(5 * s, 11.0),
            quick(6 * s, 5.5),
            quick(7 * s, 11.0),
            DeviceSpeedRow {
                memory_probe_kept_repeats: Some(0),
                ..quick(8 * s, 1.0)
            },
            probe_row(10 * s, 10.0, 100.0),
        ])
        .unwrap();
        // Memory distance from the quick medians (11 against 11), not the full probes' (10).
        assert_eq!(run.distance(&bundle), 0.0);
        let c = SpeedCorrection::new(&bundle, run, 4, 2);
        let memory = |t_ns: i64| c.factors_at(t_ns).memory;
        // Against the bundle's quick reading, not its full one; in full, though 60 % off the
        // profile with the compute probe flat: its neighbours corroborate it.
        assert!((memory(s) - 1.0).abs() < 1e-12);
        assert!(
            (memory(3 * s) - 1.0 / 1.6).abs() < 1e-12,
            "{}",
            memory(3 * s)
        );
        assert!((memory(s + s / 2) - 2.0 / 2.6).abs() < 1e-12);
        // The lone half-speed reading is replaced; the skewed one skipped.
        assert!((memory(6 * s) - 1.0).abs() < 1e-12);
        assert!((memory(8 * s) - 1.0).abs() < 1e-12);
        assert_eq!(c.factors_at(3 * s).compute, 1.0);
        let screening = *c.screening();
        assert_eq!(screening.run_quick_probes, 8);
        assert_eq!(screening.unusable_memory, 1);
        // The lone reading is both: nothing corroborates it (capped), and then it is still
        // beyond both neighbours (replaced). The surge is neither.
        assert_eq!(screening.isolated_memory, 1);
        assert_eq!(screening.capped_memory, 1);
        assert!(screening
            .sentence()
            .unwrap()
            .contains("the real run has 2 probes and 8 quick memory probes"));

        // Without enough quick probes in the bundle, its full probes' memory median is the
        // reference (the same kernel and window).
        let bundle = profile();
        assert_eq!(bundle.quick_median_gb_per_s(), None);
        let run = DeviceTimeline::from_rows(&[
            probe_row(0, 10.0, 100.0),
            quick(s, 11.0),
            quick(2 * s, 11.0),
        ])
        .unwrap();
        let c = SpeedCorrection::new(&bundle, run, 4, 2);
        assert!((c.factors_at(2 * s).memory - 10.0 / 11.0).abs() < 1e-12);
    }

    #[test]
    fn a_measured_response_scales_fast_state_iterations_by_their_ratio() {
        use crate::io::speed_response::ResponseBucket;
        let bucket =
            |min_tokens: u32, max_tokens: Option<u32>, ratio: Option<f64>| ResponseBucket {
                min_tokens,
                max_tokens,
                forwards: 40,
                forwards_near_reference: 20,
                forwards_fast: 20,
                fast_time_ratio: ratio,
                op_fast_time_ratio: Default::default(),
            };
        let mut two_three = bucket(2, Some(3), Some(0.75));
        // Decode attention slows down where the forward speeds up.
        two_three
            .op_fast_time_ratio
            .insert("attn_decode".to_owned(), 1.3);
        let response = SpeedResponse {
            reference_gb_per_s: 10.0,
            fast_state_gb_per_s: Some(15.0),
            buckets: vec![
                bucket(1, Some(1), None),
                two_three,
                bucket(64, None, Some(1.1)),
            ],
        };
        // Memory at `rate` against the profile's 10 (corroborated by its neighbour), compute
        // flat.
        let correction = |rate: f64| {
            let run =
                DeviceTimeline::from_rows(&[probe_row(0, rate, 100.0), probe_row(1, rate, 100.0)])
                    .unwrap();
            SpeedCorrection::new(&profile(), run, 4, 2).with_response(response.clone())
        };
        let fast = correction(15.0);
        let sentence = fast.response_sentence().unwrap();
        assert!(
            sentence.contains("2–3 tokens ×0.75, 64+ tokens ×1.10")
                && sentence.contains("attn_decode ×1.30")
                && !sentence.contains("1 tokens"),
            "{sentence}"
        );
        let factor = |c: &SpeedCorrection, batch: &[RequestShape], op: Op| {
            c.correct(&ops_prediction(op, 10.0), batch, 1, 0).ops_ms[op.index()] / 10.0
        };
        // Two decode tokens in the fast state: the measured ratio, whatever the op's roofline
        // share; an op with its own ratio takes it.
        let two = [RequestShape::decode(100); 2];
        for op in [Op::MlpUpProj, Op::Add] {
            assert!((factor(&fast, &two, op) - 0.75).abs() < 1e-12);
        }
        assert!((factor(&fast, &two, Op::AttnDecode) - 1.3).abs() < 1e-12);
        // Sizes between measured ones geometrically between them (16 tokens: 3/4 of the way
        // from 2–3 to 64+); an op measured on one side only, the forward's.
        let sixteen = [RequestShape::decode(100); 16];
        let between = (0.75f64.ln() + 0.75 * (1.1f64.ln() - 0.75f64.ln())).exp();
        for op in [Op::MlpUpProj, Op::AttnDecode] {
            assert!((factor(&fast, &sixteen, op) - between).abs() < 1e-12);
        }
        // A 256-token prefill slows down in the fast state.
        let prefill = [RequestShape::prefill(256, 0)];
        assert!((factor(&fast, &prefill, Op::MlpUpProj) - 1.1).abs() < 1e-12);
        // One token, below every measured size: no measured answer to the fast state, so the
        // profile's speed (the roofline would have sped it up by a third).
        let one = [RequestShape::decode(100)];
        assert_eq!(factor(&fast, &one, Op::MlpUpProj), 1.0);
        // Within ×/÷ 1.2 of the profile's reading: the profiled state, whatever the size.
        let near = correction(11.5);
        for batch in [&one[..], &two[..], &prefill[..]] {
            assert_eq!(factor(&near, batch, Op::MlpUpProj), 1.0);
        }
        // A slower state than any the profile measured: the roofline (of the screened
        // factors: a memory-only slowdown is capped).
        let slow = correction(7.0);
        let f = slow.factors_at(0);
        assert!(f.memory >= FAST_STATE);
        // Two tokens: 1 FLOP/byte against a balance of 10.
        let share = 10.0 / 11.0;
        let want = share * f.memory + (1.0 - share) * f.compute;
        assert!((factor(&slow, &two, Op::MlpUpProj) - want).abs() < 1e-12);
    }

    #[test]
    fn a_response_with_nothing_measured_still_keeps_the_profiled_state() {
        // A profile that never saw the fast state: its probes' reference still holds.
        let response = SpeedResponse {
            reference_gb_per_s: 10.0,
            fast_state_gb_per_s: None,
            buckets: Vec::new(),
        };
        let correction = |rate: f64, response: Option<&SpeedResponse>| {
            let run =
                DeviceTimeline::from_rows(&[probe_row(0, rate, 100.0), probe_row(1, rate, 100.0)])
                    .unwrap();
            let c = SpeedCorrection::new(&profile(), run, 4, 2);
            match response {
                Some(r) => c.with_response(r.clone()),
                None => c,
            }
        };
        let two = [RequestShape::decode(100); 2];
        let factor = |c: &SpeedCorrection| {
            c.correct(&ops_prediction(Op::MlpUpProj, 10.0), &two, 1, 0)
                .ops_ms[Op::MlpUpProj.index()]
                / 10.0
        };
        // 10 % faster probes: the profiled state with a response, the roofline without one.
        assert_eq!(factor(&correction(11.0, Some(&response))), 1.0);
        let share = 10.0 / 11.0;
        let roofline = share * (10.0 / 11.0) + (1.0 - share);
        assert!((factor(&correction(11.0, None)) - roofline).abs() < 1e-12);
        // A fast state it has no ratio for: still the profile's speed; without a response the
        // roofline. A slower state: the roofline either way.
        assert_eq!(factor(&correction(15.0, Some(&response))), 1.0);
        assert!(factor(&correction(15.0, None)) < 0.75);
        assert_eq!(
            factor(&correction(7.0, Some(&response))),
            factor(&correction(7.0, None))
        );
        assert!(factor(&correction(7.0, None)) > 1.15);
        let sentence = correction(11.0, Some(&response))
            .response_sentence()
            .unwrap();
        assert!(sentence.contains("saw too little"), "{sentence}");
        assert_eq!(correction(11.0, None).response_sentence(), None);
    }

    #[test]
    fn a_bundles_response_is_read_from_its_profiling_meta() {
        let dir = std::env::temp_dir().join(format!("simreal-response-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(read_response(&dir).unwrap(), None, "no profiling_meta.json");
        let meta = dir.join("profiling_meta.json");
        std::fs::write(&meta, r#"{"details": {}}"#).unwrap();
        assert_eq!(
            read_response(&dir).unwrap(),
            None,
            "profiled before version 5"
        );
        // The elasticities of early 2026-12-05 read as nothing measured.
        std::fs::write(
            &meta,
            r#"{"details": {"device_speed_response": {"reference_gb_per_s": 37.5,
               "buckets": [{"min_tokens": 1, "max_tokens": 1, "forwards": 30,
               "forwards_near_reference": 20, "forwards_off_reference": 9,
               "elasticity": 0.66}]}}}"#,
        )
        .unwrap();
        let r = read_response(&dir).unwrap().unwrap();
        assert!(!r.measured_any());
        assert_eq!(r.fast_time_ratio(1), None);
        let with_ops = |ops: &str| {
            format!(
                r#"{{"details": {{"device_speed_response": {{"reference_gb_per_s": 37.5,
                   "fast_state_gb_per_s": 55.0,
                   "buckets": [{{"min_tokens": 1, "max_tokens": 1, "forwards": 30,
                   "forwards_near_reference": 20, "forwards_fast": 9,
                   "fast_time_ratio": 0.76, "op_fast_time_ratio": {{{ops}}}}}]}}}}}}"#
            )
        };
        std::fs::write(&meta, with_ops(r#""lm_head": 0.71"#)).unwrap();
        let r = read_response(&dir).unwrap().unwrap();
        assert_eq!(r.fast_time_ratio(1), Some(0.76));
        assert_eq!(r.op_fast_time_ratio(Op::LmHead, 1), Some(0.71));
        for bad in [
            r#"{"details": {"device_speed_response": {"buckets": "none"}}}"#.to_owned(),
            with_ops(r#""lm_heads": 0.71"#),
        ] {
            std::fs::write(&meta, bad).unwrap();
            let err = read_response(&dir).unwrap_err().to_string();
            assert!(
                err.contains("profiling_meta.json") && err.contains("device_speed_response"),
                "{err}"
            );
        }
        assert!(read_response(&dir)
            .unwrap_err()
            .to_string()
            .contains("lm_heads"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The diagnosed failure: the after-probe's compute kernel reads half the rate while the
    /// memory probes and the host counters (steal 0 %, run-queue wait 0.5–2 %) stay flat.
    fn half_compute_at_the_end(after: DeviceSpeedRow) -> DeviceTimeline {
        DeviceTimeline::from_rows(&[
            probe_row(0, 10.0, 100.0),
            host_row(5_000_000_000, 0.0, 0.5),
            host_row(10_000_000_000, 0.0, 2.0),
            DeviceSpeedRow {
                time_ns: 10_000_000_000,
                sample_id: 10_000_000_001,
                ..after
            },
        ])
        .unwrap()
    }

    #[test]
    fn a_half_rate_compute_probe_that_nothing_else_corroborates_stays_near_one() {
        let bundle = DeviceTimeline::from_rows(&[
            probe_row(0, 10.0, 100.0),
            host_row(1, 0.0, 1.0),
            probe_row(2, 10.0, 100.0),
        ])
        .unwrap();
        // From an old file (no screening columns): capped.
        let old = DeviceSpeedRow {
            probe_repeats: None,
            memory_probe_kept_repeats: None,
            compute_probe_kept_repeats: None,
            memory_probe_max_skew: None,
            compute_probe_max_skew: None,
            ..probe_row(0, 10.0, 50.0)
        };
        let c = SpeedCorrection::new(&bundle, half_compute_at_the_end(old), 2, 2);
        for t_ns in [0, 5_000_000_000, 10_000_000_000, 20_000_000_000] {
            let f = c.factors_at(t_ns);
            // At most the cap, times the host's 2 % run-queue wait against the profile's 1 %.
            assert!(
                f.compute <= MAX_UNCORROBORATED_FACTOR * 1.02,
                "{t_ns}: {f:?}"
            );
            assert!((f.memory - 1.0).abs() < 0.02, "{t_ns}: {f:?}");
        }
        assert_eq!(c.screening().capped_compute, 1);
        assert_eq!(c.screening().unusable_compute, 0);
        let sentence = c.screening().sentence().unwrap();
        assert!(
            sentence.contains("1 compute reading capped at 20 %"),
            "{sentence}"
        );
        assert!(sentence.contains("the real run has 2 probes"), "{sentence}");

        // Recorded by a screening probe (2 of 5 repeats with both threads running): skipped,
        // so the compute factor is the first probe's, flat.
        let skewed = DeviceSpeedRow {
            compute_probe_kept_repeats: Some(2),
            compute_probe_max_skew: Some(2.0),
            ..probe_row(0, 10.0, 50.0)
        };
        let c = SpeedCorrection::new(&bundle, half_compute_at_the_end(skewed), 2, 2);
        for t_ns in [0, 5_000_000_000, 10_000_000_000] {
            assert!((c.factors_at(t_ns).compute - 1.0).abs() < 0.02);
        }
        assert_eq!(c.screening().unusable_compute, 1);
        assert_eq!(c.screening().capped_compute, 0);
        assert!(c
            .screening()
            .sentence()
            .unwrap()
            .contains("1 compute reading skipped"));
    }

    #[test]
    fn a_slowdown_both_probes_or_the_host_counters_see_is_applied_in_full() {
        // Both kinds half as fast at the end: each corroborates the other.
        let both = probe_row(0, 5.0, 50.0);
        let c = SpeedCorrection::new(&profile(), half_compute_at_the_end(both), 2, 2);
        let f = c.factors_at(10_000_000_000);
        // The host's run-queue wait (2 % against none in the profile) scales both a little.
        assert!((f.compute - 2.0 / 0.98).abs() < 1e-9, "{f:?}");
        assert!((f.memory - 2.0 / 0.98).abs() < 1e-9, "{f:?}");
        assert_eq!(c.screening().sentence(), None);

        // Only compute, but the timed threads waited 20 % of the time for a CPU at the end.
        let run = DeviceTimeline::from_rows(&[
            probe_row(0, 10.0, 100.0),
            host_row(10_000_000_000, 0.0, 20.0),
            probe_row(10_000_000_000, 10.0, 50.0),
        ])
        .unwrap();
        let c = SpeedCorrection::new(&profile(), run, 2, 2);
        let f = c.factors_at(10_000_000_000);
        assert!((f.compute - 2.0 / 0.8).abs() < 1e-9, "{f:?}");
        assert!((f.memory - 1.0 / 0.8).abs() < 1e-9, "{f:?}");
        assert_eq!(c.screening().capped_compute, 0);
    }

    #[test]
    fn unusable_probes_stay_out_of_the_reference_and_the_figures() {
        let disturbed = DeviceSpeedRow {
            memory_probe_kept_repeats: Some(1),
            ..probe_row(5, 1.0, 100.0)
        };
        let t = DeviceTimeline::from_rows(&[
            probe_row(0, 10.0, 100.0),
            disturbed,
            probe_row(9, 10.0, 100.0),
        ])
        .unwrap();
        assert_eq!(t.probes().len(), 3);
        assert_eq!(t.unusable_probes(ProbeKind::Memory), 1);
        assert_eq!(t.unusable_probes(ProbeKind::Compute), 0);
        assert_eq!(
            t.usable_rates(ProbeKind::Memory),
            vec![(0, 10.0), (9, 10.0)]
        );
        assert_eq!(t.median_levels().memory_gb_per_s, 10.0);
        assert_eq!(t.usable_rates(ProbeKind::Compute).len(), 3);
        // As a bundle: the reference ignores it and the correction says so.
        let run = DeviceTimeline::from_rows(&[probe_row(0, 10.0, 100.0)]).unwrap();
        let c = SpeedCorrection::new(&t, run, 2, 2);
        assert_eq!(c.factors_at(0).memory, 1.0);
        assert_eq!(c.screening().bundle_unusable_memory, 1);
        assert!(c
            .screening()
            .sentence()
            .unwrap()
            .contains("1 bundle memory reading left out"));
        // A bundle without a single usable compute reading gives no reference to scale from:
        // the run's compute readings are not used, however they read.
        let unusable = |t: i64| DeviceSpeedRow {
            compute_probe_kept_repeats: Some(0),
            ..probe_row(t, 10.0, 100.0)
        };
        let bundle = DeviceTimeline::from_rows(&[unusable(0), unusable(1)]).unwrap();
        let run = DeviceTimeline::from_rows(&[probe_row(0, 5.0, 50.0)]).unwrap();
        let c = SpeedCorrection::new(&bundle, run, 2, 2);
        assert_eq!(c.factors_at(0).compute, 1.0);
        // Nor does it corroborate the memory reading, which is capped.
        assert!((c.factors_at(0).memory - MAX_UNCORROBORATED_FACTOR).abs() < 1e-12);
        assert_eq!(c.screening().bundle_unusable_compute, 2);
        assert_eq!(c.screening().unusable_compute, 0);
    }

    #[test]
    fn interpolation_is_linear_inside_and_flat_outside() {
        let s = [(0, 1.0), (10, 3.0)];
        assert_eq!(interpolate(&s, -5), Some(1.0));
        assert_eq!(interpolate(&s, 5), Some(2.0));
        assert_eq!(interpolate(&s, 10), Some(3.0));
        assert_eq!(interpolate(&s, 50), Some(3.0));
        assert_eq!(interpolate(&[], 0), None);
    }
}
