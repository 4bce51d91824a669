//! The verdict on one stream from its facts: the dead-worker rules of the
//! original (SPEC 1.4), minus its defects. A stream is dead only when it is
//! not running, not complete, free of unfinished dependencies, has tasks and
//! left a log of more than 100 bytes as evidence that it ran.

use crate::layout::StreamId;
use crate::probe::ProbeVerdict;
use crate::process::identity::Liveness;
use crate::store::Progress;

/// The log must exceed this many bytes to count as evidence the worker ran.
pub const LOG_EVIDENCE_BYTES: u64 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The worker runs.
    Running { pid: i32 },
    /// The worker runs; a startup probe has not passed yet.
    StartingUp { pid: i32 },
    /// The worker runs but fails a liveness (or startup) probe: stuck.
    Unhealthy { pid: i32, reason: String },
    /// Every task is completed or cancelled.
    Complete,
    /// Waiting for these dependencies to complete.
    WaitingOnDeps { waiting: Vec<StreamId> },
    /// No log evidence that it ever ran.
    NeverStarted,
    /// The stream has no task.
    NoTasks,
    /// Should be running and is not.
    Dead { reason: String },
    /// tc: every open task is `blocked`; no worker can move it on, so none
    /// is (re)started.
    Blocked,
    /// tc: a task is ready to hand out and no worker ever ran; started only
    /// when asked (`--start-ready`).
    Ready,
    /// tc: whether a worker is alive cannot be told (its listing could not
    /// be read); never restarted.
    CannotTell { why: String },
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Running { .. } => "running",
            Verdict::StartingUp { .. } => "starting",
            Verdict::Unhealthy { .. } => "unhealthy",
            Verdict::Complete => "complete",
            Verdict::WaitingOnDeps { .. } => "waiting",
            Verdict::NeverStarted => "not started",
            Verdict::NoTasks => "no tasks",
            Verdict::Dead { .. } => "dead",
            Verdict::Blocked => "blocked",
            Verdict::Ready => "ready",
            Verdict::CannotTell { .. } => "unknown",
        }
    }
}

/// `unfinished_deps`: dependencies that are not complete yet.
/// `log_size`: size of the stream's current log, `None` when absent.
/// `probes`: what the running worker's probes add up to.
pub fn assess(
    progress: &Progress,
    liveness: &Liveness,
    unfinished_deps: Vec<StreamId>,
    log_size: Option<u64>,
    probes: &ProbeVerdict,
) -> Verdict {
    if let Liveness::Running { pid, .. } = liveness {
        let pid = *pid;
        return match (&probes.failing, probes.starting) {
            (Some(reason), _) => Verdict::Unhealthy {
                pid,
                reason: reason.clone(),
            },
            (None, true) => Verdict::StartingUp { pid },
            (None, false) => Verdict::Running { pid },
        };
    }
    if progress.is_complete() {
        return Verdict::Complete;
    }
    if !unfinished_deps.is_empty() {
        return Verdict::WaitingOnDeps {
            waiting: unfinished_deps,
        };
    }
    if progress.total == 0 {
        return Verdict::NoTasks;
    }
    if log_size.is_none_or(|size| size <= LOG_EVIDENCE_BYTES) {
        return Verdict::NeverStarted;
    }
    let reason = match liveness {
        Liveness::NoPidFile => "no PID file".to_string(),
        Liveness::Stale { reason } => reason.clone(),
        Liveness::Running { .. } => unreachable!("handled above"),
    };
    Verdict::Dead { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(total: u32, completed: u32, cancelled: u32) -> Progress {
        Progress {
            total,
            completed,
            cancelled,
            pending: total - completed - cancelled,
            ..Progress::default()
        }
    }

    /// One row of the table below.
    struct Case<'a> {
        name: &'a str,
        progress: Progress,
        liveness: &'a Liveness,
        deps: Vec<StreamId>,
        log: Option<u64>,
        want: &'a str,
    }

    #[test]
    fn dead_worker_rules() {
        let running = Liveness::Running {
            pid: 7,
            start_ticks: 1,
        };
        let none = Liveness::NoPidFile;
        let zombie = Liveness::Stale {
            reason: "process 7 is a zombie".into(),
        };
        let dep = || vec![StreamId::parse("Stream-A").unwrap()];
        let open = progress(5, 2, 0);
        let cases: Vec<Case> = vec![
            Case {
                name: "running",
                progress: open,
                liveness: &running,
                deps: vec![],
                log: Some(500),
                want: "running",
            },
            Case {
                name: "running though deps open",
                progress: open,
                liveness: &running,
                deps: dep(),
                log: None,
                want: "running",
            },
            Case {
                name: "complete",
                progress: progress(5, 5, 0),
                liveness: &none,
                deps: vec![],
                log: Some(500),
                want: "complete",
            },
            Case {
                name: "complete with cancelled",
                progress: progress(5, 4, 1),
                liveness: &none,
                deps: vec![],
                log: Some(500),
                want: "complete",
            },
            Case {
                name: "all cancelled",
                progress: progress(2, 0, 2),
                liveness: &none,
                deps: vec![],
                log: Some(500),
                want: "complete",
            },
            Case {
                name: "waiting on deps",
                progress: open,
                liveness: &none,
                deps: dep(),
                log: Some(500),
                want: "waiting",
            },
            Case {
                name: "no log",
                progress: open,
                liveness: &none,
                deps: vec![],
                log: None,
                want: "not started",
            },
            Case {
                name: "log of exactly 100 bytes",
                progress: open,
                liveness: &none,
                deps: vec![],
                log: Some(100),
                want: "not started",
            },
            Case {
                name: "log of 101 bytes",
                progress: open,
                liveness: &none,
                deps: vec![],
                log: Some(101),
                want: "dead",
            },
            Case {
                name: "no tasks",
                progress: progress(0, 0, 0),
                liveness: &none,
                deps: vec![],
                log: Some(500),
                want: "no tasks",
            },
            Case {
                name: "zombie",
                progress: open,
                liveness: &zombie,
                deps: vec![],
                log: Some(500),
                want: "dead",
            },
        ];
        let quiet = ProbeVerdict::default();
        for Case {
            name,
            progress,
            liveness,
            deps,
            log,
            want,
        } in cases
        {
            assert_eq!(
                assess(&progress, liveness, deps, log, &quiet).label(),
                want,
                "{name}"
            );
        }
        let Verdict::Dead { reason } = assess(&open, &zombie, vec![], Some(500), &quiet) else {
            panic!()
        };
        assert!(reason.contains("zombie"));
        let stuck = ProbeVerdict {
            failing: Some("liveness probe log-activity failed".into()),
            ..quiet.clone()
        };
        assert_eq!(
            assess(&open, &running, vec![], None, &stuck).label(),
            "unhealthy"
        );
        let starting = ProbeVerdict {
            starting: true,
            ..quiet.clone()
        };
        assert_eq!(
            assess(&open, &running, vec![], None, &starting).label(),
            "starting"
        );
        assert_eq!(
            assess(&open, &none, vec![], Some(500), &stuck).label(),
            "dead",
            "probes only judge a running worker"
        );
    }
}
