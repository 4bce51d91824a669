//! Running the monitor: the test's environment for every command (temp
//! `$HOME`, fake `claude` first on PATH, the tag, nothing from outside),
//! assert_cmd builders, one-shot runs captured as a [`Run`], and daemons
//! started in the background and stopped with SIGTERM. A daemon the test
//! leaves running is killed when its [`TestProject`] drops.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{TestProject, BIN, SOON};

/// The outcome of one monitor run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Asserts the exit code, showing everything the run said otherwise.
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "unexpected exit code\n--- stdout\n{}--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn stdout_has(&self, what: &str) -> &Run {
        assert!(
            self.stdout.contains(what),
            "stdout lacks {what:?}\n--- stdout\n{}--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
    pub fn stdout_lacks(&self, what: &str) -> &Run {
        assert!(
            !self.stdout.contains(what),
            "stdout has {what:?}\n--- stdout\n{}--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
    pub fn stderr_has(&self, what: &str) -> &Run {
        assert!(
            self.stderr.contains(what),
            "stderr lacks {what:?}\n--- stdout\n{}--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
    /// No panic message, no backtrace.
    pub fn no_panic(&self) -> &Run {
        for text in [&self.stdout, &self.stderr] {
            assert!(
                !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
                "the run panicked:\n{text}"
            );
        }
        self
    }
}

/// A daemon started in the background; its stdout and stderr go to files.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub pid: u32,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Daemon {
    pub fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }
    pub fn stdout_text(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }
}

impl TestProject {
    /// An environment variable for every command this project runs.
    pub fn set_env(&self, key: &str, value: &str) {
        self.env
            .borrow_mut()
            .push((key.to_string(), value.to_string()));
    }

    /// A command with the test's environment: no `MONITOR_WORKERS_*` (nor
    /// fake-claude settings) from outside, `$HOME` the temp home, the fake
    /// `claude` first on PATH, NO_COLOR, and the tag.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            // The process backend is the suite's to choose (CI runs it twice).
            if (k.starts_with("MONITOR_WORKERS_") && k != "MONITOR_WORKERS_BACKEND")
                || k.starts_with("FAKE_CLAUDE_")
                || k == "WORKER_HEARTBEAT_INTERVAL"
            {
                cmd.env_remove(&key);
            }
        }
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        cmd.env("HOME", &self.home)
            .env("PATH", format!("{}:{path}", self.bin_dir.display()))
            .env("NO_COLOR", "1")
            .env("MW_TEST_TAG", &self.root)
            .env("FAKE_CLAUDE_LIFETIME", "60")
            .env("FAKE_CLAUDE_TICK", "1")
            .current_dir(&self.proj);
        for (k, v) in self.env.borrow().iter() {
            cmd.env(k, v);
        }
        cmd
    }

    /// The monitor, as a std command, run from the project root.
    pub fn monitor_std(&self) -> Command {
        self.command(BIN)
    }

    /// The monitor, ready for assert_cmd.
    pub fn monitor(&self) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::from_std(self.monitor_std());
        cmd.timeout(Duration::from_secs(60));
        cmd
    }

    /// Runs the monitor to its end with these arguments, from `cwd` (default: the project root).
    pub fn run_in(&self, cwd: &Path, args: &[&str]) -> Run {
        let mut cmd = self.monitor();
        cmd.current_dir(cwd).args(args);
        let start = Instant::now();
        let out = cmd.output().expect("monitor runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: start.elapsed(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_in(&self.proj.clone(), args)
    }

    /// Starts the monitor in the background (a daemon).
    pub fn spawn_daemon(&self, args: &[&str]) -> Daemon {
        let n = self.next();
        let stdout = self.root.join(format!("daemon-{n}.out"));
        let stderr = self.root.join(format!("daemon-{n}.err"));
        let mut cmd = self.monitor_std();
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap());
        let pid = self.spawn(cmd);
        Daemon {
            pid,
            stdout,
            stderr,
        }
    }

    /// Sends SIGTERM to a daemon this test spawned and waits for its clean exit.
    pub fn stop_daemon(&self, d: &Daemon) {
        self.signal_ours(d.pid, Signal::SIGTERM);
        let status = self
            .wait_exit(d.pid, SOON)
            .expect("the daemon ends on SIGTERM");
        assert_eq!(
            status.code(),
            Some(0),
            "daemon exit: {status:?}\nstderr: {}",
            d.stderr_text()
        );
    }
}
