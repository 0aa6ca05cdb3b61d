//! The firewall-change loop an operator runs: check, see the violations,
//! apply what `portcall suggest` prints on each host, check again, and
//! `portcall diff` the two reports — in the WSO2 lab, with every fault one a
//! rule on the target can fix. A too-broad accept on the database is closed
//! for everyone the plan does not allow, not only for the hosts that probed:
//! an outside address no plan host has is blocked after the fix too.

use std::collections::BTreeSet;
use std::path::Path;

use integration::firewall;
use integration::{PlanLab, lab_available};

#[test]
fn suggest_fixes_every_target_side_fault_and_diff_lists_exactly_those() {
    if !lab_available() {
        return;
    }
    let plan = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wso2-distributed.toml");
    let lab = PlanLab::new(&plan).unwrap();
    let mut rules = firewall::correct(&lab.plan, "operator");
    let (lb, gwm) = (
        lab.addr("lb").to_string(),
        lab.addr("gw-manager").to_string(),
    );
    // A missing accept, an ICMP reject, a TCP reset and a too-broad accept
    // (the database open to every source).
    rules
        .get_mut("gw-worker-1")
        .unwrap()
        .remove_accept(&firewall::accept(&lb, 8280));
    rules.get_mut("esb-1").unwrap().input_first.push(format!(
        "ip saddr {lb} tcp dport 8243 reject with icmp type admin-prohibited"
    ));
    rules
        .get_mut("trafficmanager")
        .unwrap()
        .input_first
        .push(format!(
            "ip saddr {gwm} tcp dport 5672 reject with tcp reset"
        ));
    rules
        .get_mut("db")
        .unwrap()
        .input_accepts
        .push("tcp dport 3306 accept".to_string());
    for (host, r) in &rules {
        lab.firewall(host, r).unwrap();
    }
    lab.start_agents().unwrap();
    // A second outside address on the internet host, in no plan.
    let outsider = "198.18.0.99";
    lab.lab
        .output(
            "internet",
            "ip",
            &["addr", "add", &format!("{outsider}/15"), "dev", "eth0"],
        )
        .unwrap();
    let db = format!("{}:3306", lab.addr("db"));
    let bin = integration::portcall_bin().unwrap();
    // Outside a round no canary holds the port: a listener of its own for
    // two seconds, gone before the next round needs the port.
    let probe_from_outside = || {
        let db_addr = lab.addr("db").to_string();
        lab.lab
            .spawn_ready(
                "db",
                env!("CARGO_BIN_EXE_lab-server"),
                &["--bind", &db_addr, "--tcp", "3306", "--lifetime", "2"],
            )
            .unwrap();
        let out = lab
            .lab
            .output(
                "internet",
                &bin,
                &[
                    "probe",
                    &db,
                    "--source",
                    outsider,
                    "--timeout-ms",
                    "300",
                    "--retries",
                    "0",
                    "--format",
                    "json",
                ],
            )
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while listening(&lab, "db", 3306) {
            assert!(
                std::time::Instant::now() < deadline,
                "lab-server outlived its lifetime"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        v["results"][0]["observed"].as_str().unwrap().to_string()
    };
    assert_eq!(probe_from_outside(), "open", "the hole the fault opened");

    let before = lab.check("operator").unwrap();
    assert_eq!(before.code, 1, "{}", before.stderr);
    let broken: BTreeSet<String> = before
        .report
        .paths
        .iter()
        .filter(|p| p.verdict != probe_core::report::Verdict::Ok)
        .map(|p| format!("{}->{}:{}", p.from, p.to, p.port))
        .collect();
    let want: BTreeSet<String> = [
        "lb->gw-worker-1:8280",
        "lb->esb-1:8243",
        "gw-manager->trafficmanager:5672",
        "lb->db:3306",
        "internet->db:3306",
    ]
    .map(String::from)
    .into();
    assert_eq!(broken, want);

    // Each host runs its own section of the suggestion, as root, with sh.
    let report = before.path.to_string_lossy().into_owned();
    let mut applied = 0;
    for h in &lab.plan.hosts {
        let script = lab
            .portcall_ok(&[
                "suggest",
                &report,
                "--format",
                "nft",
                "--host",
                &h.name,
                "--table",
                "inet portcall",
            ])
            .unwrap();
        let commands = script
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count();
        if commands == 0 {
            continue;
        }
        applied += commands;
        let out = lab
            .lab
            .output(&h.name, "sh", &["-e", "-c", &script])
            .unwrap();
        assert!(
            out.status.success(),
            "suggested rules on {} failed: {}\n{script}",
            h.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // One rule per must-be-open violation; for the database, one default
    // deny: a drop and an accept per must-be-open source of port 3306.
    let open_sources: BTreeSet<&str> = before
        .report
        .paths
        .iter()
        .filter(|p| p.to == "db" && p.port == 3306 && p.expect == probe_core::plan::Expect::Open)
        .map(|p| p.from.as_str())
        .collect();
    assert!(open_sources.len() >= 9, "{open_sources:?}");
    assert_eq!(applied, 3 + 1 + open_sources.len());

    let after = lab.check("operator").unwrap();
    assert_eq!(
        after.code,
        0,
        "after the suggested rules: {}\n{}",
        after.stderr,
        lab.logs()
    );

    // Every must-be-open source of the port still passes (the check above is
    // all ok), and an address no plan host has is now blocked too.
    assert_eq!(
        probe_from_outside(),
        "timeout",
        "the outsider after the fix"
    );

    let diff = lab
        .portcall_ok(&[
            "diff",
            &report,
            &after.path.to_string_lossy(),
            "--format",
            "json",
        ])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&diff).unwrap();
    assert_eq!(v["schema"], "portcall.diff/v1");
    let changes = v["changes"].as_array().unwrap();
    let fixed: BTreeSet<String> = changes
        .iter()
        .map(|c| {
            assert_eq!(c["before"]["verdict"], "violation", "{c}");
            assert_eq!(c["after"]["verdict"], "ok", "{c}");
            format!(
                "{}->{}:{}",
                c["from"].as_str().unwrap(),
                c["to"].as_str().unwrap(),
                c["port"]
            )
        })
        .collect();
    assert_eq!(fixed, want, "diff lists exactly the fixed paths");
}

/// Whether something listens on TCP `port` in lab host `host`.
fn listening(lab: &PlanLab, host: &str, port: u16) -> bool {
    let out = lab
        .lab
        .output(host, "ss", &["-Hltn", &format!("sport = :{port}")])
        .unwrap();
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}
