//! How fast the device was when a bundle was profiled vs when a real run ran, from one fixed
//! iteration both processes time (the real engine's warm-up iteration). `compare` reports it
//! in its error attribution and `replay` next to its errors; on a shared or throttled machine
//! it bounds how right any bundle can be.

use std::path::Path;

use serde::Serialize;

use crate::config::SimrealConfig;
use crate::io::bundle::Op;
use crate::io::read_csv;
use crate::io::records::DeviceSpeedRow;
use crate::io::schema::DEVICE_SPEED;
use crate::quantile;
use crate::vidur_ext::predictor::{
    BatchPrediction, ExecutionTimePredictor, IterationContext, RequestShape,
};
use crate::vidur_ext::simulator::clock::ClockKind;
use crate::Result;

/// The device's speed when the bundle was profiled vs when the real run ran, from the same
/// fixed iteration timed in both processes (the real engine's warm-up iteration: a 32-token
/// prefill plus one decode). A shared or throttled machine changes speed between the two,
/// and the predictor can only be as right as that.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DeviceSpeed {
    /// Median time of the reference iteration in the profiling process, ms.
    #[schemars(range(min = 0.0))]
    pub profile_reference_ms: f64,
    /// Median time of the reference iteration before the real run served, ms.
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
    /// run's `run_meta.json` (`extra.warmup_iteration_ms`). `None` when either is missing:
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
        DeviceSpeed::of(
            &floats(&profiling["details"]["reference_iteration_ms"])?,
            &floats(&real_meta["extra"]["warmup_iteration_ms"])?,
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

/// A stage's device-speed timeline, read back from its `device_speed.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceTimeline {
    /// `(time_ns, levels)` of every probe, in time order.
    probes: Vec<(i64, ProbeLevels)>,
    /// `(time_ns, load)` of every sample with host counters: each describes the interval
    /// since the previous sample.
    host: Vec<(i64, HostLoad)>,
}

impl DeviceTimeline {
    /// From the rows of a `device_speed.csv`; `None` without a single probe.
    pub fn from_rows(rows: &[DeviceSpeedRow]) -> Option<DeviceTimeline> {
        let mut rows: Vec<&DeviceSpeedRow> = rows.iter().collect();
        rows.sort_by_key(|r| (r.time_ns, r.sample_id));
        let probes: Vec<(i64, ProbeLevels)> = rows
            .iter()
            .filter_map(|r| {
                Some((
                    r.time_ns,
                    ProbeLevels {
                        memory_probe_ns: r.memory_probe_ns? as f64,
                        compute_probe_ns: r.compute_probe_ns? as f64,
                        memory_gb_per_s: r.memory_gb_per_s?,
                        compute_gflop_per_s: r.compute_gflop_per_s?,
                    },
                ))
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
        (!probes.is_empty()).then_some(DeviceTimeline { probes, host })
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

    /// `(time_ns, levels)` of every probe, in time order.
    pub fn probes(&self) -> &[(i64, ProbeLevels)] {
        &self.probes
    }

    /// `(time_ns, load)` of every host sample, in time order (each covers the interval since
    /// the previous one).
    pub fn host_samples(&self) -> &[(i64, HostLoad)] {
        &self.host
    }

    /// Median probe levels over the whole timeline.
    pub fn median_levels(&self) -> ProbeLevels {
        let med =
            |f: fn(&ProbeLevels) -> f64| median(self.probes.iter().map(|(_, l)| f(l)).collect());
        ProbeLevels {
            memory_probe_ns: med(|l| l.memory_probe_ns),
            compute_probe_ns: med(|l| l.compute_probe_ns),
            memory_gb_per_s: med(|l| l.memory_gb_per_s),
            compute_gflop_per_s: med(|l| l.compute_gflop_per_s),
        }
    }

    /// How far apart two device states are: the larger |ln ratio| of the median memory and
    /// compute probe rates (0 = the same speed; 0.1 ≈ 10 % apart). Paired profiling predicts a
    /// run with the bundle nearest to it by this measure.
    pub fn distance(&self, other: &DeviceTimeline) -> f64 {
        let (a, b) = (self.median_levels(), other.median_levels());
        let ln_ratio = |x: f64, y: f64| {
            (x.max(f64::MIN_POSITIVE) / y.max(f64::MIN_POSITIVE))
                .ln()
                .abs()
        };
        ln_ratio(a.memory_gb_per_s, b.memory_gb_per_s)
            .max(ln_ratio(a.compute_gflop_per_s, b.compute_gflop_per_s))
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

    /// Probe levels at `t_ns`: linear between the probes around it, the nearest probe's
    /// outside them.
    pub fn levels_at(&self, t_ns: i64) -> ProbeLevels {
        let i = self.probes.partition_point(|(t, _)| *t <= t_ns);
        match (i.checked_sub(1).map(|j| self.probes[j]), self.probes.get(i)) {
            (Some((t0, a)), Some(&(t1, b))) if t1 > t0 => {
                let w = (t_ns - t0) as f64 / (t1 - t0) as f64;
                let lerp = |x: f64, y: f64| x + w * (y - x);
                ProbeLevels {
                    memory_probe_ns: lerp(a.memory_probe_ns, b.memory_probe_ns),
                    compute_probe_ns: lerp(a.compute_probe_ns, b.compute_probe_ns),
                    memory_gb_per_s: lerp(a.memory_gb_per_s, b.memory_gb_per_s),
                    compute_gflop_per_s: lerp(a.compute_gflop_per_s, b.compute_gflop_per_s),
                }
            }
            (Some((_, a)), _) => a,
            (None, Some(&(_, b))) => b,
            (None, None) => unreachable!("a timeline has at least one probe"),
        }
    }

    /// Host load over the sample interval that contains `t_ns` (zero outside the samples).
    pub fn host_load_at(&self, t_ns: i64) -> HostLoad {
        let i = self.host.partition_point(|(t, _)| *t < t_ns);
        self.host.get(i).map(|(_, h)| *h).unwrap_or_default()
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

/// Scales predictions made from a bundle to the device state of a real run, using only the
/// two stages' device-speed timelines: calibration probes (memory-bound and compute-bound)
/// and host CPU shares (steal, other processes). It never sees the run's own iteration or
/// token timings, so it cannot fit the run it corrects.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeedCorrection {
    /// The bundle's device state: its median probes and host load.
    reference: ProbeLevels,
    reference_host: HostLoad,
    run: DeviceTimeline,
    /// FLOP per byte at which the device's memory and compute time are equal.
    balance_flop_per_byte: f64,
    /// Bytes per weight and KV element.
    element_bytes: f64,
    /// Query heads per KV head (how often attention reuses each cached element).
    kv_group: f64,
}

/// One correction factor per kind of work at one instant: predicted × factor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SpeedFactors {
    /// Memory-bound work (the memory probe's ratio, with host load).
    pub memory: f64,
    /// Compute-bound work (the compute probe's ratio, with host load).
    pub compute: f64,
}

impl SpeedCorrection {
    /// The correction of the predictions of the bundle at `bundle_dir` to the device speed
    /// over time of the real run at `real_run`, for `cfg`'s model and dtype, when both
    /// recorded a device-speed timeline (`device_speed.csv`); `None` otherwise.
    pub fn between(
        cfg: &SimrealConfig,
        bundle_dir: &Path,
        real_run: &Path,
    ) -> Result<Option<SpeedCorrection>> {
        let (Some(bundle), Some(run)) = (
            DeviceTimeline::read(bundle_dir)?,
            DeviceTimeline::read(real_run)?,
        ) else {
            return Ok(None);
        };
        let m = &cfg.model;
        Ok(Some(SpeedCorrection::new(
            &bundle,
            run,
            cfg.dtype().size_bytes(),
            m.num_attention_heads / m.num_key_value_heads.max(1),
        )))
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
        SpeedCorrection {
            reference,
            reference_host: bundle.median_host_load(),
            run,
            // Both kernels use every thread, so their rates' ratio is the device's balance.
            balance_flop_per_byte: reference.compute_gflop_per_s
                / reference.memory_gb_per_s.max(f64::MIN_POSITIVE),
            element_bytes: element_bytes.max(1) as f64,
            kv_group: f64::from(kv_group.max(1)),
        }
    }

    /// The factors at `t_ns` of the run's clock.
    pub fn factors_at(&self, t_ns: i64) -> SpeedFactors {
        let now = self.run.levels_at(t_ns);
        let host = self.reference_host.available_fraction()
            / self.run.host_load_at(t_ns).available_fraction();
        // Rates, not times: they compare across probe versions (kernel sizes).
        SpeedFactors {
            memory: self.reference.memory_gb_per_s / now.memory_gb_per_s.max(f64::MIN_POSITIVE)
                * host,
            compute: self.reference.compute_gflop_per_s
                / now.compute_gflop_per_s.max(f64::MIN_POSITIVE)
                * host,
        }
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
    /// each op by its memory/compute mix, CPU overheads as compute.
    pub fn correct(
        &self,
        p: &BatchPrediction,
        batch: &[RequestShape],
        logits_rows: u32,
        t_ns: i64,
    ) -> BatchPrediction {
        let f = self.factors_at(t_ns);
        let mut ops_ms = p.ops_ms;
        for op in Op::ALL {
            let share = memory_share(
                self.intensity(op, batch, logits_rows),
                self.balance_flop_per_byte,
            );
            ops_ms[op.index()] *= share * f.memory + (1.0 - share) * f.compute;
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
    use crate::io::records::SpeedPhase;

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
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn probe_row(time_ns: i64, memory_gb_per_s: f64, compute_gflop_per_s: f64) -> DeviceSpeedRow {
        DeviceSpeedRow {
            sample_id: time_ns as u64,
            time_ns,
            phase: SpeedPhase::Idle,
            memory_probe_ns: Some(1),
            compute_probe_ns: Some(1),
            memory_gb_per_s: Some(memory_gb_per_s),
            compute_gflop_per_s: Some(compute_gflop_per_s),
            steal_pct: None,
            competing_cpu_pct: None,
            run_queue_wait_pct: None,
            load_average_1min: None,
        }
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
        // The run's memory is half as fast, its compute as fast as the profile's.
        let run = DeviceTimeline::from_rows(&[probe_row(0, 5.0, 100.0)]).unwrap();
        assert!((run.distance(&profile()) - 2f64.ln()).abs() < 1e-12);
        assert_eq!(profile().distance(&profile()), 0.0);
        let c = SpeedCorrection::new(&profile(), run, 4, 2);
        assert_eq!(c.balance_flop_per_byte(), 10.0);
        let decode = [RequestShape::decode(1000); 4];
        let p = c.correct(&ops_prediction(Op::AttnDecode, 10.0), &decode, 4, 0);
        // Decode attention: 1 FLOP/byte, memory share 10/11.
        let expected = 10.0 * (10.0 / 11.0 * 2.0 + 1.0 / 11.0);
        assert!((p.ops_ms[Op::AttnDecode.index()] - expected).abs() < 1e-9);
        // A 2048-token prefill's projections: 1024 FLOP/byte, almost all compute.
        let prefill = [RequestShape::prefill(2048, 0)];
        let p = c.correct(&ops_prediction(Op::MlpUpProj, 10.0), &prefill, 1, 0);
        let f = p.ops_ms[Op::MlpUpProj.index()] / 10.0;
        assert!(f > 1.0 && f < 1.01, "{f}");
        assert!((p.model_ns as f64 / 1e6 / 10.0 - f).abs() < 1e-6);
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
}
