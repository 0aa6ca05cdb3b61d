//! GitHub-flavoured Markdown for pull-request comments: a one-line summary a
//! reviewer reads first, the violations (and unmeasured paths) as tables,
//! and the paths that are fine folded away in `<details>` so a long plan
//! does not bury what needs attention.

use std::io::{self, Write};

use super::markup::escape_markdown_cell as md;
use super::text::why;
use super::{PathReport, PortLabels, Report, Verdict};

/// Writes the report as Markdown.
pub fn write(report: &Report, w: &mut impl Write) -> io::Result<()> {
    let s = &report.summary;
    let status = if s.violations > 0 {
        "FAIL"
    } else if s.errors > 0 {
        "INCOMPLETE"
    } else {
        "PASS"
    };
    writeln!(
        w,
        "### portcall {}: **{status}** — {} violation{}, {} error{}, {} of {} paths ok",
        md(&report.plan),
        s.violations,
        plural(s.violations),
        s.errors,
        plural(s.errors),
        s.ok,
        s.paths,
    )?;
    writeln!(w)?;
    writeln!(
        w,
        "Round {} – {}.",
        md(&report.started_at),
        md(&report.finished_at)
    )?;

    for n in &report.notes {
        writeln!(w)?;
        writeln!(w, "> **Note:** {}", md(n))?;
    }

    write_agents(report, w)?;
    let labels = PortLabels::new(report);

    let paths = |v: Verdict| -> Vec<&PathReport> {
        report.paths.iter().filter(|p| p.verdict == v).collect()
    };
    let violations = paths(Verdict::Violation);
    if !violations.is_empty() {
        writeln!(w)?;
        writeln!(w, "#### Violations ({})", violations.len())?;
        writeln!(w)?;
        write_table(&violations, &labels, w)?;
    }
    let errors = paths(Verdict::Error);
    if !errors.is_empty() {
        writeln!(w)?;
        writeln!(w, "#### Not measured ({})", errors.len())?;
        writeln!(w)?;
        write_table(&errors, &labels, w)?;
    }
    let ok = paths(Verdict::Ok);
    if !ok.is_empty() {
        writeln!(w)?;
        writeln!(w, "<details>")?;
        writeln!(
            w,
            "<summary>{} path{} meet{} {} expectation</summary>",
            ok.len(),
            plural(ok.len()),
            if ok.len() == 1 { "s" } else { "" },
            if ok.len() == 1 { "its" } else { "their" },
        )?;
        writeln!(w)?;
        write_table(&ok, &labels, w)?;
        writeln!(w)?;
        writeln!(w, "</details>")?;
    }
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Agents that did not take part and planned ports without a canary: they
/// explain errors and live probes below, so they come first.
fn write_agents(report: &Report, w: &mut impl Write) -> io::Result<()> {
    let mut rows = Vec::new();
    for h in &report.hosts {
        if h.agent.is_problem() {
            rows.push(format!(
                "| {} | {} | agent {}{} |",
                md(&h.name),
                md(&h.address),
                h.agent.as_str(),
                h.agent_detail
                    .as_deref()
                    .map_or(String::new(), |d| format!(": {}", md(d)))
            ));
        }
        for c in &h.conflicts {
            rows.push(format!(
                "| {} | {} | port {} ({}) {}: {} |",
                md(&h.name),
                md(&h.address),
                c.port,
                md(&c.service),
                c.state.as_str(),
                md(&c.detail)
            ));
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(w)?;
    writeln!(w, "#### Agents")?;
    writeln!(w)?;
    writeln!(w, "| Host | Address | Note |")?;
    writeln!(w, "|---|---|---|")?;
    for r in rows {
        writeln!(w, "{r}")?;
    }
    Ok(())
}

fn write_table(paths: &[&PathReport], labels: &PortLabels, w: &mut impl Write) -> io::Result<()> {
    // The quality column only where the round took samples.
    let sampled = paths.iter().any(|p| p.quality.is_some());
    let (head, rule) = if sampled {
        (" Quality |", "---|")
    } else {
        ("", "")
    };
    writeln!(
        w,
        "| Flow | From | To | Port | Expect | Observed |{head} Why |"
    )?;
    writeln!(w, "|---|---|---|---:|---|---|{rule}---|")?;
    for p in paths {
        let quality = if sampled {
            format!(" {} |", md(&super::text::quality(p).unwrap_or_default()))
        } else {
            String::new()
        };
        writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |{quality} {} |",
            md(&p.flow_label()),
            md(&p.from),
            md(&p.to),
            md(&labels.port(p)),
            p.expect,
            p.observed.map_or("–", |o| o.as_str()),
            md(&why(p)),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::report::table::tests::sample;

    #[test]
    fn summary_then_violations_then_errors_and_ok_folded() {
        let mut out = Vec::new();
        write(&sample(), &mut out).unwrap();
        expect![[r#"
            ### portcall sample: **FAIL** — 2 violations, 1 error, 1 of 4 paths ok

            Round 2025-01-01T00:00:00.000Z – 2025-01-01T00:00:01.000Z.

            #### Agents

            | Host | Address | Note |
            |---|---|---|
            | db | 127.0.9.2 | port 3306 (mysql) held: a service already listens on 127.0.9.2:3306; probed live |
            | cache | 127.0.9.3 | agent unreachable: connect refused |

            #### Violations (2)

            | Flow | From | To | Port | Expect | Observed | Why |
            |---|---|---|---:|---|---|---|
            | no db from web | web | db | 3306/tcp (svc) | blocked | open | must be blocked, but db saw our nonce from 127.0.9.1 |
            | app tier | web | db | 9999/tcp (svc) | open | timeout | must be open, but dropped: no answer within 500 ms (2 attempts) while the canary of db was listening |

            #### Not measured (1)

            | Flow | From | To | Port | Expect | Observed | Why |
            |---|---|---|---:|---|---|---|
            | app tier | web | cache | 6379/tcp (svc) | open | – | target agent cache unreachable, nothing to measure against: connect refused |

            <details>
            <summary>1 path meets its expectation</summary>

            | Flow | From | To | Port | Expect | Observed | Why |
            |---|---|---|---:|---|---|---|
            | app tier | web | db | 3306/tcp (svc) | open | open | connected to the live service (a real service holds the port) |

            </details>
        "#]]
        .assert_eq(&String::from_utf8(out).unwrap());
    }

    #[test]
    fn a_clean_report_says_pass() {
        let mut r = sample();
        r.paths.retain(|p| p.verdict == Verdict::Ok);
        r.hosts.clear();
        r.recount();
        let mut out = Vec::new();
        write(&r, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(
                "### portcall sample: **PASS** — 0 violations, 0 errors, 1 of 1 paths ok"
            ),
            "{text}"
        );
        assert!(!text.contains("Violations"), "{text}");
    }
}
