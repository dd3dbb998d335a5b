//! `Qwen3Config`: the architecture numbers of a Qwen3 checkpoint, read from a Hugging Face
//! `config.json`, validated, with the derived sizes that capacity planning needs.

use std::path::Path;

use candle_core::DType;
use serde::{Deserialize, Serialize};

use crate::error::IoContext;
use crate::{Error, Result};

/// The `model_type` every accepted config must carry.
pub const QWEN3_MODEL_TYPE: &str = "qwen3";
/// The architecture name of the dense Qwen3 causal LM in `architectures`.
pub const QWEN3_ARCHITECTURE: &str = "Qwen3ForCausalLM";

/// Architecture of a dense Qwen3 model, field names as in Hugging Face's `config.json`.
///
/// Deserialisation accepts (and drops) the many fields real configs carry that the forward pass
/// does not need. Serialisation writes every field below, which is a superset of what
/// `candle_transformers::models::qwen3::Config` requires, so a snapshot we write loads there too.
/// Always go through [`Qwen3Config::from_json_file`] / [`Qwen3Config::validate`]: a value that
/// has not been validated may have heads that do not divide, and so on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen3Config {
    /// Must be `"qwen3"`.
    pub model_type: String,
    /// Must contain `"Qwen3ForCausalLM"` when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    /// Rows of the embedding table and of the LM head.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP (gate and up projections).
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA); must divide `num_attention_heads`.
    pub num_key_value_heads: usize,
    /// Qwen3 sets this explicitly (it is not `hidden_size / num_attention_heads` for all sizes).
    pub head_dim: usize,
    /// Longest sequence (cached plus new tokens) the model accepts.
    pub max_position_embeddings: usize,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f64,
    /// Whether `lm_head` shares `model.embed_tokens.weight`.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Must be `"silu"` (the MLP is SwiGLU).
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Bias terms on q/k/v/o projections: Qwen3 has none; `true` is rejected.
    #[serde(default)]
    pub attention_bias: bool,
    /// Sliding-window attention is not implemented; `true` is rejected.
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Window size if sliding-window attention were used (informational).
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Layers using full attention when sliding windows are on (informational).
    #[serde(default)]
    pub max_window_layers: usize,
    /// RoPE scaling (YaRN etc.) is not implemented; anything but `null` is rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    /// Informational: the dtype the checkpoint was saved in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
}

fn default_hidden_act() -> String {
    "silu".to_string()
}

impl Qwen3Config {
    /// `Qwen/Qwen3-0.6B`, numbers from its official `config.json`.
    pub fn qwen3_0_6b() -> Self {
        Self::with_sizes(151_936, 1024, 3072, 28, 16, 8, 128, 40_960, true)
    }

    /// A tiny Qwen3 for tests: same vocabulary and RoPE as the real models, small everything else.
    pub fn tiny() -> Self {
        Self::with_sizes(151_936, 64, 256, 2, 4, 2, 16, 4096, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn with_sizes(
        vocab_size: usize,
        hidden_size: usize,
        intermediate_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        num_key_value_heads: usize,
        head_dim: usize,
        max_position_embeddings: usize,
        tie_word_embeddings: bool,
    ) -> Self {
        Self {
            model_type: QWEN3_MODEL_TYPE.to_string(),
            architectures: Some(vec![QWEN3_ARCHITECTURE.to_string()]),
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings,
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings,
            hidden_act: default_hidden_act(),
            attention_bias: false,
            use_sliding_window: false,
            sliding_window: None,
            max_window_layers: num_hidden_layers,
            rope_scaling: None,
            torch_dtype: None,
        }
    }

    /// Reads and validates a Hugging Face `config.json`. Errors name the file (and the key).
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).with_path(path)?;
        Self::from_json_str(&text, path)
    }

    /// Parses and validates config JSON text; `origin` is the file it came from (for errors).
    pub fn from_json_str(text: &str, origin: &Path) -> Result<Self> {
        // Check the architecture before the numeric fields, so a Llama or Qwen2-MoE config is
        // reported as "not Qwen3" rather than as a missing `head_dim`.
        let raw: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::parse(origin, e.to_string()))?;
        check_architecture(
            raw.get("model_type").and_then(|v| v.as_str()),
            raw.get("architectures"),
            origin,
        )?;
        let de = &mut serde_json::Deserializer::from_str(text);
        let cfg: Self = serde_path_to_error::deserialize(de).map_err(|e| Error::Config {
            key: e.path().to_string(),
            origin: Some(origin.display().to_string()),
            msg: e.inner().to_string(),
        })?;
        cfg.validate_with_origin(Some(origin))?;
        Ok(cfg)
    }

    /// Checks architecture and internal consistency.
    pub fn validate(&self) -> Result<()> {
        self.validate_with_origin(None)
    }

    fn validate_with_origin(&self, origin: Option<&Path>) -> Result<()> {
        let err = |key: &str, msg: String| Error::Config {
            key: key.to_string(),
            origin: origin.map(|p| p.display().to_string()),
            msg,
        };
        let arch = self
            .architectures
            .as_ref()
            .map(|a| serde_json::json!(a))
            .unwrap_or(serde_json::Value::Null);
        check_architecture(
            Some(&self.model_type),
            Some(&arch),
            origin.unwrap_or(Path::new("<config>")),
        )?;
        for (key, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if value == 0 {
                return Err(err(key, "must be positive".into()));
            }
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(err(
                "num_key_value_heads",
                format!(
                    "{} key/value heads do not divide {} attention heads",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(err(
                "head_dim",
                format!("{} is odd; RoPE rotates pairs of dimensions", self.head_dim),
            ));
        }
        if self.max_position_embeddings > u32::MAX as usize {
            return Err(err("max_position_embeddings", "exceeds u32 range".into()));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(err(
                "rope_theta",
                format!("{} is not positive", self.rope_theta),
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(err(
                "rms_norm_eps",
                format!("{} is not positive", self.rms_norm_eps),
            ));
        }
        if self.hidden_act != "silu" {
            return Err(err(
                "hidden_act",
                format!("`{}` is not supported (Qwen3 uses silu)", self.hidden_act),
            ));
        }
        if self.attention_bias {
            return Err(err(
                "attention_bias",
                "attention biases are not supported (Qwen3 has none)".into(),
            ));
        }
        if self.use_sliding_window {
            return Err(err(
                "use_sliding_window",
                "sliding-window attention is not supported".into(),
            ));
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(err("rope_scaling", "RoPE scaling is not supported".into()));
        }
        Ok(())
    }

    /// Query heads per key/value head (GQA group size).
    pub fn num_kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Width of the concatenated query heads (`num_attention_heads × head_dim`).
    pub fn q_width(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Width of the concatenated key (or value) heads (`num_key_value_heads × head_dim`).
    pub fn kv_width(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Parameters of one decoder layer (projections, MLP, and the four norms).
    pub fn params_per_layer(&self) -> u64 {
        let h = self.hidden_size as u64;
        let q = self.q_width() as u64;
        let kv = self.kv_width() as u64;
        let i = self.intermediate_size as u64;
        let attn = h * q + 2 * h * kv + q * h;
        let mlp = 3 * h * i;
        let norms = 2 * h + 2 * self.head_dim as u64;
        attn + mlp + norms
    }

    /// Total parameter count; a tied LM head is counted once.
    pub fn num_params(&self) -> u64 {
        let embed = (self.vocab_size * self.hidden_size) as u64;
        let lm_head = if self.tie_word_embeddings { 0 } else { embed };
        embed
            + lm_head
            + self.num_hidden_layers as u64 * self.params_per_layer()
            + self.hidden_size as u64
    }

    /// Bytes of all weights stored in `dtype`.
    pub fn weight_bytes(&self, dtype: DType) -> u64 {
        self.num_params() * dtype.size_in_bytes() as u64
    }

    /// Weight bytes one decode step must stream from memory: every layer, the final norm and
    /// the LM head, but only one row per token of an untied embedding table. This over the
    /// machine's memory bandwidth is the floor of a single-sequence decode step.
    pub fn weight_bytes_read_per_decode_step(&self, dtype: DType) -> u64 {
        let embed = (self.vocab_size * self.hidden_size) as u64;
        let read_params = if self.tie_word_embeddings {
            self.num_params()
        } else {
            self.num_params() - embed
        };
        read_params * dtype.size_in_bytes() as u64
    }

    /// KV-cache bytes one token occupies across all layers (K and V) in `dtype`.
    pub fn kv_bytes_per_token(&self, dtype: DType) -> u64 {
        2 * (self.num_hidden_layers * self.kv_width() * dtype.size_in_bytes()) as u64
    }

    /// Multiply-adds ×2 of the dense (non-attention) part of one token's forward, LM head
    /// included: the FLOPs a prefill spends per token apart from attention scores.
    pub fn dense_flops_per_token(&self) -> u64 {
        let embed = (self.vocab_size * self.hidden_size) as u64;
        let per_layer = self.params_per_layer() - 2 * self.hidden_size as u64;
        2 * (self.num_hidden_layers as u64 * per_layer + embed)
    }
}

fn check_architecture(
    model_type: Option<&str>,
    architectures: Option<&serde_json::Value>,
    origin: &Path,
) -> Result<()> {
    let config_err = |key: &str, msg: String| Error::Config {
        key: key.to_string(),
        origin: Some(origin.display().to_string()),
        msg,
    };
    match model_type {
        Some(QWEN3_MODEL_TYPE) => {}
        Some(other) => {
            return Err(config_err(
                "model_type",
                format!("`{other}` is not a Qwen3 model (expected `{QWEN3_MODEL_TYPE}`)"),
            ))
        }
        None => {
            return Err(config_err(
                "model_type",
                format!("missing (expected `{QWEN3_MODEL_TYPE}`)"),
            ))
        }
    }
    match architectures {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(serde_json::Value::Array(names)) => {
            if names.iter().any(|n| n.as_str() == Some(QWEN3_ARCHITECTURE)) {
                Ok(())
            } else {
                Err(config_err(
                    "architectures",
                    format!("{names:?} does not include `{QWEN3_ARCHITECTURE}`"),
                ))
            }
        }
        Some(other) => Err(config_err(
            "architectures",
            format!("expected a list of names, found {other}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFICIAL_0_6B: &str = r#"{
      "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
      "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
      "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
      "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
      "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
      "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000,
      "sliding_window": null, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
      "transformers_version": "4.51.0", "use_cache": true, "use_sliding_window": false,
      "vocab_size": 151936
    }"#;

    fn parse(text: &str) -> Result<Qwen3Config> {
        Qwen3Config::from_json_str(text, Path::new("/snap/config.json"))
    }

    #[test]
    fn official_config_parses_to_the_preset() {
        let mut cfg = parse(OFFICIAL_0_6B).unwrap();
        assert_eq!(cfg.torch_dtype.as_deref(), Some("bfloat16"));
        cfg.torch_dtype = None;
        assert_eq!(cfg, Qwen3Config::qwen3_0_6b());
    }

    #[test]
    fn derived_sizes_match_hand_computation() {
        let cfg = Qwen3Config::qwen3_0_6b();
        // 151936·1024 embedding + 28 × (2·1024·2048 + 2·1024·1024 + 3·1024·3072 + 2·1024 + 2·128)
        // + 1024 final norm = the "0.6B (0.44B non-embedding)" of the model card.
        assert_eq!(cfg.params_per_layer(), 15_730_944);
        assert_eq!(cfg.num_params(), 596_049_920);
        assert_eq!(cfg.weight_bytes(DType::BF16), 1_192_099_840);
        assert_eq!(
            cfg.weight_bytes_read_per_decode_step(DType::F32),
            2_384_199_680
        );
        // 2 (K,V) × 28 layers × 8 heads × 128 dims × 2 bytes.
        assert_eq!(cfg.kv_bytes_per_token(DType::BF16), 114_688);
        let mut untied = cfg.clone();
        untied.tie_word_embeddings = false;
        assert_eq!(untied.num_params(), 596_049_920 + 155_582_464);
        assert_eq!(
            untied.weight_bytes_read_per_decode_step(DType::F32),
            untied.weight_bytes(DType::F32) - 155_582_464 * 4
        );
    }

    #[test]
    fn serialised_config_round_trips_and_loads_in_candle_transformers_shape() {
        let cfg = Qwen3Config::tiny();
        let text = serde_json::to_string(&cfg).unwrap();
        assert_eq!(parse(&text).unwrap(), cfg);
        for key in [
            "attention_bias",
            "sliding_window",
            "max_window_layers",
            "hidden_act",
        ] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
    }

    #[test]
    fn other_architectures_are_rejected_naming_the_file() {
        let llama = OFFICIAL_0_6B
            .replace("\"qwen3\"", "\"llama\"")
            .replace("Qwen3ForCausalLM", "LlamaForCausalLM");
        let e = parse(&llama).unwrap_err().to_string();
        assert!(
            e.contains("/snap/config.json") && e.contains("model_type"),
            "{e}"
        );
        assert!(e.contains("llama"), "{e}");

        let wrong_arch = OFFICIAL_0_6B.replace("Qwen3ForCausalLM", "Qwen3MoeForCausalLM");
        let e = parse(&wrong_arch).unwrap_err().to_string();
        assert!(e.contains("architectures"), "{e}");
    }

    #[test]
    fn inconsistent_numbers_are_rejected_naming_the_key() {
        let bad_heads =
            OFFICIAL_0_6B.replace("\"num_key_value_heads\": 8", "\"num_key_value_heads\": 6");
        let e = parse(&bad_heads).unwrap_err();
        assert!(
            matches!(&e, Error::Config { key, origin: Some(o), .. } if key == "num_key_value_heads" && o.contains("config.json")),
            "{e}"
        );
        let odd = OFFICIAL_0_6B.replace("\"head_dim\": 128", "\"head_dim\": 127");
        assert!(parse(&odd).unwrap_err().to_string().contains("head_dim"));
        let zero = OFFICIAL_0_6B.replace("\"hidden_size\": 1024", "\"hidden_size\": 0");
        assert!(parse(&zero)
            .unwrap_err()
            .to_string()
            .contains("hidden_size"));
        let biased = OFFICIAL_0_6B.replace("\"attention_bias\": false", "\"attention_bias\": true");
        assert!(parse(&biased)
            .unwrap_err()
            .to_string()
            .contains("attention_bias"));
    }

    #[test]
    fn a_missing_or_mistyped_field_names_its_key() {
        let e = parse(&OFFICIAL_0_6B.replace("\"head_dim\": 128,", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("head_dim"), "{e}");
        let e = parse(&OFFICIAL_0_6B.replace("\"vocab_size\": 151936", "\"vocab_size\": \"x\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("vocab_size"), "{e}");
    }
}
