//! Opening files that are expected to be plain files (PID files, logs, the
//! event log, the config) without ever blocking on or following something
//! else. The open is `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC`, so a
//! FIFO planted where a PID file belongs opens at once instead of waiting for
//! a writer, a symlink is refused rather than followed, and a terminal never
//! becomes our controlling one; `fstat` on the open descriptor then refuses
//! anything that is not a regular file. [`real_dir`] does the same for the
//! directories the monitor writes into (`pids/`, `logs/`, `state/`).

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::libc;

/// What a path turned out to be, in words for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Unknown,
}

impl FileKind {
    pub fn of(file_type: std::fs::FileType) -> FileKind {
        if file_type.is_symlink() {
            FileKind::Symlink
        } else if file_type.is_file() {
            FileKind::Regular
        } else if file_type.is_dir() {
            FileKind::Directory
        } else if file_type.is_fifo() {
            FileKind::Fifo
        } else if file_type.is_socket() {
            FileKind::Socket
        } else if file_type.is_char_device() {
            FileKind::CharDevice
        } else if file_type.is_block_device() {
            FileKind::BlockDevice
        } else {
            FileKind::Unknown
        }
    }

    /// "a FIFO", "a symbolic link", ... for messages.
    pub fn describe(self) -> &'static str {
        match self {
            FileKind::Regular => "a regular file",
            FileKind::Directory => "a directory",
            FileKind::Symlink => "a symbolic link",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Unknown => "a special file",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SafeFileError {
    #[error("{} does not exist", .path.display())]
    Missing { path: PathBuf },
    #[error("{} is {}, not a regular file; it is left alone", .path.display(), .kind.describe())]
    NotRegular { path: PathBuf, kind: FileKind },
    #[error("{} is {}, not a real directory; it is not followed", .path.display(), .kind.describe())]
    NotRealDir { path: PathBuf, kind: FileKind },
    #[error("{} is {size} bytes long, more than the {cap} bytes allowed", .path.display())]
    TooLarge { path: PathBuf, size: u64, cap: u64 },
    #[error("cannot open {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SafeFileError {
    pub fn is_missing(&self) -> bool {
        matches!(self, SafeFileError::Missing { .. })
    }

    /// The error for callers that speak `std::io` (the kind tells a missing
    /// file from a refused one).
    pub fn into_io(self) -> std::io::Error {
        let kind = match &self {
            SafeFileError::Missing { .. } => std::io::ErrorKind::NotFound,
            SafeFileError::Io { source, .. } => source.kind(),
            _ => std::io::ErrorKind::InvalidInput,
        };
        std::io::Error::new(kind, self.to_string())
    }
}

/// The flags every open here uses (std adds `O_CLOEXEC` itself).
const SAFE_FLAGS: libc::c_int = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;

/// Turns an open error into a named one: a symlink (ELOOP under
/// `O_NOFOLLOW`) or a FIFO without a reader (ENXIO) is named as what it is.
fn open_error(path: &Path, source: std::io::Error) -> SafeFileError {
    if source.kind() == std::io::ErrorKind::NotFound {
        return SafeFileError::Missing {
            path: path.to_path_buf(),
        };
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => SafeFileError::NotRegular {
            path: path.to_path_buf(),
            kind: FileKind::of(meta.file_type()),
        },
        _ => SafeFileError::Io {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// Checks through the open descriptor that it is a regular file.
fn regular(path: &Path, file: File) -> Result<File, SafeFileError> {
    regular_with_meta(path, file).map(|(file, _)| file)
}

fn regular_with_meta(path: &Path, file: File) -> Result<(File, Metadata), SafeFileError> {
    let meta = file.metadata().map_err(|source| SafeFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let kind = FileKind::of(meta.file_type());
    if kind != FileKind::Regular {
        return Err(SafeFileError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    Ok((file, meta))
}

/// Opens an existing regular file for reading.
pub fn open_read(path: &Path) -> Result<File, SafeFileError> {
    open_read_with_meta(path).map(|(file, _)| file)
}

/// [`open_read`], with the file's metadata from the check that it is
/// regular (no second `fstat` for its size).
pub fn open_read_with_meta(path: &Path) -> Result<(File, Metadata), SafeFileError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(SAFE_FLAGS)
        .open(path)
        .map_err(|e| open_error(path, e))?;
    regular_with_meta(path, file)
}

/// A real directory (not a symlink to one) held open while a check opens
/// many files in it: each is opened by its name relative to the directory,
/// not by a walk of the whole path (the walks were a tenth of a check's
/// look at 10 000 streams' logs).
pub struct HeldDir {
    fd: std::os::fd::OwnedFd,
}

impl HeldDir {
    pub fn open(dir: &Path) -> Option<HeldDir> {
        use nix::fcntl::{open, OFlag};
        use std::os::fd::FromRawFd;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let raw = open(dir, flags, nix::sys::stat::Mode::empty()).ok()?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        Some(HeldDir {
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) },
        })
    }

    /// The directory's descriptor (for `fstatat` of a name in it).
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// The regular file `name` in this directory opened for reading, as
    /// [`open_read_with_meta`] opens it (a symlink is not followed, a FIFO
    /// does not block).
    pub fn open_read_with_meta(&self, name: &std::ffi::OsStr) -> HeldOpen {
        use nix::fcntl::{openat, OFlag};
        use std::os::fd::{AsRawFd, FromRawFd};
        let flags = OFlag::from_bits_truncate(SAFE_FLAGS) | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        let raw = match openat(
            Some(self.fd.as_raw_fd()),
            name,
            flags,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(raw) => raw,
            Err(nix::errno::Errno::ENOENT) => return HeldOpen::Missing,
            Err(_) => return HeldOpen::Other,
        };
        // SAFETY: `openat` just returned this descriptor and nothing else owns it.
        let file = unsafe { File::from_raw_fd(raw) };
        match file.metadata() {
            Ok(meta) if meta.is_file() => HeldOpen::Regular(file, meta),
            _ => HeldOpen::Other,
        }
    }
}

/// What [`HeldDir::open_read_with_meta`] found.
pub enum HeldOpen {
    Regular(File, Metadata),
    Missing,
    /// Anything else (a symlink, a FIFO, an error): the caller looks at it
    /// by its path, which names it.
    Other,
}

/// Opens a regular file for appending, creating it if missing. A FIFO, a
/// socket or a symlink in its place is refused; so is a parent directory
/// that is a symlink.
pub fn open_append(path: &Path) -> Result<File, SafeFileError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        real_dir(dir)?;
    }
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .custom_flags(SAFE_FLAGS)
        .open(path)
        .map_err(|e| open_error(path, e))?;
    regular(path, file)
}

/// Reads a whole regular file of at most `cap` bytes.
pub fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, SafeFileError> {
    let file = open_read(path)?;
    let io = |source| SafeFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = file.metadata().map_err(io)?.len();
    if size > cap {
        return Err(SafeFileError::TooLarge {
            path: path.to_path_buf(),
            size,
            cap,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(cap + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > cap {
        return Err(SafeFileError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            cap,
        });
    }
    Ok(bytes)
}

/// Checks that `dir` is a directory itself, not a symlink to one (nor a
/// file). A missing directory is `Missing`.
pub fn real_dir(dir: &Path) -> Result<(), SafeFileError> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_dir() => Ok(()),
        Ok(meta) => Err(SafeFileError::NotRealDir {
            path: dir.to_path_buf(),
            kind: FileKind::of(meta.file_type()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SafeFileError::Missing {
            path: dir.to_path_buf(),
        }),
        Err(source) => Err(SafeFileError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// What is at `path`, without following a symlink (`None` when nothing).
pub fn kind_at(path: &Path) -> Option<FileKind> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| FileKind::of(m.file_type()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mw-safe-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mkfifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }

    #[test]
    fn every_kind_of_non_regular_file_is_refused_at_once() {
        let dir = scratch("kinds");
        let regular_file = dir.join("plain");
        std::fs::write(&regular_file, b"42\n").unwrap();
        let fifo = dir.join("fifo");
        mkfifo(&fifo);
        let link = dir.join("link");
        std::os::unix::fs::symlink(&regular_file, &link).unwrap();
        let socket = dir.join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let cases: Vec<(&Path, Option<&str>)> = vec![
            (&regular_file, None),
            (&fifo, Some("FIFO")),
            (&link, Some("symbolic link")),
            (&socket, Some("socket")),
            (Path::new("/dev/null"), Some("character device")),
            (&dir, Some("directory")),
        ];
        for (path, refused) in cases {
            let started = Instant::now();
            let read = read_capped(path, 64);
            let append = open_append(path);
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{path:?} blocked"
            );
            match refused {
                None => {
                    assert_eq!(read.unwrap(), b"42\n");
                    assert!(append.is_ok());
                }
                Some(what) => {
                    let msg = read.unwrap_err().to_string();
                    assert!(msg.contains(what), "{path:?}: {msg}");
                    assert!(msg.contains(&path.display().to_string()), "{msg}");
                    assert!(append.is_err(), "{path:?} opened for append");
                }
            }
        }
        assert_eq!(std::fs::read(&regular_file).unwrap(), b"42\n");
        assert!(read_capped(&dir.join("none"), 64).unwrap_err().is_missing());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn size_cap_and_real_directories() {
        let dir = scratch("cap");
        let big = dir.join("big");
        std::fs::write(&big, vec![b'x'; 100]).unwrap();
        assert!(read_capped(&big, 99)
            .unwrap_err()
            .to_string()
            .contains("100 bytes"));
        assert_eq!(read_capped(&big, 100).unwrap().len(), 100);

        let real = dir.join("real");
        std::fs::create_dir(&real).unwrap();
        let linked = dir.join("linked");
        std::os::unix::fs::symlink(&real, &linked).unwrap();
        assert!(real_dir(&real).is_ok());
        let msg = real_dir(&linked).unwrap_err().to_string();
        assert!(
            msg.contains("symbolic link") && msg.contains("not followed"),
            "{msg}"
        );
        assert!(real_dir(&big).is_err());
        assert!(real_dir(&dir.join("none")).unwrap_err().is_missing());
        // Appending below a symlinked directory never writes through it.
        assert!(open_append(&linked.join("x.log")).is_err());
        assert!(!real.join("x.log").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
