//! The target's side of schedule mode's quality samples: how many of the
//! samples other hosts' agents sent to this host arrived, so that loss is
//! known per direction (forward `1 - arrived / sent`, return
//! `1 - answered / arrived`) rather than only round trip.
//!
//! Each schedule-mode sample's SYN advertises the MSS
//! [`crate::probe::samples::LIVE_SAMPLE_MSS`] (not the one `check
//! --samples` uses, so the two never count each other's). A sampling agent
//! (`--samples` above 1) holds an nftables table, `inet
//! portcall_arrivals_<pid>`, that counts those SYNs per source address,
//! target address and port after every input filter of the host (priority
//! 500 on the input hook, where a packet is about to reach the service's
//! socket), only for the plan's incoming TCP and TLS paths, in a dynamic set
//! with a counter per element. Each round reads the counts and exports them
//! as `portcall_path_samples_arrived_total` under the incoming path's
//! labels (the same labels as the source agent's sent and answered
//! counters).
//!
//! A path's series appears with its first counted SYN, never before: a
//! source behind NAT (its SYNs arrive from another address), a middlebox
//! that rewrites the MSS, a host without CAP_NET_ADMIN or `nft`, a source
//! named by DNS: no series, never a guessed zero. The table is deleted when
//! the agent stops (and a dead agent's by the next one, or by `agent
//! --cleanup`: [`delete_dead_tables`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path as FsPath, PathBuf};

use crate::agent::{nft, nft_path};
use crate::plan::{Address, Expect, Family, Path, Plan};
use crate::port::{Port, Protocol};
use crate::probe::samples::LIVE_SAMPLE_MSS;

/// Most (source, target, port) triples counted per family.
const MAX_TRIPLES: u32 = 65_535;

/// The prefix of every arrivals table; the agent's pid follows.
const TABLE_PREFIX: &str = "portcall_arrivals_";

/// One incoming path and the (source, target, port) triples its samples
/// arrive as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// Source host.
    pub from: String,
    /// This host.
    pub to: String,
    /// Target port.
    pub port: Port,
    /// The port's name here.
    pub service: String,
    /// What the path must do.
    pub expect: Expect,
    /// The path's family, where known.
    pub family: Option<Family>,
    /// TCP or TLS.
    pub protocol: Protocol,
    /// (source address, target address): the source host's addresses of
    /// the target's family.
    pairs: Vec<(IpAddr, IpAddr)>,
}

/// One incoming path's samples counted so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrived {
    /// The path.
    pub path: Incoming,
    /// Sample SYNs that arrived since the agent started counting.
    pub syns: u64,
}

/// The plan's paths into `host` that schedule-mode samples follow (TCP and
/// TLS), each with the address pairs its SYNs arrive with; `target` maps
/// a path's planned address to this host's address (a DNS name resolved).
/// Sources named by DNS are left out (their address is not known here).
pub fn incoming(
    plan: &Plan,
    host: &str,
    target: impl Fn(&Address) -> Option<IpAddr>,
) -> Vec<Incoming> {
    plan.paths
        .iter()
        .filter(|p| p.to == host && p.protocol != Protocol::Udp && p.from != host)
        .filter_map(|p| {
            let to = target(&p.address)?;
            let from = plan.host(&p.from)?;
            let mut pairs: Vec<(IpAddr, IpAddr)> = std::iter::once(&from.address)
                .chain(&from.addresses)
                .filter_map(|a| match a {
                    Address::Ip(ip) if ip.is_ipv4() == to.is_ipv4() => Some((*ip, to)),
                    _ => None,
                })
                .collect();
            pairs.sort();
            pairs.dedup();
            (!pairs.is_empty()).then(|| incoming_path(p, pairs))
        })
        .collect()
}

fn incoming_path(p: &Path, pairs: Vec<(IpAddr, IpAddr)>) -> Incoming {
    Incoming {
        from: p.from.clone(),
        to: p.to.clone(),
        port: p.port,
        service: p.service.clone(),
        expect: p.expect,
        family: p.family,
        protocol: p.protocol,
        pairs,
    }
}

/// The `nft -f` input that (re)creates table `table` counting the sample
/// SYNs of `paths`.
pub fn ruleset(table: &str, paths: &[Incoming]) -> String {
    let mut s = format!("table inet {table} {{\n");
    for (v6, kind) in [(false, "ipv4_addr"), (true, "ipv6_addr")] {
        let n = if v6 { 6 } else { 4 };
        let mut elements: Vec<String> = paths
            .iter()
            .flat_map(|p| p.pairs.iter().map(move |(f, t)| (f, t, p.port.get())))
            .filter(|(f, _, _)| f.is_ipv6() == v6)
            .map(|(f, t, port)| format!("{f} . {t} . {port}"))
            .collect();
        elements.sort();
        elements.dedup();
        s.push_str(&format!(
            "  set want{n} {{\n    type {kind} . {kind} . inet_service\n"
        ));
        if !elements.is_empty() {
            s.push_str(&format!("    elements = {{ {} }}\n", elements.join(", ")));
        }
        s.push_str(&format!(
            "  }}\n  set seen{n} {{\n    type {kind} . {kind} . inet_service\n    size {MAX_TRIPLES}\n    flags dynamic\n    counter\n  }}\n"
        ));
    }
    let syn =
        format!("tcp flags & (fin|syn|rst|ack) == syn tcp option maxseg size {LIVE_SAMPLE_MSS}");
    s.push_str(&format!(
        "  chain count {{\n    type filter hook input priority 500; policy accept;\n    ip saddr . ip daddr . tcp dport @want4 {syn} update @seen4 {{ ip saddr . ip daddr . tcp dport }}\n    ip6 saddr . ip6 daddr . tcp dport @want6 {syn} update @seen6 {{ ip6 saddr . ip6 daddr . tcp dport }}\n  }}\n}}\n"
    ));
    s
}

/// The counts of one `seen` set as `nft -j list set` prints it.
pub fn parse(json: &str) -> Option<BTreeMap<(IpAddr, IpAddr, u16), u64>> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let set = v["nftables"]
        .as_array()?
        .iter()
        .find_map(|o| o.get("set"))?;
    let mut out = BTreeMap::new();
    for e in set
        .get("elem")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
    {
        let e = &e["elem"];
        let Some(key) = e["val"]["concat"].as_array() else {
            continue;
        };
        let triple = (|| {
            Some((
                key.first()?.as_str()?.parse::<IpAddr>().ok()?,
                key.get(1)?.as_str()?.parse::<IpAddr>().ok()?,
                u16::try_from(key.get(2)?.as_u64()?).ok()?,
            ))
        })();
        if let (Some(t), Some(n)) = (triple, e["counter"]["packets"].as_u64()) {
            out.insert(t, n);
        }
    }
    Some(out)
}

/// Each path of `paths` with at least one counted SYN, and its count.
pub fn arrived(paths: &[Incoming], counts: &BTreeMap<(IpAddr, IpAddr, u16), u64>) -> Vec<Arrived> {
    paths
        .iter()
        .filter_map(|p| {
            let found: Vec<u64> = p
                .pairs
                .iter()
                .filter_map(|(f, t)| counts.get(&(*f, *t, p.port.get())).copied())
                .collect();
            (!found.is_empty()).then(|| Arrived {
                path: p.clone(),
                syns: found.iter().sum(),
            })
        })
        .collect()
}

/// This agent's counting table, while it has one.
#[derive(Debug)]
pub(super) struct Counter {
    bin: PathBuf,
    table: String,
    paths: Vec<Incoming>,
}

impl Counter {
    /// Creates the table counting `paths`' sample SYNs; `None` (logged
    /// once) where this host cannot (no `nft`, no CAP_NET_ADMIN).
    pub(super) async fn start(paths: Vec<Incoming>) -> Option<Counter> {
        let Some(bin) = nft_path() else {
            tracing::info!(
                "no nft: quality samples arriving here are not counted (no portcall_path_samples_arrived_total)"
            );
            return None;
        };
        remove_dead_tables(&bin).await;
        let table = format!("{TABLE_PREFIX}{}", std::process::id());
        let c = Counter { bin, table, paths };
        if let Err(e) = nft(&c.bin, &["-f", "-"], Some(&ruleset(&c.table, &c.paths))).await {
            tracing::info!(
                error = %e,
                "quality samples arriving here are not counted (no portcall_path_samples_arrived_total)"
            );
            return None;
        }
        Some(c)
    }

    /// Follows a reloaded plan: the paths counted change, the counts of
    /// those that stay are kept.
    pub(super) async fn set_paths(&mut self, paths: Vec<Incoming>) {
        // Only the `want` sets are replaced; the `seen` sets keep counting.
        let mut script = format!(
            "flush set inet {t} want4\nflush set inet {t} want6\n",
            t = self.table
        );
        script.push_str(&want_elements(&self.table, &paths));
        match nft(&self.bin, &["-f", "-"], Some(&script)).await {
            Ok(_) => self.paths = paths,
            Err(e) => tracing::warn!(error = %e, "arrival counts: the reloaded plan's paths"),
        }
    }

    /// The incoming paths' counts now; `None` when they cannot be read.
    pub(super) async fn read(&self) -> Option<Vec<Arrived>> {
        let mut counts = BTreeMap::new();
        for set in ["seen4", "seen6"] {
            let json = nft(
                &self.bin,
                &["-j", "list", "set", "inet", &self.table, set],
                None,
            )
            .await
            .map_err(|e| tracing::debug!(error = %e, "read arrival counts"))
            .ok()?;
            counts.extend(parse(&json)?);
        }
        Some(arrived(&self.paths, &counts))
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.bin)
            .args(["delete", "table", "inet", &self.table])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// `add element` lines putting `paths`' triples into the `want` sets.
fn want_elements(table: &str, paths: &[Incoming]) -> String {
    let mut s = String::new();
    for p in paths {
        for (f, t) in &p.pairs {
            let n = if f.is_ipv6() { 6 } else { 4 };
            s.push_str(&format!(
                "add element inet {table} want{n} {{ {f} . {t} . {} }}\n",
                p.port.get()
            ));
        }
    }
    s
}

/// Deletes the arrivals tables of agents that are no longer running (what
/// a killed agent left; `agent --cleanup`, the packaged unit's
/// `ExecStopPost`, calls it too) and returns their names; a running
/// agent's table is left alone.
pub async fn delete_dead_tables() -> Vec<String> {
    match nft_path() {
        Some(bin) => remove_dead_tables(&bin).await,
        None => Vec::new(),
    }
}

async fn remove_dead_tables(bin: &FsPath) -> Vec<String> {
    let mut deleted = Vec::new();
    let Ok(list) = nft(bin, &["list", "tables", "inet"], None).await else {
        return deleted;
    };
    for line in list.lines() {
        let Some(pid) = line
            .trim()
            .strip_prefix("table inet ")
            .and_then(|t| t.strip_prefix(TABLE_PREFIX))
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !FsPath::new("/proc").join(pid).exists() {
            let table = format!("{TABLE_PREFIX}{pid}");
            if nft(bin, &["delete", "table", "inet", &table], None)
                .await
                .is_ok()
            {
                deleted.push(table);
            }
        }
    }
    deleted
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"
name = "arrivals-unit"
[[hosts]]
name = "app"
address = ["198.18.0.10", "2001:2::10"]
[[hosts]]
name = "web"
address = "web.example"
[[hosts]]
name = "db"
address = "198.18.0.20"
roles = ["db"]
[roles.db]
ports = [
  { name = "mysql", port = 3306, offset = false },
  { name = "dns", port = 53, protocol = "udp", offset = false },
]
[[flows]]
from = "host:app"
to = "host:db"
ports = ["mysql", "dns"]
[[flows]]
from = "host:web"
to = "host:db"
ports = ["mysql"]
[[flows]]
from = "host:db"
to = "host:app"
ports = [22]
"#;

    fn paths() -> Vec<Incoming> {
        let plan = Plan::parse(PLAN, "arrivals.toml").expect("plan");
        incoming(&plan, "db", |a| match a {
            Address::Ip(ip) => Some(*ip),
            Address::Dns(_) => None,
        })
    }

    #[test]
    fn incoming_tcp_paths_with_their_sources_of_the_targets_family() {
        let p = paths();
        // UDP, a DNS-named source and an outgoing path are not counted.
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!((p[0].from.as_str(), p[0].port.get()), ("app", 3306));
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(p[0].pairs, [(v4("198.18.0.10"), v4("198.18.0.20"))]);
        let rules = ruleset("portcall_arrivals_7", &p);
        assert!(
            rules.contains("elements = { 198.18.0.10 . 198.18.0.20 . 3306 }"),
            "{rules}"
        );
        assert!(rules.contains("hook input priority 500"), "{rules}");
        assert!(
            rules.contains("tcp option maxseg size 1213 update @seen4"),
            "{rules}"
        );
        assert_eq!(
            want_elements("t", &p),
            "add element inet t want4 { 198.18.0.10 . 198.18.0.20 . 3306 }\n"
        );
    }

    #[test]
    fn counts_are_read_per_triple_and_a_path_without_one_has_none() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "seen4", "table": "t", "type": ["ipv4_addr", "ipv4_addr", "inet_service"], "elem": [{"elem": {"val": {"concat": ["198.18.0.10", "198.18.0.20", 3306]}, "counter": {"packets": 774, "bytes": 46440}}}, {"elem": {"val": {"concat": ["198.18.0.99", "198.18.0.20", 3306]}, "counter": {"packets": 5, "bytes": 300}}}]}}]}"#;
        let counts = parse(json).expect("parsed");
        assert_eq!(counts.len(), 2);
        let got = arrived(&paths(), &counts);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].path.from.as_str(), got[0].syns), ("app", 774));
        // No element for the path: no count at all, never a zero.
        let empty = r#"{"nftables": [{"set": {"family": "inet", "name": "seen4"}}]}"#;
        assert_eq!(arrived(&paths(), &parse(empty).unwrap()), []);
        assert_eq!(parse("not json"), None);
    }
}
