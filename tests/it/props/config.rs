//! The config file: `config::parse` never panics on arbitrary or
//! nearly-well-formed monitor.toml text, every error is one line, and
//! parsing is a function of the text.

use monitor_workers::config;
use proptest::prelude::*;

use super::stream_ids::raw_stream_id;

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

// ----- defects the properties found ----------------------------------------------
// The generators above stay clear of these inputs; each is pinned here.

#[test]
fn a_stream_section_named_with_a_newline_gives_a_one_line_error() {
    let error = config::parse("[streams.\"a\\nb\"]\nmax_restarts = 1\n").unwrap_err();
    assert!(!error.contains('\n'), "{error:?}");
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
