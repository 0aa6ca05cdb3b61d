//! The sweep's scheduler: one loop that owns every target's state
//! ([`Slot`]) and every address's pacing ([`HostPacing`]), starts single
//! attempts, and hands each attempt's report to [`retry::decide`].
//! An attempt whose connect answers at once (a closed port nearby: most of
//! a sweep) is finished by the loop itself; the others are futures the
//! loop polls in its own task (each holding a semaphore permit for its
//! socket's lifetime), so no attempt's report crosses threads and none
//! costs a task, a channel message or a wake-up of another thread.
//! Completions are drained in batches.
//! Due retries go before targets waiting for room on their host, which go
//! before fresh ones; the concurrency narrows itself when the prober runs
//! out of descriptors and widens again slowly.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::attempt::{AttemptSetup, Opening, Unsettled};
use super::connect::ConnectDeadline;
use super::icmp_count::IcmpCount;
use super::loss::LossTally;
use super::pacing::HostPacing;
use super::report::{AttemptKind, AttemptReport, Handshake, Quiet};
use super::retry::{self, CONGESTION_RETRIES, Context, Decision, Verdict};
use super::shared::Shared;
use super::slot::Slot;
use super::stored::Stored;
use crate::port::Protocol;
use crate::probe::outcome::{Observed, ProbeResult, Silence};
use crate::probe::rtt;
use crate::probe::spread;
use crate::probe::target::Target;

/// Attempts the loop finishes itself (connects answered at once) before it
/// polls the others again and lets the runtime run other tasks.
const INLINE_BATCH: usize = 64;

/// An attempt still under way, polled by the loop: the target's index and
/// its report.
type Underway = Pin<Box<dyn Future<Output = (usize, AttemptReport)> + Send>>;

/// What a closed sweep gives back: every target's result (`None`: it was
/// cancelled first), the state of those under way, and their addresses.
pub(super) type Closed = (
    Vec<Option<Stored>>,
    Vec<Option<Box<Slot>>>,
    Vec<Option<SocketAddr>>,
);

/// What the loop hears about an attempt.
#[allow(clippy::large_enum_variant)]
pub(super) enum TaskEvent {
    /// The attempt has waited past its host's round trip without an answer
    /// and no longer loads the host.
    Quiet,
    /// The attempt is over.
    Done(AttemptReport),
}

/// The state of one sweep, owned by its loop.
pub(super) struct Scheduler {
    shared: Arc<Shared>,
    targets: Arc<[Target]>,
    /// Every target's address; `None` where it did not resolve.
    addrs: Vec<Option<SocketAddr>>,
    /// The state of the targets under way: created when a target is first
    /// admitted, let go when it finishes, so that a sweep of many ports
    /// holds state only for the few in progress.
    slots: Vec<Option<Box<Slot>>>,
    /// Every target's result, once it has one.
    results: Vec<Option<Stored>>,
    /// Targets with a result.
    done: usize,
    /// Targets not tried yet, one address at a time from the offset.
    fresh: VecDeque<usize>,
    /// Retries, by the instant they are due.
    later: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Targets whose host had room again, ahead of fresh ones.
    ready: VecDeque<usize>,
    /// The sweep's loss trials ([`super::loss`]).
    loss: LossTally,
    /// Targets silent through their attempts while nothing of their host
    /// had answered yet, each with the verdict it finishes with
    /// ([`Decision::AwaitHost`]).
    awaiting: HashMap<IpAddr, Vec<(usize, Verdict)>>,
    hosts: HashMap<IpAddr, HostPacing>,
    semaphore: Arc<Semaphore>,
    /// Permits the semaphore holds now (narrowed on local failures).
    capacity: usize,
    /// Attempts since the last local failure, for widening again.
    clean_streak: usize,
    /// The longest round trip measured to any address in this sweep.
    sweep_max_rtt: Duration,
    /// The attempts under way, polled in the loop's own task.
    underway: FuturesUnordered<Underway>,
    /// Attempts that turned quiet (sent from within `underway`'s polls).
    quiet_tx: mpsc::UnboundedSender<usize>,
    quiet_rx: mpsc::UnboundedReceiver<usize>,
    /// Attempts refused at once in this batch, their sockets open and
    /// error queues unread ([`Scheduler::settle`]).
    unsettled: Vec<(usize, Unsettled)>,
    /// The namespace's ICMP counters, and their readings (IPv4, IPv6)
    /// before the sockets of the current batch were opened.
    icmp_count: IcmpCount,
    icmp_seen: [Option<u64>; 2],
}

/// How [`Scheduler::start`] left an attempt.
enum Started {
    /// Joined those under way.
    Underway,
    /// Over at once.
    Done(AttemptReport),
    /// Refused at once, its error queue unread.
    Unsettled(Unsettled),
}

impl Scheduler {
    /// A scheduler for `targets`, each with its resolved address or why it
    /// has none (finished at once, as `local-error`).
    pub(super) fn new<F>(
        shared: Arc<Shared>,
        targets: Arc<[Target]>,
        resolved: Vec<Result<SocketAddr, String>>,
        on_result: &mut F,
    ) -> Scheduler
    where
        F: FnMut(usize, &ProbeResult) + Send,
    {
        let config = &shared.config;
        let mut addrs = Vec::with_capacity(targets.len());
        let mut results: Vec<Option<Stored>> = (0..targets.len()).map(|_| None).collect();
        let mut done = 0usize;
        let mut start = Vec::with_capacity(targets.len());
        let mut hosts: HashMap<IpAddr, HostPacing> = HashMap::new();
        for (i, r) in resolved.into_iter().enumerate() {
            match r {
                Ok(addr) => {
                    addrs.push(Some(addr));
                    start.push((i, addr.ip()));
                    let host = hosts
                        .entry(addr.ip())
                        .or_insert_with(|| HostPacing::new(config));
                    host.unfinished += 1;
                }
                Err(detail) => {
                    addrs.push(None);
                    let verdict = Verdict::new(Observed::LocalError, detail, None);
                    let result = finished(&targets[i], &Slot::default(), verdict);
                    on_result(i, &result);
                    results[i] = Some(Stored::keep(result));
                    done += 1;
                }
            }
        }
        // One target of each address in turn, from the caller's offset.
        let fresh: VecDeque<usize> = spread::spread(&start, config.spread_offset).into();
        drop(start);
        let slots = (0..targets.len()).map(|_| None).collect();
        let (quiet_tx, quiet_rx) = mpsc::unbounded_channel();
        let mut icmp_count = IcmpCount::open();
        let icmp_seen = [icmp_count.read(false), icmp_count.read(true)];
        Scheduler {
            semaphore: Arc::new(Semaphore::new(config.concurrency)),
            capacity: config.concurrency,
            shared,
            targets,
            addrs,
            slots,
            results,
            done,
            fresh,
            later: BinaryHeap::new(),
            ready: VecDeque::new(),
            loss: LossTally::default(),
            awaiting: HashMap::new(),
            hosts,
            clean_streak: 0,
            sweep_max_rtt: Duration::ZERO,
            underway: FuturesUnordered::new(),
            quiet_tx,
            quiet_rx,
            unsettled: Vec::new(),
            icmp_count,
            icmp_seen,
        }
    }

    /// Runs attempts until every target has a result or `cancel` fires.
    pub(super) async fn run<F>(&mut self, cancel: &CancellationToken, on_result: &mut F)
    where
        F: FnMut(usize, &ProbeResult) + Send,
    {
        while self.done < self.results.len() {
            // A cancelled sweep starts nothing more (what would finish
            // inline would otherwise still get a result).
            if cancel.is_cancelled() {
                break;
            }
            let now = Instant::now();
            // More to start at once: poll what is under way, then come
            // back (yielding to the runtime when this task's budget is
            // spent) rather than wait.
            let more = self.start_due(now, on_result);
            if self.done == self.results.len() {
                break;
            }
            let next_due = self.later.peek().map(|Reverse((due, _))| *due);
            let room = self.semaphore.available_permits() > 0;
            let polling = !self.underway.is_empty();
            let (i, event) = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(i) = self.quiet_rx.recv() => (i, TaskEvent::Quiet),
                Some((i, report)) = self.underway.next(), if polling => (i, TaskEvent::Done(report)),
                () = tokio::task::consume_budget(), if more => continue,
                () = sleep_until(next_due.unwrap_or(now)), if next_due.is_some() && room => continue,
            };
            self.quiet_first(on_result);
            self.on_event(i, event, on_result);
            self.drain(on_result);
        }
    }

    /// Takes every completion that is ready now, in one batch, without
    /// waiting.
    fn drain<F>(&mut self, on_result: &mut F)
    where
        F: FnMut(usize, &ProbeResult) + Send,
    {
        while !self.underway.is_empty() {
            let Some(Some((i, report))) = self.underway.next().now_or_never() else {
                break;
            };
            self.quiet_first(on_result);
            self.on_event(i, TaskEvent::Done(report), on_result);
        }
        self.quiet_first(on_result);
    }

    /// Takes the quiet signals sent so far. An attempt can turn quiet and
    /// end within one poll, its signal sent before its report comes back:
    /// taking them before every report keeps each signal before the end of
    /// its own attempt.
    fn quiet_first<F>(&mut self, on_result: &mut F)
    where
        F: FnMut(usize, &ProbeResult) + Send,
    {
        while let Ok(i) = self.quiet_rx.try_recv() {
            self.on_event(i, TaskEvent::Quiet, on_result);
        }
    }

    /// Gives the results back, with the state of the targets that have
    /// none (the sweep was cancelled); the attempts still under way are
    /// dropped (their sockets closed).
    pub(super) fn close(self) -> Closed {
        drop(self.underway);
        (self.results, self.slots, self.addrs)
    }

    /// Starts attempts while permits are free. Due retries go first, so
    /// that a long sweep finishes targets instead of only starting new
    /// ones. Returns whether it stopped with more to start, after
    /// [`INLINE_BATCH`] attempts it finished itself.
    fn start_due<F>(&mut self, now: Instant, on_result: &mut F) -> bool
    where
        F: FnMut(usize, &ProbeResult) + Send,
    {
        let mut inline = 0;
        let mut more = false;
        while self.semaphore.available_permits() > 0 {
            if inline == INLINE_BATCH {
                more = true;
                break;
            }
            let next = match self.ready.pop_front() {
                Some(i) => Some(i),
                None => match self.later.peek() {
                    Some(Reverse((due, _))) if *due <= now => {
                        self.later.pop().map(|Reverse((_, i))| i)
                    }
                    _ => self.fresh.pop_front(),
                },
            };
            let Some(i) = next else { break };
            let Some(setup) = self.admit(i, now) else {
                // It waits: when its host is full of this batch's
                // refusals, settling them gives the host room again.
                self.settle(on_result);
                continue;
            };
            match self.start(i, setup) {
                Started::Underway => {}
                Started::Done(report) => {
                    inline += 1;
                    self.on_event(i, TaskEvent::Done(report), on_result);
                }
                Started::Unsettled(refused) => {
                    inline += 1;
                    self.unsettled.push((i, refused));
                }
            }
        }
        self.settle(on_result);
        // Settling can give hosts room again: targets waiting for it are
        // started on the next round.
        more || !self.ready.is_empty()
    }

    /// Settles the attempts refused at once in this batch: when the
    /// namespace's ICMP counters have not moved since before their sockets
    /// were opened, no ICMP error can be queued on any of them and their
    /// queues are left unread; otherwise (or when the counters cannot be
    /// read) each queue is read, as an attempt finished alone would.
    fn settle<F>(&mut self, on_result: &mut F)
    where
        F: FnMut(usize, &ProbeResult) + Send,
    {
        if self.unsettled.is_empty() {
            return;
        }
        // Each family's counter, where the batch has sockets of it.
        let mut read_queues = false;
        for v6 in [false, true] {
            let family = self
                .unsettled
                .iter()
                .any(|(i, _)| self.addrs[*i].is_some_and(|a| a.is_ipv6() == v6));
            if family {
                let count = self.icmp_count.read(v6);
                let seen = &mut self.icmp_seen[usize::from(v6)];
                read_queues |= count.is_none() || count != *seen;
                *seen = count;
            }
        }
        let mut batch = std::mem::take(&mut self.unsettled);
        for (i, refused) in batch.drain(..) {
            let report = refused.settle(read_queues);
            self.on_event(i, TaskEvent::Done(report), on_result);
        }
        self.unsettled = batch;
    }

    /// Whether target `i` may start now: its host has room, and a paced
    /// retry has its ICMP token. Otherwise it waits (for room, or until its
    /// token is due) and `None` comes back.
    fn admit(&mut self, i: usize, now: Instant) -> Option<AttemptSetup> {
        let addr = self.addrs[i].expect("only resolved targets are scheduled");
        let config = &self.shared.config;
        let udp = self.targets[i].protocol == Protocol::Udp;
        self.slots[i].get_or_insert_with(|| {
            Box::new(Slot {
                addr: Some(addr),
                ..Slot::default()
            })
        });
        let host = self
            .hosts
            .entry(addr.ip())
            .or_insert_with(|| HostPacing::new(config));
        if std::mem::take(&mut state(&mut self.slots, i).wake) {
            host.wake_armed = false;
        }
        // A target whose silence a token covered is a drop: its retries
        // draw no ICMP error and need no token.
        let needs_token =
            state(&mut self.slots, i).uncovered > 0 && !state(&mut self.slots, i).covered;
        let fresh = state(&mut self.slots, i).attempts == 0;
        let paced = (needs_token || fresh) && host.should_pace(config, udp, needs_token);
        if paced {
            // The host rejects with ICMP and is paced: this attempt goes
            // only with a token of its budget (the window it may have in
            // flight is the budget's, not `per_host_concurrency`).
            if !host.budget.room(now) {
                host.token_waiting.push_back(i);
                if !host.wake_armed {
                    if let Some(next) = host.token_waiting.pop_front() {
                        host.wake_armed = true;
                        state(&mut self.slots, next).wake = true;
                        self.later.push(Reverse((host.budget.ready_at(now), next)));
                    }
                }
                return None;
            }
            host.budget.reserved += 1;
            if host.budget.room(now) {
                if let Some(next) = host.token_waiting.pop_front() {
                    self.ready.push_back(next);
                }
            }
        } else if host.in_flight >= host.limit {
            // The host has as many attempts as it may take: this one waits
            // for one of them to finish.
            host.waiting.push_back(i);
            return None;
        }
        let slot = state(&mut self.slots, i);
        slot.paced = paced;
        host.in_flight += 1;
        let deadline = match &host.timeout {
            Some(tx) if config.adaptive => ConnectDeadline::Adaptive(tx.subscribe()),
            _ => ConnectDeadline::Fixed(config.connect_timeout),
        };
        // Only where our own queue can be the cause: other attempts to the
        // host in flight, or handshakes it completed.
        let may_defer =
            (host.answered || host.in_flight > 1) && slot.deferrals < CONGESTION_RETRIES;
        slot.may_defer = may_defer;
        slot.tally.mtu_tries = !may_defer && !slot.tally.mtu_ruled_out;
        slot.quiet = false;
        Some(AttemptSetup {
            mtu_tries: slot.tally.mtu_tries,
            deadline,
            // Past this without an answer the attempt is most likely
            // silent: it stops counting against the host's bound (a SYN
            // nobody answers costs the server nothing).
            quiet_after: host.quiet_after(),
        })
    }

    /// Starts one attempt of target `i`. A TCP connect that answers at once
    /// is the whole attempt, and its report comes back here (a refusal
    /// unsettled); any other attempt joins those under way, holding a
    /// permit.
    fn start(&mut self, i: usize, setup: AttemptSetup) -> Started {
        let addr = self.addrs[i].expect("only resolved targets are scheduled");
        let target = &self.targets[i];
        let first = match target.protocol {
            Protocol::Udp => None,
            Protocol::Tcp | Protocol::Tls => match self.shared.open_first(i, target, addr, true) {
                Opening::Done(report) => return Started::Done(report),
                Opening::Unsettled(refused) => return Started::Unsettled(refused),
                Opening::Underway(first) => {
                    // Its round trip is known now, while the exchange
                    // after it may wait on a busy target for long: the
                    // host's other attempts in flight get their deadline
                    // from it at once, not from the first exchange over.
                    if let Some(rtt) = first.handshake().and_then(Handshake::sample) {
                        self.sample_rtt(addr.ip(), rtt);
                        state(&mut self.slots, i).sampled = true;
                    }
                    Some(first)
                }
            },
        };
        let permit = self
            .semaphore
            .clone()
            .try_acquire_owned()
            .expect("a permit is available and only this loop takes them");
        let shared = self.shared.clone();
        let targets = self.targets.clone();
        let quiet_tx = self.quiet_tx.clone();
        // Attempts are not raced against the cancel token each (a waiter
        // per attempt on one shared lock is what a fast sweep would spend
        // its time on); a cancelled sweep drops them.
        self.underway.push(Box::pin(async move {
            let quiet: Quiet = Box::new(move || {
                let _ = quiet_tx.send(i);
            });
            let attempt = shared
                .attempt(i, &targets[i], addr, setup, quiet, first)
                .await;
            // Free the socket's permit before reporting, so the scheduler
            // can start the next attempt at once.
            drop(permit);
            (i, attempt)
        }));
        Started::Underway
    }

    /// What an attempt's task reported: a quiet attempt frees its host's
    /// room; a finished one is recorded and decided on.
    fn on_event<F>(&mut self, i: usize, event: TaskEvent, on_result: &mut F)
    where
        F: FnMut(usize, &ProbeResult) + Send,
    {
        let slot = self.slots[i]
            .as_deref_mut()
            .expect("a target under way has its state");
        let addr = slot.addr.expect("only resolved targets are scheduled");
        let host = self
            .hosts
            .get_mut(&addr.ip())
            .expect("every scheduled address has its pacing");
        let attempt = match event {
            TaskEvent::Quiet => {
                if !slot.quiet {
                    slot.quiet = true;
                    host.release(&mut self.ready);
                }
                // An ICMP error would be back by now: the token it held is
                // free for the next attempt.
                if std::mem::take(&mut slot.paced) {
                    host.free_token(&mut self.ready);
                }
                return;
            }
            TaskEvent::Done(attempt) => attempt,
        };
        if std::mem::take(&mut slot.paced) {
            host.free_token(&mut self.ready);
        }
        if !std::mem::replace(&mut slot.quiet, false) {
            host.release(&mut self.ready);
        }
        slot.record(&attempt);
        let sampled = std::mem::take(&mut slot.sampled);
        // Karn's rule (`Handshake::sample`): an answer to a resent SYN is no
        // round trip (under loss it would be ~1 s, and every deadline of
        // the sweep would stretch to it).
        match attempt.timing.answer.map(Handshake::sample) {
            // Taken already, when the connect answered at once.
            Some(Some(_)) if sampled => {}
            Some(Some(rtt)) => self.sample_rtt(addr.ip(), rtt),
            // Answered only to the resent SYN: the first was lost, a
            // failed trial of the path ([`super::loss`]).
            Some(None) => {
                self.loss.lost();
                host.loss.lost();
            }
            None => {}
        }
        if matches!(attempt.kind, AttemptKind::LocalTransient { .. }) {
            self.narrow();
        }
        let cx = Context {
            config: &self.shared.config,
            target: &self.targets[i],
            index: i,
            udp: &self.shared.udp,
            started: attempt.started,
            sent: attempt.sent,
            now: Instant::now(),
        };
        let slot = self.slots[i]
            .as_deref_mut()
            .expect("a target under way has its state");
        let host = self
            .hosts
            .get_mut(&addr.ip())
            .expect("every scheduled address has its pacing");
        let decision = retry::decide(
            slot,
            host,
            &mut self.ready,
            &mut self.loss,
            attempt.kind,
            &cx,
        );
        let local_error = matches!(
            &decision,
            Decision::Finish(Verdict {
                observed: Observed::LocalError,
                ..
            })
        );
        if !local_error {
            self.widen();
        }
        match decision {
            Decision::Defer => self.later.push(Reverse((Instant::now(), i))),
            Decision::RetryAt(at) => self.later.push(Reverse((at, i))),
            Decision::AwaitHost(verdict) => {
                self.awaiting
                    .entry(addr.ip())
                    .or_default()
                    .push((i, verdict));
            }
            Decision::Finish(verdict) => self.finish(i, addr.ip(), verdict, on_result),
        }
        self.decide_awaiting(addr.ip(), on_result);
    }

    /// Target `i` (of address `ip`) is finished with `verdict`: its state
    /// goes, its result holds what it found.
    fn finish<F>(&mut self, i: usize, ip: IpAddr, verdict: Verdict, on_result: &mut F)
    where
        F: FnMut(usize, &ProbeResult) + Send,
    {
        if let Some(host) = self.hosts.get_mut(&ip) {
            host.unfinished -= 1;
        }
        let slot = self.slots[i]
            .take()
            .expect("a target under way has its state");
        let result = finished(&self.targets[i], &slot, verdict);
        on_result(i, &result);
        self.results[i] = Some(Stored::keep(result));
        self.done += 1;
    }

    /// The targets of `ip` awaiting its host ([`Decision::AwaitHost`]):
    /// tried again at once when the host has answered meanwhile (they get
    /// the loss retries then), finished with their verdicts once every
    /// other target of the host is decided without an answer.
    fn decide_awaiting<F>(&mut self, ip: IpAddr, on_result: &mut F)
    where
        F: FnMut(usize, &ProbeResult) + Send,
    {
        let (Some(waiting), Some(host)) = (self.awaiting.get(&ip), self.hosts.get(&ip)) else {
            return;
        };
        let answers = host.answers();
        if !answers && host.unfinished > waiting.len() {
            return;
        }
        let now = Instant::now();
        for (i, verdict) in self.awaiting.remove(&ip).unwrap_or_default() {
            if answers {
                self.later.push(Reverse((now, i)));
            } else {
                self.finish(i, ip, verdict, on_result);
            }
        }
    }

    /// A round trip measured to `ip`: its host's estimate, and a new
    /// deadline for every host when it is the sweep's longest yet.
    fn sample_rtt(&mut self, ip: IpAddr, rtt: Duration) {
        let config = &self.shared.config;
        let host = self
            .hosts
            .get_mut(&ip)
            .expect("every scheduled address has its pacing");
        host.rtt.sample(rtt);
        if rtt > self.sweep_max_rtt {
            // A round trip longer than any before, to any address: the
            // sweep's own load (or the shared network) may be slowing every
            // path, so every deadline respects it.
            self.sweep_max_rtt = rtt;
            let floor = self.sweep_max_rtt.saturating_mul(rtt::SAFETY);
            for h in self.hosts.values_mut() {
                h.publish(config, floor);
            }
        } else {
            let floor = self.sweep_max_rtt.saturating_mul(rtt::SAFETY);
            host.publish(config, floor);
        }
    }

    /// Too many sockets at once for this process or system: run with what
    /// is in flight now, and grow back slowly.
    fn narrow(&mut self) {
        let in_flight = self.capacity - self.semaphore.available_permits();
        let wanted = in_flight.max(1);
        if wanted < self.capacity {
            self.capacity -= self.semaphore.forget_permits(self.capacity - wanted);
        }
        self.clean_streak = 0;
    }

    /// An attempt that did not fail locally: one more permit back after as
    /// many such attempts in a row as there are permits.
    fn widen(&mut self) {
        self.clean_streak += 1;
        if self.clean_streak >= self.capacity && self.capacity < self.shared.config.concurrency {
            self.semaphore.add_permits(1);
            self.capacity += 1;
            self.clean_streak = 0;
        }
    }
}

/// The result of a finished target: its verdict and what its slot holds.
/// The state of target `i`, which is under way (admitted, not finished).
fn state(slots: &mut [Option<Box<Slot>>], i: usize) -> &mut Slot {
    slots[i]
        .as_deref_mut()
        .expect("a target under way has its state")
}

pub(super) fn finished(target: &Target, slot: &Slot, verdict: Verdict) -> ProbeResult {
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
        answered: (observed == Observed::Lossy).then_some(slot.tally.answered),
        // Every `timeout` carries its silence, however it came about.
        silence: silence.or_else(|| {
            (observed == Observed::Timeout).then(|| Silence {
                waited_ms: u64::try_from(slot.waited.as_millis()).unwrap_or(u64::MAX),
                adaptive: false,
                possibly_rate_limited: false,
            })
        }),
    }
}
