//! SPEC 3.2, process identity: only a proven worker is ever signalled.
//! "Strangers" here are test-owned processes that trap every catchable
//! signal and write down each one they receive, so a test sees any signal
//! the monitor sends them, not only the fatal ones. Special files (FIFOs,
//! symlinks) where the monitor expects plain files never block a command
//! and are never followed.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use crate::helpers::*;

/// A stranger: traps every catchable signal, appends each one's name to
/// its record file, and otherwise sleeps. It leads a process group of its
/// own, so a wrong group signal would reach it and not the test.
struct Stranger {
    pid: u32,
    record: PathBuf,
}

impl Stranger {
    fn start(p: &TestProject, name: &str) -> Stranger {
        let record = p.root.join(format!("{name}.signals"));
        let ready = p.root.join(format!("{name}.ready"));
        let mut cmd = p.command("python3");
        cmd.arg("-c")
            .arg(STRANGER_PY)
            .arg(&record)
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let pid = p.spawn(cmd);
        assert!(
            wait_for(|| ready.exists(), SOON),
            "stranger {name} never got ready"
        );
        Stranger { pid, record }
    }

    /// The signals it received, in order.
    fn signals(&self) -> Vec<String> {
        fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn assert_untouched(&self, after: &str) {
        assert!(
            is_alive(self.pid),
            "stranger {} died after {after}",
            self.pid
        );
        assert_eq!(
            self.signals(),
            Vec::<String>::new(),
            "stranger {} was signalled after {after}",
            self.pid
        );
    }
}

const STRANGER_PY: &str = r#"
import signal, sys, time
record, ready = sys.argv[1], sys.argv[2]
def note(number, frame):
    with open(record, "a") as f:
        f.write(signal.Signals(number).name + "\n")
for s in signal.valid_signals():
    if s in (signal.SIGKILL, signal.SIGSTOP):
        continue
    try:
        signal.signal(s, note)
    except (OSError, ValueError, RuntimeError):
        pass
open(ready, "w").close()
while True:
    time.sleep(0.1)
"#;

/// Runs the monitor with a hard bound far below the helpers' default, so a
/// command that blocks fails the test quickly instead of hanging it.
fn run_bounded(p: &TestProject, args: &[&str], bound: Duration) -> Run {
    let mut cmd = p.monitor();
    cmd.args(args).timeout(bound);
    let start = Instant::now();
    let out = cmd.output().expect("monitor runs");
    let elapsed = start.elapsed();
    assert!(
        elapsed < bound,
        "monitor {args:?} ran into its {bound:?} bound: it blocked"
    );
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed,
    }
}

const BOUND: Duration = Duration::from_secs(20);

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

/// Removes FIFOs the test planted in pids/ before the project's own
/// clean-up reads the PID files there (declared after the project, so it
/// drops first, also when the test fails).
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

/// The three operator commands every stranger case ends with: none may
/// signal it.
fn stop_stop_all_restart(p: &TestProject, stream: &str, stranger: &Stranger) {
    for args in [
        vec!["stop", stream, "--grace", "1"],
        vec!["stop", "--all", "--grace", "1"],
        vec!["resume", stream],
        vec!["restart", stream, "--grace", "1"],
    ] {
        run_bounded(p, &args, Duration::from_secs(40)).no_panic();
        stranger.assert_untouched(&args.join(" "));
    }
}

// ----- special files -------------------------------------------------------

/// A FIFO in a PID file's place (of a live-looking and of a complete
/// stream) is named in a warning; a check and `status` finish at once.
#[test]
fn a_fifo_as_pid_file_never_blocks_a_check_or_status() {
    let p = TestProject::new();
    p.dead_stream("api");
    p.stream("done", &["completed"], &[]);
    mkfifo(&p.pid_path("api"));
    mkfifo(&p.pid_path("done"));
    let _fifos = RemoveOnDrop(vec![p.pid_path("api"), p.pid_path("done")]);

    let r = run_bounded(&p, &[], BOUND);
    r.no_panic();
    let log = p.monitor_log();
    assert!(
        log.contains("api.pid is a FIFO (named pipe), not a regular file"),
        "{log}\n{}",
        r.stdout
    );
    // `api` has no worker it can prove: status says so (exit 1) and ends.
    let r = run_bounded(&p, &["status"], BOUND);
    r.expect_code(1).no_panic();
    let r = run_bounded(&p, &["status", "--json"], BOUND);
    r.expect_code(1).no_panic();
    // Left alone, not removed, not replaced by a regular file.
    for stream in ["api", "done"] {
        let meta = fs::symlink_metadata(p.pid_path(stream)).unwrap();
        assert!(
            std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()),
            "{stream}.pid was replaced"
        );
    }
}

/// FIFOs where the daemon record, the prompt override and the config
/// belong: `status` and a restart finish, with the built-in prompt.
#[test]
fn fifos_in_place_of_the_daemon_record_and_the_prompt_never_block() {
    let p = TestProject::new();
    p.dead_stream("api");
    fs::create_dir_all(p.orch.join("state")).unwrap();
    mkfifo(&p.orch.join("state/daemon.json"));
    mkfifo(&p.orch.join("worker-prompt.md"));
    run_bounded(&p, &["status"], BOUND)
        .expect_code(1)
        .no_panic();
    let r = run_bounded(&p, &["--auto-restart"], BOUND);
    r.expect_code(1)
        .stdout_has("Restarting worker api (attempt 1/")
        .no_panic();
    assert!(restarted_pid(&r.stdout, "api").is_some(), "{}", r.stdout);
    mkfifo(&p.orch.join("monitor.toml"));
    let r = run_bounded(&p, &["status"], BOUND);
    r.no_panic();
    assert!(r.stderr.contains("FIFO"), "{}", r.stderr);
}

/// A FIFO as monitor.log: one warning on stderr, and the check goes on.
#[test]
fn a_fifo_as_monitor_log_gives_one_warning_and_the_check_goes_on() {
    let p = TestProject::new();
    p.set_log_on_panic(false);
    p.dead_stream("api");
    mkfifo(&p.logs_dir().join("monitor.log"));
    let r = run_bounded(&p, &[], BOUND);
    r.expect_code(1)
        .stdout_has("Found 1 dead worker(s): api")
        .no_panic();
    assert_eq!(
        r.stderr.matches("warning:").count(),
        1,
        "one warning: {}",
        r.stderr
    );
    assert!(r.stderr.contains("FIFO"), "{}", r.stderr);
    run_bounded(&p, &["status"], BOUND)
        .expect_code(1)
        .no_panic();
}

/// monitor.log as a symlink: the file it points to is never written.
#[test]
fn monitor_log_as_a_symlink_is_not_written_through() {
    let p = TestProject::new();
    p.set_log_on_panic(false);
    p.dead_stream("api");
    let target = p.root.join("precious.txt");
    fs::write(&target, "keep me\n").unwrap();
    std::os::unix::fs::symlink(&target, p.logs_dir().join("monitor.log")).unwrap();
    let r = run_bounded(&p, &[], BOUND);
    r.expect_code(1).no_panic();
    assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
    assert_eq!(fs::read_to_string(&target).unwrap(), "keep me\n");
}

/// `pids/` symlinked to another directory is not followed: a PID file
/// there naming a stranger neither counts nor leads to a signal, and the
/// file there is not removed.
#[test]
fn a_symlinked_pids_directory_is_not_followed() {
    let p = TestProject::new();
    p.dead_stream("api");
    let stranger = Stranger::start(&p, "elsewhere");
    let elsewhere = p.root.join("elsewhere-pids");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::write(elsewhere.join("api.pid"), format!("{}\n", stranger.pid)).unwrap();
    fs::remove_dir_all(p.pids_dir()).unwrap();
    std::os::unix::fs::symlink(&elsewhere, p.pids_dir()).unwrap();

    let r = run_bounded(&p, &["--auto-restart"], BOUND);
    r.no_panic();
    stranger.assert_untouched("a check");
    assert!(
        p.monitor_log().contains("not followed"),
        "{}",
        p.monitor_log()
    );
    stop_stop_all_restart(&p, "api", &stranger);
    assert!(elsewhere.join("api.pid").exists(), "the file was removed");
}

// ----- strangers named by PID files ------------------------------------------

/// A reused PID whose file was touched after the stranger started passes
/// the start-time test; the identity proof still tells it is no worker.
#[test]
fn a_stranger_named_by_a_fresh_pid_file_is_never_signalled() {
    let p = TestProject::new();
    p.dead_stream("api");
    let stranger = Stranger::start(&p, "reused");
    std::thread::sleep(Duration::from_millis(1100));
    p.write_pid_file("api", &format!("{}\n", stranger.pid));
    p.set_mtime(&p.pid_path("api"), SystemTime::now());

    let r = run_bounded(&p, &["--auto-restart"], BOUND);
    r.no_panic();
    stranger.assert_untouched("a check");
    let log = p.monitor_log();
    assert!(
        log.contains(&format!(
            "PID {} is not a worker of api: no tag, and its command line does not name it",
            stranger.pid
        )),
        "{log}"
    );
    let status = p.stream_status("api");
    assert_ne!(status["pid"], stranger.pid, "{status}");

    p.write_pid_file("api", &format!("{}\n", stranger.pid));
    stop_stop_all_restart(&p, "api", &stranger);
}

/// Two streams naming one PID, through a symlinked PID file and through a
/// copied one: the worker belongs to the stream its wrapper names, and
/// commands on the other stream never touch it.
#[test]
fn two_streams_naming_one_pid_settle_on_the_wrapper_argument() {
    let p = TestProject::new();
    p.stream("a", &["completed", "pending"], &[]);
    p.stream("b", &["completed", "pending"], &[]);
    p.stream("c", &["completed", "pending"], &[]);
    p.evidence_log("b");
    let worker = p.spawn_worker_process("a");
    std::os::unix::fs::symlink(p.pid_path("a"), p.pid_path("b")).unwrap();
    fs::copy(p.pid_path("a"), p.pid_path("c")).unwrap();

    for args in [
        vec!["--auto-restart"],
        vec!["stop", "b", "--grace", "1"],
        vec!["stop", "c", "--grace", "1"],
        vec!["restart", "b", "--grace", "1"],
        vec!["restart", "c", "--grace", "1"],
    ] {
        run_bounded(&p, &args, Duration::from_secs(40)).no_panic();
        assert!(is_alive(worker), "a's worker died after {args:?}");
        let log = fs::read_to_string(p.log_path("a")).unwrap_or_default();
        assert!(
            !log.contains("received SIG"),
            "a's worker was signalled after {args:?}:\n{log}"
        );
    }
    assert_eq!(p.read_pid_file("a"), Some(worker));
    // a's own stop still reaches it.
    run_bounded(&p, &["stop", "a", "--grace", "1"], BOUND)
        .expect_code(0)
        .no_panic();
    assert!(wait_for(|| !is_alive(worker), SOON), "a's worker survived");
}

/// A PID file naming the monitor's own parent: the CLI is run by a
/// stranger shell that writes its own PID into the file and records every
/// signal it gets.
#[test]
fn a_pid_file_naming_the_monitors_parent_is_never_signalled() {
    let p = TestProject::new();
    p.dead_stream("api");
    for (n, args) in [
        "stop api --grace 1",
        "stop --all --grace 1",
        "resume api",
        "restart api --grace 1",
        "--auto-restart",
    ]
    .iter()
    .enumerate()
    {
        let record = p.root.join(format!("parent-{n}.signals"));
        let code = p.root.join(format!("parent-{n}.code"));
        let script = format!(
            "for s in HUP INT QUIT USR1 USR2 PIPE ALRM TERM CONT TSTP TTIN TTOU URG WINCH; do \
               trap \"echo $s >> '{record}'\" $s; \
             done; \
             echo $$ > '{pid_file}'; \
             '{bin}' {args} >/dev/null 2>&1; echo $? > '{code}'",
            record = record.display(),
            pid_file = p.pid_path("api").display(),
            bin = BIN,
            code = code.display(),
        );
        let mut cmd = p.command("bash");
        cmd.arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let shell = p.spawn(cmd);
        let status = p
            .wait_exit(shell, Duration::from_secs(40))
            .unwrap_or_else(|| panic!("`{args}` run by a stranger never finished"));
        assert_eq!(
            status.code(),
            Some(0),
            "the stranger shell running `{args}` was killed: {status:?}"
        );
        assert_eq!(
            fs::read_to_string(&record).unwrap_or_default(),
            "",
            "the monitor's parent was signalled by `{args}`\n{}",
            p.monitor_log()
        );
        assert!(code.exists(), "`{args}` did not finish");
    }
}

// ----- workers that are ours ---------------------------------------------------

/// A worker started by the original orchestrator (wrapper command line, no
/// tag) is still recognised and can be stopped.
#[test]
fn a_legacy_untagged_worker_is_recognised_and_stopped() {
    let p = TestProject::new();
    p.stream("api", &["completed", "pending"], &[]);
    let worker = p.spawn_worker_process("api");
    let environ = fs::read(format!("/proc/{worker}/environ")).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains("MONITOR_WORKERS_STREAM"),
        "the legacy worker has no tag"
    );
    p.run(&[]).expect_code(0).stdout_has("All workers healthy");
    assert_eq!(p.stream_status("api")["pid"], worker);
    run_bounded(&p, &["stop", "api", "--grace", "2"], BOUND)
        .expect_code(0)
        .no_panic();
    assert!(wait_for(|| !is_alive(worker), SOON), "the worker survived");
}

fn environ_of(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect()
}

/// A restarted worker carries the stream, the project and a nonce of its
/// own in its environment; a monitor started with a tag in its own
/// environment drops it, so the daemon never looks like a worker.
#[test]
fn spawned_workers_are_tagged_and_the_monitor_sheds_an_inherited_tag() {
    let p = TestProject::new();
    p.dead_stream("api");
    p.dead_stream("web");
    let r = p.run(&["--auto-restart"]);
    r.expect_code(1);
    let api = restarted_pid(&r.stdout, "api").expect("api restarted");
    let web = restarted_pid(&r.stdout, "web").expect("web restarted");
    let tag = |pid: u32, var: &str| {
        environ_of(pid)
            .into_iter()
            .find_map(|e| e.strip_prefix(&format!("{var}=")).map(str::to_string))
    };
    assert_eq!(tag(api, "MONITOR_WORKERS_STREAM").as_deref(), Some("api"));
    assert_eq!(
        tag(api, "MONITOR_WORKERS_PROJECT").map(PathBuf::from),
        Some(p.proj.clone())
    );
    let nonce_api = tag(api, "MONITOR_WORKERS_SPAWN").expect("a nonce");
    let nonce_web = tag(web, "MONITOR_WORKERS_SPAWN").expect("a nonce");
    assert_eq!(nonce_api.len(), 32);
    assert_ne!(nonce_api, nonce_web);

    // A worker's tag in the daemon's environment is shed at start-up.
    let mut cmd = p.monitor_std();
    cmd.args(["--daemon", "--interval", "60"])
        .env("MONITOR_WORKERS_STREAM", "api")
        .env("MONITOR_WORKERS_PROJECT", &p.proj)
        .env("MONITOR_WORKERS_SPAWN", &nonce_api)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let daemon = p.spawn(cmd);
    assert!(
        wait_for(|| p.daemon_record()["pid"] == daemon, SOON),
        "the daemon never started"
    );
    let env = environ_of(daemon);
    assert!(
        !env.iter()
            .any(|e| e.starts_with("MONITOR_WORKERS_STREAM=")
                || e.starts_with("MONITOR_WORKERS_SPAWN=")),
        "the daemon still carries a worker's tag: {env:?}"
    );
    assert_eq!(proc_ppid(daemon), Some(std::process::id()), "same process");
    p.signal_ours(daemon, nix::sys::signal::Signal::SIGTERM);
    p.wait_exit(daemon, SOON).expect("the daemon stops");
}

/// A descendant of a legacy (untagged) worker that left its group and its
/// session carries no proof: the stop leaves it alone and says so.
#[test]
fn an_untagged_escaped_descendant_of_a_legacy_worker_is_left_alone() {
    let p = TestProject::new();
    p.stream("api", &["completed", "pending"], &[]);
    let escapee_file = p.root.join("escapee.pid");
    p.set_env("ESCAPEE_PID_FILE", escapee_file.to_str().unwrap());
    p.install_claude_script(
        "setsid sleep 60 </dev/null >/dev/null 2>&1 &\n\
         echo $! > \"$ESCAPEE_PID_FILE\"\n\
         exec sleep 60\n",
    );
    let wrapper = p.spawn_worker_process("api");
    assert!(wait_for(
        || fs::read_to_string(&escapee_file).is_ok_and(|t| t.ends_with('\n')),
        SOON
    ));
    let escapee: u32 = fs::read_to_string(&escapee_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(wait_for(|| proc_session(escapee) == Some(escapee), SOON));

    run_bounded(&p, &["stop", "api", "--grace", "1"], BOUND)
        .expect_code(0)
        .no_panic();
    assert!(wait_for(|| !is_alive(wrapper), SOON), "the worker survived");
    assert!(is_alive(escapee), "the unproven descendant was signalled");
    let log = p.monitor_log();
    assert!(
        log.lines()
            .any(|l| l.contains("Left 1 descendant(s) alone") && l.contains(&escapee.to_string())),
        "{log}"
    );
}

/// The soft and hard "Max open files" of a process.
fn open_files_limit(pid: u32) -> Option<(String, String)> {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line["Max open files".len()..].split_whitespace();
    Some((fields.next()?.to_string(), fields.next()?.to_string()))
}

/// The daemon lifts its own descriptor limit (a pidfd per worker); the
/// workers it starts get the limit the daemon was given.
#[test]
fn workers_get_the_descriptor_limit_the_monitor_was_given() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if hard <= 256 {
        eprintln!("skipped: the hard limit ({hard}) leaves no room to raise");
        return;
    }
    let p = TestProject::new();
    p.dead_stream("api");
    let mut cmd = p.monitor_std();
    cmd.args(["--daemon", "--auto-restart", "--interval", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            setrlimit(Resource::RLIMIT_NOFILE, 256, hard).map_err(std::io::Error::from)
        });
    }
    let daemon = p.spawn(cmd);
    assert!(
        wait_for(|| p.read_pid_file("api").is_some_and(is_alive), SOON),
        "the daemon started no worker\n{}",
        p.monitor_log()
    );
    let worker = p.read_pid_file("api").unwrap();
    let hard = hard.to_string();
    assert_eq!(open_files_limit(daemon), Some((hard.clone(), hard.clone())));
    assert_eq!(open_files_limit(worker), Some(("256".to_string(), hard)));
    p.signal_ours(daemon, nix::sys::signal::Signal::SIGTERM);
    p.wait_exit(daemon, SOON).expect("the daemon stops");
}

/// `reset STREAM` forgets the worker the monitor remembered: the next look
/// proves whatever runs afresh.
#[test]
fn reset_forgets_the_remembered_worker() {
    let p = TestProject::new();
    p.stream("api", &["completed", "pending"], &[]);
    let worker = p.spawn_worker_process("api");
    p.run(&[]).expect_code(0);
    assert_eq!(p.state_json()["streams"]["api"]["worker"]["pid"], worker);
    p.run(&["reset", "api"]).expect_code(0);
    assert!(
        p.state_json()["streams"]["api"]["worker"].is_null(),
        "{}",
        p.state_json()
    );
}

/// A PID file naming the project's running daemon: no command signals it.
#[test]
fn a_pid_file_naming_the_daemon_is_never_signalled() {
    let p = TestProject::new();
    p.dead_stream("api");
    let d = p.spawn_daemon(&["--daemon", "--interval", "60"]);
    assert!(
        wait_for(|| p.daemon_record()["pid"] == d.pid, SOON),
        "the daemon never started: {}",
        d.stderr_text()
    );
    for args in [
        vec!["stop", "api", "--grace", "1"],
        vec!["stop", "--all", "--grace", "1"],
        vec!["resume", "api"],
        vec!["restart", "api", "--grace", "1"],
    ] {
        p.write_pid_file("api", &format!("{}\n", d.pid));
        run_bounded(&p, &args, Duration::from_secs(40)).no_panic();
        assert!(is_alive(d.pid), "the daemon died after {args:?}");
        assert_eq!(
            p.daemon_record()["pid"],
            d.pid,
            "the daemon went after {args:?}"
        );
    }
    p.stop_daemon(&d);
}

/// The pipe descriptors a process holds, as `pipe:[inode]`.
fn pipes_of(pid: u32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .map(|l| l.to_string_lossy().into_owned())
                .filter(|l| l.starts_with("pipe:"))
                .collect()
        })
        .unwrap_or_default()
}

/// A worker the monitor starts (by vfork, without a copy of the monitor)
/// is detached exactly as a fork left it: it leads a session of its own,
/// runs the wrapper (its command line is the wrapper's), has SIGPIPE at
/// its default, and holds no descriptor the
/// monitor inherited from whatever started it (here a pipe, as cron's).
#[test]
fn a_restarted_worker_is_detached_and_inherits_no_descriptor() {
    let p = TestProject::new();
    p.dead_stream("api");
    let (inherited_read, inherited_write) = nix::unistd::pipe().expect("pipe");
    let inherited = format!(
        "pipe:[{}]",
        fs::metadata(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&inherited_write)
        ))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap()
    );
    let keep = std::os::fd::AsRawFd::as_raw_fd(&inherited_write);
    let mut cmd = p.monitor_std();
    cmd.arg("--auto-restart")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: dup2 only, between fork and exec: the monitor inherits the
    // pipe at descriptor 7, not close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::dup2(keep, 7) != 7 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("the monitor runs");
    drop(inherited_read);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let worker = restarted_pid(&stdout, "api").unwrap_or_else(|| panic!("not restarted: {stdout}"));
    assert_eq!(proc_session(worker), Some(worker), "not a session leader");
    let cmdline = fs::read(format!("/proc/{worker}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(cmdline.contains("worker-wrapper.sh"), "{cmdline}");
    // SIGPIPE at its default, as std leaves it (the monitor ignores it).
    let status = fs::read_to_string(format!("/proc/{worker}/status")).unwrap();
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line[name.len()..].trim(), 16).unwrap()
    };
    assert_eq!(
        field("SigIgn:") & (1 << (13 - 1)),
        0,
        "SIGPIPE ignored in the worker"
    );
    let pipes = pipes_of(worker);
    assert!(
        !pipes.contains(&inherited),
        "the worker holds the inherited pipe: {pipes:?}"
    );
    assert!(pipes.is_empty(), "the worker holds a pipe: {pipes:?}");
}

/// A wrapper that cannot be executed although it is an executable file
/// (its interpreter is missing) is the restart's error, worded as the
/// kernel says it, and is retried later: it is not taken for a missing
/// `claude` (exit 127 of a wrapper that ran).
#[test]
fn a_wrapper_whose_interpreter_is_missing_is_the_spawn_error() {
    let p = TestProject::new();
    p.dead_stream("api");
    fs::write(p.wrapper(), "#!/nonexistent/interpreter\nexit 0\n").unwrap();
    let wrapper = p.wrapper().display().to_string();
    let r = p.run(&["--auto-restart", "--max-restarts", "10"]);
    r.expect_code(1)
        .stdout_has("Restarting worker api (attempt 1/10)")
        .stdout_has(&format!(
            "Failed to restart worker api: cannot run {wrapper}: No such file or directory"
        ))
        .stdout_lacks("gave up")
        .stdout_lacks("claude not found")
        .no_panic();
}
