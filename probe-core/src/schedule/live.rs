//! One schedule-mode round against the live services: this host's outgoing
//! paths, probed from its own address with the plan's timeouts, published
//! to the metrics store; and plan reloads that never replace a good plan
//! with a bad one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::arrivals::{self, Arrived, Counter};
use super::error::ScheduleError;
use super::flaps::{FlapConfig, FlapLog, FlapTracker};
use super::metrics::{MetricsStore, PathHistory, PathSample, RoundMetrics};
use super::quality::QualityHistory;
use super::sampling::{self, Sampling, Taken};
use super::timing::Rounds;
use crate::agent::{AgentError, local_ip};
use crate::plan::{Address, Expect, Family, Path, Plan};
use crate::port::Protocol;
use crate::probe::service::{Proof, ServiceExchange, ServicePlan, sweep_proving};
use crate::probe::{Host, ProbeConfig, Prober, SweepLimits, Target};
use crate::report::Verdict;

/// The state of a schedule-mode agent between rounds.
pub(crate) struct LiveRounds {
    pub(crate) plan_path: PathBuf,
    pub(crate) host: String,
    pub(crate) plan: Arc<Plan>,
    pub(crate) prober: Prober,
    /// Proves the planned service of each path (`probe::service`) and
    /// leaves it politely.
    pub(crate) greeter: Arc<ServiceExchange>,
    pub(crate) concurrency: usize,
    pub(crate) store: Arc<MetricsStore>,
    /// Each path's last verdict, to log changes rather than every round.
    last: HashMap<PathKey, Verdict>,
    /// Each path's last answering product and version, to log a service
    /// that changed version between rounds.
    banners: HashMap<PathKey, Banner>,
    /// How many state changes within how many rounds make a path flap.
    flap_config: FlapConfig,
    /// Each path's state changes across rounds. Keyed with the
    /// expectation too: a reload that turns a must-be-open path into a
    /// must-be-blocked one starts new series, not a state change.
    flaps: HashMap<(PathKey, Expect), FlapTracker>,
    /// Quality samples per path per round (`agent --samples`); `None`
    /// takes the plan's `[defaults] samples`. 1 or less samples nothing.
    pub(crate) samples: Option<u32>,
    /// This host's addresses of this machine, the samples' sources.
    sources: Vec<std::net::IpAddr>,
    /// Each sampled path's samples over the agent's life, keyed as
    /// `flaps` (its series carry the expectation too).
    quality: HashMap<(PathKey, Expect), QualityHistory>,
    /// The count of other hosts' samples arriving here, once a sampling
    /// round started it (`None` before, or where this host cannot count).
    arrivals: Option<Counter>,
    /// Whether the count was tried (once per agent), and whether a reload
    /// changed the paths it counts since.
    arrivals_tried: bool,
    arrivals_stale: bool,
    /// The last counts read (kept when a read fails).
    arrived: Vec<Arrived>,
}

/// The product and version a service's answer named.
type Banner = (Option<String>, Option<String>);

/// "changed from X to Y" when a path's service answered with another
/// product or version than in the last round that it answered; `None` on
/// the first answer, an unchanged one, or a round without an answer.
fn banner_change(before: Option<&Banner>, now: &Banner) -> Option<String> {
    let before = before?;
    let words = |(p, v): &Banner| match (p, v) {
        (Some(p), Some(v)) => format!("{p} {v}"),
        (Some(p), None) => p.clone(),
        (None, Some(v)) => v.clone(),
        (None, None) => "no version".to_owned(),
    };
    (before != now).then(|| format!("changed from {} to {}", words(before), words(now)))
}

/// A path's whole identity within one host's outgoing paths: a dual-stack
/// pair, or a TCP and a UDP path on one port, are different paths.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PathKey {
    from: String,
    to: String,
    address: Address,
    family: Option<Family>,
    port: u16,
    protocol: Protocol,
}

impl PathKey {
    fn of(p: &Path) -> PathKey {
        PathKey {
            from: p.from.clone(),
            to: p.to.clone(),
            address: p.address.clone(),
            family: p.family,
            port: p.port.get(),
            protocol: p.protocol,
        }
    }
}

impl LiveRounds {
    pub(crate) fn new(
        plan_path: PathBuf,
        host: String,
        plan: Arc<Plan>,
        concurrency: usize,
        store: Arc<MetricsStore>,
        flap_config: FlapConfig,
    ) -> Result<LiveRounds, ScheduleError> {
        let (prober, greeter) = prober_for(&plan, &host, concurrency)?;
        let sources = sources_of(&plan, &host);
        Ok(LiveRounds {
            plan_path,
            host,
            plan,
            prober,
            greeter,
            concurrency,
            store,
            last: HashMap::new(),
            banners: HashMap::new(),
            flap_config,
            flaps: HashMap::new(),
            samples: None,
            sources,
            quality: HashMap::new(),
            arrivals: None,
            arrivals_tried: false,
            arrivals_stale: false,
            arrived: Vec::new(),
        })
    }

    /// The samples each path takes this round: `--samples`, else the
    /// plan's default, within [`crate::probe::samples::MAX_SAMPLES`].
    fn samples_per_path(&self) -> u32 {
        crate::probe::samples::clamp(self.samples.unwrap_or(self.plan.defaults.samples))
    }

    /// Takes this round's samples of the paths whose probe connected (TCP
    /// and TLS) or was answered (UDP to DNS), when the round samples;
    /// `None` when it does not.
    async fn sample(
        &self,
        paths: &[Path],
        connected: &[Option<std::net::SocketAddr>],
        cancel: &CancellationToken,
    ) -> Option<Vec<Option<Taken>>> {
        let n = self.samples_per_path();
        if n <= 1 {
            return None;
        }
        let targets: Vec<Option<(std::net::SocketAddr, bool)>> = paths
            .iter()
            .zip(connected)
            .map(|(p, c)| {
                c.filter(|_| sampled(p))
                    .map(|c| (c, p.protocol == Protocol::Udp))
            })
            .collect();
        let s = Sampling {
            samples: n,
            sources: self.sources.clone(),
            timeout: Duration::from_millis(self.plan.defaults.timeout_ms),
            concurrency: self.concurrency,
        };
        Some(sampling::take(&s, &targets, cancel).await)
    }

    /// Adds this round's samples to each path's quality history and puts
    /// it on the path's sample: every sampled path of a sampling round
    /// ([`sampled`]) has one (zero until its probe first connects), other
    /// UDP paths none.
    fn account(
        &mut self,
        out: &mut [PathSample],
        paths: &[Path],
        taken: Option<Vec<Option<Taken>>>,
    ) {
        let Some(taken) = taken else { return };
        for ((s, p), t) in out.iter_mut().zip(paths).zip(taken) {
            if !sampled(p) {
                continue;
            }
            let q = self.quality.entry((PathKey::of(p), p.expect)).or_default();
            if let Some(t) = t {
                q.add(t.sent, &t.rtts_us);
            }
            s.history.quality = Some(*q);
        }
    }

    /// Reads how many of the samples other hosts' agents sent here arrived
    /// (counted since [`Self::prepare_arrivals`] made the table).
    async fn count_arrivals(&mut self) {
        if let Some(c) = &self.arrivals
            && let Some(now) = c.read().await
        {
            self.arrived = now;
        }
    }

    /// Starts counting the samples other hosts' agents send here, from the
    /// first round that samples (an agent that samples is one whose peers
    /// do, with the plan's `[defaults] samples`) while the plan has paths
    /// into this host, or follows a reloaded plan; before the round's
    /// probes, so that the samples of a peer whose round begins with this
    /// agent's are counted from the first (a table made after this agent's
    /// first round missed a peer's first samples).
    async fn prepare_arrivals(&mut self) {
        if !self.arrivals_tried && self.samples_per_path() > 1 {
            // A host no plan path samples into holds no table.
            let paths = arrivals::incoming(&self.plan, &self.host, local_ip);
            if !paths.is_empty() {
                self.arrivals_tried = true;
                self.arrivals_stale = false;
                self.arrivals = Counter::start(paths).await;
            }
        }
        if self.arrivals_stale {
            self.arrivals_stale = false;
            if let Some(c) = self.arrivals.as_mut() {
                c.set_paths(arrivals::incoming(&self.plan, &self.host, local_ip))
                    .await;
            }
        }
    }

    fn outgoing(&self) -> Vec<&Path> {
        self.plan
            .paths
            .iter()
            .filter(|p| p.from == self.host)
            .collect()
    }

    /// Follows each path across rounds: logs a service whose version
    /// changed, a verdict that changed (unless the path is flapping, which
    /// is logged once for the whole episode) and a path that starts or
    /// stops flapping; fills in each sample's [`PathHistory`]. Returns how
    /// many paths are ok.
    fn follow(&mut self, samples: &mut [PathSample], paths: &[Path]) -> usize {
        let mut ok = 0usize;
        for (s, p) in samples.iter_mut().zip(paths) {
            let key = PathKey::of(p);
            if let Some(a) = &s.answer {
                let now = (a.product.clone(), a.version.clone());
                if let Some(change) = banner_change(self.banners.get(&key), &now) {
                    tracing::warn!(
                        "path {} -> {}:{} ({}): the {} service {change}",
                        s.from,
                        s.to,
                        p.port,
                        s.service,
                        a.protocol
                    );
                }
                self.banners.insert(key.clone(), now);
            }
            let verdict = s.verdict();
            if verdict == Verdict::Ok {
                ok += 1;
            }
            let tracker = self
                .flaps
                .entry((key.clone(), p.expect))
                .or_insert_with(|| FlapTracker::new(self.flap_config));
            let flap_log = tracker.observe(verdict.into());
            s.history = PathHistory {
                flaps_total: tracker.total(),
                flapping: tracker.flapping(),
                quality: None,
            };
            let name = format!("path {} -> {}:{} ({})", s.from, s.to, p.port, s.service);
            match flap_log {
                Some(FlapLog::Started) => log_flapping(&name, s, tracker),
                Some(FlapLog::Stopped) => tracing::info!(
                    "{name} stopped flapping: fewer than {} state changes within the last {} rounds for {} rounds in a row; now {}",
                    tracker.config().changes(),
                    tracker.config().window(),
                    tracker.config().window(),
                    match verdict {
                        Verdict::Ok => "ok",
                        Verdict::Violation => "a violation",
                        Verdict::Error => "without a verdict",
                    },
                ),
                None => {}
            }
            let held_back = tracker.announced();
            let before = self.last.insert(key, verdict);
            if before != Some(verdict) && (verdict != Verdict::Ok || before.is_some()) && !held_back
            {
                let msg = format!("{name} expected {}: observed {}", s.expect, s.observed);
                match verdict {
                    Verdict::Ok => tracing::info!("{msg}, ok again"),
                    Verdict::Violation => tracing::warn!("{msg}, violation"),
                    Verdict::Error => tracing::warn!("{msg}, could not probe"),
                }
            }
        }
        ok
    }

    fn try_reload(&self) -> Result<(Arc<Plan>, Probing), ScheduleError> {
        let plan = Plan::load_scoped(
            &self.plan_path,
            &crate::plan::PathScope::Host(self.host.clone()),
        )?;
        let prober = prober_for(&plan, &self.host, self.concurrency)?;
        Ok((Arc::new(plan), prober))
    }
}

/// A prober and the greeting exchange it runs.
pub(crate) type Probing = (Prober, Arc<ServiceExchange>);

/// The probe engine for `host`'s rounds: the plan's timeouts and retries,
/// and the host's plan address as source when it is an address of this
/// machine (behind NAT it is not, and the kernel picks the source); it
/// greets live services that speak first.
pub(crate) fn prober_for(
    plan: &Plan,
    host: &str,
    concurrency: usize,
) -> Result<Probing, ScheduleError> {
    let Some(h) = plan.host(host) else {
        return Err(ScheduleError::Host(AgentError::unknown_host(plan, host)));
    };
    let timeout = Duration::from_millis(plan.defaults.timeout_ms);
    let config = probe_config(plan, h, concurrency);
    let greeter = Arc::new(ServiceExchange::new(Vec::new(), timeout / 2, None));
    Ok((Prober::with_exchange(config, greeter.clone())?, greeter))
}

/// The probe engine's configuration for `host`'s schedule-mode rounds: the
/// one place schedule mode assembles it. Unlike an agent's round, no TTL
/// walk (its result would reach no metric, and it would add its budget and
/// its packets to every period's silent paths) and no spread offset (each
/// agent runs on its own jittered timer, not in step with the others).
fn probe_config(plan: &Plan, host: &crate::plan::Host, concurrency: usize) -> ProbeConfig {
    let sources = host.addresses.iter().filter_map(local_ip).collect();
    let limits = SweepLimits {
        concurrency,
        ..SweepLimits::default()
    };
    ProbeConfig {
        spread_offset: 0,
        ttl_walk: None,
        ..ProbeConfig::for_plan_host(plan, &host.name, sources, limits)
    }
}

/// The one `warn` line of a path that started flapping: what it did, the
/// thresholds, its recent rounds, and that nothing more follows until it
/// has been steady for a window.
fn log_flapping(name: &str, s: &PathSample, tracker: &FlapTracker) {
    let config = tracker.config();
    tracing::warn!(
        "{name} expected {} is flapping: {} state changes within the last {} rounds \
         (k = {}, W = {}); recent rounds, oldest first: {} (. ok, x violation, ? no \
         verdict); logged again only once it has not flapped for {} rounds",
        s.expect,
        tracker.recent_changes(),
        config.window(),
        config.changes(),
        config.window(),
        tracker.recent(),
        config.window(),
    );
}

/// Whether schedule mode samples `p`: every TCP or TLS path, a UDP path
/// to DNS ([`crate::probe::live_samples::sampled_service`]).
fn sampled(p: &Path) -> bool {
    p.protocol != Protocol::Udp
        || crate::probe::live_samples::sampled_service(p.port.get()).is_some()
}

/// `host`'s plan addresses that are addresses of this machine.
fn sources_of(plan: &Plan, host: &str) -> Vec<std::net::IpAddr> {
    plan.host(host)
        .map(|h| h.addresses.iter().filter_map(local_ip).collect())
        .unwrap_or_default()
}

fn target_of(path: &Path) -> Target {
    Target::new(Host::from(&path.address), path.port, path.protocol)
}

impl Rounds for LiveRounds {
    async fn round(&mut self, cancel: &CancellationToken) {
        self.prepare_arrivals().await;
        let paths: Vec<Path> = self.outgoing().into_iter().cloned().collect();
        let targets = paths.iter().map(target_of).collect();
        self.greeter.set_plans(
            paths
                .iter()
                .map(|p| ServicePlan::of(p.service_kind, &p.service, &p.to))
                .collect(),
        );
        let started = Instant::now();
        let results = sweep_proving(&self.prober, &self.greeter, targets, cancel).await;
        if cancel.is_cancelled() {
            return;
        }
        let connected: Vec<Option<std::net::SocketAddr>> = results
            .iter()
            .map(|r| {
                r.address
                    .filter(|_| r.observed == crate::probe::Observed::Open)
            })
            .collect();
        let taken = self.sample(&paths, &connected, cancel).await;
        if cancel.is_cancelled() {
            return;
        }
        let mut samples: Vec<PathSample> = paths
            .iter()
            .zip(results)
            .enumerate()
            .map(|(k, (p, r))| (p, r, self.greeter.check(k)))
            .map(|(p, r, check)| PathSample {
                from: p.from.clone(),
                to: p.to.clone(),
                port: p.port,
                service: p.service.clone(),
                protocol: p.protocol,
                expect: p.expect,
                observed: r.observed,
                latency: r.connect_time,
                family: p.family,
                cert_not_after: r
                    .cert
                    .as_ref()
                    .and_then(|c| crate::report::unix_seconds(&c.not_after)),
                cert_verified: r.cert.as_ref().map(|c| c.verified),
                proof: check
                    .as_ref()
                    .map(|c| c.proof)
                    .or_else(|| r.connect_time.map(|_| Proof::L4)),
                answer: check.and_then(|c| c.answer),
                history: PathHistory::default(),
            })
            .collect();
        let duration = started.elapsed();
        let ok = self.follow(&mut samples, &paths);
        self.account(&mut samples, &paths, taken);
        self.count_arrivals().await;
        tracing::info!(
            host = %self.host,
            paths = samples.len(),
            ok,
            not_ok = samples.len() - ok,
            duration_ms = duration.as_millis() as u64,
            "round finished"
        );
        self.store.publish_round(RoundMetrics {
            plan: self.plan.name.clone(),
            finished_at: SystemTime::now(),
            duration,
            paths: samples,
            arrived: self.arrived.clone(),
        });
    }

    fn reload(&mut self) {
        match self.try_reload() {
            Ok((plan, (prober, greeter))) => {
                self.sources = sources_of(&plan, &self.host);
                self.plan = plan;
                self.prober = prober;
                self.greeter = greeter;
                // Paths that left the plan must not be logged as changes
                // if they come back later.
                let keep: std::collections::HashSet<PathKey> =
                    self.outgoing().into_iter().map(PathKey::of).collect();
                self.last.retain(|k, _| keep.contains(k));
                self.banners.retain(|k, _| keep.contains(k));
                let keep_flaps: std::collections::HashSet<(PathKey, Expect)> = self
                    .outgoing()
                    .into_iter()
                    .map(|p| (PathKey::of(p), p.expect))
                    .collect();
                self.flaps.retain(|k, _| keep_flaps.contains(k));
                self.quality.retain(|k, _| keep_flaps.contains(k));
                self.arrivals_stale = true;
                self.store.set_reload_ok(true);
                tracing::info!(
                    plan = %self.plan_path.display(),
                    host = %self.host,
                    paths = keep.len(),
                    "plan reloaded"
                );
            }
            Err(e) => {
                self.store.set_reload_ok(false);
                tracing::error!(
                    "reload plan {}: {}; keeping the previous plan",
                    self.plan_path.display(),
                    crate::error_chain(&e)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_that_changes_version_between_rounds_is_noticed_once() {
        let b = |v: &str| (Some("RabbitMQ".to_owned()), Some(v.to_owned()));
        assert_eq!(banner_change(None, &b("3.10.8")), None, "a first answer");
        assert_eq!(banner_change(Some(&b("3.10.8")), &b("3.10.8")), None);
        assert_eq!(
            banner_change(Some(&b("3.10.8")), &b("3.12.1")).as_deref(),
            Some("changed from RabbitMQ 3.10.8 to RabbitMQ 3.12.1")
        );
    }

    /// Regression: schedule mode keyed each path's last verdict by (target,
    /// port) only, so a TCP and a UDP path on one port (or a dual-stack
    /// pair) shared one entry and each round logged the other's verdict as
    /// a change.
    #[tokio::test]
    async fn paths_sharing_a_port_keep_their_own_last_verdict() {
        let port = std::net::TcpListener::bind("127.0.0.2:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let text = format!(
            "name = \"schedule-keys\"\n[defaults]\ntimeout_ms = 200\nretries = 0\n\
             [[hosts]]\nname = \"app\"\naddress = \"127.0.0.1\"\n\
             [[hosts]]\nname = \"db\"\naddress = \"127.0.0.2\"\nroles = [\"db\"]\n\
             [roles.db]\nports = [\n\
               {{ name = \"sql\", port = {port}, offset = false }},\n\
               {{ name = \"sql-udp\", port = {port}, protocol = \"udp\", offset = false }},\n\
             ]\n\
             [[flows]]\nfrom = \"host:app\"\nto = \"host:db\"\nports = [\"sql\", \"sql-udp\"]\n"
        );
        let plan = Arc::new(Plan::parse(&text, "keys.toml").unwrap());
        let mut rounds = LiveRounds::new(
            "keys.toml".into(),
            "app".into(),
            plan,
            4,
            Arc::new(MetricsStore::new()),
            FlapConfig::default(),
        )
        .unwrap();
        assert_eq!(rounds.outgoing().len(), 2);
        rounds.round(&CancellationToken::new()).await;
        assert_eq!(
            rounds.last.len(),
            2,
            "one entry per path: {:?}",
            rounds.last
        );
    }

    /// The must-show's clean side with real rounds: 500 rounds against a
    /// steady loopback service (driven back to back, not on the timer)
    /// count no state change and never flag the path.
    #[tokio::test]
    async fn five_hundred_clean_rounds_report_no_flap() {
        let listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in listener.incoming().take(10_000) {
                drop(s);
            }
        });
        let text = format!(
            "name = \"schedule-clean\"\n[defaults]\ntimeout_ms = 500\nretries = 0\n\
             [[hosts]]\nname = \"app\"\naddress = \"127.0.0.1\"\n\
             [[hosts]]\nname = \"db\"\naddress = \"127.0.0.2\"\nroles = [\"db\"]\n\
             [roles.db]\nports = [{{ name = \"svc\", port = {port}, offset = false }}]\n\
             [[flows]]\nfrom = \"host:app\"\nto = \"host:db\"\nports = [\"svc\"]\n"
        );
        let plan = Arc::new(Plan::parse(&text, "clean.toml").unwrap());
        let store = Arc::new(MetricsStore::new());
        let mut rounds = LiveRounds::new(
            "clean.toml".into(),
            "app".into(),
            plan,
            4,
            store.clone(),
            FlapConfig::default(),
        )
        .unwrap();
        let cancel = CancellationToken::new();
        for _ in 0..500 {
            rounds.round(&cancel).await;
        }
        let e = store.snapshot();
        assert_eq!(e.rounds_total, 500);
        let sample = &e.last_round.as_ref().unwrap().paths[0];
        assert_eq!(sample.verdict(), Verdict::Ok, "{sample:?}");
        assert_eq!(sample.history, PathHistory::default());
        let text = String::from_utf8(store.rendered().to_vec()).unwrap();
        let labels = format!(
            "{{plan=\"schedule-clean\",from=\"app\",to=\"db\",port=\"{port}\",service=\"svc\",expect=\"open\",family=\"ipv4\"}}"
        );
        assert!(
            text.contains(&format!("portcall_path_flaps_total{labels} 0\n"))
                && text.contains(&format!("portcall_path_flapping{labels} 0\n")),
            "{text}"
        );
    }

    /// Issue 27 in schedule mode: real rounds on loopback, each taking N
    /// connect-only samples of the open path; its counters grow by N a
    /// round, its histogram counts every answer, and a path whose probe
    /// does not connect is never sampled (its series stay at zero).
    #[tokio::test]
    async fn sampling_rounds_add_n_samples_a_round_and_the_histogram_counts_the_answers() {
        let listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let open = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in listener.incoming().take(10_000) {
                drop(s);
            }
        });
        let closed = std::net::TcpListener::bind("127.0.0.2:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let text = format!(
            "name = \"schedule-samples\"\n[defaults]\ntimeout_ms = 500\nretries = 0\nsamples = 3\n\
             [[hosts]]\nname = \"app\"\naddress = \"127.0.0.1\"\n\
             [[hosts]]\nname = \"db\"\naddress = \"127.0.0.2\"\nroles = [\"db\"]\n\
             [roles.db]\nports = [{{ name = \"svc\", port = {open}, offset = false }}]\n\
             [[flows]]\nfrom = \"host:app\"\nto = \"host:db\"\nports = [\"svc\"]\n\
             [[flows]]\nfrom = \"host:app\"\nto = \"host:db\"\nports = [{closed}]\nexpect = \"blocked\"\n"
        );
        let plan = Arc::new(Plan::parse(&text, "samples.toml").unwrap());
        let store = Arc::new(MetricsStore::new());
        let mut rounds = LiveRounds::new(
            "samples.toml".into(),
            "app".into(),
            plan,
            4,
            store.clone(),
            FlapConfig::default(),
        )
        .unwrap();
        assert_eq!(rounds.samples_per_path(), 3, "the plan's default");
        const N: u64 = 20;
        rounds.samples = Some(N as u32);
        let cancel = CancellationToken::new();
        for round in 1..=5u64 {
            rounds.round(&cancel).await;
            let e = store.snapshot();
            let paths = &e.last_round.as_ref().unwrap().paths;
            let q = paths[0].history.quality.expect("the open path is sampled");
            assert_eq!((q.sent, q.answered), (N * round, N * round), "{q:?}");
            assert_eq!(q.rtt.count(), q.answered);
            assert_eq!(q.rtt.cumulative()[11], q.answered, "all below 2.5 s");
            assert!(q.rtt.sum_seconds() > 0.0);
            let refused = paths[1]
                .history
                .quality
                .expect("a TCP path of a sampling round");
            assert_eq!(
                refused,
                QualityHistory::default(),
                "not sampled: it did not open"
            );
        }
        let text = String::from_utf8(store.rendered().to_vec()).unwrap();
        let labels = format!(
            "{{plan=\"schedule-samples\",from=\"app\",to=\"db\",port=\"{open}\",service=\"svc\",expect=\"open\",family=\"ipv4\"}}"
        );
        for line in [
            format!("portcall_path_samples_sent_total{labels} 100\n"),
            format!("portcall_path_samples_answered_total{labels} 100\n"),
            format!("portcall_path_rtt_seconds_count{labels} 100\n"),
        ] {
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(
            !text.contains("portcall_path_samples_arrived_total{"),
            "never guessed: {text}"
        );

        // Without --samples and with the plan's default of 1, nothing is
        // sampled and no quality family is exported.
        rounds.samples = Some(1);
        rounds.round(&cancel).await;
        let text = String::from_utf8(store.rendered().to_vec()).unwrap();
        assert!(!text.contains("portcall_path_samples_"), "{text}");
        assert!(!text.contains("portcall_path_rtt_seconds"), "{text}");
    }

    /// The log lines `follow` writes, captured.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The log-once rule as the agent applies it: a path lost one round in
    /// ten for 200 rounds, then steady, gets its first drop's two change
    /// lines, one "is flapping" line, nothing for the 37 changes after it,
    /// and one "stopped flapping" line; its series count every change.
    #[tokio::test]
    async fn a_flapping_path_is_logged_once_and_its_changes_are_held_back() {
        let text = "name = \"schedule-flaps\"\n\
             [[hosts]]\nname = \"app\"\naddress = \"127.0.0.1\"\n\
             [[hosts]]\nname = \"db\"\naddress = \"127.0.0.2\"\nroles = [\"db\"]\n\
             [roles.db]\nports = [{ name = \"svc\", port = 3306, offset = false }]\n\
             [[flows]]\nfrom = \"host:app\"\nto = \"host:db\"\nports = [\"svc\"]\n";
        let plan = Arc::new(Plan::parse(text, "flaps.toml").unwrap());
        let paths: Vec<Path> = plan.paths.clone();
        let mut rounds = LiveRounds::new(
            "flaps.toml".into(),
            "app".into(),
            plan,
            1,
            Arc::new(MetricsStore::new()),
            FlapConfig::default(),
        )
        .unwrap();
        let p = &paths[0];
        let sample = |observed| PathSample {
            from: p.from.clone(),
            to: p.to.clone(),
            port: p.port,
            service: p.service.clone(),
            protocol: p.protocol,
            expect: p.expect,
            observed,
            latency: None,
            family: p.family,
            cert_not_after: None,
            cert_verified: None,
            proof: None,
            answer: None,
            history: PathHistory::default(),
        };
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let mut history = Vec::new();
        tracing::subscriber::with_default(subscriber, || {
            for round in 1..=300 {
                let lost = round <= 200 && round % 10 == 0;
                let mut samples = [sample(if lost {
                    crate::probe::Observed::Timeout
                } else {
                    crate::probe::Observed::Open
                })];
                rounds.follow(&mut samples, &paths);
                history.push(samples[0].history);
            }
        });
        let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 4, "{log}");
        let expected = [
            (" WARN ", "observed timeout, violation"),
            (" INFO ", "observed open, ok again"),
            (
                " WARN ",
                "is flapping: 3 state changes within the last 20 rounds",
            ),
            (" INFO ", "stopped flapping"),
        ];
        for (line, (level, words)) in lines.iter().zip(expected) {
            assert!(line.contains(level) && line.contains(words), "{log}");
        }
        assert!(lines[3].ends_with("; now ok"), "{log}");
        // Flagged at round 20, until the changes of rounds 190 and 191 have
        // left the window (round 211).
        let flagged: Vec<usize> = (1..=300).filter(|&r| history[r - 1].flapping).collect();
        assert_eq!((flagged[0], flagged[flagged.len() - 1]), (20, 210));
        assert_eq!(history[299].flaps_total, 40);
    }
}
