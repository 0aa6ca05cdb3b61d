//! Schedule mode: an agent left running on a host probes that host's
//! outgoing paths against the live services every `--every`, and exports the
//! results as Prometheus metrics, so that Prometheus keeps the history and
//! Alertmanager pages on drift. No coordinator and no certificates are
//! involved.
//!
//! [`Scheduled::start`] loads the plan, picks the host and binds the metrics
//! endpoint; [`Scheduled::run`] then runs rounds (see [`Timing`]) and serves
//! `GET /metrics` and `GET /healthz` until cancelled. A [`ReloadHandle`]
//! re-reads the plan between rounds; a plan that became invalid is logged
//! and the previous one kept.

pub mod arrivals;
mod duration;
mod error;
mod flaps;
mod http;
mod live;
pub mod metrics;
mod quality;
mod sampling;
mod timing;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use duration::{DurationError, parse_duration};
pub use error::ScheduleError;
pub use flaps::{FlapConfig, FlapConfigError, FlapLog, FlapState, FlapTracker};
pub use http::HttpLimits;
pub use metrics::{Exposition, MetricsStore, PathHistory, PathSample, RoundMetrics};
pub use quality::{QualityHistory, RTT_BUCKETS, RttHistogram, SERIES_PER_PATH};
pub use timing::Timing;

use crate::agent::detect_host;
use crate::plan::Plan;
use live::LiveRounds;

/// The shortest period `--every` accepts.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// Everything schedule mode needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// The plan file; re-read on reload.
    pub plan_path: PathBuf,
    /// The plan host this agent plays; `None` finds it among the plan's
    /// hosts by the addresses of this machine.
    pub host: Option<String>,
    /// How often rounds run, and their jitter.
    pub timing: Timing,
    /// Where `/metrics` and `/healthz` are served.
    pub metrics_listen: SocketAddr,
    /// Limits on the HTTP endpoint's clients.
    pub http: HttpLimits,
    /// Probe attempts in flight at once during a round.
    pub probe_concurrency: usize,
    /// When a path counts as flapping.
    pub flaps: FlapConfig,
    /// Quality samples per path per round (`agent --samples`); `None`
    /// takes the plan's `[defaults] samples` (1 by default: none).
    pub samples: Option<u32>,
}

impl ScheduleConfig {
    /// A configuration with the default jitter, HTTP limits and probe
    /// concurrency.
    pub fn new(plan_path: PathBuf, every: Duration, metrics_listen: SocketAddr) -> ScheduleConfig {
        ScheduleConfig {
            plan_path,
            host: None,
            timing: Timing::with_default_jitter(every),
            metrics_listen,
            http: HttpLimits::default(),
            probe_concurrency: 256,
            flaps: FlapConfig::default(),
            samples: None,
        }
    }
}

/// Asks a running [`Scheduled`] to re-read its plan (what SIGHUP does).
#[derive(Debug, Clone)]
pub struct ReloadHandle(Arc<Notify>);

impl ReloadHandle {
    /// Requests a reload; it happens before the next round, or after the
    /// round in progress. Requests made meanwhile collapse into one.
    pub fn reload(&self) {
        self.0.notify_one();
    }
}

/// A schedule-mode agent, bound and ready to run.
pub struct Scheduled {
    rounds: LiveRounds,
    listener: TcpListener,
    timing: Timing,
    http: HttpLimits,
    reload: Arc<Notify>,
}

impl std::fmt::Debug for Scheduled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduled")
            .field("host", &self.rounds.host)
            .field("plan", &self.rounds.plan_path)
            .field("timing", &self.timing)
            .field("metrics", &self.listener.local_addr().ok())
            .finish()
    }
}

impl Scheduled {
    /// Loads the plan, picks the host, sets up the prober and binds the
    /// metrics endpoint. Nothing is probed yet.
    pub async fn start(config: ScheduleConfig) -> Result<Scheduled, ScheduleError> {
        if config.timing.every < MIN_EVERY {
            return Err(ScheduleError::EveryTooShort {
                every: config.timing.every,
            });
        }
        // Only this host's paths are kept (it probes its outgoing ones).
        let plan = Plan::load_scoped(&config.plan_path, &crate::plan::PathScope::Lazy)?;
        let host = match config.host {
            Some(h) => h,
            None => detect_host(&plan)?,
        };
        let plan = plan.scoped(&crate::plan::PathScope::Host(host.clone()));
        let store = Arc::new(MetricsStore::for_plan(&plan.name));
        let mut rounds = LiveRounds::new(
            config.plan_path,
            host,
            Arc::new(plan),
            config.probe_concurrency.max(1),
            store,
            config.flaps,
        )?;
        rounds.samples = config.samples;
        let addr = config.metrics_listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ScheduleError::BindMetrics { addr, source })?;
        Ok(Scheduled {
            rounds,
            listener,
            timing: config.timing,
            http: config.http,
            reload: Arc::new(Notify::new()),
        })
    }

    /// Where `/metrics` is served (useful when bound to port 0).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The plan host this agent plays.
    pub fn host(&self) -> &str {
        &self.rounds.host
    }

    /// The number of paths this host probes each round.
    pub fn outgoing_paths(&self) -> usize {
        self.rounds
            .plan
            .paths
            .iter()
            .filter(|p| p.from == self.rounds.host)
            .count()
    }

    /// The metrics the endpoint serves.
    pub fn store(&self) -> Arc<MetricsStore> {
        self.rounds.store.clone()
    }

    /// A handle that requests plan reloads.
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle(self.reload.clone())
    }

    /// Runs rounds and serves the endpoint until `cancel` fires; returns
    /// promptly then (a round in progress is abandoned, unpublished).
    pub async fn run(self, cancel: CancellationToken) {
        let Scheduled {
            mut rounds,
            listener,
            timing,
            http,
            reload,
        } = self;
        tracing::info!(
            host = %rounds.host,
            every = ?timing.every,
            metrics = ?listener.local_addr().ok(),
            "schedule mode: probing outgoing paths"
        );
        let store = rounds.store.clone();
        let mut rng = timing::Rng::from_entropy();
        tokio::join!(
            timing::drive(timing, &mut rng, &mut rounds, &reload, &cancel),
            http::serve(listener, store, http, cancel.clone()),
        );
    }
}

/// [`Scheduled::start`] then [`Scheduled::run`].
pub async fn run(config: ScheduleConfig, cancel: CancellationToken) -> Result<(), ScheduleError> {
    Scheduled::start(config).await?.run(cancel).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::probe::Observed;
    use crate::report::Verdict;

    fn plan_text(open_port: u16, blocked_port: Option<u16>) -> String {
        let mut s = format!(
            "name = \"schedule-unit\"\n[defaults]\ntimeout_ms = 500\nretries = 0\n\
             [[hosts]]\nname = \"app\"\naddress = \"127.0.0.1\"\n\
             [[hosts]]\nname = \"db\"\naddress = \"127.0.0.2\"\nroles = [\"db\"]\n\
             [roles.db]\nports = [{{ name = \"mysql\", port = {open_port}, offset = false }}]\n\
             [[flows]]\nfrom = \"host:app\"\nto = \"host:db\"\nports = [\"mysql\"]\n"
        );
        if let Some(p) = blocked_port {
            s.push_str(&format!(
                "[[flows]]\nfrom = \"host:app\"\nto = \"host:db\"\nports = [{p}]\nexpect = \"blocked\"\n"
            ));
        }
        s
    }

    fn config(plan: &Path) -> ScheduleConfig {
        let mut c = ScheduleConfig::new(
            plan.to_path_buf(),
            Duration::from_secs(1),
            "127.0.0.1:0".parse().unwrap(),
        );
        c.host = Some("app".into());
        c.timing.jitter = Duration::ZERO;
        c
    }

    async fn until(
        what: &str,
        store: &MetricsStore,
        f: impl Fn(&Exposition) -> bool,
    ) -> Exposition {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let e = store.snapshot();
            if f(&e) {
                return e;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not reached; last {e:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn observed(e: &Exposition) -> Vec<(u16, Observed, Verdict)> {
        e.last_round
            .as_ref()
            .map(|r| {
                r.paths
                    .iter()
                    .map(|p| (p.port.get(), p.observed, p.verdict()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn live_rounds_publish_results_and_an_invalid_reload_keeps_the_plan() {
        let dir = tempfile::tempdir().unwrap();
        let db = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let open = db.local_addr().unwrap().port();
        let closed = std::net::TcpListener::bind("127.0.0.2:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let path = dir.path().join("plan.toml");
        std::fs::write(&path, plan_text(open, None)).unwrap();

        let s = Scheduled::start(config(&path)).await.unwrap();
        assert_eq!((s.host(), s.outgoing_paths()), ("app", 1));
        let store = s.store();
        let reload = s.reload_handle();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(s.run(cancel.clone()));

        let e = until("a first round", &store, |e| e.rounds_total >= 1).await;
        assert_eq!(observed(&e), [(open, Observed::Open, Verdict::Ok)]);

        std::fs::write(&path, "name = \"broken\"\n[[hosts]]\n").unwrap();
        reload.reload();
        let e = until("the failed reload", &store, |e| !e.last_reload_ok).await;
        let n = e.rounds_total;
        let e = until("a round after it", &store, |e| e.rounds_total > n).await;
        assert_eq!(observed(&e), [(open, Observed::Open, Verdict::Ok)]);

        std::fs::write(&path, plan_text(open, Some(closed))).unwrap();
        reload.reload();
        let e = until("the new plan's round", &store, |e| {
            e.last_reload_ok && observed(e).len() == 2
        })
        .await;
        assert_eq!(
            observed(&e),
            [
                (open, Observed::Open, Verdict::Ok),
                (closed, Observed::Refused, Verdict::Error)
            ]
        );

        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("stops within a second")
            .unwrap();
        drop(db);
    }

    #[tokio::test]
    async fn start_rejects_bad_configuration_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.toml");
        std::fs::write(&path, plan_text(3306, None)).unwrap();

        let mut c = config(&path);
        c.timing.every = Duration::from_millis(500);
        let e = Scheduled::start(c).await.unwrap_err();
        assert!(matches!(e, ScheduleError::EveryTooShort { .. }), "{e}");

        let mut c = config(&path);
        c.host = Some("nope".into());
        let e = Scheduled::start(c).await.unwrap_err();
        assert!(
            e.to_string().starts_with("host \"nope\" is not in plan"),
            "{e}"
        );

        // Both plan hosts are loopback addresses, so both are local.
        let mut c = config(&path);
        c.host = None;
        let e = Scheduled::start(c).await.unwrap_err();
        assert!(e.to_string().contains("app, db"), "{e}");

        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = config(&path);
        c.metrics_listen = taken.local_addr().unwrap();
        let e = Scheduled::start(c).await.unwrap_err();
        assert!(matches!(e, ScheduleError::BindMetrics { .. }), "{e}");

        std::fs::write(&path, "name = 3\n").unwrap();
        let e = Scheduled::start(config(&path)).await.unwrap_err();
        assert!(matches!(e, ScheduleError::Plan(_)), "{e}");
    }

    #[test]
    fn error_chain_joins_sources() {
        use crate::error_chain;
        let e = ScheduleError::BindMetrics {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert_eq!(
            error_chain(&e),
            "listen for /metrics on 127.0.0.1:1: address in use"
        );
    }
}
