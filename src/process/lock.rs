//! Advisory file locks (flock) shared by every monitor on a project: the
//! state lock, the per-stream spawn lock and the single-daemon lock. Locks go
//! with the process, so a monitor killed -9 never leaves one held.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
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
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
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
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    text.trim().to_string()
}
