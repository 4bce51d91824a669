//! The decision of one tick as a pure function: the persisted state, what was
//! observed of each stream, the policy and "now" go in; the state comes out
//! advanced (lifecycle transitions, failure times, the global breaker,
//! remembered worker identities) together with the restarts to attempt.
//! Restarts are decided here but charged later, under the stream's lock, by
//! [`begin_restart`], because another monitor may act in between.

use crate::layout::StreamId;
use crate::probe::ProbeSet;
use crate::process::identity::Remembered;

use super::model::{GiveUp, State, StreamState};

use super::assess::Verdict;
use super::lifecycle::{transition, Event, IllegalTransition, Kind, Lifecycle};
use super::policy::{self, BreakerPolicy, PolicyOverride, RestartDecision, RestartPolicy};

/// What a tick saw of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub id: StreamId,
    pub verdict: Verdict,
    pub completed_tasks: u32,
    /// How the worker last ended, when known (wrapper exit line, reaping).
    pub exit_code: Option<i32>,
    /// The running worker's identity, to remember.
    pub worker: Option<Remembered>,
    /// Probe records after this tick's probes (None: no probes ran).
    pub probes: Option<ProbeSet>,
    /// Why a readiness probe says not ready.
    pub not_ready: Option<String>,
    /// This stream's own restart settings, when it overrides the global ones.
    pub policy: Option<PolicyOverride>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSettings {
    pub auto_restart: bool,
    pub policy: RestartPolicy,
    pub breaker: BreakerPolicy,
    /// Give up after this many restarts in a row for the same failure (0: never).
    pub same_failure_limit: u32,
}

/// One state change, for monitor.log and the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub stream: StreamId,
    pub from: Lifecycle,
    pub to: Lifecycle,
    pub event: &'static str,
}

/// The journal of what a decision changed, for monitor.log and the event log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub changes: Vec<Change>,
    /// Transitions the state machine refused (a bug if ever non-empty).
    pub refused: Vec<String>,
}

/// A restart decided by the plan, with the policy in force for the stream,
/// so whoever carries it out never recomputes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartOrder {
    pub id: StreamId,
    pub policy: RestartPolicy,
}

/// What one tick decided beyond its state changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Streams to restart now (still to be charged under their lock).
    pub restarts: Vec<RestartOrder>,
    /// Streams that just gave up, and why.
    pub gave_up: Vec<(StreamId, GiveUp)>,
    /// Set when the global breaker opened in this tick: (failed, monitored, until).
    pub breaker_opened: Option<(usize, usize, u64)>,
    /// The earliest time a waiting restart becomes due.
    pub next_due_ms: Option<u64>,
}

impl Plan {
    pub fn restarts(&self, id: &StreamId) -> Option<&RestartOrder> {
        self.restarts.iter().find(|o| &o.id == id)
    }

    pub fn gives_up(&self, id: &StreamId) -> bool {
        self.gave_up.iter().any(|(g, _)| g == id)
    }
}

fn apply(st: &mut StreamState, id: &StreamId, event: Event, now_ms: u64, changes: &mut Changes) {
    if let Err(e) = apply_event(st, id, event, now_ms, changes) {
        changes.refused.push(format!("stream {id}: {e}"));
    }
}

/// Gives a stream up for `why`, through the state machine.
fn give_up(st: &mut StreamState, id: &StreamId, why: GiveUp, now_ms: u64, changes: &mut Changes) {
    let reason = why.to_string();
    st.gave_up = Some(why);
    apply(st, id, Event::BudgetSpent { reason }, now_ms, changes);
}

/// Moves a stream's lifecycle by one event through the state machine,
/// noting the change (and a give-up) for the log; an illegal event changes
/// nothing and is returned as an error.
pub fn apply_event(
    st: &mut StreamState,
    id: &StreamId,
    event: Event,
    now_ms: u64,
    changes: &mut Changes,
) -> Result<(), IllegalTransition> {
    let next = transition(&st.lifecycle, &event, now_ms)?;
    if next.kind() == Kind::GaveUp && st.lifecycle.kind() != Kind::GaveUp {
        st.gave_up_total += 1;
    }
    if next.kind() != Kind::GaveUp {
        st.gave_up = None;
    }
    if next.kind() != st.lifecycle.kind() {
        changes.changes.push(Change {
            stream: id.clone(),
            from: st.lifecycle.clone(),
            to: next.clone(),
            event: event.name(),
        });
    }
    st.lifecycle = next;
    Ok(())
}

/// Advances `state` by one tick of observations and plans restarts; the
/// state changes go to `changes`.
pub fn plan_tick(
    state: &mut State,
    observed: &[Observation],
    settings: &PlanSettings,
    now_ms: u64,
    changes: &mut Changes,
) -> Plan {
    let mut plan = Plan::default();
    for obs in observed {
        // A stream seen for the first time is classified, not transitioned:
        // its first state is not news for the log.
        let first_sight = !state.streams.contains_key(obs.id.as_str());
        let st = state.streams.entry(obs.id.to_string()).or_default();
        let was_alive = matches!(st.lifecycle.kind(), Kind::Running | Kind::Starting);
        let changes_before = changes.changes.len();
        apply(
            st,
            &obs.id,
            Event::Observed(obs.verdict.clone()),
            now_ms,
            changes,
        );
        if first_sight {
            changes.changes.truncate(changes_before);
        }
        if was_alive && st.lifecycle.kind() == Kind::Unhealthy {
            st.deaths_total += 1;
            st.last_failure_ms = Some(now_ms);
        }
        if let Lifecycle::Running { since_ms, .. } = st.lifecycle {
            policy::note_healthy(st, since_ms, &settings.policy, now_ms);
        }
        if obs.worker.is_some() && obs.worker != st.worker {
            st.worker = obs.worker;
        }
        if let Some(probes) = &obs.probes {
            let counted = |set: &ProbeSet| {
                set.records
                    .values()
                    .map(|r| u64::from(r.failures_total))
                    .sum::<u64>()
            };
            let before = if st.probes.instance == probes.instance {
                counted(&st.probes)
            } else {
                0
            };
            st.probe_failures_total += counted(probes).saturating_sub(before);
            st.probes = probes.clone();
        }
        st.not_ready = obs.not_ready.clone();
    }

    let window = settings.breaker.window.as_millis() as u64;
    // Failures that already opened the breaker do not open it again: only
    // those since it last closed count.
    let since = state.breaker_until_ms.unwrap_or(0);
    let failed = observed
        .iter()
        .filter(|o| {
            state.streams[o.id.as_str()]
                .last_failure_ms
                .is_some_and(|t| t + window > now_ms && t >= since)
        })
        .count();
    let breaker_active = state.breaker_until_ms.is_some_and(|u| u > now_ms);
    if settings.auto_restart
        && !breaker_active
        && policy::breaker_trips(failed, observed.len(), &settings.breaker)
    {
        let until = now_ms + settings.breaker.cooldown.as_millis() as u64;
        state.breaker_until_ms = Some(until);
        plan.breaker_opened = Some((failed, observed.len(), until));
    }

    if !settings.auto_restart {
        return plan;
    }
    for obs in observed {
        let st = state
            .streams
            .get_mut(obs.id.as_str())
            .expect("entry made above");
        if !matches!(st.lifecycle.kind(), Kind::Unhealthy | Kind::Backoff) {
            continue;
        }
        let policy = policy::effective(obs.policy, &settings.policy);
        match policy::decide_restart(
            st,
            obs.completed_tasks,
            obs.exit_code,
            &policy,
            state.breaker_until_ms,
            now_ms,
        ) {
            RestartDecision::Restart { .. } => plan.restarts.push(RestartOrder {
                id: obs.id.clone(),
                policy,
            }),
            RestartDecision::Exhausted => {
                let why = GiveUp::Budget {
                    max: policy.max_restarts,
                };
                give_up(st, &obs.id, why.clone(), now_ms, changes);
                plan.gave_up.push((obs.id.clone(), why));
            }
            RestartDecision::Wait { until_ms, reason } => {
                let already = matches!(&st.lifecycle, Lifecycle::Backoff { until_ms: u, .. } if *u == until_ms);
                if !already {
                    apply(
                        st,
                        &obs.id,
                        Event::Deferred { until_ms, reason },
                        now_ms,
                        changes,
                    );
                }
                plan.next_due_ms = Some(plan.next_due_ms.map_or(until_ms, |d| d.min(until_ms)));
            }
            RestartDecision::NotByPolicy { .. } => {}
        }
    }
    plan
}

/// The stream a restart is for, with the facts the policy needs.
#[derive(Debug, Clone, Copy)]
pub struct RestartRequest<'a> {
    pub id: &'a StreamId,
    pub completed_tasks: u32,
    pub exit_code: Option<i32>,
    pub reason: &'a str,
    /// The policy in force for the stream (from its [`RestartOrder`]).
    pub policy: RestartPolicy,
    /// The failure signature (fingerprint, text) of this failure, if known.
    pub signature: Option<(&'a str, &'a str)>,
}

/// What [`begin_restart`] decided under the stream's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Charged; spawn now. `attempt` counts against `--max-restarts`.
    Go { attempt: u32 },
    /// The stream gives up now (the budget was spent meanwhile, or the
    /// same failure repeated too often).
    GaveUp(GiveUp),
    /// Not now (another monitor restarted it, or a limit applies).
    Skip,
}

/// Re-decides a planned restart on the stream's record as it is now (under
/// its lock) and charges it. `breaker_until_ms` is the global breaker;
/// `jitter` in [0, 1) is the random spread of the backoff it schedules.
pub fn begin_restart(
    st: &mut StreamState,
    breaker_until_ms: Option<u64>,
    request: &RestartRequest<'_>,
    settings: &PlanSettings,
    now_ms: u64,
    jitter: f64,
    changes: &mut Changes,
) -> Begin {
    let RestartRequest {
        id,
        completed_tasks,
        exit_code,
        reason,
        policy,
        signature,
    } = *request;
    let breaker = breaker_until_ms;
    if !matches!(st.lifecycle.kind(), Kind::Unhealthy | Kind::Backoff) {
        return Begin::Skip;
    }
    if policy::budget_used(st, completed_tasks) == 0 {
        // Progress (or a fresh budget) forgets earlier failures.
        st.same_failure_count = 0;
    }
    if let Some((fingerprint, text)) = signature {
        if st.last_signature.as_deref() == Some(fingerprint) {
            st.same_failure_count += 1;
        } else {
            st.last_signature = Some(fingerprint.to_string());
            st.same_failure_count = 1;
        }
        let limit = settings.same_failure_limit;
        if limit > 0 && st.same_failure_count >= limit {
            let why = GiveUp::SameFailure {
                signature: text.to_string(),
                count: st.same_failure_count,
            };
            give_up(st, id, why.clone(), now_ms, changes);
            return Begin::GaveUp(why);
        }
    }
    match policy::decide_restart(st, completed_tasks, exit_code, &policy, breaker, now_ms) {
        RestartDecision::Restart { .. } => {
            let attempt =
                policy::charge_attempt(st, completed_tasks, reason, &policy, now_ms, jitter);
            apply(st, id, Event::RestartBegun { attempt }, now_ms, changes);
            Begin::Go { attempt }
        }
        RestartDecision::Exhausted => {
            let why = GiveUp::Budget {
                max: policy.max_restarts,
            };
            give_up(st, id, why.clone(), now_ms, changes);
            Begin::GaveUp(why)
        }
        RestartDecision::Wait { .. } | RestartDecision::NotByPolicy { .. } => Begin::Skip,
    }
}

/// Records how a restart ended: the worker's PID, or the error.
pub fn finish_restart(
    st: &mut StreamState,
    id: &StreamId,
    outcome: Result<Remembered, String>,
    now_ms: u64,
    changes: &mut Changes,
) {
    st.spawn_intent = None;
    match outcome {
        Ok(worker) => {
            st.last_error = None;
            st.worker = Some(worker);
            apply(st, id, Event::Spawned { pid: worker.pid }, now_ms, changes);
        }
        Err(error) => {
            st.last_failure_ms = Some(now_ms);
            st.last_error = Some(error.clone());
            let until_ms = st.next_attempt_ms.unwrap_or(now_ms);
            apply(
                st,
                id,
                Event::SpawnFailed { until_ms, error },
                now_ms,
                changes,
            );
        }
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(state.streams["A"].last_failure_ms, Some(1_000));
    }

    #[test]
    fn paused_and_completed_streams_are_not_restarted() {
        let st = settings(2);
        let mut state = State::default();
        state.streams.entry("P".into()).or_default().lifecycle =
            Lifecycle::Paused { by: "op".into() };
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
}
