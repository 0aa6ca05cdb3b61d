//! The firewall-change loop an operator runs: check, see the violations,
//! apply what `portcall suggest` prints on each host, check again, and
//! `portcall diff` the two reports — in the WSO2 lab, with every fault one a
//! rule on the target can fix.

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
    // A missing accept, an ICMP reject, a TCP reset and a wrong accept.
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
        .push(firewall::accept(&lb, 3306));
    for (host, r) in &rules {
        lab.firewall(host, r).unwrap();
    }
    lab.start_agents().unwrap();

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
    assert_eq!(applied, 4, "one rule per violation");

    let after = lab.check("operator").unwrap();
    assert_eq!(
        after.code,
        0,
        "after the suggested rules: {}\n{}",
        after.stderr,
        lab.logs()
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
