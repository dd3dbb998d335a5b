//! Vidur's `SarathiReplicaScheduler` (Sarathi-Serve chunked prefill).
//!
//! One token budget per iteration, `chunk_size`, shared by decodes and prefill chunks:
//!
//! 1. The running list is walked from the front up to the micro-batch cap. Partially
//!    prefilled requests are set aside; every decode gets one token, needing a free block
//!    and preempting the back of the running list as vLLM does. Decodes are **not** limited
//!    by the budget: they count against it, so many decodes can leave nothing for prefills.
//! 2. The set-aside prefills, in the order met, get `min(remaining prefill, budget left)`
//!    tokens; those that get none are skipped and return to the running list's front.
//! 3. The running list is stably sorted by arrival.
//! 4. Queue-head requests are admitted while fewer than `batch_size_cap` requests hold
//!    blocks, the batch is not at the micro-batch cap, the whole prefill's blocks fit above
//!    the watermark, and some budget is left; each gets a chunk of what is left.
//!
//! Parity notes, reproduced on purpose:
//! * Step 2 does not check the micro-batch cap, and step 4 tests it with equality (Vidur's
//!   `len(requests) == cap`), so with pipeline parallelism a batch can exceed
//!   `batch_size_cap / stages` once set-aside prefills push it past the cap. With one stage
//!   the `batch_size_cap` bound on admitted requests still caps every batch.
//! * The running list is only sorted after step 3, so at the next call it is in "sorted
//!   leftovers, then batch-end order"; victims are taken from its back in that order.
//! * A partially prefilled request can be a victim; see `request.rs` for how its restart is
//!   accounted.

use super::state::{Core, Formation};

pub(super) fn next_batch(core: &mut Core, out: &mut Formation) {
    let limits = core.limits;
    let mut prefills = std::mem::take(&mut core.scratch_prefills);
    let mut skipped = std::mem::take(&mut core.scratch_skipped);
    prefills.clear();
    skipped.clear();
    let mut num_batch_tokens: u32 = 0;

    while out.items.len() < limits.max_micro_batch_size {
        let Some(slot) = core.running.pop_front() else {
            break;
        };
        if !core.req(slot).prefill_done {
            prefills.push(slot);
            continue;
        }
        if core.reserve_or_preempt(slot, out) {
            num_batch_tokens += 1;
            out.items.push((slot, 1));
        }
    }

    for &slot in &prefills {
        let budget_left = limits.chunk_size.saturating_sub(num_batch_tokens);
        let chunk = core.req(slot).remaining_prefill_tokens().min(budget_left);
        if chunk == 0 {
            skipped.push(slot);
            continue;
        }
        num_batch_tokens += chunk;
        out.items.push((slot, chunk));
    }

    for &slot in skipped.iter().rev() {
        core.running.push_front(slot);
    }
    core.sort_running_by_arrival();

    while let Some(&slot) = core.waiting.front() {
        if core.num_admitted == limits.batch_size_cap {
            break;
        }
        if out.items.len() == limits.max_micro_batch_size {
            break;
        }
        if !core.can_allocate(slot) {
            break;
        }
        let budget_left = limits.chunk_size.saturating_sub(num_batch_tokens);
        let chunk = core.req(slot).remaining_prefill_tokens().min(budget_left);
        if chunk == 0 {
            break;
        }
        core.waiting.pop_front();
        core.allocate(slot);
        num_batch_tokens += chunk;
        out.items.push((slot, chunk));
    }

    core.scratch_prefills = prefills;
    core.scratch_skipped = skipped;
}
