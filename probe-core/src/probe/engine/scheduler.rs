//! The sweep's scheduler: one loop that owns every target's state
//! ([`Slot`]) and every address's pacing ([`HostPacing`]), starts single
//! attempts as tasks (each holding a semaphore permit for its socket's
//! lifetime), and hands each attempt's report to [`retry::decide`].
//! Due retries go before targets waiting for room on their host, which go
//! before fresh ones; the concurrency narrows itself when the prober runs
//! out of descriptors and widens again slowly.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::attempt::AttemptSetup;
use super::connect::ConnectDeadline;
use super::pacing::HostPacing;
use super::report::{AttemptKind, AttemptReport, Quiet};
use super::retry::{self, CONGESTION_RETRIES, Context, Decision, Verdict};
use super::shared::Shared;
use super::slot::Slot;
use crate::port::Protocol;
use crate::probe::outcome::{Observed, ProbeResult, Silence};
use crate::probe::rtt;
use crate::probe::spread;
use crate::probe::target::Target;

/// When Linux first resends an unanswered SYN (`TCP_TIMEOUT_INIT`).
const SYN_RESEND: Duration = Duration::from_secs(1);

/// What an attempt's task tells the scheduler. One per attempt, moved once
/// through the channel: not boxed, so that a sweep of many ports does not
/// allocate for each.
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
    slots: Vec<Slot>,
    /// Targets with a result.
    done: usize,
    /// Targets not tried yet, one address at a time from the offset.
    fresh: VecDeque<usize>,
    /// Retries, by the instant they are due.
    later: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Targets whose host had room again, ahead of fresh ones.
    ready: VecDeque<usize>,
    hosts: HashMap<IpAddr, HostPacing>,
    semaphore: Arc<Semaphore>,
    /// Permits the semaphore holds now (narrowed on local failures).
    capacity: usize,
    /// Attempts since the last local failure, for widening again.
    clean_streak: usize,
    /// The longest round trip measured to any address in this sweep.
    sweep_max_rtt: Duration,
    tx: mpsc::UnboundedSender<(usize, TaskEvent)>,
    rx: mpsc::UnboundedReceiver<(usize, TaskEvent)>,
    tracker: TaskTracker,
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
        let mut slots: Vec<Slot> = (0..targets.len()).map(|_| Slot::default()).collect();
        let mut done = 0usize;
        let mut start = Vec::with_capacity(targets.len());
        for (i, r) in resolved.into_iter().enumerate() {
            match r {
                Ok(addr) => {
                    slots[i].addr = Some(addr);
                    start.push((i, addr.ip()));
                }
                Err(detail) => {
                    let verdict = Verdict::new(Observed::LocalError, detail, None);
                    let result = finished(&targets[i], &slots[i], verdict);
                    on_result(i, &result);
                    slots[i].result = Some(result);
                    done += 1;
                }
            }
        }
        // One target of each address in turn, from the caller's offset.
        let fresh: VecDeque<usize> = spread::spread(&start, config.spread_offset).into();
        let mut hosts: HashMap<IpAddr, HostPacing> = HashMap::new();
        for slot in &slots {
            if let (Some(addr), None) = (slot.addr, &slot.result) {
                let host = hosts
                    .entry(addr.ip())
                    .or_insert_with(|| HostPacing::new(config));
                host.unfinished += 1;
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        Scheduler {
            semaphore: Arc::new(Semaphore::new(config.concurrency)),
            capacity: config.concurrency,
            shared,
            targets,
            slots,
            done,
            fresh,
            later: BinaryHeap::new(),
            ready: VecDeque::new(),
            hosts,
            clean_streak: 0,
            sweep_max_rtt: Duration::ZERO,
            tx,
            rx,
            tracker: TaskTracker::new(),
        }
    }

    /// Runs attempts until every target has a result or `cancel` fires.
    pub(super) async fn run<F>(&mut self, cancel: &CancellationToken, on_result: &mut F)
    where
        F: FnMut(usize, &ProbeResult) + Send,
    {
        while self.done < self.slots.len() {
            let now = Instant::now();
            self.start_due(now);
            let next_due = self.later.peek().map(|Reverse((due, _))| *due);
            let room = self.semaphore.available_permits() > 0;
            let (i, event) = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(event) = self.rx.recv() => event,
                () = sleep_until(next_due.unwrap_or(now)), if next_due.is_some() && room => continue,
            };
            self.on_event(i, event, on_result);
        }
    }

    /// Aborts the attempts still in flight when the sweep was cancelled,
    /// waits for every task, and gives the slots back.
    pub(super) async fn close(self, cancel: &CancellationToken) -> Vec<Slot> {
        if cancel.is_cancelled() {
            for slot in &self.slots {
                if let (None, Some(task)) = (&slot.result, &slot.task) {
                    task.abort();
                }
            }
        }
        self.tracker.close();
        self.tracker.wait().await;
        self.slots
    }

    /// Starts attempts while permits are free. Due retries go first, so
    /// that a long sweep finishes targets instead of only starting new
    /// ones.
    fn start_due(&mut self, now: Instant) {
        while self.semaphore.available_permits() > 0 {
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
            if let Some(setup) = self.admit(i, now) {
                self.spawn(i, setup);
            }
        }
    }

    /// Whether target `i` may start now: its host has room, and a paced
    /// retry has its ICMP token. Otherwise it waits (for room, or until its
    /// token is due) and `None` comes back.
    fn admit(&mut self, i: usize, now: Instant) -> Option<AttemptSetup> {
        let config = &self.shared.config;
        let udp = self.targets[i].protocol == Protocol::Udp;
        let addr = self.slots[i]
            .addr
            .expect("only resolved targets are scheduled");
        let host = self
            .hosts
            .entry(addr.ip())
            .or_insert_with(|| HostPacing::new(config));
        if std::mem::take(&mut self.slots[i].wake) {
            host.wake_armed = false;
        }
        // A target whose silence a token covered is a drop: its retries
        // draw no ICMP error and need no token.
        let needs_token = self.slots[i].uncovered > 0 && !self.slots[i].covered;
        let fresh = self.slots[i].attempts == 0;
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
                        self.slots[next].wake = true;
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
        let slot = &mut self.slots[i];
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

    /// Runs one attempt of target `i` as a task holding a permit.
    fn spawn(&mut self, i: usize, setup: AttemptSetup) {
        let addr = self.slots[i]
            .addr
            .expect("only resolved targets are scheduled");
        let permit = self
            .semaphore
            .clone()
            .try_acquire_owned()
            .expect("a permit is available and only this loop takes them");
        let shared = self.shared.clone();
        let targets = self.targets.clone();
        let tx = self.tx.clone();
        // Attempts are not raced against the cancel token each (a waiter
        // per attempt on one shared lock is what a fast sweep would spend
        // its time on); a cancelled sweep aborts them.
        let task = self.tracker.spawn(async move {
            let quiet_tx = tx.clone();
            let quiet: Quiet = Box::new(move || {
                let _ = quiet_tx.send((i, TaskEvent::Quiet));
            });
            let attempt = shared.attempt(i, &targets[i], addr, setup, quiet).await;
            // Free the socket's permit before reporting, so the scheduler
            // can start the next attempt at once.
            drop(permit);
            let _ = tx.send((i, TaskEvent::Done(attempt)));
        });
        self.slots[i].task = Some(task.abort_handle());
    }

    /// What an attempt's task reported: a quiet attempt frees its host's
    /// room; a finished one is recorded and decided on.
    fn on_event<F>(&mut self, i: usize, event: TaskEvent, on_result: &mut F)
    where
        F: FnMut(usize, &ProbeResult) + Send,
    {
        let slot = &mut self.slots[i];
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
        // Karn's rule: a connect that outlasted the kernel's first SYN
        // retransmission may have been answered to the resent SYN, so its
        // time is no round trip (under loss it would be ~1 s, and every
        // deadline of the sweep would stretch to it).
        if let Some(rtt) = attempt.timing.answer.filter(|rtt| *rtt < SYN_RESEND) {
            self.sample_rtt(addr.ip(), rtt);
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
        let slot = &mut self.slots[i];
        let host = self
            .hosts
            .get_mut(&addr.ip())
            .expect("every scheduled address has its pacing");
        let decision = retry::decide(slot, host, &mut self.ready, attempt.kind, &cx);
        if matches!(decision, Decision::Finish(_)) {
            host.unfinished -= 1;
        }
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
            Decision::Finish(verdict) => {
                let result = finished(&self.targets[i], &self.slots[i], verdict);
                on_result(i, &result);
                self.slots[i].result = Some(result);
                self.done += 1;
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
