//! `portcall probe` between two lab hosts with nftables on the target: each
//! firewall behaviour must come out as its exact outcome, and running short
//! of file descriptors must never look like a blocked port.

use std::collections::BTreeMap;

use integration::{Lab, lab_available, portcall_bin};
use serde_json::Value;

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");

/// Ports of the standard lab server: everything listens (so only the
/// firewall can make a port not open) except `NOTHING`.
const OPEN: u16 = 7000;
const DROPPED: u16 = 7001;
const REJECTED: u16 = 7002;
const RESET: u16 = 7003;
const NOTHING: u16 = 7004;
const TLS: u16 = 8443;

const RULES: &str = "
table ip lab {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 7001 drop
    tcp dport 7002 reject with icmp type admin-prohibited
    tcp dport 7003 reject with tcp reset
    tcp dport 7010-7019 reject with icmp type admin-prohibited
    tcp dport 7200-7299 drop
  }
}
";

struct Setup {
    lab: Lab,
    server: String,
    ca: tempfile::TempDir,
}

/// A client and a server host; the server runs listeners on 7000-7003,
/// 7100-7199 and TLS on 8443, behind [`RULES`]. `None` (after printing
/// why) when the lab cannot run here.
fn setup() -> Option<Setup> {
    if !lab_available() {
        return None;
    }
    let lab = Lab::new(&["client", "server"]).expect("build the lab");
    lab.nft("server", RULES)
        .expect("load the server's firewall");
    let server = lab.host("server").addr.to_string();
    let ca = tempfile::tempdir().unwrap();
    let ca_file = ca.path().join("ca.pem");
    lab.spawn_ready(
        "server",
        LAB_SERVER,
        &[
            "--bind",
            &server,
            "--tcp",
            "7000-7003,7100-7199",
            "--tls",
            &TLS.to_string(),
            "--ca-out",
            ca_file.to_str().unwrap(),
            "--name",
            "server.lab",
            "--lifetime",
            "120",
        ],
    )
    .expect("start the lab server");
    Some(Setup { lab, server, ca })
}

/// Runs `portcall probe ARGS --format json` on the client, optionally under
/// a lower open-file limit; returns the exit code and the results.
fn probe(s: &Setup, args: &[String], nofile: Option<u32>) -> (i32, Vec<Value>) {
    let bin = portcall_bin().expect("the portcall binary");
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = s.lab.command("client", "sh");
            c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\"")])
                .arg(&bin);
            c
        }
        None => s.lab.command("client", &bin),
    };
    let out = cmd
        .arg("probe")
        .args(args)
        .args(["--format", "json"])
        .output()
        .expect("run portcall");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("portcall printed no JSON ({e}); stderr: {stderr}"));
    assert_eq!(doc["schema"], "portcall.probe/v1");
    let code = out.status.code().expect("portcall exited normally");
    (code, doc["results"].as_array().unwrap().clone())
}

fn one(s: &Setup, port: u16, suffix: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        format!("{}:{port}{suffix}", s.server),
        "--timeout-ms".to_string(),
        "300".to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let (code, mut results) = probe(s, &args, None);
    assert_eq!(results.len(), 1);
    let r = results.remove(0);
    let want_code = if r["observed"] == "open" { 0 } else { 1 };
    assert_eq!(code, want_code, "{r}");
    r
}

#[test]
fn nft_drop_is_timeout_after_every_retry() {
    let Some(s) = setup() else { return };
    let r = one(&s, DROPPED, "", &["--retries", "1"]);
    assert_eq!(r["observed"], "timeout", "{r}");
    assert_eq!(r["attempts"], 2, "{r}");
}

#[test]
fn nft_reject_admin_prohibited_is_unreachable() {
    let Some(s) = setup() else { return };
    let r = one(&s, REJECTED, "", &[]);
    assert_eq!(r["observed"], "unreachable", "{r}");
    assert_eq!(r["attempts"], 1, "{r}");
    assert!(
        r["detail"].as_str().unwrap().starts_with("EHOSTUNREACH"),
        "{r}"
    );
    // The ICMP error itself, read from the socket's error queue: its type
    // and the host that sent it.
    assert_eq!(
        r["icmp"],
        serde_json::json!({"type": "admin-prohibited", "code": 13, "from": s.server}),
        "{r}"
    );
}

#[test]
fn a_handful_of_rejects_beyond_the_icmp_burst_are_all_unreachable() {
    let Some(s) = setup() else { return };
    // Linux answers a peer with a burst of six ICMP errors, then one per
    // second: four of these ten rejects are silent at first, and only
    // retries spaced a second apart see each of them rejected.
    let args = vec![
        format!("{}:7010-7019", s.server),
        "--retries".to_string(),
        "1".to_string(),
    ];
    let (code, results) = probe(&s, &args, None);
    assert_eq!(code, 1);
    let observed: Vec<&str> = results
        .iter()
        .map(|r| r["observed"].as_str().unwrap())
        .collect();
    assert_eq!(observed, ["unreachable"; 10], "{results:#?}");
    assert!(
        results.iter().any(|r| r["attempts"] == 2),
        "some reject should only have shown on its retry: {results:#?}"
    );
}

#[test]
fn nft_reject_with_tcp_reset_is_refused() {
    let Some(s) = setup() else { return };
    let r = one(&s, RESET, "", &[]);
    assert_eq!(r["observed"], "refused", "{r}");
    assert_eq!(r["attempts"], 1, "{r}");
}

#[test]
fn nothing_listening_is_refused() {
    let Some(s) = setup() else { return };
    let r = one(&s, NOTHING, "", &[]);
    assert_eq!(r["observed"], "refused", "{r}");
}

#[test]
fn listening_port_is_open() {
    let Some(s) = setup() else { return };
    let r = one(&s, OPEN, "", &[]);
    assert_eq!(r["observed"], "open", "{r}");
    assert_eq!(r["address"], s.server);
    assert!(r.get("certificate").is_none(), "{r}");
}

#[test]
fn tls_server_is_open_with_certificate_facts() {
    let Some(s) = setup() else { return };
    let ca = s.ca.path().join("ca.pem");
    let r = one(&s, TLS, "/tls", &["--ca", ca.to_str().unwrap(), "--verify"]);
    assert_eq!(r["observed"], "open", "{r}");
    let c = &r["certificate"];
    assert_eq!(c["subject"], "CN=server.lab", "{r}");
    assert_eq!(c["issuer"], "CN=portcall lab ca", "{r}");
    assert_eq!(c["sans"][0], "DNS:server.lab", "{r}");
    assert_eq!(c["sans"][1], format!("IP:{}", s.server), "{r}");
    assert_eq!(c["verified"], true, "{r}");
    assert!(c["not_after"].as_str().unwrap().ends_with('Z'), "{r}");

    // Against the system store the lab's private CA does not verify: still
    // open (facts recorded), and a tls-error only under --verify.
    let r = one(&s, TLS, "/tls", &[]);
    assert_eq!(r["observed"], "open", "{r}");
    assert_eq!(r["certificate"]["verified"], false, "{r}");
    let r = one(&s, TLS, "/tls", &["--verify"]);
    assert_eq!(r["observed"], "tls-error", "{r}");
}

#[test]
fn plain_listener_probed_as_tls_is_tls_error() {
    let Some(s) = setup() else { return };
    let r = one(&s, OPEN, "/tls", &[]);
    assert_eq!(r["observed"], "tls-error", "{r}");
    assert!(!r["detail"].as_str().unwrap().is_empty(), "{r}");
}

#[test]
fn sweep_under_a_low_open_file_limit_reports_nothing_blocked_because_of_it() {
    let Some(s) = setup() else { return };
    // 100 open (7100-7199), 100 dropped (7200-7299), 200 closed
    // (7300-7499), with far more concurrency than 40 descriptors allow.
    let args: Vec<String> = [
        &format!("{}:7100-7499", s.server),
        "--concurrency",
        "400",
        "--timeout-ms",
        "300",
        "--retries",
        "0",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let (code, results) = probe(&s, &args, Some(40));
    assert_eq!(code, 1);
    assert_eq!(results.len(), 400);
    let mut wrong = BTreeMap::new();
    for r in &results {
        let port = r["port"].as_u64().unwrap();
        let want = match port {
            7100..=7199 => "open",
            7200..=7299 => "timeout",
            _ => "refused",
        };
        if r["observed"] != want {
            wrong.insert(port, r.to_string());
        }
    }
    assert!(wrong.is_empty(), "{} wrong: {wrong:#?}", wrong.len());
}
