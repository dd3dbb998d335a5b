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
use std::io::Read;
use std::path::{Path, PathBuf};

use super::interp::Lookup;
use super::vidur_formula::{self, VidurLookups};
use super::{
    BatchPrediction, ExecutionTimePredictor, IterationContext, PredictorConfig, RequestShape,
};
use crate::error::IoContext;
use crate::io::bundle::{parse_count, CpuOverheadTerm, Op};
use crate::vidur_ext::simulator::ClockKind;
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
        // Every table is found, in this order, before any is read.
        let mut token_ops: Vec<Op> = TOKEN_OPS.to_vec();
        if config.tensor_parallel_size > 1 {
            token_ops.push(Op::AllReduce);
        }
        if config.pipeline_parallel_size > 1 {
            token_ops.push(Op::SendRecv);
        }
        let token_paths = token_ops
            .iter()
            .map(|&op| Ok((op, path_of(op.name())?)))
            .collect::<Result<Vec<_>>>()?;
        let cpu_paths = CpuOverheadTerm::ALL
            .into_iter()
            .filter(|&term| config.cpu_overheads.contains(term))
            .map(|term| Ok((term, path_of(term.name())?)))
            .collect::<Result<Vec<_>>>()?;
        let decode_path = path_of(Op::AttnDecode.name())?;
        let prefill_path = path_of(Op::AttnPrefill.name())?;
        let granularity = config.grid.kv_cache_granularity;
        std::thread::scope(|scope| {
            // The prefill table is as large as all the others together: read it meanwhile.
            let prefill = scope.spawn(|| DensePrefill::read(prefill_path, granularity));
            let mut token: [Option<Dense1d>; Op::COUNT] = Default::default();
            for (op, path) in token_paths {
                token[op.index()] = Some(Dense1d::read(path, "num_tokens")?);
            }
            let mut cpu: [Option<Dense1d>; CpuOverheadTerm::COUNT] = Default::default();
            for (term, path) in cpu_paths {
                cpu[term.index()] = Some(Dense1d::read(path, "batch_size")?);
            }
            let decode = DenseDecode::read(decode_path, granularity)?;
            let prefill = prefill
                .join()
                .map_err(|_| Error::Msg("reading the prefill table panicked".into()))??;
            Ok(VidurTablesPredictor {
                config,
                tables: VidurTables {
                    token,
                    decode,
                    prefill,
                    cpu,
                },
            })
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

/// A prediction table's rows: its integer key columns and `prediction` (ms, finite and
/// non-negative: Vidur predicts exactly 0 for an op whose training targets were filled with
/// 0), parsed straight from the file's bytes. The prefill table has 266 k rows; through a
/// general table of string cells it was most of a simulation's start-up.
struct PredictionRows<const K: usize> {
    path: PathBuf,
    key_columns: [&'static str; K],
    keys: Vec<[u64; K]>,
    values: Vec<f64>,
}

impl<const K: usize> PredictionRows<K> {
    fn read(path: &Path, key_columns: [&'static str; K]) -> Result<Self> {
        let file = std::fs::File::open(path).with_path(path)?;
        let mut bytes = Vec::new();
        if path.extension().is_some_and(|e| e == "gz") {
            flate2::read::GzDecoder::new(file).read_to_end(&mut bytes)
        } else {
            std::io::BufReader::new(file).read_to_end(&mut bytes)
        }
        .with_path(path)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| Error::parse(path, format!("not UTF-8 text: {e}")))?;
        // A file cut mid-row may still parse (`4096` cut to `40`); the missing newline is the
        // only trace of the truncation.
        if !text.ends_with('\n') {
            return Err(Error::parse(
                path,
                "last row is not terminated by a newline: the file looks truncated",
            ));
        }
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
        let column = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .ok_or_else(|| Error::ColumnNotFound {
                    path: path.to_path_buf(),
                    column: name.to_owned(),
                    hint: Some(format!("the header has {} columns", header.len())),
                })
        };
        let mut key_index = [0; K];
        for (i, name) in key_index.iter_mut().zip(key_columns) {
            *i = column(name)?;
        }
        let value_index = column("prediction")?;
        let mut rows = PredictionRows {
            path: path.to_path_buf(),
            key_columns,
            keys: Vec::new(),
            values: Vec::new(),
        };
        for (i, line) in lines.enumerate() {
            let row = i + 1;
            let mut key = [0u64; K];
            let mut value = None;
            let mut num_fields = 0;
            for (c, field) in line.split(',').enumerate() {
                num_fields += 1;
                if c == value_index {
                    value = Some(match field.trim().parse::<f64>() {
                        Ok(v) if v.is_finite() && v >= 0.0 => v,
                        _ => {
                            return Err(rows.invalid(
                                row,
                                "prediction",
                                format!("`{field}` is not a finite non-negative number of ms"),
                            ))
                        }
                    });
                } else if let Some(k) = key_index.iter().position(|&kc| kc == c) {
                    key[k] = parse_count(field).ok_or_else(|| {
                        rows.invalid(
                            row,
                            key_columns[k],
                            format!("`{field}` is not a non-negative integer"),
                        )
                    })?;
                }
            }
            if num_fields != header.len() {
                return Err(Error::parse(
                    path,
                    format!(
                        "row {row} has {num_fields} fields but the header has {}",
                        header.len()
                    ),
                ));
            }
            rows.keys.push(key);
            rows.values.push(value.unwrap_or_default());
        }
        if rows.keys.is_empty() {
            return Err(Error::MissingInput {
                path: path.to_path_buf(),
                msg: "empty grid: the table has no rows".into(),
                hint: None,
            });
        }
        Ok(rows)
    }

    /// An [`Error::InvalidValue`] at a 1-based data row.
    fn invalid(&self, row: usize, column: &str, msg: impl Into<String>) -> Error {
        Error::InvalidValue {
            path: self.path.clone(),
            row,
            column: column.into(),
            msg: msg.into(),
        }
    }

    /// Checks that the values of key column `k` are exactly `first, first + step, …` and
    /// returns `(step, len)`.
    fn arithmetic(&self, k: usize, first: u64) -> Result<(u64, usize)> {
        // A grid has few distinct keys among many rows (4,096 chunks in 266 k prefill rows):
        // dedup through a set before sorting.
        let mut distinct: Vec<u64> = self
            .keys
            .iter()
            .map(|key| key[k])
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
                .all(|(i, &v)| v == first + step * i as u64);
        if !ok {
            return Err(Error::SchemaMismatch {
                path: self.path.clone(),
                msg: format!(
                    "`{}` keys are not an evenly spaced grid starting at {first}",
                    self.key_columns[k]
                ),
            });
        }
        Ok((step, distinct.len()))
    }

    /// A dense table of `len` values, row `r` at `index(keys[r])`; duplicated and missing
    /// keys are errors (named by key column `k`).
    fn fill(&self, k: usize, len: usize, index: impl Fn(&[u64; K]) -> usize) -> Result<Vec<f64>> {
        // Values are finite, so NaN marks a key not seen yet.
        let mut values = vec![f64::NAN; len];
        for (r, (key, &v)) in self.keys.iter().zip(&self.values).enumerate() {
            let slot = &mut values[index(key)];
            if !slot.is_nan() {
                return Err(self.invalid(r + 1, self.key_columns[k], "duplicated key"));
            }
            *slot = v;
        }
        let missing = values.iter().filter(|v| v.is_nan()).count();
        if missing > 0 {
            return Err(Error::SchemaMismatch {
                path: self.path.clone(),
                msg: format!("incomplete grid: {missing} of {len} keys have no prediction"),
            });
        }
        Ok(values)
    }

    fn check_granularity(&self, step: u64, granularity: u32) -> Result<()> {
        if step != u64::from(granularity) {
            return Err(Error::Mismatch(format!(
                "{}: kv_cache_size step {step} differs from the configured granularity {granularity}",
                self.path.display()
            )));
        }
        Ok(())
    }
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
    (
        offset.div_ceil(step) as usize,
        1.0,
        !offset.is_multiple_of(step),
    )
}

/// A table keyed by one integer 1..=N.
#[derive(Clone, Debug)]
struct Dense1d {
    values: Vec<f64>,
}

impl Dense1d {
    fn read(path: &Path, key: &'static str) -> Result<Dense1d> {
        let t = PredictionRows::read(path, [key])?;
        let (step, len) = t.arithmetic(0, 1)?;
        if step != 1 {
            return Err(Error::SchemaMismatch {
                path: path.to_path_buf(),
                msg: format!("`{key}` must cover 1..=N in steps of 1, found steps of {step}"),
            });
        }
        Ok(Dense1d {
            values: t.fill(0, len, |k| (k[0] - 1) as usize)?,
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
        let t = PredictionRows::read(path, ["batch_size", "kv_cache_size"])?;
        let (b_step, num_batch) = t.arithmetic(0, 1)?;
        let (kv_step, num_kv) = t.arithmetic(1, 0)?;
        t.check_granularity(kv_step, granularity)?;
        if b_step != 1 {
            return Err(Error::SchemaMismatch {
                path: path.to_path_buf(),
                msg: "`batch_size` must cover 1..=B in steps of 1".into(),
            });
        }
        let values = t.fill(0, num_batch * num_kv, |k| {
            (k[0] - 1) as usize * num_kv + (k[1] / kv_step) as usize
        })?;
        Ok(DenseDecode {
            num_batch,
            num_kv,
            kv_step,
            values,
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
        let mut t = PredictionRows::read(path, ["kv_cache_size", "prefill_chunk_size_squared"])?;
        // Keyed by chunk², gridded by chunk.
        for r in 0..t.keys.len() {
            let sq = t.keys[r][1];
            let c = sq.isqrt();
            if c * c != sq {
                return Err(t.invalid(
                    r + 1,
                    "prefill_chunk_size_squared",
                    format!("{sq} is not a perfect square"),
                ));
            }
            t.keys[r][1] = c;
        }
        let (kv_step, num_kv) = t.arithmetic(0, 0)?;
        t.check_granularity(kv_step, granularity)?;
        let (c_step, num_chunk) = t.arithmetic(1, 1)?;
        if c_step != 1 {
            return Err(Error::SchemaMismatch {
                path: path.to_path_buf(),
                msg: "chunks (√prefill_chunk_size_squared) must cover 1..=C in steps of 1".into(),
            });
        }
        let values = t.fill(0, num_kv * num_chunk, |k| {
            (k[0] / kv_step) as usize * num_chunk + (k[1] - 1) as usize
        })?;
        Ok(DensePrefill {
            num_kv,
            kv_step,
            num_chunk,
            values,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` as a prediction table file in a temp dir (removed with the returned guard).
    fn table_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attn_decode_0123abcd_predictions.csv");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn reads_a_decode_table_and_rejects_broken_ones() {
        let good = "batch_size,kv_cache_size,prediction\n1,0,0.5\n1,64,0.75\n2,0,1.0\n2,64,1.5\n";
        let t = DenseDecode::read(&table_file(good).1, 64).unwrap();
        assert_eq!((t.num_batch, t.num_kv, t.kv_step), (2, 2, 64));
        assert_eq!(t.values, [0.5, 0.75, 1.0, 1.5]);
        let err = |text: &str| DenseDecode::read(&table_file(text).1, 64).unwrap_err();
        let dup = good.replace("2,64,1.5", "2,0,1.5");
        assert!(
            matches!(err(&dup), Error::InvalidValue { row: 4, .. }),
            "{}",
            err(&dup)
        );
        let missing = good.replace("2,64,1.5\n", "");
        assert!(matches!(err(&missing), Error::SchemaMismatch { .. }));
        assert!(err(good.trim_end()).to_string().contains("truncated"));
        let negative = good.replace("0.75", "-0.75");
        assert!(matches!(err(&negative), Error::InvalidValue { row: 2, .. }));
        let ragged = good.replace("1,64,0.75", "1,64");
        assert!(matches!(err(&ragged), Error::Parse { .. }));
        let renamed = good.replace("prediction", "value");
        assert!(matches!(err(&renamed), Error::ColumnNotFound { .. }));
        assert!(matches!(
            DenseDecode::read(&table_file(good).1, 16).unwrap_err(),
            Error::Mismatch(_)
        ));
    }

    #[test]
    fn prefill_keys_must_be_squares() {
        let text =
            "kv_cache_size,prefill_chunk_size_squared,prediction\n0,1,1.0\n0,4,2.0\n0,8,3.0\n";
        let err = DensePrefill::read(&table_file(text).1, 64).unwrap_err();
        assert!(err.to_string().contains("not a perfect square"), "{err}");
        let text = "kv_cache_size,prefill_chunk_size_squared,prediction\n\
                    0,1,1.0\n0,4,2.0\n64,1,3.0\n64,4,4.0\n";
        let t = DensePrefill::read(&table_file(text).1, 64).unwrap();
        assert_eq!((t.num_kv, t.num_chunk), (2, 2));
        assert_eq!(t.values, [1.0, 2.0, 3.0, 4.0]);
    }

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
