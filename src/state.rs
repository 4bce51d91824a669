//! The state store: where the supervisor's memory (`supervise::model::State`)
//! lives between runs, shared by every monitor on a project (cron one-shots,
//! a daemon, operator commands). Callers see a small interface — load, read
//! without touching anything, update the whole state or one stream, journal
//! a restart intent — and never the file: today it is
//! `<ORCH>/state/monitor-state.json`, changed only under `state.lock` (load,
//! modify, save) and replaced atomically (temp file, fsync, rename), so a
//! monitor killed mid-write never leaves a torn file. A corrupt, oversized,
//! special or newer-version file is moved aside by a supervising run (never
//! by a read-only one) and a fresh state starts, with a warning in the log.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::files::{replace_atomically, Durability};
use crate::layout::{Layout, StreamId};
use crate::process::lock;
use crate::report::log::Logger;
use crate::supervise::model::SpawnIntent;
/// What the store keeps: the supervisor's model of every stream.
pub use crate::supervise::model::{State, StreamState, STATE_VERSION};

/// Larger than any real state (about 100 bytes a stream): reading a bigger
/// file whole could take the machine's memory.
pub const MAX_STATE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Write(#[from] crate::files::ReplaceError),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state lock {0} stayed busy; another monitor holds it")]
    LockTimeout(PathBuf),
}

/// The state of a project, behind load / read / update.
pub struct StateStore {
    path: PathBuf,
    lock_path: PathBuf,
    /// Where the store says what it had to do (a file moved aside).
    logger: Logger,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.path)
            .finish()
    }
}

const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Why a state file could not be used.
enum Unusable {
    /// Reading failed; the file is left where it is.
    Unreadable(String),
    /// The content is no state of ours; a supervising run moves it aside.
    Bad(String),
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
            path: state_dir.join(crate::layout::STATE_FILE),
            lock_path: state_dir.join(crate::layout::STATE_LOCK),
            logger,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state for a supervising run. A file that is no state of ours is
    /// moved aside and a fresh state starts; both are logged.
    pub fn load(&self) -> State {
        match self.read_file() {
            Ok(state) => state,
            Err(Unusable::Unreadable(why)) => {
                self.logger.warning(&format!(
                    "Cannot read state file {}: {why}; using a fresh state",
                    self.path.display()
                ));
                State::default()
            }
            Err(Unusable::Bad(problem)) => {
                let aside = self.move_aside();
                self.logger.warning(&format!(
                    "State file {} {problem}; {aside}; starting from a fresh state",
                    self.path.display()
                ));
                State::default()
            }
        }
    }

    /// The state for a read-only view (`status`, `logs`): nothing is moved,
    /// migrated or written. The problem, if any, comes back for the caller
    /// to show.
    pub fn read_only(&self) -> (State, Option<String>) {
        match self.read_file() {
            Ok(state) => (state, None),
            Err(Unusable::Unreadable(why) | Unusable::Bad(why)) => (
                State::default(),
                Some(format!("state file {} {why}", self.path.display())),
            ),
        }
    }

    /// One stream's record as stored now (read-only).
    pub fn stream(&self, id: &StreamId) -> Option<StreamState> {
        self.read_only().0.streams.remove(id.as_str())
    }

    fn read_file(&self) -> Result<State, Unusable> {
        let meta = match std::fs::symlink_metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(Unusable::Unreadable(e.to_string())),
        };
        if !meta.file_type().is_file() {
            return Err(Unusable::Bad(format!(
                "is not a regular file ({})",
                describe_file_type(&meta)
            )));
        }
        if meta.len() > MAX_STATE_BYTES {
            return Err(Unusable::Bad(format!(
                "is too large ({} bytes, at most {MAX_STATE_BYTES})",
                meta.len()
            )));
        }
        let text = read_regular(&self.path).map_err(|e| Unusable::Unreadable(e.to_string()))?;
        parse(&text).map_err(Unusable::Bad)
    }

    fn move_aside(&self) -> String {
        let stamp = chrono::Local::now().format("%Y%m%dT%H%M%S%.6f");
        let aside = PathBuf::from(format!("{}.corrupt-{stamp}", self.path.display()));
        match std::fs::rename(&self.path, &aside) {
            Ok(()) => format!("moved aside to {}", aside.display()),
            Err(e) => format!("could not move it aside ({e})"),
        }
    }

    /// Load, change, save under the state lock; returns the result and the
    /// state as saved. An unchanged state is not rewritten.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut State) -> T,
    ) -> Result<(T, State), StateError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            action: "create",
            path: dir.into(),
            source,
        })?;
        let _guard = lock::lock_within(&self.lock_path, LOCK_WAIT)
            .map_err(|source| StateError::Io {
                action: "lock",
                path: self.lock_path.clone(),
                source,
            })?
            .ok_or_else(|| StateError::LockTimeout(self.lock_path.clone()))?;
        let mut state = self.load();
        let before = state.clone();
        let result = change(&mut state);
        if state != before {
            self.save(&state)?;
        }
        Ok((result, state))
    }

    /// Changes one stream's record (made if new) under the state lock; the
    /// change also sees when the global breaker holds restarts.
    pub fn update_stream<T>(
        &self,
        id: &StreamId,
        change: impl FnOnce(&mut StreamState, Option<u64>) -> T,
    ) -> Result<(T, StreamState), StateError> {
        let (result, mut state) = self.update(|s| {
            let breaker = s.breaker_until_ms;
            change(s.streams.entry(id.to_string()).or_default(), breaker)
        })?;
        let stream = state.streams.remove(id.as_str()).unwrap_or_default();
        Ok((result, stream))
    }

    /// Journals that a restart of `id` is about to spawn (before the spawn,
    /// so a monitor killed meanwhile leaves a trace the next one finds).
    pub fn journal_intent(&self, id: &StreamId, intent: SpawnIntent) -> Result<(), StateError> {
        self.update_stream(id, |st, _| st.spawn_intent = Some(intent))
            .map(|_| ())
    }

    fn save(&self, state: &State) -> Result<(), StateError> {
        // Compact: the file is read on every check and can hold thousands of streams.
        let mut text = serde_json::to_string(state).expect("state serialises");
        text.push('\n');
        replace_atomically(&self.path, text.as_bytes(), Durability::Synced)?;
        Ok(())
    }
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

    #[test]
    fn update_is_atomic_and_a_supervising_load_moves_corrupt_files_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        store
            .update(|s| s.streams.entry("a".into()).or_default().restarts = 1)
            .unwrap();
        assert_eq!(store.load().streams["a"].restarts, 1);
        std::fs::write(store.path(), "{garbage").unwrap();
        let state = store.load();
        assert!(state.streams.is_empty());
        let log = std::fs::read_to_string(dir.path().join("monitor.log")).unwrap();
        assert!(log.contains("moved aside"), "{log}");
        let asides = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok);
        assert!(asides
            .into_iter()
            .any(|e| e.file_name().to_string_lossy().contains(".corrupt-")));
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
    fn a_read_only_view_never_moves_or_rewrites_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        std::fs::write(store.path(), "{garbage").unwrap();
        let (state, problem) = store.read_only();
        assert!(state.streams.is_empty());
        assert!(problem.unwrap().contains("corrupt"));
        assert_eq!(std::fs::read_to_string(store.path()).unwrap(), "{garbage");
        assert!(!dir.path().join("monitor.log").exists());
    }

    #[test]
    fn special_and_oversized_files_are_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        nix::unistd::mkfifo(store.path(), nix::sys::stat::Mode::S_IRWXU).unwrap();
        // A FIFO would block a plain read forever.
        let (_, problem) = store.read_only();
        assert!(problem.unwrap().contains("FIFO"));
        assert!(store.load().streams.is_empty());
        assert!(!store.path().exists(), "the FIFO is moved aside");
        std::os::unix::fs::symlink("/etc/hostname", store.path()).unwrap();
        assert!(store.read_only().1.unwrap().contains("symlink"));
        std::fs::remove_file(store.path()).unwrap();
        let big = std::fs::File::create(store.path()).unwrap();
        big.set_len(MAX_STATE_BYTES + 1).unwrap();
        assert!(store.read_only().1.unwrap().contains("too large"));
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
    }
}
