//! The what-if as JUnit XML, so a CI server shows a firewall change that
//! breaks a must-be-open path or opens a must-be-blocked one the way it
//! shows a failing test: one test case per path, a `failure` for `breaks`
//! and `opens` (its message names base → candidate and the candidate's
//! deciding rule), `skipped` for a path decided outside the twin (the
//! twin cannot predict it), and every other path passing, its change in
//! `system-out` when there is one. The changes loaded are properties.

use std::io::{self, Write};

use super::shared::{change_words, clean};
use crate::report::markup::escape_xml;
use crate::twin::diff::{PathChange, WhatIf, WhatIfPath, rule_words, side_words};

/// Escapes operator input for XML: controls made visible, then markup
/// escaped.
fn x(s: &str) -> String {
    escape_xml(&clean(s))
}

/// Writes the what-if as one JUnit `testsuites` document.
pub(super) fn write(whatif: &WhatIf, w: &mut impl Write) -> io::Result<()> {
    let s = &whatif.summary;
    let name = x(&format!("portcall whatif {}", whatif.plan));
    let failures = s.breaks + s.opens;
    writeln!(w, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        w,
        r#"<testsuites name="{name}" tests="{}" failures="{failures}" errors="0" skipped="{}">"#,
        s.paths, s.outside_twin,
    )?;
    writeln!(
        w,
        r#"  <testsuite name="{name}" tests="{}" failures="{failures}" errors="0" skipped="{}">"#,
        s.paths, s.outside_twin,
    )?;
    writeln!(w, "    <properties>")?;
    let mut props = vec![
        ("schema".to_string(), whatif.schema.clone()),
        ("plan".to_string(), whatif.plan.clone()),
        ("state".to_string(), whatif.state.clone()),
    ];
    for (i, c) in whatif.changes.iter().enumerate() {
        props.push((
            format!("change.{}", i + 1),
            format!("{}={} ({})", c.host, c.file, c.kind),
        ));
    }
    if let Some(f) = &whatif.fidelity {
        let words = match f.len() {
            0 => "the twin's base agrees with the live report on every path".to_string(),
            1 => "the twin's base differs from the live report on 1 path".to_string(),
            n => format!("the twin's base differs from the live report on {n} paths"),
        };
        props.push(("fidelity".to_string(), words));
    }
    for (k, v) in props {
        writeln!(w, r#"      <property name="{}" value="{}"/>"#, x(&k), x(&v))?;
    }
    writeln!(w, "    </properties>")?;
    for p in &whatif.paths {
        write_case(p, w)?;
    }
    writeln!(w, "  </testsuite>")?;
    writeln!(w, "</testsuites>")
}

/// `from -> to:port/protocol (family) must be EXPECT`: the case's name,
/// stable across changes so a CI server's history follows the path.
fn case_name(p: &WhatIfPath) -> String {
    let fam = p.family.map_or(String::new(), |f| format!(" ({f})"));
    format!(
        "{} -> {}:{}/{}{fam} must be {}",
        p.from,
        p.to,
        p.port,
        p.protocol.as_str(),
        p.expect
    )
}

fn write_case(p: &WhatIfPath, w: &mut impl Write) -> io::Result<()> {
    write!(
        w,
        r#"    <testcase classname="{}" name="{}" time="0""#,
        x(&p.from),
        x(&case_name(p)),
    )?;
    match p.change {
        PathChange::Same => writeln!(w, "/>"),
        PathChange::Breaks | PathChange::Opens => {
            writeln!(w, ">")?;
            let rule = match &p.candidate.rule {
                None => "none".to_string(),
                r => rule_words(r.as_ref()),
            };
            let message = format!(
                "{}: {} → {}; candidate rule: {rule}",
                p.change.as_str(),
                side_words(&p.base),
                side_words(&p.candidate),
            );
            writeln!(
                w,
                r#"      <failure type="{}" message="{}">{}</failure>"#,
                p.change.as_str(),
                x(&message),
                x(&evidence(p)),
            )?;
            writeln!(w, "    </testcase>")
        }
        PathChange::OutsideTwin => {
            writeln!(w, ">")?;
            writeln!(
                w,
                r#"      <skipped message="{}"/>"#,
                x(change_words(p.change))
            )?;
            writeln!(w, "    </testcase>")
        }
        PathChange::Fixes | PathChange::Changed => {
            writeln!(w, ">")?;
            writeln!(w, "      <system-out>{}</system-out>", x(&evidence(p)))?;
            writeln!(w, "    </testcase>")
        }
    }
}

/// Every fact of the path, one per line.
fn evidence(p: &WhatIfPath) -> String {
    format!(
        "change: {}\nexpect: {}\ntarget: {}:{}\nbase: {}\nbase rule: {}\ncandidate: {}\ncandidate rule: {}\n",
        change_words(p.change),
        p.expect,
        p.address,
        p.port,
        side_words(&p.base),
        rule_words(p.base.rule.as_ref()),
        side_words(&p.candidate),
        rule_words(p.candidate.rule.as_ref()),
    )
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::twin::render::tests::sample;

    fn text() -> String {
        let mut out = Vec::new();
        write(&sample(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn one_case_per_path_breaks_and_opens_fail_outside_twin_is_skipped() {
        expect![[r#"
            <?xml version="1.0" encoding="UTF-8"?>
            <testsuites name="portcall whatif sample" tests="6" failures="2" errors="0" skipped="1">
              <testsuite name="portcall whatif sample" tests="6" failures="2" errors="0" skipped="1">
                <properties>
                  <property name="schema" value="portcall.whatif/v1"/>
                  <property name="plan" value="sample"/>
                  <property name="state" value="state"/>
                  <property name="change.1" value="db=drop`\u{202e}.nft (nft-commands)"/>
                  <property name="fidelity" value="the twin&#39;s base differs from the live report on 1 path"/>
                </properties>
                <testcase classname="web|`x`&lt;script&gt;\u{202e}" name="web|`x`&lt;script&gt;\u{202e} -&gt; db:3306/tcp (ipv4) must be open" time="0">
                  <failure type="breaks" message="breaks: ok (open) → violation (timeout); candidate rule: db inet fw input: handle 5: ip saddr 198.18.5.0/24 drop comment &quot;&lt;script&gt;alert(1)&lt;/script&gt; | `rm` \u{202e}nepo&quot;">change: breaks: a must-be-open path is blocked with the change
            expect: open
            target: 198.18.5.20:3306
            base: ok (open)
            base rule: -
            candidate: violation (timeout)
            candidate rule: db inet fw input: handle 5: ip saddr 198.18.5.0/24 drop comment &quot;&lt;script&gt;alert(1)&lt;/script&gt; | `rm` \u{202e}nepo&quot;
            </failure>
                </testcase>
                <testcase classname="web" name="web -&gt; db:22/tcp (ipv6) must be blocked" time="0">
                  <failure type="opens" message="opens: ok (timeout) → violation (open); candidate rule: none">change: opens: a must-be-blocked path is open with the change
            expect: blocked
            target: 198.18.5.20:22
            base: ok (timeout)
            base rule: db inet fw input: policy drop
            candidate: violation (open)
            candidate rule: -
            </failure>
                </testcase>
                <testcase classname="app" name="app -&gt; db:5432/tcp (ipv4) must be open" time="0">
                  <system-out>change: fixes: a violation the change repairs
            expect: open
            target: 198.18.5.20:5432
            base: violation (refused)
            base rule: db inet fw input: handle 7: tcp dport 5432 reject
            candidate: ok (open)
            candidate rule: -
            </system-out>
                </testcase>
                <testcase classname="web" name="web -&gt; cache:6379/tcp (ipv4) must be blocked" time="0">
                  <system-out>change: changed: another outcome or deciding rule
            expect: blocked
            target: 198.18.5.20:6379
            base: ok (timeout)
            base rule: cache inet fw input: policy drop
            candidate: ok (refused)
            candidate rule: cache inet fw input: handle 9: tcp dport 6379 reject
            </system-out>
                </testcase>
                <testcase classname="web" name="web -&gt; app:8080/tcp (ipv4) must be open" time="0"/>
                <testcase classname="web" name="web -&gt; ext:443/tls must be open" time="0">
                  <skipped message="outside-twin: the live network decides this path in a device the twin does not hold"/>
                </testcase>
              </testsuite>
            </testsuites>
        "#]].assert_eq(&text());
    }

    #[test]
    fn hostile_names_stay_inside_their_attributes() {
        let text = text();
        assert!(!text.contains("<script"), "{text}");
        assert!(
            text.contains(r#"classname="web|`x`&lt;script&gt;\u{202e}""#),
            "{text}"
        );
        assert_eq!(text.matches("<testcase ").count(), 6, "{text}");
        assert_eq!(text.matches("<failure ").count(), 2, "{text}");
        assert_eq!(text.matches("<skipped ").count(), 1, "{text}");
    }
}
