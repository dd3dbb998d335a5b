//! Records the versions of the crates that shape measured numbers (from Cargo.lock), the
//! optimisation level this crate is compiled at, the version of rustc and, in `--features
//! cuda` builds, of the CUDA toolkit (`nvcc --version`), so every run's provenance and every
//! GPU bundle can name them.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    for (krate, var) in [
        ("candle-core", "SIMREAL_DEP_CANDLE_CORE"),
        ("tokenizers", "SIMREAL_DEP_TOKENIZERS"),
    ] {
        if let Some(version) = locked_version(&lock, krate) {
            println!("cargo:rustc-env={var}={version}");
        }
    }
    // The optimisation level of this crate's own code, recorded in every run's provenance.
    if let Ok(level) = std::env::var("OPT_LEVEL") {
        println!("cargo:rustc-env=SIMREAL_BUILD_OPT_LEVEL={level}");
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if let Ok(out) = Command::new(rustc).arg("--version").output() {
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        println!("cargo:rustc-env=SIMREAL_RUSTC_VERSION={v}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rerun-if-env-changed=PATH");
        println!("cargo:rerun-if-env-changed=CUDA_ROOT");
        if let Some(version) = nvcc_version() {
            println!("cargo:rustc-env=SIMREAL_CUDA_TOOLKIT_VERSION={version}");
        }
    }
}

/// `13.0.88` from nvcc's `Cuda compilation tools, release 13.0, V13.0.88` (the nvcc that
/// candle's kernels are built with: `CUDA_ROOT/bin`, else `PATH`).
fn nvcc_version() -> Option<String> {
    let nvcc = std::env::var_os("CUDA_ROOT")
        .map(|root| std::path::PathBuf::from(root).join("bin").join("nvcc"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "nvcc".into());
    let out = Command::new(nvcc).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.rsplit_once(", V").map(|(_, v)| v.trim().to_string()))
}

fn locked_version(lock: &str, krate: &str) -> Option<String> {
    let needle = format!("name = \"{krate}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == needle {
            let next = lines.next()?;
            return next
                .trim()
                .strip_prefix("version = \"")
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_string);
        }
    }
    None
}
