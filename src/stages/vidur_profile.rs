//! The `vidur_profile` stage: profile the engine's ops on this device into a Vidur bundle.
//!
//! `tmp/vidur_profile/<bundle_id>/`:
//! `compute/<device_sku>/<org>/<model>/{mlp.csv,attention.csv}`,
//! `cpu_overhead/<device_sku>/<org>/<model>/cpu_overheads.csv`, `profiling_meta.json`,
//! `predictor_report.{json,md}` (cross-validated interpolation error per op), `config.yaml`,
//! `run_meta.json`, `_SUCCESS`. The bundle id hashes what determines the timings
//! (architecture, device, dtype, threads, block size, grid), so the same config reuses it.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use crate::config::types::SimrealConfig;
use crate::io::bundle::{
    AttentionTable, Bundle, BundleLocation, BundleWriter, CpuOverheadSource, CpuOverheadTable,
    LoadOptions, MlpTable, ProfilingMeta, PROFILING_META_SCHEMA_VERSION,
};
use crate::io::device::DeviceIdentity;
use crate::io::provenance::{absolute_path, utc_now, HostFingerprint};
use crate::io::records::SpeedPhase;
use crate::io::rundir::Stage;
use crate::io::schema::DEVICE_SPEED;
use crate::io::speed_response::SpeedResponse;
use crate::io::write_csv;
use crate::real_bench::device_probe::load_average_1min;
use crate::real_bench::engine::{Engine, EngineSettings};
use crate::real_bench::model::{Qwen3Model, WeightSource};
use crate::real_bench::profiler::{
    profile_compute, profile_cpu_overheads, ComputeGrid, ComputePlan, Progress,
};
use crate::real_bench::speed_timeline::SpeedTimeline;
use crate::real_bench::threads;
use crate::stages::bundle::bundle_spec;
use crate::stages::real::{
    candle_dtype, check_cuda_built, gpu_fingerprint, open_device, qwen3_config, resolve_weights,
};
use crate::stages::Job;
use crate::vidur_ext::device_speed::probes_time_the_device;
use crate::vidur_ext::predictor::cross_validate;
use crate::{Error, Result};

/// `attention_backend` written to `attention.csv`: which attention implementation was timed.
pub fn attention_backend(device: crate::config::types::Device) -> &'static str {
    match device {
        crate::config::types::Device::Cpu => "simreal_paged_cpu",
        crate::config::types::Device::Cuda => "simreal_paged_cuda",
    }
}
/// `profile_method` written to `attention.csv`: ops timed inside whole forward passes.
pub const PROFILE_METHOD: &str = "in_forward";
/// Seed of the profiler's random token ids and KV-cache contents (timing does not depend on
/// values; fixed so reruns do identical work).
const PROFILE_SEED: u64 = 0x5EED_0F11;

/// The compute grid of a config's `profile` section.
pub fn compute_grid(cfg: &SimrealConfig) -> Result<ComputeGrid> {
    let p = &cfg.profile;
    ComputeGrid::new(ComputeGrid {
        num_tokens: p.num_tokens.clone(),
        decode_batch_sizes: p.decode_batch_sizes.clone(),
        decode_kv_sizes: p.decode_kv_sizes.clone(),
        prefill_chunk_sizes: p.prefill_chunk_sizes.clone(),
        prefill_kv_sizes: p.prefill_kv_sizes.clone(),
        warmup: p.warmup,
        repeats: p.repeats,
        min_samples: p.min_samples,
        single_token_repeats: p.single_token_repeats,
        max_model_len: cfg.model.max_model_len,
    })
}

/// Times of the real engine's warm-up iteration ([`Engine::warm_up`]: a fixed 32-token
/// prefill plus one decode), run in this process before and after profiling. The real stage
/// records the same iteration (`warmup_iteration_ms` in its `run_meta.json`), so `compare`
/// can tell a change of the device's speed between profile and real run from a prediction
/// error. The first time of a process is cold.
fn reference_iteration_ms(model: &Qwen3Model, cfg: &SimrealConfig) -> Result<Vec<f64>> {
    const ITERATIONS: u32 = 5;
    const BLOCKS: usize = 16;
    let mut engine = Engine::new(
        model,
        &cfg.scheduler,
        BLOCKS,
        EngineSettings {
            backend_name: "vidur_profile".into(),
            replica_id: 0,
            max_model_len: cfg.model.max_model_len,
        },
    )?;
    Ok(engine
        .warm_up(ITERATIONS)?
        .iter()
        .map(|d| d.as_secs_f64() * 1e3)
        .collect())
}

/// Probes of the device's speed before and after profiling (`device_speed.csv`).
const PROBES_AT_EACH_END: usize = 3;

/// Runs the stage for one job; returns the bundle dir.
pub fn run(job: &Job) -> Result<PathBuf> {
    let cfg = &job.config;
    qwen3_config(cfg)?;
    if cfg.vidur.tensor_parallel_size != 1 || cfg.vidur.pipeline_parallel_size != 1 {
        return Err(Error::config(
            "vidur.tensor_parallel_size",
            "the CPU engine runs on one device: profile with TP = PP = 1",
        ));
    }
    // Profile where the engine serves: on the configured device, in the configured dtype.
    check_cuda_built(cfg.backend.device)?;
    cfg.check_serving_device()?;
    let grid = compute_grid(cfg)?;
    let bundle_id = job.own_run_id(cfg.bundle_id()?);
    let location = cfg.location(Stage::VidurProfile, bundle_id.clone());
    let pool = cfg.kv_pool()?;
    let block_size = cfg.scheduler.block_size;
    // Plan before touching the run dir, so an unfittable grid fails cleanly.
    let plan = ComputePlan::new(&grid, block_size, pool.num_blocks)?;
    job.write_run(&location, &bundle_id, |staging, meta| {
        threads::init(cfg.hardware.cpu_threads)?;
        let timing = threads::apply_timing(&cfg.timing);
        threads::reset_peak_rss();
        let device = open_device(cfg.backend.device)?;
        let gpu = gpu_fingerprint(&device)?;
        let measured_on = DeviceIdentity::measured(cfg, &meta.env, gpu.as_ref());
        let weights = resolve_weights(cfg)?;
        let model = Qwen3Model::load(
            &WeightSource::Dir(weights.dir.clone()),
            candle_dtype(cfg.dtype()),
            &device,
        )?;
        let cpu_sizes = &cfg.profile.cpu_overhead_batch_sizes;
        let cpu_iterations = cfg.profile.cpu_overhead_iterations;
        let cpu_cost: f64 = cpu_sizes
            .iter()
            .map(|&b| f64::from(b + 8) * f64::from(cpu_iterations + 2))
            .sum();
        eprintln!(
            "vidur_profile: {} on {} ({} threads, {}): {} attention points, {} token points, {} skipped",
            cfg.model.name,
            measured_on.describe(),
            threads::current(),
            cfg.dtype().as_str(),
            plan.attention_points.len(),
            plan.token_points.len(),
            plan.skipped.len()
        );
        let mut progress = Progress::new(plan.cost(&grid, cfg.model.num_hidden_layers) + cpu_cost);
        let mut timeline = SpeedTimeline::new();
        if !probes_time_the_device(cfg) {
            timeline = timeline.without_quick_probes();
        }
        for _ in 0..PROBES_AT_EACH_END {
            timeline.probe(SpeedPhase::Before);
        }
        let started = Instant::now();
        let mut reference_ms = reference_iteration_ms(&model, cfg)?;
        let compute = profile_compute(
            &model,
            &grid,
            &plan,
            block_size,
            PROFILE_SEED,
            &mut progress,
            &mut timeline,
        )?;
        let compute_s = started.elapsed().as_secs_f64();
        progress.phase("CPU overheads in the engine loop");
        let cpu_rows = profile_cpu_overheads(
            &model,
            &cfg.scheduler,
            cpu_sizes,
            cpu_iterations,
            &mut progress,
        )?;
        reference_ms.extend(reference_iteration_ms(&model, cfg)?);
        let total_s = started.elapsed().as_secs_f64();
        for _ in 0..PROBES_AT_EACH_END {
            timeline.probe(SpeedPhase::After);
        }
        progress.finish(&format!(
            "{} forwards, {} mlp rows, {} attention rows, {} cpu rows",
            compute.num_forwards,
            compute.mlp_rows.len(),
            compute.attention_rows.len(),
            cpu_rows.len()
        ));

        let spec = bundle_spec(cfg);
        let bundle_location =
            BundleLocation::new(staging.path(), &cfg.hardware.device_sku, &cfg.model.hf_name)
                .with_cpu_overheads(CpuOverheadSource::Standard);
        let writer = BundleWriter::new(bundle_location.clone())?;
        writer.write_mlp(&[MlpTable {
            spec,
            rows: compute.mlp_rows.clone(),
        }])?;
        writer.write_attention(&[AttentionTable {
            spec,
            max_model_len: Some(cfg.model.max_model_len),
            attention_backend: Some(attention_backend(cfg.backend.device).into()),
            profile_method: Some(PROFILE_METHOD.into()),
            rows: compute.attention_rows.clone(),
        }])?;
        writer.write_cpu_overheads(&[CpuOverheadTable {
            model_name: cfg.model.hf_name.clone(),
            tensor_parallel_degree: 1,
            rows: cpu_rows,
        }])?;
        let host = HostFingerprint::collect(&meta.env.device, threads::current());
        let git = meta.git_commit.clone();
        let details = json!({
            "bundle_id": bundle_id,
            "date": utc_now(),
            "git_commit": git,
            "git_dirty": meta.git_dirty,
            "device_fingerprint": host,
            "threads": threads::current(),
            "timing": timing.applied(),
            "dtype": cfg.dtype().as_str(),
            "weights": weights.provenance,
            "method": "every op (per-layer, attention, emb, final_norm, lm_head) timed inside \
                       Qwen3Model::forward, one sample per layer per forward; token-level ops \
                       pooled over forwards with the same token count; logits ops keyed by \
                       logits rows from decode-shaped forwards (one row per sequence), the \
                       sampler timed right after each forward as the engine does; CPU overheads \
                       from the real engine loop's decode iterations at each batch size",
            "grid": grid,
            "plan": plan,
            "cpu_overhead_batch_sizes": cpu_sizes,
            "cpu_overhead_iterations": cpu_iterations,
            "forward_overhead": compute.forward_overhead,
            "num_forwards": compute.num_forwards,
            "profile_compute_s": compute_s,
            "profile_total_s": total_s,
            "load_average_1min_at_end": load_average_1min(),
            "reference_iteration_ms": reference_ms,
            "device_speed": timeline.summary(),
            "device_speed_response": SpeedResponse::fit(
                &compute
                    .timed_forwards
                    .iter()
                    .map(|f| f.on_clock(started))
                    .collect::<Vec<_>>(),
                &timeline.quick_rates(started),
            ),
        });
        let mut profiling_meta = ProfilingMeta {
            schema_version: PROFILING_META_SCHEMA_VERSION,
            device: cfg.hardware.device_sku.clone(),
            model_name: cfg.model.hf_name.clone(),
            network_device: None,
            has_cpu_overheads: true,
            models: vec![spec],
            ops: Vec::new(),
            details: details
                .as_object()
                .map(|m| m.clone().into_iter().collect())
                .unwrap_or_default(),
            measured_on: Some(measured_on),
        };
        // Read back what was written: validates the files as any consumer will load them.
        let mut bundle = Bundle::load(&bundle_location, &spec, &LoadOptions::default())?;
        profiling_meta.ops = crate::io::bundle::Op::ALL
            .into_iter()
            .filter(|op| bundle.has_op(*op))
            .map(|op| op.name().to_owned())
            .collect();
        writer.write_meta(&profiling_meta)?;
        write_csv(
            staging.file(DEVICE_SPEED.file_name),
            &DEVICE_SPEED,
            &timeline.rows(started),
        )?;
        // The report names the bundle where it will live, not the staging dir.
        bundle.location.root = staging.final_path().to_path_buf();
        cross_validate(&bundle)?.write(staging.path())?;

        meta.weights = Some(format!(
            "timing only: {}",
            profiling_meta.details["weights"]
        ));
        meta.profiling_root = Some(absolute_path(staging.final_path()));
        meta.extra = json!({
            "bundle_id": bundle_id,
            "threads": threads::current(),
            "num_forwards": compute.num_forwards,
            "profile_total_s": total_s,
            "skipped_grid_points": plan.skipped,
            "peak_rss_bytes": threads::peak_rss_bytes(),
        });
        eprintln!("vidur_profile: bundle written in {total_s:.1} s");
        Ok(())
    })
}
