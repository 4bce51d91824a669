//! SPEC 2: bad input of every kind gets a clear message, the right exit
//! code, no panic, and nothing outside the monitor's own files touched.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use crate::helpers::*;

// ----- PID files ------------------------------------------------------------

/// A stream sorted first holds the bad PID file; a dead stream after it
/// proves the run went on (the original crashed on `99999999999` before
/// checking any stream, and never removed the file).
fn bad_pid_file(content: &str, reason: &str) {
    let p = TestProject::new();
    p.stream("a-bad", &["pending"], &[]);
    p.write_pid_file("a-bad", content);
    p.dead_stream("b-dead");

    let r = p.run(&[]);
    r.expect_code(1)
        .stdout_has("Found 1 dead worker(s): b-dead")
        .no_panic();
    assert!(
        !p.pid_path("a-bad").exists(),
        "the stale PID file must be removed"
    );
    let log = p.monitor_log();
    let line = log
        .lines()
        .find(|l| l.contains("Removed stale PID file for a-bad"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains(reason), "{line}");
}

#[test]
fn pid_file_empty() {
    bad_pid_file("", "empty");
}

#[test]
fn pid_file_non_numeric() {
    bad_pid_file("not-a-pid\n", "not a number");
}

#[test]
fn pid_file_negative() {
    bad_pid_file("-42\n", "negative");
}

#[test]
fn pid_file_zero() {
    bad_pid_file("0\n", "not a worker PID");
}

#[test]
fn pid_file_one() {
    bad_pid_file("1\n", "not a worker PID");
}

#[test]
fn pid_file_beyond_pid_max() {
    bad_pid_file(&format!("{}\n", pid_max() + 1), "beyond the largest PID");
}

#[test]
fn pid_file_99999999999_does_not_crash() {
    bad_pid_file("99999999999\n", "beyond the largest PID");
}

#[test]
fn pid_file_huge_number() {
    bad_pid_file(&"9".repeat(100), "not a PID");
}

#[test]
fn pid_file_of_a_vanished_process() {
    let p = TestProject::new();
    let mut cmd = p.command("true");
    cmd.stdout(Stdio::null());
    let gone = p.spawn(cmd);
    assert!(p.wait_exit(gone, SOON).is_some());
    p.stream("a-bad", &["pending"], &[]);
    p.write_pid_file("a-bad", &format!("{gone}\n"));
    p.dead_stream("b-dead");
    p.run(&[])
        .expect_code(1)
        .stdout_has("Found 1 dead worker(s): b-dead");
    assert!(!p.pid_path("a-bad").exists());
    assert!(p.monitor_log().contains(&format!(
        "Removed stale PID file for a-bad: process {gone} no longer exists"
    )));
}

/// SPEC 1.7 / 3.2: a PID file naming a reused PID kept a dead stream
/// "running" forever. The live process is not the worker: never signalled.
#[test]
fn reused_pid_is_not_the_worker_and_is_never_signalled() {
    let p = TestProject::new();
    p.dead_stream("api");
    let foreign = p.spawn_sleep(60);
    p.write_pid_file("api", &format!("{foreign}\n"));
    p.set_mtime(
        &p.pid_path("api"),
        SystemTime::now() - Duration::from_secs(3600),
    );

    let r = p.run(&["--auto-restart"]);
    r.expect_code(1)
        .stdout_has("Found 1 dead worker(s): api")
        .stdout_has("Restarting worker api (attempt 1/2)");
    let new_pid = restarted_pid(&r.stdout, "api").expect("restarted");
    assert_ne!(new_pid, foreign);
    assert_eq!(p.read_pid_file("api"), Some(new_pid));
    assert!(p.monitor_log().contains("reused"), "{}", p.monitor_log());
    assert!(is_alive(foreign), "the foreign process was signalled");
}

/// A live process of another user is never the worker and never signalled.
#[test]
fn pid_of_another_users_process_is_not_the_worker() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to start a process as another user");
        return;
    }
    let p = TestProject::new();
    p.dead_stream("api");
    let mut cmd = p.command("sleep");
    cmd.arg("60")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
    std::os::unix::process::CommandExt::gid(&mut cmd, 65534);
    let other = p.spawn(cmd);
    assert!(wait_for(
        || fs::metadata(format!("/proc/{other}"))
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 65534)
            .unwrap_or(false),
        SOON
    ));
    p.write_pid_file("api", &format!("{other}\n"));

    let r = p.run(&["--auto-restart"]);
    r.expect_code(1)
        .stdout_has("Found 1 dead worker(s): api")
        .stdout_has("Worker api restarted (PID: ");
    assert!(
        p.monitor_log().contains("another user"),
        "{}",
        p.monitor_log()
    );
    assert!(is_alive(other), "another user's process was signalled");
}

// ----- stream ids and metadata ------------------------------------------------

/// SPEC 1.7: `../../evil` deleted and wrote files outside pids/ and started a
/// worker outside the worktrees. Unsafe ids are skipped; nothing is touched.
#[test]
fn unsafe_stream_ids_are_skipped_and_touch_nothing() {
    let p = TestProject::new();
    let long = "x".repeat(200);
    let bad_ids = ["../../evil", "a/b", "-rf", "bad\nid", long.as_str()];
    for id in bad_ids {
        p.stream(id, &["pending"], &[]);
    }
    // Everything the original would have taken as a dead worker's evidence.
    let claude_dir = p.proj.join(".claude");
    let sentinel = claude_dir.join("evil.pid"); // <ORCH>/pids/../../evil.pid
    fs::write(&sentinel, "4242\n").unwrap();
    fs::write(claude_dir.join(format!("evil_{INIT8}.log")), [b'e'; 300]).unwrap();
    fs::create_dir_all(p.logs_dir().join("a")).unwrap();
    fs::write(p.logs_dir().join(format!("a/b_{INIT8}.log")), [b'e'; 300]).unwrap();
    p.write_log("-rf", &[b'e'; 300]);
    p.write_log("bad\nid", &[b'e'; 300]);
    p.write_log(&long, &[b'e'; 300]);
    p.dead_stream("good");

    let before = p.snapshot();
    let r = p.run(&["--auto-restart"]);
    r.expect_code(1)
        .stdout_has("Found 1 dead worker(s): good")
        .stdout_has("Worker good restarted (PID: ")
        .no_panic();
    assert_eq!(
        r.stdout.matches("Restarting worker").count(),
        1,
        "{}",
        r.stdout
    );

    assert_eq!(
        fs::read_to_string(&sentinel).unwrap(),
        "4242\n",
        "the sentinel outside pids/ must survive"
    );
    let log = p.monitor_log();
    assert_eq!(
        log.matches("Skipping stream").count(),
        bad_ids.len(),
        "{log}"
    );
    let after = p.snapshot();
    let allowed_new = [
        p.logs_dir(),
        p.orch.join("state"),
        p.pids_dir(),
        p.work_dir("good"),
    ];
    let parents_of_allowed: BTreeSet<PathBuf> =
        [p.proj.join(".claude/worktrees"), p.work_dir("good")].into();
    for path in after.difference(&before) {
        assert!(
            allowed_new.iter().any(|a| path.starts_with(a)) || parents_of_allowed.contains(path),
            "unexpected new path {}",
            path.display()
        );
    }
    for path in before.difference(&after) {
        assert_eq!(
            path,
            &p.log_path("good"),
            "unexpected removal of {}",
            path.display()
        );
    }
    for pid_file in fs::read_dir(p.pids_dir()).unwrap() {
        let name = pid_file.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            name.starts_with("good.") || name.starts_with(".good."),
            "unexpected file in pids/: {name:?}"
        );
    }
}

/// SPEC 1.7: one task with malformed JSON made the whole query fail, every
/// stream was missed and the check exited 0.
#[test]
fn invalid_metadata_json_does_not_hide_other_streams() {
    let p = TestProject::new();
    let broken = p.raw_task(INIT, "pending", Some("{\"streamId\": \"api\", oops"));
    p.dead_stream("good");
    let r = p.run(&[]);
    r.expect_code(1)
        .stdout_has("Found 1 dead worker(s): good")
        .no_panic();
    let log = p.monitor_log();
    assert!(
        log.contains(&format!("Task {broken} has invalid JSON metadata")),
        "{log}"
    );
}

#[test]
fn dependencies_not_a_list_are_treated_as_none() {
    let p = TestProject::new();
    p.stream("base", &["pending"], &[]);
    p.raw_task(
        INIT,
        "pending",
        Some(r#"{"streamId":"api","streamName":"API","dependencies":"base"}"#),
    );
    p.evidence_log("api");
    let r = p.run(&[]);
    r.expect_code(1)
        .stdout_has("Found 1 dead worker(s): api")
        .no_panic();
    assert!(
        p.monitor_log().contains("not a list"),
        "{}",
        p.monitor_log()
    );
}

#[test]
fn unknown_dependency_is_warned_and_ignored() {
    let p = TestProject::new();
    p.stream("api", &["pending"], &["Ghost"]);
    p.evidence_log("api");
    let r = p.run(&[]);
    r.expect_code(1)
        .stdout_has("Found 1 dead worker(s): api")
        .no_panic();
    assert!(
        p.monitor_log().contains("unknown stream \"Ghost\""),
        "{}",
        p.monitor_log()
    );
}

#[test]
fn dependency_forms_prefix_and_bracket_name_the_stream() {
    let p = TestProject::new();
    p.stream("base", &["pending"], &[]);
    p.stream("colon", &["pending"], &["base:task-3"]);
    p.stream("bracket", &["pending"], &["[base] setup"]);
    for s in ["colon", "bracket"] {
        p.evidence_log(s);
    }
    // Both wait on `base`, which is not complete: not dead.
    p.run(&[]).expect_code(0).stdout_has("All workers healthy");
    assert!(
        !p.monitor_log().contains("unknown stream"),
        "{}",
        p.monitor_log()
    );
}

// ----- databases ----------------------------------------------------------------

/// SPEC 1.7: a missing tasks.db exited 0.
#[test]
fn tasks_db_missing_exits_3_naming_the_path() {
    let p = TestProject::new();
    fs::remove_file(p.tasks_db()).unwrap();
    let r = p.run(&[]);
    r.expect_code(3)
        .stderr_has(&p.tasks_db().display().to_string())
        .stdout_lacks("All workers healthy")
        .no_panic();
}

#[test]
fn tasks_db_not_sqlite_exits_3() {
    let p = TestProject::new();
    fs::write(
        p.tasks_db(),
        "this is not a database, just some text that goes on for a while\n".repeat(100),
    )
    .unwrap();
    let r = p.run(&[]);
    r.expect_code(3)
        .stderr_has(&p.tasks_db().display().to_string())
        .stderr_has("not an SQLite database")
        .no_panic();
    r.stdout_lacks("All workers healthy");
}

#[test]
fn tasks_db_wrong_schema_exits_3() {
    let p = TestProject::new();
    fs::remove_file(p.tasks_db()).unwrap();
    rusqlite::Connection::open(p.tasks_db())
        .unwrap()
        .execute_batch("CREATE TABLE other (x TEXT);")
        .unwrap();
    let r = p.run(&[]);
    r.expect_code(3)
        .stderr_has(&p.tasks_db().display().to_string())
        .stderr_has("schema")
        .no_panic();
    r.stdout_lacks("All workers healthy");
}

#[test]
fn memory_db_missing_exits_3() {
    let p = TestProject::new();
    p.dead_stream("api");
    fs::remove_file(p.memory_db()).unwrap();
    let r = p.run(&[]);
    r.expect_code(3)
        .stderr_has(&p.memory_db().display().to_string())
        .stdout_lacks("All workers healthy")
        .no_panic();
}

/// SPEC 1.7: a locked rollback-journal database exited 0.
#[test]
fn tasks_db_locked_by_a_writer_exits_3_after_the_busy_timeout() {
    let p = TestProject::new();
    p.dead_stream("api");
    let writer = p.tasks_conn();
    writer.execute_batch("BEGIN EXCLUSIVE;").unwrap();

    let r = p.run(&["--busy-timeout", "0.3"]);
    r.expect_code(3)
        .stderr_has("locked")
        .stdout_lacks("All workers healthy")
        .stdout_lacks("Found")
        .no_panic();
    assert!(
        r.elapsed >= Duration::from_millis(250),
        "it did not wait for the busy timeout: {:?}",
        r.elapsed
    );
    assert!(!p.monitor_log().contains("All workers healthy"));

    writer.execute_batch("ROLLBACK;").unwrap();
    p.run(&["--busy-timeout", "0.3"])
        .expect_code(1)
        .stdout_has("Found 1 dead worker(s): api");
}

#[test]
fn wal_database_with_an_open_writer_reads_fine() {
    let p = TestProject::new();
    p.dead_stream("api");
    let writer = p.tasks_conn();
    let mode: String = writer
        .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // An uncommitted write in progress: a stream the reader must not see yet.
    writer.execute_batch("BEGIN IMMEDIATE;").unwrap();
    let metadata = r#"{"streamId":"later"}"#;
    writer
        .execute(
            "INSERT INTO tasks (id, prd_id, title, status, metadata, created_at, updated_at) \
             VALUES ('uncommitted', ?1, 't', 'pending', ?2, 'x', 'x')",
            rusqlite::params![format!("prd-{INIT}"), metadata],
        )
        .unwrap();
    p.evidence_log("later");

    let r = p.run(&["--busy-timeout", "5"]);
    r.expect_code(1)
        .stdout_has("Found 1 dead worker(s): api")
        .no_panic();
    assert!(
        r.elapsed < Duration::from_secs(4),
        "the reader waited for the writer: {:?}",
        r.elapsed
    );
    writer.execute_batch("COMMIT;").unwrap();
    p.run(&[])
        .expect_code(1)
        .stdout_has("Found 2 dead worker(s): api, later");
}

// ----- the wrapper, the log, the state file ---------------------------------------

/// A failed restart is recorded and backs off: a run during the backoff does
/// not retry (the original retried at every interval).
fn failed_restart_backs_off(break_wrapper: impl Fn(&TestProject), reason: &str) {
    let p = TestProject::new();
    p.dead_stream("api");
    break_wrapper(&p);

    // A large budget: only the backoff may stop the retries here.
    let args = ["--auto-restart", "--max-restarts", "10"];
    let mut failed_after = now_ms();
    let first = p.run(&args);
    first
        .expect_code(1)
        .stdout_has("Restarting worker api (attempt 1/10)")
        .stdout_has(reason)
        .no_panic();
    first.stdout_lacks("restarted (PID");
    let state = p.state_json().to_string();
    assert!(
        state.contains(reason),
        "the failure is recorded in the state: {state}"
    );

    // The backoff starts at 1 s and doubles. A run that ends before half the
    // backoff has passed since the failure must not retry; if the machine
    // was too slow to start the next run that early, it may retry, and the
    // run after that gets the doubled window.
    let mut window_ms = 1000;
    for _ in 0..5 {
        let start = now_ms();
        let r = p.run(&args);
        let end = now_ms();
        r.expect_code(1).no_panic();
        if !r.stdout.contains("Restarting worker") {
            // Said as "backing off" or "restart deferred <n>s (...)".
            assert!(
                r.stdout.contains("backing off") || r.stdout.contains("deferred"),
                "{}",
                r.stdout
            );
            return;
        }
        assert!(
            end >= failed_after + window_ms / 2,
            "retried {} ms after the failure:\n{}",
            end - failed_after,
            r.stdout
        );
        failed_after = start;
        window_ms *= 2;
    }
    panic!(
        "never saw a run inside the backoff window: {}",
        p.monitor_log()
    );
}

#[test]
fn a_wrapper_failing_before_its_pid_file_fails_the_restart_with_backoff() {
    failed_restart_backs_off(
        |p| {
            fs::write(
                p.wrapper(),
                "#!/bin/sh\necho 'wrapper: broken' >&2\nexit 1\n",
            )
            .unwrap();
        },
        "exited (exit code 1) before its PID file",
    );
}

/// A wrapper that is missing or not executable fails every start the same
/// way: the stream gives up at once, naming the cause, instead of burning
/// its budget on retries.
fn broken_wrapper_gives_up_at_once(break_wrapper: impl Fn(&TestProject), reason: &str) {
    let p = TestProject::new();
    p.dead_stream("api");
    break_wrapper(&p);
    let args = ["--auto-restart", "--max-restarts", "10"];
    p.run(&args)
        .expect_code(1)
        .stdout_has("Restarting worker api (attempt 1/10)")
        .stdout_has("Worker api gave up: worker wrapper")
        .stdout_has(reason)
        .stdout_lacks("restarted (PID")
        .no_panic();
    let state = p.state_json().to_string();
    assert!(state.contains(reason), "{state}");
    p.run(&args)
        .expect_code(1)
        .stdout_lacks("Restarting worker")
        .no_panic();
}

#[test]
fn wrapper_missing_gives_up_at_once() {
    broken_wrapper_gives_up_at_once(|p| fs::remove_file(p.wrapper()).unwrap(), "is missing");
}

#[test]
fn wrapper_not_executable_gives_up_at_once() {
    broken_wrapper_gives_up_at_once(
        |p| fs::set_permissions(p.wrapper(), fs::Permissions::from_mode(0o644)).unwrap(),
        "not executable",
    );
}

/// The original died with a traceback (exit 1) when it could not log.
#[test]
fn monitor_log_not_writable_still_reports_and_exits_with_its_code() {
    let p = TestProject::new();
    p.stream("api", &["pending"], &[]);
    fs::create_dir_all(p.logs_dir().join("monitor.log")).unwrap();
    let r = p.run(&[]);
    r.expect_code(0)
        .stdout_has("All workers healthy")
        .stderr_has("monitor.log")
        .no_panic();
    assert!(r.stderr.contains("cannot write"), "{}", r.stderr);
    assert_eq!(
        r.stderr.matches("monitor.log").count(),
        1,
        "said once: {}",
        r.stderr
    );

    p.dead_stream("dead");
    p.run(&[])
        .expect_code(1)
        .stdout_has("Found 1 dead worker(s): dead")
        .stderr_has("cannot write");
}

fn state_file_moved_aside(content: &str, problem: &str) {
    let p = TestProject::new();
    p.dead_stream("api");
    fs::create_dir_all(p.orch.join("state")).unwrap();
    fs::write(p.legacy_state_file(), content).unwrap();

    let r = p.run(&[]);
    r.expect_code(1)
        .stdout_has("Found 1 dead worker(s): api")
        .stdout_has("moved aside")
        .stdout_has(problem)
        .no_panic();
    let aside: Vec<PathBuf> = fs::read_dir(p.orch.join("state"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("monitor-state.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        fs::read_to_string(&aside[0]).unwrap(),
        content,
        "nothing lost"
    );
    assert!(
        p.monitor_log().contains("[WARNING]") && p.monitor_log().contains("moved aside"),
        "{}",
        p.monitor_log()
    );

    // The fresh state works: a restart is recorded in a new, valid file.
    p.run(&["--auto-restart"])
        .expect_code(1)
        .stdout_has("Worker api restarted (PID: ");
    assert_eq!(p.state_json()["version"].as_u64(), Some(1));
}

#[test]
fn state_file_corrupt_is_moved_aside() {
    state_file_moved_aside("{\"version\": 1, \"streams\": {", "corrupt");
}

#[test]
fn state_file_from_a_newer_version_is_moved_aside() {
    state_file_moved_aside("{\"version\": 99, \"streams\": {}}\n", "newer version");
}

/// A full disk, as the monitor meets it: every write past a size fails. The
/// file-size limit (`ulimit -f`) makes each write of the monitor fail for
/// real (EFBIG) while reads work; the check still reports and exits with its
/// code, says what it could not write, and leaves no half-written temporary
/// file behind to keep the disk full.
#[test]
fn a_full_disk_leaves_no_temp_files_and_the_check_still_reports() {
    let p = TestProject::new();
    p.dead_stream("api");
    p.stream("ok", &["completed"], &[]);
    fs::create_dir_all(p.orch.join("state")).unwrap();
    let bin = BIN;
    let mut cmd = p.command("bash");
    // SIGXFSZ would kill the writer; ignored, each write fails with EFBIG.
    cmd.args([
        "-c",
        &format!("trap '' XFSZ; ulimit -f 0; exec '{bin}' --auto-restart \"$@\""),
        "monitor",
    ]);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("Found 1 dead worker(s): api"), "{stdout}");
    assert!(
        stderr.contains("cannot write") || stdout.contains("Cannot"),
        "the failed writes are said: {stdout}\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let mut leftovers = Vec::new();
    for dir in [p.orch.join("state"), p.logs_dir(), p.pids_dir()] {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(".tmp") {
                leftovers.push(entry.path());
            }
        }
    }
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}
