//! The SQLite side of the state store: one row per stream (its record as
//! JSON) and one row of globals in `state/monitor.db` (WAL), read whole or
//! by row, written only where a row changed, under `BEGIN IMMEDIATE`.

use super::row_hashes::RowHashes;
use super::*;
use crate::supervise::stream_map::StreamMap;

/// `BEGIN IMMEDIATE`: the write lock, waited for as long as a monitor's write can take.
pub(super) fn begin(open: &Open, path: &Path) -> Result<(), StateError> {
    match open.conn.execute_batch("BEGIN IMMEDIATE") {
        Ok(()) => Ok(()),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
            Err(StateError::LockTimeout(path.into()))
        }
        Err(source) => Err(StateError::Db {
            path: path.into(),
            source: Box::new(source),
        }),
    }
}

/// Reads everything again unless nobody else wrote since the last read.
pub(super) fn refresh(o: &mut Open) -> Result<(), Unusable> {
    let version = data_version(&o.conn).map_err(classify)?;
    if o.cache.as_ref().is_some_and(|c| c.data_version == version) {
        return Ok(());
    }
    o.cache = None;
    let (state, rows) = read_all(&o.conn)?;
    o.cache = Some(Cached {
        data_version: version,
        state,
        rows,
    });
    Ok(())
}

pub(super) fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
}

/// A small page cache: the state is read whole once, then row by row.
pub(super) const PAGE_CACHE: &str = "PRAGMA cache_size = -512";

/// The page cache while the state is read on a check's second thread (see
/// `StateStore::read_ahead`).
pub(super) const READ_AHEAD_PAGE_CACHE: &str = "PRAGMA cache_size = -64";

pub(super) fn open_read_write(path: &Path) -> Result<Connection, Unusable> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(classify)?;
    conn.busy_timeout(LOCK_WAIT).map_err(classify)?;
    // WAL commits survive the monitor being killed at any moment; the
    // checkpoints are synced.
    conn.execute_batch("PRAGMA synchronous = NORMAL")
        .map_err(classify)?;
    conn.execute_batch(PAGE_CACHE).map_err(classify)?;
    check_version(&conn)?;
    Ok(conn)
}

/// The database's format version must be one this monitor knows.
pub(super) fn check_version(conn: &Connection) -> Result<(), Unusable> {
    let stored: Option<String> = conn
        .query_row("SELECT value FROM globals WHERE key = 'version'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(classify)?;
    let version: u64 = stored
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Unusable::Bad("is corrupt (no version)".into()))?;
    if version > u64::from(STATE_VERSION) {
        return Err(Unusable::Bad(format!(
            "is from a newer version ({version} > {STATE_VERSION})"
        )));
    }
    Ok(())
}

/// Every row, parsed, with the hash of each stored record.
pub(super) fn read_all(conn: &Connection) -> Result<(State, RowHashes), Unusable> {
    let mut state = read_globals(conn).map_err(|e| match e {
        GlobalsError::Db(e) => classify(e),
        GlobalsError::Json(e) => Unusable::Bad(format!("is corrupt (globals: {e})")),
    })?;
    // Sized to the rows: grown by doubling, the list of 10 000 parsed
    // records would peak at twice its size.
    let (count, id_bytes): (i64, f64) = conn
        .query_row(
            "SELECT count(*), total(length(CAST(id AS BLOB))) FROM streams",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(classify)?;
    let count = usize::try_from(count).unwrap_or(0);
    let mut streams = Vec::with_capacity(count);
    let mut rows = RowHashes::with_capacity(count, id_bytes as usize);
    let mut stmt = conn
        .prepare_cached("SELECT id, record FROM streams ORDER BY id")
        .map_err(classify)?;
    let mut found = stmt.query([]).map_err(classify)?;
    while let Some(row) = found.next().map_err(classify)? {
        let id = row
            .get_ref(0)
            .and_then(|v| Ok(v.as_str()?))
            .map_err(classify)?;
        let text = row
            .get_ref(1)
            .and_then(|v| Ok(v.as_str()?))
            .map_err(classify)?;
        let stream: StreamState = serde_json::from_str(text)
            .map_err(|e| Unusable::Bad(format!("is corrupt (stream {id}: {e})")))?;
        rows.push_read(id, row_hash(text.as_bytes()));
        streams.push((id.to_string(), stream));
    }
    // Rows come in id order: the list read is the map, without a copy.
    state.streams = StreamMap::from_sorted(streams);
    upgrade_give_ups(&mut state);
    Ok((state, rows))
}

pub(super) fn read_row(conn: &Connection, id: &str) -> rusqlite::Result<Option<StreamState>> {
    let mut stmt = conn.prepare_cached("SELECT record FROM streams WHERE id = ?1")?;
    let mut rows = stmt.query([id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let text = row.get_ref(0)?.as_str()?;
    Ok(serde_json::from_str(text).ok())
}

pub(super) fn json_error(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// One row read, changed and written back (inside a transaction).
pub(super) fn update_row<T>(
    conn: &Connection,
    id: &str,
    change: impl FnOnce(&mut StreamState, Option<u64>) -> T,
) -> rusqlite::Result<(T, StreamState, String)> {
    let breaker = read_globals(conn)
        .map_err(|e| match e {
            GlobalsError::Db(e) => e,
            GlobalsError::Json(e) => json_error(e),
        })?
        .breaker_until_ms;
    let stored: Option<String> = conn
        .query_row("SELECT record FROM streams WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    let mut stream: StreamState = match &stored {
        Some(text) => serde_json::from_str(text).map_err(json_error)?,
        None => StreamState::default(),
    };
    let result = change(&mut stream, breaker);
    let text = serde_json::to_string(&stream).map_err(json_error)?;
    if stored.as_deref() != Some(text.as_str()) {
        conn.prepare_cached("INSERT OR REPLACE INTO streams (id, record) VALUES (?1, ?2)")?
            .execute([id, text.as_str()])?;
    }
    Ok((result, stream, text))
}

/// Writes the rows whose record changed, deletes the rows of streams gone
/// and the breaker if it moved.
pub(super) fn write_changes(
    conn: &Connection,
    cached: &mut Cached,
    globals_before: &State,
) -> rusqlite::Result<()> {
    let mut text = Vec::with_capacity(256);
    // Both in id order: each stored hash is found where the last one was.
    // (A failed write leaves the cache to be dropped, hashes and all.)
    let mut stored_at = 0;
    for (id, stream) in &cached.state.streams {
        text.clear();
        serde_json::to_writer(&mut text, stream).map_err(json_error)?;
        let hash = row_hash(&text);
        let (stored, new) = cached.rows.get_or_insert_in_order(id, &mut stored_at, hash);
        if !new && *stored == hash {
            continue;
        }
        *stored = hash;
        let record = std::str::from_utf8(&text).expect("JSON is UTF-8");
        conn.prepare_cached("INSERT OR REPLACE INTO streams (id, record) VALUES (?1, ?2)")?
            .execute([id.as_str(), record])?;
    }
    if cached.rows.len() != cached.state.streams.len() {
        let gone: Vec<String> = cached
            .rows
            .ids()
            .filter(|id| !cached.state.streams.contains_key(id))
            .map(str::to_string)
            .collect();
        for id in gone {
            conn.prepare_cached("DELETE FROM streams WHERE id = ?1")?
                .execute([id.as_str()])?;
            cached.rows.remove(&id);
        }
    }
    let globals = cached.state.clone_globals();
    if globals != *globals_before {
        write_globals(conn, &globals)?;
    }
    Ok(())
}

/// Why the globals row could not be read.
pub(super) enum GlobalsError {
    Db(rusqlite::Error),
    Json(serde_json::Error),
}

/// The state without its streams, from the globals row (`state`: the JSON
/// of every field but the streams).
pub(super) fn read_globals(conn: &Connection) -> Result<State, GlobalsError> {
    let text: Option<String> = conn
        .query_row("SELECT value FROM globals WHERE key = 'state'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(GlobalsError::Db)?;
    match text {
        Some(text) => {
            let mut globals: State = serde_json::from_str(&text).map_err(GlobalsError::Json)?;
            globals.streams.clear();
            Ok(globals)
        }
        None => Ok(State::default()),
    }
}

pub(super) fn write_globals(conn: &Connection, globals: &State) -> rusqlite::Result<()> {
    let text = serde_json::to_string(&globals.clone_globals()).map_err(json_error)?;
    conn.execute(
        "INSERT OR REPLACE INTO globals (key, value) VALUES ('state', ?1)",
        [text],
    )?;
    Ok(())
}

/// Makes a database holding `state` beside `path` and renames it into
/// place, so no monitor ever sees a half-made one.
pub(super) fn write_new_db(path: &Path, state: &State) -> rusqlite::Result<()> {
    let making = PathBuf::from(format!("{}.new-{}", path.display(), std::process::id()));
    let _ = std::fs::remove_file(&making);
    {
        let conn = Connection::open(&making)?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        conn.execute_batch(SCHEMA)?;
        let tx = conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO globals (key, value) VALUES ('version', ?1)",
            [STATE_VERSION.to_string()],
        )?;
        write_globals(&tx, state)?;
        {
            let mut insert = tx.prepare("INSERT INTO streams (id, record) VALUES (?1, ?2)")?;
            for (id, stream) in &state.streams {
                let record = serde_json::to_string(stream).map_err(json_error)?;
                insert.execute([id.as_str(), record.as_str()])?;
            }
        }
        tx.commit()?;
    }
    std::fs::rename(&making, path).map_err(|e| {
        let _ = std::fs::remove_file(&making);
        rusqlite::Error::ToSqlConversionFailure(Box::new(e))
    })
}
