//! Claude Code background sessions as workers. The list comes from
//! `claude agents --json` (run at most once per tick, with a time limit);
//! when the CLI fails, from the job files
//! `${CLAUDE_CONFIG_DIR:-~/.claude}/jobs/<id>/state.json`. The job files also
//! give what the CLI may not: the session's prompt (`intent`), joined by id.
//! None of this is a documented stable interface, so every field is optional
//! and the parse is tolerant; output that cannot be read makes the streams
//! it concerns "cannot tell", never "dead".
//!
//! A session is tied to a stream by, in order: the job id the monitor
//! recorded when it dispatched the stream; a working directory inside the
//! stream's work dir; a prompt saying "Work on stream <id>" as upstream's
//! dispatch does.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{LiveWorker, MatchRule, Sighting, SourceKind, StreamKey, WorkerSource};
use crate::process::bounded::{run_bounded, BoundedError};

/// How long `claude agents --json` may take (it is a node start, ~0.2 s of CPU).
pub const AGENTS_TIMEOUT: Duration = Duration::from_secs(10);

/// A job file this young that cannot be read may be the live session of a
/// stream: it makes the streams without a live worker "cannot tell". Older
/// ones are only warned about.
const UNREADABLE_JOB_MATTERS: Duration = Duration::from_secs(3600);

/// One session, from the CLI or a job file, every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    pub pid: Option<i64>,
    pub id: Option<String>,
    pub name: Option<String>,
    pub status: Option<String>,
    pub state: Option<String>,
    pub session_id: Option<String>,
    pub cwd: Option<PathBuf>,
    pub started_at: Option<String>,
    pub kind: Option<String>,
    /// The original prompt (job files only).
    pub intent: Option<String>,
    /// Alive now, as far as the listing tells.
    pub live: bool,
}

/// States and statuses that mean a session has ended.
fn is_finished_word(word: &str) -> bool {
    matches!(
        word.to_ascii_lowercase().as_str(),
        "done" | "stopped" | "finished" | "completed" | "exited" | "failed" | "killed" | "dead"
    )
}

impl Session {
    /// The id to record and show: the job id, else the session id.
    pub fn label(&self) -> String {
        self.id
            .clone()
            .or_else(|| self.session_id.clone())
            .or_else(|| self.pid.map(|p| format!("pid {p}")))
            .unwrap_or_else(|| "unnamed session".into())
    }
}

/// A field as text, whether JSON holds it as a string or a number.
fn text(obj: &serde_json::Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match obj.get(*k)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn session_of(obj: &serde_json::Map<String, Value>) -> Session {
    let state = text(obj, &["state"]);
    let status = text(obj, &["status"]);
    let finished = state.as_deref().is_some_and(is_finished_word)
        || status.as_deref().is_some_and(is_finished_word);
    Session {
        pid: text(obj, &["pid"]).and_then(|p| p.trim().parse().ok()),
        id: text(obj, &["id", "jobId", "job_id"]),
        name: text(obj, &["name"]),
        status,
        state,
        session_id: text(obj, &["sessionId", "session_id"]),
        cwd: text(obj, &["cwd"]).map(PathBuf::from),
        started_at: text(obj, &["startedAt", "started_at", "createdAt"]),
        kind: text(obj, &["kind"]),
        intent: text(obj, &["intent", "prompt"]),
        live: !finished,
    }
}

/// Parses `claude agents --json`: a JSON array of sessions, or an object
/// holding the list (under `agents`, `sessions`, `items`, `data`, or its
/// only array). Entries that are not objects are skipped. Empty output is
/// an error (the CLI printed nothing it means); `[]` is "no sessions".
pub fn parse_agents(output: &str) -> Result<Vec<Session>, String> {
    if output.trim().is_empty() {
        return Err("it printed nothing".into());
    }
    let value: Value =
        serde_json::from_str(output.trim()).map_err(|e| format!("its output is not JSON ({e})"))?;
    let list = match &value {
        Value::Array(list) => list,
        Value::Object(obj) => {
            let named = ["agents", "sessions", "items", "data", "results"]
                .iter()
                .find_map(|k| obj.get(*k).and_then(Value::as_array));
            let arrays: Vec<&Vec<Value>> = obj.values().filter_map(Value::as_array).collect();
            match (named, arrays.as_slice()) {
                (Some(list), _) => list,
                (None, [only]) => only,
                _ => return Err("its JSON object holds no list of sessions".into()),
            }
        }
        _ => return Err("its JSON is neither a list nor an object".into()),
    };
    Ok(list
        .iter()
        .filter_map(Value::as_object)
        .map(session_of)
        .collect())
}

/// One job file, `jobs/<id>/state.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub state: Option<String>,
    pub name: Option<String>,
    pub intent: Option<String>,
    pub cwd: Option<PathBuf>,
    pub session_id: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

pub fn parse_job(id: &str, text_: &str) -> Result<Job, String> {
    let value: Value = serde_json::from_str(text_).map_err(|e| format!("not JSON ({e})"))?;
    let obj = value.as_object().ok_or("not a JSON object")?;
    Ok(Job {
        id: id.to_string(),
        state: text(obj, &["state"]),
        name: text(obj, &["name"]),
        intent: text(obj, &["intent"]),
        cwd: text(obj, &["cwd"]).map(PathBuf::from),
        session_id: text(obj, &["sessionId", "session_id"]),
        created_at: text(obj, &["createdAt", "created_at"]),
        updated_at: text(obj, &["updatedAt", "updated_at"]),
    })
}

impl Job {
    /// A job is live unless its state says it ended; a job without a state
    /// is taken as live, so it is never twinned.
    pub fn is_live(&self) -> bool {
        !self.state.as_deref().is_some_and(is_finished_word)
    }

    /// The job as a session (for matching).
    pub fn session(&self) -> Session {
        Session {
            id: Some(self.id.clone()),
            name: self.name.clone(),
            state: self.state.clone(),
            session_id: self.session_id.clone(),
            cwd: self.cwd.clone(),
            started_at: self.created_at.clone(),
            intent: self.intent.clone(),
            live: self.is_live(),
            ..Session::default()
        }
    }
}

/// `${CLAUDE_CONFIG_DIR:-$HOME/.claude}`.
pub fn config_dir() -> Option<PathBuf> {
    match std::env::var_os("CLAUDE_CONFIG_DIR") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".claude")),
    }
}

pub fn jobs_dir(config_dir: &Path) -> PathBuf {
    config_dir.join("jobs")
}

/// What the jobs folder holds.
#[derive(Debug, Clone, Default)]
pub struct JobsRead {
    pub jobs: Vec<Job>,
    /// The folder does not exist (no background session ever ran here).
    pub missing: bool,
    /// The folder or a recent job file could not be read, and why.
    pub unreadable: Option<String>,
    pub warnings: Vec<String>,
}

/// Reads every `jobs/<id>/state.json`. Job ids are folder names; a folder
/// without a state file is a job still being set up and is skipped.
pub fn read_jobs(dir: &Path) -> JobsRead {
    let mut read = JobsRead::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            read.missing = true;
            return read;
        }
        Err(e) => {
            read.unreadable = Some(format!("cannot read {}: {e}", dir.display()));
            return read;
        }
    };
    for entry in entries.flatten() {
        let Some(id) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let file = entry.path().join("state.json");
        let problem = match std::fs::read_to_string(&file) {
            Ok(body) => match parse_job(&id, &body) {
                Ok(job) => {
                    read.jobs.push(job);
                    continue;
                }
                Err(why) => why,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => e.to_string(),
        };
        let recent = std::fs::metadata(&file)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_none_or(|age| age < UNREADABLE_JOB_MATTERS);
        let message = format!("job file {} cannot be read: {problem}", file.display());
        if recent && read.unreadable.is_none() {
            read.unreadable = Some(message.clone());
        }
        read.warnings.push(message);
    }
    read.jobs.sort_by(|a, b| a.id.cmp(&b.id));
    read
}

/// How to list sessions.
#[derive(Debug, Clone)]
pub struct ListSettings {
    /// The `claude` program (`claude` on PATH unless told).
    pub program: OsString,
    pub jobs_dir: PathBuf,
    /// Add finished background sessions (`--all`).
    pub all: bool,
    pub timeout: Duration,
    /// Variables to set for `claude` (none in production).
    pub env: Vec<(String, String)>,
}

impl ListSettings {
    /// `claude` on PATH and the config dir of this environment.
    pub fn from_env(all: bool) -> Option<ListSettings> {
        Some(ListSettings {
            program: "claude".into(),
            jobs_dir: jobs_dir(&config_dir()?),
            all,
            timeout: AGENTS_TIMEOUT,
            env: Vec::new(),
        })
    }
}

/// Every session seen this tick, live and finished.
#[derive(Debug, Clone, Default)]
pub struct SessionsRead {
    pub sessions: Vec<Session>,
    /// Where the list came from: "claude agents" or "job files".
    pub via: &'static str,
    /// Set when the sessions cannot be told: the streams without another
    /// proof of a live worker are unknown.
    pub cannot_tell: Option<String>,
    pub warnings: Vec<String>,
}

/// Lists sessions: `claude agents --json` once, joined with the job files
/// by id for the prompt; the job files alone when the CLI fails.
pub fn read_sessions(settings: &ListSettings) -> SessionsRead {
    let jobs = read_jobs(&settings.jobs_dir);
    let mut command = Command::new(&settings.program);
    command
        .arg("agents")
        .arg("--json")
        .envs(settings.env.iter().map(|(k, v)| (k, v)));
    if settings.all {
        command.arg("--all");
    }
    let cli = match run_bounded(&mut command, None, settings.timeout) {
        Ok(done) if done.status.success() => parse_agents(&done.stdout),
        Ok(done) => Err(format!(
            "it failed ({}){}",
            crate::process::spawn::describe_status(done.status),
            first_line(&done.stderr)
                .map(|l| format!(": {l}"))
                .unwrap_or_default()
        )),
        Err(BoundedError::Spawn(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Err("claude is not installed (not on PATH)".into())
        }
        Err(e) => Err(e.to_string()),
    };
    let cli_absent = matches!(&cli, Err(why) if why.contains("not on PATH"));
    let mut read = SessionsRead {
        warnings: jobs.warnings.clone(),
        ..SessionsRead::default()
    };
    match cli {
        Ok(mut sessions) => {
            read.via = "claude agents";
            let by_id: BTreeMap<&str, &Job> =
                jobs.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
            for s in &mut sessions {
                let job =
                    s.id.as_deref()
                        .and_then(|id| by_id.get(id).copied())
                        .or_else(|| {
                            let sid = s.session_id.as_deref()?;
                            jobs.jobs
                                .iter()
                                .find(|j| j.session_id.as_deref() == Some(sid))
                        });
                if let Some(job) = job {
                    s.intent = s.intent.take().or_else(|| job.intent.clone());
                    s.cwd = s.cwd.take().or_else(|| job.cwd.clone());
                    s.session_id = s.session_id.take().or_else(|| job.session_id.clone());
                    s.id = s.id.take().or_else(|| Some(job.id.clone()));
                }
            }
            // The CLI is the authority on what is alive: a job it does not
            // list has ended, whatever its file still says (a killed
            // session cannot update it).
            for job in &jobs.jobs {
                let listed = sessions.iter().any(|s| {
                    s.id.as_deref() == Some(job.id.as_str())
                        || (job.session_id.is_some() && s.session_id == job.session_id)
                });
                if !listed {
                    let mut ended = job.session();
                    ended.live = false;
                    sessions.push(ended);
                }
            }
            read.sessions = sessions;
        }
        Err(why) => {
            read.via = "job files";
            let failed = format!("`claude agents --json` cannot list sessions: {why}");
            if let Some(problem) = jobs.unreadable {
                read.cannot_tell = Some(format!("{failed}; {problem}"));
            } else if jobs.missing && !cli_absent {
                read.cannot_tell = Some(format!(
                    "{failed}; and there are no job files at {} to fall back on",
                    settings.jobs_dir.display()
                ));
            } else if !jobs.missing {
                read.warnings
                    .push(format!("{failed}; read the job files instead"));
            }
            read.sessions = jobs.jobs.iter().map(Job::session).collect();
        }
    }
    read
}

fn first_line(text_: &str) -> Option<&str> {
    text_.lines().map(str::trim).find(|l| !l.is_empty())
}

/// The stream ids a prompt names the way upstream's dispatch does:
/// "Work on stream <id>" (the id ends at a space, `.` or `,`).
pub fn streams_named_by_intent(intent: &str) -> Vec<&str> {
    const MARK: &str = "Work on stream ";
    let mut found = Vec::new();
    let mut rest = intent;
    while let Some(at) = rest.find(MARK) {
        rest = &rest[at + MARK.len()..];
        let token = rest
            .split(|c: char| c.is_whitespace() || c == ',')
            .next()
            .unwrap_or("")
            .trim_end_matches(['.', ':', ';', '"', '\'', ')']);
        let token = token.trim_start_matches(['"', '\'', '(']);
        if !token.is_empty() {
            found.push(token);
        }
    }
    found
}

/// A path made absolute and canonical when it exists (lexically otherwise).
fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// Which stream a session belongs to, and by which rule.
pub fn match_session(session: &Session, streams: &[StreamKey<'_>]) -> Option<(usize, MatchRule)> {
    let ids = [session.id.as_deref(), session.session_id.as_deref()];
    if let Some(i) = streams
        .iter()
        .position(|s| s.recorded_job.is_some_and(|job| ids.contains(&Some(job))))
    {
        return Some((i, MatchRule::Recorded));
    }
    if let Some(cwd) = session.cwd.as_deref().filter(|c| c.is_absolute()) {
        let cwd = canonical(cwd);
        let deepest = streams
            .iter()
            .enumerate()
            .filter(|(_, s)| cwd.starts_with(s.work_dir))
            .max_by_key(|(_, s)| s.work_dir.components().count());
        if let Some((i, _)) = deepest {
            return Some((i, MatchRule::WorkDir));
        }
    }
    let intent = session.intent.as_deref()?;
    for named in streams_named_by_intent(intent) {
        if let Some(i) = streams
            .iter()
            .position(|s| s.id == named || s.aliases.iter().any(|a| a == named))
        {
            return Some((i, MatchRule::Intent));
        }
    }
    None
}

/// The session source of one tick: the sessions listed once, matched to
/// the streams asked about.
#[derive(Debug, Clone, Default)]
pub struct ClaudeSessions {
    pub read: SessionsRead,
}

impl ClaudeSessions {
    /// Lists the sessions now (one `claude agents` run at most).
    pub fn list(settings: &ListSettings) -> ClaudeSessions {
        ClaudeSessions {
            read: read_sessions(settings),
        }
    }
}

impl WorkerSource for ClaudeSessions {
    fn kind(&self) -> SourceKind {
        SourceKind::ClaudeSession
    }

    fn observe(&mut self, streams: &[StreamKey<'_>]) -> BTreeMap<String, Sighting> {
        let mut out: BTreeMap<String, Sighting> = BTreeMap::new();
        for session in &self.read.sessions {
            let Some((i, rule)) = match_session(session, streams) else {
                continue;
            };
            let sighting = out.entry(streams[i].id.to_string()).or_default();
            if session.live {
                sighting.live.push(LiveWorker {
                    source: SourceKind::ClaudeSession,
                    id: session.label(),
                    pid: session.pid.and_then(|p| i32::try_from(p).ok()),
                    rule,
                    started_at: session.started_at.clone(),
                });
            } else {
                sighting.ran = true;
            }
        }
        if let Some(why) = &self.read.cannot_tell {
            for s in streams {
                out.entry(s.id.to_string()).or_default().cannot_tell = Some(why.clone());
            }
        }
        out
    }

    fn warnings(&self) -> Vec<String> {
        self.read.warnings.clone()
    }
}

#[cfg(test)]
#[path = "claude_session_tests.rs"]
mod tests;
