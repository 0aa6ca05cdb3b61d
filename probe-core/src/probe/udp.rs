//! One UDP exchange with proof of arrival: datagrams out on a connected
//! socket, and an outcome only from what came back. UDP has no handshake,
//! so silence proves nothing; an accepted reply proves arrival, and an ICMP
//! error read from the socket's error queue (`IP_RECVERR` /
//! `IPV6_RECVERR`, through [`super::errqueue`]) says who refused or
//! blocked it.
//!
//! Both `portcall probe` (with a live-service request or a canary line from
//! [`super::udp_service`]) and a round's prober (with its nonce line) use
//! [`exchange`]; what counts as an answer is the caller's `accept`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep_until, timeout_at};

use super::classify::{ConnectClass, classify_connect_error, error_detail};
use super::errqueue::{self, IcmpEvidence};
use super::outcome::Observed;

/// Most datagrams one exchange sends, whatever the caller asks for.
pub const MAX_ATTEMPTS: u32 = 16;

/// Longest one exchange waits for an answer to one datagram.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Most datagrams (accepted or not) one exchange reads before giving up, so
/// that a peer spraying replies cannot hold it.
pub const MAX_READS: u32 = 64;

/// Largest reply kept; longer datagrams are cut (a DNS answer for `.` NS
/// fits easily).
pub const MAX_REPLY: usize = 4096;

/// What to send, where, and how often.
#[derive(Debug, Clone)]
pub struct UdpRequest<'a> {
    /// The address and port to send to.
    pub target: SocketAddr,
    /// Local address to send from; `None` lets the kernel choose.
    pub source: Option<IpAddr>,
    /// The datagram, the same for every attempt.
    pub payload: &'a [u8],
    /// Datagrams to send at most: 1 + retries (at least 1, at most
    /// [`MAX_ATTEMPTS`]).
    pub attempts: u32,
    /// How long each datagram waits for its answer (at most
    /// [`MAX_TIMEOUT`]).
    pub timeout: Duration,
    /// Least time between the starts of two attempts; the next datagram
    /// leaves at `max(timeout, spacing)` after the previous one. A reply to
    /// an earlier datagram still counts while a later one waits.
    pub spacing: Duration,
    /// Where to note the instant each datagram had left (just after its
    /// send returned), for a caller that may drop the exchange before it
    /// returns; `None`: nowhere.
    pub sent_at: Option<&'a std::sync::Mutex<Option<Instant>>>,
}

/// What one exchange saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpResult {
    /// `open` on an accepted reply, `refused` on ICMP port-unreachable,
    /// `unreachable` on any other ICMP error (or a local "no route"),
    /// `timeout` on silence after every attempt, `local-error` when this
    /// host could not send at all.
    pub outcome: Observed,
    /// Datagrams that left this host.
    pub attempts: u32,
    /// Accepted replies (the exchange stops at the first).
    pub replies: u32,
    /// The accepted reply (cut at [`MAX_REPLY`] bytes).
    pub reply: Option<Vec<u8>>,
    /// The ICMP error queued on the socket, with its sender.
    pub icmp: Option<IcmpEvidence>,
    /// From the datagram the reply (or the ICMP error) answered, the
    /// latest sent before it, to the reply: a round trip to the target (or
    /// to the device that sent the error).
    pub rtt: Option<Duration>,
    /// The local address the datagrams left from.
    pub local: Option<SocketAddr>,
    /// For `local-error`: the failure may pass (no descriptor, no buffer),
    /// so trying again later is worthwhile.
    pub transient: bool,
    /// A short reason: the errno or ICMP in words, or how long it stayed
    /// silent. Empty for `open` (the caller describes the reply).
    pub detail: String,
    /// The errno the outcome was read from, if any.
    pub errno: Option<i32>,
    /// Set when the outcome is silence.
    pub silence: Option<super::Silence>,
}

impl UdpResult {
    fn new(outcome: Observed, detail: String) -> UdpResult {
        UdpResult {
            outcome,
            attempts: 0,
            replies: 0,
            reply: None,
            icmp: None,
            rtt: None,
            local: None,
            transient: false,
            detail,
            errno: None,
            silence: None,
        }
    }
}

/// Sends `req.payload` up to `req.attempts` times on one connected UDP
/// socket and waits for a reply that `accept` takes; replies it rejects are
/// ignored (and not counted). Returns at the first accepted reply, at the
/// first ICMP error, or after the last attempt's wait. Bounded by
/// [`MAX_ATTEMPTS`] × `max(timeout, spacing)` in time and [`MAX_READS`]
/// datagrams read.
pub async fn exchange(req: &UdpRequest<'_>, accept: impl Fn(&[u8]) -> bool) -> UdpResult {
    let attempts = req.attempts.clamp(1, MAX_ATTEMPTS);
    let wait = req.timeout.min(MAX_TIMEOUT);
    let step = wait.max(req.spacing.min(MAX_TIMEOUT));
    let socket = match open(req.target, req.source) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let local = socket.local_addr().ok();
    let mut result = UdpResult::new(Observed::Timeout, String::new());
    result.local = local;
    let mut buf = vec![0u8; MAX_REPLY];
    let mut reads = 0u32;
    let mut last_sent = Instant::now();
    let mut failure: Option<io::Error> = None;
    for _ in 0..attempts {
        // Wait out the spacing; a late reply to an earlier datagram still
        // counts meanwhile.
        if result.attempts > 0 {
            let next = last_sent + step;
            if let Some(done) = read_until(&socket, &mut buf, next, &accept, &mut reads).await {
                settle(done, &buf, last_sent, &mut result, &mut failure);
                break;
            }
            sleep_until(next).await;
        }
        match socket.send(req.payload).await {
            Ok(_) => {
                result.attempts += 1;
                last_sent = Instant::now();
                if let Some(at) = req.sent_at {
                    *at.lock().unwrap_or_else(|e| e.into_inner()) = Some(last_sent);
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        let until = last_sent + wait;
        if let Some(done) = read_until(&socket, &mut buf, until, &accept, &mut reads).await {
            settle(done, &buf, last_sent, &mut result, &mut failure);
            break;
        }
    }
    if result.reply.is_some() {
        result.outcome = Observed::Open;
        result.replies = 1;
        return result;
    }
    if let Some(e) = failure {
        // The ICMP itself, when the kernel queued it: its type decides, and
        // its sender is the evidence.
        result.icmp = errqueue::read(&socket);
        let (outcome, detail) = classify(&e, result.icmp.as_ref(), req.target.ip());
        result.outcome = outcome;
        result.errno = e.raw_os_error();
        if outcome == Observed::Timeout {
            result.silence = Some(silence(wait));
        }
        result.transient = matches!(classify_connect_error(&e), ConnectClass::LocalTransient)
            && outcome == Observed::LocalError;
        result.detail = detail;
        return result;
    }
    // Silence (or only replies that answer something else): the deadline
    // each datagram waited, never an adaptive one here.
    result.silence = Some(silence(wait));
    if reads >= MAX_READS {
        result.detail =
            format!("{reads} datagrams came back, none an answer to this request; stopped reading");
        return result;
    }
    result.detail = format!(
        "no answer within {} ms ({} datagram{})",
        wait.as_millis(),
        result.attempts,
        if result.attempts == 1 { "" } else { "s" }
    );
    result
}

/// The typed silence of an exchange whose datagrams each waited `wait`.
fn silence(wait: Duration) -> super::Silence {
    super::Silence {
        waited_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        adaptive: false,
        possibly_rate_limited: false,
    }
}

/// Reads replies until `until`: `None` when it passes with no accepted
/// reply, else what ended the wait (never [`Read::Ignored`]).
async fn read_until(
    socket: &UdpSocket,
    buf: &mut [u8],
    until: Instant,
    accept: &impl Fn(&[u8]) -> bool,
    reads: &mut u32,
) -> Option<Read> {
    loop {
        match timeout_at(until, socket.recv(buf)).await {
            Err(_elapsed) => return None,
            Ok(r) => match read_one(r, buf, accept, reads) {
                Read::Ignored => {}
                done => return Some(done),
            },
        }
    }
}

/// Records what ended an exchange's wait: the accepted reply and its round
/// trip from the latest datagram, or the socket's failure.
fn settle(
    done: Read,
    buf: &[u8],
    last_sent: Instant,
    result: &mut UdpResult,
    failure: &mut Option<io::Error>,
) {
    match done {
        Read::Accepted(n) => {
            result.reply = Some(buf[..n].to_vec());
            result.rtt = Some(last_sent.elapsed());
        }
        Read::Failed(e) => {
            // The ICMP error's round trip, for the host's adaptive deadline.
            result.rtt = Some(last_sent.elapsed());
            *failure = Some(e);
        }
        Read::Ignored | Read::TooMany => {}
    }
}

enum Read {
    Accepted(usize),
    Ignored,
    Failed(io::Error),
    TooMany,
}

fn read_one(
    r: io::Result<usize>,
    buf: &[u8],
    accept: &impl Fn(&[u8]) -> bool,
    reads: &mut u32,
) -> Read {
    match r {
        Ok(n) => {
            *reads += 1;
            if accept(&buf[..n]) {
                Read::Accepted(n)
            } else if *reads >= MAX_READS {
                Read::TooMany
            } else {
                Read::Ignored
            }
        }
        Err(e) => Read::Failed(e),
    }
}

/// The outcome of a failed send or receive: the ICMP type when one was
/// queued, else the errno.
fn classify(e: &io::Error, icmp: Option<&IcmpEvidence>, target: IpAddr) -> (Observed, String) {
    if let Some(i) = icmp {
        // The ICMP's type and sender are in the evidence itself; the detail
        // says what they mean.
        let mut r = if i.kind == "port-unreachable" {
            (Observed::Refused, "no UDP socket on the port".to_string())
        } else {
            (
                Observed::Unreachable,
                "the datagram was blocked or not routed".to_string(),
            )
        };
        if i.from_ip() != Some(target) {
            r.1.push_str(", by a device on the way, not the target");
        }
        return r;
    }
    let detail = error_detail(e);
    match classify_connect_error(e) {
        ConnectClass::Network(Observed::Timeout) => (Observed::Timeout, detail),
        ConnectClass::Network(o) => (o, detail),
        ConnectClass::LocalTransient | ConnectClass::LocalPermanent => {
            (Observed::LocalError, format!("send: {detail}"))
        }
    }
}

/// A non-blocking UDP socket with the error queue on, bound to `source`
/// when given, connected to `target` (so that only the target's replies
/// and ICMP errors about it reach it).
fn open(target: SocketAddr, source: Option<IpAddr>) -> Result<UdpSocket, Box<UdpResult>> {
    let local = |e: &io::Error, what: &str| {
        let mut r = UdpResult::new(Observed::LocalError, format!("{what}: {}", error_detail(e)));
        r.errno = e.raw_os_error();
        r.transient = matches!(classify_connect_error(e), ConnectClass::LocalTransient);
        Box::new(r)
    };
    let socket = Socket::new(
        Domain::for_address(target),
        Type::DGRAM.nonblocking().cloexec(),
        Some(socket2::Protocol::UDP),
    )
    .map_err(|e| local(&e, "socket"))?;
    // Where the error queue is not available the errno alone classifies.
    errqueue::enable(&socket, target.is_ipv6());
    if let Some(source) = source {
        if source.is_ipv4() != target.is_ipv4() {
            return Err(Box::new(UdpResult::new(
                Observed::LocalError,
                format!("source address {source} is not of the target's address family"),
            )));
        }
        socket
            .bind(&SockAddr::from(SocketAddr::new(source, 0)))
            .map_err(|e| local(&e, &format!("bind source {source}")))?;
    }
    if let Err(e) = socket.connect(&SockAddr::from(target)) {
        // Connecting a UDP socket only picks a route: "no route" here is
        // this host's own answer about the path.
        let (outcome, detail) = classify(&e, None, target.ip());
        let mut r = UdpResult::new(outcome, detail);
        r.errno = e.raw_os_error();
        if outcome == Observed::LocalError {
            r.detail = format!("connect: {}", error_detail(&e));
            r.transient = matches!(classify_connect_error(&e), ConnectClass::LocalTransient);
        }
        return Err(Box::new(r));
    }
    UdpSocket::from_std(socket.into()).map_err(|e| local(&e, "register socket"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: SocketAddr, attempts: u32, ms: u64) -> UdpRequest<'static> {
        UdpRequest {
            target,
            source: None,
            payload: b"ping\n",
            attempts,
            timeout: Duration::from_millis(ms),
            spacing: Duration::from_millis(ms),
            sent_at: None,
        }
    }

    /// An echo socket on loopback answers: `open`, one datagram, one reply.
    #[tokio::test]
    async fn an_echo_socket_is_open() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = echo.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let (n, from) = echo.recv_from(&mut buf).await.unwrap();
            echo.send_to(&buf[..n], from).await.unwrap();
        });
        let r = exchange(&request(addr, 3, 2000), |b| b == b"ping\n").await;
        assert_eq!(r.outcome, Observed::Open, "{r:?}");
        assert_eq!((r.attempts, r.replies), (1, 1));
        assert_eq!(r.reply.as_deref(), Some(&b"ping\n"[..]));
        assert!(r.rtt.is_some());
        assert_eq!(r.local.map(|l| l.ip()), Some("127.0.0.1".parse().unwrap()));
        server.await.unwrap();
    }

    /// A reply `accept` rejects is not an answer: the exchange keeps
    /// waiting and ends silent.
    #[tokio::test]
    async fn a_rejected_reply_is_ignored() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = echo.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            for _ in 0..2 {
                let (_, from) = echo.recv_from(&mut buf).await.unwrap();
                echo.send_to(b"garbage", from).await.unwrap();
            }
            echo
        });
        let r = exchange(&request(addr, 2, 150), |b| b == b"ping\n").await;
        assert_eq!(r.outcome, Observed::Timeout, "{r:?}");
        assert_eq!(r.silence.map(|s| s.waited_ms), Some(150));
        assert_eq!((r.attempts, r.replies), (2, 0));
        assert!(r.detail.contains("2 datagrams"), "{}", r.detail);
        drop(server.await.unwrap());
    }

    /// A closed loopback port answers with ICMP port-unreachable from
    /// 127.0.0.1: `refused`, with that evidence, after one datagram.
    #[tokio::test]
    async fn a_closed_port_is_refused_by_icmp() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let r = exchange(&request(addr, 3, 2000), |_| true).await;
        assert_eq!(r.outcome, Observed::Refused, "{r:?}");
        assert_eq!(r.attempts, 1);
        let icmp = r.icmp.expect("the ICMP error is evidence");
        assert_eq!(icmp.kind, "port-unreachable");
        assert_eq!(icmp.from, "127.0.0.1");
        assert_eq!(r.errno, Some(libc::ECONNREFUSED));
        assert_eq!(r.silence, None);
    }

    /// A socket that reads and never answers: every attempt is sent, then
    /// `timeout`, within the attempts' time.
    #[tokio::test]
    async fn a_socket_that_never_answers_times_out_after_every_attempt() {
        let sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sink.local_addr().unwrap();
        let counter = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut n = 0;
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(800), sink.recv_from(&mut buf)).await
            {
                n += 1;
            }
            n
        });
        let started = Instant::now();
        let r = exchange(&request(addr, 3, 100), |_| true).await;
        assert_eq!(r.outcome, Observed::Timeout, "{r:?}");
        assert_eq!((r.attempts, r.replies), (3, 0));
        assert!(r.icmp.is_none());
        assert_eq!(r.errno, None);
        assert_eq!(
            r.silence,
            Some(crate::probe::Silence {
                waited_ms: 100,
                adaptive: false,
                possibly_rate_limited: false,
            })
        );
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_eq!(
            counter.await.unwrap(),
            3,
            "every datagram reached the socket"
        );
    }

    /// A late reply to the first datagram, arriving while the second
    /// waits, is still an answer.
    #[tokio::test]
    async fn a_late_reply_to_an_earlier_datagram_counts() {
        let slow = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = slow.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let (n, from) = slow.recv_from(&mut buf).await.unwrap();
            tokio::time::sleep(Duration::from_millis(250)).await;
            slow.send_to(&buf[..n], from).await.unwrap();
            slow
        });
        let r = exchange(
            &UdpRequest {
                spacing: Duration::from_millis(200),
                sent_at: None,
                ..request(addr, 3, 100)
            },
            |_| true,
        )
        .await;
        assert_eq!(r.outcome, Observed::Open, "{r:?}");
        assert_eq!(r.attempts, 2, "{r:?}");
        drop(server.await.unwrap());
    }

    #[tokio::test]
    async fn a_source_of_the_other_family_is_a_local_error() {
        let mut req = request("127.0.0.1:9".parse().unwrap(), 1, 100);
        req.source = Some("::1".parse().unwrap());
        let r = exchange(&req, |_| true).await;
        assert_eq!(r.outcome, Observed::LocalError);
        assert_eq!(r.attempts, 0);
        assert!(r.detail.contains("address family"), "{}", r.detail);
        assert_eq!((r.errno, r.silence), (None, None));
    }

    /// A source address this host does not have fails at bind: a local
    /// error whose errno is kept (nothing is sent).
    #[tokio::test]
    async fn a_source_that_is_not_local_keeps_its_errno() {
        let mut req = request("127.0.0.1:9".parse().unwrap(), 1, 100);
        req.source = Some("198.18.0.1".parse().unwrap());
        let r = exchange(&req, |_| true).await;
        assert_eq!(r.outcome, Observed::LocalError, "{r:?}");
        assert_eq!(r.errno, Some(libc::EADDRNOTAVAIL));
        assert_eq!(r.silence, None);
        assert_eq!(
            r.detail,
            "bind source 198.18.0.1: EADDRNOTAVAIL (local address or ephemeral port not available)"
        );
    }
}
