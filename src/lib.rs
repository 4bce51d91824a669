//! monitor-workers: a watchdog and supervisor for long-running AI coding
//! workers, and a drop-in replacement for `monitor-workers.py`.
//!
//! The flow of one check is observe → plan → announce → act → record
//! (`tick`): `store` and `process` observe, `supervise` (pure) assesses and
//! decides, `tick` acts and records, `daemon` loops ticks, `commands`
//! orchestrate. Exit codes are decided here and nowhere else. The modules
//! left public are the ones the integration tests reach into (parsers, the
//! state and its model, layout) and `scripts/redact_bench.rs` uses
//! (selfheal); everything else is internal.

pub mod cli;
pub(crate) mod clock;
pub(crate) mod commands;
pub(crate) mod component;
pub mod config;
pub(crate) mod daemon;
pub(crate) mod files;
pub mod layout;
pub(crate) mod logtail;
pub mod probe;
pub mod process;
pub(crate) mod prompt;
pub mod report;
pub mod selfheal;
pub mod state;
pub mod store;
pub mod supervise;
#[cfg(test)]
mod test_rng;
pub(crate) mod tick;
pub(crate) mod web;
pub mod workers;

/// How a run ended; the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 0: no dead worker.
    Healthy = 0,
    /// 1: dead worker(s) found, even if restarted (as the original).
    DeadFound = 1,
    /// 2: bad usage.
    Usage = 2,
    /// 3: the check could not run.
    CouldNotRun = 3,
}

impl From<Outcome> for std::process::ExitCode {
    fn from(o: Outcome) -> Self {
        std::process::ExitCode::from(o as u8)
    }
}

/// A run that could not do its job; the message is one line naming the
/// thing and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    CouldNotRun(String),
}

impl Failure {
    pub fn outcome(&self) -> Outcome {
        match self {
            Failure::Usage(_) => Outcome::Usage,
            Failure::CouldNotRun(_) => Outcome::CouldNotRun,
        }
    }
}

/// Runs the command line; errors are printed once, on stderr.
pub fn run(cli: cli::Cli) -> Outcome {
    match commands::dispatch(cli) {
        Ok(outcome) => outcome,
        Err(failure) => {
            eprintln!("monitor-workers: error: {failure}");
            failure.outcome()
        }
    }
}
