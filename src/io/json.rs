//! JSON as the contracts want it: sorted keys, 2-space indent, trailing newline.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::IoContext;
use crate::io::atomic::write_atomic;
use crate::{Error, Result};

/// Renders `value` with sorted keys (serde_json's map is ordered), 2-space indent and a
/// trailing newline, so files diff cleanly and hash stably.
pub fn to_json_string<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    let value = serde_json::to_value(value)
        .map_err(|e| Error::InvalidInput(format!("value is not serializable to JSON: {e}")))?;
    let mut text = serde_json::to_string_pretty(&value)
        .map_err(|e| Error::InvalidInput(format!("value is not serializable to JSON: {e}")))?;
    text.push('\n');
    Ok(text)
}

/// Writes `value` to `path` atomically in the contract's JSON style.
pub fn write_json<T: Serialize + ?Sized>(path: impl AsRef<Path>, value: &T) -> Result<()> {
    write_atomic(path, to_json_string(value)?.as_bytes())
}

/// Reads and deserializes a JSON file, naming the file (and the field path) on failure.
pub fn read_json<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).with_path(path)?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            Error::SchemaMismatch {
                path: path.to_path_buf(),
                msg: format!("field `{field}`: {inner}"),
            }
        } else {
            Error::parse(path, format!("malformed JSON: {inner}"))
        }
    })
}

/// Reads a JSON file, checks it against a JSON Schema (see `io::json_schemas`), then
/// deserializes it. Errors name the file and the JSON path of the first violation.
pub fn read_json_validated<T: DeserializeOwned>(
    path: impl AsRef<Path>,
    schema: &serde_json::Value,
) -> Result<T> {
    let path = path.as_ref();
    let value: serde_json::Value = read_json(path)?;
    crate::io::json_schemas::validate(&value, schema).map_err(|(at, msg)| {
        Error::SchemaMismatch {
            path: path.to_path_buf(),
            msg: format!("{at}: {msg}"),
        }
    })?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        Error::SchemaMismatch {
            path: path.to_path_buf(),
            msg: format!("field `{field}`: {}", e.into_inner()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_sorted_two_space_trailing_newline() {
        let s = to_json_string(&json!({"b": 1, "a": {"d": 2, "c": 3}})).unwrap();
        assert_eq!(
            s,
            "{\n  \"a\": {\n    \"c\": 3,\n    \"d\": 2\n  },\n  \"b\": 1\n}\n"
        );
    }
}
