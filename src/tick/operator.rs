//! The operator's verbs on one stream (`pause`, `resume`, `reset`, `stop`,
//! `restart STREAM`), as the same act and record halves the daemon uses:
//! every lifecycle change goes through `plan::apply_event` under the state
//! lock and is journalled by the [`Recorder`] (monitor.log and a
//! `transition` event), stops and restarts hold the stream's spawn lock,
//! and each verb is recorded with who asked.

use crate::clock::now_ms;
use crate::layout::StreamId;
use crate::process::identity::Liveness;
use crate::report::events::{operator, EventRecord};
use crate::report::log::Level;
use crate::state::StateStore;
use crate::supervise::lifecycle::{Event, Lifecycle};
use crate::supervise::plan::{self, Changes};
use crate::supervise::policy;

use super::act::{remove_if_stale, ActError, Actor};
use super::{Recorder, Snapshot};

/// Moves a stream by an operator's event; `action` names the verb for the
/// error. Returns the state it left.
pub fn apply(
    store: &StateStore,
    recorder: &Recorder<'_>,
    id: &StreamId,
    event: Event,
    action: &'static str,
) -> Result<Lifecycle, ActError> {
    apply_with(store, recorder, id, event, action, |_| {})
}

/// `apply`, with a change of the stream's accounting in the same update.
fn apply_with(
    store: &StateStore,
    recorder: &Recorder<'_>,
    id: &StreamId,
    event: Event,
    action: &'static str,
    also: impl FnOnce(&mut crate::supervise::model::StreamState),
) -> Result<Lifecycle, ActError> {
    let now = now_ms();
    let mut changes = Changes::default();
    let (applied, st) = store
        .update_stream(id, |st, _| {
            changes = Changes::default();
            let applied = plan::apply_event(st, id, event, now, &mut changes);
            if applied.is_ok() {
                also(st);
            }
            applied
        })
        .map_err(|source| ActError::State {
            stream: id.clone(),
            action,
            source,
        })?;
    recorder.changes(&changes);
    applied.map_err(|source| ActError::Illegal {
        stream: id.clone(),
        action,
        source,
    })?;
    Ok(st.lifecycle)
}

/// Records a verb in monitor.log and the event log, with who asked.
pub fn note(recorder: &Recorder<'_>, id: &StreamId, event: &str, by: &str, message: &str) {
    recorder.logger.action(Level::Info, message);
    recorder.event(EventRecord {
        by: Some(by.to_string()),
        ..EventRecord::new(event, Some(id.as_str()))
    });
}

/// `reset STREAM`: the stream is forgiven (budget, backoff, rate window,
/// failure streaks, remembered identity) and leaves a give-up or backoff.
pub fn reset(store: &StateStore, recorder: &Recorder<'_>, id: &StreamId) -> Result<(), ActError> {
    apply_with(store, recorder, id, Event::Reset, "reset", policy::forgive)?;
    Ok(())
}

/// `reset`: lifts the global breaker when `only_for`'s failures opened it
/// (every time when `None`); says so, with who asked. Returns whether it was
/// open.
pub fn lift_breaker(
    store: &StateStore,
    recorder: &Recorder<'_>,
    only_for: Option<&StreamId>,
    by: &str,
) -> Result<bool, ActError> {
    let stream = only_for
        .cloned()
        .unwrap_or_else(|| StreamId::parse("all").expect("a valid stream id"));
    let lifted = store
        .update(|s| plan::lift_breaker(s, only_for, now_ms()))
        .map_err(|source| ActError::State {
            stream,
            action: "lifting the breaker",
            source,
        })?;
    if lifted {
        recorder.logger.action(
            Level::Info,
            &format!("Global restart breaker lifted by {by}: restarts may resume"),
        );
        recorder.event(EventRecord {
            by: Some(by.to_string()),
            reason: only_for.map(|id| format!("reset of {id}, whose failures opened it")),
            ..EventRecord::new("breaker_lifted", None)
        });
    }
    Ok(lifted)
}

/// What `stop STREAM` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// A worker ran and was stopped.
    Worker { pid: i32 },
    /// Nothing ran; the stream is only marked stopped.
    NothingRan,
}

/// `stop STREAM`: marks the stream stopped first (so no monitor restarts it
/// meanwhile), then stops its worker gracefully under the stream's lock.
pub fn stop(actor: &Actor<'_>, id: &StreamId, by: &str) -> Result<Stopped, ActError> {
    let recorder = actor.recorder;
    apply(
        actor.store,
        recorder,
        id,
        Event::Stop { by: by.to_string() },
        "stop",
    )?;
    let _held = actor.lock_stream(id)?;
    let (pid_file, liveness) = actor.recheck(id);
    let Liveness::Running { pid, start_ticks } = liveness else {
        remove_if_stale(actor.layout, recorder, id, &pid_file, &liveness);
        return Ok(Stopped::NothingRan);
    };
    note(
        recorder,
        id,
        "stop_requested",
        by,
        &format!("Stopping worker {id} (PID {pid}) for {by}"),
    );
    let stopped = actor.stop(id, pid, start_ticks);
    let (pid_file, liveness) = actor.recheck(id);
    remove_if_stale(actor.layout, recorder, id, &pid_file, &liveness);
    stopped.map(|()| Stopped::Worker { pid })
}

/// How long the operator's `session_stop` command may take.
const SESSION_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Stops the live Claude sessions of a tc stream, only through the
/// operator's `session_stop` command (a session's PID may be the Claude
/// daemon's: it is never signalled). `Ok(None)`: no live session. Without a
/// `session_stop` the session is left running and that is the error.
pub fn stop_session(
    actor: &Actor<'_>,
    snapshot: &Snapshot,
    id: &StreamId,
    by: &str,
) -> Result<Option<String>, ActError> {
    let Some((_, seen)) = snapshot.tc.as_ref().and_then(|tc| tc.stream(id)) else {
        return Ok(None);
    };
    let sessions: Vec<&str> = seen
        .workers
        .live
        .iter()
        .filter(|w| w.source == crate::workers::SourceKind::ClaudeSession)
        .map(|w| w.id.as_str())
        .collect();
    let Some(first) = sessions.first() else {
        return Ok(None);
    };
    let Some(command) = actor
        .settings
        .config
        .stream_setting(id.as_str(), |w| w.session_stop.clone())
    else {
        return Err(ActError::Component {
            stream: id.clone(),
            reason: format!(
                "stuck; no session_stop configured: session {first} is left running \
                 (set [workers] session_stop in monitor.toml to let the monitor stop sessions)"
            ),
        });
    };
    for job in &sessions {
        note(
            actor.recorder,
            id,
            "stop_requested",
            by,
            &format!("Stopping worker {id} (session {job}) for {by} through session_stop"),
        );
        crate::workers::launch::stop_session(&command, job, SESSION_STOP_TIMEOUT).map_err(
            |reason| ActError::Component {
                stream: id.clone(),
                reason: format!("session_stop of session {job} failed: {reason}"),
            },
        )?;
    }
    Ok(Some(sessions.join(", ")))
}

/// `restart STREAM`: under the stream's lock, stop the worker gracefully if
/// it runs, forgive the stream, and start it afresh. Returns what was
/// launched: its PID, and the wrapper's `Child` when this process spawned it
/// (a long-lived caller, the dashboard, reaps it when it ends).
pub fn restart(
    actor: &mut Actor<'_>,
    snapshot: &Snapshot,
    id: &StreamId,
) -> Result<super::act::Launched, ActError> {
    let obs = snapshot
        .stream(id)
        .ok_or_else(|| ActError::Unknown { stream: id.clone() })?;
    let recorder = actor.recorder;
    let _held = actor.lock_stream(id)?;
    // Ask the state machine first: a paused stream must not lose its worker.
    let current = actor
        .store
        .stream(id)
        .map(|s| s.lifecycle)
        .unwrap_or_default();
    crate::supervise::lifecycle::transition(&current, &Event::OperatorRestart, now_ms()).map_err(
        |source| ActError::Illegal {
            stream: id.clone(),
            action: "restart (resume it first if it is paused)",
            source,
        },
    )?;
    let (pid_file, liveness) = actor.recheck(id);
    if let Liveness::Running { pid, start_ticks } = liveness {
        actor.stop(id, pid, start_ticks)?;
    }
    remove_if_stale(actor.layout, recorder, id, &pid_file, &liveness);
    let by = operator();
    // A tc stream's live session goes first, or nothing starts beside it.
    stop_session(actor, snapshot, id, &by)?;
    let now = now_ms();
    apply_with(
        actor.store,
        recorder,
        id,
        Event::OperatorRestart,
        "restart",
        |st| {
            policy::forgive(st);
            st.restarts_total += 1;
            st.history_mut().last_restart_ms = Some(now);
            st.history_mut().last_restart_reason = Some(format!("operator restart by {by}"));
        },
    )?;
    recorder.logger.action(
        Level::Info,
        &format!("Restarting worker {id} (operator restart by {by})"),
    );
    recorder.event(EventRecord {
        by: Some(by),
        ..EventRecord::new("operator_restart", Some(id.as_str()))
    });
    let launched = actor.launch(obs, None);
    launched.ok_or_else(|| ActError::Component {
        stream: id.clone(),
        reason: "the worker did not start; see monitor.log".into(),
    })
}
