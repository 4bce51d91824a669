//! The stored form of a stream's record and its boxed history.

use super::*;

fn everything_set() -> StreamState {
    StreamState {
        lifecycle: Lifecycle::Running {
            pid: 42,
            since_ms: 7,
        },
        restarts: 1,
        restarts_total: 2,
        restarts_since_reset: 3,
        completed_at_last_restart: Some(4),
        streak: 5,
        same_failure_count: 6,
        deaths_total: 7,
        probe_failures_total: 8,
        gave_up_total: 9,
        worker: Some(Remembered {
            pid: 42,
            start_ticks: 10,
            pid_file_mtime: 11,
            proven_in_boot: None,
        }),
        ..StreamState::default()
    }
    .with_history(StreamHistory {
        last_exit: Some("exit 1".into()),
        last_restart_ms: Some(12),
        last_restart_reason: Some("dead".into()),
        next_attempt_ms: Some(13),
        recent_restarts_ms: vec![14],
        last_failure_ms: Some(15),
        last_error: Some("boom".into()),
        last_signature: Some("sig".into()),
        probes: ProbeSet {
            instance: Some((42, 10)),
            records: Default::default(),
        },
        not_ready: Some("warming".into()),
        gave_up: Some(GiveUp::Budget { max: 3 }),
        spawn_intent: Some(SpawnIntent {
            nonce: "n".into(),
            at_ms: 16,
            monitor_pid: 17,
        }),
        session_job: Some("job".into()),
    })
}

#[test]
fn a_record_is_written_flat_in_the_order_stored_rows_have() {
    // A stored row is rewritten only when its text changes: the text of
    // an unchanged record must stay what earlier versions wrote.
    let text = serde_json::to_string(&everything_set()).unwrap();
    let want = concat!(
        r#"{"lifecycle":{"state":"running","pid":42,"since_ms":7},"restarts":1,"#,
        r#""restarts_total":2,"restarts_since_reset":3,"last_exit":"exit 1","#,
        r#""completed_at_last_restart":4,"last_restart_ms":12,"last_restart_reason":"dead","#,
        r#""streak":5,"next_attempt_ms":13,"recent_restarts_ms":[14],"last_failure_ms":15,"#,
        r#""last_error":"boom","last_signature":"sig","same_failure_count":6,"deaths_total":7,"#,
        r#""probe_failures_total":8,"gave_up_total":9,"#,
        r#""worker":{"pid":42,"start_ticks":10,"pid_file_mtime":11},"#,
        r#""probes":{"instance":[42,10],"records":{}},"not_ready":"warming","#,
        r#""gave_up":{"kind":"budget","max":3},"#,
        r#""spawn_intent":{"nonce":"n","at_ms":16,"monitor_pid":17},"session_job":"job"}"#
    );
    assert_eq!(text, want);
    let back: StreamState = serde_json::from_str(&text).unwrap();
    assert_eq!(back, everything_set());
    assert_eq!(
        serde_json::to_string(&StreamState::default()).unwrap(),
        r#"{"lifecycle":{"state":"not_started"}}"#
    );
}

#[test]
fn a_stream_without_history_has_no_box_until_something_is_set() {
    let plain: StreamState =
        serde_json::from_str(r#"{"lifecycle":{"state":"not_started"},"restarts":2}"#).unwrap();
    assert!(
        plain.history.0.is_none(),
        "nothing of the history was stored"
    );
    let mut cleared = plain.clone();
    cleared.set_history(|h| &mut h.gave_up, None);
    cleared.set_history(|h| &mut h.recent_restarts_ms, Vec::new());
    assert!(cleared.history.0.is_none(), "clearing makes no box");
    cleared.set_history(|h| &mut h.last_error, Some("boom".into()));
    assert_eq!(cleared.history().last_error.as_deref(), Some("boom"));
    let stored: StreamState =
        serde_json::from_str(r#"{"lifecycle":{"state":"not_started"},"last_error":"boom"}"#)
            .unwrap();
    assert!(stored.history.0.is_some());
    assert_eq!(stored.into_history().last_error.as_deref(), Some("boom"));
    // An emptied box is the same history as none.
    let mut emptied = plain.clone();
    emptied.history_mut().last_error = Some("x".into());
    emptied.history_mut().last_error = None;
    assert!(emptied.history.0.is_some());
    assert_eq!(emptied, plain);
    assert_eq!(format!("{emptied:?}"), format!("{plain:?}"));
}
