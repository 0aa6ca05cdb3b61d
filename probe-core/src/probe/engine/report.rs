//! What one attempt saw ([`AttemptReport`], [`AttemptKind`]), in a file of
//! its own: the attempt and its connect step produce it, the scheduler, the
//! retry decision and a target's slot read it, and none of them need import
//! the others for it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::probe::errqueue::IcmpEvidence;
use crate::probe::outcome::{CertFacts, Observed};

/// Called once when an attempt turns quiet.
pub(super) type Quiet = Box<dyn FnOnce() + Send + Sync>;

/// What one attempt saw, for the scheduler.
pub(super) struct AttemptReport {
    pub(super) kind: AttemptKind,
    pub(super) started: Instant,
    /// The latest instant its (last) packet may have left: UDP notes it
    /// just after the send returned; TCP uses `started`.
    pub(super) sent: Instant,
    pub(super) latency: Duration,
    pub(super) timing: Timing,
    pub(super) local_address: Option<SocketAddr>,
    pub(super) icmp: Option<IcmpEvidence>,
    pub(super) arrived: Option<u32>,
}

/// When Linux first resends an unanswered SYN (`TCP_TIMEOUT_INIT`).
pub(super) const SYN_RESEND: Duration = Duration::from_secs(1);

/// An answer from the target's own stack to a connect (a SYN-ACK, as
/// `connect::kernel_rtt` reads it, or a reset), with its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Handshake {
    /// Its round trip.
    pub(super) rtt: Duration,
    /// It may have been answered only to a resent SYN (its first SYN, or
    /// the answer to it, was lost): it took [`SYN_RESEND`] or more, and the
    /// kernel did not say it resent nothing.
    pub(super) resent: bool,
}

impl Handshake {
    /// An answer whose time user space saw, with nothing more to ask.
    pub(super) fn seen(rtt: Duration) -> Handshake {
        Handshake { rtt, resent: false }
    }

    /// Its round trip as a sample of the host's, by Karn's rule: none when
    /// it may have answered a resent SYN (resent, or [`SYN_RESEND`] or
    /// longer), which makes it a lost trial of the path instead.
    pub(super) fn sample(self) -> Option<Duration> {
        (self.rtt < SYN_RESEND && !self.resent).then_some(self.rtt)
    }
}

/// How long an attempt's handshakes took, each measured on its own so that
/// neither includes the other (or the exchange after them).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Timing {
    /// The answer of the target's own stack (SYN-ACK or reset), a sample
    /// for its adaptive timeout unless it may have answered a resent SYN.
    pub(super) answer: Option<Handshake>,
    /// The TCP connect round trip (SYN to SYN-ACK); `None` when it did not
    /// connect.
    pub(super) connect: Option<Duration>,
    /// The TLS handshake; `None` when none completed.
    pub(super) tls: Option<Duration>,
}

/// What an attempt's outcome is, before the retry decision.
#[derive(Debug)]
pub(super) enum AttemptKind {
    Final {
        observed: Observed,
        detail: String,
        /// The errno the outcome was read from (a refused or unreachable
        /// connect, ICMP through `SO_ERROR`).
        errno: Option<i32>,
        cert: Option<Box<CertFacts>>,
        /// TCP opened, then TLS or the exchange got no answer in time.
        stalled: bool,
        /// The stall went away with a small MSS: a path-MTU black hole.
        path_mtu: bool,
        /// TCP (and TLS) opened and the exchange got no answer within its
        /// deadline: loss, or a slow far end; `wrong-host` only once it
        /// holds over attempts (see `retry`).
        unanswered: bool,
    },
    Silent {
        /// The deadline it waited.
        waited: Duration,
    },
    /// Closed before the far end sent a byte, where an exchange expected an
    /// answer: retried a few times, never taken for another host.
    Shed {
        observed: Observed,
        detail: String,
        cert: Option<Box<CertFacts>>,
    },
    SelfConnect,
    LocalTransient {
        detail: String,
        errno: Option<i32>,
    },
    LocalPermanent {
        detail: String,
        errno: Option<i32>,
    },
}

impl AttemptKind {
    /// A final outcome that is no stall.
    pub(super) fn outcome(observed: Observed, detail: String, errno: Option<i32>) -> AttemptKind {
        AttemptKind::Final {
            observed,
            detail,
            errno,
            cert: None,
            stalled: false,
            path_mtu: false,
            unanswered: false,
        }
    }
}
