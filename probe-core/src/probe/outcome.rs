//! What a probe observed, as plain data: the outcome taxonomy of
//! `docs/outcomes.md` and the per-target result, so that callers sort and render outcomes
//! instead of unwinding errors.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::errqueue::IcmpEvidence;
use super::target::Target;
use super::ttl_walk::Walk;

/// The raw outcome of probing one target, before any expectation is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Observed {
    /// The TCP handshake completed (and, for `tls`, the TLS handshake).
    Open,
    /// A TCP reset, or an ICMP port-unreachable, came back.
    Refused,
    /// An ICMP error came back (admin-prohibited, host or net unreachable),
    /// or the source has no route.
    Unreachable,
    /// Nothing came back within the deadline, after every retry.
    Timeout,
    /// TCP opened, but the TLS handshake failed or the certificate was
    /// rejected under `--verify`.
    TlsError,
    /// Connected, but the exchange on the stream showed that another host
    /// (or no agent) answered.
    WrongHost,
    /// The prober itself could not try (no free descriptor or buffer, source
    /// address not available, name not resolvable). Never a sign of blocking.
    LocalError,
    /// Connected, but the port answered as another service than the plan's
    /// (or not at all where the planned protocol must answer): right port,
    /// wrong service.
    WrongService,
    /// The attempts disagreed and no retry settled it: some answered, others
    /// were silent or stalled (packet loss on the way). Neither open nor
    /// blocked, and never a verdict about the service or the host: the
    /// counts are in [`ProbeResult::answered`] and the detail.
    Lossy,
}

impl Observed {
    /// Every outcome, in declaration order.
    pub const ALL: [Observed; 9] = [
        Observed::Open,
        Observed::Refused,
        Observed::Unreachable,
        Observed::Timeout,
        Observed::TlsError,
        Observed::WrongHost,
        Observed::LocalError,
        Observed::WrongService,
        Observed::Lossy,
    ];

    /// The kebab-case name used in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Observed::Open => "open",
            Observed::Refused => "refused",
            Observed::Unreachable => "unreachable",
            Observed::Timeout => "timeout",
            Observed::TlsError => "tls-error",
            Observed::WrongHost => "wrong-host",
            Observed::LocalError => "local-error",
            Observed::WrongService => "wrong-service",
            Observed::Lossy => "lossy",
        }
    }

    /// True for outcomes that say something about the network path (as
    /// opposed to `local-error`, which says the prober could not try).
    pub const fn is_network_evidence(self) -> bool {
        !matches!(self, Observed::LocalError)
    }
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Facts about the certificate a TLS server presented, recorded whether or
/// not it verifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertFacts {
    /// The end-entity certificate's subject distinguished name.
    pub subject: String,
    /// The end-entity certificate's issuer distinguished name.
    pub issuer: String,
    /// Subject alternative names, as `DNS:name` / `IP:addr` strings.
    pub sans: Vec<String>,
    /// End of validity, RFC 3339 in UTC.
    pub not_after: String,
    /// True when the chain verifies against the trust roots in use and the
    /// certificate is valid for the name (or address) probed.
    pub verified: bool,
    /// Why verification failed; `None` when `verified` is true.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub verify_error: Option<String>,
}

/// A path that stayed silent through every attempt: how long the last
/// attempt waited, and whether that deadline was the adaptive one (the host's
/// other ports answering much sooner) rather than the plan's `timeout_ms`.
/// The join reads this, never the detail text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// The deadline the last silent attempt waited, in milliseconds.
    pub waited_ms: u64,
    /// The deadline was the host's adaptive one.
    pub adaptive: bool,
    /// The host rejected other ports with ICMP errors, and its ICMP budget
    /// towards us (Linux: `icmp_ratelimit`, `icmp_msgs_per_sec`) was spent
    /// whenever this path was tried: the silence may be a reject the
    /// target's rate limit swallowed as well as a drop. Still `timeout`;
    /// false (and absent from JSON) for a silence that went while a token
    /// was there for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub possibly_rate_limited: bool,
}

/// The result of probing one target: data, never an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// What was probed.
    pub target: Target,
    /// The address connected to; `None` when the name did not resolve.
    pub address: Option<SocketAddr>,
    /// The local address the last connected attempt used (the source the
    /// target saw); `None` when no connection was made.
    pub local_address: Option<SocketAddr>,
    /// The outcome.
    pub observed: Observed,
    /// A short human-readable reason, e.g. `ECONNREFUSED` or the TLS alert.
    pub detail: String,
    /// Duration of the final attempt (connect, plus TLS and exchange when
    /// they ran).
    pub latency: Duration,
    /// The final attempt's TCP connect round trip (SYN to SYN-ACK); `None`
    /// when it did not connect.
    pub connect_time: Option<Duration>,
    /// The final attempt's TLS handshake; `None` when none completed.
    pub tls_time: Option<Duration>,
    /// How many connection attempts (UDP: datagrams) reached the network. Attempts that
    /// failed locally (no descriptor, no ephemeral port) are not counted.
    pub attempts: u32,
    /// Certificate facts, present when a TLS handshake got far enough to
    /// see a certificate (boxed: most results of a sweep have none).
    pub cert: Option<Box<CertFacts>>,
    /// The ICMP error the last attempt's socket queued, with its sender.
    pub icmp: Option<IcmpEvidence>,
    /// TCP opened but TLS (or the exchange) stalled, and a second try with
    /// a small MSS got through: a path-MTU black hole.
    pub path_mtu: bool,
    /// For a `timeout`, the TTL walk toward the target, when one ran.
    pub walk: Option<Walk>,
    /// Every attempt connected and was closed before the far end sent a
    /// byte, where an exchange expected an answer (a canary shedding load):
    /// the outcome measures nothing.
    pub shed: bool,
    /// UDP: datagrams a portcall canary reported receiving (its answers
    /// seen); `None` where no canary answered.
    pub arrived: Option<u32>,
    /// The errno the outcome was read from (a refused or unreachable
    /// connect, a local failure); `None` where no errno decided it.
    pub errno: Option<i32>,
    /// Set when the outcome is silence (`timeout`).
    pub silence: Option<Silence>,
    /// `lossy`: how many of `attempts` got an answer from the target (a
    /// completed handshake, a reset or an ICMP error); `None` otherwise.
    pub answered: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_serialize_kebab_case_and_match_as_str() {
        for o in Observed::ALL {
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(json, format!("\"{}\"", o.as_str()));
            let back: Observed = serde_json::from_str(&json).unwrap();
            assert_eq!(back, o);
        }
        assert_eq!(Observed::TlsError.to_string(), "tls-error");
        assert_eq!(Observed::WrongHost.to_string(), "wrong-host");
        assert_eq!(Observed::LocalError.to_string(), "local-error");
    }
}
