//! How fast the device was when a bundle was profiled vs when a real run ran, from one fixed
//! iteration both processes time (the real engine's warm-up iteration). `compare` reports it
//! in its error attribution and `replay` next to its errors; on a shared or throttled machine
//! it bounds how right any bundle can be.

use std::path::Path;

use serde::Serialize;

/// The device's speed when the bundle was profiled vs when the real run ran, from the same
/// fixed iteration timed in both processes (the real engine's warm-up iteration: a 32-token
/// prefill plus one decode). A shared or throttled machine changes speed between the two,
/// and the predictor can only be as right as that.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceSpeed {
    /// Median time of the reference iteration in the profiling process, ms.
    pub profile_reference_ms: f64,
    /// Median time of the reference iteration before the real run served, ms.
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
            let mut w: Vec<f64> = warm.iter().copied().filter(|x| x.is_finite()).collect();
            w.sort_by(f64::total_cmp);
            let n = w.len();
            match n {
                0 => None,
                _ if n % 2 == 1 => Some(w[n / 2]),
                _ => Some((w[n / 2 - 1] + w[n / 2]) / 2.0),
            }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
