//! Progress on standard error, only on a terminal: the round's phases for
//! `check` (agents reached, agents done probing) and the sweep's bar with an
//! honest ETA for `probe`. The estimates and events come from probe-core;
//! only the drawing lives here.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use probe_core::probe::SweepEta;
use probe_core::round::{Phase, RoundEvent, RoundObserver};

/// Where a round is: the current phase, the agents it involves and which
/// of them are done. Kept apart from the drawing so that one event changes
/// one line of text, drawn whole: the count and its denominator always
/// belong to the same phase, each agent counts once per phase, and an event
/// of another phase (a straggler) changes nothing.
#[derive(Debug, Default)]
struct PhaseCount {
    phase: Option<Phase>,
    involved: usize,
    done: HashSet<String>,
}

impl PhaseCount {
    /// Takes one event; true when the line changed.
    fn event(&mut self, event: &RoundEvent<'_>) -> bool {
        match *event {
            RoundEvent::PhaseStarted { phase, agents } => {
                self.phase = Some(phase);
                self.involved = agents;
                self.done.clear();
                true
            }
            RoundEvent::AgentDone { phase, host, .. } => {
                Some(phase) == self.phase
                    && self.done.len() < self.involved
                    && self.done.insert(host.to_owned())
            }
        }
    }

    /// `agents reached 2/4`.
    fn line(&self) -> String {
        match self.phase {
            Some(phase) => format!("{} {}/{}", phase.as_str(), self.done.len(), self.involved),
            None => "starting".to_owned(),
        }
    }
}

/// Draws a round's phases as one line per phase.
pub struct RoundProgress {
    bar: ProgressBar,
    count: Mutex<PhaseCount>,
}

impl RoundProgress {
    /// A progress display when standard error is a terminal, else `None`.
    pub fn on_terminal() -> Option<RoundProgress> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let progress = RoundProgress::to(ProgressDrawTarget::stderr());
        progress.bar.enable_steady_tick(Duration::from_millis(200));
        Some(progress)
    }

    /// A display drawing to `target`.
    fn to(target: ProgressDrawTarget) -> RoundProgress {
        let bar = ProgressBar::with_draw_target(None, target);
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}, {elapsed} elapsed") {
            bar.set_style(style);
        }
        RoundProgress {
            bar,
            count: Mutex::new(PhaseCount::default()),
        }
    }

    /// Clears the display.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl RoundObserver for RoundProgress {
    fn event(&self, event: RoundEvent<'_>) {
        let line = {
            let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
            count.event(&event).then(|| count.line())
        };
        if let Some(line) = line {
            // The count and its phase in one message: never a frame with
            // one phase's count over another's denominator.
            self.bar.set_message(line);
        }
        if let RoundEvent::AgentDone {
            phase: Phase::Prepare,
            host,
            ok: false,
        } = event
        {
            self.bar.println(format!("agent {host} unreachable"));
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use indicatif::TermLike;

    use super::*;

    /// A terminal that keeps every line drawn on it.
    #[derive(Debug, Clone, Default)]
    struct Frames(Arc<Mutex<Vec<String>>>);

    impl TermLike for Frames {
        fn width(&self) -> u16 {
            200
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(s)
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            if !s.trim().is_empty() {
                self.0.lock().unwrap().push(s.to_owned());
            }
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// `(words, done, of)` of every frame showing `words N/M`.
    fn counts(frames: &[String]) -> Vec<(String, usize, usize)> {
        frames
            .iter()
            .filter_map(|f| {
                let start = f.find(|c: char| c.is_ascii_alphabetic())?;
                let f = &f[start..];
                let digits = f.find(|c: char| c.is_ascii_digit())?;
                let (n, rest) = f[digits..].split_once('/')?;
                let m: String = rest.chars().take_while(char::is_ascii_digit).collect();
                Some((
                    f[..digits].trim().to_owned(),
                    n.parse().ok()?,
                    m.parse().ok()?,
                ))
            })
            .collect()
    }

    /// The round's events with `--only host:lb`: three agents reached, one
    /// of them (lb) the only source.
    fn only_lb_round(p: &RoundProgress) {
        let step = || std::thread::sleep(Duration::from_millis(60));
        p.event(RoundEvent::PhaseStarted {
            phase: Phase::Prepare,
            agents: 3,
        });
        for host in ["gw", "lb", "web"] {
            step();
            p.event(RoundEvent::AgentDone {
                phase: Phase::Prepare,
                host,
                ok: true,
            });
        }
        step();
        p.event(RoundEvent::PhaseStarted {
            phase: Phase::Probe,
            agents: 1,
        });
        step();
        p.event(RoundEvent::AgentDone {
            phase: Phase::Probe,
            host: "lb",
            ok: true,
        });
        step();
    }

    #[test]
    fn progress_never_shows_more_agents_done_than_involved() {
        let frames = Frames::default();
        let p = RoundProgress::to(ProgressDrawTarget::term_like(Box::new(frames.clone())));
        only_lb_round(&p);
        let drawn = frames.0.lock().unwrap().clone();
        let seen = counts(&drawn);
        assert!(!seen.is_empty(), "nothing drawn: {drawn:?}");
        for (words, n, m) in &seen {
            assert!(n <= m, "{words} {n}/{m} drawn: {drawn:?}");
            if words == "agents reached" {
                assert_eq!(*m, 3, "{drawn:?}");
            }
        }
        assert!(
            seen.contains(&("agents done probing".to_owned(), 1, 1)),
            "{drawn:?}"
        );
    }

    #[test]
    fn each_agent_counts_once_per_phase_and_stragglers_change_nothing() {
        let mut c = PhaseCount::default();
        let done = |phase, host| RoundEvent::AgentDone {
            phase,
            host,
            ok: true,
        };
        c.event(&RoundEvent::PhaseStarted {
            phase: Phase::Prepare,
            agents: 2,
        });
        assert!(c.event(&done(Phase::Prepare, "a")));
        assert!(!c.event(&done(Phase::Prepare, "a")), "counted twice");
        assert_eq!(c.line(), "agents reached 1/2");
        c.event(&RoundEvent::PhaseStarted {
            phase: Phase::Probe,
            agents: 1,
        });
        assert!(!c.event(&done(Phase::Prepare, "b")), "a straggler counted");
        assert_eq!(c.line(), "agents done probing 0/1");
        c.event(&done(Phase::Probe, "a"));
        c.event(&done(Phase::Probe, "c"));
        assert_eq!(c.line(), "agents done probing 1/1");
    }
}
