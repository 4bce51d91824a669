//! Drop-in fidelity of the shipped pieces next to the original Claude Copilot
//! kit: the wrapper commits a worker's work after a clean exit (only in a git
//! worktree of its own), finds `claude` under cron's bare PATH, old
//! `python monitor-workers.py ...` cron lines run the binary through the
//! installed shim, `install.sh --uninstall` puts the original back, a kept
//! kit wrapper is warned about, and two projects named alike get two sets of
//! service names. Real git repositories and worktrees, the real wrapper, the
//! fake `claude`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::helpers::{TestProject, BIN, INIT, MANIFEST, SOON};

// ----- local helpers -----------------------------------------------------------

/// Runs git in `dir` (no GIT_* from outside), asserts success, returns stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// Makes the project root a git repository with one commit and an identity
/// in its own config (the wrapper runs with the test's empty $HOME).
fn init_repo(p: &TestProject) {
    git(&p.proj, &["init", "-q", "-b", "main"]);
    git(&p.proj, &["config", "user.name", "Test Worker"]);
    git(&p.proj, &["config", "user.email", "worker@example.com"]);
    git(&p.proj, &["config", "commit.gpgsign", "false"]);
    fs::write(p.proj.join("README.md"), "the project\n").unwrap();
    git(&p.proj, &["add", "README.md"]);
    git(&p.proj, &["commit", "-q", "-m", "initial"]);
}

/// `git worktree add .claude/worktrees/<stream> -b stream/<stream>`.
fn add_worktree(p: &TestProject, stream: &str) -> PathBuf {
    let dir = p.work_dir(stream);
    git(
        &p.proj,
        &[
            "worktree",
            "add",
            "-q",
            dir.to_str().unwrap(),
            "-b",
            &format!("stream/{stream}"),
        ],
    );
    dir
}

/// Runs the real wrapper for `stream` in `work_dir` to its end, with the fake
/// claude writing its prompt to `<work_dir>/<stream>-notes.txt` (the
/// worker's "change") and exiting with `claude_code`. Returns the wrapper's
/// exit code and the stream's log.
fn run_wrapper(
    p: &TestProject,
    stream: &str,
    work_dir: &Path,
    claude_code: i32,
    env: &[(&str, &str)],
) -> (i32, String) {
    let mut cmd = p.command(p.wrapper());
    cmd.arg(stream)
        .arg(p.pid_path(stream))
        .arg(p.logs_dir())
        .arg(work_dir)
        .arg(INIT)
        .arg(prompt(stream))
        .env("FAKE_CLAUDE_MODE", "exit")
        .env("FAKE_CLAUDE_EXIT_CODE", claude_code.to_string())
        .env("FAKE_CLAUDE_PROMPT_FILE", format!("{stream}-notes.txt"))
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let pid = p.spawn(cmd);
    let status = p
        .wait_exit(pid, SOON)
        .expect("the wrapper ends within the timeout");
    let log = fs::read_to_string(p.log_path(stream)).unwrap_or_default();
    (status.code().unwrap_or(-1), log)
}

fn prompt(stream: &str) -> String {
    format!("You are the worker for stream {stream}")
}

fn commit_count(dir: &Path, rev: &str) -> usize {
    git(dir, &["rev-list", "--count", rev]).parse().unwrap()
}

/// Runs scripts/install.sh with the test's binary; returns (code, stdout, stderr).
fn install_sh(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("bash")
        .arg(Path::new(MANIFEST).join("scripts/install.sh"))
        .args(args)
        .env("MONITOR_WORKERS_BINARY", BIN)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("install.sh runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn install(project: &Path) -> (String, String) {
    let (code, stdout, stderr) = install_sh(&[project.to_str().unwrap()]);
    assert_eq!(code, 0, "install.sh failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

fn uninstall(project: &Path) -> String {
    let (code, stdout, stderr) = install_sh(&["--uninstall", project.to_str().unwrap()]);
    assert_eq!(
        code, 0,
        "install.sh --uninstall failed:\n{stdout}\n{stderr}"
    );
    stdout
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn service_names(orch: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(orch.join("service"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

// ----- the wrapper saves the worker's work ----------------------------------------

/// A worker in its own `git worktree` that exits 0 gets its changes
/// committed on the stream's branch, hash in the log; one that fails does not.
#[test]
fn wrapper_commits_a_clean_exit_in_its_own_worktree() {
    let p = TestProject::new();
    init_repo(&p);
    let dir = add_worktree(&p, "s1");
    let main_head = git(&p.proj, &["rev-parse", "HEAD"]);

    let (code, log) = run_wrapper(&p, "s1", &dir, 1, &[]);
    assert_eq!(code, 1, "{log}");
    assert_eq!(
        commit_count(&dir, "HEAD"),
        1,
        "a failed worker is not committed:\n{log}"
    );
    assert!(!log.contains("commit"), "{log}");

    let (code, log) = run_wrapper(&p, "s1", &dir, 0, &[]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(commit_count(&dir, "HEAD"), 2, "{log}");
    assert_eq!(
        git(&dir, &["log", "-1", "--format=%s"]),
        "feat(s1): Complete stream tasks"
    );
    assert_eq!(
        git(&dir, &["rev-parse", "--abbrev-ref", "HEAD"]),
        "stream/s1"
    );
    assert_eq!(git(&dir, &["show", "HEAD:s1-notes.txt"]), prompt("s1"));
    assert_eq!(
        git(&dir, &["status", "--porcelain"]),
        "",
        "nothing is left over"
    );
    let hash = git(&dir, &["rev-parse", "--short", "HEAD"]);
    let line = log
        .lines()
        .find(|l| l.starts_with("[wrapper]") && l.contains(" committed "))
        .unwrap_or_else(|| panic!("no commit line in:\n{log}"));
    assert!(line.contains(&format!("committed {hash} ")), "{line}");
    assert!(!log.contains("COMMIT FAILED"), "{log}");
    // The commit comes before the closing line the monitor reads.
    assert!(log.trim_end().ends_with("exited with code 0"), "{log}");
    assert_eq!(
        git(&p.proj, &["rev-parse", "HEAD"]),
        main_head,
        "the main branch is untouched"
    );
}

/// A plain folder inside the project's repository shares its index: a commit
/// there would sweep in other streams' work, so none is made.
#[test]
fn wrapper_does_not_commit_a_plain_folder_inside_the_repository() {
    let p = TestProject::new();
    init_repo(&p);
    fs::write(p.proj.join("other-stream-work.txt"), "not mine\n").unwrap();
    let dir = p.work_dir("s2");
    fs::create_dir_all(&dir).unwrap();

    let (code, log) = run_wrapper(&p, "s2", &dir, 0, &[]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(commit_count(&p.proj, "HEAD"), 1, "{log}");
    assert!(dir.join("s2-notes.txt").exists(), "the worker ran:\n{log}");
    assert!(
        log.lines().any(|l| l.starts_with("[wrapper]")
            && l.contains("not committing")
            && l.contains("not a worktree of its own")),
        "{log}"
    );
    let status = git(&p.proj, &["status", "--porcelain", "-uall"]);
    assert!(status.contains("?? other-stream-work.txt"), "{status}");
    assert!(status.contains("s2-notes.txt"), "{status}");
}

/// `MONITOR_WORKERS_COMMIT=0` turns the commit off, even in a worktree.
#[test]
fn wrapper_commit_can_be_turned_off() {
    let p = TestProject::new();
    init_repo(&p);
    let dir = add_worktree(&p, "s3");
    let (code, log) = run_wrapper(&p, "s3", &dir, 0, &[("MONITOR_WORKERS_COMMIT", "0")]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(commit_count(&dir, "HEAD"), 1, "{log}");
    assert!(
        log.contains("not committing: MONITOR_WORKERS_COMMIT=0"),
        "{log}"
    );
    assert_eq!(git(&dir, &["status", "--porcelain"]), "?? s3-notes.txt");
}

/// A commit that fails (here a pre-commit hook) is marked in the stream's log
/// and recorded in the monitor's event log; the worker's changes stay.
#[test]
fn wrapper_records_a_failed_commit() {
    let p = TestProject::new();
    init_repo(&p);
    let hook = p.proj.join(".git/hooks/pre-commit");
    fs::write(&hook, "#!/bin/sh\necho 'hook: tests are red' >&2\nexit 1\n").unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    let dir = add_worktree(&p, "s4");

    let (code, log) = run_wrapper(&p, "s4", &dir, 0, &[]);
    assert_eq!(code, 0, "the worker's own code is kept:\n{log}");
    assert_eq!(commit_count(&dir, "HEAD"), 1, "{log}");
    let marked = log
        .lines()
        .find(|l| l.starts_with("[wrapper]") && l.contains("COMMIT FAILED"))
        .unwrap_or_else(|| panic!("no COMMIT FAILED line in:\n{log}"));
    assert!(marked.contains("hook: tests are red"), "{marked}");
    assert!(dir.join("s4-notes.txt").exists(), "the changes stay");

    let events = fs::read_to_string(p.logs_dir().join("events.jsonl")).unwrap();
    let event: serde_json::Value = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "commit_failed")
        .unwrap_or_else(|| panic!("no commit_failed event in:\n{events}"));
    assert_eq!(event["stream"], "s4");
    assert!(event["ts_ms"].as_u64().unwrap() > 0, "{event}");
    assert!(
        event["reason"]
            .as_str()
            .unwrap()
            .contains("git commit exited with code 1"),
        "{event}"
    );
    // The monitor reads it as one of its own events.
    let run = p.run(&["logs", "--events"]);
    run.expect_code(0);
    let shown = &run.stdout;
    let line = shown
        .lines()
        .find(|l| l.contains("commit_failed"))
        .unwrap_or_else(|| panic!("logs --events shows no commit_failed:\n{shown}"));
    assert!(!line.starts_with('{'), "not parsed as an event: {line}");
    assert!(line.contains(" s4"), "{line}");
}

/// Stream "main" works in the project root, its own repository's top: it is
/// committed, but never the monitor's files nor other streams' worktrees.
#[test]
fn wrapper_commit_of_main_leaves_the_orchestrator_and_worktrees_out() {
    let p = TestProject::new();
    init_repo(&p);
    let other = add_worktree(&p, "s5");
    fs::write(other.join("s5-wip.txt"), "s5's unfinished work\n").unwrap();
    fs::create_dir_all(p.proj.join(".worktrees/s6")).unwrap();
    fs::write(p.proj.join(".worktrees/s6/wip.txt"), "s6's work\n").unwrap();

    let (code, log) = run_wrapper(&p, "main", &p.proj.clone(), 0, &[]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(commit_count(&p.proj, "HEAD"), 2, "{log}");
    let files = git(&p.proj, &["show", "--name-only", "--format=", "HEAD"]);
    assert_eq!(files, "main-notes.txt", "{log}");
    assert_eq!(git(&other, &["status", "--porcelain"]), "?? s5-wip.txt");
}

// ----- cron's PATH -----------------------------------------------------------------

/// Under cron's environment (`env -i`, PATH=/usr/bin:/bin) the wrapper finds
/// a claude installed in ~/.local/bin; without one it says so and exits 127.
#[test]
fn wrapper_finds_claude_in_local_bin_under_a_bare_path() {
    let p = TestProject::new();
    let run_bare = |home: &Path, stream: &str| -> (i32, String) {
        let mut cmd = Command::new("env");
        cmd.arg("-i")
            .arg(format!("HOME={}", home.display()))
            .arg("PATH=/usr/bin:/bin")
            .arg(format!("MW_TEST_TAG={}", p.root.display()))
            .arg("FAKE_CLAUDE_MODE=exit")
            .arg("FAKE_CLAUDE_EXIT_CODE=0")
            .arg("MONITOR_WORKERS_COMMIT=0")
            .arg(p.wrapper())
            .arg(stream)
            .arg(p.pid_path(stream))
            .arg(p.logs_dir())
            .arg(p.work_dir(stream))
            .arg(INIT)
            .arg(prompt(stream))
            .current_dir(&p.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let pid = p.spawn(cmd);
        let status = p.wait_exit(pid, SOON).expect("the wrapper ends");
        let log = fs::read_to_string(p.log_path(stream)).unwrap_or_default();
        (status.code().unwrap_or(-1), log)
    };

    let home = p.root.join("cron-home");
    fs::create_dir_all(home.join(".local/bin")).unwrap();
    std::os::unix::fs::symlink(
        Path::new(MANIFEST).join("scripts/fake-claude"),
        home.join(".local/bin/claude"),
    )
    .unwrap();
    let (code, log) = run_bare(&home, "cron");
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("fake-claude: starting on You are the worker for stream cron"),
        "{log}"
    );

    let empty_home = p.root.join("no-claude-home");
    fs::create_dir_all(&empty_home).unwrap();
    let (code, log) = run_bare(&empty_home, "nocl");
    assert_eq!(code, 127, "{log}");
    assert!(
        log.lines()
            .any(|l| l.starts_with("[wrapper]") && l.contains("'claude' not found on PATH")),
        "{log}"
    );
}

/// The rendered cron line, run the way cron runs it (`sh -c`, bare
/// environment), gives the monitor a PATH where ~/.local/bin/claude is found.
#[test]
fn cron_line_gives_the_monitor_a_path_with_claude() {
    let p = TestProject::new();
    install(&p.proj);
    let cron = fs::read_to_string(p.orch.join("service/cron.txt")).unwrap();
    let line = cron
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap();
    let command = line.splitn(6, ' ').nth(5).unwrap();
    // Stand-in for the binary: records what it was run with.
    let seen = p.root.join("seen.txt");
    let binary = p.orch.join("monitor-workers");
    fs::write(
        &binary,
        format!(
            "#!/bin/sh\n{{ command -v claude; printf '%s\\n' \"$*\"; }} > '{}'\n",
            seen.display()
        ),
    )
    .unwrap();
    let home = p.root.join("cron-home");
    fs::create_dir_all(home.join(".local/bin")).unwrap();
    std::os::unix::fs::symlink(
        Path::new(MANIFEST).join("scripts/fake-claude"),
        home.join(".local/bin/claude"),
    )
    .unwrap();
    let status = Command::new("env")
        .arg("-i")
        .arg(format!("HOME={}", home.display()))
        .arg("PATH=/usr/bin:/bin")
        .args(["/bin/sh", "-c", command])
        .current_dir(&home)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        fs::read_to_string(&seen).unwrap(),
        format!(
            "{}\n--auto-restart --quiet\n",
            home.join(".local/bin/claude").display()
        )
    );
}

// ----- old cron lines and uninstall --------------------------------------------------

/// The kit's original monitor-workers.py becomes .orig; the shim runs the
/// binary with an old cron line's arguments; --uninstall puts the original
/// back byte for byte and removes only what install.sh added.
#[test]
fn shim_runs_the_binary_and_uninstall_restores_the_original() {
    let p = TestProject::new();
    // Not UTF-8, not executable: restored exactly as it was.
    let original: &[u8] =
        b"#!/usr/bin/env python3\n# the kit's monitor\nprint('original monitor')\n\xff\xfe\n";
    let script = p.orch.join("monitor-workers.py");
    fs::write(&script, original).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o640)).unwrap();

    let (stdout, _) = install(&p.proj);
    assert!(
        stdout.contains("moved the original monitor-workers.py to monitor-workers.py.orig"),
        "{stdout}"
    );
    assert_eq!(
        fs::read(script.with_extension("py.orig")).unwrap(),
        original
    );
    assert_eq!(
        fs::read_to_string(&script).unwrap(),
        fs::read_to_string(Path::new(MANIFEST).join("templates/monitor-workers.py")).unwrap()
    );
    assert_eq!(mode(&script), 0o755);

    // `cd .claude/orchestrator && python3 monitor-workers.py --auto-restart --max-restarts 3`
    let healthy = p.count_in_log("All workers healthy");
    let out = p
        .command("python3")
        .args([
            "monitor-workers.py",
            "--auto-restart",
            "--max-restarts",
            "3",
        ])
        .current_dir(&p.orch)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("original monitor"),
        "the original ran"
    );
    assert_eq!(p.count_in_log("All workers healthy"), healthy + 1);
    // From cron's working directory ($HOME), by absolute path; the
    // arguments reach the binary (a bad one is its usage error, exit 2).
    let out = p
        .command("python3")
        .arg(&script)
        .args(["--max-restarts", "banana"])
        .current_dir(&p.home)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("banana"),
        "{out:?}"
    );

    let before: Vec<String> = service_names(&p.orch);
    assert!(!before.is_empty());
    let stdout = uninstall(&p.proj);
    assert!(
        stdout.contains("restored the original monitor-workers.py"),
        "{stdout}"
    );
    assert_eq!(fs::read(&script).unwrap(), original, "byte for byte");
    assert_eq!(mode(&script), 0o640);
    assert!(!script.with_extension("py.orig").exists());
    for gone in [
        "monitor-workers",
        "worker-prompt.md",
        "monitor.toml.example",
        ".install-manifest",
        "service",
    ] {
        assert!(!p.orch.join(gone).exists(), "{gone} is left:\n{stdout}");
    }
    // There before install.sh (the wrapper, identical to ours) or holding
    // the monitor's own files (logs/): kept.
    assert!(p.wrapper().exists(), "{stdout}");
    assert!(p.logs_dir().join("monitor.log").exists());

    let again = uninstall(&p.proj);
    assert!(again.contains("nothing to uninstall"), "{again}");
}

/// A fresh install into a project without .claude is undone completely.
#[test]
fn uninstall_of_a_fresh_install_leaves_nothing() {
    let tmp = tempfile::Builder::new()
        .prefix("mw-dropin-")
        .tempdir()
        .unwrap();
    let project = tmp.path().canonicalize().unwrap().join("app");
    fs::create_dir_all(&project).unwrap();
    install(&project);
    let orch = project.join(".claude/orchestrator");
    assert!(orch.join("logs").is_dir(), "launchd's log folder exists");
    let stdout = uninstall(&project);
    assert_eq!(walk(&project), Vec::<PathBuf>::new(), "{stdout}");

    // Someone edits one file: it stays, with the folders that hold it.
    install(&project);
    fs::write(orch.join("worker-prompt.md"), "my prompt\n").unwrap();
    let stdout = uninstall(&project);
    assert!(stdout.contains("kept worker-prompt.md"), "{stdout}");
    assert_eq!(
        walk(&project),
        [
            project.join(".claude"),
            orch.clone(),
            orch.join("worker-prompt.md")
        ],
        "{stdout}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let path = e.path();
        out.push(path.clone());
        if path.is_dir() {
            out.extend(walk(&path));
        }
    }
    out.sort();
    out
}

/// An existing monitor-workers.py.orig is never overwritten: the file in
/// place stays too, the shim goes beside it as .new, and install.sh says so.
#[test]
fn an_existing_orig_is_never_overwritten() {
    let p = TestProject::new();
    let script = p.orch.join("monitor-workers.py");
    let orig = p.orch.join("monitor-workers.py.orig");
    fs::write(&script, "print('a monitor')\n").unwrap();
    fs::write(&orig, "print('an older monitor')\n").unwrap();
    let (stdout, stderr) = install(&p.proj);
    assert_eq!(fs::read_to_string(&script).unwrap(), "print('a monitor')\n");
    assert_eq!(
        fs::read_to_string(&orig).unwrap(),
        "print('an older monitor')\n"
    );
    assert!(p.orch.join("monitor-workers.py.new").exists(), "{stdout}");
    assert!(
        stderr.contains("monitor-workers.py.orig exists already"),
        "{stderr}"
    );
    let stdout = uninstall(&p.proj);
    assert_eq!(fs::read_to_string(&script).unwrap(), "print('a monitor')\n");
    assert_eq!(
        fs::read_to_string(&orig).unwrap(),
        "print('an older monitor')\n"
    );
    assert!(!p.orch.join("monitor-workers.py.new").exists(), "{stdout}");
}

// ----- a kept wrapper, service names ---------------------------------------------------

/// The kit's wrapper is kept (ours goes beside it as .new) and install.sh
/// warns what it lacks and how to switch; a user's edit of ours draws no
/// such warning.
#[test]
fn a_kept_kit_wrapper_is_warned_about() {
    let p = TestProject::new();
    // Shaped like the kit's wrapper: its variable names, exit status lost.
    let kit = "#!/bin/bash\nSHORT_INIT_ID=\"${5:0:8}\"\ncd \"$4\" || exit 1\n\
               claude --print -p \"$6\"\nCLAUDE_EXIT=$?\n\
               echo \"Claude exited with code: $CLAUDE_EXIT\"\n";
    fs::write(p.wrapper(), kit).unwrap();
    let (stdout, stderr) = install(&p.proj);
    assert_eq!(fs::read_to_string(p.wrapper()).unwrap(), kit, "kept");
    assert!(
        stdout.contains("wrote the new version to worker-wrapper.sh.new"),
        "{stdout}"
    );
    for what in [
        "always exits 0",
        "on-failure restarts",
        "exited with code N' line",
        "heartbeat",
        &format!(
            "mv {} {}",
            p.orch.join("worker-wrapper.sh.new").display(),
            p.wrapper().display()
        ),
    ] {
        assert!(stderr.contains(what), "no {what:?} in:\n{stderr}");
    }

    let ours = fs::read_to_string(Path::new(MANIFEST).join("templates/worker-wrapper.sh")).unwrap();
    fs::write(p.wrapper(), format!("{ours}\n# my local change\n")).unwrap();
    let (_, stderr) = install(&p.proj);
    assert!(!stderr.contains("lacks"), "{stderr}");
}

/// Two projects both named "app" get different unit and label names; the
/// names of one project do not change from run to run.
#[test]
fn two_projects_named_alike_get_distinct_service_names() {
    let one = tempfile::Builder::new()
        .prefix("mw-dropin-")
        .tempdir()
        .unwrap();
    let two = tempfile::Builder::new()
        .prefix("mw-dropin-")
        .tempdir()
        .unwrap();
    let names = |tmp: &tempfile::TempDir| -> Vec<String> {
        let project = tmp.path().canonicalize().unwrap().join("app");
        fs::create_dir_all(&project).unwrap();
        install(&project);
        service_names(&project.join(".claude/orchestrator"))
    };
    let first = names(&one);
    let second = names(&two);
    assert_eq!(first.len(), 5, "{first:?}");
    for name in &first {
        assert!(
            !second.contains(name) || name == "cron.txt",
            "{name} in both"
        );
    }
    assert!(
        first.iter().any(|n| n.starts_with("monitor-workers-app-")),
        "{first:?}"
    );
    assert_eq!(names(&one), first, "stable");
}

/// Service files an earlier install.sh wrote under the old names (without
/// the hash) are removed when nobody changed them, kept otherwise.
#[test]
fn service_files_under_old_names_are_cleaned_up() {
    let p = TestProject::new();
    install(&p.proj);
    let service = p.orch.join("service");
    let old = service.join("monitor-workers-proj.service");
    let edited = service.join("com.monitor-workers.proj.plist");
    fs::write(&old, "[Unit]\nDescription=old\n").unwrap();
    fs::write(&edited, "<plist/>\n").unwrap();
    let sum = |path: &Path| -> String {
        let out = Command::new("cksum")
            .stdin(fs::File::open(path).unwrap())
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let f: Vec<&str> = text.split_whitespace().collect();
        format!("{}-{}", f[0], f[1])
    };
    let manifest = p.orch.join(".install-manifest");
    let mut text = fs::read_to_string(&manifest).unwrap();
    text.push_str(&format!(
        "{} service/monitor-workers-proj.service\n",
        sum(&old)
    ));
    text.push_str(&format!(
        "{} service/com.monitor-workers.proj.plist\n",
        "1-1"
    ));
    fs::write(&manifest, text).unwrap();

    let (stdout, _) = install(&p.proj);
    assert!(!old.exists(), "{stdout}");
    assert!(
        stdout.contains("removed service/monitor-workers-proj.service"),
        "{stdout}"
    );
    assert!(edited.exists(), "a changed file is kept:\n{stdout}");
    assert!(
        !fs::read_to_string(&manifest).unwrap().contains(".proj."),
        "no longer recorded"
    );
}
