//! Positions in a file's text, computed in one pass: the [`Locator`] every
//! parser asks for the `file:line:col` of a byte offset.

use std::cell::Cell;
use std::path::Path;

use super::error::ScanError;
use super::source::Source;

/// Positions in one file's text: line starts indexed once, and a cursor so
/// that positions asked for in order (as a parser asks) cost the distance
/// from the previous one, never a rescan from the start.
pub(crate) struct Locator<'a> {
    file: String,
    text: &'a str,
    line_starts: Vec<usize>,
    /// (byte offset, line index, column) of the last position asked for.
    cursor: Cell<(usize, usize, usize)>,
}

impl<'a> Locator<'a> {
    pub fn new(file: &Path, text: &'a str) -> Locator<'a> {
        let mut line_starts = vec![0];
        line_starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        Locator {
            file: file.display().to_string(),
            text,
            line_starts,
            cursor: Cell::new((0, 0, 1)),
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// The position of byte `offset`, `file:line:col`.
    pub fn at(&self, offset: usize) -> Source {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let (c_off, c_line, c_col) = self.cursor.get();
        let col = if c_line == line && c_off <= offset {
            c_col + self.text[c_off..offset].chars().count()
        } else {
            1 + self.text[self.line_starts[line]..offset].chars().count()
        };
        self.cursor.set((offset, line, col));
        Source {
            file: self.file.clone(),
            line: line + 1,
            col,
        }
    }

    pub fn malformed(&self, offset: usize, message: impl Into<String>) -> ScanError {
        ScanError::Malformed {
            at: self.at(offset),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_computed_in_order_and_out_of_order() {
        let text = "ab\ncdé\n\nxyz";
        let l = Locator::new(Path::new("f"), text);
        let at = |o| {
            let s = l.at(o);
            (s.line, s.col)
        };
        assert_eq!(at(0), (1, 1));
        assert_eq!(at(4), (2, 2));
        assert_eq!(at(7), (2, 4), "é is one character");
        assert_eq!(at(6), (2, 3), "inside é: its start");
        assert_eq!(at(1), (1, 2), "backwards");
        assert_eq!(at(9), (4, 1));
        assert_eq!(at(99), (4, 4), "clamped to the end");
    }
}
