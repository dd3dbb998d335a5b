//! The shipped config tree: composition, overrides, validation and computed properties,
//! checked against hand-computed numbers.

use simreal::config::types::{Architecture, MemoryPlanner};
use simreal::io::Stage;
use simreal::scheduler::Policy;
use simreal::stages::Job;
use simreal::Error;

fn job(overrides: &[&str]) -> Job {
    Job::from_overrides(Stage::Real, overrides).unwrap_or_else(|e| panic!("{overrides:?}: {e}"))
}

fn err(overrides: &[&str]) -> String {
    match Job::from_overrides(Stage::Real, overrides) {
        Ok(_) => panic!("{overrides:?} should fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_and_alias() {
    let j = job(&[]);
    let c = &j.config;
    assert_eq!(c.model.name, "qwen3_0_6b");
    assert_eq!(c.workload.name, "poisson_synthetic");
    assert_eq!(c.hardware.name, "cpu");
    assert_eq!(c.backend.name, "candle_cpu");
    assert_eq!(c.scheduler.policy, Policy::Sarathi);
    assert_eq!(j.composed.choices["vidur"], "sarathi");
    // `qwen3` is an alias of qwen3_0_6b.
    assert_eq!(job(&["model=qwen3"]).config.model, c.model);
    assert_eq!(job(&["vidur=vllm"]).config.scheduler.policy, Policy::Vllm);
    assert_eq!(
        job(&[
            "model=llama2_70b",
            "hardware=a100_80g",
            "vidur.tensor_parallel_size=2"
        ])
        .config
        .model
        .architecture,
        Architecture::Llama
    );
}

#[test]
fn qwen3_parameter_counts_match_the_published_sizes() {
    // Qwen3-0.6B, tied: 151936·1024 embeddings + 28 layers of 15,730,944 + final norm.
    let m = job(&["model=qwen3_0_6b"]).config.model;
    assert_eq!(m.params_per_layer(), 15_730_944);
    assert_eq!(m.num_parameters(), 596_049_920);
    assert_eq!(
        m.weight_bytes(simreal::config::types::Dtype::F32),
        2_384_199_680
    );
    assert_eq!(
        m.weight_bytes(simreal::config::types::Dtype::Bf16),
        1_192_099_840
    );
    // 2 (K,V) · 28 layers · 8 kv heads · 128 · 4 bytes.
    assert_eq!(
        m.kv_bytes_per_token(simreal::config::types::Dtype::F32, 1, 1),
        229_376
    );
    // Qwen3-8B, untied: 8.19e9.
    let m8 = job(&["model=qwen3_8b", "hardware=a100_80g"]).config.model;
    assert_eq!(m8.num_parameters(), 8_190_735_360);
    for (name, lo, hi) in [("qwen3_1_7b", 1.6e9, 2.1e9), ("qwen3_4b", 3.9e9, 4.1e9)] {
        let p = job(&[&format!("model={name}"), "hardware=a100_80g"])
            .config
            .model
            .num_parameters() as f64;
        assert!((lo..hi).contains(&p), "{name}: {p}");
    }
}

#[test]
fn kv_pool_and_offered_load() {
    let c = job(&[]).config;
    let pool = c.kv_pool().unwrap();
    // (8 GiB · 0.9 − 2,384,199,680 B of weights) / (16 tokens · 229,376 B) = 1456.8.
    assert_eq!(pool.num_blocks, 1456);
    assert_eq!(pool.source, "simreal");
    let load = c.offered_load();
    assert_eq!(load.requests_per_s, Some(0.5));
    assert_eq!(load.expected_duration_s, Some(48.0));
    // uniform total in [32, 320]: mean 176 tokens · 0.5 req/s.
    assert_eq!(load.tokens_per_s, Some(88.0));
    assert_eq!(
        job(&["backend.num_kv_blocks=77"])
            .config
            .kv_pool()
            .unwrap()
            .num_blocks,
        77
    );
    // Vidur's planner with Vidur's own worked values (VIDUR_NOTES.md §1c).
    let vidur = |overrides: &[&str]| {
        let mut all = vec!["hardware=a100_80g"];
        all.extend_from_slice(overrides);
        let c = job(&all).config;
        assert_eq!(c.vidur.memory_planner, MemoryPlanner::Vidur);
        c.kv_pool().unwrap().num_blocks
    };
    assert_eq!(vidur(&["model=llama2_7b"]), 7_424);
    assert_eq!(
        vidur(&["model=llama2_70b", "vidur.tensor_parallel_size=2"]),
        3_328
    );
    assert_eq!(
        vidur(&["model=llama2_70b", "vidur.tensor_parallel_size=4"]),
        32_768
    );
}

#[test]
fn validation_names_key_and_origin() {
    let e = err(&["workload.qps=-1"]);
    assert!(
        e.contains("`workload.qps`") && e.contains("override 'workload.qps=-1'"),
        "{e}"
    );
    let e = err(&["workload.qps=.nan"]);
    assert!(e.contains("workload.qps"), "{e}");
    let e = err(&["workload.lenghts.min_tokens=3"]);
    assert!(e.contains("did you mean `lengths`"), "{e}");
    let e = err(&["scheduler.chunk_size=0"]);
    assert!(e.contains("scheduler.chunk_size"), "{e}");
    let e = err(&[
        "workload=static_burst",
        "workload.intervals.generator=poisson",
    ]);
    assert!(e.contains("workload.qps"), "{e}");
    let e = err(&["workload.lengths={generator: fixed, prefill_tokens: 4000, decode_tokens: 200}"]);
    assert!(e.contains("above the model's context"), "{e}");
    let e = err(&["vidur.tensor_parallel_size=3"]);
    assert!(e.contains("does not divide"), "{e}");
    let e = err(&["model=qwen3_8b"]);
    assert!(e.contains("hardware.memory_bytes"), "{e}");
    // A key added with `+` must still be known to the typed config.
    let e = err(&["+workload.burst=1"]);
    assert!(e.contains("unknown key `burst`"), "{e}");
    let e = err(&["output.run_id=../x"]);
    assert!(e.contains("output.run_id"), "{e}");
    // Vidur's formula fits medians; only the native predictor takes another statistic.
    let e = err(&[
        "vidur.predictor=vidur_compat",
        "vidur.predictor_statistic=mean",
    ]);
    assert!(
        e.contains("vidur.predictor_statistic") && e.contains("only the native predictor"),
        "{e}"
    );
    let e = err(&["vidur.predictor_statistic=average"]);
    assert!(e.contains("predictor_statistic"), "{e}");
    use simreal::io::bundle::OpStatistic;
    assert_eq!(
        job(&["vidur.predictor_statistic=median"])
            .config
            .vidur
            .statistic(),
        OpStatistic::Median
    );
    // Unset: the predictor's own statistic (native fits means, Vidur's predictors medians).
    assert_eq!(job(&[]).config.vidur.statistic(), OpStatistic::Mean);
    assert_eq!(
        job(&["vidur.predictor=vidur_compat"])
            .config
            .vidur
            .statistic(),
        OpStatistic::Median
    );
    // Removing a required key is a typed error naming it.
    let e = err(&["~workload.seed"]);
    assert!(e.contains("seed"), "{e}");
}

#[test]
fn run_ids_are_stable_and_scoped() {
    let a = job(&["model=qwen3_tiny"]).config;
    let b = job(&["model=qwen3_tiny", "vidur=vllm"]).config;
    let c = job(&["model=qwen3_tiny", "workload.seed=7"]).config;
    // The scheduler changes runs but not the workload or the bundle.
    assert_eq!(a.workload_id().unwrap(), b.workload_id().unwrap());
    assert_eq!(a.bundle_id().unwrap(), b.bundle_id().unwrap());
    assert_ne!(a.real_run_id().unwrap(), b.real_run_id().unwrap());
    assert_ne!(a.sim_run_id().unwrap(), b.sim_run_id().unwrap());
    // The seed changes the workload and everything downstream, not the bundle.
    assert_ne!(a.workload_id().unwrap(), c.workload_id().unwrap());
    assert_ne!(a.real_run_id().unwrap(), c.real_run_id().unwrap());
    assert_eq!(a.bundle_id().unwrap(), c.bundle_id().unwrap());
    // Pinned: ids must not change silently across releases.
    assert!(a.workload_id().unwrap().starts_with("wl-qwen3_tiny-"));
    assert_eq!(
        a.workload_id().unwrap(),
        job(&["model=qwen3_tiny"]).config.workload_id().unwrap()
    );
}

#[test]
fn multirun_expands_and_validates_every_combination_first() {
    use simreal::config::expand_multirun;
    let combos = expand_multirun(&[
        "workload.qps=0.5,1,2".to_string(),
        "model=qwen3_tiny,qwen3_0_6b".to_string(),
    ])
    .unwrap();
    assert_eq!(combos.len(), 6);
    for combo in &combos {
        let refs: Vec<&str> = combo.iter().map(String::as_str).collect();
        job(&refs);
    }
    let bad: Vec<String> = vec!["workload.qps=1,-2".into()];
    let combos = expand_multirun(&bad).unwrap();
    let failures = combos
        .iter()
        .filter(|c| {
            let refs: Vec<&str> = c.iter().map(String::as_str).collect();
            matches!(
                Job::from_overrides(Stage::Real, &refs),
                Err(Error::Config { .. })
            )
        })
        .count();
    assert_eq!(failures, 1);
}

#[test]
fn device_speed_correction_is_refused_on_gpu_hardware() {
    // The calibration probes time the host's CPU: nothing to correct a GPU's prediction by.
    let e = err(&[
        "hardware=h200_141g",
        "backend=candle_cuda",
        "vidur.device_speed_correction=true",
    ]);
    assert!(e.contains("vidur.device_speed_correction"), "{e}");
    assert!(e.contains("h200_141g is a cuda device"), "{e}");
    let cpu = job(&["vidur.device_speed_correction=true"]).config;
    assert!(simreal::vidur_ext::device_speed::probes_time_the_device(
        &cpu
    ));
    let gpu = job(&["hardware=h200_141g", "backend=candle_cuda"]).config;
    assert!(!simreal::vidur_ext::device_speed::probes_time_the_device(
        &gpu
    ));
}
