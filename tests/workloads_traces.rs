//! Generators driven by the bundled Azure/Vidur trace sample, checked against numbers
//! computed independently in Python (a line-by-line replica of Vidur's pandas code, and
//! numpy's default percentiles) on `assets/traces/splitwise_conv_sample.csv`.

use std::path::PathBuf;

use simreal::workloads::{
    generate_arrivals_ns, generate_lengths, replay_trace, IntervalsConfig, LengthsConfig,
    RequestLengths, TraceReplayConfig,
};
use simreal::Error;

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/traces/splitwise_conv_sample.csv")
}

fn replay_config() -> TraceReplayConfig {
    TraceReplayConfig {
        trace_file: sample(),
        time_scale_factor: 1.0,
        prefill_scale_factor: 1.0,
        decode_scale_factor: 1.0,
    }
}

#[test]
fn replaying_the_sample_matches_vidur() {
    let workload = replay_trace(&replay_config(), None, 4096).unwrap();
    assert_eq!(workload.len(), 500);
    let prefill: u64 = workload
        .lengths
        .iter()
        .map(|l| u64::from(l.num_prefill_tokens))
        .sum();
    let decode: u64 = workload
        .lengths
        .iter()
        .map(|l| u64::from(l.num_decode_tokens))
        .sum();
    // Python: 23 of the 500 prompts are shortened; totals after clipping to 4096.
    assert_eq!((prefill, decode), (466_664, 132_536));
    assert!(workload.lengths.iter().all(|l| l.total_tokens() <= 4096));

    // A 2048-token context clips 33 prompts; outputs are never touched.
    let small = replay_trace(&replay_config(), None, 2048).unwrap();
    let prefill: u64 = small
        .lengths
        .iter()
        .map(|l| u64::from(l.num_prefill_tokens))
        .sum();
    assert_eq!(prefill, 415_008);
    let clipped = small
        .lengths
        .iter()
        .zip(&workload.lengths)
        .filter(|(a, b)| a != b)
        .count();
    // Every prompt clipped at 4096 is clipped further at 2048.
    assert_eq!(clipped, 33);

    // numpy: P min/p50/p90/max/mean = 2/998/1314/4069/933.328; D = 12/217/429/652/265.072;
    // 499 gaps over 129.012474 s.
    let summary = workload.summary().unwrap();
    let p = summary.prefill_tokens;
    assert_eq!((p.min, p.p50, p.p90, p.max), (2, 998.0, 1314.0, 4069));
    assert!((p.mean - 933.328).abs() < 1e-9);
    let d = summary.decode_tokens;
    assert_eq!((d.min, d.p50, d.p90, d.max), (12, 217.0, 429.0, 652));
    assert!((d.mean - 265.072).abs() < 1e-9);
    assert_eq!(summary.duration_ns, 129_012_474_000);
    assert!((summary.mean_rate_rps.unwrap() - 3.867_843_042_836_307_5).abs() < 1e-9);
}

#[test]
fn trace_interval_generator_reads_the_same_arrivals() {
    let workload = replay_trace(&replay_config(), Some(200), 4096).unwrap();
    let config = IntervalsConfig::Trace {
        trace_file: sample(),
        time_scale_factor: 1.0,
    };
    // qps is ignored by the trace generator.
    assert_eq!(
        generate_arrivals_ns(&config, 123.0, 200, 0).unwrap(),
        workload.arrivals_ns
    );
    assert_eq!(workload.inter_arrivals_ns()[1], 4_314_579_000);
}

#[test]
fn trace_length_generator_shuffles_and_clips_proportionally() {
    let config = LengthsConfig::Trace {
        trace_file: sample(),
        prefill_scale_factor: 0.5,
        decode_scale_factor: 2.0,
    };
    let lengths = generate_lengths(&config, 500, 42, 1024).unwrap();
    // Python (Vidur's proportional rule): sums over all 500 rows, and 283 requests end up
    // within one token of the 1024-token context.
    let prefill: u64 = lengths
        .iter()
        .map(|l| u64::from(l.num_prefill_tokens))
        .sum();
    let decode: u64 = lengths.iter().map(|l| u64::from(l.num_decode_tokens)).sum();
    assert_eq!((prefill, decode), (174_164, 212_416));
    assert_eq!(
        lengths.iter().filter(|l| l.total_tokens() >= 1023).count(),
        283
    );
    assert!(lengths.iter().all(|l| l.total_tokens() <= 1024));
    // Row 2221 + 15 becomes 1110 + 30, over by 116: -113 and -4 -> 997 + 26.
    assert!(lengths.contains(&RequestLengths {
        num_prefill_tokens: 997,
        num_decode_tokens: 26
    }));

    // Shuffled with the seed: same seed same order, another seed another order, same rows.
    assert_eq!(lengths, generate_lengths(&config, 500, 42, 1024).unwrap());
    let mut other = generate_lengths(&config, 500, 43, 1024).unwrap();
    assert_ne!(lengths, other);
    let mut sorted = lengths.clone();
    sorted.sort_by_key(|l| (l.num_prefill_tokens, l.num_decode_tokens));
    other.sort_by_key(|l| (l.num_prefill_tokens, l.num_decode_tokens));
    assert_eq!(sorted, other);

    // Fewer requests take a prefix of the same shuffle; more than the trace holds fail.
    assert_eq!(
        generate_lengths(&config, 10, 42, 1024).unwrap(),
        lengths[..10]
    );
    assert!(matches!(
        generate_lengths(&config, 501, 42, 1024).unwrap_err(),
        Error::OutOfRange(_)
    ));
}
