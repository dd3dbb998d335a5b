//! simreal: how faithfully does a Vidur-style LLM-serving simulator reproduce a real engine?
//!
//! Stages talk only through schema-checked files (see `specs/` and `io`):
//! `workloads` writes traces and prompts, `real_bench` runs Qwen3 on candle under open-loop
//! arrivals, `vidur_ext` profiles operators, predicts op times and simulates, and `analysis`
//! joins both sides into comparisons and reports. `scheduler` is the batching policy shared
//! by the real engine and the simulator.

pub mod error;

#[cfg(feature = "report")]
pub mod analysis;
pub mod config;
pub mod io;
#[cfg(all(feature = "engine", feature = "report"))]
pub mod pipeline;
pub mod quantile;
#[cfg(feature = "engine")]
pub mod real_bench;
pub mod scheduler;
pub mod stages;
pub mod vidur_ext;
pub mod workloads;

pub use error::{Error, Result};
