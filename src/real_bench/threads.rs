//! Thread count, allocator policy and memory facts of the process running the model.
//!
//! candle's CPU kernels and our own parallel kernels run on rayon's global pool, and candle
//! sizes its matmul parallelism from `RAYON_NUM_THREADS`; both are fixed here once, before
//! any tensor work, so a run uses exactly `hardware.cpu_threads` threads.

use std::path::{Path, PathBuf};

use super::huge_pages;
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

pub use crate::config::types::{Priority, TimingSettings};

/// What [`apply_timing`] could do (each part needs permissions a machine may refuse).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AppliedTiming {
    pub requested: TimingSettings,
    /// Threads (pool workers and the caller) now in the requested priority.
    pub prioritized_threads: usize,
    /// Whether the session's autogroup was given nice −20 (`elevated` only).
    pub autogroup_elevated: bool,
    /// Whether the kernel's real-time throttling is off while the stage runs (`realtime`
    /// with `lift_rt_throttling` only; see [`lift_rt_throttling`]).
    pub rt_throttling_lifted: bool,
    /// Pool workers pinned to one CPU each.
    pub pinned_threads: usize,
    pub memory_locked: bool,
    /// Bytes of weights, KV pool and probe window put on huge pages (`huge_pages` only;
    /// counted as the buffers are allocated, so after the model and its cache exist).
    pub huge_page_bytes: u64,
    /// Why a requested part did not apply.
    pub refused: Vec<String>,
}

/// The settings [`apply_timing`] applied; dropping it restores the process as it was, so
/// that the stages after a timed one (in the `pipeline` binary) run as usual.
#[derive(Debug)]
pub struct TimingGuard {
    applied: AppliedTiming,
    /// The session autogroup's nice before, to write back.
    autogroup_nice_before: Option<i32>,
    /// The real-time runtime limit before it was lifted, to write back.
    rt_runtime_before_us: Option<i64>,
    /// The CPUs the workers could use before pinning.
    cpus_before: Option<Vec<usize>>,
    /// Where the huge-page counts stood when this stage asked for huge pages.
    huge_pages_since: Option<huge_pages::Mark>,
}

impl TimingGuard {
    /// What was applied and what was refused, huge pages included as far as the buffers
    /// allocated so far.
    pub fn applied(&self) -> AppliedTiming {
        let mut applied = self.applied.clone();
        if let Some(mark) = self.huge_pages_since {
            let (bytes, refused) = huge_pages::since(mark);
            applied.huge_page_bytes = bytes;
            applied
                .refused
                .extend(refused.map(|why| format!("huge pages: {why}")));
        }
        applied
    }
}

impl Drop for TimingGuard {
    fn drop(&mut self) {
        if self.applied.prioritized_threads > 0 {
            rayon::broadcast(|_| set_normal_priority());
            set_normal_priority();
        }
        if let Some(nice) = self.autogroup_nice_before {
            let _ = std::fs::write(AUTOGROUP, nice.to_string());
        }
        if let Some(runtime_us) = self.rt_runtime_before_us {
            restore_rt_throttling(runtime_us);
        }
        if let Some(cpus) = &self.cpus_before {
            rayon::broadcast(|_| set_affinity(cpus));
        }
        if self.huge_pages_since.is_some() {
            huge_pages::unwant();
        }
        if self.applied.memory_locked {
            // SAFETY: munlockall only changes how pages are kept.
            #[cfg(target_os = "linux")]
            unsafe {
                libc::munlockall()
            };
        }
    }
}

/// Applies `settings` to the calling thread and every worker of rayon's global pool
/// ([`init`] first). Best effort: what the machine refuses is reported in
/// [`AppliedTiming::refused`] (and on stderr), and the stages record it in `run_meta.json`.
pub fn apply_timing(settings: &TimingSettings) -> TimingGuard {
    let mut guard = TimingGuard {
        applied: AppliedTiming {
            requested: *settings,
            prioritized_threads: 0,
            autogroup_elevated: false,
            rt_throttling_lifted: false,
            pinned_threads: 0,
            memory_locked: false,
            huge_page_bytes: 0,
            refused: Vec::new(),
        },
        autogroup_nice_before: None,
        rt_runtime_before_us: None,
        cpus_before: None,
        huge_pages_since: None,
    };
    let applied = &mut guard.applied;
    let set: Option<fn() -> std::result::Result<(), String>> = match settings.priority {
        Priority::Normal => None,
        Priority::Elevated => Some(|| set_nice(ELEVATED_NICE)),
        Priority::Realtime => Some(set_realtime),
    };
    if let Some(set) = set {
        let mut results = rayon::broadcast(|_| set());
        results.push(set());
        applied.prioritized_threads = results.iter().filter(|r| r.is_ok()).count();
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            applied
                .refused
                .push(format!("{:?} priority: {e}", settings.priority));
        }
    }
    if settings.priority == Priority::Realtime
        && settings.lift_rt_throttling
        && applied.prioritized_threads > 0
    {
        match lift_rt_throttling() {
            Ok(before) => {
                applied.rt_throttling_lifted = true;
                guard.rt_runtime_before_us = before;
            }
            Err(e) => applied
                .refused
                .push(format!("lifting real-time throttling: {e}")),
        }
    }
    if settings.priority == Priority::Elevated {
        // With autogroup, nice only weighs threads against their own session's: the
        // session's group needs the weight too.
        if let Some(before) = autogroup_nice() {
            match std::fs::write(AUTOGROUP, ELEVATED_NICE.to_string()) {
                Ok(()) => {
                    applied.autogroup_elevated = true;
                    guard.autogroup_nice_before = Some(before);
                }
                Err(e) => applied.refused.push(format!("autogroup nice: {e}")),
            }
        }
    }
    if settings.pin_threads {
        match allowed_cpus() {
            Ok(cpus) if !cpus.is_empty() => {
                let results =
                    rayon::broadcast(|ctx| set_affinity(&[cpus[ctx.index() % cpus.len()]]));
                applied.pinned_threads = results.iter().filter(|r| r.is_ok()).count();
                if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
                    applied.refused.push(format!("pinning: {e}"));
                }
                guard.cpus_before = Some(cpus);
            }
            Ok(_) => applied.refused.push("pinning: no CPU allowed".into()),
            Err(e) => applied.refused.push(format!("pinning: {e}")),
        }
    }
    if settings.lock_memory {
        match lock_all_memory() {
            Ok(()) => applied.memory_locked = true,
            Err(e) => applied.refused.push(format!("memory lock: {e}")),
        }
    }
    if settings.huge_pages {
        guard.huge_pages_since = Some(huge_pages::want());
    }
    for why in &applied.refused {
        eprintln!("timing: not applied: {why}");
    }
    guard
}

/// The kernel's real-time bandwidth: µs per period (`sched_rt_period_us`, 1 s) that
/// real-time threads may run on a CPU; `-1` is no limit.
const RT_RUNTIME: &str = "/proc/sys/kernel/sched_rt_runtime_us";
/// The first kernel with the fair server, which keeps ordinary processes running beside
/// real-time ones by itself (5 % of each CPU while they are runnable).
const FAIR_SERVER_KERNEL: (u32, u32) = (6, 12);

/// Lifts the kernel's real-time throttling; returns the limit to restore (`None`: there was
/// none, or another live process lifted it). The default limit (950 ms of each second)
/// pauses real-time threads that work without a break for 50 ms once a second: the real
/// engine serving a queue does, the profiler (idle 10 % between forwards) does not, so every
/// op of a busy run measured up to 5 % slower than its profile, in 50 ms lumps. Only on
/// kernels with the fair server, which still gives ordinary processes their share when they
/// want it; without it the limit is all that does, and it stays.
///
/// The limit is machine-wide, so the value to restore is also left in [`rt_marker`]: a stage
/// killed before it could restore it leaves the marker of a dead process, and the next one
/// restores that value when it ends. (A stage killed while no other timed stage follows
/// leaves the limit lifted until one runs.)
fn lift_rt_throttling() -> std::result::Result<Option<i64>, String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_err(|e| format!("kernel release unknown: {e}"))?;
    if kernel_version(&release).is_none_or(|v| v < FAIR_SERVER_KERNEL) {
        return Err(format!(
            "kernel {} predates the fair server ({}.{}), so the limit is what keeps other processes running",
            release.trim(),
            FAIR_SERVER_KERNEL.0,
            FAIR_SERVER_KERNEL.1
        ));
    }
    let text = std::fs::read_to_string(RT_RUNTIME).map_err(|e| format!("{RT_RUNTIME}: {e}"))?;
    let before: i64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{RT_RUNTIME} holds `{}`", text.trim()))?;
    let marker = std::fs::read_to_string(rt_marker()).ok();
    let marked = marker.as_deref().and_then(|m| {
        let (pid, runtime_us) = m.trim().split_once(' ')?;
        Some((pid.parse::<u32>().ok()?, runtime_us.parse::<i64>().ok()?))
    });
    let before = match marked {
        // Lifted by a stage still running: it restores the limit when it ends.
        Some((pid, _)) if before < 0 && Path::new(&format!("/proc/{pid}")).exists() => {
            return Ok(None)
        }
        // Lifted by a stage that was killed: its value is the one to restore.
        Some((_, runtime_us)) if before < 0 => runtime_us,
        _ if before < 0 => return Ok(None),
        _ => before,
    };
    std::fs::write(rt_marker(), format!("{} {before}", std::process::id()))
        .map_err(|e| format!("{}: {e}", rt_marker().display()))?;
    if let Err(e) = std::fs::write(RT_RUNTIME, "-1") {
        if marker_is_ours() {
            let _ = std::fs::remove_file(rt_marker());
        }
        return Err(format!("{RT_RUNTIME}: {e}"));
    }
    Ok(Some(before))
}

/// Puts the real-time limit back and removes [`rt_marker`] — unless another stage's marker
/// replaced ours (it lifted the limit while we ran and restores it when it ends; removing
/// its marker here would leave the limit lifted for good if that stage is then killed).
fn restore_rt_throttling(runtime_us: i64) {
    if std::fs::read_to_string(rt_marker()).is_ok() && !marker_is_ours() {
        return;
    }
    let _ = std::fs::write(RT_RUNTIME, runtime_us.to_string());
    let _ = std::fs::remove_file(rt_marker());
}

/// Whether [`rt_marker`] names this process.
fn marker_is_ours() -> bool {
    std::fs::read_to_string(rt_marker())
        .is_ok_and(|m| m.split_whitespace().next() == Some(&std::process::id().to_string()))
}

/// Where a stage that lifted the real-time limit leaves `<pid> <limit before>`.
fn rt_marker() -> PathBuf {
    std::env::temp_dir().join("simreal-rt-runtime-before")
}

/// `(major, minor)` of a kernel release string (`6.18.44-fc-v1252`).
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The nice value of [`Priority::Elevated`].
const ELEVATED_NICE: i32 = -20;
/// The session's autogroup (Linux with `CONFIG_SCHED_AUTOGROUP`).
const AUTOGROUP: &str = "/proc/self/autogroup";

/// The session autogroup's nice (`/autogroup-2 nice 0`), where the kernel has autogroups
/// and they are enabled.
fn autogroup_nice() -> Option<i32> {
    let enabled = std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled").ok()?;
    if enabled.trim() != "1" {
        return None;
    }
    std::fs::read_to_string(AUTOGROUP)
        .ok()?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// Sets the calling thread's nice value.
fn set_nice(nice: i32) -> std::result::Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority with a thread id changes only
        // that thread's nice value.
        let tid = unsafe { libc::gettid() };
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) } == 0 {
            Ok(())
        } else {
            Err(last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = nice;
        Err("only supported on Linux".into())
    }
}

/// Back to the time-sharing class at nice 0 (best effort).
fn set_normal_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is valid for SCHED_OTHER.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
    }
    let _ = set_nice(0);
}

#[cfg(target_os = "linux")]
fn last_os_error() -> String {
    std::io::Error::last_os_error().to_string()
}

/// Moves the calling thread into `SCHED_RR` at the lowest real-time priority.
fn set_realtime() -> std::result::Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sched_get_priority_min has no preconditions.
        let lowest = unsafe { libc::sched_get_priority_min(libc::SCHED_RR) };
        let param = libc::sched_param {
            sched_priority: lowest.max(1),
        };
        // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) } == 0 {
            Ok(())
        } else {
            Err(last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    Err("only supported on Linux".into())
}

/// The CPUs the process may run on, ascending.
fn allowed_cpus() -> std::result::Result<Vec<usize>, String> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a zeroed cpu_set_t is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is this thread.
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        if rc != 0 {
            return Err(last_os_error());
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            // SAFETY: `cpu` is below CPU_SETSIZE.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect())
    }
    #[cfg(not(target_os = "linux"))]
    Err("only supported on Linux".into())
}

/// Lets the calling thread run only on `cpus`.
fn set_affinity(cpus: &[usize]) -> std::result::Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a zeroed cpu_set_t is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            // SAFETY: `cpu` is below CPU_SETSIZE.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is this thread.
        let rc =
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if rc == 0 {
            Ok(())
        } else {
            Err(last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpus;
        Err("only supported on Linux".into())
    }
}

/// `mlockall(MCL_CURRENT | MCL_FUTURE)`.
fn lock_all_memory() -> std::result::Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: mlockall only changes how pages are kept; failure leaves memory as it was.
        if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } == 0 {
            Ok(())
        } else {
            Err(last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    Err("only supported on Linux".into())
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
    fn kernel_versions_are_read_from_release_strings() {
        assert_eq!(kernel_version("6.18.44-fc-v1252\n"), Some((6, 18)));
        assert_eq!(kernel_version("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(kernel_version("6.12-rc1"), Some((6, 12)));
        assert_eq!(kernel_version("linux"), None);
        assert!(kernel_version("5.15.0").unwrap() < FAIR_SERVER_KERNEL);
        assert!(kernel_version("6.12.1").unwrap() >= FAIR_SERVER_KERNEL);
    }

    /// Where the limit may be written (root on a 6.12+ kernel): lifted, then restored to what
    /// it was, also after a stage that lifted it was killed; elsewhere a refusal that says
    /// why. Restores the machine's limit either way.
    #[test]
    fn the_real_time_limit_is_lifted_and_restored_even_after_a_killed_stage() {
        let read = || -> Option<i64> {
            std::fs::read_to_string(RT_RUNTIME)
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let before = read();
        match (lift_rt_throttling(), before) {
            (Ok(Some(limit)), Some(before)) => {
                assert_eq!((limit, read()), (before, Some(-1)));
                let marker = std::fs::read_to_string(rt_marker()).unwrap();
                assert_eq!(marker, format!("{} {before}", std::process::id()));
                restore_rt_throttling(limit);
                assert_eq!(read(), Some(before));
                assert!(!rt_marker().exists());
                // Another stage lifted it after us (pid 1 is always alive): it restores the
                // limit, and its marker stays for the case it is killed.
                std::fs::write(rt_marker(), format!("1 {before}")).unwrap();
                std::fs::write(RT_RUNTIME, "-1").unwrap();
                restore_rt_throttling(before);
                let left = (read(), std::fs::read_to_string(rt_marker()).ok());
                std::fs::write(RT_RUNTIME, before.to_string()).unwrap();
                std::fs::remove_file(rt_marker()).unwrap();
                assert_eq!(left, (Some(-1), Some(format!("1 {before}"))));
                // A stage killed while the limit was lifted: no process has this pid.
                std::fs::write(rt_marker(), format!("{} {before}", u32::MAX)).unwrap();
                std::fs::write(RT_RUNTIME, "-1").unwrap();
                let recovered = lift_rt_throttling();
                restore_rt_throttling(before);
                assert_eq!(recovered, Ok(Some(before)));
                assert_eq!(read(), Some(before));
            }
            (Ok(None), Some(before)) => assert!(before < 0, "{before}"),
            (Err(e), _) => assert!(e.contains(RT_RUNTIME) || e.contains("fair server"), "{e}"),
            (lifted, None) => panic!("{lifted:?} where {RT_RUNTIME} is unreadable"),
        }
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
