//! The retry decision: from one attempt's outcome and what is known about
//! its target and host, whether the target is finished (and with what
//! verdict), or is tried again, and when. Plain data in, plain data out:
//! no sockets, no channels, so every rule is unit-tested with `Instant`s.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::budget;
use super::config::ProbeConfig;
use super::loss::{self, LossTally};
use super::pacing::HostPacing;
use super::report::AttemptKind;
use super::slot::Slot;
use crate::port::Protocol;
use crate::probe::outcome::{Observed, Silence};
use crate::probe::target::Target;
use crate::probe::udp_service::{UdpOptions, UdpService};

/// Extra tries for a TLS handshake that stalled on a host whose other
/// handshakes succeed: each goes at the host's reduced concurrency before
/// the stall may become `tls-error`.
pub(super) const CONGESTION_RETRIES: u32 = 2;

/// Stalled attempts a stall needs before it is a verdict about the port: a
/// TLS handshake (`tls-error`) or a nonce exchange (`wrong-host`) that
/// stalls this many times, and never got further in another attempt of
/// the path, is the port's doing; fewer is taken for loss and tried again.
pub(super) const STALL_CONFIRM: u32 = 3;

/// Stalled attempts at most (of any kind): past this, attempts that still
/// disagree make the path `lossy`.
const STALL_ATTEMPTS: u32 = 5;

/// Attempts that must each find a path-MTU black hole (the small MSS got
/// through, the full size stalled before and after it) before it is one.
pub(super) const MTU_CONFIRM: u32 = 2;

/// Extra attempts for a path whose connection a canary shed (closed
/// unanswered), spaced 100, 200, 400, 800, 1600 ms apart, each plus up to
/// as much again at random.
const SHED_RETRIES: u32 = 5;

/// Extra attempts for a silent target of a paced host while none of its
/// attempts went with a token of the host's ICMP budget.
pub(super) const UNCOVERED_RETRIES: u32 = 4;

/// A few bits that differ between targets, tries and processes, for
/// backoff jitter (not for anything that needs real randomness).
fn jitter(index: usize, round: u32) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(index);
    h.write_u32(round);
    h.finish()
}

/// How a target finished: its outcome and the typed facts it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Verdict {
    pub(super) observed: Observed,
    pub(super) detail: String,
    /// The errno the outcome was read from.
    pub(super) errno: Option<i32>,
    /// Set for `timeout`.
    pub(super) silence: Option<Silence>,
}

impl Verdict {
    pub(super) fn new(observed: Observed, detail: String, errno: Option<i32>) -> Verdict {
        Verdict {
            observed,
            detail,
            errno,
            silence: None,
        }
    }
}

/// What becomes of a target after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    /// The target is finished.
    Finish(Verdict),
    /// A stalled handshake on a busy host, tried again at once (at the
    /// host's reduced concurrency, or with the path-MTU tries).
    Defer,
    /// Tried again once this instant has come.
    RetryAt(Instant),
    /// Silent through its attempts while nothing of its host has answered
    /// yet (the loss retries need an answer of the host): held until the
    /// host's other targets are decided. If the host answers by then, it
    /// is tried again and gets the loss retries; if not, it finishes with
    /// this verdict.
    AwaitHost(Verdict),
}

/// What the decision reads besides the slot and its host.
pub(super) struct Context<'a> {
    pub(super) config: &'a ProbeConfig,
    pub(super) target: &'a Target,
    /// The target's place in the sweep (its backoff jitter).
    pub(super) index: usize,
    /// The live requests of UDP targets (what their silence means).
    pub(super) udp: &'a UdpOptions,
    /// When the attempt started.
    pub(super) started: Instant,
    /// The latest instant its packet may have left.
    pub(super) sent: Instant,
    pub(super) now: Instant,
}

/// Decides what one attempt's outcome makes of its target, updating the
/// slot's counters, the host's pacing and the sweep's loss trials (`sweep`)
/// as it goes (`ready` receives a target the host takes again once a
/// handshake completed).
pub(super) fn decide(
    slot: &mut Slot,
    host: &mut HostPacing,
    ready: &mut VecDeque<usize>,
    sweep: &mut LossTally,
    kind: AttemptKind,
    cx: &Context<'_>,
) -> Decision {
    let addr = slot.addr;
    let answered_before = slot.tally.answered;
    tally(slot, &kind);
    if slot.tally.answered > answered_before {
        // A trial passed: the port is open (or answers), and so were its
        // silent attempts before (trials failed).
        for t in [&mut *sweep, &mut host.loss] {
            if answered_before == 0 {
                t.first_answer(slot.tally.silent);
            } else {
                t.answer_again();
            }
        }
    }
    match kind {
        // Deferred where our own queue can be the cause: decided when the
        // attempt started (others in flight then), or now that the host
        // has completed other handshakes meanwhile (the first attempt to a
        // busy host starts alone).
        AttemptKind::Final {
            stalled: true,
            path_mtu: false,
            ..
        } if slot.may_defer || (host.answered && slot.deferrals < CONGESTION_RETRIES) => {
            defer(slot, host, cx)
        }
        AttemptKind::Final {
            observed,
            detail,
            errno,
            cert,
            stalled,
            path_mtu,
            unanswered,
        } => {
            slot.attempts += 1;
            if cert.is_some() || slot.cert.is_none() {
                slot.cert = cert;
            }
            if stalled || path_mtu || unanswered {
                if let Some(d) = unsettled(slot, stalled, path_mtu, cx) {
                    return d;
                }
            }
            slot.path_mtu = path_mtu;
            answered(host, ready, observed, cx);
            Decision::Finish(Verdict::new(observed, detail, errno))
        }
        AttemptKind::Silent { waited } => silent(slot, host, ready, sweep, waited, cx),
        AttemptKind::Shed {
            observed,
            detail,
            cert,
        } => {
            tracing::debug!(?addr, %detail, "probe shed");
            slot.attempts += 1;
            slot.sheds += 1;
            slot.cert = cert;
            if slot.sheds <= SHED_RETRIES {
                // The far end is overloaded (by us and the round's other
                // sources): fewer at once to it, and a backoff with jitter
                // so that sources shed together do not come back together.
                host.congested(cx.started);
                let base = 50u64 << slot.sheds;
                let backoff = Duration::from_millis(base + jitter(cx.index, slot.sheds) % base);
                Decision::RetryAt(cx.now + backoff)
            } else {
                slot.shed = true;
                Decision::Finish(Verdict::new(observed, detail, None))
            }
        }
        AttemptKind::SelfConnect => {
            // The kernel picked the destination port as our source port and
            // connected the socket to itself: nothing listened. Try again
            // from another port.
            slot.self_connects += 1;
            if slot.self_connects <= 3 {
                Decision::RetryAt(cx.now)
            } else {
                Decision::Finish(Verdict::new(
                    Observed::LocalError,
                    "the socket kept connecting to itself".to_string(),
                    None,
                ))
            }
        }
        AttemptKind::LocalTransient { detail, errno } => {
            let since = *slot.local_since.get_or_insert(cx.now);
            slot.local_failures += 1;
            if cx.now.duration_since(since) < cx.config.local_error_budget {
                let backoff = Duration::from_millis(10u64 << slot.local_failures.min(7));
                Decision::RetryAt(cx.now + backoff)
            } else {
                Decision::Finish(Verdict::new(Observed::LocalError, detail, errno))
            }
        }
        AttemptKind::LocalPermanent { detail, errno } => {
            Decision::Finish(Verdict::new(Observed::LocalError, detail, errno))
        }
    }
}

/// Counts what one attempt saw into the target's [`Tally`].
fn tally(slot: &mut Slot, kind: &AttemptKind) {
    let t = &mut slot.tally;
    match kind {
        AttemptKind::Final {
            observed,
            cert,
            stalled,
            path_mtu,
            unanswered,
            ..
        } => {
            if matches!(observed, Observed::Timeout | Observed::LocalError) {
                return;
            }
            t.answered += 1;
            t.tls_done |= cert.is_some();
            if *path_mtu {
                t.mtu_suspicions += 1;
            } else if *unanswered {
                t.exchange_stalls += 1;
            } else if *stalled {
                t.tls_stalls += 1;
                // The small MSS stalled as well: no black hole to find.
                t.mtu_ruled_out |= t.mtu_tries;
            }
        }
        AttemptKind::Shed { .. } => t.answered += 1,
        AttemptKind::Silent { .. } => t.silent += 1,
        AttemptKind::SelfConnect
        | AttemptKind::LocalTransient { .. }
        | AttemptKind::LocalPermanent { .. } => {}
    }
}

/// A stall or a path-MTU suspicion that does not hold over attempts yet:
/// tried again (the path-MTU tries at once), or, once stalled attempts
/// are spent and they still disagree, `lossy`. `None` when the evidence
/// holds: a TLS stall [`STALL_CONFIRM`] times and TLS never completed in
/// any attempt of the path, an exchange stall as often, a black hole in
/// [`MTU_CONFIRM`] attempts.
fn unsettled(slot: &mut Slot, stalled: bool, path_mtu: bool, cx: &Context<'_>) -> Option<Decision> {
    let t = slot.tally;
    let settled = if path_mtu {
        t.mtu_suspicions >= MTU_CONFIRM
    } else if stalled {
        // The TLS handshake stalled: never `tls-error` where another
        // attempt of the path completed one.
        t.tls_stalls >= STALL_CONFIRM && !t.tls_done
    } else {
        t.exchange_stalls >= STALL_CONFIRM
    };
    if settled {
        return None;
    }
    tracing::debug!(addr = ?slot.addr, ?t, "stall not settled; trying again");
    if t.tls_stalls + t.exchange_stalls + t.mtu_suspicions < STALL_ATTEMPTS {
        if path_mtu {
            // The next attempt goes straight to the path-MTU tries.
            slot.deferrals = CONGESTION_RETRIES;
        }
        return Some(Decision::RetryAt(cx.now));
    }
    Some(Decision::Finish(lossy(slot)))
}

/// The verdict of a path whose attempts disagreed to the end: `lossy`,
/// with the counts.
fn lossy(slot: &Slot) -> Verdict {
    let t = &slot.tally;
    let mut seen = Vec::new();
    let mut note = |n: u32, what: &str| {
        if n > 0 {
            seen.push(format!("{n} {what}"));
        }
    };
    note(t.silent, "silent");
    note(t.tls_stalls, "stalled in the TLS handshake");
    note(
        t.exchange_stalls,
        "connected and got no answer to the exchange",
    );
    note(t.mtu_suspicions, "got through only with a small MSS");
    if t.tls_done {
        seen.push("TLS completed in some".to_string());
    }
    Verdict::new(
        Observed::Lossy,
        format!(
            "attempts disagreed: {} of {} attempts answered ({}); packet loss on the way, not a verdict about the port",
            t.answered,
            slot.attempts,
            seen.join(", ")
        ),
        None,
    )
}

/// A stalled handshake deferred where our own queue can be the cause:
/// decided when the attempt started (others in flight then), or now that
/// the host has completed other handshakes meanwhile (the first attempt to
/// a busy host starts alone).
fn defer(slot: &mut Slot, host: &mut HostPacing, cx: &Context<'_>) -> Decision {
    tracing::debug!(addr = ?slot.addr, answered = host.answered, limit = host.limit, "stalled handshake deferred");
    slot.attempts += 1;
    if host.answered {
        // A handshake stalled on a host that completes others: our own
        // queue at a busy server, not a verdict. Fewer at once to that
        // host, and this target tries again.
        slot.deferrals += 1;
        host.congested(cx.started);
    } else {
        // Nothing on this host has answered: maybe no TLS there at all.
        // Once more, this time with the path-MTU tries.
        slot.deferrals = CONGESTION_RETRIES;
    }
    Decision::Defer
}

/// What a final outcome tells about its host: an ICMP error spends one of
/// its tokens, a completed handshake shows it answers.
fn answered(
    host: &mut HostPacing,
    ready: &mut VecDeque<usize>,
    observed: Observed,
    cx: &Context<'_>,
) {
    // A UDP port-unreachable is an ICMP error too, and as rate-limited as
    // any: it spent a token of the host's budget when the attempt arrived.
    let icmp_refused = cx.target.protocol == Protocol::Udp && observed == Observed::Refused;
    if observed == Observed::Unreachable || icmp_refused {
        host.icmp_seen = true;
        // When the packet that drew it left, at the earliest and at the
        // latest.
        let sent = match cx.target.protocol {
            Protocol::Udp => (cx.started, cx.sent),
            Protocol::Tcp | Protocol::Tls => {
                let resent = budget::syn_sent(cx.started, cx.now);
                (resent, resent.max(cx.sent))
            }
        };
        host.budget.record(sent.0, sent.1);
    }
    if observed == Observed::Open {
        host.on_answer(ready, cx.config);
    }
}

/// A silent attempt: retried while retries are left (at once, or paced to
/// a host that rejects with ICMP), else `timeout` with its silence.
fn silent(
    slot: &mut Slot,
    host: &mut HostPacing,
    ready: &mut VecDeque<usize>,
    sweep: &mut LossTally,
    waited: Duration,
    cx: &Context<'_>,
) -> Decision {
    tracing::debug!(addr = ?slot.addr, waited_ms = waited.as_millis() as u64, "probe silent");
    slot.attempts += 1;
    slot.waited = waited;
    if slot.tally.answered > 0 {
        // A port that answered is open: its silence is a failed trial.
        sweep.lost();
        host.loss.lost();
    }
    // Where the host answers other ports (or this one answered before),
    // silence may be loss as well as a drop: more attempts at the host's
    // adaptive deadline tell them apart, as many as the loss the sweep
    // (or the host) has shown could need (`loss`), all of them for a port
    // that answered before. Not where silence may be a rate-limited ICMP
    // reject (those retries are paced), nor with fixed deadlines (each
    // would wait the whole `timeout_ms`).
    let host_answers = host.answers();
    let loss_retries = if !host.icmp_seen && cx.config.adaptive {
        if slot.tally.answered > 0 {
            cx.config.loss_retries
        } else if host_answers {
            loss::retries(*sweep, host.loss, cx.config.retries, cx.config.loss_retries)
        } else {
            0
        }
    } else {
        0
    };
    // Silence that went while the host's ICMP budget held a token for it
    // is no swallowed reject. One that went while it was spent proves
    // nothing yet: tried again when a token should be there, as long as
    // the host is paced at all.
    // Judged at the latest instant the packet may have left: every error
    // drawn by a packet that may have left before it counts.
    if host.budget.covered(cx.sent) {
        slot.covered = true;
    } else {
        slot.uncovered += 1;
        if slot.uncovered == 1 && !slot.covered {
            host.note_uncovered(cx.config, ready);
        }
    }
    let udp = cx.target.protocol == Protocol::Udp;
    let for_budget = !slot.covered
        && slot.uncovered <= UNCOVERED_RETRIES
        && host.should_pace(cx.config, udp, true);
    if slot.attempts <= cx.config.retries + loss_retries || for_budget {
        // The attempt waited out its deadline already: the retry goes at
        // once, or, to a paced host, when its budget has a token for it.
        return Decision::RetryAt(cx.now);
    }
    if slot.tally.answered > 0 {
        // It answered before and went silent since: loss, not a drop.
        return Decision::Finish(lossy(slot));
    }
    let (mut detail, mut silence) = silence_detail(slot, host, cx.config);
    if udp {
        let service = UdpService::for_port(cx.target.port.get(), cx.udp);
        detail = format!("{detail}: {}", service.silence());
    }
    if host.icmp_seen && !slot.covered {
        silence.possibly_rate_limited = true;
        detail = format!(
            "{detail}; possibly a rate-limited reject: the host answered {} other probes with ICMP errors, and its ICMP budget towards us was spent whenever this one went",
            host.budget.errors()
        );
    }
    let verdict = Verdict {
        silence: Some(silence),
        ..Verdict::new(Observed::Timeout, detail, None)
    };
    if !host_answers && !host.icmp_seen && cx.config.adaptive && cx.config.loss_retries > 0 {
        // Under loss the host's other ports may answer later than this one
        // gave up: it awaits them.
        return Decision::AwaitHost(verdict);
    }
    Decision::Finish(verdict)
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
                possibly_rate_limited: false,
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
                possibly_rate_limited: false,
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    //! Every rule of the decision on plain values: a slot, a host's pacing
    //! and `Instant`s, no socket.

    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use super::*;
    use crate::port::Port;
    use crate::probe::target::Host;

    const ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));

    fn target(protocol: Protocol) -> Target {
        Target {
            host: Host::Ip(ADDR),
            port: Port::new(443).unwrap(),
            protocol,
            server_name: None,
        }
    }

    struct Case {
        config: ProbeConfig,
        target: Target,
        slot: Slot,
        host: HostPacing,
        ready: VecDeque<usize>,
        sweep: LossTally,
        udp: UdpOptions,
        started: Instant,
        now: Instant,
    }

    impl Case {
        fn new(protocol: Protocol) -> Case {
            let config = ProbeConfig {
                retries: 1,
                ..ProbeConfig::default()
            };
            let slot = Slot {
                addr: Some(SocketAddr::new(ADDR, 443)),
                ..Slot::default()
            };
            let mut host = HostPacing::new(&config);
            host.unfinished = 1;
            let started = Instant::now();
            Case {
                host,
                config,
                target: target(protocol),
                slot,
                ready: VecDeque::new(),
                sweep: LossTally::default(),
                udp: UdpOptions::default(),
                started,
                now: started + Duration::from_millis(1000),
            }
        }

        fn decide(&mut self, kind: AttemptKind) -> Decision {
            let cx = Context {
                config: &self.config,
                target: &self.target,
                index: 7,
                udp: &self.udp,
                started: self.started,
                sent: self.started,
                now: self.now,
            };
            decide(
                &mut self.slot,
                &mut self.host,
                &mut self.ready,
                &mut self.sweep,
                kind,
                &cx,
            )
        }
    }

    /// A final outcome; `stalled` means the TLS handshake stalled, or for
    /// `wrong-host` that the exchange got no answer in time.
    fn final_(observed: Observed, errno: Option<i32>, stalled: bool) -> AttemptKind {
        let unanswered = stalled && observed == Observed::WrongHost;
        AttemptKind::Final {
            observed,
            detail: format!("{observed}"),
            errno,
            cert: None,
            stalled: stalled && !unanswered,
            path_mtu: false,
            unanswered,
        }
    }

    fn silent() -> AttemptKind {
        AttemptKind::Silent {
            waited: Duration::from_millis(1000),
        }
    }

    #[test]
    fn silence_is_retried_at_once_then_is_a_typed_timeout() {
        let mut c = Case::new(Protocol::Tcp);
        assert_eq!(c.decide(silent()), Decision::RetryAt(c.now));
        assert!(!c.slot.paced);
        let Decision::Finish(v) = c.decide(silent()) else {
            panic!("the last retry finishes");
        };
        assert_eq!(v.observed, Observed::Timeout);
        assert_eq!(v.detail, "no answer within 1000 ms (2 attempts)");
        assert_eq!(
            v.silence,
            Some(Silence {
                waited_ms: 1000,
                adaptive: false,
                possibly_rate_limited: false,
            })
        );
        assert_eq!((v.errno, c.slot.attempts), (None, 2));
    }

    #[test]
    fn an_adaptive_deadline_shorter_than_timeout_ms_is_an_adaptive_silence() {
        let mut c = Case::new(Protocol::Tcp);
        c.config.retries = 0;
        c.host.rtt.sample(Duration::from_millis(2));
        let Decision::Finish(v) = c.decide(AttemptKind::Silent {
            waited: Duration::from_millis(100),
        }) else {
            panic!("no retries left");
        };
        assert_eq!(
            v.silence,
            Some(Silence {
                waited_ms: 100,
                adaptive: true,
                possibly_rate_limited: false,
            })
        );
        assert!(
            v.detail
                .starts_with("no answer within 100 ms (1 attempt; adaptive timeout: "),
            "{}",
            v.detail
        );
    }

    #[test]
    fn a_udp_silence_says_what_its_service_silence_means() {
        let mut c = Case::new(Protocol::Udp);
        c.config.retries = 0;
        let Decision::Finish(v) = c.decide(silent()) else {
            panic!("no retries left");
        };
        let service = UdpService::for_port(443, &c.udp).silence();
        assert_eq!(
            v.detail,
            format!("no answer within 1000 ms (1 attempt): {service}")
        );
    }

    /// An ICMP error spends a token of its host's budget at the instant
    /// its attempt was sent.
    #[test]
    fn an_icmp_error_marks_its_host_and_spends_a_token() {
        let mut c = Case::new(Protocol::Tcp);
        let unreachable = final_(Observed::Unreachable, Some(libc::EHOSTUNREACH), false);
        let Decision::Finish(v) = c.decide(unreachable) else {
            panic!("an ICMP error is final");
        };
        assert_eq!(v.errno, Some(libc::EHOSTUNREACH));
        assert!(c.host.icmp_seen);
        assert_eq!(c.host.budget.errors(), 1);
        let mut c = Case::new(Protocol::Udp);
        c.decide(final_(Observed::Refused, Some(libc::ECONNREFUSED), false));
        assert_eq!((c.host.icmp_seen, c.host.budget.errors()), (true, 1));
    }

    /// Six rejects spend a host's ICMP budget (Linux's defaults). A UDP
    /// silence sent after them proves nothing: it is tried again (the
    /// scheduler sends it when a token is due) until the retries for the
    /// budget are spent, and then it is a `timeout` flagged as possibly a
    /// rate-limited reject, in the typed silence and in the text.
    #[test]
    fn a_silence_while_the_icmp_budget_was_spent_is_flagged() {
        let mut c = Case::new(Protocol::Udp);
        c.host.icmp_seen = true;
        for k in 0..6 {
            c.host.budget.record(
                c.started - Duration::from_micros(60 - k),
                c.started - Duration::from_micros(60 - k),
            );
        }
        let mut attempts = 0;
        let v = loop {
            attempts += 1;
            match c.decide(silent()) {
                Decision::RetryAt(at) => assert_eq!(at, c.now),
                Decision::Finish(v) => break v,
                Decision::Defer => panic!("a silence is never deferred"),
                Decision::AwaitHost(_) => panic!("a host that rejects is no host to await"),
            }
        };
        assert_eq!(attempts, 1 + UNCOVERED_RETRIES);
        assert!(!c.slot.covered);
        assert_eq!(v.observed, Observed::Timeout);
        let silence = v.silence.expect("a timeout carries its silence");
        assert!(silence.possibly_rate_limited, "{silence:?}");
        assert!(
            v.detail.contains("; possibly a rate-limited reject: the host answered 6 other probes with ICMP errors"),
            "{}",
            v.detail
        );
    }

    /// A silence sent while the budget held a token (the rejects came
    /// after it) is a drop: a plain `timeout` after the plan's retries.
    #[test]
    fn a_silence_while_a_token_was_there_is_a_plain_timeout() {
        let mut c = Case::new(Protocol::Udp);
        c.host.icmp_seen = true;
        for k in 0..6 {
            c.host.budget.record(
                c.started + Duration::from_millis(10 + k),
                c.started + Duration::from_millis(10 + k),
            );
        }
        assert_eq!(c.decide(silent()), Decision::RetryAt(c.now));
        let Decision::Finish(v) = c.decide(silent()) else {
            panic!("the plan's retries are spent and a token covered it");
        };
        assert!(c.slot.covered);
        assert_eq!(v.observed, Observed::Timeout);
        assert!(!v.silence.unwrap().possibly_rate_limited);
        assert!(!v.detail.contains("rate-limited"), "{}", v.detail);
    }

    /// A TCP host with more silences no token covered than its budget
    /// passes in `icmp_pacing_window` is given up on: its silences get the
    /// plan's retries only, and are flagged. With few, it is paced.
    #[test]
    fn a_tcp_host_too_large_to_pace_gets_the_plan_retries_then_flags() {
        let mut c = Case::new(Protocol::Tcp);
        c.host.icmp_seen = true;
        c.host.uncovered_targets = 5;
        for k in 0..6 {
            c.host.budget.record(
                c.started - Duration::from_micros(60 - k),
                c.started - Duration::from_micros(60 - k),
            );
        }
        assert!(c.host.should_pace(&c.config, false, true));
        c.ready.clear();
        c.host.token_waiting.extend([3, 4]);
        assert_eq!(c.decide(silent()), Decision::RetryAt(c.now));
        // The sixth such target: more than five seconds at one a second.
        assert!(!c.host.should_pace(&c.config, false, true));
        assert_eq!(
            Vec::from(c.ready.clone()),
            vec![3, 4],
            "the waiting targets go at once"
        );
        let Decision::Finish(v) = c.decide(silent()) else {
            panic!("no retries for the budget where the host is given up on");
        };
        assert_eq!(c.slot.attempts, 2);
        assert!(v.silence.unwrap().possibly_rate_limited);
        // Few such targets: paced, so tried again beyond the plan's retries.
        let mut c = Case::new(Protocol::Tcp);
        c.host.icmp_seen = true;
        for _ in 0..6 {
            c.host.budget.record(
                c.started - Duration::from_micros(2),
                c.started - Duration::from_micros(2),
            );
        }
        c.decide(silent());
        assert!(c.host.should_pace(&c.config, false, true));
        assert_eq!(c.decide(silent()), Decision::RetryAt(c.now));
        // Fresh targets are paced only when all unfinished ones fit.
        c.host.unfinished = 4000;
        assert!(!c.host.should_pace(&c.config, false, false));
    }

    #[test]
    fn an_open_port_finishes_and_marks_its_host_as_answering() {
        let mut c = Case::new(Protocol::Tcp);
        let d = c.decide(final_(Observed::Open, None, false));
        assert_eq!(
            d,
            Decision::Finish(Verdict::new(Observed::Open, "open".into(), None))
        );
        assert!(c.host.answered);
    }

    /// A stalled handshake on a host that answers others is deferred at
    /// most CONGESTION_RETRIES times, each cutting the host's bound; then
    /// the stall is the verdict.
    #[test]
    fn a_stall_on_an_answering_host_is_deferred_then_final() {
        let mut c = Case::new(Protocol::Tls);
        c.host.answered = true;
        c.host.in_flight = 8;
        let stall = || final_(Observed::TlsError, None, true);
        assert_eq!(c.decide(stall()), Decision::Defer);
        assert_eq!(c.host.limit, 4);
        assert_eq!(c.decide(stall()), Decision::Defer);
        assert_eq!(c.slot.deferrals, CONGESTION_RETRIES);
        let Decision::Finish(v) = c.decide(stall()) else {
            panic!("deferrals are bounded");
        };
        assert_eq!(v.observed, Observed::TlsError);
        assert_eq!(c.slot.attempts, 3);
    }

    /// Where nothing on the host answered, a stall the attempt may defer is
    /// tried again with the path-MTU tries, and is `tls-error` only once it
    /// held over [`STALL_CONFIRM`] attempts, not again and again.
    #[test]
    fn a_stall_on_a_silent_host_is_confirmed_then_final() {
        let mut c = Case::new(Protocol::Tls);
        c.slot.may_defer = true;
        assert_eq!(
            c.decide(final_(Observed::TlsError, None, true)),
            Decision::Defer
        );
        assert_eq!(c.slot.deferrals, CONGESTION_RETRIES);
        c.slot.may_defer = false;
        assert_eq!(
            c.decide(final_(Observed::TlsError, None, true)),
            Decision::RetryAt(c.now)
        );
        let Decision::Finish(v) = c.decide(final_(Observed::TlsError, None, true)) else {
            panic!("three consistent stalls are a verdict");
        };
        assert_eq!(v.observed, Observed::TlsError);
        assert_eq!(c.slot.attempts, STALL_CONFIRM);
    }

    fn with_cert(kind: AttemptKind) -> AttemptKind {
        let AttemptKind::Final {
            observed,
            detail,
            errno,
            stalled,
            path_mtu,
            unanswered,
            ..
        } = kind
        else {
            return kind;
        };
        AttemptKind::Final {
            observed,
            detail,
            errno,
            cert: Some(Box::new(crate::probe::outcome::CertFacts {
                subject: "CN=t".into(),
                issuer: "CN=t".into(),
                sans: Vec::new(),
                not_after: "2030-01-01T00:00:00Z".into(),
                verified: false,
                verify_error: Some("self-signed".into()),
            })),
            stalled,
            path_mtu,
            unanswered,
        }
    }

    /// A TLS stall on a port that completed a TLS handshake in another
    /// attempt of the same path is loss, never `tls-error`: however many
    /// stalls follow, the path ends `lossy` with the counts.
    #[test]
    fn a_tls_stall_after_a_completed_handshake_is_never_tls_error() {
        let mut c = Case::new(Protocol::Tls);
        // TLS completed, then the nonce exchange stalled (loss).
        let exchange_stall = with_cert(final_(Observed::WrongHost, None, true));
        assert_eq!(c.decide(exchange_stall), Decision::RetryAt(c.now));
        assert!(c.slot.tally.tls_done);
        let mut last = None;
        for _ in 0..STALL_ATTEMPTS {
            match c.decide(final_(Observed::TlsError, None, true)) {
                Decision::RetryAt(_) => {}
                d => {
                    last = Some(d);
                    break;
                }
            }
        }
        let Some(Decision::Finish(v)) = last else {
            panic!("stalled attempts are bounded: {last:?}");
        };
        assert_eq!(v.observed, Observed::Lossy, "{}", v.detail);
        assert_eq!(c.slot.attempts, STALL_ATTEMPTS);
        assert!(
            v.detail
                .starts_with("attempts disagreed: 5 of 5 attempts answered ("),
            "{}",
            v.detail
        );
        assert!(v.detail.contains("TLS completed in some"), "{}", v.detail);
    }

    /// `wrong-host` from a stalled exchange only when it stalls
    /// consistently: one stall is tried again, and an answer in a later
    /// attempt makes the path open.
    #[test]
    fn a_wrong_host_reading_needs_consistent_stalls() {
        let mut c = Case::new(Protocol::Tcp);
        let stall = || final_(Observed::WrongHost, None, true);
        assert_eq!(c.decide(stall()), Decision::RetryAt(c.now));
        let Decision::Finish(v) = c.decide(final_(Observed::Open, None, false)) else {
            panic!("an open attempt finishes");
        };
        assert_eq!(v.observed, Observed::Open);

        let mut c = Case::new(Protocol::Tcp);
        for _ in 1..STALL_CONFIRM {
            assert_eq!(c.decide(stall()), Decision::RetryAt(c.now));
        }
        let Decision::Finish(v) = c.decide(stall()) else {
            panic!("consistent stalls are a verdict");
        };
        assert_eq!(v.observed, Observed::WrongHost);
        // A wrong host that answered (another agent's name) is evidence at
        // once: no stall, nothing to confirm.
        let mut c = Case::new(Protocol::Tcp);
        assert!(matches!(
            c.decide(final_(Observed::WrongHost, None, false)),
            Decision::Finish(Verdict {
                observed: Observed::WrongHost,
                ..
            })
        ));
    }

    fn black_hole() -> AttemptKind {
        AttemptKind::Final {
            observed: Observed::TlsError,
            detail: "path MTU black hole".into(),
            errno: None,
            cert: None,
            stalled: true,
            path_mtu: true,
            unanswered: false,
        }
    }

    /// A path-MTU black hole only when a second attempt finds it too; the
    /// retry goes straight to the path-MTU tries. A full-size success in
    /// between is `open`.
    #[test]
    fn a_path_mtu_black_hole_must_hold_over_two_attempts() {
        let mut c = Case::new(Protocol::Tls);
        assert_eq!(c.decide(black_hole()), Decision::RetryAt(c.now));
        assert_eq!(c.slot.deferrals, CONGESTION_RETRIES);
        assert!(!c.slot.path_mtu);
        let Decision::Finish(v) = c.decide(black_hole()) else {
            panic!("two suspicions are a verdict");
        };
        assert_eq!(v.observed, Observed::TlsError);
        assert!(c.slot.path_mtu);
        assert_eq!(c.slot.tally.mtu_suspicions, MTU_CONFIRM);

        let mut c = Case::new(Protocol::Tls);
        assert_eq!(c.decide(black_hole()), Decision::RetryAt(c.now));
        let d = c.decide(with_cert(final_(Observed::Open, None, false)));
        assert!(
            matches!(&d, Decision::Finish(v) if v.observed == Observed::Open),
            "{d:?}"
        );
        assert!(!c.slot.path_mtu);
    }

    /// Once the small MSS stalled as well, later attempts skip the
    /// path-MTU tries.
    #[test]
    fn a_small_mss_that_stalls_too_rules_the_path_mtu_tries_out() {
        let mut c = Case::new(Protocol::Tls);
        c.slot.tally.mtu_tries = true;
        assert_eq!(
            c.decide(final_(Observed::TlsError, None, true)),
            Decision::RetryAt(c.now)
        );
        assert!(c.slot.tally.mtu_ruled_out);
    }

    /// On a host that answers other ports, silence gets the loss retries
    /// (all of them while the sweep has few trials); a port that answered
    /// in one attempt and went silent after is `lossy` with the counts,
    /// never `timeout`. A host that answered nothing keeps the plan's
    /// retries, and then awaits its host's other ports.
    #[test]
    fn silence_on_an_answering_host_gets_the_loss_retries_then_is_lossy_or_timeout() {
        let mut c = Case::new(Protocol::Tcp);
        c.config.loss_retries = 3;
        assert_eq!(c.decide(silent()), Decision::RetryAt(c.now));
        let Decision::AwaitHost(v) = c.decide(silent()) else {
            panic!("silence on a host that answered nothing awaits the host");
        };
        assert_eq!((v.observed, c.slot.attempts), (Observed::Timeout, 2));
        // Answered meanwhile: the scheduler tries it again, and it gets the
        // loss retries (none answered yet: all of them).
        c.host.rtt.sample(Duration::from_millis(1));
        for _ in 0..2 {
            assert_eq!(c.decide(silent()), Decision::RetryAt(c.now));
        }
        assert!(matches!(c.decide(silent()), Decision::Finish(_)));
        assert_eq!(c.slot.attempts, 5);
        // Agentless sweeps (no loss retries) never await.
        let mut c = Case::new(Protocol::Tcp);
        assert_eq!(c.decide(silent()), Decision::RetryAt(c.now));
        assert!(matches!(c.decide(silent()), Decision::Finish(_)));

        let mut c = Case::new(Protocol::Tcp);
        c.config.loss_retries = 3;
        // A connect's round trip is enough: its exchange may not be over.
        c.host.rtt.sample(Duration::from_millis(1));
        for _ in 0..(c.config.retries + 3) {
            assert_eq!(c.decide(silent()), Decision::RetryAt(c.now));
        }
        let Decision::Finish(v) = c.decide(silent()) else {
            panic!("loss retries are bounded");
        };
        assert_eq!((v.observed, c.slot.attempts), (Observed::Timeout, 5));

        // Fixed deadlines: every retry would wait `timeout_ms`; none.
        let mut c = Case::new(Protocol::Tcp);
        c.config.loss_retries = 3;
        c.config.adaptive = false;
        c.host.answered = true;
        assert_eq!(c.decide(silent()), Decision::RetryAt(c.now));
        assert!(matches!(c.decide(silent()), Decision::Finish(_)));

        let mut c = Case::new(Protocol::Tcp);
        c.config.loss_retries = 1;
        assert_eq!(
            c.decide(final_(Observed::WrongHost, None, true)),
            Decision::RetryAt(c.now)
        );
        // The stall was attempt 1 of the 1 + retries + loss_retries.
        assert_eq!(c.decide(silent()), Decision::RetryAt(c.now));
        let Decision::Finish(v) = c.decide(silent()) else {
            panic!("loss retries are bounded");
        };
        assert_eq!(v.observed, Observed::Lossy);
        assert_eq!(
            v.detail,
            "attempts disagreed: 1 of 3 attempts answered (2 silent, 1 connected and got no answer to the exchange); packet loss on the way, not a verdict about the port"
        );
    }

    /// The loss retries follow the loss the sweep has shown: none past
    /// the plan's attempts where 940 open ports answered at once, all of
    /// them where the host itself lost trials; a port's answer after
    /// silent attempts counts those as lost.
    #[test]
    fn loss_retries_follow_the_trials_of_the_sweep_and_the_host() {
        // A TCP target with ten loss retries on a host that answers.
        let answering = || {
            let mut c = Case::new(Protocol::Tcp);
            c.config.loss_retries = 10;
            c.host.rtt.sample(Duration::from_millis(1));
            c
        };
        let mut c = answering();
        c.sweep = LossTally {
            trials: 940,
            silent: 0,
        };
        assert_eq!(c.decide(silent()), Decision::RetryAt(c.now));
        let Decision::Finish(v) = c.decide(silent()) else {
            panic!("a clean sweep gives the plan's attempts");
        };
        assert_eq!((v.observed, c.slot.attempts), (Observed::Timeout, 2));

        let mut c = answering();
        c.sweep = LossTally {
            trials: 940,
            silent: 2,
        };
        c.host.loss = LossTally {
            trials: 4,
            silent: 2,
        };
        for _ in 0..11 {
            assert_eq!(c.decide(silent()), Decision::RetryAt(c.now));
        }
        assert!(matches!(c.decide(silent()), Decision::Finish(_)));
        assert_eq!(c.slot.attempts, 12);

        // Two silent attempts, then an answer: three trials, two lost.
        let mut c = answering();
        assert_eq!(c.decide(silent()), Decision::RetryAt(c.now));
        assert_eq!(c.decide(silent()), Decision::RetryAt(c.now));
        assert!(matches!(
            c.decide(final_(Observed::Open, None, false)),
            Decision::Finish(_)
        ));
        let lost = LossTally {
            trials: 3,
            silent: 2,
        };
        assert_eq!((c.sweep, c.host.loss), (lost, lost));
    }

    #[test]
    fn a_shed_connection_backs_off_with_jitter_then_is_marked_shed() {
        let mut c = Case::new(Protocol::Tcp);
        let shed = || AttemptKind::Shed {
            observed: Observed::WrongHost,
            detail: "closed".into(),
            cert: None,
        };
        for n in 1..=SHED_RETRIES {
            let Decision::RetryAt(at) = c.decide(shed()) else {
                panic!("shed {n} is retried");
            };
            let base = Duration::from_millis(50 << n);
            assert!(at >= c.now + base && at < c.now + base * 2, "{n}");
        }
        let Decision::Finish(v) = c.decide(shed()) else {
            panic!("sheds are bounded");
        };
        assert_eq!(v.observed, Observed::WrongHost);
        assert!(c.slot.shed);
    }

    #[test]
    fn a_socket_connected_to_itself_is_tried_three_more_times() {
        let mut c = Case::new(Protocol::Tcp);
        for _ in 0..3 {
            assert_eq!(c.decide(AttemptKind::SelfConnect), Decision::RetryAt(c.now));
        }
        assert_eq!(
            c.decide(AttemptKind::SelfConnect),
            Decision::Finish(Verdict::new(
                Observed::LocalError,
                "the socket kept connecting to itself".into(),
                None
            ))
        );
    }

    /// A local shortage backs off while within the budget, then is a
    /// `local-error` carrying its errno; a permanent one is at once.
    #[test]
    fn local_failures_back_off_within_their_budget_and_keep_their_errno() {
        let mut c = Case::new(Protocol::Tcp);
        let emfile = || AttemptKind::LocalTransient {
            detail: "EMFILE".into(),
            errno: Some(libc::EMFILE),
        };
        assert_eq!(
            c.decide(emfile()),
            Decision::RetryAt(c.now + Duration::from_millis(20))
        );
        c.now += c.config.local_error_budget;
        assert_eq!(
            c.decide(emfile()),
            Decision::Finish(Verdict::new(
                Observed::LocalError,
                "EMFILE".into(),
                Some(libc::EMFILE)
            ))
        );
        let mut c = Case::new(Protocol::Tcp);
        let d = c.decide(AttemptKind::LocalPermanent {
            detail: "bind".into(),
            errno: Some(libc::EADDRNOTAVAIL),
        });
        assert_eq!(
            d,
            Decision::Finish(Verdict::new(
                Observed::LocalError,
                "bind".into(),
                Some(libc::EADDRNOTAVAIL)
            ))
        );
        assert_eq!(
            c.slot.attempts, 0,
            "local failures never reached the network"
        );
    }
}
