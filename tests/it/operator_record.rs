//! Operator verbs leave the same record as the daemon's own transitions, an
//! operator's `reset` and `restart STREAM` forgive a stream the same way, and
//! a read-only `status` never touches a corrupt state file (the one-shot
//! check still moves it aside).

use std::fs;

use crate::helpers::*;

fn transitions(p: &TestProject, stream: &str) -> Vec<(String, String)> {
    p.events()
        .into_iter()
        .filter(|e| e["event"] == "transition" && e["stream"] == stream)
        .map(|e| {
            let to = e["to"].as_str().unwrap_or_default().to_string();
            (to, e["reason"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

#[test]
fn pause_resume_stop_and_reset_leave_transition_events() {
    let p = TestProject::new();
    p.dead_stream("api");
    p.run(&["pause", "api"]).expect_code(0);
    p.run(&["resume", "api"]).expect_code(0);
    p.run(&["stop", "api"]).expect_code(0);
    let seen: Vec<String> = transitions(&p, "api")
        .into_iter()
        .map(|(to, _)| to)
        .collect();
    assert_eq!(
        seen,
        ["paused", "not_started", "stopped"],
        "{:?}",
        p.events()
    );
    let paused = &transitions(&p, "api")[0];
    assert!(paused.1.starts_with("by "), "who paused it: {paused:?}");
    assert!(p
        .monitor_log()
        .contains("Worker api state not_started -> paused"));

    // A given-up stream leaves its give-up through `reset`.
    p.run(&["--auto-restart", "--max-restarts", "0"]).no_panic();
    p.run(&["resume", "api"]).expect_code(0);
    p.run(&["--auto-restart", "--max-restarts", "0"])
        .expect_code(1);
    assert_eq!(p.stream_status("api")["state"], "gave_up");
    p.run(&["reset", "api"]).expect_code(0);
    let last = transitions(&p, "api").last().cloned().unwrap();
    assert_eq!(
        last.0,
        "not_started",
        "reset is a transition: {:?}",
        p.events()
    );
}

#[test]
fn reset_and_operator_restart_forgive_the_same_way() {
    let p = TestProject::new();
    p.dead_stream("a");
    p.dead_stream("b");
    // Spend some budget and fill the rate-limit window of both streams.
    p.run(&[
        "--auto-restart",
        "--max-restarts",
        "5",
        "--backoff-base",
        "0",
    ])
    .no_panic();
    for s in ["a", "b"] {
        if let Some(pid) = p.read_pid_file(s) {
            p.signal_ours(pid, nix::sys::signal::Signal::SIGKILL);
            assert!(wait_for(|| !is_alive(pid), SOON), "worker {s} ended");
        }
    }
    p.run(&["reset", "a"]).expect_code(0);
    p.run(&["restart", "b"]).expect_code(0);
    let state = p.state_json();
    let a = &state["streams"]["a"];
    let b = &state["streams"]["b"];
    for key in [
        "restarts",
        "streak",
        "recent_restarts_ms",
        "same_failure_count",
        "next_attempt_ms",
    ] {
        assert!(
            a.get(key).is_none() && b.get(key).is_none(),
            "{key} forgiven by both: a={a} b={b}"
        );
    }
}

#[test]
fn status_leaves_a_corrupt_state_file_alone_and_the_check_moves_it_aside() {
    let p = TestProject::new();
    p.dead_stream("api");
    fs::create_dir_all(p.legacy_state_file().parent().unwrap()).unwrap();
    fs::write(p.legacy_state_file(), "{not json").unwrap();
    let before = p.snapshot();
    let run = p.run(&["status"]);
    run.expect_code(1).stderr_has("corrupt");
    assert_eq!(
        fs::read_to_string(p.legacy_state_file()).unwrap(),
        "{not json"
    );
    assert_eq!(p.snapshot(), before, "status wrote nothing");
    p.run(&[]).expect_code(1);
    let aside = fs::read_dir(p.legacy_state_file().parent().unwrap())
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
    assert!(aside, "the one-shot check moved the corrupt file aside");
    assert!(p.monitor_log().contains("moved aside"));
}
