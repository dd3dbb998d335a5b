//! Vidur's `VLLMReplicaScheduler` (vLLM v0 without chunked prefill).
//!
//! One iteration is either **prefill-only** or **decode-only**:
//!
//! 1. New (and restarted) requests are admitted from the queue head, each with its whole
//!    prefill target, while all of these hold (the first failure stops admission, so the
//!    queue is strictly FIFO): its blocks fit above the watermark; the *padded* token count
//!    `len(batch) × max(tokens per request)` stays within `max_tokens_in_batch`; fewer than
//!    `batch_size_cap` requests hold blocks; the batch is below the micro-batch cap
//!    (`batch_size_cap / stages`). If anyone was admitted, that is the batch.
//! 2. Otherwise the running requests, sorted by arrival, each get one decode token, up to the
//!    micro-batch cap. A request needs a free block (see [`Core::can_allocate`]); if there is
//!    none, the request at the back of the running list (the latest arrival) is preempted
//!    and pushed to the queue front, repeatedly; with nobody left, the request itself is.
//!
//! Parity notes: the checks run in Vidur's order, the running list is sorted only here (so
//! its order otherwise is batch-end order, as in Vidur), and victims freed while forming the
//! batch go to the queue front one by one, which leaves the earliest arrival first.

use super::state::{Core, Formation};

pub(super) fn next_batch(core: &mut Core, out: &mut Formation) {
    let limits = core.limits;
    let mut max_tokens: u32 = 0;
    while let Some(&slot) = core.waiting.front() {
        let next_tokens = core.req(slot).unchunked_next_tokens();
        if !core.can_allocate(slot) {
            break;
        }
        let padded_max = max_tokens.max(next_tokens);
        let padded_tokens = (out.items.len() as u64 + 1) * u64::from(padded_max);
        if padded_tokens > u64::from(limits.max_tokens_in_batch) {
            break;
        }
        if core.num_admitted == limits.batch_size_cap {
            break;
        }
        if out.items.len() == limits.max_micro_batch_size {
            break;
        }
        core.waiting.pop_front();
        core.allocate(slot);
        out.items.push((slot, next_tokens));
        max_tokens = padded_max;
    }
    if !out.items.is_empty() {
        return;
    }

    core.sort_running_by_arrival();
    while out.items.len() < limits.max_micro_batch_size {
        let Some(slot) = core.running.pop_front() else {
            break;
        };
        if core.reserve_or_preempt(slot, out) {
            out.items
                .push((slot, core.req(slot).unchunked_next_tokens()));
        }
    }
}
