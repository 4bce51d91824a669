//! The structured event log, `<ORCH>/logs/events.jsonl`: one JSON object per
//! line for every lifecycle transition and every action (restart, stop,
//! operator command), for scripts and `logs --events`. Each line is one
//! append write; the file is rotated to `events.jsonl.1` past a size bound.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::process::safe_file;

/// Rotate past this size (bytes).
pub const MAX_EVENT_LOG_BYTES: u64 = 8 * 1024 * 1024;

/// One event. Absent fields are left out of the line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Local ISO-8601 time with microseconds, as in monitor.log.
    pub time: String,
    /// Milliseconds since the epoch.
    pub ts_ms: u64,
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    /// Who asked, for operator commands (`user@host` or a user name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// A restart's failure class (rate-limit, auth, crash, killed, hang) and
    /// its normalised signature, redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The channel an operator's command came through: `web` for the
    /// dashboard; absent for the command line and the monitor itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

impl EventRecord {
    pub fn new(event: &str, stream: Option<&str>) -> EventRecord {
        EventRecord {
            time: crate::report::log::timestamp(),
            ts_ms: crate::clock::now_ms(),
            event: event.to_string(),
            stream: stream.map(str::to_string),
            ..EventRecord::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct EventLog {
    path: PathBuf,
}

impl EventLog {
    pub fn new(path: &Path) -> EventLog {
        EventLog {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event; failures come back for the caller to report.
    pub fn append(&self, record: &EventRecord) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // symlink_metadata: a symlink in the log's place is refused below, never rotated.
        if std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_file() && m.len() > MAX_EVENT_LOG_BYTES)
        {
            let rotated = PathBuf::from(format!("{}.1", self.path.display()));
            std::fs::rename(&self.path, rotated)?;
        }
        let mut line = serde_json::to_string(record).map_err(std::io::Error::other)?;
        line.push('\n');
        safe_file::open_append(&self.path)
            .map_err(|e| e.into_io())?
            .write_all(line.as_bytes())
    }
}

/// Who runs this command, for operator events.
pub fn operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", nix::unistd::getuid()));
    match nix::unistd::gethostname() {
        Ok(host) => format!("{user}@{}", host.to_string_lossy()),
        Err(_) => user,
    }
}
