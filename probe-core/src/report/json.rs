//! The `portcall.report/v1` JSON renderer: the stable, machine-readable
//! contract that `diff`, `suggest` and other tools read back.

use std::io::{self, Write};

use super::Report;

/// Writes the report as pretty-printed JSON with a trailing newline.
pub fn write(report: &Report, w: &mut impl Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, report)?;
    writeln!(w)
}

/// Reads a report back, checking its schema.
pub fn read(text: &str) -> Result<Report, ReadError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(ReadError::Json)?;
    match value.get("schema").and_then(|s| s.as_str()) {
        Some(super::SCHEMA) => {}
        other => {
            return Err(ReadError::Schema {
                found: other.map(str::to_string),
            });
        }
    }
    serde_json::from_value(value).map_err(ReadError::Json)
}

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Not JSON, or not the report's shape.
    #[error("not a portcall report")]
    Json(#[source] serde_json::Error),
    /// Another schema (or none).
    #[error("schema {}: expected {}", found.as_deref().map_or("missing".to_string(), |s| format!("{s:?}")), super::SCHEMA)]
    Schema {
        /// The schema found, if any.
        found: Option<String>,
    },
}
