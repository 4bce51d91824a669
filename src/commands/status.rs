//! `status [STREAM] [--verbose] [--json] [--watch]`: every worker's state,
//! health, PID, uptime, restarts, task progress and dependencies, and the
//! daemon's own health. Read-only: it judges a copy of the state and writes
//! nothing, so it is safe beside a running daemon and works with nothing
//! running, no state file and no daemon.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde::Serialize;

use crate::cli::Cli;
use crate::clock::now_ms;
use crate::daemon::read_daemon_record;
use crate::process::procinfo;
use crate::supervise::assess::Verdict;
use crate::supervise::lifecycle::{Kind, Lifecycle};
use crate::supervise::plan::{self, PlanSettings};
use crate::tick::observe::observation;
use crate::tick::{take_snapshot, ProbeMode};
use crate::{Failure, Outcome};

mod render;
pub use render::render_text;

use super::daemon_ctl::running_daemon;
use super::Context;

/// `status --json`, version 1. Field meanings are in the README.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub version: u32,
    pub project_root: String,
    /// The task database's schema: `legacy` or `tc`.
    pub schema: crate::store::SchemaKind,
    /// The task database read.
    pub tasks_db: String,
    pub initiative: Option<InitiativeStatus>,
    pub daemon: DaemonStatus,
    pub streams: Vec<StreamStatus>,
}

#[derive(Debug, Serialize)]
pub struct InitiativeStatus {
    pub id: String,
    pub name: String,
    pub status: String,
}

#[derive(Debug, Serialize)]
pub struct DaemonStatus {
    pub running: bool,
    pub pid: Option<i32>,
    /// healthy / hung (heartbeat too old) / stopped
    pub health: String,
    pub heartbeat_age_secs: Option<u64>,
    pub interval_secs: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct StreamStatus {
    pub id: String,
    pub name: String,
    /// Lifecycle state: not_started, waiting_on_deps, starting, running,
    /// unhealthy, backoff, restarting, stopped, completed, gave_up, paused.
    pub state: String,
    /// healthy, not_ready, unhealthy, waiting, complete, gave_up, paused,
    /// stopped, not_started, starting.
    pub health: String,
    /// For a running worker: whether its readiness probes pass.
    pub ready: Option<bool>,
    /// The last result of each probe of the current worker.
    pub probes: Vec<ProbeStatus>,
    pub reason: Option<String>,
    pub pid: Option<i32>,
    pub uptime_secs: Option<u64>,
    /// Restarts without forward progress (the `--max-restarts` budget used).
    pub restarts: u32,
    /// Restarts ever made.
    pub restarts_total: u32,
    /// Restarts since an operator's last `reset` or `restart STREAM`.
    pub restarts_since_reset: u32,
    /// How the worker last ended, when known (`exit 127`).
    pub last_exit: Option<String>,
    pub last_restart_ms: Option<u64>,
    pub last_restart_reason: Option<String>,
    pub next_restart_ms: Option<u64>,
    pub tasks: crate::store::Progress,
    pub dependencies: Vec<String>,
    /// tc projects: the stream's numeric id in the tc database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tc_id: Option<i64>,
    /// tc projects: the stream's work dir (its git worktree).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
    /// tc projects: the live workers seen (sessions, tc workers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<Vec<String>>,
    /// `status STREAM`: the last lines of the stream's log, redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
pub struct ProbeStatus {
    /// `role:kind#index`, e.g. `liveness:log-activity#0`.
    pub probe: String,
    pub ok: Option<bool>,
    pub detail: String,
    pub consecutive_failures: u32,
}

fn health(kind: Kind) -> &'static str {
    match kind {
        Kind::Running => "healthy",
        Kind::Unhealthy | Kind::Backoff | Kind::Restarting => "unhealthy",
        Kind::WaitingOnDeps => "waiting",
        Kind::Completed => "complete",
        Kind::GaveUp => "gave_up",
        Kind::Paused => "paused",
        Kind::Stopped => "stopped",
        Kind::NotStarted => "not_started",
        Kind::Starting => "starting",
    }
}

pub fn collect(cli: &Cli, ctx: &Context, only: Option<&str>) -> Result<StatusReport, Failure> {
    let _ = cli;
    let tick = &ctx.resolved.tick;
    let (mut state, problem) = ctx.store.read_only();
    if let Some(problem) = problem {
        eprintln!("monitor-workers: warning: {problem}; showing a fresh state");
    }
    let snapshot = take_snapshot(
        &ctx.layout,
        tick.busy_timeout,
        &state,
        ProbeMode::Recorded(&tick.config),
    )
    .map_err(|e| Failure::CouldNotRun(e.to_string()))?;
    let daemon = daemon_status(ctx);
    let Some(snapshot) = snapshot else {
        return Ok(StatusReport {
            version: 1,
            project_root: ctx.layout.project_root.display().to_string(),
            // Only the legacy schema can lack an initiative.
            schema: crate::store::SchemaKind::Legacy,
            tasks_db: ctx.layout.tasks_db.display().to_string(),
            initiative: None,
            daemon,
            streams: Vec::new(),
        });
    };
    // A tc stream may be named by its name or metadata streamId too.
    let resolved = only.map(|wanted| {
        snapshot
            .tc
            .as_ref()
            .and_then(|tc| tc.project.resolve(wanted))
            .unwrap_or(wanted)
            .to_string()
    });
    let only = resolved.as_deref();
    if let Some(wanted) = only {
        if !snapshot
            .streams
            .iter()
            .any(|o| o.view.id.as_str() == wanted)
        {
            return Err(Failure::Usage(format!(
                "unknown stream {wanted}: not in the active initiative"
            )));
        }
    }
    let observations = snapshot.streams.iter().map(observation);
    let now = now_ms();
    // Judge a copy: status never writes.
    let settings = PlanSettings {
        auto_restart: false,
        ..tick.plan
    };
    plan::plan_tick(
        &mut state,
        observations,
        &settings,
        now,
        &mut plan::Changes::default(),
    );
    let streams = snapshot
        .streams
        .iter()
        .filter(|o| only.is_none_or(|w| o.view.id.as_str() == w))
        .map(|o| {
            let st = state
                .streams
                .get(o.view.id.as_str())
                .cloned()
                .unwrap_or_default();
            // A session without a PID of its own shows none (0 is no process).
            let pid = st.lifecycle.pid().filter(|p| *p > 0);
            let uptime_secs = pid
                .and_then(procinfo::inspect)
                .and_then(|f| f.started_at.elapsed().ok())
                .map(|d| d.as_secs());
            let not_ready = st
                .history()
                .not_ready
                .clone()
                .filter(|_| st.lifecycle.kind() == Kind::Running);
            let reason = match &st.lifecycle {
                Lifecycle::WaitingOnDeps { .. } => None,
                held => held.reason(),
            }
            .or_else(|| {
                not_ready
                    .clone()
                    .or_else(|| st.history().last_error.clone())
            });
            let probes = st
                .history()
                .probes
                .records
                .iter()
                .map(|(name, r)| ProbeStatus {
                    probe: name.clone(),
                    ok: r.last_ok,
                    detail: r.last_detail.clone(),
                    consecutive_failures: r.consecutive_fail,
                })
                .collect();
            let p = o.view.progress;
            let tc = snapshot.tc.as_ref().and_then(|tc| tc.stream(&o.view.id));
            // A tc stream's verdict says more than its lifecycle about why
            // nothing runs: blocked, ready, unknown, dead.
            let tc_health = tc.and_then(|_| match &o.verdict {
                Verdict::Blocked => Some("blocked"),
                Verdict::Ready => Some("ready"),
                Verdict::CannotTell { .. } => Some("unknown"),
                Verdict::Dead { .. } if st.lifecycle.kind() != Kind::GaveUp => Some("dead"),
                _ => None,
            });
            let reason = match &o.verdict {
                Verdict::CannotTell { why } if tc.is_some() => Some(why.clone()),
                Verdict::Dead { reason } if tc.is_some() && reason_missing(&st) => {
                    Some(reason.clone())
                }
                _ => reason,
            };
            StreamStatus {
                id: o.view.id.to_string(),
                name: o.view.name.clone(),
                state: st.lifecycle.kind().name().to_string(),
                health: if not_ready.is_some() {
                    "not_ready".to_string()
                } else if let Some(h) = tc_health {
                    h.to_string()
                } else {
                    health(st.lifecycle.kind()).to_string()
                },
                ready: match st.lifecycle.kind() {
                    Kind::Running => Some(not_ready.is_none()),
                    _ => None,
                },
                probes,
                reason,
                pid,
                uptime_secs,
                restarts: st.restarts,
                restarts_total: st.restarts_total,
                restarts_since_reset: st.restarts_since_reset,
                last_exit: st.history().last_exit.clone(),
                last_restart_ms: st.history().last_restart_ms,
                last_restart_reason: st.history().last_restart_reason.clone(),
                next_restart_ms: match st.lifecycle {
                    Lifecycle::Backoff { until_ms, .. } => Some(until_ms),
                    _ => None,
                },
                tasks: p,
                dependencies: o.view.dependencies.iter().map(|d| d.to_string()).collect(),
                tc_id: tc.and_then(|(facts, _)| facts.id.parse().ok()),
                worktree: tc.map(|(_, seen)| seen.work_dir.display().to_string()),
                workers: tc.map(|(_, seen)| {
                    seen.workers
                        .live
                        .iter()
                        .map(|w| format!("{} {}", w.source.describe(), w.id))
                        .collect()
                }),
                log_tail: only
                    .map(|_| log_tail(&ctx.layout.log_file(&o.view.id, &snapshot.initiative.id))),
            }
        })
        .collect();
    Ok(StatusReport {
        version: 1,
        project_root: ctx.layout.project_root.display().to_string(),
        schema: snapshot.source.schema,
        tasks_db: snapshot.source.tasks_db.display().to_string(),
        initiative: Some(InitiativeStatus {
            id: snapshot.initiative.id.clone(),
            name: snapshot.initiative.name.clone(),
            status: snapshot.initiative.status.clone(),
        }),
        daemon,
        streams,
    })
}

/// The last lines of a worker log, redacted, for `status STREAM` (as
/// `systemctl status` shows the journal's last lines).
fn log_tail(path: &std::path::Path) -> Vec<String> {
    let tail = crate::logtail::tail(path, 8192).unwrap_or_default();
    crate::selfheal::redact::redact_lines(&crate::logtail::last_lines(&tail, STATUS_LOG_LINES))
}

/// How many log lines `status STREAM` shows.
const STATUS_LOG_LINES: usize = 10;

fn reason_missing(st: &crate::supervise::model::StreamState) -> bool {
    st.lifecycle.reason().is_none() && st.history().last_error.is_none()
}

/// The exit code of `status`, the one-shot check's table: 1 when a stream
/// is dead, stuck or gave up, 3 when one cannot be told, else 0 (healthy,
/// complete, waiting, blocked, ready, paused, stopped).
pub fn outcome(report: &StatusReport) -> Outcome {
    let has = |h: &[&str]| {
        report
            .streams
            .iter()
            .any(|s| h.contains(&s.health.as_str()))
    };
    if has(&["dead", "unhealthy", "gave_up"]) {
        Outcome::DeadFound
    } else if has(&["unknown"]) {
        Outcome::CouldNotRun
    } else {
        Outcome::Healthy
    }
}

fn daemon_status(ctx: &Context) -> DaemonStatus {
    let pid = running_daemon(&ctx.layout);
    let record = read_daemon_record(&ctx.layout);
    let age = record
        .as_ref()
        .map(|r| now_ms().saturating_sub(r.heartbeat_ms) / 1000);
    let interval = record.as_ref().map(|r| r.interval_secs);
    let health = match (pid, age, interval) {
        (None, _, _) => "stopped",
        // The heartbeat is refreshed at least every 5 s and after each check.
        (Some(_), Some(age), Some(interval)) if age > interval.min(5) * 3 + 10 => "hung",
        (Some(_), _, _) => "healthy",
    };
    DaemonStatus {
        running: pid.is_some(),
        pid,
        health: health.to_string(),
        heartbeat_age_secs: age,
        interval_secs: interval,
    }
}

pub fn run(
    cli: &Cli,
    stream: Option<&str>,
    verbose: bool,
    json: bool,
    watch: bool,
) -> Result<Outcome, Failure> {
    let ctx = Context::new(cli)?;
    let color = crate::report::log::stdout_color();
    if json {
        let report = collect(cli, &ctx, stream)?;
        let text = serde_json::to_string_pretty(&report).expect("status serialises");
        super::emit(&format!("{text}\n"));
        return Ok(outcome(&report));
    }
    if !watch {
        let report = collect(cli, &ctx, stream)?;
        super::emit(&render_text(&report, verbose, color));
        return Ok(outcome(&report));
    }
    let terminal = std::io::stdout().is_terminal();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(signal, std::sync::Arc::clone(&stop));
    }
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let body = match collect(cli, &ctx, stream) {
            Ok(report) => render_text(&report, verbose, color),
            Err(e) => format!("status unavailable: {e}\n"),
        };
        let mut out = std::io::stdout().lock();
        let frame = watch_frame(&body, terminal);
        if out
            .write_all(frame.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            break; // the reader went away (`| head`)
        }
        for _ in 0..20 {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(Outcome::Healthy)
}

/// One refresh of `--watch`: on a terminal the screen is cleared first;
/// elsewhere (a pipe, a file) each snapshot is plain text after the last,
/// with no control codes.
fn watch_frame(body: &str, terminal: bool) -> String {
    if terminal {
        format!("\x1b[H\x1b[2J{body}\n(refreshing every 2s; Ctrl-C to quit)\n")
    } else {
        format!("{body}\n")
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
