//! Vidur-style simulation, pure Rust (no candle, plotters or tokenizer): op-time predictors
//! over a profiling bundle ([`predictor`]), the device-speed correction between a bundle and
//! a real run ([`device_speed`]), and the discrete-event simulator ([`simulator`]). The
//! bundle's file format is a contract shared with the profiler and lives in
//! [`crate::io::bundle`]; the stages that run all this are in [`crate::stages`].

pub mod device_speed;
pub mod predictor;
pub mod simulator;
