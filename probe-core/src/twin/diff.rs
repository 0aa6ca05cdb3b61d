//! The what-if's answer: per path the twin's base and candidate verdicts
//! with the deciding rule on each side, and what the change does to the
//! path (`breaks`, `opens`, `fixes`, `changed`, `same`, `outside-twin`);
//! `portcall.whatif/v1` JSON and a table. With the last live report, the
//! paths where the twin's base disagrees with the live network
//! (fidelity), so the operator knows how far to trust it.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use super::run::Change;
use crate::plan::{Expect, Family};
use crate::port::Protocol;
use crate::probe::Observed;
use crate::render::Table;
use crate::report::blame::{BlameRule, Where};
use crate::report::{PathReport, Report, Verdict};

/// The JSON schema name of a what-if.
pub const SCHEMA: &str = "portcall.whatif/v1";

/// One side (base or candidate) of a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Side {
    /// The verdict against the plan's expectation.
    pub verdict: Verdict,
    /// The joined outcome.
    pub observed: Option<Observed>,
    /// The rule that decided it, as the check report's `blame.rule`.
    pub rule: Option<BlameRule>,
}

impl Side {
    /// The same decision: verdict, outcome and deciding rule, a rule known
    /// by its host, table, chain and text (or policy). Handles are the
    /// kernel's numbering, not the rule: a ruleset loaded again (a whole
    /// candidate, or the live ruleset into the twin after rules were
    /// deleted over the years) renumbers the same rule.
    pub fn same_decision(&self, other: &Side) -> bool {
        self.verdict == other.verdict
            && self.observed == other.observed
            && match (&self.rule, &other.rule) {
                (None, None) => true,
                (Some(a), Some(b)) => same_rule(a, b),
                _ => false,
            }
    }

    fn of(p: &PathReport) -> Side {
        Side {
            verdict: p.verdict,
            observed: p.observed,
            rule: p.blame.as_ref().and_then(|b| b.rule.clone()),
        }
    }
}

/// Two rules are the same rule: same place and the same text (or policy);
/// the handle decides only where neither has its text.
fn same_rule(a: &BlameRule, b: &BlameRule) -> bool {
    a.host == b.host
        && a.table == b.table
        && a.chain == b.chain
        && a.policy == b.policy
        && match (&a.text, &b.text) {
            (Some(x), Some(y)) => x == y,
            _ => a.text == b.text && a.handle == b.handle,
        }
}

/// What the change does to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathChange {
    /// A must-be-open path the change blocks.
    Breaks,
    /// A must-be-blocked path the change opens.
    Opens,
    /// A violation the change repairs.
    Fixes,
    /// Any other difference (outcome or deciding rule).
    Changed,
    /// No difference.
    Same,
    /// The live network decides this path in a device the twin does not
    /// hold (a router that is no host of the state): not predicted.
    OutsideTwin,
}

impl PathChange {
    /// The name used in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            PathChange::Breaks => "breaks",
            PathChange::Opens => "opens",
            PathChange::Fixes => "fixes",
            PathChange::Changed => "changed",
            PathChange::Same => "same",
            PathChange::OutsideTwin => "outside-twin",
        }
    }
}

/// One path of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhatIfPath {
    /// Source host.
    pub from: String,
    /// Target host.
    pub to: String,
    /// The target address probed.
    pub address: String,
    /// The port.
    pub port: u16,
    /// The transport.
    pub protocol: Protocol,
    /// The address family.
    pub family: Option<Family>,
    /// What the plan expects.
    pub expect: Expect,
    /// The twin with the base state.
    pub base: Side,
    /// The twin with the changes loaded (the base again without changes).
    pub candidate: Side,
    /// What the change does.
    pub change: PathChange,
}

/// Counts per kind of change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhatIfSummary {
    /// Paths.
    pub paths: usize,
    /// Must-be-open paths blocked by the change.
    pub breaks: usize,
    /// Must-be-blocked paths opened by the change.
    pub opens: usize,
    /// Violations repaired.
    pub fixes: usize,
    /// Other differences.
    pub changed: usize,
    /// Unchanged.
    pub same: usize,
    /// Decided outside the twin.
    pub outside_twin: usize,
}

/// A path where the twin's base disagrees with the live report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disagreement {
    /// `from -> to:port/protocol (family)`.
    pub path: String,
    /// The live report's side.
    pub live: Side,
    /// The twin's base.
    pub twin: Side,
}

/// The whole answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhatIf {
    /// [`SCHEMA`].
    pub schema: String,
    /// The plan's name.
    pub plan: String,
    /// The state directory.
    pub state: String,
    /// The changes loaded.
    pub changes: Vec<ChangeRef>,
    /// Counts.
    pub summary: WhatIfSummary,
    /// Every path.
    pub paths: Vec<WhatIfPath>,
    /// With `--live`: the paths where the twin's base verdict, outcome or
    /// rule differs from the live report's (empty: full agreement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fidelity: Option<Vec<Disagreement>>,
}

/// A change as the answer names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRef {
    /// The host.
    pub host: String,
    /// The candidate file.
    pub file: String,
    /// What kind of file it was read as.
    pub kind: String,
}

impl WhatIf {
    /// Exit status: 1 when the change breaks or opens a planned path.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.summary.breaks + self.summary.opens > 0)
    }
}

/// Path identity across reports of one plan.
type Key = (String, String, String, u16, Protocol, Option<Family>);

fn key(p: &PathReport) -> Key {
    (
        p.from.clone(),
        p.to.clone(),
        p.address.clone(),
        p.port,
        p.protocol,
        p.family,
    )
}

fn label(p: &PathReport) -> String {
    let fam = p.family.map_or(String::new(), |f| format!(" ({f})"));
    format!("{} -> {}:{}/{}{fam}", p.from, p.to, p.port, p.protocol)
}

/// What the change does to one path.
pub fn classify(expect: Expect, base: &Side, candidate: &Side) -> PathChange {
    if base.same_decision(candidate) {
        return PathChange::Same;
    }
    match (base.verdict, candidate.verdict) {
        (Verdict::Ok, Verdict::Violation) if expect == Expect::Open => PathChange::Breaks,
        (Verdict::Ok, Verdict::Violation) => PathChange::Opens,
        (Verdict::Violation, Verdict::Ok) => PathChange::Fixes,
        _ => PathChange::Changed,
    }
}

/// Whether the live report decides `p` in a network device the twin does
/// not hold: blamed on the network at a hop that is no address of the
/// twin (`twin_addresses`), or at an unknown hop when the twin's base does
/// not reproduce the live result (a reproduced one shows the device is in
/// the twin).
fn decided_outside(p: &PathReport, twin_addresses: &[String], reproduced: bool) -> bool {
    p.blame.as_ref().is_some_and(|b| {
        b.at == Where::Network
            && match &b.hop {
                Some(h) => !twin_addresses.contains(h),
                None => !reproduced,
            }
    })
}

/// Compares the twin's rounds (and the live report, when given).
pub fn compare(
    base: &Report,
    candidate: Option<&Report>,
    live: Option<&Report>,
    changes: &[Change],
    state: &str,
    twin_addresses: &[String],
) -> WhatIf {
    let cand: BTreeMap<Key, &PathReport> = candidate
        .map(|c| c.paths.iter().map(|p| (key(p), p)).collect())
        .unwrap_or_default();
    let live_paths: Option<BTreeMap<Key, &PathReport>> =
        live.map(|l| l.paths.iter().map(|p| (key(p), p)).collect());
    let mut summary = WhatIfSummary::default();
    let mut paths = Vec::new();
    let mut fidelity = live.map(|_| Vec::new());
    for p in &base.paths {
        let k = key(p);
        let b = Side::of(p);
        let c = cand.get(&k).map_or_else(|| b.clone(), |c| Side::of(c));
        let live_p = live_paths.as_ref().and_then(|l| l.get(&k).copied());
        let mut change = classify(p.expect, &b, &c);
        if let Some(lp) = live_p {
            let l = Side::of(lp);
            let reproduced = l.same_decision(&b);
            if !reproduced {
                if let Some(f) = fidelity.as_mut() {
                    f.push(Disagreement {
                        path: label(p),
                        live: l,
                        twin: b.clone(),
                    });
                }
            }
            if decided_outside(lp, twin_addresses, reproduced) {
                change = PathChange::OutsideTwin;
            }
        }
        summary.paths += 1;
        match change {
            PathChange::Breaks => summary.breaks += 1,
            PathChange::Opens => summary.opens += 1,
            PathChange::Fixes => summary.fixes += 1,
            PathChange::Changed => summary.changed += 1,
            PathChange::Same => summary.same += 1,
            PathChange::OutsideTwin => summary.outside_twin += 1,
        }
        paths.push(WhatIfPath {
            from: p.from.clone(),
            to: p.to.clone(),
            address: p.address.clone(),
            port: p.port,
            protocol: p.protocol,
            family: p.family,
            expect: p.expect,
            base: b,
            candidate: c,
            change,
        });
    }
    WhatIf {
        schema: SCHEMA.into(),
        plan: base.plan.clone(),
        state: state.into(),
        changes: changes
            .iter()
            .map(|c| ChangeRef {
                host: c.host.clone(),
                file: c.file.display().to_string(),
                kind: serde_json::to_value(c.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            })
            .collect(),
        summary,
        paths,
        fidelity,
    }
}

/// `portcall.whatif/v1` JSON.
pub fn write_json(w: &mut impl Write, whatif: &WhatIf) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, whatif)?;
    writeln!(w)
}

/// A side in words: `violation (timeout)`; every what-if renderer says it
/// so.
pub(crate) fn side_words(s: &Side) -> String {
    let observed = s.observed.map_or("-".to_string(), |o| o.to_string());
    format!("{} ({observed})", s.verdict.as_str())
}

/// The deciding rule in words: `db inet fw input: handle 5: ip saddr … drop`,
/// `policy drop`, or `-` when no rule decided.
pub(crate) fn rule_words(r: Option<&BlameRule>) -> String {
    match r {
        None => "-".into(),
        Some(r) => {
            let what = match (&r.policy, &r.text, r.handle) {
                (Some(p), _, _) => format!("policy {p}"),
                (None, Some(t), Some(h)) => format!("handle {h}: {t}"),
                (None, Some(t), None) => t.clone(),
                (None, None, Some(h)) => format!("handle {h}"),
                (None, None, None) => "?".into(),
            };
            // A ruleset's names and comments never drive the terminal.
            crate::plan::escape_controls(&format!("{} {} {}: {what}", r.host, r.table, r.chain))
                .into_owned()
        }
    }
}

/// The answer as a table: the paths that change first (only they, unless
/// `all`), then the counts, then any disagreement with the live report.
pub fn write_table(w: &mut impl Write, whatif: &WhatIf, all: bool) -> io::Result<()> {
    let mut t = Table::with_header(["CHANGE", "PATH", "EXPECT", "BASE", "CANDIDATE", "RULE"]);
    let mut rows: Vec<&WhatIfPath> = whatif
        .paths
        .iter()
        .filter(|p| all || p.change != PathChange::Same)
        .collect();
    rows.sort_by_key(|p| p.change);
    for p in rows {
        let fam = p.family.map_or(String::new(), |f| format!(" ({f})"));
        let rule = if p.base.same_decision(&p.candidate) || p.base.rule == p.candidate.rule {
            rule_words(p.candidate.rule.as_ref())
        } else {
            format!(
                "{} -> {}",
                rule_words(p.base.rule.as_ref()),
                rule_words(p.candidate.rule.as_ref())
            )
        };
        t.row([
            p.change.as_str().to_string(),
            format!("{} -> {}:{}/{}{fam}", p.from, p.to, p.port, p.protocol),
            p.expect.to_string(),
            side_words(&p.base),
            side_words(&p.candidate),
            rule,
        ]);
    }
    if !t.is_empty() {
        t.write_to(w)?;
        writeln!(w)?;
    }
    let s = &whatif.summary;
    writeln!(
        w,
        "{} paths: {} breaks, {} opens, {} fixes, {} changed, {} same, {} outside the twin",
        s.paths, s.breaks, s.opens, s.fixes, s.changed, s.same, s.outside_twin
    )?;
    if let Some(f) = &whatif.fidelity {
        if f.is_empty() {
            writeln!(
                w,
                "fidelity: the twin's base agrees with the live report on every path"
            )?;
        } else {
            writeln!(
                w,
                "fidelity: the twin's base differs from the live report on {} paths:",
                f.len()
            )?;
            for d in f {
                writeln!(
                    w,
                    "  {}: live {}, twin {}",
                    d.path,
                    side_words(&d.live),
                    side_words(&d.twin)
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(verdict: Verdict, observed: Observed) -> Side {
        Side {
            verdict,
            observed: Some(observed),
            rule: None,
        }
    }

    #[test]
    fn rule_words_escape_what_a_ruleset_could_smuggle() {
        let r = BlameRule {
            host: "db".into(),
            table: "inet fw\u{202e}".into(),
            chain: "input".into(),
            handle: Some(7),
            text: Some("tcp dport 3306 comment \"\u{1b}[2J\" drop".into()),
            policy: None,
        };
        let words = rule_words(Some(&r));
        assert_eq!(
            words,
            "db inet fw\\u{202e} input: handle 7: tcp dport 3306 comment \"\\u{1b}[2J\" drop"
        );
    }

    #[test]
    fn the_same_rule_renumbered_is_the_same_decision() {
        let rule = |handle, text: &str| BlameRule {
            host: "db".into(),
            table: "inet fw".into(),
            chain: "input".into(),
            handle: Some(handle),
            text: Some(text.into()),
            policy: None,
        };
        let side = |r| Side {
            verdict: Verdict::Ok,
            observed: Some(Observed::Timeout),
            rule: Some(r),
        };
        let a = side(rule(5, "tcp dport 3306 drop"));
        assert!(a.same_decision(&side(rule(9, "tcp dport 3306 drop"))));
        assert_eq!(
            classify(Expect::Blocked, &a, &side(rule(9, "tcp dport 3306 drop"))),
            PathChange::Same
        );
        // Another rule text, or another chain, is another decision.
        assert!(!a.same_decision(&side(rule(5, "tcp dport 3306 reject"))));
        let mut other = rule(5, "tcp dport 3306 drop");
        other.chain = "forward".into();
        assert!(!a.same_decision(&side(other)));
        // Without the text, the handle is all there is to compare.
        let mut bare = rule(5, "");
        bare.text = None;
        let mut renumbered = bare.clone();
        renumbered.handle = Some(9);
        assert!(!side(bare.clone()).same_decision(&side(renumbered)));
        assert!(side(bare.clone()).same_decision(&side(bare)));
    }

    #[test]
    fn changes_are_named_by_expectation_and_direction() {
        let open = side(Verdict::Ok, Observed::Open);
        let dropped = side(Verdict::Violation, Observed::Timeout);
        assert_eq!(classify(Expect::Open, &open, &dropped), PathChange::Breaks);
        let blocked = side(Verdict::Ok, Observed::Timeout);
        let opened = side(Verdict::Violation, Observed::Open);
        assert_eq!(
            classify(Expect::Blocked, &blocked, &opened),
            PathChange::Opens
        );
        assert_eq!(classify(Expect::Open, &dropped, &open), PathChange::Fixes);
        assert_eq!(classify(Expect::Open, &open, &open), PathChange::Same);
        let refused = side(Verdict::Ok, Observed::Refused);
        assert_eq!(
            classify(Expect::Blocked, &blocked, &refused),
            PathChange::Changed
        );
        let mut ruled = blocked.clone();
        ruled.rule = Some(BlameRule {
            host: "db".into(),
            table: "inet f".into(),
            chain: "input".into(),
            handle: None,
            text: None,
            policy: Some("drop".into()),
        });
        assert_eq!(
            classify(Expect::Blocked, &blocked, &ruled),
            PathChange::Changed
        );
    }
}
