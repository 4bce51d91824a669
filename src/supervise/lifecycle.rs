//! The worker lifecycle as one explicit state machine. Every change of a
//! stream's state goes through [`transition`]; the target is computed from the
//! state and the event, then checked against [`LEGAL`], the one table of legal
//! moves. An illegal move is an error the caller logs, never a silent change.

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
        match self {
            Event::Observed(_) => "observed",
            Event::RestartBegun { .. } => "restart_begun",
            Event::Spawned { .. } => "spawned",
            Event::SpawnFailed { .. } => "spawn_failed",
            Event::Deferred { .. } => "deferred",
            Event::BudgetSpent { .. } => "budget_spent",
            Event::Pause { .. } => "pause",
            Event::Resume => "resume",
            Event::Stop { .. } => "stop",
            Event::Reset => "reset",
            Event::OperatorRestart => "operator_restart",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition: {event} in state {from}")]
pub struct IllegalTransition {
    pub from: &'static str,
    pub event: &'static str,
}

/// Every legal move between different states. Staying in a state is always
/// legal. A move to `Restarting` from a healthy, waiting or completed state
/// exists for the operator's `restart STREAM` only: [`transition`] lets the
/// supervisor's own `RestartBegun` start from a failing state (unhealthy,
/// backoff) and nothing else. A paused stream restarts nothing.
#[rustfmt::skip]
pub const LEGAL: &[(Kind, &[Kind])] = {
    use Kind::*;
    &[
        (NotStarted,    &[WaitingOnDeps, Starting, Running, Unhealthy, Restarting, Completed, Stopped, Paused]),
        (WaitingOnDeps, &[NotStarted, Starting, Running, Unhealthy, Restarting, Completed, Stopped, Paused]),
        (Starting,      &[NotStarted, WaitingOnDeps, Running, Unhealthy, Restarting, Completed, Stopped, Paused]),
        (Running,       &[NotStarted, WaitingOnDeps, Starting, Unhealthy, Restarting, Completed, Stopped, Paused]),
        (Unhealthy,     &[NotStarted, WaitingOnDeps, Starting, Running, Backoff, Restarting, Completed, GaveUp, Stopped, Paused]),
        (Backoff,       &[NotStarted, WaitingOnDeps, Starting, Running, Unhealthy, Restarting, Completed, GaveUp, Stopped, Paused]),
        // A restart left half done (its monitor killed) is judged afresh.
        (Restarting,    &[NotStarted, WaitingOnDeps, Starting, Running, Unhealthy, Backoff, Completed, GaveUp, Stopped, Paused]),
        (Stopped,       &[NotStarted, Restarting, Paused]),
        (Completed,     &[NotStarted, WaitingOnDeps, Starting, Running, Unhealthy, Restarting, Stopped, Paused]),
        (GaveUp,        &[NotStarted, Running, Completed, Restarting, Stopped, Paused]),
        (Paused,        &[NotStarted, Stopped]),
    ]
};

pub fn is_legal(from: Kind, to: Kind) -> bool {
    from == to || LEGAL.iter().any(|(f, tos)| *f == from && tos.contains(&to))
}

/// The one transition function. `now_ms` stamps states that carry a time.
pub fn transition(
    from: &Lifecycle,
    event: &Event,
    now_ms: u64,
) -> Result<Lifecycle, IllegalTransition> {
    use Lifecycle as L;
    let illegal = || IllegalTransition {
        from: from.kind().name(),
        event: event.name(),
    };
    let to = match (from, event) {
        (_, Event::Pause { by }) => L::Paused { by: by.clone() },
        (_, Event::Stop { by }) => L::Stopped { by: by.clone() },
        (L::Paused { .. } | L::Stopped { .. }, Event::Resume) => L::NotStarted,
        (_, Event::Resume) => from.clone(),
        (L::GaveUp { .. } | L::Backoff { .. } | L::Unhealthy { .. }, Event::Reset) => L::NotStarted,
        (_, Event::Reset) => from.clone(),
        (L::Paused { .. }, Event::OperatorRestart) => return Err(illegal()),
        (_, Event::OperatorRestart) => L::Restarting { attempt: 0 },
        // Operator holds survive observations; a given-up stream leaves its
        // state only when it is seen running or complete.
        (L::Paused { .. } | L::Stopped { .. }, Event::Observed(_)) => from.clone(),
        (L::GaveUp { .. }, Event::Observed(Verdict::Running { pid })) => L::Running {
            pid: *pid,
            since_ms: now_ms,
        },
        (L::GaveUp { .. }, Event::Observed(Verdict::Complete)) => L::Completed,
        (L::GaveUp { .. }, Event::Observed(_)) => from.clone(),
        (_, Event::Observed(verdict)) => observe(from, verdict, now_ms),
        (L::Unhealthy { .. } | L::Backoff { .. }, Event::RestartBegun { attempt }) => {
            L::Restarting { attempt: *attempt }
        }
        // A restart ends in Spawned or SpawnFailed; they may also arrive after
        // a concurrent check moved the stream on (a one-shot beside a daemon).
        (
            L::Restarting { .. } | L::Unhealthy { .. } | L::Backoff { .. },
            Event::Spawned { pid },
        ) => L::Starting {
            pid: *pid,
            since_ms: now_ms,
        },
        (
            L::Restarting { .. } | L::Unhealthy { .. } | L::Backoff { .. },
            Event::SpawnFailed { until_ms, error },
        ) => L::Backoff {
            until_ms: *until_ms,
            reason: format!("restart failed: {error}"),
        },
        (L::Unhealthy { .. } | L::Backoff { .. }, Event::Deferred { until_ms, reason }) => {
            L::Backoff {
                until_ms: *until_ms,
                reason: reason.clone(),
            }
        }
        (
            L::Unhealthy { .. } | L::Backoff { .. } | L::Restarting { .. },
            Event::BudgetSpent { reason },
        ) => L::GaveUp {
            reason: reason.clone(),
        },
        _ => return Err(illegal()),
    };
    if is_legal(from.kind(), to.kind()) {
        Ok(to)
    } else {
        Err(illegal())
    }
}

fn observe(from: &Lifecycle, verdict: &Verdict, now_ms: u64) -> Lifecycle {
    use Lifecycle as L;
    match verdict {
        Verdict::Running { pid } => match from {
            L::Running { pid: p, since_ms } | L::Starting { pid: p, since_ms } if p == pid => {
                L::Running {
                    pid: *pid,
                    since_ms: *since_ms,
                }
            }
            _ => L::Running {
                pid: *pid,
                since_ms: now_ms,
            },
        },
        Verdict::StartingUp { pid } => match from {
            L::Starting { pid: p, since_ms } if p == pid => L::Starting {
                pid: *pid,
                since_ms: *since_ms,
            },
            _ => L::Starting {
                pid: *pid,
                since_ms: now_ms,
            },
        },
        Verdict::Unhealthy { reason, .. } => match from {
            L::Backoff { .. } => from.clone(),
            L::Unhealthy { since_ms, .. } => L::Unhealthy {
                reason: reason.clone(),
                since_ms: *since_ms,
            },
            _ => L::Unhealthy {
                reason: reason.clone(),
                since_ms: now_ms,
            },
        },
        Verdict::Complete => L::Completed,
        Verdict::WaitingOnDeps { waiting } => L::WaitingOnDeps {
            waiting: waiting.iter().map(|w| w.to_string()).collect(),
        },
        Verdict::NeverStarted | Verdict::NoTasks => L::NotStarted,
        Verdict::Dead { reason } => match from {
            // Still dead while waiting to restart: the wait goes on.
            L::Backoff { .. } => from.clone(),
            L::Unhealthy { since_ms, .. } => L::Unhealthy {
                reason: reason.clone(),
                since_ms: *since_ms,
            },
            _ => L::Unhealthy {
                reason: reason.clone(),
                since_ms: now_ms,
            },
        },
    }
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
