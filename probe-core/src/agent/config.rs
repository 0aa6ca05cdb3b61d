//! An agent's configuration and its errors: the limits that keep it small,
//! which host it plays, and where it listens and probes from.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;

use super::canary::PlannedPort;
use crate::control::{self, ServerSecurity};
use crate::plan::{Address, Plan};
use crate::port::Protocol;
use crate::probe;

/// Limits that keep an agent small and unbothered by misbehaving clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLimits {
    /// Largest request frame, in bytes.
    pub max_request_bytes: usize,
    /// Authenticated (coordinator) control connections at once; when full,
    /// the oldest is closed to make room.
    pub max_connections: usize,
    /// Unauthenticated control connections (handshake and name check in
    /// progress) at once; when full, the oldest is evicted.
    pub pending_connections: usize,
    /// Control connections at once from one address.
    pub connections_per_peer: usize,
    /// Deadline for a client's TLS handshake and authorization; as long as
    /// the coordinator's connect deadline, so that a round of a hundred
    /// agents starting their handshakes at once on a busy host is not
    /// refused by its own agents (slow clients are still bounded by
    /// `pending_connections`, the oldest evicted first).
    pub handshake_timeout: Duration,
    /// How long a control connection may stay silent between requests.
    pub idle_timeout: Duration,
    /// Deadline for writing one reply: a client that stops reading is
    /// disconnected.
    pub write_timeout: Duration,
    /// Requests allowed in a burst, per connection.
    pub request_burst: u32,
    /// Requests per second allowed once the burst is spent, per connection.
    pub requests_per_second: u32,
    /// Malformed frames a connection may send before it is closed (each
    /// also spends a request token).
    pub max_malformed: u32,
    /// Longest round TTL a coordinator may ask for.
    pub max_ttl: Duration,
    /// The round's lease: canaries close this long after the coordinator's
    /// control connection is gone and nothing renewed the round.
    pub lease: Duration,
    /// Deadline of one canary connection: its TLS handshake and the nonce
    /// line must arrive within it.
    pub canary_timeout: Duration,
    /// Canary connections served at once, over all canaries (a memory
    /// bound; each canary also has its own limit, see `canary_headroom`).
    pub canary_connections: usize,
    /// Connections one canary holds beyond the nonces the round makes it
    /// expect; past that, unauthenticated idle connections are shed first.
    pub canary_headroom: usize,
    /// Nonces kept per canary.
    pub max_sightings: usize,
    /// Probe attempts in flight at once.
    pub probe_concurrency: usize,
    /// Probe attempts in flight at once to one target address.
    pub probe_per_host: usize,
}

impl Default for AgentLimits {
    fn default() -> AgentLimits {
        AgentLimits {
            max_request_bytes: control::MAX_REQUEST_BYTES,
            max_connections: 16,
            pending_connections: 64,
            connections_per_peer: 8,
            handshake_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(10),
            request_burst: 40,
            requests_per_second: 20,
            max_malformed: 4,
            max_ttl: Duration::from_secs(600),
            lease: Duration::from_secs(5),
            canary_timeout: Duration::from_secs(3),
            canary_connections: 8192,
            canary_headroom: 64,
            max_sightings: 4096,
            probe_concurrency: 256,
            probe_per_host: probe::DEFAULT_PER_HOST,
        }
    }
}

/// Everything an agent needs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The plan; the agent only ever acts on what it says about `host`.
    pub plan: Arc<Plan>,
    /// The plan host this agent plays.
    pub host: String,
    /// How control clients are authenticated.
    pub security: ServerSecurity,
    /// The name the coordinator's client certificate must carry (SAN, or
    /// CN without SANs): the agent acts for nobody else.
    /// [`crate::pki::COORDINATOR`] unless configured otherwise.
    pub coordinator: String,
    /// The TLS canaries' server configuration.
    pub canary_tls: Arc<ServerConfig>,
    /// Where to serve the control endpoint; `None` means the host's plan
    /// address (or the wildcard address when it is not local) and the
    /// plan's `control_port`. Tests and the demo pass port 0.
    pub listen: Option<SocketAddr>,
    /// Resource and abuse limits.
    pub limits: AgentLimits,
    /// Trace the round's packets through this host's nftables firewall to
    /// name the rule that stops them ([`nftrace`]); needs CAP_NET_ADMIN,
    /// and changes the host's ruleset for the round, so in-process agents
    /// (the demo, tests on loopback) leave it off.
    pub rule_trace: bool,
}

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// `--host` names no host of the plan.
    #[error("host {host:?} is not in plan {plan}{suggestion} (hosts: {known})")]
    UnknownHost {
        /// The name given.
        host: String,
        /// The plan's file.
        plan: String,
        /// "; did you mean ..." or empty.
        suggestion: crate::plan::Suggestion,
        /// The plan's host names.
        known: String,
    },
    /// No plan host has an address of this machine.
    #[error("no host of plan {plan} has an address of this machine; pass --host NAME")]
    NoLocalHost {
        /// The plan's file.
        plan: String,
    },
    /// Several plan hosts have addresses of this machine.
    #[error(
        "several hosts of plan {plan} have addresses of this machine ({candidates}); pass --host NAME"
    )]
    AmbiguousHost {
        /// The plan's file.
        plan: String,
        /// The matching hosts.
        candidates: String,
    },
    /// `--insecure` with a control address that is not loopback.
    #[error("--insecure serves plain TCP, allowed only on loopback; {addr} is not")]
    InsecureNotLoopback {
        /// The control address.
        addr: SocketAddr,
    },
    /// The control endpoint could not be bound.
    #[error("listen on {addr}")]
    Bind {
        /// The control address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The plan host whose address belongs to this machine.
pub fn detect_host(plan: &Plan) -> Result<String, AgentError> {
    let found: Vec<&str> = plan
        .hosts
        .iter()
        .filter(|h| h.addresses.iter().any(|a| local_ip(a).is_some()))
        .map(|h| h.name.as_str())
        .collect();
    match found.as_slice() {
        [one] => Ok((*one).to_string()),
        [] => Err(AgentError::NoLocalHost {
            plan: plan.source.to_string(),
        }),
        many => Err(AgentError::AmbiguousHost {
            plan: plan.source.to_string(),
            candidates: many.join(", "),
        }),
    }
}

/// The address itself when it belongs to this machine (binding to it works),
/// resolving a DNS name first.
pub fn local_ip(address: &Address) -> Option<IpAddr> {
    let candidates: Vec<IpAddr> = match address {
        Address::Ip(ip) => vec![*ip],
        Address::Dns(name) => crate::probe::resolve::resolve_blocking(
            name.as_str(),
            crate::probe::ProbeConfig::default().resolve_timeout,
            &crate::probe::resolve::FamilyPreference::Any,
        )
        .unwrap_or_default(),
    };
    candidates
        .into_iter()
        .find(|ip| std::net::TcpListener::bind((*ip, 0)).is_ok())
}

/// Where this host's sockets bind: its plan address when local, else the
/// wildcard of that address's family (behind NAT the plan address is the
/// outside one).
pub(super) fn bind_ip(address: &Address) -> IpAddr {
    if let Some(ip) = local_ip(address) {
        return ip;
    }
    match address {
        Address::Ip(IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// The planned ports of `host` that some path targets: where its canaries go.
/// A path whose client dials another port (`server_port`) puts the canary
/// where the server listens, so the dialled port stays as empty as it will
/// be in production.
pub fn canary_ports(plan: &Plan, host: &str) -> Vec<PlannedPort> {
    let mut seen = HashSet::new();
    plan.paths
        .iter()
        .filter(|p| p.to == host && p.role.is_some())
        .map(|p| (p, p.server_port.unwrap_or(p.port)))
        // 53/tcp and 53/udp are two canaries.
        .filter(|(p, port)| seen.insert((port.get(), p.protocol == Protocol::Udp)))
        .map(|(p, port)| PlannedPort {
            port: port.get(),
            protocol: p.protocol,
            service: p.service.clone(),
        })
        .collect()
}

impl AgentError {
    /// `host` is not a host of `plan`; the error lists the ones that are.
    pub fn unknown_host(plan: &Plan, host: &str) -> AgentError {
        AgentError::UnknownHost {
            host: host.to_owned(),
            plan: plan.source.to_string(),
            suggestion: crate::plan::Suggestion::closest(
                host,
                plan.hosts.iter().map(|h| h.name.as_str()),
            ),
            known: plan
                .hosts
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}
