//! The tensor-op attention path, forced onto the CPU, against the CPU paged kernel: op by op
//! on random q/k/v, and logits of whole mixed iterations. With `--features cuda`, on a GPU
//! (`tools/gpu_check.sh`): our paged CUDA decode kernel against the tensor-op path, the same
//! way.

#![cfg(feature = "engine")]

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use simreal::io::ops::Op;
use simreal::real_bench::model::*;

const BLOCK: usize = 4;
const NUM_BLOCKS: usize = 32;

/// GQA with groups of 4 and a 32-wide head, a vocabulary small enough to build quickly.
fn gqa_config() -> Qwen3Config {
    let mut cfg = Qwen3Config::tiny();
    cfg.vocab_size = 512;
    cfg.num_attention_heads = 8;
    cfg.num_key_value_heads = 2;
    cfg.head_dim = 32;
    cfg
}

fn model(cfg: Qwen3Config, dtype: DType) -> Qwen3Model {
    model_on(cfg, dtype, &Device::Cpu)
}

fn model_on(cfg: Qwen3Config, dtype: DType, device: &Device) -> Qwen3Model {
    let source = WeightSource::Random {
        seed: 5,
        config: cfg,
    };
    Qwen3Model::load(&source, dtype, device).unwrap()
}

/// Blocks handed out from a shuffled free list, so tables are scattered and interleaved.
struct Pool {
    free: Vec<usize>,
}

impl Pool {
    fn shuffled(rng: &mut ChaCha8Rng) -> Self {
        Self::shuffled_of(NUM_BLOCKS, rng)
    }

    fn shuffled_of(num_blocks: usize, rng: &mut ChaCha8Rng) -> Self {
        let mut free: Vec<usize> = (0..num_blocks).collect();
        for i in (1..free.len()).rev() {
            free.swap(i, rng.random_range(0..=i));
        }
        Self { free }
    }

    fn take(&mut self, n: usize) -> Vec<usize> {
        (0..n).map(|_| self.free.pop().unwrap()).collect()
    }
}

/// `(sequence, num_cached, num_tokens)` per entry of one iteration.
type Step = Vec<(usize, usize, usize)>;

/// Sequences 0-2 start together (0 is a 23-token prompt prefilled in chunks of 10 and 13);
/// 2 completes after iteration 1 and 3 reuses its blocks, so the tensor path must overwrite
/// what 2 left there. Decode contexts differ in every iteration (ragged padding).
fn scenario(rng: &mut ChaCha8Rng) -> (Vec<Vec<usize>>, Vec<Step>) {
    let mut pool = Pool::shuffled(rng);
    let mut tables = vec![pool.take(7), pool.take(3), pool.take(2)];
    let reused = tables[2].clone();
    tables.push(reused); // sequence 3 takes over sequence 2's blocks
    tables[3].extend(pool.take(1));
    let steps = vec![
        vec![(0, 0, 10), (1, 0, 7), (2, 0, 5)],
        // Decodes first: the batch puts prefill rows first whatever the input order.
        vec![(1, 7, 1), (0, 10, 13), (2, 5, 1)],
        vec![(3, 0, 9), (0, 23, 1), (1, 8, 1)],
        vec![(0, 24, 1), (3, 9, 1), (1, 9, 1)],
    ];
    (tables, steps)
}

/// One iteration's inputs: sequence `s` feeds `ids[s][cached..cached + n]` through its table;
/// `wants_logits(s, cached + n)` says whether it emits a token.
fn inputs<'a>(
    step: &Step,
    ids: &'a [Vec<u32>],
    tables: &'a [Vec<usize>],
    wants_logits: impl Fn(usize, usize) -> bool,
) -> Vec<SequenceInput<'a>> {
    step.iter()
        .map(|&(s, cached, n)| SequenceInput {
            token_ids: &ids[s][cached..cached + n],
            num_cached_tokens: cached,
            block_table: &tables[s],
            wants_logits: wants_logits(s, cached + n),
        })
        .collect()
}

fn max_rel_diff(ours: &Tensor, want: &Tensor) -> f32 {
    let a: Vec<f32> = ours
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f32> = want
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(scale > 0.0, "degenerate reference");
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn random(
    rng: &mut ChaCha8Rng,
    rows: usize,
    width: usize,
    dtype: DType,
    device: &Device,
) -> Tensor {
    let v: Vec<f32> = (0..rows * width)
        .map(|_| rng.random_range(-2.0..2.0))
        .collect();
    Tensor::from_vec(v, (rows, width), device)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// Runs the scenario's iterations through the attention ops of `layer` on both caches with
/// the same random q/k/v, and returns the largest relative difference of the outputs.
fn attention_ops_diff(dtype: DType) -> f32 {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let (tables, steps) = scenario(&mut rng);
    let paths = (AttentionPath::CpuKernel, AttentionPath::TensorOps);
    let layout = (NUM_BLOCKS, BLOCK);
    let m = model(gqa_config(), dtype);
    attention_ops_diff_on(&m, paths, layout, &tables, &steps, &mut rng)
}

/// [`attention_ops_diff`] for `m` (any device) between the caches of `paths` (reference,
/// ours), each of `(num_blocks, block_size)`.
fn attention_ops_diff_on(
    m: &Qwen3Model,
    paths: (AttentionPath, AttentionPath),
    (num_blocks, block): (usize, usize),
    tables: &[Vec<usize>],
    steps: &[Step],
    rng: &mut ChaCha8Rng,
) -> f32 {
    let cfg = m.config().clone();
    let (dtype, device) = (m.dtype(), m.device().clone());
    let mut kernel = m
        .new_kv_cache_with_path(num_blocks, block, paths.0)
        .unwrap();
    let mut tensor = m
        .new_kv_cache_with_path(num_blocks, block, paths.1)
        .unwrap();
    assert_eq!(tensor.attention_path(), paths.1);
    let max_tokens = steps.iter().flatten().map(|e| e.2).max().unwrap_or(0);
    let token_ids = vec![1u32; max_tokens];
    let mut worst = 0f32;
    for (it, step) in steps.iter().enumerate() {
        let layer = it % cfg.num_hidden_layers;
        let seqs: Vec<SequenceInput> = step
            .iter()
            .map(|&(s, cached, n)| SequenceInput {
                token_ids: &token_ids[..n],
                num_cached_tokens: cached,
                block_table: &tables[s],
                wants_logits: true,
            })
            .collect();
        let t: usize = step.iter().map(|e| e.2).sum();
        let q = random(rng, t, cfg.q_width(), dtype, &device);
        let k = random(rng, t, cfg.kv_width(), dtype, &device);
        let v = random(rng, t, cfg.kv_width(), dtype, &device);
        let run = |cache: &mut PagedKvCache| {
            let batch = m.prepare_batch(cache, &seqs).unwrap();
            m.attn_kv_cache_save(layer, &k, &v, &batch, cache).unwrap();
            let mut out = AttnOutput::new(t, cfg.q_width(), dtype).unwrap();
            m.attn_prefill(layer, &q, &batch, cache, &mut out).unwrap();
            m.attn_decode(layer, &q, &batch, cache, &mut out).unwrap();
            out.into_tensor(&device).unwrap()
        };
        let want = run(&mut kernel);
        let ours = run(&mut tensor);
        assert_eq!(ours.dims(), &[t, cfg.q_width()]);
        worst = worst.max(max_rel_diff(&ours, &want));
    }
    worst
}

#[test]
fn tensor_ops_match_the_cpu_kernel_op_by_op_in_f32() {
    let d = attention_ops_diff(DType::F32);
    assert!(d <= 1e-5, "max relative difference {d}");
}

#[test]
fn tensor_ops_stay_within_bf16_rounding_of_the_kernel() {
    // Both round q/k/v to bf16; the tensor path also rounds scores and probabilities (as a
    // GPU run does), the kernel keeps them in f32.
    let d = attention_ops_diff(DType::BF16);
    assert!(d <= 2e-2, "max relative difference {d}");
}

#[test]
fn tensor_path_logits_match_the_cpu_kernel_on_mixed_iterations() {
    let m = model(Qwen3Config::tiny(), DType::F32);
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let (tables, steps) = scenario(&mut rng);
    let ids: Vec<Vec<u32>> = (0..tables.len() as u32)
        .map(|s| {
            (0..32)
                .map(|i| (i * 7919 + s * 104_729) % 151_936)
                .collect()
        })
        .collect();
    let mut kernel = m.new_kv_cache(NUM_BLOCKS, BLOCK).unwrap();
    assert_eq!(kernel.attention_path(), AttentionPath::CpuKernel);
    let mut tensor = m
        .new_kv_cache_with_path(NUM_BLOCKS, BLOCK, AttentionPath::TensorOps)
        .unwrap();
    for (it, step) in steps.iter().enumerate() {
        // The first chunk of sequence 0 emits nothing, as in the engine.
        let seqs = inputs(step, &ids, &tables, |s, end| !(s == 0 && end < 23));
        let want = m.forward_seqs(&seqs, &mut kernel, None).unwrap();
        let mut timer = OpTotals::default();
        let ours = m
            .forward_seqs(&seqs, &mut tensor, Some(&mut timer))
            .unwrap();
        assert_eq!(ours.dims(), want.dims());
        let d = max_rel_diff(&ours, &want);
        assert!(d <= 1e-5, "iteration {it}: relative logits difference {d}");
        assert_eq!(
            m.sampler(&ours).unwrap(),
            m.sampler(&want).unwrap(),
            "iteration {it}"
        );
        // The op timer still sees the attention ops of every layer, and no GPU time.
        let layers = m.config().num_hidden_layers as u64;
        assert_eq!(timer.calls(Op::AttnKvCacheSave), layers);
        let has_decodes = step.iter().any(|e| e.2 == 1);
        assert_eq!(
            timer.calls(Op::AttnDecode),
            if has_decodes { layers } else { 0 }
        );
        assert_eq!(timer.device_forward(), None);
    }
}

#[test]
fn the_kernel_path_needs_the_cpu_and_caches_must_match_the_model() {
    let m = model(Qwen3Config::tiny(), DType::F32);
    let tensor = m
        .new_kv_cache_with_path(4, BLOCK, AttentionPath::TensorOps)
        .unwrap();
    // Same capacity in either layout.
    let kernel = m.new_kv_cache(4, BLOCK).unwrap();
    assert_eq!(tensor.capacity_bytes(), kernel.capacity_bytes());
    // A batch prepared for one layout cannot feed the other's cache.
    let ids = [3u32, 4];
    let seq = SequenceInput {
        token_ids: &ids,
        num_cached_tokens: 0,
        block_table: &[1],
        wants_logits: true,
    };
    let batch = m.prepare_batch(&kernel, &[seq]).unwrap();
    let mut tensor = tensor;
    let e = m.forward(&batch, &mut tensor, None).unwrap_err();
    assert!(matches!(e, simreal::Error::Mismatch(_)), "{e}");
}

#[test]
fn the_cuda_kernel_path_is_refused_on_the_cpu() {
    let m = model(Qwen3Config::tiny(), DType::F32);
    let e = m
        .new_kv_cache_with_path(4, BLOCK, AttentionPath::CudaKernels)
        .unwrap_err();
    assert!(matches!(e, simreal::Error::InvalidInput(_)), "{e}");
    assert!(e.to_string().contains("CUDA device"), "{e}");
}

/// Our paged CUDA decode kernel against the tensor-op path on the same GPU. The GPU check
/// (`tools/gpu_check.sh`) runs these on the GPU host.
#[cfg(feature = "cuda")]
mod on_the_gpu {
    use super::*;

    const GPU_BLOCK: usize = 16;
    const GPU_NUM_BLOCKS: usize = 160;

    fn gpu() -> Device {
        Device::new_cuda(0).unwrap_or_else(|e| panic!("no CUDA device 0: {e}"))
    }

    /// Qwen3-0.6B's attention shape (head_dim 128, query heads in groups of 2), two layers.
    fn kernel_config() -> Qwen3Config {
        let mut cfg = Qwen3Config::tiny();
        cfg.vocab_size = 512;
        cfg.num_attention_heads = 4;
        cfg.num_key_value_heads = 2;
        cfg.head_dim = 128;
        cfg
    }

    /// Contexts across several of the kernel's 256-token splits, ragged in every decode
    /// iteration: sequence 0 (a 700-token prompt in chunks of 512 and 188), 1 (260 tokens),
    /// 2 (5 tokens), and 3, which takes over 2's blocks after it completes.
    fn long_scenario(rng: &mut ChaCha8Rng) -> (Vec<Vec<usize>>, Vec<Step>) {
        let mut pool = Pool::shuffled_of(GPU_NUM_BLOCKS, rng);
        let mut tables = vec![pool.take(45), pool.take(18), pool.take(1)];
        let mut reused = tables[2].clone();
        reused.extend(pool.take(1));
        tables.push(reused);
        let steps = vec![
            vec![(0, 0, 512), (1, 0, 260), (2, 0, 5)],
            vec![(1, 260, 1), (0, 512, 188), (2, 5, 1)],
            vec![(0, 700, 1), (1, 261, 1), (2, 6, 1)],
            vec![(3, 0, 17), (0, 701, 1), (1, 262, 1)],
            vec![(0, 702, 1), (3, 17, 1), (1, 263, 1)],
            vec![(3, 18, 1)],
        ];
        (tables, steps)
    }

    fn kernel_vs_tensor_ops(dtype: DType) -> f32 {
        let m = model_on(kernel_config(), dtype, &gpu());
        let mut rng = ChaCha8Rng::seed_from_u64(29);
        let (tables, steps) = long_scenario(&mut rng);
        let paths = (AttentionPath::TensorOps, AttentionPath::CudaKernels);
        let layout = (GPU_NUM_BLOCKS, GPU_BLOCK);
        attention_ops_diff_on(&m, paths, layout, &tables, &steps, &mut rng)
    }

    #[test]
    fn the_cuda_decode_kernel_matches_tensor_ops_in_f32() {
        // Both in f32; the kernel sums in another order (online softmax over splits).
        let d = kernel_vs_tensor_ops(DType::F32);
        assert!(d <= 1e-4, "max relative difference {d}");
    }

    #[test]
    fn the_cuda_decode_kernel_stays_within_half_precision_rounding() {
        // The tensor path rounds scores and probabilities to 16 bits, the kernel keeps f32.
        for dtype in [DType::BF16, DType::F16] {
            let d = kernel_vs_tensor_ops(dtype);
            assert!(d <= 2e-2, "{dtype:?}: max relative difference {d}");
        }
    }

    #[test]
    fn the_cuda_kernel_path_is_the_gpu_default_and_logits_match() {
        let dev = gpu();
        assert_eq!(AttentionPath::for_device(&dev), AttentionPath::CudaKernels);
        let m = model_on(kernel_config(), DType::F32, &dev);
        let mut rng = ChaCha8Rng::seed_from_u64(31);
        let (tables, steps) = long_scenario(&mut rng);
        let ids: Vec<Vec<u32>> = (0..tables.len() as u32)
            .map(|s| (0..720).map(|i| (i * 7919 + s * 104_729) % 512).collect())
            .collect();
        let mut reference = m
            .new_kv_cache_with_path(GPU_NUM_BLOCKS, GPU_BLOCK, AttentionPath::TensorOps)
            .unwrap();
        let mut ours = m.new_kv_cache(GPU_NUM_BLOCKS, GPU_BLOCK).unwrap();
        assert_eq!(ours.attention_path(), AttentionPath::CudaKernels);
        for (it, step) in steps.iter().enumerate() {
            let seqs = inputs(step, &ids, &tables, |_, _| true);
            let want = m.forward_seqs(&seqs, &mut reference, None).unwrap();
            let got = m.forward_seqs(&seqs, &mut ours, None).unwrap();
            let d = max_rel_diff(&got, &want);
            assert!(d <= 1e-4, "iteration {it}: relative logits difference {d}");
            assert_eq!(
                m.sampler(&got).unwrap(),
                m.sampler(&want).unwrap(),
                "iteration {it}"
            );
        }
    }
}
