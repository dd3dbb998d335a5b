//! Hand-checked scenarios, queueing-theory validation (M/D/1, M/M/1) and Little's law.

use std::sync::Mutex;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};

use super::*;
use crate::io::bundle::Op;
use crate::io::records::{RequestMetricsRow, RequestStatus};
use crate::scheduler::{GlobalPolicy, Policy, SchedulerConfig};
use crate::vidur_ext::predictor::{
    BatchPrediction, ExecutionTimePredictor, IterationContext, RequestShape,
};

/// Every batch (stage) takes `ns`.
struct Constant {
    ns: u64,
}

impl ExecutionTimePredictor for Constant {
    fn name(&self) -> &'static str {
        "constant"
    }

    fn predict_with(&self, _batch: &[RequestShape], _ctx: &IterationContext) -> BatchPrediction {
        let mut p = BatchPrediction::EMPTY;
        p.model_ns = self.ns;
        p.total_ns = self.ns;
        p.ops_ms[Op::MlpUpProj.index()] = self.ns as f64 / 1e6;
        p
    }
}

/// `base + per_token · tokens + per_context · Σ context` ns model time, plus a fixed CPU
/// overhead split over the four phases: a shape-dependent duration with a known value.
struct Linear;

impl Linear {
    const CPU_MS: [f64; 5] = [0.001, 0.002, 0.003, 0.004, 0.0];

    fn model_ns(batch: &[RequestShape]) -> u64 {
        let tokens: u64 = batch.iter().map(|r| u64::from(r.num_tokens)).sum();
        let context: u64 = batch.iter().map(|r| u64::from(r.num_context_tokens)).sum();
        100_000 + 1_000 * tokens + 10 * context
    }
}

impl ExecutionTimePredictor for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn predict_with(&self, batch: &[RequestShape], _ctx: &IterationContext) -> BatchPrediction {
        let mut p = BatchPrediction::EMPTY;
        p.model_ns = Self::model_ns(batch);
        p.cpu_overheads_ms = Self::CPU_MS;
        p.cpu_overhead_ns = 10_000;
        p.total_ns = p.model_ns + p.cpu_overhead_ns;
        p.extrapolated = batch.len() > 3;
        p
    }
}

/// Exponentially distributed batch times with mean `mean_ns` (seeded; the simulator's call
/// order is deterministic, so the draws are too).
struct Exponential {
    rng: Mutex<ChaCha8Rng>,
    dist: Exp<f64>,
}

impl Exponential {
    fn new(mean_ns: f64, seed: u64) -> Self {
        Exponential {
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            dist: Exp::new(1.0 / mean_ns).unwrap(),
        }
    }
}

impl ExecutionTimePredictor for Exponential {
    fn name(&self) -> &'static str {
        "exponential"
    }

    fn predict_with(&self, _batch: &[RequestShape], _ctx: &IterationContext) -> BatchPrediction {
        let mut rng = self.rng.lock().unwrap();
        let ns = self.dist.sample(&mut *rng).round() as u64;
        let mut p = BatchPrediction::EMPTY;
        p.model_ns = ns;
        p.total_ns = ns;
        p
    }
}

fn req(id: u64, arrival_ns: u64, p: u32, d: u32) -> SimRequest {
    SimRequest {
        request_id: id,
        arrival_time_ns: arrival_ns,
        num_prefill_tokens: p,
        num_decode_tokens: d,
    }
}

fn sched(policy: Policy) -> SchedulerConfig {
    SchedulerConfig {
        policy,
        ..SchedulerConfig::default()
    }
}

/// Runs a simulation into memory and checks the invariants every run must satisfy:
/// Little's law (exactly), one request row per request in arrival order, contiguous token
/// indices with non-decreasing times, token rows agreeing with the request rows.
fn run(
    cfg: SimConfig,
    predictor: &dyn ExecutionTimePredictor,
    requests: &[SimRequest],
) -> (MemorySink, SimSummary) {
    let mut sink = MemorySink::default();
    let summary = Simulator::new(cfg, predictor)
        .unwrap()
        .run(requests.iter().copied(), &mut sink)
        .unwrap();
    let little = little_check(&summary, &sink.requests);
    assert!(little.exact, "Little's law: {little:?} {summary:?}");
    let ids: Vec<u64> = sink.requests.iter().map(|r| r.request_id).collect();
    let expected: Vec<u64> = requests.iter().map(|r| r.request_id).collect();
    assert_eq!(ids, expected, "request rows in arrival order");
    check_tokens(&sink);
    assert_eq!(summary.num_tokens, sink.tokens.len() as u64);
    assert_eq!(summary.num_batches, sink.batches.len() as u64);
    (sink, summary)
}

fn check_tokens(sink: &MemorySink) {
    use std::collections::HashMap;
    let mut per_request: HashMap<u64, Vec<(u32, u64, u64)>> = HashMap::new();
    let mut last_time = 0;
    for t in &sink.tokens {
        assert!(t.token_time_ns >= last_time, "emission order");
        last_time = t.token_time_ns;
        per_request.entry(t.request_id).or_default().push((
            t.token_index,
            t.token_time_ns,
            t.token_latency_ns,
        ));
    }
    for r in &sink.requests {
        let tokens = per_request.remove(&r.request_id).unwrap_or_default();
        assert_eq!(tokens.len() as u32, r.num_decode_tokens_actual);
        for (i, &(index, time, latency)) in tokens.iter().enumerate() {
            assert_eq!(index, i as u32);
            let expected = if i == 0 { 0 } else { time - tokens[i - 1].1 };
            assert_eq!(latency, expected);
        }
        assert_eq!(r.first_token_time_ns, tokens.first().map(|t| t.1));
        if r.status == RequestStatus::Ok {
            assert_eq!(r.num_decode_tokens_actual, r.num_decode_tokens);
            assert_eq!(r.completion_time_ns, tokens.last().map(|t| t.1));
        }
    }
    assert!(per_request.is_empty(), "tokens of unknown requests");
}

fn row(sink: &MemorySink, id: u64) -> &RequestMetricsRow {
    sink.requests.iter().find(|r| r.request_id == id).unwrap()
}

#[test]
fn two_requests_by_hand() {
    // Batches take 10 ns. r0 (P 4, D 3) arrives at 0; r1 (P 4, D 2) at 5, while r0's
    // prefill runs, so it waits for the scheduling point at 10. Sarathi: decodes first.
    //   [0, 10)  r0 prefill        → r0 token 0 at 10
    //   [10, 20) r0 decode, r1 prefill → r0 token 1, r1 token 0 at 20
    //   [20, 30) r0 decode, r1 decode  → r0 token 2, r1 token 1 at 30 (both complete)
    let cfg = SimConfig::single_replica(sched(Policy::Sarathi), 1000, 4096);
    let (sink, summary) = run(
        cfg,
        &Constant { ns: 10 },
        &[req(0, 0, 4, 3), req(1, 5, 4, 2)],
    );
    let r0 = row(&sink, 0);
    assert_eq!(
        (
            r0.scheduled_time_ns,
            r0.first_token_time_ns,
            r0.completion_time_ns
        ),
        (Some(0), Some(10), Some(30))
    );
    assert_eq!(
        (r0.ttft_ns, r0.tpot_ns, r0.e2e_ns),
        (Some(10), Some(10), Some(30))
    );
    let r1 = row(&sink, 1);
    assert_eq!(
        (r1.queue_delay_ns, r1.ttft_ns, r1.e2e_ns, r1.tpot_ns),
        (Some(5), Some(15), Some(25), Some(10))
    );
    assert_eq!(r1.backend.as_deref(), Some("vidur_sim"));
    let shapes: Vec<(u64, u64, u32, u32)> = sink
        .batches
        .iter()
        .map(|b| {
            (
                b.start_time_ns,
                b.end_time_ns,
                b.num_prefill_tokens,
                b.num_decode_tokens,
            )
        })
        .collect();
    assert_eq!(shapes, [(0, 10, 4, 0), (10, 20, 4, 1), (20, 30, 0, 2)]);
    // kv_context_tokens: Σ (context + scheduled): batch 1 = (4 + 1) + (0 + 4).
    assert_eq!(sink.batches[1].kv_context_tokens, 9);
    assert_eq!(sink.batches[0].op_mlp_up_proj_ns, Some(10));
    assert_eq!(sink.batches[0].op_attn_decode_ns, None);
    assert_eq!(summary.makespan_ns, 30);
    assert_eq!((summary.request_area_ns, summary.queue_area_ns), (55, 5));
    assert_eq!(sink.batch_requests.len(), 5);
}

#[test]
fn cpu_phases_and_model_time_add_up_to_the_charged_duration() {
    let cfg = SimConfig::single_replica(sched(Policy::Vllm), 1000, 4096);
    let requests: Vec<SimRequest> = (0..6)
        .map(|i| req(i, i * 50_000, 20 + i as u32, 4))
        .collect();
    let (sink, summary) = run(cfg, &Linear, &requests);
    for (b, shapes) in sink.batches.iter().zip(batch_shapes(&sink)) {
        let expected = Linear::model_ns(&shapes) + 10_000;
        assert_eq!(b.duration_ns, expected, "batch {}", b.batch_id);
        let phases = [
            b.cpu_schedule_ns,
            b.cpu_prepare_inputs_ns,
            b.model_forward_ns,
            b.cpu_sampler_ns,
            b.cpu_process_outputs_ns,
        ];
        assert_eq!(
            phases.iter().map(|p| p.unwrap()).sum::<u64>(),
            b.duration_ns
        );
        assert_eq!(
            (b.cpu_schedule_ns, b.cpu_sampler_ns, b.cpu_prepare_inputs_ns),
            (Some(1_000), Some(2_000), Some(3_000))
        );
        assert_eq!(b.extrapolated, Some(b.num_requests > 3));
    }
    assert_eq!(
        summary.num_extrapolated_batches,
        sink.batches.iter().filter(|b| b.num_requests > 3).count() as u64
    );
}

/// Each batch's request shapes, from the batch-request rows.
fn batch_shapes(sink: &MemorySink) -> Vec<Vec<RequestShape>> {
    sink.batches
        .iter()
        .map(|b| {
            sink.batch_requests
                .iter()
                .filter(|r| r.batch_id == b.batch_id)
                .map(|r| RequestShape {
                    num_tokens: r.num_tokens,
                    num_context_tokens: r.num_context_tokens,
                    is_prefill: r.is_prefill,
                })
                .collect()
        })
        .collect()
}

#[test]
fn over_long_and_unschedulable_requests_become_error_rows() {
    // Pool of 10 blocks of 16 tokens, watermark 0 → at most 160 tokens per request.
    let cfg = SimConfig::single_replica(
        SchedulerConfig {
            watermark_blocks_fraction: 0.0,
            ..sched(Policy::Sarathi)
        },
        10,
        256,
    );
    let requests = [
        req(0, 0, 100, 10),
        req(1, 1, 250, 10), // > 256-token context
        req(2, 2, 170, 10), // fits the context, not the pool
        req(3, 3, 10, 2),
    ];
    let (sink, summary) = run(cfg, &Constant { ns: 7 }, &requests);
    assert_eq!((summary.num_ok, summary.num_error), (2, 2));
    let r1 = row(&sink, 1);
    assert_eq!(r1.status, RequestStatus::Error);
    assert_eq!(r1.error_type.as_deref(), Some("context_overflow"));
    assert_eq!((r1.ttft_ns, r1.num_decode_tokens_actual), (None, 0));
    assert_eq!(row(&sink, 2).error_type.as_deref(), Some("kv_capacity"));
    assert_eq!(row(&sink, 3).status, RequestStatus::Ok);
}

#[test]
fn pipeline_stages_overlap_batches() {
    // PP = 2, every stage takes 10 ns. r0 at 0 → batch A: stage 0 [0, 10), stage 1
    // [10, 20). r1 arrives at 3: a second batch B can be in flight: formed at 3, waits for
    // stage 0 until 10, stage 1 [20, 30) after A. A ends at 20 (r0 token 0), B at 30.
    let cfg = SimConfig {
        num_pipeline_stages: 2,
        ..SimConfig::single_replica(sched(Policy::Sarathi), 1000, 4096)
    };
    let (sink, _) = run(
        cfg,
        &Constant { ns: 10 },
        &[req(0, 0, 8, 1), req(1, 3, 8, 1)],
    );
    let b: Vec<(u64, u64, u64)> = sink
        .batches
        .iter()
        .map(|b| (b.batch_id, b.start_time_ns, b.end_time_ns))
        .collect();
    assert_eq!(b, [(0, 0, 20), (1, 3, 30)]);
    assert_eq!(row(&sink, 1).first_token_time_ns, Some(30));
    assert_eq!(row(&sink, 1).queue_delay_ns, Some(0));
    // Model time is charged once per stage.
    assert_eq!(sink.batches[0].model_forward_ns, Some(20));
}

#[test]
fn replicas_share_the_load_by_global_policy() {
    let requests: Vec<SimRequest> = (0..8).map(|i| req(i, 0, 16, 3)).collect();
    let cfg = SimConfig {
        num_replicas: 3,
        ..SimConfig::single_replica(sched(Policy::Vllm), 1000, 4096)
    };
    let (sink, _) = run(cfg.clone(), &Constant { ns: 10 }, &requests);
    let replicas: Vec<u32> = sink
        .requests
        .iter()
        .map(|r| r.replica_id.unwrap())
        .collect();
    assert_eq!(replicas, [0, 1, 2, 0, 1, 2, 0, 1]);
    // Run-wide batch ids are unique.
    let mut ids: Vec<u64> = sink.batches.iter().map(|b| b.batch_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), sink.batches.len());
    // lor: all arrive at once, each pick sees the previous one queued.
    let lor = SimConfig {
        global_policy: GlobalPolicy::Lor,
        ..cfg.clone()
    };
    let (sink, _) = run(lor, &Constant { ns: 10 }, &requests);
    let replicas: Vec<u32> = sink
        .requests
        .iter()
        .map(|r| r.replica_id.unwrap())
        .collect();
    assert_eq!(replicas, [0, 1, 2, 0, 1, 2, 0, 1]);
    let random = SimConfig {
        global_policy: GlobalPolicy::Random,
        seed: 7,
        ..cfg
    };
    let (a, _) = run(random.clone(), &Constant { ns: 10 }, &requests);
    let (b, _) = run(random, &Constant { ns: 10 }, &requests);
    assert_eq!(a.requests, b.requests);
    assert_eq!(a.tokens, b.tokens);
}

#[test]
fn preemptions_are_counted_and_runs_are_deterministic() {
    // A pool too small for all decodes: vLLM preempts the latest arrival and recomputes it.
    let cfg = SimConfig::single_replica(
        SchedulerConfig {
            watermark_blocks_fraction: 0.0,
            ..sched(Policy::Vllm)
        },
        8,
        4096,
    );
    let requests: Vec<SimRequest> = (0..4).map(|i| req(i, i, 30, 40)).collect();
    let (a, summary) = run(cfg.clone(), &Linear, &requests);
    assert!(summary.num_preemptions > 0, "{summary:?}");
    let from_rows: u64 = a
        .requests
        .iter()
        .map(|r| u64::from(r.num_preemptions.unwrap()))
        .sum();
    assert_eq!(from_rows, summary.num_preemptions);
    let preempted: u64 = a.batches.iter().map(|b| u64::from(b.num_preempted)).sum();
    assert_eq!(preempted, summary.num_preemptions);
    assert!(a.requests.iter().all(|r| r.status == RequestStatus::Ok));
    let (b, again) = run(cfg, &Linear, &requests);
    assert_eq!(
        (a.requests, a.tokens, a.batches),
        (b.requests, b.tokens, b.batches)
    );
    assert_eq!(summary, again);
}

#[test]
fn unsorted_requests_are_an_error() {
    let cfg = SimConfig::single_replica(sched(Policy::Vllm), 1000, 4096);
    let mut sink = MemorySink::default();
    let err = Simulator::new(cfg, &Constant { ns: 1 })
        .unwrap()
        .run([req(0, 10, 4, 1), req(1, 5, 4, 1)], &mut sink)
        .unwrap_err();
    assert!(err.to_string().contains("sorted by arrival"), "{err}");
}

/// Poisson arrivals at `rate_per_ns`, each request one single-token prefill and one output
/// token: with batch cap 1 every request is one batch, so the replica is a single server.
fn single_server_queue(
    n: usize,
    rate_per_ns: f64,
    predictor: &dyn ExecutionTimePredictor,
    seed: u64,
) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let gaps = Exp::new(rate_per_ns).unwrap();
    let mut t = 0.0f64;
    let requests = (0..n as u64).map(move |id| {
        t += gaps.sample(&mut rng);
        req(id, t.round() as u64, 1, 1)
    });
    let cfg = SimConfig::single_replica(
        SchedulerConfig {
            batch_size_cap: 1,
            ..sched(Policy::Sarathi)
        },
        1000,
        4096,
    );
    let mut sink = RequestsOnlySink::default();
    let summary = Simulator::new(cfg, predictor)
        .unwrap()
        .run(requests, &mut sink)
        .unwrap();
    assert!(little_check(&summary, &sink.requests).exact);
    assert_eq!(summary.num_ok, n as u64);
    let total: u64 = sink
        .requests
        .iter()
        .map(|r| r.queue_delay_ns.unwrap())
        .sum();
    total as f64 / n as f64
}

#[test]
fn md1_mean_wait_matches_pollaczek_khinchine() {
    // Service S = 1 ms, λ = 500/s, ρ = 0.5: Wq = ρ·S / (2(1 − ρ)) = 0.5 ms.
    let service_ns = 1_000_000u64;
    let rate = 0.5 / service_ns as f64;
    let rho = rate * service_ns as f64;
    let theory = rho * service_ns as f64 / (2.0 * (1.0 - rho));
    let measured = single_server_queue(200_000, rate, &Constant { ns: service_ns }, 1);
    let err = (measured - theory).abs() / theory;
    eprintln!("M/D/1 mean wait: {measured:.0} ns, Pollaczek–Khinchine {theory:.0} ns");
    assert!(
        err < 0.02,
        "M/D/1: measured {measured:.0} ns vs {theory:.0} ns ({:.2}%)",
        err * 100.0
    );
}

#[test]
fn mm1_mean_wait_matches_theory() {
    // Mean service 1 ms (μ = 1000/s), λ = 500/s: Wq = ρ / (μ − λ) = 1 ms.
    let mean_service_ns = 1_000_000.0;
    let rate = 0.5 / mean_service_ns;
    let rho: f64 = 0.5;
    let theory = rho * mean_service_ns / (1.0 - rho);
    let predictor = Exponential::new(mean_service_ns, 11);
    let measured = single_server_queue(400_000, rate, &predictor, 2);
    let err = (measured - theory).abs() / theory;
    eprintln!("M/M/1 mean wait: {measured:.0} ns, theory {theory:.0} ns");
    assert!(
        err < 0.02,
        "M/M/1: measured {measured:.0} ns vs {theory:.0} ns ({:.2}%)",
        err * 100.0
    );
}
