//! Nothing of a round outlives it: real agents in lab namespaces, a real
//! `portcall check`, real signals. A check interrupted at any moment (even
//! while `prepare` is still outstanding), a check killed with SIGKILL while
//! it waits for a silent host, and an agent stopped with SIGTERM mid-round
//! all leave no canary (`ss`) and no trace table (`nft list tables`) on any
//! host, within the bounds the product promises.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration::{LabNet, PlanLab, lab_available};

/// src probes a, b and quiet; a probes b. b drops one port, so a round
/// lasts a few seconds (the silent path's 2.5 s timeout) and an interrupt
/// at 1 s finds it probing.
const PLAN: &str = r#"
name = "teardown"

[defaults]
timeout_ms = 2500
adaptive = false
retries = 0
control_port = 7600

[[hosts]]
name = "src"
address = "198.18.0.30"

[[hosts]]
name = "a"
address = "198.18.0.31"
roles = ["svc"]

[[hosts]]
name = "b"
address = "198.18.0.32"
roles = ["svc"]

[[hosts]]
name = "quiet"
address = "198.18.0.33"
roles = ["svc"]

[roles.svc]
ports = [
  { name = "one", port = 7601 },
  { name = "two", port = 7602 },
  { name = "dgram", port = 7603, protocol = "udp" },
]

[[flows]]
from = "host:src"
to = ["host:a", "host:b", "host:quiet"]
ports = ["one", "two", "dgram"]

[[flows]]
from = "host:a"
to = "host:b"
ports = ["one", "two"]
"#;

const HOSTS: [&str; 4] = ["src", "a", "b", "quiet"];

/// A lab for [`PLAN`] with agents running, b dropping port 7602. With
/// `slow_nft`, the agents' `nft -f` (the trace table being made) takes
/// half a second longer, as on a host with a large ruleset: a `prepare`
/// then spends that long with its trace table made but not yet working,
/// and a test can interrupt it there every time.
fn lab(slow_nft: bool) -> (tempfile::TempDir, PlanLab) {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(&plan, PLAN).unwrap();
    let lab = PlanLab::new(&plan).unwrap();
    lab.lab
        .nft(
            "b",
            "table inet lab {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    tcp dport 7602 drop\n  }\n}\n",
        )
        .unwrap();
    if !slow_nft {
        lab.start_agents().unwrap();
        return (dir, lab);
    }
    let tools = dir.path().join("slow-nft");
    std::fs::create_dir(&tools).unwrap();
    let nft = integration::find_tool("nft").unwrap();
    let wrapper = tools.join("nft");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n{} \"$@\"\nrc=$?\n[ \"$1\" = -f ] && sleep 0.5\nexit $rc\n",
            nft.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("PATH={}:/usr/sbin:/usr/bin:/sbin:/bin", tools.display());
    let (plan, pki) = (lab.plan_path(), lab.pki());
    let (plan, pki) = (plan.to_string_lossy(), pki.to_string_lossy());
    let bin = lab.bin().to_string_lossy().into_owned();
    for h in HOSTS {
        lab.lab
            .spawn_logged(
                h,
                "env",
                &[
                    &path, &bin, "agent", "--plan", &plan, "--host", h, "--pki", &pki,
                ],
                &lab.log(h),
            )
            .unwrap();
    }
    for h in HOSTS {
        lab.lab
            .wait_listening(h, 7600, Duration::from_secs(20))
            .unwrap();
    }
    (dir, lab)
}

/// What portcall left on `host`: listening sockets other than the agent's
/// control endpoint (canaries, TCP and UDP), and trace tables.
fn leftovers(lab: &PlanLab, host: &str) -> Vec<String> {
    let mut left = Vec::new();
    for flags in ["-Hltn", "-Hlun"] {
        let out = lab.lab.run_ok(host, "ss", &[flags]).unwrap();
        left.extend(out.lines().filter(|l| !l.contains(":7600 ")).map(|l| {
            format!(
                "{host} socket: {}",
                l.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        }));
    }
    let tables = lab.lab.run_ok(host, "nft", &["list", "tables"]).unwrap();
    left.extend(
        tables
            .lines()
            .filter(|l| l.contains("portcall_trace_"))
            .map(|l| format!("{host} {l}")),
    );
    left
}

fn all_leftovers(lab: &PlanLab, hosts: &[&str]) -> Vec<String> {
    hosts.iter().flat_map(|h| leftovers(lab, h)).collect()
}

/// Whether `host` has this round's canary on port 7601.
fn canary_up(lab: &PlanLab, host: &str) -> bool {
    let out = lab
        .lab
        .run_ok(host, "ss", &["-Hltn", "sport = :7601"])
        .unwrap();
    !out.trim().is_empty()
}

/// Waits (up to 10 s) until `host` has a trace table: its agent is then
/// in the middle of `prepare`, starting its trace (the first moment the
/// table exists, before the trace is known to work and the round is
/// stored).
fn wait_for_trace_table(lab: &PlanLab, host: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tables = lab.lab.run_ok(host, "nft", &["list", "tables"]).unwrap();
        if tables.contains("portcall_trace_") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no trace table on {host}\n{}",
            lab.logs()
        );
    }
}

/// The pid of the `portcall agent` of lab host `host`.
fn agent_pid(lab: &PlanLab, host: &str) -> u32 {
    let out = Command::new("ip")
        .args(["netns", "pids", lab.lab.netns(host)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("\0agent\0") && c.contains(&format!("--host\0{host}\0"))
            })
        })
        .unwrap_or_else(|| panic!("no agent in {host}"))
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{sig} {pid}");
}

/// `portcall check` inside src, its output into files of `dir`.
fn start_check(lab: &PlanLab, dir: &Path, n: usize) -> Child {
    let out = std::fs::File::create(dir.join(format!("check-{n}.json"))).unwrap();
    let err = std::fs::File::create(dir.join(format!("check-{n}.err"))).unwrap();
    lab.lab
        .command("src", lab.bin())
        .args(["check", "--plan", &lab.plan_path().to_string_lossy()])
        .args(["--pki", &lab.pki().to_string_lossy(), "--format", "json"])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap()
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running {within:?} after the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ctrl-C at 50 ms (connecting, or `prepare` outstanding), 200 ms
/// (`prepare` under way: canaries and trace tables being made) and 1 s:
/// two seconds after the signal no host holds a canary or a trace table.
#[test]
fn check_interrupted_at_50_200_and_1000_ms_leaves_nothing_on_any_host_2_s_later() {
    if !lab_available() {
        return;
    }
    let (dir, lab) = lab(false);
    for (n, delay) in [50u64, 200, 1000, 50, 200, 1000].into_iter().enumerate() {
        assert_eq!(
            all_leftovers(&lab, &HOSTS),
            Vec::<String>::new(),
            "before run {n}"
        );
        let mut check = start_check(&lab, dir.path(), n);
        std::thread::sleep(Duration::from_millis(delay));
        let signalled = Instant::now();
        signal(check.id(), "INT");
        let status = wait_exit(&mut check, Duration::from_secs(4));
        let took = signalled.elapsed();
        let stderr = std::fs::read_to_string(dir.path().join(format!("check-{n}.err"))).unwrap();
        // Before its handler is installed, SIGINT simply ends the process
        // (nothing was prepared yet); after, the round is torn down and
        // check exits 130.
        assert!(
            status.code() == Some(130)
                || std::os::unix::process::ExitStatusExt::signal(&status) == Some(2),
            "run {n} at {delay} ms: {status:?}\n{stderr}"
        );
        assert!(
            took < Duration::from_millis(2500),
            "run {n} at {delay} ms took {took:?} to exit"
        );
        eprintln!(
            "teardown_lab: SIGINT at {delay} ms: check exited {:?} after {took:?}",
            status.code()
        );
        std::thread::sleep(
            (signalled + Duration::from_secs(2)).saturating_duration_since(Instant::now()),
        );
        let left = all_leftovers(&lab, &HOSTS);
        assert_eq!(
            left,
            Vec::<String>::new(),
            "run {n}: interrupted at {delay} ms\n{stderr}\n{}",
            lab.logs()
        );
        if status.code() == Some(130) {
            assert!(
                stderr.contains("interrupted") && !stderr.contains("on every agent it reached"),
                "run {n}: {stderr}"
            );
        }
    }
}

/// SIGKILL of check while quiet's agent (stopped with SIGSTOP) never
/// answers: the canaries a and b already opened close within the lease
/// (10 s at most), not at the round's TTL (over a minute).
#[test]
fn kill_9_of_check_waiting_for_a_silent_hosts_prepare_closes_every_canary_within_the_lease() {
    if !lab_available() {
        return;
    }
    let (dir, lab) = lab(true);
    let quiet = agent_pid(&lab, "quiet");
    signal(quiet, "STOP");
    let mut check = start_check(&lab, dir.path(), 0);
    // b's canaries are open and its trace is starting.
    wait_for_trace_table(&lab, "b");
    assert!(canary_up(&lab, "b"), "b's canaries open before its trace");
    assert!(
        check.try_wait().unwrap().is_none(),
        "check ended before the kill"
    );
    signal(check.id(), "KILL");
    let killed = Instant::now();
    let _ = check.wait();
    let live = ["src", "a", "b"];
    let gone = loop {
        let left = all_leftovers(&lab, &live);
        if left.is_empty() {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "still there 10 s after kill -9: {left:?}\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("teardown_lab: canaries gone {gone:?} after kill -9 of check");
    signal(quiet, "CONT");
}

/// An agent stopped with SIGTERM in the middle of a round removes its trace
/// tables and closes its canaries before it exits, within 2 s: the
/// round's, and one a `prepare` abandoned by its coordinator (killed while
/// b was still starting its trace) made before.
#[test]
fn agent_sigterm_mid_round_leaves_no_trace_table() {
    if !lab_available() {
        return;
    }
    let (dir, lab) = lab(true);
    // A coordinator killed while b's `prepare` is under way (its canaries
    // are open, its trace table just made).
    let mut first = start_check(&lab, dir.path(), 0);
    wait_for_trace_table(&lab, "b");
    signal(first.id(), "KILL");
    let _ = first.wait();
    // A round in progress.
    let mut check = start_check(&lab, dir.path(), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !leftovers(&lab, "b")
        .iter()
        .any(|l| l.contains("portcall_trace_"))
    {
        assert!(
            Instant::now() < deadline,
            "no trace table on b\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = agent_pid(&lab, "b");
    signal(pid, "TERM");
    let termed = Instant::now();
    let gone = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
    };
    while !gone(pid) {
        assert!(
            termed.elapsed() < Duration::from_secs(2),
            "agent b still running 2 s after SIGTERM\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "teardown_lab: agent b exited {:?} after SIGTERM",
        termed.elapsed()
    );
    let left: Vec<String> = leftovers(&lab, "b");
    assert_eq!(left, Vec::<String>::new(), "{}", lab.logs());
    let _ = wait_exit(&mut check, Duration::from_secs(60));
}

/// `portcall agent --cleanup` (the packaged unit's `ExecStopPost`)
/// deletes every trace table of its network namespace, expired or not,
/// and no other table.
#[test]
fn agent_cleanup_deletes_every_trace_table_and_nothing_else() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(&plan, PLAN).unwrap();
    let lab = PlanLab::new(&plan).unwrap();
    let now = probe_core::agent::nftrace::unix_now();
    let ours = [
        probe_core::agent::nftrace::table_name("dead", now - 5),
        probe_core::agent::nftrace::table_name("beef", now + 600),
    ];
    for t in &ours {
        lab.lab
            .nft("a", &format!("table inet {t} {{\n}}\n"))
            .unwrap();
    }
    lab.lab.nft("a", "table inet operators {\n}\n").unwrap();
    let out = lab
        .lab
        .output("a", lab.bin(), &["agent", "--cleanup"])
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for t in &ours {
        assert!(
            stderr.contains(&format!("deleted table inet {t}")),
            "{stderr}"
        );
    }
    let tables = lab.lab.run_ok("a", "nft", &["list", "tables"]).unwrap();
    assert!(!tables.contains("portcall_trace_"), "{tables}");
    assert!(tables.contains("table inet operators"), "{tables}");
    let again = lab
        .lab
        .output("a", lab.bin(), &["agent", "--cleanup"])
        .unwrap();
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no trace table"),
        "{again:?}"
    );
}
