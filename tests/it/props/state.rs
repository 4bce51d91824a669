//! The state file: any text either parses or is refused (a newer version
//! saying so), and every state the monitor can hold survives a save and a
//! load unchanged, compact or pretty-printed.

use monitor_workers::probe::{ProbeRecord, ProbeSet};
use monitor_workers::process::identity::Remembered;
use monitor_workers::state::{self, State, StreamHistory, StreamState, STATE_VERSION};
use monitor_workers::supervise::lifecycle::Lifecycle;
use monitor_workers::supervise::model::{GiveUp, SpawnIntent};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::json_value;

fn lifecycle() -> impl Strategy<Value = Lifecycle> {
    let text = any::<String>;
    prop_oneof![
        Just(Lifecycle::NotStarted),
        prop::collection::vec(text(), 0..3)
            .prop_map(|waiting| Lifecycle::WaitingOnDeps { waiting }),
        (any::<i32>(), any::<u64>())
            .prop_map(|(pid, since_ms)| Lifecycle::Starting { pid, since_ms }),
        (any::<i32>(), any::<u64>())
            .prop_map(|(pid, since_ms)| Lifecycle::Running { pid, since_ms }),
        (text(), any::<u64>())
            .prop_map(|(reason, since_ms)| Lifecycle::Unhealthy { reason, since_ms }),
        (any::<u64>(), text())
            .prop_map(|(until_ms, reason)| Lifecycle::Backoff { until_ms, reason }),
        any::<u32>().prop_map(|attempt| Lifecycle::Restarting { attempt }),
        text().prop_map(|by| Lifecycle::Stopped { by }),
        Just(Lifecycle::Completed),
        text().prop_map(|reason| Lifecycle::GaveUp { reason }),
        text().prop_map(|by| Lifecycle::Paused { by }),
    ]
}

fn probe_record() -> impl Strategy<Value = ProbeRecord> {
    (
        (
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<Option<bool>>(),
        ),
        (
            any::<String>(),
            any::<bool>(),
            any::<Option<bool>>(),
            any::<u32>(),
        ),
        any::<Option<(u64, u64)>>(),
    )
        .prop_map(
            |(
                (ok, fail, last_run_ms, last_ok),
                (last_detail, passed, ready, failures_total),
                cpu,
            )| {
                ProbeRecord {
                    consecutive_ok: ok,
                    consecutive_fail: fail,
                    last_run_ms,
                    last_ok,
                    last_detail,
                    passed,
                    ready,
                    failures_total,
                    cpu,
                }
            },
        )
}

fn give_up() -> impl Strategy<Value = GiveUp> {
    prop_oneof![
        any::<u32>().prop_map(|max| GiveUp::Budget { max }),
        (any::<String>(), any::<u32>())
            .prop_map(|(signature, count)| GiveUp::SameFailure { signature, count }),
        (any::<Option<i32>>(), any::<String>())
            .prop_map(|(exit, reason)| GiveUp::Deterministic { exit, reason }),
    ]
}

/// The fields the first strategy's tuples leave out.
fn rest_of_stream_state() -> impl Strategy<Value = (StreamState, StreamHistory)> {
    let opt_text = || prop::option::of(any::<String>());
    (
        (any::<u32>(), any::<u32>(), any::<u64>(), any::<u32>()),
        (
            opt_text(),
            opt_text(),
            prop::option::of(give_up()),
            prop::option::of((any::<String>(), any::<u64>(), any::<u32>())),
        ),
    )
        .prop_map(
            |(
                (restarts_since_reset, deaths_total, probe_failures_total, gave_up_total),
                (last_exit, session_job, gave_up, intent),
            )| {
                let counters = StreamState {
                    restarts_since_reset,
                    deaths_total,
                    probe_failures_total,
                    gave_up_total,
                    ..StreamState::default()
                };
                let history = StreamHistory {
                    last_exit,
                    session_job,
                    gave_up,
                    spawn_intent: intent.map(|(nonce, at_ms, monitor_pid)| SpawnIntent {
                        nonce,
                        at_ms,
                        monitor_pid,
                    }),
                    ..StreamHistory::default()
                };
                (counters, history)
            },
        )
}

fn stream_state() -> impl Strategy<Value = StreamState> {
    let opt_text = || prop::option::of(any::<String>());
    (
        (
            lifecycle(),
            any::<u32>(),
            any::<u32>(),
            any::<Option<u32>>(),
        ),
        (
            any::<Option<u64>>(),
            opt_text(),
            any::<u32>(),
            any::<Option<u64>>(),
        ),
        (
            prop::collection::vec(any::<u64>(), 0..4),
            any::<Option<u64>>(),
            opt_text(),
            opt_text(),
        ),
        (
            any::<u32>(),
            prop::option::of((any::<i32>(), any::<u64>(), any::<u64>())),
            prop::option::of((any::<i32>(), any::<u64>())),
            prop::collection::btree_map(any::<String>(), probe_record(), 0..3),
            opt_text(),
        ),
        rest_of_stream_state(),
    )
        .prop_map(
            |(
                (lifecycle, restarts, restarts_total, completed_at_last_restart),
                (last_restart_ms, last_restart_reason, streak, next_attempt_ms),
                (recent_restarts_ms, last_failure_ms, last_error, last_signature),
                (same_failure_count, worker, instance, records, not_ready),
                (counters, rest),
            )| {
                StreamState {
                    lifecycle,
                    restarts,
                    restarts_total,
                    completed_at_last_restart,
                    streak,
                    same_failure_count,
                    worker: worker.map(|(pid, start_ticks, pid_file_mtime)| Remembered {
                        pid,
                        start_ticks,
                        pid_file_mtime,
                        // Both shapes round-trip: proven in some boot, or never.
                        proven_in_boot: (start_ticks % 2 == 0).then_some(start_ticks ^ 0x5a5a),
                    }),
                    ..counters
                }
                .with_history(StreamHistory {
                    last_restart_ms,
                    last_restart_reason,
                    next_attempt_ms,
                    recent_restarts_ms,
                    last_failure_ms,
                    last_error,
                    last_signature,
                    probes: ProbeSet { instance, records },
                    not_ready,
                    ..rest
                })
            },
        )
}

fn state_value() -> impl Strategy<Value = State> {
    (
        0..=STATE_VERSION,
        prop::collection::btree_map(any::<String>(), stream_state(), 0..4),
        any::<Option<u64>>(),
        prop::collection::vec(any::<String>(), 0..3),
    )
        .prop_map(
            |(version, streams, breaker_until_ms, breaker_streams)| State {
                version,
                streams: streams.into_iter().collect(),
                breaker_until_ms,
                breaker_streams,
                healthy_logged_ms: None,
            },
        )
}

/// JSON shaped like a state file, with wrong types, unknown keys and odd
/// versions mixed in.
fn state_like_json() -> impl Strategy<Value = String> {
    let field = prop::sample::select(vec![
        "lifecycle",
        "restarts",
        "restarts_total",
        "completed_at_last_restart",
        "last_restart_ms",
        "last_restart_reason",
        "streak",
        "next_attempt_ms",
        "recent_restarts_ms",
        "last_failure_ms",
        "last_error",
        "last_signature",
        "same_failure_count",
        "worker",
        "probes",
        "not_ready",
        "unknown_field",
    ]);
    let lifecycle_json = prop_oneof![
        (
            prop::sample::select(vec![
                "not_started",
                "waiting_on_deps",
                "starting",
                "running",
                "unhealthy",
                "backoff",
                "restarting",
                "stopped",
                "completed",
                "gave_up",
                "paused",
                "bogus",
            ]),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "pid", "since_ms", "reason", "until_ms", "attempt", "by", "waiting"
                ]),
                json_value(),
                0..3
            ),
        )
            .prop_map(|(state, fields)| {
                let mut m: serde_json::Map<String, Value> = fields
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                m.insert("state".into(), json!(state));
                Value::Object(m)
            }),
        json_value(),
    ];
    let stream = prop::collection::btree_map(
        field,
        prop_oneof![3 => json_value(), 1 => lifecycle_json, 1 => any::<u32>().prop_map(Value::from)],
        0..6,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
    let version = prop_oneof![
        4 => (0u64..=2).prop_map(Value::from),
        1 => json_value(),
    ];
    (
        prop::option::of(version),
        prop::option::of(prop_oneof![
            4 => prop::collection::btree_map("[a-z-]{0,8}", stream, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            1 => json_value(),
        ]),
        prop::option::of(json_value()),
        any::<bool>(),
    )
        .prop_map(|(version, streams, breaker, unknown)| {
            let mut m = serde_json::Map::new();
            if let Some(v) = version {
                m.insert("version".into(), v);
            }
            if let Some(s) = streams {
                m.insert("streams".into(), s);
            }
            if let Some(b) = breaker {
                m.insert("breaker_until_ms".into(), b);
            }
            if unknown {
                m.insert("extra".into(), json!(1));
            }
            Value::Object(m).to_string()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Never panics; whatever parses survives a save and a load unchanged.
    #[test]
    fn state_text_parses_or_is_refused_and_round_trips(
        text in prop_oneof![state_like_json(), any::<String>(), "[{}\\[\\]\":,0-9a-z ]{0,40}"],
    ) {
        match state::parse(&text) {
            Ok(parsed) => {
                let saved = serde_json::to_string(&parsed).unwrap();
                prop_assert_eq!(state::parse(&saved), Ok(parsed.clone()), "saved as {}", saved);
                prop_assert!(parsed.version <= STATE_VERSION);
            }
            Err(problem) => {
                prop_assert!(!problem.is_empty());
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    if v.get("version").and_then(Value::as_u64).is_some_and(|n| n > u64::from(STATE_VERSION)) {
                        prop_assert!(problem.contains("newer"), "{problem}");
                    }
                }
            }
        }
    }

    /// Every state the monitor can hold is saved and loaded back unchanged.
    #[test]
    fn every_state_round_trips(state in state_value()) {
        let saved = serde_json::to_string(&state).unwrap();
        prop_assert_eq!(state::parse(&saved), Ok(state.clone()), "saved as {}", saved);
        let pretty = serde_json::to_string_pretty(&state).unwrap();
        prop_assert_eq!(state::parse(&pretty), Ok(state));
    }
}
