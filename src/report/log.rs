//! monitor.log and the console. Every message goes to
//! `<ORCH>/logs/monitor.log` as `[<local ISO timestamp>] [LEVEL] message`
//! (appended, one write per line so concurrent monitors never interleave
//! halves) and to stdout as `[MONITOR] message`, the tag coloured by level on
//! a terminal without NO_COLOR ([`stdout_color`] decides, for every console
//! writer). `--quiet` keeps the console to actions and
//! errors; the file always gets everything. A log file that cannot be written
//! is reported once on stderr and the check goes on.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use colored::Colorize;

use crate::process::safe_file::{self, SafeFileError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Success,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Success => "SUCCESS",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
        }
    }
}

/// Whether a message reports an action (shown even with `--quiet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Report,
    Action,
}

pub struct Logger {
    path: Option<PathBuf>,
    file: Mutex<Option<File>>,
    quiet: bool,
    color: bool,
    file_failed: AtomicBool,
}

impl Logger {
    /// A logger writing to `path` (created with its directory if needed).
    pub fn new(path: Option<&Path>, quiet: bool) -> Logger {
        let color = stdout_color();
        Logger {
            path: path.map(Path::to_path_buf),
            file: Mutex::new(None),
            quiet,
            color,
            file_failed: AtomicBool::new(false),
        }
    }

    pub fn info(&self, msg: &str) {
        self.log(Level::Info, Kind::Report, msg);
    }
    pub fn success(&self, msg: &str) {
        self.log(Level::Success, Kind::Report, msg);
    }
    pub fn warning(&self, msg: &str) {
        self.log(Level::Warning, Kind::Report, msg);
    }
    pub fn error(&self, msg: &str) {
        self.log(Level::Error, Kind::Action, msg);
    }
    /// An action taken (restart, give-up): shown even with `--quiet`.
    pub fn action(&self, level: Level, msg: &str) {
        self.log(level, Kind::Action, msg);
    }

    pub fn log(&self, level: Level, kind: Kind, msg: &str) {
        self.write_file(level, msg);
        self.console(level, kind, msg);
    }

    /// Writes only to the console (for a line monitor.log already has).
    pub fn console(&self, level: Level, kind: Kind, msg: &str) {
        if self.quiet && kind == Kind::Report && level != Level::Error {
            return;
        }
        let tag = "[MONITOR]";
        let tag = if self.color {
            match level {
                Level::Info => tag.blue().to_string(),
                Level::Success => tag.green().to_string(),
                Level::Warning => tag.yellow().to_string(),
                Level::Error => tag.red().to_string(),
            }
        } else {
            tag.to_string()
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{tag} {msg}");
        let _ = out.flush();
    }

    /// Writes only to monitor.log (for fatal errors already on stderr).
    pub fn write_file(&self, level: Level, msg: &str) {
        let Some(path) = &self.path else { return };
        let line = format!(
            "[{}] [{}] {}\n",
            timestamp(),
            level.as_str(),
            msg.replace('\n', " ")
        );
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // Rotated (by this monitor or another): write to the new file.
        if guard.as_ref().is_some_and(|f| !still_at(f, path)) {
            *guard = None;
        }
        if guard.is_none() {
            rotate_if_large(path, MAX_MONITOR_LOG_BYTES, MONITOR_LOG_KEEP);
            match open_append(path) {
                Ok(f) => *guard = Some(f),
                Err(e) => return self.report_file_error(&e),
            }
        }
        if let Some(file) = guard.as_mut() {
            if let Err(e) = file.write_all(line.as_bytes()) {
                self.report_file_error(&format!("cannot write {}: {e}", path.display()));
            }
        }
    }

    /// Says once, on stderr, that monitor.log is not written; the check goes on.
    fn report_file_error(&self, message: &str) {
        if !self.file_failed.swap(true, Ordering::SeqCst) {
            eprintln!("monitor-workers: warning: {message}; continuing without it");
        }
    }
}

/// The colour rule: colour only on a terminal, and not when NO_COLOR is set
/// to a non-empty value. An empty NO_COLOR leaves colour on (no-color.org:
/// "when present and not an empty string").
pub fn color_wanted(no_color: Option<&OsStr>, stdout_is_terminal: bool) -> bool {
    stdout_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Whether this process colours its stdout: [`color_wanted`] applied to the
/// environment. Every console writer asks here. `colored` reads NO_COLOR on
/// its own and turns colour off even for an empty value, so its override is
/// set to this decision to keep one rule.
pub fn stdout_color() -> bool {
    let color = color_wanted(
        std::env::var_os("NO_COLOR").as_deref(),
        std::io::stdout().is_terminal(),
    );
    colored::control::set_override(color);
    color
}

/// monitor.log is rotated past this size ...
pub const MAX_MONITOR_LOG_BYTES: u64 = 8 * 1024 * 1024;
/// ... keeping this many old files: monitor.log.1 (newest) to monitor.log.5.
pub const MONITOR_LOG_KEEP: u32 = 5;

/// Whether the open log file is still the one at `path` (not rotated away).
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => {
            open.ino() == named.ino()
                && open.dev() == named.dev()
                && open.len() <= MAX_MONITOR_LOG_BYTES
        }
        _ => false,
    }
}

/// Rotates `path` when it is larger than `max`: `path.1` becomes `path.2`
/// and so on (the oldest beyond `keep` is dropped), `path` becomes `path.1`.
/// Under a lock beside it, so two monitors never rotate the same file twice;
/// a monitor that cannot get the lock leaves the rotation to the other.
pub fn rotate_if_large(path: &Path, max: u64, keep: u32) {
    let large = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.len() > max);
    if keep == 0 || !large(path) {
        return;
    }
    let lock_path = PathBuf::from(format!("{}.rotate.lock", path.display()));
    let Ok(Some(_held)) = crate::process::lock::try_lock(&lock_path) else {
        return;
    };
    if !large(path) {
        return; // rotated meanwhile
    }
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    let _ = std::fs::remove_file(numbered(keep));
    for n in (1..keep).rev() {
        let _ = std::fs::rename(numbered(n), numbered(n + 1));
    }
    let _ = std::fs::rename(path, numbered(1));
}

/// Opens monitor.log for appending: never through a symlink (the file or
/// `logs/` itself), and never a FIFO or device, which could block the check.
/// The error names the path once.
fn open_append(path: &Path) -> Result<File, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    safe_file::open_append(path).map_err(|e| match e {
        SafeFileError::Io { source, .. } => format!("cannot write {}: {source}", path.display()),
        refused @ SafeFileError::NotRegular { .. } => format!("cannot write to it: {refused}"),
        refused => format!("cannot write {}: {refused}", path.display()),
    })
}

/// Local time, ISO 8601 with microseconds, no offset: Python's `datetime.now().isoformat()`.
pub fn timestamp() -> String {
    chrono::Local::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_newest_files_and_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("monitor.log");
        let numbered = |n: u32| dir.path().join(format!("monitor.log.{n}"));
        for n in 1..=3 {
            std::fs::write(numbered(n), format!("old {n}")).unwrap();
        }
        std::fs::write(&log, "x".repeat(100)).unwrap();
        rotate_if_large(&log, 100, 3);
        assert!(log.exists(), "not past the bound: left alone");
        std::fs::write(&log, "y".repeat(101)).unwrap();
        rotate_if_large(&log, 100, 3);
        assert!(!log.exists());
        assert_eq!(
            std::fs::read_to_string(numbered(1)).unwrap(),
            "y".repeat(101)
        );
        assert_eq!(std::fs::read_to_string(numbered(2)).unwrap(), "old 1");
        assert_eq!(std::fs::read_to_string(numbered(3)).unwrap(), "old 2");
        assert!(!numbered(4).exists(), "only 3 kept");

        // A logger goes on in the file at the path.
        let logger = Logger::new(Some(&log), true);
        logger.write_file(Level::Info, "after");
        assert!(std::fs::read_to_string(&log).unwrap().ends_with("after\n"));
    }

    #[test]
    fn colour_only_on_a_terminal_without_a_non_empty_no_color() {
        let cases = [
            (None, true, true),
            (Some(""), true, true),
            (Some("1"), true, false),
            (Some("0"), true, false),
            (Some("false"), true, false),
            (None, false, false),
            (Some(""), false, false),
            (Some("1"), false, false),
        ];
        for (no_color, terminal, want) in cases {
            assert_eq!(
                color_wanted(no_color.map(OsStr::new), terminal),
                want,
                "NO_COLOR={no_color:?} terminal={terminal}"
            );
        }
    }
}
