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

pub mod addresses;
pub mod canary;
mod canary_common;
mod config;
mod endpoint;
pub mod listening;
mod neighbours;
mod nft_cmd;
pub mod nftrace;
mod outgoing;
mod prepare;
mod sampling;
mod serve;
mod sock_diag;
mod state;
mod stdio;
mod syn_samples;
pub mod syn_watch;
mod trace_event;
mod trace_log;
mod trace_netlink;
pub mod udp_canary;

use config::bind_ip;
pub use config::{AgentConfig, AgentError, AgentLimits, canary_ports, detect_host, local_ip};
pub use nft_cmd::{nft, nft_path};
pub use stdio::{StdioPlan, serve_stdio};

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::{self, ErrorReply, Response, ServerSecurity};
use crate::probe::canary_line::NonceKey;
use canary::EvidenceLog;
use endpoint::{Admission, SlotLimits};
use nftrace::Tracer;

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
    /// Held while a probe runs; keeps the last round's reply, so that a
    /// probe request repeated for the same round (a coordinator whose
    /// reply was lost to a lossy link asks again on a fresh connection)
    /// waits for the running sweep and gets its results, never a second
    /// sweep.
    probing: tokio::sync::Mutex<Option<crate::control::ProbeReply>>,
    admission: Arc<Admission>,
    canary_connections: Arc<Semaphore>,
    /// Nonces each canary port must expect in a round (paths to it).
    expected: HashMap<u16, usize>,
    /// The trace tables this agent made and has not deleted yet.
    traces: Arc<nftrace::OwnedTables>,
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
    /// The round's nonce key, which this agent's prober makes its nonces
    /// under.
    nonce_key: Option<NonceKey>,
}

/// A round's lease: held while the coordinator's control connection that
/// prepared it is open (TCP keepalive probes it), renewed by every request
/// naming the round; it lapses `grace` after the last sign of life until
/// the first `probe` or `renew` request, `duration` after it from then on
/// (a target gets no `probe` request: without a `renew`, its round ends
/// `grace` after the coordinator's connection closed, in every phase).
#[derive(Debug)]
struct Lease {
    duration: Duration,
    /// The lease before the first `probe` request (see
    /// `prepare::PREPARED_GRACE`).
    grace: Duration,
    /// Whether a `probe` request came: the coordinator is past `prepare`.
    probed: AtomicBool,
    holders: AtomicUsize,
    last: Mutex<Instant>,
}

impl Lease {
    fn renew(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// The coordinator asked this round to probe: the full lease applies.
    fn probing(&self) {
        self.probed.store(true, Ordering::SeqCst);
        self.renew();
    }

    /// How long the lease outlasts the last sign of life now.
    fn current(&self) -> Duration {
        if self.probed.load(Ordering::SeqCst) {
            self.duration
        } else {
            self.grace
        }
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
        Some(*self.last.lock().unwrap_or_else(|e| e.into_inner()) + self.current())
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
                    let Ok((tcp, probe)) = endpoint::with_probe(tcp) else {
                        continue;
                    };
                    let Some(ticket) = shared.admission.admit(peer.ip(), Some(probe)) else {
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
        shared.shut_down(conns).await;
    }
}

/// How long a stopping agent (SIGTERM, SIGINT, end of its input) spends
/// closing its round: its canaries, its connections and its trace tables.
pub const SHUTDOWN: Duration = Duration::from_millis(1500);

impl Shared {
    /// Ends everything a stopping agent holds, within [`SHUTDOWN`]: the
    /// connections (a `prepare` still running is dropped, and closes what
    /// it opened), the round, and every trace table this agent made, the
    /// last even when the rest ran out of time.
    async fn shut_down(&self, conns: TaskTracker) {
        let closing = async {
            conns.close();
            self.end_round(None).await;
            conns.wait().await;
        };
        if tokio::time::timeout(SHUTDOWN, closing).await.is_err() {
            tracing::warn!(
                "the round was not closed within {SHUTDOWN:?}; deleting its trace tables anyway"
            );
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), self.traces.delete_all()).await;
    }

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
            probing: tokio::sync::Mutex::new(None),
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
            traces: Arc::default(),
            config,
        }))
    }
}

fn error(message: String) -> Response {
    Response::Error(ErrorReply { message })
}
