//! The default command: one check, or the daemon with `--daemon`.

use std::time::Duration;

use crate::cli::Cli;
use crate::report::log::{Level, Logger};
use crate::state::StateStore;
use crate::supervise::plan::PlanSettings;
use crate::supervise::policy::{BreakerPolicy, RestartPolicy};
use crate::tick::{run_tick, TickMemory, TickSettings};
use crate::{daemon, Failure, Outcome};

/// The tick settings the command line asks for.
pub fn settings(cli: &Cli) -> TickSettings {
    let args = &cli.check;
    TickSettings {
        plan: PlanSettings {
            auto_restart: args.auto_restart,
            policy: RestartPolicy {
                kind: args.restart_policy,
                max_restarts: args.max_restarts,
                backoff_base: Duration::from_secs_f64(args.backoff_base),
                backoff_cap: Duration::from_secs_f64(args.backoff_max),
                ..RestartPolicy::default()
            },
            breaker: BreakerPolicy::default(),
        },
        busy_timeout: Duration::from_secs_f64(cli.paths.busy_timeout),
        spawn_wait: Duration::from_secs(5),
        hint_auto_restart: !args.daemon,
    }
}

pub fn run(cli: &Cli) -> Result<Outcome, Failure> {
    let layout = super::discover(&cli.paths)?;
    let logger = Logger::new(Some(&layout.monitor_log()), cli.check.quiet);
    let settings = settings(cli);
    if cli.check.daemon {
        return match daemon::run(
            &layout,
            &settings,
            &logger,
            Duration::from_secs(cli.check.interval),
            std::env::args().skip(1).collect(),
        ) {
            Ok(()) => Ok(Outcome::Healthy),
            Err(e) => {
                logger.write_file(Level::Error, &e.to_string());
                Err(Failure::CouldNotRun(e.to_string()))
            }
        };
    }
    let store = StateStore::new(&layout.state_dir());
    match run_tick(
        &layout,
        &settings,
        &logger,
        &store,
        &mut TickMemory::default(),
    ) {
        Ok(report) if report.dead.is_empty() => Ok(Outcome::Healthy),
        Ok(_) => Ok(Outcome::DeadFound),
        Err(e) => {
            logger.write_file(Level::Error, &e.to_string());
            Err(Failure::CouldNotRun(e.to_string()))
        }
    }
}
