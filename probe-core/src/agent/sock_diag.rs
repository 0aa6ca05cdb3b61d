//! The handshake watch's reading of the kernel's TCP sockets through
//! `NETLINK_SOCK_DIAG` (what `ss` uses): binary records, and only the
//! states asked for, so the kernel neither walks its listening sockets nor
//! formats a text line per socket as it does for `/proc/net/tcp`. During a
//! round on a busy host that formatting was most of the watch's cost.
//!
//! Like `/proc/net/tcp`, a dump needs no privilege and shows the sockets of
//! the caller's network namespace. Where netlink is not there (not Linux,
//! or `inet_diag` refused) [`read`] says `None` and the watch reads `/proc`.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::control::HandshakeStage;
use crate::probe::sock_diag::{DIAG_MSG, attributes, dump, local_ports_filter};
#[cfg(test)]
use crate::probe::sock_diag::{
    NLMSG_DONE, NLMSG_ERROR, NLMSG_HDR, Part, SOCK_DIAG_BY_FAMILY, dump_request, parse_with,
};

/// One socket: local address and port, remote address and port, stage.
pub(super) type Row = (IpAddr, u16, SocketAddr, HandshakeStage);

/// Linux TCP states (`include/net/tcp_states.h`).
const ESTABLISHED: u8 = 1;
const SYN_RECV: u8 = 3;
const FIN_WAIT1: u8 = 4;
const FIN_WAIT2: u8 = 5;
const TIME_WAIT: u8 = 6;
const CLOSE_WAIT: u8 = 8;
const LAST_ACK: u8 = 9;
const CLOSING: u8 = 11;

/// The stage a socket in `state` shows, as the watch reads `/proc`: a
/// request socket is a SYN that arrived; established, and every state a
/// connection reaches only after its handshake completed, is `connected`.
/// Listening sockets and our own SYNs (`SYN_SENT`) are not handshakes from
/// a peer.
pub(super) fn stage(state: u8) -> Option<HandshakeStage> {
    match state {
        SYN_RECV => Some(HandshakeStage::Syn),
        ESTABLISHED | FIN_WAIT1 | FIN_WAIT2 | TIME_WAIT | CLOSE_WAIT | LAST_ACK | CLOSING => {
            Some(HandshakeStage::Connected)
        }
        _ => None,
    }
}

/// The states a dump asks for: those [`stage`] knows.
const STATES: u32 = (1 << ESTABLISHED)
    | (1 << SYN_RECV)
    | (1 << FIN_WAIT1)
    | (1 << FIN_WAIT2)
    | (1 << TIME_WAIT)
    | (1 << CLOSE_WAIT)
    | (1 << LAST_ACK)
    | (1 << CLOSING);

/// The dump request for TCP sockets of `family` (`AF_INET`, `AF_INET6`)
/// in [`STATES`].
#[cfg(test)]
fn request(family: u8, seq: u32) -> Vec<u8> {
    dump_request(family, libc::IPPROTO_TCP as u8, STATES, &[], seq)
}

/// Parses one buffer of a dump's answer for request `seq`, adding its
/// handshake records to `rows`. A malformed buffer is refused with `EINVAL`.
#[cfg(test)]
fn parse(buf: &[u8], seq: u32, rows: &mut Vec<Row>) -> Part {
    parse_with(buf, seq, rows, record)
}

/// One `struct inet_diag_msg`, as a row (`None`: a state the watch does
/// not keep, or a family it does not know).
fn record(b: &[u8]) -> Option<Row> {
    if b.len() < DIAG_MSG {
        return None;
    }
    let stage = stage(b[1])?;
    let lport = u16::from_be_bytes([b[4], b[5]]);
    let rport = u16::from_be_bytes([b[6], b[7]]);
    let addr = |o: usize| -> Option<IpAddr> {
        match i32::from(b[0]) {
            libc::AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
                b[o],
                b[o + 1],
                b[o + 2],
                b[o + 3],
            ))),
            libc::AF_INET6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&b[o..o + 16]);
                let v6 = Ipv6Addr::from(a);
                // A dual-stack socket's IPv4 peer, as /proc/net/tcp6 shows it.
                Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
            }
            _ => None,
        }
    };
    Some((addr(8)?, lport, SocketAddr::new(addr(24)?, rport), stage))
}

/// The TCP sockets of this namespace that show a handshake from a peer,
/// for the families asked for; `None` when netlink cannot tell (the
/// caller then reads `/proc`). With `ports`, the kernel leaves out sockets
/// on other local ports ([`local_ports_filter`]); a kernel that refuses
/// the filter is asked again without it.
pub(super) fn read(v4: bool, v6: bool, ports: Option<&HashSet<u16>>) -> Option<Vec<Row>> {
    let filter = ports.map_or_else(Vec::new, |p| local_ports_filter(p.iter().copied()));
    read_filtered(v4, v6, &filter).or_else(|| {
        if filter.is_empty() {
            None
        } else {
            read_filtered(v4, v6, &[])
        }
    })
}

fn read_filtered(v4: bool, v6: bool, filter: &[u8]) -> Option<Vec<Row>> {
    let mut rows = Vec::new();
    for (family, wanted) in [(libc::AF_INET, v4), (libc::AF_INET6, v6)] {
        if wanted {
            let family = u8::try_from(family).ok()?;
            dump(
                family,
                libc::IPPROTO_TCP as u8,
                STATES,
                filter,
                record,
                &mut rows,
            )?;
        }
    }
    Some(rows)
}

/// A socket that listens (TCP) or is bound without a peer (UDP), as a
/// dump of those states shows it: local address, whether an IPv6 socket
/// is IPv6-only (`INET_DIAG_SKV6ONLY`; always `false` for IPv4), inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bound {
    /// Where it listens.
    pub(super) local: SocketAddr,
    /// An IPv6 socket that does not take IPv4 connections.
    pub(super) v6only: bool,
    /// Its inode, which `/proc/<pid>/fd` names as `socket:[inode]`.
    pub(super) inode: u64,
}

/// `TCP_LISTEN`: a listening TCP socket.
const LISTEN: u8 = 10;
/// `TCP_CLOSE`: the state of a UDP socket that has no peer (a server's).
const UDP_UNCONNECTED: u8 = 7;
/// `INET_DIAG_SKV6ONLY`: the attribute carrying `IPV6_V6ONLY`.
const SKV6ONLY: u16 = 11;

/// The listening TCP sockets (`udp`: the peerless bound UDP sockets) of
/// this namespace, both families; `None` when netlink cannot tell.
pub(super) fn read_bound(udp: bool) -> Option<Vec<Bound>> {
    let (protocol, state) = if udp {
        (libc::IPPROTO_UDP as u8, UDP_UNCONNECTED)
    } else {
        (libc::IPPROTO_TCP as u8, LISTEN)
    };
    let mut rows = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        let family = u8::try_from(family).ok()?;
        dump(family, protocol, 1 << state, &[], bound_record, &mut rows)?;
    }
    Some(rows)
}

/// One `struct inet_diag_msg` of a listening or bound socket, with its
/// `INET_DIAG_SKV6ONLY` attribute (`None`: a family it does not know).
fn bound_record(b: &[u8]) -> Option<Bound> {
    if b.len() < DIAG_MSG {
        return None;
    }
    let port = u16::from_be_bytes([b[4], b[5]]);
    let ip = match i32::from(b[0]) {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(b[8], b[9], b[10], b[11])),
        libc::AF_INET6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[8..24]);
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => return None,
    };
    let inode = u32::from_ne_bytes([b[68], b[69], b[70], b[71]]);
    let v6only =
        attributes(b).any(|(kind, v)| kind == SKV6ONLY && v.first().is_some_and(|f| *f != 0));
    Some(Bound {
        local: SocketAddr::new(ip, port),
        v6only: v6only && ip.is_ipv6(),
        inode: u64::from(inode),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `SOCK_DIAG_BY_FAMILY` answer record as the kernel sends it.
    fn message(seq: u32, state: u8, local: SocketAddr, remote: SocketAddr) -> Vec<u8> {
        let family = match local {
            SocketAddr::V4(_) => libc::AF_INET,
            SocketAddr::V6(_) => libc::AF_INET6,
        };
        let mut body = vec![family as u8, state, 0, 0];
        body.extend_from_slice(&local.port().to_be_bytes());
        body.extend_from_slice(&remote.port().to_be_bytes());
        for a in [local, remote] {
            let mut ip = match a.ip() {
                IpAddr::V4(ip) => ip.octets().to_vec(),
                IpAddr::V6(ip) => ip.octets().to_vec(),
            };
            ip.resize(16, 0);
            body.extend_from_slice(&ip);
        }
        body.resize(DIAG_MSG + 8, 0); // counters, then an attribute's worth
        header(SOCK_DIAG_BY_FAMILY, seq, &body)
    }

    fn header(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDR + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0x2u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m.resize((m.len() + 3) & !3, 0);
        m
    }

    #[test]
    fn the_request_asks_for_tcp_of_one_family_in_the_handshake_states() {
        let r = request(libc::AF_INET6 as u8, 7);
        assert_eq!(r.len(), 72);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), SOCK_DIAG_BY_FAMILY);
        assert_eq!(u16::from_ne_bytes([r[6], r[7]]), 0x301);
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 7);
        assert_eq!(&r[16..18], &[libc::AF_INET6 as u8, 6]);
        let states = u32::from_ne_bytes(r[20..24].try_into().unwrap());
        assert_eq!(states & (1 << 10), 0, "never LISTEN");
        assert_eq!(states & (1 << 2), 0, "never our own SYN_SENT");
        for s in 0..12u8 {
            assert_eq!(states & (1 << s) != 0, stage(s).is_some(), "state {s}");
        }
    }

    #[test]
    fn records_of_both_families_are_read_and_the_dump_ends_on_done() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        // (request, state, local, remote), as the kernel would send them.
        let records = [
            (1, SYN_RECV, "198.18.18.40:9467", "198.18.1.20:40000"),
            (1, TIME_WAIT, "198.18.18.40:3306", "198.18.1.21:40001"),
            // Not a handshake from a peer: left out.
            (1, 10, "198.18.18.40:3306", "0.0.0.0:0"),
            // Another request's record: not ours.
            (9, ESTABLISHED, "198.18.18.41:1", "198.18.1.1:2"),
            (
                1,
                ESTABLISHED,
                "[::ffff:198.18.18.40]:443",
                "[::ffff:198.18.1.20]:40002",
            ),
            (
                1,
                SYN_RECV,
                "[2001:2:0:3::40]:443",
                "[2001:2:0:1::20]:40003",
            ),
        ];
        let mut buf = Vec::new();
        for (seq, state, local, remote) in records {
            buf.extend(message(seq, state, sa(local), sa(remote)));
        }
        let mut rows = Vec::new();
        assert_eq!(parse(&buf, 1, &mut rows), Part::More);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            rows,
            vec![
                (
                    ip("198.18.18.40"),
                    9467,
                    sa("198.18.1.20:40000"),
                    HandshakeStage::Syn
                ),
                (
                    ip("198.18.18.40"),
                    3306,
                    sa("198.18.1.21:40001"),
                    HandshakeStage::Connected
                ),
                (
                    ip("198.18.18.40"),
                    443,
                    sa("198.18.1.20:40002"),
                    HandshakeStage::Connected
                ),
                (
                    ip("2001:2:0:3::40"),
                    443,
                    sa("[2001:2:0:1::20]:40003"),
                    HandshakeStage::Syn
                ),
            ]
        );
        let mut end = header(NLMSG_DONE, 1, &0i32.to_ne_bytes());
        assert_eq!(parse(&end, 1, &mut rows), Part::Done);
        end = header(NLMSG_ERROR, 1, &(-libc::EPERM).to_ne_bytes());
        assert_eq!(parse(&end, 1, &mut rows), Part::Refused(-libc::EPERM));
        // A length past the buffer is refused, not read out of bounds.
        let mut cut = message(1, SYN_RECV, sa("198.18.18.40:1"), sa("198.18.1.20:2"));
        cut.truncate(40);
        assert_eq!(parse(&cut, 1, &mut rows), Part::Refused(-libc::EINVAL));
        assert_eq!(rows.len(), 4);
    }

    #[test]
    fn a_listener_record_gives_its_address_inode_and_v6only_attribute() {
        let mut body = vec![libc::AF_INET6 as u8, LISTEN, 0, 0];
        body.extend_from_slice(&3307u16.to_be_bytes());
        body.extend_from_slice(&0u16.to_be_bytes());
        body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        body.resize(DIAG_MSG, 0);
        body[68..72].copy_from_slice(&4242u32.to_ne_bytes());
        // An attribute of another kind, then INET_DIAG_SKV6ONLY = 1.
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&5u16.to_ne_bytes());
        body.extend_from_slice(&[0, 0, 0, 0]);
        body.extend_from_slice(&5u16.to_ne_bytes());
        body.extend_from_slice(&SKV6ONLY.to_ne_bytes());
        body.extend_from_slice(&[1, 0, 0, 0]);
        let got = bound_record(&body).unwrap();
        assert_eq!(got.local, "[::1]:3307".parse().unwrap());
        assert_eq!(got.inode, 4242);
        assert!(got.v6only);
        // Without the attribute: dual-stack (the kernel always sends it
        // for IPv6 sockets, so this is only a truncated record).
        body.truncate(DIAG_MSG);
        assert!(!bound_record(&body).unwrap().v6only);
        let mut buf = header(SOCK_DIAG_BY_FAMILY, 1, &body);
        buf.extend(header(NLMSG_DONE, 1, &0i32.to_ne_bytes()));
        let mut rows = Vec::new();
        assert_eq!(parse_with(&buf, 1, &mut rows, bound_record), Part::Done);
        assert_eq!(rows.len(), 1);
    }

    /// On Linux a listener dump shows a loopback listener, and a UDP dump a
    /// bound UDP socket, each with its IPv6-only flag.
    #[cfg(target_os = "linux")]
    #[test]
    fn dumps_list_listeners_and_bound_udp_sockets_with_their_flags() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap();
        let rows = read_bound(false).expect("sock_diag on Linux");
        assert!(
            rows.iter().any(|r| r.local == at && r.inode != 0),
            "{rows:?}"
        );
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let at = u.local_addr().unwrap();
        if let Some(rows) = read_bound(true) {
            assert!(rows.iter().any(|r| r.local == at), "{rows:?}");
        }
        let v6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        if v6.set_only_v6(true).is_ok()
            && v6
                .bind(&"[::1]:0".parse::<SocketAddr>().unwrap().into())
                .is_ok()
        {
            v6.listen(1).unwrap();
            let at = v6.local_addr().unwrap().as_socket().unwrap();
            let rows = read_bound(false).unwrap();
            let row = rows
                .iter()
                .find(|r| r.local == at)
                .expect("the IPv6 listener");
            assert!(row.v6only, "{row:?}");
        }
    }

    /// On Linux a dump lists a connection to a loopback listener that never
    /// accepts, from both ends, and not the listener.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_dump_lists_a_live_connection_and_no_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let from = c.local_addr().unwrap();
        let rows = read(true, false, None).expect("sock_diag on Linux");
        assert!(
            rows.contains(&(ip4(), port, from, HandshakeStage::Connected)),
            "{rows:?}"
        );
        // Our own end of it is listed too (its local port is not watched).
        assert!(rows.iter().any(|r| r.1 == from.port()));
        assert!(
            !rows.iter().any(|r| r.1 == port && r.2.port() == 0),
            "no listener"
        );
    }

    #[cfg(target_os = "linux")]
    fn ip4() -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}
