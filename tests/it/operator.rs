//! The operator interface: `status` (text and JSON snapshots), `logs`
//! (tails, events, following rotation), metrics parsed with a real
//! exposition-format parser, the notify hook, completions and the man page.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use crate::helpers::*;

/// A project whose status holds no PID or uptime: deterministic output.
fn quiet_project() -> TestProject {
    let p = TestProject::new();
    p.dead_stream("api");
    p.stream("done", &["completed", "cancelled"], &[]);
    p.stream("ui", &["pending"], &["api"]);
    p.stream("fresh", &["pending"], &[]);
    p
}

#[test]
fn status_text_snapshot_with_nothing_running() {
    let p = quiet_project();
    // A dead stream: status exits 1, as the one-shot check does.
    let run = p.run(&["status"]);
    run.expect_code(1);
    let expected = "\
Monitor daemon: not running
Initiative:     Initiative 3f2a9c1e-7b4d-4e8a-9c6f-1d2e3f4a5b6c (3f2a9c1e-7b4d-4e8a-9c6f-1d2e3f4a5b6c, IN PROGRESS)

STREAM  STATUS              PID     UPTIME  RESTARTS  LAST EXIT  TASKS
api     ✗ unhealthy           -          -         0  -          1/3 done
done    ✓ complete            -          -         0  -          2/2 done
fresh   - not started         -          -         0  -          0/1 done
ui      … waiting             -          -         0  -          0/1 done
";
    assert_eq!(run.stdout, expected);
    let verbose = p.run(&["status", "--verbose"]).stdout;
    assert!(verbose.contains("reason: no PID file"), "{verbose}");
    assert!(!p.state_db().exists(), "status writes nothing");
    assert!(!p.legacy_state_file().exists(), "status writes nothing");
    // Without the dead stream, nothing is unhealthy: exit 0.
    p.run(&["pause", "api"]).expect_code(0);
    p.run(&["status"]).expect_code(0).stdout_has("‖ paused");
}

#[test]
fn status_json_is_stable_and_documented() {
    let p = quiet_project();
    let run = p.run(&["status", "--json"]);
    run.expect_code(1);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("status --json is JSON");
    assert_eq!(v["version"], 1);
    assert_eq!(v["daemon"]["running"], false);
    assert_eq!(v["daemon"]["health"], "stopped");
    assert_eq!(v["initiative"]["status"], "IN PROGRESS");
    let streams = v["streams"].as_array().unwrap();
    let keys: Vec<&str> = streams[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "id",
        "name",
        "state",
        "health",
        "reason",
        "pid",
        "uptime_secs",
        "restarts",
        "restarts_total",
        "restarts_since_reset",
        "last_exit",
        "last_restart_ms",
        "last_restart_reason",
        "next_restart_ms",
        "tasks",
        "dependencies",
    ] {
        assert!(keys.contains(&key), "missing {key} in {keys:?}");
    }
    let by_id = |id: &str| streams.iter().find(|s| s["id"] == id).unwrap().clone();
    assert_eq!(by_id("api")["health"], "unhealthy");
    assert_eq!(by_id("done")["state"], "completed");
    assert_eq!(by_id("ui")["dependencies"], serde_json::json!(["api"]));
    assert_eq!(by_id("api")["tasks"]["total"], 3);
    let one = p.run(&["status", "ui", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&one.stdout).unwrap();
    assert_eq!(v["streams"].as_array().unwrap().len(), 1);
    p.run(&["status", "ghost"])
        .expect_code(2)
        .stderr_has("unknown stream ghost");
}

#[test]
fn status_shows_a_running_worker_and_a_running_daemon() {
    let p = TestProject::new();
    p.stream("api", &["in_progress", "pending"], &[]);
    let worker = p.spawn_worker_process("api");
    let daemon = p.spawn_daemon(&["--daemon", "--interval", "30"]);
    assert!(p.wait_log("Starting monitor daemon", SOON));
    assert!(wait_for(
        || p.run(&["status", "--json"])
            .stdout
            .contains("\"running\": true"),
        SOON
    ));
    let v: serde_json::Value = serde_json::from_str(&p.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(v["daemon"]["pid"], daemon.pid);
    assert_eq!(v["daemon"]["health"], "healthy");
    assert_eq!(v["streams"][0]["pid"], worker);
    assert_eq!(v["streams"][0]["health"], "healthy");
    let text = p.run(&["status", "--verbose"]).stdout;
    assert!(
        text.contains(&format!("running (PID {})", daemon.pid)),
        "{text}"
    );
    assert!(
        text.contains("✓ running") && text.contains(&worker.to_string()),
        "{text}"
    );
    assert!(text.contains("Schema:"), "verbose names the schema: {text}");
}

#[test]
fn logs_show_tails_streams_and_events() {
    let p = TestProject::new();
    p.dead_stream("api");
    p.stream("ui", &["pending"], &[]);
    p.write_log("ui", b"first ui line\nsecond ui line\nthird ui line\n");
    p.run(&["--auto-restart"]).expect_code(1);
    let tail = p.run(&["logs", "-n", "2"]);
    tail.expect_code(0);
    assert_eq!(tail.stdout.lines().count(), 2, "{}", tail.stdout);
    assert!(
        tail.stdout.lines().all(|l| l.starts_with('[')),
        "monitor.log lines: {}",
        tail.stdout
    );
    let ui = p.run(&["logs", "ui", "--lines", "2"]);
    assert_eq!(ui.stdout, "second ui line\nthird ui line\n");
    let events = p.run(&["logs", "--events", "api"]);
    events
        .expect_code(0)
        .stdout_has("restart")
        .stdout_lacks(" ui ");
    let all = p.run(&["logs", "--all", "-n", "1"]);
    all.stdout_has("monitor.log <==").stdout_has("ui_");
    p.run(&["logs", "ghost"]).expect_code(2);
    let no_err_files = std::fs::read_dir(p.logs_dir())
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".err"));
    assert!(no_err_files, "one .log per worker, never .err");
}

#[test]
fn logs_follow_new_lines_and_rotation() {
    let p = TestProject::new();
    p.stream("ui", &["pending"], &[]);
    p.write_log("ui", b"old line\n");
    let mut cmd = p.monitor_std();
    cmd.args(["logs", "ui", "--follow", "-n", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let expect = |want: &str, seen: &mut Vec<String>| {
        let deadline = std::time::Instant::now() + SOON;
        while std::time::Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                seen.push(line.clone());
                if line == want {
                    return;
                }
            }
        }
        panic!("never saw {want:?}; saw {seen:?}");
    };
    expect("old line", &mut seen);
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(p.log_path("ui"))
        .unwrap();
    writeln!(f, "appended line").unwrap();
    drop(f);
    expect("appended line", &mut seen);
    // Rotation: the file is moved away and a fresh one takes its place.
    std::fs::rename(p.log_path("ui"), p.logs_dir().join("archive-ui.old")).unwrap();
    p.write_log("ui", b"line of the new file\n");
    expect("line of the new file", &mut seen);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn metrics_file_parses_as_prometheus_text() {
    let p = TestProject::new();
    p.dead_stream("api");
    p.stream("done", &["completed"], &[]);
    p.set_env("FAKE_CLAUDE_LIFETIME", "30");
    p.run(&["--auto-restart"]).expect_code(1);
    let path = p.orch.join("state/metrics.prom");
    let text = std::fs::read_to_string(&path).expect("metrics.prom written after a check");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition format");
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == name
                    && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v))
                    && (label.is_some() || s.labels.is_empty())
            })
            .unwrap_or_else(|| panic!("no sample {name} {label:?} in\n{text}"));
        match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("unexpected type"),
        }
    };
    assert_eq!(
        value("monitor_workers_restarts_total", Some(("stream", "api"))),
        1.0
    );
    assert_eq!(value("monitor_workers_restarts_total", None), 1.0);
    assert_eq!(
        value("monitor_workers_workers", Some(("state", "completed"))),
        1.0
    );
    assert!(value("monitor_workers_check_duration_seconds", None) > 0.0);
    assert!(scrape.docs.contains_key("monitor_workers_deaths_total"));
}

#[test]
fn give_up_runs_the_notify_hook_with_the_event_on_stdin() {
    let p = TestProject::new();
    p.dead_stream("api");
    let got = p.root.join("hook.json");
    let hook = format!("cat > '{}'", got.display());
    p.run(&[
        "--auto-restart",
        "--max-restarts",
        "0",
        "--on-give-up",
        &hook,
    ])
    .expect_code(1)
    .stdout_has("has reached max restart limit (0)");
    let text = std::fs::read_to_string(&got).expect("the hook ran before the one-shot ended");
    let event: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(event["event"], "gave_up");
    assert_eq!(event["stream"], "api");
    // A hook that fails is logged, not fatal.
    let q = TestProject::new();
    q.dead_stream("api");
    q.run(&[
        "--auto-restart",
        "--max-restarts",
        "0",
        "--on-give-up",
        "exit 3",
    ])
    .expect_code(1);
    assert!(
        q.wait_log("Notify hook \"exit 3\" failed", SOON),
        "{}",
        q.monitor_log()
    );
}

#[test]
fn statsd_refuses_non_loopback_addresses() {
    let p = TestProject::new();
    p.run(&["--statsd", "192.0.2.1:8125"])
        .expect_code(2)
        .stderr_has("loopback");
}

#[test]
fn completions_and_man_page_come_from_the_cli() {
    let p = TestProject::new();
    for shell in ["bash", "zsh", "fish"] {
        let run = p.run(&["completions", shell]);
        run.expect_code(0)
            .stdout_has("monitor-workers")
            .stdout_has("auto-restart");
    }
    let man = p.run(&["man"]);
    man.expect_code(0)
        .stdout_has(".TH monitor-workers 1")
        .stdout_has("auto\\-restart");
}
