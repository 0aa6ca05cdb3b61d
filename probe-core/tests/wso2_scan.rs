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

// --- WSO2 as WSO2 ships it (issue 23) ---------------------------------------

fn five_node(km: &str, tm: &str) -> Vec<(String, PathBuf)> {
    installs(&[
        ("gw-worker", "apim22/consistent/gw-worker"),
        ("gw-manager", "apim22/consistent/gw-manager"),
        ("km", km),
        ("tm", tm),
        ("analytics", "apim22/consistent/analytics"),
    ])
}

fn consistent() -> Vec<(String, PathBuf)> {
    five_node("apim22/consistent/km", "apim22/consistent/tm")
}

fn broken() -> Vec<(String, PathBuf)> {
    five_node("apim22/broken/km", "apim22/broken/tm")
}

fn dial<'a>(scan: &'a wso2::Scan, host: &str, name: &str) -> Vec<&'a wso2::DialFinding> {
    scan.installs
        .iter()
        .find(|i| i.host == host)
        .unwrap()
        .dials
        .iter()
        .filter(|d| d.name == name)
        .collect()
}

#[test]
fn the_catalog_dials_analytics_where_wso2_ships_it() {
    // A gateway and API-M Analytics as shipped, the plan setting nothing:
    // the analytics role listens where the gateway dials (7612/7712), no
    // dial_overrides needed, no lint error. The same with the DAS role at
    // offset 1.
    for analytics in [
        r#"roles = ["wso2-apim-analytics"]"#,
        r#"roles = [{ role = "wso2-das", port_offset = 1 }]"#,
    ] {
        let plan = PLAN_SHIPPED.replace("ROLES", analytics);
        let a = analyze(&plan, "shipped.toml", Catalog::builtin());
        assert!(a.diagnostics.0.is_empty(), "{}", a.diagnostics);
        let p = a.plan.unwrap();
        let mut ports: Vec<u16> = p.paths.iter().map(|x| x.port.get()).collect();
        ports.sort_unstable();
        assert_eq!(ports, vec![7612, 7712]);
        assert!(p.paths.iter().all(|x| x.server_port.is_none()));
    }
    // The bundled example: analytics at offset 1, gateways without
    // analytics dial_overrides, lints clean.
    let example = std::fs::read_to_string("../examples/wso2-distributed.toml").unwrap();
    assert!(!example.contains("thrift = 7612"));
    let a = analyze(&example, "wso2-distributed.toml", Catalog::builtin());
    assert!(a.diagnostics.0.is_empty(), "{}", a.diagnostics);
}

const PLAN_SHIPPED: &str = r#"
name = "shipped"
[[hosts]]
name = "gw"
address = "198.18.0.2"
roles = ["wso2-apim-gateway"]
[[hosts]]
name = "analytics"
address = "198.18.0.3"
ROLES
[[flows]]
from = "host:gw"
to = "host:analytics"
ports = ["thrift", "thrift-ssl"]
"#;

#[test]
fn a_quoted_offset_and_env_placeholders_as_api_m_3_1_ships_them() {
    let set = installs(&[("gateway", "apim31/gateway"), ("am", "apim31/am")]);
    let scan = wso2::scan(&set, None).unwrap();
    let gw = &scan.installs[0];
    assert_eq!((gw.offset, gw.role.as_str()), (0, "wso2-apim-gateway"));
    assert!(
        gw.offset_source
            .ends_with("gateway/repository/conf/deployment.toml:7")
    );
    assert_eq!(
        gw.unresolved,
        vec![format!(
            "{F}/apim31/gateway/repository/conf/deployment.toml:5: [server] node_ip $env{{NODE_IP}} is not set in the scanned files"
        )]
    );
    // The all-in-one node's $env{NODE_IP} is in its start script.
    let am = &scan.installs[1];
    assert_eq!(am.names, vec!["am31.example.com", "198.18.20.5"]);
    assert_eq!(am.role, "wso2-apim-trafficmanager", "{}", am.profile_source);
    assert!(scan.mismatches.is_empty(), "{:#?}", scan.mismatches);
    assert!(scan.differences.is_empty(), "{:#?}", scan.differences);
    assert_eq!(scan.exit_code(), 0);
    // Analytics enabled with the string "True" publishes.
    assert_eq!(dial(&scan, "gateway", "thrift")[0].to_port, 7612);
}

#[test]
fn the_consistent_five_node_2x_deployment_is_clean() {
    let scan = wso2::scan(&consistent(), None).unwrap();
    assert!(scan.mismatches.is_empty(), "{:#?}", scan.mismatches);
    assert!(scan.differences.is_empty(), "{:#?}", scan.differences);
    assert_eq!(scan.exit_code(), 0);
    // API-M Analytics is recognised by its carbon.xml <Name>, at offset 1.
    let a = &scan.installs[4];
    assert_eq!(a.role, "wso2-apim-analytics");
    assert!(a.ports.iter().any(|p| p.name == "thrift" && p.port == 7612));
    let thrift = dial(&scan, "gw-worker", "thrift");
    assert_eq!(
        (thrift[0].to_port, thrift[0].reaches.as_str()),
        (7612, "analytics")
    );
    // <Analytics><Enabled>false: the gateway manager publishes nothing.
    assert!(dial(&scan, "gw-manager", "thrift").is_empty());
    assert!(dial(&scan, "gw-manager", "thrift-ssl").is_empty());
    // A 2.x gateway without -Dprofile is a gateway, with its Thrift dial.
    let gw = &scan.installs[0];
    assert_eq!(gw.role, "wso2-apim-gateway");
    assert!(
        gw.profile_source
            .starts_with("inferred: APIKeyValidator ServerURL")
    );
    let t = dial(&scan, "gw-worker", "thrift-km");
    assert_eq!(
        (t[0].to_host.as_str(), t[0].to_port, t[0].reaches.as_str()),
        ("km.example.com", 10397, "km")
    );
    // The JMS throttle-decision subscription (brokerlist) and the database.
    let broker: Vec<_> = dial(&scan, "gw-worker", "broker")
        .iter()
        .map(|d| (d.to_host.as_str(), d.to_port, d.reaches.as_str()))
        .collect();
    assert_eq!(
        broker,
        vec![("localhost", 5672, "local"), ("tm.example.com", 5672, "tm")]
    );
    let db = dial(&scan, "km", "mysql");
    assert_eq!(
        (
            db[0].to_host.as_str(),
            db[0].to_port,
            db[0].database.as_deref()
        ),
        ("db.example.com", 3306, Some("mysql"))
    );
    assert_eq!(scan.outside.len(), 1);
    assert_eq!(
        (scan.outside[0].host.as_str(), scan.outside[0].port),
        ("db.example.com", 3306)
    );
}

#[test]
fn the_broken_five_node_2x_deployment_reports_each_broken_dial_with_both_fixes() {
    let scan = wso2::scan(&broken(), None).unwrap();
    assert_eq!(scan.exit_code(), 1);
    for gw in ["gw-worker", "gw-manager"] {
        let got: Vec<(&str, &str, u16, u16)> = scan
            .mismatches
            .iter()
            .filter(|m| m.client_host == gw)
            .map(|m| {
                (
                    m.name.as_str(),
                    m.server_host.as_str(),
                    m.client_port,
                    m.server_port,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("https-servlet", "km", 9443, 9448),
                ("binary", "tm", 9611, 9612),
                ("binary-ssl", "tm", 9711, 9712),
                ("broker", "tm", 5672, 5673),
                ("thrift-km", "km", 10397, 10402),
            ],
            "{gw}"
        );
    }
    let fix = |name: &str| {
        &scan
            .mismatches
            .iter()
            .find(|m| m.client_host == "gw-worker" && m.name == name)
            .unwrap()
            .fix
    };
    assert!(fix("thrift-km").contains("set ThriftClientPort 10402 on gw-worker"));
    assert!(fix("thrift-km").ends_with("or ThriftServerPort 10397 on km"));
    assert!(fix("https-servlet").contains("APIKeyValidator ServerURL 9448 on gw-worker"));
    assert!(fix("https-servlet").contains("or give km offset 0 (now 5"));
    assert!(fix("broker").contains("brokerlist 5673 on gw-worker"));
    assert!(fix("broker").contains("or give tm offset 0 (now 1, "));
    assert!(fix("broker").ends_with("broken/tm/bin/wso2server.sh:8)"));
    assert!(fix("binary").contains("ReceiverUrlGroup 9612 on gw-worker"));
    assert!(scan.differences.is_empty(), "{:#?}", scan.differences);
}

#[test]
fn api_m_2_1_throttling_publishers_under_data_publisher_are_read() {
    let scan = wso2::scan(&installs(&[("gw21", "apim21/gw")]), None).unwrap();
    let binary: Vec<_> = dial(&scan, "gw21", "binary")
        .iter()
        .map(|d| (d.to_host.as_str(), d.to_port, d.reaches.as_str()))
        .collect();
    assert_eq!(
        binary,
        vec![
            ("localhost", 9611, "local"),
            ("tm21.example.com", 9611, "outside")
        ]
    );
    // DAS receivers separated by '|', and a WSClient gateway (no Thrift).
    assert_eq!(dial(&scan, "gw21", "thrift").len(), 2);
    assert!(dial(&scan, "gw21", "thrift-km").is_empty());
    assert_eq!(scan.installs[0].role, "wso2-apim-gateway");
    // Outside the scan: listed, not a mismatch.
    assert_eq!(scan.outside.len(), 7, "{:#?}", scan.outside);
    assert_eq!(scan.exit_code(), 0);
}

#[test]
fn dials_reach_the_installation_their_host_name_names_whatever_its_name() {
    let set = installs(&[
        ("gateway", "apim4-hostnames/gw"),
        ("controlplane", "apim4-hostnames/cp"),
    ]);
    let scan = wso2::scan(&set, None).unwrap();
    assert_eq!(scan.installs[1].names, vec!["cp.example.com"]);
    let got: Vec<(&str, &str, u16, u16)> = scan
        .mismatches
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.dialled_host.as_str(),
                m.client_port,
                m.server_port,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("https-servlet", "cp.example.com", 9443, 9444),
            ("https-servlet", "cp.example.com", 9443, 9444),
            ("broker", "cp.example.com", 5672, 5673),
            ("binary", "cp.example.com", 9611, 9612),
            ("binary-ssl", "cp.example.com", 9711, 9712),
            ("https-servlet", "cp.example.com", 9443, 9444),
            ("broker", "cp.example.com", 5672, 5673),
        ]
    );
    assert!(
        scan.mismatches
            .iter()
            .all(|m| m.server_host == "controlplane")
    );
    assert_eq!(scan.exit_code(), 1);
    // The event hub's own endpoints are local; the database is outside.
    assert!(dial(&scan, "controlplane", "broker")[0].reaches == "local");
    assert_eq!(
        scan.outside
            .iter()
            .map(|o| (
                o.host.as_str(),
                o.port,
                o.database.as_deref(),
                o.dialled_by.len()
            ))
            .collect::<Vec<_>>(),
        vec![("pg.example.com", 5432, Some("postgresql"), 2)]
    );
}

#[test]
fn the_toml_plan_reproduces_the_scan_for_lint_and_check() {
    let sp26 =
        |analytics: &str| installs(&[("gateway", "apim26-sp/gateway"), ("analytics", analytics)]);
    for set in [
        broken(),
        consistent(),
        mismatch_set(),
        sp26("apim26-sp/analytics"),
        sp26("apim26-sp/analytics-offset0"),
    ] {
        let scan = wso2::scan(&set, None).unwrap();
        let mut out = Vec::new();
        wso2::render(&scan, ScanFormat::Toml, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let a = analyze(&text, "scan.toml", Catalog::builtin());
        let lint: Vec<_> = a
            .diagnostics
            .0
            .iter()
            .filter(|d| matches!(d.problem, Problem::DialMismatch { .. }))
            .collect();
        assert_eq!(
            lint.len(),
            scan.mismatches.len(),
            "{}\n{text}",
            a.diagnostics
        );
        assert_eq!(
            a.diagnostics.has_errors(),
            !scan.mismatches.is_empty(),
            "{}\n{text}",
            a.diagnostics
        );
        let plan = a.plan.expect("a plan with mismatches still runs");
        // Every dial off the node is a path probed on the dialled port.
        for i in &scan.installs {
            for d in i.dials.iter().filter(|d| d.reaches != "local") {
                assert!(
                    plan.paths
                        .iter()
                        .any(|p| p.from == i.host && p.port.get() == d.to_port),
                    "{} -> {}:{} not probed\n{text}",
                    i.host,
                    d.to_host,
                    d.to_port
                );
            }
        }
    }
    // The database outside the scan is a plan host with its catalog role.
    let scan = wso2::scan(&consistent(), None).unwrap();
    let mut out = Vec::new();
    wso2::render(&scan, ScanFormat::Toml, &mut out).unwrap();
    let plan = Plan::parse(&String::from_utf8(out).unwrap(), "scan.toml").unwrap();
    let db = plan.host("db.example.com").unwrap();
    assert_eq!(db.roles[0].role, "mysql");
    // A client dialling another port than the catalog's is pinned.
    let gw4 = plan_of(&mismatch_set()).host("gw-4").unwrap().dials.clone();
    assert!(
        gw4.iter()
            .any(|d| d.def.name == "binary" && d.port.get() == 9612),
        "{gw4:#?}"
    );
}

fn plan_of(set: &[(String, PathBuf)]) -> Plan {
    let scan = wso2::scan(set, None).unwrap();
    let mut out = Vec::new();
    wso2::render(&scan, ScanFormat::Toml, &mut out).unwrap();
    Plan::parse(&String::from_utf8(out).unwrap(), "scan.toml").unwrap()
}

#[test]
fn scan_with_its_own_plan_agrees_and_a_changed_deployment_differs_both_ways() {
    let plan = plan_of(&consistent());
    let scan = wso2::scan(&consistent(), Some(&plan)).unwrap();
    assert!(scan.differences.is_empty(), "{:#?}", scan.differences);
    assert_eq!(scan.exit_code(), 0);
    let scan = wso2::scan(&broken(), Some(&plan)).unwrap();
    let kinds = |host: &str| -> Vec<&str> {
        let mut k: Vec<&str> = scan
            .differences
            .iter()
            .filter(|d| d.host == host)
            .map(|d| d.kind)
            .collect();
        k.dedup();
        k
    };
    assert_eq!(
        kinds("km"),
        vec!["offset-differs", "port-not-opened", "port-not-planned"]
    );
    assert_eq!(
        kinds("tm"),
        vec!["offset-differs", "port-not-opened", "port-not-planned"]
    );
    assert!(scan
        .differences
        .iter()
        .any(|d| d.detail == format!(
            "tm opens 5673 (broker, {F}/apim22/broken/tm/bin/wso2server.sh:8), the plan gives tm no port there"
        )), "{:#?}", scan.differences);
    // The other way: installations dialling what the plan does not probe.
    let other = plan_of(&installs(&[("gw-worker", "apim22/consistent/gw-worker")]));
    let scan = wso2::scan(&consistent()[..1], Some(&other)).unwrap();
    assert!(scan.differences.is_empty(), "{:#?}", scan.differences);
    let lonely = Plan::parse(
        "name = \"p\"\nflows = []\n[[hosts]]\nname = \"gw-worker\"\naddress = \"gw-worker.example.com\"\nroles = [\"wso2-apim-gateway\"]\n[[hosts]]\nname = \"km\"\naddress = \"km.example.com\"\nroles = [\"wso2-apim-keymanager\"]\n",
        "p.toml",
    );
    let lonely = lonely.unwrap();
    let scan = wso2::scan(&consistent()[..1], Some(&lonely)).unwrap();
    let not_planned: Vec<&str> = scan
        .differences
        .iter()
        .filter(|d| d.kind == "dial-not-planned")
        .map(|d| d.detail.as_str())
        .collect();
    assert_eq!(not_planned.len(), 2, "{not_planned:#?}");
    assert!(not_planned[0].starts_with("gw-worker dials km.example.com:9443 (https-servlet, "));
}

/// `wso2 scan` of one product home whose carbon.xml is `make`'s doing:
/// the error (or result) and how long it took.
fn scan_hostile(
    make: impl FnOnce(&std::path::Path),
) -> (Result<wso2::Scan, String>, std::time::Duration) {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("repository/conf");
    std::fs::create_dir_all(&conf).unwrap();
    make(&conf.join("carbon.xml"));
    let start = std::time::Instant::now();
    let r = wso2::scan(&[("x".to_owned(), dir.path().to_owned())], None).map_err(|e| e.to_string());
    (r, start.elapsed())
}

#[test]
fn hostile_trees_give_a_clear_error_or_a_result_within_a_second() {
    use std::time::Duration;
    let second = Duration::from_secs(1);
    let err = |make: &dyn Fn(&std::path::Path), want: &str| {
        let (r, took) = scan_hostile(make);
        let e = r.expect_err(want);
        assert!(
            e.contains("repository/conf/carbon.xml") && e.contains(want),
            "{e}"
        );
        assert!(took < second, "{want}: {took:?}");
    };
    err(
        &|p| {
            std::fs::write(
                p,
                format!("{}{}", "<a>".repeat(200_000), "</a>".repeat(200_000)),
            )
            .unwrap()
        },
        "elements nested deeper than 256",
    );
    err(
        &|p| std::os::unix::fs::symlink("/dev/zero", p).unwrap(),
        "not a regular file (a character device)",
    );
    err(
        &|p| {
            let ok = std::process::Command::new("mkfifo")
                .arg(p)
                .status()
                .unwrap();
            assert!(ok.success());
        },
        "not a regular file (a FIFO)",
    );
    err(
        &|p| {
            let l = std::os::unix::net::UnixListener::bind(p).unwrap();
            std::mem::forget(l);
        },
        "not a regular file (a socket)",
    );
    err(
        &|p| std::fs::create_dir(p).unwrap(),
        "not a regular file (a directory)",
    );
    err(
        &|p| std::fs::write(p, vec![b' '; 5 << 20]).unwrap(),
        "larger than 4194304 bytes",
    );
    err(
        &|p| std::fs::write(p, b"<Server>\n<Name>\xff</Name></Server>").unwrap(),
        ":2:7: not UTF-8 text",
    );
    // 800 KB of well-formed carbon.xml, on many lines and on one: linear.
    for sep in ["\n", ""] {
        let (r, took) = scan_hostile(|p| {
            let body = format!("<Skip>some text</Skip>{sep}").repeat(800_000 / 23);
            std::fs::write(p, format!("<Server><Name>WSO2 API Manager</Name>{body}<Ports><Offset>2</Offset></Ports></Server>")).unwrap();
        });
        assert_eq!(r.unwrap().installs[0].offset, 2);
        assert!(took < second, "800 KB: {took:?}");
    }
}

#[test]
fn the_wso2_fuzz_corpus_replays_without_a_panic() {
    let dir = std::path::Path::new("../fuzz/corpus/wso2");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        wso2::fuzz_one(&data);
        n += 1;
    }
    assert!(n >= 8, "{n} seeds");
}

#[test]
fn a_plan_error_is_printed_once() {
    let e =
        wso2::ScanError::from(Plan::load(std::path::Path::new("no/such/plan.toml")).unwrap_err());
    let mut chain = vec![e.to_string()];
    let mut s = std::error::Error::source(&e);
    while let Some(c) = s {
        chain.push(c.to_string());
        s = c.source();
    }
    assert_eq!(chain[0], "read plan no/such/plan.toml", "{chain:?}");
    assert!(
        chain
            .windows(2)
            .all(|w| !w[0].contains(&w[1]) && !w[1].contains(&w[0])),
        "{chain:?}"
    );
}

#[test]
fn a_2x_node_without_profile_opens_the_full_distributions_receivers() {
    let set = installs(&[("g", "apim21/gw"), ("mw", "apim21/mw")]);
    let scan = wso2::scan(&set, None).unwrap();
    let mw = &scan.installs[1];
    let binary = mw.ports.iter().find(|p| p.name == "binary").unwrap();
    assert_eq!(binary.port, 9611);
    assert!(
        binary.how.contains("full distribution, no -Dprofile"),
        "{}",
        binary.how
    );
    assert!(scan.differences.is_empty(), "{:#?}", scan.differences);
    assert!(scan.mismatches.is_empty(), "{:#?}", scan.mismatches);
    // Its plan lints clean and probes 9611 by number.
    let plan = plan_of(&set);
    assert!(
        plan.paths
            .iter()
            .any(|p| p.from == "g" && p.to == "mw" && p.port.get() == 9611)
    );
}

#[test]
fn an_esbs_analytics_publishers_dial_its_analytics_server_at_the_shipped_offset() {
    let set = installs(&[
        ("esb", "esb50/esb"),
        ("esb-analytics", "esb50/esb-analytics"),
    ]);
    let scan = wso2::scan(&set, None).unwrap();
    assert_eq!(scan.installs[0].role, "wso2-esb");
    let thrift: Vec<_> = dial(&scan, "esb", "thrift")
        .iter()
        .map(|d| (d.to_port, d.reaches.as_str()))
        .collect();
    assert_eq!(
        thrift,
        vec![(7612, "esb-analytics"), (7612, "esb-analytics")]
    );
    assert!(scan.mismatches.is_empty() && scan.differences.is_empty());
    assert_eq!(scan.exit_code(), 0);
    let text = {
        let mut out = Vec::new();
        wso2::render(&scan, ScanFormat::Toml, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let a = analyze(&text, "esb.toml", Catalog::builtin());
    assert!(a.diagnostics.0.is_empty(), "{}\n{text}", a.diagnostics);
}

#[test]
fn a_plan_probing_a_dial_the_installation_does_not_make_is_a_difference() {
    // The plan says the gateway manager publishes analytics; its
    // api-manager.xml has <Analytics><Enabled>false.
    let scan = wso2::scan(&consistent(), None).unwrap();
    let mut out = Vec::new();
    wso2::render(&scan, ScanFormat::Toml, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap()
        + "\n[[flows]]\nname = \"manager publishes analytics\"\nfrom = \"host:gw-manager\"\nto = \"host:analytics\"\nports = [\"thrift\"]\n";
    let plan = Plan::parse(&text, "p.toml").unwrap();
    let scan = wso2::scan(&consistent(), Some(&plan)).unwrap();
    let got: Vec<(&str, &str)> = scan
        .differences
        .iter()
        .map(|d| (d.kind, d.detail.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![(
            "dial-not-configured",
            "the plan probes gw-manager -> analytics:7612 as gw-manager's thrift dial, the installation does not dial analytics for it"
        )]
    );
    assert_eq!(scan.exit_code(), 1);
}

#[test]
fn a_2x_node_without_profile_that_deploys_to_a_remote_gateway_is_a_publisher() {
    let set = installs(&[
        ("pub", "apim22/publisher"),
        ("gw-manager", "apim22/consistent/gw-manager"),
        ("km", "apim22/consistent/km"),
    ]);
    let scan = wso2::scan(&set, None).unwrap();
    let p = &scan.installs[0];
    assert_eq!(
        (p.role.as_str(), p.profile.as_deref()),
        ("wso2-apim-publisher", Some("publisher"))
    );
    let deploy = dial(&scan, "pub", "https-servlet");
    let reached: Vec<(&str, u16)> = deploy
        .iter()
        .map(|d| (d.reaches.as_str(), d.to_port))
        .collect();
    assert_eq!(reached, vec![("km", 9443), ("gw-manager", 9443)]);
    assert!(
        dial(&scan, "pub", "thrift-km").is_empty(),
        "a publisher validates no API calls"
    );
    assert!(scan.mismatches.is_empty() && scan.differences.is_empty());
}

// --- The Stream Processor based API-M Analytics worker (2.5 to 3.x) --------

fn sp_port(scan: &wso2::Scan, host: &str, name: &str) -> (u16, String) {
    let i = scan.installs.iter().find(|i| i.host == host).unwrap();
    let p = i.ports.iter().find(|p| p.name == name).unwrap();
    (p.port, p.source.clone())
}

#[test]
fn an_api_m_2_6_gateway_reaches_its_stream_processor_analytics_worker() {
    // Before: the worker's home (conf/worker/deployment.yaml, no
    // repository/conf) was "not an installation", so its gateway's
    // Thrift dials could only be outside the scan.
    let set = installs(&[
        ("gateway", "apim26-sp/gateway"),
        ("analytics", "apim26-sp/analytics"),
    ]);
    let scan = wso2::scan(&set, None).unwrap();
    let a = &scan.installs[1];
    assert_eq!(a.role, "wso2-apim-analytics");
    assert_eq!(
        a.product,
        "WSO2 API Manager Analytics Server (Stream Processor worker)"
    );
    assert_eq!(a.offset, 1);
    assert!(
        a.offset_source
            .ends_with("analytics/conf/worker/deployment.yaml:16"),
        "{}",
        a.offset_source
    );
    let (port, source) = sp_port(&scan, "analytics", "thrift");
    assert_eq!(port, 7612);
    assert!(
        source.ends_with("analytics/conf/worker/deployment.yaml:46"),
        "{source}"
    );
    assert_eq!(sp_port(&scan, "analytics", "thrift-ssl").0, 7712);
    assert_eq!(sp_port(&scan, "analytics", "binary").0, 9612);
    assert_eq!(sp_port(&scan, "analytics", "https-servlet").0, 9444);
    assert_eq!(sp_port(&scan, "analytics", "http-servlet").0, 9091);
    for (name, port) in [("thrift", 7612), ("thrift-ssl", 7712)] {
        let d = dial(&scan, "gateway", name);
        assert_eq!(
            (d[0].to_port, d[0].reaches.as_str()),
            (port, "analytics"),
            "{name}"
        );
    }
    assert!(scan.mismatches.is_empty(), "{:#?}", scan.mismatches);
    assert!(scan.differences.is_empty(), "{:#?}", scan.differences);
    assert_eq!(scan.exit_code(), 0);
    // The worker's statistics database is a dial of its own; the H2 one
    // under ${sys:carbon.home} is embedded and neither a dial nor
    // unresolved.
    let db = dial(&scan, "analytics", "mysql");
    assert_eq!(
        (db[0].to_host.as_str(), db[0].to_port),
        ("db.example.com", 3306)
    );
    assert!(a.unresolved.is_empty(), "{:?}", a.unresolved);
}

#[test]
fn a_stream_processor_worker_at_a_wrong_offset_is_a_mismatch_with_both_fixes() {
    let set = installs(&[
        ("gateway", "apim26-sp/gateway"),
        ("analytics", "apim26-sp/analytics-offset0"),
    ]);
    let scan = wso2::scan(&set, None).unwrap();
    assert_eq!(scan.exit_code(), 1);
    let got: Vec<(&str, u16, u16)> = scan
        .mismatches
        .iter()
        .map(|m| (m.name.as_str(), m.client_port, m.server_port))
        .collect();
    assert_eq!(
        got,
        vec![("thrift", 7612, 7611), ("thrift-ssl", 7712, 7711)]
    );
    let fix = &scan.mismatches[0].fix;
    assert!(
        fix.contains("StreamProcessorServerURL 7611 on gateway"),
        "{fix}"
    );
    assert!(
        fix.contains("or give analytics offset 1 (now 0, ")
            && fix.ends_with("analytics-offset0/conf/worker/deployment.yaml:16)"),
        "{fix}"
    );
}

#[test]
fn an_api_m_3_2_gateway_reaches_its_analytics_worker_by_name() {
    let set = installs(&[
        ("gateway", "apim32-sp/gateway"),
        ("analytics32.example.com", "apim32-sp/analytics"),
    ]);
    let scan = wso2::scan(&set, None).unwrap();
    for (name, port) in [("thrift", 7612), ("thrift-ssl", 7712)] {
        let d = dial(&scan, "gateway", name);
        assert_eq!(
            (d[0].to_port, d[0].reaches.as_str()),
            (port, "analytics32.example.com"),
            "{name}"
        );
    }
    assert!(scan.mismatches.is_empty(), "{:#?}", scan.mismatches);
    assert!(scan.differences.is_empty(), "{:#?}", scan.differences);
    assert!(
        scan.outside
            .iter()
            .all(|o| o.host != "analytics32.example.com"),
        "{:#?}",
        scan.outside
    );
    assert_eq!(scan.exit_code(), 0);
}

#[test]
fn a_hostile_worker_deployment_yaml_is_a_clear_error_or_a_result_within_a_second() {
    let scan_yaml = |text: String| {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf/worker");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("deployment.yaml"), text).unwrap();
        let start = std::time::Instant::now();
        let r =
            wso2::scan(&[("x".to_owned(), dir.path().to_owned())], None).map_err(|e| e.to_string());
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        r
    };
    // Billion laughs: aliases are never expanded, so this is a small file.
    let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..12 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    bomb.push_str(
        "wso2.carbon:\n  name: WSO2 API Manager Analytics Server\n  ports:\n    offset: 1\n",
    );
    let scan = scan_yaml(bomb).unwrap();
    assert_eq!(scan.installs[0].role, "wso2-apim-analytics");
    // Nesting past the cap, in block and flow style.
    let block: String = (0..100)
        .map(|d| format!("{}k{d}:\n", "  ".repeat(d)))
        .collect();
    for deep in [block, "[".repeat(100_000)] {
        let e = scan_yaml(deep).unwrap_err();
        assert!(e.contains("conf/worker/deployment.yaml:"), "{e}");
        assert!(
            e.contains(&format!("nested deeper than {}", wso2::MAX_YAML_DEPTH))
                || e.contains("not well-formed YAML"),
            "{e}"
        );
    }
    // A port that is not one names the key and its place.
    let e = scan_yaml("databridge.config:\n  dataReceivers:\n    - dataReceiver:\n        type: Thrift\n        properties:\n          tcpPort: 'lots'\n".into()).unwrap_err();
    assert!(
        e.ends_with(
            "conf/worker/deployment.yaml:6:20: `tcpPort` must be a port (0..=65535), found `lots`"
        ),
        "{e}"
    );
}

#[test]
fn an_identity_server_key_manager_on_3_x_is_recognised_from_its_own_files() {
    // Alone, with no peer dialling it: before, a deployment.toml without
    // server_role was "WSO2 API Manager 3.x/4.x", role wso2-carbon.
    let alone = installs(&[("iskm", "apim32-iskm/is-km")]);
    let scan = wso2::scan(&alone, None).unwrap();
    let km = &scan.installs[0];
    assert_eq!(km.product, "WSO2 Identity Server");
    assert_eq!(km.role, "wso2-apim-keymanager");
    assert!(
        km.profile_source.starts_with(
            "Identity Server as key manager: [tenant_context.rewrite] custom_webapps /keymanager-operations/ ("
        ) && km.profile_source.ends_with("is-km/repository/conf/deployment.toml:40)"),
        "{}",
        km.profile_source
    );
    assert_eq!(km.names, vec!["km32.example.com", "198.18.32.9"]);
    // With its gateway: the key manager dial reaches it by host name, on
    // the servlet port its offset 1 opens, and nothing disagrees.
    let pair = installs(&[("gw", "apim32-iskm/gateway"), ("iskm", "apim32-iskm/is-km")]);
    let scan = wso2::scan(&pair, None).unwrap();
    let d = dial(&scan, "gw", "https-servlet");
    assert_eq!((d[0].to_port, d[0].reaches.as_str()), (9444, "iskm"));
    assert!(scan.mismatches.is_empty(), "{:#?}", scan.mismatches);
    assert!(scan.differences.is_empty(), "{:#?}", scan.differences);
    assert_eq!(scan.exit_code(), 0);
}
