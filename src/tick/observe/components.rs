//! The declared components of `monitor.toml` (a process the daemon owns, a
//! container) as observed in a tick, and their verdict: a component should
//! always run.

use std::sync::Arc;
use std::time::Duration;

use super::Probing;
use super::{judge_with_memory, DeadLog, Observed};
use crate::component::{self, ComponentKind};
use crate::layout::Layout;
use crate::process::identity::Liveness;
use crate::process::pidfile::{self, PidFile};
use crate::process::{docker, procinfo};
use crate::supervise::assess::Verdict;
use crate::supervise::lifecycle;
use crate::supervise::model::State;
use crate::supervise::streams::StreamView;

/// Observes a declared component (a process the daemon owns, a container).
pub(super) fn observe_component(
    layout: &Layout,
    known: &State,
    c: component::Declared,
) -> Observed {
    let known_stream = known.streams.get(c.id.as_str());
    let (pid_file, liveness, exit_code) = match &c.kind {
        ComponentKind::Docker { container } => {
            let (liveness, exit) = docker::liveness(container, Duration::from_secs(5));
            (PidFile::Missing, liveness, exit)
        }
        _ => {
            let pid_file = pidfile::read(&layout.pid_file(&c.id), procinfo::pid_max());
            let facts = match &pid_file {
                PidFile::Pid { pid, .. } => procinfo::inspect(*pid),
                _ => None,
            };
            let seen = known_stream.and_then(|s| s.worker.as_ref());
            let uid = procinfo::current_uid();
            let liveness =
                judge_with_memory(&pid_file, facts.as_ref(), uid, seen, &procinfo::inspect);
            (pid_file.clone(), liveness, None)
        }
    };
    let probes = match &liveness {
        Liveness::Running { pid, start_ticks } if !c.probes.is_empty() => {
            let recorded = known_stream
                .map(|s| s.history().probes.clone())
                .unwrap_or_default();
            Some(recorded.for_instance(*pid, *start_ticks))
        }
        _ => None,
    };
    let started_at = liveness
        .pid()
        .and_then(procinfo::inspect)
        .map(|f| f.started_at);
    Observed {
        view: Arc::new(StreamView {
            id: c.id,
            name: c.name,
            dependencies: Vec::new(),
            progress: crate::store::Progress::default(),
            last_update: None,
        }),
        pid_file,
        liveness,
        verdict: Verdict::NoTasks,
        dead_log: DeadLog {
            exit_code,
            ..DeadLog::default()
        }
        .boxed_unless_empty(),
        probing: Probing::of(c.probes, probes, started_at),
        policy: c.policy,
        kind: c.kind,
    }
}

/// A component should always run: not running is dead, unless it was never
/// started (a process component before the daemon first starts it).
pub(super) fn assess_component(o: &Observed, known: &State) -> Verdict {
    if let Liveness::Running { pid, .. } = o.liveness {
        let verdict = o.probe_verdict();
        return match (&verdict.failing, verdict.starting) {
            (Some(reason), _) => Verdict::Unhealthy {
                pid,
                reason: reason.clone(),
            },
            (None, true) => Verdict::StartingUp { pid },
            (None, false) => Verdict::Running { pid },
        };
    }
    let never_started = known
        .streams
        .get(o.view.id.as_str())
        .is_none_or(|s| s.lifecycle.kind() == lifecycle::Kind::NotStarted);
    match (&o.kind, &o.liveness) {
        (ComponentKind::Process(_), _) if never_started => Verdict::NeverStarted,
        (_, Liveness::Stale { reason }) => Verdict::Dead {
            reason: reason.clone(),
        },
        _ => Verdict::Dead {
            reason: "not running".into(),
        },
    }
}
