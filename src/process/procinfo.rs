//! The kernel's facts about a PID: does it exist, its state (a zombie is
//! state `Z`, which `kill -0` and `ps -p` both miss), when it started, who
//! owns it, its process group. One /proc read per PID on Linux.

use std::time::{Duration, SystemTime};

/// What the kernel says about one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcFacts {
    pub pid: i32,
    /// Single-letter state as in /proc/<pid>/stat (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Start time in clock ticks after boot: exact, comparable between reads.
    pub start_ticks: u64,
    /// Start time on the wall clock (to about a second).
    pub started_at: SystemTime,
    pub uid: u32,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// A kernel thread (PF_KTHREAD, or PID 2 and its children): never a worker.
    pub kernel_thread: bool,
}

impl ProcFacts {
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// The largest PID this kernel hands out.
pub fn pid_max() -> u64 {
    static PID_MAX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PID_MAX.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            // macOS and others: PIDs stay below 100 000; be generous.
            .unwrap_or(4_194_304)
    })
}

pub fn current_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;

    /// The kernel's flag for its own threads (include/linux/sched.h).
    const PF_KTHREAD: u32 = 0x0020_0000;
    /// kthreadd, the parent of every kernel thread.
    const KTHREADD: i32 = 2;

    /// Whether PID 2 is the kernel's kthreadd (in a PID namespace it may be
    /// an ordinary process, whose children are no kernel threads).
    fn kthreadd_is_kernel() -> bool {
        static KERNEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *KERNEL.get_or_init(|| {
            procfs::process::Process::new(KTHREADD)
                .and_then(|p| p.stat())
                .is_ok_and(|s| s.flags & PF_KTHREAD != 0)
        })
    }

    /// Boot time (ms since the epoch) and clock ticks per second. The boot
    /// time comes from /proc/uptime, which has fractions of a second: the
    /// whole-second `btime` of /proc/stat can be off by up to a second, too
    /// much for a two-second startup grace.
    fn boot_and_ticks() -> Option<(u64, u64)> {
        static CLOCK: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();
        *CLOCK.get_or_init(|| {
            let text = std::fs::read_to_string("/proc/uptime").ok()?;
            let up: f64 = text.split_whitespace().next()?.parse().ok()?;
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .ok()?;
            let boot_ms = now.as_millis() as u64 - (up * 1000.0) as u64;
            Some((boot_ms, procfs::ticks_per_second()))
        })
    }

    pub fn inspect(pid: i32) -> Option<ProcFacts> {
        if pid <= 0 {
            return None;
        }
        let process = procfs::process::Process::new(pid).ok()?;
        let stat = process.stat().ok()?;
        let uid = process.uid().ok()?;
        let (boot, ticks) = boot_and_ticks()?;
        let started_at = SystemTime::UNIX_EPOCH
            + Duration::from_millis(boot)
            + Duration::from_millis(stat.starttime * 1000 / ticks.max(1));
        Some(ProcFacts {
            pid,
            state: stat.state,
            start_ticks: stat.starttime,
            started_at,
            uid,
            ppid: stat.ppid,
            pgrp: stat.pgrp,
            session: stat.session,
            kernel_thread: stat.flags & PF_KTHREAD != 0
                || ((pid == KTHREADD || stat.ppid == KTHREADD) && kthreadd_is_kernel()),
        })
    }

    /// Every PID on the system (to walk parent chains).
    pub fn all_pids() -> Vec<i32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    //! Without /proc (macOS): `ps` tells state, owner and elapsed time.
    use super::*;

    pub fn inspect(pid: i32) -> Option<ProcFacts> {
        if pid <= 0 {
            return None;
        }
        let out = std::process::Command::new("ps")
            .args([
                "-o",
                "stat=,uid=,ppid=,pgid=,etime=",
                "-p",
                &pid.to_string(),
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut fields = text.split_whitespace();
        let state = fields.next()?.chars().next()?;
        let uid = fields.next()?.parse().ok()?;
        let ppid = fields.next()?.parse().ok()?;
        let pgrp = fields.next()?.parse().ok()?;
        let elapsed = parse_etime(fields.next()?)?;
        let started_at = SystemTime::now() - Duration::from_secs(elapsed);
        let start_ticks = started_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_secs();
        Some(ProcFacts {
            pid,
            state,
            start_ticks,
            started_at,
            uid,
            ppid,
            pgrp,
            session: pgrp,
            kernel_thread: pid == 0,
        })
    }

    fn parse_etime(s: &str) -> Option<u64> {
        let (days, rest) = match s.split_once('-') {
            Some((d, r)) => (d.parse::<u64>().ok()?, r),
            None => (0, s),
        };
        let parts: Vec<u64> = rest
            .split(':')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        let secs = parts.iter().fold(0, |acc, p| acc * 60 + p);
        Some(days * 86_400 + secs)
    }

    pub fn all_pids() -> Vec<i32> {
        let Ok(out) = std::process::Command::new("ps")
            .args(["-A", "-o", "pid="])
            .output()
        else {
            return Vec::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

pub use imp::{all_pids, inspect};
