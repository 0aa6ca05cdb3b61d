//! [`HostPacing`]: what the scheduler knows about one destination address
//! (attempts in flight and their bound, round trips, the adaptive deadline,
//! the estimate of its ICMP token bucket), and the rules that move it.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::config::ProbeConfig;
use crate::probe::rtt::{self, RttEstimate};

/// The least an attempt waits without an answer before it stops counting
/// against its host's bound.
const QUIET_FLOOR: Duration = Duration::from_millis(10);

/// Retry pacing for one destination address.
///
/// A host that rate-limits its ICMP errors (Linux: a burst of six, then one
/// per second to each peer) turns rejects beyond its budget into silence.
/// Once it has been seen rejecting, its silent ports may be such rejects,
/// so their retries are paced by an estimate of the host's token bucket
/// (emptied by every reject seen, refilled one token per `retry_spacing`):
/// each goes when a token should be there for it - but only when every
/// unfinished port of the host fits in `icmp_pacing_window`. A host with more silent ports than that cannot be
/// told apart in any reasonable time (1000 rejects need some 1000 s from
/// one source), so its retries go at once rather than stretching the sweep
/// for a handful of extra answers.
pub(super) struct HostPacing {
    /// Attempts to this address in flight (and not yet quiet).
    pub(super) in_flight: usize,
    /// Most attempts in flight to this address now.
    pub(super) limit: usize,
    /// Targets waiting for room under `limit`.
    pub(super) waiting: VecDeque<usize>,
    /// Some attempt to this address completed its handshake (and exchange).
    pub(super) answered: bool,
    /// When `limit` was last cut: stalls of attempts started before then
    /// were caused by the old limit and do not cut it again.
    cut_at: Option<Instant>,
    /// The address's measured round trips.
    pub(super) rtt: RttEstimate,
    /// The adaptive connect deadline, watched by attempts in flight.
    pub(super) timeout: Option<watch::Sender<Duration>>,
    /// The host answered some probe with an ICMP error.
    pub(super) icmp_seen: bool,
    /// Targets on this address without a result yet.
    pub(super) unfinished: usize,
    /// Estimate of the host's ICMP token bucket towards us: its level at
    /// `tokens_at` (in tokens; `None` before any reject was seen, when the
    /// bucket is taken to be empty so that the first paced retry waits a
    /// full interval).
    tokens: f64,
    tokens_at: Option<Instant>,
}

/// Linux's `icmp_ratelimit` burst: six tokens.
const ICMP_BURST: f64 = 6.0;

/// Wait for a little more than one whole token: the target refills
/// continuously, and a retry sent exactly one interval after the last
/// reject can find its bucket a hair short.
const TOKEN_MARGIN: f64 = 1.1;

impl HostPacing {
    pub(super) fn new(config: &ProbeConfig) -> HostPacing {
        HostPacing {
            in_flight: 0,
            limit: config.per_host_concurrency.max(1),
            waiting: VecDeque::new(),
            answered: false,
            cut_at: None,
            rtt: RttEstimate::default(),
            timeout: config
                .adaptive
                .then(|| watch::Sender::new(config.connect_timeout)),
            icmp_seen: false,
            unfinished: 0,
            tokens: 0.0,
            tokens_at: None,
        }
    }

    /// An attempt stopped counting against the bound: a waiting target may
    /// go.
    pub(super) fn release(&mut self, ready: &mut VecDeque<usize>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.admit(ready);
    }

    /// Moves one waiting target to `ready` when the host has room; the
    /// scheduler checks the room again when it starts it.
    pub(super) fn admit(&mut self, ready: &mut VecDeque<usize>) {
        if self.in_flight < self.limit {
            if let Some(i) = self.waiting.pop_front() {
                ready.push_back(i);
            }
        }
    }

    /// A handshake completed: the host speaks, and takes one more attempt
    /// at once if it had been cut.
    pub(super) fn on_answer(&mut self, ready: &mut VecDeque<usize>, config: &ProbeConfig) {
        self.answered = true;
        if self.limit < config.per_host_concurrency {
            self.limit += 1;
            self.admit(ready);
        }
    }

    /// A handshake started at `started` stalled while others succeed: half
    /// as many at once as were in flight (counting it), once per
    /// generation of attempts.
    pub(super) fn congested(&mut self, started: Instant) {
        if self.cut_at.is_none_or(|at| started >= at) {
            self.limit = (self.limit.min(self.in_flight + 1) / 2).max(1);
            self.cut_at = Some(Instant::now());
        }
    }

    /// Tells attempts in flight the deadline the new estimate gives, never
    /// below `floor` (from the sweep's longest round trip to any address).
    pub(super) fn publish(&mut self, config: &ProbeConfig, floor: Duration) {
        let t = self
            .rtt
            .timeout(config.min_rtt_timeout.max(floor), config.connect_timeout);
        if let Some(tx) = &self.timeout {
            tx.send_if_modified(|cur| {
                let changed = *cur != t;
                *cur = t;
                changed
            });
        }
    }

    /// After how long without an answer an attempt is taken for silent
    /// (for the per-host bound only, never for its outcome): [`rtt::SAFETY`]
    /// times the longest round trip seen, and at least [`QUIET_FLOOR`].
    /// Before any round trip is known that is the floor: a far host's
    /// first wave is then bounded only by the sweep's concurrency, and
    /// handshakes that stall there are tried again at lower concurrency.
    pub(super) fn quiet_after(&self) -> Duration {
        QUIET_FLOOR.max(self.rtt.max_seen().saturating_mul(rtt::SAFETY))
    }

    pub(super) fn should_pace(&self, config: &ProbeConfig) -> bool {
        let needed = config
            .retry_spacing
            .mul_f64(TOKEN_MARGIN)
            .saturating_mul(u32::try_from(self.unfinished).unwrap_or(u32::MAX));
        self.icmp_seen && needed <= config.icmp_pacing_window
    }

    fn level(&self, now: Instant, config: &ProbeConfig) -> f64 {
        let Some(at) = self.tokens_at else {
            return 0.0;
        };
        let refill = now.duration_since(at).as_secs_f64() / config.retry_spacing.as_secs_f64();
        (self.tokens + refill).min(ICMP_BURST)
    }

    /// One ICMP error was (or is about to be) sent to us at `now`.
    pub(super) fn take_token(&mut self, now: Instant, config: &ProbeConfig) {
        self.tokens = (self.level(now, config) - 1.0).max(0.0);
        self.tokens_at = Some(now);
    }

    /// When the bucket should hold a token for one more reject.
    pub(super) fn token_ready_at(&self, now: Instant, config: &ProbeConfig) -> Instant {
        let missing = TOKEN_MARGIN - self.level(now, config);
        if self.tokens_at.is_none() || missing > 0.0 {
            now + config
                .retry_spacing
                .mul_f64(missing.clamp(0.0, TOKEN_MARGIN))
        } else {
            now
        }
    }
}
