//! Task recovery (SPEC 3.7): `recover-tasks [--dry-run]` and
//! `--recover-tasks` put the stale `in_progress` tasks of dead or given-up
//! streams back to `pending` — and nothing else — in one transaction, with
//! `updated_at` set and an event per task; and a database another process
//! is writing at the same time loses no write and stays intact.

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::helpers::*;
use crate::tc_schema::{tc_evidence_log, TcDb};

/// Long ago, in the legacy schema's format.
const STALE: &str = "2024-05-01T10:00:00.000Z";

/// A task of `stream` in the active initiative, updated at `updated_at`.
fn task(p: &TestProject, stream: &str, status: &str, updated_at: &str) -> String {
    let metadata = serde_json::json!({"streamId": stream, "streamName": stream}).to_string();
    let id = p.raw_task(INIT, status, Some(&metadata));
    p.tasks_conn()
        .execute(
            "UPDATE tasks SET updated_at = ?1 WHERE id = ?2",
            [updated_at, &id],
        )
        .unwrap();
    id
}

/// Now, as JavaScript's `toISOString` writes it.
fn iso_now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn task_state(p: &TestProject, id: &str) -> (String, String) {
    p.tasks_conn()
        .query_row(
            "SELECT status, updated_at FROM tasks WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

fn all_tasks(conn: &Connection) -> Vec<(String, String, String)> {
    let mut stmt = conn
        .prepare("SELECT CAST(id AS TEXT), status, updated_at FROM tasks ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn events(p: &TestProject) -> Vec<serde_json::Value> {
    fs::read_to_string(p.logs_dir().join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("event lines are JSON"))
        .collect()
}

fn recovered_events(p: &TestProject) -> Vec<serde_json::Value> {
    events(p)
        .into_iter()
        .filter(|e| e["event"] == "task_recovered")
        .collect()
}

fn is_iso_utc_millis(text: &str) -> bool {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.3fZ").is_ok()
        && text.len() == 24
}

/// A dead stream's stale task goes back to pending; its fresh one, and a
/// healthy stream's stale one, stay. A dry run changes nothing.
#[test]
fn stale_tasks_of_a_dead_stream_go_back_to_pending_and_nothing_else_moves() {
    let p = TestProject::new();
    let stale = task(&p, "dead", "in_progress", STALE);
    let fresh = task(&p, "dead", "in_progress", &iso_now());
    let pending = task(&p, "dead", "pending", STALE);
    let done = task(&p, "dead", "completed", STALE);
    p.evidence_log("dead");
    let healthy_stale = task(&p, "alive", "in_progress", STALE);
    task(&p, "alive", "pending", STALE);
    p.spawn_worker_process("alive");
    // Another initiative's stream with the same id is out of scope.
    p.initiative(OLD_INIT, "COMPLETE", "2024-01-01T10:00:00");
    let metadata = serde_json::json!({"streamId": "dead"}).to_string();
    let other_initiative = p.raw_task(OLD_INIT, "in_progress", Some(&metadata));

    let before = all_tasks(&p.tasks_conn());
    let r = p.run(&["recover-tasks", "--dry-run"]);
    r.expect_code(0)
        .stdout_has(&format!("Would recover task {stale} of stream dead"))
        .stdout_has("Dry run: 1 task(s) would go back to pending; nothing was written")
        .stdout_lacks(&format!("task {fresh} "))
        .stdout_lacks(&format!("task {healthy_stale} "))
        .no_panic();
    assert_eq!(
        all_tasks(&p.tasks_conn()),
        before,
        "a dry run writes nothing"
    );
    assert!(recovered_events(&p).is_empty());

    let started = chrono::Utc::now() - chrono::Duration::seconds(2);
    let r = p.run(&["recover-tasks"]);
    r.expect_code(0)
        .stdout_has(&format!(
            "Recovered task {stale} of stream dead (Task {stale}): in_progress -> pending"
        ))
        .stdout_has("1 task(s) of dead back to pending")
        .no_panic();
    let (status, updated_at) = task_state(&p, &stale);
    assert_eq!(status, "pending");
    assert!(is_iso_utc_millis(&updated_at), "{updated_at:?}");
    let written = chrono::DateTime::parse_from_rfc3339(&updated_at).unwrap();
    assert!(written >= started, "{updated_at} is not now");
    assert_eq!(task_state(&p, &fresh).0, "in_progress", "fresh: kept");
    assert_eq!(task_state(&p, &pending), ("pending".into(), STALE.into()));
    assert_eq!(task_state(&p, &done).0, "completed");
    assert_eq!(
        task_state(&p, &healthy_stale).0,
        "in_progress",
        "a running worker's task is never taken"
    );
    assert_eq!(task_state(&p, &other_initiative).0, "in_progress");

    let recovered = recovered_events(&p);
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert_eq!(recovered[0]["stream"], "dead");
    assert_eq!(recovered[0]["reason"], stale.as_str());
    assert_eq!(recovered[0]["from"], "in_progress");
    assert_eq!(recovered[0]["to"], "pending");
    assert!(
        p.monitor_log()
            .contains(&format!("[WARNING] Recovered task {stale} of stream dead")),
        "{}",
        p.monitor_log()
    );

    // Nothing is stale any more: a second run changes nothing.
    let before = all_tasks(&p.tasks_conn());
    p.run(&["recover-tasks"])
        .expect_code(0)
        .stdout_has("No task of dead has been in_progress for more than 5m 0s");
    assert_eq!(all_tasks(&p.tasks_conn()), before);
    assert_eq!(recovered_events(&p).len(), 1);
}

/// `--older-than` sets the timeout; a named stream that is not dead is left
/// alone with a note; an unknown or unsafe name is a usage error.
#[test]
fn older_than_and_named_streams() {
    let p = TestProject::new();
    let ten_min_ago = (chrono::Utc::now() - chrono::Duration::minutes(10))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let t = task(&p, "dead", "in_progress", &ten_min_ago);
    p.evidence_log("dead");
    let alive_task = task(&p, "alive", "in_progress", STALE);
    p.spawn_worker_process("alive");

    p.run(&["recover-tasks", "--older-than", "3600", "dead"])
        .expect_code(0)
        .stdout_has("No task of dead has been in_progress for more than 1h 0m");
    assert_eq!(task_state(&p, &t).0, "in_progress");

    p.run(&["recover-tasks", "alive"])
        .expect_code(0)
        .stdout_has("Stream alive is running; its tasks are left alone")
        .stdout_has("No dead or given-up stream: no task to recover");
    assert_eq!(task_state(&p, &alive_task).0, "in_progress");

    p.run(&["recover-tasks", "ghost"])
        .expect_code(2)
        .stderr_has("unknown stream(s) ghost")
        .stderr_has("known: alive, dead")
        .no_panic();
    p.run(&["recover-tasks", "../evil"])
        .expect_code(2)
        .stderr_has("invalid stream id")
        .no_panic();
    p.run(&["recover-tasks", "--older-than", "0"])
        .expect_code(2)
        .no_panic();

    p.run(&["recover-tasks", "--older-than", "300", "dead"])
        .expect_code(0)
        .stdout_has(&format!("Recovered task {t} of stream dead"));
    assert_eq!(task_state(&p, &t).0, "pending");
}

/// `--recover-tasks` makes a check recover the stale tasks of the dead
/// streams it found; without it nothing is written.
#[test]
fn check_with_recover_tasks_flag_recovers_after_the_tick() {
    let p = TestProject::new();
    let stale = task(&p, "dead", "in_progress", STALE);
    task(&p, "dead", "pending", STALE);
    p.evidence_log("dead");

    p.run(&[])
        .expect_code(1)
        .stdout_has("Found 1 dead worker(s): dead");
    assert_eq!(task_state(&p, &stale).0, "in_progress", "opt-in only");

    p.run(&["--recover-tasks"])
        .expect_code(1)
        .stdout_has("Found 1 dead worker(s): dead")
        .stdout_has(&format!("Recovered task {stale} of stream dead"))
        .no_panic();
    assert_eq!(task_state(&p, &stale).0, "pending");
    assert_eq!(recovered_events(&p).len(), 1);
}

/// Recovery in the tc schema: integer ids, SQLite's `datetime('now')`
/// format, and the dead worker's claim released.
#[test]
fn recovery_in_the_tc_schema_keeps_its_timestamp_format_and_releases_the_claim() {
    let p = TestProject::new();
    let tc = TcDb::create(&p);
    let dead = tc.stream("api", None, "active");
    let stale = tc.task_at(dead, "in_progress", "2024-05-01 10:00:00");
    let fresh = tc.task_at(dead, "in_progress", "2999-01-01 00:00:00");
    tc.task(dead, "pending");
    tc_evidence_log(&p, dead);

    p.run(&["recover-tasks", "--dry-run"])
        .expect_code(0)
        .stdout_has(&format!("Would recover task {stale} of stream {dead}"));
    assert_eq!(tc.task_row(stale).0, "in_progress");

    p.run(&["recover-tasks"])
        .expect_code(0)
        .stdout_has(&format!("Recovered task {stale} of stream {dead}"))
        .no_panic();
    let (status, updated_at, claimed_by) = tc.task_row(stale);
    assert_eq!(status, "pending");
    assert!(
        chrono::NaiveDateTime::parse_from_str(&updated_at, "%Y-%m-%d %H:%M:%S").is_ok(),
        "{updated_at:?} is not in the tc format"
    );
    assert_eq!(claimed_by, None, "the dead worker's claim is released");
    assert_eq!(tc.task_row(fresh).0, "in_progress");
    let recovered = recovered_events(&p);
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0]["reason"], stale.to_string());
}

/// A writer the recovery does not know about: a python3 process inserting
/// rows and updating a task, each change its own transaction, as fast as it
/// can for a couple of seconds. Prints how many changes it committed.
const WRITER: &str = r#"
import sqlite3, sys, time
db, secs, task = sys.argv[1], float(sys.argv[2]), sys.argv[3]
conn = sqlite3.connect(db, timeout=30, isolation_level=None)
n = 0
end = time.monotonic() + secs
while time.monotonic() < end:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO writer_log (n) VALUES (?)", (n,))
    conn.execute("UPDATE tasks SET notes = ? WHERE id = ?", (str(n), task))
    conn.execute("COMMIT")
    n += 1
print(n)
"#;

fn concurrent_writer_run(journal_mode: &str) {
    let p = TestProject::new();
    let stale = task(&p, "dead", "in_progress", STALE);
    task(&p, "dead", "pending", STALE);
    p.evidence_log("dead");
    let busy_task = task(&p, "busy", "pending", STALE);
    {
        let conn = p.tasks_conn();
        let mode: String = conn
            .query_row(&format!("PRAGMA journal_mode={journal_mode}"), [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(mode, journal_mode);
        conn.execute_batch("CREATE TABLE writer_log (n INTEGER NOT NULL);")
            .unwrap();
    }

    let out = p.root.join(format!("writer-{journal_mode}.out"));
    let mut cmd = p.command("python3");
    cmd.arg("-c")
        .arg(WRITER)
        .arg(p.tasks_db())
        .arg("2.5")
        .arg(&busy_task)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(Stdio::inherit());
    let writer = p.spawn(cmd);
    // Recover while the writer writes; between runs the test itself makes
    // the task stale again, through its own connection.
    let reset = p.tasks_conn();
    reset.busy_timeout(Duration::from_secs(30)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut runs = 0;
    let status = loop {
        if let Some(status) = p.wait_exit(writer, Duration::ZERO) {
            break status;
        }
        assert!(Instant::now() < deadline, "the writer never finished");
        reset
            .execute(
                "UPDATE tasks SET status = 'in_progress', updated_at = ?1 WHERE id = ?2",
                [STALE, &stale],
            )
            .unwrap();
        let r = p.run(&["recover-tasks", "--busy-timeout", "10"]);
        r.expect_code(0)
            .stdout_has(&format!("Recovered task {stale} of stream dead"))
            .no_panic();
        runs += 1;
    };
    assert!(status.success(), "the writer failed: {status:?}");
    assert!(runs >= 3, "only {runs} recoveries overlapped the writer");

    let committed: i64 = fs::read_to_string(&out)
        .unwrap()
        .trim()
        .parse()
        .expect("the writer printed its count");
    let conn = p.tasks_conn();
    let (rows, last): (i64, Option<i64>) = conn
        .query_row("SELECT COUNT(*), MAX(n) FROM writer_log", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(committed > 0);
    assert_eq!(rows, committed, "no lost writes");
    assert_eq!(last, Some(committed - 1));
    let notes: String = conn
        .query_row("SELECT notes FROM tasks WHERE id = ?1", [&busy_task], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        notes,
        (committed - 1).to_string(),
        "the writer's last update stands"
    );
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    assert_eq!(task_state(&p, &stale).0, "pending");
    assert_eq!(recovered_events(&p).len(), runs);
}

#[test]
fn recovery_beside_a_concurrent_writer_loses_nothing_rollback_journal() {
    concurrent_writer_run("delete");
}

#[test]
fn recovery_beside_a_concurrent_writer_loses_nothing_wal() {
    concurrent_writer_run("wal");
}
