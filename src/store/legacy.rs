//! The Task Copilot / Memory Copilot schema of the original kit
//! (`~/.claude/tasks/<ws>/tasks.db`, `~/.claude/memory/<ws>/memory.db`):
//! streams live in the tasks' JSON metadata.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::{
    classify, column_str, open_read_only, require_columns, Initiative, Progress, StoreError,
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

// The metadata is parsed once per task, here, rather than by a JSON function
// per field in SQL (each of which parses it again). Malformed metadata of
// one task must not fail the whole read, as it did in the original.
const STREAM_TASKS_SQL: &str = "\
SELECT t.id, t.status, t.metadata, t.updated_at
FROM tasks t JOIN prds p ON p.id = t.prd_id
WHERE p.initiative_id = ?1 {archived}
  AND t.metadata IS NOT NULL AND t.metadata <> ''";

/// The fields of a task's metadata a stream is made of (any JSON value, as
/// SQLite's JSON functions took them).
#[derive(serde::Deserialize)]
struct Metadata {
    #[serde(rename = "streamId", default)]
    stream_id: Option<serde_json::Value>,
    #[serde(rename = "streamName", default)]
    stream_name: Option<serde_json::Value>,
    #[serde(default)]
    dependencies: Option<serde_json::Value>,
}

/// A metadata value as SQLite's `json_extract` would give it as text.
fn as_text(v: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(u8::from(*b).to_string()),
        other => Some(other.to_string()),
    }
}

/// SQLite's `json_type` name of a value.
fn json_type(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(true) => "true",
        Value::Bool(false) => "false",
        Value::Number(n) if n.is_f64() => "real",
        Value::Number(_) => "integer",
        Value::String(_) => "text",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// What a task's metadata says of its stream: `Err` for metadata that is
/// no JSON object, `Ok(None)` for a task of no stream.
fn parse_metadata(text: &str) -> Result<Option<Metadata>, ()> {
    if !text.trim_start().starts_with('{') {
        // Valid JSON that is no object has no streamId: no stream's task.
        return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => Ok(None),
            Err(_) => Err(()),
        };
    }
    let meta: Metadata = serde_json::from_str(text).map_err(|_| ())?;
    Ok(meta
        .stream_id
        .as_ref()
        .is_some_and(|v| !v.is_null())
        .then_some(meta))
}

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
        // Borrowed from SQLite's row: a string is copied only when kept.
        let text = |i: usize| column_str(row, i).map_err(|e| classify(path, e, busy_timeout));
        let metadata = text(2)?.unwrap_or_default();
        let meta = match parse_metadata(&metadata) {
            Ok(Some(meta)) => meta,
            Ok(None) => continue,
            Err(()) => {
                let task_id = text(0)?.unwrap_or_default();
                warnings.push(format!(
                    "Task {task_id} has invalid JSON metadata; it belongs to no stream"
                ));
                continue;
            }
        };
        let stream_id = meta
            .stream_id
            .as_ref()
            .and_then(as_text)
            .unwrap_or_default();
        if !by_id.contains_key(&stream_id) {
            by_id.insert(
                stream_id.clone(),
                StreamRecord {
                    raw_id: stream_id.clone(),
                    name: String::new(),
                    dependencies: Vec::new(),
                    progress: Progress::default(),
                    last_update: None,
                },
            );
        }
        let record = by_id.get_mut(&stream_id).expect("just made");
        record.progress.add(&text(1)?.unwrap_or_default());
        if let Ok(Some(updated)) = column_str(row, 3) {
            if record.last_update.as_deref().is_none_or(|u| *updated > *u) {
                record.last_update = Some(updated.into_owned());
            }
        }
        if let Some(name) = meta.stream_name.as_ref().and_then(as_text) {
            if !name.is_empty() && (record.name.is_empty() || name < record.name) {
                record.name = name;
            }
        }
        match meta.dependencies {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(deps)) => {
                for dep in deps {
                    match dep {
                        serde_json::Value::String(s) if !s.is_empty() => {
                            if !record.dependencies.contains(&s) {
                                record.dependencies.push(s);
                            }
                        }
                        other => {
                            let task_id = text(0)?.unwrap_or_default();
                            warnings.push(format!(
                            "Task {task_id} of stream {stream_id} lists a dependency that is not a stream id: {other}; ignored"
                        ))
                        }
                    }
                }
            }
            Some(other) => {
                let task_id = text(0)?.unwrap_or_default();
                let kind = json_type(&other);
                warnings.push(format!(
                "Task {task_id} of stream {stream_id} has dependencies that are not a list ({kind}); treated as none"
            ))
            }
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

#[cfg(test)]
mod metadata_tests {
    use super::*;

    #[test]
    fn metadata_is_read_as_sqlite_json_functions_read_it() {
        let id = |text: &str| match parse_metadata(text) {
            Ok(Some(m)) => Ok(m.stream_id.as_ref().and_then(as_text)),
            Ok(None) => Ok(None),
            Err(()) => Err(()),
        };
        assert_eq!(
            id(r#"{"streamId":"Stream-A"}"#),
            Ok(Some("Stream-A".into()))
        );
        assert_eq!(id(r#"{"streamId":7}"#), Ok(Some("7".into())));
        assert_eq!(id(r#"{"streamId":true}"#), Ok(Some("1".into())));
        assert_eq!(id(r#"{"streamId":null}"#), Ok(None));
        assert_eq!(id(r#"{"other":1}"#), Ok(None));
        assert_eq!(id(r#"[1,2]"#), Ok(None));
        assert_eq!(id(r#""text""#), Ok(None));
        assert_eq!(id(r#"{"streamId":"#), Err(()));
        assert_eq!(id("not json"), Err(()));
        let types: Vec<&str> = [r#"null"#, "true", "false", "1", "1.5", r#""s""#, "[]", "{}"]
            .iter()
            .map(|t| json_type(&serde_json::from_str(t).unwrap()))
            .collect();
        assert_eq!(
            types,
            ["null", "true", "false", "integer", "real", "text", "array", "object"]
        );
    }
}
