//! Which installation a dial reaches. Real configuration names its peers
//! by host name, so a dial to `cp.example.com` reaches the installation
//! whose `carbon.xml <HostName>`/`<MgtHostName>` or `deployment.toml
//! [server] hostname`/`node_ip` says so, whatever `NAME=` it was given; a
//! host no scanned installation claims (nor a plan host's address) is
//! outside the scan, listed with its port, never a mismatch.

use super::model::{DialFinding, Difference, Install, Mismatch, Outside, PortFinding};
use super::values::is_local;
use crate::plan::Plan;

/// `local`, the reached installation's `NAME`, or `outside`.
fn who(installs: &[Install], plan: Option<&Plan>, client: usize, host: &str) -> String {
    if is_local(host) || installs[client].answers_to(host) {
        return "local".into();
    }
    if let Some(i) = installs.iter().find(|i| i.answers_to(host)) {
        return i.host.clone();
    }
    let by_plan = plan.and_then(|p| {
        let h = p.hosts.iter().find(|h| {
            h.addresses
                .iter()
                .any(|a| a.to_string().eq_ignore_ascii_case(host))
        })?;
        installs.iter().find(|i| i.host == h.name)
    });
    by_plan.map_or_else(|| "outside".into(), |i| i.host.clone())
}

/// Sets every dial's `reaches`.
pub(crate) fn reach(installs: &mut [Install], plan: Option<&Plan>) {
    let found: Vec<Vec<String>> = (0..installs.len())
        .map(|c| {
            installs[c]
                .dials
                .iter()
                .map(|d| who(installs, plan, c, &d.to_host))
                .collect()
        })
        .collect();
    for (i, reaches) in installs.iter_mut().zip(found) {
        for (d, r) in i.dials.iter_mut().zip(reaches) {
            d.reaches = r;
        }
    }
}

/// An API-M node started without a profile (or an Identity Server), whose
/// files do not tell what it is, plays the role its peers dial it for: a traffic manager when
/// they publish throttling events or subscribe to its broker, a key
/// manager when they validate keys at it. True when a role changed.
pub(crate) fn refine_roles(installs: &mut [Install]) -> bool {
    let mut changes = Vec::new();
    for (n, server) in installs.iter().enumerate() {
        let apim_or_is =
            server.product.contains("API Manager") || server.product.contains("Identity Server");
        if server.role != "wso2-carbon" || !apim_or_is {
            continue;
        }
        let inbound = installs
            .iter()
            .flat_map(|c| c.dials.iter().map(move |d| (c, d)))
            .filter(|(_, d)| d.reaches == server.host);
        let mut pick: Option<(&'static str, &'static str, String)> = None;
        for (c, d) in inbound {
            let found = match d.name.as_str() {
                "binary" | "binary-ssl" | "broker" => {
                    ("traffic-manager", "wso2-apim-trafficmanager")
                }
                "thrift-km" => ("api-key-manager", "wso2-apim-keymanager"),
                "https-servlet"
                    if d.how.contains("APIKeyValidator") || d.how.contains("key_manager") =>
                {
                    ("api-key-manager", "wso2-apim-keymanager")
                }
                _ => continue,
            };
            let why = format!("inferred: {} dials its {} ({})", c.host, d.name, d.source);
            if pick
                .as_ref()
                .is_none_or(|(p, _, _)| *p != "traffic-manager")
            {
                pick = Some((found.0, found.1, why));
            }
        }
        if let Some(p) = pick {
            changes.push((n, p));
        }
    }
    let changed = !changes.is_empty();
    for (n, (profile, role, why)) in changes {
        let i = &mut installs[n];
        i.profile = Some(profile.into());
        i.profile_source = why;
        i.role = role.into();
    }
    changed
}

/// Client/server mismatches between scanned installations, and dials to a
/// port of a scanned installation that opens nothing there.
pub(crate) fn compare(installs: &[Install], differences: &mut Vec<Difference>) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for client in installs {
        for d in &client.dials {
            let Some(server) = installs.iter().find(|i| i.host == d.reaches) else {
                continue;
            };
            if server.ports.iter().any(|p| p.port == d.to_port) {
                continue;
            }
            match server.ports.iter().find(|p| p.name == d.name) {
                Some(p) => out.push(Mismatch {
                    client_host: client.host.clone(),
                    server_host: server.host.clone(),
                    dialled_host: d.to_host.clone(),
                    name: d.name.clone(),
                    client_port: d.to_port,
                    server_port: p.port,
                    fix: fix(client, d, server, p),
                }),
                None => differences.push(Difference {
                    host: client.host.clone(),
                    kind: "dial-to-nothing",
                    detail: format!(
                        "{} dials {}:{} ({}, {}) but {} ({}, role {}) opens nothing there",
                        client.host,
                        d.to_host,
                        d.to_port,
                        d.name,
                        d.source,
                        server.host,
                        server.product,
                        server.role
                    ),
                }),
            }
        }
    }
    out
}

/// Both fixes: the client dials the server's port, or the server listens
/// on the client's (through its own setting, or an offset that moves it
/// there).
fn fix(client: &Install, d: &DialFinding, server: &Install, p: &PortFinding) -> String {
    let client_fix = format!(
        "set {} {} on {} ({})",
        d.setting, p.port, client.host, d.source
    );
    let server_fix = match (&p.setting, p.base) {
        (Some(s), _) => format!("{s} {} on {}", d.to_port, server.host),
        (None, Some(base)) if d.to_port >= base => format!(
            "give {} offset {} (now {}, {})",
            server.host,
            d.to_port - base,
            server.offset,
            server.offset_source
        ),
        _ => format!("make {} listen on {}", server.host, d.to_port),
    };
    format!("{client_fix}, or {server_fix}")
}

/// Every endpoint on a host no scanned installation claims.
pub(crate) fn outside(installs: &[Install]) -> Vec<Outside> {
    let mut out: Vec<Outside> = Vec::new();
    for i in installs {
        for d in i.dials.iter().filter(|d| d.reaches == "outside") {
            let by = format!("{} ({})", i.host, d.source);
            match out
                .iter_mut()
                .find(|o| o.host.eq_ignore_ascii_case(&d.to_host) && o.port == d.to_port)
            {
                Some(o) => {
                    if !o.dialled_by.contains(&by) {
                        o.dialled_by.push(by);
                    }
                }
                None => out.push(Outside {
                    host: d.to_host.clone(),
                    port: d.to_port,
                    name: d.name.clone(),
                    database: d.database.clone(),
                    dialled_by: vec![by],
                }),
            }
        }
    }
    out
}
