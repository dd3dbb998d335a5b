//! `profiling_meta.json`: what a bundle of ours holds, so it can be loaded from its root alone.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::table::write_atomic;
use super::BundleModelSpec;
use crate::error::IoContext;
use crate::io::device::DeviceIdentity;
use crate::{Error, Result};

/// The schema version this code reads and writes.
pub const PROFILING_META_SCHEMA_VERSION: u32 = 1;

/// Contents of `profiling_meta.json` at a bundle's root (our bundles only; Vidur's have none).
/// Fields are append-only; unknown fields from newer writers are ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfilingMeta {
    pub schema_version: u32,
    /// `<device>` path component under `compute/`.
    pub device: String,
    /// `<org>/<model>` path components under `compute/<device>/`.
    pub model_name: String,
    /// `<name>` under `network/`, if collectives were profiled.
    #[serde(default)]
    pub network_device: Option<String>,
    /// Whether `cpu_overhead/<device>/<org>/<model>/cpu_overheads.csv` exists.
    #[serde(default)]
    pub has_cpu_overheads: bool,
    /// The model configurations profiled (one per TP degree).
    pub models: Vec<BundleModelSpec>,
    /// Names of the ops with data (see [`super::Op`]).
    #[serde(default)]
    pub ops: Vec<String>,
    /// Free-form provenance the profiler adds (dtype, threads, iterations, host, ...).
    #[serde(default)]
    pub details: BTreeMap<String, serde_json::Value>,
    /// The device and dtype the ops were timed on; absent in bundles profiled before it
    /// was recorded (see [`ProfilingMeta::device_identity`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_on: Option<DeviceIdentity>,
}

impl ProfilingMeta {
    /// Reads and validates `path`.
    pub fn read(path: &Path) -> Result<ProfilingMeta> {
        let text = std::fs::read_to_string(path).with_path(path)?;
        let de = &mut serde_json::Deserializer::from_str(&text);
        let meta: ProfilingMeta = serde_path_to_error::deserialize(de)
            .map_err(|e| Error::parse(path, format!("at `{}`: {}", e.path(), e.inner())))?;
        if meta.schema_version != PROFILING_META_SCHEMA_VERSION {
            return Err(Error::SchemaMismatch {
                path: path.to_path_buf(),
                msg: format!(
                    "schema_version {} is not the supported {PROFILING_META_SCHEMA_VERSION}",
                    meta.schema_version
                ),
            });
        }
        Ok(meta)
    }

    /// The device the bundle was measured on: as recorded, or for an older bundle of ours
    /// the CPU at its `details.dtype` ([`DeviceIdentity::of_legacy_bundle`]).
    pub fn device_identity(&self) -> Option<DeviceIdentity> {
        self.measured_on
            .clone()
            .or_else(|| DeviceIdentity::of_legacy_bundle(&self.device, &self.details))
    }

    /// Writes `path` atomically: sorted keys, 2-space indent, trailing newline.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, to_sorted_json(path, self)?.as_bytes())
    }
}

/// Pretty JSON with keys sorted at every level (via `serde_json::Value`, whose maps are
/// ordered) and a trailing newline: the repository's JSON convention.
pub(crate) fn to_sorted_json<T: Serialize>(path: &Path, value: &T) -> Result<String> {
    let v = serde_json::to_value(value).map_err(|e| Error::parse(path, e.to_string()))?;
    let mut s = serde_json::to_string_pretty(&v).map_err(|e| Error::parse(path, e.to_string()))?;
    s.push('\n');
    Ok(s)
}
