//! The what-if as Prometheus text exposition (format 0.0.4), for a job
//! that runs `whatif` on every pending change and a textfile collector
//! that exports it: gauges of the paths per kind of change, whether the
//! change may go in, and one series per path the change affects. Unchanged
//! paths have no series, so the cardinality is bounded by what a change
//! does, not by the size of the plan. Every series carries the `plan`
//! label, as the check's textfile does, so two plans never collide.

use std::collections::HashSet;
use std::io::{self, Write};

use super::shared::clean;
use crate::report::prometheus::{escape_label, family};
use crate::twin::diff::{PathChange, WhatIf};

/// A label value: controls made visible, then the exposition's escaping.
fn label(s: &str) -> String {
    escape_label(&clean(s))
}

/// Writes the what-if's metrics.
pub(super) fn write(whatif: &WhatIf, w: &mut impl Write) -> io::Result<()> {
    let plan = label(&whatif.plan);
    let s = &whatif.summary;
    family(
        w,
        "portcall_whatif_paths",
        "Paths of the what-if by what the change does to them (change: breaks, opens, fixes, changed, same, outside-twin).",
        "gauge",
    )?;
    for (c, n) in [
        (PathChange::Breaks, s.breaks),
        (PathChange::Opens, s.opens),
        (PathChange::Fixes, s.fixes),
        (PathChange::Changed, s.changed),
        (PathChange::Same, s.same),
        (PathChange::OutsideTwin, s.outside_twin),
    ] {
        writeln!(
            w,
            "portcall_whatif_paths{{plan=\"{plan}\",change=\"{}\"}} {n}",
            c.as_str()
        )?;
    }
    family(
        w,
        "portcall_whatif_ok",
        "1 when the change breaks no must-be-open path and opens no must-be-blocked one (whatif exits 0), else 0.",
        "gauge",
    )?;
    writeln!(
        w,
        "portcall_whatif_ok{{plan=\"{plan}\"}} {}",
        u8::from(whatif.exit_code() == 0)
    )?;
    write_paths(whatif, &plan, w)?;
    if let Some(f) = &whatif.fidelity {
        family(
            w,
            "portcall_whatif_fidelity_disagreements",
            "Paths where the twin's base differs from the live report (verdict, outcome or deciding rule); 0 is full agreement.",
            "gauge",
        )?;
        writeln!(
            w,
            "portcall_whatif_fidelity_disagreements{{plan=\"{plan}\"}} {}",
            f.len()
        )?;
    }
    Ok(())
}

/// One series per path the change affects.
fn write_paths(whatif: &WhatIf, plan: &str, w: &mut impl Write) -> io::Result<()> {
    family(
        w,
        "portcall_whatif_path_change",
        "1 for each path the change affects, with what it does to it as the change label; unchanged paths have no series.",
        "gauge",
    )?;
    // Two paths of one label set (a hand-edited answer) would make the
    // whole exposition unusable: only the first is exported.
    let mut seen = HashSet::new();
    for p in whatif.paths.iter().filter(|p| p.change != PathChange::Same) {
        let family = p
            .family
            .map_or(String::new(), |f| format!(",family=\"{f}\""));
        let line = format!(
            "portcall_whatif_path_change{{plan=\"{plan}\",from=\"{}\",to=\"{}\",port=\"{}\",protocol=\"{}\"{family},change=\"{}\"}} 1",
            label(&p.from),
            label(&p.to),
            p.port,
            p.protocol.as_str(),
            p.change.as_str()
        );
        if seen.insert((&p.from, &p.to, p.port, p.protocol, p.family)) {
            writeln!(w, "{line}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::twin::render::tests::sample;

    fn text(whatif: &WhatIf) -> String {
        let mut out = Vec::new();
        write(whatif, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn counts_per_change_and_one_series_per_changed_path() {
        expect![[r##"
            # HELP portcall_whatif_paths Paths of the what-if by what the change does to them (change: breaks, opens, fixes, changed, same, outside-twin).
            # TYPE portcall_whatif_paths gauge
            portcall_whatif_paths{plan="sample",change="breaks"} 1
            portcall_whatif_paths{plan="sample",change="opens"} 1
            portcall_whatif_paths{plan="sample",change="fixes"} 1
            portcall_whatif_paths{plan="sample",change="changed"} 1
            portcall_whatif_paths{plan="sample",change="same"} 1
            portcall_whatif_paths{plan="sample",change="outside-twin"} 1
            # HELP portcall_whatif_ok 1 when the change breaks no must-be-open path and opens no must-be-blocked one (whatif exits 0), else 0.
            # TYPE portcall_whatif_ok gauge
            portcall_whatif_ok{plan="sample"} 0
            # HELP portcall_whatif_path_change 1 for each path the change affects, with what it does to it as the change label; unchanged paths have no series.
            # TYPE portcall_whatif_path_change gauge
            portcall_whatif_path_change{plan="sample",from="web|`x`<script>\\u{202e}",to="db",port="3306",protocol="tcp",family="ipv4",change="breaks"} 1
            portcall_whatif_path_change{plan="sample",from="web",to="db",port="22",protocol="tcp",family="ipv6",change="opens"} 1
            portcall_whatif_path_change{plan="sample",from="app",to="db",port="5432",protocol="tcp",family="ipv4",change="fixes"} 1
            portcall_whatif_path_change{plan="sample",from="web",to="cache",port="6379",protocol="tcp",family="ipv4",change="changed"} 1
            portcall_whatif_path_change{plan="sample",from="web",to="ext",port="443",protocol="tls",change="outside-twin"} 1
            # HELP portcall_whatif_fidelity_disagreements Paths where the twin's base differs from the live report (verdict, outcome or deciding rule); 0 is full agreement.
            # TYPE portcall_whatif_fidelity_disagreements gauge
            portcall_whatif_fidelity_disagreements{plan="sample"} 1
        "##]].assert_eq(&text(&sample()));
    }

    #[test]
    fn unchanged_paths_have_no_series_and_repeats_are_exported_once() {
        let mut w = sample();
        let first = w.paths[0].clone();
        w.paths.push(first);
        let text = text(&w);
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("portcall_whatif_path_change{"))
            .collect();
        assert_eq!(series.len(), 5, "{text}");
        assert!(
            text.contains("portcall_whatif_paths{plan=\"sample\",change=\"same\"} 1\n"),
            "the unchanged path is counted: {text}"
        );
        assert!(
            !series.iter().any(|l| l.contains("change=\"same\"")),
            "{text}"
        );
    }
}
