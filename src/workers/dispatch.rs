//! Starting a tc stream's worker: its git worktree made or found (never
//! any other folder), upstream's dispatch prompt (plus a retry context),
//! then the stream's launcher. Also the re-check under the stream's lock:
//! job files and /proc only (no `claude agents` run), so a session another
//! monitor just dispatched is never twinned.

use crate::process::detach::Child;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::layout::{Layout, StreamId};
use crate::process::spawn::{spawn_worker, Started, WrapperCall};
use crate::prompt;
use crate::store::TcStream;

use super::claude_session::{self, match_session};
use super::launch::{self, BgDispatch, LauncherKind, TcWorkerCall};
use super::tc_worker;
use super::worktree;
use super::StreamKey;

/// How long `claude --bg` may take to return.
pub const BG_TIMEOUT: Duration = Duration::from_secs(30);

/// What a dispatch started.
#[derive(Debug)]
pub enum Dispatched {
    /// A background session; its job id when its job file appeared.
    Session {
        job: Option<String>,
        note: Option<String>,
    },
    /// A `tc worker` process the monitor spawned (to reap).
    TcWorker { pid: i32, child: Child },
    /// The legacy wrapper, with its PID file.
    Wrapper(Started),
}

/// One dispatch of a tc stream.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub layout: &'a Layout,
    pub id: &'a StreamId,
    pub name: &'a str,
    pub facts: Option<&'a TcStream>,
    pub launcher: LauncherKind,
    pub max_budget_usd: Option<f64>,
    pub retry_context: Option<&'a str>,
    /// The initiative id the logs are named after (the workspace id).
    pub initiative_id: &'a str,
    /// How long the wrapper launcher waits for its PID file, and the
    /// claude-bg launcher for its job file.
    pub wait: Duration,
    /// The wrapper launcher's identity tag (its worker is the monitor's own).
    pub tag: Option<crate::process::spawn::SpawnTag>,
}

/// The tc dispatch prompt of a stream (the project's template if it has one).
pub fn prompt_of(layout: &Layout, id: &StreamId, name: &str, retry: Option<&str>) -> String {
    let template = std::fs::read_to_string(layout.orch.join(prompt::TC_DISPATCH_OVERRIDE))
        .unwrap_or_else(|_| prompt::TC_DISPATCH_TEMPLATE.to_string());
    prompt::tc_dispatch(&template, id.as_str(), name, retry)
}

/// Makes or finds the worktree, then starts the worker.
pub fn dispatch(req: &Request<'_>) -> Result<Dispatched, String> {
    let stored = req.facts.and_then(|f| f.worktree_path.as_deref());
    let work_dir = worktree::ensure(&req.layout.project_root, req.id, stored)
        .map_err(|e| format!("no worktree for stream {}: {e}", req.id))?;
    let prompt = prompt_of(req.layout, req.id, req.name, req.retry_context);
    let log = req.layout.log_file(req.id, req.initiative_id);
    match req.launcher {
        LauncherKind::ClaudeBg => {
            let config = claude_session::config_dir()
                .ok_or("cannot find Claude's config dir: set HOME or CLAUDE_CONFIG_DIR")?;
            let jobs_dir = claude_session::jobs_dir(&config);
            let outcome = launch::dispatch_claude_bg(&BgDispatch {
                program: "claude".as_ref(),
                work_dir: &work_dir,
                prompt: &prompt,
                jobs_dir: &jobs_dir,
                log: &log,
                timeout: BG_TIMEOUT,
                wait: req.wait,
                env: &[],
            });
            match outcome {
                Ok(job) => Ok(Dispatched::Session {
                    job: Some(job),
                    note: None,
                }),
                // It returned fine but its job did not show (yet): the
                // session is matched by its worktree or prompt next time.
                Err(e @ launch::LaunchError::NoJob { .. }) => Ok(Dispatched::Session {
                    job: None,
                    note: Some(e.to_string()),
                }),
                Err(e) => Err(e.to_string()),
            }
        }
        LauncherKind::TcWorker => {
            let task = req.facts.and_then(|f| f.next_ready_task).ok_or_else(|| {
                format!("stream {} has no task ready to hand to tc worker", req.id)
            })?;
            let child = launch::spawn_tc_worker(&TcWorkerCall {
                program: "tc".as_ref(),
                work_dir: &work_dir,
                task_id: task,
                max_budget_usd: req.max_budget_usd,
                log: &log,
                env: &[],
                tag: req.tag.as_ref().map(|t| (req.id.as_str(), t)),
            })
            .map_err(|e| e.to_string())?;
            Ok(Dispatched::TcWorker {
                pid: child.id() as i32,
                child,
            })
        }
        LauncherKind::Wrapper => {
            let _ = std::fs::create_dir_all(req.layout.pids_dir());
            let started = spawn_worker(
                &WrapperCall {
                    wrapper: req.layout.wrapper(),
                    stream: req.id.to_string(),
                    pid_file: req.layout.pid_file(req.id),
                    log_dir: req.layout.logs_dir(),
                    work_dir,
                    initiative_id: req.initiative_id.to_string(),
                    prompt,
                    tag: req.tag.clone(),
                },
                req.wait,
            )
            .map_err(|e| e.to_string())?;
            Ok(Dispatched::Wrapper(started))
        }
    }
}

/// Whether a live worker of the stream shows in the job files or /proc
/// right now (the re-check under the stream's lock, before a dispatch).
/// `ended` are the jobs this check's listing showed as ended: their files
/// may still say "working" (a killed session cannot update its own).
pub fn live_worker_now(
    layout: &Layout,
    id: &StreamId,
    aliases: &[String],
    stored_worktree: Option<&str>,
    recorded_job: Option<&str>,
    ended: &std::collections::BTreeSet<String>,
    task_streams: impl Fn(i64) -> Option<String>,
) -> Option<String> {
    let root = layout
        .project_root
        .canonicalize()
        .unwrap_or_else(|_| layout.project_root.clone());
    let listed = worktree::listed(&root).unwrap_or_default();
    let work_dir: PathBuf = worktree::choose(&root, id, stored_worktree, &listed);
    let key = [StreamKey {
        id: id.as_str(),
        aliases,
        work_dir: &work_dir,
        recorded_job,
    }];
    if let Some(config) = claude_session::config_dir() {
        let jobs = claude_session::read_jobs(&claude_session::jobs_dir(&config));
        for job in jobs
            .jobs
            .iter()
            .filter(|j| j.is_live() && !ended.contains(&j.id))
        {
            if match_session(&job.session(), &key).is_some() {
                return Some(format!("session {}", job.id));
            }
        }
    }
    tc_worker::scan(Path::new(&root))
        .into_iter()
        .find(|p| task_streams(p.task_id).as_deref() == Some(id.as_str()))
        .map(|p| format!("tc worker pid {}", p.pid))
}
