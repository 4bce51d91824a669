//! Identity proof tables: tags, wrapper command lines, sessions, and reads of real processes.

use super::*;

fn env(entries: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(e.as_bytes());
        out.push(0);
    }
    out
}

fn argv(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

#[test]
fn tags_from_environment_blocks() {
    let root = "/p/proj";
    let same = |p: &Path| p == Path::new(root);
    /// Name, environment block, stream, expected nonce or reason.
    type Case = (
        &'static str,
        Vec<u8>,
        &'static str,
        Result<&'static str, &'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "complete",
            env(&[
                "A=1",
                "MONITOR_WORKERS_STREAM=api",
                "MONITOR_WORKERS_PROJECT=/p/proj",
                "MONITOR_WORKERS_SPAWN=ab12",
            ]),
            "api",
            Ok("ab12"),
        ),
        (
            "no tag",
            env(&["PATH=/bin", "HOME=/h"]),
            "api",
            Err("absent"),
        ),
        ("empty block", Vec::new(), "api", Err("absent")),
        (
            "other stream",
            env(&[
                "MONITOR_WORKERS_STREAM=web",
                "MONITOR_WORKERS_PROJECT=/p/proj",
                "MONITOR_WORKERS_SPAWN=1",
            ]),
            "api",
            Err("names stream web"),
        ),
        (
            "other project",
            env(&[
                "MONITOR_WORKERS_STREAM=api",
                "MONITOR_WORKERS_PROJECT=/q/other",
                "MONITOR_WORKERS_SPAWN=1",
            ]),
            "api",
            Err("names project /q/other"),
        ),
        (
            "no nonce",
            env(&[
                "MONITOR_WORKERS_STREAM=api",
                "MONITOR_WORKERS_PROJECT=/p/proj",
            ]),
            "api",
            Err("incomplete"),
        ),
        (
            "empty nonce",
            env(&[
                "MONITOR_WORKERS_STREAM=api",
                "MONITOR_WORKERS_PROJECT=/p/proj",
                "MONITOR_WORKERS_SPAWN=",
            ]),
            "api",
            Err("no spawn nonce"),
        ),
        (
            "first occurrence wins",
            env(&[
                "MONITOR_WORKERS_STREAM=web",
                "MONITOR_WORKERS_STREAM=api",
                "MONITOR_WORKERS_PROJECT=/p/proj",
                "MONITOR_WORKERS_SPAWN=1",
            ]),
            "api",
            Err("names stream web"),
        ),
        (
            "prefix of a name is not the name",
            env(&["MONITOR_WORKERS_STREAMX=api", "XMONITOR_WORKERS_STREAM=api"]),
            "api",
            Err("absent"),
        ),
        (
            "stream is a prefix",
            env(&[
                "MONITOR_WORKERS_STREAM=api2",
                "MONITOR_WORKERS_PROJECT=/p/proj",
                "MONITOR_WORKERS_SPAWN=1",
            ]),
            "api",
            Err("names stream api2"),
        ),
        (
            "entry without '=' and binary junk",
            env(&[
                "garbage",
                "\u{1}\u{2}",
                "MONITOR_WORKERS_STREAM=api",
                "MONITOR_WORKERS_PROJECT=/p/proj",
                "MONITOR_WORKERS_SPAWN=9",
            ]),
            "api",
            Ok("9"),
        ),
    ];
    for (name, block, stream, want) in cases {
        let says = tag_says(&Tag::from_environ(&block), stream, same);
        match (want, &says) {
            (Ok(nonce), TagSays::Ours { spawn }) => assert_eq!(spawn, nonce, "{name}"),
            (Err("absent"), TagSays::Absent) => {}
            (Err(fragment), TagSays::Other(why)) => {
                assert!(why.contains(fragment), "{name}: {why}")
            }
            _ => panic!("{name}: unexpected {says:?}"),
        }
    }
}

#[test]
fn wrapper_command_lines() {
    /// Name, command line, expected stream and PID-file argument.
    type Case = (
        &'static str,
        Vec<Vec<u8>>,
        Option<(&'static str, &'static str)>,
    );
    let cases: Vec<Case> = vec![
        (
            "through the shebang",
            argv(&[
                "bash",
                "/p/.claude/orchestrator/worker-wrapper.sh",
                "api",
                "/p/pids/api.pid",
                "/p/logs",
                "/p/wt",
                "init",
                "prompt",
            ]),
            Some(("api", "/p/pids/api.pid")),
        ),
        (
            "executed directly",
            argv(&[
                "/opt/kit/worker-wrapper.sh",
                "main",
                "/p/pids/main.pid",
                "/l",
                "/w",
                "i",
                "p",
            ]),
            Some(("main", "/p/pids/main.pid")),
        ),
        (
            "shell with options",
            argv(&[
                "/bin/bash",
                "-x",
                "worker-wrapper.sh",
                "api",
                "/p/pids/api.pid",
                "/l",
                "/w",
            ]),
            Some(("api", "/p/pids/api.pid")),
        ),
        (
            "env then shell",
            argv(&[
                "/usr/bin/env",
                "bash",
                "worker-wrapper.sh",
                "api",
                "/x.pid",
                "/l",
                "/w",
            ]),
            None,
        ),
        (
            "too few arguments",
            argv(&["bash", "worker-wrapper.sh", "api", "/x.pid", "/l"]),
            None,
        ),
        (
            "another script",
            argv(&["bash", "/p/other.sh", "api", "/x.pid", "/l", "/w"]),
            None,
        ),
        (
            "wrapper name inside another name",
            argv(&[
                "bash",
                "/p/my-worker-wrapper.sh",
                "api",
                "/x.pid",
                "/l",
                "/w",
            ]),
            None,
        ),
        (
            "wrapper named late in the arguments",
            argv(&[
                "python3",
                "x.py",
                "worker-wrapper.sh",
                "api",
                "/x.pid",
                "/l",
                "/w",
            ]),
            None,
        ),
        ("sleep", argv(&["sleep", "600"]), None),
        ("empty", Vec::new(), None),
    ];
    for (name, args, want) in cases {
        let got = wrapper_args(&args);
        let want = want.map(|(s, p)| WrapperArgs {
            stream: s.to_string(),
            pid_file: PathBuf::from(p),
        });
        assert_eq!(got, want, "{name}");
    }
    assert_eq!(split_cmdline(b"a\0b\0"), argv(&["a", "b"]));
    assert_eq!(split_cmdline(b""), Vec::<Vec<u8>>::new());
    assert_eq!(split_cmdline(b"a\0\0b\0"), argv(&["a", "", "b"]));
}

#[test]
fn pid_file_spellings() {
    let cases = [
        ("/p/pids/api.pid", "/p/pids/api.pid", true),
        ("/p//pids/./api.pid", "/p/pids/api.pid", true),
        ("/p/x/../pids/api.pid", "/p/pids/api.pid", true),
        ("/p/pids/web.pid", "/p/pids/api.pid", false),
        ("/q/pids/api.pid", "/p/pids/api.pid", false),
        ("pids/api.pid", "/p/pids/api.pid", false),
    ];
    for (named, expected, same) in cases {
        assert_eq!(
            same_pid_file(Path::new(named), Path::new(expected)),
            same,
            "{named} vs {expected}"
        );
    }
}

fn facts(pid: i32, session: i32) -> ProcFacts {
    ProcFacts {
        pid,
        state: 'S',
        start_ticks: 1,
        started_at: std::time::SystemTime::UNIX_EPOCH,
        uid: 1000,
        ppid: 1,
        pgrp: pid,
        session,
        kernel_thread: false,
    }
}

#[test]
fn judgement_on_evidence() {
    let project = Project {
        root: PathBuf::from("/nonexistent/proj"),
        pids_dir: PathBuf::from("/nonexistent/proj/.claude/orchestrator/pids"),
    };
    let pid_file = "/nonexistent/proj/.claude/orchestrator/pids/api.pid";
    let tagged = |stream: &str| {
        Some(Tag::from_environ(&env(&[
            &format!("MONITOR_WORKERS_STREAM={stream}"),
            "MONITOR_WORKERS_PROJECT=/nonexistent/proj",
            "MONITOR_WORKERS_SPAWN=n1",
        ])))
    };
    let wrapper = |stream: &str, file: &str| {
        argv(&[
            "bash",
            "/anywhere/worker-wrapper.sh",
            stream,
            file,
            "/l",
            "/w",
            "i",
            "p",
        ])
    };
    let cases: Vec<(&str, Evidence, &str, Result<Proof, &str>)> = vec![
        (
            "tagged",
            Evidence {
                environ: tagged("api"),
                argv: argv(&["claude"]),
            },
            "api",
            Ok(Proof::Tag { spawn: "n1".into() }),
        ),
        (
            "tag of another stream beats a wrapper argv",
            Evidence {
                environ: tagged("web"),
                argv: wrapper("api", pid_file),
            },
            "api",
            Err("its tag names stream web"),
        ),
        (
            "legacy wrapper",
            Evidence {
                environ: Some(Tag::default()),
                argv: wrapper("api", pid_file),
            },
            "api",
            Ok(Proof::Wrapper),
        ),
        (
            "legacy wrapper, environment unreadable",
            Evidence {
                environ: None,
                argv: wrapper("api", pid_file),
            },
            "api",
            Ok(Proof::Wrapper),
        ),
        (
            "wrapper of another stream (copied PID file)",
            Evidence {
                environ: Some(Tag::default()),
                argv: wrapper("web", "/nonexistent/proj/.claude/orchestrator/pids/web.pid"),
            },
            "api",
            Err("it is the worker wrapper of stream web"),
        ),
        (
            "wrapper for another project's PID file",
            Evidence {
                environ: Some(Tag::default()),
                argv: wrapper("api", "/elsewhere/pids/api.pid"),
            },
            "api",
            Err("another PID file"),
        ),
        (
            "stranger",
            Evidence {
                environ: Some(Tag::default()),
                argv: argv(&["sleep", "60"]),
            },
            "api",
            Err("PID 4242 is not a worker of api: no tag, and its command line does not name it"),
        ),
        (
            "stranger, environment unreadable",
            Evidence {
                environ: None,
                argv: argv(&["sleep", "60"]),
            },
            "api",
            Err("its environment is unreadable, and its command line does not name it"),
        ),
    ];
    for (name, evidence, stream, want) in cases {
        let got = judge_evidence(&project, stream, &facts(4242, 4242), &evidence, None);
        match (want, got) {
            (Ok(proof), Ok(got)) => assert_eq!(proof, got, "{name}"),
            (Err(fragment), Err(e)) => {
                assert!(e.to_string().contains(fragment), "{name}: {e}")
            }
            (want, got) => panic!("{name}: wanted {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn a_recorded_session_proves_its_members_while_its_leader_lives() {
    let project = Project {
        root: PathBuf::from("/nonexistent"),
        pids_dir: PathBuf::from("/nonexistent/pids"),
    };
    let me = procinfo::inspect(std::process::id() as i32).unwrap();
    let untagged = Evidence {
        environ: Some(Tag::default()),
        argv: argv(&["claude"]),
    };
    let member = facts(77_777, me.pid);
    let live = SpawnSession {
        leader: me.pid,
        leader_start_ticks: me.start_ticks,
    };
    let reused = SpawnSession {
        leader: me.pid,
        leader_start_ticks: me.start_ticks + 1,
    };
    assert_eq!(
        judge_evidence(&project, "api", &member, &untagged, Some(&live)),
        Ok(Proof::Session { leader: me.pid })
    );
    assert!(judge_evidence(&project, "api", &member, &untagged, Some(&reused)).is_err());
    let outsider = facts(77_777, me.pid + 1);
    assert!(judge_evidence(&project, "api", &outsider, &untagged, Some(&live)).is_err());
}

#[test]
fn nonces_differ() {
    let a = new_nonce();
    assert_eq!(a.len(), 32);
    assert_ne!(a, new_nonce());
}

#[test]
fn this_process_is_read_and_cached() {
    let me = procinfo::inspect(std::process::id() as i32).unwrap();
    let first = evidence(&me);
    assert!(first.environ.is_some());
    assert!(!first.argv.is_empty());
    assert!(Arc::ptr_eq(&first, &evidence(&me)), "not cached");
}
