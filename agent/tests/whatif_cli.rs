//! `portcall whatif`'s formats as an operator and the tools downstream
//! meet them. The whatif run itself needs root and namespaces (its end to
//! end tests are in integration's `whatif_lab`), so here the command line
//! is checked up to the point where the twin would be built, and the
//! answer of a `portcall.whatif/v1` document (one path per kind of change,
//! hostile names) is rendered through the same `render` the command calls
//! and read back by the tools that consume it: a JUnit parser and
//! `promtool check metrics`.
//!
//! The JUnit check needs Python's `junitparser` (Debian
//! `python3-junitparser` or PyPI `junitparser`), the metrics check
//! `promtool` (Debian `prometheus`); without them those tests print
//! `skipped: <reason>` and pass, unless `PORTCALL_REQUIRE_LAB=1`.

use std::io::Write;
use std::process::{Command, Stdio};

use probe_core::twin::{self, WhatIf, WhatIfFormat, WhatIfRenderOptions};
use serde_json::Value;

mod common;
use common::{available, junit_python, portcall, text};

/// A what-if answer as `whatif --format json` writes it: one path per
/// kind of change, a host name and a rule text with a table-cell pipe, a
/// code span, markup and a right-to-left override.
const ANSWER: &str = r#"{
  "schema": "portcall.whatif/v1",
  "plan": "lab",
  "state": "state",
  "changes": [{"host": "db", "file": "drop.nft", "kind": "nft-commands"}],
  "summary": {"paths": 6, "breaks": 1, "opens": 1, "fixes": 1, "changed": 1, "same": 1, "outside_twin": 1},
  "paths": [
    {"from": "web|`x`<script>\u202e", "to": "db", "address": "198.18.5.20", "port": 3306,
     "protocol": "tcp", "family": "ipv4", "expect": "open",
     "base": {"verdict": "ok", "observed": "open", "rule": null},
     "candidate": {"verdict": "violation", "observed": "timeout",
       "rule": {"host": "db", "table": "inet fw", "chain": "input", "handle": 5,
                "text": "ip saddr 198.18.5.0/24 drop comment \"</failure><x/> \u202e\""}},
     "change": "breaks"},
    {"from": "web", "to": "db", "address": "2001:db8::20", "port": 22,
     "protocol": "tcp", "family": "ipv6", "expect": "blocked",
     "base": {"verdict": "ok", "observed": "timeout",
       "rule": {"host": "db", "table": "inet fw", "chain": "input", "policy": "drop"}},
     "candidate": {"verdict": "violation", "observed": "open", "rule": null},
     "change": "opens"},
    {"from": "app", "to": "db", "address": "198.18.5.20", "port": 5432,
     "protocol": "tcp", "family": "ipv4", "expect": "open",
     "base": {"verdict": "violation", "observed": "refused",
       "rule": {"host": "db", "table": "inet fw", "chain": "input", "handle": 7, "text": "tcp dport 5432 reject"}},
     "candidate": {"verdict": "ok", "observed": "open", "rule": null},
     "change": "fixes"},
    {"from": "web", "to": "cache", "address": "198.18.5.30", "port": 6379,
     "protocol": "tcp", "family": "ipv4", "expect": "blocked",
     "base": {"verdict": "ok", "observed": "timeout", "rule": null},
     "candidate": {"verdict": "ok", "observed": "refused", "rule": null},
     "change": "changed"},
    {"from": "web", "to": "app", "address": "198.18.5.10", "port": 8080,
     "protocol": "tcp", "family": "ipv4", "expect": "open",
     "base": {"verdict": "ok", "observed": "open", "rule": null},
     "candidate": {"verdict": "ok", "observed": "open", "rule": null},
     "change": "same"},
    {"from": "web", "to": "ext", "address": "203.0.113.9", "port": 443,
     "protocol": "tls", "family": "ipv4", "expect": "open",
     "base": {"verdict": "ok", "observed": "open", "rule": null},
     "candidate": {"verdict": "ok", "observed": "open", "rule": null},
     "change": "outside-twin"}
  ],
  "fidelity": []
}"#;

fn rendered(format: WhatIfFormat) -> tempfile::NamedTempFile {
    let answer: WhatIf = serde_json::from_str(ANSWER).expect("portcall.whatif/v1");
    let mut bytes = Vec::new();
    twin::render(&answer, format, WhatIfRenderOptions::default(), &mut bytes).unwrap();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&bytes).unwrap();
    file
}

#[test]
fn unknown_format_is_a_usage_error_naming_every_format() {
    let out = portcall(&["whatif", "--plan", "p", "--state", "s", "--format", "xml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    for f in ["table", "json", "markdown", "html", "junit", "prometheus"] {
        assert!(err.contains(f), "{f} in {err}");
    }
}

#[test]
fn every_format_is_accepted_and_listed_in_help() {
    let help = text(&portcall(&["whatif", "--help"]).stdout);
    for f in WhatIfFormat::ALL {
        assert!(help.contains(f.as_str()), "{f} in {help}");
        // Parsing the format succeeds: whatever fails next (no privileges,
        // or the plan that does not exist) is not the format, and nothing
        // is built.
        let out = portcall(&[
            "whatif",
            "--plan",
            "/nonexistent/plan.toml",
            "--state",
            "/nonexistent/state",
            "--format",
            f.as_str(),
        ]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{f}: {err}");
        assert!(!err.contains("--format"), "{f}: {err}");
        assert!(
            err.contains("/nonexistent/plan.toml") || err.contains("needs root"),
            "{f}: {err}"
        );
    }
}

const JUNIT_CHECK: &str = r#"
import json, sys
from junitparser import JUnitXml, Failure, Error, Skipped
xml = JUnitXml.fromfile(sys.argv[1])
out = {"tests": 0, "failures": [], "errors": [], "skipped": [], "passed": []}
for suite in xml:
    for case in suite:
        out["tests"] += 1
        if not case.result:
            out["passed"].append(case.name)
        for r in case.result:
            item = {"classname": case.classname, "name": case.name,
                    "type": r.type, "message": r.message, "text": r.text}
            if isinstance(r, Failure):
                out["failures"].append(item)
            elif isinstance(r, Error):
                out["errors"].append(item)
            elif isinstance(r, Skipped):
                out["skipped"].append(item)
out["suite_tests"] = sum(s.tests for s in xml)
out["suite_failures"] = sum(s.failures for s in xml)
out["suite_skipped"] = sum(s.skipped for s in xml)
print(json.dumps(out))
"#;

#[test]
fn whatif_junit_reads_back_through_junitparser() {
    let py = junit_python();
    if !available(py.clone().err()) {
        return;
    }
    let junit = rendered(WhatIfFormat::Junit);
    let out = Command::new(py.unwrap())
        .args(["-c", JUNIT_CHECK])
        .arg(junit.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tests"], 6, "{v}");
    assert_eq!(v["suite_tests"], 6, "{v}");
    assert_eq!(v["suite_failures"], 2, "{v}");
    assert_eq!(v["suite_skipped"], 1, "{v}");
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    // Fixes, changed and same pass.
    assert_eq!(v["passed"].as_array().unwrap().len(), 3, "{v}");
    let failures = v["failures"].as_array().unwrap();
    let types: Vec<&str> = failures
        .iter()
        .map(|f| f["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["breaks", "opens"], "{v}");
    let breaks = &failures[0];
    // The hostile name comes back as written, its override made visible;
    // the rule's markup stayed text.
    assert_eq!(
        breaks["name"],
        "web|`x`<script>\\u{202e} -> db:3306/tcp (ipv4) must be open"
    );
    let message = breaks["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "breaks: ok (open) → violation (timeout); candidate rule: db inet fw input: handle 5: "
        ),
        "{message}"
    );
    assert!(message.contains("</failure><x/>"), "{message}");
    assert_eq!(
        failures[1]["message"],
        "opens: ok (timeout) → violation (open); candidate rule: none"
    );
    let skipped = &v["skipped"][0];
    assert_eq!(skipped["name"], "web -> ext:443/tls (ipv4) must be open");
    assert!(
        skipped["message"]
            .as_str()
            .unwrap()
            .contains("a device the twin does not hold"),
        "{skipped}"
    );
}

#[test]
fn whatif_prometheus_passes_promtool() {
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
    let prom = rendered(WhatIfFormat::Prometheus);
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(prom.path()).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let body = std::fs::read_to_string(prom.path()).unwrap();
    assert!(
        body.contains("portcall_whatif_paths{plan=\"lab\",change=\"breaks\"} 1\n"),
        "{body}"
    );
    assert!(
        body.contains("portcall_whatif_path_change{plan=\"lab\",from=\"web\",to=\"db\",port=\"22\",protocol=\"tcp\",family=\"ipv6\",change=\"opens\"} 1\n"),
        "{body}"
    );
    assert!(
        body.contains("portcall_whatif_ok{plan=\"lab\"} 0\n"),
        "{body}"
    );
    assert!(
        body.contains("portcall_whatif_fidelity_disagreements{plan=\"lab\"} 0\n"),
        "{body}"
    );
    // Five paths change; the unchanged one has no series.
    assert_eq!(
        body.matches("portcall_whatif_path_change{").count(),
        5,
        "{body}"
    );
}

/// The fenced block of `lang` that follows `after` in `text`.
fn block<'a>(text: &'a str, after: &str, lang: &str) -> &'a str {
    let from = text
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} in the doc"));
    let open = format!("```{lang}\n");
    let start = from + text[from..].find(&open).unwrap() + open.len();
    let end = start + text[start..].find("```\n").unwrap();
    &text[start..end]
}

/// docs/whatif.md's examples are what `whatif` writes for its JSON
/// example: the Markdown whole, the JUnit failure and the metrics lines.
#[test]
fn the_docs_examples_are_rendered_from_the_docs_answer() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/whatif.md")).unwrap();
    let answer: WhatIf = serde_json::from_str(block(&doc, "## The answer", "json")).unwrap();
    let out = |format| {
        let mut bytes = Vec::new();
        twin::render(&answer, format, WhatIfRenderOptions::default(), &mut bytes).unwrap();
        String::from_utf8(bytes).unwrap()
    };
    assert_eq!(
        block(&doc, "**markdown**", "markdown"),
        out(WhatIfFormat::Markdown)
    );
    let junit = out(WhatIfFormat::Junit);
    for line in block(&doc, "**junit**", "xml").lines().take(2) {
        assert!(junit.contains(line.trim_start()), "{line} in {junit}");
    }
    let metrics = out(WhatIfFormat::Prometheus);
    for line in block(&doc, "**prometheus**", "")
        .lines()
        .filter(|l| *l != "…")
    {
        assert!(
            metrics.contains(&format!("{line}\n")),
            "{line} in {metrics}"
        );
    }
}
