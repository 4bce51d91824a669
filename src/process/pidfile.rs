//! PID files: read defensively (size-bounded, every malformed form named) and
//! removed only if they still hold what was judged stale.

use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

use super::safe_file::{self, FileKind, HeldDir, HeldOpen, SafeFileError};

/// The largest PID file we read; anything longer is not a PID.
const MAX_PID_FILE_BYTES: u64 = 64;

/// What a PID file holds. Every stream's observation holds one (48 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidFile {
    /// No PID file: the stream is not running.
    Missing,
    /// A file that names no usable PID (boxed: rare).
    Invalid(Box<InvalidPidFile>),
    /// A well-formed PID.
    Pid { pid: i32, fingerprint: Fingerprint },
}

/// A PID file that names no usable PID, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPidFile {
    pub reason: String,
    pub fingerprint: Fingerprint,
}

impl PidFile {
    pub fn invalid(reason: String, fingerprint: Fingerprint) -> PidFile {
        PidFile::Invalid(Box::new(InvalidPidFile {
            reason,
            fingerprint,
        }))
    }

    /// The file's fingerprint, when there is a file.
    pub fn fingerprint(&self) -> Option<&Fingerprint> {
        match self {
            PidFile::Missing => None,
            PidFile::Invalid(bad) => Some(&bad.fingerprint),
            PidFile::Pid { fingerprint, .. } => Some(fingerprint),
        }
    }
}

/// Enough of a file's identity to tell whether it was rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// At most 64 bytes (a longer file is no PID file).
    pub content: Box<str>,
    pub mtime: SystemTime,
    pub inode: u64,
}

/// Parses PID text. Only plain decimal numbers in 2..=pid_max are PIDs:
/// 0 and 1 are never a worker, and signalling them would be disastrous.
pub fn parse_pid(text: &str, pid_max: u64) -> Result<i32, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("the file is empty".into());
    }
    if let Some(rest) = trimmed.strip_prefix('-') {
        if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{trimmed} is negative"));
        }
    }
    if !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{:?} is not a number", shorten(trimmed)));
    }
    let value: u64 = match trimmed.parse() {
        Ok(v) => v,
        Err(_) => {
            return Err(format!(
                "{} is far beyond the largest PID ({pid_max})",
                shorten(trimmed)
            ))
        }
    };
    match value {
        0 | 1 => Err(format!("{value} is not a worker PID")),
        v if v > pid_max => Err(format!("{v} is beyond the largest PID ({pid_max})")),
        v => Ok(v as i32),
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 24 {
        format!("{}...", s.chars().take(24).collect::<String>())
    } else {
        s.to_string()
    }
}

/// The streams with a file `<stream>.pid` in `dir` (one directory listing,
/// in its order); `None` when the directory is no plain directory or cannot
/// be listed (then each file is tried, and [`read`] says what is wrong).
pub fn present(dir: &Path) -> Option<Vec<String>> {
    match safe_file::real_dir(dir) {
        Ok(()) => {}
        Err(e) if e.is_missing() => return Some(Vec::new()),
        Err(_) => return None,
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(Vec::new()),
        Err(_) => return None,
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.ok()?;
        if let Some(stem) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(".pid"))
        {
            names.push(stem.to_string());
        }
    }
    Some(names)
}

/// The `pids/` directory held open while a check reads every stream's PID
/// file: each file is opened relative to it (no walk of the whole path per
/// file), without following a symlink and without blocking, and read with
/// one `fstat` and one `read`. Anything unusual (a symlink, a FIFO, an I/O
/// error) is handed to [`read`], which names it.
pub struct PidDir {
    dir: std::path::PathBuf,
    held: HeldDir,
}

impl PidDir {
    /// Opens `dir` if it is a real directory (not a symlink to one).
    pub fn open(dir: &Path) -> Option<PidDir> {
        Some(PidDir {
            dir: dir.to_path_buf(),
            held: HeldDir::open(dir)?,
        })
    }

    /// Reads `<stream>.pid` in this directory, as [`read`] would.
    pub fn read(&self, stream: &str, pid_max: u64) -> PidFile {
        self.read_stamped(stream, pid_max).0
    }

    /// The stamp of `<stream>.pid` in this directory when it is a regular
    /// file (one `fstatat`, not following a symlink).
    pub fn stamp(&self, stream: &str) -> Option<Stamp> {
        use nix::fcntl::AtFlags;
        use std::os::fd::AsRawFd;
        let name = format!("{stream}.pid");
        let st = nix::sys::stat::fstatat(
            Some(self.held.as_fd().as_raw_fd()),
            name.as_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok()?;
        let regular = st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG;
        regular.then_some(Stamp {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            modified: (st.st_mtime, st.st_mtime_nsec),
            changed: (st.st_ctime, st.st_ctime_nsec),
        })
    }

    /// Reads `<stream>.pid` as [`PidDir::read`] does, with the stamp of the
    /// regular file read (`None` for anything else).
    pub fn read_stamped(&self, stream: &str, pid_max: u64) -> (PidFile, Option<Stamp>) {
        let name = format!("{stream}.pid");
        let slow = || read(&self.dir.join(&name), pid_max);
        let (mut file, meta) = match self.held.open_read_with_meta(name.as_ref()) {
            HeldOpen::Regular(file, meta) if meta.len() <= MAX_PID_FILE_BYTES => (file, meta),
            HeldOpen::Missing => return (PidFile::Missing, None),
            _ => return (slow(), None),
        };
        let mut buf = [0u8; MAX_PID_FILE_BYTES as usize + 1];
        let mut len = 0;
        loop {
            match file.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => {
                    len += n;
                    if len == buf.len() {
                        return (slow(), None);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return (slow(), None),
            }
        }
        let fingerprint = Fingerprint {
            content: String::from_utf8_lossy(&buf[..len]).into(),
            mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            inode: inode_of(&meta),
        };
        (judged(fingerprint, pid_max), Some(Stamp::of(&meta)))
    }
}

/// One state of a regular file as `fstat` shows it: any write, truncation,
/// replacement or rename changes it, since the change time cannot be set
/// back (unlike the modification time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the file had been left alone for a while when it was read
    /// at `read_at`: file times come from a coarse clock, so a second write
    /// just after a read could leave the same stamp; one after a quiet
    /// spell cannot.
    pub fn settled_before(&self, read_at: SystemTime) -> bool {
        let (secs, nanos) = self.changed;
        let changed = SystemTime::UNIX_EPOCH
            + std::time::Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32);
        changed + std::time::Duration::from_millis(100) < read_at
    }
}

/// A PID file's content judged: a usable PID or why not.
fn judged(fingerprint: Fingerprint, pid_max: u64) -> PidFile {
    match parse_pid(&fingerprint.content, pid_max) {
        Ok(pid) => PidFile::Pid { pid, fingerprint },
        Err(reason) => PidFile::invalid(reason, fingerprint),
    }
}

/// Reads a PID file. I/O errors other than absence count as invalid content
/// so that one unreadable file never stops the check of other streams. The
/// file is opened without following a symlink and without blocking: a FIFO,
/// socket, device or symlink in its place, or a `pids/` directory that is a
/// symlink, is invalid and named as what it is.
pub fn read(path: &Path, pid_max: u64) -> PidFile {
    let unreadable = |reason: String, inode: u64| {
        let fingerprint = Fingerprint {
            content: "".into(),
            mtime: SystemTime::UNIX_EPOCH,
            inode,
        };
        PidFile::invalid(reason, fingerprint)
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        match safe_file::real_dir(dir) {
            Ok(()) => {}
            Err(e) if e.is_missing() => return PidFile::Missing,
            Err(e) => return unreadable(e.to_string(), 0),
        }
    }
    let file = match safe_file::open_read(path) {
        Ok(f) => f,
        Err(e) if e.is_missing() => return PidFile::Missing,
        Err(e @ SafeFileError::NotRegular { .. }) => {
            let inode = std::fs::symlink_metadata(path)
                .map(|m| inode_of(&m))
                .unwrap_or(0);
            return unreadable(e.to_string(), inode);
        }
        Err(e) => return unreadable(format!("cannot read it: {e}"), 0),
    };
    let meta = file.metadata().ok();
    let mtime = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let inode = meta.as_ref().map(inode_of).unwrap_or(0);
    let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::new();
    let read = file.take(MAX_PID_FILE_BYTES + 1).read_to_end(&mut bytes);
    let fingerprint = Fingerprint {
        content: String::from_utf8_lossy(&bytes).into(),
        mtime,
        inode,
    };
    if let Err(e) = read {
        return PidFile::invalid(format!("cannot read it: {e}"), fingerprint);
    }
    if size > MAX_PID_FILE_BYTES || bytes.len() as u64 > MAX_PID_FILE_BYTES {
        let reason = format!("it is {size} bytes long, not a PID");
        return PidFile::invalid(reason, fingerprint);
    }
    judged(fingerprint, pid_max)
}

#[cfg(unix)]
fn inode_of(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}

#[cfg(not(unix))]
fn inode_of(_meta: &std::fs::Metadata) -> u64 {
    0
}

/// Removes the PID file only if it is still the file that was judged: a
/// worker started meanwhile by another monitor rewrites it, and its fresh
/// file must survive. Only a regular file in a real `pids/` directory is
/// ever removed: a FIFO, socket, device or symlink in its place (or a
/// symlinked directory) is left alone and reported as an error.
pub fn remove_if_unchanged(
    path: &Path,
    judged: &Fingerprint,
    pid_max: u64,
) -> std::io::Result<bool> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        match safe_file::real_dir(dir) {
            Ok(()) => {}
            Err(e) if e.is_missing() => return Ok(false),
            Err(e) => return Err(e.into_io()),
        }
    }
    match safe_file::kind_at(path) {
        None => return Ok(false),
        Some(FileKind::Regular) => {}
        Some(kind) => {
            return Err(SafeFileError::NotRegular {
                path: path.to_path_buf(),
                kind,
            }
            .into_io())
        }
    }
    let now = read(path, pid_max);
    let same = match now.fingerprint() {
        None => return Ok(false),
        Some(fingerprint) => fingerprint == judged,
    };
    if !same {
        return Ok(false);
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_text_table() {
        let max = 4_194_304;
        let cases: &[(&str, Result<i32, &str>)] = &[
            ("1234", Ok(1234)),
            ("1234\n", Ok(1234)),
            ("  77 \n", Ok(77)),
            ("2", Ok(2)),
            ("4194304", Ok(4_194_304)),
            ("", Err("empty")),
            ("\n", Err("empty")),
            ("abc", Err("not a number")),
            ("12abc", Err("not a number")),
            ("0x10", Err("not a number")),
            ("+5", Err("not a number")),
            ("1 2", Err("not a number")),
            ("-5", Err("negative")),
            ("0", Err("not a worker PID")),
            ("1", Err("not a worker PID")),
            ("4194305", Err("beyond")),
            ("99999999999", Err("beyond")),
            ("99999999999999999999999999", Err("far beyond")),
        ];
        for (text, want) in cases {
            let got = parse_pid(text, max);
            match (want, &got) {
                (Ok(p), Ok(g)) => assert_eq!(p, g, "{text:?}"),
                (Err(fragment), Err(msg)) => assert!(msg.contains(fragment), "{text:?}: {msg}"),
                _ => panic!("{text:?}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    /// Reading through the held directory says exactly what reading by path
    /// says, for every kind of file a `pids/` directory can hold.
    #[test]
    fn the_directory_read_agrees_with_the_path_read() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        std::fs::create_dir(&pids).unwrap();
        let write = |name: &str, text: &[u8]| std::fs::write(pids.join(name), text).unwrap();
        write("plain.pid", b"4321\n");
        write("spaces.pid", b"  77 \n");
        write("text.pid", b"abc");
        write("empty.pid", b"");
        write("long.pid", &[b'7'; 100]);
        write("exactly64.pid", &[b'8'; 64]);
        write("latin1.pid", b"12\xff");
        std::os::unix::fs::symlink(pids.join("plain.pid"), pids.join("link.pid")).unwrap();
        std::fs::create_dir(pids.join("dir.pid")).unwrap();
        nix::unistd::mkfifo(&pids.join("fifo.pid"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let held = PidDir::open(&pids).expect("a real directory");
        let names = [
            "plain",
            "spaces",
            "text",
            "empty",
            "long",
            "exactly64",
            "latin1",
            "link",
            "dir",
            "fifo",
            "missing",
        ];
        for name in names {
            let by_path = read(&pids.join(format!("{name}.pid")), 4_194_304);
            assert_eq!(held.read(name, 4_194_304), by_path, "{name}");
        }
        assert!(matches!(
            held.read("plain", 4_194_304),
            PidFile::Pid { pid: 4321, .. }
        ));
        assert!(matches!(held.read("fifo", 4_194_304), PidFile::Invalid(_)));
        // A symlink in place of the directory is not held.
        std::os::unix::fs::symlink(&pids, dir.path().join("linked")).unwrap();
        assert!(PidDir::open(&dir.path().join("linked")).is_none());
    }
}
