//! `vidur`: replay a workload through the discrete-event simulator.
//!
//! `cargo run --release --bin vidur -- [overrides]`, e.g. `model=llama2_70b hardware=a100_80g
//! vidur.tensor_parallel_size=2 vidur.bundle=../shared/vidur_reference/profiling
//! vidur.network=a100_pairwise_nvlink workload=trace_replay` (run `workload` with the same
//! overrides first).

use std::process::ExitCode;

use simreal::io::Stage;

fn main() -> ExitCode {
    simreal::stages::stage_main(Stage::Vidur, &[])
}
