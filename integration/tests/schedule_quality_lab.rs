//! Schedule mode's loss per direction with real agents at both ends: the
//! source's agent (`agent --every 10s`, the plan's `[defaults] samples =
//! 150`) samples a live TCP service on the target, and the target's own
//! schedule-mode agent counts the sample SYNs that arrived
//! (`schedule::arrivals`), exporting `portcall_path_samples_arrived_total`
//! under the path's labels beside the source's sent and answered counters.
//!
//! The target's firewall drops 10% of the sample SYNs on input and 10% of
//! its SYN-ACKs to them on output (`numgen random`, the SYN-ACKs matched by
//! a `ct mark` set on their SYN), counted by nft counters; its
//! `tcp_synack_retries` is 0 so that a dropped SYN-ACK is not sent again.
//! After 4 rounds the source's samples are cut off on its own output (in
//! the idle gap after a round, so its counters are final), and the three
//! counters must give the truth: answered = SYN-ACKs past the drop
//! exactly, arrived = SYNs past the drop (the source starts once the
//! target's table exists), so forward loss `1 - arrived/sent` and return
//! loss `1 - answered/arrived` within 1.5 points of the counters' figures.
//! The target's exposition passes
//! `promtool check metrics`.
//!
//! A UDP path to a live DNS server (dnsmasq) on the target is sampled too:
//! up to 150 queries a round, all answered, and no arrived series (the target
//! cannot tell a sample query from any other). About 45 s.

use std::time::{Duration, Instant};

use integration::{Lab, lab_available, portcall_bin};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
const PORT: u16 = 15601;
const ROUNDS: u64 = 4;

fn plan(src: &str, dst: &str) -> String {
    format!(
        r#"name = "sched-quality"
[defaults]
timeout_ms = 800
retries = 0
samples = 150
[[hosts]]
name = "qsrc"
address = "{src}"
[[hosts]]
name = "qdst"
address = "{dst}"
roles = ["svc"]
[roles.svc]
ports = [
  {{ name = "svc", port = {PORT}, offset = false }},
  {{ name = "dns", port = 53, protocol = "udp", offset = false }},
]
[[flows]]
from = "host:qsrc"
to = "host:qdst"
ports = ["svc", "dns"]
"#
    )
}

/// A sample SYN of schedule mode (its MSS is the mark).
const SYN: &str = "tcp flags & (fin|syn|rst|ack) == syn tcp option maxseg size 1213";

fn target_rules(src: &str) -> String {
    format!(
        "
table inet sqloss {{
  counter seen_in {{}}
  counter dropped_in {{}}
  counter seen_out {{}}
  counter dropped_out {{}}
  counter dns_in {{}}
  chain input {{
    type filter hook input priority 0; policy accept;
    ip saddr {src} udp dport 53 counter name \"dns_in\"
    ip saddr {src} tcp dport {PORT} {SYN} counter name \"seen_in\" ct mark set 0x1213
    ip saddr {src} tcp dport {PORT} {SYN} numgen random mod 100 < 10 counter name \"dropped_in\" drop
  }}
  chain output {{
    type filter hook output priority 0; policy accept;
    ip daddr {src} tcp sport {PORT} tcp flags & (fin|syn|rst|ack) == syn|ack ct mark 0x1213 counter name \"seen_out\"
    ip daddr {src} tcp sport {PORT} tcp flags & (fin|syn|rst|ack) == syn|ack ct mark 0x1213 numgen random mod 100 < 10 counter name \"dropped_out\" drop
  }}
}}
"
    )
}

/// Cuts the source's samples off on its own output.
const CUT: &str = "
table inet sqcut {
  chain output {
    type filter hook output priority -10; policy accept;
    tcp flags & (fin|syn|rst|ack) == syn tcp option maxseg size 1213 drop
    udp dport 53 drop
  }
}
";

/// `/metrics` of the agent in `host`, fetched from inside its namespace.
fn scrape(lab: &Lab, host: &str) -> Option<String> {
    let script = "exec 3<>/dev/tcp/127.0.0.1/9741 && \
                  printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 5 cat <&3";
    let out = lab.output(host, "bash", &["-c", script]).ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The series `name{labels}` of the TCP path (or the UDP one) and its
/// value.
fn series(metrics: &str, name: &str, udp: bool) -> Option<(String, u64)> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix('{')?;
        let (labels, v) = rest.rsplit_once("} ")?;
        (labels.contains("protocol=\"udp\"") == udp).then_some(())?;
        Some((labels.to_string(), v.parse().ok()?))
    })
}

fn rounds(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("portcall_rounds_total{plan=\"sched-quality\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn counter(lab: &Lab, host: &str, name: &str) -> u64 {
    lab.nft_counter(host, "sqloss", name).expect("nft counter")
}

/// Polls `host`'s `/metrics` until `until` holds (at most `within`).
fn wait_for(lab: &Lab, host: &str, within: Duration, until: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(m) = scrape(lab, host).filter(|m| until(m)) {
            return m;
        }
        assert!(Instant::now() < deadline, "{host}: not reached in time");
        std::thread::sleep(Duration::from_millis(40));
    }
}

fn spawn_agent(lab: &Lab, host: &str, plan: &std::path::Path, every: &str, log: &std::path::Path) {
    let bin = portcall_bin().expect("the portcall binary");
    lab.spawn_logged(
        host,
        "env",
        &[
            "RUST_LOG=info",
            bin.to_str().unwrap(),
            "agent",
            "--plan",
            plan.to_str().unwrap(),
            "--host",
            host,
            "--every",
            every,
            "--metrics",
            "127.0.0.1:9741",
        ],
        log,
    )
    .expect("start a schedule-mode agent");
}

#[test]
fn the_target_agent_counts_arrivals_so_loss_is_known_per_direction() {
    if !lab_available() {
        return;
    }
    let lab = Lab::with_hosts(&[
        ("qsrc".into(), "198.18.0.150".parse().unwrap()),
        ("qdst".into(), "198.18.0.151".parse().unwrap()),
    ])
    .expect("build the lab");
    let (src, dst) = ("198.18.0.150", "198.18.0.151");
    let dir = tempfile::tempdir().unwrap();
    lab.spawn_ready(
        "qdst",
        LAB_SERVER,
        &[
            "--bind",
            dst,
            "--tcp",
            &PORT.to_string(),
            "--lifetime",
            "120",
        ],
    )
    .expect("start the lab server");
    let dnsmasq = integration::find_tool("dnsmasq").expect("dnsmasq (Debian dnsmasq-base)");
    let args = integration::dnsmasq_args(dst);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.spawn_logged("qdst", dnsmasq, &args, &dir.path().join("dnsmasq.log"))
        .expect("start dnsmasq");
    lab.wait_listening("qdst", 53, Duration::from_secs(10))
        .expect("dnsmasq listening");
    lab.sysctl("qdst", "net.ipv4.tcp_synack_retries", "0")
        .expect("sysctl");
    lab.nft("qdst", &target_rules(src)).expect("the loss rules");
    let plan_path = dir.path().join("sched-quality.toml");
    std::fs::write(&plan_path, plan(src, dst)).unwrap();
    let (src_log, dst_log) = (dir.path().join("src.log"), dir.path().join("dst.log"));
    let tables = |host: &str| {
        let out = lab.output(host, "nft", &["list", "tables"]).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    spawn_agent(&lab, "qdst", &plan_path, "1s", &dst_log);
    // The target counts from its first round on (the table is made before
    // the round's probes); the source starts once it does, so that both
    // counters start together.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !tables("qdst").contains("portcall_arrivals_") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        tables("qdst").contains("portcall_arrivals_"),
        "the target's agent made no arrivals table:\n{}",
        std::fs::read_to_string(&dst_log).unwrap_or_default()
    );
    spawn_agent(&lab, "qsrc", &plan_path, "10s", &src_log);
    let logs = || {
        format!(
            "source log:\n{}\ntarget log:\n{}",
            std::fs::read_to_string(&src_log).unwrap_or_default(),
            std::fs::read_to_string(&dst_log).unwrap_or_default()
        )
    };

    // Round ROUNDS has just been published: the next one is seconds away.
    let m = wait_for(&lab, "qsrc", Duration::from_secs(10 * ROUNDS + 30), |m| {
        rounds(m) >= ROUNDS
    });
    lab.nft("qsrc", CUT).expect("cut the samples off");
    assert_eq!(rounds(&m), ROUNDS, "{}", logs());
    let (labels, sent) = series(&m, "portcall_path_samples_sent_total", false).expect("sent");
    let (_, answered) =
        series(&m, "portcall_path_samples_answered_total", false).expect("answered");
    let (_, dns_sent) = series(&m, "portcall_path_samples_sent_total", true).expect("dns sent");
    let (_, dns_answered) =
        series(&m, "portcall_path_samples_answered_total", true).expect("dns answered");
    let (_, dns_rtts) =
        series(&m, "portcall_path_rtt_seconds_count", true).expect("dns round trips");

    // Two of the target's rounds later its count is final too.
    // (A scrape that failed must not count as round 0: the target's
    // exposition of then could predate the source's last samples.)
    let first = rounds(&wait_for(&lab, "qdst", Duration::from_secs(10), |_| true));
    let t = wait_for(&lab, "qdst", Duration::from_secs(10), |m| {
        rounds(m) >= first + 2
    });
    let (arrived_labels, arrived) = series(&t, "portcall_path_samples_arrived_total", false)
        .unwrap_or_else(|| panic!("no arrived series:\n{t}\n{}", logs()));
    let (seen_in, dropped_in) = (
        counter(&lab, "qdst", "seen_in"),
        counter(&lab, "qdst", "dropped_in"),
    );
    let (seen_out, dropped_out) = (
        counter(&lab, "qdst", "seen_out"),
        counter(&lab, "qdst", "dropped_out"),
    );
    let pct = |lost: u64, of: u64| lost as f64 * 100.0 / of as f64;
    let fwd = 100.0 - pct(arrived, sent);
    let ret = 100.0 - pct(answered, arrived);
    let (truth_fwd, truth_ret) = (pct(dropped_in, seen_in), pct(dropped_out, seen_out));
    let line = format!(
        "schedule mode, 10% each way: sent {sent} arrived {arrived} answered {answered}: \
         forward {fwd:.2}% (nft {truth_fwd:.2}%, {dropped_in} of {seen_in}) return {ret:.2}% \
         (nft {truth_ret:.2}%, {dropped_out} of {seen_out} SYN-ACKs)"
    );
    eprintln!("{line}");
    assert_eq!(arrived_labels, labels, "one path, one label set: {line}");
    assert_eq!(
        seen_in, sent,
        "every sample SYN reached the firewall: {line}"
    );
    // The target's count is the kernel's set: every SYN past the drop
    // (3 runs in 21 were 5 to 12 SYNs short while the target's table was
    // made after its first round, behind the source's first samples). A
    // mismatch prints the target's ruleset, to tell the set's count from
    // the agent's read.
    let passed = seen_in - dropped_in;
    if arrived != passed {
        // Which count is short: the kernel's set, or the agent's read?
        let sets = lab.output("qdst", "nft", &["list", "ruleset"]).unwrap();
        eprintln!(
            "arrived {arrived} != {passed} past the drop; the target's ruleset now:\n{}",
            String::from_utf8_lossy(&sets.stdout)
        );
    }
    assert!(
        pct(arrived.abs_diff(passed), sent) <= 1.5,
        "arrived {arrived} vs {passed} past the drop: {line}"
    );
    assert_eq!(seen_out, passed, "one SYN-ACK per SYN: {line}");
    assert_eq!(answered, seen_out - dropped_out, "{line}");
    assert!((fwd - truth_fwd).abs() <= 1.5, "{line}");
    assert!((ret - truth_ret).abs() <= 1.5, "{line}");
    assert_eq!(sent, 150 * ROUNDS, "every sample sent: {line}");
    assert!((2.0..=20.0).contains(&truth_fwd), "{line}");
    assert!((2.0..=20.0).contains(&truth_ret), "{line}");
    crate::flaps_lab::promtool_check_metrics(&t);
    crate::flaps_lab::promtool_check_metrics(&m);

    // The DNS path: up to 150 queries a round after its probe's (after the
    // TCP path's samples, within the round's sampling time), every one
    // answered; the target cannot tell them from other queries, so no
    // arrived series.
    let dns_in = counter(&lab, "qdst", "dns_in");
    eprintln!(
        "schedule mode, DNS: sent {dns_sent} answered {dns_answered} round trips {dns_rtts}; \
         queries the target's firewall saw {dns_in} ({ROUNDS} of them probes)"
    );
    // Both paths share the target address's sampling time (150 samples
    // each at 10 ms, plus the answers' waits): the DNS path, sampled after
    // the TCP one, gets most of its share.
    assert!((100 * ROUNDS..=150 * ROUNDS).contains(&dns_sent), "{m}");
    assert_eq!((dns_answered, dns_rtts), (dns_sent, dns_sent), "{m}");
    assert_eq!(dns_in, dns_sent + ROUNDS, "one probe query a round");
    assert!(
        series(&t, "portcall_path_samples_arrived_total", true).is_none(),
        "{t}"
    );
    // The source's agent holds no table (no path samples into it); the
    // target's holds one, deleted when it stops.
    assert!(
        !tables("qsrc").contains("portcall_arrivals_"),
        "{}",
        tables("qsrc")
    );
    // A killed agent's table (a pid that runs no process) is deleted by
    // `agent --cleanup`, the running agent's is not.
    let dead = (900_000u32..)
        .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        .unwrap();
    lab.nft(
        "qdst",
        &format!("table inet portcall_arrivals_{dead} {{}}\n"),
    )
    .expect("a stale table");
    let bin = portcall_bin().expect("the portcall binary");
    let out = lab.output("qdst", &bin, &["agent", "--cleanup"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let listed = tables("qdst");
    assert!(
        !listed.contains(&format!("portcall_arrivals_{dead}"))
            && listed.contains("portcall_arrivals_"),
        "{listed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The table is named by the target agent's pid: SIGTERM it (by that
    // pid, an agent this test started) and the table goes with it.
    let pid = listed
        .split("portcall_arrivals_")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no arrivals table on the target: {listed}"))
        .to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(term.success(), "kill -TERM {pid}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while tables("qdst").contains("portcall_arrivals_") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !tables("qdst").contains("portcall_arrivals_"),
        "the target's table outlived its agent: {}",
        tables("qdst")
    );
}
