//! Property test of the pure supervisor over random histories: a few streams
//! are driven through checks with random verdicts, the restarts those checks
//! ask for (each charged, then spawned, failed or abandoned by a killed
//! monitor), and operator commands, while a fake clock moves forward by
//! random amounts. After every step the rules that keep workers safe must
//! hold: the restart budget is never overdrawn without progress, a held
//! (paused or stopped) stream is never restarted by the supervisor, every
//! recorded change is a move of the lifecycle table, and the state machine
//! never refuses the plan.

use proptest::prelude::*;

use super::model::{State, StreamState};
use crate::layout::StreamId;
use crate::process::identity::Remembered;

use super::assess::Verdict;
use super::lifecycle::{move_for, transition, Event, EventKind, Kind, Move};
use super::plan::{
    apply_event, begin_restart, finish_restart, plan_tick, Begin, Change, Changes, Observation,
    PlanSettings, RestartRequest,
};
use super::policy::{forgive, BreakerPolicy, RestartKind, RestartPolicy};

const NAMES: [&str; 3] = ["A", "B", "C"];

/// What one check sees of one stream.
#[derive(Debug, Clone)]
struct Seen {
    verdict: Verdict,
    /// A task completed since the last check (forward progress).
    progressed: bool,
    exit_code: Option<i32>,
    /// Which of two failure fingerprints this failure has, if known.
    signature: Option<bool>,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Pause,
    Resume,
    Stop,
    Reset,
    Restart,
}

#[derive(Debug, Clone)]
enum Step {
    Check {
        advance_ms: u64,
        seen: Vec<Seen>,
        /// How each planned restart ends (cycled).
        launches: Vec<Launch>,
        jitter: f64,
    },
    Operator {
        advance_ms: u64,
        stream: usize,
        op: Op,
        launch: Launch,
    },
}

/// How a restart ends.
#[derive(Debug, Clone, Copy)]
enum Launch {
    Spawned,
    Failed,
    /// Its monitor was killed mid-restart: nothing reports the end, and the
    /// next check judges the stream afresh.
    Abandoned,
}

fn launch() -> impl Strategy<Value = Launch> {
    prop_oneof![
        7 => Just(Launch::Spawned),
        3 => Just(Launch::Failed),
        1 => Just(Launch::Abandoned),
    ]
}

fn verdict() -> impl Strategy<Value = Verdict> {
    let pid = 1..4i32;
    prop_oneof![
        4 => pid.clone().prop_map(|pid| Verdict::Running { pid }),
        1 => pid.clone().prop_map(|pid| Verdict::StartingUp { pid }),
        1 => pid.prop_map(|pid| Verdict::Unhealthy { pid, reason: "no log output".into() }),
        4 => Just(Verdict::Dead { reason: "no PID file".into() }),
        1 => Just(Verdict::Complete),
        1 => Just(Verdict::WaitingOnDeps { waiting: vec![StreamId::parse("Z").unwrap()] }),
        1 => Just(Verdict::NeverStarted),
        1 => Just(Verdict::NoTasks),
    ]
}

fn seen() -> impl Strategy<Value = Seen> {
    (
        verdict(),
        prop::bool::weighted(0.1),
        prop_oneof![Just(None), Just(Some(0)), Just(Some(1))],
        prop_oneof![Just(None), any::<bool>().prop_map(Some)],
    )
        .prop_map(|(verdict, progressed, exit_code, signature)| Seen {
            verdict,
            progressed,
            exit_code,
            signature,
        })
}

/// Mostly short steps (within backoff), sometimes long ones (past the
/// breaker, the rate window and the healthy-reset period).
fn advance() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0..3_000u64, 1 => 0..700_000u64]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Pause),
        Just(Op::Resume),
        Just(Op::Stop),
        Just(Op::Reset),
        Just(Op::Restart),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (
            advance(),
            prop::collection::vec(seen(), NAMES.len()),
            prop::collection::vec(launch(), 1..4),
            0.0..1.0f64,
        )
            .prop_map(|(advance_ms, seen, launches, jitter)| Step::Check {
                advance_ms,
                seen,
                launches,
                jitter,
            }),
        1 => (advance(), 0..NAMES.len(), op(), launch()).prop_map(
            |(advance_ms, stream, op, launch)| Step::Operator {
                advance_ms,
                stream,
                op,
                launch,
            }
        ),
    ]
}

fn settings(max_restarts: u32, kind: RestartKind, same_failure_limit: u32) -> PlanSettings {
    PlanSettings {
        auto_restart: true,
        policy: RestartPolicy {
            kind,
            max_restarts,
            ..RestartPolicy::default()
        },
        breaker: BreakerPolicy::default(),
        same_failure_limit,
        // The startup window has its own tables (plan_tests).
        min_uptime: std::time::Duration::ZERO,
    }
}

/// What the test itself counts of one stream's restart budget.
#[derive(Debug, Clone, Default)]
struct Budget {
    completed: u32,
    /// Supervisor restarts charged since the last progress or operator reset.
    charged: u32,
    /// Completed tasks at the last charge.
    completed_at_charge: Option<u32>,
}

/// Every recorded change is a move the table makes for an event of that name.
fn check_changes(changes: &[Change]) -> Result<(), TestCaseError> {
    for c in changes {
        let (from, to) = (c.from.kind(), c.to.kind());
        prop_assert_ne!(from, to, "a change changes the state: {:?}", c);
        let made_by_table = EventKind::ALL
            .iter()
            .any(|k| k.name() == c.event && move_for(from, *k) == Move::To(to));
        prop_assert!(made_by_table, "not a move of the table: {:?}", c);
        if c.from.is_held() && to == Kind::Restarting {
            prop_assert!(
                from == Kind::Stopped && c.event == "operator_restart",
                "a held stream restarted by the supervisor: {:?}",
                c
            );
        }
    }
    Ok(())
}

fn check_journal(changes: &Changes) -> Result<(), TestCaseError> {
    prop_assert!(changes.refused.is_empty(), "refused: {:?}", changes.refused);
    check_changes(&changes.changes)
}

fn worker(pid: i32, now_ms: u64) -> Remembered {
    Remembered {
        pid,
        start_ticks: now_ms,
        pid_file_mtime: now_ms / 1000,
        proven_in_boot: None,
    }
}

/// Ends a restart the way `launch` says.
fn finish(st: &mut StreamState, id: &StreamId, launch: Launch, now_ms: u64, changes: &mut Changes) {
    let outcome = match launch {
        Launch::Spawned => Ok(worker(100, now_ms)),
        Launch::Failed => Err("wrapper missing".into()),
        Launch::Abandoned => return,
    };
    finish_restart(st, id, outcome, now_ms, changes);
}

fn run(streams: usize, settings: &PlanSettings, steps: &[Step]) -> Result<(), TestCaseError> {
    let ids: Vec<StreamId> = NAMES[..streams]
        .iter()
        .map(|n| StreamId::parse(n).unwrap())
        .collect();
    let max = settings.policy.max_restarts;
    let mut state = State::default();
    let mut budgets = vec![Budget::default(); streams];
    let mut now = 1_000_000u64;
    for step in steps {
        match step {
            Step::Check {
                advance_ms,
                seen,
                launches,
                jitter,
            } => {
                now += advance_ms;
                let observed: Vec<Observation> = ids
                    .iter()
                    .zip(seen)
                    .zip(&mut budgets)
                    .map(|((id, s), budget)| {
                        budget.completed += u32::from(s.progressed);
                        let pid = match s.verdict {
                            Verdict::Running { pid } | Verdict::StartingUp { pid } => Some(pid),
                            _ => None,
                        };
                        Observation {
                            id: id.clone(),
                            verdict: s.verdict.clone(),
                            completed_tasks: budget.completed,
                            exit_code: s.exit_code,
                            worker: pid.map(|p| worker(p, 0)),
                            probes: None,
                            not_ready: None,
                            policy: None,
                            ended_ms: None,
                            last_words: None,
                        }
                    })
                    .collect();
                let mut journal = Changes::default();
                let plan = plan_tick(&mut state, &observed, settings, now, &mut journal);
                check_journal(&journal)?;
                for order in &plan.restarts {
                    let id = &order.id;
                    let st = &state.streams[id.as_str()];
                    prop_assert!(!st.lifecycle.is_held(), "held stream {id} planned");
                }
                for (n, order) in plan.restarts.iter().enumerate() {
                    let id = &order.id;
                    let i = ids.iter().position(|x| x == id).expect("a known stream");
                    let fingerprint = seen[i].signature.map(|b| if b { "fp1" } else { "fp2" });
                    let request = RestartRequest {
                        id,
                        completed_tasks: budgets[i].completed,
                        exit_code: seen[i].exit_code,
                        reason: "dead",
                        policy: order.policy,
                        signature: fingerprint.map(|f| (f, "the same error")),
                    };
                    let breaker = state.breaker_until_ms;
                    let st = state
                        .streams
                        .get_mut(id.as_str())
                        .expect("planned streams exist");
                    let before = st.lifecycle.clone();
                    let mut changes = Changes::default();
                    let begin =
                        begin_restart(st, breaker, &request, settings, now, *jitter, &mut changes);
                    if let Begin::Go { attempt } = begin {
                        prop_assert!(!before.is_held(), "restarted while held: {before:?}");
                        let budget = &mut budgets[i];
                        if budget
                            .completed_at_charge
                            .is_some_and(|c| budget.completed > c)
                        {
                            budget.charged = 0;
                        }
                        budget.charged += 1;
                        budget.completed_at_charge = Some(budget.completed);
                        prop_assert!(
                            budget.charged <= max,
                            "stream {id}: {} restarts charged without progress, budget {max}",
                            budget.charged
                        );
                        prop_assert_eq!(attempt, budget.charged, "attempt of stream {}", id);
                        finish(st, id, launches[n % launches.len()], now, &mut changes);
                    }
                    check_journal(&changes)?;
                }
            }
            Step::Operator {
                advance_ms,
                stream,
                op,
                launch,
            } => {
                now += advance_ms;
                let Some(id) = ids.get(*stream) else { continue };
                let by = "ops".to_string();
                let event = match op {
                    Op::Pause => Event::Pause { by },
                    Op::Resume => Event::Resume,
                    Op::Stop => Event::Stop { by },
                    Op::Reset => Event::Reset,
                    Op::Restart => Event::OperatorRestart,
                };
                let st = state.streams.entry(id.to_string()).or_default();
                let from = st.lifecycle.clone();
                let expected = transition(&from, &event, now);
                // The commands clear the budget along with the event, as
                // `reset` and `restart STREAM` do, when the event is legal.
                if expected.is_ok() && matches!(op, Op::Reset | Op::Restart) {
                    forgive(st);
                    budgets[*stream].charged = 0;
                    budgets[*stream].completed_at_charge = None;
                }
                let mut changes = Changes::default();
                let applied = apply_event(st, id, event, now, &mut changes);
                prop_assert_eq!(applied.is_ok(), expected.is_ok());
                if let Ok(to) = expected {
                    prop_assert_eq!(&st.lifecycle, &to);
                } else {
                    prop_assert_eq!(&st.lifecycle, &from, "a refused event changes nothing");
                }
                check_changes(&changes.changes)?;
                if matches!(op, Op::Restart) && applied.is_ok() {
                    // The operator's restart launches the worker at once.
                    finish(st, id, *launch, now, &mut changes);
                    check_journal(&changes)?;
                }
            }
        }
        for (id, budget) in ids.iter().zip(&budgets) {
            if let Some(st) = state.streams.get(id.as_str()) {
                prop_assert!(
                    st.restarts <= max,
                    "stream {id}: {} of {max} charged",
                    st.restarts
                );
                prop_assert!(budget.charged <= max);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_histories_keep_the_supervisor_safe(
        streams in 1..=NAMES.len(),
        max_restarts in 0..4u32,
        kind in prop_oneof![4 => Just(RestartKind::Always), 1 => Just(RestartKind::OnFailure), 1 => Just(RestartKind::Never)],
        same_failure_limit in prop_oneof![Just(0u32), Just(2), Just(3)],
        steps in prop::collection::vec(step(), 1..60),
    ) {
        run(streams, &settings(max_restarts, kind, same_failure_limit), &steps)?;
    }
}
