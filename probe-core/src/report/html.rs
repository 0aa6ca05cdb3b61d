//! One self-contained HTML page (inline CSS, no scripts, no external
//! assets) that can be attached to a change ticket or opened offline: a
//! host × host matrix, sources down and targets across, each cell listing
//! the ports of that pair coloured by verdict, then the hosts grouped by
//! zone with one arc per zone pair and a zone × zone table, then the
//! violations and the unmeasured paths with their reasons, then everything
//! that is fine.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use super::html_grid::write_grid;
use super::markup::escape_xml as h;
use super::text::{path_label, why};
use super::{PathReport, PortLabels, Report, Verdict};
use crate::plan::Expect;

/// The page's stylesheet, which `portcall whatif --format html` shares so
/// both pages look alike.
pub(crate) const STYLE: &str = r#"
:root { --ok: #1a7f37; --ok-bg: #dafbe1; --bad: #cf222e; --bad-bg: #ffebe9;
  --err: #9a6700; --err-bg: #fff8c5; --line: #d0d7de; --muted: #57606a; }
* { box-sizing: border-box; }
.graph-wrap { max-width: 100%; }
svg.graph { max-width: 100%; height: auto; display: block; }
svg.graph .edge, svg.key .edge { fill: none; stroke-width: 1.6; }
svg.graph .edge.ok, svg.key .edge.ok { stroke: var(--ok); opacity: .6; }
svg.graph .edge.violation, svg.key .edge.violation { stroke: var(--bad); stroke-width: 3; stroke-dasharray: 9 4; }
svg.graph .edge.error, svg.key .edge.error { stroke: var(--err); stroke-width: 2.4; stroke-dasharray: 2 3; }
svg.key { width: 40px; height: 10px; vertical-align: middle; }
svg.graph .zone rect { fill: #f6f8fa; stroke: #8c959f; stroke-width: 1.5; }
svg.graph text { font-size: 13px; fill: #1f2328; }
svg.graph .zone-name { font-weight: 700; font-size: 14px; }
svg.graph .within { font-size: 11px; fill: var(--muted); }
svg.graph .host.violation { fill: var(--bad); font-weight: 600; }
svg.graph .host.error { fill: var(--err); font-weight: 600; }
svg.graph .count { font: 700 12px ui-monospace, "DejaVu Sans Mono", monospace; paint-order: stroke; stroke: #fff; stroke-width: 4px; }
svg.graph .count.ok { fill: var(--ok); }
svg.graph .count.violation { fill: var(--bad); }
svg.graph .count.error { fill: var(--err); }
table.zones { margin-top: 12px; }
table.zones thead th { font-size: 12px; padding: 4px 8px; }
table.zones td { font: 600 12px ui-monospace, "DejaVu Sans Mono", monospace; padding: 3px 8px; white-space: nowrap; }
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
table.list td { border-bottom: 1px solid #eaeef2; padding: 5px 8px; vertical-align: top; overflow-wrap: anywhere; }
table.list td.mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; white-space: nowrap; }
table.list td.why { width: 55%; }
table.list td.flow { width: 22%; min-width: 8em; max-width: 0; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; background: #eff2f5; border-radius: 4px; padding: 0 3px; }
.tag { font-weight: 600; }
.tag.violation { color: var(--bad); }
.tag.error { color: var(--err); }
.tag.ok { color: var(--ok); }
details summary { cursor: pointer; font-weight: 600; }
/* An 800 px window: tighter boxes, smaller chips, wrapping ports, so that
   nothing scrolls sideways (agent/tests/html_chromium.rs checks it). */
@media (max-width: 1000px) {
  body { padding: 12px; } section { padding: 12px 10px; }
  table.matrix td { min-width: 0; } table.matrix tbody th { padding: 4px 6px; }
  .port { padding: 0 2px; font-size: 10px; }
  table.list td.why { width: auto; } table.list td.mono { white-space: normal; }
  table.list th, table.list td { padding: 4px; }
}
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
    writeln!(
        w,
        "<style>{STYLE}{}</style></head><body>",
        super::html_quality::style(report)
    )?;
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

    super::html_quality::write_views(report, w, |b| write_matrix(report, b))?;
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

fn write_matrix<W: Write>(report: &Report, w: &mut W) -> io::Result<()> {
    writeln!(w, "<section><h2>Matrix</h2>")?;
    writeln!(
        w,
        r#"<div class="legend"><span>rows: source, columns: target, one chip per port</span><span><span class="port ok">✓8280</span> must be open</span><span><span class="port blocked ok">✓3306</span> must be blocked</span><span>·</span><span><span class="port ok">✓ ok</span> met</span><span><span class="port violation">✗ violation</span> not met</span><span><span class="port error">? error</span> not measured</span><span>must-be-blocked ports are struck through</span></div>"#
    )?;
    write_grid(report, w, |ports, w| {
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
        write!(w, "</td>")
    })?;
    writeln!(w, "</section>")
}

/// Paths of one zone pair counted by verdict.
#[derive(Default, Clone, Copy)]
struct Tally {
    ok: usize,
    violation: usize,
    error: usize,
}

impl Tally {
    fn add(&mut self, v: Verdict) {
        match v {
            Verdict::Ok => self.ok += 1,
            Verdict::Violation => self.violation += 1,
            Verdict::Error => self.error += 1,
        }
    }

    fn worst(&self) -> Verdict {
        if self.violation > 0 {
            Verdict::Violation
        } else if self.error > 0 {
            Verdict::Error
        } else {
            Verdict::Ok
        }
    }

    /// The counts with their marks, worst first, so they read without
    /// colour: `✗2 ?1 ✓5`.
    fn marks(&self) -> String {
        [
            (self.violation, Verdict::Violation),
            (self.error, Verdict::Error),
            (self.ok, Verdict::Ok),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, v)| format!("{}{n}", mark(*v)))
        .collect::<Vec<_>>()
        .join(" ")
    }

    fn words(&self) -> String {
        format!(
            "{} violation{}, {} error{}, {} ok",
            self.violation,
            plural(self.violation),
            self.error,
            plural(self.error),
            self.ok
        )
    }
}

/// The zones in the order their first host appears, each with its hosts;
/// hosts without a zone (and path ends the host list lacks) go to `–`.
/// With a single zone, every host is a zone of its own.
fn zones(report: &Report) -> Vec<(String, Vec<&str>)> {
    let mut out: Vec<(String, Vec<&str>)> = Vec::new();
    let mut add = |zone: String, host| {
        if out.iter().any(|(_, hs)| hs.contains(&host)) {
            return;
        }
        match out.iter_mut().find(|(z, _)| *z == zone) {
            Some((_, hs)) => hs.push(host),
            None => out.push((zone, vec![host])),
        }
    };
    for x in &report.hosts {
        add(
            x.zone.clone().unwrap_or_else(|| "–".into()),
            x.name.as_str(),
        );
    }
    for p in &report.paths {
        add("–".into(), p.from.as_str());
        add("–".into(), p.to.as_str());
    }
    // A plan without zones (or with one): each host is its own column.
    if out.len() == 1 {
        let (_, hosts) = out.remove(0);
        return hosts
            .into_iter()
            .map(|x| (x.to_string(), vec![x]))
            .collect();
    }
    out
}

/// The zones as columns, their hosts stacked in them, and one arc per
/// (source zone, target zone) pair, as inline SVG: arcs to a zone on the
/// right run above the columns, arcs to the left below, each styled by
/// its worst path (solid ok, dashed violation, dotted error) and labelled
/// with its counts; then the same as a zone × zone table. "Which zone
/// cannot reach which" at a glance, in colour or not.
fn write_graph(report: &Report, w: &mut impl Write) -> io::Result<()> {
    let zones = zones(report);
    if zones.iter().map(|(_, hs)| hs.len()).sum::<usize>() < 2 {
        return Ok(());
    }
    let zone_of = |host: &str| zones.iter().position(|(_, hs)| hs.contains(&host));
    let mut pairs: BTreeMap<(usize, usize), Tally> = BTreeMap::new();
    let mut host_worst: HashMap<&str, Verdict> = HashMap::new();
    for p in &report.paths {
        if let (Some(a), Some(b)) = (zone_of(&p.from), zone_of(&p.to)) {
            pairs.entry((a, b)).or_default().add(p.verdict);
        }
        for n in [p.from.as_str(), p.to.as_str()] {
            let e = host_worst.entry(n).or_insert(Verdict::Ok);
            if severity(p.verdict) > severity(*e) {
                *e = p.verdict;
            }
        }
    }
    let longest = zones
        .iter()
        .flat_map(|(z, hs)| {
            hs.iter()
                .map(|x| x.chars().count())
                .chain([z.chars().count()])
        })
        .max()
        .unwrap_or(0);
    let g = Geometry::new(&zones, &pairs, longest);
    writeln!(w, "<section><h2>Host graph</h2>")?;
    writeln!(
        w,
        r#"<div class="legend"><span>zones as columns, hosts stacked in them; one arc per source zone → target zone, arrow at the target, above when the target is to the right, below when to the left; ✗ violations, ? not measured, ✓ ok</span><span><svg class="key" viewBox="0 0 40 10"><line class="edge ok" x1="0" y1="5" x2="40" y2="5"/></svg> all ok</span><span><svg class="key" viewBox="0 0 40 10"><line class="edge violation" x1="0" y1="5" x2="40" y2="5"/></svg> a violation</span><span><svg class="key" viewBox="0 0 40 10"><line class="edge error" x1="0" y1="5" x2="40" y2="5"/></svg> an error, no violation</span></div>"#
    )?;
    writeln!(
        w,
        r#"<div class="graph-wrap"><svg class="graph" width="{}" viewBox="0 0 {} {}" role="img" aria-label="host graph by zone"><defs>"#,
        g.width, g.width, g.height
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
    for (i, (zone, hosts)) in zones.iter().enumerate() {
        g.write_column(w, i, zone, hosts, &host_worst, pairs.get(&(i, i)))?;
    }
    // Ok arcs first, so that the broken ones are drawn on top.
    let mut arcs: Vec<_> = pairs.iter().filter(|((a, b), _)| a != b).collect();
    arcs.sort_by_key(|(_, t)| severity(t.worst()));
    for ((a, b), t) in &arcs {
        g.write_arc(w, (*a, *b), (&zones[*a].0, &zones[*b].0), t)?;
    }
    writeln!(w, "</svg></div>")?;
    write_zone_table(&zones, &pairs, w)?;
    writeln!(w, "</section>")
}

/// Where the columns and arcs of the zone graph go.
struct Geometry {
    col: f64,
    gap: f64,
    top: f64,
    rows: f64,
    width: f64,
    height: f64,
}

const ROW: f64 = 22.0;
const HEAD: f64 = 40.0;
/// How much higher an arc rises per column it spans.
const RISE: f64 = 24.0;

impl Geometry {
    /// Room above the columns for the rightward arcs and below for the
    /// leftward ones, as high as the widest arc each way needs.
    fn new(
        zones: &[(String, Vec<&str>)],
        pairs: &BTreeMap<(usize, usize), Tally>,
        longest: usize,
    ) -> Geometry {
        let n = zones.len() as f64;
        let room = |right: bool| {
            let span = pairs
                .keys()
                .filter(|(a, b)| a != b && (b > a) == right)
                .map(|(a, b)| a.abs_diff(*b))
                .max();
            span.map_or(10.0, |s| RISE * s as f64 + 34.0)
        };
        let col = (longest as f64 * 8.0 + 44.0).max(110.0);
        let gap = 36.0;
        let (top, bottom) = (room(true), room(false));
        let most = zones.iter().map(|(_, hs)| hs.len()).max().unwrap_or(1) as f64;
        let rows = HEAD + most * ROW + 8.0;
        Geometry {
            col,
            gap,
            top,
            rows,
            width: 20.0 + n * col + (n - 1.0) * gap,
            height: top + rows + bottom,
        }
    }

    fn x(&self, i: usize) -> f64 {
        10.0 + i as f64 * (self.col + self.gap)
    }

    fn write_column(
        &self,
        w: &mut impl Write,
        i: usize,
        zone: &str,
        hosts: &[&str],
        worst: &HashMap<&str, Verdict>,
        inside: Option<&Tally>,
    ) -> io::Result<()> {
        let (x, y) = (self.x(i), self.top);
        writeln!(
            w,
            r#"<g class="zone"><rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" rx="6"/><text class="zone-name" x="{:.1}" y="{:.1}">{}</text>"#,
            self.col,
            self.rows,
            x + 10.0,
            y + 18.0,
            h(zone)
        )?;
        let within = inside.map_or(String::new(), |t| format!("within: {}", t.marks()));
        writeln!(
            w,
            r#"<text class="within" x="{:.1}" y="{:.1}">{}</text>"#,
            x + 10.0,
            y + 33.0,
            h(&within)
        )?;
        for (k, host) in hosts.iter().enumerate() {
            let v = worst.get(host).copied().unwrap_or(Verdict::Ok);
            let flag = if v == Verdict::Ok { "" } else { mark(v) };
            writeln!(
                w,
                r#"<text class="host {}" x="{:.1}" y="{:.1}">{}{}{flag}</text>"#,
                v.as_str(),
                x + 10.0,
                y + HEAD + 15.0 + k as f64 * ROW,
                h(host),
                if flag.is_empty() { "" } else { " " }
            )?;
        }
        writeln!(w, "</g>")
    }

    fn write_arc(
        &self,
        w: &mut impl Write,
        (a, b): (usize, usize),
        (from, to): (&str, &str),
        t: &Tally,
    ) -> io::Result<()> {
        let span = a.abs_diff(b) as f64;
        let rise = RISE * span + 10.0;
        // Rightward arcs leave the top of the columns, leftward ones the
        // bottom; the wider an arc, the further from the column's centre its
        // ends, so that arcs nest instead of crossing and their arrowheads
        // do not pile up.
        let (y, up, dir) = if b > a {
            (self.top, -1.0, 1.0)
        } else {
            (self.top + self.rows, 1.0, -1.0)
        };
        let off = self.col * (0.08 * span.min(5.0));
        let sx = self.x(a) + self.col / 2.0 + dir * off;
        let ex = self.x(b) + self.col / 2.0 - dir * off;
        let (mx, my) = ((sx + ex) / 2.0, y + up * 2.0 * rise);
        let class = t.worst().as_str();
        writeln!(
            w,
            r#"<path class="edge {class}" d="M{sx:.1},{y:.1} Q{mx:.1},{my:.1} {ex:.1},{y:.1}" marker-end="url(#arrow-{class})"><title>{} -&gt; {}: {}</title></path>"#,
            h(from),
            h(to),
            t.words()
        )?;
        writeln!(
            w,
            r#"<text class="count {class}" x="{mx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            y + up * rise + if up < 0.0 { -4.0 } else { 14.0 },
            t.marks()
        )
    }
}

/// The zone × zone summary: source zones down, target zones across, each
/// cell the counts of that pair with its worst verdict's class.
fn write_zone_table(
    zones: &[(String, Vec<&str>)],
    pairs: &BTreeMap<(usize, usize), Tally>,
    w: &mut impl Write,
) -> io::Result<()> {
    writeln!(
        w,
        r#"<table class="matrix zones"><thead><tr><th class="corner">from zone \ to zone</th>"#
    )?;
    for (z, _) in zones {
        write!(w, "<th>{}</th>", h(z))?;
    }
    writeln!(w, "</tr></thead><tbody>")?;
    for (a, (z, _)) in zones.iter().enumerate() {
        write!(w, "<tr><th>{}</th>", h(z))?;
        for b in 0..zones.len() {
            match pairs.get(&(a, b)) {
                None => write!(w, r#"<td class="none"></td>"#)?,
                Some(t) => write!(
                    w,
                    r#"<td class="{}" title="{}">{}</td>"#,
                    t.worst().as_str(),
                    t.words(),
                    t.marks()
                )?,
            }
        }
        writeln!(w, "</tr>")?;
    }
    writeln!(w, "</tbody></table>")
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
        let mut r = sample();
        r.hosts[0].zone = Some("data".into());
        r.hosts[1].zone = Some("data".into());
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
            <div class="legend"><span>zones as columns, hosts stacked in them; one arc per source zone → target zone, arrow at the target, above when the target is to the right, below when to the left; ✗ violations, ? not measured, ✓ ok</span><span><svg class="key" viewBox="0 0 40 10"><line class="edge ok" x1="0" y1="5" x2="40" y2="5"/></svg> all ok</span><span><svg class="key" viewBox="0 0 40 10"><line class="edge violation" x1="0" y1="5" x2="40" y2="5"/></svg> a violation</span><span><svg class="key" viewBox="0 0 40 10"><line class="edge error" x1="0" y1="5" x2="40" y2="5"/></svg> an error, no violation</span></div>
            <div class="graph-wrap"><svg class="graph" width="276" viewBox="0 0 276 160" role="img" aria-label="host graph by zone"><defs>
            <marker id="arrow-ok" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="var(--ok)"/></marker>
            <marker id="arrow-violation" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="var(--bad)"/></marker>
            <marker id="arrow-error" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="var(--err)"/></marker>
            </defs>
            <g class="zone"><rect x="10.0" y="10.0" width="110.0" height="92.0" rx="6"/><text class="zone-name" x="20.0" y="28.0">data</text>
            <text class="within" x="20.0" y="43.0"></text>
            <text class="host violation" x="20.0" y="65.0">db ✗</text>
            <text class="host error" x="20.0" y="87.0">cache ?</text>
            </g>
            <g class="zone"><rect x="156.0" y="10.0" width="110.0" height="92.0" rx="6"/><text class="zone-name" x="166.0" y="28.0">–</text>
            <text class="within" x="166.0" y="43.0"></text>
            <text class="host violation" x="166.0" y="65.0">web ✗</text>
            </g>
            <path class="edge violation" d="M202.2,102.0 Q138.0,170.0 73.8,102.0" marker-end="url(#arrow-violation)"><title>– -&gt; data: 2 violations, 1 error, 1 ok</title></path>
            <text class="count violation" x="138.0" y="150.0" text-anchor="middle">✗2 ?1 ✓1</text>
            </svg></div>
            <table class="matrix zones"><thead><tr><th class="corner">from zone \ to zone</th>
            <th>data</th><th>–</th></tr></thead><tbody>
            <tr><th>data</th><td class="none"></td><td class="none"></td></tr>
            <tr><th>–</th><td class="violation" title="2 violations, 1 error, 1 ok">✗2 ?1 ✓1</td><td class="none"></td></tr>
            </tbody></table>
            </section>
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
        .assert_eq(&body(&r));
    }

    #[test]
    fn hosts_are_grouped_by_zone_and_arcs_read_without_colour() {
        let mut r = sample();
        r.hosts[0].zone = Some("data".into());
        r.hosts[1].zone = Some("data".into());
        let text = body(&r);
        // Two columns: `data` (db, cache) and `–` (web, which the host
        // list lacks), in that order.
        let data = text.find(r#"class="zone-name""#).unwrap();
        assert!(
            text[data..].starts_with(r#"class="zone-name" x="20.0" y="28.0">data<"#),
            "{}",
            &text[data..data + 60]
        );
        assert!(text.contains(r#">–</text>"#));
        assert!(text.contains(r#"<text class="host violation" x="20.0" y="65.0">db ✗</text>"#));
        assert!(text.contains(r#"<text class="host error" x="20.0" y="87.0">cache ?</text>"#));
        // One arc, web's zone to data: leftward, so below the columns,
        // dashed as a violation, its counts in marks and in words.
        assert_eq!(text.matches(r#"<path class="edge"#).count(), 1, "{text}");
        assert!(text.contains(r#"<path class="edge violation" d="M"#));
        assert!(text.contains("<title>– -&gt; data: 2 violations, 1 error, 1 ok</title>"));
        assert!(text.contains(r#">✗2 ?1 ✓1</text>"#));
        assert!(text.contains(
            r#"<td class="violation" title="2 violations, 1 error, 1 ok">✗2 ?1 ✓1</td>"#
        ));
        assert!(STYLE.contains("stroke-dasharray: 9 4"));
        // Without zones, each host is a column of its own.
        let plain = body(&sample());
        assert_eq!(plain.matches(r#"<path class="edge"#).count(), 2, "{plain}");
        assert!(plain.contains("<title>web -&gt; db: 2 violations, 0 errors, 1 ok</title>"));
        assert!(plain.contains("<title>web -&gt; cache: 0 violations, 1 error, 0 ok</title>"));
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
        r.hosts[0].zone = Some("<b>dmz</b>".into());
        let text = body(&r);
        assert!(!text.contains("<img"), "{text}");
        assert!(!text.contains("<b>"), "{text}");
        assert!(text.contains(">&lt;b&gt;dmz&lt;/b&gt;</text>"), "{text}");
        assert!(text.contains("<th>&lt;b&gt;dmz&lt;/b&gt;</th>"), "{text}");
        assert!(text.contains("&lt;img src=x onerror=alert(1)&gt;"));
    }
}
