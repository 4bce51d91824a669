//! Starting a worker through `worker-wrapper.sh`: every argument its own argv
//! entry (never a shell string), a new session, no inherited stdio, the
//! identity tag in its environment (stream, project, a fresh nonce), the
//! descriptor limit the monitor started with, then a bounded poll for the
//! PID file to name the spawned process (or one in its session). A wrapper
//! that never writes its PID file is stopped again, so no unaccounted worker
//! remains.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use crate::process::detach::Child;
use std::time::{Duration, Instant};

use super::identity::{judge, Liveness};
use super::proof::{self, SpawnSession};
use super::{pidfile, procinfo, safe_file};

/// The six arguments of the wrapper interface.
#[derive(Debug, Clone)]
pub struct WrapperCall {
    pub wrapper: PathBuf,
    pub stream: String,
    pub pid_file: PathBuf,
    pub log_dir: PathBuf,
    pub work_dir: PathBuf,
    pub initiative_id: String,
    pub prompt: String,
    /// The identity tag the worker gets; `None`: one is made up (the
    /// project root taken from the PID file's place, a fresh nonce).
    pub tag: Option<SpawnTag>,
}

/// What a spawned worker carries in its environment to prove it is ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnTag {
    pub project_root: PathBuf,
    /// This spawn's nonce (the restart journal names it).
    pub nonce: String,
}

/// A started worker: the PID from its PID file and the wrapper child process.
#[derive(Debug)]
pub struct Started {
    pub pid: i32,
    pub start_ticks: u64,
    pub child: Child,
    /// The nonce of this spawn's tag (`MONITOR_WORKERS_SPAWN`).
    pub nonce: String,
    /// The session the spawn created, led by the wrapper child.
    pub session: SpawnSession,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error(
        "worker wrapper {0} is missing; install it (scripts/install.sh) or pass --orchestrator-dir"
    )]
    WrapperMissing(PathBuf),
    #[error("worker wrapper {0} is not executable; run chmod +x on it")]
    WrapperNotExecutable(PathBuf),
    #[error("cannot create work dir {path}: {source}")]
    WorkDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {path}: {source}")]
    Exec {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the wrapper exited ({status}) before its PID file named a live worker")]
    ExitedEarly { status: String },
    #[error("the wrapper wrote no PID file naming a live worker within {0:?}; it was stopped")]
    NoPidFile(Duration),
    #[error("{0}")]
    PidsDir(String),
}

fn check_wrapper(path: &Path) -> Result<(), SpawnError> {
    let meta =
        std::fs::metadata(path).map_err(|_| SpawnError::WrapperMissing(path.to_path_buf()))?;
    if !meta.is_file() {
        return Err(SpawnError::WrapperMissing(path.to_path_buf()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(SpawnError::WrapperNotExecutable(path.to_path_buf()));
    }
    Ok(())
}

pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => match nix::sys::signal::Signal::try_from(sig) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => status.to_string(),
    }
}

/// Spawns the wrapper, tagged with the stream, the project and the spawn's
/// nonce (from `call.tag`, or made up: the project root taken from the PID
/// file's place `<root>/.claude/orchestrator/pids/`, a fresh nonce), and
/// waits (bounded) until the PID file names the spawned child or a process
/// in its session that started after it: a PID file left by anyone else is
/// never taken for the new worker.
pub fn spawn_worker(call: &WrapperCall, wait: Duration) -> Result<Started, SpawnError> {
    let tag = call.tag.clone().unwrap_or_else(|| {
        let orch = call.pid_file.parent().and_then(Path::parent);
        let root = orch
            .and_then(Path::parent)
            .and_then(Path::parent)
            .or(orch)
            .unwrap_or(Path::new("/"));
        SpawnTag {
            project_root: root.to_path_buf(),
            nonce: proof::new_nonce(),
        }
    });
    let project_root = tag.project_root.as_path();
    check_wrapper(&call.wrapper)?;
    if let Some(dir) = call.pid_file.parent() {
        match safe_file::real_dir(dir) {
            Err(e) if !e.is_missing() => return Err(SpawnError::PidsDir(e.to_string())),
            _ => {}
        }
    }
    std::fs::create_dir_all(&call.work_dir).map_err(|source| SpawnError::WorkDir {
        path: call.work_dir.clone(),
        source,
    })?;
    let nonce = tag.nonce;
    let mut command = super::detached(&call.wrapper, None).map_err(|source| SpawnError::Exec {
        path: call.wrapper.clone(),
        source,
    })?;
    command
        .arg(&call.stream)
        .arg(&call.pid_file)
        .arg(&call.log_dir)
        .arg(&call.work_dir)
        .arg(&call.initiative_id)
        .arg(&call.prompt)
        .env(proof::STREAM_VAR, &call.stream)
        .env(proof::PROJECT_VAR, project_root)
        .env(proof::SPAWN_VAR, &nonce)
        .current_dir(&call.work_dir);
    let mut child = command.spawn().map_err(|source| SpawnError::Exec {
        path: call.wrapper.clone(),
        source,
    })?;
    let leader = child.id() as i32;
    let leader_start = procinfo::inspect(leader).map(|f| f.start_ticks);
    let our_uid = procinfo::current_uid();
    let deadline = Instant::now() + wait;
    // A wrapper writes its PID file within a few milliseconds: look again
    // soon at first, then every 20 ms (a restart holds a spawn slot while
    // it waits here).
    let mut pause = Duration::from_millis(1);
    loop {
        let file = pidfile::read(&call.pid_file, procinfo::pid_max());
        if let (pidfile::PidFile::Pid { pid, .. }, Some(leader_start)) = (&file, leader_start) {
            let facts = procinfo::inspect(*pid);
            let ours = facts.as_ref().is_some_and(|f| {
                (f.pid == leader || f.session == leader) && f.start_ticks >= leader_start
            });
            if let (true, Liveness::Running { pid, start_ticks }) =
                (ours, judge(&file, facts.as_ref(), our_uid, None))
            {
                return Ok(Started {
                    pid,
                    start_ticks,
                    child,
                    nonce,
                    session: SpawnSession {
                        leader,
                        leader_start_ticks: leader_start,
                    },
                });
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(SpawnError::ExitedEarly {
                status: describe_status(status),
            });
        }
        if Instant::now() >= deadline {
            stop_spawned(&mut child);
            return Err(SpawnError::NoPidFile(wait));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Stops a wrapper this monitor itself just spawned (its own session, so its
/// PID is its process group): TERM, a short grace, KILL, reap.
fn stop_spawned(child: &mut Child) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let group = Pid::from_raw(child.id() as i32);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
}
