//! What the daemon's ticks keep between them so that an interval tick
//! redoes only what can have changed: the databases' read, the streams
//! resolved from it, and what dead workers' logs said.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::layout::StreamId;
use crate::logtail;
use crate::process::pidfile::{PidDir, PidFile, Stamp};
use crate::process::procinfo::{self, ProcFacts};
use crate::process::safe_file;
use crate::store;
use crate::supervise::streams::StreamView;

/// Streams resolved from a kept read: the read's generation, the views and
/// their warnings.
pub(super) type KeptViews = Option<(u64, Vec<Arc<StreamView>>, Vec<String>)>;

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
    pub(super) views: KeptViews,
    dead_logs: HashMap<StreamId, (LogStamp, DeadLog)>,
    /// The logs of the streams found dead in the tick under way.
    dead_now: HashMap<StreamId, (LogStamp, DeadLog)>,
    /// Workers alive as of the tick's start, by PID: their start ticks (the
    /// daemon's pidfds that have not fired).
    alive: HashMap<i32, u64>,
    /// The PID files read, by stream: what each said, its stamp, when it
    /// was read and against which largest PID it was judged.
    pid_files: HashMap<StreamId, KeptPidFile>,
    /// The PID files of the tick under way.
    pid_files_now: HashMap<StreamId, KeptPidFile>,
    /// The facts last read of each live process the streams name (the
    /// daemon's only): used only while pinned with the same start ticks, so
    /// the first interval tick after a worker is watched reads nothing.
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
    /// start ticks. Facts of other processes are always read afresh, and
    /// are forgotten here.
    pub fn pin_alive(&mut self, alive: HashMap<i32, u64>) {
        self.facts
            .retain(|pid, f| alive.get(pid) == Some(&f.start_ticks));
        self.alive = alive;
    }

    /// The facts of `pid`: kept ones while the daemon's pidfd vouches that
    /// it is the same process and alive, else read now (and kept by the
    /// daemon, for when it watches that process).
    pub(super) fn facts(&mut self, pid: i32) -> Option<ProcFacts> {
        let pinned = self.alive.get(&pid).copied();
        if let (Some(start), Some(kept)) = (pinned, self.facts.get(&pid)) {
            if kept.start_ticks == start && !kept.is_zombie() {
                return Some(kept.clone());
            }
        }
        let fresh = procinfo::inspect(pid);
        match &fresh {
            Some(f) if self.reads.keeps() && !f.is_zombie() => {
                self.facts.insert(pid, f.clone());
            }
            _ => {
                self.facts.remove(&pid);
            }
        }
        fresh
    }

    /// What the log of dead stream `id` says: what the last tick read while
    /// the log keeps its size and modification time (`log`, `None` when it
    /// could not be looked at), else read now. The daemon
    /// keeps it for the next tick; a one-shot keeps nothing.
    pub(super) fn dead_log(&mut self, id: &StreamId, log: Option<&LookedLog>) -> DeadLog {
        let meta = log.map(|l| &l.meta);
        let modified = meta.and_then(|m| m.modified().ok());
        let stamp = (meta.map_or(0, |m| m.len()), modified);
        let said = match self.dead_logs.remove(id) {
            Some((kept, said)) if kept == stamp && meta.is_some() => said,
            _ => DeadLog::read(log, modified),
        };
        if self.reads.keeps() {
            self.dead_now.insert(id.clone(), (stamp, said.clone()));
        }
        said
    }

    /// The PID file of stream `id` in `dir`: what the daemon read last
    /// while the file keeps its stamp and had been left alone before that
    /// read, else read now (one `fstatat` instead of open, read, close).
    pub(super) fn pid_file(&mut self, dir: &PidDir, id: &StreamId, pid_max: u64) -> PidFile {
        if !self.reads.keeps() {
            return dir.read(id.as_str(), pid_max);
        }
        if let Some(kept) = self.pid_files.remove(id) {
            let unchanged = kept.pid_max == pid_max
                && kept.stamp.settled_before(kept.read_at)
                && dir.stamp(id.as_str()) == Some(kept.stamp);
            if unchanged {
                let file = kept.file.clone();
                self.pid_files_now.insert(id.clone(), kept);
                return file;
            }
        }
        let read_at = SystemTime::now();
        let (file, stamp) = dir.read_stamped(id.as_str(), pid_max);
        if let Some(stamp) = stamp {
            let kept = KeptPidFile {
                stamp,
                read_at,
                pid_max,
                file: file.clone(),
            };
            self.pid_files_now.insert(id.clone(), kept);
        }
        file
    }

    /// The end of a tick's look at the PID files: only those read in it
    /// are remembered.
    pub(super) fn end_of_pid_files(&mut self) {
        self.pid_files = std::mem::take(&mut self.pid_files_now);
    }

    /// The end of a tick's look at the logs: only the streams dead now are
    /// remembered.
    pub(super) fn end_of_dead_logs(&mut self) {
        self.dead_logs = std::mem::take(&mut self.dead_now);
    }
}

/// A PID file as the daemon read it.
#[derive(Debug)]
struct KeptPidFile {
    stamp: Stamp,
    read_at: SystemTime,
    pid_max: u64,
    file: PidFile,
}

/// A log's size and modification time: a log that kept both was not written.
pub(super) type LogStamp = (u64, Option<SystemTime>);

/// A log the dead rule looked at: its metadata, and the file itself when it
/// is a regular file opened without following a link (its tail is read
/// from that file, so a dead worker's log costs one open and one `fstat`).
#[derive(Debug)]
pub(super) struct LookedLog {
    pub meta: std::fs::Metadata,
    file: Option<std::fs::File>,
}

impl LookedLog {
    /// `None` when there is no log. Anything else that cannot be opened
    /// safely (a symlink, a FIFO) is measured by its path and never read.
    /// The file is opened relative to `dir` (its directory, held open) when
    /// there is one.
    pub(super) fn look(
        dir: Option<&safe_file::HeldDir>,
        path: &std::path::Path,
    ) -> Option<LookedLog> {
        use safe_file::HeldOpen;
        let opened = match (dir, path.file_name()) {
            (Some(dir), Some(name)) => dir.open_read_with_meta(name),
            _ => match safe_file::open_read_with_meta(path) {
                Ok((file, meta)) => HeldOpen::Regular(file, meta),
                Err(e) if e.is_missing() => HeldOpen::Missing,
                Err(_) => HeldOpen::Other,
            },
        };
        match opened {
            HeldOpen::Regular(file, meta) => Some(LookedLog {
                meta,
                file: Some(file),
            }),
            HeldOpen::Missing => None,
            // Seen already not to be a regular file: measured by its path,
            // without a second open.
            HeldOpen::Other => std::fs::metadata(path)
                .ok()
                .map(|meta| LookedLog { meta, file: None }),
        }
    }
}

/// What a dead worker's log says: the wrapper's exit code, when the log
/// ended and its last words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLog {
    pub exit_code: Option<i32>,
    pub ended_ms: Option<u64>,
    pub last_words: Option<String>,
}

impl DeadLog {
    /// Boxed, when it says anything.
    pub fn boxed_unless_empty(self) -> Option<Box<DeadLog>> {
        (self != DeadLog::default()).then(|| Box::new(self))
    }

    fn read(log: Option<&LookedLog>, modified: Option<SystemTime>) -> DeadLog {
        let tail = log.and_then(|l| logtail::tail_of(l.file.as_ref()?, l.meta.len(), 4096));
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
    /// ticks; anything else is read afresh. What the daemon read before it
    /// pinned a worker serves once the worker is pinned.
    #[test]
    fn facts_are_kept_only_while_the_worker_is_pinned_alive() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let start = procinfo::inspect(pid).unwrap().start_ticks;
        let mut memory = SnapshotMemory::keeping();

        // A one-shot keeps nothing.
        let mut once = SnapshotMemory::default();
        assert!(once.facts(pid).is_some());
        assert!(once.facts.is_empty());

        // Not pinned: read, and kept for a pin to come, never used unpinned.
        let mut seen = memory.facts(pid).unwrap();
        assert_eq!(memory.facts[&pid].start_ticks, start);
        seen.ppid = -7;
        memory.facts.insert(pid, seen.clone());
        assert_ne!(memory.facts(pid).unwrap().ppid, -7, "read afresh");

        // Pinned with another start: dropped at the pin, read afresh.
        memory.facts.insert(pid, seen.clone());
        memory.pin_alive(HashMap::from([(pid, start + 1)]));
        assert!(memory.facts.is_empty());
        assert_ne!(memory.facts(pid).unwrap().ppid, -7);

        // Pinned with its start: what was read before the pin serves.
        memory.facts.insert(pid, seen.clone());
        memory.pin_alive(HashMap::from([(pid, start)]));
        assert_eq!(memory.facts(pid).unwrap().ppid, -7, "the kept facts");
        memory.facts.insert(pid, procinfo::inspect(pid).unwrap());

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

    /// A PID file the daemon read is not read again while its stamp stays
    /// and it had been left alone before that read; a write, a replacement
    /// or a read too close to the last change reads it again. A one-shot
    /// reads every time.
    #[test]
    fn a_pid_file_is_read_again_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let pids = PidDir::open(dir.path()).unwrap();
        let id = StreamId::parse("api").unwrap();
        let path = dir.path().join("api.pid");
        std::fs::write(&path, "4242\n").unwrap();
        let pid_of = |f: &PidFile| match f {
            PidFile::Pid { pid, .. } => *pid,
            other => panic!("{other:?}"),
        };
        let mut daemon = SnapshotMemory::keeping();
        let look = |memory: &mut SnapshotMemory| {
            let file = memory.pid_file(&pids, &id, 4_194_304);
            memory.end_of_pid_files();
            pid_of(&file)
        };
        assert_eq!(look(&mut daemon), 4242);
        // Plant another reading under the file's real stamp, read long
        // after the file's last change: it is what the next look says.
        let plant = |memory: &mut SnapshotMemory, pid: &str, read_at: SystemTime| {
            let (file, stamp) = pids.read_stamped("api", 4_194_304);
            let PidFile::Pid { fingerprint, .. } = file else {
                panic!()
            };
            let file = PidFile::Pid {
                pid: pid.parse().unwrap(),
                fingerprint,
            };
            let kept = KeptPidFile {
                stamp: stamp.unwrap(),
                read_at,
                pid_max: 4_194_304,
                file,
            };
            memory.pid_files.insert(id.clone(), kept);
        };
        let later = SystemTime::now() + std::time::Duration::from_secs(1);
        plant(&mut daemon, "777", later);
        assert_eq!(look(&mut daemon), 777, "kept while unchanged");
        assert_eq!(look(&mut daemon), 777, "and again");
        // Rewritten (same size): read again.
        std::fs::write(&path, "4343\n").unwrap();
        assert_eq!(look(&mut daemon), 4343);
        // Replaced by another file: read again.
        plant(&mut daemon, "777", later);
        std::fs::write(dir.path().join("new"), "4444\n").unwrap();
        std::fs::rename(dir.path().join("new"), &path).unwrap();
        assert_eq!(look(&mut daemon), 4444);
        // Read right after its change: not trusted to be settled.
        plant(&mut daemon, "777", SystemTime::now());
        assert_eq!(look(&mut daemon), 4444);
        // Judged against another largest PID: judged again.
        plant(&mut daemon, "777", later);
        let file = daemon.pid_file(&pids, &id, 4000);
        assert!(matches!(file, PidFile::Invalid(_)), "{file:?}");
        daemon.end_of_pid_files();
        // A one-shot keeps nothing.
        let mut once = SnapshotMemory::default();
        plant(&mut once, "777", later);
        assert_eq!(look(&mut once), 4444);
        assert!(once.pid_files.is_empty(), "a one-shot keeps no reading");
        // A symlink or a FIFO in its place is no kept reading: the path read
        // names it (and does not block on the FIFO), and nothing is kept.
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "777\n").unwrap();
        for odd in ["symlink", "fifo"] {
            std::fs::remove_file(&path).unwrap();
            std::fs::write(&path, "4444\n").unwrap();
            plant(&mut daemon, "777", later);
            std::fs::remove_file(&path).unwrap();
            match odd {
                "symlink" => std::os::unix::fs::symlink(&target, &path).unwrap(),
                _ => nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap(),
            }
            let file = daemon.pid_file(&pids, &id, 4_194_304);
            daemon.end_of_pid_files();
            assert!(matches!(file, PidFile::Invalid(_)), "{odd}: {file:?}");
            assert!(daemon.pid_files.is_empty(), "{odd}: not kept");
        }
    }

    /// A log is read through the one safe open that measured it; a symlink
    /// or a FIFO in its place is measured (as the dead rule needs) but never
    /// read nor followed for its words, and a FIFO never blocks.
    #[test]
    fn only_a_regular_log_is_read_for_a_dead_workers_words() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.log");
        let text = "last words\n[wrapper] 2026-01-01T00:00:00+0000 exited with code 9\n";
        std::fs::write(&real, text).unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let fifo = dir.path().join("fifo.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let id = StreamId::parse("api").unwrap();
        // (log, size seen, exit code read)
        let cases = [
            (&real, Some(text.len() as u64), Some(9)),
            (&link, Some(text.len() as u64), None),
            (&fifo, Some(0), None),
            (&dir.path().join("missing.log"), None, None),
        ];
        // A logs directory that is a symlink or a FIFO is not held (and
        // opening the FIFO does not block): its logs are looked at by path.
        let linked = dir.path().join("linked-logs");
        std::os::unix::fs::symlink(dir.path(), &linked).unwrap();
        assert!(safe_file::HeldDir::open(&linked).is_none());
        assert!(safe_file::HeldDir::open(&fifo).is_none());
        let held = safe_file::HeldDir::open(dir.path()).unwrap();
        for held in [None, Some(&held)] {
            for (path, size, exit_code) in &cases {
                let log = LookedLog::look(held, path);
                let at = (path, held.is_some());
                assert_eq!(log.as_ref().map(|l| l.meta.len()), *size, "{at:?}");
                let said = SnapshotMemory::default().dead_log(&id, log.as_ref());
                assert_eq!(said.exit_code, *exit_code, "{at:?}");
            }
        }
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
            let log = LookedLog::look(None, &path);
            let said = memory.dead_log(&id, log.as_ref());
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
