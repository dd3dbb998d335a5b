//! The serving engine: open-loop arrivals, continuous batching, token-by-token timing.
//!
//! Each iteration: admit every request that has arrived by now, ask the shared scheduler
//! for the next batch, flatten it into one forward pass, sample greedily, hand the finished
//! iteration back to the scheduler, and record what happened with the wall clock. When there
//! is nothing to run the engine sleeps until the next arrival. The CPU work around the model
//! (schedule, prepare inputs, sample, process outputs) is timed separately from the forward,
//! because the simulator charges it separately.
//!
//! On a GPU the model's ops only queue kernels, so the loop synchronizes the device at each
//! phase boundary before reading the clock: CPU phases then hold CPU work only and the forward
//! holds the GPU work. The GPU's own time for each forward (CUDA events) is kept apart, in
//! [`EngineRecord::device_forward_ns`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::io::ops::Op;
use crate::io::records::{
    BatchMetricsRow, BatchRequestRow, RequestMetricsRow, RequestTimes, TokenMetricsRow, NUM_OPS,
};
use crate::real_bench::device_probe::process_cpu_time_ns;
use crate::real_bench::model::{OpTotals, PagedKvCache, Qwen3Model, SequenceInput};
use crate::scheduler::{
    EmittedToken, ReplicaScheduler, RequestSpec, ScheduledBatch, SchedulerConfig,
};
use crate::{Error, Result};

/// A request as the engine receives it.
#[derive(Debug, Clone)]
pub struct EngineRequest {
    pub request_id: u64,
    pub arrival_time_ns: u64,
    /// Prompt token ids (`num_prefill_tokens` of them).
    pub prompt: Vec<u32>,
    pub num_decode_tokens: u32,
}

/// The run's clock: nanoseconds since the run's time origin, and sleeping until a time.
pub trait Clock {
    fn now_ns(&self) -> u64;
    fn sleep_until_ns(&self, t_ns: u64);
}

/// Wall clock on the monotonic `Instant`, origin at construction.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    pub fn start() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// The instant that is t = 0.
    pub fn origin(&self) -> Instant {
        self.origin
    }
}

/// Below this, sleeping overshoots by more than the remaining time: spin instead.
const SPIN_NS: u64 = 200_000;

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn sleep_until_ns(&self, t_ns: u64) {
        loop {
            let now = self.now_ns();
            if now >= t_ns {
                return;
            }
            let left = t_ns - now;
            if left > SPIN_NS {
                std::thread::sleep(Duration::from_nanos(left - SPIN_NS));
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Where the engine is in a run, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeProgress {
    /// Time since the run's origin.
    pub now_ns: u64,
    /// Requests finished (served or rejected) so far.
    pub num_requests_done: usize,
    pub num_requests_total: usize,
    /// Output tokens emitted so far.
    pub num_tokens: usize,
    pub num_iterations: usize,
}

/// Told what the engine does while it serves, so that a stage can report progress and use
/// idle gaps (e.g. to probe the device's speed) without the engine knowing about either.
pub trait ServeObserver {
    /// The engine has nothing to run from `now_ns` until the next arrival at `wake_ns`. The
    /// observer may use part of the gap but must return well before `wake_ns`: the engine
    /// then sleeps until `wake_ns` (and serves late if the observer overran).
    fn idle(&mut self, now_ns: u64, wake_ns: u64) {
        let _ = (now_ns, wake_ns);
    }

    /// An iteration has ended.
    fn iteration_done(&mut self, progress: &ServeProgress) {
        let _ = progress;
    }
}

/// Observes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl ServeObserver for NoObserver {}

/// Static facts the engine records with every row.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// `backend` column value, e.g. `candle_cpu`.
    pub backend_name: String,
    pub replica_id: u32,
    /// Longest prompt + output the engine serves.
    pub max_model_len: u32,
}

/// Everything a run produced, ready to be written.
#[derive(Debug, Default)]
pub struct EngineRecord {
    pub requests: Vec<RequestMetricsRow>,
    pub tokens: Vec<TokenMetricsRow>,
    pub batches: Vec<BatchMetricsRow>,
    pub batch_requests: Vec<BatchRequestRow>,
    /// Wall time of the whole run (t = 0 to the last iteration's end).
    pub makespan_ns: u64,
    /// Time spent sleeping for arrivals.
    pub idle_ns: u64,
    /// Per iteration (in `batches` order), the GPU time of its forward from CUDA events; empty
    /// when the device does not report it (the CPU).
    pub device_forward_ns: Vec<u64>,
}

struct RequestState {
    arrival_time_ns: u64,
    /// Prompt followed by the tokens generated so far.
    tokens: Vec<u32>,
    num_prefill_tokens: u32,
    num_decode_tokens: u32,
    scheduled_time_ns: Option<u64>,
    token_times_ns: Vec<u64>,
    num_preemptions: u32,
}

/// One replica: the model, its KV cache and the shared scheduler.
pub struct Engine<'m> {
    model: &'m Qwen3Model,
    cache: PagedKvCache,
    scheduler: ReplicaScheduler,
    settings: EngineSettings,
    /// Each op is timed on iterations whose batch id is a multiple of this (see
    /// [`Engine::sample_op_times_every`]).
    op_times_every: u64,
}

impl<'m> Engine<'m> {
    pub fn new(
        model: &'m Qwen3Model,
        scheduler_cfg: &SchedulerConfig,
        num_kv_blocks: usize,
        settings: EngineSettings,
    ) -> Result<Self> {
        let cache = model.new_kv_cache(num_kv_blocks, scheduler_cfg.block_size as usize)?;
        let scheduler = ReplicaScheduler::new(scheduler_cfg, num_kv_blocks, 1)?;
        Ok(Self {
            model,
            cache,
            scheduler,
            settings,
            op_times_every: 1,
        })
    }

    /// Times each op only on every `n`th iteration (batch ids 0, n, 2n, ...); the others
    /// record the whole forward only, and their `op_*_ns` columns are empty. On a GPU that
    /// keeps per-op CUDA events off most iterations; the CPU times every op anyway (wall
    /// clock, no overhead worth saving), so there this changes nothing. Default 1: all.
    pub fn sample_op_times_every(&mut self, n: u32) {
        self.op_times_every = u64::from(n.max(1));
    }

    /// Runs `iterations` forward passes of a small mixed batch (a prefill and a decode) so
    /// that allocations, page faults and thread pools are warm before t = 0. Returns each
    /// iteration's wall time. Uses cache blocks the run will overwrite.
    pub fn warm_up(&mut self, iterations: u32) -> Result<Vec<Duration>> {
        let bs = self.cache.block_size();
        let needed_blocks = (64usize).div_ceil(bs) + 1;
        if self.cache.num_blocks() < needed_blocks + 1 || iterations == 0 {
            return Ok(Vec::new());
        }
        let prompt: Vec<u32> = (0..32u32).map(|i| 1000 + i).collect();
        let prefill_blocks: Vec<usize> = (0..32usize.div_ceil(bs)).collect();
        let decode_blocks: Vec<usize> = (prefill_blocks.len()..needed_blocks).collect();
        let mut times = Vec::with_capacity(iterations as usize);
        for _ in 0..iterations {
            let start = Instant::now();
            let seqs = [
                SequenceInput {
                    token_ids: &prompt,
                    num_cached_tokens: 0,
                    block_table: &prefill_blocks,
                    wants_logits: true,
                },
                SequenceInput {
                    token_ids: &prompt[..1],
                    num_cached_tokens: 8,
                    block_table: &decode_blocks,
                    wants_logits: true,
                },
            ];
            let logits = self.model.forward_seqs(&seqs, &mut self.cache, None)?;
            self.model.sampler(&logits)?;
            self.model.device().synchronize()?;
            times.push(start.elapsed());
        }
        Ok(times)
    }

    /// Maps into memory, before serving, every KV block `requests` can hold (see
    /// [`PagedKvCache::map_blocks`]), and returns how many that is. The block pool hands out
    /// the lowest never-used id only when all lower ones are in use (freed blocks are reused
    /// first), so ids stay below the most blocks ever held at once, which is at most the
    /// requests' blocks of prompt plus output together (the pool size if smaller).
    pub fn map_kv_blocks_for(&mut self, requests: &[EngineRequest]) -> usize {
        let bs = self.cache.block_size();
        let needed: usize = requests
            .iter()
            .map(|r| (r.prompt.len() + r.num_decode_tokens as usize).div_ceil(bs))
            .sum();
        let blocks = needed.min(self.cache.num_blocks());
        self.cache.map_blocks(blocks);
        blocks
    }

    /// Serves `requests` (sorted by arrival) under open-loop arrivals on `clock`.
    pub fn run(&mut self, requests: &[EngineRequest], clock: &dyn Clock) -> Result<EngineRecord> {
        self.run_observed(requests, clock, &mut NoObserver)
    }

    /// [`Engine::run`], telling `observer` about idle gaps and finished iterations.
    pub fn run_observed(
        &mut self,
        requests: &[EngineRequest],
        clock: &dyn Clock,
        observer: &mut dyn ServeObserver,
    ) -> Result<EngineRecord> {
        if requests
            .windows(2)
            .any(|w| w[1].arrival_time_ns < w[0].arrival_time_ns)
        {
            return Err(Error::InvalidInput(
                "engine requests must be sorted by arrival time".into(),
            ));
        }
        let mut record = EngineRecord::default();
        let mut states: HashMap<u64, RequestState> = HashMap::with_capacity(requests.len());
        let mut next_arrival = 0usize;
        let mut ops = OpTotals::default();
        let mut seq_block_tables: Vec<Vec<usize>> = Vec::new();
        let mut last_end_ns = 0u64;

        loop {
            let t_start = clock.now_ns();
            let cpu_start_ns = process_cpu_time_ns();
            // Admission happens at the scheduling point, as in the simulator.
            while next_arrival < requests.len() && requests[next_arrival].arrival_time_ns <= t_start
            {
                self.admit(&requests[next_arrival], &mut states, &mut record);
                next_arrival += 1;
            }
            let Some(batch) = self.scheduler.schedule() else {
                if next_arrival >= requests.len() {
                    if self.scheduler.is_idle() {
                        break;
                    }
                    return Err(Error::Msg(format!(
                        "scheduler stalled with {} waiting and {} running requests and no arrivals left",
                        self.scheduler.num_waiting(),
                        self.scheduler.num_running()
                    )));
                }
                let wake = requests[next_arrival].arrival_time_ns;
                observer.idle(t_start, wake);
                clock.sleep_until_ns(wake);
                record.idle_ns += clock.now_ns().saturating_sub(t_start);
                continue;
            };
            let t_scheduled = clock.now_ns();
            for id in &batch.preempted {
                if let Some(s) = states.get_mut(id) {
                    s.num_preemptions += 1;
                }
            }

            self.fill_block_tables(&batch, &mut seq_block_tables)?;
            let seqs = sequence_inputs(&batch, &states, &seq_block_tables)?;
            let forward_batch = self.model.prepare_batch(&self.cache, &seqs)?;
            // A no-op on the CPU; on a GPU, waits for the batch's uploads.
            self.model.device().synchronize()?;
            let t_prepared = clock.now_ns();

            ops.reset();
            ops.set_per_op(batch.batch_id % self.op_times_every == 0);
            let logits = self
                .model
                .forward(&forward_batch, &mut self.cache, Some(&mut ops))?;
            drop(forward_batch);
            drop(seqs);
            self.model.device().synchronize()?;
            let t_forward = clock.now_ns();
            if let Some(gpu) = ops.device_forward() {
                record.device_forward_ns.push(gpu.as_nanos() as u64);
            }

            let sampled = self.model.sampler(&logits)?;
            let t_sampled = clock.now_ns();

            // Process outputs.
            let outcome = self.scheduler.on_batch_end(&batch);
            if outcome.tokens.len() != sampled.len() {
                return Err(Error::Msg(format!(
                    "batch {} emitted {} tokens but sampled {}",
                    batch.batch_id,
                    outcome.tokens.len(),
                    sampled.len()
                )));
            }
            let t_end = clock.now_ns();
            let cpu_time_ns = process_cpu_time_ns().saturating_sub(cpu_start_ns);
            record_tokens(
                &batch,
                &outcome.tokens,
                &sampled,
                t_end,
                &mut states,
                &mut record,
            )?;
            for e in &batch.entries {
                if let Some(s) = states.get_mut(&e.request_id) {
                    s.scheduled_time_ns.get_or_insert(t_start);
                }
            }
            for id in &outcome.completed {
                if let Some(s) = states.remove(id) {
                    record
                        .requests
                        .push(finish_row(*id, &s, &self.settings, None));
                }
            }
            let times = [
                t_start,
                t_scheduled,
                t_prepared,
                t_forward,
                t_sampled,
                t_end,
            ];
            let mut row = self.batch_row(&batch, times, &ops);
            row.cpu_time_ns = Some(cpu_time_ns);
            record.batches.push(row);
            record
                .batch_requests
                .extend(batch.entries.iter().map(|e| BatchRequestRow {
                    batch_id: batch.batch_id,
                    request_id: e.request_id,
                    num_tokens: e.num_tokens,
                    num_context_tokens: e.num_context_tokens,
                    is_prefill: e.is_prefill,
                }));
            last_end_ns = t_end;
            observer.iteration_done(&ServeProgress {
                now_ns: t_end,
                num_requests_done: record.requests.len(),
                num_requests_total: requests.len(),
                num_tokens: record.tokens.len(),
                num_iterations: record.batches.len(),
            });
        }

        // Anything left is a request that never completed (none, unless the scheduler stalled).
        for (id, s) in states.drain() {
            record.requests.push(finish_row(
                id,
                &s,
                &self.settings,
                Some(("incomplete", "the run ended before the request completed")),
            ));
        }
        record.requests.sort_by_key(|r| r.request_id);
        record.tokens.sort_by_key(|t| (t.request_id, t.token_index));
        record.makespan_ns = last_end_ns;
        Ok(record)
    }

    /// The cache's block table of every entry of `batch`, in entry order, into `tables`.
    fn fill_block_tables(
        &self,
        batch: &ScheduledBatch,
        tables: &mut Vec<Vec<usize>>,
    ) -> Result<()> {
        // The tables' buffers are kept from iteration to iteration: no allocation once
        // they have grown to the longest table.
        tables.resize_with(batch.entries.len(), Vec::new);
        for (e, out) in batch.entries.iter().zip(tables.iter_mut()) {
            let table = self.scheduler.block_table(e.request_id).ok_or_else(|| {
                Error::Msg(format!(
                    "scheduled request {} has no block table",
                    e.request_id
                ))
            })?;
            out.clear();
            out.extend(table.iter().map(|&b| b as usize));
        }
        Ok(())
    }

    fn admit(
        &mut self,
        r: &EngineRequest,
        states: &mut HashMap<u64, RequestState>,
        record: &mut EngineRecord,
    ) {
        let num_prefill_tokens = r.prompt.len() as u32;
        let state = RequestState {
            arrival_time_ns: r.arrival_time_ns,
            tokens: r.prompt.clone(),
            num_prefill_tokens,
            num_decode_tokens: r.num_decode_tokens,
            scheduled_time_ns: None,
            token_times_ns: Vec::with_capacity(r.num_decode_tokens as usize),
            num_preemptions: 0,
        };
        let total = u64::from(num_prefill_tokens) + u64::from(r.num_decode_tokens);
        let rejection = if total > u64::from(self.settings.max_model_len) {
            Some((
                "context_overflow",
                format!(
                    "prompt {num_prefill_tokens} + output {} tokens exceeds the model's {}-token context",
                    r.num_decode_tokens, self.settings.max_model_len
                ),
            ))
        } else {
            self.scheduler
                .add_request(RequestSpec {
                    request_id: r.request_id,
                    arrival_time_ns: r.arrival_time_ns,
                    num_prefill_tokens,
                    num_decode_tokens: r.num_decode_tokens,
                })
                .err()
                .map(|rej| ("kv_capacity", rej.to_string()))
        };
        match rejection {
            None => {
                states.insert(r.request_id, state);
            }
            Some((kind, msg)) => record.requests.push(finish_row(
                r.request_id,
                &state,
                &self.settings,
                Some((kind, &msg)),
            )),
        }
    }

    fn batch_row(&self, batch: &ScheduledBatch, t: [u64; 6], ops: &OpTotals) -> BatchMetricsRow {
        let [start, scheduled, prepared, forwarded, sampled, end] = t;
        let mut row = BatchMetricsRow::of_batch(
            batch,
            self.settings.replica_id,
            start,
            end,
            self.scheduler.num_waiting() as u32,
        );
        row.model_forward_ns = Some(forwarded - prepared);
        row.cpu_schedule_ns = Some(scheduled - start);
        row.cpu_prepare_inputs_ns = Some(prepared - scheduled);
        row.cpu_sampler_ns = Some(sampled - forwarded);
        row.cpu_process_outputs_ns = Some(end - sampled);
        let mut values = [None; NUM_OPS];
        // A GPU iteration not sampled for op times has none.
        for op in Op::MODEL.into_iter().filter(|_| ops.has_op_times()) {
            values[op.index()] = Some(ops.total(op).as_nanos() as u64);
        }
        // Sampling runs outside the forward: its time is cpu_sampler_ns.
        values[Op::Sampler.index()] = Some(sampled - forwarded);
        row.set_ops(values);
        row
    }
}

/// The model's input for each entry of `batch`: its tokens [context, context + n) of prompt
/// followed by what it generated, with its block table from `tables` (entry order).
fn sequence_inputs<'a>(
    batch: &ScheduledBatch,
    states: &'a HashMap<u64, RequestState>,
    tables: &'a [Vec<usize>],
) -> Result<Vec<SequenceInput<'a>>> {
    batch
        .entries
        .iter()
        .zip(tables)
        .map(|(e, table)| {
            let state = states
                .get(&e.request_id)
                .ok_or_else(|| Error::Msg(format!("scheduled unknown request {}", e.request_id)))?;
            let start = e.num_context_tokens as usize;
            let end = start + e.num_tokens as usize;
            let token_ids = state.tokens.get(start..end).ok_or_else(|| {
                Error::Msg(format!(
                    "request {} scheduled tokens {start}..{end} but knows {}",
                    e.request_id,
                    state.tokens.len()
                ))
            })?;
            Ok(SequenceInput {
                token_ids,
                num_cached_tokens: start,
                block_table: table,
                wants_logits: e.emits_token,
            })
        })
        .collect()
}

/// Appends each token `batch` emitted (`sampled`, in `emitted` order) to its request and to
/// the token rows, all stamped `t_end`.
fn record_tokens(
    batch: &ScheduledBatch,
    emitted: &[EmittedToken],
    sampled: &[u32],
    t_end: u64,
    states: &mut HashMap<u64, RequestState>,
    record: &mut EngineRecord,
) -> Result<()> {
    for (token, &token_id) in emitted.iter().zip(sampled) {
        let s = states
            .get_mut(&token.request_id)
            .ok_or_else(|| Error::Msg(format!("token for unknown request {}", token.request_id)))?;
        let index = s.token_times_ns.len() as u32;
        if index != token.token_index {
            return Err(Error::Msg(format!(
                "request {} emitted token {} but has {index}",
                token.request_id, token.token_index
            )));
        }
        let latency = s.token_times_ns.last().map_or(0, |&p| t_end - p);
        s.tokens.push(token_id);
        s.token_times_ns.push(t_end);
        record.tokens.push(TokenMetricsRow {
            request_id: token.request_id,
            token_index: index,
            token_time_ns: t_end,
            token_latency_ns: latency,
            batch_id: batch.batch_id,
            token_id: Some(token_id),
        });
    }
    Ok(())
}

fn finish_row(
    request_id: u64,
    s: &RequestState,
    settings: &EngineSettings,
    error: Option<(&str, &str)>,
) -> RequestMetricsRow {
    RequestMetricsRow::from_times(
        request_id,
        &RequestTimes {
            arrival_time_ns: s.arrival_time_ns,
            scheduled_time_ns: s.scheduled_time_ns,
            token_times_ns: s.token_times_ns.clone(),
        },
        s.num_prefill_tokens,
        s.num_decode_tokens,
        s.num_preemptions,
        settings.replica_id,
        &settings.backend_name,
        error,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::records::RequestStatus;
    use crate::real_bench::model::{Qwen3Config, WeightSource};
    use candle_core::{DType, Device};

    fn tiny() -> Qwen3Model {
        let source = WeightSource::Random {
            seed: 3,
            config: Qwen3Config::tiny(),
        };
        Qwen3Model::load(&source, DType::F32, &Device::Cpu).unwrap()
    }

    fn engine_settings(max_model_len: u32) -> EngineSettings {
        EngineSettings {
            backend_name: "candle_cpu".into(),
            replica_id: 0,
            max_model_len,
        }
    }

    fn request(id: u64, prompt_len: u32, decode: u32) -> EngineRequest {
        EngineRequest {
            request_id: id,
            arrival_time_ns: 0,
            prompt: (0..prompt_len).map(|i| 100 + i).collect(),
            num_decode_tokens: decode,
        }
    }

    #[test]
    fn maps_the_blocks_the_requests_can_hold_at_most() {
        let model = tiny();
        let settings = engine_settings(4096);
        let cfg = SchedulerConfig::default(); // 16-token blocks
        let mut engine = Engine::new(&model, &cfg, 100, settings.clone()).unwrap();
        // 20 + 3 tokens → 2 blocks, 16 + 0 → 1, 40 + 9 → 4.
        let requests = [request(0, 20, 3), request(1, 16, 0), request(2, 40, 9)];
        assert_eq!(engine.map_kv_blocks_for(&requests), 7);
        let mut small = Engine::new(&model, &cfg, 5, settings).unwrap();
        assert_eq!(
            small.map_kv_blocks_for(&requests),
            5,
            "never more than the pool"
        );
    }

    #[test]
    fn oversized_requests_become_error_rows_and_the_run_continues() {
        let model = tiny();
        let settings = engine_settings(64);
        let mut engine = Engine::new(&model, &SchedulerConfig::default(), 8, settings).unwrap();
        let requests = [
            request(0, 20, 3),
            request(1, 60, 10), // 70 tokens > 64-token context
            request(2, 10, 2),
            request(3, 40, 60), // 100 tokens > 64-token context
        ];
        let record = engine.run(&requests, &MonotonicClock::start()).unwrap();
        let status: Vec<RequestStatus> = record.requests.iter().map(|r| r.status).collect();
        assert_eq!(
            record.requests[1].error_type.as_deref(),
            Some("context_overflow")
        );
        assert_eq!(status[0], RequestStatus::Ok);
        assert_eq!(status[2], RequestStatus::Ok);
        assert_eq!(
            record.requests[3].error_type.as_deref(),
            Some("context_overflow")
        );
        assert_eq!(record.tokens.len(), 5);
    }

    #[test]
    fn request_larger_than_the_pool_is_rejected_not_stalled() {
        let model = tiny();
        let settings = engine_settings(4096);
        // 4 blocks of 16 tokens: a 100-token prompt can never fit.
        let mut engine = Engine::new(&model, &SchedulerConfig::default(), 4, settings).unwrap();
        let record = engine
            .run(
                &[request(0, 100, 2), request(1, 8, 4)],
                &MonotonicClock::start(),
            )
            .unwrap();
        assert_eq!(record.requests[0].status, RequestStatus::Error);
        assert_eq!(
            record.requests[0].error_type.as_deref(),
            Some("kv_capacity")
        );
        assert_eq!(record.requests[1].status, RequestStatus::Ok);
        assert_eq!(record.requests[1].num_decode_tokens_actual, 4);
    }
}
