//! The persisted state every monitor on a project shares: restart budgets,
//! backoff timers, restart history and the identity of each worker last seen
//! running. It lives in `<ORCH>/state/monitor-state.json`, is changed only
//! under `state.lock` (load, modify, save), and is written atomically (temp
//! file, fsync, rename), so cron one-shots, a daemon and a restarted monitor
//! agree and a monitor killed mid-write never leaves a torn file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::probe::ProbeSet;
use crate::process::identity::Remembered;
use crate::process::lock;
use crate::supervise::lifecycle::Lifecycle;

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    #[serde(default)]
    pub streams: BTreeMap<String, StreamState>,
    /// While set and in the future, the global breaker holds every restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_until_ms: Option<u64>,
}

impl Default for State {
    fn default() -> Self {
        State {
            version: STATE_VERSION,
            streams: BTreeMap::new(),
            breaker_until_ms: None,
        }
    }
}

/// Lifecycle and restart accounting of one stream. Times are ms since the epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamState {
    /// Where the worker is in its life (see `supervise::lifecycle`).
    pub lifecycle: Lifecycle,
    /// Restarts since the stream last made progress (the `--max-restarts` budget).
    #[serde(skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// Restarts ever made.
    #[serde(skip_serializing_if = "is_zero")]
    pub restarts_total: u32,
    /// Completed tasks when the budget was last charged; more now = progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at_last_restart: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_restart_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_restart_reason: Option<String>,
    /// Restarts in a row without a long healthy run (drives the backoff).
    #[serde(skip_serializing_if = "is_zero")]
    pub streak: u32,
    /// No restart before this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_ms: Option<u64>,
    /// Restart times within the rate-limit window.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recent_restarts_ms: Vec<u64>,
    /// When a worker seen alive was last found dead, or a restart failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Fingerprint of the last failure, and how many failures in a row had it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_signature: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub same_failure_count: u32,
    /// Counters for metrics: workers seen alive then found dead or stuck,
    /// probe failures, give-ups.
    #[serde(skip_serializing_if = "is_zero")]
    pub deaths_total: u32,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub probe_failures_total: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub gave_up_total: u32,
    /// The worker as last seen running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<Remembered>,
    /// Probe records of the current worker.
    #[serde(skip_serializing_if = "ProbeSet::is_empty")]
    pub probes: ProbeSet,
    /// Why a readiness probe says the worker is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_ready: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state lock {0} stayed busy; another monitor holds it")]
    LockTimeout(PathBuf),
}

/// Where the state lives and how it is loaded and saved.
#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
    lock_path: PathBuf,
}

const LOCK_WAIT: Duration = Duration::from_secs(10);

impl StateStore {
    pub fn new(state_dir: &Path) -> StateStore {
        StateStore {
            path: state_dir.join("monitor-state.json"),
            lock_path: state_dir.join("state.lock"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state without the lock (the file is only ever replaced whole).
    /// A corrupt file or one from a newer version is moved aside and replaced
    /// by a fresh state; the returned warnings say so.
    pub fn load(&self) -> (State, Vec<String>) {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (State::default(), Vec::new())
            }
            Err(e) => {
                return (
                    State::default(),
                    vec![format!(
                        "Cannot read state file {}: {e}; using a fresh state",
                        self.path.display()
                    )],
                )
            }
        };
        match parse(&text) {
            Ok(state) => (state, Vec::new()),
            Err(problem) => {
                let aside = self.move_aside();
                (
                    State::default(),
                    vec![format!(
                        "State file {} {problem}; {aside}; starting from a fresh state",
                        self.path.display()
                    )],
                )
            }
        }
    }

    fn move_aside(&self) -> String {
        let stamp = chrono::Local::now().format("%Y%m%dT%H%M%S%.6f");
        let aside = PathBuf::from(format!("{}.corrupt-{stamp}", self.path.display()));
        match std::fs::rename(&self.path, &aside) {
            Ok(()) => format!("moved aside to {}", aside.display()),
            Err(e) => format!("could not move it aside ({e})"),
        }
    }

    /// Load, change, save under the state lock; returns the saved state.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut State) -> T,
    ) -> Result<(T, State, Vec<String>), StateError> {
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
        let (mut state, warnings) = self.load();
        let before = state.clone();
        let result = change(&mut state);
        // An unchanged state is not rewritten: most checks change nothing.
        if state != before {
            self.save(&state)?;
        }
        Ok((result, state, warnings))
    }

    fn save(&self, state: &State) -> Result<(), StateError> {
        let tmp = PathBuf::from(format!(
            "{}.tmp-{}",
            self.path.display(),
            std::process::id()
        ));
        let io = |action, source| StateError::Io {
            action,
            path: tmp.clone(),
            source,
        };
        // Compact: the file is read on every check and can hold thousands of streams.
        let mut text = serde_json::to_string(state).expect("state serialises");
        text.push('\n');
        let mut file = std::fs::File::create(&tmp).map_err(|e| io("create", e))?;
        file.write_all(text.as_bytes())
            .map_err(|e| io("write", e))?;
        file.sync_all().map_err(|e| io("sync", e))?;
        drop(file);
        if let Err(source) = std::fs::rename(&tmp, &self.path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(StateError::Io {
                action: "replace",
                path: self.path.clone(),
                source,
            });
        }
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
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
    serde_json::from_str(text).map_err(|e| format!("is corrupt ({e})"))
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

    #[test]
    fn update_is_atomic_and_corrupt_files_move_aside() {
        let dir = tempfile_dir();
        let store = StateStore::new(&dir);
        store
            .update(|s| s.streams.entry("a".into()).or_default().restarts = 1)
            .unwrap();
        assert_eq!(store.load().0.streams["a"].restarts, 1);
        std::fs::write(store.path(), "{garbage").unwrap();
        let (state, warnings) = store.load();
        assert!(state.streams.is_empty());
        assert!(warnings[0].contains("moved aside"), "{warnings:?}");
        let asides = std::fs::read_dir(&dir).unwrap().filter_map(Result::ok);
        assert!(asides
            .into_iter()
            .any(|e| e.file_name().to_string_lossy().contains(".corrupt-")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "mw-state-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
