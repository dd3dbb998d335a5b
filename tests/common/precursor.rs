//! The precursor toolkit's `run_meta.json` requirements (CodeGandee/gpu-simulate-test,
//! `specs/001-compare-vidur-real-timing/contracts/run_meta.schema.json`), transcribed as
//! checks: its analysis code must be able to read our runs.

use std::path::Path;

use serde_json::Value;

/// Fields every run_meta must have, as non-empty strings (`schema_version`, timestamps,
/// `git_commit`, `model`) or objects (`env`, `params`, `hydra`).
const REQUIRED_STRINGS: [&str; 6] = [
    "schema_version",
    "run_id",
    "model",
    "started_at",
    "ended_at",
    "git_commit",
];
const REQUIRED_OBJECTS: [&str; 3] = ["env", "params", "hydra"];

/// Panics, naming the field, unless `dir/run_meta.json` meets the precursor's schema for its
/// `run_type` (one of the precursor's four stages). Its `backend` enum lists only its own two
/// engines (`sarathi`, `transformers`); ours names our engine, so only the type is checked.
pub fn check_run_meta(dir: &Path) {
    let path = dir.join("run_meta.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let string = |key: &str| -> &str {
        let s = v[key]
            .as_str()
            .unwrap_or_else(|| panic!("{}: `{key}` is not a string: {}", path.display(), v[key]));
        assert!(!s.is_empty(), "{}: `{key}` is empty", path.display());
        s
    };
    for key in REQUIRED_STRINGS {
        string(key);
    }
    assert_eq!(string("schema_version"), "v1", "{}", path.display());
    for key in REQUIRED_OBJECTS {
        assert!(
            v[key].is_object(),
            "{}: `{key}` is not an object",
            path.display()
        );
    }
    for key in ["config_path", "config_name"] {
        let s = v["hydra"][key].as_str().unwrap_or_default();
        assert!(!s.is_empty(), "{}: hydra.{key} missing", path.display());
    }
    if let Some(dirty) = v.get("git_dirty") {
        assert!(dirty.is_boolean(), "{}: git_dirty {dirty}", path.display());
    }
    let run_type = string("run_type");
    let (strings, dirs): (&[&str], &[&str]) = match run_type {
        "real" => (&["backend"], &["workload_dir"]),
        "vidur" => (&[], &["workload_dir", "profiling_root"]),
        "compare" => (&[], &["real_run_dir", "sim_run_dir"]),
        "vidur_profile" => (&[], &["profiling_root"]),
        other => panic!(
            "{}: run_type `{other}` is not a precursor stage",
            path.display()
        ),
    };
    for key in strings {
        string(key);
    }
    for key in dirs {
        let p = Path::new(string(key));
        assert!(
            p.is_absolute(),
            "{}: {key} {} is not absolute",
            path.display(),
            p.display()
        );
        assert!(
            p.is_dir(),
            "{}: {key} {} is not a directory",
            path.display(),
            p.display()
        );
    }
}
