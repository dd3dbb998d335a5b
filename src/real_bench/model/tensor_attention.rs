//! Paged attention written only with candle tensor ops, so it runs on any candle device: the
//! attention of [`AttentionPath::TensorOps`](super::AttentionPath::TensorOps), and the path
//! the engine takes on a GPU.
//!
//! The cache of one layer is a K and a V tensor `[kv_heads, num_slots, head_dim]`, where
//! token `j` of a sequence lives in slot `block_table[j / block_size] · block_size + j %
//! block_size`. Per iteration, [`TensorAttnMeta`] turns the block tables into slot-id tensors
//! and masks once (on the device), and every layer reuses them:
//!
//! - saving K/V is one `scatter_set` per tensor (an overwrite, so reused blocks need no
//!   clearing);
//! - a prefill chunk gathers its sequence's context with `index_select`, and a causal mask
//!   lets row `t` see positions `0..=num_cached + t`; chunks longer than
//!   [`PREFILL_TILE_ROWS`] run in tiles of rows, so the f32 scores (`rows × context` per
//!   query head) stay bounded on a GPU;
//! - all decodes run as one batch: contexts are gathered padded to the longest one, and a
//!   mask hides the padding; or, on [`AttentionPath::CudaKernels`], our CUDA kernel reads
//!   each context in place through its block table ([`super::cuda_attention`]).
//!
//! GQA folds each kv head's group of query heads into the query rows (`[kv_heads, rows ·
//! group, head_dim]` against `[kv_heads, ctx, head_dim]`) instead of repeating K/V `group`
//! times: the same products, without `group` copies of the gathered context. Scores come out
//! of the matmul in the model dtype (as Hugging Face's eager attention computes them), are
//! scaled, masked and softmaxed in f32, and the probabilities go back to the model dtype for
//! the product with V.

use candle_core::{DType, Device, Tensor};

use super::config::Qwen3Config;
use super::kernels::attention::AttnSeq;
use super::kv_cache::AttentionPath;
use crate::{ensure, Result};

/// Query rows of a prefill chunk per attention problem. Scores take `4 · heads · rows · ctx`
/// bytes: for Qwen3-0.6B (16 heads) at a 4096-token context, 128 MiB per tile, where a whole
/// 4096-token prompt would take 1 GiB.
pub(crate) const PREFILL_TILE_ROWS: usize = 512;

/// Problem sizes shared by every sequence of a batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TensorAttnDims {
    pub(crate) num_heads: usize,
    pub(crate) num_kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) block_size: usize,
    /// Softmax temperature, `1/sqrt(head_dim)`.
    pub(crate) scale: f64,
}

impl TensorAttnDims {
    /// The sizes of `cfg` over a cache of `block_size`-slot blocks.
    pub(crate) fn new(cfg: &Qwen3Config, block_size: usize) -> Self {
        Self {
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
            block_size,
            scale: 1.0 / (cfg.head_dim as f64).sqrt(),
        }
    }
}

/// One batched attention problem: `batch` sequences with `rows` query rows each, against
/// contexts gathered (padded) to `ctx` slots.
#[derive(Debug)]
struct Gather {
    /// First row of the problem in the flattened batch.
    row_offset: usize,
    batch: usize,
    rows: usize,
    ctx: usize,
    /// `[batch · ctx]` u32 slot ids.
    slot_ids: Tensor,
    /// `[batch, rows, 1, ctx]` f32, 0 where a row may attend and −∞ elsewhere; `None` when
    /// every row sees every gathered slot.
    mask: Option<Tensor>,
}

/// Slot ids and masks of one iteration, built once by `ForwardBatch` and shared by all layers
/// (what vLLM calls attention metadata).
#[derive(Debug)]
pub(crate) struct TensorAttnMeta {
    /// `[kv_heads, num_tokens, head_dim]` u32: every element of token `t` holds `t`'s slot,
    /// the index layout `scatter_set` along dim 1 needs.
    save_ids: Tensor,
    /// One problem per tile of each multi-token sequence (their lengths differ too much to
    /// pad together).
    prefill: Vec<Gather>,
    /// All single-token sequences as one problem.
    decode: Option<DecodeProblem>,
}

/// How the decode sequences of an iteration are attended.
#[derive(Debug)]
enum DecodeProblem {
    /// Contexts gathered and padded to the longest one, then tensor ops.
    Gathered(Gather),
    /// Contexts read in place by our CUDA kernel.
    #[cfg(feature = "cuda")]
    Paged(super::cuda_attention::PagedDecodeMeta),
}

/// Slot of logical token `j` of a sequence.
fn slot(seq: &AttnSeq<'_>, block_size: usize, j: usize) -> u32 {
    // In range: the batch validated the block ids against the cache, whose slot count fits u32.
    (seq.block_table[j / block_size] * block_size + j % block_size) as u32
}

impl TensorAttnMeta {
    /// Builds the tensors for `prefill` and `decode` sequences (each group's rows contiguous,
    /// prefill first, as `ForwardBatch` lays them out) whose rows hold `slots` (flat slot id
    /// per row, in row order). Prefill chunks are split into tiles of `prefill_tile_rows`.
    /// Decodes take the CUDA kernel on `path` [`AttentionPath::CudaKernels`] where it covers
    /// the model's head size, tensor ops otherwise.
    pub(crate) fn new(
        dims: TensorAttnDims,
        slots: Vec<u32>,
        prefill: &[AttnSeq<'_>],
        decode: &[AttnSeq<'_>],
        prefill_tile_rows: usize,
        path: AttentionPath,
        device: &Device,
    ) -> Result<Self> {
        ensure!(prefill_tile_rows > 0, InvalidInput: "prefill tiles need at least one row");
        let num_tokens = slots.len();
        let save_ids = Tensor::from_vec(slots, (1, num_tokens, 1), device)?
            .broadcast_as((dims.num_kv_heads, num_tokens, dims.head_dim))?
            .contiguous()?;
        let bs = dims.block_size;
        // Rows r0..r1 of a chunk are a chunk themselves: r0 more tokens are cached before them.
        let tiles = prefill.iter().flat_map(|s| {
            (0..s.num_rows)
                .step_by(prefill_tile_rows)
                .map(move |r0| AttnSeq {
                    row_offset: s.row_offset + r0,
                    num_rows: prefill_tile_rows.min(s.num_rows - r0),
                    num_cached: s.num_cached + r0,
                    block_table: s.block_table,
                })
        });
        let prefill = tiles
            .map(|s| {
                let ctx = s.num_cached + s.num_rows;
                let ids: Vec<u32> = (0..ctx).map(|j| slot(&s, bs, j)).collect();
                // Row t (position num_cached + t) sees slots 0..=num_cached + t.
                let mask: Vec<f32> = (0..s.num_rows)
                    .flat_map(move |t| {
                        (0..ctx).map(move |j| {
                            if j <= s.num_cached + t {
                                0.0
                            } else {
                                f32::NEG_INFINITY
                            }
                        })
                    })
                    .collect();
                Ok(Gather {
                    row_offset: s.row_offset,
                    batch: 1,
                    rows: s.num_rows,
                    ctx,
                    slot_ids: Tensor::from_vec(ids, ctx, device)?,
                    mask: Some(Tensor::from_vec(mask, (1, s.num_rows, 1, ctx), device)?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let decode = match decode.first() {
            None => None,
            Some(first) => {
                ensure!(
                    decode.iter().enumerate().all(|(i, s)| s.row_offset == first.row_offset + i),
                    InvalidInput: "decode rows must be contiguous and in sequence order"
                );
                Some(decode_problem(dims, decode, path, device)?)
            }
        };
        Ok(Self {
            save_ids,
            prefill,
            decode,
        })
    }
}

/// The decode problem of `decode`'s sequences (contiguous rows, in order).
fn decode_problem(
    dims: TensorAttnDims,
    decode: &[AttnSeq<'_>],
    path: AttentionPath,
    device: &Device,
) -> Result<DecodeProblem> {
    #[cfg(feature = "cuda")]
    if path == AttentionPath::CudaKernels && super::cuda_attention::supports(&dims) {
        let tables: Vec<&[usize]> = decode.iter().map(|s| s.block_table).collect();
        let context_lens = decode.iter().map(|s| (s.num_cached + 1) as u32).collect();
        return Ok(DecodeProblem::Paged(
            super::cuda_attention::PagedDecodeMeta::new(
                decode[0].row_offset,
                &tables,
                context_lens,
                device,
            )?,
        ));
    }
    // Without the `cuda` feature no cache takes the CUDA path (PagedKvCache refuses it).
    let _ = path;
    Ok(DecodeProblem::Gathered(gathered_decode(
        dims, decode, device,
    )?))
}

/// All decodes as one gathered problem, padded to the longest context.
fn gathered_decode(
    dims: TensorAttnDims,
    decode: &[AttnSeq<'_>],
    device: &Device,
) -> Result<Gather> {
    let bs = dims.block_size;
    let first = &decode[0];
    let ctx_of = |s: &AttnSeq<'_>| s.num_cached + 1;
    let max_ctx = decode.iter().map(ctx_of).max().unwrap_or(1);
    let ragged = decode.iter().any(|s| ctx_of(s) != max_ctx);
    let mut ids = Vec::with_capacity(decode.len() * max_ctx);
    let mut mask = Vec::with_capacity(if ragged { ids.capacity() } else { 0 });
    for s in decode {
        let ctx = ctx_of(s);
        // Padding re-reads the sequence's first slot: a valid index whose
        // weight the mask zeroes.
        ids.extend((0..max_ctx).map(|j| slot(s, bs, if j < ctx { j } else { 0 })));
        if ragged {
            mask.extend((0..max_ctx).map(|j| if j < ctx { 0.0 } else { f32::NEG_INFINITY }));
        }
    }
    let n = decode.len();
    Ok(Gather {
        row_offset: first.row_offset,
        batch: n,
        rows: 1,
        ctx: max_ctx,
        slot_ids: Tensor::from_vec(ids, n * max_ctx, device)?,
        mask: if ragged {
            Some(Tensor::from_vec(mask, (n, 1, 1, max_ctx), device)?)
        } else {
            None
        },
    })
}

/// Writes this iteration's `k` and `v` rows (`[num_tokens, kv_heads · head_dim]`) into their
/// slots of one layer's `cache_k` / `cache_v`.
pub(crate) fn save(
    dims: TensorAttnDims,
    meta: &TensorAttnMeta,
    cache_k: &Tensor,
    cache_v: &Tensor,
    k: &Tensor,
    v: &Tensor,
) -> Result<()> {
    let t = k.dim(0)?;
    for (cache, rows) in [(cache_k, k), (cache_v, v)] {
        ensure!(
            rows.dtype() == cache.dtype(),
            Mismatch: "KV rows are {:?}, the cache is {:?}", rows.dtype(), cache.dtype()
        );
        let rows = rows
            .reshape((t, dims.num_kv_heads, dims.head_dim))?
            .transpose(0, 1)?
            .contiguous()?;
        cache.scatter_set(&meta.save_ids, &rows, 1)?;
    }
    Ok(())
}

/// Attention of every prefill sequence of `meta`, as `(first row, [rows, heads · head_dim])`
/// pieces in the dtype of `q`.
pub(crate) fn prefill(
    dims: TensorAttnDims,
    meta: &TensorAttnMeta,
    q: &Tensor,
    cache_k: &Tensor,
    cache_v: &Tensor,
) -> Result<Vec<(usize, Tensor)>> {
    meta.prefill
        .iter()
        .map(|g| Ok((g.row_offset, attend(dims, g, q, cache_k, cache_v)?)))
        .collect()
}

/// Attention of all decode sequences of `meta` (one piece for their contiguous rows), or
/// nothing if there are none.
pub(crate) fn decode(
    dims: TensorAttnDims,
    meta: &TensorAttnMeta,
    q: &Tensor,
    cache_k: &Tensor,
    cache_v: &Tensor,
) -> Result<Option<(usize, Tensor)>> {
    Ok(match &meta.decode {
        None => None,
        Some(DecodeProblem::Gathered(g)) => {
            Some((g.row_offset, attend(dims, g, q, cache_k, cache_v)?))
        }
        #[cfg(feature = "cuda")]
        Some(DecodeProblem::Paged(p)) => Some((
            p.row_offset,
            super::cuda_attention::decode(dims, p, q, cache_k, cache_v)?,
        )),
    })
}

/// One gathered problem → `[batch · rows, heads · head_dim]`.
fn attend(
    dims: TensorAttnDims,
    g: &Gather,
    q: &Tensor,
    cache_k: &Tensor,
    cache_v: &Tensor,
) -> Result<Tensor> {
    let (kvh, hd) = (dims.num_kv_heads, dims.head_dim);
    let group = dims.num_heads / kvh;
    let n = g.batch * g.rows;
    // [n, heads·hd] → [kv_heads, batch, rows·group, hd]: query head kv·group + i of row r
    // becomes row r·group + i of its kv head.
    let q = q
        .narrow(0, g.row_offset, n)?
        .reshape((n, kvh, group * hd))?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((kvh, g.batch, g.rows * group, hd))?;
    let gather = |cache: &Tensor| -> Result<Tensor> {
        Ok(cache
            .index_select(&g.slot_ids, 1)?
            .reshape((kvh, g.batch, g.ctx, hd))?)
    };
    let (k, v) = (gather(cache_k)?, gather(cache_v)?);
    let scores = q
        .matmul(&k.t()?)?
        .to_dtype(DType::F32)?
        .affine(dims.scale, 0.0)?;
    let scores = match &g.mask {
        None => scores,
        Some(mask) => scores
            .reshape((kvh, g.batch, g.rows, group, g.ctx))?
            .broadcast_add(mask)?
            .reshape((kvh, g.batch, g.rows * group, g.ctx))?,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
    Ok(probs
        .matmul(&v)?
        .reshape((kvh, n, group * hd))?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((n, dims.num_heads * hd))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gathered(meta: &TensorAttnMeta) -> &Gather {
        match meta.decode.as_ref() {
            Some(DecodeProblem::Gathered(g)) => g,
            other => panic!("expected a gathered decode problem, got {other:?}"),
        }
    }

    fn dims() -> TensorAttnDims {
        TensorAttnDims {
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 3,
            block_size: 4,
            scale: 1.0,
        }
    }

    fn seq(row_offset: usize, num_rows: usize, num_cached: usize, table: &[usize]) -> AttnSeq<'_> {
        AttnSeq {
            row_offset,
            num_rows,
            num_cached,
            block_table: table,
        }
    }

    #[test]
    fn slot_ids_and_masks_follow_block_tables() {
        let (ta, tb, tc) = ([5, 2], [7], [1, 0]);
        // A 3-row chunk after 4 cached tokens; decodes at contexts 2 and 6 (ragged).
        let prefill = [seq(0, 3, 4, &ta)];
        let decode = [seq(3, 1, 1, &tb), seq(4, 1, 5, &tc)];
        let slots = vec![8, 9, 10, 29, 5];
        let meta = TensorAttnMeta::new(
            dims(),
            slots,
            &prefill,
            &decode,
            64,
            AttentionPath::TensorOps,
            &Device::Cpu,
        )
        .unwrap();

        // Saving: [kv_heads, tokens, head_dim], each token's slot repeated.
        let ids = meta.save_ids.to_vec3::<u32>().unwrap();
        assert_eq!(ids[1][3], vec![29, 29, 29]);
        assert_eq!(ids[0][0], vec![8, 8, 8]);

        // Prefill: logical tokens 0..7 → block 5 slots 20..23, block 2 slots 8..10.
        let p = &meta.prefill[0];
        assert_eq!(
            p.slot_ids.to_vec1::<u32>().unwrap(),
            vec![20, 21, 22, 23, 8, 9, 10]
        );
        let mask = p.mask.as_ref().unwrap().to_dtype(DType::F32).unwrap();
        let mask = mask.reshape((3, 7)).unwrap().to_vec2::<f32>().unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(mask[0], vec![0.0, 0.0, 0.0, 0.0, 0.0, inf, inf]);
        assert_eq!(mask[2], vec![0.0; 7]);

        // Decodes padded to 6: sequence b (2 tokens in block 7) re-reads its slot 28.
        let d = gathered(&meta);
        assert_eq!((d.row_offset, d.batch, d.ctx), (3, 2, 6));
        assert_eq!(
            d.slot_ids.to_vec1::<u32>().unwrap(),
            vec![28, 29, 28, 28, 28, 28, 4, 5, 6, 7, 0, 1]
        );
        let mask = d.mask.as_ref().unwrap().reshape((2, 6)).unwrap();
        let mask = mask.to_vec2::<f32>().unwrap();
        assert_eq!(mask[0], vec![0.0, 0.0, inf, inf, inf, inf]);
        assert_eq!(mask[1], vec![0.0; 6]);

        // Equal contexts need no mask.
        let (t1, t2) = ([3], [6]);
        let even = [seq(0, 1, 2, &t1), seq(1, 1, 2, &t2)];
        let meta = TensorAttnMeta::new(
            dims(),
            vec![14, 26],
            &[],
            &even,
            64,
            AttentionPath::TensorOps,
            &Device::Cpu,
        )
        .unwrap();
        assert!(gathered(&meta).mask.is_none());
        assert!(meta.prefill.is_empty());
    }

    #[test]
    fn saving_overwrites_the_slots_it_names() {
        let d = dims();
        let cache_k = Tensor::ones((2, 8, 3), DType::F32, &Device::Cpu).unwrap();
        let cache_v = cache_k.zeros_like().unwrap();
        let table = [1];
        let decode = [seq(0, 1, 0, &table), seq(1, 1, 2, &table)];
        // Two tokens into slots 4 and 6 (block 1, slots 0 and 2).
        let meta = TensorAttnMeta::new(
            d,
            vec![4, 6],
            &[],
            &decode,
            64,
            AttentionPath::TensorOps,
            &Device::Cpu,
        )
        .unwrap();
        let k = Tensor::arange(0f32, 12.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 6))
            .unwrap();
        let v = (&k * -1.0).unwrap();
        save(d, &meta, &cache_k, &cache_v, &k, &v).unwrap();
        let ck = cache_k.to_vec3::<f32>().unwrap();
        // Token 0's kv head 1 is k[0][3..6]; token 1's kv head 0 is k[1][0..3].
        assert_eq!(ck[1][4], vec![3.0, 4.0, 5.0]);
        assert_eq!(ck[0][6], vec![6.0, 7.0, 8.0]);
        assert_eq!(ck[0][5], vec![1.0, 1.0, 1.0], "other slots untouched");
        assert_eq!(
            cache_v.to_vec3::<f32>().unwrap()[1][6],
            vec![-9.0, -10.0, -11.0]
        );
        // Saving again replaces rather than accumulates.
        save(d, &meta, &cache_k, &cache_v, &k, &v).unwrap();
        assert_eq!(cache_k.to_vec3::<f32>().unwrap()[1][4], vec![3.0, 4.0, 5.0]);
    }

    #[test]
    fn two_keys_hand_computed_with_group_query_heads() {
        // One kv head, two query heads; scale 1. Keys: k0 = [0, 0], k1 = [ln 3, 0].
        // Head 0 has q = [1, 0]: weights 1/4, 3/4 → v0/4 + 3·v1/4. Head 1 has q = 0: 1/2, 1/2.
        let d = TensorAttnDims {
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 2,
            block_size: 2,
            scale: 1.0,
        };
        let ln3 = 3f32.ln();
        let dev = Device::Cpu;
        // Slots 2 and 3 (block 1) hold tokens 0 and 1.
        let cache_k = Tensor::new(&[[[9f32, 9.], [9., 9.], [0., 0.], [ln3, 0.]]], &dev).unwrap();
        let cache_v = Tensor::new(&[[[9f32, 9.], [9., 9.], [4., 8.], [0., 4.]]], &dev).unwrap();
        let table = [1];
        let decode = [seq(0, 1, 1, &table)];
        let meta =
            TensorAttnMeta::new(d, vec![3], &[], &decode, 64, AttentionPath::TensorOps, &dev)
                .unwrap();
        let q = Tensor::new(&[[1f32, 0., 0., 0.]], &dev).unwrap();
        let (row, out) = super::decode(d, &meta, &q, &cache_k, &cache_v)
            .unwrap()
            .unwrap();
        assert_eq!(row, 0);
        let out = out.to_vec2::<f32>().unwrap();
        let want = [1.0, 5.0, 2.0, 6.0];
        for (o, w) in out[0].iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn tiled_prefill_equals_one_problem_per_chunk() {
        use rand::{Rng, SeedableRng};
        let d = dims();
        let dev = Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut random = |shape: &[usize]| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            Tensor::from_vec(v, shape, &dev).unwrap()
        };
        // 11 rows after 6 cached tokens, blocks scattered over a 40-slot cache.
        let table = [7, 1, 9, 4, 0];
        let chunk = [seq(0, 11, 6, &table)];
        let slots: Vec<u32> = (6..17).map(|j| slot(&chunk[0], 4, j)).collect();
        let (ck, cv) = (random(&[2, 40, 3]), random(&[2, 40, 3]));
        let q = random(&[11, 12]);
        let run = |tile: usize| {
            let meta = TensorAttnMeta::new(
                d,
                slots.clone(),
                &chunk,
                &[],
                tile,
                AttentionPath::TensorOps,
                &dev,
            )
            .unwrap();
            let pieces = prefill(d, &meta, &q, &ck, &cv).unwrap();
            let firsts: Vec<usize> = pieces.iter().map(|p| p.0).collect();
            let rows: Vec<Tensor> = pieces.into_iter().map(|p| p.1).collect();
            (
                firsts,
                Tensor::cat(&rows, 0).unwrap().to_vec2::<f32>().unwrap(),
            )
        };
        let (whole_firsts, whole) = run(64);
        let (tiled_firsts, tiled) = run(4);
        assert_eq!(whole_firsts, vec![0]);
        assert_eq!(tiled_firsts, vec![0, 4, 8]);
        for (a, b) in whole.iter().flatten().zip(tiled.iter().flatten()) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
