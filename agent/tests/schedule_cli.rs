//! `portcall agent --every ... --metrics ...` as systemd runs it: the real
//! binary on loopback, stopped by SIGTERM or SIGINT within a second (even in
//! the middle of a round), reloading its plan on SIGHUP and keeping the old
//! one when the new one is invalid, and rejecting bad arguments with exit 2.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

mod common;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback service that accepts connections and holds them open without
/// a word, for as long as the test runs.
fn silent_service(ip: &str) -> u16 {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten().take(10_000) {
            held.push(s);
        }
    });
    port
}

fn plan(db_port: u16, db_protocol: &str, extra_blocked: Option<u16>) -> String {
    let mut s = format!(
        r#"name = "schedule-cli"

[defaults]
timeout_ms = {timeout}
retries = 0

[[hosts]]
name = "app"
address = "127.0.0.1"

[[hosts]]
name = "db"
address = "127.0.0.2"
roles = ["db"]

[roles.db]
ports = [{{ name = "svc", port = {db_port}, protocol = "{db_protocol}", offset = false }}]

[[flows]]
from = "host:app"
to = "host:db"
ports = ["svc"]
"#,
        timeout = if db_protocol == "tls" { 20_000 } else { 500 }
    );
    if let Some(p) = extra_blocked {
        s.push_str(&format!(
            "\n[[flows]]\nfrom = \"host:app\"\nto = \"host:db\"\nports = [{p}]\nexpect = \"blocked\"\n"
        ));
    }
    s
}

struct Agent {
    child: Child,
    metrics: SocketAddr,
}

impl Agent {
    fn start(plan: &Path) -> Agent {
        Agent::start_with(plan, &[])
    }

    /// [`Agent::start`] with more arguments.
    fn start_with(plan: &Path, extra: &[&str]) -> Agent {
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_portcall"))
            .args(["agent", "--plan"])
            .arg(plan)
            .args(["--host", "app", "--every", "1s", "--metrics"])
            .arg(metrics.to_string())
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run portcall");
        Agent { child, metrics }
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// `/metrics`, or `None` while the endpoint is not up.
    fn metrics(&self) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    }

    /// Waits until `/metrics` satisfies `f`; panics with the last exposition.
    fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(m) = self.metrics() {
                if f(&m) {
                    return m;
                }
                last = Some(m);
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("{what}: not reached in 15 s; last /metrics:\n{last:?}");
    }

    /// Sends `sig` and returns how long the agent took to exit, and how.
    fn stop_with(mut self, sig: &str) -> (Duration, std::process::ExitStatus) {
        let t = Instant::now();
        self.signal(sig);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (t.elapsed(), status);
            }
            if t.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                panic!("the agent ignored SIG{sig} for 10 s");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rounds(m: &str) -> u64 {
    m.lines()
        .find_map(|l| l.strip_prefix("portcall_rounds_total{plan=\"schedule-cli\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn sighup_reloads_the_plan_and_keeps_the_old_one_when_the_new_one_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let db = TcpListener::bind("127.0.0.2:0").unwrap();
    let db_port = db.local_addr().unwrap().port();
    let closed = TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let plan_path = dir.path().join("plan.toml");
    std::fs::write(&plan_path, plan(db_port, "tcp", None)).unwrap();
    let agent = Agent::start(&plan_path);

    let ok = format!(
        r#"portcall_path_ok{{plan="schedule-cli",from="app",to="db",port="{db_port}",service="svc",expect="open",family="ipv4"}} 1"#
    );
    let m = agent.wait_for("the first round", |m| m.contains(&ok));
    // A steady path: no state change, not flapping.
    for family in ["portcall_path_flaps_total", "portcall_path_flapping"] {
        let line = format!(
            r#"{family}{{plan="schedule-cli",from="app",to="db",port="{db_port}",service="svc",expect="open",family="ipv4"}} 0"#
        );
        assert!(m.contains(&line), "{line} in\n{m}");
    }

    // An invalid plan: reported, and the old plan goes on being probed.
    std::fs::write(&plan_path, "name = \"broken\"\n[[hosts]]\nname = ").unwrap();
    agent.signal("HUP");
    let m = agent.wait_for("the failed reload", |m| {
        m.contains("portcall_plan_last_reload_successful{plan=\"schedule-cli\"} 0")
    });
    let before = rounds(&m);
    let m = agent.wait_for("rounds after the failed reload", |m| {
        rounds(m) >= before + 2
    });
    assert!(m.contains(&ok), "{m}");

    // A valid plan with one more path: both are probed from the next round.
    // The new must-be-blocked port is refused with no canary there: no
    // verdict (a firewall's reset or a stopped service), so not ok.
    std::fs::write(&plan_path, plan(db_port, "tcp", Some(closed))).unwrap();
    agent.signal("HUP");
    let blocked = format!(
        r#"portcall_path_ok{{plan="schedule-cli",from="app",to="db",port="{closed}",service="{closed}",expect="blocked",family="ipv4"}} 0"#
    );
    let m = agent.wait_for("the new path", |m| {
        m.contains(&blocked)
            && m.contains("portcall_plan_last_reload_successful{plan=\"schedule-cli\"} 1")
    });
    assert!(m.contains(&ok), "{m}");

    let (took, status) = agent.stop_with("TERM");
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(1), "SIGTERM took {took:?}");
    drop(db);
}

/// The value of the per-path series `name` of the `svc` path, if exported.
fn path_value(m: &str, name: &str, port: u16) -> Option<u64> {
    let prefix = format!(
        r#"{name}{{plan="schedule-cli",from="app",to="db",port="{port}",service="svc",expect="open",family="ipv4"}} "#
    );
    m.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.parse().ok())
}

/// `agent --samples 10`: every round adds 10 samples sent and answered to
/// the open path's counters and 10 round trips to its histogram; the
/// exposition passes `promtool check metrics`.
#[test]
fn samples_grow_by_n_per_round_and_the_exposition_passes_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let db = TcpListener::bind("127.0.0.2:0").unwrap();
    let db_port = db.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in db.incoming().take(10_000) {
            drop(s);
        }
    });
    let plan_path = dir.path().join("plan.toml");
    std::fs::write(&plan_path, plan(db_port, "tcp", None)).unwrap();
    let agent = Agent::start_with(&plan_path, &["--samples", "10"]);
    let m = agent.wait_for("two rounds", |m| rounds(m) >= 2);
    let n = rounds(&m);
    let value = |name| path_value(&m, name, db_port);
    assert_eq!(
        value("portcall_path_samples_sent_total"),
        Some(10 * n),
        "{m}"
    );
    assert_eq!(
        value("portcall_path_samples_answered_total"),
        Some(10 * n),
        "{m}"
    );
    assert_eq!(
        value("portcall_path_rtt_seconds_count"),
        Some(10 * n),
        "{m}"
    );
    assert!(
        m.contains("# TYPE portcall_path_rtt_seconds histogram\n"),
        "{m}"
    );
    // No path samples into `app`: it counts nothing, and no arrived series
    // is made up for the path it samples.
    assert!(!m.contains("portcall_path_samples_arrived_total{"), "{m}");

    if common::promtool_available() {
        let file = dir.path().join("metrics.prom");
        std::fs::write(&file, &m).unwrap();
        let out = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&file).unwrap())
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool: {}{}\n{m}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (_, status) = agent.stop_with("TERM");
    assert!(status.success(), "{status}");
}

#[test]
fn sigterm_and_sigint_stop_the_agent_within_a_second_even_mid_round() {
    let dir = tempfile::tempdir().unwrap();
    // A TLS path to a service that never answers the handshake: each round
    // sits in it for the plan's 20 s timeout.
    let port = silent_service("127.0.0.2");
    let plan_path = dir.path().join("plan.toml");
    std::fs::write(&plan_path, plan(port, "tls", None)).unwrap();

    for sig in ["TERM", "INT"] {
        let agent = Agent::start(&plan_path);
        let m = agent.wait_for("the endpoint", |_| true);
        assert_eq!(rounds(&m), 0, "the first round cannot have finished:\n{m}");
        // Past the first round's start (at most 100 ms of jitter in).
        thread::sleep(Duration::from_millis(300));
        let (took, status) = agent.stop_with(sig);
        assert!(status.success(), "SIG{sig}: {status}");
        assert!(took < Duration::from_secs(1), "SIG{sig} took {took:?}");
    }
}

fn portcall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcall"))
        .args(args)
        .output()
        .expect("run portcall")
}

#[test]
fn bad_schedule_arguments_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let plan_path = dir.path().join("plan.toml");
    std::fs::write(&plan_path, plan(9, "tcp", None)).unwrap();
    let p = plan_path.to_str().unwrap();
    let cases: [(&[&str], &str); 10] = [
        (
            &[
                "--every",
                "1s",
                "--metrics",
                "127.0.0.1:0",
                "--samples",
                "0",
            ],
            "invalid value '0' for '--samples <N>'",
        ),
        (
            &["--every", "5", "--metrics", "127.0.0.1:0"],
            "5 needs a unit",
        ),
        (
            &["--every", "5mn", "--metrics", "127.0.0.1:0"],
            "unknown unit \"mn\"",
        ),
        (&["--every", "1s"], "--metrics"),
        (
            &["--every", "500ms", "--metrics", "127.0.0.1:0"],
            "too short",
        ),
        (
            &[
                "--host",
                "nope",
                "--every",
                "1s",
                "--metrics",
                "127.0.0.1:0",
            ],
            "host \"nope\" is not in plan",
        ),
        (
            &[
                "--every",
                "1s",
                "--metrics",
                "127.0.0.1:0",
                "--flap-window",
                "1",
            ],
            "--flap-window 1 is out of range: give 2 to 1000 rounds",
        ),
        (
            &[
                "--every",
                "1s",
                "--metrics",
                "127.0.0.1:0",
                "--flap-window",
                "1001",
            ],
            "--flap-window 1001 is out of range",
        ),
        (
            &[
                "--every",
                "1s",
                "--metrics",
                "127.0.0.1:0",
                "--flap-changes",
                "21",
            ],
            "--flap-changes 21 is out of range: give 2 to --flap-window (20)",
        ),
        (
            &[
                "--every",
                "1s",
                "--metrics",
                "127.0.0.1:0",
                "--flap-changes",
                "three",
            ],
            "invalid value 'three' for '--flap-changes <K>'",
        ),
    ];
    for (args, needle) in cases {
        let mut full = vec!["agent", "--plan", p];
        full.extend_from_slice(args);
        let out = portcall(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{full:?}: {err}");
        assert!(
            err.contains(needle),
            "{full:?}: expected {needle:?} in {err}"
        );
    }

    std::fs::write(&plan_path, "name = 3\n").unwrap();
    let out = portcall(&[
        "agent",
        "--plan",
        p,
        "--every",
        "1s",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("plan.toml:1:"), "{err}");
}
