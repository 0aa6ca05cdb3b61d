//! Adaptive timing on real paths: a host behind 300 ± 100 ms of `tc netem`
//! delay keeps every open port `open` (a slow path is never cut short), and
//! on a plain LAN a round gives up on dropped paths after a deadline drawn
//! from the round trips it measured, while `[defaults] adaptive = false`
//! waits the whole `timeout_ms`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use integration::{Lab, PlanLab, REQUIRE_LAB_ENV, lab_available, portcall_bin};
use probe_core::probe::Observed;
use probe_core::report::{PathReport, Verdict};
use serde_json::Value;

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");

/// A firewall that drops TCP to `ports` and accepts everything else.
fn drop_rules(ports: &str) -> String {
    format!(
        "
table ip lab {{
  chain input {{
    type filter hook input priority 0; policy accept;
    tcp dport {ports} drop
  }}
}}
"
    )
}

/// Adds `tc netem` delay to `host`'s `eth0` (inside its namespace, so it
/// goes with the lab). `false` (after printing why) when this kernel has no
/// netem, or when tc fails and the lab is not required.
fn netem(lab: &Lab, host: &str, delay: &str, jitter: &str) -> bool {
    let out = lab
        .command(host, "tc")
        .args([
            "qdisc", "add", "dev", "eth0", "root", "netem", "delay", delay, jitter,
        ])
        .output()
        .expect("run tc");
    if out.status.success() {
        return true;
    }
    let why = format!(
        "tc netem unavailable: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    // A kernel built without sch_netem (or unable to load it: no modprobe
    // in the VM) is a missing kernel feature, not a broken lab: skipped with
    // its reason even under PORTCALL_REQUIRE_LAB. Anything else fails.
    let missing = String::from_utf8_lossy(&out.stderr).contains("qdisc kind is unknown");
    if !missing && std::env::var(REQUIRE_LAB_ENV).as_deref() == Ok("1") {
        panic!("{REQUIRE_LAB_ENV}=1 but {why}");
    }
    eprintln!("skipped: {why}");
    false
}

#[test]
fn a_slow_jittery_host_keeps_every_open_port_open_and_drops_stay_timeouts() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new(&["client", "slow"]).expect("build the lab");
    lab.nft("slow", &drop_rules("7200-7204"))
        .expect("load the firewall");
    let slow = lab.host("slow").addr.to_string();
    let ca = tempfile::tempdir().unwrap();
    lab.spawn_ready(
        "slow",
        LAB_SERVER,
        &[
            "--bind",
            &slow,
            "--tcp",
            "7000,7100-7119,7200-7204",
            "--tls",
            "8443",
            "--ca-out",
            ca.path().join("ca.pem").to_str().unwrap(),
            "--name",
            "slow.lab",
            "--lifetime",
            "120",
        ],
    )
    .expect("start the lab server");
    if !netem(&lab, "slow", "300ms", "100ms") {
        return;
    }
    let bin = portcall_bin().expect("the portcall binary");
    let out = lab
        .command("client", &bin)
        .args([
            "probe",
            &format!("{slow}:7000,7100-7119,7200-7204"),
            &format!("{slow}:8443/tls"),
            "--timeout-ms",
            "3000",
            "--retries",
            "1",
            "--format",
            "json",
        ])
        .output()
        .expect("run portcall probe");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    });
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 27);
    let mut slowest = 0.0f64;
    for r in results {
        let port = r["port"].as_u64().unwrap();
        let want = if (7200..=7204).contains(&port) {
            "timeout"
        } else {
            "open"
        };
        assert_eq!(r["observed"], want, "{r}");
        if want == "open" {
            slowest = slowest.max(r["latency_ms"].as_f64().unwrap_or(0.0));
        }
    }
    // The delay was really there: the round trips were hundreds of ms.
    assert!(slowest >= 150.0, "slowest connect {slowest} ms");
}

/// A two-host plan: `c` reaches `s` on three ports `s` serves and three
/// its firewall drops, `timeout_ms` 3000 with one retry.
fn plan_file(dir: &std::path::Path, adaptive: bool) -> PathBuf {
    let text = format!(
        r#"
name = "timing"
[defaults]
timeout_ms = 3000
retries = 1
{}
[[hosts]]
name = "c"
address = "198.18.0.10"
[[hosts]]
name = "s"
address = "198.18.0.11"
roles = ["svc"]
[roles.svc]
ports = [
  {{ name = "a", port = 7000, offset = false }},
  {{ name = "b", port = 7001, offset = false }},
  {{ name = "t", port = 7100, protocol = "tls", offset = false }},
  {{ name = "x", port = 7200, offset = false }},
  {{ name = "y", port = 7201, offset = false }},
  {{ name = "z", port = 7202, offset = false }},
]
[[flows]]
from = "host:c"
to = "host:s"
ports = ["a", "b", "t", "x", "y", "z"]
"#,
        if adaptive { "" } else { "adaptive = false" }
    );
    let path = dir.join(if adaptive {
        "timing.toml"
    } else {
        "timing-fixed.toml"
    });
    std::fs::write(&path, text).unwrap();
    path
}

/// Builds the lab for one plan, drops 7200-7202 on `s`, runs one round from
/// `c`: its paths and the round's wall time.
fn round(plan: &std::path::Path) -> (Vec<PathReport>, Duration) {
    let lab = PlanLab::new(plan).expect("build the lab");
    lab.lab
        .nft("s", &drop_rules("7200-7202"))
        .expect("load the firewall");
    lab.start_agents().expect("start the agents");
    let started = Instant::now();
    let run = lab.check("c").expect("run check");
    let wall = started.elapsed();
    (run.report.paths, wall)
}

/// The deadline a silent path's detail says it waited, in ms.
fn waited_ms(p: &PathReport) -> u64 {
    let rest = p
        .detail
        .split("no answer within ")
        .nth(1)
        .unwrap_or_else(|| panic!("no deadline in {:?}", p.detail));
    rest.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn on_a_lan_dropped_paths_cost_their_round_trip_and_fixed_timeouts_cost_timeout_ms() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();

    let (paths, wall) = round(&plan_file(dir.path(), true));
    assert_eq!(paths.len(), 6);
    let mut longest_rtt = 0.0f64;
    for p in paths.iter().filter(|p| p.port < 7200) {
        assert_eq!(p.observed, Some(Observed::Open), "{p:?}");
        assert_eq!(p.verdict, Verdict::Ok, "{p:?}");
        longest_rtt = longest_rtt.max(p.latency_ms.expect("an open path's round trip"));
    }
    // Per attempt: at most max(10 x the measured round trip, 100 ms).
    let bound = (longest_rtt * 10.0).max(100.0).ceil() as u64 + 1;
    for p in paths.iter().filter(|p| p.port >= 7200) {
        assert_eq!(p.observed, Some(Observed::Timeout), "{p:?}");
        assert_eq!(p.attempts, 2, "{p:?}");
        assert!(p.detail.contains("adaptive"), "{p:?}");
        assert!(
            waited_ms(p) <= bound,
            "{} ms > {bound} ms: {p:?}",
            waited_ms(p)
        );
    }
    // Both attempts of every dropped path, where fixed deadlines need 6 s.
    assert!(
        wall < Duration::from_millis(4500),
        "adaptive round took {wall:?}"
    );

    let (paths, wall) = round(&plan_file(dir.path(), false));
    for p in paths.iter().filter(|p| p.port >= 7200) {
        assert_eq!(p.observed, Some(Observed::Timeout), "{p:?}");
        assert_eq!(waited_ms(p), 3000, "{p:?}");
    }
    for p in paths.iter().filter(|p| p.port < 7200) {
        assert_eq!(p.verdict, Verdict::Ok, "{p:?}");
    }
    assert!(wall >= Duration::from_secs(6), "fixed round took {wall:?}");
}
