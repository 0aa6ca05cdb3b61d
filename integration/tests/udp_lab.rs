//! `portcall check` over UDP paths with real agents: one client probes the
//! same planned UDP port on six targets, each broken (or not) in its own
//! way by its own firewall, in one round. Every outcome must be exact: a
//! canary that got the nonce and answered is `open` (with the datagrams
//! counted), a drop is `timeout`, ICMP port-unreachable is `refused`,
//! admin-prohibited is `unreachable` with the ICMP's sender, an answer lost
//! on the way back is the one-way finding with the datagrams that arrived,
//! a lost first datagram is `open` with "1 of 2", a port a real service
//! holds is an `error` (UDP cannot be proven without a canary), and a real
//! DNS server (dnsmasq) holding 53/udp and 53/tcp is proven live by a DNS
//! query.

use std::io::Write as _;

use integration::firewall::{self, HostRules};
use integration::{PlanLab, find_tool, lab_available};
use probe_core::port::Protocol;
use probe_core::probe::Observed;
use probe_core::report::{Cause, PathReport, TargetStage, Verdict, Where};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");

const PLAN: &str = r#"
name = "udp-lab"
[defaults]
timeout_ms = 600
retries = 1

[roles.udp-app]
ports = [{ name = "app", port = 5000, protocol = "udp" }]

[[hosts]]
name = "operator"
address = "198.18.0.10"
[[hosts]]
name = "client"
address = "198.18.0.1"
[[hosts]]
name = "open"
address = "198.18.0.2"
roles = ["udp-app"]
[[hosts]]
name = "dropped"
address = "198.18.0.3"
roles = ["udp-app"]
[[hosts]]
name = "rejected"
address = "198.18.0.4"
roles = ["udp-app"]
[[hosts]]
name = "prohibited"
address = "198.18.0.5"
roles = ["udp-app"]
[[hosts]]
name = "oneway"
address = "198.18.0.6"
roles = ["udp-app"]
[[hosts]]
name = "lossy"
address = "198.18.0.7"
roles = ["udp-app"]
[[hosts]]
name = "held"
address = "198.18.0.8"
roles = ["udp-app"]

[[hosts]]
name = "resolver"
address = "198.18.0.9"
roles = ["dns"]

[[flows]]
from = "host:client"
to = "role:udp-app"
ports = ["app"]
[[flows]]
from = "host:client"
to = "host:resolver"
ports = [53]
"#;

fn path<'a>(paths: &'a [PathReport], to: &str) -> &'a PathReport {
    paths
        .iter()
        .find(|p| p.to == to)
        .unwrap_or_else(|| panic!("no path to {to}: {paths:#?}"))
}

#[test]
fn every_udp_outcome_is_exact_through_check() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan_file = dir.path().join("udp.toml");
    std::fs::File::create(&plan_file)
        .and_then(|mut f| f.write_all(PLAN.as_bytes()))
        .unwrap();
    let lab = PlanLab::new(&plan_file).unwrap();
    let mut rules = firewall::correct(&lab.plan, "operator");
    assert!(
        rules["open"]
            .input_accepts
            .contains(&firewall::accept_udp("198.18.0.1", 5000)),
        "{:?}",
        rules["open"]
    );
    let client = "ip saddr 198.18.0.1";
    let first = |r: &mut HostRules, rule: String| r.input_first.push(rule);
    first(
        rules.get_mut("dropped").unwrap(),
        format!("{client} udp dport 5000 drop"),
    );
    first(
        rules.get_mut("rejected").unwrap(),
        format!("{client} udp dport 5000 reject with icmp type port-unreachable"),
    );
    first(
        rules.get_mut("prohibited").unwrap(),
        format!("{client} udp dport 5000 reject with icmpx type admin-prohibited"),
    );
    // The canary's answers never leave the target.
    rules
        .get_mut("oneway")
        .unwrap()
        .output
        .push("ip daddr 198.18.0.1 udp sport 5000 drop".into());
    // Every other datagram from the client is lost, the first one first: a
    // counter, not chance.
    first(
        rules.get_mut("lossy").unwrap(),
        format!("{client} udp dport 5000 numgen inc mod 2 == 0 drop"),
    );
    for (host, r) in &rules {
        lab.firewall(host, r).unwrap();
    }
    // A real service holds 5000/udp on `held` (it reads and never answers).
    lab.lab
        .spawn_ready(
            "held",
            LAB_SERVER,
            &[
                "--bind",
                "198.18.0.8",
                "--udp-silent",
                "5000",
                "--lifetime",
                "60",
            ],
        )
        .unwrap();
    // A real DNS server holds 53 (UDP and TCP) on the resolver, with a
    // test-generated configuration only, authoritative for `.`.
    let dnsmasq = find_tool("dnsmasq");
    if dnsmasq.is_none() {
        assert!(
            std::env::var(integration::REQUIRE_LAB_ENV).as_deref() != Ok("1"),
            "{}=1 but dnsmasq (Debian dnsmasq-base) is missing",
            integration::REQUIRE_LAB_ENV
        );
        eprintln!("dnsmasq missing (Debian dnsmasq-base): the live DNS part is not checked");
    }
    if let Some(dnsmasq) = &dnsmasq {
        let args = integration::dnsmasq_args("198.18.0.9");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        lab.lab
            .spawn_logged("resolver", dnsmasq, &args, &dir.path().join("dnsmasq.log"))
            .unwrap();
        lab.lab
            .wait_listening("resolver", 53, std::time::Duration::from_secs(10))
            .unwrap();
    }
    lab.start_agents().unwrap();
    let run = lab.check("operator").unwrap();
    let paths = &run.report.paths;
    assert_eq!(paths.len(), 9, "{paths:#?}");
    let udp: Vec<&PathReport> = paths
        .iter()
        .filter(|p| p.protocol == Protocol::Udp)
        .collect();
    assert_eq!(udp.len(), 8, "{paths:#?}");
    if dnsmasq.is_some() {
        for p in paths.iter().filter(|p| p.to == "resolver") {
            assert_eq!(
                (p.port, p.observed, p.verdict, p.target_saw),
                (53, Some(Observed::Open), Verdict::Ok, None),
                "{p:?}"
            );
            assert_eq!(p.arrived, None, "no canary counted: {p:?}");
        }
        let dns = paths
            .iter()
            .find(|p| p.to == "resolver" && p.protocol == Protocol::Udp)
            .unwrap();
        assert!(
            dns.detail.contains("the live service answered"),
            "{}",
            dns.detail
        );
        assert_eq!(dns.service, "dns");
    }
    let logs = || lab.logs();

    let open = path(paths, "open");
    assert_eq!(
        (open.observed, open.verdict),
        (Some(Observed::Open), Verdict::Ok),
        "{}\n{}",
        open.detail,
        logs()
    );
    assert_eq!((open.attempts, open.arrived), (1, Some(1)), "{open:?}");
    assert_eq!(open.target_saw, Some(true));
    assert_eq!(open.seen_source.as_deref(), Some("198.18.0.1"));
    assert_eq!(open.target_stage, Some(TargetStage::Nonce));

    let dropped = path(paths, "dropped");
    assert_eq!(
        (dropped.observed, dropped.verdict),
        (Some(Observed::Timeout), Verdict::Violation),
        "{}",
        dropped.detail
    );
    assert_eq!((dropped.attempts, dropped.arrived), (2, Some(0)));
    assert!(
        dropped
            .detail
            .starts_with("dropped: no answer within 600 ms (2 datagrams)"),
        "{}",
        dropped.detail
    );

    let rejected = path(paths, "rejected");
    assert_eq!(
        (rejected.observed, rejected.verdict),
        (Some(Observed::Refused), Verdict::Violation),
        "{}",
        rejected.detail
    );
    let icmp = rejected.icmp.as_ref().expect("ICMP evidence");
    assert_eq!(
        (icmp.kind.as_str(), icmp.from.as_str()),
        ("port-unreachable", "198.18.0.4")
    );
    assert_eq!(rejected.arrived, Some(0));
    let b = rejected.blame.as_ref().unwrap();
    assert_eq!((b.at, b.cause), (Where::Target, Cause::IcmpReject));

    let prohibited = path(paths, "prohibited");
    assert_eq!(
        (prohibited.observed, prohibited.verdict),
        (Some(Observed::Unreachable), Verdict::Violation),
        "{}",
        prohibited.detail
    );
    let icmp = prohibited.icmp.as_ref().expect("ICMP evidence");
    assert_eq!(
        (icmp.kind.as_str(), icmp.from.as_str()),
        ("admin-prohibited", "198.18.0.5")
    );
    assert!(
        prohibited
            .detail
            .contains("rejected by prohibited (ICMP admin-prohibited)"),
        "{}",
        prohibited.detail
    );

    let oneway = path(paths, "oneway");
    assert_eq!(
        (oneway.observed, oneway.verdict),
        (Some(Observed::Timeout), Verdict::Violation),
        "{}",
        oneway.detail
    );
    assert_eq!(
        (oneway.attempts, oneway.arrived),
        (2, Some(2)),
        "{oneway:?}"
    );
    assert_eq!(oneway.target_stage, Some(TargetStage::Nonce));
    assert!(
        oneway
            .detail
            .starts_with("the target received it; its answer never came back"),
        "{}",
        oneway.detail
    );
    let b = oneway.blame.as_ref().unwrap();
    assert_eq!((b.at, b.cause), (Where::ReturnPath, Cause::AnswerLost));

    let lossy = path(paths, "lossy");
    assert_eq!(
        (lossy.observed, lossy.verdict),
        (Some(Observed::Open), Verdict::Ok),
        "{}",
        lossy.detail
    );
    assert_eq!((lossy.attempts, lossy.arrived), (2, Some(1)), "{lossy:?}");
    assert!(
        lossy.detail.contains("1 of 2 datagrams arrived"),
        "{}",
        lossy.detail
    );

    let held = path(paths, "held");
    assert_eq!(
        (held.observed, held.verdict),
        (None, Verdict::Error),
        "{held:?}"
    );
    assert!(
        held.detail
            .starts_with("UDP cannot be proven without a canary"),
        "{}",
        held.detail
    );
    assert_eq!(run.code, 1, "{}", run.stderr);

    // The human formats say it too: protocol, the one-way finding and the
    // datagram count.
    let report = run.path.to_string_lossy().into_owned();
    let table = lab
        .portcall_ok(&["report", &report, "--format", "table"])
        .unwrap();
    // Shown with --nocapture, for the record.
    eprintln!("{table}");
    assert!(table.contains("5000/udp"), "{table}");
    assert!(
        table.contains("oneway received it; its answer never came back"),
        "{table}"
    );
    assert!(table.contains("2 of 2 datagrams arrived"), "{table}");
    let prom = lab
        .portcall_ok(&["report", &report, "--format", "prometheus"])
        .unwrap();
    assert!(
        prom.contains(
            r#"to="lossy",port="5000",service="app",expect="open",family="ipv4",protocol="udp"} 1"#
        ),
        "{prom}"
    );
}
