//! Reading the field's own tools: Vidur's output directory and vLLM's serving-benchmark
//! result JSON, mapped onto schema v1 so that either can stand on one side of a comparison.
//!
//! * **Vidur** (`simulator_output/<timestamp>/request_metrics.csv`, one row per request keyed
//!   by `Request Id`, times in seconds). Vidur records no absolute times, so arrivals are
//!   rebuilt as the running sum of `request_inter_arrival_delay` (empty for the first
//!   request, which is placed at t = 0, the origin of our traces). Then first token =
//!   arrival + `prefill_e2e_time`, completion = arrival + `request_e2e_time`, first
//!   scheduled = arrival + `request_scheduling_delay`, and TPOT follows DESIGN.md
//!   ((completion − first token) / (D − 1)), not Vidur's
//!   `decode_time_execution_plus_preemption_normalized` (which divides by D). Vidur writes no
//!   per-token rows, so token-level comparisons (ITL, token times) are omitted, and said so.
//! * **vLLM** (`benchmark_serving.py --save-result --save-detailed`, or `vllm bench serve`):
//!   per request `ttfts` (s), `itls` (list of s), `input_lens`, `output_lens` and `errors`, in
//!   the order requests were sent. Request `i` is our request `i`. The JSON has no arrival
//!   times; they are taken from the other side of the comparison (same request id), so TTFT,
//!   TPOT, ITL and E2E (= TTFT + Σ ITL, vLLM's own latency) compare exactly while absolute
//!   token times are only as aligned as the two arrival processes. vLLM measures no queue
//!   delay. A request whose stream bundled several tokens into one chunk (fewer ITLs than
//!   output tokens − 1) keeps its request metrics but has no token rows.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::IoContext;
use crate::io::records::{RequestMetricsRow, RequestTimes};
use crate::{Error, Result};

use super::runs::{RunData, RunIdentity, RunSource, TokenTime};

/// Vidur's request key column.
pub const VIDUR_REQUEST_ID: &str = "Request Id";

/// Whether a `request_metrics.csv` is Vidur's (keyed by `Request Id`).
pub fn is_vidur_request_metrics(path: &Path) -> Result<bool> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| Error::parse(path, e.to_string()))?;
    let headers = reader
        .headers()
        .map_err(|e| Error::parse(path, e.to_string()))?;
    Ok(headers.iter().any(|h| h == VIDUR_REQUEST_ID))
}

/// Seconds (a float) to integer nanoseconds, rejecting negative or non-finite values.
fn seconds_to_ns(path: &Path, row: usize, column: &str, seconds: f64) -> Result<u64> {
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(Error::InvalidValue {
            path: path.to_path_buf(),
            row,
            column: column.to_string(),
            msg: format!("{seconds} is not a non-negative time in seconds"),
        });
    }
    Ok((seconds * 1e9).round() as u64)
}

/// The columns of Vidur's `request_metrics.csv` this mapping reads.
struct VidurColumns {
    id: usize,
    e2e: usize,
    ttft: usize,
    scheduling_delay: usize,
    inter_arrival: usize,
    prefill_tokens: usize,
    decode_tokens: usize,
    restarts: Option<usize>,
}

impl VidurColumns {
    fn locate(path: &Path, headers: &csv::StringRecord) -> Result<Self> {
        let find = |name: &str| -> Result<usize> {
            headers
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| Error::ColumnNotFound {
                    path: path.to_path_buf(),
                    column: name.to_string(),
                    hint: Some(
                        "expected Vidur's request_metrics.csv (store_request_metrics on)".into(),
                    ),
                })
        };
        Ok(VidurColumns {
            id: find(VIDUR_REQUEST_ID)?,
            e2e: find("request_e2e_time")?,
            ttft: find("prefill_e2e_time")?,
            scheduling_delay: find("request_scheduling_delay")?,
            inter_arrival: find("request_inter_arrival_delay")?,
            prefill_tokens: find("request_num_prefill_tokens")?,
            decode_tokens: find("request_num_decode_tokens")?,
            restarts: find("request_num_restarts").ok(),
        })
    }
}

/// One parsed Vidur row; times in seconds, `None` where pandas' outer join left a gap.
struct VidurRow {
    request_id: u64,
    e2e_s: Option<f64>,
    ttft_s: Option<f64>,
    scheduling_delay_s: Option<f64>,
    inter_arrival_s: Option<f64>,
    num_prefill_tokens: u32,
    num_decode_tokens: u32,
    num_restarts: u32,
}

fn parse_f64(path: &Path, row: usize, column: &str, field: &str) -> Result<Option<f64>> {
    let field = field.trim();
    if field.is_empty() || field.eq_ignore_ascii_case("nan") {
        return Ok(None);
    }
    field
        .parse::<f64>()
        .map(Some)
        .map_err(|_| Error::InvalidValue {
            path: path.to_path_buf(),
            row,
            column: column.to_string(),
            msg: format!("`{field}` is not a number"),
        })
}

/// pandas writes integer columns with gaps as floats (`12.0`): accept integral floats.
fn parse_count(path: &Path, row: usize, column: &str, field: &str) -> Result<u64> {
    let value = parse_f64(path, row, column, field)?.ok_or_else(|| Error::InvalidValue {
        path: path.to_path_buf(),
        row,
        column: column.to_string(),
        msg: "empty value".into(),
    })?;
    if value < 0.0 || value.fract() != 0.0 || value > u32::MAX as f64 {
        return Err(Error::InvalidValue {
            path: path.to_path_buf(),
            row,
            column: column.to_string(),
            msg: format!("`{field}` is not a non-negative integer"),
        });
    }
    Ok(value as u64)
}

/// Loads a Vidur output directory (`request_metrics.csv`, optionally `config.json`).
pub fn load_vidur_dir(dir: &Path) -> Result<RunData> {
    let path = dir.join("request_metrics.csv");
    let mut reader =
        csv::Reader::from_path(&path).map_err(|e| Error::parse(&path, e.to_string()))?;
    let headers = reader
        .headers()
        .map_err(|e| Error::parse(&path, e.to_string()))?
        .clone();
    let cols = VidurColumns::locate(&path, &headers)?;
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let row = i + 1;
        let record = record.map_err(|e| Error::parse(&path, format!("row {row}: {e}")))?;
        let get = |c: usize| record.get(c).unwrap_or("");
        let name = |c: usize| headers.get(c).unwrap_or("");
        let f = |c: usize| parse_f64(&path, row, name(c), get(c));
        let n = |c: usize| parse_count(&path, row, name(c), get(c));
        rows.push(VidurRow {
            request_id: n(cols.id)?,
            e2e_s: f(cols.e2e)?,
            ttft_s: f(cols.ttft)?,
            scheduling_delay_s: f(cols.scheduling_delay)?,
            inter_arrival_s: f(cols.inter_arrival)?,
            num_prefill_tokens: n(cols.prefill_tokens)? as u32,
            num_decode_tokens: n(cols.decode_tokens)? as u32,
            num_restarts: match cols.restarts {
                Some(c) if !get(c).trim().is_empty() => n(c)? as u32,
                _ => 0,
            },
        });
    }
    if rows.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{}: no requests",
            path.display()
        )));
    }
    // Rows come out of pandas' outer merge in no guaranteed order.
    rows.sort_by_key(|r| r.request_id);
    if let Some(w) = rows.windows(2).find(|w| w[0].request_id == w[1].request_id) {
        return Err(Error::InvalidInput(format!(
            "{}: `{VIDUR_REQUEST_ID}` {} appears twice",
            path.display(),
            w[0].request_id
        )));
    }

    let mut requests = Vec::with_capacity(rows.len());
    let mut arrival_s = 0.0;
    let mut unfinished = 0;
    for (k, r) in rows.iter().enumerate() {
        let row = k + 1;
        if k > 0 {
            arrival_s += r.inter_arrival_s.ok_or_else(|| Error::InvalidValue {
                path: path.clone(),
                row,
                column: "request_inter_arrival_delay".into(),
                msg: "empty for a request other than the first".into(),
            })?;
        }
        let arrival_ns = seconds_to_ns(&path, row, "request_inter_arrival_delay", arrival_s)?;
        let at = |column: &str, offset_s: Option<f64>| -> Result<Option<u64>> {
            offset_s
                .map(|o| seconds_to_ns(&path, row, column, arrival_s + o))
                .transpose()
        };
        let first_ns = at("prefill_e2e_time", r.ttft_s)?;
        let completion_ns = at("request_e2e_time", r.e2e_s)?;
        let scheduled_ns = at("request_scheduling_delay", r.scheduling_delay_s)?;
        let request = match (first_ns, completion_ns) {
            (Some(first), Some(done)) => {
                // Only the first and last token times are known; the request row needs
                // nothing else (TPOT spreads the gap evenly, as its definition does).
                let mut token_times_ns = vec![first];
                if r.num_decode_tokens > 1 {
                    token_times_ns.resize(r.num_decode_tokens as usize - 1, first);
                    token_times_ns.push(done.max(first));
                }
                RequestMetricsRow::from_times(
                    r.request_id,
                    &RequestTimes {
                        arrival_time_ns: arrival_ns,
                        scheduled_time_ns: scheduled_ns,
                        token_times_ns,
                    },
                    r.num_prefill_tokens,
                    r.num_decode_tokens,
                    r.num_restarts,
                    0,
                    "vidur",
                    None,
                )
            }
            _ => {
                unfinished += 1;
                RequestMetricsRow::from_times(
                    r.request_id,
                    &RequestTimes {
                        arrival_time_ns: arrival_ns,
                        scheduled_time_ns: scheduled_ns,
                        token_times_ns: Vec::new(),
                    },
                    r.num_prefill_tokens,
                    r.num_decode_tokens,
                    r.num_restarts,
                    0,
                    "vidur",
                    Some((
                        "unfinished",
                        "Vidur recorded no completion for this request",
                    )),
                )
            }
        };
        requests.push(request);
    }

    let mut notes = vec![
        "Vidur output: no per-token rows, so ITL and token-time comparisons are omitted for this run.".to_string(),
        "Vidur output: arrivals rebuilt from request_inter_arrival_delay with request 0 at t = 0; TPOT recomputed with DESIGN.md's definition (÷ (D − 1)), not Vidur's (÷ D).".to_string(),
    ];
    if unfinished > 0 {
        notes.push(format!(
            "Vidur output: {unfinished} request(s) have no completion time and are treated as not served."
        ));
    }
    if let Some(model) = read_vidur_model(dir) {
        notes.push(format!(
            "Vidur output: config.json names the model `{model}`."
        ));
    }
    Ok(RunData {
        path: dir.to_path_buf(),
        source: RunSource::VidurOutput,
        backend: "vidur".into(),
        identity: RunIdentity {
            run_id: dir_label(dir),
            ..RunIdentity::default()
        },
        requests,
        tokens: None,
        batches: None,
        batch_requests: None,
        notes,
    })
}

/// The model name in Vidur's `config.json`, if present. Informational only: Vidur names
/// models by their Hugging Face id and we by config name, so it cannot refuse a comparison.
fn read_vidur_model(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let name = value.pointer("/cluster_config/replica_config/model_name")?;
    name.as_str().map(str::to_string)
}

fn dir_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Reads a required array field of the vLLM result.
fn vllm_array<'a>(
    path: &Path,
    json: &'a serde_json::Value,
    field: &str,
) -> Result<&'a Vec<serde_json::Value>> {
    json.get(field)
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| Error::SchemaMismatch {
            path: path.to_path_buf(),
            msg: format!(
                "no `{field}` array: save the benchmark with --save-result --save-detailed so that per-request results are kept"
            ),
        })
}

fn vllm_seconds(path: &Path, field: &str, i: usize, v: &serde_json::Value) -> Result<u64> {
    let s = v.as_f64().ok_or_else(|| Error::SchemaMismatch {
        path: path.to_path_buf(),
        msg: format!("`{field}[{i}]` is not a number of seconds: {v}"),
    })?;
    seconds_to_ns(path, i + 1, field, s)
}

fn vllm_count(path: &Path, field: &str, i: usize, v: &serde_json::Value) -> Result<u32> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| Error::SchemaMismatch {
            path: path.to_path_buf(),
            msg: format!("`{field}[{i}]` is not a token count: {v}"),
        })
}

/// Loads a vLLM serving-benchmark result JSON. `reference` (the other side of the
/// comparison) supplies the arrival time of each request; without it, every request arrives
/// at 0 and a note says so.
pub fn load_vllm_json(path: &Path, reference: Option<&RunData>) -> Result<RunData> {
    let text = std::fs::read_to_string(path).with_path(path)?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::parse(path, format!("malformed JSON: {e}")))?;
    let ttfts = vllm_array(path, &json, "ttfts")?;
    let itls = vllm_array(path, &json, "itls")?;
    let input_lens = vllm_array(path, &json, "input_lens")?;
    let output_lens = vllm_array(path, &json, "output_lens")?;
    let errors = json.get("errors").and_then(serde_json::Value::as_array);
    let n = ttfts.len();
    for (field, len) in [
        ("itls", itls.len()),
        ("input_lens", input_lens.len()),
        ("output_lens", output_lens.len()),
        ("errors", errors.map_or(n, Vec::len)),
    ] {
        if len != n {
            return Err(Error::SchemaMismatch {
                path: path.to_path_buf(),
                msg: format!("`ttfts` has {n} entries but `{field}` has {len}"),
            });
        }
    }
    if n == 0 {
        return Err(Error::InvalidInput(format!(
            "{}: no requests",
            path.display()
        )));
    }
    let arrivals: BTreeMap<u64, u64> = reference.map(RunData::arrivals_ns).unwrap_or_default();
    // Output lengths requested are not in the JSON; with `ignore_eos` they equal the
    // produced ones, and the reference run says what was asked for.
    let requested: BTreeMap<u64, u32> = reference
        .map(|r| {
            r.requests
                .iter()
                .map(|q| (q.request_id, q.num_decode_tokens))
                .collect()
        })
        .unwrap_or_default();

    let mut requests = Vec::with_capacity(n);
    let mut tokens = Vec::new();
    let mut bundled = 0;
    for i in 0..n {
        let id = i as u64;
        let prompt = vllm_count(path, "input_lens", i, &input_lens[i])?;
        let produced = vllm_count(path, "output_lens", i, &output_lens[i])?;
        let asked = requested.get(&id).copied().unwrap_or(produced);
        let arrival = arrivals.get(&id).copied().unwrap_or(0);
        let error = errors.and_then(|e| e[i].as_str()).filter(|e| !e.is_empty());
        if error.is_some() || produced == 0 {
            let msg = error.unwrap_or("no output tokens");
            requests.push(RequestMetricsRow::from_times(
                id,
                &RequestTimes {
                    arrival_time_ns: arrival,
                    scheduled_time_ns: None,
                    token_times_ns: Vec::new(),
                },
                prompt,
                asked,
                0,
                0,
                "vllm",
                Some(("request_failed", msg)),
            ));
            continue;
        }
        let ttft = vllm_seconds(path, "ttfts", i, &ttfts[i])?;
        let gaps = itls[i].as_array().ok_or_else(|| Error::SchemaMismatch {
            path: path.to_path_buf(),
            msg: format!("`itls[{i}]` is not a list"),
        })?;
        let mut times = vec![arrival + ttft];
        for (k, g) in gaps.iter().enumerate() {
            let gap = vllm_seconds(path, &format!("itls[{i}]"), k, g)?;
            let last = times[times.len() - 1];
            times.push(last + gap);
        }
        let per_token = times.len() == produced as usize;
        if per_token {
            let mut previous = None;
            for (k, &t) in times.iter().enumerate() {
                tokens.push(TokenTime {
                    request_id: id,
                    token_index: k as u32,
                    token_time_ns: t,
                    token_latency_ns: previous.map_or(0, |p| t - p),
                });
                previous = Some(t);
            }
        } else {
            bundled += 1;
        }
        // The request row needs the first and last token times and the count; with
        // bundled chunks the intermediate times are unknown and not used.
        let last = times[times.len() - 1];
        let mut token_times_ns = vec![times[0]];
        if produced > 1 {
            token_times_ns.resize(produced as usize - 1, times[0]);
            token_times_ns.push(last);
        }
        requests.push(RequestMetricsRow::from_times(
            id,
            &RequestTimes {
                arrival_time_ns: arrival,
                scheduled_time_ns: None,
                token_times_ns,
            },
            prompt,
            asked,
            0,
            0,
            "vllm",
            None,
        ));
    }

    let mut notes = vec![
        "vLLM benchmark JSON: no queue delay is measured; arrival times are taken from the other run (request i = the i-th request sent), so absolute token times align only as far as the two arrival processes do.".to_string(),
    ];
    if reference.is_none() {
        notes.push(
            "vLLM benchmark JSON: no reference run, so every request is placed at t = 0.".into(),
        );
    }
    if bundled > 0 {
        notes.push(format!(
            "vLLM benchmark JSON: {bundled} request(s) streamed several tokens per chunk (fewer ITLs than output tokens − 1); they have request metrics but no token rows."
        ));
    }
    if let Some(model) = json.get("model_id").and_then(serde_json::Value::as_str) {
        notes.push(format!("vLLM benchmark JSON: served model `{model}`."));
    }
    let backend = json
        .get("backend")
        .and_then(serde_json::Value::as_str)
        .map_or_else(|| "vllm".to_string(), |b| format!("vllm:{b}"));
    Ok(RunData {
        path: path.to_path_buf(),
        source: RunSource::VllmBenchmark,
        backend,
        identity: RunIdentity {
            run_id: dir_label(path),
            ..RunIdentity::default()
        },
        requests,
        tokens: Some(tokens),
        batches: None,
        batch_requests: None,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::records::RequestStatus;

    fn tempdir() -> std::path::PathBuf {
        crate::io::atomic::tests::tempdir()
    }

    /// Three requests as Vidur 0.0.1 writes them (columns in its order, rows out of order,
    /// an integer column turned float by pandas, a restart), plus one unfinished request.
    const VIDUR_CSV: &str = "\
Request Id,request_e2e_time,request_e2e_time_normalized,request_execution_time,request_execution_time_normalized,request_model_execution_time,request_model_execution_time_normalized,request_preemption_time,request_scheduling_delay,request_execution_plus_preemption_time,request_execution_plus_preemption_time_normalized,prefill_e2e_time,prefill_time_execution_plus_preemption,prefill_time_execution_plus_preemption_normalized,decode_time_execution_plus_preemption_normalized,request_inter_arrival_delay,request_num_tokens,request_num_prefill_tokens,request_num_decode_tokens,request_pd_ratio,request_num_restarts
1,0.5,0.125,0.4,0.1,0.4,0.1,0.0,0.05,0.45,0.1125,0.2,0.15,0.01,0.075,0.25,24,20,4,5.0,1
0,0.3,0.1,0.3,0.1,0.3,0.1,0.0,0.0,0.3,0.1,0.1,0.1,0.01,0.0666,,13,10,3.0,3.33,0
2,0.02,0.02,0.02,0.02,0.02,0.02,0.0,0.01,0.02,0.02,0.02,0.01,0.001,0.0,1.0,9,8,1,8.0,0
3,,,,,,,,,,,,,,,0.5,7,5,2,2.5,
";

    #[test]
    fn vidur_request_metrics_map_onto_schema_v1() {
        let dir = tempdir();
        std::fs::write(dir.join("request_metrics.csv"), VIDUR_CSV).unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"cluster_config": {"replica_config": {"model_name": "meta-llama/Llama-2-7b-hf"}}}"#,
        )
        .unwrap();
        assert!(is_vidur_request_metrics(&dir.join("request_metrics.csv")).unwrap());
        let run = load_vidur_dir(&dir).unwrap();
        assert_eq!(run.source, RunSource::VidurOutput);
        assert!(run.tokens.is_none(), "Vidur has no token rows");
        assert!(run.notes.iter().any(|n| n.contains("no per-token rows")));
        assert!(run
            .notes
            .iter()
            .any(|n| n.contains("1 request(s) have no completion")));
        assert!(run
            .notes
            .iter()
            .any(|n| n.contains("meta-llama/Llama-2-7b-hf")));
        let r: Vec<&RequestMetricsRow> = run.requests.iter().collect();
        assert_eq!(
            r.iter().map(|r| r.request_id).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );

        // Request 0 arrives at 0: TTFT 0.1 s, E2E 0.3 s, TPOT (0.3 − 0.1) / (3 − 1) = 0.1 s.
        assert_eq!(r[0].arrival_time_ns, 0);
        assert_eq!(r[0].ttft_ns, Some(100_000_000));
        assert_eq!(r[0].e2e_ns, Some(300_000_000));
        assert_eq!(r[0].tpot_ns, Some(100_000_000));
        assert_eq!(r[0].queue_delay_ns, Some(0));
        assert_eq!((r[0].num_prefill_tokens, r[0].num_decode_tokens), (10, 3));
        // Request 1 arrives 0.25 s later; first token at 0.45 s, completion at 0.75 s,
        // scheduled at 0.30 s; TPOT (0.5 − 0.2) / 3 = 0.1 s; one restart.
        assert_eq!(r[1].arrival_time_ns, 250_000_000);
        assert_eq!(r[1].first_token_time_ns, Some(450_000_000));
        assert_eq!(r[1].completion_time_ns, Some(750_000_000));
        assert_eq!(r[1].scheduled_time_ns, Some(300_000_000));
        assert_eq!(r[1].tpot_ns, Some(100_000_000));
        assert_eq!(r[1].num_preemptions, Some(1));
        // Request 2: one output token, so no TPOT.
        assert_eq!(r[2].arrival_time_ns, 1_250_000_000);
        assert_eq!(r[2].tpot_ns, None);
        assert_eq!(r[2].e2e_ns, Some(20_000_000));
        // Request 3 never finished.
        assert_eq!(r[3].status, RequestStatus::Error);
        assert_eq!(r[3].arrival_time_ns, 1_750_000_000);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn vidur_errors_name_file_row_and_column() {
        let dir = tempdir();
        let path = dir.join("request_metrics.csv");
        std::fs::write(&path, "Request Id,request_e2e_time\n0,0.1\n").unwrap();
        let err = load_vidur_dir(&dir).unwrap_err();
        assert!(
            matches!(err, Error::ColumnNotFound { ref column, .. } if column == "prefill_e2e_time"),
            "{err}"
        );

        let bad = VIDUR_CSV.replace("1,0.5,0.125", "1,-0.5,0.125");
        std::fs::write(&path, bad).unwrap();
        let err = load_vidur_dir(&dir).unwrap_err().to_string();
        assert!(
            err.contains("request_e2e_time") && err.contains("row 2"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn reference(arrivals: &[u64], wanted: &[u32]) -> RunData {
        RunData {
            path: "sim".into(),
            source: RunSource::Simreal,
            backend: "vidur_sim".into(),
            identity: RunIdentity::default(),
            requests: arrivals
                .iter()
                .zip(wanted)
                .enumerate()
                .map(|(i, (&a, &w))| {
                    RequestMetricsRow::from_times(
                        i as u64,
                        &RequestTimes {
                            arrival_time_ns: a,
                            scheduled_time_ns: Some(a),
                            token_times_ns: vec![a + 1; w as usize],
                        },
                        5,
                        w,
                        0,
                        0,
                        "vidur_sim",
                        None,
                    )
                })
                .collect(),
            tokens: None,
            batches: None,
            batch_requests: None,
            notes: Vec::new(),
        }
    }

    #[test]
    fn vllm_result_json_maps_onto_schema_v1() {
        let dir = tempdir();
        let path = dir.join("vllm-4.0qps-Qwen3-0.6B.json");
        // Request 0: three tokens; request 1: failed; request 2: four tokens streamed in
        // three chunks (bundled).
        std::fs::write(
            &path,
            r#"{"backend": "vllm", "model_id": "Qwen/Qwen3-0.6B", "duration": 2.0,
                "input_lens": [5, 6, 7], "output_lens": [3, 0, 4],
                "ttfts": [0.5, 0.0, 0.25], "itls": [[0.1, 0.2], [], [0.05, 0.05]],
                "errors": ["", "Connection reset", ""], "generated_texts": ["a", "", "b"]}"#,
        )
        .unwrap();
        let reference = reference(&[1_000_000_000, 1_500_000_000, 2_000_000_000], &[3, 2, 4]);
        let run = load_vllm_json(&path, Some(&reference)).unwrap();
        assert_eq!(run.source, RunSource::VllmBenchmark);
        assert_eq!(run.backend, "vllm:vllm");
        let r = &run.requests;
        // Request 0: arrives when the reference says; TTFT 0.5 s; E2E = 0.5 + 0.1 + 0.2.
        assert_eq!(r[0].arrival_time_ns, 1_000_000_000);
        assert_eq!(r[0].ttft_ns, Some(500_000_000));
        assert_eq!(r[0].e2e_ns, Some(800_000_000));
        assert_eq!(r[0].tpot_ns, Some(150_000_000));
        assert_eq!(r[0].queue_delay_ns, None);
        assert_eq!(r[0].num_prefill_tokens, 5);
        assert_eq!(r[1].status, RequestStatus::Error);
        assert_eq!(r[1].error_msg.as_deref(), Some("Connection reset"));
        assert_eq!(
            r[1].num_decode_tokens, 2,
            "requested length comes from the reference"
        );
        // Request 2: TPOT = (0.25 + 0.1 − 0.25) / 3; request metrics kept, token rows not.
        assert_eq!(r[2].e2e_ns, Some(350_000_000));
        assert_eq!(r[2].tpot_ns, Some(33_333_333));
        let tokens = run.tokens.as_ref().unwrap();
        assert_eq!(tokens.len(), 3);
        assert_eq!(
            tokens
                .iter()
                .map(|t| (t.token_time_ns, t.token_latency_ns))
                .collect::<Vec<_>>(),
            [
                (1_500_000_000, 0),
                (1_600_000_000, 100_000_000),
                (1_800_000_000, 200_000_000)
            ]
        );
        assert!(run
            .notes
            .iter()
            .any(|n| n.contains("1 request(s) streamed several tokens")));

        std::fs::write(
            &path,
            r#"{"ttfts": [0.1], "input_lens": [1], "output_lens": [1]}"#,
        )
        .unwrap();
        let err = load_vllm_json(&path, None).unwrap_err().to_string();
        assert!(err.contains("--save-detailed"), "{err}");
        std::fs::write(
            &path,
            r#"{"ttfts": [0.1], "itls": [], "input_lens": [1], "output_lens": [1]}"#,
        )
        .unwrap();
        let err = load_vllm_json(&path, None).unwrap_err().to_string();
        assert!(err.contains("`itls` has 0"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
