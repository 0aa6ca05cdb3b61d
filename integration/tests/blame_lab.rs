//! Blame over IPv6, DNS names, neighbour discovery and ssh (issue 26): a
//! drop in the target's own firewall names that rule whichever address the
//! source sent from — an IPv6 address the plan never names, an address
//! behind a DNS name — a failed neighbour discovery is said as such and
//! never blamed on a device, and `check --ssh` names the blocking rule as
//! the mTLS round does.

use integration::firewall::{self, accept};
use integration::netns::HostsFile;
use integration::sshd::{SshLab, Sshd, ssh_missing};
use integration::{CheckRun, LabNet, PlanLab, lab_available};
use probe_core::report::{PathReport, Verdict};

/// The path from `from` to `to` on `port`.
fn path<'a>(run: &'a CheckRun, from: &str, to: &str, port: u16) -> &'a PathReport {
    run.report
        .paths
        .iter()
        .find(|p| p.from == from && p.to == to && p.port == port)
        .unwrap_or_else(|| panic!("no path {from}->{to}:{port}: {:#?}", run.report.paths))
}

/// The handle of the rule of `family table chain` on `host` whose text
/// starts with `text`.
fn handle(
    lab: &impl LabNet,
    host: &str,
    (family, table, chain): (&str, &str, &str),
    text: &str,
) -> u64 {
    let listing = lab
        .run_ok(host, "nft", &["-a", "list", "chain", family, table, chain])
        .unwrap();
    listing
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(text))
        .and_then(|l| l.rsplit_once("# handle "))
        .and_then(|(_, h)| h.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rule {text:?} in {host} {chain}:\n{listing}"))
}

/// Our trace tables still on `host`.
fn trace_tables(lab: &impl LabNet, host: &str) -> Vec<String> {
    lab.run_ok(host, "nft", &["list", "tables"])
        .unwrap()
        .lines()
        .filter(|l| l.contains("portcall_trace_"))
        .map(str::to_string)
        .collect()
}

/// Writes `plan` into a temporary directory (kept alive by the caller).
fn plan_file(plan: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.toml");
    std::fs::write(&file, plan).unwrap();
    (dir, file)
}

/// `jump` is IPv4 in the plan though its host has IPv6 too; `db6` is
/// IPv6 only: the path is IPv6 from an address the plan never names.
const V6: &str = r#"
name = "blame-v6"

[defaults]
timeout_ms = 400
retries = 0
control_port = 7400

[zones]
ops = "Operators"
data = "Databases"

[[hosts]]
name = "jump"
address = "198.18.1.10"
zone = "ops"

[[hosts]]
name = "db6"
address = "2001:2:0:3::40"
zone = "data"
roles = ["svc"]

[roles.svc]
ports = [{ name = "svc", port = 7501 }]

[[flows]]
from = "host:jump"
to = "host:db6"
ports = ["svc"]
"#;

/// Regression (issue 26): the target's `table ip6` dropped the path, and
/// the report said `where = network` with the router as the hop.
#[test]
fn an_ipv6_drop_from_a_source_planned_by_ipv4_names_the_targets_ip6_rule() {
    if !lab_available() {
        return;
    }
    let (_dir, plan) = plan_file(V6);
    let lab = PlanLab::routed(&plan, &[("jump", "2001:2:0:1::10")]).unwrap();
    let rule = "tcp dport 7501 drop";
    lab.lab
        .nft(
            "db6",
            &format!("table ip6 fw6 {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  {rule}\n }}\n}}\n"),
        )
        .unwrap();
    lab.start_agents().unwrap();
    let run = lab.check("jump").unwrap();
    let p = path(&run, "jump", "db6", 7501);
    assert_eq!(p.verdict, Verdict::Violation, "{p:#?}");
    let b = p.blame.as_ref().expect("blame");
    assert_eq!(
        serde_json::to_value(b).unwrap(),
        serde_json::json!({
            "where": "target", "hop": null, "hop_distance": null, "cause": "drop",
            "rule": {
                "host": "db6", "table": "ip6 fw6", "chain": "input",
                "handle": handle(&lab.lab, "db6", ("ip6", "fw6", "input"), rule),
                "text": rule,
            }
        }),
        "{p:#?}\n{}\n{}",
        run.stderr,
        lab.logs()
    );
    assert!(trace_tables(&lab.lab, "db6").is_empty());
}

/// `app` is named by DNS in the plan (the lab's hosts file resolves it);
/// `jump` by address. db drops both on the same port.
const DNS: &str = r#"
name = "blame-dns"

[defaults]
timeout_ms = 400
retries = 0
control_port = 7400

[zones]
ops = "Operators"
data = "Databases"

[[hosts]]
name = "jump"
address = "198.18.1.10"
zone = "ops"

[[hosts]]
name = "app"
address = "app.blame.lab"
zone = "ops"

[[hosts]]
name = "db"
address = "198.18.3.40"
zone = "data"
roles = ["svc"]

[roles.svc]
ports = [{ name = "svc", port = 7511 }]

[[flows]]
from = ["host:jump", "host:app"]
to = "host:db"
ports = ["svc"]
"#;

/// Regression (issue 26): a source the plan names by DNS was not traced,
/// and its drops were blamed on the router while the other source's
/// identical drops named the target's rule.
#[test]
fn a_source_named_by_dns_has_its_drops_named_by_the_targets_rule() {
    if !lab_available() {
        return;
    }
    let (_dir, plan) = plan_file(DNS);
    let lab = PlanLab::routed(&plan, &[("app", "198.18.1.30")]).unwrap();
    let _hosts = HostsFile::write(
        &lab.lab,
        &["jump", "app", "db"],
        "127.0.0.1 localhost\n198.18.1.30 app.blame.lab\n",
    )
    .unwrap();
    let rule = "tcp dport 7511 drop";
    lab.lab
        .nft(
            "db",
            &format!("table inet fw {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  {rule}\n }}\n}}\n"),
        )
        .unwrap();
    lab.start_agents().unwrap();
    let run = lab.check("jump").unwrap();
    let named = handle(&lab.lab, "db", ("inet", "fw", "input"), rule);
    for from in ["jump", "app"] {
        let p = path(&run, from, "db", 7511);
        assert_eq!(p.verdict, Verdict::Violation, "{p:#?}");
        let b = p.blame.as_ref().expect("blame");
        assert_eq!(
            serde_json::to_value(b).unwrap(),
            serde_json::json!({
                "where": "target", "hop": null, "hop_distance": null, "cause": "drop",
                "rule": {
                    "host": "db", "table": "inet fw", "chain": "input",
                    "handle": named, "text": rule,
                }
            }),
            "{from}: {p:#?}\n{}\n{}",
            run.stderr,
            lab.logs()
        );
    }
}

/// `src` and `tgt` share a link (zone ops); the coordinator runs in
/// another zone, so only `src` ever needs to resolve `tgt` on the link.
const ND: &str = r#"
name = "blame-nd"

[defaults]
timeout_ms = 3000
retries = 0
control_port = 7400

[zones]
ops = "Operators"
app = "Applications"

[[hosts]]
name = "op"
address = "2001:2:0:2::10"
zone = "app"

[[hosts]]
name = "src"
address = "2001:2:0:1::10"
zone = "ops"

[[hosts]]
name = "tgt"
address = "2001:2:0:1::20"
zone = "ops"
roles = ["svc"]

[roles.svc]
ports = [{ name = "svc", port = 7521 }]

[[flows]]
from = "host:src"
to = "host:tgt"
ports = ["svc"]
"#;

/// Regression (issue 26): a target whose firewall drops ICMPv6 neighbour
/// discovery was reported as "rejected by <the source's own address>, a
/// device on the way".
#[test]
fn a_target_dropping_neighbour_discovery_is_not_blamed_on_a_device() {
    if !lab_available() {
        return;
    }
    let (_dir, plan) = plan_file(ND);
    let lab = PlanLab::routed(&plan, &[]).unwrap();
    // The lab's static neighbour entry would skip discovery: src must ask,
    // and give up soon (3 solicitations 200 ms apart).
    lab.lab
        .run_ok(
            "src",
            "ip",
            &["neigh", "del", "2001:2:0:1::20", "dev", "eth0"],
        )
        .unwrap();
    lab.lab
        .sysctl("src", "net.ipv6.neigh.eth0.retrans_time_ms", "200")
        .unwrap();
    lab.lab
        .nft(
            "tgt",
            "table ip6 nd {\n chain input {\n  type filter hook input priority -10; policy accept;\n  icmpv6 type nd-neighbor-solicit drop\n }\n}\n",
        )
        .unwrap();
    lab.start_agents().unwrap();
    let run = lab.check("op").unwrap();
    let p = path(&run, "src", "tgt", 7521);
    let shown = format!("{p:#?}\n{}\n{}", run.stderr, lab.logs());
    assert_eq!(p.verdict, Verdict::Violation, "{shown}");
    let b = p.blame.as_ref().expect("blame");
    assert_eq!(
        serde_json::to_value(b).unwrap(),
        serde_json::json!({
            "where": "target", "hop": "2001:2:0:1::20", "hop_distance": null,
            "cause": "neighbour-unresolved", "rule": null,
        }),
        "{shown}"
    );
    assert!(p.detail.contains("neighbour discovery failed"), "{shown}");
    assert!(!p.detail.contains("a device on the way"), "{shown}");
    let why = b.sentence(&p.to, p.icmp.as_ref());
    assert!(why.contains("may drop neighbour discovery"), "{why}");
}

/// The operator reaches src and dst over ssh only; dst drops one port.
const SSH: &str = r#"
name = "blame-ssh"

[defaults]
timeout_ms = 400
retries = 0

[[hosts]]
name = "operator"
address = "198.18.0.10"

[[hosts]]
name = "src"
address = "198.18.0.11"

[[hosts]]
name = "dst"
address = "198.18.0.12"
roles = ["svc"]

[roles.svc]
ports = [{ name = "blocked", port = 7531 }, { name = "open", port = 7532 }]

[[flows]]
from = "host:src"
to = "host:dst"
ports = ["blocked", "open"]
"#;

/// Regression (issue 26): `check --ssh` reported `rule_trace: null` for
/// every host and never named the blocking rule; as root on the remote
/// side it traces as a long-running agent does, and leaves no table.
#[test]
fn check_over_ssh_as_root_names_the_blocking_rule() {
    if !lab_available() {
        return;
    }
    if let Some(reason) = ssh_missing() {
        if std::env::var(integration::REQUIRE_LAB_ENV).as_deref() == Ok("1") {
            panic!("{}=1 but {reason}", integration::REQUIRE_LAB_ENV);
        }
        eprintln!("skipped: {reason}");
        return;
    }
    let (_dir, plan) = plan_file(SSH);
    let lab = PlanLab::new(&plan).unwrap();
    let src = lab.addr("src").to_string();
    let mut rules = firewall::correct_with_control(&lab.plan, "operator", 22);
    let d = rules.get_mut("dst").unwrap();
    d.remove_accept(&accept(&src, 7531));
    let rule = format!("ip saddr {src} tcp dport 7531 drop");
    d.input_first.push(rule.clone());
    for (host, r) in &rules {
        lab.firewall(host, r).unwrap();
    }
    let ssh = SshLab::new(lab.dir.path()).unwrap();
    for h in &lab.plan.hosts {
        ssh.start(&lab.lab, &h.name, &Sshd::default()).unwrap();
    }
    let cfg = ssh.config().display().to_string();
    let bin = lab.bin().display().to_string();
    let args = ["--ssh", "--ssh-config", &cfg, "--remote-path", &bin];
    let run = lab.check_with("operator", &args).unwrap();
    let shown = format!("{:#?}\n{}", run.report.hosts, run.stderr);
    for h in run.report.hosts.iter().filter(|h| h.name != "operator") {
        let t = h.rule_trace.as_ref().unwrap_or_else(|| panic!("{shown}"));
        assert_eq!(t.state.as_str(), "traced", "{shown}");
    }
    assert_eq!(
        path(&run, "src", "dst", 7532).verdict,
        Verdict::Ok,
        "{shown}"
    );
    let p = path(&run, "src", "dst", 7531);
    let b = p.blame.as_ref().expect("blame");
    assert_eq!(
        serde_json::to_value(b).unwrap(),
        serde_json::json!({
            "where": "target", "hop": null, "hop_distance": null, "cause": "drop",
            "rule": {
                "host": "dst", "table": "inet portcall", "chain": "input",
                "handle": handle(&lab.lab, "dst", ("inet", "portcall", "input"), &rule),
                "text": rule,
            }
        }),
        "{p:#?}\n{shown}"
    );
    // The session's end took the trace with it, on every host.
    for h in ["src", "dst"] {
        assert!(trace_tables(&lab.lab, h).is_empty(), "{h}");
    }

    // The remote side without CAP_NET_ADMIN (root, its bounding set
    // stripped): no host can trace, and the report says why for each.
    let wrapper = lab.dir.path().join("portcall-no-net-admin");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec /usr/bin/setpriv --bounding-set=-net_admin {bin} \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let wrapper = wrapper.display().to_string();
    let args = ["--ssh", "--ssh-config", &cfg, "--remote-path", &wrapper];
    let run = lab.check_with("operator", &args).unwrap();
    let shown = format!("{:#?}\n{}", run.report.hosts, run.stderr);
    for h in run.report.hosts.iter().filter(|h| h.name != "operator") {
        let t = h.rule_trace.as_ref().unwrap_or_else(|| panic!("{shown}"));
        assert_eq!(t.state.as_str(), "unavailable", "{shown}");
        let why = t.reason.as_deref().unwrap_or_default();
        assert!(why.contains("CAP_NET_ADMIN"), "{shown}");
    }
    let mut table = Vec::new();
    probe_core::report::table::write(&run.report, Default::default(), &mut table).unwrap();
    let table = String::from_utf8(table).unwrap();
    assert!(
        table.contains("rule tracing unavailable: not permitted"),
        "{table}"
    );
    let p = path(&run, "src", "dst", 7531);
    assert_eq!(p.verdict, Verdict::Violation, "{p:#?}");
    assert!(p.blame.as_ref().is_some_and(|b| b.rule.is_none()), "{p:#?}");
}

/// `src` is dual-stack (IPv4 in the plan, so its control stays on IPv4);
/// `tgt` is IPv6 only, behind the router.
const ND_HOP: &str = r#"
name = "blame-nd-hop"

[defaults]
timeout_ms = 3000
retries = 0
control_port = 7400

[zones]
ops = "Operators"
app = "Applications"
data = "Databases"

[[hosts]]
name = "op"
address = ["198.18.2.10", "2001:2:0:2::10"]
zone = "app"

[[hosts]]
name = "src"
address = "198.18.1.10"
zone = "ops"

[[hosts]]
name = "tgt"
address = "2001:2:0:3::40"
zone = "data"
roles = ["svc"]

[roles.svc]
ports = [{ name = "svc", port = 7541 }]

[[flows]]
from = "host:src"
to = "host:tgt"
ports = ["svc"]
"#;

/// The neighbour that never answers is the next hop (the router), not the
/// target: the source's route to the target names it, and the blame is
/// the network's, with the router as the hop, never the source itself.
#[test]
fn a_router_dropping_neighbour_discovery_is_the_next_hop_that_never_answered() {
    if !lab_available() {
        return;
    }
    let (_dir, plan) = plan_file(ND_HOP);
    let lab = PlanLab::routed(&plan, &[("src", "2001:2:0:1::10")]).unwrap();
    lab.lab
        .run_ok(
            "src",
            "ip",
            &["neigh", "del", "2001:2:0:1::254", "dev", "eth0"],
        )
        .unwrap();
    lab.lab
        .sysctl("src", "net.ipv6.neigh.eth0.retrans_time_ms", "200")
        .unwrap();
    lab.lab
        .nft(
            integration::routed::ROUTER,
            "table ip6 nd {\n chain input {\n  type filter hook input priority -10; policy accept;\n  icmpv6 type nd-neighbor-solicit drop\n }\n}\n",
        )
        .unwrap();
    lab.start_agents().unwrap();
    let run = lab.check("op").unwrap();
    let p = path(&run, "src", "tgt", 7541);
    let shown = format!("{p:#?}\n{}\n{}", run.stderr, lab.logs());
    let b = p.blame.as_ref().expect("blame");
    assert_eq!(
        serde_json::to_value(b).unwrap(),
        serde_json::json!({
            "where": "network", "hop": "2001:2:0:1::254", "hop_distance": null,
            "cause": "neighbour-unresolved", "rule": null,
        }),
        "{shown}"
    );
    assert!(!p.detail.contains("a device on the way"), "{shown}");
}
