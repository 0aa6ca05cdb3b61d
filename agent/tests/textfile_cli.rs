//! Two plans' `--format prometheus` reports side by side in a real
//! node_exporter's textfile collector, as an operator runs one cron job per
//! plan: every series must carry the `plan` label, or node_exporter drops one
//! plan's series as "collected before with the same name and label values".
//!
//! Needs `prometheus-node-exporter` (Debian package of that name); without it
//! the test prints `skipped: <reason>` and passes, unless
//! `PORTCALL_REQUIRE_LAB=1`. node_exporter listens on a loopback address no
//! other test uses, with only the textfile collector enabled.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{available, portcall, text};

const NODE_EXPORTER: &str = "prometheus-node-exporter";

/// Kills node_exporter when the test ends, even on a failed assertion.
struct Exporter(Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The golden demo report under the plan name `plan`, with real round
/// times (the golden file masks them), rendered by `portcall report
/// --format prometheus` into `dir/<plan>.prom`.
fn textfile(dir: &Path, work: &Path, plan: &str) {
    let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/demo.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden).unwrap()).unwrap();
    unmask(&mut v);
    v["plan"] = plan.into();
    v["started_at"] = "2026-12-07T03:00:00Z".into();
    v["finished_at"] = "2026-12-07T03:00:07Z".into();
    let json = work.join(format!("{plan}.json"));
    std::fs::write(&json, serde_json::to_string(&v).unwrap()).unwrap();
    let prom = dir.join(format!("{plan}.prom"));
    let out = portcall(&[
        "report",
        json.to_str().unwrap(),
        "--format",
        "prometheus",
        "--out",
        prom.to_str().unwrap(),
    ]);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{:?}: {}",
        out.status,
        text(&out.stderr)
    );
}

/// Puts plausible values where the golden file masks what varies per run.
fn unmask(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if x.as_str() == Some("<masked>") {
                    *x = if k.ends_with("_ms") {
                        0.25.into()
                    } else {
                        "2027-01-01T00:00:00Z".into()
                    };
                } else {
                    unmask(x);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(unmask),
        _ => {}
    }
}

/// One bounded HTTP/1.0 GET of `/metrics`.
fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: portcall-test\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

#[test]
fn two_plans_textfiles_do_not_collide_in_node_exporter() {
    let have = Command::new(NODE_EXPORTER)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available(
        (!have).then(|| format!("{NODE_EXPORTER} not runnable (Debian package of that name)")),
    ) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("textfiles");
    std::fs::create_dir(&dir).unwrap();
    textfile(&dir, work.path(), "plan-a");
    textfile(&dir, work.path(), "plan-b");

    // A free port on an address of our own; node_exporter takes it over.
    let ip = Ipv4Addr::new(127, 0, 124, 1);
    let addr = TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap();
    let log = work.path().join("node_exporter.log");
    let _exporter = Exporter(
        Command::new(NODE_EXPORTER)
            .arg(format!("--web.listen-address={addr}"))
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start node_exporter"),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        match scrape(addr) {
            Ok(b) if b.starts_with("HTTP/1.") => break b,
            r => assert!(
                Instant::now() < deadline,
                "node_exporter at {addr} never answered: {r:?}; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !body.contains("collected before") && !log.contains("collected before"),
        "node_exporter rejected a series: {log}\n{body}"
    );
    assert!(
        body.contains("node_textfile_scrape_error 0"),
        "textfile collector failed: {log}\n{body}"
    );
    for plan in ["plan-a", "plan-b"] {
        for metric in [
            "portcall_last_round_timestamp_seconds",
            "portcall_round_duration_seconds",
            "portcall_path_ok",
            "portcall_check_paths",
        ] {
            // node_exporter sorts the labels by name.
            let label = format!("plan=\"{plan}\"");
            assert!(
                body.lines()
                    .any(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&label)),
                "no {metric} with {label} in the scrape; log: {log}\n{body}"
            );
        }
    }
}
