//! `--out FILE` on `portcall diff` and `portcall suggest`: the file holds
//! exactly what standard output would have, is written through the atomic
//! writer (an existing file keeps its mode, a directory is refused with
//! exit 2), and the exit status is the command's own.
//!
//! The reports are the golden demo report (`golden/demo.json`) with its
//! masked timings filled in, and a copy with one must-be-open path made a
//! silent timeout: no demo is run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn portcall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcall"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run portcall")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The golden demo report with real values where it masks timings.
fn golden() -> Value {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/demo.json");
    let text = std::fs::read_to_string(&file).expect("read golden demo report");
    let mut r: Value = serde_json::from_str(&text).expect("golden report is JSON");
    r["started_at"] = "2026-01-01T00:00:00Z".into();
    r["finished_at"] = "2026-01-01T00:00:02Z".into();
    for p in r["paths"].as_array_mut().expect("paths") {
        for key in ["latency_ms", "tls_ms"] {
            if p[key].is_string() {
                p[key] = 0.5.into();
            }
        }
    }
    r
}

/// Writes the old report (the golden one) and a new one in which the first
/// must-be-open path timed out: a regression for `diff`, a violation with
/// a rule for `suggest`.
fn reports(dir: &Path) -> (PathBuf, PathBuf) {
    let old = golden();
    let mut new = old.clone();
    let path = new["paths"]
        .as_array_mut()
        .expect("paths")
        .iter_mut()
        .find(|p| p["expect"] == "open" && p["verdict"] == "ok")
        .expect("a must-be-open path that is ok");
    path["observed"] = "timeout".into();
    path["verdict"] = "violation".into();
    path["detail"] = "dropped: no answer within 1000 ms (2 attempts)".into();
    path["latency_ms"] = Value::Null;
    path["target_saw"] = false.into();
    path["seen_source"] = Value::Null;
    path["target_stage"] = "nothing".into();
    path["attempts"] = 2.into();
    path["blame"] = serde_json::json!({
        "where": "unknown", "hop": null, "hop_distance": null, "cause": "drop", "rule": null
    });
    new["summary"]["ok"] = (new["summary"]["ok"].as_u64().unwrap() - 1).into();
    new["summary"]["violations"] = (new["summary"]["violations"].as_u64().unwrap() + 1).into();
    let (o, n) = (dir.join("old.json"), dir.join("new.json"));
    std::fs::write(&o, serde_json::to_vec_pretty(&old).unwrap()).unwrap();
    std::fs::write(&n, serde_json::to_vec_pretty(&new).unwrap()).unwrap();
    (o, n)
}

/// Runs `args` once to standard output and once with `--out FILE` (an
/// existing 0600 file), and checks both give the same bytes and status.
fn same_as_stdout(args: &[&str], dir: &Path, name: &str) -> Output {
    let to_stdout = portcall(args);
    let file = dir.join(name);
    std::fs::write(&file, "old contents\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut with_out = args.to_vec();
    with_out.extend(["--out", s(&file)]);
    let out = portcall(&with_out);
    assert_eq!(
        out.status.code(),
        to_stdout.status.code(),
        "{args:?} --out: {}",
        text(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "{args:?} --out printed {}",
        text(&out.stdout)
    );
    assert!(!to_stdout.stdout.is_empty(), "{args:?} printed nothing");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        to_stdout.stdout,
        "{args:?} --out {name}"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{name} lost its mode");
    assert!(text(&out.stderr).contains(&format!("wrote {}", file.display())));
    // Nothing but the files this test made is left in the directory.
    for entry in std::fs::read_dir(dir).unwrap() {
        let n = entry.unwrap().file_name().into_string().unwrap();
        assert!(!n.starts_with('.'), "a temporary file was left behind: {n}");
    }
    out
}

#[test]
fn diff_out_writes_the_diff_atomically_and_keeps_exit_1_for_a_regression() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = reports(dir.path());
    let out = same_as_stdout(&["diff", s(&old), s(&new)], dir.path(), "diff.txt");
    assert_eq!(out.status.code(), Some(1));
    let out = same_as_stdout(
        &["diff", s(&old), s(&new), "--format", "json"],
        dir.path(),
        "diff.json",
    );
    assert_eq!(out.status.code(), Some(1));
    let d: Value = serde_json::from_slice(&std::fs::read(dir.path().join("diff.json")).unwrap())
        .expect("diff --out writes JSON");
    assert_eq!(d["schema"], "portcall.diff/v1");
    assert_eq!(d["summary"]["regressed"], 1);
}

#[test]
fn suggest_out_writes_the_script_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let (_, new) = reports(dir.path());
    let out = same_as_stdout(
        &["suggest", s(&new), "--format", "nft"],
        dir.path(),
        "fix.sh",
    );
    assert_eq!(out.status.code(), Some(0));
    let script = std::fs::read_to_string(dir.path().join("fix.sh")).unwrap();
    assert!(script.contains("nft "), "{script}");
}

#[test]
fn out_to_a_directory_is_exit_2_naming_it_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = reports(dir.path());
    let target = dir.path().join("a-directory");
    std::fs::create_dir(&target).unwrap();
    for args in [
        vec!["diff", s(&old), s(&new), "--out", s(&target)],
        vec![
            "suggest",
            s(&new),
            "--format",
            "iptables",
            "--out",
            s(&target),
        ],
    ] {
        let out = portcall(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("a-directory") && err.contains("is a directory"),
            "{args:?}: {err}"
        );
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    }
}

/// Regression: as root, `report --out /tmp/x.json` where another user had
/// planted `/tmp/x.json -> /root/secret` replaced the secret.
#[test]
fn report_out_refuses_another_user_s_symlink_in_a_shared_directory_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (old, _) = reports(dir.path());
    let probe = dir.path().join("owner-probe");
    std::fs::write(&probe, b"").unwrap();
    if std::os::unix::fs::chown(&probe, Some(65534), Some(65534)).is_err() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipped: needs root to give a symlink to another user");
        }
        return;
    }
    let shared = dir.path().join("tmp");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"secret").unwrap();
    let planted = shared.join("x.json");
    std::os::unix::fs::symlink(&secret, &planted).unwrap();
    std::os::unix::fs::lchown(&planted, Some(65534), Some(65534)).unwrap();
    let out = portcall(&["report", s(&old), "--format", "json", "--out", s(&planted)]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(s(&planted)) && err.contains("not followed"),
        "{err}"
    );
    assert_eq!(std::fs::read(&secret).unwrap(), b"secret");
}
