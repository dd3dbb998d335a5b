//! Stable identifiers: short hex digests of canonical JSON.
//!
//! Run ids must be the same on every machine for the same inputs, so they hash the canonical
//! (sorted-key, compact) JSON of what determines the run, never a timestamp or a path.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Lower-case hex of a byte slice.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// Full sha256 hex digest of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Full sha256 hex digest of a file's bytes, read in pieces (weight files are gigabytes).
pub fn sha256_file(path: &std::path::Path) -> Result<String> {
    let mut hasher = Sha256::new();
    hash_file_into(path, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

/// Feeds a file's bytes to `hasher` without holding them all.
pub(crate) fn hash_file_into(path: &std::path::Path, hasher: &mut Sha256) -> Result<()> {
    use crate::error::IoContext;
    use std::io::Read;
    let mut file = std::fs::File::open(path).with_path(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).with_path(path)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

/// Canonical JSON: keys sorted (serde_json's map is a BTreeMap), no whitespace.
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    let value = serde_json::to_value(value)
        .map_err(|e| Error::InvalidInput(format!("value is not serializable to JSON: {e}")))?;
    serde_json::to_string(&value)
        .map_err(|e| Error::InvalidInput(format!("value is not serializable to JSON: {e}")))
}

/// `prefix-<first len hex digits of sha256(canonical JSON of parts)>`.
///
/// `len` is clamped to 4..=64. Two different `parts` collide with probability 16^-len.
pub fn stable_id<T: Serialize + ?Sized>(parts: &T, prefix: &str, len: usize) -> Result<String> {
    let digest = sha256_hex(canonical_json(parts)?.as_bytes());
    let len = len.clamp(4, 64);
    Ok(if prefix.is_empty() {
        digest[..len].to_string()
    } else {
        format!("{prefix}-{}", &digest[..len])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sha256_matches_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn stable_id_ignores_key_order_and_depends_on_values() {
        let a = stable_id(&json!({"b": 1, "a": [1, 2]}), "wl", 10).unwrap();
        let b = stable_id(&json!({"a": [1, 2], "b": 1}), "wl", 10).unwrap();
        let c = stable_id(&json!({"a": [1, 2], "b": 2}), "wl", 10).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.starts_with("wl-") && a.len() == 13, "{a}");
        // Pinned: ids must never change across releases for the same inputs.
        assert_eq!(
            stable_id(&json!({"x": 1}), "", 12).unwrap(),
            sha256_hex(br#"{"x":1}"#)[..12]
        );
    }
}
