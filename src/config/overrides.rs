//! The Hydra override grammar, parsed once before any composition.
//!
//! - `group=option`     pick a config group option (or set a top-level key)
//! - `a.b.c=value`      set an existing key; the value is parsed as YAML
//! - `+a.b=value`       add a key that does not exist yet (`++` adds or overwrites)
//! - `~a.b`             remove a key (or a group from the defaults list)
//!
//! With `--multirun`, a value with top-level commas (`workload.qps=1,2,4`) is a sweep; commas
//! inside brackets, braces or quotes do not split (`a=[1,2]` is one list value).

use serde_json::Value;

use crate::config::yaml::parse_yaml_value;
use crate::{Error, Result};

/// What an override does.
#[derive(Debug, Clone, PartialEq)]
pub enum OverrideKind {
    /// `key=value`: a group choice if `key` is a group, else a set of an existing key.
    Set,
    /// `+key=value`
    Add,
    /// `++key=value`
    ForceAdd,
    /// `~key`
    Remove,
}

/// One parsed override.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub kind: OverrideKind,
    /// Dotted key path (or group name).
    pub key: String,
    /// The raw value text as given (empty for removals).
    pub raw_value: String,
    /// The value parsed as YAML (`Null` for removals).
    pub value: Value,
    /// The argument as the user wrote it, for error messages and provenance.
    pub text: String,
}

impl Override {
    /// Parses one command-line argument.
    pub fn parse(arg: &str) -> Result<Self> {
        let bad = |msg: &str| Error::Config {
            key: arg.to_string(),
            origin: Some(format!("override '{arg}'")),
            msg: format!("{msg}; expected `group=option`, `a.b=value`, `+a.b=value` or `~a.b`"),
        };
        let (kind, rest) = if let Some(rest) = arg.strip_prefix("++") {
            (OverrideKind::ForceAdd, rest)
        } else if let Some(rest) = arg.strip_prefix('+') {
            (OverrideKind::Add, rest)
        } else if let Some(rest) = arg.strip_prefix('~') {
            (OverrideKind::Remove, rest)
        } else {
            (OverrideKind::Set, arg)
        };
        let (key, raw_value) = match rest.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v)),
            None => (rest.trim(), None),
        };
        if key.is_empty() {
            return Err(bad("empty key"));
        }
        if !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '/' || c == '-')
            || key.starts_with('.')
            || key.ends_with('.')
            || key.contains("..")
        {
            return Err(bad(&format!("`{key}` is not a valid key path")));
        }
        let (raw_value, value) = match (&kind, raw_value) {
            (OverrideKind::Remove, None) => (String::new(), Value::Null),
            (OverrideKind::Remove, Some(_)) => {
                return Err(bad("a removal `~key` takes no value"));
            }
            (_, None) => return Err(bad("missing `=value`")),
            (_, Some(v)) => {
                let value = parse_yaml_value(v).map_err(|msg| Error::Config {
                    key: key.to_string(),
                    origin: Some(format!("override '{arg}'")),
                    msg: format!("value `{v}` is not valid YAML: {msg}"),
                })?;
                (v.to_string(), value)
            }
        };
        Ok(Override {
            kind,
            key: key.to_string(),
            raw_value,
            value,
            text: arg.to_string(),
        })
    }

    /// Where this override came from, for error messages.
    pub fn origin(&self) -> String {
        format!("override '{}'", self.text)
    }
}

/// Splits a value on top-level commas (not inside `[]`, `{}`, `()` or quotes).
pub fn split_sweep(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut current = String::new();
    for c in value.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '[' | '{' | '(' => depth += 1,
                ']' | '}' | ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            },
        }
        current.push(c);
    }
    parts.push(current);
    parts
}

/// Expands multirun arguments into the cartesian product of override lists, in Hydra's
/// order (the last sweep varies fastest).
pub fn expand_multirun(args: &[String]) -> Result<Vec<Vec<String>>> {
    let mut axes: Vec<Vec<String>> = Vec::with_capacity(args.len());
    for arg in args {
        let choices = match arg.split_once('=') {
            Some((key, value)) if !arg.starts_with('~') => {
                let parts = split_sweep(value);
                if parts.iter().any(|p| p.trim().is_empty()) {
                    return Err(Error::Config {
                        key: key.to_string(),
                        origin: Some(format!("override '{arg}'")),
                        msg: "empty element in a sweep list".into(),
                    });
                }
                parts.into_iter().map(|p| format!("{key}={p}")).collect()
            }
            _ => vec![arg.clone()],
        };
        axes.push(choices);
    }
    let mut combos: Vec<Vec<String>> = vec![Vec::new()];
    for axis in &axes {
        let mut next = Vec::with_capacity(combos.len() * axis.len());
        for combo in &combos {
            for choice in axis {
                let mut c = combo.clone();
                c.push(choice.clone());
                next.push(c);
            }
        }
        combos = next;
    }
    Ok(combos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn grammar() {
        let o = Override::parse("workload.qps=4").unwrap();
        assert_eq!(o.kind, OverrideKind::Set);
        assert_eq!(o.key, "workload.qps");
        assert_eq!(o.value, json!(4));
        let o = Override::parse("+workload.extra=[1, 2]").unwrap();
        assert_eq!(o.kind, OverrideKind::Add);
        assert_eq!(o.value, json!([1, 2]));
        let o = Override::parse("++a.b=x").unwrap();
        assert_eq!(o.kind, OverrideKind::ForceAdd);
        assert_eq!(o.value, json!("x"));
        let o = Override::parse("~vidur.bundle").unwrap();
        assert_eq!(o.kind, OverrideKind::Remove);
        assert_eq!(o.key, "vidur.bundle");
        let o = Override::parse("model.weights_dir=/data/qwen3").unwrap();
        assert_eq!(o.value, json!("/data/qwen3"));
        let o = Override::parse("output.run_id=null").unwrap();
        assert_eq!(o.value, Value::Null);
        let o = Override::parse("x.y=1e-3").unwrap();
        assert_eq!(o.value.as_f64(), Some(1e-3));
        let o = Override::parse("x.y=true").unwrap();
        assert_eq!(o.value, json!(true));
    }

    #[test]
    fn grammar_errors() {
        for bad in [
            "=3",
            "workload.qps",
            "~a=1",
            "a..b=1",
            ".a=1",
            "a b=1",
            "+=1",
        ] {
            assert!(Override::parse(bad).is_err(), "{bad} should fail");
        }
        let e = Override::parse("a.b=[1, 2").unwrap_err();
        assert!(e.to_string().contains("not valid YAML"), "{e}");
    }

    #[test]
    fn sweep_split_respects_brackets_and_quotes() {
        assert_eq!(split_sweep("1,2,4"), vec!["1", "2", "4"]);
        assert_eq!(split_sweep("[1,2],[3]"), vec!["[1,2]", "[3]"]);
        assert_eq!(split_sweep("'a,b',c"), vec!["'a,b'", "c"]);
        assert_eq!(split_sweep("x"), vec!["x"]);
    }

    #[test]
    fn multirun_is_cartesian_last_fastest() {
        let args: Vec<String> = ["workload.qps=0.5,1", "model=a,b,c", "x.y=1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let combos = expand_multirun(&args).unwrap();
        assert_eq!(combos.len(), 6);
        assert_eq!(combos[0], vec!["workload.qps=0.5", "model=a", "x.y=1"]);
        assert_eq!(combos[1], vec!["workload.qps=0.5", "model=b", "x.y=1"]);
        assert_eq!(combos[5], vec!["workload.qps=1", "model=c", "x.y=1"]);
        assert!(expand_multirun(&["a=1,,2".to_string()]).is_err());
    }
}
