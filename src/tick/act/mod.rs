//! The act step: carries out a plan's typed decisions — restart (charged
//! under the stream's spawn lock, liveness checked again once the lock is
//! held, a stuck worker stopped first for a soft reset), stop a stuck worker
//! of a stream that gave up, start the daemon's own components, remove stale
//! PID files. A monitor that waited for another one's restart finds the
//! fresh worker and does nothing. Processes are reached through the small
//! [`Processes`] trait, so the decisions here are unit-tested without them.

mod launch;
mod pool;
mod processes;
mod stop;
mod tc;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod tests_support;

use crate::process::detach::Child;
use std::path::PathBuf;
use std::time::Duration;

use crate::clock::now_ms;
use crate::component::ComponentKind;
use crate::layout::{Layout, StreamId};
use crate::logtail;
use crate::process::identity::Liveness;
use crate::process::lock;
use crate::process::procinfo::ProcFacts;
use crate::process::proof::Project;
use crate::process::spawn::SpawnError;
use crate::process::stop::StopRefused;
use crate::report::events::EventRecord;
use crate::report::log::Level;
use crate::selfheal;
use crate::state::{StateError, StateStore};
use crate::store::Initiative;
use crate::supervise::assess::Verdict;
use crate::supervise::lifecycle::IllegalTransition;
use crate::supervise::model::GiveUp;
use crate::supervise::plan::{self, Begin, Changes, Plan, RestartOrder, RestartRequest};

use super::observe::{self, Observed, Snapshot};
use super::{Recorder, TickSettings, Watched};

pub use processes::{Processes, RealProcesses, StopScope, WorkerOf};
pub use stop::{remove_if_stale, stop_owned_components, stop_running};

/// Why an action could not be carried out, naming the stream and the step.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("stream {stream} is locked by another monitor; try again")]
    Locked { stream: StreamId },
    #[error("cannot lock stream {stream}: {source}")]
    Lock {
        stream: StreamId,
        source: std::io::Error,
    },
    #[error("cannot record {action} of {stream}: {source}")]
    State {
        stream: StreamId,
        action: &'static str,
        source: StateError,
    },
    #[error("cannot {action} {stream}: {source}")]
    Illegal {
        stream: StreamId,
        action: &'static str,
        source: IllegalTransition,
    },
    #[error("cannot start {stream}: {source}")]
    Spawn {
        stream: StreamId,
        source: SpawnError,
    },
    #[error("cannot start {stream}: {reason}")]
    Component { stream: StreamId, reason: String },
    #[error("cannot stop {stream}: {source}")]
    StopRefused {
        stream: StreamId,
        source: StopRefused,
    },
    #[error("worker {stream}: processes {pids:?} survived SIGKILL")]
    Survived { stream: StreamId, pids: Vec<i32> },
    #[error("unknown stream {stream}")]
    Unknown { stream: StreamId },
    #[error("cannot start {stream}: {}", failed_start(.status, *.after, .last_words.as_deref()))]
    FailedStart {
        stream: StreamId,
        /// How it ended ("exit code 127").
        status: String,
        code: Option<i32>,
        after: Duration,
        last_words: Option<String>,
    },
}

fn failed_start(status: &str, after: Duration, last_words: Option<&str>) -> String {
    let said = last_words.map(|w| format!(": {w}")).unwrap_or_default();
    format!(
        "the worker ended ({status}) {:.1}s after it started{said}",
        after.as_secs_f64()
    )
}

impl ActError {
    /// The cause alone, for lines that already name the stream and the step.
    pub fn detail(&self) -> String {
        match self {
            ActError::Spawn { source, .. } => source.to_string(),
            ActError::Component { reason, .. } => reason.clone(),
            ActError::FailedStart {
                status,
                after,
                last_words,
                ..
            } => failed_start(status, *after, last_words.as_deref()),
            other => other.to_string(),
        }
    }
}

/// What a tick's actions left behind.
#[derive(Debug, Default)]
pub struct Acted {
    /// Wrappers and components spawned (the daemon reaps them).
    pub spawned: Vec<(StreamId, Child)>,
    /// Every worker known running at the end of the tick (the daemon watches).
    pub running: Vec<Watched>,
    /// Streams that gave up while their restart was being charged.
    pub gave_up: Vec<(StreamId, GiveUp)>,
}

/// A component just started.
#[derive(Debug)]
pub struct Launched {
    pub pid: i32,
    pub start_ticks: u64,
    pub child: Option<Child>,
    /// Watch its PID for death (not for containers: their PID is Docker's).
    pub watch: bool,
    /// tc: the Claude session started, as it is shown ("session <job>");
    /// such a worker has no PID of ours.
    pub session: Option<String>,
}

impl Launched {
    fn watched(&self, stream: &StreamId) -> Option<Watched> {
        self.watch.then(|| Watched {
            stream: stream.clone(),
            pid: self.pid,
            start_ticks: self.start_ticks,
        })
    }
}

/// Carries out actions for one project.
pub struct Actor<'a> {
    pub(super) layout: &'a Layout,
    pub(super) settings: &'a TickSettings,
    pub(super) store: &'a StateStore,
    pub(super) recorder: &'a Recorder<'a>,
    pub(super) initiative: &'a Initiative,
    pub(super) processes: &'a dyn Processes,
    template: std::sync::OnceLock<String>,
    /// Whose workers this actor proves (this project).
    project: Project,
    state_dir: PathBuf,
    /// A tc project: its streams' tc facts and workers.
    pub(super) tc: Option<&'a super::TcSnapshot>,
    /// Streams whose start failed for good while this actor launched them
    /// (from the restart threads).
    pub gave_up: std::sync::Mutex<Vec<(StreamId, GiveUp)>>,
    /// Spawned wrappers go here at once when set (the daemon's), else into
    /// the tick's [`Acted`].
    pub handoff: Option<super::Handoff>,
    /// Spawns under way at once (each waits for its wrapper's PID file).
    pub(super) spawning: pool::Permits,
}

impl Actor<'_> {
    /// Records a wrapper just spawned: handed to the daemon at once, or kept
    /// for the end of the tick.
    fn spawned(&self, id: &StreamId, child: Child, acted: &mut Acted) {
        match &self.handoff {
            Some(handoff) => handoff
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((id.clone(), child)),
            None => acted.spawned.push((id.clone(), child)),
        }
    }
}

impl<'a> Actor<'a> {
    pub fn new(
        layout: &'a Layout,
        settings: &'a TickSettings,
        store: &'a StateStore,
        recorder: &'a Recorder<'a>,
        initiative: &'a Initiative,
    ) -> Actor<'a> {
        Self::with_processes(
            layout,
            settings,
            store,
            recorder,
            initiative,
            &RealProcesses,
        )
    }

    pub fn with_processes(
        layout: &'a Layout,
        settings: &'a TickSettings,
        store: &'a StateStore,
        recorder: &'a Recorder<'a>,
        initiative: &'a Initiative,
        processes: &'a dyn Processes,
    ) -> Actor<'a> {
        Actor {
            layout,
            settings,
            store,
            recorder,
            initiative,
            processes,
            template: std::sync::OnceLock::new(),
            project: Project::of(layout),
            state_dir: layout.state_dir(),
            tc: None,
            gave_up: std::sync::Mutex::new(Vec::new()),
            handoff: None,
            spawning: pool::Permits::new(pool::SPAWNS_AT_ONCE),
        }
    }

    /// Whose worker a process of stream `id` must be; `None` for the
    /// daemon's own components (judged by their PID file and start time).
    pub fn worker_of<'s>(&'s self, id: &'s StreamId) -> Option<WorkerOf<'s>> {
        let component = id.as_str().starts_with(crate::component::COMPONENT_PREFIX);
        (!component).then_some(WorkerOf {
            project: &self.project,
            state_dir: &self.state_dir,
            stream: id.as_str(),
        })
    }

    /// Acts on a tc project's streams the tc way (worktrees, launchers).
    pub fn with_tc(mut self, tc: Option<&'a super::TcSnapshot>) -> Actor<'a> {
        self.tc = tc;
        self
    }

    /// Holds the stream's spawn lock, waiting at most as long as another
    /// monitor's spawn can take.
    pub fn lock_stream(&self, id: &StreamId) -> Result<lock::FileLock, ActError> {
        let wait = self.settings.spawn_wait + Duration::from_secs(3);
        match lock::lock_within(&self.layout.stream_lock(id), wait) {
            Ok(Some(held)) => Ok(held),
            Ok(None) => Err(ActError::Locked { stream: id.clone() }),
            Err(source) => Err(ActError::Lock {
                stream: id.clone(),
                source,
            }),
        }
    }

    /// A stream's PID file read again and judged (under its lock): a
    /// worker is proven again, a remembered one too.
    pub fn recheck(&self, id: &StreamId) -> (crate::process::pidfile::PidFile, Liveness) {
        let inspect = |pid| self.processes.inspect(pid);
        let Some(who) = self.worker_of(id) else {
            return observe::recheck_with(self.layout, self.store, id, &inspect);
        };
        let remembered = self.store.stream(id).and_then(|s| s.worker);
        let recorded = remembered.and_then(|r| self.processes.recorded_session(&who, &r));
        let prove = |f: &ProcFacts| self.processes.prove(&who, f, recorded.as_ref());
        observe::recheck_proven(self.layout, id, remembered.as_ref(), &inspect, &prove)
    }

    /// Restarts a failing stream if policy still allows once its lock is
    /// held. A stuck worker (running, failing liveness) is stopped gracefully
    /// first: a soft reset, with a retry context added to the new prompt.
    fn restart(&self, obs: &Observed, order: &RestartOrder, acted: &mut Acted) {
        let id = &obs.view.id;
        let logger = self.recorder.logger;
        let _held = match self.lock_stream(id) {
            Ok(held) => held,
            Err(e) => return self.refused(e),
        };
        let (pid_file, liveness) = self.recheck(id);
        let stuck = match (&obs.verdict, &liveness) {
            (Verdict::Unhealthy { pid: seen, .. }, Liveness::Running { pid, start_ticks })
                if seen == pid =>
            {
                Some((*pid, *start_ticks))
            }
            (_, Liveness::Running { pid, .. }) => {
                logger.info(&format!(
                    "Worker {id} is running again (PID: {pid}), started meanwhile by another monitor"
                ));
                return;
            }
            _ => None,
        };
        // A stuck session is stopped only through session_stop.
        let stuck_session = match stuck {
            Some(_) => None,
            None => match self.stuck_session(obs) {
                Ok(found) => found,
                Err(()) => return,
            },
        };
        if stuck.is_none() && stuck_session.is_none() {
            if let Some(worker) = self.tc_live_now(obs) {
                logger.info(&format!(
                    "Worker {id} is running again ({worker}), started meanwhile by someone else"
                ));
                return;
            }
            remove_if_stale(self.layout, self.recorder, id, &pid_file, &liveness);
            if let Some(adopted) = self.adopt_interrupted(id) {
                acted.running.push(adopted);
                return;
            }
        }
        let reason = match &obs.verdict {
            Verdict::Dead { reason } | Verdict::Unhealthy { reason, .. } => reason.clone(),
            _ => return,
        };
        let tail = logtail::tail(&self.log_path(obs), 8192).unwrap_or_default();
        let signature = selfheal::signature::signature(obs.exit_code(), None, &reason, &tail);
        let shown = format!("{}: {}", signature.class, signature.text);
        let request = RestartRequest {
            id,
            completed_tasks: obs.view.progress.completed,
            exit_code: obs.exit_code(),
            reason: &reason,
            policy: order.policy,
            signature: Some((&signature.fingerprint, &shown)),
        };
        let mut changes = Changes::default();
        let now = now_ms();
        let jitter = super::jitter();
        let begun = self.store.update_stream(id, |st, breaker| {
            changes = Changes::default();
            plan::begin_restart(
                st,
                breaker,
                &request,
                &self.settings.plan,
                now,
                jitter,
                &mut changes,
            )
        });
        self.recorder.changes(&changes);
        let (begin, st) = match begun {
            Ok(done) => done,
            Err(source) => {
                return self.refused(ActError::State {
                    stream: id.clone(),
                    action: "the restart",
                    source,
                })
            }
        };
        let attempt = match begin {
            Begin::Skip => return,
            Begin::GaveUp(why) => {
                if let Some((pid, start_ticks)) = stuck {
                    let _ = self.stop(id, pid, start_ticks);
                }
                if let Some(session) = &stuck_session {
                    let _ = self.stop_sessions(id, session);
                }
                let record = launch::Attempt {
                    n: st.restarts_total + 1,
                    action: "give_up",
                    reason: &reason,
                    signature: &signature,
                    tail: &tail,
                };
                self.record_attempt(obs, &record);
                acted.gave_up.push((id.clone(), why));
                return;
            }
            Begin::Go { attempt } => attempt,
        };
        let action = if stuck.is_some() || stuck_session.is_some() {
            "soft_reset"
        } else {
            "restart"
        };
        if let Some(session) = &stuck_session {
            logger.action(
                Level::Warning,
                &format!(
                    "Worker {id} ({}) is stuck: {reason}; stopping it through session_stop for a soft reset",
                    session.describe()
                ),
            );
            if let Err(e) = self.stop_sessions(id, session) {
                logger.error(&format!("{e}; not starting a second one"));
                return;
            }
        }
        if let Some((pid, start_ticks)) = stuck {
            logger.action(
                Level::Warning,
                &format!(
                    "Worker {id} (PID {pid}) is stuck: {reason}; stopping it for a soft reset"
                ),
            );
            if let Err(e) = self.stop(id, pid, start_ticks) {
                logger.error(&format!("{e}; not starting a second one"));
                return;
            }
        }
        let max = order.policy.max_restarts;
        logger.action(
            Level::Info,
            &format!("Restarting worker {id} (attempt {attempt}/{max})"),
        );
        let record = launch::Attempt {
            n: st.restarts_total,
            action,
            reason: &reason,
            signature: &signature,
            tail: &tail,
        };
        self.record_attempt(obs, &record);
        self.recorder.event(EventRecord {
            reason: Some(reason.clone()),
            attempt: Some(attempt),
            exit: obs.exit_code().map(|c| format!("exit code {c}")),
            class: Some(signature.class.to_string()),
            signature: Some(selfheal::redact::redact(&signature.text)),
            ..EventRecord::new(action, Some(id.as_str()))
        });
        let lines = logtail::last_lines(&tail, 20);
        let context = selfheal::retry_context(attempt, &reason, &signature.class, &lines);
        let context = (obs.kind == ComponentKind::Worker).then_some(context);
        if let Some(launched) = self.launch(obs, context) {
            acted.running.extend(launched.watched(id));
            if let Some(child) = launched.child {
                self.spawned(id, child, acted);
            }
        }
    }

    /// A stuck worker whose stream just gave up is stopped, not left hanging.
    fn stop_given_up(&self, obs: &Observed) {
        let id = &obs.view.id;
        let _held = match self.lock_stream(id) {
            Ok(held) => held,
            Err(e) => return self.refused(e),
        };
        let Verdict::Unhealthy { pid, .. } = &obs.verdict else {
            return;
        };
        if let (
            _,
            Liveness::Running {
                pid: now,
                start_ticks,
            },
        ) = self.recheck(id)
        {
            if *pid == now {
                self.recorder.logger.action(
                    Level::Warning,
                    &format!("Stopping stuck worker {id} (PID {pid}): its stream gave up"),
                );
                if let Err(e) = self.stop(id, now, start_ticks) {
                    self.recorder.logger.error(&e.to_string());
                }
            }
        }
    }

    /// Removes a stale PID file under the stream's lock, if still stale.
    fn remove_stale(&self, obs: &Observed) {
        let id = &obs.view.id;
        let Ok(_held) = self.lock_stream(id) else {
            return;
        };
        let (pid_file, liveness) = self.recheck(id);
        remove_if_stale(self.layout, self.recorder, id, &pid_file, &liveness);
    }

    /// Stops a running worker gracefully, logging every signal; a
    /// stream's worker is proven again right before.
    pub fn stop(&self, id: &StreamId, pid: i32, start_ticks: u64) -> Result<(), ActError> {
        let scope = match self.worker_of(id) {
            Some(who) => StopScope::Worker(who),
            None => StopScope::Component {
                state_dir: &self.state_dir,
            },
        };
        stop_running(
            self.recorder,
            self.processes,
            &scope,
            id,
            pid,
            start_ticks,
            self.settings.grace,
        )
    }

    /// An action that could not run is said, and the tick goes on.
    fn refused(&self, e: ActError) {
        match e {
            ActError::Locked { stream } => self.recorder.logger.warning(&format!(
                "Stream {stream} is locked by another monitor; left to it this time"
            )),
            other => self.recorder.logger.error(&other.to_string()),
        }
    }
}

/// Carries out a tick's plan: restarts on a small pool of threads, the
/// rest stream by stream.
pub fn carry_out(actor: &Actor<'_>, snapshot: &Snapshot, plan: &Plan) -> Acted {
    let mut acted = Acted::default();
    let mut restarts: Vec<(&Observed, &RestartOrder)> = Vec::new();
    for obs in &snapshot.streams {
        let id = &obs.view.id;
        let docker = matches!(obs.kind, ComponentKind::Docker { .. });
        if let Some(order) = plan.restarts(id) {
            restarts.push((obs, order));
        } else if plan.gives_up(id) && matches!(obs.verdict, Verdict::Unhealthy { .. }) {
            actor.stop_given_up(obs);
        } else if obs.verdict == Verdict::Ready && actor.settings.start_ready {
            actor.start_ready(obs, &mut acted);
        } else if actor.settings.own_components
            && obs.verdict == Verdict::NeverStarted
            && matches!(obs.kind, ComponentKind::Process(_))
        {
            if let Some(launched) = actor.start_owned(obs) {
                acted.running.extend(launched.watched(id));
                if let Some(child) = launched.child {
                    actor.spawned(id, child, &mut acted);
                }
            }
        } else if matches!(obs.liveness, Liveness::Stale { .. }) && !docker {
            actor.remove_stale(obs);
        }
    }
    pool::restart_all(actor, &restarts, &mut acted);
    acted
        .gave_up
        .append(&mut actor.gave_up.lock().unwrap_or_else(|e| e.into_inner()));
    let launched: Vec<StreamId> = acted.running.iter().map(|w| w.stream.clone()).collect();
    for obs in snapshot.streams.iter().filter(|o| {
        !matches!(o.kind, ComponentKind::Docker { .. }) && !launched.contains(&o.view.id)
    }) {
        if let Liveness::Running { pid, start_ticks } = obs.liveness {
            acted.running.push(Watched {
                stream: obs.view.id.clone(),
                pid,
                start_ticks,
            });
        }
    }
    acted
}
