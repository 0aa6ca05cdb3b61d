//! `check --ssh` on loopback without sshd: a stand-in `ssh` runs the remote
//! command with a local shell, so the whole round — plan upload, `agent
//! --stdio`, `--push` and its cleanup, a host whose ssh fails — runs
//! through the real binary and the real transport.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portcall")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A stand-in ssh: the destination `denied@…` fails the way ssh does;
/// anything else runs the last argument (the remote command) with `sh -c`.
fn fake_ssh(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("ssh");
    std::fs::write(
        &path,
        r#"#!/bin/sh
for a; do case "$a" in denied@*) echo "debug: trying key" >&2; echo "denied@127.0.0.3: Permission denied (publickey)." >&2; exit 255;; esac; done
for last; do :; done
exec sh -c "$last"
"#,
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn plan(dir: &Path, with_denied: bool) -> PathBuf {
    let port = free_port();
    let mut src = format!(
        r#"name = "ssh-loopback"
[defaults]
timeout_ms = 500
retries = 0
[[hosts]]
name = "a"
address = "127.0.0.1"
[[hosts]]
name = "b"
address = "127.0.0.2"
ssh = "nobody@127.0.0.2:2222"
roles = ["svc"]
[roles.svc]
ports = [{{ name = "svc", port = {port} }}]
[[flows]]
from = "host:a"
to = "host:b"
ports = ["svc"]
"#
    );
    if with_denied {
        src.push_str(
            r#"[[hosts]]
name = "c"
address = "127.0.0.3"
ssh = "denied@127.0.0.3"
[[flows]]
from = "host:c"
to = "host:b"
ports = ["svc"]
"#,
        );
    }
    let path = dir.join("plan.toml");
    std::fs::write(&path, src).unwrap();
    path
}

fn check(dir: &Path, plan: &Path, extra: &[&str]) -> (Output, Value) {
    let out_file = dir.join("report.json");
    let _ = std::fs::remove_file(&out_file);
    let ssh = fake_ssh(dir);
    let out = Command::new(bin())
        .args(["check", "--plan"])
        .arg(plan)
        .args(["--ssh", "--ssh-program"])
        .arg(&ssh)
        .args(["--format", "json", "--out"])
        .arg(&out_file)
        .args(extra)
        .env("TMPDIR", dir.join("remote-tmp"))
        .output()
        .unwrap();
    let report = std::fs::read_to_string(&out_file)
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or_else(|_| panic!("no report: {}", text(&out.stderr)));
    (out, report)
}

#[test]
fn a_round_over_ssh_stdio_measures_the_path_and_pushes_nothing_that_stays() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("remote-tmp")).unwrap();
    let plan = plan(dir.path(), false);

    let (out, report) = check(dir.path(), &plan, &["--remote-path", bin()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{report:#}",
        text(&out.stderr)
    );
    let path = &report["paths"][0];
    assert_eq!(path["verdict"], "ok", "{report:#}");
    assert_eq!(path["observed"], "open", "{report:#}");

    let (out, report) = check(dir.path(), &plan, &["--push"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{report:#}",
        text(&out.stderr)
    );
    assert_eq!(report["paths"][0]["verdict"], "ok", "{report:#}");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("remote-tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "--push left {left:?} behind");
}

#[test]
fn a_host_whose_ssh_fails_is_unreachable_with_the_last_line_and_the_rest_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("remote-tmp")).unwrap();
    let plan = plan(dir.path(), true);
    let (out, report) = check(dir.path(), &plan, &["--remote-path", bin()]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}\n{report:#}",
        text(&out.stderr)
    );
    let by_from = |from: &str| {
        report["paths"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["from"] == from)
            .unwrap()
            .clone()
    };
    assert_eq!(by_from("a")["verdict"], "ok", "{report:#}");
    let c = by_from("c");
    assert_eq!(c["verdict"], "error", "{report:#}");
    let all = report.to_string();
    assert!(
        all.contains("via ssh denied@127.0.0.3: denied@127.0.0.3: Permission denied (publickey)."),
        "{report:#}"
    );
}

#[test]
fn a_missing_remote_binary_is_named_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("remote-tmp")).unwrap();
    let plan = plan(dir.path(), false);
    let (out, report) = check(
        dir.path(),
        &plan,
        &["--remote-path", "/nonexistent/portcall"],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}\n{report:#}",
        text(&out.stderr)
    );
    let all = report.to_string();
    assert!(all.contains("/nonexistent/portcall"), "{report:#}");
    assert!(all.contains("use --push, or --remote-path"), "{report:#}");
}

/// Counts how many stand-in ssh sessions were being set up at once.
fn max_overlap(log: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(log).unwrap();
    let (mut now, mut max, mut starts) = (0usize, 0usize, 0usize);
    for line in text.lines() {
        match line {
            "start" => {
                now += 1;
                starts += 1;
                max = max.max(now);
            }
            "end" => now -= 1,
            other => panic!("odd log line {other:?}"),
        }
    }
    (max, starts)
}

#[test]
fn ssh_sessions_are_set_up_at_most_ssh_parallel_at_a_time() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ssh = dir.path().join("slow-ssh");
    std::fs::write(
        &ssh,
        "#!/bin/sh\necho start >>\"$SSH_LOG\"\nsleep 1\necho end >>\"$SSH_LOG\"\nfor last; do :; done\nexec sh -c \"$last\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let mut src = format!(
        "name = \"fan-out\"\n[roles.svc]\nports = [{{ name = \"svc\", port = {port} }}]\n[[flows]]\nfrom = \"all\"\nto = \"host:h1\"\nports = [\"svc\"]\n"
    );
    for i in 1..=6 {
        src.push_str(&format!(
            "[[hosts]]\nname = \"h{i}\"\naddress = \"127.0.0.{i}\"\n"
        ));
        if i == 1 {
            src.push_str("roles = [\"svc\"]\n");
        }
    }
    let plan = dir.path().join("plan.toml");
    std::fs::write(&plan, src).unwrap();
    let run = |parallel: &str| {
        let log = dir.path().join(format!("log-{parallel}"));
        let out = Command::new(bin())
            .args(["check", "--plan"])
            .arg(&plan)
            .args(["--ssh", "--ssh-program"])
            .arg(&ssh)
            .args(["--remote-path", bin(), "--ssh-parallel", parallel])
            .args(["--format", "json"])
            .env("SSH_LOG", &log)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        max_overlap(&log)
    };
    assert_eq!(run("2"), (2, 6), "--ssh-parallel 2");
    let (max, starts) = run("32");
    assert_eq!(starts, 6);
    assert!(max > 2, "without a tight bound the sessions overlap: {max}");
}

#[test]
fn a_remote_portcall_that_rejects_stdio_is_named_by_its_error_line() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("remote-tmp")).unwrap();
    let old = dir.path().join("old-portcall");
    std::fs::write(
        &old,
        "#!/bin/sh\nprintf \"error: unexpected argument '--stdio' found\\n\\nUsage: portcall agent --plan <PLAN>\\n\\nFor more information, try '--help'.\\n\" >&2\nexit 2\n",
    )
    .unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    let plan = plan(dir.path(), false);
    let (out, report) = check(dir.path(), &plan, &["--remote-path", old.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let all = report.to_string();
    assert!(
        all.contains("error: unexpected argument '--stdio' found (is the remote portcall this version? use --push)"),
        "{report:#}"
    );
}

#[test]
fn a_remote_path_starting_with_a_dash_is_refused_before_ssh_runs() {
    // `--remote-path=-oProxyCommand=…` once reached ssh as an option and
    // ran a local command.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("remote-tmp")).unwrap();
    let plan = plan(dir.path(), false);
    let pwned = dir.path().join("pwned");
    let out = Command::new(bin())
        .args(["check", "--plan"])
        .arg(&plan)
        .args(["--ssh", "--ssh-program"])
        .arg(fake_ssh(dir.path()))
        .arg(format!(
            "--remote-path=-oProxyCommand=touch {}",
            pwned.display()
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--remote-path `-oProxyCommand=touch"),
        "{}",
        text(&out.stderr)
    );
    assert!(!pwned.exists());
}
