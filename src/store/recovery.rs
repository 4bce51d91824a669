//! Task recovery (SPEC 3.7), the one place that writes a task database: tasks
//! left `in_progress` by a worker that is gone go back to `pending`, so the
//! next worker picks them up. Every status change is checked against
//! [`LEGAL`], the one table of legal task moves. All changes of one recovery
//! happen in one `BEGIN IMMEDIATE` transaction on a read-write connection
//! with a busy timeout; a database still busy after that is retried with a
//! bounded exponential backoff and is never left half-written (SQLite rolls
//! the transaction back). A dry run opens the database read-only.
//!
//! Which streams qualify (dead or gave up) is decided by the caller; this
//! module only knows tasks. `updated_at` is written in the format the rows of
//! each schema already use: `2026-01-13T10:30:00.000Z` (UTC, milliseconds,
//! as JavaScript's `toISOString`) in the legacy schema, `2026-01-13 10:30:00`
//! (UTC, SQLite's `datetime('now')`) in the tc schema.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{classify, column_text, open_read_only, SchemaKind, StoreError, TaskSource};

/// Attempts of one recovery while the database stays busy.
pub const MAX_ATTEMPTS: u32 = 5;

/// A task status, as the `CHECK` constraint of both schemas spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskStatus {
    Pending,
    InProgress,
    Blocked,
    Completed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Pending,
        TaskStatus::InProgress,
        TaskStatus::Blocked,
        TaskStatus::Completed,
        TaskStatus::Cancelled,
    ];

    pub fn parse(text: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::Blocked => "blocked",
            TaskStatus::Completed => "completed",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

/// Every legal move between different task statuses. Work goes pending →
/// in_progress → completed / blocked / cancelled; a blocked task is taken up
/// again, put back in the queue or dropped; a pending task may be blocked or
/// dropped before anyone starts it. Recovery is the one backward move,
/// in_progress → pending. Completed and cancelled are final: nothing here
/// reopens finished work.
pub const LEGAL: &[(TaskStatus, &[TaskStatus])] = {
    use TaskStatus::*;
    &[
        (Pending, &[InProgress, Blocked, Cancelled]),
        (InProgress, &[Completed, Blocked, Cancelled, Pending]),
        (Blocked, &[InProgress, Pending, Cancelled]),
        (Completed, &[]),
        (Cancelled, &[]),
    ]
};

/// Whether `from → to` is a legal move. Writing the status a task already
/// has changes nothing and is not a move.
pub fn is_legal(from: TaskStatus, to: TaskStatus) -> bool {
    from != to && LEGAL.iter().any(|(f, tos)| *f == from && tos.contains(&to))
}

/// A task's `updated_at` read as UTC: RFC 3339 with a zone, or the zoneless
/// `YYYY-MM-DD[T ]HH:MM:SS[.fff]` that SQLite itself treats as UTC.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|fmt| NaiveDateTime::parse_from_str(text, fmt).ok())
        .map(|naive| naive.and_utc())
}

/// What the age of a task's last update says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staleness {
    /// Not updated for this many seconds, more than the timeout.
    Stale {
        idle_secs: u64,
    },
    Fresh,
    /// No readable `updated_at`: the task is left alone, since its age is unknown.
    Undated,
}

pub fn staleness(updated_at: Option<&str>, now: DateTime<Utc>, older_than: Duration) -> Staleness {
    let Some(at) = updated_at.and_then(parse_timestamp) else {
        return Staleness::Undated;
    };
    let idle = (now - at).num_milliseconds();
    if idle > 0 && idle as u128 > older_than.as_millis() {
        Staleness::Stale {
            idle_secs: idle as u64 / 1000,
        }
    } else {
        Staleness::Fresh
    }
}

/// `updated_at` as the rows of `schema` write it.
pub fn format_timestamp(schema: SchemaKind, at: DateTime<Utc>) -> String {
    match schema {
        SchemaKind::Legacy => at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        SchemaKind::Tc => at.format("%Y-%m-%d %H:%M:%S").to_string(),
    }
}

/// The pause before attempt `attempt + 1` (0-based) of a busy recovery:
/// 100 ms doubling, at most 2 s. Each attempt also waits the busy timeout
/// inside SQLite first, so the whole is bounded and short.
pub fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(5)).min(2000))
}

/// What to recover.
#[derive(Debug, Clone)]
pub struct RecoveryRequest<'a> {
    pub source: &'a TaskSource,
    /// The active initiative: the legacy schema's scope (ignored by tc).
    pub initiative_id: &'a str,
    /// Stream ids whose tasks may be recovered.
    pub streams: &'a [String],
    pub older_than: Duration,
    pub busy_timeout: Duration,
    /// List only; write nothing.
    pub dry_run: bool,
}

/// One task moved (or, in a dry run, that would be moved) back to pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredTask {
    pub id: String,
    pub stream: String,
    pub title: String,
    /// Seconds since its last update.
    pub idle_secs: u64,
    /// `updated_at` before recovery.
    pub was_updated_at: String,
    /// `updated_at` written (empty in a dry run).
    pub updated_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    pub tasks: Vec<RecoveredTask>,
    /// Tasks of those streams left `in_progress` because their `updated_at`
    /// cannot be read: their ids.
    pub undated: Vec<String>,
}

/// Moves the stale `in_progress` tasks of the given streams back to
/// `pending` (or lists them, in a dry run). `now` is the clock reading the
/// ages are measured against and `updated_at` is set to.
pub fn recover_tasks(
    request: &RecoveryRequest<'_>,
    now: DateTime<Utc>,
) -> Result<Recovery, StoreError> {
    let path = request.source.tasks_db.as_path();
    if request.streams.is_empty() {
        return Ok(Recovery::default());
    }
    if request.dry_run {
        let conn = open_read_only(path, request.busy_timeout)?;
        return with_retries(path, request.busy_timeout, || {
            let candidates = candidates(&conn, request, now)?;
            Ok(candidates.into_recovery())
        });
    }
    let mut conn = open_read_write(path, request.busy_timeout)?;
    with_retries(path, request.busy_timeout, || {
        // IMMEDIATE takes the write lock before reading: nothing can change
        // the candidates between the read and the update, and no deadlock
        // can arise from upgrading a read lock.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = candidates(&tx, request, now)?;
        let columns = found.columns.clone();
        let stamp = format_timestamp(request.source.schema, now);
        // A claim names the worker that holds the task (tc); the worker is gone.
        let release_claim = ["claimed_by", "claimed_at"]
            .iter()
            .all(|c| columns.iter().any(|have| have == c));
        let sql = if release_claim {
            "UPDATE tasks SET status = ?1, updated_at = ?2, claimed_by = NULL, claimed_at = NULL \
             WHERE id = ?3 AND status = ?4"
        } else {
            "UPDATE tasks SET status = ?1, updated_at = ?2 WHERE id = ?3 AND status = ?4"
        };
        let mut recovery = Recovery {
            tasks: Vec::new(),
            undated: found.undated.clone(),
        };
        {
            let mut update = tx.prepare(sql)?;
            for candidate in &found.stale {
                let to = TaskStatus::Pending;
                if !is_legal(candidate.from, to) {
                    // Only in_progress tasks are selected; the table must agree.
                    continue;
                }
                let changed = update.execute(rusqlite::params![
                    to.as_str(),
                    stamp,
                    candidate.key,
                    candidate.from.as_str()
                ])?;
                if changed == 1 {
                    let mut task = candidate.task.clone();
                    task.updated_at = stamp.clone();
                    recovery.tasks.push(task);
                }
            }
        }
        tx.commit()?;
        Ok(recovery)
    })
}

fn open_read_write(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    // Reuse the read-only open for its checks (missing, not a file, not
    // readable) so both paths report the same errors; never create a file.
    drop(open_read_only(path, busy_timeout)?);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(path, flags).map_err(|e| classify(path, e, busy_timeout))?;
    conn.busy_timeout(busy_timeout)
        .map_err(|e| classify(path, e, busy_timeout))?;
    Ok(conn)
}

fn is_busy(err: &rusqlite::Error) -> bool {
    use rusqlite::ffi::ErrorCode;
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked)
    )
}

/// Runs `attempt` until it succeeds, fails for another reason than a busy
/// database, or [`MAX_ATTEMPTS`] are spent.
fn with_retries<T>(
    path: &Path,
    busy_timeout: Duration,
    mut attempt: impl FnMut() -> Result<T, rusqlite::Error>,
) -> Result<T, StoreError> {
    let mut tries = 0;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(e) if is_busy(&e) && tries + 1 < MAX_ATTEMPTS => {
                std::thread::sleep(retry_delay(tries));
                tries += 1;
            }
            Err(e) => return Err(classify(path, e, busy_timeout)),
        }
    }
}

struct Candidate {
    /// The id as stored (text or integer), for the update.
    key: Value,
    from: TaskStatus,
    task: RecoveredTask,
}

struct Candidates {
    columns: Vec<String>,
    stale: Vec<Candidate>,
    undated: Vec<String>,
}

impl Candidates {
    fn into_recovery(self) -> Recovery {
        Recovery {
            tasks: self.stale.into_iter().map(|c| c.task).collect(),
            undated: self.undated,
        }
    }
}

/// The `in_progress` tasks of the requested streams (one query), sorted into
/// stale and undated ones.
fn candidates(
    conn: &Connection,
    request: &RecoveryRequest<'_>,
    now: DateTime<Utc>,
) -> Result<Candidates, rusqlite::Error> {
    let columns: Vec<String> = conn
        .prepare("PRAGMA table_info(tasks)")?
        .query_map([], |row| row.get::<_, String>(1))?
        .collect::<Result<_, _>>()?;
    let has = |c: &str| columns.iter().any(|have| have == c);
    let archived = if has("archived") {
        "AND COALESCE(t.archived, 0) = 0"
    } else {
        ""
    };
    let title = if has("title") { "t.title" } else { "NULL" };
    // The same guarded JSON access as the stream reader: one task with bad
    // metadata must not fail the query.
    let sql = match request.source.schema {
        SchemaKind::Legacy => format!(
            "SELECT t.id, CASE WHEN json_valid(t.metadata) THEN json_extract(t.metadata, '$.streamId') END, \
                    t.status, t.updated_at, {title} \
             FROM tasks t JOIN prds p ON p.id = t.prd_id \
             WHERE p.initiative_id = ?1 AND t.status = 'in_progress' {archived}"
        ),
        SchemaKind::Tc => format!(
            "SELECT t.id, t.stream_id, t.status, t.updated_at, {title} \
             FROM tasks t \
             WHERE t.status = 'in_progress' AND t.stream_id IS NOT NULL {archived}"
        ),
    };
    let wanted: BTreeSet<&str> = request.streams.iter().map(String::as_str).collect();
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = match request.source.schema {
        SchemaKind::Legacy => stmt.query([request.initiative_id])?,
        SchemaKind::Tc => stmt.query([])?,
    };
    let mut found = Candidates {
        columns: columns.clone(),
        stale: Vec::new(),
        undated: Vec::new(),
    };
    while let Some(row) = rows.next()? {
        let key: Value = row.get(0)?;
        let stream = column_text(row, 1)?.unwrap_or_default();
        if !wanted.contains(stream.as_str()) {
            continue;
        }
        let Some(from) = TaskStatus::parse(&column_text(row, 2)?.unwrap_or_default()) else {
            continue;
        };
        let updated = column_text(row, 3)?;
        let id = column_text(row, 0)?.unwrap_or_default();
        match staleness(updated.as_deref(), now, request.older_than) {
            Staleness::Fresh => {}
            Staleness::Undated => found.undated.push(id),
            Staleness::Stale { idle_secs } => found.stale.push(Candidate {
                key,
                from,
                task: RecoveredTask {
                    id,
                    stream,
                    title: column_text(row, 4)?.unwrap_or_default(),
                    idle_secs,
                    was_updated_at: updated.unwrap_or_default(),
                    updated_at: String::new(),
                },
            }),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The full from × to table; `true` where the move is legal.
    #[test]
    fn transitions_table() {
        use TaskStatus::*;
        #[rustfmt::skip]
        let table: [(TaskStatus, [bool; 5]); 5] = [
            //             pending  in_progress  blocked  completed  cancelled
            (Pending,     [false,   true,        true,    false,     true ]),
            (InProgress,  [true,    false,       true,    true,      true ]),
            (Blocked,     [true,    true,        false,   false,     true ]),
            (Completed,   [false,   false,       false,   false,     false]),
            (Cancelled,   [false,   false,       false,   false,     false]),
        ];
        assert_eq!(LEGAL.len(), TaskStatus::ALL.len(), "every status has a row");
        for (from, row) in table {
            for (to, want) in TaskStatus::ALL.into_iter().zip(row) {
                assert_eq!(is_legal(from, to), want, "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn statuses_round_trip_and_unknown_ones_are_refused() {
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(s.as_str()), Some(s));
        }
        for bad in ["", "done", "IN_PROGRESS", "in progress"] {
            assert_eq!(TaskStatus::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn timestamps_of_both_schemas_parse_as_utc() {
        let want = Utc.with_ymd_and_hms(2026, 1, 13, 10, 30, 0).unwrap();
        let cases = [
            ("2026-01-13T10:30:00.000Z", Some(want)),
            ("2026-01-13T10:30:00Z", Some(want)),
            ("2026-01-13T11:30:00+01:00", Some(want)),
            ("2026-01-13T10:30:00", Some(want)),
            ("2026-01-13 10:30:00", Some(want)),
            ("2026-01-13 10:30:00.000", Some(want)),
            (" 2026-01-13 10:30:00 ", Some(want)),
            ("", None),
            ("yesterday", None),
            ("2026-13-45 10:30:00", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_timestamp(text), expected, "{text:?}");
        }
    }

    #[test]
    fn staleness_table() {
        let now = Utc.with_ymd_and_hms(2026, 1, 13, 10, 30, 0).unwrap();
        let five_min = Duration::from_secs(300);
        let cases: [(Option<&str>, Staleness); 7] = [
            (
                Some("2026-01-13T10:00:00.000Z"),
                Staleness::Stale { idle_secs: 1800 },
            ),
            (
                Some("2026-01-13 10:24:59"),
                Staleness::Stale { idle_secs: 301 },
            ),
            // Exactly the timeout is not older than it.
            (Some("2026-01-13 10:25:00"), Staleness::Fresh),
            (Some("2026-01-13T10:29:00.000Z"), Staleness::Fresh),
            // A clock ahead of ours is fresh, never negative.
            (Some("2026-01-13T11:00:00.000Z"), Staleness::Fresh),
            (Some("not a time"), Staleness::Undated),
            (None, Staleness::Undated),
        ];
        for (updated, want) in cases {
            assert_eq!(staleness(updated, now, five_min), want, "{updated:?}");
        }
    }

    #[test]
    fn written_timestamps_match_each_schema_and_read_back() {
        let at = Utc.timestamp_millis_opt(1_768_300_200_123).unwrap();
        let legacy = format_timestamp(SchemaKind::Legacy, at);
        let tc = format_timestamp(SchemaKind::Tc, at);
        assert_eq!(legacy, "2026-01-13T10:30:00.123Z");
        assert_eq!(tc, "2026-01-13 10:30:00");
        assert_eq!(parse_timestamp(&legacy), Some(at));
        assert_eq!(
            parse_timestamp(&tc),
            Some(Utc.with_ymd_and_hms(2026, 1, 13, 10, 30, 0).unwrap())
        );
    }

    /// A database locked by another connection: every attempt waits the busy
    /// timeout, the attempts are spaced by the backoff, then the error says
    /// locked and nothing has changed; once the lock is gone it works.
    #[test]
    fn a_locked_database_is_retried_then_reported_and_left_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "CREATE TABLE streams (id INTEGER PRIMARY KEY, name TEXT, status TEXT);
                 CREATE TABLE tasks (id INTEGER PRIMARY KEY, stream_id INTEGER, title TEXT,
                                     status TEXT, updated_at TEXT);
                 INSERT INTO tasks VALUES (1, 7, 't', 'in_progress', '2024-05-01 10:00:00');",
            )
            .unwrap();
        let source = TaskSource {
            schema: SchemaKind::Tc,
            tasks_db: path.clone(),
        };
        let streams = vec!["7".to_string()];
        let request = RecoveryRequest {
            source: &source,
            initiative_id: "ws",
            streams: &streams,
            older_than: Duration::from_secs(300),
            busy_timeout: Duration::from_millis(20),
            dry_run: false,
        };
        writer.execute_batch("BEGIN EXCLUSIVE;").unwrap();
        let started = std::time::Instant::now();
        let err = recover_tasks(&request, Utc::now()).unwrap_err();
        let spent = started.elapsed();
        assert!(matches!(err, StoreError::Busy { .. }), "{err}");
        let backoff: Duration = (0..MAX_ATTEMPTS - 1).map(retry_delay).sum();
        assert!(spent >= backoff, "no retries: {spent:?}");
        writer.execute_batch("ROLLBACK;").unwrap();
        let status: String = writer
            .query_row("SELECT status FROM tasks WHERE id = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(status, "in_progress");

        let done = recover_tasks(&request, Utc::now()).unwrap();
        assert_eq!(done.tasks.len(), 1);
        assert_eq!(done.tasks[0].id, "1");
        let status: String = writer
            .query_row("SELECT status FROM tasks WHERE id = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(status, "pending");
    }

    #[test]
    fn retry_delays_grow_and_are_capped() {
        let delays: Vec<u64> = (0..8).map(|a| retry_delay(a).as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        let total: Duration = (0..MAX_ATTEMPTS - 1).map(retry_delay).sum();
        assert!(total <= Duration::from_secs(4), "{total:?}");
    }
}
