//! From configuration to a verified check: the scan as a plan (`--format
//! toml`) that reproduces every dial — scanned installations at their
//! addresses and offsets, the hosts outside the scan (databases, brokers)
//! as plan hosts, `dial_overrides` where a client dials another port than
//! the catalog's default, a flow per client and server — so that `plan
//! lint` reports the scan's mismatches and `check` probes the ports the
//! clients really dial; and `scan --plan`, every difference between a plan
//! and the installations, both ways.

use std::collections::BTreeMap;
use std::io::{self, Write};

use super::install;
use super::model::{DialFinding, Difference, Install, Scan};
use crate::plan::Catalog;
use crate::plan::{Host, Plan};

/// A TOML string literal.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A plan host for endpoints outside the scan.
struct OutsideHost {
    name: String,
    address: String,
    role: Option<String>,
    overrides: BTreeMap<String, u16>,
    what: String,
}

/// The catalog role a dial `name` of a client playing `role` reaches.
fn dial_target(role: &str, d: &DialFinding) -> Option<String> {
    if let Some(db) = &d.database {
        return super::datasource::jdbc(&format!("jdbc:{db}://x"))
            .and_then(|j| j.role().map(|(r, _)| r.to_owned()));
    }
    Catalog::builtin()
        .get(role)?
        .dials
        .iter()
        .find(|c| c.name == d.name)
        .map(|c| c.to.clone())
}

/// Hosts for every endpoint outside the scan, one per dialled host.
fn outside_hosts(scan: &Scan) -> Vec<OutsideHost> {
    let catalog = Catalog::builtin();
    let mut out: Vec<OutsideHost> = Vec::new();
    for i in &scan.installs {
        for d in i.dials.iter().filter(|d| d.reaches == "outside") {
            let pos = match out
                .iter()
                .position(|o| o.address.eq_ignore_ascii_case(&d.to_host))
            {
                Some(p) => p,
                None => {
                    let mut name: String = d
                        .to_host
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                                c
                            } else {
                                '-'
                            }
                        })
                        .collect();
                    if scan
                        .installs
                        .iter()
                        .any(|i| i.host.eq_ignore_ascii_case(&name))
                        || out.iter().any(|o| o.name.eq_ignore_ascii_case(&name))
                    {
                        name = format!("{name}-outside-{}", out.len() + 1);
                    }
                    out.push(OutsideHost {
                        name,
                        address: d.to_host.clone(),
                        role: None,
                        overrides: BTreeMap::new(),
                        what: String::new(),
                    });
                    out.len() - 1
                }
            };
            let o = &mut out[pos];
            if o.role.is_none() {
                o.role = dial_target(&i.role, d);
                o.what = d.database.as_ref().map_or_else(
                    || format!("dialled by {} for {}", i.host, d.name),
                    |db| format!("{db} database"),
                );
            }
            let has = o.role.as_ref().and_then(|r| catalog.get(r)).and_then(|r| {
                r.ports
                    .iter()
                    .find(|p| p.name == d.name)
                    .map(|p| p.port.get())
            });
            if has.is_some_and(|p| p != d.to_port) {
                o.overrides.entry(d.name.clone()).or_insert(d.to_port);
            }
        }
    }
    out
}

/// The catalog port of `name` on `role` at `offset`, if the role has it.
fn catalog_port(role: &str, name: &str, offset: u16) -> Option<u16> {
    let r = Catalog::builtin().get(role)?;
    let p = r.ports.iter().find(|p| p.name == name)?;
    Some(if p.offset {
        p.port.get().saturating_add(offset)
    } else {
        p.port.get()
    })
}

fn install_host(i: &Install, used: &mut Vec<String>, w: &mut impl Write) -> io::Result<()> {
    let catalog = Catalog::builtin();
    writeln!(w, "\n[[hosts]]")?;
    writeln!(w, "name = {}", quote(&i.host))?;
    let address = i
        .names
        .iter()
        .find(|n| !used.iter().any(|u| u.eq_ignore_ascii_case(n)))
        .unwrap_or(&i.host)
        .clone();
    used.push(address.clone());
    writeln!(
        w,
        "address = {}   # {}; check it",
        quote(&address),
        i.product
    )?;
    let mut roles = vec![quote(&i.role)];
    if i.cluster {
        roles.push("{ role = \"wso2-cluster-wka\", port_offset = 0 }".into());
    }
    writeln!(w, "roles = [{}]", roles.join(", "))?;
    let offset = install::plan_offset(i);
    if offset == i.offset {
        writeln!(w, "port_offset = {offset}   # {}", i.offset_source)?;
    } else {
        writeln!(
            w,
            "port_offset = {offset}   # offset {} ({}), counted from {}'s shipped {}",
            i.offset,
            i.offset_source,
            i.role,
            install::shipped_offset(&i.role)
        )?;
    }
    let pinned: Vec<String> = i
        .ports
        .iter()
        .filter(|p| {
            let catalog = catalog_port(&i.role, &p.name, offset);
            // A port the role does not name (the full distribution's) is
            // reached by number in the flows.
            p.name == "cluster" || catalog.is_some_and(|c| c != p.port)
        })
        .map(|p| format!("{} = {}", p.name, p.port))
        .collect();
    if !pinned.is_empty() {
        writeln!(w, "port_overrides = {{ {} }}", pinned.join(", "))?;
    }
    // Dials the catalog would predict differently: the port the client
    // really dials, so `check` probes it.
    let role = catalog.get(&i.role);
    let mut overrides: BTreeMap<&str, u16> = BTreeMap::new();
    for d in i.dials.iter().filter(|d| d.reaches != "local") {
        let predicted = role
            .and_then(|r| r.dials.iter().find(|c| c.name == d.name))
            .map(|c| {
                if c.offset {
                    c.port.get().saturating_add(offset)
                } else {
                    c.port.get()
                }
            });
        if predicted.is_some_and(|p| p != d.to_port) {
            overrides.entry(&d.name).or_insert(d.to_port);
        }
    }
    if !overrides.is_empty() {
        let items: Vec<String> = overrides
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        writeln!(w, "dial_overrides = {{ {} }}", items.join(", "))?;
    }
    Ok(())
}

/// The scan as a plan.
pub(crate) fn plan(scan: &Scan, w: &mut impl Write) -> io::Result<()> {
    let outside = outside_hosts(scan);
    writeln!(
        w,
        "# portcall wso2 scan: {} installation{}, {} host{} outside the scan; check each address.",
        scan.installs.len(),
        if scan.installs.len() == 1 { "" } else { "s" },
        outside.len(),
        if outside.len() == 1 { "" } else { "s" },
    )?;
    writeln!(w, "name = \"wso2-scan\"")?;
    // One flow per (client, server) pair, its ports the dial names the
    // server has, else the numbers.
    let mut flows: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for i in &scan.installs {
        for d in i.dials.iter().filter(|d| d.reaches != "local") {
            let (to, has_name) = if d.reaches == "outside" {
                let Some(o) = outside
                    .iter()
                    .find(|o| o.address.eq_ignore_ascii_case(&d.to_host))
                else {
                    continue;
                };
                let has = o
                    .role
                    .as_ref()
                    .is_some_and(|r| catalog_port(r, &d.name, 0).is_some());
                (o.name.clone(), has)
            } else {
                let Some(t) = scan.installs.iter().find(|t| t.host == d.reaches) else {
                    continue;
                };
                let planned = catalog_port(&t.role, &d.name, 0).is_some()
                    || (t.cluster && d.name == "cluster");
                (t.host.clone(), planned)
            };
            let item = if has_name {
                quote(&d.name)
            } else {
                d.to_port.to_string()
            };
            let v = flows.entry((i.host.clone(), to)).or_default();
            if !v.contains(&item) {
                v.push(item);
            }
        }
    }
    if flows.is_empty() {
        writeln!(w, "flows = []   # no installation dials another host")?;
    }
    let mut used = Vec::new();
    for i in &scan.installs {
        install_host(i, &mut used, w)?;
    }
    for o in &outside {
        writeln!(w, "\n[[hosts]]   # outside the scan: {}", o.what)?;
        writeln!(w, "name = {}", quote(&o.name))?;
        writeln!(w, "address = {}", quote(&o.address))?;
        if let Some(r) = &o.role {
            writeln!(w, "roles = [{}]", quote(r))?;
        }
        if !o.overrides.is_empty() {
            let items: Vec<String> = o
                .overrides
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect();
            writeln!(w, "port_overrides = {{ {} }}", items.join(", "))?;
        }
    }
    for ((from, to), ports) in &flows {
        writeln!(w, "\n[[flows]]")?;
        writeln!(w, "name = {}", quote(&format!("{from} dials {to}")))?;
        writeln!(w, "from = {}", quote(&format!("host:{from}")))?;
        writeln!(w, "to = {}", quote(&format!("host:{to}")))?;
        writeln!(w, "ports = [{}]", ports.join(", "))?;
    }
    Ok(())
}

/// The plan host an installation is: by name, else by one of its names.
fn plan_host<'p>(plan: &'p Plan, i: &Install) -> Option<&'p Host> {
    plan.host(&i.host).or_else(|| {
        plan.hosts.iter().find(|h| {
            i.answers_to(&h.name) || h.addresses.iter().any(|a| i.answers_to(&a.to_string()))
        })
    })
}

/// The plan host a dial reaches: the installation it reached, else the
/// host whose name or address it dials.
fn dial_host<'p>(plan: &'p Plan, installs: &[Install], d: &DialFinding) -> Option<&'p Host> {
    if let Some(t) = installs.iter().find(|t| t.host == d.reaches) {
        if let Some(h) = plan_host(plan, t) {
            return Some(h);
        }
    }
    plan.hosts.iter().find(|t| {
        t.name.eq_ignore_ascii_case(&d.to_host)
            || t.addresses
                .iter()
                .any(|a| a.to_string().eq_ignore_ascii_case(&d.to_host))
    })
}

/// Every difference between the plan and the installations, both ways.
pub(crate) fn differences(installs: &[Install], plan: &Plan, out: &mut Vec<Difference>) {
    for i in installs {
        let Some(h) = plan_host(plan, i) else {
            out.push(Difference {
                host: i.host.clone(),
                kind: "host-not-in-plan",
                detail: format!(
                    "{} is scanned but the plan has no host of that name or address",
                    i.host
                ),
            });
            continue;
        };
        host_differences(i, h, out);
        for d in i.dials.iter().filter(|d| d.reaches != "local") {
            let Some(t) = dial_host(plan, installs, d) else {
                continue;
            };
            dial_difference(plan, i, h, t, d, out);
        }
        planned_dials(plan, installs, i, h, out);
    }
}

/// The other way: paths the plan probes as one of `h`'s dials (a path
/// whose port name its roles dial) to a scanned installation that `i`'s
/// files do not dial there.
fn planned_dials(
    plan: &Plan,
    installs: &[Install],
    i: &Install,
    h: &Host,
    out: &mut Vec<Difference>,
) {
    for path in plan.paths.iter().filter(|p| p.from == h.name) {
        if !h.dials.iter().any(|d| d.def.name == path.service) {
            continue;
        }
        let Some(t) = installs
            .iter()
            .find(|t| plan_host(plan, t).is_some_and(|th| th.name == path.to))
        else {
            continue;
        };
        let dialled = i.dials.iter().any(|d| {
            d.reaches == t.host && (d.name == path.service || d.to_port == path.port.get())
        });
        if !dialled {
            out.push(Difference {
                host: i.host.clone(),
                kind: "dial-not-configured",
                detail: format!(
                    "the plan probes {} -> {}:{} as {}'s {} dial, the installation does not dial {} for it",
                    h.name, path.to, path.port, h.name, path.service, t.host
                ),
            });
        }
    }
}

fn host_differences(i: &Install, h: &Host, out: &mut Vec<Difference>) {
    let plan_offset = h
        .roles
        .iter()
        .find(|r| r.role == i.role)
        .map_or(h.port_offset, |r| r.port_offset);
    if plan_offset != install::plan_offset(i) {
        out.push(Difference {
            host: i.host.clone(),
            kind: "offset-differs",
            detail: format!(
                "the plan gives {} offset {plan_offset}, the installation runs at {} ({}){}",
                h.name,
                install::plan_offset(i),
                i.offset_source,
                if install::shipped_offset(&i.role) > 0 {
                    format!(
                        ", counted from {}'s shipped {}",
                        i.role,
                        install::shipped_offset(&i.role)
                    )
                } else {
                    String::new()
                }
            ),
        });
    }
    for p in &h.ports {
        if !i.ports.iter().any(|q| q.port == p.port.get()) {
            out.push(Difference {
                host: i.host.clone(),
                kind: "port-not-opened",
                detail: format!(
                    "the plan assumes {} listens on {} ({} of {}), the installation does not open it",
                    h.name, p.port, p.name, p.role
                ),
            });
        }
    }
    for q in &i.ports {
        if !h.ports.iter().any(|p| p.port.get() == q.port) {
            out.push(Difference {
                host: i.host.clone(),
                kind: "port-not-planned",
                detail: format!(
                    "{} opens {} ({}, {}), the plan gives {} no port there",
                    i.host, q.port, q.name, q.source, h.name
                ),
            });
        }
    }
}

fn dial_difference(
    plan: &Plan,
    i: &Install,
    h: &Host,
    t: &Host,
    d: &DialFinding,
    out: &mut Vec<Difference>,
) {
    let paths: Vec<_> = plan
        .paths
        .iter()
        .filter(|p| p.from == h.name && p.to == t.name)
        .collect();
    if paths.iter().any(|p| p.port.get() == d.to_port) {
        return;
    }
    if let Some(path) = paths.iter().find(|p| p.service == d.name) {
        out.push(Difference {
            host: i.host.clone(),
            kind: "dial-differs",
            detail: format!(
                "the plan probes {} -> {}:{} for {}, the installation dials {} ({})",
                h.name, t.name, path.port, d.name, d.to_port, d.source
            ),
        });
    } else {
        out.push(Difference {
            host: i.host.clone(),
            kind: "dial-not-planned",
            detail: format!(
                "{} dials {}:{} ({}, {}) but the plan has no path {} -> {} on that port",
                i.host, d.to_host, d.to_port, d.name, d.source, h.name, t.name
            ),
        });
    }
}
