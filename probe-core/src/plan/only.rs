//! `check --only`: the part of a plan one round measures. The selectors are
//! the plan's own (`host:`, `role:`, `zone:`) plus `flow:`, and they pick
//! paths, never change the plan, so agents holding the whole plan still
//! agree with the coordinator on its digest and path numbers.

use std::fmt;

use super::diag::Suggestion;
use super::model::Plan;
use super::path::{PathView, Selector};
use super::selectors::matching;

/// One `--only` selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Only {
    /// Paths from or to the hosts a plan selector matches.
    Hosts(Selector),
    /// Paths a flow produces: its `name`, its label (`from -> to`) or its
    /// position in the file (1-based).
    Flow(String),
}

impl fmt::Display for Only {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Only::Hosts(s) => s.fmt(f),
            Only::Flow(n) => write!(f, "flow:{n}"),
        }
    }
}

/// Why an `--only` selector was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OnlyError {
    /// Not `host:NAME`, `role:NAME`, `zone:NAME` or `flow:NAME`.
    #[error("--only {text:?}: expected host:NAME, role:NAME, zone:NAME or flow:NAME")]
    Syntax {
        /// The text given.
        text: String,
    },
    /// It matches no host, or no flow, of the plan.
    #[error("--only {only}: matches nothing in plan {plan}{suggestion}")]
    NoMatch {
        /// The selector.
        only: String,
        /// The plan's file.
        plan: String,
        /// "; did you mean ..." or empty.
        suggestion: Suggestion,
    },
    /// It matches hosts or flows, but no path.
    #[error("--only {only}: matches no path of plan {plan}")]
    NoPath {
        /// The selector.
        only: String,
        /// The plan's file.
        plan: String,
    },
}

impl std::str::FromStr for Only {
    type Err = OnlyError;

    fn from_str(text: &str) -> Result<Only, OnlyError> {
        let t = text.trim();
        match t.split_once(':') {
            Some(("host", n)) if !n.is_empty() => Ok(Only::Hosts(Selector::Host(n.into()))),
            Some(("role", n)) if !n.is_empty() => Ok(Only::Hosts(Selector::Role(n.into()))),
            Some(("zone", n)) if !n.is_empty() => Ok(Only::Hosts(Selector::Zone(n.into()))),
            Some(("flow", n)) if !n.is_empty() => Ok(Only::Flow(n.into())),
            _ => Err(OnlyError::Syntax { text: t.into() }),
        }
    }
}

impl Plan {
    /// The indices of the paths any of `only` selects, in plan order: a
    /// path is selected when its source or target host matches, or when
    /// one of its flows does. A selector matching nothing is an error (with
    /// "did you mean"), so a typo never silently measures nothing.
    pub fn select_paths(&self, only: &[Only]) -> Result<Vec<usize>, OnlyError> {
        // Walked a path at a time: the coordinator does not hold the
        // plan's paths (`PathScope::Lazy`).
        let mut selected = vec![false; self.path_count()];
        let mut mark = |select: &dyn Fn(&PathView<'_>) -> bool| {
            let mut matched_any = false;
            let _ = self.for_each_path(|p| {
                if select(&p) {
                    if let Some(s) = selected.get_mut(p.index) {
                        *s = true;
                    }
                    matched_any = true;
                }
                std::ops::ControlFlow::<()>::Continue(())
            });
            matched_any
        };
        for o in only {
            let matched_any = match o {
                Only::Hosts(sel) => {
                    let hosts: Vec<&str> = matching(std::slice::from_ref(sel), &self.hosts)
                        .into_iter()
                        .map(|i| self.hosts[i].name.as_str())
                        .collect();
                    if hosts.is_empty() {
                        return Err(self.no_match(o, self.candidates(sel)));
                    }
                    mark(&|p| hosts.contains(&p.from) || hosts.contains(&p.to))
                }
                Only::Flow(name) => {
                    let flows: Vec<usize> = self
                        .flows
                        .iter()
                        .filter(|f| {
                            f.name.as_deref() == Some(name.as_str())
                                || f.label() == *name
                                || f.index.to_string() == *name
                        })
                        .map(|f| f.index)
                        .collect();
                    if flows.is_empty() {
                        let names = self.flows.iter().map(|f| format!("flow:{}", f.label()));
                        return Err(self.no_match(o, names.collect()));
                    }
                    mark(&|p| p.flows.iter().any(|f| flows.contains(f)))
                }
            };
            if !matched_any {
                return Err(OnlyError::NoPath {
                    only: o.to_string(),
                    plan: self.source.to_string(),
                });
            }
        }
        Ok(selected
            .iter()
            .enumerate()
            .filter(|(_, s)| **s)
            .map(|(i, _)| i)
            .collect())
    }

    fn candidates(&self, sel: &Selector) -> Vec<String> {
        let hosts = self.hosts.iter();
        match sel {
            Selector::All => Vec::new(),
            Selector::Host(_) => hosts.map(|h| format!("host:{}", h.name)).collect(),
            Selector::Role(_) => hosts
                .flat_map(|h| h.roles.iter().map(|r| format!("role:{}", r.role)))
                .collect(),
            Selector::Zone(_) => hosts
                .filter_map(|h| h.zone.as_ref().map(|z| format!("zone:{z}")))
                .collect(),
        }
    }

    fn no_match(&self, o: &Only, candidates: Vec<String>) -> OnlyError {
        let text = o.to_string();
        OnlyError::NoMatch {
            suggestion: Suggestion::closest(&text, candidates.iter().map(String::as_str)),
            only: text,
            plan: self.source.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"
name = "only"
[[hosts]]
name = "web"
address = "198.18.8.1"
zone = "dmz"
[[hosts]]
name = "app"
address = "198.18.8.2"
roles = ["mysql"]
[[hosts]]
name = "db"
address = "198.18.8.3"
roles = ["postgresql"]
[[flows]]
name = "web to app"
from = "host:web"
to = "host:app"
ports = ["mysql"]
[[flows]]
from = "host:app"
to = "host:db"
ports = ["postgresql"]
[[flows]]
from = "zone:dmz"
to = "host:db"
ports = ["postgresql"]
expect = "blocked"
"#;

    fn plan() -> Plan {
        Plan::parse(PLAN, "only.toml").unwrap()
    }

    fn pairs(p: &Plan, only: &[&str]) -> Vec<String> {
        let only: Vec<Only> = only.iter().map(|o| o.parse().unwrap()).collect();
        p.select_paths(&only)
            .unwrap()
            .into_iter()
            .map(|i| format!("{}>{}", p.paths[i].from, p.paths[i].to))
            .collect()
    }

    #[test]
    fn selectors_pick_paths_by_host_role_zone_and_flow() {
        let p = plan();
        assert_eq!(p.paths.len(), 3);
        assert_eq!(pairs(&p, &["host:web"]), ["web>app", "web>db"]);
        assert_eq!(pairs(&p, &["role:postgresql"]), ["app>db", "web>db"]);
        assert_eq!(pairs(&p, &["zone:dmz"]), ["web>app", "web>db"]);
        assert_eq!(pairs(&p, &["flow:web to app"]), ["web>app"]);
        assert_eq!(pairs(&p, &["flow:host:app -> host:db"]), ["app>db"]);
        assert_eq!(pairs(&p, &["flow:3"]), ["web>db"]);
        // Several selectors: their union, in plan order.
        assert_eq!(pairs(&p, &["flow:3", "flow:1"]), ["web>app", "web>db"]);
    }

    #[test]
    fn typos_and_bad_syntax_are_errors_with_did_you_mean() {
        let p = plan();
        let err = p.select_paths(&["host:wbe".parse().unwrap()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--only host:wbe: matches nothing in plan only.toml; did you mean `host:web`?"
        );
        let err = p
            .select_paths(&["flow:web to ap".parse().unwrap()])
            .unwrap_err();
        assert!(
            err.to_string().contains("did you mean `flow:web to app`?"),
            "{err}"
        );
        let err = "web".parse::<Only>().unwrap_err();
        assert!(err.to_string().contains("expected host:NAME"), "{err}");
        assert!("all".parse::<Only>().is_err());
    }
}
