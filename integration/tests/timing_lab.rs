//! Adaptive timing on real paths: a host behind 300 ± 100 ms of `tc netem`
//! delay (or its userspace stand-in where the kernel has no netem) keeps every open port `open` (a slow path is never cut short), and
//! on a plain LAN a round gives up on dropped paths after a deadline drawn
//! from the round trips it measured, while `[defaults] adaptive = false`
//! waits the whole `timeout_ms`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use integration::{Lab, PlanLab, lab_available, portcall_bin};
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

/// Delays the packets between `host` and the lab by `delay_ms` ± `jitter_ms`
/// (uniform): `tc netem` on its `eth0` where the kernel has netem; on a
/// kernel built without it (as this project's CI VM is), the same delay
/// from `scripts/lab/delay_line.py`: eth0's IPv4 ingress is redirected (tc
/// mirred) to a TUN device whose process hands every packet back after the
/// delay. Either way inside `host`'s namespace, gone with the lab.
pub(crate) fn delay(lab: &Lab, host: &str, delay_ms: u32, jitter_ms: u32) {
    let (d, j) = (format!("{delay_ms}ms"), format!("{jitter_ms}ms"));
    let out = lab
        .command(host, "tc")
        .args([
            "qdisc", "add", "dev", "eth0", "root", "netem", "delay", &d, &j,
        ])
        .output()
        .expect("run tc");
    if out.status.success() {
        return;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("qdisc kind is unknown"),
        "tc netem failed: {}",
        err.trim()
    );
    eprintln!("no netem in this kernel: delaying {host}'s inbound packets in userspace");
    let python = integration::find_tool("python3").expect("python3 for the delay line");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/lab/delay_line.py")
        .canonicalize()
        .expect("scripts/lab/delay_line.py");
    lab.spawn_ready(
        host,
        &python,
        &[
            script.to_str().unwrap(),
            "--dev",
            "dly0",
            "--delay-ms",
            &delay_ms.to_string(),
            "--jitter-ms",
            &jitter_ms.to_string(),
            "--lifetime",
            "120",
        ],
    )
    .expect("start the delay line");
    for key in ["all", "default", "eth0", "dly0"] {
        lab.sysctl(host, &format!("net.ipv4.conf.{key}.rp_filter"), "0")
            .expect("rp_filter off");
    }
    for args in [
        &["ip", "link", "set", "dly0", "up"][..],
        &["tc", "qdisc", "add", "dev", "eth0", "ingress"],
        &[
            "tc", "filter", "add", "dev", "eth0", "parent", "ffff:", "protocol", "ip", "u32",
            "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", "dly0",
        ],
    ] {
        let out = lab
            .command(host, args[0])
            .args(&args[1..])
            .output()
            .expect("run the delay setup");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
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
    delay(&lab, "slow", 300, 100);
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
        // The plan's two, and the loss retries a host that answers other
        // ports gets (adaptive deadlines only): all ten, as three open
        // ports are too few trials to bound the loss low.
        assert_eq!(
            p.attempts,
            2 + probe_core::probe::ROUND_LOSS_RETRIES,
            "{p:?}"
        );
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
        assert_eq!(p.attempts, 2, "no loss retries at fixed deadlines: {p:?}");
    }
    for p in paths.iter().filter(|p| p.port < 7200) {
        assert_eq!(p.verdict, Verdict::Ok, "{p:?}");
    }
    assert!(wall >= Duration::from_secs(6), "fixed round took {wall:?}");
}
