//! `nft insert rule ...` for a [`Rule`]: at the head of the chain, so an
//! accept precedes the drops and rejects that stopped a path and a drop
//! precedes the accept that let one through.

use super::quote::{comment_token, sh_quote};
use super::rule::{Place, Rule};

/// The command for `rule` in table `FAMILY TABLE` (`family`, `table`),
/// whose input chain is `chain`.
pub(super) fn commands(family: &str, table: &str, chain: &str, rule: &Rule<'_>) -> Vec<String> {
    match rule.place {
        Place::Input => vec![input(family, table, chain, rule)],
        Place::Hook { hook, at } => vec![hooked(family, table, hook, at, rule)],
    }
}

fn input(family: &str, table: &str, chain: &str, rule: &Rule<'_>) -> String {
    let v6 = rule.source.is_some_and(|s| s.is_ipv6());
    let port_text = rule.port.to_string();
    let comment = format!("\"{}\"", comment_token(rule.note, 128));
    let mut words = vec!["nft", "insert", "rule", family, table, chain];
    let addr = rule.source.map(|s| s.to_string());
    if let Some(a) = &addr {
        words.extend([if v6 { "ip6" } else { "ip" }, "saddr", a]);
    }
    words.extend([
        rule.l4,
        "dport",
        &port_text,
        "counter",
        if rule.accept { "accept" } else { "drop" },
        "comment",
        &comment,
    ]);
    words
        .into_iter()
        .map(sh_quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// An accept in `hook`'s chain of the script's table, or in the traced
/// rule's table and chain `at`.
fn hooked(
    family: &str,
    table: &str,
    hook: &str,
    at: Option<&(String, String)>,
    rule: &Rule<'_>,
) -> String {
    let v6 = rule.dest.or(rule.source).is_some_and(|a| a.is_ipv6());
    let ipf = if v6 { "ip6" } else { "ip" };
    let port = rule.port.to_string();
    let (table, chain) = match at {
        Some((t, c)) => (t.clone(), c.clone()),
        None => (format!("{family} {table}"), hook.to_string()),
    };
    let mut words: Vec<String> = ["nft", "insert", "rule"].map(String::from).to_vec();
    words.extend(table.split_whitespace().map(String::from));
    words.push(chain);
    if let Some(a) = rule.source {
        words.extend([ipf.to_string(), "saddr".into(), a.to_string()]);
    }
    if let Some(a) = rule.dest {
        words.extend([ipf.to_string(), "daddr".into(), a.to_string()]);
    }
    words.extend([rule.l4, "dport", &port, "counter", "accept", "comment"].map(String::from));
    words.push(format!("\"{}\"", comment_token(rule.note, 128)));
    words
        .iter()
        .map(|w| sh_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}
