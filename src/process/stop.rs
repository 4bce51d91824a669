//! Stopping a worker gracefully: SIGTERM to its process group and to any
//! descendant that left the group (found through the parent chain), a grace
//! period, then SIGKILL to whatever is left. Every signal sent is reported to
//! the caller for the log.
//!
//! What is never signalled, whoever asks: PID ≤ 1, kernel threads, this
//! monitor, its ancestors, a running daemon of the project, other users'
//! processes, and a process that started at another time than the one
//! judged. A group that holds the monitor, one of its ancestors or the
//! daemon is never signalled as a group: its proven members are signalled
//! one by one instead. [`stop_proven`] also demands the identity proof: the
//! worker itself must be proven, and each descendant must carry the
//! stream's tag or be in the worker's session. Single processes are
//! signalled through a pidfd where the kernel has them, so a PID reused
//! between the check and the signal is never hit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::procinfo::{self, ProcFacts};
use super::proof::{self, Project, SpawnSession};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Nothing of the worker was alive.
    AlreadyGone,
    /// Everything ended within the grace period.
    Terminated,
    /// Some processes ignored SIGTERM and were killed.
    Killed { pids: Vec<i32> },
    /// These processes are still alive after SIGKILL (uninterruptible sleep?).
    Survived { pids: Vec<i32> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopRefused {
    #[error("refusing to signal PID {0}: never a worker")]
    Reserved(i32),
    #[error("refusing to signal PID {pid}: it belongs to uid {uid}, not to us")]
    OtherUser { pid: i32, uid: u32 },
    #[error("refusing to signal PID {0}: it is not the worker (it started at another time)")]
    NotTheWorker(i32),
    #[error("refusing to signal PID {0}: it is a kernel thread")]
    KernelThread(i32),
    #[error("refusing to signal PID {pid}: it is {what}")]
    Protected { pid: i32, what: String },
    #[error("refusing to signal: {0}")]
    NotProven(String),
}

/// The processes no stop may touch, and the groups and sessions that hold
/// them (never signalled as a whole).
#[derive(Debug, Clone, Default)]
pub struct Protected {
    pids: BTreeMap<i32, &'static str>,
    groups: BTreeSet<i32>,
    sessions: BTreeSet<i32>,
}

impl Protected {
    /// This monitor, each of its ancestors, and the given daemon PIDs.
    pub fn gather(daemons: &[i32]) -> Protected {
        let mut protected = Protected::default();
        let me = std::process::id() as i32;
        protected.add(me, "this monitor");
        let mut next = procinfo::inspect(me).map(|f| f.ppid);
        let mut hops = 0;
        while let Some(pid) = next.filter(|p| *p > 0 && hops < 4096) {
            protected.add(pid, "an ancestor of this monitor");
            next = procinfo::inspect(pid).map(|f| f.ppid);
            hops += 1;
        }
        for pid in daemons {
            protected.add(*pid, "the project's monitor daemon");
        }
        protected
    }

    fn add(&mut self, pid: i32, what: &'static str) {
        self.pids.entry(pid).or_insert(what);
        if let Some(f) = procinfo::inspect(pid) {
            self.groups.insert(f.pgrp);
            self.sessions.insert(f.session);
        }
    }

    /// Why `pid` must never be signalled, if it must not.
    pub fn why(&self, pid: i32) -> Option<&'static str> {
        self.pids.get(&pid).copied()
    }

    /// Whether a signal to the whole group `pgrp` could reach a protected
    /// process.
    pub fn holds_group(&self, pgrp: i32) -> bool {
        self.groups.contains(&pgrp) || self.sessions.contains(&pgrp)
    }
}

/// The PIDs of a monitor daemon of the project whose state directory is
/// `state_dir`: the one `daemon.json` names (if it still runs with the
/// recorded start time) and the holder `daemon.lock` names (if it runs this
/// same program). Both are read without following symlinks or blocking.
pub fn project_daemons(state_dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let record = super::safe_file::read_capped(&state_dir.join("daemon.json"), 1 << 16)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    if let Some(record) = record {
        let pid = record["pid"].as_i64().and_then(|p| i32::try_from(p).ok());
        let start = record["start_ticks"].as_u64();
        if let (Some(pid), Some(start)) = (pid, start) {
            if procinfo::inspect(pid).is_some_and(|f| f.start_ticks == start) {
                pids.push(pid);
            }
        }
    }
    let holder = super::lock::read_holder(&state_dir.join("daemon.lock"));
    if let Ok(pid) = holder.parse::<i32>() {
        let exe = |p: i32| std::fs::read_link(format!("/proc/{p}/exe")).ok();
        if pid > 1 && exe(pid).is_some() && exe(pid) == std::env::current_exe().ok() {
            pids.push(pid);
        }
    }
    pids
}

/// What a stop may signal: the worker's own proof, and whether a process
/// found beside it (descendant, group member outside a whole-group signal)
/// is the worker's too.
pub struct Authority<'a> {
    pub protected: Protected,
    /// `Err(reason)` when the worker itself is not proven.
    pub leader: &'a dyn Fn(&ProcFacts) -> Result<(), String>,
    /// Whether a descendant or group member may be signalled.
    pub member: &'a dyn Fn(&ProcFacts) -> bool,
}

/// One process to stop, pinned to its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Target {
    pid: i32,
    start_ticks: u64,
}

fn still_same(t: &Target) -> Option<ProcFacts> {
    procinfo::inspect(t.pid).filter(|f| f.start_ticks == t.start_ticks && !f.is_zombie())
}

/// Never-signal rules that hold for any process.
fn refusal(f: &ProcFacts, our_uid: u32, protected: &Protected) -> Option<StopRefused> {
    if f.pid <= 1 {
        return Some(StopRefused::Reserved(f.pid));
    }
    if f.kernel_thread {
        return Some(StopRefused::KernelThread(f.pid));
    }
    if let Some(what) = protected.why(f.pid) {
        return Some(StopRefused::Protected {
            pid: f.pid,
            what: what.to_string(),
        });
    }
    if f.uid != our_uid {
        return Some(StopRefused::OtherUser {
            pid: f.pid,
            uid: f.uid,
        });
    }
    None
}

/// What one stop signals: the whole group (when the worker leads one that
/// holds nothing protected) and single processes.
#[derive(Debug, Default)]
struct Targets {
    group: Option<i32>,
    all: Vec<Target>,
    /// Descendants left alone: not proven to be the worker's.
    spared: Vec<i32>,
}

/// The worker, its group (if it leads one) and every descendant that may
/// be signalled.
fn collect_targets(leader: &ProcFacts, our_uid: u32, authority: &Authority<'_>) -> Targets {
    let protected = &authority.protected;
    let whole_group = leader.pgrp == leader.pid && !protected.holds_group(leader.pid);
    let mut by_parent: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    let mut facts: BTreeMap<i32, ProcFacts> = BTreeMap::new();
    for f in procinfo::all_facts() {
        by_parent.entry(f.ppid).or_default().push(f.pid);
        facts.insert(f.pid, f);
    }
    let mut chosen: BTreeSet<Target> = BTreeSet::new();
    let allowed = |f: &ProcFacts| refusal(f, our_uid, protected).is_none() && !f.is_zombie();
    let pin = |f: &ProcFacts| Target {
        pid: f.pid,
        start_ticks: f.start_ticks,
    };
    chosen.insert(pin(leader));
    for f in facts
        .values()
        .filter(|f| f.pgrp == leader.pid && allowed(f))
    {
        // A whole-group signal reaches every member; without one, only the
        // members proven to be the worker's are signalled.
        if whole_group || (authority.member)(f) {
            chosen.insert(pin(f));
        }
    }
    let mut spared = Vec::new();
    let mut queue = vec![leader.pid];
    let mut seen = BTreeSet::from([leader.pid]);
    while let Some(parent) = queue.pop() {
        for child in by_parent.get(&parent).into_iter().flatten() {
            let Some(f) = facts.get(child) else { continue };
            if !seen.insert(*child) {
                continue;
            }
            let in_group = whole_group && f.pgrp == leader.pid;
            if allowed(f) && (in_group || (authority.member)(f)) {
                chosen.insert(pin(f));
            } else if !f.is_zombie() && !chosen.contains(&pin(f)) {
                spared.push(f.pid);
            }
            queue.push(*child);
        }
    }
    Targets {
        group: whole_group.then_some(leader.pid),
        all: chosen.into_iter().collect(),
        spared,
    }
}

/// Stops the worker `pid`, which must still have started at
/// `expected_start` (clock ticks after boot) when given. `note` receives one
/// line per signal sent. The never-signal rules hold; the identity proof is
/// the caller's (see [`stop_proven`]).
pub fn stop_worker(
    pid: i32,
    expected_start: Option<u64>,
    grace: Duration,
    note: &mut dyn FnMut(String),
) -> Result<StopOutcome, StopRefused> {
    let authority = Authority {
        protected: Protected::gather(&[]),
        leader: &|_| Ok(()),
        member: &|_| true,
    };
    stop_with(pid, expected_start, grace, note, &authority)
}

/// Stops a process the monitor started itself without a tag (a component),
/// under the never-signal rules, a daemon of the project (named in
/// `state_dir`) included.
pub fn stop_component(
    state_dir: &Path,
    pid: i32,
    expected_start: Option<u64>,
    grace: Duration,
    note: &mut dyn FnMut(String),
) -> Result<StopOutcome, StopRefused> {
    let authority = Authority {
        protected: Protected::gather(&project_daemons(state_dir)),
        leader: &|_| Ok(()),
        member: &|_| true,
    };
    stop_with(pid, expected_start, grace, note, &authority)
}

/// Stops `stream`'s worker `pid` of `project` only if it is proven to be
/// that worker now (tag, wrapper command line, or the session of
/// `recorded`); descendants are signalled only if they carry the stream's
/// tag or are in the worker's session. A daemon of the project is never
/// signalled.
#[allow(clippy::too_many_arguments)]
pub fn stop_proven(
    project: &Project,
    state_dir: &Path,
    stream: &str,
    pid: i32,
    expected_start: Option<u64>,
    recorded: Option<&SpawnSession>,
    grace: Duration,
    note: &mut dyn FnMut(String),
) -> Result<StopOutcome, StopRefused> {
    let session = std::cell::Cell::new(recorded.copied());
    let leader = |f: &ProcFacts| {
        proof::prove(project, stream, f, recorded).map_err(|e| e.to_string())?;
        // The proven worker's own session counts as recorded for its descendants.
        if session.get().is_none() && f.session == f.pid {
            session.set(Some(SpawnSession {
                leader: f.pid,
                leader_start_ticks: f.start_ticks,
            }));
        }
        Ok(())
    };
    let member = |f: &ProcFacts| {
        proof::tagged_or_in_session(project, stream, f, session.get().as_ref())
            || matches!(
                proof::prove(project, stream, f, None),
                Ok(proof::Proof::Wrapper)
            )
    };
    let authority = Authority {
        protected: Protected::gather(&project_daemons(state_dir)),
        leader: &leader,
        member: &member,
    };
    stop_with(pid, expected_start, grace, note, &authority)
}

/// The stop itself, under `authority`.
pub fn stop_with(
    pid: i32,
    expected_start: Option<u64>,
    grace: Duration,
    note: &mut dyn FnMut(String),
    authority: &Authority<'_>,
) -> Result<StopOutcome, StopRefused> {
    if pid <= 1 {
        return Err(StopRefused::Reserved(pid));
    }
    let our_uid = procinfo::current_uid();
    let Some(leader) = procinfo::inspect(pid).filter(|f| !f.is_zombie()) else {
        return Ok(StopOutcome::AlreadyGone);
    };
    if let Some(refused) = refusal(&leader, our_uid, &authority.protected) {
        return Err(refused);
    }
    if expected_start.is_some_and(|s| s != leader.start_ticks) {
        return Err(StopRefused::NotTheWorker(pid));
    }
    (authority.leader)(&leader).map_err(StopRefused::NotProven)?;
    let targets = collect_targets(&leader, our_uid, authority);
    if !targets.spared.is_empty() {
        note(format!(
            "Left {} descendant(s) alone, not proven to be the worker's (no tag, not in its session): {}",
            targets.spared.len(),
            join(&targets.spared)
        ));
    }
    if targets.all.is_empty() {
        return Ok(StopOutcome::AlreadyGone);
    }
    signal_all(&targets, &targets.all, Signal::SIGTERM, note);
    let alive = wait_gone(&targets.all, grace);
    if alive.is_empty() {
        return Ok(StopOutcome::Terminated);
    }
    signal_all(&targets, &alive, Signal::SIGKILL, note);
    let survivors = wait_gone(&alive, Duration::from_secs(2));
    if survivors.is_empty() {
        Ok(StopOutcome::Killed {
            pids: alive.iter().map(|t| t.pid).collect(),
        })
    } else {
        Ok(StopOutcome::Survived {
            pids: survivors.iter().map(|t| t.pid).collect(),
        })
    }
}

/// Sends `signal` to the group (when one may be signalled whole and a
/// member is still the process we collected) and to each other target.
fn signal_all(targets: &Targets, now: &[Target], signal: Signal, note: &mut dyn FnMut(String)) {
    let live: Vec<(Target, ProcFacts)> = now
        .iter()
        .filter_map(|t| still_same(t).map(|f| (*t, f)))
        .collect();
    let in_group: Vec<i32> = match targets.group {
        Some(group) => live
            .iter()
            .filter(|(_, f)| f.pgrp == group)
            .map(|(t, _)| t.pid)
            .collect(),
        None => Vec::new(),
    };
    if let Some(group) = targets.group.filter(|_| !in_group.is_empty()) {
        if killpg(Pid::from_raw(group), signal).is_ok() {
            note(format!(
                "Sent {signal} to process group {group} ({} process(es): {})",
                in_group.len(),
                join(&in_group)
            ));
        }
    }
    let single: Vec<i32> = live
        .iter()
        .filter(|(t, _)| !in_group.contains(&t.pid))
        .filter(|(t, _)| signal_one(t, signal))
        .map(|(t, _)| t.pid)
        .collect();
    if !single.is_empty() {
        let what = if targets.group.is_some() {
            "descendant(s) outside the group"
        } else {
            "process(es) one by one"
        };
        note(format!(
            "Sent {signal} to {} {what}: {}",
            single.len(),
            join(&single)
        ));
    }
}

/// Signals one process that must still be `t`: through a pidfd where the
/// kernel has them (the check and the signal then cannot hit a reused PID),
/// else checked just before `kill`.
fn signal_one(t: &Target, signal: Signal) -> bool {
    #[cfg(target_os = "linux")]
    {
        use nix::libc;
        // SAFETY: plain syscalls on a PID and on the descriptor we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, t.pid, 0) };
        if fd >= 0 {
            let fd = fd as libc::c_int;
            // The pidfd now pins one process: check it is still ours.
            let sent = still_same(t).is_some()
                && unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        fd,
                        signal as libc::c_int,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    )
                } == 0;
            unsafe { libc::close(fd) };
            return sent;
        }
        if nix::errno::Errno::last() != nix::errno::Errno::ENOSYS {
            return false;
        }
    }
    still_same(t).is_some() && kill(Pid::from_raw(t.pid), signal).is_ok()
}

fn wait_gone(targets: &[Target], within: Duration) -> Vec<Target> {
    let deadline = Instant::now() + within;
    loop {
        let alive: Vec<Target> = targets
            .iter()
            .copied()
            .filter(|t| still_same(t).is_some())
            .collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn join(pids: &[i32]) -> String {
    pids.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monitor_its_ancestors_and_their_groups_are_protected() {
        let protected = Protected::gather(&[]);
        let me = procinfo::inspect(std::process::id() as i32).unwrap();
        assert_eq!(protected.why(me.pid), Some("this monitor"));
        assert_eq!(protected.why(me.ppid), Some("an ancestor of this monitor"));
        assert!(protected.holds_group(me.pgrp));
        assert!(protected.holds_group(me.session));
        let note = &mut |_| {};
        assert!(matches!(
            stop_worker(me.pid, None, Duration::ZERO, note),
            Err(StopRefused::Protected { .. })
        ));
        assert!(matches!(
            stop_worker(me.ppid, None, Duration::ZERO, note),
            Err(StopRefused::Protected { .. } | StopRefused::Reserved(_))
        ));
        assert_eq!(
            stop_worker(1, None, Duration::ZERO, note),
            Err(StopRefused::Reserved(1))
        );
    }

    #[test]
    fn kernel_threads_are_never_signalled() {
        // kthreadd and its children exist on Linux (not in every container).
        let Some(kthreadd) = procinfo::inspect(2).filter(|f| f.kernel_thread) else {
            return;
        };
        assert!(matches!(
            stop_worker(kthreadd.pid, None, Duration::ZERO, &mut |_| {}),
            Err(StopRefused::KernelThread(2) | StopRefused::OtherUser { .. })
        ));
    }

    #[test]
    fn an_unproven_process_is_refused_before_any_signal() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let project = Project {
            root: std::env::temp_dir().join("mw-none"),
            pids_dir: std::env::temp_dir().join("mw-none/pids"),
        };
        let mut notes = Vec::new();
        let refused = stop_proven(
            &project,
            &std::env::temp_dir().join("mw-none/state"),
            "api",
            pid,
            None,
            None,
            Duration::ZERO,
            &mut |n| notes.push(n),
        );
        let msg = refused.unwrap_err().to_string();
        assert!(
            msg.contains(&format!("PID {pid} is not a worker of api")),
            "{msg}"
        );
        assert!(notes.is_empty());
        assert!(
            child.try_wait().unwrap().is_none(),
            "the stranger was signalled"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
