//! The control endpoint's request handling: authenticating a connection,
//! serving its frames under the per-connection limits, and dispatching
//! each request to the round's phases (`prepare`, `probe`, evidence,
//! teardown, renew).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::endpoint::{Bucket, Refusal, Ticket};
use super::{Lease, LeaseHold, Shared, error, nftrace};
use crate::control::{
    EvidenceReply, FrameError, HelloReply, PROTOCOL_VERSION, RenewReply, Request, Response,
    RoundRef, ServerSecurity, read_frame, write_frame,
};

/// The least time without an acknowledgement after which a coordinator's
/// connection is taken for dead (`TCP_USER_TIMEOUT`; the lease when
/// longer): long enough for seven retransmissions of a lost reply.
const DEAD_PEER_AFTER: Duration = Duration::from_secs(20);

impl Shared {
    /// Authenticates a new connection within the handshake deadline: mutual
    /// TLS and the coordinator's name, or (with `--insecure`, loopback
    /// only) the first bytes of a request.
    pub(super) async fn authenticate(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Option<Box<dyn crate::probe::ProbeStream>> {
        let limits = &self.config.limits;
        let refusals = &self.admission.refusals;
        let config = match &self.config.security {
            ServerSecurity::Insecure => {
                // No handshake to wait for: the first request must arrive
                // within the same deadline instead.
                let mut first = [0u8; 1];
                let spoke = timeout(limits.handshake_timeout, tcp.peek(&mut first)).await;
                if !matches!(spoke, Ok(Ok(n)) if n > 0) {
                    refusals.note(Refusal::Handshake, peer.ip());
                    return None;
                }
                return self
                    .config
                    .security
                    .accept(tcp, limits.handshake_timeout)
                    .await
                    .ok();
            }
            ServerSecurity::Mtls(config) => config.clone(),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let mut tls = match timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                // Only a certificate of our own CA gets as far as its usage,
                // so this cannot be used to flood the log.
                if let Some(why) =
                    crate::pki::refused_client_certificate(&e, &self.config.coordinator)
                {
                    tracing::warn!(%peer, "control connection refused: {why}");
                }
                refusals.note(Refusal::Handshake, peer.ip());
                return None;
            }
            Err(_) => {
                refusals.note(Refusal::Handshake, peer.ip());
                return None;
            }
        };
        let names = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(crate::pki::certificate_names)
            .unwrap_or_default();
        if let Err(e) = crate::pki::authorize_coordinator(&names, &self.config.coordinator) {
            refusals.note(Refusal::NotCoordinator, peer.ip());
            let reply = error(e.to_string());
            if timeout(limits.write_timeout, write_frame(&mut tls, &reply))
                .await
                .is_ok_and(|r| r.is_ok())
            {
                linger(&mut tls).await;
            }
            return None;
        }
        Some(Box::new(tls))
    }

    pub(super) async fn connection(
        self: &Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        ticket: &Ticket,
    ) {
        let limits = &self.config.limits;
        let _ = tcp.set_nodelay(true);
        // Keepalive probes an idle coordinator connection, so that a
        // coordinator host that vanished (no FIN) releases the round's
        // lease within seconds.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(2))
            .with_interval(Duration::from_secs(1))
            .with_retries(3);
        let sock = socket2::SockRef::from(&tcp);
        let _ = sock.set_tcp_keepalive(&keepalive);
        // Declared dead only after this long without an acknowledgement:
        // under heavy loss (30% each way) a reply's retransmissions back
        // off to 6 s apart, and keepalive probes fail half the time, so a
        // live coordinator must not be taken for a vanished one within a
        // few seconds (the round's lease would lapse mid-probe). A
        // coordinator that exits closes its connection at once anyway.
        let _ = sock.set_tcp_user_timeout(Some(limits.lease.max(DEAD_PEER_AFTER)));
        // A client that has sent something is handshaking, not idle:
        // idle strangers are shed before it (see `Admission::admit`).
        if !matches!(
            timeout(limits.handshake_timeout, tcp.readable()).await,
            Ok(Ok(()))
        ) {
            self.admission.refusals.note(Refusal::Handshake, peer.ip());
            return;
        }
        ticket.spoke();
        let Some(stream) = self.authenticate(tcp, peer).await else {
            return;
        };
        self.admission.authenticated(ticket);
        let mut io = BufReader::with_capacity(8 * 1024, stream);
        self.serve(&mut io, &peer, Some(peer.ip())).await;
    }

    /// Answers requests on `io` until the client closes it, stays silent
    /// past the idle timeout, or sends what cannot be answered.
    /// Refusals are counted against `peer_ip` where the client has one.
    pub(super) async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        self: &Arc<Self>,
        io: &mut BufReader<S>,
        peer: &(dyn std::fmt::Display + Sync),
        peer_ip: Option<IpAddr>,
    ) {
        let limits = &self.config.limits;
        let note = |r: Refusal| {
            if let Some(ip) = peer_ip {
                self.admission.refusals.note(r, ip);
            }
        };
        let mut bucket = Bucket::new(limits.request_burst, limits.requests_per_second);
        let mut malformed = 0u32;
        // Dropped with the connection: the lease then runs down.
        let mut _lease_hold: Option<LeaseHold> = None;
        loop {
            let frame = timeout(
                limits.idle_timeout,
                read_frame::<Request, _>(io, limits.max_request_bytes),
            )
            .await;
            let (reply, keep) = match frame {
                Err(_) => return,
                Ok(Err(FrameError::Closed | FrameError::Truncated | FrameError::Io(_))) => return,
                Ok(Err(e @ FrameError::TooLarge { .. })) => {
                    note(Refusal::Malformed);
                    (error(e.to_string()), false)
                }
                Ok(Err(e)) => {
                    // Malformed frames spend the budget like requests, and
                    // a few of them end the connection.
                    malformed += 1;
                    note(Refusal::Malformed);
                    let _ = bucket.take();
                    (
                        error(crate::error_chain(&e)),
                        malformed < limits.max_malformed,
                    )
                }
                Ok(Ok(request)) => {
                    if bucket.take() {
                        let prepares = matches!(request, Request::Prepare(_));
                        let reply = self.handle_watching(request, io).await;
                        let Some(reply) = reply else {
                            // The coordinator went away mid-request.
                            return;
                        };
                        if prepares && matches!(reply, Response::Prepared(_)) {
                            _lease_hold = self.current_lease().map(|l| l.hold());
                        }
                        (reply, true)
                    } else {
                        note(Refusal::RateLimited);
                        (
                            error("rate limit: too many requests, slow down".into()),
                            true,
                        )
                    }
                }
            };
            if let Response::Error(e) = &reply {
                tracing::debug!(%peer, message = %e.message, "control request refused");
            }
            match timeout(limits.write_timeout, write_frame(io, &reply)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    note(Refusal::WriteTimeout);
                    return;
                }
            }
            if !keep {
                linger(io).await;
                return;
            }
        }
    }

    /// Handles `request` while watching the connection: when the client
    /// closes it (a coordinator killed mid-request), the request is dropped
    /// and `None` returned. A pipelined frame stays buffered for later.
    pub(super) async fn handle_watching<S: tokio::io::AsyncRead + Unpin>(
        self: &Arc<Self>,
        request: Request,
        io: &mut BufReader<S>,
    ) -> Option<Response> {
        let handling = self.handle(request);
        tokio::pin!(handling);
        let mut watching = true;
        loop {
            tokio::select! {
                reply = &mut handling => return Some(reply),
                more = io.fill_buf(), if watching => match more {
                    Ok([]) | Err(_) => return None,
                    Ok(_) => watching = false,
                },
            }
        }
    }

    pub(super) fn current_lease(&self) -> Option<Arc<Lease>> {
        let guard = self.round.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().map(|r| r.lease.clone())
    }

    /// Renews the lease of round `id` when it is the current one.
    pub(super) fn renew(&self, id: &str) -> bool {
        let guard = self.round.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(r) if r.id == id && !r.cancel.is_cancelled() => {
                r.lease.renew();
                true
            }
            _ => false,
        }
    }

    pub(super) async fn handle(self: &Arc<Self>, request: Request) -> Response {
        match request {
            Request::Hello => Response::Hello(HelloReply {
                host: self.config.host.clone(),
                plan: self.config.plan.name.clone(),
                plan_digest: self.digest.clone(),
                version: PROTOCOL_VERSION,
                plan_file: Some(self.config.plan.source.to_string()),
            }),
            Request::Prepare(req) => self.prepare(req).await,
            Request::Probe(req) => {
                if self.renew(&req.round)
                    && let Some(lease) = self.current_lease()
                {
                    lease.probing();
                }
                self.probe(req).await
            }
            Request::Renew(r) => {
                // A coordinator that renews is alive and past `prepare`
                // (a target gets no `probe` request): the whole lease.
                if self.renew(&r.round) {
                    if let Some(lease) = self.current_lease() {
                        lease.probing();
                    }
                    Response::Renewed(RenewReply {
                        round: r.round,
                        lease_ms: u64::try_from(self.config.limits.lease.as_millis())
                            .unwrap_or(u64::MAX),
                    })
                } else {
                    error(format!("renew: no live round {} on this agent", r.round))
                }
            }
            Request::Evidence(r) => {
                self.renew(&r.round);
                let found = {
                    let guard = self.round.lock().unwrap_or_else(|e| e.into_inner());
                    guard
                        .as_ref()
                        .filter(|round| round.id == r.round)
                        .map(|round| {
                            (
                                round.log.clone(),
                                round.handshakes.clone(),
                                round.trace.clone(),
                            )
                        })
                };
                let Some((log, handshakes, trace)) = found else {
                    return error(format!("evidence: no round {} on this agent", r.round));
                };
                // Reading the kernel's tables blocks: off the runtime's
                // workers.
                let watched = handshakes.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    watched.refresh();
                    watched.finish();
                })
                .await;
                let (trace, syn_samples) = match trace {
                    None => (None, None),
                    Some(Ok(tracer)) => (
                        Some(tracer.evidence().await),
                        if tracer.counts_samples {
                            super::syn_samples::read(tracer.table()).await
                        } else {
                            None
                        },
                    ),
                    Some(Err(why)) => (Some(nftrace::unavailable(why)), None),
                };
                Response::Evidence(EvidenceReply {
                    round: r.round,
                    canaries: log.snapshot(),
                    handshakes: handshakes.snapshot(),
                    trace,
                    syn_samples,
                })
            }
            Request::TraceSources(r) => self.trace_sources(r).await,
            Request::Teardown(r) => {
                self.end_round(Some(&r.round)).await;
                Response::TornDown(RoundRef { round: r.round })
            }
            Request::State => Response::State(super::state::collect(&self.config).await),
        }
    }

    /// Stops the current round's rule tracing, if any, and waits until its
    /// monitor is ended and its table deleted (idempotent).
    pub(super) async fn stop_trace(&self) {
        let tracer = {
            let guard = self.round.lock().unwrap_or_else(|e| e.into_inner());
            guard
                .as_ref()
                .and_then(|r| r.trace.as_ref())
                .and_then(|t| t.as_ref().ok())
                .cloned()
        };
        if let Some(t) = tracer {
            t.stop().await;
        }
    }

    /// Cancels the current round's canaries (only round `id`, when given) and
    /// waits briefly for their ports to be released.
    pub(super) async fn end_round(&self, id: Option<&str>) {
        let (cancel, tracker) = {
            let guard = self.round.lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_ref() {
                Some(r) if id.is_none_or(|id| id == r.id) => (r.cancel.clone(), r.tracker.clone()),
                _ => return,
            }
        };
        cancel.cancel();
        tracker.close();
        let _ = timeout(self.config.limits.canary_timeout, tracker.wait()).await;
    }
}

/// Closes our side, then reads and discards what the client still sends
/// for a moment (bounded in bytes and time), so that closing with unread
/// input does not reset the connection before the client reads our last
/// reply.
async fn linger<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(io: &mut S) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = io.shutdown().await;
    let mut buf = [0u8; 8192];
    let mut left: usize = 1 << 20;
    let _ = timeout(Duration::from_secs(1), async {
        while left > 0 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}
