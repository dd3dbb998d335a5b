//! Every figure kind renders to PNG + SVG of the stated size, with its labels, and
//! degenerate inputs do not panic.

#![cfg(feature = "report")]

use std::fs;
use std::path::{Path, PathBuf};

use simreal::analysis::plots::{
    cdf_envelope, cdf_overlay, error_bars, error_histogram, grouped_bars, line_chart,
    paired_scatter, timeline, Axis, ErrorBar, FigureFiles, FigureSpec, Panel, Series, TimelineSpec,
    XySeries,
};

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "simreal-analysis-plots-{}-{name}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn stem(&self, name: &str) -> PathBuf {
        self.0.join("figures").join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Width and height from the IHDR chunk, which must come first in a valid PNG.
fn png_dimensions(path: &Path) -> (u32, u32) {
    let bytes = fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{}: not a PNG",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

/// The text content of every `<text>` element (whitespace trimmed, entities kept).
fn svg_texts(path: &Path) -> Vec<String> {
    let svg = fs::read_to_string(path).unwrap();
    assert!(
        svg.trim_start().starts_with("<svg"),
        "{}: not an SVG",
        path.display()
    );
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(
        svg.matches("<text").count(),
        svg.matches("</text>").count(),
        "unbalanced <text> elements"
    );
    svg.split("<text")
        .skip(1)
        .map(|chunk| {
            let body = &chunk[chunk.find('>').unwrap() + 1..chunk.find("</text>").unwrap()];
            body.trim().to_string()
        })
        .collect()
}

fn assert_figure(files: &FigureFiles, size: (u32, u32), labels: &[&str]) {
    assert_eq!(png_dimensions(&files.png), size);
    let texts = svg_texts(&files.svg);
    for label in labels {
        assert!(
            texts.iter().any(|t| t == label),
            "{}: no <text> \"{label}\" among {texts:?}",
            files.svg.display()
        );
    }
    // No temporary files are left next to the outputs.
    let dir = files.png.parent().unwrap();
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "leftover temporary file {name}");
    }
}

#[test]
fn cdf_overlay_linear_and_log() {
    let dir = TempDir::new("cdf");
    let real: Vec<f64> = (1..=200).map(|i| (i as f64).powf(1.5)).collect();
    let sim: Vec<f64> = real.iter().map(|v| v * 0.9 + 3.0).collect();
    let spec = FigureSpec::new(
        "TTFT: real vs simulated",
        "TTFT (ms)",
        "fraction of requests ≤ x",
    );
    let samples = [
        Series {
            name: "real",
            values: &real,
        },
        Series {
            name: "vidur",
            values: &sim,
        },
    ];
    let files = cdf_overlay(&dir.stem("cdf_ttft"), &spec, &samples).unwrap();
    assert_eq!(files.png, dir.stem("cdf_ttft").with_extension("png"));
    assert!(files.notes.is_empty());
    assert_figure(
        &files,
        (1200, 800),
        &[
            "TTFT: real vs simulated",
            "TTFT (ms)",
            "fraction of requests ≤ x",
            "real",
            "vidur",
        ],
    );

    // Log axis: the zero cannot be placed, which the notes say.
    let with_zero = [0.0, 1.0, 10.0, 100.0];
    let spec = spec.log_x().with_size(900, 600);
    let files = cdf_overlay(
        &dir.stem("cdf_log"),
        &spec,
        &[Series {
            name: "queue delay",
            values: &with_zero,
        }],
    )
    .unwrap();
    assert_figure(&files, (900, 600), &["1", "10", "100"]);
    assert_eq!(files.notes.len(), 1, "{:?}", files.notes);
}

#[test]
fn cdf_envelope_shades_the_runs_and_draws_the_curves() {
    let dir = TempDir::new("cdf-envelope");
    let run = |scale: f64| -> Vec<f64> { (1..=150).map(|i| scale * f64::from(i)).collect() };
    let runs = [run(1.0), run(1.05), run(0.95)];
    let pooled = runs.concat();
    let sim = run(1.2);
    let spec =
        FigureSpec::new("TTFT: real vs simulated", "TTFT (ms)", "fraction ≤ x").with_size(800, 600);
    let envelope: Vec<&[f64]> = runs.iter().map(Vec::as_slice).collect();
    let curves = [
        Series {
            name: "real (pooled)",
            values: &pooled,
        },
        Series {
            name: "simulated",
            values: &sim,
        },
    ];
    let files = cdf_envelope(
        &dir.stem("cdf_env"),
        &spec,
        "3 real runs",
        &envelope,
        &curves,
    )
    .unwrap();
    assert_figure(
        &files,
        (800, 600),
        &["3 real runs", "real (pooled)", "simulated", "TTFT (ms)"],
    );
    let svg = fs::read_to_string(&files.svg).unwrap();
    assert!(svg.contains("<polygon"), "the envelope is a filled polygon");
    // On a log axis too; one sample is no envelope.
    let files = cdf_envelope(
        &dir.stem("cdf_env_log"),
        &spec.clone().log_x(),
        "runs",
        &envelope,
        &curves,
    )
    .unwrap();
    assert!(files.notes.is_empty(), "{:?}", files.notes);
    assert!(cdf_envelope(&dir.stem("x"), &spec, "runs", &envelope[..1], &curves).is_err());
    assert!(cdf_envelope(&dir.stem("x"), &spec, "runs", &[&[], &[1.0]], &curves).is_err());
}

#[test]
fn error_bars_with_bands_targets_and_intervals() {
    let dir = TempDir::new("error-bars");
    let spec = FigureSpec::new("TTFT: simulator error", "statistic", "error (%)");
    let bars = [
        ErrorBar {
            value: 1.5,
            interval: Some([0.5, 2.5]),
            band: Some([-2.0, 3.0]),
            target: Some(3.0),
        },
        ErrorBar {
            value: -8.0,
            interval: None,
            band: None,
            target: Some(5.0),
        },
    ];
    let files = error_bars(
        &dir.stem("error_bars"),
        &spec,
        &["P50", "P99"],
        &bars,
        "real runs' band",
        "simulator (95 % CI)",
    )
    .unwrap();
    assert_figure(
        &files,
        (1200, 800),
        &[
            "P50",
            "P99",
            "real runs&apos; band",
            "target (±)",
            "simulator (95 % CI)",
        ],
    );
    assert!(error_bars(&dir.stem("x"), &spec, &["P50"], &bars, "a", "b").is_err());
    let bad = [ErrorBar {
        value: f64::NAN,
        interval: None,
        band: None,
        target: None,
    }];
    assert!(error_bars(&dir.stem("x"), &spec, &["P50"], &bad, "a", "b").is_err());
}

#[test]
fn paired_scatter_with_diagonal() {
    let dir = TempDir::new("scatter");
    let real: Vec<f64> = (0..50).map(|i| 10.0 + i as f64).collect();
    let sim: Vec<f64> = real.iter().map(|v| v * 1.1).collect();
    let spec = FigureSpec::new("E2E per request", "real E2E (ms)", "simulated E2E (ms)");
    let files = paired_scatter(&dir.stem("scatter_e2e"), &spec, "requests", &real, &sim).unwrap();
    assert_figure(
        &files,
        (1200, 800),
        &[
            "E2E per request",
            "real E2E (ms)",
            "simulated E2E (ms)",
            "requests (n = 50)",
            "y = x (perfect agreement)",
        ],
    );
    assert!(paired_scatter(&dir.stem("bad"), &spec, "r", &real, &sim[1..]).is_err());
    assert!(paired_scatter(&dir.stem("bad"), &spec.clone().log_x(), "r", &real, &sim).is_err());
}

#[test]
fn error_histogram_with_zero_line_and_clipped_range() {
    let dir = TempDir::new("hist");
    let errors: Vec<f64> = (0..300).map(|i| ((i * 37) % 101) as f64 - 30.0).collect();
    let spec = FigureSpec::new("TTFT error per request", "signed error (%)", "requests");
    let files = error_histogram(&dir.stem("hist"), &spec, &errors, 20, None).unwrap();
    assert_figure(
        &files,
        (1200, 800),
        &["signed error (%)", "requests (n = 300)", "0 % (no error)"],
    );
    assert!(files.notes.is_empty());

    let files = error_histogram(
        &dir.stem("hist_clip"),
        &spec,
        &errors,
        10,
        Some((-20.0, 20.0)),
    )
    .unwrap();
    assert_eq!(files.notes.len(), 1, "{:?}", files.notes);
    assert!(error_histogram(&dir.stem("bad"), &spec, &errors, 0, None).is_err());
    assert!(error_histogram(&dir.stem("bad"), &spec, &[f64::NAN], 5, None).is_err());
}

#[test]
fn timeline_shares_the_time_axis() {
    let dir = TempDir::new("timeline");
    let real_batch: Vec<(f64, f64)> = (0..100).map(|i| (i as f64 * 0.1, (i % 7) as f64)).collect();
    let sim_batch: Vec<(f64, f64)> = (0..90).map(|i| (i as f64 * 0.11, (i % 5) as f64)).collect();
    let real_kv: Vec<(f64, f64)> = (0..100).map(|i| (i as f64 * 0.1, (i * 3) as f64)).collect();
    let spec = TimelineSpec {
        title: "Engine state over time".into(),
        x: Axis::linear("time since start (s)"),
        size: Default::default(),
    };
    let panels = [
        Panel {
            y: Axis::linear("batch size (requests)"),
            series: vec![
                XySeries {
                    name: "real",
                    points: &real_batch,
                },
                XySeries {
                    name: "sim",
                    points: &sim_batch,
                },
            ],
            steps: true,
        },
        Panel {
            y: Axis::linear("KV blocks used"),
            series: vec![
                XySeries {
                    name: "real",
                    points: &real_kv,
                },
                XySeries {
                    name: "sim",
                    points: &[],
                },
            ],
            steps: true,
        },
    ];
    let files = timeline(&dir.stem("timeline"), &spec, &panels).unwrap();
    assert_figure(
        &files,
        (1200, 800),
        &[
            "Engine state over time",
            "time since start (s)",
            "batch size (requests)",
            "KV blocks used",
            "real",
            "sim",
        ],
    );
    // The x label appears once: only the bottom panel carries it.
    let texts = svg_texts(&files.svg);
    assert_eq!(
        texts
            .iter()
            .filter(|t| *t == "time since start (s)")
            .count(),
        1
    );
}

#[test]
fn grouped_bars_with_negative_values() {
    let dir = TempDir::new("bars");
    let spec = FigureSpec::new(
        "Where the TTFT error comes from",
        "component",
        "contribution to mean error (ms)",
    );
    let files = grouped_bars(
        &dir.stem("attribution"),
        &spec,
        &["execution time", "CPU overhead", "scheduling"],
        &[
            Series {
                name: "qps 1",
                values: &[4.0, -1.5, 0.2],
            },
            Series {
                name: "qps 4",
                values: &[9.0, -2.0, 3.5],
            },
        ],
    )
    .unwrap();
    assert_figure(
        &files,
        (1200, 800),
        &[
            "execution time",
            "CPU overhead",
            "scheduling",
            "qps 1",
            "qps 4",
            "contribution to mean error (ms)",
        ],
    );
    let mismatched = [Series {
        name: "x",
        values: &[1.0],
    }];
    assert!(grouped_bars(&dir.stem("bad"), &spec, &["a", "b"], &mismatched).is_err());
}

#[test]
fn line_chart_with_log_y() {
    let dir = TempDir::new("lines");
    let a = [(1.0, 2.0), (2.0, 5.0), (4.0, 30.0), (8.0, 400.0)];
    let b = [(1.0, 1.0), (2.0, 3.0), (4.0, 8.0), (8.0, 0.0)];
    let spec = FigureSpec::new(
        "Error vs load",
        "offered load (requests/s)",
        "MAPE of E2E (%)",
    )
    .log_y();
    let files = line_chart(
        &dir.stem("error_vs_load"),
        &spec,
        &[
            XySeries {
                name: "vidur_compat",
                points: &a,
            },
            XySeries {
                name: "native",
                points: &b,
            },
        ],
    )
    .unwrap();
    assert_figure(
        &files,
        (1200, 800),
        &[
            "Error vs load",
            "offered load (requests/s)",
            "MAPE of E2E (%)",
            "vidur_compat",
            "native",
            "10",
            "100",
        ],
    );
    assert_eq!(
        files.notes.len(),
        1,
        "the zero on a log axis is reported: {:?}",
        files.notes
    );
}

#[test]
fn degenerate_inputs_render_without_panicking() {
    let dir = TempDir::new("degenerate");
    let spec = FigureSpec::new("Degenerate", "value (ms)", "fraction");
    // Nothing at all: the figure says "no data".
    let files = cdf_overlay(&dir.stem("empty"), &spec, &[]).unwrap();
    assert_figure(&files, (1200, 800), &["no data"]);
    let files = cdf_overlay(
        &dir.stem("empty_series"),
        &spec,
        &[Series {
            name: "a",
            values: &[],
        }],
    )
    .unwrap();
    assert_eq!(files.notes.len(), 1);
    // One point, all-equal values, a single bin.
    cdf_overlay(
        &dir.stem("one"),
        &spec,
        &[Series {
            name: "a",
            values: &[5.0],
        }],
    )
    .unwrap();
    cdf_overlay(
        &dir.stem("equal"),
        &spec.clone().log_x(),
        &[Series {
            name: "a",
            values: &[3.0; 10],
        }],
    )
    .unwrap();
    paired_scatter(&dir.stem("scatter_one"), &spec, "r", &[1.0], &[1.0]).unwrap();
    paired_scatter(&dir.stem("scatter_empty"), &spec, "r", &[], &[]).unwrap();
    error_histogram(&dir.stem("hist_equal"), &spec, &[0.0; 4], 1, None).unwrap();
    error_histogram(&dir.stem("hist_empty"), &spec, &[], 10, None).unwrap();
    line_chart(
        &dir.stem("lines_one"),
        &spec.clone().log_x().log_y(),
        &[XySeries {
            name: "a",
            points: &[(1.0, 1.0)],
        }],
    )
    .unwrap();
    grouped_bars(
        &dir.stem("bars_zero"),
        &spec,
        &["only"],
        &[Series {
            name: "a",
            values: &[0.0],
        }],
    )
    .unwrap();
    let spec_t = TimelineSpec {
        title: "t".into(),
        x: Axis::linear("time (s)"),
        size: Default::default(),
    };
    timeline(
        &dir.stem("timeline_empty"),
        &spec_t,
        &[Panel {
            y: Axis::log10("queue (requests)"),
            series: vec![],
            steps: false,
        }],
    )
    .unwrap();
    // Labels are required.
    let unlabeled = FigureSpec::new("t", "", "y");
    assert!(cdf_overlay(&dir.stem("bad"), &unlabeled, &[]).is_err());
}

#[test]
fn large_samples_keep_svgs_small() {
    let dir = TempDir::new("large");
    let real: Vec<f64> = (0..100_000)
        .map(|i| 1.0 + ((i * 7919) % 100_003) as f64 * 0.01)
        .collect();
    let sim: Vec<f64> = real.iter().map(|v| v * 1.05).collect();
    let spec = FigureSpec::new("ITL", "inter-token latency (ms)", "fraction of tokens ≤ x");
    let files = cdf_overlay(
        &dir.stem("cdf_itl"),
        &spec,
        &[
            Series {
                name: "real",
                values: &real,
            },
            Series {
                name: "sim",
                values: &sim,
            },
        ],
    )
    .unwrap();
    let svg_bytes = fs::metadata(&files.svg).unwrap().len();
    assert!(svg_bytes < 400_000, "CDF SVG is {svg_bytes} bytes");
    let spec = FigureSpec::new("ITL pairs", "real ITL (ms)", "simulated ITL (ms)");
    let files = paired_scatter(&dir.stem("scatter_itl"), &spec, "tokens", &real, &sim).unwrap();
    assert!(svg_texts(&files.svg)
        .iter()
        .any(|t| t == "tokens (n = 100000)"));

    let batches: Vec<(f64, f64)> = (0..100_000)
        .map(|i| (i as f64 * 0.001, (i % 17) as f64))
        .collect();
    let spec = TimelineSpec {
        title: "Batch size".into(),
        x: Axis::linear("time since start (s)"),
        size: Default::default(),
    };
    let panel = Panel {
        y: Axis::linear("batch size (requests)"),
        series: vec![XySeries {
            name: "real",
            points: &batches,
        }],
        steps: true,
    };
    let files = timeline(&dir.stem("timeline_long"), &spec, &[panel]).unwrap();
    let svg_bytes = fs::metadata(&files.svg).unwrap().len();
    assert!(svg_bytes < 400_000, "timeline SVG is {svg_bytes} bytes");
}
