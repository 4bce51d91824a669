//! The decision of one tick as a pure function: the persisted state, what was
//! observed of each stream, the policy and "now" go in; the state comes out
//! advanced (lifecycle transitions, failure times, the global breaker,
//! remembered worker identities) together with the restarts to attempt.
//! Restarts are decided here but charged later, under the stream's lock, by
//! [`begin_restart`], because another monitor may act in between.

use std::time::Duration;

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
    /// When the worker ended (ms since the epoch), when its log says so.
    pub ended_ms: Option<u64>,
    /// The worker log's last line before the wrapper's exit line.
    pub last_words: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSettings {
    pub auto_restart: bool,
    pub policy: RestartPolicy,
    pub breaker: BreakerPolicy,
    /// Give up after this many restarts in a row for the same failure (0: never).
    pub same_failure_limit: u32,
    /// The startup window: a worker that dies sooner after it started is a
    /// failed start (and exit 126/127 then gives up at once). Zero: off.
    pub min_uptime: Duration,
}

/// A worker first seen this soon after a restart was charged is that
/// restart's (the spawn wait and the settle are far shorter).
const OUR_START_MS: u64 = 60_000;

/// The startup window of `--min-uptime` by default.
pub const DEFAULT_MIN_UPTIME: Duration = Duration::from_secs(10);

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
    /// Workers found dead within the startup window (not given up): the
    /// attempt that started them failed; the line says how.
    pub failed_starts: Vec<(StreamId, String)>,
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
    st.history_mut().gave_up = Some(why);
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
        st.set_history(|h| &mut h.gave_up, None);
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

/// What the restart half of a tick needs of a stream left failing by its
/// observation (the observations themselves are not kept: one pass).
struct RestartCandidate {
    id: StreamId,
    policy: Option<PolicyOverride>,
    completed_tasks: u32,
    exit_code: Option<i32>,
}

/// Advances `state` by one tick of observations and plans restarts; the
/// state changes go to `changes`. The observations are taken in one pass,
/// so a caller can make each as it goes instead of holding them all.
pub fn plan_tick<I>(
    state: &mut State,
    observed: I,
    settings: &PlanSettings,
    now_ms: u64,
    changes: &mut Changes,
) -> Plan
where
    I: IntoIterator,
    I::Item: std::borrow::Borrow<Observation>,
{
    let mut plan = Plan::default();
    let window = settings.breaker.window.as_millis() as u64;
    // Failures that already opened the breaker do not open it again: only
    // those since it last closed count.
    let since = state.breaker_until_ms.unwrap_or(0);
    let mut failed_ids: Vec<String> = Vec::new();
    let mut seen = 0usize;
    let mut candidates: Vec<RestartCandidate> = Vec::new();
    let mut record_at = 0;
    for obs in observed {
        let obs = std::borrow::Borrow::<Observation>::borrow(&obs);
        seen += 1;
        // A stream seen for the first time is classified, not transitioned:
        // its first state is not news for the log.
        // Observations come in id order, as the records are kept: each is
        // found where the last one was, by the borrowed id.
        let (st, first_sight) = state.streams.get_or_insert_in_order(
            obs.id.as_str(),
            &mut record_at,
            StreamState::default,
        );
        let was_alive = matches!(st.lifecycle.kind(), Kind::Running | Kind::Starting);
        let early = died_starting(st, obs, settings.min_uptime, now_ms);
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
            st.history_mut().last_failure_ms = Some(now_ms);
        }
        if let (Verdict::Dead { .. }, Some(code)) = (&obs.verdict, obs.exit_code) {
            st.history_mut().last_exit = Some(format!("exit {code}"));
        }
        if let (Some(uptime_ms), Kind::Unhealthy) = (early, st.lifecycle.kind()) {
            let how = match obs.exit_code {
                Some(code) => format!("exit code {code}"),
                None => "ended".to_string(),
            };
            let secs = uptime_ms as f64 / 1000.0;
            let window = settings.min_uptime.as_secs_f64();
            st.history_mut().last_error = Some(format!("failed start: {how} after {secs:.1}s"));
            match start_give_up(obs.exit_code, obs.last_words.as_deref()) {
                Some(why) if settings.auto_restart => {
                    give_up(st, &obs.id, why.clone(), now_ms, changes);
                    plan.gave_up.push((obs.id.clone(), why));
                }
                _ => plan.failed_starts.push((
                    obs.id.clone(),
                    format!(
                        "Worker {} failed to start: {how} {secs:.1}s after it started \
                         (within the {window}s startup window)",
                        obs.id
                    ),
                )),
            }
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
            let before = if st.history().probes.instance == probes.instance {
                counted(&st.history().probes)
            } else {
                0
            };
            st.probe_failures_total += counted(probes).saturating_sub(before);
            st.history_mut().probes = probes.clone();
        }
        st.set_history(|h| &mut h.not_ready, obs.not_ready.clone());
        if st
            .history()
            .last_failure_ms
            .is_some_and(|t| t + window > now_ms && t >= since)
        {
            failed_ids.push(obs.id.to_string());
        }
        if matches!(st.lifecycle.kind(), Kind::Unhealthy | Kind::Backoff) {
            candidates.push(RestartCandidate {
                id: obs.id.clone(),
                policy: obs.policy,
                completed_tasks: obs.completed_tasks,
                exit_code: obs.exit_code,
            });
        }
    }

    let failed = failed_ids.len();
    let breaker_active = state.breaker_until_ms.is_some_and(|u| u > now_ms);
    if settings.auto_restart
        && !breaker_active
        && policy::breaker_trips(failed, seen, &settings.breaker)
    {
        let until = now_ms + settings.breaker.cooldown.as_millis() as u64;
        state.breaker_until_ms = Some(until);
        state.breaker_streams = failed_ids;
        plan.breaker_opened = Some((failed, seen, until));
    }

    if !settings.auto_restart {
        return plan;
    }
    for obs in &candidates {
        let st = state
            .streams
            .get_mut(obs.id.as_str())
            .expect("entry made above");
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

/// How long (ms) a worker just found dead had run, when that is less than
/// the startup window: its start failed. Only a worker a restart of ours
/// started counts (one the orchestrator started is not our start). The
/// start is the PID file's time (the wrapper writes it first thing), else
/// when it was first seen; the end is when its log ended, else now.
fn died_starting(
    st: &StreamState,
    obs: &Observation,
    min_uptime: Duration,
    now_ms: u64,
) -> Option<u64> {
    if !matches!(obs.verdict, Verdict::Dead { .. }) || min_uptime.is_zero() {
        return None;
    }
    let since_ms = match st.lifecycle {
        Lifecycle::Starting { since_ms, .. } | Lifecycle::Running { since_ms, .. } => since_ms,
        _ => return None,
    };
    // Seen starting soon after a restart was charged: that restart's worker.
    let ours = st
        .history()
        .last_restart_ms
        .is_some_and(|r| since_ms >= r && since_ms - r <= OUR_START_MS);
    if !ours {
        return None;
    }
    let started_ms = st
        .worker
        .map(|w| w.pid_file_mtime * 1000)
        .filter(|t| *t > 0)
        .map_or(since_ms, |t| t.min(since_ms));
    let uptime = obs.ended_ms.unwrap_or(now_ms).saturating_sub(started_ms);
    (uptime < min_uptime.as_millis() as u64).then_some(uptime)
}

/// A start that failed in a way no retry can fix: exit 127 (the shell's
/// "command not found": `claude` is not on PATH) or 126 (found but not
/// executable). `last_words` is what the worker log said last.
pub fn start_give_up(exit: Option<i32>, last_words: Option<&str>) -> Option<GiveUp> {
    let what = match exit? {
        127 => "claude not found on PATH",
        126 => "claude cannot be executed",
        _ => return None,
    };
    let reason = match last_words.map(str::trim).filter(|w| !w.is_empty()) {
        Some(words) => format!("{what}: {words}"),
        None => what.to_string(),
    };
    Some(GiveUp::Deterministic { exit, reason })
}

/// A restart whose start failed for good (see [`GiveUp::Deterministic`]):
/// the stream gives up at once instead of backing off.
pub fn give_up_at_start(
    st: &mut StreamState,
    id: &StreamId,
    why: GiveUp,
    now_ms: u64,
    changes: &mut Changes,
) {
    st.set_history(|h| &mut h.spawn_intent, None);
    st.history_mut().last_failure_ms = Some(now_ms);
    st.history_mut().last_error = Some(why.to_string());
    give_up(st, id, why, now_ms, changes);
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
        if st.history().last_signature.as_deref() == Some(fingerprint) {
            st.same_failure_count += 1;
        } else {
            st.history_mut().last_signature = Some(fingerprint.to_string());
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

/// An operator lifts the global breaker: `only_for` a stream, only if that
/// stream's failures opened it. It counts as closed now, so the failures
/// that opened it do not open it again. Returns whether it was open.
pub fn lift_breaker(state: &mut State, only_for: Option<&StreamId>, now_ms: u64) -> bool {
    let open = state.breaker_until_ms.is_some_and(|u| u > now_ms);
    let ours = only_for.is_none_or(|id| state.breaker_streams.iter().any(|s| s == id.as_str()));
    if !(open && ours) {
        return false;
    }
    state.breaker_until_ms = Some(now_ms);
    state.breaker_streams.clear();
    true
}

/// Records how a restart ended: the worker's PID, or the error.
pub fn finish_restart(
    st: &mut StreamState,
    id: &StreamId,
    outcome: Result<Remembered, String>,
    now_ms: u64,
    changes: &mut Changes,
) {
    st.set_history(|h| &mut h.spawn_intent, None);
    match outcome {
        Ok(worker) => {
            st.set_history(|h| &mut h.last_error, None);
            st.worker = Some(worker);
            apply(st, id, Event::Spawned { pid: worker.pid }, now_ms, changes);
        }
        Err(error) => {
            st.history_mut().last_failure_ms = Some(now_ms);
            st.history_mut().last_error = Some(error.clone());
            let until_ms = st.history().next_attempt_ms.unwrap_or(now_ms);
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
#[path = "plan_tests.rs"]
mod tests;
