//! `portcall probe` as a user runs it, on loopback: exit codes, JSON and
//! table output, and bad input named in the message. Also makes
//! `cargo test --workspace` build the `portcall` binary the lab tests run.

use std::net::TcpListener;
use std::process::{Command, Output};

fn portcall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcall"))
        .arg("probe")
        .args(args)
        .output()
        .expect("run portcall")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn all_open_exits_0_and_json_has_the_v1_shape() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let out = portcall(&[&format!("127.0.0.1:{port}"), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "portcall.probe/v1");
    let r = &v["results"][0];
    assert_eq!(r["target"], format!("127.0.0.1:{port}"));
    assert_eq!(r["address"], "127.0.0.1");
    assert_eq!(r["port"], port);
    assert_eq!(r["protocol"], "tcp");
    assert_eq!(r["observed"], "open");
    assert_eq!(r["attempts"], 1);
    assert!(r["latency_ms"].is_number());
    assert!(
        out.stderr.is_empty(),
        "no progress bar when not on a terminal"
    );
}

#[test]
fn any_target_not_open_exits_1_and_the_table_says_why() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = l.local_addr().unwrap().port();
    let closed = free_port();
    let out = portcall(&[&format!("127.0.0.1:{open},{closed}")]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("127.0.0.1:{closed}")), "{text}");
    assert!(text.contains("ECONNREFUSED"), "{text}");
    assert!(text.ends_with("2 targets: 1 open, 1 refused\n"), "{text}");
}

#[test]
fn bad_input_exits_2_naming_the_target() {
    for (args, want) in [
        (
            vec!["db1:99999"],
            "target \"db1:99999\": port 99999 is above 65535",
        ),
        (
            vec!["::1:443"],
            "target \"::1:443\": an IPv6 address needs brackets",
        ),
        (vec!["db1"], "target \"db1\": expected HOST:PORT"),
        (vec![], "no targets given"),
        (
            vec!["127.0.0.1:1", "--ca", "/nonexistent/ca.pem"],
            "read CA file /nonexistent/ca.pem",
        ),
    ] {
        let out = portcall(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with("portcall: "), "{err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn target_files_are_read_and_bad_lines_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("targets.txt");
    let port = free_port();
    std::fs::write(&good, format!("# closed\n127.0.0.1:{port}\n")).unwrap();
    let out = portcall(&["-f", good.to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["results"][0]["observed"], "refused");

    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "127.0.0.1:80\n127.0.0.1:http\n").unwrap();
    let out = portcall(&["-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("line 2: target \"127.0.0.1:http\""), "{err}");
}

/// UDP targets on loopback: a socket answering as a canary is open with
/// `arrived`, a closed port is refused with the ICMP, the table shows both;
/// bad UDP input exits 2 naming it.
#[test]
fn udp_targets_give_exact_outcomes_and_bad_udp_input_exits_2() {
    let canary = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = canary.local_addr().unwrap().port();
    let answering = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        for _ in 0..2 {
            let (_, from) = canary.recv_from(&mut buf).unwrap();
            canary
                .send_to(b"PORTCALL-ERR lo not-this-round\n", from)
                .unwrap();
        }
    });
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let spec = format!("127.0.0.1:{port},{closed}/udp");
    let out = portcall(&[&spec, "--format", "json", "--timeout-ms", "500"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &v["results"];
    assert_eq!(r[0]["target"], format!("127.0.0.1:{port}/udp"));
    assert_eq!(r[0]["protocol"], "udp");
    assert_eq!(r[0]["observed"], "open", "{}", r[0]);
    assert_eq!(r[0]["arrived"], 1);
    assert_eq!(r[1]["observed"], "refused", "{}", r[1]);
    assert_eq!(r[1]["icmp"]["type"], "port-unreachable");
    assert!(r[1].get("arrived").is_none());

    let out = portcall(&[&spec, "--timeout-ms", "500"]);
    answering.join().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("the portcall canary of lo answered (not-this-round)"),
        "{text}"
    );
    assert!(
        text.contains("no UDP socket on the port (ICMP port-unreachable from 127.0.0.1)"),
        "{text}"
    );
    assert!(text.ends_with("2 targets: 1 open, 1 refused\n"), "{text}");

    let out = portcall(&["127.0.0.1:53/sctp"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("127.0.0.1:53/sctp") && err.contains("tcp, tls or udp"),
        "{err}"
    );
    let out = portcall(&["127.0.0.1:161/udp", "--snmp-community", ""]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--snmp-community"), "{err}");
}
