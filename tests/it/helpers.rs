//! The test bench: a throw-away project with real SQLite databases in the
//! real schemas, the real worker wrapper, a fake `claude` on PATH, and a
//! guard that kills every process the test caused, even on panic.
//!
//! Every process a test starts carries `MW_TEST_TAG=<the test's temp dir>` in
//! its environment (inherited by the monitor, the wrappers it spawns and the
//! fake workers). That tag is how the guard proves a process is the test's own
//! before it signals it.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{getpgid, getpgrp, Pid};
use rusqlite::Connection;
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_monitor-workers");
pub const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// The active initiative every project starts with.
pub const INIT: &str = "3f2a9c1e-7b4d-4e8a-9c6f-1d2e3f4a5b6c";
pub const INIT8: &str = "3f2a9c1e";
/// An older initiative, for tests that need two.
pub const OLD_INIT: &str = "0b1c2d3e-4f50-4a61-8b72-93a4b5c6d7e8";

/// How long a test waits for something that should happen promptly.
pub const SOON: Duration = Duration::from_secs(15);

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

/// Polls `cond` every 25 ms until it holds or `timeout` passes.
pub fn wait_for(mut cond: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The outcome of one monitor run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Asserts the exit code, showing everything the run said otherwise.
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "unexpected exit code\n--- stdout\n{}--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn stdout_has(&self, what: &str) -> &Run {
        assert!(
            self.stdout.contains(what),
            "stdout lacks {what:?}\n--- stdout\n{}--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
    pub fn stdout_lacks(&self, what: &str) -> &Run {
        assert!(
            !self.stdout.contains(what),
            "stdout has {what:?}\n--- stdout\n{}--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
    pub fn stderr_has(&self, what: &str) -> &Run {
        assert!(
            self.stderr.contains(what),
            "stderr lacks {what:?}\n--- stdout\n{}--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
    /// No panic message, no backtrace.
    pub fn no_panic(&self) -> &Run {
        for text in [&self.stdout, &self.stderr] {
            assert!(
                !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
                "the run panicked:\n{text}"
            );
        }
        self
    }
}

/// A daemon started in the background; its stdout and stderr go to files.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub pid: u32,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Daemon {
    pub fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }
    pub fn stdout_text(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }
}

/// One throw-away project: `<tmp>/home` is $HOME, `<tmp>/proj` the project
/// root (workspace id "proj"), `<tmp>/bin/claude` the fake AI CLI.
pub struct TestProject {
    pub root: PathBuf,
    pub home: PathBuf,
    pub proj: PathBuf,
    pub orch: PathBuf,
    pub bin_dir: PathBuf,
    env: RefCell<Vec<(String, String)>>,
    children: RefCell<Vec<Child>>,
    next_id: Cell<u32>,
    /// Print all of monitor.log when the test panics (tests that print their own tail turn it off).
    log_on_panic: Cell<bool>,
    _tmp: TempDir,
}

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
    pub fn state_file(&self) -> PathBuf {
        self.orch.join("state").join("monitor-state.json")
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

    fn next(&self) -> u32 {
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

    // ----- running things ----------------------------------------------

    /// An environment variable for every command this project runs.
    pub fn set_env(&self, key: &str, value: &str) {
        self.env
            .borrow_mut()
            .push((key.to_string(), value.to_string()));
    }

    /// A command with the test's environment: no `MONITOR_WORKERS_*` (nor
    /// fake-claude settings) from outside, `$HOME` the temp home, the fake
    /// `claude` first on PATH, NO_COLOR, and the tag.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("MONITOR_WORKERS_")
                || k.starts_with("FAKE_CLAUDE_")
                || k == "WORKER_HEARTBEAT_INTERVAL"
            {
                cmd.env_remove(&key);
            }
        }
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        cmd.env("HOME", &self.home)
            .env("PATH", format!("{}:{path}", self.bin_dir.display()))
            .env("NO_COLOR", "1")
            .env("MW_TEST_TAG", &self.root)
            .env("FAKE_CLAUDE_LIFETIME", "60")
            .env("FAKE_CLAUDE_TICK", "1")
            .current_dir(&self.proj);
        for (k, v) in self.env.borrow().iter() {
            cmd.env(k, v);
        }
        cmd
    }

    /// The monitor, as a std command, run from the project root.
    pub fn monitor_std(&self) -> Command {
        self.command(BIN)
    }

    /// The monitor, ready for assert_cmd.
    pub fn monitor(&self) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::from_std(self.monitor_std());
        cmd.timeout(Duration::from_secs(60));
        cmd
    }

    /// Runs the monitor to its end with these arguments, from `cwd` (default: the project root).
    pub fn run_in(&self, cwd: &Path, args: &[&str]) -> Run {
        let mut cmd = self.monitor();
        cmd.current_dir(cwd).args(args);
        let start = Instant::now();
        let out = cmd.output().expect("monitor runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: start.elapsed(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_in(&self.proj.clone(), args)
    }

    /// Spawns a command the test owns (killed and reaped at the end).
    pub fn spawn(&self, mut cmd: Command) -> u32 {
        let child = cmd.spawn().expect("spawn");
        let pid = child.id();
        self.children.borrow_mut().push(child);
        pid
    }

    /// A live process that is not a worker.
    pub fn spawn_sleep(&self, secs: u32) -> u32 {
        let mut cmd = self.command("sleep");
        cmd.arg(secs.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.spawn(cmd)
    }

    /// Starts a worker for `stream` through the real wrapper, as the
    /// orchestrator would (own process group), and waits for its PID file.
    pub fn spawn_worker_process(&self, stream: &str) -> u32 {
        self.spawn_worker_in_group(stream, &[], 0)
    }

    /// The real wrapper with its six arguments for `stream`, as the
    /// orchestrator runs it, in process group `group` (0: its own).
    fn wrapper_command(&self, stream: &str, env: &[(&str, &str)], group: i32) -> Command {
        let mut cmd = self.command(self.wrapper());
        cmd.arg(stream)
            .arg(self.pid_path(stream))
            .arg(self.logs_dir())
            .arg(self.work_dir(stream))
            .arg(INIT)
            .arg(format!("You are the worker for stream {stream}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(group);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts the monitor in the background (a daemon).
    pub fn spawn_daemon(&self, args: &[&str]) -> Daemon {
        let n = self.next();
        let stdout = self.root.join(format!("daemon-{n}.out"));
        let stderr = self.root.join(format!("daemon-{n}.err"));
        let mut cmd = self.monitor_std();
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap());
        let pid = self.spawn(cmd);
        Daemon {
            pid,
            stdout,
            stderr,
        }
    }

    /// Waits for a process this test spawned to exit; reaps it.
    pub fn wait_exit(&self, pid: u32, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_for(
            || {
                let mut children = self.children.borrow_mut();
                let child = children
                    .iter_mut()
                    .find(|c| c.id() == pid)
                    .expect("not a child of this test");
                status = child.try_wait().ok().flatten();
                status.is_some()
            },
            timeout,
        );
        status
    }

    /// Signals a process after proving it is this test's own.
    pub fn signal_ours(&self, pid: u32, signal: Signal) {
        assert!(
            self.has_tag(pid),
            "refusing to signal PID {pid}: not this test's process"
        );
        kill(Pid::from_raw(pid as i32), signal).unwrap();
    }

    /// Whether the process carries this test's tag.
    pub fn has_tag(&self, pid: u32) -> bool {
        let want = format!("MW_TEST_TAG={}", self.root.display());
        match fs::read(format!("/proc/{pid}/environ")) {
            Ok(env) => env.split(|b| *b == 0).any(|e| e == want.as_bytes()),
            Err(_) => false,
        }
    }

    fn tagged_pids(&self) -> Vec<u32> {
        let me = std::process::id();
        let Ok(dir) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| *pid != me && self.has_tag(*pid))
            .collect()
    }

    /// Top-level wrapper processes (not the wrapper's own subshells) running
    /// for `stream` in this project.
    pub fn live_wrappers(&self, stream: &str) -> Vec<u32> {
        let wrapper = self.wrapper().display().to_string();
        let Ok(dir) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        // The wrapper leads its process group; its subshells (the heartbeat
        // loop, which outlives a wrapper killed with SIGKILL for a while)
        // share its command line but not its leadership.
        dir.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| is_alive(*pid) && proc_pgrp(*pid) == Some(*pid))
            .filter(|pid| {
                let args = proc_cmdline(*pid);
                args.contains(&wrapper) && args.iter().any(|a| a == stream)
            })
            .collect()
    }

    // ----- what the monitor wrote -------------------------------------

    /// Whether a panicking test prints all of monitor.log (default: yes).
    pub fn set_log_on_panic(&self, on: bool) {
        self.log_on_panic.set(on);
    }

    pub fn monitor_log(&self) -> String {
        fs::read_to_string(self.logs_dir().join("monitor.log")).unwrap_or_default()
    }

    pub fn count_in_log(&self, what: &str) -> usize {
        self.monitor_log()
            .lines()
            .filter(|l| l.contains(what))
            .count()
    }

    pub fn wait_log(&self, what: &str, timeout: Duration) -> bool {
        wait_for(|| self.monitor_log().contains(what), timeout)
    }

    pub fn state_json(&self) -> serde_json::Value {
        match fs::read_to_string(self.state_file()) {
            Ok(text) => serde_json::from_str(&text).expect("state file is JSON"),
            Err(_) => serde_json::Value::Null,
        }
    }

    /// Every path under the temp dir (files and directories, symlinks not followed).
    pub fn snapshot(&self) -> BTreeSet<PathBuf> {
        fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            for e in entries.filter_map(Result::ok) {
                let path = e.path();
                out.insert(path.clone());
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    walk(&path, out);
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&self.root, &mut out);
        out
    }

    /// Kills the process groups named in pids/ and every tagged process;
    /// reaps the test's own children.
    fn kill_everything(&self) {
        let own_group = getpgrp();
        if let Ok(entries) = fs::read_dir(self.pids_dir()) {
            for e in entries.filter_map(Result::ok) {
                let Some(pid) = fs::read_to_string(e.path())
                    .ok()
                    .and_then(|t| t.trim().parse::<i32>().ok())
                else {
                    continue;
                };
                if pid <= 1 || !self.has_tag(pid as u32) {
                    continue;
                }
                if let Ok(group) = getpgid(Some(Pid::from_raw(pid))) {
                    if group != own_group && group.as_raw() > 1 {
                        let _ = killpg(group, Signal::SIGKILL);
                    }
                }
            }
        }
        for _ in 0..100 {
            let left = self.tagged_pids();
            if left.is_empty() {
                break;
            }
            for pid in left {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for child in self.children.borrow_mut().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestProject {
    fn drop(&mut self) {
        if std::thread::panicking() && self.log_on_panic.get() {
            eprintln!("--- monitor.log of the failed test\n{}", self.monitor_log());
        }
        self.kill_everything();
    }
}

// ----- /proc --------------------------------------------------------------

/// The state letter of a process (`R`, `S`, `Z`, ...), `None` if it is gone.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

fn stat_field(pid: u32, n: usize) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(n)?.parse().ok()
}

pub fn proc_ppid(pid: u32) -> Option<u32> {
    stat_field(pid, 1)
}

pub fn proc_pgrp(pid: u32) -> Option<u32> {
    stat_field(pid, 2)
}

/// Exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    matches!(proc_state(pid), Some(s) if s != 'Z' && s != 'X')
}

pub fn proc_cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn pid_max() -> u64 {
    fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The PID in "Worker <s> restarted (PID: <pid>)".
pub fn restarted_pid(text: &str, stream: &str) -> Option<u32> {
    let marker = format!("Worker {stream} restarted (PID: ");
    let at = text.rfind(&marker)? + marker.len();
    text[at..].split(')').next()?.trim().parse().ok()
}

/// Checks the shape `[YYYY-MM-DDTHH:MM:SS.ffffff] [LEVEL] message`.
pub fn is_log_line(line: &str) -> bool {
    let b = line.as_bytes();
    if b.len() < 30 || b[0] != b'[' || &line[27..30] != "] [" {
        return false;
    }
    let ts = &line[1..27];
    let shape_ok = ts.char_indices().all(|(i, c)| match i {
        4 | 7 => c == '-',
        10 => c == 'T',
        13 | 16 => c == ':',
        19 => c == '.',
        _ => c.is_ascii_digit(),
    });
    let rest = &line[30..];
    shape_ok
        && ["INFO] ", "SUCCESS] ", "WARNING] ", "ERROR] "]
            .iter()
            .any(|level| rest.starts_with(level) && rest.len() > level.len())
}

// ----- supervision and probe tests ------------------------------------------

/// A `monitor.log` timestamp (local time, microseconds).
pub type LogTime = chrono::NaiveDateTime;

/// Seconds from `a` to `b`.
pub fn secs_between(a: LogTime, b: LogTime) -> f64 {
    (b - a).num_microseconds().unwrap() as f64 / 1e6
}

/// A log timestamp as ms since the epoch (the timestamps are local time).
pub fn log_time_ms(t: LogTime) -> u64 {
    use chrono::TimeZone;
    chrono::Local
        .from_local_datetime(&t)
        .earliest()
        .expect("a valid local time")
        .timestamp_millis() as u64
}

/// Every live process below `pid` (through the parent chain, whatever their
/// process group or session).
pub fn descendants(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let all: Vec<(u32, u32)> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, proc_ppid(p)?)))
        .collect();
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for (child, _) in all.iter().filter(|(_, pp)| *pp == parent) {
            if is_alive(*child) && !found.contains(child) {
                found.push(*child);
                queue.push(*child);
            }
        }
    }
    found
}

/// The session id of a process.
pub fn proc_session(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(3)?.parse().ok()
}

/// The PID in "... (PID <pid>)" or "(PID: <pid>)" after `marker` (last occurrence).
pub fn pid_after(text: &str, marker: &str) -> Option<u32> {
    let at = text.rfind(marker)? + marker.len();
    let digits: String = text[at..]
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl TestProject {
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

    /// Like [`spawn_worker_process`], with extra environment for this worker only.
    pub fn spawn_worker_with(&self, stream: &str, env: &[(&str, &str)]) -> u32 {
        self.spawn_worker_in_group(stream, env, 0)
    }

    /// A worker in process group `group` (0: a group of its own), so one
    /// signal to the group reaches several workers at once.
    pub fn spawn_worker_in_group(&self, stream: &str, env: &[(&str, &str)], group: i32) -> u32 {
        let pid = self.spawn(self.wrapper_command(stream, env, group));
        assert!(
            wait_for(|| self.read_pid_file(stream) == Some(pid), SOON),
            "worker {stream} wrote no PID file"
        );
        pid
    }

    /// Runs a worker for `stream` through the real wrapper to its end (for
    /// workers that exit by themselves), leaving its log and exit line.
    pub fn run_worker_to_end(&self, stream: &str, env: &[(&str, &str)]) -> ExitStatus {
        let pid = self.spawn(self.wrapper_command(stream, env, 0));
        self.wait_exit(pid, Duration::from_secs(30))
            .expect("the worker ends by itself")
    }

    /// Signals the process group led by `leader` after proving the leader is
    /// this test's own and leads its own group (never the test's group).
    pub fn signal_group_ours(&self, leader: u32, signal: Signal) {
        assert!(
            self.has_tag(leader),
            "refusing to signal group {leader}: not this test's process"
        );
        assert_eq!(
            proc_pgrp(leader),
            Some(leader),
            "{leader} does not lead a group"
        );
        assert_ne!(getpgrp().as_raw() as u32, leader, "the test's own group");
        killpg(Pid::from_raw(leader as i32), signal).unwrap();
    }

    /// Timestamps of the monitor.log lines containing `what`, in order.
    pub fn log_times(&self, what: &str) -> Vec<LogTime> {
        self.monitor_log()
            .lines()
            .filter(|l| l.contains(what))
            .map(|l| {
                chrono::NaiveDateTime::parse_from_str(&l[1..27], "%Y-%m-%dT%H:%M:%S%.f")
                    .unwrap_or_else(|e| panic!("bad timestamp in {l:?}: {e}"))
            })
            .collect()
    }

    /// `logs/events.jsonl`, every line parsed (a line that is not JSON fails the test).
    pub fn events(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.logs_dir().join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("events.jsonl line is not JSON ({e}): {l:?}"))
            })
            .collect()
    }

    /// `status --json`, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        let r = self.run(&["status", "--json"]);
        r.expect_code(0).no_panic();
        serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{}", r.stdout))
    }

    /// One stream's entry of `status --json` (Null when absent).
    pub fn stream_status(&self, stream: &str) -> serde_json::Value {
        self.status_json()["streams"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["id"] == stream).cloned())
            .unwrap_or(serde_json::Value::Null)
    }

    /// `state/daemon.json`, parsed (Null when absent or half written).
    pub fn daemon_record(&self) -> serde_json::Value {
        fs::read_to_string(self.orch.join("state/daemon.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Sends SIGTERM to a daemon this test spawned and waits for its clean exit.
    pub fn stop_daemon(&self, d: &Daemon) {
        self.signal_ours(d.pid, Signal::SIGTERM);
        let status = self
            .wait_exit(d.pid, SOON)
            .expect("the daemon ends on SIGTERM");
        assert_eq!(
            status.code(),
            Some(0),
            "daemon exit: {status:?}\nstderr: {}",
            d.stderr_text()
        );
    }
}
