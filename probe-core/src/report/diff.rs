//! What changed between two reports of one plan, path by path: the answer a
//! network team needs after a firewall change (what got fixed, what broke,
//! what fails differently), as the `portcall.diff/v1` contract and a table.
//!
//! Paths are matched on their whole identity, `(from, to, port, protocol,
//! family)`: a dual-stack pair is two paths, 53/udp and 53/tcp are two
//! paths, and each appears at most once per report; the family and protocol
//! are shown in the table and in `changes[]`, so a change of the IPv6 half
//! of a pair alone says so. The target address is not part of the identity:
//! a renumbered host (or a name that resolves elsewhere) is still the same
//! planned path. A path in only one
//! report (the plan file was edited between the runs) is listed with `null`
//! on the side where it is missing. Only a path that was `ok` and no longer
//! is counts as worse; see [`Diff::exit_code`]. Paths that fail in both
//! reports are listed apart as well (`still_failing`), so that a change that
//! fixed some paths is not read as having fixed them all.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use super::{PathReport, Report, Verdict};
use crate::plan::Family;
use crate::probe::Observed;
use crate::render::Table;

/// The `schema` value of a diff.
pub const SCHEMA: &str = "portcall.diff/v1";

/// The differences between two reports of one plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    /// [`SCHEMA`].
    pub schema: String,
    /// The plan both reports are of.
    pub plan: String,
    /// The older report's round.
    pub old: Round,
    /// The newer report's round.
    pub new: Round,
    /// Counts by kind of change.
    pub summary: DiffSummary,
    /// Every path that changed, in the new report's order, then the paths
    /// only the old report has.
    pub changes: Vec<Change>,
    /// Every path that is a violation or an error in both reports, in the
    /// new report's order: `change` is `changed` when it fails differently
    /// now (it is then in `changes` too), `still-failing` when it fails the
    /// same way. Added to `portcall.diff/v1`; empty in older diffs.
    #[serde(default)]
    pub still_failing: Vec<Change>,
}

/// When a report's round ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round {
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339).
    pub finished_at: String,
}

/// Counts by kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiffSummary {
    /// Paths in both reports.
    pub compared: usize,
    /// Not ok before, ok now.
    pub fixed: usize,
    /// Ok before, a violation or an error now.
    pub regressed: usize,
    /// Not ok either time, but for another reason (or the other way from
    /// violation to error).
    pub changed: usize,
    /// Only in the new report.
    pub added: usize,
    /// Only in the old report.
    pub removed: usize,
    /// Not ok in either report, failing the same way or not (the length of
    /// [`Diff::still_failing`]).
    #[serde(default)]
    pub still_failing: usize,
}

/// One path that changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Source host.
    pub from: String,
    /// Target host.
    pub to: String,
    /// Target port.
    pub port: u16,
    /// The port's name (the new report's, when both have the path).
    pub service: String,
    /// TCP, TLS or UDP. Added to `portcall.diff/v1`; `tcp` in older diffs.
    #[serde(default)]
    pub protocol: crate::port::Protocol,
    /// The address family the path runs over; `null` where neither report
    /// says (added to `portcall.diff/v1`).
    #[serde(default)]
    pub family: Option<Family>,
    /// How it changed.
    pub change: ChangeKind,
    /// The old report's result; `null` when only the new report has it.
    pub before: Option<Outcome>,
    /// The new report's result; `null` when only the old report has it.
    pub after: Option<Outcome>,
}

/// How a path changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// It was `ok` and no longer is: the only change that fails a diff.
    Regressed,
    /// It was not `ok` and now is.
    Fixed,
    /// Not `ok` either time, with another verdict or observed outcome.
    Changed,
    /// Only the new report has it.
    Added,
    /// Only the old report has it.
    Removed,
    /// Not `ok` either time, failing the same way: listed only in
    /// [`Diff::still_failing`], never in [`Diff::changes`].
    StillFailing,
}

impl ChangeKind {
    /// The lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Regressed => "regressed",
            ChangeKind::Fixed => "fixed",
            ChangeKind::Changed => "changed",
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::StillFailing => "still-failing",
        }
    }
}

/// A path's result in one report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Its verdict.
    pub verdict: Verdict,
    /// What was observed; `null` when the path was not measured.
    pub observed: Option<Observed>,
    /// Why, in words. Not part of the JSON contract: the reports have it.
    #[serde(skip)]
    pub detail: String,
}

impl Outcome {
    fn of(p: &PathReport) -> Outcome {
        Outcome {
            verdict: p.verdict,
            observed: p.observed,
            detail: super::text::why(p),
        }
    }

    fn short(&self) -> String {
        format!(
            "{} ({})",
            self.verdict.as_str(),
            self.observed.map_or("not measured", |o| o.as_str())
        )
    }
}

/// Why two reports cannot be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiffError {
    /// The reports are of different plans, so their paths mean different
    /// things.
    #[error("reports of different plans: {old:?} (old) and {new:?} (new)")]
    DifferentPlans {
        /// The old report's plan.
        old: String,
        /// The new report's plan.
        new: String,
    },
    /// One report lists a path twice, so it cannot be matched.
    #[error("the {side} report lists path {from} -> {to}:{port} twice")]
    DuplicatePath {
        /// `old` or `new`.
        side: &'static str,
        /// Source host.
        from: String,
        /// Target host.
        to: String,
        /// Target port.
        port: u16,
    },
}

type Key<'a> = (&'a str, &'a str, u16, crate::port::Protocol, Option<Family>);

/// A path is its source, target, port, protocol (53/udp and 53/tcp are two
/// paths) and address family (a dual-stack pair has one path per family).
fn key(p: &PathReport) -> Key<'_> {
    (
        p.from.as_str(),
        p.to.as_str(),
        p.port,
        p.protocol,
        family(p),
    )
}

/// The path's family; a report from before families takes the family of
/// its target address.
fn family(p: &PathReport) -> Option<Family> {
    p.family
        .or_else(|| p.address.parse::<std::net::IpAddr>().ok().map(Family::of))
}

fn index<'a>(
    r: &'a Report,
    side: &'static str,
) -> Result<HashMap<Key<'a>, &'a PathReport>, DiffError> {
    let mut m = HashMap::with_capacity(r.paths.len());
    for p in &r.paths {
        if m.insert(key(p), p).is_some() {
            return Err(DiffError::DuplicatePath {
                side,
                from: p.from.clone(),
                to: p.to.clone(),
                port: p.port,
            });
        }
    }
    Ok(m)
}

/// Compares two reports of one plan.
pub fn diff(old: &Report, new: &Report) -> Result<Diff, DiffError> {
    if old.plan != new.plan {
        return Err(DiffError::DifferentPlans {
            old: old.plan.clone(),
            new: new.plan.clone(),
        });
    }
    let before = index(old, "old")?;
    index(new, "new")?;
    let mut summary = DiffSummary::default();
    let mut changes = Vec::new();
    let mut still_failing = Vec::new();
    let mut matched = HashSet::new();
    for n in &new.paths {
        let after = Outcome::of(n);
        let Some(o) = before.get(&key(n)) else {
            summary.added += 1;
            changes.push(change(n, ChangeKind::Added, None, Some(after)));
            continue;
        };
        matched.insert(key(n));
        summary.compared += 1;
        let kind = match (o.verdict == Verdict::Ok, n.verdict == Verdict::Ok) {
            (true, false) => ChangeKind::Regressed,
            (false, true) => ChangeKind::Fixed,
            (false, false) if o.verdict != n.verdict || o.observed != n.observed => {
                ChangeKind::Changed
            }
            (false, false) => ChangeKind::StillFailing,
            // Ok both times (perhaps observed differently: a must-be-blocked
            // path now refused instead of dropped).
            (true, true) => continue,
        };
        if matches!(kind, ChangeKind::Changed | ChangeKind::StillFailing) {
            still_failing.push(change(n, kind, Some(Outcome::of(o)), Some(after.clone())));
            summary.still_failing += 1;
            if kind == ChangeKind::StillFailing {
                continue;
            }
        }
        match kind {
            ChangeKind::Regressed => summary.regressed += 1,
            ChangeKind::Fixed => summary.fixed += 1,
            _ => summary.changed += 1,
        }
        changes.push(change(n, kind, Some(Outcome::of(o)), Some(after)));
    }
    for o in &old.paths {
        if !matched.contains(&key(o)) {
            summary.removed += 1;
            changes.push(change(o, ChangeKind::Removed, Some(Outcome::of(o)), None));
        }
    }
    let round = |r: &Report| Round {
        started_at: r.started_at.clone(),
        finished_at: r.finished_at.clone(),
    };
    Ok(Diff {
        schema: SCHEMA.to_string(),
        plan: new.plan.clone(),
        old: round(old),
        new: round(new),
        summary,
        changes,
        still_failing,
    })
}

fn change(
    p: &PathReport,
    kind: ChangeKind,
    before: Option<Outcome>,
    after: Option<Outcome>,
) -> Change {
    Change {
        from: p.from.clone(),
        to: p.to.clone(),
        port: p.port,
        service: p.service.clone(),
        protocol: p.protocol,
        family: family(p),
        change: kind,
        before,
        after,
    }
}

impl Change {
    /// `8280/tcp ipv6 (nio-http)`: the port with its protocol, family and
    /// name, so the two halves of a dual-stack pair read apart.
    fn port_cell(&self) -> String {
        let family = self
            .family
            .map_or(String::new(), |f| format!(" {}", f.as_str()));
        format!(
            "{}/{}{family} ({})",
            self.port,
            self.protocol.as_str(),
            self.service
        )
    }
}

impl Diff {
    /// 1 when a path got worse (was `ok`, is now a violation or an error),
    /// else 0. Paths in only one report do not count: a plan edit is not a
    /// network regression, and the new report's own exit code covers them.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.summary.regressed > 0)
    }

    /// Writes the diff as pretty-printed JSON with a trailing newline.
    pub fn write_json(&self, w: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *w, self)?;
        writeln!(w)
    }

    /// Writes the diff as tables: regressed, fixed, changed reason, then
    /// the paths in only one report.
    pub fn write_table(&self, w: &mut impl Write) -> io::Result<()> {
        let s = &self.summary;
        writeln!(
            w,
            "{}: {} regressed, {} fixed, {} changed reason, {} still failing, {} only in new, {} only in old ({} paths compared)",
            self.plan,
            s.regressed,
            s.fixed,
            s.changed,
            s.still_failing,
            s.added,
            s.removed,
            s.compared
        )?;
        writeln!(
            w,
            "  old round {} – {}\n  new round {} – {}",
            self.old.started_at, self.old.finished_at, self.new.started_at, self.new.finished_at
        )?;
        let sections = [
            (ChangeKind::Regressed, "REGRESSED (ok before, not now)"),
            (ChangeKind::Fixed, "FIXED (not ok before, ok now)"),
            (
                ChangeKind::Changed,
                "CHANGED REASON (not ok either time, failing differently)",
            ),
            (ChangeKind::Added, "ONLY IN NEW (the plan gained the path)"),
            (ChangeKind::Removed, "ONLY IN OLD (the plan lost the path)"),
            (
                ChangeKind::StillFailing,
                "STILL FAILING (not ok before, not ok now)",
            ),
        ];
        for (kind, title) in sections {
            if kind == ChangeKind::StillFailing && self.changes.is_empty() {
                writeln!(w)?;
                writeln!(w, "no path changed")?;
            }
            let rows: Vec<&Change> = if kind == ChangeKind::StillFailing {
                self.still_failing.iter().collect()
            } else {
                self.changes.iter().filter(|c| c.change == kind).collect()
            };
            if rows.is_empty() {
                continue;
            }
            writeln!(w)?;
            writeln!(w, "{title}: {}", rows.len())?;
            let mut t =
                Table::with_header(["FROM", "TO", "PORT", "BEFORE", "AFTER", "WHY"]).indent(2);
            for c in rows {
                let now = c.after.as_ref().or(c.before.as_ref());
                t.row([
                    c.from.clone(),
                    c.to.clone(),
                    c.port_cell(),
                    c.before.as_ref().map_or("-".into(), Outcome::short),
                    c.after.as_ref().map_or("-".into(), Outcome::short),
                    now.map_or(String::new(), |o| o.detail.clone()),
                ]);
            }
            t.write_to(w)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    /// The table's sample, whose second path (a must-be-blocked twin of the
    /// first, which no plan could produce) moves to its own port.
    fn sample() -> Report {
        let mut r = crate::report::table::tests::sample();
        r.paths[1].port = 3307;
        r
    }

    /// The sample, with every path fixed or broken in a different way.
    fn after() -> Report {
        let mut r = sample();
        r.finished_at = "2025-01-02T00:00:01.000Z".into();
        r.started_at = "2025-01-02T00:00:00.000Z".into();
        // ok -> violation
        r.paths[0].observed = Some(Observed::Timeout);
        r.paths[0].verdict = Verdict::Violation;
        r.paths[0].detail = "dropped".into();
        // violation -> ok
        r.paths[1].observed = Some(Observed::Timeout);
        r.paths[1].verdict = Verdict::Ok;
        r.paths[1].detail = "dropped".into();
        // error (not measured) -> violation refused: changed
        r.paths[2].observed = Some(Observed::Refused);
        r.paths[2].verdict = Verdict::Violation;
        r.paths[2].detail = "reset".into();
        // 9999 gone, 8080 new
        r.paths[3].port = 8080;
        r.recount();
        r
    }

    #[test]
    fn sorts_paths_into_fixed_regressed_changed_added_removed() {
        let d = diff(&sample(), &after()).unwrap();
        assert_eq!(
            d.summary,
            DiffSummary {
                compared: 3,
                fixed: 1,
                regressed: 1,
                changed: 1,
                added: 1,
                removed: 1,
                still_failing: 1
            }
        );
        assert_eq!(d.exit_code(), 1);
        let mut out = Vec::new();
        d.write_table(&mut out).unwrap();
        expect![[r#"
            sample: 1 regressed, 1 fixed, 1 changed reason, 1 still failing, 1 only in new, 1 only in old (3 paths compared)
              old round 2025-01-01T00:00:00.000Z – 2025-01-01T00:00:01.000Z
              new round 2025-01-02T00:00:00.000Z – 2025-01-02T00:00:01.000Z

            REGRESSED (ok before, not now): 1
              FROM  TO  PORT                 BEFORE     AFTER                WHY
              web   db  3306/tcp ipv4 (svc)  ok (open)  violation (timeout)  must be open, but dropped

            FIXED (not ok before, ok now): 1
              FROM  TO  PORT                 BEFORE            AFTER         WHY
              web   db  3307/tcp ipv4 (svc)  violation (open)  ok (timeout)  dropped

            CHANGED REASON (not ok either time, failing differently): 1
              FROM  TO     PORT                 BEFORE                AFTER                WHY
              web   cache  6379/tcp ipv4 (svc)  error (not measured)  violation (refused)  must be open, but reset

            ONLY IN NEW (the plan gained the path): 1
              FROM  TO  PORT                 BEFORE  AFTER                WHY
              web   db  8080/tcp ipv4 (svc)  -       violation (timeout)  must be open, but dropped: no answer within 500 ms (2 attempts) while the canary of db was listening

            ONLY IN OLD (the plan lost the path): 1
              FROM  TO  PORT                 BEFORE               AFTER  WHY
              web   db  9999/tcp ipv4 (svc)  violation (timeout)  -      must be open, but dropped: no answer within 500 ms (2 attempts) while the canary of db was listening

            STILL FAILING (not ok before, not ok now): 1
              FROM  TO     PORT                 BEFORE                AFTER                WHY
              web   cache  6379/tcp ipv4 (svc)  error (not measured)  violation (refused)  must be open, but reset
        "#]]
        .assert_eq(&String::from_utf8(out).unwrap());
        let mut out = Vec::new();
        d.write_json(&mut out).unwrap();
        expect![[r#"
            {
              "schema": "portcall.diff/v1",
              "plan": "sample",
              "old": {
                "started_at": "2025-01-01T00:00:00.000Z",
                "finished_at": "2025-01-01T00:00:01.000Z"
              },
              "new": {
                "started_at": "2025-01-02T00:00:00.000Z",
                "finished_at": "2025-01-02T00:00:01.000Z"
              },
              "summary": {
                "compared": 3,
                "fixed": 1,
                "regressed": 1,
                "changed": 1,
                "added": 1,
                "removed": 1,
                "still_failing": 1
              },
              "changes": [
                {
                  "from": "web",
                  "to": "db",
                  "port": 3306,
                  "service": "svc",
                  "protocol": "tcp",
                  "family": "ipv4",
                  "change": "regressed",
                  "before": {
                    "verdict": "ok",
                    "observed": "open"
                  },
                  "after": {
                    "verdict": "violation",
                    "observed": "timeout"
                  }
                },
                {
                  "from": "web",
                  "to": "db",
                  "port": 3307,
                  "service": "svc",
                  "protocol": "tcp",
                  "family": "ipv4",
                  "change": "fixed",
                  "before": {
                    "verdict": "violation",
                    "observed": "open"
                  },
                  "after": {
                    "verdict": "ok",
                    "observed": "timeout"
                  }
                },
                {
                  "from": "web",
                  "to": "cache",
                  "port": 6379,
                  "service": "svc",
                  "protocol": "tcp",
                  "family": "ipv4",
                  "change": "changed",
                  "before": {
                    "verdict": "error",
                    "observed": null
                  },
                  "after": {
                    "verdict": "violation",
                    "observed": "refused"
                  }
                },
                {
                  "from": "web",
                  "to": "db",
                  "port": 8080,
                  "service": "svc",
                  "protocol": "tcp",
                  "family": "ipv4",
                  "change": "added",
                  "before": null,
                  "after": {
                    "verdict": "violation",
                    "observed": "timeout"
                  }
                },
                {
                  "from": "web",
                  "to": "db",
                  "port": 9999,
                  "service": "svc",
                  "protocol": "tcp",
                  "family": "ipv4",
                  "change": "removed",
                  "before": {
                    "verdict": "violation",
                    "observed": "timeout"
                  },
                  "after": null
                }
              ],
              "still_failing": [
                {
                  "from": "web",
                  "to": "cache",
                  "port": 6379,
                  "service": "svc",
                  "protocol": "tcp",
                  "family": "ipv4",
                  "change": "changed",
                  "before": {
                    "verdict": "error",
                    "observed": null
                  },
                  "after": {
                    "verdict": "violation",
                    "observed": "refused"
                  }
                }
              ]
            }
        "#]]
        .assert_eq(&String::from_utf8(out).unwrap());
    }

    /// The issue's case: a must-be-blocked hole "fixed" for one path while
    /// others of the same kind still fail. The diff must list them, in JSON
    /// and in the table, so that the fix is not read as done.
    #[test]
    fn partial_fix_lists_the_paths_still_failing() {
        let old = sample();
        let mut new = sample();
        new.paths[1].verdict = Verdict::Ok;
        new.paths[1].observed = Some(Observed::Timeout);
        new.recount();
        let d = diff(&old, &new).unwrap();
        assert_eq!(d.summary.fixed, 1);
        assert_eq!(d.summary.still_failing, 2);
        assert_eq!(d.exit_code(), 0);
        let failing: Vec<(u16, ChangeKind)> =
            d.still_failing.iter().map(|c| (c.port, c.change)).collect();
        assert_eq!(
            failing,
            [
                (6379, ChangeKind::StillFailing),
                (9999, ChangeKind::StillFailing)
            ]
        );
        // Failing the same way is not a change.
        assert_eq!(d.changes.len(), 1);
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["still_failing"][0]["change"], "still-failing");
        assert_eq!(json["still_failing"][1]["after"]["verdict"], "violation");
        assert_eq!(json["summary"]["still_failing"], 2);
        let mut out = Vec::new();
        d.write_table(&mut out).unwrap();
        expect![[r#"
            sample: 0 regressed, 1 fixed, 0 changed reason, 2 still failing, 0 only in new, 0 only in old (4 paths compared)
              old round 2025-01-01T00:00:00.000Z – 2025-01-01T00:00:01.000Z
              new round 2025-01-01T00:00:00.000Z – 2025-01-01T00:00:01.000Z

            FIXED (not ok before, ok now): 1
              FROM  TO  PORT                 BEFORE            AFTER         WHY
              web   db  3307/tcp ipv4 (svc)  violation (open)  ok (timeout)  db saw our nonce from 127.0.9.1

            STILL FAILING (not ok before, not ok now): 2
              FROM  TO     PORT                 BEFORE                AFTER                 WHY
              web   cache  6379/tcp ipv4 (svc)  error (not measured)  error (not measured)  target agent cache unreachable, nothing to measure against: connect refused
              web   db     9999/tcp ipv4 (svc)  violation (timeout)   violation (timeout)   must be open, but dropped: no answer within 500 ms (2 attempts) while the canary of db was listening
        "#]].assert_eq(&String::from_utf8(out).unwrap());
        // A diff written before the list existed still reads.
        let mut old_json = json.clone();
        old_json.as_object_mut().unwrap().remove("still_failing");
        old_json["summary"]
            .as_object_mut()
            .unwrap()
            .remove("still_failing");
        let back: Diff = serde_json::from_value(old_json).unwrap();
        assert!(back.still_failing.is_empty());
    }

    #[test]
    fn identical_reports_have_no_changes_and_exit_zero() {
        let d = diff(&sample(), &sample()).unwrap();
        assert!(d.changes.is_empty());
        let twin = diff(
            &crate::report::table::tests::sample(),
            &crate::report::table::tests::sample(),
        );
        assert!(matches!(
            twin,
            Err(DiffError::DuplicatePath { side: "old", .. })
        ));
        assert_eq!(d.exit_code(), 0);
        assert_eq!(d.summary.compared, 4);
    }

    #[test]
    fn a_dual_stack_pair_is_two_paths_and_old_reports_take_the_address_family() {
        use crate::plan::Family;
        let mut old = sample();
        // A report from before families: no `family`, an IPv4 address.
        for p in &mut old.paths {
            p.family = None;
        }
        let mut new = sample();
        let mut v6 = new.paths[0].clone();
        v6.address = "2001:2:0:3::40".into();
        v6.family = Some(Family::Ipv6);
        v6.verdict = Verdict::Violation;
        new.paths.push(v6);
        new.recount();
        let d = diff(&old, &new).unwrap();
        assert_eq!(d.summary.compared, 4, "{:?}", d.summary);
        assert_eq!(d.summary.added, 1, "the IPv6 path is new: {:?}", d.summary);
        assert_eq!(d.summary.removed, 0);
    }

    #[test]
    fn diff_of_the_ipv6_half_of_a_pair_names_its_family_and_protocol() {
        use crate::plan::Family;
        let pair = || {
            let mut r = sample();
            let mut v6 = r.paths[0].clone();
            v6.address = "2001:2:0:3::40".into();
            v6.family = Some(Family::Ipv6);
            r.paths.push(v6);
            r.recount();
            r
        };
        let old = pair();
        let mut new = pair();
        let v6 = new.paths.last_mut().unwrap();
        v6.observed = Some(Observed::Timeout);
        v6.verdict = Verdict::Violation;
        new.recount();
        let d = diff(&old, &new).unwrap();
        assert_eq!(d.summary.regressed, 1, "{:?}", d.summary);
        let mut out = Vec::new();
        d.write_table(&mut out).unwrap();
        let table = String::from_utf8(out).unwrap();
        assert!(
            table.contains("web   db  3306/tcp ipv6 (svc)  ok (open)"),
            "{table}"
        );
        let json = serde_json::to_value(&d).unwrap();
        let c = &json["changes"][0];
        assert_eq!(c["family"], "ipv6", "{c}");
        assert_eq!(c["protocol"], "tcp", "{c}");
        // A diff written before the fields existed still reads.
        let mut older = json.clone();
        let change = older["changes"][0].as_object_mut().unwrap();
        change.remove("family");
        change.remove("protocol");
        let back: Diff = serde_json::from_value(older).unwrap();
        assert_eq!(back.changes[0].family, None);
    }

    #[test]
    fn udp_and_tcp_of_one_port_are_two_paths() {
        let old = sample();
        let mut new = sample();
        let mut udp = new.paths[0].clone();
        udp.protocol = crate::port::Protocol::Udp;
        udp.verdict = Verdict::Violation;
        new.paths.push(udp);
        new.recount();
        let d = diff(&old, &new).unwrap();
        assert_eq!(d.summary.compared, 4, "{:?}", d.summary);
        assert_eq!(d.summary.added, 1, "the UDP path is new: {:?}", d.summary);
    }

    #[test]
    fn only_fixes_exit_zero() {
        let mut new = sample();
        for p in &mut new.paths {
            p.verdict = Verdict::Ok;
        }
        let d = diff(&sample(), &new).unwrap();
        assert_eq!(d.summary.fixed, 3);
        assert_eq!(d.exit_code(), 0);
    }

    #[test]
    fn ok_both_times_with_another_outcome_is_not_a_change() {
        let mut new = sample();
        new.paths[0].detail = "slower".into();
        new.paths[0].latency_ms = Some(99.0);
        assert!(diff(&sample(), &new).unwrap().changes.is_empty());
    }

    #[test]
    fn reports_of_different_plans_or_with_repeated_paths_are_refused() {
        let mut other = sample();
        other.plan = "other".into();
        let err = diff(&sample(), &other).unwrap_err();
        assert_eq!(
            err.to_string(),
            "reports of different plans: \"sample\" (old) and \"other\" (new)"
        );
        let mut twice = sample();
        let p = twice.paths[3].clone();
        twice.paths.push(p);
        let err = diff(&sample(), &twice).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the new report lists path web -> db:9999 twice"
        );
    }
}
