//! How fast the device is right now, measured independently of the workload.
//!
//! A [`DeviceProbe`] times two fixed kernels on every worker thread of the pool at once, one
//! memory-bound and one compute-bound, from one of two [`ProbeKernels`] sets:
//!
//! - [`ProbeKernels::Model`] (what the stages record, probe version 4): the engine's own
//!   kernels on fixed operands — its decode projection (the small-m kernel at one row) over a
//!   64 MiB weight window flushed from the caches first, as a decode step streams its
//!   weights, and its prefill GEMM on operands that stay in the caches. A probe then slows
//!   down when, and as much as, the engine's own projections do.
//! - [`ProbeKernels::Synthetic`] (probe version 3): a plain read of the 64 MiB window and
//!   independent FMA chains on registers. The FMA chains miss what a GEMM shares with a
//!   neighbour (caches, load ports): they moved 2 % where the prefill forwards and the GEMM
//!   probe slowed by 8–10 % (`benches/results/probe_tracking.md`); the read tracked decode no
//!   better than the projection does. Kept for the benches that compare the two and for the
//!   FMA peak the engine bench reports (docs/ground_truth.md, section 2).
//!
//! Each kernel takes a few milliseconds; a probe runs them five times, interleaved, and keeps
//! the medians (about 40 ms in all). Kernels, sizes and repeat count are fixed per version
//! ([`ProbeKernels::version`]), so probe rates from different runs, processes and commits of
//! one version compare directly; rates of different versions do not. A *quick* probe
//! ([`DeviceProbe::measure_quick`], since version 5) is one repeat of the memory kernel, a
//! millisecond or two, taken between iterations several times a second: the host's memory
//! bandwidth switches between states within seconds, faster than idle gaps come.
//!
//! Each thread times its own share ([`ThreadSpan`]). A repeat whose threads did not run
//! together — one started late or was descheduled midway, so the broadcast took much longer
//! than any one thread computed — measured the host's scheduler, not the device, and is left
//! out of the median ([`RepeatTiming::kept`]); a kernel with too few repeats left is marked
//! unusable ([`crate::io::records::probe_kind_usable`]) and the speed correction skips it.
//!
//! Also here: the host's CPU time stolen by the hypervisor ([`HostCpuTimes`], from
//! `/proc/stat`) and the process's own CPU time ([`process_cpu_time_ns`]), which the real
//! engine records per iteration next to wall time.

use std::time::Instant;

use super::huge_pages::{self, Contents};
use crate::io::records::{probe_kind_usable, DEVICE_SPEED_PROBE_VERSION};
use crate::real_bench::model::kernels::{gemm, linear, Isa};
use crate::{Error, Result};

/// Which kernels a probe times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKernels {
    /// A plain read of the memory window and FMA chains on registers (version 3).
    Synthetic,
    /// The engine's decode projection over the memory window and its prefill GEMM on
    /// cache-resident operands (version 4).
    Model,
}

impl ProbeKernels {
    /// What the timed stages record.
    pub const STAGES: ProbeKernels = ProbeKernels::Model;

    /// Version of the kernels and sizes, recorded with every probe; probes of different
    /// versions do not compare. 3: a repeat's time is its slowest thread's own span (was the
    /// whole broadcast's), and repeats whose threads did not run together are left out of the
    /// median. 4: the engine's own kernels ([`ProbeKernels::Model`]). 5: quick probes between
    /// iterations ([`DeviceProbe::measure_quick`]).
    pub fn version(self) -> u32 {
        match self {
            ProbeKernels::Synthetic => 3,
            ProbeKernels::Model => DEVICE_SPEED_PROBE_VERSION,
        }
    }

    /// FLOP of one thread's compute kernel.
    pub fn flops_per_thread(self) -> u64 {
        match self {
            ProbeKernels::Synthetic => {
                COMPUTE_ITERATIONS_PER_THREAD * (COMPUTE_CHAINS * COMPUTE_LANES * 2) as u64
            }
            ProbeKernels::Model => 2 * (GEMM_ROWS * GEMM_COLUMNS_PER_THREAD * GEMM_DEPTH) as u64,
        }
    }
}

/// Bytes each memory probe reads.
const MEMORY_WINDOW_BYTES: usize = 64 << 20;
/// Input features of the model kernels' operands (Qwen3-0.6B's hidden size): the memory
/// window is `[rows, GEMM_DEPTH]` weights for the decode projection.
const GEMM_DEPTH: usize = 1024;
/// Rows of the prefill GEMM's input (one prefill chunk), shared by the threads.
const GEMM_ROWS: usize = 256;
/// Output columns of each thread's own GEMM weights: `[384, 1024]` f32 (1.5 MiB) plus the
/// shared 1 MiB input stay in the caches, so the kernel times the FMA units and the caches,
/// about 2 ms a thread here.
const GEMM_COLUMNS_PER_THREAD: usize = 384;
/// FMA-chain iterations per thread of each synthetic compute probe (12 chains of 8 lanes).
const COMPUTE_ITERATIONS_PER_THREAD: u64 = 1_000_000;
/// Independent FMA chains: enough to cover the FMA latency on two ports.
const COMPUTE_CHAINS: usize = 12;
/// Lanes per chain (one AVX2 register of f32).
const COMPUTE_LANES: usize = 8;
/// Timed repeats of each kernel per probe; the median is kept.
pub const PROBE_REPEATS: usize = 5;
/// A repeat is kept when its threads' joint span (first start to last end) is at most this
/// many times the longest time any one thread ran. Each thread does the same work, so
/// threads that ran together give ≈ 1; one that was not scheduled for the other's whole
/// kernel gives ≈ 2 on two threads — the "half rate" that is the host's scheduler, not the
/// device. 1.25 leaves room for a thread woken a little late (a fraction of a millisecond
/// against kernels of 2–6 ms).
pub const MAX_REPEAT_SKEW: f64 = 1.25;

/// When one thread ran its share of a repeat, ns from the repeat's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadSpan {
    pub start_ns: u64,
    pub end_ns: u64,
    /// The thread's CPU time over its span, where the OS reports it (Linux): less than the
    /// span when the thread was descheduled (or its vCPU stolen) in between.
    pub cpu_ns: Option<u64>,
}

impl ThreadSpan {
    /// Its own span, ns.
    pub fn span_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// How long it actually ran, ns: its CPU time where known (at most its span), else its span.
    pub fn running_ns(&self) -> u64 {
        let span = self.span_ns();
        self.cpu_ns.map_or(span, |cpu| cpu.min(span))
    }
}

/// One repeat of a kernel as its threads saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RepeatTiming {
    /// The slowest thread's own span, ns: the repeat's time (its rate is the work ÷ this).
    pub slowest_thread_ns: u64,
    /// The threads' joint span (first start to last end) ÷ the longest time one of them ran:
    /// ≈ 1 when they ran together.
    pub skew: f64,
}

impl RepeatTiming {
    /// From each thread's span; `None` without a thread. Pure, so the rule is testable
    /// without timing anything.
    pub fn of(spans: &[ThreadSpan]) -> Option<RepeatTiming> {
        let first_start = spans.iter().map(|s| s.start_ns).min()?;
        let last_end = spans.iter().map(|s| s.end_ns).max()?;
        let slowest_thread_ns = spans.iter().map(ThreadSpan::span_ns).max()?;
        let longest_running_ns = spans.iter().map(ThreadSpan::running_ns).max()?;
        Some(RepeatTiming {
            slowest_thread_ns,
            skew: last_end.saturating_sub(first_start) as f64 / longest_running_ns.max(1) as f64,
        })
    }

    /// Whether the threads ran together ([`MAX_REPEAT_SKEW`]); only such repeats time the device.
    pub fn kept(&self) -> bool {
        self.skew <= MAX_REPEAT_SKEW
    }
}

/// One kernel's repeats summarised: the median time of those kept and how many were.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelTiming {
    /// Median [`RepeatTiming::slowest_thread_ns`] of the kept repeats (of all when none was
    /// kept, for the record; [`KernelTiming::usable`] then says not to use it), ns.
    pub median_ns: u64,
    /// Repeats kept, of [`KernelTiming::repeats`].
    pub kept_repeats: u32,
    pub repeats: u32,
    /// The largest skew over the repeats (1 = every repeat's threads ran together).
    pub max_skew: f64,
}

impl KernelTiming {
    /// No repeat at all. A pool always has a thread, so every kernel has its repeats; this
    /// only keeps the probe free of panics.
    const NONE: KernelTiming = KernelTiming {
        median_ns: 0,
        kept_repeats: 0,
        repeats: 0,
        max_skew: 1.0,
    };

    /// From the repeats; `None` without one.
    pub fn of(repeats: &[RepeatTiming]) -> Option<KernelTiming> {
        let mut kept: Vec<u64> = repeats
            .iter()
            .filter(|r| r.kept())
            .map(|r| r.slowest_thread_ns)
            .collect();
        let kept_repeats = kept.len();
        if kept.is_empty() {
            kept = repeats.iter().map(|r| r.slowest_thread_ns).collect();
        }
        kept.sort_unstable();
        Some(KernelTiming {
            median_ns: *kept.get(kept.len() / 2)?,
            kept_repeats: u32::try_from(kept_repeats).unwrap_or(u32::MAX),
            repeats: u32::try_from(repeats.len()).unwrap_or(u32::MAX),
            max_skew: repeats.iter().map(|r| r.skew).fold(1.0, f64::max),
        })
    }

    /// Whether enough repeats were kept for the median to time the device.
    pub fn usable(&self) -> bool {
        probe_kind_usable(
            Some(u64::from(self.kept_repeats)),
            Some(u64::from(self.repeats)),
        )
    }
}

/// One probe of the device: median kernel times and the rates they imply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeSample {
    /// Median time of the memory-bound kernel, ns.
    pub memory_ns: u64,
    /// Median time of the compute-bound kernel, ns.
    pub compute_ns: u64,
    /// Bytes the memory kernel read.
    pub memory_bytes: u64,
    /// Floating-point operations the compute kernel did (all threads).
    pub compute_flops: u64,
    /// How the memory kernel's repeats ran (`memory_ns` is its median).
    pub memory: KernelTiming,
    /// How the compute kernel's repeats ran (`compute_ns` is its median).
    pub compute: KernelTiming,
}

impl ProbeSample {
    /// Memory bandwidth the probe achieved, GB/s (10⁹ bytes per second).
    pub fn memory_gb_per_s(&self) -> f64 {
        self.memory_bytes as f64 / self.memory_ns.max(1) as f64
    }

    /// Compute rate the probe achieved, GFLOP/s.
    pub fn compute_gflop_per_s(&self) -> f64 {
        self.compute_flops as f64 / self.compute_ns.max(1) as f64
    }
}

/// A quick probe ([`DeviceProbe::measure_quick`]): one repeat of the memory kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuickProbeSample {
    /// Time of the memory kernel, ns.
    pub memory_ns: u64,
    /// Bytes it read.
    pub memory_bytes: u64,
    /// How its one repeat ran (usable when its threads ran together).
    pub memory: KernelTiming,
}

impl QuickProbeSample {
    /// Memory bandwidth it achieved, GB/s.
    pub fn memory_gb_per_s(&self) -> f64 {
        self.memory_bytes as f64 / self.memory_ns.max(1) as f64
    }
}

/// Bytes the memory kernel reads.
pub const PROBE_MEMORY_BYTES: u64 = MEMORY_WINDOW_BYTES as u64;

/// The probe's kernels and their operands (64 MiB of window, allocated and touched once).
pub struct DeviceProbe {
    window: Vec<f32>,
    /// The model kernels' other operands; `None`: the synthetic kernels.
    model: Option<ModelOperands>,
    threads: usize,
}

/// What the model kernels run on besides the window, and with which ISA path.
struct ModelOperands {
    isa: Isa,
    /// One decode row (`[1, GEMM_DEPTH]`).
    decode_input: Vec<f32>,
    /// The prefill chunk (`[GEMM_ROWS, GEMM_DEPTH]`), shared by the threads.
    gemm_input: Vec<f32>,
    /// Each thread's own GEMM weights (`[GEMM_COLUMNS_PER_THREAD, GEMM_DEPTH]`).
    gemm_weights: Vec<Vec<f32>>,
}

/// `len` distinct small values, so that no page is shared with another (a zero page would
/// be) and sums stay finite.
fn filled(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i + seed) % 1021) as f32 * 1e-3)
        .collect()
}

impl DeviceProbe {
    /// The stages' probe ([`ProbeKernels::STAGES`]).
    pub fn new() -> DeviceProbe {
        DeviceProbe::with_kernels(ProbeKernels::STAGES)
    }

    /// Allocates the probe's operands and runs each kernel once, so that the first sample is
    /// not a cold start. Runs on rayon's global pool, which must already be initialised
    /// ([`crate::real_bench::threads::init`]); the model kernels run with the ISA path the
    /// model uses ([`Isa::best`]).
    pub fn with_kernels(kernels: ProbeKernels) -> DeviceProbe {
        let threads = rayon::current_num_threads();
        let model = (kernels == ProbeKernels::Model).then(|| ModelOperands {
            isa: Isa::best(),
            decode_input: filled(GEMM_DEPTH, 1),
            gemm_input: filled(GEMM_ROWS * GEMM_DEPTH, 2),
            gemm_weights: (0..threads)
                .map(|t| filled(GEMM_COLUMNS_PER_THREAD * GEMM_DEPTH, 3 + t))
                .collect(),
        });
        let mut probe = DeviceProbe {
            window: filled(MEMORY_WINDOW_BYTES / std::mem::size_of::<f32>(), 0),
            model,
            threads,
        };
        // On the kind of pages the weights are on (`timing.huge_pages`).
        huge_pages::back(&probe.window, Contents::Populated);
        probe.memory_once();
        probe.compute_once();
        probe
    }

    /// Threads each kernel runs on (the pool's).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Which kernels it times.
    pub fn kernels(&self) -> ProbeKernels {
        match self.model {
            Some(_) => ProbeKernels::Model,
            None => ProbeKernels::Synthetic,
        }
    }

    /// Times each kernel [`PROBE_REPEATS`] times, interleaved, and returns the medians of
    /// the repeats whose threads ran together.
    pub fn measure(&mut self) -> ProbeSample {
        let mut memory = Vec::with_capacity(PROBE_REPEATS);
        let mut compute = Vec::with_capacity(PROBE_REPEATS);
        for _ in 0..PROBE_REPEATS {
            memory.extend(self.memory_once());
            compute.extend(self.compute_once());
        }
        let memory = KernelTiming::of(&memory).unwrap_or(KernelTiming::NONE);
        let compute = KernelTiming::of(&compute).unwrap_or(KernelTiming::NONE);
        ProbeSample {
            memory_ns: memory.median_ns,
            compute_ns: compute.median_ns,
            memory_bytes: PROBE_MEMORY_BYTES,
            compute_flops: self.threads as u64 * self.kernels().flops_per_thread(),
            memory,
            compute,
        }
    }

    /// One repeat of the memory kernel on a window the work since the last probe left cold,
    /// without flushing it first: what [`crate::real_bench::speed_timeline::SpeedTimeline`]
    /// takes between iterations, several times a second, where a full probe (~25 ms) would
    /// delay the serve. A forward streams every weight through the caches (2.4 GB against a
    /// 32 MiB L3 here), so the window is as cold as a flush leaves it, without the flush.
    /// Its readings compare with other quick readings; the full probe's repeat after a flush
    /// is close to it but not the same measurement.
    pub fn measure_quick(&mut self) -> QuickProbeSample {
        let memory = self.memory_read().and_then(|r| KernelTiming::of(&[r]));
        let memory = memory.unwrap_or(KernelTiming::NONE);
        QuickProbeSample {
            memory_ns: memory.median_ns,
            memory_bytes: PROBE_MEMORY_BYTES,
            memory,
        }
    }

    /// One memory-bound kernel: flush the window from the caches, then read it.
    fn memory_once(&mut self) -> Option<RepeatTiming> {
        flush_from_caches(&self.window);
        self.memory_read()
    }

    /// Reads the window with every thread (a contiguous share each), each thread timing its
    /// own share — a plain sum, or the decode projection of one input row with the share as
    /// its weights.
    fn memory_read(&mut self) -> Option<RepeatTiming> {
        let threads = self.threads;
        // Whole weight rows per thread for the projection (the sum needs no alignment).
        let share = (self.window.len() / GEMM_DEPTH).div_ceil(threads) * GEMM_DEPTH;
        let (window, model) = (&self.window, self.model.as_ref());
        let origin = Instant::now();
        let out = rayon::broadcast(|ctx| {
            let first = (ctx.index() * share).min(window.len());
            let last = (first + share).min(window.len());
            let rows = &window[first..last];
            timed_share(origin, || match model {
                None => sum_f32(rows),
                // The kernel splits its rows over the pool as in a decode step; the threads
                // each start their own share, so each mostly runs its own rows.
                Some(m) => linear::matmul_xwt(
                    m.isa,
                    &m.decode_input,
                    1,
                    rows,
                    rows.len() / GEMM_DEPTH,
                    GEMM_DEPTH,
                )
                .iter()
                .sum(),
            })
        });
        let spans: Vec<ThreadSpan> = out.iter().map(|(span, _)| *span).collect();
        std::hint::black_box(out);
        RepeatTiming::of(&spans)
    }

    /// One compute-bound kernel on every thread, each timing its own: FMA chains on
    /// registers, or the prefill GEMM of the shared input with the thread's own weights.
    fn compute_once(&mut self) -> Option<RepeatTiming> {
        let model = self.model.as_ref();
        let origin = Instant::now();
        let out = rayon::broadcast(|ctx| {
            timed_share(origin, || match model {
                None => fma_chains(COMPUTE_ITERATIONS_PER_THREAD, ctx.index()),
                Some(m) => gemm::matmul_xwt(
                    m.isa,
                    &m.gemm_input,
                    GEMM_ROWS,
                    &m.gemm_weights[ctx.index()],
                    GEMM_COLUMNS_PER_THREAD,
                    GEMM_DEPTH,
                )
                .iter()
                .sum(),
            })
        });
        let spans: Vec<ThreadSpan> = out.iter().map(|(span, _)| *span).collect();
        std::hint::black_box(out);
        RepeatTiming::of(&spans)
    }
}

/// Runs one thread's share `f`, timed on that thread (wall from `origin`, and CPU time).
fn timed_share<T>(origin: Instant, f: impl FnOnce() -> T) -> (ThreadSpan, T) {
    let cpu_before = thread_cpu_time_ns();
    let start = origin.elapsed();
    let value = f();
    let end = origin.elapsed();
    let cpu_ns = thread_cpu_time_ns()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    (
        ThreadSpan {
            start_ns: ns(start),
            end_ns: ns(end),
            cpu_ns,
        },
        value,
    )
}

/// CPU time the calling thread has used, ns (`CLOCK_THREAD_CPUTIME_ID`); `None` if unsupported.
fn thread_cpu_time_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| {
        u64::try_from(ts.tv_sec)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
    })
}

impl Default for DeviceProbe {
    fn default() -> Self {
        Self::new()
    }
}

/// Evicts `data` from every cache level (x86_64 `clflush`), so the next read comes from DRAM.
/// Elsewhere a no-op: the probe then reads what the caches kept of its window.
fn flush_from_caches(data: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_clflush, _mm_mfence};
        const LINE_BYTES: usize = 64;
        let bytes = std::mem::size_of_val(data);
        let base = data.as_ptr().cast::<u8>();
        for offset in (0..bytes).step_by(LINE_BYTES) {
            // SAFETY: `offset < bytes`, so the address lies inside `data`; clflush (SSE2,
            // baseline on x86_64) only evicts the line and does not change memory.
            unsafe { _mm_clflush(base.add(offset)) };
        }
        // SAFETY: a fence has no memory-safety preconditions.
        unsafe { _mm_mfence() };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// Sum of `data`, read once front to back.
fn sum_f32(data: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected at run time.
        return unsafe { avx2::sum(data) };
    }
    let mut acc = [0f32; 8];
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// `iterations` rounds of [`COMPUTE_CHAINS`] independent 8-lane FMAs; returns a value that
/// depends on every chain so none is optimised away. `seed` varies the start per thread.
fn fma_chains(iterations: u64, seed: usize) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { avx2::fma_chains(iterations, seed) };
    }
    let mut acc = [[0f32; COMPUTE_LANES]; COMPUTE_CHAINS];
    for (c, chain) in acc.iter_mut().enumerate() {
        chain.fill((seed + c) as f32 * 1e-3);
    }
    // x ← x·a + b converges to b / (1 − a) and stays finite and normal.
    let (a, b) = (0.999_9f32, 1e-4f32);
    for _ in 0..iterations {
        for chain in acc.iter_mut() {
            for x in chain.iter_mut() {
                *x = x.mul_add(a, b);
            }
        }
    }
    acc.iter().flatten().sum()
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{COMPUTE_CHAINS, COMPUTE_LANES};

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn sum(data: &[f32]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut chunks = data.chunks_exact(32);
        for c in &mut chunks {
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: `c` has 32 elements, so lanes 8k..8k+8 are in bounds.
                *a = _mm256_add_ps(*a, unsafe { _mm256_loadu_ps(c.as_ptr().add(8 * k)) });
            }
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma_chains(iterations: u64, seed: usize) -> f32 {
        const _: () = assert!(COMPUTE_LANES == 8);
        let mut acc = [_mm256_setzero_ps(); COMPUTE_CHAINS];
        for (c, a) in acc.iter_mut().enumerate() {
            *a = _mm256_set1_ps((seed + c) as f32 * 1e-3);
        }
        let a = _mm256_set1_ps(0.999_9);
        let b = _mm256_set1_ps(1e-4);
        for _ in 0..iterations {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut total = _mm256_setzero_ps();
        for x in acc {
            total = _mm256_add_ps(total, x);
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), total) };
        lanes.iter().sum()
    }
}

/// Cumulative CPU time of the whole host (all CPUs), from `/proc/stat`'s `cpu` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCpuTimes {
    /// Time the hypervisor ran something else while a vCPU wanted to run, ns.
    pub steal_ns: u64,
    /// Time some process ran (user + nice + system + irq + softirq), ns.
    pub busy_ns: u64,
    /// All accounted time (user + nice + system + idle + iowait + irq + softirq + steal), ns.
    pub total_ns: u64,
}

impl HostCpuTimes {
    /// Reads `/proc/stat` now; `None` where it does not exist (not Linux).
    pub fn read() -> Option<HostCpuTimes> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        // SAFETY: sysconf has no preconditions.
        let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self::parse(&text, u64::try_from(ticks_per_s).ok().filter(|&t| t > 0)?).ok()
    }

    /// Parses `/proc/stat` text whose counters tick `ticks_per_s` times a second.
    pub fn parse(text: &str, ticks_per_s: u64) -> Result<HostCpuTimes> {
        let bad = |msg: &str| Error::InvalidInput(format!("/proc/stat: {msg}"));
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some("cpu"))
            .ok_or_else(|| bad("no aggregate `cpu` line"))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad("a counter is not an integer"))
            })
            .collect::<Result<_>>()?;
        if fields.len() < 8 {
            return Err(bad("the `cpu` line has fewer than 8 counters"));
        }
        // guest and guest_nice (fields 9, 10) are already counted in user and nice.
        let to_ns = |ticks: u64| ticks.saturating_mul(1_000_000_000) / ticks_per_s;
        Ok(HostCpuTimes {
            steal_ns: to_ns(fields[7]),
            busy_ns: to_ns(fields[0] + fields[1] + fields[2] + fields[5] + fields[6]),
            total_ns: to_ns(fields[..8].iter().sum()),
        })
    }

    /// Percentage of all CPU time stolen between `earlier` and `self`; `None` when no time
    /// was accounted in between (the counters tick every 10 ms).
    pub fn steal_pct_since(&self, earlier: &HostCpuTimes) -> Option<f64> {
        let total = self.total_ns.checked_sub(earlier.total_ns)?;
        let steal = self.steal_ns.checked_sub(earlier.steal_ns)?;
        (total > 0).then(|| 100.0 * steal as f64 / total as f64)
    }

    /// Percentage of all CPU time that other processes ran between `earlier` and `self`,
    /// given the CPU time `own_cpu_ns` this process used in between; `None` when no time was
    /// accounted. Counter granularity (10 ms) makes small values noisy; clamped at 0.
    pub fn competing_pct_since(&self, earlier: &HostCpuTimes, own_cpu_ns: u64) -> Option<f64> {
        let total = self.total_ns.checked_sub(earlier.total_ns)?;
        let busy = self.busy_ns.checked_sub(earlier.busy_ns)?;
        (total > 0).then(|| 100.0 * busy.saturating_sub(own_cpu_ns) as f64 / total as f64)
    }
}

/// CPU time used by every thread of this process so far, ns (`CLOCK_PROCESS_CPUTIME_ID`).
pub fn process_cpu_time_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Time every thread of this process has spent runnable but waiting for a CPU, ns: the sum
/// of the `run_delay` field of each `/proc/self/task/<tid>/schedstat` (Linux with schedstats).
/// Within the machine this is what steal time is to the hypervisor: time the threads lost
/// to others while they had work. `None` where the files do not exist.
pub fn own_run_queue_wait_ns() -> Option<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        // A thread may exit between listing and reading: skip it.
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        total += parse_run_delay_ns(&text)?;
    }
    Some(total)
}

/// The `run_delay` (second) field of a `schedstat` line: `<run ns> <run_delay ns> <slices>`.
fn parse_run_delay_ns(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// `/proc/loadavg`'s 1-minute value, if readable.
pub fn load_average_1min() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_steal_and_total_in_ns() {
        let text = "cpu  100 5 30 800 10 1 2 52 7 0\ncpu0 50 0 15 400 5 0 1 26 0 0\nintr 1\n";
        let t = HostCpuTimes::parse(text, 100).unwrap();
        assert_eq!(t.steal_ns, 520_000_000);
        // 100 + 5 + 30 + 800 + 10 + 1 + 2 + 52 = 1000 ticks; guest (7) is inside user.
        assert_eq!(t.total_ns, 10_000_000_000);
        // user + nice + system + irq + softirq = 100 + 5 + 30 + 1 + 2.
        assert_eq!(t.busy_ns, 1_380_000_000);
        let later = HostCpuTimes {
            steal_ns: t.steal_ns + 250_000_000,
            busy_ns: t.busy_ns + 600_000_000,
            total_ns: t.total_ns + 1_000_000_000,
        };
        assert_eq!(later.steal_pct_since(&t), Some(25.0));
        // 600 ms busy, 450 ms of it this process: others ran 15 % of the time.
        assert_eq!(later.competing_pct_since(&t, 450_000_000), Some(15.0));
        assert_eq!(later.competing_pct_since(&t, 900_000_000), Some(0.0));
        assert_eq!(t.steal_pct_since(&t), None, "no time accounted");
        assert!(HostCpuTimes::parse("cpu0 1 2 3\n", 100).is_err());
        assert!(HostCpuTimes::parse("cpu 1 2 3 4\n", 100).is_err());
        assert!(HostCpuTimes::parse("cpu 1 2 x 4 5 6 7 8\n", 100).is_err());
    }

    #[test]
    fn schedstat_run_delay_is_the_second_field() {
        assert_eq!(parse_run_delay_ns("53322666 204988 29\n"), Some(204_988));
        assert_eq!(parse_run_delay_ns("53322666\n"), None);
        assert_eq!(parse_run_delay_ns("1 x 2"), None);
        // This process exists, so its threads' files do (Linux).
        if cfg!(target_os = "linux") {
            assert!(own_run_queue_wait_ns().is_some());
        }
    }

    #[test]
    fn kernels_compute_what_they_claim() {
        let data: Vec<f32> = (0..1003).map(|i| (i % 7) as f32).collect();
        let expected: f32 = data.iter().sum();
        assert!((sum_f32(&data) - expected).abs() < 1e-3);
        // Every lane converges towards b / (1 − a) = 1 from below.
        let v = fma_chains(100_000, 0);
        let lanes = (COMPUTE_CHAINS * COMPUTE_LANES) as f32;
        assert!(v > 0.99 * lanes && v <= lanes * 1.0001, "{v}");
    }

    #[test]
    fn a_probe_reports_positive_times_and_its_work() {
        for kernels in [ProbeKernels::Synthetic, ProbeKernels::Model] {
            let mut probe = DeviceProbe::with_kernels(kernels);
            let s = probe.measure();
            assert!(s.memory_ns > 0 && s.compute_ns > 0, "{kernels:?}");
            assert_eq!(s.memory_bytes, MEMORY_WINDOW_BYTES as u64);
            assert_eq!(
                s.compute_flops,
                probe.threads() as u64 * kernels.flops_per_thread()
            );
            assert!(s.memory_gb_per_s() > 0.0 && s.compute_gflop_per_s() > 0.0);
            // Every repeat is accounted for; how many were kept depends on the host.
            for k in [s.memory, s.compute] {
                assert_eq!(k.repeats as usize, PROBE_REPEATS);
                assert!(k.kept_repeats <= k.repeats);
                assert!(k.max_skew >= 1.0);
            }
        }
        for kernels in [ProbeKernels::Synthetic, ProbeKernels::Model] {
            let quick = DeviceProbe::with_kernels(kernels).measure_quick();
            assert!(quick.memory_ns > 0 && quick.memory_gb_per_s() > 0.0);
            assert_eq!(quick.memory_bytes, MEMORY_WINDOW_BYTES as u64);
            assert_eq!(quick.memory.repeats, 1);
        }
        assert_eq!(
            ProbeKernels::Synthetic.flops_per_thread(),
            COMPUTE_ITERATIONS_PER_THREAD * 192
        );
        // 256 × 384 outputs of 1024-term dot products, 2 FLOP a term.
        assert_eq!(ProbeKernels::Model.flops_per_thread(), 201_326_592);
        assert_eq!(DeviceProbe::new().kernels(), ProbeKernels::STAGES);
        assert_ne!(
            ProbeKernels::Synthetic.version(),
            ProbeKernels::Model.version()
        );
    }

    fn span(start_ns: u64, end_ns: u64, cpu_ns: Option<u64>) -> ThreadSpan {
        ThreadSpan {
            start_ns,
            end_ns,
            cpu_ns,
        }
    }

    #[test]
    fn a_repeat_is_kept_only_when_its_threads_ran_together() {
        // Both threads ran the whole kernel, one woken 20 µs late.
        let r = RepeatTiming::of(&[
            span(0, 1_750_000, Some(1_749_000)),
            span(20_000, 1_770_000, Some(1_750_000)),
        ])
        .unwrap();
        assert_eq!(r.slowest_thread_ns, 1_750_000);
        assert!(r.kept() && r.skew < 1.02, "{r:?}");
        // The second thread ran only once the first had finished (one vCPU for both): the
        // broadcast took twice a thread's time, the "half rate" of the diagnosed runs.
        let r = RepeatTiming::of(&[
            span(0, 1_750_000, Some(1_750_000)),
            span(1_750_000, 3_500_000, Some(1_750_000)),
        ])
        .unwrap();
        assert_eq!(r.slowest_thread_ns, 1_750_000, "each thread's own time");
        assert!(!r.kept() && (r.skew - 2.0).abs() < 1e-9, "{r:?}");
        // Descheduled halfway through its share: its span is long but it ran half of it.
        let r = RepeatTiming::of(&[
            span(0, 3_500_000, Some(1_750_000)),
            span(0, 1_750_000, Some(1_750_000)),
        ])
        .unwrap();
        assert!(!r.kept() && (r.skew - 2.0).abs() < 1e-9, "{r:?}");
        // A thread that ran the whole time but computed slower is the device: kept, and
        // its time is the repeat's.
        let r = RepeatTiming::of(&[
            span(0, 1_750_000, Some(1_750_000)),
            span(0, 3_500_000, Some(3_500_000)),
        ])
        .unwrap();
        assert!(r.kept() && (r.skew - 1.0).abs() < 1e-9, "{r:?}");
        assert_eq!(r.slowest_thread_ns, 3_500_000);
        // Without CPU times (not Linux) the spans alone decide.
        let r = RepeatTiming::of(&[span(0, 1_000, None), span(100, 1_100, None)]).unwrap();
        assert!(r.kept() && (r.skew - 1.1).abs() < 1e-9, "{r:?}");
        let r = RepeatTiming::of(&[span(0, 1_000, None), span(1_000, 2_000, None)]).unwrap();
        assert!(!r.kept());
        // Just inside and just outside the bound.
        let at = |joint_ns: u64| {
            RepeatTiming::of(&[span(0, 1_000, None), span(joint_ns - 1_000, joint_ns, None)])
                .unwrap()
                .kept()
        };
        assert!(at(1_250) && !at(1_251));
        assert_eq!(RepeatTiming::of(&[]), None);
    }

    #[test]
    fn a_kernel_is_the_median_of_its_kept_repeats_and_usable_when_most_were_kept() {
        let repeat = |slowest_thread_ns: u64, skew: f64| RepeatTiming {
            slowest_thread_ns,
            skew,
        };
        let k = KernelTiming::of(&[
            repeat(100, 1.0),
            repeat(50, 2.0),
            repeat(110, 1.1),
            repeat(90, 1.0),
            repeat(40, 1.9),
        ])
        .unwrap();
        assert_eq!((k.median_ns, k.kept_repeats, k.repeats), (100, 3, 5));
        assert_eq!(k.max_skew, 2.0);
        assert!(k.usable());
        // Two of five kept: recorded, not usable.
        let k = KernelTiming::of(&[
            repeat(100, 1.0),
            repeat(50, 2.0),
            repeat(110, 1.1),
            repeat(45, 2.0),
            repeat(40, 1.9),
        ])
        .unwrap();
        assert_eq!((k.median_ns, k.kept_repeats), (110, 2));
        assert!(!k.usable());
        // None kept: the median of all, for the record.
        let k = KernelTiming::of(&[repeat(50, 2.0), repeat(40, 2.0), repeat(45, 1.5)]).unwrap();
        assert_eq!((k.median_ns, k.kept_repeats, k.repeats), (45, 0, 3));
        assert!(!k.usable());
        assert_eq!(KernelTiming::of(&[]), None);
    }

    #[test]
    fn process_cpu_time_advances_with_work() {
        let before = process_cpu_time_ns();
        std::hint::black_box(fma_chains(200_000, 1));
        assert!(process_cpu_time_ns() > before);
    }
}
