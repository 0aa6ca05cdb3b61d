//! Agents, the control channel and whole rounds on loopback, no root
//! needed. Each test plays its plan on its own 127.0.4N.0/24 block so the
//! tests can run at once without touching each other's ports.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use probe_core::agent::{Agent, AgentConfig, AgentLimits};
use probe_core::control::{
    self, ClientSecurity, ControlError, ListenerState, PrepareRequest, ProbeRequest, Request,
    Response, RoundRef, ServerSecurity,
};
use probe_core::pki::{self, Authority, COORDINATOR, IssueRequest, TlsIdentity};
use probe_core::plan::{Address, Plan};
use probe_core::probe::Observed;
use probe_core::report::{AgentState, PathReport, Report, TargetStage, Verdict};
use probe_core::round::{self, RoundConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A three-host plan on 127.0.`net`.0/24: `web` (no roles) reaches `app`
/// over TCP and TLS, `app` reaches `db`, and `web` must not reach `db`.
fn plan(net: u8, extra_flows: &str) -> Plan {
    let src = format!(
        r#"
name = "loopback-{net}"
[defaults]
timeout_ms = 400
retries = 0
[[hosts]]
name = "web"
address = "127.0.{net}.1"
[[hosts]]
name = "app"
address = "127.0.{net}.2"
roles = ["app"]
[[hosts]]
name = "db"
address = "127.0.{net}.3"
roles = ["db"]
[roles.app]
ports = [
  {{ name = "http", port = 18080, offset = false }},
  {{ name = "https", port = 18443, protocol = "tls", offset = false }},
]
[roles.db]
ports = [{{ name = "sql", port = 13306, offset = false }}]
[[flows]]
name = "web to app"
from = "host:web"
to = "host:app"
ports = ["http", "https"]
[[flows]]
name = "app to db"
from = "host:app"
to = "host:db"
ports = ["sql"]
[[flows]]
name = "web never reaches db"
from = "host:web"
to = "host:db"
ports = ["sql"]
expect = "blocked"
{extra_flows}
"#
    );
    Plan::parse(&src, &format!("loopback-{net}.toml")).unwrap()
}

/// A PKI directory made with the same functions `portcall pki` uses: the
/// CA, one certificate per host (IP SAN = its plan address), and the
/// coordinator's.
fn pki_dir(plan: &Plan) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    pki::init(dir.path(), false).unwrap();
    for h in &plan.hosts {
        let mut req = IssueRequest::new(h.name.as_str());
        if let Address::Ip(ip) = h.address {
            req.ips.push(ip);
        }
        pki::issue(dir.path(), &req, false).unwrap();
    }
    pki::issue(dir.path(), &IssueRequest::new(COORDINATOR), false).unwrap();
    dir
}

fn ip_of(plan: &Plan, host: &str) -> IpAddr {
    match plan.host(host).unwrap().address {
        Address::Ip(ip) => ip,
        Address::Dns(_) => unreachable!("test plans use addresses"),
    }
}

/// Agents of a plan running in this process until dropped.
struct Agents {
    endpoints: BTreeMap<String, SocketAddr>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Agents {
    async fn start(plan: &Arc<Plan>, pki: &Path, hosts: &[&str]) -> Agents {
        Agents::start_with(plan, pki, hosts, |_| AgentLimits::default()).await
    }

    /// [`Agents::start`] with each host's limits from `limits`.
    async fn start_with(
        plan: &Arc<Plan>,
        pki: &Path,
        hosts: &[&str],
        limits: impl Fn(&str) -> AgentLimits,
    ) -> Agents {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut endpoints = BTreeMap::new();
        for host in hosts {
            let id = TlsIdentity::load(pki, host).unwrap();
            let config = AgentConfig {
                plan: plan.clone(),
                host: (*host).to_string(),
                security: ServerSecurity::Mtls(id.control_server_config().unwrap()),
                canary_tls: id.canary_server_config().unwrap(),
                listen: Some(SocketAddr::new(ip_of(plan, host), 0)),
                coordinator: COORDINATOR.to_string(),
                limits: limits(host),
                rule_trace: false,
            };
            let agent = Agent::bind(config).await.unwrap();
            endpoints.insert((*host).to_string(), agent.local_addr());
            tracker.spawn(agent.run(cancel.clone()));
        }
        Agents {
            endpoints,
            cancel,
            tracker,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

fn coordinator(pki: &Path) -> ClientSecurity {
    ClientSecurity::Mtls(TlsIdentity::load(pki, COORDINATOR).unwrap())
}

fn path<'a>(r: &'a Report, from: &str, to: &str, port: u16) -> &'a PathReport {
    r.paths
        .iter()
        .find(|p| p.from == from && p.to == to && p.port == port)
        .unwrap_or_else(|| panic!("no path {from} -> {to}:{port}"))
}

fn config(endpoints: &BTreeMap<String, SocketAddr>) -> RoundConfig {
    RoundConfig {
        connect_timeout: Duration::from_secs(2),
        endpoints: endpoints.clone(),
        ..RoundConfig::default()
    }
}

#[tokio::test]
async fn a_full_round_gives_exact_verdicts_with_the_targets_evidence() {
    let plan = Arc::new(plan(41, ""));
    let pki = pki_dir(&plan);
    let agents = Agents::start(&plan, pki.path(), &["web", "app", "db"]).await;
    let cancel = CancellationToken::new();
    let report = round::check(
        &plan,
        &coordinator(pki.path()),
        &config(&agents.endpoints),
        &cancel,
    )
    .await;
    agents.stop().await;

    assert_eq!(report.schema, "portcall.report/v1");
    assert_eq!(report.summary.paths, 4);
    assert_eq!(
        (
            report.summary.ok,
            report.summary.violations,
            report.summary.errors
        ),
        (3, 1, 0)
    );
    for (from, to, port, source) in [
        ("web", "app", 18080, "127.0.41.1"),
        ("web", "app", 18443, "127.0.41.1"),
        ("app", "db", 13306, "127.0.41.2"),
    ] {
        let p = path(&report, from, to, port);
        assert_eq!(p.observed, Some(Observed::Open), "{p:?}");
        assert_eq!(p.verdict, Verdict::Ok, "{p:?}");
        assert_eq!(p.target_saw, Some(true), "{p:?}");
        assert_eq!(p.seen_source.as_deref(), Some(source), "{p:?}");
        assert_eq!(p.attempts, 1);
        assert_eq!(p.target_stage, Some(TargetStage::Nonce), "{p:?}");
        assert_eq!(p.blame, None, "{p:?}");
    }
    // Loopback filters nothing: the must-be-blocked path is open, proven
    // by the nonce db's canary saw.
    let p = path(&report, "web", "db", 13306);
    assert_eq!(
        (p.observed, p.verdict),
        (Some(Observed::Open), Verdict::Violation)
    );
    assert_eq!(p.target_saw, Some(true));
    assert_eq!(p.seen_source.as_deref(), Some("127.0.41.1"));
    assert_eq!(p.family, Some(probe_core::plan::Family::Ipv4));
    assert!(
        report
            .hosts
            .iter()
            .all(|h| h.agent == AgentState::Up && h.conflicts.is_empty())
    );
    assert_eq!(report.exit_code(), 1);

    // The JSON contract: exactly these keys.
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&json),
        [
            "finished_at",
            "hosts",
            "paths",
            "plan",
            "schema",
            "started_at",
            "summary"
        ]
    );
    assert_eq!(
        keys(&json["hosts"][0]),
        [
            "address",
            "agent",
            "conflicts",
            "name",
            "rule_trace",
            "zone"
        ]
    );
    assert_eq!(
        keys(&json["paths"][0]),
        [
            "address",
            "attempts",
            "blame",
            "cert",
            "detail",
            "expect",
            "family",
            "flow",
            "flow_from",
            "from",
            "icmp",
            "latency_ms",
            "observed",
            "port",
            "proof",
            "protocol",
            "role",
            "seen_source",
            "service",
            "service_banner",
            "target_saw",
            "target_stage",
            "tls_ms",
            "to",
            "verdict"
        ]
    );
    assert_eq!(json["paths"][0]["observed"], "open");
    // A canary proves the connection, never a service.
    assert_eq!(json["paths"][0]["proof"], "l4");
    // An open path: our nonce arrived, nothing to blame, no ICMP.
    assert_eq!(json["paths"][0]["target_stage"], "nonce");
    assert_eq!(json["paths"][0]["blame"], serde_json::Value::Null);
    assert_eq!(json["paths"][0]["icmp"], serde_json::Value::Null);
    assert_eq!(json["hosts"][0]["agent"], "up");

    // Every canary is gone once the round is over.
    for port in [18080, 18443] {
        assert!(std::net::TcpListener::bind(("127.0.41.2", port)).is_ok());
    }
}

/// Every round event, in words.
#[derive(Default)]
struct Events(std::sync::Mutex<Vec<String>>);

impl round::RoundObserver for Events {
    fn event(&self, event: round::RoundEvent<'_>) {
        let line = match event {
            round::RoundEvent::PhaseStarted { phase, agents } => {
                format!("start {} {agents}", phase.as_str())
            }
            round::RoundEvent::AgentDone { phase, host, ok } => {
                format!(
                    "{} {host} {}",
                    phase.as_str(),
                    if ok { "ok" } else { "failed" }
                )
            }
        };
        self.0.lock().unwrap().push(line);
    }
}

#[tokio::test]
async fn a_dead_agent_makes_its_paths_errors_and_the_others_are_measured() {
    let plan = Arc::new(plan(42, ""));
    let pki = pki_dir(&plan);
    let agents = Agents::start(&plan, pki.path(), &["web", "app"]).await;
    let mut endpoints = agents.endpoints.clone();
    // db's agent is down: nothing listens on its endpoint.
    let free = std::net::TcpListener::bind("127.0.42.3:0").unwrap();
    endpoints.insert("db".into(), free.local_addr().unwrap());
    drop(free);
    let cancel = CancellationToken::new();
    let started = std::time::Instant::now();
    let events = Arc::new(Events::default());
    let report = round::check(
        &plan,
        &coordinator(pki.path()),
        &RoundConfig {
            observer: round::Observer(Some(events.clone())),
            ..config(&endpoints)
        },
        &cancel,
    )
    .await;
    agents.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The observer heard each phase start and each agent finish it, the
    // dead one as not ok.
    let mut seen = events.0.lock().unwrap().clone();
    let prepare_done = seen.split_off(1);
    assert_eq!(seen, ["start agents reached 3"]);
    let mut reached: Vec<String> = prepare_done[..3].to_vec();
    reached.sort();
    assert_eq!(
        reached,
        [
            "agents reached app ok",
            "agents reached db failed",
            "agents reached web ok"
        ]
    );
    assert_eq!(prepare_done[3], "start agents done probing 2");
    let mut probed: Vec<String> = prepare_done[4..].to_vec();
    probed.sort();
    assert_eq!(
        probed,
        ["agents done probing app ok", "agents done probing web ok"]
    );

    for port in [18080, 18443] {
        let p = path(&report, "web", "app", port);
        assert_eq!((p.observed, p.verdict), (Some(Observed::Open), Verdict::Ok));
    }
    for (from, to) in [("app", "db"), ("web", "db")] {
        let p = path(&report, from, to, 13306);
        assert_eq!(p.verdict, Verdict::Error, "{p:?}");
        assert_eq!(p.observed, None);
        assert!(
            p.detail.contains("target agent db unreachable"),
            "{}",
            p.detail
        );
        assert!(
            p.detail.contains("connection refused") || p.detail.contains("onnect"),
            "{}",
            p.detail
        );
    }
    let db = report.hosts.iter().find(|h| h.name == "db").unwrap();
    assert_eq!(db.agent, AgentState::Unreachable);
    assert_eq!(report.summary.errors, 2);
    assert_eq!(report.exit_code(), 3);
}

/// Sends `hello` and expects the agent's answer.
async fn hello(
    security: &ClientSecurity,
    host: &str,
    ip: IpAddr,
    addr: SocketAddr,
) -> Result<Response, ControlError> {
    let mut c = control::connect(security, host, Some(ip), addr, Duration::from_secs(2)).await?;
    c.request(&Request::Hello, Duration::from_secs(2)).await
}

#[tokio::test]
async fn clients_without_a_certificate_of_the_ca_are_refused_and_the_agent_keeps_serving() {
    let plan = Arc::new(plan(43, ""));
    let pki = pki_dir(&plan);
    let agents = Agents::start(&plan, pki.path(), &["db"]).await;
    let addr = agents.endpoints["db"];
    let ip = ip_of(&plan, "db");
    let ca_pem = std::fs::read_to_string(pki.path().join("ca.pem")).unwrap();

    // Plain TCP: no TLS at all.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"{\"op\":\"hello\"}\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("\"reply\":\"hello\""),
        "{buf:?}"
    );

    // TLS, but no client certificate.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(TlsIdentity::load(pki.path(), COORDINATOR).unwrap().roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(ip.into());
    let outcome = async {
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        tls.write_all(b"{\"op\":\"hello\"}\n").await?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await?;
        std::io::Result::Ok(buf)
    }
    .await;
    match outcome {
        Err(_) => {}
        Ok(buf) => assert!(buf.is_empty(), "served without a certificate: {buf:?}"),
    }

    // A certificate from a foreign CA (trusting the real CA for the agent).
    let foreign = Authority::generate("someone else's CA").unwrap();
    let cert = foreign.issue(&IssueRequest::new(COORDINATOR)).unwrap();
    let impostor =
        TlsIdentity::from_pem(COORDINATOR, &ca_pem, &cert.cert_pem, &cert.key_pem).unwrap();
    let r = hello(&ClientSecurity::Mtls(impostor), "db", ip, addr).await;
    assert!(r.is_err(), "foreign CA accepted: {r:?}");

    // An agent's own certificate (server usage only) cannot drive agents.
    let agent_id = TlsIdentity::load(pki.path(), "web").unwrap();
    let r = hello(&ClientSecurity::Mtls(agent_id), "db", ip, addr).await;
    assert!(
        r.is_err(),
        "an agent certificate was accepted as coordinator: {r:?}"
    );

    // The coordinator is served, and checks the agent's name: db's
    // certificate is not web's.
    let ok = hello(&coordinator(pki.path()), "db", ip, addr)
        .await
        .unwrap();
    assert!(
        matches!(ok, Response::Hello(h) if h.host == "db" && h.version == control::PROTOCOL_VERSION)
    );
    let wrong = hello(&coordinator(pki.path()), "web", ip_of(&plan, "web"), addr).await;
    assert!(
        matches!(wrong, Err(ControlError::Handshake { .. })),
        "{wrong:?}"
    );
    agents.stop().await;
}

#[tokio::test]
async fn oversized_and_malformed_frames_get_error_replies_and_the_agent_keeps_serving() {
    let plan = Arc::new(plan(44, ""));
    let pki = pki_dir(&plan);
    let agents = Agents::start(&plan, pki.path(), &["db"]).await;
    let addr = agents.endpoints["db"];
    let ip = ip_of(&plan, "db");
    let security = coordinator(pki.path());
    let mut c = control::connect(&security, "db", Some(ip), addr, Duration::from_secs(2))
        .await
        .unwrap();
    let error_reply = |r: Response| match r {
        Response::Error(e) => e.message,
        other => panic!("expected an error reply, got {other:?}"),
    };
    for bad in [
        &b"this is not json\n"[..],
        b"{\"op\":\"format-disk\"}\n",
        b"{\"op\":\"prepare\",\"round\":\"zz\"}\n",
        b"\xff\xfe\n",
    ] {
        c.send_raw(bad).await.unwrap();
        let msg = error_reply(c.read_reply().await.unwrap());
        assert!(msg.contains("malformed frame"), "{msg}");
    }
    // A few malformed frames end the connection: a peer cannot make the
    // agent answer (and log) garbage forever.
    assert!(
        c.read_reply().await.is_err(),
        "closed after 4 malformed frames"
    );
    let mut c = control::connect(&security, "db", Some(ip), addr, Duration::from_secs(2))
        .await
        .unwrap();
    // A well-formed request from the wrong coordinator's point of view.
    let r = c
        .request(
            &Request::Prepare(PrepareRequest {
                round: "abcd".into(),
                host: "web".into(),
                plan_digest: control::plan_digest(&plan),
                ttl_ms: 1000,
                version: probe_core::control::PROTOCOL_VERSION,
                nonce_key: None,
                samples: 1,
            }),
            Duration::from_secs(2),
        )
        .await;
    assert!(
        matches!(&r, Err(ControlError::Refused { message, .. }) if message.contains("plays db, not web")),
        "{r:?}"
    );
    let r = c
        .request(
            &Request::Prepare(PrepareRequest {
                round: "abcd".into(),
                host: "db".into(),
                plan_digest: "0000".into(),
                ttl_ms: 1000,
                version: probe_core::control::PROTOCOL_VERSION,
                nonce_key: None,
                samples: 1,
            }),
            Duration::from_secs(2),
        )
        .await;
    assert!(
        matches!(&r, Err(ControlError::Refused { message, .. }) if message.contains("plan mismatch")),
        "{r:?}"
    );
    let r = c
        .request(
            &Request::Evidence(RoundRef { round: "ab".into() }),
            Duration::from_secs(2),
        )
        .await;
    assert!(matches!(&r, Err(ControlError::Refused { .. })), "{r:?}");
    // Still the same connection, still served.
    assert!(matches!(
        c.request(&Request::Hello, Duration::from_secs(2)).await,
        Ok(Response::Hello(_))
    ));

    // More than the cap without a newline: an error reply, then the
    // connection is closed (it cannot be resynchronised).
    let big = vec![b'x'; control::MAX_REQUEST_BYTES + 10];
    c.send_raw(&big).await.unwrap();
    let msg = error_reply(c.read_reply().await.unwrap());
    assert!(msg.contains("exceeds"), "{msg}");
    assert!(c.read_reply().await.is_err(), "connection should be closed");

    // A new connection is served.
    let ok = hello(&security, "db", ip, addr).await.unwrap();
    assert!(matches!(ok, Response::Hello(_)));

    // A burst beyond the rate limit is refused, not served.
    let mut c = control::connect(&security, "db", Some(ip), addr, Duration::from_secs(2))
        .await
        .unwrap();
    let mut limited = 0;
    for _ in 0..120 {
        if let Err(ControlError::Refused { message, .. }) =
            c.request(&Request::Hello, Duration::from_secs(2)).await
        {
            assert!(message.contains("rate limit"), "{message}");
            limited += 1;
        }
    }
    assert!(limited > 0, "120 requests at once were all served");
    agents.stop().await;
}

#[tokio::test]
async fn canaries_close_after_the_ttl_when_the_coordinator_vanishes_mid_round() {
    let plan = Arc::new(plan(45, ""));
    let pki = pki_dir(&plan);
    let agents = Agents::start(&plan, pki.path(), &["db"]).await;
    let addr = agents.endpoints["db"];
    let ip = ip_of(&plan, "db");
    let security = coordinator(pki.path());
    let mut c = control::connect(&security, "db", Some(ip), addr, Duration::from_secs(2))
        .await
        .unwrap();
    let r = c
        .request(
            &Request::Prepare(PrepareRequest {
                round: "0123abcd".into(),
                host: "db".into(),
                plan_digest: control::plan_digest(&plan),
                ttl_ms: 1200,
                version: probe_core::control::PROTOCOL_VERSION,
                nonce_key: None,
                samples: 1,
            }),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    let Response::Prepared(p) = r else {
        panic!("{r:?}")
    };
    assert_eq!(p.listeners.len(), 1);
    assert_eq!(p.listeners[0].state, ListenerState::Canary);
    // The coordinator dies without a teardown.
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.45.3", 13306))
            .await
            .is_ok(),
        "the canary should still be up within its TTL"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refused = tokio::net::TcpStream::connect(("127.0.45.3", 13306)).await;
    assert!(refused.is_err(), "the canary outlived its TTL");
    assert!(std::net::TcpListener::bind(("127.0.45.3", 13306)).is_ok());
    // And the agent still serves.
    assert!(matches!(
        hello(&security, "db", ip, addr).await,
        Ok(Response::Hello(_))
    ));
    agents.stop().await;
}

#[tokio::test]
async fn a_real_service_holding_a_planned_port_is_reported_held_and_probed_live() {
    // An extra flow to a port nobody plans: no canary there either.
    let plan = Arc::new(plan(
        46,
        r#"
[[flows]]
name = "web to an unplanned port"
from = "host:web"
to = "host:db"
ports = [24999]
"#,
    ));
    let pki = pki_dir(&plan);
    // The "real service": accepts on db's planned port and greets.
    let service = tokio::net::TcpListener::bind("127.0.46.3:13306")
        .await
        .unwrap();
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = served.clone();
    let service_task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = service.accept().await else {
                break;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = s.write_all(b"5.7.0-fake-mysql\n").await;
        }
    });
    let agents = Agents::start(&plan, pki.path(), &["web", "app", "db"]).await;
    let cancel = CancellationToken::new();
    let report = round::check(
        &plan,
        &coordinator(pki.path()),
        &config(&agents.endpoints),
        &cancel,
    )
    .await;
    agents.stop().await;

    let db = report.hosts.iter().find(|h| h.name == "db").unwrap();
    assert_eq!(db.conflicts.len(), 1, "{db:?}");
    assert_eq!(db.conflicts[0].port, 13306);
    assert_eq!(db.conflicts[0].state, ListenerState::Held);
    for from in ["app", "web"] {
        let p = path(&report, from, "db", 13306);
        assert_eq!(p.observed, Some(Observed::Open), "{p:?}");
        assert_eq!(p.target_saw, None, "no canary, no nonce: {p:?}");
        assert_eq!(p.seen_source, None);
        assert!(p.detail.contains("live service"), "{}", p.detail);
    }
    assert_eq!(path(&report, "app", "db", 13306).verdict, Verdict::Ok);
    assert_eq!(
        path(&report, "web", "db", 13306).verdict,
        Verdict::Violation
    );
    // Nothing listens on the unplanned port: refused without a canary is
    // "service down", never "blocked".
    let p = path(&report, "web", "db", 24999);
    assert_eq!(
        (p.observed, p.verdict),
        (Some(Observed::Refused), Verdict::Error)
    );
    assert!(p.detail.contains("service down"), "{}", p.detail);
    // The must-be-blocked path to the live service is a violation, and a
    // violation wins over errors.
    assert_eq!(report.exit_code(), 1);

    // The service was probed, never displaced, and still works.
    assert!(served.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    let mut s = tokio::net::TcpStream::connect("127.0.46.3:13306")
        .await
        .unwrap();
    let mut greeting = [0u8; 16];
    s.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"5.7.0-fake-mysql");
    service_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_round_is_torn_down_on_every_agent_it_reached_and_says_cancelled() {
    // Regression: Ctrl-C left canaries up for the whole TTL and listed
    // every agent as unreachable.
    let src = r#"
name = "cancel-48"
[defaults]
timeout_ms = 4000
retries = 0
[[hosts]]
name = "web"
address = "127.0.48.1"
[[hosts]]
name = "app"
address = "127.0.48.2"
roles = ["app"]
[[hosts]]
name = "db"
address = "127.0.48.3"
roles = ["db"]
[roles.app]
ports = [{ name = "http", port = 18080, offset = false }]
[roles.db]
ports = [{ name = "sql", port = 13306, offset = false }]
[[flows]]
from = "host:web"
to = ["host:app", "host:db"]
ports = ["http", "sql"]
"#;
    let plan = Arc::new(Plan::parse(src, "cancel-48.toml").unwrap());
    // A "real service" on db's port whose accept queue is full: the live
    // probe of it waits out its 4 s timeout, so the round is mid-probe
    // when it is cancelled.
    let silent = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    silent
        .bind(&"127.0.48.3:13306".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    silent.listen(0).unwrap();
    let _filler = std::net::TcpStream::connect("127.0.48.3:13306").unwrap();
    let pki = pki_dir(&plan);
    let agents = Agents::start(&plan, pki.path(), &["web", "app", "db"]).await;
    let cancel = CancellationToken::new();
    let round = {
        let (plan, security, config, cancel) = (
            plan.clone(),
            coordinator(pki.path()),
            config(&agents.endpoints),
            cancel.clone(),
        );
        tokio::spawn(async move { round::check(&plan, &security, &config, &cancel).await })
    };
    // Wait for app's canary: the round is prepared and probing.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect("127.0.48.2:18080")
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "no canary came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cancelled_at = std::time::Instant::now();
    cancel.cancel();
    let report = tokio::time::timeout(Duration::from_secs(4), round)
        .await
        .expect("the cancelled round returns")
        .unwrap();
    let took = cancelled_at.elapsed();
    assert!(took < Duration::from_millis(2500), "teardown took {took:?}");
    // The canary is down within the teardown bound, not at the TTL (the
    // agent closes its listeners as it answers the teardown, so allow the
    // rest of the bound rather than racing that close).
    let bound = cancelled_at + Duration::from_millis(2500);
    while tokio::net::TcpStream::connect("127.0.48.2:18080")
        .await
        .is_ok()
    {
        assert!(
            std::time::Instant::now() < bound,
            "app's canary outlived the cancelled round's teardown bound"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for h in &report.hosts {
        assert_eq!(h.agent, AgentState::Cancelled, "{h:?}");
    }
    for p in &report.paths {
        assert_eq!(p.verdict, Verdict::Error, "{p:?}");
        assert!(p.detail.contains("cancelled"), "{}", p.detail);
        assert!(!p.detail.contains("unreachable"), "{}", p.detail);
    }
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["hosts"][0]["agent"], "cancelled");
    agents.stop().await;
}

#[tokio::test]
async fn an_agent_holding_another_plan_is_a_plan_mismatch_with_both_digests_and_files() {
    let agents_plan = Arc::new(plan(49, ""));
    let ours = plan(
        49,
        "[[flows]]\nfrom = \"host:db\"\nto = \"host:app\"\nports = [\"http\"]\n",
    );
    let pki = pki_dir(&ours);
    let agents = Agents::start(&agents_plan, pki.path(), &["web", "app", "db"]).await;
    let report = round::check(
        &ours,
        &coordinator(pki.path()),
        &config(&agents.endpoints),
        &CancellationToken::new(),
    )
    .await;
    agents.stop().await;
    let ours_digest = control::plan_digest(&ours);
    let theirs = control::plan_digest(&agents_plan);
    assert_ne!(ours_digest, theirs);
    for h in &report.hosts {
        assert_eq!(h.agent, AgentState::PlanMismatch, "{h:?}");
        let m = h.plan_mismatch.as_ref().expect("both sides named");
        assert_eq!(m.coordinator_digest, ours_digest);
        assert_eq!(m.agent_digest, theirs);
        assert_eq!(m.coordinator_file, "loopback-49.toml");
        assert_eq!(m.agent_file.as_deref(), Some("loopback-49.toml"));
        let detail = h.agent_detail.as_deref().unwrap();
        assert!(
            detail.contains(&theirs) && detail.contains(&ours_digest),
            "{detail}"
        );
    }
    assert!(
        report
            .paths
            .iter()
            .all(|p| p.detail.contains("another plan")),
        "{:?}",
        report.paths
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["hosts"][0]["agent"], "plan-mismatch");
    assert_eq!(json["hosts"][0]["plan_mismatch"]["agent_digest"], theirs);
    assert!(!json.to_string().contains("unreachable"));
}

#[tokio::test]
async fn only_limits_a_round_to_the_selected_paths_and_their_agents() {
    let plan = Arc::new(plan(50, ""));
    let pki = pki_dir(&plan);
    // web's agent is not even running: a round limited to app -> db never
    // asks it.
    let agents = Agents::start(&plan, pki.path(), &["app", "db"]).await;
    let only = plan
        .select_paths(&["flow:app to db".parse().unwrap()])
        .unwrap();
    let report = round::check(
        &plan,
        &coordinator(pki.path()),
        &RoundConfig {
            only: Some(only),
            ..config(&agents.endpoints)
        },
        &CancellationToken::new(),
    )
    .await;
    agents.stop().await;
    assert_eq!(report.summary.paths, 1, "{:?}", report.paths);
    let p = path(&report, "app", "db", 13306);
    assert_eq!((p.observed, p.verdict), (Some(Observed::Open), Verdict::Ok));
    assert_eq!(p.target_saw, Some(true));
    let web = report.hosts.iter().find(|h| h.name == "web").unwrap();
    assert_eq!(web.agent, AgentState::None, "not involved, not asked");
    assert_eq!(report.exit_code(), 0);
}

#[tokio::test]
async fn insecure_agents_refuse_to_serve_off_loopback() {
    let plan = Arc::new(plan(47, ""));
    let config = AgentConfig {
        plan: plan.clone(),
        host: "db".into(),
        security: ServerSecurity::Insecure,
        canary_tls: pki::self_signed_canary_config("db").unwrap(),
        listen: Some("0.0.0.0:0".parse().unwrap()),
        coordinator: COORDINATOR.to_string(),
        limits: AgentLimits::default(),
        rule_trace: false,
    };
    let err = Agent::bind(config).await.unwrap_err().to_string();
    assert!(err.contains("only on loopback"), "{err}");

    // On loopback an insecure agent and coordinator run a whole round.
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut endpoints = BTreeMap::new();
    for host in ["web", "app", "db"] {
        let agent = Agent::bind(AgentConfig {
            plan: plan.clone(),
            host: host.into(),
            security: ServerSecurity::Insecure,
            canary_tls: pki::self_signed_canary_config(host).unwrap(),
            listen: Some(SocketAddr::new(ip_of(&plan, host), 0)),
            coordinator: COORDINATOR.to_string(),
            limits: AgentLimits::default(),
            rule_trace: false,
        })
        .await
        .unwrap();
        endpoints.insert(host.to_string(), agent.local_addr());
        tracker.spawn(agent.run(cancel.clone()));
    }
    let report = round::check(
        &plan,
        &ClientSecurity::Insecure,
        &config_of(&endpoints),
        &cancel,
    )
    .await;
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    assert_eq!((report.summary.ok, report.summary.violations), (3, 1));
}

fn config_of(endpoints: &BTreeMap<String, SocketAddr>) -> RoundConfig {
    config(endpoints)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_plays_the_wso2_plan_with_only_the_must_be_blocked_paths_failing() {
    let started = std::time::Instant::now();
    let run = probe_core::demo::run_wso2().await.unwrap();
    let r = &run.report;
    assert_eq!(r.summary.paths, 83);
    assert_eq!(
        r.summary.errors,
        0,
        "{:#?}",
        r.paths
            .iter()
            .filter(|p| p.verdict == Verdict::Error)
            .collect::<Vec<_>>()
    );
    for p in &r.paths {
        match p.expect {
            probe_core::plan::Expect::Open => {
                assert_eq!(p.verdict, Verdict::Ok, "{p:?}");
                // A service of this machine listening on a demo port on
                // every address holds it; the path is then probed live.
                let held = r.hosts.iter().any(|h| {
                    h.name == p.to
                        && h.conflicts
                            .iter()
                            .any(|c| c.port == p.port && c.state == ListenerState::Held)
                });
                assert_eq!(p.target_saw, if held { None } else { Some(true) }, "{p:?}");
            }
            probe_core::plan::Expect::Blocked => {
                assert_eq!(
                    (p.verdict, p.observed),
                    (Verdict::Violation, Some(Observed::Open)),
                    "{p:?}"
                );
            }
        }
        if p.target_saw == Some(true) {
            let source = p.seen_source.as_deref().unwrap_or_default();
            assert!(source.starts_with("127."), "{p:?}");
        }
    }
    assert_eq!(r.summary.violations, 13);
    assert_eq!(run.exit_code(), 0);
    assert!(
        run.notes
            .iter()
            .any(|n| n.contains("nothing filters traffic on loopback"))
    );
    assert!(run.notes.iter().any(|n| n.contains("lb http 80 -> 10080")));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

/// Issue 14: many sources probing one canary whose limits are far below
/// what they send at once. The canary sheds (and says so in its evidence);
/// the probers retry what it closed unanswered; no path is ever reported
/// answered by the wrong host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sources_on_one_small_canary_never_give_wrong_host() {
    let sources: Vec<String> = (1..=12).map(|i| format!("s{i}")).collect();
    let mut src = String::from(
        "name = \"crowd\"\n[defaults]\ntimeout_ms = 1000\nretries = 1\n\
         [roles.db]\nports = [\n",
    );
    for p in 0..5 {
        src.push_str(&format!(
            "  {{ name = \"p{p}\", port = {}, offset = false }},\n",
            13400 + p
        ));
    }
    src.push_str("  { name = \"t\", port = 13443, protocol = \"tls\", offset = false },\n]\n");
    src.push_str("[[hosts]]\nname = \"db\"\naddress = \"127.0.61.100\"\nroles = [\"db\"]\n");
    for (i, s) in sources.iter().enumerate() {
        src.push_str(&format!(
            "[[hosts]]\nname = \"{s}\"\naddress = \"127.0.61.{}\"\nzone = \"crowd\"\n",
            i + 1
        ));
    }
    src.push_str("[[flows]]\nfrom = \"zone:crowd\"\nto = \"host:db\"\nports = [\"p0\", \"p1\", \"p2\", \"p3\", \"p4\", \"t\"]\n");
    let plan = Arc::new(Plan::parse(&src, "crowd.toml").unwrap());
    let pki = pki_dir(&plan);
    let mut hosts: Vec<&str> = sources.iter().map(String::as_str).collect();
    hosts.push("db");
    // db serves two canary connections at once over all its canaries, and
    // each canary holds no more than the round's nonces for it.
    let agents = Agents::start_with(&plan, pki.path(), &hosts, |h| AgentLimits {
        canary_connections: if h == "db" { 2 } else { 8192 },
        canary_headroom: 0,
        ..AgentLimits::default()
    })
    .await;
    let evidence = round::run_round(
        &plan,
        &coordinator(pki.path()),
        &config(&agents.endpoints),
        &CancellationToken::new(),
    )
    .await;
    agents.stop().await;
    let report = probe_core::report::join(&plan, &evidence);

    assert_eq!(report.summary.paths, 72);
    let wrong: Vec<&PathReport> = report
        .paths
        .iter()
        .filter(|p| p.observed == Some(Observed::WrongHost))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} wrong-host, e.g. {:?}",
        wrong.len(),
        wrong[0]
    );
    for p in &report.paths {
        assert!(
            p.verdict == Verdict::Ok || p.detail.starts_with("not measured"),
            "{p:?}"
        );
    }
    let ok = report
        .paths
        .iter()
        .filter(|p| p.verdict == Verdict::Ok)
        .count();
    // The overloaded canary says so in its evidence.
    let shed: u64 = evidence.agents["db"].canaries.iter().map(|c| c.shed).sum();
    eprintln!("{ok} of 72 ok; the canary shed {shed} connections");
    assert!(
        shed > 0,
        "the canary was never overloaded: the test proves nothing"
    );
    assert!(ok >= 66, "only {ok} of 72 measured");
}

/// A coordinator of control protocol version 1 (its `prepare` says no
/// version) is refused by the agent with both versions and the side to
/// upgrade named, and nothing is prepared.
#[tokio::test]
async fn an_agent_refuses_a_coordinator_of_protocol_version_1_naming_both_versions() {
    let plan = Arc::new(plan(66, ""));
    let pki = pki_dir(&plan);
    let agents = Agents::start(&plan, pki.path(), &["db"]).await;
    let addr = agents.endpoints["db"];
    let security = coordinator(pki.path());
    let mut c = control::connect(
        &security,
        "db",
        Some(ip_of(&plan, "db")),
        addr,
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    let v1_prepare = format!(
        "{{\"op\":\"prepare\",\"round\":\"ab\",\"host\":\"db\",\"plan_digest\":\"{}\",\"ttl_ms\":1000}}\n",
        control::plan_digest(&plan)
    );
    c.send_raw(v1_prepare.as_bytes()).await.unwrap();
    let reply = c.read_reply().await.unwrap();
    agents.stop().await;
    let Response::Error(e) = reply else {
        panic!("expected a refusal, got {reply:?}");
    };
    assert!(
        e.message.contains(&format!(
            "coordinator speaks control protocol 1, this agent (db) {}: upgrade the coordinator",
            control::PROTOCOL_VERSION
        )),
        "{}",
        e.message
    );
}

/// An agent of control protocol version 1 (a fake one: its `prepared`
/// says no version) is refused by the coordinator with both versions and
/// the side to upgrade named, and the round it prepared is torn down.
#[tokio::test]
async fn a_coordinator_refuses_an_agent_of_protocol_version_1_naming_both_versions() {
    let plan = Arc::new(plan(67, ""));
    let fake = tokio::net::TcpListener::bind("127.0.67.3:0").await.unwrap();
    let mut endpoints = BTreeMap::new();
    endpoints.insert("db".to_string(), fake.local_addr().unwrap());
    for (host, last) in [("web", 1u8), ("app", 2)] {
        // Unreachable ones: nothing listens there.
        let free = std::net::TcpListener::bind(format!("127.0.67.{last}:0")).unwrap();
        endpoints.insert(host.to_string(), free.local_addr().unwrap());
    }
    let v1_agent = tokio::spawn(async move {
        let (stream, _) = fake.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = tokio::io::BufReader::new(read).lines();
        let prepare = lines.next_line().await.unwrap().unwrap();
        let request: serde_json::Value = serde_json::from_str(&prepare).unwrap();
        let round = request["round"].as_str().unwrap().to_owned();
        let reply = format!("{{\"reply\":\"prepared\",\"round\":\"{round}\",\"listeners\":[]}}\n");
        write.write_all(reply.as_bytes()).await.unwrap();
        let next = lines.next_line().await.unwrap().unwrap_or_default();
        if next.contains("\"op\":\"teardown\"") {
            let reply = format!("{{\"reply\":\"torn-down\",\"round\":\"{round}\"}}\n");
            let _ = write.write_all(reply.as_bytes()).await;
        }
        (request, next)
    });
    let report = round::check(
        &plan,
        &ClientSecurity::Insecure,
        &config(&endpoints),
        &CancellationToken::new(),
    )
    .await;
    let (prepare, after) = v1_agent.await.unwrap();
    assert_eq!(prepare["version"], control::PROTOCOL_VERSION);
    assert!(after.contains("\"op\":\"teardown\""), "{after}");
    let db = report.hosts.iter().find(|h| h.name == "db").unwrap();
    assert_eq!(db.agent, AgentState::Unreachable, "{db:?}");
    let detail = db.agent_detail.as_deref().unwrap();
    assert_eq!(
        detail,
        format!(
            "agent db speaks control protocol 1, this coordinator {}: upgrade the agent on db",
            control::PROTOCOL_VERSION
        )
    );
}

/// Regression: a round started within the lease after `check` was killed
/// saw the agents' own leftover canaries as real services ("open …
/// connected to the live service"). The earlier round's canaries must be
/// the agent's to close, never a service of the next round.
#[tokio::test]
async fn a_killed_round_does_not_poison_the_next_one_within_the_lease() {
    let plan = Arc::new(plan(58, ""));
    let pki = pki_dir(&plan);
    let agents = Agents::start(&plan, pki.path(), &["web", "app", "db"]).await;
    let security = coordinator(pki.path());
    // Round A: every agent prepared, then the coordinator is killed (no
    // teardown; the connections just close).
    let mut killed = Vec::new();
    for host in ["web", "app", "db"] {
        let mut c = control::connect(
            &security,
            host,
            Some(ip_of(&plan, host)),
            agents.endpoints[host],
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        let r = c
            .request(
                &Request::Prepare(PrepareRequest {
                    round: "dead0001".into(),
                    host: host.into(),
                    plan_digest: control::plan_digest(&plan),
                    ttl_ms: 60_000,
                    version: probe_core::control::PROTOCOL_VERSION,
                    nonce_key: Some("ab".repeat(32)),
                    samples: 1,
                }),
                Duration::from_secs(2),
            )
            .await
            .unwrap();
        assert!(matches!(r, Response::Prepared(_)), "{r:?}");
        killed.push(c);
    }
    // Round A's probes ran (its canaries took their connections) before
    // the kill.
    for c in &mut killed[..2] {
        let r = c
            .request(
                &Request::Probe(ProbeRequest {
                    round: "dead0001".into(),
                    live: vec![],
                    skip: vec![],
                    skip_hosts: vec![],
                    only: None,
                    samples: 1,
                    elsewhere: Vec::new(),
                }),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert!(matches!(r, Response::Probed(_)), "{r:?}");
    }
    drop(killed);
    // And coordinators killed in the middle of a `prepare` (the frame sent,
    // the connection closed before the reply): the agent drops the request
    // half done, which must not leave its canaries behind.
    for k in 0..10 {
        for host in ["app", "db"] {
            let mut c = control::connect(
                &security,
                host,
                Some(ip_of(&plan, host)),
                agents.endpoints[host],
                Duration::from_secs(2),
            )
            .await
            .unwrap();
            let prepare = Request::Prepare(PrepareRequest {
                round: format!("dead{k:04}"),
                host: host.into(),
                plan_digest: control::plan_digest(&plan),
                ttl_ms: 60_000,
                version: probe_core::control::PROTOCOL_VERSION,
                nonce_key: None,
                samples: 1,
            });
            let mut frame = serde_json::to_vec(&prepare).unwrap();
            frame.push(b'\n');
            c.send_raw(&frame).await.unwrap();
            drop(c);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Round B, within the lease of A.
    let report = round::check(
        &plan,
        &security,
        &config(&agents.endpoints),
        &CancellationToken::new(),
    )
    .await;
    agents.stop().await;
    for host in &report.hosts {
        assert!(host.conflicts.is_empty(), "{host:?}");
    }
    for (from, to, port) in [
        ("web", "app", 18080),
        ("web", "app", 18443),
        ("app", "db", 13306),
        ("web", "db", 13306),
    ] {
        let p = path(&report, from, to, port);
        assert_eq!(p.observed, Some(Observed::Open), "{p:?}");
        assert_eq!(p.target_saw, Some(true), "judged against a canary: {p:?}");
        assert!(!p.detail.contains("live service"), "{}", p.detail);
    }
}
