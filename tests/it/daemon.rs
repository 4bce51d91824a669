//! `--daemon`: death seen at once, new streams seen at the next tick, one
//! daemon per project, clean shutdown on SIGTERM, report-only mode.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::helpers::*;

fn stop_daemon(p: &TestProject, d: &Daemon) {
    p.stop_daemon(d);
    assert!(
        p.monitor_log().contains("[INFO] Received shutdown signal"),
        "{}",
        p.monitor_log()
    );
}

/// SPEC 3.5: a worker's death is seen at once, not at the next interval.
#[test]
fn daemon_restarts_a_killed_worker_long_before_the_interval() {
    let p = TestProject::new();
    p.stream("api", &["completed", "pending"], &[]);
    let worker = p.spawn_worker_process("api");
    let d = p.spawn_daemon(&[
        "--daemon",
        "--auto-restart",
        "--interval",
        "30",
        "--max-restarts",
        "5",
    ]);
    assert!(
        p.wait_log("All workers healthy", SOON),
        "stderr: {}",
        d.stderr_text()
    );

    // A worker the daemon did not start (watched through its PID).
    let killed = Instant::now();
    p.signal_ours(worker, Signal::SIGKILL);
    p.wait_exit(worker, SOON).expect("reaped");
    assert!(
        wait_for(
            || p.monitor_log().contains("Worker api restarted (PID: "),
            Duration::from_secs(5)
        ),
        "no restart within 5 s of the kill (interval 30 s)"
    );
    assert!(killed.elapsed() < Duration::from_secs(5));
    let log = p.monitor_log();
    assert!(log.contains("Restarting worker api (attempt 1/5)"), "{log}");
    let second = restarted_pid(&log, "api").unwrap();
    assert_ne!(second, worker);
    assert_eq!(p.read_pid_file("api"), Some(second));

    // A worker the daemon started itself (its own child).
    let killed = Instant::now();
    p.signal_ours(second, Signal::SIGKILL);
    assert!(
        wait_for(
            || p.count_in_log("Worker api restarted (PID: ") == 2,
            Duration::from_secs(5)
        ),
        "the daemon's own worker was not restarted within 5 s"
    );
    assert!(killed.elapsed() < Duration::from_secs(5));
    let third = restarted_pid(&p.monitor_log(), "api").unwrap();
    assert!(is_alive(third));
    assert_eq!(
        p.live_wrappers("api"),
        vec![third],
        "one wrapper for the stream"
    );
    stop_daemon(&p, &d);
}

#[test]
fn daemon_stops_on_sigterm_and_a_second_daemon_is_refused() {
    let p = TestProject::new();
    p.stream("api", &["pending"], &[]);
    let d = p.spawn_daemon(&["--daemon", "--interval", "30"]);
    assert!(
        p.wait_log(
            "Starting monitor daemon (interval: 30s, max_restarts: 2)",
            SOON
        ),
        "{}",
        d.stderr_text()
    );
    assert!(p.wait_log("All workers healthy", SOON));

    let second = p.run(&["--daemon", "--interval", "30"]);
    second
        .expect_code(3)
        .stderr_has(&format!("PID {}", d.pid))
        .no_panic();
    assert!(is_alive(d.pid), "the first daemon must be unaffected");

    stop_daemon(&p, &d);
    assert!(
        d.stdout_text()
            .contains("[MONITOR] Starting monitor daemon"),
        "{}",
        d.stdout_text()
    );
    // The lock went with the first daemon: a new one may start.
    let again = p.spawn_daemon(&["--daemon", "--interval", "30"]);
    assert!(
        wait_for(|| p.count_in_log("Starting monitor daemon") == 2, SOON),
        "{}",
        again.stderr_text()
    );
    stop_daemon(&p, &again);
}

#[test]
fn daemon_without_auto_restart_warns_once_and_never_restarts() {
    let p = TestProject::new();
    p.dead_stream("api");
    let d = p.spawn_daemon(&["--daemon", "--interval", "1"]);
    assert!(
        wait_for(
            || p.count_in_log("Found 1 dead worker(s): api") >= 3,
            Duration::from_secs(20)
        ),
        "{}",
        p.monitor_log()
    );
    assert_eq!(
        p.count_in_log("Auto-restart disabled. Use --auto-restart to enable."),
        1,
        "{}",
        p.monitor_log()
    );
    assert_eq!(p.count_in_log("Restarting worker"), 0);
    assert!(!p.pid_path("api").exists());
    stop_daemon(&p, &d);
}

/// SPEC 1.7: daemon mode read the stream list once.
#[test]
fn daemon_sees_a_stream_added_while_it_runs() {
    let p = TestProject::new();
    p.stream("first", &["pending"], &[]);
    let d = p.spawn_daemon(&["--daemon", "--interval", "1"]);
    assert!(
        p.wait_log("All workers healthy", SOON),
        "{}",
        d.stderr_text()
    );
    p.dead_stream("later");
    assert!(
        p.wait_log("Found 1 dead worker(s): later", Duration::from_secs(10)),
        "{}",
        p.monitor_log()
    );
    stop_daemon(&p, &d);
}

/// A locked database skips the daemon's check (never "healthy"); the next
/// tick after the lock is gone checks again.
#[test]
fn daemon_skips_checks_while_the_database_is_locked() {
    let p = TestProject::new();
    p.dead_stream("api");
    let writer = p.tasks_conn();
    writer.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    let d = p.spawn_daemon(&["--daemon", "--interval", "1", "--busy-timeout", "0.2"]);
    assert!(p.wait_log("Check skipped", SOON), "{}", p.monitor_log());
    let log = p.monitor_log();
    assert!(
        !log.contains("All workers healthy") && !log.contains("Found"),
        "{log}"
    );
    writer.execute_batch("ROLLBACK;").unwrap();
    assert!(
        p.wait_log("Found 1 dead worker(s): api", Duration::from_secs(10)),
        "{}",
        p.monitor_log()
    );
    assert!(is_alive(d.pid), "the daemon goes on after a skipped check");
    stop_daemon(&p, &d);
}

/// No active initiative: a warning, exit 0. A daemon picks the initiative up
/// once it is started (the original read the streams once).
#[test]
fn no_active_initiative_then_one_started_while_the_daemon_runs() {
    let p = TestProject::bare();
    p.initiative(OLD_INIT, "COMPLETE", "2024-01-01T10:00:00");
    p.stream_in(OLD_INIT, "old", &["pending"], &[]);
    p.run(&[])
        .expect_code(0)
        .stdout_has("[MONITOR] No active initiative found")
        .no_panic();

    let d = p.spawn_daemon(&["--daemon", "--interval", "1"]);
    assert!(
        p.wait_log("Starting monitor daemon", SOON),
        "{}",
        d.stderr_text()
    );
    p.initiative(INIT, "IN PROGRESS", "2024-05-01T10:00:00");
    p.dead_stream("api");
    assert!(
        p.wait_log("Found 1 dead worker(s): api", Duration::from_secs(10)),
        "{}",
        p.monitor_log()
    );
    stop_daemon(&p, &d);
}

/// SIGHUP (a closed terminal, or "reload") never ends a foreground daemon:
/// it reads monitor.toml again, refuses a bad one with a clear line and
/// keeps the settings in force, and still stops cleanly on SIGTERM.
#[test]
fn sighup_reloads_the_config_and_never_ends_the_daemon() {
    let p = TestProject::new();
    p.dead_stream("api");
    p.write_config("[monitor]\nauto_restart = false\n");
    let d = p.spawn_daemon(&["--daemon", "--interval", "1"]);
    assert!(
        p.wait_log("Found 1 dead worker(s): api", SOON),
        "{}",
        p.monitor_log()
    );
    assert_eq!(p.count_in_log("Restarting worker api"), 0);

    p.write_config("[monitor]\nauto_restart = true\n");
    p.signal_ours(d.pid, Signal::SIGHUP);
    assert!(
        p.wait_log("Received SIGHUP: settings read again", SOON),
        "{}",
        p.monitor_log()
    );
    assert!(
        p.wait_log("Restarting worker api", SOON),
        "the reloaded auto_restart takes effect\n{}",
        p.monitor_log()
    );

    p.write_config("[monitor]\nno_such_key = 1\n");
    p.signal_ours(d.pid, Signal::SIGHUP);
    assert!(
        p.wait_log("new settings are refused", SOON),
        "{}",
        p.monitor_log()
    );
    assert!(is_alive(d.pid), "the daemon survived both SIGHUPs");
    assert!(p.orch.join("state/daemon.json").exists());
    p.stop_daemon(&d);
    assert!(p.monitor_log().contains("Received shutdown signal"));
}

/// A wrapper that starts its worker in the background, writes the worker's
/// PID and exits: the restart succeeds, and the wrapper's exit is not
/// reported as the worker's.
#[test]
fn a_wrapper_that_forks_its_worker_and_exits_is_not_the_worker_dying() {
    use std::os::unix::fs::PermissionsExt;
    let p = TestProject::new();
    p.dead_stream("api");
    std::fs::write(
        p.wrapper(),
        "#!/usr/bin/env bash\n# Starts the worker in the background and leaves.\nsleep 600 &\necho $! > \"$2\"\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(p.wrapper(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = p.spawn_daemon(&["--daemon", "--auto-restart", "--interval", "30"]);
    assert!(
        p.wait_log("Worker api restarted (PID", SOON),
        "{}",
        p.monitor_log()
    );
    let worker = restarted_pid(&p.monitor_log(), "api").expect("the worker's PID");
    assert!(is_alive(worker));
    assert!(
        p.wait_log("its worker (PID", SOON),
        "the wrapper's exit is told apart\n{}",
        p.monitor_log()
    );
    let log = p.monitor_log();
    assert!(
        !log.contains(&format!("Worker api (PID {worker}) died")),
        "{log}"
    );
    assert!(!log.contains("Failed to restart"), "{log}");
    assert_eq!(p.count_in_log("Restarting worker api"), 1, "{log}");
    p.stop_daemon(&d);
}
