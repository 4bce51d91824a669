//! The state store: where the supervisor's memory (`supervise::model::State`)
//! lives between runs, shared by every monitor on a project (cron one-shots,
//! a daemon, operator commands). Callers see a small interface — load, read
//! without touching anything, update the whole state or one stream, journal
//! a restart intent — and never the file. The file is the SQLite database
//! `<ORCH>/state/monitor.db` (WAL): one row per stream (its record as JSON
//! text) and a small globals table, so a change costs what it changes — a
//! restart writes its own row, a tick that changes nothing writes nothing —
//! and SQLite's write lock (`BEGIN IMMEDIATE`) serialises the monitors. The
//! store keeps what it last read and asks SQLite (`PRAGMA data_version`)
//! whether another monitor wrote since, so a check reads the state once.
//! The JSON file of earlier versions (`monitor-state.json`) is migrated by
//! the first supervising run and kept beside it as `.migrated`; a read-only
//! view reads it as it is. A corrupt, special or newer-version file is moved
//! aside by a supervising run (never by a read-only one) and a fresh state
//! starts, with a warning in the log.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Deserialize;

use crate::layout::{Layout, StreamId};
use crate::process::lock;
use crate::report::log::Logger;
use crate::supervise::model::SpawnIntent;
/// What the store keeps: the supervisor's model of every stream.
pub use crate::supervise::model::{State, StreamState, STATE_VERSION};

/// The state database, in the state directory.
pub const STATE_DB: &str = "monitor.db";

/// Larger than any real state file of the JSON format (about 100 bytes a
/// stream): reading a bigger file whole could take the machine's memory.
pub const MAX_STATE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the state database {path}: {source}")]
    Db {
        path: PathBuf,
        source: Box<rusqlite::Error>,
    },
    #[error("the state database {0} stayed locked; another monitor holds it")]
    LockTimeout(PathBuf),
    #[error("the state database {path} {problem}")]
    Unusable { path: PathBuf, problem: String },
}

/// The state of a project, behind load / read / update.
pub struct StateStore {
    db_path: PathBuf,
    /// The JSON file of earlier versions, migrated on first use.
    legacy_path: PathBuf,
    /// Held while the database is made, migrated or moved aside.
    lock_path: PathBuf,
    /// Where the store says what it had to do (a file moved aside).
    logger: Logger,
    open: Mutex<Option<Open>>,
}

/// A connection to the database and what was last read through it.
struct Open {
    conn: Connection,
    /// Which file the connection has open (a file moved aside and made
    /// again is another database).
    inode: (u64, u64),
    cache: Option<Cached>,
}

/// The state as last read or written through this connection.
struct Cached {
    /// `PRAGMA data_version` when it was read: another monitor's commit
    /// changes it.
    data_version: i64,
    state: State,
    /// A hash of each stream's stored record, to write only what changed.
    rows: HashMap<String, u64>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.db_path)
            .finish()
    }
}

/// How long a monitor waits for another one's write.
const LOCK_WAIT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS globals (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS streams (id TEXT PRIMARY KEY, record TEXT NOT NULL) WITHOUT ROWID;
";

/// Why a state file could not be used.
enum Unusable {
    /// Reading failed; the file is left where it is.
    Unreadable(String),
    /// The content is no state of ours; a supervising run moves it aside.
    Bad(String),
}

/// What a database error means for the file: trouble reaching it leaves
/// it alone; anything else says it is no state database of ours.
fn classify(e: rusqlite::Error) -> Unusable {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(
            C::DatabaseBusy
            | C::DatabaseLocked
            | C::CannotOpen
            | C::SystemIoFailure
            | C::PermissionDenied
            | C::ReadOnly
            | C::OutOfMemory
            | C::DiskFull,
        ) => Unusable::Unreadable(e.to_string()),
        _ => Unusable::Bad(format!("is corrupt ({e})")),
    }
}

fn row_hash(text: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

fn inode_of(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

impl StateStore {
    /// The store of `layout`'s project; its warnings go to monitor.log (and
    /// the console unless `quiet`).
    pub fn new(layout: &Layout, quiet: bool) -> StateStore {
        Self::at(
            &layout.state_dir(),
            Logger::new(Some(&layout.monitor_log()), quiet),
        )
    }

    /// A store in `state_dir` reporting to `logger`.
    pub fn at(state_dir: &Path, logger: Logger) -> StateStore {
        StateStore {
            db_path: state_dir.join(STATE_DB),
            legacy_path: state_dir.join(crate::layout::STATE_FILE),
            lock_path: state_dir.join(crate::layout::STATE_LOCK),
            logger,
            open: Mutex::new(None),
        }
    }

    /// The state database.
    pub fn path(&self) -> &Path {
        &self.db_path
    }

    /// The JSON state file of earlier versions (read until migrated).
    pub fn legacy_path(&self) -> &Path {
        &self.legacy_path
    }

    /// The state for a supervising run. A file that is no state of ours is
    /// moved aside and a fresh state starts; both are logged.
    pub fn load(&self) -> State {
        self.view(State::clone)
    }

    /// Looks at the state for a supervising run without copying it (read
    /// once, then again only when another monitor wrote meanwhile).
    pub fn view<T>(&self, look: impl FnOnce(&State) -> T) -> T {
        let mut guard = self.lock_open();
        match self.fresh(&mut guard) {
            Ok(true) => {
                let cached = guard.as_ref().and_then(|o| o.cache.as_ref());
                look(&cached.expect("fresh cache").state)
            }
            Ok(false) => look(&State::default()),
            Err(why) => {
                self.logger.warning(&format!(
                    "Cannot read state file {}: {why}; using a fresh state",
                    self.db_path.display()
                ));
                look(&State::default())
            }
        }
    }

    /// The state for a read-only view (`status`, `logs`): nothing is moved,
    /// migrated or written. The problem, if any, comes back for the caller
    /// to show.
    pub fn read_only(&self) -> (State, Option<String>) {
        let read = if self.db_path.symlink_metadata().is_ok() {
            self.read_db_only().map_err(|u| (&self.db_path, u))
        } else {
            read_json_file(&self.legacy_path).map_err(|u| (&self.legacy_path, u))
        };
        match read {
            Ok(state) => (state, None),
            Err((path, Unusable::Unreadable(why) | Unusable::Bad(why))) => (
                State::default(),
                Some(format!("state file {} {why}", path.display())),
            ),
        }
    }

    /// One stream's record as stored now (read-only: one row).
    pub fn stream(&self, id: &StreamId) -> Option<StreamState> {
        {
            let guard = self.lock_open();
            if let Some(open) = guard.as_ref() {
                if let Ok(row) = read_row(&open.conn, id.as_str()) {
                    return row;
                }
            }
        }
        self.read_only().0.streams.remove(id.as_str())
    }

    fn read_db_only(&self) -> Result<State, Unusable> {
        let meta = self
            .db_path
            .symlink_metadata()
            .map_err(|e| Unusable::Unreadable(e.to_string()))?;
        check_regular(&meta)?;
        // With no write-ahead log beside it, no monitor has the database
        // open and the file alone is the state: read it as immutable, which
        // leaves no -wal or -shm file behind. Should a monitor write
        // meanwhile and the read fail, it is read again the usual way.
        let wal = PathBuf::from(format!("{}-wal", self.db_path.display()));
        if !wal.exists() {
            if let Ok(state) = self.read_db_with(true) {
                return Ok(state);
            }
        }
        self.read_db_with(false)
    }

    fn read_db_with(&self, immutable: bool) -> Result<State, Unusable> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let path = self.db_path.to_string_lossy();
        let mut uri = String::from("file:");
        for c in path.chars() {
            match c {
                '%' => uri.push_str("%25"),
                '?' => uri.push_str("%3f"),
                '#' => uri.push_str("%23"),
                c => uri.push(c),
            }
        }
        if immutable {
            uri.push_str("?immutable=1");
        }
        let conn = Connection::open_with_flags(&uri, flags).map_err(classify)?;
        let _ = conn.busy_timeout(LOCK_WAIT);
        check_version(&conn)?;
        read_all(&conn).map(|(state, _)| state)
    }

    fn lock_open(&self) -> MutexGuard<'_, Option<Open>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the connection current (the database made from the JSON file
    /// of earlier versions, a corrupt one moved aside, a replaced one
    /// reopened) and its cache fresh. `Ok(false)`: there is no state yet.
    fn fresh(&self, open: &mut Option<Open>) -> Result<bool, String> {
        for _ in 0..3 {
            if !self.connect(open, false)? {
                return Ok(false);
            }
            let o = open.as_mut().expect("connected");
            match refresh(o) {
                Ok(()) => return Ok(true),
                Err(Unusable::Unreadable(why)) => return Err(why),
                Err(Unusable::Bad(problem)) => {
                    let inode = o.inode;
                    *open = None;
                    self.set_aside(&self.db_path, Some(inode), &problem);
                }
            }
        }
        Err("it keeps changing under this monitor".into())
    }

    /// Opens the database if it is not open (or was replaced); migrates the
    /// JSON file of earlier versions; moves a bad file aside.
    fn connect(&self, open: &mut Option<Open>, create: bool) -> Result<bool, String> {
        for _ in 0..3 {
            let meta = match self.db_path.symlink_metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    *open = None;
                    let made = self.make_db(create)?;
                    if !made {
                        return Ok(false);
                    }
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            };
            if let Err(Unusable::Bad(problem)) = check_regular(&meta) {
                *open = None;
                self.set_aside(&self.db_path, None, &problem);
                continue;
            }
            let inode = inode_of(&meta);
            if open.as_ref().is_some_and(|o| o.inode == inode) {
                return Ok(true);
            }
            match open_read_write(&self.db_path) {
                Ok(conn) => {
                    *open = Some(Open {
                        conn,
                        inode,
                        cache: None,
                    });
                    return Ok(true);
                }
                Err(Unusable::Unreadable(why)) => return Err(why),
                Err(Unusable::Bad(problem)) => {
                    *open = None;
                    self.set_aside(&self.db_path, Some(inode), &problem);
                }
            }
        }
        Err("it keeps changing under this monitor".into())
    }

    /// Makes the database from the JSON file of earlier versions, or empty
    /// when `create`; `Ok(false)` when there is nothing to make. Under the
    /// state lock, so monitors starting together make it once.
    fn make_db(&self, create: bool) -> Result<bool, String> {
        let legacy = self.legacy_path.symlink_metadata().is_ok();
        if !legacy && !create {
            return Ok(false);
        }
        let dir = self.db_path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let _held = lock::lock_within(&self.lock_path, LOCK_WAIT)
            .map_err(|e| format!("cannot lock {}: {e}", self.lock_path.display()))?
            .ok_or_else(|| format!("{} stayed locked", self.lock_path.display()))?;
        if self.db_path.symlink_metadata().is_ok() {
            return Ok(true);
        }
        let mut migrated = false;
        let state = if self.legacy_path.symlink_metadata().is_ok() {
            match read_json_file(&self.legacy_path) {
                Ok(state) => {
                    migrated = true;
                    state
                }
                Err(Unusable::Unreadable(why)) => {
                    self.logger.warning(&format!(
                        "Cannot read state file {}: {why}; using a fresh state",
                        self.legacy_path.display()
                    ));
                    return Ok(false);
                }
                Err(Unusable::Bad(problem)) => {
                    self.set_aside_locked(&self.legacy_path, &problem);
                    if !create {
                        return Ok(false);
                    }
                    State::default()
                }
            }
        } else {
            State::default()
        };
        write_new_db(&self.db_path, &state)
            .map_err(|e| format!("cannot make {}: {e}", self.db_path.display()))?;
        if migrated {
            let kept = PathBuf::from(format!("{}.migrated", self.legacy_path.display()));
            let _ = std::fs::rename(&self.legacy_path, &kept);
            self.logger.info(&format!(
                "State file {} migrated to {} (the old file is kept as {})",
                self.legacy_path.display(),
                self.db_path.display(),
                kept.display()
            ));
        }
        Ok(true)
    }

    /// Moves a bad state file aside (unless it was replaced meanwhile: only
    /// the file found bad, `inode`, goes) and says so.
    fn set_aside(&self, path: &Path, inode: Option<(u64, u64)>, problem: &str) {
        let held = lock::lock_within(&self.lock_path, LOCK_WAIT).ok().flatten();
        let same = path
            .symlink_metadata()
            .is_ok_and(|m| inode.is_none_or(|i| inode_of(&m) == i));
        if same {
            self.set_aside_locked(path, problem);
        }
        drop(held);
    }

    fn set_aside_locked(&self, path: &Path, problem: &str) {
        let stamp = chrono::Local::now().format("%Y%m%dT%H%M%S%.6f");
        let aside = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
        let said = match std::fs::rename(path, &aside) {
            Ok(()) => {
                for suffix in ["-wal", "-shm"] {
                    let from = PathBuf::from(format!("{}{suffix}", path.display()));
                    if from.exists() {
                        let _ = std::fs::rename(&from, format!("{}{suffix}", aside.display()));
                    }
                }
                format!("moved aside to {}", aside.display())
            }
            Err(e) => format!("could not move it aside ({e})"),
        };
        self.logger.warning(&format!(
            "State file {} {problem}; {said}; starting from a fresh state",
            path.display()
        ));
    }

    /// Changes the state under the database's write lock and writes what
    /// changed (nothing when nothing did).
    pub fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> Result<T, StateError> {
        let mut guard = self.lock_open();
        let result = self.update_locked(&mut guard, change);
        if result.is_err() {
            if let Some(o) = guard.as_mut() {
                o.cache = None;
            }
        }
        result
    }

    fn update_locked<T>(
        &self,
        open: &mut Option<Open>,
        change: impl FnOnce(&mut State) -> T,
    ) -> Result<T, StateError> {
        for _ in 0..3 {
            self.connect(open, true)
                .map_err(|problem| self.unusable(problem))?;
            let o = open.as_mut().expect("connected");
            begin(o, &self.db_path)?;
            match refresh(o) {
                Ok(()) => {}
                Err(Unusable::Unreadable(why)) => {
                    let _ = o.conn.execute_batch("ROLLBACK");
                    return Err(self.unusable(why));
                }
                Err(Unusable::Bad(problem)) => {
                    let _ = o.conn.execute_batch("ROLLBACK");
                    let inode = o.inode;
                    *open = None;
                    self.set_aside(&self.db_path, Some(inode), &problem);
                    continue;
                }
            }
            let cached = o.cache.as_mut().expect("fresh cache");
            let globals_before = cached.state.clone_globals();
            let result = change(&mut cached.state);
            let written = write_changes(&o.conn, cached, &globals_before)
                .and_then(|()| o.conn.execute_batch("COMMIT"));
            return match written {
                Ok(()) => Ok(result),
                Err(source) => {
                    let _ = o.conn.execute_batch("ROLLBACK");
                    Err(StateError::Db {
                        path: self.db_path.clone(),
                        source: Box::new(source),
                    })
                }
            };
        }
        Err(self.unusable("keeps changing under this monitor".into()))
    }

    fn unusable(&self, problem: String) -> StateError {
        StateError::Unusable {
            path: self.db_path.clone(),
            problem,
        }
    }

    /// Changes one stream's record (made if new) under the database's write
    /// lock, reading and writing that row alone; the change also sees when
    /// the global breaker holds restarts.
    pub fn update_stream<T>(
        &self,
        id: &StreamId,
        change: impl FnOnce(&mut StreamState, Option<u64>) -> T,
    ) -> Result<(T, StreamState), StateError> {
        let mut guard = self.lock_open();
        self.connect(&mut guard, true)
            .map_err(|problem| self.unusable(problem))?;
        let o = guard.as_mut().expect("connected");
        begin(o, &self.db_path)?;
        let done = update_row(&o.conn, id.as_str(), change);
        let done = done.and_then(|d| o.conn.execute_batch("COMMIT").map(|()| d));
        match done {
            Ok((result, stream, text)) => {
                // Our own commit leaves data_version alone: keep the cache
                // in step (when it was current, it stays current).
                if let Some(cached) = o.cache.as_mut() {
                    cached
                        .rows
                        .insert(id.to_string(), row_hash(text.as_bytes()));
                    cached.state.streams.insert(id.to_string(), stream.clone());
                }
                Ok((result, stream))
            }
            Err(source) => {
                let _ = o.conn.execute_batch("ROLLBACK");
                o.cache = None;
                Err(StateError::Db {
                    path: self.db_path.clone(),
                    source: Box::new(source),
                })
            }
        }
    }

    /// Journals that a restart of `id` is about to spawn (before the spawn,
    /// so a monitor killed meanwhile leaves a trace the next one finds).
    pub fn journal_intent(&self, id: &StreamId, intent: SpawnIntent) -> Result<(), StateError> {
        self.update_stream(id, |st, _| st.spawn_intent = Some(intent))
            .map(|_| ())
    }
}

/// `BEGIN IMMEDIATE`: the write lock, waited for as long as a monitor's write can take.
fn begin(open: &Open, path: &Path) -> Result<(), StateError> {
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
fn refresh(o: &mut Open) -> Result<(), Unusable> {
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

fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
}

fn open_read_write(path: &Path) -> Result<Connection, Unusable> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(classify)?;
    conn.busy_timeout(LOCK_WAIT).map_err(classify)?;
    // WAL commits survive the monitor being killed at any moment; the
    // checkpoints are synced.
    // A small page cache: the state is read whole once, then row by row.
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA cache_size = -512")
        .map_err(classify)?;
    check_version(&conn)?;
    Ok(conn)
}

/// The database's format version must be one this monitor knows.
fn check_version(conn: &Connection) -> Result<(), Unusable> {
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
fn read_all(conn: &Connection) -> Result<(State, HashMap<String, u64>), Unusable> {
    let mut state = read_globals(conn).map_err(|e| match e {
        GlobalsError::Db(e) => classify(e),
        GlobalsError::Json(e) => Unusable::Bad(format!("is corrupt (globals: {e})")),
    })?;
    let mut rows = HashMap::new();
    let mut streams = Vec::new();
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
        rows.insert(id.to_string(), row_hash(text.as_bytes()));
        streams.push((id.to_string(), stream));
    }
    // Built from sorted rows at once, the map's nodes are full; inserted
    // one by one in order, they would stay half empty.
    state.streams = streams.into_iter().collect();
    upgrade_give_ups(&mut state);
    Ok((state, rows))
}

fn read_row(conn: &Connection, id: &str) -> rusqlite::Result<Option<StreamState>> {
    let mut stmt = conn.prepare_cached("SELECT record FROM streams WHERE id = ?1")?;
    let mut rows = stmt.query([id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let text = row.get_ref(0)?.as_str()?;
    Ok(serde_json::from_str(text).ok())
}

fn json_error(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// One row read, changed and written back (inside a transaction).
fn update_row<T>(
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
fn write_changes(
    conn: &Connection,
    cached: &mut Cached,
    globals_before: &State,
) -> rusqlite::Result<()> {
    let mut text = Vec::with_capacity(256);
    for (id, stream) in &cached.state.streams {
        text.clear();
        serde_json::to_writer(&mut text, stream).map_err(json_error)?;
        let hash = row_hash(&text);
        if cached.rows.get(id.as_str()) == Some(&hash) {
            continue;
        }
        let record = std::str::from_utf8(&text).expect("JSON is UTF-8");
        conn.prepare_cached("INSERT OR REPLACE INTO streams (id, record) VALUES (?1, ?2)")?
            .execute([id.as_str(), record])?;
        cached.rows.insert(id.clone(), hash);
    }
    if cached.rows.len() != cached.state.streams.len() {
        let gone: Vec<String> = cached
            .rows
            .keys()
            .filter(|id| !cached.state.streams.contains_key(id.as_str()))
            .cloned()
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
enum GlobalsError {
    Db(rusqlite::Error),
    Json(serde_json::Error),
}

/// The state without its streams, from the globals row (`state`: the JSON
/// of every field but the streams).
fn read_globals(conn: &Connection) -> Result<State, GlobalsError> {
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

fn write_globals(conn: &Connection, globals: &State) -> rusqlite::Result<()> {
    let text = serde_json::to_string(&globals.clone_globals()).map_err(json_error)?;
    conn.execute(
        "INSERT OR REPLACE INTO globals (key, value) VALUES ('state', ?1)",
        [text],
    )?;
    Ok(())
}

/// Makes a database holding `state` beside `path` and renames it into
/// place, so no monitor ever sees a half-made one.
fn write_new_db(path: &Path, state: &State) -> rusqlite::Result<()> {
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

/// A file found by lstat must be a regular file to be read at all.
fn check_regular(meta: &std::fs::Metadata) -> Result<(), Unusable> {
    if meta.file_type().is_file() {
        Ok(())
    } else {
        Err(Unusable::Bad(format!(
            "is not a regular file ({})",
            describe_file_type(meta)
        )))
    }
}

/// The JSON state file of earlier versions, read as it is.
fn read_json_file(path: &Path) -> Result<State, Unusable> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => return Err(Unusable::Unreadable(e.to_string())),
    };
    check_regular(&meta)?;
    if meta.len() > MAX_STATE_BYTES {
        return Err(Unusable::Bad(format!(
            "is too large ({} bytes, at most {MAX_STATE_BYTES})",
            meta.len()
        )));
    }
    let text = read_regular(path).map_err(|e| Unusable::Unreadable(e.to_string()))?;
    parse(&text).map_err(Unusable::Bad)
}

/// Reads a file known (by lstat) to be regular without following a symlink
/// or blocking on a FIFO swapped in meanwhile.
fn read_regular(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::other(format!(
            "not a regular file ({})",
            describe_file_type(&meta)
        )));
    }
    let mut text = String::new();
    file.by_ref()
        .take(MAX_STATE_BYTES + 1)
        .read_to_string(&mut text)?;
    Ok(text)
}

fn describe_file_type(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    match () {
        _ if t.is_symlink() => "a symlink",
        _ if t.is_dir() => "a directory",
        _ if t.is_fifo() => "a FIFO",
        _ if t.is_socket() => "a socket",
        _ if t.is_block_device() || t.is_char_device() => "a device",
        _ => "not a regular file",
    }
}

/// Parses state text; the error says what is wrong with it.
pub fn parse(text: &str) -> Result<State, String> {
    // The version first (a newer file may not fit this State), then the
    // state itself, straight into its types: no intermediate JSON tree,
    // which would double the memory of a large state.
    #[derive(Deserialize)]
    struct Versioned {
        version: Option<serde_json::Value>,
    }
    let versioned: Versioned =
        serde_json::from_str(text).map_err(|e| format!("is corrupt ({e})"))?;
    let version = versioned
        .version
        .and_then(|v| v.as_u64())
        .ok_or("is corrupt (no version)")?;
    if version > u64::from(STATE_VERSION) {
        return Err(format!(
            "is from a newer version ({version} > {STATE_VERSION})"
        ));
    }
    let mut state: State = serde_json::from_str(text).map_err(|e| format!("is corrupt ({e})"))?;
    upgrade_give_ups(&mut state);
    Ok(state)
}

/// Files written before give-ups were typed hold only the reason text; the
/// budget's own words are recognised so the original's give-up line stays.
fn upgrade_give_ups(state: &mut State) {
    use crate::supervise::lifecycle::Lifecycle;
    use crate::supervise::model::GiveUp;
    for st in state.streams.values_mut() {
        if let (Lifecycle::GaveUp { reason }, None) = (&st.lifecycle, &st.gave_up) {
            let max = reason
                .strip_prefix("max restart limit (")
                .and_then(|r| r.strip_suffix(") reached"))
                .and_then(|n| n.parse().ok());
            st.gave_up = max.map(|max| GiveUp::Budget { max });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        assert!(parse(r#"{"version":1,"streams":{}}"#).is_ok());
        assert!(
            parse(r#"{"version":1,"streams":{"a":{"restarts":2}}}"#)
                .unwrap()
                .streams["a"]
                .restarts
                == 2
        );
        assert!(parse("").unwrap_err().contains("corrupt"));
        assert!(parse("{\"version\":1,\"streams\":{")
            .unwrap_err()
            .contains("corrupt"));
        assert!(parse(r#"{"streams":{}}"#)
            .unwrap_err()
            .contains("no version"));
        assert!(parse(r#"{"version":99,"streams":{}}"#)
            .unwrap_err()
            .contains("newer"));
        assert!(parse(r#"{"version":1,"bogus":1}"#)
            .unwrap_err()
            .contains("corrupt"));
    }

    fn store_in(dir: &Path) -> StateStore {
        StateStore::at(dir, Logger::new(Some(&dir.join("monitor.log")), true))
    }

    fn asides(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".corrupt-"))
            .collect()
    }

    #[test]
    fn a_supervising_load_moves_a_corrupt_database_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        store
            .update(|s| s.streams.entry("a".into()).or_default().restarts = 1)
            .unwrap();
        assert_eq!(store_in(dir.path()).load().streams["a"].restarts, 1);
        drop(store);
        std::fs::write(dir.path().join(STATE_DB), "garbage, no database").unwrap();
        let store = store_in(dir.path());
        let (_, problem) = store.read_only();
        assert!(problem.unwrap().contains("corrupt"));
        assert!(
            asides(dir.path()).is_empty(),
            "a read-only view moves nothing"
        );
        let state = store.load();
        assert!(state.streams.is_empty());
        let log = std::fs::read_to_string(dir.path().join("monitor.log")).unwrap();
        assert!(log.contains("moved aside"), "{log}");
        assert_eq!(asides(dir.path()).len(), 1, "{:?}", asides(dir.path()));
        // The fresh state works.
        store
            .update(|s| s.streams.entry("b".into()).or_default().restarts = 2)
            .unwrap();
        assert_eq!(store_in(dir.path()).read_only().0.streams["b"].restarts, 2);
    }

    #[test]
    fn a_read_only_view_of_a_closed_database_leaves_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        store.update(|s| s.breaker_until_ms = Some(3)).unwrap();
        drop(store);
        let files = || {
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let before = files();
        let (state, problem) = store_in(dir.path()).read_only();
        assert_eq!((state.breaker_until_ms, problem), (Some(3), None));
        assert_eq!(files(), before);
        // Beside a monitor that has it open, the view still reads it.
        let writer = store_in(dir.path());
        writer.update(|s| s.breaker_until_ms = Some(4)).unwrap();
        assert_eq!(store_in(dir.path()).read_only().0.breaker_until_ms, Some(4));
    }

    #[test]
    fn a_database_from_a_newer_version_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        store.update(|s| s.breaker_until_ms = Some(5)).unwrap();
        drop(store);
        let conn = Connection::open(dir.path().join(STATE_DB)).unwrap();
        conn.execute("UPDATE globals SET value = '99' WHERE key = 'version'", [])
            .unwrap();
        drop(conn);
        let store = store_in(dir.path());
        assert!(store.read_only().1.unwrap().contains("newer version"));
        assert_eq!(store.load(), State::default());
        assert_eq!(asides(dir.path()).len(), 1);
    }

    #[test]
    fn the_json_file_is_migrated_by_a_supervising_run_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        let json = r#"{"version":1,"streams":{"a":{"restarts":3}},"breaker_until_ms":7}"#;
        std::fs::write(store.legacy_path(), json).unwrap();
        let (state, problem) = store.read_only();
        assert_eq!((state.streams["a"].restarts, problem), (3, None));
        assert!(!store.path().exists(), "a read-only view migrates nothing");
        let state = store.load();
        assert_eq!(state.streams["a"].restarts, 3);
        assert_eq!(state.breaker_until_ms, Some(7));
        assert!(store.path().exists());
        assert!(!store.legacy_path().exists());
        assert!(dir.path().join("monitor-state.json.migrated").exists());
        assert_eq!(store_in(dir.path()).read_only().0, state);
    }

    #[test]
    fn a_corrupt_json_file_is_moved_aside_not_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        std::fs::write(store.legacy_path(), "{garbage").unwrap();
        let (state, problem) = store.read_only();
        assert!(state.streams.is_empty());
        assert!(problem.unwrap().contains("corrupt"));
        assert_eq!(
            std::fs::read_to_string(store.legacy_path()).unwrap(),
            "{garbage"
        );
        assert!(!dir.path().join("monitor.log").exists());
        assert!(store.load().streams.is_empty());
        let asides = asides(dir.path());
        assert!(
            asides[0].starts_with("monitor-state.json.corrupt-"),
            "{asides:?}"
        );
    }

    #[test]
    fn a_give_up_of_an_older_file_keeps_its_budget() {
        use crate::supervise::model::GiveUp;
        let text = r#"{"version":1,"streams":{"a":{"lifecycle":{"state":"gave_up","reason":"max restart limit (4) reached"}},"b":{"lifecycle":{"state":"gave_up","reason":"other"}}}}"#;
        let state = parse(text).unwrap();
        assert_eq!(state.streams["a"].gave_up, Some(GiveUp::Budget { max: 4 }));
        assert_eq!(state.streams["b"].gave_up, None);
    }

    #[test]
    fn special_files_are_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        nix::unistd::mkfifo(store.legacy_path(), nix::sys::stat::Mode::S_IRWXU).unwrap();
        // A FIFO would block a plain read forever.
        let (_, problem) = store.read_only();
        assert!(problem.unwrap().contains("FIFO"));
        assert!(store.load().streams.is_empty());
        assert!(!store.legacy_path().exists(), "the FIFO is moved aside");
        std::os::unix::fs::symlink("/etc/hostname", store.path()).unwrap();
        assert!(store.read_only().1.unwrap().contains("symlink"));
        assert!(store.load().streams.is_empty());
        assert!(!store.path().is_symlink(), "the symlink is moved aside");
        std::fs::remove_file(store.legacy_path()).ok();
        let big = std::fs::File::create(store.legacy_path()).unwrap();
        big.set_len(MAX_STATE_BYTES + 1).unwrap();
        std::fs::remove_file(store.path()).ok();
        assert!(store.read_only().1.unwrap().contains("too large"));
    }

    /// The rows of the database as stored, by id.
    fn rows(dir: &Path) -> Vec<(String, String)> {
        let conn = Connection::open(dir.join(STATE_DB)).unwrap();
        let mut stmt = conn
            .prepare("SELECT id, record FROM streams ORDER BY id")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    }

    #[test]
    fn one_stream_is_updated_beside_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        let a = StreamId::parse("a").unwrap();
        let b = StreamId::parse("b").unwrap();
        store.update(|s| s.breaker_until_ms = Some(9)).unwrap();
        let (seen, st) = store
            .update_stream(&a, |st, breaker| {
                st.restarts = 2;
                breaker
            })
            .unwrap();
        assert_eq!((seen, st.restarts), (Some(9), 2));
        store.update_stream(&b, |st, _| st.restarts = 1).unwrap();
        assert_eq!(store.stream(&a).unwrap().restarts, 2);
        assert_eq!(store.stream(&b).unwrap().restarts, 1);
        // The cache saw both rows: the whole state agrees.
        let state = store.load();
        assert_eq!(
            (state.streams["a"].restarts, state.streams["b"].restarts),
            (2, 1)
        );
        assert_eq!(rows(dir.path()).len(), 2);
    }

    #[test]
    fn another_monitors_write_is_seen_and_an_unchanged_state_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let ours = store_in(dir.path());
        let theirs = store_in(dir.path());
        ours.update(|s| {
            s.streams.entry("a".into()).or_default();
            s.streams.entry("b".into()).or_default();
        })
        .unwrap();
        assert_eq!(theirs.load().streams.len(), 2);
        let a = StreamId::parse("a").unwrap();
        theirs.update_stream(&a, |st, _| st.restarts = 4).unwrap();
        assert_eq!(ours.load().streams["a"].restarts, 4, "data_version changed");
        // Nothing changes: no commit at all (the WAL does not grow).
        let wal = dir.path().join(format!("{STATE_DB}-wal"));
        let before = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        ours.update(|s| s.streams.len()).unwrap();
        theirs.update(|_| ()).unwrap();
        let after = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        assert_eq!(before, after);
        // A removed stream loses its row.
        ours.update(|s| s.streams.remove("b")).unwrap();
        assert_eq!(rows(dir.path()).len(), 1);
        assert!(!theirs.load().streams.contains_key("b"));
    }
}
