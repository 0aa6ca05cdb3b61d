//! UDP canaries: a datagram proves nothing unless something answers, so
//! during a round an agent holds a UDP socket on each planned UDP port of
//! its host that no service holds, records every `PORTCALL <round> <nonce>`
//! datagram (nonce, first source address, how many datagrams carried it)
//! and answers each one, so that the join can tell "arrived and answered"
//! from "arrived, answer lost" (a one-way path) from "never arrived".
//!
//! Same wire lines as the TCP canaries ([`crate::probe::canary_line`]), one per
//! datagram. Memory is bounded by the round (distinct nonces kept: the
//! nonces the round makes the canary expect plus headroom, and never more
//! than the agent's per-canary cap); datagrams that carry no line of this
//! round are counted, never logged one by one, and only well-formed lines
//! of another round get an answer (a short `PORTCALL-ERR`, at most
//! [`ERR_PER_SECOND`] a second), so a canary cannot be used to amplify or
//! reflect a flood.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::canary_common::{
    CanaryOptions, Decision, EvidenceLog, PlannedPort, bind_failure, decide, elsewhere_detail,
};
use super::listening::{CanaryMark, Listening};
use crate::control::{ListenerReport, ListenerState, PathProbe, TransportProtocol};
use crate::probe::Observed;
use crate::probe::canary_line::{
    Answer, MAX_LINE, NonceKey, parse_answer, parse_probe_line, parse_sample_line, probe_line,
    sample_answer,
};
use crate::probe::udp::{self, UdpRequest};

/// Most `PORTCALL-ERR` answers (lines of another round) one UDP canary
/// sends per second; the rest are only counted.
pub const ERR_PER_SECOND: u32 = 50;

/// How often a canary may log that it ignored strangers' datagrams.
const STRAY_LOG_EVERY: Duration = Duration::from_secs(10);

/// Opens the UDP canary of `p` on every one of `ips`, or none: a port some
/// service holds on any address is reported `held` (and probed live); one
/// it holds only at other addresses (`listening`) gets no canary.
#[allow(clippy::too_many_arguments)]
pub(crate) fn open(
    ips: &[IpAddr],
    p: &PlannedPort,
    listening: Option<&Listening>,
    options: &CanaryOptions,
    log: &Arc<EvidenceLog>,
    deadline: Instant,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> ListenerReport {
    let report = |state, detail, elsewhere| ListenerReport {
        port: p.port,
        protocol: p.protocol,
        service: p.service.clone(),
        state,
        detail,
        elsewhere,
    };
    match decide(listening, ips, p.port, TransportProtocol::Udp) {
        Decision::Live(detail) => return report(ListenerState::Held, detail, Vec::new()),
        Decision::Elsewhere(sockets) => {
            return report(ListenerState::Failed, elsewhere_detail(&sockets), sockets);
        }
        Decision::Canary => {}
    }
    let own = listening.is_some_and(|l| l.own_on(ips, p.port, TransportProtocol::Udp));
    let mut sockets = Vec::with_capacity(ips.len());
    for ip in ips {
        let addr = SocketAddr::new(*ip, p.port);
        match bind(addr) {
            Ok(s) => sockets.push(s),
            Err(e) => {
                let (state, detail) = bind_failure(addr, p.port, &e, own);
                let detail = match state {
                    ListenerState::Held => {
                        format!(
                            "a service already holds {addr}/udp; probed live where portcall knows a request of its protocol"
                        )
                    }
                    _ => detail,
                };
                // Sockets already bound on other addresses close here.
                return report(state, detail, Vec::new());
            }
        }
    }
    log.open(p.port, TransportProtocol::Udp);
    // Distinct nonces kept: what the round makes this canary expect plus
    // headroom, within the agent's cap.
    let cap = options.per_canary.min(options.max_sightings).max(1);
    for socket in sockets {
        // Our own while it serves (see `listening`).
        let mark = CanaryMark::of(&socket);
        let serving = serve(
            socket,
            p.port,
            options.clone(),
            cap,
            log.clone(),
            deadline,
            cancel.clone(),
        );
        tracker.spawn(async move {
            serving.await;
            drop(mark);
        });
    }
    report(ListenerState::Canary, String::new(), Vec::new())
}

/// Binds without SO_REUSEADDR or SO_REUSEPORT: Linux then refuses the bind
/// (EADDRINUSE) while any socket holds the port on this address or on the
/// wildcard, so a real service is never shared or stolen.
fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.nonblocking().cloexec(),
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// What to do with one datagram.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// Our round: recorded, answered with this line.
    Ok { nonce: String, line: String },
    /// A quality sample of our round: counted on its nonce, answered.
    Sample { nonce: String, line: String },
    /// A well-formed line of another round: answered (within the rate).
    Err(String),
    /// Anything else: counted, never answered.
    Stray,
}

/// Reads one datagram's bytes as a prober's line for `round`. A nonce not
/// made under the round's key is forged: counted, never recorded nor
/// answered. An answer to anything without a valid nonce is never larger
/// than the datagram (else none), so the canary cannot amplify.
fn reply_to(datagram: &[u8], round: &str, host: &str, key: Option<&NonceKey>) -> Reply {
    if datagram.len() > MAX_LINE {
        return Reply::Stray;
    }
    let Some(line) = std::str::from_utf8(datagram).ok() else {
        return Reply::Stray;
    };
    if let Some((r, nonce, seq)) = parse_sample_line(line) {
        return if r == round && key.is_none_or(|k| k.verify(round, nonce)) {
            Reply::Sample {
                nonce: nonce.to_string(),
                line: sample_answer(nonce, seq),
            }
        } else {
            Reply::Stray
        };
    }
    match parse_probe_line(line) {
        Some((r, nonce)) if r == round && key.is_none_or(|k| k.verify(round, nonce)) => Reply::Ok {
            nonce: nonce.to_string(),
            line: format!("PORTCALL-OK {host} {nonce}\n"),
        },
        Some((r, _)) if r == round => Reply::Stray,
        Some(_) => {
            let line = format!("PORTCALL-ERR {host} not-this-round\n");
            if line.len() <= datagram.len() {
                Reply::Err(line)
            } else {
                Reply::Stray
            }
        }
        None => Reply::Stray,
    }
}

async fn serve(
    socket: UdpSocket,
    port: u16,
    options: CanaryOptions,
    cap: usize,
    log: Arc<EvidenceLog>,
    deadline: Instant,
    cancel: CancellationToken,
) {
    let local = socket.local_addr().ok();
    // One byte more than a line may hold: a longer datagram is truncated
    // into a length that says it was too long.
    let mut buf = [0u8; MAX_LINE + 1];
    let mut window = Instant::now();
    let mut errs_in_window = 0u32;
    let mut strays_unlogged = 0u64;
    let mut last_log: Option<Instant> = None;
    loop {
        let (n, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            () = sleep_until(deadline) => {
                tracing::info!(port, "udp canary closed: round TTL passed");
                break;
            }
            got = socket.recv_from(&mut buf) => match got {
                Ok(got) => got,
                // An error queued for an earlier answer (the prober's
                // socket closed): nothing to do, but never a busy loop.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
        };
        let answer = match reply_to(
            &buf[..n],
            &options.round,
            &options.host,
            options.nonce_key.as_ref(),
        ) {
            Reply::Ok { nonce, line } => {
                log.record_datagram(port, &nonce, peer, cap);
                Some(line)
            }
            Reply::Sample { nonce, line } => {
                log.record_sample(port, &nonce, peer, cap);
                Some(line)
            }
            Reply::Err(line) => {
                log.stray_datagrams(port, 1);
                let now = Instant::now();
                if now.duration_since(window) >= Duration::from_secs(1) {
                    window = now;
                    errs_in_window = 0;
                }
                errs_in_window += 1;
                (errs_in_window <= ERR_PER_SECOND).then_some(line)
            }
            Reply::Stray => {
                log.stray_datagrams(port, 1);
                strays_unlogged += 1;
                None
            }
        };
        if strays_unlogged > 0 && last_log.is_none_or(|t| t.elapsed() >= STRAY_LOG_EVERY) {
            tracing::info!(
                port,
                ?local,
                ignored = strays_unlogged,
                "udp canary ignored datagrams that carried no line of this round"
            );
            strays_unlogged = 0;
            last_log = Some(Instant::now());
        }
        if let Some(line) = answer {
            // A full send buffer or an unreachable peer loses the answer:
            // the prober retries, the evidence still has the nonce.
            let _ = socket.try_send_to(line.as_bytes(), peer);
        }
    }
    if strays_unlogged > 0 {
        tracing::info!(
            port,
            ?local,
            ignored = strays_unlogged,
            "udp canary ignored datagrams that carried no line of this round"
        );
    }
}

/// One UDP path a round's prober sends its nonce over.
#[derive(Debug, Clone)]
pub(crate) struct UdpPath {
    /// Index of the path in the plan.
    pub path: usize,
    /// Where the datagrams go (the plan address, resolved).
    pub target: Result<SocketAddr, String>,
    /// The nonce for this path.
    pub nonce: String,
    /// The host whose canary should answer.
    pub expected: String,
}

/// How a round's prober sends UDP nonces.
#[derive(Debug, Clone)]
pub(crate) struct UdpProbing {
    /// The round's id.
    pub round: String,
    /// This host's addresses: each datagram leaves from the one of its
    /// target's family.
    pub sources: Vec<IpAddr>,
    /// How long each datagram waits for its answer.
    pub per_attempt: Duration,
    /// Datagrams per path: 1 + retries.
    pub attempts: u32,
    /// Paths in flight at once.
    pub concurrency: usize,
}

/// Sends each path's nonce line with [`crate::probe::udp::exchange`]
/// (retried like a silent TCP path) and says what came back; stops early,
/// reporting what it has, when `cancel` fires.
pub(crate) async fn probe_paths(
    probing: &UdpProbing,
    paths: Vec<UdpPath>,
    cancel: &CancellationToken,
) -> Vec<PathProbe> {
    let limit = Arc::new(tokio::sync::Semaphore::new(probing.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (k, p) in paths.into_iter().enumerate() {
        let (limit, probing, cancel) = (limit.clone(), probing.clone(), cancel.clone());
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let r = tokio::select! {
                () = cancel.cancelled() => unprobed(&p, "the round was cancelled".into()),
                r = probe_one(&probing, &p) => r,
            };
            (k, r)
        });
    }
    let mut out: Vec<(usize, PathProbe)> = Vec::new();
    while let Some(done) = set.join_next().await {
        if let Ok(r) = done {
            out.push(r);
        }
    }
    out.sort_by_key(|(k, _)| *k);
    out.into_iter().map(|(_, r)| r).collect()
}

fn unprobed(p: &UdpPath, detail: String) -> PathProbe {
    PathProbe {
        path: p.path,
        nonce: Some(p.nonce.as_str().into()),
        observed: Observed::LocalError,
        detail: detail.into(),
        latency_us: 0,
        attempts: 0,
        source: None,
        answered_by: None,
        icmp: None,
        path_mtu: false,
        walk: None,
        connect_us: None,
        tls_us: None,
        cert: None,
        service_banner: None,
        shed: false,
        errno: None,
        silence: None,
        neighbour: None,
        proof: None,
        service_answer: None,
        answered: None,
        quality: None,
    }
}

async fn probe_one(probing: &UdpProbing, p: &UdpPath) -> PathProbe {
    let target = match &p.target {
        Ok(t) => *t,
        Err(why) => return unprobed(p, why.clone()),
    };
    let line = probe_line(&probing.round, &p.nonce);
    let source = probing
        .sources
        .iter()
        .copied()
        .find(|s| s.is_ipv4() == target.is_ipv4());
    let answer = std::sync::Mutex::new(None);
    let r = udp::exchange(
        &UdpRequest {
            target,
            source,
            payload: line.as_bytes(),
            attempts: probing.attempts,
            timeout: probing.per_attempt,
            spacing: Duration::ZERO,
            sent_at: None,
        },
        // Any canary's answer proves arrival at a canary; whose it is and
        // what it says is judged below.
        |reply| match std::str::from_utf8(reply).ok().and_then(parse_answer) {
            Some(a) => {
                *answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(a);
                true
            }
            None => false,
        },
    )
    .await;
    let answer = answer.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut answered_by = None;
    let (observed, detail) = match (r.outcome, answer) {
        (Observed::Open, Some(Answer::Ok { host, nonce })) => {
            let verdict = if host != p.expected {
                (
                    Observed::WrongHost,
                    format!("answered by the agent of {host}, not {}", p.expected),
                )
            } else if nonce != p.nonce {
                (
                    Observed::WrongHost,
                    format!("the canary of {host} echoed another nonce"),
                )
            } else {
                (Observed::Open, String::new())
            };
            answered_by = Some(host);
            verdict
        }
        (Observed::Open, Some(Answer::Err { host, reason })) => {
            let d = format!("the agent of {host} refused our nonce ({reason})");
            answered_by = Some(host);
            (Observed::WrongHost, d)
        }
        (o, _) => (o, r.detail),
    };
    PathProbe {
        path: p.path,
        nonce: Some(p.nonce.as_str().into()),
        observed,
        detail: detail.into(),
        latency_us: r
            .rtt
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        attempts: r.attempts,
        source: r.local,
        answered_by: answered_by.map(Into::into),
        icmp: r.icmp.map(Box::new),
        path_mtu: false,
        walk: None,
        connect_us: None,
        tls_us: None,
        cert: None,
        service_banner: None,
        shed: false,
        errno: r.errno,
        silence: r.silence,
        neighbour: None,
        proof: None,
        service_answer: None,
        answered: None,
        quality: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::canary::open_canaries;
    use crate::port::Protocol;
    use tokio::sync::Semaphore;

    fn options(per_canary: usize) -> CanaryOptions {
        CanaryOptions {
            host: "ns".into(),
            round: "abcd".into(),
            tls: crate::pki::self_signed_canary_config("ns").unwrap(),
            exchange_timeout: Duration::from_secs(1),
            max_sightings: 64,
            connections: Arc::new(Semaphore::new(8)),
            per_canary,
            nonce_key: None,
        }
    }

    /// A round's canaries on 127.0.0.1 holding `service` on UDP `port`
    /// until `ttl` from now, taking at most `nonces` distinct nonces.
    struct Round {
        ip: IpAddr,
        cancel: CancellationToken,
        tracker: TaskTracker,
        reports: Vec<ListenerReport>,
        log: Arc<crate::agent::canary::EvidenceLog>,
    }

    fn round_on(port: u16, service: &str, ttl: Duration, nonces: usize) -> Round {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        let ports = [PlannedPort {
            port,
            protocol: Protocol::Udp,
            service: service.into(),
        }];
        let deadline = Instant::now() + ttl;
        let (reports, log) = open_canaries(
            &[ip],
            &ports,
            None,
            &options(nonces),
            deadline,
            &cancel,
            &tracker,
        );
        Round {
            ip,
            cancel,
            tracker,
            reports,
            log,
        }
    }

    fn free_udp_port(ip: IpAddr) -> u16 {
        let s = std::net::UdpSocket::bind((ip, 0)).unwrap();
        s.local_addr().unwrap().port()
    }

    #[test]
    fn only_lines_of_this_round_are_recorded_and_garbage_is_never_answered() {
        assert_eq!(
            reply_to(b"PORTCALL abcd 0011\n", "abcd", "ns", None),
            Reply::Ok {
                nonce: "0011".into(),
                line: "PORTCALL-OK ns 0011\n".into()
            }
        );
        let long = format!("PORTCALL ffff {}\n", "0".repeat(32));
        assert_eq!(
            reply_to(long.as_bytes(), "abcd", "ns", None),
            Reply::Err("PORTCALL-ERR ns not-this-round\n".into())
        );
        for bad in [
            &b""[..],
            b"hello",
            b"\xff\xfe",
            b"PORTCALL abcd",
            &[b'a'; MAX_LINE + 1][..],
        ] {
            assert_eq!(reply_to(bad, "abcd", "ns", None), Reply::Stray, "{bad:?}");
        }
    }

    /// Regression: a 12-byte line of another round got a 30-byte answer
    /// (more with a long host name): the canary amplified.
    #[test]
    fn no_answer_is_larger_than_a_line_without_a_valid_nonce() {
        let host = "a-rather-long-host-name.example";
        for line in [&b"PORTCALL f 0"[..], b"PORTCALL ffff 0011\n"] {
            match reply_to(line, "abcd", host, None) {
                Reply::Err(answer) => assert!(answer.len() <= line.len(), "{answer:?}"),
                Reply::Stray => {}
                Reply::Ok { .. } | Reply::Sample { .. } => {
                    panic!("{line:?} is not of this round")
                }
            }
        }
        // `portcall probe`'s canary request is long enough to be answered
        // whatever the host name.
        let request = crate::probe::udp_service::ServiceRequest::canary();
        assert!(
            matches!(
                reply_to(&request.payload, "abcd", &"h".repeat(64), None),
                Reply::Err(_)
            ),
            "{:?}",
            String::from_utf8_lossy(&request.payload)
        );
        // A nonce of this round not made under its key: no answer at all.
        let key = NonceKey::from_hex(&"5a".repeat(32)).unwrap();
        assert_eq!(
            reply_to(b"PORTCALL abcd 0011\n", "abcd", host, Some(&key)),
            Reply::Stray
        );
        let n = key.nonce("abcd", "0123456789abcdef");
        assert!(matches!(
            reply_to(probe_line("abcd", &n).as_bytes(), "abcd", host, Some(&key)),
            Reply::Ok { .. }
        ));
    }

    /// Regression: after sniffing the round id, 100 forged datagrams filled
    /// the UDP canary's cap, the genuine nonce was dropped and the open
    /// path was reported `wrong-host`.
    #[tokio::test]
    async fn forged_nonces_neither_fill_the_cap_nor_get_answers() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let port = free_udp_port(ip);
        let key = NonceKey::from_hex(&"c3".repeat(32)).unwrap();
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        let ports = [PlannedPort {
            port,
            protocol: Protocol::Udp,
            service: "dns".into(),
        }];
        let options = CanaryOptions {
            nonce_key: Some(key.clone()),
            ..options(2)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let (reports, log) =
            open_canaries(&[ip], &ports, None, &options, deadline, &cancel, &tracker);
        assert_eq!(reports[0].state, ListenerState::Canary, "{reports:?}");
        let attacker = UdpSocket::bind((ip, 0)).await.unwrap();
        for i in 0..100u32 {
            let forged = probe_line("abcd", &format!("{i:032x}"));
            attacker
                .send_to(forged.as_bytes(), (ip, port))
                .await
                .unwrap();
        }
        let prober = UdpSocket::bind((ip, 0)).await.unwrap();
        prober.connect((ip, port)).await.unwrap();
        let nonce = key.nonce("abcd", "00112233445566ff");
        let mut buf = [0u8; 256];
        let mut answer = None;
        for _ in 0..3 {
            prober
                .send(probe_line("abcd", &nonce).as_bytes())
                .await
                .unwrap();
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(500), prober.recv(&mut buf)).await
            {
                answer = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                break;
            }
        }
        assert_eq!(answer, Some(format!("PORTCALL-OK ns {nonce}\n")));
        let ev = log.snapshot();
        let seen: Vec<String> = ev[0].seen.iter().map(|s| s.nonce.to_string()).collect();
        assert_eq!(seen, [nonce.as_str()], "{ev:?}");
        assert_eq!(ev[0].dropped, 0);
        assert_eq!(ev[0].strays, 100, "forged datagrams are counted");
        let mut none = [0u8; 64];
        assert!(
            tokio::time::timeout(Duration::from_millis(200), attacker.recv(&mut none))
                .await
                .is_err(),
            "a forged nonce gets no answer"
        );
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[tokio::test]
    async fn a_udp_canary_counts_datagrams_per_nonce_answers_each_and_frees_the_port() {
        let port = free_udp_port("127.0.0.1".parse().unwrap());
        // Two distinct nonces at most.
        let Round {
            ip,
            cancel,
            tracker,
            reports,
            log,
        } = round_on(port, "dns", Duration::from_secs(10), 2);
        assert_eq!(reports[0].state, ListenerState::Canary, "{reports:?}");
        assert_eq!(reports[0].protocol, Protocol::Udp);
        // The same port over TCP is still free: UDP canaries take only UDP.
        assert!(std::net::TcpListener::bind((ip, port)).is_ok());

        let prober = UdpSocket::bind((ip, 0)).await.unwrap();
        prober.connect((ip, port)).await.unwrap();
        let me = prober.local_addr().unwrap();
        let mut buf = [0u8; 256];
        let mut ask = async |line: &[u8]| {
            prober.send(line).await.unwrap();
            match tokio::time::timeout(Duration::from_millis(500), prober.recv(&mut buf)).await {
                Ok(Ok(n)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
                _ => None,
            }
        };
        for _ in 0..3 {
            assert_eq!(
                ask(probe_line("abcd", "0011").as_bytes()).await.as_deref(),
                Some("PORTCALL-OK ns 0011\n")
            );
        }
        assert_eq!(
            ask(probe_line("abcd", "0022").as_bytes()).await.as_deref(),
            Some("PORTCALL-OK ns 0022\n")
        );
        // A third nonce is over the cap: answered, counted as dropped.
        assert_eq!(
            ask(probe_line("abcd", "0033").as_bytes()).await.as_deref(),
            Some("PORTCALL-OK ns 0033\n")
        );
        // Another round's line shorter than the answer: no answer.
        assert_eq!(ask(probe_line("ffff", "0044").as_bytes()).await, None);
        assert_eq!(ask(b"garbage that is not a line").await, None);

        let ev = log.snapshot();
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert!(ev[0].is_udp());
        let seen: Vec<(String, u32, SocketAddr)> = ev[0]
            .seen
            .iter()
            .map(|s| (s.nonce.to_string(), s.datagrams, s.source))
            .collect();
        assert_eq!(seen, [("0011".into(), 3, me), ("0022".into(), 1, me)]);
        assert_eq!(ev[0].dropped, 1);
        assert_eq!(ev[0].strays, 2);

        // A second canary on the same port sees it held.
        let again = round_on(port, "dns", Duration::from_secs(10), 2).reports;
        assert_eq!(again[0].state, ListenerState::Held, "{again:?}");
        assert!(again[0].detail.contains("/udp"), "{again:?}");

        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        assert!(std::net::UdpSocket::bind((ip, port)).is_ok(), "port freed");
    }

    #[tokio::test]
    async fn a_port_a_udp_service_holds_is_reported_held_and_left_alone() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // A service on the wildcard holds the port for every address.
        let service = std::net::UdpSocket::bind(("0.0.0.0", 0)).unwrap();
        let port = service.local_addr().unwrap().port();
        let Round {
            cancel,
            tracker,
            reports,
            log,
            ..
        } = round_on(port, "ntp", Duration::from_secs(5), 4);
        assert_eq!(reports[0].state, ListenerState::Held, "{reports:?}");
        assert!(log.snapshot().is_empty());
        // The service still gets its datagrams.
        let c = std::net::UdpSocket::bind((ip, 0)).unwrap();
        c.send_to(b"x", (ip, port)).unwrap();
        service
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut b = [0u8; 4];
        assert_eq!(service.recv(&mut b).unwrap(), 1);
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[tokio::test]
    async fn a_udp_canary_closes_at_the_round_ttl() {
        let port = free_udp_port("127.0.0.1".parse().unwrap());
        let Round { ip, tracker, .. } = round_on(port, "syslog", Duration::from_millis(200), 4);
        tracker.close();
        tokio::time::timeout(Duration::from_secs(2), tracker.wait())
            .await
            .expect("closed at the TTL without a cancel");
        assert!(std::net::UdpSocket::bind((ip, port)).is_ok(), "port freed");
    }

    #[tokio::test]
    async fn a_round_prober_tells_open_wrong_host_refused_and_silent_apart_on_loopback() {
        let port = free_udp_port("127.0.0.1".parse().unwrap());
        let Round {
            ip,
            cancel,
            tracker,
            log,
            ..
        } = round_on(port, "dns", Duration::from_secs(10), 8);
        // A socket that reads and never answers, and a port nobody holds.
        let silent = std::net::UdpSocket::bind((ip, 0)).unwrap();
        let silent_port = silent.local_addr().unwrap().port();
        let closed = free_udp_port(ip);
        let path = |path: usize, port: u16, expected: &str| UdpPath {
            path,
            target: Ok(SocketAddr::new(ip, port)),
            nonce: format!("00{path}"),
            expected: expected.into(),
        };
        let probing = UdpProbing {
            round: "abcd".into(),
            sources: vec![ip],
            per_attempt: Duration::from_millis(200),
            attempts: 2,
            concurrency: 4,
        };
        let r = probe_paths(
            &probing,
            vec![
                path(7, port, "ns"),
                path(8, port, "db"),
                path(9, closed, "ns"),
                path(10, silent_port, "ns"),
                UdpPath {
                    target: Err("cannot resolve nowhere.invalid".into()),
                    ..path(11, port, "ns")
                },
            ],
            &cancel,
        )
        .await;
        let got: Vec<(usize, Observed, u32)> =
            r.iter().map(|p| (p.path, p.observed, p.attempts)).collect();
        assert_eq!(
            got,
            [
                (7, Observed::Open, 1),
                (8, Observed::WrongHost, 1),
                (9, Observed::Refused, 1),
                (10, Observed::Timeout, 2),
                (11, Observed::LocalError, 0),
            ],
            "{r:?}"
        );
        assert_eq!(r[0].answered_by.as_deref(), Some("ns"));
        assert_eq!(
            r[0].nonce.as_ref().map(ToString::to_string),
            Some("007".into())
        );
        assert!(
            r[1].detail.contains("answered by the agent of ns, not db"),
            "{}",
            r[1].detail
        );
        assert_eq!(
            r[2].icmp.as_ref().map(|i| i.kind.as_str()),
            Some("port-unreachable"),
            "{:?}",
            r[2]
        );
        // The silent socket got both datagrams, each the nonce line.
        silent.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        let mut lines = Vec::new();
        while let Ok(n) = silent.recv(&mut b) {
            lines.push(String::from_utf8_lossy(&b[..n]).into_owned());
        }
        assert_eq!(lines, ["PORTCALL abcd 0010\n", "PORTCALL abcd 0010\n"]);
        // The canary recorded what reached it, with the prober's source.
        let ev = log.snapshot();
        let seen: Vec<(String, u32)> = ev[0]
            .seen
            .iter()
            .map(|s| (s.nonce.to_string(), s.datagrams))
            .collect();
        assert_eq!(seen, [("007".into(), 1), ("008".into(), 1)]);
        assert_eq!(Some(ev[0].seen[0].source), r[0].source);
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
