//! Long-lived buffers (weights, the KV pool, the device probe's window) on 2 MiB pages.
//!
//! On this VM a plain read of a freshly mapped 64 MiB window on 4 KiB pages ran at 20–30
//! GB/s depending on the mapping (steadily: the halves of 40 interleaved rounds agree), and
//! at 34–36 GB/s once collapsed into 2 MiB pages. Whether the engine's own kernels inherit
//! that — a profile and a real run are separate processes with their own mappings — is what
//! `timing.huge_pages` and `cargo bench --bench page_placement` measure
//! (`benches/results/page_placement.md`: they did not, so the default is off).
//!
//! Process-wide, like the thread pool: [`crate::real_bench::threads::apply_timing`] turns it
//! on for a timed stage (`timing.huge_pages`), and the buffers' owners ask here when they
//! allocate. Best effort: a kernel without transparent huge pages (or with them set to
//! `never`) refuses, and the refusal is recorded beside the bytes that were backed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Transparent huge pages are 2 MiB on x86-64 and the usual aarch64 kernels.
const HUGE_PAGE_BYTES: usize = 2 << 20;
/// `MADV_COLLAPSE` (Linux 6.1): collapse a populated range into huge pages now, rather than
/// whenever `khugepaged` gets to it (which would change a buffer's speed mid-run). Not in
/// the `libc` crate yet.
#[cfg(target_os = "linux")]
const MADV_COLLAPSE: libc::c_int = 25;

/// Live stages that want huge pages (a count, not a flag: tests run stages side by side).
static WANTED_BY: AtomicUsize = AtomicUsize::new(0);
/// Bytes backed and refusals since the process started; a stage reports its own share as
/// the difference from its [`Mark`].
static BACKED_BYTES: AtomicU64 = AtomicU64::new(0);
static REFUSALS: AtomicU64 = AtomicU64::new(0);
static FIRST_REFUSAL: Mutex<Option<String>> = Mutex::new(None);

/// The counts when a stage began wanting huge pages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mark {
    backed_bytes: u64,
    refusals: u64,
}

/// Buffers allocated from now on go on huge pages, until the matching [`unwant`].
pub(crate) fn want() -> Mark {
    WANTED_BY.fetch_add(1, Ordering::Relaxed);
    Mark {
        backed_bytes: BACKED_BYTES.load(Ordering::Relaxed),
        refusals: REFUSALS.load(Ordering::Relaxed),
    }
}

/// Ends one [`want`].
pub(crate) fn unwant() {
    let _ = WANTED_BY.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
}

/// Bytes put on huge pages since `mark`, and why one was refused if any was.
pub(crate) fn since(mark: Mark) -> (u64, Option<String>) {
    let bytes = BACKED_BYTES.load(Ordering::Relaxed) - mark.backed_bytes;
    let refused = (REFUSALS.load(Ordering::Relaxed) > mark.refusals).then(|| {
        FIRST_REFUSAL
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    });
    (bytes, refused)
}

/// How a buffer is handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Contents {
    /// Not yet touched (a lazily zeroed allocation): its pages will fault in as huge pages.
    Untouched,
    /// Already written: its pages are collapsed into huge pages now.
    Populated,
}

/// Puts the whole 2 MiB pages inside `bytes` on huge pages, if wanted (a no-op otherwise,
/// and for buffers under 2 MiB). The buffer must not move while it lives, as a `Vec` that is
/// not grown does not.
pub(crate) fn back<T>(buffer: &[T], contents: Contents) {
    if WANTED_BY.load(Ordering::Relaxed) == 0 {
        return;
    }
    let start = buffer.as_ptr() as usize;
    let end = start + std::mem::size_of_val(buffer);
    let aligned_start = start.next_multiple_of(HUGE_PAGE_BYTES);
    let aligned_end = end / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
    if aligned_end <= aligned_start {
        return;
    }
    match advise(aligned_start, aligned_end - aligned_start, contents) {
        Ok(()) => {
            BACKED_BYTES.fetch_add((aligned_end - aligned_start) as u64, Ordering::Relaxed);
        }
        Err(why) => {
            if REFUSALS.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("timing: not applied: huge pages: {why}");
            }
            FIRST_REFUSAL
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(why);
        }
    }
}

#[cfg(target_os = "linux")]
fn advise(start: usize, len: usize, contents: Contents) -> std::result::Result<(), String> {
    let call = |advice: libc::c_int, name: &str| {
        // SAFETY: the range lies inside a live allocation of the caller's; these advices
        // change how its pages are backed, never their contents.
        if unsafe { libc::madvise(start as *mut libc::c_void, len, advice) } == 0 {
            Ok(())
        } else {
            Err(format!("{name}: {}", std::io::Error::last_os_error()))
        }
    };
    call(libc::MADV_HUGEPAGE, "madvise(MADV_HUGEPAGE)")?;
    match contents {
        Contents::Untouched => Ok(()),
        Contents::Populated => call(MADV_COLLAPSE, "madvise(MADV_COLLAPSE)"),
    }
}

#[cfg(not(target_os = "linux"))]
fn advise(_start: usize, _len: usize, _contents: Contents) -> std::result::Result<(), String> {
    Err("transparent huge pages are a Linux feature".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_whole_huge_pages_only_when_wanted() {
        let buffer = vec![1f32; (9 << 20) / 4];
        let before = want();
        unwant();
        back(&buffer, Contents::Populated);
        assert_eq!(since(before), (0, None), "not wanted");

        let mark = want();
        back(&buffer[..1000], Contents::Populated);
        assert_eq!(since(mark).0, 0, "under 2 MiB: nothing to back");
        back(&buffer, Contents::Populated);
        let (bytes, refused) = since(mark);
        unwant();
        // 9 MiB at any alignment hold 3 or 4 whole 2 MiB pages; a kernel that refuses says so.
        match refused {
            None => assert!(bytes == 6 << 20 || bytes == 8 << 20, "{bytes}"),
            Some(why) => assert!(why.starts_with("madvise("), "{why}"),
        }
    }
}
