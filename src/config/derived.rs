//! Computed properties of typed configs, so that stages and reports never re-derive them.

use serde::Serialize;

use crate::config::memory_planner::{plan_memory, MemoryPlannerInput};
use crate::config::types::{Architecture, Dtype, MemoryPlanner, ModelConfig, SimrealConfig};
use crate::io::device::{cuda_toolkit_version, known, DeviceIdentity, GpuFingerprint};
use crate::io::provenance::HostFingerprint;
use crate::{Error, Result};

impl ModelConfig {
    /// True when queries share KV heads (grouped-query attention).
    pub fn is_gqa(&self) -> bool {
        self.num_attention_heads > self.num_key_value_heads
    }

    /// Parameters per transformer layer (attention, q/k norms for Qwen3, gated MLP, norms).
    pub fn params_per_layer(&self) -> u64 {
        let h = u64::from(self.hidden_size);
        let q = u64::from(self.num_attention_heads) * u64::from(self.head_dim);
        let kv = u64::from(self.num_key_value_heads) * u64::from(self.head_dim);
        let attn = h * q + 2 * h * kv + q * h;
        let qk_norm = match self.architecture {
            Architecture::Qwen3 => 2 * u64::from(self.head_dim),
            Architecture::Llama => 0,
        };
        let mlp = 3 * h * u64::from(self.intermediate_size);
        attn + qk_norm + mlp + 2 * h
    }

    /// All parameters, embeddings included; a tied LM head is counted once.
    pub fn num_parameters(&self) -> u64 {
        let embed = u64::from(self.vocab_size) * u64::from(self.hidden_size);
        let lm_head = if self.tie_word_embeddings { 0 } else { embed };
        embed
            + lm_head
            + u64::from(self.num_hidden_layers) * self.params_per_layer()
            + u64::from(self.hidden_size)
    }

    /// Bytes of all weights in `dtype`.
    pub fn weight_bytes(&self, dtype: Dtype) -> u64 {
        self.num_parameters() * dtype.size_bytes()
    }

    /// Bytes of weights streamed per decode step: everything but the embedding table, which
    /// is gathered (unless it doubles as the LM head).
    pub fn weight_bytes_read_per_token(&self, dtype: Dtype) -> u64 {
        let embed = u64::from(self.vocab_size) * u64::from(self.hidden_size);
        let streamed = u64::from(self.num_hidden_layers) * self.params_per_layer()
            + u64::from(self.hidden_size)
            + embed; // the LM head (tied or not) is a full vocab × hidden matmul
        streamed * dtype.size_bytes()
    }

    /// KV-cache bytes per token on one device: K and V, every layer of its pipeline stage,
    /// its share of KV heads under tensor parallelism.
    pub fn kv_bytes_per_token(&self, dtype: Dtype, tp: u32, pp: u32) -> u64 {
        let kv_heads = u64::from(self.num_key_value_heads.div_ceil(tp.max(1)));
        let layers = u64::from(self.num_hidden_layers / pp.max(1));
        2 * layers * kv_heads * u64::from(self.head_dim) * dtype.size_bytes()
    }
}

/// How the KV pool of one replica was sized.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KvPoolPlan {
    pub num_blocks: u64,
    pub block_size: u32,
    /// `backend.num_kv_blocks`, `simreal` or `vidur`.
    pub source: String,
    pub weight_bytes_per_device: u64,
    pub kv_bytes_per_token_per_device: u64,
    pub budget_bytes_per_device: u64,
}

/// Offered load of the configured workload, where it follows from the config alone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OfferedLoad {
    pub requests_per_s: Option<f64>,
    /// Expected prompt + output tokens per second (when the length distribution's mean is
    /// known analytically).
    pub tokens_per_s: Option<f64>,
    pub expected_duration_s: Option<f64>,
}

/// Everything `--cfg job` and `run_meta.json` report beside the config itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Computed {
    /// The resolved element type ([`SimrealConfig::dtype`]).
    pub dtype: Dtype,
    pub model_num_parameters: u64,
    pub model_weight_bytes: u64,
    pub kv_bytes_per_token: u64,
    pub kv_pool: KvPoolPlan,
    pub offered_load: OfferedLoad,
}

impl SimrealConfig {
    /// The element type of weights, activations and KV cache: `backend.dtype` when set,
    /// else the hardware's own (`hardware.dtype`). Every stage reads the dtype through this.
    pub fn dtype(&self) -> Dtype {
        self.backend.dtype.unwrap_or(self.hardware.dtype)
    }

    /// The real engine and the profiler measure the configured hardware only when the
    /// backend runs on that kind of device: an A100 preset with the CPU backend would file CPU
    /// timings under the A100's name. The simulator alone may use any pairing.
    pub fn check_serving_device(&self) -> Result<()> {
        if self.backend.device == self.hardware.device {
            return Ok(());
        }
        Err(Error::config(
            "backend.device",
            format!(
                "hardware {} is a {} device but backend {} runs on the {}; pick a backend for \
                 it (e.g. backend=candle_{}) or hardware=cpu",
                self.hardware.name,
                self.hardware.device.as_str(),
                self.backend.name,
                self.backend.device.as_str(),
                self.hardware.device.as_str()
            ),
        ))
    }

    /// Sizes one replica's KV pool. `backend.num_kv_blocks` wins; otherwise the configured
    /// planner. Fails if the weights alone exceed the budget.
    pub fn kv_pool(&self) -> Result<KvPoolPlan> {
        let tp = self.vidur.tensor_parallel_size;
        let pp = self.vidur.pipeline_parallel_size;
        let block_size = self.scheduler.block_size;
        let dtype = self.dtype();
        let weight_bytes = self.model.weight_bytes(dtype) / u64::from(tp * pp);
        let kv_per_token = self.model.kv_bytes_per_token(dtype, tp, pp);
        let budget = (self.hardware.memory_bytes as f64
            * (1.0 - self.hardware.memory_margin_fraction)) as u64;
        let plan = |num_blocks: u64, source: &str| KvPoolPlan {
            num_blocks,
            block_size,
            source: source.to_string(),
            weight_bytes_per_device: weight_bytes,
            kv_bytes_per_token_per_device: kv_per_token,
            budget_bytes_per_device: budget,
        };
        if let Some(n) = self.backend.num_kv_blocks {
            return Ok(plan(u64::from(n), "backend.num_kv_blocks"));
        }
        match self.vidur.memory_planner {
            MemoryPlanner::Simreal => {
                if weight_bytes >= budget {
                    return Err(Error::config(
                        "hardware.memory_bytes",
                        format!(
                            "{} weights need {weight_bytes} bytes per device but the budget after the {} margin is {budget} bytes",
                            self.model.name, self.hardware.memory_margin_fraction
                        ),
                    ));
                }
                let blocks = (budget - weight_bytes) / (u64::from(block_size) * kv_per_token);
                if blocks == 0 {
                    return Err(Error::config(
                        "hardware.memory_bytes",
                        "no KV block fits beside the weights",
                    ));
                }
                Ok(plan(blocks, "simreal"))
            }
            MemoryPlanner::Vidur => {
                let blocks = vidur_num_blocks(self)?;
                Ok(plan(blocks, "vidur"))
            }
        }
    }

    /// Requests/s, tokens/s and duration the workload offers, where the config determines them.
    pub fn offered_load(&self) -> OfferedLoad {
        let w = &self.workload;
        let mean_tokens = w
            .lengths
            .as_ref()
            .and_then(|l| l.mean_total_tokens(self.model.max_model_len));
        match w.qps {
            Some(qps) => OfferedLoad {
                requests_per_s: Some(qps),
                tokens_per_s: mean_tokens.map(|t| t * qps),
                expected_duration_s: Some(f64::from(w.num_requests) / qps),
            },
            None => OfferedLoad {
                requests_per_s: None,
                tokens_per_s: None,
                expected_duration_s: None,
            },
        }
    }

    pub fn computed(&self) -> Result<Computed> {
        let dtype = self.dtype();
        Ok(Computed {
            dtype,
            model_num_parameters: self.model.num_parameters(),
            model_weight_bytes: self.model.weight_bytes(dtype),
            kv_bytes_per_token: self.model.kv_bytes_per_token(
                dtype,
                self.vidur.tensor_parallel_size,
                self.vidur.pipeline_parallel_size,
            ),
            kv_pool: self.kv_pool()?,
            offered_load: self.offered_load(),
        })
    }
}

/// Vidur's memory planner (VIDUR_NOTES.md §1c), via the one implementation in
/// [`crate::config::memory_planner`]. The model's own `head_dim` is passed (equal to
/// Vidur's `hidden / q_heads` for Llama; Qwen3 declares a larger one).
fn vidur_num_blocks(cfg: &SimrealConfig) -> Result<u64> {
    let m = &cfg.model;
    let input = MemoryPlannerInput {
        total_memory_gb: cfg.hardware.memory_bytes as f64 / f64::from(1u32 << 30),
        memory_margin_fraction: cfg.hardware.memory_margin_fraction,
        num_layers: m.num_hidden_layers,
        num_q_heads: m.num_attention_heads,
        num_kv_heads: m.num_key_value_heads,
        embedding_dim: m.hidden_size,
        mlp_hidden_dim: m.intermediate_size,
        // Every architecture configured here (Llama, Qwen3) has a gated (SwiGLU) MLP.
        use_gated_mlp: true,
        head_dim: Some(m.head_dim),
        tensor_parallel_size: cfg.vidur.tensor_parallel_size,
        pipeline_parallel_size: cfg.vidur.pipeline_parallel_size,
        max_request_tokens: cfg.vidur.max_tokens,
        block_size: cfg.scheduler.block_size,
    };
    plan_memory(&input)
        .map(|plan| plan.num_blocks)
        .map_err(|e| Error::config("vidur.memory_planner", format!("Vidur's planner: {e}")))
}

/// The device identity a configuration implies (constructors from a config live with the
/// config, so `io`, where the identity is a file contract, needs none of it).
impl DeviceIdentity {
    /// The device `cfg` configures, measured as `host` and (on a GPU) `gpu` describe it: what
    /// `vidur_profile` and `real` record.
    pub fn measured(
        cfg: &SimrealConfig,
        host: &HostFingerprint,
        gpu: Option<&GpuFingerprint>,
    ) -> Self {
        let mut id = Self::configured(cfg);
        id.kind = cfg.backend.device;
        match gpu {
            Some(g) => {
                id.name = Some(g.name.clone());
                id.total_memory_bytes = Some(g.total_memory_bytes);
                id.compute_capability = Some(g.compute_capability.clone());
                id.driver_cuda_version = Some(g.driver_cuda_version.clone());
                id.cuda_toolkit_version = cuda_toolkit_version().map(str::to_owned);
            }
            None => id.name = known(&host.cpu_model),
        }
        id
    }

    /// The device `cfg` simulates (`hardware.*` and the resolved dtype), without a name.
    pub fn configured(cfg: &SimrealConfig) -> Self {
        Self {
            kind: cfg.hardware.device,
            sku: cfg.hardware.device_sku.clone(),
            hardware: cfg.hardware.name.clone(),
            dtype: cfg.dtype(),
            name: None,
            total_memory_bytes: None,
            compute_capability: None,
            driver_cuda_version: None,
            cuda_toolkit_version: None,
            inferred: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{compose, ConfigDir, Override, SimrealConfig};

    fn blocks(overrides: &[&str]) -> (u64, String) {
        let overrides: Vec<Override> = overrides
            .iter()
            .map(|o| Override::parse(o).unwrap())
            .collect();
        let composed = compose(&ConfigDir::locate(None).unwrap(), "vidur", &overrides).unwrap();
        let config = SimrealConfig::from_composed(&composed).unwrap();
        let pool = config.kv_pool().unwrap();
        (pool.num_blocks, pool.source)
    }

    #[test]
    fn vidur_planner_reproduces_vidurs_pools() {
        // VIDUR_NOTES.md §1c worked values (A100-80GB, margin 0.1, 4096-token requests).
        let (n, source) = blocks(&[
            "model=llama2_70b",
            "hardware=a100_80g",
            "vidur.tensor_parallel_size=2",
            "vidur.memory_planner=vidur",
        ]);
        assert_eq!((n, source.as_str()), (3_328, "vidur"));
        let (n, _) = blocks(&[
            "model=llama2_7b",
            "hardware=a100_80g",
            "vidur.memory_planner=vidur",
        ]);
        assert_eq!(n, 7_424);
    }

    #[test]
    fn explicit_pool_wins_over_every_planner() {
        let (n, source) = blocks(&["backend.num_kv_blocks=77", "vidur.memory_planner=vidur"]);
        assert_eq!((n, source.as_str()), (77, "backend.num_kv_blocks"));
    }
}
