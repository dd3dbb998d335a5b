//! Thread count and memory facts of the process running the model.
//!
//! candle's CPU kernels and our own parallel kernels run on rayon's global pool, and candle
//! sizes its matmul parallelism from `RAYON_NUM_THREADS`; both are fixed here once, before
//! any tensor work, so a run uses exactly `hardware.cpu_threads` threads.

use crate::{Error, Result};

/// Fixes the worker thread count for this process. Calling it again with the same count is
/// a no-op; with a different count it is an error (rayon's global pool cannot be resized).
pub fn init(num_threads: usize) -> Result<()> {
    if num_threads == 0 {
        return Err(Error::config("hardware.cpu_threads", "must be positive"));
    }
    if std::env::var("RAYON_NUM_THREADS").ok().as_deref() != Some(&num_threads.to_string()) {
        // Only this thread runs at this point of a stage; the variable is read by candle later.
        std::env::set_var("RAYON_NUM_THREADS", num_threads.to_string());
    }
    match rayon::ThreadPoolBuilder::new()
        .num_threads(num_threads)
        .build_global()
    {
        Ok(()) => Ok(()),
        Err(_) if rayon::current_num_threads() == num_threads => Ok(()),
        Err(_) => Err(Error::InvalidInput(format!(
            "the thread pool already runs {} threads; cannot switch to {num_threads} in this process",
            rayon::current_num_threads()
        ))),
    }
}

/// Threads of the global pool.
pub fn current() -> usize {
    rayon::current_num_threads()
}

/// Peak resident set size of this process (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}
