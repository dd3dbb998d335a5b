//! Trace CSV readers and Vidur's `trace_replay` request generator.
//!
//! Readers validate everything they return and name the file, the 1-based data row and the
//! column in every error, so a bad trace is fixed from the message alone. Values are kept
//! as read (floats, trace time origin); scaling, clipping and re-basing are the generators'
//! business.
//!
//! Arrival times come from `arrival_time_ns` (integer nanoseconds, as in our own
//! `trace_intervals.csv`) when the file has that column, otherwise from `arrived_at`
//! (seconds, as in Vidur's processed traces).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ensure_positive_finite, RequestLengths, Workload};
use crate::{Error, Result};

/// Column of Vidur's processed traces: arrival time in seconds from the trace start.
pub const ARRIVED_AT_COLUMN: &str = "arrived_at";
/// Column of our own interval files: arrival time in integer nanoseconds.
pub const ARRIVAL_TIME_NS_COLUMN: &str = "arrival_time_ns";
/// Prompt length column.
pub const PREFILL_COLUMN: &str = "num_prefill_tokens";
/// Output length column.
pub const DECODE_COLUMN: &str = "num_decode_tokens";

/// Key path under which the workload config embeds a [`TraceReplayConfig`].
pub const TRACE_REPLAY_KEY: &str = "workload.trace_replay";

/// One row of a length trace, as read (before scaling and clipping).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LengthTraceRow {
    /// 1-based data row in the file, for error messages after shuffling.
    pub row: usize,
    /// Prompt tokens as read (finite, >= 0; may be fractional).
    pub num_prefill_tokens: f64,
    /// Output tokens as read (finite, >= 0; may be fractional).
    pub num_decode_tokens: f64,
}

/// One row of a request trace: arrival plus lengths, as read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayTraceRow {
    /// 1-based data row in the file.
    pub row: usize,
    /// Arrival in nanoseconds on the trace's own clock (not re-based).
    pub arrival_ns: f64,
    /// Prompt tokens as read (finite, >= 0; may be fractional).
    pub num_prefill_tokens: f64,
    /// Output tokens as read (finite, >= 0; may be fractional).
    pub num_decode_tokens: f64,
}

/// Reads every row of a trace with `num_prefill_tokens` and `num_decode_tokens` columns
/// (other columns are ignored). Counts must be finite and non-negative; an empty trace is
/// an error.
pub fn read_length_trace(path: &Path) -> Result<Vec<LengthTraceRow>> {
    let mut csv = TraceCsv::open(path)?;
    let prefill = csv.require(PREFILL_COLUMN)?;
    let decode = csv.require(DECODE_COLUMN)?;
    let mut rows = Vec::new();
    csv.for_each_row(None, |csv, row, record| {
        rows.push(LengthTraceRow {
            row,
            num_prefill_tokens: csv.number(record, row, prefill, PREFILL_COLUMN)?,
            num_decode_tokens: csv.number(record, row, decode, DECODE_COLUMN)?,
        });
        Ok(())
    })?;
    Ok(rows)
}

/// Reads the first `limit` arrival times (all if `None`) in nanoseconds on the trace's own
/// clock. Arrivals must be finite, non-negative and non-decreasing; an empty trace is an
/// error. May return fewer than `limit` rows.
pub fn read_arrival_trace(path: &Path, limit: Option<usize>) -> Result<Vec<f64>> {
    let mut csv = TraceCsv::open(path)?;
    let arrival = csv.arrival_column()?;
    let mut arrivals: Vec<f64> = Vec::new();
    csv.for_each_row(limit, |csv, row, record| {
        let arrival_ns = csv.arrival_ns(record, row, arrival, arrivals.last().copied())?;
        arrivals.push(arrival_ns);
        Ok(())
    })?;
    Ok(arrivals)
}

/// Reads the first `limit` rows (all if `None`) of a request trace with an arrival column
/// and both length columns, with the checks of [`read_arrival_trace`] and
/// [`read_length_trace`]. May return fewer than `limit` rows.
pub fn read_replay_trace(path: &Path, limit: Option<usize>) -> Result<Vec<ReplayTraceRow>> {
    let mut csv = TraceCsv::open(path)?;
    let arrival = csv.arrival_column()?;
    let prefill = csv.require(PREFILL_COLUMN)?;
    let decode = csv.require(DECODE_COLUMN)?;
    let mut rows: Vec<ReplayTraceRow> = Vec::new();
    csv.for_each_row(limit, |csv, row, record| {
        let previous = rows.last().map(|r| r.arrival_ns);
        rows.push(ReplayTraceRow {
            row,
            arrival_ns: csv.arrival_ns(record, row, arrival, previous)?,
            num_prefill_tokens: csv.number(record, row, prefill, PREFILL_COLUMN)?,
            num_decode_tokens: csv.number(record, row, decode, DECODE_COLUMN)?,
        });
        Ok(())
    })?;
    Ok(rows)
}

/// Which arrival column a trace has.
#[derive(Debug, Clone, Copy)]
enum ArrivalColumn {
    Nanoseconds(usize),
    Seconds(usize),
}

impl ArrivalColumn {
    fn name(self) -> &'static str {
        match self {
            ArrivalColumn::Nanoseconds(_) => ARRIVAL_TIME_NS_COLUMN,
            ArrivalColumn::Seconds(_) => ARRIVED_AT_COLUMN,
        }
    }
}

/// A trace CSV opened with its header read.
struct TraceCsv {
    path: PathBuf,
    reader: csv::Reader<BufReader<File>>,
    headers: csv::StringRecord,
}

impl TraceCsv {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingInput {
                path: path.to_path_buf(),
                msg: "trace file not found".to_string(),
                hint: Some("paths are relative to the working directory".to_string()),
            },
            _ => Error::io(path, e),
        })?;
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(BufReader::new(file));
        let headers = reader
            .headers()
            .map_err(|e| Error::parse(path, format!("cannot read the CSV header: {e}")))?
            .clone();
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            headers,
        })
    }

    fn find(&self, column: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == column)
    }

    fn column_list(&self) -> String {
        let names: Vec<&str> = self.headers.iter().collect();
        format!("the header has [{}]", names.join(", "))
    }

    fn require(&self, column: &str) -> Result<usize> {
        self.find(column).ok_or_else(|| Error::ColumnNotFound {
            path: self.path.clone(),
            column: column.to_string(),
            hint: Some(self.column_list()),
        })
    }

    fn arrival_column(&self) -> Result<ArrivalColumn> {
        if let Some(index) = self.find(ARRIVAL_TIME_NS_COLUMN) {
            return Ok(ArrivalColumn::Nanoseconds(index));
        }
        if let Some(index) = self.find(ARRIVED_AT_COLUMN) {
            return Ok(ArrivalColumn::Seconds(index));
        }
        Err(Error::ColumnNotFound {
            path: self.path.clone(),
            column: ARRIVED_AT_COLUMN.to_string(),
            hint: Some(format!(
                "an arrival trace needs `{ARRIVED_AT_COLUMN}` (seconds) or \
                 `{ARRIVAL_TIME_NS_COLUMN}`; {}",
                self.column_list()
            )),
        })
    }

    /// Calls `f(self, row, record)` for the first `limit` data rows (1-based `row`); errors
    /// if the file has no data rows at all.
    fn for_each_row(
        &mut self,
        limit: Option<usize>,
        mut f: impl FnMut(&Self, usize, &csv::StringRecord) -> Result<()>,
    ) -> Result<()> {
        let limit = limit.unwrap_or(usize::MAX);
        let mut record = csv::StringRecord::new();
        let mut row = 0;
        while row < limit {
            let more = self.reader.read_record(&mut record).map_err(|e| {
                Error::parse(
                    &self.path,
                    format!("malformed CSV after data row {row}: {e}"),
                )
            })?;
            if !more {
                break;
            }
            row += 1;
            f(self, row, &record)?;
        }
        if row == 0 && limit > 0 {
            return Err(Error::MissingInput {
                path: self.path.clone(),
                msg: "the trace has a header but no data rows".to_string(),
                hint: None,
            });
        }
        Ok(())
    }

    fn invalid(&self, row: usize, column: &str, msg: String) -> Error {
        Error::InvalidValue {
            path: self.path.clone(),
            row,
            column: column.to_string(),
            msg,
        }
    }

    /// A finite, non-negative number.
    fn number(
        &self,
        record: &csv::StringRecord,
        row: usize,
        index: usize,
        column: &str,
    ) -> Result<f64> {
        let raw = record.get(index).unwrap_or("");
        let value: f64 = raw
            .parse()
            .map_err(|_| self.invalid(row, column, format!("`{raw}` is not a number")))?;
        if !value.is_finite() {
            return Err(self.invalid(row, column, format!("`{raw}` is not finite")));
        }
        if value < 0.0 {
            return Err(self.invalid(row, column, format!("{value} is negative")));
        }
        Ok(value)
    }

    /// The arrival of this row in nanoseconds, checked against the previous row's.
    fn arrival_ns(
        &self,
        record: &csv::StringRecord,
        row: usize,
        column: ArrivalColumn,
        previous_ns: Option<f64>,
    ) -> Result<f64> {
        let name = column.name();
        let arrival_ns = match column {
            ArrivalColumn::Nanoseconds(index) => {
                let raw = record.get(index).unwrap_or("");
                let ns: u64 = raw.parse().map_err(|_| {
                    self.invalid(
                        row,
                        name,
                        format!("`{raw}` is not a non-negative integer number of nanoseconds"),
                    )
                })?;
                ns as f64
            }
            ArrivalColumn::Seconds(index) => self.number(record, row, index, name)? * 1e9,
        };
        if let Some(previous_ns) = previous_ns {
            if arrival_ns < previous_ns {
                return Err(self.invalid(
                    row,
                    name,
                    format!(
                        "arrival at {:.9} s is before the previous row's {:.9} s; arrivals \
                         must be non-decreasing",
                        arrival_ns / 1e9,
                        previous_ns / 1e9
                    ),
                ));
            }
        }
        Ok(arrival_ns)
    }
}

/// Converts raw arrivals (ns, trace clock, non-decreasing) into integer nanoseconds with
/// the first arrival at 0, stretched by `time_scale_factor` (> 1 slows arrivals down).
///
/// Re-basing keeps DESIGN.md's contract (`inter_arrival_ns` is 0 for request 0 and
/// `arrival_time_ns` is the running sum) for traces cut from the middle; Vidur's processed
/// traces already start at 0, so for them this changes nothing.
pub(crate) fn rebase_arrivals_ns(raw_ns: &[f64], time_scale_factor: f64) -> Vec<u64> {
    let origin = raw_ns.first().copied().unwrap_or(0.0);
    raw_ns
        .iter()
        // Non-negative and finite by construction; rounding is monotone, so the order holds.
        .map(|&t| ((t - origin) * time_scale_factor).round() as u64)
        .collect()
}

/// Vidur's `trace_replay` generator: requests with the arrival times and lengths of a
/// processed trace (`arrived_at` s or `arrival_time_ns`, `num_prefill_tokens`,
/// `num_decode_tokens`).
///
/// Per row, as Vidur: counts × scale factors, truncated to integers, clipped to >= 1; if
/// prefill + decode exceeds the model context, the excess is subtracted from the prompt
/// only. Arrivals × `time_scale_factor`, re-based so that the first request arrives at 0.
/// Unlike Vidur, which replays every row, the caller may replay only the first rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceReplayConfig {
    /// Processed trace CSV (Vidur's format).
    pub trace_file: PathBuf,
    /// Multiplies arrival times: 2.0 halves the request rate.
    #[serde(default = "one")]
    pub time_scale_factor: f64,
    /// Multiplies prompt lengths before truncation; default 1.
    #[serde(default = "one")]
    pub prefill_scale_factor: f64,
    /// Multiplies output lengths before truncation; default 1.
    #[serde(default = "one")]
    pub decode_scale_factor: f64,
}

fn one() -> f64 {
    1.0
}

impl TraceReplayConfig {
    /// Checks the parameters, reporting key paths under [`TRACE_REPLAY_KEY`].
    pub fn validate(&self) -> Result<()> {
        self.validate_at(TRACE_REPLAY_KEY)
    }

    /// As [`validate`](Self::validate), with key paths under `prefix`.
    pub fn validate_at(&self, prefix: &str) -> Result<()> {
        if self.trace_file.as_os_str().is_empty() {
            return Err(Error::config(
                format!("{prefix}.trace_file"),
                "must not be empty",
            ));
        }
        ensure_positive_finite(
            &format!("{prefix}.time_scale_factor"),
            self.time_scale_factor,
        )?;
        ensure_positive_finite(
            &format!("{prefix}.prefill_scale_factor"),
            self.prefill_scale_factor,
        )?;
        ensure_positive_finite(
            &format!("{prefix}.decode_scale_factor"),
            self.decode_scale_factor,
        )
    }
}

/// Replays the first `num_requests` rows of the trace (every row if `None`).
///
/// Fails if the trace has fewer rows than asked for, or if a row's decode tokens alone
/// leave no room for a prompt in the context (Vidur would emit a non-positive prompt).
pub fn replay_trace(
    config: &TraceReplayConfig,
    num_requests: Option<usize>,
    max_context_tokens: u32,
) -> Result<Workload> {
    config.validate()?;
    if max_context_tokens < 2 {
        return Err(Error::InvalidInput(format!(
            "max_context_tokens must be >= 2 to hold a prompt and an output token, got \
             {max_context_tokens}"
        )));
    }
    if num_requests == Some(0) {
        return Ok(Workload::default());
    }
    let path = &config.trace_file;
    let rows = read_replay_trace(path, num_requests)?;
    if let Some(n) = num_requests {
        if rows.len() < n {
            return Err(Error::OutOfRange(format!(
                "{}: the trace has {} rows but {n} requests were asked for",
                path.display(),
                rows.len()
            )));
        }
    }
    let raw_arrivals: Vec<f64> = rows.iter().map(|r| r.arrival_ns).collect();
    let lengths = rows
        .iter()
        .map(|r| {
            clip_prompt_to_context(
                r.num_prefill_tokens * config.prefill_scale_factor,
                r.num_decode_tokens * config.decode_scale_factor,
                max_context_tokens,
            )
            .ok_or_else(|| Error::InvalidValue {
                path: path.clone(),
                row: r.row,
                column: DECODE_COLUMN.to_string(),
                msg: format!(
                    "{} decode tokens (after scaling by {}) leave no room for a prompt in the \
                     {max_context_tokens}-token context",
                    (r.num_decode_tokens * config.decode_scale_factor) as i64,
                    config.decode_scale_factor
                ),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Workload::new(
        rebase_arrivals_ns(&raw_arrivals, config.time_scale_factor),
        lengths,
    )
}

/// Vidur's trace-replay clipping for already-scaled counts: truncate, clip each to >= 1,
/// then remove any excess over the context from the prompt. `None` when the prompt would
/// drop below one token.
fn clip_prompt_to_context(
    prefill: f64,
    decode: f64,
    max_context_tokens: u32,
) -> Option<RequestLengths> {
    // Finite and non-negative (checked by the reader); `as` saturates absurd values.
    let prefill = (prefill as i64).max(1);
    let decode = (decode as i64).max(1);
    let excess = (prefill + decode - i64::from(max_context_tokens)).max(0);
    let prefill = prefill - excess;
    if prefill < 1 {
        return None;
    }
    Some(RequestLengths {
        num_prefill_tokens: u32::try_from(prefill).ok()?,
        num_decode_tokens: u32::try_from(decode).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CSV file in a fresh temporary directory, removed on drop.
    struct TempCsv {
        dir: PathBuf,
        path: PathBuf,
    }

    impl TempCsv {
        fn new(name: &str, content: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("simreal-trace-test-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{name}.csv"));
            std::fs::write(&path, content).unwrap();
            Self { dir, path }
        }
    }

    impl Drop for TempCsv {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn replay(
        name: &str,
        content: &str,
        config: impl Fn(PathBuf) -> TraceReplayConfig,
    ) -> Result<Workload> {
        let file = TempCsv::new(name, content);
        replay_trace(&config(file.path.clone()), None, 4096)
    }

    fn plain(trace_file: PathBuf) -> TraceReplayConfig {
        TraceReplayConfig {
            trace_file,
            time_scale_factor: 1.0,
            prefill_scale_factor: 1.0,
            decode_scale_factor: 1.0,
        }
    }

    fn lengths(pairs: &[(u32, u32)]) -> Vec<RequestLengths> {
        pairs
            .iter()
            .map(|&(p, d)| RequestLengths {
                num_prefill_tokens: p,
                num_decode_tokens: d,
            })
            .collect()
    }

    #[test]
    fn replay_clips_and_scales_exactly_as_vidur() {
        let csv = "arrived_at,num_prefill_tokens,num_decode_tokens\n\
                   0.0,374,44\n\
                   1.5,4000,200\n\
                   2.25,0,0\n\
                   3.0,5000.9,96.5\n";
        let workload = replay("replay_plain", csv, plain).unwrap();
        // Row 2: 4200 > 4096, excess 104 comes off the prompt. Row 3: both clipped to 1.
        // Row 4: truncated to 5000 + 96, excess 1000 -> 4000 + 96.
        assert_eq!(
            workload.lengths,
            lengths(&[(374, 44), (3896, 200), (1, 1), (4000, 96)])
        );
        assert_eq!(
            workload.arrivals_ns,
            vec![0, 1_500_000_000, 2_250_000_000, 3_000_000_000]
        );

        let scaled = replay("replay_scaled", csv, |trace_file| TraceReplayConfig {
            trace_file,
            time_scale_factor: 2.0,
            prefill_scale_factor: 0.5,
            decode_scale_factor: 1.5,
        })
        .unwrap();
        // 374*0.5 = 187, 44*1.5 = 66; 2000 + 300; 0 -> 1, 0 -> 1; 2500.45 -> 2500, 144.75 -> 144.
        assert_eq!(
            scaled.lengths,
            lengths(&[(187, 66), (2000, 300), (1, 1), (2500, 144)])
        );
        assert_eq!(
            scaled.arrivals_ns,
            vec![0, 3_000_000_000, 4_500_000_000, 6_000_000_000]
        );
    }

    #[test]
    fn replay_rebases_takes_the_first_rows_and_reads_ns_columns() {
        let csv = "arrival_time_ns,num_prefill_tokens,num_decode_tokens,arrived_at\n\
                   1000000007,10,5,99\n\
                   1000000010,20,6,0\n\
                   3000000000,30,7,0\n";
        let file = TempCsv::new("replay_ns", csv);
        let workload = replay_trace(&plain(file.path.clone()), Some(2), 4096).unwrap();
        // arrival_time_ns wins over arrived_at; the first arrival becomes 0.
        assert_eq!(workload.arrivals_ns, vec![0, 3]);
        assert_eq!(workload.lengths, lengths(&[(10, 5), (20, 6)]));
        let err = replay_trace(&plain(file.path.clone()), Some(4), 4096).unwrap_err();
        assert!(matches!(err, Error::OutOfRange(_)), "{err}");
    }

    #[test]
    fn replay_rejects_output_longer_than_the_context() {
        let csv = "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,10\n1,10,4096\n";
        match replay("replay_long", csv, plain).unwrap_err() {
            Error::InvalidValue { row, column, .. } => {
                assert_eq!((row, column.as_str()), (2, DECODE_COLUMN));
            }
            other => panic!("unexpected {other}"),
        }
        // 4095 decode tokens leave exactly one prompt token.
        let csv = "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,4095\n";
        assert_eq!(
            replay("replay_edge", csv, plain).unwrap().lengths,
            lengths(&[(1, 4095)])
        );
    }

    fn invalid_value(content: &str, name: &str) -> (usize, String, String) {
        let file = TempCsv::new(name, content);
        match read_replay_trace(&file.path, None).unwrap_err() {
            Error::InvalidValue {
                path,
                row,
                column,
                msg,
            } => {
                assert_eq!(path, file.path);
                (row, column, msg)
            }
            other => panic!("expected InvalidValue, got {other}"),
        }
    }

    #[test]
    fn readers_name_file_row_and_column() {
        let header = "arrived_at,num_prefill_tokens,num_decode_tokens\n";
        let (row, column, msg) = invalid_value(&format!("{header}0,1,1\n1,NaN,1\n"), "nan");
        assert_eq!((row, column.as_str()), (2, PREFILL_COLUMN));
        assert!(msg.contains("not finite"), "{msg}");
        let (row, column, _) = invalid_value(&format!("{header}0,1,inf\n"), "inf");
        assert_eq!((row, column.as_str()), (1, DECODE_COLUMN));
        let (row, column, msg) = invalid_value(&format!("{header}0,1,1\n-1,1,1\n"), "neg");
        assert_eq!((row, column.as_str()), (2, ARRIVED_AT_COLUMN));
        assert!(msg.contains("negative"), "{msg}");
        let (row, _, msg) = invalid_value(&format!("{header}0,1,1\n2,1,1\n1.5,1,1\n"), "order");
        assert_eq!(row, 3);
        assert!(msg.contains("non-decreasing"), "{msg}");
        let (row, column, msg) = invalid_value(&format!("{header}0,abc,1\n"), "text");
        assert_eq!((row, column.as_str()), (1, PREFILL_COLUMN));
        assert!(msg.contains("not a number"), "{msg}");
        let (_, column, _) = invalid_value(
            "arrival_time_ns,num_prefill_tokens,num_decode_tokens\n1.5,1,1\n",
            "ns_float",
        );
        assert_eq!(column, ARRIVAL_TIME_NS_COLUMN);
    }

    #[test]
    fn readers_report_missing_columns_and_empty_traces() {
        let file = TempCsv::new("nocol", "arrived_at,num_prefill_tokens\n0,1\n");
        match read_replay_trace(&file.path, None).unwrap_err() {
            Error::ColumnNotFound { path, column, hint } => {
                assert_eq!(path, file.path);
                assert_eq!(column, DECODE_COLUMN);
                assert!(hint.unwrap().contains("arrived_at, num_prefill_tokens"));
            }
            other => panic!("unexpected {other}"),
        }
        let file = TempCsv::new(
            "noarrival",
            "t,num_prefill_tokens,num_decode_tokens\n0,1,1\n",
        );
        match read_arrival_trace(&file.path, None).unwrap_err() {
            Error::ColumnNotFound { column, .. } => assert_eq!(column, ARRIVED_AT_COLUMN),
            other => panic!("unexpected {other}"),
        }
        let file = TempCsv::new("empty", "num_prefill_tokens,num_decode_tokens\n");
        match read_length_trace(&file.path).unwrap_err() {
            Error::MissingInput { path, msg, .. } => {
                assert_eq!(path, file.path);
                assert!(msg.contains("no data rows"));
            }
            other => panic!("unexpected {other}"),
        }
        let missing = Path::new("/nonexistent/simreal/trace.csv");
        assert!(matches!(
            read_length_trace(missing).unwrap_err(),
            Error::MissingInput { .. }
        ));
        let file = TempCsv::new("ragged", "num_prefill_tokens,num_decode_tokens\n1,2\n3\n");
        assert!(matches!(
            read_length_trace(&file.path).unwrap_err(),
            Error::Parse { .. }
        ));
    }

    #[test]
    fn config_validation_names_the_key() {
        let mut config = plain("t.csv".into());
        config.validate().unwrap();
        config.time_scale_factor = f64::NAN;
        match config.validate().unwrap_err() {
            Error::Config { key, .. } => assert_eq!(key, "workload.trace_replay.time_scale_factor"),
            other => panic!("unexpected {other}"),
        }
        let config: TraceReplayConfig =
            serde_saphyr::from_str("trace_file: x.csv\ndecode_scale_factor: 2.0\n").unwrap();
        assert_eq!(config.decode_scale_factor, 2.0);
        assert_eq!(config.time_scale_factor, 1.0);
        assert!(serde_saphyr::from_str::<TraceReplayConfig>("trace_file: x\nqps: 1\n").is_err());
    }

    #[test]
    fn bundled_sample_replays_like_vidur() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/traces/splitwise_conv_sample.csv");
        let workload = replay_trace(&plain(path), Some(3), 4096).unwrap();
        // First rows of splitwise_conv.csv: 0.0,374,44 / 4.314579,396,109 / 4.541877,879,55.
        assert_eq!(workload.arrivals_ns, vec![0, 4_314_579_000, 4_541_877_000]);
        assert_eq!(
            workload.lengths,
            lengths(&[(374, 44), (396, 109), (879, 55)])
        );
    }
}
