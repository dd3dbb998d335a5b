//! `compute/<device>/<org>/<model>/mlp.csv`: the token-level ops of one layer (plus our
//! per-iteration ops) by `num_tokens`.

use std::collections::BTreeSet;
use std::path::Path;

use super::stats::{OpStatistic, OpStats};
use super::table::{
    check_duplicates, check_selection, check_stats, csv_bytes, fmt_bool, push_stats, stat_column,
    stats_header, write_atomic, write_err, CsvTable,
};
use super::{BundleModelSpec, DuplicatePolicy};
use crate::io::ops::Op;
use crate::{Error, Result};

/// Ops of `mlp.csv` in Vidur's column order.
pub const VIDUR_MLP_OPS: [Op; 10] = [
    Op::Emb,
    Op::InputLayernorm,
    Op::AttnPreProj,
    Op::AttnRope,
    Op::AttnPostProj,
    Op::PostAttentionLayernorm,
    Op::MlpUpProj,
    Op::MlpAct,
    Op::MlpDownProj,
    Op::Add,
];

/// Our own `mlp.csv` ops, appended after Vidur's columns. `lm_head` and `sampler` rows are keyed
/// by the number of logits rows (sequences emitting a token), stored in `num_tokens`.
pub const EXTRA_MLP_OPS: [Op; 4] = [Op::AttnQkNorm, Op::FinalNorm, Op::LmHead, Op::Sampler];

/// The `mlp.csv` ops Vidur trains on unconditionally; the file is useless without them. (It
/// substitutes 0 for a missing `input_layernorm`, `post_attention_layernorm` or `add`.)
pub const REQUIRED_MLP_OPS: [Op; 6] = [
    Op::AttnPreProj,
    Op::AttnPostProj,
    Op::AttnRope,
    Op::MlpUpProj,
    Op::MlpAct,
    Op::MlpDownProj,
];

const MLP_KEY_COLUMNS: [&str; 8] = [
    "n_head",
    "n_kv_head",
    "n_embd",
    "n_expanded_embd",
    "vocab_size",
    "use_gated_mlp",
    "num_tokens",
    "num_tensor_parallel_workers",
];

/// Per-op statistics of one grid point, indexed by [`Op`]; `None` where not measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpStatsSet([Option<OpStats>; Op::COUNT]);

impl OpStatsSet {
    /// The stats of `op`, if measured.
    pub fn get(&self, op: Op) -> Option<&OpStats> {
        self.0[op.index()].as_ref()
    }

    /// Records `op`'s stats.
    pub fn set(&mut self, op: Op, stats: OpStats) {
        self.0[op.index()] = Some(stats);
    }

    /// The measured ops and their stats, in [`Op`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Op, &OpStats)> {
        Op::ALL
            .into_iter()
            .filter_map(move |op| self.get(op).map(|s| (op, s)))
    }
}

impl FromIterator<(Op, OpStats)> for OpStatsSet {
    fn from_iter<I: IntoIterator<Item = (Op, OpStats)>>(iter: I) -> Self {
        let mut set = OpStatsSet::default();
        for (op, s) in iter {
            set.set(op, s);
        }
        set
    }
}

/// One `mlp.csv` row: the token-level ops of one layer for a batch of `num_tokens` tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpRow {
    pub num_tokens: u32,
    pub ops: OpStatsSet,
}

/// The `mlp.csv` rows of one model configuration, in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpTable {
    pub spec: BundleModelSpec,
    pub rows: Vec<MlpRow>,
}

impl MlpTable {
    /// Ops with a column in this table (each measured in every row).
    pub fn ops(&self) -> Vec<Op> {
        self.rows
            .first()
            .map(|r| r.ops.iter().map(|(op, _)| op).collect())
            .unwrap_or_default()
    }

    /// `(num_tokens, ms)` of `op`'s `statistic` over all rows (duplicates kept), or `None` if
    /// the table has no such op.
    pub fn points(&self, op: Op, statistic: OpStatistic) -> Option<Vec<(f64, f64)>> {
        self.rows
            .iter()
            .map(|r| {
                r.ops
                    .get(op)
                    .map(|s| (f64::from(r.num_tokens), s.get(statistic)))
            })
            .collect()
    }
}

/// Reads the `mlp.csv` rows of `spec` (`block_size` is not an mlp.csv column and is ignored).
pub fn read_mlp_csv(
    path: &Path,
    spec: &BundleModelSpec,
    duplicates: DuplicatePolicy,
) -> Result<MlpTable> {
    let t = CsvTable::read(path)?;
    let mut key = [0usize; MLP_KEY_COLUMNS.len()];
    for (k, name) in key.iter_mut().zip(MLP_KEY_COLUMNS) {
        *k = t.column(name)?;
    }
    let [n_head, n_kv_head, n_embd, n_expanded, vocab, gated, num_tokens, tp] = key;

    for op in REQUIRED_MLP_OPS {
        if t.op_stats_columns(op.name())?.is_none() {
            return Err(Error::ColumnNotFound {
                path: path.to_path_buf(),
                column: stat_column(op.name(), "median"),
                hint: Some("Vidur's predictor trains on this op".into()),
            });
        }
    }
    let mut op_cols = Vec::new();
    for op in VIDUR_MLP_OPS.into_iter().chain(EXTRA_MLP_OPS) {
        if let Some(cols) = t.op_stats_columns(op.name())? {
            op_cols.push((op, cols));
        }
    }

    let mut available = BTreeSet::new();
    let mut rows = Vec::new();
    let mut keys = Vec::new();
    for r in 0..t.len() {
        let row_spec = BundleModelSpec {
            n_head: t.u32(r, n_head)?,
            n_kv_head: t.u32(r, n_kv_head)?,
            n_embd: t.u32(r, n_embd)?,
            n_expanded_embd: t.u32(r, n_expanded)?,
            vocab_size: t.u32(r, vocab)?,
            use_gated_mlp: t.bool(r, gated)?,
            num_tensor_parallel_workers: t.u32(r, tp)?,
            // Not an mlp.csv column: copied so the comparison covers the rest.
            block_size: spec.block_size,
        };
        if row_spec != *spec {
            available.insert(row_spec.mlp_key());
            continue;
        }
        let tokens = t.u32(r, num_tokens)?;
        if tokens == 0 {
            return Err(t.invalid(r, num_tokens, "num_tokens must be at least 1"));
        }
        let mut ops = OpStatsSet::default();
        for (op, cols) in &op_cols {
            ops.set(*op, t.required_op_stats(r, cols)?);
        }
        keys.push((tokens, r));
        rows.push(MlpRow {
            num_tokens: tokens,
            ops,
        });
    }
    check_selection(&t, rows.is_empty(), &available, &spec.mlp_key(), "mlp")?;
    check_duplicates(&t, &keys, num_tokens, duplicates, |k| {
        format!("num_tokens={k}")
    })?;
    Ok(MlpTable { spec: *spec, rows })
}

/// Writes `mlp.csv` for one or more model configurations (e.g. several TP degrees): Vidur's
/// op columns in Vidur's order, its key columns, then our extra ops. Validated first: every
/// row measures the same ops, including all of [`REQUIRED_MLP_OPS`]; no op outside
/// `mlp.csv`'s set; no duplicated `num_tokens`; positive finite medians.
pub fn write_mlp_csv(path: &Path, tables: &[MlpTable]) -> Result<()> {
    let first = tables
        .iter()
        .flat_map(|t| t.rows.first())
        .next()
        .ok_or_else(|| write_err(path, "no rows".into()))?;
    let ops: Vec<Op> = first.ops.iter().map(|(op, _)| op).collect();
    for op in REQUIRED_MLP_OPS {
        if !ops.contains(&op) {
            return Err(write_err(path, format!("op `{op}` is required by Vidur")));
        }
    }
    if let Some(op) = ops
        .iter()
        .find(|op| !VIDUR_MLP_OPS.contains(op) && !EXTRA_MLP_OPS.contains(op))
    {
        return Err(write_err(
            path,
            format!("op `{op}` does not belong in mlp.csv"),
        ));
    }
    let mut specs = BTreeSet::new();
    for table in tables {
        if !specs.insert(table.spec.mlp_key()) {
            return Err(write_err(
                path,
                format!("model {} given twice", table.spec.mlp_key()),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, row) in table.rows.iter().enumerate() {
            let what = format!(
                "{} row {i} (num_tokens={})",
                table.spec.mlp_key(),
                row.num_tokens
            );
            if row.num_tokens == 0 || !seen.insert(row.num_tokens) {
                return Err(write_err(
                    path,
                    format!("{what}: zero or duplicated num_tokens"),
                ));
            }
            let row_ops: Vec<Op> = row.ops.iter().map(|(op, _)| op).collect();
            if row_ops != ops {
                return Err(write_err(
                    path,
                    format!("{what}: measures {row_ops:?} but the first row measures {ops:?}"),
                ));
            }
            for (op, s) in row.ops.iter() {
                check_stats(path, &what, op, s)?;
            }
        }
    }

    let vidur_ops: Vec<Op> = VIDUR_MLP_OPS
        .into_iter()
        .filter(|o| ops.contains(o))
        .collect();
    let extra_ops: Vec<Op> = EXTRA_MLP_OPS
        .into_iter()
        .filter(|o| ops.contains(o))
        .collect();
    let mut header = Vec::new();
    vidur_ops
        .iter()
        .for_each(|op| stats_header(&mut header, *op));
    header.extend(MLP_KEY_COLUMNS.iter().map(|c| c.to_string()));
    extra_ops
        .iter()
        .for_each(|op| stats_header(&mut header, *op));

    let mut rows = Vec::new();
    for table in tables {
        let s = &table.spec;
        for row in &table.rows {
            let mut cells = Vec::with_capacity(header.len());
            vidur_ops
                .iter()
                .for_each(|op| push_stats(&mut cells, row.ops.get(*op)));
            cells.extend([
                s.n_head.to_string(),
                s.n_kv_head.to_string(),
                s.n_embd.to_string(),
                s.n_expanded_embd.to_string(),
                s.vocab_size.to_string(),
                fmt_bool(s.use_gated_mlp).to_string(),
                row.num_tokens.to_string(),
                s.num_tensor_parallel_workers.to_string(),
            ]);
            extra_ops
                .iter()
                .for_each(|op| push_stats(&mut cells, row.ops.get(*op)));
            rows.push(cells);
        }
    }
    write_atomic(path, &csv_bytes(path, &header, &rows)?)
}
