//! Arrival-time generators.
//!
//! **The first request arrives at t = 0** for every generator, and request `i > 0` arrives
//! one gap after request `i - 1`. This is what DESIGN.md's `trace_intervals.csv` encodes
//! (`inter_arrival_ns` is 0 for request 0, `arrival_time_ns` is the running sum), and it
//! makes `n` requests span `n - 1` gaps. Vidur's synthetic generator instead puts the first
//! arrival one gap after 0; for a Poisson process that only prepends an idle period (the
//! process is memoryless), so rates and gap statistics are the same.
//!
//! Times are accumulated in `f64` nanoseconds and each arrival is rounded to an integer once,
//! so rounding errors do not add up over a long trace (request 1000 of a 3-qps
//! fixed-interval trace lands on 333 333 333 333 ns, not on 1000 rounded gaps).

use std::path::PathBuf;

use rand_distr::{Distribution, Exp, Gamma};
use serde::{Deserialize, Serialize};

use super::ensure_positive_finite;
use super::rng::{derive_rng, INTERVALS_STREAM};
use super::trace::{read_arrival_trace, rebase_arrivals_ns};
use crate::{Error, Result};

/// Key path under which the workload config embeds an [`IntervalsConfig`].
pub const INTERVALS_KEY: &str = "workload.intervals";
/// Key path of the workload's request rate, which the synthetic generators use.
pub const QPS_KEY: &str = "workload.qps";

/// How arrival times are generated. Internally tagged by `generator`, e.g.
/// `{generator: gamma, cv: 2.0}`. The rate of the synthetic generators is the workload's
/// `qps`, passed to [`generate_arrivals_ns`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "generator", rename_all = "snake_case", deny_unknown_fields)]
pub enum IntervalsConfig {
    /// Exponential gaps with mean `1/qps` (a Poisson process).
    Poisson {
        /// Caps every gap at this many mean gaps. Vidur caps at 3 (set `3.0` to reproduce
        /// it); the default, none, keeps the process exactly Poisson. A cap at `k` shortens
        /// the mean gap to `(1 - e^-k)/qps`, i.e. raises the realised rate by 5.2 % at
        /// `k = 3`, and removes the long idle gaps that let a server drain its queue.
        #[serde(default)]
        max_gap_mean_multiple: Option<f64>,
    },
    /// Gamma-distributed gaps with mean `1/qps` and coefficient of variation `cv`
    /// (shape `1/cv²`, scale `1/(qps·shape)`): `cv = 1` is Poisson, `cv > 1` is burstier.
    Gamma {
        /// Coefficient of variation of the gaps (standard deviation / mean), > 0.
        cv: f64,
    },
    /// Every request arrives at t = 0.
    Static {},
    /// A constant gap of `1/qps`.
    FixedInterval {},
    /// Arrival times from a CSV column `arrival_time_ns` (integer ns) or `arrived_at`
    /// (seconds); the first `n` rows, re-based so the first arrival is at 0 and multiplied
    /// by `time_scale_factor` (> 1 slows arrivals down). `qps` is not used.
    Trace {
        /// CSV with an `arrival_time_ns` or `arrived_at` column.
        trace_file: PathBuf,
        /// Multiplies the (re-based) arrival times; default 1.
        #[serde(default = "one")]
        time_scale_factor: f64,
    },
}

fn one() -> f64 {
    1.0
}

impl IntervalsConfig {
    /// Checks the parameters on their own (not `qps`, no files), reporting key paths under
    /// [`INTERVALS_KEY`].
    pub fn validate(&self) -> Result<()> {
        self.validate_at(INTERVALS_KEY)
    }

    /// As [`validate`](Self::validate), with key paths under `prefix`.
    pub fn validate_at(&self, prefix: &str) -> Result<()> {
        let key = |field: &str| format!("{prefix}.{field}");
        match self {
            IntervalsConfig::Poisson {
                max_gap_mean_multiple: Some(multiple),
            } => ensure_positive_finite(&key("max_gap_mean_multiple"), *multiple),
            IntervalsConfig::Gamma { cv } => ensure_positive_finite(&key("cv"), *cv),
            IntervalsConfig::Trace {
                trace_file,
                time_scale_factor,
            } => {
                if trace_file.as_os_str().is_empty() {
                    return Err(Error::config(key("trace_file"), "must not be empty"));
                }
                ensure_positive_finite(&key("time_scale_factor"), *time_scale_factor)
            }
            IntervalsConfig::Poisson {
                max_gap_mean_multiple: None,
            }
            | IntervalsConfig::Static {}
            | IntervalsConfig::FixedInterval {} => Ok(()),
        }
    }

    /// The generator's name as written in configs.
    pub fn name(&self) -> &'static str {
        match self {
            IntervalsConfig::Poisson { .. } => "poisson",
            IntervalsConfig::Gamma { .. } => "gamma",
            IntervalsConfig::Static {} => "static",
            IntervalsConfig::FixedInterval {} => "fixed_interval",
            IntervalsConfig::Trace { .. } => "trace",
        }
    }

    /// The trace file this generator reads, if any.
    pub fn trace_file(&self) -> Option<&std::path::Path> {
        match self {
            IntervalsConfig::Trace { trace_file, .. } => Some(trace_file),
            _ => None,
        }
    }

    /// Whether the generator draws its gaps at rate `qps`.
    pub fn uses_qps(&self) -> bool {
        matches!(
            self,
            IntervalsConfig::Poisson { .. }
                | IntervalsConfig::Gamma { .. }
                | IntervalsConfig::FixedInterval {}
        )
    }
}

/// Generates `n` arrival times in integer nanoseconds: non-decreasing, the first at 0.
///
/// `qps` (requests per second) must be finite and positive for the generators that use it
/// ([`IntervalsConfig::uses_qps`]). Draws come from the [`INTERVALS_STREAM`] of `seed`,
/// independent of the lengths.
pub fn generate_arrivals_ns(
    config: &IntervalsConfig,
    qps: f64,
    n: usize,
    seed: u64,
) -> Result<Vec<u64>> {
    config.validate()?;
    if config.uses_qps() {
        ensure_positive_finite(QPS_KEY, qps)?;
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let mean_gap_ns = 1e9 / qps;
    let mut rng = derive_rng(seed, INTERVALS_STREAM, 0);
    let gaps_ns: Box<dyn Iterator<Item = f64>> = match config {
        IntervalsConfig::Poisson {
            max_gap_mean_multiple,
        } => {
            let exp = Exp::new(1.0_f64).map_err(|e| Error::Msg(format!("exponential: {e}")))?;
            let cap = max_gap_mean_multiple.unwrap_or(f64::INFINITY);
            Box::new((1..n).map(move |_| exp.sample(&mut rng).min(cap) * mean_gap_ns))
        }
        IntervalsConfig::Gamma { cv } => {
            let shape = 1.0 / (cv * cv);
            // Unit mean; scaled by the mean gap below.
            let gamma = Gamma::new(shape, 1.0 / shape)
                .map_err(|e| Error::config(format!("{INTERVALS_KEY}.cv"), format!("gamma: {e}")))?;
            Box::new((1..n).map(move |_| gamma.sample(&mut rng) * mean_gap_ns))
        }
        IntervalsConfig::Static {} => Box::new((1..n).map(|_| 0.0)),
        IntervalsConfig::FixedInterval {} => {
            // i × gap rather than a running sum: exact to the nanosecond at any length.
            return Ok((0..n)
                .map(|i| (i as f64 * mean_gap_ns).round() as u64)
                .collect());
        }
        IntervalsConfig::Trace {
            trace_file,
            time_scale_factor,
        } => {
            let raw_ns = read_arrival_trace(trace_file, Some(n))?;
            if raw_ns.len() < n {
                return Err(Error::OutOfRange(format!(
                    "{}: the interval trace has {} arrivals but {n} requests were asked for",
                    trace_file.display(),
                    raw_ns.len()
                )));
            }
            return Ok(rebase_arrivals_ns(&raw_ns, *time_scale_factor));
        }
    };
    let mut arrivals_ns = Vec::with_capacity(n);
    arrivals_ns.push(0);
    let mut now_ns = 0.0_f64;
    for gap_ns in gaps_ns {
        now_ns += gap_ns;
        if !now_ns.is_finite() || now_ns >= u64::MAX as f64 {
            return Err(Error::OutOfRange(format!(
                "arrival times overflow u64 nanoseconds after {} requests (qps = {qps})",
                arrivals_ns.len()
            )));
        }
        arrivals_ns.push(now_ns.round() as u64);
    }
    Ok(arrivals_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps_s(arrivals_ns: &[u64]) -> Vec<f64> {
        arrivals_ns
            .windows(2)
            .map(|w| (w[1] - w[0]) as f64 / 1e9)
            .collect()
    }

    fn mean_and_cv(values: &[f64]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var.sqrt() / mean)
    }

    fn poisson(max_gap_mean_multiple: Option<f64>) -> IntervalsConfig {
        IntervalsConfig::Poisson {
            max_gap_mean_multiple,
        }
    }

    #[test]
    fn poisson_mean_gap_and_cv() {
        let arrivals = generate_arrivals_ns(&poisson(None), 4.0, 20_001, 42).unwrap();
        assert_eq!(arrivals[0], 0);
        assert!(arrivals.windows(2).all(|w| w[0] <= w[1]));
        let (mean, cv) = mean_and_cv(&gaps_s(&arrivals));
        // Mean gap 0.25 s; over 20 000 gaps its standard error is 0.7 %.
        assert!((mean / 0.25 - 1.0).abs() < 0.03, "mean gap {mean}");
        assert!((cv - 1.0).abs() < 0.03, "cv {cv}");
    }

    #[test]
    fn vidur_truncation_is_opt_in_and_biases_the_rate() {
        let arrivals = generate_arrivals_ns(&poisson(Some(3.0)), 4.0, 20_001, 42).unwrap();
        let gaps = gaps_s(&arrivals);
        assert!(gaps.iter().all(|&g| g <= 0.75 + 1e-9));
        let (mean, _) = mean_and_cv(&gaps);
        // E[min(X, 3/qps)] = (1 - e^-3)/qps = 0.2376 s.
        let expected = (1.0 - (-3.0f64).exp()) / 4.0;
        assert!((mean / expected - 1.0).abs() < 0.02, "mean gap {mean}");
    }

    #[test]
    fn gamma_cv_matches() {
        for cv in [0.5, 2.0] {
            let arrivals =
                generate_arrivals_ns(&IntervalsConfig::Gamma { cv }, 2.0, 20_001, 5).unwrap();
            let (mean, measured_cv) = mean_and_cv(&gaps_s(&arrivals));
            assert!((mean / 0.5 - 1.0).abs() < 0.04, "cv {cv}: mean gap {mean}");
            assert!(
                (measured_cv / cv - 1.0).abs() < 0.05,
                "cv {cv}: measured {measured_cv}"
            );
        }
    }

    #[test]
    fn static_and_fixed_interval_are_exact() {
        let arrivals = generate_arrivals_ns(&IntervalsConfig::Static {}, 0.0, 4, 1).unwrap();
        assert_eq!(arrivals, vec![0, 0, 0, 0]);
        let arrivals =
            generate_arrivals_ns(&IntervalsConfig::FixedInterval {}, 3.0, 1001, 1).unwrap();
        assert_eq!(
            &arrivals[..4],
            &[0, 333_333_333, 666_666_667, 1_000_000_000]
        );
        assert_eq!(arrivals[1000], 333_333_333_333);
        assert!(generate_arrivals_ns(&IntervalsConfig::Static {}, 1.0, 0, 1)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn determinism_per_seed() {
        let config = IntervalsConfig::Gamma { cv: 2.0 };
        let a = generate_arrivals_ns(&config, 1.0, 100, 7).unwrap();
        assert_eq!(a, generate_arrivals_ns(&config, 1.0, 100, 7).unwrap());
        assert_ne!(a, generate_arrivals_ns(&config, 1.0, 100, 8).unwrap());
    }

    #[test]
    fn validation_names_the_key() {
        let key = |err: Error| match err {
            Error::Config { key, .. } => key,
            other => panic!("expected a config error, got {other}"),
        };
        assert_eq!(
            key(generate_arrivals_ns(&poisson(None), 0.0, 3, 1).unwrap_err()),
            "workload.qps"
        );
        assert_eq!(
            key(generate_arrivals_ns(&poisson(None), f64::INFINITY, 3, 1).unwrap_err()),
            "workload.qps"
        );
        assert_eq!(
            key(IntervalsConfig::Gamma { cv: 0.0 }.validate().unwrap_err()),
            "workload.intervals.cv"
        );
        assert_eq!(
            key(poisson(Some(-3.0)).validate().unwrap_err()),
            "workload.intervals.max_gap_mean_multiple"
        );
        let trace = IntervalsConfig::Trace {
            trace_file: "a.csv".into(),
            time_scale_factor: f64::NAN,
        };
        assert_eq!(
            key(trace.validate().unwrap_err()),
            "workload.intervals.time_scale_factor"
        );
    }

    #[test]
    fn config_yaml_forms() {
        let parse = |yaml: &str| serde_saphyr::from_str::<IntervalsConfig>(yaml);
        assert_eq!(
            parse("generator: static\n").unwrap(),
            IntervalsConfig::Static {}
        );
        assert_eq!(
            parse("generator: fixed_interval\n").unwrap(),
            IntervalsConfig::FixedInterval {}
        );
        assert_eq!(parse("generator: poisson\n").unwrap(), poisson(None));
        assert!(parse("generator: static\ncv: 1.0\n").is_err());
        assert!(parse("generator: gamma\n").is_err());
        assert!(parse("generator: weibull\n").is_err());
        let gamma = IntervalsConfig::Gamma { cv: 2.0 };
        assert_eq!(
            parse(&serde_saphyr::to_string(&gamma).unwrap()).unwrap(),
            gamma
        );
    }

    #[test]
    fn trace_intervals_rebase_and_scale() {
        let dir = std::env::temp_dir().join(format!("simreal-intervals-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("arrivals.csv");
        std::fs::write(&path, "arrived_at\n10.0\n10.5\n12.0\n13.0\n").unwrap();
        let config = IntervalsConfig::Trace {
            trace_file: path.clone(),
            time_scale_factor: 2.0,
        };
        let arrivals = generate_arrivals_ns(&config, f64::NAN, 3, 0);
        let too_many = generate_arrivals_ns(&config, 1.0, 5, 0);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(arrivals.unwrap(), vec![0, 1_000_000_000, 4_000_000_000]);
        assert!(matches!(too_many.unwrap_err(), Error::OutOfRange(_)));
    }
}
