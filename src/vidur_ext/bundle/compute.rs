//! `compute/<device>/<org>/<model>/{mlp,attention}.csv`: reading one model configuration's
//! rows, and writing files in Vidur's layout.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::path::Path;

use super::op::Op;
use super::stats::{OpStats, STAT_SUFFIXES};
use super::table::{csv_bytes, fmt_bool, fmt_f64, stat_column, write_atomic, CsvTable};
use super::{BundleModelSpec, DuplicatePolicy};
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

const ATTENTION_KEY_COLUMNS: [&str; 12] = [
    "n_embd",
    "n_q_head",
    "n_kv_head",
    "block_size",
    "num_tensor_parallel_workers",
    "max_model_len",
    "batch_size",
    "prefill_chunk_size",
    "kv_cache_size",
    "is_prefill",
    "attention_backend",
    "profile_method",
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

    /// `(num_tokens, median_ms)` of `op` over all rows (duplicates kept), or `None` if the
    /// table has no such op.
    pub fn medians(&self, op: Op) -> Option<Vec<(f64, f64)>> {
        self.rows
            .iter()
            .map(|r| {
                r.ops
                    .get(op)
                    .map(|s| (f64::from(r.num_tokens), s.median_ms))
            })
            .collect()
    }
}

/// One `attention.csv` row: one attention call, either a decode step of `batch_size`
/// sequences each with `kv_cache_size` cached tokens, or a prefill chunk of
/// `prefill_chunk_size` tokens over `kv_cache_size` cached tokens (batch 1).
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionRow {
    pub batch_size: u32,
    pub prefill_chunk_size: u32,
    pub kv_cache_size: u32,
    pub is_prefill: bool,
    /// `attn_prefill` stats on prefill rows, `attn_decode` stats on decode rows.
    pub attention: OpStats,
    /// `attn_kv_cache_save` (our extra column; absent from Vidur's reference file).
    pub kv_cache_save: Option<OpStats>,
}

impl AttentionRow {
    /// Vidur's derived `num_tokens` for the kv-cache save: tokens written this call,
    /// `max(prefill_chunk_size, batch_size)`.
    pub fn kv_save_tokens(&self) -> u32 {
        self.prefill_chunk_size.max(self.batch_size)
    }
}

/// The `attention.csv` rows of one model configuration, in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionTable {
    pub spec: BundleModelSpec,
    /// Informational columns, constant over one configuration's rows.
    pub max_model_len: Option<u32>,
    pub attention_backend: Option<String>,
    pub profile_method: Option<String>,
    pub rows: Vec<AttentionRow>,
}

impl AttentionTable {
    /// Decode rows as `(batch_size, kv_cache_size, median_ms)`.
    pub fn decode_medians(&self) -> Vec<(f64, f64, f64)> {
        self.rows
            .iter()
            .filter(|r| !r.is_prefill)
            .map(|r| {
                (
                    f64::from(r.batch_size),
                    f64::from(r.kv_cache_size),
                    r.attention.median_ms,
                )
            })
            .collect()
    }

    /// Prefill rows as `(prefill_chunk_size, kv_cache_size, median_ms)`.
    pub fn prefill_medians(&self) -> Vec<(f64, f64, f64)> {
        self.rows
            .iter()
            .filter(|r| r.is_prefill)
            .map(|r| {
                (
                    f64::from(r.prefill_chunk_size),
                    f64::from(r.kv_cache_size),
                    r.attention.median_ms,
                )
            })
            .collect()
    }

    /// `(tokens written, median_ms)` of the kv-cache save over rows that measured it.
    pub fn kv_save_medians(&self) -> Vec<(f64, f64)> {
        self.rows
            .iter()
            .filter_map(|r| {
                r.kv_cache_save
                    .map(|s| (f64::from(r.kv_save_tokens()), s.median_ms))
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

/// Reads the `attention.csv` rows of `spec` (matched on `n_embd`, `n_q_head`, `n_kv_head`,
/// `block_size`, `num_tensor_parallel_workers`, as Vidur does).
pub fn read_attention_csv(
    path: &Path,
    spec: &BundleModelSpec,
    duplicates: DuplicatePolicy,
) -> Result<AttentionTable> {
    let t = CsvTable::read(path)?;
    let n_embd = t.column("n_embd")?;
    let n_q_head = t.column("n_q_head")?;
    let n_kv_head = t.column("n_kv_head")?;
    let block_size = t.column("block_size")?;
    let tp = t.column("num_tensor_parallel_workers")?;
    let batch_size = t.column("batch_size")?;
    let chunk = t.column("prefill_chunk_size")?;
    let kv = t.column("kv_cache_size")?;
    let is_prefill = t.column("is_prefill")?;
    let max_model_len = t.optional_column("max_model_len");
    let backend = t.optional_column("attention_backend");
    let profile_method = t.optional_column("profile_method");
    let required_stats = |op: Op| -> Result<[usize; 5]> {
        t.op_stats_columns(op.name())?
            .ok_or_else(|| Error::ColumnNotFound {
                path: path.to_path_buf(),
                column: stat_column(op.name(), "median"),
                hint: None,
            })
    };
    let decode_cols = required_stats(Op::AttnDecode)?;
    let prefill_cols = required_stats(Op::AttnPrefill)?;
    let save_cols = t.op_stats_columns(Op::AttnKvCacheSave.name())?;

    let mut available = BTreeSet::new();
    let mut rows = Vec::new();
    let mut decode_keys = Vec::new();
    let mut prefill_keys = Vec::new();
    let mut informational: Option<(Option<u32>, Option<String>, Option<String>)> = None;
    for r in 0..t.len() {
        let row_key = (
            t.u32(r, n_embd)?,
            t.u32(r, n_q_head)?,
            t.u32(r, n_kv_head)?,
            t.u32(r, block_size)?,
            t.u32(r, tp)?,
        );
        if row_key != spec.attention_tuple() {
            available.insert(format!(
                "n_embd={} n_q_head={} n_kv_head={} block_size={} tp={}",
                row_key.0, row_key.1, row_key.2, row_key.3, row_key.4
            ));
            continue;
        }
        let info = (
            max_model_len.map(|c| t.u32(r, c)).transpose()?,
            backend.map(|c| t.cell(r, c).to_owned()),
            profile_method.map(|c| t.cell(r, c).to_owned()),
        );
        match &informational {
            None => informational = Some(info),
            Some(first) if *first != info => {
                return Err(Error::Mismatch(format!(
                    "{}: row {} has max_model_len/attention_backend/profile_method {:?}, \
                     but earlier rows of the same model have {:?}",
                    path.display(),
                    r + 1,
                    info,
                    first
                )))
            }
            Some(_) => {}
        }
        let row_batch = t.u32(r, batch_size)?;
        let row_chunk = t.u32(r, chunk)?;
        let row_kv = t.u32(r, kv)?;
        let row_is_prefill = t.bool(r, is_prefill)?;
        // Vidur tells decode from prefill by `prefill_chunk_size == 0`; a row where the two
        // disagree would be trained as the wrong kind.
        if row_is_prefill != (row_chunk > 0) {
            return Err(t.invalid(
                r,
                is_prefill,
                format!(
                    "is_prefill={} contradicts prefill_chunk_size={row_chunk}",
                    fmt_bool(row_is_prefill)
                ),
            ));
        }
        if row_batch == 0 {
            return Err(t.invalid(r, batch_size, "batch_size must be at least 1"));
        }
        let attention = if row_is_prefill {
            if row_batch != 1 {
                return Err(t.invalid(
                    r,
                    batch_size,
                    "prefill rows must have batch_size 1 (one sequence per prefill call)",
                ));
            }
            prefill_keys.push(((row_kv, row_chunk), r));
            t.required_op_stats(r, &prefill_cols)?
        } else {
            decode_keys.push(((row_batch, row_kv), r));
            t.required_op_stats(r, &decode_cols)?
        };
        rows.push(AttentionRow {
            batch_size: row_batch,
            prefill_chunk_size: row_chunk,
            kv_cache_size: row_kv,
            is_prefill: row_is_prefill,
            attention,
            kv_cache_save: save_cols.map(|c| t.op_stats(r, &c)).transpose()?.flatten(),
        });
    }
    let wanted = format!(
        "n_embd={} n_q_head={} n_kv_head={} block_size={} tp={}",
        spec.n_embd, spec.n_head, spec.n_kv_head, spec.block_size, spec.num_tensor_parallel_workers
    );
    check_selection(&t, rows.is_empty(), &available, &wanted, "attention")?;
    for (keys, what) in [(&decode_keys, "decode"), (&prefill_keys, "prefill")] {
        if keys.is_empty() {
            return Err(Error::MissingInput {
                path: path.to_path_buf(),
                msg: format!("empty grid: no {what} rows for {wanted}"),
                hint: Some("profile both decode and prefill attention".into()),
            });
        }
    }
    check_duplicates(&t, &decode_keys, kv, duplicates, |(b, k)| {
        format!("decode batch_size={b} kv_cache_size={k}")
    })?;
    check_duplicates(&t, &prefill_keys, chunk, duplicates, |(k, c)| {
        format!("prefill kv_cache_size={k} prefill_chunk_size={c}")
    })?;
    let (max_model_len, attention_backend, profile_method) = informational.unwrap_or_default();
    Ok(AttentionTable {
        spec: *spec,
        max_model_len,
        attention_backend,
        profile_method,
        rows,
    })
}

/// Errors for an empty file or a file without the requested configuration.
pub(crate) fn check_selection(
    t: &CsvTable,
    selection_empty: bool,
    available: &BTreeSet<String>,
    wanted: &str,
    what: &str,
) -> Result<()> {
    if t.len() == 0 {
        return Err(Error::MissingInput {
            path: t.path().to_path_buf(),
            msg: format!("empty grid: the {what} file has a header but no rows"),
            hint: None,
        });
    }
    if selection_empty {
        let listed: Vec<&str> = available.iter().map(String::as_str).take(12).collect();
        let more = available.len().saturating_sub(listed.len());
        return Err(Error::Mismatch(format!(
            "{}: no rows for {wanted}; the file has: {}{}",
            t.path().display(),
            listed.join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        )));
    }
    Ok(())
}

/// Applies the duplicate policy to `(grid key, 0-based row)` pairs.
pub(crate) fn check_duplicates<K: Eq + Hash + Copy>(
    t: &CsvTable,
    keys: &[(K, usize)],
    key_column: usize,
    policy: DuplicatePolicy,
    describe: impl Fn(K) -> String,
) -> Result<()> {
    if policy == DuplicatePolicy::Average {
        return Ok(());
    }
    let mut seen = HashMap::with_capacity(keys.len());
    for &(k, r) in keys {
        if let Some(first) = seen.insert(k, r) {
            return Err(t.invalid(
                r,
                key_column,
                format!(
                    "duplicated grid point {} (first at row {}); load with \
                     DuplicatePolicy::Average to average repeated measurements",
                    describe(k),
                    first + 1
                ),
            ));
        }
    }
    Ok(())
}

fn stats_header(header: &mut Vec<String>, op: Op) {
    for suffix in STAT_SUFFIXES {
        header.push(stat_column(op.name(), suffix));
    }
}

fn push_stats(cells: &mut Vec<String>, stats: Option<&OpStats>) {
    match stats {
        Some(s) => cells.extend(s.values().into_iter().map(fmt_f64)),
        None => cells.extend(std::iter::repeat_n(String::new(), 5)),
    }
}

fn write_err(path: &Path, msg: String) -> Error {
    Error::InvalidInput(format!("refusing to write {}: {msg}", path.display()))
}

fn check_stats(path: &Path, what: &str, op: Op, s: &OpStats) -> Result<()> {
    s.check().map_err(|(suffix, msg)| {
        write_err(path, format!("{what}: time_stats.{op}.{suffix}: {msg}"))
    })
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

/// Writes `attention.csv` for one or more model configurations: `attn_decode` and
/// `attn_prefill` stats (decode rows leave the prefill cells empty and vice versa, as Vidur's
/// file does), Vidur's key columns, then `attn_kv_cache_save` if measured. Vidur's
/// `attn_input_reshape`/`attn_output_reshape` columns are not written: our engine has no such
/// ops and Vidur never reads them. Validated first: both decode and prefill rows present,
/// `is_prefill` consistent with `prefill_chunk_size`, prefill batch size 1, no duplicated grid
/// points, kv-cache-save measured in every row or none.
pub fn write_attention_csv(path: &Path, tables: &[AttentionTable]) -> Result<()> {
    let with_save = tables
        .iter()
        .flat_map(|t| t.rows.first())
        .next()
        .ok_or_else(|| write_err(path, "no rows".into()))?
        .kv_cache_save
        .is_some();
    let mut specs = BTreeSet::new();
    for table in tables {
        let s = &table.spec;
        if !specs.insert(s.attention_tuple()) {
            return Err(write_err(path, format!("model {s} given twice")));
        }
        let mut seen = BTreeSet::new();
        let (mut decodes, mut prefills) = (0, 0);
        for (i, row) in table.rows.iter().enumerate() {
            let what = format!(
                "{s} row {i} (batch_size={} prefill_chunk_size={} kv_cache_size={})",
                row.batch_size, row.prefill_chunk_size, row.kv_cache_size
            );
            if row.is_prefill != (row.prefill_chunk_size > 0) || row.batch_size == 0 {
                return Err(write_err(
                    path,
                    format!("{what}: inconsistent is_prefill/batch size"),
                ));
            }
            if row.is_prefill && row.batch_size != 1 {
                return Err(write_err(
                    path,
                    format!("{what}: prefill rows have batch_size 1"),
                ));
            }
            if !seen.insert((row.batch_size, row.prefill_chunk_size, row.kv_cache_size)) {
                return Err(write_err(path, format!("{what}: duplicated grid point")));
            }
            if row.kv_cache_save.is_some() != with_save {
                return Err(write_err(
                    path,
                    format!("{what}: attn_kv_cache_save must be measured in every row or none"),
                ));
            }
            let op = if row.is_prefill {
                prefills += 1;
                Op::AttnPrefill
            } else {
                decodes += 1;
                Op::AttnDecode
            };
            check_stats(path, &what, op, &row.attention)?;
            if let Some(save) = &row.kv_cache_save {
                check_stats(path, &what, Op::AttnKvCacheSave, save)?;
            }
        }
        if decodes == 0 || prefills == 0 {
            return Err(write_err(
                path,
                format!("{s}: Vidur needs both decode and prefill rows ({decodes} decode, {prefills} prefill)"),
            ));
        }
    }

    let mut header = Vec::new();
    stats_header(&mut header, Op::AttnDecode);
    stats_header(&mut header, Op::AttnPrefill);
    header.extend(ATTENTION_KEY_COLUMNS.iter().map(|c| c.to_string()));
    if with_save {
        stats_header(&mut header, Op::AttnKvCacheSave);
    }
    let mut rows = Vec::new();
    for table in tables {
        let s = &table.spec;
        for row in &table.rows {
            let mut cells = Vec::with_capacity(header.len());
            let (decode, prefill) = if row.is_prefill {
                (None, Some(&row.attention))
            } else {
                (Some(&row.attention), None)
            };
            push_stats(&mut cells, decode);
            push_stats(&mut cells, prefill);
            cells.extend([
                s.n_embd.to_string(),
                s.n_head.to_string(),
                s.n_kv_head.to_string(),
                s.block_size.to_string(),
                s.num_tensor_parallel_workers.to_string(),
                table
                    .max_model_len
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                row.batch_size.to_string(),
                row.prefill_chunk_size.to_string(),
                row.kv_cache_size.to_string(),
                fmt_bool(row.is_prefill).to_string(),
                table.attention_backend.clone().unwrap_or_default(),
                table.profile_method.clone().unwrap_or_default(),
            ]);
            if with_save {
                push_stats(&mut cells, row.kv_cache_save.as_ref());
            }
            rows.push(cells);
        }
    }
    write_atomic(path, &csv_bytes(path, &header, &rows)?)
}
