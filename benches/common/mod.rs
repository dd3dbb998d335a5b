//! What the benchmarks share.

use anyhow::{Context, Result};

/// A count from the environment variable `name`, or `default` when it is unset.
pub fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v} is not a count")),
        Err(_) => Ok(default),
    }
}
