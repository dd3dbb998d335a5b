//! `Qwen3Model`: the forward pass as a sequence of named, individually callable op functions.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, WithDType, D};
use half::{bf16, f16};

use super::batch::{ForwardBatch, SequenceInput};
use super::config::Qwen3Config;
use super::kernels::attention::{paged_attention, AttnDims, AttnSeq};
use super::kernels::elementwise::{add_f32, rms_norm_f32, rope_f32, silu_mul_f32};
use super::kernels::tensors::{host_f32, linear, with_slice};
use super::kernels::Isa;
use super::kv_cache::{AttentionPath, CacheElement, KvStore, PagedKvCache};
use super::tensor_attention::{self as tensor_attn, TensorAttnDims, TensorAttnMeta};
use super::timer::{ForwardEvents, OpClock, OpTimer};
use super::weights::{load_dir, random_weights, WeightSource};
use crate::io::ops::Op;
use crate::real_bench::huge_pages::{self, Contents};
use crate::{bail, ensure, Error, Result};

#[derive(Debug)]
struct Layer {
    input_layernorm: Tensor,
    q_proj: Tensor,
    k_proj: Tensor,
    v_proj: Tensor,
    o_proj: Tensor,
    q_norm: Tensor,
    k_norm: Tensor,
    post_attention_layernorm: Tensor,
    gate_proj: Tensor,
    up_proj: Tensor,
    down_proj: Tensor,
}

/// Qwen3 dense decoder on candle, with a flattened-batch forward over a [`PagedKvCache`].
///
/// Runs on any candle device. Attention follows the cache's [`AttentionPath`]: the paged CPU
/// kernel for a CPU cache in the host layout, candle tensor ops otherwise (the CUDA path).
/// Projections with few rows use a streaming CPU kernel on the CPU, candle's matmul elsewhere.
///
/// Every op of the forward is a public method so the profiler can time exactly the code the
/// engine runs. Shapes follow a real batch of `T` tokens: hidden states are `[T, hidden]`,
/// q is `[T, heads·head_dim]`, k and v are `[T, kv_heads·head_dim]`.
#[derive(Debug)]
pub struct Qwen3Model {
    cfg: Qwen3Config,
    dtype: DType,
    device: Device,
    embed_tokens: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    /// `[vocab, hidden]`; the same storage as `embed_tokens` when tied.
    lm_head: Tensor,
    rope_cos: Tensor,
    rope_sin: Tensor,
    /// CUDA events for timing forwards on a GPU (unused elsewhere).
    events: ForwardEvents,
}

impl Qwen3Model {
    /// Loads weights from `source` into `dtype` (f32, bf16 or f16) on `device`.
    pub fn load(source: &WeightSource, dtype: DType, device: &Device) -> Result<Self> {
        match source {
            WeightSource::Dir(dir) => {
                let (cfg, tensors) = load_dir(dir, device)?;
                Self::from_tensors(cfg, tensors, dtype, device, dir)
            }
            WeightSource::Random { seed, config } => {
                let tensors = random_weights(config, *seed, dtype)?;
                Self::from_tensors(
                    config.clone(),
                    tensors,
                    dtype,
                    device,
                    Path::new(&source.provenance()),
                )
            }
        }
    }

    /// Builds the model from checkpoint-named tensors (`origin` names their source in errors).
    pub fn from_tensors(
        cfg: Qwen3Config,
        mut tensors: HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
        origin: &Path,
    ) -> Result<Self> {
        cfg.validate()?;
        ensure!(
            matches!(dtype, DType::F32 | DType::BF16 | DType::F16),
            InvalidInput: "model dtype {dtype:?} is not supported (f32, bf16, f16)"
        );
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = tensors.remove(name).ok_or_else(|| Error::SchemaMismatch {
                path: origin.to_path_buf(),
                msg: format!("tensor `{name}` is missing"),
            })?;
            if t.dims() != shape {
                return Err(Error::SchemaMismatch {
                    path: origin.to_path_buf(),
                    msg: format!(
                        "tensor `{name}` has shape {:?}, the config implies {shape:?}",
                        t.dims()
                    ),
                });
            }
            Ok(t.to_dtype(dtype)?.to_device(device)?.contiguous()?)
        };
        let (h, i, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
        let (qw, kvw) = (cfg.q_width(), cfg.kv_width());
        let embed_tokens = take("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let p = format!("model.layers.{l}");
                Ok(Layer {
                    input_layernorm: take(&format!("{p}.input_layernorm.weight"), &[h])?,
                    q_proj: take(&format!("{p}.self_attn.q_proj.weight"), &[qw, h])?,
                    k_proj: take(&format!("{p}.self_attn.k_proj.weight"), &[kvw, h])?,
                    v_proj: take(&format!("{p}.self_attn.v_proj.weight"), &[kvw, h])?,
                    o_proj: take(&format!("{p}.self_attn.o_proj.weight"), &[h, qw])?,
                    q_norm: take(&format!("{p}.self_attn.q_norm.weight"), &[hd])?,
                    k_norm: take(&format!("{p}.self_attn.k_norm.weight"), &[hd])?,
                    post_attention_layernorm: take(
                        &format!("{p}.post_attention_layernorm.weight"),
                        &[h],
                    )?,
                    gate_proj: take(&format!("{p}.mlp.gate_proj.weight"), &[i, h])?,
                    up_proj: take(&format!("{p}.mlp.up_proj.weight"), &[i, h])?,
                    down_proj: take(&format!("{p}.mlp.down_proj.weight"), &[h, i])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = take("model.norm.weight", &[h])?;
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            take("lm_head.weight", &[cfg.vocab_size, h])?
        };
        let (rope_cos, rope_sin) = rope_tables(&cfg, dtype, device)?;
        let model = Self {
            cfg,
            dtype,
            device: device.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope_cos,
            rope_sin,
            events: ForwardEvents::default(),
        };
        model.back_weights_with_huge_pages()?;
        Ok(model)
    }

    /// Collapses the host weights into huge pages where the timed stage asks for them
    /// (`timing.huge_pages`; [`huge_pages`] says what that measured).
    fn back_weights_with_huge_pages(&self) -> Result<()> {
        if !self.device.is_cpu() {
            return Ok(());
        }
        let untied_head = (!self.cfg.tie_word_embeddings).then_some(&self.lm_head);
        let weights = [&self.embed_tokens, &self.norm]
            .into_iter()
            .chain(untied_head)
            .chain(self.layers.iter().flat_map(|l| {
                [
                    &l.input_layernorm,
                    &l.q_proj,
                    &l.k_proj,
                    &l.v_proj,
                    &l.o_proj,
                    &l.q_norm,
                    &l.k_norm,
                    &l.post_attention_layernorm,
                    &l.gate_proj,
                    &l.up_proj,
                    &l.down_proj,
                ]
            }));
        for w in weights {
            match w.dtype() {
                DType::F32 => with_slice(w, |s: &[f32]| huge_pages::back(s, Contents::Populated))?,
                DType::BF16 => {
                    with_slice(w, |s: &[bf16]| huge_pages::back(s, Contents::Populated))?
                }
                DType::F16 => with_slice(w, |s: &[f16]| huge_pages::back(s, Contents::Populated))?,
                _ => {}
            }
        }
        Ok(())
    }

    /// The architecture.
    pub fn config(&self) -> &Qwen3Config {
        &self.cfg
    }

    /// Weight and activation dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A KV cache for this model (its dtype and device), in the layout of the device's
    /// default [`AttentionPath`].
    pub fn new_kv_cache(&self, num_blocks: usize, block_size: usize) -> Result<PagedKvCache> {
        PagedKvCache::new(&self.cfg, num_blocks, block_size, self.dtype, &self.device)
    }

    /// A KV cache whose layout selects `path` (e.g. the tensor-op path on the CPU, to test
    /// the code a GPU runs).
    pub fn new_kv_cache_with_path(
        &self,
        num_blocks: usize,
        block_size: usize,
        path: AttentionPath,
    ) -> Result<PagedKvCache> {
        PagedKvCache::with_path(
            &self.cfg,
            num_blocks,
            block_size,
            self.dtype,
            &self.device,
            path,
        )
    }

    /// Validates and flattens one iteration's sequences.
    pub fn prepare_batch<'a>(
        &self,
        cache: &PagedKvCache,
        seqs: &[SequenceInput<'a>],
    ) -> Result<ForwardBatch<'a>> {
        ensure!(cache.dtype() == self.dtype, Mismatch: "KV cache is {:?}, model is {:?}", cache.dtype(), self.dtype);
        ensure!(
            cache.device().same_device(&self.device),
            Mismatch: "KV cache is on {:?}, model is on {:?}", cache.device(), self.device
        );
        ForwardBatch::new(
            &self.cfg,
            cache,
            seqs,
            &self.rope_cos,
            &self.rope_sin,
            &self.device,
        )
    }

    /// One iteration: runs every op in order, writes this iteration's K/V into `cache`, and
    /// returns `[num_logits, vocab]` logits, one row per sequence that wants them, in input
    /// order (see [`ForwardBatch::logits_seq_indices`]). Each op's time goes to `timer`
    /// (wall time on the CPU, CUDA-event time on a GPU: see [`OpTimer`]).
    pub fn forward(
        &self,
        batch: &ForwardBatch<'_>,
        cache: &mut PagedKvCache,
        timer: Option<&mut dyn OpTimer>,
    ) -> Result<Tensor> {
        let run = move || -> Result<Tensor> {
            let mut clock = OpClock::new(timer, &self.device, &self.events, self.layers.len())?;
            let logits = self.forward_ops(batch, cache, &mut clock)?;
            clock.finish()?;
            Ok(logits)
        };
        if !self.device.is_cpu() {
            // The GPU context stays on the caller's thread.
            return run();
        }
        // On a rayon worker, as the kernels' parallel loops are: called from another thread,
        // each of those loops would wake the sleeping workers and put the caller to sleep
        // (hundreds of hand-offs per forward), and the caller's serial ops would compete
        // with the workers' spinning for the cores.
        rayon::scope(|_| run())
    }

    fn forward_ops(
        &self,
        batch: &ForwardBatch<'_>,
        cache: &mut PagedKvCache,
        c: &mut OpClock<'_>,
    ) -> Result<Tensor> {
        let mut x = c.time(Op::Emb, None, || self.emb(batch.token_ids()))?;
        for l in 0..self.layers.len() {
            let ly = Some(l);
            let h = c.time(Op::InputLayernorm, ly, || self.input_layernorm(l, &x))?;
            let (q, k, v) = c.time(Op::AttnPreProj, ly, || self.attn_pre_proj(l, &h))?;
            let (q, k) = c.time(Op::AttnQkNorm, ly, || self.attn_qk_norm(l, &q, &k))?;
            let (q, k) = c.time(Op::AttnRope, ly, || self.attn_rope(&q, &k, batch))?;
            c.time(Op::AttnKvCacheSave, ly, || {
                self.attn_kv_cache_save(l, &k, &v, batch, cache)
            })?;
            let mut out = AttnOutput::new(batch.num_tokens(), self.cfg.q_width(), self.dtype)?;
            if batch.num_prefill_seqs() > 0 {
                c.time(Op::AttnPrefill, ly, || {
                    self.attn_prefill(l, &q, batch, cache, &mut out)
                })?;
            }
            if batch.num_decode_seqs() > 0 {
                c.time(Op::AttnDecode, ly, || {
                    self.attn_decode(l, &q, batch, cache, &mut out)
                })?;
            }
            let attn = out.into_tensor(&self.device)?;
            let a = c.time(Op::AttnPostProj, ly, || self.attn_post_proj(l, &attn))?;
            x = c.time(Op::Add, ly, || self.add(&x, &a))?;
            let h = c.time(Op::PostAttentionLayernorm, ly, || {
                self.post_attention_layernorm(l, &x)
            })?;
            let (gate, up) = c.time(Op::MlpUpProj, ly, || self.mlp_up_proj(l, &h))?;
            let act = c.time(Op::MlpAct, ly, || self.mlp_act(&gate, &up))?;
            let m = c.time(Op::MlpDownProj, ly, || self.mlp_down_proj(l, &act))?;
            x = c.time(Op::Add, ly, || self.add(&x, &m))?;
        }
        if batch.logits_seq_indices().is_empty() {
            return Ok(Tensor::zeros(
                (0, self.cfg.vocab_size),
                self.dtype,
                &self.device,
            )?);
        }
        let h = c.time(Op::FinalNorm, None, || {
            self.final_norm(&x, batch.logits_rows())
        })?;
        c.time(Op::LmHead, None, || self.lm_head(&h))
    }

    /// [`Self::prepare_batch`] then [`Self::forward`].
    pub fn forward_seqs(
        &self,
        seqs: &[SequenceInput<'_>],
        cache: &mut PagedKvCache,
        timer: Option<&mut dyn OpTimer>,
    ) -> Result<Tensor> {
        let batch = self.prepare_batch(cache, seqs)?;
        self.forward(&batch, cache, timer)
    }

    // ---- op functions -------------------------------------------------------------------

    /// `emb`: token ids `[T]` u32 → hidden `[T, hidden]`.
    pub fn emb(&self, token_ids: &Tensor) -> Result<Tensor> {
        Ok(self.embed_tokens.index_select(token_ids, 0)?)
    }

    /// `input_layernorm`: RMSNorm before attention, `[T, hidden]`.
    pub fn input_layernorm(&self, layer: usize, x: &Tensor) -> Result<Tensor> {
        self.rms_norm(x, &self.layer(layer)?.input_layernorm)
    }

    /// `attn_pre_proj`: `[T, hidden]` → q `[T, heads·hd]`, k and v `[T, kv_heads·hd]`.
    pub fn attn_pre_proj(&self, layer: usize, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let ly = self.layer(layer)?;
        Ok((
            linear(x, &ly.q_proj)?,
            linear(x, &ly.k_proj)?,
            linear(x, &ly.v_proj)?,
        ))
    }

    /// `attn_qk_norm`: Qwen3's RMSNorm over each head of q and k (shapes unchanged).
    pub fn attn_qk_norm(&self, layer: usize, q: &Tensor, k: &Tensor) -> Result<(Tensor, Tensor)> {
        let ly = self.layer(layer)?;
        let hd = self.cfg.head_dim;
        let norm = |x: &Tensor, w: &Tensor| -> Result<Tensor> {
            let (t, width) = x.dims2()?;
            self.rms_norm(&x.reshape((t * width / hd, hd))?, w)?
                .reshape((t, width))
                .map_err(Error::from)
        };
        Ok((norm(q, &ly.q_norm)?, norm(k, &ly.k_norm)?))
    }

    /// `attn_rope`: rotary embedding of q and k at each row's position (from `batch`).
    pub fn attn_rope(
        &self,
        q: &Tensor,
        k: &Tensor,
        batch: &ForwardBatch<'_>,
    ) -> Result<(Tensor, Tensor)> {
        let hd = self.cfg.head_dim;
        let rope = |x: &Tensor| -> Result<Tensor> {
            if host_f32(&[x, &batch.cos, &batch.sin]) {
                let y = with_slice::<f32, _>(x, |xs| {
                    with_slice::<f32, _>(&batch.cos, |c| {
                        with_slice::<f32, _>(&batch.sin, |s| rope_f32(xs, hd, c, s))
                    })
                })???;
                return Ok(Tensor::from_vec(y, x.dims(), x.device())?);
            }
            let (t, width) = x.dims2()?;
            let x4 = x.reshape((1, t, width / hd, hd))?;
            let r = candle_nn::rotary_emb::rope_thd(&x4, &batch.cos, &batch.sin)?;
            Ok(r.reshape((t, width))?)
        };
        Ok((rope(q)?, rope(k)?))
    }

    /// `attn_kv_cache_save`: writes this iteration's k and v rows into their cache slots.
    pub fn attn_kv_cache_save(
        &self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
        batch: &ForwardBatch<'_>,
        cache: &mut PagedKvCache,
    ) -> Result<()> {
        fn save<T: CacheElement + WithDType>(
            layer: usize,
            k: &Tensor,
            v: &Tensor,
            slots: &[(usize, usize)],
            cache: &mut PagedKvCache,
        ) -> Result<()> {
            with_slice::<T, _>(k, |ks| {
                with_slice::<T, _>(v, |vs| cache.write(layer, ks, vs, slots))
            })???;
            Ok(())
        }
        if let KvStore::Tensors(layers) = &cache.store {
            let lt = layers
                .get(layer)
                .ok_or_else(|| Error::InvalidInput(format!("layer {layer} out of range")))?;
            let meta = tensor_meta(batch)?;
            let dims = TensorAttnDims::new(&self.cfg, cache.block_size());
            return tensor_attn::save(dims, meta, &lt.k, &lt.v, k, v);
        }
        match self.dtype {
            DType::F32 => save::<f32>(layer, k, v, &batch.slots, cache),
            DType::BF16 => save::<bf16>(layer, k, v, &batch.slots, cache),
            DType::F16 => save::<f16>(layer, k, v, &batch.slots, cache),
            other => bail!(InvalidInput: "unsupported dtype {other:?}"),
        }
    }

    /// `attn_prefill`: attention for every multi-token sequence of `batch`, written into
    /// their rows of `out`. The cache must already hold this iteration's K/V.
    pub fn attn_prefill(
        &self,
        layer: usize,
        q: &Tensor,
        batch: &ForwardBatch<'_>,
        cache: &PagedKvCache,
        out: &mut AttnOutput,
    ) -> Result<()> {
        if let KvStore::Tensors(layers) = &cache.store {
            let (dims, meta, lt) = self.tensor_attn_args(layer, batch, cache, layers)?;
            for (row, piece) in tensor_attn::prefill(dims, meta, q, &lt.k, &lt.v)? {
                out.put_rows(row, piece)?;
            }
            return Ok(());
        }
        self.attention(layer, q, &batch.prefill, cache, out)
    }

    /// `attn_decode`: attention for every single-token sequence of `batch` (see
    /// [`Self::attn_prefill`]).
    pub fn attn_decode(
        &self,
        layer: usize,
        q: &Tensor,
        batch: &ForwardBatch<'_>,
        cache: &PagedKvCache,
        out: &mut AttnOutput,
    ) -> Result<()> {
        if let KvStore::Tensors(layers) = &cache.store {
            let (dims, meta, lt) = self.tensor_attn_args(layer, batch, cache, layers)?;
            if let Some((row, piece)) = tensor_attn::decode(dims, meta, q, &lt.k, &lt.v)? {
                out.put_rows(row, piece)?;
            }
            return Ok(());
        }
        self.attention(layer, q, &batch.decode, cache, out)
    }

    /// `attn_post_proj`: o projection, `[T, heads·hd]` → `[T, hidden]`.
    pub fn attn_post_proj(&self, layer: usize, attn: &Tensor) -> Result<Tensor> {
        linear(attn, &self.layer(layer)?.o_proj)
    }

    /// `add`: the residual connection.
    pub fn add(&self, residual: &Tensor, x: &Tensor) -> Result<Tensor> {
        if host_f32(&[residual, x]) && residual.dims() == x.dims() {
            let y =
                with_slice::<f32, _>(residual, |r| with_slice::<f32, _>(x, |x| add_f32(r, x)))??;
            return Ok(Tensor::from_vec(y, x.dims(), x.device())?);
        }
        Ok((residual + x)?)
    }

    /// `post_attention_layernorm`: RMSNorm before the MLP.
    pub fn post_attention_layernorm(&self, layer: usize, x: &Tensor) -> Result<Tensor> {
        self.rms_norm(x, &self.layer(layer)?.post_attention_layernorm)
    }

    /// `mlp_up_proj`: gate and up projections, `[T, hidden]` → 2 × `[T, intermediate]`.
    pub fn mlp_up_proj(&self, layer: usize, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let ly = self.layer(layer)?;
        Ok((linear(x, &ly.gate_proj)?, linear(x, &ly.up_proj)?))
    }

    /// `mlp_act`: `silu(gate) · up`.
    pub fn mlp_act(&self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        if host_f32(&[gate, up]) && gate.dims() == up.dims() {
            let y =
                with_slice::<f32, _>(gate, |g| with_slice::<f32, _>(up, |u| silu_mul_f32(g, u)))??;
            return Ok(Tensor::from_vec(y, gate.dims(), gate.device())?);
        }
        Ok((candle_nn::ops::silu(gate)? * up)?)
    }

    /// `mlp_down_proj`: `[T, intermediate]` → `[T, hidden]`.
    pub fn mlp_down_proj(&self, layer: usize, x: &Tensor) -> Result<Tensor> {
        linear(x, &self.layer(layer)?.down_proj)
    }

    /// `final_norm`: picks `rows` (`[L]` u32, the last token of each sequence that wants
    /// logits) from `[T, hidden]` and RMS-normalises them → `[L, hidden]`.
    pub fn final_norm(&self, x: &Tensor, rows: &Tensor) -> Result<Tensor> {
        self.rms_norm(&x.index_select(rows, 0)?, &self.norm)
    }

    /// `lm_head`: `[L, hidden]` → logits `[L, vocab]`.
    pub fn lm_head(&self, x: &Tensor) -> Result<Tensor> {
        linear(x, &self.lm_head)
    }

    /// `sampler`: greedy argmax per logits row (ties → lowest token id).
    pub fn sampler(&self, logits: &Tensor) -> Result<Vec<u32>> {
        if logits.dim(0)? == 0 {
            return Ok(Vec::new());
        }
        Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?)
    }

    // ---- internals ----------------------------------------------------------------------

    fn layer(&self, layer: usize) -> Result<&Layer> {
        self.layers.get(layer).ok_or_else(|| {
            Error::InvalidInput(format!(
                "layer {layer} out of range (model has {})",
                self.layers.len()
            ))
        })
    }

    /// What the tensor-op path needs for `layer`: sizes, the batch's slot ids and masks, and
    /// the layer's K/V tensors.
    fn tensor_attn_args<'c, 'b>(
        &self,
        layer: usize,
        batch: &'b ForwardBatch<'_>,
        cache: &PagedKvCache,
        layers: &'c [super::kv_cache::LayerTensors],
    ) -> Result<(
        TensorAttnDims,
        &'b TensorAttnMeta,
        &'c super::kv_cache::LayerTensors,
    )> {
        let lt = layers
            .get(layer)
            .ok_or_else(|| Error::InvalidInput(format!("layer {layer} out of range")))?;
        Ok((
            TensorAttnDims::new(&self.cfg, cache.block_size()),
            tensor_meta(batch)?,
            lt,
        ))
    }

    fn rms_norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let eps = self.cfg.rms_norm_eps as f32;
        if host_f32(&[x, w]) && x.dims().last() == Some(&w.elem_count()) {
            let y = with_slice::<f32, _>(x, |xs| {
                with_slice::<f32, _>(w, |ws| rms_norm_f32(xs, ws, eps))
            })??;
            return Ok(Tensor::from_vec(y, x.dims(), x.device())?);
        }
        Ok(candle_nn::ops::rms_norm(&x.contiguous()?, w, eps)?)
    }

    fn attention(
        &self,
        layer: usize,
        q: &Tensor,
        seqs: &[AttnSeq<'_>],
        cache: &PagedKvCache,
        out: &mut AttnOutput,
    ) -> Result<()> {
        let dims = AttnDims {
            num_heads: self.cfg.num_attention_heads,
            num_kv_heads: self.cfg.num_key_value_heads,
            head_dim: self.cfg.head_dim,
            block_size: cache.block_size(),
            scale: 1.0 / (self.cfg.head_dim as f32).sqrt(),
        };
        ensure!(
            q.dims2()? == (out.rows, out.width) && out.width == self.cfg.q_width(),
            InvalidInput: "q {:?} and attention output [{}, {}] do not match", q.dims(), out.rows, out.width
        );
        let KvStore::Host(layers) = &cache.store else {
            bail!(InvalidInput: "the paged kernel needs a cache in the host layout");
        };
        let layer_cache = layers
            .get(layer)
            .ok_or_else(|| Error::InvalidInput(format!("layer {layer} out of range")))?;
        fn run<T: CacheElement + WithDType>(
            dims: AttnDims,
            q: &Tensor,
            seqs: &[AttnSeq<'_>],
            lc: &super::kv_cache::LayerCache,
            out: &mut [T],
        ) -> Result<()> {
            let kv = lc
                .view::<T>()
                .ok_or_else(|| Error::Mismatch("KV cache dtype differs from the model's".into()))?;
            with_slice::<T, _>(q, |qs| {
                paged_attention(Isa::best(), dims, qs, kv, seqs, out)
            })
        }
        match out.host_buf()? {
            OutBuf::F32(o) => run::<f32>(dims, q, seqs, layer_cache, o),
            OutBuf::BF16(o) => run::<bf16>(dims, q, seqs, layer_cache, o),
            OutBuf::F16(o) => run::<f16>(dims, q, seqs, layer_cache, o),
        }
    }
}

/// The tensor-op metadata of a batch prepared against a tensor-layout cache.
fn tensor_meta<'b>(batch: &'b ForwardBatch<'_>) -> Result<&'b TensorAttnMeta> {
    batch.tensor_meta.as_ref().ok_or_else(|| {
        Error::Mismatch(
            "the batch was prepared for the CPU kernel's cache layout, not the tensor one".into(),
        )
    })
}

/// The attention output of one layer, `[T, heads·head_dim]`, filled by
/// [`Qwen3Model::attn_prefill`] and [`Qwen3Model::attn_decode`] (each writes its own rows) and
/// then handed to [`Qwen3Model::attn_post_proj`] as a tensor.
///
/// The CPU kernel writes into a host buffer that becomes the tensor without a copy; the
/// tensor-op path hands over device tensors of contiguous rows, concatenated at the end (no
/// copy either when one piece covers every row). Rows nobody wrote are zero.
#[derive(Debug)]
pub struct AttnOutput {
    /// Allocated by the first kernel write.
    buf: Option<OutBuf>,
    /// `(first row, [n, width])` from the tensor-op path.
    pieces: Vec<(usize, Tensor)>,
    rows: usize,
    width: usize,
    dtype: DType,
}

#[derive(Debug)]
enum OutBuf {
    F32(Vec<f32>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
}

impl AttnOutput {
    /// An empty (all-zero) `[rows, width]` output in `dtype`.
    pub fn new(rows: usize, width: usize, dtype: DType) -> Result<Self> {
        ensure!(
            matches!(dtype, DType::F32 | DType::BF16 | DType::F16),
            InvalidInput: "attention output dtype {dtype:?} is not supported"
        );
        Ok(Self {
            buf: None,
            pieces: Vec::new(),
            rows,
            width,
            dtype,
        })
    }

    /// The host buffer the CPU kernel writes into, allocated zeroed on first use.
    fn host_buf(&mut self) -> Result<&mut OutBuf> {
        ensure!(self.pieces.is_empty(), Mismatch: "attention output mixes the CPU kernel and the tensor-op path");
        let n = self.rows * self.width;
        let dtype = self.dtype;
        Ok(self.buf.get_or_insert_with(|| match dtype {
            DType::BF16 => OutBuf::BF16(vec![bf16::ZERO; n]),
            DType::F16 => OutBuf::F16(vec![f16::ZERO; n]),
            // `new` admits only the three float types.
            _ => OutBuf::F32(vec![0.0; n]),
        }))
    }

    /// Takes `[n, width]` rows computed by the tensor-op path as rows `first..first + n`.
    fn put_rows(&mut self, first: usize, rows: Tensor) -> Result<()> {
        ensure!(self.buf.is_none(), Mismatch: "attention output mixes the CPU kernel and the tensor-op path");
        let (n, width) = rows.dims2()?;
        ensure!(
            width == self.width && first + n <= self.rows && rows.dtype() == self.dtype,
            InvalidInput: "attention rows {first}..{} of width {width} ({:?}) do not fit a [{}, {}] {:?} output",
            first + n, rows.dtype(), self.rows, self.width, self.dtype
        );
        self.pieces.push((first, rows));
        Ok(())
    }

    /// The filled output as a `[rows, width]` tensor on `device`.
    pub fn into_tensor(self, device: &Device) -> Result<Tensor> {
        let shape = (self.rows, self.width);
        if !self.pieces.is_empty() {
            return assemble_rows(self.pieces, self.rows, self.width, self.dtype, device);
        }
        Ok(match self.buf {
            None => Tensor::zeros(shape, self.dtype, device)?,
            Some(OutBuf::F32(v)) => Tensor::from_vec(v, shape, device)?,
            Some(OutBuf::BF16(v)) => Tensor::from_vec(v, shape, device)?,
            Some(OutBuf::F16(v)) => Tensor::from_vec(v, shape, device)?,
        })
    }
}

/// Stacks row pieces into `[rows, width]`, zero rows filling the gaps.
fn assemble_rows(
    mut pieces: Vec<(usize, Tensor)>,
    rows: usize,
    width: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    pieces.sort_by_key(|(first, _)| *first);
    let mut parts = Vec::with_capacity(pieces.len() * 2 + 1);
    let mut next = 0;
    for (first, t) in pieces {
        ensure!(first >= next, InvalidInput: "attention rows from {first} overlap rows written before");
        if first > next {
            parts.push(Tensor::zeros((first - next, width), dtype, device)?);
        }
        next = first + t.dim(0)?;
        parts.push(t);
    }
    if next < rows {
        parts.push(Tensor::zeros((rows - next, width), dtype, device)?);
    }
    if parts.len() == 1 {
        return Ok(parts.remove(0));
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// RoPE cos/sin tables `[max_positions, head_dim/2]`, computed in f32 exactly as the
/// reference implementation does, then cast to `dtype`.
fn rope_tables(cfg: &Qwen3Config, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
    let half = cfg.head_dim / 2;
    let inv_freq: Vec<f32> = (0..cfg.head_dim)
        .step_by(2)
        .map(|i| 1f32 / cfg.rope_theta.powf(i as f64 / cfg.head_dim as f64) as f32)
        .collect();
    let n = cfg.max_position_embeddings;
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for p in 0..n {
        for f in &inv_freq {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    Ok((
        Tensor::from_vec(cos, (n, half), device)?.to_dtype(dtype)?,
        Tensor::from_vec(sin, (n, half), device)?.to_dtype(dtype)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_pieces_assemble_in_row_order_with_zero_gaps() {
        let dev = Device::Cpu;
        let mut out = AttnOutput::new(7, 2, DType::F32).unwrap();
        let rows = |first: f32, n: usize| {
            let v: Vec<f32> = (0..2 * n).map(|i| first + i as f32).collect();
            Tensor::from_vec(v, (n, 2), &dev).unwrap()
        };
        // Written out of order: rows 5..6 then 2..4.
        out.put_rows(5, rows(10.0, 1)).unwrap();
        out.put_rows(2, rows(1.0, 2)).unwrap();
        assert!(
            out.put_rows(6, rows(0.0, 2)).is_err(),
            "beyond the last row"
        );
        assert!(out.host_buf().is_err(), "paths do not mix");
        let t = out.into_tensor(&dev).unwrap().to_vec2::<f32>().unwrap();
        let want: [[f32; 2]; 7] = [
            [0., 0.],
            [0., 0.],
            [1., 2.],
            [3., 4.],
            [0., 0.],
            [10., 11.],
            [0., 0.],
        ];
        assert_eq!(t, want.map(|r| r.to_vec()).to_vec());

        let mut overlapping = AttnOutput::new(4, 2, DType::F32).unwrap();
        overlapping.put_rows(0, rows(0.0, 3)).unwrap();
        overlapping.put_rows(2, rows(0.0, 2)).unwrap();
        assert!(overlapping.into_tensor(&dev).is_err());

        // Untouched outputs are zero; one piece covering everything is returned as is.
        let empty = AttnOutput::new(3, 2, DType::BF16).unwrap();
        assert_eq!(empty.into_tensor(&dev).unwrap().dims(), &[3, 2]);
        let mut whole = AttnOutput::new(2, 2, DType::F32).unwrap();
        let piece = rows(5.0, 2);
        whole.put_rows(0, piece.clone()).unwrap();
        assert_eq!(whole.into_tensor(&dev).unwrap().id(), piece.id());
    }
}
