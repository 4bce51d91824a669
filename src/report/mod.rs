//! What the monitor tells people and scripts: monitor.log and the console in
//! exactly the shapes of the original, and the structured event log.

pub mod events;
pub mod log;
pub mod metrics;
pub mod notify;
