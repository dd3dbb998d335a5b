//! A dependency-free progress bar on stderr.
//!
//! On a terminal it redraws one line (at most every 100 ms) with the share of the estimated
//! work done, what is being timed and an ETA; otherwise (CI logs, tests) it prints one line
//! per phase and, in a long phase, one every [`LOG_EVERY`] so a log shows the profile moving.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Progress over a known total amount of (estimated) work.
#[derive(Debug)]
pub struct Progress {
    total_work: f64,
    done_work: f64,
    started: Instant,
    last_draw: Option<Instant>,
    terminal: bool,
    phase: String,
    enabled: bool,
}

const BAR_WIDTH: usize = 28;
const REDRAW_EVERY: Duration = Duration::from_millis(100);
/// Between progress lines in a log (the default model's grid phase runs for minutes).
const LOG_EVERY: Duration = Duration::from_secs(30);

impl Progress {
    /// A bar over `total_work` units (any unit; only ratios matter).
    pub fn new(total_work: f64) -> Progress {
        Progress {
            total_work: total_work.max(f64::MIN_POSITIVE),
            done_work: 0.0,
            started: Instant::now(),
            last_draw: None,
            terminal: std::io::stderr().is_terminal(),
            phase: String::new(),
            enabled: true,
        }
    }

    /// A bar that prints nothing (library callers that have their own reporting).
    pub fn hidden() -> Progress {
        Progress {
            enabled: false,
            ..Progress::new(1.0)
        }
    }

    /// Starts a phase (printed as its own line when stderr is not a terminal).
    pub fn phase(&mut self, name: &str) {
        self.phase = name.to_owned();
        if self.enabled && !self.terminal {
            self.last_draw = Some(Instant::now());
            eprintln!(
                "vidur_profile: {name} ({:.0}% done, {})",
                self.fraction() * 100.0,
                fmt_duration(self.started.elapsed())
            );
        }
    }

    /// Says what is being timed now.
    pub fn step(&mut self, what: &str) {
        if !self.enabled {
            return;
        }
        if !self.due(Instant::now()) {
            return;
        }
        let f = self.fraction();
        let elapsed = self.started.elapsed();
        let eta = if f > 0.01 {
            fmt_duration(elapsed.mul_f64((1.0 - f) / f))
        } else {
            "?".into()
        };
        if !self.terminal {
            eprintln!(
                "vidur_profile: {}: {what} ({:.0}% done, {}, eta {eta})",
                self.phase,
                f * 100.0,
                fmt_duration(elapsed)
            );
            return;
        }
        let filled = (f * BAR_WIDTH as f64).round() as usize;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K[{}{}] {:>3.0}% {} | {} | {} eta {}",
            "#".repeat(filled.min(BAR_WIDTH)),
            " ".repeat(BAR_WIDTH - filled.min(BAR_WIDTH)),
            f * 100.0,
            self.phase,
            what,
            fmt_duration(elapsed),
            eta
        );
        let _ = err.flush();
    }

    /// Whether a line is due at `now`, marking it drawn if so. In a log the first line of a
    /// phase is the phase's own: the period runs from there.
    fn due(&mut self, now: Instant) -> bool {
        let every = if self.terminal {
            REDRAW_EVERY
        } else {
            LOG_EVERY
        };
        let last = *self.last_draw.get_or_insert(now);
        if now.duration_since(last) < every {
            return false;
        }
        self.last_draw = Some(now);
        true
    }

    /// Marks `work` units as done.
    pub fn advance(&mut self, work: f64) {
        self.done_work = (self.done_work + work).min(self.total_work);
    }

    /// Share of the work done, in `[0, 1]`.
    pub fn fraction(&self) -> f64 {
        self.done_work / self.total_work
    }

    /// Clears the bar's line and prints a summary.
    pub fn finish(&mut self, summary: &str) {
        if !self.enabled {
            return;
        }
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
        eprintln!(
            "vidur_profile: {summary} in {}",
            fmt_duration(self.started.elapsed())
        );
    }
}

/// `1m05s`, `12.3s`.
fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 {
        format!(
            "{}m{:02}s",
            (s / 60.0).floor() as u64,
            (s % 60.0).floor() as u64
        )
    } else {
        format!("{s:.1}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_and_formatting() {
        let mut p = Progress::hidden();
        p.total_work = 4.0;
        p.advance(1.0);
        assert_eq!(p.fraction(), 0.25);
        p.advance(10.0);
        assert_eq!(p.fraction(), 1.0);
        assert_eq!(fmt_duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(fmt_duration(Duration::from_secs(65)), "1m05s");
    }

    #[test]
    fn a_log_gets_a_line_every_period_of_a_long_phase() {
        let mut p = Progress::new(1.0);
        p.terminal = false;
        let start = Instant::now();
        p.last_draw = Some(start); // as `phase` leaves it
        assert!(!p.due(start + LOG_EVERY / 2));
        assert!(p.due(start + LOG_EVERY));
        assert!(!p.due(start + LOG_EVERY + LOG_EVERY / 2));
        assert!(p.due(start + LOG_EVERY * 2));
        p.terminal = true;
        assert!(p.due(start + LOG_EVERY * 2 + REDRAW_EVERY));
    }
}
