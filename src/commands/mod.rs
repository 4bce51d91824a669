//! One file per subcommand; each is a short orchestration of the core.

pub mod check;
pub mod reset;

use std::path::PathBuf;

use crate::cli::{Cli, Command, PathArgs};
use crate::layout::{Layout, PathOverrides};
use crate::Outcome;

/// Runs what the command line asks for.
pub fn dispatch(cli: Cli) -> Result<Outcome, crate::Failure> {
    match &cli.command {
        None => check::run(&cli),
        Some(Command::Reset { stream }) => reset::run(&cli.paths, stream),
    }
}

/// Finds the project from the path flags, the binary's location and the cwd.
pub fn discover(paths: &PathArgs) -> Result<Layout, crate::Failure> {
    let overrides = PathOverrides {
        project_root: paths.project_root.clone(),
        orchestrator_dir: paths.orchestrator_dir.clone(),
        tasks_db: paths.tasks_db.clone(),
        memory_db: paths.memory_db.clone(),
        workspace_id: paths.workspace_id.clone(),
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let exe = std::env::current_exe().ok();
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
    Layout::discover(&overrides, &cwd, exe.as_deref(), home.as_deref()).map_err(|e| crate::Failure::CouldNotRun(e.to_string()))
}
