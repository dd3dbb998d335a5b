//! Run directories: `tmp/<stage>/<id>/`, complete if and only if `_SUCCESS` is in them.
//!
//! A stage writes into a private staging directory next to the final one and, once every
//! file is written, puts `_SUCCESS` in it and renames it into place. The final directory
//! therefore appears complete or not at all: a crash or `kill -9` mid-run leaves only a
//! staging directory that no reader ever looks at (and the next run sweeps away), and a
//! failed run leaves nothing.
//!
//! Run ids hash configs, not the data of the runs a run read, so a run also records each
//! input run's [`run_fingerprint`] and is redone, not reused, once an input holds other
//! data ([`stale_reason`]): a `real` run redone under the same id gives other timings.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::IoContext;
use crate::io::atomic::write_atomic;
use crate::io::read_csv;
use crate::io::records::{
    probe_version_label, timeline_probe_version, DeviceSpeedRow, DEVICE_SPEED_PROBE_VERSION,
};
use crate::io::schema::DEVICE_SPEED;
use crate::{Error, Result};

/// Name of the completion marker, written last.
pub const SUCCESS_MARKER: &str = "_SUCCESS";

/// The stages that own a directory under the output root. Serialized as its directory
/// name (`run_type` in `run_meta.json`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Workload,
    Real,
    VidurProfile,
    Vidur,
    /// Every iteration of a real run predicted (`replay`), a diagnostic beside the study.
    Replay,
    Compare,
    #[serde(rename = "sweeps")]
    Sweep,
    Capacity,
    Fidelity,
}

impl Stage {
    /// Every stage.
    pub const ALL: [Stage; 9] = [
        Stage::Workload,
        Stage::Real,
        Stage::VidurProfile,
        Stage::Vidur,
        Stage::Replay,
        Stage::Compare,
        Stage::Sweep,
        Stage::Capacity,
        Stage::Fidelity,
    ];

    /// The binary that produces this stage's runs (sweeps, capacity searches and the fidelity
    /// benchmark are `pipeline` modes); also the name of its primary config.
    pub fn binary_name(self) -> &'static str {
        match self {
            Stage::Workload => "workload",
            Stage::Real => "real",
            Stage::VidurProfile => "vidur_profile",
            Stage::Vidur => "vidur",
            Stage::Replay => "replay",
            Stage::Compare => "compare",
            Stage::Sweep | Stage::Capacity | Stage::Fidelity => "pipeline",
        }
    }

    /// Directory name under the output root (and `run_type` in `run_meta.json`).
    pub fn dir_name(self) -> &'static str {
        match self {
            Stage::Workload => "workload",
            Stage::Real => "real",
            Stage::VidurProfile => "vidur_profile",
            Stage::Vidur => "vidur",
            Stage::Replay => "replay",
            Stage::Compare => "compare",
            Stage::Sweep => "sweeps",
            Stage::Capacity => "capacity",
            Stage::Fidelity => "fidelity",
        }
    }
}

/// Where a run lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLocation {
    pub root: PathBuf,
    pub stage: Stage,
    pub id: String,
}

impl RunLocation {
    pub fn new(root: impl Into<PathBuf>, stage: Stage, id: impl Into<String>) -> Self {
        Self {
            root: root.into(),
            stage,
            id: id.into(),
        }
    }

    /// `<root>/<stage>/<id>`
    pub fn path(&self) -> PathBuf {
        self.root.join(self.stage.dir_name()).join(&self.id)
    }

    pub fn is_complete(&self) -> bool {
        is_complete(self.path())
    }
}

/// True if `dir` holds a `_SUCCESS` marker.
pub fn is_complete(dir: impl AsRef<Path>) -> bool {
    dir.as_ref().join(SUCCESS_MARKER).is_file()
}

/// Fails with `MissingInput` (and the command that makes it) unless `dir` is a complete run.
pub fn require_complete(dir: &Path, what: &str, make_it: &str) -> Result<()> {
    if is_complete(dir) {
        return Ok(());
    }
    let msg = if dir.exists() {
        format!("{what} is incomplete (no {SUCCESS_MARKER} marker: the run that wrote it failed or was interrupted)")
    } else {
        format!("{what} does not exist")
    };
    Err(Error::MissingInput {
        path: dir.to_path_buf(),
        msg,
        hint: Some(format!("produce it with: {make_it}")),
    })
}

/// Outcome of [`prepare`].
pub enum Prepared {
    /// The run is already complete; nothing to do.
    UpToDate(PathBuf),
    /// Write the run into this staging directory, then [`StagingDir::commit`].
    Fresh(StagingDir),
}

/// Why the complete run at `dir` must be redone although its config is unchanged: an input
/// it recorded with a fingerprint ([`run_fingerprint`]) is gone or holds other data now —
/// it was redone since, as a timed stage gives other numbers every time — or its
/// device-speed timeline has probes of another version than this build records, which no
/// correction can compare with a new run's. `None`: the run is current (also for runs that
/// recorded no fingerprints, or no `run_meta.json`). An unreadable `run_meta.json` or
/// timeline makes the run stale, so that it is rewritten rather than trusted.
pub fn stale_reason(dir: &Path) -> Option<String> {
    if !dir.join("run_meta.json").exists() {
        return None;
    }
    match crate::io::provenance::RunMeta::read(dir) {
        Ok(meta) => meta.stale_input().or_else(|| outdated_probes(dir)),
        Err(e) => Some(format!("its run_meta.json is unreadable ({e})")),
    }
}

/// Why the device-speed timeline in `dir` (if any) cannot serve a correction with this
/// build's: probes of another version ([`DEVICE_SPEED_PROBE_VERSION`]).
fn outdated_probes(dir: &Path) -> Option<String> {
    let path = dir.join(DEVICE_SPEED.file_name);
    if !path.is_file() {
        return None;
    }
    match read_csv::<DeviceSpeedRow>(&path, &DEVICE_SPEED) {
        Ok(rows) => {
            let version = timeline_probe_version(&rows);
            (!rows.is_empty() && version != Some(DEVICE_SPEED_PROBE_VERSION)).then(|| {
                format!(
                    "its device-speed probes are version {}, this build's are \
                     {DEVICE_SPEED_PROBE_VERSION} (they time other kernels and do not compare)",
                    probe_version_label(version)
                )
            })
        }
        Err(e) => Some(format!(
            "its {} is unreadable ({e})",
            DEVICE_SPEED.file_name
        )),
    }
}

/// Whether the run at `dir` is complete and made from the inputs that are there now.
pub fn is_current(dir: &Path) -> bool {
    is_complete(dir) && stale_reason(dir).is_none()
}

/// Whether the run at `dir` can be reused as it is: not `force`d, complete and current.
/// Says on stderr `up to date: <dir>`, or why a complete run is redone.
pub fn reusable(dir: &Path, force: bool) -> bool {
    if force || !is_complete(dir) {
        return false;
    }
    match stale_reason(dir) {
        None => {
            eprintln!("up to date: {}", dir.display());
            true
        }
        Some(why) => {
            eprintln!("redoing {}: {why}", dir.display());
            false
        }
    }
}

/// Data files of a run, the part a fingerprint covers.
const FINGERPRINTED_EXTENSIONS: [&str; 2] = ["csv", "jsonl"];

/// What a run holds, as the runs made from it see it: sha256 over its data tables (`*.csv`,
/// `*.jsonl` at any depth; each file's relative path, length and bytes, in path order).
/// Metadata (`run_meta.json`, `workload_meta.json`, ...) carries timestamps and is left
/// out, so a deterministic stage redone keeps its fingerprint and a timed one (`real`,
/// `vidur_profile`) gets a new one. A run read from one file (a vLLM benchmark result) is
/// fingerprinted by its bytes.
pub fn run_fingerprint(dir: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    if dir.is_file() {
        return crate::io::ids::sha256_file(dir);
    }
    fn data_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in fs::read_dir(dir).with_path(dir)? {
            let path = entry.with_path(dir)?.path();
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                data_files(root, &path, out)?;
            } else if path
                .extension()
                .is_some_and(|e| FINGERPRINTED_EXTENSIONS.iter().any(|x| e == *x))
            {
                out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    data_files(dir, dir, &mut files)?;
    files.sort();
    let mut hasher = Sha256::new();
    for rel in &files {
        let path = dir.join(rel);
        let len_bytes = fs::metadata(&path).with_path(&path)?.len();
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(len_bytes.to_le_bytes());
        crate::io::ids::hash_file_into(&path, &mut hasher)?;
    }
    Ok(crate::io::ids::hex(&hasher.finalize()))
}

/// Decides whether a run must be (re)done and, if so, gives a fresh staging directory.
/// `force` redoes a complete run; so does an input redone since ([`stale_reason`]).
pub fn prepare(location: &RunLocation, force: bool) -> Result<Prepared> {
    let final_path = location.path();
    if reusable(&final_path, force) {
        return Ok(Prepared::UpToDate(final_path));
    }
    let parent = final_path
        .parent()
        .ok_or_else(|| Error::InvalidInput(format!("bad run path {}", final_path.display())))?;
    fs::create_dir_all(parent).with_path(parent)?;
    sweep_stale_staging(parent, &location.id);
    let staging = parent.join(format!(".{}.staging-{}", location.id, std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging).with_path(&staging)?;
    }
    fs::create_dir_all(&staging).with_path(&staging)?;
    Ok(Prepared::Fresh(StagingDir {
        staging,
        final_path,
        committed: false,
    }))
}

/// [`prepare`] as every stage uses it: `None` when the run can be reused (see [`reusable`]),
/// else the staging dir to write the run into.
pub fn prepare_fresh(location: &RunLocation, force: bool) -> Result<Option<StagingDir>> {
    Ok(match prepare(location, force)? {
        Prepared::UpToDate(_) => None,
        Prepared::Fresh(staging) => Some(staging),
    })
}

/// Removes staging directories of `id` left by processes that no longer exist.
fn sweep_stale_staging(parent: &Path, id: &str) {
    let prefix = format!(".{id}.staging-");
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(&prefix) else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A run being written. Dropped without [`commit`](StagingDir::commit), it is deleted.
pub struct StagingDir {
    staging: PathBuf,
    final_path: PathBuf,
    committed: bool,
}

impl StagingDir {
    /// Directory to write the run's files into.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// `staging/<name>`
    pub fn file(&self, name: &str) -> PathBuf {
        self.staging.join(name)
    }

    /// Where the run will live once committed.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Writes the marker and moves the run into place, replacing an incomplete or forced
    /// previous run. Returns the final path.
    pub fn commit(mut self) -> Result<PathBuf> {
        write_atomic(self.staging.join(SUCCESS_MARKER), b"")?;
        if self.final_path.exists() {
            // Rename first so the old run disappears atomically, then delete it.
            let trash = self.final_path.with_file_name(format!(
                ".{}.replaced-{}",
                self.final_path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                std::process::id()
            ));
            fs::rename(&self.final_path, &trash).with_path(&self.final_path)?;
            fs::remove_dir_all(&trash).with_path(&trash)?;
        }
        fs::rename(&self.staging, &self.final_path).with_path(&self.final_path)?;
        self.committed = true;
        Ok(self.final_path.clone())
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        crate::io::atomic::tests::tempdir()
    }

    #[test]
    fn a_stage_is_serialized_as_its_directory_name() {
        for stage in Stage::ALL {
            let json = serde_json::to_value(stage).unwrap();
            assert_eq!(json, stage.dir_name(), "{stage:?}");
            assert_eq!(serde_json::from_value::<Stage>(json).unwrap(), stage);
        }
    }

    #[test]
    fn fresh_then_up_to_date_then_forced() {
        let root = root();
        let loc = RunLocation::new(&root, Stage::Workload, "wl-abc");
        let Prepared::Fresh(staging) = prepare(&loc, false).unwrap() else {
            panic!("expected fresh")
        };
        fs::write(staging.file("a.txt"), "1").unwrap();
        assert!(
            !loc.path().exists(),
            "final dir must not exist before commit"
        );
        let path = staging.commit().unwrap();
        assert_eq!(path, loc.path());
        assert!(loc.is_complete());
        assert!(matches!(
            prepare(&loc, false).unwrap(),
            Prepared::UpToDate(_)
        ));
        let Prepared::Fresh(staging) = prepare(&loc, true).unwrap() else {
            panic!("expected forced redo")
        };
        fs::write(staging.file("b.txt"), "2").unwrap();
        staging.commit().unwrap();
        assert!(!loc.path().join("a.txt").exists());
        assert!(loc.path().join("b.txt").exists());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn failed_run_leaves_nothing_and_incomplete_dir_is_redone() {
        let root = root();
        let loc = RunLocation::new(&root, Stage::Real, "real-x");
        {
            let Prepared::Fresh(staging) = prepare(&loc, false).unwrap() else {
                panic!()
            };
            fs::write(staging.file("partial.csv"), "x").unwrap();
        }
        let stage_dir = root.join("real");
        assert_eq!(fs::read_dir(&stage_dir).unwrap().count(), 0);
        // A directory without a marker (e.g. from an older crash) is not complete.
        fs::create_dir_all(loc.path()).unwrap();
        assert!(!loc.is_complete());
        assert!(matches!(prepare(&loc, false).unwrap(), Prepared::Fresh(_)));
        let err = require_complete(&loc.path(), "real run", "cargo run --bin real").unwrap_err();
        assert!(err.to_string().contains("incomplete"), "{err}");
        fs::remove_dir_all(root).unwrap();
    }

    /// A complete run (a data table, metadata with a timestamp) under `root/<stage>/<id>`.
    fn committed_run(root: &Path, stage: Stage, id: &str, table: &str, stamp: &str) -> PathBuf {
        let Prepared::Fresh(staging) = prepare(&RunLocation::new(root, stage, id), true).unwrap()
        else {
            panic!("forced runs are fresh")
        };
        fs::create_dir_all(staging.path().join("sub")).unwrap();
        fs::write(staging.path().join("sub/rows.csv"), table).unwrap();
        fs::write(staging.file("workload_meta.json"), stamp).unwrap();
        staging.commit().unwrap()
    }

    #[test]
    fn the_fingerprint_covers_data_tables_not_metadata() {
        let root = root();
        let a = committed_run(&root, Stage::Workload, "a", "x,y\n1,2\n", "t0");
        let b = committed_run(&root, Stage::Workload, "b", "x,y\n1,2\n", "t1");
        let c = committed_run(&root, Stage::Workload, "c", "x,y\n1,3\n", "t0");
        let print = |d: &Path| run_fingerprint(d).unwrap();
        assert_eq!(print(&a), print(&b), "metadata is not part of it");
        assert_ne!(print(&a), print(&c), "a changed value is");
        fs::rename(a.join("sub/rows.csv"), a.join("sub/other.csv")).unwrap();
        assert_ne!(print(&a), print(&b), "so is a file's name");
        fs::remove_dir_all(root).unwrap();
    }

    /// A run record of `stage` as a stage begins it.
    fn test_meta(run_id: &str, stage: Stage) -> crate::io::provenance::RunMeta {
        use crate::io::provenance::{HostFingerprint, HydraInfo, RunMeta};
        RunMeta::begin(
            run_id,
            stage,
            "m",
            serde_json::json!({}),
            HydraInfo {
                config_path: "c".into(),
                config_name: stage.binary_name().into(),
                overrides: vec![],
                choices: Default::default(),
            },
            HostFingerprint::collect("cpu", 1),
        )
    }

    /// A run made from an input is reused while the input holds what it was made from, and
    /// redone once the input was redone with other data or is gone.
    #[test]
    fn a_run_whose_input_was_redone_is_stale() {
        use crate::io::provenance::InputRef;
        let root = root();
        let input = committed_run(&root, Stage::Real, "real-1", "t_ms\n10\n", "");
        let loc = RunLocation::new(&root, Stage::Compare, "cmp-1");
        let Prepared::Fresh(staging) = prepare(&loc, false).unwrap() else {
            panic!("expected fresh")
        };
        let mut meta = test_meta("cmp-1", Stage::Compare);
        meta.inputs
            .insert("real".into(), InputRef::run("real-1", &input).unwrap());
        crate::io::json::write_json(staging.file("run_meta.json"), &meta).unwrap();
        staging.commit().unwrap();
        assert_eq!(stale_reason(&loc.path()), None);
        assert!(matches!(
            prepare(&loc, false).unwrap(),
            Prepared::UpToDate(_)
        ));

        // The same rows again (a deterministic stage redone): still current.
        committed_run(&root, Stage::Real, "real-1", "t_ms\n10\n", "later");
        assert!(is_current(&loc.path()));
        // Other rows (a timed stage redone): stale, and prepared afresh.
        committed_run(&root, Stage::Real, "real-1", "t_ms\n11\n", "");
        let why = stale_reason(&loc.path()).expect("stale");
        assert!(
            why.contains("input `real`") && why.contains("redone"),
            "{why}"
        );
        assert!(!is_current(&loc.path()));
        assert!(matches!(prepare(&loc, false).unwrap(), Prepared::Fresh(_)));
        fs::remove_dir_all(&input).unwrap();
        let why = stale_reason(&loc.path()).expect("stale");
        assert!(why.contains("is gone"), "{why}");
        // An unreadable record is not trusted either.
        fs::write(loc.path().join("run_meta.json"), "{").unwrap();
        let why = stale_reason(&loc.path()).expect("stale");
        assert!(why.contains("run_meta.json is unreadable"), "{why}");
        fs::remove_dir_all(root).unwrap();
    }

    /// A timed run whose device-speed probes are of another version than this build's is
    /// redone: its rates cannot be compared with a new run's.
    #[test]
    fn a_run_with_probes_of_another_version_is_stale() {
        let root = root();
        let loc = RunLocation::new(&root, Stage::Real, "real-2");
        let Prepared::Fresh(staging) = prepare(&loc, false).unwrap() else {
            panic!("expected fresh")
        };
        let meta = test_meta("real-2", Stage::Real);
        crate::io::json::write_json(staging.file("run_meta.json"), &meta).unwrap();
        let row = |probe_version| DeviceSpeedRow {
            probe_version,
            ..DeviceSpeedRow::idle_probe(0, 33.5, 201.3)
        };
        let timeline = |probe_version| {
            crate::io::write_csv(
                loc.path().join(DEVICE_SPEED.file_name),
                &DEVICE_SPEED,
                &[row(probe_version)],
            )
            .unwrap()
        };
        staging.commit().unwrap();
        assert!(is_current(&loc.path()), "no timeline: nothing to compare");
        timeline(Some(DEVICE_SPEED_PROBE_VERSION));
        assert!(is_current(&loc.path()));
        for older in [None, Some(DEVICE_SPEED_PROBE_VERSION - 1)] {
            timeline(older);
            let why = stale_reason(&loc.path()).expect("stale");
            assert!(why.contains("device-speed probes are version"), "{why}");
            assert!(matches!(prepare(&loc, false).unwrap(), Prepared::Fresh(_)));
        }
        fs::write(loc.path().join(DEVICE_SPEED.file_name), "nonsense\n").unwrap();
        let why = stale_reason(&loc.path()).expect("stale");
        assert!(why.contains("device_speed.csv is unreadable"), "{why}");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn stale_staging_of_dead_process_is_swept() {
        let root = root();
        let loc = RunLocation::new(&root, Stage::Vidur, "sim-1");
        let stale = root.join("vidur").join(".sim-1.staging-999999999");
        fs::create_dir_all(&stale).unwrap();
        let _fresh = prepare(&loc, false).unwrap();
        assert!(!stale.exists());
        drop(_fresh);
        fs::remove_dir_all(root).unwrap();
    }
}
