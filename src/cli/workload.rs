//! `workload`: generate a workload (trace lengths, arrivals, exact-length prompts).
//!
//! `cargo run --bin workload -- [overrides]`, e.g. `workload=trace_replay workload.num_requests=200`.

use std::process::ExitCode;

use simreal::io::Stage;

fn main() -> ExitCode {
    simreal::stages::stage_main(Stage::Workload, &[])
}
