//! Vidur's batch-time formula for Llama-2-70B, TP2, on A100, recomputed by hand from the raw
//! rows of Vidur's cached prediction tables (`../shared/vidur_reference/predictor_tables`).
//! Independent of the library's table parser and formula, so that tests can hold the library
//! to it.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

/// `shared/vidur_reference/<sub>` beside the checkout (or beside a worktree's parent).
pub fn vidur_reference(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .skip(1)
        .map(|d| d.join("shared/vidur_reference").join(sub))
        .find(|d| d.exists())
        .unwrap_or_else(|| panic!("../shared/vidur_reference/{sub} is missing"))
}

/// The rows of the one `<op>_<8 hex>_predictions.csv[.gz]`: key tuple (as integers) →
/// prediction (ms). Panics unless exactly one file matches and every key is unique.
pub fn prediction_table(op: &str) -> HashMap<Vec<u64>, f64> {
    let dir = vidur_reference("predictor_tables");
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

/// `(num_tokens scheduled, num_context_tokens cached, is_prefill)` of one request.
pub type Req = (u64, u64, bool);

/// Vidur's `get_execution_time(batch).model_time` (TP2, PP1, 80 layers, GQA, no CPU
/// overheads), from the tables' rows.
pub struct VidurFormula {
    tables: HashMap<&'static str, HashMap<Vec<u64>, f64>>,
}

impl VidurFormula {
    pub fn new() -> VidurFormula {
        let ops = [
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
        VidurFormula {
            tables: ops
                .into_iter()
                .map(|op| (op, prediction_table(op)))
                .collect(),
        }
    }

    /// The table row of `op` at `key`, ms.
    pub fn at(&self, op: &str, key: &[u64]) -> f64 {
        self.tables[op][key]
    }

    /// `(model time, decode attention, prefill attention)` of one batch, ms; the attention
    /// terms per layer.
    pub fn model_ms(&self, batch: &[Req]) -> (f64, f64, f64) {
        let total: u64 = batch.iter().map(|r| r.0).sum();
        let rounded = total.div_ceil(8) * 8;
        let t = |op: &str| self.at(op, &[rounded]);
        // Decodes: num_processed = cached + 1; kv = ceil(int(mean) / 64) · 64.
        let decodes: Vec<u64> = batch.iter().filter(|r| !r.2).map(|r| r.1 + 1).collect();
        let decode = if decodes.is_empty() {
            0.0
        } else {
            let n = decodes.len() as u64;
            let kv = (decodes.iter().sum::<u64>() / n).div_ceil(64) * 64;
            self.at("attn_decode", &[n, kv]) * if n > 1 { 1.1 } else { 1.0 }
        };
        // Prefills: K = Σ ceil(num_processed / 64) · 64, C = round(√Σ chunk²) (Python's
        // round, half to even).
        let prefills: Vec<(u64, u64)> = batch.iter().filter(|r| r.2).map(|r| (r.0, r.1)).collect();
        let prefill = if prefills.is_empty() {
            0.0
        } else {
            let k: u64 = prefills.iter().map(|p| p.1.div_ceil(64) * 64).sum();
            let sq: u64 = prefills.iter().map(|p| p.0 * p.0).sum();
            let c = (sq as f64).sqrt().round_ties_even() as u64;
            self.at("attn_prefill", &[k, c * c]) * if prefills.len() > 1 { 1.1 } else { 1.0 }
        };
        // TP2 all-reduce plus Vidur's fixed 0.02 ms NCCL term (its bandwidth term is 0 here).
        let tp = t("all_reduce") + 0.02;
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
