//! One look at a tc project's workers, for a tick or for `status`: each
//! stream's work dir (its git worktree), every worker source asked once
//! (`claude agents` at most once, one pass over /proc, one query for the
//! tasks of the `tc worker` processes found), and the tc verdict of each
//! stream. Nothing is started or written here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::ConfigFile;
use crate::layout::{Layout, StreamId};
use crate::store::{self, TcProject};
use crate::supervise::assess::Verdict;
use crate::supervise::model::State;
use crate::supervise::streams::StreamView;

use super::assess::{assess_tc, TcFacts};
use super::claude_session::{ClaudeSessions, ListSettings, SessionsRead};
use super::launch::LauncherKind;
use super::tc_worker::{self, TcWorkers};
use super::{observe_all, StreamKey, StreamWorkers, WorkerSource};

/// What was seen of one tc stream.
#[derive(Debug, Clone)]
pub struct TcStreamObs {
    /// Its work dir: the worktree git lists for it, else `.worktrees/<id>`.
    pub work_dir: PathBuf,
    pub workers: StreamWorkers,
    pub verdict: Verdict,
    pub launcher: LauncherKind,
}

/// What was seen of every tc stream.
#[derive(Debug, Clone, Default)]
pub struct TcObservation {
    pub streams: BTreeMap<String, TcStreamObs>,
    pub warnings: Vec<String>,
    /// Jobs the session listing showed as ended: a re-check under a lock,
    /// which reads only the job files, must not take one of them (a killed
    /// session's file still says "working") for alive.
    pub ended_jobs: BTreeSet<String>,
}

/// How to look (the production defaults, or a test's).
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// `None`: the Claude config dir cannot be found (no HOME).
    pub sessions: Option<ListSettings>,
}

impl SourceSettings {
    pub fn from_env() -> SourceSettings {
        SourceSettings {
            sessions: ListSettings::from_env(false),
        }
    }
}

/// The launcher of a stream (tc project: `claude-bg` unless configured).
pub fn launcher_of(config: &ConfigFile, id: &str) -> LauncherKind {
    LauncherKind::pick(
        config.streams.get(id).and_then(|s| s.launcher),
        config.workers.launcher,
        true,
    )
}

/// Looks at every stream's workers and judges each stream.
#[allow(clippy::too_many_arguments)]
pub fn observe(
    layout: &Layout,
    tc: &TcProject,
    views: &[std::sync::Arc<StreamView>],
    known: &State,
    config: &ConfigFile,
    tasks_db: &Path,
    busy_timeout: Duration,
    sources: &SourceSettings,
) -> TcObservation {
    let mut out = TcObservation::default();
    let root = layout
        .project_root
        .canonicalize()
        .unwrap_or_else(|_| layout.project_root.clone());
    let worktrees = super::worktree::listed(&root).unwrap_or_default();
    let work_dirs: Vec<PathBuf> = views
        .iter()
        .map(|v| {
            let stored = tc
                .streams
                .get(v.id.as_str())
                .and_then(|f| f.worktree_path.as_deref());
            super::worktree::choose(&root, &v.id, stored, &worktrees)
        })
        .collect();
    let recorded: Vec<Option<&str>> = views
        .iter()
        .map(|v| {
            known
                .streams
                .get(v.id.as_str())
                .and_then(|s| s.history().session_job.as_deref())
        })
        .collect();
    let no_aliases = Vec::new();
    let keys: Vec<StreamKey<'_>> = views
        .iter()
        .enumerate()
        .map(|(i, v)| StreamKey {
            id: v.id.as_str(),
            aliases: tc
                .streams
                .get(v.id.as_str())
                .map(|f| &f.aliases)
                .unwrap_or(&no_aliases),
            work_dir: &work_dirs[i],
            recorded_job: recorded[i],
        })
        .collect();

    // Only streams with open work need their workers looked for.
    let workers: BTreeMap<String, StreamWorkers> =
        if views.iter().any(|v| !v.progress.is_complete()) {
            let mut sessions = match &sources.sessions {
                Some(settings) => ClaudeSessions::list(settings),
                None => ClaudeSessions {
                    read: SessionsRead {
                        cannot_tell: Some(
                            "cannot find Claude's config dir: set HOME or CLAUDE_CONFIG_DIR".into(),
                        ),
                        ..SessionsRead::default()
                    },
                },
            };
            let mut tc_workers = TcWorkers {
                processes: tc_worker::scan(&root),
                ..TcWorkers::default()
            };
            let ids = tc_workers.task_ids();
            if !ids.is_empty() {
                match store::streams_of_tasks(tasks_db, &ids, busy_timeout) {
                    Ok(map) => tc_workers.task_streams = map,
                    Err(e) => out.warnings.push(format!(
                        "Cannot tell the streams of the running tc workers: {e}"
                    )),
                }
            }
            out.warnings.extend(sessions.warnings());
            out.ended_jobs = sessions
                .read
                .sessions
                .iter()
                .filter(|s| !s.live)
                .filter_map(|s| s.id.clone())
                .collect();
            observe_all(&mut [&mut sessions, &mut tc_workers], &keys)
        } else {
            BTreeMap::new()
        };

    let complete: BTreeSet<&StreamId> = views
        .iter()
        .filter(|v| v.progress.is_complete())
        .map(|v| &v.id)
        .collect();
    let none = StreamWorkers::default();
    for (i, view) in views.iter().enumerate() {
        let facts = tc.streams.get(view.id.as_str());
        let seen = workers.get(view.id.as_str()).unwrap_or(&none);
        let log_size = std::fs::metadata(layout.log_file(&view.id, &layout.workspace_id))
            .ok()
            .map(|m| m.len());
        let verdict = assess_tc(&TcFacts {
            progress: view.progress,
            unfinished_deps: view
                .dependencies
                .iter()
                .filter(|d| !complete.contains(d))
                .cloned()
                .collect(),
            unknown_labels: facts.map(|f| f.unknown_labels.as_slice()).unwrap_or(&[]),
            all_open_blocked: facts.is_some_and(|f| f.all_open_blocked),
            ready: facts.is_some_and(|f| f.ready),
            workers: seen,
            log_size,
            dispatched: recorded[i],
        });
        out.streams.insert(
            view.id.to_string(),
            TcStreamObs {
                work_dir: work_dirs[i].clone(),
                workers: seen.clone(),
                verdict,
                launcher: launcher_of(config, view.id.as_str()),
            },
        );
    }
    out
}
