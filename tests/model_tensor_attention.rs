//! The tensor-op attention path (what a GPU runs), forced onto the CPU, against the CPU paged
//! kernel: op by op on random q/k/v, and logits of whole mixed iterations.

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
    let source = WeightSource::Random {
        seed: 5,
        config: cfg,
    };
    Qwen3Model::load(&source, dtype, &Device::Cpu).unwrap()
}

/// Blocks handed out from a shuffled free list, so tables are scattered and interleaved.
struct Pool {
    free: Vec<usize>,
}

impl Pool {
    fn shuffled(rng: &mut ChaCha8Rng) -> Self {
        let mut free: Vec<usize> = (0..NUM_BLOCKS).collect();
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

fn random(rng: &mut ChaCha8Rng, rows: usize, width: usize, dtype: DType) -> Tensor {
    let v: Vec<f32> = (0..rows * width)
        .map(|_| rng.random_range(-2.0..2.0))
        .collect();
    Tensor::from_vec(v, (rows, width), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// Runs the scenario's iterations through the attention ops of `layer` on both caches with
/// the same random q/k/v, and returns the largest relative difference of the outputs.
fn attention_ops_diff(dtype: DType) -> f32 {
    let cfg = gqa_config();
    let m = model(cfg.clone(), dtype);
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let (tables, steps) = scenario(&mut rng);
    let mut kernel = m
        .new_kv_cache_with_path(NUM_BLOCKS, BLOCK, AttentionPath::CpuKernel)
        .unwrap();
    let mut tensor = m
        .new_kv_cache_with_path(NUM_BLOCKS, BLOCK, AttentionPath::TensorOps)
        .unwrap();
    assert_eq!(tensor.attention_path(), AttentionPath::TensorOps);
    let token_ids = [1u32; 32];
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
        let q = random(&mut rng, t, cfg.q_width(), dtype);
        let k = random(&mut rng, t, cfg.kv_width(), dtype);
        let v = random(&mut rng, t, cfg.kv_width(), dtype);
        let run = |cache: &mut PagedKvCache| {
            let batch = m.prepare_batch(cache, &seqs).unwrap();
            m.attn_kv_cache_save(layer, &k, &v, &batch, cache).unwrap();
            let mut out = AttnOutput::new(t, cfg.q_width(), dtype).unwrap();
            m.attn_prefill(layer, &q, &batch, cache, &mut out).unwrap();
            m.attn_decode(layer, &q, &batch, cache, &mut out).unwrap();
            out.into_tensor(&Device::Cpu).unwrap()
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
        let seqs: Vec<SequenceInput> = step
            .iter()
            .map(|&(s, cached, n)| SequenceInput {
                token_ids: &ids[s][cached..cached + n],
                num_cached_tokens: cached,
                block_table: &tables[s],
                // The first chunk of sequence 0 emits nothing, as in the engine.
                wants_logits: !(s == 0 && cached + n < 23),
            })
            .collect();
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
