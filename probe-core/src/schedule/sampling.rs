//! A schedule-mode round's quality samples (`agent --samples N`): after
//! the round's probes, N connect-only samples of every TCP or TLS path
//! whose probe connected ([`crate::probe::samples::tcp_connect_samples`]),
//! paths to one target address one after another (so each address sees at
//! most one new connection per [`crate::probe::samples::INTERVAL`]),
//! addresses at once within the round's probe concurrency, all within the
//! round's sampling time. A UDP path is sampled where its live service is
//! one portcall samples (DNS: [`crate::probe::live_samples`]) and its
//! probe was answered: N queries, each answered or not.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::probe::samples::{self, SampleRequest};

/// How a round samples.
#[derive(Debug, Clone)]
pub(super) struct Sampling {
    /// Samples per path (more than 1; see [`samples::clamp`]).
    pub samples: u32,
    /// This host's addresses: each sample leaves from the one of its
    /// target's family, as the probe did.
    pub sources: Vec<IpAddr>,
    /// The plan's per-attempt timeout (a sample's connect deadline is at
    /// most this).
    pub timeout: Duration,
    /// Target addresses sampled at once.
    pub concurrency: usize,
}

/// One path's samples this round: how many left, and the answered ones'
/// round trips in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Taken {
    pub sent: u32,
    pub rtts_us: Vec<u64>,
}

/// Samples every path whose entry in `targets` is `Some`: the address its
/// probe connected to (or whose service answered), and whether it is UDP;
/// returns one entry per path, `None` where nothing was sampled (or the
/// round was cancelled first).
pub(super) async fn take(
    s: &Sampling,
    targets: &[Option<(SocketAddr, bool)>],
    cancel: &CancellationToken,
) -> Vec<Option<Taken>> {
    let mut by_address: BTreeMap<IpAddr, Vec<(usize, SocketAddr, bool)>> = BTreeMap::new();
    for (k, t) in targets.iter().enumerate() {
        if let Some((t, udp)) = t {
            by_address.entry(t.ip()).or_default().push((k, *t, *udp));
        }
    }
    let mut out = vec![None; targets.len()];
    let most = by_address.values().map(Vec::len).max().unwrap_or(0);
    let deadline = Instant::now() + samples::sampling_time(most, s.samples);
    let limit = Arc::new(tokio::sync::Semaphore::new(s.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (_, group) in by_address {
        let (limit, s) = (limit.clone(), s.clone());
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let mut done = Vec::with_capacity(group.len());
            for (k, target, udp) in group {
                let req = SampleRequest {
                    round: String::new(),
                    nonce: String::new(),
                    target,
                    source: s
                        .sources
                        .iter()
                        .copied()
                        .find(|a| a.is_ipv4() == target.is_ipv4()),
                    samples: s.samples,
                    timeout: s.timeout,
                    deadline,
                };
                let (tally, rtts_us) = if udp {
                    crate::probe::live_samples::udp_service_samples(&req).await
                } else {
                    samples::tcp_connect_samples(&req).await
                };
                if let Some(e) = &tally.error {
                    tracing::debug!("samples to {target}: {e}");
                }
                done.push((
                    k,
                    Taken {
                        sent: tally.sent,
                        rtts_us,
                    },
                ));
            }
            done
        });
    }
    loop {
        tokio::select! {
            () = cancel.cancelled() => {
                set.abort_all();
                break;
            }
            joined = set.join_next() => match joined {
                Some(Ok(done)) => {
                    for (k, t) in done {
                        out[k] = Some(t);
                    }
                }
                Some(Err(_)) => {}
                None => break,
            },
        }
    }
    out
}
