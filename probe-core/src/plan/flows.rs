//! Flows: selectors resolved to hosts, port names resolved through each
//! target's roles, and the expansion into merged, self-free paths.

use std::collections::{BTreeMap, BTreeSet};

use super::raw::{RawExpect, RawPlan, RawPortRef, Selectors};
use super::{
    Address, Cx, Expect, Family, FamilyFilter, Flow, Host, Location, Path, PortRef, Problem,
    Selector, Suggestion,
};
use super::{DialFix, EffectiveDial, PortShift, Role};
use crate::port::{Port, Protocol};

/// Expands every flow into paths, merging duplicates.
pub(crate) fn expand(
    cx: &mut Cx<'_>,
    raw: &RawPlan,
    hosts: &[Host],
    tainted: &BTreeSet<usize>,
    roles: &Known<'_>,
    max_paths: u64,
) -> (Vec<Flow>, Vec<Path>) {
    // Count before allocating anything: a short plan (200 hosts, all to
    // all, 500 ports) would otherwise ask for tens of millions of paths.
    if let Some((paths, flow)) = over_limit(raw, hosts, max_paths) {
        let span = raw.flows[flow - 1].span();
        cx.push(
            span,
            Problem::TooManyPaths {
                paths,
                flow,
                limit: max_paths,
            },
        );
        return (Vec::new(), Vec::new());
    }
    let mut flows = Vec::new();
    let mut paths: Vec<Path> = Vec::new();
    // (from, to, port, family) -> index into `paths`, and the flow that
    // made it.
    // UDP and TCP (or TLS) paths to one port number are different paths.
    type Key = (String, String, Port, bool, Option<Family>);
    let mut seen: BTreeMap<Key, (usize, Location)> = BTreeMap::new();
    // (client, server, dialled port) already reported as a mismatch.
    let mut mismatched: BTreeSet<(String, String, Port)> = BTreeSet::new();

    for (i, rf) in raw.flows.iter().enumerate() {
        let f = rf.get_ref();
        let index = i + 1;
        let location = cx.loc(rf.span());
        let errors_before = cx.error_count();
        let from = selectors(cx, &f.from, hosts);
        let to = selectors(cx, &f.to, hosts);
        let expect = match f.expect {
            RawExpect::Open => Expect::Open,
            RawExpect::Blocked => Expect::Blocked,
        };
        if f.ports.get_ref().is_empty() {
            cx.push(f.ports.span(), Problem::EmptyPorts);
        }
        let family = match &f.family {
            None => FamilyFilter::Both,
            Some(v) => match v.get_ref().as_str() {
                "both" => FamilyFilter::Both,
                "ipv4" => FamilyFilter::Only(Family::Ipv4),
                "ipv6" => FamilyFilter::Only(Family::Ipv6),
                other => {
                    cx.push(
                        v.span(),
                        Problem::BadFamily {
                            value: other.to_owned(),
                        },
                    );
                    FamilyFilter::Both
                }
            },
        };
        let mut port_refs = Vec::new();
        for p in f.ports.get_ref() {
            match p.get_ref() {
                RawPortRef::Name(n) => port_refs.push((PortRef::Name(n.clone()), p.span())),
                RawPortRef::Number(n) => match Port::from_i64(*n) {
                    Ok(port) => port_refs.push((PortRef::Number(port), p.span())),
                    Err(error) => cx.push(
                        p.span(),
                        Problem::BadPort {
                            what: format!("port {n} of flow {index}"),
                            error,
                        },
                    ),
                },
            }
        }
        let (Some(from_sel), Some(to_sel)) = (from, to) else {
            continue;
        };
        let sources = matching(&from_sel, hosts);
        let targets = matching(&to_sel, hosts);

        let mut produced = 0usize;
        for (pref, pspan) in &port_refs {
            let mut resolved_somewhere = false;
            for &t in &targets {
                let target = &hosts[t];
                for (port, service, protocol, role) in resolve(pref, target, &to_sel) {
                    resolved_somewhere = true;
                    if role.is_none() {
                        cx.push(
                            pspan.clone(),
                            Problem::UnplannedPort {
                                host: target.name.clone(),
                                port: port.get(),
                            },
                        );
                    }
                    for &s in &sources {
                        if s == t {
                            continue;
                        }
                        // A client role of the source that dials this port
                        // name on the target's role decides the port probed.
                        let dial = role.as_deref().and_then(|r| {
                            hosts[s]
                                .dials
                                .iter()
                                .find(|d| d.def.name == service && inherits(r, &d.def.to, roles))
                        });
                        let (probed, server_port) = match dial {
                            Some(d) if d.port != port => (d.port, Some(port)),
                            _ => (port, None),
                        };
                        for (fam, address) in path_families(&hosts[s], target, family) {
                            produced += 1;
                            let key = (
                                hosts[s].name.clone(),
                                target.name.clone(),
                                probed,
                                protocol.is_tcp(),
                                fam,
                            );
                            if let Some((pi, first)) = seen.get(&key) {
                                let existing = &mut paths[*pi];
                                if existing.expect != expect {
                                    cx.push(
                                        rf.span(),
                                        Problem::ConflictingExpectations {
                                            from: key.0.clone(),
                                            to: key.1.clone(),
                                            port: port.get(),
                                            first: first.clone(),
                                            first_expect: existing.expect.as_str(),
                                            second_expect: expect.as_str(),
                                        },
                                    );
                                } else if !existing.flows.contains(&index) {
                                    existing.flows.push(index);
                                }
                                continue;
                            }
                            seen.insert(key, (paths.len(), location.clone()));
                            if let (Some(d), Some(_)) = (dial, server_port) {
                                // Once per client, server and port, whatever
                                // the address families.
                                let pair = (hosts[s].name.clone(), target.name.clone(), probed);
                                if mismatched.insert(pair) {
                                    let problem =
                                        mismatch(&hosts[s], target, d, port, role.as_deref());
                                    cx.push_at(hosts[s].location.clone(), problem);
                                }
                            }
                            paths.push(Path {
                                from: hosts[s].name.clone(),
                                to: target.name.clone(),
                                address,
                                port: probed,
                                server_port,
                                service: service.clone(),
                                protocol,
                                expect,
                                role: role.clone(),
                                flows: vec![index],
                                family: fam,
                            });
                        }
                    }
                }
            }
            if let PortRef::Name(n) = pref {
                let incomplete = targets.iter().any(|t| tainted.contains(t));
                if !resolved_somewhere && !targets.is_empty() && !incomplete {
                    let names: BTreeSet<&str> = targets
                        .iter()
                        .flat_map(|&t| hosts[t].ports.iter().map(|p| p.name.as_str()))
                        .collect();
                    cx.push(
                        pspan.clone(),
                        Problem::UnknownPortName {
                            name: n.clone(),
                            targets: targets
                                .iter()
                                .map(|&t| hosts[t].name.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                            suggestion: Suggestion::closest(n, names),
                        },
                    );
                }
            }
        }
        if produced == 0
            && cx.error_count() == errors_before
            && !targets.iter().any(|t| tainted.contains(t))
            && !port_refs.is_empty()
        {
            cx.push(rf.span(), Problem::FlowWithoutPaths);
        }
        flows.push(Flow {
            index,
            name: f.name.clone(),
            from: from_sel,
            to: to_sel,
            ports: port_refs.into_iter().map(|(p, _)| p).collect(),
            expect,
            family,
            location,
        });
    }
    (flows, paths)
}

/// Counts, without allocating paths, how many the flows would produce
/// (before merging duplicates, so an upper bound); when that passes
/// `limit`, the count and the flow (1-based) where it passed.
fn over_limit(raw: &RawPlan, hosts: &[Host], limit: u64) -> Option<(u64, usize)> {
    let mut total: u64 = 0;
    let mut first_over = None;
    let mut scratch = Cx {
        file: &std::sync::Arc::from(""),
        src: "",
        diags: Vec::new(),
        broken_roles: BTreeSet::new(),
    };
    for (i, rf) in raw.flows.iter().enumerate() {
        let f = rf.get_ref();
        let (Some(from), Some(to)) = (
            selectors(&mut scratch, &f.from, hosts),
            selectors(&mut scratch, &f.to, hosts),
        ) else {
            continue;
        };
        scratch.diags.clear();
        let sources: BTreeSet<usize> = matching(&from, hosts).into_iter().collect();
        let targets = matching(&to, hosts);
        for p in f.ports.get_ref() {
            let pref = match p.get_ref() {
                RawPortRef::Name(n) => PortRef::Name(n.clone()),
                RawPortRef::Number(n) => match Port::from_i64(*n) {
                    Ok(port) => PortRef::Number(port),
                    Err(_) => continue,
                },
            };
            for &t in &targets {
                // Paths never run from a host to itself; a pair gets at
                // most one path per address family of the target.
                let from = sources.len() as u64 - u64::from(sources.contains(&t));
                let families = hosts[t].families().len().max(1) as u64;
                let ports = resolve(&pref, &hosts[t], &to).len() as u64;
                total = total.saturating_add(ports.saturating_mul(from).saturating_mul(families));
            }
        }
        if total > limit {
            first_over.get_or_insert(i + 1);
        }
    }
    first_over.map(|flow| (total, flow))
}

/// The roles a plan can name: its own (resolved) and the catalog's.
pub(crate) struct Known<'a> {
    /// The plan's own roles, resolved (`None` where a role had errors).
    pub plan: &'a BTreeMap<String, Option<Role>>,
    pub catalog: &'a crate::catalog::Catalog,
}

impl Known<'_> {
    fn get(&self, name: &str) -> Option<&Role> {
        match self.plan.get(name) {
            Some(r) => r.as_ref(),
            None => self.catalog.get(name),
        }
    }
}

/// Whether role `r` is `to` or built on it through `use`.
fn inherits(r: &str, to: &str, roles: &Known<'_>) -> bool {
    let mut cur = r;
    // `use` chains are short and acyclic once resolved; the bound only
    // guards against a role that `use`s its own name.
    for _ in 0..32 {
        if cur == to {
            return true;
        }
        match roles.get(cur).and_then(|x| x.based_on.as_deref()) {
            Some(b) if b != cur => cur = b,
            _ => return false,
        }
    }
    false
}

/// The lint error for a client dialling `dial.port` where the server
/// listens on `port`, with both ports explained and both fixes named.
fn mismatch(
    client: &Host,
    server: &Host,
    dial: &EffectiveDial,
    port: Port,
    server_role: Option<&str>,
) -> Problem {
    let client_offset = client
        .roles
        .iter()
        .find(|i| i.role == dial.role)
        .map_or(client.port_offset, |i| i.port_offset);
    let client_how = match dial.shift {
        PortShift::Offset(o) => format!("{} + its offset {o}", dial.def.port),
        PortShift::Fixed => format!("as configured, not moved by its offset {client_offset}"),
        PortShift::Pinned => "pinned by dial_overrides".to_owned(),
    };
    let listening = server
        .ports
        .iter()
        .find(|e| e.name == dial.def.name && Some(e.role.as_str()) == server_role);
    let server_offset = server
        .roles
        .iter()
        .find(|i| Some(i.role.as_str()) == server_role)
        .map_or(server.port_offset, |i| i.port_offset);
    let server_how = match listening.map(|e| (e.base, e.shift)) {
        Some((base, PortShift::Offset(o))) => format!("{base} + its offset {o}"),
        Some((base, PortShift::Fixed)) => {
            format!("{base}, not moved by its offset {server_offset}")
        }
        Some((_, PortShift::Pinned)) => "pinned by port_overrides".to_owned(),
        None => "as planned".to_owned(),
    };
    Problem::DialMismatch {
        client: client.name.clone(),
        name: dial.def.name.clone(),
        client_port: dial.port.get(),
        client_how,
        server: server.name.clone(),
        server_port: port.get(),
        server_how,
        fix: DialFix {
            client: client.name.clone(),
            server: server.name.clone(),
            name: dial.def.name.clone(),
            client_setting: dial.def.client_setting.clone(),
            server_setting: dial.def.server_setting.clone(),
            client_port: dial.port.get(),
            server_port: port.get(),
        },
    }
}

/// The paths one (source, target) pair gets, one per address family, each
/// with the target address it goes to: the target's families the flow
/// allows, narrowed to those the source has too when it shares any (a
/// dual-stack pair is checked on both; a source the plan gives only IPv4
/// still reaches an IPv6-only target, from whatever address its kernel
/// chooses). A target known by a DNS name gets one path of no fixed family.
fn path_families(
    source: &Host,
    target: &Host,
    filter: FamilyFilter,
) -> Vec<(Option<Family>, Address)> {
    let target_families = target.families();
    if target_families.is_empty() {
        return vec![(None, target.address.clone())];
    }
    let candidates: Vec<Family> = target_families
        .into_iter()
        .filter(|f| filter.allows(*f))
        .collect();
    let source_families = source.families();
    let shared: Vec<Family> = candidates
        .iter()
        .copied()
        .filter(|f| source_families.contains(f))
        .collect();
    let chosen = if shared.is_empty() {
        candidates
    } else {
        shared
    };
    chosen
        .into_iter()
        .filter_map(|f| target.address_of(f).map(|a| (Some(f), a.clone())))
        .collect()
}

/// Parses and checks a `from`/`to` value; `None` when any selector is bad.
fn selectors(
    cx: &mut Cx<'_>,
    raw: &toml::Spanned<Selectors>,
    hosts: &[Host],
) -> Option<Vec<Selector>> {
    let items = Selectors::spans_fixed(raw);
    if items.is_empty() {
        cx.push(raw.span(), Problem::BadSelector { text: "[]".into() });
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for item in items {
        let text = item.get_ref().trim();
        let sel = match text.split_once(':') {
            None if text == "all" => Some(Selector::All),
            Some(("host", n)) if !n.is_empty() => Some(Selector::Host(n.to_owned())),
            Some(("role", n)) if !n.is_empty() => Some(Selector::Role(n.to_owned())),
            Some(("zone", n)) if !n.is_empty() => Some(Selector::Zone(n.to_owned())),
            _ => None,
        };
        let Some(sel) = sel else {
            cx.push(
                item.span(),
                Problem::BadSelector {
                    text: text.to_owned(),
                },
            );
            ok = false;
            continue;
        };
        if matching(std::slice::from_ref(&sel), hosts).is_empty() {
            if let Selector::Role(r) = &sel {
                let explained = cx.broken_roles.contains(r)
                    || Suggestion::closest(r, cx.broken_roles.iter().map(String::as_str))
                        .0
                        .is_some();
                if explained {
                    // A consequence of an error already reported: the flow is
                    // dropped quietly, the plan fails on that error.
                    ok = false;
                    continue;
                }
            }
            let candidates: Vec<String> = match &sel {
                Selector::All => Vec::new(),
                Selector::Host(_) => hosts.iter().map(|h| format!("host:{}", h.name)).collect(),
                Selector::Role(_) => hosts
                    .iter()
                    .flat_map(|h| h.roles.iter().map(|r| format!("role:{}", r.role)))
                    .collect(),
                Selector::Zone(_) => hosts
                    .iter()
                    .filter_map(|h| h.zone.as_ref().map(|z| format!("zone:{z}")))
                    .collect(),
            };
            cx.push(
                item.span(),
                Problem::SelectorMatchesNothing {
                    text: text.to_owned(),
                    suggestion: Suggestion::closest(text, candidates.iter().map(String::as_str)),
                },
            );
            ok = false;
            continue;
        }
        out.push(sel);
    }
    ok.then_some(out)
}

/// Indices of the hosts any selector matches, in host order.
pub(crate) fn matching(sel: &[Selector], hosts: &[Host]) -> Vec<usize> {
    hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| sel.iter().any(|s| selects(s, h)))
        .map(|(i, _)| i)
        .collect()
}

fn selects(s: &Selector, h: &Host) -> bool {
    match s {
        Selector::All => true,
        Selector::Host(n) => &h.name == n,
        Selector::Role(r) => h.roles.iter().any(|i| &i.role == r),
        Selector::Zone(z) => h.zone.as_deref() == Some(z.as_str()),
    }
}

/// The ports a flow port means on one target: `(port, service, protocol,
/// role)`. When the target was selected only through `role:` selectors, a
/// name resolves through those roles first, so `to = "role:store"` reaches
/// the store's 9444 and not the publisher's 9443 on a shared host.
fn resolve(
    pref: &PortRef,
    target: &Host,
    to: &[Selector],
) -> Vec<(Port, String, Protocol, Option<String>)> {
    match pref {
        PortRef::Number(p) => {
            // Every port of that number: a TCP and a UDP one may share it.
            let planned: Vec<_> = target
                .ports
                .iter()
                .filter(|e| e.port == *p)
                .map(|e| (*p, e.name.clone(), e.protocol, Some(e.role.clone())))
                .collect();
            if planned.is_empty() {
                vec![(*p, p.to_string(), Protocol::Tcp, None)]
            } else {
                planned
            }
        }
        PortRef::Name(n) => {
            let by_role_only = !to
                .iter()
                .any(|s| !matches!(s, Selector::Role(_)) && selects(s, target));
            let via: BTreeSet<&str> = to
                .iter()
                .filter_map(|s| match s {
                    Selector::Role(r) if selects(s, target) => Some(r.as_str()),
                    _ => None,
                })
                .collect();
            let all: Vec<_> = target.ports.iter().filter(|e| &e.name == n).collect();
            let narrowed: Vec<_> = all
                .iter()
                .copied()
                .filter(|e| via.contains(e.role.as_str()))
                .collect();
            let chosen = if by_role_only && !narrowed.is_empty() {
                narrowed
            } else {
                all
            };
            chosen
                .into_iter()
                .map(|e| (e.port, e.name.clone(), e.protocol, Some(e.role.clone())))
                .collect()
        }
    }
}
