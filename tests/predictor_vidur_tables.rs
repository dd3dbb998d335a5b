//! `vidur_tables` against Vidur's own prediction tables: batch durations computed by hand
//! from the table rows with Vidur's formula must equal the predictor's.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use simreal::vidur_ext::bundle::Op;
use simreal::vidur_ext::predictor::{
    ExecutionTimePredictor, IterationContext, PredictorConfig, RequestShape, VidurTablesPredictor,
};
use simreal::Error;

fn tables_dir() -> PathBuf {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .skip(1)
        .map(|d| d.join("shared/vidur_reference/predictor_tables"))
        .find(|d| d.is_dir())
        .expect("../shared/vidur_reference/predictor_tables is missing")
}

fn config() -> PredictorConfig {
    PredictorConfig::new(80, 64, 8, 8192).with_parallelism(2, 1)
}

/// The rows of the one `<op>_<8 hex>_predictions.csv[.gz]`, parsed independently of the
/// library: key tuple (as integers) → prediction.
fn table(op: &str) -> HashMap<Vec<u64>, f64> {
    let dir = tables_dir();
    let mut matches: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            let rest = name.strip_prefix(op).and_then(|r| r.strip_prefix('_'));
            rest.is_some_and(|r| {
                r.len() > 9
                    && r[..8].bytes().all(|b| b.is_ascii_hexdigit())
                    && (&r[8..] == "_predictions.csv" || &r[8..] == "_predictions.csv.gz")
            })
        })
        .collect();
    assert_eq!(matches.len(), 1, "{op}: {matches:?}");
    let path = matches.remove(0);
    let mut text = String::new();
    let file = std::fs::File::open(&path).unwrap();
    if path.extension().unwrap() == "gz" {
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .unwrap();
    } else {
        std::io::BufReader::new(file)
            .read_to_string(&mut text)
            .unwrap();
    }
    let mut out = HashMap::new();
    for line in text.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        let (pred, keys) = cells.split_last().unwrap();
        let key = keys.iter().map(|k| k.parse::<u64>().unwrap()).collect();
        assert!(out.insert(key, pred.parse::<f64>().unwrap()).is_none());
    }
    out
}

/// `(num_tokens, num_context_tokens, is_prefill)` of one request.
type Req = (u64, u64, bool);

/// Vidur's `get_execution_time(...).model_time` for one batch (TP2, PP1, 80 layers, GQA),
/// redone by hand from the tables, in ms.
struct Hand {
    tables: HashMap<&'static str, HashMap<Vec<u64>, f64>>,
}

impl Hand {
    fn new() -> Hand {
        let names = [
            "attn_pre_proj",
            "attn_post_proj",
            "attn_rope",
            "attn_kv_cache_save",
            "mlp_up_proj",
            "mlp_down_proj",
            "mlp_act",
            "input_layernorm",
            "post_attention_layernorm",
            "add",
            "all_reduce",
            "attn_decode",
            "attn_prefill",
        ];
        Hand {
            tables: names.into_iter().map(|n| (n, table(n))).collect(),
        }
    }

    fn at(&self, op: &str, key: &[u64]) -> f64 {
        self.tables[op][key]
    }

    /// `(num_tokens, context, is_prefill)` per request.
    fn model_ms(&self, batch: &[Req]) -> (f64, f64, f64) {
        let total: u64 = batch.iter().map(|r| r.0).sum();
        let rounded = total.div_ceil(8) * 8;
        let t = |op: &str| self.at(op, &[rounded]);
        let decodes: Vec<u64> = batch.iter().filter(|r| !r.2).map(|r| r.1 + 1).collect();
        let decode = if decodes.is_empty() {
            0.0
        } else {
            let n = decodes.len() as u64;
            let mean = (decodes.iter().sum::<u64>() as f64 / n as f64) as u64; // int(np.mean)
            let kv = mean.div_ceil(64) * 64;
            let overhead = if n > 1 { 0.1 } else { 0.0 };
            self.at("attn_decode", &[n, kv]) * (1.0 + overhead)
        };
        let prefills: Vec<(u64, u64)> = batch
            .iter()
            .filter(|r| r.2)
            .map(|r| (r.1.div_ceil(64) * 64, r.0))
            .collect();
        let prefill = if prefills.is_empty() {
            0.0
        } else {
            let k: u64 = prefills.iter().map(|p| p.0).sum();
            let c = (prefills.iter().map(|p| p.1 * p.1).sum::<u64>() as f64)
                .powf(0.5)
                .round() as u64;
            let overhead = if prefills.len() > 1 { 0.1 } else { 0.0 };
            self.at("attn_prefill", &[k, c * c]) * (1.0 + overhead)
        };
        let tp = t("all_reduce") + 0.02 + 0.0 * 2f64.powf(1.25);
        let attention = t("attn_pre_proj")
            + t("attn_post_proj")
            + t("attn_rope")
            + self.at("attn_kv_cache_save", &[total])
            + decode
            + prefill
            + tp
            + t("input_layernorm");
        let mlp = t("mlp_up_proj")
            + t("mlp_down_proj")
            + t("mlp_act")
            + tp
            + t("post_attention_layernorm");
        ((attention + mlp + t("add")) * 80.0, decode, prefill)
    }
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
    let hand = Hand::new();
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
    let hand = Hand::new();
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
