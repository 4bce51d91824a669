//! One file per subcommand; each is a short orchestration of the core.

pub mod check;
pub mod control;
pub mod daemon_ctl;
pub mod dashboard;
pub mod generate;
pub mod logs;
pub mod recover;
pub mod status;

use std::path::PathBuf;

use crate::cli::{Cli, Command, PathArgs};
use crate::layout::{Layout, PathOverrides, StreamId};
use crate::report::log::Logger;
use crate::state::StateStore;
use crate::tick::{take_snapshot, ProbeMode, Recorder, Snapshot};
use crate::{Failure, Outcome};

/// Runs what the command line asks for (its subcommand's settings already
/// merged to the top, `Cli::merged`).
pub fn dispatch(cli: Cli) -> Result<Outcome, Failure> {
    let secs = std::time::Duration::from_secs_f64;
    let backend = std::env::var(crate::process::procinfo::BACKEND_VAR).ok();
    crate::process::procinfo::parse_backend(backend.as_deref()).map_err(Failure::Usage)?;
    match &cli.command {
        None => check::run(&cli),
        Some(Command::Start { report_only, .. }) => daemon_ctl::start(&cli, *report_only),
        Some(Command::Stop {
            stream: None,
            all: false,
            workers,
            grace,
            timeout,
            ..
        }) => daemon_ctl::stop(&cli, *workers, secs(*grace), secs(*timeout)),
        Some(Command::Stop {
            stream, all, grace, ..
        }) => control::stop(&cli, stream.as_deref(), *all, secs(*grace)),
        Some(Command::Restart {
            stream: None,
            timeout,
            ..
        }) => daemon_ctl::restart(&cli, secs(*timeout)),
        Some(Command::Restart {
            stream: Some(stream),
            grace,
            ..
        }) => control::restart(&cli, stream, secs(*grace)),
        Some(Command::Status {
            stream,
            verbose,
            json,
            watch,
            ..
        }) => status::run(&cli, stream.as_deref(), *verbose, *json, *watch),
        Some(Command::Logs {
            stream,
            all,
            follow,
            lines,
            events,
            ..
        }) => logs::run(
            &cli,
            &logs::LogsRequest {
                stream: stream.as_deref(),
                all: *all,
                follow: *follow,
                lines: *lines,
                events: *events,
            },
        ),
        Some(Command::Dashboard { open }) => dashboard::run(&cli, *open),
        Some(Command::Completions { shell }) => generate::completions(*shell),
        Some(Command::Man { dir }) => generate::man(dir.as_deref()),
        Some(Command::Help { command }) => generate::help(command.as_deref()),
        Some(Command::Pause { stream, .. }) => control::pause(&cli, stream),
        Some(Command::Resume { stream, .. }) => control::resume(&cli, stream.as_deref()),
        Some(Command::Reset { stream, .. }) => control::reset(&cli, stream.as_deref()),
        Some(Command::RecoverTasks {
            streams, dry_run, ..
        }) => recover::run(&cli, streams, *dry_run),
    }
}

/// Writes command output to stdout; a reader that went away (`| head`) is
/// not an error.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Finds the project from the path flags, the binary's location and the cwd.
pub fn discover(paths: &PathArgs) -> Result<Layout, Failure> {
    let overrides = PathOverrides {
        project_root: paths.project_root.clone(),
        orchestrator_dir: paths.orchestrator_dir.clone(),
        tasks_db: paths.tasks_db.clone(),
        memory_db: paths.memory_db.clone(),
        workspace_id: paths.workspace_id.clone(),
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    // Resolved, so a symlink on PATH to a project's binary finds that project
    // on every platform (Linux resolves it already, macOS does not).
    let exe = std::env::current_exe()
        .ok()
        .map(|p| p.canonicalize().unwrap_or(p));
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    Layout::discover(&overrides, &cwd, exe.as_deref(), home.as_deref())
        .map_err(|e| Failure::CouldNotRun(e.to_string()))
}

/// The stream a tc project calls `raw` (its id, name or metadata streamId).
pub fn resolve_tc_name(snapshot: &Snapshot, raw: &str) -> Option<StreamId> {
    let id = snapshot.tc.as_ref()?.project.resolve(raw)?;
    StreamId::parse(id).ok()
}

/// What every operator command needs: where things are and how to record.
pub struct Context {
    pub layout: Layout,
    pub logger: Logger,
    pub store: StateStore,
    pub resolved: check::Resolved,
    /// Where operator commands come from (`web`), for the event log.
    pub via: Option<&'static str>,
}

impl Context {
    pub fn new(cli: &Cli) -> Result<Context, Failure> {
        let layout = discover(&cli.paths)?;
        let config = check::load_config(cli, &layout)?;
        let resolved = check::resolve(cli, &config)?;
        let logger = Logger::new(Some(&layout.monitor_log()), resolved.quiet);
        let store = StateStore::new(&layout, resolved.quiet);
        Ok(Context {
            layout,
            logger,
            store,
            resolved,
            via: None,
        })
    }

    pub fn recorder(&self) -> Recorder<'_> {
        let mut recorder = Recorder::new(&self.layout, &self.logger);
        recorder.via = self.via;
        recorder
    }

    /// The current snapshot; no active initiative is an error here.
    pub fn snapshot(&self, cli: &Cli) -> Result<Snapshot, Failure> {
        let _ = cli;
        let settings = &self.resolved.tick;
        let probes = ProbeMode::Recorded(&settings.config);
        match take_snapshot(
            &self.layout,
            settings.busy_timeout,
            &self.store.read_only().0,
            probes,
        ) {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(Failure::CouldNotRun(
                "no active initiative found in the memory database".into(),
            )),
            Err(e) => Err(Failure::CouldNotRun(e.to_string())),
        }
    }

    /// A stream id the operator named: valid, and known to the database or
    /// the state file.
    pub fn known_stream(&self, cli: &Cli, raw: &str) -> Result<StreamId, Failure> {
        let snapshot = self.snapshot(cli);
        // A tc stream may be named by its id, its name or a metadata streamId.
        if let Some(id) = snapshot.as_ref().ok().and_then(|s| resolve_tc_name(s, raw)) {
            return Ok(id);
        }
        let id = StreamId::parse(raw)
            .map_err(|why| Failure::Usage(format!("invalid stream id {raw:?}: {why}")))?;
        let in_state = self.store.read_only().0.streams.contains_key(id.as_str());
        let in_db = snapshot
            .as_ref()
            .is_ok_and(|s| s.streams.iter().any(|o| o.view.id == id));
        if in_db || in_state {
            return Ok(id);
        }
        let known: Vec<String> = match &snapshot {
            Ok(s) => s.streams.iter().map(|o| o.view.id.to_string()).collect(),
            Err(_) => Vec::new(),
        };
        let hint = if known.is_empty() {
            String::new()
        } else {
            format!(" (known: {})", known.join(", "))
        };
        Err(Failure::Usage(format!(
            "unknown stream {id}: not in the active initiative nor in the monitor state{hint}"
        )))
    }
}
