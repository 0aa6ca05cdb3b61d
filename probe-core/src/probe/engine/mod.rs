//! The sweep engine: probes many targets at once within a fixed concurrency,
//! a deadline per phase, and a retry schedule that respects how targets
//! rate-limit their ICMP errors, so that every outcome it reports is exact.
//!
//! [`Prober::sweep`] resolves the targets ([`crate::probe::resolve`]), runs
//! the [`scheduler`] loop, which owns all per-target state, hands single
//! attempts ([`attempt`]: [`connect`], then [`tls_phase`] and the caller's
//! exchange) to tasks and asks [`retry`] what each outcome makes of its
//! target, pacing each address ([`pacing`]); then it walks the TTL toward
//! the targets that stayed silent ([`walk`]). [`config`] holds
//! [`ProbeConfig`].

mod attempt;
mod budget;
mod config;
mod connect;
mod icmp_count;
mod loss;
mod pacing;
mod report;
mod retry;
mod scheduler;
mod shared;
mod slot;
mod stored;
mod tls_phase;
mod walk;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use config::{DEFAULT_PER_HOST, ProbeConfig, ROUND_LOSS_RETRIES, SweepLimits};
pub use stored::SweepResults;
pub use walk::WALK_BUDGET;

use super::error::ProbeError;
use super::exchange::Exchange;
use super::outcome::{Observed, ProbeResult};
use super::resolve::{self, FamilyPreference};
use super::target::Target;
use super::tls::TlsClient;
use super::udp_service::UdpOptions;
use retry::Verdict;
use scheduler::{Scheduler, finished};
use shared::Shared;
use slot::Slot;
use stored::Stored;

/// The probe engine. Cheap to clone; clones share the TLS client.
#[derive(Clone)]
pub struct Prober {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober")
            .field("config", &self.shared.config)
            .field("exchange", &self.shared.exchange.is_some())
            .finish()
    }
}

impl Prober {
    /// An engine for `config`. Fails on configuration that can never work
    /// (an unreadable `--ca` file, zero concurrency).
    pub fn new(config: ProbeConfig) -> Result<Prober, ProbeError> {
        Prober::build(config, None, UdpOptions::default())
    }

    /// An engine that runs `exchange` on every connected stream before
    /// closing it (the agents' canary nonce exchange).
    pub fn with_exchange(
        config: ProbeConfig,
        exchange: Arc<dyn Exchange>,
    ) -> Result<Prober, ProbeError> {
        Prober::build(config, Some(exchange), UdpOptions::default())
    }

    /// An engine with `exchange` (when given) for TCP streams and `udp` for
    /// the live requests sent to UDP targets (an SNMP community).
    pub fn with_udp(
        config: ProbeConfig,
        exchange: Option<Arc<dyn Exchange>>,
        udp: UdpOptions,
    ) -> Result<Prober, ProbeError> {
        Prober::build(config, exchange, udp)
    }

    fn build(
        config: ProbeConfig,
        exchange: Option<Arc<dyn Exchange>>,
        udp: UdpOptions,
    ) -> Result<Prober, ProbeError> {
        if config.concurrency == 0 || config.per_host_concurrency == 0 {
            return Err(ProbeError::ZeroConcurrency);
        }
        let tls = TlsClient::new(&config.tls)?;
        Ok(Prober {
            shared: Arc::new(Shared {
                config,
                tls,
                exchange,
                udp,
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &ProbeConfig {
        &self.shared.config
    }

    /// Probes one target.
    pub async fn probe(&self, target: Target) -> ProbeResult {
        let mut results = self
            .sweep(vec![target], &CancellationToken::new(), |_, _| {})
            .await;
        results.pop().expect("one target gives one result")
    }

    /// Probes every target and returns their results in the same order.
    /// `on_result` is called as each target finishes (for progress
    /// display), with its index. When `cancel` fires, attempts in flight are
    /// abandoned and unfinished targets are `local-error` ("cancelled").
    pub async fn sweep<F>(
        &self,
        targets: Vec<Target>,
        cancel: &CancellationToken,
        on_result: F,
    ) -> Vec<ProbeResult>
    where
        F: FnMut(usize, &ProbeResult) + Send,
    {
        self.sweep_kept(targets, cancel, on_result).await.into_vec()
    }

    /// [`Prober::sweep`], with the results as the sweep keeps them: most
    /// of a large sweep's as a few numbers each, every [`ProbeResult`]
    /// built when it is read (see [`SweepResults`]).
    pub async fn sweep_kept<F>(
        &self,
        targets: Vec<Target>,
        cancel: &CancellationToken,
        mut on_result: F,
    ) -> SweepResults
    where
        F: FnMut(usize, &ProbeResult) + Send,
    {
        let config = &self.shared.config;
        let targets: Arc<[Target]> = targets.into();
        let preference = FamilyPreference::for_sources(config.source, &config.sources);
        let resolved =
            resolve::resolve_targets(&targets, config.resolve_timeout, &preference, cancel)
                .await
                .into_iter()
                .map(|r| r.map_err(|e| e.to_string()))
                .collect();
        let mut scheduler = Scheduler::new(
            self.shared.clone(),
            targets.clone(),
            resolved,
            &mut on_result,
        );
        scheduler.run(cancel, &mut on_result).await;
        let (mut results, slots, addrs) = scheduler.close();
        if let (Some(walk), false) = (config.ttl_walk, cancel.is_cancelled()) {
            walk::walk_silent(&mut results, walk, config, cancel).await;
        }
        let kept = results
            .into_iter()
            .zip(slots.into_iter().zip(addrs))
            .enumerate()
            .map(|(i, (result, (slot, addr)))| match result {
                Some(r) => r,
                None => {
                    let verdict = Verdict::new(
                        Observed::LocalError,
                        "cancelled before a result".to_string(),
                        None,
                    );
                    let slot = slot.map_or_else(
                        || Slot {
                            addr,
                            ..Slot::default()
                        },
                        |s| *s,
                    );
                    let r = finished(&targets[i], &slot, verdict);
                    on_result(i, &r);
                    Stored::keep(r)
                }
            })
            .collect();
        SweepResults::new(targets, kept)
    }
}

#[cfg(test)]
mod tests {
    //! The typed evidence of a result (errno, silence) beside its detail
    //! text, on loopback.

    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use socket2::{Domain, Socket, Type};

    use super::*;
    use crate::port::{Port, Protocol};
    use crate::probe::outcome::Silence;
    use crate::probe::target::Host;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn target(port: u16) -> Target {
        Target {
            host: Host::Ip(LOCALHOST),
            port: Port::new(port).unwrap(),
            protocol: Protocol::Tcp,
            server_name: None,
        }
    }

    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap().port()
    }

    /// A listener whose accept queue is full: Linux drops further SYNs,
    /// which is silence on loopback.
    fn silent_listener() -> (socket2::Socket, std::net::TcpStream, u16) {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::new(LOCALHOST, 0).into()).unwrap();
        s.listen(0).unwrap();
        let port = s.local_addr().unwrap().as_socket().unwrap().port();
        let filler = std::net::TcpStream::connect((LOCALHOST, port)).unwrap();
        (s, filler, port)
    }

    async fn sweep(config: ProbeConfig, targets: Vec<Target>) -> Vec<ProbeResult> {
        Prober::new(config)
            .unwrap()
            .sweep(targets, &CancellationToken::new(), |_, _| {})
            .await
    }

    #[tokio::test]
    async fn a_refused_port_carries_its_errno_and_no_silence() {
        let r = &sweep(ProbeConfig::default(), vec![target(closed_port())]).await[0];
        assert_eq!(r.observed, Observed::Refused, "{r:?}");
        assert_eq!(r.errno, Some(libc::ECONNREFUSED));
        assert_eq!(r.silence, None);
        assert_eq!(r.detail, "ECONNREFUSED (connection refused)");
    }

    #[tokio::test]
    async fn a_silent_port_carries_the_fixed_deadline_it_waited() {
        let (_listener, _filler, port) = silent_listener();
        let config = ProbeConfig {
            connect_timeout: Duration::from_millis(200),
            retries: 0,
            adaptive: false,
            ..ProbeConfig::default()
        };
        let r = &sweep(config, vec![target(port)]).await[0];
        assert_eq!(r.observed, Observed::Timeout, "{r:?}");
        assert_eq!(r.errno, None);
        assert_eq!(
            r.silence,
            Some(Silence {
                waited_ms: 200,
                adaptive: false,
                possibly_rate_limited: false,
            })
        );
        assert_eq!(r.detail, "no answer within 200 ms (1 attempt)");
    }

    /// Other ports of the host answer: the silent one gives up after the
    /// adaptive deadline, which the typed silence says, with the same
    /// number the detail names.
    #[tokio::test]
    async fn an_adaptive_silence_says_so_and_names_the_deadline_of_the_text() {
        let (_listener, _filler, silent) = silent_listener();
        let open = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
        let mut targets = vec![target(silent), target(open.local_addr().unwrap().port())];
        targets.extend((0..20).map(|_| target(closed_port())));
        let config = ProbeConfig {
            connect_timeout: Duration::from_millis(3000),
            retries: 0,
            ..ProbeConfig::default()
        };
        let results = sweep(config, targets).await;
        let r = &results[0];
        assert_eq!(r.observed, Observed::Timeout, "{r:?}");
        assert!(r.detail.contains("adaptive timeout"), "{}", r.detail);
        let silence = r.silence.expect("a timeout carries its silence");
        assert!(silence.adaptive);
        assert!(silence.waited_ms < 3000, "{silence:?}");
        assert!(
            r.detail
                .starts_with(&format!("no answer within {} ms", silence.waited_ms)),
            "{} vs {silence:?}",
            r.detail
        );
        assert_eq!(r.errno, None);
        assert_eq!(results[1].observed, Observed::Open);
        assert_eq!((results[1].errno, results[1].silence), (None, None));
    }

    /// A port silent through its attempts while nothing of its host has
    /// answered yet awaits the host's other ports; one answering later
    /// (here: one attempt at a time, the second port freed meanwhile)
    /// makes it try again with the loss retries, all of them on so few
    /// trials, before it is `timeout`.
    #[tokio::test]
    async fn a_silence_awaits_its_host_and_gets_the_loss_retries_once_it_answers() {
        let (_listener, _filler, silent) = silent_listener();
        let (later, later_filler, later_port) = silent_listener();
        let freed = std::thread::spawn(move || {
            // Well before the silent port's two attempts (1 s) are over.
            std::thread::sleep(Duration::from_millis(300));
            // Room in the accept queue: the next SYN is answered.
            let accepted = later.accept().unwrap();
            (later, later_filler, accepted)
        });
        let config = ProbeConfig {
            connect_timeout: Duration::from_millis(500),
            retries: 1,
            loss_retries: 10,
            concurrency: 1,
            ..ProbeConfig::default()
        };
        let results = sweep(config, vec![target(silent), target(later_port)]).await;
        let _keep = freed.join().unwrap();
        assert_eq!(results[1].observed, Observed::Open, "{:?}", results[1]);
        let r = &results[0];
        assert_eq!(r.observed, Observed::Timeout, "{r:?}");
        assert_eq!(r.attempts, 12, "{r:?}");

        // Nothing of the host ever answers: the plan's attempts only.
        let (_a, _fa, one) = silent_listener();
        let (_b, _fb, two) = silent_listener();
        let config = ProbeConfig {
            connect_timeout: Duration::from_millis(100),
            retries: 1,
            loss_retries: 10,
            ..ProbeConfig::default()
        };
        for r in sweep(config, vec![target(one), target(two)]).await {
            assert_eq!((r.observed, r.attempts), (Observed::Timeout, 2), "{r:?}");
        }
    }

    /// A connect that answers at once gives its host's round trip then,
    /// while what follows it (here a TLS handshake the port never answers)
    /// goes on: a silent port of the same host waits the adaptive
    /// deadline that round trip gives, not until the other attempt's end.
    #[tokio::test]
    async fn a_round_trip_counts_from_the_connect_not_from_the_attempts_end() {
        let (_listener, _filler, silent) = silent_listener();
        let mute = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
        let tls = Target {
            protocol: Protocol::Tls,
            ..target(mute.local_addr().unwrap().port())
        };
        let config = ProbeConfig {
            connect_timeout: Duration::from_millis(3000),
            tls_timeout: Duration::from_millis(1500),
            retries: 0,
            ..ProbeConfig::default()
        };
        let results = sweep(config, vec![target(silent), tls]).await;
        let r = &results[0];
        assert_eq!(r.observed, Observed::Timeout, "{r:?}");
        assert!(r.latency < Duration::from_millis(1000), "{r:?}");
        assert_eq!(r.silence.map(|s| s.adaptive), Some(true), "{r:?}");
        assert_ne!(results[1].observed, Observed::Open, "{:?}", results[1]);
    }

    #[tokio::test]
    async fn a_local_error_carries_its_errno_when_one_decided_it() {
        let bad_source = ProbeConfig {
            source: Some("198.18.0.99".parse().unwrap()),
            ..ProbeConfig::default()
        };
        let r = &sweep(bad_source, vec![target(closed_port())]).await[0];
        assert_eq!(r.observed, Observed::LocalError, "{r:?}");
        assert_eq!(r.errno, Some(libc::EADDRNOTAVAIL));
        assert_eq!(r.silence, None);
        assert!(
            r.detail.starts_with("bind source 198.18.0.99: "),
            "{}",
            r.detail
        );

        let other_family = ProbeConfig {
            source: Some("::1".parse().unwrap()),
            ..ProbeConfig::default()
        };
        let r = &sweep(other_family, vec![target(closed_port())]).await[0];
        assert_eq!(r.observed, Observed::LocalError, "{r:?}");
        assert_eq!((r.errno, r.silence), (None, None));
        assert!(r.detail.contains("address family"), "{}", r.detail);
    }
}
