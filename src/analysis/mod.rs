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
pub mod report_doc;
pub mod stats;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::IoContext;
use crate::Result;

// Atomic output for figures and reports. `io` owns atomic writes for the project; these
// two helpers should give way to it once it lands.

/// A unique sibling path for a temporary file; keeps `extension` last because the PNG
/// encoder picks the format from it.
pub(crate) fn temp_sibling(path: &Path, extension: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.tmp-{}-{n}.{extension}",
        std::process::id()
    ))
}

/// Writes bytes to `path` atomically: a temporary file in the same directory, flushed to
/// disk, then renamed over the destination.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_sibling(path, "tmp");
    let result = (|| {
        let mut file = fs::File::create(&tmp).with_path(&tmp)?;
        file.write_all(bytes).with_path(&tmp)?;
        file.sync_all().with_path(&tmp)?;
        fs::rename(&tmp, path).with_path(path)
    })();
    if result.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = fs::remove_file(&tmp);
    }
    result
}
