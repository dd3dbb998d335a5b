//! One engine iteration as the model sees it: several sequences, each with this iteration's
//! tokens, flattened into one token dimension.

use candle_core::{Device, Tensor};

use super::config::Qwen3Config;
use super::kernels::attention::AttnSeq;
use super::kv_cache::{AttentionPath, PagedKvCache};
use super::tensor_attention::{TensorAttnDims, TensorAttnMeta, PREFILL_TILE_ROWS};
use crate::{ensure, Error, Result};

/// One sequence's part of an iteration, as the scheduler decided it.
#[derive(Debug, Clone, Copy)]
pub struct SequenceInput<'a> {
    /// Tokens to process now: a whole prompt, a prefill chunk, or the one token of a decode.
    pub token_ids: &'a [u32],
    /// Tokens of this sequence already in the KV cache (the position of `token_ids[0]`).
    pub num_cached_tokens: usize,
    /// Physical KV blocks of this sequence, logical block order; must cover
    /// `num_cached_tokens + token_ids.len()` tokens.
    pub block_table: &'a [usize],
    /// Whether to return a logits row (from the last token) for this sequence.
    pub wants_logits: bool,
}

/// A validated, flattened iteration ready for [`super::Qwen3Model::forward`].
///
/// Rows are ordered prefill sequences first (those with more than one token this iteration),
/// then single-token sequences, each group in input order, so that both attention kernels
/// see contiguous row ranges. Logits rows come back in input order regardless.
#[derive(Debug)]
pub struct ForwardBatch<'a> {
    pub(crate) prefill: Vec<AttnSeq<'a>>,
    pub(crate) decode: Vec<AttnSeq<'a>>,
    /// Per row, `(physical_block, slot)` where its K/V goes.
    pub(crate) slots: Vec<(usize, usize)>,
    /// Slot ids and masks on the device, when the cache is in the tensor-op layout.
    pub(crate) tensor_meta: Option<TensorAttnMeta>,
    token_ids: Tensor,
    pub(crate) cos: Tensor,
    pub(crate) sin: Tensor,
    logits_rows: Tensor,
    logits_seq_indices: Vec<usize>,
    num_tokens: usize,
    num_prefill_tokens: usize,
    kv_context_tokens: usize,
}

impl<'a> ForwardBatch<'a> {
    /// Validates `seqs` against the model config and cache and lays out the batch. `rope_cos`
    /// and `rope_sin` are the model's `[max_positions, head_dim / 2]` tables.
    pub(crate) fn new(
        cfg: &Qwen3Config,
        cache: &PagedKvCache,
        seqs: &[SequenceInput<'a>],
        rope_cos: &Tensor,
        rope_sin: &Tensor,
        device: &Device,
    ) -> Result<Self> {
        ensure!(!seqs.is_empty(), InvalidInput: "a forward batch needs at least one sequence");
        ensure!(cache.matches(cfg), Mismatch: "KV cache shape does not match the model config");
        let bs = cache.block_size();
        for (i, s) in seqs.iter().enumerate() {
            let n = s.token_ids.len();
            ensure!(n > 0, InvalidInput: "sequence {i} has no tokens this iteration");
            let end = s.num_cached_tokens + n;
            ensure!(
                end <= cfg.max_position_embeddings,
                OutOfRange: "sequence {i} reaches position {end}, beyond max_position_embeddings {}", cfg.max_position_embeddings
            );
            let needed = end.div_ceil(bs);
            ensure!(
                s.block_table.len() >= needed,
                InvalidInput: "sequence {i} needs {needed} KV blocks for {end} tokens, its block table has {}", s.block_table.len()
            );
            if let Some(b) = s.block_table[..needed]
                .iter()
                .find(|b| **b >= cache.num_blocks())
            {
                return Err(Error::OutOfRange(format!(
                    "sequence {i}: block id {b} is beyond the cache's {} blocks",
                    cache.num_blocks()
                )));
            }
            if let Some(t) = s.token_ids.iter().find(|t| **t as usize >= cfg.vocab_size) {
                return Err(Error::OutOfRange(format!(
                    "sequence {i}: token id {t} is beyond the vocabulary ({})",
                    cfg.vocab_size
                )));
            }
        }

        let order: Vec<usize> = (0..seqs.len())
            .filter(|&i| seqs[i].token_ids.len() > 1)
            .chain((0..seqs.len()).filter(|&i| seqs[i].token_ids.len() == 1))
            .collect();
        let num_tokens: usize = seqs.iter().map(|s| s.token_ids.len()).sum();
        let mut ids = Vec::with_capacity(num_tokens);
        let mut positions = Vec::with_capacity(num_tokens);
        let mut slots = Vec::with_capacity(num_tokens);
        let (mut prefill, mut decode) = (Vec::new(), Vec::new());
        let mut last_row = vec![0u32; seqs.len()];
        for &i in &order {
            let s = &seqs[i];
            let attn = AttnSeq {
                row_offset: ids.len(),
                num_rows: s.token_ids.len(),
                num_cached: s.num_cached_tokens,
                block_table: s.block_table,
            };
            for (t, &id) in s.token_ids.iter().enumerate() {
                let pos = s.num_cached_tokens + t;
                ids.push(id);
                positions.push(pos as u32);
                slots.push((s.block_table[pos / bs], pos % bs));
            }
            last_row[i] = (ids.len() - 1) as u32;
            if s.token_ids.len() > 1 {
                prefill.push(attn);
            } else {
                decode.push(attn);
            }
        }
        let tensor_meta = match cache.attention_path() {
            AttentionPath::CpuKernel => None,
            path @ (AttentionPath::TensorOps | AttentionPath::CudaKernels) => {
                Some(TensorAttnMeta::new(
                    TensorAttnDims::new(cfg, bs),
                    slots.iter().map(|&(b, s)| (b * bs + s) as u32).collect(),
                    &prefill,
                    &decode,
                    PREFILL_TILE_ROWS,
                    path,
                    device,
                )?)
            }
        };
        let logits_seq_indices: Vec<usize> =
            (0..seqs.len()).filter(|&i| seqs[i].wants_logits).collect();
        let rows: Vec<u32> = logits_seq_indices.iter().map(|&i| last_row[i]).collect();
        let positions = Tensor::from_vec(positions, num_tokens, device)?;
        Ok(Self {
            num_prefill_tokens: prefill.iter().map(|s| s.num_rows).sum(),
            kv_context_tokens: seqs
                .iter()
                .map(|s| s.num_cached_tokens + s.token_ids.len())
                .sum(),
            prefill,
            decode,
            slots,
            tensor_meta,
            token_ids: Tensor::from_vec(ids, num_tokens, device)?,
            cos: rope_cos.index_select(&positions, 0)?,
            sin: rope_sin.index_select(&positions, 0)?,
            logits_rows: Tensor::from_vec(rows, logits_seq_indices.len(), device)?,
            logits_seq_indices,
            num_tokens,
        })
    }

    /// Token ids in row order, `[num_tokens]` u32.
    pub fn token_ids(&self) -> &Tensor {
        &self.token_ids
    }

    /// Rows (of the flattened batch) whose hidden states produce logits, `[num_logits]` u32,
    /// in input order.
    pub fn logits_rows(&self) -> &Tensor {
        &self.logits_rows
    }

    /// For each logits row, the index of its sequence in the input slice.
    pub fn logits_seq_indices(&self) -> &[usize] {
        &self.logits_seq_indices
    }

    /// All tokens processed this iteration.
    pub fn num_tokens(&self) -> usize {
        self.num_tokens
    }

    /// Tokens of multi-token (prefill) sequences.
    pub fn num_prefill_tokens(&self) -> usize {
        self.num_prefill_tokens
    }

    /// Number of single-token (decode) sequences.
    pub fn num_decode_seqs(&self) -> usize {
        self.decode.len()
    }

    /// Number of multi-token (prefill) sequences.
    pub fn num_prefill_seqs(&self) -> usize {
        self.prefill.len()
    }

    /// Sum over sequences of the context each attends to (cached + new tokens).
    pub fn kv_context_tokens(&self) -> usize {
        self.kv_context_tokens
    }
}
