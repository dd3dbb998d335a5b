//! What the benchmarks share.

use anyhow::{Context, Result};

/// The median; NaN for an empty or non-finite sample (printed as such, never a panic).
#[allow(dead_code)] // not every bench takes medians
pub fn median(v: &[f64]) -> f64 {
    simreal::quantile::median(v).unwrap_or(f64::NAN)
}

/// A count from the environment variable `name`, or `default` when it is unset.
pub fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v} is not a count")),
        Err(_) => Ok(default),
    }
}

/// The stages' synthesized `qwen3_0_6b` f32 weights (`tmp/weights/qwen3_0_6b-0-f32`, seed 0),
/// made on first use, so that the benches and `model=qwen3_0_6b` share one snapshot.
#[cfg(feature = "engine")]
#[allow(dead_code)] // not every bench loads the model
pub fn qwen3_0_6b_weights() -> Result<std::path::PathBuf> {
    use simreal::real_bench::model::{
        random_weights_dir, synthesize_random_weights, Qwen3Config, WEIGHTS_FILE,
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tmp");
    let dir = random_weights_dir(&root, "qwen3_0_6b", 0, "f32");
    if !dir.join(WEIGHTS_FILE).is_file() {
        eprintln!("synthesizing qwen3_0_6b weights into {}", dir.display());
        synthesize_random_weights(&Qwen3Config::qwen3_0_6b(), 0, candle_core::DType::F32, &dir)?;
    }
    Ok(dir)
}

/// A process set up as the timed stages run theirs (two compute threads at real-time
/// priority where permitted; the guard restores it when dropped) and the stages' `qwen3_0_6b`
/// f32 model loaded on the CPU.
#[cfg(feature = "engine")]
#[allow(dead_code)] // not every bench loads the model
pub fn stage_like_qwen3_0_6b() -> Result<(
    simreal::real_bench::model::Qwen3Model,
    simreal::real_bench::threads::TimingGuard,
)> {
    use simreal::real_bench::model::{Qwen3Model, WeightSource};
    use simreal::real_bench::threads::{self, Priority, TimingSettings};
    threads::init(2)?;
    let timing = threads::apply_timing(&TimingSettings {
        priority: Priority::Realtime,
        pin_threads: false,
        lock_memory: false,
        huge_pages: false,
        lift_rt_throttling: true,
    });
    let weights = WeightSource::Dir(qwen3_0_6b_weights()?);
    let model = Qwen3Model::load(&weights, candle_core::DType::F32, &candle_core::Device::Cpu)?;
    Ok((model, timing))
}
