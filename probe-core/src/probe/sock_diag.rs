//! The kernel's socket tables through `NETLINK_SOCK_DIAG` (what `ss`
//! uses): the request and answer framing, one exchange with the kernel,
//! and the one question the prober asks of it, [`tcp_info`]: the round trip
//! the kernel measured for a connection's handshake, and whether it resent
//! its SYN.
//!
//! Binary records, no privilege needed, and only the caller's network
//! namespace. The agent's handshake watch and listener survey
//! (`agent::sock_diag`) dump tables through the same framing.
//!
//! Why the prober asks: a connect's round trip as user space sees it is
//! the time from `connect` to the moment the process gets back to the
//! socket. On a loaded host that is mostly the wait for the CPU: in the
//! 100-host mesh benchmark (100 agents on 2 cores) handshakes the kernel
//! measured at 8–530 µs showed 40–400 ms to the agents, and one such
//! sample set every deadline of the sweep near its ceiling. The kernel
//! stamps the SYN when it leaves and the SYN-ACK when it is processed, so
//! its measure is the network's (with the host's own packet processing),
//! never the process's wait.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// `struct nlmsghdr`'s size.
pub(crate) const NLMSG_HDR: usize = 16;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// `struct inet_diag_msg`: family, state, timer, retrans, then the
/// socket id (ports big-endian, two 16-byte addresses, interface, cookie),
/// then five 32-bit counters.
pub(crate) const DIAG_MSG: usize = 72;
/// `struct inet_diag_req_v2`'s size, its socket id included.
const REQ: usize = 8 + 48;
/// `INET_DIAG_INFO`: the attribute carrying `struct tcp_info`, and the
/// request's extension bit asking for it.
const INET_DIAG_INFO: u16 = 2;
/// Offset of `tcpi_rtt` (microseconds, the smoothed round trip; after a
/// handshake its only sample) in `struct tcp_info` (include/uapi/linux/tcp.h:
/// eight bytes of state and flags, then 32-bit fields from `tcpi_rto`).
const TCPI_RTT: usize = 68;
/// Offset of `tcpi_total_retrans`: segments the connection resent, its
/// SYN included.
const TCPI_TOTAL_RETRANS: usize = 100;

/// What the kernel says of a connection's handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpInfo {
    /// Its round trip (`None`: the kernel took no sample).
    pub(crate) rtt: Option<Duration>,
    /// Whether it resent anything (after a handshake: its SYN).
    pub(crate) resent: bool,
}

/// The dump request for sockets of `family` (`AF_INET`, `AF_INET6`) and
/// `protocol` (TCP, UDP) in `states` (a bit per state): a `nlmsghdr` and a
/// `struct inet_diag_req_v2` with an empty socket id (every socket).
pub(crate) fn dump_request(family: u8, protocol: u8, states: u32, seq: u32) -> Vec<u8> {
    let mut m = header(NLM_F_REQUEST | NLM_F_DUMP, seq);
    m.extend_from_slice(&[family, protocol, 0, 0]);
    m.extend_from_slice(&states.to_ne_bytes());
    m.resize(NLMSG_HDR + REQ, 0);
    m
}

/// The request for the one TCP connection from `local` to `peer`, with its
/// `struct tcp_info`: the socket id names it exactly (no cookie), as the
/// kernel looks a socket up for an arriving packet.
fn connection_request(local: SocketAddr, peer: SocketAddr, seq: u32) -> Option<Vec<u8>> {
    let family = match (local.ip(), peer.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6,
        _ => return None,
    };
    let mut m = header(NLM_F_REQUEST, seq);
    m.extend_from_slice(&[
        u8::try_from(family).ok()?,
        libc::IPPROTO_TCP as u8,
        1 << (INET_DIAG_INFO - 1),
        0,
    ]);
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    m.extend_from_slice(&local.port().to_be_bytes());
    m.extend_from_slice(&peer.port().to_be_bytes());
    for ip in [local.ip(), peer.ip()] {
        let mut a = match ip {
            IpAddr::V4(ip) => ip.octets().to_vec(),
            IpAddr::V6(ip) => ip.octets().to_vec(),
        };
        a.resize(16, 0);
        m.extend_from_slice(&a);
    }
    // Any interface, and no cookie (INET_DIAG_NOCOOKIE).
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    debug_assert_eq!(m.len(), NLMSG_HDR + REQ);
    Some(m)
}

/// A `nlmsghdr` for a request of [`NLMSG_HDR`] + [`REQ`] bytes.
fn header(flags: u16, seq: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(NLMSG_HDR + REQ);
    m.extend_from_slice(&((NLMSG_HDR + REQ) as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m
}

/// What one buffer of an answer held.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// More records may follow in the next buffer.
    More,
    /// The dump is complete.
    Done,
    /// The kernel refused the request (its errno, negated as sent).
    Refused(i32),
}

/// The netlink messages in one buffer of an answer, in order: each one's
/// type, sequence number and body (after its `nlmsghdr`), or `Err` for one
/// whose length does not fit the buffer (a malformed buffer: nothing
/// follows it).
pub(crate) fn messages(buf: &[u8]) -> impl Iterator<Item = Result<(u16, u32, &[u8]), ()>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + NLMSG_HDR > buf.len() {
            return None;
        }
        let word = |o: usize| u32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
        let len = word(at) as usize;
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        if len < NLMSG_HDR || at + len > buf.len() {
            at = buf.len();
            return Some(Err(()));
        }
        let message = (kind, word(at + 8), &buf[at + NLMSG_HDR..at + len]);
        // Messages are aligned to 4 bytes.
        at += (len + 3) & !3;
        Some(Ok(message))
    })
}

/// Parses one buffer of the answer to request `seq`, adding what `record`
/// reads of each `struct inet_diag_msg` (and its attributes) to `rows`. A
/// malformed buffer is refused with `EINVAL`.
pub(crate) fn parse_with<T>(
    buf: &[u8],
    seq: u32,
    rows: &mut Vec<T>,
    record: fn(&[u8]) -> Option<T>,
) -> Part {
    for message in messages(buf) {
        let Ok((kind, got, body)) = message else {
            return Part::Refused(-libc::EINVAL);
        };
        if got != seq {
            continue;
        }
        match kind {
            NLMSG_DONE => return Part::Done,
            NLMSG_ERROR => {
                let code = body.get(..4).map_or(-libc::EINVAL, |b| {
                    i32::from_ne_bytes([b[0], b[1], b[2], b[3]])
                });
                return Part::Refused(code);
            }
            SOCK_DIAG_BY_FAMILY => {
                if let Some(row) = record(body) {
                    rows.push(row);
                }
            }
            _ => {}
        }
    }
    Part::More
}

/// The attributes after a `struct inet_diag_msg`, each a `struct nlattr`
/// (length with its 4-byte header, type) padded to 4 bytes: `(type,
/// payload)`.
pub(crate) fn attributes(b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = DIAG_MSG;
    std::iter::from_fn(move || {
        if at + 4 > b.len() {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[at], b[at + 1]]));
        let kind = u16::from_ne_bytes([b[at + 2], b[at + 3]]);
        if len < 4 || at + len > b.len() {
            return None;
        }
        let payload = &b[at + 4..at + len];
        at += (len + 3) & !3;
        Some((kind, payload))
    })
}

/// A connection's record, read: `tcpi_rtt` and `tcpi_total_retrans` of its
/// `INET_DIAG_INFO` attribute (`None`: no attribute, or one too short; a
/// round trip of 0 is the kernel's "no sample").
fn info_record(b: &[u8]) -> Option<TcpInfo> {
    if b.len() < DIAG_MSG {
        return None;
    }
    let (_, info) = attributes(b).find(|(kind, _)| *kind == INET_DIAG_INFO)?;
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(info.get(at..at + 4)?.try_into().ok()?))
    };
    let us = word(TCPI_RTT)?;
    Some(TcpInfo {
        rtt: (us > 0).then(|| Duration::from_micros(u64::from(us))),
        resent: word(TCPI_TOTAL_RETRANS)? > 0,
    })
}

/// What the kernel says of the TCP connection from `local` to `peer` (in
/// this network namespace); `None` when it cannot tell (no such
/// connection, not Linux).
pub(crate) fn tcp_info(local: SocketAddr, peer: SocketAddr) -> Option<TcpInfo> {
    let seq = 1;
    let req = connection_request(local, peer, seq)?;
    let mut rows = Vec::with_capacity(1);
    // The answer to a request for one socket is one message (or an error):
    // the first buffer holds all of it.
    transact(&req, 4096, |buf| {
        match parse_with(buf, seq, &mut rows, info_record) {
            Part::Refused(_) => None,
            Part::More | Part::Done => Some(true),
        }
    })?;
    rows.pop()
}

/// A dump: sockets of `family` and `protocol` in `states`, read into
/// `rows` by `record`; `None` when netlink cannot tell (not Linux, or
/// `inet_diag` refused).
pub(crate) fn dump<T>(
    family: u8,
    protocol: u8,
    states: u32,
    record: fn(&[u8]) -> Option<T>,
    rows: &mut Vec<T>,
) -> Option<()> {
    let seq = 1;
    let req = dump_request(family, protocol, states, seq);
    transact(&req, 64 * 1024, |buf| {
        match parse_with(buf, seq, rows, record) {
            Part::More if !buf.is_empty() => Some(false),
            Part::More | Part::Refused(_) => None,
            Part::Done => Some(true),
        }
    })
}

/// Sends `req` on a fresh `NETLINK_SOCK_DIAG` socket and hands each buffer
/// of the answer (read into `size` bytes) to `take`, until it says the
/// answer is complete (`Some(true)`) or failed (`None`).
#[cfg(target_os = "linux")]
fn transact(req: &[u8], size: usize, mut take: impl FnMut(&[u8]) -> Option<bool>) -> Option<()> {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{MsgFlags, NetlinkAddr, SockProtocol, recv, sendto};

    let fd = netlink_socket(SockProtocol::NetlinkSockDiag)?;
    sendto(
        fd.as_raw_fd(),
        req,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .ok()?;
    let mut buf = vec![0u8; size];
    // A dump of a few thousand sockets comes in a few buffers; the bound
    // only stops a kernel that never says done.
    for _ in 0..100_000 {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).ok()?;
        if take(buf.get(..n)?)? {
            return Some(());
        }
    }
    None
}

/// A netlink socket of `protocol` whose every read gives up after a
/// second: the kernel answers at once, and the bound keeps a wedged socket
/// from stopping the caller.
#[cfg(target_os = "linux")]
pub(crate) fn netlink_socket(
    protocol: nix::sys::socket::SockProtocol,
) -> Option<std::os::fd::OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socket, sockopt};
    use nix::sys::time::TimeVal;

    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        protocol,
    )
    .ok()?;
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(1, 0)).ok()?;
    Some(fd)
}

/// Not Linux: no netlink.
#[cfg(not(target_os = "linux"))]
fn transact(_req: &[u8], _size: usize, _take: impl FnMut(&[u8]) -> Option<bool>) -> Option<()> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_request_names_the_socket_from_its_own_side_and_asks_for_tcp_info() {
        let local: SocketAddr = "198.18.0.2:40000".parse().unwrap();
        let peer: SocketAddr = "198.18.0.7:20003".parse().unwrap();
        let r = connection_request(local, peer, 9).unwrap();
        assert_eq!(r.len(), 72);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), SOCK_DIAG_BY_FAMILY);
        assert_eq!(u16::from_ne_bytes([r[6], r[7]]), NLM_F_REQUEST, "no dump");
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 9);
        assert_eq!(&r[16..19], &[libc::AF_INET as u8, 6, 2]);
        assert_eq!(&r[24..26], &40000u16.to_be_bytes());
        assert_eq!(&r[26..28], &20003u16.to_be_bytes());
        assert_eq!(&r[28..32], &[198, 18, 0, 2]);
        assert_eq!(&r[44..48], &[198, 18, 0, 7]);
        assert_eq!(&r[64..72], &[0xff; 8], "no cookie");
        let six = connection_request(
            "[2001:2::2]:40000".parse().unwrap(),
            "[2001:2::7]:22".parse().unwrap(),
            1,
        )
        .unwrap();
        assert_eq!(six[16], libc::AF_INET6 as u8);
        assert_eq!(
            &six[28..44],
            &"2001:2::2".parse::<std::net::Ipv6Addr>().unwrap().octets()
        );
        assert!(
            connection_request(local, "[::1]:1".parse().unwrap(), 1).is_none(),
            "one family"
        );
        let d = dump_request(libc::AF_INET6 as u8, 17, 1 << 7, 3);
        assert_eq!(d.len(), 72);
        assert_eq!(u16::from_ne_bytes([d[6], d[7]]), 0x301);
        assert_eq!(&d[16..18], &[libc::AF_INET6 as u8, 17]);
        assert_eq!(u32::from_ne_bytes(d[20..24].try_into().unwrap()), 1 << 7);
    }

    #[test]
    fn the_round_trip_and_resends_are_read_from_the_tcp_info_attribute() {
        let mut b = vec![0u8; DIAG_MSG];
        // An attribute of another kind first, then INET_DIAG_INFO.
        b.extend_from_slice(&8u16.to_ne_bytes());
        b.extend_from_slice(&5u16.to_ne_bytes());
        b.extend_from_slice(&[0; 4]);
        let mut info = vec![0u8; 104];
        info[TCPI_RTT..TCPI_RTT + 4].copy_from_slice(&317u32.to_ne_bytes());
        b.extend_from_slice(&(4 + info.len() as u16).to_ne_bytes());
        b.extend_from_slice(&INET_DIAG_INFO.to_ne_bytes());
        b.extend_from_slice(&info);
        let start = b.len() - info.len();
        let got = |b: &[u8]| info_record(b);
        assert_eq!(
            got(&b),
            Some(TcpInfo {
                rtt: Some(Duration::from_micros(317)),
                resent: false
            })
        );
        b[start + TCPI_TOTAL_RETRANS] = 1;
        assert!(got(&b).unwrap().resent);
        // No sample: the kernel's 0 is no round trip.
        b[start + TCPI_RTT..start + TCPI_RTT + 4].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(got(&b).unwrap().rtt, None);
        // A truncated attribute is not read out of bounds.
        b.truncate(DIAG_MSG + 8 + 4 + 40);
        assert_eq!(got(&b), None);
        assert_eq!(got(&[0; 10]), None);
    }

    /// On Linux the kernel tells a loopback connection's handshake round
    /// trip (well under a second), and nothing for a connection that does
    /// not exist.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_tells_a_live_connections_round_trip() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (local, peer) = (c.local_addr().unwrap(), c.peer_addr().unwrap());
        let info = tcp_info(local, peer).expect("sock_diag on Linux");
        let rtt = info.rtt.expect("a sample");
        assert!(rtt < Duration::from_secs(1), "{rtt:?}");
        assert!(!info.resent);
        drop(c);
        let gone = SocketAddr::new(local.ip(), 1);
        assert_eq!(tcp_info(gone, peer), None);
    }
}
