//! Reads real WSO2 installations — `carbon.xml`, `api-manager.xml`,
//! `axis2.xml`, `master-datasources.xml`, `deployment.toml`,
//! `bin/wso2server.sh` — to find each one's port offset, the host names it
//! answers to, the ports it will open and the endpoints it will dial, with
//! the `file:line` of every setting. Its findings become plans and
//! client/server mismatches; the probe engine never imports this module.
//!
//! XML goes through `quick-xml` and TOML through `toml`, never through
//! regular expressions, so comments and layout cannot fool the reader. The
//! files are untrusted input: only regular files are read, each up to
//! [`MAX_FILE_BYTES`], XML nests at most [`MAX_XML_DEPTH`] deep, and every
//! position is computed in one pass over the text.

mod apim;
mod carbon;
mod datasource;
mod deployment;
mod esb;
mod install;
mod matching;
mod plan_out;
pub mod scan;
mod values;
mod xml;

use std::cell::Cell;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use scan::{
    DialFinding, Difference, Install, Mismatch, Outside, PortFinding, SCHEMA, Scan, ScanFormat,
    render, scan,
};

/// The largest configuration file read: WSO2's largest shipped file
/// (`api-manager.xml`, about 50 KB) many times over.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// The deepest XML nesting accepted (WSO2's files nest about ten deep).
pub const MAX_XML_DEPTH: usize = 256;

/// The most XML elements accepted in one file.
pub const MAX_XML_ELEMENTS: usize = 200_000;

/// Why an installation could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// An argument is not `HOST=PRODUCT_HOME`.
    #[error("`{arg}` is not HOST=PRODUCT_HOME")]
    BadArgument {
        /// The argument as given.
        arg: String,
    },
    /// Two arguments name the same host.
    #[error("host `{host}` is given twice")]
    DuplicateHost {
        /// The host.
        host: String,
    },
    /// The product home holds none of the files portcall reads.
    #[error(
        "{home}: no repository/conf/carbon.xml, api-manager.xml, deployment.toml or axis2/axis2.xml found"
    )]
    NotAnInstallation {
        /// The product home as given.
        home: String,
    },
    /// A file could not be read.
    #[error("read {path}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration file is a FIFO, a device, a socket or a directory.
    #[error("{path}: not a regular file ({kind}); a configuration file must be one")]
    NotRegular {
        /// The file.
        path: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// A configuration file is larger than [`MAX_FILE_BYTES`].
    #[error("{path}: larger than {limit} bytes, too large for a configuration file")]
    TooLarge {
        /// The file.
        path: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// A file is not well-formed XML or TOML, or a value has the wrong type.
    #[error("{at}: {message}")]
    Malformed {
        /// Where, `file:line:col`.
        at: Source,
        /// What is wrong.
        message: String,
    },
    /// The plan given with `--plan` is not valid.
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
}

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

/// A value read from a file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    /// The value.
    pub value: T,
    /// Its place.
    pub source: Source,
}

/// What a file is when it is not a regular file.
fn kind_of(t: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    }
}

/// Reads a configuration file if it exists: `Ok(None)` when it does not.
/// Only a regular file (a symlink is followed) of at most
/// [`MAX_FILE_BYTES`] in UTF-8 is read; the file is opened without
/// blocking, so a FIFO swapped in after the check cannot hang the scan.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, ScanError> {
    use std::os::unix::fs::OpenOptionsExt;
    let shown = || path.display().to_string();
    let io = |source| ScanError::Io {
        path: shown(),
        source,
    };
    let not_regular = |t| {
        kind_of(t).map(|kind| ScanError::NotRegular {
            path: shown(),
            kind,
        })
    };
    match std::fs::metadata(path) {
        Ok(m) => {
            if let Some(e) = not_regular(m.file_type()) {
                return Err(e);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if let Some(e) = not_regular(meta.file_type()) {
        return Err(e);
    }
    let too_large = || ScanError::TooLarge {
        path: shown(),
        limit: MAX_FILE_BYTES,
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    match String::from_utf8(bytes) {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            let good = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(&e.as_bytes()[..good]).into_owned();
            Err(Locator::new(path, &text).malformed(good, "not UTF-8 text"))
        }
    }
}

/// `home/rel`, as the user would write it.
pub(crate) fn join(home: &Path, rel: &str) -> PathBuf {
    home.join(rel)
}

/// The fuzzing entry point: every reader over arbitrary bytes, which must
/// return a value or an error and never panic, hang or overflow the stack.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let f = Path::new("fuzz");
    let vars = values::Vars::default();
    let _ = carbon::read_carbon(f, text, &vars);
    let _ = carbon::read_axis2(f, text, &vars);
    let _ = carbon::read_start_script(f, text);
    let _ = apim::read_api_manager(f, text, &vars);
    let _ = datasource::read_datasources(f, text, &vars);
    let _ = deployment::read_deployment(f, text, &vars);
    let _ = esb::read_event_publisher(f, text);
    let _ = values::endpoints(text, &vars);
    let _ = datasource::jdbc(text);
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
