//! The supervisor's memory of every stream, as the pure core sees it:
//! lifecycle, restart accounting (budget, backoff streak, rate-limit window),
//! failure history and the identity of the worker last seen running. The
//! state store (`crate::state`) persists it; nothing here touches a file.

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
    /// Restarts since an operator last forgave the stream (`reset`,
    /// `restart STREAM`): the RESTARTS column of `status`.
    #[serde(skip_serializing_if = "is_zero")]
    pub restarts_since_reset: u32,
    /// How the worker last ended, when known (`exit 127`, `SIGKILL`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
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
    /// Why the stream gave up, while it is given up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gave_up: Option<GiveUp>,
    /// A restart about to spawn (journalled before the spawn, cleared when
    /// it is recorded as done): what a monitor killed mid-spawn leaves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spawn_intent: Option<SpawnIntent>,
    /// tc projects: the job id of the Claude session the monitor last
    /// dispatched for the stream (how it recognises its own session).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_job: Option<String>,
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

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}
