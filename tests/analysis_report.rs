//! Report documents: Markdown and self-contained HTML renderings of one document that
//! holds every block kind, including a figure rendered by `analysis::plots`.

#![cfg(feature = "report")]

use std::fs;
use std::path::PathBuf;

use simreal::analysis::plots::{cdf_overlay, FigureSpec, Series};
use simreal::analysis::report_doc::{Cell, Document, FigureRef, Inline, Table};
use simreal::Error;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "simreal-analysis-report-{}-{name}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Decodes standard padded base64 (test-side, independent of the encoder under test).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' => 62,
            b'/' => 63,
            other => panic!("invalid base64 byte {other}"),
        }
    };
    let bytes = text.as_bytes();
    assert_eq!(bytes.len() % 4, 0);
    let mut out = Vec::new();
    for quad in bytes.chunks(4) {
        let pad = quad.iter().filter(|&&c| c == b'=').count();
        let n = quad
            .iter()
            .map(|&c| if c == b'=' { 0 } else { value(c) })
            .fold(0u32, |acc, v| acc << 6 | v);
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    out
}

fn sample_document(dir: &TempDir) -> (Document, Vec<u8>) {
    let real = [12.0, 15.5, 19.0, 30.25];
    let sim = [11.0, 16.0, 21.0, 28.0];
    let files = cdf_overlay(
        &dir.0.join("figures").join("cdf_ttft"),
        &FigureSpec::new("TTFT", "TTFT (ms)", "fraction of requests ≤ x"),
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
    let png = fs::read(&files.png).unwrap();

    let mut table = Table::new(["metric", "real (ms)", "sim (ms)", "error (%)", "requests"])
        .unwrap()
        .with_caption("Latency percentiles | all requests");
    table
        .push_row([
            Cell::text("TTFT p50"),
            Cell::num(17.25, 2),
            Cell::num(18.5, 2),
            Cell::num(7.246, 1),
            Cell::int(4),
        ])
        .unwrap();
    table
        .push_row([
            Cell::text("a|b <c>"),
            Cell::num(1234.5, 2),
            Cell::Empty,
            Cell::num(f64::NAN, 1),
            Cell::int(-3),
        ])
        .unwrap();

    let mut doc = Document::new("Real vs sim: qwen3 <0.6B> & friends");
    doc.section("Summary")
        .paragraph([
            Inline::text("Predictor "),
            Inline::code("vidur_compat"),
            Inline::text(" is "),
            Inline::strong("7 % slower"),
            Inline::text(" at p50; see "),
            Inline::emph("Figure 1"),
            Inline::text(". <script>alert(1)</script> stays text."),
        ])
        .text("# not a heading, *not emphasis*")
        .bullets([vec![Inline::text("-5 % at p99")], vec![Inline::code("a`b")]])
        .subsection("Tables")
        .table(table)
        .figure(
            FigureRef::from_files(&dir.0, &files, "CDF of TTFT, real vs simulated")
                .unwrap()
                .with_notes(["2 values are hidden.".to_string()]),
        )
        .preformatted("workload:\n  qps: 2 # <b>\n");
    (doc, png)
}

#[test]
fn markdown_rendering() {
    let dir = TempDir::new("md");
    let (doc, _) = sample_document(&dir);
    let md_path = dir.0.join("report.md");
    doc.write_markdown(&md_path).unwrap();
    let md = fs::read_to_string(&md_path).unwrap();

    assert!(
        md.starts_with("# Real vs sim: qwen3 \\<0.6B> & friends\n"),
        "{md}"
    );
    assert!(md.contains("\n## Summary\n"));
    assert!(md.contains("\n### Tables\n"));
    assert!(md.contains(
        "Predictor `vidur_compat` is **7 % slower** at p50; see *Figure 1*. \\<script>alert(1)\\</script> stays text."
    ));
    assert!(md.contains("\n\\# not a heading, \\*not emphasis\\*\n"));
    assert!(md.contains("\n- \\-5 % at p99\n- ``a`b``\n"));
    // Numeric columns are right-aligned and padded; text columns left-aligned.
    let expected_table = "\
*Table 1.* Latency percentiles \\| all requests

| metric    | real (ms) | sim (ms) | error (%) | requests |
| :-------- | --------: | -------: | --------: | -------: |
| TTFT p50  |     17.25 |    18.50 |       7.2 |        4 |
| a\\|b \\<c> |   1234.50 |          |       n/a |       -3 |
";
    assert!(md.contains(expected_table), "{md}");
    assert!(md.contains(
        "![Figure 1: CDF of TTFT, real vs simulated](figures/cdf_ttft.png)\n\n\
         *Figure 1.* CDF of TTFT, real vs simulated ([SVG](figures/cdf_ttft.svg))\n\n\
         > Note: 2 values are hidden.\n"
    ));
    assert!(
        md.ends_with("```text\nworkload:\n  qps: 2 # <b>\n```\n"),
        "{md}"
    );
}

#[test]
fn html_is_escaped_and_self_contained() {
    let dir = TempDir::new("html");
    let (doc, png) = sample_document(&dir);
    let html_path = dir.0.join("report.html");
    doc.write_html(&html_path).unwrap();
    let html = fs::read_to_string(&html_path).unwrap();

    assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
    assert!(html.contains("<title>Real vs sim: qwen3 &lt;0.6B&gt; &amp; friends</title>"));
    assert!(html.contains("<h1>Real vs sim: qwen3 &lt;0.6B&gt; &amp; friends</h1>"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; stays text."));
    assert!(!html.contains("<script"));
    assert!(html.contains("<code>vidur_compat</code>"));
    assert!(html.contains("<strong>7 % slower</strong>"));
    assert!(html.contains("<p># not a heading, *not emphasis*</p>"));
    assert!(html.contains(
        "<caption><strong>Table 1.</strong> Latency percentiles | all requests</caption>"
    ));
    assert!(html.contains(
        "<thead><tr><th>metric</th><th class=\"num\">real (ms)</th><th class=\"num\">sim (ms)</th>\
         <th class=\"num\">error (%)</th><th class=\"num\">requests</th></tr></thead>"
    ));
    assert!(html.contains(
        "<tr><td>a|b &lt;c&gt;</td><td class=\"num\">1234.50</td><td class=\"num\"></td>\
         <td class=\"num\">n/a</td><td class=\"num\">-3</td></tr>"
    ));
    assert!(html.contains("<pre><code>workload:\n  qps: 2 # &lt;b&gt;\n</code></pre>"));
    assert!(html.contains("<p class=\"note\">Note: 2 values are hidden.</p>"));

    // The figure is embedded, byte for byte.
    let marker = "src=\"data:image/png;base64,";
    let start = html.find(marker).unwrap() + marker.len();
    let end = start + html[start..].find('"').unwrap();
    assert_eq!(base64_decode(&html[start..end]), png);

    // Nothing is fetched from elsewhere: the only resource is the data URI.
    assert_eq!(html.matches("src=").count(), 1);
    for forbidden in [
        "http:",
        "https:",
        "<link",
        "url(",
        "@import",
        "href=",
        "cdf_ttft.png",
    ] {
        assert!(!html.contains(forbidden), "HTML contains {forbidden:?}");
    }
}

#[test]
fn missing_or_invalid_figures_are_typed_errors() {
    let dir = TempDir::new("missing");
    let mut doc = Document::new("t");
    doc.figure(FigureRef::new("figures/nope.png", "absent").unwrap());
    assert!(matches!(
        doc.to_html(&dir.0),
        Err(Error::MissingInput { .. })
    ));

    fs::write(dir.0.join("fake.png"), b"not a png").unwrap();
    let mut doc = Document::new("t");
    doc.figure(FigureRef::new("fake.png", "fake").unwrap());
    assert!(matches!(doc.to_html(&dir.0), Err(Error::InvalidInput(_))));

    assert!(FigureRef::new("/abs/x.png", "absolute").is_err());
    assert!(FigureRef::new("x.png", " ").is_err());
}
