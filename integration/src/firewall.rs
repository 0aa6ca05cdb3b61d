//! nftables rulesets derived from a plan: the firewall a deployment should
//! have (every must-be-open path accepted from its source, everything else
//! dropped), and single faults layered on top of it, so end-to-end tests can
//! say exactly which path each fault must break.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use probe_core::plan::{Expect, Plan};

/// One host's ruleset, kept as parts so a test can add or remove a rule.
#[derive(Debug, Clone, Default)]
pub struct HostRules {
    /// Rules placed at the top of the input chain, before any accept.
    pub input_first: Vec<String>,
    /// Accepts of the input chain (policy drop after them).
    pub input_accepts: Vec<String>,
    /// Rules of the output chain (policy accept after them).
    pub output: Vec<String>,
    /// A whole extra table (e.g. NAT), verbatim.
    pub extra: String,
}

impl HostRules {
    /// The ruleset as `nft -f` input; it replaces whatever the host had.
    pub fn render(&self) -> String {
        // Neighbour discovery is to IPv6 what ARP (which nftables' inet
        // family never sees) is to IPv4: a host firewall lets it through.
        let mut s = String::from(
            "flush ruleset\ntable inet portcall {\n  chain input {\n    type filter hook input priority 0; policy drop;\n    ct state established,related accept\n    iif \"lo\" accept\n    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\n",
        );
        for r in self.input_first.iter().chain(&self.input_accepts) {
            let _ = writeln!(s, "    {r}");
        }
        s.push_str(
            "  }\n  chain output {\n    type filter hook output priority 0; policy accept;\n",
        );
        for r in &self.output {
            let _ = writeln!(s, "    {r}");
        }
        s.push_str("  }\n}\n");
        s.push_str(&self.extra);
        s
    }

    /// Removes the accept of `rule` (exact text); panics if it was not there,
    /// so a test cannot silently inject nothing.
    pub fn remove_accept(&mut self, rule: &str) {
        let before = self.input_accepts.len();
        self.input_accepts.retain(|r| r != rule);
        assert!(
            self.input_accepts.len() < before,
            "no accept `{rule}` to remove; have {:?}",
            self.input_accepts
        );
    }
}

/// The accept rule for `source` (an IPv4 or IPv6 address or network)
/// reaching TCP `port`.
pub fn accept(source: &str, port: u16) -> String {
    let family = if source.contains(':') { "ip6" } else { "ip" };
    format!("{family} saddr {source} tcp dport {port} accept")
}

/// The accept rule for `source` reaching UDP `port`.
pub fn accept_udp(source: &str, port: u16) -> String {
    accept(source, port).replace(" tcp dport ", " udp dport ")
}

/// The correct firewall for every host of `plan`: the coordinator host may
/// reach every agent's control port, every must-be-open path is accepted
/// from its source's address, and everything else arriving is dropped.
pub fn correct(plan: &Plan, coordinator: &str) -> BTreeMap<String, HostRules> {
    correct_with_control(plan, coordinator, plan.defaults.control_port.get())
}

/// [`correct`], with `port` (ssh's, for `check --ssh`) as the only port the
/// coordinator host may reach besides the plan's paths: no control port.
pub fn correct_with_control(
    plan: &Plan,
    coordinator: &str,
    port: u16,
) -> BTreeMap<String, HostRules> {
    // Every address of a host, so a dual-stack source is accepted on
    // whichever family it arrives.
    let addrs = |name: &str| -> Vec<String> {
        plan.host(name)
            .unwrap_or_else(|| panic!("no host {name} in the plan"))
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let control = port;
    let mut rules: BTreeMap<String, HostRules> = plan
        .hosts
        .iter()
        .map(|h| {
            let r = HostRules {
                input_accepts: addrs(coordinator)
                    .iter()
                    .map(|a| accept(a, control))
                    .collect(),
                ..HostRules::default()
            };
            (h.name.clone(), r)
        })
        .collect();
    for p in plan.paths.iter().filter(|p| p.expect == Expect::Open) {
        let r = rules.get_mut(&p.to).expect("every target is a host");
        for a in addrs(&p.from) {
            let rule = if p.protocol == probe_core::port::Protocol::Udp {
                accept_udp(&a, p.port.get())
            } else {
                accept(&a, p.port.get())
            };
            if !r.input_accepts.contains(&rule) {
                r.input_accepts.push(rule);
            }
        }
    }
    rules
}
