//! A stranger on the coordinator's own address (a shared bastion or NAT):
//! idle connections from the address the coordinator's round comes from,
//! churned as fast as the agents shed them, during whole rounds. Issue 22
//! found every agent lost at `prepare` ("Broken pipe"): the agents evicted
//! the oldest pending connection of that address, the coordinator's own
//! right after its handshake. Plays on 127.0.69.0/24; the round and the
//! flood both come from 127.0.0.1, the kernel's source for loopback.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use probe_core::agent::{Agent, AgentConfig, AgentLimits};
use probe_core::control::{ClientSecurity, ServerSecurity};
use probe_core::pki::{self, COORDINATOR, IssueRequest, TlsIdentity};
use probe_core::plan::{Address, Plan};
use probe_core::report::AgentState;
use probe_core::round::{self, RoundConfig};
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const PLAN: &str = r#"
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

fn ip_of(plan: &Plan, host: &str) -> IpAddr {
    match plan.host(host).unwrap().address {
        Address::Ip(ip) => ip,
        Address::Dns(_) => unreachable!(),
    }
}

fn pki_dir(plan: &Plan) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    pki::init(dir.path(), false).unwrap();
    for h in &plan.hosts {
        let mut req = IssueRequest::new(h.name.as_str());
        req.ips.push(ip_of(plan, &h.name));
        pki::issue(dir.path(), &req, false).unwrap();
    }
    pki::issue(dir.path(), &IssueRequest::new(COORDINATOR), false).unwrap();
    dir
}

async fn start_agents(
    plan: &Arc<Plan>,
    pki: &Path,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> BTreeMap<String, SocketAddr> {
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
            limits: AgentLimits::default(),
        })
        .await
        .unwrap();
        endpoints.insert(h.name.clone(), agent.local_addr());
        tracker.spawn(agent.run(cancel.clone()));
    }
    endpoints
}

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
    let plan = Arc::new(Plan::parse(PLAN, "same-address.toml").unwrap());
    let pki = pki_dir(&plan);
    let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
    let endpoints = start_agents(&plan, pki.path(), &cancel, &tracker).await;
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
            if h.agent != AgentState::Up {
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
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}
