//! Renders the contracts in `specs/` from the schema registry, so documents and code cannot
//! drift: a test regenerates them and fails on any difference (`SIMREAL_BLESS=1` rewrites).

use serde_json::{json, Value};

use crate::io::schema::{csv_schemas, ColumnType, CsvSchema, SCHEMA_VERSION};

/// Markdown page of one CSV contract.
pub fn render_csv_spec(schema: &CsvSchema) -> String {
    let mut s = format!(
        "# `{}` (schema v{})\n\n{}\n\n",
        schema.file_name, schema.version, schema.description
    );
    s.push_str(
        "Generated from `src/io/schema.rs` by `cargo test` (`SIMREAL_BLESS=1` to rewrite); do not edit by hand.\n\n",
    );
    s.push_str(
        "| column | type | unit | required | nullable | meaning |\n|---|---|---|---|---|---|\n",
    );
    for c in schema.columns {
        s.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            c.name,
            c.dtype.as_str(),
            if c.unit.is_empty() { "–" } else { c.unit },
            if c.required { "yes" } else { "no" },
            if c.nullable { "yes" } else { "no" },
            c.description.replace('|', "\\|")
        ));
    }
    s.push_str(
        "\nReaders reject a file that lacks a required column, has a column not listed here, \
         repeats a column, or holds a value of the wrong type (NaN and infinities included); \
         errors name the file, the 1-based data row and the column. Columns are append-only \
         within a schema version.\n",
    );
    s
}

fn json_type(t: ColumnType) -> &'static str {
    match t {
        ColumnType::U64 | ColumnType::I64 => "integer",
        ColumnType::F64 => "number",
        ColumnType::Bool => "boolean",
        ColumnType::Str => "string",
    }
}

/// JSON Schema (draft 2020-12) of a CSV row, for tools that validate rows as objects.
pub fn csv_row_json_schema(schema: &CsvSchema) -> Value {
    let mut props = serde_json::Map::new();
    for c in schema.columns {
        let t = json_type(c.dtype);
        let ty = if c.nullable {
            json!([t, "null"])
        } else {
            json!(t)
        };
        let mut p = json!({"type": ty, "description": c.description});
        if c.dtype == ColumnType::U64 {
            p["minimum"] = json!(0);
        }
        props.insert(c.name.to_string(), p);
    }
    let required: Vec<&str> = schema
        .columns
        .iter()
        .filter(|c| c.required)
        .map(|c| c.name)
        .collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("simreal/v{SCHEMA_VERSION}/{}.row", schema.file_name),
        "title": format!("one row of {}", schema.file_name),
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false,
    })
}

/// Every generated spec file: (path relative to `specs/`, content).
pub fn generated_specs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for schema in csv_schemas() {
        let stem = schema.file_name.trim_end_matches(".csv");
        out.push((format!("{stem}.md"), render_csv_spec(schema)));
        out.push((
            format!("json/{stem}.row.schema.json"),
            crate::io::json::to_json_string(&csv_row_json_schema(schema)).unwrap_or_default(),
        ));
    }
    for (name, schema) in crate::io::json_schemas::json_file_schemas() {
        out.push((
            format!("json/{name}.schema.json"),
            crate::io::json::to_json_string(&schema).unwrap_or_default(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn specs_dir_is_in_sync_with_the_registry() {
        let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
        let bless = std::env::var_os("SIMREAL_BLESS").is_some();
        let mut stale = Vec::new();
        for (rel, content) in generated_specs() {
            let path = specs.join(&rel);
            if bless {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &content).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(content.as_str()) {
                stale.push(rel);
            }
        }
        assert!(
            stale.is_empty(),
            "specs/ out of date with src/io (run `SIMREAL_BLESS=1 cargo test --lib specs`): {stale:?}"
        );
    }
}
