//! `replay`: predict every iteration of a real run and compare with what it measured.
//!
//! `cargo run --release --bin replay -- model=qwen3_tiny` replays the real run and bundle the
//! same overrides name; `real_run=<dir>` and `bundle=<dir>` point at others. The predictor is
//! `vidur.predictor` (`native` or `vidur_compat`). Output: `tmp/replay/<id>/`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use simreal::io::Stage;
use simreal::stage::{exit, jobs, StageArgs};
use simreal::vidur_ext::replay_stage::{run, ReplayInputs};

fn main() -> ExitCode {
    let mut inputs = ReplayInputs::default();
    let mut args = Vec::new();
    for a in std::env::args() {
        if let Some(p) = a.strip_prefix("real_run=") {
            inputs.real_run = Some(PathBuf::from(p));
        } else if let Some(p) = a.strip_prefix("bundle=") {
            inputs.bundle = Some(PathBuf::from(p));
        } else {
            args.push(a);
        }
    }
    let args = StageArgs::parse_from(args);
    exit((|| -> anyhow::Result<()> {
        use anyhow::Context;
        for job in jobs(&args, Stage::Vidur)? {
            let out = run(&job, &inputs).context("replay failed")?;
            println!("{}", out.display());
        }
        Ok(())
    })())
}
