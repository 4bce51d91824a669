//! Components: everything the monitor supervises. A stream *worker* comes
//! from the task database and is (re)started through `worker-wrapper.sh`; a
//! *process* component is declared in `monitor.toml` and is started and owned
//! by the daemon; a *docker* component is a container observed and restarted
//! through the `docker` CLI. Lifecycle, policy and probes never look at the
//! kind: each kind only says how it is observed, started and stopped, here.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::config::{ComponentType, ConfigFile};
use crate::layout::{Layout, StreamId};
use crate::probe::ProbeSpec;
use crate::process::bounded::run_bounded;
use crate::process::identity::Liveness;
use crate::process::procinfo;
use crate::supervise::policy::PolicyOverride;

/// Component ids carry this prefix, so they never collide with a stream id
/// in the state file, the PID files or the logs.
pub const COMPONENT_PREFIX: char = '@';

/// How a component is observed, started and stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentKind {
    /// A stream worker: started through the wrapper.
    Worker,
    /// A process the daemon starts and owns.
    Process {
        command: Vec<String>,
        cwd: PathBuf,
        env: BTreeMap<String, String>,
    },
    /// A Docker container, through the `docker` CLI.
    Docker { container: String },
}

/// A component declared in the config file.
#[derive(Debug, Clone)]
pub struct Declared {
    pub id: StreamId,
    pub name: String,
    pub kind: ComponentKind,
    pub probes: Vec<ProbeSpec>,
    pub policy: Option<PolicyOverride>,
}

/// The config's components, with ids `@<name>` (validated by the config).
pub fn declared(config: &ConfigFile, layout: &Layout) -> Vec<Declared> {
    config
        .components
        .iter()
        .filter_map(|c| {
            let id = StreamId::parse(&format!("{COMPONENT_PREFIX}{}", c.name)).ok()?;
            let kind = match c.kind {
                ComponentType::Process => ComponentKind::Process {
                    command: c.command.clone().unwrap_or_default(),
                    cwd: layout.project_root.join(c.cwd.as_deref().unwrap_or(".")),
                    env: c.env.clone(),
                },
                ComponentType::Docker => ComponentKind::Docker {
                    container: c.container.clone().unwrap_or_default(),
                },
            };
            let policy = PolicyOverride::new(c.restart_policy, c.max_restarts);
            Some(Declared {
                id,
                name: c.name.clone(),
                kind,
                probes: c.probes.iter().map(|p| p.spec()).collect(),
                policy,
            })
        })
        .collect()
}

/// Where a process component's output goes.
pub fn log_path(layout: &Layout, id: &StreamId) -> PathBuf {
    layout.logs_dir().join(format!("{id}.log"))
}

/// Runs `docker` with a timeout; the output on success.
pub fn docker(args: &[&str], timeout: Duration) -> Result<String, String> {
    let shown = format!("docker {}", args.join(" "));
    let done = run_bounded(Command::new("docker").args(args), None, timeout)
        .map_err(|e| format!("{shown}: {e}"))?;
    if done.status.success() {
        Ok(done.stdout.trim().to_string())
    } else {
        Err(format!("{shown} failed: {}", done.stderr.trim()))
    }
}

/// A container's liveness and its last exit code.
pub fn docker_liveness(container: &str, timeout: Duration) -> (Liveness, Option<i32>) {
    let format = "{{.State.Status}}|{{.State.Pid}}|{{.State.ExitCode}}";
    match docker(&["inspect", "--format", format, container], timeout) {
        Err(e) => (Liveness::Stale { reason: e }, None),
        Ok(out) => {
            let mut parts = out.split('|');
            let status = parts.next().unwrap_or("").to_string();
            let pid: i32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let exit: Option<i32> = parts.next().and_then(|p| p.parse().ok());
            if status == "running" {
                let start_ticks = procinfo::inspect(pid).map(|f| f.start_ticks).unwrap_or(0);
                (Liveness::Running { pid, start_ticks }, None)
            } else {
                (
                    Liveness::Stale {
                        reason: format!("container {container} is {status}"),
                    },
                    exit,
                )
            }
        }
    }
}

pub fn docker_restart(container: &str, timeout: Duration) -> Result<i32, String> {
    docker(&["restart", container], timeout)?;
    match docker_liveness(container, timeout).0 {
        Liveness::Running { pid, .. } => Ok(pid),
        Liveness::Stale { reason } => Err(reason),
        Liveness::NoPidFile => Err(format!("container {container} did not come up")),
    }
}

pub fn docker_stop(container: &str, grace: Duration) -> Result<(), String> {
    let secs = grace.as_secs().max(1).to_string();
    docker(
        &["stop", "--time", &secs, container],
        grace + Duration::from_secs(10),
    )
    .map(|_| ())
}

/// Starts a process component in its own session, output appended to its
/// log, and writes its PID file (atomically) for every monitor to see.
pub fn spawn_process(
    command: &[String],
    cwd: &Path,
    env: &BTreeMap<String, String>,
    pid_file: &Path,
    log: &Path,
) -> Result<(i32, u64, Child), String> {
    let (program, args) = command.split_first().ok_or("empty command")?;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            crate::process::cloexec_inherited_fds()
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let pid = child.id() as i32;
    let start_ticks = procinfo::inspect(pid).map(|f| f.start_ticks).unwrap_or(0);
    if let Some(dir) = pid_file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let tmp = pid_file.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{pid}\n"))
        .and_then(|()| std::fs::rename(&tmp, pid_file))
        .map_err(|e| format!("cannot write {}: {e}", pid_file.display()))?;
    Ok((pid, start_ticks, child))
}
