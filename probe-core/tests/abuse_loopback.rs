//! Attacks on agents over loopback, no root needed: floods of idle
//! connections against the control endpoint and a canary, a client
//! certificate from the same CA with another name, a coordinator that
//! vanishes mid-round, a flooding or non-reading coordinator connection.
//! Each test pins a hole the hardening audit (issue 15) found; each plays
//! its plan on its own 127.0.5N.0/24 block, attackers come from .9.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use probe_core::agent::{Agent, AgentConfig, AgentLimits};
use probe_core::control::{
    self, ClientSecurity, ControlError, ListenerState, PrepareRequest, ProbeRequest, Request,
    Response, RoundRef, ServerSecurity,
};
use probe_core::pki::{self, COORDINATOR, CertUsage, IssueRequest, TlsIdentity};
use probe_core::plan::{Address, Plan};
use probe_core::probe::Observed;
use probe_core::report::{self, AgentEvidence, AgentOutcome, Report, RoundEvidence, Verdict};
use probe_core::round::{self, RoundConfig};
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// `web` reaches `app` (TCP and TLS) and `db`; `app` reaches `db`.
fn plan(net: u8) -> Plan {
    let src = format!(
        r#"
name = "abuse-{net}"
[defaults]
timeout_ms = 3000
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
from = "host:web"
to = "host:app"
ports = ["http", "https"]
[[flows]]
from = ["host:app", "host:web"]
to = "host:db"
ports = ["sql"]
"#
    );
    Plan::parse(&src, &format!("abuse-{net}.toml")).unwrap()
}

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
    // What the audit used: a client certificate from the same CA, with
    // the clientAuth usage, under another name.
    let mut hb = IssueRequest::new("hb");
    hb.usage = CertUsage::Client;
    pki::issue(dir.path(), &hb, false).unwrap();
    dir
}

fn ip_of(plan: &Plan, host: &str) -> IpAddr {
    match plan.host(host).unwrap().address {
        Address::Ip(ip) => ip,
        Address::Dns(_) => unreachable!(),
    }
}

struct Agents {
    endpoints: BTreeMap<String, SocketAddr>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Agents {
    async fn start(plan: &Arc<Plan>, pki: &Path, limits: AgentLimits) -> Agents {
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        let mut endpoints = BTreeMap::new();
        for h in &plan.hosts {
            let id = TlsIdentity::load(pki, &h.name).unwrap();
            let agent = Agent::bind(AgentConfig {
                plan: plan.clone(),
                host: h.name.clone(),
                security: ServerSecurity::Mtls(id.control_server_config().unwrap()),
                canary_tls: id.canary_server_config().unwrap(),
                listen: Some(SocketAddr::new(ip_of(plan, &h.name), 0)),
                coordinator: COORDINATOR.to_string(),
                rule_trace: false,
                limits: limits.clone(),
            })
            .await
            .unwrap();
            endpoints.insert(h.name.clone(), agent.local_addr());
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

fn identity(pki: &Path, name: &str) -> ClientSecurity {
    ClientSecurity::Mtls(TlsIdentity::load(pki, name).unwrap())
}

fn config(endpoints: &BTreeMap<String, SocketAddr>) -> RoundConfig {
    RoundConfig {
        connect_timeout: Duration::from_secs(2),
        endpoints: endpoints.clone(),
        ..RoundConfig::default()
    }
}

/// Every path's (from, to, port, observed, verdict), the report's meaning.
fn verdicts(r: &Report) -> Vec<(String, String, u16, Option<Observed>, Verdict)> {
    r.paths
        .iter()
        .map(|p| (p.from.clone(), p.to.clone(), p.port, p.observed, p.verdict))
        .collect()
}

/// Holds `n` connections from `source` to `target`, reopening each as soon
/// as it is closed (or refused), until `stop` fires. Counts connections
/// opened and currently held.
struct Flood {
    opened: Arc<AtomicUsize>,
    held: Arc<AtomicUsize>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Flood {
    fn start(source: IpAddr, target: SocketAddr, n: usize) -> Flood {
        let (opened, held) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        for _ in 0..n {
            let (opened, held, stop) = (opened.clone(), held.clone(), stop.clone());
            tasks.spawn(async move {
                while !stop.is_cancelled() {
                    let socket = TcpSocket::new_v4().unwrap();
                    socket.bind(SocketAddr::new(source, 0)).unwrap();
                    let conn = tokio::select! {
                        () = stop.cancelled() => return,
                        c = socket.connect(target) => c,
                    };
                    let Ok(mut conn) = conn else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    opened.fetch_add(1, Ordering::SeqCst);
                    held.fetch_add(1, Ordering::SeqCst);
                    // Idle: never send a byte; wait to be closed.
                    let mut b = [0u8; 64];
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = async { while matches!(conn.read(&mut b).await, Ok(n) if n > 0) {} } => {}
                    }
                    held.fetch_sub(1, Ordering::SeqCst);
                    // Reopen at once (a short pause keeps the shared CI
                    // machine usable).
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            });
        }
        tasks.close();
        Flood {
            opened,
            held,
            stop,
            tasks,
        }
    }

    async fn wait_held(&self, n: usize, within: Duration) {
        let until = Instant::now() + within;
        while self.held.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < until,
                "the flood holds only {} connections",
                self.held.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) -> usize {
        self.stop.cancel();
        self.tasks.wait().await;
        self.opened.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_client_certificate_with_another_name_gets_no_canary_and_no_probe() {
    let plan = Arc::new(plan(51));
    let pki = pki_dir(&plan);
    let agents = Agents::start(&plan, pki.path(), AgentLimits::default()).await;
    let (db, ip) = (agents.endpoints["db"], ip_of(&plan, "db"));
    let hb = identity(pki.path(), "hb");
    let digest = control::plan_digest(&plan);
    let prepare = Request::Prepare(PrepareRequest {
        round: "0badc0de".into(),
        host: "db".into(),
        plan_digest: digest,
        ttl_ms: 60_000,
        version: probe_core::control::PROTOCOL_VERSION,
        nonce_key: None,
        samples: 1,
    });
    for request in [
        Request::Hello,
        prepare,
        Request::Probe(ProbeRequest {
            round: "0badc0de".into(),
            live: vec![],
            skip: vec![],
            skip_hosts: vec![],
            only: None,
            samples: 1,
            elsewhere: Vec::new(),
        }),
    ] {
        let mut c = control::connect(&hb, "db", Some(ip), db, Duration::from_secs(2))
            .await
            .unwrap();
        let r = c.request(&request, Duration::from_secs(2)).await;
        match r {
            Err(ControlError::Refused { message, .. }) => assert!(
                message.contains("acts only for the certificate named \"coordinator\"")
                    && message.contains("\"hb\""),
                "{message}"
            ),
            other => panic!("{request:?} by hb was not refused by name: {other:?}"),
        }
    }
    // No canary was opened.
    assert!(std::net::TcpListener::bind(("127.0.51.3", 13306)).is_ok());
    // A whole round driven with hb's key measures nothing.
    let cancel = CancellationToken::new();
    let report = round::check(&plan, &hb, &config(&agents.endpoints), &cancel).await;
    assert!(report.paths.iter().all(|p| p.observed.is_none()));
    assert!(
        report
            .hosts
            .iter()
            .all(|h| h.agent == report::AgentState::Unreachable)
    );
    // The coordinator itself is served.
    let report = round::check(
        &plan,
        &identity(pki.path(), COORDINATOR),
        &config(&agents.endpoints),
        &cancel,
    )
    .await;
    assert_eq!(report.summary.ok, report.summary.paths, "{report:?}");
    agents.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_completes_exactly_while_32_idle_connections_are_held_against_a_control_port() {
    let plan = Arc::new(plan(52));
    let pki = pki_dir(&plan);
    let agents = Agents::start(&plan, pki.path(), AgentLimits::default()).await;
    let coordinator = identity(pki.path(), COORDINATOR);
    let cancel = CancellationToken::new();
    let baseline = round::check(&plan, &coordinator, &config(&agents.endpoints), &cancel).await;
    assert_eq!(baseline.summary.ok, baseline.summary.paths, "{baseline:?}");

    // 32 idle connections (twice the old global limit of 16) against db's
    // control port, reopened as the agent closes them.
    let flood = Flood::start("127.0.52.9".parse().unwrap(), agents.endpoints["db"], 32);
    flood.wait_held(8, Duration::from_secs(10)).await;
    for _ in 0..3 {
        let started = Instant::now();
        let report = round::check(&plan, &coordinator, &config(&agents.endpoints), &cancel).await;
        assert_eq!(verdicts(&report), verdicts(&baseline), "{report:?}");
        assert!(started.elapsed() < Duration::from_secs(15));
    }
    let opened = flood.stop().await;
    assert!(opened > 32, "the flood reopened connections ({opened})");
    agents.stop().await;
}

/// One round driven by hand, so that the flood can be brought up between
/// `prepare` and `probe`: the canaries are full when the probes arrive.
async fn round_with_pause<F: std::future::Future<Output = ()>>(
    plan: &Plan,
    coordinator: &ClientSecurity,
    endpoints: &BTreeMap<String, SocketAddr>,
    between: F,
) -> RoundEvidence {
    let id = control::random_id(8);
    let digest = control::plan_digest(plan);
    let mut conns = BTreeMap::new();
    let mut agents = BTreeMap::new();
    for h in &plan.hosts {
        let ip = ip_of(plan, &h.name);
        let mut c = control::connect(
            coordinator,
            &h.name,
            Some(ip),
            endpoints[&h.name],
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        let r = c
            .request(
                &Request::Prepare(PrepareRequest {
                    round: id.clone(),
                    host: h.name.clone(),
                    plan_digest: digest.clone(),
                    ttl_ms: 60_000,
                    version: probe_core::control::PROTOCOL_VERSION,
                    nonce_key: None,
                    samples: 1,
                }),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        let Response::Prepared(p) = r else {
            panic!("{r:?}")
        };
        let mut ev = AgentEvidence::unreachable(String::new());
        ev.outcome = AgentOutcome::Up;
        ev.listeners = p.listeners;
        agents.insert(h.name.clone(), ev);
        conns.insert(h.name.clone(), c);
    }
    let started_at = std::time::SystemTime::now();
    between.await;
    let probe = Request::Probe(ProbeRequest {
        round: id.clone(),
        live: vec![],
        skip: vec![],
        skip_hosts: vec![],
        only: None,
        samples: 1,
        elsewhere: Vec::new(),
    });
    for host in ["web", "app"] {
        let r = conns
            .get_mut(host)
            .unwrap()
            .request(&probe, Duration::from_secs(30))
            .await
            .unwrap();
        let Response::Probed(p) = r else {
            panic!("{r:?}")
        };
        agents.get_mut(host).unwrap().probes = p.results;
    }
    for (host, c) in &mut conns {
        // Generous: the flood may still be running, and this test is about
        // exact verdicts, not speed (a loaded CI machine took over 5 s).
        let r = c
            .request(
                &Request::Evidence(RoundRef { round: id.clone() }),
                Duration::from_secs(20),
            )
            .await
            .unwrap();
        let Response::Evidence(e) = r else {
            panic!("{r:?}")
        };
        agents.get_mut(host).unwrap().canaries = e.canaries;
        let _ = c
            .request(
                &Request::Teardown(RoundRef { round: id.clone() }),
                Duration::from_secs(5),
            )
            .await;
    }
    RoundEvidence {
        started_at,
        finished_at: std::time::SystemTime::now(),
        agents,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_completes_exactly_while_400_idle_connections_are_held_against_a_canary_port() {
    let plan = Arc::new(plan(53));
    let pki = pki_dir(&plan);
    let agents = Agents::start(&plan, pki.path(), AgentLimits::default()).await;
    let coordinator = identity(pki.path(), COORDINATOR);
    let baseline = round_with_pause(&plan, &coordinator, &agents.endpoints, async {}).await;
    let baseline = report::join(&plan, &baseline);
    assert_eq!(baseline.summary.ok, baseline.summary.paths, "{baseline:?}");

    let canary: SocketAddr = "127.0.53.3:13306".parse().unwrap();
    let flood = Flood::start("127.0.53.9".parse().unwrap(), canary, 400);
    let evidence = round_with_pause(&plan, &coordinator, &agents.endpoints, async {
        // The canary holds the round's two nonces plus headroom; the
        // flood is there once it has filled that many slots.
        flood.wait_held(66, Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    })
    .await;
    let opened = flood.stop().await;
    let report = report::join(&plan, &evidence);
    assert_eq!(verdicts(&report), verdicts(&baseline), "{report:#?}");
    let shed: u64 = evidence.agents["db"]
        .canaries
        .iter()
        .filter(|c| c.port == 13306)
        .map(|c| c.shed)
        .sum();
    assert!(
        shed > 0,
        "the canary says it shed the flood ({opened} opened)"
    );
    assert!(
        report
            .paths
            .iter()
            .all(|p| p.observed != Some(Observed::WrongHost)),
        "{report:#?}"
    );
    agents.stop().await;
}

#[tokio::test]
async fn canaries_close_within_the_lease_when_the_coordinator_vanishes_mid_round() {
    let plan = Arc::new(plan(54));
    let pki = pki_dir(&plan);
    let limits = AgentLimits {
        lease: Duration::from_secs(2),
        ..AgentLimits::default()
    };
    let agents = Agents::start(&plan, pki.path(), limits).await;
    let coordinator = identity(pki.path(), COORDINATOR);
    let ip = ip_of(&plan, "db");
    let mut c = control::connect(
        &coordinator,
        "db",
        Some(ip),
        agents.endpoints["db"],
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    // A TTL of ten minutes: only the lease can close the canary in time.
    let r = c
        .request(
            &Request::Prepare(PrepareRequest {
                round: "1ea5e".into(),
                host: "db".into(),
                plan_digest: control::plan_digest(&plan),
                ttl_ms: 600_000,
                version: probe_core::control::PROTOCOL_VERSION,
                nonce_key: None,
                samples: 1,
            }),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert!(matches!(&r, Response::Prepared(p) if p.listeners[0].state == ListenerState::Canary));
    // While the coordinator's connection lives, the lease holds past its
    // length.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.54.3", 13306))
            .await
            .is_ok()
    );
    // A renew answers with the lease.
    let r = c
        .request(
            &Request::Renew(RoundRef {
                round: "1ea5e".into(),
            }),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert!(
        matches!(&r, Response::Renewed(l) if l.lease_ms == 2000),
        "{r:?}"
    );
    // The coordinator dies: its connection closes, nothing renews.
    drop(c);
    let died = Instant::now();
    loop {
        if std::net::TcpListener::bind(("127.0.54.3", 13306)).is_ok() {
            break;
        }
        assert!(
            died.elapsed() < Duration::from_secs(4),
            "the canary outlived the 2 s lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        died.elapsed() >= Duration::from_millis(1500),
        "closed before the lease ran out"
    );
    agents.stop().await;
}

#[tokio::test]
async fn a_connection_that_floods_or_stops_reading_does_not_lock_out_the_coordinator() {
    let plan = Arc::new(plan(55));
    let pki = pki_dir(&plan);
    let limits = AgentLimits {
        write_timeout: Duration::from_millis(500),
        ..AgentLimits::default()
    };
    let agents = Agents::start(&plan, pki.path(), limits).await;
    let coordinator = identity(pki.path(), COORDINATOR);
    let (addr, ip) = (agents.endpoints["db"], ip_of(&plan, "db"));
    // One connection spends its whole budget...
    let mut greedy = control::connect(&coordinator, "db", Some(ip), addr, Duration::from_secs(2))
        .await
        .unwrap();
    let mut limited = 0;
    for _ in 0..100 {
        if let Err(ControlError::Refused { message, .. }) = greedy
            .request(&Request::Hello, Duration::from_secs(2))
            .await
        {
            assert!(message.contains("rate limit"), "{message}");
            limited += 1;
        }
    }
    assert!(limited > 0);
    // ...and another is served at once: budgets are per connection.
    let mut other = control::connect(&coordinator, "db", Some(ip), addr, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(matches!(
        other.request(&Request::Hello, Duration::from_secs(2)).await,
        Ok(Response::Hello(_))
    ));
    // A client that sends requests but never reads a reply is cut off once
    // its unread replies fill the socket buffers.
    let mut deaf = control::connect(&coordinator, "db", Some(ip), addr, Duration::from_secs(2))
        .await
        .unwrap();
    let hello = b"{\"op\":\"hello\"}\n".repeat(2000);
    let cut = async {
        loop {
            if deaf.send_raw(&hello).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(30), cut)
            .await
            .is_ok(),
        "a client that never reads kept its connection"
    );
    assert!(matches!(
        other.request(&Request::Hello, Duration::from_secs(2)).await,
        Ok(Response::Hello(_))
    ));
    agents.stop().await;
}

// A stranger on the coordinator's own address (a shared bastion or NAT):
// idle connections from the address the coordinator's round comes from,
// churned as fast as the agents shed them, during whole rounds. Issue 22
// found every agent lost at `prepare` ("Broken pipe"): the agents evicted
// the oldest pending connection of that address, the coordinator's own
// right after its handshake. Plays on 127.0.69.0/24; the round and the
// flood both come from 127.0.0.1, the kernel's source for loopback.

const SAME_ADDRESS_PLAN: &str = r#"
name = "same-address"
[defaults]
timeout_ms = 3000
retries = 0
[[hosts]]
name = "web"
address = "127.0.69.1"
[[hosts]]
name = "app"
address = "127.0.69.2"
roles = ["app"]
[[hosts]]
name = "db"
address = "127.0.69.3"
roles = ["db"]
[roles.app]
ports = [{ name = "http", port = 18080, offset = false }]
[roles.db]
ports = [{ name = "sql", port = 13306, offset = false }]
[[flows]]
from = "host:web"
to = "host:app"
ports = ["http"]
[[flows]]
from = ["host:app", "host:web"]
to = "host:db"
ports = ["sql"]
"#;

/// `per_target` idle connections from `source` to each target, each
/// reopened 1 ms after the agent closes it, until `stop` fires; counts
/// the connections opened.
fn churn(
    source: IpAddr,
    targets: &[SocketAddr],
    per_target: usize,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> Arc<AtomicUsize> {
    let opened = Arc::new(AtomicUsize::new(0));
    for &target in targets {
        for _ in 0..per_target {
            let (opened, stop) = (opened.clone(), stop.clone());
            tasks.spawn(async move {
                while !stop.is_cancelled() {
                    let socket = TcpSocket::new_v4().unwrap();
                    socket.bind(SocketAddr::new(source, 0)).unwrap();
                    let conn = tokio::select! {
                        () = stop.cancelled() => return,
                        c = socket.connect(target) => c,
                    };
                    if let Ok(mut conn) = conn {
                        opened.fetch_add(1, Ordering::Relaxed);
                        let mut b = [0u8; 64];
                        tokio::select! {
                            () = stop.cancelled() => return,
                            _ = async { while matches!(conn.read(&mut b).await, Ok(n) if n > 0) {} } => {}
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
        }
    }
    opened
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_strangers_on_the_coordinators_address_lose_no_agent_in_5_rounds() {
    let plan = Arc::new(Plan::parse(SAME_ADDRESS_PLAN, "same-address.toml").unwrap());
    let pki = pki_dir(&plan);
    let agents = Agents::start(&plan, pki.path(), AgentLimits::default()).await;
    let endpoints = agents.endpoints.clone();
    let coordinator = ClientSecurity::Mtls(TlsIdentity::load(pki.path(), COORDINATOR).unwrap());
    let config = RoundConfig {
        connect_timeout: Duration::from_secs(2),
        endpoints: endpoints.clone(),
        ..RoundConfig::default()
    };
    let round_cancel = CancellationToken::new();
    let baseline = round::check(&plan, &coordinator, &config, &round_cancel).await;
    assert_eq!(baseline.summary.ok, baseline.summary.paths, "{baseline:?}");

    // 64 idle connections per agent from the coordinator's own address.
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    let targets: Vec<SocketAddr> = endpoints.values().copied().collect();
    let opened = churn("127.0.0.1".parse().unwrap(), &targets, 64, &stop, &tasks);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut lost = Vec::new();
    for i in 0..5 {
        let report = round::check(&plan, &coordinator, &config, &round_cancel).await;
        for h in &report.hosts {
            if h.agent != report::AgentState::Up {
                lost.push(format!("round {i}: {}: {:?}", h.name, h.agent_detail));
            }
        }
        if report.summary.ok != report.summary.paths {
            lost.push(format!("round {i}: {:?}", report.summary));
        }
    }
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    let opened = opened.load(Ordering::Relaxed);
    assert!(
        opened > 3 * 64 * 2,
        "the strangers churned ({opened} connections)"
    );
    assert!(lost.is_empty(), "agents lost under churn: {lost:#?}");
    agents.stop().await;
}
