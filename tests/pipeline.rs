//! The `pipeline` binary end to end on `qwen3_tiny` with a tiny profiling grid: the whole
//! study, a rerun that only says "up to date" (and redoes the comparison once `real` was
//! redone), `--print-plan` agreeing with what was written,
//! a `kill -9` in the middle of the `real` stage that leaves nothing read as complete and is
//! redone alone, and a two-point sweep.

#![cfg(all(feature = "engine", feature = "report"))]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{bin, run, run_ok, TempRoot, TINY_PROFILE_GRID};
use simreal::io::read_csv;
use simreal::io::schema::SWEEP;

/// A study that takes seconds: tiny model, a short workload, and (with
/// [`TINY_PROFILE_GRID`]) a tiny profiling grid.
const STUDY: &[&str] = &[
    "model=qwen3_tiny",
    "workload.num_requests=8",
    "workload.qps=8",
    "workload.lengths.min_tokens=16",
    "workload.lengths.max_tokens=48",
    "compare.figure_width_px=480",
    "compare.figure_height_px=360",
];

const STAGES: [&str; 5] = ["workload", "vidur_profile", "real", "vidur", "compare"];

fn args(root: &TempRoot, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = STUDY
        .iter()
        .chain(&TINY_PROFILE_GRID)
        .map(|s| s.to_string())
        .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v.push(root.root_override());
    v
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `--print-plan` of these overrides.
fn plan(overrides: &[String]) -> serde_json::Value {
    let mut a = vec!["--print-plan".to_string()];
    a.extend(overrides.iter().cloned());
    let out = run("pipeline", &refs(&a));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--print-plan prints JSON")
}

fn stage_dir(plan: &serde_json::Value, stage: &str) -> PathBuf {
    PathBuf::from(plan["stages"][stage]["dir"].as_str().expect("stage dir"))
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn study_runs_once_then_is_up_to_date_and_matches_its_plan() {
    let root = TempRoot::new("pipeline-study");
    let a = args(&root, &[]);
    let before = plan(&a);
    for s in STAGES {
        assert_eq!(before["stages"][s]["complete"], false, "{s}");
    }

    let report = run_ok("pipeline", &refs(&a));
    assert_eq!(report.file_name().unwrap(), "report.md");
    assert!(report.is_file(), "{}", report.display());
    assert!(report.with_file_name("report.html").is_file());

    let after = plan(&a);
    for s in STAGES {
        assert_eq!(after["stages"][s]["complete"], true, "{s}");
        assert_eq!(after["stages"][s]["id"], before["stages"][s]["id"], "{s}");
        assert!(stage_dir(&after, s).join("_SUCCESS").is_file(), "{s}");
        if s != "workload" {
            common::precursor::check_run_meta(&stage_dir(&after, s));
        }
    }
    assert_eq!(report.parent().unwrap(), stage_dir(&after, "compare"));
    // Profile and real run timed the same reference iteration: the comparison reports the
    // device's speed in both.
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(report.with_file_name("summary.json")).unwrap(),
    )
    .unwrap();
    let speed = &summary["attribution"]["device_speed"];
    assert!(
        speed["profile_reference_ms"].as_f64().unwrap() > 0.0,
        "{speed}"
    );
    assert!(
        speed["real_reference_ms"].as_f64().unwrap() > 0.0,
        "{speed}"
    );
    assert!(speed["real_slower_pct"].is_number(), "{speed}");
    let report_text = std::fs::read_to_string(&report).unwrap();
    assert!(report_text.contains("Device speed: a fixed reference iteration"));
    // Both timed stages recorded a device-speed timeline, so the verdict gives the execution
    // error corrected for the device's speed beside the raw one.
    let corrected = &summary["attribution"]["speed_corrected"];
    assert!(corrected["execution"]["err_pct"].is_number(), "{corrected}");
    assert!(
        report_text.contains("Corrected for the device's measured speed during the real run"),
        "{report_text}"
    );
    // The plan's commands are the stage binaries with the same overrides.
    assert_eq!(after["stages"]["real"]["command"][0], "real");
    assert_eq!(after["overrides"].as_array().unwrap().len(), a.len());

    let markers: Vec<SystemTime> = STAGES
        .iter()
        .map(|s| modified(&stage_dir(&after, s).join("_SUCCESS")))
        .collect();
    let out = run("pipeline", &refs(&a));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for s in STAGES {
        let dir = stage_dir(&after, s);
        assert!(
            stderr.contains(&format!("up to date: {}", dir.display())),
            "{s} was not up to date:\n{stderr}"
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().last().map(|l| root_relative(l, &report)),
        Some(report.clone())
    );
    let again: Vec<SystemTime> = STAGES
        .iter()
        .map(|s| modified(&stage_dir(&after, s).join("_SUCCESS")))
        .collect();
    assert_eq!(markers, again, "a rerun rewrote a complete stage");

    // `real` redone alone (a timed stage: other numbers under the same id): the comparison
    // made from the old run is stale and redone; the stages that do not read it are kept.
    let mut forced = a.clone();
    forced.push("output.force=true".into());
    run_ok("real", &refs(&forced));
    let out = run("pipeline", &refs(&a));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let compare_dir = stage_dir(&after, "compare");
    assert!(
        stderr.contains(&format!(
            "redoing {}: its input `real`",
            compare_dir.display()
        )),
        "{stderr}"
    );
    for s in ["workload", "vidur_profile", "real", "vidur"] {
        let dir = stage_dir(&after, s);
        assert!(
            stderr.contains(&format!("up to date: {}", dir.display())),
            "{s} was not up to date:\n{stderr}"
        );
    }
    assert!(modified(&compare_dir.join("_SUCCESS")) > markers[4]);
}

/// The printed report path, made absolute the way `run_ok` does.
fn root_relative(line: &str, like: &Path) -> PathBuf {
    let p = PathBuf::from(line.trim());
    if p.is_absolute() {
        p
    } else {
        let joined = Path::new(env!("CARGO_MANIFEST_DIR")).join(p);
        assert!(joined.ends_with(like.file_name().unwrap()));
        joined
    }
}

#[test]
fn kill_9_mid_real_stage_redoes_only_that_stage() {
    let root = TempRoot::new("pipeline-kill");
    // Arrivals over ~5 s, so that the real stage is surely running when it is killed.
    let a = args(&root, &["workload.num_requests=30", "workload.qps=6"]);
    let p = plan(&a);
    let real_dir = stage_dir(&p, "real");
    let real_parent = real_dir.parent().unwrap().to_path_buf();
    let real_id = p["stages"]["real"]["id"].as_str().unwrap().to_string();

    let log = root.path().join("killed-pipeline.log");
    let mut child = Command::new(bin("pipeline"))
        .args(&a)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RAYON_NUM_THREADS", "2")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let staging_prefix = format!(".{real_id}.staging-");
    let staging_of = |parent: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(parent)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(&staging_prefix))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    // Wait until the real stage has its staging dir, then let it serve for a moment.
    while staging_of(&real_parent).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "pipeline ended before the real stage started: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "the real stage never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "pipeline ended before the real stage could be interrupted: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let killed = plan(&a);
    assert_eq!(killed["stages"]["workload"]["complete"], true);
    assert_eq!(killed["stages"]["vidur_profile"]["complete"], true);
    for s in ["real", "vidur", "compare"] {
        assert_eq!(killed["stages"][s]["complete"], false, "{s}");
    }
    assert!(!real_dir.exists(), "a killed stage left its final dir");
    assert_eq!(
        staging_of(&real_parent).len(),
        1,
        "the killed run's staging dir"
    );
    // Another stage reading the half-written run refuses it (when told not to make it),
    // naming the command.
    let sim = run("vidur", &refs(&a));
    assert!(
        sim.status.success(),
        "vidur needs only the workload and the bundle"
    );
    let mut no_upstream = vec!["--no-upstream".to_string()];
    no_upstream.extend(a.iter().cloned());
    let compare = run("compare", &refs(&no_upstream));
    assert!(!compare.status.success());
    let stderr = String::from_utf8_lossy(&compare.stderr);
    assert!(stderr.contains("real"), "{stderr}");

    let workload_marker = stage_dir(&p, "workload").join("_SUCCESS");
    let workload_time = modified(&workload_marker);
    let out = run("pipeline", &refs(&a));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    for s in ["workload", "vidur_profile", "vidur"] {
        let dir = stage_dir(&p, s);
        assert!(
            stderr.contains(&format!("up to date: {}", dir.display())),
            "{s} was redone:\n{stderr}"
        );
    }
    assert!(!stderr.contains(&format!("up to date: {}", real_dir.display())));
    assert!(real_dir.join("_SUCCESS").is_file());
    assert_eq!(modified(&workload_marker), workload_time);
    assert!(
        staging_of(&real_parent).is_empty(),
        "the stale staging dir was not swept"
    );
}

#[test]
fn two_point_sweep_writes_a_schema_checked_summary() {
    let root = TempRoot::new("pipeline-sweep");
    let mut a = vec!["-m".to_string()];
    a.extend(args(&root, &["workload.qps=4,8"]));
    let report = run_ok("pipeline", &refs(&a));
    assert_eq!(report.file_name().unwrap(), "sweep_report.md");
    let dir = report.parent().unwrap();
    assert!(dir.join("_SUCCESS").is_file());
    let rows: Vec<HashMap<String, String>> =
        read_csv(dir.join("sweep.csv"), &SWEEP).expect("sweep.csv matches SWEEP");
    assert_eq!(rows.len(), 2);
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(
        md.contains("workload.qps=4") && md.contains("workload.qps=8"),
        "{md}"
    );
    // One error-vs-load figure per metric, PNG and SVG.
    for m in ["ttft", "tpot", "e2e"] {
        for ext in ["png", "svg"] {
            let f = dir.join("figures").join(format!("{m}_error_vs_load.{ext}"));
            assert!(f.is_file(), "{}", f.display());
        }
    }
    // The same sweep again is up to date (every point and the summary).
    let out = run("pipeline", &refs(&a));
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("up to date: {}", dir.display()))
    );
}

#[test]
fn fidelity_benchmark_searches_capacity_and_reports_verdicts_against_the_real_runs() {
    let root = TempRoot::new("pipeline-fidelity");
    // 12 requests: P90 (needs 10) is judged, P99 (needs 100) is not.
    let settings = [
        "fidelity.policies=[sarathi]",
        "fidelity.load_fractions=[0.5]",
        "fidelity.real_repeats=2",
        "workload.num_requests=12",
        "fidelity.min_requests=12",
        "capacity.start_qps=4",
        "capacity.max_iterations=2",
    ];
    let mut a = vec!["--fidelity".to_string()];
    a.extend(args(&root, &settings));
    let md = run_ok("pipeline", &refs(&a));
    assert_eq!(md.file_name().unwrap(), "fidelity.md");
    let dir = md.parent().unwrap();
    assert!(dir.join("_SUCCESS").is_file());
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fidelity.json")).unwrap()).unwrap();
    assert_eq!(result["workload"], "poisson_short");
    assert_eq!(result["num_requests"], 12);
    let caps = result["capacities"].as_array().unwrap();
    assert_eq!(caps.len(), 1);
    assert_eq!(caps[0]["policy"], "sarathi");
    assert_eq!(caps[0]["probes"].as_array().unwrap().len(), 2);
    let capacity = caps[0]["capacity_qps"].as_f64().expect("a capacity");
    let points = result["points"].as_array().unwrap();
    assert_eq!(points.len(), 1);
    let p = &points[0];
    assert!((p["qps"].as_f64().unwrap() - 0.5 * capacity).abs() < 1e-3);
    assert_eq!(p["real_runs"].as_array().unwrap().len(), 2);
    assert_eq!(p["real_run_s"].as_array().unwrap().len(), 2);
    assert_eq!(p["requests_compared"], 12);
    let cells = p["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 9);
    for c in cells {
        let verdict = c["verdict"].as_str().unwrap();
        if c["stat"] == "p99" {
            assert_eq!(verdict, "n_too_small", "{c}");
            assert!(c["estimate"].is_null(), "{c}");
        } else {
            // Two real runs: the band, the interval and the verdict sit beside the error.
            let e = &c["estimate"];
            assert_eq!(e["real_band_ms"].as_array().unwrap().len(), 2, "{c}");
            assert_eq!(e["err_ci_pct"].as_array().unwrap().len(), 2, "{c}");
            assert!(
                ["indistinguishable", "noise_limited", "within_target", "off"].contains(&verdict),
                "{c}"
            );
        }
    }
    let counts = &result["counts"];
    let total: u64 = [
        "indistinguishable",
        "noise_limited",
        "within_target",
        "off",
        "n_too_small",
        "undefined",
    ]
    .iter()
    .map(|k| counts[k].as_u64().unwrap())
    .sum();
    assert_eq!(result["cells_total"], 9);
    assert_eq!(total, 9, "{counts}");
    assert_eq!(counts["n_too_small"], 3);
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(
        text.contains("## Capacity")
            && text.contains("## Verdicts by point")
            && text.contains("**9 cells: "),
        "{text}"
    );
    assert!(!text.contains('⚠') && text.contains("| 12 |"), "{text}");

    // Bad settings fail before any work, naming the key or the option.
    for (extra, expected) in [
        (
            "fidelity.load_fractions=[0.3,-1]",
            vec!["fidelity.load_fractions[1]"],
        ),
        ("fidelity.policies=[sarathi,fcfs]", vec!["fcfs", "vllm"]),
        (
            "fidelity.min_requests=13",
            vec!["fidelity.min_requests", "12 requests"],
        ),
        (
            "fidelity.workload=nonesuch",
            vec!["nonesuch", "poisson_short"],
        ),
    ] {
        let mut bad = vec!["--fidelity".to_string()];
        bad.extend(args(&root, &settings));
        bad.push(extra.to_string());
        let out = run("pipeline", &refs(&bad));
        assert!(!out.status.success(), "{extra}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for e in expected {
            assert!(stderr.contains(e), "{extra}: {stderr}");
        }
    }
}

/// A stage binary asked for its output on a fresh output root makes the stages it reads
/// first, make-style, saying what it runs (`compare` makes all four); `--no-upstream`
/// refuses instead, naming the command that makes the missing input, and writes nothing.
#[test]
fn a_stage_makes_its_missing_upstream_stages_first_unless_told_not_to() {
    let root = TempRoot::new("pipeline-upstream");
    let a = args(&root, &[]);

    let mut refuse = vec!["--no-upstream".to_string()];
    refuse.extend(a.iter().cloned());
    let out = run("real", &refs(&refuse));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("workload does not exist")
            && stderr.contains("produce it with: cargo run --release --bin workload"),
        "{stderr}"
    );
    assert!(common::run_dirs(root.path(), "workload").is_empty());

    let out = run("compare", &refs(&a));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for s in ["workload", "vidur_profile", "real", "vidur"] {
        assert!(
            stderr.contains(&format!("compare: making the missing `{s}` stage first")),
            "{s}: {stderr}"
        );
    }
    let after = plan(&a);
    for s in STAGES {
        assert_eq!(after["stages"][s]["complete"], true, "{s}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().last().map(PathBuf::from),
        Some(stage_dir(&after, "compare"))
    );

    let again = run("compare", &refs(&a));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(!stderr.contains("making the missing"), "{stderr}");
}
