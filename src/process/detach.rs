//! How the monitor starts anything that outlives it (workers, components,
//! tc sessions, the background daemon): in a new session (so a terminal's
//! or the monitor's signals never reach it, and its PID leads its own
//! group), stdin from /dev/null, output appended to a log or discarded, none
//! of the caller's other descriptors, and the descriptor limit the monitor
//! started with.
//!
//! A program named by a path is started by `clone(CLONE_VM | CLONE_VFORK)`,
//! as `posix_spawn` does: the child borrows the monitor's memory until it
//! execs, so nothing is copied. A `fork` of the daemon copied the page
//! tables of a process with hundreds of restart threads and made every one
//! of them fault on its next write: 200 restarts at once spent a third of
//! their CPU there. Between clone and exec the child only makes system
//! calls on memory prepared beforehand (no allocation, no lock), with every
//! signal blocked until it has reset the monitor's handlers. Anything else
//! (a name looked up on PATH) is forked by `std` with the same steps between
//! fork and exec, so its errors read as they always did.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
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
    Prepared::of(command, output)?.spawn()
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

#[cfg(target_os = "linux")]
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
    stdin: std::fs::File,
    output: std::fs::File,
    /// The soft descriptor limit to give back (`u64::MAX`: none).
    limit: u64,
}

#[cfg(target_os = "linux")]
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
    limit: u64,
    failed: AtomicI32,
}

#[cfg(target_os = "linux")]
fn c_string(text: &OsStr) -> std::io::Result<CString> {
    CString::new(text.as_bytes()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an argument or variable holds a NUL byte",
        )
    })
}

#[cfg(target_os = "linux")]
fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

#[cfg(target_os = "linux")]
impl Prepared {
    fn of(command: &Command, output: Option<&std::fs::File>) -> std::io::Result<Prepared> {
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
            None => std::fs::File::options().write(true).open("/dev/null")?,
        };
        Ok(Prepared {
            program,
            argv,
            sh_argv,
            envp,
            cwd,
            stdin: std::fs::File::open("/dev/null")?,
            output,
            limit: limit_to_restore().unwrap_or(u64::MAX),
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
            limit: self.limit,
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

#[cfg(target_os = "linux")]
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
        if a.limit != u64::MAX {
            let mut now: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) == 0
                && now.rlim_cur != a.limit
                && a.limit <= now.rlim_max
            {
                now.rlim_cur = a.limit;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &now) < 0 {
                    fail(a);
                }
            }
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
mod tests {
    use super::*;

    /// Runs `program ARGS` detached by vfork, output to a file; its output.
    fn run(dir: &Path, program: &str, args: &[&str], setup: impl Fn(&mut Detached)) -> String {
        let out = dir.join("out");
        let _ = std::fs::remove_file(&out);
        let mut command = detached(program, Some(&out)).unwrap();
        assert!(command.vfork, "{program} is started by vfork");
        command.args(args);
        setup(&mut command);
        let status = command.spawn().unwrap().wait().unwrap();
        assert!(status.success(), "{program} {args:?}: {status}");
        std::fs::read_to_string(&out).unwrap()
    }

    /// A vforked child starts as a forked one did: a session of its own,
    /// no signal blocked (whatever the spawning thread blocks), SIGPIPE at
    /// its default, the environment and directory the command was given,
    /// the descriptor limit unchanged unless the monitor raised its own.
    #[test]
    fn a_vforked_child_starts_detached_and_clean() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: mask calls on this test's thread with local sets.
        let old = unsafe {
            let (mut usr1, mut old): (libc::sigset_t, libc::sigset_t) =
                (std::mem::zeroed(), std::mem::zeroed());
            libc::sigemptyset(&mut usr1);
            libc::sigaddset(&mut usr1, libc::SIGUSR1);
            libc::pthread_sigmask(libc::SIG_BLOCK, &usr1, &mut old);
            old
        };
        let status = run(dir.path(), "/bin/cat", &["/proc/self/status"], |_| {});
        let stat = run(dir.path(), "/bin/cat", &["/proc/self/stat"], |_| {});
        // SAFETY: the mask saved above, back on this thread.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        let field = |name: &str| {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line[name.len()..].trim(), 16).unwrap()
        };
        assert_eq!(field("SigBlk:"), 0, "{status}");
        assert_eq!(field("SigIgn:") & (1 << (libc::SIGPIPE - 1)), 0, "{status}");
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let pid: &str = stat.split_whitespace().next().unwrap();
        assert_eq!(fields[3], pid, "session: {stat}");
        assert_eq!(fields[2], pid, "process group: {stat}");

        let env = run(dir.path(), "/usr/bin/env", &[], |c| {
            c.env("DETACH_PROBE", "given").env_remove("HOME");
        });
        assert!(env.lines().any(|l| l == "DETACH_PROBE=given"), "{env}");
        assert!(!env.lines().any(|l| l.starts_with("HOME=")), "{env}");
        assert!(
            env.lines().any(|l| l.starts_with("PATH=")),
            "inherited: {env}"
        );

        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let cwd = run(dir.path(), "/bin/pwd", &["-P"], |c| {
            c.current_dir(&sub);
        });
        assert_eq!(cwd.trim(), sub.canonicalize().unwrap().to_str().unwrap());
    }

    /// A script without a `#!` line runs through /bin/sh (as `execvp` runs
    /// it); a missing interpreter is the spawn's error, and the failed child
    /// is reaped.
    #[test]
    fn a_vforked_script_runs_and_a_missing_interpreter_is_the_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("plain");
        std::fs::write(&script, "echo ran with \"$1\"\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let said = run(dir.path(), script.to_str().unwrap(), &["it"], |_| {});
        assert_eq!(said, "ran with it\n");

        let broken = dir.path().join("broken");
        std::fs::write(&broken, "#!/nonexistent/interpreter\n").unwrap();
        std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut command = detached(&broken, None).unwrap();
        let error = command.spawn().unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
    }

    /// A child reaped behind its back (ECHILD) is not signalled afterwards:
    /// its PID may be another process's by then. A reaped one keeps its
    /// status.
    #[test]
    fn a_child_reaped_elsewhere_is_never_signalled() {
        let mut child = detached("/bin/sleep", None).unwrap();
        let mut child = child.arg("5").spawn().unwrap();
        let pid = child.id() as i32;
        // SAFETY: signals and reaps the test's own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            let mut raw = 0;
            assert_eq!(libc::waitpid(pid, &mut raw, 0), pid);
        }
        let error = child.try_wait().unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ECHILD));
        assert!(matches!(child.inner, Inner::Vforked { gone: true, .. }));
        child.kill().unwrap();
        assert!(child.wait().is_err());

        let mut done = detached("/bin/true", None).unwrap().spawn().unwrap();
        assert!(done.wait().unwrap().success());
        assert!(done.try_wait().unwrap().unwrap().success(), "kept");
        done.kill().unwrap();
    }

    /// A name looked up on PATH is forked by std, as before.
    #[test]
    fn a_program_found_on_path_is_forked_by_std() {
        let command = detached("true", None).unwrap();
        assert!(!command.vfork);
    }
}
