//! Independent, named random streams derived from one workload seed.
//!
//! Every random decision of the workload stage draws from its own stream, keyed by a domain
//! name and an index (a prompt id, say). Changing the interval generator therefore leaves the
//! lengths untouched, and prompt 17 is the same text whether 20 or 20 000 prompts are built,
//! in whatever order. The key is hashed with SHA-256 into a full 256-bit ChaCha8 seed, so
//! nearby seeds or indices give unrelated streams.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// Stream for request lengths (prefill/decode token counts, trace row shuffles).
pub const LENGTHS_STREAM: &str = "lengths";
/// Stream for the Zipf generator's scrambling permutation.
pub const ZIPF_SCRAMBLE_STREAM: &str = "lengths.zipf_scramble";
/// Stream for inter-arrival gaps.
pub const INTERVALS_STREAM: &str = "intervals";
/// Stream for one prompt's text; the index is the prompt id.
pub const PROMPT_STREAM: &str = "prompt";

/// Returns the random stream `(domain, index)` of the workload seeded with `seed`.
pub fn derive_rng(seed: u64, domain: &str, index: u64) -> ChaCha8Rng {
    let mut hasher = Sha256::new();
    // Domain separation: a fixed tag, then length-prefixed fields, so that no two distinct
    // (domain, seed, index) triples can produce the same byte string.
    hasher.update(b"simreal.workloads.rng.v1");
    hasher.update((domain.len() as u64).to_le_bytes());
    hasher.update(domain.as_bytes());
    hasher.update(seed.to_le_bytes());
    hasher.update(index.to_le_bytes());
    let digest = hasher.finalize();
    let mut key = [0u8; 32];
    key.copy_from_slice(&digest);
    ChaCha8Rng::from_seed(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn first_draws(mut rng: ChaCha8Rng) -> Vec<u64> {
        (0..4).map(|_| rng.random::<u64>()).collect()
    }

    #[test]
    fn same_key_same_stream() {
        assert_eq!(
            first_draws(derive_rng(42, LENGTHS_STREAM, 0)),
            first_draws(derive_rng(42, LENGTHS_STREAM, 0))
        );
    }

    #[test]
    fn any_key_change_gives_another_stream() {
        let base = first_draws(derive_rng(42, LENGTHS_STREAM, 0));
        assert_ne!(base, first_draws(derive_rng(43, LENGTHS_STREAM, 0)));
        assert_ne!(base, first_draws(derive_rng(42, INTERVALS_STREAM, 0)));
        assert_ne!(base, first_draws(derive_rng(42, LENGTHS_STREAM, 1)));
    }
}
