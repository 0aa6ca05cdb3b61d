//! [`HostPacing`]: what the scheduler knows about one destination address
//! (attempts in flight and their bound, round trips, the adaptive deadline,
//! the estimate of its ICMP token bucket), and the rules that move it.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::budget::IcmpBudget;
use super::config::ProbeConfig;
use super::loss::LossTally;
use crate::probe::rtt::{self, RttEstimate};

/// The least an attempt waits without an answer before it stops counting
/// against its host's bound.
const QUIET_FLOOR: Duration = Duration::from_millis(10);

/// Pacing for one destination address.
///
/// A host that rate-limits its ICMP errors turns rejects beyond its budget
/// into silence. Once it has been seen rejecting, its attempts go only
/// while its estimated budget ([`IcmpBudget`]) holds a token for each of
/// those in flight, so that a reject is answered and a silence is a drop:
/// always for UDP (a closed UDP port answers with nothing else), and for
/// TCP when every unfinished port of the host fits in
/// `icmp_pacing_window` at the estimated rate. A TCP host with more than
/// that cannot be told apart in any reasonable time (1000 rejects need
/// some 1000 s from one source at Linux's defaults): its attempts go at
/// once, and a silence that no token covered is reported as possibly a
/// rate-limited reject.
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
    /// The estimate of the host's ICMP budget towards us.
    pub(super) budget: IcmpBudget,
    /// Targets waiting for a token of `budget`.
    pub(super) token_waiting: VecDeque<usize>,
    /// One waiting target is in the scheduler's timer queue for when a
    /// token is due.
    pub(super) wake_armed: bool,
    /// Targets with a silence no token covered.
    pub(super) uncovered_targets: usize,
    /// The estimated rate (tokens a second) at which the host had too many
    /// such targets to pace; 0 while it never had.
    given_up_rate: f64,
    /// Attempts to this host's ports that answered, and how many of them
    /// were silent ([`super::loss`]).
    pub(super) loss: LossTally,
}

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
            budget: IcmpBudget::new(Instant::now(), config.retry_spacing),
            token_waiting: VecDeque::new(),
            wake_armed: false,
            uncovered_targets: 0,
            given_up_rate: 0.0,
            loss: LossTally::default(),
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

    /// Whether the host has answered anything: a completed handshake, or a
    /// round trip measured to it (a connect, or a reset from its own
    /// stack, before that attempt's exchange is over).
    pub(super) fn answers(&self) -> bool {
        self.answered || self.rtt.srtt().is_some()
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

    /// Whether attempts to this host wait for a token of its ICMP budget:
    /// once it was seen rejecting, always for UDP; for TCP, a target whose
    /// silences no token covered yet (`needs_token`) when all such targets
    /// of the host fit in `icmp_pacing_window` at the estimated rate (and
    /// the host was not given up on at that rate), any other when all the
    /// host's unfinished targets do.
    pub(super) fn should_pace(&self, config: &ProbeConfig, udp: bool, needs_token: bool) -> bool {
        if !self.icmp_seen {
            return false;
        }
        if udp {
            return true;
        }
        let window = config.icmp_pacing_window.as_secs_f64();
        let rate = self.budget.rate();
        if needs_token {
            self.given_up_rate < rate && self.uncovered_targets as f64 / rate <= window
        } else {
            self.unfinished as f64 / rate <= window
        }
    }

    /// One more target of this host was silent while its budget was spent.
    /// When they are more than the budget passes in `icmp_pacing_window`,
    /// the host is given up on at this rate: its targets waiting for a
    /// token go at once (and their silences are flagged).
    pub(super) fn note_uncovered(&mut self, config: &ProbeConfig, ready: &mut VecDeque<usize>) {
        self.uncovered_targets += 1;
        let rate = self.budget.rate();
        let needed = self.uncovered_targets as f64 / rate;
        if self.given_up_rate < rate && needed > config.icmp_pacing_window.as_secs_f64() {
            self.given_up_rate = rate;
            ready.extend(self.token_waiting.drain(..));
        }
    }

    /// An attempt that held a token is over, or quiet: its token is free
    /// again unless it drew an error (recorded apart). A target waiting
    /// for a token may try again.
    pub(super) fn free_token(&mut self, ready: &mut VecDeque<usize>) {
        self.budget.reserved = self.budget.reserved.saturating_sub(1);
        // Whether or not a wake-up is due later (counted with this token
        // still held): the freed token may be there now.
        if let Some(i) = self.token_waiting.pop_front() {
            ready.push_back(i);
        }
    }
}
