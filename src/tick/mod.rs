//! One check of every stream, as five named steps: observe (databases, PID
//! files, /proc, logs, probes) → plan (pure, in `supervise`, under the state
//! lock) → announce (what scripts grep for, and state changes) → act (remove
//! stale PID files, restart, stop) → record (metrics, give-up hooks, the next
//! wake-up). A one-shot run is one tick; the daemon runs ticks in a loop.
//! The operator verbs reuse the same act and record halves (`operator`).

pub mod act;
pub mod observe;
pub mod operator;
pub mod record;
pub mod recover;

use crate::process::detach::Child;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use crate::clock::now_ms;
use crate::config::ConfigFile;
use crate::layout::{Layout, StreamId};
use crate::report::log::{Kind, Level, Logger};
use crate::state::StateStore;
use crate::store::StoreError;
use crate::supervise::assess::Verdict;
use crate::supervise::lifecycle::Lifecycle;
use crate::supervise::model::{GiveUp, State};
use crate::supervise::plan::{self, Changes, Plan, PlanSettings};
use crate::supervise::stream_map::StreamMap;

pub use observe::{take_snapshot, Observed, ProbeMode, Snapshot, SnapshotMemory, TcSnapshot};
pub use record::Recorder;

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
    /// Ticks of the daemon: "All workers healthy" is said on the console
    /// only with monitor.log (after a change, or hourly), not every check.
    pub daemon: bool,
    /// Run with the event as JSON on stdin when a stream gives up.
    pub on_give_up: Option<String>,
    /// Send metrics to this (loopback) StatsD address too.
    pub statsd: Option<std::net::SocketAddr>,
    /// `--recover-tasks`: after each tick, put tasks of dead or given-up
    /// streams left `in_progress` longer than this back to `pending`.
    pub recover_tasks: Option<Duration>,
    /// `--start-ready`: tc streams with a task ready and no worker are
    /// started (once their dependencies' branches are merged).
    pub start_ready: bool,
}

/// What outlives one tick in the daemon: messages already said, so a data
/// problem is warned about once rather than every interval.
#[derive(Debug, Default)]
pub struct TickMemory {
    said: HashSet<String>,
    /// What the last look at the project keeps for the next: the databases'
    /// read, dead workers' logs, pinned workers' facts.
    pub snapshot: SnapshotMemory,
    /// Where the daemon takes the wrappers a tick spawns as soon as each
    /// is spawned (not when the tick ends), so it reaps them at once.
    pub handoff: Option<Handoff>,
    /// The process ends after this tick (a one-shot check).
    ends_process: bool,
}

/// Wrappers spawned by a tick still running, for the daemon to reap.
pub type Handoff = std::sync::Arc<std::sync::Mutex<Vec<(StreamId, Child)>>>;

impl TickMemory {
    /// The memory of a tick after which the process ends: what the tick
    /// looked at is left for the exit to take back whole instead of being
    /// taken apart piece by piece (10 000 streams' observations freed one
    /// by one are 2% of a one-shot check).
    pub fn for_last_tick() -> TickMemory {
        TickMemory {
            ends_process: true,
            ..TickMemory::default()
        }
    }

    /// Logs `msg` unless this memory said it already.
    pub fn once(&mut self, logger: &Logger, level: Level, kind: Kind, msg: String) {
        if self.said.insert(msg.clone()) {
            logger.log(level, kind, &msg);
        }
    }
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
    pub dead: Vec<StreamId>,
    /// Running but failing a liveness probe (stuck).
    pub unhealthy: Vec<StreamId>,
    /// tc streams whose workers cannot be told (exit 3 when nothing worse).
    pub cannot_tell: Vec<StreamId>,
    pub running: Vec<Watched>,
    /// Wrappers this tick spawned (the daemon reaps them).
    pub spawned: Vec<(StreamId, Child)>,
    /// When a deferred restart becomes due (the daemon wakes then).
    pub next_due_ms: Option<u64>,
    /// Notify hooks still running (a one-shot waits for them, bounded).
    pub hooks: Vec<std::thread::JoinHandle<()>>,
}

/// What the plan step decided, and what it left of the streams observed
/// failing (the ones the announcements speak of).
#[derive(Debug)]
pub struct Decided {
    pub plan: Plan,
    pub failing: Failing,
    /// The plan changed some stream's lifecycle.
    pub changed: bool,
}

/// What the announcements need of the state after the plan: each failing
/// stream's lifecycle and give-up (not a copy of its whole record: 2 000
/// dead streams of 10 000 made that 1.9 MB; a hash map of them half a
/// megabyte), and when "All workers healthy" was last logged.
#[derive(Debug, Default)]
pub struct Failing {
    pub streams: StreamMap<(Lifecycle, Option<GiveUp>)>,
    pub healthy_logged_ms: Option<u64>,
}

impl Failing {
    /// The streams of `snapshot` observed dead or unhealthy, as `state` has them.
    fn of(state: &State, snapshot: &Snapshot) -> Failing {
        // The snapshot's streams come in id order, so the list is a map as
        // it is; kept for the rest of the check, so no spare room either.
        let mut streams: Vec<_> = snapshot
            .streams
            .iter()
            .filter(|o| matches!(o.verdict, Verdict::Dead { .. } | Verdict::Unhealthy { .. }))
            .filter_map(|o| {
                let id = o.view.id.as_str();
                let st = state.streams.get(id)?;
                Some((
                    id.to_string(),
                    (st.lifecycle.clone(), st.history().gave_up.clone()),
                ))
            })
            .collect();
        streams.shrink_to_fit();
        Failing {
            streams: StreamMap::from_sorted(streams),
            healthy_logged_ms: state.healthy_logged_ms,
        }
    }

    /// Whether an operator holds the failing stream `id` (paused or stopped):
    /// its worker not running is the operator's doing, reported but neither
    /// dead nor restarted.
    pub fn held(&self, id: &StreamId) -> bool {
        self.held_in_order(id, &mut 0)
    }

    /// [`Failing::held`] in a walk over streams in id order (`cursor`: 0 at
    /// the start of the walk; see `StreamMap::get_in_order`).
    pub fn held_in_order(&self, id: &StreamId, cursor: &mut usize) -> bool {
        self.streams
            .get_in_order(id.as_str(), cursor)
            .is_some_and(|(lifecycle, _)| lifecycle.is_held())
    }
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
    let started = Instant::now();
    let probes = ProbeMode::Run(&settings.config);
    // The state is read once here and again only if another monitor writes
    // before the plan step.
    let known = observe::KnownState::Store(store);
    let reads = &mut memory.snapshot;
    let observed = observe::take_snapshot_of(layout, settings.busy_timeout, known, probes, reads);
    let Some(snapshot) = observed? else {
        let msg = "No active initiative found".to_string();
        memory.once(logger, Level::Warning, Kind::Report, msg);
        return Ok(TickReport::default());
    };
    // The original's line, on every run; the daemon says it again only when
    // the active initiative changes.
    let monitoring = format!("Monitoring initiative: {}", snapshot.initiative.name);
    memory.once(logger, Level::Info, Kind::Report, monitoring);
    let recorder = Recorder::new(layout, logger);
    let decided = decide(&snapshot, store, settings, &recorder);
    let healthy = record::announce(&recorder, memory, settings, &snapshot, &decided);
    record::note_healthy_line(store, &decided.failing, healthy);
    let mut actor = act::Actor::new(layout, settings, store, &recorder, &snapshot.initiative)
        .with_tc(snapshot.tc.as_ref());
    actor.handoff = memory.handoff.clone();
    let acted = act::carry_out(&actor, &snapshot, &decided.plan);
    if let Some(older_than) = settings.recover_tasks {
        let scope = recover::Scope {
            source: &snapshot.source,
            initiative: &snapshot.initiative,
            observed: &snapshot.streams,
        };
        recover::after_tick(&scope, store, &recorder, older_than, settings.busy_timeout);
    }
    let give_ups: Vec<(StreamId, GiveUp)> = decided
        .plan
        .gave_up
        .iter()
        .cloned()
        .chain(acted.gave_up.iter().cloned())
        .collect();
    let hooks = record::gave_up(&recorder, memory, settings, &give_ups);
    let next_due_ms = store.view(|state| record::next_wake(&snapshot, state, &decided.plan));
    record::metrics(&recorder, memory, settings, store, started.elapsed());
    // The ids come in id order, as the snapshot has them.
    let unheld = |ids: Vec<StreamId>| -> Vec<StreamId> {
        let mut cursor = 0;
        ids.into_iter()
            .filter(|id| !decided.failing.held_in_order(id, &mut cursor))
            .collect()
    };
    let report = TickReport {
        dead: unheld(snapshot.dead()),
        unhealthy: unheld(snapshot.unhealthy()),
        cannot_tell: snapshot.cannot_tell(),
        running: acted.running,
        spawned: acted.spawned,
        next_due_ms,
        hooks,
    };
    if memory.ends_process {
        std::mem::forget(snapshot);
        std::mem::forget(decided);
    }
    Ok(report)
}

/// The plan step: advances the shared state by this tick's observations
/// under the state lock and journals the changes. When the state cannot be
/// written, no restart happens this time: without a recorded budget a
/// restart could repeat forever.
fn decide(
    snapshot: &Snapshot,
    store: &StateStore,
    settings: &TickSettings,
    recorder: &Recorder<'_>,
) -> Decided {
    // Each observation is made as the plan takes it: 10 000 of them held at
    // once would be 2.3 MB.
    let observations = || snapshot.streams.iter().map(observe::observation);
    let now = now_ms();
    let mut changes = Changes::default();
    let planned = store.update(|s| {
        changes = Changes::default();
        let plan = plan::plan_tick(s, observations(), &settings.plan, now, &mut changes);
        Decided {
            plan,
            failing: Failing::of(s, snapshot),
            changed: !changes.changes.is_empty(),
        }
    });
    let decided = match planned {
        Ok(decided) => decided,
        Err(e) => {
            recorder.logger.error(&format!(
                "Cannot record this check in the state file: {e}; no restart this time"
            ));
            let mut state = store.load();
            changes = Changes::default();
            let mut plan = plan::plan_tick(
                &mut state,
                observations(),
                &settings.plan,
                now,
                &mut changes,
            );
            plan.restarts.clear();
            Decided {
                plan,
                failing: Failing::of(&state, snapshot),
                changed: !changes.changes.is_empty(),
            }
        }
    };
    recorder.changes(&changes);
    decided
}

/// Random spread for backoff delays, without a random-number crate: the
/// standard library seeds every `RandomState` afresh.
pub(crate) fn jitter() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}
