//! Stopping a worker gracefully: SIGTERM to its process group and to any
//! descendant that left the group (found through the parent chain), a grace
//! period, then SIGKILL to whatever is left. Identity is checked before every
//! signal (same start time as when the targets were collected, same user),
//! and PID 1, PID 0, this monitor and other users' processes are never
//! signalled. Every signal sent is reported to the caller for the log.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::procinfo::{self, ProcFacts};

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

/// The worker's live process group (if it leads one) and every descendant.
fn collect_targets(leader: &ProcFacts, our_uid: u32) -> (bool, Vec<Target>) {
    let me = std::process::id() as i32;
    let is_leader = leader.pgrp == leader.pid;
    let mut by_parent: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    let mut facts: BTreeMap<i32, ProcFacts> = BTreeMap::new();
    for pid in procinfo::all_pids() {
        if let Some(f) = procinfo::inspect(pid) {
            by_parent.entry(f.ppid).or_default().push(pid);
            facts.insert(pid, f);
        }
    }
    let mut chosen: BTreeSet<Target> = BTreeSet::new();
    let mut consider = |f: &ProcFacts| {
        if f.pid > 1 && f.pid != me && f.uid == our_uid && !f.is_zombie() {
            chosen.insert(Target {
                pid: f.pid,
                start_ticks: f.start_ticks,
            });
        }
    };
    consider(leader);
    if is_leader {
        facts
            .values()
            .filter(|f| f.pgrp == leader.pid)
            .for_each(&mut consider);
    }
    let mut queue = vec![leader.pid];
    while let Some(parent) = queue.pop() {
        for child in by_parent.get(&parent).into_iter().flatten() {
            if let Some(f) = facts.get(child) {
                consider(f);
                queue.push(*child);
            }
        }
    }
    (is_leader, chosen.into_iter().collect())
}

/// Stops the worker `pid`, which must still have started at
/// `expected_start` (clock ticks after boot) when given. `note` receives one
/// line per signal sent.
pub fn stop_worker(
    pid: i32,
    expected_start: Option<u64>,
    grace: Duration,
    note: &mut dyn FnMut(String),
) -> Result<StopOutcome, StopRefused> {
    if pid <= 1 || pid == std::process::id() as i32 {
        return Err(StopRefused::Reserved(pid));
    }
    let our_uid = procinfo::current_uid();
    let Some(leader) = procinfo::inspect(pid) else {
        return Ok(StopOutcome::AlreadyGone);
    };
    if leader.uid != our_uid {
        return Err(StopRefused::OtherUser {
            pid,
            uid: leader.uid,
        });
    }
    if expected_start.is_some_and(|s| s != leader.start_ticks) {
        return Err(StopRefused::NotTheWorker(pid));
    }
    let (is_leader, targets) = collect_targets(&leader, our_uid);
    if targets.is_empty() {
        return Ok(StopOutcome::AlreadyGone);
    }
    signal_all(&leader, is_leader, &targets, Signal::SIGTERM, note);
    let alive = wait_gone(&targets, grace);
    if alive.is_empty() {
        return Ok(StopOutcome::Terminated);
    }
    signal_all(&leader, is_leader, &alive, Signal::SIGKILL, note);
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

/// Sends `signal` to the group (when the worker leads one and a member is
/// still the process we collected) and to each target outside it.
fn signal_all(
    leader: &ProcFacts,
    is_leader: bool,
    targets: &[Target],
    signal: Signal,
    note: &mut dyn FnMut(String),
) {
    let group = leader.pid;
    let live: Vec<(Target, ProcFacts)> = targets
        .iter()
        .filter_map(|t| still_same(t).map(|f| (*t, f)))
        .collect();
    let in_group: Vec<i32> = live
        .iter()
        .filter(|(_, f)| is_leader && f.pgrp == group)
        .map(|(t, _)| t.pid)
        .collect();
    if !in_group.is_empty() && killpg(Pid::from_raw(group), signal).is_ok() {
        note(format!(
            "Sent {signal} to process group {group} ({} process(es): {})",
            in_group.len(),
            join(&in_group)
        ));
    }
    let outside: Vec<i32> = live
        .iter()
        .filter(|(t, _)| !in_group.contains(&t.pid))
        .filter(|(t, _)| still_same(t).is_some() && kill(Pid::from_raw(t.pid), signal).is_ok())
        .map(|(t, _)| t.pid)
        .collect();
    if !outside.is_empty() {
        note(format!(
            "Sent {signal} to {} descendant(s) outside the group: {}",
            outside.len(),
            join(&outside)
        ));
    }
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
