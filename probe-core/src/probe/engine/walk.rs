//! The TTL walks after a sweep: toward the targets that stayed silent, a
//! few at a time and within [`WALK_BUDGET`], each attached to the results
//! it explains.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::ProbeConfig;
use super::stored::Stored;
use crate::port::Protocol;
use crate::probe::outcome::Observed;
use crate::probe::ttl_walk::{self, Walk, WalkConfig};

/// Walks after one sweep: at most [`WALKS_AT_ONCE`] at a time (each holds
/// up to [`ttl_walk::MAX_HOPS`] sockets for at most its deadline), and no
/// new batch once [`WALK_BUDGET`] would be exceeded, so walking adds at
/// most `WALK_BUDGET` to a sweep however many targets were silent.
const WALKS_AT_ONCE: usize = 4;

/// The most time walks may add to one sweep.
pub const WALK_BUDGET: Duration = Duration::from_secs(3);

/// Walks the TTL toward the targets whose result is `timeout` (one walk per
/// address and port; one port of every silent address first, then the
/// others, within [`WALK_BUDGET`]), skipping targets on this host's own
/// link, and attaches each walk to the results it explains.
pub(super) async fn walk_silent(
    results: &mut [Option<Stored>],
    config: WalkConfig,
    probe: &ProbeConfig,
    cancel: &CancellationToken,
) {
    let mut on_link: HashMap<IpAddr, bool> = HashMap::new();
    let mut first: Vec<SocketAddr> = Vec::new();
    let mut rest: Vec<SocketAddr> = Vec::new();
    for r in results.iter().flatten().filter_map(Stored::full) {
        let Some(addr) = r.address else {
            continue;
        };
        if r.observed != Observed::Timeout || first.contains(&addr) || rest.contains(&addr) {
            continue;
        }
        // A walk sends TCP; a firewall may treat UDP to the port otherwise.
        if r.target.protocol == Protocol::Udp {
            continue;
        }
        let local = *on_link
            .entry(addr.ip())
            .or_insert_with(|| ttl_walk::on_link(addr.ip()) == Some(true));
        if local {
            continue;
        }
        if first.iter().any(|a| a.ip() == addr.ip()) {
            rest.push(addr);
        } else {
            first.push(addr);
        }
    }
    let wanted: Vec<SocketAddr> = first.into_iter().chain(rest).collect();
    if wanted.is_empty() {
        return;
    }
    // A walk leaves from the address the probes left from.
    let source_for = |addr: SocketAddr| {
        config
            .source
            .into_iter()
            .chain(probe.source)
            .chain(probe.sources.iter().copied())
            .find(|s| s.is_ipv4() == addr.is_ipv4())
    };
    let mut walks: HashMap<SocketAddr, Walk> = HashMap::new();
    let started = Instant::now();
    for chunk in wanted.chunks(WALKS_AT_ONCE) {
        if started.elapsed() + config.deadline > WALK_BUDGET {
            break;
        }
        let mut set = tokio::task::JoinSet::new();
        for addr in chunk {
            let addr = *addr;
            let config = WalkConfig {
                source: source_for(addr),
                ..config
            };
            set.spawn(async move { (addr, ttl_walk::walk(addr, config).await) });
        }
        loop {
            tokio::select! {
                () = cancel.cancelled() => {
                    set.abort_all();
                    return;
                }
                next = set.join_next() => match next {
                    Some(Ok((addr, w))) => { walks.insert(addr, w); }
                    Some(Err(_)) => {}
                    None => break,
                }
            }
        }
    }
    for r in results.iter_mut().flatten().filter_map(Stored::full_mut) {
        if let Some(addr) = r.address {
            if r.observed == Observed::Timeout {
                r.walk = walks.get(&addr).cloned();
            }
        }
    }
}
