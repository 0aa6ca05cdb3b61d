//! Renderers: every output portcall produces is written to an `impl Write`
//! here, never printed, so the binary decides where it goes.

pub mod plan;
mod table;

pub use table::{Table, visible_width};

/// Whether terminal output may carry colour: only on a terminal, and never
/// when `NO_COLOR` is set to anything but the empty string (no-color.org).
/// The binary passes the stream's terminal-ness and the variable.
pub fn colour_allowed(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// `1 violation`, `2 violations`, `0 errors`: a count with its noun, which
/// takes an `s` unless the count is one.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_set_and_not_empty_turns_colour_off() {
        assert!(colour_allowed(true, None));
        assert!(!colour_allowed(false, None));
        assert!(!colour_allowed(true, Some("1".as_ref())));
        assert!(!colour_allowed(true, Some("0".as_ref())));
        assert!(colour_allowed(true, Some("".as_ref())));
    }

    #[test]
    fn counts_take_their_plural_unless_one() {
        assert_eq!(count(1, "violation"), "1 violation");
        assert_eq!(count(2, "violation"), "2 violations");
        assert_eq!(count(0, "error"), "0 errors");
    }
}

/// Output formats for plans and the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlanFormat {
    /// Aligned columns for a terminal.
    #[default]
    Table,
    /// Machine-readable JSON with a `schema` key.
    Json,
}
