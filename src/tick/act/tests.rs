//! Act's decisions against a fake process table: what is spawned, stopped or
//! left alone, and what the state and the log say afterwards. The files
//! (PID files, state, monitor.log) are real, in a temporary project.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::*;
use crate::process::identity::Remembered;
use crate::process::pidfile::PidFile;
use crate::process::procinfo::{self, ProcFacts};
use crate::process::proof::SpawnSession;
use crate::process::spawn::WrapperCall;
use crate::process::stop::StopOutcome;
use crate::report::log::Logger;
use crate::store::{Progress, SchemaKind, TaskSource};
use crate::supervise::lifecycle::{Kind, Lifecycle};
use crate::supervise::policy::RestartPolicy;
use crate::supervise::streams::StreamView;
use crate::tick::{Snapshot, TickSettings};

/// A RefCell-like cell the restart pool's threads can share.
#[derive(Default)]
struct Shared<T>(Mutex<T>);

impl<T> Shared<T> {
    fn borrow(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap()
    }
    fn borrow_mut(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap()
    }
}

/// Processes that exist only in this table.
#[derive(Default)]
struct FakeProcesses {
    table: Shared<BTreeMap<i32, ProcFacts>>,
    spawned: Shared<Vec<WrapperCall>>,
    stopped: Shared<Vec<i32>>,
    /// The PID the next spawn writes into its PID file; None: it fails
    /// (no PID file in time).
    next_pid: Option<i32>,
    /// Live processes that are no stream's worker (fail the proof).
    strangers: Shared<Vec<i32>>,
    /// Spawns fail at once: the wrapper is missing.
    wrapper_missing: bool,
}

impl FakeProcesses {
    fn live(&self, pid: i32) {
        self.table.borrow_mut().insert(
            pid,
            ProcFacts {
                pid,
                state: 'S',
                start_ticks: pid as u64 * 10,
                started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
                uid: procinfo::current_uid(),
                ppid: 1,
                pgrp: pid,
                session: pid,
                kernel_thread: false,
            },
        );
    }
}

impl Processes for FakeProcesses {
    fn spawn_worker(&self, call: &WrapperCall, _wait: Duration) -> Result<Launched, SpawnError> {
        self.spawned.borrow_mut().push(call.clone());
        if self.wrapper_missing {
            return Err(SpawnError::WrapperMissing(call.wrapper.clone()));
        }
        let Some(pid) = self.next_pid else {
            return Err(SpawnError::NoPidFile(_wait));
        };
        self.live(pid);
        std::fs::write(&call.pid_file, format!("{pid}\n")).unwrap();
        Ok(Launched {
            pid,
            start_ticks: pid as u64 * 10,
            child: None,
            watch: true,
            session: None,
        })
    }
    fn stop(
        &self,
        _state_dir: &std::path::Path,
        pid: i32,
        _start_ticks: u64,
        _grace: Duration,
        note: &mut dyn FnMut(String),
    ) -> Result<StopOutcome, StopRefused> {
        self.stopped.borrow_mut().push(pid);
        self.table.borrow_mut().remove(&pid);
        note(format!("SIGTERM to {pid}"));
        Ok(StopOutcome::Terminated)
    }
    fn stop_worker(
        &self,
        who: &WorkerOf<'_>,
        pid: i32,
        start_ticks: u64,
        grace: Duration,
        note: &mut dyn FnMut(String),
    ) -> Result<StopOutcome, StopRefused> {
        let facts = self.inspect(pid).expect("stopping a live process");
        self.prove(who, &facts, None)
            .map_err(StopRefused::NotProven)?;
        self.stop(who.state_dir, pid, start_ticks, grace, note)
    }
    fn inspect(&self, pid: i32) -> Option<ProcFacts> {
        self.table.borrow().get(&pid).cloned()
    }
    fn prove(
        &self,
        who: &WorkerOf<'_>,
        facts: &ProcFacts,
        _recorded: Option<&SpawnSession>,
    ) -> Result<(), String> {
        if self.strangers.borrow().contains(&facts.pid) {
            Err(format!(
                "PID {} is not a worker of {}: no tag, and its command line does not name it",
                facts.pid, who.stream
            ))
        } else {
            Ok(())
        }
    }
    fn recorded_session(
        &self,
        _who: &WorkerOf<'_>,
        _remembered: &Remembered,
    ) -> Option<SpawnSession> {
        None
    }
}

struct Project {
    _dir: tempfile::TempDir,
    layout: Layout,
    settings: TickSettings,
    logger: Logger,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let orch = root.join(".claude/orchestrator");
        std::fs::create_dir_all(orch.join("pids")).unwrap();
        let layout = Layout {
            project_root: root.clone(),
            orch: orch.clone(),
            workspace_id: "w".into(),
            tasks_db: root.join("tasks.db"),
            memory_db: root.join("memory.db"),
            tasks_db_given: false,
        };
        let settings = super::tests_support::settings();
        let logger = Logger::new(Some(&layout.monitor_log()), true);
        Project {
            _dir: dir,
            layout,
            settings,
            logger,
        }
    }

    fn store(&self) -> StateStore {
        StateStore::at(&self.layout.state_dir(), Logger::new(None, true))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.layout.monitor_log()).unwrap_or_default()
    }

    fn run(&self, fake: &FakeProcesses, snapshot: &Snapshot, plan: &Plan) -> Acted {
        let store = self.store();
        let recorder = Recorder::new(&self.layout, &self.logger);
        let actor = Actor::with_processes(
            &self.layout,
            &self.settings,
            &store,
            &recorder,
            &snapshot.initiative,
            fake,
        );
        carry_out(&actor, snapshot, plan)
    }
}

fn id(s: &str) -> StreamId {
    StreamId::parse(s).unwrap()
}

fn observed(s: &str, verdict: Verdict, liveness: Liveness) -> Observed {
    Observed {
        view: std::sync::Arc::new(StreamView {
            id: id(s),
            name: s.into(),
            dependencies: Vec::new(),
            progress: Progress {
                total: 1,
                pending: 1,
                ..Progress::default()
            },
            last_update: None,
        }),
        pid_file: PidFile::Missing,
        liveness,
        verdict,
        dead_log: None,
        probing: None,
        policy: None,
        kind: ComponentKind::Worker,
    }
}

fn dead(s: &str) -> Observed {
    let reason = "no PID file".to_string();
    observed(s, Verdict::Dead { reason }, Liveness::NoPidFile)
}

fn snapshot(streams: Vec<Observed>) -> Snapshot {
    Snapshot {
        initiative: Initiative {
            id: "init-0001".into(),
            name: "Init".into(),
            status: "IN PROGRESS".into(),
        },
        streams,
        warnings: Vec::new(),
        source: TaskSource {
            schema: SchemaKind::Legacy,
            tasks_db: "tasks.db".into(),
        },
        tc: None,
    }
}

/// The state a tick leaves before act: the stream is failing.
fn failing(p: &Project, s: &str) {
    p.store()
        .update_stream(&id(s), |st, _| {
            st.lifecycle = Lifecycle::Unhealthy {
                reason: "no PID file".into(),
                since_ms: 0,
            };
        })
        .unwrap();
}

fn order(s: &str, max: u32) -> Plan {
    Plan {
        restarts: vec![RestartOrder {
            id: id(s),
            policy: RestartPolicy {
                max_restarts: max,
                ..RestartPolicy::default()
            },
        }],
        ..Plan::default()
    }
}

#[test]
fn a_planned_restart_spawns_once_and_records_the_worker() {
    let p = Project::new();
    failing(&p, "A");
    let fake = FakeProcesses {
        next_pid: Some(4242),
        ..FakeProcesses::default()
    };
    let acted = p.run(&fake, &snapshot(vec![dead("A")]), &order("A", 5));
    let calls = fake.spawned.borrow();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].stream, "A");
    assert_eq!(calls[0].pid_file, p.layout.pid_file(&id("A")));
    assert_eq!(
        acted.running.iter().map(|w| w.pid).collect::<Vec<_>>(),
        [4242]
    );
    let st = p.store().stream(&id("A")).unwrap();
    assert_eq!(st.lifecycle.kind(), Kind::Starting);
    assert_eq!(st.worker.map(|w| w.pid), Some(4242));
    assert_eq!(
        st.history().spawn_intent,
        None,
        "the journal entry is closed"
    );
    let log = p.log();
    assert!(log.contains("Restarting worker A (attempt 1/5)"), "{log}");
    assert!(log.contains("Worker A restarted (PID: 4242)"), "{log}");
}

#[test]
fn a_worker_started_meanwhile_by_another_monitor_is_not_twinned() {
    let p = Project::new();
    failing(&p, "A");
    let fake = FakeProcesses {
        next_pid: Some(4242),
        ..FakeProcesses::default()
    };
    // Between the plan and the lock, another monitor started PID 777.
    fake.live(777);
    std::fs::write(p.layout.pid_file(&id("A")), "777\n").unwrap();
    let acted = p.run(&fake, &snapshot(vec![dead("A")]), &order("A", 5));
    assert!(fake.spawned.borrow().is_empty(), "no second worker");
    assert!(acted.gave_up.is_empty());
    assert!(p.log().contains("running again (PID: 777)"), "{}", p.log());
    assert_eq!(
        p.store().stream(&id("A")).unwrap().restarts,
        0,
        "nothing charged"
    );
}

#[test]
fn a_failed_spawn_backs_off_with_its_reason() {
    let p = Project::new();
    failing(&p, "A");
    let fake = FakeProcesses::default();
    let acted = p.run(&fake, &snapshot(vec![dead("A")]), &order("A", 5));
    assert!(acted.running.is_empty());
    let st = p.store().stream(&id("A")).unwrap();
    assert_eq!(st.lifecycle.kind(), Kind::Backoff);
    assert!(st
        .history()
        .last_error
        .as_deref()
        .unwrap()
        .contains("no PID file"));
    assert!(
        p.log()
            .contains("Failed to restart worker A: the wrapper wrote no PID file"),
        "{}",
        p.log()
    );
}

#[test]
fn a_spent_budget_under_the_lock_gives_up_typed_without_spawning() {
    let p = Project::new();
    failing(&p, "A");
    p.store()
        .update_stream(&id("A"), |st, _| st.restarts = 2)
        .unwrap();
    let fake = FakeProcesses {
        next_pid: Some(4242),
        ..FakeProcesses::default()
    };
    let acted = p.run(&fake, &snapshot(vec![dead("A")]), &order("A", 2));
    assert!(fake.spawned.borrow().is_empty());
    assert_eq!(acted.gave_up, [(id("A"), GiveUp::Budget { max: 2 })]);
    let st = p.store().stream(&id("A")).unwrap();
    assert_eq!(st.lifecycle.kind(), Kind::GaveUp);
    assert_eq!(st.history().gave_up, Some(GiveUp::Budget { max: 2 }));
}

#[test]
fn a_stuck_worker_is_stopped_before_its_soft_reset() {
    let p = Project::new();
    let fake = FakeProcesses {
        next_pid: Some(4243),
        ..FakeProcesses::default()
    };
    fake.live(900);
    std::fs::write(p.layout.pid_file(&id("A")), "900\n").unwrap();
    p.store()
        .update_stream(&id("A"), |st, _| {
            st.lifecycle = Lifecycle::Unhealthy {
                reason: "log idle".into(),
                since_ms: 0,
            }
        })
        .unwrap();
    let stuck = observed(
        "A",
        Verdict::Unhealthy {
            pid: 900,
            reason: "log idle".into(),
        },
        Liveness::Running {
            pid: 900,
            start_ticks: 9000,
        },
    );
    p.run(&fake, &snapshot(vec![stuck]), &order("A", 5));
    assert_eq!(*fake.stopped.borrow(), [900]);
    assert_eq!(fake.spawned.borrow().len(), 1);
    let prompt = &fake.spawned.borrow()[0].prompt;
    assert!(
        prompt.contains("log idle"),
        "retry context in the prompt: {prompt}"
    );
    assert!(p
        .log()
        .contains("is stuck: log idle; stopping it for a soft reset"));
}

#[test]
fn a_stale_pid_file_is_removed_and_a_live_one_kept() {
    let p = Project::new();
    let fake = FakeProcesses::default();
    fake.live(500);
    std::fs::write(p.layout.pid_file(&id("A")), "31999\n").unwrap();
    std::fs::write(p.layout.pid_file(&id("B")), "500\n").unwrap();
    let stale = observed(
        "A",
        Verdict::NoTasks,
        Liveness::Stale {
            reason: "process 31999 no longer exists".into(),
        },
    );
    let live = observed(
        "B",
        Verdict::Running { pid: 500 },
        Liveness::Running {
            pid: 500,
            start_ticks: 5000,
        },
    );
    let acted = p.run(&fake, &snapshot(vec![stale, live]), &Plan::default());
    assert!(!p.layout.pid_file(&id("A")).exists());
    assert!(p.layout.pid_file(&id("B")).exists());
    assert_eq!(acted.running.len(), 1);
    assert!(fake.stopped.borrow().is_empty() && fake.spawned.borrow().is_empty());
}

#[test]
fn a_stranger_named_by_a_pid_file_is_never_stopped_and_its_file_goes() {
    let p = Project::new();
    let fake = FakeProcesses {
        next_pid: Some(600),
        ..FakeProcesses::default()
    };
    fake.live(700);
    fake.strangers.borrow_mut().push(700);
    std::fs::write(p.layout.pid_file(&id("A")), "700\n").unwrap();
    p.store()
        .update_stream(&id("A"), |st, _| {
            st.lifecycle = Lifecycle::Unhealthy {
                reason: "log idle".into(),
                since_ms: 0,
            }
        })
        .unwrap();
    // Observed as running (the snapshot was taken by an older judgement):
    // under the lock it is proven again, and it is not A's worker.
    let stuck = observed(
        "A",
        Verdict::Unhealthy {
            pid: 700,
            reason: "log idle".into(),
        },
        Liveness::Running {
            pid: 700,
            start_ticks: 7000,
        },
    );
    p.run(&fake, &snapshot(vec![stuck]), &order("A", 3));
    assert!(fake.stopped.borrow().is_empty(), "the stranger was stopped");
    assert!(fake.table.borrow().contains_key(&700));
    assert!(
        p.log().contains("PID 700 is not a worker of A"),
        "{}",
        p.log()
    );
    assert_eq!(
        fake.spawned.borrow().len(),
        1,
        "A gets a worker of its own: {}",
        p.log()
    );
    assert_eq!(p.store().stream(&id("A")).unwrap().worker.unwrap().pid, 600);
}

#[test]
fn a_missing_wrapper_gives_up_at_once() {
    let p = Project::new();
    failing(&p, "A");
    let fake = FakeProcesses {
        wrapper_missing: true,
        ..FakeProcesses::default()
    };
    let acted = p.run(&fake, &snapshot(vec![dead("A")]), &order("A", 5));
    assert!(acted.running.is_empty());
    assert!(
        matches!(&acted.gave_up[..], [(s, GiveUp::Deterministic { exit: None, reason })]
            if s.as_str() == "A" && reason.contains("is missing")),
        "{:?}",
        acted.gave_up
    );
    let st = p.store().stream(&id("A")).unwrap();
    assert_eq!(st.lifecycle.kind(), Kind::GaveUp);
    assert_eq!(st.history().spawn_intent, None);
    assert_eq!(st.restarts, 1, "the one attempt was charged");
}
