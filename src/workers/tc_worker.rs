//! `tc worker <task-id>` processes as workers: upstream's budget-capped way
//! of running one task (`claude --print` in the foreground). One pass over
//! /proc finds them: a process of ours whose command line runs `tc` (the
//! program itself or a script named `tc`) with `worker <task-id>`, and whose
//! working directory is inside the project (tc finds its database by walking
//! up from there, so a `tc worker` elsewhere is another project's). The task
//! id ties it to a stream through the task database.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::{LiveWorker, MatchRule, Sighting, SourceKind, StreamKey, WorkerSource};
use crate::process::procinfo;

/// One live `tc worker` process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcWorkerProcess {
    pub pid: i32,
    pub task_id: i64,
    pub cwd: PathBuf,
}

/// The task id of a `tc worker <task-id> ...` command line: an argument
/// whose file name is `tc`, then `worker`, then the id.
pub fn task_of_cmdline(args: &[String]) -> Option<i64> {
    let at = args
        .iter()
        .position(|a| Path::new(a).file_name().is_some_and(|name| name == "tc"))?;
    match &args[at + 1..] {
        [verb, task, ..] if verb == "worker" => task.parse().ok().filter(|id: &i64| *id > 0),
        _ => None,
    }
}

/// Every `tc worker` process of this user working inside `project_root`.
pub fn scan(project_root: &Path) -> Vec<TcWorkerProcess> {
    let root = project_root
        .canonicalize()
        .unwrap_or_else(|_| project_root.to_path_buf());
    let our_uid = procinfo::current_uid();
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let dir = entry.path();
        // Cheap filter first: most processes are not `tc worker`.
        let Ok(raw) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        if !raw.windows(7).any(|w| w == b"worker\0") {
            continue;
        }
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let Some(task_id) = task_of_cmdline(&args) else {
            continue;
        };
        let Some(facts) = procinfo::inspect(pid) else {
            continue;
        };
        if facts.uid != our_uid || facts.is_zombie() {
            continue;
        }
        let Ok(cwd) = std::fs::read_link(dir.join("cwd")) else {
            continue;
        };
        if cwd.starts_with(&root) {
            found.push(TcWorkerProcess { pid, task_id, cwd });
        }
    }
    found.sort_by_key(|p| p.pid);
    found
}

/// The tc worker source of one tick: the processes found and the stream of
/// each task id (from the task database).
#[derive(Debug, Clone, Default)]
pub struct TcWorkers {
    pub processes: Vec<TcWorkerProcess>,
    pub task_streams: HashMap<i64, String>,
}

impl TcWorkers {
    /// The task ids to look up in the database.
    pub fn task_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.processes.iter().map(|p| p.task_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

impl WorkerSource for TcWorkers {
    fn kind(&self) -> SourceKind {
        SourceKind::TcWorker
    }

    fn observe(&mut self, streams: &[StreamKey<'_>]) -> BTreeMap<String, Sighting> {
        let mut out: BTreeMap<String, Sighting> = BTreeMap::new();
        for p in &self.processes {
            let Some(stream) = self.task_streams.get(&p.task_id) else {
                continue;
            };
            if !streams.iter().any(|s| s.id == stream) {
                continue;
            }
            out.entry(stream.clone())
                .or_default()
                .live
                .push(LiveWorker {
                    source: SourceKind::TcWorker,
                    id: format!("pid {} (task {})", p.pid, p.task_id),
                    pid: Some(p.pid),
                    rule: MatchRule::Task,
                    started_at: None,
                });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn task_ids_from_command_lines_table() {
        let cases: [(&[&str], Option<i64>); 9] = [
            (
                &["tc", "worker", "12", "--max-budget-usd", "3.00"],
                Some(12),
            ),
            (&["/usr/local/bin/tc", "worker", "7"], Some(7)),
            (
                &["/usr/bin/python3", "/home/u/.local/bin/tc", "worker", "5"],
                Some(5),
            ),
            (&["/bin/bash", "/tmp/bin/tc", "worker", "9"], Some(9)),
            (&["tc", "task", "list"], None),
            (&["tc", "worker"], None),
            (&["tc", "worker", "-3"], None),
            (&["etc", "worker", "3"], None),
            (&["claude", "--print", "Work on stream 1"], None),
        ];
        for (cmdline, want) in cases {
            assert_eq!(task_of_cmdline(&args(cmdline)), want, "{cmdline:?}");
        }
    }

    #[test]
    fn scan_finds_a_tc_worker_inside_the_project_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let inside = root.join("proj/.worktrees/3");
        let outside = root.join("elsewhere");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let bin = root.join("tc");
        // It waits on its stdin (a builtin: no child to leak) until killed.
        std::fs::write(&bin, "#!/bin/sh\nread line\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        // The script runs as `/bin/sh <root>/tc worker N`.
        let spawn = |cwd: &Path, task: &str| {
            std::process::Command::new(&bin)
                .args(["worker", task])
                .current_dir(cwd)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mut mine = spawn(&inside, "41");
        let mut theirs = spawn(&outside, "42");
        let project = root.join("proj");
        let mut seen = Vec::new();
        for _ in 0..200 {
            seen = scan(&project);
            if seen.iter().any(|p| p.task_id == 41) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for child in [&mut mine, &mut theirs] {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(
            seen.iter().any(|p| p.task_id == 41 && p.cwd == inside),
            "{seen:?}"
        );
        assert!(!seen.iter().any(|p| p.task_id == 42), "{seen:?}");

        let mut source = TcWorkers {
            processes: seen,
            task_streams: [(41, "3".to_string())].into(),
        };
        let keys = [StreamKey {
            id: "3",
            aliases: &[],
            work_dir: &inside,
            recorded_job: None,
        }];
        let got = source.observe(&keys);
        assert_eq!(got["3"].live.len(), 1);
        assert_eq!(got["3"].live[0].rule, MatchRule::Task);
    }
}
