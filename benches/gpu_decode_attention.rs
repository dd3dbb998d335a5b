//! Decode on the GPU: our paged CUDA kernel (`AttentionPath::CudaKernels`, the default) against
//! the tensor-op path it replaced (`TensorOps`: contexts gathered and padded to the longest),
//! on Qwen3-0.6B in bf16 with synthesized weights.
//!
//! For each (batch, context) cell, decode iterations run alternately on two caches of the two
//! layouts (A, B, A, B, ...): whole forwards timed by the wall clock (device synchronized) and
//! by CUDA events around the forward, then forwards with per-op events for `attn_decode`'s own
//! GPU time. Contexts are ragged within a batch (each sequence's context is drawn from
//! [context/2, context]), as in serving; the tensor path pays for padding to the longest.
//!
//! Needs a GPU and `--features cuda`; `tools/gpu_check.sh` runs the binary that
//! `tools/cuda_build_check.sh --package` packs. Knobs: `SIMREAL_GPU_BENCH_REPS` (timed
//! forwards per path and cell, default 20), `SIMREAL_BENCH_OUT` (default
//! `benches/results/gpu`). Writes `gpu_decode_attention.{json,md}` there.

mod common;

use common::{env_usize, median};

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use serde::Serialize;
use serde_json::json;
use simreal::io::ops::Op;
use simreal::real_bench::model::*;

const BLOCK: usize = 16;
const SEED: u64 = 7;
/// (decode batch, longest context in tokens).
const CELLS: [(usize, usize); 8] = [
    (1, 256),
    (1, 2048),
    (8, 256),
    (8, 1024),
    (8, 2048),
    (32, 1024),
    (32, 2048),
    (64, 2048),
];
const PATHS: [AttentionPath; 2] = [AttentionPath::TensorOps, AttentionPath::CudaKernels];

#[derive(Debug, Default, Serialize)]
struct PathTimes {
    forward_wall_ms: Vec<f64>,
    forward_gpu_ms: Vec<f64>,
    attn_decode_gpu_ms: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct Cell {
    batch: usize,
    max_context: usize,
    context_tokens: usize,
    tensor_ops: Summary,
    cuda_kernels: Summary,
    /// tensor ops ÷ kernel, medians.
    attn_decode_speedup: f64,
    forward_speedup: f64,
}

#[derive(Debug, Serialize)]
struct Summary {
    forward_wall_ms: f64,
    forward_gpu_ms: f64,
    attn_decode_gpu_ms: f64,
    /// Relative spread of the forward's GPU time: (p90 − p10) / median.
    forward_gpu_spread: f64,
}

fn summarize(t: &PathTimes) -> Summary {
    let mut sorted = t.forward_gpu_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let q = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    Summary {
        forward_wall_ms: median(&t.forward_wall_ms),
        forward_gpu_ms: median(&t.forward_gpu_ms),
        attn_decode_gpu_ms: median(&t.attn_decode_gpu_ms),
        forward_gpu_spread: (q(0.9) - q(0.1)) / median(&t.forward_gpu_ms),
    }
}

fn main() -> Result<()> {
    let reps = env_usize("SIMREAL_GPU_BENCH_REPS", 20)?;
    anyhow::ensure!(reps > 0, "SIMREAL_GPU_BENCH_REPS must be at least 1");
    let out_dir = std::env::var_os("SIMREAL_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/results/gpu"));
    let device = Device::new_cuda(0).context("this bench needs CUDA device 0")?;
    let cfg = Qwen3Config::qwen3_0_6b();
    let source = WeightSource::Random {
        seed: SEED,
        config: cfg.clone(),
    };
    let model = Qwen3Model::load(&source, DType::BF16, &device)?;
    let blocks_per_seq = CELLS.iter().map(|c| c.1).max().unwrap_or(0).div_ceil(BLOCK);
    let num_blocks = CELLS.iter().map(|c| c.0).max().unwrap_or(0) * blocks_per_seq;
    let mut caches = PATHS
        .iter()
        .map(|&p| model.new_kv_cache_with_path(num_blocks, BLOCK, p))
        .collect::<simreal::Result<Vec<_>>>()?;
    let started = simreal::io::provenance::utc_now();
    let mut cells = Vec::new();
    for &(batch, max_context) in &CELLS {
        // Ragged contexts in [max/2, max], the longest first; disjoint block tables.
        let contexts: Vec<usize> = (0..batch)
            .map(|i| max_context - (i * max_context / 2) / batch.max(2))
            .collect();
        let tables: Vec<Vec<usize>> = (0..batch)
            .map(|i| (i * blocks_per_seq..(i + 1) * blocks_per_seq).collect())
            .collect();
        let token = [1u32];
        let seqs: Vec<SequenceInput> = (0..batch)
            .map(|i| SequenceInput {
                token_ids: &token,
                num_cached_tokens: contexts[i] - 1,
                block_table: &tables[i],
                wants_logits: true,
            })
            .collect();
        let mut times: Vec<PathTimes> = PATHS.iter().map(|_| PathTimes::default()).collect();
        let mut timer = OpTotals::default();
        // Warm-up (the kernel's PTX is compiled by the driver on first use), then A, B, A, B.
        for rep in 0..reps + 3 {
            for (p, cache) in caches.iter_mut().enumerate() {
                let batch_in = model.prepare_batch(cache, &seqs)?;
                timer.reset();
                timer.set_per_op(false);
                device.synchronize()?;
                let t0 = Instant::now();
                let logits = model.forward(&batch_in, cache, Some(&mut timer))?;
                device.synchronize()?;
                let wall = t0.elapsed();
                drop(logits);
                let gpu = timer.device_forward().context("no GPU forward time")?;
                timer.reset();
                timer.set_per_op(true);
                model.forward(&batch_in, cache, Some(&mut timer))?;
                if rep >= 3 {
                    let t = &mut times[p];
                    t.forward_wall_ms.push(wall.as_secs_f64() * 1e3);
                    t.forward_gpu_ms.push(gpu.as_secs_f64() * 1e3);
                    t.attn_decode_gpu_ms
                        .push(timer.total(Op::AttnDecode).as_secs_f64() * 1e3);
                }
            }
        }
        let (tensor_ops, cuda_kernels) = (summarize(&times[0]), summarize(&times[1]));
        let cell = Cell {
            batch,
            max_context,
            context_tokens: contexts.iter().sum(),
            attn_decode_speedup: tensor_ops.attn_decode_gpu_ms / cuda_kernels.attn_decode_gpu_ms,
            forward_speedup: tensor_ops.forward_gpu_ms / cuda_kernels.forward_gpu_ms,
            tensor_ops,
            cuda_kernels,
        };
        eprintln!(
            "batch {batch:>3} ctx ≤{max_context:>5}: attn_decode {:.3} → {:.3} ms ({:.2}×), forward {:.3} → {:.3} ms GPU",
            cell.tensor_ops.attn_decode_gpu_ms,
            cell.cuda_kernels.attn_decode_gpu_ms,
            cell.attn_decode_speedup,
            cell.tensor_ops.forward_gpu_ms,
            cell.cuda_kernels.forward_gpu_ms
        );
        cells.push(cell);
    }
    write_results(&out_dir, &started, reps, &cells)
}

fn write_results(out_dir: &PathBuf, started: &str, reps: usize, cells: &[Cell]) -> Result<()> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let gpu = simreal::real_bench::cuda::GpuFingerprint::collect(0)?;
    let device = format!(
        "{} (compute capability {}, driver CUDA {})",
        gpu.name, gpu.compute_capability, gpu.driver_cuda_version
    );
    let json = json!({
        "bench": "gpu_decode_attention",
        "started_utc": started,
        "finished_utc": simreal::io::provenance::utc_now(),
        "device": device,
        "model": "qwen3_0_6b (synthesized, bf16)",
        "block_size": BLOCK,
        "reps_per_path": reps,
        "order": "interleaved per forward: tensor_ops, cuda_kernels, ...",
        "cells": cells,
    });
    let path = out_dir.join("gpu_decode_attention.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    let mut md = format!(
        "# Decode attention on the GPU: paged CUDA kernel vs tensor ops\n\n\
         {device}, Qwen3-0.6B bf16 (synthesized weights), block size {BLOCK}, {reps} forwards \
         per path and cell, interleaved; contexts ragged in [max/2, max]. Medians; GPU times \
         from CUDA events; spread = (p90 − p10) / median of the forward's GPU time.\n\n\
         | batch | max ctx | attn_decode tensor ops ms | attn_decode kernel ms | speedup | forward tensor ops ms | forward kernel ms | speedup | spread (ops / kernel) | wall ms (ops / kernel) |\n\
         |---|---|---|---|---|---|---|---|---|---|\n"
    );
    for c in cells {
        md += &format!(
            "| {} | {} | {:.3} | {:.3} | {:.2}× | {:.3} | {:.3} | {:.2}× | {:.1} % / {:.1} % | {:.3} / {:.3} |\n",
            c.batch,
            c.max_context,
            c.tensor_ops.attn_decode_gpu_ms,
            c.cuda_kernels.attn_decode_gpu_ms,
            c.attn_decode_speedup,
            c.tensor_ops.forward_gpu_ms,
            c.cuda_kernels.forward_gpu_ms,
            c.forward_speedup,
            c.tensor_ops.forward_gpu_spread * 100.0,
            c.cuda_kernels.forward_gpu_spread * 100.0,
            c.tensor_ops.forward_wall_ms,
            c.cuda_kernels.forward_wall_ms,
        );
    }
    let path = out_dir.join("gpu_decode_attention.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
