//! The current Task Copilot (`tc`) schema (SPEC 3.8): one database per
//! project, `<project>/.copilot/tasks.db`, where streams are rows of their
//! own, tasks point at their stream, dependencies are rows between tasks and
//! every id is an integer. There is no Memory Copilot initiative.
//!
//! The minimal schema this reader relies on (a real database has more
//! tables and columns; they are ignored, and `prds` / `streams.prd_id` /
//! `task_dependencies` may be absent):
//! ```sql
//! CREATE TABLE prds    (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL,
//!                       status TEXT NOT NULL DEFAULT 'active'
//!                         CHECK(status IN ('active','completed','archived')),
//!                       created_at TEXT NOT NULL DEFAULT (datetime('now')),
//!                       updated_at TEXT NOT NULL DEFAULT (datetime('now')));
//! CREATE TABLE streams (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
//!                       prd_id INTEGER REFERENCES prds(id),
//!                       status TEXT NOT NULL DEFAULT 'active'
//!                         CHECK(status IN ('active','paused','completed','archived')),
//!                       worktree_path TEXT,
//!                       created_at TEXT NOT NULL DEFAULT (datetime('now')),
//!                       updated_at TEXT NOT NULL DEFAULT (datetime('now')));
//! CREATE TABLE tasks   (id INTEGER PRIMARY KEY AUTOINCREMENT, prd_id INTEGER REFERENCES prds(id),
//!                       stream_id INTEGER REFERENCES streams(id), title TEXT NOT NULL,
//!                       status TEXT NOT NULL DEFAULT 'pending'
//!                         CHECK(status IN ('pending','in_progress','completed','blocked','cancelled')),
//!                       claimed_by TEXT, claimed_at TEXT,
//!                       created_at TEXT NOT NULL DEFAULT (datetime('now')),
//!                       updated_at TEXT NOT NULL DEFAULT (datetime('now')));
//! CREATE TABLE task_dependencies (task_id INTEGER NOT NULL REFERENCES tasks(id),
//!                       depends_on INTEGER NOT NULL REFERENCES tasks(id),
//!                       PRIMARY KEY (task_id, depends_on));
//! ```
//!
//! How it maps onto what the rest of the monitor knows:
//! - the monitored streams are those not `archived` whose PRD (if any) is
//!   `active`, as the legacy schema monitors the active initiative's streams;
//! - a stream's id is its integer id as text (`"3"`), validated like any
//!   stream id; its name is `streams.name`;
//! - stream B depends on stream A when a task of B depends on a task of A;
//!   a dependency on a stream that is not monitored (archived, or of a
//!   finished PRD) is dropped: that work is done or abandoned;
//! - progress counts the stream's tasks, completed and cancelled ones as
//!   finished, exactly as in the legacy schema;
//! - the initiative is synthesised: its id is the workspace id (the project
//!   folder's name), which any tool can work out and which does not change
//!   from one PRD to the next, so worker logs are `<stream>_<first 8 chars of
//!   the workspace id>.log`; its name is the newest active PRD's title.
//!
//! A stream `paused` in Task Copilot is still monitored (its dependants must
//! still wait for it); a warning says so and how to hold it in the monitor.
//! `streams.worktree_path` is not used: work dirs follow the monitor's layout.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::{
    classify, column_text, open_read_only, require_columns, table_columns, Initiative, Progress,
    StoreError, StreamRecord, StreamsRead,
};

/// What the rest of the monitor calls the initiative's status.
const SYNTHETIC_STATUS: &str = "IN PROGRESS";

/// Reads the monitored streams with their progress and dependencies, and
/// the synthesised initiative, in a constant number of queries.
pub fn read(
    path: &Path,
    workspace_id: &str,
    busy_timeout: Duration,
) -> Result<(Initiative, StreamsRead), StoreError> {
    let conn = open_read_only(path, busy_timeout)?;
    let err = |e| classify(path, e, busy_timeout);
    let stream_columns = require_columns(
        &conn,
        path,
        "streams",
        &["id", "name", "status"],
        busy_timeout,
    )?;
    let task_columns = require_columns(
        &conn,
        path,
        "tasks",
        &["id", "stream_id", "status"],
        busy_timeout,
    )?;
    let prd_columns = table_columns(&conn, path, "prds", busy_timeout)?;
    let dependency_columns = table_columns(&conn, path, "task_dependencies", busy_timeout)?;
    let has = |cols: &[String], c: &str| cols.iter().any(|have| have == c);

    let by_prd = has(&stream_columns, "prd_id") && has(&prd_columns, "status");
    let streams_sql = if by_prd {
        "SELECT s.id, s.name, s.status FROM streams s LEFT JOIN prds p ON p.id = s.prd_id \
         WHERE COALESCE(s.status, 'active') <> 'archived' \
           AND (s.prd_id IS NULL OR p.id IS NULL OR COALESCE(p.status, 'active') = 'active') \
         ORDER BY s.id"
    } else {
        "SELECT s.id, s.name, s.status FROM streams s \
         WHERE COALESCE(s.status, 'active') <> 'archived' ORDER BY s.id"
    };
    let mut by_id: BTreeMap<String, StreamRecord> = BTreeMap::new();
    let mut warnings = Vec::new();
    for_each_row(&conn, streams_sql, |row| {
        let id = column_text(row, 0)?.unwrap_or_default();
        let name = column_text(row, 1)?.unwrap_or_default();
        if column_text(row, 2)?.unwrap_or_default() == "paused" {
            warnings.push(format!(
                "Stream {id} ({name}) is paused in Task Copilot; the monitor still supervises it \
                 (run `monitor-workers pause {id}` to keep it from being restarted)"
            ));
        }
        by_id.insert(
            id.clone(),
            StreamRecord {
                raw_id: id.clone(),
                name: if name.is_empty() { id } else { name },
                dependencies: Vec::new(),
                progress: Progress::default(),
                last_update: None,
            },
        );
        Ok(())
    })
    .map_err(err)?;

    // `archived` is not in the tc schema; honour it if a database has it.
    let live = if has(&task_columns, "archived") {
        "AND COALESCE(t.archived, 0) = 0"
    } else {
        ""
    };
    let updated = if has(&task_columns, "updated_at") {
        "MAX(t.updated_at)"
    } else {
        "NULL"
    };
    let progress_sql = format!(
        "SELECT t.stream_id, t.status, COUNT(*), {updated} FROM tasks t \
         WHERE t.stream_id IS NOT NULL {live} GROUP BY t.stream_id, t.status"
    );
    for_each_row(&conn, &progress_sql, |row| {
        let stream = column_text(row, 0)?.unwrap_or_default();
        let status = column_text(row, 1)?.unwrap_or_default();
        let count: i64 = row.get(2)?;
        let newest = column_text(row, 3)?;
        if let Some(record) = by_id.get_mut(&stream) {
            for _ in 0..count {
                record.progress.add(&status);
            }
            if newest > record.last_update {
                record.last_update = newest;
            }
        }
        Ok(())
    })
    .map_err(err)?;

    if has(&dependency_columns, "task_id") && has(&dependency_columns, "depends_on") {
        let dependency_sql = format!(
            "SELECT DISTINCT t.stream_id, d.stream_id FROM task_dependencies td \
             JOIN tasks t ON t.id = td.task_id JOIN tasks d ON d.id = td.depends_on \
             WHERE t.stream_id IS NOT NULL AND d.stream_id IS NOT NULL \
               AND t.stream_id <> d.stream_id {live}"
        );
        let mut edges = Vec::new();
        for_each_row(&conn, &dependency_sql, |row| {
            edges.push((
                column_text(row, 0)?.unwrap_or_default(),
                column_text(row, 1)?.unwrap_or_default(),
            ));
            Ok(())
        })
        .map_err(err)?;
        for (dependant, on) in edges {
            if !by_id.contains_key(&on) {
                continue;
            }
            if let Some(record) = by_id.get_mut(&dependant) {
                if !record.dependencies.contains(&on) {
                    record.dependencies.push(on);
                }
            }
        }
    }

    let mut title = None;
    if has(&prd_columns, "title") && has(&prd_columns, "status") {
        for_each_row(
            &conn,
            "SELECT title FROM prds WHERE COALESCE(status, 'active') = 'active' \
             ORDER BY id DESC LIMIT 1",
            |row| {
                title = Some(column_text(row, 0)?.unwrap_or_default());
                Ok(())
            },
        )
        .map_err(err)?;
    }
    let initiative = Initiative {
        id: workspace_id.to_string(),
        name: title
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| format!("{workspace_id} (Task Copilot)")),
        status: SYNTHETIC_STATUS.to_string(),
    };
    Ok((
        initiative,
        StreamsRead {
            streams: by_id.into_values().collect(),
            warnings,
        },
    ))
}

fn for_each_row(
    conn: &Connection,
    sql: &str,
    mut each: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        each(row)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DDL: &str = "
        CREATE TABLE prds (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'active' CHECK(status IN ('active','completed','archived')),
            created_at TEXT NOT NULL DEFAULT (datetime('now')), updated_at TEXT NOT NULL DEFAULT (datetime('now')));
        CREATE TABLE streams (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
            prd_id INTEGER REFERENCES prds(id),
            status TEXT NOT NULL DEFAULT 'active' CHECK(status IN ('active','paused','completed','archived')),
            worktree_path TEXT,
            created_at TEXT NOT NULL DEFAULT (datetime('now')), updated_at TEXT NOT NULL DEFAULT (datetime('now')));
        CREATE TABLE tasks (id INTEGER PRIMARY KEY AUTOINCREMENT, prd_id INTEGER REFERENCES prds(id),
            stream_id INTEGER REFERENCES streams(id), title TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending'
              CHECK(status IN ('pending','in_progress','completed','blocked','cancelled')),
            claimed_by TEXT, claimed_at TEXT,
            created_at TEXT NOT NULL DEFAULT (datetime('now')), updated_at TEXT NOT NULL DEFAULT (datetime('now')));
        CREATE TABLE task_dependencies (task_id INTEGER NOT NULL REFERENCES tasks(id),
            depends_on INTEGER NOT NULL REFERENCES tasks(id), PRIMARY KEY (task_id, depends_on));
    ";

    fn fixture(sql: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(DDL).unwrap();
        conn.execute_batch(sql).unwrap();
        (dir, path)
    }

    #[test]
    fn streams_progress_and_cross_stream_dependencies() {
        let (_dir, path) = fixture(
            "INSERT INTO prds (id, title, status) VALUES (1, 'Old PRD', 'completed'), (2, 'Current PRD', 'active');
             INSERT INTO streams (id, name, prd_id, status) VALUES
               (1, 'backend', 2, 'active'), (2, 'frontend', 2, 'active'), (3, 'gone', 2, 'archived'),
               (4, 'old', 1, 'active'), (5, 'loose', NULL, 'paused');
             INSERT INTO tasks (id, stream_id, title, status) VALUES
               (10, 1, 'a', 'completed'), (11, 1, 'b', 'cancelled'),
               (20, 2, 'c', 'pending'), (21, 2, 'd', 'in_progress'), (22, 2, 'e', 'blocked'),
               (30, 3, 'f', 'completed'), (40, 4, 'g', 'pending'), (50, 5, 'h', 'pending'),
               (60, NULL, 'orphan', 'pending');
             -- frontend waits on backend twice (deduplicated); on the archived stream (dropped);
             -- a dependency inside one stream is no stream dependency.
             INSERT INTO task_dependencies (task_id, depends_on) VALUES
               (20, 10), (21, 11), (22, 30), (21, 20);",
        );
        let (initiative, read) = read(&path, "myproject", Duration::from_secs(1)).unwrap();
        assert_eq!(initiative.id, "myproject");
        assert_eq!(initiative.name, "Current PRD");
        let ids: Vec<&str> = read.streams.iter().map(|s| s.raw_id.as_str()).collect();
        assert_eq!(
            ids,
            ["1", "2", "5"],
            "archived and finished-PRD streams are left out"
        );
        let backend = &read.streams[0];
        assert_eq!(backend.name, "backend");
        assert!(backend.progress.is_complete());
        assert!(backend.dependencies.is_empty());
        let frontend = &read.streams[1];
        assert_eq!(frontend.dependencies, ["1"]);
        assert_eq!(
            (
                frontend.progress.total,
                frontend.progress.pending,
                frontend.progress.in_progress,
                frontend.progress.blocked
            ),
            (3, 1, 1, 1)
        );
        assert!(!frontend.progress.is_complete());
        assert_eq!(read.warnings.len(), 1, "{:?}", read.warnings);
        assert!(read.warnings[0].contains("Stream 5 (loose) is paused"));
    }

    #[test]
    fn minimal_database_without_prds_or_dependencies_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE streams (id INTEGER PRIMARY KEY, name TEXT, status TEXT);
                 CREATE TABLE tasks (id INTEGER PRIMARY KEY, stream_id INTEGER, status TEXT);
                 INSERT INTO streams VALUES (7, '', 'active');
                 INSERT INTO tasks VALUES (1, 7, 'pending');",
            )
            .unwrap();
        let (initiative, read) = read(&path, "ws", Duration::from_secs(1)).unwrap();
        assert_eq!(initiative.name, "ws (Task Copilot)");
        assert_eq!(read.streams.len(), 1);
        assert_eq!(read.streams[0].name, "7", "no name: the id stands in");
        assert_eq!(read.streams[0].progress.pending, 1);
    }

    #[test]
    fn a_database_without_streams_is_the_wrong_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE other (x TEXT);")
            .unwrap();
        let err = read(&path, "ws", Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, StoreError::WrongSchema { .. }), "{err}");
    }
}
