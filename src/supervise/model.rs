//! The supervisor's memory of every stream, as the pure core sees it:
//! lifecycle, restart accounting (budget, backoff streak, rate-limit window),
//! failure history and the identity of the worker last seen running. The
//! state store (`crate::state`) persists it; nothing here touches a file.

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use crate::probe::ProbeSet;
use crate::process::identity::Remembered;

use super::lifecycle::Lifecycle;
use super::stream_map::StreamMap;

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    #[serde(default)]
    pub streams: StreamMap<StreamState>,
    /// While set and in the future, the global breaker holds every restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_until_ms: Option<u64>,
    /// The streams whose failures opened the breaker last (a `reset` of one
    /// of them lifts it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breaker_streams: Vec<String>,
    /// When monitor.log last said "All workers healthy" (cleared when a
    /// check finds a failing worker): it is said again only after a change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_logged_ms: Option<u64>,
}

impl Default for State {
    fn default() -> Self {
        State {
            version: STATE_VERSION,
            streams: StreamMap::new(),
            breaker_until_ms: None,
            breaker_streams: Vec::new(),
            healthy_logged_ms: None,
        }
    }
}

impl State {
    /// The state without its streams (the globals alone).
    pub fn clone_globals(&self) -> State {
        // Named field by field: a new global field must be added here.
        let State {
            version,
            streams: _,
            breaker_until_ms,
            breaker_streams,
            healthy_logged_ms,
        } = self;
        State {
            version: *version,
            streams: StreamMap::new(),
            breaker_until_ms: *breaker_until_ms,
            breaker_streams: breaker_streams.clone(),
            healthy_logged_ms: *healthy_logged_ms,
        }
    }
}

/// Lifecycle and restart accounting of one stream. Times are ms since the epoch.
///
/// Stored as one flat JSON object (see `Serialize` below for its fields and
/// their order). In memory, what most streams never have (restart times,
/// failures, probe records, a give-up, a spawn intent, a tc session) sits in
/// one [`StreamHistory`] box made the first time any of it is set: a
/// project's records are mostly a lifecycle and a remembered worker, and a
/// record without the box is a third of the size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "StoredStreamState")]
pub struct StreamState {
    /// Where the worker is in its life (see `supervise::lifecycle`).
    pub lifecycle: Lifecycle,
    /// Restarts since the stream last made progress (the `--max-restarts` budget).
    pub restarts: u32,
    /// Restarts ever made.
    pub restarts_total: u32,
    /// Restarts since an operator last forgave the stream (`reset`,
    /// `restart STREAM`): the RESTARTS column of `status`.
    pub restarts_since_reset: u32,
    /// Completed tasks when the budget was last charged; more now = progress.
    pub completed_at_last_restart: Option<u32>,
    /// Restarts in a row without a long healthy run (drives the backoff).
    pub streak: u32,
    /// How many failures in a row had the last failure's fingerprint.
    pub same_failure_count: u32,
    /// Counters for metrics: workers seen alive then found dead or stuck,
    /// probe failures, give-ups.
    pub deaths_total: u32,
    pub probe_failures_total: u64,
    pub gave_up_total: u32,
    /// The worker as last seen running.
    pub worker: Option<Remembered>,
    /// Read through [`StreamState::history`], changed through
    /// [`StreamState::history_mut`] and [`StreamState::set_history`].
    pub history: History,
}

/// What happened to a stream's workers beyond the counters: set only once
/// something did (see [`StreamState::history`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamHistory {
    /// How the worker last ended, when known (`exit 127`, `SIGKILL`).
    pub last_exit: Option<String>,
    pub last_restart_ms: Option<u64>,
    pub last_restart_reason: Option<String>,
    /// No restart before this time.
    pub next_attempt_ms: Option<u64>,
    /// Restart times within the rate-limit window.
    pub recent_restarts_ms: Vec<u64>,
    /// When a worker seen alive was last found dead, or a restart failed.
    pub last_failure_ms: Option<u64>,
    pub last_error: Option<String>,
    /// Fingerprint of the last failure (its count is `same_failure_count`).
    pub last_signature: Option<String>,
    /// Probe records of the current worker.
    pub probes: ProbeSet,
    /// Why a readiness probe says the worker is not ready.
    pub not_ready: Option<String>,
    /// Why the stream gave up, while it is given up.
    pub gave_up: Option<GiveUp>,
    /// A restart about to spawn (journalled before the spawn, cleared when
    /// it is recorded as done): what a monitor killed mid-spawn leaves.
    pub spawn_intent: Option<SpawnIntent>,
    /// tc projects: the job id of the Claude session the monitor last
    /// dispatched for the stream (how it recognises its own session).
    pub session_job: Option<String>,
}

/// What a stream without a history reads as.
static NO_HISTORY: StreamHistory = StreamHistory {
    last_exit: None,
    last_restart_ms: None,
    last_restart_reason: None,
    next_attempt_ms: None,
    recent_restarts_ms: Vec::new(),
    last_failure_ms: None,
    last_error: None,
    last_signature: None,
    probes: ProbeSet {
        instance: None,
        records: std::collections::BTreeMap::new(),
    },
    not_ready: None,
    gave_up: None,
    spawn_intent: None,
    session_job: None,
};

/// The boxed history. No box and a box holding an empty history are the
/// same history: equality and `Debug` look through the box.
#[derive(Clone, Default)]
pub struct History(Option<Box<StreamHistory>>);

impl History {
    fn get(&self) -> &StreamHistory {
        self.0.as_deref().unwrap_or(&NO_HISTORY)
    }
}

impl PartialEq for History {
    fn eq(&self, other: &History) -> bool {
        self.get() == other.get()
    }
}

impl Eq for History {}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl StreamState {
    /// The stream's history; an empty one when nothing has happened yet.
    pub fn history(&self) -> &StreamHistory {
        self.history.get()
    }

    /// The stream's history to change (its box is made here the first time).
    pub fn history_mut(&mut self) -> &mut StreamHistory {
        self.history.0.get_or_insert_with(Box::default)
    }

    /// Sets one field of the history. Emptying a field of a stream that has
    /// no history makes no box: most checks clear what was never set.
    pub fn set_history<T: Default + PartialEq>(
        &mut self,
        field: impl FnOnce(&mut StreamHistory) -> &mut T,
        value: T,
    ) {
        if self.history.0.is_none() && value == T::default() {
            return;
        }
        *field(self.history_mut()) = value;
    }

    /// The stream's history, taken out of its state.
    pub fn into_history(self) -> StreamHistory {
        self.history
            .0
            .map_or_else(StreamHistory::default, |boxed| *boxed)
    }

    /// This state with `history` as its history.
    pub fn with_history(mut self, history: StreamHistory) -> StreamState {
        self.history = History::boxed_unless_empty(history);
        self
    }
}

impl History {
    fn boxed_unless_empty(history: StreamHistory) -> History {
        History((history != NO_HISTORY).then(|| Box::new(history)))
    }
}

impl Serialize for StreamState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The order the fields have always been written in: a stored row is
        // rewritten only when its text changes, so a new order would rewrite
        // every row once.
        let h = self.history();
        let mut out = serializer.serialize_struct("StreamState", 24)?;
        out.serialize_field("lifecycle", &self.lifecycle)?;
        unless(&mut out, "restarts", &self.restarts, self.restarts == 0)?;
        unless(
            &mut out,
            "restarts_total",
            &self.restarts_total,
            self.restarts_total == 0,
        )?;
        let since_reset = self.restarts_since_reset;
        unless(
            &mut out,
            "restarts_since_reset",
            &since_reset,
            since_reset == 0,
        )?;
        unless(&mut out, "last_exit", &h.last_exit, h.last_exit.is_none())?;
        let completed = &self.completed_at_last_restart;
        unless(
            &mut out,
            "completed_at_last_restart",
            completed,
            completed.is_none(),
        )?;
        unless(
            &mut out,
            "last_restart_ms",
            &h.last_restart_ms,
            h.last_restart_ms.is_none(),
        )?;
        let reason = &h.last_restart_reason;
        unless(&mut out, "last_restart_reason", reason, reason.is_none())?;
        unless(&mut out, "streak", &self.streak, self.streak == 0)?;
        unless(
            &mut out,
            "next_attempt_ms",
            &h.next_attempt_ms,
            h.next_attempt_ms.is_none(),
        )?;
        let recent = &h.recent_restarts_ms;
        unless(&mut out, "recent_restarts_ms", recent, recent.is_empty())?;
        unless(
            &mut out,
            "last_failure_ms",
            &h.last_failure_ms,
            h.last_failure_ms.is_none(),
        )?;
        unless(
            &mut out,
            "last_error",
            &h.last_error,
            h.last_error.is_none(),
        )?;
        unless(
            &mut out,
            "last_signature",
            &h.last_signature,
            h.last_signature.is_none(),
        )?;
        let same = self.same_failure_count;
        unless(&mut out, "same_failure_count", &same, same == 0)?;
        unless(
            &mut out,
            "deaths_total",
            &self.deaths_total,
            self.deaths_total == 0,
        )?;
        let probe_failures = self.probe_failures_total;
        unless(
            &mut out,
            "probe_failures_total",
            &probe_failures,
            probe_failures == 0,
        )?;
        unless(
            &mut out,
            "gave_up_total",
            &self.gave_up_total,
            self.gave_up_total == 0,
        )?;
        unless(&mut out, "worker", &self.worker, self.worker.is_none())?;
        unless(&mut out, "probes", &h.probes, h.probes.is_empty())?;
        unless(&mut out, "not_ready", &h.not_ready, h.not_ready.is_none())?;
        unless(&mut out, "gave_up", &h.gave_up, h.gave_up.is_none())?;
        unless(
            &mut out,
            "spawn_intent",
            &h.spawn_intent,
            h.spawn_intent.is_none(),
        )?;
        unless(
            &mut out,
            "session_job",
            &h.session_job,
            h.session_job.is_none(),
        )?;
        out.end()
    }
}

/// One field, left out when `empty` (as `skip_serializing_if` would).
fn unless<S: SerializeStruct, T: Serialize + ?Sized>(
    out: &mut S,
    key: &'static str,
    value: &T,
    empty: bool,
) -> Result<(), S::Error> {
    if empty {
        out.skip_field(key)
    } else {
        out.serialize_field(key, value)
    }
}

/// A stream's record as stored: every field flat, any of them missing.
#[derive(Deserialize)]
#[serde(default)]
struct StoredStreamState {
    lifecycle: Lifecycle,
    restarts: u32,
    restarts_total: u32,
    restarts_since_reset: u32,
    last_exit: Option<String>,
    completed_at_last_restart: Option<u32>,
    last_restart_ms: Option<u64>,
    last_restart_reason: Option<String>,
    streak: u32,
    next_attempt_ms: Option<u64>,
    recent_restarts_ms: Vec<u64>,
    last_failure_ms: Option<u64>,
    last_error: Option<String>,
    last_signature: Option<String>,
    same_failure_count: u32,
    deaths_total: u32,
    probe_failures_total: u64,
    gave_up_total: u32,
    worker: Option<Remembered>,
    probes: ProbeSet,
    not_ready: Option<String>,
    gave_up: Option<GiveUp>,
    spawn_intent: Option<SpawnIntent>,
    session_job: Option<String>,
}

impl Default for StoredStreamState {
    fn default() -> Self {
        let StreamState { lifecycle, .. } = StreamState::default();
        StoredStreamState {
            lifecycle,
            restarts: 0,
            restarts_total: 0,
            restarts_since_reset: 0,
            last_exit: None,
            completed_at_last_restart: None,
            last_restart_ms: None,
            last_restart_reason: None,
            streak: 0,
            next_attempt_ms: None,
            recent_restarts_ms: Vec::new(),
            last_failure_ms: None,
            last_error: None,
            last_signature: None,
            same_failure_count: 0,
            deaths_total: 0,
            probe_failures_total: 0,
            gave_up_total: 0,
            worker: None,
            probes: ProbeSet::default(),
            not_ready: None,
            gave_up: None,
            spawn_intent: None,
            session_job: None,
        }
    }
}

impl From<StoredStreamState> for StreamState {
    fn from(stored: StoredStreamState) -> StreamState {
        let history = StreamHistory {
            last_exit: stored.last_exit,
            last_restart_ms: stored.last_restart_ms,
            last_restart_reason: stored.last_restart_reason,
            next_attempt_ms: stored.next_attempt_ms,
            recent_restarts_ms: stored.recent_restarts_ms,
            last_failure_ms: stored.last_failure_ms,
            last_error: stored.last_error,
            last_signature: stored.last_signature,
            probes: stored.probes,
            not_ready: stored.not_ready,
            gave_up: stored.gave_up,
            spawn_intent: stored.spawn_intent,
            session_job: stored.session_job,
        };
        StreamState {
            lifecycle: stored.lifecycle,
            restarts: stored.restarts,
            restarts_total: stored.restarts_total,
            restarts_since_reset: stored.restarts_since_reset,
            completed_at_last_restart: stored.completed_at_last_restart,
            streak: stored.streak,
            same_failure_count: stored.same_failure_count,
            deaths_total: stored.deaths_total,
            probe_failures_total: stored.probe_failures_total,
            gave_up_total: stored.gave_up_total,
            worker: stored.worker,
            history: History::boxed_unless_empty(history),
        }
    }
}

/// Why a stream stopped being restarted until an operator `reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GiveUp {
    /// The `--max-restarts` budget of restarts without progress is spent.
    Budget { max: u32 },
    /// The same failure signature this many times in a row (opt-in breaker).
    SameFailure { signature: String, count: u32 },
    /// A start that would fail the same way every time: the wrapper is
    /// missing or not executable, or it (or `claude`) exited 126/127 within
    /// the startup window. Retrying only burns the budget.
    Deterministic { exit: Option<i32>, reason: String },
}

impl std::fmt::Display for GiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GiveUp::Budget { max } => write!(f, "max restart limit ({max}) reached"),
            GiveUp::SameFailure { signature, count } => {
                write!(f, "the same failure {count} times in a row: {signature}")
            }
            GiveUp::Deterministic { exit, reason } => match exit {
                Some(code) => write!(f, "{reason} (exit code {code} at start)"),
                None => write!(f, "{reason}"),
            },
        }
    }
}

impl GiveUp {
    /// The line monitor.log and the console get; the budget keeps the
    /// original's words, which scripts grep for.
    pub fn announcement(&self, stream: &str) -> String {
        match self {
            GiveUp::Budget { max } => {
                format!("Worker {stream} has reached max restart limit ({max})")
            }
            GiveUp::Deterministic { .. } => format!(
                "Worker {stream} gave up: {self}; every restart would fail the same way \
                 (fix it, then run: monitor-workers reset {stream})"
            ),
            other => format!("Worker {stream} gave up: {other}"),
        }
    }
}

/// A restart journalled before its spawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnIntent {
    /// The spawn's nonce (`MONITOR_WORKERS_SPAWN` of the new worker).
    pub nonce: String,
    pub at_ms: u64,
    /// The monitor that spawns.
    pub monitor_pid: u32,
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
