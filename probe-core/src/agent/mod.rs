//! The per-host agent: it serves the control endpoint, and for each round
//! holds canaries on its host's planned ports, probes its host's outgoing
//! paths from the host's own address, and hands back both sides' evidence.
//! `portcall agent` runs one; `portcall demo` runs one per plan host in a
//! single process, through exactly this code.
//!
//! Everything an agent does on request is bounded: request size
//! ([`crate::control::MAX_REQUEST_BYTES`]), request rate, connections at
//! once, the time a client may take to handshake or send a request, and
//! the life of every canary (the round's TTL, which ends the canaries even
//! when the coordinator vanished).

pub mod canary;
pub mod nftrace;
mod stdio;
pub mod syn_watch;

pub use stdio::{StdioPlan, serve_stdio};

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::BufReader;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::{
    self, ErrorReply, EvidenceReply, FrameError, HelloReply, HostPort, PROTOCOL_VERSION, PathProbe,
    PrepareReply, PrepareRequest, ProbeReply, ProbeRequest, Request, Response, RoundRef,
    ServerSecurity, read_frame, write_frame,
};
use crate::plan::{Address, Plan};
use crate::probe::{self, ProbeConfig, Prober, Target};
use canary::{CanaryOptions, EvidenceLog, NonceExchange, PlannedPort};
use nftrace::{TraceScope, Tracer};

/// Limits that keep an agent small and unbothered by misbehaving clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLimits {
    /// Largest request frame, in bytes.
    pub max_request_bytes: usize,
    /// Control connections served at once; more are closed at once.
    pub max_connections: usize,
    /// Deadline for a client's TLS handshake.
    pub handshake_timeout: Duration,
    /// How long a control connection may stay silent between requests.
    pub idle_timeout: Duration,
    /// Requests allowed in a burst, over all connections.
    pub request_burst: u32,
    /// Requests per second allowed once the burst is spent.
    pub requests_per_second: u32,
    /// Longest round TTL a coordinator may ask for.
    pub max_ttl: Duration,
    /// Deadline of one canary connection (TLS handshake and line).
    pub canary_timeout: Duration,
    /// Canary connections served at once, over all canaries.
    pub canary_connections: usize,
    /// Nonces kept per canary.
    pub max_sightings: usize,
    /// Probe attempts in flight at once.
    pub probe_concurrency: usize,
}

impl Default for AgentLimits {
    fn default() -> AgentLimits {
        AgentLimits {
            max_request_bytes: control::MAX_REQUEST_BYTES,
            max_connections: 16,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            request_burst: 40,
            requests_per_second: 20,
            max_ttl: Duration::from_secs(600),
            canary_timeout: Duration::from_secs(5),
            canary_connections: 256,
            max_sightings: 4096,
            probe_concurrency: 256,
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
        .filter(|(_, port)| seen.insert(port.get()))
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
    bucket: Mutex<Bucket>,
    canary_connections: Arc<Semaphore>,
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
    /// The round's rule tracing, or why there is none; `None` when the
    /// agent does not trace.
    trace: Option<Result<Arc<Tracer>, String>>,
    handshakes: Arc<syn_watch::SynLog>,
}

/// A token bucket over all control requests.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
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
        let slots = Arc::new(Semaphore::new(shared.config.limits.max_connections));
        tracing::info!(host = %shared.config.host, addr = %listener.local_addr().map_or_else(|_| "?".to_string(), |a| a.to_string()), "agent serving");
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                accepted = listener.accept() => {
                    let Ok((tcp, peer)) = accepted else {
                        // EMFILE and friends: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, "control connection refused: too many at once");
                        continue;
                    };
                    let (shared, cancel) = (shared.clone(), cancel.clone());
                    conns.spawn(async move {
                        let _permit = permit;
                        tokio::select! {
                            () = cancel.cancelled() => {}
                            () = shared.connection(tcp, peer) => {}
                        }
                    });
                }
            }
        }
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
        Ok(Arc::new(Shared {
            digest: control::plan_digest(plan),
            canary_ips,
            sources,
            round: Mutex::new(None),
            probing: tokio::sync::Mutex::new(()),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(limits.request_burst),
                last: Instant::now(),
            }),
            canary_connections: Arc::new(Semaphore::new(limits.canary_connections)),
            config,
        }))
    }

    async fn connection(self: &Arc<Self>, tcp: tokio::net::TcpStream, peer: SocketAddr) {
        let limits = &self.config.limits;
        let _ = tcp.set_nodelay(true);
        let stream = match self
            .config
            .security
            .accept(tcp, limits.handshake_timeout)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "control handshake failed");
                return;
            }
        };
        let mut io = BufReader::with_capacity(8 * 1024, stream);
        self.serve(&mut io, &peer).await;
    }

    /// Answers requests on `io` until the client closes it, stays silent
    /// past the idle timeout, or sends what cannot be answered.
    async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        self: &Arc<Self>,
        io: &mut BufReader<S>,
        peer: &(dyn std::fmt::Display + Sync),
    ) {
        let limits = &self.config.limits;
        loop {
            let frame = timeout(
                limits.idle_timeout,
                read_frame::<Request, _>(io, limits.max_request_bytes),
            )
            .await;
            let (reply, keep) = match frame {
                Err(_) => return,
                Ok(Err(FrameError::Closed | FrameError::Truncated | FrameError::Io(_))) => return,
                Ok(Err(e @ FrameError::TooLarge { .. })) => (error(e.to_string()), false),
                Ok(Err(e)) => (error(e.to_string()), true),
                Ok(Ok(request)) => {
                    if self.take_token() {
                        (self.handle(request).await, true)
                    } else {
                        (
                            error("rate limit: too many requests, slow down".into()),
                            true,
                        )
                    }
                }
            };
            if let Response::Error(e) = &reply {
                tracing::warn!(%peer, message = %e.message, "control request refused");
            }
            if write_frame(io, &reply).await.is_err() {
                return;
            }
            if !keep {
                linger(io).await;
                return;
            }
        }
    }

    fn take_token(&self) -> bool {
        let limits = &self.config.limits;
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill =
            now.duration_since(b.last).as_secs_f64() * f64::from(limits.requests_per_second);
        b.tokens = (b.tokens + refill).min(f64::from(limits.request_burst));
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
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
            Request::Probe(req) => self.probe(req).await,
            Request::Evidence(r) => {
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
        let options = CanaryOptions {
            host: Arc::from(host.as_str()),
            round: Arc::from(req.round.as_str()),
            tls: self.config.canary_tls.clone(),
            exchange_timeout: limits.canary_timeout,
            max_sightings: limits.max_sightings,
            connections: self.canary_connections.clone(),
        };
        let ports = canary_ports(&self.config.plan, host);
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
            listeners.iter().map(|l| l.port).collect(),
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
        tracing::info!(round = %req.round, ttl_ms = ttl.as_millis() as u64, canaries = listeners.len(), "round prepared");
        *self.round.lock().unwrap_or_else(|e| e.into_inner()) = Some(Round {
            id: req.round.clone(),
            cancel,
            tracker,
            expires,
            log,
            trace,
            handshakes,
        });
        Response::Prepared(PrepareReply {
            round: req.round,
            listeners,
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
        for p in &plan.paths {
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
        for (i, path) in plan.paths.iter().enumerate() {
            if path.from != *host
                || skip_hosts.contains(path.to.as_str())
                || only.as_ref().is_some_and(|o| !o.contains(&i))
            {
                continue;
            }
            let key = HostPort {
                host: path.to.clone(),
                port: path.port.get(),
            };
            if skip.contains(&key) {
                continue;
            }
            let canary = path.role.is_some() && !live.contains(&key);
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
            sources: self.sources.clone(),
            ttl_walk: Some(probe::WalkConfig::default()),
            ..ProbeConfig::default()
        };
        let greeter = Arc::new(probe::GreetingExchange::new(
            greetings,
            per_attempt / 2,
            Some(exchange.clone()),
        ));
        let prober = match Prober::with_exchange(config, greeter.clone()) {
            Ok(p) => p,
            Err(e) => return error(format!("probe: {e}")),
        };
        let started = Instant::now();
        let results = prober.sweep(targets, &cancel, |_, _| {}).await;
        tracing::info!(round = %req.round, paths = results.len(), ms = started.elapsed().as_millis() as u64, "probes done");
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
                icmp: r.icmp,
                path_mtu: r.path_mtu,
                walk: r.walk,
                connect_us: r.connect_time.map(micros),
                tls_us: r.tls_time.map(micros),
                cert: r.cert,
                service_banner: greeter.banner(k),
            })
            .collect();
        Response::Probed(ProbeReply {
            round: req.round,
            results,
        })
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
