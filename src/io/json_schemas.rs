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
            "build": {"type": "string"},
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
                // "v1" (written since the precursor aliases), 1 (written before).
                "schema_version": {"type": ["string", "integer"], "enum": [format!("v{SCHEMA_VERSION}"), SCHEMA_VERSION]},
                "run_id": {"type": "string"},
                "run_type": {"type": "string", "enum": ["workload", "real", "vidur", "vidur_profile", "compare", "replay", "sweeps", "capacity"]},
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
                "backend": {"type": "string"},
                "workload_dir": {"type": "string"},
                "profiling_root": {"type": "string"},
                "real_run_dir": {"type": "string"},
                "sim_run_dir": {"type": "string"},
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

fn nullable_number() -> Value {
    json!({"type": ["number", "null"]})
}

fn summary_stats_schema() -> Value {
    obj(
        &["count", "mean", "min", "p50", "p90", "p95", "p99", "max"],
        json!({
            "count": {"type": "integer", "minimum": 1},
            "mean": {"type": "number"},
            "std": nullable_number(),
            "min": {"type": "number"},
            "p50": {"type": "number"},
            "p90": {"type": "number"},
            "p95": {"type": "number"},
            "p99": {"type": "number"},
            "max": {"type": "number"},
        }),
    )
}

fn stat_error_schema() -> Value {
    obj(
        &["real_ms", "sim_ms", "err_pct", "abs_err_pct"],
        json!({
            "real_ms": {"type": "number"},
            "sim_ms": {"type": "number"},
            "err_pct": nullable_number(),
            "abs_err_pct": nullable_number(),
        }),
    )
}

fn interval_schema() -> Value {
    json!({"type": "array", "items": {"type": "number"}})
}

fn nullable_interval() -> Value {
    json!({"type": ["array", "null"], "items": {"type": "number"}})
}

const VERDICTS: [&str; 6] = [
    "indistinguishable",
    "noise_limited",
    "within_target",
    "off",
    "n_too_small",
    "undefined",
];

/// One statistic's verdict against every real run (`analysis::compare::verdict::StatCell`).
fn stat_cell_schema() -> Value {
    obj(
        &["stat", "verdict", "target_pct", "min_samples", "estimate"],
        json!({
            "stat": {"type": "string", "enum": ["mean", "p50", "p90", "p95", "p99"]},
            "verdict": {"type": "string", "enum": VERDICTS},
            "target_pct": {"type": "number", "minimum": 0},
            "min_samples": {"type": "integer", "minimum": 1},
            "estimate": nullable(obj(
                &["real_ms", "real_ci_ms", "real_runs_ms", "real_band_ms", "band_width_pct", "sim_ms", "err_pct", "err_ci_pct", "noise_ratio"],
                json!({
                    "real_ms": {"type": "number"},
                    "real_ci_ms": interval_schema(),
                    "real_runs_ms": {"type": "array", "items": {"type": "number"}},
                    "real_band_ms": nullable_interval(),
                    "band_width_pct": nullable_number(),
                    "sim_ms": {"type": "number"},
                    "err_pct": nullable_number(),
                    "err_ci_pct": nullable_interval(),
                    "noise_ratio": nullable_number(),
                }),
            )),
        }),
    )
}

fn distance_check_schema() -> Value {
    obj(
        &[
            "sim_vs_real",
            "real_vs_real",
            "sim_mean",
            "real_range",
            "within_real_range",
        ],
        json!({
            "sim_vs_real": {"type": "array", "items": {"type": "number", "minimum": 0}},
            "real_vs_real": {"type": "array", "items": {"type": "number", "minimum": 0}},
            "sim_mean": {"type": "number", "minimum": 0},
            "real_range": nullable_interval(),
            "within_real_range": {"type": ["boolean", "null"]},
        }),
    )
}

/// A metric's verdict against every real run (`analysis::compare::verdict::MetricFidelity`).
fn metric_fidelity_schema() -> Value {
    let cells: serde_json::Map<String, Value> = ["mean", "p50", "p90", "p95", "p99"]
        .iter()
        .map(|k| (k.to_string(), stat_cell_schema()))
        .collect();
    nullable(obj(
        &["num_real_runs", "count", "groups", "cells", "distribution"],
        json!({
            "num_real_runs": {"type": "integer", "minimum": 1},
            "count": {"type": "integer", "minimum": 1},
            "groups": {"type": "integer", "minimum": 1},
            "cells": obj(&["mean", "p50", "p90", "p95", "p99"], Value::Object(cells)),
            "distribution": obj(
                &["ks", "wasserstein_ms"],
                json!({"ks": distance_check_schema(), "wasserstein_ms": distance_check_schema()}),
            ),
        }),
    ))
}

/// The comparison-wide verdict (`analysis::compare::verdict::FidelitySummary`).
fn fidelity_summary_schema() -> Value {
    let counts: serde_json::Map<String, Value> = VERDICTS
        .iter()
        .map(|k| (k.to_string(), json!({"type": "integer", "minimum": 0})))
        .collect();
    obj(
        &[
            "num_real_runs",
            "noise_measured",
            "counts",
            "targets_pct",
            "bootstrap",
            "distribution_metrics",
            "ks_within_real_range",
            "wasserstein_within_real_range",
        ],
        json!({
            "num_real_runs": {"type": "integer", "minimum": 1},
            "noise_measured": {"type": "boolean"},
            "counts": obj(&VERDICTS, Value::Object(counts)),
            "targets_pct": obj(
                &["mean", "p50", "p90", "p95", "p99"],
                json!({
                    "mean": {"type": "number"},
                    "p50": {"type": "number"},
                    "p90": {"type": "number"},
                    "p95": {"type": "number"},
                    "p99": {"type": "number"},
                }),
            ),
            "bootstrap": obj(
                &["method", "resamples", "confidence", "seed"],
                json!({
                    "method": {"type": "string"},
                    "resamples": {"type": "integer", "minimum": 1},
                    "confidence": {"type": "number"},
                    "seed": {"type": "integer", "minimum": 0},
                }),
            ),
            "distribution_metrics": {"type": "integer", "minimum": 0},
            "ks_within_real_range": {"type": "integer", "minimum": 0},
            "wasserstein_within_real_range": {"type": "integer", "minimum": 0},
        }),
    )
}

fn metric_comparison_schema() -> Value {
    let stats: serde_json::Map<String, Value> = ["mean", "p50", "p90", "p95", "p99"]
        .iter()
        .map(|k| (k.to_string(), stat_error_schema()))
        .collect();
    let mut schema = obj(
        &[
            "metric",
            "count",
            "real",
            "sim",
            "stat_errors",
            "paired",
            "ks",
            "wasserstein_ms",
            "noise",
            "fidelity",
        ],
        json!({
            "metric": {"type": "string", "enum": ["ttft", "tpot", "itl", "e2e", "queue_delay"]},
            "count": {"type": "integer", "minimum": 1},
            "real": summary_stats_schema(),
            "sim": summary_stats_schema(),
            "stat_errors": obj(&["mean", "p50", "p90", "p95", "p99"], Value::Object(stats)),
            "paired": {
                "type": ["object", "null"],
                "required": ["pairs", "zero_real", "mape_pct", "median_ape_pct", "mean_signed_pct"],
                "properties": {
                    "pairs": {"type": "integer", "minimum": 1},
                    "zero_real": {"type": "integer", "minimum": 0},
                    "mape_pct": {"type": "number", "minimum": 0},
                    "median_ape_pct": {"type": "number", "minimum": 0},
                    "mean_signed_pct": {"type": "number"},
                },
            },
            "ks": obj(
                &["statistic", "p_value", "method"],
                json!({
                    "statistic": {"type": "number", "minimum": 0},
                    "p_value": {"type": "number", "minimum": 0},
                    "method": {"type": "string", "enum": ["exact", "asymptotic"]},
                }),
            ),
            "wasserstein_ms": {"type": "number", "minimum": 0},
            "noise": {
                "type": ["object", "null"],
                "required": ["num_other_runs", "max_abs_stat_diff_pct", "max_mape_pct"],
                "properties": {
                    "num_other_runs": {"type": "integer", "minimum": 1},
                    "max_abs_stat_diff_pct": {"type": "object"},
                    "max_mape_pct": nullable_number(),
                },
            },
            "fidelity": metric_fidelity_schema(),
        }),
    );
    schema["type"] = json!(["object", "null"]);
    schema
}

fn compared_run_schema() -> Value {
    obj(
        &[
            "run_id",
            "path",
            "source",
            "backend",
            "num_requests",
            "has_tokens",
            "has_iterations",
        ],
        json!({
            "run_id": {"type": "string"},
            "path": {"type": "string"},
            "source": {"type": "string", "enum": ["simreal", "vidur_output", "vllm_benchmark"]},
            "backend": {"type": "string"},
            "model": {"type": ["string", "null"]},
            "workload_id": {"type": ["string", "null"]},
            "kv_blocks": {"type": ["integer", "null"]},
            "num_requests": {"type": "integer", "minimum": 0},
            "has_tokens": {"type": "boolean"},
            "has_iterations": {"type": "boolean"},
        }),
    )
}

fn throughput_schema() -> Value {
    obj(
        &[
            "completed_requests",
            "output_tokens",
            "span_s",
            "requests_per_s",
            "output_tokens_per_s",
        ],
        json!({
            "completed_requests": {"type": "integer", "minimum": 0},
            "output_tokens": {"type": "integer", "minimum": 0},
            "span_s": {"type": "number", "minimum": 0},
            "requests_per_s": {"type": "number", "minimum": 0},
            "output_tokens_per_s": {"type": "number", "minimum": 0},
        }),
    )
}

fn component_schema() -> Value {
    obj(
        &[
            "name",
            "measured_ms",
            "predicted_ms",
            "diff_ms",
            "diff_pct_of_busy",
            "err_pct",
        ],
        json!({
            "name": {"type": "string"},
            "measured_ms": {"type": "number"},
            "predicted_ms": {"type": "number"},
            "diff_ms": {"type": "number"},
            "diff_pct_of_busy": {"type": "number"},
            "err_pct": nullable_number(),
        }),
    )
}

fn nullable(mut schema: Value) -> Value {
    let t = schema["type"].clone();
    schema["type"] = json!([t, "null"]);
    schema
}

/// `summary.json` of the `compare` stage.
pub fn compare_summary_schema() -> Value {
    let metrics: serde_json::Map<String, Value> = ["ttft", "tpot", "itl", "e2e", "queue_delay"]
        .iter()
        .map(|k| (k.to_string(), metric_comparison_schema()))
        .collect();
    with_header(
        obj(
            &[
                "schema_version",
                "compare_id",
                "created_at",
                "verdict",
                "definitions",
                "runs",
                "join",
                "metrics",
                "unavailable_metrics",
                "throughput",
                "attribution",
                "notes",
                "fidelity",
                "cross_device",
            ],
            json!({
                "schema_version": {"type": "integer", "enum": [SCHEMA_VERSION]},
                "compare_id": {"type": "string"},
                "created_at": {"type": "string"},
                "verdict": {"type": "string"},
                "cross_device": {"type": ["string", "null"]},
                "definitions": {"type": "object"},
                "runs": obj(
                    &["real", "sim"],
                    json!({
                        "real": {"type": "array", "items": compared_run_schema()},
                        "sim": compared_run_schema(),
                    }),
                ),
                "join": obj(
                    &["requests_compared", "requests_dropped", "request_drops", "tokens_compared", "token_drops", "explanations"],
                    json!({
                        "requests_compared": {"type": "integer", "minimum": 1},
                        "requests_dropped": {"type": "integer", "minimum": 0},
                        "request_drops": obj(
                            &["only_in_real", "only_in_sim", "error_in_real", "error_in_sim", "error_in_both", "incomplete"],
                            json!({
                                "only_in_real": {"type": "integer", "minimum": 0},
                                "only_in_sim": {"type": "integer", "minimum": 0},
                                "error_in_real": {"type": "integer", "minimum": 0},
                                "error_in_sim": {"type": "integer", "minimum": 0},
                                "error_in_both": {"type": "integer", "minimum": 0},
                                "incomplete": {"type": "integer", "minimum": 0},
                            }),
                        ),
                        "tokens_compared": {"type": ["integer", "null"], "minimum": 0},
                        "token_drops": {"type": ["object", "null"]},
                        "explanations": {"type": "array", "items": {"type": "string"}},
                    }),
                ),
                "metrics": obj(&["ttft", "tpot", "itl", "e2e", "queue_delay"], Value::Object(metrics)),
                "unavailable_metrics": {"type": "object"},
                "fidelity": fidelity_summary_schema(),
                "throughput": nullable(obj(
                    &["real", "sim", "requests_per_s_err_pct", "output_tokens_per_s_err_pct"],
                    json!({
                        "real": throughput_schema(),
                        "sim": throughput_schema(),
                        "requests_per_s_err_pct": nullable_number(),
                        "output_tokens_per_s_err_pct": nullable_number(),
                    }),
                )),
                "attribution": obj(
                    &["source", "iterations_covered", "real_iterations", "execution", "cpu_overhead", "by_op_class", "iteration_median_abs_err_pct", "scheduling", "decomposition", "busy", "by_batch_size", "notes"],
                    json!({
                        "source": {"type": ["string", "null"]},
                        "iterations_covered": {"type": "integer", "minimum": 0},
                        "real_iterations": {"type": "integer", "minimum": 0},
                        "execution": nullable(component_schema()),
                        "cpu_overhead": nullable(component_schema()),
                        "by_op_class": {"type": "array", "items": component_schema()},
                        "iteration_median_abs_err_pct": nullable_number(),
                        "scheduling": nullable(obj(
                            &["real_iterations", "sim_iterations", "compared_by", "identical_prefix", "differing_iterations", "differing_fraction", "first_divergence_ms", "first_divergence_fraction"],
                            json!({
                                "real_iterations": {"type": "integer", "minimum": 0},
                                "sim_iterations": {"type": "integer", "minimum": 0},
                                "compared_by": {"type": "string"},
                                "identical_prefix": {"type": "integer", "minimum": 0},
                                "differing_iterations": {"type": "integer", "minimum": 0},
                                "differing_fraction": {"type": "number", "minimum": 0},
                                "first_divergence_ms": nullable_number(),
                                "first_divergence_fraction": nullable_number(),
                            }),
                        )),
                        "decomposition": nullable(obj(
                            &["real_busy_ms", "sim_busy_ms", "gap_ms", "execution_ms", "cpu_overhead_ms", "scheduling_ms"],
                            json!({
                                "real_busy_ms": {"type": "number"},
                                "sim_busy_ms": {"type": "number"},
                                "gap_ms": {"type": "number"},
                                "execution_ms": {"type": "number"},
                                "cpu_overhead_ms": {"type": "number"},
                                "scheduling_ms": {"type": "number"},
                            }),
                        )),
                        "busy": nullable(obj(
                            &["real_busy_ms", "sim_busy_ms", "busy_err_pct", "real_iterations", "sim_iterations", "real_mean_iteration_ms", "sim_mean_iteration_ms"],
                            json!({
                                "real_busy_ms": {"type": "number", "minimum": 0},
                                "sim_busy_ms": {"type": "number", "minimum": 0},
                                "busy_err_pct": nullable_number(),
                                "real_iterations": {"type": "integer", "minimum": 1},
                                "sim_iterations": {"type": "integer", "minimum": 1},
                                "real_mean_iteration_ms": {"type": "number", "minimum": 0},
                                "sim_mean_iteration_ms": {"type": "number", "minimum": 0},
                            }),
                        )),
                        "by_batch_size": {"type": "array", "items": obj(
                            &["num_requests", "real_iterations", "sim_iterations", "real_mean_ms", "sim_mean_ms"],
                            json!({
                                "num_requests": {"type": "integer", "minimum": 0},
                                "real_iterations": {"type": "integer", "minimum": 0},
                                "sim_iterations": {"type": "integer", "minimum": 0},
                                "real_mean_ms": nullable_number(),
                                "sim_mean_ms": nullable_number(),
                            }),
                        )},
                        "notes": {"type": "array", "items": {"type": "string"}},
                        // Appended after v1's first release: optional, so older summaries
                        // still validate.
                        "device_speed": nullable(obj(
                            &["profile_reference_ms", "real_reference_ms", "real_slower_pct"],
                            json!({
                                "profile_reference_ms": {"type": "number", "minimum": 0},
                                "real_reference_ms": {"type": "number", "minimum": 0},
                                "real_slower_pct": {"type": "number"},
                            }),
                        )),
                        "speed_corrected": nullable(obj(
                            &["execution", "iteration_median_abs_err_pct", "drift_explains_pct"],
                            json!({
                                "execution": component_schema(),
                                "iteration_median_abs_err_pct": nullable_number(),
                                "drift_explains_pct": nullable_number(),
                            }),
                        )),
                    }),
                ),
                "notes": {"type": "array", "items": {"type": "string"}},
            }),
        ),
        "summary.json",
        "what the compare stage found: statistics, attribution and verdict",
    )
}

/// Every JSON contract: (file stem, schema).
pub fn json_file_schemas() -> Vec<(&'static str, Value)> {
    vec![
        ("run_meta", run_meta_schema()),
        ("workload_meta", workload_meta_schema()),
        ("summary", compare_summary_schema()),
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
