//! The tc schema read from real SQLite files: streams, aliases, labels, readiness.

use super::*;

const DDL: &str = "
    CREATE TABLE prds (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'active' CHECK(status IN ('active','completed','archived')),
        created_at TEXT NOT NULL DEFAULT (datetime('now')), updated_at TEXT NOT NULL DEFAULT (datetime('now')));
    CREATE TABLE streams (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
        prd_id INTEGER REFERENCES prds(id),
        status TEXT NOT NULL DEFAULT 'active' CHECK(status IN ('active','paused','completed','archived')),
        worktree_path TEXT,
        created_at TEXT NOT NULL DEFAULT (datetime('now')), updated_at TEXT NOT NULL DEFAULT (datetime('now')));
    CREATE TABLE tasks (id INTEGER PRIMARY KEY AUTOINCREMENT, prd_id INTEGER REFERENCES prds(id),
        stream_id INTEGER REFERENCES streams(id), title TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending'
          CHECK(status IN ('pending','in_progress','completed','blocked','cancelled')),
        claimed_by TEXT, claimed_at TEXT, priority INTEGER NOT NULL DEFAULT 2, metadata TEXT,
        created_at TEXT NOT NULL DEFAULT (datetime('now')), updated_at TEXT NOT NULL DEFAULT (datetime('now')));
    CREATE TABLE task_dependencies (task_id INTEGER NOT NULL REFERENCES tasks(id),
        depends_on INTEGER NOT NULL REFERENCES tasks(id), PRIMARY KEY (task_id, depends_on));
";

fn fixture(sql: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasks.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(DDL).unwrap();
    conn.execute_batch(sql).unwrap();
    (dir, path)
}

#[test]
fn streams_progress_and_cross_stream_dependencies() {
    let (_dir, path) = fixture(
        "INSERT INTO prds (id, title, status) VALUES (1, 'Old PRD', 'completed'), (2, 'Current PRD', 'active');
         INSERT INTO streams (id, name, prd_id, status) VALUES
           (1, 'backend', 2, 'active'), (2, 'frontend', 2, 'active'), (3, 'gone', 2, 'archived'),
           (4, 'old', 1, 'active'), (5, 'loose', NULL, 'paused');
         INSERT INTO tasks (id, stream_id, title, status) VALUES
           (10, 1, 'a', 'completed'), (11, 1, 'b', 'cancelled'),
           (20, 2, 'c', 'pending'), (21, 2, 'd', 'in_progress'), (22, 2, 'e', 'blocked'),
           (30, 3, 'f', 'completed'), (40, 4, 'g', 'pending'), (50, 5, 'h', 'pending'),
           (60, NULL, 'orphan', 'pending');
         -- frontend waits on backend twice (deduplicated); on the archived stream (dropped);
         -- a dependency inside one stream is no stream dependency.
         INSERT INTO task_dependencies (task_id, depends_on) VALUES
           (20, 10), (21, 11), (22, 30), (21, 20);",
    );
    let (initiative, read) = read(&path, "myproject", Duration::from_secs(1)).unwrap();
    assert_eq!(initiative.id, "myproject");
    assert_eq!(initiative.name, "Current PRD");
    let ids: Vec<&str> = read.streams.iter().map(|s| s.raw_id.as_str()).collect();
    assert_eq!(
        ids,
        ["1", "2", "5"],
        "archived and finished-PRD streams are left out"
    );
    let backend = &read.streams[0];
    assert_eq!(backend.name, "backend");
    assert!(backend.progress.is_complete());
    assert!(backend.dependencies.is_empty());
    let frontend = &read.streams[1];
    assert_eq!(frontend.dependencies, ["1"]);
    assert_eq!(
        (
            frontend.progress.total,
            frontend.progress.pending,
            frontend.progress.in_progress,
            frontend.progress.blocked
        ),
        (3, 1, 1, 1)
    );
    assert!(!frontend.progress.is_complete());
    assert_eq!(read.warnings.len(), 1, "{:?}", read.warnings);
    assert!(read.warnings[0].contains("Stream 5 (loose) is paused"));
}

#[test]
fn minimal_database_without_prds_or_dependencies_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasks.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE streams (id INTEGER PRIMARY KEY, name TEXT, status TEXT);
             CREATE TABLE tasks (id INTEGER PRIMARY KEY, stream_id INTEGER, status TEXT);
             INSERT INTO streams VALUES (7, '', 'active');
             INSERT INTO tasks VALUES (1, 7, 'pending');",
        )
        .unwrap();
    let (initiative, read) = read(&path, "ws", Duration::from_secs(1)).unwrap();
    assert_eq!(initiative.name, "ws (Task Copilot)");
    assert_eq!(read.streams.len(), 1);
    assert_eq!(read.streams[0].name, "7", "no name: the id stands in");
    assert_eq!(read.streams[0].progress.pending, 1);
}

#[test]
fn a_database_without_streams_is_the_wrong_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasks.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE other (x TEXT);")
        .unwrap();
    let err = read(&path, "ws", Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, StoreError::WrongSchema { .. }), "{err}");
}

fn tc_of(read: &StreamsRead) -> &TcProject {
    read.tc.as_ref().expect("a tc read has tc facts")
}

#[test]
fn labels_aliases_and_worktrees() {
    let (_dir, path) = fixture(
        r#"INSERT INTO streams (id, name, status, worktree_path) VALUES
             (1, 'backend', 'active', '.worktrees/1'), (2, 'frontend', 'active', NULL),
             (3, 'docs', 'active', ''), (4, 'ops', 'archived', NULL), (5, 'qa', 'active', NULL);
           INSERT INTO tasks (id, stream_id, title, status, metadata) VALUES
             (10, 1, 'a', 'pending', '{"streamId":"Stream-A"}'),
             (11, 1, 'b', 'pending', '{"streamId":"Stream-A","dependencies":[]}'),
             (20, 2, 'c', 'pending', '{"streamId":"Stream-B","dependencies":["Stream-A","docs"]}'),
             (30, 3, 'd', 'pending', '{"streamId":"Stream-C","streamDependencies":["5", "Stream-X", "Stream-C"]}'),
             (31, 3, 'e', 'pending', '{not json'),
             (40, 4, 'f', 'pending', '{"streamId":"Stream-D"}'),
             (50, 5, 'g', 'pending', '{"streamId":"Stream-Q","dependencies":"Stream-A"}'),
             (51, 5, 'h', 'pending', '{"dependencies":["Stream-D"]}');"#,
    );
    let (_, read) = read(&path, "ws", Duration::from_secs(1)).unwrap();
    let tc = tc_of(&read);
    let backend = &tc.streams["1"];
    assert_eq!(backend.worktree_path.as_deref(), Some(".worktrees/1"));
    assert_eq!(backend.aliases, ["Stream-A", "backend"]);
    assert!(
        tc.streams["3"].worktree_path.is_none(),
        "empty path is no path"
    );
    let frontend = &tc.streams["2"];
    assert_eq!(frontend.label_dependencies, ["1", "3"]);
    let record = |id: &str| read.streams.iter().find(|s| s.raw_id == id).unwrap();
    assert_eq!(
        record("2").dependencies,
        ["1", "3"],
        "labels are dependencies"
    );
    let docs = &tc.streams["3"];
    assert_eq!(docs.label_dependencies, ["5"], "numeric id; self ignored");
    assert_eq!(docs.unknown_labels, ["Stream-X"]);
    assert!(!docs.ready, "an unknown label keeps the stream waiting");
    assert!(
        tc.streams["5"].label_dependencies.is_empty(),
        "a label naming an archived stream is dropped"
    );
    assert!(tc.streams["5"].unknown_labels.is_empty());
    assert_eq!(tc.resolve("Stream-B"), Some("2"));
    assert_eq!(tc.resolve("frontend"), Some("2"));
    assert_eq!(tc.resolve("2"), Some("2"));
    assert_eq!(
        tc.resolve("Stream-D"),
        None,
        "archived streams are not addressable"
    );
    assert_eq!(tc.resolve("nope"), None);
    let warnings = read.warnings.join("\n");
    assert!(
        warnings.contains("Task 31 of stream 3 has invalid JSON"),
        "{warnings}"
    );
    assert!(
        warnings.contains("\"Stream-X\", which names no stream"),
        "{warnings}"
    );
    assert!(
        warnings.contains("Stream 5 has dependencies that are not a list"),
        "{warnings}"
    );
}

#[test]
fn an_alias_two_streams_use_names_neither() {
    let (_dir, path) = fixture(
        r#"INSERT INTO streams (id, name) VALUES (1, 'one'), (2, 'two'), (3, 'three');
           INSERT INTO tasks (id, stream_id, title, status, metadata) VALUES
             (10, 1, 'a', 'pending', '{"streamId":"Shared"}'),
             (20, 2, 'b', 'pending', '{"streamId":"Shared"}'),
             (30, 3, 'c', 'pending', '{"dependencies":["Shared"]}');"#,
    );
    let (_, read) = read(&path, "ws", Duration::from_secs(1)).unwrap();
    let tc = tc_of(&read);
    assert_eq!(tc.resolve("Shared"), None);
    assert_eq!(tc.streams["3"].unknown_labels, ["Shared"]);
    assert!(read
        .warnings
        .iter()
        .any(|w| w.contains("\"Shared\" is used by streams 1, 2")));
}

#[test]
fn readiness_and_all_blocked_table() {
    let (_dir, path) = fixture(
        r#"INSERT INTO streams (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e'), (6, 'f'), (7, 'g');
           INSERT INTO tasks (id, stream_id, title, status, priority, metadata) VALUES
             -- 1: complete
             (10, 1, 't', 'completed', 2, '{"streamId":"A"}'),
             -- 2: all open tasks blocked
             (20, 2, 't', 'blocked', 2, NULL), (21, 2, 't', 'completed', 2, NULL),
             -- 3: pending waits on an open task of stream 2; the other pending is free
             (30, 3, 't', 'pending', 2, NULL), (31, 3, 't', 'pending', 1, NULL), (32, 3, 't', 'pending', 2, NULL),
             -- 4: pending whose dependency is done, label names complete stream A
             (40, 4, 't', 'pending', 2, '{"dependencies":["A"]}'),
             -- 5: ready task, but the label names stream 2 which is open
             (50, 5, 't', 'pending', 2, '{"dependencies":["b"]}'),
             -- 6: only in_progress work: nothing to hand out
             (60, 6, 't', 'in_progress', 2, NULL),
             -- 7: dependency on a cancelled task is not completed
             (70, 7, 't', 'pending', 2, NULL), (71, 7, 't', 'cancelled', 2, NULL);
           INSERT INTO task_dependencies VALUES (30, 20), (40, 10), (70, 71);"#,
    );
    let (_, read) = read(&path, "ws", Duration::from_secs(1)).unwrap();
    let tc = tc_of(&read);
    let cases: [(&str, bool, Option<i64>, bool); 7] = [
        ("1", false, None, false),
        ("2", true, None, false),
        ("3", false, Some(31), true),
        ("4", false, Some(40), true),
        ("5", false, Some(50), false),
        ("6", false, None, false),
        ("7", false, None, false),
    ];
    for (id, blocked, next, ready) in cases {
        let s = &tc.streams[id];
        assert_eq!(
            (s.all_open_blocked, s.next_ready_task, s.ready),
            (blocked, next, ready),
            "stream {id}"
        );
    }
}

#[test]
fn streams_of_tasks_maps_task_ids_in_one_query() {
    let (_dir, path) = fixture(
        "INSERT INTO streams (id, name) VALUES (1, 'a'), (2, 'b');
         INSERT INTO tasks (id, stream_id, title) VALUES (10, 1, 't'), (20, 2, 't'), (30, NULL, 't');",
    );
    let found = streams_of_tasks(&path, &[10, 20, 30, 99], Duration::from_secs(1)).unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[&10], "1");
    assert_eq!(found[&20], "2");
    assert!(streams_of_tasks(&path, &[], Duration::from_secs(1))
        .unwrap()
        .is_empty());
}
