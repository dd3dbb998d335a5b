//! `vidur_compat` on Vidur's A100 Llama-2-70B TP2 bundle: the interpolants reproduce every
//! profiled median exactly, and the batch formula matches a hand computation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use simreal::io::bundle::{Bundle, BundleLocation, BundleModelSpec, LoadOptions, Op};
use simreal::vidur_ext::predictor::{
    BatchPrediction, ExecutionTimePredictor, IterationContext, PredictorConfig, RequestShape,
    VidurCompatPredictor,
};
use simreal::vidur_ext::simulator::ClockKind;
use simreal::Error;

fn reference() -> PathBuf {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .skip(1)
        .map(|d| d.join("shared/vidur_reference"))
        .find(|d| d.is_dir())
        .expect("../shared/vidur_reference (Vidur's reference data) is missing")
}

fn spec() -> BundleModelSpec {
    BundleModelSpec {
        n_head: 64,
        n_kv_head: 8,
        n_embd: 8192,
        n_expanded_embd: 28672,
        vocab_size: 32768,
        use_gated_mlp: true,
        num_tensor_parallel_workers: 2,
        block_size: 16,
    }
}

fn bundle() -> Bundle {
    let loc = BundleLocation::new(
        reference().join("profiling"),
        "a100",
        "meta-llama/Llama-2-70b-hf",
    )
    .with_network("a100_pairwise_nvlink");
    Bundle::load(&loc, &spec(), &LoadOptions::vidur_reference()).unwrap()
}

fn config() -> PredictorConfig {
    PredictorConfig::new(80, 64, 8, 8192).with_parallelism(2, 1)
}

/// A plain CSV reader written independently of the library (Vidur's files have no quotes).
fn rows(path: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(String::from))
                .collect()
        })
        .collect()
}

fn num(row: &HashMap<String, String>, col: &str) -> f64 {
    row[col].parse().unwrap()
}

/// Mean of repeated points in file order, computed the plain way.
fn mean_by_key<K: std::hash::Hash + Eq>(items: impl Iterator<Item = (K, f64)>) -> HashMap<K, f64> {
    let mut acc: HashMap<K, (f64, f64)> = HashMap::new();
    for (k, v) in items {
        let e = acc.entry(k).or_insert((0.0, 0.0));
        e.0 += v;
        e.1 += 1.0;
    }
    acc.into_iter()
        .map(|(k, (s, n))| (k, if n == 1.0 { s } else { s / n }))
        .collect()
}

#[test]
fn interpolants_are_exact_at_every_profiled_point() {
    let b = bundle();
    let p = VidurCompatPredictor::new(&b, config()).unwrap();
    let curves = p.curves();
    let dir = reference().join("profiling/compute/a100/meta-llama/Llama-2-70b-hf");

    let mlp: Vec<_> = rows(&dir.join("mlp.csv"))
        .into_iter()
        .filter(|r| r["num_tensor_parallel_workers"] == "2")
        .collect();
    assert_eq!(mlp.len(), 261);
    let ops = [
        "emb",
        "input_layernorm",
        "attn_pre_proj",
        "attn_rope",
        "attn_post_proj",
        "post_attention_layernorm",
        "mlp_up_proj",
        "mlp_act",
        "mlp_down_proj",
        "add",
    ];
    for name in ops {
        let op: Op = name.parse().unwrap();
        let col = format!("time_stats.{name}.median");
        let expected = mean_by_key(mlp.iter().map(|r| (r["num_tokens"].clone(), num(r, &col))));
        assert_eq!(expected.len(), 259);
        let series = curves.series(op).unwrap();
        for (tokens, want) in expected {
            let got = series.eval(tokens.parse().unwrap());
            assert!(!got.extrapolated);
            assert_eq!(got.value_ms, want, "{name} at {tokens} tokens");
        }
    }
    // Spot-check by hand: 4096 tokens was profiled twice, mlp_up_proj 7.970000000000001 and
    // 7.9835 → their mean.
    let up = curves.series(Op::MlpUpProj).unwrap().eval(4096.0).value_ms;
    assert_eq!(up, (7.970000000000001 + 7.9835) / 2.0);

    let attention = rows(&dir.join("attention.csv"));
    let decode = mean_by_key(
        attention
            .iter()
            .filter(|r| r["is_prefill"] == "False")
            .map(|r| {
                let key = (r["batch_size"].clone(), r["kv_cache_size"].clone());
                (key, num(r, "time_stats.attn_decode.median"))
            }),
    );
    assert_eq!(decode.len(), 128 * 79);
    for ((bs, kv), want) in decode {
        let got = curves
            .decode()
            .eval(bs.parse().unwrap(), kv.parse().unwrap());
        assert_eq!(
            (got.value_ms, got.extrapolated),
            (want, false),
            "decode ({bs}, {kv})"
        );
    }
    let prefill = mean_by_key(
        attention
            .iter()
            .filter(|r| r["is_prefill"] == "True")
            .map(|r| {
                let key = (r["prefill_chunk_size"].clone(), r["kv_cache_size"].clone());
                (key, num(r, "time_stats.attn_prefill.median"))
            }),
    );
    assert_eq!(prefill.len(), 4_206);
    for ((chunk, kv), want) in prefill {
        let c: f64 = chunk.parse().unwrap();
        let got = curves.prefill().eval(c * c, kv.parse().unwrap());
        assert_eq!(
            (got.value_ms, got.extrapolated),
            (want, false),
            "prefill ({chunk}, {kv})"
        );
    }
    assert!(curves.series(Op::AttnKvCacheSave).is_none());

    let all_reduce =
        rows(&reference().join("profiling/network/a100_pairwise_nvlink/all_reduce.csv"));
    let expected = mean_by_key(
        all_reduce
            .iter()
            .filter(|r| r["num_workers"] == "2" && r["devices_per_node"] == "2")
            .map(|r| (r["size"].clone(), num(r, "time_stats.all_reduce.median"))),
    );
    for (size, want) in expected {
        let tokens = size.parse::<f64>().unwrap() / 8192.0 / 2.0;
        let got = curves.series(Op::AllReduce).unwrap().eval(tokens);
        assert_eq!(got.value_ms, want, "all_reduce at {size} bytes");
    }
}

/// Median of the TP2 `mlp.csv` rows at `tokens` (all profiled once at these sizes).
fn mlp_median(op: &str, tokens: u32) -> f64 {
    let dir = reference().join("profiling/compute/a100/meta-llama/Llama-2-70b-hf");
    let hits: Vec<f64> = rows(&dir.join("mlp.csv"))
        .iter()
        .filter(|r| {
            r["num_tensor_parallel_workers"] == "2" && r["num_tokens"] == tokens.to_string()
        })
        .map(|r| num(r, &format!("time_stats.{op}.median")))
        .collect();
    assert_eq!(hits.len(), 1, "{op} at {tokens}");
    hits[0]
}

fn attention_median(is_prefill: bool, bs: u32, chunk: u32, kv: u32) -> f64 {
    let dir = reference().join("profiling/compute/a100/meta-llama/Llama-2-70b-hf");
    let op = if is_prefill {
        "attn_prefill"
    } else {
        "attn_decode"
    };
    let hits: Vec<f64> = rows(&dir.join("attention.csv"))
        .iter()
        .filter(|r| {
            r["batch_size"] == bs.to_string()
                && r["prefill_chunk_size"] == chunk.to_string()
                && r["kv_cache_size"] == kv.to_string()
        })
        .map(|r| num(r, &format!("time_stats.{op}.median")))
        .collect();
    assert_eq!(hits.len(), 1);
    hits[0]
}

/// A collective at `tokens` by hand: linear between the profiled message sizes around
/// `tokens · 8192 · 2` bytes, or the profiled value if that size was measured.
fn collective_by_hand(file: &str, num_workers: Option<&str>, tokens: u32) -> f64 {
    let bytes = f64::from(tokens) * 8192.0 * 2.0;
    let path = reference()
        .join("profiling/network/a100_pairwise_nvlink")
        .join(format!("{file}.csv"));
    let median = format!("time_stats.{file}.median");
    let mut pts: Vec<(f64, f64)> = rows(&path)
        .iter()
        .filter(|r| {
            r["devices_per_node"] == "2" && num_workers.is_none_or(|n| r["num_workers"] == n)
        })
        .map(|r| (num(r, "size"), num(r, &median)))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let i = pts.iter().position(|p| p.0 > bytes).unwrap();
    let ((x0, y0), (x1, y1)) = (pts[i - 1], pts[i]);
    if x0 == bytes {
        return y0;
    }
    let to_tokens = |x: f64| x / 8192.0 / 2.0;
    let t = (f64::from(tokens) - to_tokens(x0)) / (to_tokens(x1) - to_tokens(x0));
    y0 + t * (y1 - y0)
}

fn all_reduce_by_hand(tokens: u32) -> f64 {
    collective_by_hand("all_reduce", Some("2"), tokens)
}

#[test]
fn decode_batch_matches_vidurs_formula_by_hand() {
    let p = VidurCompatPredictor::new(&bundle(), config()).unwrap();
    // 16 decodes with 2047 cached tokens each: num_processed 2048, kv key 2048; 16 tokens
    // (already a multiple of 8); all profiled points except the all-reduce.
    let batch = vec![RequestShape::decode(2047); 16];
    let got = p.predict(&batch);
    let t = |op| mlp_median(op, 16);
    let tp = all_reduce_by_hand(16) + 0.02 + 0.0;
    let decode = attention_median(false, 16, 0, 2048) * (1.0 + 0.1);
    let attention = t("attn_pre_proj")
        + t("attn_post_proj")
        + t("attn_rope")
        + 0.0
        + decode
        + 0.0
        + tp
        + t("input_layernorm");
    let mlp =
        t("mlp_up_proj") + t("mlp_down_proj") + t("mlp_act") + tp + t("post_attention_layernorm");
    let model_ms = (attention + mlp + t("add")) * 80.0;
    assert_eq!(got.model_ns, (model_ms * 1e6).round() as u64);
    assert_eq!(got.cpu_overhead_ns, 0);
    assert_eq!(got.total_ns, got.model_ns);
    // Unrounded, in seconds, for Vidur's clock (no CPU terms: `model_ms · 10⁻³ + 0`).
    assert_eq!(got.total_s, model_ms * 1e-3);
    assert_eq!(p.clock(), ClockKind::VidurSeconds);
    assert!(!got.extrapolated);
    assert_eq!(got.op_ms(Op::AttnDecode), decode * 80.0);
    assert_eq!(got.op_ms(Op::AllReduce), 2.0 * tp * 80.0);
    let sum: f64 = got.ops_ms.iter().sum();
    assert!((sum - model_ms).abs() < 1e-9 * model_ms);
}

#[test]
fn prefill_batch_matches_vidurs_formula_by_hand() {
    let p = VidurCompatPredictor::new(&bundle(), config()).unwrap();
    // One 512-token chunk after 960 cached tokens: key (kv 960, chunk² 512²); 512 tokens.
    let got = p.predict(&[RequestShape::prefill(512, 960)]);
    let t = |op| mlp_median(op, 512);
    let tp = all_reduce_by_hand(512) + 0.02;
    let prefill = attention_median(true, 1, 512, 960);
    let attention = t("attn_pre_proj")
        + t("attn_post_proj")
        + t("attn_rope")
        + 0.0
        + 0.0
        + prefill
        + tp
        + t("input_layernorm");
    let mlp =
        t("mlp_up_proj") + t("mlp_down_proj") + t("mlp_act") + tp + t("post_attention_layernorm");
    let model_ms = (attention + mlp + t("add")) * 80.0;
    assert_eq!(got.model_ns, (model_ms * 1e6).round() as u64);
    assert!(!got.extrapolated);
}

#[test]
fn out_of_grid_batches_are_flagged_not_panics() {
    let p = VidurCompatPredictor::new(&bundle(), config()).unwrap();
    // 5000 tokens exceed Vidur's 4096-token grid (a KeyError in Vidur).
    let big = [RequestShape::prefill(5000, 0)];
    let got = p.predict(&big);
    assert!(got.extrapolated && got.model_ns > 0);
    assert!(got.extrapolated_ops.contains(Op::MlpUpProj));
    assert!(got.extrapolated_ops.contains(Op::AttnPrefill));
    assert!(matches!(
        p.try_predict(&big, &IterationContext::default()),
        Err(Error::OutOfRange(_))
    ));
    // 200 decodes exceed the profiled (and Vidur's) batch sizes.
    let wide = vec![RequestShape::decode(100); 200];
    let got = p.predict(&wide);
    assert!(got.extrapolated_ops.contains(Op::AttnDecode));
    assert!(!got.extrapolated_ops.contains(Op::MlpUpProj));
    // Proportional above the grid: 256 decodes cost twice 128 decodes' attention.
    let a = p
        .predict(&vec![RequestShape::decode(100); 128])
        .op_ms(Op::AttnDecode);
    let b = p
        .predict(&vec![RequestShape::decode(100); 256])
        .op_ms(Op::AttnDecode);
    assert!((b / a - 2.0).abs() < 1e-12);
    // Empty batches cost nothing; malformed ones are rejected by try_predict.
    assert_eq!(p.predict(&[]), BatchPrediction::EMPTY);
    let bad = [RequestShape {
        num_tokens: 2,
        num_context_tokens: 5,
        is_prefill: false,
    }];
    assert!(matches!(
        p.try_predict(&bad, &IterationContext::default()),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn config_must_match_the_bundle() {
    let b = bundle();
    let tp4 = PredictorConfig::new(80, 64, 8, 8192).with_parallelism(4, 1);
    assert!(matches!(
        VidurCompatPredictor::new(&b, tp4),
        Err(Error::Mismatch(_))
    ));
    // PP = 2 needs send_recv, which this load did not ask for.
    let pp2 = config().with_parallelism(2, 2);
    assert!(matches!(
        VidurCompatPredictor::new(&b, pp2),
        Err(Error::MissingInput { .. })
    ));
}

#[test]
fn predicting_many_batches_is_cheap() {
    // Not a timing test: 10^5 predictions must simply run without allocation-heavy paths.
    let p = VidurCompatPredictor::new(&bundle(), config()).unwrap();
    let mut batch = Vec::with_capacity(64);
    let mut total = 0u64;
    for i in 0..100_000u32 {
        batch.clear();
        batch.push(RequestShape::prefill(1 + i % 500, i % 1000));
        batch.extend((0..(i % 60)).map(|j| RequestShape::decode(10 + (i + j) % 3000)));
        total = total.wrapping_add(p.predict(&batch).total_ns);
    }
    assert!(total > 0);
}

#[test]
fn pipeline_stages_split_layers_and_pay_send_recv() {
    let loc = BundleLocation::new(
        reference().join("profiling"),
        "a100",
        "meta-llama/Llama-2-70b-hf",
    )
    .with_network("a100_pairwise_nvlink");
    let options = LoadOptions {
        pipeline_stages: 2,
        ..LoadOptions::vidur_reference()
    };
    let b = Bundle::load(&loc, &spec(), &options).unwrap();
    let p = VidurCompatPredictor::new(&b, config().with_parallelism(2, 2)).unwrap();
    let batch = vec![RequestShape::decode(2047); 16];
    let stage = |s| {
        p.predict_with(
            &batch,
            &IterationContext {
                pipeline_stage: s,
                ..Default::default()
            },
        )
    };
    let (first, last) = (stage(0), stage(1));
    // 40 layers per stage; only the first stage sends its activations on.
    let whole = VidurCompatPredictor::new(&bundle(), config())
        .unwrap()
        .predict(&batch);
    assert_eq!(last.op_ms(Op::MlpUpProj) * 2.0, whole.op_ms(Op::MlpUpProj));
    assert_eq!(last.op_ms(Op::SendRecv), 0.0);
    let send_recv = collective_by_hand("send_recv", None, 16);
    assert_eq!(first.op_ms(Op::SendRecv), send_recv);
    let diff_ns = first.model_ns as i64 - last.model_ns as i64;
    assert!((diff_ns - (send_recv * 1e6).round() as i64).abs() <= 1);
}
