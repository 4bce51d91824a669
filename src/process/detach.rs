//! How the monitor starts anything that outlives it (workers, components,
//! tc sessions, the background daemon): in a new session (so a terminal's
//! or the monitor's signals never reach it, and its PID leads its own
//! group), stdin from /dev/null, output appended to a log or discarded, none
//! of the caller's other descriptors, and the descriptor limit the monitor
//! started with.
//!
//! A program named by a path is started by a vfork (module `vfork`): nothing of
//! the monitor is copied. A `fork` of the daemon copied the page tables of
//! a process with hundreds of restart threads and made every one of them
//! fault on its next write: 200 restarts at once spent a third of their CPU
//! there. Anything else (a name looked up on PATH) is forked by `std` with
//! the same steps between fork and exec, so its errors read as they always
//! did. Children of both kinds are a [`Child`].

#[cfg(target_os = "linux")]
mod vfork;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;

use nix::libc;

use super::safe_file;

/// The soft and hard RLIMIT_NOFILE this process started with.
static ORIGINAL_NOFILE: OnceLock<(u64, u64)> = OnceLock::new();

/// A command that runs `program` detached: give it its arguments,
/// environment and working directory, then [`Detached::spawn`]. Only these
/// are offered (not the whole `Command`): the vfork honours exactly them.
pub struct Detached {
    command: Command,
    /// Where stdout and stderr go (`None`: /dev/null), for the vfork.
    output: Option<std::fs::File>,
    /// Started by vfork here rather than forked by `std`.
    vfork: bool,
}

impl Detached {
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Detached {
        self.command.arg(arg);
        self
    }

    pub fn args(&mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> &mut Detached {
        self.command.args(args);
        self
    }

    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Detached {
        self.command.env(key, value);
        self
    }

    pub fn envs(
        &mut self,
        vars: impl IntoIterator<Item = (impl AsRef<OsStr>, impl AsRef<OsStr>)>,
    ) -> &mut Detached {
        self.command.envs(vars);
        self
    }

    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Detached {
        self.command.env_remove(key);
        self
    }

    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Detached {
        self.command.current_dir(dir);
        self
    }
}

/// `program`, to be started detached, its output appended to `output`
/// (or discarded).
pub fn detached(program: impl AsRef<OsStr>, output: Option<&Path>) -> std::io::Result<Detached> {
    let program = program.as_ref();
    let file = match output {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            // Never through a symlink, never blocking on a FIFO.
            Some(safe_file::open_append(path).map_err(|e| e.into_io())?)
        }
        None => None,
    };
    let mut command = Command::new(program);
    let vfork = by_vfork(program);
    if vfork {
        return Ok(Detached {
            command,
            output: file,
            vfork,
        });
    }
    let (out, err) = match file {
        Some(file) => (Stdio::from(file.try_clone()?), Stdio::from(file)),
        None => (Stdio::null(), Stdio::null()),
    };
    // SAFETY: setsid, close_range/fcntl and get/setrlimit are
    // async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            cloexec_inherited_fds()?;
            restore_descriptor_limit()
        });
    }
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    Ok(Detached {
        command,
        output: None,
        vfork,
    })
}

/// Whether `program` is started by vfork: on Linux, a path to a file that
/// can be run (so the errors a spawn reports are the same either way).
fn by_vfork(program: &OsStr) -> bool {
    use std::os::unix::fs::PermissionsExt;
    cfg!(target_os = "linux")
        && program.as_bytes().contains(&b'/')
        && std::fs::metadata(program)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl Detached {
    /// Starts it.
    pub fn spawn(&mut self) -> std::io::Result<Child> {
        if !self.vfork {
            return self.command.spawn().map(Child::from);
        }
        spawn_vforked(&self.command, self.output.as_ref()).map(|pid| Child {
            inner: Inner::Vforked {
                pid,
                status: None,
                gone: false,
            },
        })
    }
}

#[cfg(target_os = "linux")]
fn spawn_vforked(command: &Command, output: Option<&std::fs::File>) -> std::io::Result<i32> {
    vfork::spawn(command, output)
}

#[cfg(not(target_os = "linux"))]
fn spawn_vforked(_: &Command, _: Option<&std::fs::File>) -> std::io::Result<i32> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// A detached child: forked by `std`, or started by vfork here.
#[derive(Debug)]
pub struct Child {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Std(std::process::Child),
    /// `status` once reaped; `gone` when it cannot be reaped by us
    /// (ECHILD): either way its PID is no longer ours to signal.
    Vforked {
        pid: i32,
        status: Option<ExitStatus>,
        gone: bool,
    },
}

impl From<std::process::Child> for Child {
    fn from(child: std::process::Child) -> Child {
        Child {
            inner: Inner::Std(child),
        }
    }
}

impl Child {
    /// Its PID.
    pub fn id(&self) -> u32 {
        match &self.inner {
            Inner::Std(child) => child.id(),
            Inner::Vforked { pid, .. } => *pid as u32,
        }
    }

    /// Its exit status if it has ended (reaped then), without waiting.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    /// Waits for it to end and reaps it.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.reap(0)? {
                return Ok(status);
            }
        }
    }

    /// Sends it SIGKILL (nothing once it has been reaped: its PID may be
    /// another process's by then).
    pub fn kill(&mut self) -> std::io::Result<()> {
        match &mut self.inner {
            Inner::Std(child) => child.kill(),
            Inner::Vforked {
                status: Some(_), ..
            }
            | Inner::Vforked { gone: true, .. } => Ok(()),
            Inner::Vforked { pid, .. } => {
                // SAFETY: a signal to our own unreaped child.
                if unsafe { libc::kill(*pid, libc::SIGKILL) } == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            }
        }
    }

    fn reap(&mut self, flags: libc::c_int) -> std::io::Result<Option<ExitStatus>> {
        match &mut self.inner {
            Inner::Std(child) if flags == 0 => child.wait().map(Some),
            Inner::Std(child) => child.try_wait(),
            Inner::Vforked {
                status: Some(status),
                ..
            } => Ok(Some(*status)),
            Inner::Vforked { gone: true, .. } => {
                Err(std::io::Error::from_raw_os_error(libc::ECHILD))
            }
            Inner::Vforked { pid, status, gone } => {
                let mut raw = 0;
                // SAFETY: waitpid on our own child, with a local out-parameter.
                match unsafe { libc::waitpid(*pid, &mut raw, flags) } {
                    0 => Ok(None),
                    n if n == *pid => {
                        let done = ExitStatus::from_raw(raw);
                        *status = Some(done);
                        Ok(Some(done))
                    }
                    _ => {
                        let e = std::io::Error::last_os_error();
                        if e.kind() == std::io::ErrorKind::Interrupted {
                            return Ok(None);
                        }
                        if e.raw_os_error() == Some(libc::ECHILD) {
                            *gone = true;
                        }
                        Err(e)
                    }
                }
            }
        }
    }
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

/// Gives a child, between fork (or vfork) and exec, the descriptor limit the
/// monitor started with, if the monitor raised it since (async-signal-safe:
/// an atomic load and two syscalls). Workers must not inherit a limit meant
/// for the monitor.
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
    // Kernels before 5.11: every number the descriptor limit allows (the
    // daemon raises it, so 4096 would not do), bounded.
    // SAFETY: getrlimit into a local.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    let top = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.min(1 << 20) as libc::c_int
    } else {
        4096
    };
    for fd in 3..top {
        // SAFETY: fcntl on a descriptor number; EBADF for closed ones is fine.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
#[path = "detach_tests.rs"]
mod tests;
