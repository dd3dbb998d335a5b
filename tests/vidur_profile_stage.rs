//! The `vidur_profile` stage and the batch-replay tool on `qwen3_tiny` with a tiny grid:
//! the bundle validates and loads back, reruns are up to date, bad inputs fail clearly, and
//! a replay of a real run has a row per iteration. No timing thresholds (noisy machine).

#![cfg(feature = "engine")]

use std::path::{Path, PathBuf};

use simreal::io::bundle::{Op, OpStatistic, ProfilingMeta};
use simreal::io::records::BatchMetricsRow;
use simreal::io::schema::BATCH_METRICS;
use simreal::io::{read_csv, Stage};
use simreal::stages::bundle::load_bundle;
use simreal::stages::replay::{self, read_real_run};
use simreal::stages::vidur_profile;
use simreal::stages::Job;
use simreal::Error;

mod common;
use common::TINY_PROFILE_GRID;

fn out_root(case: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("vidur_profile_stage")
        .join(case);
    let _ = std::fs::remove_dir_all(&root);
    root
}

fn job(stage: Stage, root: &Path, extra: &[&str]) -> Job {
    let root_override = format!("output.root={}", root.display());
    let mut overrides: Vec<&str> = TINY_PROFILE_GRID.to_vec();
    overrides.push("model=qwen3_tiny");
    overrides.push(&root_override);
    overrides.extend_from_slice(extra);
    Job::from_overrides(stage, &overrides).expect("config composes")
}

#[test]
fn profile_writes_a_bundle_that_loads_and_reruns_up_to_date() {
    let root = out_root("bundle");
    let job = job(Stage::VidurProfile, &root, &[]);
    let dir = vidur_profile::run(&job).unwrap();
    assert_eq!(dir, job.config.bundle_dir().unwrap());
    let model_dir = dir.join("compute/cpu/simreal/Qwen3-tiny");
    for file in [
        model_dir.join("mlp.csv"),
        model_dir.join("attention.csv"),
        dir.join("cpu_overhead/cpu/simreal/Qwen3-tiny/cpu_overheads.csv"),
        dir.join("profiling_meta.json"),
        dir.join("predictor_report.json"),
        dir.join("predictor_report.md"),
        dir.join("run_meta.json"),
        dir.join("config.yaml"),
        dir.join("_SUCCESS"),
    ] {
        assert!(file.is_file(), "{} is missing", file.display());
    }

    let bundle = load_bundle(&job.config, &dir).unwrap();
    // Token counts: 1, 2 (decode batches), 3 (extra), 8, 16 (chunks).
    let tokens: Vec<u32> = bundle.mlp.rows.iter().map(|r| r.num_tokens).collect();
    assert_eq!(tokens, vec![1, 2, 3, 8, 16]);
    for op in [
        Op::Emb,
        Op::AttnPreProj,
        Op::AttnQkNorm,
        Op::MlpUpProj,
        Op::Add,
        Op::FinalNorm,
        Op::LmHead,
        Op::Sampler,
    ] {
        assert!(bundle.has_op(op), "{op} missing");
    }
    assert!(bundle.has_op(Op::AttnKvCacheSave));
    assert_eq!(bundle.attention.decode_points(OpStatistic::Median).len(), 4);
    assert_eq!(
        bundle.attention.prefill_points(OpStatistic::Median).len(),
        4
    );
    assert_eq!(
        bundle.attention.profile_method.as_deref(),
        Some("in_forward")
    );
    let cpu = bundle.cpu_overheads.as_ref().unwrap();
    assert_eq!(
        cpu.rows.iter().map(|r| r.batch_size).collect::<Vec<_>>(),
        vec![1, 2]
    );

    let meta = ProfilingMeta::read(&dir.join("profiling_meta.json")).unwrap();
    assert_eq!(meta.device, "cpu");
    assert_eq!(meta.model_name, "simreal/Qwen3-tiny");
    for key in [
        "device_fingerprint",
        "threads",
        "dtype",
        "grid",
        "git_commit",
        "date",
        "device_speed_response",
    ] {
        assert!(meta.details.contains_key(key), "profiling_meta lacks {key}");
    }
    assert_eq!(meta.details["threads"], 2);
    assert_eq!(meta.details["grid"]["repeats"], 1);
    // Single-token shapes run more forwards than the others.
    assert_eq!(meta.details["grid"]["single_token_repeats"], 9);
    // How each size of forward answered the memory state: null without a quick probe during
    // the grid (a tiny model's may be over before the first is due), else six size buckets
    // over the timed forwards.
    let response = &meta.details["device_speed_response"];
    if !response.is_null() {
        let buckets = response["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 6);
        let forwards: u64 = buckets
            .iter()
            .map(|b| b["forwards"].as_u64().unwrap())
            .sum();
        assert!(forwards <= meta.details["num_forwards"].as_u64().unwrap());
        assert!(response["reference_gb_per_s"].as_f64().unwrap() > 0.0);
        // Per op as well (empty where too few forwards ran in either state).
        assert!(buckets.iter().all(|b| b["op_fast_time_ratio"].is_object()));
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("predictor_report.json")).unwrap())
            .unwrap();
    assert!(report["ops"]["attn_decode"].is_object());
    // The report names the committed bundle, not the staging dir it was written in.
    assert_eq!(report["bundle_root"], dir.display().to_string());

    // Same config ⇒ same bundle, not recomputed.
    let marker = std::fs::metadata(dir.join("_SUCCESS"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(vidur_profile::run(&job).unwrap(), dir);
    let again = std::fs::metadata(dir.join("_SUCCESS"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(marker, again, "a complete bundle must be reused");

    // Bad inputs. A bundle for another model:
    let other = Job::from_overrides(Stage::Vidur, &["model=qwen3_0_6b"]).unwrap();
    let err = load_bundle(&other.config, &dir).unwrap_err();
    assert!(matches!(err, Error::Mismatch(_)), "{err}");
    assert!(err.to_string().contains("Qwen/Qwen3-0.6B"), "{err}");
    // A truncated CSV (cut mid-row):
    let copy = root.join("truncated");
    copy_dir(&dir, &copy);
    let mlp = copy.join("compute/cpu/simreal/Qwen3-tiny/mlp.csv");
    let text = std::fs::read_to_string(&mlp).unwrap();
    std::fs::write(&mlp, &text[..text.len() - 7]).unwrap();
    let err = load_bundle(&job.config, &copy).unwrap_err().to_string();
    assert!(
        err.contains("mlp.csv") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn empty_or_unfittable_grids_are_config_errors() {
    let root = out_root("bad_grid");
    let err = Job::from_overrides(
        Stage::VidurProfile,
        &["model=qwen3_tiny", "profile.decode_kv_sizes=[]"],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("profile.decode_kv_sizes") && err.contains("empty"),
        "{err}"
    );
    let err = Job::from_overrides(
        Stage::VidurProfile,
        &["model=qwen3_tiny", "profile.prefill_chunk_sizes=[1,8]"],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("profile.prefill_chunk_sizes"), "{err}");
    // Every prefill point beyond max_model_len: nothing to profile, and no run dir is left.
    let job = job(
        Stage::VidurProfile,
        &root,
        &["profile.prefill_kv_sizes=[5000]"],
    );
    let err = vidur_profile::run(&job).unwrap_err().to_string();
    assert!(
        err.contains("no prefill attention grid point fits"),
        "{err}"
    );
    assert!(!job.config.bundle_dir().unwrap().exists());
}

#[test]
fn replay_of_a_real_run_has_a_row_per_iteration() {
    let root = out_root("replay");
    // Huge pages on: the run records how much it put on them (or why it could not).
    let extra = [
        "workload.num_requests=6",
        "workload.qps=40",
        "timing.huge_pages=true",
    ];
    let profile = job(Stage::VidurProfile, &root, &extra);
    vidur_profile::run(&profile).unwrap();
    simreal::stages::workload::run(&profile.for_stage(Stage::Workload)).unwrap();
    let real_dir = simreal::stages::real::run(&profile.for_stage(Stage::Real)).unwrap();

    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(real_dir.join("run_meta.json")).unwrap())
            .unwrap();
    let timing = &meta["extra"]["timing"];
    let refused = timing["refused"].as_array().unwrap();
    assert!(
        timing["huge_page_bytes"].as_u64().unwrap() >= 60 << 20
            || refused
                .iter()
                .any(|r| r.as_str().unwrap().starts_with("huge pages:")),
        "the probe window alone is 64 MiB: {timing}"
    );

    let iterations = read_real_run(&real_dir).unwrap();
    let batches: Vec<BatchMetricsRow> =
        read_csv(real_dir.join("batch_metrics.csv"), &BATCH_METRICS).unwrap();
    assert_eq!(iterations.len(), batches.len());
    // Every request emits one token per iteration it completes a prefill or decodes in, so
    // the logits rows over the run are the run's tokens: 6 requests' decode tokens.
    let tokens: u32 = iterations.iter().map(|i| i.num_logits_rows.unwrap()).sum();
    let requests: Vec<simreal::io::records::RequestMetricsRow> = read_csv(
        real_dir.join("request_metrics.csv"),
        &simreal::io::schema::REQUEST_METRICS,
    )
    .unwrap();
    assert_eq!(
        tokens,
        requests.iter().map(|r| r.num_decode_tokens).sum::<u32>()
    );

    let replay = profile.for_stage(Stage::Vidur);
    let out = replay::run(&replay).unwrap();
    assert!(out.starts_with(root.join("replay")) && out.join("_SUCCESS").is_file());
    let csv_text = std::fs::read_to_string(out.join("replay.csv")).unwrap();
    let mut lines = csv_text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    for col in [
        "batch_id",
        "measured_ns",
        "predicted_ns",
        "predicted_model_ns",
        "measured_cpu_overhead_ns",
        "measured_lm_head_ns",
        "predicted_attn_decode_ns",
    ] {
        assert!(header.contains(&col), "replay.csv lacks {col}");
    }
    assert_eq!(lines.count(), batches.len());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("replay_summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["summary"]["num_batches"], batches.len());
    assert_eq!(summary["summary"]["predictor"], "native");
    // Both processes timed the reference iteration, so the replay also reports the errors
    // with the device's drift between them taken out, recomputed here from replay.csv.
    let speed = &summary["device_speed"];
    let factor = speed["real_reference_ms"].as_f64().unwrap()
        / speed["profile_reference_ms"].as_f64().unwrap();
    let adjusted = &summary["speed_adjusted"];
    assert!((adjusted["factor"].as_f64().unwrap() - factor).abs() < 1e-12);
    let (mut measured, mut predicted) = (0f64, 0f64);
    let (m_col, p_col) = (
        header.iter().position(|c| *c == "measured_ns").unwrap(),
        header.iter().position(|c| *c == "predicted_ns").unwrap(),
    );
    for line in csv_text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        measured += f[m_col].parse::<f64>().unwrap();
        predicted += f[p_col].parse::<f64>().unwrap() * factor;
    }
    let want = 100.0 * (predicted - measured) / measured;
    assert!((adjusted["total_error_pct"].as_f64().unwrap() - want).abs() < 1e-6);
    assert_eq!(adjusted["duration"]["count"], batches.len());

    // Explicit dirs give the same replay; a missing real run names the command that makes it.
    let explicit = replay
        .with_overrides(&[
            format!("compare.real_run={}", real_dir.display()),
            format!(
                "vidur.bundle={}",
                profile.config.bundle_dir().unwrap().display()
            ),
        ])
        .unwrap();
    assert_eq!(replay::run(&explicit).unwrap(), out);
    // A bundle of the same dir name elsewhere is another replay, not this one up to date.
    let bundle_dir = profile.config.bundle_dir().unwrap();
    let namesake = root.join("elsewhere").join(bundle_dir.file_name().unwrap());
    copy_dir(&bundle_dir, &namesake);
    let elsewhere = replay
        .with_overrides(&[format!("vidur.bundle={}", namesake.display())])
        .unwrap();
    let elsewhere_out = replay::run(&elsewhere).unwrap();
    assert_ne!(elsewhere_out, out);
    assert!(elsewhere_out.join("_SUCCESS").is_file());
    // Fitting the medians is another replay, not the (default) means one found up to date.
    let medians = replay
        .with_overrides(&["vidur.predictor_statistic=median".to_string()])
        .unwrap();
    let medians_out = replay::run(&medians).unwrap();
    assert_ne!(medians_out, out);
    let medians_summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(medians_out.join("replay_summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(medians_summary["inputs"]["predictor_statistic"], "median");
    assert_eq!(summary["inputs"]["predictor_statistic"], "mean");
    assert_ne!(
        medians_summary["summary"]["total_error_pct"],
        summary["summary"]["total_error_pct"]
    );
    let missing = replay
        .with_overrides(&[format!(
            "compare.real_run={}",
            root.join("no_such_run").display()
        )])
        .unwrap();
    let err = replay::run(&missing).unwrap_err().to_string();
    assert!(
        err.contains("does not exist") && err.contains("bin real"),
        "{err}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
