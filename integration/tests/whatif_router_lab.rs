//! `portcall whatif` with a plan host that routes between two zones: `fw`
//! has a leg in each zone, forwards, runs its own agent with paths of its
//! own, and decides in its nftables `forward` chain which zone-to-zone
//! paths pass (and in its `input` chain who reaches it). The twin must
//! agree with the live lab on every path, from a hand-written state and
//! from `state collect`, and a candidate ruleset for `fw` predicted by the
//! twin must equal the live result once applied: verdict, outcome and
//! deciding rule on every path, and the exit status. fw's agent traces
//! what it forwards, so a path its `forward` chain stops (a reject, a
//! drop, the chain's policy) names that rule on fw, live and in the twin.

use std::path::Path;

use integration::sshd::{SshLab, Sshd};
use integration::{LabNet, PlanLab, RoutedLab, lab_available};
use probe_core::plan::Address;
use probe_core::report::blame::{BlameRule, Where};
use probe_core::report::{Report, Verdict};
use probe_core::twin::PathChange;
use probe_core::twin::diff::WhatIf;
use probe_core::twin::state::{RulesetSyntax, State};

use crate::whatif_lab::{assert_predicted, whatif};

/// The coordinator runs here (its control connections to the data zone
/// cross `fw`'s forward chain, like every probe between the zones).
const COORDINATOR: &str = "client";

/// ops (198.18.1.0/24): client and fw's first leg; data (198.18.2.0/24):
/// db, db2 and fw's second leg. fw's plan address is its ops leg.
const PLAN: &str = r#"
name = "whatif-plan-host-router"
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
roles = ["desk"]
[[hosts]]
name = "fw"
address = "198.18.1.254"
zone = "ops"
roles = ["gate"]
[[hosts]]
name = "db"
address = "198.18.2.40"
zone = "data"
roles = ["svc"]
[[hosts]]
name = "db2"
address = "198.18.2.41"
zone = "data"
roles = ["svc"]
[roles.svc]
ports = [{ name = "app", port = 7100 }, { name = "admin", port = 7101 }, { name = "metrics", port = 7102 }]
[roles.gate]
ports = [{ name = "mgmt", port = 7200 }, { name = "api", port = 7201 }]
[roles.desk]
ports = [{ name = "callback", port = 7300 }]
[[flows]]
name = "client uses the services"
from = "host:client"
to = "role:svc"
ports = ["app", "admin"]
[[flows]]
name = "client is kept from metrics"
from = "host:client"
to = "role:svc"
ports = ["metrics"]
expect = "blocked"
[[flows]]
name = "services call back"
from = "role:svc"
to = "host:client"
ports = ["callback"]
[[flows]]
name = "client manages the firewall"
from = "host:client"
to = "host:fw"
ports = ["mgmt"]
[[flows]]
name = "nobody reaches the firewall api"
from = ["host:client", "role:svc"]
to = "host:fw"
ports = ["api"]
expect = "blocked"
[[flows]]
name = "the firewall scrapes metrics"
from = "host:fw"
to = "role:svc"
ports = ["metrics"]
"#;

/// fw's forward rules between the zones, in order (policy drop after).
fn forward_rules() -> Vec<&'static str> {
    vec![
        "ct state established,related accept",
        // The coordinator reaches the data zone's agents (their control
        // port, or ssh).
        "ip saddr 198.18.1.20 ip daddr 198.18.2.0/24 tcp dport { 22, 7400 } accept",
        "ip saddr 198.18.1.20 ip daddr 198.18.2.0/24 tcp dport 7100 accept",
        "ip saddr 198.18.1.20 ip daddr 198.18.2.0/24 tcp dport 7101 accept",
        "ip saddr 198.18.2.0/24 ip daddr 198.18.1.20 tcp dport 7300 accept",
        "ip daddr 198.18.2.0/24 tcp dport 7102 reject with icmpx admin-prohibited",
    ]
}

/// fw's own input rules, in order (policy drop after).
fn input_rules() -> Vec<&'static str> {
    vec![
        "ct state established,related accept",
        "iif \"lo\" accept",
        "ip saddr 198.18.1.20 tcp dport { 22, 7400, 7200 } accept",
        "ip saddr 198.18.2.0/24 tcp dport 7201 reject with tcp reset",
    ]
}

/// fw's whole ruleset as `nft -f` input.
fn ruleset(input: &[&str], forward: &[&str]) -> String {
    let chain = |name: &str, hook: &str, policy: &str, rules: &[&str]| {
        let mut s = format!(
            "  chain {name} {{\n    type filter hook {hook} priority 0; policy {policy};\n"
        );
        for r in rules {
            s.push_str(&format!("    {r}\n"));
        }
        s.push_str("  }\n");
        s
    };
    format!(
        "flush ruleset\ntable inet fw {{\n{}{}{}}}\n",
        chain("input", "input", "drop", input),
        chain("forward", "forward", "drop", forward),
        chain("output", "output", "accept", &[]),
    )
}

/// The state the lab's own knowledge gives: each host on its zone's /24
/// with its default route via fw's leg there; fw forwarding, a leg on
/// each zone named as the lab names them, and its ruleset.
fn write_state(dir: &Path, fw_ruleset: &str) {
    for (host, addr, gw) in [
        ("client", "198.18.1.20", "198.18.1.254"),
        ("db", "198.18.2.40", "198.18.2.254"),
        ("db2", "198.18.2.41", "198.18.2.254"),
    ] {
        let d = dir.join("state").join(host);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("net.toml"),
            format!(
                "[[interface]]\nname = \"eth0\"\naddresses = [\"{addr}/24\"]\n\n[[route]]\nto = \"default\"\nvia = \"{gw}\"\n"
            ),
        )
        .unwrap();
    }
    let d = dir.join("state/fw");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("net.toml"),
        "forwarding = true\n\n[[interface]]\nname = \"z1\"\naddresses = [\"198.18.1.254/24\"]\n\n[[interface]]\nname = \"z2\"\naddresses = [\"198.18.2.254/24\"]\n",
    )
    .unwrap();
    std::fs::write(d.join("ruleset.nft"), fw_ruleset).unwrap();
}

/// `from->to:port verdict observed` of every path, for failure messages.
fn describe(report: &Report) -> String {
    report
        .paths
        .iter()
        .map(|p| {
            format!(
                "{}->{}:{} {:?} {:?} {:?}",
                p.from, p.to, p.port, p.verdict, p.observed, p.blame
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The handle of the rule of fw's chain `chain` (table inet fw) whose
/// text is `text`, read from fw's own listing.
fn fw_handle(lab: &PlanLab<RoutedLab>, chain: &str, text: &str) -> u64 {
    let listing = lab
        .lab
        .run_ok("fw", "nft", &["-a", "list", "chain", "inet", "fw", chain])
        .unwrap();
    listing
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(text)?.strip_prefix(" # handle "))
        .and_then(|h| h.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rule {text:?} in fw {chain}:\n{listing}"))
}

/// `host chain handle-or-policy text` of a rule, for comparisons.
fn rule_words(rule: Option<&BlameRule>) -> Option<String> {
    rule.map(|r| {
        format!(
            "{} {} {} {}",
            r.host,
            r.chain,
            r.handle.map_or_else(
                || format!("policy {}", r.policy.as_deref().unwrap_or("?")),
                |h| h.to_string()
            ),
            r.text.as_deref().unwrap_or("-")
        )
    })
}

/// The live path `from -> to:port` stopped in fw's forward chain: blamed
/// on the network at fw, with fw's rule (or policy) as `want`; and the
/// twin's prediction (`twin`) names the same rule.
fn assert_forward_stop(
    report: &Report,
    twin: Option<&BlameRule>,
    (from, to, port): (&str, &str, u16),
    want: &str,
) {
    let p = report
        .paths
        .iter()
        .find(|p| p.from == from && p.to == to && p.port == port)
        .unwrap_or_else(|| panic!("no path {from}->{to}:{port}"));
    let b = p
        .blame
        .as_ref()
        .unwrap_or_else(|| panic!("{from}->{to}:{port} has no blame: {p:?}"));
    assert_eq!(b.at, Where::Network, "{from}->{to}:{port}: {b:?}");
    assert!(
        matches!(b.hop.as_deref(), Some("198.18.1.254" | "198.18.2.254")),
        "{from}->{to}:{port}: {b:?}"
    );
    assert_eq!(
        rule_words(b.rule.as_ref()).as_deref(),
        Some(want),
        "{from}->{to}:{port} live: {b:?}"
    );
    assert_eq!(
        rule_words(twin).as_deref(),
        Some(want),
        "{from}->{to}:{port} in the twin"
    );
}

/// The paths that change, as `from->to:port change`.
fn changes(answer: &WhatIf) -> Vec<String> {
    let mut v: Vec<String> = answer
        .paths
        .iter()
        .filter(|p| p.change != PathChange::Same)
        .map(|p| format!("{}->{}:{} {}", p.from, p.to, p.port, p.change.as_str()))
        .collect();
    v.sort();
    v
}

/// The routed lab of [`PLAN`] (fw playing the router) with fw's base
/// ruleset loaded, and that ruleset.
fn lab(dir: &Path) -> (PlanLab<RoutedLab>, String) {
    let plan = dir.join("plan.toml");
    std::fs::write(&plan, PLAN).unwrap();
    let lab = PlanLab::routed(&plan, &[]).unwrap();
    let base = ruleset(&input_rules(), &forward_rules());
    lab.lab.nft("fw", &base).unwrap();
    (lab, base)
}

#[test]
fn whatif_plan_host_routing_between_two_zones_predicts_a_change_on_it() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (lab, base) = lab(dir.path());
    lab.start_agents().unwrap();
    let live = lab.check(COORDINATOR).unwrap();
    // The base ruleset is the plan's: every path as planned, the blocked
    // ones stopped in fw (forwarded or arriving).
    assert_eq!(
        live.report.summary.violations,
        0,
        "{}\n{}",
        describe(&live.report),
        lab.logs()
    );
    assert_eq!(live.report.paths.len(), 14, "{}", describe(&live.report));

    // No change: the twin (fw a router with its own agent and rules)
    // agrees with the live report on every path.
    write_state(dir.path(), &base);
    let (code, answer) = whatif(&lab, dir.path(), &live.path, &[]);
    assert_eq!(code, 0);
    assert_eq!(
        answer.fidelity.as_deref(),
        Some(&[][..]),
        "hand-written state"
    );
    assert_predicted(&answer, &live.report, "no change");
    // The metrics the client is kept from are rejected in fw's forward
    // chain: fw's own trace names that rule, live and in the twin.
    let reject = "ip daddr 198.18.2.0/24 tcp dport 7102 reject with icmpx admin-prohibited";
    let want = format!("fw forward {} {reject}", fw_handle(&lab, "forward", reject));
    for to in ["db", "db2"] {
        let twin = answer
            .paths
            .iter()
            .find(|p| p.from == "client" && p.to == to && p.port == 7102)
            .and_then(|p| p.base.rule.as_ref());
        assert_forward_stop(&live.report, twin, ("client", to, 7102), &want);
    }

    // The state collected through the agents gives the same agreement:
    // fw's two legs, forwarding on, its ruleset as JSON.
    let collected = tempfile::tempdir().unwrap();
    let out = lab
        .lab
        .command(COORDINATOR, lab.bin())
        .args(["state", "collect", "--plan"])
        .arg(lab.plan_path())
        .arg("--pki")
        .arg(lab.pki())
        .arg("--out")
        .arg(collected.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = State::load(&collected.path().join("state")).unwrap();
    let fw = &state.hosts["fw"];
    assert!(fw.forwarding, "fw forwards");
    let mut legs: Vec<String> = fw
        .addresses()
        .map(|a| a.to_string())
        .filter(|a| a.starts_with("198.18."))
        .collect();
    legs.sort();
    assert_eq!(legs, ["198.18.1.254/24", "198.18.2.254/24"]);
    assert_eq!(fw.ruleset.as_ref().unwrap().syntax, RulesetSyntax::Json);
    let (code, answer) = whatif(&lab, collected.path(), &live.path, &[]);
    assert_eq!(code, 0);
    assert_eq!(answer.fidelity.as_deref(), Some(&[][..]), "collected state");
    assert_predicted(&answer, &live.report, "collected state");

    // The candidate on fw: the forward accept of admin (7101) removed, a
    // forward drop of db2's callbacks above their accept, metrics on db2
    // let through from the client, and the api's reset to the data zone
    // turned into a silent drop.
    let forward: Vec<&str> = forward_rules()
        .into_iter()
        .filter(|r| !r.contains("dport 7101 accept"))
        .flat_map(|r| {
            if r.contains("dport 7300 accept") {
                vec!["ip saddr 198.18.2.41 tcp dport 7300 drop", r]
            } else if r.contains("dport 7102 reject") {
                vec![
                    "ip saddr 198.18.1.20 ip daddr 198.18.2.41 tcp dport 7102 accept",
                    r,
                ]
            } else {
                vec![r]
            }
        })
        .collect();
    let input: Vec<String> = input_rules()
        .into_iter()
        .map(|r| r.replace("7201 reject with tcp reset", "7201 drop"))
        .collect();
    let input: Vec<&str> = input.iter().map(String::as_str).collect();
    let candidate = ruleset(&input, &forward);
    let file = dir.path().join("fw-candidate.nft");
    std::fs::write(&file, &candidate).unwrap();
    let (code, answer) = whatif(
        &lab,
        dir.path(),
        &live.path,
        &[format!("fw={}", file.display())],
    );
    lab.lab.nft("fw", &candidate).unwrap();
    let after = lab.check(COORDINATOR).unwrap().report;
    assert_predicted(&answer, &after, "a change on fw between the zones");
    assert_eq!(answer.fidelity.as_deref(), Some(&[][..]), "candidate run");
    assert_eq!(
        changes(&answer),
        [
            "client->db2:7101 breaks",
            "client->db2:7102 opens",
            "client->db:7101 breaks",
            "db->fw:7201 changed",
            "db2->client:7300 breaks",
            "db2->fw:7201 changed",
        ],
        "{}",
        describe(&after)
    );
    assert_eq!(code, 1, "the change breaks and opens planned paths");
    // The client's metrics on db stay rejected by the same forward rule,
    // which the whole candidate ruleset gave another handle: the same
    // rule (place and text), so the path is `same`, each side naming it
    // with its own handle.
    let metrics = answer
        .paths
        .iter()
        .find(|p| p.from == "client" && p.to == "db" && p.port == 7102)
        .unwrap();
    assert_eq!(
        (metrics.base.verdict, metrics.base.observed),
        (metrics.candidate.verdict, metrics.candidate.observed)
    );
    let (before, now) = (
        metrics
            .base
            .rule
            .as_ref()
            .expect("fw's forward reject, before"),
        metrics
            .candidate
            .rule
            .as_ref()
            .expect("and with the change"),
    );
    assert_eq!((&before.chain, &before.text), (&now.chain, &now.text));
    assert_ne!(before.handle, now.handle);
    assert_eq!(metrics.change, probe_core::twin::PathChange::Same);
    // A path stopped on fw's own input names the rule there, on both
    // sides: the reset before, the drop with the change.
    let api = answer
        .paths
        .iter()
        .find(|p| p.from == "db" && p.to == "fw" && p.port == 7201)
        .unwrap();
    for (side, text) in [
        (
            &api.base,
            "ip saddr 198.18.2.0/24 tcp dport 7201 reject with tcp reset",
        ),
        (&api.candidate, "ip saddr 198.18.2.0/24 tcp dport 7201 drop"),
    ] {
        let rule = side.rule.as_ref().expect("a rule on fw's input");
        assert_eq!(
            (
                rule.host.as_str(),
                rule.chain.as_str(),
                rule.text.as_deref()
            ),
            ("fw", "input", Some(text))
        );
    }
    // A path fw's forward chain breaks is stopped at fw, by the rule
    // fw's own trace names, live and in the twin: the admin port by the
    // chain's policy (its accept removed), db2's callbacks by the drop
    // above their accept.
    let drop = "ip saddr 198.18.2.41 tcp dport 7300 drop";
    let drop_rule = format!("fw forward {} {drop}", fw_handle(&lab, "forward", drop));
    for p in answer
        .paths
        .iter()
        .filter(|p| p.change == PathChange::Breaks)
    {
        assert_ne!(p.candidate.verdict, Verdict::Ok);
        let want = if p.port == 7300 {
            drop_rule.clone()
        } else {
            "fw forward policy drop -".to_string()
        };
        assert_forward_stop(
            &after,
            p.candidate.rule.as_ref(),
            (&p.from, &p.to, p.port),
            &want,
        );
    }
    // suggest fixes each on fw, in its forward chain, never on a target.
    let report_file = dir.path().join("after.json");
    std::fs::write(&report_file, serde_json::to_vec(&after).unwrap()).unwrap();
    let out = std::process::Command::new(lab.bin())
        .arg("suggest")
        .arg(&report_file)
        .args(["--format", "nft"])
        .output()
        .unwrap();
    let script = String::from_utf8_lossy(&out.stdout);
    for fix in [
        "nft insert rule inet fw forward ip saddr 198.18.1.20 ip daddr 198.18.2.40 tcp dport 7101 counter accept",
        "nft insert rule inet fw forward ip saddr 198.18.2.41 ip daddr 198.18.1.20 tcp dport 7300 counter accept",
    ] {
        assert!(script.contains(fix), "{fix}\n{script}");
    }
    assert!(
        !script.contains("# host db (") && !script.contains("# host client ("),
        "{script}"
    );
}

#[test]
fn whatif_state_collected_over_ssh_with_a_plan_host_router_agrees_with_live() {
    if !lab_available() {
        return;
    }
    if let Some(reason) = integration::sshd::ssh_missing() {
        assert!(
            std::env::var(integration::REQUIRE_LAB_ENV).as_deref() != Ok("1"),
            "{reason}"
        );
        eprintln!("skipped: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (lab, _) = lab(dir.path());
    // No agent runs and no control port is used: every agent is started
    // over ssh, fw's at its ops leg, the data zone's through fw.
    let ssh = SshLab::new(lab.dir.path()).unwrap();
    for h in &lab.plan.hosts {
        let Address::Ip(addr) = h.address else {
            panic!("{}: an IP literal", h.name)
        };
        ssh.start_at(&lab.lab, &h.name, addr, &Sshd::default())
            .unwrap();
    }
    let cfg = ssh.config().display().to_string();
    let bin = lab.bin().display().to_string();
    let args = ["--ssh", "--ssh-config", &cfg, "--remote-path", &bin];
    let live = lab.check_with(COORDINATOR, &args).unwrap();
    assert_eq!(
        (live.code, live.report.summary.violations),
        (0, 0),
        "{}\n{}",
        live.stderr,
        describe(&live.report)
    );

    let collected = tempfile::tempdir().unwrap();
    let out = lab
        .lab
        .command(COORDINATOR, lab.bin())
        .args(["state", "collect", "--plan"])
        .arg(lab.plan_path())
        .args(args)
        .arg("--out")
        .arg(collected.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = State::load(&collected.path().join("state")).unwrap();
    assert_eq!(state.hosts.len(), lab.plan.hosts.len());
    assert!(state.hosts["fw"].forwarding, "fw forwards");
    assert!(!state.hosts["db"].forwarding, "db does not");
    assert!(
        state.hosts["db"]
            .routes
            .iter()
            .any(|r| r.to == probe_core::twin::state::RouteTo::Default
                && r.via == Some("198.18.2.254".parse().unwrap())),
        "{:?}",
        state.hosts["db"].routes
    );
    let (code, answer) = whatif(&lab, collected.path(), &live.path, &[]);
    assert_eq!(code, 0);
    assert_eq!(
        answer.fidelity.as_deref(),
        Some(&[][..]),
        "state collected over ssh"
    );
    assert_predicted(&answer, &live.report, "state collected over ssh");
}
