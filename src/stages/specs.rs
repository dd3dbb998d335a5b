//! Every contract document in `specs/`, generated: the CSV contracts from the schema
//! registry (`io::specs`), the JSON files' schemas derived from the types that write them.
//! A test regenerates them all and fails on any difference (`SIMREAL_BLESS=1` rewrites), so
//! documents and code cannot drift.

use serde_json::Value;

use crate::io::json::to_json_string;
use crate::io::provenance::RunMeta;
use crate::io::specs::csv_specs;
use crate::stages::workload::WorkloadMeta;
use crate::Result;

/// Every JSON file contract: (file stem, schema).
pub fn json_file_schemas() -> Vec<(&'static str, Value)> {
    vec![
        ("run_meta", RunMeta::schema()),
        ("workload_meta", WorkloadMeta::schema()),
        #[cfg(feature = "report")]
        (
            "summary",
            crate::analysis::compare::report::CompareSummary::schema(),
        ),
    ]
}

/// Every generated spec file: (path relative to `specs/`, content).
pub fn generated_specs() -> Result<Vec<(String, String)>> {
    let mut out = csv_specs();
    for (stem, schema) in json_file_schemas() {
        out.push((format!("json/{stem}.schema.json"), to_json_string(&schema)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn specs_dir_is_in_sync_with_the_registry_and_the_types() {
        let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
        let bless = std::env::var_os("SIMREAL_BLESS").is_some();
        let mut stale = Vec::new();
        for (rel, content) in generated_specs().unwrap() {
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
            "specs/ out of date with the contracts (run `SIMREAL_BLESS=1 cargo test --lib specs`): {stale:?}"
        );
    }
}
