//! The current Task Copilot (`tc`) schema, `<project>/.copilot/tasks.db`
//! (SPEC 3.8): detection, dead streams found and restarted, dependencies
//! across streams honoured, and `status` naming the schema in use. Every
//! project here also has the legacy databases with an active initiative, so
//! the tests prove the tc database wins when it exists.

use std::fs;
use std::path::PathBuf;

use rusqlite::Connection;

use crate::helpers::*;

/// The tc schema as a Task Copilot install creates it (the tables and columns
/// that matter, and some that do not).
pub const TC_SCHEMA: &str = "
CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT DEFAULT (datetime('now')));
CREATE TABLE prds (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL, description TEXT, content TEXT,
                   status TEXT NOT NULL DEFAULT 'active' CHECK(status IN ('active', 'completed', 'archived')),
                   created_at TEXT NOT NULL DEFAULT (datetime('now')), updated_at TEXT NOT NULL DEFAULT (datetime('now')));
CREATE TABLE streams (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, prd_id INTEGER REFERENCES prds(id),
                      status TEXT NOT NULL DEFAULT 'active' CHECK(status IN ('active', 'paused', 'completed', 'archived')),
                      worktree_path TEXT,
                      created_at TEXT NOT NULL DEFAULT (datetime('now')), updated_at TEXT NOT NULL DEFAULT (datetime('now')));
CREATE TABLE tasks (id INTEGER PRIMARY KEY AUTOINCREMENT, prd_id INTEGER REFERENCES prds(id),
                    stream_id INTEGER REFERENCES streams(id), title TEXT NOT NULL, description TEXT,
                    status TEXT NOT NULL DEFAULT 'pending' CHECK(status IN ('pending', 'in_progress', 'completed', 'blocked', 'cancelled')),
                    agent TEXT, claimed_by TEXT, claimed_at TEXT,
                    priority INTEGER NOT NULL DEFAULT 2 CHECK(priority BETWEEN 0 AND 3),
                    parent_task_id INTEGER REFERENCES tasks(id), metadata TEXT,
                    created_at TEXT NOT NULL DEFAULT (datetime('now')), updated_at TEXT NOT NULL DEFAULT (datetime('now')));
CREATE TABLE task_dependencies (task_id INTEGER NOT NULL REFERENCES tasks(id), depends_on INTEGER NOT NULL REFERENCES tasks(id),
                                PRIMARY KEY (task_id, depends_on), CHECK(task_id != depends_on));
CREATE TABLE agent_log (id INTEGER PRIMARY KEY AUTOINCREMENT, agent TEXT NOT NULL, stream_id INTEGER REFERENCES streams(id),
                        task_id INTEGER REFERENCES tasks(id), action TEXT NOT NULL, details TEXT,
                        created_at TEXT NOT NULL DEFAULT (datetime('now')));
CREATE INDEX idx_tasks_stream ON tasks(stream_id);
INSERT INTO schema_version (version) VALUES (1);
";

/// How long a test waits for something that should happen promptly.
const WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The initiative id the monitor synthesises for a tc project: the
/// workspace id, i.e. the project folder's name.
pub const TC_INIT: &str = "proj";

/// A tc database at `<project>/.copilot/tasks.db` (or anywhere).
pub struct TcDb {
    pub path: PathBuf,
}

impl TcDb {
    /// The project's tc database, created with the schema.
    pub fn create(p: &TestProject) -> TcDb {
        TcDb::create_at(p.proj.join(".copilot").join("tasks.db"))
    }

    pub fn create_at(path: PathBuf) -> TcDb {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        Connection::open(&path)
            .unwrap()
            .execute_batch(TC_SCHEMA)
            .unwrap();
        TcDb { path }
    }

    pub fn conn(&self) -> Connection {
        let conn = Connection::open(&self.path).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        conn
    }

    pub fn prd(&self, title: &str, status: &str) -> i64 {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO prds (title, content, status) VALUES (?1, 'content', ?2)",
            rusqlite::params![title, status],
        )
        .unwrap();
        conn.last_insert_rowid()
    }

    pub fn stream(&self, name: &str, prd: Option<i64>, status: &str) -> i64 {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO streams (name, prd_id, status, worktree_path) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![name, prd, status, format!(".claude/worktrees/{name}")],
        )
        .unwrap();
        conn.last_insert_rowid()
    }

    /// A task of a stream, last updated at `updated_at` (SQLite's format).
    pub fn task_at(&self, stream: i64, status: &str, updated_at: &str) -> i64 {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO tasks (stream_id, title, status, claimed_by, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, '2024-05-01 10:00:00', ?5)",
            rusqlite::params![
                stream,
                format!("task of stream {stream}"),
                status,
                (status == "in_progress").then_some("worker-1"),
                updated_at
            ],
        )
        .unwrap();
        conn.last_insert_rowid()
    }

    pub fn task(&self, stream: i64, status: &str) -> i64 {
        self.task_at(stream, status, "2024-05-01 10:00:00")
    }

    pub fn depends(&self, task: i64, on: i64) {
        self.conn()
            .execute(
                "INSERT INTO task_dependencies (task_id, depends_on) VALUES (?1, ?2)",
                [task, on],
            )
            .unwrap();
    }

    pub fn set_status(&self, task: i64, status: &str) {
        self.conn()
            .execute(
                "UPDATE tasks SET status = ?1, updated_at = datetime('now') WHERE id = ?2",
                rusqlite::params![status, task],
            )
            .unwrap();
    }

    /// (status, updated_at, claimed_by) of a task.
    pub fn task_row(&self, task: i64) -> (String, String, Option<String>) {
        self.conn()
            .query_row(
                "SELECT status, updated_at, claimed_by FROM tasks WHERE id = ?1",
                [task],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
    }
}

/// The log path of a tc stream: `<id>_<first 8 chars of the workspace id>.log`.
pub fn tc_log(p: &TestProject, stream: i64) -> PathBuf {
    let init8: String = TC_INIT.chars().take(8).collect();
    p.logs_dir().join(format!("{stream}_{init8}.log"))
}

/// Evidence that a tc stream's worker ran: a log of more than 100 bytes.
pub fn tc_evidence_log(p: &TestProject, stream: i64) {
    fs::write(
        tc_log(p, stream),
        "earlier run of the worker: some output line\n".repeat(5),
    )
    .unwrap();
}

fn status_json(p: &TestProject, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["status", "--json"];
    all.extend_from_slice(args);
    let r = p.run(&all);
    r.expect_code(0).no_panic();
    serde_json::from_str(&r.stdout).expect("status --json prints JSON")
}

fn stream_json<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no stream {id} in {report:#}"))
}

/// A dead tc stream is found and restarted through the wrapper (when the
/// project picks that launcher), in the stream's git worktree; the wrapper
/// gets the workspace id as its initiative id (so the log names match).
#[test]
fn dead_tc_stream_is_found_and_restarted() {
    let p = TestProject::new();
    crate::tc_sessions::git_repository(&p.proj);
    p.write_config("[workers]\nlauncher = \"wrapper\"\n");
    // A legacy stream that would be dead: the tc database must win.
    p.dead_stream("legacy-stream");
    let tc = TcDb::create(&p);
    let prd = tc.prd("Checkout rewrite", "active");
    let api = tc.stream("api", Some(prd), "active");
    tc.task(api, "completed");
    tc.task(api, "pending");
    tc_evidence_log(&p, api);
    let done = tc.stream("docs", Some(prd), "active");
    tc.task(done, "completed");
    tc.task(done, "cancelled");
    tc_evidence_log(&p, done);

    let r = p.run(&["--auto-restart"]);
    let id = api.to_string();
    r.expect_code(1)
        .stdout_has(&format!("Found 1 dead worker(s): {id}"))
        .stdout_has(&format!("Restarting worker {id} (attempt 1/2)"))
        .stdout_lacks("legacy-stream")
        .no_panic();
    let pid = restarted_pid(&r.stdout, &id).expect("restarted PID");
    assert!(is_alive(pid), "the restarted worker runs");
    assert_eq!(p.read_pid_file(&id), Some(pid));
    assert!(p.has_tag(pid));
    assert!(
        proc_cmdline(pid).iter().any(|a| a == TC_INIT),
        "the wrapper gets the workspace id as initiative id: {:?}",
        proc_cmdline(pid)
    );
    let work_dir = p.proj.join(".worktrees").join(&id);
    assert!(
        proc_cmdline(pid).contains(&work_dir.display().to_string()),
        "the worker works in the stream's git worktree: {:?}",
        proc_cmdline(pid)
    );
    assert!(
        wait_for(
            || fs::read_to_string(tc_log(&p, api))
                .is_ok_and(|t| t.contains("fake-claude: working")),
            WAIT
        ),
        "the worker writes {}: {:?}",
        tc_log(&p, api).display(),
        fs::read_to_string(tc_log(&p, api))
    );

    // The next check sees it running.
    p.run(&[]).expect_code(0).stdout_has("All workers healthy");
}

/// Stream B depends on stream A when a task of B depends on a task of A: B
/// waits until A is complete, and only then can be dead.
#[test]
fn dependencies_across_tc_streams_are_honoured() {
    let p = TestProject::new();
    let tc = TcDb::create(&p);
    let prd = tc.prd("PRD", "active");
    let a = tc.stream("schema", Some(prd), "active");
    let a1 = tc.task(a, "completed");
    let a2 = tc.task(a, "in_progress");
    let b = tc.stream("api", Some(prd), "active");
    let b1 = tc.task(b, "pending");
    let b2 = tc.task(b, "pending");
    tc.depends(b1, a1);
    tc.depends(b2, a2);
    // A dependency inside B is no stream dependency.
    tc.depends(b2, b1);
    tc_evidence_log(&p, b);
    // A is never started (no log): not dead; B waits on it: not dead.
    p.run(&[])
        .expect_code(0)
        .stdout_has("All workers healthy")
        .no_panic();
    let report = status_json(&p, &[]);
    let b_json = stream_json(&report, &b.to_string());
    assert_eq!(b_json["dependencies"], serde_json::json!([a.to_string()]));
    assert_eq!(b_json["health"], "waiting", "{b_json:#}");
    assert_eq!(b_json["name"], "api");

    tc.set_status(a2, "completed");
    p.run(&[])
        .expect_code(1)
        .stdout_has(&format!("Found 1 dead worker(s): {b}"))
        .no_panic();
}

/// Archived streams and streams of finished PRDs are not monitored; a
/// dependency on them is dropped without a warning.
#[test]
fn archived_streams_and_finished_prds_are_not_monitored() {
    let p = TestProject::new();
    let tc = TcDb::create(&p);
    let old = tc.prd("Old", "completed");
    let current = tc.prd("Current", "active");
    let gone = tc.stream("gone", Some(current), "archived");
    let g1 = tc.task(gone, "pending");
    tc_evidence_log(&p, gone);
    let finished = tc.stream("finished", Some(old), "active");
    tc.task(finished, "pending");
    tc_evidence_log(&p, finished);
    let live = tc.stream("live", Some(current), "active");
    let l1 = tc.task(live, "pending");
    tc.depends(l1, g1);
    tc_evidence_log(&p, live);

    let r = p.run(&[]);
    r.expect_code(1)
        .stdout_has(&format!("Found 1 dead worker(s): {live}"))
        .stdout_lacks("unknown stream")
        .no_panic();
    // The dead stream makes status exit 1 in a tc project.
    let r = p.run(&["status", "--json"]);
    r.expect_code(1).no_panic();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let ids: Vec<&str> = report["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [live.to_string()]);
    assert_eq!(report["initiative"]["id"], TC_INIT);
    assert_eq!(report["initiative"]["name"], "Current");
}

/// `status --verbose` names the schema in use; `--json` has it as `schema`.
#[test]
fn status_names_the_schema_in_use() {
    let legacy = TestProject::new();
    legacy.stream("api", &["pending"], &[]);
    legacy
        .run(&["status", "--verbose"])
        .expect_code(0)
        .stdout_has("Schema: Task Copilot (legacy")
        .no_panic();
    assert_eq!(status_json(&legacy, &[])["schema"], "legacy");

    let p = TestProject::new();
    p.stream("legacy-stream", &["pending"], &[]);
    let tc = TcDb::create(&p);
    let s = tc.stream("api", None, "active");
    tc.task(s, "pending");
    let r = p.run(&["status", "--verbose"]);
    r.expect_code(0)
        .stdout_has("Schema: Task Copilot tc")
        .stdout_has(&tc.path.display().to_string())
        .stdout_lacks("legacy-stream")
        .no_panic();
    let report = status_json(&p, &[]);
    assert_eq!(report["schema"], "tc");
    assert_eq!(report["tasks_db"], tc.path.display().to_string());
}

/// `--tasks-db` naming a tc database is read as tc (detected from its
/// tables), wherever it is.
#[test]
fn tasks_db_flag_pointing_at_a_tc_database_is_detected() {
    let p = TestProject::new();
    let tc = TcDb::create_at(p.root.join("elsewhere").join("tc.db"));
    let s = tc.stream("api", None, "active");
    tc.task(s, "pending");
    tc_evidence_log(&p, s);
    let path = tc.path.display().to_string();
    p.run(&["--tasks-db", &path])
        .expect_code(1)
        .stdout_has(&format!("Found 1 dead worker(s): {s}"))
        .no_panic();
    // Given explicitly, a legacy database is used even when the project has
    // a tc one. (A path of the default's shape, `.claude/tasks/<ws>/tasks.db`,
    // counts as not given: the layout keeps only the resolved path.)
    let project_tc = TcDb::create(&p);
    let other = project_tc.stream("other", None, "active");
    project_tc.task(other, "pending");
    p.dead_stream("legacy-api");
    let legacy = p.root.join("elsewhere").join("legacy.db");
    fs::copy(p.tasks_db(), &legacy).unwrap();
    let legacy = legacy.display().to_string();
    p.run(&["--tasks-db", &legacy])
        .expect_code(1)
        .stdout_has("Found 1 dead worker(s): legacy-api")
        .no_panic();
}

/// A tc database that is not a tc (nor legacy) database: exit 3 naming it.
#[test]
fn project_tc_database_with_the_wrong_schema_exits_3() {
    let p = TestProject::new();
    let path = p.proj.join(".copilot").join("tasks.db");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE other (x TEXT);")
        .unwrap();
    let r = p.run(&[]);
    r.expect_code(3)
        .stderr_has(&path.display().to_string())
        .stderr_has("schema")
        .stdout_lacks("All workers healthy")
        .no_panic();
}
