//! Loading Vidur's own A100 profiling files (`../shared/vidur_reference/`).

use std::path::PathBuf;

use simreal::io::bundle::{
    read_cpu_overheads_csv, read_mlp_csv, Bundle, BundleLocation, BundleModelSpec,
    CpuOverheadSource, CpuOverheadTerm, DuplicatePolicy, LoadOptions, Op, EXTRA_MLP_OPS,
};
use simreal::Error;

/// `../shared/vidur_reference` next to the crate (the main checkout), or next to an ancestor
/// (a worktree under `wt/`). Never skipped: CI has the data.
fn reference() -> PathBuf {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .skip(1)
        .map(|d| d.join("shared/vidur_reference"))
        .find(|d| d.is_dir())
        .expect("../shared/vidur_reference (Vidur's reference data) is missing")
}

fn llama70b(tp: u32) -> BundleModelSpec {
    BundleModelSpec {
        n_head: 64,
        n_kv_head: 8,
        n_embd: 8192,
        n_expanded_embd: 28672,
        vocab_size: 32768,
        use_gated_mlp: true,
        num_tensor_parallel_workers: tp,
        block_size: 16,
    }
}

fn location() -> BundleLocation {
    BundleLocation::new(
        reference().join("profiling"),
        "a100",
        "meta-llama/Llama-2-70b-hf",
    )
    .with_network("a100_pairwise_nvlink")
}

#[test]
fn loads_llama2_70b_tp2_with_averaged_duplicates() {
    let b = Bundle::load(&location(), &llama70b(2), &LoadOptions::vidur_reference()).unwrap();
    assert_eq!(b.mlp.rows.len(), 261);
    assert_eq!(b.attention.rows.len(), 14_658);
    assert_eq!(
        b.attention.rows.iter().filter(|r| r.is_prefill).count(),
        4_418
    );
    assert_eq!(b.attention.max_model_len, Some(4096));
    assert_eq!(
        b.attention.attention_backend.as_deref(),
        Some("AttentionBackend.FLASH_ATTENTION")
    );
    // TP2 → all_reduce rows with num_workers = devices_per_node = 2.
    assert_eq!(b.all_reduce.as_ref().unwrap().rows.len(), 2_248);
    assert!(b.send_recv.is_none() && b.cpu_overheads.is_none() && b.meta.is_none());
    // Vidur's files have none of our extra ops, nor a kv-cache-save column.
    for op in EXTRA_MLP_OPS.into_iter().chain([Op::AttnKvCacheSave]) {
        assert!(!b.has_op(op), "{op}");
    }
    assert!(b.has_op(Op::Emb) && b.has_op(Op::Add) && b.has_op(Op::AllReduce));
    // First TP2 row of mlp.csv (data row 262 of the file): num_tokens 4096, mlp_up_proj median.
    assert_eq!(b.mlp.rows[0].num_tokens, 4096);
    assert_eq!(
        b.mlp.rows[0].ops.get(Op::MlpUpProj).unwrap().median_ms,
        7.970000000000001
    );
}

#[test]
fn default_policy_rejects_vidurs_repeated_grid_points() {
    let err = Bundle::load(&location(), &llama70b(2), &LoadOptions::default()).unwrap_err();
    match err {
        Error::InvalidValue {
            path,
            row,
            column,
            msg,
        } => {
            assert!(path.ends_with("Llama-2-70b-hf/mlp.csv"));
            // TP2 rows start at data row 262; rows 262 and 263 both profile 4096 tokens.
            assert_eq!((row, column.as_str()), (263, "num_tokens"));
            assert!(
                msg.contains("num_tokens=4096") && msg.contains("row 262"),
                "{msg}"
            );
        }
        other => panic!("expected a duplicate-point error, got {other}"),
    }
}

#[test]
fn a_model_the_file_lacks_is_a_mismatch_listing_what_it_has() {
    let mut spec = llama70b(2);
    spec.n_kv_head = 64;
    let path = location().mlp_csv();
    let err = read_mlp_csv(&path, &spec, DuplicatePolicy::Average).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Mismatch(_)));
    assert!(
        msg.contains("n_kv_head=64") && msg.contains("n_kv_head=8"),
        "{msg}"
    );
    assert!(msg.contains("tp=1") && msg.contains("tp=8"), "{msg}");

    // The attention file only has TP2, although mlp.csv has TP4.
    let err = Bundle::load(&location(), &llama70b(4), &LoadOptions::vidur_reference()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("attention.csv") && msg.contains("tp=2"),
        "{msg}"
    );
}

#[test]
fn historical_cpu_overheads_load_by_explicit_path() {
    let path = reference().join("profiling/cpu_overhead_historical/a100/cpu_overheads.csv");
    // Batch size 64 was measured twice (data rows 21 and 22).
    let err = read_cpu_overheads_csv(
        &path,
        "meta-llama/Llama-2-7b-hf",
        1,
        DuplicatePolicy::Reject,
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidValue { row: 22, .. }), "{err}");
    let t = read_cpu_overheads_csv(
        &path,
        "meta-llama/Llama-2-7b-hf",
        1,
        DuplicatePolicy::Average,
    )
    .unwrap();
    assert_eq!(t.rows.len(), 13);
    let bs: Vec<u32> = t.rows.iter().map(|r| r.batch_size).collect();
    assert!(bs.contains(&8) && bs.contains(&128));
    for r in &t.rows {
        assert!(r.term_ms(CpuOverheadTerm::Schedule) > 0.0);
        assert!(r.model_execution_e2e.is_some() && r.sampler_launch.is_some());
        assert_eq!(
            r.term_ms(CpuOverheadTerm::RayCommTime),
            r.ray_comm_time_mean_ms
        );
    }

    // Llama-2-70B was measured at TP4 only; asking for TP2 lists what exists.
    let loc = location().with_cpu_overheads(CpuOverheadSource::File(path));
    let err = Bundle::load(&loc, &llama70b(2), &LoadOptions::vidur_reference()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("meta-llama/Llama-2-70b-hf tp=4"), "{msg}");
}

#[test]
fn llama2_7b_mlp_loads_at_every_tp() {
    let path = reference().join("profiling/compute/a100/meta-llama/Llama-2-7b-hf/mlp.csv");
    for tp in [1, 2, 4, 8] {
        let spec = BundleModelSpec {
            n_head: 32,
            n_kv_head: 32,
            n_embd: 4096,
            n_expanded_embd: 11008,
            num_tensor_parallel_workers: tp,
            ..llama70b(tp)
        };
        let t = read_mlp_csv(&path, &spec, DuplicatePolicy::Average).unwrap();
        assert_eq!(t.rows.len(), 261);
        assert_eq!(t.ops().len(), 10);
    }
}

#[test]
fn pipeline_parallelism_loads_send_recv() {
    let options = LoadOptions {
        pipeline_stages: 2,
        ..LoadOptions::vidur_reference()
    };
    let b = Bundle::load(&location(), &llama70b(2), &options).unwrap();
    let sr = b.send_recv.unwrap();
    assert_eq!((sr.devices_per_node, sr.rows.len()), (2, 994));
    // Without a network directory, TP2 cannot be modelled.
    let no_net = BundleLocation::new(
        reference().join("profiling"),
        "a100",
        "meta-llama/Llama-2-70b-hf",
    );
    let err = Bundle::load(&no_net, &llama70b(2), &LoadOptions::vidur_reference()).unwrap_err();
    assert!(matches!(err, Error::MissingInput { .. }), "{err}");
}
