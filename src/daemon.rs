//! The daemon: ticks in a loop until SIGINT/SIGTERM. Between ticks it sleeps
//! on the workers themselves (a pidfd per watched worker where the kernel has
//! them, a cheap /proc poll otherwise) and reaps the wrappers it spawned, so a
//! worker's death is logged and acted on at once, not at the next interval.
//! Only one daemon runs per project: `state/daemon.lock` is held for its
//! whole life and names its PID.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
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
    Lock {
        path: String,
        source: std::io::Error,
    },
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
            let holder = if holder.is_empty() {
                "unknown".to_string()
            } else {
                holder
            };
            Err(DaemonError::AlreadyRunning {
                holder,
                path: shown,
            })
        }
        Err(source) => Err(DaemonError::Lock {
            path: shown,
            source,
        }),
    }
}

/// Runs until a shutdown signal. Errors of a single tick are logged and the
/// loop goes on; only failing to start is an error.
/// `args` are the command-line arguments, recorded so `restart` can start
/// the daemon again with the same settings.
pub fn run(
    layout: &Layout,
    settings: &TickSettings,
    logger: &Logger,
    store: &StateStore,
    interval: Duration,
    args: Vec<String>,
) -> Result<(), DaemonError> {
    let _lock = acquire_daemon_lock(layout)?;
    raise_descriptor_limit();
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while shutting down forces the exit (code 1).
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&shutdown))
            .map_err(DaemonError::Signals)?;
        signal_hook::flag::register(signal, Arc::clone(&shutdown)).map_err(DaemonError::Signals)?;
    }
    let mut heartbeat = Heartbeat::new(layout, interval, args);
    // The record names this daemon as soon as it holds the lock, so `stop`
    // never finds the lock and an old record disagreeing.
    heartbeat.beat(logger);
    logger.info(&format!(
        "Starting monitor daemon (interval: {}s, max_restarts: {})",
        interval.as_secs(),
        settings.plan.policy.max_restarts
    ));
    if !settings.plan.auto_restart {
        logger.warning("Auto-restart disabled. Use --auto-restart to enable.");
    }
    let mut memory = TickMemory::default();
    let mut children: BTreeMap<StreamId, Child> = BTreeMap::new();
    let mut watch = Watch::default();
    while !shutdown.load(Ordering::SeqCst) {
        let mut wake = Instant::now() + interval;
        match run_tick(layout, settings, logger, store, &mut memory) {
            Ok(report) => {
                for (id, child) in report.spawned {
                    children.insert(id, child);
                }
                watch.set(report.running);
                if let Some(due) = report.next_due_ms {
                    let after =
                        Duration::from_millis(due.saturating_sub(crate::clock::now_ms()) + 20);
                    wake = wake.min(Instant::now() + after);
                }
            }
            Err(e) => logger.warning(&format!("Check skipped: {e}")),
        }
        heartbeat.beat(logger);
        release_freed_memory();
        wait_for_next_tick(
            wake,
            &shutdown,
            &mut children,
            &mut watch,
            &mut heartbeat,
            logger,
        );
    }
    logger.info("Received shutdown signal");
    let recorder = crate::tick::Recorder::new(layout, logger);
    crate::tick::act::stop_owned_components(layout, settings, &recorder, store);
    reap_children(&mut children, logger);
    heartbeat.remove();
    logger.info("Monitor daemon stopped; workers keep running");
    Ok(())
}

/// The daemon's record in `state/daemon.json`: who it is, how it was
/// started, and a heartbeat refreshed while it runs, so `status` can tell a
/// healthy daemon from a hung or dead one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DaemonRecord {
    pub pid: i32,
    pub start_ticks: u64,
    pub started_ms: u64,
    pub heartbeat_ms: u64,
    pub interval_secs: u64,
    pub args: Vec<String>,
}

/// Refreshes at least this often, whatever the interval.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

struct Heartbeat {
    path: std::path::PathBuf,
    record: DaemonRecord,
    last: Instant,
    failed: bool,
}

impl Heartbeat {
    fn new(layout: &Layout, interval: Duration, args: Vec<String>) -> Heartbeat {
        let pid = std::process::id() as i32;
        let start_ticks = procinfo::inspect(pid).map(|f| f.start_ticks).unwrap_or(0);
        let now = crate::clock::now_ms();
        Heartbeat {
            path: layout.daemon_record(),
            record: DaemonRecord {
                pid,
                start_ticks,
                started_ms: now,
                heartbeat_ms: now,
                interval_secs: interval.as_secs(),
                args,
            },
            last: Instant::now(),
            failed: false,
        }
    }

    fn beat(&mut self, logger: &Logger) {
        self.record.heartbeat_ms = crate::clock::now_ms();
        self.last = Instant::now();
        let text = serde_json::to_string_pretty(&self.record).expect("record serialises");
        let written = crate::files::replace_atomically(
            &self.path,
            text.as_bytes(),
            crate::files::Durability::Atomic,
        );
        match written {
            Err(e) if !self.failed => {
                self.failed = true;
                logger.error(&format!(
                    "Cannot write daemon heartbeat {}: {e}",
                    self.path.display()
                ));
            }
            Ok(()) => self.failed = false,
            Err(_) => {}
        }
    }

    fn due(&self) -> bool {
        self.last.elapsed() >= HEARTBEAT_EVERY
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The daemon's record, if a daemon wrote one (a FIFO or symlink in its
/// place is no record: never waited on, never followed).
pub fn read_daemon_record(layout: &Layout) -> Option<DaemonRecord> {
    let bytes = crate::process::safe_file::read_capped(&layout.daemon_record(), 1 << 16).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Sleeps until the interval is over, a watched worker dies or a signal
/// arrives, reaping spawned wrappers on the way.
fn wait_for_next_tick(
    deadline: Instant,
    shutdown: &AtomicBool,
    children: &mut BTreeMap<StreamId, Child>,
    watch: &mut Watch,
    heartbeat: &mut Heartbeat,
    logger: &Logger,
) {
    while !shutdown.load(Ordering::SeqCst) {
        if heartbeat.due() {
            heartbeat.beat(logger);
        }
        let dead = watch.wait_for_death(WAKE);
        // Reap first: for a worker this daemon spawned, the exit status says more.
        let mut died = reap_children(children, logger);
        for w in dead {
            if !died.iter().any(|(id, _)| *id == w.stream) {
                logger.warning(&format!("Worker {} (PID {}) died", w.stream, w.pid));
                died.push((w.stream.clone(), w.pid));
            }
        }
        if !died.is_empty() || Instant::now() >= deadline {
            return;
        }
    }
}

/// Reaps exited wrappers; logs how each ended.
fn reap_children(
    children: &mut BTreeMap<StreamId, Child>,
    logger: &Logger,
) -> Vec<(StreamId, i32)> {
    let mut ended = Vec::new();
    children.retain(|id, child| match child.try_wait() {
        Ok(Some(status)) => {
            let pid = child.id() as i32;
            logger.log(
                Level::Warning,
                crate::report::log::Kind::Report,
                &format!(
                    "Worker {id} (PID {pid}) exited: {}",
                    describe_status(status)
                ),
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
                None => open_pidfd(&w),
            };
            kept.push((w, fd));
        }
        self.workers = kept;
    }

    /// Waits up to `timeout` for a watched worker to die; returns the dead.
    fn wait_for_death(&mut self, timeout: Duration) -> Vec<Watched> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        // Only a worker whose pidfd fired, or one without a pidfd, is looked
        // at in /proc: an idle daemon with a thousand workers reads nothing.
        let mut suspects: Vec<bool> = self.workers.iter().map(|(_, fd)| fd.is_none()).collect();
        let watched: Vec<usize> = (0..self.workers.len())
            .filter(|i| self.workers[*i].1.is_some())
            .collect();
        if watched.is_empty() {
            std::thread::sleep(timeout);
        } else {
            let mut polls: Vec<PollFd> = watched
                .iter()
                .map(|i| {
                    PollFd::new(
                        self.workers[*i].1.as_ref().expect("watched").as_fd(),
                        PollFlags::POLLIN,
                    )
                })
                .collect();
            let ms = PollTimeout::try_from(timeout.as_millis() as i32).unwrap_or(PollTimeout::NONE);
            if let Ok(n) = poll(&mut polls, ms) {
                if n > 0 {
                    for (k, p) in polls.iter().enumerate() {
                        if p.revents().is_some_and(|r| !r.is_empty()) {
                            suspects[watched[k]] = true;
                        }
                    }
                }
            }
        }
        let mut dead = Vec::new();
        let mut index = 0;
        self.workers.retain(|(w, _)| {
            let suspect = suspects[index];
            index += 1;
            if !suspect {
                return true;
            }
            // /proc decides, for pidfd and fallback alike.
            let alive = procinfo::inspect(w.pid)
                .is_some_and(|f| !f.is_zombie() && f.start_ticks == w.start_ticks);
            if !alive {
                dead.push(w.clone());
            }
            alive
        });
        dead
    }
}

/// Hands the memory a check freed back to the system, so a daemon that
/// checked a thousand streams sleeps at its resting size.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// One pidfd per watched worker: lift the soft limit on open files to the
/// hard one, so a thousand workers are all watched (the rest would fall back
/// to polling /proc).
fn raise_descriptor_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// A pidfd for the worker, or `None` where the kernel has none (then the
/// wait falls back to polling /proc every wake-up).
fn open_pidfd(w: &Watched) -> Option<OwnedFd> {
    #[cfg(target_os = "linux")]
    if !procinfo::portable() {
        use rustix::process::{pidfd_open, Pid, PidfdFlags};
        let fd = pidfd_open(Pid::from_raw(w.pid)?, PidfdFlags::empty()).ok()?;
        // The PID could have been reused between the check and the open.
        let same = procinfo::inspect(w.pid).is_some_and(|f| f.start_ticks == w.start_ticks);
        return same.then_some(fd);
    }
    // The portable backend (macOS): no pidfd; the wait polls.
    let _ = w;
    None
}
