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
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use crate::error::IoContext;
use crate::io::records::{BatchMetricsRow, BatchRequestRow, RequestMetricsRow, TokenMetricsRow};
use crate::io::schema::{CsvSchema, BATCH_METRICS, BATCH_REQUESTS, REQUEST_METRICS, TOKEN_METRICS};
use crate::io::AtomicFile;
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

/// Which of the optional run CSVs a [`CsvSink`] writes (`request_metrics.csv` and
/// `batch_metrics.csv` always are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvOutputs {
    /// `token_metrics.csv`: one row per output token.
    pub token_metrics: bool,
    /// `batch_requests.csv`: one row per request per batch.
    pub batch_requests: bool,
}

impl CsvOutputs {
    /// All four files.
    pub const ALL: CsvOutputs = CsvOutputs {
        token_metrics: true,
        batch_requests: true,
    };
}

/// Streams the run CSVs (`request_metrics`, `batch_metrics`, and as asked `token_metrics`,
/// `batch_requests`) into a directory; each file appears atomically on [`CsvSink::finish`].
///
/// Rows are formatted and written on a thread of their own, handed over in chunks, so that
/// the simulation does not wait for its output: with every row on, formatting the ~8 M token
/// and batch-request rows of a long trace costs more than simulating it. One thread writes
/// every file in the order rows arrive, so the bytes do not depend on timing. The files
/// appear only on `finish`; a sink dropped without it (a failed run) leaves none behind.
///
/// Batch, token and batch-request rows — integers and booleans only, so a row that
/// type-checks cannot break its schema — go through a dedicated formatter several times
/// faster than serde's (a batch row has 40 columns). Request rows are serialized by csv
/// directly: `CsvWriter` re-parses every row of a schema with text columns (28 µs a row here,
/// half the time of a million-request run), and [`RequestMetricsRow`] cannot break its
/// schema either (no floats; its only required text column, `status`, is an enum).
pub struct CsvSink {
    outputs: CsvOutputs,
    counts: CsvSinkCounts,
    pending: Chunk,
    sender: Option<SyncSender<Message>>,
    writer: Option<JoinHandle<Result<()>>>,
}

/// Rows per hand-over to the writer thread.
const CHUNK_ROWS: usize = 4096;
/// Chunks in flight before the simulation waits for the writer.
const CHUNKS_IN_FLIGHT: usize = 16;

/// Rows on their way to the writer thread.
#[derive(Default)]
struct Chunk {
    requests: Vec<RequestMetricsRow>,
    tokens: Vec<TokenMetricsRow>,
    batches: Vec<BatchMetricsRow>,
    batch_requests: Vec<BatchRequestRow>,
}

impl Chunk {
    fn is_full(&self) -> bool {
        [
            self.requests.len(),
            self.tokens.len(),
            self.batches.len(),
            self.batch_requests.len(),
        ]
        .into_iter()
        .any(|n| n >= CHUNK_ROWS)
    }
}

enum Message {
    Rows(Chunk),
    /// Every row was sent: commit the files.
    Finish,
}

/// The open files, owned by the writer thread.
struct Files {
    requests: RequestRowWriter,
    batches: IntCsvWriter,
    tokens: Option<IntCsvWriter>,
    batch_requests: Option<IntCsvWriter>,
}

impl Files {
    fn write(&mut self, chunk: &Chunk) -> Result<()> {
        for row in &chunk.requests {
            self.requests.write(row)?;
        }
        if let Some(w) = &mut self.tokens {
            for row in &chunk.tokens {
                w.u64(row.request_id);
                w.u64(u64::from(row.token_index));
                w.u64(row.token_time_ns);
                w.u64(row.token_latency_ns);
                w.u64(row.batch_id);
                w.opt_u64(row.token_id.map(u64::from));
                w.end_row()?;
            }
        }
        for row in &chunk.batches {
            write_batch_row(&mut self.batches, row)?;
        }
        if let Some(w) = &mut self.batch_requests {
            for row in &chunk.batch_requests {
                w.u64(row.batch_id);
                w.u64(row.request_id);
                w.u64(u64::from(row.num_tokens));
                w.u64(u64::from(row.num_context_tokens));
                w.bool(row.is_prefill);
                w.end_row()?;
            }
        }
        Ok(())
    }

    fn commit(self) -> Result<()> {
        self.requests.finish()?;
        self.batches.finish()?;
        for w in [self.tokens, self.batch_requests].into_iter().flatten() {
            w.finish()?;
        }
        Ok(())
    }

    /// Writes what arrives until `Finish`; a closed channel without it abandons the files.
    fn serve(mut self, rx: Receiver<Message>) -> Result<()> {
        for message in rx {
            match message {
                Message::Rows(chunk) => self.write(&chunk)?,
                Message::Finish => return self.commit(),
            }
        }
        Ok(())
    }
}

impl CsvSink {
    /// Creates the files `outputs` asks for in `dir` (as temp files until `finish`) and the
    /// thread that writes them.
    pub fn create(dir: &Path, outputs: CsvOutputs) -> Result<CsvSink> {
        let optional = |on: bool, schema| on.then(|| IntCsvWriter::create(dir, schema)).transpose();
        let files = Files {
            requests: RequestRowWriter::create(dir)?,
            batches: IntCsvWriter::create(dir, &BATCH_METRICS)?,
            tokens: optional(outputs.token_metrics, &TOKEN_METRICS)?,
            batch_requests: optional(outputs.batch_requests, &BATCH_REQUESTS)?,
        };
        let (sender, rx) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
        let writer = std::thread::Builder::new()
            .name("csv-sink".into())
            .spawn(move || files.serve(rx))
            .map_err(|e| Error::io(dir, e))?;
        Ok(CsvSink {
            outputs,
            counts: CsvSinkCounts::default(),
            pending: Chunk::default(),
            sender: Some(sender),
            writer: Some(writer),
        })
    }

    /// Writes the remaining rows and moves every file into place.
    pub fn finish(mut self) -> Result<CsvSinkCounts> {
        let rows = std::mem::take(&mut self.pending);
        self.send(Message::Rows(rows))?;
        self.send(Message::Finish)?;
        self.sender = None;
        self.join()?;
        Ok(self.counts)
    }

    fn flush_if_full(&mut self) -> Result<()> {
        if self.pending.is_full() {
            let rows = std::mem::take(&mut self.pending);
            self.send(Message::Rows(rows))?;
        }
        Ok(())
    }

    fn send(&mut self, message: Message) -> Result<()> {
        let sent = match &self.sender {
            Some(sender) => sender.send(message).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writer stopped early: its error says why.
        self.sender = None;
        self.join()?;
        Err(Error::Msg("the CSV writer thread stopped early".into()))
    }

    fn join(&mut self) -> Result<()> {
        match self.writer.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(Error::Msg("the CSV writer thread panicked".into())),
        }
    }
}

impl Drop for CsvSink {
    fn drop(&mut self) {
        // Without `Finish` the writer drops its temp files; wait for it so they are gone.
        self.sender = None;
        let _ = self.join();
    }
}

impl SimSink for CsvSink {
    fn on_request(&mut self, row: RequestMetricsRow) -> Result<()> {
        self.counts.request_rows += 1;
        self.pending.requests.push(row);
        self.flush_if_full()
    }

    fn on_token(&mut self, row: &TokenMetricsRow) -> Result<()> {
        if !self.outputs.token_metrics {
            return Ok(());
        }
        self.counts.token_rows += 1;
        self.pending.tokens.push(row.clone());
        self.flush_if_full()
    }

    fn on_batch(&mut self, row: &BatchMetricsRow, entries: &[BatchEntry]) -> Result<()> {
        self.counts.batch_rows += 1;
        self.pending.batches.push(row.clone());
        if self.outputs.batch_requests {
            self.counts.batch_request_rows += entries.len() as u64;
            self.pending
                .batch_requests
                .extend(entries.iter().map(|e| batch_request_row(row.batch_id, e)));
        }
        self.flush_if_full()
    }
}

/// One `batch_metrics.csv` row, in the schema's column order (checked by a test against
/// serde's serialization of the same row).
fn write_batch_row(w: &mut IntCsvWriter, r: &BatchMetricsRow) -> Result<()> {
    for v in [
        r.batch_id,
        u64::from(r.replica_id),
        r.start_time_ns,
        r.end_time_ns,
        r.duration_ns,
        u64::from(r.num_requests),
        u64::from(r.num_prefill_requests),
        u64::from(r.num_decode_requests),
        u64::from(r.num_prefill_tokens),
        u64::from(r.num_decode_tokens),
        r.kv_context_tokens,
        u64::from(r.num_kv_blocks_used),
        u64::from(r.num_preempted),
    ] {
        w.u64(v);
    }
    for v in [
        r.num_waiting_requests.map(u64::from),
        r.model_forward_ns,
        r.cpu_schedule_ns,
        r.cpu_prepare_inputs_ns,
        r.cpu_sampler_ns,
        r.cpu_process_outputs_ns,
    ]
    .into_iter()
    .chain(r.ops())
    {
        w.opt_u64(v);
    }
    match r.extrapolated {
        Some(b) => w.bool(b),
        None => w.empty(),
    }
    w.opt_u64(r.cpu_time_ns);
    w.end_row()
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

/// Bytes buffered before a write to the file: the size of [`AtomicFile`]'s own buffer, which
/// a write that large bypasses (one copy of every byte instead of two).
const FLUSH_BYTES: usize = 1 << 20;

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

    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => self.u64(v),
            None => self.empty(),
        }
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
        let mut sink = CsvSink::create(&dir, CsvOutputs::ALL).unwrap();
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
    fn batch_rows_are_what_serde_writes() {
        let dir = tempdir("batch-rows");
        let mut full = BatchMetricsRow {
            batch_id: 3,
            replica_id: 1,
            start_time_ns: 10,
            end_time_ns: 25,
            duration_ns: 15,
            num_requests: 2,
            num_prefill_requests: 1,
            num_decode_requests: 1,
            num_prefill_tokens: 7,
            num_decode_tokens: 1,
            kv_context_tokens: 99,
            num_kv_blocks_used: 4,
            num_preempted: 1,
            num_waiting_requests: Some(5),
            model_forward_ns: Some(11),
            cpu_schedule_ns: Some(1),
            cpu_prepare_inputs_ns: Some(2),
            cpu_sampler_ns: None,
            cpu_process_outputs_ns: Some(0),
            extrapolated: Some(true),
            ..Default::default()
        };
        full.set_ops(std::array::from_fn(|i| {
            (i % 3 != 0).then_some(i as u64 * 1000)
        }));
        let rows = [full, BatchMetricsRow::default()];
        let mut sink = CsvSink::create(&dir, CsvOutputs::ALL).unwrap();
        for r in &rows {
            sink.on_batch(r, &[]).unwrap();
        }
        sink.finish().unwrap();
        let path = dir.join(BATCH_METRICS.file_name);
        let ours = std::fs::read_to_string(&path).unwrap();
        let mut serde = crate::io::CsvWriter::create(&path, &BATCH_METRICS).unwrap();
        for r in &rows {
            serde.write(r).unwrap();
        }
        serde.finish().unwrap();
        assert_eq!(ours, std::fs::read_to_string(&path).unwrap());
        let back: Vec<BatchMetricsRow> = read_csv(&path, &BATCH_METRICS).unwrap();
        assert_eq!(back, rows);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn optional_files_are_left_out_when_not_asked_for() {
        let dir = tempdir("optional");
        let mut sink = CsvSink::create(
            &dir,
            CsvOutputs {
                token_metrics: false,
                batch_requests: false,
            },
        )
        .unwrap();
        let token = TokenMetricsRow {
            request_id: 0,
            token_index: 0,
            token_time_ns: 1,
            token_latency_ns: 0,
            batch_id: 0,
            token_id: None,
        };
        sink.on_token(&token).unwrap();
        sink.on_batch(&BatchMetricsRow::default(), &[]).unwrap();
        let counts = sink.finish().unwrap();
        assert_eq!((counts.token_rows, counts.batch_rows), (0, 1));
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["batch_metrics.csv", "request_metrics.csv"]);
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
