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

/// One stream row, monitored or not (labels may name either).
#[derive(Debug, Clone, Default)]
struct StreamRow {
    id: String,
    name: String,
    monitored: bool,
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

/// One distinct combination of a task's metadata facts within a stream.
#[derive(Debug, Clone, Default)]
struct MetadataRow {
    stream: String,
    /// Set (to the task id) when the metadata is not valid JSON.
    invalid_task: Option<String>,
    stream_label: Option<String>,
    /// (json type, json text) of `dependencies`.
    dependencies: (Option<String>, Option<String>),
    /// (json type, json text) of `streamDependencies`.
    stream_dependencies: (Option<String>, Option<String>),
}

/// What the labels resolve to.
#[derive(Debug, Default, PartialEq, Eq)]
struct Resolved {
    /// Unambiguous alias → canonical id (metadata streamIds, names, ids).
    aliases: BTreeMap<String, String>,
    /// Canonical id → streams its labels name.
    dependencies: BTreeMap<String, Vec<String>>,
    /// Canonical id → labels naming no stream.
    unknown: BTreeMap<String, Vec<String>>,
    warnings: Vec<String>,
}

/// Resolves aliases and labels. A label names a stream by metadata
/// `streamId` first, then by name, then by numeric id.
fn resolve_labels(streams: &[StreamRow], metadata: &[MetadataRow]) -> Resolved {
    let mut out = Resolved::default();
    let mut by_label: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut invalid: BTreeSet<&str> = BTreeSet::new();
    for row in metadata {
        if let Some(task) = &row.invalid_task {
            if invalid.insert(task) {
                out.warnings.push(format!(
                    "Task {task} of stream {} has invalid JSON metadata; its labels are ignored",
                    row.stream
                ));
            }
            continue;
        }
        if let Some(label) = &row.stream_label {
            by_label.entry(label).or_default().insert(&row.stream);
        }
    }
    let known: BTreeSet<&str> = streams.iter().map(|s| s.id.as_str()).collect();
    let mut stream_ids: BTreeMap<&str, &str> = BTreeMap::new();
    for (label, targets) in &by_label {
        let targets: Vec<&str> = targets
            .iter()
            .copied()
            .filter(|t| known.contains(t))
            .collect();
        match targets.as_slice() {
            [one] => {
                stream_ids.insert(label, one);
            }
            [] => {}
            many => out.warnings.push(format!(
                "Label streamId {label:?} is used by streams {}; it names none of them",
                many.join(", ")
            )),
        }
    }
    let names: BTreeMap<&str, &str> = streams
        .iter()
        .filter(|s| !s.name.is_empty())
        .map(|s| (s.name.as_str(), s.id.as_str()))
        .collect();
    let lookup = |label: &str| -> Option<String> {
        stream_ids
            .get(label)
            .or_else(|| names.get(label))
            .copied()
            .or_else(|| known.get(label).copied())
            .map(str::to_string)
    };
    for s in streams.iter().filter(|s| s.monitored) {
        out.aliases.insert(s.id.clone(), s.id.clone());
    }
    for (name, id) in &names {
        out.aliases
            .entry(name.to_string())
            .or_insert(id.to_string());
    }
    // A streamId wins over a name, as in `lookup`.
    for (label, id) in &stream_ids {
        out.aliases.insert(label.to_string(), id.to_string());
    }
    for row in metadata.iter().filter(|r| r.invalid_task.is_none()) {
        for (key, (kind, text)) in [
            ("dependencies", &row.dependencies),
            ("streamDependencies", &row.stream_dependencies),
        ] {
            let entries: Vec<serde_json::Value> = match kind.as_deref() {
                None | Some("null") => continue,
                Some("array") => text
                    .as_deref()
                    .and_then(|j| serde_json::from_str(j).ok())
                    .unwrap_or_default(),
                Some(other) => {
                    out.warnings.push(format!(
                        "Stream {} has {key} that are not a list ({other}); treated as none",
                        row.stream
                    ));
                    continue;
                }
            };
            for entry in entries {
                let label = match entry {
                    serde_json::Value::String(s) if !s.is_empty() => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    other => {
                        out.warnings.push(format!(
                            "Stream {} lists a {key} entry that names no stream: {other}; ignored",
                            row.stream
                        ));
                        continue;
                    }
                };
                match lookup(&label) {
                    Some(target) if target == row.stream => {}
                    Some(target) => {
                        let deps = out.dependencies.entry(row.stream.clone()).or_default();
                        if !deps.contains(&target) {
                            deps.push(target);
                        }
                    }
                    None => {
                        let unknown = out.unknown.entry(row.stream.clone()).or_default();
                        if !unknown.contains(&label) {
                            out.warnings.push(format!(
                                "Stream {} depends on {label:?}, which names no stream; it waits \
                                 until a stream has that streamId, name or id",
                                row.stream
                            ));
                            unknown.push(label);
                        }
                    }
                }
            }
        }
    }
    out
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
            claimed_by TEXT, claimed_at TEXT, priority INTEGER NOT NULL DEFAULT 2, metadata TEXT,
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

    fn tc_of(read: &StreamsRead) -> &TcProject {
        read.tc.as_ref().expect("a tc read has tc facts")
    }

    #[test]
    fn labels_aliases_and_worktrees() {
        let (_dir, path) = fixture(
            r#"INSERT INTO streams (id, name, status, worktree_path) VALUES
                 (1, 'backend', 'active', '.worktrees/1'), (2, 'frontend', 'active', NULL),
                 (3, 'docs', 'active', ''), (4, 'ops', 'archived', NULL), (5, 'qa', 'active', NULL);
               INSERT INTO tasks (id, stream_id, title, status, metadata) VALUES
                 (10, 1, 'a', 'pending', '{"streamId":"Stream-A"}'),
                 (11, 1, 'b', 'pending', '{"streamId":"Stream-A","dependencies":[]}'),
                 (20, 2, 'c', 'pending', '{"streamId":"Stream-B","dependencies":["Stream-A","docs"]}'),
                 (30, 3, 'd', 'pending', '{"streamId":"Stream-C","streamDependencies":["5", "Stream-X", "Stream-C"]}'),
                 (31, 3, 'e', 'pending', '{not json'),
                 (40, 4, 'f', 'pending', '{"streamId":"Stream-D"}'),
                 (50, 5, 'g', 'pending', '{"streamId":"Stream-Q","dependencies":"Stream-A"}'),
                 (51, 5, 'h', 'pending', '{"dependencies":["Stream-D"]}');"#,
        );
        let (_, read) = read(&path, "ws", Duration::from_secs(1)).unwrap();
        let tc = tc_of(&read);
        let backend = &tc.streams["1"];
        assert_eq!(backend.worktree_path.as_deref(), Some(".worktrees/1"));
        assert_eq!(backend.aliases, ["Stream-A", "backend"]);
        assert!(
            tc.streams["3"].worktree_path.is_none(),
            "empty path is no path"
        );
        let frontend = &tc.streams["2"];
        assert_eq!(frontend.label_dependencies, ["1", "3"]);
        let record = |id: &str| read.streams.iter().find(|s| s.raw_id == id).unwrap();
        assert_eq!(
            record("2").dependencies,
            ["1", "3"],
            "labels are dependencies"
        );
        let docs = &tc.streams["3"];
        assert_eq!(docs.label_dependencies, ["5"], "numeric id; self ignored");
        assert_eq!(docs.unknown_labels, ["Stream-X"]);
        assert!(!docs.ready, "an unknown label keeps the stream waiting");
        assert!(
            tc.streams["5"].label_dependencies.is_empty(),
            "a label naming an archived stream is dropped"
        );
        assert!(tc.streams["5"].unknown_labels.is_empty());
        assert_eq!(tc.resolve("Stream-B"), Some("2"));
        assert_eq!(tc.resolve("frontend"), Some("2"));
        assert_eq!(tc.resolve("2"), Some("2"));
        assert_eq!(
            tc.resolve("Stream-D"),
            None,
            "archived streams are not addressable"
        );
        assert_eq!(tc.resolve("nope"), None);
        let warnings = read.warnings.join("\n");
        assert!(
            warnings.contains("Task 31 of stream 3 has invalid JSON"),
            "{warnings}"
        );
        assert!(
            warnings.contains("\"Stream-X\", which names no stream"),
            "{warnings}"
        );
        assert!(
            warnings.contains("Stream 5 has dependencies that are not a list"),
            "{warnings}"
        );
    }

    #[test]
    fn an_alias_two_streams_use_names_neither() {
        let (_dir, path) = fixture(
            r#"INSERT INTO streams (id, name) VALUES (1, 'one'), (2, 'two'), (3, 'three');
               INSERT INTO tasks (id, stream_id, title, status, metadata) VALUES
                 (10, 1, 'a', 'pending', '{"streamId":"Shared"}'),
                 (20, 2, 'b', 'pending', '{"streamId":"Shared"}'),
                 (30, 3, 'c', 'pending', '{"dependencies":["Shared"]}');"#,
        );
        let (_, read) = read(&path, "ws", Duration::from_secs(1)).unwrap();
        let tc = tc_of(&read);
        assert_eq!(tc.resolve("Shared"), None);
        assert_eq!(tc.streams["3"].unknown_labels, ["Shared"]);
        assert!(read
            .warnings
            .iter()
            .any(|w| w.contains("\"Shared\" is used by streams 1, 2")));
    }

    #[test]
    fn readiness_and_all_blocked_table() {
        let (_dir, path) = fixture(
            r#"INSERT INTO streams (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e'), (6, 'f'), (7, 'g');
               INSERT INTO tasks (id, stream_id, title, status, priority, metadata) VALUES
                 -- 1: complete
                 (10, 1, 't', 'completed', 2, '{"streamId":"A"}'),
                 -- 2: all open tasks blocked
                 (20, 2, 't', 'blocked', 2, NULL), (21, 2, 't', 'completed', 2, NULL),
                 -- 3: pending waits on an open task of stream 2; the other pending is free
                 (30, 3, 't', 'pending', 2, NULL), (31, 3, 't', 'pending', 1, NULL), (32, 3, 't', 'pending', 2, NULL),
                 -- 4: pending whose dependency is done, label names complete stream A
                 (40, 4, 't', 'pending', 2, '{"dependencies":["A"]}'),
                 -- 5: ready task, but the label names stream 2 which is open
                 (50, 5, 't', 'pending', 2, '{"dependencies":["b"]}'),
                 -- 6: only in_progress work: nothing to hand out
                 (60, 6, 't', 'in_progress', 2, NULL),
                 -- 7: dependency on a cancelled task is not completed
                 (70, 7, 't', 'pending', 2, NULL), (71, 7, 't', 'cancelled', 2, NULL);
               INSERT INTO task_dependencies VALUES (30, 20), (40, 10), (70, 71);"#,
        );
        let (_, read) = read(&path, "ws", Duration::from_secs(1)).unwrap();
        let tc = tc_of(&read);
        let cases: [(&str, bool, Option<i64>, bool); 7] = [
            ("1", false, None, false),
            ("2", true, None, false),
            ("3", false, Some(31), true),
            ("4", false, Some(40), true),
            ("5", false, Some(50), false),
            ("6", false, None, false),
            ("7", false, None, false),
        ];
        for (id, blocked, next, ready) in cases {
            let s = &tc.streams[id];
            assert_eq!(
                (s.all_open_blocked, s.next_ready_task, s.ready),
                (blocked, next, ready),
                "stream {id}"
            );
        }
    }

    #[test]
    fn streams_of_tasks_maps_task_ids_in_one_query() {
        let (_dir, path) = fixture(
            "INSERT INTO streams (id, name) VALUES (1, 'a'), (2, 'b');
             INSERT INTO tasks (id, stream_id, title) VALUES (10, 1, 't'), (20, 2, 't'), (30, NULL, 't');",
        );
        let found = streams_of_tasks(&path, &[10, 20, 30, 99], Duration::from_secs(1)).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[&10], "1");
        assert_eq!(found[&20], "2");
        assert!(streams_of_tasks(&path, &[], Duration::from_secs(1))
            .unwrap()
            .is_empty());
    }
}
