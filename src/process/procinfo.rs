//! The kernel's facts about a PID: does it exist, its state (a zombie is
//! state `Z`, which `kill -0` misses), when it started, who owns it, its
//! process group. Two backends: /proc on Linux (one read per PID), and the
//! portable one, `ps` (what macOS has; no /proc, no pidfd: the daemon polls).
//! `MONITOR_WORKERS_BACKEND=portable` forces the portable one on Linux, so
//! what differs on macOS is tested on Linux too.

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

/// The fields of a /proc/<pid>/stat line this monitor uses (`pid`, `uid`
/// and `started_at` left for the caller). The command name may hold spaces
/// and parentheses: the fields start after the last `)`.
pub fn parse_stat(line: &[u8]) -> Option<ProcFacts> {
    let close = line.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(line.get(close + 2..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let mut num = || fields.next()?.parse::<i64>().ok();
    let ppid = num()? as i32;
    let pgrp = num()? as i32;
    let session = num()? as i32;
    // Fields 7 and 8, the flags (9), fields 10 to 21, the start time (22).
    num()?;
    num()?;
    let flags = num()?;
    for _ in 0..12 {
        num()?;
    }
    let start_ticks = u64::try_from(num()?).ok()?;
    Some(ProcFacts {
        pid: 0,
        state,
        start_ticks,
        started_at: SystemTime::UNIX_EPOCH,
        uid: 0,
        ppid,
        pgrp,
        session,
        kernel_thread: flags & PF_KTHREAD != 0,
    })
}

/// The kernel's flag for its own threads (include/linux/sched.h).
const PF_KTHREAD: i64 = 0x0020_0000;

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

/// This boot of the kernel, folded to 64 bits from
/// `/proc/sys/kernel/random/boot_id`: a (PID, start ticks) pair names one
/// process only within one boot. `None` without /proc (the portable backend).
pub fn boot_id() -> Option<u64> {
    static BOOT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        if portable() {
            return None;
        }
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let hex: String = text.trim().chars().filter(|c| *c != '-').take(16).collect();
        u64::from_str_radix(&hex, 16)
            .ok()
            .filter(|_| hex.len() == 16)
    })
}

pub fn current_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[cfg(target_os = "linux")]
mod linux {
    use super::*;

    /// kthreadd, the parent of every kernel thread.
    const KTHREADD: i32 = 2;

    /// Whether PID 2 is the kernel's kthreadd (in a PID namespace it may be
    /// an ordinary process, whose children are no kernel threads).
    fn kthreadd_is_kernel() -> bool {
        static KERNEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *KERNEL.get_or_init(|| {
            procfs::process::Process::new(KTHREADD)
                .and_then(|p| p.stat())
                .is_ok_and(|s| i64::from(s.flags) & PF_KTHREAD != 0)
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

    /// One open, read and fstat of /proc/<pid>/stat into a stack buffer:
    /// no allocation beyond the path (this runs for every PID file of a
    /// check). The file's owner is the process's effective user, as the
    /// /proc/<pid> directory's is.
    pub fn inspect(pid: i32) -> Option<ProcFacts> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        if pid <= 0 {
            return None;
        }
        let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
        let mut buf = [0u8; 1024];
        let mut len = 0;
        while len < buf.len() {
            match file.read(&mut buf[len..]) {
                Ok(0) => break,
                // The stat line is made whole at the first read (a seq_file):
                // a read that did not fill the buffer had all of it.
                Ok(n) if len == 0 && n < buf.len() => {
                    len = n;
                    break;
                }
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        let uid = file.metadata().ok()?.uid();
        let stat = parse_stat(&buf[..len])?;
        let (boot, ticks) = boot_and_ticks()?;
        let started_at = SystemTime::UNIX_EPOCH
            + Duration::from_millis(boot)
            + Duration::from_millis(stat.start_ticks * 1000 / ticks.max(1));
        Some(ProcFacts {
            pid,
            uid,
            started_at,
            kernel_thread: stat.kernel_thread
                || ((pid == KTHREADD || stat.ppid == KTHREADD) && kthreadd_is_kernel()),
            ..stat
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

/// How processes are looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// /proc and pidfds (Linux).
    Proc,
    /// `ps` and polling (macOS; on Linux with `MONITOR_WORKERS_BACKEND=portable`).
    Portable,
}

/// The environment variable that picks the backend.
pub const BACKEND_VAR: &str = "MONITOR_WORKERS_BACKEND";

/// The backend a value of [`BACKEND_VAR`] asks for; unset or empty is the
/// platform's own.
pub fn parse_backend(value: Option<&str>) -> Result<Backend, String> {
    let native = if cfg!(target_os = "linux") {
        Backend::Proc
    } else {
        Backend::Portable
    };
    match value.map(str::trim) {
        None | Some("") | Some("auto") => Ok(native),
        Some("portable") => Ok(Backend::Portable),
        Some("proc") if cfg!(target_os = "linux") => Ok(Backend::Proc),
        Some(other) => Err(format!(
            "{BACKEND_VAR}={other:?} is not a process backend; use \"portable\" (ps and polling) or leave it unset"
        )),
    }
}

/// The backend in force for this process (read once; a bad value is
/// reported by the command line first, so here it falls back to the native one).
pub fn backend() -> Backend {
    static BACKEND: std::sync::OnceLock<Backend> = std::sync::OnceLock::new();
    *BACKEND.get_or_init(|| {
        let value = std::env::var(BACKEND_VAR).ok();
        parse_backend(value.as_deref())
            .or_else(|_| parse_backend(None))
            .expect("the native backend")
    })
}

/// Whether the portable backend is in force (no /proc, no pidfd).
pub fn portable() -> bool {
    backend() == Backend::Portable
}

pub fn inspect(pid: i32) -> Option<ProcFacts> {
    #[cfg(target_os = "linux")]
    if !portable() {
        return linux::inspect(pid);
    }
    ps::inspect(pid)
}

/// Every PID on the system (to walk parent chains).
pub fn all_pids() -> Vec<i32> {
    #[cfg(target_os = "linux")]
    if !portable() {
        return linux::all_pids();
    }
    ps::all_pids()
}

/// The facts of every process on the system, in one pass: one /proc read
/// per PID, or a single `ps -A` in the portable backend (a `ps` per PID
/// would take seconds on a busy machine).
pub fn all_facts() -> Vec<ProcFacts> {
    #[cfg(target_os = "linux")]
    if !portable() {
        return linux::all_pids().into_iter().filter_map(inspect).collect();
    }
    ps::all_facts()
}

/// Resident memory (KiB) and CPU time used so far (seconds) of a process,
/// through `ps` (the /proc backend reads these itself).
pub fn usage(pid: i32) -> Option<(u64, f64)> {
    ps::usage(pid)
}

mod ps {
    //! Without /proc: `ps` tells state, owner, group and the start time
    //! (`lstart`, to the second, which also stands in for the start ticks:
    //! the same process always shows the same one).
    use super::*;

    fn ps(args: &[&str]) -> Option<String> {
        let out = std::process::Command::new("ps")
            .args(args)
            .env("LC_ALL", "C")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn inspect(pid: i32) -> Option<ProcFacts> {
        if pid <= 0 {
            return None;
        }
        let text = ps(&[
            "-o",
            "pid=,ppid=,pgid=,uid=,stat=,lstart=",
            "-p",
            &pid.to_string(),
        ])?;
        parse_line(text.lines().find(|l| !l.trim().is_empty())?, pid)
    }

    /// One line of `ps -o pid=,ppid=,pgid=,uid=,stat=,lstart=`.
    pub(super) fn parse_line(line: &str, want: i32) -> Option<ProcFacts> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [pid, ppid, pgrp, uid, stat, start @ ..] = &fields[..] else {
            return None;
        };
        let pid: i32 = pid.parse().ok()?;
        if pid != want {
            return None;
        }
        let started_at = parse_lstart(&start.join(" "))?;
        let start_ticks = started_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_secs();
        let pgrp = pgrp.parse().ok()?;
        Some(ProcFacts {
            pid,
            state: stat.chars().next()?,
            start_ticks,
            started_at,
            uid: uid.parse().ok()?,
            ppid: ppid.parse().ok()?,
            pgrp,
            // `ps` has no portable session column; the group stands in.
            session: pgrp,
            kernel_thread: pid == 0,
        })
    }

    /// `lstart` in the C locale ("Wed Dec  2 14:36:21 2026"), local time.
    pub(super) fn parse_lstart(text: &str) -> Option<SystemTime> {
        use chrono::TimeZone;
        let naive = chrono::NaiveDateTime::parse_from_str(text.trim(), "%a %b %e %H:%M:%S %Y")
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(text.trim(), "%a %e %b %H:%M:%S %Y"))
            .ok()?;
        let local = chrono::Local.from_local_datetime(&naive).earliest()?;
        Some(SystemTime::from(local))
    }

    pub fn all_facts() -> Vec<ProcFacts> {
        ps(&["-A", "-o", "pid=,ppid=,pgid=,uid=,stat=,lstart="])
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let pid = line.split_whitespace().next()?.parse().ok()?;
                parse_line(line, pid)
            })
            .collect()
    }

    pub fn all_pids() -> Vec<i32> {
        ps(&["-A", "-o", "pid="])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    pub fn usage(pid: i32) -> Option<(u64, f64)> {
        let text = ps(&["-o", "rss=,time=", "-p", &pid.to_string()])?;
        let mut fields = text.split_whitespace();
        let rss = fields.next()?.parse().ok()?;
        let cpu = parse_cpu_time(fields.next()?)?;
        Some((rss, cpu))
    }

    /// `time` of ps: `[[dd-]hh:]mm:ss` (Linux) or `m:ss.cc` (macOS), in seconds.
    pub(super) fn parse_cpu_time(text: &str) -> Option<f64> {
        let (days, rest) = match text.split_once('-') {
            Some((d, r)) => (d.parse::<f64>().ok()?, r),
            None => (0.0, text),
        };
        let mut secs = 0.0;
        for part in rest.split(':') {
            secs = secs * 60.0 + part.parse::<f64>().ok()?;
        }
        Some(days * 86_400.0 + secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_values() {
        assert_eq!(parse_backend(Some("portable")), Ok(Backend::Portable));
        assert!(parse_backend(None).is_ok());
        assert_eq!(parse_backend(Some("")), parse_backend(None));
        let bad = parse_backend(Some("fast")).unwrap_err();
        assert!(
            bad.contains("MONITOR_WORKERS_BACKEND") && bad.contains("portable"),
            "{bad}"
        );
    }

    #[test]
    fn ps_lines_and_times_parse() {
        let facts = ps::parse_line(
            "  4242     1  4242  1000 Ss   Wed Dec  2 14:36:21 2026",
            4242,
        )
        .unwrap();
        assert_eq!(
            (facts.ppid, facts.pgrp, facts.uid, facts.state),
            (1, 4242, 1000, 'S')
        );
        assert_eq!(
            ps::parse_line("  4243 1 4243 1000 Z Wed Dec  2 14:36:21 2026", 4242),
            None
        );
        assert!(ps::parse_line("4242 1 4242", 4242).is_none());
        let a = ps::parse_lstart("Wed Dec  2 14:36:21 2026").unwrap();
        let b = ps::parse_lstart("Wed Dec 2 14:36:22 2026").unwrap();
        assert_eq!(b.duration_since(a).unwrap(), Duration::from_secs(1));
        assert_eq!(ps::parse_cpu_time("00:01:02"), Some(62.0));
        assert_eq!(ps::parse_cpu_time("1-00:00:01"), Some(86_401.0));
        assert_eq!(ps::parse_cpu_time("0:01.50"), Some(1.5));
        assert_eq!(ps::parse_cpu_time("x"), None);
    }

    #[test]
    fn the_portable_backend_sees_this_process_as_proc_does() {
        let me = std::process::id() as i32;
        let via_ps = ps::inspect(me).expect("ps sees this process");
        assert_eq!(via_ps.uid, current_uid());
        assert_eq!(via_ps.pgrp, nix::unistd::getpgrp().as_raw());
        assert_eq!(
            ps::inspect(me).unwrap().start_ticks,
            via_ps.start_ticks,
            "stable"
        );
        assert!(ps::all_pids().contains(&me));
        assert!(ps::all_facts()
            .iter()
            .any(|f| f.pid == me && f.uid == current_uid()));
        assert!(ps::usage(me).is_some_and(|(rss, _)| rss > 0));
        #[cfg(target_os = "linux")]
        {
            let via_proc = linux::inspect(me).unwrap();
            assert_eq!(
                (via_ps.ppid, via_ps.pgrp, via_ps.uid),
                (via_proc.ppid, via_proc.pgrp, via_proc.uid)
            );
            let apart = via_ps
                .started_at
                .duration_since(via_proc.started_at)
                .unwrap_or_else(|e| e.duration());
            assert!(apart <= Duration::from_secs(2), "{apart:?}");
        }
    }

    #[test]
    fn stat_lines() {
        let line = b"4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        let f = parse_stat(line).unwrap();
        assert_eq!(
            (f.state, f.ppid, f.pgrp, f.session, f.start_ticks),
            ('S', 1, 4242, 4242, 987654)
        );
        let zombie = b"7 (z) Z 3 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0";
        assert!(parse_stat(zombie).unwrap().is_zombie());
        for bad in [&b""[..], b"7 (z", b"7 (z) S 1 2", b"7 (z) S x 7 7"] {
            assert_eq!(parse_stat(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_as_procfs_sees_it() {
        let me = std::process::id() as i32;
        let facts = linux::inspect(me).unwrap();
        let stat = procfs::process::Process::myself().unwrap().stat().unwrap();
        assert_eq!(facts.start_ticks, stat.starttime);
        assert_eq!(
            (facts.ppid, facts.pgrp, facts.session),
            (stat.ppid, stat.pgrp, stat.session)
        );
        assert_eq!(facts.uid, current_uid());
    }
}
