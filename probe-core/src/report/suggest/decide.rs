//! The deciding: for one path that is not `ok`, the host whose firewall
//! it concerns and the [`Action`] there (an accept, an accept in the
//! source's output or a router's forward chain, a port's default deny) or
//! why no rule can fix it. Reads the report's typed fields (verdict,
//! observed, blame, `local_denial`), never the detail's words.

use std::net::IpAddr;

use super::super::blame::{Blame, BlameRule, Cause, Where};
use super::super::text::path_label;
use super::super::{PathReport, Report, Verdict};
use super::backend::{Backend, NftFamily, nft_identifier};
use super::model::{Action, Item};
use crate::plan::Expect;
use crate::port::Protocol;
use crate::probe::Observed;
use crate::probe::classify::{errno_name, is_local_denial};

/// The host whose firewall a path concerns, and what to do there.
pub(super) fn decide(
    report: &Report,
    backend: &Backend,
    router: Option<&str>,
    p: &PathReport,
) -> (String, Item) {
    let observed = p.observed.map_or("nothing (not measured)", |o| o.as_str());
    let mut item = Item {
        path: path_label(p),
        finding: format!(
            "{}: must be {}, observed {observed}: {}",
            p.verdict.as_str(),
            p.expect,
            p.detail
        ),
        notes: Vec::new(),
        action: Action::Manual {
            reason: String::new(),
        },
        protocol: p.protocol,
    };
    let c = Case {
        report,
        backend,
        router,
        p,
    };
    let (host, action) = c.action(&mut item.notes);
    item.action = action;
    (host, item)
}

/// One path to decide on, with what the deciding needs.
struct Case<'a> {
    report: &'a Report,
    backend: &'a Backend,
    router: Option<&'a str>,
    p: &'a PathReport,
}

/// No rule: why, and what would help.
fn manual(host: &str, reason: String) -> (String, Action) {
    (host.to_string(), Action::Manual { reason })
}

impl Case<'_> {
    /// The host and action, with caveats added to `notes`.
    fn action(&self, notes: &mut Vec<String>) -> (String, Action) {
        let p = self.p;
        if p.verdict == Verdict::Error {
            let reason = if p.observed == Some(Observed::Refused) && p.target_saw.is_none() {
                format!(
                    "the live service on {}:{} refused the connection, so it is down (no canary held the port); start it, a firewall rule would not help",
                    p.to, p.port
                )
            } else {
                "the path was not measured, so there is nothing to fix yet; resolve the reason above and check again".to_string()
            };
            return manual(&p.to, reason);
        }
        if p.expect == Expect::Open
            && p.observed == Some(Observed::Refused)
            && !p.listening_elsewhere.is_empty()
        {
            // The packets got through; nothing listens where they land.
            return manual(
                &p.to,
                format!(
                    "{}, not on {}: make it listen there (its bind or listen address setting); a firewall rule would not help",
                    crate::control::listening_words(&p.listening_elsewhere),
                    p.address
                ),
            );
        }
        let mut target_rule = None;
        if let (Expect::Open, Some(b)) = (p.expect, p.blame.as_ref()) {
            if b.cause == Cause::NeighbourUnresolved {
                // No port rule helps: nothing was sent to the port.
                let whom = b.hop.as_deref().unwrap_or(p.address.as_str());
                return manual(
                    &p.to,
                    format!(
                        "{} could not resolve {whom} on its link (ARP or neighbour discovery got no answer), so nothing reached port {}; let {} answer neighbour discovery (accept ICMPv6 types 133-136, or ARP) and check that the address is up there",
                        p.from,
                        p.port,
                        if b.at == Where::Target {
                            p.to.as_str()
                        } else {
                            whom
                        }
                    ),
                );
            }
            match b.at {
                Where::Source => return self.at_source(b, notes),
                Where::Network | Where::ReturnPath => return self.in_network(b, notes),
                Where::Unknown => notes.push(format!(
                    "where the path breaks is unknown ({}): the evidence cannot tell {}'s firewall from a device on the way, so this accept at {} helps only if {}'s own firewall is what stops it",
                    b.cause, p.to, p.to, p.to
                )),
                Where::Target => {
                    if let Some(rule) = &b.rule {
                        notes.push(overrides(rule));
                        target_rule = rule_chain(rule);
                    }
                }
            }
        }
        self.by_outcome(target_rule, notes)
    }

    /// Blamed on the source's own output filter: an accept there.
    fn at_source(&self, b: &Blame, notes: &mut Vec<String>) -> (String, Action) {
        let p = self.p;
        let Ok(dest) = p.address.parse::<IpAddr>() else {
            return manual(
                &p.from,
                format!(
                    "{}'s own output filter stops the path; allow TCP to {}:{} there",
                    p.from, p.address, p.port
                ),
            );
        };
        notes.push(format!(
            "blamed on {}: its own output filter stops the probe before it leaves ({})",
            p.from, b.cause
        ));
        if let Some(rule) = &b.rule {
            notes.push(overrides(rule));
        }
        let action = Action::AcceptOut {
            dest: dest.to_canonical(),
            port: p.port,
            at: b
                .rule
                .as_ref()
                .and_then(rule_chain)
                .filter(|_| matches!(self.backend, Backend::Nft { .. })),
        };
        (p.from.clone(), action)
    }

    /// Blamed on the network: a paragraph for the network team, and a
    /// forward accept on the router: the plan host whose own agent traced
    /// the rule that stopped the path as it forwarded it (in that rule's
    /// table and chain), else the one `--router` names.
    fn in_network(&self, b: &Blame, notes: &mut Vec<String>) -> (String, Action) {
        let p = self.p;
        let paragraph = network_paragraph(self.report, p, b);
        // A rule traced on a plan host between the two ends (a router
        // with its own agent): the fix goes there, whatever --router says.
        let traced = b.rule.as_ref().filter(|r| {
            r.host != p.to && r.host != p.from && self.report.hosts.iter().any(|h| h.name == r.host)
        });
        let router = match traced {
            Some(rule) => Some(rule.host.as_str()),
            None => self.router.filter(|r| *r != p.to && *r != p.from),
        };
        let (Some(router), Ok(dest)) = (router, p.address.parse::<IpAddr>()) else {
            return manual(&p.to, paragraph);
        };
        let Ok((source, note)) = source_address(self.report, p) else {
            return manual(&p.to, paragraph);
        };
        notes.push(paragraph);
        notes.extend(note);
        if let Some(rule) = traced {
            notes.push(format!(
                "{router} forwards the path and its own trace names the rule that stops it"
            ));
            if self.router.is_some_and(|r| r != router) {
                notes.push(format!(
                    "--router {} does not apply here: the rule is on {router}",
                    self.router.unwrap_or_default()
                ));
            }
            notes.push(overrides(rule));
        }
        let action = Action::Forward {
            source,
            dest: dest.to_canonical(),
            port: p.port,
            at: traced
                .and_then(rule_chain)
                .filter(|_| matches!(self.backend, Backend::Nft { .. })),
        };
        (router.to_string(), action)
    }

    /// By the observed outcome: an accept at the target, a default deny,
    /// or why neither helps.
    fn by_outcome(
        &self,
        target_rule: Option<(String, String)>,
        notes: &mut Vec<String>,
    ) -> (String, Action) {
        let p = self.p;
        let target = p.to.as_str();
        let local_denial = p
            .local_denial
            .filter(|&e| p.icmp.is_none() && is_local_denial(Some(e)))
            .map(errno_name);
        if let Some(sp) = p.server_port.filter(|sp| *sp != p.port) {
            // The client dials a port the server does not listen on: opening
            // the dialled port would not make anything answer there.
            return manual(
                target,
                format!(
                    "{} dials {} but {} listens on {sp}: make the client and the server agree on the port (see `portcall plan lint`), a firewall rule would not help",
                    p.from, p.port, p.to
                ),
            );
        }
        let accept = match (p.expect, p.observed) {
            (Expect::Open, Some(Observed::Unreachable)) if local_denial.is_some() => {
                let errno = local_denial.unwrap_or_default();
                return manual(
                    &p.from,
                    format!(
                        "the connection never left {}: connect failed locally with {errno}, which is the source's own egress filter (an output-chain drop or reject, or a cgroup policy); allow TCP to {}:{} in {}'s output rules, no rule on {} can help",
                        p.from, p.address, p.port, p.from, p.to
                    ),
                );
            }
            (Expect::Open, Some(Observed::Refused)) if p.target_saw.is_none() => {
                return manual(
                    target,
                    format!(
                        "the live service on {}:{} refused the connection, so it is down; start it, a firewall rule would not help",
                        p.to, p.port
                    ),
                );
            }
            (Expect::Open, Some(Observed::Timeout)) if p.blame.is_some() => true,
            (Expect::Open, Some(Observed::Timeout)) => {
                // Linux swallows the EPERM of a SYN dropped by the source's own
                // output filter and keeps retransmitting, so such a drop also
                // looks like silence to the prober.
                notes.push(format!(
                    "dropped without an answer, which {}'s input filter, a network firewall on the way and {}'s own output filter all look like; if this rule does not fix it, allow the path there",
                    p.to, p.from
                ));
                true
            }
            (Expect::Open, Some(Observed::Refused | Observed::Unreachable)) => true,
            (Expect::Open, Some(Observed::TlsError)) => {
                return manual(
                    target,
                    format!(
                        "TCP reaches {}:{}, only the TLS handshake failed: fix the certificate or TLS settings, not the firewall",
                        p.to, p.port
                    ),
                );
            }
            (_, Some(Observed::WrongHost)) => {
                return manual(
                    target,
                    format!(
                        "another host (or no agent) answered at {}:{}: an address translation, a redirect or a stale address sends the connection elsewhere, which no filter rule on {} changes; fix the NAT or the address",
                        p.address, p.port, p.to
                    ),
                );
            }
            (Expect::Blocked, Some(Observed::Open | Observed::TlsError)) => false,
            _ => {
                return manual(
                    target,
                    "no firewall rule matches this outcome; investigate by hand".to_string(),
                );
            }
        };
        if p.port == 0 {
            return manual(target, "port 0 cannot be filtered".to_string());
        }
        if !accept {
            return match default_deny(self.report, self.backend, p, notes) {
                Ok(action) => (target.to_string(), action),
                Err(reason) => manual(target, reason),
            };
        }
        self.accept_at_target(target_rule, notes)
    }

    /// An accept at the target for the path's source address.
    fn accept_at_target(
        &self,
        target_rule: Option<(String, String)>,
        notes: &mut Vec<String>,
    ) -> (String, Action) {
        let p = self.p;
        let target = p.to.as_str();
        let source = match source_address(self.report, p) {
            Ok((ip, note)) => {
                notes.extend(note);
                ip
            }
            Err(reason) => return manual(target, reason),
        };
        let mismatch = match self.backend {
            Backend::Nft { family, table, .. } if !family.carries(source) => Some((family, table)),
            _ => None,
        };
        if let Some((family, table)) = mismatch {
            return manual(
                target,
                format!(
                    "table {} {table} cannot match the {} source {source}; use an inet table (--table \"inet {table}\")",
                    family.as_str(),
                    if source.is_ipv6() { "IPv6" } else { "IPv4" }
                ),
            );
        }
        let action = Action::Accept {
            source,
            port: p.port,
            at: target_rule.filter(|_| matches!(self.backend, Backend::Nft { .. })),
        };
        (target.to_string(), action)
    }
}

/// The traced rule's `(FAMILY TABLE, chain)`, when it names an nft table.
fn rule_chain(rule: &BlameRule) -> Option<(String, String)> {
    let mut words = rule.table.split_whitespace();
    let (Some(family), Some(table), None) = (words.next(), words.next(), words.next()) else {
        return None;
    };
    (matches!(family, "ip" | "ip6" | "inet")
        && nft_identifier(table)
        && nft_identifier(&rule.chain))
    .then(|| (format!("{family} {table}"), rule.chain.clone()))
}

/// What a traced rule is, for a note, and how to remove it instead.
fn overrides(rule: &BlameRule) -> String {
    let mut s = format!("overrides {}", rule.describe());
    if let (Some(h), None, Some((table, chain))) = (rule.handle, &rule.policy, rule_chain(rule)) {
        s.push_str(&format!(
            "; or remove that rule on {}: nft delete rule {table} {chain} handle {h}",
            rule.host
        ));
    }
    s
}

/// The paragraph for the network team about a path a device between the
/// hosts stops: hop, zones, addresses, protocol and port.
fn network_paragraph(report: &Report, p: &PathReport, blame: &Blame) -> String {
    let host = |name: &str| report.hosts.iter().find(|h| h.name == name);
    let zone = |name: &str| {
        host(name)
            .and_then(|h| h.zone.clone())
            .map_or(String::new(), |z| format!(", zone {z}"))
    };
    let from_addrs = host(&p.from).map_or_else(String::new, |h| h.plan_addresses().join(", "));
    let hop = match (&blame.hop, blame.hop_distance) {
        (Some(h), Some(d)) => format!("the device at {h} (hop {d} from {})", p.from),
        (Some(h), None) => format!("the device at {h}"),
        _ => "a device between the hosts".to_string(),
    };
    let what = match blame.at {
        Where::ReturnPath if blame.cause == Cause::AnswerLost => format!(
            "{} received our datagram, but its answers never came back: the return direction is lost, at {}'s output filter, {}'s input filter or {hop} on the way back",
            p.to, p.to, p.from
        ),
        Where::ReturnPath => format!(
            "{} got the SYN but its answers never came back: {hop} loses the return direction",
            p.to
        ),
        _ => format!("{hop} stops it ({})", blame.cause),
    };
    format!(
        "blamed on the network: {what}; {}. For the network team: allow {} from {} ({from_addrs}{}) to {} ({}{}) port {}{}",
        if blame.cause == Cause::AnswerLost {
            format!(
                "no accept for arriving traffic on {} can fix it; look at the filters of the answers' way first",
                p.to
            )
        } else {
            format!("no rule on {} or {} can fix it", p.to, p.from)
        },
        if p.protocol == Protocol::Udp {
            "UDP (both ways: the answers too)"
        } else {
            "TCP"
        },
        p.from,
        zone(&p.from),
        p.to,
        p.address,
        zone(&p.to),
        p.port,
        blame
            .hop
            .as_ref()
            .map_or(String::new(), |h| format!(" at {h}")),
    )
}

/// The default deny that closes a must-be-blocked port for everyone the plan
/// does not allow, not only for the host that probed: an accept for every
/// address of every must-be-open source of the port (its plan addresses and
/// every address the target saw it arrive from in this round, since a
/// dual-stack host may arrive from a family the plan does not list), then a
/// drop for the port. Explains itself in `notes`; an error when a
/// must-be-open source's address is unknown, since dropping the port would
/// then cut off a path the plan needs.
fn default_deny(
    report: &Report,
    backend: &Backend,
    p: &PathReport,
    notes: &mut Vec<String>,
) -> Result<Action, String> {
    if let (Backend::Nft { family, table, .. }, Ok(to)) = (backend, p.address.parse::<IpAddr>())
        && !family.carries(to.to_canonical())
    {
        return Err(format!(
            "table {} {table} cannot filter the {} traffic to {to}; use an inet table (--table \"inet {table}\")",
            family.as_str(),
            if to.is_ipv6() { "IPv6" } else { "IPv4" }
        ));
    }
    zone_notes(report, p, notes);
    let mut open_from: Vec<&str> = Vec::new();
    for q in report
        .paths
        .iter()
        .filter(|q| q.to == p.to && q.port == p.port && q.expect == Expect::Open)
        // 53/udp's must-be-open sources say nothing of 53/tcp.
        .filter(|q| (q.protocol == Protocol::Udp) == (p.protocol == Protocol::Udp))
    {
        if !open_from.contains(&q.from.as_str()) {
            open_from.push(&q.from);
        }
    }
    let mut allow: Vec<(IpAddr, String)> = Vec::new();
    for name in &open_from {
        allow_source(report, backend, p, name, (&mut allow, notes))?;
    }
    if open_from.is_empty() {
        notes.push(format!(
            "no flow of the plan must reach {}:{}, so the port is dropped for every source",
            p.to, p.port
        ));
    }
    if let Backend::Nft { family, table, .. } = backend
        && *family != NftFamily::Inet
    {
        notes.push(format!(
            "table {} {table} filters {} only; drop the port in the other family's table too",
            family.as_str(),
            if *family == NftFamily::Ip {
                "IPv4"
            } else {
                "IPv6"
            }
        ));
    }
    allow.sort();
    Ok(Action::DefaultDeny {
        port: p.port,
        allow,
    })
}

/// The source address the target's firewall sees, and a note when it is
/// not the source's planned address.
fn source_address(report: &Report, p: &PathReport) -> Result<(IpAddr, Option<String>), String> {
    let host = report.hosts.iter().find(|h| h.name == p.from);
    // The source's planned address of the path's family (a dual-stack
    // source probes from the one of its target's family).
    let planned = match (host, p.family) {
        (Some(h), Some(family)) => h.address_of(family).or_else(|| {
            // No planned address of that family: the source's kernel chose
            // one the report does not know unless the target saw it.
            (h.addresses.len() < 2 && h.address.parse::<IpAddr>().is_err())
                .then_some(h.address.as_str())
        }),
        (Some(h), None) => Some(h.address.as_str()),
        (None, _) => None,
    };
    let planned_ip = planned
        .and_then(|a| a.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical());
    if let Some(seen) = p
        .seen_source
        .as_deref()
        .and_then(|s| s.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
    {
        let note = (planned_ip != Some(seen)).then(|| {
            format!(
                "{} saw the connection come from {seen}, not from {}'s planned address {}: an address translation on the way; the rule matches {seen}, what {}'s firewall sees",
                p.to,
                p.from,
                planned.unwrap_or("(none)"),
                p.to
            )
        });
        return Ok((seen, note));
    }
    match (planned, planned_ip) {
        (_, Some(ip)) => Ok((ip, None)),
        (Some(a), None) => Err(format!(
            "{}'s address {a:?} is not an IP address and {} saw no source, so a source-restricted rule cannot be written here; resolve the name and write the rule by hand",
            p.from, p.to
        )),
        (None, None) if host.is_some() => Err(format!(
            "the plan gives {} no {} address and {} saw no connection, so the source its kernel chose is unknown and a source-restricted rule cannot be written here; give {} its {} address in the plan and check again",
            p.from,
            p.family.map_or("such", |f| f.as_str()),
            p.to,
            p.from,
            p.family.map_or("", |f| f.as_str()),
        )),
        (None, None) => Err(format!(
            "{} is not in the report's host list, so its address is unknown",
            p.from
        )),
    }
}

/// Notes naming the hosts a flow's zone selectors cover, so the reader
/// sees that the probe host was one of many.
fn zone_notes(report: &Report, p: &PathReport, notes: &mut Vec<String>) {
    for zone in p.flow_from.iter().filter_map(|s| s.strip_prefix("zone:")) {
        let members: Vec<String> = report
            .hosts
            .iter()
            .filter(|h| h.zone.as_deref() == Some(zone))
            .map(|h| format!("{} ({})", h.name, h.plan_addresses().join(", ")))
            .collect();
        notes.push(format!(
            "the flow's source zone:{zone} covers zone {zone}'s hosts {}; the drop below blocks them and every other address the plan does not allow",
            if members.is_empty() {
                "(none in the report)".to_string()
            } else {
                members.join(", ")
            }
        ));
    }
}

/// Adds the addresses of must-be-open source `name` that the default deny
/// must keep open (its plan addresses, and those the target saw it arrive
/// from) to `allow`, with a note; an error when one is unknown.
fn allow_source(
    report: &Report,
    backend: &Backend,
    p: &PathReport,
    name: &str,
    (allow, notes): (&mut Vec<(IpAddr, String)>, &mut Vec<String>),
) -> Result<(), String> {
    let host = |name: &str| report.hosts.iter().find(|h| h.name == name);
    let Some(h) = host(name) else {
        return Err(format!(
            "{name} must reach {}:{} but is not in the report's host list, so its address is unknown and a default deny would cut it off; write the rules by hand",
            p.to, p.port
        ));
    };
    let mut mine: Vec<(IpAddr, &str)> = Vec::new();
    for a in h.plan_addresses() {
        let Ok(ip) = a.parse::<IpAddr>() else {
            return Err(format!(
                "{name} must reach {}:{} but its address {a:?} is not an IP address, so a default deny would cut it off; resolve the name and write the rules by hand",
                p.to, p.port
            ));
        };
        mine.push((ip.to_canonical(), "plan"));
    }
    let seen = report
        .paths
        .iter()
        .filter(|r| r.from == *name && r.to == p.to)
        .filter_map(|r| r.seen_source.as_deref()?.parse::<IpAddr>().ok());
    for ip in seen.map(|ip| ip.to_canonical()) {
        if !mine.iter().any(|(m, _)| *m == ip) {
            mine.push((ip, "seen by the target in this round, not in the plan"));
        }
    }
    let mut kept = Vec::new();
    for (ip, how) in mine {
        if let Backend::Nft { family, table, .. } = backend
            && !family.carries(ip)
        {
            notes.push(format!(
                "{name}'s {ip} ({how}) is not matched by table {} {table}, whose drop does not touch that family either",
                family.as_str()
            ));
            continue;
        }
        kept.push(format!("{ip} ({how})"));
        if !allow.iter().any(|(a, _)| *a == ip) {
            allow.push((ip, name.to_string()));
        }
    }
    notes.push(format!(
        "must stay open for {name}: {}",
        if kept.is_empty() {
            "no address this table can match".to_string()
        } else {
            kept.join(", ")
        }
    ));
    Ok(())
}
