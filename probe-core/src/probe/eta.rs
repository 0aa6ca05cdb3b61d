//! How long a sweep has left, for progress displays: the rate at which
//! targets finish says how fast the sweep goes, but silent targets finish
//! only when their timeouts run out, all at once, so the estimate is capped
//! by the worst case of what is left (every remaining target timing out, in
//! waves of the concurrency), and no estimate is given before there is a
//! basis for one.

use std::time::Duration;

/// The remaining time of one sweep, from its progress so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepEta {
    total: usize,
    concurrency: usize,
    worst_per_target: Duration,
}

impl SweepEta {
    /// A sweep of `total` targets, `concurrency` at a time, each taking at
    /// most `worst_per_target` (every attempt timing out).
    pub fn new(total: usize, concurrency: usize, worst_per_target: Duration) -> SweepEta {
        SweepEta {
            total,
            concurrency: concurrency.max(1),
            worst_per_target,
        }
    }

    /// The estimate after `elapsed` with `done` targets finished; `None`
    /// while there is no basis (nothing finished yet, or under a second of
    /// history, when early refusals say nothing about the silent targets).
    pub fn estimate(&self, done: usize, elapsed: Duration) -> Option<Duration> {
        let remaining = self.total.saturating_sub(done);
        if remaining == 0 {
            return Some(Duration::ZERO);
        }
        if done == 0 || elapsed < Duration::from_secs(1) {
            return None;
        }
        let by_rate = elapsed.mul_f64(remaining as f64 / done as f64);
        let waves = remaining.div_ceil(self.concurrency);
        let worst = self
            .worst_per_target
            .saturating_mul(u32::try_from(waves).unwrap_or(u32::MAX));
        Some(by_rate.min(worst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a 65535-port sweep whose first second finished few
    /// targets (the silent ones were still waiting) showed "eta 4m" for a
    /// run that took 9 s.
    #[test]
    fn a_slow_start_is_capped_by_the_worst_case_of_what_is_left() {
        let eta = SweepEta::new(65_535, 4096, Duration::from_secs(2));
        let e = eta.estimate(300, Duration::from_secs(1)).unwrap();
        // 65235 left in 16 waves of at most 2 s.
        assert_eq!(e, Duration::from_secs(32));
        assert!(e < Duration::from_secs(60));
    }

    #[test]
    fn a_steady_rate_gives_the_rate_estimate() {
        let eta = SweepEta::new(1000, 10, Duration::from_secs(2));
        // Half done in 4 s: 4 s more, below the 100 s worst case.
        assert_eq!(
            eta.estimate(500, Duration::from_secs(4)),
            Some(Duration::from_secs(4))
        );
    }

    #[test]
    fn no_estimate_without_a_basis_and_zero_when_done() {
        let eta = SweepEta::new(100, 10, Duration::from_secs(1));
        assert_eq!(eta.estimate(0, Duration::from_secs(5)), None);
        assert_eq!(eta.estimate(50, Duration::from_millis(300)), None);
        assert_eq!(
            eta.estimate(100, Duration::from_millis(300)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            eta.estimate(150, Duration::from_secs(3)),
            Some(Duration::ZERO)
        );
        // Concurrency 0 is treated as 1, not a division by zero.
        let one = SweepEta::new(3, 0, Duration::from_secs(1));
        assert_eq!(
            one.estimate(1, Duration::from_secs(10)),
            Some(Duration::from_secs(2))
        );
    }
}
