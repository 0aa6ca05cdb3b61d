//! Canary listeners and the nonce exchange: during a round an agent holds a
//! listener on each planned port of its host, and every prober that gets
//! through says which round and nonce it carries, so that "open" means the
//! intended host saw that very connection, from a known source.
//!
//! The exchange is one short line each way, bounded in bytes and time on
//! both sides:
//!
//! ```text
//! prober -> canary   PORTCALL <round> <nonce>
//! canary -> prober   PORTCALL-OK <host> <nonce>      (or PORTCALL-ERR <host> <why>)
//! ```
//!
//! A canary cannot be flooded into lies: each holds at most as many
//! connections as the round makes it expect plus headroom; a connection
//! must send its line within a short deadline; when full, the oldest
//! connection that has sent nothing yet is shed (then, if every one has,
//! the newcomer), and the evidence counts what was shed. A prober whose
//! connection closes without a byte of answer retries, and reports the
//! path as shed, never as `wrong-host`: only something that answered and
//! is not our canary is another host.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::{ListenerReport, ListenerState, Sighting, TransportProtocol};
use crate::port::Protocol;
use crate::probe::{Exchange, ExchangeContext, ExchangeFuture, ExchangeOutcome, ProbeStream};

pub use super::canary_common::{CanaryOptions, EvidenceLog, PlannedPort};
use super::canary_common::{Decision, bind_failure, decide, elsewhere_detail};
use super::listening::{CanaryMark, Listening};
// The exchange's line grammar lives in the probe layer (`probe::canary_line`),
// which every prober that carries a nonce speaks too.
use crate::probe::canary_line::{
    Answer, MAX_LINE, parse_answer, parse_probe_line, parse_sample_line, probe_line, sample_answer,
};

/// Reads one line of at most [`MAX_LINE`] bytes; `None` if the peer closed
/// or sent too much without a newline.
async fn read_line<S: AsyncRead + Unpin + ?Sized>(s: &mut S) -> Option<String> {
    read_line_counted(s).await.0
}

/// [`read_line`], also saying how many bytes arrived (zero: the peer said
/// nothing at all before closing).
async fn read_line_counted<S: AsyncRead + Unpin + ?Sized>(s: &mut S) -> (Option<String>, usize) {
    read_line_after(s, &[]).await
}

/// [`read_line_counted`] of a line whose first bytes, `first` (no newline
/// among them, at most [`MAX_LINE`]), were read already.
async fn read_line_after<S: AsyncRead + Unpin + ?Sized>(
    s: &mut S,
    first: &[u8],
) -> (Option<String>, usize) {
    let mut buf = [0u8; MAX_LINE];
    let mut n = first.len().min(MAX_LINE);
    buf[..n].copy_from_slice(&first[..n]);
    while n < buf.len() {
        match s.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => return (None, n),
            Ok(k) => {
                n += k;
                if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
                    return (std::str::from_utf8(&buf[..i]).ok().map(str::to_string), n);
                }
            }
        }
    }
    (None, n)
}

/// Opens a canary on each port at every one of `ips` (the host's
/// addresses), serving until `deadline` (the round's TTL) or until `cancel`
/// fires, whichever comes first. `listening` is the host's sockets on the
/// planned ports (`None` where they cannot be listed): a port another
/// process holds at one of the addresses is reported as held, never taken
/// over; a port it holds only elsewhere gets no canary (`failed`, with the
/// sockets in `elsewhere`), so that the path meets what clients meet.
pub fn open_canaries(
    ips: &[IpAddr],
    ports: &[PlannedPort],
    listening: Option<&Listening>,
    options: &CanaryOptions,
    deadline: Instant,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> (Vec<ListenerReport>, Arc<EvidenceLog>) {
    let log = Arc::new(EvidenceLog::default());
    let mut reports = Vec::with_capacity(ports.len());
    for p in ports {
        if p.protocol == Protocol::Udp {
            reports.push(super::udp_canary::open(
                ips, p, listening, options, &log, deadline, cancel, tracker,
            ));
            continue;
        }
        let mut elsewhere = Vec::new();
        let (state, detail) = match decide(listening, ips, p.port, TransportProtocol::Tcp) {
            Decision::Live(detail) => (ListenerState::Held, detail),
            Decision::Elsewhere(sockets) => {
                let detail = elsewhere_detail(&sockets);
                elsewhere = sockets;
                (ListenerState::Failed, detail)
            }
            Decision::Canary => {
                open_tcp(ips, p, listening, options, &log, deadline, cancel, tracker)
            }
        };
        reports.push(ListenerReport {
            port: p.port,
            protocol: p.protocol,
            service: p.service.clone(),
            state,
            detail,
            elsewhere,
        });
    }
    (reports, log)
}

/// The host's sockets on `ports`, this agent's own left out (and an
/// earlier round's canaries waited for): the input of [`open_canaries`],
/// so that no canary opens beside a service that listens elsewhere.
/// `None` where the host's sockets cannot be listed.
pub(super) async fn survey(ips: &[IpAddr], ports: &[PlannedPort]) -> Option<Listening> {
    super::listening::survey(ips, ports.iter().map(|p| (p.port, p.protocol))).await
}

/// The TCP canary of `p` on every one of `ips`, or none: listeners already
/// bound on other addresses close when one bind fails.
#[allow(clippy::too_many_arguments)]
fn open_tcp(
    ips: &[IpAddr],
    p: &PlannedPort,
    listening: Option<&Listening>,
    options: &CanaryOptions,
    log: &Arc<EvidenceLog>,
    deadline: Instant,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> (ListenerState, String) {
    let mut listeners = Vec::with_capacity(ips.len());
    for ip in ips {
        let addr = SocketAddr::new(*ip, p.port);
        match bind(addr) {
            Ok(listener) => listeners.push(listener),
            Err(e) => {
                return bind_failure(addr, p.port, &e, own_leftover(listening, ips, p.port));
            }
        }
    }
    log.open(p.port, TransportProtocol::Tcp);
    for listener in listeners {
        // Our own while it serves: never taken for a service, even by a
        // later round that starts before this one has closed.
        let mark = CanaryMark::of(&listener);
        let serving = serve(
            listener,
            p.protocol,
            options.clone(),
            log.clone(),
            deadline,
            cancel.clone(),
        );
        tracker.spawn(async move {
            serving.await;
            drop(mark);
        });
    }
    (ListenerState::Canary, String::new())
}

/// Whether this agent's own socket (an earlier round's canary still
/// closing) holds `port` at one of `ips`.
fn own_leftover(listening: Option<&Listening>, ips: &[IpAddr], port: u16) -> bool {
    listening.is_some_and(|l| l.own_on(ips, port, TransportProtocol::Tcp))
}

/// Binds a listener without SO_REUSEPORT, so that a port some service
/// listens on fails with EADDRINUSE instead of being shared. SO_REUSEADDR
/// only lets us rebind past connections lingering in TIME_WAIT; Linux still
/// refuses it while anything listens there.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    // A deep accept queue: a flood of strangers waits there (and is shed
    // once accepted) instead of making the kernel drop a prober's SYN.
    socket.listen(4096)?;
    // Quick ACKs off, which accepted connections inherit: the prober's
    // line is acknowledged by the reply that follows it at once, not by a
    // packet of its own. Set after `listen`, which resets it. An
    // optimisation only, so a refusal is ignored.
    #[cfg(target_os = "linux")]
    let _ = socket.set_tcp_quickack(false);
    TcpListener::from_std(socket.into())
}

/// A connection a canary holds, until it has sent its line.
#[derive(Debug)]
struct Held {
    id: u64,
    /// When the peer sent its first bytes, in milliseconds after the
    /// canary opened, plus one; zero while it has sent nothing.
    spoke: Arc<AtomicU64>,
    shed: CancellationToken,
}

/// How long a connection that has started talking may take to finish its
/// line before a newcomer may push it out. A prober sends the whole line
/// (after TLS, a few round trips) within milliseconds.
const SPEAKING_GRACE_MS: u64 = 250;

/// Makes room for one more connection at `now_ms`: sheds the oldest
/// connection that has sent nothing, else the oldest that started talking
/// long ago without finishing its line, else reports that the newcomer
/// must go.
fn make_room(held: &mut VecDeque<Held>, limit: usize, now_ms: u64) -> Result<Option<Held>, ()> {
    if held.len() < limit.max(1) {
        return Ok(None);
    }
    let idle = held
        .iter()
        .position(|h| h.spoke.load(Ordering::Relaxed) == 0);
    let stalled = || {
        held.iter().position(|h| {
            let at = h.spoke.load(Ordering::Relaxed);
            at != 0 && now_ms + 1 >= at + SPEAKING_GRACE_MS
        })
    };
    match idle.or_else(stalled) {
        Some(i) => Ok(held.remove(i)),
        None => Err(()),
    }
}

async fn serve(
    listener: TcpListener,
    protocol: Protocol,
    options: CanaryOptions,
    log: Arc<EvidenceLog>,
    deadline: Instant,
    cancel: CancellationToken,
) {
    let port = listener.local_addr().map_or(0, |a| a.port());
    let conns = TaskTracker::new();
    let held: Arc<Mutex<VecDeque<Held>>> = Arc::default();
    let mut next_id = 0u64;
    let opened = Instant::now();
    let ms = move || u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
    // Holds a connection whose line is not all there: a task of its own
    // answers it, within the canary's room.
    let mut hold = |stream: TcpStream, peer: SocketAddr, first: Vec<u8>| {
        // Full: the oldest connection that has sent nothing goes;
        // when every one has spoken, the newcomer goes. Either way
        // the evidence says the canary shed a connection.
        let room = {
            let mut h = held.lock().unwrap_or_else(|e| e.into_inner());
            make_room(&mut h, options.per_canary, ms())
        };
        match room {
            Ok(None) => {}
            Ok(Some(victim)) => {
                victim.shed.cancel();
                log.shed(port);
            }
            Err(()) => {
                log.shed(port);
                return;
            }
        }
        // Over the agent-wide memory bound: closed unanswered.
        let Ok(permit) = options.connections.clone().try_acquire_owned() else {
            log.shed(port);
            return;
        };
        next_id += 1;
        let id = next_id;
        let spoke = Arc::new(AtomicU64::new(0));
        let shed = CancellationToken::new();
        held.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(Held {
                id,
                spoke: spoke.clone(),
                shed: shed.clone(),
            });
        let (options, log, held) = (options.clone(), log.clone(), held.clone());
        conns.spawn(async move {
            let _permit = permit;
            let limit = options.exchange_timeout;
            let talk = async {
                // Wait for the first bytes before anything else, so
                // that an idle connection is known as one.
                let mut peeked = [0u8; 1];
                if !first.is_empty() || matches!(stream.peek(&mut peeked).await, Ok(n) if n > 0) {
                    spoke.store(ms() + 1, Ordering::Relaxed);
                    answer(stream, &first, peer, port, protocol, &options, &log).await;
                }
            };
            tokio::select! {
                () = shed.cancelled() => {}
                _ = timeout(limit, talk) => {}
            }
            held.lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|h| h.id != id);
        });
    };
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = sleep_until(deadline) => {
                tracing::info!(port, "canary closed: round TTL passed");
                break;
            }
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                // A prober's line rides the handshake's last ACK, so it is
                // usually there when the connection is accepted: answered
                // at once, on this loop, with no task, timer or room of its
                // own (so never shed either).
                if protocol != Protocol::Tcp {
                    hold(stream, peer, Vec::new());
                    continue;
                }
                if let AtOnce::Later(read) = answer_at_once(&stream, peer, port, &options, &log) {
                    hold(stream, peer, read);
                }
                // More connections may wait behind this one: they are taken
                // straight from the backlog, and those whose line is there
                // are answered without ever being registered with the
                // runtime (two `epoll_ctl` calls saved each).
                for (waiting, peer, read) in drain_backlog(&listener, port, &options, &log) {
                    hold(waiting, peer, read);
                }
            }
        }
    }
    drop(listener);
    conns.close();
    // Connections in flight finish within their own exchange deadline.
    let _ = timeout(options.exchange_timeout, conns.wait()).await;
}

/// What [`answer_at_once`] did with a newly accepted connection.
enum AtOnce {
    /// Answered (or found closed): nothing more to do.
    Done,
    /// Its line is not all there yet: the bytes read so far (perhaps none).
    Later(Vec<u8>),
}

/// Reads a TCP canary's newly accepted connection without waiting, and
/// when the whole line is there, answers it and closes (as [`answer`]
/// would). A peer that closed, or reset, before sending anything is done
/// with, as a canary that waited for its first bytes would be.
fn answer_at_once(
    stream: &impl AsFd,
    peer: SocketAddr,
    port: u16,
    options: &CanaryOptions,
    log: &EvidenceLog,
) -> AtOnce {
    use nix::sys::socket::{MsgFlags, recv};
    let mut buf = [0u8; MAX_LINE];
    let fd = stream.as_fd().as_raw_fd();
    let n = match recv(fd, &mut buf, MsgFlags::MSG_DONTWAIT) {
        Ok(0) => return AtOnce::Done,
        Ok(n) => n,
        Err(nix::errno::Errno::EAGAIN) => return AtOnce::Later(Vec::new()),
        Err(_) => return AtOnce::Done,
    };
    let Some(end) = buf[..n].iter().position(|&b| b == b'\n') else {
        // Part of a line (or too long a one): the task reads the rest.
        return AtOnce::Later(buf[..n].to_vec());
    };
    let line = std::str::from_utf8(&buf[..end]).ok();
    let reply = reply(line, peer, port, options, log);
    // A fresh connection's send buffer takes a line; where it did not,
    // the peer gets no answer and retries, as after a shed.
    if send_held(stream, reply.as_bytes()) == reply.len() {
        let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
    }
    AtOnce::Done
}

async fn answer(
    stream: TcpStream,
    first: &[u8],
    peer: SocketAddr,
    port: u16,
    protocol: Protocol,
    options: &CanaryOptions,
    log: &EvidenceLog,
) {
    match protocol {
        Protocol::Tcp => {
            let mut stream = stream;
            let (line, _) = read_line_after(&mut stream, first).await;
            let reply = reply(line.as_deref(), peer, port, options, log);
            send_last(&mut stream, reply.as_bytes()).await;
        }
        Protocol::Tls => {
            // A quality sample of a TLS path (`check --samples`) is a TCP
            // sample: its line comes in the clear, where a TLS client's
            // first byte is a handshake record's (0x16).
            let mut first = [0u8; 1];
            if matches!(stream.peek(&mut first).await, Ok(1)) && first[0] == b'P' {
                let mut stream = stream;
                let reply = sample_only(&mut stream, port, options, log).await;
                send_last(&mut stream, reply.as_bytes()).await;
                return;
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(options.tls.clone());
            match acceptor.accept(stream).await {
                Ok(mut tls) => {
                    let reply = talk(&mut tls, peer, port, options, log).await;
                    let _ = tls.write_all(reply.as_bytes()).await;
                    let _ = tls.flush().await;
                    let _ = tls.shutdown().await;
                }
                Err(_) => log.record(port, None, options.max_sightings),
            }
        }
        // UDP ports never get a TCP listener (see `udp_canary`).
        Protocol::Udp => drop(stream),
    }
}

/// A line in the clear on a TLS canary: answered when it is a quality
/// sample of this round's, else a stranger (as a failed handshake is).
async fn sample_only(
    s: &mut TcpStream,
    port: u16,
    options: &CanaryOptions,
    log: &EvidenceLog,
) -> String {
    let line = read_line(s).await;
    match line
        .as_deref()
        .and_then(parse_sample_line)
        .filter(|(round, nonce, _)| valid(options, round, nonce))
    {
        Some((_, nonce, seq)) => sample_answer(nonce, seq),
        None => {
            log.record(port, None, options.max_sightings);
            format!("PORTCALL-ERR {} bad-line\n", options.host)
        }
    }
}

/// Whether `nonce` is one of `round`, this canary's, made under its key.
fn valid(options: &CanaryOptions, round: &str, nonce: &str) -> bool {
    round == &*options.round
        && options
            .nonce_key
            .as_ref()
            .is_none_or(|k| k.verify(round, nonce))
}

/// Reads the prober's line on `s`, records what it carried, and returns
/// the reply to send (the caller sends it and closes).
async fn talk<S: AsyncRead + Unpin>(
    s: &mut S,
    peer: SocketAddr,
    port: u16,
    options: &CanaryOptions,
    log: &EvidenceLog,
) -> String {
    let line = read_line(s).await;
    reply(line.as_deref(), peer, port, options, log)
}

/// Records what the prober's `line` (`None`: none came whole) carried and
/// returns the reply to send.
fn reply(
    line: Option<&str>,
    peer: SocketAddr,
    port: u16,
    options: &CanaryOptions,
    log: &EvidenceLog,
) -> String {
    // A quality sample of a path whose nonce this canary recorded: its
    // handshake was the measurement; answered, never a stray nor a
    // sighting (a sample carries the nonce again).
    if let Some((_, nonce, seq)) = line
        .and_then(parse_sample_line)
        .filter(|(round, nonce, _)| valid(options, round, nonce))
    {
        return sample_answer(nonce, seq);
    }
    match line.and_then(parse_probe_line) {
        Some((round, nonce)) if valid(options, round, nonce) => {
            log.record(
                port,
                Some(Sighting {
                    nonce: nonce.into(),
                    source: peer,
                    datagrams: 0,
                    samples: 0,
                }),
                options.max_sightings,
            );
            format!("PORTCALL-OK {} {nonce}\n", options.host)
        }
        Some((round, _)) if round == &*options.round => {
            // Our round's id with a nonce not made under its key: forged.
            log.record(port, None, options.max_sightings);
            format!("PORTCALL-ERR {} bad-nonce\n", options.host)
        }
        Some(_) => {
            log.record(port, None, options.max_sightings);
            format!("PORTCALL-ERR {} not-this-round\n", options.host)
        }
        None => {
            log.record(port, None, options.max_sightings);
            format!("PORTCALL-ERR {} bad-line\n", options.host)
        }
    }
}

/// Sends the canary's last bytes and closes its side, in one packet where
/// the kernel allows ([`send_held`]). Whatever the non-blocking send did
/// not take is written the usual way.
async fn send_last(stream: &mut TcpStream, bytes: &[u8]) {
    let sent = send_held(stream, bytes);
    if let Some(rest) = bytes.get(sent..).filter(|r| !r.is_empty()) {
        let _ = stream.write_all(rest).await;
    }
    let _ = stream.shutdown().await;
}

/// Sends what the non-blocking socket takes of the canary's last bytes
/// now, held back (`MSG_MORE`) until the shutdown that follows lets its
/// FIN ride on them: how many it took (0 on an error).
fn send_held(stream: &impl AsFd, bytes: &[u8]) -> usize {
    let sock = socket2::SockRef::from(stream);
    // Never waits, on a socket the runtime has not made non-blocking too.
    #[cfg(target_os = "linux")]
    let sent = sock.send_with_flags(bytes, libc::MSG_MORE | libc::MSG_DONTWAIT);
    #[cfg(not(target_os = "linux"))]
    let sent = sock.send_with_flags(bytes, libc::MSG_DONTWAIT);
    sent.unwrap_or(0)
}

/// Most connections one wake of a TCP canary takes from its backlog past
/// the one the runtime handed it: then the loop looks at its other
/// branches (the round's end) again.
const DRAIN_AT_ONCE: usize = 64;

/// Takes the connections waiting in `listener`'s backlog without the
/// runtime (until none waits, or [`DRAIN_AT_ONCE`]), answers those whose
/// line is there ([`answer_at_once`]), and gives back the others,
/// registered with the runtime now, with what each sent so far.
fn drain_backlog(
    listener: &TcpListener,
    port: u16,
    options: &CanaryOptions,
    log: &EvidenceLog,
) -> Vec<(TcpStream, SocketAddr, Vec<u8>)> {
    let mut later = Vec::new();
    let backlog = socket2::SockRef::from(listener);
    for _ in 0..DRAIN_AT_ONCE {
        // The runtime made the listener non-blocking: an empty backlog
        // says so at once.
        let Ok((conn, from)) = backlog.accept() else {
            break;
        };
        let Some(peer) = from.as_socket() else {
            continue;
        };
        if let AtOnce::Later(read) = answer_at_once(&conn, peer, port, options, log) {
            let conn = std::net::TcpStream::from(conn);
            if let Ok(stream) = conn
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(conn))
            {
                later.push((stream, peer, read));
            }
        }
    }
    later
}

/// The prober's side of the exchange, for one sweep: per target, the nonce
/// to send and the host expected to answer (no nonce: probed live, nothing
/// to exchange).
#[derive(Debug)]
pub struct NonceExchange {
    round: String,
    slots: Vec<Option<(String, String)>>,
    answered: Mutex<Vec<Option<String>>>,
}

impl NonceExchange {
    /// An exchange for targets whose `slots[i]` is `Some((nonce,
    /// expected_host))` where a canary should answer.
    pub fn new(round: String, slots: Vec<Option<(String, String)>>) -> NonceExchange {
        let answered = Mutex::new(vec![None; slots.len()]);
        NonceExchange {
            round,
            slots,
            answered,
        }
    }

    /// The host that answered target `i`, if any did.
    pub fn answered_by(&self, i: usize) -> Option<String> {
        let a = self.answered.lock().unwrap_or_else(|e| e.into_inner());
        a.get(i).cloned().flatten()
    }

    fn note(&self, i: usize, host: &str) {
        let mut a = self.answered.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = a.get_mut(i) {
            *slot = Some(host.to_string());
        }
    }

    async fn run(&self, i: usize, stream: &mut dyn ProbeStream) -> ExchangeOutcome {
        let Some(Some((nonce, expected))) = self.slots.get(i) else {
            return ExchangeOutcome::Confirmed {
                detail: String::new(),
            };
        };
        if stream
            .write_all(probe_line(&self.round, nonce).as_bytes())
            .await
            .is_err()
        {
            return ExchangeOutcome::Unanswered {
                detail: format!(
                    "connected, but the connection closed before the nonce was sent (the canary of {expected} may be shedding load)"
                ),
            };
        }
        let _ = stream.flush().await;
        let (line, bytes) = read_line_counted(stream).await;
        if line.is_none() && bytes == 0 {
            return ExchangeOutcome::Unanswered {
                detail: format!(
                    "connected, but the connection closed without an answer (the canary of {expected} may be shedding load)"
                ),
            };
        }
        match line.as_deref().and_then(parse_answer) {
            Some(Answer::Ok {
                host,
                nonce: echoed,
            }) => {
                self.note(i, &host);
                if host != *expected {
                    ExchangeOutcome::WrongHost {
                        detail: format!("answered by the agent of {host}, not {expected}"),
                    }
                } else if echoed != *nonce {
                    ExchangeOutcome::WrongHost {
                        detail: format!("the canary of {host} echoed another nonce"),
                    }
                } else {
                    ExchangeOutcome::Confirmed {
                        detail: String::new(),
                    }
                }
            }
            Some(Answer::Err { host, reason }) => {
                self.note(i, &host);
                ExchangeOutcome::WrongHost {
                    detail: format!("the agent of {host} refused our nonce ({reason})"),
                }
            }
            None => ExchangeOutcome::WrongHost {
                detail: format!("connected, but no canary of {expected} answered"),
            },
        }
    }
}

impl Exchange for NonceExchange {
    fn speaks_first(&self, index: usize) -> bool {
        matches!(self.slots.get(index), Some(Some(_)))
    }

    fn exchange<'a>(
        &'a self,
        context: ExchangeContext<'a>,
        stream: &'a mut dyn ProbeStream,
    ) -> ExchangeFuture<'a> {
        Box::pin(self.run(context.index, stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::Semaphore;

    #[tokio::test]
    async fn a_canary_that_closes_unanswered_is_retried_and_never_wrong_host() {
        use crate::probe::{Host, Observed, ProbeConfig, Prober, Target};
        // One listener closes every connection unanswered (a canary
        // shedding load), one answers as another host.
        let closer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ports = [&closer, &other].map(|l| l.local_addr().unwrap().port());
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = closer.accept().await else {
                    return;
                };
                drop(s);
            }
        });
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = other.accept().await else {
                    return;
                };
                let _ = read_line(&mut s).await;
                let _ = s.write_all(b"PORTCALL-OK web 00\n").await;
            }
        });
        let slot = || Some(("00".to_string(), "db".to_string()));
        let exchange = Arc::new(NonceExchange::new("ab".into(), vec![slot(), slot()]));
        let config = ProbeConfig {
            connect_timeout: Duration::from_millis(300),
            tls_timeout: Duration::from_millis(300),
            exchange_timeout: Duration::from_millis(300),
            retries: 0,
            ..ProbeConfig::default()
        };
        let prober = Prober::with_exchange(config, exchange).unwrap();
        let targets = ports
            .iter()
            .map(|&p| {
                Target::new(
                    Host::Ip("127.0.0.1".parse().unwrap()),
                    crate::port::Port::new(p).unwrap(),
                    Protocol::Tcp,
                )
            })
            .collect();
        let r = prober
            .sweep(targets, &CancellationToken::new(), |_, _| {})
            .await;
        assert!(r[0].shed && r[0].attempts == 6, "{:?}", r[0]);
        assert!(!r[1].shed, "{:?}", r[1]);
        assert_eq!(r[1].observed, Observed::WrongHost);
        assert!(
            r[1].detail.contains("answered by the agent of web"),
            "{}",
            r[1].detail
        );
    }

    /// A TCP canary of host `db` in round `abcd` on a free loopback port,
    /// holding at most `per_canary` connections: its address, port,
    /// evidence, and what stops and awaits it.
    fn db_canary(
        per_canary: usize,
    ) -> (
        IpAddr,
        u16,
        Arc<EvidenceLog>,
        CancellationToken,
        TaskTracker,
    ) {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let free = std::net::TcpListener::bind((ip, 0)).unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let options = CanaryOptions {
            host: "db".into(),
            round: "abcd".into(),
            tls: crate::pki::self_signed_canary_config("db").unwrap(),
            exchange_timeout: Duration::from_secs(5),
            max_sightings: 16,
            connections: Arc::new(Semaphore::new(1000)),
            per_canary,
            nonce_key: None,
        };
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        let ports = [PlannedPort {
            port,
            protocol: Protocol::Tcp,
            service: "mysql".into(),
        }];
        let deadline = Instant::now() + Duration::from_secs(30);
        let (_, log) = open_canaries(&[ip], &ports, None, &options, deadline, &cancel, &tracker);
        (ip, port, log, cancel, tracker)
    }

    /// That `got` is host `db`'s answer to `nonce` (the canary's evidence
    /// shown when it is not).
    fn assert_answered(got: Option<&str>, nonce: &str, log: &EvidenceLog) {
        let want = format!("PORTCALL-OK db {nonce}");
        assert_eq!(got, Some(want.as_str()), "{:?}", log.snapshot());
    }

    #[tokio::test]
    async fn a_full_canary_sheds_idle_strangers_first_and_still_answers_a_prober() {
        let (ip, port, log, cancel, tracker) = db_canary(4);
        // Twenty idle strangers: the canary keeps four at most.
        let mut idle = Vec::new();
        for _ in 0..20 {
            idle.push(TcpStream::connect((ip, port)).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut s = TcpStream::connect((ip, port)).await.unwrap();
        s.write_all(probe_line("abcd", "0011").as_bytes())
            .await
            .unwrap();
        let got = read_line(&mut s).await;
        assert_answered(got.as_deref(), "0011", &log);
        let ev = log.snapshot();
        assert_eq!(ev[0].seen.len(), 1);
        assert!(ev[0].shed >= 16, "{ev:?}");
        // Shed strangers were closed, not kept.
        let mut closed = 0;
        for mut c in idle {
            let mut b = [0u8; 1];
            if let Ok(Ok(0) | Err(_)) = timeout(Duration::from_millis(50), c.read(&mut b)).await {
                closed += 1;
            }
        }
        assert!(closed >= 16, "{closed} closed");
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }

    /// A prober's line that rides the handshake's last ACK (quick ACKs
    /// off, as the engine's sockets have them) is there when the canary
    /// accepts: answered on the accept loop, so even a canary whose every
    /// place is held by strangers still in their grace, which sheds a
    /// newcomer that has to wait for its line, answers it and sheds no one.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_line_there_on_accept_is_answered_at_once_even_when_the_canary_is_full() {
        let (ip, port, log, cancel, tracker) = db_canary(2);
        // Two strangers that started a line and have not finished it: the
        // canary's two places, in their grace.
        let mut talking = Vec::new();
        for _ in 0..2 {
            let mut c = TcpStream::connect((ip, port)).await.unwrap();
            c.write_all(b"PORTCALL abcd").await.unwrap();
            talking.push(c);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let prober = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        prober.set_tcp_quickack(false).unwrap();
        prober.connect(&SocketAddr::new(ip, port).into()).unwrap();
        let line = probe_line("abcd", "0011");
        assert_eq!(prober.send(line.as_bytes()).unwrap(), line.len());
        prober.set_nonblocking(true).unwrap();
        let mut s = TcpStream::from_std(std::net::TcpStream::from(prober)).unwrap();
        let got = timeout(Duration::from_secs(2), read_line(&mut s))
            .await
            .unwrap();
        assert_answered(got.as_deref(), "0011", &log);
        let ev = log.snapshot();
        assert_eq!(ev[0].shed, 0, "{ev:?}");
        assert_eq!(ev[0].seen.len(), 1);
        // The strangers still hold their places: they finish and are answered.
        for mut c in talking {
            c.write_all(b" 0022\n").await.unwrap();
            let got = timeout(Duration::from_secs(2), read_line(&mut c))
                .await
                .unwrap();
            assert_eq!(got.as_deref(), Some("PORTCALL-OK db 0022"));
        }
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }

    /// Connections that queued up while the canary's loop was away are
    /// taken from the backlog in one wake: those whose line is there are
    /// answered at once, those still sending it are held and answered
    /// when it comes, and none is lost or shed.
    #[tokio::test]
    async fn a_backlog_of_connections_is_answered_in_one_wake() {
        let (ip, port, log, cancel, tracker) = db_canary(4);
        // The canary's loop has not run yet (one thread, not yielded):
        // every connection waits in the backlog, its line with it.
        let nonce = |k: usize| format!("{k:04x}");
        let mut ready = Vec::new();
        for k in 0..30 {
            let mut c = std::net::TcpStream::connect((ip, port)).unwrap();
            std::io::Write::write_all(&mut c, probe_line("abcd", &nonce(k)).as_bytes()).unwrap();
            ready.push(c);
        }
        let mut partial = Vec::new();
        for _ in 0..2 {
            let mut c = std::net::TcpStream::connect((ip, port)).unwrap();
            std::io::Write::write_all(&mut c, b"PORTCALL abcd").unwrap();
            partial.push(c);
        }
        let stream = |c: std::net::TcpStream| {
            c.set_nonblocking(true).unwrap();
            TcpStream::from_std(c).unwrap()
        };
        for (k, c) in ready.into_iter().enumerate() {
            let mut s = stream(c);
            let got = timeout(Duration::from_secs(2), read_line(&mut s))
                .await
                .unwrap();
            assert_answered(got.as_deref(), &nonce(k), &log);
        }
        for (k, c) in partial.into_iter().enumerate() {
            let mut s = stream(c);
            let rest = format!(" {}\n", nonce(100 + k));
            s.write_all(rest.as_bytes()).await.unwrap();
            let got = timeout(Duration::from_secs(2), read_line(&mut s))
                .await
                .unwrap();
            assert_answered(got.as_deref(), &nonce(100 + k), &log);
        }
        let ev = log.snapshot();
        assert_eq!(ev[0].shed, 0, "{ev:?}");
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }

    /// Regression (issue 26): a new round within the lease of a killed
    /// coordinator found the agent's own leftover canary on the port and
    /// reported "a real service holds the port" (`held`, probed live, so
    /// the path was `open` through the old canary). Our own socket is never
    /// a service: the round waits for it to close, and when it does not,
    /// the port is `failed`, never `held`; once it closes, a canary again.
    #[tokio::test]
    async fn the_agents_own_leftover_canary_is_never_a_live_service() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // This agent's own canary: what an earlier round left.
        let leftover = std::net::TcpListener::bind((ip, 0)).unwrap();
        let port = leftover.local_addr().unwrap().port();
        let mark = CanaryMark::of(&leftover);
        let options = CanaryOptions {
            host: "db".into(),
            round: "abcd".into(),
            tls: crate::pki::self_signed_canary_config("db").unwrap(),
            exchange_timeout: Duration::from_secs(2),
            max_sightings: 8,
            connections: Arc::new(Semaphore::new(8)),
            per_canary: 8,
            nonce_key: None,
        };
        let ports = [PlannedPort {
            port,
            protocol: Protocol::Tcp,
            service: "mysql".into(),
        }];
        let deadline = Instant::now() + Duration::from_secs(10);
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        // Closed while the round waits for it: the round holds a canary.
        let closing = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(leftover);
            drop(mark);
        });
        let started = std::time::Instant::now();
        let listing =
            super::super::listening::survey(&[ip], [(port, Protocol::Tcp)].into_iter()).await;
        closing.await.unwrap();
        let (reports, _) = open_canaries(
            &[ip],
            &ports,
            listing.as_ref(),
            &options,
            deadline,
            &cancel,
            &tracker,
        );
        assert_eq!(reports[0].state, ListenerState::Canary, "{reports:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        // Never closed: not a service either.
        let leftover = std::net::TcpListener::bind((ip, port)).unwrap();
        let mark = CanaryMark::of(&leftover);
        let listing =
            super::super::listening::survey(&[ip], [(port, Protocol::Tcp)].into_iter()).await;
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        let (reports, _) = open_canaries(
            &[ip],
            &ports,
            listing.as_ref(),
            &options,
            deadline,
            &cancel,
            &tracker,
        );
        assert_eq!(reports[0].state, ListenerState::Failed, "{reports:?}");
        assert!(
            reports[0].detail.contains("this agent's own canary"),
            "{reports:?}"
        );
        drop(leftover);
        drop(mark);
    }

    #[tokio::test]
    async fn a_dual_stack_host_holds_its_canary_on_every_address_or_on_none() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        if std::net::TcpListener::bind((v6, 0)).is_err() {
            // No IPv6 loopback here (some containers): nothing to test.
            return;
        }
        // A port free on both families.
        let port = loop {
            let l = std::net::TcpListener::bind((v4, 0)).unwrap();
            let port = l.local_addr().unwrap().port();
            drop(l);
            if std::net::TcpListener::bind((v6, port)).is_ok() {
                break port;
            }
        };
        let options = CanaryOptions {
            host: "db".into(),
            round: "abcd".into(),
            tls: crate::pki::self_signed_canary_config("db").unwrap(),
            exchange_timeout: Duration::from_secs(2),
            max_sightings: 8,
            connections: Arc::new(Semaphore::new(8)),
            per_canary: 8,
            nonce_key: None,
        };
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        let ports = [PlannedPort {
            port,
            protocol: Protocol::Tcp,
            service: "mysql".into(),
        }];
        let deadline = Instant::now() + Duration::from_secs(10);
        let (reports, log) = open_canaries(
            &[v4, v6],
            &ports,
            None,
            &options,
            deadline,
            &cancel,
            &tracker,
        );
        assert_eq!(reports[0].state, ListenerState::Canary, "{reports:?}");
        for (ip, nonce) in [(v4, "0001"), (v6, "0006")] {
            let mut s = TcpStream::connect((ip, port)).await.unwrap();
            s.write_all(probe_line("abcd", nonce).as_bytes())
                .await
                .unwrap();
            let reply = read_line(&mut s).await;
            assert_eq!(reply, Some(format!("PORTCALL-OK db {nonce}")), "{ip}");
        }
        let seen: Vec<(String, bool)> = log.snapshot()[0]
            .seen
            .iter()
            .map(|s| (s.nonce.to_string(), s.source.is_ipv4()))
            .collect();
        assert_eq!(
            seen,
            [("0001".to_string(), true), ("0006".to_string(), false)]
        );
        cancel.cancel();
        tracker.close();
        tracker.wait().await;

        // A service on the IPv6 address alone: the port is held, and the
        // IPv4 canary bound first is released again.
        let service = std::net::TcpListener::bind((v6, port)).unwrap();
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        let (reports, _) = open_canaries(
            &[v4, v6],
            &ports,
            None,
            &options,
            deadline,
            &cancel,
            &tracker,
        );
        assert_eq!(reports[0].state, ListenerState::Held, "{reports:?}");
        assert!(reports[0].detail.contains("[::1]"), "{reports:?}");
        assert!(std::net::TcpListener::bind((v4, port)).is_ok());
        drop(service);
    }

    #[tokio::test]
    async fn a_canary_records_nonces_with_their_source_and_answers_with_its_host() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // Port 0 asks the OS for a free port; find out which afterwards.
        let probe = std::net::TcpListener::bind((ip, 0)).unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let options = CanaryOptions {
            host: "db".into(),
            round: "abcd".into(),
            tls: crate::pki::self_signed_canary_config("db").unwrap(),
            exchange_timeout: Duration::from_secs(2),
            max_sightings: 2,
            connections: Arc::new(Semaphore::new(8)),
            per_canary: 8,
            nonce_key: None,
        };
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let ports = [PlannedPort {
            port,
            protocol: Protocol::Tcp,
            service: "mysql".into(),
        }];
        let deadline = Instant::now() + Duration::from_secs(10);
        let (reports, log) =
            open_canaries(&[ip], &ports, None, &options, deadline, &cancel, &tracker);
        assert_eq!(reports[0].state, ListenerState::Canary, "{reports:?}");

        // A second canary on the same port sees it held.
        let (again, _) = open_canaries(&[ip], &ports, None, &options, deadline, &cancel, &tracker);
        assert_eq!(again[0].state, ListenerState::Held, "{again:?}");

        let ask = |line: String| async move {
            let mut s = TcpStream::connect((ip, port)).await.unwrap();
            let local = s.local_addr().unwrap();
            s.write_all(line.as_bytes()).await.unwrap();
            (read_line(&mut s).await, local)
        };
        let (reply, local) = ask(probe_line("abcd", "0011")).await;
        assert_eq!(reply.as_deref(), Some("PORTCALL-OK db 0011"));
        let (reply, _) = ask(probe_line("ffff", "0022")).await;
        assert_eq!(reply.as_deref(), Some("PORTCALL-ERR db not-this-round"));
        // An overlong line is refused (or reset, when the canary closes
        // with our unread bytes still queued): never recorded.
        let (reply, _) = ask("x".repeat(500)).await;
        assert!(
            reply.is_none() || reply.as_deref() == Some("PORTCALL-ERR db bad-line"),
            "{reply:?}"
        );
        for n in ["0033", "0044"] {
            ask(probe_line("abcd", n)).await;
        }
        let ev = log.snapshot();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].seen[0].nonce.to_string(), "0011");
        assert_eq!(ev[0].seen[0].source, local);
        assert_eq!(ev[0].seen.len(), 2, "capped at max_sightings");
        assert_eq!(ev[0].dropped, 1);
        assert_eq!(ev[0].strays, 2);

        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        assert!(
            std::net::TcpListener::bind((ip, port)).is_ok(),
            "port freed"
        );
    }

    /// `check --samples` samples a TLS path as a TCP one: its canary
    /// answers the sample line sent in the clear and records nothing, while
    /// any other line in the clear is a stranger, as before.
    #[tokio::test]
    async fn a_tls_canary_answers_a_sample_line_in_the_clear() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let probe = std::net::TcpListener::bind((ip, 0)).unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let options = CanaryOptions {
            host: "km".into(),
            round: "abcd".into(),
            tls: crate::pki::self_signed_canary_config("km").unwrap(),
            exchange_timeout: Duration::from_secs(2),
            max_sightings: 4,
            connections: Arc::new(Semaphore::new(8)),
            per_canary: 8,
            nonce_key: None,
        };
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let ports = [PlannedPort {
            port,
            protocol: Protocol::Tls,
            service: "thrift".into(),
        }];
        let deadline = Instant::now() + Duration::from_secs(10);
        let (reports, log) =
            open_canaries(&[ip], &ports, None, &options, deadline, &cancel, &tracker);
        assert_eq!(reports[0].state, ListenerState::Canary, "{reports:?}");
        let ask = |line: String| async move {
            let mut s = TcpStream::connect((ip, port)).await.unwrap();
            s.write_all(line.as_bytes()).await.unwrap();
            read_line(&mut s).await
        };
        let line = crate::probe::canary_line::sample_line("abcd", "0011", 7);
        assert_eq!(
            ask(line).await.as_deref(),
            Some("PORTCALL-SAMPLE-OK 0011 7")
        );
        let other = crate::probe::canary_line::sample_line("ffff", "0011", 8);
        assert_eq!(
            ask(other).await.as_deref(),
            Some("PORTCALL-ERR km bad-line")
        );
        assert_eq!(
            ask(probe_line("abcd", "0022")).await.as_deref(),
            Some("PORTCALL-ERR km bad-line"),
            "a probe line must come through TLS"
        );
        let ev = log.snapshot();
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert!(ev[0].seen.is_empty(), "{ev:?}");
        assert_eq!(ev[0].strays, 2, "the sample is no stranger: {ev:?}");
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
