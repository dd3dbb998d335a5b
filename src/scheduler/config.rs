//! `SchedulerConfig`: the replica scheduler's knobs, under Vidur's names and defaults.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Which replica scheduler to run (Vidur's `--replica_scheduler_config_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// vLLM v0: whole-prompt prefill batches first, otherwise a decode-only batch. As in
    /// Vidur, a decode demands one free block even when its token still fits its last
    /// block, so a full pool preempts the latest arrival.
    Vllm,
    /// Sarathi-Serve: chunked prefills share one `chunk_size` budget with the decodes.
    /// As in Vidur, decodes are never cut by the budget, and with pipeline parallelism a
    /// batch can exceed the micro-batch cap by the partially prefilled requests.
    Sarathi,
    /// Orca: iteration-level batching without chunking, full-context KV reservation, no
    /// preemption. Its max batch size is `num_blocks / (blocks per request × stages)`
    /// (Vidur's memory-planner value when the pool was planned Vidur's way).
    Orca,
}

impl Policy {
    /// The name used in configs and outputs (`vllm`, `sarathi`, `orca`).
    pub fn name(self) -> &'static str {
        match self {
            Policy::Vllm => "vllm",
            Policy::Sarathi => "sarathi",
            Policy::Orca => "orca",
        }
    }
}

/// Knobs of one replica scheduler, named and defaulted as Vidur 0.0.1 names them.
///
/// The KV pool size (`num_blocks`) and the number of pipeline stages are not here: the caller
/// derives them from memory planning and passes them to
/// [`ReplicaScheduler::new`](super::ReplicaScheduler::new).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Batching policy; Vidur's default is `sarathi`.
    pub policy: Policy,
    /// Most requests holding KV blocks at once (vllm, sarathi) or in one batch (orca).
    /// With pipeline parallelism a micro-batch holds at most `batch_size_cap / stages`.
    pub batch_size_cap: u32,
    /// Tokens per KV block.
    pub block_size: u32,
    /// Blocks kept free when admitting a new request, as a fraction of the pool
    /// (truncated to whole blocks, as Vidur's `int()` does). Zero disables the watermark.
    pub watermark_blocks_fraction: f64,
    /// vllm only: bound on `len(batch) × max(tokens of one request)`, the padded token count.
    pub max_tokens_in_batch: u32,
    /// sarathi only: the per-iteration token budget shared by decodes and prefill chunks.
    pub chunk_size: u32,
    /// orca only: every admitted request reserves `max_tokens_per_request / block_size`
    /// blocks (Vidur's request-generator `max_tokens`), its whole possible context.
    pub max_tokens_per_request: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            policy: Policy::Sarathi,
            batch_size_cap: 128,
            block_size: 16,
            watermark_blocks_fraction: 0.01,
            max_tokens_in_batch: 4096,
            chunk_size: 512,
            max_tokens_per_request: 4096,
        }
    }
}

impl SchedulerConfig {
    /// Checks every knob, naming the offending key: integer knobs must be positive, the
    /// watermark fraction finite and in `[0, 1)`. Knobs of other policies are checked too, so
    /// a config stays valid when only `policy` is switched.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("batch_size_cap", self.batch_size_cap),
            ("block_size", self.block_size),
            ("max_tokens_in_batch", self.max_tokens_in_batch),
            ("chunk_size", self.chunk_size),
            ("max_tokens_per_request", self.max_tokens_per_request),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(Error::config(key, "must be a positive integer, got 0"));
            }
        }
        let fraction = self.watermark_blocks_fraction;
        if !fraction.is_finite() || !(0.0..1.0).contains(&fraction) {
            return Err(Error::config(
                "watermark_blocks_fraction",
                format!("must be a finite fraction in [0, 1), got {fraction}"),
            ));
        }
        Ok(())
    }

    /// Blocks an orca request reserves at admission: `floor(max_tokens_per_request /
    /// block_size)`, Vidur's `_max_blocks_per_sequence`.
    pub fn orca_blocks_per_request(&self) -> u32 {
        self.max_tokens_per_request / self.block_size.max(1)
    }

    /// The admission watermark in blocks for a pool of `num_blocks`:
    /// `int(watermark_blocks_fraction × num_blocks)`, as Vidur computes it.
    pub fn watermark_blocks(&self, num_blocks: usize) -> usize {
        // f64 product then truncation: bit-identical to Python's `int(fraction * num_blocks)`.
        (self.watermark_blocks_fraction * num_blocks as f64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_vidurs() {
        let cfg = SchedulerConfig::default();
        assert_eq!(cfg.policy, Policy::Sarathi);
        assert_eq!(cfg.batch_size_cap, 128);
        assert_eq!(cfg.block_size, 16);
        assert_eq!(cfg.watermark_blocks_fraction, 0.01);
        assert_eq!(cfg.max_tokens_in_batch, 4096);
        assert_eq!(cfg.chunk_size, 512);
        assert_eq!(cfg.max_tokens_per_request, 4096);
        assert_eq!(cfg.orca_blocks_per_request(), 256);
        cfg.validate().unwrap();
    }

    #[test]
    fn watermark_truncates_like_python_int() {
        let cfg = SchedulerConfig::default();
        assert_eq!(cfg.watermark_blocks(7424), 74); // 74.24
        assert_eq!(cfg.watermark_blocks(100), 1);
        assert_eq!(cfg.watermark_blocks(99), 0); // 0.99
    }

    #[test]
    fn deserializes_partial_json_with_defaults() {
        let cfg: SchedulerConfig =
            serde_json::from_str(r#"{"policy": "vllm", "chunk_size": 256}"#).unwrap();
        assert_eq!(cfg.policy, Policy::Vllm);
        assert_eq!(cfg.chunk_size, 256);
        assert_eq!(cfg.batch_size_cap, 128);
        let back: SchedulerConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn rejects_unknown_keys_and_policies() {
        let err = serde_json::from_str::<SchedulerConfig>(r#"{"chunk_sise": 256}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("chunk_sise"), "{err}");
        let err = serde_json::from_str::<SchedulerConfig>(r#"{"policy": "Sarathi"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Sarathi"), "{err}");
        assert!(serde_json::from_str::<SchedulerConfig>(r#"{"block_size": -16}"#).is_err());
    }

    fn config_key(err: Error) -> String {
        match err {
            Error::Config { key, .. } => key,
            other => panic!("expected a config error, got {other}"),
        }
    }

    #[test]
    fn validate_names_the_offending_key() {
        type Breaker = fn(&mut SchedulerConfig);
        let cases: [(&str, Breaker); 5] = [
            ("batch_size_cap", |c| c.batch_size_cap = 0),
            ("block_size", |c| c.block_size = 0),
            ("max_tokens_in_batch", |c| c.max_tokens_in_batch = 0),
            ("chunk_size", |c| c.chunk_size = 0),
            ("max_tokens_per_request", |c| c.max_tokens_per_request = 0),
        ];
        for (key, break_it) in cases {
            let mut cfg = SchedulerConfig::default();
            break_it(&mut cfg);
            assert_eq!(config_key(cfg.validate().unwrap_err()), key);
        }
        for bad in [f64::NAN, f64::INFINITY, -0.01, 1.0] {
            let cfg = SchedulerConfig {
                watermark_blocks_fraction: bad,
                ..SchedulerConfig::default()
            };
            assert_eq!(
                config_key(cfg.validate().unwrap_err()),
                "watermark_blocks_fraction"
            );
        }
        let no_watermark = SchedulerConfig {
            watermark_blocks_fraction: 0.0,
            ..SchedulerConfig::default()
        };
        no_watermark.validate().unwrap();
    }
}
