//! Making a project: the temp dir with `$HOME`, the project root and the fake
//! `claude`; the tasks and memory databases in the real schemas, filled with
//! initiatives, PRDs and streams; the worker files the monitor reads (PID
//! files, worker logs), the config file and the worker wrapper.

use std::cell::{Cell, RefCell};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rusqlite::Connection;

use super::{TestProject, INIT, INIT8, MANIFEST};

pub const TASKS_SCHEMA: &str = "
CREATE TABLE prds  (id TEXT PRIMARY KEY, initiative_id TEXT NOT NULL, title TEXT NOT NULL,
                    description TEXT, content TEXT NOT NULL, metadata TEXT DEFAULT '{}',
                    status TEXT DEFAULT 'active', created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE tasks (id TEXT PRIMARY KEY, prd_id TEXT, parent_id TEXT, title TEXT NOT NULL,
                    description TEXT, assigned_agent TEXT,
                    status TEXT DEFAULT 'pending' CHECK(status IN ('pending','in_progress','blocked','completed','cancelled')),
                    blocked_reason TEXT, notes TEXT, metadata TEXT DEFAULT '{}',
                    created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
                    archived INTEGER DEFAULT 0, archived_at TEXT DEFAULT NULL,
                    archived_by_initiative_id TEXT DEFAULT NULL);
";

pub const MEMORY_SCHEMA: &str = "
CREATE TABLE initiatives (id TEXT PRIMARY KEY, project_id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
                          goal TEXT, status TEXT DEFAULT 'IN PROGRESS'
                          CHECK(status IN ('NOT STARTED','IN PROGRESS','BLOCKED','READY FOR REVIEW','COMPLETE')),
                          created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
";

impl TestProject {
    /// A project with the active initiative [`INIT`] and no streams.
    pub fn new() -> TestProject {
        let p = TestProject::bare();
        p.initiative(INIT, "IN PROGRESS", "2024-05-01T10:00:00");
        p
    }

    /// A project with empty databases (schemas only).
    pub fn bare() -> TestProject {
        let tmp = tempfile::Builder::new()
            .prefix("mw-it-")
            .tempdir()
            .expect("temp dir");
        let root = tmp.path().canonicalize().expect("canonical temp dir");
        let home = root.join("home");
        let proj = root.join("proj");
        let orch = proj.join(".claude").join("orchestrator");
        let bin_dir = root.join("bin");
        for dir in [
            orch.join("pids"),
            orch.join("logs"),
            bin_dir.clone(),
            home.clone(),
        ] {
            fs::create_dir_all(&dir).unwrap();
        }
        let wrapper = orch.join("worker-wrapper.sh");
        fs::copy(
            Path::new(MANIFEST).join("templates/worker-wrapper.sh"),
            &wrapper,
        )
        .unwrap();
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(
            Path::new(MANIFEST).join("scripts/fake-claude"),
            bin_dir.join("claude"),
        )
        .unwrap();

        let p = TestProject {
            root,
            home,
            proj,
            orch,
            bin_dir,
            env: RefCell::new(Vec::new()),
            children: RefCell::new(Vec::new()),
            next_id: Cell::new(1),
            log_on_panic: Cell::new(true),
            _tmp: tmp,
        };
        fs::create_dir_all(p.tasks_db().parent().unwrap()).unwrap();
        fs::create_dir_all(p.memory_db().parent().unwrap()).unwrap();
        p.tasks_conn().execute_batch(TASKS_SCHEMA).unwrap();
        p.memory_conn().execute_batch(MEMORY_SCHEMA).unwrap();
        p
    }

    // ----- paths -------------------------------------------------------

    pub fn tasks_db(&self) -> PathBuf {
        self.home.join(".claude/tasks/proj/tasks.db")
    }
    pub fn memory_db(&self) -> PathBuf {
        self.home.join(".claude/memory/proj/memory.db")
    }
    pub fn pids_dir(&self) -> PathBuf {
        self.orch.join("pids")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.orch.join("logs")
    }
    pub fn wrapper(&self) -> PathBuf {
        self.orch.join("worker-wrapper.sh")
    }
    /// The JSON state file of earlier versions (migrated by the first check).
    pub fn legacy_state_file(&self) -> PathBuf {
        self.orch.join("state").join("monitor-state.json")
    }
    /// The state database.
    pub fn state_db(&self) -> PathBuf {
        self.orch.join("state").join("monitor.db")
    }
    pub fn pid_path(&self, stream: &str) -> PathBuf {
        self.pids_dir().join(format!("{stream}.pid"))
    }
    pub fn log_path(&self, stream: &str) -> PathBuf {
        self.logs_dir().join(format!("{stream}_{INIT8}.log"))
    }
    pub fn work_dir(&self, stream: &str) -> PathBuf {
        if stream == "main" {
            self.proj.clone()
        } else {
            self.proj.join(".claude/worktrees").join(stream)
        }
    }

    // ----- databases ---------------------------------------------------

    pub fn tasks_conn(&self) -> Connection {
        Connection::open(self.tasks_db()).unwrap()
    }
    pub fn memory_conn(&self) -> Connection {
        Connection::open(self.memory_db()).unwrap()
    }

    /// A fresh number for names unique within the project (tasks, daemon output files).
    pub(super) fn next(&self) -> u32 {
        let n = self.next_id.get();
        self.next_id.set(n + 1);
        n
    }

    pub fn initiative(&self, id: &str, status: &str, created_at: &str) {
        self.memory_conn()
            .execute(
                "INSERT INTO initiatives (id, project_id, name, goal, status, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, 'ship it', ?4, ?5, ?5)",
                rusqlite::params![id, format!("proj-{id}"), format!("Initiative {id}"), status, created_at],
            )
            .unwrap();
    }

    /// The PRD of an initiative (created on first use).
    pub fn ensure_prd(&self, initiative: &str) -> String {
        let id = format!("prd-{initiative}");
        self.tasks_conn()
            .execute(
                "INSERT OR IGNORE INTO prds (id, initiative_id, title, content, created_at, updated_at) \
                 VALUES (?1, ?2, 'PRD', 'content', '2024-05-01T10:00:00', '2024-05-01T10:00:00')",
                rusqlite::params![id, initiative],
            )
            .unwrap();
        id
    }

    /// A stream of the active initiative [`INIT`]: one task per status.
    pub fn stream(&self, id: &str, statuses: &[&str], deps: &[&str]) {
        self.stream_in(INIT, id, statuses, deps);
    }

    pub fn stream_in(&self, initiative: &str, id: &str, statuses: &[&str], deps: &[&str]) {
        let metadata = serde_json::json!({"streamId": id, "streamName": format!("{id} name"), "dependencies": deps});
        for status in statuses {
            self.raw_task(initiative, status, Some(&metadata.to_string()));
        }
    }

    /// One task with whatever metadata text (or NULL) the test wants.
    pub fn raw_task(&self, initiative: &str, status: &str, metadata: Option<&str>) -> String {
        let prd = self.ensure_prd(initiative);
        let id = format!("task-{}", self.next());
        self.tasks_conn()
            .execute(
                "INSERT INTO tasks (id, prd_id, title, status, metadata, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, '2024-05-01T10:00:00', '2024-05-01T10:00:00')",
                rusqlite::params![id, prd, format!("Task {id}"), status, metadata],
            )
            .unwrap();
        id
    }

    /// A stream that should be reported dead: open tasks, a log of more than
    /// 100 bytes, no PID file.
    pub fn dead_stream(&self, id: &str) {
        self.stream(id, &["completed", "pending", "pending"], &[]);
        self.evidence_log(id);
    }

    // ----- worker files ------------------------------------------------

    pub fn write_log(&self, stream: &str, bytes: &[u8]) {
        fs::write(self.log_path(stream), bytes).unwrap();
    }

    /// A log of about 200 bytes: evidence that the stream's worker ran.
    pub fn evidence_log(&self, stream: &str) {
        let mut text = String::new();
        while text.len() <= 200 {
            text.push_str("earlier run of the worker: some output line\n");
        }
        self.write_log(stream, text.as_bytes());
    }

    pub fn write_pid_file(&self, stream: &str, text: &str) {
        fs::write(self.pid_path(stream), text).unwrap();
    }

    pub fn read_pid_file(&self, stream: &str) -> Option<u32> {
        fs::read_to_string(self.pid_path(stream))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn set_mtime(&self, path: &Path, when: SystemTime) {
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    // ----- config and the AI CLI ---------------------------------------

    /// Writes `<ORCH>/monitor.toml`.
    pub fn write_config(&self, text: &str) {
        fs::write(self.orch.join("monitor.toml"), text).unwrap();
    }

    /// Replaces the fake `claude` on PATH with a script of the test's own.
    pub fn install_claude_script(&self, body: &str) {
        let path = self.bin_dir.join("claude");
        let _ = fs::remove_file(&path);
        fs::write(&path, format!("#!/usr/bin/env bash\n{body}")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
}
