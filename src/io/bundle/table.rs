//! What every bundle file shares: header-indexed CSV access with errors that name the file,
//! row and column; selecting one configuration's rows and checking repeated grid points; and
//! the cell formatting, validation and atomic write of the writers.
//!
//! Bundle files are small enough (≤ a few MB, or ~8 MB for a decompressed prediction table)
//! to read whole, which lets the reader check for a truncated tail before parsing.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::stats::{OpStats, STAT_SUFFIXES};
use super::DuplicatePolicy;
use crate::error::IoContext;
use crate::io::ops::Op;
use crate::{Error, Result};

/// A parsed CSV file: header plus string cells, looked up by column name.
pub(crate) struct CsvTable {
    path: PathBuf,
    headers: Vec<String>,
    index: HashMap<String, usize>,
    /// Every data cell, row-major, one after the other: a prediction table has ~800 k cells,
    /// and a record per row (two allocations each) was most of its load time.
    cells: String,
    /// Where each cell of `cells` ends.
    ends: Vec<usize>,
    num_rows: usize,
}

impl CsvTable {
    /// Reads and parses `path`.
    pub(crate) fn read(path: &Path) -> Result<CsvTable> {
        let file = std::fs::File::open(path).with_path(path)?;
        CsvTable::from_reader(path, file)
    }

    /// Parses CSV bytes from `reader`; `path` is only used in messages.
    pub(crate) fn from_reader(path: &Path, mut reader: impl Read) -> Result<CsvTable> {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).with_path(path)?;
        if bytes.is_empty() {
            return Err(Error::parse(path, "empty file (no header row)"));
        }
        // pandas and our writers end every row with a newline; a file cut mid-row may still
        // have the right field count (e.g. `4096` cut to `40`), so the missing newline is the
        // only trace of the truncation.
        if bytes.last() != Some(&b'\n') {
            return Err(Error::parse(
                path,
                "last row is not terminated by a newline: the file looks truncated",
            ));
        }
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(false)
            .from_reader(bytes.as_slice());
        let headers: Vec<String> = rdr
            .headers()
            .map_err(|e| csv_error(path, e))?
            .iter()
            .map(str::to_owned)
            .collect();
        let mut index = HashMap::with_capacity(headers.len());
        for (i, h) in headers.iter().enumerate() {
            // The unnamed index column pandas writes may legitimately be empty, but only once.
            if index.insert(h.clone(), i).is_some() {
                return Err(Error::SchemaMismatch {
                    path: path.to_path_buf(),
                    msg: format!("column `{h}` appears more than once in the header"),
                });
            }
        }
        let mut cells = String::with_capacity(bytes.len());
        let mut ends = Vec::new();
        let mut num_rows = 0;
        let mut record = csv::StringRecord::new();
        // Not `flexible`: every record has the header's field count.
        while rdr
            .read_record(&mut record)
            .map_err(|e| csv_error(path, e))?
        {
            for field in &record {
                cells.push_str(field);
                ends.push(cells.len());
            }
            num_rows += 1;
        }
        Ok(CsvTable {
            path: path.to_path_buf(),
            headers,
            index,
            cells,
            ends,
            num_rows,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Number of data rows.
    pub(crate) fn len(&self) -> usize {
        self.num_rows
    }

    /// Index of a required column.
    pub(crate) fn column(&self, name: &str) -> Result<usize> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| Error::ColumnNotFound {
                path: self.path.clone(),
                column: name.to_owned(),
                hint: Some(format!("the header has {} columns", self.headers.len())),
            })
    }

    /// Index of an optional column.
    pub(crate) fn optional_column(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The raw cell at a 0-based data row.
    pub(crate) fn cell(&self, row: usize, col: usize) -> &str {
        let i = row * self.headers.len() + col;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.cells[start..self.ends[i]]
    }

    /// An [`Error::InvalidValue`] for a 0-based data row (reported 1-based).
    pub(crate) fn invalid(&self, row: usize, col: usize, msg: impl Into<String>) -> Error {
        Error::InvalidValue {
            path: self.path.clone(),
            row: row + 1,
            column: self.headers[col].clone(),
            msg: msg.into(),
        }
    }

    /// A non-negative integer. Integral floats (`64.0`, which pandas writes for an int column
    /// that had a missing value) are accepted.
    pub(crate) fn u64(&self, row: usize, col: usize) -> Result<u64> {
        let s = self.cell(row, col);
        parse_count(s).ok_or_else(|| {
            self.invalid(
                row,
                col,
                format!("`{}` is not a non-negative integer", s.trim()),
            )
        })
    }

    /// A non-negative integer that fits `u32`.
    pub(crate) fn u32(&self, row: usize, col: usize) -> Result<u32> {
        let v = self.u64(row, col)?;
        u32::try_from(v).map_err(|_| self.invalid(row, col, format!("{v} does not fit in 32 bits")))
    }

    /// A finite float; empty cells are `None`.
    pub(crate) fn opt_f64(&self, row: usize, col: usize) -> Result<Option<f64>> {
        let s = self.cell(row, col).trim();
        if s.is_empty() {
            return Ok(None);
        }
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(self.invalid(row, col, format!("`{s}` is not a finite number"))),
        }
    }

    /// A boolean as pandas writes it (`True`/`False`, any case).
    pub(crate) fn bool(&self, row: usize, col: usize) -> Result<bool> {
        let s = self.cell(row, col).trim();
        if s.eq_ignore_ascii_case("true") {
            Ok(true)
        } else if s.eq_ignore_ascii_case("false") {
            Ok(false)
        } else {
            Err(self.invalid(row, col, format!("`{s}` is not True or False")))
        }
    }

    /// The five `time_stats.<op>.*` columns of `op`: `None` when the op has no `.median`
    /// column; an error when `.median` exists but a sibling is missing.
    pub(crate) fn op_stats_columns(&self, op: &str) -> Result<Option<[usize; 5]>> {
        if self.optional_column(&stat_column(op, "median")).is_none() {
            return Ok(None);
        }
        let mut cols = [0; 5];
        for (c, suffix) in cols.iter_mut().zip(STAT_SUFFIXES) {
            *c = self.column(&stat_column(op, suffix))?;
        }
        Ok(Some(cols))
    }

    /// One row's stats for an op: `None` when all five cells are empty (the op was not
    /// measured at this point), an error when only some are, or when a value is invalid.
    pub(crate) fn op_stats(&self, row: usize, cols: &[usize; 5]) -> Result<Option<OpStats>> {
        let mut values = [0.0; 5];
        let mut present = 0;
        for (v, &c) in values.iter_mut().zip(cols) {
            if let Some(x) = self.opt_f64(row, c)? {
                *v = x;
                present += 1;
            }
        }
        match present {
            0 => Ok(None),
            5 => {
                let stats = OpStats::from_values(values);
                stats.check().map_err(|(suffix, msg)| {
                    let col = cols[STAT_SUFFIXES.iter().position(|s| *s == suffix).unwrap_or(3)];
                    self.invalid(row, col, msg)
                })?;
                Ok(Some(stats))
            }
            _ => {
                let empty = cols
                    .iter()
                    .copied()
                    .find(|&c| self.cell(row, c).trim().is_empty())
                    .unwrap_or(cols[0]);
                Err(self.invalid(
                    row,
                    empty,
                    "empty while other statistics of the same op are present",
                ))
            }
        }
    }

    /// Like [`CsvTable::op_stats`] but the op must have been measured at this row.
    pub(crate) fn required_op_stats(&self, row: usize, cols: &[usize; 5]) -> Result<OpStats> {
        self.op_stats(row, cols)?
            .ok_or_else(|| self.invalid(row, cols[3], "empty: the op has no timing at this row"))
    }
}

/// `time_stats.<op>.<suffix>`.
pub(crate) fn stat_column(op: &str, suffix: &str) -> String {
    format!("time_stats.{op}.{suffix}")
}

/// A non-negative integer cell. Integral floats (`64.0`, which pandas writes for an int
/// column that had a missing value) are accepted.
pub(crate) fn parse_count(cell: &str) -> Option<u64> {
    let s = cell.trim();
    if let Ok(v) = s.parse::<u64>() {
        return Some(v);
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 2f64.powi(53) => {
            Some(v as u64)
        }
        _ => None,
    }
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    let msg = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => {
            let line = pos.as_ref().map(|p| p.line()).unwrap_or(0);
            format!(
                "line {line} has {len} fields but the header has {expected_len} \
                 (a ragged row: the file is truncated or hand-edited)"
            )
        }
        _ => e.to_string(),
    };
    Error::parse(path, msg)
}

/// Formats a float so that it reads back bit-identical and always looks like a float to
/// pandas (`2.0`, `0.1`, `1e-18`).
pub(crate) fn fmt_f64(v: f64) -> String {
    format!("{v:?}")
}

/// Formats a bool the way pandas writes and reads it.
pub(crate) fn fmt_bool(v: bool) -> &'static str {
    if v {
        "True"
    } else {
        "False"
    }
}

/// Serialises rows of string cells to CSV bytes.
pub(crate) fn csv_bytes(path: &Path, header: &[String], rows: &[Vec<String>]) -> Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    w.write_record(header)
        .map_err(|e| Error::parse(path, e.to_string()))?;
    for row in rows {
        w.write_record(row)
            .map_err(|e| Error::parse(path, e.to_string()))?;
    }
    w.into_inner()
        .map_err(|e| Error::parse(path, e.to_string()))
}

/// Writes `bytes` to `path` atomically: a temporary sibling file, then a rename, so a reader
/// never sees a half-written file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_path(parent)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_path(&tmp)?;
    std::fs::rename(&tmp, path).with_path(path)
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

pub(crate) fn stats_header(header: &mut Vec<String>, op: Op) {
    for suffix in STAT_SUFFIXES {
        header.push(stat_column(op.name(), suffix));
    }
}

pub(crate) fn push_stats(cells: &mut Vec<String>, stats: Option<&OpStats>) {
    match stats {
        Some(s) => cells.extend(s.values().into_iter().map(fmt_f64)),
        None => cells.extend(std::iter::repeat_n(String::new(), 5)),
    }
}

pub(crate) fn write_err(path: &Path, msg: String) -> Error {
    Error::InvalidInput(format!("refusing to write {}: {msg}", path.display()))
}

pub(crate) fn check_stats(path: &Path, what: &str, op: Op, s: &OpStats) -> Result<()> {
    s.check().map_err(|(suffix, msg)| {
        write_err(path, format!("{what}: time_stats.{op}.{suffix}: {msg}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Result<CsvTable> {
        CsvTable::from_reader(Path::new("t.csv"), text.as_bytes())
    }

    #[test]
    fn reads_by_name_and_parses_cells() {
        let t = table(",a,b,flag\n0,1,2.5,True\n1,64.0,,false\n").unwrap();
        assert_eq!(t.len(), 2);
        let a = t.column("a").unwrap();
        let b = t.column("b").unwrap();
        let flag = t.column("flag").unwrap();
        assert_eq!(t.u32(1, a).unwrap(), 64);
        assert_eq!(t.opt_f64(1, b).unwrap(), None);
        assert_eq!(t.opt_f64(0, b).unwrap(), Some(2.5));
        assert!(t.bool(0, flag).unwrap() && !t.bool(1, flag).unwrap());
        assert!(matches!(t.column("c"), Err(Error::ColumnNotFound { .. })));
        match t.u32(0, b) {
            Err(Error::InvalidValue { row, column, .. }) => {
                assert_eq!(row, 1);
                assert_eq!(column, "b");
            }
            other => panic!("expected InvalidValue, got {other:?}"),
        }
    }

    #[test]
    fn rejects_ragged_truncated_and_duplicate_headers() {
        assert!(matches!(table("a,b\n1,2\n3\n"), Err(Error::Parse { .. })));
        let e = table("a,b\n1,2\n3,4").err().unwrap().to_string();
        assert!(e.contains("truncated"), "{e}");
        assert!(matches!(
            table("a,a\n1,2\n"),
            Err(Error::SchemaMismatch { .. })
        ));
        assert!(matches!(table(""), Err(Error::Parse { .. })));
    }

    #[test]
    fn floats_round_trip_through_the_formatter() {
        for v in [
            0.1,
            2.0,
            1.734723475976807e-18,
            7.970000000000001,
            123456.789,
        ] {
            assert_eq!(fmt_f64(v).parse::<f64>().unwrap(), v);
        }
        assert_eq!(fmt_f64(2.0), "2.0");
    }
}
