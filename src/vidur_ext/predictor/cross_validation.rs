//! How well the interpolants predict profiled points they did not see.
//!
//! Method: leave-one-out over interior grid points. For a 1-D op each interior point is
//! predicted from the interpolant through all other points (the chord between its
//! neighbours); for decode/prefill attention the same runs along `kv_cache_size` within each
//! outer key (batch size, resp. chunk). End points are skipped: held out, they would be
//! extrapolated, which measures the extrapolation rule rather than the data. Repeated grid
//! points are averaged first, so the held-out truth is the mean median at that key.
//!
//! Errors are `100 · (predicted − actual) / actual`; an actual of 0 (possible for CPU terms)
//! counts 0 % if predicted 0, else 100 % — Vidur's own MAPE convention.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::curves::BundleCurves;
use super::interp::{Grid2d, Series1d};
use crate::io::bundle::{
    to_sorted_json, write_atomic, Bundle, BundleModelSpec, CpuOverheadTerm, Op, OpStatistic,
};
use crate::quantile::percentile_of_valid;
use crate::Result;

/// Summary of percentage errors.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ErrorStats {
    pub count: usize,
    /// Mean absolute percentage error.
    pub mean_abs_pct: f64,
    pub median_abs_pct: f64,
    pub p90_abs_pct: f64,
    pub max_abs_pct: f64,
    /// Mean signed error (bias): positive means over-prediction.
    pub mean_signed_pct: f64,
}

impl ErrorStats {
    /// Statistics of `(actual, predicted)` pairs; `None` when there are none. Percentiles
    /// interpolate linearly between order statistics (numpy's default).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (f64, f64)>) -> Option<ErrorStats> {
        let signed: Vec<f64> = pairs.into_iter().map(|(a, p)| pct_error(a, p)).collect();
        if signed.is_empty() {
            return None;
        }
        let mut abs: Vec<f64> = signed.iter().map(|e| e.abs()).collect();
        abs.sort_by(f64::total_cmp);
        let n = signed.len() as f64;
        Some(ErrorStats {
            count: signed.len(),
            mean_abs_pct: abs.iter().sum::<f64>() / n,
            median_abs_pct: percentile_of_valid(&abs, 50.0),
            p90_abs_pct: percentile_of_valid(&abs, 90.0),
            max_abs_pct: abs[abs.len() - 1],
            mean_signed_pct: signed.iter().sum::<f64>() / n,
        })
    }
}

/// Signed percentage error with Vidur's convention for a zero actual.
pub(crate) fn pct_error(actual: f64, predicted: f64) -> f64 {
    if actual == 0.0 {
        if predicted == 0.0 {
            0.0
        } else {
            100.0
        }
    } else {
        100.0 * (predicted - actual) / actual
    }
}

/// Cross-validation of one op.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpReport {
    /// The grid's key columns.
    pub key: String,
    /// The file the points come from.
    pub source: String,
    /// Distinct grid points.
    pub num_points: usize,
    /// Points held out (interior ones).
    pub num_held_out: usize,
    /// `None` when no point is interior.
    pub errors: Option<ErrorStats>,
}

/// Cross-validation of every op in a bundle; written as `predictor_report.{json,md}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PredictorReport {
    pub method: String,
    pub bundle_root: String,
    pub device: String,
    pub model_name: String,
    pub spec: BundleModelSpec,
    /// By op name; CPU terms as `cpu_overhead.<term>`.
    pub ops: BTreeMap<String, OpReport>,
}

const METHOD: &str = "leave-one-out over interior grid points of the piecewise-linear \
                      interpolant; attention along kv_cache_size within each batch size / chunk";

/// Cross-validates the interpolants of every op the bundle has.
pub fn cross_validate(bundle: &Bundle) -> Result<PredictorReport> {
    // The medians: what the profile's accuracy has always been judged on (Vidur's statistic).
    let curves = BundleCurves::fit(bundle, OpStatistic::Median)?;
    let loc = &bundle.location;
    let show = |p: PathBuf| p.display().to_string();
    let mut ops = BTreeMap::new();
    for op in Op::ALL {
        let Some(series) = curves.series(op) else {
            continue;
        };
        let (key, source) = match op {
            Op::AttnKvCacheSave => (
                "num_tokens = max(prefill_chunk_size, batch_size)",
                show(loc.attention_csv()),
            ),
            Op::AllReduce => (
                "num_tokens = size / n_embd / 2",
                loc.all_reduce_csv().map(show).unwrap_or_default(),
            ),
            Op::SendRecv => (
                "num_tokens = size / n_embd / 2",
                loc.send_recv_csv().map(show).unwrap_or_default(),
            ),
            Op::LmHead | Op::Sampler => ("num_tokens (logits rows)", show(loc.mlp_csv())),
            _ => ("num_tokens", show(loc.mlp_csv())),
        };
        ops.insert(op.name().to_owned(), series_report(series, key, source));
    }
    ops.insert(
        Op::AttnDecode.name().to_owned(),
        grid_report(
            curves.decode(),
            "batch_size × kv_cache_size",
            show(loc.attention_csv()),
        ),
    );
    ops.insert(
        Op::AttnPrefill.name().to_owned(),
        grid_report(
            curves.prefill(),
            "prefill_chunk_size² × kv_cache_size",
            show(loc.attention_csv()),
        ),
    );
    for term in CpuOverheadTerm::ALL {
        if let Some(series) = curves.cpu_series(term) {
            let source = loc.cpu_overheads_csv().map(show).unwrap_or_default();
            ops.insert(
                format!("cpu_overhead.{term}"),
                series_report(series, "batch_size", source),
            );
        }
    }
    Ok(PredictorReport {
        method: METHOD.to_owned(),
        bundle_root: show(loc.root.clone()),
        device: loc.device.clone(),
        model_name: loc.model_name.clone(),
        spec: bundle.spec,
        ops,
    })
}

fn loo_pairs(series: &Series1d) -> impl Iterator<Item = (f64, f64)> + '_ {
    (0..series.xs().len()).filter_map(|j| series.leave_one_out(j).map(|p| (series.ys()[j], p)))
}

fn series_report(series: &Series1d, key: &str, source: String) -> OpReport {
    let pairs: Vec<(f64, f64)> = loo_pairs(series).collect();
    OpReport {
        key: key.to_owned(),
        source,
        num_points: series.xs().len(),
        num_held_out: pairs.len(),
        errors: ErrorStats::from_pairs(pairs),
    }
}

fn grid_report(grid: &Grid2d, key: &str, source: String) -> OpReport {
    let pairs: Vec<(f64, f64)> = grid.groups().iter().flat_map(loo_pairs).collect();
    OpReport {
        key: key.to_owned(),
        source,
        num_points: grid.groups().iter().map(|g| g.xs().len()).sum(),
        num_held_out: pairs.len(),
        errors: ErrorStats::from_pairs(pairs),
    }
}

impl PredictorReport {
    /// JSON with sorted keys, 2-space indent and a trailing newline.
    pub fn to_json(&self) -> Result<String> {
        to_sorted_json(Path::new("predictor_report.json"), self)
    }

    /// A Markdown table of the per-op errors.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Predictor cross-validation\n");
        let _ = writeln!(
            md,
            "- bundle: `{}` ({} / {})",
            self.bundle_root, self.device, self.model_name
        );
        let _ = writeln!(md, "- model: {}", self.spec);
        let _ = writeln!(md, "- method: {}\n", self.method);
        let _ = writeln!(
            md,
            "| op | key | points | held out | MAPE % | median % | p90 % | max % | bias % |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for (op, r) in &self.ops {
            let cells = match &r.errors {
                Some(e) => format!(
                    "{:.2} | {:.2} | {:.2} | {:.2} | {:+.2}",
                    e.mean_abs_pct,
                    e.median_abs_pct,
                    e.p90_abs_pct,
                    e.max_abs_pct,
                    e.mean_signed_pct
                ),
                None => "– | – | – | – | –".to_owned(),
            };
            let _ = writeln!(
                md,
                "| {op} | {} | {} | {} | {cells} |",
                r.key, r.num_points, r.num_held_out
            );
        }
        md
    }

    /// Writes `predictor_report.json` and `predictor_report.md` into `dir` atomically.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        let json = dir.join("predictor_report.json");
        let md = dir.join("predictor_report.md");
        write_atomic(&json, self.to_json()?.as_bytes())?;
        write_atomic(&md, self.to_markdown().as_bytes())?;
        Ok((json, md))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stats_by_hand() {
        // errors: +10 %, −20 %, 0 %, and a zero actual predicted non-zero → 100 %.
        let e =
            ErrorStats::from_pairs([(10.0, 11.0), (10.0, 8.0), (5.0, 5.0), (0.0, 1.0)]).unwrap();
        assert_eq!(e.count, 4);
        assert!((e.mean_abs_pct - 32.5).abs() < 1e-12);
        assert!((e.median_abs_pct - 15.0).abs() < 1e-12);
        assert!((e.max_abs_pct - 100.0).abs() < 1e-12);
        assert!((e.mean_signed_pct - 22.5).abs() < 1e-12);
        assert!(ErrorStats::from_pairs(std::iter::empty()).is_none());
    }
}
