//! The lifecycle table checked cell by cell, and the states × events
//! table of expected moves.

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

#[test]
fn every_state_sits_at_its_discriminant_in_all() {
    // Counters index arrays by `kind as usize` (metrics).
    for (i, kind) in Kind::ALL.into_iter().enumerate() {
        assert_eq!(kind as usize, i, "{kind:?}");
    }
}
