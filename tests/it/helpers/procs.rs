//! Processes: spawning the test's own children (sleepers, workers through the
//! real wrapper, alone or in a shared process group), waiting for them to
//! die, signalling only what provably carries the test's tag, finding live
//! wrappers and descendants through `/proc`, and the clean-up that kills
//! everything tagged when the test ends.

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{getpgid, getpgrp, Pid};

use super::{wait_for, TestProject, INIT, SOON};

impl TestProject {
    /// Spawns a command the test owns (killed and reaped at the end).
    pub fn spawn(&self, mut cmd: Command) -> u32 {
        let child = cmd.spawn().expect("spawn");
        let pid = child.id();
        self.children.borrow_mut().push(child);
        pid
    }

    /// A live process that is not a worker.
    pub fn spawn_sleep(&self, secs: u32) -> u32 {
        let mut cmd = self.command("sleep");
        cmd.arg(secs.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.spawn(cmd)
    }

    /// Starts a worker for `stream` through the real wrapper, as the
    /// orchestrator would (own process group), and waits for its PID file.
    pub fn spawn_worker_process(&self, stream: &str) -> u32 {
        self.spawn_worker_in_group(stream, &[], 0)
    }

    /// Like [`spawn_worker_process`], with extra environment for this worker only.
    pub fn spawn_worker_with(&self, stream: &str, env: &[(&str, &str)]) -> u32 {
        self.spawn_worker_in_group(stream, env, 0)
    }

    /// A worker in process group `group` (0: a group of its own), so one
    /// signal to the group reaches several workers at once.
    pub fn spawn_worker_in_group(&self, stream: &str, env: &[(&str, &str)], group: i32) -> u32 {
        let pid = self.spawn(self.wrapper_command(stream, env, group));
        assert!(
            wait_for(|| self.read_pid_file(stream) == Some(pid), SOON),
            "worker {stream} wrote no PID file"
        );
        pid
    }

    /// Runs a worker for `stream` through the real wrapper to its end (for
    /// workers that exit by themselves), leaving its log and exit line.
    pub fn run_worker_to_end(&self, stream: &str, env: &[(&str, &str)]) -> ExitStatus {
        let pid = self.spawn(self.wrapper_command(stream, env, 0));
        self.wait_exit(pid, Duration::from_secs(30))
            .expect("the worker ends by itself")
    }

    /// The real wrapper with its six arguments for `stream`, as the
    /// orchestrator runs it, in process group `group` (0: its own).
    fn wrapper_command(&self, stream: &str, env: &[(&str, &str)], group: i32) -> Command {
        let mut cmd = self.command(self.wrapper());
        cmd.arg(stream)
            .arg(self.pid_path(stream))
            .arg(self.logs_dir())
            .arg(self.work_dir(stream))
            .arg(INIT)
            .arg(format!("You are the worker for stream {stream}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(group);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Waits for a process this test spawned to exit; reaps it.
    pub fn wait_exit(&self, pid: u32, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_for(
            || {
                let mut children = self.children.borrow_mut();
                let child = children
                    .iter_mut()
                    .find(|c| c.id() == pid)
                    .expect("not a child of this test");
                status = child.try_wait().ok().flatten();
                status.is_some()
            },
            timeout,
        );
        status
    }

    /// Signals a process after proving it is this test's own.
    pub fn signal_ours(&self, pid: u32, signal: Signal) {
        assert!(
            self.has_tag(pid),
            "refusing to signal PID {pid}: not this test's process"
        );
        kill(Pid::from_raw(pid as i32), signal).unwrap();
    }

    /// Signals the process group led by `leader` after proving the leader is
    /// this test's own and leads its own group (never the test's group).
    pub fn signal_group_ours(&self, leader: u32, signal: Signal) {
        assert!(
            self.has_tag(leader),
            "refusing to signal group {leader}: not this test's process"
        );
        assert_eq!(
            proc_pgrp(leader),
            Some(leader),
            "{leader} does not lead a group"
        );
        assert_ne!(getpgrp().as_raw() as u32, leader, "the test's own group");
        killpg(Pid::from_raw(leader as i32), signal).unwrap();
    }

    /// Whether the process carries this test's tag.
    pub fn has_tag(&self, pid: u32) -> bool {
        let want = format!("MW_TEST_TAG={}", self.root.display());
        match fs::read(format!("/proc/{pid}/environ")) {
            Ok(env) => env.split(|b| *b == 0).any(|e| e == want.as_bytes()),
            Err(_) => false,
        }
    }

    fn tagged_pids(&self) -> Vec<u32> {
        let me = std::process::id();
        let Ok(dir) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| *pid != me && self.has_tag(*pid))
            .collect()
    }

    /// Top-level wrapper processes (not the wrapper's own subshells) running
    /// for `stream` in this project.
    pub fn live_wrappers(&self, stream: &str) -> Vec<u32> {
        let wrapper = self.wrapper().display().to_string();
        let Ok(dir) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        // The wrapper leads its process group; its subshells (the heartbeat
        // loop, which outlives a wrapper killed with SIGKILL for a while)
        // share its command line but not its leadership.
        dir.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| is_alive(*pid) && proc_pgrp(*pid) == Some(*pid))
            .filter(|pid| {
                let args = proc_cmdline(*pid);
                args.contains(&wrapper) && args.iter().any(|a| a == stream)
            })
            .collect()
    }

    /// Kills the process groups named in pids/ and every tagged process;
    /// reaps the test's own children.
    pub(super) fn kill_everything(&self) {
        let own_group = getpgrp();
        if let Ok(entries) = fs::read_dir(self.pids_dir()) {
            for e in entries.filter_map(Result::ok) {
                let Some(pid) = fs::read_to_string(e.path())
                    .ok()
                    .and_then(|t| t.trim().parse::<i32>().ok())
                else {
                    continue;
                };
                if pid <= 1 || !self.has_tag(pid as u32) {
                    continue;
                }
                if let Ok(group) = getpgid(Some(Pid::from_raw(pid))) {
                    if group != own_group && group.as_raw() > 1 {
                        let _ = killpg(group, Signal::SIGKILL);
                    }
                }
            }
        }
        for _ in 0..100 {
            let left = self.tagged_pids();
            if left.is_empty() {
                break;
            }
            for pid in left {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for child in self.children.borrow_mut().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ----- /proc --------------------------------------------------------------

/// The state letter of a process (`R`, `S`, `Z`, ...), `None` if it is gone.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

fn stat_field(pid: u32, n: usize) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(n)?.parse().ok()
}

pub fn proc_ppid(pid: u32) -> Option<u32> {
    stat_field(pid, 1)
}

pub fn proc_pgrp(pid: u32) -> Option<u32> {
    stat_field(pid, 2)
}

/// The session id of a process.
pub fn proc_session(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(3)?.parse().ok()
}

/// Exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    matches!(proc_state(pid), Some(s) if s != 'Z' && s != 'X')
}

pub fn proc_cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn pid_max() -> u64 {
    fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Every live process below `pid` (through the parent chain, whatever their
/// process group or session).
pub fn descendants(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let all: Vec<(u32, u32)> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, proc_ppid(p)?)))
        .collect();
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for (child, _) in all.iter().filter(|(_, pp)| *pp == parent) {
            if is_alive(*child) && !found.contains(child) {
                found.push(*child);
                queue.push(*child);
            }
        }
    }
    found
}
