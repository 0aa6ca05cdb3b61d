//! The sweep engine: probes many targets at once within a fixed concurrency,
//! a deadline per phase, and a retry schedule that respects how targets
//! rate-limit their ICMP errors, so that every outcome it reports is exact.
//!
//! One scheduler loop owns all per-target state. It hands single attempts to
//! tasks (each holding a semaphore permit for its socket's lifetime) and
//! decides from each attempt's report whether the target is finished, is
//! retried because it was silent, or waits because the prober itself ran
//! out of something.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::classify::{ConnectClass, classify_connect_error, error_detail};
use super::error::ProbeError;
use super::errqueue::{self, IcmpEvidence};
use super::exchange::{Exchange, ExchangeContext, ExchangeOutcome, ProbeStream};
use super::outcome::{CertFacts, Observed, ProbeResult, Silence};
use super::rtt::{self, RttEstimate};
use super::spread;
use super::target::{Host, Target};
use super::tls::{TlsClient, TlsOptions, server_name_for};
use super::ttl_walk::{self, Walk, WalkConfig};
use super::udp::{self, UdpRequest};
use super::udp_service::{ServiceRequest, UdpOptions, UdpService};
use crate::port::Protocol;

/// Everything that shapes a sweep. Build it with struct update syntax from
/// [`ProbeConfig::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Deadline of one TCP connect attempt (`timeout_ms`); with `adaptive`,
    /// the upper bound of the deadline derived from measured round trips.
    pub connect_timeout: Duration,
    /// Deadline of the TLS handshake, after TCP connected.
    pub tls_timeout: Duration,
    /// Deadline of the caller's [`Exchange`], after connect (and TLS).
    pub exchange_timeout: Duration,
    /// Extra attempts for targets that stayed silent. Other outcomes are
    /// final at once.
    pub retries: u32,
    /// Least time between paced retries to a host that sends ICMP errors
    /// (and between the starts of two attempts on one of its targets).
    /// Linux lets a host send about one ICMP error per second to each peer
    /// (after a burst of six), so a second apart gives each retry a fresh
    /// token. Other silent targets are retried as soon as their attempt's
    /// deadline has passed.
    pub retry_spacing: Duration,
    /// How much longer a sweep may take to pace retries to a host that has
    /// been seen rejecting with ICMP: when all of that host's unfinished
    /// targets fit in this window at one per `retry_spacing`, its retries
    /// are paced so that a handful of rejected ports are each seen as
    /// `unreachable` rather than drowned in its rate limit; otherwise they
    /// go at once.
    pub icmp_pacing_window: Duration,
    /// Most attempts in flight at once. Each holds one socket. When the
    /// process or system runs out of descriptors first (EMFILE, ENFILE),
    /// the sweep narrows itself to what fits and widens again slowly, so a
    /// value above the open-file limit costs speed, never correctness.
    pub concurrency: usize,
    /// Local address to bind probes to, so the target sees this source;
    /// a target of the other family is a `local-error`.
    pub source: Option<IpAddr>,
    /// This host's own addresses, when `source` is not given: each probe
    /// binds to the first of its target's family, and when there is none
    /// the kernel chooses (a dual-stack host the plan names by one
    /// address still reaches targets of the other family).
    pub sources: Vec<IpAddr>,
    /// How TLS targets are verified.
    pub tls: TlsOptions,
    /// Deadline for resolving each DNS name.
    pub resolve_timeout: Duration,
    /// How long a target may keep failing locally (no descriptor, no
    /// ephemeral port) before it is reported as `local-error`.
    pub local_error_budget: Duration,
    /// When TCP opens but the TLS handshake stalls, try once more with this
    /// maximum segment size; success there (and a control try that stalls
    /// again) is a path-MTU black hole.
    /// `None` turns the second try off.
    pub mtu_retry_mss: Option<u32>,
    /// Walk the TTL toward targets that stayed silent
    /// ([`super::ttl_walk`]), to name the last router before the silence.
    /// `None` turns walks off.
    pub ttl_walk: Option<WalkConfig>,
    /// Most attempts in flight at once to one destination address, so that
    /// a sweep never queues more handshakes at one server than it can take.
    /// A host whose TLS handshakes stall while others succeed gets half as
    /// many (down to one), and one more back with each handshake that
    /// succeeds.
    pub per_host_concurrency: usize,
    /// Derive each connect deadline from the round trips measured to the
    /// target's address ([`super::rtt`]), within `min_rtt_timeout ..=
    /// connect_timeout`. Off: every attempt waits `connect_timeout`.
    pub adaptive: bool,
    /// The least an adaptive connect deadline may be.
    pub min_rtt_timeout: Duration,
    /// Where in the destination addresses the sweep starts
    /// ([`super::spread`]): sources of one round given different offsets
    /// start on different hosts.
    pub spread_offset: u64,
}

/// The least an attempt waits without an answer before it stops counting
/// against its host's bound.
const QUIET_FLOOR: Duration = Duration::from_millis(10);

/// Extra tries for a TLS handshake that stalled on a host whose other
/// handshakes succeed: each goes at the host's reduced concurrency before
/// the stall may become `tls-error`.
const CONGESTION_RETRIES: u32 = 2;

/// Walks after one sweep: at most [`WALKS_AT_ONCE`] at a time (each holds
/// up to [`ttl_walk::MAX_HOPS`] sockets for at most its deadline), and no
/// new batch once [`WALK_BUDGET`] would be exceeded, so walking adds at
/// most `WALK_BUDGET` to a sweep however many targets were silent.
const WALKS_AT_ONCE: usize = 4;

/// The most time walks may add to one sweep.
pub const WALK_BUDGET: Duration = Duration::from_secs(3);

/// The default of [`ProbeConfig::per_host_concurrency`]: a single-threaded
/// TLS server taking a few milliseconds per handshake clears this many
/// well within a one-second TLS deadline.
pub const DEFAULT_PER_HOST: usize = 64;

impl ProbeConfig {
    /// The address a probe of `addr` binds: `source`, else the first of
    /// `sources` of the target's family; `None` lets the kernel choose.
    fn source_for(&self, addr: SocketAddr) -> Option<IpAddr> {
        self.source.or_else(|| {
            self.sources
                .iter()
                .copied()
                .find(|s| s.is_ipv4() == addr.is_ipv4())
        })
    }
}

impl Default for ProbeConfig {
    fn default() -> ProbeConfig {
        ProbeConfig {
            connect_timeout: Duration::from_millis(1000),
            tls_timeout: Duration::from_millis(1000),
            exchange_timeout: Duration::from_millis(1000),
            retries: 1,
            retry_spacing: Duration::from_millis(1000),
            icmp_pacing_window: Duration::from_secs(5),
            concurrency: 4096,
            source: None,
            sources: Vec::new(),
            tls: TlsOptions::default(),
            resolve_timeout: Duration::from_secs(5),
            local_error_budget: Duration::from_secs(30),
            mtu_retry_mss: Some(536),
            ttl_walk: None,
            per_host_concurrency: DEFAULT_PER_HOST,
            adaptive: true,
            min_rtt_timeout: Duration::from_millis(100),
            spread_offset: 0,
        }
    }
}

/// The probe engine. Cheap to clone; clones share the TLS client.
#[derive(Clone)]
pub struct Prober {
    shared: Arc<Shared>,
}

struct Shared {
    config: ProbeConfig,
    tls: TlsClient,
    exchange: Option<Arc<dyn Exchange>>,
    udp: UdpOptions,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober")
            .field("config", &self.shared.config)
            .field("exchange", &self.shared.exchange.is_some())
            .finish()
    }
}

impl Prober {
    /// An engine for `config`. Fails on configuration that can never work
    /// (an unreadable `--ca` file, zero concurrency).
    pub fn new(config: ProbeConfig) -> Result<Prober, ProbeError> {
        Prober::build(config, None, UdpOptions::default())
    }

    /// An engine that runs `exchange` on every connected stream before
    /// closing it (the agents' canary nonce exchange).
    pub fn with_exchange(
        config: ProbeConfig,
        exchange: Arc<dyn Exchange>,
    ) -> Result<Prober, ProbeError> {
        Prober::build(config, Some(exchange), UdpOptions::default())
    }

    /// An engine with `exchange` (when given) for TCP streams and `udp` for
    /// the live requests sent to UDP targets (an SNMP community).
    pub fn with_udp(
        config: ProbeConfig,
        exchange: Option<Arc<dyn Exchange>>,
        udp: UdpOptions,
    ) -> Result<Prober, ProbeError> {
        Prober::build(config, exchange, udp)
    }

    fn build(
        config: ProbeConfig,
        exchange: Option<Arc<dyn Exchange>>,
        udp: UdpOptions,
    ) -> Result<Prober, ProbeError> {
        if config.concurrency == 0 || config.per_host_concurrency == 0 {
            return Err(ProbeError::ZeroConcurrency);
        }
        let tls = TlsClient::new(&config.tls)?;
        Ok(Prober {
            shared: Arc::new(Shared {
                config,
                tls,
                exchange,
                udp,
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &ProbeConfig {
        &self.shared.config
    }

    /// Probes one target.
    pub async fn probe(&self, target: Target) -> ProbeResult {
        let mut results = self
            .sweep(vec![target], &CancellationToken::new(), |_, _| {})
            .await;
        results.pop().expect("one target gives one result")
    }

    /// Probes every target and returns their results in the same order.
    /// `on_result` is called as each target finishes (for progress
    /// display), with its index. When `cancel` fires, attempts in flight are
    /// abandoned and unfinished targets are `local-error` ("cancelled").
    pub async fn sweep<F>(
        &self,
        targets: Vec<Target>,
        cancel: &CancellationToken,
        mut on_result: F,
    ) -> Vec<ProbeResult>
    where
        F: FnMut(usize, &ProbeResult) + Send,
    {
        let config = &self.shared.config;
        let n = targets.len();
        let targets: Arc<[Target]> = targets.into();
        let resolved = resolve_all(&targets, config, cancel).await;

        let mut slots: Vec<Slot> = (0..n).map(|_| Slot::default()).collect();
        let mut done = 0usize;
        let mut start = Vec::with_capacity(n);
        for (i, r) in resolved.into_iter().enumerate() {
            match r {
                Ok(addr) => {
                    slots[i].addr = Some(addr);
                    start.push((i, addr.ip()));
                }
                Err(detail) => {
                    let result = finished(
                        &targets[i],
                        &slots[i],
                        Verdict::new(Observed::LocalError, detail, None),
                    );
                    on_result(i, &result);
                    slots[i].result = Some(result);
                    done += 1;
                }
            }
        }
        // One target of each address in turn, from the caller's offset.
        let mut fresh: VecDeque<usize> = spread::spread(&start, config.spread_offset).into();
        drop(start);

        let semaphore = Arc::new(Semaphore::new(config.concurrency));
        let mut capacity = config.concurrency;
        let mut clean_streak = 0usize;
        let mut later: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
        // Targets whose host had room again, ahead of fresh ones.
        let mut ready: VecDeque<usize> = VecDeque::new();
        let mut hosts: HashMap<IpAddr, HostPacing> = HashMap::new();
        for slot in &slots {
            if let (Some(addr), None) = (slot.addr, &slot.result) {
                let host = hosts
                    .entry(addr.ip())
                    .or_insert_with(|| HostPacing::new(config));
                host.unfinished += 1;
            }
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Report)>();
        // The longest round trip measured to any address in this sweep.
        let mut sweep_max_rtt = Duration::ZERO;
        let tracker = TaskTracker::new();

        while done < n {
            let now = Instant::now();
            // Due retries go first, so that a long sweep finishes targets
            // instead of only starting new ones.
            while semaphore.available_permits() > 0 {
                let next = match ready.pop_front() {
                    Some(i) => Some(i),
                    None => match later.peek() {
                        Some(Reverse((due, _))) if *due <= now => {
                            later.pop().map(|Reverse((_, i))| i)
                        }
                        _ => fresh.pop_front(),
                    },
                };
                let Some(i) = next else { break };
                let addr = slots[i].addr.expect("only resolved targets are scheduled");
                let host = hosts
                    .entry(addr.ip())
                    .or_insert_with(|| HostPacing::new(config));
                if host.in_flight >= host.limit {
                    // The host has as many attempts as it may take: this one
                    // waits for one of them to finish.
                    host.waiting.push_back(i);
                    continue;
                }
                if slots[i].paced {
                    // A paced retry goes only when the target should have an
                    // ICMP token for it; the estimate moves with every
                    // reject seen, so the due time is checked again here.
                    let ready_at = host.token_ready_at(now, config);
                    if ready_at > now {
                        later.push(Reverse((ready_at, i)));
                        continue;
                    }
                    host.take_token(now, config);
                }
                host.in_flight += 1;
                let permit = semaphore
                    .clone()
                    .try_acquire_owned()
                    .expect("a permit is available and only this loop takes them");
                let deadline = match &host.timeout {
                    Some(tx) if config.adaptive => ConnectDeadline::Adaptive(tx.subscribe()),
                    _ => ConnectDeadline::Fixed(config.connect_timeout),
                };
                // Past this without an answer the attempt is most likely
                // silent: it stops counting against the host's bound (a SYN
                // nobody answers costs the server nothing).
                let quiet_after = host.quiet_after();
                // Only where our own queue can be the cause: other attempts
                // to the host in flight, or handshakes it completed.
                let may_defer = (host.answered || host.in_flight > 1)
                    && slots[i].deferrals < CONGESTION_RETRIES;
                slots[i].may_defer = may_defer;
                slots[i].quiet = false;
                let shared = self.shared.clone();
                let targets = targets.clone();
                let tx = tx.clone();
                // Attempts are not raced against the cancel token each (a
                // waiter per attempt on one shared lock is what a fast sweep
                // would spend its time on); a cancelled sweep aborts them.
                let task = tracker.spawn(async move {
                    let quiet_tx = tx.clone();
                    let quiet: Quiet = Box::new(move || {
                        let _ = quiet_tx.send((i, Report::Quiet));
                    });
                    let how = AttemptSetup {
                        deadline,
                        quiet: Some((quiet, quiet_after)),
                        may_defer,
                    };
                    let attempt = shared.attempt(i, &targets[i], addr, how).await;
                    // Free the socket's permit before reporting, so the
                    // scheduler can start the next attempt at once.
                    drop(permit);
                    let _ = tx.send((i, Report::Done(attempt)));
                });
                slots[i].task = Some(task.abort_handle());
            }

            let next_due = later.peek().map(|Reverse((due, _))| *due);
            let (i, report) = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(report) = rx.recv() => report,
                () = sleep_until(next_due.unwrap_or(now)), if next_due.is_some() && semaphore.available_permits() > 0 => continue,
            };

            let slot = &mut slots[i];
            let addr = slot.addr.expect("only resolved targets are scheduled");
            let host = hosts
                .get_mut(&addr.ip())
                .expect("every scheduled address has its pacing");
            let attempt = match report {
                Report::Quiet => {
                    if !slot.quiet {
                        slot.quiet = true;
                        host.release(&mut ready);
                    }
                    continue;
                }
                Report::Done(attempt) => attempt,
            };
            if !std::mem::replace(&mut slot.quiet, false) {
                host.release(&mut ready);
            }
            // The attempt is over: let its task's memory go.
            slot.task = None;
            slot.latency = attempt.latency;
            slot.timing = attempt.timing;
            if attempt.local_address.is_some() {
                slot.local_address = attempt.local_address;
            }
            if attempt.icmp.is_some() {
                slot.icmp = attempt.icmp.clone();
            }
            if attempt.arrived.is_some() {
                slot.arrived = attempt.arrived;
            }
            if let Some(rtt) = attempt.timing.answer {
                host.rtt.sample(rtt);
                if rtt > sweep_max_rtt {
                    // A round trip longer than any before, to any address:
                    // the sweep's own load (or the shared network) may be
                    // slowing every path, so every deadline respects it.
                    sweep_max_rtt = rtt;
                    let floor = sweep_max_rtt.saturating_mul(rtt::SAFETY);
                    for h in hosts.values_mut() {
                        h.publish(config, floor);
                    }
                } else {
                    let floor = sweep_max_rtt.saturating_mul(rtt::SAFETY);
                    hosts
                        .get_mut(&addr.ip())
                        .expect("every scheduled address has its pacing")
                        .publish(config, floor);
                }
            }
            let host = hosts
                .get_mut(&addr.ip())
                .expect("every scheduled address has its pacing");
            let udp_target = targets[i].protocol == Protocol::Udp;
            let verdict = match attempt.kind {
                // Deferred where our own queue can be the cause: decided
                // when the attempt started (others in flight then), or now
                // that the host has completed other handshakes meanwhile
                // (the first attempt to a busy host starts alone).
                AttemptKind::Final {
                    stalled: true,
                    path_mtu: false,
                    ..
                } if slot.may_defer || (host.answered && slot.deferrals < CONGESTION_RETRIES) => {
                    tracing::debug!(%addr, answered = host.answered, limit = host.limit, "stalled handshake deferred");
                    slot.attempts += 1;
                    if host.answered {
                        // A handshake stalled on a host that completes
                        // others: our own queue at a busy server, not a
                        // verdict. Fewer at once to that host, and this
                        // target tries again.
                        slot.deferrals += 1;
                        host.congested(attempt.started);
                    } else {
                        // Nothing on this host has answered: maybe no TLS
                        // there at all. Once more, this time with the
                        // path-MTU tries.
                        slot.deferrals = CONGESTION_RETRIES;
                    }
                    later.push(Reverse((Instant::now(), i)));
                    None
                }
                AttemptKind::Final {
                    observed,
                    detail,
                    errno,
                    cert,
                    path_mtu,
                    ..
                } => {
                    slot.attempts += 1;
                    slot.cert = cert;
                    slot.path_mtu = path_mtu;
                    // A UDP port-unreachable is an ICMP error too, and as
                    // rate-limited as any.
                    let icmp_refused = udp_target && observed == Observed::Refused;
                    if observed == Observed::Unreachable || icmp_refused {
                        host.icmp_seen = true;
                        // A paced retry already took its token when it left.
                        if !slot.paced {
                            host.take_token(Instant::now(), config);
                        }
                    }
                    if observed == Observed::Open {
                        host.on_answer(&mut ready, config);
                    }
                    Some(Verdict::new(observed, detail, errno))
                }
                AttemptKind::Silent { waited } => {
                    tracing::debug!(%addr, waited_ms = waited.as_millis() as u64, "probe silent");
                    slot.attempts += 1;
                    slot.waited = waited;
                    if slot.attempts <= config.retries {
                        // The attempt waited out its deadline already: the
                        // retry goes at once, except that retries to a host
                        // that rejects with ICMP keep to its rate limit.
                        slot.paced = host.should_pace(config);
                        let earliest = if slot.paced {
                            (attempt.started + config.retry_spacing).max(Instant::now())
                        } else {
                            Instant::now()
                        };
                        later.push(Reverse((earliest, i)));
                        None
                    } else {
                        let (mut detail, silence) = silence_detail(slot, host, config);
                        if udp_target {
                            let service =
                                UdpService::for_port(targets[i].port.get(), &self.shared.udp);
                            detail = format!("{detail}: {}", service.silence());
                        }
                        Some(Verdict {
                            silence: Some(silence),
                            ..Verdict::new(Observed::Timeout, detail, None)
                        })
                    }
                }
                AttemptKind::Shed {
                    observed,
                    detail,
                    cert,
                } => {
                    tracing::debug!(%addr, %detail, "probe shed");
                    slot.attempts += 1;
                    slot.sheds += 1;
                    slot.cert = cert;
                    if slot.sheds <= SHED_RETRIES {
                        // The far end is overloaded (by us and the round's
                        // other sources): fewer at once to it, and a
                        // backoff with jitter so that sources shed together
                        // do not come back together.
                        host.congested(attempt.started);
                        let base = 50u64 << slot.sheds;
                        let backoff = Duration::from_millis(base + jitter(i, slot.sheds) % base);
                        later.push(Reverse((Instant::now() + backoff, i)));
                        None
                    } else {
                        slot.shed = true;
                        Some(Verdict::new(observed, detail, None))
                    }
                }
                AttemptKind::SelfConnect => {
                    // The kernel picked the destination port as our source
                    // port and connected the socket to itself: nothing
                    // listened. Try again from another port.
                    slot.self_connects += 1;
                    if slot.self_connects <= 3 {
                        later.push(Reverse((Instant::now(), i)));
                        None
                    } else {
                        Some(Verdict::new(
                            Observed::LocalError,
                            "the socket kept connecting to itself".to_string(),
                            None,
                        ))
                    }
                }
                AttemptKind::LocalTransient { detail, errno } => {
                    let now = Instant::now();
                    let since = *slot.local_since.get_or_insert(now);
                    slot.local_failures += 1;
                    // Too many sockets at once for this process or system:
                    // run with what is in flight now, and grow back slowly.
                    let in_flight = capacity - semaphore.available_permits();
                    let wanted = in_flight.max(1);
                    if wanted < capacity {
                        capacity -= semaphore.forget_permits(capacity - wanted);
                    }
                    clean_streak = 0;
                    if now.duration_since(since) < config.local_error_budget {
                        let backoff = Duration::from_millis(10u64 << slot.local_failures.min(7));
                        later.push(Reverse((now + backoff, i)));
                        None
                    } else {
                        Some(Verdict::new(Observed::LocalError, detail, errno))
                    }
                }
                AttemptKind::LocalPermanent { detail, errno } => {
                    Some(Verdict::new(Observed::LocalError, detail, errno))
                }
            };
            if !matches!(
                verdict,
                Some(Verdict {
                    observed: Observed::LocalError,
                    ..
                })
            ) {
                clean_streak += 1;
                if clean_streak >= capacity && capacity < config.concurrency {
                    semaphore.add_permits(1);
                    capacity += 1;
                    clean_streak = 0;
                }
            }
            if let Some(verdict) = verdict {
                host.unfinished -= 1;
                let result = finished(&targets[i], &slots[i], verdict);
                on_result(i, &result);
                slots[i].result = Some(result);
                done += 1;
            }
        }

        if cancel.is_cancelled() {
            for slot in &slots {
                if let (None, Some(task)) = (&slot.result, &slot.task) {
                    task.abort();
                }
            }
        }
        tracker.close();
        tracker.wait().await;
        if let (Some(walk), false) = (config.ttl_walk, cancel.is_cancelled()) {
            walk_silent(&mut slots, walk, config, cancel).await;
        }
        targets
            .iter()
            .zip(slots)
            .enumerate()
            .map(|(i, (target, slot))| match slot.result {
                Some(r) => r,
                None => {
                    let r = finished(
                        target,
                        &slot,
                        Verdict::new(
                            Observed::LocalError,
                            "cancelled before a result".to_string(),
                            None,
                        ),
                    );
                    on_result(i, &r);
                    r
                }
            })
            .collect()
    }
}

/// Per-target state, owned by the scheduler loop.
#[derive(Default)]
struct Slot {
    addr: Option<SocketAddr>,
    local_address: Option<SocketAddr>,
    attempts: u32,
    local_failures: u32,
    local_since: Option<Instant>,
    self_connects: u32,
    /// Attempts closed unanswered (a canary shedding load).
    sheds: u32,
    /// Every retry of the final attempt was closed unanswered.
    shed: bool,
    /// The next attempt waits for the target's ICMP budget.
    paced: bool,
    /// Stalled handshakes tried again at the host's reduced concurrency.
    deferrals: u32,
    /// The attempt in flight may be deferred when its handshake stalls.
    may_defer: bool,
    /// The attempt in flight no longer counts against its host's bound.
    quiet: bool,
    /// The deadline the last silent attempt waited.
    waited: Duration,
    latency: Duration,
    timing: Timing,
    cert: Option<Box<CertFacts>>,
    icmp: Option<IcmpEvidence>,
    path_mtu: bool,
    result: Option<ProbeResult>,
    /// The attempt in flight, aborted when the sweep is cancelled.
    task: Option<AbortHandle>,
    /// UDP: datagrams a canary answered.
    arrived: Option<u32>,
}

/// How a target finished: its outcome and the typed facts it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdict {
    observed: Observed,
    detail: String,
    /// The errno the outcome was read from.
    errno: Option<i32>,
    /// Set for `timeout`.
    silence: Option<Silence>,
}

impl Verdict {
    fn new(observed: Observed, detail: String, errno: Option<i32>) -> Verdict {
        Verdict {
            observed,
            detail,
            errno,
            silence: None,
        }
    }
}

fn finished(target: &Target, slot: &Slot, verdict: Verdict) -> ProbeResult {
    let Verdict {
        observed,
        detail,
        errno,
        silence,
    } = verdict;
    ProbeResult {
        target: target.clone(),
        address: slot.addr,
        local_address: slot.local_address,
        observed,
        detail,
        latency: slot.latency,
        connect_time: slot.timing.connect,
        tls_time: slot.timing.tls,
        attempts: slot.attempts,
        cert: slot.cert.clone(),
        shed: slot.shed,
        icmp: slot.icmp.clone(),
        path_mtu: slot.path_mtu,
        walk: None,
        arrived: slot.arrived,
        errno,
        // Every `timeout` carries its silence, however it came about.
        silence: silence.or_else(|| {
            (observed == Observed::Timeout).then(|| Silence {
                waited_ms: u64::try_from(slot.waited.as_millis()).unwrap_or(u64::MAX),
                adaptive: false,
            })
        }),
    }
}

/// Walks the TTL toward the targets whose result is `timeout` (one walk per
/// address and port; one port of every silent address first, then the
/// others, within [`WALK_BUDGET`]), skipping targets on this host's own
/// link, and attaches each walk to the results it explains.
async fn walk_silent(
    slots: &mut [Slot],
    config: WalkConfig,
    probe: &ProbeConfig,
    cancel: &CancellationToken,
) {
    let mut on_link: HashMap<IpAddr, bool> = HashMap::new();
    let mut first: Vec<SocketAddr> = Vec::new();
    let mut rest: Vec<SocketAddr> = Vec::new();
    for slot in slots.iter() {
        let (Some(r), Some(addr)) = (&slot.result, slot.addr) else {
            continue;
        };
        if r.observed != Observed::Timeout || first.contains(&addr) || rest.contains(&addr) {
            continue;
        }
        // A walk sends TCP; a firewall may treat UDP to the port otherwise.
        if r.target.protocol == Protocol::Udp {
            continue;
        }
        let local = *on_link
            .entry(addr.ip())
            .or_insert_with(|| ttl_walk::on_link(addr.ip()) == Some(true));
        if local {
            continue;
        }
        if first.iter().any(|a| a.ip() == addr.ip()) {
            rest.push(addr);
        } else {
            first.push(addr);
        }
    }
    let wanted: Vec<SocketAddr> = first.into_iter().chain(rest).collect();
    if wanted.is_empty() {
        return;
    }
    // A walk leaves from the address the probes left from.
    let source_for = |addr: SocketAddr| {
        config
            .source
            .into_iter()
            .chain(probe.source)
            .chain(probe.sources.iter().copied())
            .find(|s| s.is_ipv4() == addr.is_ipv4())
    };
    let mut walks: HashMap<SocketAddr, Walk> = HashMap::new();
    let started = Instant::now();
    for chunk in wanted.chunks(WALKS_AT_ONCE) {
        if started.elapsed() + config.deadline > WALK_BUDGET {
            break;
        }
        let mut set = tokio::task::JoinSet::new();
        for addr in chunk {
            let addr = *addr;
            let config = WalkConfig {
                source: source_for(addr),
                ..config
            };
            set.spawn(async move { (addr, ttl_walk::walk(addr, config).await) });
        }
        loop {
            tokio::select! {
                () = cancel.cancelled() => {
                    set.abort_all();
                    return;
                }
                next = set.join_next() => match next {
                    Some(Ok((addr, w))) => { walks.insert(addr, w); }
                    Some(Err(_)) => {}
                    None => break,
                }
            }
        }
    }
    for slot in slots.iter_mut() {
        if let (Some(r), Some(addr)) = (slot.result.as_mut(), slot.addr) {
            if r.observed == Observed::Timeout {
                r.walk = walks.get(&addr).cloned();
            }
        }
    }
}

/// Extra attempts for a path whose connection a canary shed (closed
/// unanswered), spaced 100, 200, 400, 800, 1600 ms apart, each plus up to
/// as much again at random.
const SHED_RETRIES: u32 = 5;

/// A few bits that differ between targets, tries and processes, for
/// backoff jitter (not for anything that needs real randomness).
fn jitter(index: usize, round: u32) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(index);
    h.write_u32(round);
    h.finish()
}

/// What an attempt's task tells the scheduler.
enum Report {
    /// The attempt has waited past its host's round trip without an answer
    /// and no longer loads the host.
    Quiet,
    /// The attempt is over.
    Done(Attempt),
}

/// Called once when an attempt turns quiet.
type Quiet = Box<dyn FnOnce() + Send>;

/// How the scheduler starts one attempt.
struct AttemptSetup {
    deadline: ConnectDeadline,
    /// Called when the connect has waited this long without an answer.
    quiet: Option<(Quiet, Duration)>,
    /// A stalled TLS handshake is reported as it is, without the path-MTU
    /// tries, because the scheduler will try it again at lower concurrency.
    may_defer: bool,
}

/// How long a connect waits for an answer.
#[derive(Clone)]
enum ConnectDeadline {
    /// `timeout_ms`, whatever is measured.
    Fixed(Duration),
    /// The host's current adaptive timeout, which moves as its round trips
    /// are measured (also while the attempt waits).
    Adaptive(watch::Receiver<Duration>),
}

impl ConnectDeadline {
    fn current(&self) -> Duration {
        match self {
            ConnectDeadline::Fixed(d) => *d,
            ConnectDeadline::Adaptive(rx) => *rx.borrow(),
        }
    }

    /// Resolves when the deadline may have moved.
    async fn changed(&mut self) {
        match self {
            ConnectDeadline::Fixed(_) => std::future::pending().await,
            ConnectDeadline::Adaptive(rx) => {
                if rx.changed().await.is_err() {
                    // The sweep is gone; keep what was last said.
                    let last = *rx.borrow();
                    *self = ConnectDeadline::Fixed(last);
                }
            }
        }
    }
}

/// The detail of a path that stayed silent through every attempt, and the
/// same facts typed: the deadline the text names, and whether it was the
/// adaptive one.
fn silence_detail(slot: &Slot, host: &HostPacing, config: &ProbeConfig) -> (String, Silence) {
    let attempts = format!(
        "{} attempt{}",
        slot.attempts,
        if slot.attempts == 1 { "" } else { "s" }
    );
    let waited = slot.waited.max(Duration::from_millis(1));
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    match host.rtt.srtt() {
        Some(srtt) if config.adaptive && waited < config.connect_timeout => (
            format!(
                "no answer within {} ms ({attempts}; adaptive timeout: the host's other ports answer in {:.2} ms, longest {:.2} ms; at most {} ms)",
                waited.as_millis(),
                srtt.as_secs_f64() * 1000.0,
                host.rtt.max_seen().as_secs_f64() * 1000.0,
                config.connect_timeout.as_millis()
            ),
            Silence {
                waited_ms: millis(waited),
                adaptive: true,
            },
        ),
        _ => (
            format!(
                "no answer within {} ms ({attempts})",
                config.connect_timeout.as_millis()
            ),
            Silence {
                waited_ms: millis(config.connect_timeout),
                adaptive: false,
            },
        ),
    }
}

/// Retry pacing for one destination address.
///
/// A host that rate-limits its ICMP errors (Linux: a burst of six, then one
/// per second to each peer) turns rejects beyond its budget into silence.
/// Once it has been seen rejecting, its silent ports may be such rejects,
/// so their retries are paced by an estimate of the host's token bucket
/// (emptied by every reject seen, refilled one token per `retry_spacing`):
/// each goes when a token should be there for it - but only when every
/// unfinished port of the host fits in `icmp_pacing_window`. A host with more silent ports than that cannot be
/// told apart in any reasonable time (1000 rejects need some 1000 s from
/// one source), so its retries go at once rather than stretching the sweep
/// for a handful of extra answers.
struct HostPacing {
    /// Attempts to this address in flight (and not yet quiet).
    in_flight: usize,
    /// Most attempts in flight to this address now.
    limit: usize,
    /// Targets waiting for room under `limit`.
    waiting: VecDeque<usize>,
    /// Some attempt to this address completed its handshake (and exchange).
    answered: bool,
    /// When `limit` was last cut: stalls of attempts started before then
    /// were caused by the old limit and do not cut it again.
    cut_at: Option<Instant>,
    /// The address's measured round trips.
    rtt: RttEstimate,
    /// The adaptive connect deadline, watched by attempts in flight.
    timeout: Option<watch::Sender<Duration>>,
    /// The host answered some probe with an ICMP error.
    icmp_seen: bool,
    /// Targets on this address without a result yet.
    unfinished: usize,
    /// Estimate of the host's ICMP token bucket towards us: its level at
    /// `tokens_at` (in tokens; `None` before any reject was seen, when the
    /// bucket is taken to be empty so that the first paced retry waits a
    /// full interval).
    tokens: f64,
    tokens_at: Option<Instant>,
}

/// Linux's `icmp_ratelimit` burst: six tokens.
const ICMP_BURST: f64 = 6.0;

/// Wait for a little more than one whole token: the target refills
/// continuously, and a retry sent exactly one interval after the last
/// reject can find its bucket a hair short.
const TOKEN_MARGIN: f64 = 1.1;

impl HostPacing {
    fn new(config: &ProbeConfig) -> HostPacing {
        HostPacing {
            in_flight: 0,
            limit: config.per_host_concurrency.max(1),
            waiting: VecDeque::new(),
            answered: false,
            cut_at: None,
            rtt: RttEstimate::default(),
            timeout: config
                .adaptive
                .then(|| watch::Sender::new(config.connect_timeout)),
            icmp_seen: false,
            unfinished: 0,
            tokens: 0.0,
            tokens_at: None,
        }
    }

    /// An attempt stopped counting against the bound: a waiting target may
    /// go.
    fn release(&mut self, ready: &mut VecDeque<usize>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.admit(ready);
    }

    /// Moves one waiting target to `ready` when the host has room; the
    /// scheduler checks the room again when it starts it.
    fn admit(&mut self, ready: &mut VecDeque<usize>) {
        if self.in_flight < self.limit {
            if let Some(i) = self.waiting.pop_front() {
                ready.push_back(i);
            }
        }
    }

    /// A handshake completed: the host speaks, and takes one more attempt
    /// at once if it had been cut.
    fn on_answer(&mut self, ready: &mut VecDeque<usize>, config: &ProbeConfig) {
        self.answered = true;
        if self.limit < config.per_host_concurrency {
            self.limit += 1;
            self.admit(ready);
        }
    }

    /// A handshake started at `started` stalled while others succeed: half
    /// as many at once as were in flight (counting it), once per
    /// generation of attempts.
    fn congested(&mut self, started: Instant) {
        if self.cut_at.is_none_or(|at| started >= at) {
            self.limit = (self.limit.min(self.in_flight + 1) / 2).max(1);
            self.cut_at = Some(Instant::now());
        }
    }

    /// Tells attempts in flight the deadline the new estimate gives, never
    /// below `floor` (from the sweep's longest round trip to any address).
    fn publish(&mut self, config: &ProbeConfig, floor: Duration) {
        let t = self
            .rtt
            .timeout(config.min_rtt_timeout.max(floor), config.connect_timeout);
        if let Some(tx) = &self.timeout {
            tx.send_if_modified(|cur| {
                let changed = *cur != t;
                *cur = t;
                changed
            });
        }
    }

    /// After how long without an answer an attempt is taken for silent
    /// (for the per-host bound only, never for its outcome): [`rtt::SAFETY`]
    /// times the longest round trip seen, and at least [`QUIET_FLOOR`].
    /// Before any round trip is known that is the floor: a far host's
    /// first wave is then bounded only by the sweep's concurrency, and
    /// handshakes that stall there are tried again at lower concurrency.
    fn quiet_after(&self) -> Duration {
        QUIET_FLOOR.max(self.rtt.max_seen().saturating_mul(rtt::SAFETY))
    }

    fn should_pace(&self, config: &ProbeConfig) -> bool {
        let needed = config
            .retry_spacing
            .mul_f64(TOKEN_MARGIN)
            .saturating_mul(u32::try_from(self.unfinished).unwrap_or(u32::MAX));
        self.icmp_seen && needed <= config.icmp_pacing_window
    }

    fn level(&self, now: Instant, config: &ProbeConfig) -> f64 {
        let Some(at) = self.tokens_at else {
            return 0.0;
        };
        let refill = now.duration_since(at).as_secs_f64() / config.retry_spacing.as_secs_f64();
        (self.tokens + refill).min(ICMP_BURST)
    }

    /// One ICMP error was (or is about to be) sent to us at `now`.
    fn take_token(&mut self, now: Instant, config: &ProbeConfig) {
        self.tokens = (self.level(now, config) - 1.0).max(0.0);
        self.tokens_at = Some(now);
    }

    /// When the bucket should hold a token for one more reject.
    fn token_ready_at(&self, now: Instant, config: &ProbeConfig) -> Instant {
        let missing = TOKEN_MARGIN - self.level(now, config);
        if self.tokens_at.is_none() || missing > 0.0 {
            now + config
                .retry_spacing
                .mul_f64(missing.clamp(0.0, TOKEN_MARGIN))
        } else {
            now
        }
    }
}

/// What one attempt saw.
struct Attempt {
    kind: AttemptKind,
    started: Instant,
    latency: Duration,
    timing: Timing,
    local_address: Option<SocketAddr>,
    icmp: Option<IcmpEvidence>,
    arrived: Option<u32>,
}

/// How long an attempt's handshakes took, each measured on its own so that
/// neither includes the other (or the exchange after them).
#[derive(Debug, Clone, Copy, Default)]
struct Timing {
    /// The round trip to the target's own stack (SYN to SYN-ACK or reset),
    /// a sample for its adaptive timeout.
    answer: Option<Duration>,
    /// The TCP connect round trip (SYN to SYN-ACK); `None` when it did not
    /// connect.
    connect: Option<Duration>,
    /// The TLS handshake; `None` when none completed.
    tls: Option<Duration>,
}

enum AttemptKind {
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

impl Shared {
    async fn attempt(
        &self,
        index: usize,
        target: &Target,
        addr: SocketAddr,
        setup: AttemptSetup,
    ) -> Attempt {
        if target.protocol == Protocol::Udp {
            return self.udp_attempt(target, addr).await;
        }
        let started = Instant::now();
        let mut local_address = None;
        let mut icmp = None;
        let mut timing = Timing::default();
        let AttemptSetup {
            deadline,
            quiet,
            may_defer,
        } = setup;
        let mut kind = self
            .attempt_inner(
                index,
                target,
                addr,
                None,
                (deadline.clone(), quiet),
                &mut local_address,
                &mut icmp,
                &mut timing,
            )
            .await;
        if let (AttemptKind::Final { stalled: true, .. }, Some(mss), false) =
            (&kind, self.config.mtu_retry_mss, may_defer)
        {
            kind = self
                .mtu_retry(
                    index,
                    target,
                    addr,
                    mss,
                    &deadline,
                    kind,
                    &mut local_address,
                    &mut timing,
                )
                .await;
        }
        Attempt {
            kind,
            started,
            latency: started.elapsed(),
            timing,
            local_address,
            icmp,
            arrived: None,
        }
    }

    /// One datagram of the live request (or canary line) for a UDP target;
    /// silence goes back to the scheduler to be retried like a silent TCP
    /// path.
    async fn udp_attempt(&self, target: &Target, addr: SocketAddr) -> Attempt {
        let started = Instant::now();
        let config = &self.config;
        let source = config.source_for(addr);
        let request = ServiceRequest::for_port(target.port.get(), &self.udp);
        let facts = std::sync::Mutex::new(None);
        let r = udp::exchange(
            &UdpRequest {
                target: addr,
                source,
                payload: &request.payload,
                attempts: 1,
                timeout: config.connect_timeout,
                spacing: Duration::ZERO,
            },
            |reply| match request.check(reply) {
                Some(f) => {
                    *facts.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
                    true
                }
                None => false,
            },
        )
        .await;
        let facts = facts.into_inner().unwrap_or_else(|e| e.into_inner());
        let arrived = facts.as_ref().filter(|f| f.is_canary()).map(|_| r.replies);
        let kind = match r.outcome {
            Observed::Timeout if r.attempts > 0 => AttemptKind::Silent {
                waited: config.connect_timeout,
            },
            Observed::LocalError if r.transient => AttemptKind::LocalTransient {
                detail: r.detail,
                errno: r.errno,
            },
            Observed::LocalError => AttemptKind::LocalPermanent {
                detail: r.detail,
                errno: r.errno,
            },
            observed => AttemptKind::Final {
                observed,
                detail: match (&facts, observed) {
                    (Some(f), Observed::Open) => f.detail(),
                    _ => r.detail,
                },
                errno: r.errno,
                cert: None,
                stalled: false,
                path_mtu: false,
            },
        };
        Attempt {
            kind,
            started,
            latency: r.rtt.unwrap_or_else(|| started.elapsed()),
            timing: Timing::default(),
            local_address: r.local,
            icmp: r.icmp,
            arrived,
        }
    }

    /// The second try of a stalled attempt with a small MSS. When it gets
    /// through, a third try with the ordinary MSS is the control: if that
    /// gets through too, the stall was passing (a busy host, not the path)
    /// and its result is the attempt's; if it stalls again, the first try's
    /// outcome stands (that is what ordinary clients get) and the attempt is
    /// marked as a path-MTU black hole. When the small MSS stalls too, or
    /// gets through only slowly (in more than half its deadline: a busy
    /// host), the first try's outcome stands as it was.
    async fn mtu_retry(
        &self,
        index: usize,
        target: &Target,
        addr: SocketAddr,
        mss: u32,
        deadline: &ConnectDeadline,
        first: AttemptKind,
        local_address: &mut Option<SocketAddr>,
        timing: &mut Timing,
    ) -> AttemptKind {
        let AttemptKind::Final {
            observed,
            detail,
            errno,
            ..
        } = first
        else {
            return first;
        };
        let mut local = None;
        let mut icmp = None;
        let mut second_timing = Timing::default();
        let second_started = Instant::now();
        let second = self
            .attempt_inner(
                index,
                target,
                addr,
                Some(mss),
                (deadline.clone(), None),
                &mut local,
                &mut icmp,
                &mut second_timing,
            )
            .await;
        // A black hole eats large packets and lets small ones through at
        // once; a small try that only just made its deadline is a slow
        // host, and proves nothing about the path.
        let slow_after = self.config.tls_timeout.max(self.config.exchange_timeout);
        let quick = second_started.elapsed() * 2 < slow_after;
        match second {
            AttemptKind::Final {
                observed: Observed::Open,
                cert,
                ..
            } if quick => {
                let mut control_local = None;
                let mut control_icmp = None;
                let mut control_timing = Timing::default();
                let control = self
                    .attempt_inner(
                        index,
                        target,
                        addr,
                        None,
                        (deadline.clone(), None),
                        &mut control_local,
                        &mut control_icmp,
                        &mut control_timing,
                    )
                    .await;
                if matches!(
                    control,
                    AttemptKind::Final {
                        observed: Observed::Open,
                        ..
                    }
                ) {
                    *local_address = control_local.or(*local_address);
                    *timing = control_timing;
                    return control;
                }
                *local_address = local.or(*local_address);
                timing.tls = second_timing.tls;
                AttemptKind::Final {
                    observed,
                    detail: format!(
                        "path MTU black hole: TCP opened but large packets never arrived ({detail}); a second try with a {mss}-byte MSS got through"
                    ),
                    errno,
                    cert,
                    stalled: true,
                    path_mtu: true,
                }
            }
            _ => AttemptKind::Final {
                observed,
                detail,
                errno,
                cert: None,
                stalled: true,
                path_mtu: false,
            },
        }
    }

    async fn attempt_inner(
        &self,
        index: usize,
        target: &Target,
        addr: SocketAddr,
        mss: Option<u32>,
        (deadline, quiet): (ConnectDeadline, Option<(Quiet, Duration)>),
        local_address: &mut Option<SocketAddr>,
        icmp: &mut Option<IcmpEvidence>,
        timing: &mut Timing,
    ) -> AttemptKind {
        let config = &self.config;
        let source = config.source_for(addr);
        let speaks_first = target.protocol == Protocol::Tls
            || self
                .exchange
                .as_ref()
                .is_some_and(|e| e.speaks_first(index));
        let socket = match open_socket(addr, source, mss, speaks_first) {
            Ok(s) => s,
            Err(kind) => return kind,
        };
        let connecting = Instant::now();
        let (connected, queued, waited) = connect(socket, addr, deadline, quiet).await;
        *icmp = queued;
        let mut stream = match connected {
            Err(None) => return AttemptKind::Silent { waited },
            Err(Some(e)) => {
                let detail = error_detail(&e);
                if e.raw_os_error() == Some(libc::ECONNREFUSED) && icmp.is_none() {
                    // A reset from the target's own stack: its round trip.
                    timing.answer = Some(connecting.elapsed());
                }
                let errno = e.raw_os_error();
                return match classify_connect_error(&e) {
                    ConnectClass::Network(Observed::Timeout) => AttemptKind::Silent { waited },
                    ConnectClass::Network(observed) => AttemptKind::Final {
                        observed,
                        detail,
                        errno,
                        cert: None,
                        stalled: false,
                        path_mtu: false,
                    },
                    ConnectClass::LocalTransient => AttemptKind::LocalTransient { detail, errno },
                    ConnectClass::LocalPermanent => AttemptKind::LocalPermanent {
                        detail: format!("connect: {detail}"),
                        errno,
                    },
                };
            }
            Ok((stream, rtt)) => {
                timing.connect = Some(rtt);
                timing.answer = Some(rtt);
                stream
            }
        };
        // Close with a reset rather than through TIME_WAIT, so that sweeps
        // do not pile up sockets. Only an established connection can reach
        // TIME_WAIT, so the option is set here rather than on every socket:
        // that saves one system call per refused or silent port.
        if let Err(e) = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)) {
            return AttemptKind::LocalPermanent {
                detail: format!("set SO_LINGER: {}", error_detail(&e)),
                errno: e.raw_os_error(),
            };
        }
        let local = stream.local_addr().ok();
        *local_address = local;
        if local == Some(addr) {
            return AttemptKind::SelfConnect;
        }
        let local = local.unwrap_or(addr);
        match target.protocol {
            Protocol::Tcp => match self
                .run_exchange(index, target, addr, local, &mut stream)
                .await
            {
                Ok((observed, detail, stalled)) => AttemptKind::Final {
                    observed,
                    detail,
                    errno: None,
                    cert: None,
                    stalled,
                    path_mtu: false,
                },
                Err(detail) => AttemptKind::Shed {
                    observed: Observed::WrongHost,
                    detail,
                    cert: None,
                },
            },
            Protocol::Tls => {
                self.tls_phase(index, target, addr, local, stream, timing)
                    .await
            }
            // UDP targets never reach a TCP connect (see `attempt`).
            Protocol::Udp => AttemptKind::LocalPermanent {
                detail: "UDP target given to the TCP path".to_string(),
                errno: None,
            },
        }
    }

    async fn tls_phase(
        &self,
        index: usize,
        target: &Target,
        addr: SocketAddr,
        local: SocketAddr,
        stream: TcpStream,
        timing: &mut Timing,
    ) -> AttemptKind {
        let config = &self.config;
        let name = server_name_for(target, addr);
        let tls_started = Instant::now();
        let handshake = self.tls.connector().connect(name.clone(), stream);
        let mut tls = match timeout(config.tls_timeout, handshake).await {
            Err(_elapsed) => {
                let detail = format!(
                    "no TLS answer within {} ms (the port does not seem to speak TLS)",
                    config.tls_timeout.as_millis()
                );
                return AttemptKind::Final {
                    observed: Observed::TlsError,
                    detail,
                    errno: None,
                    cert: None,
                    stalled: true,
                    path_mtu: false,
                };
            }
            Ok(Err(e)) => {
                let reason = match e.get_ref() {
                    Some(inner) => super::tls::handshake_failure_in_words(inner),
                    None => error_detail(&e),
                };
                // Closed before a byte of the handshake came back, where a
                // canary should answer: shed under load, not a TLS failure.
                let closed = matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                );
                if closed && self.exchange.is_some() {
                    return AttemptKind::Shed {
                        observed: Observed::TlsError,
                        detail: format!(
                            "TLS handshake failed: {reason} (closed before answering; the canary may be shedding load)"
                        ),
                        cert: None,
                    };
                }
                return AttemptKind::Final {
                    observed: Observed::TlsError,
                    detail: format!("TLS handshake failed: {reason}"),
                    errno: None,
                    cert: None,
                    stalled: false,
                    path_mtu: false,
                };
            }
            Ok(Ok(tls)) => {
                timing.tls = Some(tls_started.elapsed());
                tls
            }
        };
        let chain = tls.get_ref().1.peer_certificates().unwrap_or(&[]);
        let facts = self.tls.facts(chain, &name);
        if config.tls.require_verified && !facts.verified {
            let why = facts.verify_error.clone().unwrap_or_default();
            return AttemptKind::Final {
                observed: Observed::TlsError,
                detail: format!("certificate not verified: {why}"),
                errno: None,
                cert: Some(Box::new(facts)),
                stalled: false,
                path_mtu: false,
            };
        }
        let (observed, mut detail, stalled) = match self
            .run_exchange(index, target, addr, local, &mut tls)
            .await
        {
            Ok(r) => r,
            Err(detail) => {
                return AttemptKind::Shed {
                    observed: Observed::WrongHost,
                    detail,
                    cert: Some(Box::new(facts)),
                };
            }
        };
        if observed == Observed::Open && !facts.verified {
            let why = facts.verify_error.as_deref().unwrap_or("");
            detail = join_detail(format!("certificate not verified: {why}"), detail);
        }
        AttemptKind::Final {
            observed,
            detail,
            errno: None,
            cert: Some(Box::new(facts)),
            stalled,
            path_mtu: false,
        }
    }

    /// The caller's exchange on a connected stream: the outcome, its detail
    /// and whether it stalled (no answer in time).
    async fn run_exchange(
        &self,
        index: usize,
        target: &Target,
        peer: SocketAddr,
        local: SocketAddr,
        stream: &mut dyn ProbeStream,
    ) -> Result<(Observed, String, bool), String> {
        let Some(exchange) = &self.exchange else {
            return Ok((Observed::Open, String::new(), false));
        };
        let context = ExchangeContext {
            index,
            target,
            peer,
            local,
        };
        match timeout(
            self.config.exchange_timeout,
            exchange.exchange(context, stream),
        )
        .await
        {
            Ok(ExchangeOutcome::Confirmed { detail }) => Ok((Observed::Open, detail, false)),
            Ok(ExchangeOutcome::WrongHost { detail }) => Ok((Observed::WrongHost, detail, false)),
            Ok(ExchangeOutcome::Unanswered { detail }) => Err(detail),
            Err(_elapsed) => Ok((
                Observed::WrongHost,
                format!(
                    "connected, but no answer to the exchange within {} ms",
                    self.config.exchange_timeout.as_millis()
                ),
                // The exchange's lines are far below any path MTU: a stall
                // there is never a black hole, so no small-MSS retry. Nor
                // is it tried again: where a canary was slow, the round's
                // join finds our nonce in its evidence and says open, and
                // retries would only add to the load that made it slow.
                false,
            )),
        }
    }
}

fn join_detail(a: String, b: String) -> String {
    match (a.is_empty(), b.is_empty()) {
        (_, true) => a,
        (true, false) => b,
        (false, false) => format!("{a}; {b}"),
    }
}

/// A non-blocking socket, bound to `source` when one is given, that queues
/// ICMP errors with their sender, and with maximum segment size `mss` when
/// one is given.
fn open_socket(
    addr: SocketAddr,
    source: Option<IpAddr>,
    mss: Option<u32>,
    speaks_first: bool,
) -> Result<Socket, AttemptKind> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(socket2::Protocol::TCP),
    )
    .map_err(|e| match classify_connect_error(&e) {
        ConnectClass::LocalTransient => AttemptKind::LocalTransient {
            detail: error_detail(&e),
            errno: e.raw_os_error(),
        },
        _ => AttemptKind::LocalPermanent {
            detail: format!("socket: {}", error_detail(&e)),
            errno: e.raw_os_error(),
        },
    })?;
    // Where the error queue is not available the errno alone classifies.
    errqueue::enable(&socket, addr.is_ipv6());
    // A probe that speaks first (a nonce line, a ClientHello) lets the
    // handshake's last ACK ride on its first bytes: with quick ACKs off
    // ("ping-pong" mode) Linux delays that ACK for up to 200 ms, and the
    // write follows within microseconds. One packet fewer per probe; an
    // optimisation only, so a refusal is ignored.
    #[cfg(target_os = "linux")]
    if speaks_first {
        let _ = socket.set_tcp_quickack(false);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = speaks_first;
    if let Some(mss) = mss {
        socket
            .set_tcp_mss(mss)
            .map_err(|e| AttemptKind::LocalPermanent {
                detail: format!("set TCP_MAXSEG {mss}: {}", error_detail(&e)),
                errno: e.raw_os_error(),
            })?;
    }
    if let Some(source) = source {
        if source.is_ipv4() != addr.is_ipv4() {
            return Err(AttemptKind::LocalPermanent {
                detail: format!("source address {source} is not of the target's address family"),
                errno: None,
            });
        }
        // The port is chosen at connect time (IP_BIND_ADDRESS_NO_PORT), for
        // this 4-tuple: bind then reserves no ephemeral port of its own, so
        // a sweep from one source address is not capped at the ephemeral
        // range, and the kernel skips a search of its bind table.
        #[cfg(target_os = "linux")]
        let _ = nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        );
        let bind_to = SockAddr::from(SocketAddr::new(source, 0));
        socket.bind(&bind_to).map_err(|e| {
            if e.raw_os_error() == Some(libc::EADDRINUSE) {
                // No ephemeral port left for this source: wait for one.
                AttemptKind::LocalTransient {
                    detail: error_detail(&e),
                    errno: e.raw_os_error(),
                }
            } else {
                AttemptKind::LocalPermanent {
                    detail: format!("bind source {source}: {}", error_detail(&e)),
                    errno: e.raw_os_error(),
                }
            }
        })?;
    }
    Ok(socket)
}

/// Connects a non-blocking socket within `deadline`, returning the stream
/// and the connect round trip (SYN to SYN-ACK, as near as user space can
/// see it). The answer is often already there when `connect` returns (a
/// reset, or a handshake with a local or nearby host), so it is read
/// straight away, and only a connection still in progress is handed to the
/// reactor: that spares most refused ports two `epoll_ctl` calls and a
/// wake-up, and keeps the reactor's scheduling delay out of a local round
/// trip. Errors carry the raw errno, from `connect` or from `SO_ERROR`
/// (where ICMP errors land); `Err(None)` is silence. Beside the result
/// comes the ICMP error the socket's queue holds, read before the socket
/// closes, and the deadline waited.
///
/// An adaptive deadline is followed as it moves while the attempt waits.
/// When it passes, the socket itself is asked once more before the attempt
/// is called silent, so that a busy reactor that has not yet said
/// "writable" never turns an answered connect into silence. `quiet` is
/// called once the connect has waited its duration without an answer.
async fn connect(
    socket: Socket,
    addr: SocketAddr,
    mut deadline: ConnectDeadline,
    quiet: Option<(Quiet, Duration)>,
) -> (
    Result<(TcpStream, Duration), Option<std::io::Error>>,
    Option<IcmpEvidence>,
    Duration,
) {
    let started = Instant::now();
    let mut connected = None;
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => connected = Some(started.elapsed()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => match socket.take_error() {
            Ok(Some(e)) | Err(e) => {
                let icmp = errqueue::read(&socket);
                return (Err(Some(e)), icmp, Duration::ZERO);
            }
            Ok(None) => {
                // Established already (a peer name exists only then).
                if socket.peer_addr().is_ok() {
                    connected = Some(started.elapsed());
                }
            }
        },
        Err(e) => {
            let icmp = errqueue::read(&socket);
            return (Err(Some(e)), icmp, Duration::ZERO);
        }
    }
    let stream = match TcpStream::from_std(socket.into()) {
        Ok(s) => s,
        Err(e) => return (Err(Some(e)), None, Duration::ZERO),
    };
    if let Some(rtt) = connected {
        return (Ok((stream, rtt)), None, Duration::ZERO);
    }
    let (mut quiet, quiet_at) = match quiet {
        Some((f, after)) => (Some(f), Some(started + after)),
        None => (None, None),
    };
    enum Wake {
        Ready(std::io::Result<()>),
        Deadline,
        Quiet,
        Moved,
    }
    let (r, waited) = loop {
        let limit = deadline.current();
        let wake = tokio::select! {
            ready = stream.writable() => Wake::Ready(ready),
            () = sleep_until(started + limit) => Wake::Deadline,
            () = sleep_until(quiet_at.unwrap_or(started)), if quiet.is_some() => Wake::Quiet,
            () = deadline.changed() => Wake::Moved,
        };
        match wake {
            Wake::Ready(Err(e)) => break (Err(Some(e)), limit),
            Wake::Ready(Ok(())) => {
                let rtt = started.elapsed();
                match stream.take_error() {
                    Ok(Some(e)) | Err(e) => break (Err(Some(e)), limit),
                    Ok(None) => return (Ok((stream, rtt)), None, limit),
                }
            }
            Wake::Quiet => {
                if let Some(f) = quiet.take() {
                    f();
                }
            }
            Wake::Moved => {}
            Wake::Deadline if deadline.current() > limit => {}
            Wake::Deadline => {
                // The kernel's view, in case the reactor is behind.
                match stream.take_error() {
                    Ok(Some(e)) | Err(e) => break (Err(Some(e)), limit),
                    Ok(None) if stream.peer_addr().is_ok() => {
                        return (Ok((stream, started.elapsed())), None, limit);
                    }
                    Ok(None) => break (Err(None), limit),
                }
            }
        }
    };
    let icmp = errqueue::read(&stream);
    (r, icmp, waited)
}

/// Resolves each target's host once per distinct name. Returns, per target,
/// the address to connect to or why there is none.
async fn resolve_all(
    targets: &[Target],
    config: &ProbeConfig,
    cancel: &CancellationToken,
) -> Vec<Result<SocketAddr, String>> {
    let mut names: HashMap<Arc<str>, Result<IpAddr, String>> = HashMap::new();
    for t in targets {
        if let Host::Name(n) = &t.host {
            names.entry(n.clone()).or_insert_with(|| Err(String::new()));
        }
    }
    let mut lookups = tokio::task::JoinSet::new();
    for name in names.keys().cloned() {
        let deadline = config.resolve_timeout;
        let want_v4 = config.source.map(|s| s.is_ipv4());
        // Without an explicit source, prefer a family this host has an
        // address of, and take any other rather than none.
        let have: Vec<bool> = config.sources.iter().map(IpAddr::is_ipv4).collect();
        lookups.spawn(async move {
            let found = timeout(deadline, tokio::net::lookup_host((name.to_string(), 0u16))).await;
            let r = match found {
                Err(_) => Err(format!(
                    "cannot resolve {name}: no answer within {} ms",
                    deadline.as_millis()
                )),
                Ok(Err(e)) => Err(format!("cannot resolve {name}: {e}")),
                Ok(Ok(addrs)) => {
                    let addrs: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    let pick = match want_v4 {
                        Some(v4) => addrs.iter().find(|a| a.is_ipv4() == v4),
                        None => addrs
                            .iter()
                            .find(|a| have.contains(&a.is_ipv4()))
                            .or(addrs.first()),
                    };
                    pick.copied().ok_or_else(|| {
                        format!("cannot resolve {name}: no address of the source's family")
                    })
                }
            };
            (name, r)
        });
    }
    loop {
        tokio::select! {
            () = cancel.cancelled() => {
                lookups.abort_all();
                break;
            }
            next = lookups.join_next() => match next {
                Some(Ok((name, r))) => { names.insert(name, r); }
                Some(Err(_)) => {}
                None => break,
            }
        }
    }
    targets
        .iter()
        .map(|t| {
            let ip = match &t.host {
                Host::Ip(ip) => Ok(*ip),
                Host::Name(n) => match names.get(n) {
                    Some(Ok(ip)) => Ok(*ip),
                    Some(Err(e)) if !e.is_empty() => Err(e.clone()),
                    _ => Err(format!("cannot resolve {n}: lookup did not finish")),
                },
            };
            ip.map(|ip| SocketAddr::new(ip, t.port.get()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! The typed evidence of a result (errno, silence) beside its detail
    //! text, on loopback.

    use std::net::Ipv4Addr;

    use super::*;
    use crate::port::Port;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn target(port: u16) -> Target {
        Target {
            host: Host::Ip(LOCALHOST),
            port: Port::new(port).unwrap(),
            protocol: Protocol::Tcp,
            server_name: None,
        }
    }

    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap().port()
    }

    /// A listener whose accept queue is full: Linux drops further SYNs,
    /// which is silence on loopback.
    fn silent_listener() -> (socket2::Socket, std::net::TcpStream, u16) {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::new(LOCALHOST, 0).into()).unwrap();
        s.listen(0).unwrap();
        let port = s.local_addr().unwrap().as_socket().unwrap().port();
        let filler = std::net::TcpStream::connect((LOCALHOST, port)).unwrap();
        (s, filler, port)
    }

    async fn sweep(config: ProbeConfig, targets: Vec<Target>) -> Vec<ProbeResult> {
        Prober::new(config)
            .unwrap()
            .sweep(targets, &CancellationToken::new(), |_, _| {})
            .await
    }

    #[tokio::test]
    async fn a_refused_port_carries_its_errno_and_no_silence() {
        let r = &sweep(ProbeConfig::default(), vec![target(closed_port())]).await[0];
        assert_eq!(r.observed, Observed::Refused, "{r:?}");
        assert_eq!(r.errno, Some(libc::ECONNREFUSED));
        assert_eq!(r.silence, None);
        assert_eq!(r.detail, "ECONNREFUSED (connection refused)");
    }

    #[tokio::test]
    async fn a_silent_port_carries_the_fixed_deadline_it_waited() {
        let (_listener, _filler, port) = silent_listener();
        let config = ProbeConfig {
            connect_timeout: Duration::from_millis(200),
            retries: 0,
            adaptive: false,
            ..ProbeConfig::default()
        };
        let r = &sweep(config, vec![target(port)]).await[0];
        assert_eq!(r.observed, Observed::Timeout, "{r:?}");
        assert_eq!(r.errno, None);
        assert_eq!(
            r.silence,
            Some(Silence {
                waited_ms: 200,
                adaptive: false
            })
        );
        assert_eq!(r.detail, "no answer within 200 ms (1 attempt)");
    }

    /// Other ports of the host answer: the silent one gives up after the
    /// adaptive deadline, which the typed silence says, with the same
    /// number the detail names.
    #[tokio::test]
    async fn an_adaptive_silence_says_so_and_names_the_deadline_of_the_text() {
        let (_listener, _filler, silent) = silent_listener();
        let open = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
        let mut targets = vec![target(silent), target(open.local_addr().unwrap().port())];
        targets.extend((0..20).map(|_| target(closed_port())));
        let config = ProbeConfig {
            connect_timeout: Duration::from_millis(3000),
            retries: 0,
            ..ProbeConfig::default()
        };
        let results = sweep(config, targets).await;
        let r = &results[0];
        assert_eq!(r.observed, Observed::Timeout, "{r:?}");
        assert!(r.detail.contains("adaptive timeout"), "{}", r.detail);
        let silence = r.silence.expect("a timeout carries its silence");
        assert!(silence.adaptive);
        assert!(silence.waited_ms < 3000, "{silence:?}");
        assert!(
            r.detail
                .starts_with(&format!("no answer within {} ms", silence.waited_ms)),
            "{} vs {silence:?}",
            r.detail
        );
        assert_eq!(r.errno, None);
        assert_eq!(results[1].observed, Observed::Open);
        assert_eq!((results[1].errno, results[1].silence), (None, None));
    }

    #[tokio::test]
    async fn a_local_error_carries_its_errno_when_one_decided_it() {
        let bad_source = ProbeConfig {
            source: Some("198.18.0.99".parse().unwrap()),
            ..ProbeConfig::default()
        };
        let r = &sweep(bad_source, vec![target(closed_port())]).await[0];
        assert_eq!(r.observed, Observed::LocalError, "{r:?}");
        assert_eq!(r.errno, Some(libc::EADDRNOTAVAIL));
        assert_eq!(r.silence, None);
        assert!(
            r.detail.starts_with("bind source 198.18.0.99: "),
            "{}",
            r.detail
        );

        let other_family = ProbeConfig {
            source: Some("::1".parse().unwrap()),
            ..ProbeConfig::default()
        };
        let r = &sweep(other_family, vec![target(closed_port())]).await[0];
        assert_eq!(r.observed, Observed::LocalError, "{r:?}");
        assert_eq!((r.errno, r.silence), (None, None));
        assert!(r.detail.contains("address family"), "{}", r.detail);
    }
}
