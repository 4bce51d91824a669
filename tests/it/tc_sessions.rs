//! Supervising a tc project's workers as upstream starts them: Claude Code
//! background sessions (`claude --bg`, listed by `claude agents --json`, with
//! job files under `$CLAUDE_CONFIG_DIR/jobs`) and `tc worker <task>`
//! processes, working in git worktrees `.worktrees/<id>`. The fake `claude`
//! (scripts/fake-claude) keeps real job files and real detached sessions;
//! the fake `tc` (scripts/fake-tc) is a real foreground process.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use monitor_workers::layout::StreamId;
use monitor_workers::workers::claude_session::{ClaudeSessions, ListSettings};
use monitor_workers::workers::launch::{self, BgDispatch, TcWorkerCall};
use monitor_workers::workers::{self, tc_worker, worktree, MatchRule, Presence, StreamKey};

use crate::helpers::*;
use crate::tc_schema::TcDb;

/// How long a test waits for something that should happen promptly.
const WAIT: Duration = Duration::from_secs(15);

/// A tc project in a git repository, with the fake `tc` beside the fake
/// `claude` and a Claude config dir of its own.
struct TcProject {
    p: TestProject,
    tc: TcDb,
}

impl TcProject {
    fn new() -> TcProject {
        let p = TestProject::new();
        let tc = TcDb::create(&p);
        git_repository(&p.proj);
        std::os::unix::fs::symlink(
            Path::new(MANIFEST).join("scripts/fake-tc"),
            p.bin_dir.join("tc"),
        )
        .unwrap();
        p.set_env("CLAUDE_CONFIG_DIR", &config_dir(&p).display().to_string());
        TcProject { p, tc }
    }

    fn jobs_dir(&self) -> PathBuf {
        config_dir(&self.p).join("jobs")
    }

    /// The environment the fakes need when the test (not the monitor) runs them.
    fn fake_env(&self) -> Vec<(String, String)> {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        vec![
            (
                "PATH".into(),
                format!("{}:{path}", self.p.bin_dir.display()),
            ),
            ("HOME".into(), self.p.home.display().to_string()),
            (
                "CLAUDE_CONFIG_DIR".into(),
                config_dir(&self.p).display().to_string(),
            ),
            ("MW_TEST_TAG".into(), self.p.root.display().to_string()),
            ("FAKE_CLAUDE_LIFETIME".into(), "60".into()),
        ]
    }

    fn list_settings(&self) -> ListSettings {
        ListSettings {
            program: self.p.bin_dir.join("claude").into(),
            jobs_dir: self.jobs_dir(),
            all: false,
            timeout: Duration::from_secs(10),
            env: self.fake_env(),
        }
    }

    /// The job's state.json as JSON (null while it is not written yet).
    fn job(&self, id: &str) -> serde_json::Value {
        fs::read_to_string(self.jobs_dir().join(id).join("state.json"))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// The PID of a fake session (the fake keeps it beside its job file).
    fn session_pid(&self, id: &str) -> u32 {
        let file = self.jobs_dir().join(id).join("fake-pid");
        assert!(
            wait_for(|| file.is_file(), WAIT),
            "session {id} wrote no pid"
        );
        fs::read_to_string(file).unwrap().trim().parse().unwrap()
    }
}

fn config_dir(p: &TestProject) -> PathBuf {
    p.root.join("claude-config")
}

/// Makes `dir` a git repository with one commit (the monitor's folders ignored).
pub fn git_repository(dir: &Path) {
    git(dir, &["init", "-q", "-b", "main", "."]);
    fs::write(dir.join(".gitignore"), ".claude/\n.copilot/\n.worktrees/\n").unwrap();
    git(dir, &["add", ".gitignore"]);
    git(dir, &["commit", "-q", "-m", "init"]);
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

fn id(s: &str) -> StreamId {
    StreamId::parse(s).unwrap()
}

fn environ(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect()
}

/// `claude --bg` dispatch: the session runs detached in the worktree, the
/// job it leaves is found and its id returned, the monitor's own settings
/// are not passed on; the session is then listed, matched to its stream by
/// the recorded id, and seen to end (stopped) when killed.
#[test]
fn claude_bg_dispatch_is_identified_listed_and_seen_to_end() {
    let t = TcProject::new();
    let stream = t.tc.stream("api", None, "active");
    t.tc.task(stream, "pending");
    let sid = stream.to_string();
    let work_dir = worktree::ensure(&t.p.proj, &id(&sid), None).unwrap();
    assert_eq!(work_dir, t.p.proj.join(".worktrees").join(&sid));
    let prompt = upstream_prompt(&sid);
    let mut env = t.fake_env();
    env.push(("MONITOR_WORKERS_PROJECT_ROOT".into(), "/elsewhere".into()));
    let args_file = t.p.root.join("claude-args");
    env.push((
        "FAKE_CLAUDE_ARGS_FILE".into(),
        args_file.display().to_string(),
    ));
    let log = t.p.root.join("dispatch.log");
    let job = launch::dispatch_claude_bg(&BgDispatch {
        program: t.p.bin_dir.join("claude").as_os_str(),
        work_dir: &work_dir,
        prompt: &prompt,
        jobs_dir: &t.jobs_dir(),
        log: &log,
        timeout: Duration::from_secs(10),
        wait: Duration::from_secs(5),
        env: &env,
    })
    .unwrap();
    assert_eq!(job.len(), 8, "a job id: {job}");
    let args = fs::read_to_string(&args_file).unwrap();
    let want = format!(
        "--bg\n--add-dir\n{}\n--agent\nme\n{prompt}\ncwd={}\n",
        work_dir.display(),
        work_dir.display()
    );
    assert!(
        args.starts_with(&want),
        "argv and cwd as upstream's: {args}"
    );
    let state = t.job(&job);
    assert_eq!(state["intent"], prompt.as_str());
    assert_eq!(state["cwd"], work_dir.display().to_string());
    let pid = t.session_pid(&job);
    assert!(
        environ(pid)
            .iter()
            .all(|e| !e.starts_with("MONITOR_WORKERS_")),
        "the monitor's settings are not passed on: {:?}",
        environ(pid)
    );
    assert!(wait_for(|| t.job(&job)["state"] == "working", WAIT));

    let aliases = vec!["api".to_string()];
    let key = |recorded| StreamKey {
        id: &sid,
        aliases: &aliases,
        work_dir: &work_dir,
        recorded_job: recorded,
    };
    let mut source = ClaudeSessions::list(&t.list_settings());
    assert_eq!(source.read.via, "claude agents");
    let merged = workers::observe_all(&mut [&mut source], &[key(Some(job.as_str()))]);
    assert_eq!(merged[&sid].presence(), Presence::Running);
    assert_eq!(merged[&sid].live[0].rule, MatchRule::Recorded);
    assert_eq!(merged[&sid].live[0].id, job);
    // Without the record, its worktree ties it to the stream.
    let merged = workers::observe_all(&mut [&mut source], &[key(None)]);
    assert_eq!(merged[&sid].live[0].rule, MatchRule::WorkDir);

    t.p.signal_ours(pid, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_for(|| t.job(&job)["state"] == "stopped", WAIT));
    let mut source = ClaudeSessions::list(&t.list_settings());
    let merged = workers::observe_all(&mut [&mut source], &[key(Some(job.as_str()))]);
    assert_eq!(merged[&sid].presence(), Presence::Gone, "{merged:?}");
}

/// A session killed outright leaves its job file saying "working": the CLI,
/// which no longer lists it, is believed. When the CLI fails, the job files
/// are read instead; when it prints nothing and there are no job files, the
/// stream cannot be told (never "gone").
#[test]
fn a_crashed_session_is_gone_and_unreadable_listings_cannot_tell() {
    let t = TcProject::new();
    let stream = t.tc.stream("api", None, "active");
    let sid = stream.to_string();
    let work_dir = worktree::ensure(&t.p.proj, &id(&sid), None).unwrap();
    let key = StreamKey {
        id: &sid,
        aliases: &[],
        work_dir: &work_dir,
        recorded_job: None,
    };
    let mut settings = t.list_settings();
    settings
        .env
        .push(("FAKE_CLAUDE_AGENTS".into(), "empty".into()));
    let mut source = ClaudeSessions::list(&settings);
    assert!(
        source.read.cannot_tell.is_some(),
        "empty output and no job files"
    );
    let merged = workers::observe_all(&mut [&mut source], std::slice::from_ref(&key));
    assert_eq!(merged[&sid].presence(), Presence::Unknown);

    let prompt = format!("Work on stream {sid}. Run: tc task list --stream {sid} --json");
    let job = launch::dispatch_claude_bg(&BgDispatch {
        program: t.p.bin_dir.join("claude").as_os_str(),
        work_dir: &work_dir,
        prompt: &prompt,
        jobs_dir: &t.jobs_dir(),
        log: &t.p.root.join("dispatch.log"),
        timeout: Duration::from_secs(10),
        wait: Duration::from_secs(5),
        env: &t.fake_env(),
    })
    .unwrap();
    let pid = t.session_pid(&job);
    // The CLI fails: the job files say it works.
    settings.env.pop();
    settings
        .env
        .push(("FAKE_CLAUDE_AGENTS".into(), "fail".into()));
    let mut source = ClaudeSessions::list(&settings);
    assert_eq!(source.read.via, "job files");
    let merged = workers::observe_all(&mut [&mut source], std::slice::from_ref(&key));
    assert_eq!(merged[&sid].presence(), Presence::Running);

    t.p.signal_ours(pid, nix::sys::signal::Signal::SIGKILL);
    assert!(wait_for(|| !is_alive(pid), WAIT));
    assert_eq!(t.job(&job)["state"], "working", "a crash updates nothing");
    let mut source = ClaudeSessions::list(&t.list_settings());
    let merged = workers::observe_all(&mut [&mut source], std::slice::from_ref(&key));
    assert_eq!(merged[&sid].presence(), Presence::Gone, "{merged:?}");
}

/// `tc worker <task>` runs detached in the worktree with the budget, is
/// found by one pass over /proc and tied to its stream through its task.
#[test]
fn tc_worker_launch_is_found_and_tied_to_its_stream() {
    let t = TcProject::new();
    let stream = t.tc.stream("api", None, "active");
    let task = t.tc.task(stream, "pending");
    let sid = stream.to_string();
    let work_dir = worktree::ensure(&t.p.proj, &id(&sid), None).unwrap();
    let args_file = t.p.root.join("tc-args");
    let mut env = t.fake_env();
    env.push(("FAKE_TC_ARGS_FILE".into(), args_file.display().to_string()));
    let log = t.p.root.join("tc-worker.log");
    let mut child = launch::spawn_tc_worker(&TcWorkerCall {
        program: t.p.bin_dir.join("tc").as_os_str(),
        work_dir: &work_dir,
        task_id: task,
        max_budget_usd: Some(3.0),
        log: &log,
        env: &env,
        tag: None,
    })
    .unwrap();
    // The fake writes its arguments a line at a time: wait for the last.
    let written = || fs::read_to_string(&args_file).is_ok_and(|s| s.ends_with("--\n"));
    assert!(wait_for(written, WAIT));
    assert_eq!(
        fs::read_to_string(&args_file).unwrap(),
        format!(
            "worker\n{task}\n--max-budget-usd\n3.00\ncwd={}\n--\n",
            work_dir.display()
        )
    );
    let mut found = Vec::new();
    assert!(wait_for(
        || {
            found = tc_worker::scan(&t.p.proj);
            found.iter().any(|w| w.pid == child.id() as i32)
        },
        WAIT
    ));
    assert_eq!(found[0].task_id, task);
    let mut source = tc_worker::TcWorkers {
        task_streams: monitor_workers::store::streams_of_tasks(
            &t.tc.path,
            &[task],
            Duration::from_secs(5),
        )
        .unwrap(),
        processes: found,
    };
    let key = StreamKey {
        id: &sid,
        aliases: &[],
        work_dir: &work_dir,
        recorded_job: None,
    };
    let merged = workers::observe_all(&mut [&mut source], &[key]);
    assert_eq!(merged[&sid].presence(), Presence::Running);
    assert!(
        wait_for(
            || fs::read_to_string(&log)
                .is_ok_and(|l| l.contains("fake-claude: working on Work on task")),
            WAIT
        ),
        "tc worker runs claude --print: {:?}",
        fs::read_to_string(&log)
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// The worktree rules end to end in a real repository: a stored path
/// outside the project is not used; a non-git project is refused with the
/// reason, and nothing is created.
#[test]
fn worktrees_are_git_worktrees_inside_the_project() {
    let t = TcProject::new();
    let outside = t.p.root.join("outside");
    fs::create_dir_all(&outside).unwrap();
    let dir = worktree::ensure(&t.p.proj, &id("4"), Some(&outside.display().to_string())).unwrap();
    assert_eq!(dir, t.p.proj.join(".worktrees/4"));
    let branches = Command::new("git")
        .args(["branch", "--list", "stream/4"])
        .current_dir(&t.p.proj)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&branches.stdout).contains("stream/4"));

    let plain = TestProject::new();
    let err = worktree::ensure(&plain.proj, &id("1"), None).unwrap_err();
    assert!(err.to_string().contains("is not a git repository"), "{err}");
    assert!(!plain.proj.join(".worktrees").exists());
}

// ----- the monitor on a tc project ----------------------------------------------

/// Upstream's dispatch text for stream `id`.
fn upstream_prompt(id: &str) -> String {
    format!("Work on stream {id}. Run: tc task list --stream {id} --json")
}

impl TcProject {
    /// A stream with one task per status given.
    fn stream(&self, name: &str, statuses: &[&str]) -> (i64, String) {
        let id = self.tc.stream(name, None, "active");
        for status in statuses {
            self.tc.task(id, status);
        }
        (id, id.to_string())
    }

    /// A finished session of the stream in the job files, as a session that
    /// worked on it and ended leaves behind.
    fn ended_session(&self, sid: &str) {
        let job = self.jobs_dir().join(format!("done{sid:0>4}"));
        fs::create_dir_all(&job).unwrap();
        let body = serde_json::json!({
            "state": "done",
            "intent": upstream_prompt(sid),
            "cwd": self.p.proj.display().to_string(),
            "sessionId": format!("old-{sid}"),
            "createdAt": "2026-01-01T00:00:00Z",
            "updatedAt": "2026-01-01T01:00:00Z",
        });
        fs::write(job.join("state.json"), body.to_string()).unwrap();
    }

    /// Job ids in the job folder.
    fn jobs(&self) -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(self.jobs_dir())
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Starts a session as upstream's `/orchestrate start` does: from the
    /// project root, with `--add-dir .worktrees/<id>`. Returns its job id.
    fn upstream_dispatch(&self, sid: &str) -> String {
        worktree::ensure(&self.p.proj, &id(sid), None).unwrap();
        let before = self.jobs();
        let status = self
            .p
            .command(self.p.bin_dir.join("claude"))
            .args([
                "--bg",
                "--add-dir",
                &format!(".worktrees/{sid}"),
                "--agent",
                "me",
            ])
            .arg(upstream_prompt(sid))
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let job = self
            .jobs()
            .into_iter()
            .find(|j| !before.contains(j))
            .expect("a new job");
        self.session_pid(&job);
        job
    }

    fn status_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["status", "--json"];
        all.extend_from_slice(args);
        let r = self.p.run(&all);
        r.no_panic();
        serde_json::from_str(&r.stdout).unwrap_or_else(|_| panic!("status --json: {r:?}"))
    }
}

fn stream_of<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no stream {id} in {report:#}"))
}

/// A stream whose session ended with work open is dead (exit 1); with
/// --auto-restart it is dispatched again, once, as upstream would, in its
/// git worktree `.worktrees/<id>`; the next checks see the new session
/// alive and start nothing more.
#[test]
fn a_dead_session_is_reported_and_redispatched_once_into_its_worktree() {
    let t = TcProject::new();
    let (_, sid) = t.stream("api", &["completed", "pending"]);
    t.ended_session(&sid);
    t.p.run(&[])
        .expect_code(1)
        .stdout_has(&format!("Found 1 dead worker(s): {sid}"))
        .stdout_lacks("All workers healthy")
        .no_panic();
    assert_eq!(t.jobs().len(), 1, "a report-only check starts nothing");

    let r = t.p.run(&["--auto-restart"]);
    r.expect_code(1)
        .stdout_has(&format!("Restarting worker {sid} (attempt 1/2)"))
        .stdout_has(&format!("Worker {sid} restarted (session "))
        .no_panic();
    let jobs = t.jobs();
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let new = jobs
        .iter()
        .find(|j| !j.starts_with("done"))
        .unwrap()
        .clone();
    let work_dir = t.p.proj.join(".worktrees").join(&sid);
    let state = t.job(&new);
    assert_eq!(state["cwd"], work_dir.display().to_string());
    assert!(
        state["intent"]
            .as_str()
            .unwrap()
            .starts_with(&upstream_prompt(&sid)),
        "{state}"
    );
    assert!(worktree::listed(&t.p.proj).unwrap().contains(&work_dir));
    assert!(!t.p.proj.join(".claude/worktrees").join(&sid).exists());
    assert_eq!(
        t.p.state_json()["streams"][&sid]["session_job"],
        new.as_str()
    );

    for args in [&[][..], &["--auto-restart"][..]] {
        t.p.run(args)
            .expect_code(0)
            .stdout_has("All workers healthy")
            .stdout_lacks("Restarting")
            .no_panic();
    }
    assert_eq!(t.jobs().len(), 2, "no second session");
    let report = t.status_json(&[]);
    let s = stream_of(&report, &sid);
    assert_eq!(s["health"], "healthy", "{s:#}");
    assert_eq!(s["tc_id"], sid.parse::<i64>().unwrap());
    assert_eq!(s["worktree"], work_dir.display().to_string());
    assert_eq!(s["name"], "api");
}

/// A live session someone else started (upstream's own dispatch, from the
/// project root) is never twinned, even with an old log that once made the
/// stream look dead.
#[test]
fn a_live_session_anyone_started_is_never_twinned() {
    let t = TcProject::new();
    let (_, sid) = t.stream("api", &["in_progress", "pending"]);
    crate::tc_schema::tc_evidence_log(&t.p, sid.parse().unwrap());
    let job = t.upstream_dispatch(&sid);
    let r = t.p.run(&["--auto-restart", "--start-ready"]);
    r.expect_code(0)
        .stdout_has("All workers healthy")
        .stdout_lacks("Restarting")
        .stdout_lacks("Starting worker")
        .no_panic();
    assert_eq!(t.jobs(), std::slice::from_ref(&job));
    let s = t.status_json(&[]);
    let s = stream_of(&s, &sid);
    assert_eq!(s["health"], "healthy");
    assert!(s["workers"][0].as_str().unwrap().contains(&job), "{s:#}");
}

/// A stream whose label dependency (metadata `dependencies` naming another
/// stream's `streamId`) is open waits: not dead, not started; once the
/// other stream completes, it is dead and restarted.
#[test]
fn a_stream_whose_label_dependency_is_open_waits() {
    let t = TcProject::new();
    let (schema, schema_id) = t.stream("schema", &[]);
    let first = t.tc.task(schema, "in_progress");
    t.tc.conn()
        .execute(
            "UPDATE tasks SET metadata = '{\"streamId\":\"Stream-A\"}' WHERE stream_id = ?1",
            [schema],
        )
        .unwrap();
    let (api, sid) = t.stream("api", &["pending"]);
    t.tc
        .conn()
        .execute(
            "UPDATE tasks SET metadata = '{\"streamId\":\"Stream-B\",\"dependencies\":[\"Stream-A\"]}' WHERE stream_id = ?1",
            [api],
        )
        .unwrap();
    t.ended_session(&sid);
    let schema_job = t.upstream_dispatch(&schema_id);
    let r = t.p.run(&["--auto-restart", "--start-ready"]);
    r.expect_code(0)
        .stdout_lacks("dead worker")
        .stdout_lacks("Starting worker")
        .no_panic();
    let report = t.status_json(&[]);
    assert_eq!(stream_of(&report, &sid)["health"], "waiting");
    assert_eq!(
        stream_of(&report, &sid)["dependencies"],
        serde_json::json!([schema_id])
    );
    assert_eq!(
        t.jobs().len(),
        2,
        "nothing dispatched for the waiting stream"
    );

    t.tc.set_status(first, "completed");
    t.p.run(&["--auto-restart"])
        .expect_code(1)
        .stdout_has(&format!("Found 1 dead worker(s): {sid}"))
        .stdout_has(&format!("Worker {sid} restarted (session "))
        .no_panic();
    let _ = schema_job;
}

/// A stream whose open tasks are all blocked is left alone: not dead, not
/// restarted, said once; the check is healthy otherwise.
#[test]
fn an_all_blocked_stream_is_left_alone() {
    let t = TcProject::new();
    let (_, sid) = t.stream("api", &["completed", "blocked", "blocked"]);
    t.ended_session(&sid);
    crate::tc_schema::tc_evidence_log(&t.p, sid.parse().unwrap());
    for _ in 0..3 {
        t.p.run(&["--auto-restart", "--start-ready"])
            .expect_code(0)
            .stdout_has(&format!("Stream {sid} is blocked"))
            .stdout_lacks("Restarting")
            .no_panic();
    }
    assert_eq!(t.jobs().len(), 1);
    let report = t.status_json(&[]);
    assert_eq!(stream_of(&report, &sid)["health"], "blocked");
}

/// "All workers healthy" is never said while work is unattended: a stream
/// with a task ready and no worker is named (exit 0; --start-ready starts
/// it once); workers that cannot be told are named and exit 3.
#[test]
fn no_all_healthy_while_work_is_unattended() {
    let t = TcProject::new();
    let (_, sid) = t.stream("api", &["pending"]);
    t.p.run(&[])
        .expect_code(0)
        .stdout_lacks("All workers healthy")
        .stdout_has(&format!(
            "1 stream(s) ready with no worker: {sid}; start them with --start-ready"
        ))
        .no_panic();
    assert_eq!(stream_of(&t.status_json(&[]), &sid)["health"], "ready");
    t.p.run(&["status"]).expect_code(0).stdout_has("… ready");

    // The session listing cannot be read, and no job file says otherwise.
    t.p.set_env("FAKE_CLAUDE_AGENTS", "empty");
    t.p.run(&["--auto-restart"])
        .expect_code(3)
        .stdout_lacks("All workers healthy")
        .stdout_has(&format!("Cannot tell whether 1 worker(s) are alive: {sid}"))
        .no_panic();
    t.p.run(&["status"]).expect_code(3).stdout_has("? unknown");

    t.p.set_env("FAKE_CLAUDE_AGENTS", "ok");
    t.p.run(&["--start-ready"])
        .expect_code(0)
        .stdout_has(&format!("Worker {sid} started (session "))
        .no_panic();
    t.p.run(&["--start-ready"])
        .expect_code(0)
        .stdout_has("All workers healthy")
        .stdout_lacks("started (session")
        .no_panic();
    assert_eq!(t.jobs().len(), 1, "started once");
}

/// Every verb takes a stream's name as well as its id; the status table has
/// a NAME column.
#[test]
fn streams_are_addressed_by_name() {
    let t = TcProject::new();
    let (_, sid) = t.stream("checkout-api", &["pending"]);
    t.p.run(&["status"])
        .expect_code(0)
        .stdout_has("NAME")
        .stdout_has("checkout-api")
        .no_panic();
    let report = t.status_json(&["checkout-api"]);
    assert_eq!(report["streams"].as_array().unwrap().len(), 1);
    assert_eq!(report["streams"][0]["id"], sid.as_str());
    t.p.run(&["pause", "checkout-api"])
        .expect_code(0)
        .no_panic();
    assert_eq!(
        t.p.state_json()["streams"][&sid]["lifecycle"]["state"],
        "paused"
    );
    t.p.run(&["resume", "checkout-api"])
        .expect_code(0)
        .no_panic();
    t.p.run(&["pause", "no-such-stream"])
        .expect_code(2)
        .no_panic();
}

/// Stopping a stream whose session is alive goes through `session_stop`
/// only: without one the session is left running and the operator told.
#[test]
fn a_session_is_stopped_only_through_session_stop() {
    let t = TcProject::new();
    let (_, sid) = t.stream("api", &["pending"]);
    let job = t.upstream_dispatch(&sid);
    let pid = t.session_pid(&job);
    t.p.run(&["stop", &sid])
        .expect_code(3)
        .stderr_has("no session_stop configured")
        .no_panic();
    assert!(is_alive(pid), "a session is never signalled by the monitor");

    let stopper = t.p.bin_dir.join("stop-session");
    fs::write(
        &stopper,
        "#!/bin/sh\nkill \"$(cat \"$CLAUDE_CONFIG_DIR/jobs/$1/fake-pid\")\"\n",
    )
    .unwrap();
    fs::set_permissions(
        &stopper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    t.p.write_config(&format!(
        "[workers]\nsession_stop = [\"{}\", \"{{id}}\"]\n",
        stopper.display()
    ));
    t.p.run(&["stop", "api"]).expect_code(0).no_panic();
    assert!(wait_for(|| t.job(&job)["state"] == "stopped", WAIT));
    assert!(t.p.monitor_log().contains(&format!("(session {job}) for")));
}

/// The tc-worker launcher runs `tc worker <next ready task>` with the
/// budget, in the stream's worktree, and the process counts as its worker.
#[test]
fn the_tc_worker_launcher_runs_the_next_ready_task() {
    let t = TcProject::new();
    let (api, sid) = t.stream("api", &["completed"]);
    let task = t.tc.task(api, "pending");
    let args_file = t.p.root.join("tc-args");
    t.p.set_env("FAKE_TC_ARGS_FILE", &args_file.display().to_string());
    t.p.write_config("[workers]\nlauncher = \"tc-worker\"\nmax_budget_usd = 3.0\n");
    let r = t.p.run(&["--start-ready"]);
    r.expect_code(0)
        .stdout_has(&format!("Worker {sid} started (PID: "))
        .no_panic();
    let pid = pid_after(&r.stdout, &format!("Worker {sid} started (PID:")).unwrap();
    assert!(
        environ(pid).contains(&format!("MONITOR_WORKERS_STREAM={sid}")),
        "a tc worker the monitor starts carries its tag"
    );
    // The fake writes its arguments line by line: read them once whole.
    let written = || fs::read_to_string(&args_file).is_ok_and(|s| s.ends_with("--\n"));
    assert!(
        wait_for(written, WAIT),
        "the tc worker never wrote its arguments"
    );
    let work_dir = t.p.proj.join(".worktrees").join(&sid);
    assert_eq!(
        fs::read_to_string(&args_file).unwrap(),
        format!(
            "worker\n{task}\n--max-budget-usd\n3.00\ncwd={}\n--\n",
            work_dir.display()
        )
    );
    t.p.run(&["--start-ready"])
        .expect_code(0)
        .stdout_has("All workers healthy")
        .no_panic();
    // It is the monitor's own process: an operator stop reaches it.
    t.p.run(&["stop", "api"]).expect_code(0).no_panic();
    assert!(
        wait_for(|| !is_alive(pid), WAIT),
        "the tc worker was stopped"
    );
}

/// A tc project whose database is missing is told which one and how to
/// make it.
#[test]
fn a_missing_tc_database_says_which_and_how_to_create_it() {
    let p = TestProject::bare();
    fs::create_dir_all(p.proj.join(".copilot")).unwrap();
    fs::remove_file(p.memory_db()).unwrap();
    let tc_db = p.proj.join(".copilot").join("tasks.db");
    let r = p.run(&[]);
    r.expect_code(3)
        .stderr_has(&tc_db.display().to_string())
        .stderr_has("tc init")
        .no_panic();
    assert!(!r.stderr.contains("memory.db"), "{}", r.stderr);
}

/// `--start-ready` starts a ready stream only once the branches of the
/// streams it depends on are merged into HEAD, as upstream's "only start a
/// stream once its dependencies have merged".
#[test]
fn start_ready_waits_for_dependency_branches_to_merge() {
    let t = TcProject::new();
    let (schema, schema_id) = t.stream("schema", &[]);
    let done = t.tc.task(schema, "completed");
    let (api, sid) = t.stream("api", &[]);
    let next = t.tc.task(api, "pending");
    t.tc.depends(next, done);
    // The dependency's work sits on its branch, not merged yet.
    let wt = worktree::ensure(&t.p.proj, &id(&schema_id), None).unwrap();
    fs::write(wt.join("schema.sql"), "CREATE TABLE t (x);\n").unwrap();
    git(&wt, &["add", "schema.sql"]);
    git(&wt, &["commit", "-q", "-m", "schema"]);

    t.p.run(&["--start-ready"])
        .expect_code(0)
        .stdout_has(&format!(
            "Stream {sid} is ready; not starting it before stream/{schema_id} is merged into HEAD"
        ))
        .stdout_lacks("All workers healthy")
        .no_panic();
    assert!(t.jobs().is_empty());

    git(
        &t.p.proj,
        &[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            "merge",
            &format!("stream/{schema_id}"),
        ],
    );
    t.p.run(&["--start-ready"])
        .expect_code(0)
        .stdout_has(&format!("Worker {sid} started (session "))
        .no_panic();
    assert_eq!(t.jobs().len(), 1);
}

/// The daemon re-dispatches a session that was killed outright (its job
/// file still says "working"), once, and keeps exactly one session alive.
#[test]
fn the_daemon_redispatches_a_killed_session_once() {
    let t = TcProject::new();
    let (_, sid) = t.stream("api", &["in_progress", "pending"]);
    let first = t.upstream_dispatch(&sid);
    let pid = t.session_pid(&first);
    let d =
        t.p.spawn_daemon(&["--daemon", "--auto-restart", "--interval", "1"]);
    assert!(
        t.p.wait_log("All workers healthy", WAIT),
        "the daemon sees the session"
    );

    t.p.signal_ours(pid, nix::sys::signal::Signal::SIGKILL);
    assert!(
        wait_for(|| t.jobs().len() == 2, WAIT),
        "a new session: {:?}\n{}",
        t.jobs(),
        t.p.monitor_log()
    );
    let second = t.jobs().into_iter().find(|j| *j != first).unwrap();
    assert!(wait_for(|| t.job(&second)["state"] == "working", WAIT));
    // Two more checks see it running; nothing else is started. (monitor.log
    // says "All workers healthy" only after a change: the daemon's
    // heartbeat, written after every check, counts the checks.)
    let since = now_ms();
    assert!(wait_for(
        || {
            t.p.daemon_record()["heartbeat_ms"]
                .as_u64()
                .is_some_and(|h| h >= since + 2_000)
        },
        WAIT
    ));
    assert_eq!(t.jobs().len(), 2, "exactly one re-dispatch");
    assert_eq!(t.p.count_in_log(&format!("Restarting worker {sid}")), 1);
    t.p.stop_daemon(&d);
}

/// A live session that fails a liveness probe (here: no task progress) is
/// stuck. Without `session_stop` it is said and left running; with one it
/// is stopped through it and dispatched again (a soft reset).
#[test]
fn a_stuck_session_is_soft_reset_only_through_session_stop() {
    let t = TcProject::new();
    let (_, sid) = t.stream("api", &["in_progress", "pending"]);
    let first = t.upstream_dispatch(&sid);
    let probe = "[[workers.probe]]\nrole = \"liveness\"\nperiod = 0.2\n\
                 check = { kind = \"task-progress\", stall_secs = 1 }\nfailure_threshold = 1\n";
    t.p.write_config(probe);
    // The stall counts from the session's start: checks until it shows.
    let mut last = None;
    assert!(
        wait_for(
            || {
                let r = t.p.run(&["--auto-restart"]);
                let stuck = r.stdout.contains("stuck; no session_stop configured");
                last = Some(r);
                stuck
            },
            WAIT
        ),
        "{last:?}"
    );
    let r = last.unwrap();
    r.expect_code(1)
        .stdout_lacks(&format!("Worker {sid} restarted"))
        .no_panic();
    assert!(is_alive(t.session_pid(&first)));
    assert_eq!(t.jobs().len(), 1);

    let stopper = t.p.bin_dir.join("stop-session");
    fs::write(
        &stopper,
        "#!/bin/sh\nkill \"$(cat \"$CLAUDE_CONFIG_DIR/jobs/$1/fake-pid\")\"\n",
    )
    .unwrap();
    fs::set_permissions(
        &stopper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    t.p.write_config(&format!(
        "[workers]\nsession_stop = [\"{}\", \"{{id}}\"]\n{probe}",
        stopper.display()
    ));
    t.p.run(&["--auto-restart"])
        .expect_code(1)
        .stdout_has("stopping it through session_stop for a soft reset")
        .stdout_has(&format!("Worker {sid} restarted (session "))
        .no_panic();
    assert!(wait_for(|| t.job(&first)["state"] == "stopped", WAIT));
    assert_eq!(t.jobs().len(), 2);
}
