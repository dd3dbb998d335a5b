//! Batching policies shared by the real engine and the simulator.
//!
//! Pure logic over request and KV-block state: no tensors, no clock, no IO. The real engine
//! (candle, wall clock) and the discrete-event simulator (virtual clock) drive the same
//! [`ReplicaScheduler`], so given the same batch durations they make the same decisions and
//! any real-vs-sim gap is attributable to execution time, not to scheduling.
//!
//! The policies reproduce Vidur 0.0.1's replica schedulers (`vllm`, `sarathi`, `orca`)
//! decision for decision, including their quirks, which are documented on each policy module
//! and on [`ReplicaScheduler`]. [`GlobalScheduler`] reproduces Vidur's cluster-level
//! dispatch.
//!
//! Token accounting (vLLM v1 style, equal to Vidur's): the iteration that finishes a prefill
//! emits output token 0; each later iteration schedules one token and emits the next, so a
//! request with D output tokens takes D−1 decode iterations. Preemption is by recompute: the
//! request's blocks are freed, it goes to the queue front, and when re-admitted it prefills
//! its prompt plus the tokens generated so far; the iteration finishing that emits the next
//! token.
//!
//! ```
//! use simreal::scheduler::{Policy, ReplicaScheduler, RequestSpec, SchedulerConfig};
//!
//! let cfg = SchedulerConfig { policy: Policy::Vllm, ..SchedulerConfig::default() };
//! let mut sched = ReplicaScheduler::new(&cfg, 1024, 1)?;
//! sched
//!     .add_request(RequestSpec {
//!         request_id: 0,
//!         arrival_time_ns: 0,
//!         num_prefill_tokens: 20,
//!         num_decode_tokens: 2,
//!     })
//!     .expect("fits");
//! let prefill = sched.schedule().expect("a prefill batch");
//! assert_eq!(prefill.entries[0].num_tokens, 20);
//! assert_eq!(sched.block_table(0), Some(&[0, 1][..])); // ceil(20 / 16) blocks
//! let outcome = sched.on_batch_end(&prefill);
//! assert_eq!(outcome.tokens[0].token_index, 0);
//! let decode = sched.schedule().expect("a decode batch");
//! assert_eq!(sched.on_batch_end(&decode).completed, [0]);
//! assert!(sched.is_idle());
//! # Ok::<(), simreal::Error>(())
//! ```

mod block_pool;
mod config;
mod global;
mod orca;
mod request;
mod sarathi;
mod state;
mod vllm;

use std::collections::HashMap;

pub use config::{Policy, SchedulerConfig};
pub use global::{GlobalPolicy, GlobalScheduler};

use crate::{Error, Result};
use request::RequestState;
use state::{Core, Formation, Limits};

/// A request as the scheduler sees it on arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestSpec {
    /// Caller-chosen id, unique within this scheduler.
    pub request_id: u64,
    /// Arrival time; orders the running list where Vidur sorts it by arrival.
    pub arrival_time_ns: u64,
    /// Prompt length P (≥ 1).
    pub num_prefill_tokens: u32,
    /// Output tokens D to generate (≥ 1).
    pub num_decode_tokens: u32,
}

/// Why [`ReplicaScheduler::add_request`] refused a request: it could never run to completion
/// on this replica, so the caller should record it as an error instead of waiting forever.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// P or D is zero, or P + D does not fit in `u32`.
    #[error(
        "invalid request lengths (prompt {num_prefill_tokens}, output {num_decode_tokens}): \
         both must be positive and their sum must fit in u32"
    )]
    InvalidLengths {
        num_prefill_tokens: u32,
        num_decode_tokens: u32,
    },
    /// The id is already known to this scheduler.
    #[error("request id {request_id} was already added")]
    DuplicateId { request_id: u64 },
    /// The scheduler already tracks `u32::MAX` requests (it keeps a record of every request
    /// it accepted).
    #[error("this replica scheduler cannot track more than {} requests", u32::MAX)]
    TooManyRequests,
    /// vllm/sarathi: the request's largest possible prefill — its prompt plus all but the
    /// last output token, which is what a preemption just before the last decode recomputes
    /// — needs more blocks than the pool has above the admission watermark. Such a request,
    /// once preempted, could never be re-admitted and would block the queue head forever.
    #[error(
        "needs up to {needed_blocks} KV blocks (prompt + output − 1 tokens) but only \
         {usable_blocks} can be admitted (pool minus watermark)"
    )]
    ExceedsKvPool {
        needed_blocks: u64,
        usable_blocks: u64,
    },
    /// vllm: the request's largest possible prefill (prompt + output − 1 tokens, see
    /// `ExceedsKvPool`) exceeds `max_tokens_in_batch`, so it could never be scheduled.
    #[error("a prefill of up to {num_tokens} tokens exceeds max_tokens_in_batch = {max_tokens_in_batch}")]
    ExceedsMaxTokensInBatch {
        num_tokens: u64,
        max_tokens_in_batch: u32,
    },
    /// orca: prompt + output exceeds the per-request reservation
    /// (`floor(max_tokens_per_request / block_size) × block_size` tokens). Vidur's request
    /// generators clip every request to `max_tokens_per_request`, so Vidur never meets one.
    #[error("prompt + output = {num_tokens} tokens exceeds the {reserved_tokens}-token per-request reservation")]
    ExceedsMaxTokensPerRequest {
        num_tokens: u64,
        reserved_tokens: u64,
    },
}

impl From<Rejection> for Error {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::InvalidLengths { .. }
            | Rejection::DuplicateId { .. }
            | Rejection::TooManyRequests => Error::InvalidInput(rejection.to_string()),
            _ => Error::OutOfRange(rejection.to_string()),
        }
    }
}

/// One request's share of an iteration: the engine feeds positions
/// `num_context_tokens .. num_context_tokens + num_tokens` of the request's known tokens
/// (prompt, then the tokens generated so far) and writes their KV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchEntry {
    pub request_id: u64,
    /// Tokens processed for this request in this iteration.
    pub num_tokens: u32,
    /// Tokens already in the KV cache before this iteration (the first position written).
    pub num_context_tokens: u32,
    /// Part of a prefill or of a recompute after preemption (Vidur: prefill not complete).
    pub is_prefill: bool,
    /// The entry completes all known tokens, so the engine samples an output token for it.
    pub emits_token: bool,
}

/// One iteration, as formed by [`ReplicaScheduler::schedule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledBatch {
    /// 0, 1, 2, … in formation order, per replica scheduler.
    pub batch_id: u64,
    pub entries: Vec<BatchEntry>,
    /// Requests preempted (blocks freed, sent back to the queue) while forming this batch,
    /// or by an earlier `schedule()` call that ended up forming no batch.
    pub preempted: Vec<u64>,
    /// Blocks allocated in the whole pool once this batch was formed.
    pub num_kv_blocks_used: u32,
}

/// An output token produced by a finished iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmittedToken {
    pub request_id: u64,
    /// 0-based and contiguous per request.
    pub token_index: u32,
}

/// What a finished iteration produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// In batch order.
    pub tokens: Vec<EmittedToken>,
    /// Requests that emitted their last token (their blocks are free again).
    pub completed: Vec<u64>,
}

/// A batch handed out and not yet ended.
#[derive(Debug)]
struct InFlight {
    batch_id: u64,
    /// `(slot, num_tokens)` per entry.
    items: Vec<(u32, u32)>,
}

/// The scheduler of one replica, driven by a caller that owns the clock.
///
/// The caller adds requests as they arrive, calls [`schedule`](Self::schedule) until it
/// returns `None`, runs the batches, and reports each one's end with
/// [`on_batch_end`](Self::on_batch_end). Requests in a batch that has not ended are not
/// schedulable; up to `num_pipeline_stages` batches can be in flight (Vidur keeps one per
/// pipeline stage).
///
/// Deviations from Vidur, all confined to states Vidur handles badly (the batches are
/// otherwise Vidur's, request for request and token for token):
/// * A request that could never complete is rejected up front (see [`Rejection`]); Vidur
///   would keep it at the queue head forever.
/// * When forming a batch preempts requests but yields no batch while nothing is in flight
///   (possible only when the watermark is zero and one request fills the pool), Vidur stops
///   until the next arrival; we form again at once, so nothing stalls.
/// * A request preempted mid-prefill (sarathi) is re-prefilled only up to where it was and
///   then walks the rest of its prompt one token per iteration, as in Vidur; but it emits
///   token 0 when its whole prompt is cached, where Vidur counts the end of the shortened
///   re-prefill as its first token.
#[derive(Debug)]
pub struct ReplicaScheduler {
    policy: Policy,
    num_pipeline_stages: usize,
    core: Core,
    index: HashMap<u64, u32>,
    next_batch_id: u64,
    in_flight: Vec<InFlight>,
    spare_items: Vec<Vec<(u32, u32)>>,
    /// Preemptions not yet reported in a batch.
    pending_preempted: Vec<u64>,
}

impl ReplicaScheduler {
    /// A scheduler for a replica with a pool of `num_blocks` KV blocks and
    /// `num_pipeline_stages` stages. Fails on an invalid config, on a pool or pipeline no
    /// request could ever run on, and (vllm, sarathi) when `batch_size_cap` is below the
    /// number of stages, which would make Vidur's micro-batch cap zero.
    pub fn new(
        cfg: &SchedulerConfig,
        num_blocks: usize,
        num_pipeline_stages: usize,
    ) -> Result<Self> {
        cfg.validate()?;
        if num_pipeline_stages == 0 {
            return Err(Error::InvalidInput(
                "num_pipeline_stages must be at least 1".into(),
            ));
        }
        let num_blocks_u32 = u32::try_from(num_blocks)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "num_blocks must be in 1..={}, got {num_blocks}",
                    u32::MAX
                ))
            })?;
        let batch_size_cap = cfg.batch_size_cap as usize;
        let orca_blocks_per_request = cfg.orca_blocks_per_request();
        match cfg.policy {
            Policy::Vllm | Policy::Sarathi => {
                if batch_size_cap < num_pipeline_stages {
                    return Err(Error::config(
                        "batch_size_cap",
                        format!(
                            "{batch_size_cap} is below the {num_pipeline_stages} pipeline \
                             stages; the micro-batch cap batch_size_cap / stages would be 0"
                        ),
                    ));
                }
            }
            Policy::Orca => {
                if orca_blocks_per_request == 0 {
                    return Err(Error::config(
                        "max_tokens_per_request",
                        format!(
                            "{} is below block_size = {}; orca would reserve no blocks",
                            cfg.max_tokens_per_request, cfg.block_size
                        ),
                    ));
                }
                if orca_blocks_per_request > num_blocks_u32 {
                    return Err(Error::OutOfRange(format!(
                        "orca reserves {orca_blocks_per_request} blocks per request but the \
                         pool has only {num_blocks}"
                    )));
                }
            }
        }
        let memory_max_batch_size =
            (num_blocks / (orca_blocks_per_request.max(1) as usize * num_pipeline_stages)).max(1);
        let limits = Limits {
            block_size: cfg.block_size,
            batch_size_cap,
            max_micro_batch_size: batch_size_cap / num_pipeline_stages,
            // Below num_blocks because the fraction is < 1, so fits in u32.
            watermark_blocks: cfg.watermark_blocks(num_blocks) as u32,
            max_tokens_in_batch: cfg.max_tokens_in_batch,
            chunk_size: cfg.chunk_size,
            orca_blocks_per_request,
            orca_max_batch_size: memory_max_batch_size.min(batch_size_cap),
        };
        Ok(ReplicaScheduler {
            policy: cfg.policy,
            num_pipeline_stages,
            core: Core::new(limits, num_blocks_u32),
            index: HashMap::new(),
            next_batch_id: 0,
            in_flight: Vec::with_capacity(num_pipeline_stages),
            spare_items: Vec::new(),
            pending_preempted: Vec::new(),
        })
    }

    /// Queues an arrived request at the back of the queue, or rejects one that could never
    /// complete here (see [`Rejection`] for the exact rules per policy).
    pub fn add_request(&mut self, spec: RequestSpec) -> Result<(), Rejection> {
        self.check_admissible(&spec)?;
        let slot =
            u32::try_from(self.core.requests.len()).map_err(|_| Rejection::TooManyRequests)?;
        self.core.requests.push(RequestState::new(&spec));
        self.index.insert(spec.request_id, slot);
        self.core.waiting.push_back(slot);
        Ok(())
    }

    fn check_admissible(&self, spec: &RequestSpec) -> Result<(), Rejection> {
        let (p, d) = (spec.num_prefill_tokens, spec.num_decode_tokens);
        if p == 0 || d == 0 || p.checked_add(d).is_none() {
            return Err(Rejection::InvalidLengths {
                num_prefill_tokens: p,
                num_decode_tokens: d,
            });
        }
        if self.index.contains_key(&spec.request_id) {
            return Err(Rejection::DuplicateId {
                request_id: spec.request_id,
            });
        }
        let limits = &self.core.limits;
        let block_size = u64::from(limits.block_size);
        let total_tokens = u64::from(p) + u64::from(d);
        // The longest recompute: preempted just before its last decode.
        let max_prefill_tokens = total_tokens - 1;
        match self.policy {
            Policy::Vllm | Policy::Sarathi => {
                let needed_blocks = max_prefill_tokens.div_ceil(block_size);
                let usable_blocks =
                    u64::from(self.core.pool.num_blocks() - limits.watermark_blocks);
                if needed_blocks > usable_blocks {
                    return Err(Rejection::ExceedsKvPool {
                        needed_blocks,
                        usable_blocks,
                    });
                }
                if self.policy == Policy::Vllm
                    && max_prefill_tokens > u64::from(limits.max_tokens_in_batch)
                {
                    return Err(Rejection::ExceedsMaxTokensInBatch {
                        num_tokens: max_prefill_tokens,
                        max_tokens_in_batch: limits.max_tokens_in_batch,
                    });
                }
            }
            Policy::Orca => {
                let reserved_tokens = u64::from(limits.orca_blocks_per_request) * block_size;
                if total_tokens > reserved_tokens {
                    return Err(Rejection::ExceedsMaxTokensPerRequest {
                        num_tokens: total_tokens,
                        reserved_tokens,
                    });
                }
            }
        }
        Ok(())
    }

    /// Forms the next batch, or returns `None` when nothing can run now (all pipeline stages
    /// busy, nothing schedulable, or the pool is full). Call it repeatedly until `None`
    /// after every arrival and every batch end.
    pub fn schedule(&mut self) -> Option<ScheduledBatch> {
        if self.in_flight.len() >= self.num_pipeline_stages {
            return None;
        }
        let mut formation = Formation {
            items: self.spare_items.pop().unwrap_or_default(),
            preempted: std::mem::take(&mut self.pending_preempted),
        };
        loop {
            let preempted_before = formation.preempted.len();
            match self.policy {
                Policy::Vllm => vllm::next_batch(&mut self.core, &mut formation),
                Policy::Sarathi => sarathi::next_batch(&mut self.core, &mut formation),
                Policy::Orca => orca::next_batch(&mut self.core, &mut formation),
            }
            let preempted_now = formation.preempted.len() > preempted_before;
            if !formation.items.is_empty() || !preempted_now || !self.in_flight.is_empty() {
                break;
            }
        }
        if formation.items.is_empty() {
            self.pending_preempted = formation.preempted;
            self.spare_items.push(formation.items);
            return None;
        }

        let entries = formation
            .items
            .iter()
            .map(|&(slot, num_tokens)| {
                let r = self.core.req(slot);
                BatchEntry {
                    request_id: r.id,
                    num_tokens,
                    num_context_tokens: r.num_computed,
                    is_prefill: !r.prefill_done,
                    emits_token: r.emits_after(num_tokens),
                }
            })
            .collect();
        let batch_id = self.next_batch_id;
        self.next_batch_id += 1;
        self.in_flight.push(InFlight {
            batch_id,
            items: formation.items,
        });
        Some(ScheduledBatch {
            batch_id,
            entries,
            preempted: formation.preempted,
            num_kv_blocks_used: self.core.pool.num_allocated(),
        })
    }

    /// Records that `batch` finished: advances each request's tokens, releases the blocks of
    /// completed requests, and makes the others schedulable again (appended to the running
    /// list in batch order, as Vidur does).
    ///
    /// # Panics
    ///
    /// If `batch` is not in flight on this scheduler (never issued by it, or already
    /// ended): that is a bug in the caller, and continuing would corrupt the accounting.
    pub fn on_batch_end(&mut self, batch: &ScheduledBatch) -> BatchOutcome {
        let Some(pos) = self
            .in_flight
            .iter()
            .position(|f| f.batch_id == batch.batch_id)
        else {
            panic!(
                "on_batch_end: batch {} is not in flight on this scheduler",
                batch.batch_id
            );
        };
        let mut finished = self.in_flight.swap_remove(pos);
        let mut outcome = BatchOutcome {
            tokens: Vec::with_capacity(finished.items.len()),
            completed: Vec::new(),
        };
        for &(slot, num_tokens) in &finished.items {
            let r = &mut self.core.requests[slot as usize];
            if let Some(token_index) = r.apply(num_tokens) {
                outcome.tokens.push(EmittedToken {
                    request_id: r.id,
                    token_index,
                });
            }
            if r.is_complete() {
                r.admitted = false;
                self.core.pool.release(&mut r.blocks);
                r.blocks = Vec::new();
                self.core.num_admitted -= 1;
                outcome.completed.push(r.id);
            } else {
                self.core.running.push_back(slot);
            }
        }
        finished.items.clear();
        self.spare_items.push(finished.items);
        outcome
    }

    /// Physical KV block ids of a request, in token order (block `i` holds tokens
    /// `i × block_size ..`). Empty while it waits; `None` for an unknown id.
    pub fn block_table(&self, request_id: u64) -> Option<&[u32]> {
        let &slot = self.index.get(&request_id)?;
        Some(&self.core.req(slot).blocks)
    }

    /// How often a request was preempted (Vidur's `num_restarts`); also after completion.
    pub fn num_preemptions(&self, request_id: u64) -> Option<u32> {
        let &slot = self.index.get(&request_id)?;
        Some(self.core.req(slot).num_preemptions)
    }

    /// The policy this scheduler runs.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Requests queued for admission, including preempted ones (Vidur's
    /// `num_pending_requests`, what the `lor` global scheduler balances).
    pub fn num_waiting(&self) -> usize {
        self.core.waiting.len()
    }

    /// Admitted requests holding KV blocks, in flight or not.
    pub fn num_running(&self) -> usize {
        self.core.num_admitted
    }

    /// Batches handed out by [`schedule`](Self::schedule) and not yet ended.
    pub fn num_in_flight_batches(&self) -> usize {
        self.in_flight.len()
    }

    /// Unallocated KV blocks.
    pub fn num_free_blocks(&self) -> usize {
        self.core.pool.num_free() as usize
    }

    /// Size of the KV pool.
    pub fn num_blocks(&self) -> usize {
        self.core.pool.num_blocks() as usize
    }

    /// Blocks a new admission must leave free (vllm, sarathi; orca ignores it).
    pub fn num_watermark_blocks(&self) -> usize {
        self.core.limits.watermark_blocks as usize
    }

    /// Nothing queued, admitted or in flight.
    pub fn is_idle(&self) -> bool {
        self.core.waiting.is_empty() && self.core.num_admitted == 0 && self.in_flight.is_empty()
    }
}

#[cfg(test)]
mod tests;
