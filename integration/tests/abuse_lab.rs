//! Attacks on real `portcall agent` processes in lab namespaces (issue 15):
//! the coordinator killed with SIGKILL mid-round, and a round while a
//! stranger holds idle connections against an agent's control port.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use integration::firewall::{self, accept};
use integration::{PlanLab, lab_available};
use probe_core::report::Verdict;

/// `coord` runs `portcall check`; `web` probes `db`, whose port 13307 drops
/// web's packets so that the probe phase lasts the 8 s timeout; `mallory`
/// takes part in nothing and attacks.
const PLAN: &str = r#"
name = "abuse-lab"
[defaults]
timeout_ms = 8000
retries = 0
[[hosts]]
name = "coord"
address = "198.18.0.10"
[[hosts]]
name = "web"
address = "198.18.0.11"
[[hosts]]
name = "db"
address = "198.18.0.12"
roles = ["db"]
[[hosts]]
name = "mallory"
address = "198.18.0.13"
[roles.db]
ports = [
  { name = "sql", port = 13306, offset = false },
  { name = "slow", port = 13307, offset = false },
]
[[flows]]
from = "host:web"
to = "host:db"
ports = ["sql", "slow"]
"#;

fn lab(dir: &tempfile::TempDir, slow_drops: bool) -> PlanLab {
    let plan = dir.path().join("abuse-lab.toml");
    std::fs::File::create(&plan)
        .and_then(|mut f| f.write_all(PLAN.as_bytes()))
        .unwrap();
    let lab = PlanLab::new(&plan).unwrap();
    let mut rules = firewall::correct(&lab.plan, "coord");
    let db = rules.get_mut("db").unwrap();
    if slow_drops {
        db.remove_accept(&accept("198.18.0.11", 13307));
    }
    // The attacker reaches db's control port (a firewall is no excuse).
    db.input_accepts.push(accept("198.18.0.13", 7400));
    for (host, r) in &rules {
        lab.firewall(host, r).unwrap();
    }
    lab.start_agents().unwrap();
    lab
}

fn listening(lab: &PlanLab, host: &str, port: u16) -> bool {
    let out = lab
        .lab
        .output(host, "ss", &["-Hltn", &format!("sport = :{port}")])
        .unwrap();
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

/// Waits until the probe phase is under way: web's SYN to db's dropped port
/// 13307 is in flight, so every agent's prepare has been answered.
fn wait_probing(lab: &PlanLab) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = lab
            .lab
            .output(
                "web",
                "ss",
                &["-Htn", "state", "syn-sent", "dport = :13307"],
            )
            .unwrap();
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "web never probed db:13307\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn canaries_close_within_the_lease_after_the_coordinator_is_killed_mid_round() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(&dir, true);
    let plan = lab.plan_path().to_string_lossy().into_owned();
    let pki = lab.pki().to_string_lossy().into_owned();
    let bin = integration::portcall_bin().unwrap();
    let mut check = lab
        .lab
        .command("coord", &bin)
        .args(["check", "--plan", &plan, "--pki", &pki, "--format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Mid-round: the canaries are up and web's probe of 13307 is waiting
    // out its 8 s timeout.
    lab.lab
        .wait_listening("db", 13306, Duration::from_secs(20))
        .unwrap();
    wait_probing(&lab);
    assert!(check.try_wait().unwrap().is_none(), "the round ended early");
    check.kill().unwrap(); // SIGKILL: no teardown, no FIN from a clean exit.
    let killed = Instant::now();
    let _ = check.wait();
    while listening(&lab, "db", 13306) || listening(&lab, "db", 13307) {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "canaries still up {:?} after the coordinator died\n{}",
            killed.elapsed(),
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "canaries closed {:?} after kill -9 of the coordinator",
        killed.elapsed()
    );
    assert!(lab.logs().contains("round lease lapsed"), "{}", lab.logs());
}

#[test]
fn a_round_completes_exactly_while_a_stranger_holds_32_idle_control_connections() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(&dir, false);
    let baseline = lab.check("coord").unwrap();
    assert_eq!(baseline.code, 0, "{}", baseline.stderr);
    // 32 idle connections from mallory, each reopened as soon as the agent
    // closes it; the script stops by itself after 60 s.
    let flood = r#"
import socket, time, select
end = time.time() + 60
socks, opened = [], 0
while time.time() < end:
    while len(socks) < 32:
        s = socket.socket()
        s.settimeout(1)
        try:
            s.connect(("198.18.0.12", 7400))
            socks.append(s); opened += 1
        except OSError:
            s.close(); time.sleep(0.01)
    r, _, _ = select.select(socks, [], [], 0.05)
    for s in r:
        try:
            if not s.recv(64):
                socks.remove(s); s.close()
        except OSError:
            socks.remove(s); s.close()
    if opened >= 64 and opened % 64 == 0:
        print("ready", flush=True)
"#;
    let script = dir.path().join("flood.py");
    std::fs::write(&script, flood).unwrap();
    lab.lab
        .spawn_ready("mallory", "python3", &[script.to_str().unwrap()])
        .unwrap();
    for _ in 0..2 {
        let run = lab.check("coord").unwrap();
        let details: Vec<String> =
            run.report
                .paths
                .iter()
                .map(|p| format!("{} -> {}:{}: {}", p.from, p.to, p.port, p.detail))
                .chain(
                    run.report.hosts.iter().filter_map(|h| {
                        h.agent_detail.as_ref().map(|d| format!("{}: {d}", h.name))
                    }),
                )
                .collect();
        assert_eq!(
            run.code,
            0,
            "{}\n{}\n{}",
            run.stderr,
            details.join("\n"),
            lab.logs()
        );
        let got: Vec<_> = run
            .report
            .paths
            .iter()
            .map(|p| (p.from.clone(), p.to.clone(), p.port, p.observed, p.verdict))
            .collect();
        let want: Vec<_> = baseline
            .report
            .paths
            .iter()
            .map(|p| (p.from.clone(), p.to.clone(), p.port, p.observed, p.verdict))
            .collect();
        assert_eq!(got, want);
        assert!(run.report.paths.iter().all(|p| p.verdict == Verdict::Ok));
    }
    // One summary line per interval, never a line per refusal.
    let log = std::fs::read_to_string(lab.log("db")).unwrap_or_default();
    let lines = log.lines().filter(|l| l.contains("refused")).count();
    assert!(lines < 20, "{lines} refusal lines:\n{log}");
}

#[test]
fn an_agent_killed_after_prepare_is_unreachable_with_the_phase_not_up() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(&dir, true);
    let plan = lab.plan_path().to_string_lossy().into_owned();
    let pki = lab.pki().to_string_lossy().into_owned();
    let out_file = dir.path().join("report.json");
    let bin = integration::portcall_bin().unwrap();
    let check = lab
        .lab
        .command("coord", &bin)
        .args(["check", "--plan", &plan, "--pki", &pki, "--format", "json"])
        .arg("--out")
        .arg(&out_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lab.lab
        .wait_listening("db", 13306, Duration::from_secs(20))
        .unwrap();
    // After prepare: the canary being up is not enough (db may still be
    // writing its prepare answer); the probe phase must have begun.
    wait_probing(&lab);
    // db's agent: the process listening on the control port, by its id.
    let ss = lab
        .lab
        .output("db", "ss", &["-Hltnp", "sport = :7400"])
        .unwrap();
    let ss = String::from_utf8_lossy(&ss.stdout).into_owned();
    let pid = ss
        .split("pid=")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap_or_else(|| panic!("no pid in {ss:?}"))
        .to_string();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = check.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let report =
        probe_core::report::json::read(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    let db = report.hosts.iter().find(|h| h.name == "db").unwrap();
    assert_eq!(
        db.agent,
        probe_core::report::AgentState::Unreachable,
        "{report:#?}"
    );
    let p = report.paths.iter().find(|p| p.port == 13306).unwrap();
    assert_eq!(p.verdict, Verdict::Error);
    assert!(
        p.detail.contains("lost during evidence") || p.detail.contains("lost during probe"),
        "{}",
        p.detail
    );
}
