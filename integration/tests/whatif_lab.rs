//! `portcall whatif` against the live lab: the WSO2 deployment with its
//! faulty firewalls is checked live, its state is written from what the
//! lab knows (each host's address and ruleset), and the twin must agree
//! with the live report on every path (verdict, outcome, deciding rule).
//! Then each candidate change is predicted by the twin and applied to the
//! live lab, and the prediction must equal the live result on every path.
//! Also: a killed run's namespaces are reaped by the next one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration::firewall::{self, HostRules};
use integration::{LabNet, PlanLab, lab_available};
use probe_core::plan::Expect;
use probe_core::report::{PathReport, Report};
use probe_core::twin::diff::{Side, WhatIf};
use probe_core::twin::state::{Cidr, HostState, Interface, Ruleset, RulesetSyntax, State};

use crate::wso2_lab::{apply, example, faults};

const COORDINATOR: &str = "operator";

/// The lab's faulty firewalls: the correct ones with every fault of the
/// WSO2 lab test injected.
fn faulty(lab: &PlanLab) -> BTreeMap<String, HostRules> {
    let mut rules = firewall::correct(&lab.plan, COORDINATOR);
    for f in faults() {
        (f.inject)(lab, &mut rules);
    }
    rules
}

/// The state directory the lab's own knowledge gives: each host's `eth0`
/// at its plan address on the lab's /15, and its ruleset as nft text.
fn write_state(lab: &PlanLab, rules: &BTreeMap<String, HostRules>, dir: &Path) {
    let mut state = State::default();
    for h in &lab.plan.hosts {
        let file = dir.join(format!("{}.nft", h.name));
        std::fs::write(&file, rules[&h.name].render()).unwrap();
        state.hosts.insert(
            h.name.clone(),
            HostState {
                interfaces: vec![Interface {
                    name: "eth0".into(),
                    addresses: vec![Cidr {
                        addr: lab.addr(&h.name).into(),
                        prefix: 15,
                    }],
                }],
                ruleset: Some(Ruleset {
                    path: file,
                    syntax: RulesetSyntax::Nft,
                }),
                ..HostState::default()
            },
        );
    }
    state.write(&dir.join("state")).unwrap();
}

/// Runs `portcall whatif` in the root namespace and reads its answer.
pub(crate) fn whatif<N: LabNet>(
    lab: &PlanLab<N>,
    dir: &Path,
    live: &Path,
    changes: &[String],
) -> (i32, WhatIf) {
    let out_file = dir.join("whatif.json");
    let _ = std::fs::remove_file(&out_file);
    let mut cmd = Command::new(lab.bin());
    cmd.args(["whatif", "--plan"])
        .arg(lab.plan_path())
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--live")
        .arg(live)
        .args(["--format", "json", "--out"])
        .arg(&out_file);
    for c in changes {
        cmd.args(["--change", c]);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let code = out.status.code().unwrap_or(-1);
    let text = std::fs::read_to_string(&out_file).unwrap_or_else(|_| {
        panic!(
            "whatif exited {code} without an answer: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, serde_json::from_str(&text).unwrap())
}

/// `portcall state collect` from `coordinator`'s namespace with `access`
/// (`--pki DIR`, or the `--ssh` settings), into `dir/state`; the state it
/// wrote.
pub(crate) fn collect_state<N: LabNet>(
    lab: &PlanLab<N>,
    coordinator: &str,
    access: &[std::ffi::OsString],
    dir: &Path,
) -> State {
    let out = lab
        .lab
        .command(coordinator, lab.bin())
        .args(["state", "collect", "--plan"])
        .arg(lab.plan_path())
        .args(access)
        .arg("--out")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    State::load(&dir.join("state")).unwrap()
}

pub(crate) fn side(p: &PathReport) -> Side {
    Side {
        verdict: p.verdict,
        observed: p.observed,
        rule: p.blame.as_ref().and_then(|b| b.rule.clone()),
    }
}

/// Every path's candidate side equals the live report's, and the live
/// report has no path the twin lacks.
pub(crate) fn assert_predicted(answer: &WhatIf, live: &Report, what: &str) {
    assert_eq!(answer.paths.len(), live.paths.len(), "{what}: path count");
    let mut wrong = Vec::new();
    for p in &answer.paths {
        let l = live
            .paths
            .iter()
            .find(|l| {
                l.from == p.from
                    && l.to == p.to
                    && l.port == p.port
                    && l.protocol == p.protocol
                    && l.family == p.family
            })
            .unwrap_or_else(|| panic!("{what}: no live path {}->{}:{}", p.from, p.to, p.port));
        if side(l) != p.candidate {
            wrong.push(format!(
                "{}->{}:{}: live {:?}, twin {:?}",
                p.from,
                p.to,
                p.port,
                side(l),
                p.candidate
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{what}: the twin mispredicts:\n{}",
        wrong.join("\n")
    );
}

/// Applies the base rules and then `candidate` to the live lab, checks,
/// and returns the report.
fn live_with(
    lab: &PlanLab,
    base: &BTreeMap<String, HostRules>,
    candidate: impl FnOnce(&PlanLab),
) -> Report {
    apply(lab, base);
    candidate(lab);
    lab.check(COORDINATOR).unwrap().report
}

/// A candidate: the file for one host and how the live lab applies it.
struct Candidate {
    name: &'static str,
    host: String,
    file: String,
    /// The file is an iptables-save dump (else nft input).
    iptables: bool,
}

fn candidates(lab: &PlanLab, base: &BTreeMap<String, HostRules>, live: &Report) -> Vec<Candidate> {
    // An accept removed: the key manager no longer admits gateway worker 1
    // on Thrift (a whole ruleset).
    let mut removed = base["keymanager"].clone();
    removed.remove_accept(&firewall::accept(
        &lab.addr("gw-worker-1").to_string(),
        10399,
    ));
    // A broad drop above the accepts on the database (commands on top of
    // the base ruleset).
    let broad = "insert rule inet portcall input position 0 tcp dport 3306 drop\n".to_string();
    // A chain policy changed: the input chain of a host with a
    // must-be-blocked path blocked today accepts everything.
    let guarded = live
        .paths
        .iter()
        .find(|p| {
            p.expect == Expect::Blocked
                && p.verdict == probe_core::report::Verdict::Ok
                && !["db", "keymanager", "trafficmanager"].contains(&p.to.as_str())
        })
        .map(|p| p.to.clone())
        .expect("a must-be-blocked path that is blocked");
    let policy = base[&guarded]
        .render()
        .replacen("policy drop;", "policy accept;", 1);
    // An iptables-save dump loaded on top of the trafficmanager's ruleset:
    // the gateway manager's JMS connections are dropped.
    let dump = format!(
        "# Generated by iptables-save v1.8.9\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -s {}/32 -p tcp -m tcp --dport 5672 -j DROP\nCOMMIT\n",
        lab.addr("gw-manager")
    );
    vec![
        Candidate {
            name: "an accept removed",
            host: "keymanager".into(),
            file: removed.render(),
            iptables: false,
        },
        Candidate {
            name: "a broad drop above the accepts",
            host: "db".into(),
            file: broad,
            iptables: false,
        },
        Candidate {
            name: "a chain policy changed",
            host: guarded,
            file: policy,
            iptables: false,
        },
        Candidate {
            name: "an iptables-save dump",
            host: "trafficmanager".into(),
            file: dump,
            iptables: true,
        },
    ]
}

#[test]
fn whatif_wso2_twin_agrees_with_live_and_predicts_each_candidate() {
    if !lab_available() {
        return;
    }
    let lab = PlanLab::new(&example()).unwrap();
    let base = faulty(&lab);
    apply(&lab, &base);
    lab.start_agents().unwrap();
    let live = lab.check(COORDINATOR).unwrap();
    assert!(
        live.report.summary.violations >= 5,
        "the faulty lab has violations: {:?}",
        live.report.summary
    );
    let dir = tempfile::tempdir().unwrap();
    write_state(&lab, &base, dir.path());

    // No change: the twin agrees with the live report on every path.
    let (code, answer) = whatif(&lab, dir.path(), &live.path, &[]);
    assert_eq!(code, 0, "no change breaks nothing");
    assert_eq!(answer.schema, "portcall.whatif/v1");
    assert_eq!(answer.fidelity.as_deref(), Some(&[][..]), "fidelity");
    assert_predicted(&answer, &live.report, "no change");
    assert_eq!(answer.summary.same, answer.paths.len());

    // The state collected through the agents (mTLS, the coordinator's
    // certificate, from the operator's host) gives the same agreement.
    let collected = tempfile::tempdir().unwrap();
    let state = collect_state(
        &lab,
        COORDINATOR,
        &["--pki".into(), lab.pki().into()],
        collected.path(),
    );
    assert_eq!(state.hosts.len(), lab.plan.hosts.len());
    let db = &state.hosts["db"];
    assert_eq!(db.interfaces[0].name, "eth0");
    assert_eq!(
        db.interfaces[0].addresses[0].to_string(),
        format!("{}/15", lab.addr("db"))
    );
    assert_eq!(db.ruleset.as_ref().unwrap().syntax, RulesetSyntax::Json);
    let (code, answer) = whatif(&lab, collected.path(), &live.path, &[]);
    assert_eq!(code, 0);
    assert_eq!(answer.fidelity.as_deref(), Some(&[][..]), "collected state");
    assert_predicted(&answer, &live.report, "collected state");

    for c in candidates(&lab, &base, &live.report) {
        let file = dir.path().join(format!("candidate-{}", c.host));
        std::fs::write(&file, &c.file).unwrap();
        let (code, answer) = whatif(
            &lab,
            dir.path(),
            &live.path,
            &[format!("{}={}", c.host, file.display())],
        );
        let after = live_with(&lab, &base, |lab| {
            if c.iptables {
                let mut child = lab
                    .lab
                    .command(&c.host, "iptables-nft-restore")
                    .stdin(Stdio::piped())
                    .spawn()
                    .unwrap();
                std::io::Write::write_all(child.stdin.as_mut().unwrap(), c.file.as_bytes())
                    .unwrap();
                drop(child.stdin.take());
                assert!(child.wait().unwrap().success(), "{}: restore", c.name);
            } else {
                lab.lab.nft(&c.host, &c.file).unwrap();
            }
        });
        assert_predicted(&answer, &after, c.name);
        assert_eq!(
            answer.fidelity.as_deref(),
            Some(&[][..]),
            "{}: fidelity",
            c.name
        );
        let changed: Vec<_> = answer
            .paths
            .iter()
            .filter(|p| p.change != probe_core::twin::PathChange::Same)
            .collect();
        assert!(!changed.is_empty(), "{}: the change changes a path", c.name);
        let breaks_or_opens = answer.summary.breaks + answer.summary.opens > 0;
        assert_eq!(code, i32::from(breaks_or_opens), "{}: exit status", c.name);
        // Every changed path that ends blocked names its deciding rule on
        // the host that was changed or its own source.
        for p in &changed {
            if p.expect == Expect::Open && p.candidate.verdict != probe_core::report::Verdict::Ok {
                let rule = p.candidate.rule.as_ref().unwrap_or_else(|| {
                    panic!("{}: {}->{}:{} has no rule", c.name, p.from, p.to, p.port)
                });
                assert_eq!(rule.host, c.host, "{}", c.name);
            }
        }
    }
    suggestion(&lab, &base, &live, dir.path());
    apply(&lab, &base);
}

/// The output of `portcall suggest` for the lab's violations as the
/// candidate: each host's section run with sh in its namespace, predicted
/// by the twin, then run in the live lab and checked.
fn suggestion(
    lab: &PlanLab,
    base: &BTreeMap<String, HostRules>,
    live: &integration::CheckRun,
    dir: &Path,
) {
    let script = dir.join("suggest.sh");
    lab.portcall_ok(&[
        "suggest",
        &live.path.to_string_lossy(),
        "--format",
        "nft",
        "--table",
        "inet portcall",
        "--chain",
        "input",
        "--out",
        &script.to_string_lossy(),
    ])
    .unwrap();
    let text = std::fs::read_to_string(&script).unwrap();
    let sections = dir.join("sections");
    std::fs::create_dir_all(&sections).unwrap();
    let changes = probe_core::twin::suggest::changes(&text, &sections).unwrap();
    assert!(
        !changes.is_empty(),
        "suggest has rules for the lab:\n{text}"
    );
    let args: Vec<String> = changes
        .iter()
        .map(|c| format!("{}={}", c.host, c.file.display()))
        .collect();
    let (code, answer) = whatif(lab, dir, &live.path, &args);
    assert!(
        answer.changes.iter().all(|c| c.kind == "shell-commands"),
        "{:?}",
        answer.changes
    );
    apply(lab, base);
    for c in &changes {
        let out = lab
            .lab
            .command(&c.host, "sh")
            .arg("-e")
            .arg(&c.file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            c.host,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let after = lab.check(COORDINATOR).unwrap().report;
    assert_predicted(&answer, &after, "the output of suggest");
    assert!(answer.summary.fixes > 0, "{:?}", answer.summary);
    assert_eq!(
        code,
        i32::from(answer.summary.breaks + answer.summary.opens > 0)
    );

    // `suggest --whatif` prints the same script followed by the predicted
    // diff as comments.
    let out = Command::new(lab.bin())
        .args(["suggest", &live.path.to_string_lossy(), "--format", "nft"])
        .args([
            "--table",
            "inet portcall",
            "--chain",
            "input",
            "--whatif",
            "--plan",
        ])
        .arg(lab.plan_path())
        .arg("--state")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.starts_with(&text), "{printed}");
    assert!(
        printed.contains("# predicted by the twin (portcall whatif):"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("{} fixes", answer.summary.fixes)),
        "{printed}"
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The names in /run/netns that start with `prefix`.
fn namespaces(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Two hosts, one silently dropped path: a round that takes a while.
const SMALL_PLAN: &str = r#"
name = "whatif-kill"
[defaults]
timeout_ms = 1500
retries = 2
[[hosts]]
name = "app"
address = "198.18.7.10"
[[hosts]]
name = "db"
address = "198.18.7.20"
roles = ["mysql"]
[[flows]]
from = "host:app"
to = "host:db"
ports = ["mysql"]
"#;

fn small_state(dir: &Path) -> PathBuf {
    for (host, addr) in [("app", "198.18.7.10"), ("db", "198.18.7.20")] {
        let d = dir.join("state").join(host);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("net.toml"),
            format!("[[interface]]\nname = \"eth0\"\naddresses = [\"{addr}/24\"]\n"),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("state/db/ruleset.nft"),
        "flush ruleset\ntable inet f {\n  chain input {\n    type filter hook input priority 0; policy drop;\n  }\n}\n",
    )
    .unwrap();
    std::fs::write(dir.join("plan.toml"), SMALL_PLAN).unwrap();
    dir.join("state")
}

#[test]
fn whatif_killed_mid_run_leaves_no_namespace_after_the_next_start() {
    if !lab_available() {
        return;
    }
    let bin = integration::portcall_bin().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = small_state(dir.path());
    let run = |bin: &Path| {
        Command::new(bin)
            .arg("whatif")
            .arg("--plan")
            .arg(dir.path().join("plan.toml"))
            .arg("--state")
            .arg(&state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = run(&bin);
    let prefix = format!("pctw{}-", child.id());
    // Kill it once its namespaces exist and its agents run.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let made = namespaces(&prefix);
        let busy = made.iter().any(|ns| {
            Command::new("ip")
                .args(["netns", "pids", ns])
                .output()
                .is_ok_and(|o| !o.stdout.is_empty())
        });
        if busy {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "whatif built no namespace in 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!namespaces(&prefix).is_empty(), "a SIGKILL leaves them");
    // The next run reaps them at its start, then cleans up after itself.
    let next = run(&bin).wait_with_output().unwrap();
    assert_eq!(
        next.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&next.stderr)
    );
    assert_eq!(namespaces(&prefix), Vec::<String>::new(), "reaped");
    assert_eq!(
        namespaces("pctw")
            .iter()
            .filter(|n| n.starts_with(&format!("pctw{}-", std::process::id())))
            .count(),
        0
    );
}

#[test]
fn whatif_without_privileges_is_refused_with_a_clear_message() {
    if !lab_available() {
        return;
    }
    let bin = integration::portcall_bin().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = small_state(dir.path());
    let Some(setpriv) = integration::find_tool("setpriv") else {
        assert!(
            std::env::var(integration::REQUIRE_LAB_ENV).as_deref() != Ok("1"),
            "setpriv (util-linux) is needed to drop privileges"
        );
        eprintln!("skipped: needs setpriv");
        return;
    };
    // Root without its capabilities, then nobody: both refused.
    for args in [
        vec!["--inh-caps=-all", "--bounding-set=-all"],
        vec!["--reuid=65534", "--regid=65534", "--clear-groups"],
    ] {
        let out = Command::new(&setpriv)
            .args(&args)
            .arg("--")
            .arg(&bin)
            .arg("whatif")
            .arg("--plan")
            .arg(dir.path().join("plan.toml"))
            .arg("--state")
            .arg(&state)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("whatif needs root, or CAP_NET_ADMIN and CAP_SYS_ADMIN"),
            "{args:?}: {stderr}"
        );
    }
}

/// client (ops) reaches db and db2 through a router that is no plan host.
const ROUTED_PLAN: &str = r#"
name = "whatif-routed"
[defaults]
timeout_ms = 800
retries = 0
control_port = 7400
[zones]
ops = "Operators"
data = "Data"
[[hosts]]
name = "client"
address = "198.18.1.20"
zone = "ops"
[[hosts]]
name = "db"
address = "198.18.3.40"
zone = "data"
roles = ["svc"]
[[hosts]]
name = "db2"
address = "198.18.3.41"
zone = "data"
roles = ["svc"]
[roles.svc]
ports = [{ name = "app", port = 7100 }, { name = "admin", port = 7101 }]
[[flows]]
from = "host:client"
to = "role:svc"
ports = ["app", "admin"]
"#;

#[test]
fn whatif_routed_lab_router_outside_the_twin_is_outside_twin_and_the_rest_agrees() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(&plan, ROUTED_PLAN).unwrap();
    let lab = PlanLab::routed(&plan, &[]).unwrap();
    // The router (no plan host, no state) drops one path and resets another.
    lab.lab
        .router_rules(&integration::RouterRules {
            forward: vec![
                "ip daddr 198.18.3.40 tcp dport 7100 drop".into(),
                "ip daddr 198.18.3.41 tcp dport 7101 reject with tcp reset".into(),
            ],
            ..integration::RouterRules::default()
        })
        .unwrap();
    lab.start_agents().unwrap();
    // `check --save-state` collects every host's state after the round:
    // here each host's default route via the router.
    let pki = lab.pki().to_string_lossy().into_owned();
    let saved = dir.path().join("saved");
    let live = lab
        .check_with(
            "client",
            &["--pki", &pki, "--save-state", &saved.to_string_lossy()],
        )
        .unwrap();
    let collected = State::load(&saved).unwrap();
    assert_eq!(collected.hosts.len(), 3);
    let client = &collected.hosts["client"];
    assert_eq!(
        client
            .addresses()
            .map(|a| a.to_string())
            .collect::<Vec<_>>(),
        ["198.18.1.20/24"]
    );
    assert!(
        client
            .routes
            .iter()
            .any(|r| r.to == probe_core::twin::state::RouteTo::Default
                && r.via == Some("198.18.1.254".parse().unwrap())),
        "{:?}",
        client.routes
    );
    // State: each host on its zone's /24, its default route via the
    // router's address there; no rulesets.
    for (host, addr, gw) in [
        ("client", "198.18.1.20", "198.18.1.254"),
        ("db", "198.18.3.40", "198.18.3.254"),
        ("db2", "198.18.3.41", "198.18.3.254"),
    ] {
        let d = dir.path().join("state").join(host);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("net.toml"),
            format!(
                "[[interface]]\nname = \"eth0\"\naddresses = [\"{addr}/24\"]\n\n[[route]]\nto = \"default\"\nvia = \"{gw}\"\n"
            ),
        )
        .unwrap();
    }
    let (code, answer) = whatif(&lab, dir.path(), &live.path, &[]);
    assert_eq!(code, 0);
    let outside: Vec<String> = answer
        .paths
        .iter()
        .filter(|p| p.change == probe_core::twin::PathChange::OutsideTwin)
        .map(|p| format!("{}->{}:{}", p.from, p.to, p.port))
        .collect();
    assert_eq!(outside, ["client->db:7100", "client->db2:7101"]);
    // Every other path agrees with the live report.
    let disagree: Vec<&str> = answer
        .fidelity
        .as_ref()
        .unwrap()
        .iter()
        .map(|d| d.path.as_str())
        .collect();
    assert_eq!(
        disagree,
        [
            "client -> db:7100/tcp (ipv4)",
            "client -> db2:7101/tcp (ipv4)"
        ]
    );
    assert_eq!(answer.summary.same, answer.paths.len() - 2);

    // The router written into the state (forwarding, a leg on each zone,
    // its ruleset): now inside the twin, every path agrees with the live
    // report, and a change on the router is predicted.
    let router = |forward: Vec<String>| integration::RouterRules {
        forward,
        ..integration::RouterRules::default()
    };
    let base = router(vec![
        "ip daddr 198.18.3.40 tcp dport 7100 drop".into(),
        "ip daddr 198.18.3.41 tcp dport 7101 reject with tcp reset".into(),
    ]);
    let d = dir.path().join("state/router");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("net.toml"),
        "forwarding = true\n\n[[interface]]\nname = \"ops\"\naddresses = [\"198.18.1.254/24\"]\n\n[[interface]]\nname = \"data\"\naddresses = [\"198.18.3.254/24\"]\n",
    )
    .unwrap();
    std::fs::write(d.join("ruleset.nft"), base.render()).unwrap();
    let (_, answer) = whatif(&lab, dir.path(), &live.path, &[]);
    assert_eq!(answer.summary.outside_twin, 0);
    assert_eq!(
        answer.fidelity.as_deref(),
        Some(&[][..]),
        "router in the twin"
    );
    let candidate = router(vec![
        "ip daddr 198.18.3.41 tcp dport 7100 drop".into(),
        "ip daddr 198.18.3.41 tcp dport 7101 reject with tcp reset".into(),
    ]);
    let file = dir.path().join("router-candidate.nft");
    std::fs::write(&file, candidate.render()).unwrap();
    let (code, answer) = whatif(
        &lab,
        dir.path(),
        &live.path,
        &[format!("router={}", file.display())],
    );
    lab.lab.router_rules(&candidate).unwrap();
    let after = lab.check("client").unwrap().report;
    assert_predicted(&answer, &after, "a change on the router between the zones");
    let changes: Vec<String> = answer
        .paths
        .iter()
        .filter(|p| p.change != probe_core::twin::PathChange::Same)
        .map(|p| format!("{}->{}:{} {}", p.from, p.to, p.port, p.change.as_str()))
        .collect();
    assert_eq!(
        changes,
        ["client->db:7100 fixes", "client->db2:7100 breaks"]
    );
    assert_eq!(code, 1);
}
