//! Rule attribution through a plan host that routes: `fw` has a leg in
//! each zone, forwards both families and runs its own agent, and its
//! nftables `forward` chain stops paths between two other plan hosts (a
//! drop, an ICMP reject, a TCP reset). Its agent traces what it forwards,
//! so each stopped path's `blame.rule` names fw's forward rule (handle and
//! text) over IPv4 and IPv6, with `where = "network"` and fw's leg as the
//! hop; `suggest` writes the fix into fw's forward chain, which opens the
//! paths once applied; and nothing of the tracing stays on fw.

use integration::{LabNet, PlanLab, RoutedLab, lab_available};
use probe_core::probe::Observed;
use probe_core::report::blame::{Cause, Where};
use probe_core::report::{PathReport, Report, Verdict};

/// ops (zone 1): client and fw's first leg; data (zone 2): db and fw's
/// second leg. Every port of db must be open from the client; fw's
/// forward chain lets only 7100 through.
const PLAN: &str = r#"
name = "forward-trace"
[defaults]
timeout_ms = 400
retries = 0
control_port = 7400
[zones]
ops = "Operators"
data = "Data"
[roles.svc]
ports = [
  { name = "app", port = 7100 },
  { name = "dropped", port = 7101 },
  { name = "rejected", port = 7102 },
  { name = "reset", port = 7103 },
]
[roles.gate]
ports = [{ name = "mgmt", port = 7200 }]
[[hosts]]
name = "client"
address = ["198.18.1.20", "2001:2:0:1::20"]
zone = "ops"
[[hosts]]
name = "fw"
address = ["198.18.1.254", "2001:2:0:1::254"]
zone = "ops"
roles = ["gate"]
[[hosts]]
name = "db"
address = ["198.18.2.40", "2001:2:0:2::40"]
zone = "data"
roles = ["svc"]
[[flows]]
from = "host:client"
to = "host:db"
ports = ["app", "dropped", "rejected", "reset"]
[[flows]]
from = "host:client"
to = "host:fw"
ports = ["mgmt"]
"#;

/// fw's forward rules, in order (policy drop after): the coordinator on
/// the client reaches db's agent, 7100 passes, the others are stopped.
const FORWARD: [&str; 6] = [
    "ct state established,related accept",
    "ip saddr 198.18.1.20 tcp dport 7400 accept",
    "tcp dport 7100 accept",
    "tcp dport 7101 drop",
    "tcp dport 7102 reject with icmpx admin-prohibited",
    "tcp dport 7103 reject with tcp reset",
];

fn ruleset() -> String {
    let forward: String = FORWARD.iter().map(|r| format!("    {r}\n")).collect();
    format!(
        "flush ruleset\ntable inet fw {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n  }}\n  chain forward {{\n    type filter hook forward priority 0; policy drop;\n{forward}  }}\n}}\n"
    )
}

/// The handle of fw's forward rule whose text is `text`.
fn handle(lab: &PlanLab<RoutedLab>, text: &str) -> u64 {
    let listing = lab
        .lab
        .run_ok(
            "fw",
            "nft",
            &["-a", "list", "chain", "inet", "fw", "forward"],
        )
        .unwrap();
    listing
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(text)?.strip_prefix(" # handle "))
        .and_then(|h| h.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rule {text:?} in fw's forward chain:\n{listing}"))
}

fn path<'a>(r: &'a Report, port: u16, family: &str) -> &'a PathReport {
    r.paths
        .iter()
        .find(|p| {
            p.to == "db"
                && p.port == port
                && p.family.map(|f| f.to_string()).as_deref() == Some(family)
        })
        .unwrap_or_else(|| panic!("no path to db:{port} over {family}"))
}

fn describe(r: &Report) -> String {
    r.paths
        .iter()
        .map(|p| {
            format!(
                "{}->{}:{} {:?} {:?} {:?} {:?}",
                p.from, p.to, p.port, p.family, p.verdict, p.observed, p.blame
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn forward_chain_drop_reject_and_reset_on_a_plan_host_router_are_named_and_fixed_there() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(&plan, PLAN).unwrap();
    let lab = PlanLab::routed(&plan, &[]).unwrap();
    lab.lab.nft("fw", &ruleset()).unwrap();
    lab.start_agents().unwrap();
    let before = lab.check("client").unwrap();
    let r = &before.report;
    let all = format!("{}\n{}", describe(r), lab.logs());

    for (family, leg) in [("ipv4", "198.18.1.254"), ("ipv6", "2001:2:0:1::254")] {
        let open = path(r, 7100, family);
        assert_eq!(
            (open.verdict, open.blame.as_ref()),
            (Verdict::Ok, None),
            "{family}: {all}"
        );
        for (port, observed, cause, rule) in [
            (7101, Observed::Timeout, Cause::Drop, FORWARD[3]),
            (7102, Observed::Unreachable, Cause::IcmpReject, FORWARD[4]),
            (7103, Observed::Refused, Cause::Reset, FORWARD[5]),
        ] {
            let p = path(r, port, family);
            let what = format!("db:{port} over {family}");
            assert_eq!(
                (p.verdict, p.observed),
                (Verdict::Violation, Some(observed)),
                "{what}: {all}"
            );
            let b = p.blame.as_ref().unwrap_or_else(|| panic!("{what}: {all}"));
            assert_eq!((b.at, b.cause), (Where::Network, cause), "{what}: {all}");
            // The hop is fw's leg the path entered by (its ICMP, the TTL
            // walk's last hop, or fw's address of the path's family).
            assert_eq!(b.hop.as_deref(), Some(leg), "{what}: {b:?}");
            let named = b
                .rule
                .as_ref()
                .unwrap_or_else(|| panic!("{what}: no rule: {all}"));
            assert_eq!(
                (
                    named.host.as_str(),
                    named.table.as_str(),
                    named.chain.as_str(),
                    named.handle,
                    named.text.as_deref(),
                    named.policy.as_deref(),
                ),
                (
                    "fw",
                    "inet fw",
                    "forward",
                    Some(handle(&lab, rule)),
                    Some(rule),
                    None
                ),
                "{what}"
            );
        }
    }
    // fw's own path is fw's input's business: open, no forward rule.
    let mgmt = r.paths.iter().find(|p| p.to == "fw").expect("client -> fw");
    assert_eq!(mgmt.verdict, Verdict::Ok, "{all}");
    // The round's trace table, its forward chain with it, is gone.
    let tables = lab.lab.run_ok("fw", "nft", &["list", "tables"]).unwrap();
    assert!(!tables.contains("portcall_trace_"), "{tables}");

    // suggest writes each fix into fw's forward chain, on fw only; once
    // applied there every path is open.
    let report = before.path.to_string_lossy().into_owned();
    let whole = lab
        .portcall_ok(&["suggest", &report, "--format", "nft"])
        .unwrap();
    assert!(!whole.contains("# host db ("), "{whole}");
    let script = lab
        .portcall_ok(&["suggest", &report, "--format", "nft", "--host", "fw"])
        .unwrap();
    let commands: Vec<&str> = script
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(commands.len(), 6, "{script}");
    assert!(
        commands
            .iter()
            .all(|c| c.starts_with("nft insert rule inet fw forward ")),
        "{script}"
    );
    let out = lab.lab.output("fw", "sh", &["-e", "-c", &script]).unwrap();
    assert!(
        out.status.success(),
        "{}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = lab.check("client").unwrap();
    assert_eq!(
        (after.code, after.report.summary.violations),
        (0, 0),
        "{}",
        describe(&after.report)
    );
}
