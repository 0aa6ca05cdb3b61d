//! Schedule mode against a real Prometheus server on loopback: Prometheus
//! scrapes a schedule-mode agent, a PromQL query through its HTTP API
//! returns the expected `portcall_path_ok` values, and the shipped
//! `PortcallPathNotOk` rule fires for a path that goes down.
//!
//! Needs `prometheus` and `promtool` (Debian package `prometheus`). Without
//! them the test prints `skipped: <reason>` and passes, unless
//! `PORTCALL_REQUIRE_LAB=1`, when it fails.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use probe_core::schedule::{ScheduleConfig, Scheduled, Timing};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The rule file operators deploy; the test runs a copy with short timings.
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../scripts/deploy/prometheus/portcall-rules.yml"
);

fn require_lab() -> bool {
    std::env::var("PORTCALL_REQUIRE_LAB").is_ok_and(|v| v == "1")
}

/// `None` when `tool --version` runs, else why not.
fn missing(tool: &str) -> Option<String> {
    match Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!("{tool} --version exited with {s}")),
        Err(e) => Some(format!(
            "{tool} not runnable ({e}); install Debian package prometheus"
        )),
    }
}

/// A child process killed and reaped on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A listener that accepts and closes connections until its task is
/// aborted; aborting it closes the port (the path "goes down").
struct Service {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Service {
    async fn start(ip: Ipv4Addr) -> Result<Service> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
        Ok(Service { port, task })
    }

    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A loopback port that nothing listens on.
fn closed_port(ip: Ipv4Addr) -> Result<u16> {
    let l = std::net::TcpListener::bind((ip, 0))?;
    Ok(l.local_addr()?.port())
}

/// A plain HTTP/1.0 GET on loopback; returns the body of a 200 reply.
async fn http_get(addr: SocketAddr, target: &str) -> Result<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .context("connect timed out")??;
    s.write_all(format!("GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .context("reply timed out")??;
    let text = String::from_utf8(buf)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    ensure!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "GET {target}: {head}\n{body}"
    );
    Ok(body.to_string())
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs an instant PromQL query; returns `(labels, value)` per series.
async fn query(
    prom: SocketAddr,
    promql: &str,
) -> Result<Vec<(serde_json::Map<String, Value>, String)>> {
    let body = http_get(
        prom,
        &format!("/api/v1/query?query={}", percent_encode(promql)),
    )
    .await?;
    let v: Value = serde_json::from_str(&body)?;
    ensure!(v["status"] == "success", "query {promql}: {body}");
    let mut out = Vec::new();
    for r in v["data"]["result"].as_array().context("no result array")? {
        let labels = r["metric"].as_object().context("no metric")?.clone();
        let value = r["value"][1].as_str().context("no value")?.to_string();
        out.push((labels, value));
    }
    Ok(out)
}

/// `to -> value` of `portcall_path_ok` as Prometheus has it now.
async fn path_ok_by_target(prom: SocketAddr) -> Result<Vec<(String, String)>> {
    let mut v: Vec<(String, String)> = query(prom, "portcall_path_ok")
        .await?
        .into_iter()
        .map(|(l, v)| (l["to"].as_str().unwrap_or("?").to_string(), v))
        .collect();
    v.sort();
    Ok(v)
}

/// Polls `check` every 250 ms until it returns `Some`, or fails after
/// `limit` with the last state seen.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, (String, Option<anyhow::Error>)>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match check().await {
            Ok(Some(t)) => return Ok(t),
            Ok(None) => String::new(),
            Err((state, e)) => format!(
                "{state} {}",
                e.map(|e| format!("{e:#}")).unwrap_or_default()
            ),
        };
        if Instant::now() > deadline {
            bail!("{what}: not reached within {limit:?}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn write_plan(dir: &Path, db: u16, web: u16, vault: u16) -> Result<PathBuf> {
    let plan = format!(
        r#"name = "prometheus-test"

[defaults]
timeout_ms = 300
retries = 0

[[hosts]]
name = "app"
address = "127.0.0.1"

[[hosts]]
name = "db"
address = "127.0.0.2"
roles = ["db"]

[[hosts]]
name = "web"
address = "127.0.0.3"
roles = ["web"]

[[hosts]]
name = "vault"
address = "127.0.0.4"
roles = ["vault"]

[roles.db]
ports = [{{ name = "mysql", port = {db}, offset = false }}]

[roles.web]
ports = [{{ name = "http", port = {web}, offset = false }}]

[roles.vault]
ports = [{{ name = "admin", port = {vault}, offset = false }}]

[[flows]]
from = "host:app"
to = ["host:db", "host:web"]
ports = ["mysql", "http"]

[[flows]]
from = "host:app"
to = "host:vault"
ports = ["admin"]
expect = "blocked"
"#
    );
    let path = dir.join("plan.toml");
    std::fs::write(&path, plan)?;
    Ok(path)
}

/// The shipped rules with test timings: the rule must hold 2 s instead of
/// 7 min (rounds run every second here, not every five minutes).
fn test_rules() -> Result<String> {
    let shipped = std::fs::read_to_string(RULES).with_context(|| format!("read {RULES}"))?;
    let marker = "expr: portcall_path_ok == 0\n        for: 7m\n";
    ensure!(
        shipped.matches(marker).count() == 1,
        "{RULES} no longer has {marker:?}; update this test with the rule"
    );
    Ok(shipped.replace(marker, "expr: portcall_path_ok == 0\n        for: 2s\n"))
}

fn promtool_check_metrics(text: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_agent_and_alerts_on_a_path_that_goes_down() -> Result<()> {
    for tool in ["prometheus", "promtool"] {
        if let Some(reason) = missing(tool) {
            if require_lab() {
                bail!("PORTCALL_REQUIRE_LAB=1 but {reason}");
            }
            println!("skipped: {reason}");
            return Ok(());
        }
    }

    let dir = tempfile::tempdir()?;
    let db = Service::start(Ipv4Addr::new(127, 0, 0, 2)).await?;
    let web = Service::start(Ipv4Addr::new(127, 0, 0, 3)).await?;
    let vault = closed_port(Ipv4Addr::new(127, 0, 0, 4))?;
    let plan = write_plan(dir.path(), db.port, web.port, vault)?;

    // The agent, in schedule mode, every second.
    let mut config = ScheduleConfig::new(
        plan,
        Duration::from_secs(1),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
    );
    config.host = Some("app".into());
    config.timing = Timing {
        every: Duration::from_secs(1),
        jitter: Duration::from_millis(100),
    };
    let scheduled = Scheduled::start(config).await?;
    let agent_addr = scheduled.metrics_addr();
    let cancel = CancellationToken::new();
    let agent = tokio::spawn(scheduled.run(cancel.clone()));

    // Its exposition, after a first round, is clean for promtool.
    let exposition = eventually("a first round", Duration::from_secs(10), || async {
        let body = http_get(agent_addr, "/metrics")
            .await
            .map_err(|e| (String::new(), Some(e)))?;
        Ok(body
            .contains("portcall_last_round_timestamp_seconds{")
            .then_some(body))
    })
    .await?;
    promtool_check_metrics(&exposition)?;

    // Prometheus on loopback, scraping and evaluating every second.
    let prom_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    std::fs::write(dir.path().join("rules.yml"), test_rules()?)?;
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - rules.yml\n\
             scrape_configs:\n  - job_name: portcall\n    static_configs:\n      - targets: ['{agent_addr}']\n"
        ),
    )?;
    let check = Command::new("promtool")
        .args(["check", "config"])
        .arg(dir.path().join("prometheus.yml"))
        .output()?;
    ensure!(
        check.status.success(),
        "promtool check config: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start prometheus")?,
    );
    let prom_log =
        || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();

    // db and web open as planned. vault's must-be-blocked port is refused
    // with no canary there (schedule mode probes live services): a reset
    // cannot tell a firewall from a stopped service, so it has no verdict
    // and is not ok (the same rule as `check`).
    let ok = [
        ("db".to_string(), "1".to_string()),
        ("vault".to_string(), "0".to_string()),
        ("web".to_string(), "1".to_string()),
    ];
    eventually(
        "portcall_path_ok all 1",
        Duration::from_secs(30),
        || async {
            let got = path_ok_by_target(prom_addr)
                .await
                .map_err(|e| (String::new(), Some(e)))?;
            if got == ok {
                Ok(Some(()))
            } else {
                Err((format!("{got:?}"), None))
            }
        },
    )
    .await
    .with_context(|| format!("prometheus log:\n{}", prom_log()))?;

    // The labels are the specified ones, and Prometheus adds job/instance.
    let series = query(prom_addr, r#"portcall_path_ok{to="vault"}"#).await?;
    ensure!(series.len() == 1, "{series:?}");
    let labels = &series[0].0;
    for (k, v) in [
        ("from", "app"),
        ("to", "vault"),
        ("port", vault.to_string().as_str()),
        ("service", "admin"),
        ("expect", "blocked"),
        ("job", "portcall"),
    ] {
        ensure!(
            labels.get(k).and_then(Value::as_str) == Some(v),
            "label {k} in {labels:?}"
        );
    }
    let no_alert = query(
        prom_addr,
        r#"ALERTS{alertname="PortcallPathNotOk",to!="vault"}"#,
    )
    .await?;
    ensure!(
        no_alert.is_empty(),
        "alert before anything went down: {no_alert:?}"
    );

    // The web service goes down: its path turns not ok, and after two
    // rounds' worth of `for` the alert fires for exactly that path.
    web.stop().await;
    let down = [
        ("db".to_string(), "1".to_string()),
        ("vault".to_string(), "0".to_string()),
        ("web".to_string(), "0".to_string()),
    ];
    eventually(
        "portcall_path_ok web 0",
        Duration::from_secs(15),
        || async {
            let got = path_ok_by_target(prom_addr)
                .await
                .map_err(|e| (String::new(), Some(e)))?;
            if got == down {
                Ok(Some(()))
            } else {
                Err((format!("{got:?}"), None))
            }
        },
    )
    .await?;
    let firing = eventually(
        "PortcallPathNotOk firing",
        Duration::from_secs(20),
        || async {
            let got = query(
                prom_addr,
                r#"ALERTS{alertname="PortcallPathNotOk",alertstate="firing",to!="vault"}"#,
            )
            .await
            .map_err(|e| (String::new(), Some(e)))?;
            if got.is_empty() {
                Err(("no firing alert".into(), None))
            } else {
                Ok(Some(got))
            }
        },
    )
    .await?;
    ensure!(firing.len() == 1, "one path went down, alerts: {firing:?}");
    let labels = &firing[0].0;
    ensure!(
        labels.get("to").and_then(Value::as_str) == Some("web")
            && labels.get("service").and_then(Value::as_str) == Some("http")
            && labels.get("expect").and_then(Value::as_str) == Some("open"),
        "alert for the wrong path: {labels:?}"
    );

    // The agent stops promptly when asked.
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(1), agent)
        .await
        .context("the agent did not stop within 1 s")??;
    db.stop().await;
    Ok(())
}
