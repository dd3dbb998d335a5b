//! The `vidur` stage end to end on `qwen3_tiny`: workload → (a small bundle written here
//! through `BundleWriter`, where `vidur_profile` would put it) → vidur. The real engine's
//! stage is not part of this build yet, so the real side of "workload → real → vidur" is not
//! exercised here; both write the same schemas through the same `io` layer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use simreal::io::bundle::{
    AttentionRow, AttentionTable, BundleLocation, BundleModelSpec, BundleWriter, MlpRow, MlpTable,
    Op, OpStats, ProfilingMeta, EXTRA_MLP_OPS, PROFILING_META_SCHEMA_VERSION, VIDUR_MLP_OPS,
};
use simreal::io::records::{
    BatchMetricsRow, BatchRequestRow, DeviceSpeedRow, RequestMetricsRow, RequestStatus, SpeedPhase,
    TokenMetricsRow, DEVICE_SPEED_PROBE_VERSION,
};
use simreal::io::schema::{
    BATCH_METRICS, BATCH_REQUESTS, DEVICE_SPEED, REQUEST_METRICS, TOKEN_METRICS,
};
use simreal::io::{read_csv, read_json, write_csv, Stage};
use simreal::stages::vidur;
use simreal::stages::workload::LoadedWorkload;
use simreal::stages::Job;
use simreal::Error;

/// A fresh output root per test, so tests can run in parallel.
fn root(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("vidur_stage")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn job(root: &Path, stage: Stage, extra: &[&str]) -> Job {
    let out = format!("output.root={}", root.display());
    let mut overrides = vec!["model=qwen3_tiny", out.as_str()];
    overrides.extend_from_slice(extra);
    Job::from_overrides(stage, &overrides).unwrap()
}

fn tiny_spec() -> BundleModelSpec {
    BundleModelSpec {
        n_head: 4,
        n_kv_head: 2,
        n_embd: 64,
        n_expanded_embd: 256,
        vocab_size: 151936,
        use_gated_mlp: true,
        num_tensor_parallel_workers: 1,
        block_size: 16,
    }
}

fn stats(ms: f64) -> OpStats {
    OpStats::from_samples_ms(&[0.9 * ms, ms, 1.1 * ms]).unwrap()
}

/// Writes a small closed-form bundle where `vidur_profile` would put this config's, with
/// decode KV profiled only up to 256 tokens so that longer contexts are extrapolated.
fn write_bundle(job: &Job) -> PathBuf {
    let cfg = &job.config;
    let dir = cfg.bundle_dir().unwrap();
    let location = BundleLocation::new(&dir, &cfg.hardware.device_sku, &cfg.model.hf_name);
    let w = BundleWriter::new(location).unwrap();
    let ops: Vec<Op> = VIDUR_MLP_OPS.into_iter().chain(EXTRA_MLP_OPS).collect();
    let mlp = MlpTable {
        spec: tiny_spec(),
        rows: [1u32, 2, 4, 8, 16, 32, 64, 128, 256, 512]
            .into_iter()
            .map(|t| MlpRow {
                num_tokens: t,
                ops: ops
                    .iter()
                    .map(|&op| (op, stats(0.002 + 1e-5 * f64::from(t))))
                    .collect(),
            })
            .collect(),
    };
    let mut rows = Vec::new();
    for bs in [1u32, 2, 4, 8, 16, 32] {
        for kv in [16u32, 64, 128, 256] {
            rows.push(AttentionRow {
                batch_size: bs,
                prefill_chunk_size: 0,
                kv_cache_size: kv,
                is_prefill: false,
                attention: stats(0.01 + 1e-5 * f64::from(bs * kv)),
                kv_cache_save: None,
            });
        }
    }
    for chunk in [16u32, 32, 64, 128, 256, 512] {
        for kv in [0u32, 128, 512, 1024] {
            rows.push(AttentionRow {
                batch_size: 1,
                prefill_chunk_size: chunk,
                kv_cache_size: kv,
                is_prefill: true,
                attention: stats(0.02 + 1e-6 * f64::from(chunk) * f64::from(kv + chunk)),
                kv_cache_save: None,
            });
        }
    }
    w.write_mlp(&[mlp]).unwrap();
    w.write_attention(&[AttentionTable {
        spec: tiny_spec(),
        max_model_len: Some(4096),
        attention_backend: Some("test".into()),
        profile_method: Some("closed_form".into()),
        rows,
    }])
    .unwrap();
    w.write_meta(&ProfilingMeta {
        schema_version: PROFILING_META_SCHEMA_VERSION,
        device: cfg.hardware.device_sku.clone(),
        model_name: cfg.model.hf_name.clone(),
        network_device: None,
        has_cpu_overheads: false,
        models: vec![tiny_spec()],
        ops: vec![],
        details: BTreeMap::new(),
        measured_on: None,
    })
    .unwrap();
    std::fs::write(dir.join("_SUCCESS"), "").unwrap();
    dir
}

struct Run {
    requests: Vec<RequestMetricsRow>,
    tokens: Vec<TokenMetricsRow>,
    batches: Vec<BatchMetricsRow>,
    batch_requests: Vec<BatchRequestRow>,
    meta: serde_json::Value,
}

fn read_run(dir: &Path) -> Run {
    Run {
        requests: read_csv(dir.join(REQUEST_METRICS.file_name), &REQUEST_METRICS).unwrap(),
        tokens: read_csv(dir.join(TOKEN_METRICS.file_name), &TOKEN_METRICS).unwrap(),
        batches: read_csv(dir.join(BATCH_METRICS.file_name), &BATCH_METRICS).unwrap(),
        batch_requests: read_csv(dir.join(BATCH_REQUESTS.file_name), &BATCH_REQUESTS).unwrap(),
        meta: read_json(dir.join("run_meta.json")).unwrap(),
    }
}

const DATA_FILES: [&str; 5] = [
    "request_metrics.csv",
    "token_metrics.csv",
    "batch_metrics.csv",
    "batch_requests.csv",
    "config.yaml",
];

#[test]
fn workload_to_vidur_matches_the_workload_and_repeats_byte_for_byte() {
    let root = root("e2e");
    let wl = job(&root, Stage::Workload, &[]);
    simreal::stages::workload::run(&wl).unwrap();
    let sim = job(&root, Stage::Vidur, &[]);

    // No bundle yet: the error names the command that makes it.
    let err = vidur::run(&sim).unwrap_err().to_string();
    assert!(
        err.contains("cargo run --release --bin vidur_profile -- model=qwen3_tiny"),
        "{err}"
    );
    write_bundle(&sim);

    let dir = vidur::run(&sim).unwrap();
    assert_eq!(dir, sim.config.sim_run_dir().unwrap());
    let run = read_run(&dir);
    let workload = LoadedWorkload::for_job(&wl).unwrap();

    // Request ids and token counts are the workload's.
    assert_eq!(run.requests.len(), workload.requests.len());
    for (row, req) in run.requests.iter().zip(&workload.requests) {
        assert_eq!(row.request_id, req.request_id);
        assert_eq!(row.arrival_time_ns, req.arrival_time_ns);
        assert_eq!(row.num_prefill_tokens, req.lengths.num_prefill_tokens);
        assert_eq!(row.num_decode_tokens, req.lengths.num_decode_tokens);
        assert_eq!(row.num_decode_tokens_actual, req.lengths.num_decode_tokens);
        assert_eq!(row.status, RequestStatus::Ok);
        assert_eq!(row.backend.as_deref(), Some("vidur_sim"));
        assert!(row.scheduled_time_ns.unwrap() >= row.arrival_time_ns);
        assert!(row.first_token_time_ns.unwrap() > row.scheduled_time_ns.unwrap());
    }
    let decode_total: u64 = workload
        .requests
        .iter()
        .map(|r| u64::from(r.lengths.num_decode_tokens))
        .sum();
    assert_eq!(run.tokens.len() as u64, decode_total);

    // Batch budgets (sarathi: chunk_size tokens, batch_size_cap requests, the KV pool).
    let cfg = &sim.config;
    let pool = cfg.kv_pool().unwrap().num_blocks;
    for b in &run.batches {
        assert!(b.num_prefill_tokens + b.num_decode_tokens <= cfg.scheduler.chunk_size);
        assert!(b.num_requests <= cfg.scheduler.batch_size_cap);
        assert!(u64::from(b.num_kv_blocks_used) <= pool);
        assert_eq!(b.duration_ns, b.end_time_ns - b.start_time_ns);
        let entries: Vec<&BatchRequestRow> = run
            .batch_requests
            .iter()
            .filter(|r| r.batch_id == b.batch_id)
            .collect();
        assert_eq!(entries.len() as u32, b.num_requests);
        let tokens: u32 = entries.iter().map(|r| r.num_tokens).sum();
        assert_eq!(tokens, b.num_prefill_tokens + b.num_decode_tokens);
    }
    // Each prompt is prefilled exactly once (no preemption in this pool).
    let prefilled: u64 = run
        .batch_requests
        .iter()
        .filter(|r| r.is_prefill)
        .map(|r| u64::from(r.num_tokens))
        .sum();
    let prompts: u64 = workload
        .requests
        .iter()
        .map(|r| u64::from(r.lengths.num_prefill_tokens))
        .sum();
    assert_eq!(prefilled, prompts);

    // Extrapolation beyond the 256-token decode grid is flagged, counted, not fatal.
    let flagged = run
        .batches
        .iter()
        .filter(|b| b.extrapolated == Some(true))
        .count() as u64;
    assert!(flagged > 0);
    let extra = &run.meta["extra"];
    assert_eq!(extra["summary"]["num_extrapolated_batches"], flagged);
    assert!(extra["summary"]["extrapolated_ops"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("attn_decode")));
    assert_eq!(run.meta["run_type"], "vidur");
    assert_eq!(
        run.meta["inputs"]["workload"]["id"],
        workload.meta.workload_id.as_str()
    );
    assert_eq!(
        run.meta["inputs"]["bundle"]["id"],
        cfg.bundle_id().unwrap().as_str()
    );
    assert_eq!(extra["predictor"]["predictor"], "native");
    assert_eq!(extra["kv_pool"]["num_blocks"], pool);
    assert_eq!(extra["little"]["exact"], true);
    assert!(extra["summary"]["makespan_ns"].as_u64().unwrap() > 0);

    // Up to date on rerun: nothing is rewritten.
    let before = std::fs::read(dir.join("run_meta.json")).unwrap();
    assert_eq!(vidur::run(&sim).unwrap(), dir);
    assert_eq!(std::fs::read(dir.join("run_meta.json")).unwrap(), before);

    // Forced: the data files are byte-identical.
    let first: Vec<Vec<u8>> = DATA_FILES
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    let forced = job(&root, Stage::Vidur, &["output.force=true"]);
    assert_eq!(vidur::run(&forced).unwrap(), dir);
    for (f, bytes) in DATA_FILES.iter().zip(&first) {
        if *f == "config.yaml" {
            continue; // records output.force
        }
        assert_eq!(&std::fs::read(dir.join(f)).unwrap(), bytes, "{f} differs");
    }
}

#[test]
fn a_request_longer_than_the_context_is_an_error_row() {
    let root = root("overflow");
    let wl = job(&root, Stage::Workload, &[]);
    let wl_dir = simreal::stages::workload::run(&wl).unwrap();
    // Make request 3's prompt exceed the 4096-token context.
    let path = wl_dir.join("trace_lengths.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited: Vec<String> = text
        .lines()
        .map(|line| match line.split(',').collect::<Vec<_>>()[..] {
            ["3", prompt_id, _, d] => format!("3,{prompt_id},5000,{d}"),
            _ => line.to_string(),
        })
        .collect();
    std::fs::write(&path, edited.join("\n") + "\n").unwrap();
    let sim = job(&root, Stage::Vidur, &[]);
    write_bundle(&sim);
    let run = read_run(&vidur::run(&sim).unwrap());
    let r3 = &run.requests[3];
    assert_eq!(r3.status, RequestStatus::Error);
    assert_eq!(r3.error_type.as_deref(), Some("context_overflow"));
    assert_eq!(r3.num_prefill_tokens, 5000);
    assert!(run.tokens.iter().all(|t| t.request_id != 3));
    assert!(run
        .requests
        .iter()
        .filter(|r| r.request_id != 3)
        .all(|r| r.status == RequestStatus::Ok));
    assert_eq!(run.meta["extra"]["summary"]["num_error"], 1);
}

#[test]
fn inputs_for_another_model_are_clear_errors() {
    let root = root("mismatch");
    let wl = job(&root, Stage::Workload, &[]);
    let wl_dir = simreal::stages::workload::run(&wl).unwrap();
    let sim = job(&root, Stage::Vidur, &[]);
    let bundle = write_bundle(&sim);

    // A bundle profiled for another model.
    let meta_path = bundle.join("profiling_meta.json");
    let meta = std::fs::read_to_string(&meta_path).unwrap();
    std::fs::write(
        &meta_path,
        meta.replace("simreal/Qwen3-tiny", "Qwen/Qwen3-0.6B"),
    )
    .unwrap();
    let err = vidur::run(&sim).unwrap_err();
    assert!(matches!(err, Error::Mismatch(_)), "{err}");
    assert!(err.to_string().contains("Qwen/Qwen3-0.6B"), "{err}");
    std::fs::write(&meta_path, meta).unwrap();

    // Vidur's bundle holds Llama-2 profiles only.
    let reference = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .skip(1)
        .map(|d| d.join("shared/vidur_reference/profiling"))
        .find(|d| d.is_dir())
        .expect("shared/vidur_reference/profiling is missing");
    {
        let arg = format!("vidur.bundle={}", reference.display());
        let err = vidur::run(&job(&root, Stage::Vidur, &["hardware=a100_80g", &arg]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("simreal/Qwen3-tiny"), "{err}");
        assert!(err.contains("meta-llama/Llama-2-70b-hf"), "{err}");
    }

    // A workload made for another model.
    let wl_meta = wl_dir.join("workload_meta.json");
    let text = std::fs::read_to_string(&wl_meta).unwrap();
    std::fs::write(
        &wl_meta,
        text.replace("\"model\": \"qwen3_tiny\"", "\"model\": \"qwen3_0_6b\""),
    )
    .unwrap();
    let err = vidur::run(&sim).unwrap_err();
    assert!(matches!(err, Error::Mismatch(_)), "{err}");
    assert!(err.to_string().contains("qwen3_0_6b"), "{err}");
    assert!(!sim.config.sim_run_dir().unwrap().exists());
}

/// A `device_speed.csv` with probes at 0 and 10 s of the given rates and one host sample,
/// of this build's probe version.
fn write_device_speed(dir: &Path, memory_gb_per_s: f64, compute_gflop_per_s: f64) {
    write_device_speed_of(
        dir,
        memory_gb_per_s,
        compute_gflop_per_s,
        Some(DEVICE_SPEED_PROBE_VERSION),
    );
}

/// [`write_device_speed`] with probes of `probe_version` (`None`: a file from before versions
/// were recorded).
fn write_device_speed_of(
    dir: &Path,
    memory_gb_per_s: f64,
    compute_gflop_per_s: f64,
    probe_version: Option<u32>,
) {
    std::fs::create_dir_all(dir).unwrap();
    let probe = |sample_id: u64, time_ns: i64, phase: SpeedPhase| DeviceSpeedRow {
        sample_id,
        time_ns,
        phase,
        memory_probe_ns: Some((64e6 / memory_gb_per_s) as u64),
        compute_probe_ns: Some((1e9 / compute_gflop_per_s) as u64),
        memory_gb_per_s: Some(memory_gb_per_s),
        compute_gflop_per_s: Some(compute_gflop_per_s),
        steal_pct: None,
        competing_cpu_pct: None,
        run_queue_wait_pct: None,
        load_average_1min: Some(1.0),
        probe_repeats: Some(5),
        memory_probe_kept_repeats: Some(5),
        compute_probe_kept_repeats: Some(4),
        memory_probe_max_skew: Some(1.01),
        compute_probe_max_skew: Some(1.9),
        probe_version,
    };
    let rows = [
        probe(0, 0, SpeedPhase::Before),
        DeviceSpeedRow {
            steal_pct: Some(0.0),
            competing_cpu_pct: Some(0.0),
            run_queue_wait_pct: Some(0.0),
            ..probe(1, 5_000_000_000, SpeedPhase::Busy)
        },
        probe(2, 10_000_000_000, SpeedPhase::After),
    ];
    write_csv(dir.join(DEVICE_SPEED.file_name), &DEVICE_SPEED, &rows).unwrap();
}

#[test]
fn device_speed_correction_scales_to_the_run_probes_and_never_reads_its_timings() {
    let root = root("speed");
    simreal::stages::workload::run(&job(&root, Stage::Workload, &[])).unwrap();
    let raw_job = job(&root, Stage::Vidur, &[]);
    let bundle = write_bundle(&raw_job);
    let raw = read_run(&vidur::run(&raw_job).unwrap());

    // Two real runs on a device half as fast as the profile's: one with timings of its own,
    // one whose timing files are garbage. The correction must not read them.
    let corrected = |real_run: &Path| {
        let real = format!("compare.real_run={}", real_run.display());
        let j = job(
            &root,
            Stage::Vidur,
            &["vidur.device_speed_correction=true", &real],
        );
        vidur::run(&j)
    };
    let (timed, garbage) = (root.join("real-timed"), root.join("real-garbage"));
    for (dir, text) in [(&timed, "batch_id\n0\n"), (&garbage, "\u{0}not a csv\"")] {
        write_device_speed(dir, 5.0, 50.0);
        for file in DATA_FILES.iter().chain(&["run_meta.json"]) {
            std::fs::write(dir.join(file), text).unwrap();
        }
    }

    // Without the bundle's timeline there is nothing to scale from: a clear error.
    let err = corrected(&timed).unwrap_err().to_string();
    assert!(
        err.contains("vidur.device_speed_correction") && err.contains("device_speed.csv"),
        "{err}"
    );
    // Probes of an older version time other kernels: refused, naming both sides.
    write_device_speed_of(&bundle, 10.0, 100.0, None);
    let err = corrected(&timed).unwrap_err();
    assert!(matches!(err, Error::Mismatch(_)), "{err}");
    let err = err.to_string();
    assert!(
        err.contains("version 3 or older")
            && err.contains(&bundle.display().to_string())
            && err.contains(&timed.display().to_string()),
        "{err}"
    );
    write_device_speed(&bundle, 10.0, 100.0);

    let (a, b) = (corrected(&timed).unwrap(), corrected(&garbage).unwrap());
    assert_ne!(a, b);
    for name in DATA_FILES.iter().filter(|f| f.ends_with(".csv")) {
        assert_eq!(
            std::fs::read(a.join(name)).unwrap(),
            std::fs::read(b.join(name)).unwrap(),
            "{name} depends on the real run's own timings"
        );
    }

    // Half the probe rates: every op twice as long, so the first batch (the same prefill in
    // both runs) takes twice the raw prediction.
    let scaled = read_run(&a);
    let (r0, s0) = (&raw.batches[0], &scaled.batches[0]);
    assert_eq!(r0.num_prefill_tokens, s0.num_prefill_tokens);
    let ratio = s0.duration_ns as f64 / r0.duration_ns as f64;
    assert!((ratio - 2.0).abs() < 1e-3, "{ratio}");
    assert_eq!(
        scaled.meta["inputs"]["device_speed_of"]["path"],
        timed.display().to_string()
    );

    // A different device timeline changes the prediction.
    write_device_speed(&timed, 10.0, 100.0);
    let same = format!("compare.real_run={}", timed.display());
    let j = job(
        &root,
        Stage::Vidur,
        &[
            "vidur.device_speed_correction=true",
            &same,
            "output.force=true",
        ],
    );
    let unscaled = read_run(&vidur::run(&j).unwrap());
    assert_eq!(unscaled.batches[0].duration_ns, r0.duration_ns);
}
