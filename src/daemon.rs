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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd, RawFd};
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
pub fn run(
    layout: &Layout,
    settings: &TickSettings,
    logger: &Logger,
    store: &StateStore,
    interval: Duration,
    args: Vec<String>,
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
    memory.handoff = Some(handoff.clone());
    let mut children: BTreeMap<StreamId, Child> = BTreeMap::new();
    while !shutdown.load(Ordering::SeqCst) {
        let mut wake = Instant::now() + interval;
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
                    heartbeat.beat(logger);
                }
                let dead = watch.wait(heartbeat.left());
                take_handed(&handoff, &mut children);
                died |= say_deaths(dead, &mut children, logger);
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
                if say_deaths(gone, &mut children, logger) || died {
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
    let bytes = crate::process::safe_file::read_capped(&layout.daemon_record(), 1 << 16).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Sleeps until the interval is over, a watched worker dies, a wrapper the
/// daemon spawned exits or a signal arrives.
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
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let dead = watch.wait((deadline - now).min(heartbeat.left()));
        if say_deaths(dead, children, logger) {
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
    logger: &Logger,
) -> bool {
    let mut ended = reap_children(children, logger);
    for w in dead {
        if !ended.iter().any(|(id, _)| *id == w.stream) {
            logger.warning(&format!("Worker {} (PID {}) died", w.stream, w.pid));
            ended.push((w.stream.clone(), w.pid));
        }
    }
    !ended.is_empty()
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

/// A self-pipe the signal handlers (SIGCHLD, SIGINT, SIGTERM) and the tick
/// thread write to, so the one `epoll_wait` wakes for each of them.
struct Waker {
    read: OwnedFd,
    write: OwnedFd,
    signals: Vec<signal_hook::SigId>,
}

impl Waker {
    fn new() -> std::io::Result<Waker> {
        use nix::fcntl::OFlag;
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let mut waker = Waker {
            read,
            write,
            signals: Vec::new(),
        };
        use std::os::fd::IntoRawFd;
        for signal in [
            signal_hook::consts::SIGCHLD,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ] {
            waker
                .signals
                .push(signal_hook::low_level::pipe::register_raw(
                    signal,
                    // Each registration owns (and at the end closes) its own copy.
                    waker.write.try_clone()?.into_raw_fd(),
                )?);
        }
        Ok(waker)
    }

    fn wake(&self) {
        // A full pipe already holds a wake-up.
        let _ = nix::unistd::write(&self.write, &[1]);
    }

    /// The handlers must not outlive the pipe.
    fn unregister(&self) {
        for id in &self.signals {
            signal_hook::low_level::unregister(*id);
        }
    }
}

/// How often workers without a pidfd (no kernel support) are looked at.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// The key of the waker in the epoll set; workers get keys from 1.
const WAKER_KEY: u64 = 0;

/// The running workers the daemon sleeps on: one pidfd each in an epoll
/// set, registered once and kept from tick to tick while the worker runs.
/// Workers the daemon spawned are not here (SIGCHLD and reaping tell of
/// them).
struct Watch {
    epoll: OwnedFd,
    waker_read: RawFd,
    watched: HashMap<u64, (Watched, OwnedFd)>,
    keys: HashMap<(i32, u64), u64>,
    next_key: u64,
    /// Workers without a pidfd because the kernel (or the portable process
    /// backend) has none: looked at in /proc or `ps` once a second.
    polled: Vec<Watched>,
    /// At most this many pidfds (the descriptor limit less headroom).
    budget: usize,
    /// Why some workers are checked only at the interval, once said.
    said_unwatched: bool,
}

impl Watch {
    fn new(waker: &Waker, descriptors: u64) -> std::io::Result<Watch> {
        use rustix::event::epoll;
        use std::os::fd::AsRawFd;
        let fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &fd,
            waker.read.as_fd(),
            epoll::EventData::new_u64(WAKER_KEY),
            epoll::EventFlags::IN,
        )?;
        Ok(Watch {
            epoll: fd,
            waker_read: waker.read.as_raw_fd(),
            watched: HashMap::new(),
            keys: HashMap::new(),
            polled: Vec::new(),
            next_key: WAKER_KEY + 1,
            budget: descriptors.saturating_sub(DESCRIPTOR_HEADROOM) as usize,
            said_unwatched: false,
        })
    }

    /// Watches exactly `running` (less the daemon's own children, `own`);
    /// returns the workers that were already gone when their pidfd was to
    /// be opened.
    fn set(&mut self, running: Vec<Watched>, own: &HashSet<i32>, logger: &Logger) -> Vec<Watched> {
        use rustix::event::epoll;
        let wanted: HashMap<(i32, u64), Watched> = running
            .into_iter()
            .filter(|w| !own.contains(&w.pid))
            .map(|w| ((w.pid, w.start_ticks), w))
            .collect();
        let stale: Vec<(i32, u64)> = self
            .keys
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for k in stale {
            if let Some((_, fd)) = self
                .keys
                .remove(&k)
                .and_then(|key| self.watched.remove(&key))
            {
                let _ = epoll::delete(&self.epoll, &fd);
            }
        }
        let mut gone = Vec::new();
        let mut unwatched = 0usize;
        self.polled.clear();
        for (k, w) in wanted {
            if self.keys.contains_key(&k) {
                continue;
            }
            if self.watched.len() >= self.budget {
                unwatched += 1;
                continue;
            }
            match open_pidfd(&w) {
                Ok(fd) => {
                    let key = self.next_key;
                    self.next_key += 1;
                    let data = epoll::EventData::new_u64(key);
                    if epoll::add(&self.epoll, &fd, data, epoll::EventFlags::IN).is_ok() {
                        self.keys.insert(k, key);
                        self.watched.insert(key, (w, fd));
                    } else {
                        unwatched += 1;
                    }
                }
                Err(PidfdRefused::Gone) => gone.push(w),
                Err(PidfdRefused::NoKernel) => self.polled.push(w),
                Err(PidfdRefused::Unavailable) => unwatched += 1,
            }
        }
        if unwatched > 0 && !self.said_unwatched {
            self.said_unwatched = true;
            logger.warning(&format!(
                "{unwatched} running worker(s) cannot be watched for death (no pidfd: descriptor limit or kernel); they are checked at every interval"
            ));
        }
        gone
    }

    /// Waits up to `timeout` for a watched worker to die or a wake-up;
    /// returns the workers whose pidfd fired.
    fn wait(&mut self, timeout: Duration) -> Vec<Watched> {
        use rustix::event::epoll;
        let timeout = if self.polled.is_empty() {
            timeout
        } else {
            timeout.min(POLL_EVERY)
        };
        let mut events = epoll::EventVec::with_capacity(64);
        // Rounded up: waking a millisecond early would spin.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut dead = Vec::new();
        self.polled.retain(|w| {
            let alive = procinfo::inspect(w.pid)
                .is_some_and(|f| !f.is_zombie() && f.start_ticks == w.start_ticks);
            if !alive {
                dead.push(w.clone());
            }
            alive
        });
        if !dead.is_empty() {
            return dead;
        }
        if epoll::wait(&self.epoll, &mut events, ms).is_err() {
            return dead; // EINTR: a signal; the caller looks again
        }
        for event in &events {
            let key = event.data.u64();
            if key == WAKER_KEY {
                drain_fd(self.waker_read);
                continue;
            }
            if let Some((w, fd)) = self.watched.remove(&key) {
                let _ = epoll::delete(&self.epoll, &fd);
                self.keys.remove(&(w.pid, w.start_ticks));
                dead.push(w);
            }
        }
        dead
    }
}

fn drain_fd(fd: RawFd) {
    let mut buf = [0u8; 64];
    while matches!(nix::unistd::read(fd, &mut buf), Ok(n) if n > 0) {}
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
/// hard one; returns the limit now in force.
fn raise_descriptor_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// Why a worker got no pidfd.
enum PidfdRefused {
    /// It is gone already (or its PID is another process now).
    Gone,
    /// No descriptor left: it is checked at the interval.
    Unavailable,
    /// No pidfd on this kernel or backend: it is polled once a second.
    NoKernel,
}

/// A pidfd for the worker, pinned to its start time.
fn open_pidfd(w: &Watched) -> Result<OwnedFd, PidfdRefused> {
    #[cfg(target_os = "linux")]
    if !procinfo::portable() {
        use rustix::process::{pidfd_open, Pid, PidfdFlags};
        let pid = Pid::from_raw(w.pid).ok_or(PidfdRefused::Gone)?;
        let fd = match pidfd_open(pid, PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::SRCH) => return Err(PidfdRefused::Gone),
            Err(rustix::io::Errno::NOSYS) => return Err(PidfdRefused::NoKernel),
            Err(_) => return Err(PidfdRefused::Unavailable),
        };
        // The PID could have been reused between the check and the open.
        return match procinfo::inspect(w.pid) {
            Some(f) if f.start_ticks == w.start_ticks && !f.is_zombie() => Ok(fd),
            _ => Err(PidfdRefused::Gone),
        };
    }
    // The portable backend (macOS): no pidfd; such workers are polled.
    let _ = w;
    Err(PidfdRefused::NoKernel)
}
