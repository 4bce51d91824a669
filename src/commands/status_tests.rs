//! Status rendering: the text table, JSON and colour, as snapshots.

use super::render::pad;
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
    // The terminal column where each table line's STATE field starts.
    let state_columns: Vec<usize> = text
        .lines()
        .filter_map(|line| {
            let at = line.find(" STATE ").or_else(|| line.find(" running "))?;
            Some(line[..at].width())
        })
        .collect();
    assert_eq!(state_columns.len(), 5, "header and four rows:\n{text}");
    assert!(
        state_columns.iter().all(|c| *c == state_columns[0]),
        "columns drift: {state_columns:?}\n{text}"
    );
    let header = text.lines().find(|l| l.starts_with("STREAM")).unwrap();
    assert_eq!(header.find("  HEALTH"), Some("数据流水线".width()));
}

#[test]
fn watch_clears_the_screen_only_on_a_terminal() {
    assert!(watch_frame("A", true).starts_with("\x1b[H\x1b[2J"));
    assert_eq!(watch_frame("A\n", false), "A\n\n");
    assert!(!watch_frame("A", false).contains('\x1b'));
}
