//! Task metadata in a real tasks.db: whatever the other tasks' metadata
//! holds (junk text, JSON5, odd types, deep nesting), reading the streams,
//! the check and `status` run through and the well-formed streams are found.

use std::time::Duration;

use monitor_workers::store::read_streams;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::json_value;
use super::stream_ids::raw_stream_id;
use crate::helpers::*;

/// A value for `streamId`: mostly strings of every kind, sometimes not a string.
fn stream_id_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => raw_stream_id().prop_map(Value::String),
        1 => Just(json!("")),
        1 => Just(json!("main")),
        1 => json_value(),
    ]
}

/// Metadata text: arbitrary text, JSON-looking junk, JSON5, and valid JSON of
/// odd shapes (streamId/streamName/dependencies of any type, extra keys, not
/// an object at all, duplicate keys, deep nesting).
///
/// Not generated: escapes of lone UTF-16 surrogates such as `"\ud800"` in a
/// string that SQLite extracts; see
/// `a_lone_surrogate_escape_in_metadata_does_not_crash_the_check`.
fn metadata_text() -> impl Strategy<Value = Option<String>> {
    let object = (
        prop::option::of(stream_id_value()),
        prop::option::of(json_value()),
        prop::option::of(prop_oneof![
            prop::collection::vec(
                prop_oneof![
                    3 => raw_stream_id().prop_map(Value::String),
                    1 => json_value(),
                ],
                0..5
            )
            .prop_map(Value::Array),
            json_value(),
        ]),
        prop::collection::btree_map("[a-z]{1,8}", json_value(), 0..3),
    )
        .prop_map(|(id, name, deps, extra)| {
            let mut m: serde_json::Map<String, Value> = extra.into_iter().collect();
            if let Some(id) = id {
                m.insert("streamId".into(), id);
            }
            if let Some(name) = name {
                m.insert("streamName".into(), name);
            }
            if let Some(deps) = deps {
                m.insert("dependencies".into(), deps);
            }
            Value::Object(m).to_string()
        });
    let text = prop_oneof![
        4 => object,
        1 => json_value().prop_map(|v| v.to_string()),
        1 => any::<String>(),
        1 => "[{}\\[\\]\":,0-9a-zA-Z\\\\ .-]{0,40}",
        1 => prop_oneof![
            Just("{streamId: 'json5', dependencies: [],}".to_string()),
            Just("{\"streamId\":\"dup\",\"streamId\":\"dup2\"}".to_string()),
            Just("{\"streamId\":\"deep\",\"dependencies\":".to_string() + &"[".repeat(300) + &"]".repeat(300) + "}"),
            Just("{\"streamId\":\"big\",\"dependencies\":[1e400, -1e400, 123456789012345678901234567890]}".to_string()),
            Just("{\"streamId\":\"esc\\u0041\\u00e9\\ud83d\\ude00\",\"streamName\":\"\\n\\t\"}".to_string()),
            Just("{\"streamId\":null}".to_string()),
            Just("{\"streamId\":{\"nested\":[1,2]}}".to_string()),
            Just(String::new()),
            Just("null".to_string()),
        ],
    ]
    .prop_map(Some);
    prop_oneof![9 => text, 1 => Just(None)]
}

const STATUSES: [&str; 5] = [
    "pending",
    "in_progress",
    "blocked",
    "completed",
    "cancelled",
];

/// The well-formed streams every case has, which must always be found.
const GOOD: [(&str, &[&str], &[&str]); 2] = [
    (
        "good-alpha",
        &["completed", "pending", "in_progress"],
        &["good-beta"],
    ),
    ("good-beta", &["completed", "cancelled"], &[]),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Whatever the other tasks' metadata holds, reading the streams never
    /// fails or panics, the well-formed streams are found with their exact
    /// progress, and the monitor's own check and status run through.
    #[test]
    fn odd_metadata_never_breaks_reading_the_streams(
        tasks in prop::collection::vec((metadata_text(), prop::sample::select(&STATUSES[..])), 1..8),
    ) {
        let p = TestProject::new();
        for (id, statuses, deps) in GOOD {
            p.stream(id, statuses, deps);
        }
        let prd = p.ensure_prd(INIT);
        {
            let mut conn = p.tasks_conn();
            let tx = conn.transaction().unwrap();
            for (i, (metadata, status)) in tasks.iter().enumerate() {
                tx.execute(
                    "INSERT INTO tasks (id, prd_id, title, status, metadata, created_at, updated_at) \
                     VALUES (?1, ?2, 'odd', ?3, ?4, '2024-05-01T10:00:00', '2024-05-01T10:00:00')",
                    rusqlite::params![format!("odd-{i}"), prd, status, metadata],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }

        let read = read_streams(&p.tasks_db(), INIT, Duration::from_secs(5));
        let read = match read {
            Ok(read) => read,
            Err(e) => return Err(TestCaseError::fail(format!("read_streams failed: {e}"))),
        };
        for (id, statuses, deps) in GOOD {
            let found = read.streams.iter().find(|s| s.raw_id == id);
            prop_assert!(found.is_some(), "stream {id} not found: {:?}", read.streams);
            let found = found.unwrap();
            prop_assert_eq!(found.progress.total as usize, statuses.len(), "{:?}", found);
            let completed = statuses.iter().filter(|s| **s == "completed").count();
            prop_assert_eq!(found.progress.completed as usize, completed, "{:?}", found);
            prop_assert_eq!(&found.dependencies, &deps.iter().map(|d| d.to_string()).collect::<Vec<_>>());
        }

        // The whole check: nothing here ran (no logs), so nothing is dead.
        let check = p.run(&[]);
        check.no_panic();
        prop_assert_eq!(check.code, 0, "check: {}\n{}", check.stdout, check.stderr);
        for line in p.monitor_log().lines() {
            prop_assert!(is_log_line(line), "monitor.log line out of shape: {line:?}");
        }
        let status = p.run(&["status", "--json"]);
        status.no_panic();
        prop_assert_eq!(status.code, 0, "status: {}\n{}", status.stdout, status.stderr);
        let shown: Value = serde_json::from_str(&status.stdout).expect("status --json is JSON");
        let ids: Vec<&str> = shown["streams"]
            .as_array()
            .expect("streams")
            .iter()
            .filter_map(|s| s["id"].as_str())
            .collect();
        prop_assert!(ids.contains(&"good-alpha") && ids.contains(&"good-beta"), "{ids:?}");
    }
}

// ----- defects the properties found ----------------------------------------------
// The generators above stay clear of these inputs; each is pinned here.

#[test]
fn a_lone_surrogate_escape_in_metadata_does_not_crash_the_check() {
    let p = TestProject::new();
    p.stream("good-alpha", &["pending"], &[]);
    // Valid JSON; SQLite's json_extract turns the escape into bytes that are not UTF-8.
    p.raw_task(INIT, "pending", Some(r#"{"streamId":"\ud800"}"#));
    p.raw_task(
        INIT,
        "pending",
        Some(r#"{"streamId":"odd","streamName":"\udc00"}"#),
    );
    let read = read_streams(&p.tasks_db(), INIT, Duration::from_secs(5)).unwrap();
    assert!(read.streams.iter().any(|s| s.raw_id == "good-alpha"));
    p.run(&[]).no_panic().expect_code(0);
    p.run(&["status", "--json"]).no_panic().expect_code(0);
}
