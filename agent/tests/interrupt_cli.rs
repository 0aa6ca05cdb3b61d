//! Ctrl-C and SIGTERM as an operator sends them: real `portcall agent`
//! processes on loopback (`--insecure`), a real `portcall check` and
//! `portcall probe`, a real signal. An interrupted round is torn down on
//! every agent at once (not at the TTL), reported `cancelled`, and both
//! commands exit 130.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Three hosts on 127.0.57.0/24; db's port is held by a silent "service"
/// so the round's probe phase lasts its 4 s timeout.
const PLAN: &str = r#"
name = "interrupt"
[defaults]
timeout_ms = 4000
retries = 0
control_port = 17957
[[hosts]]
name = "web"
address = "127.0.57.1"
[[hosts]]
name = "app"
address = "127.0.57.2"
roles = ["app"]
[[hosts]]
name = "db"
address = "127.0.57.3"
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

/// A child killed on drop, so a failing test leaves no process behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.0.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    fn wait_for(&mut self, limit: Duration) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            assert!(t.elapsed() < limit, "still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn agent(plan: &Path, host: &str) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcall"))
        .args(["agent", "--insecure", "--host", host, "--plan"])
        .arg(plan)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start an agent");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let up = lines.any(|l| l.is_ok_and(|l| l.contains("control endpoint on")));
    assert!(up, "agent {host} did not start");
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Proc(child)
}

/// A listener whose accept queue is full: SYNs to it go unanswered.
fn silent(addr: &str) -> (socket2::Socket, TcpStream) {
    let addr: SocketAddr = addr.parse().unwrap();
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&addr.into()).unwrap();
    s.listen(0).unwrap();
    let filler = TcpStream::connect(addr).unwrap();
    (s, filler)
}

fn canary_up(addr: &str) -> bool {
    TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200)).is_ok()
}

#[test]
fn ctrl_c_during_check_tears_the_round_down_reports_cancelled_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(&plan, PLAN).unwrap();
    let _service = silent("127.0.57.3:13306");
    let _agents: Vec<Proc> = ["web", "app", "db"]
        .iter()
        .map(|h| agent(&plan, h))
        .collect();

    let mut check = Proc(
        Command::new(env!("CARGO_BIN_EXE_portcall"))
            .args(["check", "--insecure", "--format", "json", "--plan"])
            .arg(&plan)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !canary_up("127.0.57.2:18080") {
        assert!(Instant::now() < deadline, "the round never prepared");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    check.signal("INT");
    let status = check.wait_for(Duration::from_secs(5));
    let took = t.elapsed();
    let mut stdout = String::new();
    let mut stderr = String::new();
    check
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    check
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(took < Duration::from_millis(3000), "took {took:?}");
    // Torn down now, not at the round's TTL (tens of seconds).
    assert!(!canary_up("127.0.57.2:18080"), "app's canary is still up");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect(&stderr);
    for h in report["hosts"].as_array().unwrap() {
        assert_eq!(h["agent"], "cancelled", "{h}");
    }
    assert!(!stdout.contains("unreachable"), "{stdout}");
    assert!(stderr.contains("interrupted"), "{stderr}");
}

#[test]
fn sigterm_during_probe_exits_130() {
    let (_service, _filler) = silent("127.0.57.9:13306");
    let mut probe = Proc(
        Command::new(env!("CARGO_BIN_EXE_portcall"))
            .args(["probe", "127.0.57.9:13306", "--timeout-ms", "8000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    probe.signal("TERM");
    let status = probe.wait_for(Duration::from_secs(3));
    assert_eq!(status.code(), Some(130));
}
