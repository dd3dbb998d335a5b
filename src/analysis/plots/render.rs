//! The chart model (layers of lines, points, bars, areas and segments over two planned
//! axes) and its rendering to PNG and SVG with plotters, written atomically.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use super::*;

/// Okabe & Ito (2008) colour-blind-safe palette, yellow last (weak on white).
pub(super) const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];
pub(super) const REFERENCE_COLOR: RGBColor = RGBColor(60, 60, 60);
/// Opacity of shaded areas: light enough for lines drawn over them to stay legible.
pub(super) const AREA_OPACITY: f64 = 0.25;

pub(super) fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

#[derive(Debug, Clone, Copy)]
pub(super) enum LegendAt {
    UpperLeft,
    UpperRight,
    LowerRight,
}

#[derive(Debug, Clone)]
pub(super) enum Shape {
    Line(Vec<(f64, f64)>),
    /// Translucent dots, for scatter plots where points overlap.
    Points(Vec<(f64, f64)>),
    /// Solid markers on the vertices of a line.
    Markers(Vec<(f64, f64)>),
    /// (x0, y0, x1, y1) rectangles.
    Bars(Vec<(f64, f64, f64, f64)>),
    /// Translucent filled polygons (bands, envelopes).
    Area(Vec<Vec<(f64, f64)>>),
    /// Separate straight segments (whiskers, target ticks).
    Segments(Vec<[(f64, f64); 2]>),
}

#[derive(Debug, Clone)]
pub(super) struct Layer {
    pub(super) name: Option<String>,
    pub(super) color: RGBColor,
    pub(super) reference: bool,
    pub(super) shape: Shape,
}

impl Layer {
    pub(super) fn line(name: Option<String>, i: usize, points: Vec<(f64, f64)>) -> Self {
        Self {
            name,
            color: color(i),
            reference: false,
            shape: Shape::Line(points),
        }
    }

    pub(super) fn points(name: Option<String>, i: usize, points: Vec<(f64, f64)>) -> Self {
        Self {
            name,
            color: color(i),
            reference: false,
            shape: Shape::Points(points),
        }
    }

    pub(super) fn bars(name: Option<String>, i: usize, rects: Vec<(f64, f64, f64, f64)>) -> Self {
        Self {
            name,
            color: color(i),
            reference: false,
            shape: Shape::Bars(rects),
        }
    }

    pub(super) fn area(name: Option<String>, i: usize, polygons: Vec<Vec<(f64, f64)>>) -> Self {
        Self {
            name,
            color: color(i),
            reference: false,
            shape: Shape::Area(polygons),
        }
    }

    /// Segments in palette colour `i`, or thin and dark like a reference line for `None`.
    pub(super) fn segments(
        name: Option<String>,
        i: Option<usize>,
        segments: Vec<[(f64, f64); 2]>,
    ) -> Self {
        Self {
            name,
            color: i.map_or(REFERENCE_COLOR, color),
            reference: i.is_none(),
            shape: Shape::Segments(segments),
        }
    }

    /// A thin dark line (y = x, zero line) drawn on top of the data.
    pub(super) fn reference(name: Option<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name,
            color: REFERENCE_COLOR,
            reference: true,
            shape: Shape::Line(points),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        match &self.shape {
            Shape::Line(p) | Shape::Points(p) | Shape::Markers(p) => p.is_empty(),
            Shape::Bars(r) => r.is_empty(),
            Shape::Area(p) => p.is_empty(),
            Shape::Segments(s) => s.is_empty(),
        }
    }
}

pub(super) struct Chart {
    pub(super) x: AxisPlan,
    pub(super) y: AxisPlan,
    pub(super) x_label: String,
    pub(super) y_label: String,
    pub(super) layers: Vec<Layer>,
    pub(super) legend: LegendAt,
    pub(super) x_tick_labels: bool,
    /// Vertical grid lines; off for categorical axes, where they would cut through bars.
    pub(super) x_grid: bool,
}

impl Chart {
    pub(super) fn new(
        spec: &FigureSpec,
        x: AxisPlan,
        y: AxisPlan,
        layers: Vec<Layer>,
        legend: LegendAt,
    ) -> Self {
        Self {
            x,
            y,
            x_label: spec.x.label.clone(),
            y_label: spec.y.label.clone(),
            layers,
            legend,
            x_tick_labels: true,
            x_grid: true,
        }
    }

    pub(super) fn has_data(&self) -> bool {
        self.layers.iter().any(|l| !l.reference && !l.is_empty())
    }
}

/// Pixel sizes scaled from a 1200×800 reference.
pub(super) struct Metrics {
    pub(super) title_px: f64,
    pub(super) label_px: f64,
    pub(super) tick_px: f64,
    pub(super) legend_px: f64,
    pub(super) line_px: u32,
    pub(super) marker_px: u32,
    pub(super) margin_px: u32,
    pub(super) right_margin_px: u32,
    pub(super) title_area_px: u32,
    pub(super) x_area_px: u32,
    pub(super) y_area_px: u32,
}

impl Metrics {
    pub(super) fn for_size(size: FigureSize, panels: usize) -> Self {
        let s = (size.width_px as f64 / 1200.0).min(size.height_px as f64 / 800.0);
        // Stacked panels get slightly smaller text so the plotting areas stay usable.
        let t = if panels > 2 { s * 0.85 } else { s };
        let px = |v: f64| (v * s).round().max(1.0) as u32;
        Self {
            title_px: 34.0 * s,
            label_px: 24.0 * t,
            tick_px: 19.0 * t,
            legend_px: 19.0 * t,
            line_px: px(2.5),
            marker_px: px(3.5),
            margin_px: px(18.0),
            right_margin_px: px(36.0),
            title_area_px: px(60.0),
            x_area_px: px(70.0),
            y_area_px: px(100.0),
        }
    }
}

pub(super) const FONT_FAMILY: &str = "sans-serif";

pub(super) fn centered() -> Pos {
    Pos::new(HPos::Center, VPos::Center)
}
pub(super) static DEJAVU_SANS: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// Registers the embedded font with plotters once per process.
pub(super) fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, DEJAVU_SANS)
                .map_err(|_| "the embedded DejaVu Sans font could not be parsed".to_string())
        })
        .clone()
        .map_err(Error::Msg)
}

pub(super) type Drawn = std::result::Result<(), String>;

pub(super) fn drawing_error<E: std::error::Error + Send + Sync>(
    e: plotters::drawing::DrawingAreaErrorKind<E>,
) -> String {
    e.to_string()
}

pub(super) fn draw_figure<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    size: FigureSize,
    title: &str,
    charts: &[Chart],
) -> Drawn {
    let m = Metrics::for_size(size, charts.len());
    root.fill(&WHITE).map_err(drawing_error)?;
    // The title is placed by hand: plotters' `titled` puts the glyphs' top at y = 0,
    // and ab_glyph rendering then clips the ascenders.
    let (title_area, body) = root.split_vertically(m.title_area_px);
    let (width, height) = title_area.dim_in_pixel();
    title_area
        .draw(&Text::new(
            title,
            (width as i32 / 2, height as i32 / 2 + 4),
            (FONT_FAMILY, m.title_px)
                .into_font()
                .color(&BLACK)
                .pos(centered()),
        ))
        .map_err(drawing_error)?;
    let areas = body.split_evenly((charts.len(), 1));
    for (area, chart) in areas.iter().zip(charts) {
        draw_chart(area, chart, &m)?;
    }
    root.present().map_err(drawing_error)
}

pub(super) fn draw_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &Chart,
    m: &Metrics,
) -> Drawn {
    let x_area = if chart.x_tick_labels {
        m.x_area_px
    } else {
        m.x_area_px / 4
    };
    let mut ctx = ChartBuilder::on(area)
        .margin(m.margin_px)
        .margin_top(m.margin_px / 2)
        .margin_right(m.right_margin_px)
        .x_label_area_size(x_area)
        .y_label_area_size(m.y_area_px)
        .build_cartesian_2d(chart.x.coord(), chart.y.coord())
        .map_err(drawing_error)?;

    let x_fmt = |v: &f64| {
        if chart.x_tick_labels {
            chart.x.label(*v)
        } else {
            String::new()
        }
    };
    let y_fmt = |v: &f64| chart.y.label(*v);
    let label_font = (FONT_FAMILY, m.label_px).into_font();
    let tick_font = (FONT_FAMILY, m.tick_px).into_font();
    let mut mesh = ctx.configure_mesh();
    mesh.x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .axis_desc_style(label_font)
        .label_style(tick_font)
        .bold_line_style(RGBColor(215, 215, 215))
        .light_line_style(RGBColor(238, 238, 238))
        .axis_style(RGBColor(90, 90, 90));
    if !chart.x_label.is_empty() {
        mesh.x_desc(chart.x_label.as_str());
    }
    if !chart.x_grid {
        mesh.disable_x_mesh();
    }
    mesh.y_desc(chart.y_label.as_str());
    mesh.draw().map_err(drawing_error)?;

    let line_px = m.line_px;
    let legend_line = 28;
    for layer in &chart.layers {
        let style = if layer.reference {
            ShapeStyle::from(&layer.color).stroke_width(line_px.div_ceil(2).max(1))
        } else {
            ShapeStyle::from(&layer.color).stroke_width(line_px)
        };
        let annotation = match &layer.shape {
            Shape::Line(points) => ctx
                .draw_series(LineSeries::new(points.iter().copied(), style))
                .map_err(drawing_error)?,
            Shape::Points(points) => {
                let r = m.marker_px;
                let fill = layer.color.mix(0.55).filled();
                ctx.draw_series(points.iter().map(|&p| Circle::new(p, r, fill)))
                    .map_err(drawing_error)?
            }
            Shape::Markers(points) => {
                let r = m.marker_px + 1;
                let fill = layer.color.filled();
                ctx.draw_series(points.iter().map(|&p| Circle::new(p, r, fill)))
                    .map_err(drawing_error)?
            }
            Shape::Bars(rects) => {
                let fill = layer.color.mix(0.85).filled();
                // A white outline separates adjacent bars.
                let edge = ShapeStyle::from(&WHITE).stroke_width(1);
                ctx.draw_series(
                    rects
                        .iter()
                        .map(|&(x0, y0, x1, y1)| Rectangle::new([(x0, y0), (x1, y1)], fill)),
                )
                .map_err(drawing_error)?;
                ctx.draw_series(
                    rects
                        .iter()
                        .map(|&(x0, y0, x1, y1)| Rectangle::new([(x0, y0), (x1, y1)], edge)),
                )
                .map_err(drawing_error)?
            }
            Shape::Area(polygons) => {
                let fill = layer.color.mix(AREA_OPACITY).filled();
                ctx.draw_series(polygons.iter().map(|p| Polygon::new(p.clone(), fill)))
                    .map_err(drawing_error)?
            }
            Shape::Segments(segments) => ctx
                .draw_series(segments.iter().map(|s| PathElement::new(s.to_vec(), style)))
                .map_err(drawing_error)?,
        };
        if let Some(name) = &layer.name {
            let c = layer.color;
            let marker = m.marker_px as i32 + 1;
            match layer.shape {
                Shape::Line(_) | Shape::Segments(_) => {
                    annotation.label(name.as_str()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + legend_line, y)], style)
                    })
                }
                Shape::Area(_) => annotation.label(name.as_str()).legend(move |(x, y)| {
                    Rectangle::new(
                        [(x, y - marker - 2), (x + legend_line, y + marker + 2)],
                        c.mix(AREA_OPACITY).filled(),
                    )
                }),
                Shape::Points(_) | Shape::Markers(_) => {
                    annotation.label(name.as_str()).legend(move |(x, y)| {
                        Circle::new((x + legend_line / 2, y), marker, c.mix(0.55).filled())
                    })
                }
                Shape::Bars(_) => annotation.label(name.as_str()).legend(move |(x, y)| {
                    Rectangle::new(
                        [(x, y - marker - 2), (x + legend_line, y + marker + 2)],
                        c.mix(0.85).filled(),
                    )
                }),
            };
        }
    }

    if !chart.has_data() {
        let (w, h) = area.dim_in_pixel();
        let style = (FONT_FAMILY, m.label_px)
            .into_font()
            .color(&RGBColor(120, 120, 120))
            .pos(centered());
        area.draw(&Text::new("no data", (w as i32 / 2, h as i32 / 2), style))
            .map_err(drawing_error)?;
    }

    let named = chart.layers.iter().filter(|l| l.name.is_some()).count();
    if named >= 2 {
        let position = match chart.legend {
            LegendAt::UpperLeft => SeriesLabelPosition::UpperLeft,
            LegendAt::UpperRight => SeriesLabelPosition::UpperRight,
            LegendAt::LowerRight => SeriesLabelPosition::LowerRight,
        };
        ctx.configure_series_labels()
            .position(position)
            .margin(m.margin_px / 2)
            .legend_area_size(legend_line + 8)
            .label_font((FONT_FAMILY, m.legend_px).into_font())
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(drawing_error)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Output files
// ---------------------------------------------------------------------------------------

pub(super) fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = stem.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub(super) fn render(
    stem: &Path,
    size: FigureSize,
    title: &str,
    charts: &[Chart],
    notes: Vec<String>,
) -> Result<FigureFiles> {
    ensure_font()?;
    let png = with_suffix(stem, ".png");
    let svg = with_suffix(stem, ".svg");
    if let Some(dir) = png.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_path(dir)?;
    }
    let dims = (size.width_px, size.height_px);
    let fail = |path: &Path, e: String| {
        Error::Msg(format!(
            "{}: drawing the figure failed: {e}",
            path.display()
        ))
    };

    write_atomic_with(&png, |tmp| {
        let root = BitMapBackend::new(tmp, dims).into_drawing_area();
        draw_figure(&root, size, title, charts).map_err(|e| fail(&png, e))?;
        // The backend encodes the PNG when it is dropped, after which the file is complete.
        drop(root);
        Ok(())
    })?;

    let mut svg_text = String::new();
    {
        let root = SVGBackend::with_string(&mut svg_text, dims).into_drawing_area();
        draw_figure(&root, size, title, charts).map_err(|e| fail(&svg, e))?;
    }
    write_atomic(&svg, svg_text.as_bytes())?;
    Ok(FigureFiles { png, svg, notes })
}
