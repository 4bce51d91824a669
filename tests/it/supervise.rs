//! Supervision (SPEC 3.2, 3.3, 3.5, 3.6): backoff, give-up and reset, the
//! global breaker, the background daemon's lifecycle, graceful stop, the
//! operator verbs, restart policies and the event log.

use std::fs;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::helpers::*;

/// SPEC 3.3: a crash loop backs off exponentially (base, 2·base, 4·base with
/// ±10% jitter), then gives up at the budget until an operator `reset`.
#[test]
fn crash_loop_backs_off_exponentially_then_gives_up_until_reset() {
    let p = TestProject::new();
    p.dead_stream("api");
    // A worker that crashes 0.2 s after it started: every spawn is seen to
    // succeed, then the worker dies (a wrapper that dies before the monitor
    // saw its PID file is a failed spawn, tested on its own below).
    p.install_claude_script(
        "echo \"crasher: starting, then failing with code 1 in a moment\"\n\
         sleep 0.2\n\
         echo \"crasher: fatal error, exiting\" >&2\n\
         exit 1\n",
    );
    // Identical crashes would end the loop after 3 (same_failure_limit); this
    // test is about the budget.
    p.write_config("[monitor]\nsame_failure_limit = 0\n");
    let base = 0.3;
    // The interval is long: the daemon must wake when a backoff ends.
    let d = p.spawn_daemon(&[
        "--daemon",
        "--auto-restart",
        "--backoff-base",
        "0.3",
        "--max-restarts",
        "4",
        "--interval",
        "5",
        // Dying 0.2 s after its start must count as a running worker's
        // crash here, not as a failed start.
        "--min-uptime",
        "0.1",
    ]);
    assert!(
        p.wait_log(
            "Worker api has reached max restart limit (4)",
            Duration::from_secs(20)
        ),
        "no give-up\nstderr: {}",
        d.stderr_text()
    );
    let log = p.monitor_log();
    for k in 1..=4 {
        assert_eq!(
            p.count_in_log(&format!("Restarting worker api (attempt {k}/4)")),
            1,
            "{log}"
        );
    }
    let times = p.log_times("Restarting worker api (attempt ");
    assert_eq!(times.len(), 4, "{log}");
    let gaps: Vec<f64> = times.windows(2).map(|w| secs_between(w[0], w[1])).collect();
    for (k, gap) in gaps.iter().enumerate() {
        let backoff = base * 2f64.powi(k as i32);
        assert!(
            *gap >= 0.9 * backoff - 0.002,
            "gap {} is {gap:.3}s, below 0.9 x {backoff:.3}s; gaps {gaps:?}\n{log}",
            k + 1
        );
        assert!(
            *gap <= 1.1 * backoff + 1.0,
            "gap {} is {gap:.3}s for a backoff of {backoff:.3}s (interval 5s); gaps {gaps:?}\n{log}",
            k + 1
        );
    }
    // Each gap grows: the backoff doubles (jitter alone allows 0.54/0.33 = 1.64;
    // the rest is the time to notice a death).
    for w in gaps.windows(2) {
        assert!(
            w[1] >= 1.4 * w[0],
            "backoff did not grow exponentially: gaps {gaps:?}\n{log}"
        );
    }
    let gave_up = p.log_times("has reached max restart limit (4)")[0];
    assert!(gave_up > times[3], "{log}");

    // Given up: no more restarts, by the daemon or by a one-shot.
    assert!(
        !wait_for(
            || p.count_in_log("Restarting worker api") > 4,
            Duration::from_secs(1)
        ),
        "restarted after giving up:\n{}",
        p.monitor_log()
    );
    p.run(&["--auto-restart", "--max-restarts", "4"])
        .expect_code(1)
        .stdout_lacks("Restarting worker")
        .no_panic();
    let st = p.stream_status("api");
    assert_eq!(st["state"], "gave_up", "{st}");
    assert_eq!(st["health"], "gave_up", "{st}");

    // An operator reset makes it restartable again.
    p.run(&["reset", "api"]).expect_code(0).no_panic();
    assert_ne!(p.stream_status("api")["state"], "gave_up");
    p.run(&["--auto-restart", "--max-restarts", "4"])
        .expect_code(1)
        .stdout_has("Restarting worker api (attempt 1/4)")
        .no_panic();
    p.stop_daemon(&d);
}

/// SPEC 2 and 3.3: a restart that fails (the wrapper exits before its PID
/// file) is retried when its backoff ends, not at the daemon's next interval.
#[test]
fn daemon_retries_a_failed_restart_when_its_backoff_ends_not_at_the_interval() {
    let p = TestProject::new();
    p.dead_stream("api");
    fs::write(
        p.wrapper(),
        "#!/bin/sh\necho 'wrapper: broken' >&2\nexit 1\n",
    )
    .unwrap();
    let d = p.spawn_daemon(&[
        "--daemon",
        "--auto-restart",
        "--backoff-base",
        "0.3",
        "--max-restarts",
        "5",
        "--interval",
        "30",
    ]);
    assert!(
        p.wait_log("Restarting worker api (attempt 1/5)", SOON),
        "{}",
        d.stderr_text()
    );
    assert!(
        p.wait_log("before its PID file", SOON),
        "{}",
        p.monitor_log()
    );
    assert!(
        p.wait_log(
            "Restarting worker api (attempt 2/5)",
            Duration::from_secs(5)
        ),
        "the failed restart (backoff 0.3s) was not retried within 5s (interval 30s):\n{}",
        p.monitor_log()
    );
    let times = p.log_times("Restarting worker api (attempt ");
    let gap = secs_between(times[0], times[1]);
    assert!((0.26..2.0).contains(&gap), "retried after {gap:.3}s");
    p.stop_daemon(&d);
}

/// SPEC 3.3: one outage must not become N crash loops. Three of four workers
/// die at once: the breaker opens and no restart happens for its cooldown;
/// then all three are restarted.
#[test]
fn most_workers_dying_at_once_open_the_global_breaker_for_its_cooldown() {
    let p = TestProject::new();
    p.write_config("[breaker]\nwindow = 60\nmin_failures = 3\ncooldown = 3\n");
    let names = ["w1", "w2", "w3", "w4"];
    for n in names {
        p.stream(n, &["completed", "pending"], &[]);
    }
    // w1..w3 share one process group, so one SIGKILL ends them at once.
    let first = p.spawn_worker_in_group("w1", &[], 0);
    let mut wrappers = vec![first];
    for n in &names[1..3] {
        wrappers.push(p.spawn_worker_in_group(n, &[], first as i32));
    }
    wrappers.push(p.spawn_worker_process("w4"));
    for n in names {
        assert!(wait_for(
            || fs::metadata(p.log_path(n)).is_ok_and(|m| m.len() > 100),
            SOON
        ));
    }
    let d = p.spawn_daemon(&[
        "--daemon",
        "--auto-restart",
        "--interval",
        "1",
        "--max-restarts",
        "5",
        "--backoff-base",
        "0.2",
    ]);
    assert!(
        p.wait_log("All workers healthy", SOON),
        "{}",
        d.stderr_text()
    );

    p.signal_group_ours(first, Signal::SIGKILL);
    assert!(
        p.wait_log("Global restart breaker open", SOON),
        "{}",
        p.monitor_log()
    );
    let opened = p.log_times("Global restart breaker open")[0];
    assert!(
        wait_for(
            || names[..3].iter().all(|n| p
                .monitor_log()
                .contains(&format!("Worker {n} restarted (PID: "))),
            Duration::from_secs(12)
        ),
        "the three workers were not restarted after the 3s cooldown:\n{}",
        p.monitor_log()
    );
    let log = p.monitor_log();
    for t in p.log_times("Restarting worker") {
        let after = secs_between(opened, t);
        // A worker seen dead before the others may be restarted before the
        // breaker opened; none while it is open.
        assert!(
            !(0.0..2.9).contains(&after),
            "a restart {after:.3}s after the breaker opened (cooldown 3s):\n{log}"
        );
        assert!(
            after <= 3.0 + 2.5,
            "a restart {after:.3}s after the breaker opened, long after its cooldown:\n{log}"
        );
    }
    assert!(is_alive(wrappers[3]), "the healthy worker was touched");
    assert!(!log.contains("Restarting worker w4"), "{log}");
    p.stop_daemon(&d);
}

/// SPEC 3.5: `start` in the background, a second `start` refused naming the
/// PID, `status` with a fresh heartbeat, `restart` with the same settings,
/// `stop` leaving workers running, and a stale lock of a dead daemon.
#[test]
fn start_status_restart_stop_of_the_background_daemon() {
    let p = TestProject::new();
    p.stream("api", &["completed", "pending"], &[]);
    let worker = p.spawn_worker_process("api");
    let lock_path = p.orch.join("state/daemon.lock");

    let started = p.run(&["start", "--auto-restart", "--interval", "1"]);
    started
        .expect_code(0)
        .stdout_has("Monitor daemon started (PID ")
        .no_panic();
    assert!(
        started.elapsed < Duration::from_secs(10),
        "start did not return"
    );
    let first = pid_after(&started.stdout, "Monitor daemon started (PID").unwrap();
    assert!(is_alive(first) && p.has_tag(first));

    let again = p.run(&["start", "--auto-restart", "--interval", "1"]);
    again
        .expect_code(3)
        .stderr_has(&format!("PID {first}"))
        .no_panic();
    assert!(is_alive(first), "the running daemon must be unaffected");

    assert!(
        wait_for(
            || p.daemon_record()["pid"].as_u64() == Some(first as u64),
            SOON
        ),
        "no daemon record"
    );
    let status = p.status_json();
    let daemon = &status["daemon"];
    assert_eq!(daemon["running"], true, "{status}");
    assert_eq!(daemon["pid"].as_u64(), Some(first as u64), "{status}");
    assert_eq!(daemon["health"], "healthy", "{status}");
    assert!(
        daemon["heartbeat_age_secs"]
            .as_u64()
            .is_some_and(|a| a <= 3),
        "stale heartbeat: {status}"
    );
    let args_before = p.daemon_record()["args"].clone();
    assert!(
        args_before
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "--auto-restart")),
        "{args_before}"
    );

    // restart: a new daemon with the same settings.
    let restarted = p.run(&["restart"]);
    restarted
        .expect_code(0)
        .stdout_has("Monitor daemon started (PID ")
        .no_panic();
    let second = pid_after(&restarted.stdout, "Monitor daemon started (PID").unwrap();
    assert_ne!(second, first);
    assert!(wait_for(|| !is_alive(first), SOON), "old daemon still runs");
    assert!(
        wait_for(
            || p.daemon_record()["pid"].as_u64() == Some(second as u64),
            SOON
        ),
        "no record of the new daemon"
    );
    assert_eq!(p.daemon_record()["args"], args_before);
    assert_eq!(p.daemon_record()["interval_secs"], 1);

    // stop: the daemon goes, the lock is free, the worker keeps running.
    p.run(&["stop"]).expect_code(0).no_panic();
    assert!(wait_for(|| !is_alive(second), SOON), "daemon still runs");
    {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lock_path)
            .unwrap();
        assert!(
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok(),
            "the daemon lock is still held"
        );
    }
    assert_eq!(p.status_json()["daemon"]["running"], false);
    assert!(is_alive(worker), "stopping the daemon stopped the worker");
    assert_eq!(p.read_pid_file("api"), Some(worker));

    // A daemon killed -9 leaves its PID in the lock file: no obstacle.
    let r = p.run(&["start", "--interval", "1"]);
    r.expect_code(0);
    let third = pid_after(&r.stdout, "Monitor daemon started (PID").unwrap();
    p.signal_ours(third, Signal::SIGKILL);
    assert!(wait_for(|| !is_alive(third), SOON));
    assert_eq!(
        fs::read_to_string(&lock_path).unwrap().trim(),
        third.to_string()
    );
    let r = p.run(&["start", "--interval", "1"]);
    r.expect_code(0)
        .stdout_has("Monitor daemon started (PID ")
        .no_panic();
    let fourth = pid_after(&r.stdout, "Monitor daemon started (PID").unwrap();
    assert_ne!(fourth, third);
    assert!(is_alive(fourth));
    p.run(&["stop"]).expect_code(0);
    assert!(wait_for(|| !is_alive(fourth), SOON));
    assert!(is_alive(worker));
}

/// SPEC 3.2: SIGTERM to the group, the grace, then SIGKILL; the stream stays
/// stopped (a one-shot with --auto-restart leaves it) until `resume`.
#[test]
fn stop_stream_escalates_to_sigkill_after_the_grace_and_keeps_it_stopped() {
    let p = TestProject::new();
    p.stream("api", &["completed", "pending"], &[]);
    let wrapper = p.spawn_worker_with("api", &[("FAKE_CLAUDE_MODE", "ignore-term")]);
    assert!(wait_for(
        || fs::read_to_string(p.log_path("api")).is_ok_and(|t| t.contains("ignoring SIGTERM")),
        SOON
    ));
    let mut tree = descendants(wrapper);
    tree.push(wrapper);
    assert!(tree.len() >= 2, "wrapper and worker: {tree:?}");

    let r = p.run(&["stop", "api", "--grace", "1"]);
    r.expect_code(0).no_panic();
    let log = p.monitor_log();
    assert!(log.contains("Sent SIGTERM"), "{log}");
    assert!(log.contains("Sent SIGKILL"), "{log}");
    assert!(log.contains("ignored SIGTERM"), "{log}");
    assert!(
        r.elapsed >= Duration::from_millis(950),
        "SIGKILL came before the grace was over ({:?})",
        r.elapsed
    );
    for pid in &tree {
        assert!(!is_alive(*pid), "process {pid} of the worker survived");
    }
    assert_eq!(p.stream_status("api")["state"], "stopped");
    let events = p.events();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "stop" && e["stream"] == "api"),
        "{events:?}"
    );

    let r = p.run(&["--auto-restart"]);
    r.stdout_lacks("Restarting worker").no_panic();
    assert!(!p.pid_path("api").exists());
    assert_eq!(p.stream_status("api")["state"], "stopped");

    p.run(&["resume", "api"]).expect_code(0).no_panic();
    let r = p.run(&["--auto-restart"]);
    r.stdout_has("Restarting worker api (attempt 1/2)")
        .no_panic();
    let new_pid = restarted_pid(&r.stdout, "api").expect("restarted");
    assert!(is_alive(new_pid));
}

/// SPEC 3.2: a descendant that left the worker's group and session is found
/// through the parent chain and stopped too, since it carries the stream's
/// tag (as everything a worker the monitor spawned does).
#[test]
fn stop_stream_reaches_a_descendant_in_its_own_session() {
    let p = TestProject::new();
    p.stream("api", &["completed", "pending"], &[]);
    let escapee_file = p.root.join("escapee.pid");
    p.set_env("ESCAPEE_PID_FILE", escapee_file.to_str().unwrap());
    p.install_claude_script(
        "echo \"escaper: starting a child in a session of its own\"\n\
         setsid sleep 60 </dev/null >/dev/null 2>&1 &\n\
         echo $! > \"$ESCAPEE_PID_FILE\"\n\
         exec sleep 60\n",
    );
    let project = p.proj.display().to_string();
    let wrapper = p.spawn_worker_with(
        "api",
        &[
            ("MONITOR_WORKERS_STREAM", "api"),
            ("MONITOR_WORKERS_PROJECT", &project),
            ("MONITOR_WORKERS_SPAWN", "0123456789abcdef"),
        ],
    );
    assert!(wait_for(
        || fs::read_to_string(&escapee_file).is_ok_and(|t| t.ends_with('\n')),
        SOON
    ));
    let escapee: u32 = fs::read_to_string(&escapee_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(wait_for(|| proc_session(escapee) == Some(escapee), SOON));
    // Its environment is read once `setsid` has run `sleep` (until then the
    // PID may be mid-exec).
    assert!(wait_for(|| p.has_tag(escapee), SOON));
    assert_ne!(proc_pgrp(escapee), Some(wrapper), "it left the group");
    assert!(
        descendants(wrapper).contains(&escapee),
        "the parent chain leads to the wrapper"
    );

    p.run(&["stop", "api", "--grace", "1"])
        .expect_code(0)
        .no_panic();
    assert!(
        wait_for(|| !is_alive(escapee), Duration::from_secs(3)),
        "the escaped descendant {escapee} survived the stop\n{}",
        p.monitor_log()
    );
    assert!(!is_alive(wrapper));
    let log = p.monitor_log();
    assert!(
        log.lines()
            .any(|l| l.contains("outside the group") && l.contains(&escapee.to_string())),
        "{log}"
    );
}

/// SPEC 3.6: a paused dead stream is reported, never restarted, until
/// resumed. Operator verbs on an unknown stream are usage errors.
#[test]
fn paused_stream_is_reported_not_restarted_until_resumed() {
    let p = TestProject::new();
    p.dead_stream("api");
    p.run(&["pause", "api"]).expect_code(0).no_panic();
    assert_eq!(p.stream_status("api")["state"], "paused");

    // Held by the operator: reported, not dead (exit 0), not restarted.
    for _ in 0..2 {
        p.run(&["--auto-restart"])
            .expect_code(0)
            .stdout_has("Worker api is paused")
            .stdout_lacks("dead worker")
            .stdout_lacks("Restarting worker")
            .no_panic();
    }
    assert!(!p.pid_path("api").exists());
    assert_eq!(p.stream_status("api")["state"], "paused");
    assert!(
        p.monitor_log().contains("Worker api is paused"),
        "{}",
        p.monitor_log()
    );

    p.run(&["resume", "api"]).expect_code(0).no_panic();
    let r = p.run(&["--auto-restart"]);
    r.expect_code(1)
        .stdout_has("Restarting worker api (attempt 1/2)")
        .no_panic();
    assert!(restarted_pid(&r.stdout, "api").is_some_and(is_alive));
    let events = p.events();
    for verb in ["pause", "resume"] {
        assert!(
            events
                .iter()
                .any(|e| e["event"] == verb && e["stream"] == "api" && e["by"].is_string()),
            "no {verb} event with who: {events:?}"
        );
    }

    for verb in [
        &["pause", "nosuch"][..],
        &["resume", "nosuch"],
        &["reset", "nosuch"],
        &["stop", "nosuch"],
        &["restart", "nosuch"],
    ] {
        p.run(verb)
            .expect_code(2)
            .stderr_has("unknown stream nosuch")
            .no_panic();
    }
    assert!(!p.state_json()["streams"]
        .as_object()
        .is_some_and(|s| s.contains_key("nosuch")));
}

/// SPEC 3.6: `restart STREAM` replaces a running worker; the budget is not charged.
#[test]
fn operator_restart_replaces_a_running_worker_without_charging_the_budget() {
    let p = TestProject::new();
    p.stream("api", &["completed", "pending"], &[]);
    let old = p.spawn_worker_process("api");
    let mut old_tree = descendants(old);
    old_tree.push(old);
    p.run(&[]).expect_code(0);

    let r = p.run(&["restart", "api", "--grace", "2"]);
    r.expect_code(0).no_panic();
    let new = p.read_pid_file("api").expect("a new PID file");
    assert_ne!(new, old);
    assert!(is_alive(new));
    for pid in &old_tree {
        assert!(!is_alive(*pid), "old process {pid} still runs");
    }
    assert_eq!(p.live_wrappers("api"), vec![new], "one wrapper");
    let st = p.stream_status("api");
    assert_eq!(st["restarts"], 0, "the budget was charged: {st}");
    assert!(
        p.monitor_log().contains("operator restart"),
        "{}",
        p.monitor_log()
    );
    assert!(p
        .events()
        .iter()
        .any(|e| e["event"] == "operator_restart" && e["by"].is_string()));
    // The budget is whole: a death now is attempt 1 of 2.
    p.signal_group_ours(new, Signal::SIGKILL);
    assert!(wait_for(|| !is_alive(new), SOON));
    p.run(&["--auto-restart"])
        .expect_code(1)
        .stdout_has("Restarting worker api (attempt 1/2)");
}

/// SPEC 3.3: `--restart-policy on-failure` leaves a worker that exited 0 and
/// restarts one that exited 1.
#[test]
fn on_failure_policy_restarts_only_failed_exits() {
    let p = TestProject::new();
    for s in ["clean", "crash"] {
        p.stream(s, &["completed", "pending", "pending"], &[]);
    }
    for (s, code) in [("clean", "0"), ("crash", "1")] {
        let status = p.run_worker_to_end(
            s,
            &[
                ("FAKE_CLAUDE_MODE", "exit"),
                ("FAKE_CLAUDE_EXIT_CODE", code),
            ],
        );
        assert_eq!(status.code(), Some(code.parse().unwrap()));
        let log = fs::read_to_string(p.log_path(s)).unwrap();
        assert!(log.contains(&format!("exited with code {code}")), "{log}");
    }

    let r = p.run(&["--auto-restart", "--restart-policy", "on-failure"]);
    r.expect_code(1)
        .stdout_has("Found 2 dead worker(s): clean, crash")
        .stdout_has("Restarting worker crash (attempt 1/2)")
        .stdout_lacks("Restarting worker clean")
        .no_panic();
    assert!(!p.pid_path("clean").exists());
    // And it stays so.
    p.run(&["--auto-restart", "--restart-policy", "on-failure"])
        .stdout_lacks("Restarting worker clean");
    assert_eq!(p.count_in_log("Restarting worker clean"), 0);
}

/// SPEC 3.6: events.jsonl is one JSON object per line, with transitions
/// (from/to) and the restart with its attempt.
#[test]
fn events_record_transitions_and_the_restart_attempt() {
    let p = TestProject::new();
    p.dead_stream("api");
    let r = p.run(&["--auto-restart"]);
    r.expect_code(1)
        .stdout_has("Restarting worker api (attempt 1/2)");
    let new_pid = restarted_pid(&r.stdout, "api").unwrap();
    let events = p.events();
    assert!(!events.is_empty());
    for e in &events {
        assert!(e.is_object(), "{e}");
        assert!(
            e["time"].is_string() && e["ts_ms"].is_u64() && e["event"].is_string(),
            "{e}"
        );
    }
    let restart = events
        .iter()
        .find(|e| e["event"] == "restart" && e["stream"] == "api")
        .unwrap_or_else(|| panic!("no restart event: {events:?}"));
    assert_eq!(restart["attempt"], 1, "{restart}");
    assert!(restart["reason"].is_string(), "{restart}");
    let transitions: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "transition" && e["stream"] == "api")
        .collect();
    assert!(
        transitions
            .iter()
            .all(|t| t["from"].is_string() && t["to"].is_string()),
        "{transitions:?}"
    );
    assert!(
        transitions
            .iter()
            .any(|t| t["to"] == "restarting" && t["attempt"] == 1),
        "{transitions:?}"
    );
    assert!(
        transitions
            .iter()
            .any(|t| t["from"] == "restarting" && t["pid"].as_u64() == Some(new_pid as u64)),
        "{transitions:?}"
    );
    // Time goes forward.
    let ts: Vec<u64> = events
        .iter()
        .map(|e| e["ts_ms"].as_u64().unwrap())
        .collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");
}
