//! Memory that follows a host's own paths: a plan read for one host keeps
//! only that host's paths (with their positions in the whole plan and the
//! whole plan's digest), and a lazily read plan produces its paths one at a
//! time; both must agree, path for path, with the plan expanded whole.
//! Counts, not bytes: the memory itself is measured by
//! `scripts/bench/idle_agent.sh`.

use std::ops::ControlFlow;

use probe_core::agent::canary_ports;
use probe_core::control::plan_digest;
use probe_core::plan::{Path, PathScope, Plan};
use probe_core::render::plan::plan_json;

/// The plan of `scripts/bench/mesh_plan.py N M`: hosts h1..hN, one role of
/// M ports, one flow from every host to every other on all of them.
fn mesh(n: usize, m: usize) -> String {
    let mut s = format!(
        "name = \"mesh-{n}x{m}\"\n[defaults]\ntimeout_ms = 1000\nretries = 1\ncontrol_port = 7400\n"
    );
    for i in 1..=n {
        let k = i - 1;
        s += &format!(
            "[[hosts]]\nname = \"h{i}\"\naddress = \"198.18.{}.{}\"\nroles = [\"svc\"]\n",
            k / 250,
            k % 250 + 1
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

/// Overlapping flows (merged paths with several flows, a conflict-free
/// duplicate through a number and a name), a dual-stack host, a family
/// filter, a host known by name, a dial to another port, unplanned ports.
const MIXED: &str = r#"
name = "mixed"
[[hosts]]
name = "web"
address = ["198.18.0.1", "2001:2::1"]
roles = ["app"]
port_offset = 3
[[hosts]]
name = "db"
address = ["198.18.0.2", "2001:2::2"]
roles = ["mysql", "db-like"]
[[hosts]]
name = "v6"
address = "2001:2::3"
roles = ["mysql"]
[[hosts]]
name = "named"
address = "db.example.internal"
roles = ["mysql", "resolver"]
[roles.resolver]
ports = [{ name = "dns", port = 53, protocol = "udp", offset = false }, { name = "dns-tcp", port = 53, offset = false }]
[roles.app]
dials = [{ name = "svc", to = "base", port = 7000 }]
[roles.base]
ports = [{ name = "svc", port = 7000 }]
[roles.db-like]
use = "base"
[[flows]]
name = "app to data"
from = "host:web"
to = "all"
ports = ["mysql", "svc", 22]
[[flows]]
from = "all"
to = "role:mysql"
ports = ["mysql", 3306]
[[flows]]
from = "host:db"
to = "host:web"
ports = [80, 443]
expect = "blocked"
family = "ipv6"
[[flows]]
from = "role:mysql"
to = "host:db"
ports = ["svc"]
[[flows]]
from = "all"
to = "role:resolver"
ports = [53, "dns"]
"#;

fn whole(src: &str) -> Plan {
    Plan::parse(src, "p.toml").unwrap()
}

fn walked(plan: &Plan) -> Vec<Path> {
    let mut out = Vec::new();
    let _ = plan.for_each_path(|p| {
        assert_eq!(p.index, out.len());
        out.push(p.to_path());
        ControlFlow::<()>::Continue(())
    });
    out
}

#[test]
fn lazy_and_host_scoped_plans_agree_with_the_whole_expansion() {
    let examples = [
        include_str!("../../examples/wso2-distributed.toml"),
        include_str!("../../examples/wso2-thrift-offsets.toml"),
        include_str!("../../examples/wso2-thrift-offsets-agree.toml"),
    ];
    let mesh = mesh(12, 3);
    for src in examples.iter().copied().chain([MIXED, mesh.as_str()]) {
        let all = whole(src);
        assert!(all.holds_every_path());
        let lazy = Plan::parse_scoped(src, "p.toml", &PathScope::Lazy).unwrap();
        assert!(lazy.paths.is_empty(), "{}", all.name);
        assert_eq!(lazy.path_count(), all.paths.len(), "{}", all.name);
        assert_eq!(walked(&lazy), all.paths, "{}", all.name);
        assert_eq!(plan_digest(&lazy), plan_digest(&all), "{}", all.name);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        plan_json(&all, &mut a).unwrap();
        plan_json(&lazy, &mut b).unwrap();
        assert_eq!(String::from_utf8(b), String::from_utf8(a), "{}", all.name);

        for h in &all.hosts {
            let scope = PathScope::Host(h.name.clone());
            let read = Plan::parse_scoped(src, "p.toml", &scope).unwrap();
            let narrowed = whole(src).scoped(&scope);
            let from_lazy = Plan::parse_scoped(src, "p.toml", &PathScope::Lazy)
                .unwrap()
                .scoped(&scope);
            let want: Vec<(usize, &Path)> = all
                .paths
                .iter()
                .enumerate()
                .filter(|(_, p)| p.from == h.name || p.to == h.name)
                .collect();
            for one in [&read, &narrowed, &from_lazy] {
                assert!(!one.holds_every_path());
                assert_eq!(one.path_count(), all.paths.len());
                assert_eq!(plan_digest(one), plan_digest(&all), "{}", h.name);
                let got: Vec<(usize, &Path)> = one
                    .paths
                    .iter()
                    .enumerate()
                    .map(|(k, p)| (one.path_index(k), p))
                    .collect();
                assert_eq!(got, want, "{} in {}", h.name, all.name);
                assert_eq!(canary_ports(one, &h.name), canary_ports(&all, &h.name));
            }
        }
    }
    // The mixed plan does merge, dial and filter: the cases above are not
    // vacuous.
    let mixed = whole(MIXED);
    assert!(mixed.paths.iter().any(|p| p.flows.len() > 1));
    assert!(mixed.paths.iter().any(|p| p.server_port.is_some()));
    assert!(mixed.paths.iter().any(|p| p.family.is_none()));
    assert!(mixed.paths.iter().any(|p| p.role.is_none()));
    // A UDP and a TCP port of one number are two paths, each merged with
    // its own duplicate.
    let dns: Vec<&Path> = mixed
        .paths
        .iter()
        .filter(|p| p.from == "web" && p.port.get() == 53)
        .collect();
    assert_eq!(dns.len(), 2, "{dns:#?}");
    assert_ne!(dns[0].protocol, dns[1].protocol);
}

#[test]
fn an_agent_of_a_200_by_20_mesh_holds_only_its_own_paths_and_canaries() {
    let (n, m) = (200usize, 20usize);
    let src = mesh(n, m);
    let host = 7usize;
    let name = format!("h{host}");
    let plan = Plan::parse_scoped(&src, "mesh.toml", &PathScope::Lazy)
        .unwrap()
        .scoped(&PathScope::Host(name.clone()));
    assert_eq!(plan.path_count(), n * (n - 1) * m);
    let outgoing = plan.paths.iter().filter(|p| p.from == name).count();
    let incoming = plan.paths.iter().filter(|p| p.to == name).count();
    assert_eq!(outgoing, (n - 1) * m);
    assert_eq!(incoming, (n - 1) * m);
    assert_eq!(plan.paths.len(), outgoing + incoming);
    assert_eq!(canary_ports(&plan, &name).len(), m);
    // Positions in the whole plan, by the mesh's order (port, then target,
    // then source, a host never its own target), as the coordinator has
    // them.
    for (k, p) in plan.paths.iter().enumerate() {
        let num = |h: &str| h[1..].parse::<usize>().unwrap();
        let (s, t) = (num(&p.from), num(&p.to));
        let j = usize::from(p.port.get()) - 20000;
        let want = j * n * (n - 1) + (t - 1) * (n - 1) + (s - 1) - usize::from(s > t);
        assert_eq!(plan.path_index(k), want, "{p:?}");
    }
}
