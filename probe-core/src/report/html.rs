//! One self-contained HTML page (inline CSS, no scripts, no external
//! assets) that can be attached to a change ticket or opened offline: a
//! host × host matrix, sources down and targets across, each cell listing
//! the ports of that pair coloured by verdict, then the violations and the
//! unmeasured paths with their reasons, then everything that is fine.

use std::collections::HashMap;
use std::io::{self, Write};

use super::markup::escape_xml as h;
use super::text::{path_label, why};
use super::{PathReport, PortLabels, Report, Verdict};
use crate::plan::Expect;

const STYLE: &str = r#"
:root { --ok: #1a7f37; --ok-bg: #dafbe1; --bad: #cf222e; --bad-bg: #ffebe9;
  --err: #9a6700; --err-bg: #fff8c5; --line: #d0d7de; --muted: #57606a; }
* { box-sizing: border-box; }
svg.graph { width: 100%; max-width: 760px; height: auto; display: block; }
svg.graph .edge { fill: none; stroke-width: 1.4; opacity: .55; }
svg.graph .edge.ok { stroke: var(--ok); }
svg.graph .edge.violation { stroke: var(--bad); stroke-width: 2.4; opacity: 1; }
svg.graph .edge.error { stroke: var(--err); stroke-width: 2.2; opacity: 1; stroke-dasharray: 5 3; }
svg.graph .node circle { fill: #fff; stroke: #57606a; stroke-width: 2; }
svg.graph .node text { font-size: 13px; fill: #1f2328; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
  color: #1f2328; margin: 0; padding: 24px 32px; background: #f6f8fa; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 12px 24px; margin-bottom: 16px; }
h1 { font-size: 22px; margin: 0; }
h1 .plan { font-weight: 400; color: var(--muted); }
h2 { font-size: 16px; margin: 0 0 10px; }
.meta { color: var(--muted); font-size: 12px; }
.pills { display: flex; gap: 8px; }
.pill { border-radius: 999px; padding: 2px 12px; font-weight: 600; border: 1px solid var(--line); background: #fff; }
.note { background: #ddf4ff; border: 1px solid #54aeff; border-radius: 6px; padding: 8px 12px; margin: 0 0 12px; }
.pill.violation { color: var(--bad); background: var(--bad-bg); border-color: var(--bad); }
.pill.error { color: var(--err); background: var(--err-bg); border-color: var(--err); }
.pill.ok { color: var(--ok); background: var(--ok-bg); border-color: var(--ok); }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px; margin-bottom: 16px; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; color: var(--muted); font-size: 12px; margin-bottom: 10px; align-items: center; }
.matrix-wrap { overflow-x: auto; }
table.matrix { border-collapse: collapse; }
table.matrix th, table.matrix td { border: 1px solid var(--line); }
table.matrix thead th { vertical-align: bottom; padding: 6px 4px; font-weight: 600; font-size: 12px; }
table.matrix thead th.col div { writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; margin: 0 auto; }
table.matrix thead th.corner { text-align: left; color: var(--muted); font-weight: 400; }
table.matrix tbody th { text-align: right; padding: 4px 10px; white-space: nowrap; font-size: 12px; }
table.matrix td { min-width: 46px; height: 34px; padding: 3px; vertical-align: middle; text-align: center; }
td.none { background: #fff; }
td.self { background: repeating-linear-gradient(45deg, #f6f8fa, #f6f8fa 4px, #eaeef2 4px, #eaeef2 8px); }
td.ok { background: var(--ok-bg); }
td.violation { background: var(--bad-bg); }
td.error { background: var(--err-bg); }
.port { display: inline-block; margin: 1px; padding: 0 5px; border-radius: 4px; font: 600 11px/17px ui-monospace, "DejaVu Sans Mono", monospace; color: #fff; border: 1px solid transparent; }
.port.ok { background: var(--ok); }
.port.violation { background: var(--bad); }
.port.error { background: var(--err); }
.port.blocked { text-decoration: line-through; text-decoration-thickness: 2px; }
.port.blocked.ok { background: #fff; color: var(--ok); border-color: var(--ok); }
.legend .port { color: #fff; }
.legend .port.blocked.ok { color: var(--ok); }
table.list { border-collapse: collapse; width: 100%; }
table.list th { text-align: left; font-size: 12px; color: var(--muted); font-weight: 600; border-bottom: 1px solid var(--line); padding: 4px 8px; }
table.list td { border-bottom: 1px solid #eaeef2; padding: 5px 8px; vertical-align: top; }
table.list td.mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; white-space: nowrap; }
table.list td.why { width: 55%; }
table.list td.flow { min-width: 10em; max-width: 18em; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; background: #eff2f5; border-radius: 4px; padding: 0 3px; }
.tag { font-weight: 600; }
.tag.violation { color: var(--bad); }
.tag.error { color: var(--err); }
.tag.ok { color: var(--ok); }
details summary { cursor: pointer; font-weight: 600; }
footer { color: var(--muted); font-size: 12px; }
"#;

/// Writes the report as one HTML document.
pub fn write(report: &Report, w: &mut impl Write) -> io::Result<()> {
    let s = &report.summary;
    writeln!(w, "<!DOCTYPE html>")?;
    writeln!(w, r#"<html lang="en"><head><meta charset="utf-8">"#)?;
    writeln!(
        w,
        r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#
    )?;
    writeln!(w, "<title>portcall: {}</title>", h(&report.plan))?;
    writeln!(w, "<style>{STYLE}</style></head><body>")?;
    writeln!(w, "<header>")?;
    writeln!(
        w,
        r#"<h1>portcall <span class="plan">{}</span></h1>"#,
        h(&report.plan)
    )?;
    writeln!(
        w,
        r#"<div class="pills"><span class="pill violation">{} violation{}</span><span class="pill error">{} error{}</span><span class="pill ok">{} ok</span><span class="pill">{} paths</span></div>"#,
        s.violations,
        plural(s.violations),
        s.errors,
        plural(s.errors),
        s.ok,
        s.paths
    )?;
    writeln!(
        w,
        r#"<div class="meta">round {} – {}</div>"#,
        h(&report.started_at),
        h(&report.finished_at)
    )?;
    writeln!(w, "</header>")?;

    for n in &report.notes {
        writeln!(
            w,
            r#"<p class="note"><strong>Note:</strong> {}</p>"#,
            with_code(n)
        )?;
    }

    write_matrix(report, w)?;
    write_graph(report, w)?;
    let labels = PortLabels::new(report);

    let by = |v: Verdict| -> Vec<&PathReport> {
        report.paths.iter().filter(|p| p.verdict == v).collect()
    };
    let violations = by(Verdict::Violation);
    if !violations.is_empty() {
        writeln!(w, "<section><h2>Violations ({})</h2>", violations.len())?;
        write_list(&violations, &labels, w)?;
        writeln!(w, "</section>")?;
    }
    let errors = by(Verdict::Error);
    if !errors.is_empty() {
        writeln!(w, "<section><h2>Not measured ({})</h2>", errors.len())?;
        write_list(&errors, &labels, w)?;
        writeln!(w, "</section>")?;
    }
    write_agents(report, w)?;
    let ok = by(Verdict::Ok);
    if !ok.is_empty() {
        writeln!(
            w,
            "<section><details><summary>{} path{} meeting {} expectation</summary>",
            ok.len(),
            plural(ok.len()),
            if ok.len() == 1 { "its" } else { "their" }
        )?;
        write_list(&ok, &labels, w)?;
        writeln!(w, "</details></section>")?;
    }
    writeln!(
        w,
        "<footer>{} · generated by portcall</footer>",
        h(&report.schema)
    )?;
    writeln!(w, "</body></html>")
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The worst verdict first: a cell takes the colour of its worst port.
fn severity(v: Verdict) -> u8 {
    match v {
        Verdict::Violation => 2,
        Verdict::Error => 1,
        Verdict::Ok => 0,
    }
}

fn write_matrix(report: &Report, w: &mut impl Write) -> io::Result<()> {
    // Hosts in report order, then any path end the host list lacks (a
    // hand-edited report), so that every path has a cell.
    let mut hosts: Vec<&str> = report.hosts.iter().map(|x| x.name.as_str()).collect();
    for p in &report.paths {
        for n in [p.from.as_str(), p.to.as_str()] {
            if !hosts.contains(&n) {
                hosts.push(n);
            }
        }
    }
    let sources: Vec<&str> = hosts
        .iter()
        .copied()
        .filter(|n| report.paths.iter().any(|p| p.from == *n))
        .collect();
    let targets: Vec<&str> = hosts
        .iter()
        .copied()
        .filter(|n| report.paths.iter().any(|p| p.to == *n))
        .collect();
    let mut cells: HashMap<(&str, &str), Vec<&PathReport>> = HashMap::new();
    for p in &report.paths {
        cells
            .entry((p.from.as_str(), p.to.as_str()))
            .or_default()
            .push(p);
    }

    writeln!(w, "<section><h2>Matrix</h2>")?;
    writeln!(
        w,
        r#"<div class="legend"><span>rows: source, columns: target, one chip per port</span><span><span class="port ok">✓8280</span> must be open</span><span><span class="port blocked ok">✓3306</span> must be blocked</span><span>·</span><span><span class="port ok">✓ ok</span> met</span><span><span class="port violation">✗ violation</span> not met</span><span><span class="port error">? error</span> not measured</span><span>must-be-blocked ports are struck through</span></div>"#
    )?;
    writeln!(w, r#"<div class="matrix-wrap"><table class="matrix">"#)?;
    write!(w, r#"<thead><tr><th class="corner">from \ to</th>"#)?;
    for t in &targets {
        write!(w, r#"<th class="col"><div>{}</div></th>"#, h(t))?;
    }
    writeln!(w, "</tr></thead><tbody>")?;
    for f in &sources {
        write!(w, "<tr><th>{}</th>", h(f))?;
        for t in &targets {
            match cells.get(&(*f, *t)) {
                None if f == t => write!(w, r#"<td class="self"></td>"#)?,
                None => write!(w, r#"<td class="none"></td>"#)?,
                Some(ports) => {
                    let worst = ports
                        .iter()
                        .map(|p| p.verdict)
                        .max_by_key(|v| severity(*v))
                        .unwrap_or(Verdict::Ok);
                    let title = ports
                        .iter()
                        .map(|p| {
                            format!(
                                "{}: must be {}, {}",
                                path_label(p),
                                p.expect,
                                p.verdict.as_str()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n");
                    write!(
                        w,
                        r#"<td class="{}" title="{}">"#,
                        worst.as_str(),
                        h(&title)
                    )?;
                    for p in ports {
                        let blocked = if p.expect == Expect::Blocked {
                            " blocked"
                        } else {
                            ""
                        };
                        write!(
                            w,
                            r#"<span class="port {}{blocked}" title="{}">{}{}</span>"#,
                            p.verdict.as_str(),
                            h(&format!(
                                "{}: {}: {}",
                                path_label(p),
                                p.verdict.as_str(),
                                why(p)
                            )),
                            mark(p.verdict),
                            p.port
                        )?;
                    }
                    write!(w, "</td>")?;
                }
            }
        }
        writeln!(w, "</tr>")?;
    }
    writeln!(w, "</tbody></table></div></section>")
}

/// The hosts around a circle and one line per (source, target) pair,
/// coloured by the pair's worst verdict, as inline SVG: the shape of the
/// deployment and where it breaks, at a glance.
fn write_graph(report: &Report, w: &mut impl Write) -> io::Result<()> {
    let mut hosts: Vec<&str> = report.hosts.iter().map(|x| x.name.as_str()).collect();
    for p in &report.paths {
        for n in [p.from.as_str(), p.to.as_str()] {
            if !hosts.contains(&n) {
                hosts.push(n);
            }
        }
    }
    if hosts.len() < 2 {
        return Ok(());
    }
    // (from, to) -> (worst verdict, ports, paths)
    let mut pairs: std::collections::BTreeMap<(&str, &str), (Verdict, Vec<String>)> =
        std::collections::BTreeMap::new();
    for p in &report.paths {
        let e = pairs
            .entry((p.from.as_str(), p.to.as_str()))
            .or_insert((Verdict::Ok, Vec::new()));
        if severity(p.verdict) > severity(e.0) {
            e.0 = p.verdict;
        }
        e.1.push(format!("{}/{} {}", p.port, p.expect, p.verdict.as_str()));
    }
    let n = hosts.len() as f64;
    let (cx, cy, r) = (380.0_f64, 330.0_f64, 250.0_f64);
    let at = |i: usize| {
        let a = std::f64::consts::TAU * i as f64 / n - std::f64::consts::FRAC_PI_2;
        (cx + r * a.cos(), cy + r * a.sin())
    };
    let index = |name: &str| hosts.iter().position(|h| *h == name).unwrap_or(0);
    writeln!(w, "<section><h2>Host graph</h2>")?;
    writeln!(
        w,
        r#"<div class="legend"><span>one line per source → target pair, arrow at the target, coloured by its worst path</span><span><span class="port ok">ok</span></span><span><span class="port violation">violation</span></span><span><span class="port error">error</span></span></div>"#
    )?;
    writeln!(
        w,
        r#"<svg class="graph" viewBox="0 0 760 660" role="img" aria-label="host graph"><defs>"#
    )?;
    for (id, colour) in [
        ("ok", "var(--ok)"),
        ("violation", "var(--bad)"),
        ("error", "var(--err)"),
    ] {
        writeln!(
            w,
            r#"<marker id="arrow-{id}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>"#
        )?;
    }
    writeln!(w, "</defs>")?;
    // Ok lines first, so that the broken ones are drawn on top.
    let mut edges: Vec<_> = pairs.iter().collect();
    edges.sort_by_key(|(_, (v, _))| severity(*v));
    for ((from, to), (verdict, ports)) in edges {
        let (x1, y1) = at(index(from));
        let (x2, y2) = at(index(to));
        // Stop short of the node circles, and bend a little so that a pair
        // of opposite lines does not overlap.
        let (dx, dy) = (x2 - x1, y2 - y1);
        let len = (dx * dx + dy * dy).sqrt().max(1.0);
        let (ux, uy) = (dx / len, dy / len);
        let (sx, sy) = (x1 + ux * 14.0, y1 + uy * 14.0);
        let (ex, ey) = (x2 - ux * 16.0, y2 - uy * 16.0);
        let (mx, my) = ((sx + ex) / 2.0 - uy * 18.0, (sy + ey) / 2.0 + ux * 18.0);
        let class = verdict.as_str();
        writeln!(
            w,
            r#"<path class="edge {class}" d="M{sx:.1},{sy:.1} Q{mx:.1},{my:.1} {ex:.1},{ey:.1}" marker-end="url(#arrow-{class})"><title>{} -&gt; {}: {}</title></path>"#,
            h(from),
            h(to),
            h(&ports.join(", "))
        )?;
    }
    for (i, name) in hosts.iter().enumerate() {
        let (x, y) = at(i);
        let anchor = if x < cx - 1.0 {
            "end"
        } else if x > cx + 1.0 {
            "start"
        } else {
            "middle"
        };
        let (lx, ly) = (x + (x - cx) / r * 20.0, y + (y - cy) / r * 20.0 + 4.0);
        writeln!(
            w,
            r#"<g class="node"><circle cx="{x:.1}" cy="{y:.1}" r="11"/><text x="{lx:.1}" y="{ly:.1}" text-anchor="{anchor}">{}</text></g>"#,
            h(name)
        )?;
    }
    writeln!(w, "</svg></section>")
}

/// The verdict as a mark that reads without colour (printed in black and
/// white, or by a colour-blind reader): ✓ met, ✗ not met, ? not measured.
/// Text with `code` spans (as the notes write commands and keys) as
/// `<code>`, everything escaped; an unpaired backtick stays as it is.
fn with_code(text: &str) -> String {
    let parts: Vec<&str> = text.split('`').collect();
    if parts.len() % 2 == 0 {
        return h(text);
    }
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| match i % 2 {
            0 => h(part),
            _ => format!("<code>{}</code>", h(part)),
        })
        .collect()
}

fn mark(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "✓",
        Verdict::Violation => "✗",
        Verdict::Error => "?",
    }
}

fn write_list(paths: &[&PathReport], labels: &PortLabels, w: &mut impl Write) -> io::Result<()> {
    writeln!(
        w,
        r#"<table class="list"><thead><tr><th>verdict</th><th>flow</th><th>from</th><th>to</th><th>port</th><th>expect</th><th>observed</th><th>why</th></tr></thead><tbody>"#
    )?;
    for p in paths {
        writeln!(
            w,
            r#"<tr><td><span class="tag {}">{} {}</span></td><td class="flow" title="{flow}">{flow}</td><td>{}</td><td>{}</td><td class="mono">{}</td><td>{}</td><td>{}</td><td class="why">{}</td></tr>"#,
            p.verdict.as_str(),
            mark(p.verdict),
            p.verdict.as_str(),
            h(&p.from),
            h(&p.to),
            h(&labels.port(p)),
            p.expect,
            p.observed.map_or("–", |o| o.as_str()),
            h(&why(p)),
            flow = h(&p.flow_label()),
        )?;
    }
    writeln!(w, "</tbody></table>")
}

fn write_agents(report: &Report, w: &mut impl Write) -> io::Result<()> {
    let mut rows = Vec::new();
    for x in &report.hosts {
        if x.agent.is_problem() {
            rows.push((
                x,
                format!(
                    "agent {}{}",
                    x.agent.as_str(),
                    x.agent_detail
                        .as_deref()
                        .map_or(String::new(), |d| format!(": {d}"))
                ),
            ));
        }
        for c in &x.conflicts {
            rows.push((x, c.to_string()));
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(w, "<section><h2>Agents</h2>")?;
    writeln!(
        w,
        r#"<table class="list"><thead><tr><th>host</th><th>address</th><th>agent</th><th>note</th></tr></thead><tbody>"#
    )?;
    for (x, note) in rows {
        writeln!(
            w,
            "<tr><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td></tr>",
            h(&x.name),
            h(&x.address),
            x.agent.as_str(),
            h(&note)
        )?;
    }
    writeln!(w, "</tbody></table></section>")
}

#[cfg(test)]
mod tests {
    #[test]
    fn notes_render_code_spans_and_flows_carry_their_full_text() {
        assert_eq!(
            super::with_code("run `portcall demo --out <f>` & see"),
            "run <code>portcall demo --out &lt;f&gt;</code> &amp; see"
        );
        assert_eq!(super::with_code("a ` b"), "a ` b");
        let mut r = crate::report::table::tests::sample();
        r.notes = vec!["nothing filters loopback: `127.0.0.1`".into()];
        let mut out = Vec::new();
        super::write(&r, &mut out).unwrap();
        let html = String::from_utf8(out).unwrap();
        assert!(
            html.contains("nothing filters loopback: <code>127.0.0.1</code>"),
            "literal backticks in a note"
        );
        assert!(!html.contains('`'), "a backtick is left in the page");
        assert!(
            html.contains(r#"<td class="flow" title="app tier">app tier</td>"#),
            "the flow cell has no full-text title"
        );
        assert!(html.contains("text-overflow: ellipsis"));
    }

    use expect_test::expect;

    use super::*;
    use crate::report::table::tests::sample;

    /// The page without its fixed stylesheet, which would only add noise to
    /// the snapshot.
    fn body(r: &Report) -> String {
        let mut out = Vec::new();
        write(r, &mut out).unwrap();
        String::from_utf8(out).unwrap().replace(STYLE, "…")
    }

    #[test]
    fn matrix_cells_take_their_worst_verdict_and_violations_are_listed() {
        expect![[r#"
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>portcall: sample</title>
            <style>…</style></head><body>
            <header>
            <h1>portcall <span class="plan">sample</span></h1>
            <div class="pills"><span class="pill violation">2 violations</span><span class="pill error">1 error</span><span class="pill ok">1 ok</span><span class="pill">4 paths</span></div>
            <div class="meta">round 2025-01-01T00:00:00.000Z – 2025-01-01T00:00:01.000Z</div>
            </header>
            <section><h2>Matrix</h2>
            <div class="legend"><span>rows: source, columns: target, one chip per port</span><span><span class="port ok">✓8280</span> must be open</span><span><span class="port blocked ok">✓3306</span> must be blocked</span><span>·</span><span><span class="port ok">✓ ok</span> met</span><span><span class="port violation">✗ violation</span> not met</span><span><span class="port error">? error</span> not measured</span><span>must-be-blocked ports are struck through</span></div>
            <div class="matrix-wrap"><table class="matrix">
            <thead><tr><th class="corner">from \ to</th><th class="col"><div>db</div></th><th class="col"><div>cache</div></th></tr></thead><tbody>
            <tr><th>web</th><td class="violation" title="web -&gt; db:3306/tcp (svc): must be open, ok
            web -&gt; db:3306/tcp (svc): must be blocked, violation
            web -&gt; db:9999/tcp (svc): must be open, violation"><span class="port ok" title="web -&gt; db:3306/tcp (svc): ok: connected to the live service (a real service holds the port)">✓3306</span><span class="port violation blocked" title="web -&gt; db:3306/tcp (svc): violation: must be blocked, but db saw our nonce from 127.0.9.1">✗3306</span><span class="port violation" title="web -&gt; db:9999/tcp (svc): violation: must be open, but dropped: no answer within 500 ms (2 attempts) while the canary of db was listening">✗9999</span></td><td class="error" title="web -&gt; cache:6379/tcp (svc): must be open, error"><span class="port error" title="web -&gt; cache:6379/tcp (svc): error: target agent cache unreachable, nothing to measure against: connect refused">?6379</span></td></tr>
            </tbody></table></div></section>
            <section><h2>Host graph</h2>
            <div class="legend"><span>one line per source → target pair, arrow at the target, coloured by its worst path</span><span><span class="port ok">ok</span></span><span><span class="port violation">violation</span></span><span><span class="port error">error</span></span></div>
            <svg class="graph" viewBox="0 0 760 660" role="img" aria-label="host graph"><defs>
            <marker id="arrow-ok" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="var(--ok)"/></marker>
            <marker id="arrow-violation" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="var(--bad)"/></marker>
            <marker id="arrow-error" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="var(--err)"/></marker>
            </defs>
            <path class="edge error" d="M177.5,455.0 Q379.0,473.0 580.5,455.0" marker-end="url(#arrow-error)"><title>web -&gt; cache: 6379/open error</title></path>
            <path class="edge violation" d="M170.5,442.9 Q286.8,277.4 372.0,93.9" marker-end="url(#arrow-violation)"><title>web -&gt; db: 3306/open ok, 3306/blocked violation, 9999/open violation</title></path>
            <g class="node"><circle cx="380.0" cy="80.0" r="11"/><text x="380.0" y="64.0" text-anchor="middle">db</text></g>
            <g class="node"><circle cx="596.5" cy="455.0" r="11"/><text x="613.8" y="469.0" text-anchor="start">cache</text></g>
            <g class="node"><circle cx="163.5" cy="455.0" r="11"/><text x="146.2" y="469.0" text-anchor="end">web</text></g>
            </svg></section>
            <section><h2>Violations (2)</h2>
            <table class="list"><thead><tr><th>verdict</th><th>flow</th><th>from</th><th>to</th><th>port</th><th>expect</th><th>observed</th><th>why</th></tr></thead><tbody>
            <tr><td><span class="tag violation">✗ violation</span></td><td class="flow" title="no db from web">no db from web</td><td>web</td><td>db</td><td class="mono">3306/tcp (svc)</td><td>blocked</td><td>open</td><td class="why">must be blocked, but db saw our nonce from 127.0.9.1</td></tr>
            <tr><td><span class="tag violation">✗ violation</span></td><td class="flow" title="app tier">app tier</td><td>web</td><td>db</td><td class="mono">9999/tcp (svc)</td><td>open</td><td>timeout</td><td class="why">must be open, but dropped: no answer within 500 ms (2 attempts) while the canary of db was listening</td></tr>
            </tbody></table>
            </section>
            <section><h2>Not measured (1)</h2>
            <table class="list"><thead><tr><th>verdict</th><th>flow</th><th>from</th><th>to</th><th>port</th><th>expect</th><th>observed</th><th>why</th></tr></thead><tbody>
            <tr><td><span class="tag error">? error</span></td><td class="flow" title="app tier">app tier</td><td>web</td><td>cache</td><td class="mono">6379/tcp (svc)</td><td>open</td><td>–</td><td class="why">target agent cache unreachable, nothing to measure against: connect refused</td></tr>
            </tbody></table>
            </section>
            <section><h2>Agents</h2>
            <table class="list"><thead><tr><th>host</th><th>address</th><th>agent</th><th>note</th></tr></thead><tbody>
            <tr><td>db</td><td class="mono">127.0.9.2</td><td>up</td><td>port 3306 (mysql) held: a service already listens on 127.0.9.2:3306; probed live</td></tr>
            <tr><td>cache</td><td class="mono">127.0.9.3</td><td>unreachable</td><td>agent unreachable: connect refused</td></tr>
            </tbody></table></section>
            <section><details><summary>1 path meeting its expectation</summary>
            <table class="list"><thead><tr><th>verdict</th><th>flow</th><th>from</th><th>to</th><th>port</th><th>expect</th><th>observed</th><th>why</th></tr></thead><tbody>
            <tr><td><span class="tag ok">✓ ok</span></td><td class="flow" title="app tier">app tier</td><td>web</td><td>db</td><td class="mono">3306/tcp (svc)</td><td>open</td><td>open</td><td class="why">connected to the live service (a real service holds the port)</td></tr>
            </tbody></table>
            </details></section>
            <footer>portcall.report/v1 · generated by portcall</footer>
            </body></html>
        "#]]
        .assert_eq(&body(&sample()));
    }

    #[test]
    fn the_page_is_self_contained() {
        let text = body(&sample());
        for needle in ["src=", "href=", "@import", "<script", "<link"] {
            assert!(!text.contains(needle), "{needle} in {text}");
        }
        // The only url() references are the graph's own arrow markers,
        // fragments of this document.
        for (i, _) in text.match_indices("url(") {
            assert!(text[i..].starts_with("url(#arrow-"), "{}", &text[i..i + 40]);
        }
        assert!(text.contains(r#"marker-end="url(#arrow-violation)""#));
        assert!(!STYLE.contains("url("));
    }

    #[test]
    fn hostile_names_are_escaped() {
        let mut r = sample();
        r.paths[1].to = "<img src=x onerror=alert(1)>".into();
        let text = body(&r);
        assert!(!text.contains("<img"), "{text}");
        assert!(text.contains("&lt;img src=x onerror=alert(1)&gt;"));
    }
}
