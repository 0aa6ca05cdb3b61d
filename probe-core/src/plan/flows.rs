//! Flows: each flow validated, its selectors matched and its port names
//! resolved through each target's roles (`selectors`), and the expansion
//! into merged, self-free paths.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::{ControlFlow, Range};

use super::cx::Cx;
use super::diag::{DialFix, Problem, Suggestion};
use super::host::{Address, EffectiveDial, Family, FamilyFilter, Host, PortShift};
use super::path::{Expect, Flow, PathView, PortRef, Selector};
use super::raw::{RawExpect, RawFlow, RawPlan, RawPortRef};
use super::roles::Role;
use super::selectors::{matching, resolve, selectors};
use crate::port::{Port, Protocol};

/// Validates every flow and prepares its expansion into paths, merging
/// duplicates. Nothing here is per path: the paths themselves are walked
/// on demand ([`Expansion::for_each`]), so a caller keeps only those it
/// needs (an agent its own, `plan show` none at all).
pub(crate) fn expand(
    cx: &mut Cx<'_>,
    raw: &RawPlan,
    hosts: &[Host],
    tainted: &BTreeSet<usize>,
    roles: &Known<'_>,
    max_paths: u64,
) -> (Vec<Flow>, Expansion) {
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
        return (Vec::new(), Expansion::default());
    }
    let env = Env {
        hosts,
        fams: hosts.iter().map(HostFamilies::of).collect(),
        tainted,
        roles,
        any_dials: hosts.iter().any(|h| !h.dials.is_empty()),
    };
    let mut flows = Vec::new();
    let mut x = Expansion::default();
    for (i, rf) in raw.flows.iter().enumerate() {
        if let Some(flow) = expand_flow(cx, &env, rf, i + 1, &mut x) {
            flows.push(flow);
        }
    }
    x.mark_collisions();
    x.merge(cx, raw, hosts, &flows, &env.fams);
    (flows, x)
}

/// What expanding every flow reads.
struct Env<'a> {
    hosts: &'a [Host],
    /// Each host's address families, in host order.
    fams: Vec<HostFamilies>,
    /// Hosts whose ports are incomplete after an error already reported.
    tainted: &'a BTreeSet<usize>,
    roles: &'a Known<'a>,
    /// Whether any host dials a port at all (most plans: none).
    any_dials: bool,
}

/// One flow whose selectors are valid, being expanded.
struct FlowAt<'a> {
    /// Its position in the file, from 1.
    index: usize,
    expect: Expect,
    family: FamilyFilter,
    /// Its sources' index in [`Expansion::sources`].
    source_set: usize,
    sources: &'a [usize],
    targets: &'a [usize],
    to: &'a [Selector],
}

/// Validates one flow (`index`, from 1) and adds its units to `x`; `None`
/// when a selector is bad (reported).
fn expand_flow(
    cx: &mut Cx<'_>,
    env: &Env<'_>,
    rf: &toml::Spanned<RawFlow>,
    index: usize,
    x: &mut Expansion,
) -> Option<Flow> {
    let f = rf.get_ref();
    let location = cx.loc(rf.span());
    let errors_before = cx.error_count();
    let from = selectors(cx, &f.from, env.hosts);
    let to = selectors(cx, &f.to, env.hosts);
    let expect = match f.expect {
        RawExpect::Open => Expect::Open,
        RawExpect::Blocked => Expect::Blocked,
    };
    if f.ports.get_ref().is_empty() {
        cx.push(f.ports.span(), Problem::EmptyPorts);
    }
    let family = flow_family(cx, f);
    let max_loss_pct = threshold(cx, f.max_loss_pct.as_ref(), "max_loss_pct", 100.0);
    let max_rtt_ms = threshold(cx, f.max_rtt_ms.as_ref(), "max_rtt_ms", 600_000.0);
    let port_refs = port_refs(cx, f, index);
    let (Some(from_sel), Some(to_sel)) = (from, to) else {
        return None;
    };
    let sources = matching(&from_sel, env.hosts);
    let targets = matching(&to_sel, env.hosts);
    let at = FlowAt {
        index,
        expect,
        family,
        source_set: x.sources.len(),
        sources: &sources,
        targets: &targets,
        to: &to_sel,
    };
    let mut produced = 0usize;
    for (pref, pspan) in &port_refs {
        expand_port_ref(cx, env, &at, (pref, pspan), x, &mut produced);
    }
    let incomplete = targets.iter().any(|t| env.tainted.contains(t));
    x.sources.push(sources);
    if produced == 0 && cx.error_count() == errors_before && !incomplete && !port_refs.is_empty() {
        cx.push(rf.span(), Problem::FlowWithoutPaths);
    }
    Some(Flow {
        index,
        name: f.name.clone(),
        from: from_sel,
        to: to_sel,
        ports: port_refs.into_iter().map(|(p, _)| p).collect(),
        expect,
        family,
        max_loss_pct,
        max_rtt_ms,
        location,
    })
}

/// A flow's quality threshold `key`, from 0 to `max` (a bad one is
/// reported and left out).
fn threshold(
    cx: &mut Cx<'_>,
    v: Option<&toml::Spanned<f64>>,
    key: &'static str,
    max: f64,
) -> Option<f64> {
    let v = v?;
    let x = *v.get_ref();
    if (0.0..=max).contains(&x) {
        return Some(x);
    }
    cx.push(
        v.span(),
        Problem::BadThreshold {
            key,
            value: x.to_string(),
            expected: if max >= 1000.0 {
                "0..=600000"
            } else {
                "0..=100"
            },
        },
    );
    None
}

/// A flow's `family` (`both` when absent or bad; a bad one is reported).
fn flow_family(cx: &mut Cx<'_>, f: &RawFlow) -> FamilyFilter {
    match &f.family {
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
    }
}

/// A flow's port references with where each is written; a bad number is
/// reported and left out.
fn port_refs(cx: &mut Cx<'_>, f: &RawFlow, index: usize) -> Vec<(PortRef, Range<usize>)> {
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
    port_refs
}

/// One unit per target of the flow on which the port reference means a
/// port; counts into `produced` the paths of the first such port (enough
/// to know whether the flow produces any). A port name no target has is
/// reported, unless a target's ports are incomplete after another error.
fn expand_port_ref(
    cx: &mut Cx<'_>,
    env: &Env<'_>,
    at: &FlowAt<'_>,
    (pref, pspan): (&PortRef, &Range<usize>),
    x: &mut Expansion,
    produced: &mut usize,
) {
    let hosts = env.hosts;
    let mut resolved_somewhere = false;
    for &t in at.targets {
        let target = &hosts[t];
        let mut entries = Vec::new();
        for resolved in resolve(pref, target, at.to) {
            let super::selectors::Resolved {
                port,
                service,
                protocol,
                role,
                kind,
            } = resolved;
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
            let dials = match role.as_deref().filter(|_| env.any_dials) {
                Some(r) => source_dials(env, at.sources, t, (port, &service), r),
                None => Vec::new(),
            };
            if *produced == 0 {
                *produced += at
                    .sources
                    .iter()
                    .filter(|&&s| s != t)
                    .map(|&s| families(&env.fams[s], &env.fams[t], target, at.family).count())
                    .sum::<usize>();
            }
            entries.push(Entry {
                port,
                service,
                kind,
                protocol,
                role,
                colliding: false,
                dials,
            });
        }
        if !entries.is_empty() {
            x.units.push(Unit {
                flow: at.index,
                expect: at.expect,
                family: at.family,
                sources: at.source_set,
                target: t,
                entries,
            });
        }
    }
    if let PortRef::Name(n) = pref {
        let incomplete = at.targets.iter().any(|t| env.tainted.contains(t));
        if !resolved_somewhere && !at.targets.is_empty() && !incomplete {
            let names: BTreeSet<&str> = at
                .targets
                .iter()
                .flat_map(|&t| hosts[t].ports.iter().map(|p| p.name.as_str()))
                .collect();
            cx.push(
                pspan.clone(),
                Problem::UnknownPortName {
                    name: n.clone(),
                    targets: at
                        .targets
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

/// The sources (other than target `t`) whose client role dials `service`
/// on the target's role `r` (or a role built on it) at another port than
/// `port`: that dial decides the port they probe.
fn source_dials(
    env: &Env<'_>,
    sources: &[usize],
    t: usize,
    (port, service): (Port, &str),
    r: &str,
) -> Vec<SourceDial> {
    let hosts = env.hosts;
    let mut dials = Vec::new();
    for &s in sources.iter().filter(|&&s| s != t) {
        let found = hosts[s]
            .dials
            .iter()
            .position(|d| d.def.name == service && inherits(r, &d.def.to, env.roles));
        if let Some(k) = found.filter(|&k| hosts[s].dials[k].port != port) {
            dials.push(SourceDial {
                source: s,
                dial: k,
                port: hosts[s].dials[k].port,
                colliding: false,
            });
        }
    }
    dials
}

/// A path's identity: (source, target, port probed, family and transport),
/// by host index. UDP and TCP (or TLS) paths to one port number are
/// different paths.
type Key = (u32, u32, u16, u8);

fn key(
    source: usize,
    target: usize,
    port: Port,
    protocol: Protocol,
    family: Option<Family>,
) -> Key {
    let fam = match family {
        None => 0,
        Some(Family::Ipv4) => 1,
        Some(Family::Ipv6) => 2,
    };
    let udp = if protocol.is_tcp() { 0 } else { 4 };
    // Host counts are far below u32::MAX: `max_paths` bounds the plan.
    (source as u32, target as u32, port.get(), fam | udp)
}

/// How a plan's flows expand into paths, without the paths: one [`Unit`]
/// per (flow, port reference, target), the sources of each flow, and the
/// merged flows of the few paths more than one unit produces. Its size
/// follows flows × ports × targets, not the paths (× sources).
#[derive(Debug, Default)]
pub(crate) struct Expansion {
    units: Vec<Unit>,
    /// Each flow's sources, in host order (units point here).
    sources: Vec<Vec<usize>>,
    /// Paths that more than one unit (or entry) may produce, with the
    /// expectation of the first and every flow that produces them.
    merged: HashMap<Key, Merged>,
    /// The distinct paths.
    total: usize,
}

#[derive(Debug)]
struct Unit {
    flow: usize,
    expect: Expect,
    family: FamilyFilter,
    /// Index into [`Expansion::sources`].
    sources: usize,
    target: usize,
    entries: Vec<Entry>,
}

/// One port a flow's port reference means on a target.
#[derive(Debug)]
struct Entry {
    port: Port,
    service: String,
    /// What the port must answer with.
    kind: Option<super::ServiceKind>,
    protocol: Protocol,
    role: Option<String>,
    /// Whether another entry may produce a path to the same target and port.
    colliding: bool,
    /// The sources (in host order) whose client role dials another port.
    dials: Vec<SourceDial>,
}

#[derive(Debug)]
struct SourceDial {
    source: usize,
    /// Index into the source's `dials`.
    dial: usize,
    /// The port it dials.
    port: Port,
    colliding: bool,
}

#[derive(Debug)]
struct Merged {
    expect: Expect,
    flows: Vec<usize>,
}

/// One path as the walk produces it, before merging.
struct Emission<'a> {
    unit: &'a Unit,
    entry: &'a Entry,
    source: usize,
    probed: Port,
    server_port: Option<Port>,
    dial: Option<usize>,
    family: Option<Family>,
    address: &'a Address,
    colliding: bool,
}

impl Expansion {
    /// The number of distinct paths.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Marks the entries (and dials) whose (target, port) some other entry
    /// may also produce: only their paths need the merge map.
    fn mark_collisions(&mut self) {
        let mut count: HashMap<(usize, u16), u32> = HashMap::new();
        for u in &self.units {
            for e in &u.entries {
                *count.entry((u.target, e.port.get())).or_default() += 1;
                let mut ports: Vec<u16> = e.dials.iter().map(|d| d.port.get()).collect();
                ports.sort_unstable();
                ports.dedup();
                for p in ports {
                    *count.entry((u.target, p)).or_default() += 1;
                }
            }
        }
        for u in &mut self.units {
            for e in &mut u.entries {
                e.colliding = count[&(u.target, e.port.get())] > 1;
                for d in &mut e.dials {
                    d.colliding = count[&(u.target, d.port.get())] > 1;
                }
            }
        }
    }

    /// Every path in order, duplicates included.
    fn walk<B>(
        &self,
        hosts: &[Host],
        fams: &[HostFamilies],
        mut f: impl FnMut(Emission<'_>) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        for unit in &self.units {
            let t = unit.target;
            let target = &hosts[t];
            for entry in &unit.entries {
                let mut dials = entry.dials.iter().peekable();
                for &s in &self.sources[unit.sources] {
                    if s == t {
                        continue;
                    }
                    let dial = dials.next_if(|d| d.source == s);
                    let (probed, server_port, colliding, dial) = match dial {
                        Some(d) => (d.port, Some(entry.port), d.colliding, Some(d.dial)),
                        None => (entry.port, None, entry.colliding, None),
                    };
                    for (family, address) in families(&fams[s], &fams[t], target, unit.family) {
                        f(Emission {
                            unit,
                            entry,
                            source: s,
                            probed,
                            server_port,
                            dial,
                            family,
                            address,
                            colliding,
                        })?;
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// Merges the paths several units produce (reporting conflicting
    /// expectations), reports dial mismatches, and counts the paths.
    fn merge(
        &mut self,
        cx: &mut Cx<'_>,
        raw: &RawPlan,
        hosts: &[Host],
        flows: &[Flow],
        fams: &[HostFamilies],
    ) {
        let mut merged: HashMap<Key, Merged> = HashMap::new();
        // (client, server, dialled port) already reported as a mismatch.
        let mut mismatched: HashSet<(usize, usize, Port)> = HashSet::new();
        let mut total = 0usize;
        let flow_location = |index: usize| {
            flows
                .iter()
                .find(|f| f.index == index)
                .map(|f| f.location.clone())
        };
        let _ = self.walk(hosts, fams, |e| {
            let (s, t) = (e.source, e.unit.target);
            let new = if e.colliding {
                match merged.entry(key(s, t, e.probed, e.entry.protocol, e.family)) {
                    std::collections::hash_map::Entry::Occupied(mut o) => {
                        let m = o.get_mut();
                        if m.expect != e.unit.expect {
                            let first = m.flows[0];
                            cx.push(
                                raw.flows[e.unit.flow - 1].span(),
                                Problem::ConflictingExpectations {
                                    from: hosts[s].name.clone(),
                                    to: hosts[t].name.clone(),
                                    port: e.entry.port.get(),
                                    first: flow_location(first)
                                        .unwrap_or_else(|| cx.loc(raw.flows[first - 1].span())),
                                    first_expect: m.expect.as_str(),
                                    second_expect: e.unit.expect.as_str(),
                                },
                            );
                        } else if !m.flows.contains(&e.unit.flow) {
                            m.flows.push(e.unit.flow);
                        }
                        false
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(Merged {
                            expect: e.unit.expect,
                            flows: vec![e.unit.flow],
                        });
                        true
                    }
                }
            } else {
                true
            };
            if new {
                total += 1;
                // Once per client, server and port, whatever the address
                // families.
                if let Some(k) = e.dial {
                    if mismatched.insert((s, t, e.probed)) {
                        let d = &hosts[s].dials[k];
                        let problem = mismatch(
                            &hosts[s],
                            &hosts[t],
                            d,
                            e.entry.port,
                            e.entry.role.as_deref(),
                        );
                        cx.push_at(hosts[s].location.clone(), problem);
                    }
                }
            }
            ControlFlow::<()>::Continue(())
        });
        self.merged = merged;
        self.total = total;
    }

    /// Calls `f` with every distinct path, in plan order, until it breaks.
    pub(crate) fn for_each<B>(
        &self,
        hosts: &[Host],
        mut f: impl FnMut(PathView<'_>) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        let fams: Vec<HostFamilies> = hosts.iter().map(HostFamilies::of).collect();
        // Which merged paths were produced already (only those).
        let mut emitted: HashSet<Key> = HashSet::new();
        let mut index = 0usize;
        self.walk(hosts, &fams, |e| {
            let (s, t) = (e.source, e.unit.target);
            let flows: &[usize] = if e.colliding {
                let k = key(s, t, e.probed, e.entry.protocol, e.family);
                if !emitted.insert(k) {
                    return ControlFlow::Continue(());
                }
                match self.merged.get(&k) {
                    Some(m) => &m.flows,
                    None => std::slice::from_ref(&e.unit.flow),
                }
            } else {
                std::slice::from_ref(&e.unit.flow)
            };
            let expect = if e.colliding {
                self.merged
                    .get(&key(s, t, e.probed, e.entry.protocol, e.family))
                    .map_or(e.unit.expect, |m| m.expect)
            } else {
                e.unit.expect
            };
            let view = PathView {
                index,
                from: &hosts[s].name,
                to: &hosts[t].name,
                address: e.address,
                port: e.probed,
                server_port: e.server_port,
                service: &e.entry.service,
                protocol: e.entry.protocol,
                expect,
                role: e.entry.role.as_deref(),
                flows,
                family: e.family,
                service_kind: e.entry.kind,
            };
            index += 1;
            f(view)
        })
    }
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
        lines: super::diag::LineStarts::new(""),
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
    pub catalog: &'a super::catalog::Catalog,
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

/// The address families of a host's IP literal addresses, in address
/// order (at most two).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HostFamilies([Option<Family>; 2]);

impl HostFamilies {
    pub(crate) fn of(h: &Host) -> HostFamilies {
        let mut v = [None; 2];
        for f in h.addresses.iter().filter_map(Address::family) {
            if v[0].is_none() {
                v[0] = Some(f);
            } else if v[0] != Some(f) && v[1].is_none() {
                v[1] = Some(f);
            }
        }
        HostFamilies(v)
    }

    fn iter(self) -> impl Iterator<Item = Family> + Clone {
        self.0.into_iter().flatten()
    }

    fn contains(self, f: Family) -> bool {
        self.0.contains(&Some(f))
    }

    fn is_empty(self) -> bool {
        self.0[0].is_none()
    }
}

/// The paths one (source, target) pair gets, one per address family, each
/// with the target address it goes to: the target's families the flow
/// allows, narrowed to those the source has too when it shares any (a
/// dual-stack pair is checked on both; a source the plan gives only IPv4
/// still reaches an IPv6-only target, from whatever address its kernel
/// chooses). A target known by a DNS name gets one path of no fixed family.
fn families<'a>(
    source: &HostFamilies,
    target_families: &HostFamilies,
    target: &'a Host,
    filter: FamilyFilter,
) -> impl Iterator<Item = (Option<Family>, &'a Address)> + use<'a> {
    let mut out: [Option<(Option<Family>, &'a Address)>; 2] = [None, None];
    if target_families.is_empty() {
        out[0] = Some((None, &target.address));
    } else {
        let candidates = || target_families.iter().filter(|f| filter.allows(*f));
        let shared = candidates().any(|f| source.contains(f));
        let mut n = 0;
        for f in candidates().filter(|f| !shared || source.contains(*f)) {
            if let Some(a) = target.address_of(f) {
                out[n] = Some((Some(f), a));
                n += 1;
            }
        }
    }
    out.into_iter().flatten()
}
