//! `compare`: compare a real run with a simulated one and write the report.
//!
//! `cargo run --release --bin compare -- [overrides]` compares the `real` and `vidur` runs
//! the same overrides produce (`compare -- model=qwen3_tiny workload.seed=3`);
//! `compare -- real_run=<dir>[,<dir>...] sim_run=<dir>` compares any runs (several real runs
//! measure the real engine's noise). `real_run=`/`sim_run=` are aliases of
//! `compare.real_run=`/`compare.sim_run=`.

use std::process::ExitCode;

use simreal::io::Stage;
use simreal::stages::compare::ALIASES;

fn main() -> ExitCode {
    simreal::stages::stage_main(Stage::Compare, &ALIASES)
}
