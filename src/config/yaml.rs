//! YAML files and values, read into `serde_json::Value` so merging happens on one simple tree.

use std::path::Path;

use serde_json::Value;

use crate::error::IoContext;
use crate::{Error, Result};

/// Parses a YAML scalar or document (e.g. an override's value) into a JSON value.
pub fn parse_yaml_value(text: &str) -> std::result::Result<Value, String> {
    if text.trim().is_empty() {
        // `key=` sets an empty string, as Hydra does.
        return Ok(Value::String(String::new()));
    }
    serde_saphyr::from_str::<Value>(text).map_err(|e| first_line(&e.to_string()))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// A config file: its tree, and the `# @package` directive if it has one.
#[derive(Debug, Clone)]
pub struct YamlFile {
    pub value: Value,
    /// `Some("_global_")` for `# @package _global_`, etc.
    pub package: Option<String>,
}

/// Reads a YAML config file. An empty file is an empty mapping; a file whose top level is
/// not a mapping is an error naming the file.
pub fn load_yaml_file(path: &Path) -> Result<YamlFile> {
    let text = std::fs::read_to_string(path).with_path(path)?;
    let package = text
        .lines()
        .take_while(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        .find_map(|l| {
            l.trim_start()
                .trim_start_matches('#')
                .trim()
                .strip_prefix("@package")
                .map(|p| p.trim().to_string())
        });
    let value = if text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---"
    }) {
        Value::Object(Default::default())
    } else {
        serde_saphyr::from_str::<Value>(&text)
            .map_err(|e| Error::parse(path, format!("malformed YAML: {e}")))?
    };
    let value = match value {
        Value::Null => Value::Object(Default::default()),
        v @ Value::Object(_) => v,
        other => {
            return Err(Error::parse(
                path,
                format!(
                    "a config file must be a mapping at the top level, found {}",
                    kind_name(&other)
                ),
            ))
        }
    };
    Ok(YamlFile { value, package })
}

/// Human name of a JSON value's type, for error messages.
pub fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Renders a value as YAML for `--cfg job`.
pub fn to_yaml_string(value: &Value) -> Result<String> {
    serde_saphyr::to_string(value)
        .map_err(|e| Error::InvalidInput(format!("cannot render config as YAML: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_parse_as_yaml() {
        assert_eq!(parse_yaml_value("4").unwrap(), json!(4));
        assert_eq!(parse_yaml_value("0.5").unwrap(), json!(0.5));
        assert_eq!(parse_yaml_value("-1").unwrap(), json!(-1));
        assert_eq!(parse_yaml_value("null").unwrap(), Value::Null);
        assert_eq!(parse_yaml_value("qwen3").unwrap(), json!("qwen3"));
        assert_eq!(parse_yaml_value("[1, 2]").unwrap(), json!([1, 2]));
        assert_eq!(parse_yaml_value("{a: 1}").unwrap(), json!({"a": 1}));
        assert_eq!(parse_yaml_value("'1'").unwrap(), json!("1"));
        assert_eq!(parse_yaml_value("").unwrap(), json!(""));
    }

    #[test]
    fn files_with_package_and_errors() {
        let dir = crate::io::atomic::tests::tempdir();
        let p = dir.join("a.yaml");
        std::fs::write(&p, "# @package _global_\n# comment\nx:\n  y: 1\n").unwrap();
        let f = load_yaml_file(&p).unwrap();
        assert_eq!(f.package.as_deref(), Some("_global_"));
        assert_eq!(f.value, json!({"x": {"y": 1}}));
        std::fs::write(&p, "# only a comment\n").unwrap();
        assert_eq!(load_yaml_file(&p).unwrap().value, json!({}));
        std::fs::write(&p, "x: [1, 2\n").unwrap();
        let e = load_yaml_file(&p).unwrap_err();
        assert!(matches!(e, Error::Parse { .. }), "{e}");
        assert!(e.to_string().contains("a.yaml"), "{e}");
        std::fs::write(&p, "- 1\n- 2\n").unwrap();
        assert!(load_yaml_file(&p)
            .unwrap_err()
            .to_string()
            .contains("mapping"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
