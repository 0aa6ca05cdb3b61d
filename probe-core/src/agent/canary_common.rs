//! What the TCP canaries (`canary`) and the UDP canaries (`udp_canary`)
//! share: the ports to hold, the round's options, the evidence log both
//! record nonces into, and how a failed bind is reported. Its own module so
//! that neither canary module imports the other's internals.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::sync::Semaphore;

use super::listening::Listening;
use crate::control::{
    CanaryEvidence, ListenerState, ListeningSocket, Sighting, TransportProtocol, listening_words,
    process_words,
};
use crate::port::Protocol;
use crate::probe::canary_line::NonceKey;
use crate::probe::classify::error_detail;

/// A planned port this host should hold a canary on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPort {
    /// The port.
    pub port: u16,
    /// TCP or TLS.
    pub protocol: Protocol,
    /// Its name.
    pub service: String,
}

/// What one canary recorded.
#[derive(Debug, Default)]
struct Log {
    seen: Vec<Sighting>,
    strays: u64,
    dropped: u64,
    shed: u64,
    /// Where each nonce sits in `seen` (UDP canaries count repeats).
    index: HashMap<String, usize>,
}

/// The evidence of one round's canaries, shared by their tasks. Keyed by
/// port and whether the canary is UDP: a host may plan 53/tcp and 53/udp.
#[derive(Debug, Default)]
pub struct EvidenceLog {
    logs: Mutex<BTreeMap<(u16, TransportProtocol), Log>>,
}

impl EvidenceLog {
    pub(super) fn record(&self, port: u16, sighting: Option<Sighting>, cap: usize) {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let log = logs.entry((port, TransportProtocol::Tcp)).or_default();
        match sighting {
            Some(s) if log.seen.len() < cap => log.seen.push(s),
            Some(_) => log.dropped += 1,
            None => log.strays += 1,
        }
    }

    /// A datagram carrying `nonce` from `source` at UDP canary `port`: a
    /// nonce seen before counts one more datagram, a new one is kept while
    /// fewer than `cap` are (else counted as dropped).
    pub(crate) fn record_datagram(&self, port: u16, nonce: &str, source: SocketAddr, cap: usize) {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let log = logs.entry((port, TransportProtocol::Udp)).or_default();
        if let Some(&i) = log.index.get(nonce) {
            log.seen[i].datagrams = log.seen[i].datagrams.saturating_add(1);
        } else if log.seen.len() < cap {
            log.index.insert(nonce.to_string(), log.seen.len());
            log.seen.push(Sighting {
                nonce: nonce.into(),
                source,
                datagrams: 1,
                samples: 0,
            });
        } else {
            log.dropped += 1;
        }
    }

    /// A quality sample carrying `nonce` at UDP canary `port`: counted on
    /// the nonce's sighting (a new one, without datagrams, when the probe's
    /// own never arrived, while fewer than `cap` are kept).
    pub(crate) fn record_sample(&self, port: u16, nonce: &str, source: SocketAddr, cap: usize) {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let log = logs.entry((port, TransportProtocol::Udp)).or_default();
        if let Some(&i) = log.index.get(nonce) {
            log.seen[i].samples = log.seen[i].samples.saturating_add(1);
        } else if log.seen.len() < cap {
            log.index.insert(nonce.to_string(), log.seen.len());
            log.seen.push(Sighting {
                nonce: nonce.into(),
                source,
                datagrams: 0,
                samples: 1,
            });
        } else {
            log.dropped += 1;
        }
    }

    /// `n` datagrams at UDP canary `port` that carried no line of this
    /// round.
    pub(crate) fn stray_datagrams(&self, port: u16, n: u64) {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.entry((port, TransportProtocol::Udp))
            .or_default()
            .strays += n;
    }

    /// Registers a canary, so that its evidence is listed even when it saw
    /// nothing.
    pub(crate) fn open(&self, port: u16, transport: TransportProtocol) {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((port, transport))
            .or_default();
    }

    pub(super) fn shed(&self, port: u16) {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.entry((port, TransportProtocol::Tcp)).or_default().shed += 1;
    }

    /// Everything recorded so far, one entry per canary port.
    pub fn snapshot(&self) -> Vec<CanaryEvidence> {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.iter()
            .map(|((port, transport), l)| CanaryEvidence {
                port: *port,
                seen: l.seen.clone(),
                strays: l.strays,
                dropped: l.dropped,
                shed: l.shed,
                transport: *transport,
                counts_samples: *transport == TransportProtocol::Udp,
            })
            .collect()
    }
}

/// How the canaries of one round behave.
#[derive(Debug, Clone)]
pub struct CanaryOptions {
    /// The host this agent plays (sent in every answer).
    pub host: Arc<str>,
    /// The round's id.
    pub round: Arc<str>,
    /// Server configuration for TLS canaries.
    pub tls: Arc<ServerConfig>,
    /// Deadline for one connection's TLS handshake and line.
    pub exchange_timeout: Duration,
    /// Most sightings kept per canary.
    pub max_sightings: usize,
    /// Most canary connections served at once, over all canaries.
    pub connections: Arc<Semaphore>,
    /// Most connections one canary holds at once (the nonces the round
    /// makes it expect, plus headroom).
    pub per_canary: usize,
    /// The round's nonce key: a nonce not made under it is forged (counted
    /// as a stray, never recorded). `None` when the coordinator sent none.
    pub nonce_key: Option<NonceKey>,
}

/// Why a canary could not bind `addr`: `held` when a service listens
/// there (probed live), `failed` otherwise, with the detail. `own` says
/// the host's socket table shows this agent's own socket there (an
/// earlier round's canary not yet closed): never a live service, so the
/// port is `failed`, not `held`.
pub(super) fn bind_failure(
    addr: SocketAddr,
    port: u16,
    e: &std::io::Error,
    own: bool,
) -> (ListenerState, String) {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) if own => (
            ListenerState::Failed,
            format!(
                "this agent's own canary of an earlier round still holds {addr}; no canary this round"
            ),
        ),
        Some(libc::EADDRINUSE) => (
            ListenerState::Held,
            format!("a service already listens on {addr}; probed live"),
        ),
        Some(libc::EACCES) if port < 1024 => (
            ListenerState::Failed,
            format!("cannot listen on {addr}: ports below 1024 need root or CAP_NET_BIND_SERVICE"),
        ),
        _ => (
            ListenerState::Failed,
            format!("cannot listen on {addr}: {}", error_detail(e)),
        ),
    }
}

/// What a planned port gets this round, from the host's sockets on it
/// (the agent's own left out: they are never a live service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    /// No other process holds the port: a canary on every address, as far
    /// as the binds allow.
    Canary,
    /// Another process listens on a canary address (or a wildcard that
    /// covers it): probed live, with the detail naming it.
    Live(String),
    /// Other processes hold the port only at addresses the canaries would
    /// not use: no canary, so the path is measured as clients find it.
    Elsewhere(Vec<ListeningSocket>),
}

/// The canary decision for `port` over `transport` at `ips`; `listening`
/// is `None` where the host's sockets cannot be listed (the binds alone
/// decide then, as they always did).
pub(super) fn decide(
    listening: Option<&Listening>,
    ips: &[IpAddr],
    port: u16,
    transport: TransportProtocol,
) -> Decision {
    let Some(listening) = listening else {
        return Decision::Canary;
    };
    let foreign: Vec<_> = listening.foreign(port, transport).collect();
    if let Some(l) = foreign.iter().find(|l| ips.iter().any(|ip| l.covers(*ip))) {
        let wire = l.to_wire();
        let who = match wire.process.as_deref() {
            Some(name) => format!(
                "{} (pid {})",
                process_words(Some(name)),
                wire.pid.unwrap_or(0)
            ),
            None => "a service".to_string(),
        };
        let udp = transport == TransportProtocol::Udp;
        let detail = if udp {
            format!(
                "{who} already holds {}/udp; probed live where portcall knows a request of its protocol",
                l.local
            )
        } else {
            format!("{who} already listens on {}; probed live", l.local)
        };
        return Decision::Live(detail);
    }
    // A host planned at loopback addresses (the demo, loopback tests)
    // shares its machine with the other pretend hosts: a socket at another
    // address is theirs, or the machine's, never this host's service.
    let pretend = ips.iter().all(IpAddr::is_loopback);
    if foreign.is_empty() || pretend {
        Decision::Canary
    } else {
        Decision::Elsewhere(foreign.iter().map(|l| l.to_wire()).collect())
    }
}

/// The detail of a port left without a canary because its service
/// listens elsewhere only.
pub(super) fn elsewhere_detail(sockets: &[ListeningSocket]) -> String {
    format!(
        "{}; no canary, so the port is measured as the service's clients find it",
        listening_words(sockets)
    )
}

#[cfg(test)]
mod tests {
    use super::super::listening::{Listener, Owner};
    use super::*;

    fn sock(addr: &str, owner: Owner) -> Listener {
        Listener {
            transport: TransportProtocol::Tcp,
            local: addr.parse().unwrap(),
            v6only: true,
            owner,
        }
    }

    fn mariadbd() -> Owner {
        Owner::Process {
            pid: 42,
            name: "mariadbd".into(),
        }
    }

    #[test]
    fn a_port_held_only_elsewhere_gets_no_canary_and_one_held_here_is_live() {
        let db: IpAddr = "198.18.0.42".parse().unwrap();
        let decide_with = |sockets: Vec<Listener>| {
            decide(
                Some(&Listening { sockets }),
                &[db],
                3307,
                TransportProtocol::Tcp,
            )
        };
        // Nothing holds it, or only this agent (an earlier round's
        // canary), or something on another port or protocol: a canary.
        assert_eq!(decide_with(vec![]), Decision::Canary);
        assert_eq!(
            decide_with(vec![sock("198.18.0.42:3307", Owner::Agent)]),
            Decision::Canary
        );
        let mut udp = sock("127.0.0.1:3307", mariadbd());
        udp.transport = TransportProtocol::Udp;
        assert_eq!(
            decide_with(vec![udp, sock("127.0.0.1:3306", mariadbd())]),
            Decision::Canary
        );
        // Loopback only, another interface, the other family: elsewhere.
        for at in ["127.0.0.1:3307", "198.18.200.42:3307", "[::]:3307"] {
            match decide_with(vec![sock(at, mariadbd())]) {
                Decision::Elsewhere(s) => {
                    assert_eq!(s[0].address.to_string(), at);
                    assert_eq!(s[0].process.as_deref(), Some("mariadbd"));
                    assert_eq!(
                        elsewhere_detail(&s),
                        format!(
                            "mariadbd listens on {at} only; no canary, so the port is measured as the service's clients find it"
                        )
                    );
                }
                other => panic!("{at}: {other:?}"),
            }
        }
        // On the plan address or a wildcard covering it: live, named.
        for at in ["198.18.0.42:3307", "0.0.0.0:3307"] {
            assert_eq!(
                decide_with(vec![
                    sock("127.0.0.1:3307", mariadbd()),
                    sock(at, mariadbd())
                ]),
                Decision::Live(format!(
                    "mariadbd (pid 42) already listens on {at}; probed live"
                )),
                "{at}"
            );
        }
        let mut dual = sock("[::]:3307", Owner::Unknown);
        dual.v6only = false;
        assert_eq!(
            decide_with(vec![dual]),
            Decision::Live("a service already listens on [::]:3307; probed live".into())
        );
        // No listing (not Linux): the binds decide, as before.
        assert_eq!(
            decide(None, &[db], 3307, TransportProtocol::Tcp),
            Decision::Canary
        );
        // A host planned on loopback shares its machine with the other
        // pretend hosts (the demo): a socket elsewhere is not its own.
        assert_eq!(
            decide(
                Some(&Listening {
                    sockets: vec![sock("127.0.0.1:3307", mariadbd())]
                }),
                &["127.0.9.2".parse().unwrap()],
                3307,
                TransportProtocol::Tcp
            ),
            Decision::Canary
        );
    }

    #[test]
    fn several_sockets_are_said_by_process_and_a_process_name_is_escaped() {
        let s = |a: &str, p: Option<&str>| ListeningSocket {
            address: a.parse().unwrap(),
            process: p.map(str::to_string),
            pid: None,
        };
        assert_eq!(
            listening_words(&[
                s("127.0.0.1:3307", Some("mariadbd")),
                s("[::1]:3307", Some("mariadbd")),
                s("198.18.200.9:3307", None),
                s("198.18.200.10:3307", Some("evil\u{1b}[2J")),
            ]),
            "mariadbd listens on 127.0.0.1:3307 and [::1]:3307, an unknown process on 198.18.200.9:3307, evil\\u{1b}[2J on 198.18.200.10:3307, only"
        );
    }
}
