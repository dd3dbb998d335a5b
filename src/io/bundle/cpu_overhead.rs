//! `cpu_overheads.csv`: per-iteration CPU costs of the serving engine by batch size, in
//! Vidur's historical layout (`<term>_mean`, `<term>_median` in ms, `model_name`,
//! `batch_size`, `tensor_parallel_degree`, `ray_comm_time_mean`, behind an unnamed index).

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use super::table::{check_duplicates, check_selection, csv_bytes, fmt_f64, write_atomic, CsvTable};
use super::DuplicatePolicy;
use crate::{Error, Result};

/// The CPU-overhead terms Vidur charges per batch (all keyed by batch size). Vidur models the
/// `_median` of the first four and the mean of `ray_comm_time`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CpuOverheadTerm {
    Schedule,
    SamplerE2e,
    PrepareInputsE2e,
    ProcessModelOutputs,
    RayCommTime,
}

impl CpuOverheadTerm {
    /// Number of terms; the length of per-term arrays.
    pub const COUNT: usize = 5;

    /// All terms, in index order.
    pub const ALL: [CpuOverheadTerm; CpuOverheadTerm::COUNT] = [
        CpuOverheadTerm::Schedule,
        CpuOverheadTerm::SamplerE2e,
        CpuOverheadTerm::PrepareInputsE2e,
        CpuOverheadTerm::ProcessModelOutputs,
        CpuOverheadTerm::RayCommTime,
    ];

    /// Position in per-term arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Vidur's name for the term.
    pub const fn name(self) -> &'static str {
        match self {
            CpuOverheadTerm::Schedule => "schedule",
            CpuOverheadTerm::SamplerE2e => "sampler_e2e",
            CpuOverheadTerm::PrepareInputsE2e => "prepare_inputs_e2e",
            CpuOverheadTerm::ProcessModelOutputs => "process_model_outputs",
            CpuOverheadTerm::RayCommTime => "ray_comm_time",
        }
    }

    /// The column Vidur trains on for this term.
    pub fn target_column(self) -> String {
        match self {
            CpuOverheadTerm::RayCommTime => "ray_comm_time_mean".into(),
            t => format!("{}_median", t.name()),
        }
    }
}

impl fmt::Display for CpuOverheadTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Mean and median of one CPU cost, in ms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeanMedianMs {
    pub mean_ms: f64,
    pub median_ms: f64,
}

/// One `cpu_overheads.csv` row: the engine's per-iteration CPU costs at `batch_size`.
/// The `Option` fields are measured by Vidur's GPU engine (asynchronous launches) and may
/// have no counterpart elsewhere; they are written as empty cells when absent.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuOverheadRow {
    pub batch_size: u32,
    pub schedule: MeanMedianMs,
    pub sampler_e2e: MeanMedianMs,
    pub prepare_inputs_e2e: MeanMedianMs,
    pub process_model_outputs: MeanMedianMs,
    /// Ray's inter-process hop; 0 for a single-process engine.
    pub ray_comm_time_mean_ms: f64,
    pub sampler_launch: Option<MeanMedianMs>,
    pub prepare_inputs_launch: Option<MeanMedianMs>,
    pub model_execution_launch: Option<MeanMedianMs>,
    pub model_execution_e2e: Option<MeanMedianMs>,
}

impl CpuOverheadRow {
    /// The value Vidur trains on for `term`, in ms.
    pub fn term_ms(&self, term: CpuOverheadTerm) -> f64 {
        match term {
            CpuOverheadTerm::Schedule => self.schedule.median_ms,
            CpuOverheadTerm::SamplerE2e => self.sampler_e2e.median_ms,
            CpuOverheadTerm::PrepareInputsE2e => self.prepare_inputs_e2e.median_ms,
            CpuOverheadTerm::ProcessModelOutputs => self.process_model_outputs.median_ms,
            CpuOverheadTerm::RayCommTime => self.ray_comm_time_mean_ms,
        }
    }

    /// The eight mean/median measurements in Vidur's column order, `None` where absent.
    fn measurements(&self) -> [Option<MeanMedianMs>; 8] {
        [
            Some(self.schedule),
            self.sampler_launch,
            Some(self.sampler_e2e),
            self.prepare_inputs_launch,
            Some(self.prepare_inputs_e2e),
            self.model_execution_launch,
            self.model_execution_e2e,
            Some(self.process_model_outputs),
        ]
    }
}

/// Names of [`CpuOverheadRow::measurements`], in Vidur's column order.
const MEASUREMENTS: [&str; 8] = [
    "schedule",
    "sampler_launch",
    "sampler_e2e",
    "prepare_inputs_launch",
    "prepare_inputs_e2e",
    "model_execution_launch",
    "model_execution_e2e",
    "process_model_outputs",
];

/// Which of [`MEASUREMENTS`] a file must have.
const REQUIRED: [bool; 8] = [true, false, true, false, true, false, false, true];

/// The `cpu_overheads.csv` rows of one model and TP degree.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuOverheadTable {
    pub model_name: String,
    pub tensor_parallel_degree: u32,
    pub rows: Vec<CpuOverheadRow>,
}

impl CpuOverheadTable {
    /// `(batch_size, ms)` of `term` over all rows (duplicates kept).
    pub fn term_points(&self, term: CpuOverheadTerm) -> Vec<(f64, f64)> {
        self.rows
            .iter()
            .map(|r| (f64::from(r.batch_size), r.term_ms(term)))
            .collect()
    }
}

/// Reads the rows of `model_name` at `tensor_parallel_degree`. CPU costs may be zero (e.g.
/// `ray_comm_time` without Ray) but not negative or NaN.
pub fn read_cpu_overheads_csv(
    path: &Path,
    model_name: &str,
    tensor_parallel_degree: u32,
    duplicates: DuplicatePolicy,
) -> Result<CpuOverheadTable> {
    let t = CsvTable::read(path)?;
    let model = t.column("model_name")?;
    let batch = t.column("batch_size")?;
    let tp = t.column("tensor_parallel_degree")?;
    let ray = t.column("ray_comm_time_mean")?;
    let mut cols = Vec::new();
    for (name, required) in MEASUREMENTS.into_iter().zip(REQUIRED) {
        let mean = format!("{name}_mean");
        let median = format!("{name}_median");
        cols.push(if required {
            Some((t.column(&mean)?, t.column(&median)?))
        } else {
            t.optional_column(&mean).zip(t.optional_column(&median))
        });
    }
    let non_negative = |r: usize, c: usize| -> Result<Option<f64>> {
        match t.opt_f64(r, c)? {
            Some(v) if v < 0.0 => Err(t.invalid(r, c, format!("{v} ms is negative"))),
            v => Ok(v),
        }
    };

    let mut available = BTreeSet::new();
    let mut rows = Vec::new();
    let mut keys = Vec::new();
    for r in 0..t.len() {
        let row_model = t.cell(r, model);
        let row_tp = t.u32(r, tp)?;
        if row_model != model_name || row_tp != tensor_parallel_degree {
            available.insert(format!("{row_model} tp={row_tp}"));
            continue;
        }
        let batch_size = t.u32(r, batch)?;
        if batch_size == 0 {
            return Err(t.invalid(r, batch, "batch_size must be at least 1"));
        }
        let mut m = [None; 8];
        for (i, c) in cols.iter().enumerate() {
            let Some((mean_c, median_c)) = *c else {
                continue;
            };
            let mean = non_negative(r, mean_c)?;
            let median = non_negative(r, median_c)?;
            m[i] = match (mean, median) {
                (Some(mean_ms), Some(median_ms)) => Some(MeanMedianMs { mean_ms, median_ms }),
                (None, None) if !REQUIRED[i] => None,
                (None, _) => return Err(t.invalid(r, mean_c, "empty cell")),
                (_, None) => return Err(t.invalid(r, median_c, "empty cell")),
            };
        }
        let required = |i: usize| m[i].ok_or_else(|| t.invalid(r, batch, "missing measurement"));
        keys.push((batch_size, r));
        rows.push(CpuOverheadRow {
            batch_size,
            schedule: required(0)?,
            sampler_launch: m[1],
            sampler_e2e: required(2)?,
            prepare_inputs_launch: m[3],
            prepare_inputs_e2e: required(4)?,
            model_execution_launch: m[5],
            model_execution_e2e: m[6],
            process_model_outputs: required(7)?,
            ray_comm_time_mean_ms: non_negative(r, ray)?
                .ok_or_else(|| t.invalid(r, ray, "empty cell"))?,
        });
    }
    let wanted = format!("{model_name} tp={tensor_parallel_degree}");
    check_selection(&t, rows.is_empty(), &available, &wanted, "cpu overhead")?;
    check_duplicates(&t, &keys, batch, duplicates, |b| format!("batch_size={b}"))?;
    Ok(CpuOverheadTable {
        model_name: model_name.to_owned(),
        tensor_parallel_degree,
        rows,
    })
}

/// Writes `cpu_overheads.csv` in Vidur's historical layout (unnamed index, the eight
/// `_mean` columns, the eight `_median` columns, `model_name`, `batch_size`,
/// `tensor_parallel_degree`, `ray_comm_time_mean`). Validated first: finite non-negative
/// values, batch sizes ≥ 1 and unique per table, no table given twice.
pub fn write_cpu_overheads_csv(path: &Path, tables: &[CpuOverheadTable]) -> Result<()> {
    let err =
        |msg: String| Error::InvalidInput(format!("refusing to write {}: {msg}", path.display()));
    if tables.iter().all(|t| t.rows.is_empty()) {
        return Err(err("no rows".into()));
    }
    let mut seen_tables = BTreeSet::new();
    for table in tables {
        if !seen_tables.insert((&table.model_name, table.tensor_parallel_degree)) {
            return Err(err(format!(
                "{} tp={} given twice",
                table.model_name, table.tensor_parallel_degree
            )));
        }
        let mut seen = BTreeSet::new();
        for row in &table.rows {
            let what = format!("{} batch_size={}", table.model_name, row.batch_size);
            if row.batch_size == 0 || !seen.insert(row.batch_size) {
                return Err(err(format!("{what}: zero or duplicated batch size")));
            }
            let values = row
                .measurements()
                .into_iter()
                .flatten()
                .flat_map(|m| [m.mean_ms, m.median_ms])
                .chain([row.ray_comm_time_mean_ms]);
            for v in values {
                if !v.is_finite() || v < 0.0 {
                    return Err(err(format!(
                        "{what}: {v} ms is not a finite non-negative time"
                    )));
                }
            }
        }
    }

    let mut header = vec![String::new()];
    header.extend(MEASUREMENTS.iter().map(|m| format!("{m}_mean")));
    header.extend(MEASUREMENTS.iter().map(|m| format!("{m}_median")));
    header.extend(
        [
            "model_name",
            "batch_size",
            "tensor_parallel_degree",
            "ray_comm_time_mean",
        ]
        .map(String::from),
    );
    let mut rows = Vec::new();
    for table in tables {
        for row in &table.rows {
            let m = row.measurements();
            let mut cells = vec![rows.len().to_string()];
            cells.extend(
                m.iter()
                    .map(|x| x.map(|v| fmt_f64(v.mean_ms)).unwrap_or_default()),
            );
            cells.extend(
                m.iter()
                    .map(|x| x.map(|v| fmt_f64(v.median_ms)).unwrap_or_default()),
            );
            cells.extend([
                table.model_name.clone(),
                row.batch_size.to_string(),
                table.tensor_parallel_degree.to_string(),
                fmt_f64(row.ray_comm_time_mean_ms),
            ]);
            rows.push(cells);
        }
    }
    write_atomic(path, &csv_bytes(path, &header, &rows)?)
}
