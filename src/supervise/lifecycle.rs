//! The worker lifecycle as one explicit state machine. Every change of a
//! stream's state goes through [`transition`], which looks the move up in
//! [`MOVES`], the one states × events table, and only fills in the payload of
//! the new state. An illegal move is an error the caller logs, never a silent
//! change.

use serde::Serialize;

use super::assess::Verdict;

/// Where a stream's worker is in its life. Times are ms since the epoch.
/// Stored as `{"state": "<name>", ...fields}`, and read by a reader of its
/// own (`lifecycle_de.rs`) that does without serde's buffering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Lifecycle {
    /// Nothing shows the worker ever ran (no log evidence, or no tasks).
    #[default]
    NotStarted,
    /// Some dependency is not complete yet.
    WaitingOnDeps { waiting: Vec<String> },
    /// Spawned by a monitor; not yet seen running by a later check.
    Starting { pid: i32, since_ms: u64 },
    /// Running.
    Running { pid: i32, since_ms: u64 },
    /// Should run and does not (dead, zombie, reused PID, failed liveness).
    Unhealthy { reason: String, since_ms: u64 },
    /// Waiting before the next restart (backoff, rate limit, global breaker).
    Backoff { until_ms: u64, reason: String },
    /// A restart is in flight.
    Restarting { attempt: u32 },
    /// Stopped by an operator: not restarted until resumed or restarted.
    Stopped { by: String },
    /// Every task is completed or cancelled.
    Completed,
    /// The restart budget is spent: not restarted until an operator reset.
    GaveUp { reason: String },
    /// Paused by an operator: watched and reported, never restarted.
    Paused { by: String },
}

/// The state names, for the legality table and for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    NotStarted,
    WaitingOnDeps,
    Starting,
    Running,
    Unhealthy,
    Backoff,
    Restarting,
    Stopped,
    Completed,
    GaveUp,
    Paused,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::NotStarted,
        Kind::WaitingOnDeps,
        Kind::Starting,
        Kind::Running,
        Kind::Unhealthy,
        Kind::Backoff,
        Kind::Restarting,
        Kind::Stopped,
        Kind::Completed,
        Kind::GaveUp,
        Kind::Paused,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::NotStarted => "not_started",
            Kind::WaitingOnDeps => "waiting_on_deps",
            Kind::Starting => "starting",
            Kind::Running => "running",
            Kind::Unhealthy => "unhealthy",
            Kind::Backoff => "backoff",
            Kind::Restarting => "restarting",
            Kind::Stopped => "stopped",
            Kind::Completed => "completed",
            Kind::GaveUp => "gave_up",
            Kind::Paused => "paused",
        }
    }
}

impl Lifecycle {
    pub fn kind(&self) -> Kind {
        match self {
            Lifecycle::NotStarted => Kind::NotStarted,
            Lifecycle::WaitingOnDeps { .. } => Kind::WaitingOnDeps,
            Lifecycle::Starting { .. } => Kind::Starting,
            Lifecycle::Running { .. } => Kind::Running,
            Lifecycle::Unhealthy { .. } => Kind::Unhealthy,
            Lifecycle::Backoff { .. } => Kind::Backoff,
            Lifecycle::Restarting { .. } => Kind::Restarting,
            Lifecycle::Stopped { .. } => Kind::Stopped,
            Lifecycle::Completed => Kind::Completed,
            Lifecycle::GaveUp { .. } => Kind::GaveUp,
            Lifecycle::Paused { .. } => Kind::Paused,
        }
    }

    /// States an operator put the stream in; observations do not undo them.
    pub fn is_held(&self) -> bool {
        matches!(self, Lifecycle::Paused { .. } | Lifecycle::Stopped { .. })
    }

    /// The worker's PID while it is starting or running.
    pub fn pid(&self) -> Option<i32> {
        match self {
            Lifecycle::Running { pid, .. } | Lifecycle::Starting { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    /// Why the stream is in this state, for logs and status: the failure or
    /// wait reason, who holds it, or what it waits on. `None` for states that
    /// need no explanation.
    pub fn reason(&self) -> Option<String> {
        match self {
            Lifecycle::Unhealthy { reason, .. }
            | Lifecycle::Backoff { reason, .. }
            | Lifecycle::GaveUp { reason } => Some(reason.clone()),
            Lifecycle::Paused { by } | Lifecycle::Stopped { by } => Some(format!("by {by}")),
            Lifecycle::WaitingOnDeps { waiting } => {
                Some(format!("waiting on {}", waiting.join(", ")))
            }
            _ => None,
        }
    }

    /// One short phrase for logs and status.
    pub fn describe(&self) -> String {
        match self {
            Lifecycle::Unhealthy { reason, .. } => format!("unhealthy: {reason}"),
            Lifecycle::Backoff { reason, .. } => format!("backoff: {reason}"),
            Lifecycle::GaveUp { reason } => format!("gave up: {reason}"),
            Lifecycle::Stopped { by } => format!("stopped by {by}"),
            Lifecycle::Paused { by } => format!("paused by {by}"),
            Lifecycle::Restarting { attempt } => format!("restarting (attempt {attempt})"),
            Lifecycle::Running { pid, .. } => format!("running (PID {pid})"),
            Lifecycle::Starting { pid, .. } => format!("starting (PID {pid})"),
            Lifecycle::WaitingOnDeps { waiting } => format!("waiting on {}", waiting.join(", ")),
            other => other.kind().name().replace('_', " "),
        }
    }
}

/// Something that happened to a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A check judged the stream.
    Observed(Verdict),
    /// A restart was decided and charged.
    RestartBegun {
        attempt: u32,
    },
    /// The wrapper started and its PID file names a live worker.
    Spawned {
        pid: i32,
    },
    /// The restart failed; try again after `until_ms`.
    SpawnFailed {
        until_ms: u64,
        error: String,
    },
    /// A restart is due but must wait (backoff, rate limit, breaker).
    Deferred {
        until_ms: u64,
        reason: String,
    },
    /// The restart budget is spent.
    BudgetSpent {
        reason: String,
    },
    /// Operator commands.
    Pause {
        by: String,
    },
    Resume,
    Stop {
        by: String,
    },
    Reset,
    OperatorRestart,
}

impl Event {
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition: {event} in state {from}")]
pub struct IllegalTransition {
    pub from: &'static str,
    pub event: &'static str,
}

/// The events as columns of [`MOVES`]: an observation counts by its verdict,
/// since each verdict leads somewhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    SeenRunning,
    SeenStartingUp,
    SeenUnhealthy,
    SeenDead,
    SeenComplete,
    SeenWaiting,
    /// Never started, or no tasks: both mean nothing has run.
    SeenNotStarted,
    RestartBegun,
    Spawned,
    SpawnFailed,
    Deferred,
    BudgetSpent,
    Pause,
    Resume,
    Stop,
    Reset,
    OperatorRestart,
}

impl EventKind {
    pub const ALL: [EventKind; 17] = [
        EventKind::SeenRunning,
        EventKind::SeenStartingUp,
        EventKind::SeenUnhealthy,
        EventKind::SeenDead,
        EventKind::SeenComplete,
        EventKind::SeenWaiting,
        EventKind::SeenNotStarted,
        EventKind::RestartBegun,
        EventKind::Spawned,
        EventKind::SpawnFailed,
        EventKind::Deferred,
        EventKind::BudgetSpent,
        EventKind::Pause,
        EventKind::Resume,
        EventKind::Stop,
        EventKind::Reset,
        EventKind::OperatorRestart,
    ];

    /// The name of the events of this kind, as [`Event::name`] gives it.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::SeenRunning
            | EventKind::SeenStartingUp
            | EventKind::SeenUnhealthy
            | EventKind::SeenDead
            | EventKind::SeenComplete
            | EventKind::SeenWaiting
            | EventKind::SeenNotStarted => "observed",
            EventKind::RestartBegun => "restart_begun",
            EventKind::Spawned => "spawned",
            EventKind::SpawnFailed => "spawn_failed",
            EventKind::Deferred => "deferred",
            EventKind::BudgetSpent => "budget_spent",
            EventKind::Pause => "pause",
            EventKind::Resume => "resume",
            EventKind::Stop => "stop",
            EventKind::Reset => "reset",
            EventKind::OperatorRestart => "operator_restart",
        }
    }
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Observed(verdict) => match verdict {
                Verdict::Running { .. } => EventKind::SeenRunning,
                Verdict::StartingUp { .. } => EventKind::SeenStartingUp,
                Verdict::Unhealthy { .. } => EventKind::SeenUnhealthy,
                Verdict::Dead { .. } => EventKind::SeenDead,
                Verdict::Complete => EventKind::SeenComplete,
                Verdict::WaitingOnDeps { .. } => EventKind::SeenWaiting,
                // Nothing to restart: blocked and ready tc streams wait for a
                // person (or --start-ready), and one whose workers cannot be
                // told is never restarted.
                Verdict::NeverStarted
                | Verdict::NoTasks
                | Verdict::Blocked
                | Verdict::Ready
                | Verdict::CannotTell { .. } => EventKind::SeenNotStarted,
            },
            Event::RestartBegun { .. } => EventKind::RestartBegun,
            Event::Spawned { .. } => EventKind::Spawned,
            Event::SpawnFailed { .. } => EventKind::SpawnFailed,
            Event::Deferred { .. } => EventKind::Deferred,
            Event::BudgetSpent { .. } => EventKind::BudgetSpent,
            Event::Pause { .. } => EventKind::Pause,
            Event::Resume => EventKind::Resume,
            Event::Stop { .. } => EventKind::Stop,
            Event::Reset => EventKind::Reset,
            Event::OperatorRestart => EventKind::OperatorRestart,
        }
    }
}

/// What one event does in one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// Refused: the caller logs it and nothing changes.
    Illegal,
    /// Nothing changes, payload included.
    Stay,
    /// A new state of this kind, its payload taken from the event.
    To(Kind),
}

/// One state's moves, one per event, in [`EventKind::ALL`] order.
pub type Row = [Move; EventKind::ALL.len()];

/// The one definition of the lifecycle: for each state (row, in [`Kind::ALL`]
/// order) and event (column), where the stream goes. [`transition`] looks the
/// move up here and only fills in the payload.
pub const MOVES: [Row; Kind::ALL.len()] = [
    NOT_STARTED,
    WAITING_ON_DEPS,
    STARTING,
    RUNNING,
    UNHEALTHY,
    BACKOFF,
    RESTARTING,
    STOPPED,
    COMPLETED,
    GAVE_UP,
    PAUSED,
];

// Rows are indexed by `Kind as usize`: the declaration order must be the
// order of `Kind::ALL` (checked when compiling).
const _: () = {
    let mut i = 0;
    while i < Kind::ALL.len() {
        assert!(Kind::ALL[i] as usize == i);
        i += 1;
    }
    let mut i = 0;
    while i < EventKind::ALL.len() {
        assert!(EventKind::ALL[i] as usize == i);
        i += 1;
    }
};

use Kind::*;
use Move::{Illegal, Stay, To};

// Columns:                   seen running seen starting seen unhealthy seen dead      seen complete  seen waiting       seen nothing    restart begun   spawned        spawn failed   deferred       budget spent   pause       resume          stop         reset           operator restart
/// Nothing ran yet: observations move it; only the operator restarts it.
#[rustfmt::skip]
const NOT_STARTED: Row =     [To(Running), To(Starting), To(Unhealthy), To(Unhealthy), To(Completed), To(WaitingOnDeps), To(NotStarted), Illegal,        Illegal,       Illegal,       Illegal,       Illegal,       To(Paused), Stay,           To(Stopped), Stay,           To(Restarting)];
/// Waiting on dependencies: as not started.
#[rustfmt::skip]
const WAITING_ON_DEPS: Row = [To(Running), To(Starting), To(Unhealthy), To(Unhealthy), To(Completed), To(WaitingOnDeps), To(NotStarted), Illegal,        Illegal,       Illegal,       Illegal,       Illegal,       To(Paused), Stay,           To(Stopped), Stay,           To(Restarting)];
/// Spawned, not yet confirmed: a worker must be seen failing before the
/// supervisor restarts it.
#[rustfmt::skip]
const STARTING: Row =        [To(Running), To(Starting), To(Unhealthy), To(Unhealthy), To(Completed), To(WaitingOnDeps), To(NotStarted), Illegal,        Illegal,       Illegal,       Illegal,       Illegal,       To(Paused), Stay,           To(Stopped), Stay,           To(Restarting)];
/// Running: as starting.
#[rustfmt::skip]
const RUNNING: Row =         [To(Running), To(Starting), To(Unhealthy), To(Unhealthy), To(Completed), To(WaitingOnDeps), To(NotStarted), Illegal,        Illegal,       Illegal,       Illegal,       Illegal,       To(Paused), Stay,           To(Stopped), Stay,           To(Restarting)];
/// Failing: the one state (with backoff) a supervisor restart starts from.
/// A restart's end may arrive after a concurrent check moved the stream on.
#[rustfmt::skip]
const UNHEALTHY: Row =       [To(Running), To(Starting), To(Unhealthy), To(Unhealthy), To(Completed), To(WaitingOnDeps), To(NotStarted), To(Restarting), To(Starting),  To(Backoff),   To(Backoff),   To(GaveUp),    To(Paused), Stay,           To(Stopped), To(NotStarted), To(Restarting)];
/// Waiting to restart: still failing keeps the wait going.
#[rustfmt::skip]
const BACKOFF: Row =         [To(Running), To(Starting), Stay,          Stay,          To(Completed), To(WaitingOnDeps), To(NotStarted), To(Restarting), To(Starting),  To(Backoff),   To(Backoff),   To(GaveUp),    To(Paused), Stay,           To(Stopped), To(NotStarted), To(Restarting)];
/// A restart in flight ends in spawned or spawn failed; one left half done
/// (its monitor killed) is judged afresh by the next observation.
#[rustfmt::skip]
const RESTARTING: Row =      [To(Running), To(Starting), To(Unhealthy), To(Unhealthy), To(Completed), To(WaitingOnDeps), To(NotStarted), Illegal,        To(Starting),  To(Backoff),   Illegal,       To(GaveUp),    To(Paused), Stay,           To(Stopped), Stay,           To(Restarting)];
/// Held by the operator: observations do not undo it; resume or restart do.
#[rustfmt::skip]
const STOPPED: Row =         [Stay,        Stay,          Stay,          Stay,          Stay,          Stay,              Stay,           Illegal,        Illegal,       Illegal,       Illegal,       Illegal,       To(Paused), To(NotStarted), To(Stopped), Stay,           To(Restarting)];
/// Every task done: as running.
#[rustfmt::skip]
const COMPLETED: Row =       [To(Running), To(Starting), To(Unhealthy), To(Unhealthy), To(Completed), To(WaitingOnDeps), To(NotStarted), Illegal,        Illegal,       Illegal,       Illegal,       Illegal,       To(Paused), Stay,           To(Stopped), Stay,           To(Restarting)];
/// Budget spent: left only when seen running or complete, or by the operator.
#[rustfmt::skip]
const GAVE_UP: Row =         [To(Running), Stay,          Stay,          Stay,          To(Completed), Stay,              Stay,           Illegal,        Illegal,       Illegal,       Illegal,       Illegal,       To(Paused), Stay,           To(Stopped), To(NotStarted), To(Restarting)];
/// Held by the operator and never restarted, not even by the operator:
/// resume first.
#[rustfmt::skip]
const PAUSED: Row =          [Stay,        Stay,          Stay,          Stay,          Stay,          Stay,              Stay,           Illegal,        Illegal,       Illegal,       Illegal,       Illegal,       To(Paused), To(NotStarted), To(Stopped), Stay,           Illegal];

/// The move `event` makes in state `from`.
pub fn move_for(from: Kind, event: EventKind) -> Move {
    MOVES[from as usize][event as usize]
}

/// Whether some event moves a stream from `from` to `to`; staying is always
/// legal. Derived from [`MOVES`].
#[cfg(test)]
pub fn is_legal(from: Kind, to: Kind) -> bool {
    from == to || MOVES[from as usize].contains(&To(to))
}

/// The one transition function: the move comes from [`MOVES`]; `now_ms`
/// stamps states that carry a time.
pub fn transition(
    from: &Lifecycle,
    event: &Event,
    now_ms: u64,
) -> Result<Lifecycle, IllegalTransition> {
    let illegal = || IllegalTransition {
        from: from.kind().name(),
        event: event.name(),
    };
    match move_for(from.kind(), event.kind()) {
        Illegal => Err(illegal()),
        Stay => Ok(from.clone()),
        To(to) => enter(to, from, event, now_ms).ok_or_else(illegal),
    }
}

/// The new state of kind `to`, its payload from `event`. A worker seen again
/// with the same PID keeps its start time, and a stream still failing keeps
/// the time it started failing. `None` if the event carries nothing for that
/// kind: a mistake in [`MOVES`], which the tests rule out cell by cell.
fn enter(to: Kind, from: &Lifecycle, event: &Event, now_ms: u64) -> Option<Lifecycle> {
    use Lifecycle as L;
    let state = match (to, event) {
        (NotStarted, _) => L::NotStarted,
        (Completed, _) => L::Completed,
        (WaitingOnDeps, Event::Observed(Verdict::WaitingOnDeps { waiting })) => L::WaitingOnDeps {
            waiting: waiting.iter().map(|w| w.to_string()).collect(),
        },
        (Running, Event::Observed(Verdict::Running { pid })) => {
            let since_ms = match from {
                L::Running { pid: p, since_ms } | L::Starting { pid: p, since_ms } if p == pid => {
                    *since_ms
                }
                _ => now_ms,
            };
            L::Running {
                pid: *pid,
                since_ms,
            }
        }
        (Starting, Event::Observed(Verdict::StartingUp { pid }) | Event::Spawned { pid }) => {
            let since_ms = match from {
                L::Starting { pid: p, since_ms } if p == pid => *since_ms,
                _ => now_ms,
            };
            L::Starting {
                pid: *pid,
                since_ms,
            }
        }
        (
            Unhealthy,
            Event::Observed(Verdict::Unhealthy { reason, .. } | Verdict::Dead { reason }),
        ) => L::Unhealthy {
            reason: reason.clone(),
            since_ms: match from {
                L::Unhealthy { since_ms, .. } => *since_ms,
                _ => now_ms,
            },
        },
        (Backoff, Event::SpawnFailed { until_ms, error }) => L::Backoff {
            until_ms: *until_ms,
            reason: format!("restart failed: {error}"),
        },
        (Backoff, Event::Deferred { until_ms, reason }) => L::Backoff {
            until_ms: *until_ms,
            reason: reason.clone(),
        },
        (Restarting, Event::RestartBegun { attempt }) => L::Restarting { attempt: *attempt },
        (Restarting, Event::OperatorRestart) => L::Restarting { attempt: 0 },
        (GaveUp, Event::BudgetSpent { reason }) => L::GaveUp {
            reason: reason.clone(),
        },
        (Paused, Event::Pause { by }) => L::Paused { by: by.clone() },
        (Stopped, Event::Stop { by }) => L::Stopped { by: by.clone() },
        _ => return None,
    };
    Some(state)
}

#[path = "lifecycle_de.rs"]
mod de;

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
