//! One name per what-if format ([`WhatIfFormat`]) and one entry point
//! that renders any of them ([`render`]), so `whatif` offers every format
//! and the names cannot drift from the writers.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use super::shared::WhatIfRenderOptions;
use super::{html, junit, markdown, prometheus};
use crate::twin::diff::{self, WhatIf};

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
