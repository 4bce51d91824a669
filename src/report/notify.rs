//! The notify hook (`--on-give-up CMD`, `on_give_up` in monitor.toml): the
//! operator's command, run through `sh -c`, gets the event as one JSON object
//! on stdin. It runs on its own thread with a timeout, so a slow or hanging
//! hook never holds up the checks; its failures are logged.

use std::path::PathBuf;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::Duration;

use super::events::EventRecord;
use super::log::{Level, Logger};
use crate::process::bounded::run_bounded;

pub const HOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the hook; the handle finishes within the timeout.
pub fn spawn_hook(
    command: &str,
    event: &EventRecord,
    monitor_log: PathBuf,
    timeout: Duration,
) -> JoinHandle<()> {
    let command = command.to_string();
    let payload = serde_json::to_string(event).unwrap_or_default();
    std::thread::spawn(move || {
        let logger = Logger::new(Some(&monitor_log), true);
        let outcome = run(&command, &payload, timeout);
        match outcome {
            Ok(()) => logger.write_file(Level::Info, &format!("Notify hook ran: {command}")),
            Err(e) => logger.write_file(
                Level::Error,
                &format!("Notify hook {command:?} failed: {e}"),
            ),
        }
    })
}

fn run(command: &str, payload: &str, timeout: Duration) -> Result<(), String> {
    let input = format!("{payload}\n");
    let done = run_bounded(
        Command::new("sh").arg("-c").arg(command),
        Some(input.as_bytes()),
        timeout,
    )
    .map_err(|e| e.to_string())?;
    if done.status.success() {
        Ok(())
    } else {
        Err(format!("it ended with {}", done.status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn the_hook_gets_the_event_on_stdin_and_slow_hooks_are_cut_off() {
        let dir = std::env::temp_dir().join(format!("mw-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("got.json");
        let log = dir.join("monitor.log");
        let event = EventRecord {
            reason: Some("budget".into()),
            ..EventRecord::new("gave_up", Some("Stream-A"))
        };
        spawn_hook(
            &format!("cat > '{}'", out.display()),
            &event,
            log.clone(),
            HOOK_TIMEOUT,
        )
        .join()
        .unwrap();
        let got: EventRecord =
            serde_json::from_str(std::fs::read_to_string(&out).unwrap().trim()).unwrap();
        assert_eq!(
            (got.event.as_str(), got.stream.as_deref()),
            ("gave_up", Some("Stream-A"))
        );
        let started = Instant::now();
        spawn_hook("sleep 5", &event, log.clone(), Duration::from_millis(200))
            .join()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
        spawn_hook("exit 7", &event, log.clone(), HOOK_TIMEOUT)
            .join()
            .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("killed") && text.contains("exit status: 7"),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
