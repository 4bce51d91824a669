//! The Task Copilot / Memory Copilot schema of the original kit
//! (`~/.claude/tasks/<ws>/tasks.db`, `~/.claude/memory/<ws>/memory.db`):
//! streams live in the tasks' JSON metadata.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::{
    classify, column_text, open_read_only, require_columns, Initiative, Progress, StoreError,
    StreamRecord, StreamsRead,
};

/// The initiative to monitor: IN PROGRESS before BLOCKED before NOT STARTED,
/// then the newest. `None` when there is none.
pub fn read_active_initiative(
    path: &Path,
    busy_timeout: Duration,
) -> Result<Option<Initiative>, StoreError> {
    let conn = open_read_only(path, busy_timeout)?;
    require_columns(
        &conn,
        path,
        "initiatives",
        &["id", "name", "status", "created_at"],
        busy_timeout,
    )?;
    let sql = "SELECT id, name, status FROM initiatives \
               WHERE status IN ('IN PROGRESS', 'BLOCKED', 'NOT STARTED') \
               ORDER BY CASE status WHEN 'IN PROGRESS' THEN 0 WHEN 'BLOCKED' THEN 1 ELSE 2 END, created_at DESC \
               LIMIT 1";
    let mut stmt = conn
        .prepare(sql)
        .map_err(|e| classify(path, e, busy_timeout))?;
    let mut rows = stmt
        .query([])
        .map_err(|e| classify(path, e, busy_timeout))?;
    match rows.next().map_err(|e| classify(path, e, busy_timeout))? {
        None => Ok(None),
        Some(row) => {
            let get = |i| {
                row.get::<_, Option<String>>(i)
                    .map(Option::unwrap_or_default)
            };
            Ok(Some(Initiative {
                id: get(0).map_err(|e| classify(path, e, busy_timeout))?,
                name: get(1).map_err(|e| classify(path, e, busy_timeout))?,
                status: get(2).map_err(|e| classify(path, e, busy_timeout))?,
            }))
        }
    }
}

// `json_valid` guards every JSON function through CASE (which SQLite evaluates
// lazily): one task with malformed metadata must not fail the whole query, as
// it did in the original.
const STREAM_TASKS_SQL: &str = "\
SELECT t.id, t.status,
       CASE WHEN json_valid(t.metadata) THEN json_extract(t.metadata, '$.streamId') END,
       CASE WHEN json_valid(t.metadata) THEN json_extract(t.metadata, '$.streamName') END,
       CASE WHEN json_valid(t.metadata) THEN json_type(t.metadata, '$.dependencies') END,
       CASE WHEN json_valid(t.metadata) THEN json_extract(t.metadata, '$.dependencies') END,
              CASE WHEN json_valid(t.metadata) THEN 1 ELSE 0 END,
       t.updated_at
FROM tasks t JOIN prds p ON p.id = t.prd_id
WHERE p.initiative_id = ?1 {archived}
  AND CASE WHEN json_valid(t.metadata) THEN json_extract(t.metadata, '$.streamId') IS NOT NULL
           ELSE t.metadata IS NOT NULL AND t.metadata <> '' END";

/// All streams of the initiative with their progress, in one query.
pub fn read_streams(
    path: &Path,
    initiative_id: &str,
    busy_timeout: Duration,
) -> Result<StreamsRead, StoreError> {
    let conn = open_read_only(path, busy_timeout)?;
    require_columns(&conn, path, "prds", &["id", "initiative_id"], busy_timeout)?;
    let task_columns = require_columns(
        &conn,
        path,
        "tasks",
        &["id", "prd_id", "status", "metadata"],
        busy_timeout,
    )?;
    // `archived` came with a later migration; older databases have no archive.
    let archived = if task_columns.iter().any(|c| c == "archived") {
        "AND COALESCE(t.archived, 0) = 0"
    } else {
        ""
    };
    let sql = STREAM_TASKS_SQL.replace("{archived}", archived);
    let mut stmt = conn
        .prepare(&sql)
        .map_err(|e| classify(path, e, busy_timeout))?;
    let mut rows = stmt
        .query([initiative_id])
        .map_err(|e| classify(path, e, busy_timeout))?;

    let mut by_id: BTreeMap<String, StreamRecord> = BTreeMap::new();
    let mut warnings = Vec::new();
    while let Some(row) = rows.next().map_err(|e| classify(path, e, busy_timeout))? {
        let text = |i: usize| column_text(row, i).map_err(|e| classify(path, e, busy_timeout));
        let task_id = text(0)?.unwrap_or_default();
        let status = text(1)?.unwrap_or_default();
        let valid: i64 = row.get(6).map_err(|e| classify(path, e, busy_timeout))?;
        if valid == 0 {
            warnings.push(format!(
                "Task {task_id} has invalid JSON metadata; it belongs to no stream"
            ));
            continue;
        }
        let stream_id = text(2)?.unwrap_or_default();
        let stream_name = text(3)?;
        let deps_type = text(4)?;
        let deps_json = text(5)?;
        let record = by_id
            .entry(stream_id.clone())
            .or_insert_with(|| StreamRecord {
                raw_id: stream_id.clone(),
                name: String::new(),
                dependencies: Vec::new(),
                progress: Progress::default(),
                last_update: None,
            });
        record.progress.add(&status);
        if let Ok(Some(updated)) = column_text(row, 7) {
            if record.last_update.as_ref().is_none_or(|u| updated > *u) {
                record.last_update = Some(updated);
            }
        }
        if let Some(name) = stream_name.filter(|n| !n.is_empty()) {
            if record.name.is_empty() || name < record.name {
                record.name = name;
            }
        }
        match deps_type.as_deref() {
            None | Some("null") => {}
            Some("array") => {
                let parsed: Vec<serde_json::Value> =
                    deps_json.as_deref().and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default();
                for dep in parsed {
                    match dep {
                        serde_json::Value::String(s) if !s.is_empty() => {
                            if !record.dependencies.contains(&s) {
                                record.dependencies.push(s);
                            }
                        }
                        other => warnings.push(format!(
                            "Task {task_id} of stream {stream_id} lists a dependency that is not a stream id: {other}; ignored"
                        )),
                    }
                }
            }
            Some(other) => warnings.push(format!(
                "Task {task_id} of stream {stream_id} has dependencies that are not a list ({other}); treated as none"
            )),
        }
    }
    let streams = by_id
        .into_values()
        .map(|mut s| {
            if s.name.is_empty() {
                s.name = s.raw_id.clone();
            }
            s
        })
        .collect();
    Ok(StreamsRead {
        streams,
        warnings,
        tc: None,
    })
}
