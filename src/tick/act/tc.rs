//! Acting on a tc project's streams: a worker is started the tc way (the
//! stream's git worktree, upstream's dispatch prompt, the stream's launcher),
//! the re-check under the stream's lock also looks for a session or `tc
//! worker` someone else started, and `--start-ready` starts a stream that
//! has a task ready and no worker once its dependencies' branches are
//! merged. A session's PID is never signalled.

use crate::clock::now_ms;
use crate::process::{procinfo, proof};
use crate::report::log::Level;
use crate::store::{self, TcStream};
use crate::supervise::assess::Verdict;
use crate::supervise::lifecycle::Event;
use crate::supervise::plan::{self, Changes};
use crate::workers::dispatch::{self, Dispatched, Request};
use crate::workers::observe::TcStreamObs;
use crate::workers::worktree;

use super::{ActError, Acted, Actor, Launched, Observed};
use crate::layout::StreamId;

/// How long the operator's `session_stop` command may take.
const SESSION_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The live sessions of a stuck stream, and the command that stops them.
pub(super) struct StuckSession {
    pub jobs: Vec<String>,
    pub command: Vec<String>,
}

impl StuckSession {
    pub fn describe(&self) -> String {
        format!("session {}", self.jobs.join(", "))
    }
}

impl Actor<'_> {
    /// A stuck tc stream whose worker is a Claude session: `Ok(None)` when
    /// it is not one; `Err` when it is but no `session_stop` is configured
    /// (said, and the session left running: its PID is never signalled).
    pub(super) fn stuck_session(&self, obs: &Observed) -> Result<Option<StuckSession>, ()> {
        let Verdict::Unhealthy { reason, .. } = &obs.verdict else {
            return Ok(None);
        };
        let Some((_, seen)) = self.tc_stream(&obs.view.id) else {
            return Ok(None);
        };
        let jobs: Vec<String> = seen
            .workers
            .live
            .iter()
            .filter(|w| w.source == crate::workers::SourceKind::ClaudeSession)
            .map(|w| w.id.clone())
            .collect();
        if jobs.is_empty() {
            return Ok(None);
        }
        let id = &obs.view.id;
        match self
            .settings
            .config
            .stream_setting(id.as_str(), |w| w.session_stop.clone())
        {
            Some(command) => Ok(Some(StuckSession { jobs, command })),
            None => {
                self.recorder.logger.warning(&format!(
                    "Worker {id} (session {}) is stuck: {reason}; stuck; no session_stop configured, \
                     so it is left running",
                    jobs.join(", ")
                ));
                Err(())
            }
        }
    }

    /// Stops a stuck stream's sessions through `session_stop`.
    pub(super) fn stop_sessions(&self, id: &StreamId, stuck: &StuckSession) -> Result<(), String> {
        for job in &stuck.jobs {
            crate::workers::launch::stop_session(&stuck.command, job, SESSION_STOP_TIMEOUT)
                .map_err(|e| format!("cannot stop session {job} of {id}: {e}"))?;
        }
        Ok(())
    }

    /// The tc facts and observation of a stream of a tc project.
    pub(super) fn tc_stream(&self, id: &StreamId) -> Option<(&TcStream, &TcStreamObs)> {
        self.tc?.stream(id)
    }

    /// A live session or `tc worker` of the stream right now (job files and
    /// /proc, read again under the stream's lock), described.
    pub(super) fn tc_live_now(&self, obs: &Observed) -> Option<String> {
        let (facts, _) = self.tc_stream(&obs.view.id)?;
        let recorded = self
            .store
            .stream(&obs.view.id)
            .and_then(|s| s.into_history().session_job);
        let tasks_db = self.tc_tasks_db();
        let busy = self.settings.busy_timeout;
        let ended = &self.tc?.observed.ended_jobs;
        dispatch::live_worker_now(
            self.layout,
            &obs.view.id,
            &facts.aliases,
            facts.worktree_path.as_deref(),
            recorded.as_deref(),
            ended,
            |task| {
                store::streams_of_tasks(&tasks_db, &[task], busy)
                    .ok()?
                    .remove(&task)
            },
        )
    }

    fn tc_tasks_db(&self) -> std::path::PathBuf {
        self.layout.tc_tasks_db()
    }

    /// Starts a tc stream's worker with its launcher.
    pub(super) fn start_tc(
        &self,
        obs: &Observed,
        retry_context: Option<&str>,
        nonce: &str,
    ) -> Result<Launched, ActError> {
        let id = &obs.view.id;
        let (facts, seen) = self
            .tc_stream(id)
            .ok_or_else(|| ActError::Unknown { stream: id.clone() })?;
        let max_budget_usd = self
            .settings
            .config
            .stream_setting(id.as_str(), |w| w.max_budget_usd);
        let request = Request {
            layout: self.layout,
            id,
            name: &obs.view.name,
            facts: Some(facts),
            launcher: seen.launcher,
            max_budget_usd,
            retry_context,
            initiative_id: &self.initiative.id,
            wait: self.settings.spawn_wait,
            tag: Some(crate::process::spawn::SpawnTag {
                project_root: self.layout.project_root.clone(),
                nonce: nonce.to_string(),
            }),
        };
        let dispatched = dispatch::dispatch(&request).map_err(|reason| ActError::Component {
            stream: id.clone(),
            reason,
        })?;
        Ok(match dispatched {
            Dispatched::Session { job, note } => {
                if let Some(note) = note {
                    self.recorder
                        .logger
                        .warning(&format!("Worker {id}: {note}"));
                }
                Launched {
                    pid: 0,
                    start_ticks: 0,
                    child: None,
                    watch: false,
                    session: Some(match job {
                        Some(job) => format!("session {job}"),
                        None => "an unidentified session".into(),
                    }),
                }
            }
            Dispatched::TcWorker { pid, child } => Launched {
                pid,
                start_ticks: procinfo::inspect(pid).map(|f| f.start_ticks).unwrap_or(0),
                child: Some(child),
                watch: true,
                session: None,
            },
            Dispatched::Wrapper(started) => Launched {
                pid: started.pid,
                start_ticks: started.start_ticks,
                child: Some(started.child),
                watch: true,
                session: None,
            },
        })
    }

    /// `--start-ready`: starts a stream with a task ready and no worker, once
    /// the branches of its dependencies are merged into HEAD. Not a restart:
    /// nothing is charged to its budget.
    pub(super) fn start_ready(&self, obs: &Observed, acted: &mut Acted) {
        let id = &obs.view.id;
        let logger = self.recorder.logger;
        if self.tc_stream(id).is_none() {
            return;
        }
        let unmerged: Vec<String> = obs
            .view
            .dependencies
            .iter()
            .filter(|dep| {
                !matches!(
                    worktree::branch_merged(&self.layout.project_root, dep),
                    Ok(true)
                )
            })
            .map(|dep| format!("stream/{dep}"))
            .collect();
        if !unmerged.is_empty() {
            logger.info(&format!(
                "Stream {id} is ready; not starting it before {} is merged into HEAD",
                unmerged.join(", ")
            ));
            return;
        }
        let _held = match self.lock_stream(id) {
            Ok(held) => held,
            Err(e) => return self.refused(e),
        };
        if let Some(worker) = self.tc_live_now(obs) {
            logger.info(&format!("Worker {id} is already running ({worker})"));
            return;
        }
        logger.action(
            Level::Info,
            &format!("Starting worker {id} (a task is ready)"),
        );
        let started = match self.start_tc(obs, None, &proof::new_nonce()) {
            Ok(started) => started,
            Err(e) => {
                logger.action(
                    Level::Error,
                    &format!("Cannot start worker {id}: {}", e.detail()),
                );
                return;
            }
        };
        let job = started
            .session
            .as_deref()
            .and_then(|s| s.strip_prefix("session "))
            .map(str::to_string);
        let mut changes = Changes::default();
        let now = now_ms();
        // A process of its own (a tc worker) is remembered, as a restart's is.
        // A process of our own, our child: proven by its spawn.
        let worker = (started.pid > 0).then(|| {
            crate::process::identity::Remembered::proven(
                started.pid,
                started.start_ticks,
                now / 1000,
            )
        });
        let recorded = self.store.update_stream(id, |st, _| {
            changes = Changes::default();
            st.history_mut().session_job = job.clone();
            if worker.is_some() {
                st.worker = worker;
            }
            let up = Event::Observed(Verdict::StartingUp { pid: started.pid });
            let _ = plan::apply_event(st, id, up, now, &mut changes);
        });
        if let Err(e) = recorded {
            logger.error(&format!("Cannot record the start of {id}: {e}"));
        }
        self.recorder.changes(&changes);
        let what = started
            .session
            .clone()
            .unwrap_or_else(|| format!("PID: {}", started.pid));
        logger.action(Level::Success, &format!("Worker {id} started ({what})"));
        acted.running.extend(started.watched(id));
        if let Some(child) = started.child {
            acted.spawned.push((id.clone(), child));
        }
    }
}
