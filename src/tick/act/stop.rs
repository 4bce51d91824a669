//! Stopping things: a worker stopped gracefully with every signal logged, a
//! stale PID file removed only if it is still the file that was judged, and
//! the daemon's own process components stopped when it shuts down.

use crate::clock::now_ms;
use crate::component::{self, ComponentKind};
use crate::layout::{Layout, StreamId};
use crate::process::identity::Liveness;
use crate::process::pidfile::{self, PidFile};
use crate::process::procinfo;
use crate::process::stop::StopOutcome;
use crate::report::events::EventRecord;
use crate::report::log::Level;
use crate::state::StateStore;
use crate::supervise::assess::Verdict;
use crate::supervise::lifecycle::Event;
use crate::supervise::plan::{self, Changes};

use super::{ActError, Processes, Recorder, StopScope};
use crate::tick::observe::recheck;
use crate::tick::TickSettings;

/// Stops a running worker gracefully (TERM to its group, grace, KILL),
/// logging every signal and the outcome.
pub fn stop_running(
    recorder: &Recorder<'_>,
    processes: &dyn Processes,
    scope: &StopScope<'_>,
    id: &StreamId,
    pid: i32,
    start_ticks: u64,
    grace: std::time::Duration,
) -> Result<(), ActError> {
    let logger = recorder.logger;
    let mut notes = Vec::new();
    let mut note = |n| notes.push(n);
    let outcome = match scope {
        StopScope::Worker(who) => processes.stop_worker(who, pid, start_ticks, grace, &mut note),
        StopScope::Component { state_dir } => {
            processes.stop(state_dir, pid, start_ticks, grace, &mut note)
        }
    }
    .map_err(|source| ActError::StopRefused {
        stream: id.clone(),
        source,
    })?;
    for n in &notes {
        logger.info(&format!("Worker {id}: {n}"));
    }
    let (level, text) = match &outcome {
        StopOutcome::AlreadyGone => (
            Level::Info,
            format!("Worker {id} (PID {pid}) was already gone"),
        ),
        StopOutcome::Terminated => (Level::Success, format!("Worker {id} (PID {pid}) stopped")),
        StopOutcome::Killed { pids } => (
            Level::Warning,
            format!(
                "Worker {id} (PID {pid}) ignored SIGTERM for {}s; killed {}",
                grace.as_secs_f64(),
                pids.len()
            ),
        ),
        StopOutcome::Survived { pids } => (
            Level::Error,
            format!("Worker {id}: processes {pids:?} survived SIGKILL"),
        ),
    };
    logger.action(level, &text);
    recorder.event(EventRecord {
        pid: Some(pid),
        reason: Some(text),
        ..EventRecord::new("stop", Some(id.as_str()))
    });
    match outcome {
        StopOutcome::Survived { pids } => Err(ActError::Survived {
            stream: id.clone(),
            pids,
        }),
        _ => Ok(()),
    }
}

/// Removes a PID file judged stale, if it is still the file that was judged.
pub fn remove_if_stale(
    layout: &Layout,
    recorder: &Recorder<'_>,
    id: &StreamId,
    pid_file: &PidFile,
    liveness: &Liveness,
) {
    let (Liveness::Stale { reason }, Some(fingerprint)) = (liveness, pid_file.fingerprint()) else {
        return;
    };
    let path = layout.pid_file(id);
    match pidfile::remove_if_unchanged(&path, fingerprint, procinfo::pid_max()) {
        Ok(true) => {
            recorder
                .logger
                .warning(&format!("Removed stale PID file for {id}: {reason}"));
            recorder.event(EventRecord {
                reason: Some(reason.clone()),
                ..EventRecord::new("stale_pid_removed", Some(id.as_str()))
            });
        }
        Ok(false) => {}
        Err(e) => recorder.logger.error(&format!(
            "Cannot remove stale PID file {}: {e}",
            path.display()
        )),
    }
}

/// On daemon shutdown: stops the process components the daemon owns and
/// marks them not started, so the next daemon starts them afresh.
pub fn stop_owned_components(
    layout: &Layout,
    settings: &TickSettings,
    recorder: &Recorder<'_>,
    store: &StateStore,
) {
    for c in component::declared(&settings.config, layout) {
        if !matches!(c.kind, ComponentKind::Process(_)) {
            continue;
        }
        let (pid_file, liveness) = recheck(layout, store, &c.id);
        if let Liveness::Running { pid, start_ticks } = liveness {
            let state_dir = layout.state_dir();
            let stopped = stop_running(
                recorder,
                &super::RealProcesses,
                &StopScope::Component {
                    state_dir: &state_dir,
                },
                &c.id,
                pid,
                start_ticks,
                settings.grace,
            );
            if let Err(e) = stopped {
                recorder.logger.error(&e.to_string());
                continue;
            }
        }
        if let PidFile::Pid { fingerprint, .. } = &pid_file {
            let _ = pidfile::remove_if_unchanged(
                &layout.pid_file(&c.id),
                fingerprint,
                procinfo::pid_max(),
            );
        }
        let now = now_ms();
        let mut changes = Changes::default();
        let _ = store.update_stream(&c.id, |st, _| {
            changes = Changes::default();
            let reset = Event::Observed(Verdict::NeverStarted);
            let _ = plan::apply_event(st, &c.id, reset, now, &mut changes);
        });
        recorder.changes(&changes);
    }
}
