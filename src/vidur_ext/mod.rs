//! Vidur-style simulation: profiling bundles in Vidur's format, op-time predictors, Vidur's
//! memory planner, (later) the profiler and the discrete-event simulator.

pub mod bundle;
pub mod memory_planner;
pub mod predictor;
pub mod sim_stage;
pub mod simulator;

pub use bundle::{Op, OpSet};
