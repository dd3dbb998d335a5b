//! Helpers shared by the stage integration tests: run a stage binary the way a user would,
//! with outputs under a private temp root.

#![allow(dead_code)]

pub mod precursor;
pub mod vidur_formula;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A `vidur_profile` grid that takes a second on `qwen3_tiny`: 2 decode batch sizes × 2 KV
/// sizes, 2 chunks × 2 KV sizes, one extra token count, one warm-up-free pass.
pub const TINY_PROFILE_GRID: [&str; 10] = [
    "profile.num_tokens=[1,3]",
    "profile.decode_batch_sizes=[1,2]",
    "profile.decode_kv_sizes=[16,48]",
    "profile.prefill_chunk_sizes=[8,16]",
    "profile.prefill_kv_sizes=[0,16]",
    "profile.cpu_overhead_batch_sizes=[1,2]",
    "profile.warmup=0",
    "profile.repeats=1",
    "profile.min_samples=1",
    "profile.cpu_overhead_iterations=2",
];

/// A fresh, empty temp dir (removed on drop).
pub struct TempRoot(pub PathBuf);

impl TempRoot {
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("simreal-it-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempRoot(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `output.root=<this dir>` override.
    pub fn root_override(&self) -> String {
        format!("output.root={}", self.0.display())
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Path of a stage binary built for this test run.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "workload" => PathBuf::from(env!("CARGO_BIN_EXE_workload")),
        "real" => PathBuf::from(env!("CARGO_BIN_EXE_real")),
        "vidur" => PathBuf::from(env!("CARGO_BIN_EXE_vidur")),
        "vidur_profile" => PathBuf::from(env!("CARGO_BIN_EXE_vidur_profile")),
        "compare" => PathBuf::from(env!("CARGO_BIN_EXE_compare")),
        "pipeline" => PathBuf::from(env!("CARGO_BIN_EXE_pipeline")),
        other => panic!("unknown binary {other}"),
    }
}

/// Runs a stage binary from the repository root with `args` as overrides.
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
}

/// Runs and requires success; returns the last stdout line (the primary output path).
pub fn run_ok(name: &str, args: &[&str]) -> PathBuf {
    let out = run(name, args);
    assert!(
        out.status.success(),
        "{name} {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default().trim().to_string();
    let path = PathBuf::from(&last);
    if path.is_absolute() {
        path
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }
}

/// Runs and requires failure; returns stderr.
pub fn run_err(name: &str, args: &[&str]) -> String {
    let out = run(name, args);
    assert!(
        !out.status.success(),
        "{name} {args:?} should have failed:\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Directories under `<root>/<stage>/` (complete or not).
pub fn run_dirs(root: &Path, stage: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join(stage))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}
