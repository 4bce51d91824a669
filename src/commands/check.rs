//! The default command: one check, or the daemon with `--daemon`.

use std::time::Duration;

use crate::cli::Cli;
use crate::report::log::{Level, Logger};
use crate::state::StateStore;
use crate::supervise::policy::RestartPolicy;
use crate::tick::{run_tick, TickMemory, TickSettings};
use crate::{daemon, Failure, Outcome};

pub fn run(cli: &Cli) -> Result<Outcome, Failure> {
    let layout = super::discover(&cli.paths)?;
    let args = &cli.check;
    let logger = Logger::new(Some(&layout.monitor_log()), args.quiet);
    let settings = TickSettings {
        auto_restart: args.auto_restart,
        policy: RestartPolicy { max_restarts: args.max_restarts, ..RestartPolicy::default() },
        busy_timeout: Duration::from_secs_f64(cli.paths.busy_timeout),
        spawn_wait: Duration::from_secs(5),
        hint_auto_restart: !args.daemon,
    };
    if args.daemon {
        return match daemon::run(&layout, &settings, &logger, Duration::from_secs(args.interval)) {
            Ok(()) => Ok(Outcome::Healthy),
            Err(e) => {
                logger.write_file(Level::Error, &e.to_string());
                Err(Failure::CouldNotRun(e.to_string()))
            }
        };
    }
    let store = StateStore::new(&layout.state_dir());
    match run_tick(&layout, &settings, &logger, &store, &mut TickMemory::default()) {
        Ok(report) if report.dead.is_empty() => Ok(Outcome::Healthy),
        Ok(_) => Ok(Outcome::DeadFound),
        Err(e) => {
            logger.write_file(Level::Error, &e.to_string());
            Err(Failure::CouldNotRun(e.to_string()))
        }
    }
}
