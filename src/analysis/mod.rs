//! Real-vs-simulated analysis: statistics, figures and report documents.
//!
//! The reusable pieces live here; the `compare` stage joins a real run with a simulated
//! run and uses them to write `summary.json`, `report.md`/`report.html` and `figures/`.
//!
//! * [`stats`]: percentiles, summaries, relative errors, Kolmogorov–Smirnov and
//!   Wasserstein comparisons, matching numpy/scipy conventions;
//! * [`plots`]: figures written as PNG and SVG;
//! * [`report_doc`]: a small document model rendered to GitHub Markdown and to
//!   self-contained HTML.

pub mod plots;
pub mod stats;
