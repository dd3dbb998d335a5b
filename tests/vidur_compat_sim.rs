//! Vidur-compatible mode end to end: the simulator, driven by Vidur's own prediction tables
//! for Llama-2-70B TP2 on A100, must charge every batch exactly the duration Vidur's formula
//! gives for that batch — recomputed here from the raw table files, independently of the
//! library's parser and formula. (Against Vidur's own runs: `tests/vidur_golden.rs`.)

mod common;

use std::collections::HashMap;

use common::vidur_formula::{vidur_reference as reference, Req, VidurFormula};
use simreal::io::records::RequestStatus;
use simreal::scheduler::{Policy, SchedulerConfig};
use simreal::vidur_ext::predictor::{PredictorConfig, VidurTablesPredictor};
use simreal::vidur_ext::simulator::{little_check, MemorySink, SimConfig, SimRequest, Simulator};

/// The first `n` requests of Vidur's `splitwise_conv` trace, replayed as Vidur does: counts
/// truncated, each ≥ 1, prompts shortened so that prompt + output ≤ 4096.
fn splitwise_conv(n: usize) -> Vec<SimRequest> {
    let text = std::fs::read_to_string(reference("processed_traces/splitwise_conv.csv")).unwrap();
    text.lines()
        .skip(1)
        .take(n)
        .enumerate()
        .map(|(i, line)| {
            let cells: Vec<&str> = line.split(',').collect();
            let arrived_s: f64 = cells[0].parse().unwrap();
            let d: u32 = cells[2].parse::<f64>().unwrap().max(1.0) as u32;
            let p: u32 = cells[1].parse::<f64>().unwrap().max(1.0) as u32;
            let p = p.min(4096 - d);
            SimRequest {
                request_id: i as u64,
                arrival_time_ns: (arrived_s * 1e9).round() as u64,
                num_prefill_tokens: p,
                num_decode_tokens: d,
            }
        })
        .collect()
}

#[test]
fn every_simulated_batch_lasts_what_vidurs_formula_says() {
    let config = PredictorConfig::new(80, 64, 8, 8192).with_parallelism(2, 1);
    let predictor = VidurTablesPredictor::from_dir(&reference("predictor_tables"), config).unwrap();
    let formula = VidurFormula::new();
    let requests = splitwise_conv(400);
    for policy in [Policy::Sarathi, Policy::Vllm] {
        let sim = SimConfig::single_replica(
            SchedulerConfig {
                policy,
                ..SchedulerConfig::default()
            },
            3328, // Vidur's planner: A100-80GB, Llama-2-70B, TP2
            4096,
        );
        let mut sink = MemorySink::default();
        let summary = Simulator::new(sim, &predictor)
            .unwrap()
            .run(requests.iter().copied(), &mut sink)
            .unwrap();
        assert!(little_check(&summary, &sink.requests).exact);
        assert!(sink.requests.iter().all(|r| r.status == RequestStatus::Ok));
        assert_eq!(summary.num_extrapolated_batches, 0);
        let mut entries: HashMap<u64, Vec<Req>> = HashMap::new();
        for r in &sink.batch_requests {
            entries.entry(r.batch_id).or_default().push((
                u64::from(r.num_tokens),
                u64::from(r.num_context_tokens),
                r.is_prefill,
            ));
        }
        assert!(
            sink.batches.len() > 1000,
            "{policy:?}: {} batches",
            sink.batches.len()
        );
        for b in &sink.batches {
            let ms = formula.model_ms(&entries[&b.batch_id]).0;
            let expected_ns = (ms * 1e6).round() as i64;
            // Float sums in another order may differ in the last bits: allow 1 ns.
            assert!(
                (b.duration_ns as i64 - expected_ns).abs() <= 1,
                "{policy:?} batch {}: {} ns charged, Vidur's formula {expected_ns} ns",
                b.batch_id,
                b.duration_ns
            );
            assert_eq!(b.model_forward_ns, Some(b.duration_ns));
        }
    }
}
