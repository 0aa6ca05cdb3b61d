//! The `portcall` binary as an operator meets it: exit codes, where output
//! goes, and the must-show behaviours of the plan commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn portcall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcall"))
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("run portcall")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn plan_show_lists_effective_ports_of_the_example() {
    let out = portcall(&["plan", "show", "examples/wso2-distributed.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let analytics = s.lines().find(|l| l.starts_with("apim-analytics")).unwrap();
    assert!(
        analytics.contains("thrift 7612") && analytics.contains("thrift-ssl 7712/tls"),
        "{analytics}"
    );
    let km = s.lines().find(|l| l.starts_with("keymanager")).unwrap();
    assert!(km.contains("+2") && km.contains("thrift-km 10399"), "{km}");
    // Each port's planned service, as the proof will ask it.
    assert!(km.contains("thrift-km 10399/tls thrift"), "{km}");
    let json = portcall(&[
        "plan",
        "show",
        "examples/wso2-distributed.toml",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let km = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "keymanager")
        .unwrap();
    let thrift = km["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "thrift-km")
        .unwrap();
    assert_eq!(thrift["service"], "thrift", "{thrift}");
    let store = s.lines().find(|l| l.contains("wso2-apim-store")).unwrap();
    assert!(
        store.contains("+1") && store.contains("https-servlet 9444/tls"),
        "{store}"
    );
}

/// The plan of `scripts/bench/mesh_plan.py N M`.
fn mesh(n: usize, m: usize) -> String {
    let mut s = format!("name = \"mesh-{n}x{m}\"\n");
    for i in 1..=n {
        s += &format!(
            "[[hosts]]\nname = \"h{i}\"\naddress = \"198.18.{}.{}\"\nroles = [\"svc\"]\n",
            (i - 1) / 250,
            (i - 1) % 250 + 1
        );
    }
    s += "[roles.svc]\nports = [\n";
    for j in 0..m {
        s += &format!(
            "  {{ name = \"p{j}\", port = {}, offset = false }},\n",
            20000 + j
        );
    }
    let names: Vec<String> = (0..m).map(|j| format!("\"p{j}\"")).collect();
    s += &format!(
        "]\n[[flows]]\nfrom = \"all\"\nto = \"role:svc\"\nports = [{}]\n",
        names.join(", ")
    );
    s
}

#[test]
fn plan_show_json_streams_the_same_document_as_the_whole_plan_renders() {
    // A mesh big enough to stream over many buffers: 60 x 59 x 5 paths.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.toml");
    let src = mesh(60, 5);
    std::fs::write(&file, &src).unwrap();
    let f = file.to_str().unwrap();
    let out = portcall(&["plan", "show", f, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The rendering of the plan expanded whole, paths held in memory.
    let whole = probe_core::plan::Plan::parse(&src, f).unwrap();
    assert!(whole.holds_every_path());
    let mut want = Vec::new();
    probe_core::render::plan::plan_json(&whole, &mut want).unwrap();
    assert_eq!(out.stdout.len(), want.len());
    assert!(out.stdout == want, "plan show --format json differs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths = v["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 60 * 59 * 5);
    assert_eq!(paths[0]["from"], "h2");
    assert_eq!(paths[0]["to"], "h1");
    assert_eq!(paths[paths.len() - 1]["from"], "h59");
    assert_eq!(paths[paths.len() - 1]["port"], 20004);
    let lint = portcall(&["plan", "lint", f]);
    assert_eq!(lint.status.code(), Some(0), "{}", text(&lint.stderr));
    assert!(
        text(&lint.stdout).contains("ok: 60 hosts, 1 flow, 17700 paths"),
        "{}",
        text(&lint.stdout)
    );
}

#[test]
fn plan_show_json_is_the_v1_schema() {
    let out = portcall(&[
        "plan",
        "show",
        "examples/wso2-distributed.toml",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "portcall.plan/v1");
    assert_eq!(v["paths"].as_array().unwrap().len(), 83);
}

#[test]
fn lint_of_publisher_and_store_without_offsets_fails_and_suggests_offset_1() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("portal.toml");
    std::fs::write(
        &plan,
        r#"name = "portal"
[[hosts]]
name = "portal"
address = "198.18.0.1"
roles = ["wso2-apim-publisher", "wso2-apim-store"]
[[hosts]]
name = "op"
address = "198.18.0.2"
[[flows]]
from = "host:op"
to = "host:portal"
ports = ["https-servlet"]
"#,
    )
    .unwrap();
    let out = portcall(&["plan", "lint", plan.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let s = text(&out.stdout);
    assert!(s.contains("portal.toml:5:"), "{s}");
    assert!(
        s.contains("`wso2-apim-publisher`") && s.contains("`wso2-apim-store`"),
        "{s}"
    );
    assert!(s.contains("port_offset = 1"), "{s}");
}

#[test]
fn lint_of_the_example_is_clean() {
    let out = portcall(&["plan", "lint", "examples/wso2-distributed.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("0 warnings"));
}

#[test]
fn unquoted_address_names_file_and_line_4() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("unquoted.toml");
    std::fs::write(
        &plan,
        "name = \"x\"\n[[hosts]]\nname = \"db\"\naddress = 198.18.0.1\n[[flows]]\nfrom = \"all\"\nto = \"all\"\nports = [3306]\n",
    )
    .unwrap();
    for cmd in ["show", "lint"] {
        let out = portcall(&["plan", cmd, plan.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "plan {cmd}");
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(
            all.contains("unquoted.toml:4:11: error"),
            "plan {cmd}: {all}"
        );
        assert!(
            all.contains(r#"address = "198.18.0.1""#),
            "plan {cmd}: {all}"
        );
    }
}

#[test]
fn missing_plan_file_is_exit_2_with_the_path() {
    let out = portcall(&["plan", "show", "no/such/plan.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("read plan no/such/plan.toml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(portcall(&["plan", "show"]).status.code(), Some(2));
    assert_eq!(portcall(&["no-such-command"]).status.code(), Some(2));
    assert_eq!(
        portcall(&["catalog", "--format", "yaml"]).status.code(),
        Some(2)
    );
}

#[test]
fn catalog_lists_roles_as_table_and_json() {
    let out = portcall(&["catalog"]);
    assert_eq!(out.status.code(), Some(0));
    let table = text(&out.stdout);
    assert!(table.contains("mysql 3306 fixed"), "{table}");
    // The planned service, where the port's name does not say it.
    assert!(table.contains("thrift-km 10397/tls thrift"), "{table}");
    assert!(table.contains("broker 5672 amqp"), "{table}");
    assert!(
        table.contains("dials thrift-km 10397 on wso2-apim-keymanager"),
        "{table}"
    );
    let out = portcall(&["catalog", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "portcall.catalog/v1");
    let das = v["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "wso2-das")
        .unwrap();
    assert_eq!(das["ports"][2]["port"], 7611);
    assert_eq!(das["ports"][2]["service"], "thrift");
}

/// A 200-host, 500-port, all-to-all plan: about 40 KB of text that would
/// expand into 19.9 million paths.
fn huge_plan() -> String {
    let mut s = String::from("name = \"huge\"\n[roles.big]\nports = [\n");
    for i in 0..500 {
        s.push_str(&format!(
            "  {{ name = \"p{i}\", port = {}, offset = false }},\n",
            20000 + i
        ));
    }
    s.push_str("]\n");
    for h in 0..200 {
        s.push_str(&format!(
            "[[hosts]]\nname = \"h{h}\"\naddress = \"198.18.{}.{}\"\nroles = [\"big\"]\n",
            h / 200,
            h % 200 + 1
        ));
    }
    s.push_str("[[flows]]\nfrom = \"all\"\nto = \"all\"\nports = [");
    s.push_str(
        &(0..500)
            .map(|i| format!("\"p{i}\""))
            .collect::<Vec<_>>()
            .join(", "),
    );
    s.push_str("]\n");
    s
}

#[test]
fn a_twenty_million_path_plan_exits_2_with_the_counts_before_allocating_them() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("huge.toml");
    std::fs::write(&plan, huge_plan()).unwrap();
    let plan = plan.to_str().unwrap();
    for cmd in ["lint", "show"] {
        // Exit 2 with the count, not an abort after a minute of allocating
        // (the time it takes is measured by hand, not here: see README).
        let out = portcall(&["plan", cmd, plan]);
        let err = text(&[out.stdout.as_slice(), out.stderr.as_slice()].concat());
        assert_eq!(out.status.code(), Some(2), "plan {cmd}: {err}");
        assert!(
            err.contains("expand into 19900000 paths") && err.contains("over the limit of 1000000"),
            "{err}"
        );
        assert!(err.contains("huge.toml:"), "located: {err}");
    }
}

#[test]
fn plan_show_rejects_escape_sequences_in_names_with_a_location_and_prints_none() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("esc.toml");
    std::fs::write(
        &plan,
        "name = \"x\\u001b]0;pwned\\u0007\\u001b[2J\"\n[zones]\n\"d\\u001bmz\" = \"z\"\n[[hosts]]\nname = \"a\"\naddress = \"198.18.0.1\"\n[[hosts]]\nname = \"b\"\naddress = \"198.18.0.2\"\nroles = [\"mysql\"]\n[[flows]]\nname = \"f\\u009b\"\nfrom = \"host:a\"\nto = \"host:b\"\nports = [\"mysql\"]\n",
    )
    .unwrap();
    let out = portcall(&["plan", "show", plan.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let all = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
    assert!(
        !all.iter().any(|&b| b == 0x1b || b == 0x07),
        "raw control bytes reached the terminal: {:?}",
        text(&all)
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("esc.toml:1:8") && err.contains("plan name"),
        "{err}"
    );
    assert!(
        err.contains("zone name") && err.contains("flow name"),
        "{err}"
    );
    assert!(err.contains("control character"), "{err}");
}

#[test]
fn plan_lint_reports_the_guides_thrift_mismatch_with_both_fixes_and_exits_1() {
    let out = portcall(&["plan", "lint", "examples/wso2-thrift-offsets.toml"]);
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(
        s.contains("error: gw-1 dials thrift-km on 10399 (10397 + its offset 2) but keymanager listens on 10402 (10397 + its offset 5): set ThriftClientPort 10402 on gw-1 (plan: dial_overrides = { thrift-km = 10402 }), or ThriftServerPort 10399 on keymanager (plan: port_overrides = { thrift-km = 10399 })"),
        "{s}"
    );
    let out = portcall(&["plan", "lint", "examples/wso2-thrift-offsets-agree.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains(": ok: 3 hosts"));
}

#[test]
fn wso2_scan_exit_codes_and_formats() {
    let f = "probe-core/tests/fixtures/wso2";
    let gw = format!("gw-1={f}/apim26-mismatch/gw-1");
    let km = format!("keymanager={f}/apim26-mismatch/keymanager");
    let out = portcall(&["wso2", "scan", &gw, &km]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("mismatch: gw-1 dials thrift-km on 10399 but keymanager listens on 10402")
    );
    let gw = format!("gw-1={f}/apim26-agree/gw-1");
    let km = format!("keymanager={f}/apim26-agree/keymanager");
    let out = portcall(&["wso2", "scan", &gw, &km, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "portcall.wso2/v1");
    assert_eq!(v["mismatches"].as_array().unwrap().len(), 0);
    let out = portcall(&["wso2", "scan", &gw, &km, "--format", "toml"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("dial_overrides = {"));
    let bad = format!("x={f}/malformed/bad-xml");
    let out = portcall(&["wso2", "scan", &bad]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("malformed/bad-xml/repository/conf/carbon.xml:4:18: "),
        "{}",
        text(&out.stderr)
    );
    let out = portcall(&["wso2", "scan", "no-equals-sign"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn pki_issue_plan_issues_every_host_and_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let pki_s = pki.to_str().unwrap();
    let out = portcall(&["pki", "init", "--dir", pki_s]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan = "examples/wso2-distributed.toml";
    let out = portcall(&["pki", "issue", "--dir", pki_s, "--plan", plan]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = portcall(&["plan", "show", plan, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let hosts: Vec<&str> = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert!(hosts.len() > 3);
    for name in hosts.iter().copied().chain(["coordinator"]) {
        assert!(pki.join(format!("{name}.pem")).exists(), "{name}.pem");
        assert!(
            pki.join(format!("{name}-key.pem")).exists(),
            "{name}-key.pem"
        );
    }
    assert_eq!(
        text(&out.stderr).lines().count(),
        hosts.len() + 1,
        "{}",
        text(&out.stderr)
    );
    // Again without --force: refused, exit 2.
    let out = portcall(&["pki", "issue", "--dir", pki_s, "--plan", plan]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    // --plan and --name are one or the other.
    let out = portcall(&[
        "pki", "issue", "--dir", pki_s, "--plan", plan, "--name", "x",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn agent_with_a_host_not_in_the_plan_says_so_with_did_you_mean_before_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let empty_pki = dir.path().to_str().unwrap();
    let out = portcall(&[
        "agent",
        "--plan",
        "examples/wso2-distributed.toml",
        "--host",
        "keymanagr",
        "--pki",
        empty_pki,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("\"keymanagr\" is not in plan"), "{err}");
    assert!(err.contains("did you mean `keymanager`?"), "{err}");
    assert!(
        !err.contains(".pem"),
        "no certificate was looked for: {err}"
    );
}

#[test]
fn check_only_with_a_typo_is_exit_2_with_did_you_mean() {
    let out = portcall(&[
        "check",
        "--plan",
        "examples/wso2-distributed.toml",
        "--insecure",
        "--only",
        "host:keymanagr",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("--only host:keymanagr: matches nothing"),
        "{err}"
    );
    assert!(err.contains("did you mean `host:keymanager`?"), "{err}");
    let out = portcall(&[
        "check",
        "--plan",
        "examples/wso2-distributed.toml",
        "--insecure",
        "--only",
        "keymanager",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("expected host:NAME"),
        "{}",
        text(&out.stderr)
    );
}
