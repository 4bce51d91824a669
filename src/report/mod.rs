//! What the monitor tells people and scripts: monitor.log and the console in
//! exactly the shapes of the original, and the structured event log.

pub mod events;
pub mod log;
pub mod metrics;
pub mod notify;

/// Milliseconds since the epoch, the time unit of state and events.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
