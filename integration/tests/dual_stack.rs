//! Dual-stack hosts in the routed lab: paths per address family, hosts the
//! plan names by one family reaching targets of the other through the
//! kernel's choice of source, and an IPv6-only drop on a dual-stack host
//! reported as the drop it is.

use integration::{CheckRun, LabNet, PlanLab, RoutedLab, lab_available};
use probe_core::report::Verdict;

/// `jump` is IPv4 and `ops6` IPv6 in the plan, though the lab gives each
/// both families; `app` and `db` are dual stack in the plan (db IPv6
/// first).
const PLAN: &str = r#"
name = "dual-stack"

[defaults]
timeout_ms = 400
retries = 0
control_port = 7400

[zones]
ops = "Operators"
app = "Application servers"
data = "Databases"

[[hosts]]
name = "jump"
address = "198.18.1.10"
zone = "ops"
roles = ["web"]

[[hosts]]
name = "ops6"
address = "2001:2:0:1::20"
zone = "ops"
roles = ["web"]

[[hosts]]
name = "app"
address = ["198.18.2.10", "2001:2:0:2::10"]
zone = "app"

[[hosts]]
name = "db"
address = ["2001:2:0:3::40", "198.18.3.40"]
zone = "data"
roles = ["mariadb"]

[roles.web]
description = "A web service"
ports = [{ name = "https", port = 8443 }]

[[flows]]
name = "operators reach the database"
from = ["host:jump", "host:ops6"]
to = "host:db"
ports = ["mysql"]

[[flows]]
name = "operators reach each other"
from = ["host:jump", "host:ops6"]
to = ["host:jump", "host:ops6"]
ports = ["https"]

[[flows]]
name = "the app reaches the database over IPv4"
from = "host:app"
to = "host:db"
ports = ["mysql"]
family = "ipv4"

[[flows]]
name = "the app does not reach the database over IPv6"
from = "host:app"
to = "host:db"
ports = ["mysql"]
family = "ipv6"
expect = "blocked"

[[flows]]
name = "the app reaches the operators' web"
from = "host:app"
to = "host:jump"
ports = ["https"]
"#;

/// The lab for [`PLAN`] with agents running; `db_rules` is db's nftables
/// ruleset, if any.
fn lab(db_rules: Option<&str>) -> Option<PlanLab<RoutedLab>> {
    if !lab_available() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(&plan, PLAN).unwrap();
    // The OS gives jump and ops6 both families; the plan names one each.
    let lab = PlanLab::routed(
        &plan,
        &[("jump", "2001:2:0:1::10"), ("ops6", "198.18.1.20")],
    )
    .unwrap();
    if let Some(rules) = db_rules {
        lab.lab.nft("db", rules).unwrap();
    }
    lab.start_agents().unwrap();
    Some(lab)
}

/// The report as `portcall check` prints it, shown with `--nocapture` (the
/// closing notes quote it) and in failure messages.
fn table(run: &CheckRun) -> String {
    let mut out = Vec::new();
    probe_core::report::table::write(&run.report, Default::default(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    eprintln!("{text}");
    text
}

/// Every path as `from->to address:port family observed verdict seen`.
fn rows(run: &CheckRun) -> Vec<String> {
    let mut v: Vec<String> = run
        .report
        .paths
        .iter()
        .map(|p| {
            format!(
                "{}->{} {}:{} {} {} {} {}",
                p.from,
                p.to,
                p.address,
                p.port,
                p.family.map_or("-", |f| f.as_str()),
                p.observed.map_or("-", |o| o.as_str()),
                p.verdict.as_str(),
                p.seen_source.as_deref().unwrap_or("-")
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn dual_stack_round_reaches_across_families_with_the_kernels_source() {
    let Some(lab) = lab(None) else { return };
    let run = lab.check("jump").unwrap();
    let shown = table(&run);
    assert_eq!(
        rows(&run),
        [
            // Both families between dual-stack hosts; IPv6 open where the
            // plan wants it blocked is the one violation.
            "app->db 198.18.3.40:3306 ipv4 open ok 198.18.2.10",
            "app->db 2001:2:0:3::40:3306 ipv6 open violation 2001:2:0:2::10",
            // jump has only IPv4 in the plan: the family both have.
            "app->jump 198.18.1.10:8443 ipv4 open ok 198.18.2.10",
            "jump->db 198.18.3.40:3306 ipv4 open ok 198.18.1.10",
            // jump (IPv4 in the plan) to ops6 (IPv6 only): the kernel's
            // IPv6 source, not a local error.
            "jump->ops6 2001:2:0:1::20:8443 ipv6 open ok 2001:2:0:1::10",
            "ops6->db 2001:2:0:3::40:3306 ipv6 open ok 2001:2:0:1::20",
            "ops6->jump 198.18.1.10:8443 ipv4 open ok 198.18.1.20",
        ],
        "{shown}\n{}\n{}",
        run.stderr,
        lab.logs()
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
}

#[test]
fn ipv6_only_drop_on_a_dual_stack_host_is_a_drop() {
    let rules = "table inet fw {\n chain input {\n  type filter hook input priority 0; policy accept;\n  meta nfproto ipv6 tcp dport 3306 drop\n }\n}\n";
    let Some(lab) = lab(Some(rules)) else { return };
    let run = lab.check("jump").unwrap();
    let shown = table(&run);
    let rows = rows(&run);
    let db: Vec<&str> = rows
        .iter()
        .filter(|r| r.contains("->db "))
        .map(String::as_str)
        .collect();
    assert_eq!(
        db,
        [
            "app->db 198.18.3.40:3306 ipv4 open ok 198.18.2.10",
            // Blocked over IPv6 as the plan wants: a timeout, ok.
            "app->db 2001:2:0:3::40:3306 ipv6 timeout ok -",
            "jump->db 198.18.3.40:3306 ipv4 open ok 198.18.1.10",
            // ops6 reaches db only over IPv6, which db drops: a violation.
            "ops6->db 2001:2:0:3::40:3306 ipv6 timeout violation -",
        ],
        "{shown}\n{}\n{}",
        run.stderr,
        lab.logs()
    );
    let dropped = run
        .report
        .paths
        .iter()
        .find(|p| p.from == "ops6" && p.to == "db")
        .unwrap();
    assert_eq!(dropped.target_saw, Some(false), "{dropped:?}");
    assert!(dropped.detail.starts_with("dropped"), "{dropped:?}");
    assert_eq!(run.report.summary.errors, 0);
    assert!(
        run.report.paths.iter().all(|p| p.verdict != Verdict::Error),
        "{rows:#?}"
    );
    assert_eq!(run.code, 1);
}
