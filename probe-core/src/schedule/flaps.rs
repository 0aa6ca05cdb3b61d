//! Flapping paths: a path whose verdict keeps turning between ok and
//! violation from round to round is one problem, worth one counter, one
//! gauge and one log line, not a warning every round.
//!
//! A **state change** is a change of a path's verdict class between two
//! consecutive *measured* rounds of that path: `ok` to `violation` or back.
//! A round without a verdict (`error`: the prober could not try, or a
//! refusal that cannot tell a firewall from a stopped service) is
//! `unknown`: it is neither a change nor the end of one, so `ok`, `error`,
//! `ok` counts nothing and `ok`, `error`, `violation` counts one change. A
//! path is **flapping** while it has at least `k` changes within its last
//! `W` rounds (every round counts toward `W`, measured or not).
//!
//! [`FlapTracker`] is the pure per-path state: fed one [`FlapState`] per
//! round, it says how many changes there were, whether the path flaps now,
//! and whether a line should be logged now ([`FlapLog`]): one when the path
//! starts flapping, then nothing until `W` consecutive rounds have passed
//! without it flapping, which gives one "stopped flapping" line.

use std::collections::VecDeque;

use crate::report::Verdict;

/// How many state changes within how many rounds make a path flap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlapConfig {
    changes: u32,
    window: u32,
}

impl FlapConfig {
    /// `k` by default: a path that went bad and came back (two changes)
    /// had a blip; one that goes bad again within the window flaps.
    pub const DEFAULT_CHANGES: u32 = 3;
    /// `W` by default, in rounds: long enough that a path lost one round
    /// in ten (four changes in twenty rounds) flaps, short enough that a
    /// single lost round every twenty rounds or fewer never does.
    pub const DEFAULT_WINDOW: u32 = 20;
    /// The longest window: each path keeps one state per round of it.
    pub const MAX_WINDOW: u32 = 1000;

    /// `changes` state changes within `window` rounds; `changes` is 2 at
    /// least (one change is a path going down, not flapping) and at most
    /// `window` (a path changes at most once a round), `window` 2 to
    /// [`FlapConfig::MAX_WINDOW`].
    pub fn new(changes: u32, window: u32) -> Result<FlapConfig, FlapConfigError> {
        if !(2..=FlapConfig::MAX_WINDOW).contains(&window) {
            return Err(FlapConfigError::Window { window });
        }
        if !(2..=window).contains(&changes) {
            return Err(FlapConfigError::Changes { changes, window });
        }
        Ok(FlapConfig { changes, window })
    }

    /// `k`: the state changes that make a path flap.
    pub fn changes(&self) -> u32 {
        self.changes
    }

    /// `W`: the rounds they are counted over.
    pub fn window(&self) -> u32 {
        self.window
    }
}

impl Default for FlapConfig {
    fn default() -> FlapConfig {
        FlapConfig {
            changes: FlapConfig::DEFAULT_CHANGES,
            window: FlapConfig::DEFAULT_WINDOW,
        }
    }
}

/// Why a flap setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlapConfigError {
    /// The window is shorter than 2 rounds or longer than
    /// [`FlapConfig::MAX_WINDOW`].
    #[error("--flap-window {window} is out of range: give 2 to 1000 rounds")]
    Window {
        /// The window asked for.
        window: u32,
    },
    /// The number of changes is below 2 or above the window.
    #[error(
        "--flap-changes {changes} is out of range: give 2 to --flap-window ({window}), as a path changes state at most once a round"
    )]
    Changes {
        /// The changes asked for.
        changes: u32,
        /// The window they would be counted over.
        window: u32,
    },
}

/// One round's reading of a path, for flap counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlapState {
    /// The path met its expectation.
    Ok,
    /// It did not.
    Violation,
    /// No verdict this round (`error`): never guessed either way.
    Unknown,
}

impl FlapState {
    /// The one-character form of the log line's recent rounds.
    fn symbol(self) -> char {
        match self {
            FlapState::Ok => '.',
            FlapState::Violation => 'x',
            FlapState::Unknown => '?',
        }
    }
}

impl From<Verdict> for FlapState {
    fn from(v: Verdict) -> FlapState {
        match v {
            Verdict::Ok => FlapState::Ok,
            Verdict::Violation => FlapState::Violation,
            Verdict::Error => FlapState::Unknown,
        }
    }
}

/// A line to log for a path this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlapLog {
    /// The path started flapping (a `warn`).
    Started,
    /// It has not flapped for a whole window since (an `info`).
    Stopped,
}

/// One path's flap state across rounds.
#[derive(Debug, Clone)]
pub struct FlapTracker {
    config: FlapConfig,
    /// Rounds observed so far.
    round: u64,
    /// The last measured state (`Ok` or `Violation`).
    last: Option<FlapState>,
    /// The rounds (1-based) of the changes within the last `W` rounds.
    changes: VecDeque<u64>,
    /// The states of the last `W` rounds, oldest first.
    recent: VecDeque<FlapState>,
    /// Changes since the tracker started.
    total: u64,
    /// While a start has been logged and no stop yet: the rounds in a row
    /// the path has not been flapping.
    episode: Option<u32>,
}

impl FlapTracker {
    /// A path with no rounds yet.
    pub fn new(config: FlapConfig) -> FlapTracker {
        FlapTracker {
            config,
            round: 0,
            last: None,
            changes: VecDeque::new(),
            recent: VecDeque::new(),
            total: 0,
            episode: None,
        }
    }

    /// Records one round of the path; returns the line to log now, if any.
    pub fn observe(&mut self, state: FlapState) -> Option<FlapLog> {
        let window = u64::from(self.config.window);
        self.round += 1;
        if self.recent.len() as u64 == window {
            self.recent.pop_front();
        }
        self.recent.push_back(state);
        if state != FlapState::Unknown {
            if self.last.is_some_and(|before| before != state) {
                self.total += 1;
                self.changes.push_back(self.round);
            }
            self.last = Some(state);
        }
        // A change at round r is within the last W rounds while r > n - W.
        while self
            .changes
            .front()
            .is_some_and(|&r| r + window <= self.round)
        {
            self.changes.pop_front();
        }
        let flapping = self.flapping();
        match (&mut self.episode, flapping) {
            (None, true) => {
                self.episode = Some(0);
                Some(FlapLog::Started)
            }
            (None, false) => None,
            (Some(quiet), true) => {
                *quiet = 0;
                None
            }
            (Some(quiet), false) => {
                *quiet += 1;
                if *quiet >= self.config.window {
                    self.episode = None;
                    Some(FlapLog::Stopped)
                } else {
                    None
                }
            }
        }
    }

    /// Whether the path has at least `k` changes within its last `W`
    /// rounds.
    pub fn flapping(&self) -> bool {
        self.changes.len() >= self.config.changes as usize
    }

    /// State changes since the tracker started.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// State changes within the last `W` rounds.
    pub fn recent_changes(&self) -> usize {
        self.changes.len()
    }

    /// Whether a start was logged and its stop not yet: the path's
    /// ordinary per-change lines are held back meanwhile.
    pub fn announced(&self) -> bool {
        self.episode.is_some()
    }

    /// The last `W` rounds, oldest first: `.` ok, `x` violation, `?` no
    /// verdict.
    pub fn recent(&self) -> String {
        self.recent.iter().map(|s| s.symbol()).collect()
    }

    /// The settings it counts with.
    pub fn config(&self) -> FlapConfig {
        self.config
    }
}

#[cfg(test)]
mod tests {
    use super::FlapState::{Ok, Unknown, Violation};
    use super::*;

    /// Feeds `states`; returns, per round, (flapping, line logged).
    fn run(tracker: &mut FlapTracker, states: &[FlapState]) -> Vec<(bool, Option<FlapLog>)> {
        states
            .iter()
            .map(|&s| {
                let log = tracker.observe(s);
                (tracker.flapping(), log)
            })
            .collect()
    }

    /// `n` rounds of the path dropped one round in ten: nine ok, then one
    /// violation.
    fn one_in_ten(n: usize) -> Vec<FlapState> {
        (1..=n)
            .map(|i| if i % 10 == 0 { Violation } else { Ok })
            .collect()
    }

    #[test]
    fn a_path_dropped_one_round_in_ten_flaps_within_three_windows() {
        let config = FlapConfig::default();
        let mut t = FlapTracker::new(config);
        let out = run(&mut t, &one_in_ten(200));
        let first = out.iter().position(|(f, _)| *f).expect("never flagged") + 1;
        // Changes at rounds 10, 11 and 20: flagged at round 20, inside the
        // first window of 20 rounds (the must-show allows three).
        assert_eq!(first, 20);
        assert!(first <= 3 * config.window() as usize);
        // From then on it stays flagged: every window holds 3 or 4 changes.
        assert!(out[first - 1..].iter().all(|(f, _)| *f));
        // Two changes per dropped round.
        assert_eq!(t.total(), 2 * 20 - 1, "the 200th round is the 20th drop");
        assert_eq!(t.recent(), ".........x.........x");
    }

    #[test]
    fn five_hundred_clean_rounds_flag_nothing() {
        let mut t = FlapTracker::new(FlapConfig::default());
        let out = run(&mut t, &[Ok; 500]);
        assert!(out.iter().all(|&(f, log)| !f && log.is_none()));
        assert_eq!((t.total(), t.recent_changes()), (0, 0));

        // A must-be-blocked path that stays blocked: the same.
        let mut t = FlapTracker::new(FlapConfig::default());
        assert!(run(&mut t, &[Violation; 500]).iter().all(|(f, _)| !f));
        assert_eq!(t.total(), 0);
    }

    #[test]
    fn a_round_without_a_verdict_is_not_a_state_change() {
        let mut t = FlapTracker::new(FlapConfig::default());
        run(&mut t, &[Ok, Unknown, Ok, Unknown, Unknown, Ok]);
        assert_eq!(t.total(), 0, "ok, error, ok is no change");
        // Nor does it hide one: ok, error, violation is one change.
        run(&mut t, &[Unknown, Violation]);
        assert_eq!(t.total(), 1);
        // Error rounds alternating with ok never flap.
        let mut t = FlapTracker::new(FlapConfig::default());
        let alternating: Vec<_> = (0..500)
            .map(|i| if i % 2 == 0 { Ok } else { Unknown })
            .collect();
        assert!(run(&mut t, &alternating).iter().all(|(f, _)| !f));
        // An unmeasured first round does not start the state either.
        let mut t = FlapTracker::new(FlapConfig::default());
        run(&mut t, &[Unknown, Violation, Unknown, Violation]);
        assert_eq!(t.total(), 0);
        assert_eq!(t.recent(), "?x?x");
    }

    #[test]
    fn a_path_that_goes_down_and_stays_down_is_not_flapping() {
        let mut t = FlapTracker::new(FlapConfig::default());
        let mut states = vec![Ok; 30];
        states.extend([Violation; 30]);
        states.extend([Ok; 30]);
        assert!(run(&mut t, &states).iter().all(|(f, _)| !f));
        assert_eq!(t.total(), 2);
    }

    #[test]
    fn changes_leave_the_window_after_w_rounds() {
        let config = FlapConfig::new(3, 5).unwrap();
        let mut t = FlapTracker::new(config);
        // Changes at rounds 2, 3 and 4: flapping at round 4.
        let out = run(&mut t, &[Ok, Violation, Ok, Violation]);
        assert_eq!(
            out.iter().map(|o| o.0).collect::<Vec<_>>(),
            [false, false, false, true]
        );
        // Rounds 5 and 6: their windows (1..=5, 2..=6) still hold all
        // three; round 7's (3..=7) only 3 and 4.
        let out = run(&mut t, &[Violation, Violation, Violation]);
        assert_eq!(
            out.iter().map(|o| o.0).collect::<Vec<_>>(),
            [true, true, false]
        );
        assert_eq!(t.recent_changes(), 2);
    }

    /// The log-once rule over a long sequence: one start when the path
    /// begins to flap, nothing while it goes on flapping (nor when its
    /// gauge drops for less than a window), one stop after a whole window
    /// without flapping, and the same again for a second episode.
    #[test]
    fn a_flapping_path_is_logged_once_per_episode_never_per_round() {
        let config = FlapConfig::default();
        // Rounds 1..=100: dropped one in ten (changes at 10, 11, 20, ...,
        // 90, 91, 100), flapping from round 20.
        let mut states = one_in_ten(100);
        // 101..=112 ok (a change at 101): the window of round 111 holds
        // only 100 and 101, so the gauge drops to 0 for two rounds...
        states.extend([Ok; 12]);
        // ...and is back at 113 (100, 101, 113), without a line.
        states.extend([Violation, Ok]);
        // 115..=214 ok: flapping until 120 (101, 113, 114), quiet from
        // 121, stopped after W = 20 quiet rounds, at 140.
        states.extend([Ok; 100]);
        // 215..=314 dropped one in ten (224, 225, 234, ...): starts at 234;
        // 315..=414 ok: its last changes 304, 305, 314, 315 keep it
        // flapping until 324, and it stops at 344.
        states.extend(one_in_ten(100));
        states.extend([Ok; 100]);

        let mut t = FlapTracker::new(config);
        let out = run(&mut t, &states);
        let logged: Vec<(usize, FlapLog)> = out
            .iter()
            .enumerate()
            .filter_map(|(i, (_, log))| log.map(|l| (i + 1, l)))
            .collect();
        assert_eq!(
            logged,
            [
                (20, FlapLog::Started),
                (140, FlapLog::Stopped),
                (234, FlapLog::Started),
                (344, FlapLog::Stopped),
            ]
        );
        let gauge = |round: usize| out[round - 1].0;
        assert!(gauge(110) && !gauge(111) && !gauge(112) && gauge(113));
        assert!(gauge(120) && !gauge(121) && !gauge(140));
        // Never two lines within a window.
        for pair in logged.windows(2) {
            assert!(
                pair[1].0 - pair[0].0 >= config.window() as usize,
                "{logged:?}"
            );
        }
        // A path that flaps for a thousand rounds gets one line.
        let mut t = FlapTracker::new(config);
        let lines = run(&mut t, &one_in_ten(1000))
            .iter()
            .filter(|(_, log)| log.is_some())
            .count();
        assert_eq!(lines, 1);
        assert!(t.announced());
    }

    #[test]
    fn bad_settings_are_refused_with_their_range() {
        assert_eq!(FlapConfig::default(), FlapConfig::new(3, 20).unwrap());
        for (k, w) in [(3, 1), (3, 0), (3, 1001)] {
            let e = FlapConfig::new(k, w).unwrap_err();
            assert_eq!(e, FlapConfigError::Window { window: w });
            assert!(e.to_string().contains("give 2 to 1000 rounds"), "{e}");
        }
        for (k, w) in [(0, 20), (1, 20), (21, 20)] {
            let e = FlapConfig::new(k, w).unwrap_err();
            assert_eq!(
                e,
                FlapConfigError::Changes {
                    changes: k,
                    window: w
                }
            );
            assert!(
                e.to_string().contains("give 2 to --flap-window (20)"),
                "{e}"
            );
        }
        assert!(FlapConfig::new(1000, 1000).is_ok());
    }
}
