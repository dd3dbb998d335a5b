//! JSON Schemas of the JSON contracts, derived by `schemars` from the serde types that write
//! and read them (so a field added to a type is in its schema), and a small validator for
//! the subset of draft 2020-12 those schemas use (`type`, `enum`, `const`, `minimum`,
//! `maximum`, `required`, `properties`, `additionalProperties`, `items`, `prefixItems`,
//! `minItems`, `maxItems`, `anyOf`, `oneOf`, `allOf`, and `$ref` into the root's `$defs`).
//! Readers validate a JSON file against its schema before deserializing it, so a missing
//! or mistyped field is reported with its JSON path.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Value};

use crate::io::schema::SCHEMA_VERSION;

/// Which side of a contract a schema describes: what readers accept (optional fields may be
/// missing) or exactly what the writer writes (every field present, `null` when unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    Read,
    Write,
}

/// The JSON Schema of `T` as a file contract: draft 2020-12, named types under `$defs`,
/// with the contract's `$id` (`simreal/v1/<file_name>`) and `title`.
pub fn contract_schema<T: JsonSchema + ?Sized>(
    contract: Contract,
    file_name: &str,
    title: &str,
) -> Value {
    let settings = match contract {
        Contract::Read => SchemaSettings::draft2020_12().for_deserialize(),
        Contract::Write => SchemaSettings::draft2020_12().for_serialize(),
    };
    let mut schema = Value::from(settings.into_generator().into_root_schema_for::<T>());
    schema["$id"] = json!(format!("simreal/v{SCHEMA_VERSION}/{file_name}"));
    schema["title"] = json!(title);
    schema
}

/// Validates `value` against the supported subset of JSON Schema; returns the first
/// violation as `(json path, message)`.
pub fn validate(value: &Value, schema: &Value) -> Result<(), (String, String)> {
    Validator { root: schema }.at(value, schema, "$")
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

struct Validator<'s> {
    /// The document `$ref`s resolve against.
    root: &'s Value,
}

type Violation = (String, String);

/// How a type mismatch's message starts.
const TYPE_MISMATCH: &str = "expected type";

impl<'s> Validator<'s> {
    fn at(&self, value: &Value, schema: &'s Value, path: &str) -> Result<(), Violation> {
        let fail = |msg: String| Err((path.to_string(), msg));
        let schema = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return fail(format!("no value is allowed here, found {value}")),
            Value::Object(_) => schema,
            _ => return fail(format!("the schema here is not an object: {schema}")),
        };
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let target = reference
                .strip_prefix('#')
                .and_then(|pointer| self.root.pointer(pointer));
            match target {
                Some(target) => self.at(value, target, path)?,
                None => return fail(format!("unresolvable schema reference `{reference}`")),
            }
        }
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
                return fail(format!("{TYPE_MISMATCH} {t}, found {value}"));
            }
        }
        if let Some(Value::Array(allowed)) = schema.get("enum") {
            if !allowed.iter().any(|a| same_json(a, value)) {
                return fail(format!("{value} is not one of {allowed:?}"));
            }
        }
        if let Some(expected) = schema.get("const") {
            if !same_json(expected, value) {
                return fail(format!("{value} is not {expected}"));
            }
        }
        if let Some(v) = value.as_f64() {
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                if v < min {
                    return fail(format!("{v} is below the minimum {min}"));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                if v > max {
                    return fail(format!("{v} is above the maximum {max}"));
                }
            }
        }
        if let Some(Value::Array(branches)) = schema.get("allOf") {
            for b in branches {
                self.at(value, b, path)?;
            }
        }
        for keyword in ["anyOf", "oneOf"] {
            let Some(Value::Array(branches)) = schema.get(keyword) else {
                continue;
            };
            let failures: Vec<Violation> = branches
                .iter()
                .filter_map(|b| self.at(value, b, path).err())
                .collect();
            let passed = branches.len() - failures.len();
            if passed == 0 {
                // The branch that got deepest into the value, and past its type, says best
                // what is wrong (for `T | null`, an optional field's usual form, it is `T`'s
                // own message).
                return Err(failures
                    .into_iter()
                    .max_by_key(|(at, msg)| (at.len(), !msg.starts_with(TYPE_MISMATCH)))
                    .unwrap_or_else(|| (path.to_string(), format!("`{keyword}` is empty"))));
            }
            if keyword == "oneOf" && passed > 1 {
                return fail(format!(
                    "{value} matches {passed} schemas of `oneOf`, not one"
                ));
            }
        }
        if let Value::Object(map) = value {
            self.object(map, schema, path)?;
        }
        if let Value::Array(items) = value {
            self.array(items, schema, path)?;
        }
        Ok(())
    }

    fn object(
        &self,
        map: &serde_json::Map<String, Value>,
        schema: &'s Value,
        path: &str,
    ) -> Result<(), Violation> {
        if let Some(Value::Array(required)) = schema.get("required") {
            for r in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(r) {
                    return Err((path.to_string(), format!("missing required field `{r}`")));
                }
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, v) in map {
            let field_path = format!("{path}.{k}");
            match (
                props.and_then(|p| p.get(k)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => self.at(v, s, &field_path)?,
                (None, Some(Value::Bool(false))) => {
                    return Err((path.to_string(), format!("unexpected field `{k}`")));
                }
                (None, Some(s)) => self.at(v, s, &field_path)?,
                (None, None) => {}
            }
        }
        Ok(())
    }

    fn array(&self, items: &[Value], schema: &'s Value, path: &str) -> Result<(), Violation> {
        let count = |keyword: &str| schema.get(keyword).and_then(Value::as_u64);
        if let Some(min) = count("minItems") {
            if (items.len() as u64) < min {
                return Err((
                    path.to_string(),
                    format!("{} items, fewer than {min}", items.len()),
                ));
            }
        }
        if let Some(max) = count("maxItems") {
            if items.len() as u64 > max {
                return Err((
                    path.to_string(),
                    format!("{} items, more than {max}", items.len()),
                ));
            }
        }
        let prefix = schema
            .get("prefixItems")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        for (i, v) in items.iter().enumerate() {
            let item_schema = prefix.get(i).or_else(|| schema.get("items"));
            if let Some(s) = item_schema {
                self.at(v, s, &format!("{path}[{i}]"))?;
            }
        }
        Ok(())
    }
}

/// JSON equality with numbers compared by value (`1` and `1.0` are the same number).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validator_reports_path_of_first_violation() {
        let schema = json!({
            "type": "object",
            "required": ["a", "b"],
            "properties": {
                "a": {"type": "integer", "minimum": 0},
                "b": {"type": "object", "required": ["c"], "properties": {"c": {"type": ["string", "null"]}}},
            },
        });
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
    fn references_nullable_branches_tuples_and_maps_are_followed() {
        let schema = json!({
            "$defs": {"Pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number", "maximum": 1}], "minItems": 2, "maxItems": 2}},
            "type": "object",
            "properties": {
                "pair": {"anyOf": [{"$ref": "#/$defs/Pair"}, {"type": "null"}]},
                "by_name": {"type": "object", "additionalProperties": {"$ref": "#/$defs/Pair"}},
                "closed": {"type": "object", "properties": {"x": true}, "additionalProperties": false},
                "kind": {"oneOf": [{"const": "a"}, {"enum": ["b", "c"]}]},
            },
        });
        let ok = json!({"pair": ["x", 0.5], "by_name": {"k": ["y", 1]}, "closed": {"x": [1]}, "kind": "c"});
        validate(&ok, &schema).unwrap();
        validate(&json!({"pair": null}), &schema).unwrap();
        let err = |v: Value| validate(&v, &schema).unwrap_err();
        // The non-null branch's own message, at the deepest path it reached.
        assert_eq!(
            err(json!({"pair": ["x", 2]})),
            ("$.pair[1]".into(), "2 is above the maximum 1".into())
        );
        assert_eq!(err(json!({"pair": ["x"]})).1, "1 items, fewer than 2");
        assert_eq!(err(json!({"by_name": {"k": [1, 0]}})).0, "$.by_name.k[0]");
        assert_eq!(err(json!({"closed": {"y": 1}})).1, "unexpected field `y`");
        assert_eq!(err(json!({"kind": "d"})).0, "$.kind");
        let dangling = json!({"$ref": "#/$defs/Missing"});
        assert!(validate(&json!(1), &dangling)
            .unwrap_err()
            .1
            .contains("unresolvable"));
    }

    #[test]
    fn a_derived_schema_names_the_contract_and_checks_what_its_type_writes() {
        #[derive(serde::Serialize, JsonSchema)]
        struct Inner {
            #[schemars(range(min = 1))]
            count: usize,
        }
        #[derive(serde::Serialize, JsonSchema)]
        struct Outer {
            inner: Option<Inner>,
            pair: [f64; 2],
        }
        let schema = contract_schema::<Outer>(Contract::Write, "outer.json", "a test contract");
        assert_eq!(schema["$id"], "simreal/v1/outer.json");
        assert_eq!(schema["title"], "a test contract");
        let written = |o: &Outer| validate(&serde_json::to_value(o).unwrap(), &schema);
        written(&Outer {
            inner: None,
            pair: [0.0, 1.0],
        })
        .unwrap();
        written(&Outer {
            inner: Some(Inner { count: 2 }),
            pair: [0.0, 1.0],
        })
        .unwrap();
        assert_eq!(
            written(&Outer {
                inner: Some(Inner { count: 0 }),
                pair: [0.0, 1.0]
            })
            .unwrap_err(),
            ("$.inner.count".into(), "0 is below the minimum 1".into())
        );
        // The writer's contract: an unset optional field is written, as `null`.
        assert!(validate(&json!({"pair": [0.0, 1.0]}), &schema).is_err());
        let read = contract_schema::<Outer>(Contract::Read, "outer.json", "a test contract");
        validate(&json!({"pair": [0.0, 1.0]}), &read).unwrap();
    }
}
