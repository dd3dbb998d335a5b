//! Figures for real-vs-simulated comparisons, written as PNG and SVG.
//!
//! Each figure function takes plain data, an output path *stem* (`figures/cdf_ttft`
//! becomes `figures/cdf_ttft.png` and `figures/cdf_ttft.svg`) and labels, and returns
//! the written paths plus notes about anything the figure could not show (for example
//! non-positive values on a log axis), which a report should repeat under the figure.
//!
//! Conventions, so that figures look alike and read well:
//!
//! * both files are written atomically (temporary file in the same directory, then
//!   rename), at the size in [`FigureSize`] (1200×800 px by default);
//! * every figure has a title and axis labels, which must not be empty — put the unit in
//!   the label, e.g. `"TTFT (ms)"`; a legend appears whenever two or more named series
//!   are drawn;
//! * series colours follow their order (Okabe–Ito palette, readable with colour-vision
//!   deficiencies), so pass the real run first and the simulated one second everywhere;
//! * ticks are computed here rather than by plotters: "nice" steps on linear axes,
//!   decades (with 2× and 5× when the range is narrow) on log axes;
//! * degenerate data never panics: empty series are skipped (a figure with no data at all
//!   says so), a single value or all-equal values get a small symmetric range.
//!
//! The figure API and its checks are here; [`axes`] plans ranges and ticks, [`render`] holds
//! the chart model and draws it.
//!
//! Text in PNGs is drawn with DejaVu Sans, embedded in the binary (see
//! `assets/fonts/README.md`), so rendering never depends on system fonts.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::IoContext;
use crate::io::{write_atomic, write_atomic_with};
use crate::{bail, ensure, Error, Result};

mod axes;
mod render;

use axes::*;
use render::*;

// ---------------------------------------------------------------------------------------
// Public specification types
// ---------------------------------------------------------------------------------------

/// Size of the rendered figure in pixels (PNG) and user units (SVG).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FigureSize {
    /// Width in pixels.
    pub width_px: u32,
    /// Height in pixels.
    pub height_px: u32,
}

impl Default for FigureSize {
    fn default() -> Self {
        Self {
            width_px: 1200,
            height_px: 800,
        }
    }
}

/// How values map to positions along an axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    /// Evenly spaced values.
    #[default]
    Linear,
    /// Evenly spaced decades, for heavy-tailed latencies. Values ≤ 0 cannot be shown and
    /// are left out with a note.
    Log10,
}

/// One axis: its label (with the unit) and its scale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Axis {
    /// Axis label including the unit, e.g. `"E2E latency (ms)"`.
    pub label: String,
    /// Linear or logarithmic.
    pub scale: Scale,
}

impl Axis {
    /// A linear axis.
    pub fn linear(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            scale: Scale::Linear,
        }
    }

    /// A base-10 logarithmic axis.
    pub fn log10(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            scale: Scale::Log10,
        }
    }
}

/// Title, axes and size of a single-panel figure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FigureSpec {
    /// Figure title.
    pub title: String,
    /// Horizontal axis.
    pub x: Axis,
    /// Vertical axis.
    pub y: Axis,
    /// Output size.
    pub size: FigureSize,
}

impl FigureSpec {
    /// A figure with linear axes at the default size.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        Self {
            title: title.into(),
            x: Axis::linear(x_label),
            y: Axis::linear(y_label),
            size: FigureSize::default(),
        }
    }

    /// Switches the x axis to a log scale.
    pub fn log_x(mut self) -> Self {
        self.x.scale = Scale::Log10;
        self
    }

    /// Switches the y axis to a log scale.
    pub fn log_y(mut self) -> Self {
        self.y.scale = Scale::Log10;
        self
    }

    /// Sets the output size.
    pub fn with_size(mut self, width_px: u32, height_px: u32) -> Self {
        self.size = FigureSize {
            width_px,
            height_px,
        };
        self
    }
}

/// A named sample (e.g. the TTFTs of one run).
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// Legend entry.
    pub name: &'a str,
    /// The values, in any order.
    pub values: &'a [f64],
}

/// A named sequence of (x, y) points, drawn in the given order.
#[derive(Debug, Clone, Copy)]
pub struct XySeries<'a> {
    /// Legend entry.
    pub name: &'a str,
    /// The points.
    pub points: &'a [(f64, f64)],
}

/// One panel of a [`timeline`]: a quantity over time, one series per run.
#[derive(Debug, Clone)]
pub struct Panel<'a> {
    /// Vertical axis of this panel.
    pub y: Axis,
    /// The series, e.g. real and simulated batch sizes.
    pub series: Vec<XySeries<'a>>,
    /// Draw piecewise-constant steps (the value holds until the next point), which is
    /// what per-iteration quantities such as batch size are; otherwise straight segments.
    pub steps: bool,
}

/// Title, shared time axis and size of a [`timeline`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineSpec {
    /// Figure title.
    pub title: String,
    /// The shared horizontal axis (usually time since the run started).
    pub x: Axis,
    /// Output size.
    pub size: FigureSize,
}

/// The files a figure function wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FigureFiles {
    /// The PNG file.
    pub png: PathBuf,
    /// The SVG file.
    pub svg: PathBuf,
    /// What the figure leaves out or approximates, one sentence each; empty normally.
    pub notes: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Figure kinds
// ---------------------------------------------------------------------------------------

/// Empirical CDFs of several samples on one axis (`spec.x` is the value axis; `spec.y`
/// labels the cumulative fraction and must be linear). Each CDF is a right-continuous
/// step function from 0 to 1. On a log x axis, values ≤ 0 are counted in the CDF but
/// cannot be placed, so their curve starts at the fraction they make up.
pub fn cdf_overlay(stem: &Path, spec: &FigureSpec, samples: &[Series<'_>]) -> Result<FigureFiles> {
    check_spec("cdf_overlay", spec)?;
    ensure!(
        spec.y.scale == Scale::Linear,
        InvalidInput: "cdf_overlay: the cumulative-fraction axis must be linear"
    );
    let mut notes = Vec::new();
    let curves = ecdf_curves("cdf_overlay", spec.x.scale, samples, &mut notes)?;
    let x_values = curves
        .iter()
        .flat_map(|(_, e, _)| e.iter().map(|(v, _)| *v));
    let x = AxisPlan::fit(spec.x.scale, x_values, true);
    let layers = cdf_layers(&x, spec.size, curves, 0);
    let y = AxisPlan::fixed_linear(0.0, 1.0, 0.2, 0.02);
    let chart = Chart::new(spec, x, y, layers, LegendAt::LowerRight);
    render(stem, spec.size, &spec.title, &[chart], notes)
}

/// A curve of [`cdf_overlay`]: name, ECDF points, and how many leading points the axis
/// cannot show.
type EcdfCurve<'a> = (&'a str, Vec<(f64, f64)>, usize);

/// The ECDF of every non-empty sample, with a note for each empty one and each whose
/// values ≤ 0 a log axis cannot place.
fn ecdf_curves<'a>(
    what: &str,
    scale: Scale,
    samples: &[Series<'a>],
    notes: &mut Vec<String>,
) -> Result<Vec<EcdfCurve<'a>>> {
    let mut curves = Vec::new();
    for s in samples {
        check_finite(what, s.name, s.values)?;
        if s.values.is_empty() {
            notes.push(format!("Series \"{}\" is empty and not drawn.", s.name));
            continue;
        }
        let ecdf = crate::analysis::stats::ecdf(s.values)?;
        let hidden = ecdf.iter().take_while(|(v, _)| !shown(scale, *v)).count();
        if hidden > 0 {
            let below = s.values.iter().filter(|v| !shown(scale, **v)).count();
            notes.push(format!(
                "{below} value(s) ≤ 0 of \"{}\" cannot be placed on the log axis; its curve starts at their fraction.",
                s.name
            ));
        }
        curves.push((s.name, ecdf, hidden));
    }
    Ok(curves)
}

/// ECDFs (name, points, how many leading points the axis cannot show) as step lines,
/// coloured from palette index `first_color` on.
fn cdf_layers(
    x: &AxisPlan,
    size: FigureSize,
    curves: Vec<EcdfCurve<'_>>,
    first_color: usize,
) -> Vec<Layer> {
    curves
        .into_iter()
        .enumerate()
        .map(|(i, (name, ecdf, hidden))| {
            let start_fraction = if hidden > 0 { ecdf[hidden - 1].1 } else { 0.0 };
            let points = step_path(x, size, start_fraction, &ecdf[hidden..]);
            Layer::line(Some(name.to_string()), first_color + i, points)
        })
        .collect()
}

/// The step path of a right-continuous function from `x.lo` to `x.hi`, given its value
/// `start` left of the first jump and `(value, level after)` at each jump. Jumps closer
/// together than half a pixel are merged into the last of them, which keeps large samples
/// (10⁵ token latencies) from bloating the SVG without a visible change; jumps the axis
/// cannot show are skipped.
fn step_path(x: &AxisPlan, size: FigureSize, start: f64, jumps: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut points = Vec::with_capacity(2 * jumps.len() + 2);
    points.push((x.lo, start));
    let buckets = 2.0 * f64::from(size.width_px);
    let bucket = |px: f64| ((px - x.lo) / (x.hi - x.lo) * buckets).floor() as i64;
    let mut steps = jumps
        .iter()
        .filter_map(|&(v, level)| Some((x.to_plot(v)?, level)))
        .peekable();
    let mut previous = start;
    while let Some((px, level)) = steps.next() {
        if steps
            .peek()
            .is_some_and(|&(next, _)| bucket(next) == bucket(px))
        {
            continue;
        }
        points.push((px, previous));
        points.push((px, level));
        previous = level;
    }
    points.push((x.hi, previous));
    points
}

/// Empirical CDFs over the envelope of a group of samples: the area between the lowest and
/// the highest of the group's CDFs at every value is shaded (e.g. the real engine's
/// repeated runs: a curve inside it is as close as a rerun), and `curves` are drawn on top
/// as in [`cdf_overlay`], in the same colours; the envelope is a light shade of the first.
pub fn cdf_envelope(
    stem: &Path,
    spec: &FigureSpec,
    envelope_name: &str,
    envelope: &[&[f64]],
    curves: &[Series<'_>],
) -> Result<FigureFiles> {
    check_spec("cdf_envelope", spec)?;
    ensure!(
        spec.y.scale == Scale::Linear,
        InvalidInput: "cdf_envelope: the cumulative-fraction axis must be linear"
    );
    ensure!(
        envelope.len() >= 2 && envelope.iter().all(|e| !e.is_empty()),
        InvalidInput: "cdf_envelope: the envelope needs two or more non-empty samples, got {}",
        envelope.len()
    );
    for (i, e) in envelope.iter().enumerate() {
        check_finite("cdf_envelope", &format!("{envelope_name} #{i}"), e)?;
    }
    let mut notes = Vec::new();
    let drawn = ecdf_curves("cdf_envelope", spec.x.scale, curves, &mut notes)?;
    let sorted: Vec<Vec<f64>> = envelope
        .iter()
        .map(|e| {
            let mut v = e.to_vec();
            v.sort_by(f64::total_cmp);
            v
        })
        .collect();
    let mut at: Vec<f64> = sorted.iter().flatten().copied().collect();
    at.sort_by(f64::total_cmp);
    at.dedup();
    // (value, lowest CDF, highest CDF) at every distinct value of the group.
    let bounds: Vec<(f64, f64, f64)> = at
        .iter()
        .map(|&v| {
            let fractions = sorted
                .iter()
                .map(|s| s.partition_point(|&w| w <= v) as f64 / s.len() as f64);
            let (lo, hi) = fractions.fold((1.0f64, 0.0f64), |(lo, hi), f| (lo.min(f), hi.max(f)));
            (v, lo, hi)
        })
        .collect();
    let hidden = bounds
        .iter()
        .take_while(|b| !shown(spec.x.scale, b.0))
        .count();
    if hidden > 0 {
        notes.push(format!(
            "Values ≤ 0 of \"{envelope_name}\" cannot be placed on the log axis; the band starts at their fraction."
        ));
    }
    let x_values = at
        .iter()
        .copied()
        .chain(drawn.iter().flat_map(|(_, e, _)| e.iter().map(|(v, _)| *v)));
    let x = AxisPlan::fit(spec.x.scale, x_values, true);
    let (start_lo, start_hi) = bounds[..hidden].last().map_or((0.0, 0.0), |b| (b.1, b.2));
    let visible = &bounds[hidden..];
    let upper: Vec<(f64, f64)> = visible.iter().map(|b| (b.0, b.2)).collect();
    let lower: Vec<(f64, f64)> = visible.iter().map(|b| (b.0, b.1)).collect();
    let mut polygon = step_path(&x, spec.size, start_hi, &upper);
    polygon.extend(step_path(&x, spec.size, start_lo, &lower).into_iter().rev());
    let mut layers = vec![Layer::area(
        Some(envelope_name.to_string()),
        0,
        vec![polygon],
    )];
    layers.extend(cdf_layers(&x, spec.size, drawn, 0));
    let y = AxisPlan::fixed_linear(0.0, 1.0, 0.2, 0.02);
    let chart = Chart::new(spec, x, y, layers, LegendAt::LowerRight);
    render(stem, spec.size, &spec.title, &[chart], notes)
}

/// One category of [`error_bars`]: a value with its interval, against a band and a target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorBar {
    /// The point, e.g. the simulator's error in %.
    pub value: f64,
    /// Its confidence interval, drawn as a whisker.
    pub interval: Option<[f64; 2]>,
    /// A reference band, shaded behind the point (e.g. the real runs' spread around 0).
    pub band: Option<[f64; 2]>,
    /// ± this target, drawn as two short dark ticks.
    pub target: Option<f64>,
}

/// Per category a shaded band (`band_name`), ± target ticks, and a point with its interval
/// (`value_name`); the zero line is drawn. The y axis must be linear; `spec.x` only labels
/// the categories.
pub fn error_bars(
    stem: &Path,
    spec: &FigureSpec,
    categories: &[&str],
    bars: &[ErrorBar],
    band_name: &str,
    value_name: &str,
) -> Result<FigureFiles> {
    check_spec("error_bars", spec)?;
    ensure!(
        spec.y.scale == Scale::Linear,
        InvalidInput: "error_bars: the value axis must be linear"
    );
    ensure!(
        !categories.is_empty() && categories.len() == bars.len() && categories.len() <= 100,
        InvalidInput: "error_bars: {} categories and {} bars given; 1..=100 of each, as many",
        categories.len(),
        bars.len()
    );
    let mut values = vec![0.0];
    for b in bars {
        values.push(b.value);
        values.extend(b.interval.iter().flatten());
        values.extend(b.band.iter().flatten());
        values.extend(b.target.iter().flat_map(|t| [*t, -*t]));
    }
    check_finite("error_bars", value_name, &values)?;
    let y = AxisPlan::fit(Scale::Linear, values.into_iter(), true);
    let x = AxisPlan::categories(categories);
    let mut bands = Vec::new();
    let mut targets = Vec::new();
    let mut whiskers = Vec::new();
    let mut points = Vec::new();
    for (c, b) in bars.iter().enumerate() {
        let mid = c as f64 + 0.5;
        if let Some([lo, hi]) = b.band {
            bands.push(vec![
                (mid - 0.3, lo),
                (mid + 0.3, lo),
                (mid + 0.3, hi),
                (mid - 0.3, hi),
            ]);
        }
        if let Some(t) = b.target {
            for level in [t, -t] {
                targets.push([(mid - 0.4, level), (mid + 0.4, level)]);
            }
        }
        if let Some([lo, hi]) = b.interval {
            whiskers.push([(mid, lo), (mid, hi)]);
            for level in [lo, hi] {
                whiskers.push([(mid - 0.08, level), (mid + 0.08, level)]);
            }
        }
        points.push((mid, b.value));
    }
    let mut layers = Vec::new();
    if !bands.is_empty() {
        layers.push(Layer::area(Some(band_name.to_string()), 0, bands));
    }
    if !targets.is_empty() {
        layers.push(Layer::segments(
            Some("target (±)".to_string()),
            None,
            targets,
        ));
    }
    layers.push(Layer::reference(None, vec![(x.lo, 0.0), (x.hi, 0.0)]));
    layers.push(Layer::segments(None, Some(1), whiskers));
    layers.push(Layer {
        shape: Shape::Markers(points),
        ..Layer::points(Some(value_name.to_string()), 1, Vec::new())
    });
    let chart = Chart {
        x_grid: false,
        ..Chart::new(spec, x, y, layers, LegendAt::UpperRight)
    };
    render(stem, spec.size, &spec.title, &[chart], Vec::new())
}

/// Paired scatter of simulated against real values (x = real, y = sim), one point per
/// pair, with the y = x line of perfect agreement. Both axes share one range so that
/// the diagonal is at 45°; `spec.x` and `spec.y` must have the same scale.
pub fn paired_scatter(
    stem: &Path,
    spec: &FigureSpec,
    name: &str,
    real: &[f64],
    sim: &[f64],
) -> Result<FigureFiles> {
    check_spec("paired_scatter", spec)?;
    ensure!(
        spec.x.scale == spec.y.scale,
        InvalidInput: "paired_scatter: x and y must use the same scale for the y = x line to mean anything"
    );
    ensure!(
        real.len() == sim.len(),
        InvalidInput: "paired_scatter: {} real values but {} simulated values",
        real.len(),
        sim.len()
    );
    check_finite("paired_scatter", "real", real)?;
    check_finite("paired_scatter", "sim", sim)?;
    let scale = spec.x.scale;
    let mut notes = Vec::new();
    let pairs: Vec<(f64, f64)> = real
        .iter()
        .zip(sim)
        .map(|(&r, &s)| (r, s))
        .filter(|&(r, s)| shown(scale, r) && shown(scale, s))
        .collect();
    if pairs.len() < real.len() {
        notes.push(format!(
            "{} pair(s) with a value ≤ 0 cannot be placed on the log axes and are not drawn.",
            real.len() - pairs.len()
        ));
    }
    let axis = AxisPlan::fit(scale, pairs.iter().flat_map(|&(r, s)| [r, s]), true);
    // Points landing on the same pixel are drawn once (large samples would otherwise
    // make SVGs of many megabytes).
    let mut occupied = std::collections::HashSet::new();
    let pixel =
        |v: f64, extent: u32| ((v - axis.lo) / (axis.hi - axis.lo) * f64::from(extent)) as i64;
    let points: Vec<(f64, f64)> = pairs
        .iter()
        .filter_map(|&(r, s)| Some((axis.to_plot(r)?, axis.to_plot(s)?)))
        .filter(|&(px, py)| {
            occupied.insert((
                pixel(px, spec.size.width_px),
                pixel(py, spec.size.height_px),
            ))
        })
        .collect();
    let diagonal = vec![(axis.lo, axis.lo), (axis.hi, axis.hi)];
    let layers = vec![
        Layer::points(Some(format!("{name} (n = {})", pairs.len())), 0, points),
        Layer::reference(Some("y = x (perfect agreement)".to_string()), diagonal),
    ];
    let chart = Chart::new(spec, axis.clone(), axis, layers, LegendAt::UpperLeft);
    render(stem, spec.size, &spec.title, &[chart], notes)
}

/// Histogram of per-request percentage errors with a vertical line at 0; the bars'
/// legend entry reads "requests (n = …)".
///
/// The bins are equal-width over `range` (default: the data's range, widened to include
/// 0); values outside an explicit range are counted in the edge bins, with a note. Both
/// axes must be linear (errors can be negative).
pub fn error_histogram(
    stem: &Path,
    spec: &FigureSpec,
    errors_pct: &[f64],
    bins: usize,
    range: Option<(f64, f64)>,
) -> Result<FigureFiles> {
    check_spec("error_histogram", spec)?;
    ensure!(
        spec.x.scale == Scale::Linear && spec.y.scale == Scale::Linear,
        InvalidInput: "error_histogram: both axes must be linear"
    );
    ensure!(
        (1..=10_000).contains(&bins),
        InvalidInput: "error_histogram: bins = {bins} must be in 1..=10000"
    );
    check_finite("error_histogram", "errors", errors_pct)?;
    let mut notes = Vec::new();
    let (lo, hi) = match range {
        Some((lo, hi)) => {
            ensure!(
                lo.is_finite() && hi.is_finite() && lo < hi,
                InvalidInput: "error_histogram: range ({lo}, {hi}) must be finite and increasing"
            );
            let outside = errors_pct.iter().filter(|v| **v < lo || **v > hi).count();
            if outside > 0 {
                notes.push(format!(
                    "{outside} value(s) outside [{lo}, {hi}] % are counted in the edge bins."
                ));
            }
            (lo, hi)
        }
        None => {
            let (lo, hi) = min_max(errors_pct.iter().copied()).unwrap_or((0.0, 0.0));
            let (lo, hi) = (lo.min(0.0), hi.max(0.0));
            if lo == hi {
                (lo - 1.0, hi + 1.0)
            } else {
                (lo, hi)
            }
        }
    };
    if errors_pct.is_empty() {
        notes.push("No errors to show.".to_string());
    }
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for &e in errors_pct {
        let bin = ((e - lo) / width).floor().clamp(0.0, (bins - 1) as f64) as usize;
        counts[bin] += 1;
    }
    let max_count = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let x = AxisPlan::fit(Scale::Linear, [lo, hi].into_iter(), true);
    // Headroom above the tallest bar keeps the legend clear of the data.
    let y = AxisPlan::fit(Scale::Linear, [0.0, max_count].into_iter(), false).with_top_pad(0.2);
    let rects = counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(i, &c)| {
            let x0 = lo + i as f64 * width;
            (x0, 0.0, x0 + width, c as f64)
        })
        .collect();
    let mut layers = vec![Layer::bars(
        Some(format!("requests (n = {})", errors_pct.len())),
        0,
        rects,
    )];
    if (lo..=hi).contains(&0.0) {
        layers.push(Layer::reference(
            Some("0 % (no error)".to_string()),
            vec![(0.0, y.lo), (0.0, y.hi)],
        ));
    } else {
        notes.push(format!("0 % lies outside the shown range [{lo}, {hi}] %."));
    }
    let chart = Chart::new(spec, x, y, layers, LegendAt::UpperRight);
    render(stem, spec.size, &spec.title, &[chart], notes)
}

/// Several panels stacked vertically over one shared x axis (e.g. batch size, queue
/// depth and KV blocks used over time, real and simulated in each panel).
pub fn timeline(stem: &Path, spec: &TimelineSpec, panels: &[Panel<'_>]) -> Result<FigureFiles> {
    ensure!(
        !spec.title.trim().is_empty(),
        InvalidInput: "timeline: the title is empty"
    );
    ensure!(
        !spec.x.label.trim().is_empty(),
        InvalidInput: "timeline: the x-axis label is empty"
    );
    ensure!(
        (1..=8).contains(&panels.len()),
        InvalidInput: "timeline: {} panels given, 1..=8 supported",
        panels.len()
    );
    check_size("timeline", spec.size)?;
    let mut notes = Vec::new();
    for p in panels {
        ensure!(
            !p.y.label.trim().is_empty(),
            InvalidInput: "timeline: a panel has an empty y-axis label"
        );
        for s in &p.series {
            check_finite_points("timeline", s.name, s.points)?;
        }
    }
    let x = AxisPlan::fit(
        spec.x.scale,
        panels
            .iter()
            .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().map(|p| p.0))),
        true,
    );
    let mut charts = Vec::new();
    for (k, panel) in panels.iter().enumerate() {
        // Panels show counts (batch size, queue depth, blocks): a linear axis starts at 0
        // so that relative levels read correctly.
        let zero = (panel.y.scale == Scale::Linear).then_some(0.0);
        let y = AxisPlan::fit(
            panel.y.scale,
            panel
                .series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1))
                .chain(zero),
            true,
        );
        let mut layers = Vec::new();
        for (i, s) in panel.series.iter().enumerate() {
            let (points, dropped) = to_plot_points(&x, &y, s.points, panel.steps);
            // Runs have one point per engine iteration, 10⁴–10⁵ of them.
            let points = thin_to_columns(points, &x, spec.size.width_px);
            if dropped > 0 {
                notes.push(format!(
                    "Panel \"{}\": {dropped} point(s) of \"{}\" with a value ≤ 0 are not drawn on the log axis.",
                    panel.y.label, s.name
                ));
            }
            if points.is_empty() {
                notes.push(format!(
                    "Panel \"{}\": series \"{}\" has no points.",
                    panel.y.label, s.name
                ));
                continue;
            }
            layers.push(Layer::line(Some(s.name.to_string()), i, points));
        }
        let last = k + 1 == panels.len();
        charts.push(Chart {
            x: x.clone(),
            y,
            x_label: if last {
                spec.x.label.clone()
            } else {
                String::new()
            },
            y_label: panel.y.label.clone(),
            layers,
            legend: LegendAt::UpperRight,
            x_tick_labels: last,
            x_grid: true,
        });
    }
    render(stem, spec.size, &spec.title, &charts, notes)
}

/// Grouped bars: one group of bars per category, one bar per series within each group
/// (`groups[g].values[c]` is series g in category c). Values may be negative, e.g. signed
/// error-attribution components; the y range always includes 0. The y axis must be
/// linear; `spec.x` only labels the categories.
pub fn grouped_bars(
    stem: &Path,
    spec: &FigureSpec,
    categories: &[&str],
    groups: &[Series<'_>],
) -> Result<FigureFiles> {
    check_spec("grouped_bars", spec)?;
    ensure!(
        spec.y.scale == Scale::Linear,
        InvalidInput: "grouped_bars: the value axis must be linear (bars start at 0)"
    );
    ensure!(
        !categories.is_empty() && categories.len() <= 100,
        InvalidInput: "grouped_bars: {} categories given, 1..=100 supported",
        categories.len()
    );
    ensure!(
        !groups.is_empty(),
        InvalidInput: "grouped_bars: no series given"
    );
    for g in groups {
        ensure!(
            g.values.len() == categories.len(),
            InvalidInput: "grouped_bars: series \"{}\" has {} values for {} categories",
            g.name,
            g.values.len(),
            categories.len()
        );
        check_finite("grouped_bars", g.name, g.values)?;
    }
    let values = groups.iter().flat_map(|g| g.values.iter().copied());
    let y = AxisPlan::fit(Scale::Linear, values.chain([0.0]), true);
    let x = AxisPlan::categories(categories);
    // Each category occupies [c, c + 1); its bars share the middle 80 %.
    let bar_width = 0.8 / groups.len() as f64;
    let layers = groups
        .iter()
        .enumerate()
        .map(|(g, series)| {
            let rects = series
                .values
                .iter()
                .enumerate()
                .map(|(c, &v)| {
                    let x0 = c as f64 + 0.1 + g as f64 * bar_width;
                    (x0, v.min(0.0), x0 + bar_width, v.max(0.0))
                })
                .collect();
            Layer::bars(Some(series.name.to_string()), g, rects)
        })
        .chain([Layer::reference(None, vec![(x.lo, 0.0), (x.hi, 0.0)])])
        .collect();
    let chart = Chart {
        x_grid: false,
        ..Chart::new(spec, x, y, layers, LegendAt::UpperRight)
    };
    render(stem, spec.size, &spec.title, &[chart], Vec::new())
}

/// Lines with point markers for several series of (x, y) points, e.g. error against
/// offered load per predictor. Points are drawn in the given order.
pub fn line_chart(stem: &Path, spec: &FigureSpec, series: &[XySeries<'_>]) -> Result<FigureFiles> {
    check_spec("line_chart", spec)?;
    let mut notes = Vec::new();
    for s in series {
        check_finite_points("line_chart", s.name, s.points)?;
    }
    let x = AxisPlan::fit(
        spec.x.scale,
        series.iter().flat_map(|s| s.points.iter().map(|p| p.0)),
        true,
    );
    let y = AxisPlan::fit(
        spec.y.scale,
        series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
        true,
    );
    let mut layers = Vec::new();
    for (i, s) in series.iter().enumerate() {
        let (points, dropped) = to_plot_points(&x, &y, s.points, false);
        if dropped > 0 {
            notes.push(format!(
                "{dropped} point(s) of \"{}\" with a value ≤ 0 are not drawn on the log axis.",
                s.name
            ));
        }
        if points.is_empty() {
            notes.push(format!("Series \"{}\" has no drawable points.", s.name));
            continue;
        }
        layers.push(Layer::line(Some(s.name.to_string()), i, points.clone()));
        layers.push(Layer {
            shape: Shape::Markers(points),
            ..Layer::points(None, i, Vec::new())
        });
    }
    let chart = Chart::new(spec, x, y, layers, LegendAt::UpperLeft);
    render(stem, spec.size, &spec.title, &[chart], notes)
}

// ---------------------------------------------------------------------------------------
// Validation helpers
// ---------------------------------------------------------------------------------------

fn check_size(what: &str, size: FigureSize) -> Result<()> {
    ensure!(
        (300..=10_000).contains(&size.width_px) && (200..=10_000).contains(&size.height_px),
        InvalidInput: "{what}: figure size {}×{} px is outside 300×200 ..= 10000×10000",
        size.width_px,
        size.height_px
    );
    Ok(())
}

fn check_spec(what: &str, spec: &FigureSpec) -> Result<()> {
    ensure!(
        !spec.title.trim().is_empty(),
        InvalidInput: "{what}: the title is empty"
    );
    ensure!(
        !spec.x.label.trim().is_empty() && !spec.y.label.trim().is_empty(),
        InvalidInput: "{what}: axis labels (with units) are required"
    );
    check_size(what, spec.size)
}

fn check_finite(what: &str, series: &str, values: &[f64]) -> Result<()> {
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        bail!(InvalidInput: "{what}: series \"{series}\": value #{i} is {v}; values must be finite");
    }
    Ok(())
}

fn check_finite_points(what: &str, series: &str, points: &[(f64, f64)]) -> Result<()> {
    if let Some((i, p)) = points
        .iter()
        .enumerate()
        .find(|(_, p)| !(p.0.is_finite() && p.1.is_finite()))
    {
        bail!(InvalidInput: "{what}: series \"{series}\": point #{i} is {p:?}; values must be finite");
    }
    Ok(())
}

fn shown(scale: Scale, v: f64) -> bool {
    scale == Scale::Linear || v > 0.0
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Maps points to plot space, dropping those a log axis cannot show; with `steps`, inserts
/// the corner points of a piecewise-constant function.
fn to_plot_points(
    x: &AxisPlan,
    y: &AxisPlan,
    points: &[(f64, f64)],
    steps: bool,
) -> (Vec<(f64, f64)>, usize) {
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(points.len() * if steps { 2 } else { 1 });
    let mut dropped = 0;
    for &(px, py) in points {
        let (Some(mx), Some(my)) = (x.to_plot(px), y.to_plot(py)) else {
            dropped += 1;
            continue;
        };
        if steps {
            if let Some(&(_, last_y)) = out.last() {
                out.push((mx, last_y));
            }
        }
        out.push((mx, my));
    }
    (out, dropped)
}

/// Reduces a long polyline without changing how it looks at `columns` pixels wide: of
/// each run of consecutive points in the same pixel column, only the first, lowest,
/// highest and last are kept (the "M4" reduction of Jugel et al., VLDB 2014).
fn thin_to_columns(points: Vec<(f64, f64)>, x: &AxisPlan, columns: u32) -> Vec<(f64, f64)> {
    if points.len() <= 4 * columns as usize {
        return points;
    }
    let column = |px: f64| ((px - x.lo) / (x.hi - x.lo) * f64::from(columns)).floor() as i64;
    let mut out = Vec::with_capacity(4 * columns as usize);
    let mut start = 0;
    while start < points.len() {
        let c = column(points[start].0);
        let len = points[start..]
            .iter()
            .take_while(|p| column(p.0) == c)
            .count();
        let run = &points[start..start + len];
        let by_y = |a: &(usize, &(f64, f64)), b: &(usize, &(f64, f64))| a.1 .1.total_cmp(&b.1 .1);
        let lowest = run.iter().enumerate().min_by(by_y).map_or(0, |(i, _)| i);
        let highest = run.iter().enumerate().max_by(by_y).map_or(0, |(i, _)| i);
        let mut keep = [0, lowest, highest, len - 1];
        keep.sort_unstable();
        let mut previous = None;
        for k in keep {
            if previous != Some(k) {
                out.push(run[k]);
                previous = Some(k);
            }
        }
        start += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_and_decimals() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(2.2), 2.5);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(0.03), 0.05);
        assert_eq!(decimals_for(0.05), 2);
        assert_eq!(decimals_for(0.25), 2);
        assert_eq!(decimals_for(2.5), 1);
        assert_eq!(decimals_for(50.0), 0);
    }

    #[test]
    fn tick_labels() {
        assert_eq!(format_decimal(-0.0, 1), "0.0");
        assert_eq!(format_decimal(1.25, 2), "1.25");
        assert_eq!(format_decimal(2_500_000.0, 0), "2.5e6");
        assert_eq!(format_significant(1000.0), "1000");
        assert_eq!(format_significant(0.002), "0.002");
        assert_eq!(format_significant(20.0), "20");
        assert_eq!(format_significant(1e-5), "1e-5");
        assert_eq!(format_significant(1e7), "1e7");
    }

    #[test]
    fn linear_axis_ticks_cover_the_range() {
        let a = AxisPlan::fit(Scale::Linear, [0.0, 9.3].into_iter(), false);
        assert_eq!(a.ticks, vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(a.label(4.0), "4");
        // A single value gets a ±10 % range instead of an empty one.
        let one = AxisPlan::fit(Scale::Linear, [5.0].into_iter(), false);
        assert_eq!((one.lo, one.hi), (4.5, 5.5));
        let zero = AxisPlan::fit(Scale::Linear, [0.0, 0.0].into_iter(), false);
        assert_eq!((zero.lo, zero.hi), (-1.0, 1.0));
        let none = AxisPlan::fit(Scale::Linear, std::iter::empty(), true);
        assert!(none.lo < none.hi);
    }

    #[test]
    fn log_axis_ticks_are_decades_or_finer() {
        let wide = AxisPlan::fit(Scale::Log10, [1.0, 5000.0, -3.0, 0.0].into_iter(), false);
        assert_eq!(wide.ticks, vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(wide.label(3.0), "1000");
        let narrow = AxisPlan::fit(Scale::Log10, [15.0, 80.0].into_iter(), false);
        let labels: Vec<String> = narrow.ticks.iter().map(|&t| narrow.label(t)).collect();
        assert_eq!(labels, vec!["20", "50"]);
        assert_eq!(narrow.to_plot(-1.0), None);
    }

    #[test]
    fn category_labels() {
        let a = AxisPlan::categories(&["prefill", "decode"]);
        assert_eq!(a.label(0.5), "prefill");
        assert_eq!(a.label(1.5), "decode");
        assert_eq!(a.label(7.5), "");
    }

    #[test]
    fn thinning_keeps_extremes_per_column() {
        let x = AxisPlan::linear(0.0, 10.0);
        // 10 columns, 1000 points: each column keeps ≤ 4 points, including its extremes.
        let points: Vec<(f64, f64)> = (0..1000)
            .map(|i| (i as f64 / 100.0, ((i * 37) % 101) as f64))
            .collect();
        let thin = thin_to_columns(points.clone(), &x, 10);
        assert!(thin.len() <= 40, "{}", thin.len());
        for c in 0..10 {
            let column = |p: &&(f64, f64)| (p.0 as usize) == c;
            let max_all = points
                .iter()
                .filter(column)
                .map(|p| p.1)
                .fold(f64::MIN, f64::max);
            let max_thin = thin
                .iter()
                .filter(column)
                .map(|p| p.1)
                .fold(f64::MIN, f64::max);
            let min_all = points
                .iter()
                .filter(column)
                .map(|p| p.1)
                .fold(f64::MAX, f64::min);
            let min_thin = thin
                .iter()
                .filter(column)
                .map(|p| p.1)
                .fold(f64::MAX, f64::min);
            assert_eq!((max_all, min_all), (max_thin, min_thin), "column {c}");
        }
        assert_eq!(thin.first(), points.first());
        assert_eq!(thin.last(), points.last());
        // Short lines are untouched.
        assert_eq!(
            thin_to_columns(points[..30].to_vec(), &x, 10),
            points[..30].to_vec()
        );
    }

    #[test]
    fn step_points_hold_values() {
        let x = AxisPlan::fit(Scale::Linear, [0.0, 2.0].into_iter(), false);
        let (pts, dropped) = to_plot_points(&x, &x, &[(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)], true);
        assert_eq!(dropped, 0);
        assert_eq!(
            pts,
            vec![(0.0, 1.0), (1.0, 1.0), (1.0, 3.0), (2.0, 3.0), (2.0, 2.0)]
        );
    }
}
