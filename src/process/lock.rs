//! Advisory file locks (flock) shared by every monitor on a project: the
//! state lock, the per-stream spawn lock and the single-daemon lock. Locks go
//! with the process, so a monitor killed -9 never leaves one held.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// A held exclusive lock; released on drop.
pub struct FileLock {
    file: Flock<File>,
    path: PathBuf,
}

impl std::fmt::Debug for FileLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileLock")
            .field("path", &self.path)
            .finish()
    }
}

fn open_lock_file(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Never through a symlink, never blocking on a FIFO planted in its place.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match super::safe_file::kind_at(path) {
            Some(kind) if kind != super::safe_file::FileKind::Regular => std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is {}, not a lock file", path.display(), kind.describe()),
            ),
            _ => e,
        })?;
    let kind = super::safe_file::FileKind::of(file.metadata()?.file_type());
    if kind != super::safe_file::FileKind::Regular {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is {}, not a lock file", path.display(), kind.describe()),
        ));
    }
    Ok(file)
}

/// Takes the lock if nobody holds it; `Ok(None)` when somebody does.
pub fn try_lock(path: &Path) -> std::io::Result<Option<FileLock>> {
    let file = open_lock_file(path)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(file) => Ok(Some(FileLock {
            file,
            path: path.to_path_buf(),
        })),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(std::io::Error::from(errno)),
    }
}

/// Waits for the lock, polling, for at most `timeout`; `Ok(None)` on timeout.
pub fn lock_within(path: &Path, timeout: Duration) -> std::io::Result<Option<FileLock>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(lock) = try_lock(path)? {
            return Ok(Some(lock));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl FileLock {
    /// Records who holds the lock (a PID), for the message a second daemon prints.
    pub fn write_holder(&mut self, text: &str) -> std::io::Result<()> {
        let file: &mut File = &mut self.file;
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(text.as_bytes())?;
        file.sync_data()
    }
}

/// What the holder of a lock wrote into it (empty when unknown).
pub fn read_holder(path: &Path) -> String {
    // A FIFO planted in the lock's place must not hang the message.
    super::safe_file::read_capped(path, 4096)
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
        .unwrap_or_default()
}
