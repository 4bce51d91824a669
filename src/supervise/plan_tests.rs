//! The tick plan as tables over a fake clock: crash loops, breakers,
//! budgets and a second monitor racing for the same restart.

use super::*;
use std::time::Duration;

fn id(s: &str) -> StreamId {
    StreamId::parse(s).unwrap()
}

fn obs(s: &str, verdict: Verdict) -> Observation {
    Observation {
        id: id(s),
        verdict,
        completed_tasks: 0,
        exit_code: None,
        worker: None,
        probes: None,
        not_ready: None,
        policy: None,
        ended_ms: None,
        last_words: None,
    }
}

fn dead(s: &str) -> Observation {
    obs(
        s,
        Verdict::Dead {
            reason: "no PID file".into(),
        },
    )
}

fn running(s: &str, pid: i32) -> Observation {
    obs(s, Verdict::Running { pid })
}

fn restarted(plan: &Plan) -> Vec<&str> {
    plan.restarts.iter().map(|o| o.id.as_str()).collect()
}

fn settings(max: u32) -> PlanSettings {
    PlanSettings {
        auto_restart: true,
        policy: RestartPolicy {
            max_restarts: max,
            ..RestartPolicy::default()
        },
        breaker: BreakerPolicy::default(),
        same_failure_limit: 3,
        min_uptime: Duration::ZERO,
    }
}

/// One tick's plan; its journal is checked for legality on the way.
fn plan_tick(state: &mut State, observed: &[Observation], st: &PlanSettings, now: u64) -> Plan {
    tick(state, observed, st, now).0
}

fn tick(
    state: &mut State,
    observed: &[Observation],
    st: &PlanSettings,
    now: u64,
) -> (Plan, Changes) {
    let mut changes = Changes::default();
    let plan = super::plan_tick(state, observed, st, now, &mut changes);
    assert!(changes.refused.is_empty(), "{:?}", changes.refused);
    (plan, changes)
}

fn request<'a>(sid: &'a StreamId, st: &PlanSettings) -> RestartRequest<'a> {
    RestartRequest {
        id: sid,
        completed_tasks: 0,
        exit_code: None,
        reason: "dead",
        policy: st.policy,
        signature: None,
    }
}

fn begin(state: &mut State, s: &str, st: &PlanSettings, now: u64) -> Begin {
    let sid = id(s);
    let breaker = state.breaker_until_ms;
    let record = state.streams.entry(s.to_string()).or_default();
    let mut changes = Changes::default();
    begin_restart(
        record,
        breaker,
        &request(&sid, st),
        st,
        now,
        0.5,
        &mut changes,
    )
}

fn finish(state: &mut State, s: &str, outcome: Result<Remembered, String>, now: u64) {
    let record = state.streams.entry(s.to_string()).or_default();
    finish_restart(record, &id(s), outcome, now, &mut Changes::default());
}

/// Runs a restart the way a tick does, with a fixed jitter (no spread).
fn restart(state: &mut State, s: &str, st: &PlanSettings, now: u64) -> Begin {
    let begun = begin(state, s, st, now);
    if let Begin::Go { .. } = begun {
        let worker = Remembered {
            pid: 100 + now as i32 / 1000,
            start_ticks: now,
            pid_file_mtime: now / 1000,
            proven_in_boot: None,
        };
        finish(state, s, Ok(worker), now);
    }
    begun
}

#[test]
fn a_crash_loop_backs_off_then_gives_up() {
    let st = settings(3);
    let mut state = State::default();
    let mut timeline = Vec::new();
    // The worker dies right after every restart; the clock moves 100 ms
    // per check, so backoff decides when the next restart happens.
    let mut now = 0;
    while now < 20_000 {
        let plan = plan_tick(&mut state, &[dead("A")], &st, now);
        if !plan.gave_up.is_empty() {
            timeline.push(format!("gave up at {now}"));
            break;
        }
        for s in plan.restarts {
            if let Begin::Go { attempt } = restart(&mut state, s.id.as_str(), &st, now) {
                timeline.push(format!("restart {attempt} at {now}"));
            }
        }
        now += 100;
    }
    assert_eq!(
        timeline,
        [
            "restart 1 at 0",
            "restart 2 at 1000",
            "restart 3 at 3000",
            "gave up at 3100"
        ]
    );
    assert_eq!(state.streams["A"].lifecycle.kind(), Kind::GaveUp);
    // A given-up stream stays given up while dead, whatever the time.
    let (plan, changes) = tick(&mut state, &[dead("A")], &st, 100_000);
    assert!(plan.restarts.is_empty() && changes.changes.is_empty());
}

#[test]
fn report_only_never_restarts_and_records_transitions() {
    let st = PlanSettings {
        auto_restart: false,
        ..settings(2)
    };
    let mut state = State::default();
    plan_tick(&mut state, &[running("A", 7)], &st, 0);
    let (plan, changes) = tick(&mut state, &[dead("A")], &st, 1_000);
    assert!(plan.restarts.is_empty());
    assert_eq!(changes.changes.len(), 1);
    assert_eq!(
        (changes.changes[0].from.kind(), changes.changes[0].to.kind()),
        (Kind::Running, Kind::Unhealthy)
    );
    assert_eq!(state.streams["A"].history().last_failure_ms, Some(1_000));
}

#[test]
fn paused_and_completed_streams_are_not_restarted() {
    let st = settings(2);
    let mut state = State::default();
    state.streams.entry("P".into()).or_default().lifecycle = Lifecycle::Paused { by: "op".into() };
    let plan = plan_tick(
        &mut state,
        &[dead("P"), obs("C", Verdict::Complete)],
        &st,
        0,
    );
    assert!(plan.restarts.is_empty());
    assert_eq!(state.streams["P"].lifecycle.kind(), Kind::Paused);
    assert_eq!(state.streams["C"].lifecycle.kind(), Kind::Completed);
}

#[test]
fn most_workers_dying_at_once_opens_the_breaker() {
    let st = settings(5);
    let mut state = State::default();
    let names = ["A", "B", "C", "D", "E"];
    let alive: Vec<Observation> = names
        .iter()
        .enumerate()
        .map(|(i, n)| running(n, 10 + i as i32))
        .collect();
    plan_tick(&mut state, &alive, &st, 0);
    // Three of five die together: a majority, and the minimum of three.
    let mixed: Vec<Observation> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if i < 3 {
                dead(n)
            } else {
                running(n, 10 + i as i32)
            }
        })
        .collect();
    let plan = plan_tick(&mut state, &mixed, &st, 1_000);
    assert_eq!(plan.breaker_opened, Some((3, 5, 61_000)));
    assert!(plan.restarts.is_empty());
    assert_eq!(plan.next_due_ms, Some(61_000));
    assert_eq!(state.streams["A"].lifecycle.kind(), Kind::Backoff);
    // After the cool-down, restarts resume.
    let plan = plan_tick(&mut state, &mixed, &st, 61_000);
    assert_eq!(plan.restarts.len(), 3);
    assert!(
        plan.breaker_opened.is_none(),
        "failures are older than the window now"
    );
}

#[test]
fn one_dead_worker_of_many_does_not_trip_the_breaker() {
    let st = settings(2);
    let mut state = State::default();
    plan_tick(
        &mut state,
        &[running("A", 1), running("B", 2), running("C", 3)],
        &st,
        0,
    );
    let plan = plan_tick(
        &mut state,
        &[dead("A"), running("B", 2), running("C", 3)],
        &st,
        1_000,
    );
    assert_eq!(restarted(&plan), ["A"]);
    assert!(plan.breaker_opened.is_none());
}

#[test]
fn progress_resets_the_budget_and_long_health_resets_backoff() {
    let st = settings(1);
    let mut state = State::default();
    plan_tick(&mut state, &[dead("A")], &st, 0);
    assert_eq!(restart(&mut state, "A", &st, 0), Begin::Go { attempt: 1 });
    let plan = plan_tick(&mut state, &[dead("A")], &st, 5_000);
    assert_eq!(plan.gave_up, vec![(id("A"), GiveUp::Budget { max: 1 })]);
    // A task completed since: the budget is whole again.
    let mut progressed = dead("A");
    progressed.completed_tasks = 1;
    state.streams.get_mut("A").unwrap().lifecycle = Lifecycle::Unhealthy {
        reason: "x".into(),
        since_ms: 0,
    };
    let plan = plan_tick(&mut state, std::slice::from_ref(&progressed), &st, 6_000);
    assert_eq!(restarted(&plan), ["A"]);
    // Healthy for the reset period clears the backoff streak.
    state.streams.get_mut("A").unwrap().lifecycle = Lifecycle::Running {
        pid: 5,
        since_ms: 10_000,
    };
    state.streams.get_mut("A").unwrap().streak = 4;
    let reset_at = 10_000 + Duration::from_secs(600).as_millis() as u64;
    plan_tick(&mut state, &[running("A", 5)], &st, reset_at);
    assert_eq!(state.streams["A"].streak, 0);
}

#[test]
fn a_second_monitor_finds_the_restart_already_charged() {
    let st = settings(2);
    let mut state = State::default();
    plan_tick(&mut state, &[dead("A")], &st, 0);
    assert_eq!(restart(&mut state, "A", &st, 0), Begin::Go { attempt: 1 });
    // The other monitor planned from the old state; under the lock it sees Starting.
    assert_eq!(begin(&mut state, "A", &st, 10), Begin::Skip);
}

#[test]
fn failed_spawns_back_off() {
    let st = settings(5);
    let mut state = State::default();
    plan_tick(&mut state, &[dead("A")], &st, 0);
    assert_eq!(begin(&mut state, "A", &st, 0), Begin::Go { attempt: 1 });
    finish(&mut state, "A", Err("wrapper missing".into()), 0);
    assert_eq!(
        state.streams["A"].lifecycle,
        Lifecycle::Backoff {
            until_ms: 1_000,
            reason: "restart failed: wrapper missing".into()
        }
    );
    let plan = plan_tick(&mut state, &[dead("A")], &st, 500);
    assert!(plan.restarts.is_empty());
    assert_eq!(plan.next_due_ms, Some(1_000));
    let plan = plan_tick(&mut state, &[dead("A")], &st, 1_000);
    assert_eq!(restarted(&plan), ["A"]);
}

/// A worker found dead: how long it had run decides whether its start
/// failed, and exit 126/127 at start gives up at once.
#[test]
fn deaths_within_the_startup_window_are_failed_starts() {
    struct Row {
        name: &'static str,
        exit: Option<i32>,
        /// When the log ended, ms after the PID file was written (None: unknown).
        ended_after: Option<u64>,
        now_after: u64,
        min_uptime_secs: u64,
        auto_restart: bool,
        /// "gave up: <reason start>", "failed start", or "ordinary".
        want: &'static str,
    }
    let rows = [
        Row {
            name: "claude missing at start",
            exit: Some(127),
            ended_after: Some(50),
            now_after: 60_000,
            min_uptime_secs: 10,
            auto_restart: true,
            want: "gave up: claude not found on PATH: command 'claude' not found",
        },
        Row {
            name: "not executable at start",
            exit: Some(126),
            ended_after: Some(50),
            now_after: 100,
            min_uptime_secs: 10,
            auto_restart: true,
            want: "gave up: claude cannot be executed",
        },
        Row {
            name: "a crash at start",
            exit: Some(1),
            ended_after: Some(2_000),
            now_after: 2_100,
            min_uptime_secs: 10,
            auto_restart: true,
            want: "failed start",
        },
        Row {
            name: "127 after hours",
            exit: Some(127),
            ended_after: Some(3 * 3_600_000),
            now_after: 3 * 3_600_000,
            min_uptime_secs: 10,
            auto_restart: true,
            want: "ordinary",
        },
        Row {
            name: "no exit line, seen dead late",
            exit: None,
            ended_after: None,
            now_after: 60_000,
            min_uptime_secs: 10,
            auto_restart: true,
            want: "ordinary",
        },
        Row {
            name: "no exit line, seen dead at once",
            exit: None,
            ended_after: None,
            now_after: 500,
            min_uptime_secs: 10,
            auto_restart: true,
            want: "failed start",
        },
        Row {
            name: "window off",
            exit: Some(127),
            ended_after: Some(50),
            now_after: 100,
            min_uptime_secs: 0,
            auto_restart: true,
            want: "ordinary",
        },
        Row {
            name: "report only",
            exit: Some(127),
            ended_after: Some(50),
            now_after: 100,
            min_uptime_secs: 10,
            auto_restart: false,
            want: "failed start",
        },
    ];
    let start_ms = 1_000_000;
    for row in rows {
        let mut st = PlanSettings {
            auto_restart: row.auto_restart,
            min_uptime: Duration::from_secs(row.min_uptime_secs),
            ..settings(5)
        };
        st.same_failure_limit = 0;
        let mut state = State::default();
        let record = state.streams.entry("A".into()).or_default();
        record.lifecycle = Lifecycle::Starting {
            pid: 42,
            since_ms: start_ms + 20,
        };
        record.worker = Some(Remembered {
            pid: 42,
            start_ticks: 7,
            pid_file_mtime: start_ms / 1000,
            proven_in_boot: None,
        });
        // The worker of our restart, charged just before.
        record.history_mut().last_restart_ms = Some(start_ms - 100);
        let death = Observation {
            exit_code: row.exit,
            ended_ms: row.ended_after.map(|a| start_ms + a),
            last_words: Some("command 'claude' not found on PATH=/usr/bin:/bin".into()),
            ..dead("A")
        };
        let plan = plan_tick(&mut state, &[death], &st, start_ms + row.now_after);
        let got = match (plan.gave_up.first(), plan.failed_starts.first()) {
            (Some((_, why)), _) => format!("gave up: {why}"),
            (None, Some(_)) => "failed start".to_string(),
            (None, None) => "ordinary".to_string(),
        };
        assert!(got.starts_with(row.want), "{}: got {got:?}", row.name);
        if row.want != "ordinary" {
            // The same death of a worker no restart of ours started is ordinary.
            let mut theirs = State::default();
            let record = theirs.streams.entry("A".into()).or_default();
            record.lifecycle = Lifecycle::Starting {
                pid: 42,
                since_ms: start_ms + 20,
            };
            let death = Observation {
                exit_code: row.exit,
                ended_ms: row.ended_after.map(|a| start_ms + a),
                ..dead("A")
            };
            let plan = plan_tick(&mut theirs, &[death], &st, start_ms + row.now_after);
            assert!(
                plan.gave_up.is_empty() && plan.failed_starts.is_empty(),
                "{}: not our start",
                row.name
            );
        }
        let lifecycle = state.streams["A"].lifecycle.kind();
        if row.want.starts_with("gave up") {
            assert_eq!(lifecycle, Kind::GaveUp, "{}", row.name);
            assert!(plan.restarts.is_empty(), "{}", row.name);
            assert!(got.contains(&format!("(exit code {} at start)", row.exit.unwrap())));
        } else if row.auto_restart {
            assert_eq!(restarted(&plan), ["A"], "{}: the budget decides", row.name);
        }
    }
}
