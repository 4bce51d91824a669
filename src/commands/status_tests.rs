//! Status rendering: the text table, JSON and colour, as snapshots.

use super::render::{pad, render_text_at};
use super::*;
use unicode_width::UnicodeWidthStr;

fn stream(id: &str) -> StreamStatus {
    StreamStatus {
        id: id.into(),
        name: id.into(),
        state: "running".into(),
        health: "healthy".into(),
        ready: Some(true),
        probes: Vec::new(),
        reason: None,
        pid: Some(4242),
        uptime_secs: Some(65),
        restarts: 0,
        restarts_total: 1,
        restarts_since_reset: 1,
        last_exit: None,
        last_restart_ms: None,
        last_restart_reason: None,
        next_restart_ms: None,
        tasks: crate::store::Progress {
            total: 3,
            completed: 1,
            in_progress: 1,
            pending: 1,
            blocked: 0,
            cancelled: 0,
        },
        dependencies: Vec::new(),
        tc_id: None,
        worktree: None,
        workers: None,
        log_tail: None,
    }
}

#[test]
fn pad_counts_terminal_columns() {
    let cases = [
        ("A", 4, "A   "),
        ("数据", 6, "数据  "),
        ("🚀x", 4, "🚀x "),
        ("é", 2, "é "),
        ("toolong", 3, "toolong"),
    ];
    for (text, width, want) in cases {
        assert_eq!(pad(text, width), want, "{text}");
    }
}

#[test]
fn wide_stream_names_keep_the_columns_aligned() {
    let report = StatusReport {
        version: 1,
        project_root: "/p".into(),
        schema: crate::store::SchemaKind::Legacy,
        tasks_db: "/p/tasks.db".into(),
        initiative: Some(InitiativeStatus {
            id: "i1".into(),
            name: "Init".into(),
            status: "in_progress".into(),
        }),
        daemon: DaemonStatus {
            running: false,
            pid: None,
            health: "stopped".into(),
            heartbeat_age_secs: None,
            interval_secs: None,
        },
        streams: ["Stream-A", "数据流水线", "🚀-launch", "café-ü"]
            .into_iter()
            .map(stream)
            .collect(),
    };
    let text = render_text(&report, false, false);
    // The terminal column where each table line's PID field ends.
    let state_columns: Vec<usize> = text
        .lines()
        .filter_map(|line| {
            // Right-aligned: the header's PID and each row's 4242 end together.
            let end = (line.find(" PID ").map(|at| at + 4))
                .or_else(|| line.find(" 4242 ").map(|at| at + 5))?;
            Some(line[..end].width())
        })
        .collect();
    assert_eq!(state_columns.len(), 5, "header and four rows:\n{text}");
    assert!(
        state_columns.iter().all(|c| *c == state_columns[0]),
        "columns drift: {state_columns:?}\n{text}"
    );
    let header = text.lines().find(|l| l.starts_with("STREAM")).unwrap();
    assert_eq!(header.find("  STATUS"), Some("数据流水线".width()));
}

#[test]
fn watch_clears_the_screen_only_on_a_terminal() {
    assert!(watch_frame("A", true).starts_with("\x1b[H\x1b[2J"));
    assert_eq!(watch_frame("A\n", false), "A\n\n");
    assert!(!watch_frame("A", false).contains('\x1b'));
}

fn report_of(streams: Vec<StreamStatus>) -> StatusReport {
    StatusReport {
        version: 1,
        project_root: "/p".into(),
        schema: crate::store::SchemaKind::Legacy,
        tasks_db: "/p/tasks.db".into(),
        initiative: Some(InitiativeStatus {
            id: "i1".into(),
            name: "Init".into(),
            status: "IN PROGRESS".into(),
        }),
        daemon: DaemonStatus {
            running: false,
            pid: None,
            health: "stopped".into(),
            heartbeat_age_secs: None,
            interval_secs: None,
        },
        streams,
    }
}

#[test]
fn one_status_column_with_the_next_restart_last_exit_and_restarts_since_reset() {
    let mut backing = stream("api");
    backing.state = "backoff".into();
    backing.health = "unhealthy".into();
    backing.pid = None;
    backing.uptime_secs = None;
    backing.next_restart_ms = Some(112_000);
    backing.last_exit = Some("exit 127".into());
    backing.restarts_since_reset = 3;
    backing.restarts_total = 9;
    backing.reason = Some("restart failed: claude not found".into());
    let mut done = stream("done");
    done.state = "completed".into();
    done.health = "complete".into();
    done.pid = None;
    done.uptime_secs = None;
    let report = report_of(vec![backing, stream("ok"), done]);
    let text = render_text_at(&report, false, false, 100_000);
    let expected = "\
Monitor daemon: not running
Initiative:     Init (i1, IN PROGRESS)

STREAM  STATUS                       PID     UPTIME  RESTARTS  LAST EXIT  TASKS
api     ✗ backoff, next in 12s         -          -         3  exit 127   1/3 done, 1 in progress
ok      ✓ running                   4242      1m 5s         1  -          1/3 done, 1 in progress
done    ✓ complete                     -          -         1  -          1/3 done, 1 in progress
";
    assert_eq!(text, expected);
    let verbose = render_text_at(&report, true, false, 100_000);
    assert!(
        verbose.contains("reason: restart failed: claude not found"),
        "{verbose}"
    );
    assert!(verbose.contains("(in 12s)"), "{verbose}");
    assert!(verbose.contains("3 since reset, 9 in all"), "{verbose}");
}

#[test]
fn status_of_one_stream_shows_its_last_log_lines() {
    let mut one = stream("api");
    one.log_tail = Some(vec!["working".into(), "token=[REDACTED]".into()]);
    let text = render_text_at(&report_of(vec![one]), false, false, 0);
    assert!(
        text.ends_with(
            "        last 2 log lines:\n          working\n          token=[REDACTED]\n"
        ),
        "{text}"
    );
}
