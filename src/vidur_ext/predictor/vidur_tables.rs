//! `vidur_tables`: Vidur's formula over the prediction tables Vidur itself cached
//! (`<op>_<hash8>_predictions.csv[.gz]`), looked up at exactly Vidur's keys, so batch times
//! equal Vidur's.
//!
//! Tables: token ops and `attn_kv_cache_save`, `all_reduce`, `send_recv` by `num_tokens`
//! 1..N; `attn_decode` by `batch_size` 1..B × `kv_cache_size` 0..K step g; `attn_prefill` by
//! `kv_cache_size` 0..K step g × `prefill_chunk_size_squared` for chunks 1..C; CPU terms by
//! `batch_size` 1..B. Each must be complete (every key exactly once).
//!
//! **Outside the tables** (where Vidur raises `KeyError`) the value at the nearest edge key is
//! used, scaled proportionally to the key above the table's end (chunk² for prefill), as the
//! interpolants do, and the op is flagged as extrapolated; `try_predict` turns that into
//! `Error::OutOfRange`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::interp::Lookup;
use super::vidur_formula::{self, VidurLookups};
use super::{
    BatchPrediction, ExecutionTimePredictor, IterationContext, PredictorConfig, RequestShape,
};
use crate::error::IoContext;
use crate::vidur_ext::simulator::ClockKind;
use crate::vidur_ext::bundle::{CpuOverheadTerm, CsvTable, Op};
use crate::{Error, Result};

/// The token-keyed ops Vidur always predicts.
const TOKEN_OPS: [Op; 10] = [
    Op::AttnPreProj,
    Op::AttnPostProj,
    Op::MlpUpProj,
    Op::MlpDownProj,
    Op::MlpAct,
    Op::AttnRope,
    Op::AttnKvCacheSave,
    Op::InputLayernorm,
    Op::PostAttentionLayernorm,
    Op::Add,
];

/// Vidur's batch formula over Vidur's own prediction tables.
#[derive(Clone, Debug)]
pub struct VidurTablesPredictor {
    config: PredictorConfig,
    tables: VidurTables,
}

#[derive(Clone, Debug)]
struct VidurTables {
    token: [Option<Dense1d>; Op::COUNT],
    decode: DenseDecode,
    prefill: DensePrefill,
    cpu: [Option<Dense1d>; CpuOverheadTerm::COUNT],
}

impl VidurTablesPredictor {
    /// Loads the tables the configuration needs from `dir`: the ten token ops, decode and
    /// prefill attention; `all_reduce` when TP > 1, `send_recv` when PP > 1, and each charged
    /// CPU term. Files are picked by op prefix; two tables for one op are an error.
    pub fn from_dir(dir: &Path, config: PredictorConfig) -> Result<VidurTablesPredictor> {
        config.validate()?;
        let files = find_tables(dir)?;
        let path_of = |name: &str| -> Result<&PathBuf> {
            files.get(name).ok_or_else(|| Error::MissingInput {
                path: dir.to_path_buf(),
                msg: format!("no `{name}_<hash>_predictions.csv[.gz]` prediction table"),
                hint: Some("run Vidur once with this model/TP to populate its cache".into()),
            })
        };
        let mut token: [Option<Dense1d>; Op::COUNT] = Default::default();
        let mut needed: Vec<Op> = TOKEN_OPS.to_vec();
        if config.tensor_parallel_size > 1 {
            needed.push(Op::AllReduce);
        }
        if config.pipeline_parallel_size > 1 {
            needed.push(Op::SendRecv);
        }
        for op in needed {
            token[op.index()] = Some(Dense1d::read(path_of(op.name())?, "num_tokens")?);
        }
        let mut cpu: [Option<Dense1d>; CpuOverheadTerm::COUNT] = Default::default();
        for term in CpuOverheadTerm::ALL {
            if config.cpu_overheads.contains(term) {
                cpu[term.index()] = Some(Dense1d::read(path_of(term.name())?, "batch_size")?);
            }
        }
        let granularity = config.grid.kv_cache_granularity;
        let decode = DenseDecode::read(path_of(Op::AttnDecode.name())?, granularity)?;
        let prefill = DensePrefill::read(path_of(Op::AttnPrefill.name())?, granularity)?;
        Ok(VidurTablesPredictor {
            config,
            tables: VidurTables {
                token,
                decode,
                prefill,
                cpu,
            },
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PredictorConfig {
        &self.config
    }
}

impl ExecutionTimePredictor for VidurTablesPredictor {
    fn name(&self) -> &'static str {
        "vidur_tables"
    }

    fn predict_with(&self, batch: &[RequestShape], ctx: &IterationContext) -> BatchPrediction {
        vidur_formula::predict(&self.tables, &self.config, batch, ctx.pipeline_stage)
    }

    fn clock(&self) -> ClockKind {
        ClockKind::VidurSeconds
    }
}

impl VidurLookups for VidurTables {
    fn token_op(&self, op: Op, num_tokens: u64) -> Lookup {
        self.token[op.index()]
            .as_ref()
            .map_or(Lookup::ZERO, |t| t.get(num_tokens))
    }

    fn attn_decode(&self, batch_size: u64, kv_cache_size: u64) -> Lookup {
        self.decode.get(batch_size, kv_cache_size)
    }

    fn attn_prefill(&self, kv_cache_size: u64, chunk: u64) -> Lookup {
        self.prefill.get(kv_cache_size, chunk)
    }

    fn cpu(&self, term: CpuOverheadTerm, batch_size: u64) -> Lookup {
        self.cpu[term.index()]
            .as_ref()
            .map_or(Lookup::ZERO, |t| t.get(batch_size))
    }
}

/// Maps op name → prediction-table file in `dir`.
fn find_tables(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_path(dir)? {
        let path = entry.with_path(dir)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name
            .strip_suffix("_predictions.csv.gz")
            .or_else(|| name.strip_suffix("_predictions.csv"))
        else {
            continue;
        };
        // `<op>_<hash>_training_predictions.csv` ends in `_predictions.csv` too, but its stem
        // ends in `_training` rather than a hash.
        let Some((op, hash)) = stem.rsplit_once('_') else {
            continue;
        };
        if hash.len() != 8 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        if let Some(other) = found.insert(op.to_owned(), path.clone()) {
            return Err(Error::Mismatch(format!(
                "two prediction tables for `{op}` in {}: {} and {}; keep the one of this model",
                dir.display(),
                other.display(),
                path.display()
            )));
        }
    }
    Ok(found)
}

fn read_table(path: &Path) -> Result<CsvTable> {
    let file = std::fs::File::open(path).with_path(path)?;
    if path.extension().is_some_and(|e| e == "gz") {
        CsvTable::from_reader(path, flate2::read::GzDecoder::new(file))
    } else {
        CsvTable::from_reader(path, file)
    }
}

/// A prediction in ms: finite and non-negative (Vidur predicts exactly 0 for an op whose
/// training targets were filled with 0).
fn prediction(t: &CsvTable, row: usize, col: usize) -> Result<f64> {
    let v = t.f64(row, col)?;
    if v < 0.0 {
        return Err(t.invalid(row, col, format!("{v} ms is negative")));
    }
    Ok(v)
}

/// Index of key `k` on an arithmetic grid `first, first + step, …` of `len` keys, plus the
/// proportional factor and flag for keys outside it (see the module docs).
fn grid_index(k: u64, first: u64, step: u64, len: usize) -> (usize, f64, bool) {
    let last = first + step * (len as u64 - 1);
    if k < first {
        return (0, 1.0, true);
    }
    if k > last {
        let factor = if last > 0 {
            k as f64 / last as f64
        } else {
            1.0
        };
        return (len - 1, factor, true);
    }
    let offset = k - first;
    // Off-grid keys cannot come from Vidur's formula; round up like Vidur's rounding would.
    (offset.div_ceil(step) as usize, 1.0, offset % step != 0)
}

/// Checks that `keys` are exactly `first, first + step, …` and returns `(step, len)`.
fn arithmetic(t: &CsvTable, col: usize, keys: &[u64], first: u64) -> Result<(u64, usize)> {
    // A grid has few distinct keys among many rows (4,096 chunks in 266 k prefill rows):
    // dedup through a set before sorting.
    let mut distinct: Vec<u64> = keys
        .iter()
        .copied()
        .collect::<std::collections::HashSet<u64>>()
        .into_iter()
        .collect();
    distinct.sort_unstable();
    let step = if distinct.len() > 1 {
        distinct[1] - distinct[0]
    } else {
        1
    };
    let ok = distinct.first() == Some(&first)
        && step > 0
        && distinct
            .iter()
            .enumerate()
            .all(|(i, &k)| k == first + step * i as u64);
    if !ok {
        return Err(Error::SchemaMismatch {
            path: t.path().to_path_buf(),
            msg: format!(
                "`{}` keys are not an evenly spaced grid starting at {first}",
                t.headers()[col]
            ),
        });
    }
    Ok((step, distinct.len()))
}

/// Fills a dense table, rejecting duplicated and missing keys.
fn fill_dense(
    t: &CsvTable,
    key_col: usize,
    cells: &[(usize, usize, f64)],
    len: usize,
) -> Result<Vec<f64>> {
    let mut values: Vec<Option<f64>> = vec![None; len];
    for &(row, i, v) in cells {
        if values[i].replace(v).is_some() {
            return Err(t.invalid(row, key_col, "duplicated key"));
        }
    }
    let missing = values.iter().filter(|v| v.is_none()).count();
    if missing > 0 {
        return Err(Error::SchemaMismatch {
            path: t.path().to_path_buf(),
            msg: format!("incomplete grid: {missing} of {len} keys have no prediction"),
        });
    }
    Ok(values.into_iter().flatten().collect())
}

/// A table keyed by one integer 1..=N.
#[derive(Clone, Debug)]
struct Dense1d {
    values: Vec<f64>,
}

impl Dense1d {
    fn read(path: &Path, key: &str) -> Result<Dense1d> {
        let t = read_table(path)?;
        let key_col = t.column(key)?;
        let pred_col = t.column("prediction")?;
        let keys: Vec<u64> = (0..t.len())
            .map(|r| t.u64(r, key_col))
            .collect::<Result<_>>()?;
        if keys.is_empty() {
            return Err(Error::MissingInput {
                path: path.to_path_buf(),
                msg: "empty grid: the table has no rows".into(),
                hint: None,
            });
        }
        let (step, len) = arithmetic(&t, key_col, &keys, 1)?;
        if step != 1 {
            return Err(Error::SchemaMismatch {
                path: path.to_path_buf(),
                msg: format!("`{key}` must cover 1..=N in steps of 1, found steps of {step}"),
            });
        }
        let cells: Vec<(usize, usize, f64)> = keys
            .iter()
            .enumerate()
            .map(|(r, &k)| Ok((r, (k - 1) as usize, prediction(&t, r, pred_col)?)))
            .collect::<Result<_>>()?;
        Ok(Dense1d {
            values: fill_dense(&t, key_col, &cells, len)?,
        })
    }

    fn get(&self, key: u64) -> Lookup {
        let (i, factor, outside) = grid_index(key, 1, 1, self.values.len());
        Lookup {
            value_ms: self.values[i] * factor,
            extrapolated: outside,
        }
    }
}

/// `attn_decode`: batch 1..=B × kv 0..=K step g, row-major by batch.
#[derive(Clone, Debug)]
struct DenseDecode {
    num_batch: usize,
    num_kv: usize,
    kv_step: u64,
    values: Vec<f64>,
}

impl DenseDecode {
    fn read(path: &Path, granularity: u32) -> Result<DenseDecode> {
        let t = read_table(path)?;
        let b_col = t.column("batch_size")?;
        let kv_col = t.column("kv_cache_size")?;
        let pred_col = t.column("prediction")?;
        let bs: Vec<u64> = (0..t.len())
            .map(|r| t.u64(r, b_col))
            .collect::<Result<_>>()?;
        let kvs: Vec<u64> = (0..t.len())
            .map(|r| t.u64(r, kv_col))
            .collect::<Result<_>>()?;
        let (b_step, num_batch) = arithmetic(&t, b_col, &bs, 1)?;
        let (kv_step, num_kv) = arithmetic(&t, kv_col, &kvs, 0)?;
        check_granularity(&t, kv_step, granularity)?;
        if b_step != 1 {
            return Err(Error::SchemaMismatch {
                path: path.to_path_buf(),
                msg: "`batch_size` must cover 1..=B in steps of 1".into(),
            });
        }
        let cells: Vec<(usize, usize, f64)> = (0..t.len())
            .map(|r| {
                let i = (bs[r] - 1) as usize * num_kv + (kvs[r] / kv_step) as usize;
                Ok((r, i, prediction(&t, r, pred_col)?))
            })
            .collect::<Result<_>>()?;
        Ok(DenseDecode {
            num_batch,
            num_kv,
            kv_step,
            values: fill_dense(&t, b_col, &cells, num_batch * num_kv)?,
        })
    }

    fn get(&self, batch_size: u64, kv_cache_size: u64) -> Lookup {
        let (bi, bf, b_out) = grid_index(batch_size, 1, 1, self.num_batch);
        let (ki, kf, k_out) = grid_index(kv_cache_size, 0, self.kv_step, self.num_kv);
        Lookup {
            value_ms: self.values[bi * self.num_kv + ki] * bf * kf,
            extrapolated: b_out || k_out,
        }
    }
}

/// `attn_prefill`: kv 0..=K step g × chunk 1..=C (stored as chunk²), row-major by kv.
#[derive(Clone, Debug)]
struct DensePrefill {
    num_kv: usize,
    kv_step: u64,
    num_chunk: usize,
    values: Vec<f64>,
}

impl DensePrefill {
    fn read(path: &Path, granularity: u32) -> Result<DensePrefill> {
        let t = read_table(path)?;
        let kv_col = t.column("kv_cache_size")?;
        let sq_col = t.column("prefill_chunk_size_squared")?;
        let pred_col = t.column("prediction")?;
        let kvs: Vec<u64> = (0..t.len())
            .map(|r| t.u64(r, kv_col))
            .collect::<Result<_>>()?;
        let chunks: Vec<u64> = (0..t.len())
            .map(|r| {
                let sq = t.u64(r, sq_col)?;
                let c = sq.isqrt();
                if c * c != sq {
                    return Err(t.invalid(r, sq_col, format!("{sq} is not a perfect square")));
                }
                Ok(c)
            })
            .collect::<Result<_>>()?;
        let (kv_step, num_kv) = arithmetic(&t, kv_col, &kvs, 0)?;
        check_granularity(&t, kv_step, granularity)?;
        let (c_step, num_chunk) = arithmetic(&t, sq_col, &chunks, 1)?;
        if c_step != 1 {
            return Err(Error::SchemaMismatch {
                path: path.to_path_buf(),
                msg: "chunks (√prefill_chunk_size_squared) must cover 1..=C in steps of 1".into(),
            });
        }
        let cells: Vec<(usize, usize, f64)> = (0..t.len())
            .map(|r| {
                let i = (kvs[r] / kv_step) as usize * num_chunk + (chunks[r] - 1) as usize;
                Ok((r, i, prediction(&t, r, pred_col)?))
            })
            .collect::<Result<_>>()?;
        Ok(DensePrefill {
            num_kv,
            kv_step,
            num_chunk,
            values: fill_dense(&t, kv_col, &cells, num_kv * num_chunk)?,
        })
    }

    fn get(&self, kv_cache_size: u64, chunk: u64) -> Lookup {
        let (ki, kf, k_out) = grid_index(kv_cache_size, 0, self.kv_step, self.num_kv);
        let (ci, cf, c_out) = grid_index(chunk, 1, 1, self.num_chunk);
        Lookup {
            // Proportional in chunk², the table's key.
            value_ms: self.values[ki * self.num_chunk + ci] * kf * cf * cf,
            extrapolated: k_out || c_out,
        }
    }
}

fn check_granularity(t: &CsvTable, step: u64, granularity: u32) -> Result<()> {
    if step != u64::from(granularity) {
        return Err(Error::Mismatch(format!(
            "{}: kv_cache_size step {step} differs from the configured granularity {granularity}",
            t.path().display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_index_edges() {
        assert_eq!(grid_index(1, 1, 1, 4), (0, 1.0, false));
        assert_eq!(grid_index(4, 1, 1, 4), (3, 1.0, false));
        assert_eq!(grid_index(8, 1, 1, 4), (3, 2.0, true));
        assert_eq!(grid_index(0, 1, 1, 4), (0, 1.0, true));
        assert_eq!(grid_index(128, 0, 64, 3), (2, 1.0, false));
        assert_eq!(grid_index(100, 0, 64, 3), (2, 1.0, true));
        assert_eq!(grid_index(256, 0, 64, 3), (2, 2.0, true));
    }
}
