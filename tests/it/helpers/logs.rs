//! Reading what the monitor wrote and shows: `monitor.log` (lines, counts,
//! timestamps, the PIDs it names), `events.jsonl`, the state file, the daemon
//! record, `status --json`, and a snapshot of every path in the project.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{wait_for, TestProject};

impl TestProject {
    /// Whether a panicking test prints all of monitor.log (default: yes).
    pub fn set_log_on_panic(&self, on: bool) {
        self.log_on_panic.set(on);
    }

    pub fn monitor_log(&self) -> String {
        fs::read_to_string(self.logs_dir().join("monitor.log")).unwrap_or_default()
    }

    pub fn count_in_log(&self, what: &str) -> usize {
        self.monitor_log()
            .lines()
            .filter(|l| l.contains(what))
            .count()
    }

    pub fn wait_log(&self, what: &str, timeout: Duration) -> bool {
        wait_for(|| self.monitor_log().contains(what), timeout)
    }

    /// Timestamps of the monitor.log lines containing `what`, in order.
    pub fn log_times(&self, what: &str) -> Vec<LogTime> {
        self.monitor_log()
            .lines()
            .filter(|l| l.contains(what))
            .map(|l| {
                chrono::NaiveDateTime::parse_from_str(&l[1..27], "%Y-%m-%dT%H:%M:%S%.f")
                    .unwrap_or_else(|e| panic!("bad timestamp in {l:?}: {e}"))
            })
            .collect()
    }

    /// `logs/events.jsonl`, every line parsed (a line that is not JSON fails the test).
    pub fn events(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.logs_dir().join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("events.jsonl line is not JSON ({e}): {l:?}"))
            })
            .collect()
    }

    /// The state as stored (database, or a JSON file not migrated yet),
    /// read through the store's read-only view: Null when there is none; a
    /// state that cannot be read fails the test.
    pub fn state_json(&self) -> serde_json::Value {
        if !self.state_db().exists() && !self.legacy_state_file().exists() {
            return serde_json::Value::Null;
        }
        serde_json::to_value(self.stored_state()).expect("state serialises")
    }

    /// The state as stored, as the store reads it; a problem fails the test.
    pub fn stored_state(&self) -> monitor_workers::state::State {
        let (state, problem) = self.state_store().read_only();
        if let Some(problem) = problem {
            panic!("the state cannot be read: {problem}");
        }
        state
    }

    /// Replaces the stored state with `state` (as `state_json` shows it).
    pub fn write_state(&self, state: &serde_json::Value) {
        let new: monitor_workers::state::State =
            serde_json::from_value(state.clone()).expect("a state");
        self.state_store()
            .update(|s| *s = new)
            .expect("the state is written");
    }

    /// The project's state store, reporting nowhere.
    pub fn state_store(&self) -> monitor_workers::state::StateStore {
        let quiet = monitor_workers::report::log::Logger::new(None, true);
        monitor_workers::state::StateStore::at(&self.orch.join("state"), quiet)
    }

    /// `state/daemon.json`, parsed (Null when absent or half written).
    pub fn daemon_record(&self) -> serde_json::Value {
        fs::read_to_string(self.orch.join("state/daemon.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// `status --json`, parsed; its exit code must match what it shows
    /// (1 when a stream is dead, stuck or gave up, 3 when one is unknown).
    pub fn status_json(&self) -> serde_json::Value {
        let r = self.run(&["status", "--json"]);
        r.no_panic();
        let v: serde_json::Value = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{}", r.stdout));
        let healths: Vec<&str> = v["streams"]
            .as_array()
            .map(|all| all.iter().filter_map(|s| s["health"].as_str()).collect())
            .unwrap_or_default();
        let want = if healths
            .iter()
            .any(|h| matches!(*h, "dead" | "unhealthy" | "gave_up"))
        {
            1
        } else if healths.contains(&"unknown") {
            3
        } else {
            0
        };
        r.expect_code(want);
        v
    }

    /// One stream's entry of `status --json` (Null when absent).
    pub fn stream_status(&self, stream: &str) -> serde_json::Value {
        self.status_json()["streams"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["id"] == stream).cloned())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Every path under the temp dir (files and directories, symlinks not followed).
    pub fn snapshot(&self) -> BTreeSet<PathBuf> {
        fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            for e in entries.filter_map(Result::ok) {
                let path = e.path();
                out.insert(path.clone());
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    walk(&path, out);
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&self.root, &mut out);
        out
    }
}

/// A `monitor.log` timestamp (local time, microseconds).
pub type LogTime = chrono::NaiveDateTime;

/// Seconds from `a` to `b`.
pub fn secs_between(a: LogTime, b: LogTime) -> f64 {
    (b - a).num_microseconds().unwrap() as f64 / 1e6
}

/// A log timestamp as ms since the epoch (the timestamps are local time).
pub fn log_time_ms(t: LogTime) -> u64 {
    use chrono::TimeZone;
    chrono::Local
        .from_local_datetime(&t)
        .earliest()
        .expect("a valid local time")
        .timestamp_millis() as u64
}

/// Checks the shape `[YYYY-MM-DDTHH:MM:SS.ffffff] [LEVEL] message`.
pub fn is_log_line(line: &str) -> bool {
    let b = line.as_bytes();
    if b.len() < 30 || b[0] != b'[' || &line[27..30] != "] [" {
        return false;
    }
    let ts = &line[1..27];
    let shape_ok = ts.char_indices().all(|(i, c)| match i {
        4 | 7 => c == '-',
        10 => c == 'T',
        13 | 16 => c == ':',
        19 => c == '.',
        _ => c.is_ascii_digit(),
    });
    let rest = &line[30..];
    shape_ok
        && ["INFO] ", "SUCCESS] ", "WARNING] ", "ERROR] "]
            .iter()
            .any(|level| rest.starts_with(level) && rest.len() > level.len())
}

/// The PID in "Worker <s> restarted (PID: <pid>)".
pub fn restarted_pid(text: &str, stream: &str) -> Option<u32> {
    let marker = format!("Worker {stream} restarted (PID: ");
    let at = text.rfind(&marker)? + marker.len();
    text[at..].split(')').next()?.trim().parse().ok()
}

/// The PID in "... (PID <pid>)" or "(PID: <pid>)" after `marker` (last occurrence).
pub fn pid_after(text: &str, marker: &str) -> Option<u32> {
    let at = text.rfind(marker)? + marker.len();
    let digits: String = text[at..]
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
