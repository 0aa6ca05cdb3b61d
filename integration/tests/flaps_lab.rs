//! Issue 27's flap must-show with real rounds: a schedule-mode agent
//! (`portcall agent --every 1s`, the default `--flap-changes 3
//! --flap-window 20`) in one lab host probes two ports of another; the test
//! drops one of them with an nftables rule in the target's namespace for
//! exactly one round in ten (rounds 10, 20 and 30), watching
//! `portcall_rounds_total` to know which round is next. The dropped path is
//! flagged `portcall_path_flapping 1` at round 20 (within three windows of
//! 20 rounds), its `portcall_path_flaps_total` counts two changes per
//! dropped round, the untouched path counts none, and the agent's log has
//! one "is flapping" line and no line per round after it. The exposition
//! passes `promtool check metrics`.
//!
//! The metrics endpoint listens on the agent host's own loopback and is
//! scraped from inside that namespace (bash's `/dev/tcp`), so nothing in
//! the root namespace touches the lab. About 35 s of wall time: rounds run
//! at most once a second.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration::{Lab, lab_available, portcall_bin};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");

/// The port the test drops one round in ten.
const FLAPPING: u16 = 14801;
/// The port nothing touches.
const STEADY: u16 = 14802;
/// Rounds whose probe of [`FLAPPING`] is dropped.
const DROPPED: [u64; 3] = [10, 20, 30];
/// The last round the test waits for.
const LAST: u64 = 31;

const DROP_RULE: &str = "
table inet flap {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 14801 drop
  }
}
";

fn plan(db: &str) -> String {
    format!(
        r#"name = "flaps-lab"
[defaults]
timeout_ms = 300
retries = 0
[[hosts]]
name = "app"
address = "198.18.0.10"
[[hosts]]
name = "db"
address = "{db}"
roles = ["db"]
[roles.db]
ports = [
  {{ name = "flappy", port = {FLAPPING}, offset = false }},
  {{ name = "steady", port = {STEADY}, offset = false }},
]
[[flows]]
from = "host:app"
to = "host:db"
ports = ["flappy", "steady"]
"#
    )
}

/// `/metrics` of the agent in `app`, fetched from inside its namespace.
fn scrape(lab: &Lab) -> Option<String> {
    let script = "exec 3<>/dev/tcp/127.0.0.1/9740 && \
                  printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 5 cat <&3";
    let out = lab.output("app", "bash", &["-c", script]).ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The value of the series `name{...labels of port...}`.
fn value(metrics: &str, name: &str, port: u16) -> Option<String> {
    let needle = format!("port=\"{port}\",");
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&needle))
        .find_map(|l| l.rsplit_once(' ').map(|(_, v)| v.to_string()))
}

fn rounds(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("portcall_rounds_total{plan=\"flaps-lab\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn promtool_check_metrics(text: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var("PORTCALL_REQUIRE_LAB").as_deref() != Ok("1"),
            "PORTCALL_REQUIRE_LAB=1 but promtool is not runnable (Debian package prometheus)"
        );
        eprintln!("promtool check metrics skipped: promtool not runnable");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_path_dropped_one_round_in_ten_is_flagged_as_flapping_and_logged_once() {
    if !lab_available() {
        return;
    }
    let bin = portcall_bin().expect("the portcall binary");
    let lab = Lab::new(&["app", "db"]).expect("build the lab");
    let db = lab.host("db").addr.to_string();
    lab.spawn_ready(
        "db",
        LAB_SERVER,
        &[
            "--bind",
            &db,
            "--tcp",
            &format!("{FLAPPING},{STEADY}"),
            "--lifetime",
            "120",
        ],
    )
    .expect("start the lab server");
    let dir = tempfile::tempdir().unwrap();
    let plan_path = dir.path().join("flaps-lab.toml");
    std::fs::write(&plan_path, plan(&db)).unwrap();
    let log = dir.path().join("agent.log");
    lab.spawn_logged(
        "app",
        "env",
        &[
            "RUST_LOG=info",
            bin.to_str().unwrap(),
            "agent",
            "--plan",
            plan_path.to_str().unwrap(),
            "--host",
            "app",
            "--every",
            "1s",
            "--metrics",
            "127.0.0.1:9740",
        ],
        &log,
    )
    .expect("start the schedule-mode agent");

    // Drive the drops from the rounds the agent reports: the rule goes in
    // once round r - 1 has finished and out once round r has, for each
    // dropped round r (rounds start about a second apart, and a round here
    // takes at most the 300 ms timeout).
    let deadline = Instant::now() + Duration::from_secs(LAST + 30);
    let mut dropping = false;
    let mut flagged_at = None;
    let mut last = String::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "round {LAST} not reached in time; last /metrics:\n{last}\nlog:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let Some(m) = scrape(&lab) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let done = rounds(&m);
        if flagged_at.is_none()
            && value(&m, "portcall_path_flapping", FLAPPING).as_deref() == Some("1")
        {
            flagged_at = Some(done);
        }
        let want_drop = DROPPED.contains(&(done + 1));
        if want_drop && !dropping {
            lab.nft("db", DROP_RULE).expect("add the drop rule");
            dropping = true;
        } else if !want_drop && dropping {
            let out = lab
                .output("db", "nft", &["delete", "table", "inet", "flap"])
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            dropping = false;
        }
        last = m;
        if done >= LAST {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let context = format!("last /metrics:\n{last}\nagent log:\n{log_text}");

    // Changes at rounds 10, 11 and 20: flagged at round 20, within the
    // must-show's three windows of 20 rounds.
    assert_eq!(flagged_at, Some(20), "{context}");
    assert_eq!(
        value(&last, "portcall_path_flaps_total", FLAPPING).as_deref(),
        Some("6"),
        "two changes for each of 3 dropped rounds; {context}"
    );
    assert_eq!(
        value(&last, "portcall_path_flapping", FLAPPING).as_deref(),
        Some("1"),
        "{context}"
    );
    for name in ["portcall_path_flaps_total", "portcall_path_flapping"] {
        assert_eq!(
            value(&last, name, STEADY).as_deref(),
            Some("0"),
            "{context}"
        );
    }
    // Two series per path for flapping, whatever the number of rounds.
    for name in ["portcall_path_flaps_total{", "portcall_path_flapping{"] {
        assert_eq!(
            last.lines().filter(|l| l.starts_with(name)).count(),
            2,
            "{context}"
        );
    }

    // One line when it started flapping; before it, the first drop's two
    // changes as ordinary lines; after it, nothing for this path although
    // its state changed four more times.
    let about = |l: &&str| l.contains(&format!(":{FLAPPING} (flappy)"));
    let lines: Vec<&str> = log_text.lines().filter(about).collect();
    let flapping: Vec<&&str> = lines.iter().filter(|l| l.contains("is flapping")).collect();
    assert_eq!(flapping.len(), 1, "{context}");
    eprintln!("the agent's line: {}", flapping[0]);
    assert!(flapping[0].contains(" WARN "), "{context}");
    assert!(
        flapping[0].contains("3 state changes within the last 20 rounds (k = 3, W = 20)")
            && flapping[0].contains("oldest first: .........x.........x "),
        "{context}"
    );
    assert_eq!(lines.len(), 3, "violation, ok again, flapping: {context}");
    assert!(
        lines[0].contains("violation") && lines[1].contains("ok again"),
        "{context}"
    );
    assert!(
        !log_text.contains(&format!(":{STEADY} (steady)")),
        "{context}"
    );

    promtool_check_metrics(&last);
}
