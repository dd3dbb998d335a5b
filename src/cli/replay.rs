//! `replay`: predict every iteration of a real run and compare with what it measured.
//!
//! `cargo run --release --bin replay -- model=qwen3_tiny` replays the real run and bundle the
//! same overrides name; `real_run=<dir>` and `bundle=<dir>` point at others. The predictor is
//! `vidur.predictor` (`native` or `vidur_compat`). Output: `tmp/replay/<id>/`.

use std::process::ExitCode;

use simreal::io::Stage;
use simreal::stages::replay::ALIASES;
use simreal::stages::stage_main;

fn main() -> ExitCode {
    stage_main(Stage::Replay, &ALIASES)
}
