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

fn example() -> PathBuf {
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

fn apply(lab: &PlanLab, rules: &BTreeMap<String, HostRules>) {
    for (host, r) in rules {
        lab.firewall(host, r).unwrap();
    }
}

/// A fault: what it does to the correct rules, and the violations it must
/// cause (and nothing else).
struct Fault {
    name: &'static str,
    inject: fn(&PlanLab, &mut BTreeMap<String, HostRules>),
    expect: &'static [(&'static str, Observed)],
}

fn faults() -> Vec<Fault> {
    vec![
        Fault {
            name: "missing accept (dropped)",
            inject: |lab, r| {
                let rule = firewall::accept(&lab.addr("lb").to_string(), 8280);
                r.get_mut("gw-worker-1").unwrap().remove_accept(&rule);
            },
            expect: &[("lb->gw-worker-1:8280", Observed::Timeout)],
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
        },
        Fault {
            name: "wrong accept to 3306 from the DMZ",
            inject: |lab, r| {
                let rule = firewall::accept(&lab.addr("lb").to_string(), 3306);
                r.get_mut("db").unwrap().input_accepts.push(rule);
            },
            expect: &[("lb->db:3306", Observed::Open)],
        },
        Fault {
            name: "egress drop on a source host",
            inject: |lab, r| {
                r.get_mut("gw-worker-2").unwrap().output.push(format!(
                    "ip daddr {} tcp dport 10397 drop",
                    lab.addr("keymanager")
                ));
            },
            expect: &[("gw-worker-2->keymanager:10397", Observed::Timeout)],
        },
    ]
}

fn assert_exactly(run: &CheckRun, expect: &[(&str, Observed)], what: &str, lab: &PlanLab) {
    let got = not_ok(run);
    let want: BTreeMap<String, (Verdict, Option<Observed>)> = expect
        .iter()
        .map(|(k, o)| ((*k).to_owned(), (Verdict::Violation, Some(*o))))
        .collect();
    assert_eq!(
        got,
        want,
        "{what}: wrong violations (exit {}):\n{}\n{}",
        run.code,
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

    // b. Each fault alone, then all together.
    let faults = faults();
    for f in &faults {
        let mut rules = correct.clone();
        (f.inject)(&lab, &mut rules);
        apply(&lab, &rules);
        let run = lab.check(COORDINATOR).unwrap();
        assert_exactly(&run, f.expect, f.name, &lab);
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
