//! The tokenizer that prompts are measured with: Qwen3's, bundled in the binary, or any
//! `tokenizer.json` named in the config.
//!
//! A tokenizer is identified by a reference string recorded in `workload_meta.json`
//! (`bundled:qwen3@sha256:<16 hex>` or `file:<path>@sha256:<16 hex>`), so a run can be
//! traced back to the exact vocabulary that sized its prompts.
//!
//! Token counts here are of the raw text, **without special tokens**. Qwen3 adds none
//! anyway (no BOS); an engine using a tokenizer that does must encode prompts the same way
//! for the counts to agree.

use std::fmt;
#[cfg(feature = "prompts")]
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// `assets/tokenizer/qwen3/tokenizer.json.gz`: Qwen3's tokenizer, gzip-compressed.
#[cfg(feature = "prompts")]
static BUNDLED_QWEN3_GZ: &[u8] = include_bytes!("../../assets/tokenizer/qwen3/tokenizer.json.gz");

/// SHA-256 of the uncompressed bundled `tokenizer.json` (also in its README); checked at
/// every load so a corrupted or swapped asset cannot go unnoticed.
pub const BUNDLED_QWEN3_SHA256: &str =
    "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4";

/// How a reference string abbreviates a hash.
const REFERENCE_HASH_HEX_CHARS: usize = 16;

/// Where the tokenizer comes from. In a config it is one string: `bundled:qwen3`, or a
/// path to a `tokenizer.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TokenizerSource {
    /// Qwen3's tokenizer, embedded in the binary.
    BundledQwen3,
    /// A Hugging Face `tokenizer.json` on disk.
    File(PathBuf),
}

impl TokenizerSource {
    const BUNDLED_PREFIX: &'static str = "bundled:";
    const BUNDLED_QWEN3: &'static str = "bundled:qwen3";

    /// The reference string of the tokenizer this source names — what
    /// [`Tokenizer::reference`] says once it is loaded — without loading it (a file is read
    /// and hashed, not parsed).
    pub fn reference(&self) -> Result<String> {
        match self {
            TokenizerSource::BundledQwen3 => Ok(bundled_reference(BUNDLED_QWEN3_SHA256)),
            TokenizerSource::File(path) => Ok(file_reference(path, &read_tokenizer_file(path)?)),
        }
    }
}

fn bundled_reference(sha256: &str) -> String {
    format!(
        "{}@sha256:{}",
        TokenizerSource::BUNDLED_QWEN3,
        &sha256[..REFERENCE_HASH_HEX_CHARS]
    )
}

fn file_reference(path: &Path, json: &[u8]) -> String {
    format!(
        "file:{}@sha256:{}",
        path.display(),
        &sha256_hex(json)[..REFERENCE_HASH_HEX_CHARS]
    )
}

fn read_tokenizer_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingInput {
            path: path.to_path_buf(),
            msg: "tokenizer file not found".to_string(),
            hint: Some("use `bundled:qwen3` or a path to a tokenizer.json".to_string()),
        },
        _ => Error::io(path, e),
    })
}

impl fmt::Display for TokenizerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenizerSource::BundledQwen3 => f.write_str(Self::BUNDLED_QWEN3),
            TokenizerSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl FromStr for TokenizerSource {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s == Self::BUNDLED_QWEN3 {
            Ok(TokenizerSource::BundledQwen3)
        } else if s.starts_with(Self::BUNDLED_PREFIX) {
            Err(Error::Tokenizer(format!(
                "unknown bundled tokenizer `{s}`; the only one is `{}`",
                Self::BUNDLED_QWEN3
            )))
        } else if s.is_empty() {
            Err(Error::Tokenizer(
                "empty tokenizer source; use `bundled:qwen3` or a path to a tokenizer.json"
                    .to_string(),
            ))
        } else {
            Ok(TokenizerSource::File(PathBuf::from(s)))
        }
    }
}

impl TryFrom<String> for TokenizerSource {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<TokenizerSource> for String {
    fn from(source: TokenizerSource) -> String {
        source.to_string()
    }
}

#[cfg(feature = "prompts")]
/// A loaded tokenizer and the reference string that identifies it.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    reference: String,
}

#[cfg(feature = "prompts")]
impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(feature = "prompts")]
fn tokenizer_error(context: &str, e: impl fmt::Display) -> Error {
    Error::Tokenizer(format!("{context}: {e}"))
}

#[cfg(feature = "prompts")]
/// Parses a `tokenizer.json`. Goes through `FromStr`, which is compiled (optimised) inside
/// the `tokenizers` crate, rather than the generic `from_bytes`, which would be compiled
/// with this crate's settings and parses about twice as slowly in a debug build.
fn parse_tokenizer_json(json: &[u8], what: &str) -> Result<tokenizers::Tokenizer> {
    let text = std::str::from_utf8(json)
        .map_err(|e| tokenizer_error(&format!("{what} is not UTF-8"), e))?;
    tokenizers::Tokenizer::from_str(text)
        .map_err(|e| tokenizer_error(&format!("parsing {what}"), e))
}

#[cfg(feature = "prompts")]
impl Tokenizer {
    /// Loads the tokenizer `source` names.
    pub fn load(source: &TokenizerSource) -> Result<Self> {
        match source {
            TokenizerSource::BundledQwen3 => Self::bundled_qwen3(),
            TokenizerSource::File(path) => Self::from_file(path),
        }
    }

    /// Qwen3's tokenizer from the copy embedded in the binary (a second or two to
    /// decompress, check and parse; load once and share).
    pub fn bundled_qwen3() -> Result<Self> {
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(BUNDLED_QWEN3_GZ)
            .read_to_end(&mut json)
            .map_err(|e| tokenizer_error("decompressing the bundled Qwen3 tokenizer", e))?;
        let sha256 = sha256_hex(&json);
        if sha256 != BUNDLED_QWEN3_SHA256 {
            return Err(Error::Tokenizer(format!(
                "the bundled Qwen3 tokenizer has sha256 {sha256}, expected \
                 {BUNDLED_QWEN3_SHA256}; the asset is corrupted"
            )));
        }
        let inner = parse_tokenizer_json(&json, "the bundled Qwen3 tokenizer")?;
        Ok(Self {
            inner,
            reference: bundled_reference(&sha256),
        })
    }

    /// A Hugging Face `tokenizer.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let json = read_tokenizer_file(path)?;
        let inner = parse_tokenizer_json(&json, &path.display().to_string())?;
        Ok(Self {
            inner,
            reference: file_reference(path, &json),
        })
    }

    /// Identifies this tokenizer in run metadata.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// Token ids of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode_fast(text, false)
            .map_err(|e| tokenizer_error("encoding", e))?
            .get_ids()
            .to_vec())
    }

    /// Number of tokens of `text`, without special tokens.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self
            .inner
            .encode_fast(text, false)
            .map_err(|e| tokenizer_error("encoding", e))?
            .len())
    }

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| tokenizer_error("decoding", e))
    }

    /// The underlying Hugging Face tokenizer, for callers that need more than counting.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_strings_round_trip() {
        assert_eq!(
            "bundled:qwen3".parse::<TokenizerSource>().unwrap(),
            TokenizerSource::BundledQwen3
        );
        assert_eq!(
            "models/tok.json".parse::<TokenizerSource>().unwrap(),
            TokenizerSource::File("models/tok.json".into())
        );
        assert!("bundled:llama".parse::<TokenizerSource>().is_err());
        assert!("".parse::<TokenizerSource>().is_err());
        let yaml = serde_saphyr::to_string(&TokenizerSource::BundledQwen3).unwrap();
        assert_eq!(
            serde_saphyr::from_str::<TokenizerSource>(&yaml).unwrap(),
            TokenizerSource::BundledQwen3
        );
    }

    #[cfg(feature = "prompts")]
    #[test]
    fn a_source_knows_its_reference_without_loading() {
        let loaded = Tokenizer::bundled_qwen3().unwrap();
        assert_eq!(
            TokenizerSource::BundledQwen3.reference().unwrap(),
            loaded.reference()
        );
        let err = TokenizerSource::File("/nonexistent/tokenizer.json".into())
            .reference()
            .unwrap_err();
        assert!(matches!(err, Error::MissingInput { .. }), "{err}");
    }

    #[cfg(feature = "prompts")]
    #[test]
    fn missing_file_is_a_missing_input() {
        let err = Tokenizer::from_file(Path::new("/nonexistent/tokenizer.json")).unwrap_err();
        assert!(matches!(err, Error::MissingInput { .. }), "{err}");
    }
}
