//! The default command: one check, or the daemon with `--daemon`. Also where
//! the settings are resolved: a flag beats `monitor.toml`, which beats the
//! built-in default.

use std::time::Duration;

use crate::cli::Cli;
use crate::config::{self, ConfigFile};
use crate::layout::Layout;
use crate::report::log::Level;
use crate::supervise::plan::{PlanSettings, DEFAULT_MIN_UPTIME};
use crate::supervise::policy::{BreakerPolicy, RestartPolicy};
use crate::tick::{run_tick, TickMemory, TickSettings};
use crate::{daemon, Failure, Outcome};

use super::Context;

/// `--older-than` when not given: five minutes.
pub const DEFAULT_OLDER_THAN: u64 = 300;

/// Everything a run needs to know, flags and config file merged.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub tick: TickSettings,
    pub interval: Duration,
    pub quiet: bool,
}

/// Reads `monitor.toml` (or `--config`); a bad file is a usage error.
pub fn load_config(cli: &Cli, layout: &Layout) -> Result<ConfigFile, Failure> {
    let path = cli
        .check
        .config
        .clone()
        .unwrap_or_else(|| layout.orch.join("monitor.toml"));
    if cli.check.config.is_some() && !path.exists() {
        return Err(Failure::Usage(format!(
            "config file {} does not exist",
            path.display()
        )));
    }
    config::load(&path).map_err(|e| Failure::Usage(e.to_string()))
}

pub fn resolve(cli: &Cli, config: &ConfigFile) -> Result<Resolved, Failure> {
    let args = &cli.check;
    let file = &config.monitor;
    let statsd = match args.statsd.as_deref().or(file.statsd.as_deref()) {
        Some(text) => Some(
            crate::report::metrics::parse_statsd_address(text)
                .map_err(|e| Failure::Usage(format!("--statsd: {e}")))?,
        ),
        None => None,
    };
    let secs = Duration::from_secs;
    let defaults = RestartPolicy::default();
    let breaker = BreakerPolicy::default();
    let policy = RestartPolicy {
        kind: args
            .restart_policy
            .or(file.restart_policy)
            .unwrap_or(defaults.kind),
        max_restarts: args
            .max_restarts
            .or(file.max_restarts)
            .unwrap_or(defaults.max_restarts),
        backoff_base: args
            .backoff_base
            .or(file.backoff_base)
            .map(Duration::from_secs_f64)
            .unwrap_or(defaults.backoff_base),
        backoff_cap: args
            .backoff_max
            .or(file.backoff_max)
            .map(Duration::from_secs_f64)
            .unwrap_or(defaults.backoff_cap),
        reset_after: file.reset_after.map(secs).unwrap_or(defaults.reset_after),
        rate_limit: file.rate_limit.unwrap_or(defaults.rate_limit),
        rate_window: file.rate_window.map(secs).unwrap_or(defaults.rate_window),
    };
    let tick = TickSettings {
        plan: PlanSettings {
            auto_restart: args.auto_restart || file.auto_restart.unwrap_or(false),
            policy,
            breaker: BreakerPolicy {
                window: config.breaker.window.map(secs).unwrap_or(breaker.window),
                min_failures: config.breaker.min_failures.unwrap_or(breaker.min_failures),
                cooldown: config
                    .breaker
                    .cooldown
                    .map(secs)
                    .unwrap_or(breaker.cooldown),
            },
            // Off unless asked for: the budget governs giving up.
            same_failure_limit: file.same_failure_limit.unwrap_or(0),
            min_uptime: args
                .min_uptime
                .or(file.min_uptime)
                .map(Duration::from_secs_f64)
                .unwrap_or(DEFAULT_MIN_UPTIME),
        },
        busy_timeout: Duration::from_secs_f64(
            cli.paths.busy_timeout.or(file.busy_timeout).unwrap_or(5.0),
        ),
        spawn_wait: Duration::from_secs(5),
        hint_auto_restart: !cli.daemon,
        grace: Duration::from_secs_f64(file.grace.unwrap_or(10.0)),
        config: config.clone(),
        own_components: cli.daemon,
        start_ready: args.start_ready,
        daemon: cli.daemon,
        on_give_up: args.on_give_up.clone().or_else(|| file.on_give_up.clone()),
        statsd,
        recover_tasks: if args.recover_tasks {
            Some(secs(args.older_than.unwrap_or(DEFAULT_OLDER_THAN)))
        } else {
            file.recover_tasks_after.map(secs)
        },
    };
    Ok(Resolved {
        tick,
        interval: secs(args.interval.or(file.interval).unwrap_or(30)),
        quiet: args.quiet,
    })
}

pub fn run(cli: &Cli) -> Result<Outcome, Failure> {
    if cli.http.http.is_some() && !cli.daemon {
        return Err(Failure::Usage(
            "--http serves the dashboard beside the daemon: add --daemon (or run `monitor-workers dashboard`)".into(),
        ));
    }
    let ctx = Context::new(cli)?;
    let settings = &ctx.resolved.tick;
    if cli.daemon {
        if !settings.plan.auto_restart {
            // The original's warning, word for word (scripts grep for it).
            ctx.logger
                .warning("Daemon mode without --auto-restart will only report dead workers");
        }
        let _dashboard = super::dashboard::for_daemon(cli, &ctx)?;
        let args = std::env::args().skip(1).collect();
        let reload = || -> Result<TickSettings, String> {
            let config = load_config(cli, &ctx.layout).map_err(|e| e.to_string())?;
            Ok(resolve(cli, &config).map_err(|e| e.to_string())?.tick)
        };
        return match daemon::run(
            &ctx.layout,
            settings,
            &ctx.logger,
            &ctx.store,
            ctx.resolved.interval,
            args,
            &reload,
        ) {
            Ok(()) => Ok(Outcome::Healthy),
            Err(e) => {
                ctx.logger.write_file(Level::Error, &e.to_string());
                Err(Failure::CouldNotRun(e.to_string()))
            }
        };
    }
    match run_tick(
        &ctx.layout,
        settings,
        &ctx.logger,
        &ctx.store,
        &mut TickMemory::for_last_tick(),
    ) {
        Ok(report) => {
            let healthy = report.dead.is_empty() && report.unhealthy.is_empty();
            // A one-shot waits for its notify hooks (each bounded by a timeout).
            for hook in report.hooks {
                let _ = hook.join();
            }
            // Dead or stuck is a finding; a tc stream whose workers cannot be
            // told means this check could not do its job for it.
            Ok(if !healthy {
                Outcome::DeadFound
            } else if !report.cannot_tell.is_empty() {
                Outcome::CouldNotRun
            } else {
                Outcome::Healthy
            })
        }
        Err(e) => {
            ctx.logger.write_file(Level::Error, &e.to_string());
            Err(Failure::CouldNotRun(e.to_string()))
        }
    }
}
