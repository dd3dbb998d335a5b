//! The native predictor, cross-validation and batch replay on a synthetic bundle whose op
//! times are known closed-form functions, written and loaded through the bundle IO.

use std::path::{Path, PathBuf};

use simreal::io::bundle::{
    AttentionRow, AttentionTable, Bundle, BundleLocation, BundleModelSpec, BundleWriter,
    CpuOverheadRow, CpuOverheadSource, CpuOverheadTable, LoadOptions, MeanMedianMs, MlpRow,
    MlpTable, Op, OpStatistic, OpStats, EXTRA_MLP_OPS, VIDUR_MLP_OPS,
};
use simreal::vidur_ext::predictor::{
    cross_validate, replay_batches, CpuOverheadFlags, ExecutionTimePredictor, IterationContext,
    IterationKind, NativeConfig, NativePredictor, PredictorConfig, ReplayIteration, RequestShape,
    VidurCompatPredictor,
};
use simreal::Error;

const LAYERS: u32 = 28;

fn spec() -> BundleModelSpec {
    BundleModelSpec {
        n_head: 16,
        n_kv_head: 8,
        n_embd: 1024,
        n_expanded_embd: 3072,
        vocab_size: 151936,
        use_gated_mlp: true,
        num_tensor_parallel_workers: 1,
        block_size: 16,
    }
}

fn config() -> PredictorConfig {
    PredictorConfig::new(LAYERS, 16, 8, 1024).with_cpu_overheads(CpuOverheadFlags::ALL)
}

/// Token ops: linear `a + b·t`, except `mlp_up_proj`, quadratic so cross-validation has a
/// known, non-zero error.
fn token_ms(op: Op, t: f64) -> f64 {
    let k = (1 + op.index()) as f64;
    match op {
        Op::MlpUpProj => 0.01 + 1e-6 * t * t,
        _ => 0.001 * k + 1e-5 * k * t,
    }
}

fn decode_ms(bs: f64, kv: f64) -> f64 {
    0.005 + 0.001 * bs + 2e-6 * bs * kv
}

fn prefill_ms(chunk: f64, kv: f64) -> f64 {
    0.01 + 1e-7 * chunk * (kv + chunk / 2.0)
}

fn kv_save_ms(tokens: f64) -> f64 {
    0.0005 + 1e-6 * tokens
}

/// (schedule, sampler_e2e, prepare_inputs_e2e, process_model_outputs, ray) at `bs`.
fn cpu_ms(bs: f64) -> [f64; 5] {
    [0.05 + 0.01 * bs, 0.02 * bs, 0.03, 0.04 + 0.001 * bs, 0.0]
}

fn stats(v: f64) -> OpStats {
    // Three samples whose median is exactly `v`.
    OpStats::from_samples_ms(&[0.9 * v, v, 1.1 * v]).unwrap()
}

fn write_bundle(case: &str) -> Bundle {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("predictor_native")
        .join(case);
    let _ = std::fs::remove_dir_all(&root);
    let location = BundleLocation::new(root, "cpu", "Qwen/Qwen3-0.6B")
        .with_cpu_overheads(CpuOverheadSource::Standard);
    let w = BundleWriter::new(location.clone()).unwrap();
    let ops: Vec<Op> = VIDUR_MLP_OPS.into_iter().chain(EXTRA_MLP_OPS).collect();
    let mlp = MlpTable {
        spec: spec(),
        rows: (1..=256)
            .map(|t| MlpRow {
                num_tokens: t,
                ops: ops
                    .iter()
                    .map(|&op| (op, stats(token_ms(op, f64::from(t)))))
                    .collect(),
            })
            .collect(),
    };
    let mut rows = Vec::new();
    for bs in [1u32, 2, 4, 8] {
        for kv in (0..=1024).step_by(64) {
            rows.push(AttentionRow {
                batch_size: bs,
                prefill_chunk_size: 0,
                kv_cache_size: kv,
                is_prefill: false,
                attention: stats(decode_ms(f64::from(bs), f64::from(kv))),
                kv_cache_save: Some(stats(kv_save_ms(f64::from(bs)))),
            });
        }
    }
    for chunk in [16u32, 32, 64, 128] {
        for kv in (0..=1024 - chunk).step_by(64) {
            rows.push(AttentionRow {
                batch_size: 1,
                prefill_chunk_size: chunk,
                kv_cache_size: kv,
                is_prefill: true,
                attention: stats(prefill_ms(f64::from(chunk), f64::from(kv))),
                kv_cache_save: Some(stats(kv_save_ms(f64::from(chunk)))),
            });
        }
    }
    let attention = AttentionTable {
        spec: spec(),
        max_model_len: Some(1024),
        attention_backend: Some("candle_cpu".into()),
        profile_method: Some("wall_clock".into()),
        rows,
    };
    let mm = |v: f64| MeanMedianMs {
        mean_ms: v,
        median_ms: v,
    };
    let cpu = CpuOverheadTable {
        model_name: "Qwen/Qwen3-0.6B".into(),
        tensor_parallel_degree: 1,
        rows: (1..=16)
            .map(|bs| {
                let c = cpu_ms(f64::from(bs));
                CpuOverheadRow {
                    batch_size: bs,
                    schedule: mm(c[0]),
                    sampler_e2e: mm(c[1]),
                    prepare_inputs_e2e: mm(c[2]),
                    process_model_outputs: mm(c[3]),
                    ray_comm_time_mean_ms: c[4],
                    sampler_launch: None,
                    prepare_inputs_launch: None,
                    model_execution_launch: None,
                    model_execution_e2e: None,
                }
            })
            .collect(),
    };
    w.write_mlp(&[mlp]).unwrap();
    w.write_attention(&[attention]).unwrap();
    w.write_cpu_overheads(&[cpu]).unwrap();
    Bundle::load(&location, &spec(), &LoadOptions::default()).unwrap()
}

fn native(bundle: &Bundle) -> NativePredictor {
    NativePredictor::new(bundle, config(), NativeConfig::default()).unwrap()
}

/// The native model by hand for `(num_tokens, context, is_prefill)` requests.
fn native_by_hand(batch: &[(u32, u32, bool)], logits_rows: f64) -> (f64, f64) {
    let t: f64 = batch.iter().map(|r| f64::from(r.0)).sum();
    let layers = f64::from(LAYERS);
    let per_layer_token_ops: f64 = [
        Op::InputLayernorm,
        Op::AttnPreProj,
        Op::AttnQkNorm,
        Op::AttnRope,
        Op::AttnPostProj,
        Op::PostAttentionLayernorm,
        Op::MlpUpProj,
        Op::MlpAct,
        Op::MlpDownProj,
    ]
    .into_iter()
    .map(|op| token_ms(op, t))
    .sum::<f64>()
        + 2.0 * token_ms(Op::Add, t)
        + kv_save_ms(t);
    // Prefills one by one; all decodes as one call at (decodes, mean context).
    let prefill: f64 = batch
        .iter()
        .filter(|r| r.2)
        .map(|&(n, ctx, _)| prefill_ms(f64::from(n), f64::from(ctx)))
        .sum();
    let decode_ctx: Vec<f64> = batch
        .iter()
        .filter(|r| !r.2)
        .map(|r| f64::from(r.1))
        .collect();
    let decode = if decode_ctx.is_empty() {
        0.0
    } else {
        let n = decode_ctx.len() as f64;
        decode_ms(n, decode_ctx.iter().sum::<f64>() / n)
    };
    // The final norm runs on the logits rows only.
    let per_iteration = token_ms(Op::Emb, t)
        + token_ms(Op::FinalNorm, logits_rows)
        + token_ms(Op::LmHead, logits_rows)
        + token_ms(Op::Sampler, logits_rows);
    let model = (per_layer_token_ops + prefill + decode) * layers + per_iteration;
    // Sampling is the `sampler` op, so the CPU term `sampler_e2e` (index 1) is not charged.
    let c = cpu_ms(batch.len() as f64);
    let cpu = c[0] + c[2] + c[3] + c[4];
    (model, cpu)
}

fn shapes(batch: &[(u32, u32, bool)]) -> Vec<RequestShape> {
    batch
        .iter()
        .map(
            |&(num_tokens, num_context_tokens, is_prefill)| RequestShape {
                num_tokens,
                num_context_tokens,
                is_prefill,
            },
        )
        .collect()
}

fn close_ns(got: u64, want_ms: f64) {
    let want = (want_ms * 1e6).round() as i64;
    assert!(
        (got as i64 - want).abs() <= 1,
        "got {got} ns, want {want} ns"
    );
}

#[test]
fn native_matches_its_model_by_hand() {
    let b = write_bundle("native_by_hand");
    let p = native(&b);
    // Two decodes and two prefill chunks at profiled attention points; 98 tokens.
    let batch = [
        (1, 128, false),
        (64, 0, true),
        (1, 256, false),
        (32, 64, true),
    ];
    let got = p.predict(&shapes(&batch));
    let (model, cpu) = native_by_hand(&batch, 4.0);
    close_ns(got.model_ns, model);
    close_ns(got.cpu_overhead_ns, cpu);
    assert_eq!(got.total_ns, got.model_ns + got.cpu_overhead_ns);
    assert!(!got.extrapolated, "{:?}", got.extrapolated_ops);
    // Both decodes in one lookup at (2, mean context 192): exact, decode time is linear in KV.
    let decode = decode_ms(2.0, 192.0) * f64::from(LAYERS);
    assert!((got.op_ms(Op::AttnDecode) - decode).abs() < 1e-12);
    let add = 2.0 * token_ms(Op::Add, 98.0) * f64::from(LAYERS);
    assert!((got.op_ms(Op::Add) - add).abs() < 1e-12);

    // Fewer logits rows: only the final norm, LM head and sampler change.
    let ctx = IterationContext {
        num_logits_rows: Some(2),
        ..Default::default()
    };
    let fewer = p.predict_with(&shapes(&batch), &ctx);
    close_ns(fewer.model_ns, native_by_hand(&batch, 2.0).0);
    assert_eq!(fewer.op_ms(Op::AttnDecode), got.op_ms(Op::AttnDecode));
    // No logits at all (intermediate prefill chunks only): no final norm, LM head, sampler.
    let none = IterationContext {
        num_logits_rows: Some(0),
        ..Default::default()
    };
    let chunk = p.predict_with(&shapes(&[(64, 0, true)]), &none);
    assert_eq!(
        (
            chunk.op_ms(Op::FinalNorm),
            chunk.op_ms(Op::LmHead),
            chunk.op_ms(Op::Sampler)
        ),
        (0.0, 0.0, 0.0)
    );
}

#[test]
fn native_interpolates_prefill_chunks_by_attention_work() {
    let b = write_bundle("native_prefill_work");
    let p = native(&b);
    // Chunk 48 at 64 cached tokens lies between the profiled chunks 32 and 64.
    let got = p.predict(&shapes(&[(48, 64, true)])).op_ms(Op::AttnPrefill) / f64::from(LAYERS);
    let work = |c: f64| c * 64.0 + c * (c + 1.0) / 2.0;
    let t = (work(48.0) - work(32.0)) / (work(64.0) - work(32.0));
    let want = prefill_ms(32.0, 64.0) + t * (prefill_ms(64.0, 64.0) - prefill_ms(32.0, 64.0));
    assert!((got - want).abs() < 1e-15, "{got} vs {want}");
    // The cost model here is linear in c·kv + c²/2, so work interpolation is near exact,
    // where interpolating in chunk² alone is 0.17 % off.
    let truth = prefill_ms(48.0, 64.0);
    assert!(((got - truth) / truth).abs() < 1e-5, "{got} vs {truth}");
    let by_square = prefill_ms(32.0, 64.0)
        + (48.0f64.powi(2) - 32.0f64.powi(2)) / (64.0f64.powi(2) - 32.0f64.powi(2))
            * (prefill_ms(64.0, 64.0) - prefill_ms(32.0, 64.0));
    assert!(((by_square - truth) / truth).abs() > 1e-3);
}

#[test]
fn native_and_vidur_compat_differ_where_documented() {
    let b = write_bundle("native_vs_compat");
    let native = native(&b);
    let compat = VidurCompatPredictor::new(&b, config()).unwrap();
    // 64 tokens: a multiple of 8, so both look token ops up at 64.
    let batch = shapes(&[(64, 0, true)]);
    let (n, c) = (native.predict(&batch), compat.predict(&batch));
    assert!((n.op_ms(Op::Add) - 2.0 * c.op_ms(Op::Add)).abs() < 1e-15);
    assert_eq!(n.op_ms(Op::MlpUpProj), c.op_ms(Op::MlpUpProj));
    // Vidur leaves out the per-iteration ops and qk-norm.
    for op in [
        Op::Emb,
        Op::FinalNorm,
        Op::LmHead,
        Op::Sampler,
        Op::AttnQkNorm,
    ] {
        assert!(n.op_ms(op) > 0.0 && c.op_ms(op) == 0.0, "{op}");
    }
    // Both charge the CPU overheads at batch size 1, except that native charges sampling
    // as the `sampler` op instead of the `sampler_e2e` term.
    close_ns(c.cpu_overhead_ns, cpu_ms(1.0).iter().sum());
    close_ns(
        n.cpu_overhead_ns,
        cpu_ms(1.0).iter().sum::<f64>() - cpu_ms(1.0)[1],
    );
    // Both look two decodes up as one (batch 2, mean KV) call; Vidur at KV + 1 rounded to 64
    // and ×1.1 for GQA, native at the cached tokens, without the overhead.
    let decodes = shapes(&[(1, 127, false), (1, 127, false)]);
    let c = compat.predict(&decodes).op_ms(Op::AttnDecode);
    assert!((c - decode_ms(2.0, 128.0) * 1.1 * f64::from(LAYERS)).abs() < 1e-12);
    let n = native.predict(&decodes).op_ms(Op::AttnDecode);
    assert!((n - decode_ms(2.0, 127.0) * f64::from(LAYERS)).abs() < 1e-12);
}

#[test]
fn extrapolation_is_flagged_per_op() {
    let b = write_bundle("native_extrapolation");
    let p = native(&b);
    // 300 tokens exceed the 256-token mlp grid; a 300-token chunk exceeds the prefill grid.
    let got = p.predict(&shapes(&[(300, 0, true)]));
    assert!(got.extrapolated);
    for op in [Op::MlpUpProj, Op::AttnPrefill, Op::Emb] {
        assert!(got.extrapolated_ops.contains(op), "{op}");
    }
    assert!(!got.extrapolated_ops.contains(Op::LmHead));
    // Proportional above the grid: 300 tokens of mlp_act = 256 tokens' value × 300/256.
    let want = token_ms(Op::MlpAct, 256.0) * 300.0 / 256.0 * f64::from(LAYERS);
    assert!((got.op_ms(Op::MlpAct) - want).abs() < 1e-12);
    // 20 decodes exceed the CPU-overhead batch sizes (flagged without an op) and the decode
    // grid's batch sizes (native looks all decodes up as one call at batch 20).
    let wide = vec![RequestShape::decode(10); 20];
    let got = p.predict(&wide);
    assert!(got.extrapolated);
    assert_eq!(
        got.extrapolated_ops.iter().collect::<Vec<_>>(),
        vec![Op::AttnDecode]
    );
    assert!(matches!(
        p.try_predict(&wide, &IterationContext::default()),
        Err(Error::OutOfRange(_))
    ));
}

#[test]
fn cross_validation_recovers_known_interpolation_errors() {
    let b = write_bundle("cross_validation");
    let report = cross_validate(&b).unwrap();
    // Linear ops are interpolated exactly: zero held-out error.
    for op in [
        "attn_pre_proj",
        "add",
        "lm_head",
        "attn_decode",
        "attn_prefill",
        "attn_kv_cache_save",
    ] {
        let e = report.ops[op].errors.unwrap();
        assert!(e.max_abs_pct < 1e-9, "{op}: {e:?}");
    }
    // y = 0.01 + 1e-6 t²: the chord between t−1 and t+1 over-predicts by 1e-6, i.e.
    // 100 · 1e-6 / y(t) percent at t = 2..=255.
    let mut want: Vec<f64> = (2..=255)
        .map(|t| 100.0 * 1e-6 / token_ms(Op::MlpUpProj, f64::from(t)))
        .collect();
    want.sort_by(f64::total_cmp);
    let up = &report.ops["mlp_up_proj"];
    assert_eq!((up.num_points, up.num_held_out), (256, 254));
    let e = up.errors.unwrap();
    let mean = want.iter().sum::<f64>() / want.len() as f64;
    let median = (want[126] + want[127]) / 2.0;
    assert!((e.mean_abs_pct - mean).abs() < 1e-9 && (e.median_abs_pct - median).abs() < 1e-9);
    assert!((e.max_abs_pct - want[253]).abs() < 1e-9 && (e.mean_signed_pct - mean).abs() < 1e-9);
    // Decode: 4 batch sizes × 17 KV points, 15 interior each.
    assert_eq!(
        (
            report.ops["attn_decode"].num_points,
            report.ops["attn_decode"].num_held_out
        ),
        (68, 60)
    );
    assert!(report.ops.contains_key("cpu_overhead.schedule"));
}

#[test]
fn report_files_follow_the_json_convention() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("predictor_native/report");
    let b = write_bundle("report_bundle");
    let report = cross_validate(&b).unwrap();
    let (json, md) = report.write(&dir).unwrap();
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(text.starts_with("{\n  \"bundle_root\": ") && text.ends_with("}\n"));
    // Keys sorted at every level: top level, the op map, and inside an op.
    let position = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle}"));
    let sorted = |keys: &[&str]| keys.windows(2).all(|w| position(w[0]) < position(w[1]));
    assert!(sorted(&[
        "\n  \"bundle_root\"",
        "\n  \"device\"",
        "\n  \"method\"",
        "\n  \"model_name\"",
        "\n  \"ops\"",
        "\n  \"spec\""
    ]));
    let ops: Vec<String> = report
        .ops
        .keys()
        .map(|k| format!("\n    \"{k}\": {{"))
        .collect();
    assert!(sorted(&ops.iter().map(String::as_str).collect::<Vec<_>>()));
    assert!(sorted(&[
        "\"errors\"",
        "\"key\"",
        "\"num_held_out\"",
        "\"num_points\"",
        "\"source\""
    ]));
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(value["ops"]["attn_decode"]["errors"]["p90_abs_pct"].is_number());
    let md = std::fs::read_to_string(md).unwrap();
    assert!(
        md.contains("| mlp_up_proj | num_tokens | 256 | 254 |"),
        "{md}"
    );
}

#[test]
fn cross_validation_of_vidurs_a100_bundle() {
    let reference: PathBuf = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .skip(1)
        .map(|d| d.join("shared/vidur_reference/profiling"))
        .find(|d| d.is_dir())
        .expect("../shared/vidur_reference is missing");
    let loc = BundleLocation::new(reference, "a100", "meta-llama/Llama-2-70b-hf")
        .with_network("a100_pairwise_nvlink");
    let spec = BundleModelSpec {
        n_head: 64,
        n_kv_head: 8,
        n_embd: 8192,
        n_expanded_embd: 28672,
        vocab_size: 32768,
        num_tensor_parallel_workers: 2,
        ..spec()
    };
    let b = Bundle::load(&loc, &spec, &LoadOptions::vidur_reference()).unwrap();
    let report = cross_validate(&b).unwrap();
    // 259 distinct token counts (2048 and 4096 repeat) → 257 interior.
    assert_eq!(report.ops["mlp_up_proj"].num_held_out, 257);
    // 128 batch sizes × 79 KV lengths → 128 × 77 interior.
    assert_eq!(report.ops["attn_decode"].num_held_out, 128 * 77);
    assert!(
        report.ops.contains_key("all_reduce") && !report.ops.contains_key("attn_kv_cache_save")
    );
    // The GEMM-dominated ops interpolate well on A100 data.
    assert!(report.ops["mlp_up_proj"].errors.unwrap().median_abs_pct < 5.0);
}

#[test]
fn replay_compares_predicted_and_measured() {
    let b = write_bundle("replay");
    let p = native(&b);
    let batches = [
        vec![(1, 128, false), (64, 0, true)],
        vec![(1, 300, false), (1, 500, false), (1, 700, false)],
        vec![(128, 64, true)],
    ];
    let factors = [1.0, 1.25, 0.8];
    let iterations: Vec<ReplayIteration> = batches
        .iter()
        .zip(factors)
        .enumerate()
        .map(|(i, (batch, f))| {
            let pred = p.predict(&shapes(batch));
            let mut measured_ops_ns = [None; Op::COUNT];
            measured_ops_ns[Op::AttnDecode.index()] =
                Some((pred.op_ms(Op::AttnDecode) * 1e6).round() as u64);
            measured_ops_ns[Op::Add.index()] = Some((2e6 * pred.op_ms(Op::Add)).round() as u64);
            ReplayIteration {
                batch_id: i as u64,
                measured_duration_ns: (pred.total_ns as f64 * f).round() as u64,
                measured_cpu_overhead_ns: Some(pred.cpu_overhead_ns),
                measured_ops_ns,
                requests: shapes(batch),
                num_logits_rows: None,
                start_time_ns: None,
            }
        })
        .collect();
    let report = replay_batches(&p, &iterations).unwrap();
    let s = &report.summary;
    assert_eq!(
        (s.predictor.as_str(), s.num_batches, s.num_extrapolated),
        ("native", 3, 0)
    );
    let close = |a: f64, b: f64| (a - b).abs() < 1e-4;
    // Errors 0 %, −20 %, +25 %.
    assert!(close(report.batches[1].error_pct, -20.0) && close(report.batches[2].error_pct, 25.0));
    assert!(close(s.duration.median_abs_pct, 20.0) && close(s.duration.mean_abs_pct, 15.0));
    assert!(close(s.duration.p90_abs_pct, 24.0) && close(s.duration.max_abs_pct, 25.0));
    assert!(close(s.duration.mean_signed_pct, 5.0 / 3.0));
    let (m, pr) = (s.total_measured_ns as f64, s.total_predicted_ns as f64);
    assert!(close(s.total_error_pct, 100.0 * (pr - m) / m));
    assert!(s.cpu_overhead.unwrap().max_abs_pct < 1e-9);
    // The prefill-only batch measured and predicts 0 ns of decode: 0 % by convention.
    assert!(s.by_op["attn_decode"].errors.max_abs_pct < 1e-4);
    assert!(close(s.by_op["add"].errors.median_abs_pct, 50.0));
    assert!(close(s.by_op["add"].total_error_pct, -50.0));
    // By kind of iteration: the three-sequence decode step (−20 %) apart from the two with a
    // prefill (0 % and +25 %).
    assert_eq!(
        s.by_kind.keys().collect::<Vec<_>>(),
        ["decode_2_3", "prefill"]
    );
    assert!(close(s.by_kind["decode_2_3"].total_error_pct, -20.0));
    assert_eq!(s.by_kind["prefill"].errors.count, 2);
    assert!(close(s.by_kind["prefill"].errors.median_abs_pct, 12.5));
    let names: Vec<String> = [1, 2, 3, 4, 7, 8, 15, 16, 40]
        .into_iter()
        .map(|n| IterationKind::of(&vec![RequestShape::decode(1); n]).name())
        .collect();
    assert_eq!(
        names,
        [
            "decode_1",
            "decode_2_3",
            "decode_2_3",
            "decode_4_7",
            "decode_4_7",
            "decode_8_15",
            "decode_8_15",
            "decode_16_plus",
            "decode_16_plus"
        ]
    );
    assert_eq!(
        IterationKind::of(&shapes(&batches[0])),
        IterationKind::Prefill
    );

    // Malformed input names the iteration.
    let mut dup = iterations.clone();
    dup[2].batch_id = 0;
    assert!(replay_batches(&p, &dup)
        .unwrap_err()
        .to_string()
        .contains("batch_id 0"));
    let mut zero = iterations.clone();
    zero[1].measured_duration_ns = 0;
    assert!(matches!(
        replay_batches(&p, &zero),
        Err(Error::InvalidInput(_))
    ));
    let mut empty_batch = iterations;
    empty_batch[0].requests.clear();
    assert!(replay_batches(&p, &empty_batch)
        .unwrap_err()
        .to_string()
        .contains("empty batch"));
    assert!(replay_batches(&p, &[]).is_err());
}

#[test]
fn native_fits_the_statistic_it_is_asked_for() {
    // Every op time's mean at twice its median: fitting means doubles the model time and
    // leaves the CPU overheads (always medians) alone.
    let mut b = write_bundle("statistic");
    let doubled = |s: &OpStats| OpStats {
        mean_ms: 2.0 * s.median_ms,
        ..*s
    };
    for op in b.mlp.ops() {
        for row in &mut b.mlp.rows {
            let s = doubled(row.ops.get(op).unwrap());
            row.ops.set(op, s);
        }
    }
    for row in &mut b.attention.rows {
        row.attention = doubled(&row.attention);
        row.kv_cache_save = row.kv_cache_save.as_ref().map(doubled);
    }
    let batch = [(1, 128, false), (64, 0, true), (1, 256, false)];
    let median = native(&b).predict(&shapes(&batch));
    let mean = NativePredictor::new(
        &b,
        config(),
        NativeConfig {
            statistic: OpStatistic::Mean,
            ..NativeConfig::default()
        },
    )
    .unwrap()
    .predict(&shapes(&batch));
    // Both are rounded to whole nanoseconds.
    assert!(
        mean.model_ns.abs_diff(2 * median.model_ns) <= 2,
        "mean {} ns, median {} ns",
        mean.model_ns,
        median.model_ns
    );
    assert_eq!(mean.cpu_overhead_ns, median.cpu_overhead_ns);
    // Vidur's formula keeps fitting medians whatever the bundle's means are.
    let compat = VidurCompatPredictor::new(&b, config()).unwrap();
    let unchanged = VidurCompatPredictor::new(&write_bundle("statistic_plain"), config()).unwrap();
    assert_eq!(
        compat.predict(&shapes(&batch)).model_ns,
        unchanged.predict(&shapes(&batch)).model_ns
    );
}
