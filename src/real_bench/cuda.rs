//! NVIDIA GPUs through cudarc: which device a run used (for provenance) and CUDA-event timing
//! of the work candle queues on its stream, from a pool of events created once.
//!
//! Compiled with `--features cuda` (candle on CUDA; the real engine on a GPU) or with
//! `--features cuda-check`, which builds only this module's cudarc code against a CUDA driver
//! library loaded at run time, so that machines without a CUDA toolkit still compile and lint
//! it. See `docs/gpu.md`.
//!
//! cudarc reports a missing driver library (dynamic loading) by panicking; every driver call
//! here goes through [`driver_call`], which turns that panic, like any driver error, into
//! [`Error::Device`].

#[cfg(all(feature = "cuda", feature = "cuda-check"))]
compile_error!(
    "features `cuda` and `cuda-check` are exclusive: `cuda` links libcuda at build time, `cuda-check` loads it at run time"
);

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::{sys, CudaContext, CudaEvent, CudaStream, DriverError};

use crate::{Error, Result};

/// The GPU the real engine runs on. `CUDA_VISIBLE_DEVICES` selects which physical GPU that is.
pub const CUDA_ORDINAL: usize = 0;

pub use crate::io::device::GpuFingerprint;

impl GpuFingerprint {
    /// Queries GPU `ordinal`. Fails with [`Error::Device`] when there is no driver or no such GPU.
    pub fn collect(ordinal: usize) -> Result<Self> {
        let ctx = open_context(ordinal)?;
        let what = format!("querying CUDA device {ordinal}");
        let name = driver_call(&what, || ctx.name())?;
        let total_memory_bytes = driver_call(&what, || ctx.total_mem())? as u64;
        let (major, minor) = driver_call(&what, || ctx.compute_capability())?;
        let mut version: std::ffi::c_int = 0;
        // SAFETY: cuDriverGetVersion writes one int through a valid pointer; the driver is
        // initialized (open_context succeeded).
        driver_call(&what, || {
            unsafe { sys::cuDriverGetVersion(&mut version) }.result()
        })?;
        Ok(Self {
            ordinal,
            name,
            total_memory_bytes,
            compute_capability: format!("{major}.{minor}"),
            driver_cuda_version: format!("{}.{}", version / 1000, (version % 1000) / 10),
            visible_devices: std::env::var("CUDA_VISIBLE_DEVICES").ok(),
        })
    }
}

/// Retains the primary context of GPU `ordinal` (the one candle uses too).
pub fn open_context(ordinal: usize) -> Result<Arc<CudaContext>> {
    driver_call(&format!("opening CUDA device {ordinal}"), || {
        CudaContext::new(ordinal)
    })
}

/// The stream candle queues `device`'s kernels on.
#[cfg(feature = "cuda")]
pub fn candle_stream(device: &candle_core::Device) -> Result<Arc<CudaStream>> {
    match device {
        candle_core::Device::Cuda(d) => Ok(d.cuda_stream()),
        other => Err(Error::InvalidInput(format!(
            "CUDA event timing needs a CUDA device, got {other:?}"
        ))),
    }
}

/// The stream candle queues `device`'s kernels on: without the `cuda` feature candle has no
/// CUDA backend, so there is no such stream.
#[cfg(not(feature = "cuda"))]
pub fn candle_stream(device: &candle_core::Device) -> Result<Arc<CudaStream>> {
    Err(Error::Device(format!(
        "CUDA event timing on {device:?} needs a build with `--features cuda`"
    )))
}

/// Timing events marking points in one CUDA stream's queue, created once and recorded again
/// on every forward. The time between two marks is the GPU time of the work queued between
/// them, including any time the GPU sat idle waiting for the host to queue it.
///
/// Creating and destroying an event per mark (`cuEventCreate`/`cuEventDestroy`, a few µs of
/// host time each) would add host work to exactly the launch-bound forwards being measured;
/// recording a pooled event is one `cuEventRecord`.
pub struct EventPool {
    stream: Arc<CudaStream>,
    events: Vec<CudaEvent>,
    /// Events recorded since the last [`EventPool::clear`]: `events[..recorded]`.
    recorded: usize,
}

impl std::fmt::Debug for EventPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPool")
            .field("ordinal", &self.stream.context().ordinal())
            .field("events", &self.events.len())
            .field("recorded", &self.recorded)
            .finish()
    }
}

/// A mark recorded by [`EventPool::mark`]: the index of its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark(usize);

impl EventPool {
    /// A pool of `capacity` timing events on `stream`, all created now.
    pub fn new(stream: Arc<CudaStream>, capacity: usize) -> Result<Self> {
        let mut pool = Self {
            stream,
            events: Vec::with_capacity(capacity),
            recorded: 0,
        };
        for _ in 0..capacity {
            pool.grow()?;
        }
        Ok(pool)
    }

    fn grow(&mut self) -> Result<()> {
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let ctx = self.stream.context().clone();
        let event = driver_call("creating a CUDA event", || ctx.new_event(flags))?;
        self.events.push(event);
        Ok(())
    }

    /// Events in the pool.
    pub fn capacity(&self) -> usize {
        self.events.len()
    }

    /// Records the next event after the work queued so far (does not wait for it). A pool
    /// sized for a forward never grows; if it must, the new event is created here.
    pub fn mark(&mut self) -> Result<Mark> {
        if self.recorded == self.events.len() {
            self.grow()?;
        }
        let i = self.recorded;
        driver_call("recording a CUDA event", || {
            self.events[i].record(&self.stream)
        })?;
        self.recorded += 1;
        Ok(Mark(i))
    }

    /// GPU time from `start` to `end`; blocks until the work before `end` has run.
    pub fn elapsed(&self, start: Mark, end: Mark) -> Result<Duration> {
        let (a, b) = (&self.events[start.0], &self.events[end.0]);
        let ms = driver_call("reading CUDA event times", || a.elapsed_ms(b))?;
        // Event resolution is ~0.5 µs; a negative value would mean marks out of order.
        Ok(Duration::from_secs_f64(f64::from(ms.max(0.0)) / 1e3))
    }

    /// Forgets every mark, once their times have been read, so the events are reused.
    pub fn clear(&mut self) {
        self.recorded = 0;
    }
}

/// Runs a driver call, turning its error or a panic of cudarc's library loader into
/// [`Error::Device`] that says `what` was being done.
fn driver_call<T>(what: &str, f: impl FnOnce() -> Result<T, DriverError>) -> Result<T> {
    // With dynamic loading, look for the library first: cudarc's loader would panic, and the
    // panic hook print a backtrace notice, for what is an ordinary "no GPU here".
    #[cfg(feature = "cuda-check")]
    // SAFETY: only tries to dlopen the driver library's candidate names; loading it runs its
    // initializers, as any use of the driver would.
    if !unsafe { sys::is_culib_present() } {
        return Err(Error::Device(format!(
            "{what}: the CUDA driver library (libcuda.so) is not installed or not on LD_LIBRARY_PATH"
        )));
    }
    catching(what, f)
}

/// `f()`, with its error or panic as [`Error::Device`].
fn catching<T>(what: &str, f: impl FnOnce() -> Result<T, DriverError>) -> Result<T> {
    // AssertUnwindSafe: after a panic nothing `f` touched is used again; the error is all
    // that escapes.
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        // The result code's name: DriverError's Display asks the driver for a description,
        // which itself panics when the library cannot be loaded.
        Ok(Err(e)) => Err(Error::Device(format!("{what}: {:?}", e.0))),
        Err(panic) => Err(Error::Device(format!(
            "{what}: the CUDA driver is unavailable ({})",
            panic_message(panic.as_ref())
        ))),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("panicked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_errors_and_loader_panics_become_device_errors() {
        let e = catching::<()>("opening CUDA device 3", || {
            Err(DriverError(sys::CUresult::CUDA_ERROR_INVALID_DEVICE))
        })
        .unwrap_err();
        assert!(
            matches!(&e, Error::Device(m) if m.starts_with("opening CUDA device 3: ") && m.contains("CUDA_ERROR_INVALID_DEVICE")),
            "{e}"
        );
        let e = catching::<()>("recording a CUDA event", || {
            panic!("Unable to dynamically load the \"cuda\" shared library")
        })
        .unwrap_err();
        assert!(
            matches!(&e, Error::Device(m) if m.contains("recording a CUDA event") && m.contains("Unable to dynamically load")),
            "{e}"
        );
        assert_eq!(catching("x", || Ok(7)).unwrap(), 7);
    }

    #[test]
    fn gpu_identity_or_a_typed_error() {
        // Here (no GPU) this is the error path; on a GPU host, the identity of device 0.
        match GpuFingerprint::collect(CUDA_ORDINAL) {
            Ok(fp) => {
                assert!(!fp.name.is_empty() && fp.total_memory_bytes > 0, "{fp:?}");
                assert!(fp.compute_capability.contains('.'), "{fp:?}");
            }
            Err(Error::Device(msg)) => assert!(msg.contains("CUDA device 0"), "{msg}"),
            Err(other) => panic!("expected a device error, got {other}"),
        }
    }
}
