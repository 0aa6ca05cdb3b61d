//! The source × target grid both HTML matrices draw (the verdicts and the
//! loss and latency view): hosts in report order, then any path end the
//! host list lacks (a hand-edited report), so that every path has a cell;
//! a row per source, a column per target, the host's own cell hatched and
//! an empty one blank. What a cell holds is the caller's.

use std::collections::HashMap;
use std::io::{self, Write};

use super::markup::escape_xml as h;
use super::{PathReport, Report};

/// Writes the grid's table (in its scrolling wrapper); `cell` writes the
/// `<td>` of each source and target that have paths between them.
pub(super) fn write_grid<W: Write>(
    report: &Report,
    w: &mut W,
    mut cell: impl FnMut(&[&PathReport], &mut W) -> io::Result<()>,
) -> io::Result<()> {
    let (sources, targets) = ends(report);
    let mut cells: HashMap<(&str, &str), Vec<&PathReport>> = HashMap::new();
    for p in &report.paths {
        cells
            .entry((p.from.as_str(), p.to.as_str()))
            .or_default()
            .push(p);
    }
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
                Some(paths) => cell(paths, w)?,
            }
        }
        writeln!(w, "</tr>")?;
    }
    write!(w, "</tbody></table></div>")
}

/// Sources and targets in report order, then any path end the host list
/// lacks.
fn ends(report: &Report) -> (Vec<&str>, Vec<&str>) {
    let mut hosts: Vec<&str> = report.hosts.iter().map(|x| x.name.as_str()).collect();
    for p in &report.paths {
        for n in [p.from.as_str(), p.to.as_str()] {
            if !hosts.contains(&n) {
                hosts.push(n);
            }
        }
    }
    let pick = |end: fn(&PathReport) -> &str| -> Vec<&str> {
        hosts
            .iter()
            .copied()
            .filter(|n| report.paths.iter().any(|p| end(p) == *n))
            .collect()
    };
    (pick(|p| p.from.as_str()), pick(|p| p.to.as_str()))
}
