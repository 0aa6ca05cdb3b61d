//! The per-host agent: it serves the control endpoint, and for each round
//! holds canaries on its host's planned ports, probes its host's outgoing
//! paths from the host's own address, and hands back both sides' evidence.
//! `portcall agent` runs one; `portcall demo` runs one per plan host in a
//! single process, through exactly this code.
//!
//! Everything an agent does on request is bounded: request size
//! ([`crate::control::MAX_REQUEST_BYTES`]), request rate per connection,
//! connections at once (per address, unauthenticated ones evicted first;
//! see `endpoint`), the time a client may take to handshake, send a
//! request or read a reply, and the life of every canary: a short lease
//! held by the coordinator's control connection (and renewed by its
//! requests), under the round's TTL as the outer bound.
//!
//! Authorization is by name: an agent acts only for the client certificate
//! that names the coordinator ([`AgentConfig::coordinator`]).

pub mod canary;
mod canary_common;
mod canary_line;
mod endpoint;
pub mod nftrace;
mod sock_diag;
mod stdio;
pub mod syn_watch;
pub mod udp_canary;

pub use stdio::{StdioPlan, serve_stdio};

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::{
    self, ErrorReply, EvidenceReply, FrameError, HelloReply, HostPort, PROTOCOL_VERSION, PathProbe,
    PrepareReply, PrepareRequest, ProbeReply, ProbeRequest, RenewReply, Request, Response,
    RoundRef, ServerSecurity, VersionMismatch, read_frame, write_frame,
};
use crate::plan::{Address, Plan};
use crate::port::Protocol;
use crate::probe::{self, ProbeConfig, Prober, Target};
use canary::{CanaryOptions, EvidenceLog, NonceExchange, PlannedPort};
use endpoint::{Admission, Bucket, Refusal, SlotLimits, Ticket};
use nftrace::{TraceScope, Tracer};

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
        Address::Dns(name) => (name.as_str(), 0)
            .to_socket_addrs()
            .map(|it| it.map(|a| a.ip()).collect())
            .unwrap_or_default(),
    };
    candidates
        .into_iter()
        .find(|ip| std::net::TcpListener::bind((*ip, 0)).is_ok())
}

/// Where this host's sockets bind: its plan address when local, else the
/// wildcard of that address's family (behind NAT the plan address is the
/// outside one).
fn bind_ip(address: &Address) -> IpAddr {
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

/// A bound, not yet serving, agent.
#[derive(Debug)]
pub struct Agent {
    listener: TcpListener,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: AgentConfig,
    digest: String,
    /// Where canaries listen: every plan address of this host that is
    /// local, else the wildcard of its primary's family.
    canary_ips: Vec<IpAddr>,
    /// The plan addresses of this host that are local: probes leave from
    /// the one of their target's family.
    sources: Vec<IpAddr>,
    round: Mutex<Option<Round>>,
    probing: tokio::sync::Mutex<()>,
    admission: Arc<Admission>,
    canary_connections: Arc<Semaphore>,
    /// Nonces each canary port must expect in a round (paths to it).
    expected: HashMap<u16, usize>,
}

/// The round in progress (or the last one, whose evidence stays readable
/// until the next `prepare`).
#[derive(Debug)]
struct Round {
    id: String,
    cancel: CancellationToken,
    tracker: TaskTracker,
    expires: Instant,
    log: Arc<EvidenceLog>,
    lease: Arc<Lease>,
    /// The round's rule tracing, or why there is none; `None` when the
    /// agent does not trace.
    trace: Option<Result<Arc<Tracer>, String>>,
    handshakes: Arc<syn_watch::SynLog>,
}

/// A round's lease: held while the coordinator's control connection that
/// prepared it is open (TCP keepalive probes it), renewed by every request
/// naming the round; it lapses `duration` after the last sign of life.
#[derive(Debug)]
struct Lease {
    duration: Duration,
    holders: AtomicUsize,
    last: Mutex<Instant>,
}

impl Lease {
    fn renew(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn hold(self: &Arc<Self>) -> LeaseHold {
        self.holders.fetch_add(1, Ordering::SeqCst);
        self.renew();
        LeaseHold(self.clone())
    }

    /// When the lease lapses if nothing renews it; `None` while held.
    fn lapses_at(&self) -> Option<Instant> {
        if self.holders.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(*self.last.lock().unwrap_or_else(|e| e.into_inner()) + self.duration)
    }
}

/// A control connection holding a round's lease.
#[derive(Debug)]
struct LeaseHold(Arc<Lease>);

impl Drop for LeaseHold {
    fn drop(&mut self) {
        self.0.renew();
        self.0.holders.fetch_sub(1, Ordering::SeqCst);
    }
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

impl Agent {
    /// Checks the configuration and binds the control endpoint.
    pub async fn bind(config: AgentConfig) -> Result<Agent, AgentError> {
        let shared = Shared::new(config)?;
        let config = &shared.config;
        let ip = match config.plan.host(&config.host) {
            Some(h) => bind_ip(&h.address),
            None => return Err(AgentError::unknown_host(&config.plan, &config.host)),
        };
        let addr = config
            .listen
            .unwrap_or_else(|| SocketAddr::new(ip, config.plan.defaults.control_port.get()));
        if matches!(config.security, ServerSecurity::Insecure) && !addr.ip().is_loopback() {
            return Err(AgentError::InsecureNotLoopback { addr });
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AgentError::Bind { addr, source })?;
        Ok(Agent { listener, shared })
    }

    /// Where the control endpoint listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The host this agent plays.
    pub fn host(&self) -> &str {
        &self.shared.config.host
    }

    /// Serves until `cancel` fires, then closes canaries and connections.
    pub async fn run(self, cancel: CancellationToken) {
        let Agent { listener, shared } = self;
        let conns = TaskTracker::new();
        if shared.config.rule_trace {
            // Trace tables an earlier agent left when it was killed: the
            // expired ones go now, the others at their expiry.
            for (table, expiry) in nftrace::sweep(nftrace::unix_now()).await {
                tokio::spawn(nftrace::delete_at(table, expiry));
            }
        }
        tracing::info!(host = %shared.config.host, addr = %listener.local_addr().map_or_else(|_| "?".to_string(), |a| a.to_string()), "agent serving");
        let mut summary = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = summary.tick() => {
                    shared.admission.refusals.flush(false);
                }
                accepted = listener.accept() => {
                    let Ok((tcp, peer)) = accepted else {
                        // EMFILE and friends: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    // Over its per-address limit with only authenticated
                    // connections: closed at once, counted in the summary.
                    let Some(ticket) = shared.admission.admit(peer.ip()) else {
                        continue;
                    };
                    let (shared, cancel) = (shared.clone(), cancel.clone());
                    conns.spawn(async move {
                        let evicted = ticket.evicted.clone();
                        tokio::select! {
                            () = cancel.cancelled() => {}
                            () = evicted.cancelled() => {}
                            () = shared.connection(tcp, peer, &ticket) => {}
                        }
                    });
                }
            }
        }
        shared.admission.refusals.flush(true);
        drop(listener);
        shared.end_round(None).await;
        conns.close();
        conns.wait().await;
    }
}

impl Shared {
    /// Checks that the plan has the host and sets up the agent's state.
    fn new(config: AgentConfig) -> Result<Arc<Shared>, AgentError> {
        let plan = &config.plan;
        let Some(host) = plan.host(&config.host) else {
            return Err(AgentError::unknown_host(plan, &config.host));
        };
        let ip = bind_ip(&host.address);
        let sources: Vec<IpAddr> = host.addresses.iter().filter_map(local_ip).collect();
        let canary_ips = if sources.is_empty() {
            vec![ip]
        } else {
            sources.clone()
        };
        let limits = &config.limits;
        let mut expected: HashMap<u16, usize> = HashMap::new();
        for p in plan.paths.iter().filter(|p| p.to == config.host) {
            *expected.entry(p.port.get()).or_default() += 1;
        }
        Ok(Arc::new(Shared {
            digest: control::plan_digest(plan),
            canary_ips,
            sources,
            round: Mutex::new(None),
            probing: tokio::sync::Mutex::new(()),
            admission: Arc::new(Admission::new(
                SlotLimits {
                    pending: limits.pending_connections,
                    authenticated: limits.max_connections,
                    per_peer: limits.connections_per_peer,
                },
                Duration::from_secs(10),
            )),
            canary_connections: Arc::new(Semaphore::new(limits.canary_connections)),
            expected,
            config,
        }))
    }

    /// Authenticates a new connection within the handshake deadline: mutual
    /// TLS and the coordinator's name, or (with `--insecure`, loopback
    /// only) the first bytes of a request.
    async fn authenticate(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Option<Box<dyn crate::probe::ProbeStream>> {
        let limits = &self.config.limits;
        let refusals = &self.admission.refusals;
        let config = match &self.config.security {
            ServerSecurity::Insecure => {
                // No handshake to wait for: the first request must arrive
                // within the same deadline instead.
                let mut first = [0u8; 1];
                let spoke = timeout(limits.handshake_timeout, tcp.peek(&mut first)).await;
                if !matches!(spoke, Ok(Ok(n)) if n > 0) {
                    refusals.note(Refusal::Handshake, peer.ip());
                    return None;
                }
                return self
                    .config
                    .security
                    .accept(tcp, limits.handshake_timeout)
                    .await
                    .ok();
            }
            ServerSecurity::Mtls(config) => config.clone(),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let mut tls = match timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            _ => {
                refusals.note(Refusal::Handshake, peer.ip());
                return None;
            }
        };
        let names = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(crate::pki::certificate_names)
            .unwrap_or_default();
        if let Err(message) = crate::pki::authorize_coordinator(&names, &self.config.coordinator) {
            refusals.note(Refusal::NotCoordinator, peer.ip());
            let reply = error(message);
            if timeout(limits.write_timeout, write_frame(&mut tls, &reply))
                .await
                .is_ok_and(|r| r.is_ok())
            {
                linger(&mut tls).await;
            }
            return None;
        }
        Some(Box::new(tls))
    }

    async fn connection(self: &Arc<Self>, tcp: TcpStream, peer: SocketAddr, ticket: &Ticket) {
        let limits = &self.config.limits;
        let _ = tcp.set_nodelay(true);
        // Keepalive probes an idle coordinator connection, so that a
        // coordinator host that vanished (no FIN) releases the round's
        // lease within seconds.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(2))
            .with_interval(Duration::from_secs(1))
            .with_retries(3);
        let sock = socket2::SockRef::from(&tcp);
        let _ = sock.set_tcp_keepalive(&keepalive);
        let _ = sock.set_tcp_user_timeout(Some(limits.lease.max(Duration::from_secs(1))));
        let Some(stream) = self.authenticate(tcp, peer).await else {
            return;
        };
        self.admission.authenticated(ticket);
        let mut io = BufReader::with_capacity(8 * 1024, stream);
        self.serve(&mut io, &peer, Some(peer.ip())).await;
    }

    /// Answers requests on `io` until the client closes it, stays silent
    /// past the idle timeout, or sends what cannot be answered.
    /// Refusals are counted against `peer_ip` where the client has one.
    async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        self: &Arc<Self>,
        io: &mut BufReader<S>,
        peer: &(dyn std::fmt::Display + Sync),
        peer_ip: Option<IpAddr>,
    ) {
        let limits = &self.config.limits;
        let note = |r: Refusal| {
            if let Some(ip) = peer_ip {
                self.admission.refusals.note(r, ip);
            }
        };
        let mut bucket = Bucket::new(limits.request_burst, limits.requests_per_second);
        let mut malformed = 0u32;
        // Dropped with the connection: the lease then runs down.
        let mut _lease_hold: Option<LeaseHold> = None;
        loop {
            let frame = timeout(
                limits.idle_timeout,
                read_frame::<Request, _>(io, limits.max_request_bytes),
            )
            .await;
            let (reply, keep) = match frame {
                Err(_) => return,
                Ok(Err(FrameError::Closed | FrameError::Truncated | FrameError::Io(_))) => return,
                Ok(Err(e @ FrameError::TooLarge { .. })) => {
                    note(Refusal::Malformed);
                    (error(e.to_string()), false)
                }
                Ok(Err(e)) => {
                    // Malformed frames spend the budget like requests, and
                    // a few of them end the connection.
                    malformed += 1;
                    note(Refusal::Malformed);
                    let _ = bucket.take();
                    (
                        error(crate::error_chain(&e)),
                        malformed < limits.max_malformed,
                    )
                }
                Ok(Ok(request)) => {
                    if bucket.take() {
                        let prepares = matches!(request, Request::Prepare(_));
                        let reply = self.handle_watching(request, io).await;
                        let Some(reply) = reply else {
                            // The coordinator went away mid-request.
                            return;
                        };
                        if prepares && matches!(reply, Response::Prepared(_)) {
                            _lease_hold = self.current_lease().map(|l| l.hold());
                        }
                        (reply, true)
                    } else {
                        note(Refusal::RateLimited);
                        (
                            error("rate limit: too many requests, slow down".into()),
                            true,
                        )
                    }
                }
            };
            if let Response::Error(e) = &reply {
                tracing::debug!(%peer, message = %e.message, "control request refused");
            }
            match timeout(limits.write_timeout, write_frame(io, &reply)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    note(Refusal::WriteTimeout);
                    return;
                }
            }
            if !keep {
                linger(io).await;
                return;
            }
        }
    }

    /// Handles `request` while watching the connection: when the client
    /// closes it (a coordinator killed mid-request), the request is dropped
    /// and `None` returned. A pipelined frame stays buffered for later.
    async fn handle_watching<S: tokio::io::AsyncRead + Unpin>(
        self: &Arc<Self>,
        request: Request,
        io: &mut BufReader<S>,
    ) -> Option<Response> {
        let handling = self.handle(request);
        tokio::pin!(handling);
        let mut watching = true;
        loop {
            tokio::select! {
                reply = &mut handling => return Some(reply),
                more = io.fill_buf(), if watching => match more {
                    Ok([]) | Err(_) => return None,
                    Ok(_) => watching = false,
                },
            }
        }
    }

    fn current_lease(&self) -> Option<Arc<Lease>> {
        let guard = self.round.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().map(|r| r.lease.clone())
    }

    /// Renews the lease of round `id` when it is the current one.
    fn renew(&self, id: &str) -> bool {
        let guard = self.round.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(r) if r.id == id && !r.cancel.is_cancelled() => {
                r.lease.renew();
                true
            }
            _ => false,
        }
    }

    async fn handle(self: &Arc<Self>, request: Request) -> Response {
        match request {
            Request::Hello => Response::Hello(HelloReply {
                host: self.config.host.clone(),
                plan: self.config.plan.name.clone(),
                plan_digest: self.digest.clone(),
                version: PROTOCOL_VERSION,
                plan_file: Some(self.config.plan.source.to_string()),
            }),
            Request::Prepare(req) => self.prepare(req).await,
            Request::Probe(req) => {
                self.renew(&req.round);
                self.probe(req).await
            }
            Request::Renew(r) => {
                if self.renew(&r.round) {
                    Response::Renewed(RenewReply {
                        round: r.round,
                        lease_ms: u64::try_from(self.config.limits.lease.as_millis())
                            .unwrap_or(u64::MAX),
                    })
                } else {
                    error(format!("renew: no live round {} on this agent", r.round))
                }
            }
            Request::Evidence(r) => {
                self.renew(&r.round);
                let found = {
                    let guard = self.round.lock().unwrap_or_else(|e| e.into_inner());
                    guard
                        .as_ref()
                        .filter(|round| round.id == r.round)
                        .map(|round| {
                            (
                                round.log.clone(),
                                round.handshakes.clone(),
                                round.trace.clone(),
                            )
                        })
                };
                let Some((log, handshakes, trace)) = found else {
                    return error(format!("evidence: no round {} on this agent", r.round));
                };
                // Reading the kernel's tables blocks: off the runtime's
                // workers.
                let watched = handshakes.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    watched.refresh();
                    watched.finish();
                })
                .await;
                let trace = match trace {
                    None => None,
                    Some(Ok(tracer)) => Some(tracer.evidence().await),
                    Some(Err(why)) => Some(nftrace::unavailable(why)),
                };
                Response::Evidence(EvidenceReply {
                    round: r.round,
                    canaries: log.snapshot(),
                    handshakes: handshakes.snapshot(),
                    trace,
                })
            }
            Request::Teardown(r) => {
                self.end_round(Some(&r.round)).await;
                Response::TornDown(RoundRef { round: r.round })
            }
        }
    }

    /// Cancels the current round's canaries (only round `id`, when given) and
    /// waits briefly for their ports to be released.
    async fn end_round(&self, id: Option<&str>) {
        let (cancel, tracker) = {
            let guard = self.round.lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_ref() {
                Some(r) if id.is_none_or(|id| id == r.id) => (r.cancel.clone(), r.tracker.clone()),
                _ => return,
            }
        };
        cancel.cancel();
        tracker.close();
        let _ = timeout(self.config.limits.canary_timeout, tracker.wait()).await;
    }

    async fn prepare(self: &Arc<Self>, req: PrepareRequest) -> Response {
        let host = &self.config.host;
        if req.version != PROTOCOL_VERSION {
            let e = VersionMismatch::Coordinator {
                host: host.clone(),
                agent: PROTOCOL_VERSION,
                coordinator: req.version,
            };
            return error(format!("prepare: {e}"));
        }
        if req.host != *host {
            return error(format!(
                "prepare: this agent plays {host}, not {}",
                req.host
            ));
        }
        if req.plan_digest != self.digest {
            return error(format!(
                "prepare: plan mismatch: this agent holds plan {:?} with digest {}, the coordinator's has {}; give both the same plan file",
                self.config.plan.name, self.digest, req.plan_digest
            ));
        }
        if req.round.is_empty()
            || req.round.len() > 64
            || !req.round.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return error("prepare: round id must be 1 to 64 hex digits".into());
        }
        // A new round replaces any earlier one: a coordinator that crashed
        // and came back must not wait for the old TTL.
        self.end_round(None).await;
        let limits = &self.config.limits;
        let ttl = Duration::from_millis(req.ttl_ms).clamp(Duration::from_secs(1), limits.max_ttl);
        let expires = Instant::now() + ttl;
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let ports = canary_ports(&self.config.plan, host);
        // Sized from the round: every path to a port may have a connection
        // in flight at once, plus headroom; a flood beyond that is shed,
        // idle unauthenticated connections first.
        let expected = ports
            .iter()
            .map(|p| self.expected.get(&p.port).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        let options = CanaryOptions {
            host: Arc::from(host.as_str()),
            round: Arc::from(req.round.as_str()),
            tls: self.config.canary_tls.clone(),
            exchange_timeout: limits.canary_timeout,
            max_sightings: limits.max_sightings,
            connections: self.canary_connections.clone(),
            per_canary: expected.saturating_add(limits.canary_headroom),
        };
        let (listeners, log) = canary::open_canaries(
            &self.canary_ips,
            &ports,
            &options,
            expires,
            &cancel,
            &tracker,
        );
        // Every planned port is watched, held ones too: the kernel's
        // handshakes say how far a probe got even where no canary listens.
        // Polled until the evidence is taken (see syn_watch).
        // Reading the kernel's tables blocks: off the runtime's workers.
        let (ips, watched, watch_cancel) = (
            self.canary_ips.clone(),
            listeners
                .iter()
                .filter(|l| l.protocol.is_tcp())
                .map(|l| l.port)
                .collect(),
            cancel.clone(),
        );
        let handshakes = tokio::task::spawn_blocking(move || {
            syn_watch::start(ips, watched, true, expires, &watch_cancel)
        })
        .await
        .unwrap_or_default();
        let trace = if self.config.rule_trace {
            Some(self.start_trace(&req.round, ttl, &cancel, &tracker).await)
        } else {
            None
        };
        let lease = Arc::new(Lease {
            duration: limits.lease,
            holders: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        });
        tracker.spawn(watch_lease(
            lease.clone(),
            expires,
            cancel.clone(),
            req.round.clone(),
        ));
        tracing::info!(round = %req.round, ttl_ms = ttl.as_millis() as u64, lease_ms = limits.lease.as_millis() as u64, canaries = listeners.len(), "round prepared");
        *self.round.lock().unwrap_or_else(|e| e.into_inner()) = Some(Round {
            id: req.round.clone(),
            cancel,
            tracker,
            expires,
            log,
            lease,
            trace,
            handshakes,
        });
        Response::Prepared(PrepareReply {
            round: req.round,
            listeners,
            version: PROTOCOL_VERSION,
        })
    }

    /// Starts the round's rule tracing, stopped at teardown or at the TTL;
    /// the error is why tracing is not possible on this host.
    async fn start_trace(
        &self,
        round: &str,
        ttl: Duration,
        cancel: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Arc<Tracer>, String> {
        let plan = &self.config.plan;
        let host = &self.config.host;
        let ip = |a: &Address| match a {
            Address::Ip(ip) => Some(*ip),
            Address::Dns(_) => None,
        };
        let mut inbound = Vec::new();
        let mut outbound = Vec::new();
        // The trace table matches TCP only (UDP paths are not traced).
        for p in plan.paths.iter().filter(|p| p.protocol.is_tcp()) {
            if p.to == *host && p.role.is_some() {
                // Every address of the source: a dual-stack source may
                // arrive from either family.
                for a in plan.host(&p.from).iter().flat_map(|h| &h.addresses) {
                    if let Some(a) = ip(a) {
                        inbound.push((a, p.port.get()));
                    }
                }
            }
            if p.from == *host {
                if let Some(a) = ip(&p.address) {
                    outbound.push((a, p.port.get()));
                }
            }
        }
        let pairs = inbound.len() + outbound.len();
        if let Some(why) = nftrace::too_large(pairs) {
            tracing::info!(round, pairs, "no rule tracing: the round is too large");
            return Err(why);
        }
        let scope = TraceScope {
            round: round.to_string(),
            expires_unix: nftrace::unix_now() + ttl.as_secs() + 1,
            inbound,
            outbound,
        };
        let tracer = match Tracer::start(&scope, ttl).await {
            Ok(t) => Arc::new(t),
            Err(why) => {
                tracing::warn!(round, reason = %why, "no rule tracing on this host");
                return Err(why);
            }
        };
        tracing::info!(round, table = tracer.table(), "rule tracing on");
        let (t, cancel, deadline) = (tracer.clone(), cancel.clone(), Instant::now() + ttl);
        tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
            t.stop().await;
        });
        Ok(tracer)
    }

    async fn probe(self: &Arc<Self>, req: ProbeRequest) -> Response {
        let cancel = {
            let guard = self.round.lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_ref() {
                Some(r) if r.id == req.round && Instant::now() < r.expires => r.cancel.clone(),
                Some(r) if r.id == req.round => {
                    return error(format!("probe: round {} has expired", req.round));
                }
                _ => return error(format!("probe: no round {} on this agent", req.round)),
            }
        };
        let Ok(_running) = self.probing.try_lock() else {
            return error("probe: a probe is already running on this agent".into());
        };
        let plan = &self.config.plan;
        let host = &self.config.host;
        let live: HashSet<&HostPort> = req.live.iter().collect();
        let skip: HashSet<&HostPort> = req.skip.iter().collect();
        let skip_hosts: HashSet<&str> = req.skip_hosts.iter().map(String::as_str).collect();
        let only: Option<HashSet<usize>> = req.only.as_ref().map(|o| o.iter().copied().collect());
        let mut indices = Vec::new();
        let mut targets = Vec::new();
        let mut slots = Vec::new();
        let mut greetings = Vec::new();
        let mut udp_paths = Vec::new();
        for (k, path) in plan.paths.iter().enumerate() {
            // The path's position in the whole plan, which is what the
            // coordinator names (the agent may hold only its own paths).
            let i = plan.path_index(k);
            if path.from != *host
                || skip_hosts.contains(path.to.as_str())
                || only.as_ref().is_some_and(|o| !o.contains(&i))
            {
                continue;
            }
            let key = HostPort {
                host: path.to.clone(),
                port: path.port.get(),
                transport: path.protocol.into(),
            };
            if skip.contains(&key) {
                continue;
            }
            let canary = path.role.is_some() && !live.contains(&key);
            if path.protocol == Protocol::Udp {
                if canary {
                    udp_paths.push(udp_canary::UdpPath {
                        path: i,
                        target: udp_target(&path.address, path.port.get()).await,
                        nonce: control::random_id(16),
                        expected: path.to.clone(),
                    });
                    continue;
                }
                // A live UDP service portcall knows no request for cannot
                // be proven: nothing is sent (the join says why).
                if !crate::report::udp::live_request_known(
                    path.port.get(),
                    plan.snmp_community.as_deref(),
                ) {
                    continue;
                }
            }
            let probe_host = match &path.address {
                Address::Ip(ip) => probe::Host::Ip(*ip),
                Address::Dns(n) => probe::Host::Name(Arc::from(n.as_str())),
            };
            let mut target = Target::new(probe_host, path.port, path.protocol);
            let slot = if canary {
                target = target.with_server_name(path.to.as_str());
                Some((control::random_id(16), path.to.clone()))
            } else {
                None
            };
            indices.push(i);
            targets.push(target);
            // A live service that speaks first is read and left politely.
            greetings.push(if slot.is_none() {
                probe::Greeting::for_service(&path.service)
            } else {
                None
            });
            slots.push(slot);
        }
        let nonces: Vec<Option<String>> = slots
            .iter()
            .map(|s| s.as_ref().map(|(n, _)| n.clone()))
            .collect();
        let exchange = Arc::new(NonceExchange::new(req.round.clone(), slots));
        let d = plan.defaults;
        let per_attempt = Duration::from_millis(d.timeout_ms);
        let config = ProbeConfig {
            connect_timeout: per_attempt,
            tls_timeout: per_attempt,
            exchange_timeout: per_attempt,
            retries: d.retries,
            concurrency: self.config.limits.probe_concurrency,
            per_host_concurrency: self.config.limits.probe_per_host.max(1),
            adaptive: d.adaptive,
            // Each source starts on another host: its place in the plan
            // (sources of a mesh then start one host apart).
            spread_offset: plan
                .hosts
                .iter()
                .position(|h| h.name == *host)
                .map_or(0, |p| p as u64),
            sources: self.sources.clone(),
            ttl_walk: Some(probe::WalkConfig::default()),
            ..ProbeConfig::default()
        };
        let greeter = Arc::new(probe::GreetingExchange::new(
            greetings,
            per_attempt / 2,
            Some(exchange.clone()),
        ));
        let udp_options = probe::udp_service::UdpOptions {
            snmp_community: plan.snmp_community.clone(),
        };
        let prober = match Prober::with_udp(config, Some(greeter.clone()), udp_options) {
            Ok(p) => p,
            Err(e) => return error(format!("probe: {e}")),
        };
        let started = Instant::now();
        let udp_probing = udp_canary::UdpProbing {
            round: req.round.clone(),
            sources: self.sources.clone(),
            per_attempt,
            attempts: d.retries.saturating_add(1),
            concurrency: self.config.limits.probe_concurrency,
        };
        let (results, udp_results) = tokio::join!(
            prober.sweep(targets, &cancel, |_, _| {}),
            udp_canary::probe_paths(&udp_probing, udp_paths, &cancel),
        );
        tracing::info!(round = %req.round, paths = results.len() + udp_results.len(), ms = started.elapsed().as_millis() as u64, "probes done");
        let results = results
            .into_iter()
            .enumerate()
            .map(|(k, r)| PathProbe {
                path: indices[k],
                nonce: nonces[k].clone(),
                observed: r.observed,
                detail: r.detail,
                latency_us: u64::try_from(r.latency.as_micros()).unwrap_or(u64::MAX),
                attempts: r.attempts,
                source: r.local_address,
                answered_by: exchange.answered_by(k),
                icmp: r.icmp.map(Box::new),
                path_mtu: r.path_mtu,
                walk: r.walk.map(Box::new),
                connect_us: r.connect_time.map(micros),
                tls_us: r.tls_time.map(micros),
                cert: r.cert,
                service_banner: greeter.banner(k),
                shed: r.shed,
                errno: r.errno,
                silence: r.silence,
            })
            .chain(udp_results)
            .collect();
        Response::Probed(ProbeReply {
            round: req.round,
            results,
        })
    }
}

/// Where a UDP path's datagrams go: its plan address, a name resolved
/// here (the first address).
async fn udp_target(address: &Address, port: u16) -> Result<SocketAddr, String> {
    match address {
        Address::Ip(ip) => Ok(SocketAddr::new(*ip, port)),
        Address::Dns(name) => match tokio::net::lookup_host((name.as_str(), port)).await {
            Ok(mut found) => found
                .next()
                .ok_or_else(|| format!("{name} resolves to no address")),
            Err(e) => Err(format!("cannot resolve {name}: {e}")),
        },
    }
}

/// Ends the round when its lease lapses (the coordinator is gone and
/// nothing renewed it) or its TTL passes, whichever comes first.
async fn watch_lease(
    lease: Arc<Lease>,
    expires: Instant,
    cancel: CancellationToken,
    round: String,
) {
    loop {
        let now = Instant::now();
        if now >= expires {
            // The canaries close themselves at the TTL.
            return;
        }
        match lease.lapses_at() {
            Some(at) if at <= now => {
                tracing::info!(%round, lease_ms = lease.duration.as_millis() as u64, "round lease lapsed: the coordinator is gone; closing the canaries");
                cancel.cancel();
                return;
            }
            next => {
                // Re-checked at least every quarter lease: a renewal moves
                // the lapse time later, never earlier.
                let step = lease.duration / 4;
                let wake = next.unwrap_or(now + step).min(now + step).min(expires);
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep_until(wake.max(now + Duration::from_millis(10))) => {}
                }
            }
        }
    }
}

/// Closes our side, then reads and discards what the client still sends
/// for a moment (bounded in bytes and time), so that closing with unread
/// input does not reset the connection before the client reads our last
/// reply.
async fn linger<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(io: &mut S) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = io.shutdown().await;
    let mut buf = [0u8; 8192];
    let mut left: usize = 1 << 20;
    let _ = timeout(Duration::from_secs(1), async {
        while left > 0 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

fn error(message: String) -> Response {
    Response::Error(ErrorReply { message })
}

/// A duration in whole microseconds, saturating.
fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
