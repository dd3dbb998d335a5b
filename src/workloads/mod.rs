//! Workloads: what requests arrive when, how long they are, and the prompt text they carry.
//!
//! - [`lengths`]: prefill/decode token counts (`fixed`, `uniform`, `zipf`, `trace`).
//! - [`intervals`]: arrival times (`poisson`, `gamma`, `static`, `fixed_interval`, `trace`).
//! - [`trace`]: validated trace CSV readers and Vidur's `trace_replay` generator.
//! - [`tokenizer`]: the tokenizer prompts are measured with (Qwen3's, bundled).
//! - [`prompts`]: real English prompts of exactly the requested token count.
//! - [`summary`]: count, percentiles, rate and duration of a workload.
//!
//! Generators are pure functions of their parameters and the workload seed; each draws from
//! its own named stream ([`rng`]), so changing one generator never shifts another's draws.
//! Semantics follow Vidur's request generators (`vidur/request_generator/`), with the
//! differences documented where they occur. All times are integer nanoseconds and the first
//! request arrives at t = 0.
//!
//! The param structs are the leaves the workload config embeds; writing the files of
//! DESIGN.md is left to `io` and the `workload` stage (`crate::stages::workload`).

#![warn(missing_docs)]

pub mod intervals;
pub mod lengths;
#[cfg(feature = "prompts")]
pub mod prompts;
pub mod rng;
pub mod summary;
pub mod tokenizer;
pub mod trace;

use serde::{Deserialize, Serialize};

pub use intervals::{generate_arrivals_ns, IntervalsConfig};
pub use lengths::{generate_lengths, LengthsConfig};
#[cfg(feature = "prompts")]
pub use prompts::{Prompt, PromptSpec, PromptSynthesizer};
pub use summary::{summarize, TokenStats, WorkloadSummary};
#[cfg(feature = "prompts")]
pub use tokenizer::Tokenizer;
pub use tokenizer::TokenizerSource;
pub use trace::{replay_trace, TraceReplayConfig};

use crate::{Error, Result};

/// Token counts of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestLengths {
    /// Prompt tokens.
    pub num_prefill_tokens: u32,
    /// Output tokens to generate.
    pub num_decode_tokens: u32,
}

impl RequestLengths {
    /// Prompt plus output tokens: the context the request needs at its end.
    pub fn total_tokens(&self) -> u32 {
        self.num_prefill_tokens + self.num_decode_tokens
    }
}

/// An in-memory workload: request `i` arrives at `arrivals_ns[i]` with `lengths[i]`.
/// Request ids are the indices; arrivals are non-decreasing and the first is 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    /// Arrival time of each request, integer ns from the trace origin.
    pub arrivals_ns: Vec<u64>,
    /// Token counts of each request.
    pub lengths: Vec<RequestLengths>,
}

impl Workload {
    /// A workload from its parts, checking that they fit together (same count, arrivals
    /// non-decreasing from 0, at least one token each way).
    pub fn new(arrivals_ns: Vec<u64>, lengths: Vec<RequestLengths>) -> Result<Self> {
        if arrivals_ns.len() != lengths.len() {
            return Err(Error::InvalidInput(format!(
                "{} arrival times for {} request lengths",
                arrivals_ns.len(),
                lengths.len()
            )));
        }
        if let Some(&first) = arrivals_ns.first() {
            if first != 0 {
                return Err(Error::InvalidInput(format!(
                    "the first request arrives at {first} ns; it must arrive at 0"
                )));
            }
        }
        if let Some(i) = arrivals_ns.windows(2).position(|w| w[1] < w[0]) {
            return Err(Error::InvalidInput(format!(
                "request {} arrives before request {i}",
                i + 1
            )));
        }
        if let Some(i) = lengths
            .iter()
            .position(|l| l.num_prefill_tokens == 0 || l.num_decode_tokens == 0)
        {
            return Err(Error::InvalidInput(format!(
                "request {i} has {:?}; both counts must be >= 1",
                lengths[i]
            )));
        }
        Ok(Self {
            arrivals_ns,
            lengths,
        })
    }

    /// `num_requests` requests from a length generator and an interval generator at `qps`,
    /// both seeded by `seed` (independently), within a `max_context_tokens` context.
    pub fn synthetic(
        lengths: &LengthsConfig,
        intervals: &IntervalsConfig,
        qps: f64,
        num_requests: usize,
        seed: u64,
        max_context_tokens: u32,
    ) -> Result<Self> {
        let lengths = generate_lengths(lengths, num_requests, seed, max_context_tokens)?;
        let arrivals_ns = generate_arrivals_ns(intervals, qps, num_requests, seed)?;
        Self::new(arrivals_ns, lengths)
    }

    /// Number of requests.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    /// Whether there are no requests.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// Gaps between consecutive arrivals, 0 for request 0: the `inter_arrival_ns` column of
    /// `trace_intervals.csv`, whose running sum is `arrivals_ns`.
    pub fn inter_arrivals_ns(&self) -> Vec<u64> {
        let mut previous = 0;
        self.arrivals_ns
            .iter()
            .map(|&t| {
                // Non-decreasing by construction, so this never saturates.
                let gap = t.saturating_sub(previous);
                previous = t;
                gap
            })
            .collect()
    }

    /// One prompt per request, `prompt_id` = request id.
    #[cfg(feature = "prompts")]
    pub fn prompt_specs(&self) -> Vec<PromptSpec> {
        self.lengths
            .iter()
            .zip(0u64..)
            .map(|(l, prompt_id)| PromptSpec {
                prompt_id,
                num_tokens: l.num_prefill_tokens,
            })
            .collect()
    }

    /// Summary statistics; fails for an empty workload.
    pub fn summary(&self) -> Result<WorkloadSummary> {
        summarize(&self.arrivals_ns, &self.lengths)
    }
}

/// `Error::Config` at `key` unless `value` is finite and > 0.
pub(crate) fn ensure_positive_finite(key: &str, value: f64) -> Result<()> {
    if !value.is_finite() || value <= 0.0 {
        return Err(Error::config(
            key,
            format!("must be finite and > 0, got {value}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len(p: u32, d: u32) -> RequestLengths {
        RequestLengths {
            num_prefill_tokens: p,
            num_decode_tokens: d,
        }
    }

    #[test]
    fn new_checks_consistency() {
        assert!(Workload::new(vec![0, 5], vec![len(1, 1)]).is_err());
        assert!(Workload::new(vec![1], vec![len(1, 1)]).is_err());
        assert!(Workload::new(vec![0, 5, 4], vec![len(1, 1); 3]).is_err());
        assert!(Workload::new(vec![0], vec![len(0, 1)]).is_err());
        let w = Workload::new(vec![0, 0, 7], vec![len(3, 1), len(1, 2), len(5, 5)]).unwrap();
        assert_eq!(w.inter_arrivals_ns(), vec![0, 0, 7]);
        #[cfg(feature = "prompts")]
        assert_eq!(
            w.prompt_specs()[2],
            PromptSpec {
                prompt_id: 2,
                num_tokens: 5
            }
        );
    }

    #[test]
    fn streams_are_independent() {
        let lengths = LengthsConfig::Uniform {
            min_tokens: 64,
            max_tokens: None,
            prefill_to_decode_ratio: 4.0,
        };
        let a = Workload::synthetic(
            &lengths,
            &IntervalsConfig::Poisson {
                max_gap_mean_multiple: None,
            },
            2.0,
            50,
            9,
            2048,
        )
        .unwrap();
        let b = Workload::synthetic(
            &lengths,
            &IntervalsConfig::Gamma { cv: 3.0 },
            2.0,
            50,
            9,
            2048,
        )
        .unwrap();
        // Another interval generator leaves the lengths untouched.
        assert_eq!(a.lengths, b.lengths);
        assert_ne!(a.arrivals_ns, b.arrivals_ns);
        assert_eq!(a.arrivals_ns[0], 0);
    }
}
