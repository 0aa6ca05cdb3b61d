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
/// `struct inet_diag_req_v2` with an empty socket id (every socket), and
/// the `filter` program ([`local_ports_filter`]) where it is not empty.
pub(crate) fn dump_request(
    family: u8,
    protocol: u8,
    states: u32,
    filter: &[u8],
    seq: u32,
) -> Vec<u8> {
    let mut m = header(NLM_F_REQUEST | NLM_F_DUMP, seq);
    m.extend_from_slice(&[family, protocol, 0, 0]);
    m.extend_from_slice(&states.to_ne_bytes());
    m.resize(NLMSG_HDR + REQ, 0);
    if let (false, Ok(len)) = (filter.is_empty(), u16::try_from(filter.len() + 4)) {
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        m.extend_from_slice(filter);
        let total = u32::try_from(m.len()).unwrap_or(u32::MAX);
        m[..4].copy_from_slice(&total.to_ne_bytes());
    }
    m
}

/// `INET_DIAG_REQ_BYTECODE`: the request attribute carrying a filter
/// program the kernel runs on each socket before it describes it.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// Filter opcodes (`include/uapi/linux/inet_diag.h`): each op is `code`,
/// `yes` and `no` (the bytes to jump forward by), and a port comparison
/// takes its port from the `no` of a second op after it.
const BC_JMP: u8 = 1;
const BC_S_GE: u8 = 2;
const BC_S_LE: u8 = 3;
/// Most port ranges a filter holds: a longer program would cost the kernel
/// more per socket than describing it does.
const MAX_FILTER_RANGES: usize = 256;

/// A filter program that keeps the sockets whose local port is one of
/// `ports` (an empty program, which keeps every socket, for none or for
/// too many ranges). The kernel then describes only those: a host's watch
/// of its planned ports need not have every other connection of the host
/// (its own probes, its control channel) formatted and copied to it.
///
/// Per run of consecutive ports `lo..=hi`: `S_GE lo` then `S_LE hi`, each
/// jumping to the next run when false, then a `JMP` to the program's end
/// (keep). The last run has no `JMP`: its end is the program's end, and
/// its false jumps land 4 bytes past it (drop). Only `S_GE`, `S_LE` and
/// `JMP`, which every Linux with `inet_diag` knows, and no privilege.
pub(crate) fn local_ports_filter(ports: impl IntoIterator<Item = u16>) -> Vec<u8> {
    let mut ports: Vec<u16> = ports.into_iter().collect();
    ports.sort_unstable();
    ports.dedup();
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for p in ports {
        match runs.last_mut() {
            Some((_, hi)) if hi.checked_add(1) == Some(p) => *hi = p,
            _ => runs.push((p, p)),
        }
    }
    if runs.is_empty() || runs.len() > MAX_FILTER_RANGES {
        return Vec::new();
    }
    let op = |code: u8, yes: u8, no: u16| {
        let mut o = [code, yes, 0, 0];
        o[2..].copy_from_slice(&no.to_ne_bytes());
        o
    };
    // A run is 16 bytes, and 4 more for the JMP of every run but the last.
    let total = runs.len() * 20 - 4;
    let mut bc = Vec::with_capacity(total);
    for (k, (lo, hi)) in runs.iter().enumerate() {
        // False: past this run's 20 bytes (from S_GE) or its last 12 (from
        // S_LE), to the next run, or 4 past the end after the last.
        bc.extend_from_slice(&op(BC_S_GE, 8, 20));
        bc.extend_from_slice(&op(0, 0, *lo));
        bc.extend_from_slice(&op(BC_S_LE, 8, 12));
        bc.extend_from_slice(&op(0, 0, *hi));
        if k + 1 < runs.len() {
            // Taken on its `no`: to the end, kept.
            let to_end = u16::try_from(total - bc.len()).unwrap_or(u16::MAX);
            bc.extend_from_slice(&op(BC_JMP, 4, to_end));
        }
    }
    debug_assert_eq!(bc.len(), total);
    bc
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

/// A dump: sockets of `family` and `protocol` in `states` that pass
/// `filter` (empty: every one), read into `rows` by `record`; `None` when
/// netlink cannot tell (not Linux, or `inet_diag` refused).
pub(crate) fn dump<T>(
    family: u8,
    protocol: u8,
    states: u32,
    filter: &[u8],
    record: fn(&[u8]) -> Option<T>,
    rows: &mut Vec<T>,
) -> Option<()> {
    let seq = 1;
    let req = dump_request(family, protocol, states, filter, seq);
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
        let d = dump_request(libc::AF_INET6 as u8, 17, 1 << 7, &[], 3);
        assert_eq!(d.len(), 72);
        assert_eq!(u16::from_ne_bytes([d[6], d[7]]), 0x301);
        assert_eq!(&d[16..18], &[libc::AF_INET6 as u8, 17]);
        assert_eq!(u32::from_ne_bytes(d[20..24].try_into().unwrap()), 1 << 7);
    }

    /// The kernel's checks of a filter program (`inet_diag_bc_audit` and
    /// `valid_cc`, for the opcodes the filter uses): every jump lands on an
    /// op reached along `yes` jumps, at the end, or 4 bytes past it (from a
    /// `no`).
    fn audit(bc: &[u8]) -> bool {
        let op = |at: usize| {
            (
                bc[at],
                usize::from(bc[at + 1]),
                usize::from(u16::from_ne_bytes([bc[at + 2], bc[at + 3]])),
            )
        };
        let reachable = |target: usize| {
            let mut at = 0;
            while at < target {
                at += op(at).1;
            }
            at == target
        };
        let mut at = 0;
        while at < bc.len() {
            let len = bc.len() - at;
            let (code, yes, no) = op(at);
            let min = match code {
                BC_S_GE | BC_S_LE if len >= 8 => 8,
                BC_JMP => 4,
                _ => return false,
            };
            for (jump, is_no) in [(yes, false), (no, true)] {
                if jump < min || jump > len + 4 || jump % 4 != 0 {
                    return false;
                }
                if is_no && jump < len && !reachable(at + jump) {
                    return false;
                }
            }
            at += yes;
        }
        at == bc.len()
    }

    /// The kernel's run of a filter program over a socket's local port
    /// (`inet_diag_bc_run`): kept when it ends exactly at the end.
    fn keeps(bc: &[u8], port: u16) -> bool {
        let mut at = 0usize;
        let mut len = bc.len() as isize;
        while len > 0 {
            let code = bc[at];
            let operand = || u16::from_ne_bytes([bc[at + 6], bc[at + 7]]);
            let yes = match code {
                BC_S_GE => port >= operand(),
                BC_S_LE => port <= operand(),
                BC_JMP => false,
                _ => panic!("opcode {code}"),
            };
            let jump = if yes {
                usize::from(bc[at + 1])
            } else {
                usize::from(u16::from_ne_bytes([bc[at + 2], bc[at + 3]]))
            };
            at += jump;
            len -= jump as isize;
        }
        len == 0
    }

    #[test]
    fn a_port_filter_keeps_exactly_its_ports_and_passes_the_kernels_audit() {
        let cases: [&[u16]; 6] = [
            &[22],
            &[20000, 20001, 20002, 20009, 7400],
            &[0, 65535],
            &[443, 443, 80, 8080, 8081, 8443, 9443, 3306, 5672, 7711],
            &[1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 65534],
            &[65535],
        ];
        for ports in cases {
            let bc = local_ports_filter(ports.iter().copied());
            assert!(!bc.is_empty());
            assert!(audit(&bc), "{ports:?}: {bc:?}");
            for p in (0..=65535u16)
                .step_by(1)
                .filter(|p| p % 97 == 0 || ports.iter().any(|q| q.abs_diff(*p) <= 1))
            {
                assert_eq!(keeps(&bc, p), ports.contains(&p), "{ports:?} port {p}");
            }
        }
        // None, or more runs than a filter holds: no filter (every socket).
        assert!(local_ports_filter([]).is_empty());
        assert!(local_ports_filter((0..600).map(|p| p * 2)).is_empty());
        // A run of any length is one comparison pair.
        assert_eq!(local_ports_filter(20000..30000).len(), 16);
        // The request carries it as INET_DIAG_REQ_BYTECODE after the
        // request, and its length counts it.
        let bc = local_ports_filter([22, 443]);
        let d = dump_request(libc::AF_INET as u8, 6, 1 << 3, &bc, 1);
        assert_eq!(d.len(), 72 + 4 + bc.len());
        assert_eq!(
            u32::from_ne_bytes(d[0..4].try_into().unwrap()) as usize,
            d.len()
        );
        assert_eq!(u16::from_ne_bytes([d[72], d[73]]) as usize, 4 + bc.len());
        assert_eq!(u16::from_ne_bytes([d[74], d[75]]), INET_DIAG_REQ_BYTECODE);
        assert_eq!(&d[76..], &bc[..]);
    }

    /// On Linux the kernel takes the filter and lists only sockets on its
    /// ports: a connection to a listener on a filtered port shows, one to
    /// another port does not, nor the client ends.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_lists_only_the_filtered_local_ports() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (pa, pb) = (
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        );
        let ca = std::net::TcpStream::connect(("127.0.0.1", pa)).unwrap();
        let _cb = std::net::TcpStream::connect(("127.0.0.1", pb)).unwrap();
        let established = 1 << 1;
        let local_port = |m: &[u8]| (m.len() >= DIAG_MSG).then(|| u16::from_be_bytes([m[4], m[5]]));
        let mut rows = Vec::new();
        let filter = local_ports_filter([pa]);
        dump(
            libc::AF_INET as u8,
            6,
            established,
            &filter,
            local_port,
            &mut rows,
        )
        .expect("the kernel takes the filter");
        assert!(rows.contains(&pa), "{rows:?}");
        assert!(rows.iter().all(|p| *p == pa), "only port {pa}: {rows:?}");
        // Unfiltered, the same dump lists the other connection and the
        // client ends too.
        rows.clear();
        dump(
            libc::AF_INET as u8,
            6,
            established,
            &[],
            local_port,
            &mut rows,
        )
        .unwrap();
        assert!(
            rows.contains(&pb) && rows.contains(&ca.local_addr().unwrap().port()),
            "{rows:?}"
        );
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
