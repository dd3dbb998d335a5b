//! Per-request state and its token accounting.
//!
//! Two views of one request are kept consistent here:
//!
//! * the engine's: `num_computed` tokens have KV in the cache, the request knows its prompt
//!   plus `num_generated` output tokens, and an iteration that brings `num_computed` up to all
//!   known tokens samples the next output token;
//! * Vidur's (`vidur/entities/request.py`): a prefill target (`num_prefill_tokens`, rewritten
//!   by `restart()`), `is_prefill_complete`, and `num_processed_tokens`, which counts the
//!   token produced by the prefill as processed. Here that is `num_computed + prefill_done`.
//!
//! The schedulers decide with Vidur's view, so their decisions are Vidur's; the engine's view
//! says which entries emit a token. The two agree except in one case Vidur gets wrong for an
//! engine: a restart of a *partially prefilled* request. Vidur then sets the prefill target
//! to the tokens processed so far (less than the prompt) and walks the rest of the prompt one
//! token per iteration as "decodes", counting the end of the short re-prefill as the first
//! token. We schedule the same tokens in the same iterations but emit token 0 only when the
//! whole prompt is in the cache; so in that case our first-token time is later than Vidur's
//! `prefill_completed_at`, while iteration count, batch shapes and KV use are identical.

use super::RequestSpec;

/// Scheduler-side state of one request.
#[derive(Debug, Clone)]
pub(super) struct RequestState {
    pub id: u64,
    pub arrival_time_ns: u64,
    /// The prompt as submitted (P).
    pub num_prefill_tokens: u32,
    /// Output tokens to produce (D).
    pub num_decode_tokens: u32,
    /// Output tokens emitted so far; the next one emitted has this index.
    pub num_generated: u32,
    /// Tokens whose KV is in the cache (0 after a restart).
    pub num_computed: u32,
    /// Vidur's `num_prefill_tokens` in this incarnation: P at first, after a restart the
    /// tokens processed before it (so a recompute re-prefills prompt + generated tokens).
    pub prefill_target: u32,
    /// Vidur's `is_prefill_complete`: from now on each iteration schedules one token.
    pub prefill_done: bool,
    /// Holds KV blocks (Vidur: `id in _allocation_map`).
    pub admitted: bool,
    pub num_preemptions: u32,
    /// Physical KV block ids, in token order.
    pub blocks: Vec<u32>,
}

impl RequestState {
    pub fn new(spec: &RequestSpec) -> Self {
        RequestState {
            id: spec.request_id,
            arrival_time_ns: spec.arrival_time_ns,
            num_prefill_tokens: spec.num_prefill_tokens,
            num_decode_tokens: spec.num_decode_tokens,
            num_generated: 0,
            num_computed: 0,
            prefill_target: spec.num_prefill_tokens,
            prefill_done: false,
            admitted: false,
            num_preemptions: 0,
            blocks: Vec::new(),
        }
    }

    /// Vidur's `num_processed_tokens`: the KV-cached tokens plus, once the prefill is done,
    /// the sampled token that is not yet in the cache.
    pub fn processed_tokens(&self) -> u32 {
        self.num_computed + u32::from(self.prefill_done)
    }

    /// Tokens for the next iteration when prefills are not chunked (Vidur's base
    /// `_get_request_next_num_tokens`): the whole prefill target, or 1 once it is done.
    pub fn unchunked_next_tokens(&self) -> u32 {
        if self.prefill_done {
            1
        } else {
            self.prefill_target
        }
    }

    /// Prefill tokens not yet computed in this incarnation.
    pub fn remaining_prefill_tokens(&self) -> u32 {
        self.prefill_target.saturating_sub(self.num_computed)
    }

    /// Whether scheduling `num_tokens` now completes every known token, so the engine
    /// samples the next output token from this entry.
    pub fn emits_after(&self, num_tokens: u32) -> bool {
        self.num_computed + num_tokens == self.num_prefill_tokens + self.num_generated
    }

    /// Applies one finished iteration of `num_tokens`; returns the index of the token it
    /// emitted, if any.
    pub fn apply(&mut self, num_tokens: u32) -> Option<u32> {
        let emits = self.emits_after(num_tokens);
        self.num_computed += num_tokens;
        if !self.prefill_done && self.num_computed == self.prefill_target {
            self.prefill_done = true;
        }
        if emits {
            self.num_generated += 1;
            Some(self.num_generated - 1)
        } else {
            None
        }
    }

    pub fn is_complete(&self) -> bool {
        self.num_generated == self.num_decode_tokens
    }

    /// Vidur's `restart()`: the tokens processed so far become the new prefill target and
    /// the cache is dropped. The caller frees the blocks.
    pub fn restart(&mut self) {
        self.prefill_target = self.processed_tokens();
        self.num_computed = 0;
        self.prefill_done = false;
        self.num_preemptions += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(p: u32, d: u32) -> RequestState {
        RequestState::new(&RequestSpec {
            request_id: 7,
            arrival_time_ns: 0,
            num_prefill_tokens: p,
            num_decode_tokens: d,
        })
    }

    #[test]
    fn prefill_emits_token_zero_then_one_per_decode() {
        let mut r = request(10, 3);
        assert_eq!(r.unchunked_next_tokens(), 10);
        assert_eq!(r.apply(10), Some(0));
        assert!(r.prefill_done);
        assert_eq!(r.processed_tokens(), 11);
        assert_eq!(r.unchunked_next_tokens(), 1);
        assert_eq!(r.apply(1), Some(1));
        assert!(!r.is_complete());
        assert_eq!(r.apply(1), Some(2));
        assert!(r.is_complete());
        assert_eq!(r.num_computed, 12); // P + D - 1: the last token never enters the cache
    }

    #[test]
    fn chunks_emit_only_at_the_end_of_the_prompt() {
        let mut r = request(10, 1);
        assert_eq!(r.apply(4), None);
        assert_eq!(r.remaining_prefill_tokens(), 6);
        assert_eq!(r.apply(6), Some(0));
        assert!(r.is_complete());
    }

    #[test]
    fn restart_after_decodes_recomputes_prompt_plus_generated() {
        let mut r = request(10, 5);
        r.apply(10);
        r.apply(1);
        r.apply(1); // tokens 0, 1, 2 emitted; KV holds 12 tokens
        r.restart();
        assert_eq!(r.num_preemptions, 1);
        assert_eq!((r.prefill_target, r.num_computed), (13, 0));
        assert_eq!(r.unchunked_next_tokens(), 13);
        assert!(r.emits_after(13));
        assert_eq!(r.apply(13), Some(3));
        assert_eq!(r.apply(1), Some(4));
        assert!(r.is_complete());
    }

    #[test]
    fn restart_mid_prefill_follows_vidur_but_emits_at_the_prompt_end() {
        let mut r = request(10, 2);
        r.apply(4);
        r.restart();
        assert_eq!(r.prefill_target, 4); // Vidur: num_prefill_tokens = num_processed_tokens
        assert_eq!(r.apply(4), None);
        assert!(r.prefill_done);
        assert_eq!(r.processed_tokens(), 5); // what Vidur holds
        let mut emitted = Vec::new();
        for _ in 0..7 {
            assert_eq!(r.unchunked_next_tokens(), 1);
            emitted.push(r.apply(1));
        }
        // Vidur runs P + D - 4 = 8 iterations in total (1 re-prefill + 7 steps) as well.
        assert_eq!(emitted[..5], [None; 5]);
        assert_eq!(emitted[5..], [Some(0), Some(1)]);
        assert!(r.is_complete());
        assert_eq!(r.processed_tokens(), 12); // Vidur completes at P + D
    }
}
