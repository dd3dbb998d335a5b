//! The bundle writer: Vidur's column layout, exact round trips, validation before writing.

use std::path::{Path, PathBuf};

use simreal::io::bundle::{
    AttentionRow, AttentionTable, Bundle, BundleLocation, BundleModelSpec, BundleWriter,
    CpuOverheadRow, CpuOverheadSource, CpuOverheadTable, LoadOptions, MeanMedianMs, MlpRow,
    MlpTable, Op, OpStats, OpStatsSet, ProfilingMeta, EXTRA_MLP_OPS, PROFILING_META_SCHEMA_VERSION,
    VIDUR_MLP_OPS,
};
use simreal::Error;

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

fn root(case: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("bundle_writer")
        .join(case)
}

/// A fresh (removed) bundle root for `case`.
fn fresh(case: &str) -> PathBuf {
    let dir = root(case);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Stats whose median is `v` (three samples around it), with awkward floats on purpose.
fn stats(v: f64) -> OpStats {
    OpStats::from_samples_ms(&[v * 0.9, v, v * 1.1 + 1e-18]).unwrap()
}

fn mlp(ops: &[Op], tokens: &[u32]) -> MlpTable {
    MlpTable {
        spec: spec(),
        rows: tokens
            .iter()
            .map(|&t| MlpRow {
                num_tokens: t,
                ops: ops
                    .iter()
                    .map(|&op| {
                        (
                            op,
                            stats(0.01 * (1 + op.index()) as f64 + 0.001 * f64::from(t)),
                        )
                    })
                    .collect::<OpStatsSet>(),
            })
            .collect(),
    }
}

fn attention(with_save: bool) -> AttentionTable {
    let mut rows = Vec::new();
    for bs in [1, 2] {
        for kv in [0, 64] {
            rows.push(AttentionRow {
                batch_size: bs,
                prefill_chunk_size: 0,
                kv_cache_size: kv,
                is_prefill: false,
                attention: stats(0.02 * f64::from(bs) + 1e-4 * f64::from(kv)),
                kv_cache_save: with_save.then(|| stats(0.003 * f64::from(bs))),
            });
        }
    }
    for chunk in [16, 32] {
        rows.push(AttentionRow {
            batch_size: 1,
            prefill_chunk_size: chunk,
            kv_cache_size: 0,
            is_prefill: true,
            attention: stats(0.001 * f64::from(chunk)),
            kv_cache_save: with_save.then(|| stats(0.003 * f64::from(chunk))),
        });
    }
    AttentionTable {
        spec: spec(),
        max_model_len: Some(4096),
        attention_backend: Some("candle_cpu".into()),
        profile_method: Some("wall_clock".into()),
        rows,
    }
}

fn cpu() -> CpuOverheadTable {
    let mm = |v: f64| MeanMedianMs {
        mean_ms: v * 1.01,
        median_ms: v,
    };
    CpuOverheadTable {
        model_name: "Qwen/Qwen3-0.6B".into(),
        tensor_parallel_degree: 1,
        rows: (1..=3)
            .map(|bs| CpuOverheadRow {
                batch_size: bs,
                schedule: mm(0.1 * f64::from(bs)),
                sampler_e2e: mm(0.2),
                prepare_inputs_e2e: mm(0.3),
                process_model_outputs: mm(0.4),
                ray_comm_time_mean_ms: 0.0,
                sampler_launch: None,
                prepare_inputs_launch: None,
                model_execution_launch: None,
                model_execution_e2e: Some(mm(5.0)),
            })
            .collect(),
    }
}

fn all_mlp_ops() -> Vec<Op> {
    VIDUR_MLP_OPS.into_iter().chain(EXTRA_MLP_OPS).collect()
}

#[test]
fn round_trip_is_exact_and_loads_from_meta() {
    let location = BundleLocation::new(fresh("round_trip"), "cpu", "Qwen/Qwen3-0.6B")
        .with_cpu_overheads(CpuOverheadSource::Standard);
    let w = BundleWriter::new(location).unwrap();
    let mlp_in = mlp(&all_mlp_ops(), &[1, 2, 8, 64]);
    let attention_in = attention(true);
    w.write_mlp(std::slice::from_ref(&mlp_in)).unwrap();
    w.write_attention(std::slice::from_ref(&attention_in))
        .unwrap();
    let cpu_path = w.write_cpu_overheads(&[cpu()]).unwrap();
    assert!(cpu_path.ends_with("cpu_overhead/cpu/Qwen/Qwen3-0.6B/cpu_overheads.csv"));
    let meta = ProfilingMeta {
        schema_version: PROFILING_META_SCHEMA_VERSION,
        device: "cpu".into(),
        model_name: "Qwen/Qwen3-0.6B".into(),
        network_device: None,
        has_cpu_overheads: true,
        models: vec![spec()],
        ops: all_mlp_ops().iter().map(|o| o.name().to_owned()).collect(),
        details: [("threads".to_owned(), serde_json::json!(2))]
            .into_iter()
            .collect(),
        measured_on: None,
    };
    let meta_path = w.write_meta(&meta).unwrap();
    let meta_text = std::fs::read_to_string(&meta_path).unwrap();
    assert!(meta_text.ends_with("}\n") && meta_text.contains("\n  \"details\": {"));
    // Keys sorted: details < device < has_cpu_overheads < model_name < models < ...
    let order: Vec<usize> = [
        "\"details\"",
        "\"device\"",
        "\"has_cpu_overheads\"",
        "\"model_name\"",
        "\"models\"",
        "\"schema_version\"",
    ]
    .iter()
    .map(|k| meta_text.find(k).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{meta_text}");

    let (location, meta_back) = BundleLocation::from_meta(root("round_trip")).unwrap();
    assert_eq!(meta_back, meta);
    let b = Bundle::load(&location, &spec(), &LoadOptions::default()).unwrap();
    for op in all_mlp_ops().into_iter().chain([Op::AttnKvCacheSave]) {
        assert!(b.has_op(op), "{op}");
    }
    assert_eq!(b.mlp, mlp_in);
    assert_eq!(b.attention, attention_in);
    assert_eq!(b.cpu_overheads, Some(cpu()));
    assert_eq!(b.meta, Some(meta));
}

#[test]
fn columns_follow_vidurs_layout_then_ours() {
    let w = BundleWriter::new(BundleLocation::new(
        fresh("layout"),
        "cpu",
        "Qwen/Qwen3-0.6B",
    ))
    .unwrap();
    let mlp_path = w.write_mlp(&[mlp(&all_mlp_ops(), &[1, 2])]).unwrap();
    let text = std::fs::read_to_string(mlp_path).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let ops_of = |cols: &[&str]| -> Vec<String> {
        cols.chunks(5)
            .map(|c| {
                c[0].trim_start_matches("time_stats.")
                    .trim_end_matches(".min")
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(
        ops_of(&header[..50]),
        [
            "emb",
            "input_layernorm",
            "attn_pre_proj",
            "attn_rope",
            "attn_post_proj",
            "post_attention_layernorm",
            "mlp_up_proj",
            "mlp_act",
            "mlp_down_proj",
            "add"
        ]
    );
    assert_eq!(
        header[50..58],
        [
            "n_head",
            "n_kv_head",
            "n_embd",
            "n_expanded_embd",
            "vocab_size",
            "use_gated_mlp",
            "num_tokens",
            "num_tensor_parallel_workers"
        ]
    );
    assert_eq!(
        ops_of(&header[58..]),
        ["attn_qk_norm", "final_norm", "lm_head", "sampler"]
    );
    assert!(text
        .lines()
        .nth(1)
        .unwrap()
        .contains(",16,8,1024,3072,151936,True,1,1,"));

    let attention_path = w.write_attention(&[attention(false)]).unwrap();
    let text = std::fs::read_to_string(attention_path).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "time_stats.attn_decode.min,time_stats.attn_decode.max,time_stats.attn_decode.mean,\
         time_stats.attn_decode.median,time_stats.attn_decode.std,time_stats.attn_prefill.min,\
         time_stats.attn_prefill.max,time_stats.attn_prefill.mean,time_stats.attn_prefill.median,\
         time_stats.attn_prefill.std,n_embd,n_q_head,n_kv_head,block_size,num_tensor_parallel_workers,\
         max_model_len,batch_size,prefill_chunk_size,kv_cache_size,is_prefill,attention_backend,profile_method"
    );
    // A decode row leaves the prefill cells empty, as Vidur's file does.
    assert!(lines
        .next()
        .unwrap()
        .contains(",,,,,1024,16,8,16,1,4096,1,0,0,False,candle_cpu,wall_clock"));

    let cpu_path = w.write_cpu_overheads(&[cpu()]).unwrap();
    let text = std::fs::read_to_string(cpu_path).unwrap();
    assert!(text.starts_with(",schedule_mean,sampler_launch_mean,sampler_e2e_mean,"));
    assert!(text
        .lines()
        .next()
        .unwrap()
        .ends_with(",model_name,batch_size,tensor_parallel_degree,ray_comm_time_mean"));
    assert!(text.lines().nth(1).unwrap().starts_with("0,0.101,,0.202,"));
}

#[test]
fn invalid_tables_are_refused_before_writing() {
    let w = BundleWriter::new(BundleLocation::new(
        fresh("invalid"),
        "cpu",
        "Qwen/Qwen3-0.6B",
    ))
    .unwrap();
    let refused = |r: simreal::Result<PathBuf>, what: &str| match r {
        Err(Error::InvalidInput(msg)) => assert!(msg.contains(what), "{msg}"),
        other => panic!("expected a refusal mentioning `{what}`, got {other:?}"),
    };
    // Vidur needs mlp_up_proj.
    let ops: Vec<Op> = all_mlp_ops()
        .into_iter()
        .filter(|o| *o != Op::MlpUpProj)
        .collect();
    refused(w.write_mlp(&[mlp(&ops, &[1])]), "mlp_up_proj");
    refused(
        w.write_mlp(&[mlp(&all_mlp_ops(), &[1, 1])]),
        "duplicated num_tokens",
    );
    let mut ragged = mlp(&all_mlp_ops(), &[1, 2]);
    ragged.rows[1] = mlp(&REQUIRED_ONLY, &[2]).rows.remove(0);
    refused(w.write_mlp(&[ragged]), "measures");
    refused(w.write_mlp(&[mlp(&[Op::AttnDecode], &[1])]), "");
    let mut zero = mlp(&all_mlp_ops(), &[1]);
    zero.rows[0].ops.set(
        Op::Add,
        OpStats {
            median_ms: 0.0,
            ..stats(1.0)
        },
    );
    refused(w.write_mlp(&[zero]), "time_stats.add.median");
    refused(w.write_mlp(&[]), "no rows");

    let mut decode_only = attention(false);
    decode_only.rows.retain(|r| !r.is_prefill);
    refused(w.write_attention(&[decode_only]), "both decode and prefill");
    let mut half_saved = attention(true);
    half_saved.rows[0].kv_cache_save = None;
    refused(w.write_attention(&[half_saved]), "every row or none");
    let mut batched_prefill = attention(false);
    batched_prefill.rows.last_mut().unwrap().batch_size = 2;
    refused(w.write_attention(&[batched_prefill]), "batch_size 1");

    let mut negative = cpu();
    negative.rows[0].sampler_e2e.median_ms = -1.0;
    refused(w.write_cpu_overheads(&[negative]), "-1");

    let meta = ProfilingMeta {
        schema_version: 1,
        device: "gpu".into(),
        model_name: "Qwen/Qwen3-0.6B".into(),
        network_device: None,
        has_cpu_overheads: false,
        models: vec![],
        ops: vec![],
        details: Default::default(),
        measured_on: None,
    };
    assert!(matches!(w.write_meta(&meta), Err(Error::Mismatch(_))));
    // Nothing was written by the refused calls.
    assert!(!root("invalid").exists());
}

const REQUIRED_ONLY: [Op; 6] = [
    Op::AttnPreProj,
    Op::AttnPostProj,
    Op::AttnRope,
    Op::MlpUpProj,
    Op::MlpAct,
    Op::MlpDownProj,
];

#[test]
fn location_rejects_path_escapes() {
    let bad = BundleLocation::new(fresh("escape"), "cpu", "../etc");
    assert!(matches!(
        BundleWriter::new(bad),
        Err(Error::InvalidInput(_))
    ));
}
