//! The status table as text: one row per stream (name, health, PID,
//! uptime, restarts, tasks), the reason and, with `--verbose`, probe
//! results and schema; padded by display width and coloured on a terminal.

use colored::Colorize;
use unicode_width::UnicodeWidthStr;

use super::{StatusReport, StreamStatus};

/// `text` followed by spaces up to `width` terminal columns: counted by
/// display width, so a stream name in CJK (two columns a character) or with
/// an emoji keeps the columns after it aligned.
pub(super) fn pad(text: &str, width: usize) -> String {
    let fill = width.saturating_sub(text.width());
    format!("{text}{}", " ".repeat(fill))
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn clock(ms: u64) -> String {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_millis_opt(ms as i64)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// The table as of now.
pub fn render_text(report: &StatusReport, verbose: bool, color: bool) -> String {
    render_text_at(report, verbose, color, crate::clock::now_ms())
}

/// One stream's STATUS cell: health and state in one, as `systemctl` does
/// ("✗ backoff, next in 12s").
fn status_cell(s: &StreamStatus, now_ms: u64) -> String {
    match (s.health.as_str(), s.state.as_str()) {
        ("healthy", _) => "✓ running".into(),
        ("not_ready", _) => "◐ running, not ready".into(),
        ("complete", _) => "✓ complete".into(),
        ("waiting", _) => "… waiting".into(),
        ("paused", _) => "‖ paused".into(),
        ("stopped", _) => "■ stopped".into(),
        ("starting", _) => "… starting".into(),
        ("gave_up", _) => "✗ gave up".into(),
        ("dead", _) => "✗ dead".into(),
        ("blocked", _) => "‖ blocked".into(),
        ("ready", _) => "… ready".into(),
        ("unknown", _) => "? unknown".into(),
        ("unhealthy", "backoff") => match s.next_restart_ms {
            Some(next) => format!("✗ backoff, next {}", relative(next, now_ms)),
            None => "✗ backoff".into(),
        },
        ("unhealthy", "restarting") => "… restarting".into(),
        ("unhealthy", _) => "✗ unhealthy".into(),
        _ => "- not started".into(),
    }
}

/// A time relative to now: "in 12s", or "now" once it has come.
fn relative(at_ms: u64, now_ms: u64) -> String {
    match at_ms.saturating_sub(now_ms).div_ceil(1000) {
        0 => "now".into(),
        secs => format!("in {}", duration(secs)),
    }
}

/// The table as of `now_ms`.
pub fn render_text_at(report: &StatusReport, verbose: bool, color: bool, now_ms: u64) -> String {
    let mut out = String::new();
    let paint = |text: String, health: &str| -> String {
        if !color {
            return text;
        }
        match health {
            "healthy" | "complete" => text.green().to_string(),
            "unhealthy" | "gave_up" | "hung" | "dead" | "unknown" => text.red().to_string(),
            "waiting" | "paused" | "stopped" | "starting" | "not_ready" | "blocked" | "ready" => {
                text.yellow().to_string()
            }
            _ => text,
        }
    };
    let d = &report.daemon;
    let daemon_line = match (d.pid, d.heartbeat_age_secs) {
        (Some(pid), Some(age)) => {
            format!("running (PID {pid}), heartbeat {age}s ago, {}", d.health)
        }
        (Some(pid), None) => format!("running (PID {pid})"),
        (None, _) => "not running".to_string(),
    };
    out.push_str(&format!(
        "Monitor daemon: {}\n",
        paint(daemon_line, &d.health)
    ));
    match &report.initiative {
        Some(i) => out.push_str(&format!(
            "Initiative:     {} ({}, {})\n",
            i.name, i.id, i.status
        )),
        None => {
            out.push_str("Initiative:     none active: nothing to monitor\n");
            return out;
        }
    }
    if report.streams.is_empty() {
        out.push_str("No streams in this initiative.\n");
        return out;
    }
    out.push('\n');
    let id_width = report
        .streams
        .iter()
        .map(|s| s.id.width())
        .max()
        .unwrap_or(6)
        .max(6);
    // tc streams are numbers: their names say what they are.
    let names = report.schema == crate::store::SchemaKind::Tc;
    let name_width = report
        .streams
        .iter()
        .map(|s| s.name.width())
        .max()
        .unwrap_or(4)
        .clamp(4, 32);
    let name_head = if names {
        format!("{}  ", pad("NAME", name_width))
    } else {
        String::new()
    };
    let statuses: Vec<String> = report
        .streams
        .iter()
        .map(|s| status_cell(s, now_ms))
        .collect();
    let status_width = statuses.iter().map(|t| t.width()).max().unwrap_or(6).max(6);
    let exit_width = report
        .streams
        .iter()
        .filter_map(|s| s.last_exit.as_ref().map(|e| e.width()))
        .max()
        .unwrap_or(9)
        .max(9);
    out.push_str(&format!(
        "{}  {name_head}{}  {:>8}  {:>9}  {:>8}  {}  TASKS\n",
        pad("STREAM", id_width),
        pad("STATUS", status_width),
        "PID",
        "UPTIME",
        "RESTARTS",
        pad("LAST EXIT", exit_width),
    ));
    for (s, status) in report.streams.iter().zip(&statuses) {
        let pid = s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        let up = s.uptime_secs.map(duration).unwrap_or_else(|| "-".into());
        let tasks = format!(
            "{}/{} done{}{}",
            s.tasks.completed + s.tasks.cancelled,
            s.tasks.total,
            if s.tasks.in_progress > 0 {
                format!(", {} in progress", s.tasks.in_progress)
            } else {
                String::new()
            },
            if s.tasks.blocked > 0 {
                format!(", {} blocked", s.tasks.blocked)
            } else {
                String::new()
            },
        );
        let name = if names {
            let shown: String = s.name.chars().take(32).collect();
            format!("{}  ", pad(&shown, name_width))
        } else {
            String::new()
        };
        let last_exit = s.last_exit.as_deref().unwrap_or("-");
        out.push_str(&format!(
            "{}  {name}{}  {:>8}  {:>9}  {:>8}  {}  {}\n",
            pad(&s.id, id_width),
            paint(pad(status, status_width), &s.health),
            pid,
            up,
            s.restarts_since_reset,
            pad(last_exit, exit_width),
            tasks
        ));
        if let Some(reason) = s.reason.as_ref().filter(|_| verbose) {
            out.push_str(&format!("{:id_width$}  reason: {reason}\n", ""));
        }
        if let Some(next) = s.next_restart_ms.filter(|_| verbose) {
            out.push_str(&format!(
                "{:id_width$}  next restart: {} ({})\n",
                "",
                clock(next),
                relative(next, now_ms)
            ));
        }
        if verbose {
            if let (Some(at), Some(why)) = (s.last_restart_ms, &s.last_restart_reason) {
                out.push_str(&format!(
                    "{:id_width$}  last restart: {} ({why})\n",
                    "",
                    clock(at)
                ));
            }
            if !s.dependencies.is_empty() {
                out.push_str(&format!(
                    "{:id_width$}  depends on: {}\n",
                    "",
                    s.dependencies.join(", ")
                ));
            }
            if let Some(worktree) = &s.worktree {
                out.push_str(&format!("{:id_width$}  worktree: {worktree}\n", ""));
            }
            for worker in s.workers.iter().flatten() {
                out.push_str(&format!("{:id_width$}  worker: {worker}\n", ""));
            }
            out.push_str(&format!(
                "{:id_width$}  state: {}; restarts: {} since reset, {} in all, budget used {} (without progress)\n",
                "", s.state, s.restarts_since_reset, s.restarts_total, s.restarts
            ));
            for p in &s.probes {
                let mark = match p.ok {
                    Some(true) => "ok",
                    Some(false) => "FAILED",
                    None => "not run",
                };
                out.push_str(&format!(
                    "{:id_width$}  probe {}: {mark}: {}\n",
                    "", p.probe, p.detail
                ));
            }
        }
        if let Some(lines) = &s.log_tail {
            out.push_str(&format!(
                "{:id_width$}  last {} log lines:\n",
                "",
                lines.len()
            ));
            for line in lines {
                out.push_str(&format!("{:id_width$}    {line}\n", ""));
            }
        }
    }
    if verbose {
        out.push_str(&format!(
            "\nSchema: {} in {}\n",
            report.schema.describe(),
            report.tasks_db
        ));
    }
    out
}
