//! Records the versions of the crates that shape measured numbers (from Cargo.lock) and of
//! rustc, so every run's provenance can name them.

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
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if let Ok(out) = Command::new(rustc).arg("--version").output() {
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        println!("cargo:rustc-env=SIMREAL_RUSTC_VERSION={v}");
    }
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
