//! Real-vs-simulated analysis: statistics, figures and report documents.
//!
//! The reusable pieces live here; the `compare` stage ([`compare`]) joins a real run with a
//! simulated run and uses them to write `summary.json`, `report.md`/`report.html` and
//! `figures/`.
//!
//! * [`stats`]: percentiles, summaries, relative errors, Kolmogorov–Smirnov and
//!   Wasserstein comparisons, matching numpy/scipy conventions;
//! * [`plots`]: figures written as PNG and SVG;
//! * [`report_doc`]: a small document model rendered to GitHub Markdown and to
//!   self-contained HTML;
//! * [`compare`]: the `compare` stage itself (loading and checking runs, joins,
//!   statistics, error attribution, interop with Vidur and vLLM outputs, the report).

pub mod compare;
pub mod plots;
pub mod report_doc;
pub mod stats;
