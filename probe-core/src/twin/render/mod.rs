//! The what-if's answer in every format portcall renders a report in:
//! the table and `portcall.whatif/v1` JSON (`diff`), Markdown for a
//! firewall pull request's comment, one self-contained HTML page, JUnit
//! XML (a path the change breaks or opens fails) and Prometheus text
//! exposition. One name per format ([`WhatIfFormat`]) and one entry point
//! ([`render`]), so `whatif` offers every format and they cannot drift.
//!
//! `format` names the formats and dispatches; `shared` holds what the
//! format files share (the options, a path's name, each change in words,
//! the sections' order). The files import one way: `shared` < the
//! format files < `format`, so no format file imports another.

mod format;
mod html;
mod junit;
mod markdown;
mod prometheus;
mod shared;

pub use format::{UnknownWhatIfFormat, WhatIfFormat, render};
pub use shared::WhatIfRenderOptions;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::plan::{Expect, Family};
    use crate::port::Protocol;
    use crate::probe::Observed;
    use crate::report::Verdict;
    use crate::report::blame::BlameRule;
    use crate::twin::diff::{ChangeRef, Disagreement, SCHEMA, Side, WhatIfSummary};
    use crate::twin::diff::{PathChange, WhatIf, WhatIfPath};

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
