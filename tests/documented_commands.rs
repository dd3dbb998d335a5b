//! Every stage command the README and the GPU guide show composes into a valid config: a
//! command a user copies must not fail on configuration (issue: the documented f32 sanity run
//! on an A100 preset was rejected). Commands on a CUDA backend must say `--features cuda`, and
//! those that serve or profile must pair the hardware with a backend of its kind.

#![cfg(all(feature = "engine", feature = "report"))]

use std::path::Path;

use simreal::config::expand_multirun;
use simreal::config::types::Device;
use simreal::io::Stage;
use simreal::stages::{apply_aliases, Job};

/// The documents whose commands are checked.
const DOCS: [&str; 2] = ["README.md", "docs/gpu.md"];

/// `cargo run` command lines of a Markdown text: each line of a fenced block that runs cargo
/// (with `\` continuations joined) and each inline code span that does (spans may wrap).
fn commands(markdown: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut prose = String::new();
    let mut in_fence = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            prose.push_str(line);
            prose.push('\n');
            continue;
        }
        let line = line.trim();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        let full = std::mem::take(&mut pending) + line;
        if full.contains("cargo run") {
            found.push(full);
        }
    }
    found.extend(
        prose
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|span| span.contains("cargo run"))
            .map(|span| span.replace('\n', " ")),
    );
    found
}

/// A parsed command: the binary, whether it builds `--features cuda`, `-m`, and the overrides.
struct Command {
    text: String,
    bin: String,
    cuda_build: bool,
    multirun: bool,
    overrides: Vec<String>,
}

fn parse(text: &str) -> Option<Command> {
    // Comments and anything piped or captured around the command are not part of it.
    let text = text.split(" #").next()?.split(['|', ')']).next()?.trim();
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let bin_at = tokens.iter().position(|t| *t == "--bin")?;
    let bin = tokens.get(bin_at + 1)?.to_string();
    let args_at = tokens[bin_at..]
        .iter()
        .position(|t| *t == "--")
        .map(|i| bin_at + i + 1);
    let args = args_at.map_or(&[][..], |i| &tokens[i..]);
    let mut overrides = Vec::new();
    let mut multirun = false;
    let mut skip_next = false;
    for arg in args {
        match *arg {
            _ if skip_next => skip_next = false,
            "-m" | "--multirun" => multirun = true,
            // `--cfg job` prints the config; its argument is not an override.
            "--cfg" => skip_next = true,
            flag if flag.starts_with('-') => {}
            // Shell variables stand for overrides shown elsewhere.
            var if var.starts_with('$') => {}
            o => overrides.push(o.to_string()),
        }
    }
    Some(Command {
        text: text.to_string(),
        bin,
        cuda_build: tokens[..bin_at]
            .windows(2)
            .any(|w| w == ["--features", "cuda"]),
        multirun,
        overrides,
    })
}

/// The bare keys the binary accepts (`real_run=` for `compare.real_run`, ...).
fn aliases_of(bin: &str) -> &'static [(&'static str, &'static str)] {
    match bin {
        "compare" => &simreal::stages::compare::ALIASES,
        "replay" => &simreal::stages::replay::ALIASES,
        _ => &[],
    }
}

fn stage_of(bin: &str) -> Stage {
    match bin {
        "workload" => Stage::Workload,
        "real" => Stage::Real,
        "vidur_profile" => Stage::VidurProfile,
        "vidur" | "replay" => Stage::Vidur,
        "compare" => Stage::Compare,
        // The pipeline composes one config for every stage.
        "pipeline" => Stage::Workload,
        other => panic!("unknown binary `{other}` in a documented command"),
    }
}

#[test]
fn every_documented_command_composes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    let mut gpu_commands = 0;
    for doc in DOCS {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for raw in commands(&text) {
            let Some(cmd) = parse(&raw) else { continue };
            let overrides = apply_aliases(&cmd.overrides, aliases_of(&cmd.bin));
            let runs = if cmd.multirun {
                expand_multirun(&overrides).unwrap()
            } else {
                vec![overrides]
            };
            for overrides in runs {
                let refs: Vec<&str> = overrides.iter().map(String::as_str).collect();
                let job = Job::from_overrides(stage_of(&cmd.bin), &refs)
                    .unwrap_or_else(|e| panic!("{doc}: `{}` does not compose: {e}", cmd.text));
                let cfg = &job.config;
                if cfg.backend.device == Device::Cuda {
                    gpu_commands += 1;
                    assert!(
                        cmd.cuda_build,
                        "{doc}: `{}` runs on CUDA without `--features cuda`",
                        cmd.text
                    );
                }
                if matches!(cmd.bin.as_str(), "real" | "vidur_profile" | "pipeline") {
                    cfg.check_serving_device()
                        .unwrap_or_else(|e| panic!("{doc}: `{}`: {e}", cmd.text));
                }
                checked += 1;
            }
        }
    }
    // The parser must not silently find nothing (a changed fence style, say).
    assert!(checked >= 20, "only {checked} documented commands found");
    assert!(
        gpu_commands >= 4,
        "only {gpu_commands} GPU commands found in {DOCS:?}"
    );
}

#[test]
fn the_parser_reads_wrapped_spans_continuations_flags_and_sweeps() {
    let md = "Run `cargo run --release --features cuda --bin real --\nhardware=a100_80g \
              backend=candle_cuda` now.\n\n```sh\ncargo run --release --bin pipeline -- \\\n  \
              -m workload.qps=1,2 model=qwen3_tiny   # a sweep\nmd=$(cargo run --bin pipeline \
              -- --fidelity | tail -1)\n```\n";
    let found: Vec<Command> = commands(md).iter().filter_map(|c| parse(c)).collect();
    assert_eq!(found.len(), 3);
    let pipeline = &found[0];
    assert!(pipeline.multirun && !pipeline.cuda_build);
    assert_eq!(pipeline.overrides, ["workload.qps=1,2", "model=qwen3_tiny"]);
    assert!(found[1].overrides.is_empty());
    let real = &found[2];
    assert_eq!(real.bin, "real");
    assert!(real.cuda_build);
    assert_eq!(real.overrides, ["hardware=a100_80g", "backend=candle_cuda"]);
}
