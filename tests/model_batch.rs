//! Flattened batches: mixed prefill/chunked-prefill/decode iterations give each sequence the
//! logits it gets alone, wherever its KV blocks physically are.

#![cfg(feature = "engine")]

use candle_core::{DType, Device, Tensor};
use simreal::io::ops::Op;
use simreal::real_bench::model::*;

const BLOCK: usize = 4;
const NUM_BLOCKS: usize = 64;

fn model(dtype: DType) -> Qwen3Model {
    let source = WeightSource::Random {
        seed: 9,
        config: Qwen3Config::tiny(),
    };
    Qwen3Model::load(&source, dtype, &Device::Cpu).unwrap()
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_dtype(DType::F32).unwrap().to_vec2().unwrap()
}

fn tokens(len: usize, salt: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|i| (i * 6007 + salt * 31_337 + 11) % 151_936)
        .collect()
}

/// One sequence's whole history: prompt then the decode tokens fed one at a time.
struct Script {
    prompt: Vec<u32>,
    decodes: Vec<u32>,
}

/// What one iteration schedules for a sequence: `(seq, first token index, count)`.
type Step = Vec<(usize, usize, usize)>;

/// Runs `steps` as batched iterations; returns, per sequence, the logits rows it produced in
/// order (a row is produced by every entry that ends at or past the prompt's end).
fn run_batched(
    m: &Qwen3Model,
    scripts: &[Script],
    steps: &[Step],
    tables: &[Vec<usize>],
) -> Vec<Vec<Vec<f32>>> {
    let mut cache = m.new_kv_cache(NUM_BLOCKS, BLOCK).unwrap();
    let full: Vec<Vec<u32>> = scripts
        .iter()
        .map(|s| [s.prompt.clone(), s.decodes.clone()].concat())
        .collect();
    let mut out = vec![Vec::new(); scripts.len()];
    for step in steps {
        let seqs: Vec<SequenceInput> = step
            .iter()
            .map(|&(s, start, n)| SequenceInput {
                token_ids: &full[s][start..start + n],
                num_cached_tokens: start,
                block_table: &tables[s],
                wants_logits: start + n >= scripts[s].prompt.len(),
            })
            .collect();
        let batch = m.prepare_batch(&cache, &seqs).unwrap();
        let logits = m.forward(&batch, &mut cache, None).unwrap();
        for (r, &i) in rows(&logits).into_iter().zip(batch.logits_seq_indices()) {
            out[step[i].0].push(r);
        }
    }
    out
}

/// Each sequence alone: whole prompt in one iteration, then one decode per iteration.
fn run_alone(m: &Qwen3Model, s: &Script) -> Vec<Vec<f32>> {
    let table: Vec<usize> = (0..NUM_BLOCKS).collect();
    let steps: Vec<Step> = std::iter::once(vec![(0, 0, s.prompt.len())])
        .chain((0..s.decodes.len()).map(|d| vec![(0, s.prompt.len() + d, 1)]))
        .collect();
    let one = [Script {
        prompt: s.prompt.clone(),
        decodes: s.decodes.clone(),
    }];
    run_batched(m, &one, &steps, &[table]).remove(0)
}

fn scenario() -> (Vec<Script>, Vec<Step>) {
    // 0: prefill 13 at iteration 1; 1: prefill 30 chunked 18 + 12 over iterations 1-2;
    // 2-4: prompts prefilled together at iteration 0, decoding in iterations 1-3.
    let scripts = vec![
        Script {
            prompt: tokens(13, 0),
            decodes: tokens(2, 10),
        },
        Script {
            prompt: tokens(30, 1),
            decodes: tokens(1, 11),
        },
        Script {
            prompt: tokens(5, 2),
            decodes: tokens(3, 12),
        },
        Script {
            prompt: tokens(9, 3),
            decodes: tokens(3, 13),
        },
        Script {
            prompt: tokens(3, 4),
            decodes: tokens(3, 14),
        },
    ];
    let steps = vec![
        vec![(2, 0, 5), (3, 0, 9), (4, 0, 3)],
        // Decodes listed first: the batch reorders rows but must return logits in this order.
        vec![(3, 9, 1), (0, 0, 13), (2, 5, 1), (1, 0, 18), (4, 3, 1)],
        vec![(1, 18, 12), (0, 13, 1), (2, 6, 1), (3, 10, 1), (4, 4, 1)],
        vec![(0, 14, 1), (1, 30, 1), (2, 7, 1), (3, 11, 1), (4, 5, 1)],
    ];
    (scripts, steps)
}

fn contiguous_tables(scripts: &[Script]) -> Vec<Vec<usize>> {
    let mut next = 0;
    scripts
        .iter()
        .map(|s| {
            let n = (s.prompt.len() + s.decodes.len()).div_ceil(BLOCK);
            next += n;
            (next - n..next).collect()
        })
        .collect()
}

fn shuffled_tables(scripts: &[Script]) -> Vec<Vec<usize>> {
    // A fixed permutation of all blocks (multiplication by a unit mod 64), handed out
    // round-robin so the sequences' blocks interleave and run backwards in places.
    let perm: Vec<usize> = (0..NUM_BLOCKS).map(|i| (i * 37 + 5) % NUM_BLOCKS).collect();
    let need: Vec<usize> = scripts
        .iter()
        .map(|s| (s.prompt.len() + s.decodes.len()).div_ceil(BLOCK))
        .collect();
    let mut tables = vec![Vec::new(); scripts.len()];
    let mut it = perm.into_iter();
    while tables.iter().zip(&need).any(|(t, n)| t.len() < *n) {
        for (t, n) in tables.iter_mut().zip(&need) {
            if t.len() < *n {
                t.push(it.next().unwrap());
            }
        }
    }
    tables
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn mixed_batch_gives_each_sequence_its_solo_logits() {
    let m = model(DType::F32);
    let (scripts, steps) = scenario();
    let batched = run_batched(&m, &scripts, &steps, &contiguous_tables(&scripts));
    for (i, s) in scripts.iter().enumerate() {
        let alone = run_alone(&m, s);
        // Logits after the full prompt and after each scheduled decode.
        assert_eq!(batched[i].len(), alone.len(), "sequence {i}: logits rows");
        for (k, (b, a)) in batched[i].iter().zip(&alone).enumerate() {
            let d = max_rel_diff(b, a);
            assert!(d <= 1e-5, "sequence {i}, logits row {k}: relative diff {d}");
        }
    }
}

#[test]
fn shuffled_block_tables_give_identical_results() {
    let m = model(DType::F32);
    let (scripts, steps) = scenario();
    let contiguous = run_batched(&m, &scripts, &steps, &contiguous_tables(&scripts));
    let shuffled = shuffled_tables(&scripts);
    assert!(shuffled
        .iter()
        .any(|t| t.windows(2).any(|w| w[1] != w[0] + 1)));
    let scattered = run_batched(&m, &scripts, &steps, &shuffled);
    // Same arithmetic in the same order: bit-identical, not merely close.
    assert_eq!(contiguous, scattered);
}

#[test]
fn op_timer_sees_every_op_of_the_iteration() {
    let m = model(DType::F32);
    let mut cache = m.new_kv_cache(NUM_BLOCKS, BLOCK).unwrap();
    let (p, d) = (tokens(7, 5), tokens(1, 6));
    // A decode needs a cached context: prefill it first, untimed.
    let ctx = tokens(4, 7);
    let seq = SequenceInput {
        token_ids: &ctx,
        num_cached_tokens: 0,
        block_table: &[10, 11],
        wants_logits: false,
    };
    let none = m.forward_seqs(&[seq], &mut cache, None).unwrap();
    assert_eq!(none.dims(), &[0, 151_936]);

    let mut totals = OpTotals::default();
    let seqs = [
        SequenceInput {
            token_ids: &p,
            num_cached_tokens: 0,
            block_table: &[0, 1],
            wants_logits: true,
        },
        SequenceInput {
            token_ids: &d,
            num_cached_tokens: 4,
            block_table: &[10, 11],
            wants_logits: true,
        },
    ];
    let logits = m
        .forward_seqs(&seqs, &mut cache, Some(&mut totals))
        .unwrap();
    assert_eq!(logits.dims(), &[2, 151_936]);
    let layers = m.config().num_hidden_layers as u64;
    for op in Op::MODEL {
        let want = match op {
            Op::Sampler => 0,
            Op::Add => 2 * layers,
            op if op.is_per_layer() => layers,
            _ => 1,
        };
        assert_eq!(totals.calls(op), want, "{op}");
    }
    assert!(totals.sum() > std::time::Duration::ZERO);
    assert_eq!(m.sampler(&logits).unwrap().len(), 2);
}

#[test]
fn op_functions_compose_to_the_forward() {
    // The profiler calls the ops one by one; doing so must reproduce forward exactly.
    let m = model(DType::F32);
    let ids = tokens(6, 8);
    let table = [3usize, 1];
    let seq = [SequenceInput {
        token_ids: &ids,
        num_cached_tokens: 0,
        block_table: &table,
        wants_logits: true,
    }];
    let mut cache = m.new_kv_cache(8, BLOCK).unwrap();
    let want = rows(&m.forward_seqs(&seq, &mut cache, None).unwrap());

    let mut cache = m.new_kv_cache(8, BLOCK).unwrap();
    let batch = m.prepare_batch(&cache, &seq).unwrap();
    let mut x = m.emb(batch.token_ids()).unwrap();
    for l in 0..m.config().num_hidden_layers {
        let h = m.input_layernorm(l, &x).unwrap();
        let (q, k, v) = m.attn_pre_proj(l, &h).unwrap();
        let (q, k) = m.attn_qk_norm(l, &q, &k).unwrap();
        let (q, k) = m.attn_rope(&q, &k, &batch).unwrap();
        m.attn_kv_cache_save(l, &k, &v, &batch, &mut cache).unwrap();
        let mut out =
            AttnOutput::new(batch.num_tokens(), m.config().q_width(), DType::F32).unwrap();
        m.attn_prefill(l, &q, &batch, &cache, &mut out).unwrap();
        let a = m
            .attn_post_proj(l, &out.into_tensor(&Device::Cpu).unwrap())
            .unwrap();
        x = m.add(&x, &a).unwrap();
        let h = m.post_attention_layernorm(l, &x).unwrap();
        let (g, u) = m.mlp_up_proj(l, &h).unwrap();
        let act = m.mlp_act(&g, &u).unwrap();
        x = m.add(&x, &m.mlp_down_proj(l, &act).unwrap()).unwrap();
    }
    let logits = m
        .lm_head(&m.final_norm(&x, batch.logits_rows()).unwrap())
        .unwrap();
    assert_eq!(rows(&logits), want);
}

#[test]
fn half_precision_models_track_f32() {
    let f32_model = model(DType::F32);
    let ids = tokens(10, 9);
    let run = |m: &Qwen3Model| {
        let mut cache = m.new_kv_cache(4, BLOCK).unwrap();
        let seq = SequenceInput {
            token_ids: &ids,
            num_cached_tokens: 0,
            block_table: &[2, 0, 3],
            wants_logits: true,
        };
        rows(&m.forward_seqs(&[seq], &mut cache, None).unwrap()).remove(0)
    };
    let want = run(&f32_model);
    for dtype in [DType::BF16, DType::F16] {
        let got = run(&model(dtype));
        let d = max_rel_diff(&got, &want);
        // bf16 keeps 8 mantissa bits: a few percent of the largest logit after 2 layers.
        assert!(d < 0.05, "{dtype:?}: relative diff {d}");
        assert!(got.iter().all(|x| x.is_finite()));
    }
}

#[test]
fn invalid_batches_are_rejected() {
    let m = model(DType::F32);
    let cache = m.new_kv_cache(4, BLOCK).unwrap();
    let ids = tokens(9, 1);
    let check = |seq: SequenceInput, needle: &str| {
        let e = m.prepare_batch(&cache, &[seq]).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    };
    // 9 tokens need 3 blocks of 4.
    check(
        SequenceInput {
            token_ids: &ids,
            num_cached_tokens: 0,
            block_table: &[0, 1],
            wants_logits: true,
        },
        "needs 3 KV blocks",
    );
    check(
        SequenceInput {
            token_ids: &ids,
            num_cached_tokens: 0,
            block_table: &[0, 1, 4],
            wants_logits: true,
        },
        "block id 4",
    );
    check(
        SequenceInput {
            token_ids: &[],
            num_cached_tokens: 0,
            block_table: &[0],
            wants_logits: true,
        },
        "no tokens",
    );
    check(
        SequenceInput {
            token_ids: &[151_936],
            num_cached_tokens: 0,
            block_table: &[0],
            wants_logits: true,
        },
        "vocabulary",
    );
    check(
        SequenceInput {
            token_ids: &[1],
            num_cached_tokens: 4096,
            block_table: &[0; 1025],
            wants_logits: true,
        },
        "max_position_embeddings",
    );
    assert!(m.prepare_batch(&cache, &[]).is_err());
    let bf16_cache = PagedKvCache::new(m.config(), 4, BLOCK, DType::BF16, &Device::Cpu).unwrap();
    let seq = SequenceInput {
        token_ids: &ids[..1],
        num_cached_tokens: 0,
        block_table: &[0],
        wants_logits: true,
    };
    assert!(m.prepare_batch(&bf16_cache, &[seq]).is_err());
}
