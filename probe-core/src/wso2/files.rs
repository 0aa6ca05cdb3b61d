//! Reading configuration files as untrusted input: only regular files, each
//! up to [`MAX_FILE_BYTES`], opened without blocking, UTF-8 only.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::ScanError;
use super::locator::Locator;

/// The largest configuration file read: WSO2's largest shipped file
/// (`api-manager.xml`, about 50 KB) many times over.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

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
