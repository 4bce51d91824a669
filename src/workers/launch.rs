//! How a stream's worker is started. Three launchers:
//! - `wrapper`: the legacy `worker-wrapper.sh` with a PID file
//!   (`process::spawn`, unchanged);
//! - `claude-bg`: upstream's dispatch, `claude --bg --add-dir <worktree>
//!   --agent me "<prompt>"`, run in the worktree. It returns at once; the
//!   session it starts is identified by the job folder
//!   `jobs/<id>/state.json` that appears afterwards (watched for, never by
//!   calling `claude agents` in a loop), and that id is returned for the
//!   monitor to record;
//! - `tc-worker`: `tc worker <task-id> [--max-budget-usd N]`, one task
//!   under a spending cap, run detached in the worktree.
//!
//! Neither new launcher passes on the monitor's own `MONITOR_WORKERS_*`
//! settings: a session is not the monitor's process, and it must not look
//! like one. A `tc worker` the monitor starts is its own process and gets
//! the spawn's identity tag, as a wrapper does. Stopping a session goes
//! through the operator's `session_stop` command only.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::detach::{Child, Detached};
use std::time::{Duration, Instant};

use super::claude_session::parse_job;
use crate::process::bounded::run_bounded;
use crate::process::spawn::describe_status;

pub use crate::config::LauncherKind;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("work dir {0} does not exist")]
    NoWorkDir(PathBuf),
    #[error("cannot open log {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source}")]
    Exec {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}){detail}")]
    Failed {
        program: String,
        status: String,
        detail: String,
    },
    #[error("{program} was still running after {after:?} and was stopped")]
    Hung { program: String, after: Duration },
    #[error("claude --bg returned, but no job appeared in {jobs_dir} within {waited:?}; the session is matched by its work dir or prompt at the next check")]
    NoJob { jobs_dir: PathBuf, waited: Duration },
}

/// The monitor's own settings in its environment, which the programs it
/// starts must not inherit.
fn monitor_env() -> impl Iterator<Item = std::ffi::OsString> {
    std::env::vars_os()
        .map(|(key, _)| key)
        .filter(|key| key.to_string_lossy().starts_with("MONITOR_WORKERS_"))
}

/// Adds variables, never one of the monitor's own.
fn add_env(command: &mut Detached, env: &[(String, String)]) {
    command.envs(
        env.iter()
            .filter(|(k, _)| !k.starts_with("MONITOR_WORKERS_"))
            .map(|(k, v)| (k, v)),
    );
}

/// The last non-empty line of a log, for an error message.
fn last_line(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let tail = &text[text.len().saturating_sub(4096)..];
    String::from_utf8_lossy(tail)
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(|l| format!(": {l}"))
        .unwrap_or_default()
}

/// A detached child (the monitor's one way: `process::detach`): its own
/// session, stdin closed, output appended to `log`, in `work_dir`, without
/// the monitor's own settings.
fn detached(program: &OsStr, work_dir: &Path, log: &Path) -> Result<Detached, LaunchError> {
    if !work_dir.is_dir() {
        return Err(LaunchError::NoWorkDir(work_dir.to_path_buf()));
    }
    let mut command =
        crate::process::detached(program, Some(log)).map_err(|source| LaunchError::Log {
            path: log.to_path_buf(),
            source,
        })?;
    command.current_dir(work_dir);
    for key in monitor_env() {
        command.env_remove(key);
    }
    Ok(command)
}

/// One `claude --bg` dispatch.
#[derive(Debug, Clone)]
pub struct BgDispatch<'a> {
    /// `claude` unless told otherwise.
    pub program: &'a OsStr,
    /// The stream's worktree: the cwd and the `--add-dir`.
    pub work_dir: &'a Path,
    pub prompt: &'a str,
    /// `${CLAUDE_CONFIG_DIR:-~/.claude}/jobs`.
    pub jobs_dir: &'a Path,
    /// Where the dispatch's own output goes (the stream's log).
    pub log: &'a Path,
    /// How long `claude --bg` may take to return.
    pub timeout: Duration,
    /// How long to watch for the job folder afterwards.
    pub wait: Duration,
    /// Variables to set for `claude` (none in production: it must use the
    /// config dir the monitor watches, which is its own default).
    pub env: &'a [(String, String)],
}

/// The job folders present now.
fn job_ids(jobs_dir: &Path) -> BTreeSet<OsString> {
    std::fs::read_dir(jobs_dir)
        .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

/// A new job of this dispatch: its prompt is ours, or it works in our
/// worktree (a job someone else started meanwhile is neither).
fn is_our_job(jobs_dir: &Path, id: &OsStr, d: &BgDispatch<'_>) -> Option<String> {
    let id = id.to_str()?;
    let body = std::fs::read_to_string(jobs_dir.join(id).join("state.json")).ok()?;
    let job = parse_job(id, &body).ok()?;
    let work_dir = d.work_dir.canonicalize().ok();
    let cwd_ours = job
        .cwd
        .as_deref()
        .and_then(|c| c.canonicalize().ok())
        .is_some_and(|c| Some(&c) == work_dir.as_ref());
    let intent_ours = job.intent.as_deref() == Some(d.prompt);
    (cwd_ours || intent_ours).then(|| id.to_string())
}

/// Dispatches a background session and returns its job id.
pub fn dispatch_claude_bg(d: &BgDispatch<'_>) -> Result<String, LaunchError> {
    let program = d.program.to_string_lossy().into_owned();
    let before = job_ids(d.jobs_dir);
    let mut command = detached(d.program, d.work_dir, d.log)?;
    command
        .arg("--bg")
        .arg("--add-dir")
        .arg(d.work_dir)
        .arg("--agent")
        .arg("me")
        .arg(d.prompt);
    add_env(&mut command, d.env);
    let mut child = command.spawn().map_err(|source| LaunchError::Exec {
        program: program.clone(),
        source,
    })?;
    let started = Instant::now();
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if started.elapsed() >= d.timeout {
            stop_own(&mut child);
            return Err(LaunchError::Hung {
                program,
                after: d.timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if !status.success() {
        return Err(LaunchError::Failed {
            program,
            status: describe_status(status),
            detail: last_line(d.log),
        });
    }
    let deadline = Instant::now() + d.wait;
    loop {
        for id in job_ids(d.jobs_dir).difference(&before) {
            if let Some(found) = is_our_job(d.jobs_dir, id, d) {
                return Ok(found);
            }
        }
        if Instant::now() >= deadline {
            return Err(LaunchError::NoJob {
                jobs_dir: d.jobs_dir.to_path_buf(),
                waited: d.wait,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops a child this monitor just spawned in its own session.
fn stop_own(child: &mut Child) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let _ = child.wait();
}

/// One `tc worker` run.
#[derive(Debug, Clone)]
pub struct TcWorkerCall<'a> {
    /// `tc` unless told otherwise.
    pub program: &'a OsStr,
    pub work_dir: &'a Path,
    pub task_id: i64,
    pub max_budget_usd: Option<f64>,
    /// The stream's log: the worker's output, appended.
    pub log: &'a Path,
    /// Variables to set for `tc` (none in production).
    pub env: &'a [(String, String)],
    /// The identity tag of the spawn, with the stream it is for: the
    /// monitor started this process, so it can prove it is its own.
    pub tag: Option<(&'a str, &'a crate::process::spawn::SpawnTag)>,
}

/// The argv after the program: `worker <task> [--max-budget-usd N]`.
pub fn tc_worker_args(task_id: i64, max_budget_usd: Option<f64>) -> Vec<String> {
    let mut args = vec!["worker".to_string(), task_id.to_string()];
    if let Some(budget) = max_budget_usd {
        args.push("--max-budget-usd".into());
        args.push(format!("{budget:.2}"));
    }
    args
}

/// Starts `tc worker` detached; the caller records and reaps the child.
pub fn spawn_tc_worker(call: &TcWorkerCall<'_>) -> Result<Child, LaunchError> {
    let mut command = detached(call.program, call.work_dir, call.log)?;
    command.args(tc_worker_args(call.task_id, call.max_budget_usd));
    add_env(&mut command, call.env);
    if let Some((stream, tag)) = call.tag {
        use crate::process::proof;
        command
            .env(proof::STREAM_VAR, stream)
            .env(proof::PROJECT_VAR, &tag.project_root)
            .env(proof::SPAWN_VAR, &tag.nonce);
    }
    command.spawn().map_err(|source| LaunchError::Exec {
        program: call.program.to_string_lossy().into_owned(),
        source,
    })
}

/// Runs the operator's `session_stop` command with `{id}` replaced by the
/// session's id, bounded in time.
pub fn stop_session(command: &[String], id: &str, timeout: Duration) -> Result<(), String> {
    let argv: Vec<String> = command.iter().map(|a| a.replace("{id}", id)).collect();
    let Some((program, args)) = argv.split_first() else {
        return Err("session_stop is empty".into());
    };
    let mut run = Command::new(program);
    run.args(args);
    for key in monitor_env() {
        run.env_remove(key);
    }
    match run_bounded(&mut run, None, timeout) {
        Ok(done) if done.status.success() => Ok(()),
        Ok(done) => Err(format!(
            "`{}` failed ({}){}",
            argv.join(" "),
            describe_status(done.status),
            done.stderr
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(|l| format!(": {l}"))
                .unwrap_or_default()
        )),
        Err(e) => Err(format!("`{}`: {e}", argv.join(" "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_pick_table() {
        use LauncherKind::*;
        let cases = [
            (None, None, true, ClaudeBg),
            (None, None, false, Wrapper),
            (None, Some(TcWorker), true, TcWorker),
            (Some(Wrapper), Some(TcWorker), true, Wrapper),
            (Some(ClaudeBg), None, false, ClaudeBg),
        ];
        for (stream, workers, tc, want) in cases {
            assert_eq!(LauncherKind::pick(stream, workers, tc), want);
        }
    }

    #[test]
    fn tc_worker_argv() {
        assert_eq!(tc_worker_args(7, None), ["worker", "7"]);
        assert_eq!(
            tc_worker_args(7, Some(3.0)),
            ["worker", "7", "--max-budget-usd", "3.00"]
        );
    }

    #[test]
    fn session_stop_fills_the_id_and_reports_failure() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let cmd = vec![
            "sh".to_string(),
            "-c".to_string(),
            format!("echo \"$1\" > {}", out.display()),
            "sh".to_string(),
            "{id}".to_string(),
        ];
        stop_session(&cmd, "ab12cd34", Duration::from_secs(5)).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), "ab12cd34");
        let failing = vec!["sh".into(), "-c".into(), "echo nope >&2; exit 4".into()];
        let err = stop_session(&failing, "x", Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("exit code 4") && err.contains("nope"), "{err}");
    }
}
