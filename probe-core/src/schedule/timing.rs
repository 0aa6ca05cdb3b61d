//! When rounds run: every `every`, moved by a random jitter so that a fleet
//! started at once does not probe in lockstep, and never overlapping: a
//! round that overruns its period delays the next one instead of running
//! beside it.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

/// The period and spread of rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Time between the starts of two rounds.
    pub every: Duration,
    /// Each round starts up to this much earlier or later than `every`
    /// after the previous one; the first starts within `[0, jitter]` of
    /// startup.
    pub jitter: Duration,
}

impl Timing {
    /// `every` with the default jitter, a tenth of the period.
    pub fn with_default_jitter(every: Duration) -> Timing {
        Timing {
            every,
            jitter: every / 10,
        }
    }

    /// When the round after one that ran from `start` to `end` begins:
    /// `every` plus `offset` (within `±jitter`) after `start`, but never
    /// before `end`.
    pub(crate) fn next_start(&self, start: Instant, end: Instant, offset: Jitter) -> Instant {
        let planned = match offset {
            Jitter::Later(d) => start + self.every + d,
            Jitter::Earlier(d) => start + self.every.saturating_sub(d),
        };
        planned.max(end)
    }
}

/// A signed offset from the planned start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Jitter {
    /// Start this much later.
    Later(Duration),
    /// Start this much earlier.
    Earlier(Duration),
}

/// A small random source for jitter (SplitMix64). Seeded from the standard
/// library's per-process random hasher keys, so agents started together
/// spread out without a dependency on a random-number crate.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator seeded from process randomness.
    pub(crate) fn from_entropy() -> Rng {
        Rng(RandomState::new().hash_one(std::process::id()))
    }

    /// A generator with a fixed seed, for tests.
    #[cfg(test)]
    pub(crate) fn seeded(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, max]`, at nanosecond resolution.
    pub(crate) fn up_to(&mut self, max: Duration) -> Duration {
        let n = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        if n == 0 {
            return Duration::ZERO;
        }
        let r = self.next_u64();
        Duration::from_nanos(match n.checked_add(1) {
            Some(m) => r % m,
            None => r,
        })
    }

    /// Uniform in `[-max, +max]`.
    pub(crate) fn signed(&mut self, max: Duration) -> Jitter {
        let d = self.up_to(max);
        if self.next_u64() & 1 == 0 {
            Jitter::Later(d)
        } else {
            Jitter::Earlier(d)
        }
    }
}

/// What the scheduler drives: one round at a time, and plan reloads between
/// rounds.
pub(crate) trait Rounds {
    /// Runs one round. It should return soon after `cancel` fires; its
    /// results are then discarded.
    fn round(&mut self, cancel: &CancellationToken) -> impl Future<Output = ()>;

    /// Re-reads the plan (SIGHUP).
    fn reload(&mut self);
}

/// Runs rounds on `timing` until `cancel` fires. A reload request is served
/// between rounds (one that arrives during a round waits for its end).
pub(crate) async fn drive<R: Rounds>(
    timing: Timing,
    rng: &mut Rng,
    rounds: &mut R,
    reload: &Notify,
    cancel: &CancellationToken,
) {
    let mut next = Instant::now() + rng.up_to(timing.jitter);
    loop {
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                () = reload.notified() => rounds.reload(),
                () = sleep_until(next) => break,
            }
        }
        let start = Instant::now();
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = rounds.round(cancel) => {}
        }
        let end = Instant::now();
        next = timing.next_start(start, end, rng.signed(timing.jitter));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A round that takes a fixed (virtual) time and logs when it ran.
    struct Fake {
        took: Vec<Duration>,
        log: Vec<(Instant, Instant)>,
        running: Arc<AtomicUsize>,
        reloads: usize,
    }

    impl Rounds for Fake {
        async fn round(&mut self, _cancel: &CancellationToken) {
            let i = self.log.len();
            let took = self.took[i.min(self.took.len() - 1)];
            assert_eq!(
                self.running.fetch_add(1, Ordering::SeqCst),
                0,
                "rounds overlap"
            );
            let start = Instant::now();
            tokio::time::sleep(took).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.log.push((start, Instant::now()));
        }

        fn reload(&mut self) {
            self.reloads += 1;
        }
    }

    fn fake(took: &[u64]) -> Fake {
        Fake {
            took: took.iter().map(|&s| Duration::from_secs(s)).collect(),
            log: Vec::new(),
            running: Arc::new(AtomicUsize::new(0)),
            reloads: 0,
        }
    }

    async fn run_for(timing: Timing, rounds: &mut Fake, total: Duration) {
        let cancel = CancellationToken::new();
        let reload = Notify::new();
        let stop = cancel.clone();
        let mut rng = Rng::seeded(7);
        tokio::join!(drive(timing, &mut rng, rounds, &reload, &cancel), async {
            tokio::time::sleep(total).await;
            stop.cancel();
        });
    }

    #[tokio::test(start_paused = true)]
    async fn rounds_keep_their_period_without_jitter() {
        let t0 = Instant::now();
        let timing = Timing {
            every: Duration::from_secs(10),
            jitter: Duration::ZERO,
        };
        let mut f = fake(&[2]);
        run_for(timing, &mut f, Duration::from_secs(35)).await;
        let starts: Vec<u64> = f.log.iter().map(|(s, _)| (*s - t0).as_secs()).collect();
        assert_eq!(starts, [0, 10, 20, 30]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_round_delays_the_next_and_rounds_never_overlap() {
        let t0 = Instant::now();
        let timing = Timing {
            every: Duration::from_secs(10),
            jitter: Duration::ZERO,
        };
        // The second round takes 25 s, two and a half periods.
        let mut f = fake(&[1, 25, 1, 1]);
        run_for(timing, &mut f, Duration::from_secs(60)).await;
        let spans: Vec<(u64, u64)> = f
            .log
            .iter()
            .map(|(s, e)| ((*s - t0).as_secs(), (*e - t0).as_secs()))
            .collect();
        // It ends at 35: the next starts then, not at 20 or 30, and the
        // period resumes from there.
        assert_eq!(spans, [(0, 1), (10, 35), (35, 36), (45, 46), (55, 56)]);
        for w in f.log.windows(2) {
            assert!(
                w[1].0 >= w[0].1,
                "a round started before the previous ended"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_stays_within_bounds() {
        let t0 = Instant::now();
        let timing = Timing {
            every: Duration::from_secs(100),
            jitter: Duration::from_secs(10),
        };
        let mut f = fake(&[1]);
        run_for(timing, &mut f, Duration::from_secs(2000)).await;
        assert!(f.log.len() >= 18, "{} rounds", f.log.len());
        let first = f.log[0].0 - t0;
        assert!(first <= Duration::from_secs(10), "first round at {first:?}");
        let mut gaps = Vec::new();
        for w in f.log.windows(2) {
            let gap = w[1].0 - w[0].0;
            assert!(
                gap >= Duration::from_secs(90) && gap <= Duration::from_secs(110),
                "gap {gap:?}"
            );
            gaps.push(gap);
        }
        // Jitter actually moves rounds: not every gap is the bare period.
        assert!(gaps.iter().any(|g| *g != Duration::from_secs(100)));
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_stops_a_round_in_progress_at_once() {
        let t0 = Instant::now();
        let timing = Timing {
            every: Duration::from_secs(10),
            jitter: Duration::ZERO,
        };
        let mut f = fake(&[100]);
        run_for(timing, &mut f, Duration::from_secs(5)).await;
        assert_eq!(Instant::now() - t0, Duration::from_secs(5));
        assert!(f.log.is_empty(), "the cancelled round must not complete");
    }

    #[tokio::test(start_paused = true)]
    async fn reload_requests_are_served_between_rounds() {
        let timing = Timing {
            every: Duration::from_secs(10),
            jitter: Duration::ZERO,
        };
        let mut f = fake(&[1]);
        let cancel = CancellationToken::new();
        let reload = Notify::new();
        let mut rng = Rng::seeded(1);
        tokio::join!(drive(timing, &mut rng, &mut f, &reload, &cancel), async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            reload.notify_one();
            tokio::time::sleep(Duration::from_secs(1)).await;
            cancel.cancel();
        });
        assert_eq!(f.reloads, 1);
        assert_eq!(f.log.len(), 1);
    }

    #[test]
    fn rng_bounds() {
        let mut r = Rng::seeded(42);
        for _ in 0..1000 {
            assert!(r.up_to(Duration::from_millis(5)) <= Duration::from_millis(5));
        }
        assert_eq!(r.up_to(Duration::ZERO), Duration::ZERO);
        assert!(r.up_to(Duration::MAX) <= Duration::MAX);
    }
}
