//! Every address a source can arrive from, for the targets' rule tracing:
//! the addresses each agent reported in `prepared` (all its interfaces,
//! both families), its plan addresses, and its plan names resolved here.
//! A plan names at most one address per family, so a dual-stack host
//! whose plan address is IPv4 reaches an IPv6-only target from an address
//! the plan never mentions, and a host named by DNS has no address in the
//! plan at all; without these the target's trace would not see their
//! packets and the join would blame the network for its own firewall.
//!
//! Pure apart from name resolution: the round sends what [`requests`]
//! builds (one `trace-sources` per target) between `prepare` and `probe`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use crate::control::{
    ControlError, ControlStream, Request, Response, SourceAddresses, TraceSourcesRequest,
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
    by_target: &BTreeMap<String, BTreeSet<String>>,
    up: Vec<(&str, &mut Vec<IpAddr>)>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Option<BTreeMap<String, Vec<IpAddr>>> {
    let wanted: BTreeSet<&str> = by_target.values().flatten().map(String::as_str).collect();
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

/// The `trace-sources` request of each target, from the sources' full
/// address sets (`addresses`, by host); targets none of whose sources has
/// an address get none.
pub(super) fn requests(
    round: &str,
    by_target: &BTreeMap<String, BTreeSet<String>>,
    addresses: &BTreeMap<String, Vec<IpAddr>>,
) -> BTreeMap<String, TraceSourcesRequest> {
    by_target
        .iter()
        .filter_map(|(target, sources)| {
            let sources: Vec<SourceAddresses> = sources
                .iter()
                .filter_map(|s| {
                    let a = addresses.get(s).filter(|a| !a.is_empty())?;
                    Some(SourceAddresses {
                        host: s.clone(),
                        addresses: a.clone(),
                    })
                })
                .collect();
            (!sources.is_empty()).then(|| {
                (
                    target.clone(),
                    TraceSourcesRequest {
                        round: round.to_owned(),
                        sources,
                    },
                )
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
        let r = requests("ab12", &by_target, &addresses);
        let t = &r["t"];
        assert_eq!(t.round, "ab12");
        let hosts: Vec<&str> = t.sources.iter().map(|s| s.host.as_str()).collect();
        assert_eq!(hosts, ["a", "b"]);
        assert!(requests("ab12", &by_target, &BTreeMap::new()).is_empty());
    }
}
