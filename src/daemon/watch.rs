//! How the daemon waits between ticks without polling: a self-pipe the
//! signal handlers and the tick thread write to, one pidfd per watched worker
//! registered once with epoll, the descriptor budget (raised limit, headroom
//! kept for spawns, the rest polled on the interval), and handing freed
//! memory back after a check.

use super::*;

/// A self-pipe the signal handlers (SIGCHLD, SIGINT, SIGTERM) and the tick
/// thread write to, so the one `epoll_wait` wakes for each of them.
pub(super) struct Waker {
    read: OwnedFd,
    write: OwnedFd,
    signals: Vec<signal_hook::SigId>,
}

impl Waker {
    pub(super) fn new() -> std::io::Result<Waker> {
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
            signal_hook::consts::SIGHUP,
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

    pub(super) fn wake(&self) {
        // A full pipe already holds a wake-up.
        let _ = nix::unistd::write(&self.write, &[1]);
    }

    /// The handlers must not outlive the pipe.
    pub(super) fn unregister(&self) {
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
pub(super) struct Watch {
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
    pub(super) fn new(waker: &Waker, descriptors: u64) -> std::io::Result<Watch> {
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

    /// The workers watched by a pidfd that has not fired: alive, and the
    /// very process first watched (a pidfd pins it). PID → start ticks.
    pub(super) fn pinned(&self) -> HashMap<i32, u64> {
        self.watched
            .values()
            .map(|(w, _)| (w.pid, w.start_ticks))
            .collect()
    }

    /// Watches exactly `running` (less the daemon's own children, `own`);
    /// returns the workers that were already gone when their pidfd was to
    /// be opened.
    pub(super) fn set(
        &mut self,
        running: Vec<Watched>,
        own: &HashSet<i32>,
        logger: &Logger,
    ) -> Vec<Watched> {
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
    pub(super) fn wait(&mut self, timeout: Duration) -> Vec<Watched> {
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

pub(super) fn drain_fd(fd: RawFd) {
    let mut buf = [0u8; 64];
    while matches!(nix::unistd::read(fd, &mut buf), Ok(n) if n > 0) {}
}

/// Hands the memory a check freed back to the system, so a daemon that
/// checked a thousand streams sleeps at its resting size.
pub(super) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// One pidfd per watched worker: lift the soft limit on open files to the
/// hard one; returns the limit now in force.
pub(super) fn raise_descriptor_limit() -> u64 {
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
pub(super) enum PidfdRefused {
    /// It is gone already (or its PID is another process now).
    Gone,
    /// No descriptor left: it is checked at the interval.
    Unavailable,
    /// No pidfd on this kernel or backend: it is polled once a second.
    NoKernel,
}

/// A pidfd for the worker, pinned to its start time.
pub(super) fn open_pidfd(w: &Watched) -> Result<OwnedFd, PidfdRefused> {
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
