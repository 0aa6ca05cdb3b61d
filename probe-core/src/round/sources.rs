//! Every address a source can arrive from, for the targets' rule tracing:
//! the addresses each agent reported in `prepared` (all its interfaces,
//! both families), its plan addresses, and its plan names resolved here.
//! A plan names at most one address per family, so a dual-stack host
//! whose plan address is IPv4 reaches an IPv6-only target from an address
//! the plan never mentions, and a host named by DNS has no address in the
//! plan at all; without these the target's trace would not see their
//! packets and the join would blame the network for its own firewall.
//!
//! A host whose agent reported forwarding on (a router between zones that
//! is a plan host) also gets the round's TCP paths between other plan
//! hosts ([`forward_flows`]), with their sources' addresses, so that its
//! trace table marks what it forwards and the join can name the rule of
//! its `forward` chain that stopped one.
//!
//! Pure apart from name resolution: the round sends what [`requests`]
//! builds (one `trace-sources` per target or forwarding host) between
//! `prepare` and `probe`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use crate::control::{
    ControlError, ControlStream, ForwardFlow, Forwarding, Request, Response, SourceAddresses,
    TraceSourcesRequest,
};
use crate::plan::{Address, Plan};
use crate::probe::resolve::{FamilyPreference, resolve};

/// How long the coordinator waits for a source's plan name to resolve.
pub(super) const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// For each target host of a TCP path with a canary role, the source hosts
/// of those paths (the trace table matches TCP only).
pub(super) fn sources_by_target(plan: &Plan) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let _ = plan.for_each_path(|p| {
        if p.protocol.is_tcp() && p.role.is_some() {
            let set = out.entry(p.to.to_owned()).or_default();
            if !set.contains(p.from) {
                set.insert(p.from.to_owned());
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    out
}

/// Most forwarded flows one host is sent: its trace table marks at most
/// `nftrace::MAX_TRACED_PAIRS` elements in all, and the request must stay
/// far below the agents' request size limit. Past it the host is sent
/// none, and the join names no forward rule of its.
pub(super) const MAX_FORWARD_FLOWS: usize = 256;

/// Who gets which `trace-sources`: each target's sources, and each
/// forwarding host's flows between other plan hosts.
#[derive(Debug, Default)]
pub(super) struct Wanted {
    /// For each target, the sources of its TCP paths to canaries.
    pub(super) by_target: BTreeMap<String, BTreeSet<String>>,
    /// For each forwarding host, the flows that may cross it.
    pub(super) forward: BTreeMap<String, Vec<ForwardFlow>>,
}

impl Wanted {
    /// What the round's `trace-sources` requests need, with `agents` the
    /// hosts whose agents are up and what each reported forwarding.
    pub(super) fn new<'a>(
        plan: &Plan,
        agents: impl IntoIterator<Item = (&'a str, Forwarding)>,
    ) -> Wanted {
        Wanted {
            by_target: sources_by_target(plan),
            forward: forward_flows(plan, &agents.into_iter().collect()),
        }
    }

    /// Every source host whose addresses some request carries.
    fn sources(&self) -> BTreeSet<&str> {
        let flows = self.forward.values().flatten().map(|f| f.from.as_str());
        self.by_target
            .values()
            .flatten()
            .map(String::as_str)
            .chain(flows)
            .collect()
    }
}

/// For each host of `forwarders` that forwards some family, the round's
/// TCP paths between two other plan hosts whose target address (an IP
/// literal) is of a family it forwards: the paths that may cross it.
/// Whether one does is the kernel's routing decision; only the ones that
/// do are traced there. A host with more than [`MAX_FORWARD_FLOWS`] gets
/// none.
pub(super) fn forward_flows(
    plan: &Plan,
    forwarders: &BTreeMap<&str, Forwarding>,
) -> BTreeMap<String, Vec<ForwardFlow>> {
    let forwarders: Vec<(&str, Forwarding)> = forwarders
        .iter()
        .filter(|(_, f)| !f.is_off())
        .map(|(h, f)| (*h, *f))
        .collect();
    let mut out: BTreeMap<String, Vec<ForwardFlow>> = BTreeMap::new();
    if forwarders.is_empty() {
        return out;
    }
    let _ = plan.for_each_path(|p| {
        let dest = match p.address {
            Address::Ip(ip) if p.protocol.is_tcp() => *ip,
            _ => return std::ops::ControlFlow::<()>::Continue(()),
        };
        for (host, fwd) in &forwarders {
            if *host != p.from && *host != p.to && fwd.carries(dest) {
                let flows = out.entry((*host).to_owned()).or_default();
                if flows.len() <= MAX_FORWARD_FLOWS {
                    flows.push(ForwardFlow {
                        from: p.from.to_owned(),
                        dest,
                        port: p.port.get(),
                    });
                }
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    for (host, flows) in &mut out {
        flows.sort_unstable_by(|a, b| (&a.from, a.dest, a.port).cmp(&(&b.from, b.dest, b.port)));
        flows.dedup();
        if flows.len() > MAX_FORWARD_FLOWS {
            tracing::info!(%host, limit = MAX_FORWARD_FLOWS, "too many paths may cross this forwarding host to trace them there");
            flows.clear();
        }
    }
    out.retain(|_, f| !f.is_empty());
    out
}

/// The plan names of `hosts` (DNS addresses), each once.
pub(super) fn names<'a>(plan: &Plan, hosts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = hosts
        .into_iter()
        .filter_map(|h| plan.host(h))
        .flat_map(|h| &h.addresses)
        .filter_map(|a| match a {
            Address::Dns(d) => Some(d.as_str().to_owned()),
            Address::Ip(_) => None,
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Resolves `names` all at once, each within [`RESOLVE_TIMEOUT`]; a name
/// that does not resolve is absent (its agent's own list stands).
pub(super) async fn resolve_all(names: Vec<String>) -> BTreeMap<String, Vec<IpAddr>> {
    let mut set = tokio::task::JoinSet::new();
    for name in names {
        set.spawn(async move {
            let r = resolve(&name, RESOLVE_TIMEOUT, &FamilyPreference::Any).await;
            (name, r)
        });
    }
    let mut out = BTreeMap::new();
    while let Some(done) = set.join_next().await {
        match done {
            Ok((name, Ok(ips))) => {
                out.insert(name, ips);
            }
            Ok((name, Err(e))) => {
                tracing::info!(%name, error = %e, "a source's plan name did not resolve; its agent's addresses stand");
            }
            Err(_) => {}
        }
    }
    out
}

/// Host `name`'s addresses: what its agent reported, its plan addresses,
/// and its plan names as `resolved`.
pub(super) fn addresses_of(
    plan: &Plan,
    name: &str,
    reported: &[IpAddr],
    resolved: &BTreeMap<String, Vec<IpAddr>>,
) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = reported.to_vec();
    for a in plan.host(name).iter().flat_map(|h| &h.addresses) {
        match a {
            Address::Ip(ip) => out.push(*ip),
            Address::Dns(dns) => out.extend(resolved.get(dns.as_str()).into_iter().flatten()),
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The full address sets of the sources among `up` (host, the addresses
/// its agent reported), which are also updated in place for the join:
/// reported, plan addresses and plan names resolved. `None` when `cancel`
/// fires first: resolving may take its deadline, an interrupt does not
/// wait for it.
pub(super) async fn gather(
    plan: &Plan,
    wanted: &Wanted,
    up: Vec<(&str, &mut Vec<IpAddr>)>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Option<BTreeMap<String, Vec<IpAddr>>> {
    let wanted = wanted.sources();
    let up: Vec<_> = up.into_iter().filter(|(h, _)| wanted.contains(h)).collect();
    let resolved = tokio::select! {
        r = resolve_all(names(plan, up.iter().map(|(h, _)| *h))) => r,
        () = cancel.cancelled() => return None,
    };
    let mut out = BTreeMap::new();
    for (host, reported) in up {
        let all = addresses_of(plan, host, reported, &resolved);
        reported.clone_from(&all);
        out.insert(host.to_owned(), all);
    }
    Some(out)
}

/// Sends one target its `trace-sources`. An agent that predates the
/// request refuses it (its trace covers the plan's addresses only) and one
/// that cannot trace says why in the reply: neither is an error here.
pub(super) async fn ask(
    conn: &mut ControlStream,
    host: &str,
    request: TraceSourcesRequest,
    deadline: Duration,
) -> Result<(), ControlError> {
    match conn
        .request(&Request::TraceSources(request), deadline)
        .await
    {
        Ok(Response::SourcesTraced(t)) => {
            if let Some(note) = t.note {
                tracing::debug!(%host, %note, "sources not traced");
            }
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e @ ControlError::Refused { .. }) => {
            tracing::debug!(%host, error = %e, "trace-sources refused");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The `trace-sources` request of each target and forwarding host, from
/// the sources' full address sets (`addresses`, by host): a target's
/// sources, and a forwarding host's flows with their sources' addresses
/// (a flow whose source has none is left out). A host left with no
/// address to trace gets none.
pub(super) fn requests(
    round: &str,
    wanted: &Wanted,
    addresses: &BTreeMap<String, Vec<IpAddr>>,
) -> BTreeMap<String, TraceSourcesRequest> {
    let known = |s: &str| addresses.get(s).is_some_and(|a| !a.is_empty());
    let no_sources = BTreeSet::new();
    let hosts: BTreeSet<&String> = wanted
        .by_target
        .keys()
        .chain(wanted.forward.keys())
        .collect();
    hosts
        .into_iter()
        .filter_map(|host| {
            let forward: Vec<ForwardFlow> = wanted
                .forward
                .get(host)
                .into_iter()
                .flatten()
                .filter(|f| known(&f.from))
                .cloned()
                .collect();
            let names: BTreeSet<&str> = wanted
                .by_target
                .get(host)
                .unwrap_or(&no_sources)
                .iter()
                .map(String::as_str)
                .chain(forward.iter().map(|f| f.from.as_str()))
                .filter(|s| known(s))
                .collect();
            let sources: Vec<SourceAddresses> = names
                .into_iter()
                .map(|s| SourceAddresses {
                    host: s.to_owned(),
                    addresses: addresses[s].clone(),
                })
                .collect();
            (!sources.is_empty()).then(|| {
                let request = TraceSourcesRequest {
                    round: round.to_owned(),
                    sources,
                    forward,
                };
                (host.clone(), request)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"
name = "sources"
[roles.svc]
ports = [{ name = "svc", port = 7301 }, { name = "dns", port = 7302, protocol = "udp" }]
[[hosts]]
name = "a"
address = "198.18.0.1"
[[hosts]]
name = "b"
address = "localhost"
[[hosts]]
name = "t"
address = ["198.18.0.3", "2001:2::3"]
roles = ["svc"]
[[flows]]
from = ["host:a", "host:b"]
to = "host:t"
ports = ["svc", "dns"]
"#;

    #[tokio::test]
    async fn each_target_gets_every_address_of_its_sources_names_resolved() {
        let plan = Plan::parse(PLAN, "p.toml").unwrap();
        let by_target = sources_by_target(&plan);
        assert_eq!(by_target.keys().collect::<Vec<_>>(), ["t"], "{by_target:?}");
        let mut addresses = BTreeMap::new();
        let resolved = resolve_all(names(&plan, ["a", "b"])).await;
        assert_eq!(resolved.keys().collect::<Vec<_>>(), ["localhost"]);
        // a's agent reported its IPv6 address, which the plan never names.
        let a = addresses_of(&plan, "a", &["2001:2::1".parse().unwrap()], &resolved);
        assert_eq!(
            a,
            [
                "198.18.0.1".parse::<IpAddr>().unwrap(),
                "2001:2::1".parse().unwrap()
            ]
        );
        addresses.insert("a".to_owned(), a);
        // b is named by DNS: its name is resolved here.
        let b = addresses_of(&plan, "b", &[], &resolved);
        assert!(b.iter().any(IpAddr::is_loopback), "{b:?}");
        addresses.insert("b".to_owned(), b);
        let wanted = Wanted {
            by_target,
            forward: BTreeMap::new(),
        };
        let r = requests("ab12", &wanted, &addresses);
        let t = &r["t"];
        assert_eq!(t.round, "ab12");
        assert!(t.forward.is_empty());
        let hosts: Vec<&str> = t.sources.iter().map(|s| s.host.as_str()).collect();
        assert_eq!(hosts, ["a", "b"]);
        assert!(requests("ab12", &wanted, &BTreeMap::new()).is_empty());
    }

    /// A router between two zones that is a plan host: client (ops) to db
    /// (data) crosses it; its own paths and the UDP path do not count.
    const ROUTED: &str = r#"
name = "routed"
[roles.svc]
ports = [{ name = "app", port = 7100 }, { name = "dns", port = 7302, protocol = "udp" }]
[roles.gate]
ports = [{ name = "mgmt", port = 7200 }]
[[hosts]]
name = "client"
address = ["198.18.1.20", "2001:2:0:1::20"]
[[hosts]]
name = "fw"
address = "198.18.1.254"
roles = ["gate"]
[[hosts]]
name = "db"
address = ["198.18.2.40", "2001:2:0:2::40"]
roles = ["svc"]
[[flows]]
from = "host:client"
to = ["host:db", "host:fw"]
ports = ["app", "dns", "mgmt"]
[[flows]]
from = "host:fw"
to = "host:db"
ports = ["app"]
"#;

    #[test]
    fn a_forwarding_host_gets_the_paths_between_other_hosts_of_the_families_it_forwards() {
        let plan = Plan::parse(ROUTED, "p.toml").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let v4 = Forwarding {
            ipv4: true,
            ipv6: false,
        };
        let off = Forwarding::default();
        let wanted = Wanted::new(&plan, [("fw", v4), ("db", off), ("client", off)]);
        let flows: Vec<String> = wanted.forward["fw"]
            .iter()
            .map(|f| format!("{} -> {}:{}", f.from, f.dest, f.port))
            .collect();
        // Only client -> db over IPv4 (fw forwards no IPv6); neither fw's
        // own paths nor the UDP one.
        assert_eq!(flows, ["client -> 198.18.2.40:7100"]);
        assert_eq!(wanted.forward.keys().collect::<Vec<_>>(), ["fw"]);
        let both = Forwarding {
            ipv4: true,
            ipv6: true,
        };
        let dual = forward_flows(&plan, &BTreeMap::from([("fw", both)]));
        assert_eq!(dual["fw"].len(), 2);
        assert_eq!(dual["fw"][1].dest, ip("2001:2:0:2::40"));
        // fw's request carries the flow and client's addresses beside its
        // own sources; db's has no forward flow.
        let addresses = BTreeMap::from([
            (
                "client".to_owned(),
                vec![ip("198.18.1.20"), ip("2001:2:0:1::20")],
            ),
            (
                "fw".to_owned(),
                vec![ip("198.18.1.254"), ip("198.18.2.254")],
            ),
        ]);
        let r = requests("ab12", &wanted, &addresses);
        assert_eq!(r["fw"].forward, wanted.forward["fw"]);
        let fw_sources: Vec<&str> = r["fw"].sources.iter().map(|s| s.host.as_str()).collect();
        assert_eq!(fw_sources, ["client"]);
        assert!(r["db"].forward.is_empty());
        // A flow whose source has no address is not sent.
        let r = requests("ab12", &wanted, &BTreeMap::new());
        assert!(r.is_empty(), "{r:?}");
        // None forwards: no flows at all.
        assert!(forward_flows(&plan, &BTreeMap::from([("fw", off)])).is_empty());
    }

    #[test]
    fn a_forwarding_host_crossed_by_too_many_paths_gets_none() {
        let mut text = String::from(
            "name = \"many\"\n[[hosts]]\nname = \"a\"\naddress = \"198.18.1.1\"\n[[hosts]]\nname = \"fw\"\naddress = \"198.18.1.254\"\n[[hosts]]\nname = \"b\"\naddress = \"198.18.2.1\"\n",
        );
        text.push_str(&format!(
            "[[flows]]\nfrom = \"host:a\"\nto = \"host:b\"\nports = [{}]\n",
            (1..=MAX_FORWARD_FLOWS + 1)
                .map(|p| (10_000 + p).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let plan = Plan::parse(&text, "p.toml").unwrap();
        let v4 = Forwarding {
            ipv4: true,
            ipv6: false,
        };
        assert!(forward_flows(&plan, &BTreeMap::from([("fw", v4)])).is_empty());
    }
}
