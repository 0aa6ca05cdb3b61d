//! `plan show` and `catalog` output: the expanded plan as a table or as
//! `portcall.plan/v1` JSON.

use std::io::{self, Write};

use serde::Serialize;

use super::Table;
use crate::plan::Catalog;
use crate::plan::{Address, Expect, Family, FamilyFilter, Host, Path, Plan, ServiceKind};
use crate::port::{Port, Protocol};

/// The `schema` value of plan JSON.
pub const PLAN_SCHEMA: &str = "portcall.plan/v1";
/// The `schema` value of catalog JSON.
pub const CATALOG_SCHEMA: &str = "portcall.catalog/v1";

#[derive(Serialize)]
struct PlanJson<'a> {
    schema: &'static str,
    plan: &'a str,
    hosts: Vec<HostJson<'a>>,
    paths: PathsJson<'a>,
}

#[derive(Serialize)]
struct HostJson<'a> {
    name: &'a str,
    address: &'a Address,
    addresses: &'a [Address],
    zone: Option<&'a str>,
    roles: Vec<&'a str>,
    port_offset: u16,
    ports: Vec<PortJson<'a>>,
}

#[derive(Serialize)]
struct PortJson<'a> {
    name: &'a str,
    port: Port,
    protocol: Protocol,
    role: &'a str,
    /// The planned service, where the plan or catalog names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<ServiceKind>,
}

#[derive(Serialize)]
struct PathJson<'a> {
    from: &'a str,
    to: &'a str,
    address: &'a Address,
    port: Port,
    service: &'a str,
    protocol: Protocol,
    expect: Expect,
    family: Option<Family>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_port: Option<Port>,
}

/// The plan's paths as a JSON array, serialized one at a time as the plan
/// produces them ([`Plan::for_each_path`]): a plan read lazily is never
/// held whole, in any form.
struct PathsJson<'a>(&'a Plan);

impl Serialize for PathsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        use std::ops::ControlFlow;
        let mut seq = s.serialize_seq(None)?;
        let done = self.0.for_each_path(|p| {
            let path = PathJson {
                from: p.from,
                to: p.to,
                address: p.address,
                port: p.port,
                service: p.service,
                protocol: p.protocol,
                expect: p.expect,
                family: p.family,
                server_port: p.server_port,
            };
            match seq.serialize_element(&path) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => ControlFlow::Break(e),
            }
        });
        if let ControlFlow::Break(e) = done {
            return Err(e);
        }
        seq.end()
    }
}

/// Writes `portcall.plan/v1` JSON (pretty, with a trailing newline). The
/// paths are written as they are produced, so a plan read with
/// [`crate::plan::PathScope::Lazy`] streams: pass `w` a buffered writer.
pub fn plan_json(plan: &Plan, w: &mut impl Write) -> io::Result<()> {
    let doc = PlanJson {
        schema: PLAN_SCHEMA,
        plan: &plan.name,
        hosts: plan
            .hosts
            .iter()
            .map(|h| HostJson {
                name: &h.name,
                address: &h.address,
                addresses: &h.addresses,
                zone: h.zone.as_deref(),
                roles: h.roles.iter().map(|r| r.role.as_str()).collect(),
                port_offset: h.port_offset,
                ports: h
                    .ports
                    .iter()
                    .map(|p| PortJson {
                        name: &p.name,
                        port: p.port,
                        protocol: p.protocol,
                        role: &p.role,
                        service: p.service_kind,
                    })
                    .collect(),
            })
            .collect(),
        paths: PathsJson(plan),
    };
    serde_json::to_writer_pretty(&mut *w, &doc)?;
    writeln!(w)
}

/// `name port[/tls|/udp][ service]`: the planned service where one is
/// named and the port's name does not already say it (`console 9443/tls
/// https`).
fn port_label(name: &str, port: Port, protocol: Protocol, service: Option<ServiceKind>) -> String {
    let mut label = match protocol {
        Protocol::Tcp => format!("{name} {port}"),
        Protocol::Tls => format!("{name} {port}/tls"),
        Protocol::Udp => format!("{name} {port}/udp"),
    };
    // A port named after its service (`mysql`), or TLS on a TLS port,
    // says it once.
    let said = |s: &ServiceKind| {
        s.as_str() == name || (*s == ServiceKind::Tls && protocol == Protocol::Tls)
    };
    if let Some(s) = service.filter(|s| !said(s)) {
        label.push(' ');
        label.push_str(s.as_str());
    }
    label
}

/// Writes the plan for a terminal: hosts with their effective ports, then
/// the paths grouped by the flow that first produces them.
pub fn plan_table(plan: &Plan, w: &mut impl Write) -> io::Result<()> {
    writeln!(
        w,
        "plan {} ({}): {}, {}, {}",
        plan.name,
        plan.source,
        super::count(plan.hosts.len(), "host"),
        super::count(plan.flows.len(), "flow"),
        super::count(plan.path_count(), "path")
    )?;
    writeln!(w)?;
    hosts_table(plan).write_to(w)?;
    // Paths name their family when the plan has more than one.
    let families: std::collections::BTreeSet<Family> =
        plan.paths.iter().filter_map(|p| p.family).collect();
    let mixed = families.len() > 1;
    for f in &plan.flows {
        let paths: Vec<&Path> = plan
            .paths
            .iter()
            .filter(|p| p.flows[0] == f.index)
            .collect();
        writeln!(w)?;
        let ports: Vec<String> = f.ports.iter().map(ToString::to_string).collect();
        writeln!(
            w,
            "flow {} ({}): {} [{}] expect {}{}, {} path{}",
            f.index,
            f.location,
            f.label(),
            ports.join(", "),
            f.expect,
            match f.family {
                FamilyFilter::Both => String::new(),
                FamilyFilter::Only(x) => format!(" over {x} only"),
            },
            paths.len(),
            if paths.len() == 1 { "" } else { "s" }
        )?;
        let mut t = Table::default().indent(2);
        for p in paths {
            t.row(path_row(p, mixed));
        }
        t.write_to(w)?;
    }
    Ok(())
}

/// The hosts table: one row per role instance, the host's name, addresses
/// and zone on its first.
fn hosts_table(plan: &Plan) -> Table {
    let mut t = Table::with_header(["HOST", "ADDRESS", "ZONE", "ROLE", "OFFSET", "PORTS"]);
    for h in &plan.hosts {
        if h.roles.is_empty() {
            t.row([
                h.name.clone(),
                addresses(h),
                h.zone.clone().unwrap_or_else(|| "-".into()),
                "-".into(),
                "-".into(),
                "(no ports: a probe source only)".into(),
            ]);
        }
        for (i, r) in h.roles.iter().enumerate() {
            let ports: Vec<String> = h
                .ports
                .iter()
                .filter(|p| p.role == r.role)
                .map(|p| port_label(&p.name, p.port, p.protocol, p.service_kind))
                .collect();
            let first = i == 0;
            t.row([
                if first { h.name.clone() } else { String::new() },
                if first { addresses(h) } else { String::new() },
                if first {
                    h.zone.clone().unwrap_or_else(|| "-".into())
                } else {
                    String::new()
                },
                r.role.clone(),
                format!("+{}", r.port_offset),
                ports.join(", "),
            ]);
        }
    }
    t
}

/// One path's row under its flow: ends, target (with its family when the
/// plan's paths have more than one: `mixed`), service, other flows.
fn path_row(p: &Path, mixed: bool) -> [String; 4] {
    let also = if p.flows.len() > 1 {
        let others: Vec<String> = p.flows[1..].iter().map(|i| format!("flow {i}")).collect();
        format!("(also {})", others.join(", "))
    } else {
        String::new()
    };
    let mut service = match &p.role {
        Some(role) => format!("{} ({role})", p.service),
        None => format!("{} (not a planned port)", p.service),
    };
    if let Some(sp) = p.server_port {
        service.push_str(&format!(", dialled; {} listens on {sp}", p.to));
    }
    let mut target = format!("{}:{}/{}", bracket(&p.address), p.port, p.protocol);
    if mixed {
        target.push(' ');
        target.push_str(p.family.map_or("dns", Family::as_str));
    }
    [format!("{} -> {}", p.from, p.to), target, service, also]
}

/// A host's addresses for the table, primary first.
fn addresses(h: &Host) -> String {
    h.addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// IPv6 literals are bracketed when a port follows.
pub fn bracket(a: &Address) -> String {
    match a {
        Address::Ip(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        other => other.to_string(),
    }
}

#[derive(Serialize)]
struct CatalogJson<'a> {
    schema: &'static str,
    roles: Vec<CatalogRoleJson<'a>>,
}

#[derive(Serialize)]
struct CatalogRoleJson<'a> {
    name: &'a str,
    description: &'a str,
    based_on: Option<&'a str>,
    ports: Vec<CatalogPortJson<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dials: Vec<CatalogDialJson<'a>>,
}

#[derive(Serialize)]
struct CatalogDialJson<'a> {
    name: &'a str,
    to: &'a str,
    port: Port,
    offset: bool,
}

#[derive(Serialize)]
struct CatalogPortJson<'a> {
    name: &'a str,
    port: Port,
    protocol: Protocol,
    offset: bool,
    /// The service the catalog plans on the port.
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<ServiceKind>,
}

/// Writes the catalog as `portcall.catalog/v1` JSON.
pub fn catalog_json(catalog: &Catalog, w: &mut impl Write) -> io::Result<()> {
    let doc = CatalogJson {
        schema: CATALOG_SCHEMA,
        roles: catalog
            .roles()
            .map(|r| CatalogRoleJson {
                name: &r.name,
                description: &r.description,
                based_on: r.based_on.as_deref(),
                ports: r
                    .ports
                    .iter()
                    .map(|p| CatalogPortJson {
                        name: &p.name,
                        port: p.port,
                        protocol: p.protocol,
                        offset: p.offset,
                        service: p.service,
                    })
                    .collect(),
                dials: r
                    .dials
                    .iter()
                    .map(|d| CatalogDialJson {
                        name: &d.name,
                        to: &d.to,
                        port: d.port,
                        offset: d.offset,
                    })
                    .collect(),
            })
            .collect(),
    };
    serde_json::to_writer_pretty(&mut *w, &doc)?;
    writeln!(w)
}

/// The width the catalog fits in: a terminal of 100 columns.
const CATALOG_WIDTH: usize = 100;

/// Writes the catalog as a table that fits in [`CATALOG_WIDTH`] columns:
/// each role's description beside its name, its ports wrapped below; fixed
/// ports (not shifted by offsets) are marked `fixed`.
pub fn catalog_table(catalog: &Catalog, w: &mut impl Write) -> io::Result<()> {
    let name_width = catalog
        .roles()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(4)
        + 2;
    let room = CATALOG_WIDTH.saturating_sub(name_width).max(20);
    writeln!(w, "{:name_width$}DESCRIPTION, then PORTS", "ROLE")?;
    for r in catalog.roles() {
        let ports: Vec<String> = r
            .ports
            .iter()
            .map(|p| {
                let mut s = port_label(&p.name, p.port, p.protocol, p.service);
                if !p.offset {
                    s.push_str(" fixed");
                }
                s
            })
            .collect();
        let mut items = ports.clone();
        for d in &r.dials {
            items.push(format!(
                "dials {} {} on {}{}",
                d.name,
                d.port,
                d.to,
                if d.offset { "" } else { " fixed" }
            ));
        }
        let mut lines = wrap(r.description.split(' ').map(str::to_owned), " ", room);
        lines.extend(
            wrap(
                items.iter().enumerate().map(|(i, p)| {
                    if i + 1 < items.len() {
                        format!("{p},")
                    } else {
                        p.clone()
                    }
                }),
                " ",
                room.saturating_sub(2),
            )
            .into_iter()
            .map(|l| format!("  {l}")),
        );
        for (i, line) in lines.iter().enumerate() {
            let name = if i == 0 { r.name.as_str() } else { "" };
            writeln!(w, "{}", format!("{name:name_width$}{line}").trim_end())?;
        }
    }
    writeln!(
        w,
        "\nports (and the ports a role dials) shift by the host's port_offset unless marked fixed;\nuse a role by name in a host's roles, or start from it with `use`"
    )
}

/// Joins `words` with `sep` into lines of at most `width` characters (a
/// word longer than that gets a line of its own).
fn wrap(words: impl IntoIterator<Item = String>, sep: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in words {
        if !line.is_empty() && line.chars().count() + sep.len() + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push_str(sep);
        }
        line.push_str(&word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod catalog_tests {
    use super::*;

    #[test]
    fn the_catalog_fits_in_100_columns_and_lists_every_port() {
        let mut out = Vec::new();
        catalog_table(Catalog::builtin(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for line in text.lines() {
            assert!(
                line.chars().count() <= 100,
                "{} columns: {line}",
                line.chars().count()
            );
        }
        for r in Catalog::builtin().roles() {
            assert!(text.contains(&format!("\n{}", r.name)), "{}", r.name);
            for p in &r.ports {
                assert!(text.contains(&p.name), "{} of {}", p.name, r.name);
            }
        }
        assert!(
            text.contains("dials thrift-km 10397 on wso2-apim-keymanager"),
            "{text}"
        );
    }
}
