//! What the what-if's format files share: the options, a path's name,
//! each kind of change in words and marks, the counts and the exit status
//! in words, the order of the sections, and the escaping of operator input
//! before each format's own. The format files import this, never each
//! other.

use std::borrow::Cow;

use crate::twin::diff::{PathChange, WhatIf, WhatIfPath};

/// How a what-if is rendered, beyond its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WhatIfRenderOptions {
    /// List the unchanged paths too (table, Markdown, HTML; JUnit has a
    /// case for every path and Prometheus a series for changed paths
    /// only, either way).
    pub all: bool,
}

/// The sections of the human formats, in order, with their titles: what
/// needs attention first, the unchanged paths last (and only with
/// [`WhatIfRenderOptions::all`]).
const SECTIONS: [(PathChange, &str); 6] = [
    (PathChange::Breaks, "Breaks"),
    (PathChange::Opens, "Opens"),
    (PathChange::Fixes, "Fixes"),
    (PathChange::Changed, "Other changes"),
    (PathChange::OutsideTwin, "Outside the twin"),
    (PathChange::Same, "Unchanged"),
];

/// The non-empty sections to list: each kind of change with its title and
/// its paths in the answer's order.
pub(super) fn sections(
    whatif: &WhatIf,
    options: WhatIfRenderOptions,
) -> Vec<(PathChange, &'static str, Vec<&WhatIfPath>)> {
    SECTIONS
        .iter()
        .filter(|(c, _)| options.all || *c != PathChange::Same)
        .map(|&(c, title)| {
            let paths: Vec<&WhatIfPath> = whatif.paths.iter().filter(|p| p.change == c).collect();
            (c, title, paths)
        })
        .filter(|(_, _, paths)| !paths.is_empty())
        .collect()
}

/// `from → to:port/protocol (family)`: how the human formats name a path.
pub(super) fn path_words(p: &WhatIfPath) -> String {
    let fam = p.family.map_or(String::new(), |f| format!(" ({f})"));
    format!(
        "{} → {}:{}/{}{fam}",
        p.from,
        p.to,
        p.port,
        p.protocol.as_str()
    )
}

/// What a kind of change means, in words, so that no format depends on
/// colour to say it.
pub(super) const fn change_words(c: PathChange) -> &'static str {
    match c {
        PathChange::Breaks => "breaks: a must-be-open path is blocked with the change",
        PathChange::Opens => "opens: a must-be-blocked path is open with the change",
        PathChange::Fixes => "fixes: a violation the change repairs",
        PathChange::Changed => "changed: another outcome or deciding rule",
        PathChange::Same => "same: no difference",
        PathChange::OutsideTwin => {
            "outside-twin: the live network decides this path in a device the twin does not hold"
        }
    }
}

/// A mark per kind of change, beside its name wherever colour is used.
pub(super) const fn mark(c: PathChange) -> &'static str {
    match c {
        PathChange::Breaks | PathChange::Opens => "✗",
        PathChange::Fixes => "✓",
        PathChange::Changed => "~",
        PathChange::Same => "=",
        PathChange::OutsideTwin => "?",
    }
}

/// The counts in words, as the table's last line says them.
pub(super) fn counts_words(whatif: &WhatIf) -> String {
    let s = &whatif.summary;
    format!(
        "{} paths: {} breaks, {} opens, {} fixes, {} changed, {} same, {} outside the twin",
        s.paths, s.breaks, s.opens, s.fixes, s.changed, s.same, s.outside_twin
    )
}

/// Why `whatif` exits with its status for this answer.
pub(super) fn exit_reason(whatif: &WhatIf) -> &'static str {
    if whatif.exit_code() == 0 {
        "the change breaks and opens nothing"
    } else {
        "the change breaks a must-be-open path or opens a must-be-blocked one"
    }
}

/// What the exit status of `whatif` is for this answer, and why.
pub(super) fn exit_words(whatif: &WhatIf) -> String {
    format!(
        "exit status {}: {}",
        whatif.exit_code(),
        exit_reason(whatif)
    )
}

/// Operator input (host names, file names, rule text) with every control
/// and bidirectional formatting character written as a visible escape
/// (`\u{202e}`), before each format escapes it for its own markup.
pub(super) fn clean(s: &str) -> Cow<'_, str> {
    crate::plan::escape_controls(s)
}
