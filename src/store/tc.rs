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
//!
//! What only the tc schema knows comes back as [`TcProject`], beside the
//! records every schema has:
//! - a stream's aliases: its name and the `streamId` labels its tasks carry
//!   in their metadata (an alias naming two streams is ambiguous: a warning,
//!   and it names neither);
//! - dependency labels in task metadata (`dependencies` /
//!   `streamDependencies`), naming other streams by metadata `streamId`,
//!   name or numeric id; a label that names no stream is a warning and the
//!   stream waits (upstream starts a stream only once its dependencies are
//!   done, and an unknown one is never done);
//! - `streams.worktree_path`, as stored;
//! - whether every open task is `blocked` (no worker can move it on), and the
//!   task `tc task next` would hand out: pending, every `task_dependencies`
//!   row completed; the stream is *ready* when there is one and every stream
//!   its labels name is complete (at least one task, none open).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::{
    classify, column_text, open_read_only, require_columns, table_columns, Initiative, Progress,
    StoreError, StreamRecord, StreamsRead,
};

/// What the rest of the monitor calls the initiative's status.
const SYNTHETIC_STATUS: &str = "IN PROGRESS";

/// What the tc schema says of one monitored stream beyond its record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcStream {
    /// `streams.id` as text: the canonical id, as every other stream id.
    pub id: String,
    pub name: String,
    /// `streams.status` (active / paused / completed).
    pub status: String,
    /// Other names of the stream that resolve to it unambiguously: its name
    /// and its tasks' metadata `streamId` labels.
    pub aliases: Vec<String>,
    /// `streams.worktree_path`, as stored (relative or absolute, unchecked).
    pub worktree_path: Option<String>,
    /// Streams (canonical ids) named by the tasks' dependency labels.
    pub label_dependencies: Vec<String>,
    /// Labels that name no stream: the stream waits while any remains.
    pub unknown_labels: Vec<String>,
    /// Work is open and every open task is `blocked`.
    pub all_open_blocked: bool,
    /// The task `tc task next` would hand out for this stream, if any.
    pub next_ready_task: Option<i64>,
    /// A task is ready and every label-named stream is complete.
    pub ready: bool,
}

/// The tc-only facts of one read: monitored streams by canonical id and the
/// aliases an operator (or a label) may use for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcProject {
    pub streams: BTreeMap<String, TcStream>,
    /// Unambiguous alias (name, metadata streamId, numeric id) → canonical id.
    pub aliases: BTreeMap<String, String>,
}

impl TcProject {
    /// The canonical id a stream's id, name or metadata `streamId` names.
    pub fn resolve(&self, name: &str) -> Option<&str> {
        if self.streams.contains_key(name) {
            return self.streams.get_key_value(name).map(|(k, _)| k.as_str());
        }
        self.aliases.get(name).map(String::as_str)
    }
}

mod labels;
use labels::{resolve_labels, MetadataRow};

/// One stream row, monitored or not (labels may name either).
#[derive(Debug, Clone, Default)]
pub(super) struct StreamRow {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) monitored: bool,
}

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
    let monitored = if by_prd {
        "COALESCE(s.status, 'active') <> 'archived' \
         AND (s.prd_id IS NULL OR p.id IS NULL OR COALESCE(p.status, 'active') = 'active')"
    } else {
        "COALESCE(s.status, 'active') <> 'archived'"
    };
    let join = if by_prd {
        "LEFT JOIN prds p ON p.id = s.prd_id"
    } else {
        ""
    };
    let worktree = if has(&stream_columns, "worktree_path") {
        "s.worktree_path"
    } else {
        "NULL"
    };
    let streams_sql = format!(
        "SELECT s.id, s.name, s.status, {worktree}, CASE WHEN {monitored} THEN 1 ELSE 0 END \
         FROM streams s {join} ORDER BY s.id"
    );
    let mut by_id: BTreeMap<String, StreamRecord> = BTreeMap::new();
    let mut tc_by_id: BTreeMap<String, TcStream> = BTreeMap::new();
    let mut rows: Vec<StreamRow> = Vec::new();
    let mut warnings = Vec::new();
    for_each_row(&conn, &streams_sql, |row| {
        let id = column_text(row, 0)?.unwrap_or_default();
        let name = column_text(row, 1)?.unwrap_or_default();
        let status = column_text(row, 2)?.unwrap_or_default();
        let worktree_path = column_text(row, 3)?.filter(|p| !p.is_empty());
        let is_monitored: i64 = row.get(4)?;
        rows.push(StreamRow {
            id: id.clone(),
            name: name.clone(),
            monitored: is_monitored != 0,
        });
        if is_monitored == 0 {
            return Ok(());
        }
        if status == "paused" {
            warnings.push(format!(
                "Stream {id} ({name}) is paused in Task Copilot; the monitor still supervises it \
                 (run `monitor-workers pause {id}` to keep it from being restarted)"
            ));
        }
        let name = if name.is_empty() { id.clone() } else { name };
        tc_by_id.insert(
            id.clone(),
            TcStream {
                id: id.clone(),
                name: name.clone(),
                status,
                worktree_path,
                ..TcStream::default()
            },
        );
        by_id.insert(
            id.clone(),
            StreamRecord {
                raw_id: id,
                name,
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

    let has_dependencies =
        has(&dependency_columns, "task_id") && has(&dependency_columns, "depends_on");
    if has_dependencies {
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

    // Metadata: `streamId` aliases and dependency labels. `json_valid` guards
    // every JSON function through CASE (evaluated lazily), so one task with
    // malformed metadata fails nothing but itself.
    let mut labels: Vec<MetadataRow> = Vec::new();
    if has(&task_columns, "metadata") {
        let meta_sql = format!(
            "SELECT DISTINCT t.stream_id, \
               CASE WHEN json_valid(t.metadata) THEN NULL ELSE t.id END, \
               CASE WHEN json_valid(t.metadata) THEN json_extract(t.metadata, '$.streamId') END, \
               CASE WHEN json_valid(t.metadata) THEN json_type(t.metadata, '$.dependencies') END, \
               CASE WHEN json_valid(t.metadata) THEN json_extract(t.metadata, '$.dependencies') END, \
               CASE WHEN json_valid(t.metadata) THEN json_type(t.metadata, '$.streamDependencies') END, \
               CASE WHEN json_valid(t.metadata) THEN json_extract(t.metadata, '$.streamDependencies') END \
             FROM tasks t WHERE t.stream_id IS NOT NULL {live} \
               AND t.metadata IS NOT NULL AND t.metadata <> '' AND t.metadata <> '{{}}'"
        );
        for_each_row(&conn, &meta_sql, |row| {
            labels.push(MetadataRow {
                stream: column_text(row, 0)?.unwrap_or_default(),
                invalid_task: column_text(row, 1)?,
                stream_label: column_text(row, 2)?.filter(|l| !l.is_empty()),
                dependencies: (column_text(row, 3)?, column_text(row, 4)?),
                stream_dependencies: (column_text(row, 5)?, column_text(row, 6)?),
            });
            Ok(())
        })
        .map_err(err)?;
    }

    // The task `tc task next` would hand out, per stream: pending, and every
    // task it depends on completed (a dependency on a vanished task is not).
    let waits = if has_dependencies {
        "AND NOT EXISTS (SELECT 1 FROM task_dependencies td LEFT JOIN tasks d ON d.id = td.depends_on \
                         WHERE td.task_id = t.id AND COALESCE(d.status, '') <> 'completed')"
    } else {
        ""
    };
    let priority = if has(&task_columns, "priority") {
        "COALESCE(t.priority, 2), "
    } else {
        ""
    };
    let ready_sql = format!(
        "SELECT t.stream_id, t.id FROM tasks t \
         WHERE t.status = 'pending' AND t.stream_id IS NOT NULL {live} {waits} \
         ORDER BY t.stream_id, {priority}t.id"
    );
    for_each_row(&conn, &ready_sql, |row| {
        let stream = column_text(row, 0)?.unwrap_or_default();
        let task: i64 = row.get(1)?;
        if let Some(facts) = tc_by_id.get_mut(&stream) {
            facts.next_ready_task.get_or_insert(task);
        }
        Ok(())
    })
    .map_err(err)?;

    let resolved = resolve_labels(&rows, &labels);
    warnings.extend(resolved.warnings);
    for (id, facts) in tc_by_id.iter_mut() {
        facts.aliases = resolved
            .aliases
            .iter()
            .filter(|(alias, target)| *target == id && *alias != id)
            .map(|(alias, _)| alias.clone())
            .collect();
        if let Some(deps) = resolved.dependencies.get(id) {
            for dep in deps {
                // A label naming a stream that is no longer monitored: that
                // work is done or abandoned, as for task dependencies.
                if by_id.contains_key(dep) && !facts.label_dependencies.contains(dep) {
                    facts.label_dependencies.push(dep.clone());
                }
            }
        }
        facts.unknown_labels = resolved.unknown.get(id).cloned().unwrap_or_default();
    }
    let complete: BTreeSet<String> = by_id
        .iter()
        .filter(|(_, r)| r.progress.is_complete())
        .map(|(id, _)| id.clone())
        .collect();
    for (id, facts) in tc_by_id.iter_mut() {
        let Some(record) = by_id.get_mut(id) else {
            continue;
        };
        for dep in &facts.label_dependencies {
            if !record.dependencies.contains(dep) {
                record.dependencies.push(dep.clone());
            }
        }
        let p = &record.progress;
        let open = p.total - p.completed - p.cancelled;
        facts.all_open_blocked = open > 0 && p.blocked == open;
        facts.ready = facts.next_ready_task.is_some()
            && facts.unknown_labels.is_empty()
            && facts
                .label_dependencies
                .iter()
                .all(|d| complete.contains(d));
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
    let monitored_aliases = resolved
        .aliases
        .into_iter()
        .filter(|(_, target)| tc_by_id.contains_key(target))
        .collect();
    Ok((
        initiative,
        StreamsRead {
            streams: by_id.into_values().collect(),
            warnings,
            tc: Some(TcProject {
                streams: tc_by_id,
                aliases: monitored_aliases,
            }),
        },
    ))
}

/// The stream of each task id asked about (for `tc worker <task-id>`
/// processes), in one query; unknown ids are left out.
pub fn streams_of_tasks(
    path: &Path,
    task_ids: &[i64],
    busy_timeout: Duration,
) -> Result<HashMap<i64, String>, StoreError> {
    let mut found = HashMap::new();
    if task_ids.is_empty() {
        return Ok(found);
    }
    let conn = open_read_only(path, busy_timeout)?;
    let list: Vec<String> = task_ids.iter().map(i64::to_string).collect();
    let sql = format!(
        "SELECT id, stream_id FROM tasks WHERE stream_id IS NOT NULL AND id IN ({})",
        list.join(",")
    );
    for_each_row(&conn, &sql, |row| {
        let id: i64 = row.get(0)?;
        if let Some(stream) = column_text(row, 1)? {
            found.insert(id, stream);
        }
        Ok(())
    })
    .map_err(|e| classify(path, e, busy_timeout))?;
    Ok(found)
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
#[path = "tc_tests.rs"]
mod tests;
