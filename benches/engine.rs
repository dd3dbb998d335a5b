//! Engine-level speed of the Qwen3 model against candle-transformers and, when a PyTorch venv
//! exists, Hugging Face transformers on PyTorch, on the same weights and threads:
//! single-sequence decode, batch-8 and batch-32 decode (ours only at 32), 512-token prefill with
//! its per-op breakdown, the linear kernels per SIMD path, memory bandwidth, FMA peak (8- and
//! 16-lane chains), RSS.
//!
//! `cargo bench --bench engine` (release). Knobs: `SIMREAL_BENCH_THREADS` (default: all
//! cores), `SIMREAL_BENCH_REPEATS` (default 5), `SIMREAL_BENCH_KERNELS_ONLY` (only the
//! linear-kernel crossover table, for kernel work), `SIMREAL_BENCH_SKIP_REFERENCE` (no
//! candle-transformers run), `SIMREAL_TORCH_PYTHON` (the python of the PyTorch venv; default
//! `tmp/torch-venv/bin/python` when it exists, as `bash benches/torch_venv.sh` creates it),
//! `SIMREAL_BENCH_SKIP_TORCH` (no PyTorch run even with a venv). The PyTorch side is
//! `benches/torch_anchor.py`, one child process for the whole bench. Random `qwen3_0_6b` f32
//! weights are synthesized into `tmp/weights/` on first use (no download); the stages use the
//! same snapshot. Writes `benches/results/engine.{json,md}`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::qwen3 as reference;
use rayon::prelude::*;
use serde_json::json;
use simreal::io::ops::Op;
use simreal::real_bench::model::*;

const SEED: u64 = 0;
const CONTEXT: usize = 128;
const DECODE_STEPS: usize = 8;
const BATCH: usize = 8;
/// The larger decode batch measured beside it (ours only).
const LARGE_BATCH: usize = 32;
const PREFILL: usize = 512;
const BLOCK: usize = 16;

/// min / median / max of a sample.
#[derive(Debug, Clone, Copy)]
struct Stats {
    min: f64,
    median: f64,
    max: f64,
}

impl Stats {
    fn of(xs: &[f64]) -> Stats {
        let mut v = xs.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = simreal::quantile::percentile_of_valid(&v, 50.0);
        Stats {
            min: v[0],
            median,
            max: v[n - 1],
        }
    }
    fn json(&self) -> serde_json::Value {
        json!({ "min": self.min, "median": self.median, "max": self.max })
    }
    fn md(&self, digits: usize) -> String {
        format!(
            "{:.d$} / {:.d$} / {:.d$}",
            self.min,
            self.median,
            self.max,
            d = digits
        )
    }
}

/// min / median / max of `xs`, or None for an empty sample (a side that did not run).
fn stats_opt(xs: &[f64]) -> Option<Stats> {
    (!xs.is_empty()).then(|| Stats::of(xs))
}

fn stats_json(s: Option<Stats>) -> serde_json::Value {
    s.map_or(serde_json::Value::Null, |s| s.json())
}

fn stats_md(s: Option<Stats>, digits: usize) -> String {
    s.map_or_else(|| "not run".to_string(), |s| s.md(digits))
}

/// Per repeat, `num[i] / den[i]`: ratios of measurements taken back to back.
fn paired_ratios(num: &[f64], den: &[f64]) -> Vec<f64> {
    num.iter().zip(den).map(|(a, b)| a / b).collect()
}

fn proc_field(file: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// Peak resident set (VmHWM) in MiB.
fn peak_rss_mib() -> f64 {
    proc_field("/proc/self/status", "VmHWM")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// ISA extensions the kernels (ours, candle's gemm, PyTorch's oneDNN/MKL) choose code paths by.
const ISA_FLAGS: [&str; 8] = [
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
];

/// Which of `ISA_FLAGS` the first CPU in /proc/cpuinfo lists.
fn isa_flags() -> Vec<(&'static str, bool)> {
    let flags = proc_field("/proc/cpuinfo", "flags").unwrap_or_default();
    let present: Vec<&str> = flags.split_whitespace().collect();
    ISA_FLAGS
        .iter()
        .map(|f| (*f, present.contains(f)))
        .collect()
}

/// The FMA rate with 16-lane AVX-512 vectors on every thread of the pool, GFLOP/s (best of
/// three runs), or None without AVX-512F. The device probe's chains are 8-lane (AVX2): that is
/// the whole peak where 512-bit FMAs issue as two 256-bit halves (Zen 4) but half of it on CPUs
/// with full-width 512-bit FMA units (Intel Xeon since Skylake-SP), so the prefill's share of
/// the peak is taken against the better of the two.
fn measure_fma512_peak() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return None;
        }
        // ~40 ms per run at ~100 GFLOP/s per thread.
        const ITERATIONS: u64 = 10_000_000;
        let flops_per_thread = (ITERATIONS * fma512::FLOPS_PER_ITERATION) as f64;
        let best_s = (0..3)
            .map(|_| {
                let t = Instant::now();
                let sums = rayon::broadcast(|ctx| {
                    // SAFETY: AVX-512F was detected above.
                    unsafe { fma512::chains(ITERATIONS, ctx.index()) }
                });
                std::hint::black_box(sums);
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        Some(flops_per_thread * rayon::current_num_threads() as f64 / best_s / 1e9)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

#[cfg(target_arch = "x86_64")]
mod fma512 {
    use std::arch::x86_64::*;

    /// Independent chains: 12 cover a 4-cycle FMA latency on two ports with room to spare.
    const CHAINS: usize = 12;
    pub const FLOPS_PER_ITERATION: u64 = (CHAINS * 16 * 2) as u64;

    /// `iterations` rounds of CHAINS independent 16-lane FMAs on registers.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn chains(iterations: u64, seed: usize) -> f32 {
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for (c, a) in acc.iter_mut().enumerate() {
            *a = _mm512_set1_ps((seed + c) as f32 * 1e-3);
        }
        let (a, b) = (_mm512_set1_ps(0.999_9), _mm512_set1_ps(1e-4));
        for _ in 0..iterations {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        let total = acc
            .into_iter()
            .fold(_mm512_setzero_ps(), |t, x| _mm512_add_ps(t, x));
        _mm512_reduce_add_ps(total)
    }
}

/// Token ids of a synthetic prompt. benches/torch_anchor.py computes the same ids.
fn prompt(len: usize, salt: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|i| (i * 7919 + salt * 104_729 + 1) % 151_936)
        .collect()
}

/// A parallel streaming read over a buffer far larger than the caches (1 GiB): the memory
/// bandwidth the decode's weight stream is held against. The read is a sum with 32 independent
/// lanes, compiled for AVX2 when the CPU has it, so it is limited by memory and not by add
/// latency.
struct Bandwidth {
    buf: Vec<f32>,
    avx2: bool,
}

impl Bandwidth {
    fn new() -> Self {
        let buf = (0..(1usize << 28))
            .into_par_iter()
            .map(|i| (i & 7) as f32)
            .collect();
        let avx2 = cfg!(target_arch = "x86_64") && std::arch::is_x86_feature_detected!("avx2");
        let probe = Self { buf, avx2 };
        probe.sample_gb_s(); // the first pass warms the TLB and the pool
        probe
    }

    /// GB/s of one pass over the buffer.
    fn sample_gb_s(&self) -> f64 {
        fn sum_portable(c: &[f32]) -> f32 {
            let mut acc = [0f32; 32];
            for ch in c.chunks_exact(32) {
                for l in 0..32 {
                    acc[l] += ch[l];
                }
            }
            acc.iter().sum()
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn sum_avx2(c: &[f32]) -> f32 {
            sum_portable(c)
        }
        let t = Instant::now();
        let s: f32 = self
            .buf
            .par_chunks(1 << 16)
            .map(|c| {
                #[cfg(target_arch = "x86_64")]
                if self.avx2 {
                    // SAFETY: the CPU supports AVX2 (checked in `new`).
                    return unsafe { sum_avx2(c) };
                }
                sum_portable(c)
            })
            .sum();
        std::hint::black_box(s);
        (self.buf.len() * 4) as f64 / t.elapsed().as_secs_f64() / 1e9
    }
}

/// One row of the linear-kernel table: min ms of `x·Wᵀ` with `m` rows per implementation.
struct LinearRow {
    m: usize,
    /// The small-m kernel and our GEMM, per SIMD level this CPU has (AVX2, and AVX-512
    /// where present).
    small_m_ms: Vec<(kernels::IsaLevel, f64)>,
    gemm_ms: Vec<(kernels::IsaLevel, f64)>,
    candle_ms: f64,
}

/// ms of `x·Wᵀ` for `W: [3072, 1024]` (the gate/up shape) with `m` rows, by the small-m kernel,
/// our GEMM on each SIMD path and candle's matmul, interleaved call by call; the minimum over
/// `4 × repeats` calls (the least disturbed by other load). Calls rotate over eight weight
/// copies (100 MB) so the weights come from DRAM, as in the model, not from the last-level
/// cache.
fn linear_crossover(repeats: usize) -> Result<Vec<LinearRow>> {
    const COPIES: usize = 8;
    let (n, k) = (3072usize, 1024usize);
    let ws: Vec<Vec<f32>> = (0..COPIES)
        .map(|c| {
            (0..n * k)
                .map(|i| (((i + c) % 97) as f32 - 48.0) / 1000.0)
                .collect()
        })
        .collect();
    let wts: Vec<Tensor> = ws
        .iter()
        .map(|w| Tensor::from_slice(w, (n, k), &Device::Cpu))
        .collect::<candle_core::Result<_>>()?;
    let simd: Vec<kernels::Isa> = kernels::Isa::all_supported()
        .into_iter()
        .filter(|i| i.level() != kernels::IsaLevel::Scalar)
        .collect();
    let mut rows = Vec::new();
    for m in [
        1usize, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024,
    ] {
        let x: Vec<f32> = (0..m * k).map(|i| ((i % 13) as f32 - 6.0) / 10.0).collect();
        let xt = Tensor::from_slice(&x, (m, k), &Device::Cpu)?;
        let mut small_m = vec![Vec::new(); simd.len()];
        let mut gemm = vec![Vec::new(); simd.len()];
        let mut candle = Vec::new();
        // Each call reads a different copy than the one before, so none finds it in cache.
        let mut copy = 0;
        let mut next_copy = || {
            copy += 1;
            copy % COPIES
        };
        for _ in 0..repeats * 4 {
            for ((isa, small_m), gemm) in simd.iter().zip(&mut small_m).zip(&mut gemm) {
                let w = &ws[next_copy()];
                let t = Instant::now();
                std::hint::black_box(kernels::linear::matmul_xwt(*isa, &x, m, w, n, k));
                small_m.push(t.elapsed().as_secs_f64() * 1e3);
                let w = &ws[next_copy()];
                let t = Instant::now();
                std::hint::black_box(kernels::gemm::matmul_xwt(*isa, &x, m, w, n, k));
                gemm.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let wt = &wts[next_copy()];
            let t = Instant::now();
            std::hint::black_box(xt.matmul(&wt.t()?)?);
            candle.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let mins = |times: &[Vec<f64>]| {
            simd.iter()
                .zip(times)
                .map(|(isa, t)| (isa.level(), Stats::of(t).min))
                .collect()
        };
        rows.push(LinearRow {
            m,
            small_m_ms: mins(&small_m),
            gemm_ms: mins(&gemm),
            candle_ms: Stats::of(&candle).min,
        });
    }
    Ok(rows)
}

/// The attention shapes timed per SIMD path: (sequences, query rows each, cached tokens) —
/// a single decode, a batch-8 decode, a 512-token prefill.
const ATTENTION_SHAPES: [(usize, usize, usize); 3] = [(1, 1, 128), (8, 1, 128), (1, 512, 0)];

/// Per SIMD path this CPU has: min ms of one layer's paged attention for `seqs` sequences of
/// `rows` query rows each over `context` cached tokens (qwen3_0_6b heads), and the GFLOP/s
/// that is. The paths are interleaved call by call; the cache is small enough to stay in the
/// caches, so this times the loops, not the memory.
fn attention_kernel(
    seqs: usize,
    rows: usize,
    context: usize,
    repeats: usize,
) -> Vec<(kernels::IsaLevel, f64, f64)> {
    use kernels::attention::*;
    let cfg = Qwen3Config::qwen3_0_6b();
    let (nh, nkv, hd) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
    );
    let blocks_per_seq = (context + rows).div_ceil(BLOCK);
    let kv: Vec<f32> = (0..seqs * blocks_per_seq * nkv * BLOCK * hd)
        .map(|i| ((i % 31) as f32 - 15.0) / 50.0)
        .collect();
    let q: Vec<f32> = (0..seqs * rows * nh * hd)
        .map(|i| ((i % 17) as f32 - 8.0) / 20.0)
        .collect();
    let tables: Vec<Vec<usize>> = (0..seqs)
        .map(|s| (s * blocks_per_seq..(s + 1) * blocks_per_seq).collect())
        .collect();
    let attn: Vec<AttnSeq> = (0..seqs)
        .map(|s| AttnSeq {
            row_offset: s * rows,
            num_rows: rows,
            num_cached: context,
            block_table: &tables[s],
        })
        .collect();
    let dims = AttnDims {
        num_heads: nh,
        num_kv_heads: nkv,
        head_dim: hd,
        block_size: BLOCK,
        scale: 1.0 / (hd as f32).sqrt(),
    };
    let mut out = vec![0f32; q.len()];
    let isas = kernels::Isa::all_supported();
    let mut best = vec![f64::INFINITY; isas.len()];
    for _ in 0..repeats * 4 {
        for (isa, best) in isas.iter().zip(&mut best) {
            let t = Instant::now();
            paged_attention(*isa, dims, &q, LayerKv { k: &kv, v: &kv }, &attn, &mut out);
            *best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    // QK and PV: 2 × 2 flops per (query row, head, attended key, dim).
    let attended: usize = (0..rows).map(|t| context + t + 1).sum();
    let flops = 4.0 * (seqs * attended * nh * hd) as f64;
    isas.iter()
        .zip(best)
        .map(|(isa, ms)| (isa.level(), ms, flops / (ms / 1e3) / 1e9))
        .collect()
}

struct Ours {
    load_s: f64,
    cold_prefill_ms: f64,
    cold_decode_ms: f64,
    decode_ms: Vec<f64>,
    /// Per repeat: the memory bandwidth sampled right before that repeat's single decode.
    bandwidth_gb_s: Vec<f64>,
    /// Per op: ms per single-sequence step, ms per batch-8 step, ms of one 512-token prefill.
    ops_ms: Vec<(Op, f64, f64, f64)>,
    batch_decode_tok_s: Vec<f64>,
    /// Per repeat: batch-8 tokens/s ÷ single-sequence tokens/s, measured back to back.
    batch_over_single: Vec<f64>,
    /// The same for a batch of LARGE_BATCH.
    large_batch_tok_s: Vec<f64>,
    large_batch_over_single: Vec<f64>,
    prefill_ms: Vec<f64>,
    /// The device probe's compute rate (8-lane FMAs), before the prefills and after each.
    fma_peak_gflop_s: Vec<f64>,
    /// The same with 16-lane AVX-512 FMAs, next to each probe sample (empty without AVX-512F).
    fma512_peak_gflop_s: Vec<f64>,
    /// VmHWM after loading our model and decoding (before the reference is loaded).
    peak_rss_mib: f64,
    /// candle-transformers: first decode step, and ms/token per repeat (NaN / empty if skipped).
    ref_cold_ms: f64,
    ref_decode_ms: Vec<f64>,
    /// PyTorch: the anchor's `ready` line (None if not run), first decode step ms (NaN if not
    /// run), and per repeat (empty if not run): ms/token, batch-8 tokens/s, prefill ms (the
    /// same indices as ours).
    torch_info: Option<serde_json::Value>,
    torch_cold_ms: f64,
    torch_decode_ms: Vec<f64>,
    torch_batch_tok_s: Vec<f64>,
    torch_prefill_ms: Vec<f64>,
}

/// Our model's measurements. With `reference_dir`, candle-transformers is loaded after our
/// model and its single-sequence decode runs interleaved with ours, repeat by repeat, so that
/// both see the same background load. With `torch_python`, the PyTorch anchor is started after
/// our model and runs each measurement next to ours, in the same repeat (its decode before
/// ours, its batch and prefill after).
fn bench_ours(
    dir: &Path,
    repeats: usize,
    reference_dir: Option<&Path>,
    torch_python: Option<&Path>,
    threads: usize,
) -> Result<Ours> {
    let t = Instant::now();
    let model = Qwen3Model::load(
        &WeightSource::Dir(dir.to_path_buf()),
        DType::F32,
        &Device::Cpu,
    )?;
    let load_s = t.elapsed().as_secs_f64();
    // Sequence 0 also holds the long prefill; the others only a prompt and its decode steps.
    let blocks_first = (PREFILL.max(CONTEXT + DECODE_STEPS)).div_ceil(BLOCK);
    let blocks_other = (CONTEXT + DECODE_STEPS).div_ceil(BLOCK);
    let mut cache = model.new_kv_cache(blocks_first + blocks_other * (LARGE_BATCH - 1), BLOCK)?;
    let tables: Vec<Vec<usize>> = (0..LARGE_BATCH)
        .map(|s| match s {
            0 => (0..blocks_first).collect(),
            _ => {
                let first = blocks_first + (s - 1) * blocks_other;
                (first..first + blocks_other).collect()
            }
        })
        .collect();
    let prompts: Vec<Vec<u32>> = (0..LARGE_BATCH as u32)
        .map(|s| prompt(CONTEXT, s))
        .collect();

    let prefill = |cache: &mut PagedKvCache, s: usize| -> Result<u32> {
        let seq = SequenceInput {
            token_ids: &prompts[s],
            num_cached_tokens: 0,
            block_table: &tables[s],
            wants_logits: true,
        };
        let logits = model.forward_seqs(&[seq], cache, None)?;
        Ok(model.sampler(&logits)?[0])
    };
    // Decode `DECODE_STEPS` tokens for sequences `seqs` from position CONTEXT; returns s/step.
    let decode = |cache: &mut PagedKvCache,
                  seqs: &[usize],
                  first: &[u32],
                  mut timer: Option<&mut OpTotals>|
     -> Result<Vec<f64>> {
        let mut next = first.to_vec();
        let mut times = Vec::new();
        for step in 0..DECODE_STEPS {
            let ids: Vec<[u32; 1]> = next.iter().map(|t| [*t]).collect();
            let inputs: Vec<SequenceInput> = seqs
                .iter()
                .zip(&ids)
                .map(|(&s, id)| SequenceInput {
                    token_ids: id,
                    num_cached_tokens: CONTEXT + step,
                    block_table: &tables[s],
                    wants_logits: true,
                })
                .collect();
            let t = Instant::now();
            let logits = match timer.as_deref_mut() {
                Some(tm) => model.forward_seqs(&inputs, cache, Some(tm))?,
                None => model.forward_seqs(&inputs, cache, None)?,
            };
            next = model.sampler(&logits)?;
            times.push(t.elapsed().as_secs_f64());
        }
        Ok(times)
    };

    let t = Instant::now();
    let first = prefill(&mut cache, 0)?;
    let cold_prefill_ms = t.elapsed().as_secs_f64() * 1e3;
    let cold = decode(&mut cache, &[0], &[first], None)?;
    let cold_decode_ms = cold[0] * 1e3;
    let peak_rss_mib_ours = peak_rss_mib();

    let mut reference = reference_dir.map(Reference::load).transpose()?;
    let mut ref_cold_ms = f64::NAN;
    if let Some(r) = reference.as_mut() {
        ref_cold_ms = r.run()?[0] * 1e3;
    }
    let mut ref_decode_ms = Vec::new();

    let mut torch = torch_python
        .map(|python| Torch::spawn(python, dir, threads))
        .transpose()?;
    let mut torch_cold_ms = f64::NAN;
    if let Some(t) = torch.as_mut() {
        torch_cold_ms = t.decode_ms()?[0];
    }
    let (mut torch_decode_ms, mut torch_batch_tok_s, mut torch_prefill_ms) =
        (Vec::new(), Vec::new(), Vec::new());

    let seqs: Vec<usize> = (0..BATCH).collect();
    let large_seqs: Vec<usize> = (0..LARGE_BATCH).collect();
    let large_firsts: Vec<u32> = (0..LARGE_BATCH)
        .map(|s| prefill(&mut cache, s))
        .collect::<Result<_>>()?;
    let firsts = &large_firsts[..BATCH];
    // Single-sequence, reference, PyTorch and batch runs alternate within each repeat: this
    // host's speed drifts by tens of percent within minutes, and a ratio of medians taken
    // minutes apart would measure the drift. Each repeat's ratios (batch ÷ single, ours ÷ each
    // anchor) are their own samples.
    //
    // The bandwidth probe's buffer is allocated after the RSS reading above (our model's alone).
    let bandwidth = Bandwidth::new();
    let mut bandwidth_gb_s = Vec::new();
    let mut decode_ms = Vec::new();
    let mut batch_decode_tok_s = Vec::new();
    let mut batch_over_single = Vec::new();
    let mut large_batch_tok_s = Vec::new();
    let mut large_batch_over_single = Vec::new();
    for _ in 0..repeats {
        // Each ratio's two sides run next to each other: the anchors' decode, then ours, then
        // our batches (batch ÷ single is ours against ours), then PyTorch's batch. PyTorch
        // runs first so that its worker threads, which spin for a while after their work, do
        // not share the cores with our single-sequence decode.
        if let Some(t) = torch.as_mut() {
            let times_ms = t.decode_ms()?;
            torch_decode_ms.push(times_ms.iter().sum::<f64>() / times_ms.len() as f64);
        }
        if let Some(r) = reference.as_mut() {
            let times = r.run()?;
            ref_decode_ms.push(times.iter().sum::<f64>() / times.len() as f64 * 1e3);
        }
        // The memory's speed changes within minutes here: decode is held against the
        // bandwidth of the same moment, not of the start of the bench.
        bandwidth_gb_s.push(bandwidth.sample_gb_s());
        let times = decode(&mut cache, &[0], &[first], None)?;
        let single_ms = times.iter().sum::<f64>() / times.len() as f64 * 1e3;
        decode_ms.push(single_ms);
        let times = decode(&mut cache, &seqs, firsts, None)?;
        let tok_s = (BATCH * times.len()) as f64 / times.iter().sum::<f64>();
        batch_decode_tok_s.push(tok_s);
        batch_over_single.push(tok_s * single_ms / 1e3);
        let times = decode(&mut cache, &large_seqs, &large_firsts, None)?;
        let tok_s = (LARGE_BATCH * times.len()) as f64 / times.iter().sum::<f64>();
        large_batch_tok_s.push(tok_s);
        large_batch_over_single.push(tok_s * single_ms / 1e3);
        if let Some(t) = torch.as_mut() {
            torch_batch_tok_s.push(t.batch_tokens_per_s()?);
        }
    }
    drop(reference);
    drop(bandwidth);
    let mut ops = OpTotals::default();
    decode(&mut cache, &[0], &[first], Some(&mut ops))?;
    let mut batch_ops = OpTotals::default();
    decode(&mut cache, &seqs, firsts, Some(&mut batch_ops))?;
    let long = prompt(PREFILL, 99);
    let long_seq = SequenceInput {
        token_ids: &long,
        num_cached_tokens: 0,
        block_table: &tables[0],
        wants_logits: true,
    };
    let mut prefill_ms = Vec::new();
    let mut probe = simreal::real_bench::device_probe::DeviceProbe::with_kernels(
        simreal::real_bench::device_probe::ProbeKernels::Synthetic,
    );
    let mut fma_peak_gflop_s = vec![probe.measure().compute_gflop_per_s()];
    let mut fma512_peak_gflop_s: Vec<f64> = measure_fma512_peak().into_iter().collect();
    for _ in 0..repeats.min(3) {
        let t = Instant::now();
        model.forward_seqs(&[long_seq], &mut cache, None)?;
        prefill_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if let Some(t) = torch.as_mut() {
            torch_prefill_ms.push(t.prefill_ms()?);
        }
        fma_peak_gflop_s.push(probe.measure().compute_gflop_per_s());
        fma512_peak_gflop_s.extend(measure_fma512_peak());
    }
    let mut prefill_ops = OpTotals::default();
    model.forward_seqs(&[long_seq], &mut cache, Some(&mut prefill_ops))?;
    let ms = |t: &OpTotals, op, steps: usize| t.total(op).as_secs_f64() * 1e3 / steps as f64;
    let ops_ms = Op::MODEL
        .into_iter()
        .map(|op| {
            let per_step = |t| ms(t, op, DECODE_STEPS);
            (
                op,
                per_step(&ops),
                per_step(&batch_ops),
                ms(&prefill_ops, op, 1),
            )
        })
        .filter(|(_, a, b, c)| *a > 0.0 || *b > 0.0 || *c > 0.0)
        .collect();
    Ok(Ours {
        load_s,
        cold_prefill_ms,
        cold_decode_ms,
        decode_ms,
        bandwidth_gb_s,
        ops_ms,
        batch_decode_tok_s,
        batch_over_single,
        large_batch_tok_s,
        large_batch_over_single,
        prefill_ms,
        fma_peak_gflop_s,
        fma512_peak_gflop_s,
        peak_rss_mib: peak_rss_mib_ours,
        ref_cold_ms,
        ref_decode_ms,
        torch_info: torch.as_ref().map(|t| t.info.clone()),
        torch_cold_ms,
        torch_decode_ms,
        torch_batch_tok_s,
        torch_prefill_ms,
    })
}

/// candle-transformers' Qwen3 on the same weights. One `run` = prefill CONTEXT tokens, then
/// DECODE_STEPS timed decode steps (its concatenating KV cache cannot rewind, so every run
/// re-prefills).
struct Reference {
    model: reference::ModelForCausalLM,
    tokens: Vec<u32>,
}

impl Reference {
    fn load(dir: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(dir.join(CONFIG_FILE))?;
        let cfg: reference::Config = serde_json::from_str(&text)?;
        let tensors = candle_core::safetensors::load(dir.join(WEIGHTS_FILE), &Device::Cpu)?;
        let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        Ok(Self {
            model: reference::ModelForCausalLM::new(&cfg, vb)?,
            tokens: prompt(CONTEXT, 0),
        })
    }

    /// Seconds of each decode step.
    fn run(&mut self) -> Result<Vec<f64>> {
        self.model.clear_kv_cache();
        let input = Tensor::new(self.tokens.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let argmax =
            |t: Tensor| -> Result<u32> { Ok(t.flatten_all()?.argmax(0)?.to_scalar::<u32>()?) };
        let mut next = argmax(self.model.forward(&input, 0)?)?;
        let mut times = Vec::new();
        for step in 0..DECODE_STEPS {
            let input = Tensor::new(&[next], &Device::Cpu)?.unsqueeze(0)?;
            let t = Instant::now();
            next = argmax(self.model.forward(&input, CONTEXT + step)?)?;
            times.push(t.elapsed().as_secs_f64());
        }
        Ok(times)
    }
}

/// Hugging Face transformers' Qwen3 on PyTorch (CPU), float32, on the same weights: the child
/// process benches/torch_anchor.py, started once (loading takes seconds) and asked for one
/// measurement at a time over stdin/stdout, one JSON line each way.
struct Torch {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The anchor's `ready` line: torch and transformers versions, CPU capability, threads.
    info: serde_json::Value,
}

impl Torch {
    fn spawn(python: &Path, dir: &Path, threads: usize) -> Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/torch_anchor.py");
        let shape = [threads, CONTEXT, DECODE_STEPS, BATCH, PREFILL].map(|n| n.to_string());
        let mut child = Command::new(python)
            .arg(&script)
            .arg(dir)
            .args(shape)
            // Between its measurements the child idles while ours is timed: its OpenMP workers
            // must sleep at once rather than spin for a while on the cores ours runs on.
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .env("KMP_BLOCKTIME", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the PyTorch anchor with {}", python.display()))?;
        let stdin = child.stdin.take().context("the anchor's stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("the anchor's stdout")?);
        let mut torch = Self {
            child,
            stdin,
            stdout,
            info: serde_json::Value::Null,
        };
        let info = torch.read("loading")?;
        if info["ready"] != true {
            bail!("the PyTorch anchor's first line is not `ready`: {info}");
        }
        torch.info = info;
        Ok(torch)
    }

    /// The anchor's next line; its `error`, or its exit, is an error here.
    fn read(&mut self, what: &str) -> Result<serde_json::Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let status = self.child.wait()?;
            bail!("the PyTorch anchor exited ({status}) during `{what}` (its stderr is above)");
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("the PyTorch anchor's answer to `{what}`: {line:?}"))?;
        if let Some(e) = value.get("error") {
            bail!("the PyTorch anchor failed during `{what}`: {e}");
        }
        Ok(value)
    }

    fn ask(&mut self, command: &str) -> Result<serde_json::Value> {
        let sent = writeln!(self.stdin, "{command}").and_then(|()| self.stdin.flush());
        if let Err(e) = sent {
            // It has died; its last line (if any) says why better than the broken pipe.
            self.read(command)?;
            return Err(anyhow!(e).context(format!("sending `{command}` to the PyTorch anchor")));
        }
        self.read(command)
    }

    fn number(value: &serde_json::Value, key: &str) -> Result<f64> {
        value[key]
            .as_f64()
            .with_context(|| format!("no number `{key}` in the PyTorch anchor's {value}"))
    }

    /// ms of each single-sequence decode step.
    fn decode_ms(&mut self) -> Result<Vec<f64>> {
        let value = self.ask("decode")?;
        let steps = value["decode_ms"]
            .as_array()
            .with_context(|| format!("no `decode_ms` in the PyTorch anchor's {value}"))?;
        let times_ms: Vec<f64> = steps.iter().filter_map(|x| x.as_f64()).collect();
        if times_ms.len() != DECODE_STEPS {
            bail!("the PyTorch anchor timed {steps:?}, not {DECODE_STEPS} decode steps");
        }
        Ok(times_ms)
    }

    fn batch_tokens_per_s(&mut self) -> Result<f64> {
        Self::number(&self.ask("batch")?, "batch_tokens_per_s")
    }

    fn prefill_ms(&mut self) -> Result<f64> {
        Self::number(&self.ask("prefill")?, "prefill_ms")
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        // `quit` lets it exit on its own; if it is already gone, there is nothing to reap
        // beyond the wait.
        let _ = writeln!(self.stdin, "quit").and_then(|()| self.stdin.flush());
        let _ = self.child.wait();
    }
}

/// The python of the PyTorch venv: `SIMREAL_TORCH_PYTHON`, else `tmp/torch-venv/bin/python`
/// under the repository when it exists; Ok(None) when neither.
fn torch_python(root: &Path) -> Result<Option<PathBuf>> {
    if let Some(p) = std::env::var_os("SIMREAL_TORCH_PYTHON") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("SIMREAL_TORCH_PYTHON={} is not a file", p.display());
        }
        return Ok(Some(p));
    }
    let default = root.join("tmp/torch-venv/bin/python");
    Ok(default.is_file().then_some(default))
}

fn main() -> Result<()> {
    let threads = common::env_usize(
        "SIMREAL_BENCH_THREADS",
        std::thread::available_parallelism()?.get(),
    )?;
    let repeats = common::env_usize("SIMREAL_BENCH_REPEATS", 5)?.max(1);
    // The process set up as the `real` and `vidur_profile` stages set it up: rayon's global
    // pool (also candle's GEMM, sized from RAYON_NUM_THREADS) at `threads`, and the allocator
    // keeping freed activation buffers (without that, a 512-token prefill took ~20 % longer,
    // faulting its outputs' pages in anew every op).
    simreal::real_bench::threads::init(threads)?;

    // Other work on the host skews every number here; record how busy it was.
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cfg = Qwen3Config::qwen3_0_6b();
    // The snapshot the stages use for `model=qwen3_0_6b` (default seed, f32), not a second one.
    let dir = random_weights_dir(&root.join("tmp"), "qwen3_0_6b", SEED, "f32");
    let weights_sha256 = if dir.join(WEIGHTS_FILE).is_file() {
        sha256_file(&dir.join(WEIGHTS_FILE))?
    } else {
        eprintln!(
            "synthesizing random qwen3_0_6b weights into {}",
            dir.display()
        );
        synthesize_random_weights(&cfg, SEED, DType::F32, &dir)?
    };

    let kernels_only = std::env::var_os("SIMREAL_BENCH_KERNELS_ONLY").is_some();
    // Why the PyTorch anchor does not run, if it does not.
    // Settled before minutes of measuring, so that a wrong SIMREAL_TORCH_PYTHON fails at once.
    let (python, torch_not_run) = if kernels_only {
        (None, Some("not run (SIMREAL_BENCH_KERNELS_ONLY is set)"))
    } else if std::env::var_os("SIMREAL_BENCH_SKIP_TORCH").is_some() {
        (None, Some("not run (SIMREAL_BENCH_SKIP_TORCH is set)"))
    } else {
        match torch_python(&root)? {
            Some(p) => (Some(p), None),
            None => (
                None,
                Some("not run (no venv; create it with bash benches/torch_venv.sh)"),
            ),
        }
    };
    eprintln!("measuring the small-m linear kernel against candle's matmul");
    let crossover = linear_crossover(repeats)?;
    eprintln!("measuring paged attention per SIMD path");
    let attention: Vec<_> = ATTENTION_SHAPES
        .iter()
        .map(|&(s, r, c)| attention_kernel(s, r, c, repeats))
        .collect();
    if kernels_only {
        for row in &crossover {
            let ours: String = [("small-m", &row.small_m_ms), ("gemm", &row.gemm_ms)]
                .iter()
                .flat_map(|(name, times)| times.iter().map(move |(isa, ms)| (name, isa, ms)))
                .map(|(name, isa, ms)| format!("  {name} {isa} {ms:8.3} ms"))
                .collect();
            println!("m={:4}{ours}  candle {:8.3} ms", row.m, row.candle_ms);
        }
        for ((s, r, c), paths) in ATTENTION_SHAPES.iter().zip(&attention) {
            for (isa, ms, gf) in paths {
                println!(
                    "attention {s} seqs x {r} rows over {c} cached, {isa}: {ms:.3} ms/layer, {gf:.1} GFLOP/s"
                );
            }
        }
        return Ok(());
    }
    let with_reference = std::env::var_os("SIMREAL_BENCH_SKIP_REFERENCE").is_none();
    let anchors: Vec<&str> = [
        (with_reference, "candle-transformers"),
        (python.is_some(), "PyTorch"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    eprintln!(
        "benchmarking simreal's model{}",
        if anchors.is_empty() {
            String::new()
        } else {
            format!(" (and {}, interleaved)", anchors.join(", "))
        }
    );
    let ours = bench_ours(
        &dir,
        repeats,
        with_reference.then_some(dir.as_path()),
        python.as_deref(),
        threads,
    )?;
    let ref_cold_ms = ours.ref_cold_ms;
    let ref_warm = if ours.ref_decode_ms.is_empty() {
        vec![f64::NAN]
    } else {
        ours.ref_decode_ms.clone()
    };

    let decode = Stats::of(&ours.decode_ms);
    let bw = Stats::of(&ours.bandwidth_gb_s);
    let ref_decode = Stats::of(&ref_warm);
    let batch = Stats::of(&ours.batch_decode_tok_s);
    let batch_ratio = Stats::of(&ours.batch_over_single);
    let large_batch = Stats::of(&ours.large_batch_tok_s);
    let large_batch_ratio = Stats::of(&ours.large_batch_over_single);
    let prefill = Stats::of(&ours.prefill_ms);
    // Ours' speedup per repeat (the anchor's time ÷ ours, > 1: ours is faster), paired with the
    // run just before or after it; None for a side that did not run.
    let ref_speedup = stats_opt(&paired_ratios(&ours.ref_decode_ms, &ours.decode_ms));
    let torch_decode = stats_opt(&ours.torch_decode_ms);
    let torch_batch = stats_opt(&ours.torch_batch_tok_s);
    let torch_prefill = stats_opt(&ours.torch_prefill_ms);
    let torch_speedup_decode = stats_opt(&paired_ratios(&ours.torch_decode_ms, &ours.decode_ms));
    let torch_speedup_batch = stats_opt(&paired_ratios(
        &ours.batch_decode_tok_s,
        &ours.torch_batch_tok_s,
    ));
    let torch_speedup_prefill = stats_opt(&paired_ratios(&ours.torch_prefill_ms, &ours.prefill_ms));
    let torch_field = |key: &str| {
        ours.torch_info
            .as_ref()
            .map_or(serde_json::Value::Null, |i| i[key].clone())
    };
    // For the md: strings without JSON's quotes.
    let torch_text = |key: &str| {
        let v = torch_field(key);
        v.as_str().map_or_else(|| v.to_string(), str::to_string)
    };
    let isa = isa_flags();
    let isa_md = isa
        .iter()
        .map(|(f, on)| format!("{}{f}", if *on { "+" } else { "-" }))
        .collect::<Vec<_>>()
        .join(" ");
    let bytes_per_step = cfg.weight_bytes_read_per_decode_step(DType::F32) as f64;
    // The floor uses the best bandwidth seen: on a shared host the median understates what the
    // memory system can deliver, and the question is how close decode gets to that. Per
    // repeat, decode's weight stream is also held against the bandwidth sampled just before it.
    let floor_ms = bytes_per_step / (bw.max * 1e9) * 1e3;
    let share_per_repeat = Stats::of(
        &ours
            .decode_ms
            .iter()
            .zip(&ours.bandwidth_gb_s)
            .map(|(ms, gb_s)| bytes_per_step / (ms / 1e3) / 1e9 / gb_s)
            .collect::<Vec<_>>(),
    );
    let attn_flops = 2.0
        * 2.0
        * (cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim) as f64
        * (PREFILL * (PREFILL + 1) / 2) as f64;
    // The LM head runs for the last token only (the prompt's logits are not wanted).
    let lm_head_flops = 2.0 * (cfg.vocab_size * cfg.hidden_size) as f64;
    let prefill_flops = (cfg.dense_flops_per_token() as f64 - lm_head_flops) * PREFILL as f64
        + lm_head_flops
        + attn_flops;
    let prefill_gflop_s = prefill_flops / (prefill.median / 1e3) / 1e9;
    // The FMA peak: independent FMA chains in registers on every thread, the best sample taken
    // between the prefills, of the device probe's 8-lane chains and (with AVX-512F) 16-lane ones.
    let fma_peak = Stats::of(&ours.fma_peak_gflop_s);
    let fma512_peak = stats_opt(&ours.fma512_peak_gflop_s);
    let best_peak = fma512_peak.map_or(fma_peak.max, |p| p.max.max(fma_peak.max));
    let prefill_share_of_peak = prefill_gflop_s / best_peak;
    let cpu = proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into());
    let mem = proc_field("/proc/meminfo", "MemTotal").unwrap_or_default();
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg = |s: &str| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let (load_before, load_after) = (loadavg(&load_before), loadavg(&load_after));

    let result = json!({
        "host": { "cpu_model": cpu, "cores": std::thread::available_parallelism()?.get(), "mem_total": mem,
                  "threads": threads, "avx2_fma": std::arch::is_x86_feature_detected!("fma"),
                  "isa_flags": isa.iter().map(|(f, on)| (f.to_string(), json!(on))).collect::<serde_json::Map<_, _>>(),
                  "torch_cpu_capability": torch_field("cpu_capability"),
                  "loadavg_before": load_before, "loadavg_after": load_after },
        "model": "qwen3_0_6b (random weights)", "dtype": "f32", "weights_sha256": weights_sha256,
        "repeats": repeats, "context_tokens": CONTEXT, "decode_steps_per_repeat": DECODE_STEPS,
        "memory_bandwidth_gb_s": bw.json(),
        "weight_bytes_per_decode_step": bytes_per_step,
        "bandwidth_floor_ms_per_token": floor_ms,
        "decode_single_ms_per_token": { "ours": decode.json(), "candle_transformers": ref_decode.json(),
            "pytorch": stats_json(torch_decode),
            "ours_cold_first_step": ours.cold_decode_ms, "candle_transformers_cold_first_step": ref_cold_ms,
            "pytorch_cold_first_step": ours.torch_cold_ms },
        "speedup_vs_candle_transformers": ref_decode.median / decode.median,
        "speedup_vs_candle_transformers_per_repeat": stats_json(ref_speedup),
        "pytorch": {
            "status": torch_not_run.unwrap_or("ran"),
            "python": python.as_ref().map(|p| p.display().to_string()),
            "torch": torch_field("torch"), "transformers": torch_field("transformers"),
            "cpu_capability": torch_field("cpu_capability"), "threads": torch_field("threads"),
            "decode_single_ms_per_token": stats_json(torch_decode),
            "cold_first_step_ms": ours.torch_cold_ms,
            "decode_batch8_tokens_per_s": stats_json(torch_batch),
            "prefill_512_ms": stats_json(torch_prefill),
            "ours_speedup_per_repeat": {
                "about": "per repeat, PyTorch's time ÷ ours, measured back to back; > 1: ours is faster",
                "decode_single": stats_json(torch_speedup_decode),
                "decode_batch8": stats_json(torch_speedup_batch),
                "prefill_512": stats_json(torch_speedup_prefill),
            },
        },
        "bandwidth_efficiency": floor_ms / decode.median,
        "bandwidth_share_per_repeat": share_per_repeat.json(),
        "op_breakdown_ms": ours.ops_ms.iter().map(|(op, a, b, c)| (op.name().to_string(), json!({"decode_single_per_step": a, "decode_batch8_per_step": b, "prefill_512": c}))).collect::<serde_json::Map<_, _>>(),
        "decode_batch8_tokens_per_s": batch.json(),
        "batch8_over_single_throughput_paired": batch_ratio.json(),
        "decode_batch32_tokens_per_s": large_batch.json(),
        "batch32_over_single_throughput_paired": large_batch_ratio.json(),
        "prefill_512": { "ms": prefill.json(), "tokens_per_s": PREFILL as f64 / (prefill.median / 1e3),
                         "gflop_per_s": prefill_gflop_s, "flops": prefill_flops,
                         "fma_peak_gflop_per_s": fma_peak.json(),
                         "fma512_peak_gflop_per_s": fma512_peak.map(|p| p.json()),
                         "best_fma_peak_gflop_per_s": best_peak, "share_of_fma_peak": prefill_share_of_peak },
        "cold_prefill_128_ms": ours.cold_prefill_ms,
        "load_s": ours.load_s,
        "peak_rss_mib_ours": ours.peak_rss_mib,
        "peak_rss_mib_end": peak_rss_mib(),
        "linear_3072x1024_ms_by_rows": crossover.iter().map(|r| {
            let by_isa = |t: &[(kernels::IsaLevel, f64)]| t.iter().map(|(isa, ms)| (isa.to_string(), json!(ms))).collect::<serde_json::Map<_, _>>();
            json!({"m": r.m, "small_m_kernel": by_isa(&r.small_m_ms), "gemm": by_isa(&r.gemm_ms), "candle_matmul": r.candle_ms})
        }).collect::<Vec<_>>(),
        "small_m_max_rows": SMALL_M_MAX_ROWS,
        "paged_attention_one_layer_by_isa": ATTENTION_SHAPES.iter().zip(&attention).map(|((s, r, c), paths)| {
            json!({"sequences": s, "rows_each": r, "cached_tokens": c,
                   "by_isa": paths.iter().map(|(isa, ms, gf)| (isa.to_string(), json!({"ms_min": ms, "gflop_per_s": gf}))).collect::<serde_json::Map<_, _>>()})
        }).collect::<Vec<_>>(),
    });
    let out = root.join("benches/results");
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("engine.json"),
        serde_json::to_string_pretty(&result)? + "\n",
    )?;
    let mut md = format!(
        "# engine bench: qwen3_0_6b f32, random weights\n\n\
         Host: {cpu}, {} cores, {mem}; {threads} threads (rayon global pool, also candle's GEMM). \
         {repeats} repeats, min / median / max. Load average (1/5/15 min) before: {load_before}, \
         after: {load_after} (other jobs on a shared host inflate and scatter the times). \
         ISA flags: {isa_md}.\n\n\
         | measure | value |\n|---|---|\n\
         | memory bandwidth (GB/s, streaming read of 1 GiB before each repeat's decode) | {} |\n\
         | bandwidth floor (ms/token, {:.2} GB of weights per step at the max bandwidth) | {floor_ms:.1} |\n\
         | decode ms/token at context {CONTEXT}, ours | {} |\n\
         | decode ms/token at context {CONTEXT}, candle-transformers | {} |\n\
         | cold first decode step ms, ours / candle-transformers | {:.1} / {ref_cold_ms:.1} |\n\
         | speedup vs candle-transformers (median) | {:.2}× |\n\
         | speedup vs candle-transformers, per repeat (back to back) | {} |\n\
         | share of the bandwidth bound (median decode ÷ floor) | {:.0}% |\n\
         | share of the bandwidth bound, per repeat (decode's weight GB/s ÷ the sample before it) | {} |\n\
         | batch-8 decode tokens/s | {} |\n\
         | batch-8 ÷ single-sequence throughput, per repeat (back to back) | {} |\n\
         | batch-{LARGE_BATCH} decode tokens/s | {} |\n\
         | batch-{LARGE_BATCH} ÷ single-sequence throughput, per repeat (back to back) | {} |\n\
         | prefill {PREFILL} tokens ms | {} |\n\
         | prefill tokens/s, GFLOP/s | {:.0}, {prefill_gflop_s:.1} |\n\
         | FMA peak GFLOP/s (device probe: 12 chains of 8-lane FMAs per thread, all threads) | {} |\n\
         | FMA peak GFLOP/s (12 chains of 16-lane AVX-512 FMAs per thread, all threads) | {} |\n\
         | prefill share of the FMA peak (median prefill ÷ best sample of either) | {:.0}% |\n\
         | model load s | {:.1} |\n\
         | peak RSS MiB (ours: load + decode, before the reference is loaded) | {:.0} |\n",
        std::thread::available_parallelism()?.get(),
        bw.md(2),
        bytes_per_step / 1e9,
        decode.md(1),
        ref_decode.md(1),
        ours.cold_decode_ms,
        ref_decode.median / decode.median,
        stats_md(ref_speedup, 2),
        100.0 * floor_ms / decode.median,
        Stats {
            min: 100.0 * share_per_repeat.min,
            median: 100.0 * share_per_repeat.median,
            max: 100.0 * share_per_repeat.max,
        }
        .md(0),
        batch.md(2),
        batch_ratio.md(2),
        large_batch.md(2),
        large_batch_ratio.md(2),
        prefill.md(0),
        PREFILL as f64 / (prefill.median / 1e3),
        fma_peak.md(1),
        fma512_peak.map_or_else(|| "no AVX-512F".to_string(), |p| p.md(1)),
        100.0 * prefill_share_of_peak,
        ours.load_s,
        ours.peak_rss_mib,
    );
    match torch_not_run {
        Some(why) => md.push_str(&format!("\nPyTorch anchor: {why}.\n")),
        None => md.push_str(&format!(
            "\nPyTorch anchor: Hugging Face transformers' Qwen3 on the same weights, float32, sdpa \
             attention (torch {}, transformers {}, CPU capability {}, {} threads), each \
             measurement next to ours in the same repeat (its decode just before ours, its \
             batch and prefill just after). Speedup: per repeat, PyTorch's \
             time ÷ ours (> 1: ours is faster).\n\n\
             | measure | PyTorch | ours' speedup per repeat |\n|---|---|---|\n\
             | decode ms/token at context {CONTEXT} | {} | {} |\n\
             | batch-{BATCH} decode tokens/s | {} | {} |\n\
             | prefill {PREFILL} tokens ms | {} | {} |\n\
             | cold first decode step ms | {:.1} | |\n",
            torch_text("torch"),
            torch_text("transformers"),
            torch_text("cpu_capability"),
            torch_text("threads"),
            stats_md(torch_decode, 1),
            stats_md(torch_speedup_decode, 2),
            stats_md(torch_batch, 2),
            stats_md(torch_speedup_batch, 2),
            stats_md(torch_prefill, 0),
            stats_md(torch_speedup_prefill, 2),
            ours.torch_cold_ms,
        )),
    }
    md.push_str(&format!(
        "\nPer-op time (ms) of one warm decode step (single sequence and batch of {BATCH}) and of \
         one {PREFILL}-token prefill:\n\n\
         | op | decode single | decode batch-{BATCH} | prefill {PREFILL} |\n|---|---|---|---|\n"
    ));
    for (op, a, b, c) in &ours.ops_ms {
        md.push_str(&format!("| {op} | {a:.2} | {b:.2} | {c:.1} |\n"));
    }
    let isas: Vec<String> = crossover.first().map_or(Vec::new(), |r| {
        r.gemm_ms.iter().map(|(isa, _)| isa.to_string()).collect()
    });
    let columns = |name: &str| {
        isas.iter()
            .map(|i| format!(" {name} {i} |"))
            .collect::<String>()
    };
    md.push_str(&format!(
        "\nLinear `[m, 1024] x [3072, 1024]^T` (ms, min), interleaved call by call: the small-m \
         kernel and our GEMM per SIMD path, candle's matmul. The model runs the {} path: the \
         small-m kernel up to m = {SMALL_M_MAX_ROWS}, the GEMM above.\n\n\
         | m |{}{} candle matmul |\n|---|{}---|\n",
        kernels::Isa::best().level(),
        columns("small-m"),
        columns("GEMM"),
        "---|".repeat(2 * isas.len()),
    ));
    for r in &crossover {
        let ours: String = r
            .small_m_ms
            .iter()
            .chain(&r.gemm_ms)
            .map(|(_, ms)| format!(" {ms:.3} |"))
            .collect();
        md.push_str(&format!("| {} |{ours} {:.3} |\n", r.m, r.candle_ms));
    }
    let paths: Vec<_> = attention[0].iter().map(|(isa, _, _)| *isa).collect();
    md.push_str(&format!(
        "\nPaged attention, one layer of qwen3_0_6b heads (ms, min; GFLOP/s), per SIMD path of \
         its block loops, interleaved call by call, over a cache small enough to stay in the \
         CPU's caches (the loops' speed, not the memory's).\n\n| shape |{}\n|---|{}\n",
        paths.iter().map(|i| format!(" {i} |")).collect::<String>(),
        "---|".repeat(paths.len()),
    ));
    for ((s, r, c), by_isa) in ATTENTION_SHAPES.iter().zip(&attention) {
        let cells: String = by_isa
            .iter()
            .map(|(_, ms, gf)| format!(" {ms:.3} ({gf:.1}) |"))
            .collect();
        md.push_str(&format!("| {s} seq × {r} rows over {c} cached |{cells}\n"));
    }
    std::fs::write(out.join("engine.md"), md.clone())?;
    println!("{md}");
    Ok(())
}
