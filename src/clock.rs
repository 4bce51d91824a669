//! The one wall clock of the monitor: times in state, events and probes are
//! milliseconds (or seconds) since the Unix epoch, read here and nowhere
//! else, so the pure core can take "now" as an argument and tests can pin it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch, the time unit of state and events.
pub fn now_ms() -> u64 {
    epoch_ms(SystemTime::now())
}

/// A time as milliseconds since the epoch (0 before it).
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A time as whole seconds since the epoch (0 before it).
pub fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn epoch_conversions() {
        let t = UNIX_EPOCH + Duration::from_millis(12_345);
        assert_eq!((epoch_ms(t), epoch_secs(t)), (12_345, 12));
        assert_eq!(epoch_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert!(now_ms() > 1_600_000_000_000);
    }
}
