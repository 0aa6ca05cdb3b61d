//! The `portcall.report/v1` JSON renderer: the stable, machine-readable
//! contract that `diff`, `suggest` and other tools read back.

use std::io::{self, Write};

use super::Report;

/// Writes the report as pretty-printed JSON with a trailing newline.
pub fn write(report: &Report, w: &mut impl Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, report)?;
    writeln!(w)
}

/// Reads a report back, checking its schema. A report file is input, not
/// our own writing: control characters in any of its strings are escaped
/// here (`\u{1b}`), so that no renderer of `diff`, `suggest` or `report`
/// can pass an escape sequence to a terminal.
pub fn read(text: &str) -> Result<Report, ReadError> {
    let mut value: serde_json::Value = serde_json::from_str(text).map_err(ReadError::Json)?;
    escape_strings(&mut value);
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

fn escape_strings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            if let std::borrow::Cow::Owned(e) = crate::plan::escape_controls(s) {
                *s = e;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(escape_strings),
        serde_json::Value::Object(o) => o.values_mut().for_each(escape_strings),
        _ => {}
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_in_a_report_read_back_are_escaped() {
        let text = include_str!("../../../fuzz/corpus/report/small-escapes.json");
        let r = super::read(text).unwrap();
        assert_eq!(r.plan, "esc\\u{1b}]0;t\\u{7}");
        assert_eq!(r.paths[0].detail, "x\\u{1b}[2J");
        let mut out = Vec::new();
        for format in crate::report::ReportFormat::ALL {
            crate::report::render(&r, format, Default::default(), &mut out).unwrap();
        }
        assert!(!out.contains(&0x1b) && !out.contains(&0x07));
    }

    #[test]
    fn bidirectional_overrides_in_a_report_read_back_are_escaped() {
        // U+202E (right-to-left override) made "db-1\u{202E}nepo" render as
        // "db-1open" reversed: treated like any control character.
        let text = include_str!("../../../fuzz/corpus/report/small-escapes.json")
            .replace("x\\u001b[2J", "db-1\\u202Enepo\\u2066x\\u2069");
        let r = super::read(&text).unwrap();
        assert_eq!(r.paths[0].detail, "db-1\\u{202e}nepo\\u{2066}x\\u{2069}");
        let mut out = Vec::new();
        for format in crate::report::ReportFormat::ALL {
            crate::report::render(&r, format, Default::default(), &mut out).unwrap();
        }
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains('\u{202E}') && !out.contains('\u{2066}'));
    }
}
