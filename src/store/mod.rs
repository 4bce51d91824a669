//! Reading the Copilot databases: the active initiative from Memory Copilot
//! and the streams with their progress from Task Copilot. The databases belong
//! to other programs that write them while we read, so every connection is
//! read-only, has a busy timeout and holds no transaction across a check. A
//! check costs a constant number of queries whatever the number of streams.

mod legacy;

pub use legacy::{read_active_initiative, read_streams};

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// The initiative whose streams are monitored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initiative {
    pub id: String,
    pub name: String,
    pub status: String,
}

/// Task counts of one stream, within the active initiative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub total: u32,
    pub completed: u32,
    pub in_progress: u32,
    pub pending: u32,
    pub blocked: u32,
    pub cancelled: u32,
}

impl Progress {
    /// Complete when there is work and all of it is finished; a cancelled task
    /// is finished (the original counted it as open and restarted forever).
    pub fn is_complete(&self) -> bool {
        self.total > 0 && self.completed + self.cancelled == self.total
    }

    pub fn add(&mut self, status: &str) {
        self.total += 1;
        match status {
            "completed" => self.completed += 1,
            "in_progress" => self.in_progress += 1,
            "pending" => self.pending += 1,
            "blocked" => self.blocked += 1,
            "cancelled" => self.cancelled += 1,
            _ => {}
        }
    }
}

/// One stream as the database describes it; the id is not validated yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    pub raw_id: String,
    pub name: String,
    /// Dependency strings as written in the tasks' metadata, deduplicated.
    pub dependencies: Vec<String>,
    pub progress: Progress,
}

/// What one read of the task database produced.
#[derive(Debug, Clone, Default)]
pub struct StreamsRead {
    pub streams: Vec<StreamRecord>,
    /// Data problems that affect single tasks (bad metadata and the like).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path} does not exist; check --tasks-db / --memory-db or the workspace id")]
    Missing { path: PathBuf },
    #[error("database {path} cannot be opened: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("{path} is not an SQLite database")]
    NotSqlite { path: PathBuf },
    #[error("database {path} has the wrong schema: {what}")]
    WrongSchema { path: PathBuf, what: String },
    #[error(
        "database {path} is locked by a writer (waited {waited_ms} ms); this check was skipped"
    )]
    Busy { path: PathBuf, waited_ms: u128 },
    #[error("database {path}: {reason}")]
    Query { path: PathBuf, reason: String },
}

/// Opens a database read-only with a busy timeout.
pub(crate) fn open_read_only(
    path: &Path,
    busy_timeout: Duration,
) -> Result<Connection, StoreError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => {
            return Err(StoreError::Unreadable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
        Ok(meta) if !meta.is_file() => {
            return Err(StoreError::Unreadable {
                path: path.to_path_buf(),
                reason: "not a regular file".into(),
            })
        }
        Ok(_) => {}
    }
    // Opening is lazy in SQLite: permission problems show here, a file that is
    // not a database shows at the first query (mapped by `classify`).
    std::fs::File::open(path).map_err(|e| StoreError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(path, flags).map_err(|e| classify(path, e, busy_timeout))?;
    conn.busy_timeout(busy_timeout)
        .map_err(|e| classify(path, e, busy_timeout))?;
    Ok(conn)
}

/// Turns an SQLite error into the error an operator can act on.
pub(crate) fn classify(path: &Path, err: rusqlite::Error, busy_timeout: Duration) -> StoreError {
    use rusqlite::ffi::ErrorCode;
    let path = path.to_path_buf();
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => StoreError::Busy {
            path,
            waited_ms: busy_timeout.as_millis(),
        },
        Some(ErrorCode::NotADatabase) => StoreError::NotSqlite { path },
        Some(ErrorCode::CannotOpen)
        | Some(ErrorCode::PermissionDenied)
        | Some(ErrorCode::ReadOnly) => StoreError::Unreadable {
            path,
            reason: err.to_string(),
        },
        Some(ErrorCode::DatabaseCorrupt) => StoreError::Query {
            path,
            reason: format!("database is corrupt: {err}"),
        },
        _ => StoreError::Query {
            path,
            reason: err.to_string(),
        },
    }
}

/// Column names of a table; empty when the table does not exist.
pub(crate) fn table_columns(
    conn: &Connection,
    path: &Path,
    table: &str,
    busy_timeout: Duration,
) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA table_info({table})"))
        .map_err(|e| classify(path, e, busy_timeout))?;
    let names = stmt
        .query_map([], |row| row.get::<_, String>(1))
        .map_err(|e| classify(path, e, busy_timeout))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| classify(path, e, busy_timeout))?;
    Ok(names)
}

pub(crate) fn require_columns(
    conn: &Connection,
    path: &Path,
    table: &str,
    required: &[&str],
    busy_timeout: Duration,
) -> Result<Vec<String>, StoreError> {
    let columns = table_columns(conn, path, table, busy_timeout)?;
    if columns.is_empty() {
        return Err(StoreError::WrongSchema {
            path: path.to_path_buf(),
            what: format!("no table {table}"),
        });
    }
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|c| !columns.iter().any(|have| have == c))
        .collect();
    if !missing.is_empty() {
        return Err(StoreError::WrongSchema {
            path: path.to_path_buf(),
            what: format!("table {table} lacks column(s) {}", missing.join(", ")),
        });
    }
    Ok(columns)
}
