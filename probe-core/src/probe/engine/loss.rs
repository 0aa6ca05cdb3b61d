//! How many loss retries a silent port gets: as many as packet loss at
//! the rate the sweep has shown could need, never more than the
//! configured most ([`super::config::ProbeConfig::loss_retries`]).
//!
//! A port that stays silent on a host that answers other ports is
//! firewall-dropped, or its packets were lost. An attempt to a port that
//! is open fails only by loss, so the ports that answered tell the loss
//! rate: each answered attempt is a trial that passed, each silent attempt
//! before a port's first answer (and each after it) one that failed. From
//! those counts an upper bound on the loss rate (Wilson's score bound,
//! one-sided 95%) gives the attempts after which an open port would still
//! be silent less than once in [`MISSED`]; the silent port gets that many
//! before it is `timeout`.
//!
//! The trials are pooled over the sweep, and the host's own count is used
//! as well (the larger bound wins) as soon as one of its ports failed a
//! trial: loss is a property of a path, so a host that shows some is
//! judged by its own rate, and a sweep of 1,000 ports that all answered at
//! the first try needs no more than the plan's attempts. Few trials give a
//! high bound: a sweep of three ports gets all the loss retries, as every
//! sweep did before.

/// The chance, at the bounding loss rate, that an open port stays silent
/// through every attempt it gets.
pub(super) const MISSED: f64 = 1e-4;

/// The normal quantile of the one-sided 95% bound.
const Z: f64 = 1.645;

/// Trials of a host or a sweep: attempts to ports known to be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct LossTally {
    /// Attempts to ports that answered (in this attempt or another).
    pub(super) trials: u32,
    /// Of those, the attempts that stayed silent.
    pub(super) silent: u32,
}

impl LossTally {
    /// A port answered for the first time, after `silent_before` silent
    /// attempts.
    pub(super) fn first_answer(&mut self, silent_before: u32) {
        self.trials = self.trials.saturating_add(1).saturating_add(silent_before);
        self.silent = self.silent.saturating_add(silent_before);
    }

    /// A port that answered before answered again.
    pub(super) fn answer_again(&mut self) {
        self.trials = self.trials.saturating_add(1);
    }

    /// A trial of a port known to be open was lost: the port answered
    /// before and went silent, or an attempt was answered only to the
    /// kernel's resent SYN (its first SYN, or the answer to it, was lost).
    pub(super) fn lost(&mut self) {
        self.trials = self.trials.saturating_add(1);
        self.silent = self.silent.saturating_add(1);
    }

    /// The upper bound on the loss rate per attempt (1 without trials).
    pub(super) fn upper_bound(self) -> f64 {
        if self.trials == 0 {
            return 1.0;
        }
        let n = f64::from(self.trials);
        let p = f64::from(self.silent) / n;
        let z2 = Z * Z;
        let centre = p + z2 / (2.0 * n);
        let spread = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
        ((centre + spread) / (1.0 + z2 / n)).min(1.0)
    }
}

/// The loss retries a silent port gets beyond the plan's `1 + retries`
/// attempts, at most `most`: the sweep's bound, or the host's where it has
/// failed a trial and that bound is higher.
pub(super) fn retries(sweep: LossTally, host: LossTally, retries: u32, most: u32) -> u32 {
    let mut p = sweep.upper_bound();
    if host.silent > 0 {
        p = p.max(host.upper_bound());
    }
    let attempts = if p <= 0.0 {
        1
    } else if p >= 1.0 {
        u32::MAX
    } else {
        // p^attempts <= MISSED.
        let a = (MISSED.ln() / p.ln()).ceil();
        if a >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            a as u32
        }
    };
    attempts.saturating_sub(retries.saturating_add(1)).min(most)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(trials: u32, silent: u32) -> LossTally {
        LossTally { trials, silent }
    }

    #[test]
    fn the_bound_is_high_on_few_trials_and_tight_on_many() {
        assert_eq!(tally(0, 0).upper_bound(), 1.0);
        let three = tally(3, 0).upper_bound();
        assert!((0.45..0.5).contains(&three), "{three}");
        let many = tally(940, 0).upper_bound();
        assert!(many < 0.003, "{many}");
        // Half of 100 silent: the bound is above the rate.
        let half = tally(100, 50).upper_bound();
        assert!((0.58..0.59).contains(&half), "{half}");
        assert!(tally(5, 5).upper_bound() <= 1.0);
    }

    /// A sweep whose many open ports all answered at once needs only the
    /// plan's attempts; three ports, or a host that lost some, get the
    /// most; a sweep that lost a few per cent gets a few.
    #[test]
    fn retries_follow_the_loss_the_sweep_has_shown() {
        let none = LossTally::default();
        assert_eq!(retries(tally(940, 0), none, 1, 10), 0);
        assert_eq!(retries(tally(3, 0), none, 1, 10), 10);
        assert_eq!(retries(none, none, 1, 10), 10);
        // 2% of 1,000 trials silent: 3 attempts.
        assert_eq!(retries(tally(1000, 20), none, 1, 10), 1);
        // The host's own losses outweigh a clean sweep.
        assert_eq!(retries(tally(940, 0), tally(4, 2), 1, 10), 10);
        // A host that lost nothing is judged by the sweep.
        assert_eq!(retries(tally(940, 0), tally(9, 0), 1, 10), 0);
        // At 30% each way (about half the attempts lost) the most.
        assert_eq!(retries(tally(200, 100), none, 2, 10), 10);
        // Bounded by the most whatever the rate.
        assert_eq!(retries(tally(10, 10), none, 1, 3), 3);
    }

    #[test]
    fn counting_trials() {
        let mut t = LossTally::default();
        t.first_answer(2);
        t.answer_again();
        t.lost();
        assert_eq!(t, tally(5, 3));
        t.lost();
        assert_eq!(t, tally(6, 4));
    }
}
