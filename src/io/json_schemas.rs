//! JSON Schemas of the JSON contracts, and a small validator for the subset they use
//! (`type`, `required`, `properties`, `additionalProperties`, `items`, `enum`, `minimum`).
//! Readers validate a JSON file against its schema before deserializing it, so a missing
//! or mistyped field is reported with its JSON path.

use serde_json::{json, Value};

use crate::io::schema::SCHEMA_VERSION;

fn obj(required: &[&str], props: Value) -> Value {
    json!({"type": "object", "required": required, "properties": props})
}

fn hydra_schema() -> Value {
    obj(
        &["config_path", "config_name"],
        json!({
            "config_path": {"type": "string"},
            "config_name": {"type": "string"},
            "overrides": {"type": "array", "items": {"type": "string"}},
            "choices": {"type": "object"},
        }),
    )
}

fn env_schema() -> Value {
    obj(
        &[
            "cpu_model",
            "cpu_logical_cores",
            "memory_bytes",
            "os",
            "device",
            "threads",
            "crate_versions",
        ],
        json!({
            "hostname": {"type": "string"},
            "cpu_model": {"type": "string"},
            "cpu_logical_cores": {"type": "integer", "minimum": 1},
            "memory_bytes": {"type": "integer", "minimum": 0},
            "os": {"type": "string"},
            "kernel": {"type": "string"},
            "device": {"type": "string"},
            "threads": {"type": "integer", "minimum": 1},
            "crate_versions": {"type": "object"},
        }),
    )
}

fn with_header(mut schema: Value, name: &str, title: &str) -> Value {
    schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    schema["$id"] = json!(format!("simreal/v{SCHEMA_VERSION}/{name}"));
    schema["title"] = json!(title);
    schema
}

/// `run_meta.json` (every stage).
pub fn run_meta_schema() -> Value {
    with_header(
        obj(
            &[
                "schema_version",
                "run_id",
                "run_type",
                "model",
                "started_at",
                "ended_at",
                "git_commit",
                "env",
                "params",
                "hydra",
                "inputs",
            ],
            json!({
                "schema_version": {"type": "integer", "enum": [SCHEMA_VERSION]},
                "run_id": {"type": "string"},
                "run_type": {"type": "string", "enum": ["workload", "real", "vidur", "vidur_profile", "compare", "sweeps"]},
                "model": {"type": "string"},
                "started_at": {"type": "string"},
                "ended_at": {"type": "string"},
                "git_commit": {"type": ["string", "null"]},
                "git_dirty": {"type": ["boolean", "null"]},
                "env": env_schema(),
                "params": {"type": "object"},
                "hydra": hydra_schema(),
                "seed": {"type": ["integer", "null"]},
                "inputs": {"type": "object"},
                "weights": {"type": ["string", "null"]},
                "extra": {"type": "object"},
            }),
        ),
        "run_meta.json",
        "provenance of one stage run",
    )
}

/// `workload_meta.json`.
pub fn workload_meta_schema() -> Value {
    with_header(
        obj(
            &[
                "schema_version",
                "workload_id",
                "model",
                "seed",
                "tokenizer_ref",
                "created_at",
                "git_commit",
                "paths",
                "hydra",
                "params",
                "num_requests",
                "summary",
            ],
            json!({
                "schema_version": {"type": "integer", "enum": [SCHEMA_VERSION]},
                "workload_id": {"type": "string"},
                "model": {"type": "string"},
                "seed": {"type": "integer", "minimum": 0},
                "tokenizer_ref": {"type": "string"},
                "created_at": {"type": "string"},
                "git_commit": {"type": ["string", "null"]},
                "paths": obj(
                    &["prompts", "trace_lengths", "trace_intervals"],
                    json!({
                        "prompts": {"type": "string"},
                        "trace_lengths": {"type": "string"},
                        "trace_intervals": {"type": "string"},
                    }),
                ),
                "hydra": hydra_schema(),
                "params": {"type": "object"},
                "num_requests": {"type": "integer", "minimum": 1},
                "summary": {"type": "object"},
            }),
        ),
        "workload_meta.json",
        "what a workload is and how it was made",
    )
}

/// Every JSON contract: (file stem, schema).
pub fn json_file_schemas() -> Vec<(&'static str, Value)> {
    vec![
        ("run_meta", run_meta_schema()),
        ("workload_meta", workload_meta_schema()),
    ]
}

/// Validates `value` against the supported subset of JSON Schema; returns the first
/// violation as `(json path, message)`.
pub fn validate(value: &Value, schema: &Value) -> Result<(), (String, String)> {
    validate_at(value, schema, "$")
}

fn type_matches(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        _ => false,
    }
}

fn validate_at(value: &Value, schema: &Value, path: &str) -> Result<(), (String, String)> {
    if let Some(t) = schema.get("type") {
        let ok = match t {
            Value::String(t) => type_matches(value, t),
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .any(|t| type_matches(value, t)),
            _ => true,
        };
        if !ok {
            return Err((
                path.to_string(),
                format!("expected type {t}, found {value}"),
            ));
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum") {
        if !allowed.contains(value) {
            return Err((
                path.to_string(),
                format!("{value} is not one of {allowed:?}"),
            ));
        }
    }
    if let (Some(min), Some(v)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) {
        if v < min {
            return Err((path.to_string(), format!("{v} is below the minimum {min}")));
        }
    }
    if let Value::Object(map) = value {
        if let Some(Value::Array(required)) = schema.get("required") {
            for r in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(r) {
                    return Err((path.to_string(), format!("missing required field `{r}`")));
                }
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, v) in map {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate_at(v, s, &format!("{path}.{k}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err((path.to_string(), format!("unexpected field `{k}`")));
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            validate_at(v, item_schema, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validator_reports_path_of_first_violation() {
        let schema = obj(
            &["a", "b"],
            json!({"a": {"type": "integer", "minimum": 0}, "b": obj(&["c"], json!({"c": {"type": ["string", "null"]}}))}),
        );
        assert!(validate(&json!({"a": 1, "b": {"c": null}}), &schema).is_ok());
        assert_eq!(
            validate(&json!({"a": 1}), &schema).unwrap_err().1,
            "missing required field `b`"
        );
        assert_eq!(
            validate(&json!({"a": -1, "b": {"c": "x"}}), &schema)
                .unwrap_err()
                .0,
            "$.a"
        );
        assert_eq!(
            validate(&json!({"a": 1, "b": {"c": 3}}), &schema)
                .unwrap_err()
                .0,
            "$.b.c"
        );
    }

    #[test]
    fn run_meta_of_a_real_record_validates() {
        let meta = crate::io::provenance::RunMeta::begin(
            "real-x",
            "real",
            "qwen3_tiny",
            json!({}),
            crate::io::provenance::HydraInfo {
                config_path: "configs".into(),
                config_name: "real".into(),
                overrides: vec![],
                choices: Default::default(),
            },
            crate::io::provenance::HostFingerprint::collect("cpu", 2),
        );
        let v = serde_json::to_value(&meta).unwrap();
        validate(&v, &run_meta_schema()).unwrap();
    }
}
