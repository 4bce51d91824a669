//! The state file across versions: `tests/data` keeps state files written by
//! released formats, and a monitor of today must read them as they are —
//! show their streams, keep their restart budgets, never move them aside.
//! `monitor-state-v1.json` was written by a real scenario (the ignored test
//! `write_the_v1_golden_state_file` below replays it).

use std::fs;
use std::path::PathBuf;

use serde_json::Value;

use crate::helpers::*;

/// The golden state file of format version 1.
fn golden_v1() -> PathBuf {
    PathBuf::from(MANIFEST).join("tests/data/monitor-state-v1.json")
}

/// The streams of the scenario, the same tasks in the test that wrote the
/// golden file and in the tests that read it (a stream's completed count
/// decides whether its budget was earned back).
fn scenario_streams(p: &TestProject) {
    p.stream("api", &["completed", "in_progress", "pending"], &[]);
    p.stream("web", &["completed", "pending"], &[]);
    p.dead_stream("db");
    p.dead_stream("old");
}

/// A liveness probe on every worker (records in the state file), a small
/// budget for `old` (so it gives up) and a backoff long enough for `db` to
/// wait through the scenario's checks, short enough to be over long before
/// any test reads the file (so the tests do not depend on the clock).
const SCENARIO_CONFIG: &str = "\
[monitor]
backoff_base = 5

[[workers.probe]]
role = \"liveness\"
check = { kind = \"process\" }
period = 1

[streams.old]
max_restarts = 1
";

/// Replays the scenario and writes the golden file (pretty-printed). Run it
/// only when the format changes on purpose, and keep the old file too.
#[test]
#[ignore = "writes tests/data; run by hand when the state format changes"]
fn write_the_v1_golden_state_file() {
    let p = TestProject::new();
    p.write_config(SCENARIO_CONFIG);
    scenario_streams(&p);
    // Restarted workers die at once; the two the test starts keep working.
    p.set_env("FAKE_CLAUDE_MODE", "exit");
    let work = [("FAKE_CLAUDE_MODE", "work")];
    p.spawn_worker_with("api", &work);
    p.spawn_worker_with("web", &work);
    p.run(&["pause", "web"]).expect_code(0).no_panic();

    // First check: both dead streams restarted; their workers die at once.
    let first = p.run(&["--auto-restart"]);
    first.expect_code(1).no_panic();
    for stream in ["db", "old"] {
        let pid = restarted_pid(&first.stdout, stream).expect("restarted");
        assert!(
            wait_for(|| !is_alive(pid), SOON),
            "{stream} worker lives on"
        );
    }
    // Second check: `db` waits out its backoff, `old` has spent its budget.
    p.run(&["--auto-restart"])
        .expect_code(1)
        .stdout_has("Worker db restart deferred")
        .stdout_has("Worker old has reached max restart limit (1)")
        .no_panic();
    let state = p.state_json();
    for (stream, lifecycle) in [
        ("api", "running"),
        ("db", "backoff"),
        ("old", "gave_up"),
        ("web", "paused"),
    ] {
        assert_eq!(
            state["streams"][stream]["lifecycle"]["state"], lifecycle,
            "{state:#}"
        );
    }
    fs::write(
        golden_v1(),
        serde_json::to_string_pretty(&state).unwrap() + "\n",
    )
    .unwrap();
}

/// A project with the scenario's streams and config, and the golden v1
/// state file as its state.
fn project_with_v1_state() -> TestProject {
    let p = TestProject::new();
    p.write_config(SCENARIO_CONFIG);
    scenario_streams(&p);
    fs::create_dir_all(p.legacy_state_file().parent().unwrap()).unwrap();
    fs::copy(golden_v1(), p.legacy_state_file()).unwrap();
    p
}

/// The golden file, parsed.
fn golden_v1_json() -> Value {
    serde_json::from_str(&fs::read_to_string(golden_v1()).unwrap()).unwrap()
}

/// Files beside the state file that a monitor moved aside as unreadable.
fn moved_aside(p: &TestProject) -> Vec<String> {
    fs::read_dir(p.legacy_state_file().parent().unwrap())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".corrupt-"))
        .collect()
}

#[test]
fn status_shows_the_streams_of_a_v1_state_file() {
    let p = project_with_v1_state();
    let golden = golden_v1_json();
    let status = p.status_json();
    let stream = |id: &str| {
        status["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no stream {id} in {status:#}"))
            .clone()
    };

    let db = stream("db");
    assert_eq!(db["state"], "backoff", "{db:#}");
    assert_eq!(db["reason"], "backing off", "{db:#}");
    assert_eq!(
        db["next_restart_ms"], golden["streams"]["db"]["lifecycle"]["until_ms"],
        "{db:#}"
    );
    assert_eq!(
        db["last_restart_ms"],
        golden["streams"]["db"]["last_restart_ms"]
    );

    let old = stream("old");
    assert_eq!(old["state"], "gave_up", "{old:#}");
    assert_eq!(old["health"], "gave_up", "{old:#}");
    assert_eq!(old["reason"], "max restart limit (1) reached", "{old:#}");

    let web = stream("web");
    assert_eq!(web["state"], "paused", "{web:#}");
    let by = golden["streams"]["web"]["lifecycle"]["by"]
        .as_str()
        .unwrap();
    assert_eq!(web["reason"], format!("by {by}"), "{web:#}");

    for (id, restarts) in [("api", 0), ("db", 1), ("old", 1), ("web", 0)] {
        let s = stream(id);
        assert_eq!(s["restarts"], restarts, "{s:#}");
        assert_eq!(s["restarts_total"], restarts, "{s:#}");
    }

    // The probe records of the file, as recorded.
    for id in ["api", "web"] {
        let record = &golden["streams"][id]["probes"]["records"]["liveness:process#0"];
        let probes = stream(id)["probes"].clone();
        assert_eq!(probes[0]["probe"], "liveness:process#0", "{probes:#}");
        assert_eq!(probes[0]["ok"], true, "{probes:#}");
        assert_eq!(probes[0]["detail"], record["last_detail"], "{probes:#}");
    }
    assert!(moved_aside(&p).is_empty(), "{:?}", moved_aside(&p));
}

#[test]
fn a_one_shot_check_on_a_v1_state_file_keeps_the_budgets_and_the_file() {
    let p = project_with_v1_state();
    let run = p.run(&["--auto-restart"]);
    run.expect_code(1)
        .no_panic()
        // A fresh state would say attempt 1/2: the budget spent before counts.
        .stdout_has("Restarting worker db (attempt 2/2)")
        .stdout_lacks("Restarting worker old")
        .stdout_lacks("Restarting worker web");
    for text in [&run.stdout, &run.stderr, &p.monitor_log()] {
        assert!(
            !text.contains("moved aside") && !text.contains("fresh state"),
            "the state file was refused:\n{text}"
        );
    }
    assert!(moved_aside(&p).is_empty(), "{:?}", moved_aside(&p));

    // Migrated to the database on this first supervising run; the old
    // file kept beside it, never read again.
    assert!(p.state_db().exists());
    assert!(!p.legacy_state_file().exists());
    let kept = p.orch.join("state/monitor-state.json.migrated");
    assert_eq!(
        fs::read_to_string(kept).unwrap(),
        fs::read_to_string(golden_v1()).unwrap()
    );
    let state = p.state_json();
    let db = &state["streams"]["db"];
    assert_eq!(db["restarts"], 2, "{db:#}");
    assert_eq!(db["restarts_total"], 2, "{db:#}");
    let old = &state["streams"]["old"];
    assert_eq!(old["lifecycle"]["state"], "gave_up", "{old:#}");
    assert_eq!(old["restarts"], 1, "{old:#}");
    assert_eq!(old["gave_up_total"], 1, "{old:#}");
    let web = &state["streams"]["web"];
    assert_eq!(web["lifecycle"]["state"], "paused", "{web:#}");
}
