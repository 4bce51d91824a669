//! Reading `claude agents --json` and job files tolerantly, and matching sessions to streams.

use super::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn agents_output_shapes_table() {
    // (output, Ok(number of sessions) or Err)
    let cases: [(&str, Result<usize, ()>); 10] = [
        ("[]", Ok(0)),
        ("  \n", Err(())),
        ("", Err(())),
        ("not json", Err(())),
        ("42", Err(())),
        (r#"[{"pid": 12, "id": "ab12cd34"}, "junk", {}]"#, Ok(2)),
        (r#"{"agents": [{"id": "a"}]}"#, Ok(1)),
        (r#"{"count": 1, "list": [{"id": "a"}]}"#, Ok(1)),
        (r#"{"a": [], "b": []}"#, Err(())),
        (r#"{"sessions": []}"#, Ok(0)),
    ];
    for (output, want) in cases {
        let got = parse_agents(output).map(|s| s.len()).map_err(|_| ());
        assert_eq!(got, want, "{output:?}");
    }
}

#[test]
fn agents_fields_are_all_optional_and_tolerant() {
    let sessions = parse_agents(
        r#"[{"pid": "4321", "id": "ab12cd34", "name": "n", "status": "busy", "state": "working",
             "sessionId": "s-1", "cwd": "/p/.worktrees/1", "startedAt": 1700000000, "kind": "background"},
            {"state": "done", "pid": "not a number"},
            {"status": "stopped"},
            {"pid": 7}]"#,
    )
    .unwrap();
    assert_eq!(sessions[0].pid, Some(4321));
    assert_eq!(sessions[0].id.as_deref(), Some("ab12cd34"));
    assert_eq!(sessions[0].session_id.as_deref(), Some("s-1"));
    assert_eq!(
        sessions[0].cwd.as_deref(),
        Some(Path::new("/p/.worktrees/1"))
    );
    assert_eq!(sessions[0].started_at.as_deref(), Some("1700000000"));
    assert!(sessions[0].live);
    assert_eq!(sessions[1].pid, None);
    assert!(!sessions[1].live, "state done: finished");
    assert!(!sessions[2].live, "status stopped: finished");
    assert!(sessions[3].live, "nothing says it ended");
    assert_eq!(sessions[3].label(), "pid 7");
}

#[test]
fn intents_naming_streams_table() {
    let cases: [(&str, &[&str]); 6] = [
        (
            "Work on stream 3. Run: tc task list --stream 3 --json",
            &["3"],
        ),
        ("Work on stream Stream-A, then stop", &["Stream-A"]),
        ("Work on stream 12", &["12"]),
        ("work on stream 3", &[]),
        (
            "Please Work on stream 1. Then Work on stream 2.",
            &["1", "2"],
        ),
        ("Work on stream ", &[]),
    ];
    for (intent, want) in cases {
        assert_eq!(streams_named_by_intent(intent), want, "{intent:?}");
    }
}

#[test]
fn matching_rules_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let one = root.join(".worktrees/1");
    let two = root.join(".worktrees/2");
    std::fs::create_dir_all(one.join("sub")).unwrap();
    std::fs::create_dir_all(&two).unwrap();
    let aliases = vec!["backend".to_string()];
    let keys = [
        StreamKey {
            id: "1",
            aliases: &aliases,
            work_dir: &one,
            recorded_job: None,
        },
        StreamKey {
            id: "2",
            aliases: &[],
            work_dir: &two,
            recorded_job: Some("job22222"),
        },
    ];
    let session = |id: Option<&str>, cwd: Option<PathBuf>, intent: Option<&str>| Session {
        id: id.map(str::to_string),
        cwd,
        intent: intent.map(str::to_string),
        live: true,
        ..Session::default()
    };
    let cases = [
        // The record wins over a cwd in another stream's worktree.
        (
            session(Some("job22222"), Some(one.clone()), None),
            Some((1, MatchRule::Recorded)),
        ),
        (
            session(None, Some(one.join("sub")), None),
            Some((0, MatchRule::WorkDir)),
        ),
        // cwd beats intent.
        (
            session(None, Some(two.clone()), Some("Work on stream 1.")),
            Some((1, MatchRule::WorkDir)),
        ),
        // Upstream's dispatch runs from the project root: the intent decides.
        (
            session(
                None,
                Some(root.clone()),
                Some("Work on stream 2. Run: tc task list --stream 2 --json"),
            ),
            Some((1, MatchRule::Intent)),
        ),
        (
            session(None, None, Some("Work on stream backend.")),
            Some((0, MatchRule::Intent)),
        ),
        (
            session(None, Some(root.clone()), Some("Work on stream 9.")),
            None,
        ),
        (session(Some("other"), None, None), None),
        // A relative cwd says nothing.
        (
            session(None, Some(PathBuf::from(".worktrees/1")), None),
            None,
        ),
    ];
    for (i, (s, want)) in cases.iter().enumerate() {
        assert_eq!(match_session(s, &keys), *want, "case {i}");
    }
}

fn script(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("claude");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn job(jobs: &Path, id: &str, body: &str) {
    std::fs::create_dir_all(jobs.join(id)).unwrap();
    std::fs::write(jobs.join(id).join("state.json"), body).unwrap();
}

fn settings(program: &Path, jobs: &Path) -> ListSettings {
    ListSettings {
        program: program.into(),
        jobs_dir: jobs.to_path_buf(),
        all: false,
        timeout: Duration::from_secs(5),
        env: Vec::new(),
    }
}

#[test]
fn cli_list_joined_with_jobs_and_unlisted_jobs_ended() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    job(
        &jobs,
        "aaaa1111",
        r#"{"state":"working","intent":"Work on stream 1.","cwd":"/x"}"#,
    );
    job(
        &jobs,
        "bbbb2222",
        r#"{"state":"working","intent":"Work on stream 2."}"#,
    );
    let claude = script(
        dir.path(),
        r#"echo '[{"id":"aaaa1111","pid":5,"status":"busy"}]'"#,
    );
    let read = read_sessions(&settings(&claude, &jobs));
    assert_eq!(read.via, "claude agents");
    assert!(read.cannot_tell.is_none());
    let a = read
        .sessions
        .iter()
        .find(|s| s.id.as_deref() == Some("aaaa1111"))
        .unwrap();
    assert!(a.live);
    assert_eq!(
        a.intent.as_deref(),
        Some("Work on stream 1."),
        "intent joined by id"
    );
    let b = read
        .sessions
        .iter()
        .find(|s| s.id.as_deref() == Some("bbbb2222"))
        .unwrap();
    assert!(
        !b.live,
        "a job the CLI does not list has ended, whatever its file says"
    );
}

#[test]
fn failing_cli_falls_back_to_jobs_or_cannot_tell() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    // Every way the CLI can fail, with readable job files: jobs decide.
    for body in ["exit 1", "true", "echo '{oops'", "sleep 5"] {
        let claude = script(dir.path(), body);
        job(
            &jobs,
            "cccc3333",
            r#"{"state":"working","intent":"Work on stream 3."}"#,
        );
        job(&jobs, "dddd4444", r#"{"state":"stopped"}"#);
        let mut s = settings(&claude, &jobs);
        s.timeout = Duration::from_millis(500);
        let read = read_sessions(&s);
        assert_eq!(read.via, "job files", "{body}");
        assert!(read.cannot_tell.is_none(), "{body}: {:?}", read.cannot_tell);
        let live: Vec<_> = read.sessions.iter().filter(|s| s.live).collect();
        assert_eq!(live.len(), 1, "{body}");
    }
    // A fresh unreadable job file: cannot tell.
    job(&jobs, "eeee5555", "{half a file");
    let read = read_sessions(&settings(&script(dir.path(), "exit 1"), &jobs));
    assert!(
        read.cannot_tell.as_deref().unwrap().contains("eeee5555"),
        "{:?}",
        read.cannot_tell
    );
    // No job files and a CLI that fails: cannot tell.
    let read = read_sessions(&settings(
        &script(dir.path(), "exit 1"),
        &dir.path().join("none"),
    ));
    assert!(read.cannot_tell.is_some());
    // No CLI at all and no job files: nothing ran here.
    let read = read_sessions(&settings(
        &dir.path().join("absent"),
        &dir.path().join("none"),
    ));
    assert!(read.cannot_tell.is_none() && read.sessions.is_empty());
}

#[test]
fn source_reports_live_finished_and_cannot_tell() {
    let dir = tempfile::tempdir().unwrap();
    let wt = dir.path().canonicalize().unwrap();
    let keys = [
        StreamKey {
            id: "1",
            aliases: &[],
            work_dir: &wt.join("1"),
            recorded_job: None,
        },
        StreamKey {
            id: "2",
            aliases: &[],
            work_dir: &wt.join("2"),
            recorded_job: None,
        },
    ];
    let mut source = ClaudeSessions {
        read: SessionsRead {
            sessions: vec![
                Session {
                    intent: Some("Work on stream 1.".into()),
                    live: true,
                    pid: Some(99),
                    ..Session::default()
                },
                Session {
                    intent: Some("Work on stream 2.".into()),
                    live: false,
                    ..Session::default()
                },
            ],
            via: "claude agents",
            ..SessionsRead::default()
        },
    };
    let got = source.observe(&keys);
    assert_eq!(got["1"].live.len(), 1);
    assert_eq!(got["1"].live[0].pid, Some(99));
    assert!(got["2"].live.is_empty() && got["2"].ran);
    source.read.cannot_tell = Some("unreadable".into());
    let got = source.observe(&keys);
    assert_eq!(got["2"].cannot_tell.as_deref(), Some("unreadable"));
}

#[test]
fn the_tc_dispatch_prompt_names_its_stream_for_session_matching() {
    let retried = crate::prompt::tc_dispatch(
        crate::prompt::TC_DISPATCH_TEMPLATE,
        "3",
        "backend",
        Some("Attempt 2: crashed."),
    );
    assert_eq!(streams_named_by_intent(&retried), ["3"]);
}
