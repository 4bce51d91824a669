//! `logs [STREAM] [--all] [--follow] [--lines N] [--events]`: the monitor
//! log, a worker's log (one `.log` per worker, stdout and stderr together),
//! every log, or the structured event log. `--follow` keeps printing, follows
//! rotation (a replaced or truncated file is reopened) and, for a stream,
//! switches to its new log when the wrapper starts a fresh one.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cli::Cli;
use crate::layout::{Layout, StreamId};
use crate::logtail;
use crate::report::events::EventRecord;
use crate::{Failure, Outcome};

use super::Context;

/// What to show.
#[derive(Debug, Clone)]
pub struct LogsRequest<'a> {
    pub stream: Option<&'a str>,
    pub all: bool,
    pub follow: bool,
    pub lines: usize,
    pub events: bool,
}

/// The current log of a stream: its newest `logs/<stream>_<init8>.log`
/// (a component's `logs/@name.log`).
pub fn stream_log(layout: &Layout, id: &StreamId) -> Option<PathBuf> {
    let own = layout.logs_dir().join(format!("{id}.log"));
    if id.as_str().starts_with(crate::component::COMPONENT_PREFIX) {
        return own.exists().then_some(own);
    }
    let prefix = format!("{id}_");
    let entries = std::fs::read_dir(layout.logs_dir()).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let suffix = name
                .strip_prefix(&prefix)?
                .strip_suffix(".log")?
                .to_string();
            // `<init8>` has no '_' and at most 8 chars: stream `a` must not
            // take the logs of stream `a_b`.
            (!suffix.is_empty() && suffix.len() <= 8 && !suffix.contains('_')).then_some(e.path())
        })
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

/// Every worker log in `logs/` (not the monitor's own files).
fn all_worker_logs(layout: &Layout) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(layout.logs_dir())
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    logs.retain(|p| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        name.ends_with(".log") && name != "monitor.log" && p.is_file()
    });
    logs.sort();
    logs
}

/// One event as a readable line.
pub fn format_event(line: &str) -> String {
    match serde_json::from_str::<EventRecord>(line) {
        Ok(e) => {
            let mut out = format!("{} {:<18}", e.time, e.event);
            if let Some(s) = &e.stream {
                out.push_str(&format!(" {s}"));
            }
            if let (Some(from), Some(to)) = (&e.from, &e.to) {
                out.push_str(&format!(" {from} -> {to}"));
            }
            if let Some(pid) = e.pid {
                out.push_str(&format!(" pid={pid}"));
            }
            if let Some(a) = e.attempt {
                out.push_str(&format!(" attempt={a}"));
            }
            if let Some(by) = &e.by {
                out.push_str(&format!(" by={by}"));
            }
            if let Some(r) = &e.reason {
                out.push_str(&format!(": {r}"));
            }
            out
        }
        Err(_) => line.to_string(),
    }
}

fn print_tail(
    path: &Path,
    end: u64,
    lines: usize,
    header: bool,
    filter: &dyn Fn(&str) -> Option<String>,
) {
    let text = logtail::tail_until(path, end, 1 << 20).unwrap_or_default();
    let shown: Vec<String> = text.lines().filter_map(filter).collect();
    let mut out = std::io::stdout().lock();
    if header {
        let _ = writeln!(out, "==> {} <==", path.display());
    }
    for l in &shown[shown.len().saturating_sub(lines)..] {
        let _ = writeln!(out, "{l}");
    }
}

pub fn run(cli: &Cli, req: &LogsRequest<'_>) -> Result<Outcome, Failure> {
    let ctx = Context::new(cli)?;
    let layout = &ctx.layout;
    let stream = match req.stream {
        Some(raw) => Some(ctx.known_stream(cli, raw)?),
        None => None,
    };
    let events_path = layout.events_log();
    let wanted = stream.as_ref().map(|s| s.to_string());
    let event_filter = move |line: &str| -> Option<String> {
        if let Some(w) = &wanted {
            let e: EventRecord = serde_json::from_str(line).ok()?;
            if e.stream.as_deref() != Some(w.as_str()) {
                return None;
            }
        }
        Some(format_event(line))
    };
    let plain = |line: &str| Some(line.to_string());

    // The files to show, re-resolved while following (a new worker log).
    let pick = |layout: &Layout| -> Vec<PathBuf> {
        if req.events {
            vec![events_path.clone()]
        } else if req.all {
            let mut v = vec![layout.monitor_log()];
            v.extend(all_worker_logs(layout));
            v
        } else if let Some(id) = &stream {
            stream_log(layout, id).into_iter().collect()
        } else {
            vec![layout.monitor_log()]
        }
    };
    let files = pick(layout);
    if files.is_empty() {
        return Err(Failure::CouldNotRun(match &stream {
            Some(id) => format!(
                "worker {id} has no log in {} yet",
                layout.logs_dir().display()
            ),
            None => format!("no logs in {}", layout.logs_dir().display()),
        }));
    }
    let filter: &dyn Fn(&str) -> Option<String> = if req.events { &event_filter } else { &plain };
    let header = files.len() > 1;
    // Each file is measured once: the tail shows up to that point and
    // following starts exactly there, so no line falls in between.
    let marks: Vec<Followed> = files
        .into_iter()
        .map(|path| {
            let (inode, offset) = identity(&path).unwrap_or((0, 0));
            Followed {
                path,
                inode,
                offset,
                partial: String::new(),
            }
        })
        .collect();
    for m in &marks {
        print_tail(&m.path, m.offset, req.lines, header, filter);
    }
    if !req.follow {
        return Ok(Outcome::Healthy);
    }
    follow(layout, &pick, filter, header, marks)
}

/// Where following one file stands.
struct Followed {
    path: PathBuf,
    inode: u64,
    offset: u64,
    partial: String,
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.ino(), m.len()))
}

fn follow(
    layout: &Layout,
    pick: &dyn Fn(&Layout) -> Vec<PathBuf>,
    filter: &dyn Fn(&str) -> Option<String>,
    header: bool,
    mut followed: Vec<Followed>,
) -> Result<Outcome, Failure> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGPIPE,
    ] {
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
    }
    let start = |path: PathBuf| -> Followed {
        let (inode, _) = identity(&path).unwrap_or((0, 0));
        Followed {
            path,
            inode,
            offset: 0,
            partial: String::new(),
        }
    };
    let mut last_shown: Option<PathBuf> = None;
    while !stop.load(Ordering::SeqCst) {
        // New files (a restarted worker's fresh log) join from their start.
        for path in pick(layout) {
            if !followed.iter().any(|f| f.path == path) {
                followed.push(start(path));
            }
        }
        let mut out = std::io::stdout().lock();
        for f in &mut followed {
            let Some((inode, len)) = identity(&f.path) else {
                continue;
            };
            if inode != f.inode || len < f.offset {
                // Rotated or truncated: read the new file from its start.
                f.inode = inode;
                f.offset = 0;
                f.partial.clear();
            }
            if len == f.offset {
                continue;
            }
            let Ok(mut file) = crate::process::safe_file::open_read(&f.path) else {
                continue;
            };
            if file.seek(SeekFrom::Start(f.offset)).is_err() {
                continue;
            }
            let mut bytes = Vec::new();
            if file.take(len - f.offset).read_to_end(&mut bytes).is_err() {
                continue;
            }
            f.offset += bytes.len() as u64;
            f.partial.push_str(&String::from_utf8_lossy(&bytes));
            while let Some(at) = f.partial.find('\n') {
                let line: String = f.partial.drain(..=at).collect();
                if let Some(shown) = filter(line.trim_end_matches('\n')) {
                    if header && last_shown.as_ref() != Some(&f.path) {
                        let _ = writeln!(out, "==> {} <==", f.path.display());
                        last_shown = Some(f.path.clone());
                    }
                    if writeln!(out, "{shown}").is_err() {
                        return Ok(Outcome::Healthy);
                    }
                }
            }
        }
        let _ = out.flush();
        drop(out);
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(Outcome::Healthy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_lines() {
        let line = r#"{"time":"2026-01-01T10:00:00.000001","ts_ms":1,"event":"transition","stream":"A","from":"running","to":"unhealthy","reason":"no PID file","pid":5}"#;
        assert_eq!(
            format_event(line),
            "2026-01-01T10:00:00.000001 transition         A running -> unhealthy pid=5: no PID file"
        );
        assert_eq!(format_event("not json"), "not json");
    }
}
