//! `prepare`: a new round's canaries on every planned port, the kernel's
//! handshake watch, rule tracing, and the lease that ends the round when
//! the coordinator is gone.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::canary::{self, CanaryOptions};
use super::nftrace::{self, TraceScope, Tracer};
use super::{Lease, Round, Shared, canary_ports, error, syn_watch};
use crate::control::{
    ForwardFlow, PROTOCOL_VERSION, PrepareReply, PrepareRequest, Response, SourcesTraced,
    TraceSourcesRequest, VersionMismatch,
};
use crate::plan::Address;
use crate::probe::canary_line::{NONCE_KEY_HEX, NonceKey};

/// How long a prepared round outlives its coordinator's control
/// connection before the first `probe` request: a coordinator killed or
/// interrupted while it still waits for another host's `prepare` has
/// nothing to come back for, so its canaries close at once, not a whole
/// lease later. A `renew` within it keeps the round, for the whole lease
/// from then on.
pub(super) const PREPARED_GRACE: Duration = Duration::from_secs(1);

impl Shared {
    /// `prepare`: checks the request, ends any earlier round, and opens
    /// this round's canaries, watch, trace and lease.
    pub(super) async fn prepare(self: &Arc<Self>, req: PrepareRequest) -> Response {
        if let Err(why) = self.check_prepare(&req) {
            return error(why);
        }
        let nonce_key = match req.nonce_key.as_deref().map(NonceKey::from_hex) {
            None => None,
            Some(Some(k)) => Some(k),
            Some(None) => {
                return error(format!(
                    "prepare: the nonce key is not {NONCE_KEY_HEX} hex digits"
                ));
            }
        };
        let host = &self.config.host;
        // A new round replaces any earlier one: a coordinator that crashed
        // and came back must not wait for the old TTL.
        self.end_round(None).await;
        let limits = &self.config.limits;
        let ttl = Duration::from_millis(req.ttl_ms).clamp(Duration::from_secs(1), limits.max_ttl);
        let expires = Instant::now() + ttl;
        let cancel = CancellationToken::new();
        // The request is dropped half done when its coordinator is killed
        // mid-prepare (see `handle_watching`): until the round is stored,
        // where the next `prepare` ends it, dropping this closes the
        // canaries already open. Otherwise they would hold their ports
        // until the TTL, and the next round would take the agent's own
        // canaries for live services.
        let unstored = cancel.clone().drop_guard();
        let tracker = TaskTracker::new();
        let ports = canary_ports(&self.config.plan, host);
        // Sized from the round: every path to a port may have a connection
        // in flight at once, plus headroom; a flood beyond that is shed,
        // idle unauthenticated connections first.
        let expected = ports
            .iter()
            .map(|p| self.expected.get(&p.port).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        let options = CanaryOptions {
            host: Arc::from(host.as_str()),
            round: Arc::from(req.round.as_str()),
            tls: self.config.canary_tls.clone(),
            exchange_timeout: limits.canary_timeout,
            max_sightings: limits.max_sightings,
            connections: self.canary_connections.clone(),
            per_canary: expected.saturating_add(limits.canary_headroom),
            nonce_key: nonce_key.clone(),
        };
        // The host's sockets on the planned ports decide the canaries.
        let listening = canary::survey(&self.canary_ips, &ports).await;
        let (listeners, log) = canary::open_canaries(
            &self.canary_ips,
            &ports,
            listening.as_ref(),
            &options,
            expires,
            &cancel,
            &tracker,
        );
        // Every planned port is watched, held ones too: the kernel's
        // handshakes say how far a probe got even where no canary listens.
        // Polled until the evidence is taken (see syn_watch).
        // Reading the kernel's tables blocks: off the runtime's workers.
        let (ips, watched, watch_cancel) = (
            self.canary_ips.clone(),
            listeners
                .iter()
                .filter(|l| l.protocol.is_tcp())
                .map(|l| l.port)
                .collect(),
            cancel.clone(),
        );
        let handshakes = tokio::task::spawn_blocking(move || {
            syn_watch::start(ips, watched, true, expires, &watch_cancel)
        })
        .await
        .unwrap_or_default();
        let trace = if self.config.rule_trace {
            Some(
                self.start_trace(&req.round, ttl, req.samples > 1, &cancel, &tracker)
                    .await,
            )
        } else {
            None
        };
        let lease = Arc::new(Lease {
            duration: limits.lease,
            grace: limits.lease.min(PREPARED_GRACE),
            probed: AtomicBool::new(false),
            holders: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        });
        tracker.spawn(watch_lease(
            lease.clone(),
            expires,
            cancel.clone(),
            req.round.clone(),
        ));
        tracing::info!(round = %req.round, ttl_ms = ttl.as_millis() as u64, lease_ms = limits.lease.as_millis() as u64, canaries = listeners.len(), "round prepared");
        *self.round.lock().unwrap_or_else(|e| e.into_inner()) = Some(Round {
            id: req.round.clone(),
            cancel,
            tracker,
            expires,
            log,
            lease,
            trace,
            handshakes,
            nonce_key,
        });
        unstored.disarm();
        Response::Prepared(PrepareReply {
            round: req.round,
            listeners,
            version: PROTOCOL_VERSION,
            addresses: super::addresses::host_addresses(),
            forwarding: super::addresses::forwarding(),
        })
    }

    /// Why `req` is refused: another protocol version, another host,
    /// another plan, or a malformed round id.
    fn check_prepare(&self, req: &PrepareRequest) -> Result<(), String> {
        let host = &self.config.host;
        if req.version != PROTOCOL_VERSION {
            let e = VersionMismatch::Coordinator {
                host: host.clone(),
                agent: PROTOCOL_VERSION,
                coordinator: req.version,
            };
            return Err(format!("prepare: {e}"));
        }
        if req.host != *host {
            return Err(format!(
                "prepare: this agent plays {host}, not {}",
                req.host
            ));
        }
        if req.plan_digest != self.digest {
            return Err(format!(
                "prepare: plan mismatch: this agent holds plan {:?} with digest {}, the coordinator's has {}; give both the same plan file",
                self.config.plan.name, self.digest, req.plan_digest
            ));
        }
        if req.round.is_empty()
            || req.round.len() > 64
            || !req.round.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err("prepare: round id must be 1 to 64 hex digits".into());
        }
        Ok(())
    }

    /// Starts the round's rule tracing, stopped at teardown or at the TTL;
    /// the error is why tracing is not possible on this host.
    pub(super) async fn start_trace(
        &self,
        round: &str,
        ttl: Duration,
        count_samples: bool,
        cancel: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Arc<Tracer>, String> {
        let plan = &self.config.plan;
        let host = &self.config.host;
        let ip = |a: &Address| match a {
            Address::Ip(ip) => Some(*ip),
            Address::Dns(_) => None,
        };
        let mut inbound = Vec::new();
        let mut outbound = Vec::new();
        // The trace table matches TCP only (UDP paths are not traced).
        for p in plan.paths.iter().filter(|p| p.protocol.is_tcp()) {
            if p.to == *host && p.role.is_some() {
                // Every address of the source: a dual-stack source may
                // arrive from either family.
                for a in plan.host(&p.from).iter().flat_map(|h| &h.addresses) {
                    if let Some(a) = ip(a) {
                        inbound.push((a, p.port.get()));
                    }
                }
            }
            if p.from == *host {
                if let Some(a) = ip(&p.address) {
                    outbound.push((a, p.port.get()));
                }
            }
        }
        let pairs = inbound.len() + outbound.len();
        if let Some(why) = nftrace::too_large(pairs) {
            tracing::info!(round, pairs, "no rule tracing: the round is too large");
            return Err(why);
        }
        let scope = TraceScope {
            round: round.to_string(),
            expires_unix: nftrace::unix_now() + ttl.as_secs() + 1,
            inbound,
            outbound,
            count_samples,
        };
        let tracer = match Tracer::start(&scope, ttl, &self.traces).await {
            Ok(t) => Arc::new(t),
            Err(why) => {
                tracing::warn!(round, reason = %why, "no rule tracing on this host");
                return Err(why.to_string());
            }
        };
        tracing::info!(
            round,
            table = tracer.table(),
            events = tracer.events(),
            "rule tracing on"
        );
        let (t, cancel, deadline) = (tracer.clone(), cancel.clone(), Instant::now() + ttl);
        tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
            t.stop().await;
        });
        Ok(tracer)
    }
}

impl Shared {
    /// `trace-sources`: marks packets from every address the sources of
    /// this host's paths reported (or the coordinator resolved) in the
    /// round's trace table. A host that does not trace says why in the
    /// reply's note; the round goes on either way.
    pub(super) async fn trace_sources(&self, req: TraceSourcesRequest) -> Response {
        let found = {
            let guard = self.round.lock().unwrap_or_else(|e| e.into_inner());
            guard
                .as_ref()
                .filter(|r| r.id == req.round && !r.cancel.is_cancelled())
                .map(|r| {
                    r.lease.renew();
                    (r.trace.clone(), r.expires)
                })
        };
        let Some((trace, expires)) = found else {
            return error(format!(
                "trace-sources: no round {} on this agent",
                req.round
            ));
        };
        let reply = |pairs, forwarded, note| {
            Response::SourcesTraced(SourcesTraced {
                round: req.round.clone(),
                pairs,
                forwarded,
                note,
            })
        };
        let tracer = match trace {
            None => return reply(0, 0, Some("this agent does not trace".into())),
            Some(Err(why)) => return reply(0, 0, Some(why)),
            Some(Ok(t)) => t,
        };
        let by_host: std::collections::HashMap<&str, Vec<std::net::IpAddr>> = req
            .sources
            .iter()
            .map(|s| {
                let ips = s
                    .addresses
                    .iter()
                    .copied()
                    .filter(|ip| super::addresses::is_source_address(*ip))
                    .collect();
                (s.host.as_str(), ips)
            })
            .collect();
        let host = &self.config.host;
        let mut pairs = Vec::new();
        for p in self
            .config
            .plan
            .paths
            .iter()
            .filter(|p| p.protocol.is_tcp())
        {
            if p.to != *host || p.role.is_none() {
                continue;
            }
            for a in by_host.get(p.from.as_str()).into_iter().flatten() {
                pairs.push((*a, p.port.get()));
            }
        }
        let left = expires.saturating_duration_since(Instant::now());
        let (pairs, mut note) = match tracer.add_inbound(&pairs, left).await {
            Ok(n) => (n, None),
            Err(why) => {
                tracing::warn!(round = %req.round, reason = %why, "could not trace every source address");
                (0, Some(why))
            }
        };
        let triples = forward_triples(&req.forward, &by_host);
        let forwarded = if triples.is_empty() {
            0
        } else {
            match tracer.add_forward(&triples, left).await {
                Ok(n) => n,
                Err(why) => {
                    tracing::warn!(round = %req.round, reason = %why, "could not trace the flows this host forwards");
                    note.get_or_insert(why);
                    0
                }
            }
        };
        reply(pairs, forwarded, note)
    }
}

/// The `source . destination . port` triples of `flows`: every address of
/// each flow's source (`by_host`) of its destination's family.
fn forward_triples(
    flows: &[ForwardFlow],
    by_host: &std::collections::HashMap<&str, Vec<std::net::IpAddr>>,
) -> Vec<nftrace::ForwardTriple> {
    let mut out: Vec<nftrace::ForwardTriple> = flows
        .iter()
        .flat_map(|f| {
            by_host
                .get(f.from.as_str())
                .into_iter()
                .flatten()
                .filter(|a| a.is_ipv6() == f.dest.is_ipv6())
                .map(|a| (*a, f.dest, f.port))
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Ends the round when its lease lapses (the coordinator is gone and
/// nothing renewed it) or its TTL passes, whichever comes first.
async fn watch_lease(
    lease: Arc<Lease>,
    expires: Instant,
    cancel: CancellationToken,
    round: String,
) {
    loop {
        let now = Instant::now();
        if now >= expires {
            // The canaries close themselves at the TTL.
            return;
        }
        match lease.lapses_at() {
            Some(at) if at <= now => {
                tracing::info!(%round, lease_ms = lease.current().as_millis() as u64, "round lease lapsed: the coordinator is gone; closing the canaries");
                cancel.cancel();
                return;
            }
            next => {
                // Re-checked at least every quarter grace: a renewal moves
                // the lapse time later, never earlier.
                let step = lease.grace / 4;
                let wake = next.unwrap_or(now + step).min(now + step).min(expires);
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep_until(wake.max(now + Duration::from_millis(10))) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Arc<Lease> {
        Arc::new(Lease {
            duration: Duration::from_secs(5),
            grace: PREPARED_GRACE,
            probed: AtomicBool::new(false),
            holders: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        })
    }

    /// Watches `lease` as a prepared round does (TTL 90 s) once the
    /// preparing connection has closed, and says when the round ended.
    async fn ended_after(lease: Arc<Lease>) -> Duration {
        drop(lease.hold());
        let cancel = CancellationToken::new();
        let start = Instant::now();
        tokio::spawn(watch_lease(
            lease,
            start + Duration::from_secs(90),
            cancel.clone(),
            "ab12".into(),
        ));
        cancel.cancelled().await;
        start.elapsed()
    }

    #[test]
    fn each_forward_flow_is_traced_from_every_source_address_of_its_family() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let by_host = std::collections::HashMap::from([(
            "client",
            vec![ip("198.18.1.20"), ip("2001:2:0:1::20")],
        )]);
        let flow = |from: &str, dest: &str| ForwardFlow {
            from: from.into(),
            dest: ip(dest),
            port: 7101,
        };
        let triples = forward_triples(
            &[
                flow("client", "2001:2:0:2::40"),
                flow("client", "198.18.2.40"),
                flow("client", "198.18.2.40"),
                // A source the request gave no addresses for: nothing.
                flow("ghost", "198.18.2.40"),
            ],
            &by_host,
        );
        assert_eq!(
            triples,
            [
                (ip("198.18.1.20"), ip("198.18.2.40"), 7101),
                (ip("2001:2:0:1::20"), ip("2001:2:0:2::40"), 7101),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_coordinator_gone_before_its_first_probe_request_ends_the_round_within_the_grace() {
        let ended = ended_after(lease()).await;
        assert!(
            ended <= PREPARED_GRACE + Duration::from_millis(300),
            "{ended:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_first_probe_request_the_whole_lease_applies() {
        let l = lease();
        l.probing();
        let ended = ended_after(l).await;
        assert!(
            ended >= Duration::from_secs(5) && ended <= Duration::from_millis(6300),
            "{ended:?}"
        );
    }
}
