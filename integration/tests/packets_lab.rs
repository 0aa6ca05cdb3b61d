//! What one verified path costs on the wire: a round's probe of a canary
//! port, counted by nftables inside the target's namespace. The nonce
//! exchange takes five packets (SYN; SYN-ACK; the prober's line carrying
//! the handshake's last ACK; the canary's reply carrying its FIN; the
//! prober's reset), where a naive exchange takes nine (a bare ACK after
//! the SYN-ACK, a bare ACK of each line, a FIN of its own).

use std::io::Write;

use integration::{PlanLab, lab_available};
use probe_core::report::Verdict;

const PLAN: &str = r#"
name = "packets-lab"
[defaults]
timeout_ms = 5000
retries = 0
[[hosts]]
name = "a"
address = "198.18.0.20"
[[hosts]]
name = "b"
address = "198.18.0.21"
roles = ["svc"]
[roles.svc]
ports = [{ name = "svc", port = 14310, offset = false }]
[[flows]]
from = "host:a"
to = "host:b"
ports = ["svc"]
"#;

/// Counters of TCP packets into and out of port 14310 on the host.
const COUNTERS: &str = "
table inet count {
  counter into { }
  counter out { }
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 14310 counter name into
  }
  chain output {
    type filter hook output priority 0; policy accept;
    tcp sport 14310 counter name out
  }
}
";

/// The packets a named counter of `table inet count` holds on `host`.
fn packets(lab: &PlanLab, host: &str, counter: &str) -> u64 {
    let out = lab
        .lab
        .output(host, "nft", &["list", "counter", "inet", "count", counter])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in `nft list counter`: {text}"))
}

#[test]
fn a_verified_path_costs_five_packets_not_nine() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("packets-lab.toml");
    std::fs::File::create(&plan)
        .and_then(|mut f| f.write_all(PLAN.as_bytes()))
        .unwrap();
    let lab = PlanLab::new(&plan).unwrap();
    lab.lab.nft("b", COUNTERS).unwrap();
    lab.start_agents().unwrap();
    let run = lab.check("a").unwrap();
    let path = &run.report.paths[0];
    assert_eq!(path.verdict, Verdict::Ok, "{path:?}\n{}", lab.logs());
    assert_eq!(path.attempts, 1, "one attempt expected: {path:?}");
    let (into, out) = (packets(&lab, "b", "into"), packets(&lab, "b", "out"));
    eprintln!("one verified path: {into} packets to the canary, {out} from it");
    // Exactly 3 and 2 when no delayed-ACK timer fires; a busy machine may
    // let one fire on either side (one bare ACK more), never the four
    // packets the naive exchange adds (5 in, 4 out).
    assert!(
        (3..=4).contains(&into) && (2..=3).contains(&out) && into + out <= 6,
        "{into} packets in and {out} out for one nonce exchange (expected 3 and 2)"
    );
}
