//! `compute/<device>/<org>/<model>/attention.csv`: decode and prefill attention calls of one
//! layer, with the kv-cache save as our extra column.

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
    /// Decode rows as `(batch_size, kv_cache_size, ms)` of `statistic`.
    pub fn decode_points(&self, statistic: OpStatistic) -> Vec<(f64, f64, f64)> {
        self.rows
            .iter()
            .filter(|r| !r.is_prefill)
            .map(|r| {
                (
                    f64::from(r.batch_size),
                    f64::from(r.kv_cache_size),
                    r.attention.get(statistic),
                )
            })
            .collect()
    }

    /// Prefill rows as `(prefill_chunk_size, kv_cache_size, ms)` of `statistic`.
    pub fn prefill_points(&self, statistic: OpStatistic) -> Vec<(f64, f64, f64)> {
        self.rows
            .iter()
            .filter(|r| r.is_prefill)
            .map(|r| {
                (
                    f64::from(r.prefill_chunk_size),
                    f64::from(r.kv_cache_size),
                    r.attention.get(statistic),
                )
            })
            .collect()
    }

    /// `(tokens written, ms)` of the kv-cache save's `statistic` over rows that measured it.
    pub fn kv_save_points(&self, statistic: OpStatistic) -> Vec<(f64, f64)> {
        self.rows
            .iter()
            .filter_map(|r| {
                r.kv_cache_save
                    .map(|s| (f64::from(r.kv_save_tokens()), s.get(statistic)))
            })
            .collect()
    }
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
