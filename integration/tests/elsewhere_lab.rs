//! A canary only where nothing holds the port (issue 26, deliver 1): a
//! service bound to loopback only, or to another interface's address, or
//! to the other family, on a planned port with the firewall open, makes
//! the path what its clients meet (refused: a violation naming where the
//! service listens and which process holds it), never `open` through a
//! canary beside it. And the agent's own sockets are never a live
//! service: `check` killed after prepare and run again within the lease
//! gives the clean run's verdicts.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use integration::firewall;
use integration::{PlanLab, lab_available};
use probe_core::probe::Observed;
use probe_core::report::{PathReport, Report, Verdict};

/// `coord` runs `check`; `web` dials `db`'s two planned ports, both open
/// in the firewall.
const PLAN: &str = r#"
name = "elsewhere-lab"
[defaults]
timeout_ms = 1000
retries = 0
[[hosts]]
name = "coord"
address = "198.18.0.40"
[[hosts]]
name = "web"
address = "198.18.0.41"
[[hosts]]
name = "db"
address = "198.18.0.42"
roles = ["db"]
[roles.db]
ports = [
  { name = "sql", port = 13317, offset = false },
  { name = "admin", port = 13318, offset = false },
]
[[flows]]
from = "host:web"
to = "host:db"
ports = ["sql", "admin"]
"#;

/// The same lab with a UDP port planned as well: a syslog collector's.
const UDP_PLAN: &str = r#"
name = "elsewhere-udp-lab"
[defaults]
timeout_ms = 1000
retries = 1
[[hosts]]
name = "coord"
address = "198.18.0.43"
[[hosts]]
name = "web"
address = "198.18.0.44"
[[hosts]]
name = "db"
address = "198.18.0.45"
roles = ["logs"]
[roles.logs]
ports = [
  { name = "app", port = 13319, protocol = "udp", offset = false },
  { name = "sql", port = 13317, offset = false },
]
[[flows]]
from = "host:web"
to = "host:db"
ports = ["app", "sql"]
"#;

/// A service that listens on every address given (`[v6]` addresses are
/// IPv6-only sockets, `udp:` ones datagram sockets), says `ready`, and
/// exits by itself after two minutes: nothing in the lab outlives a stuck
/// test for long.
const SERVER: &str = r#"
import socket, sys, time
socks = []
for a in sys.argv[1:]:
    kind = socket.SOCK_STREAM
    if a.startswith("udp:"):
        kind, a = socket.SOCK_DGRAM, a[4:]
    host, port = a.rsplit(":", 1)
    if host.startswith("["):
        s = socket.socket(socket.AF_INET6, kind)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        host = host.strip("[]")
    else:
        s = socket.socket(socket.AF_INET, kind)
    s.bind((host, int(port)))
    if kind == socket.SOCK_STREAM:
        s.listen(16)
    socks.append(s)
print("ready", flush=True)
time.sleep(120)
"#;

fn lab(dir: &tempfile::TempDir) -> PlanLab {
    lab_of(dir, PLAN)
}

fn lab_of(dir: &tempfile::TempDir, text: &str) -> PlanLab {
    let plan = dir.path().join("elsewhere-lab.toml");
    std::fs::File::create(&plan)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap();
    let lab = PlanLab::new(&plan).unwrap();
    for (host, r) in &firewall::correct(&lab.plan, "coord") {
        lab.firewall(host, r).unwrap();
    }
    lab.start_agents().unwrap();
    lab
}

/// Starts the service inside `db`, listening on `addrs`, as a process
/// named `mariadbd` (a link to python3: the kernel names a process after
/// the file it ran).
fn serve(lab: &PlanLab, dir: &tempfile::TempDir, addrs: &[&str]) {
    let script = dir.path().join("server.py");
    std::fs::write(&script, SERVER).unwrap();
    // The interpreter itself, not a launcher script (pyenv's shims pick
    // the program by the name they were run as).
    let python = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .expect("python3");
    let python = String::from_utf8(python.stdout).unwrap().trim().to_string();
    let named = dir.path().join("mariadbd");
    if !named.exists() {
        std::os::unix::fs::symlink(&python, &named).unwrap();
    }
    let mut args = vec![script.to_str().unwrap()];
    args.extend_from_slice(addrs);
    lab.lab.spawn_ready("db", &named, &args).unwrap();
}

fn path(report: &Report, port: u16) -> &PathReport {
    report
        .paths
        .iter()
        .find(|p| p.from == "web" && p.port == port)
        .unwrap_or_else(|| panic!("no web -> db:{port} path"))
}

fn open_through_the_canary(report: &Report, port: u16) {
    let p = path(report, port);
    assert_eq!(p.observed, Some(Observed::Open), "{p:#?}");
    assert_eq!(p.verdict, Verdict::Ok, "{p:#?}");
    assert_eq!(p.target_saw, Some(true), "{p:#?}");
    assert!(p.listening_elsewhere.is_empty(), "{p:#?}");
}

/// The path to `port` is refused as clients will be, a violation, naming
/// every one of `where_` and the process.
fn refused_naming(report: &Report, port: u16, where_: &[&str]) {
    let p = path(report, port);
    assert_eq!(p.observed, Some(Observed::Refused), "{p:#?}");
    assert_eq!(p.verdict, Verdict::Violation, "{p:#?}");
    assert_ne!(p.target_saw, Some(true), "no canary answered: {p:#?}");
    let listed: Vec<String> = p
        .listening_elsewhere
        .iter()
        .map(|l| l.address.to_string())
        .collect();
    let mut want: Vec<String> = where_.iter().map(ToString::to_string).collect();
    let mut got = listed.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "{p:#?}");
    for l in &p.listening_elsewhere {
        assert_eq!(l.process.as_deref(), Some("mariadbd"), "{p:#?}");
        assert!(l.pid.is_some(), "{p:#?}");
    }
    let words = format!("mariadbd listens on {}", listed.join(" and "));
    assert!(p.detail.contains(&words), "{words:?} not in {p:#?}");
    assert!(p.detail.contains("only"), "{p:#?}");
    // Every renderer's WHY says it too.
    let table = render(report, "table");
    assert!(table.contains(&words), "{table}");
    for format in ["markdown", "junit", "html"] {
        let text = render(report, format);
        assert!(text.contains("mariadbd listens on"), "{format}: {text}");
    }
}

fn render(report: &Report, format: &str) -> String {
    let format: probe_core::report::ReportFormat = format.parse().unwrap();
    let mut out = Vec::new();
    probe_core::report::render(
        report,
        format,
        probe_core::report::RenderOptions::default(),
        &mut out,
    )
    .unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn a_service_bound_to_loopback_only_is_refused_and_named_not_open_through_a_canary() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(&dir);
    // Before any service exists: canaries, open.
    let before = lab.check("coord").unwrap();
    assert_eq!(before.code, 0, "{}\n{}", before.stderr, lab.logs());
    open_through_the_canary(&before.report, 13317);
    open_through_the_canary(&before.report, 13318);
    // The database comes up on 127.0.0.1 only, the firewall still open.
    serve(&lab, &dir, &["127.0.0.1:13317"]);
    let after = lab.check("coord").unwrap();
    assert_eq!(
        after.code, 1,
        "a violation: {}\n{:#?}",
        after.stderr, after.report.paths
    );
    refused_naming(&after.report, 13317, &["127.0.0.1:13317"]);
    // The other port is still a canary's.
    open_through_the_canary(&after.report, 13318);
    let db = after.report.hosts.iter().find(|h| h.name == "db").unwrap();
    assert!(
        db.conflicts.iter().any(|c| c.port == 13317
            && c.detail
                .contains("mariadbd listens on 127.0.0.1:13317 only")),
        "{db:#?}"
    );
}

#[test]
fn a_service_on_another_interface_and_the_other_family_only_is_refused_and_named() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(&dir);
    // A second interface in db (a veth pair inside it: this kernel has no
    // dummy devices) with an address the plan does not give db.
    for args in [
        &[
            "link", "add", "side0", "type", "veth", "peer", "name", "side1",
        ][..],
        &["addr", "add", "198.18.200.42/32", "dev", "side0"][..],
        &["link", "set", "side0", "up"][..],
        &["link", "set", "side1", "up"][..],
    ] {
        let out = lab.lab.output("db", "ip", args).unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    }
    serve(&lab, &dir, &["198.18.200.42:13318", "[::]:13318"]);
    let run = lab.check("coord").unwrap();
    assert_eq!(
        run.code, 1,
        "a violation: {}\n{:#?}",
        run.stderr, run.report.paths
    );
    refused_naming(&run.report, 13318, &["198.18.200.42:13318", "[::]:13318"]);
    open_through_the_canary(&run.report, 13317);
}

/// A UDP service bound to loopback only: no canary stands in for it, the
/// path is not open, and the report says where it listens.
#[test]
fn a_udp_service_bound_to_loopback_only_is_not_open_and_named() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = lab_of(&dir, UDP_PLAN);
    let before = lab.check("coord").unwrap();
    assert_eq!(before.code, 0, "{}\n{}", before.stderr, lab.logs());
    let p = path(&before.report, 13319);
    assert_eq!(
        p.observed,
        Some(Observed::Open),
        "the canary's proof: {p:#?}"
    );
    serve(&lab, &dir, &["udp:127.0.0.1:13319"]);
    let after = lab.check("coord").unwrap();
    assert_eq!(after.code, 1, "{}\n{:#?}", after.stderr, after.report.paths);
    let p = path(&after.report, 13319);
    // The datagram met the target's port-unreachable, as clients will.
    assert_eq!(p.observed, Some(Observed::Refused), "{p:#?}");
    assert_eq!(p.verdict, Verdict::Violation, "{p:#?}");
    assert_ne!(p.target_saw, Some(true), "no canary answered: {p:#?}");
    let listed: Vec<String> = p
        .listening_elsewhere
        .iter()
        .map(|l| l.address.to_string())
        .collect();
    assert_eq!(listed, ["127.0.0.1:13319"], "{p:#?}");
    assert_eq!(
        p.listening_elsewhere[0].process.as_deref(),
        Some("mariadbd"),
        "{p:#?}"
    );
    assert!(
        p.detail
            .contains("mariadbd listens on 127.0.0.1:13319 only"),
        "{p:#?}"
    );
    // The TCP port beside it is still a canary's.
    open_through_the_canary(&after.report, 13317);
}

#[test]
fn a_service_on_the_wildcard_is_still_probed_live_and_open() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(&dir);
    serve(&lab, &dir, &["0.0.0.0:13317"]);
    let run = lab.check("coord").unwrap();
    let p = path(&run.report, 13317);
    assert_eq!(p.observed, Some(Observed::Open), "{p:#?}");
    assert_eq!(p.verdict, Verdict::Ok, "{p:#?}");
    assert_eq!(p.target_saw, None, "no canary: the live service: {p:#?}");
    assert!(p.listening_elsewhere.is_empty(), "{p:#?}");
    let db = run.report.hosts.iter().find(|h| h.name == "db").unwrap();
    assert!(
        db.conflicts
            .iter()
            .any(|c| c.port == 13317 && c.detail.contains("mariadbd (pid ")),
        "the holder is named: {db:#?}"
    );
}

/// A path's outcome: source, port, observed, verdict, whether a canary
/// saw the nonce.
type Outcome = (String, u16, Option<Observed>, Verdict, Option<bool>);

/// Verdicts of every path, for comparing runs.
fn verdicts(report: &Report) -> Vec<Outcome> {
    report
        .paths
        .iter()
        .map(|p| (p.from.clone(), p.port, p.observed, p.verdict, p.target_saw))
        .collect()
}

#[test]
fn check_killed_after_prepare_then_run_again_within_the_lease_is_exact() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(&dir);
    let clean = lab.check("coord").unwrap();
    assert_eq!(clean.code, 0, "{}\n{}", clean.stderr, lab.logs());
    let plan = lab.plan_path().to_string_lossy().into_owned();
    let pki = lab.pki().to_string_lossy().into_owned();
    let bin = integration::portcall_bin().unwrap();
    for round in 0..3 {
        let mut check = lab
            .lab
            .command("coord", &bin)
            .args(["check", "--plan", &plan, "--pki", &pki, "--format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Prepared on db: its canaries listen.
        lab.lab
            .wait_listening("db", 13317, Duration::from_secs(20))
            .unwrap();
        check.kill().unwrap(); // SIGKILL: no teardown.
        let killed = Instant::now();
        let _ = check.wait();
        // Well within the 5 s lease: the killed round still holds db.
        let rerun = killed.elapsed();
        assert!(rerun < Duration::from_secs(2), "round {round}: {rerun:?}");
        let again = lab.check("coord").unwrap();
        assert_eq!(
            verdicts(&again.report),
            verdicts(&clean.report),
            "round {round}: {}\n{:#?}\n{}",
            again.stderr,
            again.report.paths,
            lab.logs()
        );
        assert_eq!(again.code, 0, "round {round}: {}", again.stderr);
    }
}
