//! A flow's ends and ports against the hosts: `from`/`to` selectors parsed
//! and matched (`host:`/`role:`/`zone:`/`all`), and a port reference
//! resolved to the ports it means on one target.

use std::collections::BTreeSet;

use super::cx::Cx;
use super::diag::{Problem, Suggestion};
use super::host::{EffectivePort, Host};
use super::path::{PortRef, Selector};
use super::raw::Selectors;
use super::service::ServiceKind;
use crate::port::{Port, Protocol};

/// Parses and checks a `from`/`to` value; `None` when any selector is bad.
pub(super) fn selectors(
    cx: &mut Cx<'_>,
    raw: &toml::Spanned<Selectors>,
    hosts: &[Host],
) -> Option<Vec<Selector>> {
    let items = Selectors::spans_fixed(raw);
    if items.is_empty() {
        cx.push(raw.span(), Problem::BadSelector { text: "[]".into() });
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for item in items {
        let text = item.get_ref().trim();
        let sel = match text.split_once(':') {
            None if text == "all" => Some(Selector::All),
            Some(("host", n)) if !n.is_empty() => Some(Selector::Host(n.to_owned())),
            Some(("role", n)) if !n.is_empty() => Some(Selector::Role(n.to_owned())),
            Some(("zone", n)) if !n.is_empty() => Some(Selector::Zone(n.to_owned())),
            _ => None,
        };
        let Some(sel) = sel else {
            cx.push(
                item.span(),
                Problem::BadSelector {
                    text: text.to_owned(),
                },
            );
            ok = false;
            continue;
        };
        if matching(std::slice::from_ref(&sel), hosts).is_empty() {
            if let Selector::Role(r) = &sel {
                let explained = cx.broken_roles.contains(r)
                    || Suggestion::closest(r, cx.broken_roles.iter().map(String::as_str))
                        .0
                        .is_some();
                if explained {
                    // A consequence of an error already reported: the flow is
                    // dropped quietly, the plan fails on that error.
                    ok = false;
                    continue;
                }
            }
            let candidates: Vec<String> = match &sel {
                Selector::All => Vec::new(),
                Selector::Host(_) => hosts.iter().map(|h| format!("host:{}", h.name)).collect(),
                Selector::Role(_) => hosts
                    .iter()
                    .flat_map(|h| h.roles.iter().map(|r| format!("role:{}", r.role)))
                    .collect(),
                Selector::Zone(_) => hosts
                    .iter()
                    .filter_map(|h| h.zone.as_ref().map(|z| format!("zone:{z}")))
                    .collect(),
            };
            cx.push(
                item.span(),
                Problem::SelectorMatchesNothing {
                    text: text.to_owned(),
                    suggestion: Suggestion::closest(text, candidates.iter().map(String::as_str)),
                },
            );
            ok = false;
            continue;
        }
        out.push(sel);
    }
    ok.then_some(out)
}

/// Indices of the hosts any selector matches, in host order.
pub(crate) fn matching(sel: &[Selector], hosts: &[Host]) -> Vec<usize> {
    hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| sel.iter().any(|s| selects(s, h)))
        .map(|(i, _)| i)
        .collect()
}

fn selects(s: &Selector, h: &Host) -> bool {
    match s {
        Selector::All => true,
        Selector::Host(n) => &h.name == n,
        Selector::Role(r) => h.roles.iter().any(|i| &i.role == r),
        Selector::Zone(z) => h.zone.as_deref() == Some(z.as_str()),
    }
}

/// One port a flow's port reference means on a target.
pub(super) struct Resolved {
    pub(super) port: Port,
    /// The port's name (its number when unplanned).
    pub(super) service: String,
    pub(super) protocol: Protocol,
    /// The role serving it, when planned.
    pub(super) role: Option<String>,
    /// What it must answer with (the role's `service`).
    pub(super) kind: Option<ServiceKind>,
}

impl Resolved {
    fn of(e: &EffectivePort) -> Resolved {
        Resolved {
            port: e.port,
            service: e.name.clone(),
            protocol: e.protocol,
            role: Some(e.role.clone()),
            kind: e.service_kind,
        }
    }
}

/// The ports a flow port means on one target. When the target was selected only through `role:` selectors, a
/// name resolves through those roles first, so `to = "role:store"` reaches
/// the store's 9444 and not the publisher's 9443 on a shared host.
pub(super) fn resolve(pref: &PortRef, target: &Host, to: &[Selector]) -> Vec<Resolved> {
    match pref {
        PortRef::Number(p) => {
            // Every port of that number: a TCP and a UDP one may share it.
            let planned: Vec<_> = target
                .ports
                .iter()
                .filter(|e| e.port == *p)
                .map(Resolved::of)
                .collect();
            if planned.is_empty() {
                vec![Resolved {
                    port: *p,
                    service: p.to_string(),
                    protocol: Protocol::Tcp,
                    role: None,
                    kind: None,
                }]
            } else {
                planned
            }
        }
        PortRef::Name(n) => {
            let by_role_only = !to
                .iter()
                .any(|s| !matches!(s, Selector::Role(_)) && selects(s, target));
            let via: BTreeSet<&str> = to
                .iter()
                .filter_map(|s| match s {
                    Selector::Role(r) if selects(s, target) => Some(r.as_str()),
                    _ => None,
                })
                .collect();
            let all: Vec<_> = target.ports.iter().filter(|e| &e.name == n).collect();
            let narrowed: Vec<_> = all
                .iter()
                .copied()
                .filter(|e| via.contains(e.role.as_str()))
                .collect();
            let chosen = if by_role_only && !narrowed.is_empty() {
                narrowed
            } else {
                all
            };
            chosen.into_iter().map(Resolved::of).collect()
        }
    }
}
