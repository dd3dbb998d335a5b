//! Provenance: what ran, where, when, from which inputs (`run_meta.json`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::io::json::read_json_validated;
use crate::io::json_schemas::{contract_schema, Contract};
use crate::io::rundir::{run_fingerprint, Stage};
use crate::io::schema::SCHEMA_VERSION;
use crate::Result;

/// Host fingerprint recorded with every run, so numbers can be traced to a machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HostFingerprint {
    pub hostname: String,
    pub cpu_model: String,
    #[schemars(range(min = 1))]
    pub cpu_logical_cores: usize,
    pub memory_bytes: u64,
    pub os: String,
    pub kernel: String,
    /// `cpu`, `cuda:0`, ...
    pub device: String,
    /// Worker threads the run used (rayon pool size for candle on CPU).
    #[schemars(range(min = 1))]
    pub threads: usize,
    pub crate_versions: BTreeMap<String, String>,
    /// How this crate was compiled (`opt-level=3 debug-assertions=off`):
    /// a timing from an unoptimised build is not comparable, so every run says which it was.
    /// Empty in runs recorded before it existed.
    #[serde(default)]
    pub build: String,
}

impl HostFingerprint {
    /// Reads the host's identity (Linux `/proc`; fields are `unknown` elsewhere).
    pub fn collect(device: &str, threads: usize) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_bytes = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0);
        let os = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| std::env::consts::OS.to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        HostFingerprint {
            hostname,
            cpu_model,
            cpu_logical_cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_bytes,
            os,
            kernel,
            device: device.to_string(),
            threads,
            crate_versions: crate_versions(),
            build: build_profile(),
        }
    }
}

/// The optimisation this crate was compiled with (`cargo`'s `OPT_LEVEL` for it, via
/// `build.rs`), and whether debug assertions are on.
pub fn build_profile() -> String {
    format!(
        "opt-level={} debug-assertions={}",
        option_env!("SIMREAL_BUILD_OPT_LEVEL").unwrap_or("unknown"),
        if cfg!(debug_assertions) { "on" } else { "off" },
    )
}

/// Versions of the crates whose behaviour shapes the numbers (from Cargo.lock at build time).
pub fn crate_versions() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("simreal".into(), env!("CARGO_PKG_VERSION").into());
    for (name, version) in [
        ("candle-core", option_env!("SIMREAL_DEP_CANDLE_CORE")),
        ("tokenizers", option_env!("SIMREAL_DEP_TOKENIZERS")),
        ("rustc", option_env!("SIMREAL_RUSTC_VERSION")),
    ] {
        m.insert(name.into(), version.unwrap_or("unknown").into());
    }
    m
}

/// The git commit of the working directory's repository, and whether it has uncommitted
/// changes to tracked files. `None` outside a git checkout.
pub fn git_state(dir: &Path) -> Option<(String, bool)> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dirty = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    Some((commit, dirty))
}

/// Now as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC).
pub fn utc_now() -> String {
    format_utc(SystemTime::now())
}

/// Formats a time as RFC 3339 UTC with microseconds.
pub fn format_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `hydra` block of run metadata: which composed config produced the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HydraInfo {
    pub config_path: String,
    pub config_name: String,
    /// The command-line overrides, as given.
    pub overrides: Vec<String>,
    /// Group choices after composition (`model: qwen3_0_6b`, ...).
    pub choices: BTreeMap<String, String>,
}

/// An input a run consumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InputRef {
    pub id: String,
    pub path: String,
    /// Content hash where one is cheap and meaningful (weights, trace files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// For an input that is a run dir: its [`run_fingerprint`] when it was read. Once the
    /// input holds other data (it was redone), the run made from it is stale and redone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl InputRef {
    /// An input that is not a run dir (a file, a weight snapshot, Vidur's tables).
    pub fn file(id: impl Into<String>, path: impl Into<String>, sha256: Option<String>) -> Self {
        Self {
            id: id.into(),
            path: path.into(),
            sha256,
            fingerprint: None,
        }
    }

    /// An input that is a complete run dir, with its fingerprint.
    pub fn run(id: impl Into<String>, dir: &Path) -> Result<Self> {
        Ok(Self {
            id: id.into(),
            path: dir.display().to_string(),
            sha256: None,
            fingerprint: Some(run_fingerprint(dir)?),
        })
    }
}

/// `run_meta.json`, common to every stage.
///
/// Besides our own fields it carries the flat fields of the precursor toolkit's `run_meta`
/// schema (CodeGandee/gpu-simulate-test, `contracts/run_meta.schema.json`), so that its
/// analysis code reads our runs: `schema_version` as the string `"v1"`, and per stage
/// `backend` and `workload_dir` (real), `workload_dir` and `profiling_root` (vidur),
/// `profiling_root` (vidur_profile), `real_run_dir` and `sim_run_dir` (compare), as absolute
/// paths. They repeat what `hydra.choices` and `inputs` already say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunMeta {
    /// Written as `"v1"`; runs written before read as well with the integer `1`.
    #[serde(with = "run_meta_version")]
    #[schemars(schema_with = "run_meta_version::schema")]
    pub schema_version: u32,
    pub run_id: String,
    /// The stage that wrote the run (its directory under the output root).
    pub run_type: Stage,
    pub model: String,
    pub started_at: String,
    pub ended_at: String,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    pub env: HostFingerprint,
    /// The resolved config.
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub params: serde_json::Value,
    pub hydra: HydraInfo,
    pub seed: Option<u64>,
    /// Inputs by role (`workload`, `bundle`, `real_run`, `sim_run`, ...).
    pub inputs: BTreeMap<String, InputRef>,
    /// Weight source: `<path> sha256:<hash>` or `random:<seed>`; absent when no model ran.
    pub weights: Option<String>,
    /// Stage-specific facts (warm-up iterations, counts, timings).
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub extra: serde_json::Value,
    /// Precursor alias: the real engine's backend (`backend.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Precursor alias: the workload dir a real or simulated run replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_dir: Option<String>,
    /// Precursor alias: the profiling bundle a simulation's predictor was built from (Vidur's
    /// prediction-table dir for `vidur_tables`), or the bundle a profile run wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiling_root: Option<String>,
    /// Precursor alias: the (first) real run a comparison read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_run_dir: Option<String>,
    /// Precursor alias: the simulated run a comparison read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim_run_dir: Option<String>,
}

/// `path` made absolute against the working directory (it need not exist yet), as the
/// precursor's path fields are.
pub fn absolute_path(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// Where an existing dir really is (links and `..` resolved), as the key of an id that
/// depends on its inputs: one dir named relatively, absolutely or by a detour gets one key,
/// and two dirs of one name (the paired bench's `p0` … `p5` of different windows) get two.
/// The absolute path where it cannot be resolved.
pub fn place_key(path: &Path) -> String {
    std::fs::canonicalize(path)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| absolute_path(path))
}

/// `schema_version` of `run_meta.json`: `"v<N>"` on disk, the precursor's form; the bare
/// integer of earlier runs is accepted on reading.
mod run_meta_version {
    use schemars::{json_schema, Schema, SchemaGenerator};
    use serde::{de, Deserialize, Deserializer, Serializer};

    use crate::io::schema::SCHEMA_VERSION;

    /// What readers accept: `"v1"`, or the integer of earlier runs.
    pub fn schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"enum": [format!("v{SCHEMA_VERSION}"), SCHEMA_VERSION]})
    }

    pub fn serialize<S: Serializer>(version: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("v{version}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Version {
            Number(u32),
            Text(String),
        }
        match Version::deserialize(d)? {
            Version::Number(n) => Ok(n),
            Version::Text(t) => t
                .strip_prefix('v')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| de::Error::custom(format!("schema_version `{t}` is not `v<N>`"))),
        }
    }
}

impl RunMeta {
    /// The JSON Schema of `run_meta.json`, as readers accept it.
    pub fn schema() -> serde_json::Value {
        contract_schema::<RunMeta>(
            Contract::Read,
            "run_meta.json",
            "provenance of one stage run",
        )
    }

    /// Why the run no longer matches its inputs: one recorded with a fingerprint is gone, or
    /// holds other data now. `None` when all are as they were.
    pub fn stale_input(&self) -> Option<String> {
        self.inputs.iter().find_map(|(role, input)| {
            let recorded = input.fingerprint.as_ref()?;
            let dir = Path::new(&input.path);
            // Not `is_complete`: runs of other tools (a Vidur output dir, a vLLM result
            // file) have no marker, and ours appear complete or not at all.
            if !dir.exists() {
                return Some(format!("its input `{role}` ({}) is gone", input.path));
            }
            match run_fingerprint(dir) {
                Ok(now) if now == *recorded => None,
                Ok(_) => Some(format!(
                    "its input `{role}` ({}) was redone since",
                    input.path
                )),
                Err(e) => Some(format!("its input `{role}` cannot be read ({e})")),
            }
        })
    }

    /// Reads `<dir>/run_meta.json`, checked against [`RunMeta::schema`].
    pub fn read(dir: &Path) -> Result<RunMeta> {
        read_json_validated(dir.join("run_meta.json"), &RunMeta::schema())
    }

    /// A new record with provenance filled in; `ended_at` is set by the caller at the end.
    pub fn begin(
        run_id: &str,
        run_type: Stage,
        model: &str,
        params: serde_json::Value,
        hydra: HydraInfo,
        env: HostFingerprint,
    ) -> Self {
        let git = std::env::current_dir().ok().and_then(|d| git_state(&d));
        RunMeta {
            schema_version: SCHEMA_VERSION,
            run_id: run_id.to_string(),
            run_type,
            model: model.to_string(),
            started_at: utc_now(),
            ended_at: String::new(),
            git_commit: git.as_ref().map(|(c, _)| c.clone()),
            git_dirty: git.map(|(_, d)| d),
            env,
            params,
            hydra,
            seed: None,
            inputs: BTreeMap::new(),
            weights: None,
            extra: serde_json::Value::Object(Default::default()),
            backend: None,
            workload_dir: None,
            profiling_root: None,
            real_run_dir: None,
            sim_run_dir: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_formatting_matches_known_dates() {
        assert_eq!(format_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        // 2024-02-29T12:34:56.789Z (leap day)
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(format_utc(t), "2024-02-29T12:34:56.789000Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799); // 2099-12-31T23:59:59
        assert_eq!(format_utc(t), "2099-12-31T23:59:59.000000Z");
    }

    #[test]
    fn schema_version_is_written_as_v1_and_read_in_either_form() {
        let meta = RunMeta::begin(
            "r",
            Stage::Real,
            "m",
            serde_json::json!({}),
            HydraInfo {
                config_path: "c".into(),
                config_name: "real".into(),
                overrides: vec![],
                choices: BTreeMap::new(),
            },
            HostFingerprint::collect("cpu", 1),
        );
        let mut v = serde_json::to_value(&meta).unwrap();
        assert_eq!(v["schema_version"], "v1");
        assert!(v.get("backend").is_none(), "unset aliases are not written");
        assert_eq!(serde_json::from_value::<RunMeta>(v.clone()).unwrap(), meta);
        v["schema_version"] = serde_json::json!(1);
        assert_eq!(serde_json::from_value::<RunMeta>(v.clone()).unwrap(), meta);
        v["schema_version"] = serde_json::json!("one");
        assert!(serde_json::from_value::<RunMeta>(v).is_err());
    }

    #[test]
    fn a_record_of_every_stage_validates_against_the_schema_and_reads_back() {
        let dir = crate::io::atomic::tests::tempdir();
        for stage in Stage::ALL {
            let mut meta = RunMeta::begin(
                "x",
                stage,
                "qwen3_tiny",
                serde_json::json!({}),
                HydraInfo {
                    config_path: "configs".into(),
                    config_name: stage.binary_name().into(),
                    overrides: vec![],
                    choices: BTreeMap::new(),
                },
                HostFingerprint::collect("cpu", 2),
            );
            meta.real_run_dir = Some("/somewhere".into());
            crate::io::json::write_json(dir.join("run_meta.json"), &meta).unwrap();
            assert_eq!(RunMeta::read(&dir).unwrap(), meta, "{stage:?}");
        }
        let mut v = serde_json::to_value(RunMeta::read(&dir).unwrap()).unwrap();
        v["run_type"] = serde_json::json!("sweep");
        crate::io::json::write_json(dir.join("run_meta.json"), &v).unwrap();
        let err = RunMeta::read(&dir).unwrap_err().to_string();
        assert!(err.contains("$.run_type"), "{err}");
    }

    #[test]
    fn fingerprint_has_cores_and_device() {
        let fp = HostFingerprint::collect("cpu", 2);
        assert!(fp.cpu_logical_cores >= 1);
        assert_eq!(fp.device, "cpu");
        assert!(fp.crate_versions.contains_key("simreal"));
    }
}
