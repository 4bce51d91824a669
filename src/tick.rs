//! One check of every stream: observe (databases, PID files, /proc, logs) →
//! assess and decide (pure, in `supervise`) → act (remove stale PID files,
//! restart through the wrapper) → record (state file, monitor.log). A one-shot
//! run is one tick; the daemon runs ticks in a loop.
//!
//! Acting on a stream happens under its spawn lock, and liveness is checked
//! again once the lock is held: a monitor that waited for another one's
//! restart finds the fresh worker and does nothing.

use std::collections::{BTreeMap, HashSet};
use std::process::Child;
use std::time::{Duration, SystemTime};

use crate::layout::{Layout, StreamId};
use crate::process::identity::{self, judge, Liveness, Remembered};
use crate::process::pidfile::{self, PidFile};
use crate::process::spawn::{spawn_worker, WrapperCall};
use crate::process::{lock, procinfo};
use crate::prompt::{self, PromptFacts};
use crate::report::log::{Level, Logger};
use crate::state::{StateStore, StreamState};
use crate::store::{self, Initiative, StoreError};
use crate::supervise::assess::{assess, Verdict};
use crate::supervise::policy::{self, RestartDecision, RestartPolicy};
use crate::supervise::streams::{self, StreamView};

/// How a tick behaves.
#[derive(Debug, Clone)]
pub struct TickSettings {
    pub auto_restart: bool,
    pub policy: RestartPolicy,
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
    fn once(&mut self, logger: &Logger, level: Level, msg: String) {
        if self.said.insert(msg.clone()) {
            logger.log(level, crate::report::log::Kind::Report, &msg);
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
}

/// One stream as observed in this tick.
#[derive(Debug)]
struct Observed {
    view: StreamView,
    pid_file: PidFile,
    liveness: Liveness,
    verdict: Verdict,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
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
    let Some(initiative) = store::read_active_initiative(&layout.memory_db, settings.busy_timeout)? else {
        memory.once(logger, Level::Warning, "No active initiative found".to_string());
        return Ok(report);
    };
    let read = store::read_streams(&layout.tasks_db, &initiative.id, settings.busy_timeout)?;
    for w in read.warnings {
        memory.once(logger, Level::Warning, w);
    }
    let (views, warnings) = streams::resolve(read.streams);
    for w in warnings {
        memory.once(logger, Level::Warning, w);
    }
    let (state, warnings) = store.load();
    for w in warnings {
        logger.warning(&w);
    }

    let observed = observe(layout, &initiative, views, &state.streams);
    report.dead = observed.iter().filter(|o| matches!(o.verdict, Verdict::Dead { .. })).map(|o| o.view.id.clone()).collect();
    if report.dead.is_empty() {
        logger.success("All workers healthy");
    } else {
        let names: Vec<&str> = report.dead.iter().map(StreamId::as_str).collect();
        logger.warning(&format!("Found {} dead worker(s): {}", names.len(), names.join(", ")));
        if !settings.auto_restart && settings.hint_auto_restart {
            logger.warning("Auto-restart disabled. Use --auto-restart to enable.");
        }
    }

    let mut actor = Actor { layout, settings, logger, store, initiative: &initiative, template: None };
    for obs in &observed {
        let is_dead = matches!(obs.verdict, Verdict::Dead { .. });
        let stale_file = matches!(obs.liveness, Liveness::Stale { .. });
        if is_dead && settings.auto_restart {
            if let Some(child) = actor.restart(obs, &state.streams, memory) {
                report.spawned.push((obs.view.id.clone(), child.0));
                report.running.push(child.1);
            }
        } else if stale_file {
            actor.remove_stale(obs);
        }
    }

    let mut seen: BTreeMap<String, Remembered> = BTreeMap::new();
    for obs in &observed {
        if let (Liveness::Running { pid, start_ticks }, PidFile::Pid { fingerprint, .. }) = (&obs.liveness, &obs.pid_file) {
            report.running.push(Watched { stream: obs.view.id.clone(), pid: *pid, start_ticks: *start_ticks });
            let now = Remembered { pid: *pid, start_ticks: *start_ticks, pid_file_mtime: identity::secs(fingerprint.mtime) };
            if state.streams.get(obs.view.id.as_str()).and_then(|s| s.worker) != Some(now) {
                seen.insert(obs.view.id.to_string(), now);
            }
        }
    }
    if !seen.is_empty() {
        let result = store.update(|s| {
            for (id, worker) in seen {
                s.streams.entry(id).or_default().worker = Some(worker);
            }
        });
        if let Err(e) = result {
            logger.error(&format!("Cannot record worker identities: {e}"));
        }
    }
    report.initiative = Some(initiative);
    Ok(report)
}

fn observe(
    layout: &Layout,
    initiative: &Initiative,
    views: Vec<StreamView>,
    remembered: &BTreeMap<String, StreamState>,
) -> Vec<Observed> {
    let complete: HashSet<StreamId> = views.iter().filter(|v| v.progress.is_complete()).map(|v| v.id.clone()).collect();
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
            let seen = remembered.get(view.id.as_str()).and_then(|s| s.worker.as_ref());
            let liveness = judge(&pid_file, facts.as_ref(), our_uid, seen);
            let unfinished: Vec<StreamId> = view.dependencies.iter().filter(|d| !complete.contains(*d)).cloned().collect();
            // Only a stream that could be dead needs its log looked at.
            let log_size = if liveness.is_running() || view.progress.is_complete() || !unfinished.is_empty() {
                None
            } else {
                std::fs::metadata(layout.log_file(&view.id, &initiative.id)).ok().map(|m| m.len())
            };
            let verdict = assess(&view.progress, &liveness, unfinished, log_size);
            Observed { view, pid_file, liveness, verdict }
        })
        .collect()
}

struct Actor<'a> {
    layout: &'a Layout,
    settings: &'a TickSettings,
    logger: &'a Logger,
    store: &'a StateStore,
    initiative: &'a Initiative,
    template: Option<String>,
}

impl Actor<'_> {
    fn lock_stream(&self, id: &StreamId) -> Option<lock::FileLock> {
        let wait = self.settings.spawn_wait + Duration::from_secs(3);
        match lock::lock_within(&self.layout.stream_lock(id), wait) {
            Ok(Some(held)) => Some(held),
            Ok(None) => {
                self.logger.warning(&format!("Stream {id} is locked by another monitor; left to it this time"));
                None
            }
            Err(e) => {
                self.logger.error(&format!("Cannot lock stream {id}: {e}"));
                None
            }
        }
    }

    /// Re-reads the PID file under the stream lock.
    fn recheck(&self, obs: &Observed) -> (PidFile, Liveness) {
        let pid_file = pidfile::read(&self.layout.pid_file(&obs.view.id), procinfo::pid_max());
        let facts = match &pid_file {
            PidFile::Pid { pid, .. } => procinfo::inspect(*pid),
            _ => None,
        };
        let remembered = self.store.load().0.streams.get(obs.view.id.as_str()).and_then(|s| s.worker);
        let liveness = judge(&pid_file, facts.as_ref(), procinfo::current_uid(), remembered.as_ref());
        (pid_file, liveness)
    }

    fn remove_stale(&self, obs: &Observed) {
        let Some(_held) = self.lock_stream(&obs.view.id) else { return };
        let (pid_file, liveness) = self.recheck(obs);
        self.remove_if_stale(&obs.view.id, &pid_file, &liveness);
    }

    fn remove_if_stale(&self, id: &StreamId, pid_file: &PidFile, liveness: &Liveness) {
        let (Liveness::Stale { reason }, PidFile::Pid { fingerprint, .. } | PidFile::Invalid { fingerprint, .. }) =
            (liveness, pid_file)
        else {
            return;
        };
        let path = self.layout.pid_file(id);
        match pidfile::remove_if_unchanged(&path, fingerprint, procinfo::pid_max()) {
            Ok(true) => self.logger.warning(&format!("Removed stale PID file for {id}: {reason}")),
            Ok(false) => {}
            Err(e) => self.logger.error(&format!("Cannot remove stale PID file {}: {e}", path.display())),
        }
    }

    /// Restarts a dead stream if policy allows; returns the spawned wrapper.
    fn restart(
        &mut self,
        obs: &Observed,
        states: &BTreeMap<String, StreamState>,
        memory: &mut TickMemory,
    ) -> Option<(Child, Watched)> {
        let id = &obs.view.id;
        let policy = &self.settings.policy;
        let completed = obs.view.progress.completed;
        let max = policy.max_restarts;
        let before = states.get(id.as_str()).cloned().unwrap_or_default();
        match policy::decide_restart(&before, completed, policy, now_ms()) {
            RestartDecision::Exhausted if before.gave_up => {
                self.remove_stale(obs);
                memory.once(self.logger, Level::Warning, format!("Worker {id} has reached max restart limit ({max})"));
                return None;
            }
            RestartDecision::BackingOff { until_ms } => {
                self.remove_stale(obs);
                let wait = until_ms.saturating_sub(now_ms()).div_ceil(1000);
                self.logger.info(&format!("Worker {id} restart is backing off ({wait}s left)"));
                return None;
            }
            _ => {}
        }

        let _held = self.lock_stream(id)?;
        let (pid_file, liveness) = self.recheck(obs);
        if let Liveness::Running { pid, .. } = liveness {
            self.logger.info(&format!("Worker {id} is running again (PID: {pid}), started meanwhile by another monitor"));
            return None;
        }
        self.remove_if_stale(id, &pid_file, &liveness);
        let Verdict::Dead { reason } = &obs.verdict else { return None };

        // Decide again on the state as it is now, under the lock: another
        // monitor may have spent the budget meanwhile.
        let now = now_ms();
        let decision = self.store.update(|s| {
            let st = s.streams.entry(id.to_string()).or_default();
            let decision = policy::decide_restart(st, completed, policy, now);
            match decision {
                RestartDecision::Restart { .. } => {
                    policy::charge_attempt(st, completed, reason, now);
                }
                RestartDecision::Exhausted => st.gave_up = true,
                RestartDecision::BackingOff { .. } => {}
            }
            decision
        });
        let attempt = match decision {
            Err(e) => {
                // Without a recorded budget a restart could repeat forever.
                self.logger.error(&format!("Not restarting worker {id}: cannot record the restart: {e}"));
                return None;
            }
            Ok((RestartDecision::Restart { attempt }, _, _)) => attempt,
            Ok((RestartDecision::Exhausted, _, _)) => {
                self.logger.action(Level::Warning, &format!("Worker {id} has reached max restart limit ({max})"));
                memory.said.insert(format!("Worker {id} has reached max restart limit ({max})"));
                return None;
            }
            Ok((RestartDecision::BackingOff { .. }, _, _)) => return None,
        };

        self.logger.action(Level::Info, &format!("Restarting worker {id} (attempt {attempt}/{max})"));
        let template = self.template.get_or_insert_with(|| prompt::load_template(&self.layout.prompt_override()));
        let work_dir = self.layout.work_dir(id);
        let deps: Vec<String> = obs.view.dependencies.iter().map(|d| d.to_string()).collect();
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
        let call = WrapperCall {
            wrapper: self.layout.wrapper(),
            stream: id.to_string(),
            pid_file: self.layout.pid_file(id),
            log_dir: self.layout.logs_dir(),
            work_dir,
            initiative_id: self.initiative.id.clone(),
            prompt,
        };
        if let Err(e) = std::fs::create_dir_all(self.layout.pids_dir()) {
            self.logger.error(&format!("Cannot create {}: {e}", self.layout.pids_dir().display()));
        }
        match spawn_worker(&call, self.settings.spawn_wait) {
            Ok(started) => {
                self.logger.action(Level::Success, &format!("Worker {id} restarted (PID: {})", started.pid));
                let mtime = std::fs::metadata(&call.pid_file)
                    .and_then(|m| m.modified())
                    .map(identity::secs)
                    .unwrap_or_else(|_| identity::secs(SystemTime::now()));
                let worker = Remembered { pid: started.pid, start_ticks: started.start_ticks, pid_file_mtime: mtime };
                let recorded = self.store.update(|s| {
                    let st = s.streams.entry(id.to_string()).or_default();
                    policy::record_success(st);
                    st.worker = Some(worker);
                });
                if let Err(e) = recorded {
                    self.logger.error(&format!("Cannot record the restart of {id}: {e}"));
                }
                let watched = Watched { stream: id.clone(), pid: started.pid, start_ticks: started.start_ticks };
                Some((started.child, watched))
            }
            Err(e) => {
                let message = e.to_string();
                let backoff = self.store.update(|s| {
                    let st = s.streams.entry(id.to_string()).or_default();
                    policy::record_failure(st, &message, policy, now_ms())
                });
                let next = match backoff {
                    Ok((delay, _, _)) => format!("next attempt in {}s at the earliest", delay.as_secs().max(1)),
                    Err(e) => format!("and the failure could not be recorded: {e}"),
                };
                self.logger.action(Level::Error, &format!("Failed to restart worker {id}: {message}; {next}"));
                None
            }
        }
    }
}
