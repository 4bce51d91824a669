//! What the page's restart timeline and event feed show, from the event log:
//! reading the end of `events.jsonl` (and its rotated half), and the pure
//! sorting of events into marks per stream (restarts, deaths, give-ups,
//! operator stops) within a window of hours.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::Serialize;

use crate::report::events::EventRecord;

/// The kinds of marks on the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkKind {
    Restart,
    Death,
    GaveUp,
    Stop,
}

/// What an event shows on the timeline, if anything.
pub fn mark_kind(e: &EventRecord) -> Option<MarkKind> {
    match e.event.as_str() {
        "restart" | "soft_reset" | "operator_restart" => Some(MarkKind::Restart),
        "gave_up" => Some(MarkKind::GaveUp),
        "stop" => Some(MarkKind::Stop),
        // A worker found dead or stuck: it leaves a healthy state for unhealthy.
        "transition"
            if e.to.as_deref() == Some("unhealthy")
                && matches!(e.from.as_deref(), Some("running" | "starting")) =>
        {
            Some(MarkKind::Death)
        }
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mark {
    pub ts_ms: u64,
    pub kind: MarkKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timeline {
    pub from_ms: u64,
    pub to_ms: u64,
    /// Marks per stream, oldest first.
    pub streams: BTreeMap<String, Vec<Mark>>,
}

/// The marks of `events` within `[to_ms - hours, to_ms]`.
pub fn timeline(events: &[EventRecord], to_ms: u64, hours: u64) -> Timeline {
    let from_ms = to_ms.saturating_sub(hours * 3_600_000);
    let mut streams: BTreeMap<String, Vec<Mark>> = BTreeMap::new();
    for e in events {
        if e.ts_ms < from_ms || e.ts_ms > to_ms {
            continue;
        }
        let (Some(stream), Some(kind)) = (&e.stream, mark_kind(e)) else {
            continue;
        };
        streams.entry(stream.clone()).or_default().push(Mark {
            ts_ms: e.ts_ms,
            kind,
            reason: e.reason.clone(),
        });
    }
    for marks in streams.values_mut() {
        marks.sort_by_key(|m| m.ts_ms);
    }
    Timeline {
        from_ms,
        to_ms,
        streams,
    }
}

/// The parsable events among the last `max_bytes` of a log (a first line cut
/// in half is skipped), oldest first.
pub fn read_tail(path: &Path, max_bytes: u64) -> Vec<EventRecord> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max_bytes);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if file.take(max_bytes).read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    lines
        .into_iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Events of the log and its rotated half that are not older than `since_ms`,
/// oldest first; at most `max_bytes` read from each file.
pub fn read_since(log: &Path, since_ms: u64, max_bytes: u64) -> Vec<EventRecord> {
    let mut events = read_tail(log, max_bytes);
    let starts_late = events.first().is_none_or(|e| e.ts_ms > since_ms);
    if starts_late {
        let rotated = std::path::PathBuf::from(format!("{}.1", log.display()));
        let mut older = read_tail(&rotated, max_bytes);
        older.append(&mut events);
        events = older;
    }
    events.retain(|e| e.ts_ms >= since_ms);
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(
        event: &str,
        stream: &str,
        ts_ms: u64,
        from: Option<&str>,
        to: Option<&str>,
    ) -> EventRecord {
        EventRecord {
            ts_ms,
            event: event.into(),
            stream: Some(stream.into()),
            from: from.map(str::to_string),
            to: to.map(str::to_string),
            ..EventRecord::default()
        }
    }

    #[test]
    fn events_become_marks() {
        let cases = [
            (ev("restart", "a", 1, None, None), Some(MarkKind::Restart)),
            (
                ev("soft_reset", "a", 1, None, None),
                Some(MarkKind::Restart),
            ),
            (
                ev("operator_restart", "a", 1, None, None),
                Some(MarkKind::Restart),
            ),
            (ev("gave_up", "a", 1, None, None), Some(MarkKind::GaveUp)),
            (ev("stop", "a", 1, None, None), Some(MarkKind::Stop)),
            (
                ev("transition", "a", 1, Some("running"), Some("unhealthy")),
                Some(MarkKind::Death),
            ),
            (
                ev("transition", "a", 1, Some("starting"), Some("unhealthy")),
                Some(MarkKind::Death),
            ),
            (
                ev("transition", "a", 1, Some("not_started"), Some("unhealthy")),
                None,
            ),
            (
                ev("transition", "a", 1, Some("unhealthy"), Some("backoff")),
                None,
            ),
            (ev("pause", "a", 1, None, None), None),
        ];
        for (event, want) in cases {
            assert_eq!(mark_kind(&event), want, "{event:?}");
        }
    }

    #[test]
    fn window_keeps_recent_marks_per_stream_in_order() {
        let hour = 3_600_000;
        let now = 10 * hour;
        let events = vec![
            ev("restart", "a", now - 7 * hour, None, None),
            ev("restart", "a", now - hour, None, None),
            ev(
                "transition",
                "a",
                now - 2 * hour,
                Some("running"),
                Some("unhealthy"),
            ),
            ev("gave_up", "b", now - 5, None, None),
            ev("pause", "c", now - 5, None, None),
        ];
        let t = timeline(&events, now, 6);
        assert_eq!(t.from_ms, 4 * hour);
        let a: Vec<_> = t.streams["a"].iter().map(|m| (m.ts_ms, m.kind)).collect();
        assert_eq!(
            a,
            vec![
                (now - 2 * hour, MarkKind::Death),
                (now - hour, MarkKind::Restart)
            ]
        );
        assert_eq!(t.streams["b"].len(), 1);
        assert!(!t.streams.contains_key("c"));
    }

    #[test]
    fn tail_skips_a_cut_line_and_reads_the_rotated_half() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("events.jsonl");
        let line = |ts: u64| {
            format!(
                "{}\n",
                serde_json::to_string(&ev("restart", "a", ts, None, None)).unwrap()
            )
        };
        std::fs::write(dir.path().join("events.jsonl.1"), line(5)).unwrap();
        std::fs::write(&log, format!("{}{}", line(10), line(20))).unwrap();
        let all = read_since(&log, 0, 1 << 20);
        assert_eq!(
            all.iter().map(|e| e.ts_ms).collect::<Vec<_>>(),
            vec![5, 10, 20]
        );
        let recent = read_since(&log, 10, 1 << 20);
        assert_eq!(
            recent.iter().map(|e| e.ts_ms).collect::<Vec<_>>(),
            vec![10, 20]
        );
        let cut = read_tail(&log, line(20).len() as u64 + 3);
        assert_eq!(cut.iter().map(|e| e.ts_ms).collect::<Vec<_>>(), vec![20]);
    }
}
