//! The operator's day and drop-in fidelity: the original's remaining lines,
//! a restart budget that governs (and starts that can never succeed giving
//! up at once), failed starts never reported as restarts, held streams that
//! are not dead, the verbs, short help, plain watch output off a terminal,
//! the man pages, monitor.log rotation, and the portable process backend.

use std::fs;
use std::time::Duration;

use crate::helpers::*;

/// The original says which initiative it monitors on every run, and warns
/// that a daemon without --auto-restart only reports.
#[test]
fn the_originals_initiative_line_and_report_only_daemon_warning() {
    let p = TestProject::new();
    p.stream("api", &["pending"], &[]);
    let line = format!("Monitoring initiative: Initiative {INIT}");
    p.run(&[])
        .expect_code(0)
        .stdout_has(&format!("[MONITOR] {line}"))
        .no_panic();
    p.run(&[]).expect_code(0).stdout_has(&line);
    assert_eq!(p.count_in_log(&format!("[INFO] {line}")), 2);

    let warning = "Daemon mode without --auto-restart will only report dead workers";
    let d = p.spawn_daemon(&["--daemon", "--interval", "1"]);
    assert!(p.wait_log(warning, SOON), "{}", d.stderr_text());
    // Its signal handlers are in place once it says it starts.
    assert!(p.wait_log("Starting monitor daemon", SOON));
    assert!(p.wait_log("Auto-restart disabled", SOON));
    p.stop_daemon(&d);
    assert!(d.stdout_text().contains(warning));
    let with = p.spawn_daemon(&["--daemon", "--auto-restart", "--interval", "1"]);
    assert!(wait_for(
        || p.count_in_log("Starting monitor daemon") == 2,
        SOON
    ));
    p.stop_daemon(&with);
    assert_eq!(p.count_in_log(warning), 1, "said with --auto-restart too");
}

/// The budget governs: an identical crash loop gets every restart of
/// `--max-restarts` (the same-signature breaker is off by default).
#[test]
fn an_identical_crash_loop_gets_the_whole_restart_budget() {
    let p = TestProject::new();
    p.dead_stream("api");
    p.install_claude_script(
        "echo \"crasher: starting\"\n\
         sleep 0.2\n\
         echo \"crasher: fatal error: connection refused\" >&2\n\
         exit 1\n",
    );
    let d = p.spawn_daemon(&[
        "--daemon",
        "--auto-restart",
        "--max-restarts",
        "10",
        "--backoff-base",
        "0.1",
        "--backoff-max",
        "0.4",
        "--interval",
        "30",
    ]);
    assert!(
        p.wait_log(
            "Worker api has reached max restart limit (10)",
            Duration::from_secs(60)
        ),
        "stderr: {}",
        d.stderr_text()
    );
    p.stop_daemon(&d);
    for k in 1..=10 {
        assert_eq!(
            p.count_in_log(&format!("Restarting worker api (attempt {k}/10)")),
            1,
            "attempt {k}"
        );
    }
    assert_eq!(p.count_in_log("gave up: the same failure"), 0);
    // Each attempt is a failed start (the worker dies at once), said with
    // its exit code and never as a restart. Which words say it depends on
    // whether the spawn saw the worker before it died ("the worker ended")
    // or only its wrapper's exit ("the wrapper exited"): a race on a loaded
    // machine, and with the slower portable backend.
    assert_eq!(p.count_in_log("restarted (PID"), 0);
    let log = fs::read_to_string(p.orch.join("logs/monitor.log")).unwrap();
    let failed_with_code = log
        .lines()
        .filter(|l| l.contains("Failed to restart worker api:") && l.contains("(exit code 1)"))
        .count();
    assert_eq!(failed_with_code, 10, "{log}");
    // The failure's signature and class stay in the attempt records.
    let attempt: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(p.orch.join("state/self_heal/api/attempt-2.json")).unwrap(),
    )
    .unwrap();
    assert!(attempt["class"].is_string(), "{attempt}");
    assert!(attempt["signature"].is_string(), "{attempt}");
    let restarts: Vec<serde_json::Value> = p
        .events()
        .into_iter()
        .filter(|e| e["event"] == "restart")
        .collect();
    assert_eq!(restarts.len(), 10);
    for e in &restarts {
        assert!(e["class"].is_string() && e["signature"].is_string(), "{e}");
    }
    assert_eq!(
        restarts[1]["signature"], restarts[9]["signature"],
        "identical crashes"
    );
}

/// `claude` missing: exit 127 at start gives up at once, with the reason,
/// and never says "restarted".
#[test]
fn exit_127_at_start_gives_up_at_once() {
    let p = TestProject::new();
    p.dead_stream("api");
    p.set_env("MONITOR_WORKERS_CLAUDE", "claude-not-installed-here");
    let r = p.run(&["--auto-restart", "--max-restarts", "10"]);
    r.expect_code(1)
        .stdout_has("Restarting worker api (attempt 1/10)")
        .stdout_has("Worker api gave up: claude not found on PATH: command 'claude-not-installed-here' not found")
        .stdout_has("(exit code 127 at start)")
        .stdout_lacks("restarted (PID")
        .no_panic();
    let st = p.stream_status("api");
    assert_eq!(st["state"], "gave_up", "{st}");
    assert!(p
        .events()
        .iter()
        .any(|e| e["event"] == "gave_up" && e["reason"].as_str().unwrap().contains("127")));
    p.run(&["--auto-restart", "--max-restarts", "10"])
        .expect_code(1)
        .stdout_lacks("Restarting worker")
        .no_panic();
}

/// A missing wrapper is a start that can never succeed: given up at once.
#[test]
fn a_missing_wrapper_gives_up_at_once() {
    let p = TestProject::new();
    p.dead_stream("api");
    fs::remove_file(p.wrapper()).unwrap();
    p.run(&["--auto-restart", "--max-restarts", "10"])
        .expect_code(1)
        .stdout_has("Worker api gave up: worker wrapper")
        .stdout_has("is missing")
        .no_panic();
    assert_eq!(p.stream_status("api")["state"], "gave_up");
}

/// A worker that dies after its PID file was seen, but within the startup
/// window, turns the daemon's restart into a failed start; exit 127 then
/// gives up. Exit 127 after the window is an ordinary failure.
#[test]
fn a_death_within_the_startup_window_is_a_failed_start() {
    let p = TestProject::new();
    p.dead_stream("api");
    p.install_claude_script("echo \"starting slowly\"\nsleep 1.2\necho \"gone\"\nexit 127\n");
    let d = p.spawn_daemon(&[
        "--daemon",
        "--auto-restart",
        "--max-restarts",
        "5",
        "--interval",
        "30",
    ]);
    assert!(
        p.wait_log("Worker api gave up: claude not found on PATH: gone", SOON),
        "{}",
        d.stderr_text()
    );
    p.stop_daemon(&d);
    assert_eq!(p.count_in_log("Restarting worker api"), 1);
    assert_eq!(p.state_json()["streams"]["api"]["restarts"], 1);

    // The same exit after the (shortened) window: restarted again.
    let q = TestProject::new();
    q.dead_stream("api");
    q.install_claude_script("echo \"working\"\nsleep 1.2\nexit 127\n");
    let d = q.spawn_daemon(&[
        "--daemon",
        "--auto-restart",
        "--max-restarts",
        "5",
        "--min-uptime",
        "0.5",
        "--backoff-base",
        "0.1",
        "--interval",
        "30",
    ]);
    assert!(
        q.wait_log("Restarting worker api (attempt 2/5)", SOON),
        "{}",
        d.stderr_text()
    );
    q.stop_daemon(&d);
    assert_eq!(q.count_in_log("gave up"), 0);
}

/// A stream the operator stopped or paused is not dead: a one-shot check
/// reports it and exits 0. `stop --all` leaves complete and waiting streams
/// alone.
#[test]
fn held_streams_are_reported_not_dead_and_stop_all_skips_finished_ones() {
    let p = TestProject::new();
    p.dead_stream("api");
    p.dead_stream("web");
    p.run(&[]).expect_code(1);
    p.run(&["stop", "api"]).expect_code(0).no_panic();
    p.run(&["pause", "web"]).expect_code(0).no_panic();
    p.run(&["--auto-restart"])
        .expect_code(0)
        .stdout_has("Worker api is stopped by")
        .stdout_has("Worker web is paused by")
        .stdout_lacks("dead worker")
        .stdout_lacks("Restarting worker")
        .no_panic();

    let q = TestProject::new();
    q.dead_stream("api");
    q.stream("done", &["completed"], &[]);
    q.evidence_log("done");
    q.stream("later", &["pending"], &["api"]);
    q.run(&["stop", "--all"]).expect_code(0).no_panic();
    assert_eq!(q.stream_status("api")["state"], "stopped");
    assert_eq!(q.stream_status("done")["state"], "completed");
    assert_eq!(q.stream_status("later")["state"], "waiting_on_deps");
}

/// `start` supervises unless told `--report-only`; `stop` right after a
/// `start` finds the new daemon even when a dead daemon's record was left;
/// `restart` says nothing of a stale lock it made itself.
#[test]
fn start_supervises_stop_follows_at_once_and_restart_is_quiet_about_locks() {
    let p = TestProject::new();
    // A dead worker makes the daemon's first check slow (a restart).
    p.dead_stream("api");
    // What a daemon killed with -9 leaves: its record, naming a dead PID.
    let gone = p.spawn(p.command("true"));
    assert!(p.wait_exit(gone, SOON).is_some());
    fs::create_dir_all(p.orch.join("state")).unwrap();
    let stale = serde_json::json!({
        "pid": gone, "start_ticks": 1, "started_ms": 1, "heartbeat_ms": 1,
        "interval_secs": 30, "args": ["--daemon"]
    });
    fs::write(p.orch.join("state/daemon.json"), stale.to_string()).unwrap();

    let start = [
        "start",
        "--interval",
        "30",
        "--on-give-up",
        "true",
        "--min-uptime",
        "5",
    ];
    // `stop` at once: the lock and the record must agree already.
    p.run(&start).expect_code(0).no_panic();
    p.run(&["stop"])
        .expect_code(0)
        .stdout_has("Monitor daemon stopped")
        .no_panic();

    p.run(&start).expect_code(0).no_panic();
    let record = p.daemon_record();
    let args: Vec<&str> = record["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(args.contains(&"--auto-restart"), "{args:?}");
    // Every check flag given to `start` reaches the daemon.
    for pair in [
        ["--interval", "30"],
        ["--on-give-up", "true"],
        ["--min-uptime", "5"],
    ] {
        assert!(
            args.windows(2).any(|w| w == pair),
            "{pair:?} not in {args:?}"
        );
    }
    p.run(&["stop"])
        .expect_code(0)
        .stdout_has("Monitor daemon stopped")
        .no_panic();

    p.run(&["start", "--report-only"]).expect_code(0).no_panic();
    let args = p.daemon_record()["args"].clone();
    assert!(
        !args
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--auto-restart"),
        "{args}"
    );
    let r = p.run(&["restart"]);
    r.expect_code(0)
        .stdout_has("Monitor daemon started")
        .no_panic();
    assert!(!r.stdout.to_lowercase().contains("stale"), "{}", r.stdout);
    p.run(&["stop"]).expect_code(0).no_panic();
    p.run(&["start", "--report-only", "--auto-restart"])
        .expect_code(2);
}

/// `resume --all` resumes every held stream; `reset` of the stream whose
/// failures opened the global breaker lifts it (another stream's does not);
/// `reset --all` lifts it outright.
#[test]
fn resume_all_and_reset_lifting_the_breaker() {
    let p = TestProject::new();
    for s in ["a", "b", "c"] {
        p.stream(s, &["pending"], &[]);
    }
    p.run(&["pause", "a"]).expect_code(0);
    p.run(&["stop", "b"]).expect_code(0);
    p.run(&["resume", "--all"]).expect_code(0).no_panic();
    for s in ["a", "b"] {
        let state = p.stream_status(s)["state"].clone();
        assert!(state != "paused" && state != "stopped", "{s}: {state}");
    }
    p.run(&["resume"]).expect_code(2);

    let open_breaker = |streams: &[&str]| {
        let mut state = p.state_json();
        state["breaker_until_ms"] = serde_json::json!(now_ms() + 600_000);
        state["breaker_streams"] = serde_json::json!(streams);
        p.write_state(&state);
    };
    let breaker_open = || {
        p.state_json()["breaker_until_ms"]
            .as_u64()
            .is_some_and(|u| u > now_ms())
    };
    open_breaker(&["a", "b"]);
    p.run(&["reset", "c"]).expect_code(0).no_panic();
    assert!(breaker_open(), "c did not open it");
    p.run(&["reset", "a"])
        .expect_code(0)
        .stdout_has("Global restart breaker lifted")
        .no_panic();
    assert!(!breaker_open());
    assert!(p.events().iter().any(|e| e["event"] == "breaker_lifted"));

    open_breaker(&["a"]);
    p.run(&["reset", "--all"]).expect_code(0).no_panic();
    assert!(!breaker_open());
}

/// Each subcommand's help shows its own options (not the ~20 check flags);
/// `help --help` works; the drop-in flags still work without a subcommand
/// and after `start`.
#[test]
fn subcommand_help_is_short_and_help_help_works() {
    let p = TestProject::new();
    let r = p.run(&["pause", "--help"]);
    r.expect_code(0).stdout_has("Usage: monitor-workers pause");
    r.stdout_lacks("--auto-restart")
        .stdout_lacks("--max-restarts");
    assert!(r.stdout.lines().count() <= 25, "{}", r.stdout);
    p.run(&["help", "--help"])
        .expect_code(0)
        .stdout_has("Usage: monitor-workers help");
    p.run(&["help", "pause"])
        .expect_code(0)
        .stdout_has("Usage: monitor-workers pause");
    p.run(&["help", "frobnicate"]).expect_code(2);
    let top = p.run(&["--help"]);
    top.expect_code(0);
    for flag in [
        "--auto-restart",
        "--max-restarts",
        "--daemon",
        "--interval",
        "--quiet",
    ] {
        top.stdout_has(flag);
    }
    let start = p.run(&["start", "--help"]);
    start.stdout_has("--report-only").stdout_has("--interval");
    p.stream("api", &["pending"], &[]);
    p.run(&["--max-restarts", "3", "--quiet", "--auto-restart"])
        .expect_code(0)
        .no_panic();
    p.run(&["status", "--project-root", p.proj.to_str().unwrap()])
        .expect_code(0)
        .no_panic();
    p.run(&["pause", "--interval", "3", "api"]).expect_code(2);
}

/// `man --dir` writes every page the main page refers to; the main page has
/// FILES and ENVIRONMENT.
#[test]
fn man_pages_exist_for_every_reference_and_name_files_and_environment() {
    let p = TestProject::new();
    let main = p.run(&["man"]);
    main.expect_code(0)
        .stdout_has(".SH FILES")
        .stdout_has(".SH ENVIRONMENT")
        .stdout_has("monitor\\-state.json")
        .stdout_has("MONITOR_WORKERS_PROJECT_ROOT");
    let dir = p.root.join("man1");
    p.run(&["man", "--dir", dir.to_str().unwrap()])
        .expect_code(0);
    let written = fs::read_to_string(dir.join("monitor-workers.1")).unwrap();
    assert_eq!(written, main.stdout);
    let mut refs = 0;
    for word in main.stdout.split(|c: char| c.is_whitespace()) {
        if let Some(name) = word
            .strip_prefix("monitor\\-workers\\-")
            .and_then(|w| w.strip_suffix("(1)"))
        {
            refs += 1;
            let file = dir.join(format!("monitor-workers-{}.1", name.replace("\\-", "-")));
            let page = fs::read_to_string(&file).unwrap_or_else(|_| panic!("{file:?} missing"));
            assert!(page.contains(".SH NAME"), "{file:?}");
        }
    }
    assert!(refs >= 10, "{refs} references:\n{}", main.stdout);
}

/// `status --watch` into a pipe prints plain snapshots, no screen clearing.
#[test]
fn status_watch_off_a_terminal_prints_plain_snapshots() {
    use std::io::Read;
    let p = TestProject::new();
    p.stream("api", &["pending"], &[]);
    let mut cmd = p.monitor_std();
    cmd.args(["status", "--watch"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let mut out = child.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = std::sync::Arc::clone(&seen);
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = out.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    // Snapshots come every 2 s: wait for the second, then stop it.
    assert!(wait_for(
        || seen.lock().unwrap().matches("Monitor daemon:").count() >= 2,
        SOON
    ));
    p.signal_ours(pid, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_for(|| child.try_wait().unwrap().is_some(), SOON));
    reader.join().unwrap();
    let text = seen.lock().unwrap().clone();
    assert!(!text.contains('\x1b'), "control codes in {text:?}");
    assert!(text.matches("Monitor daemon:").count() >= 2, "{text}");
}

/// monitor.log is rotated by size, keeping five old files, and "All workers
/// healthy" is logged again only after a change (the console of a one-shot
/// still says it every time).
#[test]
fn monitor_log_rotates_and_says_healthy_only_after_a_change() {
    let p = TestProject::new();
    p.stream("api", &["pending"], &[]);
    let log = p.logs_dir().join("monitor.log");
    let numbered = |n: u32| p.logs_dir().join(format!("monitor.log.{n}"));
    for n in 1..=5 {
        fs::write(numbered(n), format!("old {n}\n")).unwrap();
    }
    let big = "[2026-01-01T00:00:00.000000] [INFO] filler line of an old log\n".repeat(140_000);
    assert!(big.len() > 8 * 1024 * 1024);
    fs::write(&log, &big).unwrap();

    p.run(&[]).expect_code(0).stdout_has("All workers healthy");
    assert_eq!(fs::read_to_string(numbered(1)).unwrap(), big);
    for n in 2..=5 {
        assert_eq!(
            fs::read_to_string(numbered(n)).unwrap(),
            format!("old {}\n", n - 1)
        );
    }
    assert!(!numbered(6).exists(), "only five kept");
    let fresh = fs::read_to_string(&log).unwrap();
    assert!(
        fresh.len() < 10_000 && fresh.contains("All workers healthy"),
        "{fresh}"
    );

    // Nothing changed: the console says it, monitor.log does not.
    p.run(&[]).expect_code(0).stdout_has("All workers healthy");
    assert_eq!(p.count_in_log("All workers healthy"), 1);
    // A change (a dead worker, then a healthy check again): said again.
    p.dead_stream("web");
    p.run(&[]).expect_code(1);
    p.run(&["pause", "web"]).expect_code(0);
    p.run(&[]).expect_code(0);
    assert_eq!(
        p.count_in_log("All workers healthy"),
        2,
        "{}",
        p.monitor_log()
    );
}

/// `MONITOR_WORKERS_BACKEND=portable` looks at processes only through `ps`
/// (as on macOS): a running worker is still found healthy, a dead one dead
/// and restarted; a bad value is a usage error.
#[test]
fn the_portable_backend_judges_workers_as_the_proc_one_does() {
    let p = TestProject::new();
    p.set_env("MONITOR_WORKERS_BACKEND", "portable");
    p.stream("api", &["pending"], &[]);
    p.dead_stream("gone");
    let pid = p.spawn_worker_process("api");
    assert!(wait_for(|| p.read_pid_file("api") == Some(pid), SOON));
    // The same verdicts as with /proc, from `ps` alone.
    p.run(&[])
        .expect_code(1)
        .stdout_has("Found 1 dead worker(s): gone")
        .no_panic();
    let st = p.stream_status("api");
    assert_eq!(st["health"], "healthy", "{st}");
    assert_eq!(st["pid"], pid);
    p.run(&["--auto-restart"])
        .expect_code(1)
        .stdout_has("Worker gone restarted (PID")
        .no_panic();
    p.set_env("MONITOR_WORKERS_BACKEND", "fast");
    p.run(&[])
        .expect_code(2)
        .stderr_has("MONITOR_WORKERS_BACKEND=\"fast\" is not a process backend");
}

/// README: a symlink on PATH to a project's binary checks that project from
/// anywhere; a copy outside any project finds the project from the cwd.
#[test]
fn a_symlinked_binary_is_tied_to_its_project_and_a_copy_follows_the_cwd() {
    let p = TestProject::new();
    p.stream("api", &["pending"], &[]);
    let installed = p.orch.join("monitor-workers");
    fs::copy(BIN, &installed).unwrap();
    let on_path = p.root.join("local-bin");
    fs::create_dir_all(&on_path).unwrap();
    std::os::unix::fs::symlink(&installed, on_path.join("monitor-workers")).unwrap();
    let out = p
        .command(on_path.join("monitor-workers"))
        .current_dir(&p.home)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("Monitoring initiative"), "{stdout}");

    let copy = p.root.join("copy-bin");
    fs::create_dir_all(&copy).unwrap();
    fs::copy(BIN, copy.join("monitor-workers")).unwrap();
    let from_home = p
        .command(copy.join("monitor-workers"))
        .current_dir(&p.home)
        .output()
        .unwrap();
    assert_eq!(from_home.status.code(), Some(3));
    let sub = p.proj.join("src");
    fs::create_dir_all(&sub).unwrap();
    let from_project = p
        .command(copy.join("monitor-workers"))
        .current_dir(&sub)
        .output()
        .unwrap();
    assert_eq!(from_project.status.code(), Some(0));
}
