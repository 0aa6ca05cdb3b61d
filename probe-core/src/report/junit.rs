//! JUnit XML, so that a CI server shows a path that misses its expectation
//! the way it shows a failing test: one test case per path, a `failure`
//! for a violation and an `error` for a path that could not be measured,
//! each carrying the observed outcome and the reason.
//!
//! Test cases are classed by the path's flow (its label, or `flow` of a
//! report read back from JSON), and by the source host when a report from
//! before `flow` existed carries none. The report's notes are properties.

use std::io::{self, Write};

use super::markup::escape_xml as x;
use super::text::{path_label, unix_seconds, why};
use super::{PathReport, Report, Verdict};

/// Writes the report as one JUnit `testsuites` document.
pub fn write(report: &Report, w: &mut impl Write) -> io::Result<()> {
    let s = &report.summary;
    let time = match (
        unix_seconds(&report.started_at),
        unix_seconds(&report.finished_at),
    ) {
        (Some(a), Some(b)) if b >= a => b - a,
        _ => 0.0,
    };
    let name = format!("portcall {}", report.plan);
    writeln!(w, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        w,
        r#"<testsuites name="{}" tests="{}" failures="{}" errors="{}" time="{time:.3}">"#,
        x(&name),
        s.paths,
        s.violations,
        s.errors,
    )?;
    writeln!(
        w,
        r#"  <testsuite name="{}" tests="{}" failures="{}" errors="{}" skipped="0" timestamp="{}" time="{time:.3}">"#,
        x(&name),
        s.paths,
        s.violations,
        s.errors,
        x(&report.started_at),
    )?;
    writeln!(w, "    <properties>")?;
    let mut props = vec![
        ("schema".to_string(), report.schema.clone()),
        ("plan".to_string(), report.plan.clone()),
        ("started_at".to_string(), report.started_at.clone()),
        ("finished_at".to_string(), report.finished_at.clone()),
    ];
    for h in &report.hosts {
        props.push((
            format!("host.{}", h.name),
            format!("{} agent {}", h.address, h.agent.as_str()),
        ));
    }
    for (i, n) in report.notes.iter().enumerate() {
        props.push((format!("note.{}", i + 1), n.clone()));
    }
    for (k, v) in props {
        writeln!(w, r#"      <property name="{}" value="{}"/>"#, x(&k), x(&v))?;
    }
    writeln!(w, "    </properties>")?;
    for p in &report.paths {
        write_case(p, w)?;
    }
    writeln!(w, "  </testsuite>")?;
    writeln!(w, "</testsuites>")
}

fn write_case(p: &PathReport, w: &mut impl Write) -> io::Result<()> {
    let classname = p
        .flows
        .first()
        .cloned()
        .or_else(|| (!p.flow.is_empty()).then(|| p.flow.clone()))
        .unwrap_or_else(|| p.from.clone());
    let name = format!("{} must be {}", path_label(p), p.expect);
    let time = p.latency_ms.map_or(0.0, |ms| ms / 1000.0);
    write!(
        w,
        r#"    <testcase classname="{}" name="{}" time="{time:.3}""#,
        x(&classname),
        x(&name),
    )?;
    let observed = p.observed.map_or("not-measured", |o| o.as_str());
    match p.verdict {
        Verdict::Ok => writeln!(w, "/>"),
        Verdict::Violation | Verdict::Error => {
            writeln!(w, ">")?;
            let tag = if p.verdict == Verdict::Violation {
                "failure"
            } else {
                "error"
            };
            writeln!(
                w,
                r#"      <{tag} type="{}" message="{}">{}</{tag}>"#,
                x(observed),
                x(&why(p)),
                x(&evidence(p)),
            )?;
            writeln!(w, "    </testcase>")
        }
    }
}

/// The body of a failure: every fact of the path, one per line.
fn evidence(p: &PathReport) -> String {
    let saw = match p.target_saw {
        Some(true) => "yes",
        Some(false) => "no",
        None => "no canary",
    };
    format!(
        "expect: {}\nobserved: {}\nverdict: {}\ndetail: {}\ntarget: {}:{}\nattempts: {}\nlatency_ms: {}\ntarget saw our nonce: {saw}\nseen source: {}\n",
        p.expect,
        p.observed.map_or("-", |o| o.as_str()),
        p.verdict.as_str(),
        p.detail,
        p.address,
        p.port,
        p.attempts,
        p.latency_ms.map_or("-".to_string(), |l| format!("{l:.2}")),
        p.seen_source.as_deref().unwrap_or("-"),
    ) + &super::text::arrival(p).map_or(String::new(), |a| format!("arrived: {a}\n"))
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::report::table::tests::sample;

    #[test]
    fn one_case_per_path_failures_and_errors_carry_outcome_and_reason() {
        let mut out = Vec::new();
        write(&sample(), &mut out).unwrap();
        expect![[r#"
            <?xml version="1.0" encoding="UTF-8"?>
            <testsuites name="portcall sample" tests="4" failures="2" errors="1" time="1.000">
              <testsuite name="portcall sample" tests="4" failures="2" errors="1" skipped="0" timestamp="2025-01-01T00:00:00.000Z" time="1.000">
                <properties>
                  <property name="schema" value="portcall.report/v1"/>
                  <property name="plan" value="sample"/>
                  <property name="started_at" value="2025-01-01T00:00:00.000Z"/>
                  <property name="finished_at" value="2025-01-01T00:00:01.000Z"/>
                  <property name="host.db" value="127.0.9.2 agent up"/>
                  <property name="host.cache" value="127.0.9.3 agent unreachable"/>
                </properties>
                <testcase classname="app tier" name="web -&gt; db:3306/tcp (svc) must be open" time="0.000"/>
                <testcase classname="no db from web" name="web -&gt; db:3306/tcp (svc) must be blocked" time="0.000">
                  <failure type="open" message="must be blocked, but db saw our nonce from 127.0.9.1">expect: blocked
            observed: open
            verdict: violation
            detail: db saw our nonce from 127.0.9.1
            target: 127.0.9.2:3306
            attempts: 1
            latency_ms: 0.25
            target saw our nonce: no canary
            seen source: -
            </failure>
                </testcase>
                <testcase classname="app tier" name="web -&gt; cache:6379/tcp (svc) must be open" time="0.000">
                  <error type="not-measured" message="target agent cache unreachable, nothing to measure against: connect refused">expect: open
            observed: -
            verdict: error
            detail: target agent cache unreachable, nothing to measure against: connect refused
            target: 127.0.9.5:6379
            attempts: 0
            latency_ms: -
            target saw our nonce: no canary
            seen source: -
            </error>
                </testcase>
                <testcase classname="app tier" name="web -&gt; db:9999/tcp (svc) must be open" time="0.000">
                  <failure type="timeout" message="must be open, but dropped: no answer within 500 ms (2 attempts) while the canary of db was listening">expect: open
            observed: timeout
            verdict: violation
            detail: dropped: no answer within 500 ms (2 attempts) while the canary of db was listening
            target: 127.0.9.2:9999
            attempts: 1
            latency_ms: 0.25
            target saw our nonce: no canary
            seen source: -
            </failure>
                </testcase>
              </testsuite>
            </testsuites>
        "#]]
        .assert_eq(&String::from_utf8(out).unwrap());
    }

    #[test]
    fn hostile_names_stay_inside_their_attributes() {
        let mut r = sample();
        r.paths[1].from = "a\"><x y='".into();
        r.paths[1].detail = "</failure><evil/>\u{7}".into();
        r.paths[1].flows.clear();
        r.paths[1].flow.clear();
        let mut out = Vec::new();
        write(&r, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("<evil/>"), "{text}");
        assert!(!text.contains("<x "), "{text}");
        assert!(
            text.contains(r#"classname="a&quot;&gt;&lt;x y=&#39;""#),
            "{text}"
        );
        assert!(!text.contains('\u{7}'));
    }
}
