//! Progress on standard error, only on a terminal: the round's phases for
//! `check` (agents reached, agents done probing) and the sweep's bar with an
//! honest ETA for `probe`. The estimates and events come from probe-core;
//! only the drawing lives here.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use probe_core::probe::SweepEta;
use probe_core::round::{Phase, RoundEvent, RoundObserver};

/// Draws a round's phases as a bar per phase.
pub struct RoundProgress {
    bar: ProgressBar,
}

impl RoundProgress {
    /// A progress display when standard error is a terminal, else `None`.
    pub fn on_terminal() -> Option<RoundProgress> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::new(0);
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} {msg} {pos}/{len}, {elapsed} elapsed")
        {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(RoundProgress { bar })
    }

    /// Clears the display.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl RoundObserver for RoundProgress {
    fn event(&self, event: RoundEvent<'_>) {
        match event {
            RoundEvent::PhaseStarted { phase, agents } => {
                self.bar.set_length(agents as u64);
                self.bar.set_position(0);
                self.bar.set_message(phase.as_str());
            }
            RoundEvent::AgentDone { phase, host, ok } => {
                self.bar.inc(1);
                if !ok && phase == Phase::Prepare {
                    self.bar.println(format!("agent {host} unreachable"));
                }
            }
        }
    }
}

/// A sweep's bar, its ETA from [`SweepEta`].
pub struct SweepProgress {
    bar: ProgressBar,
    eta: SweepEta,
    started: Instant,
    done: usize,
}

impl SweepProgress {
    /// A bar for `total` targets when standard error is a terminal and the
    /// sweep is long enough to be worth one.
    pub fn on_terminal(total: usize, min: usize, eta: SweepEta) -> Option<SweepProgress> {
        if total < min || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::new(total as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} probing [{bar:40}] {pos}/{len} targets, {elapsed} elapsed{msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(SweepProgress {
            bar,
            eta,
            started: Instant::now(),
            done: 0,
        })
    }

    /// One more target finished.
    pub fn inc(&mut self) {
        self.done += 1;
        self.bar.inc(1);
        // Redrawn a few times a second at most by indicatif; computing the
        // estimate is a few arithmetic operations.
        let msg = match self.eta.estimate(self.done, self.started.elapsed()) {
            Some(left) => format!(", eta {}", indicatif::HumanDuration(left)),
            None => String::new(),
        };
        self.bar.set_message(msg);
    }

    /// Clears the bar.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}
