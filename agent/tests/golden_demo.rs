//! The demo's JSON report, compared with a committed golden copy, timings
//! masked: a refactor that is meant to change nothing must leave every path's
//! verdict, observation, detail and blame exactly as they were.
//!
//! A change that *means* to alter the report regenerates the copy with
//! `PORTCALL_UPDATE_GOLDEN=1 cargo test -p portcall --test golden_demo` and
//! the diff of `agent/tests/golden/demo.json` is reviewed with the change.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Replaces what differs from run to run (clock readings and durations) by a
/// marker, keeping whether the value was there at all.
fn mask(v: &mut Value, key: Option<&str>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                mask(child, Some(k));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|c| mask(c, None)),
        other => {
            let timed = key.is_some_and(|k| {
                k.ends_with("_at") || k.ends_with("_ms") || k.ends_with("_us") || k == "not_after"
            });
            if timed && !other.is_null() {
                *other = Value::String("<masked>".into());
            }
        }
    }
}

#[test]
fn demo_json_matches_the_golden_copy() {
    let out = Command::new(env!("CARGO_BIN_EXE_portcall"))
        .args(["demo", "--format", "json"])
        .current_dir(workspace())
        .output()
        .expect("run portcall demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A demo that ran is a success, whatever loopback's verdicts.
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let mut report: Value = serde_json::from_slice(&out.stdout).expect("demo JSON");
    mask(&mut report, None);
    let got = serde_json::to_string_pretty(&report).unwrap() + "\n";
    let golden = workspace().join("agent/tests/golden/demo.json");
    if std::env::var_os("PORTCALL_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&golden).expect("golden copy present");
    if got != want {
        let first = got
            .lines()
            .zip(want.lines())
            .enumerate()
            .find(|(_, (g, w))| g != w)
            .map(|(i, (g, w))| format!("line {}: got {g:?}, golden {w:?}", i + 1))
            .unwrap_or_else(|| "lengths differ".into());
        panic!(
            "demo JSON differs from agent/tests/golden/demo.json ({first}); \
             if the change is meant, regenerate with PORTCALL_UPDATE_GOLDEN=1"
        );
    }
}
