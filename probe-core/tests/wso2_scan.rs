//! `wso2 scan` on installations written in the real files' formats (API-M
//! 2.6 carbon.xml / api-manager.xml / axis2.xml, API-M 4.x deployment.toml):
//! snapshots in every format, the guide's mismatch found, the agreeing pair
//! clean, every port and dial with its `file:line`, malformed files located.

use std::path::PathBuf;

use expect_test::expect_file;
use probe_core::plan::Catalog;
use probe_core::plan::{Plan, Problem, analyze};
use probe_core::wso2::{self, ScanFormat};

const F: &str = "tests/fixtures/wso2";

fn installs(list: &[(&str, &str)]) -> Vec<(String, PathBuf)> {
    list.iter()
        .map(|(h, p)| ((*h).to_owned(), PathBuf::from(format!("{F}/{p}"))))
        .collect()
}

fn mismatch_set() -> Vec<(String, PathBuf)> {
    installs(&[
        ("gw-1", "apim26-mismatch/gw-1"),
        ("keymanager", "apim26-mismatch/keymanager"),
        ("trafficmanager", "apim4-tm/trafficmanager"),
        ("gw-4", "apim4-tm/gw-4"),
    ])
}

fn agree_set() -> Vec<(String, PathBuf)> {
    installs(&[
        ("gw-1", "apim26-agree/gw-1"),
        ("keymanager", "apim26-agree/keymanager"),
        ("trafficmanager", "apim4-tm/trafficmanager"),
    ])
}

fn cluster_set() -> Vec<(String, PathBuf)> {
    installs(&[
        ("gw-a", "apim26-cluster/gw-a"),
        ("gw-b", "apim26-cluster/gw-b"),
    ])
}

fn rendered(set: &[(String, PathBuf)], format: ScanFormat) -> String {
    let scan = wso2::scan(set, None).unwrap();
    let mut out = Vec::new();
    wso2::render(&scan, format, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn snapshots_in_every_format() {
    for (name, set) in [
        ("mismatch", mismatch_set()),
        ("agree", agree_set()),
        ("cluster", cluster_set()),
    ] {
        for (ext, format) in [
            ("txt", ScanFormat::Table),
            ("json", ScanFormat::Json),
            ("toml", ScanFormat::Toml),
        ] {
            expect_file![format!("snapshots/wso2-scan-{name}.{ext}")]
                .assert_eq(&rendered(&set, format));
        }
    }
}

#[test]
fn the_guides_mismatch_is_found_with_both_fixes() {
    let scan = wso2::scan(&mismatch_set(), None).unwrap();
    assert_eq!(scan.mismatches.len(), 1, "{:#?}", scan.mismatches);
    let m = &scan.mismatches[0];
    assert_eq!(
        (
            m.client_host.as_str(),
            m.server_host.as_str(),
            m.name.as_str(),
            m.client_port,
            m.server_port
        ),
        ("gw-1", "keymanager", "thrift-km", 10399, 10402)
    );
    assert!(
        m.fix.contains("set ThriftClientPort 10402 on gw-1")
            && m.fix.contains("ThriftServerPort 10399 on keymanager"),
        "{}",
        m.fix
    );
    assert!(scan.differences.is_empty(), "{:#?}", scan.differences);
    assert_eq!(scan.exit_code(), 1);
}

#[test]
fn the_agreeing_pair_is_clean() {
    let scan = wso2::scan(&agree_set(), None).unwrap();
    assert!(scan.mismatches.is_empty(), "{:#?}", scan.mismatches);
    assert!(scan.differences.is_empty(), "{:#?}", scan.differences);
    assert_eq!(scan.exit_code(), 0);
    let gw = &scan.installs[0];
    let thrift = gw.dials.iter().find(|d| d.name == "thrift-km").unwrap();
    assert_eq!(
        (thrift.to_host.as_str(), thrift.to_port, thrift.how.as_str()),
        ("keymanager", 10402, "ThriftClientPort")
    );
}

#[test]
fn every_port_and_dial_has_its_file_and_line() {
    for set in [mismatch_set(), agree_set(), cluster_set()] {
        let scan = wso2::scan(&set, None).unwrap();
        for i in &scan.installs {
            // `file:line` of a real setting: the line exists and is not a
            // comment or blank.
            let located = |s: &str| {
                let Some((file, line)) = s.rsplit_once(':') else {
                    return false;
                };
                let Ok(line) = line.parse::<usize>() else {
                    return false;
                };
                let text = std::fs::read_to_string(file).unwrap_or_default();
                let l = text.lines().nth(line.wrapping_sub(1)).unwrap_or("").trim();
                s.starts_with(&i.home)
                    && !l.is_empty()
                    && !l.starts_with("<!--")
                    && !l.starts_with('#')
            };
            assert!(located(&i.offset_source), "{}: {}", i.host, i.offset_source);
            for p in &i.ports {
                assert!(located(&p.source), "{} {}: {}", i.host, p.name, p.source);
            }
            for d in &i.dials {
                assert!(located(&d.source), "{} {}: {}", i.host, d.name, d.source);
            }
        }
    }
}

#[test]
fn offsets_come_from_start_up_over_deployment_toml_over_carbon_xml() {
    let scan = wso2::scan(&cluster_set(), None).unwrap();
    let b = &scan.installs[1];
    assert_eq!(b.offset, 3);
    assert_eq!(
        b.offset_source,
        format!("{F}/apim26-cluster/gw-b/bin/wso2server.sh:7")
    );
    // The cluster port is not moved by the offset; members are dials.
    let cluster = b.ports.iter().find(|p| p.name == "cluster").unwrap();
    assert_eq!(cluster.port, 4200);
    assert_eq!(
        b.dials
            .iter()
            .map(|d| (d.to_host.as_str(), d.to_port))
            .collect::<Vec<_>>(),
        vec![("gw-a", 4100)]
    );
    let tm = &wso2::scan(&agree_set(), None).unwrap().installs[2];
    assert_eq!(
        (tm.offset, tm.role.as_str()),
        (1, "wso2-apim-trafficmanager")
    );
    assert!(
        tm.offset_source.ends_with("deployment.toml:5"),
        "{}",
        tm.offset_source
    );
    assert!(
        tm.ports
            .iter()
            .any(|p| p.name == "binary" && p.port == 9612)
    );
}

#[test]
fn the_plan_fragment_lints_to_the_same_verdict() {
    let frag = rendered(&mismatch_set(), ScanFormat::Toml);
    let a = analyze(&frag, "scan.toml", Catalog::builtin());
    let mismatches: Vec<_> = a
        .diagnostics
        .0
        .iter()
        .filter(|d| matches!(d.problem, Problem::DialMismatch { .. }))
        .collect();
    assert_eq!(mismatches.len(), 1, "{}", a.diagnostics);
    assert!(a.plan.is_some(), "{}", a.diagnostics);
    let frag = rendered(&agree_set(), ScanFormat::Toml);
    let a = analyze(&frag, "scan.toml", Catalog::builtin());
    assert!(a.diagnostics.0.is_empty(), "{}", a.diagnostics);
    let frag = rendered(&cluster_set(), ScanFormat::Toml);
    let a = analyze(&frag, "scan.toml", Catalog::builtin());
    assert!(!a.diagnostics.has_errors(), "{}", a.diagnostics);
}

#[test]
fn differences_from_a_plan_are_reported() {
    let plan = Plan::load(std::path::Path::new(
        "../examples/wso2-thrift-offsets-agree.toml",
    ))
    .unwrap();
    let set = installs(&[
        ("gw-1", "apim26-mismatch/gw-1"),
        ("keymanager", "apim26-mismatch/keymanager"),
    ]);
    let scan = wso2::scan(&set, Some(&plan)).unwrap();
    let kinds: Vec<(&str, &str)> = scan
        .differences
        .iter()
        .map(|d| (d.kind, d.host.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![("dial-differs", "gw-1")],
        "{:#?}",
        scan.differences
    );
    assert!(
        scan.differences[0].detail.contains(
            "the plan probes gw-1 -> keymanager:10402 for thrift-km, the installation dials 10399"
        ),
        "{}",
        scan.differences[0].detail
    );
    // The agreeing installations agree with the agreeing plan.
    let scan = wso2::scan(&agree_set()[..2], Some(&plan)).unwrap();
    assert!(scan.differences.is_empty(), "{:#?}", scan.differences);
    assert_eq!(scan.exit_code(), 0);
    // A plan whose key manager runs at another offset: the port the plan
    // assumes is not opened, and the offsets differ.
    let other = Plan::parse(
        &std::fs::read_to_string("../examples/wso2-thrift-offsets-agree.toml")
            .unwrap()
            .replace("port_offset = 5", "port_offset = 6"),
        "p.toml",
    )
    .unwrap();
    let scan = wso2::scan(&agree_set()[..2], Some(&other)).unwrap();
    let kinds: Vec<&str> = scan.differences.iter().map(|d| d.kind).collect();
    assert!(kinds.contains(&"offset-differs"), "{kinds:?}");
    assert!(kinds.contains(&"port-not-opened"), "{kinds:?}");
}

#[test]
fn malformed_files_are_named_with_line_and_column() {
    for (dir, want) in [
        (
            "malformed/bad-xml",
            "tests/fixtures/wso2/malformed/bad-xml/repository/conf/carbon.xml:4:18: ",
        ),
        (
            "malformed/bad-toml",
            "tests/fixtures/wso2/malformed/bad-toml/repository/conf/deployment.toml:3:10: ",
        ),
        (
            "malformed/bad-offset",
            "tests/fixtures/wso2/malformed/bad-offset/repository/conf/carbon.xml:17:9: <Offset> must be a port offset (0..=65535), found `two`",
        ),
    ] {
        let err = wso2::scan(&installs(&[("x", dir)]), None).unwrap_err();
        assert!(err.to_string().starts_with(want), "{err}");
    }
    assert!(wso2::scan::parse_arg("no-equals").is_err());
    let err = wso2::scan(&installs(&[("x", "nothing-here")]), None).unwrap_err();
    assert!(
        err.to_string().contains("no repository/conf/carbon.xml"),
        "{err}"
    );
}
