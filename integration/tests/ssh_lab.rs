//! `check --ssh` against real OpenSSH servers: an `sshd` inside each lab
//! host's namespace (test-generated host keys, an authorized client key, a
//! client ssh_config and known_hosts of the test's own), the coordinator's
//! ssh run from the coordinator host's namespace. The WSO2 lab gives the
//! same verdicts through ssh, with no control port allowed by any firewall,
//! as through mutual TLS; ssh failures stay per host; `--push` and a
//! coordinator killed with SIGKILL leave nothing behind.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use integration::firewall::{self, HostRules};
use integration::sshd::{SshLab, Sshd, ssh_missing};
use integration::{CheckRun, PlanLab, lab_available};
use probe_core::probe::Observed;
use probe_core::report::{AgentState, Verdict};

const COORDINATOR: &str = "operator";

/// One ssh lab at a time: copying binaries and ssh handshakes are CPU
/// work, and the mTLS baseline must not be measured beside them.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn available() -> bool {
    if !lab_available() {
        return false;
    }
    match ssh_missing() {
        None => true,
        Some(reason) => {
            if std::env::var(integration::REQUIRE_LAB_ENV).as_deref() == Ok("1") {
                panic!("{}=1 but {reason}", integration::REQUIRE_LAB_ENV);
            }
            eprintln!("skipped: {reason}");
            false
        }
    }
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wso2-distributed.toml")
}

type Verdicts = BTreeMap<String, (Verdict, Option<Observed>, Option<bool>)>;

fn verdicts(run: &CheckRun) -> Verdicts {
    run.report
        .paths
        .iter()
        .map(|p| {
            (
                format!("{}->{}:{}", p.from, p.to, p.port),
                (p.verdict, p.observed, p.target_saw),
            )
        })
        .collect()
}

fn apply(lab: &PlanLab, rules: &BTreeMap<String, HostRules>) {
    for (host, r) in rules {
        lab.firewall(host, r).unwrap();
    }
}

fn timed(f: impl FnOnce() -> CheckRun) -> (CheckRun, Duration) {
    let t = Instant::now();
    let run = f();
    (run, t.elapsed())
}

/// Processes of ours still alive in the lab: agents, pushed copies, ssh
/// clients (sshd itself is expected).
fn leftovers(lab: &PlanLab) -> Vec<String> {
    lab.lab
        .processes()
        .into_iter()
        .filter(|p| !p.cmdline.starts_with("/usr/sbin/sshd") && !p.cmdline.starts_with("sshd:"))
        .map(|p| format!("{} in {}: {}", p.pid, p.host, p.cmdline))
        .collect()
}

fn wait_clean(lab: &PlanLab, within: Duration, extra: impl Fn() -> Vec<String>) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let mut left = leftovers(lab);
        left.extend(extra());
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A copy of the portcall binary without debug information, for the
/// coordinator of `--push` runs: the debug build is over 100 MB, and
/// copying it to every host would load the machine the other lab tests
/// measure on. The unstripped binary when `strip` is not there.
fn stripped(lab: &PlanLab) -> PathBuf {
    let copy = lab.dir.path().join("portcall-stripped");
    let ok = std::process::Command::new("strip")
        .args(["--strip-debug", "-o"])
        .arg(&copy)
        .arg(lab.bin())
        .status()
        .is_ok_and(|s| s.success());
    if ok { copy } else { lab.bin().to_path_buf() }
}

fn push_dirs() -> BTreeSet<String> {
    std::fs::read_dir(std::env::temp_dir())
        .map(|it| {
            it.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("portcall-push."))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn wso2_over_ssh_without_a_control_port_gives_the_mtls_verdicts() {
    if !available() {
        return;
    }
    let _serial = one_at_a_time();
    // The bundled plan with a longer attempt timeout and no retry: the
    // comparison is about the transport, and a TLS handshake to a canary
    // must not miss 1 s on a machine busy with other tests.
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("wso2-distributed.toml");
    let text = std::fs::read_to_string(example()).unwrap();
    assert!(text.contains("timeout_ms = 1000") && text.contains("retries = 1"));
    let text = text
        .replace("timeout_ms = 1000", "timeout_ms = 3000")
        .replace("retries = 1", "retries = 0");
    std::fs::write(&plan, text).unwrap();
    let lab = PlanLab::new(&plan).unwrap();
    let bin = lab.bin().display().to_string();

    // The mutual-TLS round: agents on the control port.
    let mut correct = firewall::correct(&lab.plan, COORDINATOR);
    apply(&lab, &correct);
    lab.start_agents().unwrap();
    let (mtls, mtls_time) = timed(|| lab.check(COORDINATOR).unwrap());
    assert_eq!(
        mtls.code,
        0,
        "{:#?}\n{}",
        mtls.report
            .paths
            .iter()
            .filter(|p| p.verdict != Verdict::Ok)
            .map(|p| format!("{}->{}:{} {}", p.from, p.to, p.port, p.detail))
            .collect::<Vec<_>>(),
        mtls.stderr
    );
    let mut faulty = correct.clone();
    let lb = lab.addr("lb").to_string();
    faulty
        .get_mut("gw-worker-1")
        .unwrap()
        .remove_accept(&firewall::accept(&lb, 8280));
    faulty
        .get_mut("db")
        .unwrap()
        .input_accepts
        .push(firewall::accept(&lb, 3306));
    apply(&lab, &faulty);
    let mtls_faulty = lab.check(COORDINATOR).unwrap();
    assert_eq!(mtls_faulty.code, 1);

    // The ssh round: no agent runs, no firewall lets the control port in,
    // only ssh from the operator's host.
    lab.lab.stop_processes();
    correct = firewall::correct_with_control(&lab.plan, COORDINATOR, 22);
    let control = format!("dport {} ", lab.plan.defaults.control_port);
    for (host, r) in &correct {
        assert!(
            !r.render().contains(&control),
            "{host} allows the control port"
        );
    }
    apply(&lab, &correct);
    let ssh = SshLab::new(lab.dir.path()).unwrap();
    for h in &lab.plan.hosts {
        ssh.start(&lab.lab, &h.name, &Sshd::default()).unwrap();
    }
    let cfg = ssh.config().display().to_string();
    let args = ["--ssh", "--ssh-config", &cfg, "--remote-path", &bin];
    let (over_ssh, ssh_time) = timed(|| lab.check_with(COORDINATOR, &args).unwrap());
    assert_eq!(over_ssh.code, 0, "{}", over_ssh.stderr);
    assert_eq!(
        verdicts(&over_ssh),
        verdicts(&mtls),
        "ssh vs mTLS, correct firewall"
    );
    assert!(
        over_ssh
            .report
            .hosts
            .iter()
            .all(|h| h.agent == AgentState::Up),
        "every agent took part"
    );
    let mut faulty = correct.clone();
    faulty
        .get_mut("gw-worker-1")
        .unwrap()
        .remove_accept(&firewall::accept(&lb, 8280));
    faulty
        .get_mut("db")
        .unwrap()
        .input_accepts
        .push(firewall::accept(&lb, 3306));
    apply(&lab, &faulty);
    let ssh_faulty = lab.check_with(COORDINATOR, &args).unwrap();
    assert_eq!(ssh_faulty.code, 1, "{}", ssh_faulty.stderr);
    assert_eq!(
        verdicts(&ssh_faulty),
        verdicts(&mtls_faulty),
        "ssh vs mTLS, two faults"
    );

    // Timing goals live in scripts/bench/ssh_round.sh, not in a test; this
    // only reports what this run saw.
    eprintln!(
        "wso2 round wall time: mTLS {:.3} s, ssh {:.3} s ({} paths, {} hosts)",
        mtls_time.as_secs_f64(),
        ssh_time.as_secs_f64(),
        mtls.report.paths.len(),
        lab.plan.hosts.len()
    );
    let left = wait_clean(&lab, Duration::from_secs(10), Vec::new);
    assert!(left.is_empty(), "left running: {left:#?}");
}

const SMALL: &str = r#"name = "ssh-faults"
[defaults]
timeout_ms = 2000
retries = 0

[roles.svc]
ports = [{ name = "svc", port = 9000 }, { name = "blk", port = 9001 }]

[[hosts]]
name = "operator"
address = "198.18.0.10"
[[hosts]]
name = "ok1"
address = "198.18.0.11"
ssh = "root@198.18.0.11:2222"
roles = ["svc"]
[[hosts]]
name = "badkey"
address = "198.18.0.12"
roles = ["svc"]
[[hosts]]
name = "refused"
address = "198.18.0.13"
roles = ["svc"]
[[hosts]]
name = "nobin"
address = "198.18.0.14"

[[flows]]
from = "host:operator"
to = "host:ok1"
ports = ["svc"]
[[flows]]
from = "host:operator"
to = "host:ok1"
ports = ["blk"]
expect = "blocked"
[[flows]]
from = "host:ok1"
to = ["host:badkey", "host:refused"]
ports = ["svc"]
[[flows]]
from = "host:nobin"
to = "host:ok1"
ports = ["svc"]
"#;

fn detail<'a>(run: &'a CheckRun, from: &str, to: &str) -> &'a str {
    &run.report
        .paths
        .iter()
        .find(|p| p.from == from && p.to == to)
        .unwrap_or_else(|| panic!("no path {from}->{to}"))
        .detail
}

fn agent(run: &CheckRun, host: &str) -> AgentState {
    run.report
        .hosts
        .iter()
        .find(|h| h.name == host)
        .unwrap()
        .agent
}

#[test]
fn ssh_failures_stay_per_host_and_push_and_kill_9_leave_nothing_behind() {
    if !available() {
        return;
    }
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("ssh-faults.toml");
    std::fs::write(&plan, SMALL).unwrap();
    let lab = PlanLab::new(&plan).unwrap();
    let bin_dir = lab.bin().parent().unwrap().display().to_string();
    let with_portcall = Some(format!("{bin_dir}:/usr/bin:/bin"));
    let ssh = SshLab::new(lab.dir.path()).unwrap();
    let start = |host: &str, sshd: Sshd| ssh.start(&lab.lab, host, &sshd).unwrap();
    start(
        "operator",
        Sshd {
            path: with_portcall.clone(),
            ..Sshd::default()
        },
    );
    start(
        "ok1",
        Sshd {
            port: 2222,
            path: with_portcall.clone(),
            ..Sshd::default()
        },
    );
    start(
        "badkey",
        Sshd {
            known_host_key: false,
            path: with_portcall.clone(),
            ..Sshd::default()
        },
    );
    start(
        "refused",
        Sshd {
            authorize_client: false,
            path: with_portcall.clone(),
            ..Sshd::default()
        },
    );
    // sshd's default PATH: no portcall there.
    start("nobin", Sshd::default());
    let (op, nobin) = (
        lab.addr("operator").to_string(),
        lab.addr("nobin").to_string(),
    );
    lab.firewall(
        "ok1",
        &HostRules {
            input_accepts: vec![
                firewall::accept(&op, 2222),
                firewall::accept(&op, 9000),
                firewall::accept(&nobin, 9000),
            ],
            ..HostRules::default()
        },
    )
    .unwrap();
    let cfg = ssh.config().display().to_string();
    let pushed_before = push_dirs();

    // a. Each ssh failure is its host's alone; the round completes.
    let run = lab
        .check_with(COORDINATOR, &["--ssh", "--ssh-config", &cfg])
        .unwrap();
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(agent(&run, "operator"), AgentState::Up);
    assert_eq!(agent(&run, "ok1"), AgentState::Up);
    let ok: Vec<_> = run
        .report
        .paths
        .iter()
        .filter(|p| p.from == "operator")
        .map(|p| (p.port, p.verdict, p.observed))
        .collect();
    assert_eq!(
        ok,
        [
            (9000, Verdict::Ok, Some(Observed::Open)),
            (9001, Verdict::Ok, Some(Observed::Timeout))
        ],
        "{run:#?}"
    );
    for (host, said) in [
        ("badkey", "Host key verification failed."),
        (
            "refused",
            "root@198.18.0.13: Permission denied (publickey).",
        ),
    ] {
        assert_eq!(agent(&run, host), AgentState::Unreachable, "{host}");
        let d = detail(&run, "ok1", host);
        assert!(
            d.ends_with(&format!("via ssh {}: {said}", lab.addr(host))),
            "{host}: {d}"
        );
    }
    assert_eq!(agent(&run, "nobin"), AgentState::Unreachable);
    let d = detail(&run, "nobin", "ok1");
    assert!(
        d.contains("portcall: not found") || d.contains("portcall: command not found"),
        "{d}"
    );
    assert!(d.contains("use --push, or --remote-path"), "{d}");

    // b. --push: the host without portcall takes part; the copies are gone
    // when the round is over, and so are the agents.
    let small = stripped(&lab);
    let run = lab
        .check_with_bin(
            COORDINATOR,
            &small,
            &["--ssh", "--ssh-config", &cfg, "--push"],
        )
        .unwrap();
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(agent(&run, "nobin"), AgentState::Up, "{run:#?}");
    let p = run.report.paths.iter().find(|p| p.from == "nobin").unwrap();
    assert_eq!((p.verdict, p.target_saw), (Verdict::Ok, Some(true)));
    let new_dirs = || -> Vec<String> {
        push_dirs()
            .difference(&pushed_before)
            .map(|d| format!("temp dir {d}"))
            .collect()
    };
    assert!(new_dirs().is_empty(), "--push left {:?}", new_dirs());
    let left = wait_clean(&lab, Duration::from_secs(5), Vec::new);
    assert!(left.is_empty(), "left running: {left:#?}");

    // c. kill -9 of the coordinator while the canaries are up: the remote
    // agents see their input close, close the canaries and exit, and the
    // pushed copies go with them — long before the round's TTL.
    let plan_arg = lab.plan_path().display().to_string();
    let mut coordinator = lab
        .lab
        .command(COORDINATOR, lab.bin())
        .args([
            "check",
            "--plan",
            &plan_arg,
            "--ssh",
            "--ssh-config",
            &cfg,
            "--push",
        ])
        .args(["--format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let canary_up = || {
        let out = lab
            .lab
            .output("ok1", "ss", &["-Hltn", "sport = :9001"])
            .unwrap();
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    };
    while !canary_up() {
        assert!(Instant::now() < deadline, "the canary never came up");
        assert!(
            coordinator.try_wait().unwrap().is_none(),
            "the round ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    coordinator.kill().unwrap(); // SIGKILL
    coordinator.wait().unwrap();
    let killed_at = Instant::now();
    let left = wait_clean(&lab, Duration::from_secs(20), || {
        let mut v = new_dirs();
        for port in [9000, 9001] {
            let out = lab
                .lab
                .output("ok1", "ss", &["-Hltn", &format!("sport = :{port}")])
                .unwrap();
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                v.push(format!("canary on ok1:{port}"));
            }
        }
        v
    });
    assert!(left.is_empty(), "after kill -9: {left:#?}");
    eprintln!(
        "after kill -9 of the coordinator: nothing left after {:.2} s",
        killed_at.elapsed().as_secs_f64()
    );
}
