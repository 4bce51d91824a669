//! The worker lifecycle as one explicit state machine. Every change of a
//! stream's state goes through [`transition`], which looks the move up in
//! [`MOVES`], the one states × events table, and only fills in the payload of
//! the new state. An illegal move is an error the caller logs, never a silent
//! change.

use serde::{Deserialize, Serialize};

use super::assess::Verdict;

/// Where a stream's worker is in its life. Times are ms since the epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
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
                Verdict::NeverStarted | Verdict::NoTasks => EventKind::SeenNotStarted,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::StreamId;

    fn sample(kind: Kind) -> Lifecycle {
        match kind {
            Kind::NotStarted => Lifecycle::NotStarted,
            Kind::WaitingOnDeps => Lifecycle::WaitingOnDeps {
                waiting: vec!["A".into()],
            },
            Kind::Starting => Lifecycle::Starting {
                pid: 10,
                since_ms: 1,
            },
            Kind::Running => Lifecycle::Running {
                pid: 10,
                since_ms: 1,
            },
            Kind::Unhealthy => Lifecycle::Unhealthy {
                reason: "dead".into(),
                since_ms: 1,
            },
            Kind::Backoff => Lifecycle::Backoff {
                until_ms: 50,
                reason: "backoff".into(),
            },
            Kind::Restarting => Lifecycle::Restarting { attempt: 1 },
            Kind::Stopped => Lifecycle::Stopped { by: "op".into() },
            Kind::Completed => Lifecycle::Completed,
            Kind::GaveUp => Lifecycle::GaveUp {
                reason: "budget".into(),
            },
            Kind::Paused => Lifecycle::Paused { by: "op".into() },
        }
    }

    fn events() -> Vec<(&'static str, Event)> {
        vec![
            (
                "seen running",
                Event::Observed(Verdict::Running { pid: 10 }),
            ),
            (
                "seen dead",
                Event::Observed(Verdict::Dead {
                    reason: "gone".into(),
                }),
            ),
            ("seen complete", Event::Observed(Verdict::Complete)),
            (
                "seen waiting",
                Event::Observed(Verdict::WaitingOnDeps {
                    waiting: vec![StreamId::parse("A").unwrap()],
                }),
            ),
            ("seen never started", Event::Observed(Verdict::NeverStarted)),
            ("restart begun", Event::RestartBegun { attempt: 1 }),
            ("spawned", Event::Spawned { pid: 11 }),
            (
                "spawn failed",
                Event::SpawnFailed {
                    until_ms: 99,
                    error: "x".into(),
                },
            ),
            (
                "deferred",
                Event::Deferred {
                    until_ms: 99,
                    reason: "rate".into(),
                },
            ),
            (
                "budget spent",
                Event::BudgetSpent {
                    reason: "max".into(),
                },
            ),
            ("pause", Event::Pause { by: "op".into() }),
            ("resume", Event::Resume),
            ("stop", Event::Stop { by: "op".into() }),
            ("reset", Event::Reset),
            ("operator restart", Event::OperatorRestart),
        ]
    }

    /// One event of each kind, in [`EventKind::ALL`] order.
    fn sample_event(kind: EventKind) -> Event {
        let event = match kind {
            EventKind::SeenRunning => Event::Observed(Verdict::Running { pid: 10 }),
            EventKind::SeenStartingUp => Event::Observed(Verdict::StartingUp { pid: 10 }),
            EventKind::SeenUnhealthy => Event::Observed(Verdict::Unhealthy {
                pid: 10,
                reason: "stuck".into(),
            }),
            EventKind::SeenDead => Event::Observed(Verdict::Dead {
                reason: "gone".into(),
            }),
            EventKind::SeenComplete => Event::Observed(Verdict::Complete),
            EventKind::SeenWaiting => Event::Observed(Verdict::WaitingOnDeps {
                waiting: vec![StreamId::parse("A").unwrap()],
            }),
            EventKind::SeenNotStarted => Event::Observed(Verdict::NoTasks),
            EventKind::RestartBegun => Event::RestartBegun { attempt: 2 },
            EventKind::Spawned => Event::Spawned { pid: 11 },
            EventKind::SpawnFailed => Event::SpawnFailed {
                until_ms: 99,
                error: "x".into(),
            },
            EventKind::Deferred => Event::Deferred {
                until_ms: 99,
                reason: "rate".into(),
            },
            EventKind::BudgetSpent => Event::BudgetSpent {
                reason: "max".into(),
            },
            EventKind::Pause => Event::Pause { by: "op2".into() },
            EventKind::Resume => Event::Resume,
            EventKind::Stop => Event::Stop { by: "op2".into() },
            EventKind::Reset => Event::Reset,
            EventKind::OperatorRestart => Event::OperatorRestart,
        };
        assert_eq!(event.kind(), kind);
        event
    }

    /// Event names are written to monitor.log and the event log.
    #[test]
    fn event_names_are_stable() {
        let mut names: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
        names.dedup();
        assert_eq!(
            names,
            [
                "observed",
                "restart_begun",
                "spawned",
                "spawn_failed",
                "deferred",
                "budget_spent",
                "pause",
                "resume",
                "stop",
                "reset",
                "operator_restart"
            ]
        );
    }

    /// Every cell of [`MOVES`] is carried out: a refusal refuses, a stay
    /// leaves the state untouched, a move yields a state of the named kind
    /// (so the event always carries the payload that kind needs).
    #[test]
    fn transition_carries_out_every_cell_of_the_table() {
        let mut legal_moves = 0;
        for from_kind in Kind::ALL {
            let from = sample(from_kind);
            for event_kind in EventKind::ALL {
                let got = transition(&from, &sample_event(event_kind), 7);
                let cell = format!("{from_kind:?} + {event_kind:?}");
                match move_for(from_kind, event_kind) {
                    Move::Illegal => assert!(got.is_err(), "{cell}"),
                    Move::Stay => assert_eq!(got.as_ref(), Ok(&from), "{cell}"),
                    Move::To(to) => {
                        assert_eq!(got.map(|s| s.kind()), Ok(to), "{cell}");
                        assert!(is_legal(from_kind, to), "{cell}");
                    }
                }
            }
            for to in Kind::ALL {
                if to != from_kind && is_legal(from_kind, to) {
                    legal_moves += 1;
                }
            }
        }
        // Backoff -> Unhealthy is not among them: a stream still failing while
        // it waits to restart stays in backoff.
        assert_eq!(legal_moves, 80, "moves between different states");
    }

    #[test]
    fn pid_and_reason_project_the_payload() {
        let cases: Vec<(Lifecycle, Option<i32>, Option<&str>)> = vec![
            (Lifecycle::NotStarted, None, None),
            (
                Lifecycle::WaitingOnDeps {
                    waiting: vec!["a".into(), "b".into()],
                },
                None,
                Some("waiting on a, b"),
            ),
            (
                Lifecycle::Starting {
                    pid: 3,
                    since_ms: 1,
                },
                Some(3),
                None,
            ),
            (
                Lifecycle::Running {
                    pid: 4,
                    since_ms: 1,
                },
                Some(4),
                None,
            ),
            (
                Lifecycle::Unhealthy {
                    reason: "dead".into(),
                    since_ms: 1,
                },
                None,
                Some("dead"),
            ),
            (
                Lifecycle::Backoff {
                    until_ms: 5,
                    reason: "backing off".into(),
                },
                None,
                Some("backing off"),
            ),
            (Lifecycle::Restarting { attempt: 2 }, None, None),
            (
                Lifecycle::Stopped { by: "ann".into() },
                None,
                Some("by ann"),
            ),
            (Lifecycle::Completed, None, None),
            (
                Lifecycle::GaveUp {
                    reason: "max restart limit (2) reached".into(),
                },
                None,
                Some("max restart limit (2) reached"),
            ),
            (Lifecycle::Paused { by: "bob".into() }, None, Some("by bob")),
        ];
        assert_eq!(cases.len(), Kind::ALL.len(), "every state has a case");
        for (state, pid, reason) in cases {
            assert_eq!(state.pid(), pid, "{state:?}");
            assert_eq!(state.reason().as_deref(), reason, "{state:?}");
        }
    }

    /// The full states × events table: the expected resulting state, `None`
    /// for an illegal event. Columns follow `events()`.
    #[test]
    fn states_by_events() {
        use Kind::*;
        let x: Option<Kind> = None;
        #[rustfmt::skip]
        let table: Vec<(Kind, [Option<Kind>; 15])> = vec![
            //                running        dead              complete         waiting              never            begun             spawned         failed          deferred        spent           pause         resume             stop           reset              op restart
            (NotStarted,    [Some(Running), Some(Unhealthy), Some(Completed), Some(WaitingOnDeps), Some(NotStarted), x,               x,              x,              x,              x,              Some(Paused), Some(NotStarted), Some(Stopped), Some(NotStarted), Some(Restarting)]),
            (WaitingOnDeps, [Some(Running), Some(Unhealthy), Some(Completed), Some(WaitingOnDeps), Some(NotStarted), x,               x,              x,              x,              x,              Some(Paused), Some(WaitingOnDeps), Some(Stopped), Some(WaitingOnDeps), Some(Restarting)]),
            (Starting,      [Some(Running), Some(Unhealthy), Some(Completed), Some(WaitingOnDeps), Some(NotStarted), x,               x,              x,              x,              x,              Some(Paused), Some(Starting), Some(Stopped), Some(Starting), Some(Restarting)]),
            (Running,       [Some(Running), Some(Unhealthy), Some(Completed), Some(WaitingOnDeps), Some(NotStarted), x,               x,              x,              x,              x,              Some(Paused), Some(Running), Some(Stopped), Some(Running), Some(Restarting)]),
            (Unhealthy,     [Some(Running), Some(Unhealthy), Some(Completed), Some(WaitingOnDeps), Some(NotStarted), Some(Restarting), Some(Starting), Some(Backoff),  Some(Backoff),  Some(GaveUp),   Some(Paused), Some(Unhealthy), Some(Stopped), Some(NotStarted), Some(Restarting)]),
            (Backoff,       [Some(Running), Some(Backoff),   Some(Completed), Some(WaitingOnDeps), Some(NotStarted), Some(Restarting), Some(Starting), Some(Backoff),  Some(Backoff),  Some(GaveUp),   Some(Paused), Some(Backoff), Some(Stopped), Some(NotStarted), Some(Restarting)]),
            (Restarting,    [Some(Running), Some(Unhealthy), Some(Completed), Some(WaitingOnDeps), Some(NotStarted), x,               Some(Starting), Some(Backoff),  x,              Some(GaveUp),   Some(Paused), Some(Restarting), Some(Stopped), Some(Restarting), Some(Restarting)]),
            (Stopped,       [Some(Stopped), Some(Stopped),   Some(Stopped),   Some(Stopped),       Some(Stopped),    x,               x,              x,              x,              x,              Some(Paused), Some(NotStarted), Some(Stopped), Some(Stopped), Some(Restarting)]),
            (Completed,     [Some(Running), Some(Unhealthy), Some(Completed), Some(WaitingOnDeps), Some(NotStarted), x,               x,              x,              x,              x,              Some(Paused), Some(Completed), Some(Stopped), Some(Completed), Some(Restarting)]),
            (GaveUp,        [Some(Running), Some(GaveUp),    Some(Completed), Some(GaveUp),        Some(GaveUp),     x,               x,              x,              x,              x,              Some(Paused), Some(GaveUp), Some(Stopped), Some(NotStarted), Some(Restarting)]),
            (Paused,        [Some(Paused),  Some(Paused),    Some(Paused),    Some(Paused),        Some(Paused),     x,               x,              x,              x,              x,              Some(Paused), Some(NotStarted), Some(Stopped), Some(Paused), x]),
        ];
        assert_eq!(table.len(), Kind::ALL.len(), "every state has a row");
        for (from_kind, row) in table {
            for ((name, event), want) in events().into_iter().zip(row) {
                let got = transition(&sample(from_kind), &event, 7).map(|s| s.kind());
                assert_eq!(got.ok(), want, "{from_kind:?} + {name}");
            }
        }
    }

    #[test]
    fn restarting_from_a_dead_running_worker_is_not_a_move() {
        // A running worker must be seen dead before anything restarts it.
        assert!(transition(
            &sample(Kind::Running),
            &Event::RestartBegun { attempt: 1 },
            0
        )
        .is_err());
        // Nor a completed or waiting one: only the operator may.
        for kind in [
            Kind::Completed,
            Kind::WaitingOnDeps,
            Kind::NotStarted,
            Kind::Starting,
        ] {
            assert!(
                transition(&sample(kind), &Event::RestartBegun { attempt: 1 }, 0).is_err(),
                "{kind:?}"
            );
        }
        assert!(!is_legal(Kind::Paused, Kind::Restarting));
    }

    #[test]
    fn running_keeps_its_start_and_dead_keeps_its_backoff() {
        let running = Lifecycle::Running {
            pid: 10,
            since_ms: 1,
        };
        let seen = transition(
            &running,
            &Event::Observed(Verdict::Running { pid: 10 }),
            500,
        )
        .unwrap();
        assert_eq!(seen, running);
        let other_pid = transition(
            &running,
            &Event::Observed(Verdict::Running { pid: 12 }),
            500,
        )
        .unwrap();
        assert_eq!(
            other_pid,
            Lifecycle::Running {
                pid: 12,
                since_ms: 500
            }
        );
        let backoff = sample(Kind::Backoff);
        let still = transition(
            &backoff,
            &Event::Observed(Verdict::Dead {
                reason: "gone".into(),
            }),
            9,
        )
        .unwrap();
        assert_eq!(still, backoff);
    }

    #[test]
    fn probes_move_a_running_worker() {
        let running = Lifecycle::Running {
            pid: 10,
            since_ms: 1,
        };
        let stuck = Verdict::Unhealthy {
            pid: 10,
            reason: "no log output for 700s".into(),
        };
        let to = transition(&running, &Event::Observed(stuck), 9).unwrap();
        assert_eq!(
            to,
            Lifecycle::Unhealthy {
                reason: "no log output for 700s".into(),
                since_ms: 9
            }
        );
        let starting = transition(
            &Lifecycle::NotStarted,
            &Event::Observed(Verdict::StartingUp { pid: 3 }),
            4,
        )
        .unwrap();
        assert_eq!(
            starting,
            Lifecycle::Starting {
                pid: 3,
                since_ms: 4
            }
        );
        let still = transition(
            &starting,
            &Event::Observed(Verdict::StartingUp { pid: 3 }),
            8,
        )
        .unwrap();
        assert_eq!(still, starting, "the start time is kept");
    }

    #[test]
    fn lifecycle_serialises_with_a_state_tag() {
        let json = serde_json::to_string(&Lifecycle::Backoff {
            until_ms: 5,
            reason: "r".into(),
        })
        .unwrap();
        assert_eq!(json, r#"{"state":"backoff","until_ms":5,"reason":"r"}"#);
        let back: Lifecycle = serde_json::from_str(&json).unwrap();
        assert_eq!(back.kind(), Kind::Backoff);
    }
}
