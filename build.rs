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
        compile_ptx(
            "src/real_bench/model/cuda_attention.cu",
            "cuda_attention.ptx",
        );
    }
}

/// Compiles our CUDA kernels to PTX in OUT_DIR, which the crate embeds (`include_str!`). PTX
/// for compute capability 8.0 loads on the A100 and, compiled by the driver at load time, on
/// every newer GPU (H100, H200): one build serves all the presets. A failure stops the build
/// with nvcc's message.
fn compile_ptx(source: &str, ptx_name: &str) {
    println!("cargo:rerun-if-changed={source}");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join(ptx_name);
    let mut nvcc = Command::new(nvcc_path());
    nvcc.args(["--ptx", "-O3", "-arch=compute_80", "-o"])
        .arg(&out)
        .arg(source);
    if let Some(root) = std::env::var_os("CUDA_ROOT") {
        nvcc.arg("-I")
            .arg(std::path::PathBuf::from(root).join("include"));
    }
    match nvcc.status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("nvcc failed ({status}) compiling {source} to PTX"),
        Err(e) => {
            panic!("cannot run nvcc to compile {source} ({e}): set CUDA_ROOT or PATH (docs/gpu.md)")
        }
    }
}

/// The nvcc that candle's kernels are built with: `CUDA_ROOT/bin/nvcc`, else `nvcc` on PATH.
fn nvcc_path() -> std::path::PathBuf {
    std::env::var_os("CUDA_ROOT")
        .map(|root| std::path::PathBuf::from(root).join("bin").join("nvcc"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "nvcc".into())
}

/// `13.0.88` from nvcc's `Cuda compilation tools, release 13.0, V13.0.88`.
fn nvcc_version() -> Option<String> {
    let out = Command::new(nvcc_path()).arg("--version").output().ok()?;
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
