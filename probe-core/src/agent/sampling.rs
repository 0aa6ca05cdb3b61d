//! The round's quality samples (`check --samples N`): after its probes,
//! the source repeats the nonce exchange of every path that answered
//! ([`crate::probe::samples`]), paths to one target address one after
//! another (so each address sees one sample per interval), addresses at
//! once within the agent's probe concurrency, all within the round's
//! sampling time. A path that did not open is not sampled; a TLS path is
//! sampled as a TCP one (one SYN, the sample line in the clear).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::control::PathProbe;
use crate::probe::Observed;
use crate::probe::samples::{self, SampleRequest, SampleTally};

/// One path to sample: where its probe went and under which nonce.
#[derive(Debug, Clone)]
pub(super) struct ToSample {
    /// The path's index in the plan (as in [`PathProbe::path`]).
    pub path: usize,
    /// Its target address and port.
    pub target: SocketAddr,
    /// Its nonce.
    pub nonce: String,
    /// UDP (else TCP).
    pub udp: bool,
}

/// How the round samples.
pub(super) struct Sampling {
    /// The round's id.
    pub round: String,
    /// Samples per path.
    pub samples: u32,
    /// This host's addresses (each sample leaves from the one of its
    /// target's family, as the probe did).
    pub sources: Vec<IpAddr>,
    /// The plan's per-attempt timeout.
    pub timeout: Duration,
    /// Addresses sampled at once.
    pub concurrency: usize,
}

/// Samples every path of `paths` whose probe in `results` was open and
/// puts each tally on its result.
pub(super) async fn sample(
    s: &Sampling,
    paths: Vec<ToSample>,
    results: &mut [PathProbe],
    cancel: &CancellationToken,
) {
    let open: std::collections::HashSet<usize> = results
        .iter()
        .filter(|r| r.observed == Observed::Open)
        .map(|r| r.path)
        .collect();
    let mut by_address: BTreeMap<IpAddr, Vec<ToSample>> = BTreeMap::new();
    for p in paths.into_iter().filter(|p| open.contains(&p.path)) {
        by_address.entry(p.target.ip()).or_default().push(p);
    }
    let most = by_address.values().map(Vec::len).max().unwrap_or(0);
    let deadline = Instant::now() + samples::sampling_time(most, s.samples);
    let limit = Arc::new(tokio::sync::Semaphore::new(s.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (_, group) in by_address {
        let limit = limit.clone();
        let (round, sources) = (s.round.clone(), s.sources.clone());
        let (n, timeout) = (s.samples, s.timeout);
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let mut out = Vec::with_capacity(group.len());
            for p in group {
                let req = SampleRequest {
                    round: round.clone(),
                    nonce: p.nonce.clone(),
                    target: p.target,
                    source: sources
                        .iter()
                        .copied()
                        .find(|a| a.is_ipv4() == p.target.is_ipv4()),
                    samples: n,
                    timeout,
                    deadline,
                };
                let tally = if p.udp {
                    samples::udp_samples(&req).await
                } else {
                    samples::tcp_samples(&req).await
                };
                out.push((p.path, tally));
            }
            out
        });
    }
    let mut tallies: BTreeMap<usize, SampleTally> = BTreeMap::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => {
                set.abort_all();
                break;
            }
            done = set.join_next() => match done {
                Some(Ok(out)) => tallies.extend(out),
                Some(Err(_)) => {}
                None => break,
            },
        }
    }
    // Every path of a sampling round says so: one not sampled (it did
    // not open) has a tally of nothing sent.
    for r in results.iter_mut() {
        let t = tallies
            .remove(&r.path)
            .unwrap_or_else(|| SampleTally::of(s.samples, 0, &[]));
        r.quality = Some(Box::new(t));
    }
}
