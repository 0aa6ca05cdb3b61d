//! The plan rules of docs/plan.md, one test each, plus snapshots of
//! `plan show` for the bundled WSO2 example and property tests of offsets,
//! overrides and selectors.

use expect_test::expect_file;
use probe_core::Protocol;
use probe_core::plan::Catalog;
use probe_core::plan::{Expect, Family, Plan, PlanError, Problem, analyze};
use probe_core::render::plan::{plan_json, plan_table};

const EXAMPLE: &str = include_str!("../../examples/wso2-distributed.toml");
const EXAMPLE_NAME: &str = "examples/wso2-distributed.toml";

fn example() -> Plan {
    Plan::parse(EXAMPLE, EXAMPLE_NAME).expect("the example plan is valid")
}

fn port_of(plan: &Plan, host: &str, role: &str, name: &str) -> u16 {
    plan.host(host)
        .unwrap()
        .ports
        .iter()
        .find(|p| p.role == role && p.name == name)
        .unwrap_or_else(|| panic!("{host} has no {role}/{name}"))
        .port
        .get()
}

fn errors(src: &str) -> Vec<Problem> {
    match Plan::parse(src, "t.toml") {
        Ok(_) => panic!("plan accepted:\n{src}"),
        Err(PlanError::Invalid(d)) => d.0.into_iter().map(|d| d.problem).collect(),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn example_is_clean_and_has_the_documented_ports() {
    let a = analyze(EXAMPLE, EXAMPLE_NAME, Catalog::builtin());
    assert!(a.diagnostics.0.is_empty(), "{}", a.diagnostics);
    let p = example();
    assert_eq!(port_of(&p, "apim-analytics", "wso2-das", "thrift"), 7612);
    assert_eq!(
        port_of(&p, "apim-analytics", "wso2-das", "thrift-ssl"),
        7712
    );
    assert_eq!(port_of(&p, "esb-analytics", "wso2-das", "thrift"), 7611);
    assert_eq!(
        port_of(&p, "keymanager", "wso2-apim-keymanager", "thrift-km"),
        10399
    );
    assert_eq!(
        port_of(&p, "keymanager", "wso2-apim-keymanager", "https-servlet"),
        9445
    );
    assert_eq!(
        port_of(&p, "pub-store", "wso2-apim-store", "https-servlet"),
        9444
    );
    assert_eq!(
        port_of(&p, "pub-store", "wso2-apim-publisher", "https-servlet"),
        9443
    );
    assert_eq!(
        port_of(&p, "gw-worker-2", "apim-gateway-worker", "cluster"),
        4200
    );
    assert_eq!(
        port_of(&p, "gw-worker-1", "apim-gateway-worker", "cluster"),
        4100
    );
    assert_eq!(
        port_of(&p, "gw-manager", "apim-gateway-manager", "cluster"),
        4500
    );
    // Must-be-blocked flows are present.
    let blocked: Vec<_> = p
        .paths
        .iter()
        .filter(|x| x.expect == Expect::Blocked)
        .map(|x| format!("{}->{}:{}", x.from, x.to, x.port))
        .collect();
    assert!(blocked.contains(&"internet->db:3306".to_owned()));
    assert!(blocked.contains(&"lb->db:3306".to_owned()));
    assert!(blocked.contains(&"internet->pub-store:9444".to_owned()));
    assert!(p.paths.iter().all(|x| x.from != x.to));
}

#[test]
fn plan_show_table_snapshot() {
    let mut out = Vec::new();
    plan_table(&example(), &mut out).unwrap();
    expect_file!["snapshots/wso2-plan-show.txt"].assert_eq(&String::from_utf8(out).unwrap());
}

#[test]
fn plan_show_json_snapshot() {
    let mut out = Vec::new();
    plan_json(&example(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["schema"], "portcall.plan/v1");
    // Exactly the keys of the contract, no more (serde_json sorts them);
    // `addresses` and `family` were added with dual-stack hosts.
    let host_keys: Vec<&str> = v["hosts"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        host_keys,
        [
            "address",
            "addresses",
            "name",
            "port_offset",
            "ports",
            "roles",
            "zone"
        ]
    );
    let port_keys: Vec<&str> = v["hosts"][2]["ports"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // `service` was added with the service proof (wave 3).
    assert_eq!(port_keys, ["name", "port", "protocol", "role", "service"]);
    let path_keys: Vec<&str> = v["paths"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        path_keys,
        [
            "address", "expect", "family", "from", "port", "protocol", "service", "to"
        ]
    );
    expect_file!["snapshots/wso2-plan-show.json"].assert_eq(&text);
}

const TWO_PORTALS: &str = r#"
name = "t"
[[hosts]]
name = "portal"
address = "198.18.0.1"
roles = ["wso2-apim-publisher", { role = "wso2-apim-store", port_offset = 1 }]
[[hosts]]
name = "op"
address = "198.18.0.2"
"#;

#[test]
fn a_name_two_roles_define_gives_one_path_per_role() {
    let p = Plan::parse(
        &format!("{TWO_PORTALS}[[flows]]\nfrom = \"host:op\"\nto = \"host:portal\"\nports = [\"https-servlet\"]\n"),
        "t.toml",
    )
    .unwrap();
    let got: Vec<_> = p
        .paths
        .iter()
        .map(|x| (x.port.get(), x.role.clone().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            (9443, "wso2-apim-publisher".to_owned()),
            (9444, "wso2-apim-store".to_owned())
        ]
    );
    assert!(p.paths.iter().all(|x| x.protocol == Protocol::Tls));
}

#[test]
fn a_role_selector_resolves_names_through_that_role() {
    let p = Plan::parse(
        &format!("{TWO_PORTALS}[[flows]]\nfrom = \"host:op\"\nto = \"role:wso2-apim-store\"\nports = [\"https-servlet\"]\n"),
        "t.toml",
    )
    .unwrap();
    let got: Vec<u16> = p.paths.iter().map(|x| x.port.get()).collect();
    assert_eq!(got, [9444]);
}

#[test]
fn numbers_are_literal_and_take_the_planned_name_where_there_is_one() {
    let p = Plan::parse(
        &format!("{TWO_PORTALS}[[flows]]\nfrom = \"host:op\"\nto = \"host:portal\"\nports = [9444, 8080]\n"),
        "t.toml",
    )
    .unwrap();
    let got: Vec<_> = p
        .paths
        .iter()
        .map(|x| {
            (
                x.port.get(),
                x.service.as_str(),
                x.protocol,
                x.role.is_some(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (9444, "https-servlet", Protocol::Tls, true),
            (8080, "8080", Protocol::Tcp, false)
        ]
    );
}

#[test]
fn use_adds_ports_and_replaces_ports_of_the_same_name() {
    let p = Plan::parse(
        r#"
name = "t"
[[hosts]]
name = "gw"
address = "gw.lab.example"
roles = ["mygw"]
port_offset = 10
[[hosts]]
name = "c"
address = "::1"
[roles.mygw]
use = "wso2-apim-gateway"
ports = [
  { name = "nio-http", port = 8000, offset = false },
  { name = "cluster", port = 4100, offset = false },
]
[[flows]]
from = "host:c"
to = "host:gw"
ports = ["nio-http", "cluster", "https-servlet"]
"#,
        "t.toml",
    )
    .unwrap();
    let gw = p.host("gw").unwrap();
    let ports: Vec<_> = gw
        .ports
        .iter()
        .map(|x| (x.name.as_str(), x.port.get()))
        .collect();
    assert_eq!(
        ports,
        [
            ("https-servlet", 9453),
            ("http-servlet", 9773),
            ("nio-http", 8000),
            ("nio-https", 8253),
            ("cluster", 4100)
        ]
    );
    assert_eq!(p.host("c").unwrap().address.to_string(), "::1");
    assert_eq!(p.paths.len(), 3);
}

#[test]
fn a_plan_role_replaces_the_catalog_role_of_the_same_name() {
    let p = Plan::parse(
        r#"
name = "t"
[[hosts]]
name = "db"
address = "198.18.0.1"
roles = ["mariadb"]
[[hosts]]
name = "c"
address = "198.18.0.2"
[roles.mariadb]
ports = [{ name = "mysql", port = 3307, offset = false }]
[[flows]]
from = "host:c"
to = "role:mariadb"
ports = ["mysql"]
"#,
        "t.toml",
    )
    .unwrap();
    assert_eq!(p.paths[0].port.get(), 3307);
}

#[test]
fn duplicate_paths_merge_and_conflicts_name_both_flows() {
    let base = r#"
name = "t"
[[hosts]]
name = "db"
address = "198.18.0.1"
zone = "data"
roles = ["mariadb"]
[[hosts]]
name = "app"
address = "198.18.0.2"
zone = "app"
[[flows]]
from = "zone:app"
to = "role:mariadb"
ports = ["mysql"]
"#;
    let merged = Plan::parse(
        &format!("{base}[[flows]]\nfrom = \"host:app\"\nto = \"host:db\"\nports = [3306]\n"),
        "t.toml",
    )
    .unwrap();
    assert_eq!(merged.paths.len(), 1);
    assert_eq!(merged.paths[0].flows, [1, 2]);

    let errs = errors(&format!(
        "{base}[[flows]]\nfrom = \"host:app\"\nto = \"host:db\"\nports = [3306]\nexpect = \"blocked\"\n"
    ));
    match &errs[..] {
        [
            Problem::ConflictingExpectations {
                first, port: 3306, ..
            },
        ] => {
            assert_eq!((first.line, first.col), (12, 1));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn flows_never_produce_self_paths() {
    let p = Plan::parse(
        r#"
name = "t"
[[hosts]]
name = "a"
address = "198.18.0.1"
roles = ["wso2-cluster-wka"]
[[hosts]]
name = "b"
address = "198.18.0.2"
roles = ["wso2-cluster-wka"]
[[flows]]
from = "role:wso2-cluster-wka"
to = "role:wso2-cluster-wka"
ports = ["cluster"]
"#,
        "t.toml",
    )
    .unwrap();
    let got: Vec<_> = p
        .paths
        .iter()
        .map(|x| format!("{}->{}", x.from, x.to))
        .collect();
    assert_eq!(got, ["b->a", "a->b"]);
}

#[test]
fn publisher_and_store_without_offsets_suggest_offset_1() {
    let errs = errors(&format!(
        "{}[[flows]]\nfrom = \"host:op\"\nto = \"host:portal\"\nports = [\"https-servlet\"]\n",
        TWO_PORTALS.replace(
            r#"{ role = "wso2-apim-store", port_offset = 1 }"#,
            r#""wso2-apim-store""#
        )
    ));
    match &errs[..] {
        [
            Problem::PortCollision {
                first_role,
                second_role,
                fix,
                ..
            },
        ] => {
            assert_eq!(first_role, "wso2-apim-publisher");
            assert_eq!(second_role, "wso2-apim-store");
            match fix {
                probe_core::plan::CollisionFix::Offset { role, offset, .. } => {
                    assert_eq!((role.as_str(), *offset), ("wso2-apim-store", 1));
                }
                other @ probe_core::plan::CollisionFix::Override { .. } => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
}

/// Regression: with three products on one host, the advice gave two of them
/// offset 1 (each computed as if the others stayed put).
#[test]
fn three_products_on_one_host_get_one_assignment_that_clears_all() {
    let src = "name = \"three\"\n[[hosts]]\nname = \"portal\"\naddress = \"198.18.0.1\"\nroles = [\"wso2-apim-publisher\", \"wso2-apim-store\", \"wso2-apim-keymanager\"]\n[[hosts]]\nname = \"op\"\naddress = \"198.18.0.2\"\n[[flows]]\nfrom = \"host:op\"\nto = \"host:portal\"\nports = [\"https-servlet\"]\n";
    let errs = errors(src);
    assert_eq!(errs.len(), 3, "{errs:?}");
    let mut offsets = std::collections::BTreeMap::new();
    let mut lists = Vec::new();
    for e in &errs {
        let Problem::PortCollision {
            fix:
                probe_core::plan::CollisionFix::Offset {
                    role,
                    offset,
                    roles,
                    ..
                },
            ..
        } = e
        else {
            panic!("{e:?}");
        };
        assert_eq!(*offsets.entry(role.clone()).or_insert(*offset), *offset);
        lists.push(roles.clone());
    }
    assert_eq!(offsets["wso2-apim-store"], 1);
    assert_eq!(offsets["wso2-apim-keymanager"], 2);
    assert!(lists.windows(2).all(|w| w[0] == w[1]), "one assignment");
    // Applying the printed assignment gives a valid plan.
    let fixed = src.replace(
        "roles = [\"wso2-apim-publisher\", \"wso2-apim-store\", \"wso2-apim-keymanager\"]",
        "roles = [\"wso2-apim-publisher\", { role = \"wso2-apim-store\", port_offset = 1 }, { role = \"wso2-apim-keymanager\", port_offset = 2 }]",
    );
    let a = analyze(&fixed, "three.toml", Catalog::builtin());
    assert!(a.plan.is_some(), "{}", a.diagnostics);
}

mod props {
    //! Property tests: offsets and overrides against a brute-force model,
    //! and selector expansion against counting.

    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// Role "r{i}" has ports base_i (offset-able) and, when `fixed_i`, a
    /// fixed port 20000 + i.
    fn plan_text(roles: &[(u16, u16, bool)], override_port: Option<u16>) -> String {
        let mut s = String::from(
            "name = \"p\"\n[[hosts]]\nname = \"h\"\naddress = \"198.18.0.1\"\nroles = [",
        );
        let items: Vec<String> = roles
            .iter()
            .enumerate()
            .map(|(i, (_, off, _))| format!("{{ role = \"r{i}\", port_offset = {off} }}"))
            .collect();
        s.push_str(&items.join(", "));
        s.push_str("]\n");
        if let Some(o) = override_port {
            s.push_str(&format!("port_overrides = {{ a0 = {o} }}\n"));
        }
        s.push_str("[[hosts]]\nname = \"c\"\naddress = \"198.18.0.2\"\n");
        for (i, (base, _, fixed)) in roles.iter().enumerate() {
            s.push_str(&format!(
                "[roles.r{i}]\nports = [{{ name = \"a{i}\", port = {base} }}"
            ));
            if *fixed {
                s.push_str(&format!(
                    ", {{ name = \"f{i}\", port = {}, offset = false }}",
                    20000 + i
                ));
            }
            s.push_str("]\n");
        }
        s.push_str("[[flows]]\nfrom = \"host:c\"\nto = \"host:h\"\nports = [\"a0\"]\n");
        s
    }

    fn effective(roles: &[(u16, u16, bool)], override_port: Option<u16>) -> Option<Vec<Vec<u32>>> {
        let mut all = Vec::new();
        for (i, (base, off, fixed)) in roles.iter().enumerate() {
            let a = match (i, override_port) {
                (0, Some(o)) => u32::from(o),
                _ => u32::from(*base) + u32::from(*off),
            };
            if a > 65535 {
                return None;
            }
            let mut v = vec![a];
            if *fixed {
                v.push(20000 + i as u32);
            }
            all.push(v);
        }
        Some(all)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn effective_ports_and_collisions_match_the_model(
            roles in prop::collection::vec((1000u16..1010, 0u16..6, any::<bool>()), 1..4),
            override_port in prop::option::of(1000u16..1012),
        ) {
            let src = plan_text(&roles, override_port);
            let eff = effective(&roles, override_port).unwrap();
            let flat: Vec<u32> = eff.iter().flatten().copied().collect();
            let unique: BTreeSet<u32> = flat.iter().copied().collect();
            let a = analyze(&src, "p.toml", Catalog::builtin());
            if unique.len() == flat.len() {
                let plan = a.plan.expect("no collision, so the plan is valid");
                let got: Vec<u32> = plan.hosts[0].ports.iter().map(|p| u32::from(p.port.get())).collect();
                prop_assert_eq!(got, flat);
                prop_assert_eq!(u32::from(plan.paths[0].port.get()), eff[0][0]);
            } else {
                prop_assert!(a.plan.is_none());
                let fixes: Vec<_> = a.diagnostics.0.iter().filter_map(|d| match &d.problem {
                    Problem::PortCollision { second_role, fix, .. } => Some((second_role.clone(), fix.clone())),
                    _ => None,
                }).collect();
                prop_assert!(!fixes.is_empty(), "{}", a.diagnostics);
                // Brute force: is there any offset per instance (0..16)
                // under which nothing collides?
                let n = roles.len();
                let solvable = (0..16usize.pow(n as u32)).any(|code| {
                    let mut r = roles.clone();
                    for (k, item) in r.iter_mut().enumerate() {
                        item.1 = ((code / 16usize.pow(k as u32)) % 16) as u16;
                    }
                    effective(&r, override_port).is_some_and(|e| {
                        let flat: Vec<u32> = e.iter().flatten().copied().collect();
                        flat.iter().copied().collect::<BTreeSet<u32>>().len() == flat.len()
                    })
                });
                let mut assignments = Vec::new();
                for (_, fix) in fixes {
                    match fix {
                        probe_core::plan::CollisionFix::Offset { roles: assigned, .. } => assignments.push(assigned),
                        probe_core::plan::CollisionFix::Override { .. } => {
                            prop_assert!(!solvable, "offsets solve it, but the advice is an override");
                        }
                    }
                }
                // Every collision carries the same assignment, and applying
                // it clears every collision at once.
                prop_assert!(assignments.windows(2).all(|w| w[0] == w[1]));
                if let Some(assigned) = assignments.first() {
                    let mut r = roles.clone();
                    for (k, item) in r.iter_mut().enumerate() {
                        item.1 = assigned[k].port_offset;
                    }
                    let e = effective(&r, override_port);
                    prop_assert!(e.is_some(), "assignment passes 65535");
                    let flat: Vec<u32> = e.unwrap().into_iter().flatten().collect();
                    let unique: BTreeSet<u32> = flat.iter().copied().collect();
                    prop_assert_eq!(unique.len(), flat.len(), "assignment {:?} leaves a collision", assigned);
                    let a = analyze(&plan_text(&r, override_port), "p.toml", Catalog::builtin());
                    prop_assert!(a.plan.is_some(), "{}", a.diagnostics);
                } else {
                    prop_assert!(!solvable);
                }
            }
        }

        #[test]
        fn selectors_expand_to_sources_times_targets_minus_self(
            zones in prop::collection::vec(0u8..3, 2..7),
            from_zone in 0u8..3,
            to_zone in 0u8..3,
        ) {
            let mut s = String::from("name = \"z\"\n");
            for (i, z) in zones.iter().enumerate() {
                s.push_str(&format!("[[hosts]]\nname = \"h{i}\"\naddress = \"198.18.1.{}\"\nzone = \"z{z}\"\nroles = [\"ssh\"]\n", i + 1));
            }
            s.push_str(&format!("[[flows]]\nfrom = \"zone:z{from_zone}\"\nto = \"zone:z{to_zone}\"\nports = [\"ssh\"]\n"));
            let a = analyze(&s, "z.toml", Catalog::builtin());
            let n_from = zones.iter().filter(|z| **z == from_zone).count();
            let n_to = zones.iter().filter(|z| **z == to_zone).count();
            if n_from == 0 || n_to == 0 {
                prop_assert!(a.plan.is_none(), "a selector matching nothing must be an error");
                let is_match_err = a.diagnostics.0.iter().any(|d| matches!(d.problem, Problem::SelectorMatchesNothing { .. }));
                prop_assert!(is_match_err);
            } else {
                let plan = a.plan.unwrap();
                let both = if from_zone == to_zone { n_from } else { 0 };
                prop_assert_eq!(plan.paths.len(), n_from * n_to - both);
                prop_assert!(plan.paths.iter().all(|p| p.from != p.to && p.port.get() == 22));
            }
        }
    }
}

mod never_panics {
    //! Whatever the input, analysis returns diagnostics instead of panicking.

    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn mangled_example_never_panics(cut in 0usize..EXAMPLE.len(), len in 0usize..40, insert in "[\\[\\]{}=\"',.:#0-9a-z \n-]{0,8}") {
            let mut s: Vec<char> = EXAMPLE.chars().collect();
            let cut = cut.min(s.len());
            let end = (cut + len).min(s.len());
            s.splice(cut..end, insert.chars());
            let s: String = s.into_iter().collect();
            let a = analyze(&s, "m.toml", Catalog::builtin());
            if a.plan.is_none() {
                prop_assert!(a.diagnostics.has_errors());
                for d in &a.diagnostics.0 {
                    prop_assert!(d.location.is_some(), "unlocated: {}", d);
                }
            }
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
            let _ = analyze(&s, "a.toml", Catalog::builtin());
        }
    }
}

// --- address families -------------------------------------------------------

const DUAL: &str = r#"
name = "dual"
[[hosts]]
name = "jump"
address = "198.18.1.10"
[[hosts]]
name = "ops6"
address = "2001:2:0:1::20"
[[hosts]]
name = "app"
address = ["198.18.2.10", "2001:2:0:2::10"]
[[hosts]]
name = "db"
address = ["2001:2:0:3::40", "198.18.3.40"]
roles = ["mariadb"]
"#;

fn dual(flows: &str) -> Plan {
    Plan::parse(&format!("{DUAL}{flows}"), "t.toml").expect("valid")
}

/// `from->to address family` per path, in order.
fn paths_of(p: &Plan) -> Vec<String> {
    p.paths
        .iter()
        .map(|x| {
            format!(
                "{}->{} {} {}",
                x.from,
                x.to,
                x.address,
                x.family.map_or("dns", Family::as_str)
            )
        })
        .collect()
}

#[test]
fn address_list_makes_the_first_the_primary() {
    let p = dual("[[flows]]\nfrom = \"all\"\nto = \"host:db\"\nports = [\"mysql\"]\n");
    let db = p.host("db").unwrap();
    assert_eq!(db.address.to_string(), "2001:2:0:3::40");
    let all: Vec<String> = db.addresses.iter().map(ToString::to_string).collect();
    assert_eq!(all, ["2001:2:0:3::40", "198.18.3.40"]);
    assert_eq!(db.families(), [Family::Ipv6, Family::Ipv4]);
    assert_eq!(
        db.address_of(Family::Ipv4).map(ToString::to_string),
        Some("198.18.3.40".to_string())
    );
}

#[test]
fn a_flow_gets_one_path_per_family_both_ends_have() {
    let p = dual("[[flows]]\nfrom = \"all\"\nto = \"host:db\"\nports = [\"mysql\"]\n");
    assert_eq!(
        paths_of(&p),
        [
            // Only IPv4 in the plan: the family both have.
            "jump->db 198.18.3.40 ipv4",
            // Only IPv6 in the plan: likewise.
            "ops6->db 2001:2:0:3::40 ipv6",
            // Dual stack on both ends: both families, in the target's order.
            "app->db 2001:2:0:3::40 ipv6",
            "app->db 198.18.3.40 ipv4",
        ]
    );
}

#[test]
fn a_source_without_the_targets_family_still_gets_the_path() {
    // jump has only IPv4 in the plan, ops6 only IPv6: each reaches the other
    // over the target's family, from whatever address its kernel chooses.
    let p = dual(
        "[[flows]]\nfrom = [\"host:jump\", \"host:ops6\"]\nto = [\"host:jump\", \"host:ops6\"]\nports = [22]\n",
    );
    assert_eq!(
        paths_of(&p),
        [
            "ops6->jump 198.18.1.10 ipv4",
            "jump->ops6 2001:2:0:1::20 ipv6"
        ]
    );
}

#[test]
fn a_flow_may_restrict_its_family() {
    let p = dual(
        "[[flows]]\nfrom = \"host:jump\"\nto = \"host:db\"\nports = [\"mysql\"]\nfamily = \"ipv6\"\n\
         [[flows]]\nfrom = \"host:app\"\nto = \"host:db\"\nports = [\"mysql\"]\nfamily = \"ipv4\"\n\
         [[flows]]\nfrom = \"host:app\"\nto = \"host:jump\"\nports = [22]\nfamily = \"both\"\n",
    );
    assert_eq!(
        paths_of(&p),
        [
            // Asked for IPv6 explicitly: the target has it, so the source's
            // kernel picks an IPv6 source.
            "jump->db 2001:2:0:3::40 ipv6",
            "app->db 198.18.3.40 ipv4",
            "app->jump 198.18.1.10 ipv4",
        ]
    );
    assert_eq!(
        p.flows
            .iter()
            .map(|f| f.family.to_string())
            .collect::<Vec<_>>(),
        ["ipv6", "ipv4", "both"]
    );
}

#[test]
fn a_family_the_target_lacks_gives_no_path_and_a_warning() {
    let src = format!(
        "{DUAL}[[flows]]\nfrom = \"host:app\"\nto = \"host:jump\"\nports = [22]\nfamily = \"ipv6\"\n"
    );
    let a = analyze(&src, "t.toml", Catalog::builtin());
    let p = a.plan.expect("a warning only");
    assert!(p.paths.is_empty(), "{:?}", paths_of(&p));
    assert!(
        a.diagnostics
            .0
            .iter()
            .any(|d| d.problem == Problem::FlowWithoutPaths),
        "{}",
        a.diagnostics
    );
}

#[test]
fn expectations_merge_per_family() {
    // Open over IPv4, blocked over IPv6: two paths, no conflict.
    let p = dual(
        "[[flows]]\nfrom = \"host:app\"\nto = \"host:db\"\nports = [\"mysql\"]\nfamily = \"ipv4\"\n\
         [[flows]]\nfrom = \"host:app\"\nto = \"host:db\"\nports = [\"mysql\"]\nfamily = \"ipv6\"\nexpect = \"blocked\"\n",
    );
    let got: Vec<(String, Expect)> = p
        .paths
        .iter()
        .map(|x| (x.address.to_string(), x.expect))
        .collect();
    assert_eq!(
        got,
        [
            ("198.18.3.40".to_string(), Expect::Open),
            ("2001:2:0:3::40".to_string(), Expect::Blocked)
        ]
    );
    // Open on both families, then blocked over IPv6: a conflict.
    let problems = errors(&format!(
        "{DUAL}[[flows]]\nfrom = \"host:app\"\nto = \"host:db\"\nports = [\"mysql\"]\n\
         [[flows]]\nfrom = \"host:app\"\nto = \"host:db\"\nports = [\"mysql\"]\nfamily = \"ipv6\"\nexpect = \"blocked\"\n"
    ));
    assert!(
        matches!(&problems[..], [Problem::ConflictingExpectations { .. }]),
        "{problems:?}"
    );
}

#[test]
fn plan_show_lists_addresses_and_families() {
    let p = dual("[[flows]]\nfrom = \"host:app\"\nto = \"host:db\"\nports = [\"mysql\"]\n");
    let mut table = Vec::new();
    plan_table(&p, &mut table).unwrap();
    let table = String::from_utf8(table).unwrap();
    assert!(table.contains("2001:2:0:3::40, 198.18.3.40"), "{table}");
    assert!(table.contains("[2001:2:0:3::40]:3306/tcp ipv6"), "{table}");
    assert!(table.contains("198.18.3.40:3306/tcp ipv4"), "{table}");
    let mut json = Vec::new();
    plan_json(&p, &mut json).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(doc["paths"][0]["family"], "ipv6");
    assert_eq!(doc["paths"][1]["family"], "ipv4");
    assert_eq!(doc["hosts"][3]["addresses"][1], "198.18.3.40");
}

#[test]
fn a_port_number_over_tcp_and_udp_is_no_collision_but_the_same_protocol_twice_is() {
    let src = r#"
name = "udp"
[roles.rsyslog-tls]
ports = [{ name = "syslog-tcp", port = 514, offset = false }]
[[hosts]]
name = "ns"
address = "198.18.0.1"
roles = ["dns", "syslog", "rsyslog-tls", "ntp"]
[[hosts]]
name = "app"
address = "198.18.0.2"
[[flows]]
from = "host:app"
to = "host:ns"
ports = [53, "syslog", "syslog-tcp", "ntp"]
"#;
    let a = analyze(src, "t.toml", Catalog::builtin());
    assert!(a.diagnostics.0.is_empty(), "{}", a.diagnostics);
    let plan = a.plan.unwrap();
    // Port 53 by number means both of dns's ports; every path is its own.
    let paths: Vec<(u16, Protocol, &str)> = plan
        .paths
        .iter()
        .map(|p| (p.port.get(), p.protocol, p.service.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            (53, Protocol::Udp, "dns"),
            (53, Protocol::Tcp, "dns-tcp"),
            (514, Protocol::Udp, "syslog"),
            (514, Protocol::Tcp, "syslog-tcp"),
            (123, Protocol::Udp, "ntp"),
        ]
    );
    let mut table = Vec::new();
    plan_table(&plan, &mut table).unwrap();
    let table = String::from_utf8(table).unwrap();
    assert!(table.contains("dns 53/udp"), "{table}");
    assert!(table.contains("dns-tcp 53"), "{table}");
    let mut json = Vec::new();
    plan_json(&plan, &mut json).unwrap();
    let json = String::from_utf8(json).unwrap();
    assert!(json.contains(r#""protocol": "udp""#), "{json}");

    // Two UDP services on 514 do collide.
    let twice = src.replace(
        r#"ports = [{ name = "syslog-tcp", port = 514, offset = false }]"#,
        r#"ports = [{ name = "syslog-tcp", port = 514, protocol = "udp", offset = false }]"#,
    );
    let problems = errors(&twice);
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::PortCollision { port: 514, .. })),
        "{problems:?}"
    );
}

const UDP_PLAN: &str = r#"
name = "udp"
[defaults]
snmp_community = "public"
[roles.infra]
ports = [
  { name = "ntp", port = 123, protocol = "udp" },
  { name = "dns", port = 53, protocol = "udp" },
  { name = "dns-tcp", port = 53 },
]
[[hosts]]
name = "a"
address = "198.18.0.10"
roles = []
[[hosts]]
name = "b"
address = "198.18.0.11"
roles = ["infra"]
[[flows]]
from = "host:a"
to = "host:b"
ports = ["ntp", 53]
"#;

#[test]
fn udp_ports_parse_and_never_collide_with_tcp_ports_of_the_same_number() {
    let a = analyze(UDP_PLAN, "u.toml", Catalog::builtin());
    assert!(a.diagnostics.0.is_empty(), "{}", a.diagnostics);
    let p = a.plan.unwrap();
    let paths: Vec<(u16, Protocol, &str)> = p
        .paths
        .iter()
        .map(|x| (x.port.get(), x.protocol, x.service.as_str()))
        .collect();
    // The number 53 means both planned ports of that number: two paths.
    assert_eq!(
        paths,
        [
            (123, Protocol::Udp, "ntp"),
            (53, Protocol::Udp, "dns"),
            (53, Protocol::Tcp, "dns-tcp")
        ]
    );
    assert_eq!(p.snmp_community.as_deref(), Some("public"));
    // Two UDP ports of one number still collide.
    let twice = UDP_PLAN.replace(
        r#"{ name = "dns-tcp", port = 53 }"#,
        r#"{ name = "dns2", port = 53, protocol = "udp" }"#,
    );
    assert!(
        errors(&twice)
            .iter()
            .any(|e| matches!(e, Problem::PortCollision { port: 53, .. })),
        "{:?}",
        errors(&twice)
    );
}

#[test]
fn the_catalog_has_the_udp_roles() {
    let c = Catalog::builtin();
    let ports = |role: &str| -> Vec<(String, u16, Protocol)> {
        c.get(role)
            .unwrap_or_else(|| panic!("no {role}"))
            .ports
            .iter()
            .map(|p| (p.name.clone(), p.port.get(), p.protocol))
            .collect()
    };
    assert_eq!(
        ports("dns"),
        [
            ("dns".into(), 53, Protocol::Udp),
            ("dns-tcp".into(), 53, Protocol::Tcp)
        ]
    );
    assert_eq!(ports("ntp"), [("ntp".into(), 123, Protocol::Udp)]);
    assert_eq!(ports("syslog"), [("syslog".into(), 514, Protocol::Udp)]);
    assert_eq!(ports("snmp"), [("snmp".into(), 161, Protocol::Udp)]);
}

#[test]
fn a_bad_snmp_community_or_protocol_is_an_error_at_its_place() {
    let empty = UDP_PLAN.replace(r#"snmp_community = "public""#, r#"snmp_community = """#);
    match Plan::parse(&empty, "u.toml") {
        Err(PlanError::Invalid(d)) => {
            let text = d.to_string();
            assert!(text.contains("u.toml:4:18"), "{text}");
            assert!(text.contains("defaults.snmp_community"), "{text}");
        }
        other => panic!("accepted: {other:?}"),
    }
    let sctp = UDP_PLAN.replace(
        r#"protocol = "udp" },
  { name = "dns""#,
        r#"protocol = "sctp" },
  { name = "dns""#,
    );
    match Plan::parse(&sctp, "u.toml") {
        Err(PlanError::Invalid(d)) => {
            let text = d.to_string();
            assert!(text.contains("u.toml:7:"), "{text}");
            assert!(text.contains("udp"), "{text}");
        }
        other => panic!("accepted: {other:?}"),
    }
}

#[test]
fn quality_thresholds_and_samples_parse_from_integers_and_floats() {
    let plan = Plan::parse(
        r#"
name = "q"
[defaults]
samples = 200
[roles.svc]
ports = [{ name = "app", port = 8080 }]
[[hosts]]
name = "a"
address = "198.18.0.1"
[[hosts]]
name = "b"
address = "198.18.0.2"
roles = ["svc"]
[[flows]]
from = "host:a"
to = "host:b"
ports = ["app"]
max_loss_pct = 2
max_rtt_ms = 20.5
[[flows]]
from = "host:b"
to = "host:a"
ports = [22]
"#,
        "q.toml",
    )
    .expect("a valid plan");
    assert_eq!(plan.defaults.samples, 200);
    assert_eq!(plan.flows[0].max_loss_pct, Some(2.0));
    assert_eq!(plan.flows[0].max_rtt_ms, Some(20.5));
    assert_eq!(
        (plan.flows[1].max_loss_pct, plan.flows[1].max_rtt_ms),
        (None, None)
    );
    assert_eq!(example().defaults.samples, 1, "no samples unless asked");
}
