//! Axes: ranges, ticks and tick labels, in "plot space" (log10 of the value on log axes).
//! Ticks are planned here rather than by plotters: "nice" steps on linear axes, decades (with
//! 2x and 5x when the range is narrow) on log axes.

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};

use super::*;

#[derive(Debug, Clone)]
pub(super) enum TickLabels {
    /// Fixed number of decimals.
    Decimals(usize),
    /// Plot-space value v is shown as 10^v.
    Powers,
    /// Category names at c + 0.5.
    Categories(Vec<String>),
}

#[derive(Debug, Clone)]
pub(super) struct AxisPlan {
    pub(super) scale: Scale,
    pub(super) lo: f64,
    pub(super) hi: f64,
    pub(super) ticks: Vec<f64>,
    pub(super) minor: Vec<f64>,
    pub(super) labels: TickLabels,
}

impl AxisPlan {
    /// Fits an axis to values (ignoring those the scale cannot show), with a 4 % margin on
    /// both sides if `pad`. No values, one value or all-equal values give a small range
    /// around them instead of an empty one (which plotters cannot draw).
    pub(super) fn fit(scale: Scale, values: impl Iterator<Item = f64>, pad: bool) -> Self {
        match scale {
            Scale::Linear => {
                let (lo, hi) = match min_max(values) {
                    None => (0.0, 1.0),
                    Some((lo, hi)) if lo == hi => {
                        let half = if lo == 0.0 { 1.0 } else { 0.1 * lo.abs() };
                        (lo - half, hi + half)
                    }
                    Some(range) => range,
                };
                let margin = if pad { 0.04 * (hi - lo) } else { 0.0 };
                Self::linear(lo - margin, hi + margin)
            }
            Scale::Log10 => {
                let logs = values.filter(|v| *v > 0.0).map(f64::log10);
                let (lo, hi) = match min_max(logs) {
                    None => (0.0, 1.0),
                    Some((lo, hi)) if lo == hi => (lo - 0.5, hi + 0.5),
                    Some(range) => range,
                };
                let margin = if pad { 0.04 * (hi - lo) } else { 0.0 };
                Self::log(lo - margin, hi + margin)
            }
        }
    }

    /// A linear axis over exactly [lo − pad, hi + pad] with ticks every `step` in [lo, hi].
    pub(super) fn fixed_linear(lo: f64, hi: f64, step: f64, pad: f64) -> Self {
        let count = ((hi - lo) / step).round() as usize;
        let ticks = (0..=count).map(|i| lo + i as f64 * step).collect();
        Self {
            scale: Scale::Linear,
            lo: lo - pad,
            hi: hi + pad,
            ticks,
            minor: Vec::new(),
            labels: TickLabels::Decimals(decimals_for(step)),
        }
    }

    pub(super) fn linear(lo: f64, hi: f64) -> Self {
        let step = nice_step((hi - lo) / 6.0);
        let first = (lo / step).ceil() as i64;
        let last = (hi / step).floor() as i64;
        let ticks = (first..=last)
            .map(|k| {
                let v = k as f64 * step;
                // Avoid "-0" labels and 0.30000000000000004-style drift.
                if v.abs() < step * 1e-9 {
                    0.0
                } else {
                    v
                }
            })
            .collect();
        Self {
            scale: Scale::Linear,
            lo,
            hi,
            ticks,
            minor: Vec::new(),
            labels: TickLabels::Decimals(decimals_for(step)),
        }
    }

    pub(super) fn log(lo: f64, hi: f64) -> Self {
        let decades = (lo.ceil() as i64)..=(hi.floor() as i64);
        let mut ticks: Vec<f64> = decades.clone().map(|k| k as f64).collect();
        let mut minor = Vec::new();
        for k in (lo.floor() as i64)..=(hi.ceil() as i64) {
            for m in 2..=9 {
                let v = k as f64 + (m as f64).log10();
                if v > lo && v < hi {
                    minor.push(v);
                }
            }
        }
        if ticks.len() < 3 {
            // Less than two decades visible: label 2× and 5× as well.
            ticks.extend(minor.iter().copied().filter(|v| {
                let m = 10f64.powf(v - v.floor()).round();
                m == 2.0 || m == 5.0
            }));
            ticks.sort_by(f64::total_cmp);
        }
        Self {
            scale: Scale::Log10,
            lo,
            hi,
            ticks,
            minor,
            labels: TickLabels::Powers,
        }
    }

    pub(super) fn categories(names: &[&str]) -> Self {
        Self {
            scale: Scale::Linear,
            lo: 0.0,
            hi: names.len() as f64,
            ticks: (0..names.len()).map(|c| c as f64 + 0.5).collect(),
            minor: Vec::new(),
            labels: TickLabels::Categories(names.iter().map(|s| s.to_string()).collect()),
        }
    }

    pub(super) fn with_top_pad(mut self, fraction: f64) -> Self {
        self.hi += fraction * (self.hi - self.lo);
        self
    }

    /// A data value in plot space, or `None` if the scale cannot show it.
    pub(super) fn to_plot(&self, v: f64) -> Option<f64> {
        match self.scale {
            Scale::Linear => Some(v),
            Scale::Log10 => (v > 0.0).then(|| v.log10()),
        }
    }

    pub(super) fn label(&self, v: f64) -> String {
        match &self.labels {
            TickLabels::Decimals(d) => format_decimal(v, *d),
            TickLabels::Powers => format_significant(10f64.powf(v)),
            TickLabels::Categories(names) => {
                let i = (v - 0.5).round();
                if i >= 0.0 && (i as usize) < names.len() {
                    names[i as usize].clone()
                } else {
                    String::new()
                }
            }
        }
    }

    pub(super) fn coord(&self) -> PlotCoord {
        PlotCoord {
            lo: self.lo,
            hi: self.hi,
            ticks: self.ticks.clone(),
            minor: self.minor.clone(),
        }
    }
}

/// A linear plotters coordinate over plot space whose grid lines are exactly our ticks
/// (bold) and minor ticks (light); tick labels come from the mesh formatter.
pub(super) struct PlotCoord {
    pub(super) lo: f64,
    pub(super) hi: f64,
    pub(super) ticks: Vec<f64>,
    pub(super) minor: Vec<f64>,
}

impl Ranged for PlotCoord {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        // Clamped far outside the area so that wild values cannot overflow i32; drawing
        // clips to the area anyway.
        let fraction = ((value - self.lo) / (self.hi - self.lo)).clamp(-4.0, 5.0);
        limit.0 + (fraction * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// The smallest of 1, 2, 2.5, 5 × 10^k that is ≥ `raw`.
pub(super) fn nice_step(raw: f64) -> f64 {
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let mantissa = raw / magnitude;
    let nice = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .find(|m| mantissa <= m * (1.0 + 1e-9))
        .unwrap_or(10.0);
    nice * magnitude
}

/// Decimals needed to print multiples of `step` exactly (2.5 × 10^k needs one more).
pub(super) fn decimals_for(step: f64) -> usize {
    let mut decimals = (-step.log10().floor()).max(0.0) as usize;
    let scaled = step * 10f64.powi(decimals as i32);
    if (scaled - scaled.round()).abs() > 1e-9 {
        decimals += 1;
    }
    decimals.min(12)
}

pub(super) fn format_decimal(v: f64, decimals: usize) -> String {
    if v != 0.0 && (v.abs() >= 1e6 || v.abs() < 1e-4) {
        return format_significant(v);
    }
    let s = format!("{v:.decimals$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

/// Up to 3 significant digits, without trailing zeros; scientific outside 1e-4..1e6.
pub(super) fn format_significant(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    if v.abs() >= 1e6 || v.abs() < 1e-4 {
        let s = format!("{v:.2e}");
        // "2.50e6" → "2.5e6", "1.00e-5" → "1e-5"
        return match s.split_once('e') {
            Some((m, e)) => {
                let m = m.trim_end_matches('0').trim_end_matches('.');
                format!("{m}e{e}")
            }
            None => s,
        };
    }
    let digits = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}
