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
                let n = c.chars().count();
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
                    let pad = widths[i] - c.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            writeln!(w, "{}", line.trim_end())?;
        }
        Ok(())
    }
}
