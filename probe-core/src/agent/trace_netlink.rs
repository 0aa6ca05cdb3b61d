//! The kernel's nftables trace events read straight from netlink
//! (`NETLINK_NETFILTER`, group `NFNLGRP_NFTRACE`): the same events
//! `nft monitor trace` prints, without `nft`'s text in between. The
//! messages are the kernel's ABI (`enum nft_trace_attributes` in
//! `linux/netfilter/nf_tables.h`), stable across nftables releases, where
//! the monitor's text and its JSON change with the release (nftables
//! 1.0.6, Debian 12's, does not even print JSON for trace events: `nft -j
//! monitor trace` gives the same text there).
//!
//! A message names the rule by handle, not by text: the tracer reads the
//! text of a stopping rule back by handle (`nft -a list chain`), as it
//! does for rules the monitor did not know. The socket is subscribed
//! before the round's trace table exists, so no event of the round is
//! missed and no readiness handshake is needed. Subscribing needs
//! CAP_NET_ADMIN, as the table does; where it fails the tracer falls back
//! to `nft -a monitor`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::trace_event::{ChainRef, TraceLine};

/// `NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_TRACE`: a trace event.
const TRACE_MESSAGE: u16 = (10 << 8) | 17;
/// Attributes of a trace message (`enum nft_trace_attributes`).
const TABLE: u16 = 1;
const CHAIN: u16 = 2;
const RULE_HANDLE: u16 = 3;
const TYPE: u16 = 4;
const VERDICT: u16 = 5;
const ID: u16 = 6;
const NETWORK_HEADER: u16 = 8;
const TRANSPORT_HEADER: u16 = 9;
const POLICY: u16 = 16;
/// `NFTA_VERDICT_CODE` and `NFTA_VERDICT_CHAIN`, nested in `VERDICT`.
const VERDICT_CODE: u16 = 1;
const VERDICT_CHAIN: u16 = 2;
/// `enum nft_trace_types`.
const TYPE_POLICY: u32 = 1;
const TYPE_RULE: u32 = 3;

/// Parses one datagram of trace messages into events, in order: a message
/// carrying the packet's headers (the first of each base chain) gives a
/// `Packet` (TCP only) before its own rule or policy event. Anything else
/// (other messages, `return` events, truncated data) gives nothing.
pub fn parse(datagram: &[u8], out: &mut Vec<TraceLine>) {
    let mut rest = datagram;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < 16 || len > rest.len() {
            return;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if kind == TRACE_MESSAGE {
            message(&rest[16..len], out);
        }
        rest = &rest[align(len).min(rest.len())..];
    }
}

const fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// The attributes of `data`, as `(type, payload)`.
fn attributes(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([data[0], data[1]]));
        // The top two bits are the nested and byte-order flags.
        let kind = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if len < 4 || len > data.len() {
            break;
        }
        out.push((kind, &data[4..len]));
        data = &data[align(len).min(data.len())..];
    }
    out
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The family name `nft` prints for an `NFPROTO_*` value.
fn family(nfproto: u8) -> String {
    match nfproto {
        1 => "inet".into(),
        2 => "ip".into(),
        3 => "arp".into(),
        5 => "netdev".into(),
        7 => "bridge".into(),
        10 => "ip6".into(),
        other => format!("family-{other}"),
    }
}

/// A verdict in `nft`'s words (`enum nft_verdicts` and the netfilter
/// verdicts).
fn verdict(nested: &[u8]) -> Option<String> {
    let attrs = attributes(nested);
    let code = attrs.iter().find(|(k, _)| *k == VERDICT_CODE)?;
    let chain = attrs
        .iter()
        .find(|(k, _)| *k == VERDICT_CHAIN)
        .map(|(_, v)| text(v));
    #[allow(clippy::cast_possible_wrap)] // the kernel's verdicts are signed
    let code = be32(code.1)? as i32;
    Some(match code {
        0 => "drop".into(),
        1 => "accept".into(),
        2 => "stolen".into(),
        3 => "queue".into(),
        4 => "repeat".into(),
        5 => "stop".into(),
        -1 => "continue".into(),
        -2 => "break".into(),
        -3 => format!("jump {}", chain.unwrap_or_default()),
        -4 => format!("goto {}", chain.unwrap_or_default()),
        -5 => "return".into(),
        other => format!("verdict-{other}"),
    })
}

/// Source, destination and TCP destination port from the headers; `None`
/// for anything but TCP over IPv4 or IPv6.
fn packet(network: &[u8], transport: &[u8]) -> Option<(IpAddr, IpAddr, u16)> {
    let (source, dest, protocol) = match network.first()? >> 4 {
        4 => {
            let s: [u8; 4] = network.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = network.get(16..20)?.try_into().ok()?;
            (
                IpAddr::V4(Ipv4Addr::from(s)),
                IpAddr::V4(Ipv4Addr::from(d)),
                *network.get(9)?,
            )
        }
        6 => {
            let s: [u8; 16] = network.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = network.get(24..40)?.try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                *network.get(6)?,
            )
        }
        _ => return None,
    };
    // TCP (an IPv6 packet with extension headers says so here too: not
    // traced, as the text reader does not either).
    if protocol != 6 {
        return None;
    }
    let port = u16::from_be_bytes(transport.get(2..4)?.try_into().ok()?);
    Some((source, dest, port))
}

/// One trace message (after the netlink header): its events into `out`.
fn message(payload: &[u8], out: &mut Vec<TraceLine>) {
    // The nfgenmsg: family, version, resource id.
    let Some(&nfproto) = payload.first() else {
        return;
    };
    let Some(rest) = payload.get(4..) else {
        return;
    };
    let attrs = attributes(rest);
    let get = |k: u16| attrs.iter().find(|(kind, _)| *kind == k).map(|(_, v)| *v);
    let (Some(id), Some(table), Some(chain), Some(kind)) = (
        get(ID).and_then(be32),
        get(TABLE),
        get(CHAIN),
        get(TYPE).and_then(be32),
    ) else {
        return;
    };
    let id = format!("{id:08x}");
    let at = ChainRef {
        family: family(nfproto),
        table: text(table),
        chain: text(chain),
    };
    if let (Some(n), Some(t)) = (get(NETWORK_HEADER), get(TRANSPORT_HEADER))
        && let Some((source, dest, port)) = packet(n, t)
    {
        out.push(TraceLine::Packet {
            id: id.clone(),
            at: at.clone(),
            source,
            dest,
            port,
        });
    }
    match kind {
        TYPE_RULE => {
            let Some(verdict) = get(VERDICT).and_then(verdict) else {
                return;
            };
            // Without a handle (the kernel's event for a chain's end
            // before its policy) it names no rule: `nft` prints nothing.
            let Some(handle) = get(RULE_HANDLE)
                .and_then(|h| h.get(..8))
                .and_then(|h| h.try_into().ok())
                .map(u64::from_be_bytes)
            else {
                return;
            };
            out.push(TraceLine::Rule {
                id,
                at,
                handle: Some(handle),
                text: None,
                verdict,
            });
        }
        TYPE_POLICY => {
            let policy = match get(POLICY).and_then(be32) {
                Some(0) => "drop",
                Some(1) => "accept",
                _ => return,
            };
            out.push(TraceLine::Policy {
                id,
                at,
                policy: policy.into(),
            });
        }
        _ => {}
    }
}

/// A netlink socket subscribed to this namespace's trace events.
#[derive(Debug)]
pub struct Subscription(OwnedFd);

/// Subscribes to trace events; the error says why not (no privilege, no
/// nf_tables in this kernel).
pub fn subscribe() -> std::io::Result<Subscription> {
    use nix::sys::socket::{
        AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, setsockopt, socket,
        sockopt,
    };
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )?;
    // A round's packets come in bursts: room for many events.
    let _ = setsockopt(&fd, sockopt::RcvBuf, &(4 << 20));
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(0, 200_000),
    )?;
    // NFNLGRP_NFTRACE is group 9: bit 8 of the group mask.
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1 << 8))?;
    Ok(Subscription(fd))
}

impl Subscription {
    /// Reads events on a thread of its own, handing each to `record`,
    /// until `stop` is set or `until` passes (the round's TTL: nothing
    /// reads for longer, even if the round is never stopped).
    pub fn read(
        self,
        stop: Arc<AtomicBool>,
        until: Instant,
        mut record: impl FnMut(TraceLine) + Send + 'static,
    ) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("nftrace-netlink".into())
            .spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                let mut events = Vec::new();
                while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                    match nix::sys::socket::recv(
                        self.0.as_raw_fd(),
                        &mut buf,
                        nix::sys::socket::MsgFlags::empty(),
                    ) {
                        Ok(n) => {
                            parse(&buf[..n], &mut events);
                            events.drain(..).for_each(&mut record);
                        }
                        // A burst beyond the buffer: those events are
                        // lost, the later ones still come.
                        Err(nix::errno::Errno::ENOBUFS) => {
                            tracing::debug!("trace events lost: the netlink buffer overflowed");
                        }
                        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "reading trace events failed");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Netlink trace datagrams recorded from kernel 6.18 by
    /// `scripts/lab/record_nft_trace.sh` (hex, one a line), for the same
    /// four packets as `nft-1.0.6-monitor-trace.txt`.
    const RECORDED: &str = include_str!("testdata/netlink-6.18.44-trace.hex");
    /// `nft -a monitor trace` of nftables 1.0.6 for those packets.
    const TEXT: &str = include_str!("testdata/nft-1.0.6-monitor-trace.txt");

    fn hex(line: &str) -> Vec<u8> {
        (0..line.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap())
            .collect()
    }

    fn recorded() -> Vec<TraceLine> {
        let mut out = Vec::new();
        for line in RECORDED.lines().filter(|l| !l.trim().is_empty()) {
            parse(&hex(line.trim()), &mut out);
        }
        out
    }

    #[test]
    fn recorded_netlink_events_give_what_the_text_monitor_printed() {
        let from_netlink = recorded();
        // The text names rules by text and handle; netlink by handle only
        // (the tracer reads the text back by handle).
        let from_text: Vec<TraceLine> = TEXT
            .lines()
            .filter_map(super::super::nftrace::parse_line)
            .map(|l| match l {
                TraceLine::Rule {
                    id,
                    at,
                    handle,
                    verdict,
                    ..
                } => TraceLine::Rule {
                    id,
                    at,
                    handle,
                    text: None,
                    verdict,
                },
                other => other,
            })
            .collect();
        assert_eq!(from_text.len(), 20, "{from_text:#?}");
        assert_eq!(from_netlink, from_text);
    }

    /// `nft -j monitor trace` of nftables 1.0.6 (Debian 12) for those
    /// packets: no JSON for trace events, the same text as without `-j`.
    #[test]
    fn nft_1_0_6_prints_trace_events_as_text_even_with_json_asked() {
        let json = include_str!("testdata/nft-1.0.6-monitor-trace.jsonl");
        assert!(json.lines().all(|l| l.starts_with("trace id ")), "{json}");
        let parsed = json
            .lines()
            .filter_map(super::super::nftrace::parse_line)
            .count();
        assert_eq!(parsed, 20);
    }

    #[test]
    fn recorded_events_name_each_stop() {
        let stops: Vec<String> = recorded()
            .into_iter()
            .filter_map(|l| match l {
                TraceLine::Rule {
                    at,
                    handle,
                    verdict,
                    ..
                } if verdict == "drop" => Some(format!(
                    "{} {} {} rule {handle:?}",
                    at.family, at.table, at.chain
                )),
                TraceLine::Policy { at, policy, .. } if policy == "drop" => {
                    Some(format!("{} {} {} policy", at.family, at.table, at.chain))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            stops,
            [
                "inet filter input rule Some(2)",
                "inet filter input rule Some(3)",
                "ip6 filter6 input policy",
                "ip legacyish OUTPUT rule Some(2)",
            ]
        );
    }

    #[test]
    fn truncated_and_foreign_messages_give_nothing() {
        let first = hex(RECORDED.lines().next().unwrap().trim());
        for cut in [0, 3, 15, 16, 20, first.len() - 1] {
            let mut out = Vec::new();
            parse(&first[..cut], &mut out);
            assert!(out.is_empty(), "cut at {cut}: {out:?}");
        }
        let mut other = first.clone();
        other[4] = 3; // another message type
        let mut out = Vec::new();
        parse(&other, &mut out);
        assert!(out.is_empty());
    }
}
