//! End-to-end: the bundled WSO2 plan deployed in a lab of network
//! namespaces, one per server, with real `portcall agent` processes behind
//! nftables firewalls, checked from the operator's host. Each fault must
//! produce exactly its violation, with the right observed outcome, and
//! change nothing else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use integration::firewall::{self, HostRules};
use integration::{CheckRun, PlanLab, lab_available};
use probe_core::probe::Observed;
use probe_core::report::Verdict;
use serde_json::{Value, json};

pub(crate) fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wso2-distributed.toml")
}

const COORDINATOR: &str = "operator";

/// `from->to:port` of every path that is not ok, with its observed outcome.
fn not_ok(run: &CheckRun) -> BTreeMap<String, (Verdict, Option<Observed>)> {
    run.report
        .paths
        .iter()
        .filter(|p| p.verdict != Verdict::Ok)
        .map(|p| {
            (
                format!("{}->{}:{}", p.from, p.to, p.port),
                (p.verdict, p.observed),
            )
        })
        .collect()
}

pub(crate) fn apply(lab: &PlanLab, rules: &BTreeMap<String, HostRules>) {
    for (host, r) in rules {
        lab.firewall(host, r).unwrap();
    }
}

/// A fault: what it does to the correct rules, and the violations it must
/// cause (and nothing else).
pub(crate) struct Fault {
    pub(crate) name: &'static str,
    pub(crate) inject: fn(&PlanLab, &mut BTreeMap<String, HostRules>),
    pub(crate) expect: &'static [(&'static str, Observed)],
    /// The faulted path's `icmp`, `target_stage` and `blame`, exactly.
    evidence: fn(&PlanLab) -> Value,
}

/// `{icmp, target_stage, blame}` with `rule` left unset (null).
fn evidence(icmp: Value, stage: Value, blame: Value) -> Value {
    let blame = match blame {
        Value::Object(mut b) => {
            b.insert("rule".into(), Value::Null);
            Value::Object(b)
        }
        other => other,
    };
    json!({"icmp": icmp, "target_stage": stage, "blame": blame})
}

/// A silent drop: on the source's own link no walk runs, so no hop.
fn dropped(_: &PlanLab) -> Value {
    evidence(
        Value::Null,
        json!("nothing"),
        json!({"where": "unknown", "hop": null, "hop_distance": null, "cause": "drop"}),
    )
}

/// A drop in the source's own output chain: the source agent's rule trace
/// names it, so the cause is `egress`, not a drop on the way.
fn dropped_on_egress(_: &PlanLab) -> Value {
    evidence(
        Value::Null,
        json!("nothing"),
        json!({"where": "source", "hop": null, "hop_distance": null, "cause": "egress"}),
    )
}

pub(crate) fn faults() -> Vec<Fault> {
    vec![
        Fault {
            name: "missing accept (dropped)",
            inject: |lab, r| {
                let rule = firewall::accept(&lab.addr("lb").to_string(), 8280);
                r.get_mut("gw-worker-1").unwrap().remove_accept(&rule);
            },
            expect: &[("lb->gw-worker-1:8280", Observed::Timeout)],
            evidence: dropped,
        },
        Fault {
            name: "reject with icmp admin-prohibited",
            inject: |lab, r| {
                r.get_mut("esb-1").unwrap().input_first.push(format!(
                    "ip saddr {} tcp dport 8243 reject with icmp type admin-prohibited",
                    lab.addr("lb")
                ));
            },
            expect: &[("lb->esb-1:8243", Observed::Unreachable)],
            evidence: |lab| {
                let esb = lab.addr("esb-1").to_string();
                evidence(
                    json!({"type": "admin-prohibited", "code": 13, "from": esb}),
                    json!("nothing"),
                    json!({"where": "target", "hop": esb, "hop_distance": null, "cause": "icmp-reject"}),
                )
            },
        },
        Fault {
            name: "reject with icmp port-unreachable",
            inject: |lab, r| {
                r.get_mut("esb-2")
                    .unwrap()
                    .input_first
                    .push(format!("ip saddr {} tcp dport 8243 reject", lab.addr("lb")));
            },
            expect: &[("lb->esb-2:8243", Observed::Refused)],
            evidence: |lab| {
                let esb = lab.addr("esb-2").to_string();
                evidence(
                    json!({"type": "port-unreachable", "code": 3, "from": esb}),
                    json!("nothing"),
                    json!({"where": "target", "hop": esb, "hop_distance": null, "cause": "icmp-reject"}),
                )
            },
        },
        Fault {
            name: "return path dropped on the target's output chain",
            inject: |lab, r| {
                r.get_mut("esb-2")
                    .unwrap()
                    .output
                    .push(format!("ip daddr {} tcp sport 8280 drop", lab.addr("lb")));
            },
            expect: &[("lb->esb-2:8280", Observed::Timeout)],
            evidence: |_| {
                evidence(
                    Value::Null,
                    json!("syn"),
                    json!({"where": "return-path", "hop": null, "hop_distance": null, "cause": "return-path-lost"}),
                )
            },
        },
        Fault {
            name: "stateless ACL passing only SYNs",
            inject: |lab, r| {
                // Ahead of the connection tracking accept: a table of its
                // own, hooked earlier.
                r.get_mut("gw-worker-2").unwrap().extra = format!(
                    "table inet acl {{\n  chain input {{\n    type filter hook input priority -10; policy accept;\n    ip saddr {} tcp dport 8280 tcp flags & (fin|syn|rst|ack) != syn drop\n  }}\n}}\n",
                    lab.addr("lb")
                );
            },
            expect: &[("lb->gw-worker-2:8280", Observed::WrongHost)],
            evidence: |_| {
                evidence(
                    Value::Null,
                    json!("syn"),
                    json!({"where": "target", "hop": null, "hop_distance": null, "cause": "handshake-incomplete"}),
                )
            },
        },
        Fault {
            name: "reject with tcp reset",
            inject: |lab, r| {
                r.get_mut("trafficmanager")
                    .unwrap()
                    .input_first
                    .push(format!(
                        "ip saddr {} tcp dport 5672 reject with tcp reset",
                        lab.addr("gw-manager")
                    ));
            },
            expect: &[("gw-manager->trafficmanager:5672", Observed::Refused)],
            evidence: |_| {
                evidence(
                    Value::Null,
                    json!("nothing"),
                    json!({"where": "unknown", "hop": null, "hop_distance": null, "cause": "reset"}),
                )
            },
        },
        Fault {
            name: "wrong accept to 3306 from the DMZ",
            inject: |lab, r| {
                let rule = firewall::accept(&lab.addr("lb").to_string(), 3306);
                r.get_mut("db").unwrap().input_accepts.push(rule);
            },
            expect: &[("lb->db:3306", Observed::Open)],
            evidence: |_| evidence(Value::Null, json!("nonce"), Value::Null),
        },
        Fault {
            name: "egress drop on a source host",
            inject: |lab, r| {
                r.get_mut("gw-worker-2").unwrap().output.push(format!(
                    "ip daddr {} tcp dport 10399 drop",
                    lab.addr("keymanager")
                ));
            },
            expect: &[("gw-worker-2->keymanager:10399", Observed::Timeout)],
            evidence: dropped_on_egress,
        },
    ]
}

fn assert_exactly(run: &CheckRun, expect: &[(&str, Observed)], what: &str, lab: &PlanLab) {
    let got = not_ok(run);
    let want: BTreeMap<String, (Verdict, Option<Observed>)> = expect
        .iter()
        .map(|(k, o)| ((*k).to_owned(), (Verdict::Violation, Some(*o))))
        .collect();
    let details: Vec<String> = run
        .report
        .paths
        .iter()
        .filter(|p| p.verdict != Verdict::Ok)
        .map(|p| format!("{}->{}:{}: {}", p.from, p.to, p.port, p.detail))
        .collect();
    assert_eq!(
        got,
        want,
        "{what}: wrong violations (exit {}):\n{}\n{}\n{}",
        run.code,
        details.join("\n"),
        run.stderr,
        lab.logs()
    );
    let want_code = if expect.is_empty() { 0 } else { 1 };
    assert_eq!(run.code, want_code, "{what}: exit code");
    assert_eq!(run.report.summary.errors, 0, "{what}: errors");
}

#[test]
fn wso2_correct_firewall_then_each_fault_alone_and_all_together() {
    if !lab_available() {
        return;
    }
    let lab = PlanLab::new(&example()).unwrap();
    let correct = firewall::correct(&lab.plan, COORDINATOR);
    apply(&lab, &correct);
    lab.start_agents().unwrap();

    // a. A correct firewall: every path ok, must-be-blocked ones dropped.
    let run = lab.check(COORDINATOR).unwrap();
    assert_exactly(&run, &[], "correct firewall", &lab);
    let blocked: Vec<_> = run
        .report
        .paths
        .iter()
        .filter(|p| p.expect == probe_core::plan::Expect::Blocked)
        .collect();
    assert!(!blocked.is_empty());
    for p in &blocked {
        assert_eq!(
            p.observed,
            Some(Observed::Timeout),
            "{}->{}:{}",
            p.from,
            p.to,
            p.port
        );
        assert_eq!(
            p.target_saw,
            Some(false),
            "the canary was up and saw nothing"
        );
    }
    let open = run
        .report
        .paths
        .iter()
        .filter(|p| p.expect == probe_core::plan::Expect::Open);
    for p in open {
        assert_eq!(p.target_saw, Some(true), "{}->{}:{}", p.from, p.to, p.port);
        assert_eq!(
            p.seen_source.as_deref(),
            Some(lab.addr(&p.from).to_string().as_str()),
            "the target sees the source's own address"
        );
    }

    // The example keeps API-M Analytics at its shipped offset 1: the plan
    // lints clean without analytics dial_overrides, and every gateway's
    // analytics path is probed on the catalog's 7612/7712 and passes.
    let text = std::fs::read_to_string(example()).unwrap();
    let a = probe_core::plan::analyze(
        &text,
        "wso2-distributed.toml",
        probe_core::plan::Catalog::builtin(),
    );
    assert!(a.diagnostics.0.is_empty(), "{}", a.diagnostics);
    let analytics: Vec<_> = run
        .report
        .paths
        .iter()
        .filter(|p| p.to == "apim-analytics" && p.from.starts_with("gw-"))
        .map(|p| (p.port, p.verdict))
        .collect();
    assert_eq!(analytics.len(), 6, "{analytics:?}");
    assert!(
        analytics
            .iter()
            .all(|(port, v)| matches!(port, 7612 | 7712) && *v == Verdict::Ok),
        "{analytics:?}"
    );

    // b. Each fault alone, then all together.
    let faults = faults();
    for f in &faults {
        let mut rules = correct.clone();
        (f.inject)(&lab, &mut rules);
        apply(&lab, &rules);
        let run = lab.check(COORDINATOR).unwrap();
        assert_exactly(&run, f.expect, f.name, &lab);
        let key = f.expect[0].0;
        let p = run
            .report
            .paths
            .iter()
            .find(|p| format!("{}->{}:{}", p.from, p.to, p.port) == key)
            .unwrap();
        // Where and which rule are rule attribution's (routed_faults and
        // the rule tests assert them); here the evidence of both ends and
        // the cause it gives.
        let want = (f.evidence)(&lab);
        assert_eq!(
            json!({"icmp": p.icmp, "target_stage": p.target_stage, "cause": p.blame.as_ref().map(|b| b.cause)}),
            json!({"icmp": want["icmp"], "target_stage": want["target_stage"], "cause": want["blame"].get("cause")}),
            "{}: {key}: {}",
            f.name,
            p.detail
        );
    }
    let mut rules = correct.clone();
    let mut all = Vec::new();
    for f in &faults {
        (f.inject)(&lab, &mut rules);
        all.extend_from_slice(f.expect);
    }
    apply(&lab, &rules);
    let run = lab.check(COORDINATOR).unwrap();
    assert_exactly(&run, &all, "all faults together", &lab);
}

/// The MariaDB binaries, or why they are missing (a skip locally, a failure
/// under `PORTCALL_REQUIRE_LAB=1`).
fn mariadb_tools() -> Option<(PathBuf, PathBuf, PathBuf)> {
    let find = |name: &str| {
        ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    };
    match (
        find("mariadb-install-db"),
        find("mariadbd"),
        find("mariadb"),
    ) {
        (Some(i), Some(d), Some(c)) => Some((i, d, c)),
        _ => {
            let reason = "needs mariadb-server (mariadb-install-db, mariadbd, mariadb)";
            if std::env::var(integration::REQUIRE_LAB_ENV).as_deref() == Ok("1") {
                panic!("{}=1 but {reason}", integration::REQUIRE_LAB_ENV);
            }
            eprintln!("skipped: {reason}");
            None
        }
    }
}

#[test]
fn wso2_real_mariadb_is_held_probed_live_and_keeps_working() {
    if !lab_available() {
        return;
    }
    let Some((install_db, mariadbd, client)) = mariadb_tools() else {
        return;
    };
    let lab = PlanLab::new(&example()).unwrap();
    apply(&lab, &firewall::correct(&lab.plan, COORDINATOR));

    // A real MariaDB on the db host's plan address, with a user the app
    // servers can log in as.
    let data = lab.dir.path().join("mariadb");
    std::fs::create_dir_all(&data).unwrap();
    let datadir = format!("--datadir={}", data.join("data").display());
    let out = std::process::Command::new(&install_db)
        .args([
            "--no-defaults",
            "--user=root",
            "--skip-test-db",
            "--auth-root-authentication-method=normal",
            &datadir,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mariadb-install-db: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let init = data.join("init.sql");
    std::fs::write(
        &init,
        "CREATE USER IF NOT EXISTS 'portcall'@'%' IDENTIFIED BY 'portcall';\nGRANT ALL ON *.* TO 'portcall'@'%';\n",
    )
    .unwrap();
    let db_addr = lab.addr("db").to_string();
    lab.lab
        .spawn_logged(
            "db",
            &mariadbd,
            &[
                "--no-defaults",
                "--user=root",
                &datadir,
                &format!("--bind-address={db_addr}"),
                "--port=3306",
                &format!("--socket={}", data.join("mysqld.sock").display()),
                &format!("--pid-file={}", data.join("mysqld.pid").display()),
                &format!("--init-file={}", init.display()),
                "--skip-log-bin",
                // Every aborted connection and why, so a probe that resets
                // the server's connection shows up as an error below.
                "--log-warnings=4",
            ],
            &data.join("mariadbd.log"),
        )
        .unwrap();
    lab.lab
        .wait_listening("db", 3306, std::time::Duration::from_secs(30))
        .unwrap_or_else(|e| {
            panic!(
                "{e:#}\n{}",
                std::fs::read_to_string(data.join("mariadbd.log")).unwrap_or_default()
            )
        });
    lab.start_agents().unwrap();

    let run = lab.check(COORDINATOR).unwrap();
    assert_exactly(&run, &[], "real mariadb", &lab);
    let db = run.report.hosts.iter().find(|h| h.name == "db").unwrap();
    assert!(
        db.conflicts.iter().any(|c| c.port == 3306),
        "the agent reports 3306 held by the real server: {:?}",
        db.conflicts
    );
    let to_db: Vec<_> = run
        .report
        .paths
        .iter()
        .filter(|p| p.to == "db" && p.port == 3306)
        .collect();
    assert!(to_db.len() > 5);
    for p in to_db {
        let want = match p.expect {
            probe_core::plan::Expect::Open => Observed::Open,
            probe_core::plan::Expect::Blocked => Observed::Timeout,
        };
        assert_eq!(p.observed, Some(want), "{}->db:3306", p.from);
        assert_eq!(
            p.target_saw, None,
            "no canary on a held port: {}->db",
            p.from
        );
        if p.observed == Some(Observed::Open) {
            // The server's greeting is the evidence that MariaDB answered.
            let banner = p.service_banner.as_deref().unwrap_or_default();
            assert!(
                banner.starts_with("MySQL ") && banner.contains("MariaDB"),
                "{}->db banner {banner:?}",
                p.from
            );
            // The catalog plans 3306 as `mysql`: the greeting is healthy.
            assert_eq!(
                p.proof,
                Some(probe_core::probe::service::Proof::Healthy),
                "{}->db",
                p.from
            );
            let answer = p.service_answer.as_ref().unwrap();
            assert_eq!(answer.product.as_deref(), Some("MariaDB"), "{answer:?}");
        }
    }
    // The probes left after the greeting with an orderly close: MariaDB
    // logs no communication error (a reset gives "Got an error writing
    // communication packets"). A client that leaves before logging in is
    // still counted as an aborted connection "closed normally without
    // authentication": no client without credentials can avoid that.
    let log = std::fs::read_to_string(data.join("mariadbd.log")).unwrap_or_default();
    assert!(
        log.contains("closed normally without authentication"),
        "the probes reached the server: {log}"
    );
    assert!(
        !log.contains("communication packets") && !log.contains("Could not write packet"),
        "a probe broke a connection: {log}"
    );

    // The server still serves an app server after being probed.
    let out = lab
        .lab
        .output(
            "gw-worker-1",
            &client,
            &[
                "-h",
                &db_addr,
                "-P",
                "3306",
                "-uportcall",
                "-pportcall",
                "-N",
                "-B",
                "-e",
                "SELECT 40 + 2",
            ],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "mariadb client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
}

#[test]
fn wso2_dnat_to_another_host_is_wrong_host() {
    if !lab_available() {
        return;
    }
    let lab = PlanLab::new(&example()).unwrap();
    let mut rules = firewall::correct(&lab.plan, COORDINATOR);
    // gw-worker-1 forwards its planned nio-http port to gw-worker-2 (a stale
    // NAT rule after a migration, say), masquerading so replies come back.
    let (w1, w2) = (lab.addr("gw-worker-1"), lab.addr("gw-worker-2"));
    rules.get_mut("gw-worker-1").unwrap().extra = format!(
        "table ip nat {{\n  chain prerouting {{ type nat hook prerouting priority dstnat; tcp dport 8280 dnat to {w2}:8280; }}\n  chain postrouting {{ type nat hook postrouting priority srcnat; ip daddr {w2} tcp dport 8280 masquerade; }}\n}}\n"
    );
    rules
        .get_mut("gw-worker-2")
        .unwrap()
        .input_accepts
        .push(firewall::accept(&w1.to_string(), 8280));
    lab.lab
        .sysctl("gw-worker-1", "net.ipv4.ip_forward", "1")
        .unwrap();
    apply(&lab, &rules);
    lab.start_agents().unwrap();

    let run = lab.check(COORDINATOR).unwrap();
    assert_exactly(
        &run,
        &[("lb->gw-worker-1:8280", Observed::WrongHost)],
        "dnat",
        &lab,
    );
    let p = run
        .report
        .paths
        .iter()
        .find(|p| p.from == "lb" && p.to == "gw-worker-1" && p.port == 8280)
        .unwrap();
    assert_eq!(
        p.target_saw,
        Some(false),
        "gw-worker-1's canary saw nothing"
    );
    assert!(
        p.detail.contains("gw-worker-2"),
        "the detail names who answered: {}",
        p.detail
    );
    assert_eq!(
        json!({"target_stage": p.target_stage, "blame": p.blame}),
        json!({"target_stage": null, "blame": {
            "where": "network", "hop": lab.addr("gw-worker-2").to_string(),
            "hop_distance": null, "cause": "redirect", "rule": null
        }}),
        "{}",
        p.detail
    );
}

/// The plan `wso2 scan --format toml` writes for the API-M 2.2 fixtures
/// (`km`, `tm` from `variant`), each host moved to a lab address and an
/// operator host added to check from.
fn scanned_plan(variant: &str, dir: &Path) -> PathBuf {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../probe-core/tests/fixtures/wso2/apim22");
    let node = |name: &str, v: &str| (name.to_owned(), f.join(v).join(name));
    let set = vec![
        node("gw-worker", "consistent"),
        node("gw-manager", "consistent"),
        node("km", variant),
        node("tm", variant),
        node("analytics", "consistent"),
    ];
    let scan = probe_core::wso2::scan(&set, None).unwrap();
    let mut out = Vec::new();
    probe_core::wso2::render(&scan, probe_core::wso2::ScanFormat::Toml, &mut out).unwrap();
    let mut n = 10;
    let mut text = String::new();
    for line in String::from_utf8(out).unwrap().lines() {
        if line.starts_with("address = ") {
            text.push_str(&format!("address = \"198.18.9.{n}\"\n"));
            n += 1;
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push_str("\n[[hosts]]\nname = \"operator\"\naddress = \"198.18.9.99\"\n");
    let path = dir.join(format!("scan-{variant}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn wso2_scan_plan_checks_the_ports_the_clients_really_dial() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The consistent deployment: every dial the scan found, ok.
    let lab = PlanLab::new(&scanned_plan("consistent", dir.path())).unwrap();
    lab.start_agents().unwrap();
    let run = lab.check(COORDINATOR).unwrap();
    assert_eq!(run.code, 0, "{:#?}\n{}", not_ok(&run), run.stderr);
    assert!(
        run.report
            .paths
            .iter()
            .any(|p| p.from == "gw-worker" && p.to == "tm" && p.port == 5672),
        "the JMS dial is probed"
    );
    drop(lab);
    // The broken one: the key manager at offset 5, the traffic manager at
    // -DportOffset=1. Each gateway's dial is probed where the gateway
    // dials, refused there, and names where the server listens.
    let lab = PlanLab::new(&scanned_plan("broken", dir.path())).unwrap();
    lab.start_agents().unwrap();
    let run = lab.check(COORDINATOR).unwrap();
    assert_eq!(run.code, 1, "{}", run.stderr);
    let mut got: Vec<(String, u16, Option<u16>, Option<Observed>)> = run
        .report
        .paths
        .iter()
        .filter(|p| p.verdict != Verdict::Ok)
        .map(|p| {
            (
                format!("{}->{}", p.from, p.to),
                p.port,
                p.server_port,
                p.observed,
            )
        })
        .collect();
    got.sort();
    let refused = Some(Observed::Refused);
    let mut want = Vec::new();
    for gw in ["gw-manager", "gw-worker"] {
        want.extend([
            (format!("{gw}->km"), 9443, Some(9448), refused),
            (format!("{gw}->km"), 10397, Some(10402), refused),
            (format!("{gw}->tm"), 5672, Some(5673), refused),
            (format!("{gw}->tm"), 9611, Some(9612), refused),
            (format!("{gw}->tm"), 9711, Some(9712), refused),
        ]);
    }
    want.sort();
    assert_eq!(got, want, "{}", lab.logs());
}
