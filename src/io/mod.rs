//! The contract layer: every file the stages exchange is written and read here.
//!
//! - [`schema`]: the registry of CSV contracts (columns, types, units, version).
//! - [`csv`]: validated CSV writer/reader against that registry.
//! - [`records`]: typed rows of each CSV contract.
//! - [`ops`]: the registry of timed op classes (names, order, per-layer or not).
//! - [`json`]: JSON with sorted keys, 2-space indent, trailing newline.
//! - [`atomic`]: temp-file-and-rename writes.
//! - [`rundir`]: run directories with a `_SUCCESS` marker written last.
//! - [`ids`]: stable ids (sha256 of canonical JSON).
//! - [`json_schemas`]: JSON Schemas of the JSON contracts and a validator.
//! - [`specs`]: renders `specs/` from the registry.
//! - [`provenance`]: host fingerprint, git state, timestamps, `run_meta.json`.
//! - [`bundle`]: Vidur's profiling-bundle format, written by the profiler and read by the
//!   predictor.
//! - [`device`]: the device and dtype a bundle or run was measured on, and the check that
//!   they match.
//! - [`speed_response`]: how a profile's forwards answered the device's memory state.

pub mod atomic;
pub mod bundle;
pub mod csv;
pub mod device;
pub mod ids;
pub mod json;
pub mod json_schemas;
pub mod ops;
pub mod provenance;
pub mod records;
pub mod rundir;
pub mod schema;
pub mod specs;
pub mod speed_response;

pub use self::atomic::{write_atomic, write_atomic_with, AtomicFile};
pub use self::csv::{read_csv, write_csv, CsvWriter};
pub use self::ids::stable_id;
pub use self::json::{read_json, read_json_validated, to_json_string, write_json};
pub use self::rundir::{prepare, prepare_fresh, Prepared, RunLocation, Stage, StagingDir};
