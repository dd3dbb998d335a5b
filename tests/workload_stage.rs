//! The `workload` stage as a user runs it: files, idempotence, determinism, bad inputs.

#![cfg(feature = "prompts")]

mod common;

use std::fs;

use common::{run_dirs, run_err, run_ok, TempRoot};
use simreal::io::read_csv;
use simreal::io::records::{TraceIntervalRow, TraceLengthRow};
use simreal::io::schema::{TRACE_INTERVALS, TRACE_LENGTHS};
use simreal::stages::workload::LoadedWorkload;
use simreal::workloads::Tokenizer;

const FILES: [&str; 6] = [
    "_SUCCESS",
    "config.yaml",
    "run_meta.json",
    "trace_intervals.csv",
    "trace_lengths.csv",
    "workload_meta.json",
];

/// The workload's prompts, materialized by the reader if the stage left them out.
fn prompts_bytes(dir: &std::path::Path, tokenizer: &Tokenizer) -> Vec<u8> {
    let loaded = LoadedWorkload::read(dir).unwrap();
    let prompts = loaded.read_prompts(tokenizer).unwrap();
    assert_eq!(prompts.len(), loaded.requests.len());
    fs::read(dir.join("prompts.jsonl")).unwrap()
}

#[test]
fn writes_contract_files_reuses_them_and_is_deterministic() {
    let root = TempRoot::new("wl");
    let r = root.root_override();
    let args = ["model=qwen3_tiny", "workload.num_requests=30", r.as_str()];
    let dir = run_ok("workload", &args);
    for f in FILES {
        assert!(dir.join(f).is_file(), "missing {f}");
    }
    // Prompt texts are left to their first reader, which writes them.
    assert!(!dir.join("prompts.jsonl").exists());
    let loaded = LoadedWorkload::read(&dir).unwrap();
    assert_eq!(loaded.requests.len(), 30);
    let tokenizer = Tokenizer::bundled_qwen3().unwrap();
    let prompts = prompts_bytes(&dir, &tokenizer);
    // Read again: the file is read, not rewritten.
    let modified = fs::metadata(dir.join("prompts.jsonl"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(prompts_bytes(&dir, &tokenizer), prompts);
    assert_eq!(
        fs::metadata(dir.join("prompts.jsonl"))
            .unwrap()
            .modified()
            .unwrap(),
        modified
    );

    // A second run is a no-op that says so.
    let out = common::run("workload", &args);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("up to date"));

    // Forcing a rerun gives byte-identical data files, and the same prompts whether the
    // stage writes them (`output.eager_prompts`) or their reader does.
    let before: Vec<Vec<u8>> = ["trace_lengths.csv", "trace_intervals.csv"]
        .iter()
        .map(|f| fs::read(dir.join(f)).unwrap())
        .collect();
    let forced = [args.as_slice(), &["output.force=true"]].concat();
    let again = run_ok("workload", &forced);
    assert_eq!(again, dir);
    for (f, bytes) in ["trace_lengths.csv", "trace_intervals.csv"]
        .iter()
        .zip(&before)
    {
        assert_eq!(&fs::read(dir.join(f)).unwrap(), bytes, "{f} changed");
    }
    assert_eq!(prompts_bytes(&dir, &tokenizer), prompts);
    let eager = [forced.as_slice(), &["output.eager_prompts=true"]].concat();
    assert_eq!(run_ok("workload", &eager), dir);
    assert_eq!(fs::read(dir.join("prompts.jsonl")).unwrap(), prompts);

    // Another tokenizer is refused before anything is written.
    let other = std::env::temp_dir().join(format!("simreal-wl-tok-{}.json", std::process::id()));
    let err = LoadedWorkload::read(&dir)
        .unwrap()
        .read_prompts(&fake_tokenizer(&other))
        .unwrap_err();
    assert!(err.to_string().contains("was made with tokenizer"), "{err}");
    fs::remove_file(other).unwrap();

    // Another seed is another workload, with other arrivals and lengths.
    let seeded = [args.as_slice(), &["workload.seed=7"]].concat();
    let other = run_ok("workload", &seeded);
    assert_ne!(other, dir);
    let a: Vec<TraceLengthRow> = read_csv(dir.join("trace_lengths.csv"), &TRACE_LENGTHS).unwrap();
    let b: Vec<TraceLengthRow> = read_csv(other.join("trace_lengths.csv"), &TRACE_LENGTHS).unwrap();
    assert_ne!(a, b);
    let ia: Vec<TraceIntervalRow> =
        read_csv(dir.join("trace_intervals.csv"), &TRACE_INTERVALS).unwrap();
    assert_eq!(ia[0].arrival_time_ns, 0);
    assert_eq!(run_dirs(root.path(), "workload").len(), 2);
}

#[test]
fn replays_the_shipped_azure_sample() {
    let root = TempRoot::new("wl-replay");
    let r = root.root_override();
    let dir = run_ok(
        "workload",
        &[
            "model=qwen3_tiny",
            "workload=trace_replay",
            "workload.num_requests=200",
            &r,
        ],
    );
    let loaded = LoadedWorkload::read(&dir).unwrap();
    assert_eq!(loaded.requests.len(), 200);
    // First rows of splitwise_conv: 0.0,374,44 / 4.314579,396,109.
    assert_eq!(loaded.requests[0].lengths.num_prefill_tokens, 374);
    assert_eq!(loaded.requests[1].lengths.num_decode_tokens, 109);
    assert_eq!(loaded.requests[1].arrival_time_ns, 4_314_579_000);
}

#[test]
fn bad_inputs_fail_cleanly_and_leave_no_run_dir() {
    let root = TempRoot::new("wl-bad");
    let r = root.root_override();
    let nan_trace = root.path().join("nan.csv");
    fs::write(
        &nan_trace,
        "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,5\n1.0,NaN,5\n",
    )
    .unwrap();
    let missing_col = root.path().join("missing.csv");
    fs::write(&missing_col, "arrived_at,num_prefill_tokens\n0.0,10\n").unwrap();
    let nan_arg = format!("workload.trace_replay.trace_file={}", nan_trace.display());
    let missing_arg = format!("workload.trace_replay.trace_file={}", missing_col.display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["workload.qps=-1"], "workload.qps"),
        (vec!["nosuchgroup=x"], "nosuchgroup"),
        (vec!["workload.nosuchkey=1"], "workload.nosuchkey"),
        (vec!["workload.num_requests=0"], "workload.num_requests"),
        (vec!["model=nosuch"], "options: llama2_70b"),
        (vec!["workload.lengths.max_tokens=100000"], "context"),
        (
            vec!["workload=trace_replay", &nan_arg],
            "num_prefill_tokens",
        ),
        (
            vec!["workload=trace_replay", &missing_arg],
            "num_decode_tokens",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["model=qwen3_tiny", r.as_str()];
        all.extend(args.iter().copied());
        let stderr = run_err("workload", &all);
        assert!(
            stderr.contains(needle) && stderr.starts_with("error:"),
            "{all:?}: expected an error naming `{needle}`, got:\n{stderr}"
        );
        assert!(
            run_dirs(root.path(), "workload").is_empty(),
            "{all:?} left a run dir behind"
        );
    }
}

#[test]
fn cfg_job_prints_the_resolved_config_and_computed_properties() {
    let out = common::run(
        "workload",
        &["--cfg", "job", "model=qwen3", "workload.qps=4"],
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("name: qwen3_0_6b"), "{text}");
    assert!(text.contains("qps: 4"), "{text}");
    assert!(text.contains("model_num_parameters: 596049920"), "{text}");
}

/// A two-word tokenizer written to `path`: any tokenizer other than the workload's.
fn fake_tokenizer(path: &std::path::Path) -> Tokenizer {
    fs::write(
        path,
        r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
           "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,
           "decoder":null,"model":{"type":"WordLevel","vocab":{"a":0,"[UNK]":1},
           "unk_token":"[UNK]"}}"#,
    )
    .unwrap();
    Tokenizer::from_file(path).unwrap()
}
