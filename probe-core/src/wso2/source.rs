//! Where a finding comes from: a `file:line` ([`Source`]) and a value read
//! with its place ([`Setting`]). A leaf every reader and the error type
//! build on, so that they never import the module's façade.

use std::fmt;

/// Where a setting is: a file (as the user named its product home) and a
/// line, and a column for errors.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Source {
    /// The file.
    pub file: String,
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1; 0 when only the line matters.
    pub col: usize,
}

impl Source {
    /// The same place without its column, for findings.
    pub(crate) fn line_only(mut self) -> Source {
        self.col = 0;
        self
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.col == 0 {
            write!(f, "{}:{}", self.file, self.line)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.col)
        }
    }
}

/// A value read from a file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    /// The value.
    pub value: T,
    /// Its place.
    pub source: Source,
}
