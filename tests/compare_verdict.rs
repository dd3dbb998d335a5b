//! The verdict against repeated real runs, pinned without an engine: bootstrap coverage on
//! synthetic data of a known distribution, the whole comparison's determinism for fixed
//! seeds, one real run leaving the noise unmeasured, and the interop path (several vLLM
//! benchmark JSONs as the real side, a Vidur output dir as the simulated side) on fixtures
//! written here.

#![cfg(feature = "report")]

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use simreal::analysis::compare::report::CompareSummary;
use simreal::analysis::compare::runs::{load_run, RunData};
use simreal::analysis::compare::statistics::Metric;
use simreal::analysis::compare::verdict::{
    AlignedSamples, CellVerdict, MetricFidelity, VerdictSettings,
};
use simreal::analysis::plots::FigureSize;
use simreal::analysis::stats::{Bootstrap, Stat};
use simreal::config::types::TargetsConfig;
use simreal::io::read_json_validated;
use simreal::io::Stage;
use simreal::stages::compare::{compare, run as compare_stage, write_outputs};
use simreal::stages::Job;

fn settings(resamples: usize, seed: u64) -> VerdictSettings {
    VerdictSettings {
        targets: TargetsConfig {
            mean: 3.0,
            p50: 3.0,
            p90: 5.0,
            p95: 5.0,
            p99: 5.0,
        },
        bootstrap: Bootstrap {
            resamples,
            confidence: 0.95,
            seed,
        },
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

/// Standard normal quantiles z_q.
fn z(stat: Stat) -> f64 {
    match stat {
        Stat::P50 | Stat::Mean => 0.0,
        Stat::P90 => 1.281_551_565_544_600_4,
        Stat::P95 => 1.644_853_626_951_472_2,
        Stat::P99 => 2.326_347_874_040_840_8,
    }
}

#[test]
fn bootstrap_intervals_cover_the_true_values_of_a_known_distribution() {
    // Request i has a base latency x_i = exp(μ + s·z_i); real run k sees x_i·exp(σ·z_ki)
    // and the simulator x_i·exp(σ·z'_i)·(1 + bias). Every side is then lognormal with
    // log-sd √(s² + σ²): the pooled real value of each statistic is known, and the
    // simulator's error on every statistic is exactly 100·bias. Runs of one request are
    // correlated through x_i, which is why the bootstrap resamples requests.
    const TRIALS: usize = 400;
    const REQUESTS: usize = 200;
    const RUNS: usize = 3;
    let (mu, s, sigma, bias) = (3.0f64, 0.5f64, 0.2f64, 0.05f64);
    let sd = (s * s + sigma * sigma).sqrt();
    let truth = |stat: Stat| match stat {
        Stat::Mean => (mu + sd * sd / 2.0).exp(),
        q => (mu + sd * z(q)).exp(),
    };
    let settings = settings(1000, 7);
    let checked = [Stat::Mean, Stat::P50, Stat::P90, Stat::P95];
    let mut real_hits = [0usize; 5];
    let mut err_hits = [0usize; 5];
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    for trial in 0..TRIALS {
        let base: Vec<f64> = (0..REQUESTS)
            .map(|_| (mu + s * normal(&mut rng)).exp())
            .collect();
        let mut side = |scale: f64| -> Vec<f64> {
            base.iter()
                .map(|x| x * (sigma * normal(&mut rng)).exp() * scale)
                .collect()
        };
        let real_ms: Vec<Vec<f64>> = (0..RUNS).map(|_| side(1.0)).collect();
        let sim_ms = side(1.0 + bias);
        let samples = AlignedSamples {
            groups: (0..REQUESTS).collect(),
            num_groups: REQUESTS,
            real_ms,
            sim_ms,
        };
        let mut s = settings.clone();
        s.bootstrap.seed = trial as u64;
        let f = MetricFidelity::assess(Metric::Ttft, &samples, &s)
            .unwrap()
            .unwrap();
        for stat in Stat::ALL {
            let e = f.cell(stat).estimate.clone().unwrap();
            let [lo, hi] = e.real_ci_ms;
            real_hits[stat as usize] += usize::from(lo <= truth(stat) && truth(stat) <= hi);
            let [lo, hi] = e.err_ci_pct.unwrap();
            err_hits[stat as usize] += usize::from(lo <= 100.0 * bias && 100.0 * bias <= hi);
        }
    }
    let coverage = |hits: usize| hits as f64 / TRIALS as f64;
    let report: Vec<String> = Stat::ALL
        .iter()
        .map(|&st| {
            format!(
                "{}: real {:.3}, error {:.3}",
                st.label(),
                coverage(real_hits[st as usize]),
                coverage(err_hits[st as usize])
            )
        })
        .collect();
    eprintln!(
        "95 % CI coverage over {TRIALS} trials: {}",
        report.join("; ")
    );
    for stat in checked {
        let i = stat as usize;
        assert!(
            coverage(real_hits[i]) >= 0.93 && coverage(err_hits[i]) >= 0.93,
            "{}: {}",
            stat.label(),
            report.join("; ")
        );
        // Not wildly conservative either: a 95 % interval that always covers is too wide.
        assert!(coverage(real_hits[i]) <= 0.99, "{}", report.join("; "));
    }
    // The P99 of 200 requests has two beyond it: its own interval undercovers (about 0.82
    // here, as docs/fidelity_verdict.md says), but the paired interval of the error, which
    // the verdict reads, holds.
    assert!(
        coverage(err_hits[Stat::P99 as usize]) >= 0.93,
        "{}",
        report.join("; ")
    );
}

// ---------------------------------------------------------------------------------------
// Fixtures: three vLLM benchmark JSONs (the real engine run three times) and a Vidur output
// dir (the simulator), for the same 150 requests.
// ---------------------------------------------------------------------------------------

const REQUESTS: usize = 150;

struct Request {
    prompt: u32,
    output: u32,
    /// Arrival, s.
    arrival_s: f64,
    ttft_s: f64,
    /// Gap between output tokens, s.
    gap_s: f64,
}

fn requests() -> Vec<Request> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    (0..REQUESTS)
        .map(|i| {
            let prompt = 16 + (i as u32 * 37) % 200;
            Request {
                prompt,
                output: 2 + (i as u32 * 13) % 30,
                arrival_s: 0.25 * i as f64,
                ttft_s: 0.02 + 0.0005 * f64::from(prompt) * (0.2 * normal(&mut rng)).exp(),
                gap_s: 0.03 * (0.1 * normal(&mut rng)).exp(),
            }
        })
        .collect()
}

/// One real run as `vllm bench serve --save-detailed` writes it; `seed` draws its noise.
fn write_vllm(path: &Path, requests: &[Request], seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut jitter = |sd: f64| (sd * normal(&mut rng)).exp();
    let (mut ttfts, mut itls) = (Vec::new(), Vec::new());
    for r in requests {
        ttfts.push(r.ttft_s * jitter(0.03));
        let gap = r.gap_s * jitter(0.02);
        itls.push(
            (1..r.output)
                .map(|_| gap * jitter(0.05))
                .collect::<Vec<f64>>(),
        );
    }
    let json = serde_json::json!({
        "backend": "vllm",
        "model_id": "Qwen/Qwen3-0.6B",
        "input_lens": requests.iter().map(|r| r.prompt).collect::<Vec<_>>(),
        "output_lens": requests.iter().map(|r| r.output).collect::<Vec<_>>(),
        "ttfts": ttfts,
        "itls": itls,
        "errors": requests.iter().map(|_| "").collect::<Vec<_>>(),
    });
    std::fs::write(path, json.to_string()).unwrap();
}

/// The simulator's run as Vidur writes `request_metrics.csv`: TTFTs `ttft_scale` × the
/// requests' base values.
fn write_vidur(dir: &Path, requests: &[Request], ttft_scale: f64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut csv = String::from(
        "Request Id,request_e2e_time,request_scheduling_delay,prefill_e2e_time,request_inter_arrival_delay,request_num_prefill_tokens,request_num_decode_tokens,request_num_restarts\n",
    );
    let mut previous: Option<f64> = None;
    for (i, r) in requests.iter().enumerate() {
        let ttft = r.ttft_s * ttft_scale;
        let e2e = ttft + r.gap_s * f64::from(r.output - 1);
        csv.push_str(&format!(
            "{i},{e2e:.9},0.0,{ttft:.9},{},{},{},0\n",
            previous.map_or(String::new(), |p| format!("{:.9}", r.arrival_s - p)),
            r.prompt,
            r.output
        ));
        previous = Some(r.arrival_s);
    }
    std::fs::write(dir.join("request_metrics.csv"), csv).unwrap();
}

struct Fixtures {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    vllm: Vec<std::path::PathBuf>,
    vidur: std::path::PathBuf,
}

fn fixtures(ttft_scale: f64) -> Fixtures {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let reqs = requests();
    let vllm: Vec<_> = (0..3)
        .map(|k| {
            let p = root.join(format!("vllm-run{k}.json"));
            write_vllm(&p, &reqs, 100 + k);
            p
        })
        .collect();
    let vidur = root.join("vidur_output");
    write_vidur(&vidur, &reqs, ttft_scale);
    Fixtures {
        _tmp: tmp,
        root,
        vllm,
        vidur,
    }
}

fn job(root: &Path, real: &[std::path::PathBuf], sim: &Path) -> Job {
    let real: Vec<String> = real.iter().map(|p| p.display().to_string()).collect();
    let overrides = [
        format!("compare.real_run={}", real.join(",")),
        format!("compare.sim_run={}", sim.display()),
        format!("output.root={}", root.display()),
        "compare.figure_width_px=480".to_string(),
        "compare.figure_height_px=360".to_string(),
    ];
    let refs: Vec<&str> = overrides.iter().map(String::as_str).collect();
    Job::from_overrides(Stage::Compare, &refs).unwrap()
}

#[test]
fn several_vllm_runs_against_a_vidur_dir_get_the_same_verdict() {
    // The simulator's TTFTs are 20 % high: far outside three runs whose TTFTs differ by a
    // few percent.
    let f = fixtures(1.2);
    let dir = compare_stage(&job(&f.root, &f.vllm, &f.vidur)).unwrap();
    let summary: serde_json::Value =
        read_json_validated(dir.join("summary.json"), &CompareSummary::schema()).unwrap();
    assert_eq!(summary["runs"]["real"][2]["source"], "vllm_benchmark");
    assert_eq!(summary["runs"]["sim"]["source"], "vidur_output");
    let fid = &summary["fidelity"];
    assert_eq!(fid["num_real_runs"], 3);
    assert_eq!(fid["noise_measured"], true);
    let ttft = &summary["metrics"]["ttft"]["fidelity"];
    assert_eq!(ttft["groups"], REQUESTS as u64);
    for q in ["mean", "p50", "p90", "p95", "p99"] {
        let cell = &ttft["cells"][q];
        assert_eq!(cell["verdict"], "off", "{q}: {cell}");
        let e = &cell["estimate"];
        assert_eq!(e["real_runs_ms"].as_array().unwrap().len(), 3);
        let err = e["err_pct"].as_f64().unwrap();
        assert!((15.0..25.0).contains(&err), "{q}: {err}");
        assert!(e["noise_ratio"].as_f64().unwrap() > 1.0, "{q}: {e}");
        let ci = e["err_ci_pct"].as_array().unwrap();
        assert!(ci[0].as_f64().unwrap() <= err && err <= ci[1].as_f64().unwrap());
    }
    // Vidur has no token rows and vLLM no queue delay: those metrics are not judged.
    assert!(summary["metrics"]["itl"].is_null());
    assert!(summary["metrics"]["queue_delay"].is_null());
    let verdict = summary["verdict"].as_str().unwrap();
    assert!(
        verdict.starts_with("Against 3 real runs of the same workload (150 requests in every run)"),
        "{verdict}"
    );
    assert!(verdict.contains("it is off on"), "{verdict}");
    assert!(verdict.contains("TTFT P50 (+"), "{verdict}");
    assert!(verdict.contains("× the runs' spread"), "{verdict}");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("## Statistic by statistic"), "{md}");
    assert!(md.contains("## Method"));
    assert!(dir.join("figures/error_bars_ttft.png").is_file());
    assert!(dir.join("figures/cdf_ttft.svg").is_file());

    // The same real runs against a simulator on the real engine's own scale: TTFT P50 is
    // inside the band or within target.
    let close = fixtures(1.0);
    let dir = compare_stage(&job(&close.root, &close.vllm, &close.vidur)).unwrap();
    let summary: serde_json::Value =
        read_json_validated(dir.join("summary.json"), &CompareSummary::schema()).unwrap();
    let v = summary["metrics"]["ttft"]["fidelity"]["cells"]["p50"]["verdict"]
        .as_str()
        .unwrap();
    assert!(
        ["indistinguishable", "within_target"].contains(&v),
        "{}",
        summary["metrics"]["ttft"]["fidelity"]["cells"]["p50"]
    );
}

#[test]
fn one_real_run_says_the_noise_is_unmeasured() {
    let f = fixtures(1.02);
    let dir = compare_stage(&job(&f.root, &f.vllm[..1], &f.vidur)).unwrap();
    let summary: serde_json::Value =
        read_json_validated(dir.join("summary.json"), &CompareSummary::schema()).unwrap();
    assert_eq!(summary["fidelity"]["noise_measured"], false);
    let cell = &summary["metrics"]["ttft"]["fidelity"]["cells"]["p90"];
    assert!(cell["estimate"]["real_band_ms"].is_null(), "{cell}");
    assert!(cell["estimate"]["noise_ratio"].is_null(), "{cell}");
    for m in ["ttft", "tpot", "e2e"] {
        for (_, c) in summary["metrics"][m]["fidelity"]["cells"]
            .as_object()
            .unwrap()
        {
            let v = c["verdict"].as_str().unwrap();
            assert!(["within_target", "off"].contains(&v), "{m}: {c}");
        }
    }
    let verdict = summary["verdict"].as_str().unwrap();
    assert!(
        verdict.starts_with("With one real run the real engine's run-to-run noise is unmeasured"),
        "{verdict}"
    );
    assert!(!verdict.contains("as close to the real engine as a rerun"));
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("unmeasured"));
}

fn load(f: &Fixtures, real: usize) -> (Vec<RunData>, RunData) {
    let sim = load_run(&f.vidur, None, "").unwrap();
    let reals = f.vllm[..real]
        .iter()
        .map(|p| load_run(p, Some(&sim), "").unwrap())
        .collect();
    (reals, sim)
}

/// Every file of a comparison dir, `summary.json` without its creation time.
fn outputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for sub in [dir.to_path_buf(), dir.join("figures")] {
        for entry in std::fs::read_dir(&sub).unwrap() {
            let path = entry.unwrap().path();
            if !path.is_file() {
                continue;
            }
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            let mut bytes = std::fs::read(&path).unwrap();
            if name == "summary.json" {
                let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                v["created_at"] = serde_json::Value::Null;
                bytes = v.to_string().into_bytes();
            }
            files.push((name, bytes));
        }
    }
    files.sort();
    files
}

#[test]
fn the_whole_report_is_deterministic_for_fixed_seeds() {
    let f = fixtures(1.05);
    let (reals, sim) = load(&f, 3);
    let size = FigureSize {
        width_px: 480,
        height_px: 360,
    };
    let write = |name: &str, seed: u64| {
        let dir = f.root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = compare("cmp-test", &reals, &sim, None, &settings(1000, seed)).unwrap();
        write_outputs(&dir, size, &mut c, &reals[0], &sim).unwrap();
        outputs(&dir)
    };
    let a = write("a", 42);
    let b = write("b", 42);
    assert!(
        a.len() >= 10,
        "{:?}",
        a.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for ((name_a, bytes_a), (name_b, bytes_b)) in a.iter().zip(&b) {
        assert_eq!(name_a, name_b);
        assert!(
            bytes_a == bytes_b,
            "{name_a} differs between identical runs"
        );
    }
    // Another seed moves the intervals, and nothing else.
    let c = write("c", 43);
    let summary = |files: &[(String, Vec<u8>)]| -> serde_json::Value {
        let bytes = &files.iter().find(|f| f.0 == "summary.json").unwrap().1;
        serde_json::from_slice(bytes).unwrap()
    };
    let (sa, sc) = (summary(&a), summary(&c));
    let cell = |s: &serde_json::Value| s["metrics"]["ttft"]["fidelity"]["cells"]["p90"].clone();
    assert_ne!(
        cell(&sa)["estimate"]["real_ci_ms"],
        cell(&sc)["estimate"]["real_ci_ms"]
    );
    assert_eq!(
        cell(&sa)["estimate"]["real_ms"],
        cell(&sc)["estimate"]["real_ms"]
    );
}

#[test]
fn a_p99_from_fewer_than_100_requests_is_not_printed() {
    let f = fixtures(1.0);
    let (mut reals, mut sim) = load(&f, 2);
    // Keep 60 requests: P90 and P95 are judged, P99 is not.
    for run in reals.iter_mut().chain([&mut sim]) {
        run.requests.retain(|r| r.request_id < 60);
        if let Some(t) = run.tokens.as_mut() {
            t.retain(|t| t.request_id < 60);
        }
    }
    let c = compare("cmp-small", &reals, &sim, None, &settings(1000, 1)).unwrap();
    let ttft = c.results.metric(Metric::Ttft).unwrap();
    let fid = ttft.fidelity.as_ref().unwrap();
    assert_eq!(fid.count, 60);
    assert_eq!(fid.cell(Stat::P99).verdict, CellVerdict::NTooSmall);
    assert!(fid.cell(Stat::P99).estimate.is_none());
    assert!(fid.cell(Stat::P95).verdict.judged());
    let verdict = c.results.verdict();
    assert!(verdict.contains("TTFT P99 (n < 100)"), "{verdict}");
    let doc = c.results.document(&f.root, &[]).unwrap().to_markdown();
    let p99_row = doc
        .lines()
        .find(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            cells.get(1..3) == Some(&["TTFT", "P99"][..])
        })
        .unwrap();
    assert!(p99_row.contains("n too small (needs ≥ 100)"), "{p99_row}");
    // The row carries no number but its sample size and target.
    let numbers = p99_row
        .split('|')
        .filter(|c| c.trim().parse::<f64>().is_ok())
        .count();
    assert_eq!(numbers, 2, "{p99_row}");
}
