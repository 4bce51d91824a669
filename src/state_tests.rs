//! The state store on real files: SQLite rows, the read-only view, special
//! and oversized files, migration of the JSON state, corruption moved aside.

use super::*;

#[test]
fn parse_table() {
    assert!(parse(r#"{"version":1,"streams":{}}"#).is_ok());
    assert!(
        parse(r#"{"version":1,"streams":{"a":{"restarts":2}}}"#)
            .unwrap()
            .streams["a"]
            .restarts
            == 2
    );
    assert!(parse("").unwrap_err().contains("corrupt"));
    assert!(parse("{\"version\":1,\"streams\":{")
        .unwrap_err()
        .contains("corrupt"));
    assert!(parse(r#"{"streams":{}}"#)
        .unwrap_err()
        .contains("no version"));
    assert!(parse(r#"{"version":99,"streams":{}}"#)
        .unwrap_err()
        .contains("newer"));
    assert!(parse(r#"{"version":1,"bogus":1}"#)
        .unwrap_err()
        .contains("corrupt"));
}

fn store_in(dir: &Path) -> StateStore {
    StateStore::at(dir, Logger::new(Some(&dir.join("monitor.log")), true))
}

fn asides(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".corrupt-"))
        .collect()
}

#[test]
fn a_supervising_load_moves_a_corrupt_database_aside() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    store
        .update(|s| s.streams.entry("a".into()).or_default().restarts = 1)
        .unwrap();
    assert_eq!(store_in(dir.path()).load().streams["a"].restarts, 1);
    drop(store);
    std::fs::write(dir.path().join(STATE_DB), "garbage, no database").unwrap();
    let store = store_in(dir.path());
    let (_, problem) = store.read_only();
    assert!(problem.unwrap().contains("corrupt"));
    assert!(
        asides(dir.path()).is_empty(),
        "a read-only view moves nothing"
    );
    let state = store.load();
    assert!(state.streams.is_empty());
    let log = std::fs::read_to_string(dir.path().join("monitor.log")).unwrap();
    assert!(log.contains("moved aside"), "{log}");
    assert_eq!(asides(dir.path()).len(), 1, "{:?}", asides(dir.path()));
    // The fresh state works.
    store
        .update(|s| s.streams.entry("b".into()).or_default().restarts = 2)
        .unwrap();
    assert_eq!(store_in(dir.path()).read_only().0.streams["b"].restarts, 2);
}

#[test]
fn a_read_only_view_of_a_closed_database_leaves_no_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    store.update(|s| s.breaker_until_ms = Some(3)).unwrap();
    drop(store);
    let files = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = files();
    let (state, problem) = store_in(dir.path()).read_only();
    assert_eq!((state.breaker_until_ms, problem), (Some(3), None));
    assert_eq!(files(), before);
    // Beside a monitor that has it open, the view still reads it.
    let writer = store_in(dir.path());
    writer.update(|s| s.breaker_until_ms = Some(4)).unwrap();
    assert_eq!(store_in(dir.path()).read_only().0.breaker_until_ms, Some(4));
}

#[test]
fn a_database_from_a_newer_version_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    store.update(|s| s.breaker_until_ms = Some(5)).unwrap();
    drop(store);
    let conn = Connection::open(dir.path().join(STATE_DB)).unwrap();
    conn.execute("UPDATE globals SET value = '99' WHERE key = 'version'", [])
        .unwrap();
    drop(conn);
    let store = store_in(dir.path());
    assert!(store.read_only().1.unwrap().contains("newer version"));
    assert_eq!(store.load(), State::default());
    assert_eq!(asides(dir.path()).len(), 1);
}

#[test]
fn the_json_file_is_migrated_by_a_supervising_run_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let json = r#"{"version":1,"streams":{"a":{"restarts":3}},"breaker_until_ms":7}"#;
    std::fs::write(store.legacy_path(), json).unwrap();
    let (state, problem) = store.read_only();
    assert_eq!((state.streams["a"].restarts, problem), (3, None));
    assert!(!store.path().exists(), "a read-only view migrates nothing");
    let state = store.load();
    assert_eq!(state.streams["a"].restarts, 3);
    assert_eq!(state.breaker_until_ms, Some(7));
    assert!(store.path().exists());
    assert!(!store.legacy_path().exists());
    assert!(dir.path().join("monitor-state.json.migrated").exists());
    assert_eq!(store_in(dir.path()).read_only().0, state);
}

#[test]
fn a_corrupt_json_file_is_moved_aside_not_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    std::fs::write(store.legacy_path(), "{garbage").unwrap();
    let (state, problem) = store.read_only();
    assert!(state.streams.is_empty());
    assert!(problem.unwrap().contains("corrupt"));
    assert_eq!(
        std::fs::read_to_string(store.legacy_path()).unwrap(),
        "{garbage"
    );
    assert!(!dir.path().join("monitor.log").exists());
    assert!(store.load().streams.is_empty());
    let asides = asides(dir.path());
    assert!(
        asides[0].starts_with("monitor-state.json.corrupt-"),
        "{asides:?}"
    );
}

#[test]
fn a_give_up_of_an_older_file_keeps_its_budget() {
    use crate::supervise::model::GiveUp;
    let text = r#"{"version":1,"streams":{"a":{"lifecycle":{"state":"gave_up","reason":"max restart limit (4) reached"}},"b":{"lifecycle":{"state":"gave_up","reason":"other"}}}}"#;
    let state = parse(text).unwrap();
    assert_eq!(
        state.streams["a"].history().gave_up,
        Some(GiveUp::Budget { max: 4 })
    );
    assert_eq!(state.streams["b"].history().gave_up, None);
}

#[test]
fn special_files_are_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    nix::unistd::mkfifo(store.legacy_path(), nix::sys::stat::Mode::S_IRWXU).unwrap();
    // A FIFO would block a plain read forever.
    let (_, problem) = store.read_only();
    assert!(problem.unwrap().contains("FIFO"));
    assert!(store.load().streams.is_empty());
    assert!(!store.legacy_path().exists(), "the FIFO is moved aside");
    std::os::unix::fs::symlink("/etc/hostname", store.path()).unwrap();
    assert!(store.read_only().1.unwrap().contains("symlink"));
    assert!(store.load().streams.is_empty());
    assert!(!store.path().is_symlink(), "the symlink is moved aside");
    std::fs::remove_file(store.legacy_path()).ok();
    let big = std::fs::File::create(store.legacy_path()).unwrap();
    big.set_len(MAX_STATE_BYTES + 1).unwrap();
    std::fs::remove_file(store.path()).ok();
    assert!(store.read_only().1.unwrap().contains("too large"));
}

/// The rows of the database as stored, by id.
fn rows(dir: &Path) -> Vec<(String, String)> {
    let conn = Connection::open(dir.join(STATE_DB)).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, record FROM streams ORDER BY id")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}

#[test]
fn one_stream_is_updated_beside_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let a = StreamId::parse("a").unwrap();
    let b = StreamId::parse("b").unwrap();
    store.update(|s| s.breaker_until_ms = Some(9)).unwrap();
    let (seen, st) = store
        .update_stream(&a, |st, breaker| {
            st.restarts = 2;
            breaker
        })
        .unwrap();
    assert_eq!((seen, st.restarts), (Some(9), 2));
    store.update_stream(&b, |st, _| st.restarts = 1).unwrap();
    assert_eq!(store.stream(&a).unwrap().restarts, 2);
    assert_eq!(store.stream(&b).unwrap().restarts, 1);
    // The cache saw both rows: the whole state agrees.
    let state = store.load();
    assert_eq!(
        (state.streams["a"].restarts, state.streams["b"].restarts),
        (2, 1)
    );
    assert_eq!(rows(dir.path()).len(), 2);
}

#[test]
fn another_monitors_write_is_seen_and_an_unchanged_state_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let ours = store_in(dir.path());
    let theirs = store_in(dir.path());
    ours.update(|s| {
        s.streams.entry("a".into()).or_default();
        s.streams.entry("b".into()).or_default();
    })
    .unwrap();
    assert_eq!(theirs.load().streams.len(), 2);
    let a = StreamId::parse("a").unwrap();
    theirs.update_stream(&a, |st, _| st.restarts = 4).unwrap();
    assert_eq!(ours.load().streams["a"].restarts, 4, "data_version changed");
    // Nothing changes: no commit at all (the WAL does not grow).
    let wal = dir.path().join(format!("{STATE_DB}-wal"));
    let before = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    ours.update(|s| s.streams.len()).unwrap();
    theirs.update(|_| ()).unwrap();
    let after = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(before, after);
    // A removed stream loses its row.
    ours.update(|s| s.streams.remove("b")).unwrap();
    assert_eq!(rows(dir.path()).len(), 1);
    assert!(!theirs.load().streams.contains_key("b"));
}

/// A write that fails (here the disk is full) leaves nothing cached that
/// claims its rows are stored: the same change made again is written.
#[test]
fn a_failed_write_is_written_when_the_change_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    store
        .update(|s| {
            s.streams.entry("a".into()).or_default();
        })
        .unwrap();
    let big = "x".repeat(64 * 1024);
    let set_big = |s: &mut State| {
        s.streams.get_mut("a").unwrap().history_mut().last_error = Some(big.clone());
    };
    // Full: no page beyond those the database has now, through the store's
    // own connection (another connection's write would make it read again).
    let limit = |pages: &str| {
        let guard = store.lock_open();
        let conn = &guard.as_ref().expect("open").conn;
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .unwrap();
    };
    let pages: i64 = {
        let guard = store.lock_open();
        let conn = &guard.as_ref().expect("open").conn;
        conn.query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap()
    };
    limit(&pages.to_string());
    assert!(store.update(set_big).is_err(), "the disk is full");
    limit("1073741823");
    store.update(set_big).unwrap();
    let stored = rows(dir.path());
    assert!(stored[0].1.contains(&big), "the change was written");
}

/// A state read ahead (on a check's second thread) is what the next view
/// sees, read once; the connection keeps its usual page cache; a store
/// with no database yet makes none.
#[test]
fn a_state_read_ahead_is_the_one_viewed() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = store_in(dir.path());
    fresh.read_ahead();
    assert!(
        !dir.path().join(STATE_DB).exists(),
        "nothing made by a read"
    );
    let ours = store_in(dir.path());
    let theirs = store_in(dir.path());
    theirs
        .update(|s| s.streams.entry("a".into()).or_default().restarts = 3)
        .unwrap();
    let read_ahead = std::thread::scope(|scope| scope.spawn(|| ours.read_ahead()).join());
    assert!(read_ahead.is_ok());
    let cache_size = |store: &StateStore| -> i64 {
        let open = store.lock_open();
        let o = open.as_ref().expect("connected by the read ahead");
        o.conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(cache_size(&ours), -512);
    assert!(ours.lock_open().as_ref().unwrap().cache.is_some());
    assert_eq!(ours.view(|s| s.streams["a"].restarts), 3);
    // Another monitor's write after the read ahead is seen by the view.
    let a = StreamId::parse("a").unwrap();
    ours.read_ahead();
    theirs.update_stream(&a, |st, _| st.restarts = 5).unwrap();
    assert_eq!(ours.view(|s| s.streams["a"].restarts), 5);
}
