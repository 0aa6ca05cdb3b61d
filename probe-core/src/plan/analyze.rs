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
    let raw = match read_raw(&file, src) {
        Ok(raw) => raw,
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
        diags: Vec::new(),
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

/// The plan file as serde reads it, or the one diagnostic that stops
/// everything: an empty plan (nothing but blanks and comments) or a TOML
/// syntax error.
fn read_raw(file: &Arc<str>, src: &str) -> Result<raw::RawPlan, Diagnostics> {
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
    toml::from_str(src).map_err(|e| Diagnostics(vec![syntax_diagnostic(file, src, &e)]))
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
