//! Thread count, allocator policy and memory facts of the process running the model.
//!
//! candle's CPU kernels and our own parallel kernels run on rayon's global pool, and candle
//! sizes its matmul parallelism from `RAYON_NUM_THREADS`; both are fixed here once, before
//! any tensor work, so a run uses exactly `hardware.cpu_threads` threads.

use crate::{Error, Result};

/// Fixes the worker thread count for this process and keeps freed tensor buffers for reuse
/// (see [`keep_freed_buffers`]). Calling it again with the same count is a no-op; with a
/// different count it is an error (rayon's global pool cannot be resized).
pub fn init(num_threads: usize) -> Result<()> {
    if num_threads == 0 {
        return Err(Error::config("hardware.cpu_threads", "must be positive"));
    }
    keep_freed_buffers();
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

/// Every op of a forward allocates its output and frees it an op or two later. glibc serves
/// buffers above its mmap threshold (128 KiB at first, so a prefill chunk's activations) with
/// fresh mappings that fault in every page on first write, and hands them back on free; a
/// 455-token iteration's residual adds spent a third of their time there. Raising the
/// threshold and the trim threshold keeps freed buffers in the heap for the next iteration,
/// as a GPU engine's caching allocator does. The profiler calls this too, so both measure
/// the same allocator.
fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // Older glibc refuse thresholds above 32 MiB on 64-bit; a 512-token chunk of Qwen3-8B
        // needs 25 MiB per activation at most.
        const MMAP_THRESHOLD_BYTES: libc::c_int = 32 << 20;
        const TRIM_THRESHOLD_BYTES: libc::c_int = libc::c_int::MAX;
        // SAFETY: mallopt only changes malloc's tuning parameters; called before the model
        // allocates. A rejected value (return 0) leaves glibc's default, which is still correct.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
        }
    }
}

/// Threads of the global pool.
pub fn current() -> usize {
    rayon::current_num_threads()
}

/// Starts a new peak for [`peak_rss_bytes`] (Linux `clear_refs`), so that a stage run after
/// another in the same process (the `pipeline` binary) reports its own peak, not the
/// earlier stage's. Best effort: elsewhere the peak stays the process's.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size of this process (Linux `VmHWM`) since the last
/// [`reset_peak_rss`], if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Minor page faults of the calling thread so far.
    fn minor_faults() -> i64 {
        // SAFETY: `getrusage` fills the zeroed struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) },
            0
        );
        usage.ru_minflt
    }

    #[test]
    fn freed_activation_sized_buffers_are_reused_without_page_faults() {
        keep_freed_buffers();
        // 8 MiB: a 512-token chunk's MLP activation of a 4096-wide model, far above glibc's
        // default 128 KiB mmap threshold; each fresh mapping would fault in 2,048 pages.
        let cycle = || std::hint::black_box(vec![1u8; 8 << 20]).len();
        cycle();
        let before = minor_faults();
        for _ in 0..20 {
            cycle();
        }
        let faults = minor_faults() - before;
        assert!(
            faults < 500,
            "20 allocate-write-free cycles took {faults} page faults"
        );
    }

    #[test]
    fn peak_rss_restarts_after_a_reset() {
        // 512 MiB, written so that it is resident, then returned to the OS (far above any
        // mmap threshold). Other tests of this binary allocate at most a few MiB.
        let big = std::hint::black_box(vec![1u8; 512 << 20]);
        drop(big);
        let before = peak_rss_bytes().expect("VmHWM is readable on Linux");
        reset_peak_rss();
        let after = peak_rss_bytes().expect("VmHWM is readable on Linux");
        assert!(
            after + (256 << 20) < before,
            "peak {before} bytes before the reset, {after} after"
        );
    }
}
