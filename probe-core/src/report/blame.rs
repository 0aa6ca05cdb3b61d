//! Where a path breaks, from the evidence of both ends: the ICMP error and
//! its sender, the TTL walk's last hop, how far the handshake got at the
//! target, the path-MTU retry, where our nonce turned up. Pure: the join
//! gathers the evidence, [`blame`] decides, and every rule is tested here.
//!
//! It says `unknown` rather than guess: a silent drop or a reset with no
//! trace at the target cannot tell the target's own firewall from a device
//! just before it (no unprivileged evidence separates them; the firewall
//! rule attribution of `rule` will).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::probe::{IcmpEvidence, Observed, Walk};

/// Where a path breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Where {
    /// At the target host.
    Target,
    /// At a device between the hosts.
    Network,
    /// On the way back from the target.
    ReturnPath,
    /// At the source host, before anything left.
    Source,
    /// The evidence does not say.
    Unknown,
}

impl Where {
    /// The name used in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Where::Target => "target",
            Where::Network => "network",
            Where::ReturnPath => "return-path",
            Where::Source => "source",
            Where::Unknown => "unknown",
        }
    }
}

/// What broke it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// Packets vanished.
    Drop,
    /// A UDP datagram reached the target's canary; its answer never came
    /// back (a one-way path).
    AnswerLost,
    /// An ICMP error came back.
    IcmpReject,
    /// A TCP reset came back.
    Reset,
    /// The target got the SYN; its answers never came back.
    ReturnPathLost,
    /// The SYN arrived at the target, what followed did not.
    HandshakeIncomplete,
    /// Large packets are lost and the ICMP that would say so is too.
    PathMtu,
    /// The connection reached another host than the target.
    Redirect,
    /// The source refused to send.
    Egress,
    /// The source's kernel never resolved the next hop's link-layer
    /// address: ARP (IPv4) or neighbour discovery (IPv6) got no answer, so
    /// nothing was sent (the "unreachable" comes from the source itself).
    NeighbourUnresolved,
}

impl Cause {
    /// The name used in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Cause::Drop => "drop",
            Cause::AnswerLost => "answer-lost",
            Cause::IcmpReject => "icmp-reject",
            Cause::Reset => "reset",
            Cause::ReturnPathLost => "return-path-lost",
            Cause::HandshakeIncomplete => "handshake-incomplete",
            Cause::PathMtu => "path-mtu",
            Cause::Redirect => "redirect",
            Cause::Egress => "egress",
            Cause::NeighbourUnresolved => "neighbour-unresolved",
        }
    }
}

impl fmt::Display for Where {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The firewall rule (or chain policy) that stopped a path, where the
/// host's agent could trace it (`agent::nftrace`): `{host, table, chain,
/// handle, text}` for a rule, `{host, table, chain, policy}` for a chain's
/// policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlameRule {
    /// The host whose firewall holds it.
    pub host: String,
    /// `family name` of the table.
    pub table: String,
    /// The chain.
    pub chain: String,
    /// The rule's handle; absent for a chain policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
    /// The rule as the firewall prints it; absent for a chain policy (and
    /// `null` when the rule could not be read back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The chain's policy (`drop`) when the policy stopped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

impl BlameRule {
    /// The rule of a traced stop on `host`.
    pub fn of(host: &str, stop: &crate::control::TraceStop) -> BlameRule {
        BlameRule {
            host: host.to_string(),
            table: stop.table.clone(),
            chain: stop.chain.clone(),
            handle: stop.handle,
            text: stop.text.clone(),
            policy: stop.policy.clone(),
        }
    }

    /// `table inet filter chain input rule handle 7 (tcp dport 9443 drop)`,
    /// or `... chain input policy drop`.
    pub fn describe(&self) -> String {
        let head = format!("{}: table {} chain {}", self.host, self.table, self.chain);
        match (&self.policy, self.handle, &self.text) {
            (Some(p), _, _) => format!("{head} policy {p}"),
            (None, Some(h), Some(t)) => format!("{head} rule handle {h} ({t})"),
            (None, Some(h), None) => format!("{head} rule handle {h}"),
            (None, None, Some(t)) => format!("{head} rule ({t})"),
            (None, None, None) => head,
        }
    }
}

/// What the firewall traces of both ends say about a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Traced {
    /// The source's own output chain stopped the probe.
    Egress(BlameRule),
    /// A rule (or policy) on the target stopped it.
    AtTarget(BlameRule),
    /// The target's firewall let it through.
    PassedTarget,
    /// The target traced, and our packets never reached its netfilter.
    NeverArrived,
    /// Neither end names a rule, and a plan host between them that
    /// forwards (a router between zones with its own agent) traced the
    /// path stopped in its firewall as it forwarded it: `rule` is on that
    /// host, `address` its plan address (the hop when no other evidence
    /// names one).
    Forwarded {
        /// The rule or policy on the forwarding host.
        rule: BlameRule,
        /// The forwarding host's plan address.
        address: Option<String>,
    },
}

/// Where and why a path is blocked or failing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blame {
    /// Where it breaks.
    #[serde(rename = "where")]
    pub at: Where,
    /// The device that answered for the target (the ICMP sender), or the
    /// last hop that answered before the silence.
    pub hop: Option<String>,
    /// That device's distance from the source, in hops, when known.
    pub hop_distance: Option<u8>,
    /// What broke it.
    pub cause: Cause,
    /// The rule that stopped it, when traced.
    #[serde(default)]
    pub rule: Option<BlameRule>,
}

/// How far our connection got at the target, from the target agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetStage {
    /// No trace of us at the target.
    Nothing,
    /// The SYN arrived; the handshake never completed there.
    Syn,
    /// The handshake completed; no valid nonce arrived.
    Connected,
    /// Our nonce arrived.
    Nonce,
}

impl TargetStage {
    /// The name used in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            TargetStage::Nothing => "nothing",
            TargetStage::Syn => "syn",
            TargetStage::Connected => "connected",
            TargetStage::Nonce => "nonce",
        }
    }
}

/// Everything [`blame`] weighs for one path.
#[derive(Debug, Clone)]
pub struct Evidence<'a> {
    /// The joined outcome.
    pub observed: Option<Observed>,
    /// The target's addresses (the probed one first).
    pub target_addresses: &'a [String],
    /// The ICMP error the source got.
    pub icmp: Option<&'a IcmpEvidence>,
    /// How far the target saw us.
    pub target_stage: Option<TargetStage>,
    /// The TTL walk after a timeout.
    pub walk: Option<&'a Walk>,
    /// The small-MSS retry got through where the first try stalled.
    pub path_mtu: bool,
    /// The source's own kernel refused to send (EPERM, EACCES).
    pub local_denial: bool,
    /// Where our nonce turned up instead of the target (its address).
    pub redirected_to: Option<&'a str>,
    /// What the ends' firewall traces say, where they traced.
    pub traced: Option<Traced>,
    /// The ICMP error came from the source itself (one of its own
    /// addresses): its kernel's word that it could not send, not a
    /// device's.
    pub icmp_from_source: bool,
    /// The source's unresolved neighbour entry behind such an error.
    pub neighbour: Option<&'a crate::control::NeighbourFailure>,
}

/// Where and why the path breaks; `None` for an open path and for one that
/// was not measured (or could not be tried: `local-error`).
pub fn blame(e: &Evidence<'_>) -> Option<Blame> {
    let base = blame_untraced(e)?;
    Some(match &e.traced {
        None | Some(Traced::PassedTarget) => base,
        // An output-chain drop looks like any silence to the prober; the
        // source's trace names it.
        Some(Traced::Egress(rule)) => Blame {
            at: Where::Source,
            hop: None,
            hop_distance: None,
            cause: Cause::Egress,
            rule: Some(rule.clone()),
        },
        Some(Traced::AtTarget(rule)) => Blame {
            at: Where::Target,
            hop: None,
            hop_distance: None,
            cause: match base.cause {
                c @ (Cause::IcmpReject | Cause::Reset | Cause::HandshakeIncomplete) => c,
                _ => Cause::Drop,
            },
            rule: Some(rule.clone()),
        },
        // The target's netfilter never saw the SYN: something between the
        // hosts stopped it (unless direct evidence already says where).
        Some(Traced::NeverArrived) => match base.at {
            Where::Unknown => Blame {
                at: Where::Network,
                ..base
            },
            _ => base,
        },
        Some(Traced::Forwarded { rule, address }) => forwarded(base, rule, address.as_ref()),
    })
}

/// A path a forwarding plan host stopped in its firewall: the network
/// (that host is a device between the two ends), with its rule, where the
/// untraced evidence says the network or cannot say; the hop the evidence
/// named (the ICMP sender, the walk's last hop), else that host's
/// address. Direct evidence of another place (the target's ICMP, the
/// return path, the source, a path-MTU black hole) stands.
fn forwarded(base: Blame, rule: &BlameRule, address: Option<&String>) -> Blame {
    let stopped = matches!(base.cause, Cause::Drop | Cause::IcmpReject | Cause::Reset);
    if !stopped || !matches!(base.at, Where::Unknown | Where::Network) {
        return base;
    }
    let (hop, hop_distance) = match base.hop {
        Some(h) => (Some(h), base.hop_distance),
        None => (address.cloned(), None),
    };
    Blame {
        at: Where::Network,
        hop,
        hop_distance,
        cause: base.cause,
        rule: Some(rule.clone()),
    }
}

fn blame_untraced(e: &Evidence<'_>) -> Option<Blame> {
    let observed = e.observed?;
    let at = |at: Where, cause: Cause, hop: Option<(String, Option<u8>)>| {
        let (hop, hop_distance) = hop.map_or((None, None), |(h, d)| (Some(h), d));
        Some(Blame {
            at,
            hop,
            hop_distance,
            cause,
            rule: None,
        })
    };
    let last_hop = || {
        e.walk
            .and_then(|w| w.last_hop.as_ref())
            .map(|h| (h.address.clone(), Some(h.distance)))
    };
    if e.path_mtu {
        return at(Where::Network, Cause::PathMtu, None);
    }
    match observed {
        // A wrong service answered: the path works, the far end serves
        // something else; the report's service answer says what. Loss is
        // no place on the path to name.
        Observed::Open | Observed::LocalError | Observed::WrongService | Observed::Lossy => None,
        _ if e.local_denial => at(Where::Source, Cause::Egress, None),
        Observed::Refused | Observed::Unreachable => match e.icmp {
            // The source's own kernel said "unreachable": ARP or neighbour
            // discovery failed. Where depends on whose entry failed.
            Some(_) if e.icmp_from_source => match e.neighbour {
                Some(n) => {
                    let address = n.address.to_string();
                    let place = if e.target_addresses.contains(&address) {
                        Where::Target
                    } else {
                        Where::Network
                    };
                    at(place, Cause::NeighbourUnresolved, Some((address, None)))
                }
                None => at(Where::Unknown, Cause::NeighbourUnresolved, None),
            },
            Some(icmp) => {
                let from_target = e.target_addresses.contains(&icmp.from);
                let place = if from_target {
                    Where::Target
                } else {
                    Where::Network
                };
                at(place, Cause::IcmpReject, Some((icmp.from.clone(), None)))
            }
            None if observed == Observed::Refused => at(Where::Unknown, Cause::Reset, None),
            // An errno without the ICMP message (the queue could not be
            // read): rejected, by whom is not known.
            None => at(Where::Unknown, Cause::IcmpReject, None),
        },
        Observed::Timeout => match e.target_stage {
            // Only UDP times out with the nonce delivered.
            Some(TargetStage::Nonce) => at(Where::ReturnPath, Cause::AnswerLost, last_hop()),
            Some(TargetStage::Syn | TargetStage::Connected) => {
                at(Where::ReturnPath, Cause::ReturnPathLost, last_hop())
            }
            _ => at(Where::Unknown, Cause::Drop, last_hop()),
        },
        Observed::TlsError | Observed::WrongHost => {
            if let Some(other) = e.redirected_to {
                return at(
                    Where::Network,
                    Cause::Redirect,
                    Some((other.to_string(), None)),
                );
            }
            match e.target_stage {
                Some(TargetStage::Syn) => at(Where::Target, Cause::HandshakeIncomplete, None),
                // A TLS failure or a wrong answer with the target's
                // handshake complete is the far end's doing, not the path's.
                _ => None,
            }
        }
    }
}

impl Blame {
    /// One sentence for the renderers, about a path to host `to` that got
    /// `icmp` back.
    pub fn sentence(&self, to: &str, icmp: Option<&IcmpEvidence>) -> String {
        let kind = icmp.map_or(String::new(), |i| format!(" (ICMP {})", i.kind));
        let hop = || match (&self.hop, self.hop_distance) {
            (Some(h), Some(d)) => format!("{h} at hop {d}"),
            (Some(h), None) => h.clone(),
            _ => String::new(),
        };
        let said = match (self.at, self.cause) {
            (Where::Target, Cause::Drop) => format!("dropped by {to}'s own firewall"),
            (Where::Network, Cause::Drop) if self.hop.is_some() => format!(
                "dropped on the way, before {to}'s firewall saw it (last hop that answered: {})",
                hop()
            ),
            (Where::Network, Cause::Drop) => {
                format!("dropped on the way, before {to}'s firewall saw it")
            }
            (Where::Source, Cause::Egress) if self.rule.is_some() => {
                "dropped by the source's own output filter before anything left".into()
            }
            (Where::Target, Cause::IcmpReject) => format!("rejected by {to}{kind}"),
            (Where::Network, Cause::IcmpReject) => {
                format!("rejected by {}{kind}, a device on the way, not {to}", hop())
            }
            (_, Cause::IcmpReject) => format!("rejected with an ICMP error on the way to {to}"),
            (Where::Network, Cause::Reset) => {
                format!("reset on the way, before {to}'s firewall saw the SYN")
            }
            (Where::Target, Cause::Reset) => format!("reset by {to}'s own firewall"),
            (_, Cause::Reset) => format!(
                "reset before {to} saw the SYN: by {to}'s own firewall or a device on the way"
            ),
            (_, Cause::Drop) if self.hop.is_some() => format!(
                "dropped after {}, the last hop that answered: at {to}'s firewall or a device beyond that hop",
                hop()
            ),
            (_, Cause::Drop) => format!("dropped silently on the way to {to} or at {to}"),
            (_, Cause::ReturnPathLost) if self.hop.is_some() => format!(
                "return path lost: {to} got the SYN but its answers never came back; the last hop that answered on the way there is {}",
                hop()
            ),
            (_, Cause::ReturnPathLost) => {
                format!("return path lost: {to} got the SYN but its answers never came back")
            }
            (_, Cause::AnswerLost) => format!(
                "one-way path: {to} received it; its answer never came back (the return route, or a filter on the way back)"
            ),
            (_, Cause::HandshakeIncomplete) => format!(
                "handshake incomplete at {to}: the SYN arrived, what followed did not (a stateless filter or an asymmetric route)"
            ),
            (_, Cause::PathMtu) => format!(
                "path MTU black hole on the way to {to}: large packets are lost and no ICMP frag-needed comes back"
            ),
            (_, Cause::Redirect) => {
                format!(
                    "redirected on the way: the connection reached {} instead of {to}",
                    hop()
                )
            }
            (_, Cause::Egress) => "refused by the source itself before anything was sent".into(),
            (Where::Target, Cause::NeighbourUnresolved) => format!(
                "neighbour discovery failed: {to} never answered the source's ARP or neighbour solicitation for {}, so nothing was sent; {to} may drop neighbour discovery (ICMPv6 types 135/136, or ARP)",
                hop()
            ),
            (Where::Network, Cause::NeighbourUnresolved) => format!(
                "neighbour discovery failed: the next hop {} never answered the source's ARP or neighbour solicitation, so nothing was sent toward {to}",
                hop()
            ),
            (_, Cause::NeighbourUnresolved) => format!(
                "the source's own kernel found no way to {to}: its neighbour resolution (ARP or neighbour discovery) failed, so nothing was sent; {to} may drop neighbour discovery"
            ),
        };
        match &self.rule {
            Some(rule) => format!("{said}: {}", rule.describe()),
            None => said,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Hop;

    fn icmp(kind: &str, from: &str) -> IcmpEvidence {
        IcmpEvidence {
            kind: kind.into(),
            code: 13,
            from: from.into(),
        }
    }

    fn ev(observed: Observed) -> Evidence<'static> {
        static DB: [String; 0] = [];
        Evidence {
            observed: Some(observed),
            target_addresses: &DB,
            icmp: None,
            target_stage: Some(TargetStage::Nothing),
            walk: None,
            path_mtu: false,
            local_denial: false,
            redirected_to: None,
            traced: None,
            icmp_from_source: false,
            neighbour: None,
        }
    }

    fn b(at: Where, cause: Cause, hop: Option<&str>, d: Option<u8>) -> Option<Blame> {
        Some(Blame {
            at,
            hop: hop.map(str::to_string),
            hop_distance: d,
            cause,
            rule: None,
        })
    }

    #[test]
    fn who_sent_the_icmp_says_where() {
        let db = ["198.18.3.40".to_string()];
        let router = icmp("admin-prohibited", "198.18.1.254");
        let own = icmp("port-unreachable", "198.18.3.40");
        let mut e = ev(Observed::Unreachable);
        e.target_addresses = &db;
        e.icmp = Some(&router);
        assert_eq!(
            blame(&e),
            b(
                Where::Network,
                Cause::IcmpReject,
                Some("198.18.1.254"),
                None
            )
        );
        let mut e = ev(Observed::Refused);
        e.target_addresses = &db;
        e.icmp = Some(&own);
        assert_eq!(
            blame(&e),
            b(Where::Target, Cause::IcmpReject, Some("198.18.3.40"), None)
        );
        // A reset carries no sender: it is not guessed.
        assert_eq!(
            blame(&ev(Observed::Refused)),
            b(Where::Unknown, Cause::Reset, None, None)
        );
    }

    #[test]
    fn silence_is_a_drop_or_a_lost_return_path_by_the_targets_word() {
        let walk = Walk {
            last_hop: Some(Hop {
                address: "198.18.1.254".into(),
                distance: 1,
            }),
            reached_at: None,
        };
        let mut e = ev(Observed::Timeout);
        e.walk = Some(&walk);
        assert_eq!(
            blame(&e),
            b(Where::Unknown, Cause::Drop, Some("198.18.1.254"), Some(1))
        );
        e.target_stage = Some(TargetStage::Syn);
        assert_eq!(
            blame(&e),
            b(
                Where::ReturnPath,
                Cause::ReturnPathLost,
                Some("198.18.1.254"),
                Some(1)
            )
        );
        e.target_stage = None;
        e.walk = None;
        assert_eq!(blame(&e), b(Where::Unknown, Cause::Drop, None, None));
    }

    #[test]
    fn a_connection_the_target_never_completed_is_a_half_open_handshake() {
        for o in [Observed::TlsError, Observed::WrongHost] {
            let mut e = ev(o);
            e.target_stage = Some(TargetStage::Syn);
            assert_eq!(
                blame(&e),
                b(Where::Target, Cause::HandshakeIncomplete, None, None)
            );
            e.target_stage = Some(TargetStage::Connected);
            assert_eq!(blame(&e), None, "the far end's failure, not the path's");
            e.redirected_to = Some("198.18.3.41");
            assert_eq!(
                blame(&e),
                b(Where::Network, Cause::Redirect, Some("198.18.3.41"), None)
            );
        }
        let mut e = ev(Observed::TlsError);
        e.path_mtu = true;
        e.target_stage = Some(TargetStage::Connected);
        assert_eq!(blame(&e), b(Where::Network, Cause::PathMtu, None, None));
    }

    #[test]
    fn open_unmeasured_and_local_paths_get_no_blame_and_egress_is_the_sources() {
        assert_eq!(blame(&ev(Observed::Open)), None);
        assert_eq!(blame(&ev(Observed::LocalError)), None);
        let mut e = ev(Observed::Open);
        e.observed = None;
        assert_eq!(blame(&e), None);
        let mut e = ev(Observed::Unreachable);
        e.local_denial = true;
        assert_eq!(blame(&e), b(Where::Source, Cause::Egress, None, None));
    }

    #[test]
    fn blame_serializes_with_where_and_a_null_rule() {
        let x = b(
            Where::ReturnPath,
            Cause::ReturnPathLost,
            Some("198.18.1.254"),
            Some(1),
        );
        assert_eq!(
            serde_json::to_string(&x).unwrap(),
            r#"{"where":"return-path","hop":"198.18.1.254","hop_distance":1,"cause":"return-path-lost","rule":null}"#
        );
        let back: Blame = serde_json::from_str(
            r#"{"where":"network","hop":null,"hop_distance":null,"cause":"path-mtu"}"#,
        )
        .unwrap();
        assert_eq!(back.cause, Cause::PathMtu);
        assert_eq!(back.rule, None);
    }

    /// The firewall traces settle what silence alone cannot: a rule on the
    /// target, the source's output chain, or nothing at the target at all.
    #[test]
    fn traces_place_a_silent_drop_and_name_the_rule() {
        let rule = |host: &str, chain: &str| BlameRule {
            host: host.into(),
            table: "inet filter".into(),
            chain: chain.into(),
            handle: Some(7),
            text: Some("tcp dport 9443 drop".into()),
            policy: None,
        };
        let mut e = ev(Observed::Timeout);
        e.traced = Some(Traced::AtTarget(rule("db", "input")));
        let b = blame(&e).unwrap();
        assert_eq!((b.at, b.cause), (Where::Target, Cause::Drop));
        assert_eq!(
            b.sentence("db", None),
            "dropped by db's own firewall: db: table inet filter chain input rule handle 7 (tcp dport 9443 drop)"
        );
        e.traced = Some(Traced::Egress(rule("web", "output")));
        let b = blame(&e).unwrap();
        assert_eq!((b.at, b.cause), (Where::Source, Cause::Egress));
        assert_eq!(b.rule.as_ref().unwrap().host, "web");
        let walk = Walk {
            last_hop: Some(Hop {
                address: "198.18.1.254".into(),
                distance: 1,
            }),
            ..Walk::default()
        };
        e.walk = Some(&walk);
        e.traced = Some(Traced::NeverArrived);
        let b = blame(&e).unwrap();
        assert_eq!(
            (b.at, b.cause, b.hop.as_deref()),
            (Where::Network, Cause::Drop, Some("198.18.1.254"))
        );
        assert_eq!(b.rule, None);
        // Direct evidence wins over an absent trace: an ICMP from db itself.
        let own = icmp("port-unreachable", "198.18.3.40");
        let db = ["198.18.3.40".to_string()];
        let mut e = ev(Observed::Refused);
        e.icmp = Some(&own);
        e.target_addresses = &db;
        e.traced = Some(Traced::NeverArrived);
        assert_eq!(blame(&e).unwrap().at, Where::Target);
        // A policy reads as a policy.
        let policy = BlameRule {
            handle: None,
            text: None,
            policy: Some("drop".into()),
            ..rule("db", "input")
        };
        assert_eq!(
            serde_json::to_string(&policy).unwrap(),
            r#"{"host":"db","table":"inet filter","chain":"input","policy":"drop"}"#
        );
    }

    /// A plan host routing between the two ends stopped the path in its
    /// forward chain: the network, with that host's rule; the hop the
    /// evidence named stands, else the host's address; direct evidence of
    /// another place is kept.
    #[test]
    fn a_forwarding_plan_hosts_rule_names_the_network_stop() {
        let rule = BlameRule {
            host: "fw".into(),
            table: "inet fw".into(),
            chain: "forward".into(),
            handle: Some(9),
            text: Some(
                "ip daddr 198.18.2.0/24 tcp dport 7102 reject with icmpx admin-prohibited".into(),
            ),
            policy: None,
        };
        let forwarded = || {
            Some(Traced::Forwarded {
                rule: rule.clone(),
                address: Some("198.18.1.254".into()),
            })
        };
        // A reject: the router's ICMP, its sender the hop.
        let router = icmp("admin-prohibited", "198.18.1.254");
        let mut e = ev(Observed::Unreachable);
        e.icmp = Some(&router);
        e.traced = forwarded();
        let got = blame(&e).unwrap();
        assert_eq!(
            (got.at, got.cause, got.hop.as_deref(), got.rule.as_ref()),
            (
                Where::Network,
                Cause::IcmpReject,
                Some("198.18.1.254"),
                Some(&rule)
            )
        );
        assert_eq!(
            got.sentence("db", Some(&router)),
            "rejected by 198.18.1.254 (ICMP admin-prohibited), a device on the way, not db: fw: table inet fw chain forward rule handle 9 (ip daddr 198.18.2.0/24 tcp dport 7102 reject with icmpx admin-prohibited)"
        );
        // A silent drop, no walk: unknown becomes the network, the
        // forwarding host's address the hop.
        let mut e = ev(Observed::Timeout);
        e.traced = forwarded();
        let got = blame(&e).unwrap();
        assert_eq!(
            (got.at, got.cause, got.hop.as_deref(), got.hop_distance),
            (Where::Network, Cause::Drop, Some("198.18.1.254"), None)
        );
        assert_eq!(got.rule.as_ref(), Some(&rule));
        // The walk's last hop stands, with its distance.
        let walk = Walk {
            last_hop: Some(Hop {
                address: "198.18.2.254".into(),
                distance: 1,
            }),
            ..Walk::default()
        };
        e.walk = Some(&walk);
        let got = blame(&e).unwrap();
        assert_eq!(
            (got.hop.as_deref(), got.hop_distance),
            (Some("198.18.2.254"), Some(1))
        );
        // A reset without ICMP: the network, reset, the rule.
        let mut e = ev(Observed::Refused);
        e.traced = forwarded();
        let got = blame(&e).unwrap();
        assert_eq!((got.at, got.cause), (Where::Network, Cause::Reset));
        assert!(got.rule.is_some());
        // The target itself answered, or the SYN reached it: not the
        // forwarding host's doing, whatever its trace says.
        let own = icmp("port-unreachable", "198.18.3.40");
        let db = ["198.18.3.40".to_string()];
        let mut e = ev(Observed::Refused);
        e.icmp = Some(&own);
        e.target_addresses = &db;
        e.traced = forwarded();
        let got = blame(&e).unwrap();
        assert_eq!((got.at, got.rule), (Where::Target, None));
        let mut e = ev(Observed::Timeout);
        e.target_stage = Some(TargetStage::Syn);
        e.traced = forwarded();
        let got = blame(&e).unwrap();
        assert_eq!((got.at, got.rule), (Where::ReturnPath, None));
    }

    #[test]
    fn every_blame_reads_as_one_sentence() {
        let all = [
            b(Where::Target, Cause::IcmpReject, Some("198.18.3.40"), None),
            b(
                Where::Network,
                Cause::IcmpReject,
                Some("198.18.1.254"),
                None,
            ),
            b(Where::Unknown, Cause::Reset, None, None),
            b(Where::Unknown, Cause::Drop, Some("198.18.1.254"), Some(1)),
            b(Where::ReturnPath, Cause::ReturnPathLost, None, None),
            b(Where::Target, Cause::HandshakeIncomplete, None, None),
            b(Where::Network, Cause::PathMtu, None, None),
            b(Where::Network, Cause::Redirect, Some("198.18.3.41"), None),
            b(Where::Source, Cause::Egress, None, None),
        ];
        for x in all.into_iter().flatten() {
            let s = x.sentence("db", None);
            assert!(!s.contains(". ") && !s.ends_with('.'), "{s}");
            assert!(!s.is_empty());
        }
        let router = icmp("admin-prohibited", "198.18.1.254");
        let s = b(
            Where::Network,
            Cause::IcmpReject,
            Some("198.18.1.254"),
            None,
        )
        .unwrap()
        .sentence("db", Some(&router));
        assert_eq!(
            s,
            "rejected by 198.18.1.254 (ICMP admin-prohibited), a device on the way, not db"
        );
        let own = icmp("port-unreachable", "198.18.3.40");
        let s = b(Where::Target, Cause::IcmpReject, Some("198.18.3.40"), None)
            .unwrap()
            .sentence("db", Some(&own));
        assert_eq!(s, "rejected by db (ICMP port-unreachable)");
    }
}
