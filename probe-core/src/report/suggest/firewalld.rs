//! `firewall-cmd --permanent ...` for a [`Rule`]: a rich rule in the zone
//! for the input chain, a direct rule for the other hooks (zones filter
//! only what arrives).

use super::quote::sh_quote;
use super::rule::{Place, Rule};

/// Rich rules are ordered by priority, the lowest first: accepts at
/// -32768 come before a port's default-deny drop at -32767, so the
/// port's must-be-open sources still get through, and both come before
/// the zone's other rules and its target.
const ACCEPT_PRIORITY: i32 = -32768;
/// See [`ACCEPT_PRIORITY`].
const DROP_PRIORITY: i32 = -32767;

/// The command for `rule` in zone `zone` (firewalld's default zone when
/// `None`).
pub(super) fn commands(zone: Option<&str>, rule: &Rule<'_>) -> Vec<String> {
    match rule.place {
        Place::Input => vec![rich(zone, rule)],
        Place::Hook { hook, .. } => vec![direct(hook, rule)],
    }
}

fn rich(zone: Option<&str>, rule: &Rule<'_>) -> String {
    let v6 = rule.source.is_some_and(|s| s.is_ipv6());
    let from = match rule.source {
        Some(a) => format!(
            " family=\"{}\" source address=\"{a}\"",
            if v6 { "ipv6" } else { "ipv4" }
        ),
        None => String::new(),
    };
    let rich = format!(
        "rule priority=\"{}\"{from} port port=\"{}\" protocol=\"{}\" {}",
        if rule.accept {
            ACCEPT_PRIORITY
        } else {
            DROP_PRIORITY
        },
        rule.port,
        rule.l4,
        if rule.accept { "accept" } else { "drop" },
    );
    let mut words = vec!["firewall-cmd".to_string(), "--permanent".to_string()];
    if let Some(z) = zone {
        words.push(format!("--zone={z}"));
    }
    words.push(format!("--add-rich-rule={rich}"));
    words
        .iter()
        .map(|w| sh_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An accept in `hook`'s chain: firewalld zones filter what arrives; a
/// host's own output is filtered by direct rules.
fn direct(hook: &str, rule: &Rule<'_>) -> String {
    let v6 = rule.dest.or(rule.source).is_some_and(|a| a.is_ipv6());
    let direct = format!(
        "{} filter {} 0 -d {} -p {} --dport {} -j ACCEPT",
        if v6 { "ipv6" } else { "ipv4" },
        hook.to_ascii_uppercase(),
        rule.dest.map(|a| a.to_string()).unwrap_or_default(),
        rule.l4,
        rule.port
    );
    let mut words = vec!["firewall-cmd", "--permanent", "--direct", "--add-rule"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    words.extend(direct.split(' ').map(String::from));
    words
        .iter()
        .map(|w| sh_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}
