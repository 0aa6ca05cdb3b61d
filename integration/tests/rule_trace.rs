//! Rule attribution end to end: the agents trace the round's packets
//! through their hosts' nftables firewalls, and each blocked path's
//! `blame.rule` names the rule (table, chain, handle, text) or the chain
//! policy that stopped it — on the target, or in the source's output chain —
//! and nothing of the tracing is left on the hosts afterwards, even when an
//! agent is killed in the middle of a round.

use std::time::{Duration, Instant};

use integration::firewall::{self, accept};
use integration::{LabNet, PlanLab, lab_available};
use probe_core::report::{PathReport, Report, Verdict};

/// src probes dst on four ports; the faults are layered on the correct
/// firewalls.
const PLAN: &str = r#"
name = "rule-trace"

[defaults]
timeout_ms = 400
retries = 0
control_port = 7400

[[hosts]]
name = "src"
address = "198.18.0.10"

[[hosts]]
name = "dst"
address = "198.18.0.11"
roles = ["svc"]

[roles.svc]
ports = [
  { name = "host-drop", port = 7101 },
  { name = "policy-drop", port = 7102 },
  { name = "egress-drop", port = 7103 },
  { name = "open", port = 7104 },
]

[[flows]]
from = "host:src"
to = "host:dst"
ports = ["host-drop", "policy-drop", "egress-drop", "open"]
"#;

fn path<'a>(r: &'a Report, port: u16) -> &'a PathReport {
    r.paths
        .iter()
        .find(|p| p.port == port)
        .unwrap_or_else(|| panic!("no path to port {port}"))
}

/// The handle of the rule of `chain` (table inet portcall) whose text
/// starts with `text`.
fn handle(lab: &PlanLab, host: &str, chain: &str, text: &str) -> u64 {
    let listing = lab
        .lab
        .run_ok(
            host,
            "nft",
            &["-a", "list", "chain", "inet", "portcall", chain],
        )
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

#[test]
fn host_rule_policy_and_egress_drops_are_named_and_nothing_is_left_behind() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(&plan, PLAN).unwrap();
    let lab = PlanLab::new(&plan).unwrap();
    let (src, dst) = (lab.addr("src").to_string(), lab.addr("dst").to_string());
    let mut rules = firewall::correct(&lab.plan, "src");
    let d = rules.get_mut("dst").unwrap();
    d.input_first
        .push(format!("ip saddr {src} tcp dport 7101 drop"));
    d.remove_accept(&accept(&src, 7102));
    rules
        .get_mut("src")
        .unwrap()
        .output
        .push(format!("ip daddr {dst} tcp dport 7103 drop"));
    for (host, r) in &rules {
        lab.firewall(host, r).unwrap();
    }
    lab.start_agents().unwrap();
    let run = lab.check("src").unwrap();
    let r = &run.report;
    for h in &r.hosts {
        let t = h.rule_trace.as_ref().unwrap_or_else(|| panic!("{h:?}"));
        assert_eq!(t.state.as_str(), "traced", "{h:?}\n{}", lab.logs());
    }

    let host_drop = path(r, 7101);
    assert_eq!(host_drop.verdict, Verdict::Violation);
    let b = host_drop.blame.as_ref().expect("blame");
    assert_eq!(
        serde_json::to_value(b).unwrap(),
        serde_json::json!({
            "where": "target", "hop": null, "hop_distance": null, "cause": "drop",
            "rule": {
                "host": "dst", "table": "inet portcall", "chain": "input",
                "handle": handle(&lab, "dst", "input", &format!("ip saddr {src} tcp dport 7101 drop")),
                "text": format!("ip saddr {src} tcp dport 7101 drop"),
            }
        }),
        "{host_drop:#?}"
    );

    let policy = path(r, 7102);
    assert_eq!(
        serde_json::to_value(policy.blame.as_ref().unwrap()).unwrap(),
        serde_json::json!({
            "where": "target", "hop": null, "hop_distance": null, "cause": "drop",
            "rule": {"host": "dst", "table": "inet portcall", "chain": "input", "policy": "drop"}
        }),
        "{policy:#?}"
    );

    let egress = path(r, 7103);
    assert_eq!(
        serde_json::to_value(egress.blame.as_ref().unwrap()).unwrap(),
        serde_json::json!({
            "where": "source", "hop": null, "hop_distance": null, "cause": "egress",
            "rule": {
                "host": "src", "table": "inet portcall", "chain": "output",
                "handle": handle(&lab, "src", "output", &format!("ip daddr {dst} tcp dport 7103 drop")),
                "text": format!("ip daddr {dst} tcp dport 7103 drop"),
            }
        }),
        "{egress:#?}"
    );

    let open = path(r, 7104);
    assert_eq!(open.verdict, Verdict::Ok, "{open:#?}");
    assert_eq!(open.blame, None);

    // Teardown removed the trace tables.
    for host in ["src", "dst"] {
        assert_eq!(trace_tables(&lab.lab, host), Vec::<String>::new(), "{host}");
    }
}

/// The pid of the `portcall` agent inside lab host `host`, found among
/// the processes of that namespace (ones this test started).
fn agent_pid(lab: &PlanLab, host: &str) -> u32 {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", lab.lab.netns(host)])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&out.stdout).into_owned();
    pids.split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains("agent") && c.contains(&format!("--host\0{host}")))
        })
        .unwrap_or_else(|| panic!("no agent in {host}: {pids}"))
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An agent killed with SIGKILL mid-round leaves its trace table behind,
/// but the table's set elements expire in the kernel at the round's TTL
/// (tracing stops by itself), and an agent restarted on the host deletes
/// every expired trace table at once and the others when their TTL passes.
#[test]
fn tracing_state_is_bounded_by_the_ttl_after_kill_9_and_a_restart() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    // A silent path keeps the round going for a while.
    std::fs::write(&plan, PLAN.replace("timeout_ms = 400", "timeout_ms = 2500")).unwrap();
    let lab = PlanLab::new(&plan).unwrap();
    let src = lab.addr("src").to_string();
    let mut rules = firewall::correct(&lab.plan, "src");
    rules
        .get_mut("dst")
        .unwrap()
        .remove_accept(&accept(&src, 7102));
    for (host, r) in &rules {
        lab.firewall(host, r).unwrap();
    }
    lab.start_agents().unwrap();
    let bin = integration::portcall_bin().unwrap();
    let mut check = lab
        .lab
        .command("src", &bin)
        .args(["check", "--plan", &lab.plan_path().to_string_lossy()])
        .args(["--pki", &lab.pki().to_string_lossy(), "--format", "json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("a trace table on dst", Duration::from_secs(5), || {
        !trace_tables(&lab.lab, "dst").is_empty()
    });
    let pid = agent_pid(&lab, "dst");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = check.wait().unwrap();
    assert_ne!(status.code(), Some(0), "the round lost its target agent");
    // Left behind by the killed agent...
    let left = trace_tables(&lab.lab, "dst");
    assert_eq!(left.len(), 1, "{left:?}");
    let name = left[0].trim().trim_start_matches("table inet ").to_string();
    // ...but its elements carry the round's TTL: the kernel stops tracing
    // at the TTL whether or not an agent ever comes back.
    let set = lab
        .lab
        .run_ok("dst", "nft", &["list", "set", "inet", &name, "in4"])
        .unwrap();
    assert!(
        set.contains(&format!("{src} . 7101 timeout")) && set.contains("expires"),
        "{set}"
    );
    // Two more tables as killed agents leave them: one whose TTL has
    // passed, one whose TTL passes in two seconds.
    let now = probe_core::agent::nftrace::unix_now();
    let expired = probe_core::agent::nftrace::table_name("dead", now - 5);
    let soon = probe_core::agent::nftrace::table_name("beef", now + 2);
    for t in [&expired, &soon] {
        lab.lab
            .nft("dst", &format!("table inet {t} {{\n}}\n"))
            .unwrap();
    }
    // The restarted agent deletes the expired one at once, the other at its
    // TTL; the killed round's table goes at its own expiry the same way.
    lab.lab
        .spawn_logged(
            "dst",
            &bin,
            &[
                "agent",
                "--plan",
                &lab.plan_path().to_string_lossy(),
                "--host",
                "dst",
                "--pki",
                &lab.pki().to_string_lossy(),
            ],
            &lab.log("dst"),
        )
        .unwrap();
    wait_until("the expired table deleted", Duration::from_secs(3), || {
        !trace_tables(&lab.lab, "dst")
            .iter()
            .any(|t| t.contains(&expired))
    });
    assert!(
        trace_tables(&lab.lab, "dst")
            .iter()
            .any(|t| t.contains(&soon)),
        "an unexpired table stays until its TTL"
    );
    wait_until("the table at its TTL", Duration::from_secs(5), || {
        !trace_tables(&lab.lab, "dst")
            .iter()
            .any(|t| t.contains(&soon))
    });
    let remaining = trace_tables(&lab.lab, "dst");
    assert_eq!(
        remaining.len(),
        1,
        "only the killed round's, until its TTL: {remaining:?}"
    );
    assert!(remaining[0].contains(&name), "{remaining:?}");
}
