//! `portcall probe` on UDP between two lab hosts: a dropped port, ICMP
//! rejects (port-unreachable, admin-prohibited), a port a canary answers,
//! a socket that never answers and a real DNS server (dnsmasq) must each
//! come out as their exact outcome, and silence must never be `open`.

use std::path::PathBuf;
use std::time::Duration;

use integration::{Lab, find_tool, lab_available, portcall_bin};
use serde_json::Value;

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");

/// A UDP socket answering as a portcall canary of `server`.
const CANARY: u16 = 7000;
const DROPPED: u16 = 7001;
const PORT_UNREACHABLE: u16 = 7002;
const ADMIN_PROHIBITED: u16 = 7003;
/// A UDP socket that reads and never answers.
const SILENT: u16 = 7004;
const DNS: u16 = 53;

const RULES: &str = "
table inet lab {
  chain input {
    type filter hook input priority 0; policy accept;
    udp dport 7001 drop
    udp dport 7002 reject with icmp type port-unreachable
    udp dport 7003 reject with icmpx type admin-prohibited
  }
}
";

struct Setup {
    lab: Lab,
    server: String,
    _dir: tempfile::TempDir,
}

/// A client and a server host: on the server, [`RULES`], a canary-like UDP
/// responder on [`CANARY`], a silent socket on [`SILENT`] and dnsmasq on
/// port 53, authoritative for `.` (so that `.` NS is answered from its own
/// data, with no upstream). `None` (after printing why) when the lab or
/// dnsmasq is not available here.
fn setup() -> Option<Setup> {
    if !lab_available() {
        return None;
    }
    let Some(dnsmasq) = find_tool("dnsmasq") else {
        assert!(
            std::env::var(integration::REQUIRE_LAB_ENV).as_deref() != Ok("1"),
            "{}=1 but dnsmasq (Debian dnsmasq-base) is missing",
            integration::REQUIRE_LAB_ENV
        );
        eprintln!("skipped: needs dnsmasq (Debian dnsmasq-base)");
        return None;
    };
    let lab = Lab::new(&["client", "server"]).expect("build the lab");
    lab.nft("server", RULES)
        .expect("load the server's firewall");
    let server = lab.host("server").addr.to_string();
    lab.spawn_ready(
        "server",
        LAB_SERVER,
        &[
            "--bind",
            &server,
            "--name",
            "server",
            "--udp-canary",
            &CANARY.to_string(),
            "--udp-silent",
            &SILENT.to_string(),
            "--lifetime",
            "120",
        ],
    )
    .expect("start the lab server");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("dnsmasq.log");
    // Test-generated configuration only; answers only on the server's lab
    // address.
    let args = integration::dnsmasq_args(&server);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.spawn_logged("server", &dnsmasq, &args, &log)
        .expect("start dnsmasq");
    // dnsmasq listens on TCP 53 too, once its UDP socket is bound.
    if let Err(e) = lab.wait_listening("server", DNS, Duration::from_secs(10)) {
        panic!(
            "dnsmasq did not start: {e}; log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    Some(Setup {
        lab,
        server,
        _dir: dir,
    })
}

/// Runs `portcall probe ARGS` on the client; returns the exit code and
/// standard output.
fn run(s: &Setup, args: &[String]) -> (i32, String) {
    let bin: PathBuf = portcall_bin().expect("the portcall binary");
    let out = s
        .lab
        .command("client", &bin)
        .arg("probe")
        .args(args)
        .output()
        .expect("run portcall");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.code().is_some(),
        "portcall died: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), stdout)
}

fn targets(s: &Setup, ports: &[u16]) -> Vec<String> {
    ports
        .iter()
        .map(|p| format!("{}:{p}/udp", s.server))
        .collect()
}

fn json(s: &Setup, ports: &[u16]) -> (i32, String, Vec<Value>) {
    let mut args = targets(s, ports);
    args.extend(["--timeout-ms", "300", "--retries", "1", "--format", "json"].map(String::from));
    let (code, out) = run(s, &args);
    let doc: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("portcall printed no JSON ({e}): {out}"));
    assert_eq!(doc["schema"], "portcall.probe/v1");
    let results = doc["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), ports.len(), "{out}");
    for r in &results {
        assert_eq!(r["protocol"], "udp", "{r}");
    }
    (code, out, results)
}

/// The closing note's probe: a dropped, a rejected, a canary-held and a
/// real DNS UDP port, in one run, four exact and different results.
#[test]
fn dropped_rejected_canary_and_dns_ports_give_four_exact_outcomes() {
    let Some(s) = setup() else { return };
    let (code, out, r) = json(&s, &[DROPPED, PORT_UNREACHABLE, CANARY, DNS]);
    println!(
        "portcall probe {} --timeout-ms 300 --retries 1 --format json",
        { targets(&s, &[DROPPED, PORT_UNREACHABLE, CANARY, DNS]).join(" ") }
    );
    println!("{out}");
    assert_eq!(code, 1, "not every target is open");

    // Dropped: silence after every attempt, never open, and said so.
    assert_eq!(r[0]["observed"], "timeout", "{}", r[0]);
    assert_eq!(r[0]["attempts"], 2, "{}", r[0]);
    let detail = r[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("UDP cannot be proven without a canary"),
        "{detail}"
    );
    assert!(r[0].get("icmp").is_none() && r[0].get("arrived").is_none());

    // Rejected with ICMP port-unreachable: refused, the ICMP as evidence.
    assert_eq!(r[1]["observed"], "refused", "{}", r[1]);
    assert_eq!(r[1]["attempts"], 1, "{}", r[1]);
    assert_eq!(
        r[1]["icmp"],
        serde_json::json!({"type": "port-unreachable", "code": 3, "from": s.server}),
        "{}",
        r[1]
    );

    // Canary-held: open, arrival proven by the canary of `server`.
    assert_eq!(r[2]["observed"], "open", "{}", r[2]);
    assert_eq!(r[2]["arrived"], 1, "{}", r[2]);
    assert_eq!(
        r[2]["detail"],
        "the portcall canary of server answered (not-this-round): the datagram arrived"
    );

    // The real DNS server answered the `.` NS query from its own zone.
    assert_eq!(r[3]["observed"], "open", "{}", r[3]);
    assert_eq!(
        r[3]["detail"],
        "DNS answered: rcode NOERROR, authoritative, 1 NS record"
    );
    assert!(r[3].get("arrived").is_none(), "no canary: {}", r[3]);

    let outcomes: Vec<(&str, &str)> = r
        .iter()
        .map(|x| {
            (
                x["observed"].as_str().unwrap(),
                x["detail"].as_str().unwrap(),
            )
        })
        .collect();
    for (i, a) in outcomes.iter().enumerate() {
        for b in &outcomes[i + 1..] {
            assert_ne!(a, b, "two targets gave the same result");
        }
    }
}

/// An admin-prohibited reject is `unreachable` naming the host that sent
/// it; a socket that reads and never answers is `timeout` like a drop
/// (UDP silence proves nothing); the table shows the ICMP evidence.
#[test]
fn admin_prohibited_is_unreachable_and_a_silent_socket_is_never_open() {
    let Some(s) = setup() else { return };
    let (_, _, r) = json(&s, &[ADMIN_PROHIBITED, SILENT]);
    assert_eq!(r[0]["observed"], "unreachable", "{}", r[0]);
    assert_eq!(r[0]["attempts"], 1, "{}", r[0]);
    assert_eq!(
        r[0]["icmp"],
        serde_json::json!({"type": "admin-prohibited", "code": 13, "from": s.server}),
        "{}",
        r[0]
    );
    assert_eq!(r[1]["observed"], "timeout", "{}", r[1]);
    assert_eq!(r[1]["attempts"], 2, "{}", r[1]);

    let mut args = targets(&s, &[ADMIN_PROHIBITED, CANARY]);
    args.extend(["--timeout-ms", "300"].map(String::from));
    let (code, table) = run(&s, &args);
    println!("{table}");
    assert_eq!(code, 1);
    let line = |port: u16| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{}:{port}/udp", s.server)))
            .unwrap_or_else(|| panic!("no row for {port}: {table}"))
            .to_string()
    };
    let rejected = line(ADMIN_PROHIBITED);
    assert!(rejected.contains("unreachable"), "{rejected}");
    assert!(
        rejected.contains(&format!("ICMP admin-prohibited from {}", s.server)),
        "{rejected}"
    );
    assert!(line(CANARY).contains(" open "), "{table}");
    assert!(
        table.contains("2 targets: 1 open, 1 unreachable"),
        "{table}"
    );
}
