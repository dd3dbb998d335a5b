//! CPU overheads of the engine loop, measured in the real engine.
//!
//! For each batch size `b` the real [`Engine`] serves `b` synthetic requests that all arrive
//! at t = 0 with a one-block prompt, under the configured scheduler with its batch cap set
//! to `b`: after the prefill iteration(s) every iteration decodes exactly `b` sequences. The
//! loop's own timestamps (schedule, prepare inputs, sample, process outputs) of those
//! decode iterations are the samples — the same code and clock the `real` stage records.

use crate::io::bundle::{CpuOverheadRow, MeanMedianMs};
use crate::io::records::BatchMetricsRow;
use crate::quantile::percentile_of_valid;
use crate::real_bench::engine::{Engine, EngineRequest, EngineSettings, MonotonicClock};
use crate::real_bench::model::Qwen3Model;
use crate::scheduler::{Policy, SchedulerConfig};
use crate::{Error, Result};

use super::progress::Progress;

/// Decode iterations timed per batch size unless configured otherwise.
pub const DEFAULT_CPU_ITERATIONS: u32 = 12;

/// Measures one [`CpuOverheadRow`] per batch size from `iterations` decode iterations each.
pub fn profile_cpu_overheads(
    model: &Qwen3Model,
    scheduler: &SchedulerConfig,
    batch_sizes: &[u32],
    iterations: u32,
    progress: &mut Progress,
) -> Result<Vec<CpuOverheadRow>> {
    if iterations == 0 {
        return Err(Error::config(
            "profile.cpu_overhead_iterations",
            "must be positive",
        ));
    }
    let mut sizes = batch_sizes.to_vec();
    sizes.sort_unstable();
    sizes.dedup();
    let vocab = model.config().vocab_size as u32;
    let mut rows = Vec::with_capacity(sizes.len());
    for b in sizes {
        if b == 0 {
            return Err(Error::config(
                "profile.cpu_overhead_batch_sizes",
                "grid points must be positive",
            ));
        }
        progress.step(&format!("engine loop, batch={b}"));
        let mut sched = scheduler.clone();
        sched.batch_size_cap = b;
        let prompt_len = sched.block_size;
        // Token `0` of each request comes with its prefill; `iterations` decodes follow.
        let decode_tokens = iterations + 1;
        let num_blocks = pool_blocks(&sched, b, prompt_len + decode_tokens);
        let mut engine = Engine::new(
            model,
            &sched,
            num_blocks,
            EngineSettings {
                backend_name: "vidur_profile".into(),
                replica_id: 0,
                max_model_len: prompt_len + decode_tokens,
            },
        )?;
        let requests: Vec<EngineRequest> = (0..u64::from(b))
            .map(|id| EngineRequest {
                request_id: id,
                arrival_time_ns: 0,
                prompt: (0..prompt_len)
                    .map(|i| ((id as u32).wrapping_mul(7919).wrapping_add(i * 31)) % vocab)
                    .collect(),
                num_decode_tokens: decode_tokens,
            })
            .collect();
        let record = engine.run(&requests, &MonotonicClock::start())?;
        let decodes: Vec<&BatchMetricsRow> = record
            .batches
            .iter()
            .filter(|r| r.num_prefill_requests == 0 && r.num_decode_requests == b)
            .collect();
        rows.push(summarise(b, &decodes)?);
        progress.advance(f64::from(b + 8) * f64::from(iterations + 2));
    }
    Ok(rows)
}

/// A pool that holds `b` requests of `tokens` tokens (Orca reserves its per-request maximum)
/// above the scheduler's watermark.
fn pool_blocks(sched: &SchedulerConfig, b: u32, tokens: u32) -> usize {
    let per_request = if sched.policy == Policy::Orca {
        sched
            .orca_blocks_per_request()
            .max(tokens.div_ceil(sched.block_size))
    } else {
        tokens.div_ceil(sched.block_size) + 1
    };
    let needed = f64::from(b * per_request + 2);
    (needed / (1.0 - sched.watermark_blocks_fraction)).ceil() as usize + 1
}

fn mean_median(values_ns: &[u64]) -> MeanMedianMs {
    let mut ms: Vec<f64> = values_ns.iter().map(|&v| v as f64 / 1e6).collect();
    ms.sort_by(f64::total_cmp);
    MeanMedianMs {
        mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
        median_ms: percentile_of_valid(&ms, 50.0),
    }
}

fn summarise(b: u32, decodes: &[&BatchMetricsRow]) -> Result<CpuOverheadRow> {
    let column = |name: &str, get: fn(&BatchMetricsRow) -> Option<u64>| -> Result<MeanMedianMs> {
        let v: Vec<u64> = decodes.iter().filter_map(|r| get(r)).collect();
        if v.is_empty() {
            return Err(Error::Msg(format!(
                "engine loop at batch size {b}: no decode iteration of exactly {b} requests \
                 measured `{name}` (the scheduler never formed such a batch)"
            )));
        }
        Ok(mean_median(&v))
    };
    Ok(CpuOverheadRow {
        batch_size: b,
        schedule: column("cpu_schedule_ns", |r| r.cpu_schedule_ns)?,
        sampler_e2e: column("cpu_sampler_ns", |r| r.cpu_sampler_ns)?,
        prepare_inputs_e2e: column("cpu_prepare_inputs_ns", |r| r.cpu_prepare_inputs_ns)?,
        process_model_outputs: column("cpu_process_outputs_ns", |r| r.cpu_process_outputs_ns)?,
        // One process: no Ray hop.
        ray_comm_time_mean_ms: 0.0,
        sampler_launch: None,
        prepare_inputs_launch: None,
        model_execution_launch: None,
        model_execution_e2e: Some(column("model_forward_ns", |r| r.model_forward_ns)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_by_hand() {
        let row = |schedule: u64| BatchMetricsRow {
            cpu_schedule_ns: Some(schedule),
            cpu_sampler_ns: Some(2_000_000),
            cpu_prepare_inputs_ns: Some(3_000_000),
            cpu_process_outputs_ns: Some(4_000_000),
            model_forward_ns: Some(10_000_000),
            ..Default::default()
        };
        let rows = [row(1_000_000), row(3_000_000), row(8_000_000)];
        let refs: Vec<&BatchMetricsRow> = rows.iter().collect();
        let s = summarise(4, &refs).unwrap();
        assert_eq!(s.schedule.median_ms, 3.0);
        assert_eq!(s.schedule.mean_ms, 4.0);
        assert_eq!(s.sampler_e2e.median_ms, 2.0);
        assert_eq!(s.model_execution_e2e.unwrap().median_ms, 10.0);
        let e = summarise(4, &[]).unwrap_err().to_string();
        assert!(e.contains("batch size 4"), "{e}");
    }

    #[test]
    fn pool_fits_requests_above_the_watermark() {
        let sched = SchedulerConfig::default();
        // 8 requests × (2 + 1) blocks + 2 = 26, / 0.99 → 27, + 1.
        assert_eq!(pool_blocks(&sched, 8, 29), 28);
    }
}
