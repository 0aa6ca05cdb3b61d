//! Hosts: addresses, role instances with their offsets, effective ports,
//! and the collisions between role instances that share a host.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::catalog::Catalog;
use super::collisions::{Instance, InstancePorts, collisions};
use super::cx::Cx;
use super::defaults::Defaults;
use super::diag::{Location, Problem, Suggestion};
use super::host::{Address, EffectiveDial, EffectivePort, Host, PortShift};
use super::instance::RoleInstance;
use super::raw::{RawAddresses, RawHost, RawPlan};
use super::roles::Role;
use crate::port::Port;

/// What building the hosts one at a time keeps across them.
struct Seen<'r> {
    /// The roles hosts use, resolved, by name.
    used: BTreeMap<String, Role>,
    /// Host names and where each is first defined.
    names: BTreeMap<String, Location>,
    /// Addresses and the host (and place) first giving each.
    addresses: BTreeMap<Address, (String, Location)>,
    /// Every role name a host may give, for "did you mean".
    known_roles: Vec<&'r str>,
}

/// Where a host's roles resolve: the plan's own (`None`: one with errors
/// already reported), else the catalog.
struct RoleSources<'r> {
    plan: &'r BTreeMap<String, Option<Role>>,
    catalog: &'r Catalog,
}

/// Builds every host; returns them with the roles they use.
pub(crate) fn build(
    cx: &mut Cx<'_>,
    raw: &RawPlan,
    plan_roles: &BTreeMap<String, Option<Role>>,
    catalog: &Catalog,
    defaults: Defaults,
) -> (Vec<Host>, BTreeMap<String, Role>, BTreeSet<usize>) {
    let mut hosts: Vec<Host> = Vec::new();
    // Hosts whose ports are incomplete because of an error already
    // reported; flows do not pile more errors on them.
    let mut tainted: BTreeSet<usize> = BTreeSet::new();
    let sources = RoleSources {
        plan: plan_roles,
        catalog,
    };
    let mut seen = Seen {
        used: BTreeMap::new(),
        names: BTreeMap::new(),
        addresses: BTreeMap::new(),
        known_roles: plan_roles
            .keys()
            .map(String::as_str)
            .chain(catalog.roles().map(|r| r.name.as_str()))
            .collect(),
    };
    for (hi, rh) in raw.hosts.iter().enumerate() {
        let errors_before = cx.error_count();
        let (host, incomplete) = build_host(cx, rh, &sources, &mut seen, defaults);
        if incomplete || cx.error_count() > errors_before {
            tainted.insert(hi);
        }
        hosts.push(host);
    }
    unused_roles(cx, raw, &seen.used);
    (hosts, seen.used, tainted)
}

/// One host, and whether its ports are incomplete because of an error
/// reported elsewhere (a plan role with errors).
fn build_host(
    cx: &mut Cx<'_>,
    rh: &toml::Spanned<RawHost>,
    sources: &RoleSources<'_>,
    seen: &mut Seen<'_>,
    defaults: Defaults,
) -> (Host, bool) {
    let h = rh.get_ref();
    let location = cx.loc(rh.span());
    let name = h.name.get_ref().clone();
    if !valid_host_name(&name) {
        cx.push(h.name.span(), Problem::BadHostName { name: name.clone() });
    } else if name == RESERVED_HOST_NAME {
        cx.push(
            h.name.span(),
            Problem::ReservedHostName { name: name.clone() },
        );
    }
    if let Some(first) = seen.names.get(&name) {
        cx.push(
            h.name.span(),
            Problem::DuplicateHost {
                name: name.clone(),
                first: first.clone(),
            },
        );
    } else {
        seen.names.insert(name.clone(), cx.loc(h.name.span()));
    }
    let host_addresses = host_addresses(cx, &name, &h.address, &mut seen.addresses);
    let port_offset = h
        .port_offset
        .as_ref()
        .and_then(|o| offset(cx, o))
        .unwrap_or(0);
    let (instances, incomplete) = instances(cx, h, sources, seen, port_offset);
    let overrides = overrides(cx, &name, h, &instances);
    let (ports, per_instance) = effective_ports(cx, &name, &instances, &overrides);
    collisions(
        cx,
        &name,
        port_offset,
        &instances,
        &per_instance,
        &overrides,
    );
    let dials = dials(cx, &name, h, &instances);
    control_port_collisions(cx, &name, &instances, &per_instance, defaults.control_port);
    let address = host_addresses
        .first()
        .cloned()
        .unwrap_or_else(|| Address::Dns(String::new()));
    let host = Host {
        name,
        address,
        addresses: host_addresses,
        zone: h.zone.as_ref().map(|z| z.get_ref().clone()),
        roles: instances.into_iter().map(|(i, _, _)| i).collect(),
        port_offset,
        ports,
        dials,
        location,
        ssh: None,
    };
    (host, incomplete)
}

/// The host's role instances, each with its own offset (the host's
/// `port_offset` unless the item gives one), and whether one of its roles
/// is a plan role with errors already reported. Records each role used.
fn instances<'r>(
    cx: &mut Cx<'_>,
    h: &RawHost,
    sources: &RoleSources<'r>,
    seen: &mut Seen<'_>,
    port_offset: u16,
) -> (Vec<Instance<'r>>, bool) {
    let mut incomplete = false;
    let mut instances: Vec<Instance<'r>> = Vec::new();
    for item in &h.roles {
        let ri = item.get_ref();
        let role = match sources.plan.get(&ri.role) {
            Some(Some(r)) => Some(r),
            // A plan role with errors was already reported.
            Some(None) => {
                incomplete = true;
                None
            }
            None => match sources.catalog.get(&ri.role) {
                Some(r) => Some(r),
                None => {
                    cx.push(
                        item.span(),
                        Problem::UnknownRole {
                            role: ri.role.clone(),
                            suggestion: Suggestion::closest(
                                &ri.role,
                                seen.known_roles.iter().copied(),
                            ),
                        },
                    );
                    None
                }
            },
        };
        let inst_offset = match &ri.port_offset {
            Some(o) => offset(cx, o).unwrap_or(port_offset),
            None => port_offset,
        };
        if let Some(role) = role {
            seen.used
                .entry(role.name.clone())
                .or_insert_with(|| role.clone());
            instances.push((
                RoleInstance {
                    role: role.name.clone(),
                    port_offset: inst_offset,
                },
                role,
                item.span(),
            ));
        }
    }
    (instances, incomplete)
}

/// `port_overrides`: each pins a port of one of the host's roles by name,
/// whatever the offset.
fn overrides<'h>(
    cx: &mut Cx<'_>,
    name: &str,
    h: &'h RawHost,
    instances: &[Instance<'_>],
) -> BTreeMap<&'h str, Port> {
    let mut overrides: BTreeMap<&str, Port> = BTreeMap::new();
    for (pname, value) in &h.port_overrides {
        let defined = instances
            .iter()
            .any(|(_, r, _)| r.ports.iter().any(|p| &p.name == pname));
        if !defined {
            let known = instances
                .iter()
                .flat_map(|(_, r, _)| r.ports.iter().map(|p| p.name.as_str()));
            cx.push(
                value.span(),
                Problem::UnknownOverride {
                    host: name.to_owned(),
                    name: pname.clone(),
                    known: listing(known, "no ports"),
                },
            );
            continue;
        }
        match Port::from_i64(*value.get_ref()) {
            Ok(p) => {
                overrides.insert(pname.as_str(), p);
            }
            Err(error) => cx.push(
                value.span(),
                Problem::BadPort {
                    what: format!("port_overrides.{pname} of host `{name}`"),
                    error,
                },
            ),
        }
    }
    overrides
}

/// The ports the host serves, role instance by role instance, after
/// overrides and offsets; and per instance, `(name, port, protocol)` for
/// the collision checks. A port an offset pushes past 65535 is reported
/// and left out.
fn effective_ports(
    cx: &mut Cx<'_>,
    name: &str,
    instances: &[Instance<'_>],
    overrides: &BTreeMap<&str, Port>,
) -> (Vec<EffectivePort>, Vec<InstancePorts>) {
    let mut ports: Vec<EffectivePort> = Vec::new();
    let mut per_instance: Vec<InstancePorts> = Vec::new();
    for (inst, role, span) in instances {
        let mut mine = Vec::new();
        for def in &role.ports {
            let (port, shift) = if let Some(p) = overrides.get(def.name.as_str()) {
                (*p, PortShift::Pinned)
            } else if def.offset {
                match def.port.checked_offset(inst.port_offset) {
                    Ok(p) => (p, PortShift::Offset(inst.port_offset)),
                    Err(sum) => {
                        cx.push(
                            span.clone(),
                            Problem::EffectivePortTooLarge {
                                host: name.to_owned(),
                                role: role.name.clone(),
                                port_name: def.name.clone(),
                                base: def.port.get(),
                                offset: inst.port_offset,
                                sum,
                            },
                        );
                        continue;
                    }
                }
            } else {
                (def.port, PortShift::Fixed)
            };
            mine.push((def.name.clone(), port, def.protocol));
            ports.push(EffectivePort {
                name: def.name.clone(),
                port,
                protocol: def.protocol,
                role: role.name.clone(),
                service_kind: def.service,
                base: def.port,
                shift,
            });
        }
        per_instance.push(mine);
    }
    (ports, per_instance)
}

/// A TCP port of the host on its agent's control port.
fn control_port_collisions(
    cx: &mut Cx<'_>,
    name: &str,
    instances: &[Instance<'_>],
    per_instance: &[InstancePorts],
    control_port: Port,
) {
    for (i, (_, role, span)) in instances.iter().enumerate() {
        for (pname, port, protocol) in &per_instance[i] {
            if *port == control_port && protocol.is_tcp() {
                cx.push(
                    span.clone(),
                    Problem::ControlPortCollision {
                        host: name.to_owned(),
                        port: port.get(),
                        role: role.name.clone(),
                        port_name: pname.clone(),
                    },
                );
            }
        }
    }
}

/// Plan roles nobody uses, names, or builds on are probably typos or
/// leftovers: a warning each.
fn unused_roles(cx: &mut Cx<'_>, raw: &RawPlan, used: &BTreeMap<String, Role>) {
    let bases: BTreeSet<&str> = used
        .values()
        .filter_map(|r| r.based_on.as_deref())
        .collect();
    let named: BTreeSet<&str> = raw
        .hosts
        .iter()
        .flat_map(|h| h.get_ref().roles.iter().map(|r| r.get_ref().role.as_str()))
        .collect();
    for (rname, rrole) in &raw.roles {
        let mentioned = named.contains(rname.as_str())
            || raw.roles.values().any(|r| {
                r.get_ref()
                    .use_
                    .as_ref()
                    .is_some_and(|u| u.get_ref() == rname)
            });
        if !used.contains_key(rname) && !bases.contains(rname.as_str()) && !mentioned {
            cx.push(
                rrole.span(),
                Problem::UnusedRole {
                    role: rname.clone(),
                },
            );
        }
    }
}

/// The ports the host's client roles dial: each dial moved by the client
/// role instance's offset where it says so, or pinned by `dial_overrides`.
fn dials(
    cx: &mut Cx<'_>,
    host: &str,
    h: &RawHost,
    instances: &[Instance<'_>],
) -> Vec<EffectiveDial> {
    let mut pinned: BTreeMap<&str, Port> = BTreeMap::new();
    for (dname, value) in &h.dial_overrides {
        let declared = instances
            .iter()
            .any(|(_, r, _)| r.dials.iter().any(|d| &d.name == dname));
        if !declared {
            let known = instances
                .iter()
                .flat_map(|(_, r, _)| r.dials.iter().map(|d| d.name.as_str()));
            cx.push(
                value.span(),
                Problem::UnknownDialOverride {
                    host: host.to_owned(),
                    name: dname.clone(),
                    known: listing(known, "nothing"),
                },
            );
            continue;
        }
        match Port::from_i64(*value.get_ref()) {
            Ok(p) => {
                pinned.insert(dname.as_str(), p);
            }
            Err(error) => cx.push(
                value.span(),
                Problem::BadPort {
                    what: format!("dial_overrides.{dname} of host `{host}`"),
                    error,
                },
            ),
        }
    }
    let mut out = Vec::new();
    for (inst, role, span) in instances {
        for def in &role.dials {
            let (port, shift) = if let Some(p) = pinned.get(def.name.as_str()) {
                (*p, PortShift::Pinned)
            } else if def.offset {
                match def.port.checked_offset(inst.port_offset) {
                    Ok(p) => (p, PortShift::Offset(inst.port_offset)),
                    Err(sum) => {
                        cx.push(
                            span.clone(),
                            Problem::EffectivePortTooLarge {
                                host: host.to_owned(),
                                role: role.name.clone(),
                                port_name: def.name.clone(),
                                base: def.port.get(),
                                offset: inst.port_offset,
                                sum,
                            },
                        );
                        continue;
                    }
                }
            } else {
                (def.port, PortShift::Fixed)
            };
            out.push(EffectiveDial {
                def: def.clone(),
                role: role.name.clone(),
                port,
                shift,
            });
        }
    }
    out
}

fn offset(cx: &mut Cx<'_>, o: &toml::Spanned<i64>) -> Option<u16> {
    match u16::try_from(*o.get_ref()) {
        Ok(v) => Some(v),
        Err(_) => {
            cx.push(
                o.span(),
                Problem::BadOffset {
                    value: *o.get_ref(),
                },
            );
            None
        }
    }
}

/// Zones as declared (with descriptions) or implied by hosts; reports hosts
/// in undeclared zones and declared zones without hosts.
pub(crate) fn zones(cx: &mut Cx<'_>, raw: &RawPlan, hosts: &[Host]) -> BTreeMap<String, String> {
    let used: BTreeSet<&str> = hosts.iter().filter_map(|h| h.zone.as_deref()).collect();
    match &raw.zones {
        Some(declared) => {
            let declared = declared.get_ref();
            for rh in &raw.hosts {
                if let Some(z) = &rh.get_ref().zone {
                    if !declared.contains_key(z.get_ref()) {
                        cx.push(
                            z.span(),
                            Problem::UnknownZone {
                                host: rh.get_ref().name.get_ref().clone(),
                                zone: z.get_ref().clone(),
                                suggestion: Suggestion::closest(
                                    z.get_ref(),
                                    declared.keys().map(String::as_str),
                                ),
                            },
                        );
                    }
                }
            }
            for (z, desc) in declared {
                if !used.contains(z.as_str()) {
                    cx.push(desc.span(), Problem::ZoneWithoutHosts { zone: z.clone() });
                }
            }
            declared
                .iter()
                .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                .collect()
        }
        None => used
            .into_iter()
            .map(|z| (z.to_owned(), String::new()))
            .collect(),
    }
}

/// The coordinator's certificate name (`pki::COORDINATOR`): a host of that
/// name would be issued the coordinator's client key by `pki issue --plan`.
const RESERVED_HOST_NAME: &str = "coordinator";

/// Letters, digits, `.`, `_`, `-`; not starting with `-`, which ssh and
/// every other command line would read as an option.
fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// An IP literal (IPv6 with or without brackets) or a syntactically valid
/// Parses a host's `address` (one or a list), reporting every bad,
/// repeated or already used address where it is written; returns the good
/// ones, primary first.
fn host_addresses(
    cx: &mut Cx<'_>,
    host: &str,
    raw: &toml::Spanned<RawAddresses>,
    used: &mut BTreeMap<Address, (String, Location)>,
) -> Vec<Address> {
    let items = RawAddresses::spans_fixed(raw);
    if items.is_empty() {
        cx.push(
            raw.span(),
            Problem::EmptyAddressList {
                host: host.to_owned(),
            },
        );
        return Vec::new();
    }
    let mut out: Vec<Address> = Vec::new();
    for item in &items {
        let text = item.get_ref();
        let Some(address) = parse_address(text) else {
            cx.push(
                item.span(),
                Problem::BadAddress {
                    host: host.to_owned(),
                    address: text.clone(),
                },
            );
            // The plan is rejected; keep the text so flows still
            // expand and report what else is wrong.
            out.push(Address::Dns(text.clone()));
            continue;
        };
        if raw.get_ref().is_list && items.len() > 1 && matches!(address, Address::Dns(_)) {
            cx.push(
                item.span(),
                Problem::NameInAddressList {
                    host: host.to_owned(),
                    address: text.clone(),
                },
            );
            continue;
        }
        if out.contains(&address) {
            cx.push(
                item.span(),
                Problem::RepeatedAddress {
                    host: host.to_owned(),
                    address: address.to_string(),
                },
            );
            continue;
        }
        if let Some((other, first)) = used.get(&address) {
            cx.push(
                item.span(),
                Problem::DuplicateAddress {
                    host: host.to_owned(),
                    address: address.to_string(),
                    other: other.clone(),
                    first: first.clone(),
                },
            );
        } else {
            used.insert(address.clone(), (host.to_owned(), cx.loc(item.span())));
        }
        out.push(address);
    }
    out
}

/// DNS name; digits-and-dots that are not an IPv4 address are rejected
/// rather than sent to a resolver.
pub(crate) fn parse_address(s: &str) -> Option<Address> {
    let s = s.trim();
    let unbracketed = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Some(Address::Ip(ip));
    }
    let name = s.strip_suffix('.').unwrap_or(s);
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    let tld_alpha = name
        .rsplit('.')
        .next()
        .is_some_and(|t| t.chars().any(|c| c.is_ascii_alphabetic()));
    (labels_ok && tld_alpha).then(|| Address::Dns(name.to_ascii_lowercase()))
}

/// The distinct names, sorted and comma-separated, or `none` when there are
/// none: what an unknown override's error offers instead.
fn listing<'a>(names: impl Iterator<Item = &'a str>, none: &str) -> String {
    let mut names: Vec<&str> = names.collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        none.into()
    } else {
        names.join(", ")
    }
}
