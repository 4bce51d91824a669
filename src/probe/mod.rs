//! Probes in the Kubernetes model. A *startup* probe holds back every
//! liveness verdict until it passes (a grace period); a failing *liveness*
//! probe makes the worker unhealthy, so it is restarted per policy; a failing
//! *readiness* probe only marks it "not ready". Each probe has an initial
//! delay, a period, a timeout and success / failure thresholds.
//!
//! This module holds the settings and the pure bookkeeping (is a probe due,
//! what its results add up to); `checks` runs the checks themselves, each
//! bounded by its timeout, all of a worker's due probes in parallel.

pub mod checks;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeRole {
    Startup,
    Liveness,
    Readiness,
}

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CheckSpec {
    /// The process exists and is not a zombie.
    Process,
    /// The worker log grew within `idle_secs`.
    LogActivity { idle_secs: u64 },
    /// The heartbeat file (default `pids/<stream>.heartbeat`) was touched within `ttl_secs`.
    Heartbeat {
        ttl_secs: u64,
        #[serde(default)]
        path: Option<String>,
    },
    /// A task of the stream changed status within `stall_secs` while tasks are open.
    TaskProgress { stall_secs: u64 },
    /// The worker has run for at most `max_secs`.
    MaxRuntime { max_secs: u64 },
    /// The worker's processes use at most `max_mb` MiB of resident memory.
    Rss { max_mb: u64 },
    /// The worker's processes use at most `max_percent` of one CPU between probes.
    Cpu { max_percent: f64 },
    /// The command exits 0.
    Exec { command: Vec<String> },
    /// A TCP connection to `address` (host:port) succeeds.
    Tcp { address: String },
    /// `GET url` (http://) answers 2xx or 3xx.
    Http { url: String },
    /// The Docker container runs (and is healthy if it has a health check).
    Docker { container: String },
    /// The worker stayed up `secs` (startup only: dying sooner is a failed start).
    MinUptime { secs: u64 },
}

impl CheckSpec {
    pub fn name(&self) -> &'static str {
        match self {
            CheckSpec::Process => "process",
            CheckSpec::LogActivity { .. } => "log-activity",
            CheckSpec::Heartbeat { .. } => "heartbeat",
            CheckSpec::TaskProgress { .. } => "task-progress",
            CheckSpec::MaxRuntime { .. } => "max-runtime",
            CheckSpec::Rss { .. } => "rss",
            CheckSpec::Cpu { .. } => "cpu",
            CheckSpec::Exec { .. } => "exec",
            CheckSpec::Tcp { .. } => "tcp",
            CheckSpec::Http { .. } => "http",
            CheckSpec::Docker { .. } => "docker",
            CheckSpec::MinUptime { .. } => "min-uptime",
        }
    }
}

/// Kubernetes' probe timing, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay_ms: u64,
    pub period_ms: u64,
    pub timeout_ms: u64,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSpec {
    pub role: ProbeRole,
    pub check: CheckSpec,
    pub timing: Timing,
}

impl ProbeSpec {
    /// A stable key for the probe's record: role, kind and position.
    pub fn key(&self, index: usize) -> String {
        let role = match self.role {
            ProbeRole::Startup => "startup",
            ProbeRole::Liveness => "liveness",
            ProbeRole::Readiness => "readiness",
        };
        format!("{role}:{}#{index}", self.check.name())
    }
}

/// What one probe has seen so far for the current worker instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeRecord {
    pub consecutive_ok: u32,
    pub consecutive_fail: u32,
    pub last_run_ms: u64,
    pub last_ok: Option<bool>,
    pub last_detail: String,
    /// Reached the success threshold at least once (startup: done).
    pub passed: bool,
    /// Readiness as last decided by the thresholds.
    pub ready: Option<bool>,
    /// Failed runs in all, for metrics.
    pub failures_total: u32,
    /// Last CPU sample: (CPU ticks used, when in ms), for the cpu check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<(u64, u64)>,
}

/// All probe records of one worker instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeSet {
    /// The worker the records belong to: (pid, start ticks). A new worker
    /// starts with fresh records.
    pub instance: Option<(i32, u64)>,
    pub records: BTreeMap<String, ProbeRecord>,
}

impl ProbeSet {
    pub fn is_empty(&self) -> bool {
        self.instance.is_none() && self.records.is_empty()
    }

    /// The records for this worker instance (fresh ones for a new worker).
    pub fn for_instance(&self, pid: i32, start_ticks: u64) -> ProbeSet {
        if self.instance == Some((pid, start_ticks)) {
            self.clone()
        } else {
            ProbeSet {
                instance: Some((pid, start_ticks)),
                records: BTreeMap::new(),
            }
        }
    }
}

/// Is the probe due now? `started_ms`: when the worker started.
pub fn is_due(record: Option<&ProbeRecord>, timing: &Timing, started_ms: u64, now_ms: u64) -> bool {
    if now_ms < started_ms + timing.initial_delay_ms {
        return false;
    }
    match record {
        None => true,
        Some(r) if r.last_run_ms == 0 => true,
        Some(r) => now_ms.saturating_sub(r.last_run_ms) >= timing.period_ms,
    }
}

/// Adds one result to a record.
pub fn record_result(
    record: &mut ProbeRecord,
    ok: bool,
    detail: String,
    timing: &Timing,
    now_ms: u64,
) {
    record.last_run_ms = now_ms;
    record.last_ok = Some(ok);
    record.last_detail = detail;
    if ok {
        record.consecutive_ok += 1;
        record.consecutive_fail = 0;
        if record.consecutive_ok >= timing.success_threshold {
            record.passed = true;
            record.ready = Some(true);
        }
    } else {
        record.failures_total += 1;
        record.consecutive_fail += 1;
        record.consecutive_ok = 0;
        if record.consecutive_fail >= timing.failure_threshold {
            record.ready = Some(false);
        }
    }
}

/// What a worker's probes add up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeVerdict {
    /// A startup probe has not passed yet: no liveness verdict.
    pub starting: bool,
    /// Restart-worthy: a startup probe failed out, or a liveness probe did.
    pub failing: Option<String>,
    /// A readiness probe says not ready.
    pub not_ready: Option<String>,
}

pub fn verdict(specs: &[ProbeSpec], set: &ProbeSet) -> ProbeVerdict {
    let mut v = ProbeVerdict::default();
    let failed = |spec: &ProbeSpec, r: &ProbeRecord| {
        format!(
            "{} probe {} failed {} time(s): {}",
            role_name(spec.role),
            spec.check.name(),
            r.consecutive_fail,
            r.last_detail
        )
    };
    for (i, spec) in specs
        .iter()
        .enumerate()
        .filter(|(_, s)| s.role == ProbeRole::Startup)
    {
        let record = set.records.get(&spec.key(i));
        match record {
            Some(r) if r.passed => {}
            Some(r) if r.consecutive_fail >= spec.timing.failure_threshold => {
                v.failing.get_or_insert_with(|| failed(spec, r));
            }
            _ => v.starting = true,
        }
    }
    if v.failing.is_some() {
        v.starting = false;
        return v;
    }
    for (i, spec) in specs.iter().enumerate() {
        let Some(r) = set.records.get(&spec.key(i)) else {
            continue;
        };
        match spec.role {
            ProbeRole::Liveness
                if !v.starting && r.consecutive_fail >= spec.timing.failure_threshold =>
            {
                v.failing.get_or_insert_with(|| failed(spec, r));
            }
            ProbeRole::Readiness if r.ready == Some(false) => {
                v.not_ready.get_or_insert_with(|| failed(spec, r));
            }
            _ => {}
        }
    }
    v
}

fn role_name(role: ProbeRole) -> &'static str {
    match role {
        ProbeRole::Startup => "startup",
        ProbeRole::Liveness => "liveness",
        ProbeRole::Readiness => "readiness",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(delay: u64, period: u64, ok: u32, fail: u32) -> Timing {
        Timing {
            initial_delay_ms: delay,
            period_ms: period,
            timeout_ms: 1_000,
            success_threshold: ok,
            failure_threshold: fail,
        }
    }

    fn spec(role: ProbeRole, fail: u32) -> ProbeSpec {
        ProbeSpec {
            role,
            check: CheckSpec::MaxRuntime { max_secs: 1 },
            timing: timing(0, 1_000, 1, fail),
        }
    }

    #[test]
    fn due_table() {
        let t = timing(5_000, 10_000, 1, 3);
        let ran_at = |ms| ProbeRecord {
            last_run_ms: ms,
            ..ProbeRecord::default()
        };
        let cases = [
            ("inside the initial delay", None, 1_000, 4_999, false),
            ("first run after the delay", None, 1_000, 6_000, true),
            ("within the period", Some(ran_at(10_000)), 0, 19_999, false),
            ("period over", Some(ran_at(10_000)), 0, 20_000, true),
        ];
        for (name, record, started, now, want) in cases {
            assert_eq!(is_due(record.as_ref(), &t, started, now), want, "{name}");
        }
    }

    #[test]
    fn thresholds_decide() {
        let t = timing(0, 1, 2, 3);
        let mut r = ProbeRecord::default();
        let script = [
            (false, None),
            (false, None),
            (false, Some(false)),
            (true, Some(false)),
            (true, Some(true)),
            (false, Some(true)),
        ];
        for (step, (ok, ready)) in script.into_iter().enumerate() {
            record_result(&mut r, ok, format!("step {step}"), &t, step as u64 + 1);
            assert_eq!(r.ready, ready, "after step {step}");
        }
        assert!(r.passed);
        assert_eq!((r.consecutive_ok, r.consecutive_fail), (0, 1));
    }

    #[test]
    fn verdict_table() {
        let specs = vec![
            spec(ProbeRole::Startup, 2),
            spec(ProbeRole::Liveness, 2),
            spec(ProbeRole::Readiness, 1),
        ];
        let rec = |ok: u32, fail: u32, passed: bool, ready: Option<bool>| ProbeRecord {
            consecutive_ok: ok,
            consecutive_fail: fail,
            passed,
            ready,
            last_detail: "d".into(),
            ..ProbeRecord::default()
        };
        let set = |s: Option<ProbeRecord>, l: Option<ProbeRecord>, r: Option<ProbeRecord>| {
            let mut set = ProbeSet::default();
            for (i, rec) in [s, l, r].into_iter().enumerate() {
                if let Some(rec) = rec {
                    set.records.insert(specs[i].key(i), rec);
                }
            }
            set
        };
        let cases = [
            ("nothing run yet", set(None, None, None), (true, None, None)),
            (
                "startup pending hides liveness",
                set(
                    Some(rec(0, 1, false, None)),
                    Some(rec(0, 5, false, None)),
                    None,
                ),
                (true, None, None),
            ),
            (
                "startup failed out",
                set(Some(rec(0, 2, false, Some(false))), None, None),
                (false, Some("startup"), None),
            ),
            (
                "healthy",
                set(
                    Some(rec(1, 0, true, Some(true))),
                    Some(rec(3, 0, true, Some(true))),
                    Some(rec(1, 0, true, Some(true))),
                ),
                (false, None, None),
            ),
            (
                "liveness failing",
                set(
                    Some(rec(1, 0, true, None)),
                    Some(rec(0, 2, true, Some(false))),
                    None,
                ),
                (false, Some("liveness"), None),
            ),
            (
                "liveness below threshold",
                set(
                    Some(rec(1, 0, true, None)),
                    Some(rec(0, 1, true, None)),
                    None,
                ),
                (false, None, None),
            ),
            (
                "not ready only",
                set(
                    Some(rec(1, 0, true, None)),
                    None,
                    Some(rec(0, 1, false, Some(false))),
                ),
                (false, None, Some("readiness")),
            ),
        ];
        for (name, set, (starting, failing, not_ready)) in cases {
            let v = verdict(&specs, &set);
            assert_eq!(v.starting, starting, "{name}");
            assert_eq!(
                v.failing.as_deref().map(|f| f.split(' ').next().unwrap()),
                failing,
                "{name}: {v:?}"
            );
            assert_eq!(
                v.not_ready.as_deref().map(|f| f.split(' ').next().unwrap()),
                not_ready,
                "{name}"
            );
        }
    }

    #[test]
    fn a_new_worker_gets_fresh_records() {
        let mut set = ProbeSet {
            instance: Some((5, 100)),
            ..ProbeSet::default()
        };
        set.records.insert(
            "k".into(),
            ProbeRecord {
                passed: true,
                ..ProbeRecord::default()
            },
        );
        assert_eq!(set.for_instance(5, 100).records.len(), 1);
        assert!(
            set.for_instance(5, 101).records.is_empty(),
            "same PID, another process"
        );
        assert!(set.for_instance(6, 100).records.is_empty());
    }
}
