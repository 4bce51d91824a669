//! Is the process a PID file names still our worker? [`judge`] is a pure
//! judgement over the PID file, the kernel's facts and what the monitor
//! remembered: zombies, vanished processes, reused PIDs and other users'
//! processes are all "not running". [`judge_with`] adds the identity proof
//! of [`super::proof`]: a live process that is not proven to be the
//! stream's worker is not running either. Only a `Running` verdict ever
//! leads to a signal.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::pidfile::PidFile;
use super::procinfo::{self, ProcFacts};
use super::proof::{self, Project, SpawnSession};

/// How far a worker's start may trail its PID file's last write before the
/// PID counts as reused (btime is whole seconds; clocks drift a little).
pub const START_TOLERANCE: Duration = Duration::from_secs(1);

/// What the monitor saw of a worker the last time it was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub pid: i32,
    pub start_ticks: u64,
    /// When the PID file was last written, as seen then (seconds since epoch).
    pub pid_file_mtime: u64,
    /// Set when this process was proven to be the stream's worker (by its
    /// tag, its wrapper command line or its spawn), in the boot this names
    /// ([`procinfo::boot_id`]). The same PID with the same start ticks in the
    /// same boot is the same process, so it stays proven without reading its
    /// environment again; anything else is proven afresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proven_in_boot: Option<u64>,
}

impl Remembered {
    /// A worker proven now: the spawn that started it, or a proof just made.
    pub fn proven(pid: i32, start_ticks: u64, pid_file_mtime: u64) -> Remembered {
        Remembered {
            pid,
            start_ticks,
            pid_file_mtime,
            proven_in_boot: procinfo::boot_id(),
        }
    }

    /// Whether `facts` is the very process proven before: same PID, same
    /// start ticks, same boot.
    pub fn vouches_for(&self, facts: &ProcFacts) -> bool {
        self.proven_in_boot.is_some()
            && self.proven_in_boot == procinfo::boot_id()
            && self.pid == facts.pid
            && self.start_ticks == facts.start_ticks
    }
}

/// The verdict on one stream's PID file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// No PID file.
    NoPidFile,
    /// The PID file names our live worker.
    Running { pid: i32, start_ticks: u64 },
    /// The PID file names no process that could be ours; it is stale.
    Stale { reason: String },
}

impl Liveness {
    pub fn is_running(&self) -> bool {
        matches!(self, Liveness::Running { .. })
    }

    pub fn pid(&self) -> Option<i32> {
        match self {
            Liveness::Running { pid, .. } => Some(*pid),
            _ => None,
        }
    }
}

pub fn judge(
    pid_file: &PidFile,
    facts: Option<&ProcFacts>,
    our_uid: u32,
    remembered: Option<&Remembered>,
) -> Liveness {
    let (pid, fingerprint) = match pid_file {
        PidFile::Missing => return Liveness::NoPidFile,
        PidFile::Invalid(bad) => {
            return Liveness::Stale {
                reason: format!("invalid PID file: {}", bad.reason),
            }
        }
        PidFile::Pid { pid, fingerprint } => (*pid, fingerprint),
    };
    let Some(facts) = facts else {
        return Liveness::Stale {
            reason: format!("process {pid} no longer exists"),
        };
    };
    if facts.is_zombie() {
        return Liveness::Stale {
            reason: format!("process {pid} is a zombie (state {})", facts.state),
        };
    }
    if facts.uid != our_uid {
        return Liveness::Stale {
            reason: format!("process {pid} belongs to another user (uid {})", facts.uid),
        };
    }
    if facts.started_at > fingerprint.mtime + START_TOLERANCE {
        return Liveness::Stale {
            reason: format!(
                "PID {pid} was reused: the process started after its PID file was written"
            ),
        };
    }
    if let Some(seen) = remembered {
        let mtime = crate::clock::epoch_secs(fingerprint.mtime);
        if seen.pid == pid && seen.start_ticks != facts.start_ticks && mtime <= seen.pid_file_mtime
        {
            return Liveness::Stale {
                reason: format!("PID {pid} was reused: not the process the monitor saw before"),
            };
        }
    }
    Liveness::Running {
        pid,
        start_ticks: facts.start_ticks,
    }
}

/// The liveness of a stream's worker: [`judge`], then `prove` on the
/// process the PID file names; when that fails, the worker the monitor
/// remembers, if `inspect` shows it is still the same process (PID and start
/// time), ours and alive, and `prove` accepts it — a PID file overwritten or
/// removed under a live worker must never lead to a second worker beside it.
pub fn judge_with(
    pid_file: &PidFile,
    facts: Option<&ProcFacts>,
    our_uid: u32,
    remembered: Option<&Remembered>,
    inspect: &dyn Fn(i32) -> Option<ProcFacts>,
    prove: &dyn Fn(&ProcFacts) -> Result<(), String>,
) -> Liveness {
    let judged = match (judge(pid_file, facts, our_uid, remembered), facts) {
        (running @ Liveness::Running { .. }, Some(f)) => match prove(f) {
            Ok(()) => return running,
            Err(reason) => Liveness::Stale { reason },
        },
        (other, _) => other,
    };
    match remembered.and_then(|r| Some((r, inspect(r.pid)?))) {
        Some((r, f))
            if !f.is_zombie()
                && f.uid == our_uid
                && f.start_ticks == r.start_ticks
                && prove(&f).is_ok() =>
        {
            Liveness::Running {
                pid: r.pid,
                start_ticks: r.start_ticks,
            }
        }
        _ => judged,
    }
}

/// [`judge_with`] with the proof of `stream` in `project`, falling back to
/// the worker the monitor remembers when the PID file no longer names it:
/// that process is the stream's worker only if it is still the same process
/// (PID and start time), ours, alive, and proven. A proof made before holds
/// for the very process it was made for (same PID, start ticks and boot:
/// [`Remembered::vouches_for`]), so a steady worker's environment is read
/// once, not on every check; a remembered PID alone vouches for nothing.
pub fn judge_proven_with_memory(
    pid_file: &PidFile,
    facts: Option<&ProcFacts>,
    our_uid: u32,
    remembered: Option<&Remembered>,
    project: &Project,
    stream: &str,
) -> Liveness {
    // The recorded session is looked at only when a proof needs it.
    let recorded = std::cell::OnceCell::new();
    let prove = |f: &ProcFacts| {
        if remembered.is_some_and(|r| r.vouches_for(f)) {
            return Ok(());
        }
        let session = recorded.get_or_init(|| {
            remembered.and_then(|r| SpawnSession::of_remembered(r, project, stream))
        });
        proof::prove(project, stream, f, session.as_ref())
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    judge_with(
        pid_file,
        facts,
        our_uid,
        remembered,
        &procinfo::inspect,
        &prove,
    )
}

impl SpawnSession {
    /// The session a remembered worker leads (the wrapper a monitor spawns
    /// calls setsid), if it is still the same process, still leads its
    /// session, and is proven again now by its tag or its wrapper command
    /// line: a remembered PID alone never vouches for anything.
    pub fn of_remembered(r: &Remembered, project: &Project, stream: &str) -> Option<SpawnSession> {
        let leader = procinfo::inspect(r.pid)
            .filter(|f| f.start_ticks == r.start_ticks && f.session == f.pid && !f.is_zombie())?;
        proof::prove(project, stream, &leader, None).ok()?;
        Some(SpawnSession {
            leader: leader.pid,
            leader_start_ticks: leader.start_ticks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::pidfile::Fingerprint;
    use std::time::SystemTime;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn file(pid: i32, mtime: u64) -> PidFile {
        PidFile::Pid {
            pid,
            fingerprint: Fingerprint {
                content: pid.to_string().into(),
                mtime: at(mtime),
                inode: 1,
            },
        }
    }

    fn proc_(pid: i32, state: char, started: u64, ticks: u64, uid: u32) -> ProcFacts {
        ProcFacts {
            pid,
            state,
            start_ticks: ticks,
            started_at: at(started),
            uid,
            ppid: 1,
            pgrp: pid,
            session: pid,
            kernel_thread: false,
        }
    }

    #[test]
    fn judgement_table() {
        let me = 1000;
        let remembered = Remembered {
            pid: 42,
            start_ticks: 500,
            pid_file_mtime: 1_000,
            proven_in_boot: None,
        };
        let invalid = PidFile::invalid(
            "x".into(),
            Fingerprint {
                content: "x".into(),
                mtime: at(0),
                inode: 1,
            },
        );
        /// Name, PID file, process, remembered worker, expected stale reason.
        type Case = (
            &'static str,
            PidFile,
            Option<ProcFacts>,
            Option<Remembered>,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            ("no file", PidFile::Missing, None, None, Some("none")),
            ("invalid file", invalid, None, None, Some("invalid")),
            (
                "gone",
                file(42, 1_000),
                None,
                None,
                Some("no longer exists"),
            ),
            (
                "zombie",
                file(42, 1_000),
                Some(proc_(42, 'Z', 990, 500, me)),
                None,
                Some("zombie"),
            ),
            (
                "other user",
                file(42, 1_000),
                Some(proc_(42, 'S', 990, 500, 0)),
                None,
                Some("another user"),
            ),
            (
                "started long after file",
                file(42, 1_000),
                Some(proc_(42, 'S', 1_500, 900, me)),
                None,
                Some("reused"),
            ),
            (
                "started within tolerance",
                file(42, 1_000),
                Some(proc_(42, 'S', 1_001, 500, me)),
                None,
                None,
            ),
            (
                "healthy",
                file(42, 1_000),
                Some(proc_(42, 'R', 990, 500, me)),
                None,
                None,
            ),
            (
                "remembered same",
                file(42, 1_000),
                Some(proc_(42, 'S', 990, 500, me)),
                Some(remembered),
                None,
            ),
            (
                "remembered start changed",
                file(42, 1_000),
                Some(proc_(42, 'S', 990, 777, me)),
                Some(remembered),
                Some("reused"),
            ),
            (
                "file rewritten since",
                file(42, 2_000),
                Some(proc_(42, 'S', 1_990, 777, me)),
                Some(remembered),
                None,
            ),
        ];
        for (name, pid_file, facts, seen, stale) in cases {
            let verdict = judge(&pid_file, facts.as_ref(), me, seen.as_ref());
            match (stale, &verdict) {
                (None, Liveness::Running { pid, .. }) => assert_eq!(*pid, 42, "{name}"),
                (Some("none"), Liveness::NoPidFile) => {}
                (Some(fragment), Liveness::Stale { reason }) => {
                    assert!(reason.contains(fragment), "{name}: {reason}")
                }
                _ => panic!("{name}: unexpected {verdict:?}"),
            }
        }
    }

    /// A proof remembered for the very process (same PID, start ticks and
    /// boot) holds without reading it again; any other memory proves nothing.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_remembered_proof_holds_for_the_same_process_only() {
        let dir = tempfile::tempdir().unwrap();
        let project = Project {
            root: dir.path().to_path_buf(),
            pids_dir: dir.path().join("pids"),
        };
        // An untagged process of ours: no tag, no wrapper command line.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let facts = procinfo::inspect(pid).expect("the child is alive");
        let pid_file = PidFile::Pid {
            pid,
            fingerprint: Fingerprint {
                content: pid.to_string().into(),
                mtime: SystemTime::now() + Duration::from_secs(5),
                inode: 1,
            },
        };
        let me = procinfo::current_uid();
        let judge = |r: Option<Remembered>| {
            judge_proven_with_memory(&pid_file, Some(&facts), me, r.as_ref(), &project, "S")
        };
        let proven = Remembered::proven(pid, facts.start_ticks, 0);
        assert!(proven.proven_in_boot.is_some());
        let cases = [
            ("proven before", Some(proven), true),
            ("nothing remembered", None, false),
            (
                "remembered, never proven",
                Some(Remembered {
                    proven_in_boot: None,
                    ..proven
                }),
                false,
            ),
            (
                "proven in another boot",
                Some(Remembered {
                    proven_in_boot: proven.proven_in_boot.map(|b| b ^ 1),
                    ..proven
                }),
                false,
            ),
            (
                "proven for another start",
                Some(Remembered {
                    start_ticks: facts.start_ticks + 1,
                    ..proven
                }),
                false,
            ),
        ];
        for (name, remembered, running) in cases {
            let verdict = judge(remembered);
            assert_eq!(verdict.is_running(), running, "{name}: {verdict:?}");
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
