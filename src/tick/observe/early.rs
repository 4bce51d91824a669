//! A one-shot snapshot's second thread. On a large project the three reads
//! a snapshot starts with need nothing of each other and each takes tens of
//! milliseconds: the task database (read on the calling thread), the state
//! (read into the store's cache) and every PID file with the process it
//! names (read before the streams are known). Only the PID files need
//! anything kept for later: [`EarlyPidFiles`], from which the streams' walk
//! takes each stream's file ([`PidFileSource`]; the daemon's walk reads them
//! itself).
//!
//! The PID files are read earlier than the streams' walk would read them
//! by as long as the task read takes (at most the busy timeout, when the
//! database is locked): a snapshot is a look at one moment either way, and
//! every restart, stop or removal looks at its stream again under its lock
//! before it acts.

use crate::layout::{Layout, StreamId};
use crate::process::pidfile::{self, PidDir, PidFile};
use crate::process::procinfo::{self, ProcFacts};
use crate::supervise::stream_map::StreamMap;

use super::{KnownState, SnapshotMemory};

/// What one PID file said, and the facts of the process it names.
pub(super) type PidFileRead = (PidFile, Option<ProcFacts>);

/// Every PID file in `pids/` and the process each names, read before the
/// streams are known: the same reads, by the same rules, as the streams'
/// walk makes (each file followed at once by its process), by stream. A
/// file no stream has is read for nothing; that costs less than waiting
/// for the streams.
pub(super) struct EarlyPidFiles {
    pub files: StreamMap<PidFileRead>,
}

/// Runs `read_tasks` on this thread while a second one reads the state into
/// the store's cache (when the state comes from the store) and every PID
/// file. `None` for the files when they are left to the streams' walk: the
/// directory cannot be listed or held, or no thread could be had (a process
/// or memory limit), in which case the state is read when it is looked at.
///
/// `read_tasks` must not use the state store: the second thread holds it
/// while it reads.
pub(super) fn side_by_side<T>(
    layout: &Layout,
    known: KnownState<'_>,
    read_tasks: impl FnOnce() -> T,
) -> (T, Option<EarlyPidFiles>) {
    // Listed here, so the list that the other thread fills is this thread's
    // memory: what one thread allocates and another frees stays in the
    // first one's allocator arena, of no use to the rest of the check.
    let listing = PidListing::list(layout);
    std::thread::scope(|scope| {
        let reading = std::thread::Builder::new()
            .name("pid-files".into())
            .spawn_scoped(scope, move || {
                if let KnownState::Store(store) = known {
                    store.read_ahead();
                }
                listing.map(PidListing::read)
            });
        let read = read_tasks();
        let early = match reading {
            Ok(reading) => reading
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => None,
        };
        (read, early)
    })
}

/// The PID directory listed and held open, with room for what its files say.
struct PidListing {
    /// The streams with a file, in id order.
    names: Vec<String>,
    dir: Option<PidDir>,
    room: Vec<(String, PidFileRead)>,
    pid_max: u64,
}

impl PidListing {
    /// `None` when the directory cannot be listed or held open: then the
    /// streams' walk tries each file by its path and says what is wrong.
    fn list(layout: &Layout) -> Option<PidListing> {
        let mut names = pidfile::present(&layout.pids_dir())?;
        names.sort_unstable();
        let dir = match names.is_empty() {
            true => None,
            false => Some(PidDir::open(&layout.pids_dir())?),
        };
        Some(PidListing {
            room: Vec::with_capacity(names.len()),
            names,
            dir,
            pid_max: procinfo::pid_max(),
        })
    }

    fn read(self) -> EarlyPidFiles {
        let PidListing {
            names,
            dir,
            mut room,
            pid_max,
        } = self;
        if let Some(dir) = &dir {
            for name in names {
                let file = dir.read(&name, pid_max);
                let facts = match &file {
                    PidFile::Pid { pid, .. } => procinfo::inspect(*pid),
                    _ => None,
                };
                room.push((name, (file, facts)));
            }
        }
        EarlyPidFiles {
            files: StreamMap::from_sorted(room),
        }
    }
}

/// Where the streams' walk (in id order) finds each PID file and the
/// process it names.
pub(super) enum PidFileSource {
    /// Read on the other thread before the streams were known.
    Early {
        files: StreamMap<PidFileRead>,
        at: usize,
    },
    /// Read now. One listing of the directory spares a failed open per
    /// stream without a worker; `None` when it could not be listed, then
    /// each stream's path is tried and what is wrong is said.
    Now {
        present: Option<StreamMap<()>>,
        at: usize,
        dir: Option<PidDir>,
        pid_max: u64,
    },
}

impl PidFileSource {
    pub(super) fn new(layout: &Layout, early: Option<EarlyPidFiles>) -> PidFileSource {
        if let Some(early) = early {
            return PidFileSource::Early {
                files: early.files,
                at: 0,
            };
        }
        let present: Option<StreamMap<()>> = pidfile::present(&layout.pids_dir())
            .map(|names| names.into_iter().map(|n| (n, ())).collect());
        let dir = present
            .as_ref()
            .and_then(|_| PidDir::open(&layout.pids_dir()));
        PidFileSource::Now {
            present,
            at: 0,
            dir,
            pid_max: procinfo::pid_max(),
        }
    }

    /// Stream `id`'s PID file and its process; ids come in id order.
    pub(super) fn take(
        &mut self,
        layout: &Layout,
        id: &StreamId,
        memory: &mut SnapshotMemory,
    ) -> PidFileRead {
        match self {
            PidFileSource::Early { files, at } => files
                .get_mut_in_order(id.as_str(), at)
                .map(|read| std::mem::replace(read, (PidFile::Missing, None)))
                .unwrap_or((PidFile::Missing, None)),
            PidFileSource::Now {
                present,
                at,
                dir,
                pid_max,
            } => {
                let pid_file = match (&*present, &*dir) {
                    (Some(names), _) if names.get_in_order(id.as_str(), at).is_none() => {
                        PidFile::Missing
                    }
                    (Some(_), Some(dir)) => memory.pid_file(dir, id, *pid_max),
                    _ => pidfile::read(&layout.pid_file(id), *pid_max),
                };
                let facts = match &pid_file {
                    PidFile::Pid { pid, .. } => memory.facts(*pid),
                    _ => None,
                };
                (pid_file, facts)
            }
        }
    }
}
