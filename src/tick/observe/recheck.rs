//! A stream's PID file read again and judged, under the stream's lock just
//! before an action: with the remembered worker as a fallback (a PID file
//! overwritten under a live worker never leads to a twin), and with the
//! identity proof where a worker must be proven.

use crate::layout::{Layout, StreamId};
use crate::process::identity::{self, Liveness, Remembered};
use crate::process::pidfile::{self, PidFile};
use crate::process::procinfo;
use crate::state::StateStore;

/// Reads a stream's PID file again and judges it (used under the stream lock).
pub fn recheck(layout: &Layout, store: &StateStore, id: &StreamId) -> (PidFile, Liveness) {
    recheck_with(layout, store, id, &procinfo::inspect)
}

/// [`recheck`], with the kernel's facts from `inspect`.
pub fn recheck_with(
    layout: &Layout,
    store: &StateStore,
    id: &StreamId,
    inspect: &dyn Fn(i32) -> Option<procinfo::ProcFacts>,
) -> (PidFile, Liveness) {
    let pid_file = pidfile::read(&layout.pid_file(id), procinfo::pid_max());
    let facts = match &pid_file {
        PidFile::Pid { pid, .. } => inspect(*pid),
        _ => None,
    };
    let remembered = store.stream(id).and_then(|s| s.worker);
    let liveness = judge_with_memory(
        &pid_file,
        facts.as_ref(),
        procinfo::current_uid(),
        remembered.as_ref(),
        inspect,
    );
    (pid_file, liveness)
}

/// A stream's PID file read again and judged with the identity proof
/// (`prove`), the remembered worker proven again too (see
/// [`identity::judge_with`]).
pub fn recheck_proven(
    layout: &Layout,
    id: &StreamId,
    remembered: Option<&Remembered>,
    inspect: &dyn Fn(i32) -> Option<procinfo::ProcFacts>,
    prove: &dyn Fn(&procinfo::ProcFacts) -> Result<(), String>,
) -> (PidFile, Liveness) {
    let pid_file = pidfile::read(&layout.pid_file(id), procinfo::pid_max());
    let facts = match &pid_file {
        PidFile::Pid { pid, .. } => inspect(*pid),
        _ => None,
    };
    let liveness = identity::judge_with(
        &pid_file,
        facts.as_ref(),
        procinfo::current_uid(),
        remembered,
        inspect,
        prove,
    );
    (pid_file, liveness)
}

/// The PID file's verdict, unless the file no longer names the worker the
/// monitor last saw running and that very process (same PID, same start
/// time, ours, not a zombie) still runs: a PID file overwritten or removed
/// under a live worker must never lead to a second worker beside it. For
/// what is judged by its PID file alone (components); workers go through
/// [`identity::judge_with`] with the proof.
pub fn judge_with_memory(
    pid_file: &PidFile,
    facts: Option<&procinfo::ProcFacts>,
    our_uid: u32,
    remembered: Option<&Remembered>,
    inspect: &dyn Fn(i32) -> Option<procinfo::ProcFacts>,
) -> Liveness {
    identity::judge_with(pid_file, facts, our_uid, remembered, inspect, &|_| Ok(()))
}
