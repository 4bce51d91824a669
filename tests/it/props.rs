//! Property tests through the library's public API: PID file text, stream
//! ids, task metadata in a real tasks.db, the config file and the state file.
//! Inputs are arbitrary text and structured-but-odd values; the properties
//! are "never panics", the documented contract, and round trips. Case counts
//! stay modest so the suite stays fast.

use std::path::{Component, Path};
use std::time::Duration;

use monitor_workers::config;
use monitor_workers::layout::{Layout, PathOverrides, StreamId, MAX_STREAM_ID_BYTES};
use monitor_workers::probe::{ProbeRecord, ProbeSet};
use monitor_workers::process::identity::Remembered;
use monitor_workers::process::pidfile::parse_pid;
use monitor_workers::state::{self, State, StreamState, STATE_VERSION};
use monitor_workers::store::read_streams;
use monitor_workers::supervise::lifecycle::Lifecycle;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{json, Value};

use crate::helpers::*;

/// The largest pid_max Linux allows (PID_MAX_LIMIT on 64-bit).
const LINUX_PID_MAX_LIMIT: u64 = 4_194_304;

// ----- PID file text ------------------------------------------------------------

/// Text that looks like a PID file, more or less.
fn pid_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ \t\n]{0,3}[+-]?[0-9]{0,25}[ \t\n]{0,3}",
        "[0-9a-fx+. -]{0,12}",
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| format!("{n}\n")),
        (0u64..=LINUX_PID_MAX_LIMIT + 10).prop_map(|n| format!("{n}\n")),
        "0{1,5}[0-9]{1,3}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Never panics; Ok only for plain decimal digits (around whitespace) whose
    /// value is in 2..=pid_max, and then it is that value.
    #[test]
    fn pid_text_is_ok_only_for_a_plain_decimal_in_range(
        text in pid_text(),
        pid_max in 2u64..=LINUX_PID_MAX_LIMIT,
    ) {
        match parse_pid(&text, pid_max) {
            Ok(pid) => {
                let digits = text.trim();
                prop_assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
                    "accepted {text:?}");
                let value: u64 = digits.parse().unwrap();
                prop_assert!((2..=pid_max).contains(&value), "accepted {text:?} with pid_max {pid_max}");
                prop_assert_eq!(u64::try_from(pid).unwrap(), value);
            }
            Err(reason) => {
                prop_assert!(!reason.is_empty());
                prop_assert!(!reason.contains('\n'), "reason spans lines: {reason:?}");
            }
        }
    }

    /// A valid PID written the usual ways reads back as itself.
    #[test]
    fn valid_pids_round_trip(
        pid_max in 2u64..=LINUX_PID_MAX_LIMIT,
        pick in any::<u64>(),
        form in 0usize..4,
    ) {
        let pid = 2 + pick % (pid_max - 1);
        let text = match form {
            0 => pid.to_string(),
            1 => format!("{pid}\n"),
            2 => format!("  {pid} \n"),
            _ => format!("\t{pid}\r\n"),
        };
        prop_assert_eq!(parse_pid(&text, pid_max), Ok(pid as i32));
    }

    /// Out of range, or any non-digit inside: never Ok.
    #[test]
    fn out_of_range_and_non_digits_are_refused(
        pid_max in 2u64..=LINUX_PID_MAX_LIMIT,
        above in 1u64..1_000_000_000_000,
        junk in "[^0-9 \t\n\r\u{b}\u{c}]",
        at in 0usize..8,
        pid in 2u64..=LINUX_PID_MAX_LIMIT,
    ) {
        prop_assert!(parse_pid(&(pid_max + above).to_string(), pid_max).is_err());
        prop_assert!(parse_pid("0", pid_max).is_err());
        prop_assert!(parse_pid("1", pid_max).is_err());
        let negative = format!("-{pid}");
        prop_assert!(parse_pid(&negative, pid_max).is_err());
        let mut text = pid.to_string();
        let at = at.min(text.len());
        text.insert_str(at, &junk);
        prop_assert!(parse_pid(&text, pid_max).is_err(), "accepted {text:?}");
    }
}

// ----- stream ids ---------------------------------------------------------------

/// Ids, many of them near the edges: separators, dots, dashes, control
/// characters, NUL, long ones.
fn raw_stream_id() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[A-Za-z0-9_ -]{1,12}",
        1 => Just("/".to_string()),
        1 => Just("\\".to_string()),
        1 => Just(".".to_string()),
        1 => Just("..".to_string()),
        1 => Just("-".to_string()),
        1 => Just("\0".to_string()),
        1 => "[\u{1}-\u{1f}\u{7f}\u{80}-\u{9f}]",
        1 => "[\u{a0}-\u{2fff}]{1,3}",
        1 => Just("~".to_string()),
        1 => Just(":".to_string()),
    ];
    prop_oneof![
        3 => prop::collection::vec(piece, 0..8).prop_map(|p| p.concat()),
        1 => any::<String>(),
        1 => (120usize..140, "[a-z]").prop_map(|(n, c)| c.repeat(n)),
        1 => (40usize..50, "[\u{e9}\u{4e2d}]").prop_map(|(n, c)| c.repeat(n)),
    ]
}

/// Every place the monitor makes from a stream id stays in its directory.
fn assert_stays_inside(dir: &Path, path: &Path, id: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(path.parent(), Some(dir), "{:?} from id {:?}", path, id);
    let extra: Vec<_> = path.strip_prefix(dir).unwrap().components().collect();
    prop_assert_eq!(extra.len(), 1, "{:?} from id {:?}", path, id);
    prop_assert!(
        matches!(extra[0], Component::Normal(_)),
        "{:?} from id {:?}",
        path,
        id
    );
    Ok(())
}

/// A real layout, found the way the monitor finds one.
fn sandbox_layout() -> (tempfile::TempDir, Layout) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("project");
    std::fs::create_dir_all(root.join(".claude/orchestrator")).unwrap();
    let overrides = PathOverrides {
        project_root: Some(root.clone()),
        ..PathOverrides::default()
    };
    let layout = Layout::discover(&overrides, &root, None, Some(tmp.path())).unwrap();
    (tmp, layout)
}

/// Never panics; an accepted id is safe as a file name and as an argument;
/// every safe id is accepted.
#[test]
fn stream_ids_accepted_are_safe_and_safe_ids_are_accepted() {
    let (_tmp, layout) = sandbox_layout();
    let mut runner = TestRunner::new(ProptestConfig::with_cases(256));
    let result = runner.run(&raw_stream_id(), |raw| {
        let safe = !raw.is_empty()
            && raw.len() <= MAX_STREAM_ID_BYTES
            && !raw.contains('/')
            && !raw.contains('\\')
            && !raw.contains("..")
            && !raw.contains('\0')
            && !raw.chars().any(char::is_control)
            && !raw.starts_with('-')
            && !raw.starts_with('.');
        match StreamId::parse(&raw) {
            Ok(id) => {
                prop_assert!(safe, "accepted unsafe id {raw:?}");
                prop_assert_eq!(id.as_str(), raw.as_str());
                prop_assert_eq!(id.to_string(), raw.clone());
                let dir = Path::new("/srv/project/.claude/orchestrator/pids");
                assert_stays_inside(dir, &dir.join(id.as_str()), &raw)?;
                assert_stays_inside(&layout.pids_dir(), &layout.pid_file(&id), &raw)?;
                assert_stays_inside(&layout.logs_dir(), &layout.log_file(&id, INIT), &raw)?;
                assert_stays_inside(&layout.locks_dir(), &layout.stream_lock(&id), &raw)?;
                if id.as_str() == "main" {
                    prop_assert_eq!(layout.work_dir(&id), layout.project_root.clone());
                } else {
                    let worktrees = layout.project_root.join(".claude").join("worktrees");
                    assert_stays_inside(&worktrees, &layout.work_dir(&id), &raw)?;
                }
            }
            Err(why) => {
                prop_assert!(!safe, "refused safe id {raw:?}: {why}");
                prop_assert!(!why.is_empty() && !why.contains('\n'));
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ----- task metadata in a real tasks.db ------------------------------------------------

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[a-z0-9:\\[\\] -]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{0,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

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

// ----- the config file ----------------------------------------------------------

/// Lines of something like monitor.toml: real sections and keys with values
/// of every type, quoted keys with escapes, and junk.
fn config_text() -> impl Strategy<Value = String> {
    let section = prop::sample::select(vec![
        "[monitor]",
        "[breaker]",
        "[workers]",
        "[streams.api]",
        "[streams.\"../up\"]",
        "[streams.\"\"]",
        "[streams.\"-x\"]",
        "[streams.api.extra]",
        "[[workers.probe]]",
        "[[streams.api.probe]]",
        "[[component]]",
        "[unknown]",
        "[monitor",
        "[[component]",
    ])
    .prop_map(str::to_string);
    let key = prop::sample::select(vec![
        "auto_restart",
        "interval",
        "max_restarts",
        "restart_policy",
        "backoff_base",
        "backoff_max",
        "reset_after",
        "rate_limit",
        "rate_window",
        "busy_timeout",
        "grace",
        "same_failure_limit",
        "on_give_up",
        "recover_tasks_after",
        "window",
        "min_failures",
        "cooldown",
        "role",
        "check",
        "initial_delay",
        "period",
        "timeout",
        "success_threshold",
        "failure_threshold",
        "name",
        "type",
        "command",
        "cwd",
        "env",
        "container",
        "probe",
        "bogus_key",
        "\"quoted\\nkey\"",
        "a.b.c",
    ])
    .prop_map(str::to_string);
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0u32..100).prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        prop::sample::select(vec!["nan", "inf", "-inf", "-0.0", "1e999", "true", "false"])
            .prop_map(str::to_string),
        any::<String>().prop_map(|s| format!("{s:?}")),
        prop::sample::select(vec![
            "\"always\"",
            "\"on-failure\"",
            "\"never\"",
            "\"sometimes\"",
            "\"liveness\"",
            "\"startup\"",
            "\"readiness\"",
            "\"process\"",
            "\"docker\"",
            "\"a\\nb\"",
            "\"\"",
            "[]",
            "[\"sleep\", \"1\"]",
            "[1, \"x\"]",
            "{ kind = \"process\" }",
            "{ kind = \"exec\", command = [] }",
            "{ kind = \"log-activity\", idle_secs = 60 }",
            "{ kind = \"min-uptime\", secs = 5 }",
            "{ kind = \"cpu\", max_percent = nan }",
            "{ kind = \"nope\" }",
            "{ A = \"1\" }",
            "1979-05-27T07:32:00Z",
            "\"\"\"multi\nline\"\"\"",
            "'literal'",
        ])
        .prop_map(str::to_string),
    ];
    let line = prop_oneof![
        2 => section,
        5 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "[^\n]{0,30}",
        1 => Just(String::new()),
        1 => Just("# comment".to_string()),
    ];
    prop::collection::vec(line, 0..14).prop_map(|lines| lines.join("\n"))
}

/// A TOML basic string holding `s` (JSON's escapes are TOML's too).
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A number for a key that wants seconds or a count: fine, zero, negative,
/// huge, fractional.
fn toml_number() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (1u32..100).prop_map(|n| n.to_string()),
        1 => Just("0".to_string()),
        1 => Just("-1".to_string()),
        1 => Just("99999999999".to_string()),
        1 => Just("0.5".to_string()),
        1 => Just("1e9".to_string()),
        1 => Just("nan".to_string()),
        1 => Just("-inf".to_string()),
    ]
}

/// Stream ids for `[streams.<id>]` and component names.
///
/// No control characters: `[streams."a\nb"]` gives an error of two lines;
/// see `a_stream_section_named_with_a_newline_gives_a_one_line_error`.
fn config_stream_id() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z][a-z0-9_-]{0,10}",
        1 => raw_stream_id().prop_filter("no control characters", |s| !s.chars().any(char::is_control)),
    ]
}

/// monitor.toml files that are mostly well formed, so that validation (not
/// only the TOML parser) is reached: real sections and keys, values at and
/// past the edges.
fn structured_config() -> impl Strategy<Value = String> {
    let monitor_key = prop::sample::select(vec![
        "interval",
        "max_restarts",
        "backoff_base",
        "backoff_max",
        "reset_after",
        "rate_limit",
        "rate_window",
        "busy_timeout",
        "grace",
        "same_failure_limit",
        "recover_tasks_after",
    ]);
    let monitor = prop::collection::vec((monitor_key, toml_number()), 0..5).prop_map(|kv| {
        let mut out = "[monitor]\n".to_string();
        let mut seen = std::collections::BTreeSet::new();
        for (k, v) in kv {
            if seen.insert(k) {
                out += &format!("{k} = {v}\n");
            }
        }
        out
    });
    let policy = prop::sample::select(vec![
        "\"always\"",
        "\"on-failure\"",
        "\"never\"",
        "\"always\"",
        "\"on-failure\"",
        "\"maybe\"",
    ])
    .boxed();
    let role = prop::sample::select(vec![
        "startup",
        "liveness",
        "readiness",
        "liveness",
        "sometimes",
    ]);
    let check = prop::sample::select(vec![
        "{ kind = \"process\" }",
        "{ kind = \"log-activity\", idle_secs = 60 }",
        "{ kind = \"heartbeat\", ttl_secs = 30 }",
        "{ kind = \"min-uptime\", secs = 5 }",
        "{ kind = \"exec\", command = [] }",
        "{ kind = \"exec\", command = [\"true\"] }",
        "{ kind = \"tcp\", address = \"127.0.0.1:1\" }",
        "{ kind = \"cpu\", max_percent = 50.0 }",
        "{ kind = \"nope\" }",
    ]);
    let probe = (role, check, toml_number(), toml_number(), 0u32..3).prop_map(
        |(role, check, period, timeout, threshold)| {
            format!(
                "role = \"{role}\"\ncheck = {check}\nperiod = {period}\ntimeout = {timeout}\nfailure_threshold = {threshold}\n"
            )
        },
    )
    .boxed();
    let stream = (
        config_stream_id(),
        policy.clone(),
        prop::option::of(0u32..5),
        prop::option::of(probe.clone()),
    )
        .prop_map(|(id, policy, max, probe)| {
            let key = toml_string(&id);
            let mut out = format!("[streams.{key}]\nrestart_policy = {policy}\n");
            if let Some(max) = max {
                out += &format!("max_restarts = {max}\n");
            }
            if let Some(probe) = probe {
                out += &format!("[[streams.{key}.probe]]\n{probe}");
            }
            out
        });
    let component = (
        config_stream_id(),
        prop::sample::select(vec!["process", "docker", "process", "vm"]),
        prop::option::of(prop::collection::vec("[a-z]{0,6}", 0..3)),
        prop::option::of("[a-z]{0,6}"),
        prop::option::of(probe),
    )
        .prop_map(|(name, kind, command, container, probe)| {
            let mut out = format!(
                "[[component]]\nname = {}\ntype = \"{kind}\"\n",
                toml_string(&name)
            );
            if let Some(command) = command {
                let items: Vec<String> = command.iter().map(|c| toml_string(c)).collect();
                out += &format!("command = [{}]\n", items.join(", "));
            }
            if let Some(container) = container {
                out += &format!("container = {}\n", toml_string(&container));
            }
            if let Some(probe) = probe {
                out += &format!("[[component.probe]]\n{probe}");
            }
            out
        });
    (
        prop::option::of(monitor),
        prop::collection::vec(stream, 0..3),
        prop::collection::vec(component, 0..3),
    )
        .prop_map(|(monitor, streams, components)| {
            let mut out = monitor.unwrap_or_default();
            for s in streams {
                out += &s;
            }
            for c in components {
                out += &c;
            }
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Never panics on arbitrary text; an error is one line.
    #[test]
    fn config_errors_are_one_line(
        text in prop_oneof![config_text(), structured_config(), any::<String>()],
    ) {
        if let Err(message) = config::parse(&text) {
            prop_assert!(!message.trim().is_empty(), "empty error for {text:?}");
            prop_assert!(!message.contains('\n') && !message.contains('\r'),
                "multi-line error {message:?} for {text:?}");
        }
    }

    /// Parsing is a function of the text.
    #[test]
    fn config_parse_is_deterministic(text in prop_oneof![config_text(), structured_config()]) {
        // Debug, not ==: a NaN read from the file is not equal to itself.
        prop_assert_eq!(format!("{:?}", config::parse(&text)), format!("{:?}", config::parse(&text)));
    }
}

// ----- the state file -----------------------------------------------------------

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
    )
        .prop_map(
            |(
                (lifecycle, restarts, restarts_total, completed_at_last_restart),
                (last_restart_ms, last_restart_reason, streak, next_attempt_ms),
                (recent_restarts_ms, last_failure_ms, last_error, last_signature),
                (same_failure_count, worker, instance, records, not_ready),
            )| StreamState {
                lifecycle,
                restarts,
                restarts_total,
                completed_at_last_restart,
                last_restart_ms,
                last_restart_reason,
                streak,
                next_attempt_ms,
                recent_restarts_ms,
                last_failure_ms,
                last_error,
                last_signature,
                same_failure_count,
                worker: worker.map(|(pid, start_ticks, pid_file_mtime)| Remembered {
                    pid,
                    start_ticks,
                    pid_file_mtime,
                }),
                probes: ProbeSet { instance, records },
                not_ready,
                ..StreamState::default()
            },
        )
}

fn state_value() -> impl Strategy<Value = State> {
    (
        0..=STATE_VERSION,
        prop::collection::btree_map(any::<String>(), stream_state(), 0..4),
        any::<Option<u64>>(),
    )
        .prop_map(|(version, streams, breaker_until_ms)| State {
            version,
            streams,
            breaker_until_ms,
        })
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

// ----- defects the properties found ----------------------------------------------
// The generators above stay clear of these inputs; each is pinned here.

#[test]
fn a_stream_section_named_with_a_newline_gives_a_one_line_error() {
    let error = config::parse("[streams.\"a\\nb\"]\nmax_restarts = 1\n").unwrap_err();
    assert!(!error.contains('\n'), "{error:?}");
}

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

#[test]
fn non_finite_seconds_in_the_config_are_refused() {
    for text in [
        "[monitor]\nbackoff_max = inf\n",
        "[monitor]\nbackoff_max = nan\n",
        "[monitor]\nbackoff_max = 1e300\n",
        "[[workers.probe]]\nrole = \"liveness\"\ncheck = { kind = \"process\" }\ntimeout = nan\n",
        "[[workers.probe]]\nrole = \"liveness\"\ncheck = { kind = \"process\" }\nperiod = nan\n",
    ] {
        let parsed = config::parse(text);
        assert!(parsed.is_err(), "accepted {text:?}: {parsed:?}");
    }
}
