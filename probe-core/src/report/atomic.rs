//! Writing `--out` files without harming what is already at the path: a
//! report replaces a regular file whole (temporary file, then rename) while
//! keeping its mode and owner, follows symbolic links to the real file, is
//! written in place into FIFOs and devices, and never replaces a directory.
//! The temporary file has no name until it is complete (`O_TMPFILE`), so a
//! process killed mid-write leaves nothing behind; where the file system
//! cannot do that, our own stale temporaries are removed on the next write.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Mode, OFlags};

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The path (after following symbolic links) is a directory.
    #[error("{} is a directory", .0.display())]
    Directory(PathBuf),
    /// The directory the file would be written into does not exist (or is
    /// not a directory).
    #[error("{}: directory {} does not exist", path.display(), dir.display())]
    NoDirectory {
        /// The path asked for.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
    },
    /// The chain of symbolic links is too long or loops.
    #[error("{}: too many levels of symbolic links", .0.display())]
    SymlinkLoop(PathBuf),
    /// A symbolic link in a sticky, world-writable directory (`/tmp`) is
    /// owned by neither the caller nor the directory's owner: another user
    /// planted it, so it is not followed (the kernel's
    /// `protected_symlinks` rule).
    #[error(
        "{} is a symbolic link owned by uid {owner} in the shared directory {}: not followed (remove it or write elsewhere)",
        link.display(),
        dir.display()
    )]
    ForeignSymlink {
        /// The link.
        link: PathBuf,
        /// The sticky, world-writable directory holding it.
        dir: PathBuf,
        /// The link's owner.
        owner: u32,
    },
    /// The existing file's owner cannot be given to its replacement, and
    /// replacing it would change who owns it.
    #[error(
        "cannot keep the owner (uid {uid}, gid {gid}) of {} (remove it or write elsewhere)",
        path.display()
    )]
    Owner {
        /// The existing file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// Its group.
        gid: u32,
        /// Why `fchown` failed.
        source: io::Error,
    },
    /// Creating, writing, syncing or renaming failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// To which path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl WriteError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WriteError + use<> {
        let path = path.to_path_buf();
        move |source| WriteError::Io {
            action,
            path,
            source,
        }
    }

    /// The underlying I/O error, if any (for exit codes and tests).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            WriteError::Io { source, .. } | WriteError::Owner { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What a path resolves to.
#[derive(Debug)]
enum Target {
    /// Nothing there yet: create it (at the real path, links followed).
    Missing(PathBuf),
    /// A regular file: replace it whole, keeping mode and owner.
    Regular(PathBuf, Metadata),
    /// A FIFO, device, socket or `/proc` magic link: write into it in
    /// place.
    Special(PathBuf),
    /// This process's own standard output or error (`/dev/stdout`,
    /// `/dev/stderr`): written through the descriptor the shell gave us, so
    /// its offset (`>` or `>>`) is respected.
    Own(OwnStream),
}

/// A standard stream of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnStream {
    Stdout,
    Stderr,
}

/// Symbolic links followed before giving up (Linux's own limit).
const MAX_LINKS: usize = 40;

fn resolve(path: &Path) -> Result<Target, WriteError> {
    let mut cur = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        let meta = match std::fs::symlink_metadata(&cur) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Target::Missing(cur)),
            Err(e) => return Err(WriteError::io("inspect", &cur)(e)),
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            // `/proc/self/fd/N` (and `/dev/stdout` pointing there) are magic
            // links to open files, pipes and terminals: what they name is
            // not a path we could rename next to, so write through them.
            if cur == Path::new("/proc/self/fd/1") {
                return Ok(Target::Own(OwnStream::Stdout));
            }
            if cur == Path::new("/proc/self/fd/2") {
                return Ok(Target::Own(OwnStream::Stderr));
            }
            if cur.starts_with("/proc") {
                return Ok(Target::Special(cur));
            }
            check_link_owner(&cur, &meta)?;
            let link = std::fs::read_link(&cur).map_err(WriteError::io("read link", &cur))?;
            cur = if link.is_absolute() {
                link
            } else {
                parent(&cur).join(link)
            };
        } else if ft.is_dir() {
            return Err(WriteError::Directory(cur));
        } else if ft.is_file() {
            return Ok(Target::Regular(cur, meta));
        } else {
            return Ok(Target::Special(cur));
        }
    }
    Err(WriteError::SymlinkLoop(path.to_path_buf()))
}

/// The kernel's `protected_symlinks` rule, applied whatever the sysctl
/// says: in a sticky, world-writable directory a symbolic link is followed
/// only when its owner is the directory's owner or the caller.
fn check_link_owner(link: &Path, meta: &Metadata) -> Result<(), WriteError> {
    let dir = parent(link);
    let dir_meta = std::fs::metadata(dir).map_err(WriteError::io("inspect", dir))?;
    let shared = dir_meta.mode() & 0o1002 == 0o1002;
    let caller = rustix::process::geteuid().as_raw();
    if shared && meta.uid() != dir_meta.uid() && meta.uid() != caller {
        return Err(WriteError::ForeignSymlink {
            link: link.to_path_buf(),
            dir: dir.to_path_buf(),
            owner: meta.uid(),
        });
    }
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` so that no reader ever sees half a report and
/// nothing else at the path is harmed:
///
/// - a symbolic link is followed, and the real file is replaced;
/// - a regular file is replaced whole (a temporary file in the same
///   directory, synced, then renamed over it) and keeps its mode and owner;
/// - a FIFO, device or `/dev/stdout` is written in place, and its write
///   errors (`ENOSPC` on `/dev/full`) are returned;
/// - a directory is refused.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomically_with(path, |w| w.write_all(bytes))
}

/// [`write_atomically`] of what `write` writes, as it writes it (through a
/// buffer), so a large report is never held whole in memory; the same
/// guarantees hold: a reader sees the old file or the whole new one.
pub fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), WriteError> {
    match resolve(path)? {
        Target::Special(p) => {
            let f = OpenOptions::new()
                .append(true)
                .open(&p)
                .map_err(WriteError::io("open", &p))?;
            let mut w = io::BufWriter::with_capacity(64 * 1024, f);
            write(&mut w)
                .and_then(|()| w.flush())
                .map_err(WriteError::io("write", &p))
        }
        // The caller asked for its report on its own standard stream: the
        // one place where writing to it is the library's job.
        Target::Own(OwnStream::Stdout) => {
            let mut out = io::BufWriter::with_capacity(64 * 1024, io::stdout().lock());
            write(&mut out)
                .and_then(|()| out.flush())
                .map_err(WriteError::io("write", path))
        }
        Target::Own(OwnStream::Stderr) => {
            let mut err = io::BufWriter::with_capacity(64 * 1024, io::stderr().lock());
            write(&mut err)
                .and_then(|()| err.flush())
                .map_err(WriteError::io("write", path))
        }
        Target::Missing(p) => replace(&p, write, None),
        Target::Regular(p, meta) => replace(&p, write, Some(&meta)),
    }
}

/// Checks, before any work is done, that a report could be written to
/// `path` by [`write_atomically`]: not a directory, its directory exists,
/// and a file can be created there (a nameless one, which vanishes). A
/// round that would be thrown away at the end is refused at the start.
pub fn check_writable(path: &Path) -> Result<(), WriteError> {
    let p = match resolve(path)? {
        Target::Missing(p) | Target::Regular(p, _) => p,
        // Opening a FIFO would block until its reader comes: written in
        // place at the end, as always.
        Target::Special(_) | Target::Own(_) => return Ok(()),
    };
    let dir = parent(&p);
    if !dir.is_dir() {
        return Err(WriteError::NoDirectory {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        });
    }
    let temp = Temp::create(dir).map_err(WriteError::io("create a file in", dir))?;
    if let Some(named) = &temp.named {
        let _ = std::fs::remove_file(named);
    }
    Ok(())
}

/// The prefix of our temporary files for `name`, so the next write can
/// find (and only find) our own stale ones.
fn temp_prefix(name: &str) -> String {
    format!(".{name}.portcall-")
}

fn replace(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    existing: Option<&Metadata>,
) -> Result<(), WriteError> {
    let dir = parent(path);
    let name = path
        .file_name()
        .map_or_else(|| "report".into(), |n| n.to_string_lossy().into_owned());
    remove_stale_temporaries(dir, &name);
    let temp = Temp::create(dir).map_err(WriteError::io("create a temporary file in", dir))?;
    if let Some(meta) = existing {
        keep_owner_and_mode(&temp.file, path, meta)?;
    }
    let mut w = io::BufWriter::with_capacity(64 * 1024, &temp.file);
    write(&mut w)
        .and_then(|()| w.flush())
        .and_then(|()| temp.file.sync_all())
        .map_err(WriteError::io("write", path))?;
    drop(w);
    let named = dir.join(format!(
        "{}{}-{}.tmp",
        temp_prefix(&name),
        std::process::id(),
        crate::control::random_id(4)
    ));
    temp.link(&named)
        .map_err(WriteError::io("create a temporary file", &named))?;
    std::fs::rename(&named, path).map_err(|e| {
        let _ = std::fs::remove_file(&named);
        WriteError::io("rename over", path)(e)
    })
}

fn keep_owner_and_mode(file: &File, path: &Path, meta: &Metadata) -> Result<(), WriteError> {
    let own = file.metadata().map_err(WriteError::io("inspect", path))?;
    // Owner first: changing it clears set-id bits, which the mode restores.
    if (own.uid(), own.gid()) != (meta.uid(), meta.gid()) {
        std::os::unix::fs::fchown(file, Some(meta.uid()), Some(meta.gid())).map_err(|source| {
            WriteError::Owner {
                path: path.to_path_buf(),
                uid: meta.uid(),
                gid: meta.gid(),
                source,
            }
        })?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(WriteError::io("set the mode of", path))
}

/// Removes `.NAME.portcall-PID-*.tmp` files in `dir` whose process is gone:
/// left by a writer killed between naming its file and renaming it (or on
/// file systems without `O_TMPFILE`). Best effort.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = temp_prefix(name);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|r| r.strip_suffix(".tmp"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A temporary file being written: nameless (`O_TMPFILE`) where the file
/// system allows, so a kill before [`Temp::link`] leaves nothing.
struct Temp {
    file: File,
    /// The name it was created under when `O_TMPFILE` was not available.
    named: Option<PathBuf>,
}

impl Temp {
    fn create(dir: &Path) -> io::Result<Temp> {
        let flags = OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC;
        match rustix::fs::openat(CWD, dir, flags, Mode::from_raw_mode(0o666)) {
            Ok(fd) => Ok(Temp {
                file: File::from(fd),
                named: None,
            }),
            // Not supported by this kernel or file system: fall back to a
            // named file, which `remove_stale_temporaries` covers.
            Err(e)
                if e == rustix::io::Errno::OPNOTSUPP
                    || e == rustix::io::Errno::ISDIR
                    || e == rustix::io::Errno::INVAL =>
            {
                let named = dir.join(format!(
                    ".portcall-{}-{}.tmp",
                    std::process::id(),
                    crate::control::random_id(4)
                ));
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&named)?;
                Ok(Temp {
                    file,
                    named: Some(named),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the complete file the name `to` (to be renamed over the target).
    fn link(self, to: &Path) -> io::Result<()> {
        match &self.named {
            Some(named) => std::fs::rename(named, to).inspect_err(|_| {
                let _ = std::fs::remove_file(named);
            }),
            None => {
                let proc_path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                rustix::fs::linkat(CWD, proc_path.as_str(), CWD, to, AtFlags::SYMLINK_FOLLOW)
                    .map_err(io::Error::from)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::print_stderr)] // skip reasons, as in the lab tests
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_whole_files_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(names(dir.path()), ["r.json"]);
        let err = write_atomically(&dir.path().join("missing/r.json"), b"x");
        assert!(err.is_err());
    }

    #[test]
    fn check_writable_refuses_missing_directories_and_directories_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        check_writable(&dir.path().join("r.json")).unwrap();
        assert!(names(dir.path()).is_empty(), "the check left a file");
        let missing = dir.path().join("missing/r.json");
        let err = check_writable(&missing).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: directory {} does not exist",
                missing.display(),
                dir.path().join("missing").display()
            )
        );
        assert!(matches!(
            check_writable(dir.path()),
            Err(WriteError::Directory(_))
        ));
    }

    #[test]
    fn a_temporary_file_has_no_name_until_it_is_complete() {
        // A kill -9 between create and link must leave nothing behind.
        let dir = tempfile::tempdir().unwrap();
        let temp = Temp::create(dir.path()).unwrap();
        (&temp.file).write_all(b"partial").unwrap();
        assert_eq!(names(dir.path()), Vec::<String>::new());
        assert!(temp.named.is_none(), "O_TMPFILE should work on ext4/tmpfs");
        temp.link(&dir.path().join("done")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("done")).unwrap(), b"partial");
    }

    #[test]
    fn stale_temporaries_of_dead_writers_are_removed_on_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        // pid_max is at most 2^22, so this writer is certainly gone.
        let stale = dir.path().join(".r.json.portcall-4999999-abcd.tmp");
        let foreign = dir.path().join(".r.json.swp");
        let live = dir
            .path()
            .join(format!(".r.json.portcall-{}-ef01.tmp", std::process::id()));
        for f in [&stale, &foreign, &live] {
            std::fs::write(f, b"x").unwrap();
        }
        write_atomically(&dir.path().join("r.json"), b"new").unwrap();
        assert!(!stale.exists());
        assert!(foreign.exists(), "not ours: left alone");
        assert!(live.exists(), "a live writer's file is left alone");
    }

    #[test]
    fn a_symlink_is_followed_and_stays_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        let link = dir.path().join("link.json");
        std::fs::write(&real, b"old").unwrap();
        std::os::unix::fs::symlink("real.json", &link).unwrap();
        write_atomically(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        // A dangling link creates its target.
        let dangling = dir.path().join("dangling.json");
        std::os::unix::fs::symlink("sub/target.json", &dangling).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        write_atomically(&dangling, b"made").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("sub/target.json")).unwrap(),
            b"made"
        );
        // A loop is an error, not a hang.
        let a = dir.path().join("a");
        std::os::unix::fs::symlink("b", &a).unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("b")).unwrap();
        assert!(matches!(
            write_atomically(&a, b"x"),
            Err(WriteError::SymlinkLoop(_))
        ));
    }

    /// Regression: as root, `--out /tmp/x.json` where another user planted
    /// `/tmp/x.json -> /root/secret` replaced the secret.
    #[test]
    fn another_user_s_symlink_in_a_shared_directory_is_not_followed() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to give a symlink to another user");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("tmp");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"secret").unwrap();
        let planted = shared.join("x.json");
        std::os::unix::fs::symlink(&secret, &planted).unwrap();
        std::os::unix::fs::lchown(&planted, Some(65534), Some(65534)).unwrap();
        let err = write_atomically(&planted, b"report").unwrap_err();
        assert!(matches!(err, WriteError::ForeignSymlink { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&planted.display().to_string()), "{msg}");
        assert!(msg.contains("uid 65534"), "{msg}");
        assert_eq!(std::fs::read(&secret).unwrap(), b"secret");
        assert!(std::fs::symlink_metadata(&planted).unwrap().is_symlink());

        // The caller's own link in the same directory is followed as before.
        let own = shared.join("own.json");
        std::os::unix::fs::symlink(&secret, &own).unwrap();
        write_atomically(&own, b"mine").unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), b"mine");

        // Outside a sticky world-writable directory the owner does not matter.
        let private = dir.path().join("link.json");
        std::os::unix::fs::symlink(&secret, &private).unwrap();
        std::os::unix::fs::lchown(&private, Some(65534), Some(65534)).unwrap();
        write_atomically(&private, b"private").unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), b"private");
    }

    #[test]
    fn dev_stdout_is_this_process_s_own_stream() {
        assert!(matches!(
            resolve(Path::new("/dev/stdout")),
            Ok(Target::Own(OwnStream::Stdout))
        ));
        assert!(matches!(
            resolve(Path::new("/proc/self/fd/2")),
            Ok(Target::Own(OwnStream::Stderr))
        ));
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_atomically(dir.path(), b"x").unwrap_err();
        assert!(matches!(err, WriteError::Directory(_)), "{err}");
        assert!(err.to_string().ends_with("is a directory"), "{err}");
        assert!(dir.path().is_dir());
    }

    #[test]
    fn a_fifo_is_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        rustix::fs::mknodat(
            CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(&fifo).unwrap())
        };
        write_atomically(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        let ft = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(ft.is_fifo(), "the FIFO must still be a FIFO");
        assert_eq!(names(dir.path()), ["pipe"]);
    }

    #[test]
    fn a_full_device_reports_enospc_and_stays_a_device() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            eprintln!("skipped: no /dev/full");
            return;
        }
        let err = write_atomically(full, b"report").unwrap_err();
        let io = err.io_error().expect("an I/O error");
        assert_eq!(io.raw_os_error(), Some(libc::ENOSPC), "{err}");
        assert!(
            std::fs::metadata(full)
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }

    #[test]
    fn an_existing_file_keeps_its_mode_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        std::fs::write(&p, b"old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let root = std::fs::metadata(&p).unwrap().uid() == 0;
        // nobody:nogroup where we may give files away; else ourselves.
        let (uid, gid) = if root {
            (65534, 65534)
        } else {
            eprintln!("owner part skipped: needs root to chown to nobody");
            let m = std::fs::metadata(&p).unwrap();
            (m.uid(), m.gid())
        };
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        write_atomically(&p, b"new").unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!((m.uid(), m.gid()), (uid, gid));
        assert_eq!(names(dir.path()), ["r.json"]);
    }
}
