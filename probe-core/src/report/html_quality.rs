//! The HTML page's loss and latency view (`check --samples N`): a heat map
//! beside the verdict matrix, rows sources and columns targets, each cell
//! the worst figures of the sampled paths of that pair in text, a shade
//! for the eye and every path's figures in its `title`. The page has no
//! scripts, so the two views are CSS-only tabs (two radio inputs and
//! `:checked`), both shown when printed. A report without figures gets
//! none of this, byte for byte: the page stays what it was.

use std::io::{self, Write};

use super::html_grid::write_grid;
use super::markup::escape_xml as h;
use super::quality::Quality;
use super::text::{path_label, quality as figures};
use super::{PathReport, Report};

/// The view's stylesheet, appended to the page's only when it has
/// figures. The shades run light to dark with the loss, so they read in
/// grey as well; the figures themselves are text.
const STYLE: &str = r#"
.views > input.view { position: absolute; opacity: 0; pointer-events: none; }
.view-tabs { display: flex; gap: 4px; margin-bottom: -1px; }
.view-tabs label { cursor: pointer; padding: 6px 14px; border: 1px solid var(--line); border-radius: 8px 8px 0 0; background: #eaeef2; font-weight: 600; }
#view-verdicts:checked ~ .view-tabs label[for="view-verdicts"], #view-heat:checked ~ .view-tabs label[for="view-heat"] { background: #fff; border-bottom-color: #fff; }
.views > input.view:focus-visible ~ .view-tabs { outline: 2px solid #0969da; outline-offset: 2px; }
.views > section.heat, #view-heat:checked ~ section.verdicts { display: none; }
#view-heat:checked ~ section.heat { display: block; }
@media print { .view-tabs { display: none; } .views > section.heat, .views > section.verdicts { display: block; } }
table.matrix td.heat { font: 600 11px/15px ui-monospace, "DejaVu Sans Mono", monospace; white-space: nowrap; }
table.matrix td.heat span { display: block; }
.shade { display: inline-block; padding: 0 6px; border: 1px solid var(--line); border-radius: 4px; font: 600 11px/17px ui-monospace, "DejaVu Sans Mono", monospace; }
td.q0, .shade.q0 { background: #fff; }
td.q1, .shade.q1 { background: #fee5d9; }
td.q2, .shade.q2 { background: #fcae91; }
td.q3, .shade.q3 { background: #fb6a4a; }
td.q4, .shade.q4 { background: #a50f15; color: #fff; }
@media (max-width: 1000px) { table.matrix td.heat { font-size: 10px; line-height: 13px; white-space: normal; } }
"#;

/// Whether any path of `report` carries figures.
fn sampled(report: &Report) -> bool {
    report
        .paths
        .iter()
        .any(|p| matches!(p.quality, Some(Some(_))))
}

/// The view's stylesheet when the report has figures, else nothing.
pub(super) fn style(report: &Report) -> &'static str {
    if sampled(report) { STYLE } else { "" }
}

/// Writes the verdict matrix (`matrix`) as it is when no path carries
/// figures; otherwise both views as tabs, the verdicts first.
pub(super) fn write_views<W: Write>(
    report: &Report,
    w: &mut W,
    matrix: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
) -> io::Result<()> {
    let mut verdicts = Vec::new();
    matrix(&mut verdicts)?;
    if !sampled(report) {
        return w.write_all(&verdicts);
    }
    writeln!(w, r#"<div class="views">"#)?;
    writeln!(
        w,
        r#"<input type="radio" class="view" name="view" id="view-verdicts" checked><input type="radio" class="view" name="view" id="view-heat">"#
    )?;
    writeln!(
        w,
        r#"<div class="view-tabs"><label for="view-verdicts">Verdicts</label><label for="view-heat">Loss and latency</label></div>"#
    )?;
    // The matrix's own section, marked so that the other tab hides it.
    let verdicts = String::from_utf8_lossy(&verdicts).replacen(
        "<section>",
        r#"<section class="verdicts">"#,
        1,
    );
    w.write_all(verdicts.as_bytes())?;
    write_heat(report, w)?;
    writeln!(w, "</div>")
}

/// The worst figures of one cell's sampled paths.
#[derive(Debug, Default, PartialEq)]
struct Worst {
    /// The largest forward loss, in percent.
    forward: Option<f64>,
    /// The largest return loss, in percent.
    back: Option<f64>,
    /// The largest loss both ways, of paths whose target could not count
    /// (no direction known), in percent.
    round_trip: Option<f64>,
    /// Median and 95th percentile round trip of the slowest path (largest
    /// p95), in milliseconds.
    rtt: Option<(f64, f64)>,
    /// Paths sampled whose samples none answered.
    unanswered: usize,
}

fn max(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl Worst {
    fn of<'a>(qs: impl IntoIterator<Item = &'a Quality>) -> Worst {
        let mut out = Worst::default();
        for q in qs {
            out.forward = max(out.forward, q.loss_forward_pct);
            out.back = max(out.back, q.loss_return_pct);
            if q.loss_forward_pct.is_none() || q.loss_return_pct.is_none() {
                out.round_trip = max(out.round_trip, q.loss_round_trip_pct());
            }
            match q.rtt_ms {
                Some(r) if out.rtt.is_none_or(|(_, p95)| r.p95 > p95) => {
                    out.rtt = Some((r.p50, r.p95));
                }
                Some(_) => {}
                None => out.unanswered += 1,
            }
        }
        out
    }

    /// The shade, 0 (nothing lost) to 4 (a fifth or more lost, or a path
    /// none of whose samples was answered).
    fn shade(&self) -> u8 {
        if self.unanswered > 0 {
            return 4;
        }
        let loss = [self.forward, self.back, self.round_trip]
            .into_iter()
            .flatten()
            .fold(0.0, f64::max);
        match loss {
            l if l <= 0.0 => 0,
            l if l < 1.0 => 1,
            l if l < 5.0 => 2,
            l if l < 20.0 => 3,
            _ => 4,
        }
    }

    /// The cell's lines: loss per direction (or both ways), then the round
    /// trip.
    fn lines(&self) -> Vec<String> {
        let pct = |v: Option<f64>| v.map_or_else(|| "?".to_string(), |v| format!("{v:.1}%"));
        let mut out = Vec::new();
        if self.forward.is_some() || self.back.is_some() {
            out.push(format!("↑{} ↓{}", pct(self.forward), pct(self.back)));
        }
        if let Some(l) = self.round_trip {
            out.push(format!("⇅{l:.1}%"));
        }
        match self.rtt {
            Some((p50, p95)) => out.push(format!("{}/{} ms", ms(p50), ms(p95))),
            None => out.push("no answer".to_string()),
        }
        if self.unanswered > 0 && self.rtt.is_some() {
            out.push(format!("{} no answer", self.unanswered));
        }
        out
    }
}

/// A round trip in as many decimals as it needs to be read.
fn ms(v: f64) -> String {
    if v < 1.0 {
        format!("{v:.2}")
    } else if v < 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn write_heat<W: Write>(report: &Report, w: &mut W) -> io::Result<()> {
    writeln!(w, r#"<section class="heat"><h2>Loss and latency</h2>"#)?;
    writeln!(
        w,
        r#"<div class="legend"><span>rows: source, columns: target; each cell the worst of the sampled paths between them: ↑ forward loss, ↓ return loss (⇅ both ways, where the target could not count), then the median/p95 round trip of the slowest path; every path's figures in the cell's tooltip</span><span>shade by the worst loss:</span><span class="shade q0">0%</span><span class="shade q1">&lt; 1%</span><span class="shade q2">&lt; 5%</span><span class="shade q3">&lt; 20%</span><span class="shade q4">≥ 20% or no answer</span><span>· not sampled</span></div>"#
    )?;
    write_grid(report, w, |paths, w| write_cell(paths, w))?;
    writeln!(w, "</section>")
}

fn write_cell(paths: &[&PathReport], w: &mut impl Write) -> io::Result<()> {
    let title = paths
        .iter()
        .map(|p| {
            let fig = figures(p).unwrap_or_else(|| "not sampled".to_string());
            format!("{}: {fig}", path_label(p))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let sampled: Vec<&Quality> = paths
        .iter()
        .filter_map(|p| p.quality.as_ref().and_then(Option::as_ref))
        .collect();
    if sampled.is_empty() {
        return write!(w, r#"<td class="none" title="{}">·</td>"#, h(&title));
    }
    let worst = Worst::of(sampled);
    write!(
        w,
        r#"<td class="heat q{}" title="{}">"#,
        worst.shade(),
        h(&title)
    )?;
    for line in worst.lines() {
        write!(w, "<span>{}</span>", h(&line))?;
    }
    write!(w, "</td>")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::samples::SampleTally;
    use crate::report::table::tests::sample;

    /// `sent` samples, `arrived` counted at the target (or not), `answered`
    /// back, round trips `base` ms and 1 or 2 ms more.
    fn quality(sent: u32, arrived: Option<u32>, answered: u32, base: u64) -> Quality {
        let rtts: Vec<u64> = (0..u64::from(answered))
            .map(|k| base * 1000 + (k % 3) * 1000)
            .collect();
        Quality::of(&SampleTally::of(sent, sent, &rtts), arrived)
    }

    fn page(r: &Report) -> String {
        let mut out = Vec::new();
        super::super::html::write(r, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The sample's web → db cell: one path 5% forward and 2% return lost
    /// at 20–22 ms, one at 0% both ways but slower (40–42 ms), one not
    /// sampled (9999); web → cache counted only at the source.
    fn sampled_report() -> Report {
        let mut r = sample();
        r.paths[0].quality = Some(Some(quality(1000, Some(950), 931, 20)));
        r.paths[1].quality = Some(Some(quality(1000, Some(1000), 1000, 40)));
        r.paths[2].quality = Some(Some(quality(100, None, 97, 1)));
        r.paths[3].quality = Some(None);
        r
    }

    #[test]
    fn the_view_is_there_only_when_a_path_has_figures() {
        let plain = page(&sample());
        for needle in ["Loss and latency", "view-heat", "class=\"views\"", "td.q0"] {
            assert!(!plain.contains(needle), "{needle} without samples");
        }
        // A round that sampled nothing that opened: still no view.
        let mut none = sample();
        none.paths.iter_mut().for_each(|p| p.quality = Some(None));
        assert!(!page(&none).contains("Loss and latency"));

        let text = page(&sampled_report());
        assert!(text.contains(r#"<section class="heat"><h2>Loss and latency</h2>"#));
        assert!(text.contains(r#"id="view-verdicts" checked>"#), "{text}");
        assert!(text.contains(r#"<section class="verdicts"><h2>Matrix</h2>"#));
        assert_eq!(text.matches("<section class=\"verdicts\">").count(), 1);
        assert!(text.contains("#view-heat:checked ~ section.heat { display: block; }"));
        for needle in ["<script", "src=", "href="] {
            assert!(!text.contains(needle), "{needle} in {text}");
        }
    }

    #[test]
    fn cells_show_the_worst_figures_and_every_path_in_the_title() {
        let text = page(&sampled_report());
        let db = text.find(r#"<td class="heat q3""#).expect(&text);
        let cell = &text[db..db + text[db..].find("</td>").unwrap()];
        // Worst forward 5.0%, worst return 2.0%, the slower path's 41/42.
        assert!(
            cell.contains("<span>↑5.0% ↓2.0%</span><span>41/42 ms</span>"),
            "{cell}"
        );
        assert!(cell.contains(
            "web -&gt; db:3306/tcp (svc): loss fwd 5.0% ret 2.0%, rtt p50 21.0 p95 22.0 ms"
        ));
        assert!(cell.contains("web -&gt; db:3306/tcp (svc): loss fwd 0.0% ret 0.0%, rtt p50 41.0"));
        assert!(
            cell.contains("web -&gt; db:9999/tcp (svc): not sampled"),
            "{cell}"
        );
        // The target could not count: the loss both ways, shaded as such.
        assert!(
            text.contains("<span>⇅3.0%</span><span>2.0/3.0 ms</span></td>"),
            "{text}"
        );
        assert!(text.contains(r#"<td class="heat q2" title="web -&gt; cache:6379/tcp"#));
    }

    #[test]
    fn worst_figures_and_shades() {
        let w = Worst::of(&[quality(10, Some(0), 0, 1)]);
        assert_eq!((w.forward, w.back, w.unanswered), (Some(100.0), None, 1));
        assert_eq!(w.lines(), vec!["↑100.0% ↓?", "⇅100.0%", "no answer"]);
        assert_eq!(w.shade(), 4);
        let clean = Worst::of(&[quality(100, Some(100), 100, 0)]);
        assert_eq!(clean.shade(), 0);
        assert_eq!(clean.lines(), vec!["↑0.0% ↓0.0%", "1.0/2.0 ms"]);
        assert_eq!(Worst::of(&[quality(1000, Some(995), 995, 3)]).shade(), 1);
        assert_eq!(
            (ms(0.123), ms(3.24), ms(20.4)),
            ("0.12".into(), "3.2".into(), "20".into())
        );
    }

    #[test]
    fn hostile_host_names_are_escaped_in_the_heat_map() {
        let mut r = sampled_report();
        r.paths[0].to = "<img src=x onerror=alert(1)>".into();
        r.paths[0].from = "\"><b>x</b>".into();
        let text = page(&r);
        assert!(!text.contains("<img"), "{text}");
        assert!(!text.contains("<b>"), "{text}");
        let heat = &text[text.find("<section class=\"heat\">").unwrap()..];
        assert!(heat.contains("<div>&lt;img src=x onerror=alert(1)&gt;</div>"));
        assert!(heat.contains("<th>&quot;&gt;&lt;b&gt;x&lt;/b&gt;</th>"));
        assert!(heat.contains("title=\"&quot;&gt;&lt;b&gt;x&lt;/b&gt; -&gt; &lt;img"));
    }
}
