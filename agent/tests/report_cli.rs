//! Every report format through the binary (`demo --format ... --out`),
//! checked by the tools that consume it (a JUnit parser, promtool), and
//! `portcall diff` / `portcall suggest` as an operator meets them: exit
//! codes, output, and bad input naming the file with exit 2.
//!
//! The JUnit check needs Python's `junitparser` (Debian `python3-junitparser`
//! or PyPI `junitparser`), the metrics check `promtool` (Debian
//! `prometheus`); without them those tests print `skipped: <reason>` and
//! pass, unless `PORTCALL_REQUIRE_LAB=1`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

mod common;
use common::{available, junit_python, portcall, text};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The demo's report in `format`, written with `--out` into `dir`.
fn demo(dir: &Path, format: &str) -> PathBuf {
    let file = dir.join(format!("report.{format}"));
    let out = portcall(&["demo", "--format", format, "--out", s(&file)]);
    // 0 normally; 1 when something on this machine holds a demo port.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{:?}: {}",
        out.status,
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "--out leaves stdout empty");
    assert!(
        text(&out.stderr).contains(&format!("wrote {}", file.display())),
        "{}",
        text(&out.stderr)
    );
    file
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn write_json(p: &Path, v: &Value) {
    std::fs::write(p, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

#[test]
fn every_format_is_written_atomically_with_out() {
    let dir = tempfile::tempdir().unwrap();
    for format in ["table", "json", "junit", "markdown", "html", "prometheus"] {
        let file = demo(dir.path(), format);
        let body = std::fs::read_to_string(&file).unwrap();
        let first = body.lines().next().unwrap_or_default();
        match format {
            "table" => assert!(first.starts_with("note: demo"), "{first}"),
            "json" => assert_eq!(read_json(&file)["schema"], "portcall.report/v1"),
            "junit" => assert_eq!(first, r#"<?xml version="1.0" encoding="UTF-8"?>"#),
            "markdown" => assert!(
                first.starts_with("### portcall wso2-apim-distributed: "),
                "{first}"
            ),
            "html" => {
                assert_eq!(first, "<!DOCTYPE html>");
                assert!(body.contains(r#"<table class="matrix">"#));
                for external in ["<script", "<link", "src=", "href="] {
                    assert!(!body.contains(external), "{external} in the page");
                }
                // url() only for the host graph's arrow markers in the page.
                assert_eq!(
                    body.matches("url(").count(),
                    body.matches("url(#arrow-").count(),
                    "an external url() in the page"
                );
                assert!(body.contains(r#"<svg class="graph""#));
            }
            "prometheus" => assert!(first.starts_with("# HELP portcall_path_open "), "{first}"),
            _ => unreachable!(),
        }
        // No temporary file is left beside the report.
        assert!(body.ends_with('\n'), "{format} ends with a newline");
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
}

#[test]
fn machine_formats_keep_notes_off_standard_output() {
    let out = portcall(&["demo", "--format", "prometheus"]);
    assert!(matches!(out.status.code(), Some(0 | 1)));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("# HELP portcall_path_open "), "{stdout}");
    assert!(!stdout.contains("note:"));
    assert!(text(&out.stderr).contains("note: demo"));
}

/// Two demos started together on one machine (the tests of this binary run
/// side by side too): neither takes the other's canaries for live services.
/// Before each demo held its own loopback slot, the second one reported
/// most live paths `wrong-service` ("PORTCALL-ERR ... bad-line").
#[test]
fn two_demos_at_once_each_play_on_their_own_addresses() {
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_portcall"))
            .args(["demo", "--format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run portcall demo")
    };
    let (a, b) = (start(), start());
    let runs: Vec<Value> = [a, b]
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            serde_json::from_slice(&out.stdout).expect("demo JSON")
        })
        .collect();
    let outcomes = |r: &Value| -> Vec<String> {
        r["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{} -> {}:{} {} {}",
                    p["from"], p["to"], p["port"], p["verdict"], p["observed"]
                )
            })
            .collect()
    };
    assert_eq!(outcomes(&runs[0]), outcomes(&runs[1]));
    let elsewhere = |r: &Value| {
        r["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("another portcall demo"))
    };
    assert!(
        elsewhere(&runs[0]) || elsewhere(&runs[1]),
        "one of two demos at once plays on other addresses"
    );
}

#[test]
fn unknown_format_is_a_usage_error() {
    let out = portcall(&["demo", "--format", "xml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("junit") && err.contains("prometheus"), "{err}");
}

const JUNIT_CHECK: &str = r#"
import json, sys
from junitparser import JUnitXml, Failure, Error
xml = JUnitXml.fromfile(sys.argv[1])
out = {"tests": 0, "failures": [], "errors": [], "names": set()}
for suite in xml:
    for case in suite:
        out["tests"] += 1
        out["names"].add(case.name)
        for r in case.result:
            item = {"classname": case.classname, "name": case.name,
                    "type": r.type, "message": r.message, "text": r.text}
            if isinstance(r, Failure):
                out["failures"].append(item)
            elif isinstance(r, Error):
                out["errors"].append(item)
out["names"] = len(out["names"])
out["suite_tests"] = sum(s.tests for s in xml)
out["suite_failures"] = sum(s.failures for s in xml)
print(json.dumps(out))
"#;

#[test]
fn junit_report_reads_back_through_junitparser() {
    let py = junit_python();
    if !available(py.clone().err()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let junit = demo(dir.path(), "junit");
    let out = Command::new(py.unwrap())
        .args(["-c", JUNIT_CHECK, s(&junit)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The demo plan has 83 paths: one test case each, all distinct.
    assert_eq!(v["tests"], 83, "{v}");
    assert_eq!(v["names"], 83, "{v}");
    assert_eq!(v["suite_tests"], 83, "{v}");
    let failures = v["failures"].as_array().unwrap();
    assert_eq!(v["suite_failures"].as_u64(), Some(failures.len() as u64));
    // Loopback cannot block, so at least the must-be-blocked paths fail,
    // each carrying its observed outcome and reason.
    assert!(failures.len() >= 13, "{v}");
    let db = failures
        .iter()
        .find(|f| f["name"] == "internet -> db:3306/tcp (mysql) must be blocked")
        .unwrap_or_else(|| panic!("no failure for internet -> db: {v}"));
    assert_eq!(db["type"], "open");
    assert_eq!(
        db["classname"],
        "nothing outside the app tier reaches the database"
    );
    assert!(
        db["message"]
            .as_str()
            .unwrap()
            .starts_with("must be blocked, but "),
        "{db}"
    );
    assert!(
        db["text"].as_str().unwrap().contains("observed: open"),
        "{db}"
    );
}

#[test]
fn prometheus_report_passes_promtool() {
    let have = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available((!have).then(|| "promtool not runnable (Debian package prometheus)".to_string()))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prom = demo(dir.path(), "prometheus");
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&prom).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let body = std::fs::read_to_string(&prom).unwrap();
    assert!(
        body.contains(
            "portcall_path_ok{plan=\"wso2-apim-distributed\",from=\"internet\",to=\"db\",port=\"3306\",service=\"mysql\",expect=\"blocked\",family=\"ipv4\"} 0\n"
        ),
        "{body}"
    );
    assert!(
        body.contains(
            "portcall_path_open{plan=\"wso2-apim-distributed\",from=\"internet\",to=\"db\",port=\"3306\",service=\"mysql\",expect=\"blocked\",family=\"ipv4\"} 1\n"
        ),
        "{body}"
    );
}

/// The demo's JSON report, and a copy in which every violation is fixed
/// (dropped) and one path that was ok is now dropped.
fn before_and_after(dir: &Path) -> (PathBuf, PathBuf, usize) {
    let old = demo(dir, "json");
    let mut v = read_json(&old);
    let mut fixed = 0;
    for p in v["paths"].as_array_mut().unwrap() {
        if p["verdict"] == "violation" && p["expect"] == "blocked" {
            p["verdict"] = "ok".into();
            p["observed"] = "timeout".into();
            p["target_saw"] = false.into();
            p["seen_source"] = Value::Null;
            fixed += 1;
        }
    }
    let broken = v["paths"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["from"] == "lb" && p["to"] == "gw-worker-1" && p["port"] == 8280)
        .unwrap();
    assert_eq!(broken["verdict"], "ok");
    broken["verdict"] = "violation".into();
    broken["observed"] = "timeout".into();
    broken["detail"] = "dropped: no answer".into();
    let new = dir.join("after.json");
    write_json(&new, &v);
    (old, new, fixed)
}

#[test]
fn diff_separates_fixed_and_regressed_and_exits_1_on_a_regression() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new, fixed) = before_and_after(dir.path());
    assert!(fixed >= 13);

    let out = portcall(&["diff", s(&old), s(&new)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.starts_with(&format!(
            "wso2-apim-distributed: 1 regressed, {fixed} fixed, 0 changed reason"
        )),
        "{table}"
    );
    let regressed = table.find("REGRESSED").unwrap();
    let fixed_at = table.find("FIXED").unwrap();
    assert!(regressed < fixed_at, "{table}");
    assert!(
        table[regressed..fixed_at].contains("lb    gw-worker-1  8280/tcp ipv4 (nio-http)"),
        "{table}"
    );

    let out = portcall(&["diff", s(&old), s(&new), "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "portcall.diff/v1");
    let changes = v["changes"].as_array().unwrap();
    assert_eq!(changes.len(), fixed + 1);
    let r = changes.iter().find(|c| c["change"] == "regressed").unwrap();
    assert_eq!(r["before"]["verdict"], "ok");
    assert_eq!(r["after"]["verdict"], "violation");
    assert_eq!(r["after"]["observed"], "timeout");
    assert_eq!(r["service"], "nio-http");
    assert_eq!(r["protocol"], "tcp");
    assert_eq!(r["family"], "ipv4");

    // Backwards, the same change is fixes and one regression the other way.
    let out = portcall(&["diff", s(&new), s(&old)]);
    assert_eq!(out.status.code(), Some(1));
    // A report against itself: nothing changed, exit 0.
    let out = portcall(&["diff", s(&old), s(&old)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("no path changed"));
}

#[test]
fn diff_reports_paths_on_one_side_only_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let old = demo(dir.path(), "json");
    let mut v = read_json(&old);
    let gone = v["paths"].as_array_mut().unwrap().remove(0);
    let new = dir.path().join("fewer.json");
    write_json(&new, &v);
    let out = portcall(&["diff", s(&old), s(&new), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["summary"]["removed"], 1);
    let c = &d["changes"][0];
    assert_eq!(c["change"], "removed");
    assert_eq!(c["from"], gone["from"]);
    assert!(c["after"].is_null());
    assert_eq!(c["before"]["verdict"], gone["verdict"]);
    let out = portcall(&["diff", s(&new), s(&old)]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("ONLY IN NEW (the plan gained the path): 1"));
}

#[test]
fn diff_bad_input_names_the_file_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let good = demo(dir.path(), "json");
    let not_json = dir.path().join("not.json");
    std::fs::write(&not_json, "<html>").unwrap();
    let plan_json = dir.path().join("plan.json");
    std::fs::write(&plan_json, r#"{"schema": "portcall.plan/v1", "hosts": []}"#).unwrap();
    let mut other = read_json(&good);
    other["plan"] = "another-plan".into();
    let other_plan = dir.path().join("other.json");
    write_json(&other_plan, &other);
    let missing = dir.path().join("missing.json");

    let cases = [
        (
            s(&not_json),
            s(&good),
            vec![s(&not_json), "not a portcall report"],
        ),
        (
            s(&good),
            s(&plan_json),
            vec![
                s(&plan_json),
                "schema \"portcall.plan/v1\": expected portcall.report/v1",
            ],
        ),
        (
            s(&good),
            s(&other_plan),
            vec![
                s(&good),
                s(&other_plan),
                "reports of different plans: \"wso2-apim-distributed\" (old) and \"another-plan\" (new)",
            ],
        ),
        (s(&missing), s(&good), vec![s(&missing), "read report"]),
    ];
    for (a, b, wants) in cases {
        let out = portcall(&["diff", a, b]);
        assert_eq!(out.status.code(), Some(2), "{a} {b}");
        let err = text(&out.stderr);
        assert!(err.starts_with("portcall: "), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        for want in wants {
            assert!(err.contains(want), "{err} lacks {want}");
        }
        assert!(out.stdout.is_empty());
    }
}

/// Regression: a must-be-blocked port "fixed" with a drop for the probing
/// host alone stayed open to every other outside address. Each open
/// must-be-blocked port now gets one default deny: its drop, and accepts for
/// the port's must-be-open sources only.
#[test]
fn suggest_drop_for_the_prober_alone_left_the_port_open_to_everyone_else() {
    let dir = tempfile::tempdir().unwrap();
    let report = demo(dir.path(), "json");
    let v = read_json(&report);
    let paths = v["paths"].as_array().unwrap();
    // (target, port) of every open must-be-blocked path, and the
    // must-be-open sources of each.
    let mut denied: Vec<(String, u64)> = paths
        .iter()
        .filter(|p| p["verdict"] == "violation" && p["expect"] == "blocked")
        .map(|p| {
            (
                p["to"].as_str().unwrap().to_string(),
                p["port"].as_u64().unwrap(),
            )
        })
        .collect();
    denied.sort();
    denied.dedup();
    assert!(denied.contains(&("db".to_string(), 3306)), "{denied:?}");
    let allowed: usize = denied
        .iter()
        .map(|(to, port)| {
            paths
                .iter()
                .filter(|p| p["to"] == to.as_str() && p["port"] == *port && p["expect"] == "open")
                .count()
        })
        .sum();

    let out = portcall(&["suggest", s(&report), "--format", "nft"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let script = text(&out.stdout);
    let commands: Vec<&str> = script
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(commands.len(), denied.len() + allowed, "{script}");
    let drops: Vec<&&str> = commands.iter().filter(|c| c.contains(" drop ")).collect();
    assert_eq!(drops.len(), denied.len(), "{script}");
    for c in drops {
        // Not restricted to a source: closed for everyone.
        assert!(
            c.starts_with("nft insert rule inet filter input tcp dport "),
            "{c}"
        );
    }
    // db's section: the drop, then accepts for every server the plan lets
    // reach the database; the internet and the load balancer get none.
    let db = script.split("\n# host db (127.0.4.10)\n").nth(1).unwrap();
    assert!(
        db.starts_with(
            "# internet -> db:3306/tcp (mysql)\n#   violation: must be blocked, observed open: "
        ),
        "{db}"
    );
    assert!(
        db.contains("#   note: the flow's source zone:internet covers zone internet's hosts internet (127.0.0.10)"),
        "{db}"
    );
    assert!(
        db.contains("nft insert rule inet filter input tcp dport 3306 counter drop comment '\"portcall: default deny of port 3306, internet -> db:3306/tcp (mysql)\"'\n"),
        "{db}"
    );
    assert!(
        db.contains("nft insert rule inet filter input ip saddr 127.0.2.10 tcp dport 3306 counter accept comment '\"portcall: keep port 3306 open for pub-store\"'\n"),
        "{db}"
    );
    assert!(!db.contains("saddr 127.0.0.10 "), "{db}");
    assert!(!db.contains("saddr 127.0.1.10 "), "{db}");
    assert!(
        db.contains("# lb -> db:3306/tcp (mysql)\n#   violation: must be blocked, observed open: "),
        "{db}"
    );
    assert!(
        db.contains("#   covered by the default deny written for internet -> db:3306/tcp (mysql)"),
        "{db}"
    );
    // The script is valid sh.
    let file = dir.path().join("fix.sh");
    std::fs::write(&file, &script).unwrap();
    let syntax = Command::new("sh").args(["-n", s(&file)]).output().unwrap();
    assert!(syntax.status.success(), "{}", text(&syntax.stderr));

    let out = portcall(&[
        "suggest",
        s(&report),
        "--format",
        "iptables",
        "--host",
        "db",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let script = text(&out.stdout);
    assert!(script.contains("# host db (127.0.4.10)"), "{script}");
    assert_eq!(script.matches("# host ").count(), 1, "{script}");
    for tool in ["iptables", "ip6tables"] {
        assert!(script.contains(&format!("{tool} -w -I INPUT -p tcp --dport 3306 -m comment --comment 'portcall: default deny of port 3306, internet -> db:3306/tcp (mysql)' -j DROP")), "{script}");
    }
    assert!(script.contains("iptables -w -I INPUT -s 127.0.2.10 -p tcp --dport 3306 -m comment --comment 'portcall: keep port 3306 open for pub-store' -j ACCEPT"), "{script}");

    let out = portcall(&[
        "suggest",
        s(&report),
        "--format",
        "firewalld",
        "--host",
        "db",
        "--zone",
        "internal",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let script = text(&out.stdout);
    assert!(script.ends_with("firewall-cmd --reload\n"), "{script}");
    assert!(script.contains("firewall-cmd --permanent --zone=internal '--add-rich-rule=rule priority=\"-32767\" port port=\"3306\" protocol=\"tcp\" drop'"), "{script}");
    assert!(script.contains("firewall-cmd --permanent --zone=internal '--add-rich-rule=rule priority=\"-32768\" family=\"ipv4\" source address=\"127.0.2.10\" port port=\"3306\" protocol=\"tcp\" accept'"), "{script}");
}

#[test]
fn suggest_bad_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let report = demo(dir.path(), "json");
    let not_json = dir.path().join("broken.json");
    std::fs::write(&not_json, "{").unwrap();
    let cases: [(Vec<&str>, &str); 6] = [
        (
            vec![s(&not_json), "--format", "nft"],
            "broken.json: not a portcall report",
        ),
        (
            vec![s(&report), "--format", "nft", "--host", "nope"],
            "host \"nope\" is not in the report",
        ),
        (vec![s(&report), "--format", "pf"], "invalid value 'pf'"),
        (
            vec![s(&report), "--format", "nft", "--zone", "public"],
            "--zone does not apply to --format nft",
        ),
        (
            vec![s(&report), "--format", "nft", "--table", "filter"],
            "table \"filter\": expected \"FAMILY NAME\"",
        ),
        (vec![s(&report)], "--format"),
    ];
    for (args, want) in cases {
        let mut all = vec!["suggest"];
        all.extend(args);
        let out = portcall(&all);
        assert_eq!(out.status.code(), Some(2), "{all:?}");
        let err = text(&out.stderr);
        assert!(err.contains(want), "{all:?}: {err} lacks {want}");
        assert!(out.stdout.is_empty(), "{all:?}");
    }
}

#[test]
fn report_re_renders_a_saved_json_report_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let json = demo(dir.path(), "json");
    let saved = std::fs::read_to_string(&json).unwrap();
    let paths = read_json(&json)["paths"].as_array().unwrap().len();
    assert!(paths > 0);

    // JSON round-trips byte for byte.
    let out = portcall(&["report", s(&json), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), saved);

    for format in ["table", "junit", "markdown", "html", "prometheus"] {
        let out = portcall(&["report", s(&json), "--format", format]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{format}: {}",
            text(&out.stderr)
        );
        let body = text(&out.stdout);
        let first = body.lines().next().unwrap_or_default();
        match format {
            "table" => assert!(
                body.contains("VERDICT") || body.contains("violation"),
                "{body}"
            ),
            "junit" => {
                assert_eq!(first, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
                assert_eq!(body.matches("<testcase ").count(), paths, "one per path");
            }
            "markdown" => assert!(
                first.starts_with("### portcall wso2-apim-distributed: "),
                "{first}"
            ),
            "html" => {
                assert_eq!(first, "<!DOCTYPE html>");
                assert!(body.contains(r#"<table class="matrix">"#));
            }
            "prometheus" => {
                assert!(first.starts_with("# HELP portcall_path_open "), "{first}");
                assert_eq!(
                    body.lines()
                        .filter(|l| l.starts_with("portcall_path_verdict{"))
                        .count(),
                    paths
                );
            }
            _ => unreachable!(),
        }
    }

    // --out writes the file, atomically, and says so.
    let html = dir.path().join("again.html");
    let out = portcall(&["report", s(&json), "--format", "html", "--out", s(&html)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("wrote "),
        "{}",
        text(&out.stderr)
    );
    assert!(
        std::fs::read_to_string(&html)
            .unwrap()
            .starts_with("<!DOCTYPE html>")
    );
}

#[test]
fn report_bad_input_and_unwritable_out_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_report = dir.path().join("plan.json");
    std::fs::write(&not_a_report, "{\"schema\": \"portcall.plan/v1\"}").unwrap();
    let out = portcall(&["report", s(&not_a_report), "--format", "html"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("plan.json"),
        "{}",
        text(&out.stderr)
    );
    let out = portcall(&["report", s(&dir.path().join("missing.json"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("missing.json"),
        "{}",
        text(&out.stderr)
    );

    // A real report to write out.
    let json = dir.path().join("r.json");
    write_json(
        &json,
        &serde_json::json!({
            "schema": "portcall.report/v1", "plan": "p",
            "started_at": "2025-01-01T00:00:00.000Z", "finished_at": "2025-01-01T00:00:01.000Z",
            "summary": {"paths": 0, "ok": 0, "violations": 0, "errors": 0},
            "hosts": [], "paths": []
        }),
    );
    // Regression: --out /dev/full printed "wrote /dev/full", exited 0 and
    // replaced the device with a file.
    if Path::new("/dev/full").exists() {
        let out = portcall(&["report", s(&json), "--format", "json", "--out", "/dev/full"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            !text(&out.stderr).contains("wrote"),
            "{}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("/dev/full"),
            "{}",
            text(&out.stderr)
        );
        use std::os::unix::fs::FileTypeExt;
        let ft = std::fs::metadata("/dev/full").unwrap().file_type();
        assert!(ft.is_char_device(), "/dev/full is still a device");
    }
    // A directory is refused, and left alone.
    let out = portcall(&["report", s(&json), "--out", s(dir.path())]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is a directory"),
        "{}",
        text(&out.stderr)
    );
    assert!(dir.path().is_dir());
}

#[test]
fn kill_9_during_out_leaves_no_temporary_file() {
    // Regression (issue 15): a writer killed mid-write left its named
    // temporary file beside the report.
    let dir = tempfile::tempdir().unwrap();
    let path = serde_json::json!({
        "from": "web", "to": "db", "address": "198.18.0.2", "port": 3306,
        "service": "mysql", "protocol": "tcp", "expect": "open", "observed": "open",
        "verdict": "ok", "detail": "db saw our nonce from 198.18.0.1 ".repeat(8),
        "latency_ms": 0.25, "attempts": 1, "target_saw": true, "seen_source": "198.18.0.1"
    });
    let paths: Vec<Value> = (0..20_000).map(|_| path.clone()).collect();
    let json = dir.path().join("big.json");
    write_json(
        &json,
        &serde_json::json!({
            "schema": "portcall.report/v1", "plan": "p",
            "started_at": "2025-01-01T00:00:00.000Z", "finished_at": "2025-01-01T00:00:01.000Z",
            "summary": {"paths": 20_000, "ok": 20_000, "violations": 0, "errors": 0},
            "hosts": [], "paths": paths
        }),
    );
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let target = out_dir.join("report.json");
    let mut killed = 0;
    for i in 0..20u64 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcall"))
            .args(["report", s(&json), "--format", "json", "--out", s(&target)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20 + i * 15));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        let names: Vec<String> = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "report.json")
            .collect();
        assert!(names.is_empty(), "left behind after kill -9: {names:?}");
        // Whatever is there is a whole report, never half of one.
        if target.exists() {
            read_json(&target);
        }
    }
    assert!(
        killed > 0,
        "no run was killed mid-way; the test proves nothing"
    );
}
