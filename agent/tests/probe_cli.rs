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
