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
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            (Stdio::from(file.try_clone()?), Stdio::from(file))
        }
        None => (Stdio::null(), Stdio::null()),
    };
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid and fcntl are async-signal-safe; nothing else runs
    // between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            cloexec_inherited_fds()
        });
    }
    Ok(())
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
