//! One name per report format and one entry point that renders any of them,
//! so `check`, `demo` and anything else that writes a report offer the same
//! `--format` values and cannot drift apart.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use super::Report;
use super::table::ReportTableOptions;

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
    pub table: ReportTableOptions,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in ReportFormat::ALL {
            assert_eq!(f.as_str().parse::<ReportFormat>(), Ok(f));
        }
        let err = "xml".parse::<ReportFormat>().unwrap_err();
        assert!(err.to_string().contains("\"xml\""), "{err}");
    }
}
