//! Validated CSV reading and writing against the schema registry.
//!
//! Writers emit exactly the schema's columns in order and refuse a row that would break the
//! contract (an empty non-nullable value, a NaN). Readers check the header (missing required
//! columns, unknown or duplicated columns) and every value's type before deserializing, so
//! an error names the file, the 1-based data row and the column.

use std::collections::HashSet;
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::io::atomic::AtomicFile;
use crate::io::schema::{ColumnType, CsvSchema};
use crate::{Error, Result};

/// Streams rows of `T` into a CSV file that appears atomically on [`CsvWriter::finish`].
///
/// `T`'s serialized fields must be the schema's columns in order; this is checked on the
/// first row (and by unit tests per record type).
pub struct CsvWriter<T> {
    schema: &'static CsvSchema,
    writer: csv::Writer<AtomicFile>,
    path: PathBuf,
    rows_written: usize,
    needs_value_checks: bool,
    record: csv::ByteRecord,
    _row: PhantomData<T>,
}

impl<T: Serialize> CsvWriter<T> {
    /// Creates `dir/<schema.file_name>` (as a temp file until `finish`).
    pub fn create_in(dir: &Path, schema: &'static CsvSchema) -> Result<Self> {
        Self::create(dir.join(schema.file_name), schema)
    }

    /// Creates `path` (as a temp file until `finish`) and writes the header.
    pub fn create(path: impl AsRef<Path>, schema: &'static CsvSchema) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = AtomicFile::create(&path)?;
        let mut writer = csv::WriterBuilder::new()
            .has_headers(false)
            .buffer_capacity(1 << 16)
            .from_writer(file);
        writer
            .write_record(schema.column_names())
            .map_err(|e| csv_write_error(&path, e))?;
        Ok(Self {
            schema,
            writer,
            path,
            rows_written: 0,
            needs_value_checks: schema
                .columns
                .iter()
                .any(|c| c.dtype == ColumnType::F64 || (c.dtype == ColumnType::Str && !c.nullable)),
            record: csv::ByteRecord::new(),
            _row: PhantomData,
        })
    }

    /// Validates and appends one row.
    ///
    /// Integer and boolean columns cannot be invalid once `T` type-checks, so rows of schemas
    /// made only of those (the large token files) are written directly after the first row
    /// has been checked; others are checked value by value.
    pub fn write(&mut self, row: &T) -> Result<()> {
        self.rows_written += 1;
        if self.rows_written > 1 && !self.needs_value_checks {
            return self
                .writer
                .serialize(row)
                .map_err(|e| csv_write_error(&self.path, e));
        }
        self.record.clear();
        self.record
            .serialize_into(row)
            .map_err(|e| csv_write_error(&self.path, e))?;
        validate_written(self.schema, &self.path, self.rows_written, &self.record)?;
        self.writer
            .write_byte_record(&self.record)
            .map_err(|e| csv_write_error(&self.path, e))
    }

    /// Flushes and moves the file into place. Returns the number of data rows.
    pub fn finish(self) -> Result<usize> {
        let path = self.path;
        let file = self
            .writer
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?;
        file.commit()?;
        Ok(self.rows_written)
    }
}

trait SerializeInto {
    fn serialize_into<T: Serialize>(&mut self, row: &T) -> std::result::Result<(), csv::Error>;
}

impl SerializeInto for csv::ByteRecord {
    /// csv's serializer only targets writers: serialize into memory and split the bytes back
    /// into fields so they can be checked before they are written.
    fn serialize_into<T: Serialize>(&mut self, row: &T) -> std::result::Result<(), csv::Error> {
        let mut w = csv::WriterBuilder::new()
            .has_headers(false)
            .buffer_capacity(256)
            .from_writer(Vec::with_capacity(256));
        w.serialize(row)?;
        let bytes = w
            .into_inner()
            .map_err(|e| csv::Error::from(e.into_error()))?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(bytes.as_slice());
        reader.read_byte_record(self)?;
        Ok(())
    }
}

fn csv_write_error(path: &Path, e: csv::Error) -> Error {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => Error::io(path, io),
        other => Error::SchemaMismatch {
            path: path.to_path_buf(),
            msg: format!("cannot serialize row: {other:?}"),
        },
    }
}

fn validate_written(
    schema: &CsvSchema,
    path: &Path,
    row: usize,
    record: &csv::ByteRecord,
) -> Result<()> {
    if record.len() != schema.columns.len() {
        return Err(Error::SchemaMismatch {
            path: path.to_path_buf(),
            msg: format!(
                "row {row} has {} fields but the schema has {} columns ({})",
                record.len(),
                schema.columns.len(),
                schema.column_names().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    for (field, column) in record.iter().zip(schema.columns) {
        if field.is_empty() {
            if !column.nullable {
                return Err(Error::InvalidValue {
                    path: path.to_path_buf(),
                    row,
                    column: column.name.to_string(),
                    msg: "empty value in a non-nullable column".into(),
                });
            }
        } else if column.dtype == ColumnType::F64 && !is_finite_text(field) {
            return Err(Error::InvalidValue {
                path: path.to_path_buf(),
                row,
                column: column.name.to_string(),
                msg: format!("non-finite number `{}`", String::from_utf8_lossy(field)),
            });
        }
    }
    Ok(())
}

fn is_finite_text(field: &[u8]) -> bool {
    std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

/// Reads a whole CSV file, validating it against `schema`, into rows of `T`.
pub fn read_csv<T: DeserializeOwned>(path: impl AsRef<Path>, schema: &CsvSchema) -> Result<Vec<T>> {
    let mut rows = Vec::new();
    for_each_row(path, schema, |row| {
        rows.push(row);
        Ok(())
    })?;
    Ok(rows)
}

/// Streams a validated CSV file row by row (constant memory for large token files).
pub fn for_each_row<T: DeserializeOwned>(
    path: impl AsRef<Path>,
    schema: &CsvSchema,
    mut f: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::MissingInput {
                path: path.to_path_buf(),
                msg: "file not found".into(),
                hint: None,
            }
        } else {
            Error::io(path, e)
        }
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(std::io::BufReader::with_capacity(1 << 16, file));
    let headers = reader
        .headers()
        .map_err(|e| read_error(path, e, &[]))?
        .clone();
    let columns = check_header(path, schema, &headers)?;
    let names: Vec<String> = headers.iter().map(str::to_string).collect();
    let mut record = csv::StringRecord::new();
    let mut row = 0usize;
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(read_error(path, e, &names)),
        }
        row += 1;
        for (i, field) in record.iter().enumerate() {
            if let Some(column) = columns[i] {
                check_value(path, row, column, field)?;
            }
        }
        let value: T = record
            .deserialize(Some(&headers))
            .map_err(|e| read_error(path, e, &names))?;
        f(value)?;
    }
    Ok(())
}

/// Checks a header against a schema; returns, per file column, its schema column.
fn check_header<'s>(
    path: &Path,
    schema: &'s CsvSchema,
    headers: &csv::StringRecord,
) -> Result<Vec<Option<&'s crate::io::schema::Column>>> {
    let mut seen = HashSet::new();
    let mut columns = Vec::with_capacity(headers.len());
    for name in headers.iter() {
        if !seen.insert(name) {
            return Err(Error::SchemaMismatch {
                path: path.to_path_buf(),
                msg: format!("column `{name}` appears twice"),
            });
        }
        match schema.column(name) {
            Some(c) => columns.push(Some(c)),
            None => {
                return Err(Error::SchemaMismatch {
                    path: path.to_path_buf(),
                    msg: format!(
                        "unexpected column `{name}` (schema v{} of {} has: {})",
                        schema.version,
                        schema.file_name,
                        schema.column_names().collect::<Vec<_>>().join(", ")
                    ),
                })
            }
        }
    }
    for c in schema.columns.iter().filter(|c| c.required) {
        if !seen.contains(c.name) {
            return Err(Error::ColumnNotFound {
                path: path.to_path_buf(),
                column: c.name.to_string(),
                hint: Some(format!(
                    "{} v{} requires it",
                    schema.file_name, schema.version
                )),
            });
        }
    }
    Ok(columns)
}

fn check_value(
    path: &Path,
    row: usize,
    column: &crate::io::schema::Column,
    field: &str,
) -> Result<()> {
    let bad = |msg: String| Error::InvalidValue {
        path: path.to_path_buf(),
        row,
        column: column.name.to_string(),
        msg,
    };
    if field.is_empty() {
        return if column.nullable {
            Ok(())
        } else {
            Err(bad("empty value in a non-nullable column".into()))
        };
    }
    match column.dtype {
        ColumnType::U64 => field
            .parse::<u64>()
            .map(drop)
            .map_err(|_| bad(format!("`{field}` is not a non-negative integer"))),
        ColumnType::I64 => field
            .parse::<i64>()
            .map(drop)
            .map_err(|_| bad(format!("`{field}` is not an integer"))),
        ColumnType::F64 => match field.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(()),
            Ok(_) => Err(bad(format!("non-finite number `{field}`"))),
            Err(_) => Err(bad(format!("`{field}` is not a number"))),
        },
        ColumnType::Bool => match field {
            "true" | "false" => Ok(()),
            _ => Err(bad(format!("`{field}` is not `true` or `false`"))),
        },
        ColumnType::Str => Ok(()),
    }
}

fn read_error(path: &Path, e: csv::Error, names: &[String]) -> Error {
    let row = e
        .position()
        .map(|p| p.line().saturating_sub(1) as usize)
        .unwrap_or(0);
    match e.into_kind() {
        csv::ErrorKind::Io(io) => Error::io(path, io),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => Error::SchemaMismatch {
            path: path.to_path_buf(),
            msg: format!(
                "row {row} has {len} fields, the header has {expected_len} (truncated or malformed file?)"
            ),
        },
        csv::ErrorKind::Deserialize { err, .. } => Error::InvalidValue {
            path: path.to_path_buf(),
            row,
            column: err
                .field()
                .and_then(|i| names.get(i as usize).cloned())
                .unwrap_or_else(|| "?".into()),
            msg: err.kind().to_string(),
        },
        csv::ErrorKind::Utf8 { err, .. } => Error::Parse {
            path: path.to_path_buf(),
            msg: format!("row {row}: invalid UTF-8: {err}"),
        },
        other => Error::Parse {
            path: path.to_path_buf(),
            msg: format!("malformed CSV: {other:?}"),
        },
    }
}

/// Writes all rows at once.
pub fn write_csv<'a, T: Serialize + 'a>(
    path: impl AsRef<Path>,
    schema: &'static CsvSchema,
    rows: impl IntoIterator<Item = &'a T>,
) -> Result<usize> {
    let mut w = CsvWriter::create(path, schema)?;
    for row in rows {
        w.write(row)?;
    }
    w.finish()
}

/// Reads the header line of a CSV without validating rows (for format sniffing).
pub fn read_header(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    let mut reader = csv::Reader::from_path(path).map_err(|e| read_error(path, e, &[]))?;
    Ok(reader
        .headers()
        .map_err(|e| read_error(path, e, &[]))?
        .iter()
        .map(str::to_string)
        .collect())
}

/// Flushes a plain writer, naming the path on failure.
pub fn flush_named(w: &mut impl Write, path: &Path) -> Result<()> {
    w.flush().map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::records::{TokenMetricsRow, TraceIntervalRow};
    use crate::io::schema::{Column, TOKEN_METRICS, TRACE_INTERVALS};
    use serde::Deserialize;
    use std::fs;

    static WITH_FLOAT: CsvSchema = CsvSchema {
        file_name: "f.csv",
        version: 1,
        description: "test",
        columns: &[
            Column {
                name: "id",
                dtype: ColumnType::U64,
                required: true,
                nullable: false,
                unit: "",
                description: "",
            },
            Column {
                name: "x",
                dtype: ColumnType::F64,
                required: true,
                nullable: false,
                unit: "",
                description: "",
            },
        ],
    };

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct FloatRow {
        id: u64,
        x: f64,
    }

    fn dir() -> PathBuf {
        crate::io::atomic::tests::tempdir()
    }

    #[test]
    fn roundtrip_and_streaming() {
        let d = dir();
        let rows: Vec<TokenMetricsRow> = (0..5)
            .map(|i| TokenMetricsRow {
                request_id: 1,
                token_index: i,
                token_time_ns: 100 * u64::from(i),
                token_latency_ns: if i == 0 { 0 } else { 100 },
                batch_id: u64::from(i),
                token_id: (i % 2 == 0).then_some(42),
            })
            .collect();
        let path = d.join(TOKEN_METRICS.file_name);
        assert_eq!(write_csv(&path, &TOKEN_METRICS, &rows).unwrap(), 5);
        let back: Vec<TokenMetricsRow> = read_csv(&path, &TOKEN_METRICS).unwrap();
        assert_eq!(back, rows);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn writer_rejects_nan_and_leaves_no_file() {
        let d = dir();
        let path = d.join("f.csv");
        let mut w = CsvWriter::create(&path, &WITH_FLOAT).unwrap();
        w.write(&FloatRow { id: 0, x: 1.5 }).unwrap();
        let err = w.write(&FloatRow { id: 1, x: f64::NAN }).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidValue { row: 2, column, .. } if column == "x"),
            "{err}"
        );
        drop(w);
        assert!(!path.exists());
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn reader_names_file_row_and_column() {
        let d = dir();
        let path = d.join("trace_intervals.csv");
        let read = |text: &str| {
            fs::write(&path, text).unwrap();
            read_csv::<TraceIntervalRow>(&path, &TRACE_INTERVALS).unwrap_err()
        };
        let e = read("request_id,inter_arrival_ns\n0,0\n");
        assert!(
            matches!(&e, Error::ColumnNotFound { column, .. } if column == "arrival_time_ns"),
            "{e}"
        );
        assert!(e.to_string().contains("trace_intervals.csv"), "{e}");
        let e = read("request_id,inter_arrival_ns,arrival_time_ns,extra\n0,0,0,1\n");
        assert!(
            matches!(&e, Error::SchemaMismatch { msg, .. } if msg.contains("`extra`")),
            "{e}"
        );
        let e = read("request_id,inter_arrival_ns,arrival_time_ns\n0,0,0\n1,-5,10\n");
        assert!(
            matches!(&e, Error::InvalidValue { row: 2, column, .. } if column == "inter_arrival_ns"),
            "{e}"
        );
        let e = read("request_id,inter_arrival_ns,arrival_time_ns\n0,0,0\n1,5\n");
        assert!(
            matches!(&e, Error::SchemaMismatch { msg, .. } if msg.contains("truncated")),
            "{e}"
        );
        let e = read("request_id,request_id,arrival_time_ns\n0,0,0\n");
        assert!(
            matches!(&e, Error::SchemaMismatch { msg, .. } if msg.contains("twice")),
            "{e}"
        );
        fs::write(d.join("f.csv"), "id,x\n0,NaN\n").unwrap();
        let e = read_csv::<FloatRow>(d.join("f.csv"), &WITH_FLOAT).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidValue { row: 1, column, .. } if column == "x"),
            "{e}"
        );
        let e = read_csv::<FloatRow>(d.join("missing.csv"), &WITH_FLOAT).unwrap_err();
        assert!(matches!(e, Error::MissingInput { .. }));
        fs::remove_dir_all(d).unwrap();
    }
}
