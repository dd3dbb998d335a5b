//! What the benchmarks share.

use anyhow::{Context, Result};

/// The median; NaN for an empty or non-finite sample (printed as such, never a panic).
#[allow(dead_code)] // not every bench takes medians
pub fn median(v: &[f64]) -> f64 {
    simreal::quantile::median(v).unwrap_or(f64::NAN)
}

/// A count from the environment variable `name`, or `default` when it is unset.
pub fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v} is not a count")),
        Err(_) => Ok(default),
    }
}

/// The stages' synthesized `qwen3_0_6b` f32 weights (`tmp/weights/qwen3_0_6b-0-f32`, seed 0),
/// made on first use, so that the benches and `model=qwen3_0_6b` share one snapshot.
#[cfg(feature = "engine")]
#[allow(dead_code)] // not every bench loads the model
pub fn qwen3_0_6b_weights() -> Result<std::path::PathBuf> {
    use simreal::real_bench::model::{
        random_weights_dir, synthesize_random_weights, Qwen3Config, WEIGHTS_FILE,
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tmp");
    let dir = random_weights_dir(&root, "qwen3_0_6b", 0, "f32");
    if !dir.join(WEIGHTS_FILE).is_file() {
        eprintln!("synthesizing qwen3_0_6b weights into {}", dir.display());
        synthesize_random_weights(&Qwen3Config::qwen3_0_6b(), 0, candle_core::DType::F32, &dir)?;
    }
    Ok(dir)
}

/// A process set up as the timed stages run theirs (two compute threads at real-time
/// priority where permitted; the guard restores it when dropped) and the stages' `qwen3_0_6b`
/// f32 model loaded on the CPU.
#[cfg(feature = "engine")]
#[allow(dead_code)] // not every bench loads the model
pub fn stage_like_qwen3_0_6b() -> Result<(
    simreal::real_bench::model::Qwen3Model,
    simreal::real_bench::threads::TimingGuard,
)> {
    use simreal::real_bench::model::{Qwen3Model, WeightSource};
    use simreal::real_bench::threads::{self, Priority, TimingSettings};
    threads::init(2)?;
    let timing = threads::apply_timing(&TimingSettings {
        priority: Priority::Realtime,
        pin_threads: false,
        lock_memory: false,
        huge_pages: false,
        lift_rt_throttling: true,
    });
    let weights = WeightSource::Dir(qwen3_0_6b_weights()?);
    let model = Qwen3Model::load(&weights, candle_core::DType::F32, &candle_core::Device::Cpu)?;
    Ok((model, timing))
}

/// The two forwards the probe benches time on one KV cache: a decode step of one sequence
/// over [`DECODE_CONTEXT`] cached tokens (weight streaming) and a [`PREFILL_TOKENS`]-token
/// prefill (GEMMs).
#[cfg(feature = "engine")]
#[allow(dead_code)] // not every bench times forwards
pub mod probe_forwards {
    use std::time::{Duration, Instant};

    use anyhow::Result;
    use simreal::real_bench::model::{ForwardBatch, PagedKvCache, Qwen3Model, SequenceInput};

    pub const DECODE_CONTEXT: usize = 128;
    pub const PREFILL_TOKENS: usize = 128;
    const BLOCK: usize = 16;

    /// The forwards' token ids and block tables (the decode's blocks first).
    pub struct Shapes {
        ids: Vec<u32>,
        decode_table: Vec<usize>,
        prefill_table: Vec<usize>,
    }

    impl Shapes {
        pub fn new() -> Shapes {
            let decode_blocks = (DECODE_CONTEXT + 1).div_ceil(BLOCK);
            let blocks = decode_blocks + PREFILL_TOKENS.div_ceil(BLOCK);
            Shapes {
                ids: (0..PREFILL_TOKENS as u32)
                    .map(|i| (i * 7919 + 11) % 151_936)
                    .collect(),
                decode_table: (0..decode_blocks).collect(),
                prefill_table: (decode_blocks..blocks).collect(),
            }
        }

        /// A cache with every block the two forwards use mapped.
        pub fn cache(&self, model: &Qwen3Model) -> Result<PagedKvCache> {
            let blocks = self.decode_table.len() + self.prefill_table.len();
            let mut cache = model.new_kv_cache(blocks, BLOCK)?;
            cache.map_blocks(blocks);
            Ok(cache)
        }

        /// The decode and the prefill batch.
        pub fn batches<'a>(
            &'a self,
            model: &Qwen3Model,
            cache: &PagedKvCache,
        ) -> Result<(ForwardBatch<'a>, ForwardBatch<'a>)> {
            let decode = model.prepare_batch(
                cache,
                &[SequenceInput {
                    token_ids: &self.ids[..1],
                    num_cached_tokens: DECODE_CONTEXT,
                    block_table: &self.decode_table,
                    wants_logits: true,
                }],
            )?;
            let prefill = model.prepare_batch(
                cache,
                &[SequenceInput {
                    token_ids: &self.ids,
                    num_cached_tokens: 0,
                    block_table: &self.prefill_table,
                    wants_logits: true,
                }],
            )?;
            Ok((decode, prefill))
        }
    }

    /// Wall time of one forward and its sampler, ms, followed by the profiler's idle gap
    /// (10 % of it, at least 1 ms).
    pub fn forward_ms(
        model: &Qwen3Model,
        batch: &ForwardBatch<'_>,
        cache: &mut PagedKvCache,
    ) -> Result<f64> {
        let start = Instant::now();
        let logits = model.forward(batch, cache, None)?;
        model.sampler(&logits)?;
        let wall = start.elapsed();
        std::thread::sleep(wall.mul_f64(0.1).max(Duration::from_millis(1)));
        Ok(wall.as_secs_f64() * 1e3)
    }
}
