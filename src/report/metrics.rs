//! Metrics: a Prometheus text file (`<ORCH>/state/metrics.prom`, replaced
//! atomically after a check that changed a number (the check's duration and
//! time are those of the last such check), for node_exporter's textfile collector) and,
//! optionally, the same numbers as StatsD datagrams to a loopback address.
//! Rendering is pure; only `write` and `send_statsd` do I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use crate::supervise::lifecycle::Kind;
use crate::supervise::model::State;

/// Sums over all streams, plus the per-stream counters that are not zero.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub by_state: BTreeMap<&'static str, u64>,
    pub restarts: BTreeMap<String, u64>,
    pub deaths: BTreeMap<String, u64>,
    pub probe_failures: BTreeMap<String, u64>,
    pub gave_up: BTreeMap<String, u64>,
    pub check_seconds: f64,
    pub timestamp_secs: f64,
}

pub fn snapshot(state: &State, check: Duration, now_ms: u64) -> Snapshot {
    let mut s = Snapshot {
        check_seconds: check.as_secs_f64(),
        timestamp_secs: now_ms as f64 / 1000.0,
        ..Snapshot::default()
    };
    // Counted by the state's place in `Kind::ALL` (its discriminant), then
    // named: a map looked up by name for each of 10 000 streams was most
    // of this function.
    let mut by_kind = [0u64; Kind::ALL.len()];
    for (id, st) in &state.streams {
        by_kind[st.lifecycle.kind() as usize] += 1;
        let put = |map: &mut BTreeMap<String, u64>, v: u64| {
            if v > 0 {
                map.insert(id.clone(), v);
            }
        };
        put(&mut s.restarts, u64::from(st.restarts_total));
        put(&mut s.deaths, u64::from(st.deaths_total));
        put(&mut s.probe_failures, st.probe_failures_total);
        put(&mut s.gave_up, u64::from(st.gave_up_total));
    }
    for (kind, count) in Kind::ALL.into_iter().zip(by_kind) {
        s.by_state.insert(kind.name(), count);
    }
    s
}

/// A label value in the exposition format: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of a snapshot.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, series: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in series {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let per_stream = |map: &BTreeMap<String, u64>| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = map
            .iter()
            .map(|(k, n)| (format!("{{stream=\"{}\"}}", label(k)), n.to_string()))
            .collect();
        v.insert(0, (String::new(), map.values().sum::<u64>().to_string()));
        v
    };
    family(
        "monitor_workers_restarts_total",
        "counter",
        "Restarts made (the unlabelled series is the sum over streams).",
        per_stream(&s.restarts),
    );
    family(
        "monitor_workers_deaths_total",
        "counter",
        "Workers seen alive and then found dead or stuck.",
        per_stream(&s.deaths),
    );
    family(
        "monitor_workers_probe_failures_total",
        "counter",
        "Failed probe runs.",
        per_stream(&s.probe_failures),
    );
    family(
        "monitor_workers_gave_up_total",
        "counter",
        "Times a stream gave up.",
        per_stream(&s.gave_up),
    );
    family(
        "monitor_workers_workers",
        "gauge",
        "Supervised components by lifecycle state.",
        s.by_state
            .iter()
            .map(|(k, n)| (format!("{{state=\"{k}\"}}"), n.to_string()))
            .collect(),
    );
    family(
        "monitor_workers_check_duration_seconds",
        "gauge",
        "Wall time of the last check.",
        vec![(String::new(), format!("{:.6}", s.check_seconds))],
    );
    family(
        "monitor_workers_last_check_timestamp_seconds",
        "gauge",
        "When the last check ended (seconds since the epoch).",
        vec![(String::new(), format!("{:.3}", s.timestamp_secs))],
    );
    out
}

/// The series that change with every check (its duration and time).
const PER_CHECK: [&str; 2] = [
    "monitor_workers_check_duration_seconds ",
    "monitor_workers_last_check_timestamp_seconds ",
];

/// Whether two renderings hold the same numbers apart from the check's own
/// duration and time (then the file is not rewritten).
pub fn same_numbers(old: &str, new: &str) -> bool {
    fn kept(text: &str) -> impl Iterator<Item = &str> {
        text.lines()
            .filter(|l| !PER_CHECK.iter().any(|p| l.starts_with(p)))
    }
    kept(old).eq(kept(new))
}

/// Replaces the metrics file atomically (temp file + rename).
pub fn write(path: &Path, text: &str) -> Result<(), crate::files::ReplaceError> {
    crate::files::replace_atomically(path, text.as_bytes(), crate::files::Durability::Atomic)
}

/// StatsD lines for a snapshot: gauges for totals and states, a timer for the check.
pub fn statsd_lines(s: &Snapshot) -> Vec<String> {
    let mut lines = vec![
        format!(
            "monitor_workers.restarts_total:{}|g",
            s.restarts.values().sum::<u64>()
        ),
        format!(
            "monitor_workers.deaths_total:{}|g",
            s.deaths.values().sum::<u64>()
        ),
        format!(
            "monitor_workers.probe_failures_total:{}|g",
            s.probe_failures.values().sum::<u64>()
        ),
        format!(
            "monitor_workers.gave_up_total:{}|g",
            s.gave_up.values().sum::<u64>()
        ),
        format!(
            "monitor_workers.check_duration:{}|ms",
            (s.check_seconds * 1000.0).round() as u64
        ),
    ];
    lines.extend(
        s.by_state
            .iter()
            .map(|(k, n)| format!("monitor_workers.workers.{k}:{n}|g")),
    );
    lines
}

/// Only loopback addresses: metrics never leave the machine by accident.
pub fn parse_statsd_address(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an address like 127.0.0.1:8125"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address; StatsD goes to 127.0.0.1 or [::1] only"
        ));
    }
    Ok(addr)
}

/// Sends the snapshot in as few datagrams as fit (UDP: fire and forget).
pub fn send_statsd(addr: SocketAddr, s: &Snapshot) -> std::io::Result<()> {
    let bind = if addr.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let socket = UdpSocket::bind(bind)?;
    let mut packet = String::new();
    for line in statsd_lines(s) {
        if packet.len() + line.len() + 1 > 1400 {
            socket.send_to(packet.trim_end().as_bytes(), addr)?;
            packet.clear();
        }
        packet.push_str(&line);
        packet.push('\n');
    }
    if !packet.is_empty() {
        socket.send_to(packet.trim_end().as_bytes(), addr)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::lifecycle::Lifecycle;
    use crate::supervise::model::StreamState;

    fn state() -> State {
        let mut state = State::default();
        let running = Lifecycle::Running {
            pid: 5,
            since_ms: 1,
        };
        state.streams.insert(
            "A".into(),
            StreamState {
                lifecycle: running,
                restarts_total: 3,
                deaths_total: 2,
                ..StreamState::default()
            },
        );
        state.streams.insert(
            "we\"ird\\id".into(),
            StreamState {
                lifecycle: Lifecycle::GaveUp { reason: "x".into() },
                gave_up_total: 1,
                probe_failures_total: 7,
                ..StreamState::default()
            },
        );
        state.streams.insert("C".into(), StreamState::default());
        state
    }

    #[test]
    fn renders_every_family_with_escaped_labels() {
        let text = render(&snapshot(
            &state(),
            Duration::from_millis(12),
            1_700_000_000_000,
        ));
        for needle in [
            "# TYPE monitor_workers_restarts_total counter",
            "monitor_workers_restarts_total 3\n",
            "monitor_workers_restarts_total{stream=\"A\"} 3",
            "monitor_workers_deaths_total{stream=\"A\"} 2",
            "monitor_workers_probe_failures_total{stream=\"we\\\"ird\\\\id\"} 7",
            "monitor_workers_gave_up_total 1\n",
            "monitor_workers_workers{state=\"running\"} 1",
            "monitor_workers_workers{state=\"gave_up\"} 1",
            "monitor_workers_workers{state=\"not_started\"} 1",
            "monitor_workers_workers{state=\"paused\"} 0",
            "monitor_workers_check_duration_seconds 0.012000",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(
            !text.contains("stream=\"C\""),
            "zero counters are left out per stream"
        );
    }

    #[test]
    fn statsd_stays_on_loopback_and_arrives() {
        assert!(parse_statsd_address("10.0.0.1:8125").is_err());
        assert!(parse_statsd_address("nonsense").is_err());
        let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let addr = parse_statsd_address(&listener.local_addr().unwrap().to_string()).unwrap();
        send_statsd(addr, &snapshot(&state(), Duration::from_millis(5), 0)).unwrap();
        let mut buf = [0u8; 2048];
        let n = listener.recv(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]);
        assert!(got.contains("monitor_workers.restarts_total:3|g"), "{got}");
        assert!(got.contains("monitor_workers.check_duration:5|ms"), "{got}");
    }
}
