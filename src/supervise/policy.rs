//! Whether a dead worker may be restarted now: the `--max-restarts` budget
//! (restarts without forward progress, shared by every monitor through the
//! state file) and exponential backoff after failed restarts.

use std::time::Duration;

use crate::state::StreamState;

/// The restart policy in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub max_restarts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy { max_restarts: 2, backoff_base: Duration::from_secs(1), backoff_cap: Duration::from_secs(60) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart now; this is attempt `attempt` of `max`.
    Restart { attempt: u32 },
    /// The budget is spent.
    Exhausted,
    /// A failed restart is backing off until this time (ms since epoch).
    BackingOff { until_ms: u64 },
}

/// Restarts charged against the budget, given the tasks completed now: a
/// newly completed task since the last restart is progress and resets it.
pub fn budget_used(state: &StreamState, completed_now: u32) -> u32 {
    match state.completed_at_last_restart {
        Some(before) if completed_now > before => 0,
        _ => state.restarts,
    }
}

pub fn decide_restart(state: &StreamState, completed_now: u32, policy: &RestartPolicy, now_ms: u64) -> RestartDecision {
    let used = budget_used(state, completed_now);
    if used >= policy.max_restarts {
        return RestartDecision::Exhausted;
    }
    match state.next_attempt_ms {
        Some(until_ms) if until_ms > now_ms => RestartDecision::BackingOff { until_ms },
        _ => RestartDecision::Restart { attempt: used + 1 },
    }
}

/// Charges one attempt to the budget (before spawning, so a monitor that dies
/// mid-spawn has still counted it).
pub fn charge_attempt(state: &mut StreamState, completed_now: u32, reason: &str, now_ms: u64) -> u32 {
    state.restarts = budget_used(state, completed_now) + 1;
    state.restarts_total += 1;
    state.completed_at_last_restart = Some(completed_now);
    state.last_restart_ms = Some(now_ms);
    state.last_restart_reason = Some(reason.to_string());
    state.gave_up = false;
    state.restarts
}

/// Delay before the next attempt after `failures` failed restarts in a row:
/// base, 2·base, 4·base ... capped.
pub fn backoff_delay(failures: u32, policy: &RestartPolicy) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u64.checked_shl(failures.saturating_sub(1).min(32)).unwrap_or(u64::MAX);
    let millis = (policy.backoff_base.as_millis() as u64).saturating_mul(factor);
    Duration::from_millis(millis).min(policy.backoff_cap)
}

pub fn record_success(state: &mut StreamState) {
    state.consecutive_failures = 0;
    state.next_attempt_ms = None;
    state.last_error = None;
}

/// Records a failed restart and returns the backoff chosen.
pub fn record_failure(state: &mut StreamState, error: &str, policy: &RestartPolicy, now_ms: u64) -> Duration {
    state.consecutive_failures += 1;
    let delay = backoff_delay(state.consecutive_failures, policy);
    state.next_attempt_ms = Some(now_ms + delay.as_millis() as u64);
    state.last_error = Some(error.to_string());
    delay
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let policy = RestartPolicy::default();
        let secs: Vec<u64> = (0..10).map(|n| backoff_delay(n, &policy).as_secs()).collect();
        assert_eq!(secs, [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff_delay(u32::MAX, &policy).as_secs(), 60);
    }

    #[test]
    fn restart_decision_table() {
        let policy = RestartPolicy { max_restarts: 2, ..RestartPolicy::default() };
        let fresh = StreamState::default();
        let used_one = StreamState { restarts: 1, completed_at_last_restart: Some(3), ..StreamState::default() };
        let used_two = StreamState { restarts: 2, completed_at_last_restart: Some(3), ..StreamState::default() };
        let backing = StreamState { next_attempt_ms: Some(5_000), ..used_one.clone() };
        let cases: Vec<(&str, &StreamState, u32, u64, RestartDecision)> = vec![
            ("fresh stream", &fresh, 0, 1_000, RestartDecision::Restart { attempt: 1 }),
            ("second attempt", &used_one, 3, 1_000, RestartDecision::Restart { attempt: 2 }),
            ("budget spent", &used_two, 3, 1_000, RestartDecision::Exhausted),
            ("progress resets the budget", &used_two, 4, 1_000, RestartDecision::Restart { attempt: 1 }),
            ("backing off", &backing, 3, 1_000, RestartDecision::BackingOff { until_ms: 5_000 }),
            ("backoff over", &backing, 3, 5_000, RestartDecision::Restart { attempt: 2 }),
        ];
        for (name, state, completed, now, want) in cases {
            assert_eq!(decide_restart(state, completed, &policy, now), want, "{name}");
        }
        let zero = RestartPolicy { max_restarts: 0, ..policy };
        assert_eq!(decide_restart(&fresh, 0, &zero, 0), RestartDecision::Exhausted);
    }

    #[test]
    fn charging_and_failures() {
        let policy = RestartPolicy::default();
        let mut s = StreamState { restarts: 2, completed_at_last_restart: Some(1), ..StreamState::default() };
        assert_eq!(charge_attempt(&mut s, 2, "dead", 100), 1, "progress reset the budget first");
        assert_eq!(charge_attempt(&mut s, 2, "dead", 200), 2);
        assert_eq!(s.restarts_total, 2);
        assert_eq!(record_failure(&mut s, "boom", &policy, 1_000).as_secs(), 1);
        assert_eq!(record_failure(&mut s, "boom", &policy, 1_000).as_secs(), 2);
        assert_eq!(s.next_attempt_ms, Some(3_000));
        record_success(&mut s);
        assert_eq!((s.consecutive_failures, s.next_attempt_ms), (0, None));
    }
}
