//! `check --out` to a path that cannot be written is refused before the
//! round: exit 2, a message naming the path and what is wrong, and no agent
//! contacted (a full round used to run and then be thrown away).
//!
//! The plan's only agents are on 127.0.125.x, where the test itself listens
//! on the control port: a round would connect there, and the test sees it.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn portcall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcall"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run portcall")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A two-host plan whose control endpoints are `listener`'s port, and the
/// listener on the first host's address: any round connects to it.
fn plan(dir: &Path) -> (std::path::PathBuf, TcpListener) {
    let listener = TcpListener::bind("127.0.125.1:0").expect("bind 127.0.125.1");
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let plan = dir.join("plan.toml");
    std::fs::write(
        &plan,
        format!(
            r#"name = "check-out"

[defaults]
control_port = {port}

[[hosts]]
name = "app"
address = "127.0.125.1"
roles = ["web"]

[[hosts]]
name = "db"
address = "127.0.125.2"
roles = ["db"]

[roles.web]
ports = [{{ name = "http", port = 8080 }}]

[roles.db]
ports = [{{ name = "sql", port = 3306 }}]

[[flows]]
from = "host:app"
to = "host:db"
ports = ["sql"]
"#
        ),
    )
    .unwrap();
    (plan, listener)
}

fn check_to(plan: &Path, out: &Path) -> Output {
    portcall(&[
        "check",
        "--plan",
        plan.to_str().unwrap(),
        "--insecure",
        "--format",
        "json",
        "--out",
        out.to_str().unwrap(),
    ])
}

#[test]
fn check_out_to_a_missing_directory_is_refused_before_the_round() {
    let dir = tempfile::tempdir().unwrap();
    let (plan, listener) = plan(dir.path());
    let missing = dir.path().join("reports/today.json");
    let out = check_to(&plan, &missing);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "--out refused before the round: {}: directory {} does not exist",
            missing.display(),
            dir.path().join("reports").display()
        )),
        "{err}"
    );
    assert!(
        listener.accept().is_err(),
        "an agent was contacted before --out was checked: {err}"
    );
    assert!(!missing.exists());
}

#[test]
fn check_out_to_a_directory_is_refused_before_the_round() {
    let dir = tempfile::tempdir().unwrap();
    let (plan, listener) = plan(dir.path());
    let out = check_to(&plan, dir.path());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "--out refused before the round: {} is a directory",
            dir.path().display()
        )),
        "{err}"
    );
    assert!(listener.accept().is_err(), "an agent was contacted: {err}");
}
