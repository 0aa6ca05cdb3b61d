//! Name resolution with a deadline: the one resolver of everything that
//! turns a plan's DNS name into an address to probe or connect to. A lookup
//! that hangs (a dead resolver) ends at its deadline with a typed error
//! instead of holding a sweep or a round, and the family chosen follows the
//! address the socket will bind.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::target::{Host, Target};
use crate::plan::Address;

/// Which of a name's addresses are wanted, and in what order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FamilyPreference {
    /// Every address, in the resolver's order.
    #[default]
    Any,
    /// Only addresses of this address's family: a socket bound to it can
    /// reach no other.
    SameAs(IpAddr),
    /// Addresses of a family one of these has first (this host's own
    /// addresses), then the others: a dual-stack host reaches either.
    PreferFamiliesOf(Vec<IpAddr>),
}

impl FamilyPreference {
    /// The preference of a probe bound to `source`, else to the one of
    /// `sources` of the target's family.
    pub fn for_sources(source: Option<IpAddr>, sources: &[IpAddr]) -> FamilyPreference {
        match source {
            Some(s) => FamilyPreference::SameAs(s),
            None => FamilyPreference::PreferFamiliesOf(sources.to_vec()),
        }
    }

    /// `addrs` filtered and ordered by the preference (stable).
    fn apply(&self, addrs: Vec<IpAddr>) -> Vec<IpAddr> {
        match self {
            FamilyPreference::Any => addrs,
            FamilyPreference::SameAs(s) => addrs
                .into_iter()
                .filter(|a| a.is_ipv4() == s.is_ipv4())
                .collect(),
            FamilyPreference::PreferFamiliesOf(have) => {
                let (mut first, rest): (Vec<IpAddr>, Vec<IpAddr>) = addrs
                    .into_iter()
                    .partition(|a| have.iter().any(|h| h.is_ipv4() == a.is_ipv4()));
                first.extend(rest);
                first
            }
        }
    }
}

/// Why a name gave no address. The messages are the `detail` of a probe
/// that could not start (`local-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The resolver did not answer within the deadline.
    #[error("cannot resolve {name}: no answer within {} ms", .deadline.as_millis())]
    Timeout {
        /// The name looked up.
        name: String,
        /// The deadline it did not answer within.
        deadline: Duration,
    },
    /// The resolver answered with an error (no such name, no network).
    #[error("cannot resolve {name}: {reason}")]
    Lookup {
        /// The name looked up.
        name: String,
        /// The resolver's error in words.
        reason: String,
    },
    /// The name has addresses, none of the family wanted.
    #[error("cannot resolve {name}: no address of the source's family")]
    NoAddressOfFamily {
        /// The name looked up.
        name: String,
    },
    /// The lookup was abandoned (the sweep was cancelled).
    #[error("cannot resolve {name}: lookup did not finish")]
    Unfinished {
        /// The name looked up.
        name: String,
    },
}

/// Resolves `name` within `deadline`: its addresses as `preference` orders
/// them (never empty). An IP literal is itself.
pub async fn resolve(
    name: &str,
    deadline: Duration,
    preference: &FamilyPreference,
) -> Result<Vec<IpAddr>, ResolveError> {
    let found = match timeout(deadline, tokio::net::lookup_host((name, 0u16))).await {
        Err(_) => {
            return Err(ResolveError::Timeout {
                name: name.to_string(),
                deadline,
            });
        }
        Ok(Err(e)) => {
            return Err(ResolveError::Lookup {
                name: name.to_string(),
                reason: e.to_string(),
            });
        }
        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
    };
    finish(name, found, preference)
}

/// [`resolve`] for callers that are not async (an agent choosing the
/// address it binds at start-up): the system resolver runs on a thread of
/// its own, and the caller waits for it at most `deadline` (a lookup that
/// hangs is left to finish on its thread).
pub fn resolve_blocking(
    name: &str,
    deadline: Duration,
    preference: &FamilyPreference,
) -> Result<Vec<IpAddr>, ResolveError> {
    use std::net::ToSocketAddrs;
    if let Ok(ip) = name.parse::<IpAddr>() {
        return finish(name, vec![ip], preference);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = name.to_string();
    std::thread::spawn(move || {
        let r = (owned.as_str(), 0u16)
            .to_socket_addrs()
            .map(|it| it.map(|a| a.ip()).collect::<Vec<IpAddr>>());
        let _ = tx.send(r);
    });
    match rx.recv_timeout(deadline) {
        Ok(Ok(found)) => finish(name, found, preference),
        Ok(Err(e)) => Err(ResolveError::Lookup {
            name: name.to_string(),
            reason: e.to_string(),
        }),
        Err(_) => Err(ResolveError::Timeout {
            name: name.to_string(),
            deadline,
        }),
    }
}

/// The addresses `preference` keeps, in its order; an error when none.
fn finish(
    name: &str,
    found: Vec<IpAddr>,
    preference: &FamilyPreference,
) -> Result<Vec<IpAddr>, ResolveError> {
    let addrs = preference.apply(found);
    if addrs.is_empty() {
        return Err(ResolveError::NoAddressOfFamily {
            name: name.to_string(),
        });
    }
    Ok(addrs)
}

/// Where a plan address is reached on `port`: the address itself, or the
/// first of its name's addresses (resolved within `deadline`).
pub async fn resolve_address(
    address: &Address,
    port: u16,
    deadline: Duration,
    preference: &FamilyPreference,
) -> Result<SocketAddr, ResolveError> {
    let ip = match address {
        Address::Ip(ip) => *ip,
        Address::Dns(name) => resolve(name, deadline, preference).await?[0],
    };
    Ok(SocketAddr::new(ip, port))
}

/// Resolves every target's host, each distinct name once and all at once,
/// within `deadline` each; per target, the address to connect to or why
/// there is none. When `cancel` fires, names still being looked up are
/// [`ResolveError::Unfinished`].
pub async fn resolve_targets(
    targets: &[Target],
    deadline: Duration,
    preference: &FamilyPreference,
    cancel: &CancellationToken,
) -> Vec<Result<SocketAddr, ResolveError>> {
    let mut names: HashMap<Arc<str>, Option<Result<IpAddr, ResolveError>>> = HashMap::new();
    for t in targets {
        if let Host::Name(n) = &t.host {
            names.entry(n.clone()).or_insert(None);
        }
    }
    let mut lookups = tokio::task::JoinSet::new();
    for name in names.keys().cloned() {
        let preference = preference.clone();
        lookups.spawn(async move {
            let r = resolve(&name, deadline, &preference).await.map(|a| a[0]);
            (name, r)
        });
    }
    loop {
        tokio::select! {
            () = cancel.cancelled() => {
                lookups.abort_all();
                break;
            }
            next = lookups.join_next() => match next {
                Some(Ok((name, r))) => { names.insert(name, Some(r)); }
                Some(Err(_)) => {}
                None => break,
            }
        }
    }
    targets
        .iter()
        .map(|t| {
            let ip = match &t.host {
                Host::Ip(ip) => Ok(*ip),
                Host::Name(n) => match names.get(n) {
                    Some(Some(r)) => r.clone(),
                    _ => Err(ResolveError::Unfinished {
                        name: n.to_string(),
                    }),
                },
            };
            ip.map(|ip| SocketAddr::new(ip, t.port.get()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn preferences_filter_and_order_by_family() {
        let found = vec![ip("::1"), ip("127.0.0.1"), ip("::2"), ip("127.0.0.2")];
        assert_eq!(FamilyPreference::Any.apply(found.clone()), found);
        assert_eq!(
            FamilyPreference::SameAs(ip("198.18.0.1")).apply(found.clone()),
            vec![ip("127.0.0.1"), ip("127.0.0.2")]
        );
        assert_eq!(
            FamilyPreference::PreferFamiliesOf(vec![ip("198.18.0.1")]).apply(found.clone()),
            vec![ip("127.0.0.1"), ip("127.0.0.2"), ip("::1"), ip("::2")]
        );
        // Without own addresses, the resolver's order stands.
        assert_eq!(
            FamilyPreference::PreferFamiliesOf(Vec::new()).apply(found.clone()),
            found
        );
        assert_eq!(
            FamilyPreference::for_sources(None, &[ip("::5")]),
            FamilyPreference::PreferFamiliesOf(vec![ip("::5")])
        );
    }

    #[tokio::test]
    async fn literals_resolve_to_themselves_and_a_wrong_family_is_typed() {
        let pref = FamilyPreference::Any;
        let d = Duration::from_secs(5);
        assert_eq!(
            resolve("127.0.0.1", d, &pref).await,
            Ok(vec![ip("127.0.0.1")])
        );
        let v6 = FamilyPreference::SameAs(ip("::1"));
        let err = resolve("127.0.0.1", d, &v6).await.unwrap_err();
        assert_eq!(
            err,
            ResolveError::NoAddressOfFamily {
                name: "127.0.0.1".to_string()
            }
        );
        assert_eq!(
            err.to_string(),
            "cannot resolve 127.0.0.1: no address of the source's family"
        );
        let addr = resolve_address(&Address::Dns("127.0.0.1".into()), 80, d, &pref).await;
        assert_eq!(addr, Ok("127.0.0.1:80".parse().unwrap()));
        let addr = resolve_address(&Address::Ip(ip("::1")), 443, d, &pref).await;
        assert_eq!(addr, Ok("[::1]:443".parse().unwrap()));
    }

    #[test]
    fn the_blocking_form_resolves_literals_and_names_with_the_same_rules() {
        let d = Duration::from_secs(5);
        assert_eq!(
            resolve_blocking("::1", d, &FamilyPreference::Any),
            Ok(vec![ip("::1")])
        );
        assert_eq!(
            resolve_blocking("::1", d, &FamilyPreference::SameAs(ip("127.0.0.1"))),
            Err(ResolveError::NoAddressOfFamily { name: "::1".into() })
        );
        // A name goes through the system resolver on its own thread.
        let found =
            resolve_blocking("localhost", d, &FamilyPreference::Any).expect("localhost resolves");
        assert!(found.iter().all(IpAddr::is_loopback), "{found:?}");
    }

    #[test]
    fn error_messages_are_the_probe_details() {
        let t = ResolveError::Timeout {
            name: "db.internal".into(),
            deadline: Duration::from_millis(5000),
        };
        assert_eq!(
            t.to_string(),
            "cannot resolve db.internal: no answer within 5000 ms"
        );
        let u = ResolveError::Unfinished {
            name: "db.internal".into(),
        };
        assert_eq!(
            u.to_string(),
            "cannot resolve db.internal: lookup did not finish"
        );
    }

    #[tokio::test]
    async fn a_cancelled_batch_leaves_names_unfinished_and_addresses_resolved() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let targets = crate::probe::parse_target_list("127.0.0.1:80\nlocalhost:81\n").unwrap();
        let r = resolve_targets(
            &targets,
            Duration::from_secs(5),
            &FamilyPreference::Any,
            &cancel,
        )
        .await;
        assert_eq!(r[0], Ok("127.0.0.1:80".parse().unwrap()));
        // The lookup is abandoned, unless it won the race to the first poll.
        let abandoned = Err(ResolveError::Unfinished {
            name: "localhost".into(),
        });
        assert!(
            r[1] == abandoned || r[1].as_ref().is_ok_and(|a| a.ip().is_loopback()),
            "{:?}",
            r[1]
        );
    }
}
