//! How the monitor starts anything that outlives it (workers, components,
//! tc sessions, the background daemon): in a new session (so a terminal's
//! or the monitor's signals never reach it, and its PID leads its own
//! group), stdin from /dev/null, output appended to a log or discarded, none
//! of the caller's other descriptors, and the descriptor limit the monitor
//! started with.
//!
//! A program named by a path is started through this binary itself: the
//! monitor `posix_spawn`s `/proc/self/exe` with [`DETACH_ARG`], and that
//! fresh, small process detaches and `exec`s the program (same PID, so the
//! caller's `Child` is the program's). A `fork` of the daemon would copy
//! the page tables of a process with hundreds of restart threads and make
//! every one of them fault on its next write; 200 restarts at once spent a
//! third of their CPU there. Anything else (a name looked up on PATH, a
//! binary whose `main` does not serve [`DETACH_ARG`], such as the test
//! harness) is forked with the same steps between fork and exec, so its
//! errors read as they always did.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use super::safe_file;

/// The first argument that makes this binary detach and run the program
/// named after it, instead of monitoring.
pub const DETACH_ARG: &str = "--monitor-workers-detach";

/// Set by a `main` that serves [`DETACH_ARG`] (through [`serve_if_asked`]).
static SERVED: AtomicBool = AtomicBool::new(false);

/// The soft and hard RLIMIT_NOFILE this process started with.
static ORIGINAL_NOFILE: OnceLock<(u64, u64)> = OnceLock::new();

/// A command that runs `program` detached: add its arguments, environment
/// and working directory as to any `Command`, then [`Detached::spawn`].
pub struct Detached {
    command: Command,
    /// Started through this binary: an exec failure comes back on stdin.
    via_self: bool,
}

impl std::ops::Deref for Detached {
    type Target = Command;
    fn deref(&self) -> &Command {
        &self.command
    }
}

impl std::ops::DerefMut for Detached {
    fn deref_mut(&mut self) -> &mut Command {
        &mut self.command
    }
}

/// `program`, to be started detached, its output appended to `output`
/// (or discarded).
pub fn detached(program: impl AsRef<OsStr>, output: Option<&Path>) -> std::io::Result<Detached> {
    let program = program.as_ref();
    let (out, err) = match output {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            // Never through a symlink, never blocking on a FIFO.
            let file = safe_file::open_append(path).map_err(|e| e.into_io())?;
            (Stdio::from(file.try_clone()?), Stdio::from(file))
        }
        None => (Stdio::null(), Stdio::null()),
    };
    let (mut command, via_self) = match through_self(program) {
        Some(command) => (command, true),
        None => (forked(program), false),
    };
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    Ok(Detached { command, via_self })
}

impl Detached {
    /// Starts it. Through this binary, the child reports on its stdin (a
    /// pipe, close-on-exec past the detaching step) why it could not exec
    /// the program, so a failure is this call's error as with a fork.
    pub fn spawn(&mut self) -> std::io::Result<Child> {
        if !self.via_self {
            return self.command.spawn();
        }
        let (report, reporter) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        self.command.stdin(Stdio::from(reporter));
        let spawned = self.command.spawn();
        // Our copy of the write end goes, or the read below never ends.
        self.command.stdin(Stdio::null());
        let mut child = spawned?;
        let mut errno = [0u8; 4];
        let mut got = 0;
        let mut report = std::fs::File::from(report);
        while got < errno.len() {
            match report.read(&mut errno[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if got < errno.len() {
            return Ok(child);
        }
        let _ = child.wait();
        Err(std::io::Error::from_raw_os_error(i32::from_le_bytes(errno)))
    }
}

/// `/proc/self/exe DETACH_ARG LIMIT PROGRAM`, when this binary serves it
/// and `program` is a path to a file that can be run.
fn through_self(program: &OsStr) -> Option<Command> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    if !cfg!(target_os = "linux") || !SERVED.load(Ordering::Relaxed) {
        return None;
    }
    if !program.as_bytes().contains(&b'/') {
        return None;
    }
    let meta = std::fs::metadata(program).ok()?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return None;
    }
    let mut command = Command::new("/proc/self/exe");
    command
        .arg(DETACH_ARG)
        .arg(limit_to_restore().map_or("-".to_string(), |soft| soft.to_string()))
        .arg(program);
    Some(command)
}

/// `program` forked, detached between fork and exec.
fn forked(program: &OsStr) -> Command {
    let mut command = Command::new(program);
    // SAFETY: setsid, close_range/fcntl and get/setrlimit are
    // async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            cloexec_inherited_fds()?;
            restore_descriptor_limit()
        });
    }
    command
}

/// The detaching half, in the child: when this process was started with
/// [`DETACH_ARG`], it leaves the monitor's session, marks inherited
/// descriptors close-on-exec, lowers the descriptor limit to the one given,
/// takes /dev/null as stdin and becomes the program. It never returns then:
/// on failure it writes the errno to the pipe it was given as stdin and
/// exits 127 when the program is missing, else 126, as a shell would.
/// Otherwise it notes that this binary serves the argument. The first call
/// of `main`, before anything reads the environment: the spawn tag it
/// carries is the worker's.
pub fn serve_if_asked() {
    let mut args = std::env::args_os();
    let _exe = args.next();
    if args.next().as_deref() != Some(OsStr::new(DETACH_ARG)) {
        SERVED.store(true, Ordering::Relaxed);
        return;
    }
    let limit: Option<u64> = args.next().and_then(|l| l.to_str()?.parse().ok());
    let mut report = 0;
    let error = match args.next() {
        Some(program) => become_detached(&program, args, limit, &mut report),
        None => std::io::Error::from(std::io::ErrorKind::InvalidInput),
    };
    let errno = error.raw_os_error().unwrap_or(nix::libc::EINVAL);
    // SAFETY: a write of four bytes from a local buffer to the reporting pipe.
    unsafe {
        nix::libc::write(report, errno.to_le_bytes().as_ptr().cast(), 4);
    }
    std::process::exit(if errno == nix::libc::ENOENT { 127 } else { 126 });
}

/// Detaches this process and execs `program`; returns only on failure,
/// with `report` the descriptor of the reporting pipe then.
fn become_detached(
    program: &OsStr,
    args: impl Iterator<Item = OsString>,
    limit: Option<u64>,
    report: &mut i32,
) -> std::io::Error {
    use nix::libc;
    let prepared = (|| -> std::io::Result<()> {
        // The reporting pipe moves to fd 3, close-on-exec: the program's
        // exec closes it, which tells the monitor the exec happened.
        // SAFETY: descriptor calls on this process's own descriptors.
        unsafe {
            if libc::dup2(0, 3) != 3 {
                return Err(std::io::Error::last_os_error());
            }
            *report = 3;
            if libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let null = std::fs::File::open("/dev/null")?;
            if libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        nix::unistd::setsid()?;
        cloexec_inherited_fds()?;
        match limit {
            Some(soft) => lower_descriptor_limit(soft),
            None => Ok(()),
        }
    })();
    if let Err(e) = prepared {
        return e;
    }
    Command::new(program).args(args).exec()
}

/// Remembers the descriptor limit the monitor started with, before anything
/// raises it (the daemon lifts it to watch a pidfd per worker). Called once
/// at start-up.
pub fn remember_descriptor_limit() {
    use nix::sys::resource::{getrlimit, Resource};
    if let Ok(limits) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = ORIGINAL_NOFILE.set(limits);
    }
}

/// The soft limit a child must get back, if the monitor raised its own.
fn limit_to_restore() -> Option<u64> {
    use nix::sys::resource::{getrlimit, Resource};
    let &(soft, _) = ORIGINAL_NOFILE.get()?;
    let (now, _) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    (now != soft).then_some(soft)
}

/// Gives a child, between fork and exec, the descriptor limit the monitor
/// started with, if the monitor raised it since (async-signal-safe: two
/// syscalls). Workers must not inherit a limit meant for the monitor.
pub fn restore_descriptor_limit() -> std::io::Result<()> {
    match ORIGINAL_NOFILE.get() {
        Some(&(soft, _)) => lower_descriptor_limit(soft),
        None => Ok(()),
    }
}

/// Sets the soft descriptor limit to `soft`, unless it is already that or
/// above the hard one. Only the soft limit moves: the hard one may not be
/// raised again.
fn lower_descriptor_limit(soft: u64) -> std::io::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((now, hard)) if now != soft && soft <= hard => {
            setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(std::io::Error::from)
        }
        _ => Ok(()),
    }
}

/// Marks every descriptor above stderr close-on-exec (async-signal-safe),
/// so a worker never inherits the pipes of whatever started the monitor: a
/// cron job or an ssh session would otherwise wait for the worker to end.
pub fn cloexec_inherited_fds() -> std::io::Result<()> {
    use nix::libc;
    #[cfg(target_os = "linux")]
    {
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        // SAFETY: a plain syscall on descriptors of this process.
        if unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            )
        } == 0
        {
            return Ok(());
        }
    }
    for fd in 3..4096 {
        // SAFETY: fcntl on a descriptor number; EBADF for closed ones is fine.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok(())
}
