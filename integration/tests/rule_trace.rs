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

fn path(r: &Report, port: u16) -> &PathReport {
    r.paths
        .iter()
        .find(|p| p.port == port)
        .unwrap_or_else(|| panic!("no path to port {port}"))
}

/// The handle of the rule of `chain` (table inet portcall) whose text
/// starts with `text`.
fn handle(lab: &impl LabNet, host: &str, chain: &str, text: &str) -> u64 {
    let listing = lab
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
                "handle": handle(&lab.lab, "dst", "input", &format!("ip saddr {src} tcp dport 7101 drop")),
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
                "handle": handle(&lab.lab, "src", "output", &format!("ip daddr {dst} tcp dport 7103 drop")),
                "text": format!("ip daddr {dst} tcp dport 7103 drop"),
            }
        }),
        "{egress:#?}"
    );

    let open = path(r, 7104);
    assert_eq!(open.verdict, Verdict::Ok, "{open:#?}");
    assert_eq!(open.blame, None);

    // Teardown removed the trace tables and ended every `nft monitor` (and
    // its `timeout` wrapper): none may outlive the round in the namespace.
    for host in ["src", "dst"] {
        assert_eq!(trace_tables(&lab.lab, host), Vec::<String>::new(), "{host}");
        wait_until(
            &format!("{host}: no nft process left after the round"),
            Duration::from_secs(3),
            || commands_in(&lab, host, "nft").is_empty(),
        );
    }
}

/// The command lines of processes in lab host `host`'s namespace whose
/// program name is `name` (or that run it, as `timeout ... nft` does).
fn commands_in(lab: &PlanLab, host: &str, name: &str) -> Vec<String> {
    processes_in(lab, host)
        .into_iter()
        .map(|(_, c)| c.replace('\0', " "))
        .filter(|c| {
            c.split_whitespace()
                .any(|w| w.rsplit('/').next() == Some(name))
        })
        .collect()
}

/// The processes of lab host `host`'s namespace: pid and raw command line
/// (arguments separated by NULs).
fn processes_in(lab: &PlanLab, host: &str) -> Vec<(u32, String)> {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", lab.lab.netns(host)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter_map(|p| {
            let c = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
            Some((p, String::from_utf8_lossy(&c).into_owned()))
        })
        .collect()
}

/// The pid of the `portcall` agent inside lab host `host`, found among
/// the processes of that namespace (ones this test started).
fn agent_pid(lab: &PlanLab, host: &str) -> u32 {
    let procs = processes_in(lab, host);
    procs
        .iter()
        .find(|(_, c)| c.contains("agent") && c.contains(&format!("--host\0{host}")))
        .map(|(p, _)| *p)
        .unwrap_or_else(|| panic!("no agent in {host}: {procs:?}"))
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

/// The routed lab: client (ops, dual stack) reaches db (data, dual stack)
/// on three ports; `out` (an outside zone) must not reach the third.
const ROUTED: &str = r#"
name = "rule-trace-routed"

[defaults]
timeout_ms = 400
retries = 0
control_port = 7400

[zones]
ops = "Operators"
data = "Databases"
outside = "The internet"

[[hosts]]
name = "client"
address = ["198.18.1.10", "2001:2:0:1::10"]
zone = "ops"

[[hosts]]
name = "out"
address = "198.18.5.10"
zone = "outside"

[[hosts]]
name = "db"
address = ["198.18.3.40", "2001:2:0:3::40"]
zone = "data"
roles = ["svc"]

[roles.svc]
ports = [
  { name = "router-drop", port = 7201 },
  { name = "v6-drop", port = 7202 },
  { name = "console", port = 7203 },
]

[[flows]]
from = "host:client"
to = "host:db"
ports = ["router-drop", "v6-drop", "console"]

[[flows]]
name = "the console is not exposed outside"
from = "zone:outside"
to = "host:db"
ports = ["console"]
expect = "blocked"
"#;

fn family_path<'a>(r: &'a Report, from: &str, port: u16, family: &str) -> &'a PathReport {
    r.paths
        .iter()
        .find(|p| {
            p.from == from && p.port == port && p.family.is_some_and(|f| f.as_str() == family)
        })
        .unwrap_or_else(|| panic!("no path {from} -> {port} over {family}"))
}

/// A router fault is blamed on the network with the router as the hop and
/// gets no host rule; an IPv6-only drop on the dual-stack db names its rule;
/// a too-broad accept closed by `suggest`'s default deny blocks an outside
/// address no plan host has, while every must-be-open source still passes.
#[test]
fn routed_faults_are_placed_and_a_default_deny_closes_the_port_for_everyone() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(&plan, ROUTED).unwrap();
    // A second outside address, in no plan.
    let outsider = "198.18.5.99";
    let lab = PlanLab::routed(&plan, &[("out", outsider)]).unwrap();
    let mut rules = firewall::correct(&lab.plan, "client");
    let db = rules.get_mut("db").unwrap();
    db.input_first
        .push("ip6 saddr 2001:2:0:1::10 tcp dport 7202 drop".into());
    // Too broad: the console open to every source.
    db.input_accepts.push("tcp dport 7203 accept".into());
    for (host, r) in &rules {
        lab.firewall(host, r).unwrap();
    }
    lab.lab
        .router_rules(&integration::RouterRules {
            forward: vec![
                "ip daddr 198.18.3.40 tcp dport 7201 drop".into(),
                "ip6 daddr 2001:2:0:3::40 tcp dport 7201 drop".into(),
            ],
            ..integration::RouterRules::default()
        })
        .unwrap();
    lab.start_agents().unwrap();

    let before = lab.check("client").unwrap();
    let r = &before.report;
    for (family, hop) in [("ipv4", "198.18.1.254"), ("ipv6", "2001:2:0:1::254")] {
        let p = family_path(r, "client", 7201, family);
        assert_eq!(p.verdict, Verdict::Violation, "{p:#?}");
        let b = p.blame.as_ref().expect("blame");
        assert_eq!(b.at.as_str(), "network", "{p:#?}\n{}", lab.logs());
        assert_eq!(b.hop.as_deref(), Some(hop), "{p:#?}");
        assert_eq!(b.rule, None);
    }
    let v6 = family_path(r, "client", 7202, "ipv6");
    let text = "ip6 saddr 2001:2:0:1::10 tcp dport 7202 drop";
    assert_eq!(
        serde_json::to_value(v6.blame.as_ref().unwrap()).unwrap(),
        serde_json::json!({
            "where": "target", "hop": null, "hop_distance": null, "cause": "drop",
            "rule": {
                "host": "db", "table": "inet portcall", "chain": "input",
                "handle": handle(&lab.lab, "db", "input", text), "text": text,
            }
        }),
        "{v6:#?}"
    );
    assert_eq!(family_path(r, "client", 7202, "ipv4").verdict, Verdict::Ok);
    let hole = family_path(r, "out", 7203, "ipv4");
    assert_eq!(hole.verdict, Verdict::Violation, "{hole:#?}");

    // db's section of the suggestion: no host rule for the router's drop,
    // the default deny of 7203 with accepts for both of client's addresses.
    let script = lab
        .portcall_ok(&[
            "suggest",
            &before.path.to_string_lossy(),
            "--format",
            "nft",
            "--host",
            "db",
            "--table",
            "inet portcall",
        ])
        .unwrap();
    assert!(!script.contains("dport 7201"), "{script}");
    assert!(
        script.contains("NO RULE HERE: blamed on the network: the device at 198.18.1.254"),
        "{script}"
    );
    assert!(
        script.contains(
            "the flow's source zone:outside covers zone outside's hosts out (198.18.5.10)"
        ),
        "{script}"
    );
    let out = lab.lab.output("db", "sh", &["-e", "-c", &script]).unwrap();
    assert!(
        out.status.success(),
        "{}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );

    let after = lab.check("client").unwrap();
    let r = &after.report;
    assert_eq!(family_path(r, "out", 7203, "ipv4").verdict, Verdict::Ok);
    for family in ["ipv4", "ipv6"] {
        let p = family_path(r, "client", 7203, family);
        assert_eq!(
            p.verdict,
            Verdict::Ok,
            "must-be-open source still passes: {p:#?}"
        );
    }
    // The outsider, not in the plan, is blocked too: probe it against a
    // listener of its own on db.
    let bin = integration::portcall_bin().unwrap();
    lab.lab
        .spawn_ready(
            "db",
            env!("CARGO_BIN_EXE_lab-server"),
            &["--bind", "198.18.3.40", "--tcp", "7203", "--lifetime", "3"],
        )
        .unwrap();
    let probe = |source: &str| {
        let out = lab
            .lab
            .output(
                "out",
                &bin,
                &[
                    "probe",
                    "198.18.3.40:7203",
                    "--source",
                    source,
                    "--timeout-ms",
                    "300",
                    "--retries",
                    "0",
                    "--format",
                    "json",
                ],
            )
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        v["results"][0]["observed"].as_str().unwrap().to_string()
    };
    assert_eq!(
        probe(outsider),
        "timeout",
        "an outside address not in the plan"
    );
    assert_eq!(probe("198.18.5.10"), "timeout");
    for host in ["client", "out", "db"] {
        assert_eq!(trace_tables(&lab.lab, host), Vec::<String>::new(), "{host}");
    }
}

/// An agent without CAP_NET_ADMIN cannot trace: the report says so once for
/// its host, and the round is otherwise the same (verdicts, the other
/// host's rule).
#[test]
fn without_cap_net_admin_the_report_says_why_and_the_rest_works() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(&plan, PLAN).unwrap();
    let lab = PlanLab::new(&plan).unwrap();
    let (src, dst) = (lab.addr("src").to_string(), lab.addr("dst").to_string());
    let mut rules = firewall::correct(&lab.plan, "src");
    rules
        .get_mut("dst")
        .unwrap()
        .input_first
        .push(format!("ip saddr {src} tcp dport 7101 drop"));
    rules
        .get_mut("src")
        .unwrap()
        .output
        .push(format!("ip daddr {dst} tcp dport 7103 drop"));
    for (host, r) in &rules {
        lab.firewall(host, r).unwrap();
    }
    let bin = integration::portcall_bin().unwrap();
    let (plan_path, pki) = (
        lab.plan_path().to_string_lossy().into_owned(),
        lab.pki().to_string_lossy().into_owned(),
    );
    let agent = |host: &'static str| {
        vec![
            "agent".to_string(),
            "--plan".into(),
            plan_path.clone(),
            "--host".into(),
            host.into(),
            "--pki".into(),
            pki.clone(),
        ]
    };
    let src_args = agent("src");
    let src_args: Vec<&str> = src_args.iter().map(String::as_str).collect();
    lab.lab
        .spawn_logged("src", &bin, &src_args, &lab.log("src"))
        .unwrap();
    // dst's agent runs without CAP_NET_ADMIN, and so does the nft it runs.
    let mut confined = vec![
        "--bounding-set".to_string(),
        "-net_admin".into(),
        "--".into(),
        bin.to_string_lossy().into_owned(),
    ];
    confined.extend(agent("dst"));
    let confined: Vec<&str> = confined.iter().map(String::as_str).collect();
    lab.lab
        .spawn_logged("dst", "setpriv", &confined, &lab.log("dst"))
        .unwrap();
    for host in ["src", "dst"] {
        lab.lab
            .wait_listening(host, 7400, Duration::from_secs(20))
            .unwrap();
    }
    let run = lab.check("src").unwrap();
    let r = &run.report;
    let trace = |host: &str| {
        r.hosts
            .iter()
            .find(|h| h.name == host)
            .and_then(|h| h.rule_trace.clone())
            .unwrap_or_else(|| panic!("{host}: {:#?}", r.hosts))
    };
    let d = trace("dst");
    assert_eq!(d.state.as_str(), "unavailable");
    assert!(
        d.reason
            .as_deref()
            .is_some_and(|w| w.starts_with("not permitted: rule tracing needs CAP_NET_ADMIN")),
        "{d:?}"
    );
    assert_eq!(trace("src").state.as_str(), "traced");
    // The same verdicts; dst's drop has no rule to name, src's egress does.
    let dropped = path(r, 7101);
    assert_eq!(dropped.verdict, Verdict::Violation);
    assert_eq!(dropped.blame.as_ref().and_then(|b| b.rule.as_ref()), None);
    assert_eq!(path(r, 7104).verdict, Verdict::Ok);
    let egress = path(r, 7103).blame.as_ref().unwrap();
    assert_eq!(egress.at.as_str(), "source");
    assert_eq!(egress.rule.as_ref().map(|r| r.host.as_str()), Some("src"));
    assert_eq!(trace_tables(&lab.lab, "dst"), Vec::<String>::new());
}
