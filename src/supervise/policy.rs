//! Whether a failing worker may be restarted now, and what a restart costs:
//! the restart policy (always / on-failure / never), the `--max-restarts`
//! budget of restarts without forward progress, exponential backoff with
//! jitter that resets after a long healthy run, a windowed rate limit, and
//! the global breaker that pauses every restart when most workers fail at
//! once. All of it reads and writes the persisted [`StreamState`], so every
//! monitor on a project applies the same limits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::supervise::model::StreamState;

/// When a worker that stopped running is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartKind {
    /// Whenever it should run and does not.
    #[default]
    Always,
    /// Only when it did not exit with code 0.
    OnFailure,
    /// Never: report only.
    Never,
}

/// The restart policy in force for a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub kind: RestartKind,
    /// Restarts allowed without forward progress.
    pub max_restarts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// A worker healthy this long has its backoff reset.
    pub reset_after: Duration,
    /// At most `rate_limit` restarts within `rate_window`.
    pub rate_limit: u32,
    pub rate_window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            kind: RestartKind::Always,
            max_restarts: 2,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
            reset_after: Duration::from_secs(600),
            rate_limit: 10,
            rate_window: Duration::from_secs(600),
        }
    }
}

/// What `monitor.toml` says about one stream's or component's restarts;
/// everything it leaves out comes from the global policy (flags, `[monitor]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolicyOverride {
    pub kind: Option<RestartKind>,
    pub max_restarts: Option<u32>,
}

impl PolicyOverride {
    /// `None` when nothing is overridden.
    pub fn new(kind: Option<RestartKind>, max_restarts: Option<u32>) -> Option<PolicyOverride> {
        (kind.is_some() || max_restarts.is_some()).then_some(PolicyOverride { kind, max_restarts })
    }

    pub fn over(&self, base: &RestartPolicy) -> RestartPolicy {
        RestartPolicy {
            kind: self.kind.unwrap_or(base.kind),
            max_restarts: self.max_restarts.unwrap_or(base.max_restarts),
            ..*base
        }
    }
}

/// The policy in force for one stream.
pub fn effective(overrides: Option<PolicyOverride>, base: &RestartPolicy) -> RestartPolicy {
    overrides.map_or(*base, |o| o.over(base))
}

/// The global breaker: when at least `min_failures` workers and more than
/// half of all fail within `window`, every restart pauses for `cooldown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub window: Duration,
    pub min_failures: usize,
    pub cooldown: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            window: Duration::from_secs(60),
            min_failures: 3,
            cooldown: Duration::from_secs(60),
        }
    }
}

pub fn breaker_trips(failed_recently: usize, monitored: usize, policy: &BreakerPolicy) -> bool {
    failed_recently >= policy.min_failures && failed_recently * 2 > monitored
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart now; this is attempt `attempt` of the budget.
    Restart { attempt: u32 },
    /// The budget is spent.
    Exhausted,
    /// Not before `until_ms`; the reason says which limit.
    Wait { until_ms: u64, reason: String },
    /// The policy says this exit is not restarted.
    NotByPolicy { reason: String },
}

/// Restarts charged against the budget, given the tasks completed now: a
/// task completed since the last restart is progress and resets it.
pub fn budget_used(state: &StreamState, completed_now: u32) -> u32 {
    match state.completed_at_last_restart {
        Some(before) if completed_now > before => 0,
        _ => state.restarts,
    }
}

/// `exit_code`: how the worker last ended, when known.
pub fn decide_restart(
    state: &StreamState,
    completed_now: u32,
    exit_code: Option<i32>,
    policy: &RestartPolicy,
    breaker_until_ms: Option<u64>,
    now_ms: u64,
) -> RestartDecision {
    match (policy.kind, exit_code) {
        (RestartKind::Never, _) => {
            return RestartDecision::NotByPolicy {
                reason: "restart policy is never".into(),
            }
        }
        (RestartKind::OnFailure, Some(0)) => {
            return RestartDecision::NotByPolicy {
                reason: "exited with code 0 and the restart policy is on-failure".into(),
            }
        }
        _ => {}
    }
    let used = budget_used(state, completed_now);
    if used >= policy.max_restarts {
        return RestartDecision::Exhausted;
    }
    if let Some(until_ms) = breaker_until_ms.filter(|u| *u > now_ms) {
        return RestartDecision::Wait {
            until_ms,
            reason: "the global breaker paused all restarts".into(),
        };
    }
    let window = policy.rate_window.as_millis() as u64;
    let recent: Vec<u64> = state
        .history()
        .recent_restarts_ms
        .iter()
        .copied()
        .filter(|t| t + window > now_ms)
        .collect();
    if policy.rate_limit > 0 && recent.len() as u32 >= policy.rate_limit {
        let oldest = recent.iter().copied().min().unwrap_or(now_ms);
        return RestartDecision::Wait {
            until_ms: oldest + window,
            reason: format!(
                "rate limit: {} restarts within {}s",
                policy.rate_limit,
                policy.rate_window.as_secs()
            ),
        };
    }
    match state.history().next_attempt_ms {
        Some(until_ms) if until_ms > now_ms => RestartDecision::Wait {
            until_ms,
            reason: "backing off".into(),
        },
        _ => RestartDecision::Restart { attempt: used + 1 },
    }
}

/// Delay after the `streak`-th restart in a row: base, 2·base, 4·base ...
/// capped; `jitter` in [0, 1) spreads it by ±10% so workers that failed
/// together do not restart in lockstep.
pub fn backoff_delay(streak: u32, policy: &RestartPolicy, jitter: f64) -> Duration {
    if streak == 0 {
        return Duration::ZERO;
    }
    let factor = 1u64
        .checked_shl(streak.saturating_sub(1).min(40))
        .unwrap_or(u64::MAX);
    let millis = (policy.backoff_base.as_millis() as u64).saturating_mul(factor);
    let capped = Duration::from_millis(millis).min(policy.backoff_cap);
    let spread = 0.9 + 0.2 * jitter.clamp(0.0, 1.0);
    capped.mul_f64(spread).min(policy.backoff_cap)
}

/// Charges one attempt (before spawning, so a monitor that dies mid-spawn
/// has still counted it) and schedules the earliest next one.
pub fn charge_attempt(
    state: &mut StreamState,
    completed_now: u32,
    reason: &str,
    policy: &RestartPolicy,
    now_ms: u64,
    jitter: f64,
) -> u32 {
    state.restarts = budget_used(state, completed_now) + 1;
    state.restarts_total += 1;
    state.restarts_since_reset += 1;
    state.completed_at_last_restart = Some(completed_now);
    state.history_mut().last_restart_ms = Some(now_ms);
    state.history_mut().last_restart_reason = Some(reason.to_string());
    state.streak += 1;
    state.history_mut().next_attempt_ms =
        Some(now_ms + backoff_delay(state.streak, policy, jitter).as_millis() as u64);
    let window = policy.rate_window.as_millis() as u64;
    state
        .history_mut()
        .recent_restarts_ms
        .retain(|t| t + window > now_ms);
    state.history_mut().recent_restarts_ms.push(now_ms);
    state.restarts
}

/// An operator vouches for a stream (`reset`, `restart STREAM`): its restart
/// budget, backoff, rate-limit window and failure streaks start afresh, and
/// the worker identity it remembered is forgotten (it is proven again from
/// what runs now). Totals for metrics are kept.
pub fn forgive(state: &mut StreamState) {
    state.restarts = 0;
    state.restarts_since_reset = 0;
    state.streak = 0;
    state.set_history(|h| &mut h.next_attempt_ms, None);
    state.set_history(|h| &mut h.recent_restarts_ms, Vec::new());
    state.completed_at_last_restart = None;
    state.same_failure_count = 0;
    state.set_history(|h| &mut h.last_signature, None);
    state.set_history(|h| &mut h.gave_up, None);
    state.worker = None;
}

/// A worker healthy for the reset period starts its backoff afresh.
pub fn note_healthy(
    state: &mut StreamState,
    running_since_ms: u64,
    policy: &RestartPolicy,
    now_ms: u64,
) {
    if state.streak > 0
        && now_ms.saturating_sub(running_since_ms) >= policy.reset_after.as_millis() as u64
    {
        state.streak = 0;
        state.set_history(|h| &mut h.next_attempt_ms, None);
        state.same_failure_count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::model::StreamHistory;

    fn policy() -> RestartPolicy {
        RestartPolicy::default()
    }

    #[test]
    fn forgiving_clears_every_limit_but_keeps_the_totals() {
        let mut st = StreamState {
            restarts: 2,
            restarts_total: 7,
            streak: 3,
            completed_at_last_restart: Some(1),
            same_failure_count: 2,
            deaths_total: 4,
            ..StreamState::default()
        }
        .with_history(StreamHistory {
            next_attempt_ms: Some(5),
            recent_restarts_ms: vec![1, 2],
            last_signature: Some("sig".into()),
            gave_up: Some(crate::supervise::model::GiveUp::Budget { max: 2 }),
            ..StreamHistory::default()
        });
        forgive(&mut st);
        let fresh = StreamState {
            restarts_total: 7,
            deaths_total: 4,
            ..StreamState::default()
        };
        assert_eq!(st, fresh);
        let policy = policy();
        assert_eq!(
            decide_restart(&st, 0, None, &policy, None, 0),
            RestartDecision::Restart { attempt: 1 }
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_bounded_jitter() {
        let secs: Vec<u64> = (0..10)
            .map(|n| backoff_delay(n, &policy(), 0.5).as_secs())
            .collect();
        assert_eq!(secs, [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff_delay(u32::MAX, &policy(), 0.5).as_secs(), 60);
        assert_eq!(backoff_delay(3, &policy(), 0.0).as_millis(), 3_600);
        assert_eq!(backoff_delay(3, &policy(), 0.999_999).as_millis(), 4_399);
        let custom = RestartPolicy {
            backoff_base: Duration::from_millis(100),
            ..policy()
        };
        assert_eq!(backoff_delay(2, &custom, 0.5).as_millis(), 200);
    }

    /// One row of the table below.
    struct Case<'a> {
        name: &'a str,
        state: &'a StreamState,
        completed: u32,
        exit: Option<i32>,
        policy: &'a RestartPolicy,
        breaker: Option<u64>,
        now: u64,
        want: &'a str,
    }

    #[test]
    fn restart_decision_table() {
        let p = RestartPolicy {
            max_restarts: 2,
            ..policy()
        };
        let fresh = StreamState::default();
        let used_one = StreamState {
            restarts: 1,
            completed_at_last_restart: Some(3),
            ..StreamState::default()
        };
        let used_two = StreamState {
            restarts: 2,
            completed_at_last_restart: Some(3),
            ..StreamState::default()
        };
        let backing = used_one.clone().with_history(StreamHistory {
            next_attempt_ms: Some(5_000),
            ..StreamHistory::default()
        });
        let busy = StreamState::default().with_history(StreamHistory {
            recent_restarts_ms: vec![100; 10],
            ..StreamHistory::default()
        });
        let never = RestartPolicy {
            kind: RestartKind::Never,
            ..p
        };
        let on_failure = RestartPolicy {
            kind: RestartKind::OnFailure,
            ..p
        };
        let roomy = RestartPolicy {
            max_restarts: 100,
            ..p
        };
        let cases: Vec<Case> = vec![
            Case {
                name: "fresh stream",
                state: &fresh,
                completed: 0,
                exit: None,
                policy: &p,
                breaker: None,
                now: 1_000,
                want: "restart 1",
            },
            Case {
                name: "second attempt",
                state: &used_one,
                completed: 3,
                exit: None,
                policy: &p,
                breaker: None,
                now: 1_000,
                want: "restart 2",
            },
            Case {
                name: "budget spent",
                state: &used_two,
                completed: 3,
                exit: None,
                policy: &p,
                breaker: None,
                now: 1_000,
                want: "exhausted",
            },
            Case {
                name: "progress resets the budget",
                state: &used_two,
                completed: 4,
                exit: None,
                policy: &p,
                breaker: None,
                now: 1_000,
                want: "restart 1",
            },
            Case {
                name: "backing off",
                state: &backing,
                completed: 3,
                exit: None,
                policy: &p,
                breaker: None,
                now: 1_000,
                want: "wait 5000",
            },
            Case {
                name: "backoff over",
                state: &backing,
                completed: 3,
                exit: None,
                policy: &p,
                breaker: None,
                now: 5_000,
                want: "restart 2",
            },
            Case {
                name: "breaker open",
                state: &fresh,
                completed: 0,
                exit: None,
                policy: &p,
                breaker: Some(9_000),
                now: 1_000,
                want: "wait 9000",
            },
            Case {
                name: "breaker closed again",
                state: &fresh,
                completed: 0,
                exit: None,
                policy: &p,
                breaker: Some(900),
                now: 1_000,
                want: "restart 1",
            },
            Case {
                name: "rate limited",
                state: &busy,
                completed: 0,
                exit: None,
                policy: &roomy,
                breaker: None,
                now: 1_000,
                want: "wait 600100",
            },
            Case {
                name: "rate window passed",
                state: &busy,
                completed: 0,
                exit: None,
                policy: &roomy,
                breaker: None,
                now: 600_100,
                want: "restart 1",
            },
            Case {
                name: "policy never",
                state: &fresh,
                completed: 0,
                exit: Some(1),
                policy: &never,
                breaker: None,
                now: 1_000,
                want: "not by policy",
            },
            Case {
                name: "on-failure, clean exit",
                state: &fresh,
                completed: 0,
                exit: Some(0),
                policy: &on_failure,
                breaker: None,
                now: 1_000,
                want: "not by policy",
            },
            Case {
                name: "on-failure, crash",
                state: &fresh,
                completed: 0,
                exit: Some(1),
                policy: &on_failure,
                breaker: None,
                now: 1_000,
                want: "restart 1",
            },
            Case {
                name: "on-failure, unknown exit",
                state: &fresh,
                completed: 0,
                exit: None,
                policy: &on_failure,
                breaker: None,
                now: 1_000,
                want: "restart 1",
            },
        ];
        for Case {
            name,
            state,
            completed,
            exit,
            policy: pol,
            breaker,
            now,
            want,
        } in cases
        {
            let got = match decide_restart(state, completed, exit, pol, breaker, now) {
                RestartDecision::Restart { attempt } => format!("restart {attempt}"),
                RestartDecision::Exhausted => "exhausted".into(),
                RestartDecision::Wait { until_ms, .. } => format!("wait {until_ms}"),
                RestartDecision::NotByPolicy { .. } => "not by policy".into(),
            };
            assert_eq!(got, want, "{name}");
        }
        let zero = RestartPolicy {
            max_restarts: 0,
            ..p
        };
        assert_eq!(
            decide_restart(&fresh, 0, None, &zero, None, 0),
            RestartDecision::Exhausted
        );
    }

    #[test]
    fn charging_schedules_backoff_and_healthy_runs_reset_it() {
        let p = policy();
        let mut s = StreamState {
            restarts: 2,
            completed_at_last_restart: Some(1),
            ..StreamState::default()
        };
        assert_eq!(
            charge_attempt(&mut s, 2, "dead", &p, 100, 0.5),
            1,
            "progress reset the budget first"
        );
        assert_eq!(s.history().next_attempt_ms, Some(1_100));
        assert_eq!(charge_attempt(&mut s, 2, "dead", &p, 2_000, 0.5), 2);
        assert_eq!(s.history().next_attempt_ms, Some(4_000));
        assert_eq!(
            (
                s.restarts_total,
                s.streak,
                s.history().recent_restarts_ms.len()
            ),
            (2, 2, 2)
        );
        note_healthy(&mut s, 2_000, &p, 2_000 + 599_999);
        assert_eq!(s.streak, 2, "not healthy long enough");
        note_healthy(&mut s, 2_000, &p, 2_000 + 600_000);
        assert_eq!((s.streak, s.history().next_attempt_ms), (0, None));
    }

    #[test]
    fn breaker_needs_a_majority_and_a_minimum() {
        let b = BreakerPolicy::default();
        let cases = [
            (0, 10, false),
            (2, 2, false),
            (3, 4, true),
            (3, 6, false),
            (4, 6, true),
            (6, 10, true),
            (5, 10, false),
        ];
        for (failed, total, want) in cases {
            assert_eq!(
                breaker_trips(failed, total, &b),
                want,
                "{failed} of {total}"
            );
        }
    }
}
