//! What act needs of the operating system's processes, as one small trait:
//! spawn a worker, stop a worker (proven right before the signals) or a
//! component, inspect a PID, prove a process is a stream's worker. The real
//! implementation calls `process::*`; act's unit tests use a fake table.

use std::path::Path;
use std::time::Duration;

use crate::process::identity::Remembered;
use crate::process::procinfo::{self, ProcFacts};
use crate::process::proof::{self, Project, SpawnSession};
use crate::process::spawn::{SpawnError, WrapperCall};
use crate::process::stop::{StopOutcome, StopRefused};

use super::Launched;

/// Whose worker a process must be proven to be: a stream of a project.
#[derive(Debug, Clone, Copy)]
pub struct WorkerOf<'a> {
    pub project: &'a Project,
    /// `<orch>/state`, where a running daemon of the project is named.
    pub state_dir: &'a Path,
    pub stream: &'a str,
}

/// What a stop must respect: a stream's worker is proven; a component is
/// judged by its PID file and start time.
#[derive(Debug, Clone, Copy)]
pub enum StopScope<'a> {
    Worker(WorkerOf<'a>),
    Component { state_dir: &'a Path },
}

/// What act needs of the operating system's processes (shared by the
/// threads that restart streams side by side).
pub trait Processes: Sync {
    /// Starts a worker through its wrapper and waits (bounded) for it.
    fn spawn_worker(&self, call: &WrapperCall, wait: Duration) -> Result<Launched, SpawnError>;
    /// Stops a process component gracefully (TERM, grace, KILL), pinned to
    /// its start; the never-signal rules hold (a daemon of the project named
    /// in `state_dir` included).
    fn stop(
        &self,
        state_dir: &Path,
        pid: i32,
        start_ticks: u64,
        grace: Duration,
        note: &mut dyn FnMut(String),
    ) -> Result<StopOutcome, StopRefused>;
    /// Stops a stream's worker gracefully, proving it (and each process
    /// signalled beside it) right before the signals.
    fn stop_worker(
        &self,
        who: &WorkerOf<'_>,
        pid: i32,
        start_ticks: u64,
        grace: Duration,
        note: &mut dyn FnMut(String),
    ) -> Result<StopOutcome, StopRefused>;
    /// The kernel's facts about a PID.
    fn inspect(&self, pid: i32) -> Option<ProcFacts>;
    /// Whether a live process is the stream's worker (`Err`: why not).
    fn prove(
        &self,
        who: &WorkerOf<'_>,
        facts: &ProcFacts,
        recorded: Option<&SpawnSession>,
    ) -> Result<(), String>;
    /// The session a remembered worker leads, if it is still that worker.
    fn recorded_session(&self, who: &WorkerOf<'_>, remembered: &Remembered)
        -> Option<SpawnSession>;
}

/// The real processes of this machine.
pub struct RealProcesses;

impl Processes for RealProcesses {
    fn spawn_worker(&self, call: &WrapperCall, wait: Duration) -> Result<Launched, SpawnError> {
        let started = crate::process::spawn::spawn_worker(call, wait)?;
        Ok(Launched {
            pid: started.pid,
            start_ticks: started.start_ticks,
            child: Some(started.child),
            watch: true,
            session: None,
        })
    }
    fn stop(
        &self,
        state_dir: &Path,
        pid: i32,
        start_ticks: u64,
        grace: Duration,
        note: &mut dyn FnMut(String),
    ) -> Result<StopOutcome, StopRefused> {
        crate::process::stop::stop_component(state_dir, pid, Some(start_ticks), grace, note)
    }
    fn stop_worker(
        &self,
        who: &WorkerOf<'_>,
        pid: i32,
        start_ticks: u64,
        grace: Duration,
        note: &mut dyn FnMut(String),
    ) -> Result<StopOutcome, StopRefused> {
        let recorded = procinfo::inspect(pid)
            .filter(|f| f.start_ticks == start_ticks)
            .and_then(|f| {
                let remembered = Remembered {
                    pid,
                    start_ticks: f.start_ticks,
                    pid_file_mtime: 0,
                    proven_in_boot: None,
                };
                self.recorded_session(who, &remembered)
            });
        crate::process::stop::stop_proven(
            who.project,
            who.state_dir,
            who.stream,
            pid,
            Some(start_ticks),
            recorded.as_ref(),
            grace,
            note,
        )
    }
    fn inspect(&self, pid: i32) -> Option<ProcFacts> {
        procinfo::inspect(pid)
    }
    fn prove(
        &self,
        who: &WorkerOf<'_>,
        facts: &ProcFacts,
        recorded: Option<&SpawnSession>,
    ) -> Result<(), String> {
        proof::prove(who.project, who.stream, facts, recorded)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn recorded_session(
        &self,
        who: &WorkerOf<'_>,
        remembered: &Remembered,
    ) -> Option<SpawnSession> {
        SpawnSession::of_remembered(remembered, who.project, who.stream)
    }
}
