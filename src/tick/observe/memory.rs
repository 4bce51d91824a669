//! What the daemon's ticks keep between them so that an interval tick
//! redoes only what can have changed: the databases' read, the streams
//! resolved from it, and what dead workers' logs said.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::layout::StreamId;
use crate::logtail;
use crate::process::procinfo::{self, ProcFacts};
use crate::store;
use crate::supervise::streams::StreamView;

/// What the daemon's ticks keep of their observations, so that an interval
/// tick redoes only what can have changed: the databases' read (kept while
/// the files' stamps stay), what a dead worker's log said (kept while the
/// log's size and modification time stay), and the kernel's facts about a
/// worker the daemon holds a pidfd of that has not fired (the same process,
/// alive). A one-shot check keeps nothing.
#[derive(Debug, Default)]
pub struct SnapshotMemory {
    pub reads: store::ReadCache,
    /// The streams resolved from the kept read, with their warnings, and
    /// the read's generation they came from.
    pub(super) views: Option<(u64, Vec<Arc<StreamView>>, Vec<String>)>,
    dead_logs: HashMap<StreamId, (LogStamp, DeadLog)>,
    /// The logs of the streams found dead in the tick under way.
    dead_now: HashMap<StreamId, (LogStamp, DeadLog)>,
    /// Workers alive as of the tick's start, by PID: their start ticks (the
    /// daemon's pidfds that have not fired).
    alive: HashMap<i32, u64>,
    /// The facts last read of each such worker.
    facts: HashMap<i32, ProcFacts>,
}

impl SnapshotMemory {
    /// Memory that is kept from tick to tick (the daemon's).
    pub fn keeping() -> SnapshotMemory {
        SnapshotMemory {
            reads: store::ReadCache::keeping(),
            ..SnapshotMemory::default()
        }
    }

    /// The workers the daemon watches by pidfd and knows alive now: PID and
    /// start ticks. Facts of other processes are always read afresh.
    pub fn pin_alive(&mut self, alive: HashMap<i32, u64>) {
        self.facts
            .retain(|pid, f| alive.get(pid) == Some(&f.start_ticks));
        self.alive = alive;
    }

    /// The facts of `pid`: kept ones while the daemon's pidfd vouches that
    /// it is the same process and alive, else read now (and kept when the
    /// daemon watches it).
    pub(super) fn facts(&mut self, pid: i32) -> Option<ProcFacts> {
        let pinned = self.alive.get(&pid).copied();
        if let (Some(start), Some(kept)) = (pinned, self.facts.get(&pid)) {
            if kept.start_ticks == start && !kept.is_zombie() {
                return Some(kept.clone());
            }
        }
        let fresh = procinfo::inspect(pid);
        match (&fresh, pinned) {
            (Some(f), Some(start)) if f.start_ticks == start && !f.is_zombie() => {
                self.facts.insert(pid, f.clone());
            }
            _ => {
                self.facts.remove(&pid);
            }
        }
        fresh
    }

    /// What the log at `path` of dead stream `id` says: what the last tick
    /// read while the log keeps its size and modification time (`meta`,
    /// `None` when it could not be looked at), else read now. The daemon
    /// keeps it for the next tick; a one-shot keeps nothing.
    pub(super) fn dead_log(
        &mut self,
        id: &StreamId,
        path: &std::path::Path,
        meta: Option<&std::fs::Metadata>,
    ) -> DeadLog {
        let modified = meta.and_then(|m| m.modified().ok());
        let stamp = (meta.map_or(0, |m| m.len()), modified);
        let said = match self.dead_logs.remove(id) {
            Some((kept, said)) if kept == stamp && meta.is_some() => said,
            _ => DeadLog::read(path, modified),
        };
        if self.reads.keeps() {
            self.dead_now.insert(id.clone(), (stamp, said.clone()));
        }
        said
    }

    /// The end of a tick's look at the logs: only the streams dead now are
    /// remembered.
    pub(super) fn end_of_dead_logs(&mut self) {
        self.dead_logs = std::mem::take(&mut self.dead_now);
    }
}

/// A log's size and modification time: a log that kept both was not written.
pub(super) type LogStamp = (u64, Option<SystemTime>);

/// What a dead worker's log says: the wrapper's exit code, when the log
/// ended and its last words.
#[derive(Debug, Clone, Default)]
pub(super) struct DeadLog {
    pub exit_code: Option<i32>,
    pub ended_ms: Option<u64>,
    pub last_words: Option<String>,
}

impl DeadLog {
    pub fn read(path: &std::path::Path, modified: Option<SystemTime>) -> DeadLog {
        let tail = logtail::tail(path, 4096);
        let exit_code = tail.as_deref().and_then(logtail::wrapper_exit_code);
        if exit_code.is_none() {
            return DeadLog::default();
        }
        DeadLog {
            exit_code,
            ended_ms: modified.map(crate::clock::epoch_ms),
            last_words: tail.as_deref().and_then(logtail::last_words),
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Kept facts stand only for a worker pinned alive with the same start
    /// ticks; anything else is read afresh.
    #[test]
    fn facts_are_kept_only_while_the_worker_is_pinned_alive() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let start = procinfo::inspect(pid).unwrap().start_ticks;
        let mut memory = SnapshotMemory::keeping();

        // Not pinned: read, not kept.
        assert!(memory.facts(pid).is_some());
        assert!(memory.facts.is_empty());

        // Pinned with another start: read, not kept.
        memory.pin_alive(HashMap::from([(pid, start + 1)]));
        assert!(memory.facts(pid).is_some());
        assert!(memory.facts.is_empty());

        // Pinned: read once, then kept.
        memory.pin_alive(HashMap::from([(pid, start)]));
        assert_eq!(memory.facts(pid).unwrap().start_ticks, start);
        assert_eq!(memory.facts[&pid].start_ticks, start);

        // It dies (a zombie: our unreaped child). While the daemon still
        // pins it the kept facts stand (its pidfd has not been seen firing);
        // unpinned, the next look reads the zombie.
        child.kill().unwrap();
        let zombie = || procinfo::inspect(pid).is_some_and(|f| f.is_zombie());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !zombie() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(zombie());
        assert!(!memory.facts(pid).unwrap().is_zombie());
        memory.pin_alive(HashMap::new());
        assert!(memory.facts.is_empty());
        assert!(memory.facts(pid).unwrap().is_zombie());
        child.wait().unwrap();
    }

    /// A dead worker's log is read again as soon as it changes size or
    /// time, and not before; only the daemon's memory keeps it.
    #[test]
    fn a_dead_log_is_read_again_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.log");
        let id = StreamId::parse("api").unwrap();
        let exit_line = |code: u8| {
            format!("work\n[wrapper] 2026-01-01T00:00:00+0000 exited with code {code}\n")
        };
        let write = |text: String, at: SystemTime| {
            std::fs::write(&path, text).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(at)
                .unwrap();
        };
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let look = |memory: &mut SnapshotMemory| {
            let meta = std::fs::metadata(&path).ok();
            let said = memory.dead_log(&id, &path, meta.as_ref());
            memory.end_of_dead_logs();
            said.exit_code
        };
        let mut daemon = SnapshotMemory::keeping();
        write(exit_line(3), at);
        assert_eq!(look(&mut daemon), Some(3));
        // Same size and time, other words: the kept reading stands.
        write(exit_line(4), at);
        assert_eq!(look(&mut daemon), Some(3));
        // A new time: read again.
        write(exit_line(4), at + std::time::Duration::from_secs(1));
        assert_eq!(look(&mut daemon), Some(4));
        // A new size at the same time: read again.
        write(exit_line(17), at + std::time::Duration::from_secs(1));
        assert_eq!(look(&mut daemon), Some(17));
        // A one-shot keeps nothing: every look reads.
        let mut once = SnapshotMemory::default();
        write(exit_line(5), at);
        assert_eq!(look(&mut once), Some(5));
        write(exit_line(6), at);
        assert_eq!(look(&mut once), Some(6));
    }
}
