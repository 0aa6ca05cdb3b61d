//! Where a silent path goes dark: a bounded TCP TTL walk toward the target's
//! own port. SYNs leave with TTL (hop limit) 1, 2, ... up to
//! [`MAX_HOPS`], all at once, each on its own socket with `IP_RECVERR`, so
//! that every router on the way that lets the SYN through answers with an
//! ICMP time-exceeded carrying its address. The last router that answered
//! is the last hop before the silence.
//!
//! Bounds: at most [`MAX_HOPS`] sockets per walk, all sent together, and
//! the walk ends after [`WalkConfig::deadline`] (default 1 s) whatever
//! answered. It needs no privilege (ordinary TCP sockets, `IP_TTL` and the
//! error queue). It is skipped when the target is on the source's own link
//! (the main routing table sends it there without a gateway): there is no
//! router to name.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::errqueue;

/// Most hops a walk tries.
pub const MAX_HOPS: u8 = 16;

/// How a walk is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkConfig {
    /// Highest TTL tried (at most [`MAX_HOPS`]).
    pub max_hops: u8,
    /// How long the walk waits for answers.
    pub deadline: Duration,
    /// Local address to send from.
    pub source: Option<IpAddr>,
}

impl Default for WalkConfig {
    fn default() -> WalkConfig {
        WalkConfig {
            max_hops: MAX_HOPS,
            deadline: Duration::from_secs(1),
            source: None,
        }
    }
}

/// A router that answered a walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// Its address (the sender of the time-exceeded).
    pub address: String,
    /// Its distance from the source, in hops (the TTL that expired there).
    pub distance: u8,
}

/// What a walk found.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Walk {
    /// The farthest router that answered with time-exceeded; `None` when
    /// none did.
    pub last_hop: Option<Hop>,
    /// The smallest TTL at which the target itself answered (a SYN-ACK or a
    /// reset), if any did: the path was not silent to the walk.
    pub reached_at: Option<u8>,
}

/// What one TTL brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Expired(String),
    Reached,
    Nothing,
}

/// Walks toward `target`. Never fails: what could not be tried is silence.
pub async fn walk(target: SocketAddr, config: WalkConfig) -> Walk {
    let hops = config.max_hops.clamp(1, MAX_HOPS);
    let mut set = JoinSet::new();
    for ttl in 1..=hops {
        set.spawn(async move {
            let answer = timeout(config.deadline, one(target, ttl, config.source))
                .await
                .unwrap_or(Answer::Nothing);
            (ttl, answer)
        });
    }
    let mut answers = Vec::with_capacity(usize::from(hops));
    while let Some(r) = set.join_next().await {
        if let Ok(a) = r {
            answers.push(a);
        }
    }
    summarize(answers)
}

/// The walk's result from each TTL's answer.
fn summarize(mut answers: Vec<(u8, Answer)>) -> Walk {
    answers.sort_by_key(|(ttl, _)| *ttl);
    let reached_at = answers
        .iter()
        .find(|(_, a)| *a == Answer::Reached)
        .map(|(t, _)| *t);
    let last_hop = answers
        .iter()
        .filter(|(t, _)| reached_at.is_none_or(|r| *t < r))
        .filter_map(|(t, a)| match a {
            Answer::Expired(from) => Some(Hop {
                address: from.clone(),
                distance: *t,
            }),
            _ => None,
        })
        .next_back();
    Walk {
        last_hop,
        reached_at,
    }
}

async fn one(target: SocketAddr, ttl: u8, source: Option<IpAddr>) -> Answer {
    let Ok(socket) = Socket::new(
        Domain::for_address(target),
        Type::STREAM.nonblocking().cloexec(),
        Some(socket2::Protocol::TCP),
    ) else {
        return Answer::Nothing;
    };
    let set = if target.is_ipv6() {
        socket.set_unicast_hops_v6(u32::from(ttl))
    } else {
        socket.set_ttl_v4(u32::from(ttl))
    };
    if set.is_err() || !errqueue::enable(&socket, target.is_ipv6()) {
        return Answer::Nothing;
    }
    let _ = socket.set_linger(Some(Duration::ZERO));
    if let Some(src) = source.filter(|s| s.is_ipv4() == target.is_ipv4()) {
        if socket
            .bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .is_err()
        {
            return Answer::Nothing;
        }
    }
    match socket.connect(&SockAddr::from(target)) {
        Ok(()) => return Answer::Reached,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(_) => return expired_or_not(&socket),
    }
    let Ok(stream) = TcpStream::from_std(socket.into()) else {
        return Answer::Nothing;
    };
    if stream.writable().await.is_err() {
        return Answer::Nothing;
    }
    match stream.take_error() {
        Ok(None) => Answer::Reached,
        Ok(Some(e)) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            // A reset, or an ICMP port-unreachable from the target itself.
            match errqueue::read(&stream) {
                Some(icmp) if icmp.is_time_exceeded() => Answer::Expired(icmp.from),
                _ => Answer::Reached,
            }
        }
        _ => expired_or_not(&stream),
    }
}

fn expired_or_not(fd: &impl std::os::fd::AsFd) -> Answer {
    match errqueue::read(fd) {
        Some(icmp) if icmp.is_time_exceeded() => Answer::Expired(icmp.from),
        _ => Answer::Nothing,
    }
}

/// Whether `target` is on this host's own link: the main routing table
/// reaches it without a gateway. `None` when the table cannot be read (not
/// Linux, no `/proc`), in which case a walk is worth trying.
pub fn on_link(target: IpAddr) -> Option<bool> {
    match target {
        IpAddr::V4(_) => std::fs::read_to_string("/proc/net/route")
            .ok()
            .and_then(|t| on_link_v4(&t, target)),
        IpAddr::V6(_) => std::fs::read_to_string("/proc/net/ipv6_route")
            .ok()
            .and_then(|t| on_link_v6(&t, target)),
    }
}

const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;
const RTF_REJECT: u32 = 0x200;

/// From `/proc/net/route`: the longest matching route's gateway flag.
fn on_link_v4(table: &str, target: IpAddr) -> Option<bool> {
    let IpAddr::V4(t) = target else { return None };
    let t = u32::from(t);
    let mut best: Option<(u32, bool)> = None;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        // Addresses are in network order, printed as a native-endian
        // (little-endian on every Linux this runs on) hex word.
        let parse = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::swap_bytes);
        let (Some(dest), Some(flags), Some(mask)) =
            (parse(f[1]), u32::from_str_radix(f[3], 16).ok(), parse(f[7]))
        else {
            continue;
        };
        if flags & RTF_UP == 0 || flags & RTF_REJECT != 0 || t & mask != dest {
            continue;
        }
        let len = mask.count_ones();
        if best.is_none_or(|(l, _)| len > l) {
            best = Some((len, flags & RTF_GATEWAY == 0));
        }
    }
    best.map(|(_, link)| link)
}

/// From `/proc/net/ipv6_route`: the longest matching route's gateway flag.
fn on_link_v6(table: &str, target: IpAddr) -> Option<bool> {
    let IpAddr::V6(t) = target else { return None };
    let t = u128::from(t);
    let mut best: Option<(u32, bool)> = None;
    for line in table.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[9] == "lo" {
            continue;
        }
        let (Ok(dest), Ok(len), Ok(flags)) = (
            u128::from_str_radix(f[0], 16),
            u32::from_str_radix(f[1], 16),
            u32::from_str_radix(f[8], 16),
        ) else {
            continue;
        };
        if len > 128 || flags & RTF_UP == 0 || flags & RTF_REJECT != 0 {
            continue;
        }
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        if t & mask != dest {
            continue;
        }
        if best.is_none_or(|(l, _)| len > l) {
            best = Some((len, flags & RTF_GATEWAY == 0));
        }
    }
    best.map(|(_, link)| link)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\tFE0112C6\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000112C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";

    #[test]
    fn the_main_table_says_which_targets_share_our_link() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(on_link_v4(ROUTE, ip("198.18.1.20")), Some(true));
        assert_eq!(on_link_v4(ROUTE, ip("198.18.3.40")), Some(false));
        assert_eq!(on_link_v4("Iface\n", ip("198.18.3.40")), None);
        let v6 = "\
20010002000000010000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 200100020000000100000000000000fe 00000400 00000001 00000000 00000003 eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo
";
        assert_eq!(on_link_v6(v6, ip("2001:2:0:1::20")), Some(true));
        assert_eq!(on_link_v6(v6, ip("2001:2:0:3::40")), Some(false));
    }

    #[test]
    fn the_last_router_before_the_silence_is_the_one_named() {
        let w = summarize(vec![
            (3, Answer::Nothing),
            (1, Answer::Expired("198.18.1.254".into())),
            (2, Answer::Expired("198.18.9.254".into())),
        ]);
        assert_eq!(
            w.last_hop,
            Some(Hop {
                address: "198.18.9.254".into(),
                distance: 2
            })
        );
        assert_eq!(w.reached_at, None);
        // Hops at or beyond the target's own answer are not "before" it.
        let w = summarize(vec![
            (1, Answer::Expired("198.18.1.254".into())),
            (2, Answer::Reached),
            (3, Answer::Reached),
        ]);
        assert_eq!(w.reached_at, Some(2));
        assert_eq!(w.last_hop.unwrap().distance, 1);
        assert_eq!(summarize(vec![(1, Answer::Nothing)]), Walk::default());
    }

    #[tokio::test]
    async fn a_walk_to_a_loopback_listener_reaches_it_at_the_first_hop() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let w = walk(
            l.local_addr().unwrap(),
            WalkConfig {
                max_hops: 3,
                deadline: Duration::from_millis(500),
                source: None,
            },
        )
        .await;
        assert_eq!(w.reached_at, Some(1));
        assert_eq!(w.last_hop, None);
    }
}
