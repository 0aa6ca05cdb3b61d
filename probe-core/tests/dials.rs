//! Client ports (`dials`): a path from a dialling role is probed on the port
//! the client will dial, and a client/server disagreement is a lint error
//! naming both hosts, both ports, both offsets and both fixes.

use probe_core::plan::Catalog;
use probe_core::plan::{Plan, Problem, Severity, analyze};

const GUIDE: &str = include_str!("../../examples/wso2-thrift-offsets.toml");
const AGREE: &str = include_str!("../../examples/wso2-thrift-offsets-agree.toml");

fn lint(src: &str) -> Vec<String> {
    analyze(src, "p.toml", Catalog::builtin())
        .diagnostics
        .0
        .iter()
        .map(|d| {
            format!(
                "{}: {}",
                match d.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                },
                d.problem
            )
        })
        .collect()
}

#[test]
fn the_guides_offsets_2_and_5_are_a_mismatch_with_both_fixes() {
    assert_eq!(
        lint(GUIDE),
        vec![
            "error: gw-1 dials thrift-km on 10399 (10397 + its offset 2) but keymanager listens on 10402 (10397 + its offset 5): set ThriftClientPort 10402 on gw-1 (plan: dial_overrides = { thrift-km = 10402 }), or ThriftServerPort 10399 on keymanager (plan: port_overrides = { thrift-km = 10399 })"
        ]
    );
}

#[test]
fn a_mismatch_does_not_stop_a_check_which_probes_the_dialled_port() {
    let plan = Plan::parse(GUIDE, "p.toml").expect("a mismatch is not a broken plan");
    let thrift = plan
        .paths
        .iter()
        .find(|p| p.service == "thrift-km")
        .unwrap();
    assert_eq!(thrift.port.get(), 10399, "the port the gateway dials");
    assert_eq!(thrift.server_port.map(|p| p.get()), Some(10402));
    let servlet = plan
        .paths
        .iter()
        .find(|p| p.service == "https-servlet")
        .unwrap();
    assert_eq!((servlet.port.get(), servlet.server_port), (9448, None));
}

#[test]
fn the_client_fix_lints_clean() {
    assert_eq!(lint(AGREE), Vec::<String>::new());
    let plan = Plan::parse(AGREE, "p.toml").unwrap();
    let thrift = plan
        .paths
        .iter()
        .find(|p| p.service == "thrift-km")
        .unwrap();
    assert_eq!((thrift.port.get(), thrift.server_port), (10402, None));
}

#[test]
fn the_server_fix_lints_clean_too() {
    let src = GUIDE.replace(
        "port_offset = 5\n",
        "port_offset = 5\nport_overrides = { thrift-km = 10399 }\n",
    );
    assert_eq!(lint(&src), Vec::<String>::new());
}

#[test]
fn fixed_dials_name_the_offsets_they_ignore() {
    // Without the ServerURL override, the gateway dials the documented 9443
    // while the key manager at offset 5 serves 9448.
    let src = GUIDE.replace("dial_overrides = { https-servlet = 9448 }\n", "");
    let found = lint(&src);
    assert!(
        found.iter().any(|l| l.contains(
            "gw-1 dials https-servlet on 9443 (as configured, not moved by its offset 2) but keymanager listens on 9448 (9443 + its offset 5)"
        )),
        "{found:#?}"
    );
}

const PLAN: &str = r#"
name = "dials"

[[hosts]]
name = "client"
address = "198.18.0.1"
roles = ["app"]
port_offset = 3

[[hosts]]
name = "server"
address = "198.18.0.2"
roles = ["db-like"]

[roles.app]
dials = [{ name = "svc", to = "base", port = 7000 }]

[roles.base]
ports = [{ name = "svc", port = 7000 }]

[roles.db-like]
use = "base"

[[flows]]
from = "host:client"
to = "host:server"
ports = ["svc"]
"#;

#[test]
fn a_dial_reaches_roles_built_on_its_target_and_moves_with_the_client_offset() {
    let plan = Plan::parse(PLAN, "p.toml").unwrap();
    assert_eq!(plan.paths.len(), 1);
    assert_eq!(plan.paths[0].port.get(), 7003);
    assert_eq!(plan.paths[0].server_port.map(|p| p.get()), Some(7000));
    let found = lint(PLAN);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("client dials svc on 7003 (7000 + its offset 3) but server listens on 7000 (7000 + its offset 0)")
            && found[0].contains("dial_overrides = { svc = 7000 } on client")
            && found[0].contains("port_overrides = { svc = 7003 } on server"),
        "{}",
        found[0]
    );
}

#[test]
fn dials_without_offset_ignore_the_client_offset() {
    let src = PLAN.replace(
        "port = 7000 }]\n\n[roles.base]",
        "port = 7000, offset = false }]\n\n[roles.base]",
    );
    let plan = Plan::parse(&src, "p.toml").unwrap();
    assert_eq!(
        (plan.paths[0].port.get(), plan.paths[0].server_port),
        (7000, None)
    );
    assert!(lint(&src).is_empty());
}

#[test]
fn an_unknown_dial_override_is_an_error_naming_the_known_dials() {
    let src = PLAN.replace(
        "port_offset = 3\n",
        "port_offset = 3\ndial_overrides = { svx = 7000 }\n",
    );
    let a = analyze(&src, "p.toml", Catalog::builtin());
    assert!(a.plan.is_none());
    let d = a
        .diagnostics
        .0
        .iter()
        .find(|d| matches!(&d.problem, Problem::UnknownDialOverride { name, known, .. } if name == "svx" && known == "svc"))
        .unwrap_or_else(|| panic!("{}", a.diagnostics));
    assert_eq!(d.location.as_ref().map(|l| l.line), Some(9));
}

#[test]
fn a_dial_to_an_unknown_role_is_an_error() {
    let src = PLAN.replace("to = \"base\"", "to = \"bas\"");
    let a = analyze(&src, "p.toml", Catalog::builtin());
    assert!(a.plan.is_none());
    assert!(
        a.diagnostics
            .0
            .iter()
            .any(|d| d.to_string().contains("unknown role `bas`")
                && d.to_string().contains("did you mean `base`")),
        "{}",
        a.diagnostics
    );
}

#[test]
fn a_flow_by_number_from_a_host_without_dials_is_unchanged() {
    let src = PLAN
        .replace("ports = [\"svc\"]", "ports = [7000]")
        .replace("roles = [\"app\"]", "roles = []");
    let plan = Plan::parse(&src, "p.toml").unwrap();
    assert_eq!(
        (plan.paths[0].port.get(), plan.paths[0].server_port),
        (7000, None)
    );
}

#[test]
fn a_dual_stack_mismatch_gives_one_path_per_family_and_one_lint_error() {
    let src = PLAN
        .replace(
            "address = \"198.18.0.1\"",
            "address = [\"198.18.0.1\", \"2001:2::1\"]",
        )
        .replace(
            "address = \"198.18.0.2\"",
            "address = [\"198.18.0.2\", \"2001:2::2\"]",
        );
    let plan = Plan::parse(&src, "p.toml").unwrap();
    assert_eq!(plan.paths.len(), 2);
    for p in &plan.paths {
        assert_eq!(
            (p.port.get(), p.server_port.map(|s| s.get())),
            (7003, Some(7000))
        );
    }
    assert_eq!(lint(&src).len(), 1, "{:#?}", lint(&src));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The dialled port is the client's base plus its offset (or the
        /// pin), the listening port the server's; they disagree exactly
        /// when the numbers differ, and then lint names both.
        #[test]
        fn dialled_and_listening_ports_follow_both_offsets(
            base in 1024u16..60000,
            client_off in 0u16..200,
            server_off in 0u16..200,
            dial_offset in any::<bool>(),
            pin in proptest::option::of(1024u16..65000),
        ) {
            let pin_line = pin.map_or(String::new(), |p| format!("dial_overrides = {{ svc = {p} }}\n"));
            let src = format!(r#"
name = "p"
[[hosts]]
name = "client"
address = "198.18.0.1"
roles = ["app"]
port_offset = {client_off}
{pin_line}
[[hosts]]
name = "server"
address = "198.18.0.2"
roles = ["srv"]
port_offset = {server_off}
[roles.app]
dials = [{{ name = "svc", to = "srv", port = {base}, offset = {dial_offset} }}]
[roles.srv]
ports = [{{ name = "svc", port = {base} }}]
[[flows]]
from = "host:client"
to = "host:server"
ports = ["svc"]
"#);
            let plan = Plan::parse(&src, "p.toml").unwrap();
            let dialled = pin.unwrap_or(if dial_offset { base + client_off } else { base });
            let listening = base + server_off;
            let path = &plan.paths[0];
            prop_assert_eq!(path.port.get(), dialled);
            prop_assert_eq!(path.server_port.map(|p| p.get()), (dialled != listening).then_some(listening));
            let found = lint(&src);
            if dialled == listening {
                prop_assert!(found.is_empty(), "{:?}", found);
            } else {
                prop_assert_eq!(found.len(), 1);
                let want_client_fix = format!("dial_overrides = {{ svc = {listening} }} on client");
                let want_server_fix = format!("port_overrides = {{ svc = {dialled} }} on server");
                prop_assert!(found[0].contains(&want_client_fix), "{}", found[0]);
                prop_assert!(found[0].contains(&want_server_fix), "{}", found[0]);
            }
        }
    }
}
