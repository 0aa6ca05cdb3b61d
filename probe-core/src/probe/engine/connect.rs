//! A TCP connect as one attempt needs it: a non-blocking socket with the
//! error queue on (bound to the source, with a small MSS when asked), and a
//! connect within a deadline that may move while it waits
//! ([`ConnectDeadline`]), reporting the raw errno, the queued ICMP error
//! and the round trip.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::report::{AttemptKind, Handshake, Quiet, SYN_RESEND};
use crate::probe::classify::{ConnectClass, classify_connect_error, error_detail};
use crate::probe::errqueue::{self, IcmpEvidence};
use crate::probe::sock_diag;

/// How long a connect waits for an answer.
#[derive(Clone)]
pub(super) enum ConnectDeadline {
    /// `timeout_ms`, whatever is measured.
    Fixed(Duration),
    /// The host's current adaptive timeout, which moves as its round trips
    /// are measured (also while the attempt waits).
    Adaptive(watch::Receiver<Duration>),
}

impl ConnectDeadline {
    pub(super) fn current(&self) -> Duration {
        match self {
            ConnectDeadline::Fixed(d) => *d,
            ConnectDeadline::Adaptive(rx) => *rx.borrow(),
        }
    }

    /// Resolves when the deadline may have moved.
    pub(super) async fn changed(&mut self) {
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

/// A non-blocking socket, bound to `source` when one is given, that queues
/// ICMP errors with their sender, and with maximum segment size `mss` when
/// one is given.
pub(super) fn open_socket(
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

/// How a connect stands the moment `connect` returns ([`start`]).
pub(super) enum Start {
    /// It failed at once: a reset or an ICMP error already processed (on
    /// loopback and nearby hosts the answer is often there before
    /// `connect` returns), or a local failure. With it, the ICMP error the
    /// socket's queue holds.
    Failed(std::io::Error, Option<IcmpEvidence>),
    /// It was refused at once, and the socket's error queue is left
    /// unread (see [`start`]'s `defer_refusal`): the socket is still open
    /// for it.
    Refused(std::io::Error, Socket),
    /// It connected at once, with its handshake.
    Connected(TcpStream, Handshake),
    /// It is in progress, since the instant given: [`finish`] waits for it.
    InProgress(TcpStream, Instant),
}

/// Starts connecting a non-blocking socket, without waiting: the answer is
/// often already there when `connect` returns (a reset, or a handshake with
/// a local or nearby host), so it is read straight away, and only a
/// connection still in progress is handed to the reactor. That spares most
/// refused ports two `epoll_ctl` calls and a wake-up, lets the scheduler's
/// loop finish them on its own thread, and keeps the reactor's scheduling
/// delay out of a local round trip. Errors carry the raw errno, from
/// `connect` or from `SO_ERROR` (where ICMP errors land), and the ICMP
/// error the socket's queue holds, read before the socket closes. With
/// `defer_refusal`, a refusal comes back with its socket instead, the
/// queue unread: the caller reads it only when some ICMP message may have
/// come ([`super::icmp_count`]).
/// `started` is the instant taken just before (the connect's start).
pub(super) fn start(
    socket: Socket,
    addr: SocketAddr,
    started: Instant,
    defer_refusal: bool,
) -> Start {
    let mut connected = None;
    let failed = |e: std::io::Error, socket: Socket| {
        if defer_refusal && e.raw_os_error() == Some(libc::ECONNREFUSED) {
            return Start::Refused(e, socket);
        }
        let icmp = errqueue::read(&socket);
        Start::Failed(e, icmp)
    };
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => connected = Some(started.elapsed()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            // Established already (a peer name exists only then): one
            // system call where the handshake finished inside `connect`,
            // as it mostly does to nearby hosts. Otherwise the error
            // `connect` left, or none: still in progress.
            if socket.peer_addr().is_ok() {
                connected = Some(started.elapsed());
            } else if let Ok(Some(e)) | Err(e) = socket.take_error() {
                return failed(e, socket);
            }
        }
        Err(e) => return failed(e, socket),
    }
    let stream = match TcpStream::from_std(socket.into()) {
        Ok(s) => s,
        Err(e) => return Start::Failed(e, None),
    };
    match connected {
        Some(seen) => {
            let handshake = kernel_rtt(&stream, seen);
            Start::Connected(stream, handshake)
        }
        None => Start::InProgress(stream, started),
    }
}

/// Above this, a connect's time as user space saw it is checked against
/// the kernel's own measure of the handshake ([`kernel_rtt`]); below it the
/// question would cost more than any deadline could gain.
pub(super) const ASK_KERNEL_AFTER: Duration = Duration::from_millis(1);

/// A connected stream's handshake: `seen` (from just before `connect` to
/// the moment this process got back to the socket), or, when that is
/// longer than [`ASK_KERNEL_AFTER`], the kernel's measure from its SYN
/// leaving to the SYN-ACK's processing if that is shorter. On a loaded
/// host most of `seen` is the wait for the CPU (inside `connect`, or until
/// the reactor runs), which is no round trip: a deadline built on it would
/// stretch every silent port's wait (see [`sock_diag`]). A handshake seen
/// to take [`SYN_RESEND`] or more was answered to a resent SYN unless the
/// kernel says it resent nothing (the CPU's wait again).
fn kernel_rtt(stream: &TcpStream, seen: Duration) -> Handshake {
    let info = (seen > ASK_KERNEL_AFTER)
        .then(|| sock_diag::tcp_info(stream.local_addr().ok()?, stream.peer_addr().ok()?))
        .flatten();
    Handshake {
        rtt: info.and_then(|i| i.rtt).map_or(seen, |k| k.min(seen)),
        resent: seen >= SYN_RESEND && info.is_none_or(|i| i.resent),
    }
}

/// What a connect came to: the stream and its handshake, or the error
/// (`None`: silence); the ICMP error the socket's queue held; the deadline
/// waited.
pub(super) type Connected = (
    Result<(TcpStream, Handshake), Option<std::io::Error>>,
    Option<IcmpEvidence>,
    Duration,
);

/// A connect begun by [`start`], to its end (see [`finish`] for one still
/// in progress).
pub(super) async fn complete(
    start: Start,
    deadline: ConnectDeadline,
    quiet: Option<(Quiet, Duration)>,
) -> Connected {
    match start {
        Start::Failed(e, icmp) => (Err(Some(e)), icmp, Duration::ZERO),
        Start::Refused(e, socket) => {
            let icmp = errqueue::read(&socket);
            (Err(Some(e)), icmp, Duration::ZERO)
        }
        Start::Connected(stream, handshake) => (Ok((stream, handshake)), None, Duration::ZERO),
        Start::InProgress(stream, started) => finish(stream, started, deadline, quiet).await,
    }
}

/// Waits for a connect in progress since `started` within `deadline`,
/// returning the stream and the connect round trip (SYN to SYN-ACK, as near
/// as user space can see it). Errors carry the raw errno from `SO_ERROR`;
/// `Err(None)` is silence. Beside the result comes the ICMP error the
/// socket's queue holds, read before the socket closes, and the deadline
/// waited.
///
/// An adaptive deadline is followed as it moves while the attempt waits.
/// When it passes, the socket itself is asked once more before the attempt
/// is called silent, so that a busy reactor that has not yet said
/// "writable" never turns an answered connect into silence. `quiet` is
/// called once the connect has waited its duration without an answer.
async fn finish(
    stream: TcpStream,
    started: Instant,
    mut deadline: ConnectDeadline,
    quiet: Option<(Quiet, Duration)>,
) -> Connected {
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
                let seen = started.elapsed();
                match stream.take_error() {
                    Ok(Some(e)) | Err(e) => break (Err(Some(e)), limit),
                    Ok(None) => {
                        let handshake = kernel_rtt(&stream, seen);
                        return (Ok((stream, handshake)), None, limit);
                    }
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
                        let handshake = kernel_rtt(&stream, started.elapsed());
                        return (Ok((stream, handshake)), None, limit);
                    }
                    Ok(None) => break (Err(None), limit),
                }
            }
        }
    };
    let icmp = errqueue::read(&stream);
    (r, icmp, waited)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handshake the process saw late (here: said to have taken five
    /// seconds) keeps the kernel's measure, which on loopback is far
    /// shorter; one seen within [`ASK_KERNEL_AFTER`] is taken as seen.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_late_seen_handshake_keeps_the_kernels_round_trip() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let late = Duration::from_secs(5);
        let h = kernel_rtt(&s, late);
        assert!(h.rtt < Duration::from_millis(500), "{h:?}");
        assert!(!h.resent, "the kernel resent nothing: {h:?}");
        let quick = Duration::from_micros(300);
        assert_eq!(
            kernel_rtt(&s, quick),
            Handshake {
                rtt: quick,
                resent: false
            }
        );
    }
}
