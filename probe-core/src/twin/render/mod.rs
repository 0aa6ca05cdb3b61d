//! The what-if's answer in every format portcall renders a report in:
//! the table and `portcall.whatif/v1` JSON (`diff`), Markdown for a
//! firewall pull request's comment, one self-contained HTML page, JUnit
//! XML (a path the change breaks or opens fails) and Prometheus text
//! exposition. One name per format ([`WhatIfFormat`]) and one entry point
//! ([`render`]), so `whatif` offers every format and they cannot drift.
//!
//! The words the formats share (a path's name, each kind of change in
//! words, what the exit status means, the order of the sections) live
//! here; the format files import this file and `diff`, never each other.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use super::diff::{self, PathChange, WhatIf, WhatIfPath};

mod html;
mod junit;
mod markdown;
mod prometheus;

/// An output format of a [`WhatIf`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WhatIfFormat {
    /// The paths that change, then the counts (`diff::write_table`).
    #[default]
    Table,
    /// `portcall.whatif/v1` JSON, every path (`diff::write_json`).
    Json,
    /// GitHub-flavoured Markdown for a pull request's comment.
    Markdown,
    /// One self-contained HTML page, changes first.
    Html,
    /// JUnit XML, one test case per path; breaks and opens fail.
    Junit,
    /// Prometheus text exposition: counts per change, one series per
    /// changed path.
    Prometheus,
}

impl WhatIfFormat {
    /// Every format, in the order `--help` lists them.
    pub const ALL: [WhatIfFormat; 6] = [
        WhatIfFormat::Table,
        WhatIfFormat::Json,
        WhatIfFormat::Markdown,
        WhatIfFormat::Html,
        WhatIfFormat::Junit,
        WhatIfFormat::Prometheus,
    ];

    /// The name used on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            WhatIfFormat::Table => "table",
            WhatIfFormat::Json => "json",
            WhatIfFormat::Markdown => "markdown",
            WhatIfFormat::Html => "html",
            WhatIfFormat::Junit => "junit",
            WhatIfFormat::Prometheus => "prometheus",
        }
    }
}

impl fmt::Display for WhatIfFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is not one of [`WhatIfFormat::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown what-if format {name:?}: expected one of table, json, markdown, html, junit, prometheus"
)]
pub struct UnknownWhatIfFormat {
    /// The name given.
    pub name: String,
}

impl FromStr for WhatIfFormat {
    type Err = UnknownWhatIfFormat;

    fn from_str(s: &str) -> Result<WhatIfFormat, UnknownWhatIfFormat> {
        WhatIfFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownWhatIfFormat {
                name: s.to_string(),
            })
    }
}

/// How a what-if is rendered, beyond its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WhatIfRenderOptions {
    /// List the unchanged paths too (table, Markdown, HTML; JUnit has a
    /// case for every path and Prometheus a series for changed paths
    /// only, either way).
    pub all: bool,
}

/// Renders `whatif` in `format`.
pub fn render(
    whatif: &WhatIf,
    format: WhatIfFormat,
    options: WhatIfRenderOptions,
    w: &mut impl Write,
) -> io::Result<()> {
    match format {
        WhatIfFormat::Table => diff::write_table(w, whatif, options.all),
        WhatIfFormat::Json => diff::write_json(w, whatif),
        WhatIfFormat::Markdown => markdown::write(whatif, options, w),
        WhatIfFormat::Html => html::write(whatif, options, w),
        WhatIfFormat::Junit => junit::write(whatif, w),
        WhatIfFormat::Prometheus => prometheus::write(whatif, w),
    }
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
fn sections(
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
fn path_words(p: &WhatIfPath) -> String {
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
const fn change_words(c: PathChange) -> &'static str {
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
const fn mark(c: PathChange) -> &'static str {
    match c {
        PathChange::Breaks | PathChange::Opens => "✗",
        PathChange::Fixes => "✓",
        PathChange::Changed => "~",
        PathChange::Same => "=",
        PathChange::OutsideTwin => "?",
    }
}

/// The counts in words, as the table's last line says them.
fn counts_words(whatif: &WhatIf) -> String {
    let s = &whatif.summary;
    format!(
        "{} paths: {} breaks, {} opens, {} fixes, {} changed, {} same, {} outside the twin",
        s.paths, s.breaks, s.opens, s.fixes, s.changed, s.same, s.outside_twin
    )
}

/// Why `whatif` exits with its status for this answer.
fn exit_reason(whatif: &WhatIf) -> &'static str {
    if whatif.exit_code() == 0 {
        "the change breaks and opens nothing"
    } else {
        "the change breaks a must-be-open path or opens a must-be-blocked one"
    }
}

/// What the exit status of `whatif` is for this answer, and why.
fn exit_words(whatif: &WhatIf) -> String {
    format!(
        "exit status {}: {}",
        whatif.exit_code(),
        exit_reason(whatif)
    )
}

/// Operator input (host names, file names, rule text) with every control
/// and bidirectional formatting character written as a visible escape
/// (`\u{202e}`), before each format escapes it for its own markup.
fn clean(s: &str) -> Cow<'_, str> {
    crate::plan::escape_controls(s)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::plan::{Expect, Family};
    use crate::port::Protocol;
    use crate::probe::Observed;
    use crate::report::Verdict;
    use crate::report::blame::BlameRule;
    use crate::twin::diff::{ChangeRef, Disagreement, SCHEMA, Side, WhatIfSummary};

    fn side(verdict: Verdict, observed: Observed, rule: Option<BlameRule>) -> Side {
        Side {
            verdict,
            observed: Some(observed),
            rule,
        }
    }

    fn rule(
        host: &str,
        handle: Option<u64>,
        text: Option<&str>,
        policy: Option<&str>,
    ) -> BlameRule {
        BlameRule {
            host: host.into(),
            table: "inet fw".into(),
            chain: "input".into(),
            handle,
            text: text.map(str::to_string),
            policy: policy.map(str::to_string),
        }
    }

    /// The host name and rule text an attacker would choose: a cell
    /// separator, a code span, markup and a right-to-left override.
    pub(crate) const HOSTILE_HOST: &str = "web|`x`<script>\u{202E}";
    pub(crate) const HOSTILE_RULE: &str =
        "ip saddr 198.18.5.0/24 drop comment \"<script>alert(1)</script> | `rm` \u{202E}nepo\"";

    #[allow(clippy::too_many_arguments)]
    fn path(
        from: &str,
        to: &str,
        port: u16,
        family: Option<Family>,
        expect: Expect,
        base: Side,
        candidate: Side,
        change: PathChange,
    ) -> WhatIfPath {
        WhatIfPath {
            from: from.into(),
            to: to.into(),
            address: "198.18.5.20".into(),
            port,
            protocol: if port == 443 {
                Protocol::Tls
            } else {
                Protocol::Tcp
            },
            family,
            expect,
            base,
            candidate,
            change,
        }
    }

    /// One path per kind of change, with hostile names.
    pub(crate) fn sample() -> WhatIf {
        use Verdict::{Ok, Violation};
        let v4 = Some(Family::Ipv4);
        let paths = vec![
            path(
                HOSTILE_HOST,
                "db",
                3306,
                v4,
                Expect::Open,
                side(Ok, Observed::Open, None),
                side(
                    Violation,
                    Observed::Timeout,
                    Some(rule("db", Some(5), Some(HOSTILE_RULE), None)),
                ),
                PathChange::Breaks,
            ),
            path(
                "web",
                "db",
                22,
                Some(Family::Ipv6),
                Expect::Blocked,
                side(
                    Ok,
                    Observed::Timeout,
                    Some(rule("db", None, None, Some("drop"))),
                ),
                side(Violation, Observed::Open, None),
                PathChange::Opens,
            ),
            path(
                "app",
                "db",
                5432,
                v4,
                Expect::Open,
                side(
                    Violation,
                    Observed::Refused,
                    Some(rule("db", Some(7), Some("tcp dport 5432 reject"), None)),
                ),
                side(Ok, Observed::Open, None),
                PathChange::Fixes,
            ),
            path(
                "web",
                "cache",
                6379,
                v4,
                Expect::Blocked,
                side(
                    Ok,
                    Observed::Timeout,
                    Some(rule("cache", None, None, Some("drop"))),
                ),
                side(
                    Ok,
                    Observed::Refused,
                    Some(rule("cache", Some(9), Some("tcp dport 6379 reject"), None)),
                ),
                PathChange::Changed,
            ),
            path(
                "web",
                "app",
                8080,
                v4,
                Expect::Open,
                side(Ok, Observed::Open, None),
                side(Ok, Observed::Open, None),
                PathChange::Same,
            ),
            path(
                "web",
                "ext",
                443,
                None,
                Expect::Open,
                side(Ok, Observed::Open, None),
                side(Ok, Observed::Open, None),
                PathChange::OutsideTwin,
            ),
        ];
        WhatIf {
            schema: SCHEMA.into(),
            plan: "sample".into(),
            state: "state".into(),
            changes: vec![ChangeRef {
                host: "db".into(),
                file: "drop`\u{202E}.nft".into(),
                kind: "nft-commands".into(),
            }],
            summary: WhatIfSummary {
                paths: 6,
                breaks: 1,
                opens: 1,
                fixes: 1,
                changed: 1,
                same: 1,
                outside_twin: 1,
            },
            paths,
            fidelity: Some(vec![Disagreement {
                path: "web -> ext:443/tls".into(),
                live: side(Violation, Observed::Timeout, None),
                twin: side(Ok, Observed::Open, None),
            }]),
        }
    }

    fn out(format: WhatIfFormat, all: bool) -> String {
        let mut w = Vec::new();
        render(&sample(), format, WhatIfRenderOptions { all }, &mut w).unwrap();
        String::from_utf8(w).unwrap()
    }

    #[test]
    fn format_names_round_trip() {
        for f in WhatIfFormat::ALL {
            assert_eq!(f.as_str().parse::<WhatIfFormat>(), Ok(f));
        }
        let err = "xml".parse::<WhatIfFormat>().unwrap_err();
        assert!(err.to_string().contains("\"xml\""), "{err}");
    }

    /// Each format goes to its own writer: the dispatch cannot mix two up.
    #[test]
    fn each_format_is_dispatched_to_its_own_writer() {
        assert!(out(WhatIfFormat::Table, false).starts_with("CHANGE "));
        let json: serde_json::Value =
            serde_json::from_str(&out(WhatIfFormat::Json, false)).unwrap();
        assert_eq!(json["schema"], "portcall.whatif/v1");
        assert!(out(WhatIfFormat::Markdown, false).starts_with("### portcall whatif "));
        assert!(out(WhatIfFormat::Html, false).starts_with("<!DOCTYPE html>"));
        assert!(out(WhatIfFormat::Junit, false).starts_with("<?xml "));
        assert!(out(WhatIfFormat::Prometheus, false).starts_with("# HELP portcall_whatif_"));
    }

    /// No markup or metrics format lets a control or bidirectional
    /// formatting character of a host name, file name or rule text through.
    #[test]
    fn no_rendered_format_carries_a_raw_control_character() {
        let formats = [
            WhatIfFormat::Markdown,
            WhatIfFormat::Html,
            WhatIfFormat::Junit,
            WhatIfFormat::Prometheus,
        ];
        for f in formats {
            for all in [false, true] {
                let text = out(f, all);
                assert!(
                    !text.contains('\u{202E}'),
                    "{f}: a right-to-left override is left in {text}"
                );
            }
        }
    }

    #[test]
    fn unchanged_paths_are_listed_only_with_all() {
        for f in [WhatIfFormat::Markdown, WhatIfFormat::Html] {
            let some = out(f, false);
            let every = out(f, true);
            assert!(!some.contains("Unchanged"), "{f}: {some}");
            assert!(!some.contains("app:8080"), "{f}: {some}");
            assert!(
                every.contains("Unchanged") && every.contains("app:8080"),
                "{f}: {every}"
            );
        }
    }
}
