//! The profiler: times the engine's own op functions into a Vidur-format bundle.
//!
//! Two measurements, each on the code path the `real` stage runs:
//! - [`compute`]: per-layer ops, attention and the per-iteration ops, timed inside real
//!   forward passes of [`crate::real_bench::model::Qwen3Model`] over a grid of batch shapes
//!   that [`plan`] lays out (`mlp.csv`, `attention.csv`);
//! - [`cpu`]: the engine loop's CPU work per iteration by batch size, timed by the real
//!   [`crate::real_bench::engine::Engine`] serving synthetic requests (`cpu_overheads.csv`).
//!
//! The `vidur_profile` stage ([`crate::stages::vidur_profile`]) wires them to a config
//! and writes the bundle.

pub mod compute;
pub mod cpu;
pub mod plan;
mod progress;
mod recorder;

pub use compute::{growing_block_tables, profile_compute, ComputeProfile, ForwardOverhead};
pub use cpu::{profile_cpu_overheads, DEFAULT_CPU_ITERATIONS};
pub use plan::{ComputeGrid, ComputePlan, ForwardShape};
pub use progress::Progress;
pub use recorder::SampleRecorder;
