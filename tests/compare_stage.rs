//! End to end on `qwen3_tiny`: workload → real (two runs) → vidur → compare.
//!
//! The simulator predicts from a small closed-form bundle written where `vidur_profile`
//! would put it (profiling is its own stage and takes longer than a test should); the
//! second real run measures the real engine's run-to-run noise. Checks every output file
//! against its schema, figure sizes, the join against the inputs, the batch replay's exact
//! decomposition of the gap, the interop formats and the stage's refusals.

#![cfg(all(feature = "engine", feature = "report"))]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use simreal::analysis::compare::report::CompareSummary;
use simreal::io::bundle::{
    AttentionRow, AttentionTable, BundleLocation, BundleModelSpec, BundleWriter, MlpRow, MlpTable,
    Op, OpStats, ProfilingMeta, EXTRA_MLP_OPS, PROFILING_META_SCHEMA_VERSION, VIDUR_MLP_OPS,
};
use simreal::io::json_schemas::validate;
use simreal::io::provenance::RunMeta;
use simreal::io::records::RequestMetricsRow;
use simreal::io::schema::{
    ITERATION_COMPARISON, REQUEST_COMPARISON, REQUEST_METRICS, TOKEN_COMPARISON,
};
use simreal::io::{read_csv, read_json_validated, Stage};
use simreal::stages::compare::run as compare;
use simreal::stages::Job;
use simreal::Error;

const WIDTH_PX: u32 = 640;
const HEIGHT_PX: u32 = 480;

fn overrides(root: &Path, extra: &[String]) -> Vec<String> {
    let mut o: Vec<String> = [
        "model=qwen3_tiny",
        "workload.num_requests=10",
        "workload.qps=20",
        "workload.lengths.min_tokens=16",
        "workload.lengths.max_tokens=48",
        "compare.figure_width_px=640",
        "compare.figure_height_px=480",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    o.push(format!("output.root={}", root.display()));
    o.extend(extra.iter().cloned());
    o
}

fn job(stage: Stage, root: &Path, extra: &[String]) -> Job {
    let o = overrides(root, extra);
    let refs: Vec<&str> = o.iter().map(String::as_str).collect();
    Job::from_overrides(stage, &refs).unwrap()
}

fn real_run(root: &Path, id: &str) -> PathBuf {
    simreal::stages::real::run(&job(Stage::Real, root, &[format!("output.run_id={id}")])).unwrap()
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    (be(16), be(20))
}

type Row = HashMap<String, String>;

/// A small bundle with times linear in the work, where `vidur_profile` would write this
/// config's; accuracy does not matter here, only that the simulator and the replay run.
fn write_bundle(job: &Job) -> PathBuf {
    let cfg = &job.config;
    let m = &cfg.model;
    let spec = BundleModelSpec {
        n_head: m.num_attention_heads,
        n_kv_head: m.num_key_value_heads,
        n_embd: m.hidden_size,
        n_expanded_embd: m.intermediate_size,
        vocab_size: m.vocab_size,
        use_gated_mlp: true,
        num_tensor_parallel_workers: 1,
        block_size: cfg.scheduler.block_size,
    };
    let stats = |ms: f64| OpStats::from_samples_ms(&[0.9 * ms, ms, 1.1 * ms]).unwrap();
    let dir = cfg.bundle_dir().unwrap();
    let w = BundleWriter::new(BundleLocation::new(
        &dir,
        &cfg.hardware.device_sku,
        &m.hf_name,
    ))
    .unwrap();
    let ops: Vec<Op> = VIDUR_MLP_OPS.into_iter().chain(EXTRA_MLP_OPS).collect();
    let rows = [1u32, 2, 4, 8, 16, 32, 64, 128, 256, 512]
        .into_iter()
        .map(|t| MlpRow {
            num_tokens: t,
            ops: ops
                .iter()
                .map(|&op| (op, stats(0.01 + 1e-4 * f64::from(t))))
                .collect(),
        })
        .collect();
    w.write_mlp(&[MlpTable { spec, rows }]).unwrap();
    let mut rows = Vec::new();
    for batch_size in [1u32, 2, 4, 8, 16, 32] {
        for kv in [16u32, 64, 128, 256, 512] {
            rows.push(AttentionRow {
                batch_size,
                prefill_chunk_size: 0,
                kv_cache_size: kv,
                is_prefill: false,
                attention: stats(0.01 + 1e-5 * f64::from(batch_size * kv)),
                kv_cache_save: None,
            });
        }
    }
    for chunk in [16u32, 32, 64, 128, 256, 512] {
        for kv in [0u32, 128, 512] {
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
    w.write_attention(&[AttentionTable {
        spec,
        max_model_len: Some(m.max_model_len),
        attention_backend: Some("test".into()),
        profile_method: Some("closed_form".into()),
        rows,
    }])
    .unwrap();
    w.write_meta(&ProfilingMeta {
        schema_version: PROFILING_META_SCHEMA_VERSION,
        device: cfg.hardware.device_sku.clone(),
        model_name: m.hf_name.clone(),
        network_device: None,
        has_cpu_overheads: false,
        models: vec![spec],
        ops: vec![],
        details: Default::default(),
        measured_on: None,
    })
    .unwrap();
    std::fs::write(dir.join("_SUCCESS"), "").unwrap();
    dir
}

#[test]
fn workload_real_vidur_compare_writes_every_file_and_refuses_mismatched_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    simreal::stages::workload::run(&job(Stage::Workload, root, &[])).unwrap();
    let a = simreal::stages::real::run(&job(Stage::Real, root, &[])).unwrap();
    let c = real_run(root, "real-c");
    write_bundle(&job(Stage::VidurProfile, root, &[]));
    let b = simreal::stages::vidur::run(&job(Stage::Vidur, root, &[])).unwrap();

    // The derived runs need no paths: this compares `a` with `b`.
    let derived = compare(&job(Stage::Compare, root, &[])).unwrap();
    assert!(derived.join("_SUCCESS").is_file());
    let one: serde_json::Value =
        read_json_validated(derived.join("summary.json"), &CompareSummary::schema()).unwrap();
    assert_eq!(one["fidelity"]["noise_measured"], false);
    // Fields appended to v1 are optional to readers: a summary from before still validates;
    // one that lost an original field does not.
    let schema = CompareSummary::schema();
    let mut older = one.clone();
    for appended in ["device_speed", "speed_corrected"] {
        older["attribution"]
            .as_object_mut()
            .unwrap()
            .remove(appended);
    }
    validate(&older, &schema).unwrap();
    older["attribution"].as_object_mut().unwrap().remove("busy");
    assert_eq!(
        validate(&older, &schema).unwrap_err(),
        (
            "$.attribution".to_string(),
            "missing required field `busy`".to_string()
        )
    );
    assert!(one["verdict"]
        .as_str()
        .unwrap()
        .starts_with("With one real run the real engine's run-to-run noise is unmeasured"));
    // The study's own run named by its path is the same comparison; a copy of it under
    // another root (same run id, another measurement as far as anyone knows) is another.
    let own = [format!("compare.real_run={}", a.display())];
    assert_eq!(compare(&job(Stage::Compare, root, &own)).unwrap(), derived);
    let namesake = root.join("elsewhere").join(a.file_name().unwrap());
    copy_dir(&a, &namesake);
    let moved = [format!("compare.real_run={}", namesake.display())];
    let elsewhere = compare(&job(Stage::Compare, root, &moved)).unwrap();
    assert_ne!(elsewhere, derived);
    assert!(elsewhere.join("_SUCCESS").is_file());
    // One dir named by a detour is still that dir's comparison.
    let detour = |p: &Path| {
        let parent = p.parent().unwrap();
        parent
            .join("..")
            .join(parent.file_name().unwrap())
            .join(p.file_name().unwrap())
    };
    let by_detour = [format!("compare.real_run={}", detour(&namesake).display())];
    assert_eq!(
        compare(&job(Stage::Compare, root, &by_detour)).unwrap(),
        elsewhere
    );
    let own_by_detour = [format!("compare.real_run={}", detour(&a).display())];
    assert_eq!(
        compare(&job(Stage::Compare, root, &own_by_detour)).unwrap(),
        derived
    );
    // With a second real run for the noise.
    let runs = [format!("compare.real_run={},{}", a.display(), c.display())];
    let dir = compare(&job(Stage::Compare, root, &runs)).unwrap();
    assert!(dir.starts_with(root.join("compare")));
    assert!(dir.join("_SUCCESS").is_file());

    // Tables: schema-valid; every request compared (the runs have no errors); TTFTs are
    // those of the inputs.
    let requests: Vec<Row> =
        read_csv(dir.join("request_comparison.csv"), &REQUEST_COMPARISON).unwrap();
    assert_eq!(requests.len(), 10);
    let real_rows: Vec<RequestMetricsRow> =
        read_csv(a.join("request_metrics.csv"), &REQUEST_METRICS).unwrap();
    let sim_rows: Vec<RequestMetricsRow> =
        read_csv(b.join("request_metrics.csv"), &REQUEST_METRICS).unwrap();
    for row in &requests {
        let id: u64 = row["request_id"].parse().unwrap();
        let real = real_rows.iter().find(|r| r.request_id == id).unwrap();
        let sim = sim_rows.iter().find(|r| r.request_id == id).unwrap();
        assert_eq!(row["real_ttft_ns"], real.ttft_ns.unwrap().to_string());
        assert_eq!(row["sim_ttft_ns"], sim.ttft_ns.unwrap().to_string());
        let err: f64 = row["e2e_err_pct"].parse().unwrap();
        let (r, s) = (real.e2e_ns.unwrap() as f64, sim.e2e_ns.unwrap() as f64);
        assert!(
            (err - 100.0 * (s - r) / r).abs() < 1e-6,
            "request {id}: {err}"
        );
    }
    let tokens: Vec<Row> = read_csv(dir.join("token_comparison.csv"), &TOKEN_COMPARISON).unwrap();
    let expected_tokens: u32 = real_rows.iter().map(|r| r.num_decode_tokens).sum();
    assert_eq!(tokens.len(), expected_tokens as usize);
    let _: Vec<Row> =
        read_csv(dir.join("iteration_comparison.csv"), &ITERATION_COMPARISON).unwrap();

    // summary.json and run_meta.json validate; noise comes from the third run.
    let summary: serde_json::Value =
        read_json_validated(dir.join("summary.json"), &CompareSummary::schema()).unwrap();
    assert_eq!(summary["join"]["requests_compared"], 10);
    assert_eq!(summary["join"]["requests_dropped"], 0);
    for metric in ["ttft", "tpot", "itl", "e2e", "queue_delay"] {
        let m = &summary["metrics"][metric];
        assert!(
            m.is_object(),
            "{metric} not compared: {}",
            summary["unavailable_metrics"]
        );
        assert_eq!(m["noise"]["num_other_runs"], 1, "{metric}");
        // Both real runs against the simulator: every statistic has a verdict, a band of
        // the two runs' values and (10 requests) no P90/P95/P99 for the request metrics.
        let f = &m["fidelity"];
        assert_eq!(f["num_real_runs"], 2, "{metric}");
        let p50 = &f["cells"]["p50"]["estimate"];
        assert_eq!(p50["real_runs_ms"].as_array().unwrap().len(), 2, "{metric}");
        assert!(p50["real_band_ms"].is_array(), "{metric}: {p50}");
        if metric != "itl" {
            assert_eq!(f["cells"]["p99"]["verdict"], "n_too_small", "{metric}");
        }
    }
    assert_eq!(summary["fidelity"]["noise_measured"], true);
    assert_eq!(summary["metrics"]["itl"]["count"], expected_tokens - 10);
    assert_eq!(summary["runs"]["real"].as_array().unwrap().len(), 2);
    // The predictor the simulator used replays every real iteration, and the busy-time gap
    // splits exactly into its three parts.
    let attribution = &summary["attribution"];
    assert_eq!(attribution["source"], "replay:native");
    assert_eq!(
        attribution["iterations_covered"],
        attribution["real_iterations"]
    );
    let d = &attribution["decomposition"];
    let part = |k: &str| d[k].as_f64().unwrap();
    let sum = part("execution_ms") + part("cpu_overhead_ms") + part("scheduling_ms");
    assert!(
        (sum - part("gap_ms")).abs() < 1e-6 * part("real_busy_ms"),
        "{d}"
    );
    let verdict = summary["verdict"].as_str().unwrap();
    assert!(
        verdict.starts_with("Against 2 real runs of the same workload (10 requests in every run)"),
        "{verdict}"
    );
    assert!(
        verdict.contains("Not reported, from fewer samples"),
        "{verdict}"
    );
    let _: serde_json::Value =
        read_json_validated(dir.join("run_meta.json"), &RunMeta::schema()).unwrap();

    // Figures: non-empty PNGs of the configured size, each with its SVG.
    let figures = dir.join("figures");
    let mut pngs = 0;
    for entry in std::fs::read_dir(&figures).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "png") {
            pngs += 1;
            assert_eq!(png_size(&path), (WIDTH_PX, HEIGHT_PX), "{}", path.display());
            assert!(
                std::fs::metadata(&path).unwrap().len() > 5_000,
                "{} is nearly empty",
                path.display()
            );
            let svg = path.with_extension("svg");
            assert!(
                std::fs::read_to_string(&svg).unwrap().contains("<svg"),
                "{}",
                svg.display()
            );
        }
    }
    for key in [
        "cdf_ttft",
        "cdf_tpot",
        "cdf_itl",
        "cdf_e2e",
        "cdf_queue_delay",
        "error_bars_ttft",
        "error_bars_e2e",
        "scatter_ttft",
        "scatter_e2e",
        "error_hist_e2e",
        "iteration_time",
        "iteration_time_by_batch_size",
        "timeline",
        "attribution",
    ] {
        assert!(
            figures.join(format!("{key}.png")).is_file(),
            "missing figure {key}"
        );
    }
    assert!(pngs >= 14);

    // Reports: the verdict comes first; the HTML embeds every figure.
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let first_section = md.lines().find(|l| l.starts_with("## ")).unwrap();
    assert_eq!(first_section, "## Verdict");
    assert!(md.contains("figures/cdf_ttft.png"));
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert_eq!(html.matches("data:image/png;base64,").count(), pngs);
    assert!(
        !html.contains("src=\"figures/"),
        "the HTML must be self-contained"
    );

    // Repeating the stage reuses the complete run.
    assert_eq!(compare(&job(Stage::Compare, root, &runs)).unwrap(), dir);

    // Refusals: a "simulated" run of another workload, or with another KV pool.
    let other = root.join("real").join("other-workload");
    copy_dir(&b, &other);
    let meta_path = other.join("run_meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["inputs"]["workload"]["id"] = "wl-someone-else".into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let err = compare(&job(
        Stage::Compare,
        root,
        &[
            format!("compare.real_run={}", a.display()),
            format!("compare.sim_run={}", other.display()),
        ],
    ))
    .unwrap_err();
    assert!(matches!(err, Error::Mismatch(_)), "{err}");
    assert!(err.to_string().contains("workload"), "{err}");
    meta["inputs"]["workload"]["id"] = serde_json::Value::String(
        serde_json::from_str::<serde_json::Value>(
            &std::fs::read_to_string(a.join("run_meta.json")).unwrap(),
        )
        .unwrap()["inputs"]["workload"]["id"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    meta["extra"]["kv_pool"]["num_blocks"] = 7.into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let err = compare(&job(
        Stage::Compare,
        root,
        &[
            format!("compare.real_run={}", a.display()),
            format!("compare.sim_run={}", other.display()),
        ],
    ))
    .unwrap_err();
    assert!(err.to_string().contains("KV blocks"), "{err}");

    interop_sides_compare_against_our_runs(root, &a, &b);

    // The runs another seed would produce do not exist: the error names the command that
    // makes them.
    let err = compare(&job(
        Stage::Compare,
        root,
        &["workload.seed=99".to_string()],
    ))
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::MissingInput { .. }), "{msg}");
    assert!(msg.contains("cargo run --release --bin"), "{msg}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn seconds(ns: u64) -> String {
    format!("{:.9}", ns as f64 / 1e9)
}

/// Rewrites run `b` as Vidur's `request_metrics.csv` (the simulated side) and as a vLLM
/// benchmark JSON (the real side) and compares each with run `a`.
fn interop_sides_compare_against_our_runs(root: &Path, a: &Path, b: &Path) {
    let rows: Vec<RequestMetricsRow> =
        read_csv(b.join("request_metrics.csv"), &REQUEST_METRICS).unwrap();
    let vidur = root.join("vidur_output");
    std::fs::create_dir_all(&vidur).unwrap();
    let mut csv = String::from(
        "Request Id,request_e2e_time,request_scheduling_delay,prefill_e2e_time,request_inter_arrival_delay,request_num_prefill_tokens,request_num_decode_tokens,request_num_restarts\n",
    );
    let mut previous_arrival = None;
    for r in &rows {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},0\n",
            r.request_id,
            seconds(r.e2e_ns.unwrap()),
            seconds(r.queue_delay_ns.unwrap()),
            seconds(r.ttft_ns.unwrap()),
            previous_arrival.map_or(String::new(), |p| seconds(r.arrival_time_ns - p)),
            r.num_prefill_tokens,
            r.num_decode_tokens,
        ));
        previous_arrival = Some(r.arrival_time_ns);
    }
    std::fs::write(vidur.join("request_metrics.csv"), csv).unwrap();
    let dir = compare(&job(
        Stage::Compare,
        root,
        &[
            format!("compare.real_run={}", a.display()),
            format!("compare.sim_run={}", vidur.display()),
        ],
    ))
    .unwrap();
    let summary: serde_json::Value =
        read_json_validated(dir.join("summary.json"), &CompareSummary::schema()).unwrap();
    assert_eq!(summary["runs"]["sim"]["source"], "vidur_output");
    assert_eq!(summary["join"]["requests_compared"], 10);
    assert!(summary["metrics"]["itl"].is_null());
    assert!(summary["unavailable_metrics"]["itl"]
        .as_str()
        .unwrap()
        .contains("no per-token rows"));
    let compared: Vec<Row> =
        read_csv(dir.join("request_comparison.csv"), &REQUEST_COMPARISON).unwrap();
    for (row, r) in compared.iter().zip(&rows) {
        let ttft: i64 = row["sim_ttft_ns"].parse().unwrap();
        assert!(
            (ttft - r.ttft_ns.unwrap() as i64).abs() <= 1,
            "{ttft} vs {:?}",
            r.ttft_ns
        );
        let e2e: i64 = row["sim_e2e_ns"].parse().unwrap();
        assert!((e2e - r.e2e_ns.unwrap() as i64).abs() <= 1);
    }
    let tokens: Vec<Row> = read_csv(dir.join("token_comparison.csv"), &TOKEN_COMPARISON).unwrap();
    assert!(tokens.is_empty(), "Vidur has no token rows");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        md.contains("no per-token rows"),
        "the report says token rows are omitted"
    );

    // vLLM: per-request TTFT and ITLs in seconds, in request order.
    let tokens: Vec<simreal::io::records::TokenMetricsRow> = read_csv(
        b.join("token_metrics.csv"),
        &simreal::io::schema::TOKEN_METRICS,
    )
    .unwrap();
    let itls: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            tokens
                .iter()
                .filter(|t| t.request_id == r.request_id && t.token_index > 0)
                .map(|t| t.token_latency_ns as f64 / 1e9)
                .collect()
        })
        .collect();
    let json = serde_json::json!({
        "backend": "vllm",
        "model_id": "Qwen/Qwen3-tiny",
        "input_lens": rows.iter().map(|r| r.num_prefill_tokens).collect::<Vec<_>>(),
        "output_lens": rows.iter().map(|r| r.num_decode_tokens_actual).collect::<Vec<_>>(),
        "ttfts": rows.iter().map(|r| r.ttft_ns.unwrap() as f64 / 1e9).collect::<Vec<_>>(),
        "itls": itls,
        "errors": rows.iter().map(|_| "").collect::<Vec<_>>(),
    });
    let vllm = root.join("vllm-result.json");
    std::fs::write(&vllm, json.to_string()).unwrap();
    let dir = compare(&job(
        Stage::Compare,
        root,
        &[
            format!("compare.real_run={}", vllm.display()),
            format!("compare.sim_run={}", a.display()),
        ],
    ))
    .unwrap();
    let summary: serde_json::Value =
        read_json_validated(dir.join("summary.json"), &CompareSummary::schema()).unwrap();
    assert_eq!(summary["runs"]["real"][0]["source"], "vllm_benchmark");
    assert!(
        summary["metrics"]["queue_delay"].is_null(),
        "vLLM measures no queue delay"
    );
    let total: u32 = rows.iter().map(|r| r.num_decode_tokens).sum();
    assert_eq!(summary["metrics"]["itl"]["count"], total - 10);
}

/// Rewrites the bundle's recorded device (`measured_on` in `profiling_meta.json`).
fn relabel_bundle(bundle: &Path, measured_on: serde_json::Value) {
    let path = bundle.join("profiling_meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    meta["measured_on"] = measured_on;
    std::fs::write(&path, meta.to_string()).unwrap();
}

#[test]
fn a_bundle_measured_on_another_device_is_refused_unless_the_study_is_cross_device() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    simreal::stages::workload::run(&job(Stage::Workload, root, &[])).unwrap();
    let real = simreal::stages::real::run(&job(Stage::Real, root, &[])).unwrap();
    let real_meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(real.join("run_meta.json")).unwrap())
            .unwrap();
    let ran_on = real_meta["extra"]["device"].clone();
    assert_eq!(ran_on["kind"], "cpu", "{ran_on}");
    assert_eq!(ran_on["dtype"], "f32", "{ran_on}");
    let bundle = write_bundle(&job(Stage::VidurProfile, root, &[]));

    // Measured where the run ran: every stage accepts it and says nothing.
    relabel_bundle(&bundle, ran_on.clone());
    simreal::stages::vidur::run(&job(Stage::Vidur, root, &[])).unwrap();
    let summary: serde_json::Value = read_json_validated(
        compare(&job(Stage::Compare, root, &[]))
            .unwrap()
            .join("summary.json"),
        &CompareSummary::schema(),
    )
    .unwrap();
    assert_eq!(summary["cross_device"], serde_json::Value::Null);

    // The same bundle labelled as measured on a GPU in bf16.
    let mut gpu = ran_on.clone();
    gpu["kind"] = "cuda".into();
    gpu["sku"] = "h200".into();
    gpu["dtype"] = "bf16".into();
    gpu["name"] = "NVIDIA H200".into();
    relabel_bundle(&bundle, gpu);
    let refused = |err: Error, run_side: &str| {
        let msg = err.to_string();
        assert!(matches!(err, Error::Mismatch(_)), "{msg}");
        assert!(msg.contains(&bundle.display().to_string()), "{msg}");
        assert!(msg.contains("cuda `NVIDIA H200` (h200, bf16)"), "{msg}");
        assert!(msg.contains(run_side), "{msg}");
        assert!(msg.contains("vidur.cross_device=true"), "{msg}");
    };
    let force = ["output.force=true".to_string()];
    refused(
        simreal::stages::vidur::run(&job(Stage::Vidur, root, &force)).unwrap_err(),
        "this config simulates cpu (cpu, f32)",
    );
    let real_side = format!("real run {} ran on cpu", real.display());
    // The simulated run made before the relabel names the bundle; compare reads it there.
    refused(
        compare(&job(Stage::Compare, root, &force)).unwrap_err(),
        &real_side,
    );
    refused(
        simreal::stages::replay::run(&job(Stage::Vidur, root, &force)).unwrap_err(),
        &real_side,
    );

    // A cross-device study says so first.
    let cross = [
        "vidur.cross_device=true".to_string(),
        "output.force=true".to_string(),
    ];
    simreal::stages::vidur::run(&job(Stage::Vidur, root, &cross)).unwrap();
    let dir = compare(&job(Stage::Compare, root, &cross)).unwrap();
    let summary: serde_json::Value =
        read_json_validated(dir.join("summary.json"), &CompareSummary::schema()).unwrap();
    let sentence = summary["cross_device"].as_str().unwrap();
    assert!(sentence.starts_with("Cross-device study"), "{sentence}");
    assert!(sentence.contains("dtype bf16 vs f32"), "{sentence}");
    assert!(summary["verdict"].as_str().unwrap().starts_with(sentence));
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let verdict = md.split("## Verdict").nth(1).unwrap().trim_start();
    assert!(verdict.starts_with("Cross-device study"), "{verdict}");
    // This bundle has no CPU overheads to charge.
    let replay_cross = [cross[0].clone(), "vidur.cpu_overheads=false".to_string()];
    let replay = simreal::stages::replay::run(&job(Stage::Vidur, root, &replay_cross)).unwrap();
    let replay_summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(replay.join("replay_summary.json")).unwrap())
            .unwrap();
    assert!(replay_summary["inputs"]["cross_device"]["differences"].is_array());

    // A bundle of ours from before bundles recorded their device was measured on the CPU at
    // its `details.dtype`: one "profiled" in bf16 is refused for this f32 run.
    relabel_bundle(&bundle, serde_json::Value::Null);
    let path = bundle.join("profiling_meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    meta.as_object_mut().unwrap().remove("measured_on");
    meta["details"]["dtype"] = "bf16".into();
    std::fs::write(&path, meta.to_string()).unwrap();
    refused_legacy(compare(&job(Stage::Compare, root, &force)).unwrap_err());
}

fn refused_legacy(err: Error) {
    let msg = err.to_string();
    assert!(matches!(err, Error::Mismatch(_)), "{msg}");
    assert!(msg.contains("dtype bf16 vs f32"), "{msg}");
}
