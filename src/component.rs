//! Components: everything the monitor supervises. A stream *worker* comes
//! from the task database and is (re)started through `worker-wrapper.sh`; a
//! *process* component is declared in `monitor.toml` and is started and owned
//! by the daemon; a *docker* component is a container observed and restarted
//! through the `docker` CLI. Lifecycle, policy and probes never look at the
//! kind: each kind only says how it is observed, started and stopped, here.

use crate::process::detach::Child;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{ComponentType, ConfigFile};
use crate::layout::{Layout, StreamId};
use crate::probe::ProbeSpec;
use crate::process::procinfo;
use crate::supervise::policy::PolicyOverride;

/// Component ids carry this prefix, so they never collide with a stream id
/// in the state file, the PID files or the logs.
pub const COMPONENT_PREFIX: char = crate::supervise::streams::COMPONENT_PREFIX;

/// How a component is observed, started and stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentKind {
    /// A stream worker: started through the wrapper.
    Worker,
    /// A process the daemon starts and owns (boxed: every stream's
    /// observation carries a kind, and workers are the many).
    Process(Box<ProcessSpec>),
    /// A Docker container, through the `docker` CLI.
    Docker { container: String },
}

/// How a process component is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub command: Vec<String>,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
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
                ComponentType::Process => ComponentKind::Process(Box::new(ProcessSpec {
                    command: c.command.clone().unwrap_or_default(),
                    cwd: layout.project_root.join(c.cwd.as_deref().unwrap_or(".")),
                    env: c.env.clone(),
                })),
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
    let mut cmd = crate::process::detached(program, Some(log))
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    cmd.args(args).current_dir(cwd).envs(env);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let pid = child.id() as i32;
    let start_ticks = procinfo::inspect(pid).map(|f| f.start_ticks).unwrap_or(0);
    crate::files::replace_atomically(
        pid_file,
        format!("{pid}\n").as_bytes(),
        crate::files::Durability::Atomic,
    )
    .map_err(|e| e.to_string())?;
    Ok((pid, start_ticks, child))
}
