//! The metrics a schedule-mode agent exports, and their Prometheus text
//! exposition (format 0.0.4), so that Prometheus stores the history of every
//! path and Alertmanager, not portcall, decides when to page.
//!
//! A round's results are rendered once, when the round finishes, and every
//! scrape until the next round serves the same bytes.

use std::io::{self, Write};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::plan::{Expect, Family};
use crate::port::Port;
use crate::probe::Observed;
use crate::report::prometheus::{
    CERT_VERIFIED, CERT_VERIFIED_HELP, PROOF_LEVEL, PROOF_LEVEL_HELP, PathLabels, bool01,
    escape_label, family, path_sample,
};
use crate::report::{TargetEnd, Verdict};

/// One path's result in one round, with the labels it is exported under.
#[derive(Debug, Clone, PartialEq)]
pub struct PathSample {
    /// Source host (this agent's host).
    pub from: String,
    /// Target host.
    pub to: String,
    /// Target port.
    pub port: Port,
    /// The port's name on the target.
    pub service: String,
    /// What the path must do.
    pub expect: Expect,
    /// What the probe saw.
    pub observed: Observed,
    /// Duration of the final attempt.
    /// The final attempt's TCP connect round trip; `None` when it never
    /// connected.
    pub latency: Option<Duration>,
    /// The path's address family, where known.
    pub family: Option<Family>,
    /// When the server certificate of a TLS path expires (Unix seconds),
    /// where a handshake saw one.
    pub cert_not_after: Option<f64>,
    /// Whether that certificate verified (chain to the trust roots in use,
    /// valid for the name or address probed), where a handshake saw one.
    pub cert_verified: Option<bool>,
    /// TCP, TLS or UDP (exported as the `protocol` label for UDP).
    pub protocol: crate::port::Protocol,
    /// How far the planned service was proven, where the path connected.
    pub proof: Option<crate::probe::service::Proof>,
    /// What answered the protocol probe, where anything did.
    pub answer: Option<crate::probe::service::ServiceAnswer>,
    /// The path's series that accumulate over rounds.
    pub history: PathHistory,
}

/// What a path's series carry across rounds, unlike the rest of a
/// [`PathSample`], which is this round's alone: the place for every
/// per-path series computed over rounds, each exported once per path, so
/// that the series count stays linear in paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathHistory {
    /// State changes (ok to violation or back, between measured rounds)
    /// since the agent started probing the path.
    pub flaps_total: u64,
    /// Whether the path has at least `--flap-changes` changes within its
    /// last `--flap-window` rounds.
    pub flapping: bool,
    /// The path's quality samples over the agent's life, while the agent
    /// samples it (`--samples` above 1, a TCP or TLS path); `None` exports
    /// no quality series for it.
    pub quality: Option<super::quality::QualityHistory>,
}

/// The families computed over rounds: state changes and flapping.
fn render_history(out: &mut impl Write, plan: &str, paths: &[PathSample]) -> io::Result<()> {
    family(
        out,
        "portcall_path_flaps_total",
        "State changes of the path since the agent started: its verdict turned from ok to violation or back between two measured rounds (a round without a verdict is skipped, never a change).",
        "counter",
    )?;
    for p in paths {
        let v = p.history.flaps_total.to_string();
        sample(out, "portcall_path_flaps_total", (plan, p), &[], &v)?;
    }

    family(
        out,
        "portcall_path_flapping",
        "1 while the path has changed state at least --flap-changes times (default 3) within its last --flap-window rounds (default 20), else 0.",
        "gauge",
    )?;
    for p in paths {
        let v = bool01(p.history.flapping);
        sample(out, "portcall_path_flapping", (plan, p), &[], v)?;
    }
    let sampled: Vec<_> = paths
        .iter()
        .filter_map(|p| Some((labels(plan, p), p.history.quality.as_ref()?)))
        .collect();
    super::quality::render(out, &sampled)
}

/// The service-proof families: each path's proof level, and what
/// answered its protocol probe as bounded labels.
fn render_proof(out: &mut impl Write, plan: &str, paths: &[PathSample]) -> io::Result<()> {
    family(out, PROOF_LEVEL, PROOF_LEVEL_HELP, "gauge")?;
    for p in paths {
        if let Some(proof) = p.proof {
            sample(out, PROOF_LEVEL, (plan, p), &[], &proof.level().to_string())?;
        }
    }

    family(
        out,
        "portcall_path_service_info",
        "What answered the path's protocol probe: its protocol, product and version as labels (letters, digits and . _ - + only, 32 characters at most); always 1, one series per path.",
        "gauge",
    )?;
    for p in paths {
        if let Some(a) = &p.answer {
            let (protocol, product, version) = (
                fact(Some(&a.protocol)),
                fact(a.product.as_deref()),
                fact(a.version.as_deref()),
            );
            let extra = [
                ("answer_protocol", protocol.as_str()),
                ("product", product.as_str()),
                ("version", version.as_str()),
            ];
            sample(out, "portcall_path_service_info", (plan, p), &extra, "1")?;
        }
    }
    Ok(())
}

/// A banner fact as a label value of bounded size and alphabet (letters,
/// digits, `.`, `_`, `-`, `+`; 32 characters), so that whatever a remote
/// service sends, a path has one info series with short values.
fn fact(v: Option<&str>) -> String {
    v.unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
        .take(32)
        .collect()
}

impl PathSample {
    /// The sample's verdict against its expectation. Schedule mode probes
    /// the live services, never a canary, so [`TargetEnd::Live`]: the same
    /// rule as a `check` path to a port a real service holds.
    pub fn verdict(&self) -> Verdict {
        Verdict::decide(self.expect, Some(self.observed), TargetEnd::Live)
    }
}

/// The results of one completed round.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundMetrics {
    /// The plan's name, the `plan` label of every path series.
    pub plan: String,
    /// When the round finished (wall clock).
    pub finished_at: SystemTime,
    /// How long it took.
    pub duration: Duration,
    /// One sample per outgoing path, in plan order.
    pub paths: Vec<PathSample>,
    /// The quality samples other hosts' agents sent here that arrived,
    /// per incoming path with at least one counted (empty where this host
    /// does not count: see `schedule::arrivals`).
    pub arrived: Vec<super::arrivals::Arrived>,
}

/// Everything `/metrics` shows at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Exposition {
    /// The last completed round, if any.
    pub last_round: Option<RoundMetrics>,
    /// Rounds completed since the agent started.
    pub rounds_total: u64,
    /// Whether the last plan reload (SIGHUP) succeeded; true before any.
    pub last_reload_ok: bool,
    /// The plan's name, the `plan` label of the agent's own series (rounds,
    /// reload) before the first round; the last round's plan after it.
    pub plan: String,
}

impl Exposition {
    /// Writes the Prometheus text exposition (format 0.0.4): every family
    /// with its HELP and TYPE lines, samples in plan order.
    pub fn render(&self, out: &mut impl Write) -> io::Result<()> {
        self.render_paths(out)?;
        self.render_rounds(out)
    }

    /// The per-path families of the last round.
    fn render_paths(&self, out: &mut impl Write) -> io::Result<()> {
        let paths = self.last_round.as_ref().map_or(&[][..], |r| &r.paths[..]);
        let plan = self.last_round.as_ref().map_or("", |r| r.plan.as_str());

        family(
            out,
            "portcall_path_open",
            "1 when the path's last probe completed the TCP (and TLS) handshake, 0 when it did not; absent when the prober could not try.",
            "gauge",
        )?;
        for p in paths.iter().filter(|p| p.observed.is_network_evidence()) {
            sample(
                out,
                "portcall_path_open",
                (plan, p),
                &[],
                bool01(p.observed == Observed::Open),
            )?;
        }

        family(
            out,
            "portcall_path_ok",
            "1 when the path met its expectation (open or blocked) in the last round, else 0 (a violation, or no verdict: the prober could not try, or a refusal that cannot tell a firewall from a stopped service).",
            "gauge",
        )?;
        for p in paths {
            sample(
                out,
                "portcall_path_ok",
                (plan, p),
                &[],
                bool01(p.verdict() == Verdict::Ok),
            )?;
        }

        family(
            out,
            "portcall_path_latency_seconds",
            "TCP connect round trip (SYN to SYN-ACK) of the path's last probe attempt, in seconds, without any TLS handshake; absent when it never connected.",
            "gauge",
        )?;
        for p in paths {
            if let Some(latency) = p.latency {
                let v = latency.as_secs_f64();
                sample(
                    out,
                    "portcall_path_latency_seconds",
                    (plan, p),
                    &[],
                    &v.to_string(),
                )?;
            }
        }

        family(
            out,
            "portcall_path_observed",
            "What the path's last probe saw, as the observed label (open, refused, unreachable, timeout, tls-error, wrong-host, local-error, wrong-service); always 1.",
            "gauge",
        )?;
        for p in paths {
            sample(
                out,
                "portcall_path_observed",
                (plan, p),
                &[("observed", p.observed.as_str())],
                "1",
            )?;
        }

        family(
            out,
            "portcall_tls_cert_not_after_seconds",
            "Unix time at which the server certificate a TLS path presented expires; absent where no TLS handshake saw a certificate.",
            "gauge",
        )?;
        for p in paths {
            if let Some(t) = p.cert_not_after {
                sample(
                    out,
                    "portcall_tls_cert_not_after_seconds",
                    (plan, p),
                    &[],
                    &t.to_string(),
                )?;
            }
        }

        family(out, CERT_VERIFIED, CERT_VERIFIED_HELP, "gauge")?;
        for p in paths {
            if let Some(verified) = p.cert_verified {
                sample(out, CERT_VERIFIED, (plan, p), &[], bool01(verified))?;
            }
        }

        render_proof(out, plan, paths)?;
        render_history(out, plan, paths)?;
        let arrived = self.last_round.as_ref().map_or(&[][..], |r| &r.arrived[..]);
        super::quality::render_arrived(out, plan, arrived)
    }

    /// The agent's families: the last round's time and duration, rounds
    /// done, and whether the last reload worked.
    fn render_rounds(&self, out: &mut impl Write) -> io::Result<()> {
        // Every series carries the plan, so that two plans' agents (or
        // textfiles) on one host never give the same series twice.
        let plan = escape_label(self.last_round.as_ref().map_or(&self.plan, |r| &r.plan));
        family(
            out,
            "portcall_last_round_timestamp_seconds",
            "Unix time at which the last completed round finished; absent before the first round.",
            "gauge",
        )?;
        if let Some(r) = &self.last_round {
            let t = r
                .finished_at
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            writeln!(
                out,
                "portcall_last_round_timestamp_seconds{{plan=\"{plan}\"}} {t}"
            )?;
        }

        family(
            out,
            "portcall_round_duration_seconds",
            "Wall time of the last completed round, in seconds.",
            "gauge",
        )?;
        if let Some(r) = &self.last_round {
            let d = r.duration.as_secs_f64();
            writeln!(
                out,
                "portcall_round_duration_seconds{{plan=\"{plan}\"}} {d}"
            )?;
        }

        family(
            out,
            "portcall_rounds_total",
            "Rounds completed since the agent started.",
            "counter",
        )?;
        writeln!(
            out,
            "portcall_rounds_total{{plan=\"{plan}\"}} {}",
            self.rounds_total
        )?;

        family(
            out,
            "portcall_plan_last_reload_successful",
            "0 when the last plan reload (SIGHUP) failed and the agent kept its previous plan, else 1.",
            "gauge",
        )?;
        writeln!(
            out,
            "portcall_plan_last_reload_successful{{plan=\"{plan}\"}} {}",
            bool01(self.last_reload_ok)
        )
    }

    /// The exposition as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf =
            Vec::with_capacity(256 + 256 * self.last_round.as_ref().map_or(0, |r| r.paths.len()));
        self.render(&mut buf)
            .expect("writing to a Vec<u8> cannot fail");
        buf
    }
}

fn sample(
    out: &mut impl Write,
    name: &str,
    (plan, p): (&str, &PathSample),
    extra: &[(&str, &str)],
    value: &str,
) -> io::Result<()> {
    path_sample(out, name, &labels(plan, p), extra, value)
}

/// The labels of `p`'s series.
fn labels<'a>(plan: &'a str, p: &'a PathSample) -> PathLabels<'a> {
    PathLabels {
        plan,
        from: &p.from,
        to: &p.to,
        port: p.port.get(),
        service: &p.service,
        expect: p.expect,
        family: p.family,
        protocol: p.protocol,
    }
}

/// The agent's current exposition, shared between the scheduler (which
/// replaces it after each round) and the HTTP endpoint (which serves it).
#[derive(Debug)]
pub struct MetricsStore {
    state: RwLock<Shared>,
}

#[derive(Debug)]
struct Shared {
    exposition: Exposition,
    rendered: Arc<[u8]>,
}

impl Default for MetricsStore {
    fn default() -> MetricsStore {
        let exposition = Exposition {
            last_reload_ok: true,
            ..Exposition::default()
        };
        let rendered = exposition.to_bytes().into();
        MetricsStore {
            state: RwLock::new(Shared {
                exposition,
                rendered,
            }),
        }
    }
}

impl MetricsStore {
    /// A store with no round yet.
    pub fn new() -> MetricsStore {
        MetricsStore::default()
    }

    /// A store with no round yet for the plan named `plan` (the `plan`
    /// label of its series before the first round).
    pub fn for_plan(plan: &str) -> MetricsStore {
        let store = MetricsStore::default();
        store.update(|e| e.plan = plan.to_string());
        store
    }

    /// The rendered exposition, as served at `/metrics`.
    pub fn rendered(&self) -> Arc<[u8]> {
        self.read(|s| s.rendered.clone())
    }

    /// A copy of the current exposition.
    pub fn snapshot(&self) -> Exposition {
        self.read(|s| s.exposition.clone())
    }

    /// Publishes a completed round.
    pub fn publish_round(&self, round: RoundMetrics) {
        self.update(|e| {
            e.plan.clone_from(&round.plan);
            e.last_round = Some(round);
            e.rounds_total += 1;
        });
    }

    /// Records whether a plan reload succeeded.
    pub fn set_reload_ok(&self, ok: bool) {
        self.update(|e| e.last_reload_ok = ok);
    }

    fn read<T>(&self, f: impl FnOnce(&Shared) -> T) -> T {
        // A panic while holding the lock cannot leave the exposition
        // half-written (it is replaced whole), so a poisoned lock is safe.
        let guard = self.state.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    fn update(&self, f: impl FnOnce(&mut Exposition)) {
        let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
        f(&mut guard.exposition);
        guard.rendered = guard.exposition.to_bytes().into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::service::Proof;

    fn port(n: u16) -> Port {
        Port::new(n).unwrap()
    }

    fn fixture() -> Exposition {
        let s = |to: &str, p: u16, service: &str, expect, observed, ms| PathSample {
            from: "app-1".into(),
            to: to.into(),
            port: port(p),
            service: service.into(),
            protocol: crate::port::Protocol::Tcp,
            expect,
            observed,
            latency: matches!(
                observed,
                Observed::Open | Observed::TlsError | Observed::WrongHost
            )
            .then(|| Duration::from_micros(ms)),
            family: Some(Family::Ipv4),
            cert_not_after: None,
            cert_verified: None,
            proof: (observed == Observed::Open).then_some(if service == "mysql" {
                Proof::Healthy
            } else {
                Proof::L4
            }),
            // A hostile version string keeps to the label alphabet.
            answer: (service == "mysql").then(|| crate::probe::service::ServiceAnswer {
                protocol: "mysql".into(),
                product: Some("MariaDB".into()),
                version: Some("10.11.6-MariaDB\"} 9\n{x=\"".into()),
                status: Some("greeting".into()),
                detail: String::new(),
            }),
            history: PathHistory {
                flaps_total: if to == "km" { 4 } else { 0 },
                flapping: to == "km",
                quality: None,
            },
        };
        Exposition {
            last_round: Some(RoundMetrics {
                plan: "wso2".into(),
                finished_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
                duration: Duration::from_millis(1500),
                arrived: Vec::new(),
                paths: vec![
                    s("db", 3306, "mysql", Expect::Open, Observed::Open, 250),
                    s(
                        "db",
                        5432,
                        "postgresql",
                        Expect::Open,
                        Observed::Refused,
                        120,
                    ),
                    s(
                        "dmz",
                        22,
                        "22",
                        Expect::Blocked,
                        Observed::Timeout,
                        1_000_000,
                    ),
                    s(
                        "km",
                        9443,
                        "https-servlet",
                        Expect::Open,
                        Observed::TlsError,
                        3_500,
                    ),
                    s(
                        "gw",
                        8243,
                        "nio-https",
                        Expect::Open,
                        Observed::LocalError,
                        0,
                    ),
                ],
            }),
            rounds_total: 3,
            last_reload_ok: false,
            plan: "wso2".into(),
        }
    }

    #[test]
    fn exposition_exact_text_for_a_small_round() {
        let text = String::from_utf8(fixture().to_bytes()).unwrap();
        expect_test::expect![[r##"
            # HELP portcall_path_open 1 when the path's last probe completed the TCP (and TLS) handshake, 0 when it did not; absent when the prober could not try.
            # TYPE portcall_path_open gauge
            portcall_path_open{plan="wso2",from="app-1",to="db",port="3306",service="mysql",expect="open",family="ipv4"} 1
            portcall_path_open{plan="wso2",from="app-1",to="db",port="5432",service="postgresql",expect="open",family="ipv4"} 0
            portcall_path_open{plan="wso2",from="app-1",to="dmz",port="22",service="22",expect="blocked",family="ipv4"} 0
            portcall_path_open{plan="wso2",from="app-1",to="km",port="9443",service="https-servlet",expect="open",family="ipv4"} 0
            # HELP portcall_path_ok 1 when the path met its expectation (open or blocked) in the last round, else 0 (a violation, or no verdict: the prober could not try, or a refusal that cannot tell a firewall from a stopped service).
            # TYPE portcall_path_ok gauge
            portcall_path_ok{plan="wso2",from="app-1",to="db",port="3306",service="mysql",expect="open",family="ipv4"} 1
            portcall_path_ok{plan="wso2",from="app-1",to="db",port="5432",service="postgresql",expect="open",family="ipv4"} 0
            portcall_path_ok{plan="wso2",from="app-1",to="dmz",port="22",service="22",expect="blocked",family="ipv4"} 1
            portcall_path_ok{plan="wso2",from="app-1",to="km",port="9443",service="https-servlet",expect="open",family="ipv4"} 0
            portcall_path_ok{plan="wso2",from="app-1",to="gw",port="8243",service="nio-https",expect="open",family="ipv4"} 0
            # HELP portcall_path_latency_seconds TCP connect round trip (SYN to SYN-ACK) of the path's last probe attempt, in seconds, without any TLS handshake; absent when it never connected.
            # TYPE portcall_path_latency_seconds gauge
            portcall_path_latency_seconds{plan="wso2",from="app-1",to="db",port="3306",service="mysql",expect="open",family="ipv4"} 0.00025
            portcall_path_latency_seconds{plan="wso2",from="app-1",to="km",port="9443",service="https-servlet",expect="open",family="ipv4"} 0.0035
            # HELP portcall_path_observed What the path's last probe saw, as the observed label (open, refused, unreachable, timeout, tls-error, wrong-host, local-error, wrong-service); always 1.
            # TYPE portcall_path_observed gauge
            portcall_path_observed{plan="wso2",from="app-1",to="db",port="3306",service="mysql",expect="open",family="ipv4",observed="open"} 1
            portcall_path_observed{plan="wso2",from="app-1",to="db",port="5432",service="postgresql",expect="open",family="ipv4",observed="refused"} 1
            portcall_path_observed{plan="wso2",from="app-1",to="dmz",port="22",service="22",expect="blocked",family="ipv4",observed="timeout"} 1
            portcall_path_observed{plan="wso2",from="app-1",to="km",port="9443",service="https-servlet",expect="open",family="ipv4",observed="tls-error"} 1
            portcall_path_observed{plan="wso2",from="app-1",to="gw",port="8243",service="nio-https",expect="open",family="ipv4",observed="local-error"} 1
            # HELP portcall_tls_cert_not_after_seconds Unix time at which the server certificate a TLS path presented expires; absent where no TLS handshake saw a certificate.
            # TYPE portcall_tls_cert_not_after_seconds gauge
            # HELP portcall_tls_cert_verified 1 when the server certificate a TLS path presented verified (its chain against the trust roots in use, and its name or address), 0 when it did not; absent where no TLS handshake saw a certificate.
            # TYPE portcall_tls_cert_verified gauge
            # HELP portcall_path_proof_level How far the path proved the planned service: 1 l4 (the connection completed), 2 identified (the planned protocol answered), 3 healthy (its own ready answer was read); absent where nothing connected.
            # TYPE portcall_path_proof_level gauge
            portcall_path_proof_level{plan="wso2",from="app-1",to="db",port="3306",service="mysql",expect="open",family="ipv4"} 3
            # HELP portcall_path_service_info What answered the path's protocol probe: its protocol, product and version as labels (letters, digits and . _ - + only, 32 characters at most); always 1, one series per path.
            # TYPE portcall_path_service_info gauge
            portcall_path_service_info{plan="wso2",from="app-1",to="db",port="3306",service="mysql",expect="open",family="ipv4",answer_protocol="mysql",product="MariaDB",version="10.11.6-MariaDB9x"} 1
            # HELP portcall_path_flaps_total State changes of the path since the agent started: its verdict turned from ok to violation or back between two measured rounds (a round without a verdict is skipped, never a change).
            # TYPE portcall_path_flaps_total counter
            portcall_path_flaps_total{plan="wso2",from="app-1",to="db",port="3306",service="mysql",expect="open",family="ipv4"} 0
            portcall_path_flaps_total{plan="wso2",from="app-1",to="db",port="5432",service="postgresql",expect="open",family="ipv4"} 0
            portcall_path_flaps_total{plan="wso2",from="app-1",to="dmz",port="22",service="22",expect="blocked",family="ipv4"} 0
            portcall_path_flaps_total{plan="wso2",from="app-1",to="km",port="9443",service="https-servlet",expect="open",family="ipv4"} 4
            portcall_path_flaps_total{plan="wso2",from="app-1",to="gw",port="8243",service="nio-https",expect="open",family="ipv4"} 0
            # HELP portcall_path_flapping 1 while the path has changed state at least --flap-changes times (default 3) within its last --flap-window rounds (default 20), else 0.
            # TYPE portcall_path_flapping gauge
            portcall_path_flapping{plan="wso2",from="app-1",to="db",port="3306",service="mysql",expect="open",family="ipv4"} 0
            portcall_path_flapping{plan="wso2",from="app-1",to="db",port="5432",service="postgresql",expect="open",family="ipv4"} 0
            portcall_path_flapping{plan="wso2",from="app-1",to="dmz",port="22",service="22",expect="blocked",family="ipv4"} 0
            portcall_path_flapping{plan="wso2",from="app-1",to="km",port="9443",service="https-servlet",expect="open",family="ipv4"} 1
            portcall_path_flapping{plan="wso2",from="app-1",to="gw",port="8243",service="nio-https",expect="open",family="ipv4"} 0
            # HELP portcall_last_round_timestamp_seconds Unix time at which the last completed round finished; absent before the first round.
            # TYPE portcall_last_round_timestamp_seconds gauge
            portcall_last_round_timestamp_seconds{plan="wso2"} 1700000000.25
            # HELP portcall_round_duration_seconds Wall time of the last completed round, in seconds.
            # TYPE portcall_round_duration_seconds gauge
            portcall_round_duration_seconds{plan="wso2"} 1.5
            # HELP portcall_rounds_total Rounds completed since the agent started.
            # TYPE portcall_rounds_total counter
            portcall_rounds_total{plan="wso2"} 3
            # HELP portcall_plan_last_reload_successful 0 when the last plan reload (SIGHUP) failed and the agent kept its previous plan, else 1.
            # TYPE portcall_plan_last_reload_successful gauge
            portcall_plan_last_reload_successful{plan="wso2"} 0
        "##]]
        .assert_eq(&text);
    }

    /// The issue: no metric said that a TLS path's certificate did not
    /// verify, so no rule could alert on it.
    #[test]
    fn tls_paths_export_whether_their_certificate_verified() {
        let mut e = fixture();
        let paths = &mut e.last_round.as_mut().unwrap().paths;
        paths[0].cert_not_after = Some(1_893_456_000.0);
        paths[0].cert_verified = Some(true);
        paths[3].cert_not_after = Some(1_893_456_000.0);
        paths[3].cert_verified = Some(false);
        let text = String::from_utf8(e.to_bytes()).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("portcall_tls_cert_verified"))
            .collect();
        assert_eq!(
            lines,
            [
                r#"portcall_tls_cert_verified{plan="wso2",from="app-1",to="db",port="3306",service="mysql",expect="open",family="ipv4"} 1"#,
                r#"portcall_tls_cert_verified{plan="wso2",from="app-1",to="km",port="9443",service="https-servlet",expect="open",family="ipv4"} 0"#,
            ],
            "{text}"
        );
        assert!(text.contains("# TYPE portcall_tls_cert_verified gauge\n"));
    }

    #[test]
    fn before_the_first_round_only_counters_have_samples() {
        let store = MetricsStore::for_plan("wso2");
        let text = String::from_utf8(store.rendered().to_vec()).unwrap();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "portcall_rounds_total{plan=\"wso2\"} 0",
                "portcall_plan_last_reload_successful{plan=\"wso2\"} 1"
            ]
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            crate::report::prometheus::escape_label(r#"a"b\c"#),
            r#"a\"b\\c"#
        );
        assert_eq!(crate::report::prometheus::escape_label("x\ny"), "x\\ny");
        let mut e = fixture();
        e.last_round.as_mut().unwrap().paths[0].service = "my\"sql\n".into();
        let text = String::from_utf8(e.to_bytes()).unwrap();
        assert!(
            text.contains(r#"service="my\"sql\n",expect="open",family="ipv4"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn store_publishes_rounds_and_reload_state() {
        let store = MetricsStore::new();
        let round = fixture().last_round.unwrap();
        store.publish_round(round.clone());
        store.publish_round(round);
        store.set_reload_ok(false);
        let snap = store.snapshot();
        assert_eq!(snap.rounds_total, 2);
        assert!(!snap.last_reload_ok);
        assert_eq!(&*store.rendered(), &snap.to_bytes()[..]);
    }

    #[test]
    fn verdicts_of_live_probes() {
        use Expect::{Blocked, Open};
        let cases = [
            (Observed::Open, Open, Verdict::Ok),
            (Observed::Open, Blocked, Verdict::Violation),
            // A refusal without a canary: a firewall's reset or a stopped
            // service, so no verdict either way (as in `check`).
            (Observed::Refused, Open, Verdict::Error),
            (Observed::Refused, Blocked, Verdict::Error),
            (Observed::Unreachable, Blocked, Verdict::Ok),
            (Observed::Timeout, Blocked, Verdict::Ok),
            (Observed::Timeout, Open, Verdict::Violation),
            (Observed::TlsError, Open, Verdict::Violation),
            (Observed::TlsError, Blocked, Verdict::Violation),
            (Observed::WrongHost, Blocked, Verdict::Violation),
            (Observed::LocalError, Open, Verdict::Error),
            (Observed::LocalError, Blocked, Verdict::Error),
        ];
        for (o, e, v) in cases {
            assert_eq!(
                Verdict::decide(e, Some(o), TargetEnd::Live),
                v,
                "{o} expecting {e}"
            );
        }
    }
}
