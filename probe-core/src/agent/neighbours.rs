//! The source's neighbour table, read when a probe's connect failed with
//! an error from the source's own address: that is how the kernel says
//! ARP (IPv4) or neighbour discovery (IPv6) got no answer, and without
//! this reading the report would call the source "a device on the way".
//! A dump of `RTM_GETNEIGH` over `NETLINK_ROUTE`, messages built and parsed
//! by hand as `sock_diag` does (the format is the kernel's stable ABI).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::control::NeighbourFailure;
use crate::probe::sock_diag::messages;

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
/// `struct rtmsg`: family, lengths, tos, table, protocol, scope, type,
/// flags.
const RTMSG: usize = 12;
/// `RTA_DST` and `RTA_GATEWAY`: a route's destination and next hop.
const RTA_DST: u16 = 1;
const RTA_GATEWAY: u16 = 5;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
/// `struct ndmsg`: family, two pad bytes, interface, state, flags, type.
const NDMSG: usize = 12;
/// `NDA_DST`: the neighbour's address.
const NDA_DST: u16 = 1;
const NUD_INCOMPLETE: u16 = 0x01;
const NUD_FAILED: u16 = 0x20;

/// One neighbour entry: its address and the kernel's `NUD_*` state bits.
pub(super) type Entry = (IpAddr, u16);

/// The words for an unresolved entry's state; `None` for a resolved one.
pub(super) fn unresolved(state: u16) -> Option<&'static str> {
    if state & NUD_FAILED != 0 {
        Some("failed")
    } else if state & NUD_INCOMPLETE != 0 {
        Some("incomplete")
    } else {
        None
    }
}

/// The unresolved entry for `address` among `entries`, if there is one.
pub(super) fn failure(entries: &[Entry], address: IpAddr) -> Option<NeighbourFailure> {
    entries
        .iter()
        .filter(|(a, _)| *a == address)
        .find_map(|(a, s)| {
            unresolved(*s).map(|state| NeighbourFailure {
                address: *a,
                state: state.to_owned(),
            })
        })
}

/// The dump request for every neighbour entry (both families).
fn request(seq: u32) -> Vec<u8> {
    let len = NLMSG_HDR + NDMSG;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&u32::try_from(len).unwrap_or(28).to_ne_bytes());
    m.extend_from_slice(&RTM_GETNEIGH.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.resize(len, 0);
    m
}

/// Parses one buffer of the dump's answer; `Some(true)` when the dump is
/// complete, `None` when the kernel refused or the buffer is malformed.
fn parse(buf: &[u8], seq: u32, out: &mut Vec<Entry>) -> Option<bool> {
    for message in messages(buf) {
        let (kind, got, body) = message.ok()?;
        if got != seq {
            continue;
        }
        match kind {
            NLMSG_DONE => return Some(true),
            NLMSG_ERROR => return None,
            RTM_NEWNEIGH => {
                if let Some(e) = entry(body) {
                    out.push(e);
                }
            }
            _ => {}
        }
    }
    Some(false)
}

/// One `struct ndmsg` and its attributes, as an entry.
fn entry(b: &[u8]) -> Option<Entry> {
    if b.len() < NDMSG {
        return None;
    }
    let family = i32::from(b[0]);
    let state = u16::from_ne_bytes([b[8], b[9]]);
    let mut at = NDMSG;
    while at + 4 <= b.len() {
        let len = usize::from(u16::from_ne_bytes([b[at], b[at + 1]]));
        let kind = u16::from_ne_bytes([b[at + 2], b[at + 3]]);
        if len < 4 || at + len > b.len() {
            return None;
        }
        let data = &b[at + 4..at + len];
        if kind == NDA_DST {
            let ip = match (family, data.len()) {
                (libc::AF_INET, 4) => IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
                (libc::AF_INET6, 16) => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(data);
                    IpAddr::V6(Ipv6Addr::from(a))
                }
                _ => return None,
            };
            return Some((ip, state));
        }
        at += (len + 3) & !3;
    }
    None
}

/// The `RTM_GETROUTE` request for the route the kernel takes to `to`.
fn route_request(to: IpAddr, seq: u32) -> Vec<u8> {
    let (family, bits, bytes): (i32, u8, Vec<u8>) = match to {
        IpAddr::V4(v4) => (libc::AF_INET, 32, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6, 128, v6.octets().to_vec()),
    };
    let attr = 4 + bytes.len();
    let len = NLMSG_HDR + RTMSG + attr;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&u32::try_from(len).unwrap_or(0).to_ne_bytes());
    m.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.push(u8::try_from(family).unwrap_or(0));
    m.push(bits);
    m.resize(NLMSG_HDR + RTMSG, 0);
    m.extend_from_slice(&u16::try_from(attr).unwrap_or(0).to_ne_bytes());
    m.extend_from_slice(&RTA_DST.to_ne_bytes());
    m.extend_from_slice(&bytes);
    m
}

/// The gateway of the route in an `RTM_NEWROUTE` answer; `Some(None)` for
/// a route without one (the destination is on the link), `None` when the
/// answer is not a route (an error, a malformed buffer).
fn parse_route(buf: &[u8], seq: u32) -> Option<Option<IpAddr>> {
    if buf.len() < NLMSG_HDR + RTMSG {
        return None;
    }
    let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    let got = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
    if kind != RTM_NEWROUTE || got != seq || len > buf.len() || len < NLMSG_HDR + RTMSG {
        return None;
    }
    let b = &buf[NLMSG_HDR..len];
    let family = i32::from(b[0]);
    let mut at = RTMSG;
    while at + 4 <= b.len() {
        let alen = usize::from(u16::from_ne_bytes([b[at], b[at + 1]]));
        let kind = u16::from_ne_bytes([b[at + 2], b[at + 3]]);
        if alen < 4 || at + alen > b.len() {
            return None;
        }
        let data = &b[at + 4..at + alen];
        if kind == RTA_GATEWAY {
            return Some(match (family, data.len()) {
                (libc::AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::new(
                    data[0], data[1], data[2], data[3],
                ))),
                (libc::AF_INET6, 16) => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(data);
                    Some(IpAddr::V6(Ipv6Addr::from(a)))
                }
                _ => None,
            });
        }
        at += (alen + 3) & !3;
    }
    Some(None)
}

/// The neighbour a packet to `to` is handed to: the route's gateway, or
/// `to` itself on its link; `to` where the route cannot be read (the
/// report then looks for the target's own entry only).
pub(super) fn next_hop(to: IpAddr) -> IpAddr {
    route_gateway(to).flatten().unwrap_or(to)
}

#[cfg(target_os = "linux")]
fn route_gateway(to: IpAddr) -> Option<Option<IpAddr>> {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{MsgFlags, NetlinkAddr, SockProtocol, recv, sendto};

    let fd = crate::probe::sock_diag::netlink_socket(SockProtocol::NetlinkRoute)?;
    let seq = 2;
    sendto(
        fd.as_raw_fd(),
        &route_request(to, seq),
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .ok()?;
    let mut buf = vec![0u8; 8 * 1024];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).ok()?;
    parse_route(buf.get(..n)?, seq)
}

#[cfg(not(target_os = "linux"))]
fn route_gateway(_to: IpAddr) -> Option<Option<IpAddr>> {
    None
}

/// This namespace's neighbour entries, both families; `None` where
/// netlink cannot tell (the report then says less, never a guess).
#[cfg(target_os = "linux")]
pub(super) fn read() -> Option<Vec<Entry>> {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{MsgFlags, NetlinkAddr, SockProtocol, recv, sendto};

    let fd = crate::probe::sock_diag::netlink_socket(SockProtocol::NetlinkRoute)?;
    let seq = 1;
    sendto(
        fd.as_raw_fd(),
        &request(seq),
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .ok()?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    // Bounded: a neighbour table is a few buffers; this only stops a
    // kernel that never says done.
    for _ in 0..10_000 {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).ok()?;
        if n == 0 {
            return None;
        }
        if parse(buf.get(..n)?, seq, &mut out)? {
            return Some(out);
        }
    }
    None
}

/// Not Linux: no netlink.
#[cfg(not(target_os = "linux"))]
pub(super) fn read() -> Option<Vec<Entry>> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neigh(seq: u32, family: u8, state: u16, dst: &[u8]) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        body.extend_from_slice(&2i32.to_ne_bytes());
        body.extend_from_slice(&state.to_ne_bytes());
        body.extend_from_slice(&[0, 1]);
        let attr_len = u16::try_from(4 + dst.len()).unwrap();
        body.extend_from_slice(&attr_len.to_ne_bytes());
        body.extend_from_slice(&NDA_DST.to_ne_bytes());
        body.extend_from_slice(dst);
        while body.len() % 4 != 0 {
            body.push(0);
        }
        header(RTM_NEWNEIGH, seq, &body)
    }

    fn header(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&u32::try_from(NLMSG_HDR + body.len()).unwrap().to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn entries_of_both_families_parse_and_unresolved_ones_are_named() {
        let v6: Ipv6Addr = "2001:2::11".parse().unwrap();
        let mut buf = neigh(7, libc::AF_INET as u8, 0x02, &[198, 18, 0, 1]);
        buf.extend(neigh(7, libc::AF_INET6 as u8, NUD_FAILED, &v6.octets()));
        buf.extend(neigh(7, libc::AF_INET6 as u8, NUD_INCOMPLETE, &[0xfe; 16]));
        buf.extend(neigh(8, libc::AF_INET as u8, NUD_FAILED, &[198, 18, 0, 9]));
        let mut out = Vec::new();
        assert_eq!(parse(&buf, 7, &mut out), Some(false));
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(
            parse(&header(NLMSG_DONE, 7, &[0; 4]), 7, &mut out),
            Some(true)
        );
        assert_eq!(failure(&out, "198.18.0.1".parse().unwrap()), None);
        assert_eq!(
            failure(&out, IpAddr::V6(v6)),
            Some(NeighbourFailure {
                address: IpAddr::V6(v6),
                state: "failed".into()
            })
        );
        assert_eq!(
            failure(&out, "198.18.0.9".parse().unwrap()),
            None,
            "another request's entry"
        );
        assert_eq!(unresolved(NUD_INCOMPLETE), Some("incomplete"));
    }

    #[test]
    fn the_request_dumps_every_family() {
        let r = request(3);
        assert_eq!(r.len(), NLMSG_HDR + NDMSG);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), RTM_GETNEIGH);
        assert_eq!(r[NLMSG_HDR], 0, "AF_UNSPEC");
    }

    #[test]
    fn a_routes_gateway_is_its_next_hop_and_a_link_route_has_none() {
        let req = route_request("198.18.3.40".parse().unwrap(), 9);
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), RTM_GETROUTE);
        assert_eq!(req[NLMSG_HDR + 1], 32);
        assert_eq!(&req[req.len() - 4..], &[198, 18, 3, 40]);
        let route = |attrs: &[(u16, &[u8])]| {
            let mut body = vec![libc::AF_INET as u8, 32, 0, 0, 254, 0, 0, 1, 0, 0, 0, 0];
            for (kind, data) in attrs {
                let len = u16::try_from(4 + data.len()).unwrap();
                body.extend_from_slice(&len.to_ne_bytes());
                body.extend_from_slice(&kind.to_ne_bytes());
                body.extend_from_slice(data);
            }
            header(RTM_NEWROUTE, 9, &body)
        };
        let via = route(&[
            (RTA_DST, &[198, 18, 3, 40]),
            (RTA_GATEWAY, &[198, 18, 1, 254]),
        ]);
        assert_eq!(
            parse_route(&via, 9),
            Some(Some("198.18.1.254".parse().unwrap()))
        );
        assert_eq!(
            parse_route(&route(&[(RTA_DST, &[198, 18, 1, 7])]), 9),
            Some(None)
        );
        assert_eq!(parse_route(&via, 10), None, "another request's answer");
        // Loopback is on no gateway's far side.
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(next_hop(lo), lo);
    }

    #[test]
    fn this_namespace_table_reads() {
        // Every Linux test host can dump its own neighbour table.
        assert!(read().is_some());
    }
}
