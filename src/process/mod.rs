//! Everything that touches processes: PID files, the kernel's facts about a
//! PID (state, start time, owner), the identity judgement that decides
//! whether a PID is still our worker, spawning through the wrapper, and file
//! locks shared between monitors.

pub mod bounded;
pub mod identity;
pub mod lock;
pub mod pidfile;
pub mod procinfo;
pub mod spawn;
pub mod stop;

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
