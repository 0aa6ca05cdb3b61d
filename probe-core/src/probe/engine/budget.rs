//! [`IcmpBudget`]: a lower bound on how many ICMP errors a destination may
//! still send us, from the ICMP errors it did send, so that a silent attempt
//! can be told apart from a reject its rate limit swallowed.
//!
//! Linux limits the ICMP errors it sends with two token buckets (both per
//! network namespace, sysctls under `net.ipv4`): one per peer
//! (`icmp_ratelimit`, 1000 ms a token, a burst of six, for the types in
//! `icmp_ratemask`, which include destination-unreachable), and one for the
//! whole host (`icmp_msgs_per_sec` 1000 credits a second, `icmp_msgs_burst`
//! 50; an error costs one to three credits). A reject beyond either budget
//! is silence, exactly like a firewall's drop.
//!
//! The estimate starts as the per-peer bucket at its defaults and replays
//! every ICMP error seen (at the instant the attempt that drew it was sent)
//! through it (the host-wide one 25 ms late: Linux hands its credits out
//! at most every 20 ms). A host that sends more than that bucket allows has the
//! per-peer limit off (or wider), and its estimate becomes the host-wide
//! bucket with every error at its dearest (16 tokens, 333 a second). Both
//! are lower bounds of the real bucket as long as our own probes are what
//! spends it: the level never drops below zero (an error we saw was sent,
//! so the real bucket had it), and refills no faster than the real one.
//!
//! An attempt sent while the estimate held a whole token would have been
//! answered with an ICMP error had it been rejected: its silence is a drop
//! ([`IcmpBudget::covered`]). One sent while it was spent proves nothing;
//! the scheduler tries it again when a token should be there for it.

use std::time::Duration;

use tokio::time::Instant;

/// Linux's per-peer burst (`XRLIM_BURST_FACTOR`).
const PEER_BURST: f64 = 6.0;

/// The host-wide bucket as tokens of one error at its dearest (three
/// credits): `icmp_msgs_burst` 50 / 3 and `icmp_msgs_per_sec` 1000 / 3.
const HOST_BURST: f64 = 16.0;
const HOST_RATE: f64 = 333.0;

/// How long the host-wide bucket may hold back credits it has earned:
/// Linux refills it only when it is empty and at least `HZ / 50` (20 ms)
/// after its last refill (a few jiffies more at a coarse `HZ`).
const HOST_LAG: Duration = Duration::from_millis(25);

/// A token counts as there only with this much to spare: the target's clock
/// and ours differ by the paths' jitter.
const MARGIN: f64 = 0.1;

/// Where the estimate stands.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    burst: f64,
    /// Tokens a second.
    rate: f64,
}

/// The estimate of one destination's ICMP budget towards us.
#[derive(Debug, Clone)]
pub(super) struct IcmpBudget {
    bucket: Bucket,
    /// When the sweep began: the bucket is taken to be full then.
    start: Instant,
    /// When each attempt that drew an ICMP error may have sent the packet
    /// that drew it at the earliest, in order: what the level is read
    /// from (an error counts against every packet that may have left
    /// after it).
    spent: Vec<Instant>,
    /// The same at the latest, in order: what tells the per-peer bucket
    /// overdrawn (errors as far apart as they may have been).
    spent_late: Vec<Instant>,
    /// Attempts in flight that may draw an error and were counted against
    /// the level when they left.
    pub(super) reserved: usize,
}

/// When the packet that drew an ICMP error left, for a TCP attempt that
/// started at `started` and learnt of the error at `now`: the kernel
/// resends an unanswered SYN 1, 3, 7, 15, ... s after the first, and an
/// error that came back after a resend answers the latest one (recorded at
/// the attempt's start it would look like one error too many in the first
/// burst).
pub(super) fn syn_sent(started: Instant, now: Instant) -> Instant {
    let elapsed = now.saturating_duration_since(started);
    let mut resend = Duration::ZERO;
    let mut next = Duration::from_secs(1);
    while next <= elapsed {
        resend = next;
        next = next * 2 + Duration::from_secs(1);
    }
    started + resend
}

impl IcmpBudget {
    /// A full per-peer bucket at `start`; `per_token` is the per-peer
    /// refill interval assumed (`icmp_ratelimit`).
    pub(super) fn new(start: Instant, per_token: Duration) -> IcmpBudget {
        IcmpBudget {
            bucket: Bucket {
                burst: PEER_BURST,
                rate: 1.0 / per_token.as_secs_f64().max(1e-3),
            },
            start,
            spent: Vec::new(),
            spent_late: Vec::new(),
            reserved: 0,
        }
    }

    /// The per-peer limit was seen to be off: the host-wide bucket bounds
    /// the estimate.
    pub(super) fn host_wide(&self) -> bool {
        self.bucket.burst > PEER_BURST
    }

    /// Tokens refilled a second, as estimated.
    pub(super) fn rate(&self) -> f64 {
        self.bucket.rate
    }

    /// ICMP errors seen.
    pub(super) fn errors(&self) -> usize {
        self.spent.len()
    }

    /// An attempt whose packet left between `earliest` and `latest` drew
    /// an ICMP error. When the estimate
    /// could not have sent it, the per-peer limit is not what bounds this
    /// host: the estimate becomes the host-wide bucket.
    pub(super) fn record(&mut self, earliest: Instant, latest: Instant) {
        let at = self.spent.partition_point(|s| *s <= earliest);
        self.spent.insert(at, earliest);
        let at = self.spent_late.partition_point(|s| *s <= latest);
        self.spent_late.insert(at, latest);
        if !self.host_wide() && self.overdrawn() {
            self.bucket = Bucket {
                burst: HOST_BURST,
                rate: HOST_RATE,
            };
        }
    }

    /// Whether replaying the errors seen through the estimate ever needs a
    /// token it does not hold.
    fn overdrawn(&self) -> bool {
        let mut level = self.bucket.burst;
        let mut last = self.start;
        for &s in &self.spent_late {
            level = self.refill(level, last, s);
            last = last.max(s);
            if level < 1.0 - MARGIN {
                return true;
            }
            level -= 1.0;
        }
        false
    }

    fn refill(&self, level: f64, from: Instant, to: Instant) -> f64 {
        let dt = to.saturating_duration_since(from).as_secs_f64();
        (level + dt * self.bucket.rate).min(self.bucket.burst)
    }

    /// The estimated level just before `t`: the bucket full at the start,
    /// one token less for every error drawn by an attempt sent before `t`,
    /// never below zero. The host-wide bucket earns its credits
    /// continuously but hands them out only when it is empty and
    /// [`HOST_LAG`] has passed since its last refill: its level at `t` is
    /// taken to be the continuous one `HOST_LAG` earlier, less the errors
    /// drawn since.
    pub(super) fn level_at(&self, t: Instant) -> f64 {
        if !self.host_wide() {
            return self.replay(t);
        }
        let earlier = t
            .checked_sub(HOST_LAG)
            .unwrap_or(self.start)
            .max(self.start);
        let recent = self
            .spent
            .iter()
            .filter(|s| **s >= earlier && **s < t)
            .count();
        (self.replay(earlier) - recent as f64).max(0.0)
    }

    fn replay(&self, t: Instant) -> f64 {
        let mut level = self.bucket.burst;
        let mut last = self.start;
        for &s in self.spent.iter().take_while(|s| **s < t) {
            level = (self.refill(level, last, s) - 1.0).max(0.0);
            last = last.max(s);
        }
        self.refill(level, last, t)
    }

    /// Whether an attempt sent at `sent` had a token waiting: its silence
    /// is no swallowed reject.
    pub(super) fn covered(&self, sent: Instant) -> bool {
        self.level_at(sent) >= 1.0 + MARGIN
    }

    /// Whether one more attempt that may draw an error fits now, beside
    /// those in flight.
    pub(super) fn room(&self, now: Instant) -> bool {
        self.level_at(now) - self.reserved as f64 >= 1.0 + MARGIN
    }

    /// When one more attempt should fit, if nothing else changes.
    pub(super) fn ready_at(&self, now: Instant) -> Instant {
        let missing = 1.0 + MARGIN + self.reserved as f64 - self.level_at(now);
        if missing <= 0.0 {
            return now;
        }
        let lag = if self.host_wide() {
            HOST_LAG
        } else {
            Duration::ZERO
        };
        now + Duration::from_secs_f64(missing / self.bucket.rate) + lag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn budget() -> (IcmpBudget, Instant) {
        let t0 = Instant::now();
        (IcmpBudget::new(t0, Duration::from_secs(1)), t0)
    }

    /// Linux defaults: six errors at once, then the bucket is spent; an
    /// attempt sent before them was covered, one sent after is not, and
    /// a second later one token is back.
    #[test]
    fn six_errors_spend_a_peer_bucket() {
        let (mut b, t0) = budget();
        for k in 0..6 {
            b.record(t0 + ms(10 + k), t0 + ms(10 + k));
        }
        assert!(!b.host_wide());
        assert!(b.covered(t0 + ms(5)));
        assert!(!b.covered(t0 + ms(20)));
        assert!(!b.room(t0 + ms(20)));
        let ready = b.ready_at(t0 + ms(20));
        assert!(ready > t0 + ms(1000) && ready < t0 + ms(1200), "{ready:?}");
        assert!(b.covered(t0 + ms(1200)));
    }

    /// A seventh error within the burst: the per-peer limit is off, and
    /// the host-wide bucket bounds the estimate.
    #[test]
    fn more_errors_than_a_peer_bucket_allows_switch_to_the_host_bucket() {
        let (mut b, t0) = budget();
        for k in 0..7 {
            b.record(
                t0 + ms(10) + Duration::from_micros(k * 10),
                t0 + ms(10) + Duration::from_micros(k * 10),
            );
        }
        assert!(b.host_wide());
        // Nine of the host-wide burst are left.
        assert!(b.covered(t0 + ms(11)));
        for k in 7..16 {
            b.record(
                t0 + ms(10) + Duration::from_micros(k * 10),
                t0 + ms(10) + Duration::from_micros(k * 10),
            );
        }
        // 16 errors within a fraction of a millisecond spend it.
        assert!(!b.covered(t0 + ms(10) + Duration::from_micros(170)));
        // Credits earned since are handed out only some 20 ms later.
        assert!(!b.covered(t0 + ms(20)));
        assert!(b.covered(t0 + ms(45)));
    }

    #[test]
    fn an_error_after_a_syn_resend_answers_the_resend() {
        let t0 = Instant::now();
        assert_eq!(syn_sent(t0, t0 + ms(999)), t0);
        assert_eq!(syn_sent(t0, t0 + ms(1001)), t0 + ms(1000));
        assert_eq!(syn_sent(t0, t0 + ms(3500)), t0 + ms(3000));
        assert_eq!(syn_sent(t0, t0 + ms(7000)), t0 + ms(7000));
    }

    /// Attempts in flight hold their token until they are over.
    #[test]
    fn reservations_take_room() {
        let (mut b, t0) = budget();
        assert!(b.room(t0));
        b.reserved = 4;
        assert!(b.room(t0));
        b.reserved = 5;
        assert!(!b.room(t0));
        assert!(b.ready_at(t0) > t0);
        // Errors recorded out of order are replayed in order.
        let (mut b, t0) = budget();
        b.record(t0 + ms(30), t0 + ms(30));
        b.record(t0 + ms(10), t0 + ms(10));
        assert_eq!(b.errors(), 2);
        assert!((b.level_at(t0 + ms(20)) - 5.0).abs() < 0.1);
    }
}
