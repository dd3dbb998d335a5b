//! Our Qwen3 against candle-transformers' on identical weights, and weight-loading errors.

#![cfg(feature = "engine")]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use candle_transformers::models::qwen3 as reference;
use simreal::real_bench::model::*;
use simreal::Error;

const SEED: u64 = 42;

fn tiny_snapshot(dir: &Path) -> PathBuf {
    let out = dir.join("tiny");
    synthesize_random_weights(&Qwen3Config::tiny(), SEED, DType::F32, &out).unwrap();
    out
}

fn reference_model(dir: &Path, device: &Device, dtype: DType) -> reference::ModelForCausalLM {
    let text = std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap();
    let cfg: reference::Config = serde_json::from_str(&text).unwrap();
    let tensors = candle_core::safetensors::load(dir.join(WEIGHTS_FILE), device).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, dtype, device);
    reference::ModelForCausalLM::new(&cfg, vb).unwrap()
}

fn row(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// max |a − b| ≤ `rel_tol` · max |b|.
fn assert_close(ours: &[f32], want: &[f32], rel_tol: f32, what: &str) {
    assert_eq!(ours.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = ours
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(scale > 0.0 && diff.is_finite(), "{what}: degenerate logits");
    assert!(
        diff <= rel_tol * scale,
        "{what}: max diff {diff} vs max |logit| {scale}"
    );
}

fn prompt(len: usize, salt: u32) -> Vec<u32> {
    // Spread over the whole vocabulary, deterministic.
    (0..len as u32)
        .map(|i| (i * 7919 + salt * 104_729) % 151_936)
        .collect()
}

#[test]
fn logits_match_candle_transformers_for_prefill_and_eight_decode_steps() {
    check_against_candle_transformers(&Device::Cpu, DType::F32, AttentionPath::CpuKernel, 1e-4);
}

#[test]
fn tensor_op_attention_matches_candle_transformers_too() {
    // The attention path a GPU runs, here on the CPU.
    check_against_candle_transformers(&Device::Cpu, DType::F32, AttentionPath::TensorOps, 1e-4);
}

/// The logits of a fresh prefill of `tokens`: ours (through `table` in `cache`) and the
/// reference model's, on the model's device.
fn prefill_both(
    model: &Qwen3Model,
    reference: &mut reference::ModelForCausalLM,
    tokens: &[u32],
    table: &[usize],
    cache: &mut PagedKvCache,
) -> (Tensor, Tensor) {
    let input = Tensor::new(tokens, model.device())
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let want = reference.forward(&input, 0).unwrap();
    let seq = SequenceInput {
        token_ids: tokens,
        num_cached_tokens: 0,
        block_table: table,
        wants_logits: true,
    };
    (model.forward_seqs(&[seq], cache, None).unwrap(), want)
}

/// A prefill longer than [`SMALL_M_MAX_ROWS`] takes the projections through the GEMM (on the
/// best SIMD path of this CPU) rather than the small-m kernel, and attention through several
/// query tiles; its logits must match candle-transformers' as closely as the short prompt's.
#[test]
fn a_prefill_through_the_gemm_matches_candle_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_snapshot(tmp.path());
    let device = Device::Cpu;
    let model = Qwen3Model::load(&WeightSource::Dir(dir.clone()), DType::F32, &device).unwrap();
    let mut reference = reference_model(&dir, &device, DType::F32);
    let tokens = prompt(SMALL_M_MAX_ROWS + 37, 4);
    let block_size = 4;
    let num_blocks = tokens.len().div_ceil(block_size);
    let mut cache = model.new_kv_cache(num_blocks, block_size).unwrap();
    // Physical blocks in reverse order.
    let table: Vec<usize> = (0..num_blocks).rev().collect();
    let (ours, want) = prefill_both(&model, &mut reference, &tokens, &table, &mut cache);
    let what = format!("a {}-token prefill", tokens.len());
    assert_close(&row(&ours), &row(&want), 1e-4, &what);
}

/// The GPU check (`tools/gpu_check.sh`) runs this on the GPU host; a `--features cuda` build
/// without a usable GPU fails it, naming the device error.
#[cfg(feature = "cuda")]
#[test]
fn on_the_gpu_logits_match_candle_transformers_in_f32_and_bf16() {
    let gpu = Device::new_cuda(0).unwrap_or_else(|e| panic!("no CUDA device 0: {e}"));
    // f32: cuBLAS sums in another order than the CPU; bf16: both sides round every
    // activation to 8 significant bits, in different places.
    check_against_candle_transformers(&gpu, DType::F32, AttentionPath::TensorOps, 1e-3);
    check_against_candle_transformers(&gpu, DType::BF16, AttentionPath::TensorOps, 6e-2);
}

/// Our model on `device` in `dtype` against candle-transformers' on the same device and
/// dtype: a prefill and eight greedy decode steps; the greedy tokens must agree where the
/// tolerance is tight enough for ties not to matter (f32).
fn check_against_candle_transformers(
    device: &Device,
    dtype: DType,
    path: AttentionPath,
    rel_tol: f32,
) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_snapshot(tmp.path());
    let model = Qwen3Model::load(&WeightSource::Dir(dir.clone()), dtype, device).unwrap();
    let mut reference = reference_model(&dir, device, dtype);
    let what = |step: &str| format!("{step} ({device:?}, {dtype:?})");

    let tokens = prompt(21, 1);
    let block_size = 4;
    let mut cache = model.new_kv_cache_with_path(16, block_size, path).unwrap();
    // Deliberately scattered physical blocks.
    let table: Vec<usize> = vec![9, 2, 14, 0, 7, 11, 3, 15];

    let (ours, want) = prefill_both(&model, &mut reference, &tokens, &table, &mut cache);
    assert_eq!(ours.dims(), &[1, 151_936]);
    assert_close(&row(&ours), &row(&want), rel_tol, &what("prefill"));

    let mut next = row(&want
        .argmax(D::Minus1)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap())[0] as u32;
    for (step, pos) in (tokens.len()..tokens.len() + 8).enumerate() {
        let input = Tensor::new(&[next], device).unwrap().unsqueeze(0).unwrap();
        let want = reference.forward(&input, pos).unwrap();
        let ids = [next];
        let seq = SequenceInput {
            token_ids: &ids,
            num_cached_tokens: pos,
            block_table: &table,
            wants_logits: true,
        };
        let ours = model.forward_seqs(&[seq], &mut cache, None).unwrap();
        assert_close(
            &row(&ours),
            &row(&want),
            rel_tol,
            &what(&format!("decode step {step}")),
        );
        let ours_next = model.sampler(&ours).unwrap()[0];
        next = row(&want
            .argmax(D::Minus1)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap())[0] as u32;
        if dtype == DType::F32 {
            assert_eq!(
                ours_next,
                next,
                "greedy token at {}",
                what(&step.to_string())
            );
        }
    }
}

#[test]
fn random_source_equals_the_synthesized_snapshot_and_hash_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = Qwen3Config::tiny();
    let h1 = synthesize_random_weights(&cfg, 3, DType::F32, &tmp.path().join("a")).unwrap();
    let h2 = synthesize_random_weights(&cfg, 3, DType::F32, &tmp.path().join("b")).unwrap();
    let h3 = synthesize_random_weights(&cfg, 4, DType::F32, &tmp.path().join("c")).unwrap();
    assert_eq!(h1, h2);
    assert_ne!(h1, h3);
    assert_eq!(h1.len(), 64);
    assert_eq!(
        sha256_file(&tmp.path().join("a").join(WEIGHTS_FILE)).unwrap(),
        h1
    );
    // No temp directory is left behind.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");

    let from_dir = Qwen3Model::load(
        &WeightSource::Dir(tmp.path().join("a")),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let random = WeightSource::Random {
        seed: 3,
        config: cfg,
    };
    assert_eq!(random.provenance(), "random:3");
    let in_memory = Qwen3Model::load(&random, DType::F32, &Device::Cpu).unwrap();
    let tokens = prompt(6, 2);
    let run = |m: &Qwen3Model| {
        let mut cache = m.new_kv_cache(4, 8).unwrap();
        let seq = SequenceInput {
            token_ids: &tokens,
            num_cached_tokens: 0,
            block_table: &[1],
            wants_logits: true,
        };
        row(&m.forward_seqs(&[seq], &mut cache, None).unwrap())
    };
    assert_eq!(run(&from_dir), run(&in_memory));
}

#[test]
fn sharded_snapshots_load_like_single_files() {
    let tmp = tempfile::tempdir().unwrap();
    let single = tiny_snapshot(tmp.path());
    let sharded = tmp.path().join("sharded");
    std::fs::create_dir(&sharded).unwrap();
    std::fs::copy(single.join(CONFIG_FILE), sharded.join(CONFIG_FILE)).unwrap();
    let all = candle_core::safetensors::load(single.join(WEIGHTS_FILE), &Device::Cpu).unwrap();
    let (mut a, mut b) = (
        std::collections::HashMap::new(),
        std::collections::HashMap::new(),
    );
    let mut weight_map = serde_json::Map::new();
    for (name, t) in all {
        let file = if name.contains("layers.1.") {
            "model-00002-of-00002.safetensors"
        } else {
            "model-00001-of-00002.safetensors"
        };
        weight_map.insert(name.clone(), file.into());
        if file.starts_with("model-00001") {
            a.insert(name, t)
        } else {
            b.insert(name, t)
        };
    }
    candle_core::safetensors::save(&a, sharded.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&b, sharded.join("model-00002-of-00002.safetensors")).unwrap();
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(sharded.join(WEIGHTS_INDEX_FILE), index.to_string()).unwrap();

    let tokens = prompt(5, 3);
    let run = |dir: &Path| {
        let m = Qwen3Model::load(
            &WeightSource::Dir(dir.to_path_buf()),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let mut cache = m.new_kv_cache(2, 8).unwrap();
        let seq = SequenceInput {
            token_ids: &tokens,
            num_cached_tokens: 0,
            block_table: &[0],
            wants_logits: true,
        };
        row(&m.forward_seqs(&[seq], &mut cache, None).unwrap())
    };
    assert_eq!(run(&single), run(&sharded));

    // A shard the index names but that is missing is reported by path.
    std::fs::remove_file(sharded.join("model-00002-of-00002.safetensors")).unwrap();
    let e = Qwen3Model::load(&WeightSource::Dir(sharded), DType::F32, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&e, Error::MissingInput { path, .. } if path.ends_with("model-00002-of-00002.safetensors")),
        "{e}"
    );
}

#[test]
fn loading_errors_are_typed_and_name_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let load = |p: &Path| {
        Qwen3Model::load(
            &WeightSource::Dir(p.to_path_buf()),
            DType::F32,
            &Device::Cpu,
        )
    };

    let missing = tmp.path().join("nope");
    let e = load(&missing).unwrap_err();
    assert!(
        matches!(&e, Error::MissingInput { path, .. } if path == &missing),
        "{e}"
    );
    assert!(e.to_string().contains("nope"));

    let no_weights = tmp.path().join("no_weights");
    std::fs::create_dir(&no_weights).unwrap();
    let e = load(&no_weights).unwrap_err();
    assert!(
        matches!(&e, Error::MissingInput { path, .. } if path.ends_with("config.json")),
        "{e}"
    );
    std::fs::write(
        no_weights.join(CONFIG_FILE),
        serde_json::to_string(&Qwen3Config::tiny()).unwrap(),
    )
    .unwrap();
    let e = load(&no_weights).unwrap_err();
    assert!(
        matches!(&e, Error::MissingInput { path, .. } if path == &no_weights),
        "{e}"
    );
    assert!(e.to_string().contains(WEIGHTS_FILE), "{e}");

    let snapshot = tiny_snapshot(tmp.path());
    let cfg_path = snapshot.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        text.replace("\"qwen3\"", "\"llama\"")
            .replace("Qwen3ForCausalLM", "LlamaForCausalLM"),
    )
    .unwrap();
    let e = load(&snapshot).unwrap_err();
    assert!(
        matches!(&e, Error::Config { key, origin: Some(o), .. } if key == "model_type" && o.ends_with("config.json")),
        "{e}"
    );

    // Weights that do not match the config: a 3-layer config over 2 layers of tensors.
    let mut three = Qwen3Config::tiny();
    three.num_hidden_layers = 3;
    std::fs::write(&cfg_path, serde_json::to_string(&three).unwrap()).unwrap();
    let e = load(&snapshot).unwrap_err();
    assert!(
        matches!(&e, Error::SchemaMismatch { msg, .. } if msg.contains("model.layers.2.")),
        "{e}"
    );

    // Synthesizing over an existing directory refuses rather than clobbering it.
    let e = synthesize_random_weights(&Qwen3Config::tiny(), 1, DType::F32, &snapshot).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
}
