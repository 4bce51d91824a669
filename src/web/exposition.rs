//! `/metrics`: the series of `state/metrics.prom` (what the last check
//! wrote), or the same rendered from the state file before any check ran,
//! plus what only a live monitor can say: whether the daemon is up and its
//! heartbeat age, build info, the last tick's duration, whether the restart
//! breaker is open, and each stream's state and how long it has gone
//! unattended. Pure: the handler gathers the inputs.

use std::fmt::Write as _;

use crate::commands::status::StatusReport;
use crate::supervise::model::State;

/// Build info's labels.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// States in which a stream has work but no worker on it.
const UNATTENDED: [&str; 4] = ["unhealthy", "backoff", "restarting", "gave_up"];

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The value of an unlabelled series in exposition text.
pub fn series_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

/// The whole exposition. `file` is metrics.prom's text when a check wrote
/// one, `status` the status report (absent when the databases cannot be
/// read), `state` the state file.
pub fn render(
    file: Option<&str>,
    status: Option<&StatusReport>,
    state: &State,
    now_ms: u64,
) -> String {
    let mut out = match file {
        Some(text) => text.to_string(),
        None => crate::report::metrics::render(&crate::report::metrics::snapshot(
            state,
            std::time::Duration::ZERO,
            now_ms,
        )),
    };
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let mut family = |name: &str, kind: &str, help: &str, series: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in series {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let daemon_up = status.is_some_and(|s| s.daemon.running && s.daemon.health == "healthy");
    family(
        "monitor_workers_up",
        "gauge",
        "1 when the monitor daemon runs and its heartbeat is fresh.",
        vec![(String::new(), u8::from(daemon_up).to_string())],
    );
    if let Some(age) = status.and_then(|s| s.daemon.heartbeat_age_secs) {
        family(
            "monitor_workers_heartbeat_age_seconds",
            "gauge",
            "Seconds since the daemon's last heartbeat.",
            vec![(String::new(), age.to_string())],
        );
    }
    family(
        "monitor_workers_build_info",
        "gauge",
        "The monitor's version.",
        vec![(format!("{{version=\"{}\"}}", label(VERSION)), "1".into())],
    );
    let tick = file
        .and_then(|t| series_value(t, "monitor_workers_check_duration_seconds"))
        .unwrap_or(0.0);
    family(
        "monitor_workers_last_tick_duration_seconds",
        "gauge",
        "Wall time of the last tick (check) that wrote metrics.prom.",
        vec![(String::new(), format!("{tick:.6}"))],
    );
    let breaker_open = state.breaker_until_ms.is_some_and(|until| until > now_ms);
    family(
        "monitor_workers_breaker_open",
        "gauge",
        "1 while the global breaker holds every restart.",
        vec![(String::new(), u8::from(breaker_open).to_string())],
    );
    let streams = status.map(|s| s.streams.as_slice()).unwrap_or_default();
    family(
        "monitor_workers_stream_state",
        "gauge",
        "1 for each stream, labelled with its lifecycle state and health.",
        streams
            .iter()
            .map(|s| {
                (
                    format!(
                        "{{stream=\"{}\",state=\"{}\",health=\"{}\"}}",
                        label(&s.id),
                        label(&s.state),
                        label(&s.health)
                    ),
                    "1".into(),
                )
            })
            .collect(),
    );
    family(
        "monitor_workers_stream_unattended_seconds",
        "gauge",
        "Seconds since a stream that has work lost its worker (0 while attended).",
        streams
            .iter()
            .map(|s| {
                let since = state.streams.get(&s.id).and_then(|st| {
                    st.history()
                        .last_failure_ms
                        .or(st.history().last_restart_ms)
                });
                let secs = match since {
                    Some(at) if UNATTENDED.contains(&s.state.as_str()) => {
                        now_ms.saturating_sub(at) / 1000
                    }
                    _ => 0,
                };
                (format!("{{stream=\"{}\"}}", label(&s.id)), secs.to_string())
            })
            .collect(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::status::{DaemonStatus, StreamStatus};
    use crate::supervise::model::{StreamHistory, StreamState};

    fn stream(id: &str, state: &str, health: &str) -> StreamStatus {
        StreamStatus {
            id: id.into(),
            name: id.into(),
            state: state.into(),
            health: health.into(),
            ready: None,
            probes: Vec::new(),
            reason: None,
            pid: None,
            uptime_secs: None,
            restarts: 0,
            restarts_total: 0,
            restarts_since_reset: 0,
            last_exit: None,
            last_restart_ms: None,
            last_restart_reason: None,
            next_restart_ms: None,
            tasks: crate::store::Progress::default(),
            dependencies: Vec::new(),
            tc_id: None,
            worktree: None,
            workers: None,
            log_tail: None,
        }
    }

    fn report(running: bool, health: &str, streams: Vec<StreamStatus>) -> StatusReport {
        StatusReport {
            version: 1,
            project_root: "/p".into(),
            schema: crate::store::SchemaKind::Legacy,
            tasks_db: "/p/t.db".into(),
            initiative: None,
            daemon: DaemonStatus {
                running,
                pid: running.then_some(7),
                health: health.into(),
                heartbeat_age_secs: running.then_some(3),
                interval_secs: Some(30),
            },
            streams,
        }
    }

    #[test]
    fn extras_follow_the_file_and_parse() {
        let now = 1_000_000_000;
        let mut state = State {
            breaker_until_ms: Some(now + 5),
            ..State::default()
        };
        state.streams.insert(
            "dead".into(),
            StreamState::default().with_history(StreamHistory {
                last_failure_ms: Some(now - 40 * 60_000),
                ..StreamHistory::default()
            }),
        );
        let file = "# TYPE monitor_workers_check_duration_seconds gauge\nmonitor_workers_check_duration_seconds 0.012500\n";
        let status = report(
            true,
            "healthy",
            vec![
                stream("ok", "running", "healthy"),
                stream("dead", "gave_up", "gave_up"),
            ],
        );
        let text = render(Some(file), Some(&status), &state, now);
        assert!(text.starts_with(file));
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("valid exposition");
        let value = |name: &str, stream: Option<&str>| -> f64 {
            parsed
                .samples
                .iter()
                .find(|s| {
                    s.metric == name && stream.is_none_or(|w| s.labels.get("stream") == Some(w))
                })
                .map(|s| match s.value {
                    prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                    _ => f64::NAN,
                })
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        };
        assert_eq!(value("monitor_workers_up", None), 1.0);
        assert_eq!(value("monitor_workers_breaker_open", None), 1.0);
        assert_eq!(
            value("monitor_workers_last_tick_duration_seconds", None),
            0.0125
        );
        assert_eq!(
            value("monitor_workers_stream_unattended_seconds", Some("dead")),
            2400.0
        );
        assert_eq!(
            value("monitor_workers_stream_unattended_seconds", Some("ok")),
            0.0
        );
        assert!(text.contains(
            "monitor_workers_stream_state{stream=\"dead\",state=\"gave_up\",health=\"gave_up\"} 1"
        ));
        assert!(text.contains(&format!(
            "monitor_workers_build_info{{version=\"{VERSION}\"}} 1"
        )));
    }

    #[test]
    fn a_stopped_or_hung_daemon_is_down_and_no_file_renders_the_state() {
        for (running, health) in [(false, "stopped"), (true, "hung")] {
            let text = render(
                None,
                Some(&report(running, health, vec![])),
                &State::default(),
                5,
            );
            assert!(text.contains("\nmonitor_workers_up 0\n"), "{text}");
            assert!(text.contains("monitor_workers_restarts_total 0"), "{text}");
        }
        let text = render(None, None, &State::default(), 5);
        assert!(text.contains("\nmonitor_workers_up 0\n"));
    }
}
