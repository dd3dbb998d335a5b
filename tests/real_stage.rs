//! workload → real on `qwen3_tiny`, checked against the invariants a serving engine must keep.

#![cfg(feature = "engine")]

mod common;

use std::collections::BTreeMap;
use std::fs;

use common::{run_dirs, run_err, run_ok, TempRoot};
use simreal::io::read_csv;
use simreal::io::records::{
    BatchMetricsRow, BatchRequestRow, RequestMetricsRow, RequestStatus, TokenMetricsRow,
};
use simreal::io::schema::{BATCH_METRICS, BATCH_REQUESTS, REQUEST_METRICS, TOKEN_METRICS};
use simreal::stages::workload::LoadedWorkload;

struct RealRun {
    meta: serde_json::Value,
    requests: Vec<RequestMetricsRow>,
    tokens: Vec<TokenMetricsRow>,
    batches: Vec<BatchMetricsRow>,
    batch_requests: Vec<BatchRequestRow>,
    workload: LoadedWorkload,
}

fn workload_then_real(root: &TempRoot, extra: &[&str]) -> RealRun {
    let r = root.root_override();
    let mut args = vec!["model=qwen3_tiny", r.as_str()];
    args.extend_from_slice(extra);
    let wl = run_ok("workload", &args);
    let dir = run_ok("real", &args);
    RealRun {
        meta: serde_json::from_str(&fs::read_to_string(dir.join("run_meta.json")).unwrap())
            .unwrap(),
        requests: read_csv(dir.join("request_metrics.csv"), &REQUEST_METRICS).unwrap(),
        tokens: read_csv(dir.join("token_metrics.csv"), &TOKEN_METRICS).unwrap(),
        batches: read_csv(dir.join("batch_metrics.csv"), &BATCH_METRICS).unwrap(),
        batch_requests: read_csv(dir.join("batch_requests.csv"), &BATCH_REQUESTS).unwrap(),
        workload: LoadedWorkload::read(&wl).unwrap(),
    }
}

/// Every invariant of issue 3's acceptance that holds for any run.
fn check_invariants(run: &RealRun, chunk_size: u32, num_kv_blocks: Option<u32>) {
    let mut by_request: BTreeMap<u64, Vec<&TokenMetricsRow>> = BTreeMap::new();
    for t in &run.tokens {
        by_request.entry(t.request_id).or_default().push(t);
    }
    assert_eq!(run.requests.len(), run.workload.requests.len());
    for (req, wl) in run.requests.iter().zip(&run.workload.requests) {
        assert_eq!(req.request_id, wl.request_id);
        assert_eq!(req.arrival_time_ns, wl.arrival_time_ns);
        assert_eq!(req.num_prefill_tokens, wl.lengths.num_prefill_tokens);
        assert_eq!(req.status, RequestStatus::Ok, "{req:?}");
        let tokens = &by_request[&req.request_id];
        // Exactly num_decode_tokens tokens, contiguous indices, non-decreasing times.
        assert_eq!(tokens.len() as u32, wl.lengths.num_decode_tokens);
        assert_eq!(req.num_decode_tokens_actual, wl.lengths.num_decode_tokens);
        for (i, t) in tokens.iter().enumerate() {
            assert_eq!(t.token_index as usize, i);
            assert!(t.token_id.is_some());
            if i > 0 {
                assert!(t.token_time_ns >= tokens[i - 1].token_time_ns);
                assert_eq!(
                    t.token_latency_ns,
                    t.token_time_ns - tokens[i - 1].token_time_ns
                );
            } else {
                assert_eq!(t.token_latency_ns, 0);
            }
        }
        // Request columns recomputed from token rows.
        let first = tokens[0].token_time_ns;
        let last = tokens.last().unwrap().token_time_ns;
        assert!(first >= req.arrival_time_ns);
        assert_eq!(req.first_token_time_ns, Some(first));
        assert_eq!(req.ttft_ns, Some(first - req.arrival_time_ns));
        assert_eq!(req.completion_time_ns, Some(last));
        assert_eq!(req.e2e_ns, Some(last - req.arrival_time_ns));
        let n = tokens.len() as u64;
        let tpot = (n > 1).then(|| ((last - first) as f64 / (n - 1) as f64).round() as u64);
        assert_eq!(req.tpot_ns, tpot);
        let scheduled = req.scheduled_time_ns.unwrap();
        assert!(scheduled >= req.arrival_time_ns && scheduled <= first);
    }
    // Batches: budgets and the block pool.
    let mut per_batch: BTreeMap<u64, Vec<&BatchRequestRow>> = BTreeMap::new();
    for br in &run.batch_requests {
        per_batch.entry(br.batch_id).or_default().push(br);
    }
    for b in &run.batches {
        let entries = &per_batch[&b.batch_id];
        assert_eq!(entries.len() as u32, b.num_requests);
        let prefill: u32 = entries
            .iter()
            .filter(|e| e.is_prefill)
            .map(|e| e.num_tokens)
            .sum();
        let decode: u32 = entries
            .iter()
            .filter(|e| !e.is_prefill)
            .map(|e| e.num_tokens)
            .sum();
        assert_eq!(prefill, b.num_prefill_tokens);
        assert_eq!(decode, b.num_decode_tokens);
        assert!(entries
            .iter()
            .filter(|e| !e.is_prefill)
            .all(|e| e.num_tokens == 1));
        if prefill > 0 {
            assert!(
                prefill + decode <= chunk_size.max(decode),
                "batch {b:?} over budget"
            );
        }
        assert!(b.num_requests <= 128);
        if let Some(pool) = num_kv_blocks {
            assert!(b.num_kv_blocks_used <= pool, "pool over-allocated: {b:?}");
        }
        assert_eq!(b.duration_ns, b.end_time_ns - b.start_time_ns);
        let cpu = b.cpu_schedule_ns.unwrap()
            + b.cpu_prepare_inputs_ns.unwrap()
            + b.model_forward_ns.unwrap()
            + b.cpu_sampler_ns.unwrap()
            + b.cpu_process_outputs_ns.unwrap();
        assert_eq!(cpu, b.duration_ns, "phases must add up to the iteration");
    }
    // Iterations do not overlap.
    for w in run.batches.windows(2) {
        assert!(w[1].start_time_ns >= w[0].end_time_ns);
    }
}

#[test]
fn poisson_run_keeps_every_invariant() {
    let root = TempRoot::new("real");
    let run = workload_then_real(
        &root,
        &[
            "workload.num_requests=10",
            "workload.qps=20",
            "vidur.memory_planner=simreal",
        ],
    );
    check_invariants(&run, 512, None);
    // The `real` binary that `cargo test` (and `cargo run` without --release) builds times
    // code optimised as release does, and says so.
    assert_eq!(run.meta["env"]["build"], "opt-level=3 debug-assertions=off");
    // The reference iteration, timed in the warm-up and again after serving.
    let times = |key: &str| run.meta["extra"][key].as_array().map_or(0, Vec::len);
    assert!(times("warmup_iteration_ms") >= 1);
    assert_eq!(times("reference_iteration_after_ms"), 5);
}

#[test]
fn burst_batches_and_small_pool_preempts() {
    let root = TempRoot::new("real-burst");
    // 16 requests at t = 0 with a pool far too small for all of them at once.
    let run = workload_then_real(
        &root,
        &[
            "workload=static_burst",
            "workload.num_requests=12",
            "backend.num_kv_blocks=40",
            "scheduler.chunk_size=128",
        ],
    );
    check_invariants(&run, 128, Some(40));
    assert!(
        run.batches.iter().any(|b| b.num_requests > 1),
        "no batching happened"
    );
    let preemptions: u32 = run
        .requests
        .iter()
        .map(|r| r.num_preemptions.unwrap())
        .sum();
    assert!(preemptions > 0, "no preemption with a 40-block pool");
    assert!(run.batches.iter().any(|b| b.num_preempted > 0));
}

#[test]
fn bad_inputs_fail_cleanly() {
    let root = TempRoot::new("real-bad");
    let r = root.root_override();
    // No workload yet, and told not to make it: the error names the command that does.
    let stderr = run_err("real", &["--no-upstream", "model=qwen3_tiny", &r]);
    assert!(
        stderr.contains("cargo run --release --bin workload"),
        "{stderr}"
    );
    assert!(run_dirs(root.path(), "real").is_empty());

    // A missing weights dir is a config error before any work.
    let stderr = run_err(
        "real",
        &[
            "model=qwen3_tiny",
            "model.weights_dir=/nonexistent/qwen3",
            &r,
        ],
    );
    assert!(stderr.contains("model.weights_dir"), "{stderr}");

    // A snapshot of another architecture.
    run_ok("workload", &["model=qwen3_tiny", &r]);
    let snap = root.path().join("other-arch");
    fs::create_dir_all(&snap).unwrap();
    fs::write(
        snap.join("config.json"),
        r#"{"architectures":["Qwen3ForCausalLM"],"model_type":"qwen3","vocab_size":151936,"hidden_size":128,"intermediate_size":256,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,"max_position_embeddings":4096,"rope_theta":1000000.0,"rms_norm_eps":1e-6,"tie_word_embeddings":true}"#,
    )
    .unwrap();
    let w = format!("model.weights_dir={}", snap.display());
    let stderr = run_err("real", &["model=qwen3_tiny", &w, &r]);
    assert!(stderr.contains("another architecture"), "{stderr}");

    // A workload dir without its marker is not read (without --no-upstream it is redone).
    let wl = run_dirs(root.path(), "workload").pop().unwrap();
    fs::remove_file(wl.join("_SUCCESS")).unwrap();
    let stderr = run_err("real", &["--no-upstream", "model=qwen3_tiny", &r]);
    assert!(stderr.contains("incomplete"), "{stderr}");
    assert!(run_dirs(root.path(), "real").is_empty());

    // The real engine runs Qwen3 only.
    let stderr = run_err("real", &["model=llama2_7b", "hardware=a100_80g", &r]);
    assert!(stderr.contains("Qwen3 models only"), "{stderr}");

    // CUDA without a `--features cuda` build: a config error before any work.
    if !cfg!(feature = "cuda") {
        let stderr = run_err("real", &["model=qwen3_tiny", "backend=candle_cuda", &r]);
        assert!(
            stderr.contains("backend.device") && stderr.contains("--features cuda"),
            "{stderr}"
        );
        assert!(run_dirs(root.path(), "real").is_empty());
    }
}
