//! The control protocol's messages. A round is four requests per agent:
//! `prepare` (canaries up), `probe` (this host's outgoing paths),
//! `evidence` (what the canaries saw), `teardown`; `hello` answers who the
//! agent is without changing anything, and `renew` extends the round's
//! lease (the canaries close a few seconds after the coordinator's control
//! connection is gone and nothing renewed it).

use std::net::{IpAddr, SocketAddr};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::nonce::Nonce;
use crate::port::Protocol;
use crate::probe::{IcmpEvidence, Observed, Walk};

/// The control protocol's version: an agent reports it in `hello` and in
/// `prepared`, a coordinator sends it in `prepare`, and each end refuses a
/// peer of another version with a message naming both ([`VersionMismatch`]).
///
/// Version 2 carries typed evidence: [`TransportProtocol`] instead of a
/// `udp` flag, and handshake sources as addresses.
pub const PROTOCOL_VERSION: u32 = 2;

/// The version a peer that does not say one speaks: the field was added
/// with version 2.
const fn version_one() -> u32 {
    1
}

/// An agent and a coordinator speak different versions of the control
/// protocol: each end refuses the other with a message naming both
/// versions and which side to upgrade (the older one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VersionMismatch {
    /// The coordinator's view: the agent on `host` speaks another version.
    #[error("agent {host} speaks control protocol {agent}, this coordinator {coordinator}: {}", upgrade(.host, *.agent, *.coordinator))]
    Agent {
        /// The agent's host.
        host: String,
        /// The agent's version.
        agent: u32,
        /// This coordinator's version.
        coordinator: u32,
    },
    /// The agent's view: the coordinator speaks another version.
    #[error("coordinator speaks control protocol {coordinator}, this agent ({host}) {agent}: {}", upgrade(.host, *.agent, *.coordinator))]
    Coordinator {
        /// This agent's host.
        host: String,
        /// This agent's version.
        agent: u32,
        /// The coordinator's version.
        coordinator: u32,
    },
}

/// Which side to upgrade: the one with the older version.
fn upgrade(host: &str, agent: u32, coordinator: u32) -> String {
    if agent < coordinator {
        format!("upgrade the agent on {host}")
    } else {
        "upgrade the coordinator".to_owned()
    }
}

/// Whether a port is spoken to over TCP (`tcp` and `tls` ports) or UDP:
/// what tells a host's two canaries on one port number apart.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TransportProtocol {
    /// TCP (a `tcp` or `tls` port).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl From<Protocol> for TransportProtocol {
    fn from(p: Protocol) -> TransportProtocol {
        if p.is_tcp() {
            TransportProtocol::Tcp
        } else {
            TransportProtocol::Udp
        }
    }
}

/// A request from the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Who are you, and which plan do you hold?
    Hello,
    /// Start a round: open canaries on this host's planned ports.
    Prepare(PrepareRequest),
    /// Probe this host's outgoing paths.
    Probe(ProbeRequest),
    /// What did the canaries see?
    Evidence(RoundRef),
    /// Close the canaries now.
    Teardown(RoundRef),
    /// Keep the round's canaries up for another lease.
    Renew(RoundRef),
    /// Trace packets from every address the sources of this host's paths
    /// can arrive from (sent after `prepare`, before `probe`).
    TraceSources(TraceSourcesRequest),
    /// Read-only: this host's network state for the twin (ruleset,
    /// addresses, routes, forwarding, listening planned ports). Answered
    /// only for the coordinator's certificate, like every request.
    State,
}

/// `trace-sources`: every address each source host can send from, as its
/// agent reported them in `prepared` and the coordinator resolved its plan
/// names. A plan names one address per family at most, yet a dual-stack
/// host whose plan address is IPv4 reaches an IPv6-only target from an
/// address the plan never mentions, and a host named by DNS has no
/// address in the plan at all: without these the target's trace table
/// would not mark their packets, and their drops would be blamed on the
/// network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceSourcesRequest {
    /// The round's id.
    pub round: String,
    /// The source hosts of this host's paths, with their addresses (and
    /// the sources of the `forward` flows: their addresses are given once,
    /// here).
    pub sources: Vec<SourceAddresses>,
    /// Sent to a host whose agent reported [`Forwarding`]: the round's TCP
    /// paths between other plan hosts, which may cross it, for its trace
    /// table to mark in the forward hook. Absent from coordinators that
    /// predate it, and ignored by agents that do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward: Vec<ForwardFlow>,
}

/// One path between two other plan hosts that may cross a forwarding
/// host: packets from any of `from`'s addresses (in the request's
/// `sources`) to `dest:port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardFlow {
    /// The source host (its addresses are in the request's `sources`).
    pub from: String,
    /// The target address probed.
    pub dest: IpAddr,
    /// The TCP port dialled.
    pub port: u16,
}

/// Which address families a host forwards (its `net.ipv4.ip_forward` and
/// `net.ipv6.conf.all.forwarding` sysctls), as its agent reports them in
/// `prepared`: such a host may carry paths between other plan hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarding {
    /// IPv4 forwarding is on.
    #[serde(default)]
    pub ipv4: bool,
    /// IPv6 forwarding is on.
    #[serde(default)]
    pub ipv6: bool,
}

impl Forwarding {
    /// Neither family is forwarded.
    pub const fn is_off(&self) -> bool {
        !self.ipv4 && !self.ipv6
    }

    /// Whether packets to `ip` may be forwarded here (its family is on).
    pub const fn carries(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(_) => self.ipv4,
            IpAddr::V6(_) => self.ipv6,
        }
    }
}

/// One host's addresses (all interfaces, both families).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceAddresses {
    /// The plan host.
    pub host: String,
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
}

/// `sources-traced`: how many `address . port` pairs the round's trace
/// table now marks arriving, and why some are not, if so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcesTraced {
    /// The round's id.
    pub round: String,
    /// Pairs the trace table marks arriving.
    pub pairs: usize,
    /// `source . destination . port` triples the trace table marks in the
    /// forward hook (the request's `forward` flows); absent when none.
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub forwarded: usize,
    /// Why the addresses were not (all) added, when they were not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `prepare`: a new round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareRequest {
    /// The round's id (hex).
    pub round: String,
    /// The host the coordinator believes this agent plays.
    pub host: String,
    /// The coordinator's [`super::plan_digest`].
    pub plan_digest: String,
    /// How long the canaries may stay up, in milliseconds, if nobody tears
    /// them down (the agent caps it).
    pub ttl_ms: u64,
    /// The coordinator's [`PROTOCOL_VERSION`] (1 when absent: coordinators
    /// before version 2 sent none).
    #[serde(default = "version_one")]
    pub version: u32,
    /// The round's nonce key ([`crate::probe::canary_line::NonceKey`], 64
    /// hex digits): probers make their nonces under it and canaries accept
    /// only nonces made under it. Absent from coordinators that predate it
    /// (their nonces are then taken as they come).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce_key: Option<String>,
    /// Quality samples per path the round will take (`check --samples`):
    /// more than 1 makes the agent count TCP samples' SYNs in its trace
    /// table; absent (older coordinators) or 1, nothing is added.
    #[serde(default, skip_serializing_if = "is_one_or_less")]
    pub samples: u32,
}

/// The first frame on the input of `agent --stdio --plan -` (under
/// `check --ssh`): the coordinator's plan, so both ends read the same one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanUpload {
    /// The plan file's name on the coordinator, for diagnostics.
    pub source: String,
    /// The plan's TOML text.
    pub plan: String,
}

/// A host's port, naming a target of this host's paths.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostPort {
    /// The target host's name.
    pub host: String,
    /// The port.
    pub port: u16,
    /// TCP or UDP (a host may plan the same number over both).
    #[serde(default)]
    pub transport: TransportProtocol,
}

/// `probe`: measure this host's outgoing paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRequest {
    /// The round's id.
    pub round: String,
    /// Target ports where a real service holds the port: probed live,
    /// without the nonce exchange.
    #[serde(default)]
    pub live: Vec<HostPort>,
    /// Target ports that have nothing to measure against (the target's
    /// agent is down, or could not open the canary): not probed.
    #[serde(default)]
    pub skip: Vec<HostPort>,
    /// Target hosts whose agent is down: none of their ports is probed.
    #[serde(default)]
    pub skip_hosts: Vec<String>,
    /// The ports of `live` held only on other addresses than the planned
    /// one (no canary, nothing on the planned address): a UDP one is sent
    /// a datagram even without a request its service would know, to meet
    /// what its clients meet (the target's port-unreachable). Added in
    /// wave 3; an agent that does not know it sends nothing there, as
    /// before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elsewhere: Vec<HostPort>,
    /// When the round measures part of the plan (`check --only`): the
    /// indices of the paths to probe; `None` for every outgoing path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<usize>>,
    /// Quality samples per path (`check --samples`): more than 1 asks
    /// the source to repeat each open canary path's exchange that many
    /// times after its probe ([`crate::probe::samples`]); 0 or 1 (absent
    /// from older coordinators) samples nothing.
    #[serde(default, skip_serializing_if = "is_one_or_less")]
    pub samples: u32,
}

fn is_one_or_less(n: &u32) -> bool {
    *n <= 1
}

/// Names a round in `evidence` and `teardown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundRef {
    /// The round's id.
    pub round: String,
}

/// A reply from an agent. Read by hand (`control/reply.rs`), without the
/// derived reader's copy of the whole reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Response {
    /// To `hello`.
    Hello(HelloReply),
    /// To `prepare`.
    Prepared(PrepareReply),
    /// To `probe`.
    Probed(ProbeReply),
    /// To `evidence`.
    Evidence(EvidenceReply),
    /// To `teardown`.
    TornDown(RoundRef),
    /// To `renew`.
    Renewed(RenewReply),
    /// To `trace-sources`.
    SourcesTraced(SourcesTraced),
    /// The request was refused or could not be served.
    Error(ErrorReply),
    /// To `state`.
    State(StateReply),
}

/// `state`: what the twin needs of a host, as the host itself reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateReply {
    /// The host the agent plays.
    pub host: String,
    /// `nft -j list ruleset`, verbatim; absent when it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ruleset: Option<String>,
    /// Interfaces with their addresses (`ADDRESS/PREFIX`), loopback and
    /// link-local addresses left out.
    pub interfaces: Vec<InterfaceState>,
    /// Routes of the main table beyond the ones addresses imply.
    pub routes: Vec<RouteState>,
    /// Whether IPv4 or IPv6 forwarding is on.
    pub forwarding: bool,
    /// Planned ports something listens on (`3306/tcp`, `53/udp`).
    pub listening: Vec<String>,
    /// What could not be read, and why (the rest is still reported).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
}

/// One interface of a [`StateReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceState {
    /// Its name.
    pub name: String,
    /// Its addresses with their prefix lengths.
    pub addresses: Vec<String>,
}

/// One route of a [`StateReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteState {
    /// `default` or a network.
    pub to: String,
    /// The next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
}

/// Who the agent is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    /// The host it plays.
    pub host: String,
    /// Its plan's name.
    pub plan: String,
    /// Its plan's digest.
    pub plan_digest: String,
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The plan file it loaded, as it was named to it (agents before this
    /// field existed send none).
    #[serde(default)]
    pub plan_file: Option<String>,
}

/// `renewed`: the round's lease was extended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewReply {
    /// The round's id.
    pub round: String,
    /// How long the lease lasts from now without a further renewal or the
    /// control connection, in milliseconds.
    pub lease_ms: u64,
}

/// What a planned port of this host got for the round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerState {
    /// A canary listens on it.
    Canary,
    /// A real service already holds it: probed live, never stolen.
    Held,
    /// No canary could be opened (say, a port below 1024 without the
    /// privilege to bind it).
    Failed,
}

impl ListenerState {
    /// `canary`, `held` or `failed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ListenerState::Canary => "canary",
            ListenerState::Held => "held",
            ListenerState::Failed => "failed",
        }
    }
}

/// One planned port's listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerReport {
    /// The port.
    pub port: u16,
    /// TCP or TLS.
    pub protocol: Protocol,
    /// The port's name.
    pub service: String,
    /// Canary, held or failed.
    pub state: ListenerState,
    /// Why, for held and failed ports.
    #[serde(default)]
    pub detail: String,
    /// Sockets of other processes that listen on this port (and protocol)
    /// only at addresses the plan does not give the host (loopback,
    /// another interface, the other family): the port then gets no canary
    /// (`failed`), so the path is measured as the service's clients will
    /// find it. Empty (absent) otherwise; agents before it sent none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elsewhere: Vec<ListeningSocket>,
}

/// `sockets` in words, grouped by process in the order first seen:
/// "mariadbd listens on 127.0.0.1:3307 only", "mariadbd listens on
/// 127.0.0.1:3307 and [::1]:3307, an unknown process on 198.18.0.9:3307,
/// only". A process name is what the process chose: control characters
/// are escaped.
pub fn listening_words(sockets: &[ListeningSocket]) -> String {
    let mut groups: Vec<(Option<&str>, Vec<String>)> = Vec::new();
    for s in sockets {
        let who = s.process.as_deref();
        match groups.iter_mut().find(|(w, _)| *w == who) {
            Some((_, at)) => at.push(s.address.to_string()),
            None => groups.push((who, vec![s.address.to_string()])),
        }
    }
    let parts: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(i, (who, at))| {
            let verb = if i == 0 { " listens on " } else { " on " };
            format!("{}{verb}{}", process_words(*who), at.join(" and "))
        })
        .collect();
    if parts.len() > 1 {
        format!("{}, only", parts.join(", "))
    } else {
        format!("{} only", parts.join(""))
    }
}

/// A process's name for people: "an unknown process" when none could be
/// read, else the name with control characters escaped (it is what the
/// process chose).
pub fn process_words(process: Option<&str>) -> String {
    let Some(name) = process else {
        return "an unknown process".to_string();
    };
    let mut out = String::new();
    for c in name.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A socket another process listens on (TCP) or is bound to (UDP), from
/// the host's socket table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListeningSocket {
    /// Where it listens.
    pub address: SocketAddr,
    /// The owning process's name (`/proc/<pid>/comm`); absent when it could
    /// not be read (another user's process without the privilege, or the
    /// scan's bound reached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// The owning process's id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// `prepared`: the round's listeners on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareReply {
    /// The round's id.
    pub round: String,
    /// One per planned port that some path targets.
    pub listeners: Vec<ListenerReport>,
    /// The agent's [`PROTOCOL_VERSION`] (1 when absent: agents before
    /// version 2 sent none).
    #[serde(default = "version_one")]
    pub version: u32,
    /// Every address of the agent's host (all interfaces, both families,
    /// loopback excepted): where its probes may leave from, so targets can
    /// trace them and the join can recognise them. Empty from agents that
    /// predate it or cannot list them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
    /// The families the agent's host forwards; absent when it forwards
    /// neither (and from agents that predate it).
    #[serde(default, skip_serializing_if = "Forwarding::is_off")]
    pub forwarding: Forwarding,
}

/// The prober's side of one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathProbe {
    /// Index of the path in the plan's path list.
    pub path: usize,
    /// The nonce sent after connecting; `None` when the path was probed
    /// live (no canary).
    pub nonce: Option<Nonce>,
    /// The outcome.
    pub observed: Observed,
    /// The prober's detail.
    pub detail: Box<str>,
    /// Duration of the final attempt, in microseconds.
    pub latency_us: u64,
    /// Attempts that reached the network.
    pub attempts: u32,
    /// The local address the connection left from, when it connected.
    pub source: Option<SocketAddr>,
    /// The host name a canary answered with, when one answered (in place
    /// up to 24 bytes: no allocation per path for a usual host name).
    pub answered_by: Option<CompactString>,
    /// The ICMP error that came back, with its sender (boxed: most paths
    /// have none, and a coordinator holds one `PathProbe` per path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<Box<IcmpEvidence>>,
    /// TCP opened, TLS or the exchange stalled, and a small MSS got
    /// through: a path-MTU black hole.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub path_mtu: bool,
    /// For a `timeout`, the TTL walk toward the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walk: Option<Box<Walk>>,
    /// The final attempt's TCP connect round trip (SYN to SYN-ACK), in
    /// microseconds; `None` when it did not connect.
    #[serde(default)]
    pub connect_us: Option<u32>,
    /// The final attempt's TLS handshake, in microseconds; `None` when none
    /// completed.
    #[serde(default)]
    pub tls_us: Option<u32>,
    /// The server certificate's facts, where a TLS handshake saw one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<Box<crate::probe::CertFacts>>,
    /// What a live service that speaks first said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_banner: Option<Box<str>>,
    /// The far end closed every attempt without answering anything, as a
    /// canary shedding load does: the path was not measured.
    #[serde(default)]
    pub shed: bool,
    /// The errno the prober's outcome was read from, if any
    /// ([`crate::probe::ProbeResult::errno`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// The path stayed silent ([`crate::probe::ProbeResult::silence`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence: Option<crate::probe::Silence>,
    /// `lossy`: attempts that got an answer out of `attempts`
    /// ([`crate::probe::ProbeResult::answered`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<u32>,
    /// How far the planned service was proven, where the path connected to
    /// a live service with a planned protocol (`probe::service`); absent
    /// elsewhere (the join says `l4` for any connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<crate::probe::service::Proof>,
    /// What answered the protocol probe, where anything did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_answer: Option<Box<crate::probe::service::ServiceAnswer>>,
    /// The source's own kernel could not resolve the next hop's link-layer
    /// address (ARP or neighbour discovery failed): read from its
    /// neighbour table when the connect failed with an error from the
    /// source's own address.
    /// Boxed: most paths have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbour: Option<Box<NeighbourFailure>>,
    /// The source's count of the path's quality samples (sent, answered,
    /// round trips), where the round sampled and the path was open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Box<crate::probe::samples::SampleTally>>,
}

/// A neighbour entry of the source that never resolved: ARP (IPv4) or
/// neighbour discovery (IPv6) got no answer from `address`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourFailure {
    /// The neighbour (the target itself on its link, else the next hop).
    pub address: IpAddr,
    /// The kernel's state of the entry: `failed` or `incomplete`.
    pub state: String,
}

/// `probed`: results of this host's outgoing paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReply {
    /// The round's id.
    pub round: String,
    /// One per probed path.
    pub results: Vec<PathProbe>,
}

/// A nonce a canary received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    /// The nonce.
    pub nonce: Nonce,
    /// The source address the connection came from (for UDP, the first
    /// datagram's).
    pub source: SocketAddr,
    /// For a UDP canary: how many datagrams carried this nonce (a prober
    /// retries); 0 for TCP, where one connection carries one nonce.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub datagrams: u32,
    /// For a UDP canary: how many quality samples (`PORTCALL-SAMPLE`
    /// datagrams) carried this nonce, counted apart from `datagrams`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub samples: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

// serde's `skip_serializing_if` takes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
const fn is_zero_usize(n: &usize) -> bool {
    *n == 0
}

/// What one canary saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryEvidence {
    /// The canary's port.
    pub port: u16,
    /// Nonces seen, in arrival order (capped).
    pub seen: Vec<Sighting>,
    /// Connections that carried no valid line for this round.
    pub strays: u64,
    /// Sightings dropped because the cap was reached.
    pub dropped: u64,
    /// Connections closed unanswered because the canary was full
    /// (unauthenticated idle ones first): the canary was under load.
    #[serde(default)]
    pub shed: u64,
    /// A UDP canary (its `port` may also have a TCP canary) or a TCP one;
    /// a UDP canary's `strays` counts datagrams, not connections.
    #[serde(default)]
    pub transport: TransportProtocol,
    /// The canary counts quality samples per nonce (`Sighting::samples`);
    /// absent from agents that do not, whose count is then unknown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub counts_samples: bool,
}

impl CanaryEvidence {
    /// A UDP canary's evidence.
    pub fn is_udp(&self) -> bool {
        self.transport == TransportProtocol::Udp
    }
}

impl HostPort {
    /// A UDP port.
    pub fn is_udp(&self) -> bool {
        self.transport == TransportProtocol::Udp
    }
}

/// `evidence`: what this host's canaries saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceReply {
    /// The round's id.
    pub round: String,
    /// One per canary.
    pub canaries: Vec<CanaryEvidence>,
    /// Handshakes the host's kernel saw on its planned ports, per port and
    /// source address, whether or not a connection was accepted; `None`
    /// where the agent cannot watch them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshakes: Option<Vec<Handshake>>,
    /// What this host's nftables tracing saw of the round's packets;
    /// `None` from agents that do not trace (older ones, the demo's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceEvidence>,
    /// TCP quality samples' SYNs that passed this host's input filters,
    /// per source address and port (counted in the round's trace table);
    /// `None` where the agent cannot count (no trace table: no
    /// CAP_NET_ADMIN or no `nft`, older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_samples: Option<Vec<SynSamples>>,
}

/// SYNs of TCP quality samples from one source address to one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynSamples {
    /// The source address.
    pub source: IpAddr,
    /// The port.
    pub port: u16,
    /// How many arrived.
    pub syns: u32,
}

/// Whether an agent could trace its host's firewall during the round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceState {
    /// The round's packets were traced.
    Traced,
    /// Tracing was not possible here (the reason says why).
    Unavailable,
}

impl TraceState {
    /// `traced` or `unavailable`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TraceState::Traced => "traced",
            TraceState::Unavailable => "unavailable",
        }
    }
}

/// Which way a traced packet went, seen from the tracing host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceDirection {
    /// Arriving for one of this host's canary ports.
    In,
    /// Leaving: this host's own probes.
    Out,
    /// Forwarded: a path between two other plan hosts crossing this one
    /// (only traced when the coordinator sent it as a `forward` flow).
    Forward,
}

/// The nftables rule, or chain policy, whose verdict stopped a packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStop {
    /// `FAMILY NAME` of the table.
    pub table: String,
    /// The chain.
    pub chain: String,
    /// The rule's handle; `None` when the chain's policy stopped it.
    pub handle: Option<u64>,
    /// The rule as nft prints it; `None` for a policy, or when it could
    /// not be read back.
    pub text: Option<String>,
    /// The chain's policy (`drop`) when the policy stopped it.
    pub policy: Option<String>,
}

/// The traced packets of one direction, address pair and port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracedFlow {
    /// In (to a canary) or out (a probe).
    pub direction: TraceDirection,
    /// The packets' source address.
    pub source: IpAddr,
    /// Their destination address.
    pub dest: IpAddr,
    /// Their TCP destination port.
    pub port: u16,
    /// Packets traced.
    pub packets: u32,
    /// The first verdict that dropped or rejected one; `None` when every
    /// one passed this host's firewall.
    pub stop: Option<TraceStop>,
}

/// What nftables tracing on the agent's host saw during a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEvidence {
    /// Traced, or not possible.
    pub state: TraceState,
    /// Why tracing was not possible, or what it cannot see (say, rules of
    /// legacy iptables).
    pub reason: Option<String>,
    /// The round's traced packets, by flow (capped).
    pub flows: Vec<TracedFlow>,
}

/// How far a source's handshakes on one port got at this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandshakeStage {
    /// A SYN arrived; the handshake never completed here.
    Syn,
    /// The handshake completed (the kernel accepted the connection).
    Connected,
}

/// One source's handshakes on one planned port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    /// The port.
    pub port: u16,
    /// The source address.
    pub source: IpAddr,
    /// The furthest stage seen.
    pub stage: HandshakeStage,
}

/// `error`: why a request was not served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Lowercase, naming what was wrong.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A coordinator holds one `PathProbe` per path of the round (99,000
    /// in a 100-host mesh of 10 ports): what most paths lack stays boxed,
    /// and the nonce every path has is held in place (24 bytes, where a
    /// boxed text was 16 and a 48-byte allocation), as is a sighting's,
    /// and so is the answering host's name when it is a usual one.
    #[test]
    fn a_path_probe_stays_small() {
        assert!(
            std::mem::size_of::<PathProbe>() <= 232,
            "{} bytes",
            std::mem::size_of::<PathProbe>()
        );
        assert!(
            std::mem::size_of::<Sighting>() <= 64,
            "{} bytes",
            std::mem::size_of::<Sighting>()
        );
        let probe: PathProbe = serde_json::from_str(
            r#"{"path":3,"nonce":"00112233445566778899aabbccddeeff","observed":"open",
                "detail":"","latency_us":1,"attempts":1,"source":null,
                "answered_by":"apim-gateway-node-01"}"#,
        )
        .unwrap();
        assert!(matches!(probe.nonce, Some(Nonce::Hex(_))), "{probe:?}");
        let by = probe.answered_by.expect("answered");
        assert_eq!(by, "apim-gateway-node-01");
        assert!(!by.is_heap_allocated());
    }

    #[test]
    fn a_version_mismatch_names_both_versions_and_the_side_to_upgrade() {
        let old_agent = VersionMismatch::Agent {
            host: "db".into(),
            agent: 1,
            coordinator: 2,
        };
        assert_eq!(
            old_agent.to_string(),
            "agent db speaks control protocol 1, this coordinator 2: upgrade the agent on db"
        );
        let old_coordinator = VersionMismatch::Coordinator {
            host: "db".into(),
            agent: 2,
            coordinator: 1,
        };
        assert_eq!(
            old_coordinator.to_string(),
            "coordinator speaks control protocol 1, this agent (db) 2: upgrade the coordinator"
        );
    }

    #[test]
    fn wire_format_is_tagged_json() {
        let r = Request::Evidence(RoundRef { round: "ab".into() });
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"op":"evidence","round":"ab"}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        let h: Request = serde_json::from_str(r#"{"op":"hello"}"#).unwrap();
        assert_eq!(h, Request::Hello);
        assert!(serde_json::from_str::<Request>(r#"{"op":"format-disk"}"#).is_err());
        // A version 1 coordinator's prepare says no version.
        let p: Request = serde_json::from_str(
            r#"{"op":"prepare","round":"ab","host":"db","plan_digest":"d","ttl_ms":1}"#,
        )
        .unwrap();
        assert!(matches!(p, Request::Prepare(p) if p.version == 1));
        // A coordinator before forward flows sends none; an agent that
        // forwards nothing says nothing of it.
        let t: Request =
            serde_json::from_str(r#"{"op":"trace-sources","round":"ab","sources":[]}"#).unwrap();
        assert!(matches!(&t, Request::TraceSources(t) if t.forward.is_empty()));
        assert!(!serde_json::to_string(&t).unwrap().contains("forward"));
        let prepared: Response =
            serde_json::from_str(r#"{"reply":"prepared","round":"ab","listeners":[]}"#).unwrap();
        assert!(matches!(&prepared, Response::Prepared(p) if p.forwarding.is_off()));
        assert!(
            !serde_json::to_string(&prepared)
                .unwrap()
                .contains("forwarding")
        );
        // An agent that predates forward flows reads a request with them
        // as one without: unknown fields are ignored.
        let with = Request::TraceSources(TraceSourcesRequest {
            round: "ab".into(),
            sources: Vec::new(),
            forward: vec![ForwardFlow {
                from: "client".into(),
                dest: "198.18.2.40".parse().unwrap(),
                port: 7101,
            }],
        });
        let text = serde_json::to_string(&with).unwrap();
        assert!(
            text.contains(r#""forward":[{"from":"client","dest":"198.18.2.40","port":7101}]"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), with);
        // As an agent before forward flows reads it (its request type had
        // no `forward`): the same request without them, not an error.
        #[derive(Deserialize)]
        #[serde(tag = "op", rename_all = "kebab-case")]
        enum OldRequest {
            TraceSources {
                round: String,
                sources: Vec<SourceAddresses>,
            },
        }
        let OldRequest::TraceSources { round, sources } =
            serde_json::from_str::<OldRequest>(&text).unwrap();
        assert_eq!((round.as_str(), sources.len()), ("ab", 0));
        // And a coordinator before `forwarding` reads a new `prepared`.
        #[derive(Deserialize)]
        #[serde(tag = "reply", rename_all = "kebab-case")]
        enum OldResponse {
            Prepared { round: String },
        }
        let new = Response::Prepared(PrepareReply {
            round: "ab".into(),
            listeners: Vec::new(),
            version: PROTOCOL_VERSION,
            addresses: Vec::new(),
            forwarding: Forwarding {
                ipv4: true,
                ipv6: false,
            },
        });
        let text = serde_json::to_string(&new).unwrap();
        assert!(
            text.contains(r#""forwarding":{"ipv4":true,"ipv6":false}"#),
            "{text}"
        );
        let OldResponse::Prepared { round } = serde_json::from_str(&text).unwrap();
        assert_eq!(round, "ab");
        let e = Response::Error(ErrorReply {
            message: "x".into(),
        });
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"reply":"error","message":"x"}"#
        );
    }
}
