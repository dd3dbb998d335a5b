//! Vidur-style simulation: profiling bundles in Vidur's format, op-time predictors, Vidur's
//! memory planner, the profiler and its stage, batch replay, and (later) the discrete-event
//! simulator.

pub mod bundle;
pub mod memory_planner;
pub mod predictor;
pub mod profile_stage;
pub mod profiler;
pub mod replay_stage;

pub use bundle::{Op, OpSet};
