//! `vidur_tables` against Vidur's own prediction tables: batch durations computed by hand
//! from the table rows with Vidur's formula must equal the predictor's.

mod common;

use std::path::{Path, PathBuf};

use common::vidur_formula::{vidur_reference, Req, VidurFormula};

use simreal::io::bundle::Op;
use simreal::vidur_ext::predictor::{
    ExecutionTimePredictor, IterationContext, PredictorConfig, RequestShape, VidurTablesPredictor,
};
use simreal::Error;

fn tables_dir() -> PathBuf {
    vidur_reference("predictor_tables")
}

fn config() -> PredictorConfig {
    PredictorConfig::new(80, 64, 8, 8192).with_parallelism(2, 1)
}

fn shapes(batch: &[Req]) -> Vec<RequestShape> {
    batch
        .iter()
        .map(|&(n, ctx, is_prefill)| RequestShape {
            num_tokens: n as u32,
            num_context_tokens: ctx as u32,
            is_prefill,
        })
        .collect()
}

#[test]
fn hand_built_batches_equal_vidurs_formula() {
    let p = VidurTablesPredictor::from_dir(&tables_dir(), config()).unwrap();
    let hand = VidurFormula::new();
    let batches: [(&str, Vec<Req>); 5] = [
        // num_processed 101, 201, 302 → mean 201 → kv 256; 3 tokens → 8.
        (
            "pure decode",
            vec![(1, 100, false), (1, 200, false), (1, 301, false)],
        ),
        ("single decode", vec![(1, 4000, false)]),
        // kv 0, chunk 1000 → key (0, 10^6); 1000 tokens.
        ("pure prefill", vec![(1000, 0, true)]),
        // chunk 300 after 500 cached (kv 512) + 5 decodes; 305 tokens → 312.
        (
            "mixed",
            vec![
                (300, 500, true),
                (1, 10, false),
                (1, 20, false),
                (1, 30, false),
                (1, 40, false),
                (1, 1000, false),
            ],
        ),
        // kv 0 + 64 + 192 = 256; √(100² + 200² + 50²) = 229.13 → 229² = 52441; ×1.1.
        (
            "several prefills",
            vec![
                (100, 0, true),
                (200, 64, true),
                (50, 130, true),
                (1, 77, false),
            ],
        ),
    ];
    for (what, batch) in batches {
        let (model_ms, decode, prefill) = hand.model_ms(&batch);
        let got = p.predict(&shapes(&batch));
        assert!(!got.extrapolated, "{what}");
        assert_eq!(got.model_ns, (model_ms * 1e6).round() as u64, "{what}");
        assert_eq!(got.op_ms(Op::AttnDecode), decode * 80.0, "{what}");
        assert_eq!(got.op_ms(Op::AttnPrefill), prefill * 80.0, "{what}");
        assert_eq!(
            got.total_ns, got.model_ns,
            "{what}: no CPU overheads by default"
        );
    }
    // The several-prefills key by hand, against the table row itself.
    let several = hand.at("attn_prefill", &[256, 52441]) * 1.1 * 80.0;
    let got = p.predict(&shapes(&[(100, 0, true), (200, 64, true), (50, 130, true)]));
    assert_eq!(got.op_ms(Op::AttnPrefill), several);
}

#[test]
fn lookups_outside_the_tables_are_flagged() {
    let p = VidurTablesPredictor::from_dir(&tables_dir(), config()).unwrap();
    // 4100 tokens > 4096: Vidur raises KeyError; we extrapolate and flag.
    let big = [RequestShape::prefill(4100, 0)];
    let got = p.predict(&big);
    assert!(got.extrapolated && got.extrapolated_ops.contains(Op::AttnPrefill));
    assert!(got.extrapolated_ops.contains(Op::MlpUpProj));
    assert!(matches!(
        p.try_predict(&big, &IterationContext::default()),
        Err(Error::OutOfRange(_))
    ));
    // Aggregated prefill KV 3000 + 2000 → 5056 > 4096.
    let long = [
        RequestShape::prefill(10, 3000),
        RequestShape::prefill(10, 2000),
    ];
    let got = p.predict(&long);
    assert_eq!(
        got.extrapolated_ops.iter().collect::<Vec<_>>(),
        vec![Op::AttnPrefill]
    );
    // Proportional above the table: kv 8192 is twice kv 4096's value for a single decode.
    let hand = VidurFormula::new();
    let got = p.predict(&[RequestShape::decode(8191)]);
    assert_eq!(
        got.op_ms(Op::AttnDecode),
        hand.at("attn_decode", &[1, 4096]) * 2.0 * 80.0
    );
    assert!(got.extrapolated);
}

#[test]
fn missing_or_ambiguous_tables_are_typed_errors() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("predictor_vidur_tables_missing");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("add_0123abcd_predictions.csv"),
        "num_tokens,prediction\n1,0.5\n",
    )
    .unwrap();
    let err = VidurTablesPredictor::from_dir(&dir, config()).unwrap_err();
    assert!(matches!(err, Error::MissingInput { .. }), "{err}");
    assert!(err.to_string().contains("attn_pre_proj"), "{err}");
    std::fs::write(
        dir.join("add_fedcba98_predictions.csv"),
        "num_tokens,prediction\n1,0.5\n",
    )
    .unwrap();
    let err = VidurTablesPredictor::from_dir(&dir, config()).unwrap_err();
    assert!(matches!(err, Error::Mismatch(_)), "{err}");
    // CPU overheads were not tabulated by that Vidur run.
    let cpu = config().with_cpu_overheads(simreal::vidur_ext::predictor::CpuOverheadFlags::ALL);
    let err = VidurTablesPredictor::from_dir(&tables_dir(), cpu).unwrap_err();
    assert!(err.to_string().contains("schedule"), "{err}");
}
