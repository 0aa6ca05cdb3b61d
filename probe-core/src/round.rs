//! The coordinator: drives every agent of a plan through one round
//! (canaries up, probes, evidence back, canaries down), all agents at once
//! and each request under its own deadline, and collects what they report.
//! An agent that cannot be reached does not stop the round: its part is
//! recorded as unreachable and the others are measured. How an agent is
//! reached (mutual TLS to its control port, or ssh) is the [`Transport`]'s
//! business; the round only asks it for a control stream per host.
//!
//! When the round is cancelled (Ctrl-C, SIGTERM), the coordinator tears
//! it down on every agent it reached, within [`CANCEL_TEARDOWN`], and
//! those agents are reported `cancelled`, not unreachable.
//!
//! `portcall check` and `portcall demo` both come through [`run_round`].

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::control::transport::BoxFuture;
use crate::control::{
    self, ControlError, ControlStream, Dial, PrepareRequest, Request, Response, RoundRef, Transport,
};
use crate::error_chain;
use crate::plan::Plan;
use crate::report::{self, AgentEvidence, AgentOutcome, PlanMismatch, Report, RoundEvidence};

mod sources;
mod summary;
pub use summary::interrupted_summary;
mod resilient;
mod session;
use resilient::{EVIDENCE_REOPENS, PROBE_HEDGES, PeerReplies, evidence_one, hedged};
use session::{Session, died, probe_request};

/// How long a cancelled round may spend tearing down what it started.
pub const CANCEL_TEARDOWN: Duration = Duration::from_secs(2);

/// Deadlines and endpoints of a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundConfig {
    /// Deadline of the TCP connect, and separately of the TLS handshake, to
    /// each agent.
    pub connect_timeout: Duration,
    /// Deadline of `prepare`, `evidence` and `teardown`.
    pub request_timeout: Duration,
    /// Added to the longest a sweep can take to get the `probe` deadline.
    pub probe_slack: Duration,
    /// Added to the whole round's worst case to get the canaries' TTL.
    pub ttl_slack: Duration,
    /// Control endpoints that differ from `address:control_port` (the demo
    /// and tests bind ephemeral ports), by host.
    pub endpoints: BTreeMap<String, SocketAddr>,
    /// Told how the round advances (the binary draws progress from it).
    pub observer: Observer,
    /// The paths to measure (`check --only`, from
    /// [`Plan::select_paths`]); `None` for every path of the plan.
    pub only: Option<Vec<usize>>,
    /// Quality samples per path (`check --samples`; 1: none).
    pub samples: u32,
}

/// Evidence requests in flight at once (see the evidence phase).
const EVIDENCE_AT_ONCE: usize = 16;

/// The phases of a round, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connecting to every agent and opening canaries.
    Prepare,
    /// Every source agent probing its paths.
    Probe,
    /// Collecting what the canaries saw.
    Evidence,
    /// Closing the canaries.
    Teardown,
}

impl Phase {
    /// What the phase does, in a few words.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Prepare => "agents reached",
            Phase::Probe => "agents done probing",
            Phase::Evidence => "evidence collected",
            Phase::Teardown => "canaries closed",
        }
    }
}

/// What happens in a round, as it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundEvent<'a> {
    /// A phase starts, with the number of agents it involves.
    PhaseStarted {
        /// Which phase.
        phase: Phase,
        /// How many agents take part in it.
        agents: usize,
    },
    /// One agent finished its part of a phase.
    AgentDone {
        /// Which phase.
        phase: Phase,
        /// The agent's host.
        host: &'a str,
        /// Whether its part succeeded.
        ok: bool,
    },
}

/// Receives a round's events; called from the round's tasks, so it must be
/// quick and must not block.
pub trait RoundObserver: Send + Sync {
    /// One event.
    fn event(&self, event: RoundEvent<'_>);
}

/// An optional [`RoundObserver`] in a [`RoundConfig`] (none by default).
#[derive(Clone, Default)]
pub struct Observer(pub Option<Arc<dyn RoundObserver>>);

impl Observer {
    fn event(&self, event: RoundEvent<'_>) {
        if let Some(o) = &self.0 {
            o.event(event);
        }
    }
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Observer(set)"
        } else {
            "Observer(none)"
        })
    }
}

/// Observers do not make two configurations differ.
impl PartialEq for Observer {
    fn eq(&self, _: &Observer) -> bool {
        true
    }
}

impl Eq for Observer {}

impl Default for RoundConfig {
    fn default() -> RoundConfig {
        RoundConfig {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            probe_slack: Duration::from_secs(10),
            ttl_slack: Duration::from_secs(30),
            endpoints: BTreeMap::new(),
            observer: Observer::default(),
            only: None,
            samples: 1,
        }
    }
}

impl RoundConfig {
    /// The deadline of a `probe` request: every attempt of a silent path,
    /// its TLS handshake and exchange, the two extra tries of a stalled
    /// handshake (the path-MTU retry and its control) and the two tries at
    /// lower concurrency before them, the extra attempts that tell loss
    /// from a drop or a stall ([`crate::probe::ROUND_LOSS_RETRIES`], and
    /// three more stalled attempts), the engine's ICMP pacing window, the
    /// TTL walks' budget, plus slack.
    pub fn probe_deadline(&self, plan: &Plan) -> Duration {
        let d = plan.defaults;
        let attempt = Duration::from_millis(d.timeout_ms);
        let pacing = crate::probe::ProbeConfig::default().icmp_pacing_window;
        let tries = d
            .retries
            .saturating_add(10)
            .saturating_add(crate::probe::ROUND_LOSS_RETRIES);
        let sampling = crate::probe::samples::plan_sampling_time(plan, self.samples);
        attempt * tries + pacing + crate::probe::WALK_BUDGET + self.probe_slack + sampling
    }

    /// The canaries' TTL: the worst case of the whole round, plus slack.
    pub fn ttl(&self, plan: &Plan) -> Duration {
        self.connect_timeout * 2
            + self.request_timeout * (2 + EVIDENCE_REOPENS as u32)
            + self.probe_deadline(plan)
            + self.ttl_slack
    }
}

/// Runs one round of `plan` and joins it into a report.
pub async fn check<T: Transport + ?Sized>(
    plan: &Plan,
    transport: &T,
    config: &RoundConfig,
    cancel: &CancellationToken,
) -> Report {
    let evidence = run_round(plan, transport, config, cancel).await;
    match &config.only {
        None => report::join(plan, &evidence),
        Some(only) => report::join_paths(plan, &evidence, only),
    }
}

/// Control endpoints the round connected to, by host: where a cancelled
/// round must send its teardown.
type Reached = Arc<std::sync::Mutex<BTreeMap<String, Dial>>>;

/// Runs one round of `plan`: every agent that is the source or target of
/// some path takes part. One function per phase: connect and prepare,
/// probe, evidence, teardown (the join is [`check`]'s); a cancelled phase
/// ends the round through [`cancelled`].
pub async fn run_round<T: Transport + ?Sized>(
    plan: &Plan,
    transport: &T,
    config: &RoundConfig,
    cancel: &CancellationToken,
) -> RoundEvidence {
    let started_at = SystemTime::now();
    let round = control::random_id(8);
    let hosts = Involved::walk(plan, config.only.as_deref());
    tracing::info!(%round, agents = hosts.involved.len(), paths = hosts.selected, "round starting");
    let ctx = RoundCtx {
        plan,
        transport,
        config,
        round,
        nonce_key: control::random_id(32),
        clock: std::time::Instant::now(),
        reached: Reached::default(),
    };
    let sessions = ctx.prepare(&hosts.involved, cancel).await;
    if cancel.is_cancelled() {
        return ctx.cancelled(sessions, started_at).await;
    }
    let sessions = ctx.trace_sources(sessions, cancel).await;
    if cancel.is_cancelled() {
        return ctx.cancelled(sessions, started_at).await;
    }
    let sessions = ctx.probe(sessions, &hosts.sources, cancel).await;
    if cancel.is_cancelled() {
        return ctx.cancelled(sessions, started_at).await;
    }
    let sessions = ctx.evidence(sessions, cancel).await;
    if cancel.is_cancelled() {
        return ctx.cancelled(sessions, started_at).await;
    }
    let finished_at = SystemTime::now();
    let sessions = ctx.teardown(sessions).await;
    tracing::info!(round = %ctx.round, "round finished");
    RoundEvidence {
        started_at,
        finished_at,
        agents: sessions.into_iter().map(|s| (s.host, s.evidence)).collect(),
    }
}

/// The hosts a round involves, found walking the plan's paths one at a
/// time: the coordinator need not hold them (`PathScope::Lazy`).
struct Involved {
    /// Every source or target of a selected path.
    involved: BTreeSet<String>,
    /// The sources of selected paths (the agents asked to probe).
    sources: HashSet<String>,
    /// How many paths are selected.
    selected: usize,
}

impl Involved {
    fn walk(plan: &Plan, only: Option<&[usize]>) -> Involved {
        let only = only.map(|o| {
            let mut o = o.to_vec();
            o.sort_unstable();
            o
        });
        let mut hosts = Involved {
            involved: BTreeSet::new(),
            sources: HashSet::new(),
            selected: 0,
        };
        let _ = plan.for_each_path(|p| {
            if only
                .as_ref()
                .is_none_or(|o| o.binary_search(&p.index).is_ok())
            {
                hosts.selected += 1;
                for name in [p.from, p.to] {
                    if !hosts.involved.contains(name) {
                        hosts.involved.insert(name.to_owned());
                    }
                }
                if !hosts.sources.contains(p.from) {
                    hosts.sources.insert(p.from.to_owned());
                }
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        hosts
    }
}

/// What every phase of one round shares.
struct RoundCtx<'a, T: ?Sized> {
    plan: &'a Plan,
    transport: &'a T,
    config: &'a RoundConfig,
    /// The round's id.
    round: String,
    /// The round's nonce key (hex), given to every agent in `prepare`.
    nonce_key: String,
    /// When the round started, for the phases' log lines.
    clock: std::time::Instant,
    /// Where a cancelled round must send its teardown.
    reached: Reached,
}

impl<T: Transport + ?Sized> RoundCtx<'_, T> {
    /// Logs the end of a phase.
    fn lap(&self, phase: Phase) {
        tracing::info!(round = %self.round, phase = phase.as_str(), elapsed_ms = self.clock.elapsed().as_millis() as u64, "round phase over");
    }

    /// [`cancelled`] for this round.
    async fn cancelled(&self, sessions: Vec<Session>, started_at: SystemTime) -> RoundEvidence {
        cancelled(
            sessions,
            &self.reached,
            &self.round,
            self.transport,
            started_at,
        )
        .await
    }

    /// Phase 1: connect and prepare, all agents at once.
    async fn prepare(
        &self,
        involved: &BTreeSet<String>,
        cancel: &CancellationToken,
    ) -> Vec<Session> {
        let (plan, config) = (self.plan, self.config);
        let digest = control::plan_digest(plan);
        let ttl_ms = u64::try_from(config.ttl(plan).as_millis()).unwrap_or(u64::MAX);
        let mut sessions = Vec::new();
        for name in involved {
            let Some(host) = plan.host(name) else {
                continue;
            };
            sessions.push(Session {
                host: host.name.clone(),
                conn: None,
                evidence: AgentEvidence::unreachable("not contacted".into()),
            });
        }
        let control_port = plan.defaults.control_port.get();
        config.observer.event(RoundEvent::PhaseStarted {
            phase: Phase::Prepare,
            agents: sessions.len(),
        });
        let coordinator_file = plan.source.to_string();
        let sessions = each(sessions, cancel, |s| {
            let dial = Dial {
                host: s.host.clone(),
                address: plan
                    .host(&s.host)
                    .map(|h| h.address.clone())
                    .expect("sessions are plan hosts"),
                control_port,
                endpoint: config.endpoints.get(&s.host).copied(),
                connect_timeout: config.connect_timeout,
            };
            // Agents that outlive a connection (mTLS) get fresh ones when
            // `prepare` breaks (a stranger's load shed ours); opening is
            // lazy, so unused ones cost nothing.
            let tries = if self.transport.agents_outlive_connections() {
                PREPARE_TRIES
            } else {
                1
            };
            let openings = (0..tries)
                .map(|_| self.transport.open(dial.clone()))
                .collect();
            let request = Request::Prepare(PrepareRequest {
                round: self.round.clone(),
                host: s.host.clone(),
                plan_digest: digest.clone(),
                ttl_ms,
                version: control::PROTOCOL_VERSION,
                nonce_key: Some(self.nonce_key.clone()),
                samples: self.config.samples,
            });
            let prepared = prepare_one(
                s,
                PrepareOne {
                    openings,
                    dial,
                    request,
                    reached: self.reached.clone(),
                    digest: digest.clone(),
                    coordinator_file: coordinator_file.clone(),
                    config: config.clone(),
                },
            );
            let observer = config.observer.clone();
            async move {
                let s = prepared.await;
                observer.event(RoundEvent::AgentDone {
                    phase: Phase::Prepare,
                    host: &s.host,
                    ok: s.up(),
                });
                s
            }
        })
        .await;
        self.lap(Phase::Prepare);
        sessions
    }

    /// Phase 1b: each target learns every address its sources can arrive
    /// from, and each forwarding host the paths that may cross it
    /// ([`sources`]); the sets stay in the sources' evidence.
    async fn trace_sources(
        &self,
        mut sessions: Vec<Session>,
        cancel: &CancellationToken,
    ) -> Vec<Session> {
        let up = sessions.iter().filter(|s| s.up());
        let wanted = sources::Wanted::new(self.plan, up.map(|s| (&*s.host, s.evidence.forwarding)));
        let up = sessions
            .iter_mut()
            .filter(|s| s.up())
            .map(|s| (s.host.as_str(), &mut s.evidence.addresses));
        let gathered = sources::gather(self.plan, &wanted, up.collect(), cancel).await;
        let Some(addresses) = gathered else {
            return sessions;
        };
        let requests = Arc::new(sources::requests(&self.round, &wanted, &addresses));
        let request_timeout = self.config.request_timeout;
        each(sessions, cancel, |mut s| {
            let request = requests.get(&s.host).cloned();
            async move {
                let (Some(request), Some(conn)) = (request, s.conn.as_mut()) else {
                    return s;
                };
                if let Err(e) = sources::ask(conn, &s.host, request, request_timeout).await {
                    // Broken, or timed out (a late reply could come as the
                    // next frame): the stream is not reused.
                    s.lost(format!("lost while tracing sources: {}", error_chain(&e)));
                }
                s
            }
        })
        .await
    }

    /// Phase 2: probe. Each source learns which target ports have no
    /// canary.
    async fn probe(
        &self,
        sessions: Vec<Session>,
        sources: &HashSet<String>,
        cancel: &CancellationToken,
    ) -> Vec<Session> {
        let probe = Request::Probe(probe_request(
            &sessions,
            &self.round,
            self.config.only.clone(),
            self.config.samples,
        ));
        let probe_deadline = self.config.probe_deadline(self.plan);
        let observer = &self.config.observer;
        let asked = sessions
            .iter()
            .filter(|s| s.up() && sources.contains(s.host.as_str()))
            .count();
        observer.event(RoundEvent::PhaseStarted {
            phase: Phase::Probe,
            agents: asked,
        });
        let peers = PeerReplies::new(asked);
        let reached = self
            .reached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let sessions = each(sessions, cancel, |mut s| {
            let probe = probe.clone();
            let wanted = s.up() && sources.contains(s.host.as_str());
            let observer = observer.clone();
            let peers = peers.clone();
            // Fresh connections to ask again beside a reply that is late
            // (lost to a lossy link); where agents outlive connections.
            let hedges: Vec<_> = match reached.get(&s.host) {
                Some(dial) if wanted && self.transport.agents_outlive_connections() => (0
                    ..PROBE_HEDGES)
                    .map(|_| self.transport.open(dial.clone()))
                    .collect(),
                _ => Vec::new(),
            };
            async move {
                let Some(conn) = s.conn.as_mut().filter(|_| wanted) else {
                    return s;
                };
                let (answer, fresh) = hedged(conn, &probe, probe_deadline, hedges, &peers).await;
                if answer.is_ok() {
                    peers.answered();
                }
                if let Some(fresh) = fresh {
                    // The old connection may still deliver the late reply
                    // as its next frame: the fresh one carries on.
                    *conn = fresh;
                }
                match answer {
                    Ok(Response::Probed(p)) => {
                        let mut results = p.results;
                        // The join never reads which host answered (a wrong
                        // host is named in the probe's detail): a string per
                        // path is not worth holding for the whole round.
                        for r in &mut results {
                            r.answered_by = None;
                        }
                        // Read into a vector grown by doubling: up to half
                        // of it spare, held for the whole round.
                        results.shrink_to_fit();
                        s.evidence.probes = results;
                    }
                    Ok(_) => s.evidence.probe_error = Some(error_chain(&conn.unexpected(&probe))),
                    Err(e) if died(&e) => {
                        s.lost(format!("lost during probe: {}", error_chain(&e)));
                    }
                    Err(e) => {
                        s.evidence.probe_error = Some(error_chain(&e));
                        // A timed-out stream may still deliver the late reply
                        // as the next frame: do not reuse it.
                        s.conn = None;
                    }
                }
                observer.event(RoundEvent::AgentDone {
                    phase: Phase::Probe,
                    host: &s.host,
                    ok: s.evidence.probe_error.is_none(),
                });
                s
            }
        })
        .await;
        self.lap(Phase::Probe);
        sessions
    }

    /// Phase 3: evidence from every agent that held canaries.
    async fn evidence(&self, sessions: Vec<Session>, cancel: &CancellationToken) -> Vec<Session> {
        let evidence = Request::Evidence(RoundRef {
            round: self.round.clone(),
        });
        // A few at a time: every agent has its evidence ready, and a hundred
        // replies read at once would hold a hundred frame buffers in the
        // coordinator together (each agent's canaries saw ~1,000 nonces).
        let evidence_slots = Arc::new(tokio::sync::Semaphore::new(EVIDENCE_AT_ONCE));
        let request_timeout = self.config.request_timeout;
        let reached = self
            .reached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let sessions = each(sessions, cancel, |s| {
            let evidence = evidence.clone();
            let evidence_slots = evidence_slots.clone();
            // A reply lost to a lossy link is asked for again on a fresh
            // connection (evidence is a read: asking twice is safe), where
            // the transport's agents outlive their connections.
            let reopen: Vec<_> = match reached.get(&s.host) {
                Some(dial) if self.transport.agents_outlive_connections() => (0..EVIDENCE_REOPENS)
                    .map(|_| self.transport.open(dial.clone()))
                    .collect(),
                _ => Vec::new(),
            };
            async move {
                let _slot = evidence_slots.acquire_owned().await;
                evidence_one(s, &evidence, request_timeout, reopen).await
            }
        })
        .await;
        self.lap(Phase::Evidence);
        sessions
    }

    /// Phase 4: teardown. Best effort: the TTL closes whatever this misses.
    async fn teardown(&self, sessions: Vec<Session>) -> Vec<Session> {
        let teardown = Request::Teardown(RoundRef {
            round: self.round.clone(),
        });
        let never = CancellationToken::new();
        let deadline = self.config.request_timeout.min(Duration::from_secs(3));
        let sessions = each(sessions, &never, |mut s| {
            let teardown = teardown.clone();
            async move {
                if let Some(mut conn) = s.conn.take() {
                    if let Err(e) = conn.request(&teardown, deadline).await {
                        tracing::warn!(host = %s.host, error = %error_chain(&e), "teardown failed; the canaries close at the round's TTL");
                    }
                    conn.close(deadline).await;
                }
                s
            }
        })
        .await;
        self.lap(Phase::Teardown);
        sessions
    }
}

/// Connections `prepare` opens to an agent whose connection broke before
/// it answered, within the phase's budget (the connect deadline, twice,
/// plus the request deadline), [`PREPARE_BACKOFF`] apart and doubling.
/// Under a flood of idle connections from the coordinator's own address
/// (a bastion, a NAT) a `prepare` connection breaks often, and three in a
/// row broke in about one test run in ten (`abuse_loopback`); six spread
/// over 1.55 s ride out a burst of the flood.
const PREPARE_TRIES: usize = 6;

/// The first wait before `prepare` asks again on a fresh connection.
const PREPARE_BACKOFF: Duration = Duration::from_millis(50);

/// What one agent's `prepare` needs, moved into its task.
struct PrepareOne {
    /// One lazy connection per try.
    openings: Vec<BoxFuture<Result<ControlStream, ControlError>>>,
    dial: Dial,
    request: Request,
    reached: Reached,
    digest: String,
    coordinator_file: String,
    config: RoundConfig,
}

/// Connects to one agent and prepares the round there: up with its
/// listeners, unreachable with why, or refused as another plan's or
/// another protocol version's agent.
async fn prepare_one(mut s: Session, mut p: PrepareOne) -> Session {
    let config = p.config.clone();
    let give_up = tokio::time::Instant::now() + config.connect_timeout * 2 + config.request_timeout;
    let mut openings = std::mem::take(&mut p.openings).into_iter();
    let mut backoff = PREPARE_BACKOFF;
    let (mut conn, answer) = loop {
        let Some(opening) = openings.next() else {
            s.lost("no connection to open".into());
            return s;
        };
        let mut conn = match opening.await {
            Ok(c) => c,
            Err(e) => {
                s.lost(error_chain(&e));
                return s;
            }
        };
        p.reached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(s.host.clone(), p.dial.clone());
        let answer = conn.request(&p.request, config.request_timeout).await;
        match &answer {
            Err(e)
                if died(e)
                    && openings.len() > 0
                    && tokio::time::Instant::now() + backoff < give_up =>
            {
                // `prepare` replaces any round the agent holds: asking
                // again on a new connection is safe.
                tracing::debug!(host = %s.host, error = %e, "prepare broke; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            _ => break (conn, answer),
        }
    };
    let config = &config;
    match answer {
        Ok(Response::Prepared(r)) if r.version != control::PROTOCOL_VERSION => {
            // An agent of another version prepared (one before version 2
            // does not check ours): refuse it, and close what it opened.
            let e = control::VersionMismatch::Agent {
                host: s.host.clone(),
                agent: r.version,
                coordinator: control::PROTOCOL_VERSION,
            };
            tracing::warn!(host = %s.host, "{e}");
            let teardown = Request::Teardown(RoundRef { round: r.round });
            let _ = conn.request(&teardown, config.request_timeout).await;
            conn.close(config.request_timeout).await;
            s.lost(e.to_string());
        }
        Ok(Response::Prepared(r)) => {
            s.evidence.outcome = AgentOutcome::Up;
            s.evidence.listeners = r.listeners;
            s.evidence.addresses = r.addresses;
            s.evidence.forwarding = r.forwarding;
            s.conn = Some(conn);
        }
        Ok(_) => s.lost(error_chain(&conn.unexpected(&p.request))),
        Err(e @ ControlError::Refused { .. }) => {
            // Ask who it is: a refusal because it holds another plan is
            // reported as such, with both sides' files.
            match other_plan(&mut conn, &p.digest, config).await {
                Some((agent_digest, agent_file)) => {
                    s.conn = None;
                    s.evidence.outcome = AgentOutcome::PlanMismatch(PlanMismatch {
                        coordinator_digest: p.digest,
                        coordinator_file: p.coordinator_file,
                        agent_digest,
                        agent_file,
                    });
                }
                None => s.lost(error_chain(&e)),
            }
        }
        Err(e) => s.lost(error_chain(&e)),
    }
    s
}

/// Ends a cancelled round: every agent that was reached gets a teardown
/// (over its own connection when it is still usable, else a new one when
/// the transport's agents outlive their connection), all at once and within
/// [`CANCEL_TEARDOWN`]; agents that did not fail for another reason are
/// reported `cancelled`, and those whose teardown was not confirmed
/// unreachable, with why ([`interrupted_summary`] names them). An agent
/// whose `prepare` was still running saw its connection close, which drops
/// that `prepare` and closes what it opened; the teardown that follows
/// confirms it.
async fn cancelled<T: Transport + ?Sized>(
    mut sessions: Vec<Session>,
    reached: &Reached,
    round: &str,
    transport: &T,
    started_at: SystemTime,
) -> RoundEvidence {
    tracing::warn!(%round, "round cancelled; tearing it down");
    let reached = reached.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let teardown = Request::Teardown(RoundRef {
        round: round.to_string(),
    });
    let mut set = JoinSet::new();
    // Hosts whose teardown is under way, until it is confirmed.
    let mut unconfirmed = BTreeMap::new();
    for (i, s) in sessions.iter_mut().enumerate() {
        let conn = s.conn.take();
        let Some(dial) = reached.get(&s.host) else {
            continue;
        };
        let teardown = teardown.clone();
        let reopen = match &conn {
            None if transport.agents_outlive_connections() => {
                let mut dial = dial.clone();
                dial.connect_timeout = dial.connect_timeout.min(CANCEL_TEARDOWN);
                Some(transport.open(dial))
            }
            _ => None,
        };
        if conn.is_none() && reopen.is_none() {
            // Its session is closed: such an agent ends the round when its
            // input closes.
            continue;
        }
        unconfirmed.insert(
            i,
            format!("no answer to the teardown within {CANCEL_TEARDOWN:?}"),
        );
        set.spawn(async move {
            let done = async {
                let mut conn = match (conn, reopen) {
                    (Some(c), _) => c,
                    (None, Some(opening)) => opening.await?,
                    (None, None) => unreachable!("skipped above"),
                };
                match conn.request(&teardown, CANCEL_TEARDOWN).await? {
                    Response::TornDown(_) => Ok(()),
                    _ => Err(conn.unexpected(&teardown)),
                }
            };
            (i, done.await.map_err(|e| error_chain(&e)))
        });
    }
    let all = async {
        while let Some(done) = set.join_next().await {
            match done {
                Ok((i, Ok(()))) => {
                    unconfirmed.remove(&i);
                }
                Ok((i, Err(why))) => {
                    unconfirmed.insert(i, why);
                }
                Err(_) => {}
            }
        }
    };
    if timeout(CANCEL_TEARDOWN, all).await.is_err() {
        tracing::warn!(%round, "teardown after cancel not finished within {CANCEL_TEARDOWN:?}; those agents close the round when its lease lapses");
    }
    set.abort_all();
    for (i, s) in sessions.iter_mut().enumerate() {
        if let Some(why) = unconfirmed.remove(&i) {
            s.evidence.outcome =
                AgentOutcome::Unreachable(format!("round interrupted; teardown failed: {why}"));
            continue;
        }
        // Agents that failed for a reason of their own keep it.
        if s.evidence.outcome == AgentOutcome::Up {
            s.evidence.outcome = AgentOutcome::Cancelled;
        }
    }
    RoundEvidence {
        started_at,
        finished_at: SystemTime::now(),
        agents: sessions.into_iter().map(|s| (s.host, s.evidence)).collect(),
    }
}

/// After `prepare` was refused: the agent's digest and plan file when it
/// holds another plan than `digest`, from a `hello` on the same connection.
async fn other_plan(
    conn: &mut ControlStream,
    digest: &str,
    config: &RoundConfig,
) -> Option<(String, Option<String>)> {
    match conn.request(&Request::Hello, config.request_timeout).await {
        Ok(Response::Hello(h)) if h.plan_digest != digest => Some((h.plan_digest, h.plan_file)),
        _ => None,
    }
}

/// Runs `f` on every session at once and returns them in their original
/// order. When `cancel` fires, unfinished sessions are marked lost.
async fn each<F, Fut>(sessions: Vec<Session>, cancel: &CancellationToken, f: F) -> Vec<Session>
where
    F: Fn(Session) -> Fut,
    Fut: Future<Output = Session> + Send + 'static,
{
    let n = sessions.len();
    let hosts: Vec<String> = sessions.iter().map(|s| s.host.clone()).collect();
    let mut set = JoinSet::new();
    for (i, s) in sessions.into_iter().enumerate() {
        let fut = f(s);
        set.spawn(async move { (i, fut.await) });
    }
    let mut out: Vec<Option<Session>> = (0..n).map(|_| None).collect();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            next = set.join_next() => match next {
                None => break,
                Some(Ok((i, s))) => out[i] = Some(s),
                Some(Err(e)) => tracing::error!(error = %e, "round task failed"),
            },
        }
    }
    set.abort_all();
    out.into_iter()
        .zip(hosts)
        .map(|(s, host)| {
            // A session a cancelled phase did not finish was cut short:
            // that is its outcome, not a reason in text.
            s.unwrap_or_else(|| {
                let mut evidence = AgentEvidence::unreachable(String::new());
                evidence.outcome = AgentOutcome::Cancelled;
                Session {
                    host,
                    conn: None,
                    evidence,
                }
            })
        })
        .collect()
}
