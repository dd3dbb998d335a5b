//! `real`: serve a workload with the candle Qwen3 engine and record every token.
//!
//! `cargo run --release --bin real -- [overrides]`, e.g. `model=qwen3_tiny workload.seed=3`.

use std::process::ExitCode;

use simreal::io::Stage;

fn main() -> ExitCode {
    simreal::stages::stage_main(Stage::Real, &[])
}
