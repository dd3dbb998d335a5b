//! Vidur's `OrcaReplicaScheduler`: iteration-level batching without chunking.
//!
//! Every running request (in batch-end order; Orca never sorts it) gets its next token, then
//! queue-head requests are admitted with their whole prompt, while the batch is below
//! `min(max batch size, batch_size_cap)` and the pool can reserve
//! `max_tokens_per_request / block_size` blocks for the newcomer. That reservation is the
//! request's whole possible context, so Orca never grows a reservation and never preempts;
//! the watermark does not apply.
//!
//! Parity note: Vidur takes the max batch size from its memory planner, which also sets the
//! pool to `blocks_per_request × max_batch_size × stages` blocks. We receive the pool size
//! instead and invert that relation (`num_blocks / (blocks_per_request × stages)`, at least
//! 1), which is exact whenever the pool was planned Vidur's way.

use super::state::{Core, Formation};

pub(super) fn next_batch(core: &mut Core, out: &mut Formation) {
    let limits = core.limits;
    while out.items.len() < limits.orca_max_batch_size {
        let Some(slot) = core.running.pop_front() else {
            break;
        };
        out.items
            .push((slot, core.req(slot).unchunked_next_tokens()));
    }
    while let Some(&slot) = core.waiting.front() {
        if out.items.len() == limits.orca_max_batch_size {
            break;
        }
        if core.pool.num_free() < limits.orca_blocks_per_request {
            break;
        }
        core.waiting.pop_front();
        core.admit_with_blocks(slot, limits.orca_blocks_per_request);
        out.items
            .push((slot, core.req(slot).unchunked_next_tokens()));
    }
}
