//! The terminal rendering of a report: violations first, then errors, then
//! the paths that are fine, each section grouped by flow, every failing row
//! saying why it failed.

use std::io::{self, Write};

use super::{AgentState, PathReport, Report, Verdict};
use crate::render::Table;

/// How the table is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableOptions {
    /// ANSI colour on section headings (the caller decides: only on a TTY).
    pub color: bool,
    /// List the paths that are fine too, not only their count.
    pub show_ok: bool,
}

impl Default for TableOptions {
    fn default() -> TableOptions {
        TableOptions {
            color: false,
            show_ok: true,
        }
    }
}

/// Writes the report as grouped tables.
pub fn write(report: &Report, options: TableOptions, w: &mut impl Write) -> io::Result<()> {
    let s = &report.summary;
    writeln!(
        w,
        "{}: {} paths, {} ok, {} violation{}, {} error{}",
        report.plan,
        s.paths,
        s.ok,
        s.violations,
        if s.violations == 1 { "" } else { "s" },
        s.errors,
        if s.errors == 1 { "" } else { "s" },
    )?;
    write_hosts(report, options, w)?;
    let sections = [
        (Verdict::Violation, "VIOLATIONS", "31"),
        (Verdict::Error, "ERRORS", "33"),
        (Verdict::Ok, "OK", "32"),
    ];
    for (verdict, title, colour) in sections {
        let paths: Vec<&PathReport> = report.paths.iter().filter(|p| p.verdict == verdict).collect();
        if paths.is_empty() {
            continue;
        }
        writeln!(w)?;
        heading(w, options, colour, &format!("{title} ({})", paths.len()))?;
        if verdict == Verdict::Ok && !options.show_ok {
            continue;
        }
        for (label, group) in by_flow(&paths) {
            writeln!(w, "  {label}")?;
            let mut t = Table::with_header(["FROM", "TO", "PORT", "EXPECT", "OBSERVED", "LATENCY", "WHY"])
                .indent(4);
            for p in group {
                t.row([
                    p.from.clone(),
                    p.to.clone(),
                    format!("{}/{} ({})", p.port, p.protocol.as_str(), p.service),
                    p.expect.to_string(),
                    p.observed.map_or("-".to_string(), |o| o.to_string()),
                    p.latency_ms.map_or("-".to_string(), |l| format!("{l:.2} ms")),
                    why(p),
                ]);
            }
            t.write_to(w)?;
        }
    }
    Ok(())
}

fn heading(w: &mut impl Write, options: TableOptions, colour: &str, text: &str) -> io::Result<()> {
    if options.color {
        writeln!(w, "\x1b[1;{colour}m{text}\x1b[0m")
    } else {
        writeln!(w, "{text}")
    }
}

/// Agents that were not up, and planned ports that got no canary.
fn write_hosts(report: &Report, options: TableOptions, w: &mut impl Write) -> io::Result<()> {
    let mut t = Table::with_header(["HOST", "ADDRESS", "AGENT", "NOTE"]).indent(2);
    for h in &report.hosts {
        if h.agent == AgentState::Unreachable {
            t.row([
                h.name.clone(),
                h.address.clone(),
                h.agent.as_str().to_string(),
                h.agent_detail.clone().unwrap_or_default(),
            ]);
        }
        for c in &h.conflicts {
            t.row([
                h.name.clone(),
                h.address.clone(),
                h.agent.as_str().to_string(),
                format!("port {} ({}) {}: {}", c.port, c.service, c.state.as_str(), c.detail),
            ]);
        }
    }
    if t.is_empty() {
        return Ok(());
    }
    writeln!(w)?;
    heading(w, options, "33", "AGENTS")?;
    t.write_to(w)
}

/// Why a path got its verdict, in words.
fn why(p: &PathReport) -> String {
    match p.verdict {
        Verdict::Violation => format!("must be {}, but {}", p.expect, p.detail),
        _ => p.detail.clone(),
    }
}

/// Groups paths by their first flow's label (or `from -> to` when read back
/// from JSON, which does not carry flows), keeping first-seen order.
fn by_flow<'a>(paths: &[&'a PathReport]) -> Vec<(String, Vec<&'a PathReport>)> {
    let mut groups: Vec<(String, Vec<&PathReport>)> = Vec::new();
    for p in paths {
        let label = p
            .flows
            .first()
            .cloned()
            .unwrap_or_else(|| format!("{} -> {}", p.from, p.to));
        match groups.iter_mut().find(|(l, _)| *l == label) {
            Some((_, g)) => g.push(p),
            None => groups.push((label, vec![p])),
        }
    }
    groups
}
