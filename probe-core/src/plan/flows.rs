//! Flows: selectors resolved to hosts, port names resolved through each
//! target's roles, and the expansion into merged, self-free paths.

use std::collections::{BTreeMap, BTreeSet};

use super::raw::{RawExpect, RawPlan, RawPortRef, Selectors};
use super::{Cx, Expect, Flow, Host, Location, Path, PortRef, Problem, Selector, Suggestion};
use crate::port::{Port, Protocol};

/// Expands every flow into paths, merging duplicates.
pub(crate) fn expand(
    cx: &mut Cx<'_>,
    raw: &RawPlan,
    hosts: &[Host],
    tainted: &BTreeSet<usize>,
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
    // (from, to, port) -> index into `paths`, and the flow that made it.
    let mut seen: BTreeMap<(String, String, Port), (usize, Location)> = BTreeMap::new();

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
                        produced += 1;
                        let key = (hosts[s].name.clone(), target.name.clone(), port);
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
                        paths.push(Path {
                            from: hosts[s].name.clone(),
                            to: target.name.clone(),
                            address: target.address.clone(),
                            port,
                            service: service.clone(),
                            protocol,
                            expect,
                            role: role.clone(),
                            flows: vec![index],
                        });
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
                // Paths never run from a host to itself.
                let from = sources.len() as u64 - u64::from(sources.contains(&t));
                let ports = resolve(&pref, &hosts[t], &to).len() as u64;
                total = total.saturating_add(ports.saturating_mul(from));
            }
        }
        if total > limit {
            first_over.get_or_insert(i + 1);
        }
    }
    first_over.map(|flow| (total, flow))
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
        PortRef::Number(p) => match target.ports.iter().find(|e| e.port == *p) {
            Some(e) => vec![(*p, e.name.clone(), e.protocol, Some(e.role.clone()))],
            None => vec![(*p, p.to_string(), Protocol::Tcp, None)],
        },
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
