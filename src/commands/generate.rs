//! `completions SHELL`, `man` and `help`: shell completions, the man pages
//! and the help text, generated from the CLI definition itself, so they
//! never drift from the flags. `man` prints the main page; `man --dir DIR`
//! writes it and the page of every subcommand it refers to
//! (`monitor-workers-<command>.1`).

use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::{Failure, Outcome};

pub fn completions(shell: clap_complete::Shell) -> Result<Outcome, Failure> {
    let mut command = Cli::command();
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut command, "monitor-workers", &mut text);
    super::emit(&String::from_utf8_lossy(&text));
    Ok(Outcome::Healthy)
}

/// The CLI with every subcommand named as its man page is
/// (`monitor-workers-start`).
fn built() -> clap::Command {
    let mut command = Cli::command();
    command.build();
    command
}

fn render_error(e: std::io::Error) -> Failure {
    Failure::CouldNotRun(format!("cannot render the man page: {e}"))
}

/// The main page: clap's sections, then FILES and ENVIRONMENT.
fn main_page() -> Result<Vec<u8>, Failure> {
    let mut text = Vec::new();
    clap_mangen::Man::new(built())
        .render(&mut text)
        .map_err(render_error)?;
    text.extend_from_slice(FILES_AND_ENVIRONMENT.as_bytes());
    Ok(text)
}

pub fn man(dir: Option<&Path>) -> Result<Outcome, Failure> {
    let Some(dir) = dir else {
        super::emit(&String::from_utf8_lossy(&main_page()?));
        return Ok(Outcome::Healthy);
    };
    let write_error = |e: std::io::Error| {
        Failure::CouldNotRun(format!("cannot write into {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(write_error)?;
    let main = dir.join("monitor-workers.1");
    std::fs::write(&main, main_page()?).map_err(write_error)?;
    let mut written = vec![main];
    for sub in built().get_subcommands().filter(|s| !s.is_hide_set()) {
        let page = clap_mangen::Man::new(sub.clone());
        written.push(page.generate_to(dir).map_err(write_error)?);
    }
    let mut said = String::new();
    for path in written {
        said.push_str(&format!("{}\n", path.display()));
    }
    super::emit(&said);
    Ok(Outcome::Healthy)
}

/// `help [COMMAND]`: the long help of the tool or of one command.
pub fn help(name: Option<&str>) -> Result<Outcome, Failure> {
    let mut command = built();
    let text = match name {
        None => command.render_long_help(),
        Some(name) => match command.find_subcommand_mut(name) {
            Some(sub) => sub.render_long_help(),
            None => {
                return Err(Failure::Usage(format!(
                    "unknown command {name:?}; see monitor-workers --help"
                )))
            }
        },
    };
    super::emit(&text.to_string());
    Ok(Outcome::Healthy)
}

/// What the tool reads and writes, and the environment it reads, in roff.
const FILES_AND_ENVIRONMENT: &str = r#".SH FILES
Paths are under the orchestrator directory \fI<project>/.claude/orchestrator\fR (\fIORCH\fR).
.TP
\fIORCH/monitor.toml\fR
Optional settings (every key is documented in the shipped \fImonitor.toml.example\fR).
.TP
\fIORCH/worker\-wrapper.sh\fR, \fIORCH/worker\-prompt.md\fR
How a worker is started, and the prompt it gets.
.TP
\fIORCH/pids/<stream>.pid\fR, \fIORCH/pids/<stream>.heartbeat\fR
A worker's PID (written by the wrapper) and its heartbeat.
.TP
\fIORCH/logs/<stream>_<init8>.log\fR
A worker's output, stdout and stderr together.
.TP
\fIORCH/logs/monitor.log\fR
Every line the monitor says; rotated by size to \fImonitor.log.1\fR ... \fImonitor.log.5\fR.
.TP
\fIORCH/logs/events.jsonl\fR
Structured events, one JSON object per line; rotated to \fIevents.jsonl.1\fR.
.TP
\fIORCH/logs/daemon.out\fR
The background daemon's own output.
.TP
\fIORCH/state/monitor\-state.json\fR
Restart budgets, backoff, lifecycle and identity of every worker, shared by every monitor.
.TP
\fIORCH/state/daemon.lock\fR, \fIORCH/state/daemon.json\fR
The running daemon: its lock, PID, heartbeat and settings.
.TP
\fIORCH/state/locks/<stream>.lock\fR
Per\-stream spawn locks.
.TP
\fIORCH/state/self_heal/<stream>/attempt\-<n>.json\fR
One record per restart attempt.
.TP
\fIORCH/state/metrics.prom\fR
Prometheus text file, replaced after every check.
.TP
\fI~/.claude/tasks/<workspace>/tasks.db\fR, \fI~/.claude/memory/<workspace>/memory.db\fR, \fI<project>/.copilot/tasks.db\fR
The task databases read (only \fBrecover\-tasks\fR writes to a task database).
.SH ENVIRONMENT
.TP
\fBMONITOR_WORKERS_PROJECT_ROOT\fR, \fBMONITOR_WORKERS_ORCHESTRATOR_DIR\fR, \fBMONITOR_WORKERS_TASKS_DB\fR, \fBMONITOR_WORKERS_MEMORY_DB\fR, \fBMONITOR_WORKERS_WORKSPACE_ID\fR, \fBMONITOR_WORKERS_BUSY_TIMEOUT\fR, \fBMONITOR_WORKERS_CONFIG\fR
Defaults of \fB\-\-project\-root\fR, \fB\-\-orchestrator\-dir\fR, \fB\-\-tasks\-db\fR, \fB\-\-memory\-db\fR, \fB\-\-workspace\-id\fR, \fB\-\-busy\-timeout\fR and \fB\-\-config\fR.
.TP
\fBMONITOR_WORKERS_BACKEND\fR
\fBportable\fR: look at processes through \fBps\fR(1) and polling, as on macOS, instead of /proc and pidfds.
.TP
\fBMONITOR_WORKERS_CLAUDE\fR
The AI CLI the wrapper starts (default \fBclaude\fR on PATH).
.TP
\fBMONITOR_WORKERS_COMMIT\fR
\fB0\fR: the wrapper does not commit a worker's changes after it exits 0.
.TP
\fBNO_COLOR\fR
Set and not empty: no colour on the console.
.TP
\fBHOME\fR
Where the task and memory databases are found.
"#;
