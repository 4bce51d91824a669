//! Everything that touches processes: PID files, the kernel's facts about a
//! PID (state, start time, owner), the identity judgement that decides
//! whether a PID is still our worker, spawning through the wrapper, and file
//! locks shared between monitors.

pub mod bounded;
pub mod docker;
pub mod identity;
pub mod lock;
pub mod pidfile;
pub mod procinfo;
pub mod proof;
pub mod safe_file;
pub mod spawn;
pub mod stop;

/// Makes `command` start detached: in a new session (so a terminal's or the
/// monitor's signals never reach it, and its PID leads its own group), with
/// stdin from /dev/null, stdout and stderr appended to `output` (or
/// discarded), and none of the caller's other descriptors. The one way the
/// monitor starts anything that outlives it: workers, components, the
/// background daemon.
pub fn detach(
    command: &mut std::process::Command,
    output: Option<&std::path::Path>,
) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
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
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid, fcntl and setrlimit are async-signal-safe; nothing else runs
    // between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            cloexec_inherited_fds()?;
            restore_descriptor_limit()
        });
    }
    Ok(())
}

/// The soft and hard RLIMIT_NOFILE this process started with.
static ORIGINAL_NOFILE: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

/// Remembers the descriptor limit the monitor started with, before anything
/// raises it (the daemon lifts it to watch a pidfd per worker). Called once
/// at start-up.
pub fn remember_descriptor_limit() {
    use nix::sys::resource::{getrlimit, Resource};
    if let Ok(limits) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = ORIGINAL_NOFILE.set(limits);
    }
}

/// Gives a child, between fork and exec, the descriptor limit the monitor
/// started with, if the monitor raised it since (async-signal-safe: two
/// syscalls). Workers must not inherit a limit meant for the monitor.
pub fn restore_descriptor_limit() -> std::io::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Some(&(soft, hard)) = ORIGINAL_NOFILE.get() else {
        return Ok(());
    };
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(now) if now != (soft, hard) && soft <= now.1 => {
            // Only the soft limit comes back: the hard one may not be raised again.
            setrlimit(Resource::RLIMIT_NOFILE, soft, now.1).map_err(std::io::Error::from)
        }
        _ => Ok(()),
    }
}

/// Marks every descriptor above stderr close-on-exec. Called between fork
/// and exec (async-signal-safe), so a worker never inherits the pipes of
/// whatever started the monitor: a cron job or an ssh session would
/// otherwise wait for the worker to end.
pub fn cloexec_inherited_fds() -> std::io::Result<()> {
    use nix::libc;
    #[cfg(target_os = "linux")]
    {
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        // SAFETY: a plain syscall on descriptors of this (forked) process.
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
