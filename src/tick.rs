//! One check of every stream: observe (databases, PID files, /proc, logs) →
//! assess and decide (pure, in `supervise`) → act (remove stale PID files,
//! restart through the wrapper) → record (state file, monitor.log, events).
//! A one-shot run is one tick; the daemon runs ticks in a loop.
//!
//! A restart happens under the stream's spawn lock, and liveness and the
//! budget are checked again once the lock is held: a monitor that waited for
//! another one's restart finds the fresh worker and does nothing.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::process::Child;
use std::time::{Duration, SystemTime};

use crate::component::{self, ComponentKind};
use crate::config::ConfigFile;
use crate::layout::{Layout, StreamId};
use crate::logtail;
use crate::probe::{self, checks, CheckSpec, ProbeSet, ProbeSpec, ProbeVerdict};
use crate::process::identity::{self, judge, Liveness, Remembered};
use crate::process::pidfile::{self, PidFile};
use crate::process::spawn::{spawn_worker, WrapperCall};
use crate::process::{lock, procinfo};
use crate::prompt::{self, PromptFacts};
use crate::report::events::{EventLog, EventRecord};
use crate::report::log::{Kind, Level, Logger};
use crate::report::now_ms;
use crate::report::{metrics, notify};
use crate::selfheal;
use crate::state::{State, StateStore};
use crate::store::{self, Initiative, StoreError};
use crate::supervise::assess::{assess, Verdict};
use crate::supervise::lifecycle::{self, Lifecycle};
use crate::supervise::plan::{
    self, Begin, Change, Observation, Plan, PlanSettings, RestartRequest,
};
use crate::supervise::policy::{self, PolicyOverride};
use crate::supervise::streams::{self, StreamView};

pub mod recover;

/// How a tick behaves.
#[derive(Debug, Clone)]
pub struct TickSettings {
    pub plan: PlanSettings,
    pub busy_timeout: Duration,
    /// How long a restart waits for the PID file to name a live worker.
    pub spawn_wait: Duration,
    /// Say "Auto-restart disabled ..." when dead workers are found.
    pub hint_auto_restart: bool,
    /// Seconds a stuck worker gets between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Probes, per-stream overrides and components from `monitor.toml`.
    pub config: ConfigFile,
    /// Start the process components (the daemon owns them; a one-shot reports).
    pub own_components: bool,
    /// Run with the event as JSON on stdin when a stream gives up.
    pub on_give_up: Option<String>,
    /// Send metrics to this (loopback) StatsD address too.
    pub statsd: Option<std::net::SocketAddr>,
    /// `--recover-tasks`: after each tick, put tasks of dead or given-up
    /// streams left `in_progress` longer than this back to `pending`.
    pub recover_tasks: Option<Duration>,
}

/// What outlives one tick in the daemon: messages already said, so a data
/// problem is warned about once rather than every interval.
#[derive(Debug, Default)]
pub struct TickMemory {
    said: HashSet<String>,
}

impl TickMemory {
    fn once(&mut self, logger: &Logger, level: Level, kind: Kind, msg: String) {
        if self.said.insert(msg.clone()) {
            logger.log(level, kind, &msg);
        }
    }
}

/// A component just started.
struct Launched {
    pid: i32,
    start_ticks: u64,
    child: Option<Child>,
    /// Watch its PID for death (not for containers: their PID is Docker's).
    watch: bool,
}

/// A worker seen running at the end of a tick (the daemon watches it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub stream: StreamId,
    pub pid: i32,
    pub start_ticks: u64,
}

#[derive(Debug, Default)]
pub struct TickReport {
    pub initiative: Option<Initiative>,
    pub dead: Vec<StreamId>,
    /// Running but failing a liveness probe (stuck).
    pub unhealthy: Vec<StreamId>,
    pub running: Vec<Watched>,
    /// Wrappers this tick spawned (the daemon reaps them).
    pub spawned: Vec<(StreamId, Child)>,
    /// When a deferred restart becomes due (the daemon wakes then).
    pub next_due_ms: Option<u64>,
    /// Notify hooks still running (a one-shot waits for them, bounded).
    pub hooks: Vec<std::thread::JoinHandle<()>>,
}

/// One stream as observed in this tick.
#[derive(Debug)]
pub struct Observed {
    pub view: StreamView,
    pub pid_file: PidFile,
    pub liveness: Liveness,
    pub verdict: Verdict,
    pub exit_code: Option<i32>,
    /// The running worker's probe records (after this tick's probes).
    pub probes: Option<ProbeSet>,
    pub probe_specs: Vec<ProbeSpec>,
    pub probe_verdict: ProbeVerdict,
    /// When the running worker started.
    pub started_at: Option<SystemTime>,
    /// The stream's own restart settings from the config, if any.
    pub policy: Option<PolicyOverride>,
    /// How it is started and stopped.
    pub kind: ComponentKind,
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
}

/// What to do about probes while observing.
#[derive(Debug, Clone, Copy)]
pub enum ProbeMode<'a> {
    /// Run the probes that are due (a check).
    Run(&'a ConfigFile),
    /// Judge from the records the last check left (status: never runs a probe).
    Recorded(&'a ConfigFile),
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
    let Some(store::ProjectRead {
        initiative,
        streams: read,
        source,
    }) = store::read_project(layout, busy_timeout)?
    else {
        return Ok(None);
    };
    let mut warnings = read.warnings;
    let (views, more) = streams::resolve(read.streams);
    warnings.extend(more);
    let streams = observe(layout, &initiative, views, known, probes);
    Ok(Some(Snapshot {
        initiative,
        streams,
        warnings,
        source,
    }))
}

/// Random spread for backoff delays, without a random-number crate: the
/// standard library seeds every `RandomState` afresh.
fn jitter() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs one check. `Err` means the check could not run (a database problem);
/// nothing was judged then.
pub fn run_tick(
    layout: &Layout,
    settings: &TickSettings,
    logger: &Logger,
    store: &StateStore,
    memory: &mut TickMemory,
) -> Result<TickReport, StoreError> {
    let started = std::time::Instant::now();
    let mut actor_gave_up: Vec<EventRecord> = Vec::new();
    let mut report = TickReport::default();
    let (known, warnings) = store.load();
    for w in warnings {
        logger.warning(&w);
    }
    let probes = ProbeMode::Run(&settings.config);
    let Some(snapshot) = take_snapshot(layout, settings.busy_timeout, &known, probes)? else {
        memory.once(
            logger,
            Level::Warning,
            Kind::Report,
            "No active initiative found".to_string(),
        );
        return Ok(report);
    };
    for w in snapshot.warnings {
        memory.once(logger, Level::Warning, Kind::Report, w);
    }
    let Snapshot {
        initiative,
        streams: observed,
        source,
        ..
    } = snapshot;
    report.dead = observed
        .iter()
        .filter(|o| matches!(o.verdict, Verdict::Dead { .. }))
        .map(|o| o.view.id.clone())
        .collect();
    let unhealthy: Vec<String> = observed
        .iter()
        .filter_map(|o| match &o.verdict {
            Verdict::Unhealthy { reason, .. } => Some(format!("{} ({reason})", o.view.id)),
            _ => None,
        })
        .collect();
    report.unhealthy = observed
        .iter()
        .filter(|o| matches!(o.verdict, Verdict::Unhealthy { .. }))
        .map(|o| o.view.id.clone())
        .collect();
    if !unhealthy.is_empty() {
        logger.warning(&format!(
            "Found {} unhealthy worker(s): {}",
            unhealthy.len(),
            unhealthy.join(", ")
        ));
    }
    if report.dead.is_empty() && unhealthy.is_empty() {
        logger.success("All workers healthy");
    } else if !report.dead.is_empty() {
        let names: Vec<&str> = report.dead.iter().map(StreamId::as_str).collect();
        logger.warning(&format!(
            "Found {} dead worker(s): {}",
            names.len(),
            names.join(", ")
        ));
        if !settings.plan.auto_restart && settings.hint_auto_restart {
            logger.warning("Auto-restart disabled. Use --auto-restart to enable.");
        }
    }

    let observations: Vec<Observation> = observed.iter().map(observation).collect();
    let now = now_ms();
    let recorder = Recorder {
        logger,
        events: EventLog::new(&layout.logs_dir().join("events.jsonl")),
    };
    let (plan, state) =
        match store.update(|s| plan::plan_tick(s, &observations, &settings.plan, now)) {
            Ok((plan, state, _)) => (plan, state),
            Err(e) => {
                // Without a recorded budget a restart could repeat forever: only
                // clean up stale PID files this time.
                logger.error(&format!(
                    "Cannot record this check in the state file: {e}; no restart this time"
                ));
                let mut fallback = known.clone();
                let mut plan = plan::plan_tick(&mut fallback, &observations, &settings.plan, now);
                plan.restarts.clear();
                (plan, fallback)
            }
        };
    recorder.changes(&plan);
    if let Some((failed, total, until)) = plan.breaker_opened {
        let secs = until.saturating_sub(now).div_ceil(1000);
        logger.action(
            Level::Warning,
            &format!("Global restart breaker open: {failed} of {total} workers failed within a minute; all restarts paused for {secs}s"),
        );
        recorder.event(EventRecord {
            reason: Some(format!("{failed} of {total} workers failed")),
            ..EventRecord::new("breaker_open", None)
        });
    }
    for obs in observed
        .iter()
        .filter(|o| matches!(o.verdict, Verdict::Dead { .. } | Verdict::Unhealthy { .. }))
    {
        let id = &obs.view.id;
        match &state.streams.get(id.as_str()).map(|s| &s.lifecycle) {
            Some(Lifecycle::GaveUp { reason }) if settings.plan.auto_restart => {
                let kind = if plan.gave_up.contains(id) {
                    Kind::Action
                } else {
                    Kind::Report
                };
                let max = policy::effective(obs.policy, &settings.plan.policy).max_restarts;
                memory.once(
                    logger,
                    Level::Warning,
                    kind,
                    gave_up_message(id, reason, max),
                );
            }
            Some(Lifecycle::Backoff { until_ms, reason }) if !plan.restarts.contains(id) => {
                let left = until_ms.saturating_sub(now) as f64 / 1000.0;
                memory.once(
                    logger,
                    Level::Info,
                    Kind::Report,
                    format!("Worker {id} restart deferred {left:.1}s ({reason})"),
                );
            }
            Some(held @ (Lifecycle::Paused { .. } | Lifecycle::Stopped { .. })) => {
                memory.once(
                    logger,
                    Level::Info,
                    Kind::Report,
                    format!("Worker {id} is {}; not restarting", held.describe()),
                );
            }
            _ => {}
        }
    }
    report.next_due_ms = plan.next_due_ms;

    let mut actor = Actor {
        layout,
        settings,
        logger,
        store,
        recorder: &recorder,
        initiative: &initiative,
        template: None,
        gave_up: Vec::new(),
    };
    for obs in &observed {
        let docker = matches!(obs.kind, ComponentKind::Docker { .. });
        let launched = if plan.restarts.contains(&obs.view.id) {
            actor.restart(obs)
        } else if plan.gave_up.contains(&obs.view.id)
            && matches!(obs.verdict, Verdict::Unhealthy { .. })
        {
            actor.stop_given_up(obs);
            None
        } else if settings.own_components
            && obs.verdict == Verdict::NeverStarted
            && matches!(obs.kind, ComponentKind::Process { .. })
        {
            actor.start_owned(obs)
        } else {
            if matches!(obs.liveness, Liveness::Stale { .. }) && !docker {
                actor.remove_stale(obs);
            }
            None
        };
        if let Some((child, watched)) = launched {
            if let Some(child) = child {
                report.spawned.push((obs.view.id.clone(), child));
            }
            report.running.extend(watched);
        }
    }
    actor_gave_up.append(&mut actor.gave_up);
    for obs in observed
        .iter()
        .filter(|o| !matches!(o.kind, ComponentKind::Docker { .. }))
    {
        if let Liveness::Running { pid, start_ticks } = obs.liveness {
            report.running.push(Watched {
                stream: obs.view.id.clone(),
                pid,
                start_ticks,
            });
        }
    }
    if let Some(older_than) = settings.recover_tasks {
        let scope = recover::Scope {
            source: &source,
            initiative: &initiative,
            observed: &observed,
        };
        recover::after_tick(&scope, store, &recorder, older_than, settings.busy_timeout);
    }
    // Give-ups of this tick: recorded as events, announced to the hook.
    let mut gave_up = std::mem::take(&mut actor_gave_up);
    for id in &plan.gave_up {
        let reason = state
            .streams
            .get(id.as_str())
            .map(|s| s.lifecycle.describe())
            .unwrap_or_default();
        gave_up.push(EventRecord {
            reason: Some(reason),
            ..EventRecord::new("gave_up", Some(id.as_str()))
        });
    }
    for event in gave_up {
        if plan
            .gave_up
            .iter()
            .any(|id| Some(id.as_str()) == event.stream.as_deref())
        {
            recorder.event(event.clone());
        }
        if let Some(command) = &settings.on_give_up {
            report.hooks.push(notify::spawn_hook(
                command,
                &event,
                layout.monitor_log(),
                notify::HOOK_TIMEOUT,
            ));
        }
    }
    let final_state = record_metrics(layout, settings, logger, store, memory, started.elapsed());
    // A restart that failed in this tick set its own backoff: wake for it.
    report.next_due_ms = observed
        .iter()
        .filter_map(|o| {
            match final_state
                .streams
                .get(o.view.id.as_str())
                .map(|s| &s.lifecycle)
            {
                Some(Lifecycle::Backoff { until_ms, .. }) => Some(*until_ms),
                _ => None,
            }
        })
        .chain(plan.next_due_ms)
        .min();
    report.initiative = Some(initiative);
    Ok(report)
}

/// Writes `state/metrics.prom` (and StatsD, when asked) from the state as
/// this check left it.
fn record_metrics(
    layout: &Layout,
    settings: &TickSettings,
    logger: &Logger,
    store: &StateStore,
    memory: &mut TickMemory,
    took: Duration,
) -> State {
    let (state, _) = store.load();
    let snapshot = metrics::snapshot(&state, took, now_ms());
    let path = layout.state_dir().join("metrics.prom");
    if let Err(e) = metrics::write(&path, &metrics::render(&snapshot)) {
        memory.once(
            logger,
            Level::Error,
            Kind::Action,
            format!("Cannot write metrics {}: {e}", path.display()),
        );
    }
    if let Some(addr) = settings.statsd {
        if let Err(e) = metrics::send_statsd(addr, &snapshot) {
            memory.once(
                logger,
                Level::Warning,
                Kind::Report,
                format!("Cannot send StatsD metrics to {addr}: {e}"),
            );
        }
    }
    state
}

pub fn observation(o: &Observed) -> Observation {
    let worker = match (&o.liveness, &o.pid_file) {
        (Liveness::Running { pid, start_ticks }, PidFile::Pid { fingerprint, .. }) => {
            Some(Remembered {
                pid: *pid,
                start_ticks: *start_ticks,
                pid_file_mtime: identity::secs(fingerprint.mtime),
            })
        }
        _ => None,
    };
    Observation {
        id: o.view.id.clone(),
        verdict: o.verdict.clone(),
        completed_tasks: o.view.progress.completed,
        exit_code: o.exit_code,
        worker,
        probes: o.probes.clone(),
        not_ready: o.probe_verdict.not_ready.clone(),
        policy: o.policy,
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

fn observe(
    layout: &Layout,
    initiative: &Initiative,
    views: Vec<StreamView>,
    known: &State,
    probe_mode: ProbeMode<'_>,
) -> Vec<Observed> {
    let complete: HashSet<StreamId> = views
        .iter()
        .filter(|v| v.progress.is_complete())
        .map(|v| v.id.clone())
        .collect();
    let our_uid = procinfo::current_uid();
    let pid_max = procinfo::pid_max();
    let config = probe_mode.config();
    let now = now_ms();
    let mut observed: Vec<Observed> = views
        .into_iter()
        .map(|view| {
            let pid_file = pidfile::read(&layout.pid_file(&view.id), pid_max);
            let facts = match &pid_file {
                PidFile::Pid { pid, .. } => procinfo::inspect(*pid),
                _ => None,
            };
            let known_stream = known.streams.get(view.id.as_str());
            let seen = known_stream.and_then(|s| s.worker.as_ref());
            let liveness = judge_with_memory(&pid_file, facts.as_ref(), our_uid, seen);
            let policy = stream_policy(config, view.id.as_str());
            let probe_specs = config.stream_probes(view.id.as_str());
            let probes = match (&liveness, &facts) {
                (Liveness::Running { pid, start_ticks }, Some(f)) if !probe_specs.is_empty() => {
                    let recorded = known_stream.map(|s| s.probes.clone()).unwrap_or_default();
                    let set = recorded.for_instance(*pid, *start_ticks);
                    Some((set, f.started_at))
                }
                _ => None,
            };
            Observed {
                pid_file,
                liveness,
                verdict: Verdict::NoTasks,
                exit_code: None,
                probes: probes.as_ref().map(|(set, _)| set.clone()),
                probe_specs,
                probe_verdict: ProbeVerdict::default(),
                started_at: probes.map(|(_, at)| at),
                policy,
                view,
                kind: ComponentKind::Worker,
            }
        })
        .collect();
    observed.extend(
        component::declared(config, layout)
            .into_iter()
            .map(|c| observe_component(layout, known, c)),
    );

    // Due probes run in parallel across workers (each bounded by its timeout).
    if let ProbeMode::Run(_) = probe_mode {
        let jobs: Vec<&mut Observed> = observed.iter_mut().filter(|o| o.probes.is_some()).collect();
        std::thread::scope(|scope| {
            for o in jobs {
                let target = probe_target(layout, initiative, o);
                scope.spawn(move || {
                    let set = o.probes.as_ref().expect("filtered");
                    o.probes = Some(checks::run_due(&o.probe_specs, set, &target, now));
                });
            }
        });
    }

    for o in &mut observed {
        if let Some(set) = &o.probes {
            o.probe_verdict = probe::verdict(&o.probe_specs, set);
        }
        let unfinished: Vec<StreamId> = o
            .view
            .dependencies
            .iter()
            .filter(|d| !complete.contains(*d))
            .cloned()
            .collect();
        // Only a stream that could be dead needs its log looked at.
        let log_path = layout.log_file(&o.view.id, &initiative.id);
        let log_size =
            if o.liveness.is_running() || o.view.progress.is_complete() || !unfinished.is_empty() {
                None
            } else {
                std::fs::metadata(&log_path).ok().map(|m| m.len())
            };
        if o.kind != ComponentKind::Worker {
            o.verdict = assess_component(o, known);
            continue;
        }
        o.verdict = assess(
            &o.view.progress,
            &o.liveness,
            unfinished,
            log_size,
            &o.probe_verdict,
        );
        if let Verdict::Dead { .. } = o.verdict {
            o.exit_code =
                logtail::tail(&log_path, 4096).and_then(|t| logtail::wrapper_exit_code(&t));
        }
    }
    observed
}

/// Observes a declared component (a process the daemon owns, a container).
fn observe_component(layout: &Layout, known: &State, c: component::Declared) -> Observed {
    let known_stream = known.streams.get(c.id.as_str());
    let (pid_file, liveness, exit_code) = match &c.kind {
        ComponentKind::Docker { container } => {
            let (liveness, exit) = component::docker_liveness(container, Duration::from_secs(5));
            (PidFile::Missing, liveness, exit)
        }
        _ => {
            let pid_file = pidfile::read(&layout.pid_file(&c.id), procinfo::pid_max());
            let facts = match &pid_file {
                PidFile::Pid { pid, .. } => procinfo::inspect(*pid),
                _ => None,
            };
            let seen = known_stream.and_then(|s| s.worker.as_ref());
            (
                pid_file.clone(),
                judge_with_memory(&pid_file, facts.as_ref(), procinfo::current_uid(), seen),
                None,
            )
        }
    };
    let probes = match &liveness {
        Liveness::Running { pid, start_ticks } if !c.probes.is_empty() => {
            let recorded = known_stream.map(|s| s.probes.clone()).unwrap_or_default();
            Some(recorded.for_instance(*pid, *start_ticks))
        }
        _ => None,
    };
    let started_at = liveness
        .pid()
        .and_then(procinfo::inspect)
        .map(|f| f.started_at);
    Observed {
        view: StreamView {
            id: c.id,
            name: c.name,
            dependencies: Vec::new(),
            progress: crate::store::Progress::default(),
            last_update: None,
        },
        pid_file,
        liveness,
        verdict: Verdict::NoTasks,
        exit_code,
        probes,
        probe_specs: c.probes,
        probe_verdict: ProbeVerdict::default(),
        started_at,
        policy: c.policy,
        kind: c.kind,
    }
}

/// A component should always run: not running is dead, unless it was never
/// started (a process component before the daemon first starts it).
fn assess_component(o: &Observed, known: &State) -> Verdict {
    if let Liveness::Running { pid, .. } = o.liveness {
        return match (&o.probe_verdict.failing, o.probe_verdict.starting) {
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
        (ComponentKind::Process { .. }, _) if never_started => Verdict::NeverStarted,
        (_, Liveness::Stale { reason }) => Verdict::Dead {
            reason: reason.clone(),
        },
        _ => Verdict::Dead {
            reason: "not running".into(),
        },
    }
}

fn probe_target(layout: &Layout, initiative: &Initiative, o: &Observed) -> checks::Target {
    let heartbeat = o
        .probe_specs
        .iter()
        .find_map(|s| match &s.check {
            CheckSpec::Heartbeat { path: Some(p), .. } => Some(layout.project_root.join(p)),
            _ => None,
        })
        .unwrap_or_else(|| layout.pids_dir().join(format!("{}.heartbeat", o.view.id)));
    let p = o.view.progress;
    checks::Target {
        pid: o.liveness.pid().unwrap_or(0),
        started_at: o.started_at.unwrap_or_else(SystemTime::now),
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

/// The give-up line: the original's shape when the budget ran out.
fn gave_up_message(id: &StreamId, reason: &str, max: u32) -> String {
    if reason.starts_with("max restart limit") || reason.is_empty() {
        format!("Worker {id} has reached max restart limit ({max})")
    } else {
        format!("Worker {id} gave up: {reason}")
    }
}

/// Writes state changes and actions to monitor.log and the event log.
pub struct Recorder<'a> {
    pub logger: &'a Logger,
    pub events: EventLog,
}

impl Recorder<'_> {
    pub fn event(&self, record: EventRecord) {
        if let Err(e) = self.events.append(&record) {
            self.logger.write_file(
                Level::Error,
                &format!("Cannot write {}: {e}", self.events.path().display()),
            );
        }
    }

    pub fn changes(&self, plan: &Plan) {
        for change in &plan.changes {
            self.change(change);
        }
        for refused in &plan.refused {
            self.logger.error(&format!(
                "State machine refused a transition ({refused}); state left as it was"
            ));
        }
    }

    pub fn change(&self, c: &Change) {
        let why = reason_of(&c.to);
        let suffix = why.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        // Transitions go to the file and the event log; the console keeps the
        // original's lines.
        let line = format!(
            "Worker {} state {} -> {}{suffix}",
            c.stream,
            c.from.kind().name(),
            c.to.kind().name()
        );
        self.logger.write_file(Level::Info, &line);
        let pid = match &c.to {
            Lifecycle::Running { pid, .. } | Lifecycle::Starting { pid, .. } => Some(*pid),
            _ => None,
        };
        let attempt = match &c.to {
            Lifecycle::Restarting { attempt } => Some(*attempt),
            _ => None,
        };
        self.event(EventRecord {
            from: Some(c.from.kind().name().into()),
            to: Some(c.to.kind().name().into()),
            reason: why.or_else(|| Some(c.event.to_string())),
            pid,
            attempt,
            ..EventRecord::new("transition", Some(c.stream.as_str()))
        });
    }
}

fn reason_of(state: &Lifecycle) -> Option<String> {
    match state {
        Lifecycle::Unhealthy { reason, .. }
        | Lifecycle::Backoff { reason, .. }
        | Lifecycle::GaveUp { reason } => Some(reason.clone()),
        Lifecycle::Paused { by } | Lifecycle::Stopped { by } => Some(format!("by {by}")),
        Lifecycle::WaitingOnDeps { waiting } => Some(format!("waiting on {}", waiting.join(", "))),
        _ => None,
    }
}

struct Actor<'a> {
    layout: &'a Layout,
    settings: &'a TickSettings,
    logger: &'a Logger,
    store: &'a StateStore,
    recorder: &'a Recorder<'a>,
    initiative: &'a Initiative,
    template: Option<String>,
    /// Give-up events of this tick's restarts, for the notify hook.
    gave_up: Vec<EventRecord>,
}

impl Actor<'_> {
    fn lock_stream(&self, id: &StreamId) -> Option<lock::FileLock> {
        let wait = self.settings.spawn_wait + Duration::from_secs(3);
        match lock::lock_within(&self.layout.stream_lock(id), wait) {
            Ok(Some(held)) => Some(held),
            Ok(None) => {
                self.logger.warning(&format!(
                    "Stream {id} is locked by another monitor; left to it this time"
                ));
                None
            }
            Err(e) => {
                self.logger.error(&format!("Cannot lock stream {id}: {e}"));
                None
            }
        }
    }

    fn remove_stale(&self, obs: &Observed) {
        let Some(_held) = self.lock_stream(&obs.view.id) else {
            return;
        };
        let (pid_file, liveness) = recheck(self.layout, self.store, &obs.view.id);
        remove_if_stale(
            self.layout,
            self.logger,
            &self.recorder.events,
            &obs.view.id,
            &pid_file,
            &liveness,
        );
    }

    /// Restarts a dead stream if policy still allows once its lock is held.
    /// Restarts a failing stream if policy still allows once its lock is
    /// held. A stuck worker (running, failing liveness) is stopped gracefully
    /// first: a soft reset, with a retry context added to the new prompt.
    fn restart(&mut self, obs: &Observed) -> Option<(Option<Child>, Option<Watched>)> {
        let id = &obs.view.id;
        let _held = self.lock_stream(id)?;
        let (pid_file, liveness) = recheck(self.layout, self.store, id);
        let stuck = match (&obs.verdict, &liveness) {
            (Verdict::Unhealthy { pid: seen, .. }, Liveness::Running { pid, start_ticks })
                if seen == pid =>
            {
                Some((*pid, *start_ticks))
            }
            (_, Liveness::Running { pid, .. }) => {
                self.logger.info(&format!("Worker {id} is running again (PID: {pid}), started meanwhile by another monitor"));
                return None;
            }
            _ => None,
        };
        if stuck.is_none() {
            remove_if_stale(
                self.layout,
                self.logger,
                &self.recorder.events,
                id,
                &pid_file,
                &liveness,
            );
        }
        let reason = match &obs.verdict {
            Verdict::Dead { reason } | Verdict::Unhealthy { reason, .. } => reason.clone(),
            _ => return None,
        };
        let max = policy::effective(obs.policy, &self.settings.plan.policy).max_restarts;
        let log_path = match obs.kind {
            ComponentKind::Worker => self.layout.log_file(id, &self.initiative.id),
            _ => component::log_path(self.layout, id),
        };
        let tail = logtail::tail(&log_path, 8192).unwrap_or_default();
        let signature = selfheal::signature::signature(obs.exit_code, None, &reason, &tail);
        let shown = format!("{}: {}", signature.class, signature.text);
        let request = RestartRequest {
            id,
            completed_tasks: obs.view.progress.completed,
            exit_code: obs.exit_code,
            reason: &reason,
            policy: obs.policy,
            signature: Some((&signature.fingerprint, &shown)),
        };
        let mut changes = Plan::default();
        let now = now_ms();
        let begun = self.store.update(|s| {
            plan::begin_restart(
                s,
                &request,
                &self.settings.plan,
                now,
                jitter(),
                &mut changes,
            )
        });
        self.recorder.changes(&changes);
        let (begin, state) = match begun {
            Err(e) => {
                self.logger.error(&format!(
                    "Not restarting worker {id}: cannot record the restart: {e}"
                ));
                return None;
            }
            Ok((begin, state, _)) => (begin, state),
        };
        let st = state.streams.get(id.as_str()).cloned().unwrap_or_default();
        let attempt = match begin {
            Begin::Go { attempt } => attempt,
            Begin::Skip => return None,
            Begin::GaveUp => {
                if let Some((pid, start_ticks)) = stuck {
                    let _ = stop_running(
                        self.logger,
                        self.recorder,
                        id,
                        pid,
                        start_ticks,
                        self.settings.grace,
                    );
                }
                let why = match &st.lifecycle {
                    Lifecycle::GaveUp { reason } => reason.clone(),
                    _ => String::new(),
                };
                let message = gave_up_message(id, &why, max);
                self.logger.action(Level::Warning, &message);
                self.record_attempt(
                    obs,
                    st.restarts_total + 1,
                    "give_up",
                    &reason,
                    &signature,
                    &tail,
                );
                let event = EventRecord {
                    reason: Some(why),
                    ..EventRecord::new("gave_up", Some(id.as_str()))
                };
                self.recorder.event(event.clone());
                self.gave_up.push(event);
                return None;
            }
        };
        let action = if stuck.is_some() {
            "soft_reset"
        } else {
            "restart"
        };
        if let Some((pid, start_ticks)) = stuck {
            self.logger.action(
                Level::Warning,
                &format!(
                    "Worker {id} (PID {pid}) is stuck: {reason}; stopping it for a soft reset"
                ),
            );
            if let Err(e) = stop_running(
                self.logger,
                self.recorder,
                id,
                pid,
                start_ticks,
                self.settings.grace,
            ) {
                self.logger.error(&format!(
                    "Cannot stop stuck worker {id}: {e}; not starting a second one"
                ));
                return None;
            }
        }
        self.logger.action(
            Level::Info,
            &format!("Restarting worker {id} (attempt {attempt}/{max})"),
        );
        self.record_attempt(obs, st.restarts_total, action, &reason, &signature, &tail);
        self.recorder.event(EventRecord {
            reason: Some(reason.clone()),
            attempt: Some(attempt),
            exit: obs.exit_code.map(|c| format!("exit code {c}")),
            ..EventRecord::new(action, Some(id.as_str()))
        });
        let lines = logtail::last_lines(&tail, 20);
        let context = selfheal::retry_context(attempt, &reason, &signature.class, &lines);
        self.launch(obs, (obs.kind == ComponentKind::Worker).then_some(context))
    }

    /// A stuck worker whose stream just gave up is stopped, not left hanging.
    fn stop_given_up(&self, obs: &Observed) {
        let id = &obs.view.id;
        let Some(_held) = self.lock_stream(id) else {
            return;
        };
        if let (
            Verdict::Unhealthy { pid, .. },
            (
                _,
                Liveness::Running {
                    pid: now,
                    start_ticks,
                },
            ),
        ) = (&obs.verdict, recheck(self.layout, self.store, id))
        {
            if *pid == now {
                self.logger.action(
                    Level::Warning,
                    &format!("Stopping stuck worker {id} (PID {pid}): its stream gave up"),
                );
                let _ = stop_running(
                    self.logger,
                    self.recorder,
                    id,
                    now,
                    start_ticks,
                    self.settings.grace,
                );
            }
        }
    }

    /// Leaves `state/self_heal/<stream>/attempt-<n>.json` for the operator.
    fn record_attempt(
        &self,
        obs: &Observed,
        n: u32,
        action: &str,
        reason: &str,
        signature: &selfheal::signature::Signature,
        tail: &str,
    ) {
        let dir = self
            .layout
            .state_dir()
            .join("self_heal")
            .join(obs.view.id.as_str());
        let lines: Vec<&str> = logtail::last_lines(tail, 40);
        let record = serde_json::json!({
            "time": crate::report::log::timestamp(),
            "stream": obs.view.id.as_str(),
            "attempt": n,
            "action": action,
            "reason": selfheal::redact::redact(reason),
            "class": signature.class,
            "signature": signature.text,
            "fingerprint": signature.fingerprint,
            "exit_status": obs.exit_code.map(|c| format!("exit code {c}")),
            "log_tail": selfheal::redact::redact_lines(&lines),
        });
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            let path = dir.join(format!("attempt-{n}.json"));
            let tmp = dir.join(format!(".attempt-{n}.json.tmp"));
            std::fs::write(
                &tmp,
                serde_json::to_string_pretty(&record).expect("json") + "\n",
            )?;
            std::fs::rename(tmp, path)
        });
        if let Err(e) = written {
            self.logger.error(&format!(
                "Cannot write self-heal record in {}: {e}",
                dir.display()
            ));
        }
    }

    /// Spawns the worker of a stream whose restart is charged and recorded
    /// as begun, and records how it went.
    fn launch(
        &mut self,
        obs: &Observed,
        retry_context: Option<String>,
    ) -> Option<(Option<Child>, Option<Watched>)> {
        let id = &obs.view.id;
        let noun = if obs.kind == ComponentKind::Worker {
            "Worker"
        } else {
            "Component"
        };
        let result = self.start(obs, retry_context);
        let outcome = match &result {
            Ok(started) => Ok(Remembered {
                pid: started.pid,
                start_ticks: started.start_ticks,
                pid_file_mtime: std::fs::metadata(self.layout.pid_file(id))
                    .and_then(|m| m.modified())
                    .map(identity::secs)
                    .unwrap_or_else(|_| now_ms() / 1000),
            }),
            Err(e) => Err(e.clone()),
        };
        let mut changes = Plan::default();
        let finished = self
            .store
            .update(|s| plan::finish_restart(s, id, outcome.clone(), now_ms(), &mut changes));
        if let Err(e) = &finished {
            self.logger
                .error(&format!("Cannot record the restart of {id}: {e}"));
        }
        match result {
            Ok(started) => {
                self.logger.action(
                    Level::Success,
                    &format!("{noun} {id} restarted (PID: {})", started.pid),
                );
                self.recorder.changes(&changes);
                let watched = started.watch.then(|| Watched {
                    stream: id.clone(),
                    pid: started.pid,
                    start_ticks: started.start_ticks,
                });
                Some((started.child, watched))
            }
            Err(e) => {
                let next = finished
                    .ok()
                    .and_then(|(_, state, _)| {
                        state
                            .streams
                            .get(id.as_str())
                            .and_then(|s| s.next_attempt_ms)
                    })
                    .filter(|t| *t > now_ms())
                    .map(|t| {
                        format!(
                            "; next attempt in {}s at the earliest",
                            t.saturating_sub(now_ms()).div_ceil(1000)
                        )
                    })
                    .unwrap_or_default();
                self.logger.action(
                    Level::Error,
                    &format!("Failed to restart {} {id}: {e}{next}", noun.to_lowercase()),
                );
                self.recorder.changes(&changes);
                None
            }
        }
    }

    /// Starts the component the way its kind is started.
    fn start(&mut self, obs: &Observed, retry_context: Option<String>) -> Result<Launched, String> {
        let id = &obs.view.id;
        match &obs.kind {
            ComponentKind::Worker => {
                let call = self.wrapper_call(obs, retry_context);
                let started =
                    spawn_worker(&call, self.settings.spawn_wait).map_err(|e| e.to_string())?;
                Ok(Launched {
                    pid: started.pid,
                    start_ticks: started.start_ticks,
                    child: Some(started.child),
                    watch: true,
                })
            }
            ComponentKind::Process { command, cwd, env } => {
                let log = component::log_path(self.layout, id);
                let (pid, start_ticks, child) =
                    component::spawn_process(command, cwd, env, &self.layout.pid_file(id), &log)?;
                Ok(Launched {
                    pid,
                    start_ticks,
                    child: Some(child),
                    watch: true,
                })
            }
            ComponentKind::Docker { container } => {
                let pid = component::docker_restart(container, Duration::from_secs(60))?;
                Ok(Launched {
                    pid,
                    start_ticks: 0,
                    child: None,
                    watch: false,
                })
            }
        }
    }

    /// First start of a process component the daemon owns (not a restart:
    /// nothing is charged to its budget).
    fn start_owned(&mut self, obs: &Observed) -> Option<(Option<Child>, Option<Watched>)> {
        let id = &obs.view.id;
        let started = match self.start(obs, None) {
            Ok(s) => s,
            Err(e) => {
                self.logger
                    .action(Level::Error, &format!("Cannot start component {id}: {e}"));
                return None;
            }
        };
        let mut changes = Plan::default();
        let now = now_ms();
        let worker = Remembered {
            pid: started.pid,
            start_ticks: started.start_ticks,
            pid_file_mtime: now / 1000,
        };
        let recorded = self.store.update(|s| {
            let st = s.streams.entry(id.to_string()).or_default();
            st.worker = Some(worker);
            let started_up = lifecycle::Event::Observed(Verdict::StartingUp { pid: started.pid });
            let _ = plan::apply_event(st, id, started_up, now, &mut changes);
        });
        if let Err(e) = recorded {
            self.logger
                .error(&format!("Cannot record the start of {id}: {e}"));
        }
        self.recorder.changes(&changes);
        self.logger.action(
            Level::Success,
            &format!("Component {id} started (PID: {})", started.pid),
        );
        let watched = started.watch.then(|| Watched {
            stream: id.clone(),
            pid: started.pid,
            start_ticks: started.start_ticks,
        });
        Some((started.child, watched))
    }

    fn wrapper_call(&mut self, obs: &Observed, retry_context: Option<String>) -> WrapperCall {
        let id = &obs.view.id;
        let template = self
            .template
            .get_or_insert_with(|| prompt::load_template(&self.layout.prompt_override()));
        let work_dir = self.layout.work_dir(id);
        let deps: Vec<String> = obs
            .view
            .dependencies
            .iter()
            .map(|d| d.to_string())
            .collect();
        let mut prompt = prompt::render(
            template,
            &PromptFacts {
                stream_id: id.as_str(),
                stream_name: &obs.view.name,
                dependencies: &deps,
                initiative_id: &self.initiative.id,
                work_dir: &work_dir,
            },
        );
        if let Some(context) = retry_context {
            prompt.push_str("\n\n");
            prompt.push_str(&context);
        }
        if let Err(e) = std::fs::create_dir_all(self.layout.pids_dir()) {
            self.logger.error(&format!(
                "Cannot create {}: {e}",
                self.layout.pids_dir().display()
            ));
        }
        WrapperCall {
            wrapper: self.layout.wrapper(),
            stream: id.to_string(),
            pid_file: self.layout.pid_file(id),
            log_dir: self.layout.logs_dir(),
            work_dir,
            initiative_id: self.initiative.id.clone(),
            prompt,
        }
    }
}

/// Reads a stream's PID file again and judges it (used under the stream lock).
pub fn recheck(layout: &Layout, store: &StateStore, id: &StreamId) -> (PidFile, Liveness) {
    let pid_file = pidfile::read(&layout.pid_file(id), procinfo::pid_max());
    let facts = match &pid_file {
        PidFile::Pid { pid, .. } => procinfo::inspect(*pid),
        _ => None,
    };
    let remembered = store
        .load()
        .0
        .streams
        .get(id.as_str())
        .and_then(|s| s.worker);
    let liveness = judge_with_memory(
        &pid_file,
        facts.as_ref(),
        procinfo::current_uid(),
        remembered.as_ref(),
    );
    (pid_file, liveness)
}

/// The PID file's verdict, unless the file no longer names the worker the
/// monitor last saw running and that very process (same PID, same start
/// time, ours, not a zombie) still runs: a PID file overwritten or removed
/// under a live worker must never lead to a second worker beside it.
pub fn judge_with_memory(
    pid_file: &PidFile,
    facts: Option<&procinfo::ProcFacts>,
    our_uid: u32,
    remembered: Option<&Remembered>,
) -> Liveness {
    let judged = judge(pid_file, facts, our_uid, remembered);
    if judged.is_running() {
        return judged;
    }
    match remembered {
        Some(r)
            if procinfo::inspect(r.pid).is_some_and(|f| {
                !f.is_zombie() && f.uid == our_uid && f.start_ticks == r.start_ticks
            }) =>
        {
            Liveness::Running {
                pid: r.pid,
                start_ticks: r.start_ticks,
            }
        }
        _ => judged,
    }
}

/// Removes a PID file judged stale, if it is still the file that was judged.
pub fn remove_if_stale(
    layout: &Layout,
    logger: &Logger,
    events: &EventLog,
    id: &StreamId,
    pid_file: &PidFile,
    liveness: &Liveness,
) {
    let (
        Liveness::Stale { reason },
        PidFile::Pid { fingerprint, .. } | PidFile::Invalid { fingerprint, .. },
    ) = (liveness, pid_file)
    else {
        return;
    };
    let path = layout.pid_file(id);
    match pidfile::remove_if_unchanged(&path, fingerprint, procinfo::pid_max()) {
        Ok(true) => {
            logger.warning(&format!("Removed stale PID file for {id}: {reason}"));
            let _ = events.append(&EventRecord {
                reason: Some(reason.clone()),
                ..EventRecord::new("stale_pid_removed", Some(id.as_str()))
            });
        }
        Ok(false) => {}
        Err(e) => logger.error(&format!(
            "Cannot remove stale PID file {}: {e}",
            path.display()
        )),
    }
}

/// Applies one operator event to a stream's lifecycle under the state lock.
pub fn apply_operator_event(
    store: &StateStore,
    id: &StreamId,
    event: lifecycle::Event,
) -> Result<(Lifecycle, Lifecycle), String> {
    let now = now_ms();
    let (result, _, _) = store
        .update(|s| {
            let st = s.streams.entry(id.to_string()).or_default();
            let from = st.lifecycle.clone();
            let to = lifecycle::transition(&from, &event, now).map_err(|e| e.to_string())?;
            st.lifecycle = to.clone();
            Ok((from, to))
        })
        .map_err(|e| e.to_string())?;
    result
}

/// An operator's `restart STREAM`: under the stream's lock, stop the worker
/// gracefully if it runs, clear the restart budget, and start it afresh.
/// Returns the new worker's PID.
pub fn operator_restart(
    layout: &Layout,
    settings: &TickSettings,
    logger: &Logger,
    store: &StateStore,
    snapshot: &Snapshot,
    id: &StreamId,
    grace: Duration,
) -> Result<i32, String> {
    let obs = snapshot
        .streams
        .iter()
        .find(|o| &o.view.id == id)
        .ok_or_else(|| format!("unknown stream {id}"))?;
    let recorder = Recorder {
        logger,
        events: EventLog::new(&layout.logs_dir().join("events.jsonl")),
    };
    let mut actor = Actor {
        layout,
        settings,
        logger,
        store,
        recorder: &recorder,
        initiative: &snapshot.initiative,
        template: None,
        gave_up: Vec::new(),
    };
    let _held = actor
        .lock_stream(id)
        .ok_or_else(|| format!("stream {id} is locked by another monitor; try again"))?;
    // Ask the state machine first: a paused stream must not lose its worker.
    let current = store
        .load()
        .0
        .streams
        .get(id.as_str())
        .map(|s| s.lifecycle.clone())
        .unwrap_or_default();
    lifecycle::transition(&current, &lifecycle::Event::OperatorRestart, now_ms())
        .map_err(|e| format!("cannot restart {id}: {e} (resume it first if it is paused)"))?;
    let (pid_file, liveness) = recheck(layout, store, id);
    if let Liveness::Running { pid, start_ticks } = liveness {
        stop_running(logger, &recorder, id, pid, start_ticks, grace)?;
    }
    remove_if_stale(layout, logger, &recorder.events, id, &pid_file, &liveness);
    let now = now_ms();
    let mut changes = Plan::default();
    let by = crate::report::events::operator();
    store
        .update(|s| {
            let st = s.streams.entry(id.to_string()).or_default();
            st.restarts = 0;
            st.streak = 0;
            st.next_attempt_ms = None;
            st.restarts_total += 1;
            st.last_restart_ms = Some(now);
            st.last_restart_reason = Some(format!("operator restart by {by}"));
            plan::apply_event(st, id, lifecycle::Event::OperatorRestart, now, &mut changes)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?
        .0?;
    recorder.changes(&changes);
    logger.action(
        Level::Info,
        &format!("Restarting worker {id} (operator restart by {by})"),
    );
    recorder.event(EventRecord {
        by: Some(by),
        ..EventRecord::new("operator_restart", Some(id.as_str()))
    });
    actor
        .launch(obs, None)
        .ok_or_else(|| format!("worker {id} did not start; see monitor.log"))?;
    let (_, liveness) = recheck(layout, store, id);
    Ok(liveness.pid().unwrap_or(0))
}

/// Stops a running worker gracefully, logging every signal.
pub fn stop_running(
    logger: &Logger,
    recorder: &Recorder<'_>,
    id: &StreamId,
    pid: i32,
    start_ticks: u64,
    grace: Duration,
) -> Result<(), String> {
    use crate::process::stop::{stop_worker, StopOutcome};
    let mut notes = Vec::new();
    let outcome = stop_worker(pid, Some(start_ticks), grace, &mut |n| notes.push(n))
        .map_err(|e| e.to_string())?;
    for n in &notes {
        logger.info(&format!("Worker {id}: {n}"));
    }
    let (level, text) = match &outcome {
        StopOutcome::AlreadyGone => (
            Level::Info,
            format!("Worker {id} (PID {pid}) was already gone"),
        ),
        StopOutcome::Terminated => (Level::Success, format!("Worker {id} (PID {pid}) stopped")),
        StopOutcome::Killed { pids } => (
            Level::Warning,
            format!(
                "Worker {id} (PID {pid}) ignored SIGTERM for {}s; killed {}",
                grace.as_secs_f64(),
                pids.len()
            ),
        ),
        StopOutcome::Survived { pids } => (
            Level::Error,
            format!("Worker {id}: processes {pids:?} survived SIGKILL"),
        ),
    };
    logger.action(level, &text);
    recorder.event(EventRecord {
        pid: Some(pid),
        reason: Some(text.clone()),
        ..EventRecord::new("stop", Some(id.as_str()))
    });
    match outcome {
        StopOutcome::Survived { .. } => Err(text),
        _ => Ok(()),
    }
}

/// On daemon shutdown: stops the process components the daemon owns and
/// marks them not started, so the next daemon starts them afresh.
pub fn stop_owned_components(
    layout: &Layout,
    settings: &TickSettings,
    logger: &Logger,
    store: &StateStore,
) {
    let recorder = Recorder {
        logger,
        events: EventLog::new(&layout.logs_dir().join("events.jsonl")),
    };
    for c in component::declared(&settings.config, layout) {
        if !matches!(c.kind, ComponentKind::Process { .. }) {
            continue;
        }
        let (pid_file, liveness) = recheck(layout, store, &c.id);
        if let Liveness::Running { pid, start_ticks } = liveness {
            if let Err(e) = stop_running(logger, &recorder, &c.id, pid, start_ticks, settings.grace)
            {
                logger.error(&format!("Cannot stop component {}: {e}", c.id));
                continue;
            }
        }
        if let PidFile::Pid { fingerprint, .. } = &pid_file {
            let _ = pidfile::remove_if_unchanged(
                &layout.pid_file(&c.id),
                fingerprint,
                procinfo::pid_max(),
            );
        }
        let now = now_ms();
        let _ = store.update(|s| {
            let st = s.streams.entry(c.id.to_string()).or_default();
            if let Ok(to) = lifecycle::transition(
                &st.lifecycle,
                &lifecycle::Event::Observed(Verdict::NeverStarted),
                now,
            ) {
                st.lifecycle = to;
            }
        });
    }
}
