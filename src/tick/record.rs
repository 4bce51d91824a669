//! The record step, and the voice of every tick: the console and monitor.log
//! lines scripts grep for (in the original's words), lifecycle transitions in
//! monitor.log and events.jsonl, give-ups (event, notify hook), the metrics
//! file, and when the daemon should wake next. The operator verbs record
//! through the same [`Recorder`].

use std::time::Duration;

use crate::clock::now_ms;
use crate::layout::{Layout, StreamId};
use crate::report::events::{EventLog, EventRecord};
use crate::report::log::{Kind, Level, Logger};
use crate::report::{metrics as prom, notify};
use crate::state::StateStore;
use crate::supervise::assess::Verdict;
use crate::supervise::lifecycle::Lifecycle;
use crate::supervise::model::{GiveUp, State};
use crate::supervise::plan::{Change, Changes, Plan};

use super::{Decided, Snapshot, TickMemory, TickSettings};

/// Writes state changes and actions to monitor.log and the event log.
pub struct Recorder<'a> {
    pub logger: &'a Logger,
    pub events: EventLog,
    pub layout: &'a Layout,
    /// The channel an operator's command came through (`web`), stamped on
    /// every event this recorder writes; `None` for the CLI and the daemon.
    pub via: Option<&'static str>,
}

impl<'a> Recorder<'a> {
    pub fn new(layout: &'a Layout, logger: &'a Logger) -> Recorder<'a> {
        Recorder {
            logger,
            events: EventLog::new(&layout.events_log()),
            layout,
            via: None,
        }
    }

    pub fn event(&self, mut record: EventRecord) {
        if record.via.is_none() {
            record.via = self.via.map(str::to_string);
        }
        if let Err(e) = self.events.append(&record) {
            self.logger.write_file(
                Level::Error,
                &format!("Cannot write {}: {e}", self.events.path().display()),
            );
        }
    }

    /// Every transition of a journal, and any the state machine refused.
    pub fn changes(&self, changes: &Changes) {
        for change in &changes.changes {
            self.change(change);
        }
        for refused in &changes.refused {
            self.logger.error(&format!(
                "State machine refused a transition ({refused}); state left as it was"
            ));
        }
    }

    fn change(&self, c: &Change) {
        let why = c.to.reason();
        let suffix = why.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        // Transitions go to the file and the event log; the console keeps the
        // original's lines.
        let line = format!(
            "Worker {} state {} -> {}{suffix}",
            c.stream,
            c.from.kind().name(),
            c.to.kind().name()
        );
        self.logger.write_file(Level::Info, &line);
        let pid = c.to.pid();
        let attempt = match &c.to {
            Lifecycle::Restarting { attempt } => Some(*attempt),
            _ => None,
        };
        self.event(EventRecord {
            from: Some(c.from.kind().name().into()),
            to: Some(c.to.kind().name().into()),
            reason: why.or_else(|| Some(c.event.to_string())),
            pid,
            attempt,
            ..EventRecord::new("transition", Some(c.stream.as_str()))
        });
    }
}

/// What became of "All workers healthy" in a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthyLine {
    /// Written to monitor.log (and the console).
    Logged,
    /// Healthy as before: the console of a one-shot only.
    Unchanged,
    /// Not healthy: said again at the next healthy check.
    NotHealthy,
}

/// The daemon says an unchanged "All workers healthy" again this often.
const HEALTHY_AGAIN: Duration = Duration::from_secs(3600);

/// Whether monitor.log gets "All workers healthy" now: after any change
/// since the last check (a transition now, or a failing check before,
/// which cleared the mark), and in the daemon once an hour.
fn healthy_line_due(last_logged_ms: Option<u64>, changed: bool, daemon: bool, now_ms: u64) -> bool {
    match last_logged_ms {
        None => true,
        Some(at) => {
            changed || (daemon && now_ms.saturating_sub(at) >= HEALTHY_AGAIN.as_millis() as u64)
        }
    }
}

/// Keeps the state's mark of the last "All workers healthy" in monitor.log.
pub fn note_healthy_line(store: &StateStore, state: &super::Failing, line: HealthyLine) {
    let mark = match line {
        HealthyLine::Logged => Some(now_ms()),
        HealthyLine::NotHealthy if state.healthy_logged_ms.is_some() => None,
        _ => return,
    };
    let _ = store.update(|s| s.healthy_logged_ms = mark);
}

/// The announcements of a tick before it acts: the original's summary lines,
/// the breaker, and why failing streams are not restarted now.
pub fn announce(
    recorder: &Recorder<'_>,
    memory: &mut TickMemory,
    settings: &TickSettings,
    snapshot: &Snapshot,
    decided: &Decided,
) -> HealthyLine {
    let logger = recorder.logger;
    for w in &snapshot.warnings {
        memory.once(logger, Level::Warning, Kind::Report, w.clone());
    }
    // Streams an operator holds are said below, not counted as failing.
    let held = |id: &StreamId| decided.failing.held(id);
    // In id order, as the snapshot has them.
    let mut cursor = 0;
    let dead: Vec<StreamId> = snapshot
        .dead()
        .into_iter()
        .filter(|id| !decided.failing.held_in_order(id, &mut cursor))
        .collect();
    let unhealthy: Vec<String> = snapshot
        .streams
        .iter()
        .filter_map(|o| match &o.verdict {
            Verdict::Unhealthy { reason, .. } if !held(&o.view.id) => {
                Some(format!("{} ({reason})", o.view.id))
            }
            _ => None,
        })
        .collect();
    if !unhealthy.is_empty() {
        logger.warning(&format!(
            "Found {} unhealthy worker(s): {}",
            unhealthy.len(),
            unhealthy.join(", ")
        ));
    }
    // A tc stream that cannot be told, or has work ready and nobody on it,
    // is not "healthy": say what it is instead.
    let unattended = tc_lines(settings, snapshot);
    let healthy = dead.is_empty() && unhealthy.is_empty() && unattended.is_empty();
    let now = now_ms();
    let mut said = HealthyLine::NotHealthy;
    if healthy {
        let last = decided.failing.healthy_logged_ms;
        said = if healthy_line_due(last, decided.changed, settings.daemon, now) {
            logger.success("All workers healthy");
            HealthyLine::Logged
        } else {
            if !settings.daemon {
                logger.console(Level::Success, Kind::Report, "All workers healthy");
            }
            HealthyLine::Unchanged
        };
    }
    for line in unattended {
        logger.warning(&line);
    }
    for id in snapshot.blocked() {
        let line = format!("Stream {id} is blocked: every open task is blocked; not restarting");
        memory.once(logger, Level::Info, Kind::Report, line);
    }
    if !dead.is_empty() {
        let names: Vec<&str> = dead.iter().map(StreamId::as_str).collect();
        logger.warning(&format!(
            "Found {} dead worker(s): {}",
            names.len(),
            names.join(", ")
        ));
        if !settings.plan.auto_restart && settings.hint_auto_restart {
            logger.warning("Auto-restart disabled. Use --auto-restart to enable.");
        }
    }
    if let Some((failed, total, until)) = decided.plan.breaker_opened {
        let secs = until.saturating_sub(now).div_ceil(1000);
        logger.action(
            Level::Warning,
            &format!("Global restart breaker open: {failed} of {total} workers failed within a minute; all restarts paused for {secs}s"),
        );
        recorder.event(EventRecord {
            reason: Some(format!("{failed} of {total} workers failed")),
            ..EventRecord::new("breaker_open", None)
        });
    }
    for (id, line) in &decided.plan.failed_starts {
        logger.action(Level::Warning, line);
        let exit = snapshot
            .stream(id)
            .and_then(|o| o.exit_code())
            .map(|c| format!("exit code {c}"));
        recorder.event(EventRecord {
            reason: Some(line.clone()),
            exit,
            ..EventRecord::new("failed_start", Some(id.as_str()))
        });
    }
    for obs in snapshot
        .streams
        .iter()
        .filter(|o| matches!(o.verdict, Verdict::Dead { .. } | Verdict::Unhealthy { .. }))
    {
        let id = &obs.view.id;
        let Some((lifecycle, gave_up)) = decided.failing.streams.get(id.as_str()) else {
            continue;
        };
        let said = match lifecycle {
            // Said where it happens (this tick's give-ups) or once per memory.
            Lifecycle::GaveUp { reason } if settings.plan.auto_restart => {
                if decided.plan.gives_up(id) {
                    None
                } else {
                    Some((Level::Warning, gave_up_line(id, gave_up.as_ref(), reason)))
                }
            }
            Lifecycle::Backoff { until_ms, reason } if decided.plan.restarts(id).is_none() => {
                deferred_line(id, until_ms.saturating_sub(now), reason).map(|l| (Level::Info, l))
            }
            held @ (Lifecycle::Paused { .. } | Lifecycle::Stopped { .. }) => Some((
                Level::Info,
                format!("Worker {id} is {}; not restarting", held.describe()),
            )),
            _ => None,
        };
        if let Some((level, line)) = said {
            memory.once(logger, level, Kind::Report, line);
        }
    }
    said
}

/// The lines for tc streams nobody attends: those whose workers cannot be
/// told, and those with a task ready and no worker.
fn tc_lines(settings: &TickSettings, snapshot: &Snapshot) -> Vec<String> {
    let mut lines = Vec::new();
    let unknown: Vec<(String, String)> = snapshot
        .streams
        .iter()
        .filter_map(|o| match &o.verdict {
            Verdict::CannotTell { why } => Some((o.view.id.to_string(), why.clone())),
            _ => None,
        })
        .collect();
    if let Some((_, why)) = unknown.first() {
        let ids: Vec<&str> = unknown.iter().map(|(id, _)| id.as_str()).collect();
        lines.push(format!(
            "Cannot tell whether {} worker(s) are alive: {} ({why}); not restarting them",
            ids.len(),
            ids.join(", ")
        ));
    }
    let ready = snapshot.ready();
    if !ready.is_empty() {
        let ids: Vec<&str> = ready.iter().map(StreamId::as_str).collect();
        let what = if settings.start_ready {
            "starting them once their dependencies' branches are merged"
        } else {
            "start them with --start-ready"
        };
        lines.push(format!(
            "{} stream(s) ready with no worker: {}; {what}",
            ids.len(),
            ids.join(", ")
        ));
    }
    lines
}

/// The give-up line of a stream given up earlier (a state file from before
/// give-ups were typed has only the reason).
fn gave_up_line(id: &StreamId, why: Option<&GiveUp>, reason: &str) -> String {
    match why {
        Some(why) => why.announcement(id.as_str()),
        None => format!("Worker {id} gave up: {reason}"),
    }
}

/// "restart deferred 12.3s", or nothing when the wait is already over (the
/// restart is due at this very tick; saying "0.0s" would be noise).
fn deferred_line(id: &StreamId, left_ms: u64, reason: &str) -> Option<String> {
    (left_ms >= 100).then(|| {
        let secs = left_ms as f64 / 1000.0;
        format!("Worker {id} restart deferred {secs:.1}s ({reason})")
    })
}

/// Announces this tick's give-ups once each (console, monitor.log, event
/// log) and starts the notify hook for each; returns the running hooks.
pub fn gave_up(
    recorder: &Recorder<'_>,
    memory: &mut TickMemory,
    settings: &TickSettings,
    give_ups: &[(StreamId, GiveUp)],
) -> Vec<std::thread::JoinHandle<()>> {
    let mut hooks = Vec::new();
    for (id, why) in give_ups {
        memory.once(
            recorder.logger,
            Level::Warning,
            Kind::Action,
            why.announcement(id.as_str()),
        );
        let event = EventRecord {
            reason: Some(why.to_string()),
            ..EventRecord::new("gave_up", Some(id.as_str()))
        };
        recorder.event(event.clone());
        if let Some(command) = &settings.on_give_up {
            hooks.push(notify::spawn_hook(
                command,
                &event,
                recorder.layout.monitor_log(),
                notify::HOOK_TIMEOUT,
            ));
        }
    }
    hooks
}

/// Writes `state/metrics.prom` (and StatsD, when asked) from the state as
/// this check left it. The file is rewritten only when a number other than
/// the check's own time changed: a check that changes nothing writes nothing.
pub fn metrics(
    recorder: &Recorder<'_>,
    memory: &mut TickMemory,
    settings: &TickSettings,
    store: &StateStore,
    took: Duration,
) {
    let logger = recorder.logger;
    let snapshot = store.view(|state| prom::snapshot(state, took, now_ms()));
    let path = recorder.layout.metrics_file();
    let text = prom::render(&snapshot);
    let unchanged = std::fs::read_to_string(&path).is_ok_and(|old| prom::same_numbers(&old, &text));
    if !unchanged {
        if let Err(e) = prom::write(&path, &text) {
            memory.once(
                logger,
                Level::Error,
                Kind::Action,
                format!("Cannot write metrics: {e}"),
            );
        }
    }
    if let Some(addr) = settings.statsd {
        if let Err(e) = prom::send_statsd(addr, &snapshot) {
            memory.once(
                logger,
                Level::Warning,
                Kind::Report,
                format!("Cannot send StatsD metrics to {addr}: {e}"),
            );
        }
    }
}

/// When the daemon should wake for a deferred restart: the plan's earliest
/// due time, or the backoff a restart that failed in this tick set.
pub fn next_wake(snapshot: &Snapshot, state: &State, plan: &Plan) -> Option<u64> {
    let mut record_at = 0;
    snapshot
        .streams
        .iter()
        .filter_map(|o| {
            let record = state
                .streams
                .get_in_order(o.view.id.as_str(), &mut record_at);
            match record.map(|s| &s.lifecycle) {
                Some(Lifecycle::Backoff { until_ms, .. }) => Some(*until_ms),
                _ => None,
            }
        })
        .chain(plan.next_due_ms)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> StreamId {
        StreamId::parse(s).unwrap()
    }

    #[test]
    fn give_up_lines_keep_the_original_words_for_the_budget() {
        let budget = GiveUp::Budget { max: 3 };
        assert_eq!(
            gave_up_line(&id("A"), Some(&budget), "ignored"),
            "Worker A has reached max restart limit (3)"
        );
        let same = GiveUp::SameFailure {
            signature: "crash: boom".into(),
            count: 3,
        };
        assert_eq!(
            gave_up_line(&id("A"), Some(&same), "ignored"),
            "Worker A gave up: the same failure 3 times in a row: crash: boom"
        );
        assert_eq!(
            gave_up_line(&id("A"), None, "old reason"),
            "Worker A gave up: old reason"
        );
    }

    #[test]
    fn a_give_up_is_said_once_though_act_and_the_next_announce_both_see_it() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout {
            project_root: dir.path().into(),
            orch: dir.path().into(),
            workspace_id: "w".into(),
            tasks_db: dir.path().join("t.db"),
            memory_db: dir.path().join("m.db"),
            tasks_db_given: false,
        };
        let logger = Logger::new(Some(&layout.monitor_log()), true);
        let recorder = Recorder::new(&layout, &logger);
        let mut memory = TickMemory::default();
        let why = GiveUp::Budget { max: 2 };
        let settings = crate::tick::act::tests_support::settings();
        gave_up(&recorder, &mut memory, &settings, &[(id("A"), why.clone())]);
        // The next tick of the same daemon finds the stream given up.
        let line = gave_up_line(&id("A"), Some(&why), "max restart limit (2) reached");
        memory.once(&logger, Level::Warning, Kind::Report, line);
        let log = std::fs::read_to_string(layout.monitor_log()).unwrap();
        assert_eq!(
            log.matches("has reached max restart limit (2)").count(),
            1,
            "{log}"
        );
    }

    #[test]
    fn healthy_is_logged_after_a_change_and_hourly_in_the_daemon() {
        let hour = 3_600_000;
        let rows = [
            // (last logged, changed, daemon, now, due)
            (None, false, false, 10, true),
            (Some(5), false, false, 10, false),
            (Some(5), true, false, 10, true),
            (Some(5), false, false, 5 + 2 * hour, false),
            (Some(5), false, true, 5 + hour - 1, false),
            (Some(5), false, true, 5 + hour, true),
            (Some(5), true, true, 6, true),
        ];
        for (last, changed, daemon, now, due) in rows {
            assert_eq!(
                healthy_line_due(last, changed, daemon, now),
                due,
                "{last:?} {changed} {daemon} {now}"
            );
        }
    }

    #[test]
    fn a_deferral_that_is_over_is_not_announced() {
        assert_eq!(deferred_line(&id("A"), 0, "backoff"), None);
        assert_eq!(deferred_line(&id("A"), 99, "backoff"), None);
        assert_eq!(
            deferred_line(&id("A"), 1_250, "backoff").unwrap(),
            "Worker A restart deferred 1.2s (backoff)"
        );
    }
}
