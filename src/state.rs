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

use std::hash::Hasher;
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
pub use crate::supervise::model::{State, StreamHistory, StreamState, STATE_VERSION};

mod json_file;
mod row_hashes;
mod sqlite;

pub use json_file::parse;
use json_file::*;
use sqlite::*;

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
    rows: row_hashes::RowHashes,
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

/// A stored record's hash: only compared within this process, so any good
/// 64-bit hash does; aHash (already built for rusqlite's hashbrown) is
/// several times faster than SipHash over the 10 000 records a check
/// hashes twice (1% of a check at 10 000 streams).
fn row_hash(text: &[u8]) -> u64 {
    let mut h = ahash::AHasher::default();
    h.write(text);
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

    /// Reads the state now, so that the next [`StateStore::view`] finds it
    /// read (a check reads it on a second thread while the task database
    /// is read). A state that cannot be read is left for that view to say.
    pub fn read_ahead(&self) {
        let mut guard = self.lock_open();
        // Read through a smaller page cache: SQLite's page caches recycle
        // pages between connections, so the pages made here are freed by
        // the other thread's connection to the task database, and memory
        // one thread allocates and another frees stays in the first one's
        // allocator arena, of no use to the rest of the check.
        let set_cache = |open: &Option<Open>, pragma: &str| {
            if let Some(o) = open {
                let _ = o.conn.execute_batch(pragma);
            }
        };
        if let Ok(true) = self.connect(&mut guard, false) {
            set_cache(&guard, sqlite::READ_AHEAD_PAGE_CACHE);
        }
        let _ = self.fresh(&mut guard);
        set_cache(&guard, sqlite::PAGE_CACHE);
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
                    cached.rows.insert(id.as_str(), row_hash(text.as_bytes()));
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
        self.update_stream(id, |st, _| st.history_mut().spawn_intent = Some(intent))
            .map(|_| ())
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
