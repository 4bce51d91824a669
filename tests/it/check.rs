//! One-shot checks: verdicts, restarts, the restart budget across runs, and
//! the defects of the original (SPEC 1.7) that must not come back.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use crate::helpers::*;

/// A running worker and a finished stream (one task cancelled, which the
/// original counted as open and so reported the stream dead forever).
#[test]
fn healthy_worker_exits_0_and_log_lines_have_the_original_shape() {
    let p = TestProject::new();
    p.stream("api", &["completed", "in_progress", "pending"], &[]);
    p.stream("done", &["completed", "cancelled"], &[]);
    p.evidence_log("done");
    let pid = p.spawn_worker_process("api");
    assert!(wait_for(
        || fs::metadata(p.log_path("api"))
            .map(|m| m.len() > 100)
            .unwrap_or(false),
        SOON
    ));

    p.run(&[])
        .expect_code(0)
        .stdout_has("[MONITOR] All workers healthy")
        .no_panic();

    assert!(is_alive(pid), "the healthy worker must not be touched");
    assert_eq!(p.read_pid_file("api"), Some(pid));
    let log = p.monitor_log();
    assert!(log.contains("[SUCCESS] All workers healthy"), "{log}");
    for line in log.lines() {
        assert!(is_log_line(line), "bad monitor.log line: {line:?}");
    }
}

/// The report-only check; a stale PID file is logged when removed (the
/// original removed it silently).
#[test]
fn dead_workers_are_reported_with_exit_1_and_the_auto_restart_hint() {
    let p = TestProject::new();
    p.dead_stream("alpha");
    p.dead_stream("beta");
    let mut gone = p.command("true");
    gone.stdout(Stdio::null());
    let gone = p.spawn(gone);
    assert!(p.wait_exit(gone, SOON).is_some());
    p.write_pid_file("beta", &format!("{gone}\n"));
    // Not dead: never ran (no log), log of exactly 100 bytes, waiting on a dependency, complete.
    p.stream("never-ran", &["pending"], &[]);
    p.stream("tiny-log", &["pending"], &[]);
    p.write_log("tiny-log", &[b'x'; 100]);
    p.stream("waiting", &["pending"], &["never-ran"]);
    p.evidence_log("waiting");
    p.stream("done", &["completed", "completed"], &[]);
    p.evidence_log("done");

    let r = p.run(&[]);
    r.expect_code(1)
        .stdout_has("[MONITOR] Found 2 dead worker(s): alpha, beta")
        .stdout_has("[MONITOR] Auto-restart disabled. Use --auto-restart to enable.")
        .stdout_lacks("Restarting worker")
        .no_panic();
    assert!(p
        .monitor_log()
        .contains("[WARNING] Found 2 dead worker(s): alpha, beta"));
    assert!(
        !p.pid_path("alpha").exists(),
        "report-only must not start anything"
    );
    assert!(
        !p.pid_path("beta").exists(),
        "the stale PID file is removed"
    );
    assert!(
        p.monitor_log().contains(&format!(
            "Removed stale PID file for beta: process {gone} no longer exists"
        )),
        "{}",
        p.monitor_log()
    );
}

/// SPEC 1.7: a real zombie passes `kill -0` and `ps -p`; it must count as dead.
#[test]
fn zombie_worker_is_dead_and_its_parent_is_never_signalled() {
    let p = TestProject::new();
    p.dead_stream("zed");
    let pid_file = p.pid_path("zed");
    // The parent forks a short sleep, records its PID, then becomes a `sleep`
    // that never reaps it: a real zombie.
    let mut cmd = p.command("bash");
    cmd.arg("-c")
        .arg("sleep 0.3 & echo $! > \"$1\"; exec sleep 60")
        .arg("zombie-maker")
        .arg(&pid_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let parent = p.spawn(cmd);
    assert!(wait_for(|| p.read_pid_file("zed").is_some(), SOON));
    let zombie = p.read_pid_file("zed").unwrap();
    assert!(
        wait_for(|| proc_state(zombie) == Some('Z'), SOON),
        "no zombie appeared"
    );
    assert_eq!(proc_ppid(zombie), Some(parent));

    let r = p.run(&["--auto-restart"]);
    r.expect_code(1)
        .stdout_has("Found 1 dead worker(s): zed")
        .stdout_has("Restarting worker zed (attempt 1/2)");
    let new_pid = restarted_pid(&r.stdout, "zed").expect("restarted PID");
    assert_ne!(new_pid, zombie);
    assert!(
        p.monitor_log().contains("zombie"),
        "the log must say why: {}",
        p.monitor_log()
    );
    assert!(is_alive(parent), "the zombie's parent was signalled");
    assert!(
        matches!(proc_state(parent), Some('S') | Some('R')),
        "parent state {:?}",
        proc_state(parent)
    );
    assert_eq!(proc_state(zombie), Some('Z'), "the zombie is untouched");
}

/// SPEC 1.7: restart counts lived in memory only; three cron one-shots with
/// `--max-restarts 2` restarted the same stream three times.
#[test]
fn restart_budget_persists_across_one_shots_and_reset_renews_it() {
    let p = TestProject::new();
    p.dead_stream("flaky");
    p.set_env("FAKE_CLAUDE_MODE", "exit");
    let args = ["--auto-restart", "--max-restarts", "2"];

    let settle = |p: &TestProject| {
        // The worker dies at once; wait for its wrapper to clean up, and for
        // any backoff of a restart that failed to be over.
        assert!(wait_for(
            || !p.pid_path("flaky").exists() && p.live_wrappers("flaky").is_empty(),
            SOON
        ));
        let until = p.state_json()["streams"]["flaky"]["next_attempt_ms"]
            .as_u64()
            .unwrap_or(0);
        assert!(wait_for(|| now_ms() > until + 50, Duration::from_secs(10)));
    };

    p.run(&args)
        .expect_code(1)
        .stdout_has("Restarting worker flaky (attempt 1/2)");
    settle(&p);
    p.run(&args)
        .expect_code(1)
        .stdout_has("Restarting worker flaky (attempt 2/2)");
    settle(&p);
    let third = p.run(&args);
    third
        .expect_code(1)
        .stdout_has("Worker flaky has reached max restart limit (2)")
        .stdout_lacks("Restarting worker");
    assert_eq!(
        p.count_in_log("Restarting worker flaky"),
        2,
        "{}",
        p.monitor_log()
    );

    p.run(&["reset", "flaky"]).expect_code(0);
    p.run(&args)
        .expect_code(1)
        .stdout_has("Restarting worker flaky (attempt 1/2)");
    assert_eq!(
        p.count_in_log("Restarting worker flaky"),
        3,
        "{}",
        p.monitor_log()
    );
    settle(&p);
}

/// SPEC 1.7: `--quiet` discarded all output, even of a restart.
#[test]
fn quiet_run_still_prints_the_restart() {
    let p = TestProject::new();
    p.dead_stream("api");
    let r = p.run(&["--quiet", "--auto-restart"]);
    r.expect_code(1)
        .stdout_has("[MONITOR] Restarting worker api (attempt 1/2)")
        .stdout_has("[MONITOR] Worker api restarted (PID: ")
        .stdout_lacks("Found 1 dead")
        .no_panic();
    assert!(
        p.monitor_log().contains("Found 1 dead worker(s): api"),
        "monitor.log still gets everything"
    );
}

/// SPEC 1.7: progress was counted across initiatives. Archived tasks do not
/// count either.
#[test]
fn progress_is_counted_within_the_active_initiative() {
    let p = TestProject::new();
    p.initiative(OLD_INIT, "COMPLETE", "2024-01-01T10:00:00");
    p.stream_in(OLD_INIT, "api", &["pending", "in_progress"], &[]);
    p.stream("api", &["completed", "completed"], &[]);
    let archived = p.raw_task(INIT, "pending", Some(r#"{"streamId":"api"}"#));
    p.tasks_conn()
        .execute("UPDATE tasks SET archived = 1 WHERE id = ?1", [archived])
        .unwrap();
    p.evidence_log("api");
    p.run(&["--auto-restart"])
        .expect_code(0)
        .stdout_has("All workers healthy")
        .stdout_lacks("Restarting");
}

/// SPEC 1.3: a cancelled task is finished; the original restarted forever.
#[test]
fn completed_plus_cancelled_stream_is_complete_not_dead() {
    let p = TestProject::new();
    p.stream("api", &["completed", "completed", "cancelled"], &[]);
    p.evidence_log("api");
    p.run(&["--auto-restart"])
        .expect_code(0)
        .stdout_has("All workers healthy")
        .stdout_lacks("Restarting");
}

/// Two monitors at once (cron + cron) start a dead stream exactly once.
#[test]
fn concurrent_one_shots_restart_a_stream_once() {
    let p = TestProject::new();
    p.dead_stream("solo");
    let spawn = || {
        let mut cmd = p.monitor_std();
        cmd.arg("--auto-restart")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        p.spawn(cmd)
    };
    let (a, b) = (spawn(), spawn());
    let sa = p
        .wait_exit(a, Duration::from_secs(30))
        .expect("first monitor ended");
    let sb = p
        .wait_exit(b, Duration::from_secs(30))
        .expect("second monitor ended");
    assert!(sa.code().is_some() && sb.code().is_some());
    assert!(
        sa.code() == Some(1) || sb.code() == Some(1),
        "{sa:?} {sb:?}"
    );

    assert_eq!(
        p.count_in_log("Restarting worker solo"),
        1,
        "{}",
        p.monitor_log()
    );
    let pid = p.read_pid_file("solo").expect("PID file");
    assert!(is_alive(pid));
    assert!(
        proc_cmdline(pid)
            .iter()
            .any(|a| a.ends_with("worker-wrapper.sh")),
        "{:?}",
        proc_cmdline(pid)
    );
    assert_eq!(
        p.live_wrappers("solo"),
        vec![pid],
        "exactly one wrapper for the stream"
    );
}

/// The wrapper gets the six arguments of the interface, each its own argv entry.
#[test]
fn restarted_worker_gets_the_six_wrapper_arguments() {
    let p = TestProject::new();
    p.stream("db", &["completed"], &[]);
    p.stream("api", &["completed", "pending"], &["db"]);
    p.evidence_log("api");
    let prompt_file = p.root.join("prompt.txt");
    p.set_env(
        "FAKE_CLAUDE_PROMPT_FILE",
        &prompt_file.display().to_string(),
    );

    let r = p.run(&["--auto-restart"]);
    r.expect_code(1)
        .stdout_has("Restarting worker api (attempt 1/2)");
    let pid = restarted_pid(&r.stdout, "api").expect("restarted PID");
    assert_eq!(
        p.read_pid_file("api"),
        Some(pid),
        "the PID file holds the wrapper's $$"
    );

    let argv = proc_cmdline(pid);
    let at = argv
        .iter()
        .position(|a| a.ends_with("worker-wrapper.sh"))
        .expect("wrapper in cmdline");
    let args = &argv[at + 1..];
    assert_eq!(args.len(), 6, "{argv:?}");
    assert_eq!(args[0], "api");
    assert_eq!(args[1], p.pid_path("api").display().to_string());
    assert_eq!(args[2], p.logs_dir().display().to_string());
    assert_eq!(args[3], p.work_dir("api").display().to_string());
    assert_eq!(args[4], INIT);
    assert!(
        args[5].contains("api") && args[5].contains("api name") && args[5].contains("db"),
        "prompt: {}",
        args[5]
    );
    assert!(!args[5].contains("{{"), "unfilled placeholder: {}", args[5]);
    assert!(p.work_dir("api").is_dir(), "the worktree was created");
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        p.work_dir("api")
    );

    assert!(
        wait_for(
            || fs::read_to_string(p.log_path("api"))
                .unwrap_or_default()
                .contains("fake-claude: working on You are the worker"),
            SOON
        ),
        "log: {}",
        fs::read_to_string(p.log_path("api")).unwrap_or_default()
    );
    let log = fs::read_to_string(p.log_path("api")).unwrap();
    assert!(log.starts_with("[wrapper] "), "{log}");
    assert!(
        log.contains(&format!(
            "stream=api initiative={INIT} pid={pid} workdir={}",
            p.work_dir("api").display()
        )),
        "{log}"
    );
    assert!(wait_for(|| prompt_file.exists(), SOON));
    assert_eq!(
        fs::read_to_string(&prompt_file).unwrap(),
        args[5],
        "claude got the prompt as one argument"
    );
    let archived = fs::read_dir(p.logs_dir().join("archive")).unwrap().count();
    assert_eq!(archived, 1, "the earlier log was archived");
}

#[test]
fn stream_main_works_in_the_project_root() {
    let p = TestProject::new();
    p.dead_stream("main");
    let r = p.run(&["--auto-restart"]);
    r.expect_code(1).stdout_has("Worker main restarted (PID: ");
    let pid = restarted_pid(&r.stdout, "main").unwrap();
    assert_eq!(fs::read_link(format!("/proc/{pid}/cwd")).unwrap(), p.proj);
    let argv = proc_cmdline(pid);
    assert_eq!(
        argv[argv.len() - 3],
        p.proj.display().to_string(),
        "{argv:?}"
    );
    assert!(!p.proj.join(".claude/worktrees/main").exists());
    assert!(wait_for(
        || fs::read_to_string(p.log_path("main"))
            .unwrap_or_default()
            .contains("fake-claude: working on"),
        SOON
    ));
}
