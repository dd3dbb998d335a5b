//! Every validation error of the bundle readers, on small malformed files.

use std::path::{Path, PathBuf};

use simreal::io::bundle::{
    read_all_reduce_csv, read_attention_csv, read_cpu_overheads_csv, read_mlp_csv, BundleModelSpec,
    DuplicatePolicy, OpStatistic, ProfilingMeta,
};
use simreal::Error;

const REQUIRED: [&str; 6] = [
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
];

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

/// Writes `text` to a fresh file for test `case`.
fn file(case: &str, name: &str, text: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("bundle_validation")
        .join(case);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn stats_header(op: &str) -> String {
    ["min", "max", "mean", "median", "std"]
        .map(|s| format!("time_stats.{op}.{s}"))
        .join(",")
}

/// A valid mlp.csv with the required ops at the given token counts.
fn mlp_text(tokens: &[u32]) -> String {
    let mut header: Vec<String> = REQUIRED.iter().map(|op| stats_header(op)).collect();
    header.push(
        "n_head,n_kv_head,n_embd,n_expanded_embd,vocab_size,use_gated_mlp,num_tokens,num_tensor_parallel_workers"
            .into(),
    );
    let mut text = header.join(",") + "\n";
    for t in tokens {
        let stats = vec!["0.1,0.3,0.2,0.2,0.01"; REQUIRED.len()].join(",");
        text += &format!("{stats},16,8,1024,3072,151936,True,{t},1\n");
    }
    text
}

fn mlp_err(case: &str, text: &str) -> Error {
    read_mlp_csv(
        &file(case, "mlp.csv", text),
        &spec(),
        DuplicatePolicy::Reject,
    )
    .unwrap_err()
}

fn assert_invalid(err: &Error, want_row: usize, want_column: &str) {
    match err {
        Error::InvalidValue { row, column, .. } => {
            assert_eq!((*row, column.as_str()), (want_row, want_column), "{err}")
        }
        other => panic!("expected InvalidValue at row {want_row} `{want_column}`, got {other}"),
    }
}

#[test]
fn valid_file_loads() {
    let path = file("valid", "mlp.csv", &mlp_text(&[1, 2, 4]));
    let t = read_mlp_csv(&path, &spec(), DuplicatePolicy::Reject).unwrap();
    assert_eq!(t.rows.len(), 3);
    assert_eq!(t.ops().len(), 6);
}

#[test]
fn missing_columns_are_named() {
    let text = mlp_text(&[1, 2]).replace("time_stats.mlp_act.", "time_stats.mlp_actx.");
    match mlp_err("missing_op", &text) {
        Error::ColumnNotFound { column, path, .. } => {
            assert_eq!(column, "time_stats.mlp_act.median");
            assert!(path.ends_with("mlp.csv"));
        }
        other => panic!("{other}"),
    }
    let text = mlp_text(&[1]).replace("time_stats.mlp_up_proj.std", "time_stats.mlp_up_proj.stdev");
    assert!(matches!(
        mlp_err("missing_stat", &text),
        Error::ColumnNotFound { column, .. } if column == "time_stats.mlp_up_proj.std"
    ));
    let text = mlp_text(&[1]).replace("num_tokens", "tokens");
    assert!(matches!(
        mlp_err("missing_key", &text),
        Error::ColumnNotFound { column, .. } if column == "num_tokens"
    ));
}

#[test]
fn another_model_is_a_mismatch_listing_the_file() {
    let text = mlp_text(&[1, 2]).replace(",16,8,1024,", ",32,8,1024,");
    let err = mlp_err("other_model", &text);
    assert!(matches!(err, Error::Mismatch(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("no rows for n_head=16") && msg.contains("the file has: n_head=32"),
        "{msg}"
    );
}

#[test]
fn duplicated_grid_points_are_rejected_unless_averaging() {
    let text = mlp_text(&[1, 2, 2]);
    let err = mlp_err("duplicate", &text);
    assert_invalid(&err, 3, "num_tokens");
    assert!(err.to_string().contains("first at row 2"), "{err}");
    let path = file("duplicate_avg", "mlp.csv", &text);
    assert_eq!(
        read_mlp_csv(&path, &spec(), DuplicatePolicy::Average)
            .unwrap()
            .rows
            .len(),
        3
    );
}

#[test]
fn non_positive_nan_and_missing_times_are_rejected() {
    // Row 2's attn_rope median (the 9th column) set to 0.
    let zero_median = |text: String| {
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let mut cells: Vec<&str> = lines[2].split(',').collect();
        cells[8] = "0.0";
        lines[2] = cells.join(",");
        lines.join("\n") + "\n"
    };
    let err = mlp_err("zero", &zero_median(mlp_text(&[1, 2, 4])));
    assert_invalid(&err, 2, "time_stats.attn_rope.median");

    let nan = mlp_text(&[1, 2]).replacen("0.1,0.3,0.2,0.2,0.01,16", "0.1,0.3,0.2,NaN,0.01,16", 1);
    assert_invalid(&mlp_err("nan", &nan), 1, "time_stats.mlp_down_proj.median");

    let negative = mlp_text(&[1]).replacen("0.1,0.3", "-0.1,0.3", 1);
    assert_invalid(
        &mlp_err("negative", &negative),
        1,
        "time_stats.attn_pre_proj.min",
    );

    let empty = mlp_text(&[1]).replacen("0.1,0.3,0.2,0.2,0.01", ",,,,", 1);
    assert_invalid(
        &mlp_err("empty_op", &empty),
        1,
        "time_stats.attn_pre_proj.median",
    );

    let partial = mlp_text(&[1]).replacen("0.1,0.3,0.2,0.2,0.01", "0.1,0.3,0.2,0.2,", 1);
    assert_invalid(
        &mlp_err("partial", &partial),
        1,
        "time_stats.attn_pre_proj.std",
    );

    let zero_tokens = mlp_text(&[0]);
    assert_invalid(&mlp_err("zero_tokens", &zero_tokens), 1, "num_tokens");

    let bad_bool = mlp_text(&[1]).replace("True", "yes");
    assert_invalid(&mlp_err("bad_bool", &bad_bool), 1, "use_gated_mlp");
}

#[test]
fn truncated_files_are_rejected() {
    let text = mlp_text(&[1, 2, 4]);
    // Ragged last row: the file was cut mid-row and the cut fell on a field boundary.
    let ragged = text[..text.len() - 1]
        .rsplit_once(',')
        .unwrap()
        .0
        .to_owned()
        + "\n";
    let err = mlp_err("ragged", &ragged);
    assert!(matches!(err, Error::Parse { .. }), "{err}");
    assert!(err.to_string().contains("line 4"), "{err}");
    // Cut inside the last field: the count is right, only the missing newline tells.
    let cut = &text[..text.len() - 2];
    let err = mlp_err("cut", cut);
    assert!(
        matches!(err, Error::Parse { .. }) && err.to_string().contains("truncated"),
        "{err}"
    );
    assert!(matches!(mlp_err("empty_file", ""), Error::Parse { .. }));
}

#[test]
fn empty_grids_are_missing_input() {
    let header_only = mlp_text(&[]);
    let err = mlp_err("header_only", &header_only);
    assert!(
        matches!(err, Error::MissingInput { .. }) && err.to_string().contains("empty grid"),
        "{err}"
    );
}

const ATTENTION_HEADER: &str = "n_embd,n_q_head,n_kv_head,block_size,num_tensor_parallel_workers,\
                                max_model_len,batch_size,prefill_chunk_size,kv_cache_size,is_prefill";

fn attention_text(rows: &[&str]) -> String {
    let mut text = format!(
        "{},{},{ATTENTION_HEADER}\n",
        stats_header("attn_decode"),
        stats_header("attn_prefill")
    );
    for r in rows {
        text += r;
        text.push('\n');
    }
    text
}

const DECODE: &str = "0.1,0.1,0.1,0.1,0.0,,,,,,1024,16,8,16,1,4096,4,0,128,False";
const PREFILL: &str = ",,,,,0.2,0.2,0.2,0.2,0.0,1024,16,8,16,1,4096,1,64,0,True";

fn attention_err(case: &str, rows: &[&str]) -> Error {
    let path = file(case, "attention.csv", &attention_text(rows));
    read_attention_csv(&path, &spec(), DuplicatePolicy::Reject).unwrap_err()
}

#[test]
fn attention_rows_are_validated() {
    let path = file(
        "attention_ok",
        "attention.csv",
        &attention_text(&[DECODE, PREFILL]),
    );
    let t = read_attention_csv(&path, &spec(), DuplicatePolicy::Reject).unwrap();
    assert_eq!(t.rows.len(), 2);
    assert_eq!(t.max_model_len, Some(4096));
    assert!(t.attention_backend.is_none() && t.rows.iter().all(|r| r.kv_cache_save.is_none()));

    let err = attention_err("no_prefill", &[DECODE]);
    assert!(
        matches!(err, Error::MissingInput { .. }) && err.to_string().contains("no prefill rows"),
        "{err}"
    );
    let contradiction = DECODE.replace("0,128,False", "0,128,True");
    assert_invalid(
        &attention_err("contradiction", &[&contradiction, PREFILL]),
        1,
        "is_prefill",
    );
    let batched_prefill = PREFILL.replace("4096,1,64", "4096,2,64");
    assert_invalid(
        &attention_err("batched_prefill", &[DECODE, &batched_prefill]),
        2,
        "batch_size",
    );
    // A decode row without decode timings.
    let untimed = DECODE.replace("0.1,0.1,0.1,0.1,0.0,", ",,,,,");
    assert_invalid(
        &attention_err("untimed", &[&untimed, PREFILL]),
        1,
        "time_stats.attn_decode.median",
    );
    let err = attention_err("dup_decode", &[DECODE, PREFILL, DECODE]);
    assert_invalid(&err, 3, "kv_cache_size");
    let other_len = PREFILL.replace(",4096,", ",8192,");
    assert!(matches!(
        attention_err("mixed_len", &[DECODE, &other_len]),
        Error::Mismatch(_)
    ));
}

#[test]
fn cpu_overhead_rows_are_validated() {
    let names = [
        "schedule",
        "sampler_launch",
        "sampler_e2e",
        "prepare_inputs_launch",
        "prepare_inputs_e2e",
        "model_execution_launch",
        "model_execution_e2e",
        "process_model_outputs",
    ];
    let header = format!(
        ",{},{},model_name,batch_size,tensor_parallel_degree,ray_comm_time_mean",
        names.map(|n| format!("{n}_mean")).join(","),
        names.map(|n| format!("{n}_median")).join(",")
    );
    let row = |i: u32, bs: u32, first: &str| {
        format!(
            "{i},{first},{},{},org/m,{bs},1,0.0",
            ["0.5"; 7].join(","),
            ["0.4"; 8].join(",")
        )
    };
    let ok = format!("{header}\n{}\n{}\n", row(0, 1, "0.5"), row(1, 2, "0.5"));
    let path = file("cpu_ok", "cpu_overheads.csv", &ok);
    let t = read_cpu_overheads_csv(&path, "org/m", 1, DuplicatePolicy::Reject).unwrap();
    assert_eq!(t.rows[1].schedule.median_ms, 0.4);
    assert_eq!(t.rows[0].ray_comm_time_mean_ms, 0.0);

    let negative = format!("{header}\n{}\n", row(0, 1, "-0.5"));
    let path = file("cpu_negative", "cpu_overheads.csv", &negative);
    let err = read_cpu_overheads_csv(&path, "org/m", 1, DuplicatePolicy::Reject).unwrap_err();
    assert_invalid(&err, 1, "schedule_mean");

    let no_ray = ok.replace("ray_comm_time_mean", "ray");
    let path = file("cpu_no_ray", "cpu_overheads.csv", &no_ray);
    let err = read_cpu_overheads_csv(&path, "org/m", 1, DuplicatePolicy::Reject).unwrap_err();
    assert!(matches!(err, Error::ColumnNotFound { column, .. } if column == "ray_comm_time_mean"));

    let path = file("cpu_other", "cpu_overheads.csv", &ok);
    let err = read_cpu_overheads_csv(&path, "org/other", 1, DuplicatePolicy::Reject).unwrap_err();
    assert!(
        err.to_string().contains("the file has: org/m tp=1"),
        "{err}"
    );
}

#[test]
fn network_rows_are_validated() {
    let header = format!(
        ",{},rank,num_workers,size,collective,devices_per_node,max_devices_per_node",
        stats_header("all_reduce")
    );
    let ok = format!("{header}\n0,0.1,0.1,0.1,0.1,0.0,0,2,2048,all_reduce,2,4\n1,0.2,0.2,0.2,0.2,0.0,0,2,4096,all_reduce,2,4\n");
    let path = file("net_ok", "all_reduce.csv", &ok);
    let t = read_all_reduce_csv(&path, 2, DuplicatePolicy::Reject).unwrap();
    // size / hidden / 2 tokens.
    assert_eq!(
        t.token_points(1024, OpStatistic::Median),
        vec![(1.0, 0.1), (2.0, 0.2)]
    );

    let zero = ok.replace(",2048,", ",0,");
    let path = file("net_zero", "all_reduce.csv", &zero);
    assert_invalid(
        &read_all_reduce_csv(&path, 2, DuplicatePolicy::Reject).unwrap_err(),
        1,
        "size",
    );

    let path = file("net_tp4", "all_reduce.csv", &ok);
    let err = read_all_reduce_csv(&path, 4, DuplicatePolicy::Reject).unwrap_err();
    assert!(
        err.to_string().contains("num_workers=2 devices_per_node=2"),
        "{err}"
    );
}

#[test]
fn profiling_meta_is_validated() {
    let good =
        r#"{"schema_version": 1, "device": "cpu", "model_name": "Qwen/Qwen3-0.6B", "models": []}"#;
    let meta = ProfilingMeta::read(&file("meta_ok", "profiling_meta.json", good)).unwrap();
    assert_eq!(meta.device, "cpu");
    assert!(!meta.has_cpu_overheads && meta.network_device.is_none());

    let v2 = good.replace("\"schema_version\": 1", "\"schema_version\": 2");
    let err = ProfilingMeta::read(&file("meta_v2", "profiling_meta.json", &v2)).unwrap_err();
    assert!(matches!(err, Error::SchemaMismatch { .. }), "{err}");

    let wrong_type = good.replace("\"models\": []", "\"models\": [{\"n_head\": \"16\"}]");
    let err =
        ProfilingMeta::read(&file("meta_type", "profiling_meta.json", &wrong_type)).unwrap_err();
    assert!(
        matches!(err, Error::Parse { .. }) && err.to_string().contains("models[0].n_head"),
        "{err}"
    );
}
