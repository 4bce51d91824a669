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
