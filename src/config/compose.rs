//! Hydra-style composition without Python.
//!
//! A primary config `<config_dir>/<name>.yaml` starts with a `defaults:` list of group choices
//! (`- model: qwen3_0_6b`), plain configs (`- common`) and `_self_`. Each group choice loads
//! `<config_dir>/<group>/<option>.yaml` and merges it under the key `<group>` (or at the root
//! with `# @package _global_`). A group file may have its own `defaults:` of bare names from the
//! same group, which is how an alias is written (`model/qwen3.yaml` → `qwen3_0_6b`).
//! Mappings merge recursively, everything else is replaced. Then command-line overrides
//! apply. Every key remembers which file or override set it last, so errors can say where a
//! bad value came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::config::overrides::{Override, OverrideKind};
use crate::config::yaml::{kind_name, load_yaml_file};
use crate::{Error, Result};

/// Directory of composable configs, e.g. `configs/compare_vidur_real`.
#[derive(Debug, Clone)]
pub struct ConfigDir {
    path: PathBuf,
}

/// The config tree every stage composes, relative to the repository root.
pub const DEFAULT_CONFIG_DIR: &str = "configs/compare_vidur_real";

impl ConfigDir {
    pub fn new(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        if !path.is_dir() {
            return Err(Error::MissingInput {
                path,
                msg: "config directory not found".into(),
                hint: Some(format!(
                    "run from the repository root, or pass --config-dir (default {DEFAULT_CONFIG_DIR})"
                )),
            });
        }
        Ok(Self { path })
    }

    /// `explicit`, else `$SIMREAL_CONFIG_DIR`, else `./configs/compare_vidur_real`, else the
    /// copy in the source tree this binary was built from.
    pub fn locate(explicit: Option<&Path>) -> Result<Self> {
        if let Some(p) = explicit {
            return Self::new(p);
        }
        if let Some(p) = std::env::var_os("SIMREAL_CONFIG_DIR") {
            return Self::new(PathBuf::from(p));
        }
        let local = PathBuf::from(DEFAULT_CONFIG_DIR);
        if local.is_dir() {
            return Self::new(local);
        }
        Self::new(Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_DIR))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Config groups (subdirectories), sorted.
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = std::fs::read_dir(&self.path)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        groups.sort();
        groups
    }

    /// Options of a group (`<group>/*.yaml` stems), sorted.
    pub fn options(&self, group: &str) -> Vec<String> {
        yaml_stems(&self.path.join(group))
    }

    /// Primary configs (`*.yaml` at the top level), sorted.
    pub fn primary_configs(&self) -> Vec<String> {
        yaml_stems(&self.path)
    }

    fn is_group(&self, name: &str) -> bool {
        !name.contains('.') && self.path.join(name).is_dir()
    }
}

fn yaml_stems(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".yaml").map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The result of composition: the merged tree and where each key came from.
#[derive(Debug, Clone)]
pub struct Composed {
    pub value: Value,
    /// Dotted key path → file (relative to the config dir) or override that set it last.
    pub origins: BTreeMap<String, String>,
    /// Group → chosen option.
    pub choices: BTreeMap<String, String>,
    pub config_dir: PathBuf,
    pub config_name: String,
    /// The overrides as given.
    pub overrides: Vec<String>,
}

impl Composed {
    /// Where `key` (or its nearest ancestor) was set.
    pub fn origin_of(&self, key: &str) -> Option<String> {
        let mut k = key;
        loop {
            if let Some(o) = self.origins.get(k) {
                return Some(o.clone());
            }
            k = k.rsplit_once('.')?.0;
        }
    }

    /// Fills in the origin of a config error from the composition record.
    pub fn locate_error(&self, err: Error) -> Error {
        match err {
            Error::Config {
                key,
                origin: None,
                msg,
            } => Error::Config {
                origin: self.origin_of(&key),
                key,
                msg,
            },
            other => other,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum DefaultEntry {
    Group {
        group: String,
        option: Option<String>,
    },
    SelfRef,
    Config(String),
}

fn parse_defaults(value: &Value, file: &str) -> Result<Vec<DefaultEntry>> {
    let empty = Vec::new();
    let list = match value {
        Value::Null => &empty,
        Value::Array(list) => list,
        other => {
            return Err(Error::Config {
                key: "defaults".into(),
                origin: Some(file.to_string()),
                msg: format!("must be a list, found {}", kind_name(other)),
            })
        }
    };
    let mut entries = Vec::with_capacity(list.len());
    for item in list {
        let entry = match item {
            Value::String(s) if s == "_self_" => DefaultEntry::SelfRef,
            Value::String(s) => DefaultEntry::Config(s.clone()),
            Value::Object(m) if m.len() == 1 => {
                let (group, option) = m
                    .iter()
                    .next()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .ok_or_else(|| Error::config("defaults", "empty entry"))?;
                let option = match option {
                    Value::Null => None,
                    Value::String(s) => Some(s),
                    other => {
                        return Err(Error::Config {
                            key: format!("defaults.{group}"),
                            origin: Some(file.to_string()),
                            msg: format!("option must be a name, found {}", kind_name(&other)),
                        })
                    }
                };
                DefaultEntry::Group { group, option }
            }
            other => {
                return Err(Error::Config {
                    key: "defaults".into(),
                    origin: Some(file.to_string()),
                    msg: format!(
                        "entries are `- group: option`, `- name` or `- _self_`, found {}",
                        kind_name(other)
                    ),
                })
            }
        };
        entries.push(entry);
    }
    if !entries.contains(&DefaultEntry::SelfRef) {
        // Hydra ≥ 1.1: a config without `_self_` is merged after its defaults.
        entries.push(DefaultEntry::SelfRef);
    }
    Ok(entries)
}

/// Composes `<config_name>.yaml` from `dir` with `overrides`.
pub fn compose(dir: &ConfigDir, config_name: &str, overrides: &[Override]) -> Result<Composed> {
    let primary_path = dir.path.join(format!("{config_name}.yaml"));
    if !primary_path.is_file() {
        return Err(Error::MissingInput {
            path: primary_path,
            msg: format!("no primary config `{config_name}`"),
            hint: Some(format!("available: {}", dir.primary_configs().join(", "))),
        });
    }
    let mut c = Composer {
        dir,
        value: Value::Object(Map::new()),
        origins: BTreeMap::new(),
        choices: BTreeMap::new(),
    };

    // Group choices from the command line edit the primary defaults list before loading.
    let mut primary = load_yaml_file(&primary_path)?;
    let primary_name = format!("{config_name}.yaml");
    let mut defaults = match primary.value.as_object_mut() {
        Some(m) => parse_defaults(&m.remove("defaults").unwrap_or(Value::Null), &primary_name)?,
        None => Vec::new(),
    };
    let mut key_overrides = Vec::new();
    for o in overrides {
        if dir.is_group(&o.key) {
            apply_group_override(dir, &mut defaults, o)?;
        } else {
            key_overrides.push(o);
        }
    }

    c.load_defaults(&defaults, "", None, &primary.value, &primary_name)?;

    for o in key_overrides {
        c.apply_key_override(o)?;
    }
    Ok(Composed {
        value: c.value,
        origins: c.origins,
        choices: c.choices,
        config_dir: dir.path.clone(),
        config_name: config_name.to_string(),
        overrides: overrides.iter().map(|o| o.text.clone()).collect(),
    })
}

fn apply_group_override(
    dir: &ConfigDir,
    defaults: &mut Vec<DefaultEntry>,
    o: &Override,
) -> Result<()> {
    let err = |msg: String| Error::Config {
        key: o.key.clone(),
        origin: Some(o.origin()),
        msg,
    };
    let position = defaults
        .iter()
        .position(|d| matches!(d, DefaultEntry::Group { group, .. } if *group == o.key));
    let option = match (&o.kind, &o.value) {
        (OverrideKind::Remove, _) => None,
        (_, Value::String(s)) => Some(s.clone()),
        (_, Value::Null) => None,
        (_, other) => {
            return Err(err(format!(
                "a group option is a name, found {}",
                kind_name(other)
            )))
        }
    };
    if let Some(opt) = &option {
        let options = dir.options(&o.key);
        if !options.contains(opt) {
            return Err(err(format!(
                "group `{}` has no option `{opt}`{}; options: {}",
                o.key,
                suggestion(opt, options.iter().map(String::as_str)),
                options.join(", ")
            )));
        }
    }
    match (&o.kind, position) {
        (OverrideKind::Remove, Some(i)) => {
            defaults.remove(i);
        }
        (OverrideKind::Remove, None) => {
            return Err(err(format!(
                "group `{}` is not in the defaults list",
                o.key
            )))
        }
        (OverrideKind::Set | OverrideKind::ForceAdd, Some(i)) => {
            defaults[i] = DefaultEntry::Group {
                group: o.key.clone(),
                option,
            };
        }
        (OverrideKind::Set, None) => {
            return Err(err(format!(
                "group `{}` is not in the defaults list; add it with `+{}={}`",
                o.key, o.key, o.raw_value
            )))
        }
        (OverrideKind::Add | OverrideKind::ForceAdd, None) => {
            let self_pos = defaults
                .iter()
                .position(|d| *d == DefaultEntry::SelfRef)
                .unwrap_or(defaults.len());
            defaults.insert(
                self_pos,
                DefaultEntry::Group {
                    group: o.key.clone(),
                    option,
                },
            );
        }
        (OverrideKind::Add, Some(_)) => {
            return Err(err(format!(
                "group `{}` is already in the defaults list; use `{}={}`",
                o.key, o.key, o.raw_value
            )))
        }
    }
    Ok(())
}

struct Composer<'a> {
    dir: &'a ConfigDir,
    value: Value,
    origins: BTreeMap<String, String>,
    choices: BTreeMap<String, String>,
}

impl Composer<'_> {
    /// Loads a defaults list. `package` is where `_self_` and same-group entries merge;
    /// `group` is set when the list belongs to a group file (bare names are then options of
    /// that group).
    fn load_defaults(
        &mut self,
        defaults: &[DefaultEntry],
        package: &str,
        group: Option<&str>,
        self_value: &Value,
        self_name: &str,
    ) -> Result<()> {
        for entry in defaults {
            match entry {
                DefaultEntry::SelfRef => self.merge_at(package, self_value, self_name),
                DefaultEntry::Group { option: None, .. } => {}
                DefaultEntry::Group {
                    group: g,
                    option: Some(opt),
                } => {
                    self.choices.insert(g.clone(), opt.clone());
                    self.load_group_file(g, opt, g)?;
                }
                DefaultEntry::Config(name) => match group {
                    Some(g) => self.load_group_file(g, name, package)?,
                    None => self.load_plain_config(name)?,
                },
            }
        }
        Ok(())
    }

    fn load_group_file(&mut self, group: &str, option: &str, default_package: &str) -> Result<()> {
        let rel = format!("{group}/{option}.yaml");
        let path = self.dir.path.join(&rel);
        if !path.is_file() {
            let options = self.dir.options(group);
            return Err(Error::Config {
                key: group.to_string(),
                origin: None,
                msg: format!(
                    "group `{group}` has no option `{option}`; options: {}",
                    options.join(", ")
                ),
            });
        }
        let mut file = load_yaml_file(&path)?;
        let package = match file.package.as_deref() {
            Some("_global_") => String::new(),
            Some("_group_") | None => default_package.to_string(),
            Some(p) => p.to_string(),
        };
        let defaults = match file.value.as_object_mut() {
            Some(m) => parse_defaults(&m.remove("defaults").unwrap_or(Value::Null), &rel)?,
            None => vec![DefaultEntry::SelfRef],
        };
        self.load_defaults(&defaults, &package, Some(group), &file.value, &rel)
    }

    fn load_plain_config(&mut self, name: &str) -> Result<()> {
        let rel = format!("{name}.yaml");
        let path = self.dir.path.join(&rel);
        if !path.is_file() {
            return Err(Error::MissingInput {
                path,
                msg: format!("defaults entry `{name}` names no config file"),
                hint: None,
            });
        }
        let mut file = load_yaml_file(&path)?;
        let defaults = match file.value.as_object_mut() {
            Some(m) => parse_defaults(&m.remove("defaults").unwrap_or(Value::Null), &rel)?,
            None => vec![DefaultEntry::SelfRef],
        };
        self.load_defaults(&defaults, "", None, &file.value, &rel)
    }

    fn merge_at(&mut self, package: &str, value: &Value, origin: &str) {
        let target = if package.is_empty() {
            &mut self.value
        } else {
            ensure_path(&mut self.value, package)
        };
        merge(target, value);
        record_origins(&mut self.origins, package, value, origin);
    }

    fn apply_key_override(&mut self, o: &Override) -> Result<()> {
        let err = |msg: String| Error::Config {
            key: o.key.clone(),
            origin: Some(o.origin()),
            msg,
        };
        let (parent_key, leaf) = match o.key.rsplit_once('.') {
            Some((p, l)) => (p, l),
            None => ("", o.key.as_str()),
        };
        match o.kind {
            OverrideKind::Set | OverrideKind::Remove => {
                let parent = match lookup_mut(&mut self.value, parent_key) {
                    Some(Value::Object(m)) => m,
                    Some(other) => {
                        return Err(err(format!(
                            "`{parent_key}` is {}, not a mapping",
                            kind_name(other)
                        )))
                    }
                    None => {
                        return Err(err(unknown_key_message(
                            &self.value,
                            &o.key,
                            &self.dir.groups(),
                        )))
                    }
                };
                if !parent.contains_key(leaf) {
                    return Err(err(unknown_key_message(
                        &self.value,
                        &o.key,
                        &self.dir.groups(),
                    )));
                }
                if o.kind == OverrideKind::Remove {
                    parent.remove(leaf);
                    let prefix = format!("{}.", o.key);
                    self.origins
                        .retain(|k, _| k != &o.key && !k.starts_with(&prefix));
                    return Ok(());
                }
                parent.insert(leaf.to_string(), o.value.clone());
            }
            OverrideKind::Add | OverrideKind::ForceAdd => {
                let parent = if parent_key.is_empty() {
                    &mut self.value
                } else {
                    ensure_path(&mut self.value, parent_key)
                };
                let Value::Object(m) = parent else {
                    return Err(err(format!("`{parent_key}` is not a mapping")));
                };
                if o.kind == OverrideKind::Add && m.contains_key(leaf) {
                    return Err(err(format!(
                        "key already exists; set it with `{}={}` (or force with `++`)",
                        o.key, o.raw_value
                    )));
                }
                m.insert(leaf.to_string(), o.value.clone());
            }
        }
        let prefix = format!("{}.", o.key);
        self.origins.retain(|k, _| !k.starts_with(&prefix));
        record_origins(&mut self.origins, &o.key, &o.value, &o.origin());
        self.origins.insert(o.key.clone(), o.origin());
        Ok(())
    }
}

/// Recursive merge: mappings merge key by key, anything else replaces.
pub fn merge(target: &mut Value, source: &Value) {
    match (target, source) {
        (Value::Object(t), Value::Object(s)) => {
            for (k, v) in s {
                match t.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, s) => *t = s.clone(),
    }
}

fn record_origins(
    origins: &mut BTreeMap<String, String>,
    prefix: &str,
    value: &Value,
    origin: &str,
) {
    if let Value::Object(m) = value {
        for (k, v) in m {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            origins.insert(key.clone(), origin.to_string());
            record_origins(origins, &key, v, origin);
        }
    }
}

/// The value at a dotted path (`""` is the root).
pub fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    if path.is_empty() {
        return Some(value);
    }
    path.split('.')
        .try_fold(value, |v, k| v.as_object()?.get(k))
}

fn lookup_mut<'v>(value: &'v mut Value, path: &str) -> Option<&'v mut Value> {
    if path.is_empty() {
        return Some(value);
    }
    path.split('.')
        .try_fold(value, |v, k| v.as_object_mut()?.get_mut(k))
}

/// The mapping at `path`, created (replacing non-mappings) as needed.
fn ensure_path<'v>(value: &'v mut Value, path: &str) -> &'v mut Value {
    let mut v = value;
    for k in path.split('.') {
        if !v.is_object() {
            *v = Value::Object(Map::new());
        }
        let Value::Object(m) = v else {
            unreachable!("just made it a mapping")
        };
        v = m
            .entry(k.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    v
}

fn unknown_key_message(root: &Value, key: &str, groups: &[String]) -> String {
    // Find the deepest existing ancestor and suggest among its children.
    let parts: Vec<&str> = key.split('.').collect();
    let mut node = root;
    let mut known = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        match node.as_object().and_then(|m| m.get(*part)) {
            Some(child) if i + 1 < parts.len() => {
                known.push(*part);
                node = child;
            }
            _ => {
                let siblings: Vec<&str> = node
                    .as_object()
                    .map(|m| m.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                let at = if known.is_empty() {
                    "at the top level".to_string()
                } else {
                    format!("under `{}`", known.join("."))
                };
                let mut msg = format!(
                    "unknown key `{part}` {at}{}",
                    suggestion(part, siblings.iter().copied())
                );
                if known.is_empty() {
                    msg.push_str(&format!(
                        "; config groups: {}; top-level keys: {}; add a new key with `+{key}=...`",
                        groups.join(", "),
                        siblings.join(", ")
                    ));
                } else {
                    msg.push_str(&format!("; keys there: {}", siblings.join(", ")));
                }
                return msg;
            }
        }
    }
    format!("unknown key `{key}`")
}

/// `"; did you mean `x`?"` for the closest candidate within a small edit distance.
pub fn suggestion<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let best = candidates
        .map(|c| (strsim::levenshtein(word, c), c))
        .min_by_key(|(d, c)| (*d, c.len()));
    match best {
        Some((d, c)) if d <= (word.len() / 3).max(2) => format!(" (did you mean `{c}`?)"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::fs;

    /// A small config tree exercising every composition feature.
    fn tree() -> (PathBuf, ConfigDir) {
        let root = crate::io::atomic::tests::tempdir();
        let w = |rel: &str, text: &str| {
            let p = root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        };
        w(
            "stage.yaml",
            "defaults:\n  - common\n  - model: small\n  - sched: a\n  - _self_\noutput:\n  force: false\n",
        );
        w(
            "common.yaml",
            "output:\n  root: tmp\n  force: true\nworkload:\n  qps: 1.0\n  seed: 42\n",
        );
        w("model/small.yaml", "name: small\nlayers: 2\n");
        w("model/big.yaml", "name: big\nlayers: 28\n");
        w("model/alias.yaml", "defaults:\n  - big\n  - _self_\n");
        w(
            "sched/a.yaml",
            "# @package _global_\nscheduler:\n  policy: a\n  chunk: 8\n",
        );
        w(
            "sched/b.yaml",
            "# @package _global_\nscheduler:\n  policy: b\n",
        );
        let dir = ConfigDir::new(&root).unwrap();
        (root, dir)
    }

    fn ov(args: &[&str]) -> Vec<Override> {
        args.iter().map(|a| Override::parse(a).unwrap()).collect()
    }

    #[test]
    fn composes_defaults_packages_and_self_last() {
        let (root, dir) = tree();
        let c = compose(&dir, "stage", &[]).unwrap();
        assert_eq!(
            c.value,
            json!({
                "output": {"root": "tmp", "force": false},
                "workload": {"qps": 1.0, "seed": 42},
                "model": {"name": "small", "layers": 2},
                "scheduler": {"policy": "a", "chunk": 8},
            })
        );
        assert_eq!(c.origin_of("output.force").unwrap(), "stage.yaml");
        assert_eq!(c.origin_of("model.layers").unwrap(), "model/small.yaml");
        assert_eq!(c.origin_of("scheduler.chunk").unwrap(), "sched/a.yaml");
        assert_eq!(c.choices["model"], "small");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn group_and_key_overrides() {
        let (root, dir) = tree();
        let c = compose(
            &dir,
            "stage",
            &ov(&[
                "model=alias",
                "sched=b",
                "workload.qps=4",
                "+workload.extra=[1]",
                "~output.root",
            ]),
        )
        .unwrap();
        assert_eq!(c.value["model"], json!({"name": "big", "layers": 28}));
        // Group files replace nothing they do not mention: merged, not swapped.
        assert_eq!(c.value["scheduler"], json!({"policy": "b"}));
        assert_eq!(c.value["workload"]["qps"], json!(4));
        assert_eq!(c.value["workload"]["extra"], json!([1]));
        assert!(c.value["output"].get("root").is_none());
        assert_eq!(
            c.origin_of("workload.qps").unwrap(),
            "override 'workload.qps=4'"
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn errors_name_key_origin_and_alternatives() {
        let (root, dir) = tree();
        let e = compose(&dir, "stage", &ov(&["model=huge"])).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("no option `huge`") && s.contains("alias, big, small"),
            "{s}"
        );
        let e = compose(&dir, "stage", &ov(&["workload.sed=1"])).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("`workload.sed`") && s.contains("did you mean `seed`"),
            "{s}"
        );
        let e = compose(&dir, "stage", &ov(&["nosuchgroup=x"])).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("unknown key `nosuchgroup`") && s.contains("model, sched"),
            "{s}"
        );
        let e = compose(&dir, "stage", &ov(&["+workload.qps=2"])).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        let e = compose(&dir, "nostage", &[]).unwrap_err();
        assert!(e.to_string().contains("available: common, stage"), "{e}");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggestion("num_request", ["seed", "num_requests"].into_iter()),
            " (did you mean `num_requests`?)"
        );
        assert_eq!(suggestion("zzzzzz", ["seed"].into_iter()), "");
    }
}
