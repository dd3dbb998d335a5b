//! Vidur-format operator profiling bundles: reading, validating and writing.
//!
//! A bundle root holds (Vidur's layout and column names, so Vidur's own A100/H100 data loads
//! here and ours loads in Vidur):
//!
//! ```text
//! <root>/compute/<device>/<org>/<model>/mlp.csv          token-level ops, per layer
//! <root>/compute/<device>/<org>/<model>/attention.csv    decode / prefill attention, per layer
//! <root>/network/<name>/{all_reduce,send_recv}.csv       collectives (optional)
//! <root>/cpu_overhead/<device>/<org>/<model>/cpu_overheads.csv   (optional, ours)
//! <root>/profiling_meta.json                              (ours)
//! ```
//!
//! Times are `time_stats.<op>.{min,max,mean,median,std}` in milliseconds. One file may hold
//! several model configurations (e.g. TP degrees); a load selects one [`BundleModelSpec`].
//! Our own ops beyond Vidur's are extra, append-only `time_stats.<op>.*` columns; the loader
//! accepts both their absence (Vidur's files) and their presence (ours).
//!
//! Readers validate after reading and writers before writing; errors name the file, the
//! column and the row. Vidur's reference files repeat some grid points with different
//! values (e.g. `num_tokens` 2048 and 4096 in `mlp.csv`, 336 attention points): that is an
//! error under the default [`DuplicatePolicy::Reject`], and averaged under
//! [`DuplicatePolicy::Average`] (predictors average the medians of repeated points).

mod attention;
mod cpu_overhead;
mod meta;
mod mlp;
mod network;
mod stats;
mod table;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::io::ops::{Op, OpSet};
pub use attention::{read_attention_csv, write_attention_csv, AttentionRow, AttentionTable};
pub use cpu_overhead::{
    read_cpu_overheads_csv, write_cpu_overheads_csv, CpuOverheadRow, CpuOverheadTable,
    CpuOverheadTerm, MeanMedianMs,
};
pub use meta::{ProfilingMeta, PROFILING_META_SCHEMA_VERSION};
pub use mlp::{
    read_mlp_csv, write_mlp_csv, MlpRow, MlpTable, OpStatsSet, EXTRA_MLP_OPS, REQUIRED_MLP_OPS,
    VIDUR_MLP_OPS,
};
pub use network::{read_all_reduce_csv, read_send_recv_csv, NetworkRow, NetworkTable};
pub use stats::{OpStatistic, OpStats};

pub(crate) use meta::to_sorted_json;
pub(crate) use table::{parse_count, write_atomic};

use crate::{Error, Result};

/// The model configuration whose rows a load selects: Vidur's `mlp.csv` key columns
/// (`n_head`, `n_kv_head`, `n_embd`, `n_expanded_embd`, `vocab_size`, `use_gated_mlp`,
/// `num_tensor_parallel_workers`) plus `block_size` for `attention.csv` (where `n_head` is
/// called `n_q_head`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BundleModelSpec {
    pub n_head: u32,
    pub n_kv_head: u32,
    pub n_embd: u32,
    pub n_expanded_embd: u32,
    pub vocab_size: u32,
    pub use_gated_mlp: bool,
    pub num_tensor_parallel_workers: u32,
    /// KV-cache block size in tokens (attention rows only).
    pub block_size: u32,
}

impl BundleModelSpec {
    /// The `mlp.csv` key, for messages.
    pub(crate) fn mlp_key(&self) -> String {
        format!(
            "n_head={} n_kv_head={} n_embd={} n_expanded_embd={} vocab_size={} \
             use_gated_mlp={} tp={}",
            self.n_head,
            self.n_kv_head,
            self.n_embd,
            self.n_expanded_embd,
            self.vocab_size,
            self.use_gated_mlp,
            self.num_tensor_parallel_workers
        )
    }

    /// The `attention.csv` key in file order: n_embd, n_q_head, n_kv_head, block_size, TP.
    pub(crate) fn attention_tuple(&self) -> (u32, u32, u32, u32, u32) {
        (
            self.n_embd,
            self.n_head,
            self.n_kv_head,
            self.block_size,
            self.num_tensor_parallel_workers,
        )
    }
}

impl fmt::Display for BundleModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} block_size={}", self.mlp_key(), self.block_size)
    }
}

/// What to do with grid points measured more than once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DuplicatePolicy {
    /// A repeated grid point is an error (our profiler never writes one).
    #[default]
    Reject,
    /// Keep every row; predictors average the medians of a repeated point. Needed for
    /// Vidur's reference files.
    Average,
}

/// Where the CPU-overhead file is, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CpuOverheadSource {
    /// No CPU-overhead data (Vidur's default: it skips CPU-overhead modelling).
    #[default]
    None,
    /// `<root>/cpu_overhead/<device>/<org>/<model>/cpu_overheads.csv` (our bundles).
    Standard,
    /// An explicit file, e.g. Vidur's historical
    /// `cpu_overhead_historical/a100/cpu_overheads.csv`.
    File(PathBuf),
}

/// The files of one device/model inside a bundle root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleLocation {
    pub root: PathBuf,
    pub device: String,
    /// `<org>/<model>`, e.g. `meta-llama/Llama-2-70b-hf`; also the `model_name` selected in
    /// `cpu_overheads.csv`.
    pub model_name: String,
    /// `<name>` of `network/<name>/`, e.g. `a100_pairwise_nvlink`.
    pub network_device: Option<String>,
    pub cpu_overheads: CpuOverheadSource,
}

impl BundleLocation {
    /// A location without network or CPU-overhead files.
    pub fn new(
        root: impl Into<PathBuf>,
        device: impl Into<String>,
        model_name: impl Into<String>,
    ) -> BundleLocation {
        BundleLocation {
            root: root.into(),
            device: device.into(),
            model_name: model_name.into(),
            network_device: None,
            cpu_overheads: CpuOverheadSource::None,
        }
    }

    /// Reads `<root>/profiling_meta.json` and builds the location it describes.
    pub fn from_meta(root: impl Into<PathBuf>) -> Result<(BundleLocation, ProfilingMeta)> {
        let root = root.into();
        let meta = ProfilingMeta::read(&root.join(META_FILE))?;
        let location = BundleLocation {
            network_device: meta.network_device.clone(),
            cpu_overheads: if meta.has_cpu_overheads {
                CpuOverheadSource::Standard
            } else {
                CpuOverheadSource::None
            },
            ..BundleLocation::new(root, &meta.device, &meta.model_name)
        };
        Ok((location, meta))
    }

    /// Sets the `network/<name>` directory.
    pub fn with_network(mut self, name: impl Into<String>) -> BundleLocation {
        self.network_device = Some(name.into());
        self
    }

    /// Sets where CPU overheads come from.
    pub fn with_cpu_overheads(mut self, source: CpuOverheadSource) -> BundleLocation {
        self.cpu_overheads = source;
        self
    }

    fn model_dir(&self, kind: &str) -> PathBuf {
        let mut dir = self.root.join(kind).join(&self.device);
        // `org/model` becomes two path components on every platform.
        for part in self.model_name.split('/') {
            dir.push(part);
        }
        dir
    }

    /// `<root>/compute/<device>/<org>/<model>/mlp.csv`.
    pub fn mlp_csv(&self) -> PathBuf {
        self.model_dir("compute").join("mlp.csv")
    }

    /// `<root>/compute/<device>/<org>/<model>/attention.csv`.
    pub fn attention_csv(&self) -> PathBuf {
        self.model_dir("compute").join("attention.csv")
    }

    /// `<root>/network/<name>/all_reduce.csv`, if a network is set.
    pub fn all_reduce_csv(&self) -> Option<PathBuf> {
        self.network_device
            .as_ref()
            .map(|n| self.root.join("network").join(n).join("all_reduce.csv"))
    }

    /// `<root>/network/<name>/send_recv.csv`, if a network is set.
    pub fn send_recv_csv(&self) -> Option<PathBuf> {
        self.network_device
            .as_ref()
            .map(|n| self.root.join("network").join(n).join("send_recv.csv"))
    }

    /// The CPU-overhead file per [`CpuOverheadSource`].
    pub fn cpu_overheads_csv(&self) -> Option<PathBuf> {
        match &self.cpu_overheads {
            CpuOverheadSource::None => None,
            CpuOverheadSource::Standard => {
                Some(self.model_dir("cpu_overhead").join("cpu_overheads.csv"))
            }
            CpuOverheadSource::File(p) => Some(p.clone()),
        }
    }

    /// `<root>/profiling_meta.json`.
    pub fn meta_json(&self) -> PathBuf {
        self.root.join(META_FILE)
    }

    fn check(&self) -> Result<()> {
        let bad = |s: &str| s.is_empty() || s.split('/').any(|p| p.is_empty() || p == "..");
        if bad(&self.device) || bad(&self.model_name) || self.device.contains('/') {
            return Err(Error::InvalidInput(format!(
                "bundle device `{}` / model `{}`: expected `<device>` and `<org>/<model>` \
                 path components",
                self.device, self.model_name
            )));
        }
        Ok(())
    }
}

const META_FILE: &str = "profiling_meta.json";

/// How to load a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    pub duplicates: DuplicatePolicy,
    /// Pipeline stages of the deployment to predict; `send_recv.csv` is loaded when > 1.
    pub pipeline_stages: u32,
    /// `devices_per_node` of the send/recv rows to use: Vidur takes 1 when the pipeline spans
    /// nodes and 2 otherwise.
    pub send_recv_devices_per_node: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            duplicates: DuplicatePolicy::Reject,
            pipeline_stages: 1,
            send_recv_devices_per_node: 2,
        }
    }
}

impl LoadOptions {
    /// Options for Vidur's own reference files, which repeat grid points.
    pub fn vidur_reference() -> LoadOptions {
        LoadOptions {
            duplicates: DuplicatePolicy::Average,
            ..LoadOptions::default()
        }
    }
}

/// One model configuration's profiling data, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Bundle {
    pub location: BundleLocation,
    pub spec: BundleModelSpec,
    pub mlp: MlpTable,
    pub attention: AttentionTable,
    /// Present when TP > 1.
    pub all_reduce: Option<NetworkTable>,
    /// Present when the load asked for more than one pipeline stage.
    pub send_recv: Option<NetworkTable>,
    pub cpu_overheads: Option<CpuOverheadTable>,
    /// `profiling_meta.json`, when the bundle has one.
    pub meta: Option<ProfilingMeta>,
}

impl Bundle {
    /// Loads the rows of `spec`. `all_reduce.csv` is required when TP > 1, `send_recv.csv`
    /// when `options.pipeline_stages > 1`, the CPU-overhead file whenever the location names
    /// one; `profiling_meta.json` is read if present.
    pub fn load(
        location: &BundleLocation,
        spec: &BundleModelSpec,
        options: &LoadOptions,
    ) -> Result<Bundle> {
        location.check()?;
        let dup = options.duplicates;
        let mlp = read_mlp_csv(&location.mlp_csv(), spec, dup)?;
        let attention = read_attention_csv(&location.attention_csv(), spec, dup)?;
        let need_network = |path: Option<PathBuf>, what: &str| -> Result<PathBuf> {
            path.ok_or_else(|| Error::MissingInput {
                path: location.root.join("network"),
                msg: format!("{what} needs network timings but no network directory is set"),
                hint: Some("set BundleLocation::with_network(<name>)".into()),
            })
        };
        let all_reduce = if spec.num_tensor_parallel_workers > 1 {
            let path = need_network(location.all_reduce_csv(), "tensor parallelism")?;
            Some(read_all_reduce_csv(
                &path,
                spec.num_tensor_parallel_workers,
                dup,
            )?)
        } else {
            None
        };
        let send_recv = if options.pipeline_stages > 1 {
            let path = need_network(location.send_recv_csv(), "pipeline parallelism")?;
            Some(read_send_recv_csv(
                &path,
                options.send_recv_devices_per_node,
                dup,
            )?)
        } else {
            None
        };
        let cpu_overheads = location
            .cpu_overheads_csv()
            .map(|path| {
                read_cpu_overheads_csv(
                    &path,
                    &location.model_name,
                    spec.num_tensor_parallel_workers,
                    dup,
                )
            })
            .transpose()?;
        let meta_path = location.meta_json();
        let meta = if meta_path.exists() {
            Some(ProfilingMeta::read(&meta_path)?)
        } else {
            None
        };
        Ok(Bundle {
            location: location.clone(),
            spec: *spec,
            mlp,
            attention,
            all_reduce,
            send_recv,
            cpu_overheads,
            meta,
        })
    }

    /// Whether the bundle has timings for `op`.
    pub fn has_op(&self, op: Op) -> bool {
        match op {
            Op::AttnPrefill | Op::AttnDecode => true,
            Op::AttnKvCacheSave => self
                .attention
                .rows
                .iter()
                .any(|r| r.kv_cache_save.is_some()),
            Op::AllReduce => self.all_reduce.is_some(),
            Op::SendRecv => self.send_recv.is_some(),
            op => self
                .mlp
                .rows
                .first()
                .is_some_and(|r| r.ops.get(op).is_some()),
        }
    }
}

/// Writes the files of a bundle in Vidur's layout under one [`BundleLocation`]. Every method
/// validates before writing and writes atomically; it returns the path written.
#[derive(Clone, Debug)]
pub struct BundleWriter {
    location: BundleLocation,
}

impl BundleWriter {
    /// A writer for `location` (CPU overheads go to the standard path unless the location
    /// names a file).
    pub fn new(location: BundleLocation) -> Result<BundleWriter> {
        location.check()?;
        Ok(BundleWriter { location })
    }

    /// The location written to.
    pub fn location(&self) -> &BundleLocation {
        &self.location
    }

    /// Writes `mlp.csv` (see [`write_mlp_csv`]).
    pub fn write_mlp(&self, tables: &[MlpTable]) -> Result<PathBuf> {
        let path = self.location.mlp_csv();
        write_mlp_csv(&path, tables)?;
        Ok(path)
    }

    /// Writes `attention.csv` (see [`write_attention_csv`]).
    pub fn write_attention(&self, tables: &[AttentionTable]) -> Result<PathBuf> {
        let path = self.location.attention_csv();
        write_attention_csv(&path, tables)?;
        Ok(path)
    }

    /// Writes `cpu_overheads.csv` (see [`write_cpu_overheads_csv`]); each table's
    /// `model_name` should be the location's so that [`Bundle::load`] selects it.
    pub fn write_cpu_overheads(&self, tables: &[CpuOverheadTable]) -> Result<PathBuf> {
        let path = match &self.location.cpu_overheads {
            CpuOverheadSource::File(p) => p.clone(),
            _ => self
                .location
                .model_dir("cpu_overhead")
                .join("cpu_overheads.csv"),
        };
        write_cpu_overheads_csv(&path, tables)?;
        Ok(path)
    }

    /// Writes `profiling_meta.json`; its device and model must match the location.
    pub fn write_meta(&self, meta: &ProfilingMeta) -> Result<PathBuf> {
        if meta.device != self.location.device || meta.model_name != self.location.model_name {
            return Err(Error::Mismatch(format!(
                "profiling_meta names {}/{} but the bundle location is {}/{}",
                meta.device, meta.model_name, self.location.device, self.location.model_name
            )));
        }
        let path = self.location.meta_json();
        meta.write(&path)?;
        Ok(path)
    }
}
