//! Typed rows of the CSV contracts. Field order = column order of `io::schema`
//! (a test serializes each type and compares its header with the registry).

use serde::{Deserialize, Serialize};

use crate::io::ops::with_ops;
use crate::scheduler::ScheduledBatch;

/// `trace_lengths.csv`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceLengthRow {
    pub request_id: u64,
    pub prompt_id: u64,
    pub num_prefill_tokens: u32,
    pub num_decode_tokens: u32,
}

/// `trace_intervals.csv`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceIntervalRow {
    pub request_id: u64,
    pub inter_arrival_ns: u64,
    pub arrival_time_ns: u64,
}

/// One line of `prompts.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptRecord {
    pub prompt_id: u64,
    /// Encodes to exactly `num_tokens` tokens with the workload's tokenizer.
    pub text: String,
    pub num_tokens: u32,
}

/// `status` of a request row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    Ok,
    Error,
}

/// `request_metrics.csv`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestMetricsRow {
    pub request_id: u64,
    pub arrival_time_ns: u64,
    pub first_token_time_ns: Option<u64>,
    pub ttft_ns: Option<u64>,
    pub num_prefill_tokens: u32,
    pub num_decode_tokens: u32,
    pub num_decode_tokens_actual: u32,
    pub status: RequestStatus,
    #[serde(default)]
    pub scheduled_time_ns: Option<u64>,
    #[serde(default)]
    pub completion_time_ns: Option<u64>,
    #[serde(default)]
    pub e2e_ns: Option<u64>,
    #[serde(default)]
    pub tpot_ns: Option<u64>,
    #[serde(default)]
    pub queue_delay_ns: Option<u64>,
    #[serde(default)]
    pub num_preemptions: Option<u32>,
    #[serde(default)]
    pub replica_id: Option<u32>,
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub error_msg: Option<String>,
}

/// Inputs from which a request row's derived columns follow (DESIGN.md's definitions).
#[derive(Debug, Clone, Default)]
pub struct RequestTimes {
    pub arrival_time_ns: u64,
    pub scheduled_time_ns: Option<u64>,
    /// Emission time of each output token, in order.
    pub token_times_ns: Vec<u64>,
}

impl RequestTimes {
    /// What a request row needs of these times.
    pub fn summary(&self) -> RequestTimeSummary {
        RequestTimeSummary {
            arrival_time_ns: self.arrival_time_ns,
            scheduled_time_ns: self.scheduled_time_ns,
            first_token_time_ns: self.token_times_ns.first().copied(),
            last_token_time_ns: self.token_times_ns.last().copied(),
            num_tokens: self.token_times_ns.len() as u32,
        }
    }
}

/// A request's times as its row needs them: of its output tokens only the first, the last
/// and how many — so that a simulator need not keep millions of token times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestTimeSummary {
    pub arrival_time_ns: u64,
    pub scheduled_time_ns: Option<u64>,
    pub first_token_time_ns: Option<u64>,
    pub last_token_time_ns: Option<u64>,
    pub num_tokens: u32,
}

impl RequestTimeSummary {
    /// A request that arrived at `arrival_time_ns` and has not run yet.
    pub fn arrived(arrival_time_ns: u64) -> Self {
        RequestTimeSummary {
            arrival_time_ns,
            ..Default::default()
        }
    }

    /// Records the next output token at `time_ns`; returns its latency (the gap since the
    /// previous token, 0 for the first).
    pub fn push_token(&mut self, time_ns: u64) -> u64 {
        let latency = self.last_token_time_ns.map_or(0, |prev| time_ns - prev);
        self.first_token_time_ns.get_or_insert(time_ns);
        self.last_token_time_ns = Some(time_ns);
        self.num_tokens += 1;
        latency
    }
}

impl RequestMetricsRow {
    /// Builds a row from raw times, deriving TTFT, TPOT, E2E and queue delay exactly as
    /// DESIGN.md defines them, so real and simulated runs cannot disagree on definitions.
    #[allow(clippy::too_many_arguments)]
    pub fn from_times(
        request_id: u64,
        times: &RequestTimes,
        num_prefill_tokens: u32,
        num_decode_tokens: u32,
        num_preemptions: u32,
        replica_id: u32,
        backend: &str,
        error: Option<(&str, &str)>,
    ) -> Self {
        Self::from_summary(
            request_id,
            &times.summary(),
            num_prefill_tokens,
            num_decode_tokens,
            num_preemptions,
            replica_id,
            backend,
            error,
        )
    }

    /// [`RequestMetricsRow::from_times`] from the summary of the times.
    #[allow(clippy::too_many_arguments)]
    pub fn from_summary(
        request_id: u64,
        times: &RequestTimeSummary,
        num_prefill_tokens: u32,
        num_decode_tokens: u32,
        num_preemptions: u32,
        replica_id: u32,
        backend: &str,
        error: Option<(&str, &str)>,
    ) -> Self {
        let first = times.first_token_time_ns;
        let last = times.last_token_time_ns;
        let actual = times.num_tokens;
        let arrival = times.arrival_time_ns;
        let tpot_ns = match (first, last) {
            (Some(f), Some(l)) if actual > 1 => {
                Some(((l - f) as f64 / f64::from(actual - 1)).round() as u64)
            }
            _ => None,
        };
        let complete = error.is_none() && actual == num_decode_tokens;
        RequestMetricsRow {
            request_id,
            arrival_time_ns: arrival,
            first_token_time_ns: first,
            ttft_ns: first.map(|f| f.saturating_sub(arrival)),
            num_prefill_tokens,
            num_decode_tokens,
            num_decode_tokens_actual: actual,
            status: if error.is_none() {
                RequestStatus::Ok
            } else {
                RequestStatus::Error
            },
            scheduled_time_ns: times.scheduled_time_ns,
            completion_time_ns: if complete { last } else { None },
            e2e_ns: if complete {
                last.map(|l| l.saturating_sub(arrival))
            } else {
                None
            },
            tpot_ns,
            queue_delay_ns: times.scheduled_time_ns.map(|s| s.saturating_sub(arrival)),
            num_preemptions: Some(num_preemptions),
            replica_id: Some(replica_id),
            backend: Some(backend.to_string()),
            error_type: error.map(|(t, _)| t.to_string()),
            error_msg: error.map(|(_, m)| m.to_string()),
        }
    }
}

/// `token_metrics.csv`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenMetricsRow {
    pub request_id: u64,
    pub token_index: u32,
    pub token_time_ns: u64,
    pub token_latency_ns: u64,
    pub batch_id: u64,
    #[serde(default)]
    pub token_id: Option<u32>,
}

/// Number of per-op columns in `batch_metrics.csv`.
pub const NUM_OPS: usize = crate::io::ops::Op::COUNT;

// `batch_metrics.csv`'s row: its op columns are expanded from the op list (`with_ops!`), in
// index order between the CPU breakdown and `extrapolated`.
macro_rules! define_batch_metrics_row {
    ($($variant:ident $name:ident $column:ident,)*) => {
        /// `batch_metrics.csv`
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
        pub struct BatchMetricsRow {
            pub batch_id: u64,
            pub replica_id: u32,
            pub start_time_ns: u64,
            pub end_time_ns: u64,
            pub duration_ns: u64,
            pub num_requests: u32,
            pub num_prefill_requests: u32,
            pub num_decode_requests: u32,
            pub num_prefill_tokens: u32,
            pub num_decode_tokens: u32,
            pub kv_context_tokens: u64,
            pub num_kv_blocks_used: u32,
            pub num_preempted: u32,
            #[serde(default)]
            pub num_waiting_requests: Option<u32>,
            #[serde(default)]
            pub model_forward_ns: Option<u64>,
            #[serde(default)]
            pub cpu_schedule_ns: Option<u64>,
            #[serde(default)]
            pub cpu_prepare_inputs_ns: Option<u64>,
            #[serde(default)]
            pub cpu_sampler_ns: Option<u64>,
            #[serde(default)]
            pub cpu_process_outputs_ns: Option<u64>,
        $(
            #[serde(default)]
            pub $column: Option<u64>,
        )*
            #[serde(default)]
            pub extrapolated: Option<bool>,
            #[serde(default)]
            pub cpu_time_ns: Option<u64>,
        }

        impl BatchMetricsRow {
            /// Sets the `op_<name>_ns` columns from values in [`Op::ALL`](crate::io::ops::Op::ALL) order.
            pub fn set_ops(&mut self, values: [Option<u64>; NUM_OPS]) {
                let [$($name,)*] = values;
                $(self.$column = $name;)*
            }

            /// The `op_<name>_ns` columns in [`Op::ALL`](crate::io::ops::Op::ALL) order.
            pub fn ops(&self) -> [Option<u64>; NUM_OPS] {
                [$(self.$column,)*]
            }
        }
    };
}
with_ops!(define_batch_metrics_row);

impl BatchMetricsRow {
    /// The row of `batch` run on `replica_id` from `start_ns` to `end_ns` with
    /// `num_waiting_requests` queued: identity, times and composition counted from the
    /// scheduler's plain data, the one way the engine and the simulator both count them. The
    /// time breakdown and the op columns are the caller's.
    pub fn of_batch(
        batch: &ScheduledBatch,
        replica_id: u32,
        start_ns: u64,
        end_ns: u64,
        num_waiting_requests: u32,
    ) -> Self {
        let mut row = BatchMetricsRow {
            batch_id: batch.batch_id,
            replica_id,
            start_time_ns: start_ns,
            end_time_ns: end_ns,
            duration_ns: end_ns - start_ns,
            num_requests: batch.entries.len() as u32,
            num_kv_blocks_used: batch.num_kv_blocks_used,
            num_preempted: batch.preempted.len() as u32,
            num_waiting_requests: Some(num_waiting_requests),
            ..Default::default()
        };
        for e in &batch.entries {
            if e.is_prefill {
                row.num_prefill_requests += 1;
                row.num_prefill_tokens += e.num_tokens;
            } else {
                row.num_decode_requests += 1;
                row.num_decode_tokens += e.num_tokens;
            }
            row.kv_context_tokens += u64::from(e.num_context_tokens + e.num_tokens);
        }
        row
    }
}

/// `phase` of a `device_speed.csv` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpeedPhase {
    /// A probe before the run's first iteration.
    Before,
    /// A probe in a gap between iterations.
    Idle,
    /// A host sample while the device was busy (no probe, steal time only).
    Busy,
    /// A probe after the run's last iteration.
    After,
    /// A quick probe between iterations while busy: one repeat of the memory kernel on its
    /// window as the work left it, no compute kernel and no host counters (probe version 5).
    Quick,
}

/// `device_speed.csv`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceSpeedRow {
    pub sample_id: u64,
    pub time_ns: i64,
    pub phase: SpeedPhase,
    pub memory_probe_ns: Option<u64>,
    pub compute_probe_ns: Option<u64>,
    pub memory_gb_per_s: Option<f64>,
    pub compute_gflop_per_s: Option<f64>,
    pub steal_pct: Option<f64>,
    #[serde(default)]
    pub competing_cpu_pct: Option<f64>,
    #[serde(default)]
    pub run_queue_wait_pct: Option<f64>,
    pub load_average_1min: Option<f64>,
    // Appended with probe version 3; empty in older files, whose probes count as usable.
    #[serde(default)]
    pub probe_repeats: Option<u64>,
    #[serde(default)]
    pub memory_probe_kept_repeats: Option<u64>,
    #[serde(default)]
    pub compute_probe_kept_repeats: Option<u64>,
    #[serde(default)]
    pub memory_probe_max_skew: Option<f64>,
    #[serde(default)]
    pub compute_probe_max_skew: Option<f64>,
    // Appended with probe version 4; empty in older files.
    #[serde(default)]
    pub probe_version: Option<u32>,
}

/// The probe version the timed stages record in `device_speed.csv` (4: the engine's own
/// decode projection and prefill GEMM, `real_bench::device_probe::ProbeKernels::Model`;
/// 5: the same, and quick memory probes between iterations, phase `quick`).
/// Probe rates of different versions time different kernels and do not compare: a timeline
/// of another version is outdated ([`crate::io::rundir::stale_reason`]) and a correction
/// between two versions is refused.
pub const DEVICE_SPEED_PROBE_VERSION: u32 = 5;

/// The probe version of a timeline's rows; `None` for a file written before versions were
/// recorded (version 3 or older).
pub fn timeline_probe_version(rows: &[DeviceSpeedRow]) -> Option<u32> {
    rows.iter().find_map(|r| r.probe_version)
}

/// A timeline's probe version as messages name it.
pub fn probe_version_label(version: Option<u32>) -> String {
    version.map_or_else(|| "3 or older".to_string(), |v| v.to_string())
}

impl DeviceSpeedRow {
    /// Whether the row's memory probe times the device ([`probe_kind_usable`]).
    pub fn memory_probe_usable(&self) -> bool {
        probe_kind_usable(self.memory_probe_kept_repeats, self.probe_repeats)
    }

    /// Whether the row's compute probe times the device ([`probe_kind_usable`]).
    pub fn compute_probe_usable(&self) -> bool {
        probe_kind_usable(self.compute_probe_kept_repeats, self.probe_repeats)
    }
}

#[cfg(test)]
impl DeviceSpeedRow {
    /// An idle-gap probe of this build's version at `time_ns` with the given rates, every
    /// repeat kept: the row tests vary.
    pub(crate) fn idle_probe(time_ns: i64, memory_gb_per_s: f64, compute_gflop_per_s: f64) -> Self {
        DeviceSpeedRow {
            sample_id: time_ns.unsigned_abs(),
            time_ns,
            phase: SpeedPhase::Idle,
            memory_probe_ns: Some(1),
            compute_probe_ns: Some(1),
            memory_gb_per_s: Some(memory_gb_per_s),
            compute_gflop_per_s: Some(compute_gflop_per_s),
            steal_pct: None,
            competing_cpu_pct: None,
            run_queue_wait_pct: None,
            load_average_1min: None,
            probe_repeats: Some(5),
            memory_probe_kept_repeats: Some(5),
            compute_probe_kept_repeats: Some(5),
            memory_probe_max_skew: Some(1.0),
            compute_probe_max_skew: Some(1.0),
            probe_version: Some(DEVICE_SPEED_PROBE_VERSION),
        }
    }
}

/// Whether a probe kernel's median times the device: a majority of its repeats had their
/// threads run together. When most were disturbed, the host's scheduler was in the way for
/// the whole probe and the few repeats left are the lucky ones, not the device's speed.
/// Probes recorded before the repeats were screened (no counts) stay usable.
pub fn probe_kind_usable(kept_repeats: Option<u64>, repeats: Option<u64>) -> bool {
    match (kept_repeats, repeats) {
        (Some(kept), Some(repeats)) => 2 * kept > repeats,
        _ => true,
    }
}

/// `batch_requests.csv`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRequestRow {
    pub batch_id: u64,
    pub request_id: u64,
    pub num_tokens: u32,
    pub num_context_tokens: u32,
    pub is_prefill: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::schema::{self, CsvSchema};

    fn header_of<T: Serialize>(row: &T) -> Vec<String> {
        let mut w = csv::WriterBuilder::new()
            .has_headers(true)
            .from_writer(Vec::new());
        w.serialize(row).unwrap();
        let bytes = w.into_inner().unwrap();
        let mut r = csv::Reader::from_reader(bytes.as_slice());
        r.headers().unwrap().iter().map(str::to_string).collect()
    }

    fn assert_matches<T: Serialize>(row: &T, schema: &CsvSchema) {
        let expected: Vec<String> = schema.column_names().map(str::to_string).collect();
        assert_eq!(header_of(row), expected, "{}", schema.file_name);
    }

    #[test]
    fn record_types_match_the_schema_registry() {
        assert_matches(
            &TraceLengthRow {
                request_id: 0,
                prompt_id: 0,
                num_prefill_tokens: 1,
                num_decode_tokens: 1,
            },
            &schema::TRACE_LENGTHS,
        );
        assert_matches(
            &TraceIntervalRow {
                request_id: 0,
                inter_arrival_ns: 0,
                arrival_time_ns: 0,
            },
            &schema::TRACE_INTERVALS,
        );
        let times = RequestTimes {
            arrival_time_ns: 10,
            scheduled_time_ns: Some(12),
            token_times_ns: vec![20, 30, 50],
        };
        assert_matches(
            &RequestMetricsRow::from_times(0, &times, 4, 3, 0, 0, "x", None),
            &schema::REQUEST_METRICS,
        );
        assert_matches(
            &TokenMetricsRow {
                request_id: 0,
                token_index: 0,
                token_time_ns: 0,
                token_latency_ns: 0,
                batch_id: 0,
                token_id: Some(1),
            },
            &schema::TOKEN_METRICS,
        );
        assert_matches(&BatchMetricsRow::default(), &schema::BATCH_METRICS);
        assert_matches(
            &BatchRequestRow {
                batch_id: 0,
                request_id: 0,
                num_tokens: 1,
                num_context_tokens: 0,
                is_prefill: true,
            },
            &schema::BATCH_REQUESTS,
        );
        assert_matches(
            &DeviceSpeedRow {
                sample_id: 0,
                phase: SpeedPhase::Before,
                compute_probe_kept_repeats: Some(2),
                compute_probe_max_skew: Some(2.0),
                ..DeviceSpeedRow::idle_probe(-5, 1.0, 1.0)
            },
            &schema::DEVICE_SPEED,
        );
    }

    #[test]
    fn a_probe_kind_is_usable_when_most_repeats_ran_together_or_nothing_says_otherwise() {
        assert!(probe_kind_usable(Some(3), Some(5)));
        assert!(probe_kind_usable(Some(5), Some(5)));
        assert!(!probe_kind_usable(Some(2), Some(5)));
        assert!(!probe_kind_usable(Some(0), Some(5)));
        // Files written before the repeats were screened.
        assert!(probe_kind_usable(None, None));
        assert!(probe_kind_usable(Some(0), None));
    }

    #[test]
    fn device_speed_files_without_the_screening_columns_still_read() {
        let dir = std::env::temp_dir().join(format!("simreal-oldspeed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(schema::DEVICE_SPEED.file_name);
        // The header of files written by probe version 2.
        std::fs::write(
            &path,
            "sample_id,time_ns,phase,memory_probe_ns,compute_probe_ns,memory_gb_per_s,\
             compute_gflop_per_s,steal_pct,competing_cpu_pct,run_queue_wait_pct,load_average_1min\n\
             0,-5,before,6000000,1700000,11.1,225.0,,,,0.5\n\
             1,7,busy,,,,,0.0,3.0,1.0,0.5\n",
        )
        .unwrap();
        let rows: Vec<DeviceSpeedRow> = crate::io::read_csv(&path, &schema::DEVICE_SPEED).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].compute_gflop_per_s, Some(225.0));
        assert_eq!(
            (rows[0].probe_repeats, rows[0].compute_probe_kept_repeats),
            (None, None)
        );
        assert!(rows[0].memory_probe_usable() && rows[0].compute_probe_usable());
    }

    #[test]
    fn derived_request_metrics_follow_design_definitions() {
        let times = RequestTimes {
            arrival_time_ns: 100,
            scheduled_time_ns: Some(150),
            token_times_ns: vec![400, 500, 700, 1000],
        };
        let row = RequestMetricsRow::from_times(7, &times, 16, 4, 1, 0, "candle_cpu", None);
        assert_eq!(row.ttft_ns, Some(300));
        assert_eq!(row.e2e_ns, Some(900));
        assert_eq!(row.tpot_ns, Some(200)); // (1000 - 400) / 3
        assert_eq!(row.queue_delay_ns, Some(50));
        assert_eq!(row.num_decode_tokens_actual, 4);
        assert_eq!(row.status, RequestStatus::Ok);

        let one = RequestTimes {
            arrival_time_ns: 0,
            scheduled_time_ns: Some(0),
            token_times_ns: vec![5],
        };
        let row = RequestMetricsRow::from_times(0, &one, 1, 1, 0, 0, "x", None);
        assert_eq!(row.tpot_ns, None);
        assert_eq!(row.e2e_ns, Some(5));

        let failed = RequestMetricsRow::from_times(
            1,
            &RequestTimes::default(),
            9000,
            5,
            0,
            0,
            "x",
            Some(("context_overflow", "prompt too long")),
        );
        assert_eq!(failed.status, RequestStatus::Error);
        assert_eq!(failed.ttft_ns, None);
        assert_eq!(failed.e2e_ns, None);
    }

    #[test]
    fn a_summary_of_pushed_tokens_gives_the_same_row_as_the_times() {
        let times = RequestTimes {
            arrival_time_ns: 100,
            scheduled_time_ns: Some(150),
            token_times_ns: vec![400, 450, 530],
        };
        let mut summary = RequestTimeSummary::arrived(100);
        summary.scheduled_time_ns = Some(150);
        let latencies: Vec<u64> = times
            .token_times_ns
            .iter()
            .map(|&t| summary.push_token(t))
            .collect();
        assert_eq!(latencies, [0, 50, 80]);
        assert_eq!(summary, times.summary());
        for error in [None, Some(("incomplete", "cut"))] {
            assert_eq!(
                RequestMetricsRow::from_summary(7, &summary, 10, 3, 1, 0, "b", error),
                RequestMetricsRow::from_times(7, &times, 10, 3, 1, 0, "b", error)
            );
        }
    }

    #[test]
    fn op_columns_roundtrip() {
        let mut values = [None; NUM_OPS];
        for (i, v) in values.iter_mut().enumerate() {
            *v = Some(i as u64 * 3);
        }
        let mut row = BatchMetricsRow::default();
        row.set_ops(values);
        assert_eq!(row.ops(), values);
        assert_eq!(row.op_attn_decode_ns, Some(21));
    }
}
