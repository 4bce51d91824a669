//! `completions SHELL` and `man`: shell completions and a man page generated
//! from the CLI definition itself, so they never drift from the flags.

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

pub fn man() -> Result<Outcome, Failure> {
    let mut text = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut text)
        .map_err(|e| Failure::CouldNotRun(format!("cannot render the man page: {e}")))?;
    super::emit(&String::from_utf8_lossy(&text));
    Ok(Outcome::Healthy)
}
