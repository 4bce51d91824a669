//! The verdict on one tc stream, from the task database and every worker
//! source (a pure function). In order: a live worker (any source) is
//! running; complete is complete; open dependencies (task dependencies,
//! label dependencies, labels naming no stream) wait; a stream whose open
//! tasks are all blocked is blocked (no worker can move it on: never
//! restarted); a stream whose workers cannot be told is unknown (never
//! restarted); a stream where a worker ran — a finished session or tc worker
//! seen, a dispatch the monitor recorded, or the legacy log rule — and none
//! is alive while work is open is dead; one with a task ready to hand out is
//! ready; anything else has not started.

use crate::layout::StreamId;
use crate::store::Progress;
use crate::supervise::assess::{Verdict, LOG_EVIDENCE_BYTES};

use super::{Presence, StreamWorkers};

/// What the verdict on a tc stream is made of.
#[derive(Debug, Clone)]
pub struct TcFacts<'a> {
    pub progress: Progress,
    /// Dependencies (task and label) that are not complete.
    pub unfinished_deps: Vec<StreamId>,
    /// Dependency labels that name no stream.
    pub unknown_labels: &'a [String],
    pub all_open_blocked: bool,
    /// A task is ready to hand out (see `store::TcStream::ready`).
    pub ready: bool,
    pub workers: &'a StreamWorkers,
    /// Size of the stream's log, if it has one (the legacy evidence rule).
    pub log_size: Option<u64>,
    /// The job id the monitor recorded when it last dispatched the stream.
    pub dispatched: Option<&'a str>,
}

pub fn assess_tc(f: &TcFacts<'_>) -> Verdict {
    if let Some(worker) = f.workers.live.first() {
        return Verdict::Running {
            pid: worker.pid.unwrap_or(0),
        };
    }
    if f.progress.is_complete() {
        return Verdict::Complete;
    }
    if !f.unknown_labels.is_empty() || !f.unfinished_deps.is_empty() {
        let mut waiting = f.unfinished_deps.clone();
        // A label naming no stream is shown as what it says, when it can be.
        waiting.extend(
            f.unknown_labels
                .iter()
                .filter_map(|l| StreamId::parse(l).ok()),
        );
        return Verdict::WaitingOnDeps { waiting };
    }
    if f.progress.total == 0 {
        return Verdict::NoTasks;
    }
    if f.all_open_blocked {
        return Verdict::Blocked;
    }
    if f.workers.presence() == Presence::Unknown {
        return Verdict::CannotTell {
            why: f.workers.cannot_tell.join("; "),
        };
    }
    let logged = f.log_size.is_some_and(|s| s > LOG_EVIDENCE_BYTES);
    let reason = if f.workers.ran {
        Some("its worker ended with work open".to_string())
    } else if let Some(job) = f.dispatched {
        Some(format!("session {job} it was given is gone"))
    } else if logged {
        Some("no live session or tc worker".to_string())
    } else {
        None
    };
    if let Some(reason) = reason {
        return Verdict::Dead { reason };
    }
    if f.ready {
        return Verdict::Ready;
    }
    Verdict::NeverStarted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workers::{LiveWorker, MatchRule, SourceKind};

    fn progress(total: u32, completed: u32, blocked: u32) -> Progress {
        Progress {
            total,
            completed,
            blocked,
            pending: total - completed - blocked,
            ..Progress::default()
        }
    }

    #[test]
    fn tc_verdicts_table() {
        /// A row: name, progress, deps, unknown labels, all blocked, ready,
        /// workers, log size, dispatched, verdict label.
        type Case<'a> = (
            &'a str,
            Progress,
            Vec<StreamId>,
            &'a [String],
            bool,
            bool,
            &'a StreamWorkers,
            Option<u64>,
            Option<&'a str>,
            &'a str,
        );
        let live = StreamWorkers {
            live: vec![LiveWorker {
                source: SourceKind::ClaudeSession,
                id: "ab12cd34".into(),
                pid: None,
                rule: MatchRule::Intent,
                started_at: None,
            }],
            ..StreamWorkers::default()
        };
        let ran = StreamWorkers {
            ran: true,
            ..StreamWorkers::default()
        };
        let unknown = StreamWorkers {
            cannot_tell: vec!["claude agents failed".into()],
            ran: true,
            ..StreamWorkers::default()
        };
        let nothing = StreamWorkers::default();
        let dep = || vec![StreamId::parse("2").unwrap()];
        let open = progress(3, 1, 0);
        let blocked = progress(3, 1, 2);
        let labels = ["Stream-X".to_string()];
        let cases: Vec<Case> = vec![
            (
                "a live session anyone started",
                open,
                vec![],
                &[],
                false,
                true,
                &live,
                None,
                None,
                "running",
            ),
            (
                "live though waiting",
                open,
                dep(),
                &[],
                false,
                false,
                &live,
                None,
                None,
                "running",
            ),
            (
                "complete",
                progress(2, 2, 0),
                vec![],
                &[],
                false,
                false,
                &ran,
                Some(500),
                None,
                "complete",
            ),
            (
                "label dependency open",
                open,
                dep(),
                &[],
                false,
                true,
                &ran,
                Some(500),
                None,
                "waiting",
            ),
            (
                "label naming no stream",
                open,
                vec![],
                &labels,
                false,
                true,
                &nothing,
                None,
                None,
                "waiting",
            ),
            (
                "no tasks",
                Progress::default(),
                vec![],
                &[],
                false,
                false,
                &nothing,
                None,
                None,
                "no tasks",
            ),
            (
                "all open tasks blocked, worker gone",
                blocked,
                vec![],
                &[],
                true,
                false,
                &ran,
                Some(500),
                Some("j"),
                "blocked",
            ),
            (
                "cannot tell",
                open,
                vec![],
                &[],
                false,
                true,
                &unknown,
                Some(500),
                Some("j"),
                "unknown",
            ),
            (
                "session ended with work open",
                open,
                vec![],
                &[],
                false,
                true,
                &ran,
                None,
                None,
                "dead",
            ),
            (
                "dispatched session vanished",
                open,
                vec![],
                &[],
                false,
                false,
                &nothing,
                None,
                Some("j"),
                "dead",
            ),
            (
                "legacy log evidence",
                open,
                vec![],
                &[],
                false,
                true,
                &nothing,
                Some(101),
                None,
                "dead",
            ),
            (
                "a short log is no evidence",
                open,
                vec![],
                &[],
                false,
                true,
                &nothing,
                Some(100),
                None,
                "ready",
            ),
            (
                "never ran, task ready",
                open,
                vec![],
                &[],
                false,
                true,
                &nothing,
                None,
                None,
                "ready",
            ),
            (
                "never ran, nothing to hand out",
                open,
                vec![],
                &[],
                false,
                false,
                &nothing,
                None,
                None,
                "not started",
            ),
        ];
        for (name, progress, deps, labels, all_blocked, ready, workers, log, dispatched, want) in
            cases
        {
            let verdict = assess_tc(&TcFacts {
                progress,
                unfinished_deps: deps,
                unknown_labels: labels,
                all_open_blocked: all_blocked,
                ready,
                workers,
                log_size: log,
                dispatched,
            });
            assert_eq!(verdict.label(), want, "{name}: {verdict:?}");
        }
    }
}
