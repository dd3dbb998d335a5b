//! The `workload` stage: generate a workload and write it in the contract's files, and the
//! reader the other stages use to load one back.
//!
//! `tmp/workload/<workload_id>/`: `trace_lengths.csv`, `trace_intervals.csv`,
//! `workload_meta.json`, `config.yaml`, `run_meta.json`, `_SUCCESS`, and `prompts.jsonl`.
//!
//! **Prompt texts are materialized on first use.** They are a pure function of what the dir
//! already records (each request's prompt length, `seed`, the tokenizer `tokenizer_ref`
//! names), cost more to make than everything else (exact-token texts: 110 MB and seconds for
//! 19 k requests), and only the real engine reads them. So the stage leaves `prompts.jsonl`
//! out, and [`LoadedWorkload::read_prompts`] writes it — atomically, byte for byte what the
//! stage would have written — the first time a consumer asks, then reads it like any other
//! file. A complete dir is thus complete either way: its prompts are fixed when `_SUCCESS`
//! is written, whether or not their text is on disk yet. `output.eager_prompts=true` makes the
//! stage write them itself (for readers outside this project).

#[cfg(feature = "prompts")]
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::types::resolve_input_path;
use crate::config::SimrealConfig;
use crate::error::IoContext;
use crate::io::json_schemas::{contract_schema, Contract};
use crate::io::provenance::{utc_now, HydraInfo, InputRef};
#[cfg(feature = "prompts")]
use crate::io::records::PromptRecord;
use crate::io::records::{TraceIntervalRow, TraceLengthRow};
use crate::io::rundir::{require_complete, Stage};
use crate::io::schema::{SCHEMA_VERSION, TRACE_INTERVALS, TRACE_LENGTHS};
#[cfg(feature = "prompts")]
use crate::io::AtomicFile;
use crate::io::{read_csv, read_json_validated, write_csv, write_json};
use crate::stages::Job;
use crate::workloads::{replay_trace, RequestLengths, TokenizerSource, Workload, WorkloadSummary};
#[cfg(feature = "prompts")]
use crate::workloads::{PromptSpec, PromptSynthesizer, Tokenizer};
use crate::{Error, Result};

/// File names inside a workload dir.
/// Name of the workload's prompts file.
pub const PROMPTS_FILE: &str = "prompts.jsonl";
/// Name of the workload's metadata file.
pub const META_FILE: &str = "workload_meta.json";

/// Relative paths of a workload's files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkloadPaths {
    /// `prompts.jsonl`
    pub prompts: String,
    /// `trace_lengths.csv`
    pub trace_lengths: String,
    /// `trace_intervals.csv`
    pub trace_intervals: String,
}

/// `workload_meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkloadMeta {
    /// Contract version (1).
    #[schemars(extend("const" = SCHEMA_VERSION))]
    pub schema_version: u32,
    /// Stable id = the directory name.
    pub workload_id: String,
    /// Model option the workload was made for (context, tokenizer).
    pub model: String,
    /// `workload.seed`.
    pub seed: u64,
    /// Which tokenizer the prompt lengths are measured with.
    pub tokenizer_ref: String,
    /// UTC creation time.
    pub created_at: String,
    /// Commit of the code that made it, if known.
    pub git_commit: Option<String>,
    /// The data files, relative to the workload dir.
    pub paths: WorkloadPaths,
    /// The composed config that made it.
    pub hydra: HydraInfo,
    /// The resolved config (with computed properties).
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub params: serde_json::Value,
    /// Requests in the workload.
    #[schemars(range(min = 1))]
    pub num_requests: usize,
    /// Length and arrival statistics.
    pub summary: WorkloadSummary,
}

impl WorkloadMeta {
    /// The JSON Schema of `workload_meta.json`, as readers accept it.
    pub fn schema() -> serde_json::Value {
        contract_schema::<WorkloadMeta>(
            Contract::Read,
            META_FILE,
            "what a workload is and how it was made",
        )
    }
}

/// Where the tokenizer a config names comes from.
pub fn tokenizer_source(cfg: &SimrealConfig) -> TokenizerSource {
    match &cfg.model.tokenizer {
        Some(path) => TokenizerSource::File(resolve_input_path(path)),
        None => TokenizerSource::BundledQwen3,
    }
}

/// The tokenizer a config names.
#[cfg(feature = "prompts")]
pub fn load_tokenizer(cfg: &SimrealConfig) -> Result<Tokenizer> {
    Tokenizer::load(&tokenizer_source(cfg))
}

/// Synthesizes the prompts of `specs` and writes them as `prompts.jsonl` (one compact JSON
/// object per line, in request order), atomically. The one writer of the file, so the stage
/// and a later materialization give the same bytes.
#[cfg(feature = "prompts")]
fn write_prompts(
    path: &Path,
    specs: &[PromptSpec],
    seed: u64,
    tokenizer: &Tokenizer,
) -> Result<()> {
    let prompts = PromptSynthesizer::new(tokenizer)?.synthesize_all(specs, seed)?;
    let mut file = AtomicFile::create(path)?;
    for p in prompts {
        let record = PromptRecord {
            prompt_id: p.prompt_id,
            text: p.text,
            num_tokens: p.num_tokens,
        };
        let line = serde_json::to_string(&record)
            .map_err(|e| Error::InvalidInput(format!("prompt {}: {e}", record.prompt_id)))?;
        writeln!(file, "{line}").with_path(path)?;
    }
    file.commit()
}

/// Writes the prompts now (`output.eager_prompts=true`) and returns the tokenizer's reference.
#[cfg(feature = "prompts")]
fn write_eager_prompts(cfg: &SimrealConfig, workload: &Workload, path: &Path) -> Result<String> {
    let tokenizer = load_tokenizer(cfg)?;
    write_prompts(
        path,
        &workload.prompt_specs(),
        cfg.workload.seed,
        &tokenizer,
    )?;
    Ok(tokenizer.reference().to_string())
}

#[cfg(not(feature = "prompts"))]
fn write_eager_prompts(_: &SimrealConfig, _: &Workload, _: &Path) -> Result<String> {
    Err(Error::NotBuilt {
        what: "`output.eager_prompts=true` (prompt texts)".into(),
        feature: "prompts",
    })
}

/// The in-memory workload a config describes (no prompts yet).
pub fn build_workload(cfg: &SimrealConfig) -> Result<Workload> {
    let w = &cfg.workload;
    let context = cfg.model.max_model_len;
    match (&w.trace_replay, &w.lengths, &w.intervals) {
        (Some(replay), _, _) => {
            let mut replay = replay.clone();
            replay.trace_file = resolve_input_path(&replay.trace_file);
            replay_trace(&replay, Some(w.num_requests as usize), context)
        }
        (None, Some(lengths), Some(intervals)) => Workload::synthetic(
            lengths,
            intervals,
            w.qps.unwrap_or(0.0),
            w.num_requests as usize,
            w.seed,
            context,
        ),
        _ => Err(Error::config(
            "workload",
            "set workload.lengths and workload.intervals, or workload.trace_replay",
        )),
    }
}

/// Runs the stage for one job; returns the workload dir.
pub fn run(job: &Job) -> Result<PathBuf> {
    let cfg = &job.config;
    let workload_id = job.own_run_id(cfg.workload_id()?);
    let location = cfg.location(Stage::Workload, workload_id.clone());
    job.write_run(&location, &workload_id, |staging, run_meta| {
        let workload = build_workload(cfg)?;
        let tokenizer_ref = if cfg.output.eager_prompts {
            write_eager_prompts(cfg, &workload, &staging.file(PROMPTS_FILE))?
        } else {
            tokenizer_source(cfg).reference()?
        };

        let lengths: Vec<TraceLengthRow> = workload
            .lengths
            .iter()
            .zip(0u64..)
            .map(|(l, id)| TraceLengthRow {
                request_id: id,
                prompt_id: id,
                num_prefill_tokens: l.num_prefill_tokens,
                num_decode_tokens: l.num_decode_tokens,
            })
            .collect();
        write_csv(
            staging.file(TRACE_LENGTHS.file_name),
            &TRACE_LENGTHS,
            &lengths,
        )?;
        let intervals: Vec<TraceIntervalRow> = workload
            .inter_arrivals_ns()
            .into_iter()
            .zip(&workload.arrivals_ns)
            .zip(0u64..)
            .map(|((gap, &t), id)| TraceIntervalRow {
                request_id: id,
                inter_arrival_ns: gap,
                arrival_time_ns: t,
            })
            .collect();
        write_csv(
            staging.file(TRACE_INTERVALS.file_name),
            &TRACE_INTERVALS,
            &intervals,
        )?;

        let summary = workload.summary()?;
        let meta = WorkloadMeta {
            schema_version: SCHEMA_VERSION,
            workload_id: workload_id.clone(),
            model: cfg.model.name.clone(),
            seed: cfg.workload.seed,
            tokenizer_ref,
            created_at: utc_now(),
            git_commit: run_meta.git_commit.clone(),
            paths: WorkloadPaths {
                prompts: PROMPTS_FILE.into(),
                trace_lengths: TRACE_LENGTHS.file_name.into(),
                trace_intervals: TRACE_INTERVALS.file_name.into(),
            },
            hydra: job.hydra(),
            params: job.params()?,
            num_requests: workload.len(),
            summary,
        };
        write_json(staging.file(META_FILE), &meta)?;

        run_meta.seed = Some(cfg.workload.seed);
        if let Some(replay) = &cfg.workload.trace_replay {
            let path = resolve_input_path(&replay.trace_file);
            let bytes = std::fs::read(&path).with_path(&path)?;
            run_meta.inputs.insert(
                "trace_file".into(),
                InputRef::file(
                    path.display().to_string(),
                    path.display().to_string(),
                    Some(crate::io::ids::sha256_hex(&bytes)),
                ),
            );
        }
        run_meta.extra =
            serde_json::json!({"summary": summary, "tokenizer_ref": meta.tokenizer_ref});

        print_summary(&workload_id, &summary);
        Ok(())
    })
}

fn print_summary(id: &str, s: &WorkloadSummary) {
    eprintln!(
        "workload {id}: {} requests over {:.2} s{}; prompt tokens min/p50/p90/max {}/{:.0}/{:.0}/{}; output tokens {}/{:.0}/{:.0}/{}",
        s.num_requests,
        s.duration_ns as f64 / 1e9,
        s.mean_rate_rps
            .map(|r| format!(" ({r:.3} req/s)"))
            .unwrap_or_default(),
        s.prefill_tokens.min,
        s.prefill_tokens.p50,
        s.prefill_tokens.p90,
        s.prefill_tokens.max,
        s.decode_tokens.min,
        s.decode_tokens.p50,
        s.decode_tokens.p90,
        s.decode_tokens.max,
    );
}

/// One request of a loaded workload.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadRequest {
    /// 0..N-1.
    pub request_id: u64,
    /// Arrival relative to the trace's origin.
    pub arrival_time_ns: u64,
    /// Prompt and output tokens.
    pub lengths: RequestLengths,
}

/// A workload read back from its directory, validated.
#[derive(Debug, Clone)]
pub struct LoadedWorkload {
    /// The workload dir.
    pub dir: PathBuf,
    /// Its `workload_meta.json`.
    pub meta: WorkloadMeta,
    /// Requests in id order.
    pub requests: Vec<WorkloadRequest>,
}

impl LoadedWorkload {
    /// Reads the workload this job's config names; a missing or incomplete dir is an error
    /// that says which command makes it.
    pub fn for_job(job: &Job) -> Result<Self> {
        let dir = job.config.workload_dir()?;
        require_complete(&dir, "workload", &job.command_for(Stage::Workload))?;
        let loaded = Self::read(&dir)?;
        let expected = job.config.workload_id()?;
        if loaded.meta.workload_id != expected {
            return Err(Error::Mismatch(format!(
                "{} holds workload `{}` but this config's workload is `{expected}`",
                dir.display(),
                loaded.meta.workload_id
            )));
        }
        Ok(loaded)
    }

    /// Reads and cross-checks a complete workload dir.
    pub fn read(dir: &Path) -> Result<Self> {
        require_complete(dir, "workload", "cargo run --release --bin workload")?;
        let meta: WorkloadMeta = read_json_validated(dir.join(META_FILE), &WorkloadMeta::schema())?;
        let lengths_path = dir.join(TRACE_LENGTHS.file_name);
        let intervals_path = dir.join(TRACE_INTERVALS.file_name);
        let lengths: Vec<TraceLengthRow> = read_csv(&lengths_path, &TRACE_LENGTHS)?;
        let intervals: Vec<TraceIntervalRow> = read_csv(&intervals_path, &TRACE_INTERVALS)?;
        if lengths.len() != meta.num_requests || intervals.len() != meta.num_requests {
            return Err(Error::SchemaMismatch {
                path: dir.to_path_buf(),
                msg: format!(
                    "{META_FILE} says {} requests but {} has {} rows and {} has {}",
                    meta.num_requests,
                    TRACE_LENGTHS.file_name,
                    lengths.len(),
                    TRACE_INTERVALS.file_name,
                    intervals.len()
                ),
            });
        }
        let mut requests = Vec::with_capacity(lengths.len());
        let mut arrival_sum = 0u64;
        for (i, (l, t)) in lengths.iter().zip(&intervals).enumerate() {
            let row = i + 1;
            let bad = |path: &Path, column: &str, msg: String| Error::InvalidValue {
                path: path.to_path_buf(),
                row,
                column: column.into(),
                msg,
            };
            if l.request_id != i as u64 {
                return Err(bad(
                    &lengths_path,
                    "request_id",
                    format!("expected {i}, found {}", l.request_id),
                ));
            }
            if t.request_id != i as u64 {
                return Err(bad(
                    &intervals_path,
                    "request_id",
                    format!("expected {i}, found {}", t.request_id),
                ));
            }
            arrival_sum += t.inter_arrival_ns;
            if t.arrival_time_ns != arrival_sum {
                return Err(bad(
                    &intervals_path,
                    "arrival_time_ns",
                    format!(
                        "{} is not the running sum of inter_arrival_ns ({arrival_sum})",
                        t.arrival_time_ns
                    ),
                ));
            }
            if l.num_prefill_tokens == 0 || l.num_decode_tokens == 0 {
                return Err(bad(
                    &lengths_path,
                    "num_prefill_tokens",
                    "token counts must be >= 1".into(),
                ));
            }
            requests.push(WorkloadRequest {
                request_id: l.request_id,
                arrival_time_ns: t.arrival_time_ns,
                lengths: RequestLengths {
                    num_prefill_tokens: l.num_prefill_tokens,
                    num_decode_tokens: l.num_decode_tokens,
                },
            });
        }
        Ok(LoadedWorkload {
            dir: dir.to_path_buf(),
            meta,
            requests,
        })
    }

    /// Reads `prompts.jsonl`, checking one prompt per request with the recorded length;
    /// materializes the file first if it is not there yet (see the module docs).
    /// `tokenizer` must be the one the workload was made for (`tokenizer_ref`).
    #[cfg(feature = "prompts")]
    pub fn read_prompts(&self, tokenizer: &Tokenizer) -> Result<Vec<PromptRecord>> {
        if tokenizer.reference() != self.meta.tokenizer_ref {
            return Err(Error::Mismatch(format!(
                "workload {} was made with tokenizer `{}`, not `{}`",
                self.dir.display(),
                self.meta.tokenizer_ref,
                tokenizer.reference()
            )));
        }
        let path = self.dir.join(&self.meta.paths.prompts);
        if !path.is_file() {
            let specs: Vec<PromptSpec> = self
                .requests
                .iter()
                .map(|r| PromptSpec {
                    prompt_id: r.request_id,
                    num_tokens: r.lengths.num_prefill_tokens,
                })
                .collect();
            write_prompts(&path, &specs, self.meta.seed, tokenizer)?;
        }
        let file = std::fs::File::open(&path).with_path(&path)?;
        let mut prompts = Vec::with_capacity(self.requests.len());
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_path(&path)?;
            let record: PromptRecord = serde_json::from_str(&line)
                .map_err(|e| Error::parse(&path, format!("line {}: {e}", i + 1)))?;
            prompts.push(record);
        }
        if prompts.len() != self.requests.len() {
            return Err(Error::SchemaMismatch {
                path,
                msg: format!(
                    "{} prompts for {} requests",
                    prompts.len(),
                    self.requests.len()
                ),
            });
        }
        for (req, p) in self.requests.iter().zip(&prompts) {
            if p.prompt_id != req.request_id || p.num_tokens != req.lengths.num_prefill_tokens {
                return Err(Error::SchemaMismatch {
                    path: path.clone(),
                    msg: format!(
                        "prompt {} has {} tokens but request {} needs {}",
                        p.prompt_id, p.num_tokens, req.request_id, req.lengths.num_prefill_tokens
                    ),
                });
            }
        }
        Ok(prompts)
    }
}
