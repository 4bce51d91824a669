//! The daemon's lifecycle: `start` (in the background, detached, refusing
//! when one runs), `stop` (SIGTERM, wait; a second stop forces), `restart`
//! (stop, then start with the settings the daemon recorded).

use std::time::{Duration, Instant};

use clap::ValueEnum;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cli::Cli;
use crate::daemon::read_daemon_record;
use crate::layout::Layout;
use crate::process::{lock, procinfo};
use crate::report::log::Level;
use crate::{Failure, Outcome};

use super::Context;

/// The PID holding the daemon lock, if a daemon runs.
pub fn running_daemon(layout: &Layout) -> Option<i32> {
    // A daemon holds its lock file: no file, no daemon (and a read-only
    // caller such as `status` must not create one).
    if !layout.daemon_lock().is_file() {
        return None;
    }
    match lock::try_lock(&layout.daemon_lock()) {
        Ok(Some(_free)) => None,
        Ok(None) => Some(
            lock::read_holder(&layout.daemon_lock())
                .parse()
                .unwrap_or(0),
        ),
        Err(_) => None,
    }
}

/// The arguments that make the background daemon behave like this command:
/// `start` supervises (restarts dead workers) unless told `--report-only`.
fn daemon_args(cli: &Cli, layout: &Layout, report_only: bool) -> Vec<String> {
    let c = &cli.check;
    let mut args: Vec<String> = vec!["--daemon".into()];
    if !report_only {
        args.push("--auto-restart".into());
    }
    if c.quiet {
        args.push("--quiet".into());
    }
    if c.start_ready {
        args.push("--start-ready".into());
    }
    if c.recover_tasks {
        args.push("--recover-tasks".into());
    }
    // Only what was given: the daemon reads monitor.toml itself for the rest.
    let policy = c
        .restart_policy
        .and_then(|p| p.to_possible_value())
        .map(|v| v.get_name().to_string());
    let given = [
        ("--max-restarts", c.max_restarts.map(|v| v.to_string())),
        ("--interval", c.interval.map(|v| v.to_string())),
        ("--restart-policy", policy),
        ("--backoff-base", c.backoff_base.map(|v| v.to_string())),
        ("--backoff-max", c.backoff_max.map(|v| v.to_string())),
        ("--min-uptime", c.min_uptime.map(|v| v.to_string())),
        ("--older-than", c.older_than.map(|v| v.to_string())),
        ("--on-give-up", c.on_give_up.clone()),
        ("--statsd", c.statsd.clone()),
        (
            "--busy-timeout",
            cli.paths.busy_timeout.map(|v| v.to_string()),
        ),
        (
            "--config",
            c.config.as_ref().map(|p| p.display().to_string()),
        ),
        (
            "--project-root",
            Some(layout.project_root.display().to_string()),
        ),
        (
            "--orchestrator-dir",
            Some(layout.orch.display().to_string()),
        ),
        // Databases and workspace only when named: derived ones are derived
        // again by the daemon (so a tc database is still found).
        (
            "--tasks-db",
            cli.paths
                .tasks_db
                .as_ref()
                .map(|_| layout.tasks_db.display().to_string()),
        ),
        (
            "--memory-db",
            cli.paths
                .memory_db
                .as_ref()
                .map(|_| layout.memory_db.display().to_string()),
        ),
        ("--workspace-id", cli.paths.workspace_id.clone()),
    ];
    for (flag, value) in given {
        if let Some(value) = value {
            args.push(flag.into());
            args.push(value);
        }
    }
    if let Some(addr) = &cli.http.http {
        args.extend(["--http".to_string(), addr.clone()]);
        if cli.http.http_allow_remote {
            args.push("--http-allow-remote".into());
        }
        for host in &cli.http.http_allowed_host {
            args.extend(["--http-allowed-host".to_string(), host.clone()]);
        }
    }
    args
}

pub fn start(cli: &Cli, report_only: bool) -> Result<Outcome, Failure> {
    let ctx = Context::new(cli)?;
    spawn_daemon(&ctx, daemon_args(cli, &ctx.layout, report_only), true)
}

/// Starts the daemon in the background; `say_stale` reports a lock left by
/// a daemon that died (not after `restart` stopped it on purpose).
fn spawn_daemon(ctx: &Context, args: Vec<String>, say_stale: bool) -> Result<Outcome, Failure> {
    let layout = &ctx.layout;
    if let Some(pid) = running_daemon(layout) {
        return Err(Failure::CouldNotRun(format!(
            "a monitor daemon is already running for this project (PID {pid}); use `monitor-workers stop` or `restart`"
        )));
    }
    let holder = lock::read_holder(&layout.daemon_lock());
    if say_stale && !holder.is_empty() {
        ctx.logger.info(&format!(
            "Cleaned a stale daemon lock (PID {holder} is not running)"
        ));
    }
    let out_path = layout.daemon_out();
    let exe = std::env::current_exe()
        .map_err(|e| Failure::CouldNotRun(format!("cannot find this binary: {e}")))?;
    let mut command = crate::process::detached(exe, Some(&out_path))
        .map_err(|e| Failure::CouldNotRun(format!("cannot open {}: {e}", out_path.display())))?;
    command.args(&args).current_dir(&layout.project_root);
    let mut child = command
        .spawn()
        .map_err(|e| Failure::CouldNotRun(format!("cannot start the daemon: {e}")))?;
    let pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Started once it holds its lock and its record names it (a `stop`
        // right after then finds them agreeing).
        let recorded = || read_daemon_record(layout).is_some_and(|r| r.pid == pid);
        if running_daemon(layout) == Some(pid) && (recorded() || Instant::now() >= deadline) {
            ctx.logger.action(
                Level::Success,
                &format!("Monitor daemon started (PID {pid})"),
            );
            return Ok(Outcome::Healthy);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Failure::CouldNotRun(format!(
                "the daemon exited at once ({status}); see {} and {}",
                layout.monitor_log().display(),
                out_path.display()
            )));
        }
        if Instant::now() >= deadline {
            return Err(Failure::CouldNotRun(format!(
                "the daemon (PID {pid}) did not take its lock within 10s"
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// How long `stop` waits for a daemon that just took its lock to write its
/// record (it takes the lock first, so an old record can still be there).
const RECORD_WAIT: Duration = Duration::from_secs(5);

/// Whether the lock holder `pid` is provably this project's daemon: a
/// process of this user whose start matches the daemon record. A record
/// naming another PID is waited for (bounded): the daemon right after
/// `start` holds the lock before it replaces a dead daemon's record.
fn confirm_daemon(layout: &Layout, pid: i32, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let facts = procinfo::inspect(pid).filter(|_| pid > 1);
        let Some(facts) = facts.filter(|f| f.uid == procinfo::current_uid()) else {
            return false;
        };
        match read_daemon_record(layout) {
            None => return true,
            Some(r) if r.pid == pid => return r.start_ticks == facts.start_ticks,
            Some(_) if Instant::now() < deadline && running_daemon(layout) == Some(pid) => {
                std::thread::sleep(Duration::from_millis(25));
            }
            Some(_) => return false,
        }
    }
}

/// Stops the running daemon; `Ok(false)` when none ran.
fn stop_daemon(ctx: &Context, timeout: Duration) -> Result<bool, Failure> {
    let layout = &ctx.layout;
    let Some(pid) = running_daemon(layout) else {
        let _ = std::fs::remove_file(layout.daemon_record());
        return Ok(false);
    };
    let provably_ours = confirm_daemon(layout, pid, timeout.min(RECORD_WAIT));
    if !provably_ours {
        return Err(Failure::CouldNotRun(format!(
            "the daemon lock names PID {pid}, which cannot be confirmed as the daemon; not signalling it"
        )));
    }
    kill(Pid::from_raw(pid), Signal::SIGTERM)
        .map_err(|e| Failure::CouldNotRun(format!("cannot signal PID {pid}: {e}")))?;
    ctx.logger
        .info(&format!("Sent SIGTERM to the monitor daemon (PID {pid})"));
    let deadline = Instant::now() + timeout;
    while running_daemon(layout).is_some() {
        if Instant::now() >= deadline {
            return Err(Failure::CouldNotRun(format!(
                "the daemon (PID {pid}) did not stop within {}s; run `monitor-workers stop` again to force it",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    ctx.logger.action(
        Level::Success,
        &format!("Monitor daemon stopped (PID {pid})"),
    );
    Ok(true)
}

pub fn stop(
    cli: &Cli,
    workers: bool,
    grace: Duration,
    timeout: Duration,
) -> Result<Outcome, Failure> {
    let ctx = Context::new(cli)?;
    if !stop_daemon(&ctx, timeout)? {
        ctx.logger.info("No monitor daemon is running");
    }
    if workers {
        return super::control::stop(cli, None, true, grace);
    }
    Ok(Outcome::Healthy)
}

pub fn restart(cli: &Cli, timeout: Duration) -> Result<Outcome, Failure> {
    let ctx = Context::new(cli)?;
    let args =
        match read_daemon_record(&ctx.layout) {
            Some(record) => record.args,
            None => return Err(Failure::CouldNotRun(
                "no daemon record to restart from (state/daemon.json); use `monitor-workers start`"
                    .into(),
            )),
        };
    stop_daemon(&ctx, timeout)?;
    spawn_daemon(&ctx, args, false)
}
