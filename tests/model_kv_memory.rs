//! The KV pool is lazily zeroed: resident memory follows the blocks written, not the pool size,
//! until a serving engine maps the blocks it will use before it serves.
//! (Its own test binary, so no other test allocates while RSS is being read.)

#![cfg(feature = "engine")]

use candle_core::{DType, Device};
use simreal::real_bench::model::*;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS")).unwrap();
    let kb: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb / 1024.0
}

#[test]
fn a_large_pool_costs_only_the_blocks_written() {
    if !std::path::Path::new("/proc/self/status").exists() {
        return; // RSS is read from Linux's procfs
    }
    let cfg = Qwen3Config::tiny();
    let model = Qwen3Model::load(
        &WeightSource::Random {
            seed: 1,
            config: cfg.clone(),
        },
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    // 2 layers × K,V × 2 kv heads × 16 dims × 4 bytes = 512 bytes per token slot:
    // 65,536 blocks of 32 slots span 1 GiB.
    let before = rss_mib();
    let mut cache = model.new_kv_cache(65_536, 32).unwrap();
    assert_eq!(cache.capacity_bytes(), 1 << 30);
    let allocated = rss_mib();
    assert!(
        allocated - before < 64.0,
        "allocating grew RSS by {:.0} MiB",
        allocated - before
    );

    // Writing 100 tokens into blocks spread over the pool touches only their pages.
    let ids: Vec<u32> = (0..100).collect();
    let table = [5usize, 20_000, 40_000, 65_535];
    let seq = SequenceInput {
        token_ids: &ids,
        num_cached_tokens: 0,
        block_table: &table,
        wants_logits: true,
    };
    model.forward_seqs(&[seq], &mut cache, None).unwrap();
    let used = rss_mib();
    assert!(
        used - before < 64.0,
        "a 100-token forward grew RSS by {:.0} MiB",
        used - before
    );

    // Mapping every block up front makes the whole 1 GiB resident and keeps the cached K/V:
    // a decode that reads the 100 cached tokens gives the same logits before and after.
    let decode = SequenceInput {
        token_ids: &[7],
        num_cached_tokens: 100,
        block_table: &table,
        wants_logits: true,
    };
    let logits_before = model.forward_seqs(&[decode], &mut cache, None).unwrap();
    // Half the blocks: a prefix of every layer's buffers, so half the pool.
    cache.map_blocks(cache.num_blocks() / 2);
    let half = rss_mib() - before;
    assert!(
        (400.0..700.0).contains(&half),
        "mapping half the pool grew RSS by {half:.0} MiB"
    );
    cache.map_blocks(cache.num_blocks());
    let mapped = rss_mib();
    assert!(
        mapped - before > 1000.0,
        "mapping the pool grew RSS by only {:.0} MiB",
        mapped - before
    );
    let logits_after = model.forward_seqs(&[decode], &mut cache, None).unwrap();
    let diff = (logits_before - logits_after)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0, "mapping the pool changed the cached K/V");
}
