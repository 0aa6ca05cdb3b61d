//! [`analyze`]: plan text to a validated [`Plan`] and every diagnostic,
//! located and sorted by position, never stopping at the first problem.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::catalog::Catalog;
use super::cx::Cx;
use super::defaults::max_paths;
use super::diag::{self, Diagnostic, Diagnostics, Location, Problem, Severity};
use super::model::{Held, PathScope, Plan, materialize};
use super::roles::{Role, RoleOrigin};
use super::syntax::syntax_diagnostic;
use super::{flows, hosts, raw, roles, ssh_targets};

/// The result of reading a plan: the plan if it has no errors, and every
/// diagnostic (errors and warnings) in file order.
#[derive(Debug)]
pub struct Analysis {
    /// The plan, present only when there are no errors.
    pub plan: Option<Plan>,
    /// Everything found, sorted by position.
    pub diagnostics: Diagnostics,
}

/// Reads plan text against a catalog, collecting every diagnostic.
pub fn analyze(src: &str, file: &str, catalog: &Catalog) -> Analysis {
    analyze_scoped(src, file, catalog, &PathScope::All)
}

/// [`analyze`], keeping the paths `scope` says in the plan.
pub fn analyze_scoped(src: &str, file: &str, catalog: &Catalog, scope: &PathScope) -> Analysis {
    let file: Arc<str> = Arc::from(file);
    let (raw, type_errors) = match read_raw(&file, src) {
        Ok(read) => read,
        Err(diagnostics) => {
            return Analysis {
                plan: None,
                diagnostics,
            };
        }
    };
    let mut cx = Cx {
        file: &file,
        src,
        diags: type_errors,
        broken_roles: BTreeSet::new(),
        lines: super::diag::LineStarts::new(src),
    };
    let name = raw.name.get_ref().trim().to_owned();
    if name.is_empty() {
        cx.push(raw.name.span(), Problem::EmptyPlanName);
    }
    control_characters(&mut cx, &raw);
    let defaults = cx.defaults(raw.defaults.as_ref());
    let plan_roles = plan_roles(&mut cx, &raw, catalog);
    let (mut hosts, roles, tainted) = hosts::build(&mut cx, &raw, &plan_roles, catalog, defaults);
    ssh_targets::resolve(&mut cx, &raw, &mut hosts);
    cx.broken_roles = broken_roles(&raw, &plan_roles, &roles);
    let zones = hosts::zones(&mut cx, &raw, &hosts);
    let known = flows::Known {
        plan: &plan_roles,
        catalog,
    };
    let max_paths = max_paths(raw.defaults.as_ref());
    let (flows, expansion) = flows::expand(&mut cx, &raw, &hosts, &tainted, &known, max_paths);

    cx.diags
        .sort_by_key(|d| d.location.as_ref().map(|l| (l.line, l.col)));
    cx.diags.dedup();
    let snmp_community = cx.snmp_community(raw.defaults.as_ref());
    let diagnostics = Diagnostics(cx.diags);
    let plan = (!diagnostics.has_blocking_errors()).then(|| {
        let mut plan = Plan {
            name,
            source: Arc::clone(&file),
            defaults,
            zones,
            hosts,
            roles,
            flows,
            paths: Vec::new(),
            snmp_community,
            held: Held::All,
        };
        materialize(&mut plan, Arc::new(expansion), scope);
        plan
    });
    Analysis { plan, diagnostics }
}

/// Type errors collected before giving up on the plan's types (a bound on
/// the re-reads, each of which blanks one more line).
const MAX_TYPE_ERRORS: usize = 64;

/// The plan file as serde reads it with every type error (a wrong type, an
/// unknown or missing key), or the diagnostics that stop everything: an
/// empty plan (nothing but blanks and comments), a TOML syntax error, or
/// type errors that leave no plan to read.
///
/// serde stops at the first type error, so after each one the lines its
/// span covers are blanked (same length, newlines kept, so every later
/// location is unchanged) and the document read again: one run reports
/// them all, then the semantic checks run on what is left.
fn read_raw(file: &Arc<str>, src: &str) -> Result<(raw::RawPlan, Vec<Diagnostic>), Diagnostics> {
    let blank = src
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if blank {
        return Err(Diagnostics(vec![Diagnostic {
            severity: Severity::Error,
            location: Some(Location::of_offset(file, src, 0)),
            problem: Problem::EmptyPlan,
        }]));
    }
    // Syntax first: a document that does not parse has no lines to blank.
    if let Err(e) = src.parse::<toml::Table>() {
        return Err(Diagnostics(vec![syntax_diagnostic(file, src, &e)]));
    }
    let mut errors = Vec::new();
    let mut text = src.to_owned();
    // Whether every blanked line only lost a misspelt key or a setting with
    // a default: then the semantic checks cannot be misled by what is gone.
    let mut harmless = true;
    loop {
        let e = match toml::from_str::<raw::RawPlan>(&text) {
            Ok(raw) if harmless => return Ok((raw, errors)),
            Ok(_) => return Err(Diagnostics(errors)),
            Err(e) => e,
        };
        // A missing key after a blanking is of our making, as is a document
        // that no longer parses: what was found so far is the answer.
        let ours = !errors.is_empty()
            && (e.message().starts_with("missing field") || text.parse::<toml::Table>().is_err());
        if ours {
            return Err(Diagnostics(errors));
        }
        errors.push(syntax_diagnostic(file, src, &e));
        // A missing key has no line of its own to blank.
        if e.message().starts_with("missing field") {
            return Err(Diagnostics(errors));
        }
        let Some((t, key)) = e.span().and_then(|span| blank_lines(&text, span)) else {
            return Err(Diagnostics(errors));
        };
        harmless &= e.message().starts_with("unknown field") || DEFAULTED.contains(&key.as_str());
        if errors.len() >= MAX_TYPE_ERRORS {
            return Err(Diagnostics(errors));
        }
        text = t;
    }
}

/// Keys whose loss leaves a default that no other check depends on.
const DEFAULTED: &[&str] = &[
    "timeout_ms",
    "retries",
    "control_port",
    "max_paths",
    "adaptive",
    "snmp_community",
    "samples",
    "max_loss_pct",
    "max_rtt_ms",
    "ssh_user",
    "port_offset",
    "ssh",
];

/// `text` with the lines `span` touches replaced by spaces (newlines kept),
/// and the key of the first of them; `None` when that changes nothing (the
/// error would come back).
fn blank_lines(text: &str, span: std::ops::Range<usize>) -> Option<(String, String)> {
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let end_at = span.end.max(span.start + 1).min(text.len());
    let end = text[end_at..].find('\n').map_or(text.len(), |i| end_at + i);
    let region = &text[start..end];
    // A table header blanked would move its keys into the table above.
    if region.trim().is_empty() || region.trim_start().starts_with('[') {
        return None;
    }
    let blank: String = region
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    // Multi-byte characters become one space each: pad to keep offsets.
    let pad = region.len() - blank.len();
    let key = region
        .split_once('=')
        .map_or("", |(k, _)| k)
        .trim()
        .to_owned();
    Some((
        format!(
            "{}{blank}{}{}",
            &text[..start],
            " ".repeat(pad),
            &text[end..]
        ),
        key,
    ))
}

/// The plan's own role tables, resolved over the catalog (`None`: a role
/// with errors, reported).
fn plan_roles(
    cx: &mut Cx<'_>,
    raw: &raw::RawPlan,
    catalog: &Catalog,
) -> BTreeMap<String, Option<Role>> {
    let mut resolver = roles::Resolver {
        file: cx.file,
        src: cx.src,
        raw: &raw.roles,
        base: catalog.map(),
        origin: RoleOrigin::Plan,
        done: BTreeMap::new(),
        diags: Vec::new(),
    };
    resolver.resolve_all();
    cx.diags.append(&mut resolver.diags);
    resolver.done
}

/// Roles that failed with an error already reported: plan roles with
/// errors, and names hosts gave that resolve to no role. Selectors naming
/// them (or a near miss of them, the name the typo meant) match no host
/// as a consequence, and are not reported again.
fn broken_roles(
    raw: &raw::RawPlan,
    plan_roles: &BTreeMap<String, Option<Role>>,
    roles: &BTreeMap<String, Role>,
) -> BTreeSet<String> {
    plan_roles
        .iter()
        .filter(|(_, r)| r.is_none())
        .map(|(n, _)| n.clone())
        .chain(
            raw.hosts
                .iter()
                .flat_map(|h| h.get_ref().roles.iter().map(|r| r.get_ref().role.clone()))
                .filter(|n| !roles.contains_key(n)),
        )
        .collect()
}

/// Rejects control characters in every name a plan gives (plan, flows,
/// zones, roles, host zones and role items; host and port names have their
/// own stricter grammar), each at its location.
fn control_characters(cx: &mut Cx<'_>, raw: &raw::RawPlan) {
    let check = |cx: &mut Cx<'_>, span: std::ops::Range<usize>, what, s: &str| {
        if let Some(shown) = diag::has_controls(s) {
            cx.push(span, Problem::ControlCharacter { what, shown });
        }
    };
    check(cx, raw.name.span(), "plan name", raw.name.get_ref());
    for rf in &raw.flows {
        if let Some(n) = &rf.get_ref().name {
            check(cx, rf.span(), "flow name", n);
        }
    }
    if let Some(z) = &raw.zones {
        for (name, desc) in z.get_ref() {
            check(cx, desc.span(), "zone name", name);
            check(cx, desc.span(), "zone description", desc.get_ref());
        }
    }
    for (name, role) in &raw.roles {
        check(cx, role.span(), "role name", name);
        if let Some(d) = &role.get_ref().description {
            check(cx, role.span(), "role description", d);
        }
    }
    for rh in &raw.hosts {
        let h = rh.get_ref();
        if let Some(z) = &h.zone {
            check(cx, z.span(), "zone name", z.get_ref());
        }
        for item in &h.roles {
            check(cx, item.span(), "role name", &item.get_ref().role);
        }
    }
}
