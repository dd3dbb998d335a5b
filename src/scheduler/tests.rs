//! Hand-checked scenarios per policy, and seeded property tests over all policies.

use std::collections::{HashMap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

fn spec(request_id: u64, arrival_time_ns: u64, p: u32, d: u32) -> RequestSpec {
    RequestSpec {
        request_id,
        arrival_time_ns,
        num_prefill_tokens: p,
        num_decode_tokens: d,
    }
}

fn config(policy: Policy) -> SchedulerConfig {
    SchedulerConfig {
        policy,
        ..SchedulerConfig::default()
    }
}

/// `(request_id, num_tokens, num_context_tokens, is_prefill, emits_token)` per entry.
type Shape = (u64, u32, u32, bool, bool);

fn shape(batch: &ScheduledBatch) -> Vec<Shape> {
    batch
        .entries
        .iter()
        .map(|e| {
            (
                e.request_id,
                e.num_tokens,
                e.num_context_tokens,
                e.is_prefill,
                e.emits_token,
            )
        })
        .collect()
}

fn tokens(outcome: &BatchOutcome) -> Vec<(u64, u32)> {
    outcome
        .tokens
        .iter()
        .map(|t| (t.request_id, t.token_index))
        .collect()
}

fn add_all(s: &mut ReplicaScheduler, specs: &[RequestSpec]) {
    for &r in specs {
        s.add_request(r).unwrap();
    }
}

/// Schedules one batch (which must exist), ends it, and returns both.
fn step(s: &mut ReplicaScheduler) -> (ScheduledBatch, BatchOutcome) {
    let batch = s.schedule().expect("a batch");
    let outcome = s.on_batch_end(&batch);
    (batch, outcome)
}

// ---------------------------------------------------------------------------------------
// vllm

#[test]
fn vllm_admission_respects_the_watermark_and_stays_fifo() {
    let cfg = SchedulerConfig {
        watermark_blocks_fraction: 0.05,
        max_tokens_in_batch: 100_000,
        ..config(Policy::Vllm)
    };
    // 200 blocks, watermark int(0.05 × 200) = 10.
    let mut s = ReplicaScheduler::new(&cfg, 200, 1).unwrap();
    assert_eq!(s.num_watermark_blocks(), 10);
    // A: 100 blocks; B: 90 blocks leaves exactly the watermark; C: 1 block would dip below.
    add_all(
        &mut s,
        &[spec(0, 0, 1600, 2), spec(1, 1, 1440, 2), spec(2, 2, 16, 2)],
    );
    let batch = s.schedule().unwrap();
    let ids: Vec<u64> = batch.entries.iter().map(|e| e.request_id).collect();
    assert_eq!(ids, [0, 1]);
    assert_eq!(batch.num_kv_blocks_used, 190);
    assert_eq!(
        (s.num_free_blocks(), s.num_waiting(), s.num_running()),
        (10, 1, 2)
    );

    // One block more for B and it would not fit; C behind it must wait too (no skipping).
    let mut s = ReplicaScheduler::new(&cfg, 200, 1).unwrap();
    add_all(
        &mut s,
        &[spec(0, 0, 1600, 2), spec(1, 1, 1441, 2), spec(2, 2, 16, 2)],
    );
    let batch = s.schedule().unwrap();
    assert_eq!(shape(&batch), [(0, 1600, 0, true, true)]);
    assert_eq!(s.num_waiting(), 2);
}

#[test]
fn vllm_prefill_only_then_decode_only_with_padded_token_limit() {
    let cfg = SchedulerConfig {
        max_tokens_in_batch: 100,
        ..config(Policy::Vllm)
    };
    let mut s = ReplicaScheduler::new(&cfg, 1000, 1).unwrap();
    add_all(
        &mut s,
        &[spec(0, 0, 30, 3), spec(1, 1, 40, 2), spec(2, 2, 10, 2)],
    );
    // Padded: 1 × 30, 2 × 40 = 80, 3 × 40 = 120 > 100: C waits although 30+40+10 = 80.
    let b0 = s.schedule().unwrap();
    assert_eq!(b0.batch_id, 0);
    assert_eq!(shape(&b0), [(0, 30, 0, true, true), (1, 40, 0, true, true)]);
    assert!(s.schedule().is_none(), "one stage: one batch in flight");
    assert_eq!(tokens(&s.on_batch_end(&b0)), [(0, 0), (1, 0)]);

    // New requests go first: a prefill-only batch while A and B wait to decode.
    let (b1, o1) = step(&mut s);
    assert_eq!(b1.batch_id, 1);
    assert_eq!(shape(&b1), [(2, 10, 0, true, true)]);
    assert_eq!(tokens(&o1), [(2, 0)]);

    // Then a decode-only batch of everyone, in arrival order.
    let (b2, o2) = step(&mut s);
    assert_eq!(
        shape(&b2),
        [
            (0, 1, 30, false, true),
            (1, 1, 40, false, true),
            (2, 1, 10, false, true)
        ]
    );
    assert_eq!(tokens(&o2), [(0, 1), (1, 1), (2, 1)]);
    assert_eq!(o2.completed, [1, 2]);

    let (b3, o3) = step(&mut s);
    assert_eq!(shape(&b3), [(0, 1, 31, false, true)]);
    assert_eq!(o3.completed, [0]);
    assert!(s.is_idle());
    assert_eq!(s.num_free_blocks(), 1000);
    assert!(s.schedule().is_none());
}

#[test]
fn vllm_preempts_the_latest_arrival_to_the_queue_front_and_recomputes() {
    let cfg = SchedulerConfig {
        block_size: 4,
        ..config(Policy::Vllm)
    };
    // 6 blocks: watermark int(0.06) = 0.
    let mut s = ReplicaScheduler::new(&cfg, 6, 1).unwrap();
    add_all(
        &mut s,
        &[spec(0, 0, 4, 10), spec(1, 1, 4, 10), spec(2, 2, 4, 10)],
    );
    let (b0, _) = step(&mut s);
    assert_eq!(b0.num_kv_blocks_used, 3);
    // Each decode writes position 4 and needs a second block: the pool is then full.
    let b1 = s.schedule().unwrap();
    assert_eq!(b1.num_kv_blocks_used, 6);
    assert_eq!(s.block_table(0), Some(&[0, 3][..]));
    // D arrives while b1 runs; at the next formation it cannot be admitted (no free block).
    s.add_request(spec(3, 3, 4, 1)).unwrap();
    s.on_batch_end(&b1);

    // A finds no free block, so the back of the running list, C, is preempted. Vidur's
    // rule asks for a free block even though A's next token still fits its 2 blocks.
    let b2 = s.schedule().unwrap();
    assert_eq!(b2.preempted, [2]);
    assert_eq!(shape(&b2), [(0, 1, 5, false, true), (1, 1, 5, false, true)]);
    assert_eq!(b2.num_kv_blocks_used, 4);
    assert_eq!(s.num_preemptions(2), Some(1));
    assert_eq!(s.block_table(2), Some(&[][..]));
    assert_eq!((s.num_waiting(), s.num_running()), (2, 2));
    s.on_batch_end(&b2);

    // C went to the queue front, ahead of D; it recomputes prompt + 2 generated tokens and
    // that iteration emits its token 2.
    let (b3, o3) = step(&mut s);
    assert_eq!(shape(&b3), [(2, 6, 0, true, true)]);
    assert_eq!(tokens(&o3), [(2, 2)]);
    assert_eq!(s.block_table(2).unwrap().len(), 2);
    assert_eq!(s.num_waiting(), 1);
}

#[test]
fn vllm_victims_requeue_at_the_front_in_arrival_order() {
    let cfg = SchedulerConfig {
        block_size: 2,
        ..config(Policy::Vllm)
    };
    // 4 blocks, watermark 0. Three 2-token prompts take 3 blocks; the first decodes need
    // a new block each (position 2).
    let mut s = ReplicaScheduler::new(&cfg, 4, 1).unwrap();
    add_all(
        &mut s,
        &[spec(0, 0, 2, 5), spec(1, 1, 2, 5), spec(2, 2, 2, 5)],
    );
    step(&mut s);
    // A takes the last free block; B finds none, preempts C and takes C's block.
    let (b1, _) = step(&mut s);
    assert_eq!(b1.preempted, [2]);
    assert_eq!(shape(&b1), [(0, 1, 2, false, true), (1, 1, 2, false, true)]);
    // Nothing is free: A preempts B, which goes to the queue front, ahead of C.
    let (b2, _) = step(&mut s);
    assert_eq!(b2.preempted, [1]);
    assert_eq!(shape(&b2), [(0, 1, 3, false, true)]);
    assert_eq!(s.num_waiting(), 2);
    // New requests first: B (prompt 2 + 2 generated) fits the 2 free blocks, C does not.
    let (b3, o3) = step(&mut s);
    assert_eq!(shape(&b3), [(1, 4, 0, true, true)]);
    assert_eq!(tokens(&o3), [(1, 2)]);
    assert_eq!(s.num_waiting(), 1);
    assert_eq!(
        (
            s.num_preemptions(0),
            s.num_preemptions(1),
            s.num_preemptions(2)
        ),
        (Some(0), Some(1), Some(1))
    );
}

#[test]
fn vllm_lone_request_filling_the_pool_makes_progress_by_self_preemption() {
    let cfg = SchedulerConfig {
        block_size: 4,
        ..config(Policy::Vllm)
    };
    // Two blocks, no watermark: P + D − 1 = 8 tokens fits exactly, so it is accepted.
    let mut s = ReplicaScheduler::new(&cfg, 2, 1).unwrap();
    s.add_request(spec(0, 0, 4, 5)).unwrap();
    let mut seen = Vec::new();
    while let Some(batch) = s.schedule() {
        let outcome = s.on_batch_end(&batch);
        seen.push((shape(&batch), batch.preempted.clone(), tokens(&outcome)));
    }
    assert_eq!(
        seen,
        [
            (vec![(0, 4, 0, true, true)], vec![], vec![(0, 0)]),
            (vec![(0, 1, 4, false, true)], vec![], vec![(0, 1)]),
            // Full pool: Vidur preempts the request itself; it is re-admitted at once.
            (vec![(0, 6, 0, true, true)], vec![0], vec![(0, 2)]),
            (vec![(0, 7, 0, true, true)], vec![0], vec![(0, 3)]),
            (vec![(0, 8, 0, true, true)], vec![0], vec![(0, 4)]),
        ]
    );
    assert!(s.is_idle());
    assert_eq!(s.num_preemptions(0), Some(3));
}

#[test]
fn vllm_batch_size_cap_bounds_admitted_requests() {
    let cfg = SchedulerConfig {
        batch_size_cap: 2,
        ..config(Policy::Vllm)
    };
    let mut s = ReplicaScheduler::new(&cfg, 100, 1).unwrap();
    add_all(
        &mut s,
        &[spec(0, 0, 8, 2), spec(1, 1, 8, 3), spec(2, 2, 8, 1)],
    );
    let ids = |b: &ScheduledBatch| b.entries.iter().map(|e| e.request_id).collect::<Vec<_>>();
    let (b0, _) = step(&mut s);
    assert_eq!(ids(&b0), [0, 1]);
    // C is not admitted while two requests hold blocks, so the decodes run.
    let (b1, o1) = step(&mut s);
    assert_eq!(ids(&b1), [0, 1]);
    assert_eq!(o1.completed, [0]);
    let (b2, _) = step(&mut s);
    assert_eq!(ids(&b2), [2]);
}

#[test]
fn vllm_pipeline_keeps_two_micro_batches_in_flight() {
    let cfg = SchedulerConfig {
        batch_size_cap: 4,
        ..config(Policy::Vllm)
    };
    let mut s = ReplicaScheduler::new(&cfg, 100, 2).unwrap();
    add_all(
        &mut s,
        &(0..5).map(|i| spec(i, i, 4, 3)).collect::<Vec<_>>(),
    );
    let ids = |b: &ScheduledBatch| b.entries.iter().map(|e| e.request_id).collect::<Vec<_>>();
    // Micro-batch cap 4 / 2 = 2.
    let b0 = s.schedule().unwrap();
    let b1 = s.schedule().unwrap();
    assert_eq!((ids(&b0), ids(&b1)), (vec![0, 1], vec![2, 3]));
    assert!(s.schedule().is_none());
    assert_eq!(s.num_in_flight_batches(), 2);
    s.on_batch_end(&b0);
    // E cannot be admitted (4 requests hold blocks); C and D are in flight: only A, B decode.
    let b2 = s.schedule().unwrap();
    assert_eq!(shape(&b2), [(0, 1, 4, false, true), (1, 1, 4, false, true)]);
    assert!(s.schedule().is_none());
    s.on_batch_end(&b1);
    let b3 = s.schedule().unwrap();
    assert_eq!(ids(&b3), [2, 3]);
    assert_eq!(s.num_waiting(), 1);
}

#[test]
fn vllm_rejects_requests_that_could_never_complete() {
    let cfg = SchedulerConfig {
        max_tokens_in_batch: 100_000,
        ..config(Policy::Vllm)
    };
    // 200 blocks of 16, watermark 2: 198 usable blocks = 3168 tokens of prefill.
    let mut s = ReplicaScheduler::new(&cfg, 200, 1).unwrap();
    s.add_request(spec(0, 0, 3000, 169)).unwrap(); // 3168 tokens at most
    assert_eq!(
        s.add_request(spec(1, 0, 3000, 170)),
        Err(Rejection::ExceedsKvPool {
            needed_blocks: 199,
            usable_blocks: 198
        })
    );
    assert_eq!(
        s.add_request(spec(0, 0, 1, 1)),
        Err(Rejection::DuplicateId { request_id: 0 })
    );
    for (p, d) in [(0, 5), (5, 0), (u32::MAX, 1)] {
        assert!(matches!(
            s.add_request(spec(9, 0, p, d)),
            Err(Rejection::InvalidLengths { .. })
        ));
    }
    let cfg = SchedulerConfig {
        max_tokens_in_batch: 64,
        ..config(Policy::Vllm)
    };
    let mut s = ReplicaScheduler::new(&cfg, 200, 1).unwrap();
    s.add_request(spec(0, 0, 60, 5)).unwrap();
    assert_eq!(
        s.add_request(spec(1, 0, 60, 6)),
        Err(Rejection::ExceedsMaxTokensInBatch {
            num_tokens: 65,
            max_tokens_in_batch: 64
        })
    );
    assert_eq!(s.num_waiting(), 1);
    let err: Error = Rejection::ExceedsMaxTokensInBatch {
        num_tokens: 65,
        max_tokens_in_batch: 64,
    }
    .into();
    assert!(matches!(err, Error::OutOfRange(ref m) if m.contains("max_tokens_in_batch")));
}

// ---------------------------------------------------------------------------------------
// sarathi

#[test]
fn sarathi_splits_prefills_into_chunks_across_iterations() {
    let cfg = SchedulerConfig {
        chunk_size: 8,
        block_size: 4,
        ..config(Policy::Sarathi)
    };
    let mut s = ReplicaScheduler::new(&cfg, 100, 1).unwrap();
    add_all(&mut s, &[spec(0, 0, 20, 2), spec(1, 1, 6, 1)]);
    let (b0, o0) = step(&mut s);
    // A's whole prompt is reserved at admission; B gets no budget and stays queued.
    assert_eq!(shape(&b0), [(0, 8, 0, true, false)]);
    assert_eq!(b0.num_kv_blocks_used, 5);
    assert!(o0.tokens.is_empty());
    let (b1, _) = step(&mut s);
    assert_eq!(shape(&b1), [(0, 8, 8, true, false)]);
    let (b2, o2) = step(&mut s);
    assert_eq!(shape(&b2), [(0, 4, 16, true, true), (1, 4, 0, true, false)]);
    assert_eq!(tokens(&o2), [(0, 0)]);
    let (b3, o3) = step(&mut s);
    assert_eq!(shape(&b3), [(0, 1, 20, false, true), (1, 2, 4, true, true)]);
    assert_eq!(tokens(&o3), [(0, 1), (1, 0)]);
    assert_eq!(o3.completed, [0, 1]);
    assert!(s.is_idle());
}

#[test]
fn sarathi_decodes_share_the_token_budget_with_prefill_chunks() {
    let cfg = SchedulerConfig {
        chunk_size: 3,
        block_size: 4,
        ..config(Policy::Sarathi)
    };
    let mut s = ReplicaScheduler::new(&cfg, 100, 1).unwrap();
    add_all(
        &mut s,
        &[spec(0, 0, 1, 5), spec(1, 1, 1, 5), spec(2, 2, 10, 1)],
    );
    let mut shapes = Vec::new();
    while !s.is_idle() {
        shapes.push(shape(&step(&mut s).0));
    }
    let c = |tokens, ctx, emits| (2, tokens, ctx, true, emits);
    let dec = |id, ctx| (id, 1, ctx, false, true);
    assert_eq!(
        shapes,
        [
            vec![(0, 1, 0, true, true), (1, 1, 0, true, true), c(1, 0, false)],
            // Two decodes leave one token of budget for C's prefill.
            vec![dec(0, 1), dec(1, 1), c(1, 1, false)],
            vec![dec(0, 2), dec(1, 2), c(1, 2, false)],
            vec![dec(0, 3), dec(1, 3), c(1, 3, false)],
            vec![dec(0, 4), dec(1, 4), c(1, 4, false)],
            // A and B are done: C gets the whole budget.
            vec![c(3, 5, false)],
            vec![c(2, 8, true)],
        ]
    );
}

#[test]
fn sarathi_pipeline_prefills_can_exceed_the_micro_batch_cap_as_in_vidur() {
    let cfg = SchedulerConfig {
        chunk_size: 100,
        batch_size_cap: 4,
        ..config(Policy::Sarathi)
    };
    let mut s = ReplicaScheduler::new(&cfg, 1000, 2).unwrap();
    add_all(
        &mut s,
        &(0..4).map(|i| spec(i, i, 60, 5)).collect::<Vec<_>>(),
    );
    let b0 = s.schedule().unwrap();
    let b1 = s.schedule().unwrap();
    assert_eq!(
        shape(&b0),
        [(0, 60, 0, true, true), (1, 40, 0, true, false)]
    );
    assert_eq!(
        shape(&b1),
        [(2, 60, 0, true, true), (3, 40, 0, true, false)]
    );
    s.on_batch_end(&b0);
    s.on_batch_end(&b1);
    // Running list [A, B, C, D]: A and C decode up to the cap of 2, B was set aside before
    // the cap was hit and still gets its chunk; D stays behind the cap.
    let b2 = s.schedule().unwrap();
    assert_eq!(
        shape(&b2),
        [
            (0, 1, 60, false, true),
            (2, 1, 60, false, true),
            (1, 20, 40, true, true)
        ]
    );
    let b3 = s.schedule().unwrap();
    assert_eq!(shape(&b3), [(3, 20, 40, true, true)]);
}

#[test]
fn sarathi_partial_prefill_victim_is_restarted_vidur_style() {
    let cfg = SchedulerConfig {
        chunk_size: 4,
        block_size: 4,
        ..config(Policy::Sarathi)
    };
    // 4 blocks, watermark 0. A: 4-token prompt, 3 outputs. B: 8-token prompt (2 blocks).
    let mut s = ReplicaScheduler::new(&cfg, 4, 1).unwrap();
    add_all(&mut s, &[spec(0, 0, 4, 3), spec(1, 1, 8, 2)]);
    let (b0, _) = step(&mut s);
    assert_eq!(shape(&b0), [(0, 4, 0, true, true)]);
    // A decodes (second block) and B starts its prefill with the 3 tokens of budget left.
    let (b1, _) = step(&mut s);
    assert_eq!(shape(&b1), [(0, 1, 4, false, true), (1, 3, 0, true, false)]);
    assert_eq!(b1.num_kv_blocks_used, 4);
    // Pool full: A's decode preempts the back of the running list, B, mid-prefill. Vidur
    // makes B's new prefill target the 3 tokens it had processed, and B is re-admitted with
    // one block in the same iteration.
    let (b2, o2) = step(&mut s);
    assert_eq!(b2.preempted, [1]);
    assert_eq!(shape(&b2), [(0, 1, 5, false, true), (1, 3, 0, true, false)]);
    assert_eq!(o2.completed, [0]);
    // B then walks the rest of its prompt one token per iteration, as a Vidur "decode",
    // and emits its first token only once the whole prompt is in the cache. Vidur too runs
    // P + D − 3 = 7 iterations after the preemption (1 re-prefill + 6 steps).
    let mut rest = Vec::new();
    while !s.is_idle() {
        let (batch, outcome) = step(&mut s);
        rest.push((shape(&batch), tokens(&outcome)));
    }
    let walk = |ctx, emits| vec![(1, 1, ctx, false, emits)];
    assert_eq!(
        rest,
        [
            (walk(3, false), vec![]),
            (walk(4, false), vec![]),
            (walk(5, false), vec![]),
            (walk(6, false), vec![]),
            (walk(7, true), vec![(1, 0)]),
            (walk(8, true), vec![(1, 1)]),
        ]
    );
    assert_eq!(s.num_preemptions(1), Some(1));
}

// ---------------------------------------------------------------------------------------
// orca

#[test]
fn orca_reserves_the_full_context_and_never_chunks() {
    let cfg = SchedulerConfig {
        max_tokens_per_request: 64,
        ..config(Policy::Orca)
    };
    // 64 / 16 = 4 blocks per request; 10 blocks → max batch size 10 / 4 = 2.
    let mut s = ReplicaScheduler::new(&cfg, 10, 1).unwrap();
    add_all(
        &mut s,
        &[spec(0, 0, 50, 3), spec(1, 1, 10, 2), spec(2, 2, 5, 1)],
    );
    let (b0, _) = step(&mut s);
    assert_eq!(shape(&b0), [(0, 50, 0, true, true), (1, 10, 0, true, true)]);
    assert_eq!(b0.num_kv_blocks_used, 8);
    assert_eq!(s.block_table(0), Some(&[0, 1, 2, 3][..]));
    assert_eq!(s.block_table(1), Some(&[4, 5, 6, 7][..]));
    // The batch is full at 2 (and only 2 blocks are free): C waits.
    let (b1, o1) = step(&mut s);
    assert_eq!(
        shape(&b1),
        [(0, 1, 50, false, true), (1, 1, 10, false, true)]
    );
    assert_eq!(o1.completed, [1]);
    // Decode and a whole-prompt prefill in one iteration; C reuses B's blocks.
    let (b2, o2) = step(&mut s);
    assert_eq!(shape(&b2), [(0, 1, 51, false, true), (2, 5, 0, true, true)]);
    assert_eq!(o2.completed, [0, 2]);
    assert!(s.is_idle());
}

#[test]
fn orca_batch_is_bounded_by_the_cap_and_the_pool() {
    let cfg = SchedulerConfig {
        max_tokens_per_request: 64,
        batch_size_cap: 3,
        ..config(Policy::Orca)
    };
    let mut s = ReplicaScheduler::new(&cfg, 100, 1).unwrap(); // 25 fit: the cap binds
    add_all(
        &mut s,
        &(0..5).map(|i| spec(i, i, 8, 2)).collect::<Vec<_>>(),
    );
    assert_eq!(s.schedule().unwrap().entries.len(), 3);

    let cfg = SchedulerConfig {
        batch_size_cap: 128,
        ..cfg
    };
    // 9 blocks hold two reservations; max batch size 9 / 4 = 2.
    let mut s = ReplicaScheduler::new(&cfg, 9, 1).unwrap();
    add_all(
        &mut s,
        &(0..5).map(|i| spec(i, i, 8, 2)).collect::<Vec<_>>(),
    );
    let b = s.schedule().unwrap();
    assert_eq!(b.entries.len(), 2);
    assert_eq!(s.num_free_blocks(), 1);
}

#[test]
fn orca_rejects_requests_beyond_the_reservation_and_pools_below_one() {
    let cfg = SchedulerConfig {
        max_tokens_per_request: 64,
        ..config(Policy::Orca)
    };
    let mut s = ReplicaScheduler::new(&cfg, 8, 1).unwrap();
    s.add_request(spec(0, 0, 60, 4)).unwrap();
    assert_eq!(
        s.add_request(spec(1, 0, 60, 5)),
        Err(Rejection::ExceedsMaxTokensPerRequest {
            num_tokens: 65,
            reserved_tokens: 64
        })
    );
    assert!(matches!(
        ReplicaScheduler::new(&cfg, 3, 1),
        Err(Error::OutOfRange(_))
    ));
    let tiny = SchedulerConfig {
        max_tokens_per_request: 8,
        ..cfg
    };
    assert!(matches!(
        ReplicaScheduler::new(&tiny, 100, 1),
        Err(Error::Config { ref key, .. }) if key == "max_tokens_per_request"
    ));
}

// ---------------------------------------------------------------------------------------
// construction, misuse, determinism

#[test]
fn constructor_rejects_unusable_pools_and_pipelines() {
    let cfg = config(Policy::Sarathi);
    assert!(ReplicaScheduler::new(&cfg, 0, 1).is_err());
    assert!(ReplicaScheduler::new(&cfg, 100, 0).is_err());
    let cfg = SchedulerConfig {
        batch_size_cap: 2,
        ..cfg
    };
    assert!(matches!(
        ReplicaScheduler::new(&cfg, 100, 3),
        Err(Error::Config { ref key, .. }) if key == "batch_size_cap"
    ));
    let bad = SchedulerConfig {
        chunk_size: 0,
        ..cfg
    };
    assert!(ReplicaScheduler::new(&bad, 100, 1).is_err());
}

#[test]
#[should_panic(expected = "not in flight")]
fn ending_a_batch_twice_is_a_caller_bug() {
    let mut s = ReplicaScheduler::new(&config(Policy::Vllm), 100, 1).unwrap();
    s.add_request(spec(0, 0, 4, 4)).unwrap();
    let b = s.schedule().unwrap();
    s.on_batch_end(&b);
    s.on_batch_end(&b);
}

#[test]
fn identical_inputs_give_identical_schedules() {
    for policy in [Policy::Vllm, Policy::Sarathi, Policy::Orca] {
        let params = PropParams::small(policy, 2, 5);
        let a = drive(&params, 11);
        let b = drive(&params, 11);
        assert_eq!(a.batches, b.batches, "{policy:?}");
        assert_ne!(a.batches, drive(&params, 12).batches, "{policy:?}");
    }
}

// ---------------------------------------------------------------------------------------
// property tests

/// One randomised setting: a small pool so that preemption happens.
#[derive(Debug, Clone)]
struct PropParams {
    cfg: SchedulerConfig,
    num_blocks: usize,
    num_stages: usize,
    num_requests: usize,
    max_prompt: u32,
    max_output: u32,
}

impl PropParams {
    fn small(policy: Policy, num_stages: usize, variant: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(variant);
        let cfg = SchedulerConfig {
            policy,
            batch_size_cap: [2, 4, 8, 16][rng.random_range(0..4)],
            block_size: [1, 4, 8][rng.random_range(0..3)],
            watermark_blocks_fraction: [0.0, 0.01, 0.1][rng.random_range(0..3)],
            max_tokens_in_batch: rng.random_range(64..=160),
            chunk_size: [1, 4, 16, 64][rng.random_range(0..4)],
            max_tokens_per_request: 64,
        };
        let num_blocks = match policy {
            Policy::Orca => (64 / cfg.block_size as usize) * rng.random_range(1..=4),
            _ => rng.random_range(24..=120) / cfg.block_size as usize + 1,
        };
        PropParams {
            cfg,
            num_blocks,
            num_stages,
            num_requests: 40,
            max_prompt: 48,
            max_output: 24,
        }
    }
}

/// What the test believes about one request.
#[derive(Debug, Clone, Default)]
struct Shadow {
    p: u32,
    d: u32,
    computed: u32,
    generated: u32,
    preemptions: u32,
    completed: bool,
    in_flight: bool,
}

#[derive(Debug, Default)]
struct DriveStats {
    batches: Vec<ScheduledBatch>,
    num_preemptions: u32,
    num_rejected: usize,
    num_completed: usize,
}

/// Runs a random workload to completion, checking every invariant at every iteration.
/// Arrivals happen between batch ends; the oldest batch in flight ends first.
fn drive(params: &PropParams, seed: u64) -> DriveStats {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cfg = &params.cfg;
    let bs = cfg.block_size;
    let mut s = ReplicaScheduler::new(cfg, params.num_blocks, params.num_stages).unwrap();
    let watermark = s.num_watermark_blocks() as u64;

    let mut arrivals = Vec::new();
    let mut at_step = 0u64;
    for id in 0..params.num_requests as u64 {
        at_step += rng.random_range(0..3);
        let p = rng.random_range(1..=params.max_prompt);
        let d = rng.random_range(1..=params.max_output);
        arrivals.push((at_step, spec(id, at_step * 1000, p, d)));
    }

    let mut shadows: HashMap<u64, Shadow> = HashMap::new();
    let mut stats = DriveStats::default();
    let mut in_flight: VecDeque<ScheduledBatch> = VecDeque::new();
    let mut next = 0;
    let mut step_no = 0u64;
    let bound = 50_000;
    loop {
        while next < arrivals.len() && arrivals[next].0 <= step_no {
            let r = arrivals[next].1;
            next += 1;
            // The documented rejection rules, recomputed here.
            let max_prefill = u64::from(r.num_prefill_tokens + r.num_decode_tokens - 1);
            let must_reject = match cfg.policy {
                Policy::Orca => max_prefill + 1 > u64::from(cfg.orca_blocks_per_request() * bs),
                _ => {
                    max_prefill.div_ceil(u64::from(bs)) > params.num_blocks as u64 - watermark
                        || (cfg.policy == Policy::Vllm
                            && max_prefill > u64::from(cfg.max_tokens_in_batch))
                }
            };
            match s.add_request(r) {
                Ok(()) => {
                    assert!(!must_reject, "{r:?} should have been rejected");
                    shadows.insert(
                        r.request_id,
                        Shadow {
                            p: r.num_prefill_tokens,
                            d: r.num_decode_tokens,
                            ..Shadow::default()
                        },
                    );
                }
                Err(rejection) => {
                    assert!(must_reject, "{r:?} rejected: {rejection}");
                    stats.num_rejected += 1;
                }
            }
        }
        while let Some(batch) = s.schedule() {
            check_batch(&s, params, &batch, &mut shadows);
            stats.num_preemptions += batch.preempted.len() as u32;
            in_flight.push_back(batch.clone());
            stats.batches.push(batch);
        }
        assert!(in_flight.len() <= params.num_stages);
        match in_flight.pop_front() {
            Some(batch) => {
                let outcome = s.on_batch_end(&batch);
                check_outcome(&batch, &outcome, &mut shadows, &mut stats);
            }
            None if next < arrivals.len() => {
                // Idle until the next arrival.
                step_no = arrivals[next].0;
                continue;
            }
            None => break,
        }
        step_no += 1;
        assert!(
            step_no < bound,
            "no progress after {bound} steps: starvation"
        );
    }

    // Everyone accepted completed with exactly D tokens, and everything was given back.
    for (id, sh) in &shadows {
        assert!(sh.completed, "request {id} never completed: {sh:?}");
        assert_eq!(sh.generated, sh.d);
        assert_eq!(s.num_preemptions(*id), Some(sh.preemptions));
    }
    assert_eq!(
        stats.num_completed + stats.num_rejected,
        params.num_requests
    );
    assert!(s.is_idle());
    assert_eq!(s.num_free_blocks(), params.num_blocks);
    stats
}

fn check_batch(
    s: &ReplicaScheduler,
    params: &PropParams,
    batch: &ScheduledBatch,
    shadows: &mut HashMap<u64, Shadow>,
) {
    let cfg = &params.cfg;
    let bs = cfg.block_size;
    for id in &batch.preempted {
        let sh = shadows.get_mut(id).unwrap();
        assert!(!sh.in_flight && !sh.completed, "preempted {id}: {sh:?}");
        sh.computed = 0;
        sh.preemptions += 1;
    }
    assert!(!batch.entries.is_empty());
    assert!(batch.entries.len() <= cfg.batch_size_cap as usize);
    for e in &batch.entries {
        let sh = shadows.get_mut(&e.request_id).unwrap();
        assert!(!sh.in_flight, "request {} scheduled twice", e.request_id);
        assert!(!sh.completed);
        sh.in_flight = true;
        let known = sh.p + sh.generated;
        assert!(e.num_tokens >= 1);
        assert_eq!(e.num_context_tokens, sh.computed, "{e:?}");
        assert!(e.num_context_tokens + e.num_tokens <= known, "{e:?} {sh:?}");
        assert_eq!(e.emits_token, e.num_context_tokens + e.num_tokens == known);
        // The KV slots the engine writes are covered by the request's blocks.
        let blocks = s.block_table(e.request_id).unwrap().len() as u32;
        assert!(
            blocks * bs >= e.num_context_tokens + e.num_tokens,
            "{e:?}: {blocks} blocks of {bs}"
        );
        if cfg.policy == Policy::Orca {
            assert_eq!(blocks, cfg.orca_blocks_per_request());
        }
    }
    // Block tables are disjoint, in range, and add up to the pool's count.
    let mut owner = vec![false; params.num_blocks];
    let mut total = 0;
    for id in shadows.keys() {
        for &block in s.block_table(*id).unwrap() {
            assert!(
                !std::mem::replace(&mut owner[block as usize], true),
                "block {block} shared"
            );
            total += 1;
        }
    }
    assert_eq!(total, batch.num_kv_blocks_used);
    assert_eq!(total as usize, params.num_blocks - s.num_free_blocks());

    let prefill_tokens: Vec<u32> = batch
        .entries
        .iter()
        .filter(|e| e.is_prefill)
        .map(|e| e.num_tokens)
        .collect();
    let num_decodes = batch.entries.len() - prefill_tokens.len();
    match cfg.policy {
        Policy::Vllm => {
            let micro = (cfg.batch_size_cap as usize) / params.num_stages;
            assert!(batch.entries.len() <= micro);
            if prefill_tokens.is_empty() {
                assert!(batch.entries.iter().all(|e| e.num_tokens == 1));
            } else {
                assert_eq!(num_decodes, 0, "vllm mixes prefills and decodes");
                let max = *prefill_tokens.iter().max().unwrap();
                assert!(prefill_tokens.len() as u32 * max <= cfg.max_tokens_in_batch);
            }
        }
        Policy::Sarathi => {
            let prefill_sum: u32 = prefill_tokens.iter().sum();
            if prefill_sum > 0 {
                assert!(
                    prefill_sum + num_decodes as u32 <= cfg.chunk_size,
                    "{batch:?}"
                );
            }
        }
        Policy::Orca => {
            for e in batch.entries.iter().filter(|e| e.is_prefill) {
                let sh = &shadows[&e.request_id];
                assert_eq!(
                    (e.num_tokens, e.num_context_tokens),
                    (sh.p, 0),
                    "orca chunked"
                );
            }
        }
    }
}

fn check_outcome(
    batch: &ScheduledBatch,
    outcome: &BatchOutcome,
    shadows: &mut HashMap<u64, Shadow>,
    stats: &mut DriveStats,
) {
    let mut emitted = outcome.tokens.iter();
    for e in &batch.entries {
        let sh = shadows.get_mut(&e.request_id).unwrap();
        sh.in_flight = false;
        sh.computed += e.num_tokens;
        if e.emits_token {
            let t = emitted.next().expect("a token per emitting entry");
            assert_eq!((t.request_id, t.token_index), (e.request_id, sh.generated));
            sh.generated += 1;
        }
        let done = sh.generated == sh.d;
        assert_eq!(done, outcome.completed.contains(&e.request_id));
        if done {
            sh.completed = true;
            stats.num_completed += 1;
        }
    }
    assert!(emitted.next().is_none(), "tokens without emitting entries");
}

fn property_sweep(policy: Policy) {
    let mut preemptions = 0;
    let mut rejections = 0;
    for num_stages in [1, 2, 3] {
        for variant in 0..24 {
            let mut params = PropParams::small(policy, num_stages, variant);
            params.cfg.batch_size_cap = params.cfg.batch_size_cap.max(num_stages as u32);
            let stats = drive(&params, 1000 + variant);
            preemptions += stats.num_preemptions;
            rejections += stats.num_rejected;
        }
    }
    if policy != Policy::Orca {
        assert!(
            preemptions > 100,
            "{policy:?}: only {preemptions} preemptions"
        );
    }
    assert!(
        rejections > 0,
        "{policy:?}: the rejection path was never taken"
    );
}

#[test]
fn vllm_invariants_hold_on_random_workloads() {
    property_sweep(Policy::Vllm);
}

#[test]
fn sarathi_invariants_hold_on_random_workloads() {
    property_sweep(Policy::Sarathi);
}

#[test]
fn orca_invariants_hold_on_random_workloads() {
    property_sweep(Policy::Orca);
}

// ---------------------------------------------------------------------------------------
// Vidur golden traces

/// One recorded run of Vidur's own scheduler.
#[derive(Debug, serde::Deserialize)]
struct GoldenCase {
    cfg: SchedulerConfig,
    num_blocks: usize,
    stages: usize,
    /// `(arrival step, P, D)`, request ids 0, 1, 2, … in this order.
    requests: Vec<(u64, u32, u32)>,
    /// Per batch, in formation order: request ids, tokens per request, and Vidur's
    /// `num_allocated_blocks` right after the batch was formed.
    batches: Vec<(Vec<u64>, Vec<u32>, u32)>,
    /// Vidur's `num_restarts` per request at the end.
    restarts: Vec<u32>,
}

/// `testdata/vidur_golden.json` holds nine runs (vllm, sarathi, orca × 1, 2, 3 pipeline
/// stages; small pools, so 864 preemptions, 9 of them mid-prefill) recorded by driving the
/// replica scheduler classes of Vidur 0.0.1 (commit 7d47513, `vidur/scheduler/
/// replica_scheduler/*.py` with `vidur/entities/{request,batch}.py`) with the loop below:
/// at each step, add the requests that arrived by then, form batches while fewer than
/// `stages` are in flight (`on_schedule`), then end the oldest batch in flight
/// (`batch.on_batch_end` then `scheduler.on_batch_end`); with nothing in flight, jump to
/// the next arrival. Orca's max batch size was set to `num_blocks / (blocks per request ×
/// stages)`, as we derive it.
#[test]
fn reproduces_vidur_schedules_batch_for_batch() {
    #[derive(serde::Deserialize)]
    struct Golden {
        cases: Vec<GoldenCase>,
    }
    let golden: Golden = serde_json::from_str(include_str!("testdata/vidur_golden.json")).unwrap();
    assert_eq!(golden.cases.len(), 9);
    let mut total_restarts = 0;
    for (case_no, case) in golden.cases.iter().enumerate() {
        let mut s = ReplicaScheduler::new(&case.cfg, case.num_blocks, case.stages).unwrap();
        let mut formed = Vec::new();
        let mut in_flight = VecDeque::new();
        let (mut next, mut step_no) = (0, 0);
        loop {
            while next < case.requests.len() && case.requests[next].0 <= step_no {
                let (at, p, d) = case.requests[next];
                s.add_request(spec(next as u64, at, p, d)).unwrap();
                next += 1;
            }
            while let Some(batch) = s.schedule() {
                let ids = batch.entries.iter().map(|e| e.request_id).collect();
                let tokens = batch.entries.iter().map(|e| e.num_tokens).collect();
                formed.push((ids, tokens, batch.num_kv_blocks_used));
                in_flight.push_back(batch);
            }
            if let Some(batch) = in_flight.pop_front() {
                s.on_batch_end(&batch);
            } else if next < case.requests.len() {
                step_no = case.requests[next].0;
                continue;
            } else {
                break;
            }
            step_no += 1;
        }
        for (i, (ours, vidurs)) in formed.iter().zip(&case.batches).enumerate() {
            assert_eq!(
                ours, vidurs,
                "case {case_no} ({:?}), batch {i}",
                case.cfg.policy
            );
        }
        assert_eq!(formed.len(), case.batches.len(), "case {case_no}");
        let restarts: Vec<u32> = (0..case.requests.len() as u64)
            .map(|id| s.num_preemptions(id).unwrap())
            .collect();
        assert_eq!(restarts, case.restarts, "case {case_no}");
        assert!(s.is_idle());
        total_restarts += restarts.iter().sum::<u32>();
    }
    assert_eq!(total_restarts, 864);
}
