//! The `docker` CLI, the only way the monitor talks to containers: every
//! call bounded by a timeout, its output or a one-line error back. Probes
//! and docker components both use it; nothing here decides anything.

use std::process::Command;
use std::time::Duration;

use super::bounded::run_bounded;
use super::identity::Liveness;
use super::procinfo;

/// Runs `docker` with a timeout; the output on success.
pub fn run(args: &[&str], timeout: Duration) -> Result<String, String> {
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
pub fn liveness(container: &str, timeout: Duration) -> (Liveness, Option<i32>) {
    let format = "{{.State.Status}}|{{.State.Pid}}|{{.State.ExitCode}}";
    match run(&["inspect", "--format", format, container], timeout) {
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

pub fn restart(container: &str, timeout: Duration) -> Result<i32, String> {
    run(&["restart", container], timeout)?;
    match liveness(container, timeout).0 {
        Liveness::Running { pid, .. } => Ok(pid),
        Liveness::Stale { reason } => Err(reason),
        Liveness::NoPidFile => Err(format!("container {container} did not come up")),
    }
}
