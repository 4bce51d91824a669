//! One check of every stream: observe (databases, PID files, /proc, logs) →
//! assess and decide (pure, in `supervise`) → act (remove stale PID files,
//! restart through the wrapper) → record (state file, monitor.log, events).
//! A one-shot run is one tick; the daemon runs ticks in a loop.
//!
//! A restart happens under the stream's spawn lock, and liveness and the
//! budget are checked again once the lock is held: a monitor that waited for
//! another one's restart finds the fresh worker and does nothing.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::process::Child;
use std::time::Duration;

use crate::layout::{Layout, StreamId};
use crate::logtail;
use crate::process::identity::{self, judge, Liveness, Remembered};
use crate::process::pidfile::{self, PidFile};
use crate::process::spawn::{spawn_worker, WrapperCall};
use crate::process::{lock, procinfo};
use crate::prompt::{self, PromptFacts};
use crate::report::events::{EventLog, EventRecord};
use crate::report::log::{Kind, Level, Logger};
use crate::report::now_ms;
use crate::state::{State, StateStore};
use crate::store::{self, Initiative, StoreError};
use crate::supervise::assess::{assess, Verdict};
use crate::supervise::lifecycle::{self, Lifecycle};
use crate::supervise::plan::{
    self, Begin, Change, Observation, Plan, PlanSettings, RestartRequest,
};
use crate::supervise::streams::{self, StreamView};

/// How a tick behaves.
#[derive(Debug, Clone)]
pub struct TickSettings {
    pub plan: PlanSettings,
    pub busy_timeout: Duration,
    /// How long a restart waits for the PID file to name a live worker.
    pub spawn_wait: Duration,
    /// Say "Auto-restart disabled ..." when dead workers are found.
    pub hint_auto_restart: bool,
}

/// What outlives one tick in the daemon: messages already said, so a data
/// problem is warned about once rather than every interval.
#[derive(Debug, Default)]
pub struct TickMemory {
    said: HashSet<String>,
}

impl TickMemory {
    fn once(&mut self, logger: &Logger, level: Level, kind: Kind, msg: String) {
        if self.said.insert(msg.clone()) {
            logger.log(level, kind, &msg);
        }
    }
}

/// A worker seen running at the end of a tick (the daemon watches it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub stream: StreamId,
    pub pid: i32,
    pub start_ticks: u64,
}

#[derive(Debug, Default)]
pub struct TickReport {
    pub initiative: Option<Initiative>,
    pub dead: Vec<StreamId>,
    pub running: Vec<Watched>,
    /// Wrappers this tick spawned (the daemon reaps them).
    pub spawned: Vec<(StreamId, Child)>,
    /// When a deferred restart becomes due (the daemon wakes then).
    pub next_due_ms: Option<u64>,
}

/// One stream as observed in this tick.
#[derive(Debug)]
pub struct Observed {
    pub view: StreamView,
    pub pid_file: PidFile,
    pub liveness: Liveness,
    pub verdict: Verdict,
    pub exit_code: Option<i32>,
}

/// Everything one look at the project saw; nothing is judged beyond the
/// per-stream verdict and nothing is written.
#[derive(Debug)]
pub struct Snapshot {
    pub initiative: Initiative,
    pub streams: Vec<Observed>,
    /// Data problems (bad metadata, unsafe ids, unknown dependencies).
    pub warnings: Vec<String>,
}

/// Reads the databases and every stream's PID file, process and log.
/// `Ok(None)` when there is no active initiative.
pub fn take_snapshot(
    layout: &Layout,
    busy_timeout: Duration,
    known: &State,
) -> Result<Option<Snapshot>, StoreError> {
    let Some(initiative) = store::read_active_initiative(&layout.memory_db, busy_timeout)? else {
        return Ok(None);
    };
    let read = store::read_streams(&layout.tasks_db, &initiative.id, busy_timeout)?;
    let mut warnings = read.warnings;
    let (views, more) = streams::resolve(read.streams);
    warnings.extend(more);
    let streams = observe(layout, &initiative, views, known);
    Ok(Some(Snapshot {
        initiative,
        streams,
        warnings,
    }))
}

/// Random spread for backoff delays, without a random-number crate: the
/// standard library seeds every `RandomState` afresh.
fn jitter() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs one check. `Err` means the check could not run (a database problem);
/// nothing was judged then.
pub fn run_tick(
    layout: &Layout,
    settings: &TickSettings,
    logger: &Logger,
    store: &StateStore,
    memory: &mut TickMemory,
) -> Result<TickReport, StoreError> {
    let mut report = TickReport::default();
    let (known, warnings) = store.load();
    for w in warnings {
        logger.warning(&w);
    }
    let Some(snapshot) = take_snapshot(layout, settings.busy_timeout, &known)? else {
        memory.once(
            logger,
            Level::Warning,
            Kind::Report,
            "No active initiative found".to_string(),
        );
        return Ok(report);
    };
    for w in snapshot.warnings {
        memory.once(logger, Level::Warning, Kind::Report, w);
    }
    let Snapshot {
        initiative,
        streams: observed,
        ..
    } = snapshot;
    report.dead = observed
        .iter()
        .filter(|o| matches!(o.verdict, Verdict::Dead { .. }))
        .map(|o| o.view.id.clone())
        .collect();
    if report.dead.is_empty() {
        logger.success("All workers healthy");
    } else {
        let names: Vec<&str> = report.dead.iter().map(StreamId::as_str).collect();
        logger.warning(&format!(
            "Found {} dead worker(s): {}",
            names.len(),
            names.join(", ")
        ));
        if !settings.plan.auto_restart && settings.hint_auto_restart {
            logger.warning("Auto-restart disabled. Use --auto-restart to enable.");
        }
    }

    let observations: Vec<Observation> = observed.iter().map(observation).collect();
    let now = now_ms();
    let recorder = Recorder {
        logger,
        events: EventLog::new(&layout.logs_dir().join("events.jsonl")),
    };
    let (plan, state) =
        match store.update(|s| plan::plan_tick(s, &observations, &settings.plan, now)) {
            Ok((plan, state, _)) => (plan, state),
            Err(e) => {
                // Without a recorded budget a restart could repeat forever: only
                // clean up stale PID files this time.
                logger.error(&format!(
                    "Cannot record this check in the state file: {e}; no restart this time"
                ));
                let mut fallback = known.clone();
                let mut plan = plan::plan_tick(&mut fallback, &observations, &settings.plan, now);
                plan.restarts.clear();
                (plan, fallback)
            }
        };
    recorder.changes(&plan);
    if let Some((failed, total, until)) = plan.breaker_opened {
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
    let max = settings.plan.policy.max_restarts;
    for obs in observed
        .iter()
        .filter(|o| matches!(o.verdict, Verdict::Dead { .. }))
    {
        let id = &obs.view.id;
        match &state.streams.get(id.as_str()).map(|s| &s.lifecycle) {
            Some(Lifecycle::GaveUp { .. }) if settings.plan.auto_restart => {
                let kind = if plan.gave_up.contains(id) {
                    Kind::Action
                } else {
                    Kind::Report
                };
                memory.once(
                    logger,
                    Level::Warning,
                    kind,
                    format!("Worker {id} has reached max restart limit ({max})"),
                );
            }
            Some(Lifecycle::Backoff { until_ms, reason }) if !plan.restarts.contains(id) => {
                let left = until_ms.saturating_sub(now).div_ceil(1000);
                memory.once(
                    logger,
                    Level::Info,
                    Kind::Report,
                    format!("Worker {id} restart deferred {left}s ({reason})"),
                );
            }
            Some(held @ (Lifecycle::Paused { .. } | Lifecycle::Stopped { .. })) => {
                memory.once(
                    logger,
                    Level::Info,
                    Kind::Report,
                    format!("Worker {id} is {}; not restarting", held.describe()),
                );
            }
            _ => {}
        }
    }
    report.next_due_ms = plan.next_due_ms;

    let mut actor = Actor {
        layout,
        settings,
        logger,
        store,
        recorder: &recorder,
        initiative: &initiative,
        template: None,
    };
    for obs in &observed {
        if plan.restarts.contains(&obs.view.id) {
            if let Some((child, watched)) = actor.restart(obs) {
                report.spawned.push((obs.view.id.clone(), child));
                report.running.push(watched);
            }
        } else if matches!(obs.liveness, Liveness::Stale { .. }) {
            actor.remove_stale(obs);
        }
    }
    for obs in &observed {
        if let Liveness::Running { pid, start_ticks } = obs.liveness {
            report.running.push(Watched {
                stream: obs.view.id.clone(),
                pid,
                start_ticks,
            });
        }
    }
    report.initiative = Some(initiative);
    Ok(report)
}

pub fn observation(o: &Observed) -> Observation {
    let worker = match (&o.liveness, &o.pid_file) {
        (Liveness::Running { pid, start_ticks }, PidFile::Pid { fingerprint, .. }) => {
            Some(Remembered {
                pid: *pid,
                start_ticks: *start_ticks,
                pid_file_mtime: identity::secs(fingerprint.mtime),
            })
        }
        _ => None,
    };
    Observation {
        id: o.view.id.clone(),
        verdict: o.verdict.clone(),
        completed_tasks: o.view.progress.completed,
        exit_code: o.exit_code,
        worker,
    }
}

fn observe(
    layout: &Layout,
    initiative: &Initiative,
    views: Vec<StreamView>,
    known: &State,
) -> Vec<Observed> {
    let complete: HashSet<StreamId> = views
        .iter()
        .filter(|v| v.progress.is_complete())
        .map(|v| v.id.clone())
        .collect();
    let our_uid = procinfo::current_uid();
    let pid_max = procinfo::pid_max();
    views
        .into_iter()
        .map(|view| {
            let pid_file = pidfile::read(&layout.pid_file(&view.id), pid_max);
            let facts = match &pid_file {
                PidFile::Pid { pid, .. } => procinfo::inspect(*pid),
                _ => None,
            };
            let seen = known
                .streams
                .get(view.id.as_str())
                .and_then(|s| s.worker.as_ref());
            let liveness = judge(&pid_file, facts.as_ref(), our_uid, seen);
            let unfinished: Vec<StreamId> = view
                .dependencies
                .iter()
                .filter(|d| !complete.contains(*d))
                .cloned()
                .collect();
            // Only a stream that could be dead needs its log looked at.
            let log_path = layout.log_file(&view.id, &initiative.id);
            let log_size =
                if liveness.is_running() || view.progress.is_complete() || !unfinished.is_empty() {
                    None
                } else {
                    std::fs::metadata(&log_path).ok().map(|m| m.len())
                };
            let verdict = assess(&view.progress, &liveness, unfinished, log_size);
            let exit_code = match verdict {
                Verdict::Dead { .. } => {
                    logtail::tail(&log_path, 4096).and_then(|t| logtail::wrapper_exit_code(&t))
                }
                _ => None,
            };
            Observed {
                view,
                pid_file,
                liveness,
                verdict,
                exit_code,
            }
        })
        .collect()
}

/// Writes state changes and actions to monitor.log and the event log.
pub struct Recorder<'a> {
    pub logger: &'a Logger,
    pub events: EventLog,
}

impl Recorder<'_> {
    pub fn event(&self, record: EventRecord) {
        if let Err(e) = self.events.append(&record) {
            self.logger.write_file(
                Level::Error,
                &format!("Cannot write {}: {e}", self.events.path().display()),
            );
        }
    }

    pub fn changes(&self, plan: &Plan) {
        for change in &plan.changes {
            self.change(change);
        }
        for refused in &plan.refused {
            self.logger.error(&format!(
                "State machine refused a transition ({refused}); state left as it was"
            ));
        }
    }

    pub fn change(&self, c: &Change) {
        let why = reason_of(&c.to);
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
        let pid = match &c.to {
            Lifecycle::Running { pid, .. } | Lifecycle::Starting { pid, .. } => Some(*pid),
            _ => None,
        };
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

fn reason_of(state: &Lifecycle) -> Option<String> {
    match state {
        Lifecycle::Unhealthy { reason, .. }
        | Lifecycle::Backoff { reason, .. }
        | Lifecycle::GaveUp { reason } => Some(reason.clone()),
        Lifecycle::Paused { by } | Lifecycle::Stopped { by } => Some(format!("by {by}")),
        Lifecycle::WaitingOnDeps { waiting } => Some(format!("waiting on {}", waiting.join(", "))),
        _ => None,
    }
}

struct Actor<'a> {
    layout: &'a Layout,
    settings: &'a TickSettings,
    logger: &'a Logger,
    store: &'a StateStore,
    recorder: &'a Recorder<'a>,
    initiative: &'a Initiative,
    template: Option<String>,
}

impl Actor<'_> {
    fn lock_stream(&self, id: &StreamId) -> Option<lock::FileLock> {
        let wait = self.settings.spawn_wait + Duration::from_secs(3);
        match lock::lock_within(&self.layout.stream_lock(id), wait) {
            Ok(Some(held)) => Some(held),
            Ok(None) => {
                self.logger.warning(&format!(
                    "Stream {id} is locked by another monitor; left to it this time"
                ));
                None
            }
            Err(e) => {
                self.logger.error(&format!("Cannot lock stream {id}: {e}"));
                None
            }
        }
    }

    fn remove_stale(&self, obs: &Observed) {
        let Some(_held) = self.lock_stream(&obs.view.id) else {
            return;
        };
        let (pid_file, liveness) = recheck(self.layout, self.store, &obs.view.id);
        remove_if_stale(
            self.layout,
            self.logger,
            &self.recorder.events,
            &obs.view.id,
            &pid_file,
            &liveness,
        );
    }

    /// Restarts a dead stream if policy still allows once its lock is held.
    fn restart(&mut self, obs: &Observed) -> Option<(Child, Watched)> {
        let id = &obs.view.id;
        let _held = self.lock_stream(id)?;
        let (pid_file, liveness) = recheck(self.layout, self.store, id);
        if let Liveness::Running { pid, .. } = liveness {
            self.logger.info(&format!(
                "Worker {id} is running again (PID: {pid}), started meanwhile by another monitor"
            ));
            return None;
        }
        remove_if_stale(
            self.layout,
            self.logger,
            &self.recorder.events,
            id,
            &pid_file,
            &liveness,
        );
        let Verdict::Dead { reason } = &obs.verdict else {
            return None;
        };
        let max = self.settings.plan.policy.max_restarts;

        let request = RestartRequest {
            id,
            completed_tasks: obs.view.progress.completed,
            exit_code: obs.exit_code,
            reason,
        };
        let mut changes = Plan::default();
        let now = now_ms();
        let begun = self.store.update(|s| {
            plan::begin_restart(
                s,
                &request,
                &self.settings.plan,
                now,
                jitter(),
                &mut changes,
            )
        });
        self.recorder.changes(&changes);
        let attempt = match begun {
            Err(e) => {
                self.logger.error(&format!(
                    "Not restarting worker {id}: cannot record the restart: {e}"
                ));
                return None;
            }
            Ok((Begin::Go { attempt }, _, _)) => attempt,
            Ok((Begin::GaveUp, _, _)) => {
                self.logger.action(
                    Level::Warning,
                    &format!("Worker {id} has reached max restart limit ({max})"),
                );
                return None;
            }
            Ok((Begin::Skip, _, _)) => return None,
        };

        self.logger.action(
            Level::Info,
            &format!("Restarting worker {id} (attempt {attempt}/{max})"),
        );
        self.recorder.event(EventRecord {
            reason: Some(reason.clone()),
            attempt: Some(attempt),
            exit: obs.exit_code.map(|c| format!("exit code {c}")),
            ..EventRecord::new("restart", Some(id.as_str()))
        });
        self.launch(obs)
    }

    /// Spawns the worker of a stream whose restart is charged and recorded
    /// as begun, and records how it went.
    fn launch(&mut self, obs: &Observed) -> Option<(Child, Watched)> {
        let id = &obs.view.id;
        let call = self.wrapper_call(obs);
        let result = spawn_worker(&call, self.settings.spawn_wait);
        let outcome = match &result {
            Ok(started) => {
                let mtime = std::fs::metadata(&call.pid_file)
                    .and_then(|m| m.modified())
                    .map(identity::secs)
                    .unwrap_or_else(|_| now_ms() / 1000);
                Ok(Remembered {
                    pid: started.pid,
                    start_ticks: started.start_ticks,
                    pid_file_mtime: mtime,
                })
            }
            Err(e) => Err(e.to_string()),
        };
        let mut changes = Plan::default();
        let finished = self
            .store
            .update(|s| plan::finish_restart(s, id, outcome.clone(), now_ms(), &mut changes));
        if let Err(e) = &finished {
            self.logger
                .error(&format!("Cannot record the restart of {id}: {e}"));
        }
        match result {
            Ok(started) => {
                self.logger.action(
                    Level::Success,
                    &format!("Worker {id} restarted (PID: {})", started.pid),
                );
                self.recorder.changes(&changes);
                let watched = Watched {
                    stream: id.clone(),
                    pid: started.pid,
                    start_ticks: started.start_ticks,
                };
                Some((started.child, watched))
            }
            Err(e) => {
                let next = finished
                    .ok()
                    .and_then(|(_, state, _)| {
                        state
                            .streams
                            .get(id.as_str())
                            .and_then(|s| s.next_attempt_ms)
                    })
                    .filter(|t| *t > now_ms())
                    .map(|t| {
                        format!(
                            "; next attempt in {}s at the earliest",
                            t.saturating_sub(now_ms()).div_ceil(1000)
                        )
                    })
                    .unwrap_or_default();
                self.logger.action(
                    Level::Error,
                    &format!("Failed to restart worker {id}: {e}{next}"),
                );
                self.recorder.changes(&changes);
                None
            }
        }
    }

    fn wrapper_call(&mut self, obs: &Observed) -> WrapperCall {
        let id = &obs.view.id;
        let template = self
            .template
            .get_or_insert_with(|| prompt::load_template(&self.layout.prompt_override()));
        let work_dir = self.layout.work_dir(id);
        let deps: Vec<String> = obs
            .view
            .dependencies
            .iter()
            .map(|d| d.to_string())
            .collect();
        let prompt = prompt::render(
            template,
            &PromptFacts {
                stream_id: id.as_str(),
                stream_name: &obs.view.name,
                dependencies: &deps,
                initiative_id: &self.initiative.id,
                work_dir: &work_dir,
            },
        );
        if let Err(e) = std::fs::create_dir_all(self.layout.pids_dir()) {
            self.logger.error(&format!(
                "Cannot create {}: {e}",
                self.layout.pids_dir().display()
            ));
        }
        WrapperCall {
            wrapper: self.layout.wrapper(),
            stream: id.to_string(),
            pid_file: self.layout.pid_file(id),
            log_dir: self.layout.logs_dir(),
            work_dir,
            initiative_id: self.initiative.id.clone(),
            prompt,
        }
    }
}

/// Reads a stream's PID file again and judges it (used under the stream lock).
pub fn recheck(layout: &Layout, store: &StateStore, id: &StreamId) -> (PidFile, Liveness) {
    let pid_file = pidfile::read(&layout.pid_file(id), procinfo::pid_max());
    let facts = match &pid_file {
        PidFile::Pid { pid, .. } => procinfo::inspect(*pid),
        _ => None,
    };
    let remembered = store
        .load()
        .0
        .streams
        .get(id.as_str())
        .and_then(|s| s.worker);
    let liveness = judge(
        &pid_file,
        facts.as_ref(),
        procinfo::current_uid(),
        remembered.as_ref(),
    );
    (pid_file, liveness)
}

/// Removes a PID file judged stale, if it is still the file that was judged.
pub fn remove_if_stale(
    layout: &Layout,
    logger: &Logger,
    events: &EventLog,
    id: &StreamId,
    pid_file: &PidFile,
    liveness: &Liveness,
) {
    let (
        Liveness::Stale { reason },
        PidFile::Pid { fingerprint, .. } | PidFile::Invalid { fingerprint, .. },
    ) = (liveness, pid_file)
    else {
        return;
    };
    let path = layout.pid_file(id);
    match pidfile::remove_if_unchanged(&path, fingerprint, procinfo::pid_max()) {
        Ok(true) => {
            logger.warning(&format!("Removed stale PID file for {id}: {reason}"));
            let _ = events.append(&EventRecord {
                reason: Some(reason.clone()),
                ..EventRecord::new("stale_pid_removed", Some(id.as_str()))
            });
        }
        Ok(false) => {}
        Err(e) => logger.error(&format!(
            "Cannot remove stale PID file {}: {e}",
            path.display()
        )),
    }
}

/// Applies one operator event to a stream's lifecycle under the state lock.
pub fn apply_operator_event(
    store: &StateStore,
    id: &StreamId,
    event: lifecycle::Event,
) -> Result<(Lifecycle, Lifecycle), String> {
    let now = now_ms();
    let (result, _, _) = store
        .update(|s| {
            let st = s.streams.entry(id.to_string()).or_default();
            let from = st.lifecycle.clone();
            let to = lifecycle::transition(&from, &event, now).map_err(|e| e.to_string())?;
            st.lifecycle = to.clone();
            Ok((from, to))
        })
        .map_err(|e| e.to_string())?;
    result
}

/// An operator's `restart STREAM`: under the stream's lock, stop the worker
/// gracefully if it runs, clear the restart budget, and start it afresh.
/// Returns the new worker's PID.
pub fn operator_restart(
    layout: &Layout,
    settings: &TickSettings,
    logger: &Logger,
    store: &StateStore,
    snapshot: &Snapshot,
    id: &StreamId,
    grace: Duration,
) -> Result<i32, String> {
    let obs = snapshot
        .streams
        .iter()
        .find(|o| &o.view.id == id)
        .ok_or_else(|| format!("unknown stream {id}"))?;
    let recorder = Recorder {
        logger,
        events: EventLog::new(&layout.logs_dir().join("events.jsonl")),
    };
    let mut actor = Actor {
        layout,
        settings,
        logger,
        store,
        recorder: &recorder,
        initiative: &snapshot.initiative,
        template: None,
    };
    let _held = actor
        .lock_stream(id)
        .ok_or_else(|| format!("stream {id} is locked by another monitor; try again"))?;
    let (pid_file, liveness) = recheck(layout, store, id);
    if let Liveness::Running { pid, start_ticks } = liveness {
        stop_running(logger, &recorder, id, pid, start_ticks, grace)?;
    }
    remove_if_stale(layout, logger, &recorder.events, id, &pid_file, &liveness);
    let now = now_ms();
    let mut changes = Plan::default();
    let by = crate::report::events::operator();
    store
        .update(|s| {
            let st = s.streams.entry(id.to_string()).or_default();
            st.restarts = 0;
            st.streak = 0;
            st.next_attempt_ms = None;
            st.restarts_total += 1;
            st.last_restart_ms = Some(now);
            st.last_restart_reason = Some(format!("operator restart by {by}"));
            let from = st.lifecycle.clone();
            match lifecycle::transition(&from, &lifecycle::Event::OperatorRestart, now) {
                Ok(to) => {
                    changes.changes.push(Change {
                        stream: id.clone(),
                        from,
                        to: to.clone(),
                        event: "operator_restart",
                    });
                    st.lifecycle = to;
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        })
        .map_err(|e| e.to_string())?
        .0?;
    recorder.changes(&changes);
    logger.action(
        Level::Info,
        &format!("Restarting worker {id} (operator restart by {by})"),
    );
    recorder.event(EventRecord {
        by: Some(by),
        ..EventRecord::new("operator_restart", Some(id.as_str()))
    });
    let (_, watched) = actor
        .launch(obs)
        .ok_or_else(|| format!("worker {id} did not start; see monitor.log"))?;
    Ok(watched.pid)
}

/// Stops a running worker gracefully, logging every signal.
pub fn stop_running(
    logger: &Logger,
    recorder: &Recorder<'_>,
    id: &StreamId,
    pid: i32,
    start_ticks: u64,
    grace: Duration,
) -> Result<(), String> {
    use crate::process::stop::{stop_worker, StopOutcome};
    let mut notes = Vec::new();
    let outcome = stop_worker(pid, Some(start_ticks), grace, &mut |n| notes.push(n))
        .map_err(|e| e.to_string())?;
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
        reason: Some(text.clone()),
        ..EventRecord::new("stop", Some(id.as_str()))
    });
    match outcome {
        StopOutcome::Survived { .. } => Err(text),
        _ => Ok(()),
    }
}
