//! The vfork behind [`super::Detached`]: `clone(CLONE_VM | CLONE_VFORK)`,
//! as `posix_spawn` does, so nothing of the monitor is copied. The child
//! borrows the monitor's memory until it execs; it only makes system calls
//! on memory prepared before the clone (no allocation, no lock), with every
//! signal blocked on the spawning thread until the child has put the
//! monitor's handlers back to their defaults.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::libc;

use super::{cloexec_inherited_fds, restore_descriptor_limit};

/// Everything the vforked child needs, made before the clone: it may not
/// allocate.
struct Prepared {
    program: CString,
    argv: Vec<CString>,
    /// `/bin/sh PROGRAM ARGS...`, for a script without a `#!` line (as
    /// `execvp` runs it).
    sh_argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: Option<CString>,
    stdin: File,
    output: File,
}

/// What the child reads: raw pointers into [`Prepared`], and where it
/// leaves the errno of a failure.
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    sh_argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: libc::c_int,
    output: libc::c_int,
    failed: AtomicI32,
}

fn c_string(text: &OsStr) -> std::io::Result<CString> {
    CString::new(text.as_bytes()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an argument or variable holds a NUL byte",
        )
    })
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Starts `command` (its program, arguments, environment and directory)
/// detached, its output to `output` or /dev/null: its PID once it has
/// exec'd, or why it could not.
pub(super) fn spawn(command: &Command, output: Option<&File>) -> std::io::Result<i32> {
    Prepared::of(command, output)?.spawn()
}

impl Prepared {
    fn of(command: &Command, output: Option<&File>) -> std::io::Result<Prepared> {
        let program = c_string(command.get_program())?;
        let mut argv = vec![program.clone()];
        for arg in command.get_args() {
            argv.push(c_string(arg)?);
        }
        let sh_argv = std::iter::once(c"/bin/sh".to_owned())
            .chain(argv.iter().cloned())
            .collect();
        let mut env: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os().collect();
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => env.insert(key.to_os_string(), value.to_os_string()),
                None => env.remove(key),
            };
        }
        let envp = env
            .iter()
            .map(|(k, v)| {
                let mut pair = k.as_bytes().to_vec();
                pair.push(b'=');
                pair.extend_from_slice(v.as_bytes());
                c_string(OsStr::from_bytes(&pair))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let cwd = command
            .get_current_dir()
            .map(|d| c_string(d.as_os_str()))
            .transpose()?;
        let output = match output {
            Some(file) => file.try_clone()?,
            None => File::options().write(true).open("/dev/null")?,
        };
        Ok(Prepared {
            program,
            argv,
            sh_argv,
            envp,
            cwd,
            stdin: File::open("/dev/null")?,
            output,
        })
    }

    /// Clones the child and waits until it has exec'd or failed to.
    fn spawn(&self) -> std::io::Result<i32> {
        const STACK: usize = 128 * 1024;
        let argv = null_terminated(&self.argv);
        let sh_argv = null_terminated(&self.sh_argv);
        let envp = null_terminated(&self.envp);
        // SAFETY: plain-data structures, filled in before use.
        let (mut all, mut mask): (libc::sigset_t, libc::sigset_t) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        // SAFETY: signal mask calls on this thread, with local sets.
        unsafe {
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut mask);
        }
        let args = ChildArgs {
            program: self.program.as_ptr(),
            argv: argv.as_ptr(),
            sh_argv: sh_argv.as_ptr(),
            envp: envp.as_ptr(),
            cwd: self.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            stdin: self.stdin.as_raw_fd(),
            output: self.output.as_raw_fd(),
            failed: AtomicI32::new(0),
        };
        let mut stack = vec![0u8; STACK];
        // The stack grows down from its 16-byte aligned top.
        let top = (stack.as_mut_ptr() as usize + STACK) & !15;
        // SAFETY: CLONE_VFORK suspends this thread until the child has
        // exec'd or exited, so `args`, the strings and the stack outlive
        // its use of them; the child runs only `vforked_child`.
        let pid = unsafe {
            libc::clone(
                vforked_child,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                &args as *const ChildArgs as *mut libc::c_void,
            )
        };
        let cloned = std::io::Error::last_os_error();
        // SAFETY: the mask saved above, back on this thread.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
        }
        drop(stack);
        if pid < 0 {
            return Err(cloned);
        }
        match args.failed.load(Ordering::SeqCst) {
            0 => Ok(pid),
            errno => {
                let mut raw = 0;
                // SAFETY: reaping the child that just failed to exec.
                while unsafe { libc::waitpid(pid, &mut raw, 0) } < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                }
                Err(std::io::Error::from_raw_os_error(errno))
            }
        }
    }
}

/// The child between clone and exec: system calls only, on memory the
/// parent prepared; on failure it leaves the errno for the parent and
/// exits 127.
extern "C" fn vforked_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive while the parent is
    // suspended by CLONE_VFORK; every call below is async-signal-safe.
    unsafe {
        let a = &*(arg as *const ChildArgs);
        let fail = |a: &ChildArgs| -> ! {
            // Zero would read as success in the parent.
            let errno = match *libc::__errno_location() {
                0 => libc::EIO,
                errno => errno,
            };
            a.failed.store(errno, Ordering::SeqCst);
            libc::_exit(127)
        };
        // The monitor's handlers live in memory this child borrows: every
        // caught signal goes back to its default before any is let in, and
        // SIGPIPE too (Rust ignores it; a program expects its default), as
        // `std` does for the programs it starts.
        for signal in 1..=libc::SIGRTMAX() {
            let mut now: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut now) == 0
                && now.sa_sigaction != libc::SIG_DFL
                && (now.sa_sigaction != libc::SIG_IGN || signal == libc::SIGPIPE)
            {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        if libc::setsid() < 0 {
            fail(a);
        }
        if libc::dup2(a.stdin, 0) < 0 || libc::dup2(a.output, 1) < 0 || libc::dup2(a.output, 2) < 0
        {
            fail(a);
        }
        if !a.cwd.is_null() && libc::chdir(a.cwd) < 0 {
            fail(a);
        }
        if cloexec_inherited_fds().is_err() {
            fail(a);
        }
        if restore_descriptor_limit().is_err() {
            fail(a);
        }
        // An empty mask, whatever the monitor's thread had blocked.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(a.program, a.argv, a.envp);
        if *libc::__errno_location() == libc::ENOEXEC {
            libc::execve(c"/bin/sh".as_ptr(), a.sh_argv, a.envp);
        }
        fail(a)
    }
}
