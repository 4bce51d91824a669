//! The one-shot snapshot, whose PID files are read on a second thread
//! before the streams are known, against the daemon's, which reads them in
//! the streams' walk: the same project seen the same way, whatever the
//! PID directory holds.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::*;
use crate::config::ConfigFile;
use crate::layout::Layout;

const INIT: &str = "init-1";

/// A legacy project whose streams are `ids`, each with one pending task.
fn project(root: &Path, ids: &[&str]) -> Layout {
    let layout = Layout {
        project_root: root.to_path_buf(),
        orch: root.join(".claude/orchestrator"),
        workspace_id: "ws".into(),
        tasks_db: root.join("tasks.db"),
        memory_db: root.join("memory.db"),
        tasks_db_given: true,
    };
    std::fs::create_dir_all(layout.pids_dir()).unwrap();
    std::fs::create_dir_all(layout.logs_dir()).unwrap();
    let memory = Connection::open(&layout.memory_db).unwrap();
    memory
        .execute_batch(&format!(
            "CREATE TABLE initiatives (id TEXT PRIMARY KEY, name TEXT, status TEXT,
                                       created_at TEXT);
             INSERT INTO initiatives VALUES ('{INIT}', 'Init', 'IN PROGRESS', '1');"
        ))
        .unwrap();
    let tasks = Connection::open(&layout.tasks_db).unwrap();
    tasks
        .execute_batch(&format!(
            "CREATE TABLE prds (id TEXT PRIMARY KEY, initiative_id TEXT);
             CREATE TABLE tasks (id TEXT PRIMARY KEY, prd_id TEXT, status TEXT,
                                 metadata TEXT, updated_at TEXT);
             INSERT INTO prds VALUES ('p', '{INIT}');"
        ))
        .unwrap();
    for id in ids {
        let metadata = format!(r#"{{"streamId":"{id}"}}"#);
        tasks
            .execute(
                "INSERT INTO tasks VALUES (?1, 'p', 'pending', ?2, '2024-05-01T10:00:00')",
                [format!("t-{id}"), metadata],
            )
            .unwrap();
    }
    layout
}

/// Each stream's PID file, liveness and verdict, as the snapshot saw them.
fn seen(snapshot: &Snapshot) -> Vec<(String, PidFile, Liveness, Verdict)> {
    snapshot
        .streams
        .iter()
        .map(|o| {
            let id = o.view.id.to_string();
            (
                id,
                o.pid_file.clone(),
                o.liveness.clone(),
                o.verdict.clone(),
            )
        })
        .collect()
}

#[test]
fn the_pid_files_read_ahead_are_the_ones_the_walk_reads() {
    let dir = tempfile::tempdir().unwrap();
    let streams = [
        "alive", "garbage", "gone", "none", "fifo", "link", "long", "init", "dir",
    ];
    let layout = project(dir.path(), &streams);
    let pids = layout.pids_dir();
    let mut alive = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    std::fs::write(pids.join("alive.pid"), alive.id().to_string()).unwrap();
    std::fs::write(pids.join("garbage.pid"), "not a pid").unwrap();
    std::fs::write(pids.join("gone.pid"), gone_pid.to_string()).unwrap();
    nix::unistd::mkfifo(&pids.join("fifo.pid"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    symlink("/etc/hostname", pids.join("link.pid")).unwrap();
    std::fs::write(pids.join("long.pid"), "1".repeat(100)).unwrap();
    // PID 1 is never a worker's.
    std::fs::write(pids.join("init.pid"), "1").unwrap();
    std::fs::create_dir(pids.join("dir.pid")).unwrap();
    // A file no stream has, and one that is no PID file.
    std::fs::write(pids.join("stranger.pid"), alive.id().to_string()).unwrap();
    std::fs::write(pids.join("notes.txt"), "x").unwrap();

    let config = ConfigFile::default();
    let state = State::default();
    let look = |memory: &mut SnapshotMemory| {
        let known = KnownState::Given(&state);
        let probes = ProbeMode::Recorded(&config);
        take_snapshot_of(&layout, Duration::from_secs(1), known, probes, memory)
            .unwrap()
            .expect("an active initiative")
    };
    // A one-shot's memory keeps nothing: its PID files are read ahead.
    let one_shot = look(&mut SnapshotMemory::default());
    // The daemon's keeps its reads: it reads them in the walk.
    let daemon = look(&mut SnapshotMemory::keeping());
    alive.kill().unwrap();
    alive.wait().unwrap();

    let one_shot = seen(&one_shot);
    assert_eq!(one_shot, seen(&daemon));
    let ids: Vec<&str> = one_shot.iter().map(|(id, ..)| id.as_str()).collect();
    let mut expected = streams.to_vec();
    expected.sort_unstable();
    assert_eq!(ids, expected, "every stream, in id order, no stranger");
    for (id, file, liveness, _) in &one_shot {
        match id.as_str() {
            "none" => assert_eq!(*file, PidFile::Missing),
            "alive" | "gone" => assert!(matches!(file, PidFile::Pid { .. }), "{id}"),
            _ => assert!(matches!(file, PidFile::Invalid(_)), "{id}: {file:?}"),
        }
        // A plain `sleep` is no proven worker: nothing here is running.
        assert!(!liveness.is_running(), "{id}: {liveness:?}");
    }
}

#[test]
fn the_read_ahead_lists_every_pid_file_and_leaves_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let layout = project(dir.path(), &["b", "a"]);
    let pids = layout.pids_dir();
    let me = std::process::id() as i32;
    std::fs::write(pids.join("b.pid"), me.to_string()).unwrap();
    std::fs::write(pids.join("a.pid"), "x").unwrap();
    std::fs::write(pids.join("a.txt"), "1").unwrap();
    let state = State::default();
    let (answer, early) = early::side_by_side(&layout, KnownState::Given(&state), || 42);
    assert_eq!(answer, 42);
    let early = early.expect("a plain directory is read ahead");
    let names: Vec<&String> = early.files.keys().collect();
    assert_eq!(names, ["a", "b"]);
    assert!(matches!(
        early.files.get("a"),
        Some((PidFile::Invalid(_), None))
    ));
    assert!(matches!(
        early.files.get("b"),
        Some((PidFile::Pid { pid, .. }, Some(facts))) if *pid == me && facts.pid == me
    ));

    // A `pids/` that is a symlink is left to the walk, which names it.
    std::fs::remove_dir_all(&pids).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("a.pid"), "1").unwrap();
    symlink(&elsewhere, &pids).unwrap();
    let (_, early) = early::side_by_side(&layout, KnownState::Given(&state), || ());
    assert!(early.is_none());
}
