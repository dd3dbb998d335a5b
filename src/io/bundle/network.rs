//! `network/<name>/{all_reduce,send_recv}.csv`: collective timings by message size.

use std::collections::BTreeSet;
use std::path::Path;

use super::stats::{OpStatistic, OpStats};
use super::table::{check_duplicates, check_selection, stat_column, CsvTable};
use super::DuplicatePolicy;
use crate::io::ops::Op;
use crate::{Error, Result};

/// One collective measurement of `size_bytes` (fp16 activations).
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkRow {
    pub size_bytes: u64,
    pub rank: u32,
    pub stats: OpStats,
}

/// The rows of one collective for one worker layout.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkTable {
    /// [`Op::AllReduce`] or [`Op::SendRecv`].
    pub op: Op,
    pub num_workers: Option<u32>,
    pub devices_per_node: u32,
    pub rows: Vec<NetworkRow>,
}

impl NetworkTable {
    /// `(num_tokens, ms)` of `statistic` with Vidur's byte→token mapping `size / hidden / 2`
    /// (one fp16 activation row per token), so fractional token counts occur.
    pub fn token_points(&self, n_embd: u32, statistic: OpStatistic) -> Vec<(f64, f64)> {
        let bytes_per_token = 2.0 * f64::from(n_embd);
        self.rows
            .iter()
            .map(|r| {
                (
                    r.size_bytes as f64 / bytes_per_token,
                    r.stats.get(statistic),
                )
            })
            .collect()
    }
}

/// Reads the all-reduce rows Vidur uses for tensor parallelism of degree `tp`:
/// `num_workers == devices_per_node == tp` and `collective == all_reduce`.
pub fn read_all_reduce_csv(
    path: &Path,
    tp: u32,
    duplicates: DuplicatePolicy,
) -> Result<NetworkTable> {
    read_network(path, Op::AllReduce, Some(tp), tp, duplicates)
}

/// Reads the send/recv rows Vidur uses between pipeline stages: `devices_per_node` is 1 when
/// the stages span nodes and 2 otherwise; any `num_workers`.
pub fn read_send_recv_csv(
    path: &Path,
    devices_per_node: u32,
    duplicates: DuplicatePolicy,
) -> Result<NetworkTable> {
    read_network(path, Op::SendRecv, None, devices_per_node, duplicates)
}

fn read_network(
    path: &Path,
    op: Op,
    num_workers: Option<u32>,
    devices_per_node: u32,
    duplicates: DuplicatePolicy,
) -> Result<NetworkTable> {
    let t = CsvTable::read(path)?;
    let stats_cols = t
        .op_stats_columns(op.name())?
        .ok_or_else(|| Error::ColumnNotFound {
            path: path.to_path_buf(),
            column: stat_column(op.name(), "median"),
            hint: None,
        })?;
    let rank = t.column("rank")?;
    let workers = t.column("num_workers")?;
    let size = t.column("size")?;
    let collective = t.column("collective")?;
    let per_node = t.column("devices_per_node")?;

    let mut available = BTreeSet::new();
    let mut rows = Vec::new();
    let mut keys = Vec::new();
    for r in 0..t.len() {
        let row_collective = t.cell(r, collective);
        let row_workers = t.u32(r, workers)?;
        let row_per_node = t.u32(r, per_node)?;
        let matches = row_collective == op.name()
            && row_per_node == devices_per_node
            && num_workers.is_none_or(|n| n == row_workers);
        if !matches {
            available.insert(format!(
                "collective={row_collective} num_workers={row_workers} devices_per_node={row_per_node}"
            ));
            continue;
        }
        let size_bytes = t.u64(r, size)?;
        if size_bytes == 0 {
            return Err(t.invalid(r, size, "message size must be positive"));
        }
        keys.push((size_bytes, r));
        rows.push(NetworkRow {
            size_bytes,
            rank: t.u32(r, rank)?,
            stats: t.required_op_stats(r, &stats_cols)?,
        });
    }
    let wanted = format!(
        "collective={op} num_workers={} devices_per_node={devices_per_node}",
        num_workers.map_or("any".to_string(), |n| n.to_string())
    );
    check_selection(&t, rows.is_empty(), &available, &wanted, op.name())?;
    check_duplicates(&t, &keys, size, duplicates, |s| format!("size={s}"))?;
    Ok(NetworkTable {
        op,
        num_workers,
        devices_per_node,
        rows,
    })
}
