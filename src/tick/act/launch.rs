//! Starting things: the worker of a stream whose restart was charged (through
//! the wrapper, with the prompt rendered and a retry context added), a
//! process component the daemon owns, a container; the restart journalled
//! before the spawn and its outcome recorded after; and the self-heal
//! attempt record each restart leaves for the operator.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::clock::now_ms;
use crate::component::{self, ComponentKind};
use crate::files::{replace_atomically, Durability};
use crate::layout::StreamId;
use crate::logtail;
use crate::process::docker;
use crate::process::identity::Remembered;
use crate::process::proof;
use crate::process::spawn::{describe_status, SpawnError, SpawnTag, WrapperCall};
use crate::prompt::{self, PromptFacts};
use crate::report::events::EventRecord;
use crate::report::log::Level;
use crate::selfheal;
use crate::supervise::assess::Verdict;
use crate::supervise::lifecycle::Event;
use crate::supervise::model::{GiveUp, SpawnIntent};
use crate::supervise::plan::{self, Changes};

use super::{ActError, Actor, Launched, Observed, Watched};

/// How long a restart watches the wrapper it just saw running, so a worker
/// that cannot start at all is not reported as restarted.
const SETTLE: Duration = Duration::from_millis(500);

/// The give-up a failed start calls for when retrying cannot help: the
/// wrapper missing or not executable, or exit 126/127 at start.
/// `log_words` reads what the worker log said last (for a wrapper that
/// ended before its PID file was seen).
fn deterministic(error: &ActError, log_words: impl Fn() -> Option<String>) -> Option<GiveUp> {
    match error {
        ActError::Spawn {
            source: source @ (SpawnError::WrapperMissing(_) | SpawnError::WrapperNotExecutable(_)),
            ..
        } => Some(GiveUp::Deterministic {
            exit: None,
            reason: source.to_string(),
        }),
        ActError::Spawn {
            source: SpawnError::ExitedEarly { status },
            ..
        } => {
            let code = status
                .strip_prefix("exit code ")
                .and_then(|c| c.trim().parse().ok());
            plan::start_give_up(code, log_words().as_deref())
        }
        ActError::FailedStart {
            code, last_words, ..
        } => plan::start_give_up(*code, last_words.as_deref()),
        _ => None,
    }
}

/// One self-heal attempt, as recorded for the operator.
pub(super) struct Attempt<'a> {
    pub n: u32,
    pub action: &'a str,
    pub reason: &'a str,
    pub signature: &'a selfheal::signature::Signature,
    pub tail: &'a str,
}

impl Actor<'_> {
    /// Where a stream's or component's output goes.
    pub(super) fn log_path(&self, obs: &Observed) -> PathBuf {
        match obs.kind {
            ComponentKind::Worker => self.layout.log_file(&obs.view.id, &self.initiative.id),
            _ => component::log_path(self.layout, &obs.view.id),
        }
    }

    /// Spawns the worker of a stream whose restart is charged and recorded
    /// as begun, and records how it went.
    pub(crate) fn launch(&self, obs: &Observed, retry_context: Option<String>) -> Option<Launched> {
        let id = &obs.view.id;
        let logger = self.recorder.logger;
        let noun = if obs.kind == ComponentKind::Worker {
            "Worker"
        } else {
            "Component"
        };
        let intent_nonce = proof::new_nonce();
        let intent = SpawnIntent {
            nonce: intent_nonce.clone(),
            at_ms: now_ms(),
            monitor_pid: std::process::id(),
        };
        if let Err(e) = self.store.journal_intent(id, intent) {
            logger.error(&format!(
                "Not restarting {id}: cannot journal the restart: {e}"
            ));
            return None;
        }
        let began = Instant::now();
        let began_at = std::time::SystemTime::now();
        // Spawning is bounded; the watch that follows holds no permit.
        let mut result = {
            let _permit = self.spawning.acquire();
            self.start(obs, retry_context, &intent_nonce)
        };
        if let Ok(started) = &mut result {
            if let Some(failure) = self.settle(obs, started, began) {
                result = Err(failure);
            }
        }
        if let Err(e) = &result {
            // Only a log this start wrote speaks for it (not an older run's).
            let log_words = || {
                let path = self.log_path(obs);
                let written = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
                // File times come from a coarse clock, a few ms behind.
                if written + Duration::from_millis(20) < began_at {
                    return None;
                }
                logtail::last_words(&logtail::tail(&path, 4096)?)
            };
            if let Some(why) = deterministic(e, log_words) {
                self.give_up_at_start(obs, noun, e, why);
                return None;
            }
        }
        let tc_session = self.tc_stream(id).is_some().then(|| {
            result
                .as_ref()
                .ok()
                .and_then(|l| l.session.as_deref())
                .and_then(|s| s.strip_prefix("session "))
                .map(str::to_string)
        });
        let outcome = match &result {
            Ok(started) => {
                let pid_file_mtime = std::fs::metadata(self.layout.pid_file(id))
                    .and_then(|m| m.modified())
                    .map(crate::clock::epoch_secs)
                    .unwrap_or_else(|_| now_ms() / 1000);
                // The spawn proved it (our child, or in our child's session);
                // a container's PID is Docker's and proves nothing.
                let mut worker =
                    Remembered::proven(started.pid, started.start_ticks, pid_file_mtime);
                if !started.watch || started.pid <= 0 {
                    worker.proven_in_boot = None;
                }
                Ok(worker)
            }
            Err(e) => Err(e.detail()),
        };
        let mut changes = Changes::default();
        let finished = self.store.update_stream(id, |st, _| {
            changes = Changes::default();
            plan::finish_restart(st, id, outcome.clone(), now_ms(), &mut changes);
            if let Some(job) = &tc_session {
                st.history_mut().session_job = job.clone();
            }
        });
        if let Err(e) = &finished {
            logger.error(&format!("Cannot record the restart of {id}: {e}"));
        }
        match result {
            Ok(started) => {
                let what = match &started.session {
                    Some(session) => session.clone(),
                    None => format!("PID: {}", started.pid),
                };
                logger.action(Level::Success, &format!("{noun} {id} restarted ({what})"));
                self.recorder.changes(&changes);
                Some(started)
            }
            Err(e) => {
                let next = finished
                    .ok()
                    .and_then(|(_, st)| st.history().next_attempt_ms)
                    .filter(|t| *t > now_ms())
                    .map(|t| {
                        format!(
                            "; next attempt in {}s at the earliest",
                            t.saturating_sub(now_ms()).div_ceil(1000)
                        )
                    })
                    .unwrap_or_default();
                logger.action(
                    Level::Error,
                    &format!(
                        "Failed to restart {} {id}: {}{next}",
                        noun.to_lowercase(),
                        e.detail()
                    ),
                );
                self.recorder.changes(&changes);
                None
            }
        }
    }

    /// A restart that a monitor killed mid-spawn left unfinished in the
    /// journal (the stream's spawn lock, held now, is the proof that nobody
    /// is still at it): the worker it started, found by its spawn nonce, is
    /// adopted instead of starting a second one beside it.
    pub(super) fn adopt_interrupted(&self, id: &StreamId) -> Option<Watched> {
        let intent = self.store.stream(id)?.into_history().spawn_intent?;
        let logger = self.recorder.logger;
        let project = proof::Project::of(self.layout);
        let Some(found) = proof::find_spawn(&project, id.as_str(), &intent.nonce) else {
            logger.info(&format!(
                "An interrupted restart of {id} (by monitor PID {}) left no worker",
                intent.monitor_pid
            ));
            let _ = self
                .store
                .update_stream(id, |st, _| st.set_history(|h| &mut h.spawn_intent, None));
            return None;
        };
        let now = now_ms();
        let mut changes = Changes::default();
        let recorded = self.store.update_stream(id, |st, _| {
            changes = Changes::default();
            st.set_history(|h| &mut h.spawn_intent, None);
            st.set_history(|h| &mut h.last_error, None);
            // It carries the interrupted spawn's nonce: proven.
            st.worker = Some(Remembered::proven(found.pid, found.start_ticks, now / 1000));
            let up = Event::Observed(Verdict::StartingUp { pid: found.pid });
            let _ = plan::apply_event(st, id, up, now, &mut changes);
        });
        if let Err(e) = recorded {
            logger.error(&format!("Cannot record the adoption of {id}'s worker: {e}"));
            return None;
        }
        self.recorder.changes(&changes);
        logger.action(
            Level::Warning,
            &format!(
                "Worker {id} (PID {}) of a restart interrupted by monitor PID {} adopted; not starting another",
                found.pid, intent.monitor_pid
            ),
        );
        self.recorder.event(EventRecord {
            pid: Some(found.pid),
            reason: Some(format!(
                "restart by monitor PID {} was interrupted",
                intent.monitor_pid
            )),
            ..EventRecord::new("adopted", Some(id.as_str()))
        });
        Some(Watched {
            stream: id.clone(),
            pid: found.pid,
            start_ticks: found.start_ticks,
        })
    }

    /// Watches a wrapper just seen running for a moment: one that ends at
    /// once (`claude` missing, a crash on start) is a failed start, said as
    /// such, never as "restarted". Later deaths within the startup window
    /// are caught by the next check (`plan`).
    /// `began` is when the spawn began (the "after" of a failed start).
    fn settle(&self, obs: &Observed, started: &mut Launched, began: Instant) -> Option<ActError> {
        let worker = started.pid;
        let child = started.child.as_mut()?;
        let seen = Instant::now();
        let wait = SETTLE.min(self.settings.plan.min_uptime);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                // A wrapper that starts its worker and exits, the PID file
                // naming the worker (which runs on), has not failed.
                let forked = worker != child.id() as i32
                    && self
                        .processes
                        .inspect(worker)
                        .is_some_and(|f| !f.is_zombie());
                if forked {
                    return None;
                }
                let tail = logtail::tail(&self.log_path(obs), 4096).unwrap_or_default();
                return Some(ActError::FailedStart {
                    stream: obs.view.id.clone(),
                    status: describe_status(status),
                    code: status.code(),
                    after: began.elapsed(),
                    last_words: logtail::last_words(&tail),
                });
            }
            if seen.elapsed() >= wait {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A start that failed for good: the stream gives up now (its restart
    /// was charged; no backoff, no second try).
    fn give_up_at_start(&self, obs: &Observed, noun: &str, error: &ActError, why: GiveUp) {
        let id = &obs.view.id;
        let logger = self.recorder.logger;
        logger.action(
            Level::Error,
            &format!(
                "Failed to restart {} {id}: {}",
                noun.to_lowercase(),
                error.detail()
            ),
        );
        let mut changes = Changes::default();
        let recorded = self.store.update_stream(id, |st, _| {
            changes = Changes::default();
            plan::give_up_at_start(st, id, why.clone(), now_ms(), &mut changes);
        });
        if let Err(e) = recorded {
            logger.error(&format!("Cannot record the give-up of {id}: {e}"));
        }
        self.recorder.changes(&changes);
        self.gave_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id.clone(), why));
    }

    /// Starts the component the way its kind is started.
    /// A worker is tagged with `nonce`, the spawn's name in the journal.
    fn start(
        &self,
        obs: &Observed,
        retry_context: Option<String>,
        nonce: &str,
    ) -> Result<Launched, ActError> {
        let id = &obs.view.id;
        match &obs.kind {
            ComponentKind::Worker if self.tc_stream(id).is_some() => {
                self.start_tc(obs, retry_context.as_deref(), nonce)
            }
            ComponentKind::Worker => {
                let mut call = self.wrapper_call(obs, retry_context);
                call.tag = Some(SpawnTag {
                    project_root: self.layout.project_root.clone(),
                    nonce: nonce.to_string(),
                });
                self.processes
                    .spawn_worker(&call, self.settings.spawn_wait)
                    .map_err(|source| ActError::Spawn {
                        stream: id.clone(),
                        source,
                    })
            }
            ComponentKind::Process(spec) => {
                let log = component::log_path(self.layout, id);
                let pid_file = self.layout.pid_file(id);
                let (pid, start_ticks, child) =
                    component::spawn_process(&spec.command, &spec.cwd, &spec.env, &pid_file, &log)
                        .map_err(|reason| ActError::Component {
                            stream: id.clone(),
                            reason,
                        })?;
                Ok(Launched {
                    pid,
                    start_ticks,
                    child: Some(child),
                    watch: true,
                    session: None,
                })
            }
            ComponentKind::Docker { container } => {
                let pid =
                    docker::restart(container, Duration::from_secs(60)).map_err(|reason| {
                        ActError::Component {
                            stream: id.clone(),
                            reason,
                        }
                    })?;
                Ok(Launched {
                    pid,
                    start_ticks: 0,
                    child: None,
                    watch: false,
                    session: None,
                })
            }
        }
    }

    /// First start of a process component the daemon owns (not a restart:
    /// nothing is charged to its budget).
    pub(super) fn start_owned(&self, obs: &Observed) -> Option<Launched> {
        let id = &obs.view.id;
        let logger = self.recorder.logger;
        let started = match self.start(obs, None, &proof::new_nonce()) {
            Ok(s) => s,
            Err(e) => {
                logger.action(
                    Level::Error,
                    &format!("Cannot start component {id}: {}", e.detail()),
                );
                return None;
            }
        };
        let mut changes = Changes::default();
        let now = now_ms();
        // A component is judged without a proof: nothing to remember of one.
        let worker = Remembered {
            pid: started.pid,
            start_ticks: started.start_ticks,
            pid_file_mtime: now / 1000,
            proven_in_boot: None,
        };
        let recorded = self.store.update_stream(id, |st, _| {
            changes = Changes::default();
            st.worker = Some(worker);
            let up = Event::Observed(Verdict::StartingUp { pid: started.pid });
            let _ = plan::apply_event(st, id, up, now, &mut changes);
        });
        if let Err(e) = recorded {
            logger.error(&format!("Cannot record the start of {id}: {e}"));
        }
        self.recorder.changes(&changes);
        logger.action(
            Level::Success,
            &format!("Component {id} started (PID: {})", started.pid),
        );
        Some(started)
    }

    fn wrapper_call(&self, obs: &Observed, retry_context: Option<String>) -> WrapperCall {
        let id = &obs.view.id;
        let template = self
            .template
            .get_or_init(|| prompt::load_template(&self.layout.prompt_override()));
        let work_dir = self.layout.work_dir(id);
        let deps: Vec<String> = obs
            .view
            .dependencies
            .iter()
            .map(|d| d.to_string())
            .collect();
        let mut prompt = prompt::render(
            template,
            &PromptFacts {
                stream_id: id.as_str(),
                stream_name: &obs.view.name,
                dependencies: &deps,
                initiative_id: &self.initiative.id,
                work_dir: &work_dir,
            },
        );
        if let Some(context) = retry_context {
            prompt.push_str("\n\n");
            prompt.push_str(&context);
        }
        if let Err(e) = std::fs::create_dir_all(self.layout.pids_dir()) {
            self.recorder.logger.error(&format!(
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
            tag: None,
        }
    }

    /// Leaves `state/self_heal/<stream>/attempt-<n>.json` for the operator.
    pub(super) fn record_attempt(&self, obs: &Observed, attempt: &Attempt<'_>) {
        let lines: Vec<&str> = logtail::last_lines(attempt.tail, 40);
        let record = serde_json::json!({
            "time": crate::report::log::timestamp(),
            "stream": obs.view.id.as_str(),
            "attempt": attempt.n,
            "action": attempt.action,
            "reason": selfheal::redact::redact(attempt.reason),
            "class": attempt.signature.class,
            "signature": attempt.signature.text,
            "fingerprint": attempt.signature.fingerprint,
            "exit_status": obs.exit_code().map(|c| format!("exit code {c}")),
            "log_tail": selfheal::redact::redact_lines(&lines),
        });
        let path = self
            .layout
            .self_heal_dir(&obs.view.id)
            .join(format!("attempt-{}.json", attempt.n));
        let text = serde_json::to_string_pretty(&record).expect("json") + "\n";
        if let Err(e) = replace_atomically(&path, text.as_bytes(), Durability::Atomic) {
            self.recorder
                .logger
                .error(&format!("Cannot write self-heal record: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::StreamId;

    #[test]
    fn starts_that_cannot_succeed_give_up_whichever_way_they_were_seen() {
        let stream = StreamId::parse("A").unwrap();
        let said = || Some("command 'claude' not found on PATH=/bin".to_string());
        let nothing = || None;
        let spawn = |source| ActError::Spawn {
            stream: stream.clone(),
            source,
        };
        let reason =
            |e: &ActError, words: &dyn Fn() -> Option<String>| match deterministic(e, words) {
                Some(GiveUp::Deterministic { reason, .. }) => Some(reason),
                _ => None,
            };
        // Missed by the spawn's poll: the wrapper's exit code and its log.
        let early = spawn(SpawnError::ExitedEarly {
            status: "exit code 127".into(),
        });
        assert_eq!(
            reason(&early, &said).as_deref(),
            Some("claude not found on PATH: command 'claude' not found on PATH=/bin")
        );
        assert_eq!(
            reason(&early, &nothing).as_deref(),
            Some("claude not found on PATH")
        );
        let crash = spawn(SpawnError::ExitedEarly {
            status: "exit code 1".into(),
        });
        assert_eq!(reason(&crash, &said), None);
        let missing = spawn(SpawnError::WrapperMissing("/x/worker-wrapper.sh".into()));
        assert!(reason(&missing, &nothing).is_some_and(|r| r.contains("is missing")));
        let late = ActError::FailedStart {
            stream: stream.clone(),
            status: "exit code 126".into(),
            code: Some(126),
            after: Duration::from_millis(40),
            last_words: None,
        };
        assert_eq!(
            reason(&late, &nothing).as_deref(),
            Some("claude cannot be executed")
        );
        let timeout = spawn(SpawnError::NoPidFile(Duration::from_secs(5)));
        assert_eq!(reason(&timeout, &said), None, "a timeout may pass");
    }
}
