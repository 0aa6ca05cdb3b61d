//! [`analyze`]: plan text to a validated [`Plan`] and every diagnostic,
//! located and sorted by position, never stopping at the first problem.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::catalog::Catalog;
use super::cx::Cx;
use super::defaults::{DEFAULT_MAX_PATHS, MAX_PATHS_CEILING};
use super::diag::{self, Diagnostic, Diagnostics, Location, Problem, Severity};
use super::model::{Held, PathScope, Plan, materialize};
use super::roles::RoleOrigin;
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
    let blank = src
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if blank {
        return Analysis {
            plan: None,
            diagnostics: Diagnostics(vec![Diagnostic {
                severity: Severity::Error,
                location: Some(Location::of_offset(&file, src, 0)),
                problem: Problem::EmptyPlan,
            }]),
        };
    }
    let raw: raw::RawPlan = match toml::from_str(src) {
        Ok(r) => r,
        Err(e) => {
            return Analysis {
                plan: None,
                diagnostics: Diagnostics(vec![syntax_diagnostic(&file, src, &e)]),
            };
        }
    };
    let mut cx = Cx {
        file: &file,
        src,
        diags: Vec::new(),
        broken_roles: std::collections::BTreeSet::new(),
    };
    let name = raw.name.get_ref().trim().to_owned();
    if name.is_empty() {
        cx.push(raw.name.span(), Problem::EmptyPlanName);
    }
    control_characters(&mut cx, &raw);
    let defaults = cx.defaults(raw.defaults.as_ref());

    // Roles: the plan's own tables, resolved over the catalog.
    let mut resolver = roles::Resolver {
        file: &file,
        src,
        raw: &raw.roles,
        base: catalog.map(),
        origin: RoleOrigin::Plan,
        done: BTreeMap::new(),
        diags: Vec::new(),
    };
    resolver.resolve_all();
    cx.diags.append(&mut resolver.diags);
    let plan_roles = resolver.done;

    let (mut hosts, roles, tainted) = hosts::build(&mut cx, &raw, &plan_roles, catalog, defaults);
    ssh_targets::resolve(&mut cx, &raw, &mut hosts);
    // Roles that failed with an error already reported: plan roles with
    // errors, and names hosts gave that resolve to no role. Selectors naming
    // them (or a near miss of them, the name the typo meant) match no host
    // as a consequence, and are not reported again.
    cx.broken_roles = plan_roles
        .iter()
        .filter(|(_, r)| r.is_none())
        .map(|(n, _)| n.clone())
        .chain(
            raw.hosts
                .iter()
                .flat_map(|h| h.get_ref().roles.iter().map(|r| r.get_ref().role.clone()))
                .filter(|n| !roles.contains_key(n)),
        )
        .collect();
    let zones = hosts::zones(&mut cx, &raw, &hosts);
    let max_paths = raw
        .defaults
        .as_ref()
        .and_then(|d| d.get_ref().max_paths.as_ref())
        .and_then(|m| u64::try_from(*m.get_ref()).ok())
        .filter(|m| (1..=MAX_PATHS_CEILING).contains(m))
        .unwrap_or(DEFAULT_MAX_PATHS);
    let known = flows::Known {
        plan: &plan_roles,
        catalog,
    };
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
