//! Qwen3 on candle with a flattened batch and a paged KV cache: the ground truth the engine
//! runs and the profiler times. On the CPU, attention is a hand-written paged kernel; on CUDA,
//! decodes run our paged CUDA kernel and the rest candle tensor ops ([`AttentionPath`]).
//!
//! - [`Qwen3Config`]: architecture read from a Hugging Face `config.json`, derived sizes.
//! - [`Qwen3Model`]: the forward pass, one public method per op ([`Op`]), timed through an
//!   optional [`OpTimer`].
//! - [`PagedKvCache`]: per-layer K/V pools addressed by the scheduler's block tables, in the
//!   layout of one [`AttentionPath`].
//! - [`SequenceInput`] / [`ForwardBatch`]: one engine iteration, several sequences flattened.
//! - [`WeightSource`], [`synthesize_random_weights`]: checkpoints on disk or seeded random ones.
//!
//! ```no_run
//! # use simreal::real_bench::model::*;
//! # fn main() -> simreal::Result<()> {
//! use candle_core::{DType, Device};
//! let source = WeightSource::Random { seed: 1, config: Qwen3Config::tiny() };
//! let model = Qwen3Model::load(&source, DType::F32, &Device::Cpu)?;
//! let mut cache = model.new_kv_cache(64, 16)?;
//! let prompt = [1u32, 2, 3];
//! let seq = SequenceInput { token_ids: &prompt, num_cached_tokens: 0, block_table: &[7], wants_logits: true };
//! let logits = model.forward_seqs(&[seq], &mut cache, None)?;
//! let next = model.sampler(&logits)?;
//! # Ok(()) }
//! ```

mod batch;
mod config;
#[cfg(feature = "cuda")]
mod cuda_attention;
pub mod kernels;
mod kv_cache;
#[allow(clippy::module_inception)]
mod model;
mod tensor_attention;
mod timer;
mod weights;

pub use batch::{ForwardBatch, SequenceInput};
pub use config::{Qwen3Config, QWEN3_ARCHITECTURE, QWEN3_MODEL_TYPE};
pub use kernels::tensors::{set_small_m_max_rows, small_m_max_rows, SMALL_M_MAX_ROWS};
pub use kv_cache::{AttentionPath, PagedKvCache};
pub use model::{AttnOutput, Qwen3Model};
pub use timer::{OpTimer, OpTotals};
pub use weights::{
    random_weights, random_weights_dir, sha256_file, synthesize_random_weights, WeightSource,
    CONFIG_FILE, RANDOM_INIT_STD, WEIGHTS_FILE, WEIGHTS_INDEX_FILE,
};
