//! The `state` request: this host's network state for the twin, read and
//! never changed — `nft -j list ruleset`, `ip -j addr`, `ip -j route`,
//! the forwarding sysctls and the kernel's socket tables for the planned
//! ports something listens on. Each part that cannot be read is named in
//! `unavailable` and the rest is still reported. Only the coordinator's
//! certificate gets here (`serve` authorizes every request).

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::config::{AgentConfig, canary_ports};
use crate::control::{InterfaceState, RouteState, StateReply};
use crate::port::Protocol;

/// Reads this host's state (off the runtime's workers: it runs commands).
pub(super) async fn collect(config: &AgentConfig) -> StateReply {
    let host = config.host.clone();
    let planned: Vec<(u16, bool)> = canary_ports(&config.plan, &config.host)
        .iter()
        .map(|p| (p.port, p.protocol == Protocol::Udp))
        .collect();
    tokio::task::spawn_blocking(move || read(host, &planned))
        .await
        .unwrap_or_else(|e| StateReply {
            unavailable: vec![format!("state: the reader failed: {e}")],
            ..StateReply::default()
        })
}

fn read(host: String, planned: &[(u16, bool)]) -> StateReply {
    let mut reply = StateReply {
        host,
        ..StateReply::default()
    };
    match run("nft", &["-j", "list", "ruleset"]) {
        Ok(text) => reply.ruleset = Some(text),
        Err(why) => reply.unavailable.push(format!("ruleset: {why}")),
    }
    match run("ip", &["-j", "addr", "show"]).and_then(|t| parse_json(&t)) {
        Ok(v) => reply.interfaces = interfaces(&v),
        Err(why) => reply.unavailable.push(format!("addresses: {why}")),
    }
    for family in ["-4", "-6"] {
        match run("ip", &["-j", family, "route", "show", "table", "main"])
            .and_then(|t| parse_json(&t))
        {
            Ok(v) => reply.routes.extend(routes(&v)),
            Err(why) => reply.unavailable.push(format!("routes ({family}): {why}")),
        }
    }
    reply.forwarding = !super::addresses::forwarding().is_off();
    let listening = listening_ports();
    reply.listening = planned
        .iter()
        .filter(|p| listening.contains(p))
        .map(|(port, udp)| format!("{port}/{}", if *udp { "udp" } else { "tcp" }))
        .collect();
    reply
}

/// Runs a tool and returns its standard output, or why it failed.
fn run(tool: &str, args: &[&str]) -> Result<String, String> {
    let program = find_tool(tool).ok_or_else(|| format!("`{tool}` not found"))?;
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {tool}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|_| format!("{tool} printed something not UTF-8"))
}

/// `name` on `PATH` or in the system directories (an agent under systemd
/// may have a short `PATH`).
fn find_tool(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(std::path::PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn parse_json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("unreadable JSON: {e}"))
}

/// `ip -j addr`: every interface but the loopback, with its global
/// addresses.
fn interfaces(v: &Value) -> Vec<InterfaceState> {
    let mut out = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        let Some(name) = link["ifname"].as_str() else {
            continue;
        };
        if name == "lo" {
            continue;
        }
        let addresses: Vec<String> = link["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["scope"].as_str() != Some("link") && a["scope"].as_str() != Some("host"))
            .filter_map(|a| {
                Some(format!(
                    "{}/{}",
                    a["local"].as_str()?,
                    a["prefixlen"].as_u64()?
                ))
            })
            .collect();
        if !addresses.is_empty() {
            out.push(InterfaceState {
                name: name.to_string(),
                addresses,
            });
        }
    }
    out
}

/// `ip -j route`: the routes an address does not imply (not the kernel's
/// own), unicast only.
fn routes(v: &Value) -> Vec<RouteState> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["protocol"].as_str() != Some("kernel"))
        .filter(|r| r["type"].as_str().is_none_or(|t| t == "unicast"))
        .filter_map(|r| {
            let to = r["dst"].as_str()?.to_string();
            let via = r["gateway"].as_str().map(str::to_string);
            let dev = r["dev"].as_str().map(str::to_string);
            (via.is_some() || dev.is_some()).then_some(RouteState { to, via, dev })
        })
        .filter(|r| r.dev.as_deref() != Some("lo"))
        .collect()
}

/// Ports with a listening TCP socket or a bound UDP socket, from
/// `/proc/net/{tcp,tcp6,udp,udp6}`.
fn listening_ports() -> BTreeSet<(u16, bool)> {
    let mut out = BTreeSet::new();
    for (file, udp, state) in [
        ("/proc/net/tcp", false, "0A"),
        ("/proc/net/tcp6", false, "0A"),
        ("/proc/net/udp", true, "07"),
        ("/proc/net/udp6", true, "07"),
    ] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let mut f = line.split_whitespace();
            let (Some(local), Some(_), Some(st)) = (f.nth(1), f.next(), f.next()) else {
                continue;
            };
            if st != state {
                continue;
            }
            if let Some(port) = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
            {
                out.insert((port, udp));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_json_gives_global_addresses_and_the_routes_addresses_do_not_imply() {
        let addr: Value = serde_json::from_str(r#"[
          {"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"}]},
          {"ifname":"eth0","addr_info":[
            {"family":"inet","local":"198.18.1.10","prefixlen":24,"scope":"global"},
            {"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]},
          {"ifname":"eth9","addr_info":[]}
        ]"#).unwrap();
        assert_eq!(
            interfaces(&addr),
            [InterfaceState {
                name: "eth0".into(),
                addresses: vec!["198.18.1.10/24".into()]
            }]
        );
        let route: Value = serde_json::from_str(r#"[
          {"dst":"default","gateway":"198.18.1.254","dev":"eth0","flags":[]},
          {"dst":"198.18.1.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"198.18.1.10","flags":[]},
          {"type":"multicast","dst":"ff00::/8","dev":"eth0","flags":[]},
          {"dst":"198.19.0.0/16","dev":"eth0","protocol":"static","flags":[]}
        ]"#).unwrap();
        assert_eq!(
            routes(&route),
            [
                RouteState {
                    to: "default".into(),
                    via: Some("198.18.1.254".into()),
                    dev: Some("eth0".into())
                },
                RouteState {
                    to: "198.19.0.0/16".into(),
                    via: None,
                    dev: Some("eth0".into())
                }
            ]
        );
    }
}
