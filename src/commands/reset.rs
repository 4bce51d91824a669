//! `reset STREAM`: clears a stream's restart budget, backoff and give-up so
//! the monitor may restart it again. Recorded in monitor.log.

use crate::cli::PathArgs;
use crate::layout::StreamId;
use crate::report::log::Logger;
use crate::state::StateStore;
use crate::{Failure, Outcome};

pub fn run(paths: &PathArgs, stream: &str) -> Result<Outcome, Failure> {
    let id = StreamId::parse(stream).map_err(|why| Failure::Usage(format!("invalid stream id {stream:?}: {why}")))?;
    let layout = super::discover(paths)?;
    let logger = Logger::new(Some(&layout.monitor_log()), false);
    let store = StateStore::new(&layout.state_dir());
    let (existed, _, _) = store
        .update(|s| s.streams.remove(id.as_str()).is_some())
        .map_err(|e| Failure::CouldNotRun(e.to_string()))?;
    let user = std::env::var("USER").unwrap_or_else(|_| format!("uid {}", nix::unistd::getuid()));
    if existed {
        logger.info(&format!("Reset restart history of worker {id} (by {user})"));
    } else {
        logger.info(&format!("Worker {id} had no restart history; nothing to reset"));
    }
    Ok(Outcome::Healthy)
}
