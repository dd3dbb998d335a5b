//! Vidur-style simulation: profiling bundles in Vidur's format ([`bundle`]), op-time
//! predictors ([`predictor`]), Vidur's memory planner, the operator profiler and its stage
//! ([`profiler`], [`profile_stage`]), batch replay of real runs ([`replay_stage`]), and the
//! discrete-event simulator and its stage ([`simulator`], [`sim_stage`]).

pub mod bundle;
pub mod device_speed;
pub mod memory_planner;
pub mod predictor;
pub mod profile_stage;
pub mod profiler;
pub mod replay_stage;
pub mod sim_stage;
pub mod simulator;

pub use bundle::{Op, OpSet};
