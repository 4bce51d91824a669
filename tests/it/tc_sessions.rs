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
        git(&p.proj, &["init", "-q", "-b", "main", "."]);
        fs::write(
            p.proj.join(".gitignore"),
            ".claude/\n.copilot/\n.worktrees/\n",
        )
        .unwrap();
        git(&p.proj, &["add", ".gitignore"]);
        git(&p.proj, &["commit", "-q", "-m", "init"]);
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

    /// The job's state.json as JSON.
    fn job(&self, id: &str) -> serde_json::Value {
        let text = fs::read_to_string(self.jobs_dir().join(id).join("state.json")).unwrap();
        serde_json::from_str(&text).unwrap()
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
    let prompt = monitor_workers::prompt::tc_dispatch(
        monitor_workers::prompt::TC_DISPATCH_TEMPLATE,
        &sid,
        "api",
        None,
    );
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
    })
    .unwrap();
    assert!(wait_for(|| args_file.is_file(), WAIT));
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
