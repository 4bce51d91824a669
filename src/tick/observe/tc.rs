//! The tc rules over a tc project's streams once their PID files are
//! judged: a stream with no running wrapper-launched worker takes the
//! verdict its worker sources (sessions, tc workers) gave, and a live
//! worker they saw is probed.

use crate::clock::now_ms;
use crate::component::ComponentKind;
use crate::layout::Layout;
use crate::probe::{self, checks, CheckSpec};
use crate::store::Initiative;
use crate::supervise::assess::Verdict;
use crate::supervise::model::State;

use super::{parse_task_time, probe_target, Observed, ProbeMode, TcSnapshot};

/// A tc stream whose PID file names no running worker (the wrapper
/// launcher's) is judged by the tc rules: sessions and tc workers count as
/// workers, blocked streams are left alone, unknown ones are never restarted.
/// A live worker seen by a source is probed like a process worker, minus
/// the checks that need a process of ours (process, rss, cpu, min-uptime).
pub(super) fn judge(
    layout: &Layout,
    initiative: &Initiative,
    streams: &mut [Observed],
    tc: &TcSnapshot,
    known: &State,
    probe_mode: ProbeMode<'_>,
) {
    let now = now_ms();
    for o in streams
        .iter_mut()
        .filter(|o| o.kind == ComponentKind::Worker)
    {
        if o.liveness.is_running() {
            continue;
        }
        let Some((_, seen)) = tc.stream(&o.view.id) else {
            continue;
        };
        o.verdict = seen.verdict.clone();
        if !matches!(o.verdict, Verdict::Dead { .. }) {
            if let Some(said) = o.dead_log.as_deref_mut() {
                said.exit_code = None;
            }
        }
        let Some(worker) = seen.workers.live.first() else {
            continue;
        };
        let Some(probing) = o.probing.as_deref_mut() else {
            continue;
        };
        probing.specs.retain(|s| {
            !matches!(
                s.check,
                CheckSpec::Process
                    | CheckSpec::Rss { .. }
                    | CheckSpec::Cpu { .. }
                    | CheckSpec::MinUptime { .. }
            )
        });
        if probing.specs.is_empty() {
            continue;
        }
        // The probe records belong to this worker: a new session starts afresh.
        let pid = worker.pid.unwrap_or(0);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&worker.id, &mut h);
        let instance = std::hash::Hasher::finish(&h);
        let recorded = known
            .streams
            .get(o.view.id.as_str())
            .map(|s| s.history().probes.clone())
            .unwrap_or_default();
        let mut set = recorded.for_instance(pid, instance);
        probing.started_at = worker.started_at.as_deref().and_then(parse_task_time);
        if let ProbeMode::Run(_) = probe_mode {
            let mut target = probe_target(layout, initiative, o);
            target.pid = 0;
            set = checks::run_due(o.probe_specs(), &set, &target, now);
        }
        let probing = o.probing.as_deref_mut().expect("probes configured");
        probing.verdict = probe::verdict(&probing.specs, &set);
        probing.set = Some(set);
        let verdict = &probing.verdict;
        o.verdict = match (&verdict.failing, verdict.starting) {
            (Some(reason), _) => Verdict::Unhealthy {
                pid,
                reason: reason.clone(),
            },
            (None, true) => Verdict::StartingUp { pid },
            (None, false) => Verdict::Running { pid },
        };
    }
}
