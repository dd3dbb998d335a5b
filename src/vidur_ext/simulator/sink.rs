//! Where the simulator's results go: a push-model [`SimSink`] (the simulator drives, the sink
//! stores), with a streaming CSV implementation for stage runs and an in-memory one for tests
//! and tools.
//!
//! The simulator hands a sink request rows in arrival order (it reorders completions itself),
//! token rows in emission order (non-decreasing time; per request their indices are
//! contiguous), and batch rows in order of their end. The CSV sink writes each row as it
//! comes, so memory does not grow with the number of tokens or requests.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::IoContext;
use crate::io::records::{BatchMetricsRow, BatchRequestRow, RequestMetricsRow, TokenMetricsRow};
use crate::io::schema::{CsvSchema, BATCH_METRICS, BATCH_REQUESTS, REQUEST_METRICS, TOKEN_METRICS};
use crate::io::{AtomicFile, CsvWriter};
use crate::scheduler::BatchEntry;
use crate::{Error, Result};

/// Receives the simulator's output rows.
pub trait SimSink {
    /// One finished (or rejected) request; called in arrival order.
    fn on_request(&mut self, row: RequestMetricsRow) -> Result<()>;
    /// One emitted output token; called in emission order.
    fn on_token(&mut self, row: &TokenMetricsRow) -> Result<()>;
    /// One finished batch and its entries (the rows of `batch_requests.csv`).
    fn on_batch(&mut self, row: &BatchMetricsRow, entries: &[BatchEntry]) -> Result<()>;
}

/// Keeps every row in memory.
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    pub requests: Vec<RequestMetricsRow>,
    pub tokens: Vec<TokenMetricsRow>,
    pub batches: Vec<BatchMetricsRow>,
    pub batch_requests: Vec<BatchRequestRow>,
}

impl SimSink for MemorySink {
    fn on_request(&mut self, row: RequestMetricsRow) -> Result<()> {
        self.requests.push(row);
        Ok(())
    }

    fn on_token(&mut self, row: &TokenMetricsRow) -> Result<()> {
        self.tokens.push(row.clone());
        Ok(())
    }

    fn on_batch(&mut self, row: &BatchMetricsRow, entries: &[BatchEntry]) -> Result<()> {
        self.batches.push(row.clone());
        self.batch_requests
            .extend(entries.iter().map(|e| batch_request_row(row.batch_id, e)));
        Ok(())
    }
}

/// Keeps only the request rows (enough for queueing checks over very many requests).
#[derive(Debug, Default, Clone)]
pub struct RequestsOnlySink {
    pub requests: Vec<RequestMetricsRow>,
}

impl SimSink for RequestsOnlySink {
    fn on_request(&mut self, row: RequestMetricsRow) -> Result<()> {
        self.requests.push(row);
        Ok(())
    }

    fn on_token(&mut self, _row: &TokenMetricsRow) -> Result<()> {
        Ok(())
    }

    fn on_batch(&mut self, _row: &BatchMetricsRow, _entries: &[BatchEntry]) -> Result<()> {
        Ok(())
    }
}

/// Discards every row, counting them: for timing the simulation alone.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DiscardSink {
    pub requests: u64,
    pub tokens: u64,
    pub batches: u64,
}

impl SimSink for DiscardSink {
    fn on_request(&mut self, _row: RequestMetricsRow) -> Result<()> {
        self.requests += 1;
        Ok(())
    }

    fn on_token(&mut self, _row: &TokenMetricsRow) -> Result<()> {
        self.tokens += 1;
        Ok(())
    }

    fn on_batch(&mut self, _row: &BatchMetricsRow, _entries: &[BatchEntry]) -> Result<()> {
        self.batches += 1;
        Ok(())
    }
}

fn batch_request_row(batch_id: u64, e: &BatchEntry) -> BatchRequestRow {
    BatchRequestRow {
        batch_id,
        request_id: e.request_id,
        num_tokens: e.num_tokens,
        num_context_tokens: e.num_context_tokens,
        is_prefill: e.is_prefill,
    }
}

/// Rows written per file by a [`CsvSink`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CsvSinkCounts {
    pub request_rows: u64,
    pub token_rows: u64,
    pub batch_rows: u64,
    pub batch_request_rows: u64,
}

/// Streams the four run CSVs (`request_metrics`, `token_metrics`, `batch_metrics`,
/// `batch_requests`) into a directory; each file appears atomically on [`CsvSink::finish`].
///
/// Batch rows go through the validating [`CsvWriter`]. Token and batch-request rows —
/// millions per run, integers and booleans only, so a row that type-checks cannot break its
/// schema — go through a dedicated formatter several times faster than serde's. Request rows
/// are serialized by csv directly: `CsvWriter` re-parses every row of a schema with text
/// columns (28 µs a row here, half the time of a million-request run), and
/// [`RequestMetricsRow`] cannot break its schema either (no floats; its only required text
/// column, `status`, is an enum).
pub struct CsvSink {
    requests: RequestRowWriter,
    batches: CsvWriter<BatchMetricsRow>,
    tokens: IntCsvWriter,
    batch_requests: IntCsvWriter,
    counts: CsvSinkCounts,
}

impl CsvSink {
    /// Creates the four files in `dir` (as temp files until `finish`).
    pub fn create(dir: &Path) -> Result<CsvSink> {
        Ok(CsvSink {
            requests: RequestRowWriter::create(dir)?,
            batches: CsvWriter::create_in(dir, &BATCH_METRICS)?,
            tokens: IntCsvWriter::create(dir, &TOKEN_METRICS)?,
            batch_requests: IntCsvWriter::create(dir, &BATCH_REQUESTS)?,
            counts: CsvSinkCounts::default(),
        })
    }

    /// Flushes every file and moves it into place.
    pub fn finish(self) -> Result<CsvSinkCounts> {
        self.requests.finish()?;
        self.batches.finish()?;
        self.tokens.finish()?;
        self.batch_requests.finish()?;
        Ok(self.counts)
    }
}

impl SimSink for CsvSink {
    fn on_request(&mut self, row: RequestMetricsRow) -> Result<()> {
        self.counts.request_rows += 1;
        self.requests.write(&row)
    }

    fn on_token(&mut self, row: &TokenMetricsRow) -> Result<()> {
        self.counts.token_rows += 1;
        let w = &mut self.tokens;
        w.u64(row.request_id);
        w.u64(u64::from(row.token_index));
        w.u64(row.token_time_ns);
        w.u64(row.token_latency_ns);
        w.u64(row.batch_id);
        match row.token_id {
            Some(id) => w.u64(u64::from(id)),
            None => w.empty(),
        }
        w.end_row()
    }

    fn on_batch(&mut self, row: &BatchMetricsRow, entries: &[BatchEntry]) -> Result<()> {
        self.counts.batch_rows += 1;
        self.batches.write(row)?;
        let w = &mut self.batch_requests;
        for e in entries {
            self.counts.batch_request_rows += 1;
            w.u64(row.batch_id);
            w.u64(e.request_id);
            w.u64(u64::from(e.num_tokens));
            w.u64(u64::from(e.num_context_tokens));
            w.bool(e.is_prefill);
            w.end_row()?;
        }
        Ok(())
    }
}

/// `request_metrics.csv` through csv's serializer (quoting free-text error messages).
struct RequestRowWriter {
    writer: csv::Writer<AtomicFile>,
    path: PathBuf,
}

impl RequestRowWriter {
    fn create(dir: &Path) -> Result<Self> {
        let path = dir.join(REQUEST_METRICS.file_name);
        let mut writer = csv::WriterBuilder::new()
            .has_headers(false)
            .buffer_capacity(1 << 16)
            .from_writer(AtomicFile::create(&path)?);
        writer
            .write_record(REQUEST_METRICS.column_names())
            .map_err(|e| csv_error(&path, e))?;
        Ok(RequestRowWriter { writer, path })
    }

    fn write(&mut self, row: &RequestMetricsRow) -> Result<()> {
        self.writer
            .serialize(row)
            .map_err(|e| csv_error(&self.path, e))
    }

    fn finish(self) -> Result<()> {
        let path = self.path;
        self.writer
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?
            .commit()
    }
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    Error::SchemaMismatch {
        path: path.to_path_buf(),
        msg: format!("cannot write row: {e}"),
    }
}

/// Bytes buffered before a write to the file.
const FLUSH_BYTES: usize = 1 << 16;

/// A CSV writer for schemas of integer and boolean columns: formats fields straight into a
/// byte buffer (no quoting can be needed). Every row must have the schema's column count,
/// which is checked per row.
struct IntCsvWriter {
    file: AtomicFile,
    path: PathBuf,
    buf: Vec<u8>,
    num_columns: usize,
    fields_in_row: usize,
    itoa: itoa::Buffer,
}

impl IntCsvWriter {
    fn create(dir: &Path, schema: &'static CsvSchema) -> Result<Self> {
        let path = dir.join(schema.file_name);
        let mut w = IntCsvWriter {
            file: AtomicFile::create(&path)?,
            path,
            buf: Vec::with_capacity(FLUSH_BYTES + 256),
            num_columns: schema.columns.len(),
            fields_in_row: 0,
            itoa: itoa::Buffer::new(),
        };
        let header: Vec<&str> = schema.column_names().collect();
        w.buf.extend_from_slice(header.join(",").as_bytes());
        w.buf.push(b'\n');
        Ok(w)
    }

    fn separator(&mut self) {
        if self.fields_in_row > 0 {
            self.buf.push(b',');
        }
        self.fields_in_row += 1;
    }

    fn u64(&mut self, v: u64) {
        self.separator();
        let text = self.itoa.format(v);
        self.buf.extend_from_slice(text.as_bytes());
    }

    fn bool(&mut self, v: bool) {
        self.separator();
        self.buf
            .extend_from_slice(if v { b"true" as &[u8] } else { b"false" });
    }

    fn empty(&mut self) {
        self.separator();
    }

    fn end_row(&mut self) -> Result<()> {
        if self.fields_in_row != self.num_columns {
            return Err(Error::SchemaMismatch {
                path: self.path.clone(),
                msg: format!(
                    "a row has {} fields but the schema has {} columns",
                    self.fields_in_row, self.num_columns
                ),
            });
        }
        self.fields_in_row = 0;
        self.buf.push(b'\n');
        if self.buf.len() >= FLUSH_BYTES {
            self.file.write_all(&self.buf).with_path(&self.path)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.file.write_all(&self.buf).with_path(&self.path)?;
        self.file.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::read_csv;

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("simreal-sink-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn fast_rows_read_back_through_the_validating_reader() {
        let dir = tempdir("roundtrip");
        let mut sink = CsvSink::create(&dir).unwrap();
        let tokens: Vec<TokenMetricsRow> = (0..3)
            .map(|i| TokenMetricsRow {
                request_id: 42,
                token_index: i,
                token_time_ns: 1_000 + u64::from(i) * (u64::MAX / 8),
                token_latency_ns: if i == 0 { 0 } else { u64::MAX / 8 },
                batch_id: u64::from(i),
                token_id: (i == 1).then_some(7),
            })
            .collect();
        for t in &tokens {
            sink.on_token(t).unwrap();
        }
        let batch = BatchMetricsRow {
            batch_id: 9,
            num_requests: 2,
            ..Default::default()
        };
        let entries = [
            BatchEntry {
                request_id: 1,
                num_tokens: 512,
                num_context_tokens: 1024,
                is_prefill: true,
                emits_token: false,
            },
            BatchEntry {
                request_id: 2,
                num_tokens: 1,
                num_context_tokens: 77,
                is_prefill: false,
                emits_token: true,
            },
        ];
        sink.on_batch(&batch, &entries).unwrap();
        let times = crate::io::records::RequestTimes {
            arrival_time_ns: 5,
            scheduled_time_ns: Some(6),
            token_times_ns: vec![10, 20],
        };
        let requests = [
            RequestMetricsRow::from_times(0, &times, 3, 2, 1, 0, "vidur_sim", None),
            RequestMetricsRow::from_times(
                1,
                &crate::io::records::RequestTimes::default(),
                9000,
                4,
                0,
                0,
                "vidur_sim",
                Some(("context_overflow", "prompt 9000, \"output\" 4")),
            ),
        ];
        for r in &requests {
            sink.on_request(r.clone()).unwrap();
        }
        let counts = sink.finish().unwrap();
        assert_eq!(
            counts,
            CsvSinkCounts {
                request_rows: 2,
                token_rows: 3,
                batch_rows: 1,
                batch_request_rows: 2
            }
        );
        let back: Vec<RequestMetricsRow> =
            read_csv(dir.join(REQUEST_METRICS.file_name), &REQUEST_METRICS).unwrap();
        assert_eq!(back, requests);
        let back: Vec<TokenMetricsRow> =
            read_csv(dir.join(TOKEN_METRICS.file_name), &TOKEN_METRICS).unwrap();
        assert_eq!(back, tokens);
        let back: Vec<BatchRequestRow> =
            read_csv(dir.join(BATCH_REQUESTS.file_name), &BATCH_REQUESTS).unwrap();
        let expected: Vec<BatchRequestRow> =
            entries.iter().map(|e| batch_request_row(9, e)).collect();
        assert_eq!(back, expected);
        let text = std::fs::read_to_string(dir.join(BATCH_REQUESTS.file_name)).unwrap();
        assert_eq!(
            text,
            "batch_id,request_id,num_tokens,num_context_tokens,is_prefill\n\
             9,1,512,1024,true\n9,2,1,77,false\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_short_row_is_a_schema_error_and_nothing_is_left_behind() {
        let dir = tempdir("short");
        let mut w = IntCsvWriter::create(&dir, &BATCH_REQUESTS).unwrap();
        w.u64(1);
        w.u64(2);
        assert!(matches!(w.end_row(), Err(Error::SchemaMismatch { .. })));
        drop(w);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
