//! One fault at a time on the way between two zones, and what `portcall
//! check` makes of it: the observed outcome, the verdict, the ICMP error and
//! its sender, how far the handshake got at the target, and the blame. Each
//! test builds its own routed lab (client in ops, three servers in data,
//! a router between), injects exactly one fault, and asserts the faulted
//! path exactly and every other path open.
//!
//! Set `PORTCALL_FAULT_TABLES=DIR` to also write each fault's
//! `portcall check --format table` output to `DIR/<fault>.txt`.

use integration::{CheckRun, LabNet, PlanLab, RoutedLab, RouterRules, lab_available};
use probe_core::report::PathReport;
use serde_json::{Value, json};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");

/// client (ops) reaches db and db2 on a TCP and a TLS canary port, and web's
/// real TLS service (a large certificate) on 8443.
const PLAN: &str = r#"
name = "routed-faults"

[defaults]
timeout_ms = 1000
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

[[hosts]]
name = "web"
address = "198.18.3.50"
zone = "data"
roles = ["portal"]

[roles.svc]
ports = [{ name = "app", port = 7100 }, { name = "app-tls", port = 7443, protocol = "tls" }]

[roles.portal]
ports = [{ name = "https", port = 8443, protocol = "tls" }]

[[flows]]
name = "client reaches the services"
from = "host:client"
to = "role:svc"
ports = ["app", "app-tls"]

[[flows]]
name = "client reaches the portal"
from = "host:client"
to = "host:web"
ports = ["https"]
"#;

/// The router's address on the client's zone: the sender of its ICMP errors
/// toward the client, and the first hop of every walk.
const ROUTER_OPS: &str = "198.18.1.254";

struct Faults {
    lab: PlanLab<RoutedLab>,
    _dir: tempfile::TempDir,
}

/// The lab with web's real TLS service up; agents are started by
/// [`Faults::run`] after the fault is in place (a host firewall must not
/// cut the agent off before it starts).
fn lab() -> Option<Faults> {
    if !lab_available() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(&plan, PLAN).unwrap();
    let lab = PlanLab::routed(&plan, &[]).expect("build the routed lab");
    let ca = dir.path().join("web-ca.pem");
    lab.lab
        .spawn_ready(
            "web",
            LAB_SERVER,
            &[
                "--bind",
                "198.18.3.50",
                "--tls",
                "8443",
                "--ca-out",
                &ca.to_string_lossy(),
                "--name",
                "web",
                "--extra-sans",
                "150",
                "--lifetime",
                "120",
            ],
        )
        .expect("start web's TLS service");
    Some(Faults { lab, _dir: dir })
}

impl Faults {
    /// Starts the agents, runs `portcall check` from the client and returns
    /// the run (and, when asked, saves the table of a second run).
    fn run(&self, fault: &str) -> CheckRun {
        self.lab.start_agents().expect("start the agents");
        let run = self.lab.check("client").expect("portcall check");
        if let Some(dir) = std::env::var_os("PORTCALL_FAULT_TABLES") {
            let out = self
                .lab
                .lab
                .command("client", self.lab_bin())
                .args(["check", "--plan"])
                .arg(self.lab.plan_path())
                .arg("--pki")
                .arg(self.lab.pki())
                .args(["--format", "table"])
                .output()
                .expect("portcall check --format table");
            std::fs::write(
                std::path::Path::new(&dir).join(format!("{fault}.txt")),
                out.stdout,
            )
            .expect("write the table");
        }
        run
    }

    fn lab_bin(&self) -> std::path::PathBuf {
        integration::portcall_bin().expect("the portcall binary")
    }

    fn router(&self, rules: RouterRules) {
        self.lab.lab.router_rules(&rules).expect("router rules");
    }
}

fn path<'a>(run: &'a CheckRun, to: &str, port: u16) -> &'a PathReport {
    run.report
        .paths
        .iter()
        .find(|p| p.to == to && p.port == port)
        .unwrap_or_else(|| panic!("no path to {to}:{port}"))
}

/// The faulted path, exactly.
fn assert_path(run: &CheckRun, to: &str, port: u16, want: Value) {
    let p = path(run, to, port);
    let got = json!({
        "observed": p.observed,
        "verdict": p.verdict,
        "icmp": p.icmp,
        "target_stage": p.target_stage,
        "blame": p.blame,
    });
    assert_eq!(
        got, want,
        "{to}:{port}: {}\nstderr: {}",
        p.detail, run.stderr
    );
}

/// Every path but the faulted one is open, with our nonce seen (or, for
/// web's real service, connected live) and nothing to blame.
fn assert_rest_open(run: &CheckRun, faulted: (&str, u16)) {
    for p in &run.report.paths {
        if (p.to.as_str(), p.port) == faulted {
            continue;
        }
        let stage = if p.to == "web" {
            Value::Null
        } else {
            json!("nonce")
        };
        assert_eq!(
            json!({"observed": p.observed, "verdict": p.verdict, "stage": p.target_stage, "blame": p.blame}),
            json!({"observed": "open", "verdict": "ok", "stage": stage, "blame": null}),
            "{}:{}: {}",
            p.to,
            p.port,
            p.detail
        );
    }
}

#[test]
fn router_drop_is_silence_after_the_router() {
    let Some(f) = lab() else { return };
    f.router(RouterRules {
        forward: vec!["ip daddr 198.18.3.40 tcp dport 7100 drop".into()],
        ..RouterRules::default()
    });
    let run = f.run("router-drop");
    assert_path(
        &run,
        "db",
        7100,
        json!({
            "observed": "timeout",
            "verdict": "violation",
            "icmp": null,
            "target_stage": "nothing",
            "blame": {"where": "network", "hop": ROUTER_OPS, "hop_distance": 1, "cause": "drop", "rule": null},
        }),
    );
    assert_rest_open(&run, ("db", 7100));
    assert_eq!(run.code, 1);
}

#[test]
fn router_icmp_admin_prohibited_names_the_router_not_the_target() {
    let Some(f) = lab() else { return };
    f.router(RouterRules {
        forward: vec![
            "ip daddr 198.18.3.40 tcp dport 7100 reject with icmpx admin-prohibited".into(),
        ],
        ..RouterRules::default()
    });
    let run = f.run("router-icmp-admin-prohibited");
    assert_path(
        &run,
        "db",
        7100,
        json!({
            "observed": "unreachable",
            "verdict": "violation",
            "icmp": {"type": "admin-prohibited", "code": 13, "from": ROUTER_OPS},
            "target_stage": "nothing",
            "blame": {"where": "network", "hop": ROUTER_OPS, "hop_distance": null, "cause": "icmp-reject", "rule": null},
        }),
    );
    let p = path(&run, "db", 7100);
    assert!(
        p.detail.starts_with(&format!(
            "rejected by {ROUTER_OPS} (ICMP admin-prohibited), a device on the way, not db"
        )),
        "{}",
        p.detail
    );
    assert_rest_open(&run, ("db", 7100));
}

#[test]
fn router_reset_is_a_reset_that_never_reached_the_target() {
    let Some(f) = lab() else { return };
    f.router(RouterRules {
        forward: vec!["ip daddr 198.18.3.40 tcp dport 7100 reject with tcp reset".into()],
        ..RouterRules::default()
    });
    let run = f.run("router-reset");
    assert_path(
        &run,
        "db",
        7100,
        json!({
            "observed": "refused",
            "verdict": "violation",
            "icmp": null,
            "target_stage": "nothing",
            "blame": {"where": "network", "hop": null, "hop_distance": null, "cause": "reset", "rule": null},
        }),
    );
    assert!(path(&run, "db", 7100).detail.contains("TCP RST"));
    assert_rest_open(&run, ("db", 7100));
}

#[test]
fn router_dropping_only_the_replies_is_a_lost_return_path() {
    let Some(f) = lab() else { return };
    f.router(RouterRules {
        forward: vec!["ip saddr 198.18.3.40 tcp sport 7100 drop".into()],
        ..RouterRules::default()
    });
    let run = f.run("router-return-path-drop");
    assert_path(
        &run,
        "db",
        7100,
        json!({
            "observed": "timeout",
            "verdict": "violation",
            "icmp": null,
            "target_stage": "syn",
            "blame": {"where": "return-path", "hop": ROUTER_OPS, "hop_distance": 1, "cause": "return-path-lost", "rule": null},
        }),
    );
    assert!(
        path(&run, "db", 7100)
            .detail
            .starts_with("return path lost: db got our SYN"),
        "{}",
        path(&run, "db", 7100).detail
    );
    assert_rest_open(&run, ("db", 7100));
}

#[test]
fn a_stateless_acl_passing_only_syns_leaves_the_handshake_incomplete_at_the_target() {
    let Some(f) = lab() else { return };
    // db's own filter, without connection tracking: of port 7100's packets
    // only bare SYNs get in.
    f.lab
        .lab
        .nft(
            "db",
            "flush ruleset\ntable inet acl {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    tcp dport 7100 tcp flags & (fin|syn|rst|ack) != syn drop\n  }\n}\n",
        )
        .expect("db's ACL");
    let run = f.run("host-syn-only-acl");
    assert_path(
        &run,
        "db",
        7100,
        json!({
            "observed": "wrong-host",
            "verdict": "violation",
            "icmp": null,
            "target_stage": "syn",
            "blame": {"where": "target", "hop": null, "hop_distance": null, "cause": "handshake-incomplete",
                "rule": {"host": "db", "table": "inet acl", "chain": "input", "handle": 2, "text": "tcp dport 7100 tcp flags != syn / fin,syn,rst,ack drop"}},
        }),
    );
    assert!(
        path(&run, "db", 7100)
            .detail
            .starts_with("handshake incomplete at db"),
        "{}",
        path(&run, "db", 7100).detail
    );
    assert_rest_open(&run, ("db", 7100));
}

#[test]
fn a_host_reject_with_port_unreachable_is_refused_by_the_target_not_a_reset() {
    let Some(f) = lab() else { return };
    f.lab
        .lab
        .nft(
            "db",
            "flush ruleset\ntable inet fw {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    tcp dport 7100 reject\n  }\n}\n",
        )
        .expect("db's reject");
    let run = f.run("host-icmp-port-unreachable");
    assert_path(
        &run,
        "db",
        7100,
        json!({
            "observed": "refused",
            "verdict": "violation",
            "icmp": {"type": "port-unreachable", "code": 3, "from": "198.18.3.40"},
            "target_stage": "nothing",
            "blame": {"where": "target", "hop": null, "hop_distance": null, "cause": "icmp-reject",
                "rule": {"host": "db", "table": "inet fw", "chain": "input", "handle": 2, "text": "tcp dport 7100 reject"}},
        }),
    );
    let p = path(&run, "db", 7100);
    assert!(
        p.detail
            .starts_with("rejected by db (ICMP port-unreachable)")
            && !p.detail.contains("RST"),
        "{}",
        p.detail
    );
    assert_rest_open(&run, ("db", 7100));
}

#[test]
fn router_dnat_to_another_host_is_a_redirect() {
    let Some(f) = lab() else { return };
    f.router(RouterRules {
        prerouting: vec!["ip daddr 198.18.3.40 tcp dport 7100 dnat ip to 198.18.3.41".into()],
        ..RouterRules::default()
    });
    let run = f.run("router-dnat");
    assert_path(
        &run,
        "db",
        7100,
        json!({
            "observed": "wrong-host",
            "verdict": "violation",
            "icmp": null,
            "target_stage": null,
            "blame": {"where": "network", "hop": "198.18.3.41", "hop_distance": null, "cause": "redirect", "rule": null},
        }),
    );
    assert!(
        path(&run, "db", 7100)
            .detail
            .contains("our nonce arrived at db2 from 198.18.1.20"),
        "{}",
        path(&run, "db", 7100).detail
    );
    assert_rest_open(&run, ("db", 7100));
}

#[test]
fn a_path_mtu_black_hole_under_a_real_tls_service_is_named() {
    let Some(f) = lab() else { return };
    // web's replies from 8443 leave the router through a 1280-byte MTU,
    // and the frag-needed errors that would tell web so are dropped.
    f.lab
        .lab
        .router_mtu_policy("198.18.3.50".parse().unwrap(), Some(8443), 1280, 100)
        .expect("mtu policy");
    f.router(RouterRules {
        output: vec!["icmp type destination-unreachable icmp code frag-needed drop".into()],
        ..RouterRules::default()
    });
    let run = f.run("path-mtu-black-hole");
    assert_path(
        &run,
        "web",
        8443,
        json!({
            "observed": "tls-error",
            "verdict": "violation",
            "icmp": null,
            "target_stage": "connected",
            "blame": {"where": "network", "hop": null, "hop_distance": null, "cause": "path-mtu", "rule": null},
        }),
    );
    assert!(
        path(&run, "web", 8443)
            .detail
            .starts_with("path MTU black hole"),
        "{}",
        path(&run, "web", 8443).detail
    );
    assert_rest_open(&run, ("web", 8443));
}

/// The same plan shape addressed by IPv6 only: the error queue, the hop
/// limit walk and `/proc/net/tcp6` give the same evidence. (Dual-stack
/// hosts, with an IPv6-only drop on one of them, need plan address lists.)
const PLAN_V6: &str = r#"
name = "routed-faults-v6"

[defaults]
timeout_ms = 1000
retries = 0
control_port = 7400

[zones]
ops = "Operators"
data = "Data"

[[hosts]]
name = "client"
address = "2001:2:0:1::20"
zone = "ops"

[[hosts]]
name = "db"
address = "2001:2:0:3::40"
zone = "data"
roles = ["svc"]

[roles.svc]
ports = [{ name = "app", port = 7100 }, { name = "app-tls", port = 7443, protocol = "tls" }]

[[flows]]
from = "host:client"
to = "role:svc"
ports = ["app", "app-tls"]
"#;

const ROUTER_OPS_V6: &str = "2001:2:0:1::254";

#[test]
fn ipv6_paths_name_the_router_the_hop_and_the_half_open_handshake() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(&plan, PLAN_V6).unwrap();
    let lab = PlanLab::routed(&plan, &[]).expect("build the routed lab");
    lab.start_agents().expect("start the agents");
    // One fault at a time; each check starts from a clean router.
    let faults = [
        (
            "ip6 daddr 2001:2:0:3::40 tcp dport 7100 reject with icmpx admin-prohibited",
            json!({
                "observed": "unreachable", "verdict": "violation",
                "icmp": {"type": "admin-prohibited", "code": 1, "from": ROUTER_OPS_V6},
                "target_stage": "nothing",
                "blame": {"where": "network", "hop": ROUTER_OPS_V6, "hop_distance": null, "cause": "icmp-reject", "rule": null},
            }),
        ),
        (
            "ip6 daddr 2001:2:0:3::40 tcp dport 7100 drop",
            json!({
                "observed": "timeout", "verdict": "violation", "icmp": null,
                "target_stage": "nothing",
                "blame": {"where": "network", "hop": ROUTER_OPS_V6, "hop_distance": 1, "cause": "drop", "rule": null},
            }),
        ),
        (
            "ip6 saddr 2001:2:0:3::40 tcp sport 7100 drop",
            json!({
                "observed": "timeout", "verdict": "violation", "icmp": null,
                "target_stage": "syn",
                "blame": {"where": "return-path", "hop": ROUTER_OPS_V6, "hop_distance": 1, "cause": "return-path-lost", "rule": null},
            }),
        ),
    ];
    for (rule, want) in faults {
        lab.lab
            .router_rules(&RouterRules {
                forward: vec![rule.into()],
                ..RouterRules::default()
            })
            .unwrap();
        let run = lab.check("client").expect("portcall check");
        assert_path(&run, "db", 7100, want);
        assert_rest_open(&run, ("db", 7100));
    }
}

/// client and db both dual stack in the plan: one path per family.
const PLAN_DUAL: &str = r#"
name = "routed-faults-dual"

[defaults]
timeout_ms = 1000
retries = 0
control_port = 7400

[zones]
ops = "Operators"
data = "Data"

[[hosts]]
name = "client"
address = ["198.18.1.20", "2001:2:0:1::20"]
zone = "ops"

[[hosts]]
name = "db"
address = ["198.18.3.40", "2001:2:0:3::40"]
zone = "data"
roles = ["svc"]

[roles.svc]
ports = [{ name = "app", port = 7100 }]

[[flows]]
from = "host:client"
to = "role:svc"
ports = ["app"]
"#;

#[test]
fn an_ipv6_only_drop_on_a_dual_stack_host_is_a_drop_of_the_ipv6_path_only() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(&plan, PLAN_DUAL).unwrap();
    let lab = PlanLab::routed(&plan, &[]).expect("build the routed lab");
    lab.lab
        .nft(
            "db",
            "flush ruleset\ntable inet fw {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    meta nfproto ipv6 tcp dport 7100 drop\n  }\n}\n",
        )
        .expect("db's firewall");
    lab.start_agents().expect("start the agents");
    let run = lab.check("client").expect("portcall check");
    if let Some(dir) = std::env::var_os("PORTCALL_FAULT_TABLES") {
        let out = lab
            .lab
            .command("client", integration::portcall_bin().unwrap())
            .args(["check", "--plan"])
            .arg(lab.plan_path())
            .arg("--pki")
            .arg(lab.pki())
            .args(["--format", "table"])
            .output()
            .expect("portcall check --format table");
        std::fs::write(
            std::path::Path::new(&dir).join("host-ipv6-only-drop.txt"),
            out.stdout,
        )
        .unwrap();
    }
    let by_family = |v6: bool| {
        run.report
            .paths
            .iter()
            .find(|p| p.address.contains(':') == v6)
            .unwrap_or_else(|| panic!("no path of that family: {:?}", run.report.paths))
    };
    let p = by_family(true);
    assert_eq!(
        json!({"observed": p.observed, "verdict": p.verdict, "family": p.family, "icmp": p.icmp, "target_stage": p.target_stage, "blame": p.blame}),
        json!({
            "observed": "timeout", "verdict": "violation", "family": "ipv6", "icmp": null,
            "target_stage": "nothing",
            "blame": {"where": "target", "hop": null, "hop_distance": null, "cause": "drop",
                "rule": {"host": "db", "table": "inet fw", "chain": "input", "handle": 2, "text": "meta nfproto ipv6 tcp dport 7100 drop"}},
        }),
        "{}",
        p.detail
    );
    let p = by_family(false);
    assert_eq!(
        json!({"observed": p.observed, "verdict": p.verdict, "family": p.family, "target_stage": p.target_stage, "blame": p.blame}),
        json!({"observed": "open", "verdict": "ok", "family": "ipv4", "target_stage": "nonce", "blame": null}),
        "{}",
        p.detail
    );
    assert_eq!(run.report.paths.len(), 2);
}

/// On a flat network (no router, so no walk) the return path dropped by the
/// target's own output chain is still a lost return path, with no hop.
#[test]
fn flat_return_path_dropped_at_the_target_has_no_hop() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        PLAN_DUAL
            .replace(
                "address = [\"198.18.1.20\", \"2001:2:0:1::20\"]",
                "address = \"198.18.1.20\"",
            )
            .replace(
                "address = [\"198.18.3.40\", \"2001:2:0:3::40\"]",
                "address = \"198.18.3.40\"",
            ),
    )
    .unwrap();
    let lab = PlanLab::new(&plan).expect("build the flat lab");
    lab.lab
        .nft(
            "db",
            "flush ruleset\ntable inet fw {\n  chain input {\n    type filter hook input priority 0; policy drop;\n    ct state established,related accept\n    iif \"lo\" accept\n    ip saddr 198.18.1.20 tcp dport 7400 accept\n    ip saddr 198.18.1.20 tcp dport 7100 accept\n  }\n  chain output {\n    type filter hook output priority 0; policy accept;\n    ip daddr 198.18.1.20 tcp sport 7100 drop\n  }\n}\n",
        )
        .expect("db's firewall");
    lab.start_agents().expect("start the agents");
    for round in 0..2 {
        let run = lab.check("client").expect("portcall check");
        assert_path(
            &run,
            "db",
            7100,
            json!({
                "observed": "timeout", "verdict": "violation", "icmp": null,
                "target_stage": "syn",
                "blame": {"where": "return-path", "hop": null, "hop_distance": null, "cause": "return-path-lost", "rule": null},
            }),
        );
        assert_eq!(run.report.paths.len(), 1, "round {round}");
    }
}
