//! State shared by the policies: requests, the two queues, the block pool, and the KV rules
//! Vidur's vLLM and Sarathi schedulers have in common.

use std::collections::VecDeque;

use super::block_pool::BlockPool;
use super::request::RequestState;

/// Numbers derived once from the config, the pool size and the pipeline depth.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub block_size: u32,
    /// Most admitted (KV-holding) requests (vllm, sarathi).
    pub batch_size_cap: usize,
    /// `batch_size_cap / num_pipeline_stages` (vllm, sarathi).
    pub max_micro_batch_size: usize,
    /// Free blocks a new admission must leave (vllm, sarathi).
    pub watermark_blocks: u32,
    pub max_tokens_in_batch: u32,
    pub chunk_size: u32,
    /// Blocks reserved per orca request.
    pub orca_blocks_per_request: u32,
    /// Orca's batch size bound, `min(memory-derived max batch size, batch_size_cap)`.
    pub orca_max_batch_size: usize,
}

/// What one `schedule()` call is building: `(slot, num_tokens)` per entry, in batch order,
/// and the requests preempted on the way.
#[derive(Debug, Default)]
pub(super) struct Formation {
    pub items: Vec<(u32, u32)>,
    pub preempted: Vec<u64>,
}

/// Everything the policies read and change.
#[derive(Debug)]
pub(super) struct Core {
    pub limits: Limits,
    /// Every accepted request, indexed by slot; a completed request keeps its record (with
    /// its blocks released) so per-request counters can still be read.
    pub requests: Vec<RequestState>,
    /// Vidur's `_request_queue`: new and restarted requests, FIFO, restarts at the front.
    pub waiting: VecDeque<u32>,
    /// Vidur's `_preempted_requests`: admitted requests not in a batch in flight, in the
    /// order Vidur keeps them (appended at batch end; sorted by arrival where Vidur sorts).
    pub running: VecDeque<u32>,
    pub pool: BlockPool,
    /// Vidur's `len(_allocation_map)`.
    pub num_admitted: usize,
    /// Reused buffers for sarathi, so forming a batch does not allocate.
    pub scratch_prefills: Vec<u32>,
    pub scratch_skipped: Vec<u32>,
}

impl Core {
    pub fn new(limits: Limits, num_blocks: u32) -> Self {
        Core {
            limits,
            requests: Vec::new(),
            waiting: VecDeque::new(),
            running: VecDeque::new(),
            pool: BlockPool::new(num_blocks),
            num_admitted: 0,
            scratch_prefills: Vec::new(),
            scratch_skipped: Vec::new(),
        }
    }

    pub fn req(&self, slot: u32) -> &RequestState {
        &self.requests[slot as usize]
    }

    fn blocks_for(&self, tokens: u32) -> u32 {
        tokens.div_ceil(self.limits.block_size)
    }

    /// Vidur's `_can_allocate_request` (vllm, sarathi). A new or restarted request needs its
    /// whole prefill target's blocks *and* must leave the watermark free. An admitted request
    /// needs one free block, whether or not this iteration crosses a block boundary: with a
    /// full pool Vidur preempts even a decode that would not grow. Reproduced as is.
    pub fn can_allocate(&self, slot: u32) -> bool {
        let free = self.pool.num_free();
        let r = self.req(slot);
        if r.admitted {
            return free >= 1;
        }
        let needed = self.blocks_for(r.prefill_target);
        free >= needed && free - needed >= self.limits.watermark_blocks
    }

    /// Vidur's `_allocate_request` (vllm, sarathi): admission reserves
    /// `ceil(prefill_target / block_size)` blocks; afterwards a block is added when the
    /// processed tokens (cached + the one about to be written) outgrow the reservation.
    pub fn allocate(&mut self, slot: u32) {
        let block_size = self.limits.block_size;
        let r = &mut self.requests[slot as usize];
        let needed = if r.admitted {
            // Vidur asserts the shortfall is 0 or 1 token; it is, because decodes grow the
            // processed count by one per iteration.
            r.processed_tokens().div_ceil(block_size)
        } else {
            r.admitted = true;
            self.num_admitted += 1;
            r.prefill_target.div_ceil(block_size)
        };
        let missing = needed.saturating_sub(r.blocks.len() as u32);
        if missing > 0 {
            self.pool.allocate(missing, &mut r.blocks);
        }
    }

    /// Admits a request with a fixed reservation (orca).
    pub fn admit_with_blocks(&mut self, slot: u32, num_blocks: u32) {
        let r = &mut self.requests[slot as usize];
        r.admitted = true;
        self.num_admitted += 1;
        self.pool.allocate(num_blocks, &mut r.blocks);
    }

    /// Vidur's preemption: `restart()`, free the blocks, push to the queue front.
    pub fn preempt(&mut self, slot: u32, out: &mut Formation) {
        let r = &mut self.requests[slot as usize];
        r.restart();
        r.admitted = false;
        self.pool.release(&mut r.blocks);
        self.num_admitted -= 1;
        self.waiting.push_front(slot);
        out.preempted.push(r.id);
    }

    /// Gives the running request `slot` (already popped from `running`) room for one more
    /// token, preempting from the back of `running` (Vidur: `_preempted_requests.pop(-1)`,
    /// the latest arrival once sorted) until a block is free. With nobody left to preempt
    /// the request preempts itself. Returns whether `slot` was allocated.
    pub fn reserve_or_preempt(&mut self, slot: u32, out: &mut Formation) -> bool {
        while !self.can_allocate(slot) {
            match self.running.pop_back() {
                Some(victim) => self.preempt(victim, out),
                None => {
                    self.preempt(slot, out);
                    return false;
                }
            }
        }
        self.allocate(slot);
        true
    }

    /// Python's stable `sort(key=arrived_at)` on `running`.
    pub fn sort_running_by_arrival(&mut self) {
        let requests = &self.requests;
        self.running
            .make_contiguous()
            .sort_by_key(|&slot| requests[slot as usize].arrival_time_ns);
    }
}
