//! The target's ICMP rate limit must never turn a reject into a bare
//! `timeout`, nor a drop into a suspected reject the evidence does not
//! support: drops and ICMP rejects on one lab host, with the target's
//! limits at Linux's defaults (a burst of six per peer, then one a second)
//! and with the per-peer limit off (only the host-wide 1000 a second).
//! And UDP timing: a silent port on a host whose ICMP comes back at once
//! waits the host's adaptive deadline, not `timeout_ms`; an echo service
//! is `open` ("echoed").

use integration::{Lab, lab_available, portcall_bin};
use serde_json::Value;

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");

const RULES: &str = "
table inet icmpbudget {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 20000-20299 drop
    tcp dport 21000-21399 reject with icmp type admin-prohibited
    tcp dport 21400-21499 drop
    udp dport 31000-31009 drop
  }
}
";

/// A client and a target behind [`RULES`]; with `per_peer_limit_off`, the
/// target's `net.ipv4.icmp_ratelimit` is 0 (its host-wide limit stays).
/// The target runs a UDP echo service on 7 and nothing on UDP 30000-30019.
fn setup(per_peer_limit_off: bool) -> Option<(Lab, String)> {
    if !lab_available() {
        return None;
    }
    let lab = Lab::new(&["client", "target"]).expect("build the lab");
    lab.nft("target", RULES)
        .expect("load the target's firewall");
    if per_peer_limit_off {
        lab.sysctl("target", "net.ipv4.icmp_ratelimit", "0")
            .expect("turn the per-peer ICMP limit off");
    }
    let target = lab.host("target").addr.to_string();
    lab.spawn_ready(
        "target",
        LAB_SERVER,
        &["--bind", &target, "--udp-echo", "7", "--lifetime", "120"],
    )
    .expect("start the lab server");
    Some((lab, target))
}

/// `portcall probe TARGETS --format json` from the client: its results.
fn probe(lab: &Lab, args: &[String]) -> Vec<Value> {
    let bin = portcall_bin().expect("the portcall binary");
    let out = lab
        .command("client", &bin)
        .arg("probe")
        .args(args)
        .args(["--format", "json"])
        .output()
        .expect("run portcall");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "portcall printed no JSON ({e}): {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    doc["results"].as_array().expect("results").clone()
}

fn flagged(r: &Value) -> bool {
    r["silence"]["possibly_rate_limited"] == true
}

/// Counts per class: (unreachable, flagged timeout, plain timeout, other).
fn classes(
    results: &[Value],
    ports: std::ops::RangeInclusive<u64>,
) -> (usize, usize, usize, Vec<String>) {
    let (mut unreachable, mut flag, mut plain, mut other) = (0, 0, 0, Vec::new());
    for r in results
        .iter()
        .filter(|r| ports.contains(&r["port"].as_u64().unwrap()))
    {
        match (r["observed"].as_str().unwrap(), flagged(r)) {
            ("unreachable", _) => unreachable += 1,
            ("timeout", true) => flag += 1,
            ("timeout", false) => plain += 1,
            _ => other.push(r.to_string()),
        }
    }
    (unreachable, flag, plain, other)
}

/// Linux's default limits: 400 rejects, of which the target answers only
/// six at once and then one a second. Each reject is `unreachable` or a
/// `timeout` flagged as possibly rate-limited (with the flag's words in
/// the detail), never a bare `timeout`; the 300 drops probed before the
/// rejects (while the budget held its tokens) are `timeout`s, plain but
/// for the few whose SYNs left among the first rejects.
#[test]
fn rejects_under_default_icmp_limits_are_rejects_or_flagged_and_earlier_drops_stay_timeouts() {
    let Some((lab, target)) = setup(false) else {
        return;
    };
    let r = probe(
        &lab,
        &[
            format!("{target}:20000-20299,21000-21399"),
            "--timeout-ms".into(),
            "1000".into(),
        ],
    );
    assert_eq!(r.len(), 700);
    let (unreachable, flag, plain, other) = classes(&r, 21000..=21399);
    println!("rejects: {unreachable} unreachable, {flag} flagged, {plain} bare timeout");
    assert!(other.is_empty(), "{other:?}");
    assert_eq!(plain, 0, "a reject reported as a bare timeout");
    assert_eq!(unreachable + flag, 400);
    assert!(unreachable >= 6, "the target's burst of six came back");
    let f = r
        .iter()
        .find(|r| flagged(r))
        .expect("under the default limits most rejects are swallowed");
    assert!(
        f["detail"]
            .as_str()
            .unwrap()
            .contains("possibly a rate-limited reject"),
        "{f}"
    );
    // The drops: each a `timeout`; plain where its SYN left while the
    // budget held a token. The last drops in flight may leave among the
    // first rejects (attempts run on two threads): those few are flagged,
    // truly, as the evidence cannot tell them from swallowed rejects.
    let (unreachable, flag, plain, other) = classes(&r, 20000..=20299);
    println!("drops: {plain} plain timeout, {flag} flagged");
    assert!(other.is_empty() && unreachable == 0, "drops: {other:?}");
    assert_eq!(flag + plain, 300);
    assert!(plain >= 270, "drops: {plain} plain, {flag} flagged");
}

/// The per-peer limit off: the target's host-wide budget still swallows
/// most of a burst, so the rejects are tried again at its pace until each
/// is answered; drops probed after the rejects (while the budget was
/// spent) are tried again with a token and are then plain `timeout`s.
#[test]
fn with_the_per_peer_limit_off_every_reject_is_seen_and_every_drop_is_a_timeout() {
    let Some((lab, target)) = setup(true) else {
        return;
    };
    let r = probe(
        &lab,
        &[
            format!("{target}:21000-21499"),
            "--timeout-ms".into(),
            "1000".into(),
        ],
    );
    assert_eq!(r.len(), 500);
    let (unreachable, flag, plain, other) = classes(&r, 21000..=21399);
    println!("rejects: {unreachable} unreachable, {flag} flagged, {plain} bare timeout");
    assert!(other.is_empty(), "{other:?}");
    assert_eq!((unreachable, flag, plain), (400, 0, 0));
    let (unreachable, flag, plain, other) = classes(&r, 21400..=21499);
    assert_eq!((unreachable, flag, plain), (0, 0, 100), "drops: {other:?}");
}

/// UDP: closed ports answer with ICMP port-unreachable within a
/// millisecond, so the dropped ports of the same host give up after the
/// host's adaptive deadline (typed in `silence`), well below `timeout_ms`;
/// the echo service is `open`, "echoed".
#[test]
fn udp_drops_wait_the_adaptive_deadline_and_an_echo_is_open() {
    let Some((lab, target)) = setup(true) else {
        return;
    };
    let r = probe(
        &lab,
        &[
            format!("{target}:30000-30019/udp"),
            format!("{target}:31000-31009/udp"),
            format!("{target}:7/udp"),
            "--timeout-ms".into(),
            "3000".into(),
        ],
    );
    assert_eq!(r.len(), 31);
    for x in &r[..20] {
        assert_eq!(x["observed"], "refused", "{x}");
    }
    for x in &r[20..30] {
        assert_eq!(x["observed"], "timeout", "{x}");
        let s = &x["silence"];
        assert_eq!(s["adaptive"], true, "{x}");
        assert!(s["waited_ms"].as_u64().unwrap() < 1000, "{x}");
        assert!(!flagged(x), "{x}");
    }
    let echo = &r[30];
    assert_eq!(echo["observed"], "open", "{echo}");
    assert!(
        echo["detail"].as_str().unwrap().starts_with("echoed"),
        "{echo}"
    );
}
