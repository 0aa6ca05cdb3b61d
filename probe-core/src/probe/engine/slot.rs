//! One target's state through a sweep ([`Slot`]), in a file of its own so
//! that the retry decision and the TTL walk read it without importing the
//! scheduler that owns it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::report::{AttemptReport, Timing};
use crate::probe::errqueue::IcmpEvidence;
use crate::probe::outcome::CertFacts;

/// Per-target state, owned by the scheduler loop while the target is under
/// way (its result, once it has one, holds what it found).
#[derive(Default)]
pub(super) struct Slot {
    pub(super) addr: Option<SocketAddr>,
    pub(super) local_address: Option<SocketAddr>,
    pub(super) attempts: u32,
    pub(super) local_failures: u32,
    pub(super) local_since: Option<Instant>,
    pub(super) self_connects: u32,
    /// Attempts closed unanswered (a canary shedding load).
    pub(super) sheds: u32,
    /// Every retry of the final attempt was closed unanswered.
    pub(super) shed: bool,
    /// The attempt in flight holds a token of its host's ICMP budget
    /// (given back when it turns quiet or is over).
    pub(super) paced: bool,
    /// The target is its host's one waiter in the timer queue for a token.
    pub(super) wake: bool,
    /// Some silent attempt went while its host's ICMP budget held a token
    /// for it: the silence is no swallowed reject.
    pub(super) covered: bool,
    /// Silent attempts that went while the budget was spent.
    pub(super) uncovered: u32,
    /// Stalled handshakes tried again at the host's reduced concurrency.
    pub(super) deferrals: u32,
    /// The attempt in flight may be deferred when its handshake stalls.
    pub(super) may_defer: bool,
    /// The attempt in flight no longer counts against its host's bound.
    pub(super) quiet: bool,
    /// The attempt in flight connected at once, and its round trip was
    /// taken then (not again from its report).
    pub(super) sampled: bool,
    /// The deadline the last silent attempt waited.
    pub(super) waited: Duration,
    pub(super) latency: Duration,
    pub(super) timing: Timing,
    pub(super) cert: Option<Box<CertFacts>>,
    pub(super) icmp: Option<IcmpEvidence>,
    pub(super) path_mtu: bool,
    /// UDP: datagrams a canary answered.
    pub(super) arrived: Option<u32>,
    /// What the attempts so far agreed on, for the retry decision: a
    /// stall, a wrong-host reading or a path-MTU suspicion is concluded
    /// only when it holds over attempts (see [`super::retry`]).
    pub(super) tally: Tally,
}

/// How a target's attempts went, counted over all of them: loss makes
/// attempts of one path disagree, a verdict about the port never does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tally {
    /// Attempts the target answered in any way: a completed TCP
    /// handshake, a reset or an ICMP error.
    pub(super) answered: u32,
    /// Attempts that stayed silent.
    pub(super) silent: u32,
    /// Attempts whose TLS handshake stalled after TCP opened.
    pub(super) tls_stalls: u32,
    /// Attempts whose exchange got no answer in time after TCP (and TLS)
    /// opened.
    pub(super) exchange_stalls: u32,
    /// Some attempt completed its TLS handshake: the port speaks TLS.
    pub(super) tls_done: bool,
    /// Attempts whose path-MTU tries said "black hole".
    pub(super) mtu_suspicions: u32,
    /// An attempt ran the path-MTU tries and the small MSS stalled too:
    /// later attempts skip them.
    pub(super) mtu_ruled_out: bool,
    /// The attempt in flight runs the path-MTU tries after a stall.
    pub(super) mtu_tries: bool,
}

impl Slot {
    /// Keeps what an attempt saw for the target's result.
    pub(super) fn record(&mut self, attempt: &AttemptReport) {
        self.latency = attempt.latency;
        self.timing = attempt.timing;
        if attempt.local_address.is_some() {
            self.local_address = attempt.local_address;
        }
        if attempt.icmp.is_some() {
            self.icmp = attempt.icmp.clone();
        }
        if attempt.arrived.is_some() {
            self.arrived = attempt.arrived;
        }
    }
}
