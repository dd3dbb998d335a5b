//! `vidur_profile`: profile the engine's ops on this device into a Vidur-format bundle.
//!
//! `cargo run --release --bin vidur_profile -- [overrides]`, e.g. `model=qwen3_tiny`.

use std::process::ExitCode;

use simreal::io::Stage;

fn main() -> ExitCode {
    simreal::stages::stage_main(Stage::VidurProfile, &[])
}
