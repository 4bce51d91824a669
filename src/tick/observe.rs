//! The observe step: one snapshot of the project per tick — the streams and
//! their progress from the task database, every PID file, the kernel's facts
//! about each PID, log sizes where the dead rule needs them, and the probes
//! of running workers — with a per-stream verdict. Nothing here writes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::clock::now_ms;
use crate::component::{self, ComponentKind};
use crate::config::ConfigFile;
use crate::layout::{Layout, StreamId};
use crate::probe::{self, checks, CheckSpec};
use crate::process::identity::{self, Liveness, Remembered};
use crate::process::pidfile::PidFile;
use crate::process::procinfo;
use crate::process::proof::Project;
use crate::state::StateStore;
use crate::store::{self, Initiative, StoreError};
use crate::supervise::assess::{assess, Verdict};
use crate::supervise::model::State;
use crate::supervise::plan::Observation;
use crate::supervise::policy::PolicyOverride;
use crate::supervise::streams::{self, StreamView};
use crate::workers;
use crate::workers::observe::{TcObservation, TcStreamObs};

mod components;
mod early;
mod memory;
mod probing;
mod recheck;
mod tc;
use components::{assess_component, observe_component};
use early::{EarlyPidFiles, PidFileSource};
pub use memory::{DeadLog, SnapshotMemory};
use memory::{KeptViews, LookedLog};
pub use probing::Probing;
pub use recheck::{judge_with_memory, recheck, recheck_proven, recheck_with};

/// One stream as observed in this tick.
#[derive(Debug)]
pub struct Observed {
    /// Shared with the daemon's kept read: the same for every tick while
    /// the databases are unchanged.
    pub view: Arc<StreamView>,
    pub pid_file: PidFile,
    pub liveness: Liveness,
    pub verdict: Verdict,
    /// What a dead worker's log (or a component's runtime) said of its end;
    /// boxed, as most streams are not dead.
    pub dead_log: Option<Box<DeadLog>>,
    /// Its probes, when any are configured (`None` for most streams).
    pub probing: Option<Box<Probing>>,
    /// The stream's own restart settings from the config, if any.
    pub policy: Option<PolicyOverride>,
    /// How it is started and stopped.
    pub kind: ComponentKind,
}

impl Observed {
    /// The exit code a dead worker's log (or a component's runtime) gave.
    pub fn exit_code(&self) -> Option<i32> {
        self.dead_log.as_ref().and_then(|d| d.exit_code)
    }
}

/// Everything one look at the project saw; nothing is judged beyond the
/// per-stream verdict and nothing is written.
#[derive(Debug)]
pub struct Snapshot {
    pub initiative: Initiative,
    pub streams: Vec<Observed>,
    /// Data problems (bad metadata, unsafe ids, unknown dependencies).
    pub warnings: Vec<String>,
    /// The task database read and its schema.
    pub source: store::TaskSource,
    /// A tc project: what the tc schema and the worker sources said.
    pub tc: Option<TcSnapshot>,
}

/// What a tc project's snapshot adds: the tc facts of every stream and what
/// the worker sources (sessions, tc workers) saw.
#[derive(Debug, Clone, Default)]
pub struct TcSnapshot {
    pub project: store::TcProject,
    pub observed: TcObservation,
}

impl TcSnapshot {
    /// The tc facts and the observation of one stream.
    pub fn stream(&self, id: &StreamId) -> Option<(&store::TcStream, &TcStreamObs)> {
        Some((
            self.project.streams.get(id.as_str())?,
            self.observed.streams.get(id.as_str())?,
        ))
    }
}

/// What to do about probes while observing.
#[derive(Debug, Clone, Copy)]
pub enum ProbeMode<'a> {
    /// Run the probes that are due (a check).
    Run(&'a ConfigFile),
    /// Judge from the records the last check left (status: never runs a probe).
    Recorded(&'a ConfigFile),
}

impl Snapshot {
    /// Streams judged dead.
    pub fn dead(&self) -> Vec<StreamId> {
        self.streams
            .iter()
            .filter(|o| matches!(o.verdict, Verdict::Dead { .. }))
            .map(|o| o.view.id.clone())
            .collect()
    }

    /// Streams of a tc project whose workers cannot be told (never restarted).
    pub fn cannot_tell(&self) -> Vec<StreamId> {
        self.with_verdict(|v| matches!(v, Verdict::CannotTell { .. }))
    }

    /// Streams of a tc project with a task ready and no worker.
    pub fn ready(&self) -> Vec<StreamId> {
        self.with_verdict(|v| matches!(v, Verdict::Ready))
    }

    /// Streams of a tc project whose open tasks are all blocked.
    pub fn blocked(&self) -> Vec<StreamId> {
        self.with_verdict(|v| matches!(v, Verdict::Blocked))
    }

    fn with_verdict(&self, pick: impl Fn(&Verdict) -> bool) -> Vec<StreamId> {
        self.streams
            .iter()
            .filter(|o| pick(&o.verdict))
            .map(|o| o.view.id.clone())
            .collect()
    }

    /// Streams running but failing a liveness probe (stuck).
    pub fn unhealthy(&self) -> Vec<StreamId> {
        self.streams
            .iter()
            .filter(|o| matches!(o.verdict, Verdict::Unhealthy { .. }))
            .map(|o| o.view.id.clone())
            .collect()
    }

    pub fn stream(&self, id: &StreamId) -> Option<&Observed> {
        self.streams.iter().find(|o| &o.view.id == id)
    }
}

impl<'a> ProbeMode<'a> {
    fn config(&self) -> &'a ConfigFile {
        match self {
            ProbeMode::Run(c) | ProbeMode::Recorded(c) => c,
        }
    }
}

/// Reads the databases and every stream's PID file, process and log, and
/// the running workers' probes.
/// `Ok(None)` when there is no active initiative.
pub fn take_snapshot(
    layout: &Layout,
    busy_timeout: Duration,
    known: &State,
    probes: ProbeMode<'_>,
) -> Result<Option<Snapshot>, StoreError> {
    let known = KnownState::Given(known);
    let memory = &mut SnapshotMemory::default();
    take_snapshot_of(layout, busy_timeout, known, probes, memory)
}

/// Where a snapshot finds what the monitor knows of each stream.
#[derive(Clone, Copy)]
pub enum KnownState<'a> {
    /// Already read by the caller (`status`, `recover`).
    Given(&'a State),
    /// Read from the store as part of the snapshot (a check's tick).
    Store(&'a StateStore),
}

impl KnownState<'_> {
    fn look<T>(self, look: impl FnOnce(&State) -> T) -> T {
        match self {
            KnownState::Given(state) => look(state),
            KnownState::Store(store) => store.view(look),
        }
    }
}

/// A snapshot. A run that keeps its reads between ticks (the daemon)
/// rereads little and reads it in turn; one that keeps nothing (a one-shot
/// check, `status`) reads the task database on this thread while a second
/// one reads the state and every PID file and process (see [`early`]).
pub fn take_snapshot_of(
    layout: &Layout,
    busy_timeout: Duration,
    known: KnownState<'_>,
    probes: ProbeMode<'_>,
    memory: &mut SnapshotMemory,
) -> Result<Option<Snapshot>, StoreError> {
    if memory.reads.keeps() {
        return known.look(|known| {
            let read = read_streams(layout, busy_timeout, &mut memory.reads, &mut memory.views)?;
            let Some(read) = read else {
                return Ok(None);
            };
            let snapshot = observe_read(layout, busy_timeout, read, known, probes, memory, None);
            Ok(Some(snapshot))
        });
    }
    let (read, early) = early::side_by_side(layout, known, || {
        read_streams(layout, busy_timeout, &mut memory.reads, &mut memory.views)
    });
    let Some(read) = read? else {
        return Ok(None);
    };
    known.look(|known| {
        let snapshot = observe_read(layout, busy_timeout, read, known, probes, memory, early);
        Ok(Some(snapshot))
    })
}

/// The task database's side of a snapshot: the initiative and its streams,
/// resolved. It needs neither the state nor the PID files.
struct ReadStreams {
    initiative: Initiative,
    source: store::TaskSource,
    warnings: Vec<String>,
    tc_project: Option<store::TcProject>,
    views: Vec<Arc<StreamView>>,
}

fn read_streams(
    layout: &Layout,
    busy_timeout: Duration,
    reads: &mut store::ReadCache,
    kept_views: &mut KeptViews,
) -> Result<Option<ReadStreams>, StoreError> {
    let Some(read) = store::read_project_cached(layout, busy_timeout, reads)? else {
        return Ok(None);
    };
    let generation = reads.generation();
    let cached = match kept_views {
        Some((made_from, views, more)) if *made_from == generation => {
            Some((views.clone(), more.clone()))
        }
        _ => None,
    };
    // A read nobody keeps is taken apart; a kept one is copied from, and
    // its streams are resolved only once.
    let (initiative, source, mut warnings, tc_project, records) = match Arc::try_unwrap(read) {
        Ok(r) => (
            r.initiative,
            r.source,
            r.streams.warnings,
            r.streams.tc,
            Some(r.streams.streams),
        ),
        Err(kept) => (
            kept.initiative.clone(),
            kept.source.clone(),
            kept.streams.warnings.clone(),
            kept.streams.tc.clone(),
            cached.is_none().then(|| kept.streams.streams.clone()),
        ),
    };
    let (views, more) = match (cached, records) {
        (Some(cached), _) => cached,
        (None, records) => {
            let (views, more) = streams::resolve(records.unwrap_or_default());
            if reads.keeps() {
                *kept_views = Some((generation, views.clone(), more.clone()));
            }
            (views, more)
        }
    };
    warnings.extend(more);
    Ok(Some(ReadStreams {
        initiative,
        source,
        warnings,
        tc_project,
        views,
    }))
}

/// The rest of a snapshot, once the streams are known: the worker sources
/// of a tc project, then every stream's PID file, process, log and probes.
fn observe_read(
    layout: &Layout,
    busy_timeout: Duration,
    read: ReadStreams,
    known: &State,
    probes: ProbeMode<'_>,
    memory: &mut SnapshotMemory,
    early: Option<EarlyPidFiles>,
) -> Snapshot {
    let ReadStreams {
        initiative,
        source,
        mut warnings,
        tc_project,
        views,
    } = read;
    // A tc project's workers are sessions and tc worker processes: every
    // source is asked once, before the streams are judged.
    let tc = tc_project.map(|project| {
        let observed = workers::observe::observe(
            layout,
            &project,
            &views,
            known,
            probes.config(),
            &source.tasks_db,
            busy_timeout,
            &workers::observe::SourceSettings::from_env(),
        );
        TcSnapshot { project, observed }
    });
    if let Some(tc) = &tc {
        warnings.extend(tc.observed.warnings.iter().cloned());
    }
    let mut streams = observe_streams(layout, &initiative, views, known, probes, memory, early);
    if let Some(tc) = &tc {
        tc::judge(layout, &initiative, &mut streams, tc, known, probes);
    }
    Snapshot {
        initiative,
        streams,
        warnings,
        source,
        tc,
    }
}

pub fn observation(o: &Observed) -> Observation {
    let worker = match (&o.liveness, &o.pid_file) {
        (Liveness::Running { pid, start_ticks }, PidFile::Pid { fingerprint, .. }) => {
            let mtime = crate::clock::epoch_secs(fingerprint.mtime);
            // A worker is running only once proven; a component has no proof.
            let mut worker = Remembered::proven(*pid, *start_ticks, mtime);
            if o.kind != ComponentKind::Worker {
                worker.proven_in_boot = None;
            }
            Some(worker)
        }
        _ => None,
    };
    Observation {
        id: o.view.id.clone(),
        verdict: o.verdict.clone(),
        completed_tasks: o.view.progress.completed,
        exit_code: o.exit_code(),
        worker,
        probes: o.probes().cloned(),
        not_ready: o.probe_verdict().not_ready.clone(),
        policy: o.policy,
        ended_ms: o.dead_log.as_ref().and_then(|d| d.ended_ms),
        last_words: o.dead_log.as_ref().and_then(|d| d.last_words.clone()),
    }
}

/// A stored task timestamp (`2026-01-13T10:30:00.000Z`, or SQLite's
/// `2026-01-13 10:30:00` in UTC) as a time.
fn parse_task_time(text: &str) -> Option<SystemTime> {
    let utc = chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                .iter()
                .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
                .map(|n| n.and_utc())
        })?;
    let ms = u64::try_from(utc.timestamp_millis()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

fn observe_streams(
    layout: &Layout,
    initiative: &Initiative,
    views: Vec<Arc<StreamView>>,
    known: &State,
    probe_mode: ProbeMode<'_>,
    memory: &mut SnapshotMemory,
    early: Option<EarlyPidFiles>,
) -> Vec<Observed> {
    let complete: HashSet<StreamId> = views
        .iter()
        .filter(|v| v.progress.is_complete())
        .map(|v| v.id.clone())
        .collect();
    let our_uid = procinfo::current_uid();
    let project = Project::of(layout);
    let config = probe_mode.config();
    let now = now_ms();
    let mut pid_files = PidFileSource::new(layout, early);
    // Views and state records are both in id order: each record is found
    // where the last one was.
    let mut known_at = 0;
    let mut observed: Vec<Observed> = views
        .into_iter()
        .map(|view| {
            let (pid_file, facts) = pid_files.take(layout, &view.id, memory);
            let known_stream = known.streams.get_in_order(view.id.as_str(), &mut known_at);
            let seen = known_stream.and_then(|s| s.worker.as_ref());
            let liveness = identity::judge_proven_with_memory(
                &pid_file,
                facts.as_ref(),
                our_uid,
                seen,
                &project,
                view.id.as_str(),
            );
            let policy = stream_policy(config, view.id.as_str());
            let probe_specs = config.stream_probes(view.id.as_str());
            let probes = match (&liveness, &facts) {
                (Liveness::Running { pid, start_ticks }, Some(f)) if !probe_specs.is_empty() => {
                    let recorded = known_stream
                        .map(|s| s.history().probes.clone())
                        .unwrap_or_default();
                    let set = recorded.for_instance(*pid, *start_ticks);
                    Some((set, f.started_at))
                }
                _ => None,
            };
            Observed {
                pid_file,
                liveness,
                verdict: Verdict::NoTasks,
                dead_log: None,
                probing: Probing::of(
                    probe_specs,
                    probes.as_ref().map(|(set, _)| set.clone()),
                    probes.map(|(_, at)| at),
                ),
                policy,
                view,
                kind: ComponentKind::Worker,
            }
        })
        .collect();
    // What the other thread read is all taken: its list goes before the
    // logs are looked at.
    drop(pid_files);
    memory.end_of_pid_files();
    observed.extend(
        component::declared(config, layout)
            .into_iter()
            .map(|c| observe_component(layout, known, c)),
    );

    // Due probes run in parallel across workers (each bounded by its timeout).
    if let ProbeMode::Run(_) = probe_mode {
        let jobs: Vec<&mut Observed> = observed
            .iter_mut()
            .filter(|o| o.probes().is_some())
            .collect();
        std::thread::scope(|scope| {
            for o in jobs {
                let target = probe_target(layout, initiative, o);
                scope.spawn(move || {
                    let probing = o.probing.as_deref_mut().expect("filtered");
                    let set = probing.set.as_ref().expect("filtered");
                    probing.set = Some(checks::run_due(&probing.specs, set, &target, now));
                });
            }
        });
    }

    let logs_dir = crate::process::safe_file::HeldDir::open(&layout.logs_dir());
    for o in &mut observed {
        if let Some(probing) = o.probing.as_deref_mut() {
            if let Some(set) = &probing.set {
                probing.verdict = probe::verdict(&probing.specs, set);
            }
        }
        let unfinished: Vec<StreamId> = o
            .view
            .dependencies
            .iter()
            .filter(|d| !complete.contains(*d))
            .cloned()
            .collect();
        // Only a stream that could be dead needs its log looked at.
        let could_be_dead =
            !(o.liveness.is_running() || o.view.progress.is_complete() || !unfinished.is_empty());
        let log = could_be_dead
            .then(|| {
                let path = layout.log_file(&o.view.id, &initiative.id);
                LookedLog::look(logs_dir.as_ref(), &path)
            })
            .flatten();
        let log_size = log.as_ref().map(|l| l.meta.len());
        if o.kind != ComponentKind::Worker {
            o.verdict = assess_component(o, known);
            continue;
        }
        o.verdict = assess(
            &o.view.progress,
            &o.liveness,
            unfinished,
            log_size,
            o.probe_verdict(),
        );
        if let Verdict::Dead { .. } = o.verdict {
            o.dead_log = memory
                .dead_log(&o.view.id, log.as_ref())
                .boxed_unless_empty();
        }
    }
    memory.end_of_dead_logs();
    observed
}

fn probe_target(layout: &Layout, initiative: &Initiative, o: &Observed) -> checks::Target {
    let heartbeat = o
        .probe_specs()
        .iter()
        .find_map(|s| match &s.check {
            CheckSpec::Heartbeat { path: Some(p), .. } => Some(layout.project_root.join(p)),
            _ => None,
        })
        .unwrap_or_else(|| layout.heartbeat_file(&o.view.id));
    let p = o.view.progress;
    checks::Target {
        pid: o.liveness.pid().unwrap_or(0),
        started_at: o
            .probing
            .as_ref()
            .and_then(|p| p.started_at)
            .unwrap_or_else(SystemTime::now),
        log_path: Some(layout.log_file(&o.view.id, &initiative.id)),
        heartbeat_path: Some(heartbeat),
        last_task_change: o.view.last_update.as_deref().and_then(parse_task_time),
        tasks_open: p.completed + p.cancelled < p.total,
        cwd: layout.project_root.clone(),
    }
}

/// A stream's restart settings from `[workers]` / `[streams.<id>]`.
fn stream_policy(config: &ConfigFile, id: &str) -> Option<PolicyOverride> {
    PolicyOverride::new(
        config.stream_setting(id, |w| w.restart_policy),
        config.stream_setting(id, |w| w.max_restarts),
    )
}

#[cfg(test)]
#[path = "observe/early_tests.rs"]
mod early_tests;
