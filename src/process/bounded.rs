//! Helper commands run with a time limit (probe commands, the `docker` CLI,
//! the notify hook): stdin fed and closed, output collected, the command
//! killed when it is late, so no caller can hang on one. They get the
//! descriptor limit the monitor started with, not one it raised.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BoundedError {
    #[error("cannot run it: {0}")]
    Spawn(std::io::Error),
    #[error("it was still running after {0:?} and was killed")]
    TimedOut(Duration),
    #[error("{0}")]
    Wait(std::io::Error),
}

/// Runs `command` to its end or until `timeout`, feeding `input` on stdin.
/// Output is meant to be small (a status line): it is read after the exit.
pub fn run_bounded(
    command: &mut Command,
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<Finished, BoundedError> {
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: getrlimit/setrlimit only, async-signal-safe between fork and exec.
    unsafe {
        command.pre_exec(super::restore_descriptor_limit);
    }
    let mut child = command.spawn().map_err(BoundedError::Spawn)?;
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        // A command that does not read its stdin is fine.
        let _ = stdin.write_all(bytes);
    }
    let deadline = Instant::now() + timeout;
    // Most helpers end within a few ms (git, the claude CLI's listing): poll
    // fast first, then every 10 ms.
    let mut nap = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BoundedError::TimedOut(timeout));
            }
            Ok(None) => {
                std::thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(10));
            }
            Err(e) => return Err(BoundedError::Wait(e)),
        }
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_string(&mut stdout);
    }
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}
