//! What the daemon's ticks keep between them so that an interval tick
//! redoes only what can have changed: the databases' read, the streams
//! resolved from it, and what dead workers' logs said.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::layout::StreamId;
use crate::logtail;
use crate::store;
use crate::supervise::streams::StreamView;

/// What the daemon's ticks keep of their observations, so that an interval
/// tick redoes only what can have changed: the databases' read (kept while
/// the files' stamps stay) and what a dead worker's log said (kept while the
/// log's size and modification time stay). A one-shot check keeps nothing.
#[derive(Debug, Default)]
pub struct SnapshotMemory {
    pub reads: store::ReadCache,
    /// The streams resolved from the kept read, with their warnings, and
    /// the read's generation they came from.
    pub(super) views: Option<(u64, Vec<Arc<StreamView>>, Vec<String>)>,
    pub(super) dead_logs: HashMap<StreamId, (LogStamp, DeadLog)>,
}

impl SnapshotMemory {
    /// Memory that is kept from tick to tick (the daemon's).
    pub fn keeping() -> SnapshotMemory {
        SnapshotMemory {
            reads: store::ReadCache::keeping(),
            views: None,
            dead_logs: HashMap::new(),
        }
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
