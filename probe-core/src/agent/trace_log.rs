//! The traced packets of a round, by flow ([`TraceLog`]): what both of
//! nftrace's readers (netlink and `nft -a monitor` text) feed their
//! `TraceLine`s into. A packet's flow is set by the first line of its
//! trace id in our own table (`pre`: arriving for a canary, `out`: this
//! host's probe, `transit`: a path between two other plan hosts that this
//! host forwards), and the first drop or reject it meets in any other
//! table is the flow's stop.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::trace_event::TraceLine;
use crate::control::{TraceDirection, TraceStop, TracedFlow};

/// Flows kept per round; packets beyond are still counted by no one.
const MAX_FLOWS: usize = 4096;

/// Trace ids remembered at once (a packet's lines arrive together).
const MAX_IDS: usize = 8192;

/// A flow's key: direction, source, destination, port.
type FlowKey = (TraceDirection, IpAddr, IpAddr, u16);

/// The traced packets of a round, by flow.
#[derive(Debug, Default)]
pub struct TraceLog {
    /// Our own table's name: its lines only say which way a packet goes.
    table: String,
    /// Trace id → the flow its packet belongs to.
    ids: HashMap<String, FlowKey>,
    /// Flow → packets and the first stop.
    flows: BTreeMap<FlowKey, (u32, Option<TraceStop>)>,
}

impl TraceLog {
    /// A log for the packets our table `table` marks.
    pub fn new(table: &str) -> TraceLog {
        TraceLog {
            table: table.to_string(),
            ..TraceLog::default()
        }
    }

    /// Takes one parsed trace line.
    pub fn record(&mut self, line: TraceLine) {
        match line {
            TraceLine::Packet {
                id,
                at,
                source,
                dest,
                port,
            } => {
                // The first packet line of an id is in our own chain (it
                // runs first); later ones are the same packet elsewhere.
                if at.table != self.table {
                    return;
                }
                let direction = match at.chain.as_str() {
                    "out" => TraceDirection::Out,
                    "transit" => TraceDirection::Forward,
                    _ => TraceDirection::In,
                };
                let key = (direction, source, dest, port);
                match self.ids.get(&id) {
                    None => self.count(id, key),
                    // Marked arriving in prerouting (its source and port
                    // are a canary's), then forwarded: another host's
                    // packet crossing this one, not one for a canary.
                    Some(&known)
                        if direction == TraceDirection::Forward
                            && known.0 == TraceDirection::In =>
                    {
                        self.uncount(known);
                        self.count(id, key);
                    }
                    Some(_) => {}
                }
            }
            TraceLine::Rule {
                id,
                at,
                handle,
                text,
                verdict,
            } => {
                if at.table == self.table || !(verdict == "drop" || verdict.starts_with("reject")) {
                    return;
                }
                self.stop(
                    &id,
                    TraceStop {
                        table: format!("{} {}", at.family, at.table),
                        chain: at.chain,
                        handle,
                        text,
                        policy: None,
                    },
                );
            }
            TraceLine::Policy { id, at, policy } => {
                if at.table == self.table || policy != "drop" {
                    return;
                }
                self.stop(
                    &id,
                    TraceStop {
                        table: format!("{} {}", at.family, at.table),
                        chain: at.chain,
                        handle: None,
                        text: None,
                        policy: Some(policy),
                    },
                );
            }
        }
    }

    /// Counts packet `id` in flow `key` (while there is room for flows).
    fn count(&mut self, id: String, key: FlowKey) {
        if !self.flows.contains_key(&key) && self.flows.len() >= MAX_FLOWS {
            return;
        }
        if self.ids.len() >= MAX_IDS {
            self.ids.clear();
        }
        self.ids.insert(id, key);
        self.flows.entry(key).or_default().0 += 1;
    }

    /// Takes one packet back from flow `key`, which goes when it has no
    /// packet and no stop left.
    fn uncount(&mut self, key: FlowKey) {
        if let Some((packets, stop)) = self.flows.get_mut(&key) {
            *packets = packets.saturating_sub(1);
            if *packets == 0 && stop.is_none() {
                self.flows.remove(&key);
            }
        }
    }

    fn stop(&mut self, id: &str, stop: TraceStop) {
        let Some(key) = self.ids.get(id) else {
            return;
        };
        if let Some((_, slot @ None)) = self.flows.get_mut(key) {
            *slot = Some(stop);
        }
    }

    /// The flows, in order.
    pub fn flows(&self) -> Vec<TracedFlow> {
        self.flows
            .iter()
            .map(
                |(&(direction, source, dest, port), (packets, stop))| TracedFlow {
                    direction,
                    source,
                    dest,
                    port,
                    packets: *packets,
                    stop: stop.clone(),
                },
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::trace_event::ChainRef;

    const TABLE: &str = "portcall_trace_ab12_1999999999";

    fn at(table: &str, chain: &str) -> ChainRef {
        ChainRef {
            family: "inet".into(),
            table: table.into(),
            chain: chain.into(),
        }
    }

    fn packet(id: &str, chain: &str, source: &str, dest: &str, port: u16) -> TraceLine {
        TraceLine::Packet {
            id: id.into(),
            at: at(TABLE, chain),
            source: source.parse().unwrap(),
            dest: dest.parse().unwrap(),
            port,
        }
    }

    fn summary(log: &TraceLog) -> Vec<String> {
        log.flows()
            .iter()
            .map(|f| {
                let stop = f.stop.as_ref().map_or("passed".to_string(), |s| {
                    format!(
                        "{} {} {:?} {:?} {:?}",
                        s.table, s.chain, s.handle, s.text, s.policy
                    )
                });
                format!(
                    "{:?} {} -> {}:{} x{} {stop}",
                    f.direction, f.source, f.dest, f.port, f.packets
                )
            })
            .collect()
    }

    /// A router's forward chain stops two paths between other hosts: a
    /// rule rejects one (IPv4), the chain's policy drops the other (IPv6);
    /// a third passes. Each is a forward flow with its stop.
    #[test]
    fn forwarded_packets_are_forward_flows_with_the_forward_chains_stop() {
        let mut log = TraceLog::new(TABLE);
        let filter = |chain: &str| at("fw", chain);
        for line in [
            packet("1", "transit", "198.18.1.20", "198.18.2.40", 7102),
            TraceLine::Packet {
                id: "1".into(),
                at: filter("forward"),
                source: "198.18.1.20".parse().unwrap(),
                dest: "198.18.2.40".parse().unwrap(),
                port: 7102,
            },
            TraceLine::Rule {
                id: "1".into(),
                at: filter("forward"),
                handle: Some(9),
                text: None,
                verdict: "drop".into(),
            },
            packet("2", "transit", "2001:2:0:1::20", "2001:2:0:2::40", 7101),
            TraceLine::Policy {
                id: "2".into(),
                at: filter("forward"),
                policy: "drop".into(),
            },
            packet("3", "transit", "198.18.1.20", "198.18.2.40", 7100),
            TraceLine::Rule {
                id: "3".into(),
                at: filter("forward"),
                handle: Some(4),
                text: None,
                verdict: "accept".into(),
            },
        ] {
            log.record(line);
        }
        expect_test::expect![[r#"
            [
                "Forward 198.18.1.20 -> 198.18.2.40:7100 x1 passed",
                "Forward 198.18.1.20 -> 198.18.2.40:7102 x1 inet fw forward Some(9) None None",
                "Forward 2001:2:0:1::20 -> 2001:2:0:2::40:7101 x1 inet fw forward None None Some(\"drop\")",
            ]
        "#]]
        .assert_debug_eq(&summary(&log));
    }

    /// A packet our prerouting chain marked (its source and port are one
    /// of this host's canaries') that the host then forwards to another
    /// host is that host's path crossing this one: a forward flow, and no
    /// arriving flow is left behind for it.
    #[test]
    fn a_packet_marked_arriving_then_forwarded_counts_as_forwarded_only() {
        let mut log = TraceLog::new(TABLE);
        log.record(packet("7", "pre", "198.18.1.20", "198.18.1.254", 7200));
        log.record(packet("8", "pre", "198.18.1.20", "198.18.2.40", 7200));
        log.record(packet("8", "transit", "198.18.1.20", "198.18.2.40", 7200));
        log.record(TraceLine::Policy {
            id: "8".into(),
            at: at("fw", "forward"),
            policy: "drop".into(),
        });
        // A second forward line of a known forward packet changes nothing.
        log.record(packet("8", "transit", "198.18.1.20", "198.18.2.40", 7200));
        expect_test::expect![[r#"
            [
                "In 198.18.1.20 -> 198.18.1.254:7200 x1 passed",
                "Forward 198.18.1.20 -> 198.18.2.40:7200 x1 inet fw forward None None Some(\"drop\")",
            ]
        "#]]
        .assert_debug_eq(&summary(&log));
    }
}
