//! The daemon: ticks in a loop until SIGINT/SIGTERM, and between ticks
//! sleeps in one `epoll_wait` that wakes only for a reason: a watched
//! worker's death (its pidfd, registered once), a signal (SIGCHLD for the
//! wrappers it spawned itself, reaped then; SIGINT/SIGTERM), the next
//! backoff deadline, the heartbeat or the interval. Nothing is polled where
//! the kernel has pidfds: an idle daemon costs the same with ten workers or
//! a thousand (without pidfds — the portable backend — workers are looked
//! at once a second). A tick runs
//! on its own thread while this one keeps watching, so a death during a
//! long tick (restarts waiting for slow wrappers) is still logged at once.
//! Where descriptors run out, the remaining workers are checked at each
//! interval instead (said once). Only one daemon runs per project:
//! `state/daemon.lock` is held for its whole life and names its PID.

use crate::process::detach::Child;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
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

mod watch;
use watch::*;

/// Descriptors kept free for spawns, databases and logs when pidfds are
/// handed out.
const DESCRIPTOR_HEADROOM: u64 = 256;

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
/// How the daemon reads its settings again on SIGHUP (`monitor.toml` and the
/// flags it was started with); `Err` says why the new file is refused.
pub type Reload<'a> = &'a dyn Fn() -> Result<TickSettings, String>;

pub fn run(
    layout: &Layout,
    settings: &TickSettings,
    logger: &Logger,
    store: &StateStore,
    interval: Duration,
    args: Vec<String>,
    reload: Reload<'_>,
) -> Result<(), DaemonError> {
    let _lock = acquire_daemon_lock(layout)?;
    let descriptors = raise_descriptor_limit();
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while shutting down forces the exit (code 1).
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&shutdown))
            .map_err(DaemonError::Signals)?;
        signal_hook::flag::register(signal, Arc::clone(&shutdown)).map_err(DaemonError::Signals)?;
    }
    // SIGHUP (a closed terminal, or an operator's "reload") never ends the
    // daemon: it reads monitor.toml again, as supervisord and nginx do.
    let hangup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hangup))
        .map_err(DaemonError::Signals)?;
    let mut current = settings.clone();
    let waker = Waker::new().map_err(DaemonError::Signals)?;
    let mut watch = Watch::new(&waker, descriptors).map_err(DaemonError::Signals)?;
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
    let handoff = crate::tick::Handoff::default();
    let mut memory = TickMemory::default();
    memory.snapshot = crate::tick::SnapshotMemory::keeping();
    memory.handoff = Some(handoff.clone());
    let mut children: BTreeMap<StreamId, Child> = BTreeMap::new();
    while !shutdown.load(Ordering::SeqCst) {
        if hangup.swap(false, Ordering::SeqCst) {
            match reload() {
                Ok(fresh) => {
                    current = fresh;
                    logger.info("Received SIGHUP: settings read again from monitor.toml");
                }
                Err(e) => logger.error(&format!(
                    "Received SIGHUP, but the new settings are refused ({e}); keeping the ones in force"
                )),
            }
        }
        let settings = &current;
        let mut wake = Instant::now() + interval;
        // Deaths seen so far are said; the rest of the watched are alive.
        memory.snapshot.pin_alive(watch.pinned());
        // The tick runs beside the watch: deaths meanwhile are logged now
        // and checked by a tick right after this one.
        let done = AtomicBool::new(false);
        let (ticked, died) = std::thread::scope(|scope| {
            let memory = &mut memory;
            let (done, waker) = (&done, &waker);
            let tick = scope.spawn(move || {
                let report = run_tick(layout, settings, logger, store, memory);
                done.store(true, Ordering::SeqCst);
                waker.wake();
                report
            });
            let mut died = false;
            while !done.load(Ordering::SeqCst) && !tick.is_finished() {
                if heartbeat.due() {
                    heartbeat.touch(logger);
                }
                let dead = watch.wait(heartbeat.left());
                take_handed(&handoff, &mut children);
                died |= say_deaths(dead, &mut children, layout, logger);
            }
            (tick.join(), died)
        });
        match ticked {
            Ok(Ok(report)) => {
                take_handed(&handoff, &mut children);
                for (id, child) in report.spawned {
                    children.insert(id, child);
                }
                let own: HashSet<i32> = children.values().map(|c| c.id() as i32).collect();
                let gone = watch.set(report.running, &own, logger);
                if say_deaths(gone, &mut children, layout, logger) || died {
                    wake = Instant::now();
                }
                if let Some(due) = report.next_due_ms {
                    let after =
                        Duration::from_millis(due.saturating_sub(crate::clock::now_ms()) + 20);
                    wake = wake.min(Instant::now() + after);
                }
            }
            Ok(Err(e)) => logger.warning(&format!("Check skipped: {e}")),
            Err(_) => {
                logger.error("The check failed unexpectedly; trying again at the next interval")
            }
        }
        heartbeat.beat(logger);
        release_freed_memory();
        wait_for_next_tick(
            layout,
            wake,
            &[&shutdown, &hangup],
            &mut children,
            &mut watch,
            &mut heartbeat,
            logger,
        );
    }
    logger.info("Received shutdown signal");
    let recorder = crate::tick::Recorder::new(layout, logger);
    crate::tick::act::stop_owned_components(layout, &current, &recorder, store);
    reap_children(&mut children, layout, logger);
    heartbeat.remove();
    waker.unregister();
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
    /// The file last written (device, inode): between checks only its
    /// modification time is moved, while it is still that file.
    written: Option<(u64, u64)>,
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
            written: None,
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
        self.written = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
    }

    /// The heartbeat between checks: the record's modification time moves
    /// (one syscall, no new file), which readers take as its heartbeat; the
    /// record is written whole if it is no longer the file this daemon wrote.
    fn touch(&mut self, logger: &Logger) {
        use nix::sys::stat::{utimensat, UtimensatFlags};
        use nix::sys::time::TimeSpec;
        let ours = std::fs::symlink_metadata(&self.path)
            .ok()
            .is_some_and(|m| m.file_type().is_file() && Some((m.dev(), m.ino())) == self.written);
        let now = TimeSpec::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        let touched = ours
            && utimensat(
                None,
                &self.path,
                &now,
                &now,
                UtimensatFlags::NoFollowSymlink,
            )
            .is_ok();
        if touched {
            self.last = Instant::now();
        } else {
            self.beat(logger);
        }
    }

    fn due(&self) -> bool {
        self.last.elapsed() >= HEARTBEAT_EVERY
    }

    /// Time until the next heartbeat is due.
    fn left(&self) -> Duration {
        HEARTBEAT_EVERY.saturating_sub(self.last.elapsed())
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The daemon's record, if a daemon wrote one (a FIFO or symlink in its
/// place is no record: never waited on, never followed).
pub fn read_daemon_record(layout: &Layout) -> Option<DaemonRecord> {
    record_at(&layout.daemon_record())
}

/// The daemon record at `path`, its heartbeat the later of the one written
/// in it and the file's modification time.
fn record_at(path: &std::path::Path) -> Option<DaemonRecord> {
    let bytes = crate::process::safe_file::read_capped(path, 1 << 16).ok()?;
    let mut record: DaemonRecord = serde_json::from_slice(&bytes).ok()?;
    // Between checks the daemon moves only the file's time.
    let touched = std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .map(crate::clock::epoch_ms)
        .unwrap_or(0);
    record.heartbeat_ms = record.heartbeat_ms.max(touched);
    Some(record)
}

/// Sleeps until the interval is over, a watched worker dies, a wrapper the
/// daemon spawned exits or a signal arrives.
fn wait_for_next_tick(
    layout: &Layout,
    deadline: Instant,
    stop_waiting: &[&AtomicBool],
    children: &mut BTreeMap<StreamId, Child>,
    watch: &mut Watch,
    heartbeat: &mut Heartbeat,
    logger: &Logger,
) {
    while !stop_waiting.iter().any(|f| f.load(Ordering::SeqCst)) {
        if heartbeat.due() {
            heartbeat.touch(logger);
        }
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let dead = watch.wait((deadline - now).min(heartbeat.left()));
        if say_deaths(dead, children, layout, logger) {
            return;
        }
    }
}

/// Reaps exited wrappers and logs how each ended, then the watched workers
/// found dead (a wrapper's exit status says more than its pidfd, so its
/// line comes first); whether anything ended.
fn say_deaths(
    dead: Vec<Watched>,
    children: &mut BTreeMap<StreamId, Child>,
    layout: &Layout,
    logger: &Logger,
) -> bool {
    let mut ended = reap_children(children, layout, logger);
    for w in dead {
        if !ended.iter().any(|(id, _)| *id == w.stream) {
            logger.warning(&format!("Worker {} (PID {}) died", w.stream, w.pid));
            ended.push((w.stream.clone(), w.pid));
        }
    }
    !ended.is_empty()
}

/// The live process a wrapper `wrapper` of stream `id` left running as its
/// worker: named by the stream's PID file, in the wrapper's session.
fn worker_left_running(layout: &Layout, id: &StreamId, wrapper: i32) -> Option<i32> {
    use crate::process::{pidfile, procinfo};
    let pidfile::PidFile::Pid { pid, .. } =
        pidfile::read(&layout.pid_file(id), procinfo::pid_max())
    else {
        return None;
    };
    procinfo::inspect(pid)
        .filter(|f| pid != wrapper && f.session == wrapper && !f.is_zombie())
        .map(|f| f.pid)
}

/// Takes the wrappers the running tick has spawned so far.
fn take_handed(handoff: &crate::tick::Handoff, children: &mut BTreeMap<StreamId, Child>) {
    let mut handed = handoff.lock().unwrap_or_else(|e| e.into_inner());
    for (id, child) in handed.drain(..) {
        children.insert(id, child);
    }
}

/// Reaps exited wrappers; logs how each ended.
fn reap_children(
    children: &mut BTreeMap<StreamId, Child>,
    layout: &Layout,
    logger: &Logger,
) -> Vec<(StreamId, i32)> {
    let mut ended = Vec::new();
    children.retain(|id, child| match child.try_wait() {
        Ok(Some(status)) => {
            let pid = child.id() as i32;
            // A wrapper that starts its worker and exits (its PID file names
            // the worker, in the wrapper's session, which runs on) is not the
            // worker's death.
            if let Some(worker) = worker_left_running(layout, id, pid) {
                logger.info(&format!(
                    "The wrapper of worker {id} (PID {pid}) exited: {}; its worker (PID {worker}) runs on",
                    describe_status(status)
                ));
                return false;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Between checks the heartbeat moves the record's time, not its
    /// content, and readers take that time; a record that is no longer the
    /// daemon's file (replaced, or a symlink planted) is written whole.
    #[test]
    fn the_heartbeat_between_checks_moves_only_the_record_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.json");
        let logger = Logger::new(None, true);
        let started = Instant::now() - HEARTBEAT_EVERY;
        let mut heartbeat = Heartbeat {
            path: path.clone(),
            record: DaemonRecord {
                pid: 1,
                start_ticks: 2,
                started_ms: 3,
                heartbeat_ms: 1_000,
                interval_secs: 30,
                args: vec!["--daemon".into()],
            },
            last: started,
            failed: false,
            written: None,
        };
        heartbeat.beat(&logger);
        let written = std::fs::read(&path).unwrap();
        let beat_ms = heartbeat.record.heartbeat_ms;
        let old = std::time::SystemTime::now() - Duration::from_secs(600);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        assert_eq!(
            record_at(&path).unwrap().heartbeat_ms,
            beat_ms,
            "the written time"
        );

        heartbeat.last = started;
        heartbeat.touch(&logger);
        assert!(!heartbeat.due());
        assert_eq!(std::fs::read(&path).unwrap(), written, "content unchanged");
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode, "same file");
        let touched = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(touched > old + Duration::from_secs(500));
        assert!(record_at(&path).unwrap().heartbeat_ms >= crate::clock::epoch_ms(touched));

        // A symlink in its place is not touched (nor followed): the record
        // is written whole again, a file of its own.
        let elsewhere = dir.path().join("elsewhere.json");
        std::fs::write(&elsewhere, "{}").unwrap();
        let before = std::fs::metadata(&elsewhere).unwrap().modified().unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        heartbeat.touch(&logger);
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_file());
        assert_eq!(std::fs::read(&elsewhere).unwrap(), b"{}");
        assert_eq!(
            std::fs::metadata(&elsewhere).unwrap().modified().unwrap(),
            before
        );
        assert_eq!(record_at(&path).unwrap().pid, 1);

        // A FIFO in its place is not touched (nor opened, so nothing
        // blocks): the record is written whole again.
        std::fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        heartbeat.touch(&logger);
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_file());
        assert_eq!(record_at(&path).unwrap().pid, 1);
    }
}
