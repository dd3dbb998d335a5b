//! `pipeline`: the whole study (workload → vidur_profile → real → vidur → compare) in one
//! command, skipping complete stages; the last line printed is the report's path.
//!
//! - `cargo run --release --bin pipeline -- [overrides]`: one study.
//! - `-m workload.qps=0.5,1,2 model=qwen3_tiny,qwen3_0_6b`: a sweep (every combination), then
//!   `tmp/sweeps/<id>/sweep_report.md`.
//! - `--capacity [overrides]`: the capacity search of the real engine (`tmp/capacity/<id>/`).
//! - `--fidelity [overrides]`: the fidelity benchmark (`tmp/fidelity/<id>/fidelity.md`): per
//!   policy a capacity search, then studies at fractions of capacity with repeated real runs.
//! - `--print-plan [overrides]`: every stage's run id, dir, marker and command as JSON, without
//!   running anything (what `workflow/Snakefile` builds its DAG from).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use simreal::io::Stage;
use simreal::pipeline::{capacity, fidelity, run_study, sweep};
use simreal::stages::graph::{display_path, plan};
use simreal::stages::{exit, jobs, StageArgs};

#[derive(Debug, Parser)]
#[command(about = "Run the whole real-vs-simulated study, a sweep, or a capacity search")]
struct Args {
    /// Print every stage's run id, dir and command as JSON and exit.
    #[arg(long, conflicts_with_all = ["capacity", "fidelity"])]
    print_plan: bool,
    /// Search the real engine's capacity (highest rate within the queue-delay SLO).
    #[arg(long, conflicts_with = "fidelity")]
    capacity: bool,
    /// Run the fidelity benchmark (settings under `fidelity.` in the config).
    #[arg(long)]
    fidelity: bool,
    #[command(flatten)]
    stage: StageArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    exit(run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let jobs = jobs(&args.stage, Stage::Sweep)?;
    if jobs.is_empty() {
        return Ok(()); // --cfg job printed the config
    }
    if args.print_plan {
        let plans = jobs.iter().map(plan).collect::<simreal::Result<Vec<_>>>()?;
        let text = if plans.len() == 1 {
            serde_json::to_string_pretty(&plans[0])?
        } else {
            serde_json::to_string_pretty(&plans)?
        };
        println!("{text}");
        return Ok(());
    }
    if args.capacity {
        for job in &jobs {
            let dir = capacity::run(job).context("capacity search failed")?;
            println!("{}", display_path(&dir.join("capacity.md")));
        }
        return Ok(());
    }
    if args.fidelity {
        for job in &jobs {
            let dir = fidelity::run(job).context("fidelity benchmark failed")?;
            println!("{}", display_path(&dir.join("fidelity.md")));
        }
        return Ok(());
    }
    if args.stage.multirun {
        let report = sweep::run(&jobs).context("sweep failed")?;
        println!("{}", display_path(&report));
        return Ok(());
    }
    let outcome = run_study(&jobs[0]).context("pipeline failed")?;
    println!("{}", display_path(&outcome.report));
    Ok(())
}
