//! Where weights come from: a Hugging Face snapshot directory, or seeded random values with
//! the same names and shapes (so every path of the product runs without a download).

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

use super::config::Qwen3Config;
use crate::error::IoContext;
use crate::{ensure, Error, Result};

/// The architecture file of a Hugging Face snapshot.
pub const CONFIG_FILE: &str = "config.json";
/// The weights of an unsharded snapshot.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The tensor → shard map of a sharded snapshot.
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";

/// Standard deviation of synthesized matrices: Qwen3's `initializer_range`.
pub const RANDOM_INIT_STD: f32 = 0.02;
/// Elements per independently seeded chunk of a random tensor (lets generation run in
/// parallel yet give the same values for any thread count).
const RANDOM_CHUNK: usize = 1 << 20;

/// Where a model's weights come from.
// The config makes `Random` large; a source is built once per run, so boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum WeightSource {
    /// A snapshot directory with `config.json` and `model.safetensors` (or a sharded index).
    Dir(PathBuf),
    /// Seeded random weights for `config`, identical to what [`synthesize_random_weights`]
    /// writes for the same seed.
    Random {
        /// Seed of the ChaCha8 streams.
        seed: u64,
        /// Architecture to synthesize.
        config: Qwen3Config,
    },
}

impl WeightSource {
    /// Provenance string for run metadata: the directory, or `random:<seed>`.
    pub fn provenance(&self) -> String {
        match self {
            WeightSource::Dir(p) => p.display().to_string(),
            WeightSource::Random { seed, .. } => format!("random:{seed}"),
        }
    }
}

/// Role of a tensor, which decides its random initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TensorKind {
    Matrix,
    Norm,
}

/// Every tensor a checkpoint of `cfg` holds: name, shape, kind, in a fixed order.
pub(crate) fn tensor_specs(cfg: &Qwen3Config) -> Vec<(String, Vec<usize>, TensorKind)> {
    use TensorKind::*;
    let (h, i, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let mut specs = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![cfg.vocab_size, h],
        Matrix,
    )];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        specs.extend([
            (format!("{p}.input_layernorm.weight"), vec![h], Norm),
            (
                format!("{p}.self_attn.q_proj.weight"),
                vec![cfg.q_width(), h],
                Matrix,
            ),
            (
                format!("{p}.self_attn.k_proj.weight"),
                vec![cfg.kv_width(), h],
                Matrix,
            ),
            (
                format!("{p}.self_attn.v_proj.weight"),
                vec![cfg.kv_width(), h],
                Matrix,
            ),
            (
                format!("{p}.self_attn.o_proj.weight"),
                vec![h, cfg.q_width()],
                Matrix,
            ),
            (format!("{p}.self_attn.q_norm.weight"), vec![hd], Norm),
            (format!("{p}.self_attn.k_norm.weight"), vec![hd], Norm),
            (
                format!("{p}.post_attention_layernorm.weight"),
                vec![h],
                Norm,
            ),
            (format!("{p}.mlp.gate_proj.weight"), vec![i, h], Matrix),
            (format!("{p}.mlp.up_proj.weight"), vec![i, h], Matrix),
            (format!("{p}.mlp.down_proj.weight"), vec![h, i], Matrix),
        ]);
    }
    specs.push(("model.norm.weight".to_string(), vec![h], Norm));
    if !cfg.tie_word_embeddings {
        specs.push((
            "lm_head.weight".to_string(),
            vec![cfg.vocab_size, h],
            Matrix,
        ));
    }
    specs
}

/// Seeded random weights for `cfg` in `dtype`: matrices ~ N(0, 0.02²), norm weights 1.
/// Tensor `t`, chunk `c` draws from ChaCha8 stream `(t << 32) | c` of `seed`, so values do not
/// depend on the thread count or on other tensors.
pub fn random_weights(
    cfg: &Qwen3Config,
    seed: u64,
    dtype: DType,
) -> Result<HashMap<String, Tensor>> {
    cfg.validate()?;
    let normal = Normal::new(0f32, RANDOM_INIT_STD).map_err(|e| Error::Msg(e.to_string()))?;
    tensor_specs(cfg)
        .into_iter()
        .enumerate()
        .map(|(t, (name, shape, kind))| {
            let len: usize = shape.iter().product();
            let values = match kind {
                TensorKind::Norm => vec![1f32; len],
                TensorKind::Matrix => {
                    let mut v = vec![0f32; len];
                    v.par_chunks_mut(RANDOM_CHUNK)
                        .enumerate()
                        .for_each(|(c, chunk)| {
                            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                            rng.set_stream(((t as u64) << 32) | c as u64);
                            for x in chunk {
                                *x = normal.sample(&mut rng);
                            }
                        });
                    v
                }
            };
            let tensor = Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?;
            Ok((name, tensor))
        })
        .collect()
}

/// Where synthesized weights live under an output root: `<root>/weights/<model>-<seed>-<dtype>`
/// (`tmp/weights/qwen3_0_6b-0-f32`), so the stages and the benches share one snapshot.
pub fn random_weights_dir(output_root: &Path, model: &str, seed: u64, dtype: &str) -> PathBuf {
    output_root
        .join("weights")
        .join(format!("{model}-{seed}-{dtype}"))
}

/// Writes a Hugging Face-layout snapshot of seeded random weights (`config.json` +
/// `model.safetensors`, official names and shapes) to `out_dir`, which must not exist yet.
/// Files are written to a sibling temp directory that is renamed into place, so a reader never
/// sees a half-written snapshot. Returns the sha256 (hex) of `model.safetensors`.
pub fn synthesize_random_weights(
    cfg: &Qwen3Config,
    seed: u64,
    dtype: DType,
    out_dir: &Path,
) -> Result<String> {
    ensure!(
        !out_dir.exists(),
        InvalidInput: "{} already exists; remove it or load it as WeightSource::Dir", out_dir.display()
    );
    let tensors = random_weights(cfg, seed, dtype)?;
    let parent = out_dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_path(parent)?;
    let name = out_dir.file_name().ok_or_else(|| {
        Error::InvalidInput(format!("{} has no directory name", out_dir.display()))
    })?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_path(&tmp)?;
    }
    std::fs::create_dir(&tmp).with_path(&tmp)?;

    let mut file_cfg = cfg.clone();
    file_cfg.torch_dtype = Some(torch_dtype_name(dtype)?.to_string());
    let json = serde_json::to_string_pretty(&file_cfg).map_err(|e| Error::Msg(e.to_string()))?;
    let cfg_path = tmp.join(CONFIG_FILE);
    write_synced(&cfg_path, json.as_bytes())?;

    let st_path = tmp.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&tensors, &st_path)
        .map_err(|e| Error::parse(&st_path, e.to_string()))?;
    drop(tensors);
    std::fs::File::open(&st_path)
        .and_then(|f| f.sync_all())
        .with_path(&st_path)?;
    let hash = sha256_file(&st_path)?;
    if let Err(e) = std::fs::rename(&tmp, out_dir) {
        // Another process synthesized the same snapshot first (concurrent stages): the bytes
        // are a function of (config, seed, dtype), so theirs is ours.
        let _ = std::fs::remove_dir_all(&tmp);
        if out_dir.join(WEIGHTS_FILE).is_file() && sha256_file(&out_dir.join(WEIGHTS_FILE))? == hash
        {
            return Ok(hash);
        }
        return Err(Error::io(out_dir, e));
    }
    Ok(hash)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).with_path(path)?;
    f.write_all(bytes).with_path(path)?;
    f.sync_all().with_path(path)
}

fn torch_dtype_name(dtype: DType) -> Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "float32",
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        other => {
            return Err(Error::InvalidInput(format!(
                "weights in {other:?} are not supported (f32, bf16, f16)"
            )))
        }
    })
}

pub use crate::io::ids::sha256_file;

/// Reads a snapshot directory: its validated config and all tensors (still in file dtype).
pub(crate) fn load_dir(
    dir: &Path,
    device: &Device,
) -> Result<(Qwen3Config, HashMap<String, Tensor>)> {
    if !dir.is_dir() {
        return Err(Error::MissingInput {
            path: dir.to_path_buf(),
            msg: "weights directory does not exist".into(),
            hint: Some("point at a Hugging Face snapshot, or use random weights".into()),
        });
    }
    let cfg_path = dir.join(CONFIG_FILE);
    if !cfg_path.is_file() {
        return Err(Error::MissingInput {
            path: cfg_path,
            msg: "missing; a weights directory needs the model's config.json".into(),
            hint: None,
        });
    }
    let cfg = Qwen3Config::from_json_file(&cfg_path)?;
    let single = dir.join(WEIGHTS_FILE);
    let index = dir.join(WEIGHTS_INDEX_FILE);
    let files: Vec<PathBuf> = if single.is_file() {
        vec![single]
    } else if index.is_file() {
        shard_files(dir, &index)?
    } else {
        return Err(Error::MissingInput {
            path: dir.to_path_buf(),
            msg: format!("no {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE}"),
            hint: None,
        });
    };
    let mut tensors = HashMap::new();
    for f in files {
        tensors.extend(read_safetensors(&f, device)?);
    }
    Ok((cfg, tensors))
}

/// Bytes of the little-endian header length that starts a `.safetensors` file.
const SAFETENSORS_LEN_BYTES: u64 = 8;
/// Upper bound on a header, as in the format's reference reader: a corrupt length must not
/// make us allocate gigabytes.
const SAFETENSORS_MAX_HEADER_BYTES: u64 = 100 << 20;

/// Reads a `.safetensors` file tensor by tensor, each straight into its own buffer. candle's
/// `safetensors::load` reads the whole file into memory first and copies every tensor out
/// of it, which made a run's peak RSS twice the weights; this keeps it at the weights' size.
/// F32, BF16 and F16 tensors (what the model can use) are supported.
pub(crate) fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    ensure!(
        cfg!(target_endian = "little"),
        InvalidInput: "reading {} needs a little-endian host (safetensors data is little-endian)", path.display()
    );
    let mut file = std::fs::File::open(path).with_path(path)?;
    let file_bytes = file.metadata().with_path(path)?.len();
    let bad = |msg: String| Error::parse(path, msg);
    let mut len = [0u8; SAFETENSORS_LEN_BYTES as usize];
    file.read_exact(&mut len)
        .map_err(|e| bad(format!("no header length: {e}")))?;
    let header_bytes = u64::from_le_bytes(len);
    if header_bytes > SAFETENSORS_MAX_HEADER_BYTES
        || SAFETENSORS_LEN_BYTES + header_bytes > file_bytes
    {
        return Err(bad(format!(
            "header length {header_bytes} does not fit a {file_bytes}-byte file"
        )));
    }
    let mut header = vec![0u8; header_bytes as usize];
    file.read_exact(&mut header)
        .map_err(|e| bad(format!("truncated header: {e}")))?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("header is not a JSON object: {e}")))?;
    let data_start = SAFETENSORS_LEN_BYTES + header_bytes;
    let data_bytes = file_bytes - data_start;
    let mut entries = header
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .map(|(name, info)| {
            let entry: SafetensorsEntry = serde_json::from_value(info.clone())
                .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            let dtype = match entry.dtype.as_str() {
                "F32" => DType::F32,
                "BF16" => DType::BF16,
                "F16" => DType::F16,
                other => {
                    return Err(bad(format!(
                        "tensor `{name}` has dtype {other}; only F32, BF16 and F16 are supported"
                    )))
                }
            };
            let numel = entry
                .shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d));
            let [start, end] = entry.data_offsets;
            let fits = numel
                .and_then(|n| n.checked_mul(dtype.size_in_bytes()))
                .is_some_and(|bytes| {
                    start <= end && end <= data_bytes && end - start == bytes as u64
                });
            if !fits {
                return Err(bad(format!(
                    "tensor `{name}`: data offsets {start}..{end} do not hold a {:?} {} tensor \
                     inside {data_bytes} bytes of data",
                    entry.shape, entry.dtype
                )));
            }
            Ok((name.clone(), dtype, entry))
        })
        .collect::<Result<Vec<_>>>()?;
    // In file order, so that the reads go through the file once, front to back.
    entries.sort_by_key(|(_, _, e)| e.data_offsets[0]);
    let mut tensors = HashMap::with_capacity(entries.len());
    for (name, dtype, entry) in entries {
        file.seek(SeekFrom::Start(data_start + entry.data_offsets[0]))
            .with_path(path)?;
        let numel = entry.shape.iter().product();
        let shape = entry.shape.as_slice();
        let tensor = match dtype {
            DType::F32 => {
                read_elements::<f32>(&mut file, numel).map(|v| Tensor::from_vec(v, shape, device))
            }
            DType::BF16 => read_elements::<half::bf16>(&mut file, numel)
                .map(|v| Tensor::from_vec(v, shape, device)),
            _ => read_elements::<half::f16>(&mut file, numel)
                .map(|v| Tensor::from_vec(v, shape, device)),
        }
        .map_err(|e| bad(format!("tensor `{name}`: {e}")))??;
        tensors.insert(name, tensor);
    }
    Ok(tensors)
}

/// One tensor's entry in a `.safetensors` header.
#[derive(serde::Deserialize)]
struct SafetensorsEntry {
    dtype: String,
    shape: Vec<usize>,
    /// Byte range in the data section (after the header).
    data_offsets: [u64; 2],
}

/// Reads `len` little-endian elements from the current position of `file`.
fn read_elements<T: bytemuck::Pod>(
    file: &mut std::fs::File,
    len: usize,
) -> std::io::Result<Vec<T>> {
    let mut values = vec![T::zeroed(); len];
    file.read_exact(bytemuck::cast_slice_mut(&mut values))?;
    Ok(values)
}

/// The distinct shard files a `model.safetensors.index.json` refers to.
fn shard_files(dir: &Path, index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).with_path(index)?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::parse(index, e.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::SchemaMismatch {
            path: index.to_path_buf(),
            msg: "no `weight_map` object".into(),
        })?;
    let names: BTreeSet<&str> = map
        .values()
        .map(|v| {
            v.as_str().ok_or_else(|| Error::SchemaMismatch {
                path: index.to_path_buf(),
                msg: format!("weight_map value {v} is not a file name"),
            })
        })
        .collect::<Result<_>>()?;
    names
        .into_iter()
        .map(|n| {
            let p = dir.join(n);
            if p.is_file() {
                Ok(p)
            } else {
                Err(Error::MissingInput {
                    path: p,
                    msg: format!("shard listed in {WEIGHTS_INDEX_FILE} is missing"),
                    hint: None,
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_cover_every_parameter() {
        for cfg in [Qwen3Config::tiny(), Qwen3Config::qwen3_0_6b()] {
            let n: u64 = tensor_specs(&cfg)
                .iter()
                .map(|(_, s, _)| s.iter().product::<usize>() as u64)
                .sum();
            assert_eq!(n, cfg.num_params());
        }
        let mut untied = Qwen3Config::tiny();
        untied.tie_word_embeddings = false;
        assert!(tensor_specs(&untied)
            .iter()
            .any(|(n, _, _)| n == "lm_head.weight"));
    }

    #[test]
    fn random_weights_are_deterministic_and_scaled() {
        let cfg = Qwen3Config::tiny();
        let a = random_weights(&cfg, 5, DType::F32).unwrap();
        let b = random_weights(&cfg, 5, DType::F32).unwrap();
        let c = random_weights(&cfg, 6, DType::F32).unwrap();
        let name = "model.layers.1.mlp.down_proj.weight";
        let va: Vec<f32> = a[name].flatten_all().unwrap().to_vec1().unwrap();
        let vb: Vec<f32> = b[name].flatten_all().unwrap().to_vec1().unwrap();
        let vc: Vec<f32> = c[name].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
        let std = (va.iter().map(|x| x * x).sum::<f32>() / va.len() as f32).sqrt();
        assert!((std - 0.02).abs() < 0.002, "std {std}");
        let norm: Vec<f32> = a["model.norm.weight"].to_vec1().unwrap();
        assert!(norm.iter().all(|x| *x == 1.0));
    }

    #[test]
    fn sha256_of_known_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn safetensors_reader_matches_candle_for_every_supported_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let dev = Device::Cpu;
        let base = Tensor::arange(0f32, 24., &dev)
            .unwrap()
            .affine(0.37, -2.0)
            .unwrap();
        let tensors: HashMap<String, Tensor> = [
            ("a.f32", base.reshape((2, 3, 4)).unwrap()),
            (
                "b.bf16",
                base.reshape((6, 4)).unwrap().to_dtype(DType::BF16).unwrap(),
            ),
            ("c.f16", base.to_dtype(DType::F16).unwrap()),
            ("d.empty", Tensor::zeros((0, 3), DType::F32, &dev).unwrap()),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let want = candle_core::safetensors::load(&path, &dev).unwrap();
        let got = read_safetensors(&path, &dev).unwrap();
        assert_eq!(got.len(), want.len());
        for (name, w) in &want {
            let g = &got[name];
            assert_eq!((g.dtype(), g.dims()), (w.dtype(), w.dims()), "{name}");
            let (g, w) = (
                g.to_dtype(DType::F32).unwrap(),
                w.to_dtype(DType::F32).unwrap(),
            );
            let (g, w) = (g.flatten_all().unwrap(), w.flatten_all().unwrap());
            assert_eq!(
                g.to_vec1::<f32>().unwrap(),
                w.to_vec1::<f32>().unwrap(),
                "{name}"
            );
        }
    }

    #[test]
    fn safetensors_reader_rejects_truncated_and_inconsistent_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let t = Tensor::ones((4, 4), DType::F32, &Device::Cpu).unwrap();
        candle_core::safetensors::save(&HashMap::from([("w".to_string(), t)]), &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let expect_err = |bytes: &[u8], what: &str| {
            std::fs::write(&path, bytes).unwrap();
            let err = read_safetensors(&path, &Device::Cpu)
                .unwrap_err()
                .to_string();
            assert!(err.contains(what) && err.contains("m.safetensors"), "{err}");
        };
        // Data cut short: the offsets no longer fit.
        expect_err(&bytes[..bytes.len() - 4], "do not hold a [4, 4] F32 tensor");
        // Header cut short.
        expect_err(&bytes[..8 + header_len / 2], "does not fit");
        // A dtype the model cannot use.
        let header = String::from_utf8(bytes[8..8 + header_len].to_vec()).unwrap();
        let mut other = bytes.clone();
        other[8..8 + header_len].copy_from_slice(header.replace("F32", "I32").as_bytes());
        expect_err(&other, "only F32, BF16 and F16");
        // Not JSON.
        let mut garbage = bytes.clone();
        garbage[8] = b'[';
        expect_err(&garbage, "not a JSON object");
        // A shape whose element count overflows is an error, not a wrapped size.
        let huge = header.replace("[4,4]", "[4611686018427387904,8]");
        let mut overflow = (huge.len() as u64).to_le_bytes().to_vec();
        overflow.extend_from_slice(huge.as_bytes());
        overflow.extend_from_slice(&bytes[8 + header_len..]);
        expect_err(
            &overflow,
            "do not hold a [4611686018427387904, 8] F32 tensor",
        );
    }
}
