//! The routed lab builder itself: zones behind a router that forwards both
//! families, faults loaded into the router's forward and nat chains, and
//! nothing left behind on drop. The per-fault `portcall check` tests build
//! on it.

use integration::routed::ROUTER;
use integration::{LabNet, RoutedLab, RouterRules, lab_available, portcall_bin};
use serde_json::Value;

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");

/// ops (zone 1): client, dual stack. data (zone 3): db, dual stack, and
/// db2, IPv4 only. db listens on 7000 on both families, db2 on 7000.
fn lab() -> Option<RoutedLab> {
    if !lab_available() {
        return None;
    }
    let lab = RoutedLab::builder()
        .zone("ops", 1)
        .zone("data", 3)
        .host("client", "ops", &["198.18.1.10", "2001:2:0:1::10"])
        .host("db", "data", &["198.18.3.40", "2001:2:0:3::40"])
        .host("db2", "data", &["198.18.3.41"])
        .build()
        .expect("build the routed lab");
    for (host, bind) in [("db", "::"), ("db2", "198.18.3.41")] {
        lab.spawn_ready(
            host,
            LAB_SERVER,
            &["--bind", bind, "--tcp", "7000", "--lifetime", "60"],
        )
        .expect("start the lab server");
    }
    Some(lab)
}

/// `portcall probe TARGET` from the client: (observed, the JSON result).
fn probe(lab: &RoutedLab, target: &str) -> (String, Value) {
    let out = lab
        .command("client", portcall_bin().expect("the portcall binary"))
        .args(["probe", target, "--timeout-ms", "300", "--retries", "0"])
        .args(["--format", "json"])
        .output()
        .expect("run portcall probe");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "portcall printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let r = doc["results"][0].clone();
    (r["observed"].as_str().unwrap_or_default().to_string(), r)
}

#[test]
fn router_forwards_both_families_and_its_forward_chain_shapes_them() {
    let Some(lab) = lab() else { return };
    let zone = lab.zone("data");
    assert_eq!(zone.router_v4().to_string(), "198.18.3.254");
    assert_eq!(zone.router_v6().to_string(), "2001:2:0:3::254");
    for target in ["198.18.3.40:7000", "[2001:2:0:3::40]:7000"] {
        let (observed, r) = probe(&lab, target);
        assert_eq!(observed, "open", "{target} across the router: {r}");
    }

    lab.router_rules(&RouterRules {
        forward: vec![
            "ip daddr 198.18.3.40 tcp dport 7000 drop".into(),
            "ip6 daddr 2001:2:0:3::40 tcp dport 7000 reject with tcp reset".into(),
        ],
        ..RouterRules::default()
    })
    .unwrap();
    let (observed, r) = probe(&lab, "198.18.3.40:7000");
    assert_eq!(observed, "timeout", "router drop: {r}");
    let (observed, r) = probe(&lab, "[2001:2:0:3::40]:7000");
    assert_eq!(observed, "refused", "router reset: {r}");
    // The other host of the zone is untouched by either rule.
    let (observed, r) = probe(&lab, "198.18.3.41:7000");
    assert_eq!(observed, "open", "{r}");

    lab.router_rules(&RouterRules {
        forward: vec!["ip daddr 198.18.3.0/24 reject with icmpx admin-prohibited".into()],
        ..RouterRules::default()
    })
    .unwrap();
    let (observed, r) = probe(&lab, "198.18.3.41:7000");
    assert_eq!(observed, "unreachable", "router ICMP reject: {r}");
    let (observed, r) = probe(&lab, "[2001:2:0:3::40]:7000");
    assert_eq!(observed, "open", "the IPv4 reject left IPv6 alone: {r}");
}

#[test]
fn router_dnat_sends_one_address_to_another_host() {
    let Some(lab) = lab() else { return };
    // Nothing listens on db:7005.
    let (observed, r) = probe(&lab, "198.18.3.40:7005");
    assert_eq!(observed, "refused", "{r}");
    lab.router_rules(&RouterRules {
        prerouting: vec!["ip daddr 198.18.3.40 tcp dport 7005 dnat ip to 198.18.3.41:7000".into()],
        ..RouterRules::default()
    })
    .unwrap();
    let (observed, r) = probe(&lab, "198.18.3.40:7005");
    assert_eq!(observed, "open", "DNAT to db2: {r}");
    // The translation happened at the router: once db2's own firewall
    // drops port 7000, db's 7005 goes silent.
    lab.nft(
        "db2",
        "table inet t {\n chain input {\n  type filter hook input priority 0; policy accept;\n  tcp dport 7000 drop\n }\n}\n",
    )
    .unwrap();
    let (observed, r) = probe(&lab, "198.18.3.40:7005");
    assert_eq!(observed, "timeout", "DNAT to a dropping db2: {r}");
}

#[test]
fn router_mtu_policy_routes_only_the_chosen_replies_through_a_locked_mtu() {
    let Some(lab) = lab() else { return };
    lab.router_mtu_policy("198.18.3.40".parse().unwrap(), Some(7000), 1280, 100)
        .unwrap();
    let routes = lab
        .run_ok(ROUTER, "ip", &["route", "show", "table", "100"])
        .unwrap();
    assert!(
        routes.contains("198.18.1.0/24 dev z1") && routes.contains("mtu lock 1280"),
        "{routes}"
    );
    let rules = lab.run_ok(ROUTER, "ip", &["rule", "show"]).unwrap();
    assert!(
        rules.contains("from 198.18.3.40 ipproto tcp sport 7000 lookup 100"),
        "{rules}"
    );
    // Small packets still pass.
    let (observed, r) = probe(&lab, "198.18.3.40:7000");
    assert_eq!(observed, "open", "{r}");
}

#[test]
fn dropping_the_lab_deletes_every_namespace_it_made() {
    let Some(lab) = lab() else { return };
    let mut names = vec![
        lab.router_netns().to_string(),
        lab.zone("ops").netns.clone(),
    ];
    names.extend(lab.hosts().iter().map(|h| h.netns.clone()));
    for n in &names {
        assert!(
            std::path::Path::new("/run/netns").join(n).exists(),
            "{n} missing"
        );
    }
    drop(lab);
    for n in &names {
        assert!(
            !std::path::Path::new("/run/netns").join(n).exists(),
            "{n} left behind"
        );
    }
}

/// Operators, an app server and a database in three zones.
const PLAN: &str = r#"
name = "routed-smoke"

[defaults]
timeout_ms = 400
retries = 0
control_port = 7400

[zones]
ops = "Operators"
app = "Application servers"
data = "Databases"

[[hosts]]
name = "operator"
address = "198.18.1.20"
zone = "ops"

[[hosts]]
name = "app"
address = "198.18.2.10"
zone = "app"
roles = ["web"]

[[hosts]]
name = "db"
address = "198.18.3.40"
zone = "data"
roles = ["mariadb"]

[roles.web]
description = "A web service"
ports = [{ name = "https", port = 8443 }]

[[flows]]
name = "operators reach the app"
from = "zone:ops"
to = "host:app"
ports = ["https"]

[[flows]]
name = "the app reaches the database"
from = "host:app"
to = "role:mariadb"
ports = ["mysql"]

[[flows]]
name = "operators do not reach the database"
from = "zone:ops"
to = "role:mariadb"
ports = ["mysql"]
expect = "blocked"
"#;

fn observed(run: &integration::CheckRun) -> Vec<(String, String, String)> {
    run.report
        .paths
        .iter()
        .map(|p| {
            (
                format!("{}->{}:{}", p.from, p.to, p.port),
                p.observed.map(|o| format!("{o:?}")).unwrap_or_default(),
                format!("{:?}", p.verdict),
            )
        })
        .collect()
}

#[test]
fn plan_lab_runs_agents_and_check_across_the_router() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(&plan, PLAN).unwrap();
    let lab = integration::PlanLab::routed(&plan, &[]).unwrap();
    assert_eq!(lab.lab.zone("data").index, 3);
    // The router, not a host firewall, keeps operators off the database.
    lab.lab
        .router_rules(&RouterRules {
            forward: vec!["ip saddr 198.18.1.0/24 ip daddr 198.18.3.40 tcp dport 3306 drop".into()],
            ..RouterRules::default()
        })
        .unwrap();
    lab.start_agents().unwrap();
    let run = lab.check("operator").unwrap();
    let want = [
        ("operator->app:8443", "Open", "Ok"),
        ("app->db:3306", "Open", "Ok"),
        ("operator->db:3306", "Timeout", "Ok"),
    ];
    let mut got = observed(&run);
    got.sort();
    let mut want: Vec<_> = want
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    want.sort();
    assert_eq!(got, want, "{}\n{}", run.stderr, lab.logs());
    assert_eq!(run.code, 0);

    // The router now drops the app's database traffic too: a violation.
    lab.lab
        .router_rules(&RouterRules {
            forward: vec!["ip daddr 198.18.3.40 tcp dport 3306 drop".into()],
            ..RouterRules::default()
        })
        .unwrap();
    let run = lab.check("operator").unwrap();
    let app_db = run.report.paths.iter().find(|p| p.from == "app").unwrap();
    assert_eq!(
        format!("{:?}", app_db.observed),
        "Some(Timeout)",
        "{app_db:?}"
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
}

#[test]
fn without_static_neighbours_arp_and_neighbour_discovery_resolve_across_the_router() {
    if !lab_available() {
        return;
    }
    let lab = RoutedLab::builder()
        .zone("ops", 1)
        .zone("data", 3)
        .host("client", "ops", &["198.18.1.10", "2001:2:0:1::10"])
        .host("db", "data", &["198.18.3.40", "2001:2:0:3::40"])
        .static_neighbours(false)
        .build()
        .unwrap();
    lab.spawn_ready(
        "db",
        LAB_SERVER,
        &["--bind", "::", "--tcp", "7000", "--lifetime", "60"],
    )
    .unwrap();
    for target in ["198.18.3.40:7000", "[2001:2:0:3::40]:7000"] {
        let (observed, r) = probe(&lab, target);
        assert_eq!(observed, "open", "{target}: {r}");
    }
    let neigh = lab.run_ok("client", "ip", &["neigh", "show"]).unwrap();
    assert!(
        !neigh.contains("PERMANENT") && neigh.contains("198.18.1.254"),
        "{neigh}"
    );
}
