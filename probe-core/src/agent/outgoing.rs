//! `probe`: this host's outgoing paths of the round, each with a nonce
//! for its target's canary (TCP through the probe engine, UDP through the
//! UDP canaries' prober) or probed live where a real service holds the
//! port.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::canary::NonceExchange;
use super::sampling::{self, ToSample};
use super::{Shared, error, neighbours, udp_canary};
use crate::control::{
    self, HostPort, NeighbourFailure, Nonce, PathProbe, ProbeReply, ProbeRequest, Response,
};
use crate::plan::Address;
use crate::port::Protocol;
use crate::probe::canary_line::NonceKey;
use crate::probe::service::{ServiceExchange, ServicePlan, sweep_proving};
use crate::probe::{self, ProbeConfig, ProbeResult, Prober, Target};
// The one place the agent asks which live UDP services portcall can prove
// (it moves below the agent, to `probe::udp_service`, at the merge).
use crate::probe::udp_service::live_request_known;

/// A fresh nonce for `round`: made under the round's key when the
/// coordinator gave one (so the target's canary can tell it from a forged
/// one), else random.
fn make_nonce(key: Option<&NonceKey>, round: &str) -> String {
    match key {
        Some(k) => k.nonce(round, &control::random_id(8)),
        None => control::random_id(16),
    }
}

/// The round's outgoing paths, sorted by how they are probed.
#[derive(Default)]
struct Planned {
    /// Plan path index of each engine target.
    indices: Vec<usize>,
    /// The engine's targets (TCP, TLS, live UDP).
    targets: Vec<Target>,
    /// Each target's nonce and expected host, where a canary waits.
    slots: Vec<Option<(String, String)>>,
    /// What each target's live service must prove to be, where planned.
    services: Vec<Option<ServicePlan>>,
    /// UDP paths to a canary, probed by the UDP canaries' prober.
    udp_paths: Vec<udp_canary::UdpPath>,
}

impl Shared {
    pub(super) async fn probe(self: &Arc<Self>, req: ProbeRequest) -> Response {
        let (cancel, nonce_key) = match self.round_to_probe(&req.round) {
            Ok(c) => c,
            Err(why) => return error(why),
        };
        // A repeated request for this round waits for the running sweep
        // and gets its reply; it never probes twice.
        let mut running = self.probing.lock().await;
        if let Some(done) = running.as_ref().filter(|r| r.round == req.round) {
            tracing::info!(round = %req.round, "probe asked again: the same results");
            return Response::Probed(done.clone());
        }
        let planned = self.plan_probes(&req, nonce_key.as_ref()).await;
        let nonces: Vec<Option<String>> = planned
            .slots
            .iter()
            .map(|s| s.as_ref().map(|(n, _)| n.clone()))
            .collect();
        let exchange = Arc::new(NonceExchange::new(req.round.clone(), planned.slots));
        let plan = &self.config.plan;
        let d = plan.defaults;
        let per_attempt = Duration::from_millis(d.timeout_ms);
        let greeter = Arc::new(ServiceExchange::new(
            planned.services,
            per_attempt / 2,
            Some(exchange.clone()),
        ));
        let udp_options = probe::udp_service::UdpOptions {
            snmp_community: plan.snmp_community.clone(),
        };
        let prober = match Prober::with_udp(self.probe_config(), Some(greeter.clone()), udp_options)
        {
            Ok(p) => p,
            Err(e) => return error(format!("probe: {e}")),
        };
        let started = Instant::now();
        let udp_probing = udp_canary::UdpProbing {
            round: req.round.clone(),
            sources: self.sources.clone(),
            per_attempt,
            attempts: d.retries.saturating_add(1),
            concurrency: self.config.limits.probe_concurrency,
        };
        let mut to_sample = udp_to_sample(&planned.udp_paths);
        let (results, udp_results) = tokio::join!(
            sweep_proving(&prober, &greeter, planned.targets, &cancel),
            udp_canary::probe_paths(&udp_probing, planned.udp_paths, &cancel),
        );
        tracing::info!(round = %req.round, paths = results.len() + udp_results.len(), ms = started.elapsed().as_millis() as u64, "probes done");
        let neighbours = unresolved_neighbours(&results).await;
        to_sample.extend(tcp_to_sample(&planned.indices, &nonces, &results));
        let mut results: Vec<PathProbe> = results
            .into_iter()
            .enumerate()
            .map(|(k, r)| {
                let neighbour = neighbours.get(k).cloned().flatten();
                let mut p = path_probe(planned.indices[k], nonces[k].clone(), r);
                p.neighbour = neighbour.map(Box::new);
                p.answered_by = exchange.answered_by(k).map(Into::into);
                if let Some(check) = greeter.check(k) {
                    p.service_banner = check
                        .answer
                        .as_ref()
                        .and_then(mysql_banner)
                        .map(String::into_boxed_str);
                    p.proof = Some(check.proof);
                    p.service_answer = check.answer.map(Box::new);
                }
                p
            })
            .chain(udp_results)
            .collect();
        if req.samples > 1 {
            let sampling = sampling::Sampling {
                round: req.round.clone(),
                samples: req.samples,
                sources: self.sources.clone(),
                timeout: per_attempt,
                concurrency: self.config.limits.probe_concurrency,
            };
            sampling::sample(&sampling, to_sample, &mut results, &cancel).await;
        }
        let reply = ProbeReply {
            round: req.round,
            results,
        };
        *running = Some(reply.clone());
        Response::Probed(reply)
    }

    /// The cancellation of round `id` when it is the current one and has
    /// not expired; else why not, for the error reply.
    fn round_to_probe(&self, id: &str) -> Result<(CancellationToken, Option<NonceKey>), String> {
        let guard = self.round.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(r) if r.id == id && Instant::now() < r.expires => {
                Ok((r.cancel.clone(), r.nonce_key.clone()))
            }
            Some(r) if r.id == id => Err(format!("probe: round {id} has expired")),
            _ => Err(format!("probe: no round {id} on this agent")),
        }
    }

    /// This host's paths the request asks for, each as an engine target
    /// (with a nonce where a canary waits) or a UDP canary path; paths
    /// skipped, or to a live UDP service portcall cannot prove, are left
    /// out.
    async fn plan_probes(&self, req: &ProbeRequest, nonce_key: Option<&NonceKey>) -> Planned {
        let plan = &self.config.plan;
        let host = &self.config.host;
        let live: HashSet<&HostPort> = req.live.iter().collect();
        let elsewhere: HashSet<&HostPort> = req.elsewhere.iter().collect();
        let skip: HashSet<&HostPort> = req.skip.iter().collect();
        let skip_hosts: HashSet<&str> = req.skip_hosts.iter().map(String::as_str).collect();
        let only: Option<HashSet<usize>> = req.only.as_ref().map(|o| o.iter().copied().collect());
        let mut planned = Planned::default();
        for (k, path) in plan.paths.iter().enumerate() {
            // The path's position in the whole plan, which is what the
            // coordinator names (the agent may hold only its own paths).
            let i = plan.path_index(k);
            if path.from != *host
                || skip_hosts.contains(path.to.as_str())
                || only.as_ref().is_some_and(|o| !o.contains(&i))
            {
                continue;
            }
            let key = HostPort {
                host: path.to.clone(),
                port: path.port.get(),
                transport: path.protocol.into(),
            };
            if skip.contains(&key) {
                continue;
            }
            let canary = path.role.is_some() && !live.contains(&key);
            if path.protocol == Protocol::Udp {
                if canary {
                    planned.udp_paths.push(udp_canary::UdpPath {
                        path: i,
                        target: udp_target(&path.address, path.port.get(), &self.sources).await,
                        nonce: make_nonce(nonce_key, &req.round),
                        expected: path.to.clone(),
                    });
                    continue;
                }
                // A live UDP service portcall knows no request for cannot
                // be proven: nothing is sent (the join says why). A port
                // held only on other addresses has nothing on the planned
                // one: a datagram meets what its clients meet.
                if !live_request_known(path.port.get(), plan.snmp_community.as_deref())
                    && !elsewhere.contains(&key)
                {
                    continue;
                }
            }
            let mut target =
                Target::new(probe::Host::from(&path.address), path.port, path.protocol);
            let slot = if canary {
                target = target.with_server_name(path.to.as_str());
                Some((make_nonce(nonce_key, &req.round), path.to.clone()))
            } else {
                None
            };
            planned.indices.push(i);
            planned.targets.push(target);
            // A live service is asked in its planned protocol and left
            // politely; a canary is never (it proves itself by the nonce).
            planned.services.push(
                ServicePlan::of(path.service_kind, &path.service, &path.to)
                    .filter(|_| slot.is_none()),
            );
            planned.slots.push(slot);
        }
        planned
    }

    /// The probe engine's configuration for this host's rounds: the one
    /// place the agent assembles it (the plan's timeouts, the agent's
    /// limits, its place in the plan, its local sources, TTL walks).
    fn probe_config(&self) -> ProbeConfig {
        ProbeConfig::for_plan_host(
            &self.config.plan,
            &self.config.host,
            self.sources.clone(),
            probe::SweepLimits {
                concurrency: self.config.limits.probe_concurrency,
                per_host: self.config.limits.probe_per_host,
            },
        )
    }
}

/// The wire form of the engine's result for plan path `path`; the
/// exchange's answer and the service's banner are the caller's to add.
fn path_probe(path: usize, nonce: Option<String>, r: ProbeResult) -> PathProbe {
    PathProbe {
        path,
        nonce: nonce.map(Nonce::from),
        observed: r.observed,
        detail: r.detail.into_boxed_str(),
        latency_us: micros(r.latency),
        attempts: r.attempts,
        source: r.local_address,
        answered_by: None,
        icmp: r.icmp.map(Box::new),
        path_mtu: r.path_mtu,
        walk: r.walk.map(Box::new),
        connect_us: r.connect_time.map(micros32),
        tls_us: r.tls_time.map(micros32),
        cert: r.cert,
        service_banner: None,
        shed: r.shed,
        errno: r.errno,
        silence: r.silence,
        neighbour: None,
        proof: None,
        service_answer: None,
        answered: r.answered,
        quality: None,
    }
}

/// The UDP canary paths quality samples may follow (those that open).
fn udp_to_sample(paths: &[udp_canary::UdpPath]) -> Vec<ToSample> {
    paths
        .iter()
        .filter_map(|p| {
            Some(ToSample {
                path: p.path,
                target: *p.target.as_ref().ok()?,
                nonce: p.nonce.clone(),
                udp: true,
            })
        })
        .collect()
}

/// The TCP and TLS canary paths quality samples follow: those that
/// connected to a canary (`nonces`). A TLS path is sampled as TCP is (one
/// marked SYN, the sample line in the clear, which its canary answers):
/// the handshake's round trip is the path's, and no TLS session is made.
fn tcp_to_sample(
    indices: &[usize],
    nonces: &[Option<String>],
    results: &[ProbeResult],
) -> Vec<ToSample> {
    results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.target.protocol.is_tcp() && r.observed == probe::Observed::Open)
        .filter_map(|(k, r)| {
            Some(ToSample {
                path: indices[k],
                target: r.address?,
                nonce: nonces.get(k)?.clone()?,
                udp: false,
            })
        })
        .collect()
}

/// For each result whose ICMP error came from this host itself (the
/// kernel's "address unreachable" when ARP or neighbour discovery got no
/// answer), the unresolved neighbour entry of its target; the table is
/// read once, and only when some result needs it.
async fn unresolved_neighbours(results: &[ProbeResult]) -> Vec<Option<NeighbourFailure>> {
    let own = super::addresses::host_addresses();
    let local = |r: &ProbeResult| {
        r.icmp
            .as_ref()
            .and_then(probe::IcmpEvidence::from_ip)
            .is_some_and(|from| {
                Some(from) == r.local_address.map(|l| l.ip()) || own.contains(&from)
            })
    };
    if !results.iter().any(local) {
        return Vec::new();
    }
    let entries = tokio::task::spawn_blocking(neighbours::read)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    results
        .iter()
        .map(|r| {
            let target = r.address?.ip();
            // The target's own entry on its link, else its route's gateway.
            local(r)
                .then(|| {
                    neighbours::failure(&entries, target)
                        .or_else(|| neighbours::failure(&entries, neighbours::next_hop(target)))
                })
                .flatten()
        })
        .collect()
}

/// Where a UDP path's datagrams go: its plan address, a name resolved
/// here within the resolver's deadline (the first address of a family
/// this host has).
async fn udp_target(
    address: &Address,
    port: u16,
    sources: &[std::net::IpAddr],
) -> Result<SocketAddr, String> {
    probe::resolve::resolve_address(
        address,
        port,
        ProbeConfig::default().resolve_timeout,
        &probe::resolve::FamilyPreference::for_sources(None, sources),
    )
    .await
    .map_err(|e| e.to_string())
}

/// A duration in whole microseconds, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A handshake's time in microseconds, as the reply holds it (71 minutes
/// at most, far above any deadline).
fn micros32(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// The `service_banner` a MySQL answer has always given
/// (`MySQL 10.11.6-MariaDB`, `MySQL error 1130: ...`), kept beside the
/// typed `service_answer` for readers of the older field.
fn mysql_banner(a: &probe::service::ServiceAnswer) -> Option<String> {
    if a.protocol != "mysql" {
        return None;
    }
    match (&a.version, a.status.as_deref()) {
        (Some(v), _) => Some(format!("MySQL {v}")),
        (None, Some(s)) => Some(format!("MySQL {s}: {}", a.detail)),
        _ => None,
    }
}
