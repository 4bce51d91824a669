//! Reading the Copilot databases: the active initiative from Memory Copilot
//! and the streams with their progress from Task Copilot. The databases belong
//! to other programs that write them while we read, so every connection is
//! read-only, has a busy timeout and holds no transaction across a check. A
//! check costs a constant number of queries whatever the number of streams.

mod legacy;
mod metadata;
pub mod recovery;
mod tc;
mod text;

pub use legacy::{read_active_initiative, read_streams, read_streams_on};
pub use tc::{streams_of_tasks, TcProject, TcStream};
pub(crate) use text::{column_str, column_text};

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

/// Task counts of one stream, within the active initiative (also the
/// `tasks` object of `status --json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
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
        self.add_spelled(status.as_bytes());
    }

    /// [`Progress::add`] of a status as the database stored it: the known
    /// statuses are ASCII, so nothing else needs to be read as text.
    pub fn add_spelled(&mut self, status: &[u8]) {
        self.total += 1;
        match status {
            b"completed" => self.completed += 1,
            b"in_progress" => self.in_progress += 1,
            b"pending" => self.pending += 1,
            b"blocked" => self.blocked += 1,
            b"cancelled" => self.cancelled += 1,
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
    /// The newest `updated_at` of the stream's tasks, as stored.
    pub last_update: Option<String>,
}

/// What one read of the task database produced.
#[derive(Debug, Clone, Default)]
pub struct StreamsRead {
    pub streams: Vec<StreamRecord>,
    /// Data problems that affect single tasks (bad metadata and the like).
    pub warnings: Vec<String>,
    /// What only the tc schema knows (aliases, labels, worktrees, readiness);
    /// `None` for the legacy schema.
    pub tc: Option<TcProject>,
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
    #[error(
        "the tc database {tc} does not exist{legacy}; create it with `tc init` in {root} \
         (or pass --tasks-db)"
    )]
    TcMissing {
        tc: PathBuf,
        root: PathBuf,
        /// ", nor does <legacy tasks.db>" when that is missing too.
        legacy: String,
    },
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
    // Every read is one pass: a large page cache would only hold memory.
    // (Only a hint: a locked database shows at the first real query.)
    let _ = conn.execute_batch("PRAGMA cache_size = -256");
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

// ----- which schema, which database ---------------------------------------------

/// The two Task Copilot schemas the monitor reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaKind {
    /// `~/.claude/tasks/<ws>/tasks.db`: streams in the tasks' JSON metadata,
    /// the initiative in Memory Copilot.
    Legacy,
    /// `<project>/.copilot/tasks.db`: a `streams` table, `tasks.stream_id`,
    /// `task_dependencies`, integer ids (see `tc.rs`).
    Tc,
}

impl SchemaKind {
    pub fn describe(self) -> &'static str {
        match self {
            SchemaKind::Legacy => "Task Copilot (legacy, streams in task metadata)",
            SchemaKind::Tc => "Task Copilot tc (streams table, task dependencies)",
        }
    }
}

/// The task database in use and its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSource {
    pub schema: SchemaKind,
    pub tasks_db: PathBuf,
}

/// What one read of a project's databases produced.
#[derive(Debug, Clone)]
pub struct ProjectRead {
    pub initiative: Initiative,
    pub streams: StreamsRead,
    pub source: TaskSource,
}

/// The schema a database has, from its tables and the columns of `tasks`;
/// `None` when it has neither.
pub fn schema_of(tables: &[String], task_columns: &[String]) -> Option<SchemaKind> {
    let table = |t: &str| tables.iter().any(|have| have == t);
    let column = |c: &str| task_columns.iter().any(|have| have == c);
    if table("streams") && column("stream_id") {
        Some(SchemaKind::Tc)
    } else if table("prds") && column("metadata") {
        Some(SchemaKind::Legacy)
    } else {
        None
    }
}

/// Reads a database's tables (two queries) and tells its schema.
pub fn detect(path: &Path, busy_timeout: Duration) -> Result<Option<SchemaKind>, StoreError> {
    detect_keeping(path, busy_timeout).map(|(schema, _)| schema)
}

/// [`detect`], with the connection it opened, for the read that follows
/// (opening a database again reads its header and schema again).
fn detect_keeping(
    path: &Path,
    busy_timeout: Duration,
) -> Result<(Option<SchemaKind>, Connection), StoreError> {
    let conn = open_read_only(path, busy_timeout)?;
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .map_err(|e| classify(path, e, busy_timeout))?;
    let tables = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| classify(path, e, busy_timeout))?;
    let task_columns = table_columns(&conn, path, "tasks", busy_timeout)?;
    drop(stmt);
    Ok((schema_of(&tables, &task_columns), conn))
}

/// Which task database to read: the project's `.copilot/tasks.db` when it
/// exists and no tasks database was named; otherwise the named (or default)
/// one, in whichever schema it has. A database that cannot be probed is
/// taken as legacy, whose reader then reports the problem in its own words
/// (except a lock, reported at once rather than waited out twice).
pub fn locate(
    layout: &crate::layout::Layout,
    busy_timeout: Duration,
) -> Result<TaskSource, StoreError> {
    locate_keeping(layout, busy_timeout).map(|(source, _)| source)
}

/// [`locate`], with the connection the schema was probed through when
/// there was one.
fn locate_keeping(
    layout: &crate::layout::Layout,
    busy_timeout: Duration,
) -> Result<(TaskSource, Option<Connection>), StoreError> {
    let tc_db = layout.tc_tasks_db();
    if !layout.tasks_db_given && tc_db.is_file() {
        let source = TaskSource {
            schema: SchemaKind::Tc,
            tasks_db: tc_db,
        };
        return Ok((source, None));
    }
    let (schema, conn) = match detect_keeping(&layout.tasks_db, busy_timeout) {
        Ok((Some(kind), conn)) => (kind, Some(conn)),
        Ok((None, conn)) => (SchemaKind::Legacy, Some(conn)),
        Err(busy @ StoreError::Busy { .. }) => return Err(busy),
        Err(_) => (SchemaKind::Legacy, None),
    };
    let source = TaskSource {
        schema,
        tasks_db: layout.tasks_db.clone(),
    };
    Ok((source, conn))
}

/// A read kept between the daemon's ticks, with the stamps of the files it
/// came from. The default keeps nothing (a one-shot check reads once, and a
/// kept copy would only cost memory); [`ReadCache::keeping`] keeps.
#[derive(Debug, Default)]
pub struct ReadCache {
    keep: bool,
    kept: Option<(Vec<FileStamp>, Option<std::sync::Arc<ProjectRead>>)>,
    /// Counts the reads made (not reused): what was derived from a read
    /// stays good while this has not moved.
    generation: u64,
}

impl ReadCache {
    /// A cache that keeps each read for the next tick (the daemon's).
    pub fn keeping() -> ReadCache {
        ReadCache {
            keep: true,
            ..ReadCache::default()
        }
    }

    /// Whether reads are kept between ticks.
    pub fn keeps(&self) -> bool {
        self.keep
    }

    /// Moves on every read of the databases; stays put while a kept read is reused.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// What changes when a database file is written: size, mtime (ns), inode.
type FileStamp = Option<(u64, i64, i64, u64)>;

fn stamps(layout: &crate::layout::Layout, tasks_db: &Path) -> Vec<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let with_wal = |p: &Path| {
        [
            p.to_path_buf(),
            PathBuf::from(format!("{}-wal", p.display())),
        ]
    };
    let dirs = [tasks_db.parent(), layout.memory_db.parent()];
    with_wal(tasks_db)
        .into_iter()
        .chain(with_wal(&layout.memory_db))
        .chain(dirs.into_iter().flatten().map(Path::to_path_buf))
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
        })
        .collect()
}

/// [`read_project`], unless the databases (and their write-ahead logs and
/// folders) are unchanged since the read `cache` keeps: then that read
/// again, without a query.
pub fn read_project_cached(
    layout: &crate::layout::Layout,
    busy_timeout: Duration,
    cache: &mut ReadCache,
) -> Result<Option<std::sync::Arc<ProjectRead>>, StoreError> {
    if let Some((stamped, read)) = &cache.kept {
        let tasks_db = read.as_ref().map(|r| r.source.tasks_db.clone());
        if let Some(tasks_db) = tasks_db {
            if stamps(layout, &tasks_db) == *stamped {
                return Ok(read.clone());
            }
        }
    }
    cache.kept = None;
    cache.generation += 1;
    let read = read_project(layout, busy_timeout)?.map(std::sync::Arc::new);
    if let Some(r) = read.as_ref().filter(|_| cache.keep) {
        // Stamped after the read: a write during it makes the next tick read again.
        cache.kept = Some((stamps(layout, &r.source.tasks_db), Some(r.clone())));
    }
    Ok(read)
}

/// The initiative and its streams, from whichever schema the project uses.
/// `Ok(None)` when there is no active initiative (legacy only: the tc schema
/// has none, so one is synthesised from the workspace).
pub fn read_project(
    layout: &crate::layout::Layout,
    busy_timeout: Duration,
) -> Result<Option<ProjectRead>, StoreError> {
    let (source, probed) = locate_keeping(layout, busy_timeout)?;
    let (initiative, streams) = match source.schema {
        SchemaKind::Tc => tc::read(&source.tasks_db, &layout.workspace_id, busy_timeout)?,
        SchemaKind::Legacy => {
            let legacy =
                read_active_initiative(&layout.memory_db, busy_timeout).and_then(|initiative| {
                    match initiative {
                        None => Ok(None),
                        Some(i) => read_streams_on(probed, &source.tasks_db, &i.id, busy_timeout)
                            .map(|streams| Some((i, streams))),
                    }
                });
            match legacy {
                Ok(Some(read)) => read,
                Ok(None) => return Ok(None),
                Err(StoreError::Missing { path }) => {
                    return Err(missing_database(layout, path));
                }
                Err(other) => return Err(other),
            }
        }
    };
    Ok(Some(ProjectRead {
        initiative,
        streams,
        source,
    }))
}

/// A missing legacy database, said in the words of the project at hand: a
/// project that looks like a tc project (it has `.copilot/` or `.worktrees/`)
/// is told about the tc database and `tc init`; a legacy project keeps the
/// plain message.
fn missing_database(layout: &crate::layout::Layout, path: PathBuf) -> StoreError {
    let root = &layout.project_root;
    let looks_tc = root.join(".copilot").is_dir() || root.join(".worktrees").is_dir();
    if layout.tasks_db_given || !looks_tc {
        return StoreError::Missing { path };
    }
    let legacy_tasks_missing = !layout.tasks_db.exists();
    StoreError::TcMissing {
        tc: layout.tc_tasks_db(),
        root: root.clone(),
        legacy: if legacy_tasks_missing {
            format!(", nor does {}", layout.tasks_db.display())
        } else {
            String::new()
        },
    }
}

#[cfg(test)]
mod schema_tests {
    use super::*;

    /// The legacy read goes on through the connection the schema was
    /// probed with: the database is opened once (a file renamed away after
    /// the probe is still the one read).
    #[test]
    fn the_tasks_database_is_read_through_the_connection_that_probed_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let tasks_db = root.join("tasks.db");
        let conn = Connection::open(&tasks_db).unwrap();
        conn.execute_batch(
            r#"CREATE TABLE prds (id TEXT PRIMARY KEY, initiative_id TEXT);
               CREATE TABLE tasks (id TEXT PRIMARY KEY, prd_id TEXT, status TEXT,
                                   metadata TEXT, updated_at TEXT);
               INSERT INTO prds VALUES ('p', 'init');
               INSERT INTO tasks VALUES ('t', 'p', 'pending', '{"streamId":"api"}', '1');"#,
        )
        .unwrap();
        drop(conn);
        let layout = crate::layout::Layout {
            project_root: root.clone(),
            orch: root.join(".claude/orchestrator"),
            workspace_id: "ws".into(),
            tasks_db: tasks_db.clone(),
            memory_db: root.join("memory.db"),
            tasks_db_given: true,
        };
        let timeout = Duration::from_secs(1);
        let (source, probed) = locate_keeping(&layout, timeout).unwrap();
        assert_eq!(source.schema, SchemaKind::Legacy);
        assert!(probed.is_some());
        std::fs::rename(&tasks_db, root.join("moved.db")).unwrap();
        let read = read_streams_on(probed, &tasks_db, "init", timeout).unwrap();
        let ids: Vec<&str> = read.streams.iter().map(|s| s.raw_id.as_str()).collect();
        assert_eq!(ids, ["api"]);
        // Without a connection the path is opened, and it is gone.
        assert!(matches!(
            read_streams_on(None, &tasks_db, "init", timeout),
            Err(StoreError::Missing { .. })
        ));
    }

    #[test]
    fn a_missing_database_is_named_for_the_project_at_hand() {
        // (tc marker folder, tasks db given, legacy tasks db exists, tc message)
        let cases = [
            (None, false, false, false),
            (None, false, true, false),
            (Some(".copilot"), false, false, true),
            (Some(".worktrees"), false, true, true),
            (Some(".copilot"), true, false, false),
        ];
        for (marker, given, legacy_exists, tc) in cases {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().to_path_buf();
            if let Some(m) = marker {
                std::fs::create_dir_all(root.join(m)).unwrap();
            }
            let tasks_db = root.join("legacy-tasks.db");
            if legacy_exists {
                std::fs::write(&tasks_db, "").unwrap();
            }
            let layout = crate::layout::Layout {
                project_root: root.clone(),
                orch: root.join(".claude/orchestrator"),
                workspace_id: "ws".into(),
                tasks_db,
                memory_db: root.join("memory.db"),
                tasks_db_given: given,
            };
            let err = missing_database(&layout, root.join("memory.db"));
            let text = err.to_string();
            assert_eq!(
                matches!(err, StoreError::TcMissing { .. }),
                tc,
                "{marker:?} {given} {legacy_exists}: {text}"
            );
            if tc {
                assert!(
                    text.contains("tc init") && text.contains(".copilot/tasks.db"),
                    "{text}"
                );
                assert_eq!(text.contains("nor does"), !legacy_exists, "{text}");
            } else {
                assert!(text.contains("memory.db does not exist"), "{text}");
            }
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn schema_from_tables_table() {
        let legacy_tasks = ["id", "prd_id", "status", "metadata", "archived"];
        let tc_tasks = ["id", "prd_id", "stream_id", "status", "metadata"];
        let cases: [(&[&str], &[&str], Option<SchemaKind>); 6] = [
            (&["prds", "tasks"], &legacy_tasks, Some(SchemaKind::Legacy)),
            (
                &["prds", "streams", "tasks", "task_dependencies"],
                &tc_tasks,
                Some(SchemaKind::Tc),
            ),
            (
                &["streams", "tasks"],
                &["id", "stream_id", "status"],
                Some(SchemaKind::Tc),
            ),
            // A table named streams is not enough: tasks must point at it.
            (
                &["prds", "streams", "tasks"],
                &legacy_tasks,
                Some(SchemaKind::Legacy),
            ),
            (&["other"], &[], None),
            (&["prds", "tasks"], &["id", "status"], None),
        ];
        for (tables, columns, want) in cases {
            assert_eq!(
                schema_of(&names(tables), &names(columns)),
                want,
                "{tables:?} {columns:?}"
            );
        }
    }
}
