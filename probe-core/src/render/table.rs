//! A minimal aligned-column table for terminal output.

use std::io::{self, Write};

/// Rows of cells, printed with each column padded to its widest cell.
#[derive(Debug, Default)]
pub struct Table {
    header: Option<Vec<String>>,
    rows: Vec<Vec<String>>,
    indent: usize,
}

impl Table {
    /// A table with a header row.
    pub fn with_header<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Table {
        Table {
            header: Some(header.into_iter().map(Into::into).collect()),
            ..Table::default()
        }
    }

    /// Indents every line by `n` spaces.
    pub fn indent(mut self, n: usize) -> Table {
        self.indent = n;
        self
    }

    /// Appends a row.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Writes the table; the last column is not padded.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let all = self.header.iter().chain(self.rows.iter());
        let mut widths: Vec<usize> = Vec::new();
        for row in all.clone() {
            for (i, c) in row.iter().enumerate() {
                let n = visible_width(c);
                if widths.len() <= i {
                    widths.push(n);
                } else {
                    widths[i] = widths[i].max(n);
                }
            }
        }
        for row in all {
            let mut line = " ".repeat(self.indent);
            for (i, c) in row.iter().enumerate() {
                line.push_str(c);
                if i + 1 < row.len() {
                    let pad = widths[i] - visible_width(c) + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            writeln!(w, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// The width of a cell on a terminal: its characters, without the ANSI
/// colour sequences (`ESC [ ... m`) that take no room.
pub fn visible_width(s: &str) -> usize {
    let mut n = 0;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_take_no_width() {
        assert_eq!(visible_width("\x1b[31mopen\x1b[0m"), 4);
        let mut t = Table::with_header(["A", "B"]);
        t.row(["\x1b[31mopen\x1b[0m", "x"]);
        t.row(["timeout", "y"]);
        let mut out = Vec::new();
        t.write_to(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "\x1b[31mopen\x1b[0m     x");
        assert_eq!(lines[2], "timeout  y");
    }
}
