//! One name per report format and one entry point that renders any of them,
//! so `check`, `demo` and anything else that writes a report offer the same
//! `--format` values and cannot drift apart.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use super::Report;
use super::table::TableOptions;

/// An output format of a [`Report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReportFormat {
    /// Grouped terminal tables, violations first.
    #[default]
    Table,
    /// The stable `portcall.report/v1` JSON contract.
    Json,
    /// JUnit XML, one test case per path.
    Junit,
    /// GitHub-flavoured Markdown for pull-request comments.
    Markdown,
    /// One self-contained HTML page with the host × host matrix.
    Html,
    /// Prometheus text exposition for node_exporter's textfile collector.
    Prometheus,
}

impl ReportFormat {
    /// Every format, in the order `--help` lists them.
    pub const ALL: [ReportFormat; 6] = [
        ReportFormat::Table,
        ReportFormat::Json,
        ReportFormat::Junit,
        ReportFormat::Markdown,
        ReportFormat::Html,
        ReportFormat::Prometheus,
    ];

    /// The name used on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReportFormat::Table => "table",
            ReportFormat::Json => "json",
            ReportFormat::Junit => "junit",
            ReportFormat::Markdown => "markdown",
            ReportFormat::Html => "html",
            ReportFormat::Prometheus => "prometheus",
        }
    }

    /// Whether the format is meant for a person at a terminal, where notes
    /// about the run may be mixed into the output; every other format is
    /// read by a program and stays pure.
    pub const fn is_terminal_text(self) -> bool {
        matches!(self, ReportFormat::Table)
    }
}

impl fmt::Display for ReportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is not one of [`ReportFormat::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown report format {name:?}: expected one of table, json, junit, markdown, html, prometheus"
)]
pub struct UnknownFormat {
    /// The name given.
    pub name: String,
}

impl FromStr for ReportFormat {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<ReportFormat, UnknownFormat> {
        ReportFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownFormat {
                name: s.to_string(),
            })
    }
}

/// How a report is rendered, beyond its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenderOptions {
    /// Options of the terminal table (colour only on a TTY: the caller
    /// decides).
    pub table: TableOptions,
}

/// Renders `report` in `format`.
pub fn render(
    report: &Report,
    format: ReportFormat,
    options: RenderOptions,
    w: &mut impl Write,
) -> io::Result<()> {
    match format {
        ReportFormat::Table => super::table::write(report, options.table, w),
        ReportFormat::Json => super::json::write(report, w),
        ReportFormat::Junit => super::junit::write(report, w),
        ReportFormat::Markdown => super::markdown::write(report, w),
        ReportFormat::Html => super::html::write(report, w),
        ReportFormat::Prometheus => super::prometheus::write(report, w),
    }
}

/// `from -> to:port/protocol (service)`: how every renderer names a path.
pub(crate) fn path_label(p: &super::PathReport) -> String {
    format!(
        "{} -> {}:{}/{} ({})",
        p.from,
        p.to,
        p.port,
        p.protocol.as_str(),
        p.service
    )
}

/// Why a path got its verdict, in words: a violation says what was wanted,
/// and a path with a [`super::Blame`] says where it breaks in one sentence
/// (the JSON `detail` keeps the whole evidence).
pub(crate) fn why(p: &super::PathReport) -> String {
    let said = match &p.blame {
        // A UDP path's datagram count is part of the evidence (the detail
        // already says it).
        Some(b) => match super::udp::arrival(p) {
            Some(a) => format!("{}; {a}", b.sentence(&p.to, p.icmp.as_ref())),
            None => b.sentence(&p.to, p.icmp.as_ref()),
        },
        None => p.detail.clone(),
    };
    match p.verdict {
        super::Verdict::Violation => format!("must be {}, but {said}", p.expect),
        _ => said,
    }
}

/// Seconds since the Unix epoch of a report timestamp (`rfc3339`'s
/// `YYYY-MM-DDTHH:MM:SS[.fff]Z`); `None` for anything else, since reports
/// read back from JSON may come from elsewhere.
pub fn unix_seconds(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, frac),
        None => (time, ""),
    };
    let mut t = hms.splitn(3, ':');
    let hour: i64 = t.next()?.parse().ok()?;
    let min: i64 = t.next()?.parse().ok()?;
    let sec: i64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || min > 59
        || sec > 60
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let fraction = if frac.is_empty() {
        0.0
    } else {
        format!("0.{frac}").parse::<f64>().ok()?
    };
    let days = crate::time::days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3600 + min * 60 + sec) as f64 + fraction)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in ReportFormat::ALL {
            assert_eq!(f.as_str().parse::<ReportFormat>(), Ok(f));
        }
        let err = "xml".parse::<ReportFormat>().unwrap_err();
        assert!(err.to_string().contains("\"xml\""), "{err}");
    }

    #[test]
    fn report_timestamps_parse_back_to_the_instant() {
        for ms in [0u64, 951_782_400_123, 1_735_689_600_000, 4_102_444_799_999] {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            let back = unix_seconds(&super::super::rfc3339(t)).unwrap();
            assert!((back - ms as f64 / 1000.0).abs() < 1e-6, "{ms}: {back}");
        }
        assert_eq!(unix_seconds("2025-01-01T00:00:00Z"), Some(1_735_689_600.0));
        for bad in [
            "",
            "2025-01-01",
            "2025-13-01T00:00:00Z",
            "2025-01-01T00:00:00+01:00",
        ] {
            assert_eq!(unix_seconds(bad), None, "{bad}");
        }
    }
}
