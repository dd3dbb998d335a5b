//! One side of a comparison in memory, whatever produced it, and the checks that two sides
//! describe the same experiment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::io::provenance::RunMeta;
use crate::io::read_csv;
use crate::io::records::{BatchMetricsRow, BatchRequestRow, RequestMetricsRow, TokenMetricsRow};
use crate::io::rundir::require_complete;
use crate::io::schema::{BATCH_METRICS, BATCH_REQUESTS, REQUEST_METRICS, TOKEN_METRICS};
use crate::{Error, Result};

use super::interop;

/// What produced a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunSource {
    /// A schema-v1 run dir of this project (`real` or `vidur` stage).
    Simreal,
    /// A Vidur output directory (`request_metrics.csv` in seconds, no token rows).
    VidurOutput,
    /// A vLLM `benchmark_serving.py` / `vllm bench serve` result JSON.
    VllmBenchmark,
}

impl RunSource {
    /// Human-readable name for reports.
    pub fn describe(self) -> &'static str {
        match self {
            RunSource::Simreal => "simreal run dir",
            RunSource::VidurOutput => "Vidur output dir",
            RunSource::VllmBenchmark => "vLLM benchmark JSON",
        }
    }
}

/// What a run says about the experiment it belongs to; `None` where the source does not
/// record it (interop formats).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RunIdentity {
    /// The run id (our runs) or the file/dir name (interop).
    pub run_id: String,
    pub model: Option<String>,
    pub workload_id: Option<String>,
    /// KV blocks in the replica's pool.
    pub kv_blocks: Option<u64>,
    /// Tokens per KV block.
    pub block_size: Option<u64>,
}

/// One output token's timing (the timing columns of `token_metrics.csv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTime {
    pub request_id: u64,
    pub token_index: u32,
    pub token_time_ns: u64,
    /// Gap since the request's previous token; 0 for token 0.
    pub token_latency_ns: u64,
}

impl From<&TokenMetricsRow> for TokenTime {
    fn from(row: &TokenMetricsRow) -> Self {
        TokenTime {
            request_id: row.request_id,
            token_index: row.token_index,
            token_time_ns: row.token_time_ns,
            token_latency_ns: row.token_latency_ns,
        }
    }
}

/// Everything the comparison reads from one run.
#[derive(Debug, Clone)]
pub struct RunData {
    /// The path the run was loaded from.
    pub path: PathBuf,
    pub source: RunSource,
    /// `backend` of the rows (`candle_cpu`, `vidur_sim`, `vidur`, `vllm:<backend>`).
    pub backend: String,
    pub identity: RunIdentity,
    /// One row per request, ascending `request_id`.
    pub requests: Vec<RequestMetricsRow>,
    /// Token timings, or `None` when the source has none.
    pub tokens: Option<Vec<TokenTime>>,
    /// Engine iterations, or `None` when the source has none.
    pub batches: Option<Vec<BatchMetricsRow>>,
    /// Per-request shares of each iteration, or `None`.
    pub batch_requests: Option<Vec<BatchRequestRow>>,
    /// What the loader left out or approximated, one sentence each (repeated in the report).
    pub notes: Vec<String>,
}

impl RunData {
    /// A short label for tables: the run id.
    pub fn label(&self) -> &str {
        &self.identity.run_id
    }

    /// Arrival time of each request, by id.
    pub fn arrivals_ns(&self) -> BTreeMap<u64, u64> {
        self.requests
            .iter()
            .map(|r| (r.request_id, r.arrival_time_ns))
            .collect()
    }

    /// The token timings grouped by request, each group in token order; `None` when the
    /// run has no token rows.
    pub fn tokens_by_request(&self) -> Option<BTreeMap<u64, Vec<TokenTime>>> {
        let tokens = self.tokens.as_ref()?;
        let mut map: BTreeMap<u64, Vec<TokenTime>> = BTreeMap::new();
        for t in tokens {
            map.entry(t.request_id).or_default().push(*t);
        }
        for group in map.values_mut() {
            group.sort_by_key(|t| t.token_index);
        }
        Some(map)
    }
}

/// Loads a run from `path`, recognising its format:
///
/// * a directory with `run_meta.json` — a run of this project (must be complete);
/// * a directory whose `request_metrics.csv` has Vidur's `Request Id` column — Vidur output;
/// * a `.json` file — a vLLM benchmark result.
///
/// `reference` supplies arrival times for formats that do not record them (vLLM's JSON).
pub fn load_run(path: &Path, reference: Option<&RunData>, make_it: &str) -> Result<RunData> {
    if path.is_file() {
        return interop::load_vllm_json(path, reference);
    }
    if path.join("run_meta.json").is_file() || !path.join("request_metrics.csv").is_file() {
        return load_simreal(path, make_it);
    }
    if interop::is_vidur_request_metrics(&path.join("request_metrics.csv"))? {
        return interop::load_vidur_dir(path);
    }
    Err(Error::MissingInput {
        path: path.to_path_buf(),
        msg: "has a request_metrics.csv but no run_meta.json, and the CSV is not Vidur's".into(),
        hint: Some(
            "pass a run dir of this project, a Vidur output dir or a vLLM result JSON".into(),
        ),
    })
}

/// Loads a complete run dir of this project; `make_it` is the command that produces it.
pub fn load_simreal(dir: &Path, make_it: &str) -> Result<RunData> {
    require_complete(dir, "run", make_it)?;
    let meta = RunMeta::read(dir)?;
    let mut requests: Vec<RequestMetricsRow> =
        read_csv(dir.join(REQUEST_METRICS.file_name), &REQUEST_METRICS)?;
    requests.sort_by_key(|r| r.request_id);
    // A simulated run may leave token rows out (`vidur.token_metrics=false`).
    let tokens = read_optional::<TokenMetricsRow>(dir, &TOKEN_METRICS)?;
    let batches = read_optional::<BatchMetricsRow>(dir, &BATCH_METRICS)?;
    let batch_requests = read_optional::<BatchRequestRow>(dir, &BATCH_REQUESTS)?;
    let backend = requests
        .iter()
        .find_map(|r| r.backend.clone())
        .unwrap_or_else(|| meta.run_type.dir_name().to_string());
    let kv_pool = meta.extra.get("kv_pool");
    let identity = RunIdentity {
        run_id: meta.run_id.clone(),
        model: Some(meta.model.clone()),
        workload_id: meta.inputs.get("workload").map(|w| w.id.clone()),
        kv_blocks: kv_pool
            .and_then(|p| p.get("num_blocks"))
            .and_then(serde_json::Value::as_u64),
        block_size: kv_pool
            .and_then(|p| p.get("block_size"))
            .and_then(serde_json::Value::as_u64),
    };
    Ok(RunData {
        path: dir.to_path_buf(),
        source: RunSource::Simreal,
        backend,
        identity,
        requests,
        tokens: tokens.map(|t| t.iter().map(TokenTime::from).collect()),
        batches,
        batch_requests,
        notes: Vec::new(),
    })
}

fn read_optional<T: serde::de::DeserializeOwned>(
    dir: &Path,
    schema: &crate::io::schema::CsvSchema,
) -> Result<Option<Vec<T>>> {
    let path = dir.join(schema.file_name);
    if path.is_file() {
        read_csv(&path, schema).map(Some)
    } else {
        Ok(None)
    }
}

/// Refuses to compare runs of different experiments: a different model, workload or KV
/// pool (block count or block size) on any side where both record it. Per-request lengths
/// are checked by the join, which covers the interop formats too.
pub fn check_comparable(reference: &RunData, other: &RunData) -> Result<()> {
    let (a, b) = (&reference.identity, &other.identity);
    let mut problems = Vec::new();
    let mut check = |what: &str, x: Option<String>, y: Option<String>| {
        if let (Some(x), Some(y)) = (x, y) {
            if x != y {
                problems.push(format!("{what}: `{x}` vs `{y}`"));
            }
        }
    };
    check("model", a.model.clone(), b.model.clone());
    check("workload", a.workload_id.clone(), b.workload_id.clone());
    check(
        "KV blocks",
        a.kv_blocks.map(|v| v.to_string()),
        b.kv_blocks.map(|v| v.to_string()),
    );
    check(
        "KV block size",
        a.block_size.map(|v| v.to_string()),
        b.block_size.map(|v| v.to_string()),
    );
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::Mismatch(format!(
        "{} ({}) and {} ({}) are not runs of the same experiment — {}; compare runs made from the same workload, model and KV pool",
        reference.label(),
        reference.path.display(),
        other.label(),
        other.path.display(),
        problems.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, model: &str, workload: &str, blocks: u64) -> RunData {
        RunData {
            path: PathBuf::from(format!("tmp/{id}")),
            source: RunSource::Simreal,
            backend: "candle_cpu".into(),
            identity: RunIdentity {
                run_id: id.into(),
                model: Some(model.into()),
                workload_id: Some(workload.into()),
                kv_blocks: Some(blocks),
                block_size: Some(16),
            },
            requests: Vec::new(),
            tokens: None,
            batches: None,
            batch_requests: None,
            notes: Vec::new(),
        }
    }

    #[test]
    fn refuses_different_workload_model_or_kv_pool() {
        let real = run("real-a", "qwen3_tiny", "wl-1", 100);
        check_comparable(&real, &run("sim-a", "qwen3_tiny", "wl-1", 100)).unwrap();

        let err = check_comparable(&real, &run("sim-b", "qwen3_tiny", "wl-2", 100)).unwrap_err();
        assert!(matches!(err, Error::Mismatch(_)));
        assert!(
            err.to_string().contains("workload: `wl-1` vs `wl-2`"),
            "{err}"
        );

        let err = check_comparable(&real, &run("sim-c", "qwen3_0_6b", "wl-1", 100)).unwrap_err();
        assert!(
            err.to_string()
                .contains("model: `qwen3_tiny` vs `qwen3_0_6b`"),
            "{err}"
        );

        let err = check_comparable(&real, &run("sim-d", "qwen3_tiny", "wl-1", 64)).unwrap_err();
        assert!(
            err.to_string().contains("KV blocks: `100` vs `64`"),
            "{err}"
        );

        // A side that does not record a property (interop) is not refused for it.
        let mut vidur = run("vidur", "x", "y", 1);
        vidur.identity = RunIdentity {
            run_id: "vidur".into(),
            ..RunIdentity::default()
        };
        check_comparable(&real, &vidur).unwrap();
    }
}
