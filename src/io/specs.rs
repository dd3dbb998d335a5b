//! Renders the CSV contracts in `specs/` from the schema registry, so documents and code
//! cannot drift: a test (`stages::specs`) regenerates them and fails on any difference
//! (`SIMREAL_BLESS=1` rewrites).

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

/// The generated spec files of the CSV contracts: (path relative to `specs/`, content).
/// The JSON files' schemas are derived from the types of the stages that write them and
/// joined to these in [`crate::stages::specs`].
pub fn csv_specs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for schema in csv_schemas() {
        let stem = schema.file_name.trim_end_matches(".csv");
        out.push((format!("{stem}.md"), render_csv_spec(schema)));
        out.push((
            format!("json/{stem}.row.schema.json"),
            crate::io::json::to_json_string(&csv_row_json_schema(schema)).unwrap_or_default(),
        ));
    }
    out
}
