//! Worker sources behind one interface. A tc project's workers are not
//! processes with PID files: they are Claude Code background sessions (seen
//! through `claude agents --json` or the job files) and `tc worker <task>`
//! processes. Each source reports, per stream, the live workers it proves or
//! matches, whether it saw a worker of the stream that has finished (evidence
//! that one ran), and whether it could not tell. The merge is the only rule:
//! a stream is running when any source proves or matches a live worker, and
//! unknown when no source does and some source could not tell.
//!
//! A matched live session blocks a new dispatch but proves nothing for
//! signals: its `pid` may belong to the Claude daemon that hosts it, so no
//! worker of this module is ever signalled by the monitor.

pub mod assess;
pub mod claude_session;
pub mod dispatch;
pub mod launch;
pub mod observe;
pub mod tc_worker;
pub mod worktree;

use std::collections::BTreeMap;
use std::path::Path;

/// Which source saw a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    ClaudeSession,
    TcWorker,
}

impl SourceKind {
    pub fn describe(self) -> &'static str {
        match self {
            SourceKind::ClaudeSession => "claude session",
            SourceKind::TcWorker => "tc worker",
        }
    }
}

/// How a worker was tied to its stream, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchRule {
    /// The monitor recorded this job id when it dispatched the stream.
    Recorded,
    /// A `tc worker` process whose task belongs to the stream.
    Task,
    /// The session's working directory is inside the stream's work dir.
    WorkDir,
    /// The session's prompt says "Work on stream <id>", as upstream's does.
    Intent,
}

/// A stream as the sources need it to match workers.
#[derive(Debug, Clone)]
pub struct StreamKey<'a> {
    /// Canonical id (`streams.id` as text).
    pub id: &'a str,
    /// Name and metadata `streamId` labels.
    pub aliases: &'a [String],
    /// The stream's work dir, absolute (canonical when it exists).
    pub work_dir: &'a Path,
    /// The job id the monitor recorded when it last dispatched the stream.
    pub recorded_job: Option<&'a str>,
}

/// A live worker a source matched to a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveWorker {
    pub source: SourceKind,
    /// The job or session id, or `pid <n>` for a process.
    pub id: String,
    /// A PID to show, never to signal.
    pub pid: Option<i32>,
    pub rule: MatchRule,
    /// When it started, as its source says (RFC 3339 or a number).
    pub started_at: Option<String>,
}

/// What one source says about one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sighting {
    pub live: Vec<LiveWorker>,
    /// A finished worker of the stream was seen: evidence that one ran.
    pub ran: bool,
    /// The source could not tell (its output was unreadable), and why.
    pub cannot_tell: Option<String>,
}

/// One way of seeing workers. `observe` is called once per tick.
pub trait WorkerSource {
    fn kind(&self) -> SourceKind;
    /// Sightings by canonical stream id; streams not in the map: nothing seen.
    fn observe(&mut self, streams: &[StreamKey<'_>]) -> BTreeMap<String, Sighting>;
    /// Problems worth a warning (an unreadable job file and the like).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Every source's word on one stream, merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamWorkers {
    pub live: Vec<LiveWorker>,
    pub ran: bool,
    /// Why it cannot be told (every source that could not tell).
    pub cannot_tell: Vec<String>,
}

/// What the merged word means for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Some source proves or matches a live worker.
    Running,
    /// No live worker, and some source could not tell: never restarted.
    Unknown,
    /// No live worker; one ran before (a finished one was seen).
    Gone,
    /// No worker seen at all.
    NoneSeen,
}

impl StreamWorkers {
    pub fn presence(&self) -> Presence {
        if !self.live.is_empty() {
            Presence::Running
        } else if !self.cannot_tell.is_empty() {
            Presence::Unknown
        } else if self.ran {
            Presence::Gone
        } else {
            Presence::NoneSeen
        }
    }
}

/// Asks every source once and merges what they say, per stream.
pub fn observe_all(
    sources: &mut [&mut dyn WorkerSource],
    streams: &[StreamKey<'_>],
) -> BTreeMap<String, StreamWorkers> {
    let mut merged: BTreeMap<String, StreamWorkers> = streams
        .iter()
        .map(|s| (s.id.to_string(), StreamWorkers::default()))
        .collect();
    for source in sources.iter_mut() {
        for (id, sighting) in source.observe(streams) {
            let Some(entry) = merged.get_mut(&id) else {
                continue;
            };
            entry.live.extend(sighting.live);
            entry.ran |= sighting.ran;
            if let Some(why) = sighting.cannot_tell {
                entry.cannot_tell.push(why);
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Canned(SourceKind, BTreeMap<String, Sighting>);

    impl WorkerSource for Canned {
        fn kind(&self) -> SourceKind {
            self.0
        }
        fn observe(&mut self, _: &[StreamKey<'_>]) -> BTreeMap<String, Sighting> {
            self.1.clone()
        }
    }

    fn live(source: SourceKind) -> LiveWorker {
        LiveWorker {
            source,
            id: "x".into(),
            pid: None,
            rule: MatchRule::WorkDir,
            started_at: None,
        }
    }

    #[test]
    fn any_live_worker_wins_and_cannot_tell_beats_gone() {
        let unknown = Sighting {
            cannot_tell: Some("claude agents failed".into()),
            ..Sighting::default()
        };
        let ran = Sighting {
            ran: true,
            ..Sighting::default()
        };
        let alive = |s| Sighting {
            live: vec![live(s)],
            ..Sighting::default()
        };
        // (session source, tc worker source, expected presence)
        let cases = [
            (Sighting::default(), Sighting::default(), Presence::NoneSeen),
            (ran.clone(), Sighting::default(), Presence::Gone),
            (unknown.clone(), ran.clone(), Presence::Unknown),
            (
                unknown.clone(),
                alive(SourceKind::TcWorker),
                Presence::Running,
            ),
            (
                alive(SourceKind::ClaudeSession),
                ran.clone(),
                Presence::Running,
            ),
        ];
        let dir = Path::new("/p/.worktrees/1");
        let keys = [StreamKey {
            id: "1",
            aliases: &[],
            work_dir: dir,
            recorded_job: None,
        }];
        for (i, (a, b, want)) in cases.into_iter().enumerate() {
            let mut one = Canned(SourceKind::ClaudeSession, [("1".to_string(), a)].into());
            let mut two = Canned(
                SourceKind::TcWorker,
                [("1".to_string(), b), ("stranger".to_string(), ran.clone())].into(),
            );
            let merged = observe_all(&mut [&mut one, &mut two], &keys);
            assert_eq!(merged.len(), 1, "case {i}: unknown streams are dropped");
            assert_eq!(merged["1"].presence(), want, "case {i}");
        }
    }
}
