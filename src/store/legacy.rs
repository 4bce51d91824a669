//! The Task Copilot / Memory Copilot schema of the original kit
//! (`~/.claude/tasks/<ws>/tasks.db`, `~/.claude/memory/<ws>/memory.db`):
//! streams live in the tasks' JSON metadata.

use rusqlite::types::ValueRef;
use std::borrow::Cow;
use std::hash::{BuildHasher, RandomState};
use std::path::Path;
use std::time::Duration;

use super::metadata::{json_type, parse_metadata, parse_metadata_bytes, Field};
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

/// Sorts the records by id, moving each record once: the sort runs over
/// their positions, then the records follow their positions' cycles (sorting
/// the 120-byte records themselves moved each about log n times).
fn sort_by_id(streams: &mut [StreamRecord]) {
    let mut order: Vec<u32> = (0..streams.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| streams[a as usize].raw_id.cmp(&streams[b as usize].raw_id));
    // `order[i]` is the record that belongs at `i`.
    for start in 0..order.len() {
        let mut at = start;
        loop {
            let from = order[at] as usize;
            order[at] = at as u32;
            if from == start {
                break;
            }
            streams.swap(at, from);
            at = from;
        }
    }
}

/// All streams of the initiative with their progress, in one query.
pub fn read_streams(
    path: &Path,
    initiative_id: &str,
    busy_timeout: Duration,
) -> Result<StreamsRead, StoreError> {
    read_streams_on(None, path, initiative_id, busy_timeout)
}

/// [`read_streams`] through `conn` when the database at `path` is open
/// already.
pub fn read_streams_on(
    conn: Option<rusqlite::Connection>,
    path: &Path,
    initiative_id: &str,
    busy_timeout: Duration,
) -> Result<StreamsRead, StoreError> {
    let conn = match conn {
        Some(conn) => conn,
        None => open_read_only(path, busy_timeout)?,
    };
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

    // Streams in the order first seen, found by id; a stream's tasks mostly
    // come one after another, so the last one found is tried first. The
    // index holds positions, not ids: each id is compared where it is kept
    // (a map keyed by id held a second copy of every one). Each position
    // keeps its id's hash, so the table grows without hashing ids again.
    let mut streams: Vec<StreamRecord> = Vec::new();
    let hasher = RandomState::new();
    let mut index: hashbrown::HashTable<(u64, usize)> = hashbrown::HashTable::new();
    let mut last: Option<usize> = None;
    let mut warnings = Vec::new();
    while let Some(row) = rows.next().map_err(|e| classify(path, e, busy_timeout))? {
        // Borrowed from SQLite's row: a string is copied only when kept.
        let text = |i: usize| column_str(row, i).map_err(|e| classify(path, e, busy_timeout));
        let stored = |i: usize| row.get_ref(i).map_err(|e| classify(path, e, busy_timeout));
        let metadata: Cow<[u8]> = match stored(2)? {
            ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Cow::Borrowed(bytes),
            _ => Cow::Owned(text(2)?.unwrap_or_default().into_owned().into_bytes()),
        };
        let repaired;
        let parsed = match parse_metadata_bytes(&metadata) {
            Err(()) if std::str::from_utf8(&metadata).is_err() => {
                repaired = String::from_utf8_lossy(&metadata).into_owned();
                parse_metadata(&repaired)
            }
            parsed => parsed,
        };
        let meta = match parsed {
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
            .and_then(Field::text)
            .unwrap_or_default();
        let at = match last.filter(|&i| streams[i].raw_id == *stream_id) {
            Some(i) => i,
            None => {
                let hash = hasher.hash_one(stream_id.as_ref());
                match index.find(hash, |&(_, i)| streams[i].raw_id == *stream_id) {
                    Some(&(_, i)) => i,
                    None => {
                        streams.push(StreamRecord {
                            raw_id: stream_id.to_string(),
                            name: String::new(),
                            dependencies: Vec::new(),
                            progress: Progress::default(),
                            last_update: None,
                        });
                        let at = streams.len() - 1;
                        index.insert_unique(hash, (hash, at), |&(kept, _)| kept);
                        at
                    }
                }
            }
        };
        last = Some(at);
        let record = &mut streams[at];
        match stored(1)? {
            ValueRef::Text(status) | ValueRef::Blob(status) => record.progress.add_spelled(status),
            _ => record.progress.add(&text(1)?.unwrap_or_default()),
        }
        if let Ok(Some(updated)) = column_str(row, 3) {
            match &mut record.last_update {
                Some(u) if *updated > **u => {
                    u.clear();
                    u.push_str(&updated);
                }
                Some(_) => {}
                None => record.last_update = Some(updated.into_owned()),
            }
        }
        if let Some(name) = meta.stream_name.as_ref().and_then(Field::text) {
            if !name.is_empty() && (record.name.is_empty() || *name < *record.name) {
                record.name = name.into_owned();
            }
        }
        match &meta.dependencies {
            None | Some(Field::Null) => {}
            Some(Field::List(deps)) => {
                for dep in deps {
                    match dep {
                        Field::Text(s) if !s.is_empty() => {
                            if !record.dependencies.iter().any(|d| *d == **s) {
                                record.dependencies.push(s.to_string());
                            }
                        }
                        other => {
                            let task_id = text(0)?.unwrap_or_default();
                            let other = other.to_value();
                            warnings.push(format!(
                            "Task {task_id} of stream {stream_id} lists a dependency that is not a stream id: {other}; ignored"
                        ))
                        }
                    }
                }
            }
            Some(other) => {
                let task_id = text(0)?.unwrap_or_default();
                let kind = json_type(&other.to_value());
                warnings.push(format!(
                "Task {task_id} of stream {stream_id} has dependencies that are not a list ({kind}); treated as none"
            ))
            }
        }
    }
    // Grown by doubling, up to 6 000 records' worth of spare room: handed
    // back before the streams are resolved beside it.
    streams.shrink_to_fit();
    drop(index);
    sort_by_id(&mut streams);
    for s in &mut streams {
        if s.name.is_empty() {
            s.name = s.raw_id.clone();
        }
    }
    Ok(StreamsRead {
        streams,
        warnings,
        tc: None,
    })
}

#[cfg(test)]
mod metadata_tests {
    use super::*;

    /// A tasks database of the legacy schema's columns the read needs, with
    /// one PRD `p` of initiative `init`.
    fn tasks_db() -> (tempfile::TempDir, std::path::PathBuf, rusqlite::Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE prds (id TEXT PRIMARY KEY, initiative_id TEXT);
             CREATE TABLE tasks (id TEXT PRIMARY KEY, prd_id TEXT, status TEXT,
                                 metadata TEXT, updated_at TEXT);
             INSERT INTO prds VALUES ('p', 'init');",
        )
        .unwrap();
        (dir, path, conn)
    }

    /// Metadata is parsed from the stored bytes and checked as UTF-8 only
    /// where a string is kept; what comes out is what repairing the whole
    /// text first gave: bad bytes in a field nobody reads change nothing,
    /// bad bytes in a kept one are repaired. Statuses stored as blobs or
    /// numbers count as before.
    #[test]
    fn stored_bytes_read_as_the_repaired_text_was() {
        let (_dir, path, conn) = tasks_db();
        let metadata: [&[u8]; 7] = [
            br#"{"streamId":"plain","streamName":"Plain","dependencies":["x"]}"#,
            b"{\"streamId\":\"files-bad\",\"files\":[\"a\xff\xfeb\"]}",
            b"{\"streamId\":\"id-\xffbad\"}",
            b"{\"streamId\":\"name-bad\",\"streamName\":\"N\xed\xa0\x80\"}",
            b"{\"streamId\":\"dep-bad\",\"dependencies\":[\"d\xc3\"]}",
            b"  {\"streamId\": \"spaced\"}",
            b"{\"streamId\":\"broken\xff\", oops",
        ];
        for (i, m) in metadata.iter().enumerate() {
            conn.execute(
                "INSERT INTO tasks VALUES (?1, 'p', 'pending', CAST(?2 AS TEXT), '2024')",
                rusqlite::params![format!("t{i}"), m],
            )
            .unwrap();
        }
        // Statuses as a blob and as a number, in a stream of their own.
        conn.execute_batch(
            r#"INSERT INTO tasks VALUES ('s1', 'p', CAST('completed' AS BLOB), '{"streamId":"st"}', '1');
               INSERT INTO tasks VALUES ('s2', 'p', 7, '{"streamId":"st"}', '2');"#,
        )
        .unwrap();
        drop(conn);

        let read = read_streams(&path, "init", Duration::from_secs(1)).unwrap();
        let got: Vec<(String, String, Vec<String>)> = read
            .streams
            .iter()
            .filter(|s| s.raw_id != "st")
            .map(|s| (s.raw_id.clone(), s.name.clone(), s.dependencies.clone()))
            .collect();
        // The oracle: the whole text repaired, then parsed.
        let mut want: Vec<(String, String, Vec<String>)> = metadata
            .iter()
            .filter_map(|m| {
                let text = String::from_utf8_lossy(m).into_owned();
                let meta = parse_metadata(&text).ok()??;
                let id = meta.stream_id.as_ref()?.text()?.into_owned();
                let name = meta.stream_name.as_ref().and_then(Field::text);
                let deps = match &meta.dependencies {
                    Some(Field::List(l)) => l
                        .iter()
                        .filter_map(|d| match d {
                            Field::Text(t) => Some(t.to_string()),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                let name = name.map_or_else(|| id.clone(), |n| n.into_owned());
                Some((id, name, deps))
            })
            .collect();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(got.len(), 6, "{got:?}");
        assert!(
            got.iter().any(|(id, _, _)| id == "id-\u{fffd}bad"),
            "{got:?}"
        );
        assert!(
            got.iter().any(|(_, n, _)| n.contains('\u{fffd}')),
            "{got:?}"
        );
        assert_eq!(read.warnings.len(), 1, "{:?}", read.warnings);
        assert!(
            read.warnings[0].contains("t6 has invalid JSON"),
            "{:?}",
            read.warnings
        );

        let st = read.streams.iter().find(|s| s.raw_id == "st").unwrap();
        assert_eq!((st.progress.total, st.progress.completed), (2, 1));
    }

    /// Tasks of many streams in no order: each task counts in its own
    /// stream, found through the index of positions whatever came between.
    #[test]
    fn interleaved_tasks_each_count_in_their_own_stream() {
        let (_dir, path, mut conn) = tasks_db();
        // 400 streams of 1 to 5 tasks, shuffled by a fixed generator.
        let mut tasks: Vec<(String, &str)> = Vec::new();
        for s in 0..400 {
            for t in 0..(1 + s % 5) {
                let status = if (s + t) % 3 == 0 {
                    "completed"
                } else {
                    "pending"
                };
                tasks.push((format!("S-{s}"), status));
            }
        }
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in (1..tasks.len()).rev() {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            tasks.swap(i, (seed >> 33) as usize % (i + 1));
        }
        let mut want: std::collections::BTreeMap<String, (u32, u32)> = Default::default();
        let insert = conn.transaction().unwrap();
        for (n, (stream, status)) in tasks.iter().enumerate() {
            let counts = want.entry(stream.clone()).or_default();
            counts.0 += 1;
            counts.1 += u32::from(*status == "completed");
            insert
                .execute(
                    "INSERT INTO tasks VALUES (?1, 'p', ?2, ?3, '2024')",
                    rusqlite::params![
                        format!("t{n:05}"),
                        status,
                        format!(r#"{{"streamId":"{stream}"}}"#)
                    ],
                )
                .unwrap();
        }
        insert.commit().unwrap();
        drop(conn);

        let read = read_streams(&path, "init", Duration::from_secs(1)).unwrap();
        let got: std::collections::BTreeMap<String, (u32, u32)> = read
            .streams
            .iter()
            .map(|s| {
                let p = &s.progress;
                (s.raw_id.clone(), (p.total, p.completed))
            })
            .collect();
        assert_eq!(read.streams.len(), 400, "one record per stream");
        assert_eq!(got, want);
        assert!(
            read.streams.is_sorted_by(|a, b| a.raw_id < b.raw_id),
            "in id order"
        );
    }
}
