//! The daemon: ticks in a loop until SIGINT/SIGTERM. Between ticks it sleeps
//! on the workers themselves (a pidfd per watched worker where the kernel has
//! them, a cheap /proc poll otherwise) and reaps the wrappers it spawned, so a
//! worker's death is logged and acted on at once, not at the next interval.
//! Only one daemon runs per project: `state/daemon.lock` is held for its
//! whole life and names its PID.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::layout::{Layout, StreamId};
use crate::process::lock::{self, FileLock};
use crate::process::procinfo;
use crate::process::spawn::describe_status;
use crate::report::log::{Level, Logger};
use crate::state::StateStore;
use crate::tick::{run_tick, TickMemory, TickSettings, Watched};

/// How often the wait between ticks looks at signals and children.
const WAKE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("another monitor daemon is already running for this project (PID {holder}); stop it first (lock: {path})")]
    AlreadyRunning { holder: String, path: String },
    #[error("cannot take the daemon lock {path}: {source}")]
    Lock { path: String, source: std::io::Error },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Takes the single-daemon lock of the project.
pub fn acquire_daemon_lock(layout: &Layout) -> Result<FileLock, DaemonError> {
    let path = layout.daemon_lock();
    let shown = path.display().to_string();
    match lock::try_lock(&path) {
        Ok(Some(mut held)) => {
            let _ = held.write_holder(&format!("{}\n", std::process::id()));
            Ok(held)
        }
        Ok(None) => {
            let holder = lock::read_holder(&path);
            let holder = if holder.is_empty() { "unknown".to_string() } else { holder };
            Err(DaemonError::AlreadyRunning { holder, path: shown })
        }
        Err(source) => Err(DaemonError::Lock { path: shown, source }),
    }
}

/// Runs until a shutdown signal. Errors of a single tick are logged and the
/// loop goes on; only failing to start is an error.
pub fn run(layout: &Layout, settings: &TickSettings, logger: &Logger, interval: Duration) -> Result<(), DaemonError> {
    let _lock = acquire_daemon_lock(layout)?;
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&shutdown)).map_err(DaemonError::Signals)?;
    }
    logger.info(&format!(
        "Starting monitor daemon (interval: {}s, max_restarts: {})",
        interval.as_secs(),
        settings.policy.max_restarts
    ));
    if !settings.auto_restart {
        logger.warning("Auto-restart disabled. Use --auto-restart to enable.");
    }
    let store = StateStore::new(&layout.state_dir());
    let mut memory = TickMemory::default();
    let mut children: BTreeMap<StreamId, Child> = BTreeMap::new();
    let mut watch = Watch::default();
    while !shutdown.load(Ordering::SeqCst) {
        match run_tick(layout, settings, logger, &store, &mut memory) {
            Ok(report) => {
                for (id, child) in report.spawned {
                    children.insert(id, child);
                }
                watch.set(report.running);
            }
            Err(e) => logger.warning(&format!("Check skipped: {e}")),
        }
        wait_for_next_tick(interval, &shutdown, &mut children, &mut watch, logger);
    }
    logger.info("Received shutdown signal");
    logger.info("Monitor daemon stopped; workers keep running");
    Ok(())
}

/// Sleeps until the interval is over, a watched worker dies or a signal
/// arrives, reaping spawned wrappers on the way.
fn wait_for_next_tick(
    interval: Duration,
    shutdown: &AtomicBool,
    children: &mut BTreeMap<StreamId, Child>,
    watch: &mut Watch,
    logger: &Logger,
) {
    let deadline = Instant::now() + interval;
    while !shutdown.load(Ordering::SeqCst) {
        let mut died = reap_children(children, logger);
        for dead in watch.wait_for_death(WAKE) {
            if !died.iter().any(|(id, _)| *id == dead.stream) {
                logger.warning(&format!("Worker {} (PID {}) died", dead.stream, dead.pid));
                died.push((dead.stream.clone(), dead.pid));
            }
        }
        died.extend(reap_children(children, logger));
        if !died.is_empty() || Instant::now() >= deadline {
            return;
        }
    }
}

/// Reaps exited wrappers; logs how each ended.
fn reap_children(children: &mut BTreeMap<StreamId, Child>, logger: &Logger) -> Vec<(StreamId, i32)> {
    let mut ended = Vec::new();
    children.retain(|id, child| match child.try_wait() {
        Ok(Some(status)) => {
            let pid = child.id() as i32;
            logger.log(
                Level::Warning,
                crate::report::log::Kind::Report,
                &format!("Worker {id} (PID {pid}) exited: {}", describe_status(status)),
            );
            ended.push((id.clone(), pid));
            false
        }
        Ok(None) => true,
        Err(_) => false,
    });
    ended
}

/// The running workers the daemon sleeps on.
#[derive(Default)]
struct Watch {
    workers: Vec<(Watched, Option<OwnedFd>)>,
}

impl Watch {
    fn set(&mut self, running: Vec<Watched>) {
        let mut kept: Vec<(Watched, Option<OwnedFd>)> = Vec::new();
        let mut old = std::mem::take(&mut self.workers);
        for w in running {
            if kept.iter().any(|(k, _)| *k == w) {
                continue;
            }
            let fd = match old.iter().position(|(o, _)| *o == w) {
                Some(i) => old.swap_remove(i).1,
                None => pidfd_open(&w),
            };
            kept.push((w, fd));
        }
        self.workers = kept;
    }

    /// Waits up to `timeout` for a watched worker to die; returns the dead.
    fn wait_for_death(&mut self, timeout: Duration) -> Vec<Watched> {
        let fds: Vec<_> = self.workers.iter().filter_map(|(_, fd)| fd.as_ref()).collect();
        if fds.is_empty() {
            std::thread::sleep(timeout);
        } else {
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            let mut polls: Vec<PollFd> = fds.iter().map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN)).collect();
            let ms = PollTimeout::try_from(timeout.as_millis() as i32).unwrap_or(PollTimeout::NONE);
            let _ = poll(&mut polls, ms);
        }
        // Judge by /proc, the one truth for pidfd and fallback alike.
        let mut dead = Vec::new();
        self.workers.retain(|(w, _)| {
            let alive = procinfo::inspect(w.pid).is_some_and(|f| !f.is_zombie() && f.start_ticks == w.start_ticks);
            if !alive {
                dead.push(w.clone());
            }
            alive
        });
        dead
    }
}

/// A pidfd for the worker, or `None` where the kernel has none (then the
/// wait falls back to polling /proc every wake-up).
fn pidfd_open(w: &Watched) -> Option<OwnedFd> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscall; a non-negative result is a new fd we own.
        let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, w.pid, 0) };
        if fd < 0 {
            return None;
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // The PID could have been reused between the check and the open.
        let same = procinfo::inspect(w.pid).is_some_and(|f| f.start_ticks == w.start_ticks);
        same.then_some(fd)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = w;
        None
    }
}
