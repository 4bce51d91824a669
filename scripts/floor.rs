//! The floor of a one-shot check: only the work no monitor can avoid — one
//! query of the tasks database for the active initiative's streams, each
//! stream's PID file read, and /proc/<pid>/stat read for each PID found.
//! `scripts/bench` times it beside `monitor-workers` on the same fixture and
//! reports our time as a multiple of this one.
//!
//!     floor TASKS_DB INITIATIVE_ID PIDS_DIR
//!
//! Prints the number of streams, PID files and live processes it saw.

use std::collections::BTreeSet;
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, initiative, pids] = args.as_slice() else {
        eprintln!("usage: floor TASKS_DB INITIATIVE_ID PIDS_DIR");
        std::process::exit(2);
    };
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(db, flags).expect("tasks database");
    let mut stmt = conn
        .prepare(
            "SELECT json_extract(t.metadata, '$.streamId') FROM tasks t \
             JOIN prds p ON p.id = t.prd_id WHERE p.initiative_id = ?1",
        )
        .expect("query");
    let mut rows = stmt.query([initiative]).expect("query");
    let mut streams = BTreeSet::new();
    while let Some(row) = rows.next().expect("row") {
        if let Ok(rusqlite::types::ValueRef::Text(id)) = row.get_ref(0) {
            if !streams.contains(id) {
                streams.insert(id.to_vec());
            }
        }
    }
    let (mut files, mut live) = (0, 0);
    let mut path = PathBuf::from(pids);
    for id in &streams {
        path.push(format!("{}.pid", String::from_utf8_lossy(id)));
        if let Ok(text) = std::fs::read_to_string(&path) {
            files += 1;
            if let Ok(pid) = text.trim().parse::<u32>() {
                if std::fs::read(format!("/proc/{pid}/stat")).is_ok() {
                    live += 1;
                }
            }
        }
        path.pop();
    }
    println!("streams={} pid_files={files} live={live}", streams.len());
}
