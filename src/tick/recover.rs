//! Task recovery as an action (SPEC 3.7): which streams qualify — a dead
//! stream, or one whose restarts gave up, never one whose worker runs —
//! running the store's one-transaction recovery for them, and recording
//! each task moved back to `pending` in monitor.log and the event log
//! (`task_recovered`, the task id in `reason`). Used by `recover-tasks` and,
//! with `--recover-tasks`, after every tick of a check or the daemon.

use std::time::Duration;

use crate::layout::StreamId;
use crate::report::events::EventRecord;
use crate::report::log::Level;
use crate::state::StateStore;
use crate::store::recovery::{self, Recovery, RecoveryRequest};
use crate::store::{Initiative, StoreError, TaskSource};
use crate::supervise::assess::Verdict;
use crate::supervise::lifecycle::Lifecycle;
use crate::supervise::model::State;

use super::{Observed, Recorder};

/// Whether a stream's leftover `in_progress` tasks may be taken back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eligibility {
    /// Its worker is dead.
    Dead,
    /// Its restarts gave up and no worker runs.
    GaveUp,
    /// Not eligible; the phrase says what the stream is.
    No(String),
}

/// The rule, pure: a live worker owns its tasks (even a stuck one, which is
/// stopped and restarted rather than robbed), whatever the state file says;
/// otherwise a dead verdict or a given-up lifecycle qualifies.
pub fn eligibility(
    worker_running: bool,
    verdict: &Verdict,
    lifecycle: Option<&Lifecycle>,
) -> Eligibility {
    if worker_running {
        return Eligibility::No("running".into());
    }
    match (verdict, lifecycle) {
        (Verdict::Dead { .. }, _) => Eligibility::Dead,
        (_, Some(Lifecycle::GaveUp { .. })) => Eligibility::GaveUp,
        (other, _) => Eligibility::No(format!("{} (not dead, not given up)", other.label())),
    }
}

/// The streams to recover and the named ones that do not qualify.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub streams: Vec<StreamId>,
    pub skipped: Vec<(StreamId, String)>,
}

/// One stream as recovery sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub id: &'a StreamId,
    pub worker_running: bool,
    pub verdict: &'a Verdict,
}

/// Picks the eligible streams, or the eligible ones among `named`; the
/// named ones that do not qualify are listed with what they are.
pub fn select<'a>(
    streams: impl IntoIterator<Item = Candidate<'a>>,
    state: &State,
    named: Option<&[StreamId]>,
) -> Selection {
    let mut selection = Selection::default();
    for Candidate {
        id,
        worker_running,
        verdict,
    } in streams
    {
        let wanted = named.is_none_or(|n| n.contains(id));
        if !wanted {
            continue;
        }
        let lifecycle = state.streams.get(id.as_str()).map(|s| &s.lifecycle);
        match eligibility(worker_running, verdict, lifecycle) {
            Eligibility::Dead | Eligibility::GaveUp => selection.streams.push(id.clone()),
            Eligibility::No(what) => {
                if named.is_some() {
                    selection.skipped.push((id.clone(), what));
                }
            }
        }
    }
    selection
}

/// What a recovery reads from one snapshot.
pub struct Scope<'a> {
    pub source: &'a TaskSource,
    pub initiative: &'a Initiative,
    pub observed: &'a [Observed],
}

impl Scope<'_> {
    pub fn candidates(&self) -> impl Iterator<Item = Candidate<'_>> {
        self.observed.iter().map(|o| Candidate {
            id: &o.view.id,
            worker_running: o.liveness.is_running(),
            verdict: &o.verdict,
        })
    }
}

/// Recovers (or, in a dry run, lists) the stale tasks of `streams` and
/// records each one.
pub fn recover(
    scope: &Scope<'_>,
    streams: &[StreamId],
    recorder: &Recorder<'_>,
    older_than: Duration,
    busy_timeout: Duration,
    dry_run: bool,
) -> Result<Recovery, StoreError> {
    let ids: Vec<String> = streams.iter().map(|s| s.to_string()).collect();
    let request = RecoveryRequest {
        source: scope.source,
        initiative_id: &scope.initiative.id,
        streams: &ids,
        older_than,
        busy_timeout,
        dry_run,
    };
    let recovery = recovery::recover_tasks(&request, chrono::Utc::now())?;
    let logger = recorder.logger;
    for task in &recovery.tasks {
        let title = if task.title.is_empty() {
            String::new()
        } else {
            format!(" ({})", task.title)
        };
        let idle = idle_text(task.idle_secs);
        if dry_run {
            logger.info(&format!(
                "Would recover task {} of stream {}{title}: in_progress for {idle} without an update",
                task.id, task.stream
            ));
            continue;
        }
        logger.action(
            Level::Warning,
            &format!(
                "Recovered task {} of stream {}{title}: in_progress -> pending after {idle} without an update",
                task.id, task.stream
            ),
        );
        recorder.event(EventRecord {
            from: Some("in_progress".into()),
            to: Some("pending".into()),
            reason: Some(task.id.clone()),
            ..EventRecord::new("task_recovered", Some(&task.stream))
        });
    }
    for id in &recovery.undated {
        logger.warning(&format!(
            "Task {id} is in_progress with an unreadable updated_at; left as it is"
        ));
    }
    Ok(recovery)
}

/// The `--recover-tasks` step after a tick: silent when nothing qualifies or
/// nothing is stale; a failure is logged and never fails the check, which
/// has already run.
pub fn after_tick(
    scope: &Scope<'_>,
    store: &StateStore,
    recorder: &Recorder<'_>,
    older_than: Duration,
    busy_timeout: Duration,
) {
    let selection = store.view(|state| select(scope.candidates(), state, None));
    if selection.streams.is_empty() {
        return;
    }
    if let Err(e) = recover(
        scope,
        &selection.streams,
        recorder,
        older_than,
        busy_timeout,
        false,
    ) {
        recorder
            .logger
            .error(&format!("Task recovery skipped this time: {e}"));
    }
}

/// `90s`, `7m 12s`, `2h 5m`.
pub fn idle_text(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::model::StreamState;

    fn id(s: &str) -> StreamId {
        StreamId::parse(s).unwrap()
    }

    fn dead() -> Verdict {
        Verdict::Dead {
            reason: "no PID file".into(),
        }
    }

    fn gave_up() -> Lifecycle {
        Lifecycle::GaveUp {
            reason: "budget".into(),
        }
    }

    #[test]
    fn eligibility_table() {
        let running = Lifecycle::Running {
            pid: 9,
            since_ms: 1,
        };
        let stuck = Verdict::Unhealthy {
            pid: 9,
            reason: "log idle".into(),
        };
        // (worker running, verdict, lifecycle, eligible)
        let cases: Vec<(bool, Verdict, Option<Lifecycle>, bool)> = vec![
            (false, dead(), None, true),
            (false, dead(), Some(running.clone()), true),
            (false, dead(), Some(gave_up()), true),
            (false, Verdict::NeverStarted, Some(gave_up()), true),
            (false, Verdict::Complete, Some(gave_up()), true),
            // A live worker owns its tasks, even if the state file lags.
            (true, Verdict::Running { pid: 9 }, Some(gave_up()), false),
            (true, Verdict::Running { pid: 9 }, None, false),
            (true, Verdict::StartingUp { pid: 9 }, Some(gave_up()), false),
            (true, stuck, Some(gave_up()), false),
            (false, Verdict::NeverStarted, None, false),
            (false, Verdict::NoTasks, Some(running), false),
            (false, Verdict::Complete, None, false),
            (
                false,
                Verdict::WaitingOnDeps {
                    waiting: vec![id("A")],
                },
                None,
                false,
            ),
        ];
        for (worker_running, verdict, lifecycle, want) in cases {
            let got = eligibility(worker_running, &verdict, lifecycle.as_ref());
            assert_eq!(
                !matches!(got, Eligibility::No(_)),
                want,
                "{verdict:?} {lifecycle:?}: {got:?}"
            );
        }
    }

    #[test]
    fn selection_of_all_and_of_named_streams() {
        let (a, b, c, d) = (id("a"), id("b"), id("c"), id("d"));
        let verdicts = [
            (a.clone(), false, dead()),
            (b.clone(), true, Verdict::Running { pid: 5 }),
            (c.clone(), false, Verdict::NeverStarted),
            (d.clone(), false, Verdict::NeverStarted),
        ];
        let candidates = || {
            verdicts
                .iter()
                .map(|(id, worker_running, verdict)| Candidate {
                    id,
                    worker_running: *worker_running,
                    verdict,
                })
        };
        let mut state = State::default();
        state.streams.insert(
            "c".into(),
            StreamState {
                lifecycle: gave_up(),
                ..StreamState::default()
            },
        );
        let all = select(candidates(), &state, None);
        assert_eq!(all.streams, [a.clone(), c.clone()]);
        assert!(all.skipped.is_empty(), "unnamed streams are not reported");

        let named = [b.clone(), c.clone()];
        let some = select(candidates(), &state, Some(&named));
        assert_eq!(some.streams, [c]);
        assert_eq!(some.skipped, [(b, "running".to_string())]);
    }

    #[test]
    fn idle_text_table() {
        for (secs, want) in [
            (0, "0s"),
            (59, "59s"),
            (60, "1m 0s"),
            (432, "7m 12s"),
            (3600, "1h 0m"),
            (7500, "2h 5m"),
        ] {
            assert_eq!(idle_text(secs), want);
        }
    }
}
