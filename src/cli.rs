//! The command line: the flags of the Python original with its defaults
//! (so cron lines keep working), path overrides that also read
//! `MONITOR_WORKERS_*` environment variables, and the subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "monitor-workers",
    version,
    about = "Watchdog and supervisor for long-running AI coding workers",
    long_about = "Checks every work stream's worker, reports dead ones and, with --auto-restart, restarts them \
                  through worker-wrapper.sh. Without a subcommand it runs one check (or the daemon with --daemon), \
                  exactly like monitor-workers.py.\n\nExit codes: 0 no dead worker, 1 dead worker(s) found (even if \
                  restarted), 2 bad usage, 3 the check could not run.",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Keep checking in the foreground until SIGINT/SIGTERM
    #[arg(long)]
    pub daemon: bool,
    #[command(flatten)]
    pub check: CheckArgs,
    #[command(flatten)]
    pub paths: PathArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The flags of the original script (and the supervisor's own), given
/// before any subcommand or to `start`. Not global: each subcommand's help
/// shows only what it takes.
#[derive(Debug, Clone, Default, Args)]
pub struct CheckArgs {
    /// Restart dead workers (default: report only)
    #[arg(long)]
    pub auto_restart: bool,
    /// Restart budget per worker: restarts without forward progress, kept across runs [default: 2]
    #[arg(long, value_name = "N")]
    pub max_restarts: Option<u32>,
    /// Seconds between checks in daemon mode [default: 30]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub interval: Option<u64>,
    /// Print only actions (restart, give-up) and errors; monitor.log still gets everything
    #[arg(long)]
    pub quiet: bool,
    /// When a dead worker is restarted (on-failure: not after exit code 0) [default: always]
    #[arg(long, value_enum, value_name = "POLICY")]
    pub restart_policy: Option<crate::supervise::policy::RestartKind>,
    /// Seconds of backoff after the first restart; doubles with each restart in a row [default: 1]
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub backoff_base: Option<f64>,
    /// Startup window: a worker dying within SECS of its start is a failed start,
    /// and exit 126/127 then gives up at once [default: 10]
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub min_uptime: Option<f64>,
    /// Longest backoff between restarts, in seconds [default: 60]
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub backoff_max: Option<f64>,
    /// Run CMD (through sh -c) with the event as JSON on stdin when a stream gives up
    #[arg(long, value_name = "CMD")]
    pub on_give_up: Option<String>,
    /// Also send metrics as StatsD datagrams to this loopback address (e.g. 127.0.0.1:8125)
    #[arg(long, value_name = "ADDR")]
    pub statsd: Option<String>,
    /// Settings file [default: <orchestrator dir>/monitor.toml]
    #[arg(long, value_name = "FILE", env = "MONITOR_WORKERS_CONFIG")]
    pub config: Option<PathBuf>,
    /// After each check, put tasks of dead or given-up streams left in_progress
    /// longer than --older-than back to pending (writes the task database)
    #[arg(long)]
    pub recover_tasks: bool,
    /// tc projects: also start streams that have a task ready and no worker
    /// (once the branches of their dependencies are merged into HEAD)
    #[arg(long)]
    pub start_ready: bool,
    /// Task recovery: seconds a task must have been in_progress without an update [default: 300]
    #[arg(long, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=30 * 86_400))]
    pub older_than: Option<u64>,
}

/// Where the project and its databases are; every subcommand takes these.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Project")]
pub struct PathArgs {
    /// Project root (its folder name is the workspace id)
    #[arg(long, value_name = "DIR", env = "MONITOR_WORKERS_PROJECT_ROOT")]
    pub project_root: Option<PathBuf>,
    /// The .claude/orchestrator directory
    #[arg(long, value_name = "DIR", env = "MONITOR_WORKERS_ORCHESTRATOR_DIR")]
    pub orchestrator_dir: Option<PathBuf>,
    /// Task Copilot database [default: ~/.claude/tasks/<workspace>/tasks.db]
    #[arg(long, value_name = "FILE", env = "MONITOR_WORKERS_TASKS_DB")]
    pub tasks_db: Option<PathBuf>,
    /// Memory Copilot database [default: ~/.claude/memory/<workspace>/memory.db]
    #[arg(long, value_name = "FILE", env = "MONITOR_WORKERS_MEMORY_DB")]
    pub memory_db: Option<PathBuf>,
    /// Workspace id [default: the project root's folder name]
    #[arg(long, value_name = "ID", env = "MONITOR_WORKERS_WORKSPACE_ID")]
    pub workspace_id: Option<String>,
    /// Seconds to wait for a database locked by a writer before skipping the check
    /// [default: 5]
    #[arg(long, value_name = "SECS", env = "MONITOR_WORKERS_BUSY_TIMEOUT", value_parser = parse_seconds)]
    pub busy_timeout: Option<f64>,
}

/// The web dashboard's listening address and who may reach it.
#[derive(Debug, Clone, Default, Args)]
pub struct HttpArgs {
    /// Serve the dashboard, /api and /metrics on ADDR (with --daemon, start or
    /// dashboard; 127.0.0.1:0 picks a free port) [dashboard default: 127.0.0.1:0]
    #[arg(long, global = true, value_name = "ADDR")]
    pub http: Option<String>,
    /// Allow --http to listen beyond loopback (needs --http-allowed-host)
    #[arg(long, global = true)]
    pub http_allow_remote: bool,
    /// A host name clients use to reach a remote --http address (repeatable)
    #[arg(long, global = true, value_name = "NAME")]
    pub http_allowed_host: Vec<String>,
}

pub fn parse_seconds(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.0..=3600.0).contains(&v) {
        // Echo what was typed, not the parsed value: 1e308 would print 309 digits.
        return Err(format!("{s} is out of range (0 to 3600 seconds)"));
    }
    Ok(v)
}

/// What an operator command on a project takes besides its own options:
/// where the project is, and the settings file.
#[derive(Debug, Clone, Default, Args)]
pub struct ProjectArgs {
    #[command(flatten)]
    pub paths: PathArgs,
    /// Settings file [default: <orchestrator dir>/monitor.toml]
    #[arg(
        long,
        value_name = "FILE",
        env = "MONITOR_WORKERS_CONFIG",
        help_heading = "Project"
    )]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Start the daemon in the background, restarting dead workers (--report-only: only report)
    Start {
        /// Only report dead workers; do not restart them
        #[arg(long, conflicts_with = "auto_restart")]
        report_only: bool,
        #[command(flatten)]
        check: CheckArgs,
        #[command(flatten)]
        paths: PathArgs,
    },
    /// Stop the daemon; with STREAM (or --all) stop that worker instead
    Stop {
        /// Stop this stream's worker and keep it stopped until resumed
        stream: Option<String>,
        /// Stop every worker (the daemon keeps running)
        #[arg(long, conflicts_with = "stream")]
        all: bool,
        /// With the daemon, stop every worker too
        #[arg(long, conflicts_with_all = ["stream", "all"])]
        workers: bool,
        /// Seconds a worker gets between SIGTERM and SIGKILL
        #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = parse_seconds)]
        grace: f64,
        /// Seconds to wait for the daemon to exit
        #[arg(long, value_name = "SECS", default_value_t = 20.0, value_parser = parse_seconds)]
        timeout: f64,
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// Restart the daemon with its settings; with STREAM restart that worker now
    Restart {
        /// Stop this stream's worker gracefully (if it runs) and start it afresh
        stream: Option<String>,
        /// Seconds a worker gets between SIGTERM and SIGKILL
        #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = parse_seconds)]
        grace: f64,
        /// Seconds to wait for the daemon to exit
        #[arg(long, value_name = "SECS", default_value_t = 20.0, value_parser = parse_seconds)]
        timeout: f64,
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// Show every worker's state, health and history, and the daemon's
    Status {
        /// Only this stream
        stream: Option<String>,
        /// Add probe details, reasons and file paths
        #[arg(long, short)]
        verbose: bool,
        /// Machine-readable output (schema in the README)
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Refresh every 2 seconds until interrupted (plain snapshots when not on a terminal)
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// Show the monitor log, a worker's log, every log, or the event log
    Logs {
        /// This stream's worker log (its current one)
        stream: Option<String>,
        /// The monitor log and every worker log
        #[arg(long, conflicts_with = "stream")]
        all: bool,
        /// Keep printing new lines (follows rotation and new logs) until interrupted
        #[arg(long, short)]
        follow: bool,
        /// How many lines to show from the end
        #[arg(long, short = 'n', value_name = "N", default_value_t = 50)]
        lines: usize,
        /// The structured event log (logs/events.jsonl), for STREAM if given
        #[arg(long, conflicts_with = "all")]
        events: bool,
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// Serve the web dashboard (and /api, /metrics) until interrupted
    Dashboard {
        /// Print the dashboard's URL with its access token and try to open a browser
        #[arg(long)]
        open: bool,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff); with --dir, write it and one page per subcommand there
    Man {
        /// Write monitor-workers.1 and monitor-workers-<command>.1 into this folder
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Never restart this stream's worker until resumed (it keeps running)
    Pause {
        /// The stream id
        stream: String,
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// Undo pause or stop: the stream (or every held one) is supervised again
    Resume {
        /// The stream id
        #[arg(required_unless_present = "all")]
        stream: Option<String>,
        /// Every paused or stopped stream
        #[arg(long, conflicts_with = "stream")]
        all: bool,
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// Clear a stream's restart budget, backoff and give-up (--all: every stream)
    ///
    /// Also lifts the global restart breaker when this stream's failures
    /// opened it; with --all it is lifted outright.
    Reset {
        /// The stream id
        #[arg(required_unless_present = "all")]
        stream: Option<String>,
        /// Every stream, and lift the global restart breaker
        #[arg(long, conflicts_with = "stream")]
        all: bool,
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// Put tasks of dead or given-up streams left in_progress (longer than
    /// --older-than) back to pending, so the next worker picks them up
    RecoverTasks {
        /// Only these streams [default: every dead or given-up stream]
        streams: Vec<String>,
        /// List the tasks that would be recovered; write nothing
        #[arg(long)]
        dry_run: bool,
        /// Seconds a task must have been in_progress without an update [default: 300]
        #[arg(long, value_name = "SECS",
              value_parser = clap::value_parser!(u64).range(1..=30 * 86_400))]
        older_than: Option<u64>,
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// Print the help of monitor-workers or of one of its commands
    Help {
        /// The command whose help to print
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
}

impl Cli {
    /// Parses the command line; what a subcommand was given of the
    /// project and check settings is merged into `paths` and `check`, so
    /// `start --interval 5` and `--interval 5 start` mean the same.
    pub fn parse_args() -> Cli {
        <Cli as clap::Parser>::parse().merged()
    }

    /// Moves a subcommand's own project and check settings to the top, where
    /// the commands read them; a value given after the subcommand wins.
    pub fn merged(mut self) -> Cli {
        let (paths, config, check, older_than) = match &mut self.command {
            Some(Command::Start { check, paths, .. }) => (
                Some(std::mem::take(paths)),
                None,
                Some(std::mem::take(check)),
                None,
            ),
            Some(
                Command::Stop { project, .. }
                | Command::Restart { project, .. }
                | Command::Status { project, .. }
                | Command::Logs { project, .. }
                | Command::Pause { project, .. }
                | Command::Resume { project, .. }
                | Command::Reset { project, .. },
            ) => {
                let project = std::mem::take(project);
                (Some(project.paths), project.config, None, None)
            }
            Some(Command::RecoverTasks {
                project,
                older_than,
                ..
            }) => {
                let project = std::mem::take(project);
                (Some(project.paths), project.config, None, *older_than)
            }
            _ => (None, None, None, None),
        };
        if let Some(p) = paths {
            let top = &mut self.paths;
            top.project_root = p.project_root.or(top.project_root.take());
            top.orchestrator_dir = p.orchestrator_dir.or(top.orchestrator_dir.take());
            top.tasks_db = p.tasks_db.or(top.tasks_db.take());
            top.memory_db = p.memory_db.or(top.memory_db.take());
            top.workspace_id = p.workspace_id.or(top.workspace_id.take());
            top.busy_timeout = p.busy_timeout.or(top.busy_timeout);
        }
        let top = &mut self.check;
        top.config = config.or(top.config.take());
        top.older_than = older_than.or(top.older_than);
        if let Some(c) = check {
            top.auto_restart |= c.auto_restart;
            top.quiet |= c.quiet;
            top.recover_tasks |= c.recover_tasks;
            top.start_ready |= c.start_ready;
            top.max_restarts = c.max_restarts.or(top.max_restarts);
            top.interval = c.interval.or(top.interval);
            top.restart_policy = c.restart_policy.or(top.restart_policy);
            top.backoff_base = c.backoff_base.or(top.backoff_base);
            top.min_uptime = c.min_uptime.or(top.min_uptime);
            top.backoff_max = c.backoff_max.or(top.backoff_max);
            top.on_give_up = c.on_give_up.or(top.on_give_up.take());
            top.statsd = c.statsd.or(top.statsd.take());
            top.config = c.config.or(top.config.take());
            top.older_than = c.older_than.or(top.older_than);
        }
        self
    }
}

/// `--restart-policy` values: the policy's names, spelled as in monitor.toml.
impl clap::ValueEnum for crate::supervise::policy::RestartKind {
    fn value_variants<'a>() -> &'a [Self] {
        use crate::supervise::policy::RestartKind;
        &[
            RestartKind::Always,
            RestartKind::OnFailure,
            RestartKind::Never,
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use crate::supervise::policy::RestartKind;
        let (name, help) = match self {
            RestartKind::Always => ("always", "Whenever it should run and does not"),
            RestartKind::OnFailure => ("on-failure", "Only when it did not exit with code 0"),
            RestartKind::Never => ("never", "Never: report only"),
        };
        Some(clap::builder::PossibleValue::new(name).help(help))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_seconds;

    #[test]
    fn seconds_errors_echo_the_input_not_its_expansion() {
        assert_eq!(parse_seconds("2.5"), Ok(2.5));
        let err = parse_seconds("1e308").unwrap_err();
        assert_eq!(err, "1e308 is out of range (0 to 3600 seconds)");
        assert!(parse_seconds("inf").is_err());
        assert!(parse_seconds("NaN").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("soon").unwrap_err().contains("not a number"));
    }
}
