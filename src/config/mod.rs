//! Configuration: Hydra-style composition of YAML files and command-line overrides into
//! one typed, validated config with computed properties.

pub mod compose;
pub mod derived;
pub mod memory_planner;
pub mod overrides;
pub mod plan;
pub mod types;
pub mod yaml;

pub use compose::{compose, Composed, ConfigDir};
pub use overrides::{expand_multirun, Override};
pub use types::{resolve_input_path, SimrealConfig};
