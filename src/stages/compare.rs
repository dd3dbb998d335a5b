//! The `compare` stage: resolve the runs a config names, check they belong together,
//! compare them and write `tmp/compare/<compare_id>/`:
//!
//! `request_comparison.csv`, `token_comparison.csv`, `iteration_comparison.csv`,
//! `summary.json`, `figures/*.png|svg`, `report.md`, `report.html`, `config.yaml`,
//! `run_meta.json`, `_SUCCESS`.
//!
//! Which runs: `compare.real_run` / `compare.sim_run` (on the command line also as the bare
//! aliases `real_run=` / `sim_run=`, see [`ALIASES`]) name run dirs, a Vidur output dir or a
//! vLLM result JSON; unset, they are the `real` and `vidur` runs the same overrides produce,
//! and a missing one is reported with the command that makes it. `real_run=a,b,c` compares
//! against `a` and measures the real engine's noise from `b` and `c`.
//!
//! The error attribution replays every real iteration through the op-time predictor the
//! simulated run used, rebuilt from the resolved config that run saved ([`sim_predictor`]).
//! Where that is impossible (the simulated side is Vidur's output, or its bundle is gone),
//! it uses the simulated iterations whose composition matches the real one at the same
//! position (usually the prefix before the runs diverge), and the report says so.

use std::path::{Path, PathBuf};

use crate::analysis::plots::FigureSize;
use crate::config::plan::{command_for, compare_id};
use crate::config::yaml::parse_yaml_value;
use crate::config::{resolve_input_path, SimrealConfig};
use crate::io::csv::CsvWriter;
use crate::io::json_schemas::validate;
use crate::io::provenance::{absolute_path, place_key, utc_now, InputRef};
use crate::io::rundir::Stage;
use crate::io::schema::{ITERATION_COMPARISON, REQUEST_COMPARISON, TOKEN_COMPARISON};
use crate::io::write_json;
use crate::stages::bundle::check_bundle_for_real_run;
use crate::stages::vidur::{SimInputs, BACKEND_NAME};
use crate::stages::Job;
use crate::vidur_ext::predictor::ExecutionTimePredictor;
use crate::{Error, Result};

use crate::analysis::compare::attribution::{
    Attribution, DeviceSpeed, IterationPredictions, SpeedCorrected,
};
use crate::analysis::compare::figures::{
    attribution_figure, batch_size_figure, error_bar_figures, iteration_figure, metric_figures,
    timeline_figure, DeviceSpeedPanels,
};
use crate::analysis::compare::join::{
    join_requests, join_tokens, RequestComparisonRow, RequestJoin, TokenJoin,
};
use crate::analysis::compare::report::{CompareSummary, ComparisonResults, JoinSummary, RunInfo};
use crate::analysis::compare::runs::{check_comparable, load_run, RunData, RunSource};
use crate::analysis::compare::statistics::{
    noise_of, paired_samples, Metric, MetricComparison, PairedSamples, ThroughputComparison,
};
use crate::analysis::compare::verdict::{
    AlignedSamples, FidelitySummary, MetricFidelity, VerdictSettings,
};
use crate::vidur_ext::device_speed::{DeviceTimeline, SpeedCorrectedPredictor, SpeedCorrection};

/// Bare command-line keys of this stage and the config keys they stand for.
pub const ALIASES: [(&str, &str); 2] = [
    ("real_run", "compare.real_run"),
    ("sim_run", "compare.sim_run"),
];

/// The runs a job compares.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareInputs {
    /// The reference real run first, then runs that only measure noise.
    pub real: Vec<PathBuf>,
    pub sim: PathBuf,
    /// Commands that produce the real and simulated runs (for the derived ones), or a hint.
    pub real_hint: String,
    pub sim_hint: String,
}

impl CompareInputs {
    /// The configured runs, or those the job's own overrides produce.
    pub fn resolve(job: &Job) -> Result<Self> {
        let cfg = &job.config;
        // The commands for missing inputs must not carry this stage's own keys.
        let others: Vec<String> = job
            .overrides
            .iter()
            .filter(|o| !o.trim_start_matches(['+', '~']).starts_with("compare."))
            .cloned()
            .collect();
        let configured = cfg.compare.real_run_dirs();
        let (real, real_hint) = if configured.is_empty() {
            (vec![cfg.real_run_dir()?], command_for(Stage::Real, &others))
        } else {
            (
                configured.iter().map(|p| resolve_input_path(p)).collect(),
                "check compare.real_run (real_run=)".to_string(),
            )
        };
        let (sim, sim_hint) = match cfg.compare.sim_run_dir() {
            Some(p) => (
                resolve_input_path(&p),
                "check compare.sim_run (sim_run=)".to_string(),
            ),
            None => (cfg.sim_run_dir()?, command_for(Stage::Vidur, &others)),
        };
        Ok(CompareInputs {
            real,
            sim,
            real_hint,
            sim_hint,
        })
    }

    /// Loads every run. Formats without arrival times (vLLM's JSON) take them from the
    /// other side, which is therefore loaded first.
    pub fn load(&self) -> Result<(Vec<RunData>, RunData)> {
        let is_json = |p: &Path| p.is_file();
        let first_real = &self.real[0];
        let (reference, sim) = if is_json(first_real) {
            let sim = load_run(&self.sim, None, &self.sim_hint)?;
            (load_run(first_real, Some(&sim), &self.real_hint)?, sim)
        } else {
            let real = load_run(first_real, None, &self.real_hint)?;
            let sim = load_run(&self.sim, Some(&real), &self.sim_hint)?;
            (real, sim)
        };
        let mut reals = vec![reference];
        for p in &self.real[1..] {
            let run = load_run(p, Some(&reals[0]), &self.real_hint)?;
            reals.push(run);
        }
        Ok((reals, sim))
    }
}

/// The key a run contributes to the compare id: our run id where the run is the one this
/// config's output root keeps under that id (so the planned study finds its comparison),
/// else where the run is. A run id is a hash of the run's config, so a run of the same config
/// from another root is another measurement: keyed by its id it would be found `up to date`
/// in the first's place.
fn run_key(cfg: &SimrealConfig, stage: Stage, run: &RunData) -> String {
    let id = &run.identity.run_id;
    let place = place_key(&run.path);
    match run.source {
        RunSource::Simreal if place == place_key(&cfg.location(stage, id.clone()).path()) => {
            id.clone()
        }
        _ => place,
    }
}

/// Why a metric has no paired values.
fn unavailable_reason(metric: Metric, real: &RunData, sim: &RunData) -> String {
    let no_tokens = |r: &RunData| r.tokens.is_none();
    match metric {
        Metric::Itl if no_tokens(real) || no_tokens(sim) => format!(
            "the {} run has no per-token rows ({})",
            if no_tokens(real) { "real" } else { "simulated" },
            if no_tokens(real) { real.source.describe() } else { sim.source.describe() }
        ),
        Metric::Itl => "no compared request emitted two or more tokens on both sides".into(),
        Metric::QueueDelay => "a run does not record when requests were first scheduled (vLLM's benchmark JSON measures no queue delay)".into(),
        Metric::Tpot => "no compared request completed with two or more tokens on both sides".into(),
        Metric::E2e => "no compared request completed on both sides".into(),
        Metric::Ttft => "no compared request emitted a first token on both sides".into(),
    }
}

/// Joins a pair of runs at request and (when both have them) token level.
fn join_runs(real: &RunData, sim: &RunData) -> Result<(RequestJoin, Option<TokenJoin>)> {
    let requests = join_requests(&real.requests, &sim.requests)?;
    let tokens = match (real.tokens_by_request(), sim.tokens_by_request()) {
        (Some(r), Some(s)) => Some(join_tokens(&requests, &r, &s)?),
        _ => None,
    };
    Ok((requests, tokens))
}

/// Checks that every run belongs to the reference real run's experiment.
fn check_all(reals: &[RunData], sim: &RunData) -> Result<()> {
    let real = reals
        .first()
        .ok_or_else(|| Error::InvalidInput("compare: no real run".into()))?;
    check_comparable(real, sim)?;
    reals[1..]
        .iter()
        .try_for_each(|other| check_comparable(real, other))
}

/// Everything [`compare`] computes, plus the tables written next to it.
pub struct Comparison {
    pub results: ComparisonResults,
    pub requests: RequestJoin,
    pub tokens: Option<TokenJoin>,
    /// Reference real run against the simulated run.
    pub samples: Vec<(Metric, PairedSamples)>,
    /// Every real run against the simulated run.
    pub aligned: Vec<(Metric, AlignedSamples)>,
    pub predictions: Option<IterationPredictions>,
}

/// Compares loaded runs (the first real run is the reference). `replay` predicts the real
/// run's iterations with their exact compositions; without it, the attribution uses the
/// simulated iterations of identical composition.
pub fn compare(
    compare_id: &str,
    reals: &[RunData],
    sim: &RunData,
    replay: Option<&ReplayPredictors<'_>>,
    settings: &VerdictSettings,
) -> Result<Comparison> {
    check_all(reals, sim)?;
    let real = &reals[0];
    let (requests, tokens) = join_runs(real, sim)?;
    let noise_joins = reals[1..]
        .iter()
        .map(|other| join_runs(real, other))
        .collect::<Result<Vec<_>>>()?;

    let mut metrics = Vec::new();
    let mut unavailable = Vec::new();
    let mut samples = Vec::new();
    let mut aligned = Vec::new();
    for metric in Metric::ALL {
        let s = paired_samples(metric, &requests, tokens.as_ref());
        let a = AlignedSamples::of(metric, (&requests, tokens.as_ref()), &noise_joins);
        match MetricComparison::of(metric, &s)? {
            Some(mut c) => {
                let others = noise_joins
                    .iter()
                    .map(|(r, t)| {
                        MetricComparison::of(metric, &paired_samples(metric, r, t.as_ref()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                c.noise = noise_of(&others.into_iter().flatten().collect::<Vec<_>>());
                c.fidelity = MetricFidelity::assess(metric, &a, settings)?;
                metrics.push(c);
            }
            None => unavailable.push((metric, unavailable_reason(metric, real, sim))),
        }
        samples.push((metric, s));
        aligned.push((metric, a));
    }
    let fidelity = FidelitySummary::of(
        reals.len(),
        metrics.iter().filter_map(|m| m.fidelity.as_ref()),
        settings,
    );

    let predictions = match replay {
        Some(p) => Some(IterationPredictions::from_replay(real, p.raw)?),
        None => IterationPredictions::from_matched_iterations(real, sim),
    };
    let mut attribution = Attribution::of(real, sim, predictions.as_ref());
    attribution.device_speed = device_speed(real, sim);
    if let Some(corrected) = replay.and_then(|p| p.speed_corrected) {
        let c = IterationPredictions::from_replay(real, corrected)?;
        attribution.speed_corrected = SpeedCorrected::of(&attribution, real, sim, &c);
    }

    let mut explanations = requests.drops.explanations();
    if let Some(t) = &tokens {
        explanations.extend(t.drops.explanations());
    }
    let notes: Vec<String> = reals
        .iter()
        .chain([sim])
        .flat_map(|r| r.notes.iter().cloned())
        .collect();
    let results = ComparisonResults {
        compare_id: compare_id.to_string(),
        real_runs: reals.iter().map(RunInfo::of).collect(),
        sim_run: RunInfo::of(sim),
        join: JoinSummary {
            requests_compared: requests.pairs.len(),
            requests_dropped: requests.drops.total_dropped(),
            request_drops: requests.drops.clone(),
            tokens_compared: tokens.as_ref().map(|t| t.pairs.len()),
            token_drops: tokens.as_ref().map(|t| t.drops.clone()),
            explanations,
        },
        metrics,
        unavailable,
        fidelity,
        throughput: ThroughputComparison::of(&real.requests, &sim.requests)?,
        attribution,
        notes,
        cross_device: None,
    };
    Ok(Comparison {
        results,
        requests,
        tokens,
        samples,
        aligned,
        predictions,
    })
}

/// Writes a comparison's tables, figures, `summary.json`, `report.md` and `report.html`
/// into `dir`; `real` and `sim` are the reference real run and the simulated run.
pub fn write_outputs(
    dir: &Path,
    size: FigureSize,
    comparison: &mut Comparison,
    real: &RunData,
    sim: &RunData,
) -> Result<()> {
    let mut w = CsvWriter::create_in(dir, &REQUEST_COMPARISON)?;
    for p in &comparison.requests.pairs {
        w.write(&RequestComparisonRow::of(p)?)?;
    }
    w.finish()?;
    // Written even when empty (a side without token rows), so every comparison has the
    // same files; the report says why it is empty.
    let mut w = CsvWriter::create_in(dir, &TOKEN_COMPARISON)?;
    for t in comparison.tokens.iter().flat_map(|t| &t.pairs) {
        w.write(t)?;
    }
    w.finish()?;
    let mut w = CsvWriter::create_in(dir, &ITERATION_COMPARISON)?;
    for i in comparison.predictions.iter().flat_map(|p| &p.iterations) {
        w.write(i)?;
    }
    w.finish()?;

    let fig_dir = dir.join("figures");
    let mut figures = metric_figures(&fig_dir, size, &comparison.samples, &comparison.aligned)?;
    figures.extend(error_bar_figures(&fig_dir, size, &comparison.results)?);
    if let Some(p) = &comparison.predictions {
        figures.extend(iteration_figure(&fig_dir, size, p)?);
    }
    let attribution = &comparison.results.attribution;
    figures.extend(attribution_figure(&fig_dir, size, attribution)?);
    figures.extend(batch_size_figure(&fig_dir, size, attribution)?);
    let speed = match DeviceTimeline::read(&real.path)? {
        Some(run) => {
            let bundle = match sim_bundle_dir(sim) {
                Some(dir) => DeviceTimeline::read(&dir)?,
                None => None,
            };
            Some(DeviceSpeedPanels::of(&run, bundle.as_ref()))
        }
        None => None,
    };
    figures.extend(timeline_figure(&fig_dir, size, real, sim, speed.as_ref())?);

    // Checked before writing: the schema holds what the types cannot (counts of at least
    // one, no NaN written as `null` where a number belongs).
    let created_at = utc_now();
    let summary = serde_json::to_value(comparison.results.summary(&created_at))
        .map_err(|e| Error::InvalidInput(format!("summary.json is not serializable: {e}")))?;
    validate(&summary, &CompareSummary::schema()).map_err(|(at, msg)| Error::SchemaMismatch {
        path: dir.join("summary.json"),
        msg: format!("{at}: {msg}"),
    })?;
    write_json(dir.join("summary.json"), &summary)?;
    let doc = comparison.results.document(dir, &figures)?;
    doc.write_markdown(&dir.join("report.md"))?;
    doc.write_html(&dir.join("report.html"))
}

/// The device's speed at profiling vs real-run time: the reference iteration the real run
/// timed while warming up and after serving (`warmup_iteration_ms`,
/// `reference_iteration_after_ms` in its `run_meta.json`) against the same
/// iteration timed by the `vidur_profile` run that made the simulated run's bundle
/// (`reference_iteration_ms` in its `profiling_meta.json`). `None` when either is missing
/// (other sources, bundles from elsewhere, runs made before it was recorded).
fn device_speed(real: &RunData, sim: &RunData) -> Option<DeviceSpeed> {
    DeviceSpeed::between(&sim_bundle_dir(sim)?, &real.path)
}

/// Checks the simulated run's bundle against every real run's device and dtype
/// ([`check_bundle_for_real_run`]); with `allow_cross_device`, the sentence the report opens
/// with when they differ.
fn check_sim_bundle_device(
    reals: &[RunData],
    sim: &RunData,
    allow_cross_device: bool,
) -> Result<Option<String>> {
    let Some(bundle) = sim_bundle_dir(sim) else {
        return Ok(None);
    };
    let mut sentences = Vec::new();
    for real in reals {
        if let Some(cross) = check_bundle_for_real_run(&bundle, &real.path, allow_cross_device)? {
            sentences.push(cross.sentence());
        }
    }
    sentences.dedup();
    Ok((!sentences.is_empty()).then(|| sentences.join(" ")))
}

/// The bundle a simulated run of this project predicted from (its `run_meta.json`).
fn sim_bundle_dir(sim: &RunData) -> Option<PathBuf> {
    let sim_meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sim.path.join("run_meta.json")).ok()?)
            .ok()?;
    Some(PathBuf::from(
        sim_meta["inputs"]["bundle"]["path"].as_str()?,
    ))
}

/// The predictors the batch replay uses: the simulated run's own, and the same scaled to
/// the real run's measured device speed when both recorded a device-speed timeline.
pub struct ReplayPredictors<'p> {
    pub raw: &'p dyn ExecutionTimePredictor,
    pub speed_corrected: Option<&'p dyn ExecutionTimePredictor>,
}

/// The speed correction from the simulated run's bundle to `real` (see
/// [`SpeedCorrection::between`]); `None` when either side has no device-speed timeline or the
/// simulated run's config cannot be read.
fn sim_speed_correction(sim: &RunData, real: &RunData) -> Result<Option<SpeedCorrection>> {
    let (Ok(config), Some(bundle)) = (sim_config(sim), sim_bundle_dir(sim)) else {
        return Ok(None);
    };
    SpeedCorrection::between(&config, &bundle, &real.path)
}

/// The resolved config a simulated run of this project saved (`config.yaml`).
fn sim_config(sim: &RunData) -> std::result::Result<SimrealConfig, String> {
    let path = sim.path.join("config.yaml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value = parse_yaml_value(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_value(value).map_err(|e| format!("{}: {e}", path.display()))
}

/// The op-time predictor a simulated run of this project used, rebuilt with the `vidur`
/// stage's own loader from the resolved config the run saved (`config.yaml`). `Err` holds
/// the reason when it cannot be rebuilt (another kind of run, a bundle that is gone, ...).
pub fn sim_predictor(
    job: &Job,
    sim: &RunData,
) -> std::result::Result<Box<dyn ExecutionTimePredictor>, String> {
    if sim.source != RunSource::Simreal || sim.backend != BACKEND_NAME {
        return Err(format!(
            "the simulated side is a {} with backend `{}`, not a run of the vidur stage",
            sim.source.describe(),
            sim.backend
        ));
    }
    let config = sim_config(sim)?;
    let sim_job = Job {
        stage: Stage::Vidur,
        config,
        ..job.clone()
    };
    SimInputs::load(&sim_job)
        .map(|inputs| inputs.predictor)
        .map_err(|e| e.to_string())
}

/// Runs the stage for one job; returns the comparison's directory.
pub fn run(job: &Job) -> Result<PathBuf> {
    run_with(job, None)
}

/// [`run`] with a given op-time predictor for the batch replay instead of the one rebuilt
/// from the simulated run ([`sim_predictor`]).
pub fn run_with(job: &Job, replay: Option<&dyn ExecutionTimePredictor>) -> Result<PathBuf> {
    let cfg = &job.config;
    let inputs = CompareInputs::resolve(job)?;
    // Inputs are loaded and checked before the output dir is touched.
    let (reals, sim) = inputs.load()?;
    // Refusals do not depend on whether an earlier comparison is cached.
    check_all(&reals, &sim)?;
    let cross_device = check_sim_bundle_device(&reals, &sim, cfg.vidur.cross_device)?;
    let keys: Vec<String> = reals.iter().map(|r| run_key(cfg, Stage::Real, r)).collect();
    let id = job.own_run_id(compare_id(
        &keys,
        &run_key(cfg, Stage::Vidur, &sim),
        &cfg.compare.settings_key()?,
    )?);
    let location = cfg.location(Stage::Compare, id.clone());
    job.write_run(&location, &id, |staging, meta| {
        let rebuilt;
        let (replay, replay_note) = match replay {
            Some(p) => (Some(p), None),
            None => match sim_predictor(job, &sim) {
                Ok(p) => {
                    rebuilt = p;
                    (Some(rebuilt.as_ref()), None)
                }
                Err(why) => (None, Some(format!("No batch replay: {why}."))),
            },
        };
        let correction = match replay {
            Some(_) => sim_speed_correction(&sim, &reals[0])?,
            None => None,
        };
        let screening_note = correction.as_ref().and_then(|c| c.screening().sentence());
        let response_note = correction.as_ref().and_then(|c| c.response_sentence());
        let corrected = replay
            .zip(correction)
            .map(|(p, c)| SpeedCorrectedPredictor::new(p, c));
        let predictors = replay.map(|raw| ReplayPredictors {
            raw,
            speed_corrected: corrected.as_ref().map(|c| c as &dyn ExecutionTimePredictor),
        });
        let mut comparison = compare(
            &id,
            &reals,
            &sim,
            predictors.as_ref(),
            &VerdictSettings::of(&cfg.compare),
        )?;
        comparison.results.notes.extend(replay_note);
        comparison.results.notes.extend(screening_note);
        comparison.results.notes.extend(response_note);
        comparison.results.cross_device = cross_device;
        let size = FigureSize {
            width_px: cfg.compare.figure_width_px,
            height_px: cfg.compare.figure_height_px,
        };
        write_outputs(staging.path(), size, &mut comparison, &reals[0], &sim)?;

        for (i, r) in reals.iter().enumerate() {
            let key = if i == 0 {
                "real".to_string()
            } else {
                format!("real_{i}")
            };
            meta.inputs.insert(key, input_ref(r)?);
        }
        meta.inputs.insert("sim".into(), input_ref(&sim)?);
        meta.real_run_dir = Some(absolute_path(&reals[0].path));
        meta.sim_run_dir = Some(absolute_path(&sim.path));
        let results = &comparison.results;
        meta.extra = serde_json::json!({
            "verdict": results.verdict(),
            "requests_compared": results.join.requests_compared,
            "requests_dropped": results.join.requests_dropped,
            "attribution_source": results.attribution.source,
        });
        eprintln!("compare: {}", results.verdict());
        Ok(())
    })
}

fn input_ref(run: &RunData) -> Result<InputRef> {
    InputRef::run(run.identity.run_id.clone(), &run.path)
}
