//! The ICMP error itself, read from a probe socket's error queue
//! (`IP_RECVERR` / `IPV6_RECVERR`, `MSG_ERRQUEUE`): its type, code and the
//! address of the device that sent it (`SO_EE_OFFENDER`). `connect`'s errno
//! says only that *some* ICMP error came back; the queue says who answered,
//! which is what tells a router's reject from the target's own.
//!
//! Linux only, through `nix` (no `unsafe` here). Elsewhere, and whenever the
//! queue cannot be read, the functions report "nothing" and the errno-only
//! classification ([`super::classify`]) stands on its own.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// An ICMP (or ICMPv6) error that came back for a probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcmpEvidence {
    /// A stable name for the type and code (`admin-prohibited`,
    /// `port-unreachable`, `time-exceeded`, ...; `icmp-TYPE-CODE` for the
    /// rare ones without a name).
    #[serde(rename = "type")]
    pub kind: String,
    /// The raw ICMP code (of ICMPv6 for IPv6 paths).
    pub code: u8,
    /// The address of the device that sent it.
    pub from: String,
}

impl IcmpEvidence {
    /// Whether this is a "time exceeded" (an expired TTL / hop limit).
    pub fn is_time_exceeded(&self) -> bool {
        self.kind == "time-exceeded"
    }

    /// The sender's address, when it parses.
    pub fn from_ip(&self) -> Option<IpAddr> {
        self.from.parse().ok()
    }
}

/// `SO_EE_ORIGIN_ICMP` and `SO_EE_ORIGIN_ICMP6` from `linux/errqueue.h`.
const ORIGIN_ICMP: u8 = 2;
const ORIGIN_ICMP6: u8 = 3;

/// The stable name of an ICMP error, from its origin (`v6`), type and code.
pub fn icmp_name(v6: bool, kind: u8, code: u8) -> String {
    let name = if v6 {
        match (kind, code) {
            (1, 0) => "net-unreachable",
            (1, 1) => "admin-prohibited",
            (1, 3) => "host-unreachable",
            (1, 4) => "port-unreachable",
            (1, 5) | (1, 6) => "admin-prohibited",
            (2, _) => "frag-needed",
            (3, _) => "time-exceeded",
            _ => "",
        }
    } else {
        match (kind, code) {
            (3, 0) | (3, 6) => "net-unreachable",
            (3, 1) | (3, 7) => "host-unreachable",
            (3, 3) => "port-unreachable",
            (3, 4) => "frag-needed",
            (3, 9) | (3, 11) => "net-prohibited",
            (3, 10) | (3, 12) => "host-prohibited",
            (3, 13) => "admin-prohibited",
            (11, _) => "time-exceeded",
            _ => "",
        }
    };
    if name.is_empty() {
        format!("icmp{}-{kind}-{code}", if v6 { "v6" } else { "" })
    } else {
        name.to_string()
    }
}

/// Evidence from the raw fields of one `sock_extended_err`: `origin`,
/// `kind` (`ee_type`), `code` and the offender's address. `None` for queue
/// entries that are not ICMP errors (local errors, timestamps).
pub fn evidence_from(origin: u8, kind: u8, code: u8, from: Option<IpAddr>) -> Option<IcmpEvidence> {
    let v6 = match origin {
        ORIGIN_ICMP => false,
        ORIGIN_ICMP6 => true,
        _ => return None,
    };
    let from = from?;
    // An IPv4-mapped IPv6 offender is an IPv4 device.
    let from = match from {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(from, IpAddr::V4),
        IpAddr::V4(_) => from,
    };
    Some(IcmpEvidence {
        kind: icmp_name(v6, kind, code),
        code,
        from: from.to_string(),
    })
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io::IoSliceMut;
    use std::os::fd::{AsFd, AsRawFd};

    use nix::sys::socket::{
        ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
    };

    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::{IcmpEvidence, evidence_from};

    /// Asks the kernel to queue ICMP errors on `fd` with their sender.
    /// Returns false where that is not available; the probe goes on
    /// without it.
    pub fn enable(fd: &impl AsFd, v6: bool) -> bool {
        let r = if v6 {
            setsockopt(fd, sockopt::Ipv6RecvErr, &true)
        } else {
            setsockopt(fd, sockopt::Ipv4RecvErr, &true)
        };
        r.is_ok()
    }

    /// The most recent ICMP error queued on `fd`, if any. Never blocks.
    pub fn read(fd: &impl AsFd) -> Option<IcmpEvidence> {
        let mut last = None;
        // The queue holds at most a few entries; read them all so the last
        // word is the one reported.
        for _ in 0..8 {
            let mut data = [0u8; 64];
            let mut iov = [IoSliceMut::new(&mut data)];
            let mut cmsg = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6);
            let Ok(msg) = recvmsg::<SockaddrStorage>(
                fd.as_fd().as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
            ) else {
                break;
            };
            let Ok(cmsgs) = msg.cmsgs() else { break };
            for c in cmsgs {
                let found = match c {
                    ControlMessageOwned::Ipv4RecvErr(e, addr) => {
                        let from = addr
                            .map(|a| IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))));
                        evidence_from(e.ee_origin, e.ee_type, e.ee_code, from)
                    }
                    ControlMessageOwned::Ipv6RecvErr(e, addr) => {
                        let from = addr.map(|a| IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)));
                        evidence_from(e.ee_origin, e.ee_type, e.ee_code, from)
                    }
                    _ => None,
                };
                if found.is_some() {
                    last = found;
                }
            }
        }
        last
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    /// Not available here.
    pub fn enable<T>(_fd: &T, _v6: bool) -> bool {
        false
    }

    /// Not available here.
    pub fn read<T>(_fd: &T) -> Option<IcmpEvidence> {
        None
    }
}

pub use imp::{enable, read};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_types_have_stable_names() {
        let cases = [
            (false, 3, 13, "admin-prohibited"),
            (false, 3, 10, "host-prohibited"),
            (false, 3, 9, "net-prohibited"),
            (false, 3, 3, "port-unreachable"),
            (false, 3, 1, "host-unreachable"),
            (false, 3, 0, "net-unreachable"),
            (false, 3, 4, "frag-needed"),
            (false, 11, 0, "time-exceeded"),
            (true, 1, 1, "admin-prohibited"),
            (true, 1, 4, "port-unreachable"),
            (true, 1, 3, "host-unreachable"),
            (true, 1, 0, "net-unreachable"),
            (true, 2, 0, "frag-needed"),
            (true, 3, 0, "time-exceeded"),
            (false, 5, 1, "icmp-5-1"),
            (true, 4, 1, "icmpv6-4-1"),
        ];
        for (v6, t, c, want) in cases {
            assert_eq!(icmp_name(v6, t, c), want, "v6={v6} {t}/{c}");
        }
    }

    #[test]
    fn only_icmp_origins_with_a_sender_are_evidence() {
        let router: IpAddr = "198.18.1.254".parse().unwrap();
        let e = evidence_from(ORIGIN_ICMP, 3, 13, Some(router)).unwrap();
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"admin-prohibited","code":13,"from":"198.18.1.254"}"#
        );
        // SO_EE_ORIGIN_LOCAL (1): the kernel's own, not an ICMP message.
        assert_eq!(evidence_from(1, 0, 0, Some(router)), None);
        assert_eq!(evidence_from(ORIGIN_ICMP, 3, 13, None), None);
        let mapped: IpAddr = "::ffff:198.18.1.254".parse().unwrap();
        let e = evidence_from(ORIGIN_ICMP6, 1, 4, Some(mapped)).unwrap();
        assert_eq!(e.from, "198.18.1.254");
        assert_eq!(e.kind, "port-unreachable");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_empty_queue_reads_as_nothing() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(enable(&s, false));
        assert_eq!(read(&s), None);
    }

    /// A UDP datagram to a closed loopback port brings back an ICMP
    /// port-unreachable from 127.0.0.1: the queue names its sender.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_port_unreachable_on_loopback_is_read_with_its_sender() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = closed.local_addr().unwrap();
        drop(closed);
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(enable(&s, false));
        s.connect(target).unwrap();
        s.send(b"x").unwrap();
        let mut got = None;
        for _ in 0..50 {
            got = read(&s);
            if got.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let got = got.expect("an ICMP error queued");
        assert_eq!(got.kind, "port-unreachable");
        assert_eq!(got.from, "127.0.0.1");
    }
}
