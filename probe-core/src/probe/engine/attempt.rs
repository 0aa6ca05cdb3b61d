//! One attempt on one target: a TCP connect (then TLS and the caller's
//! exchange), with the path-MTU tries after a stall, or one UDP datagram.
//! It returns what it saw as an [`AttemptReport`]; what that makes of the
//! target is [`super::retry`]'s to decide.

use std::net::SocketAddr;
use std::time::Duration;

use socket2::Socket;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until, timeout};

use super::connect::{self, ConnectDeadline, Start, open_socket};
use super::report::{AttemptKind, AttemptReport, Handshake, Quiet, Timing};
use super::shared::Shared;
use crate::port::Protocol;
use crate::probe::classify::{ConnectClass, classify_connect_error, error_detail};
use crate::probe::errqueue::{self, IcmpEvidence};
use crate::probe::exchange::{ExchangeContext, ExchangeOutcome, ProbeStream};
use crate::probe::outcome::Observed;
use crate::probe::target::Target;
use crate::probe::udp::{self, UdpRequest};
use crate::probe::udp_service::ServiceRequest;

/// How the scheduler starts one attempt.
pub(super) struct AttemptSetup {
    pub(super) deadline: ConnectDeadline,
    /// The attempt turns quiet when its connect has waited this long
    /// without an answer.
    pub(super) quiet_after: Duration,
    /// A stall is followed by the path-MTU tries: not when it may be
    /// deferred (the scheduler tries it again at lower concurrency, and a
    /// stall is reported as it is), nor once an earlier attempt's small
    /// MSS stalled too.
    pub(super) mtu_tries: bool,
}

/// One TCP try of an attempt (the first, or a path-MTU try).
pub(super) struct Try<'a> {
    /// The target's place in the sweep (for the exchange).
    pub(super) index: usize,
    pub(super) target: &'a Target,
    pub(super) addr: SocketAddr,
    /// The maximum segment size to ask for; `None`: the route's.
    pub(super) mss: Option<u32>,
    pub(super) deadline: ConnectDeadline,
    /// Called when the connect has waited this long without an answer.
    pub(super) quiet: Option<(Quiet, Duration)>,
}

/// How a try's socket and connect left it ([`Shared::try_start`]).
enum Begun {
    /// Over already: a local failure, or a connect answered at once.
    Over(TryReport),
    /// The connect as it stands, and when it began.
    Going(Start, Instant),
}

/// What one TCP try saw.
struct TryReport {
    kind: AttemptKind,
    /// The local address of the connection, when it connected.
    local_address: Option<SocketAddr>,
    /// The ICMP error the socket's queue held.
    icmp: Option<IcmpEvidence>,
    timing: Timing,
}

impl TryReport {
    fn of(kind: AttemptKind) -> TryReport {
        TryReport {
            kind,
            local_address: None,
            icmp: None,
            timing: Timing::default(),
        }
    }
}

/// The first try of a TCP attempt as [`Shared::open_first`] left it.
pub(super) enum Opening {
    /// The connect answered at once (a reset, an ICMP error, a local
    /// failure): the attempt is over, on the caller's thread.
    Done(AttemptReport),
    /// Refused at once, its socket's error queue still to be read or not
    /// ([`Unsettled::settle`]).
    Unsettled(Unsettled),
    /// Connected at once, or in progress: [`Shared::attempt`] goes on.
    Underway(FirstTry),
}

/// An attempt refused at once, with its socket, whose error queue alone
/// tells a reset from an ICMP port-unreachable.
pub(super) struct Unsettled {
    report: AttemptReport,
    socket: Socket,
}

impl Unsettled {
    /// The attempt's report, its socket's error queue read only when
    /// `read_queue` (some ICMP message may have come: see
    /// [`super::icmp_count`]); the socket closes here.
    pub(super) fn settle(self, read_queue: bool) -> AttemptReport {
        let mut report = self.report;
        if read_queue {
            if let Some(icmp) = errqueue::read(&self.socket) {
                // As `failed_try` has it: an ICMP error is no round trip
                // to the target's own stack.
                report.timing.answer = None;
                report.icmp = Some(icmp);
            }
        }
        report
    }
}

/// A first try underway: its socket's connect and when it began.
pub(super) struct FirstTry {
    started: Instant,
    connecting: Instant,
    start: Start,
}

impl FirstTry {
    /// The handshake, where the connect completed at once.
    pub(super) fn handshake(&self) -> Option<Handshake> {
        match &self.start {
            Start::Connected(_, h) => Some(*h),
            _ => None,
        }
    }
}

impl AttemptReport {
    /// The report of a TCP attempt begun at `started` whose tries ended in
    /// `report`.
    fn of_tcp(started: Instant, report: TryReport) -> AttemptReport {
        AttemptReport {
            kind: report.kind,
            started,
            sent: started,
            latency: started.elapsed(),
            timing: report.timing,
            local_address: report.local_address,
            icmp: report.icmp,
            arrived: None,
        }
    }
}

impl Shared {
    /// Begins a TCP attempt without waiting: its socket and connect. Most
    /// closed ports answer before `connect` returns (always on loopback and
    /// nearby hosts); such an attempt is over here, with no task, timer or
    /// channel behind it. With `defer_refusal` a refusal comes back
    /// [`Opening::Unsettled`].
    pub(super) fn open_first(
        &self,
        index: usize,
        target: &Target,
        addr: SocketAddr,
        defer_refusal: bool,
    ) -> Opening {
        let started = Instant::now();
        match self.try_start(index, target, addr, None, defer_refusal) {
            Begun::Over(report) => Opening::Done(AttemptReport::of_tcp(started, report)),
            Begun::Going(Start::Refused(e, socket), connecting) => Opening::Unsettled(Unsettled {
                report: AttemptReport::of_tcp(
                    started,
                    failed_try(&e, None, Duration::ZERO, connecting),
                ),
                socket,
            }),
            Begun::Going(start, connecting) => Opening::Underway(FirstTry {
                started,
                connecting,
                start,
            }),
        }
    }

    /// One attempt on `target` at `addr`, going on from `first` when the
    /// scheduler began it ([`Shared::open_first`]); `quiet` is called when
    /// it turns quiet.
    pub(super) async fn attempt(
        &self,
        index: usize,
        target: &Target,
        addr: SocketAddr,
        setup: AttemptSetup,
        quiet: Quiet,
        first: Option<FirstTry>,
    ) -> AttemptReport {
        if target.protocol == Protocol::Udp {
            return self.udp_attempt(target, addr, setup, quiet).await;
        }
        let first = match first {
            Some(first) => first,
            None => match self.open_first(index, target, addr, false) {
                Opening::Done(report) => return report,
                Opening::Unsettled(refused) => return refused.settle(true),
                Opening::Underway(first) => first,
            },
        };
        let started = first.started;
        let first_try = Try {
            index,
            target,
            addr,
            mss: None,
            deadline: setup.deadline.clone(),
            quiet: Some((quiet, setup.quiet_after)),
        };
        let mut report = self
            .try_rest(first_try, first.start, first.connecting)
            .await;
        if let (AttemptKind::Final { stalled: true, .. }, Some(mss), true) =
            (&report.kind, self.config.mtu_retry_mss, setup.mtu_tries)
        {
            let retry = Try {
                index,
                target,
                addr,
                mss: Some(mss),
                deadline: setup.deadline,
                quiet: None,
            };
            report = self.mtu_retry(retry, mss, report).await;
        }
        AttemptReport::of_tcp(started, report)
    }

    /// One datagram of the live request (or canary line) for a UDP target,
    /// waiting the host's adaptive deadline (as it moves while it waits)
    /// within `timeout_ms`; silence goes back to the scheduler to be
    /// retried like a silent TCP path. An accepted reply or an ICMP error
    /// is a round trip for that deadline.
    async fn udp_attempt(
        &self,
        target: &Target,
        addr: SocketAddr,
        setup: AttemptSetup,
        quiet: Quiet,
    ) -> AttemptReport {
        let started = Instant::now();
        let config = &self.config;
        let source = config.source_for(addr);
        let request = ServiceRequest::for_port(target.port.get(), &self.udp);
        let facts = std::sync::Mutex::new(None);
        let sent_at = std::sync::Mutex::new(None);
        let mut deadline = setup.deadline;
        let req = UdpRequest {
            target: addr,
            source,
            payload: &request.payload,
            attempts: 1,
            timeout: deadline.current().min(config.connect_timeout),
            spacing: Duration::ZERO,
            sent_at: Some(&sent_at),
        };
        let mut quiet = Some(quiet);
        let quiet_at = started + setup.quiet_after;
        let r = {
            let exchange = udp::exchange(&req, |reply| match request.check(reply) {
                Some(f) => {
                    *facts.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
                    true
                }
                None => false,
            });
            tokio::pin!(exchange);
            loop {
                let until = started + deadline.current().min(config.connect_timeout);
                tokio::select! {
                    r = &mut exchange => break Some(r),
                    () = sleep_until(quiet_at), if quiet.is_some() => {
                        if let Some(q) = quiet.take() {
                            q();
                        }
                    }
                    () = sleep_until(until) => break None,
                    () = deadline.changed() => {}
                }
            }
        };
        let sent = sent_at.lock().map_or(None, |at| *at).unwrap_or(started);
        let Some(r) = r else {
            // The host's adaptive deadline passed first.
            return AttemptReport {
                kind: AttemptKind::Silent {
                    waited: deadline.current().min(config.connect_timeout),
                },
                started,
                sent,
                latency: started.elapsed(),
                timing: Timing::default(),
                local_address: None,
                icmp: None,
                arrived: None,
            };
        };
        let facts = facts.into_inner().unwrap_or_else(|e| e.into_inner());
        let arrived = facts.as_ref().filter(|f| f.is_canary()).map(|_| r.replies);
        let timing = Timing {
            answer: r
                .rtt
                .filter(|_| {
                    matches!(
                        r.outcome,
                        Observed::Open | Observed::Refused | Observed::Unreachable
                    )
                })
                .map(Handshake::seen),
            ..Timing::default()
        };
        let kind = match r.outcome {
            Observed::Timeout if r.attempts > 0 => AttemptKind::Silent {
                waited: req.timeout,
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
                unanswered: false,
            },
        };
        AttemptReport {
            kind,
            started,
            sent,
            latency: r.rtt.unwrap_or_else(|| started.elapsed()),
            timing,
            local_address: r.local,
            icmp: r.icmp,
            arrived,
        }
    }

    /// The second try of a stalled attempt with a small MSS (`retry`).
    /// When it gets through, a third try with the ordinary MSS is the
    /// control: if that gets through too, the stall was passing (a busy
    /// host, not the path) and its result is the attempt's; if it stalls
    /// again, the first try's outcome stands (that is what ordinary clients
    /// get) and the attempt is marked as a path-MTU black hole. When the
    /// small MSS stalls too, or gets through only slowly (in more than half
    /// its deadline: a busy host), the first try's outcome stands as it was.
    /// The first try's ICMP evidence is kept whatever happens.
    async fn mtu_retry(&self, retry: Try<'_>, mss: u32, first: TryReport) -> TryReport {
        let TryReport {
            kind:
                AttemptKind::Final {
                    observed,
                    detail,
                    errno,
                    ..
                },
            local_address,
            icmp,
            mut timing,
        } = first
        else {
            return first;
        };
        let control = Try {
            index: retry.index,
            target: retry.target,
            addr: retry.addr,
            mss: None,
            deadline: retry.deadline.clone(),
            quiet: None,
        };
        let second_started = Instant::now();
        let second = self.try_once(retry).await;
        // A black hole eats large packets and lets small ones through at
        // once; a small try that only just made its deadline is a slow
        // host, and proves nothing about the path.
        let slow_after = self.config.tls_timeout.max(self.config.exchange_timeout);
        let quick = second_started.elapsed() * 2 < slow_after;
        let kind = match second.kind {
            AttemptKind::Final {
                observed: Observed::Open,
                cert,
                ..
            } if quick => {
                let control = self.try_once(control).await;
                if matches!(
                    control.kind,
                    AttemptKind::Final {
                        observed: Observed::Open,
                        ..
                    }
                ) {
                    return TryReport {
                        kind: control.kind,
                        local_address: control.local_address.or(local_address),
                        icmp,
                        timing: control.timing,
                    };
                }
                timing.tls = second.timing.tls;
                return TryReport {
                    kind: AttemptKind::Final {
                        observed,
                        detail: format!(
                            "path MTU black hole: TCP opened but large packets never arrived ({detail}); a second try with a {mss}-byte MSS got through"
                        ),
                        errno,
                        cert,
                        stalled: true,
                        path_mtu: true,
                        unanswered: false,
                    },
                    local_address: second.local_address.or(local_address),
                    icmp,
                    timing,
                };
            }
            _ => AttemptKind::Final {
                observed,
                detail,
                errno,
                cert: None,
                stalled: true,
                path_mtu: false,
                unanswered: false,
            },
        };
        TryReport {
            kind,
            local_address,
            icmp,
            timing,
        }
    }

    /// One TCP try: socket, connect, then the protocol's phase.
    async fn try_once(&self, t: Try<'_>) -> TryReport {
        match self.try_start(t.index, t.target, t.addr, t.mss, false) {
            Begun::Over(report) => report,
            Begun::Going(start, connecting) => self.try_rest(t, start, connecting).await,
        }
    }

    /// A try's socket and connect, without waiting (refused with its queue
    /// unread only with `defer_refusal`).
    fn try_start(
        &self,
        index: usize,
        target: &Target,
        addr: SocketAddr,
        mss: Option<u32>,
        defer_refusal: bool,
    ) -> Begun {
        let source = self.config.source_for(addr);
        let speaks_first = target.protocol == Protocol::Tls
            || self
                .exchange
                .as_ref()
                .is_some_and(|e| e.speaks_first(index));
        let socket = match open_socket(addr, source, mss, speaks_first) {
            Ok(s) => s,
            Err(kind) => return Begun::Over(TryReport::of(kind)),
        };
        let connecting = Instant::now();
        match connect::start(socket, addr, connecting, defer_refusal) {
            Start::Failed(e, icmp) => Begun::Over(failed_try(&e, icmp, Duration::ZERO, connecting)),
            start => Begun::Going(start, connecting),
        }
    }

    /// The rest of a try begun by [`Shared::try_start`]: the wait for its
    /// connect, then the protocol's phase.
    async fn try_rest(&self, mut t: Try<'_>, start: Start, connecting: Instant) -> TryReport {
        let (connected, icmp, waited) =
            connect::complete(start, t.deadline.clone(), t.quiet.take()).await;
        let mut report = TryReport {
            icmp,
            ..TryReport::of(AttemptKind::Silent { waited })
        };
        let stream = match connected {
            Err(None) => return report,
            Err(Some(e)) => return failed_try(&e, report.icmp, waited, connecting),
            Ok((stream, handshake)) => {
                report.timing.connect = Some(handshake.rtt);
                report.timing.answer = Some(handshake);
                stream
            }
        };
        // Close with a reset rather than through TIME_WAIT, so that sweeps
        // do not pile up sockets. Only an established connection can reach
        // TIME_WAIT, so the option is set here rather than on every socket:
        // that saves one system call per refused or silent port.
        if let Err(e) = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)) {
            report.kind = AttemptKind::LocalPermanent {
                detail: format!("set SO_LINGER: {}", error_detail(&e)),
                errno: e.raw_os_error(),
            };
            return report;
        }
        let local = stream.local_addr().ok();
        report.local_address = local;
        if local == Some(t.addr) {
            report.kind = AttemptKind::SelfConnect;
            return report;
        }
        let (kind, tls) = self.connected(&t, local.unwrap_or(t.addr), stream).await;
        report.kind = kind;
        report.timing.tls = tls;
        report
    }

    /// The phase after TCP connected: the caller's exchange, or TLS and
    /// then the exchange (with how long the TLS handshake took).
    async fn connected(
        &self,
        t: &Try<'_>,
        local: SocketAddr,
        mut stream: TcpStream,
    ) -> (AttemptKind, Option<Duration>) {
        match t.target.protocol {
            Protocol::Tcp => match self.run_exchange(t, local, &mut stream).await {
                Ok((observed, detail, unanswered)) => (
                    AttemptKind::Final {
                        observed,
                        detail,
                        errno: None,
                        cert: None,
                        stalled: false,
                        path_mtu: false,
                        unanswered,
                    },
                    None,
                ),
                Err(detail) => (
                    AttemptKind::Shed {
                        observed: Observed::WrongHost,
                        detail,
                        cert: None,
                    },
                    None,
                ),
            },
            Protocol::Tls => self.tls_phase(t, local, stream).await,
            // UDP targets never reach a TCP connect (see `attempt`).
            Protocol::Udp => (
                AttemptKind::LocalPermanent {
                    detail: "UDP target given to the TCP path".to_string(),
                    errno: None,
                },
                None,
            ),
        }
    }

    /// The caller's exchange on a connected stream: the outcome, its detail
    /// and whether it got no answer in time (`unanswered`).
    pub(super) async fn run_exchange(
        &self,
        t: &Try<'_>,
        local: SocketAddr,
        stream: &mut dyn ProbeStream,
    ) -> Result<(Observed, String, bool), String> {
        let Some(exchange) = &self.exchange else {
            return Ok((Observed::Open, String::new(), false));
        };
        let context = ExchangeContext {
            index: t.index,
            target: t.target,
            peer: t.addr,
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
            Ok(ExchangeOutcome::WrongService { detail }) => {
                Ok((Observed::WrongService, detail, false))
            }
            Ok(ExchangeOutcome::Unanswered { detail }) => Err(detail),
            Err(_elapsed) => Ok((
                Observed::WrongHost,
                format!(
                    "connected, but no answer to the exchange within {} ms",
                    self.config.exchange_timeout.as_millis()
                ),
                // The exchange's lines are far below any path MTU: a stall
                // there is never a black hole, so no small-MSS retry (not
                // `stalled`). It is tried again only to tell loss from a
                // wrong host (see `retry`): where a canary was slow, the
                // round's join finds our nonce in its evidence and says
                // open.
                true,
            )),
        }
    }
}

/// Two details as one, either of which may be empty.
pub(super) fn join_detail(a: String, b: String) -> String {
    match (a.is_empty(), b.is_empty()) {
        (_, true) => a,
        (true, false) => b,
        (false, false) => format!("{a}; {b}"),
    }
}

/// A try whose connect (begun at `connecting`) failed with `e`, having
/// waited `waited`, with the ICMP error its socket's queue held.
fn failed_try(
    e: &std::io::Error,
    icmp: Option<IcmpEvidence>,
    waited: Duration,
    connecting: Instant,
) -> TryReport {
    let mut report = TryReport {
        icmp,
        ..TryReport::of(connect_failure(e, waited))
    };
    if e.raw_os_error() == Some(libc::ECONNREFUSED) && report.icmp.is_none() {
        // A reset from the target's own stack: its round trip.
        report.timing.answer = Some(Handshake::seen(connecting.elapsed()));
    }
    report
}

/// What a failed connect is: silence, a network outcome with its errno, or
/// a local failure.
fn connect_failure(e: &std::io::Error, waited: Duration) -> AttemptKind {
    let detail = error_detail(e);
    let errno = e.raw_os_error();
    match classify_connect_error(e) {
        ConnectClass::Network(Observed::Timeout) => AttemptKind::Silent { waited },
        ConnectClass::Network(observed) => AttemptKind::outcome(observed, detail, errno),
        ConnectClass::LocalTransient => AttemptKind::LocalTransient { detail, errno },
        ConnectClass::LocalPermanent => AttemptKind::LocalPermanent {
            detail: format!("connect: {detail}"),
            errno,
        },
    }
}
