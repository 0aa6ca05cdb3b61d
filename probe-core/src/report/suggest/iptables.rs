//! `iptables -I ...` (and `ip6tables` for IPv6) for a [`Rule`]: at the
//! head of the chain; a rule for every source is written for both
//! families.

use super::quote::{comment_token, sh_quote};
use super::rule::{Place, Rule};

/// The commands for `rule`, whose input chain is `chain`.
pub(super) fn commands(chain: &str, rule: &Rule<'_>) -> Vec<String> {
    match rule.place {
        Place::Input => input(chain, rule),
        Place::Hook { hook, .. } => vec![hooked(hook, rule)],
    }
}

fn input(chain: &str, rule: &Rule<'_>) -> Vec<String> {
    let v6 = rule.source.is_some_and(|s| s.is_ipv6());
    let port_text = rule.port.to_string();
    let tools: &[&str] = match rule.source {
        Some(_) if v6 => &["ip6tables"],
        Some(_) => &["iptables"],
        None => &["iptables", "ip6tables"],
    };
    let comment = comment_token(rule.note, 255);
    let addr = rule.source.map(|s| s.to_string());
    tools
        .iter()
        .map(|tool| {
            let mut words = vec![*tool, "-w", "-I", chain];
            if let Some(a) = &addr {
                words.extend(["-s", a]);
            }
            words.extend([
                "-p",
                rule.l4,
                "--dport",
                &port_text,
                "-m",
                "comment",
                "--comment",
                &comment,
                "-j",
                if rule.accept { "ACCEPT" } else { "DROP" },
            ]);
            words
                .into_iter()
                .map(sh_quote)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// An accept in `hook`'s built-in chain.
fn hooked(hook: &str, rule: &Rule<'_>) -> String {
    let v6 = rule.dest.or(rule.source).is_some_and(|a| a.is_ipv6());
    let port = rule.port.to_string();
    let mut words: Vec<String> = vec![
        if v6 { "ip6tables" } else { "iptables" }.into(),
        "-w".into(),
        "-I".into(),
        hook.to_ascii_uppercase(),
    ];
    if let Some(a) = rule.source {
        words.extend(["-s".into(), a.to_string()]);
    }
    if let Some(a) = rule.dest {
        words.extend(["-d".into(), a.to_string()]);
    }
    words.extend(
        [
            "-p",
            rule.l4,
            "--dport",
            &port,
            "-m",
            "comment",
            "--comment",
        ]
        .map(String::from),
    );
    words.push(comment_token(rule.note, 255));
    words.extend(["-j".into(), "ACCEPT".into()]);
    words
        .iter()
        .map(|w| sh_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}
