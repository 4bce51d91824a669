//! Where everything lives: discovery of the project and its orchestrator
//! directory (exactly like the Python original, plus flags and environment
//! overrides), every derived path, and the validation of stream ids. No path
//! is ever built from a stream id that has not passed [`StreamId::parse`].

use std::fmt;
use std::path::{Path, PathBuf};

/// The state file's name inside the state directory.
pub const STATE_FILE: &str = "monitor-state.json";
/// The state lock's name inside the state directory.
pub const STATE_LOCK: &str = "state.lock";

/// Path overrides given on the command line or through `MONITOR_WORKERS_*`.
#[derive(Debug, Clone, Default)]
pub struct PathOverrides {
    pub project_root: Option<PathBuf>,
    pub orchestrator_dir: Option<PathBuf>,
    pub tasks_db: Option<PathBuf>,
    pub memory_db: Option<PathBuf>,
    pub workspace_id: Option<String>,
}

/// Every file and directory the monitor reads or writes for one project.
#[derive(Debug, Clone)]
pub struct Layout {
    pub project_root: PathBuf,
    pub orch: PathBuf,
    pub workspace_id: String,
    pub tasks_db: PathBuf,
    pub memory_db: PathBuf,
    /// The tasks database was named (flag or environment), not derived.
    pub tasks_db_given: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("no project found: none of {tried} has .claude/orchestrator; run inside a project or pass --project-root DIR (or --orchestrator-dir DIR)")]
    NotFound { tried: String },
    #[error(
        "orchestrator directory {path} does not exist; check --orchestrator-dir / --project-root"
    )]
    MissingOrch { path: PathBuf },
    #[error(
        "cannot tell where the databases are: $HOME is not set; pass --tasks-db and --memory-db"
    )]
    NoHome,
    #[error("cannot tell the workspace id from {path}; pass --workspace-id")]
    NoWorkspace { path: PathBuf },
}

impl Layout {
    /// Finds the project. `exe` is this binary's path: if it sits in
    /// `.claude/orchestrator/`, that is the orchestrator dir, as it was for the
    /// original script. Otherwise the search goes upward from `cwd`.
    pub fn discover(
        overrides: &PathOverrides,
        cwd: &Path,
        exe: Option<&Path>,
        home: Option<&Path>,
    ) -> Result<Layout, LayoutError> {
        let absolute = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                cwd.join(p)
            }
        };
        let (orch, project_root) = match (&overrides.orchestrator_dir, &overrides.project_root) {
            (Some(orch), root) => {
                let orch = absolute(orch);
                let root = match root {
                    Some(r) => absolute(r),
                    None => orch
                        .parent()
                        .and_then(Path::parent)
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| orch.clone()),
                };
                (orch, root)
            }
            (None, Some(root)) => {
                let root = absolute(root);
                (root.join(".claude").join("orchestrator"), root)
            }
            (None, None) => match exe.and_then(orch_of_binary).or_else(|| search_upward(cwd)) {
                Some(orch) => {
                    let root = orch
                        .parent()
                        .and_then(Path::parent)
                        .unwrap_or(&orch)
                        .to_path_buf();
                    (orch, root)
                }
                None => {
                    let mut tried: Vec<String> = Vec::new();
                    if let Some(exe) = exe.and_then(Path::parent) {
                        tried.push(exe.display().to_string());
                    }
                    tried.extend(cwd.ancestors().map(|p| p.display().to_string()));
                    return Err(LayoutError::NotFound {
                        tried: tried.join(", "),
                    });
                }
            },
        };
        if !orch.is_dir() {
            return Err(LayoutError::MissingOrch { path: orch });
        }
        let orch = orch.canonicalize().unwrap_or(orch);
        let project_root = project_root.canonicalize().unwrap_or(project_root);
        let workspace_id = match &overrides.workspace_id {
            Some(w) => w.clone(),
            None => project_root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| LayoutError::NoWorkspace {
                    path: project_root.clone(),
                })?,
        };
        let db_default = |kind: &str, file: &str| -> Result<PathBuf, LayoutError> {
            let home = home.ok_or(LayoutError::NoHome)?;
            Ok(home
                .join(".claude")
                .join(kind)
                .join(&workspace_id)
                .join(file))
        };
        let tasks_db = match &overrides.tasks_db {
            Some(p) => absolute(p),
            None => db_default("tasks", "tasks.db")?,
        };
        let memory_db = match &overrides.memory_db {
            Some(p) => absolute(p),
            None => db_default("memory", "memory.db")?,
        };
        Ok(Layout {
            project_root,
            orch,
            workspace_id,
            tasks_db,
            memory_db,
            tasks_db_given: overrides.tasks_db.is_some(),
        })
    }

    pub fn pids_dir(&self) -> PathBuf {
        self.orch.join("pids")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.orch.join("logs")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.orch.join("state")
    }
    pub fn locks_dir(&self) -> PathBuf {
        self.state_dir().join("locks")
    }
    pub fn monitor_log(&self) -> PathBuf {
        self.logs_dir().join("monitor.log")
    }
    pub fn wrapper(&self) -> PathBuf {
        self.orch.join("worker-wrapper.sh")
    }
    pub fn prompt_override(&self) -> PathBuf {
        self.orch.join("worker-prompt.md")
    }
    /// The background daemon's own stdout and stderr.
    pub fn daemon_out(&self) -> PathBuf {
        self.logs_dir().join("daemon.out")
    }
    /// The lock every change of the state is made under.
    pub fn state_lock(&self) -> PathBuf {
        self.state_dir().join(STATE_LOCK)
    }
    /// The heartbeat file the wrapper touches for a stream's worker.
    pub fn heartbeat_file(&self, id: &StreamId) -> PathBuf {
        self.pids_dir().join(format!("{id}.heartbeat"))
    }
    /// `<project>/.copilot/tasks.db`, where the tc schema keeps its tasks.
    pub fn tc_tasks_db(&self) -> PathBuf {
        self.project_root.join(".copilot").join("tasks.db")
    }
    /// The structured event log.
    pub fn events_log(&self) -> PathBuf {
        self.logs_dir().join("events.jsonl")
    }
    /// The Prometheus text file for node_exporter's textfile collector.
    pub fn metrics_file(&self) -> PathBuf {
        self.state_dir().join("metrics.prom")
    }
    /// The running daemon's record (PID, settings, heartbeat).
    pub fn daemon_record(&self) -> PathBuf {
        self.state_dir().join("daemon.json")
    }
    /// Where a stream's self-heal attempt records go.
    pub fn self_heal_dir(&self, id: &StreamId) -> PathBuf {
        self.state_dir().join("self_heal").join(id.as_str())
    }
    pub fn daemon_lock(&self) -> PathBuf {
        self.state_dir().join("daemon.lock")
    }
    pub fn pid_file(&self, id: &StreamId) -> PathBuf {
        self.pids_dir().join(format!("{id}.pid"))
    }
    /// `logs/<stream>_<first 8 chars of the initiative id>.log`, as the wrapper writes it.
    pub fn log_file(&self, id: &StreamId, initiative_id: &str) -> PathBuf {
        let init8: String = initiative_id.chars().take(8).collect();
        self.logs_dir().join(format!("{id}_{init8}.log"))
    }
    pub fn stream_lock(&self, id: &StreamId) -> PathBuf {
        self.locks_dir().join(format!("{id}.lock"))
    }
    /// Stream `main` works in the project root; every other stream in its worktree.
    pub fn work_dir(&self, id: &StreamId) -> PathBuf {
        if id.as_str() == "main" {
            self.project_root.clone()
        } else {
            self.project_root
                .join(".claude")
                .join("worktrees")
                .join(id.as_str())
        }
    }
}

fn orch_of_binary(exe: &Path) -> Option<PathBuf> {
    let dir = exe.parent()?;
    let is_orch = dir.file_name()? == "orchestrator" && dir.parent()?.file_name()? == ".claude";
    is_orch.then(|| dir.to_path_buf())
}

fn search_upward(cwd: &Path) -> Option<PathBuf> {
    cwd.ancestors()
        .map(|dir| dir.join(".claude").join("orchestrator"))
        .find(|candidate| candidate.is_dir())
}

/// A stream id that is safe to use as a file-name component.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(String);

pub const MAX_STREAM_ID_BYTES: usize = 128;

impl StreamId {
    /// Accepts an id only if it can never escape `pids/`, `logs/` or the
    /// worktrees dir and never reads as an option when passed as an argument.
    pub fn parse(raw: &str) -> Result<StreamId, String> {
        match Self::problem_of(raw) {
            Some(p) => Err(p),
            None => Ok(StreamId(raw.to_string())),
        }
    }

    /// [`StreamId::parse`] of a string the caller gives up: a valid id keeps
    /// its allocation (10 000 streams are resolved every database read).
    pub fn from_string(raw: String) -> Result<StreamId, (String, String)> {
        match Self::problem_of(&raw) {
            Some(p) => Err((raw, p)),
            None => Ok(StreamId(raw)),
        }
    }

    fn problem_of(raw: &str) -> Option<String> {
        if raw.is_empty() {
            Some("it is empty".to_string())
        } else if raw.len() > MAX_STREAM_ID_BYTES {
            Some(format!(
                "it is {} bytes long (at most {MAX_STREAM_ID_BYTES})",
                raw.len()
            ))
        } else if raw.contains('/') || raw.contains('\\') {
            Some("it contains a path separator".to_string())
        } else if raw.contains("..") {
            Some("it contains '..'".to_string())
        } else if raw.contains('\0') {
            Some("it contains a NUL byte".to_string())
        } else if raw.chars().any(char::is_control) {
            Some("it contains a control character".to_string())
        } else if raw.starts_with('-') {
            Some("it starts with '-'".to_string())
        } else if raw.starts_with('.') {
            Some("it starts with '.'".to_string())
        } else {
            None
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Shows a rejected raw id safely in one log line.
pub fn quote_raw_id(raw: &str) -> String {
    let shown: String = raw.chars().take(60).collect();
    let mut out = format!("{shown:?}");
    if raw.chars().count() > 60 {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_table() {
        let long = "a".repeat(129);
        let max = "a".repeat(128);
        let cases: &[(&str, bool)] = &[
            ("Stream-A", true),
            ("main", true),
            ("stream_1.2", true),
            ("Stream A", true),
            (max.as_str(), true),
            ("", false),
            ("../../evil", false),
            ("a/b", false),
            ("a\\b", false),
            ("..", false),
            (".", false),
            (".hidden", false),
            ("a..b", false),
            ("-rf", false),
            ("nul\0byte", false),
            ("new\nline", false),
            ("esc\x1b[31m", false),
            (long.as_str(), false),
        ];
        for (raw, ok) in cases {
            assert_eq!(StreamId::parse(raw).is_ok(), *ok, "{raw:?}");
        }
    }

    #[test]
    fn discovery_prefers_binary_location_then_cwd() {
        let tmp = std::env::temp_dir().join(format!("mw-layout-{}", std::process::id()));
        let orch = tmp.join("proj").join(".claude").join("orchestrator");
        std::fs::create_dir_all(orch.join("pids")).unwrap();
        let home = Path::new("/home/someone");
        let from_cwd = Layout::discover(
            &PathOverrides::default(),
            &orch.join("pids"),
            None,
            Some(home),
        )
        .unwrap();
        assert_eq!(from_cwd.workspace_id, "proj");
        assert_eq!(from_cwd.tasks_db, home.join(".claude/tasks/proj/tasks.db"));
        let exe = orch.join("monitor-workers");
        let from_exe = Layout::discover(
            &PathOverrides::default(),
            Path::new("/"),
            Some(&exe),
            Some(home),
        )
        .unwrap();
        assert_eq!(from_exe.orch, orch.canonicalize().unwrap());
        let none = Layout::discover(&PathOverrides::default(), Path::new("/"), None, Some(home));
        assert!(matches!(none, Err(LayoutError::NotFound { .. })));
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
