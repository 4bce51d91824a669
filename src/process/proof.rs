//! Proof that a live process is stream S's worker of this project, not just
//! a process of ours that a PID file happens to name. A process is S's
//! worker only if
//! (a) its environment carries the tag every spawn sets
//!     (`MONITOR_WORKERS_STREAM=S`, `MONITOR_WORKERS_PROJECT=<root>`,
//!     `MONITOR_WORKERS_SPAWN=<nonce>`), or
//! (b) its command line is a worker wrapper (`worker-wrapper.sh S <pid-file>
//!     <log-dir> <work-dir> ...`, wherever the wrapper lives) whose PID-file
//!     argument is this project's PID file for S — how the original
//!     orchestrator's untagged workers look, or
//! (c) it is in the session of a spawn the monitor recorded, bound to the
//!     session leader's PID and start time.
//! Anything else is "not our worker", with a reason. A tag naming another
//! stream or project settles the question against S, whatever else holds.
//!
//! Matching environment and argv bytes is pure and table-tested. Reading
//! `/proc/PID/environ` and `cmdline` can block on a process in
//! uninterruptible sleep, so it happens on a helper thread with a time
//! bound, and what was read is cached per (PID, start time).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::procinfo::{self, ProcFacts};

/// The stream a worker was spawned for.
pub const STREAM_VAR: &str = "MONITOR_WORKERS_STREAM";
/// The project root the spawning monitor watched.
pub const PROJECT_VAR: &str = "MONITOR_WORKERS_PROJECT";
/// A random nonce, one per spawn.
pub const SPAWN_VAR: &str = "MONITOR_WORKERS_SPAWN";
/// The three tag variables (a monitor drops them from its own environment).
pub const TAG_VARS: [&str; 3] = [STREAM_VAR, PROJECT_VAR, SPAWN_VAR];

/// The file name every worker wrapper has, wherever it is installed.
pub const WRAPPER_NAME: &str = "worker-wrapper.sh";

/// How long reading one process's environment and command line may take.
const READ_BOUND: Duration = Duration::from_millis(300);
/// Readers still blocked past their bound; beyond this many, no new ones are
/// started (the process counts as unreadable) so threads cannot pile up.
const MAX_STUCK_READERS: usize = 8;
/// Cached evidence entries before the cache is cleared.
const MAX_CACHED: usize = 8192;

/// The project whose workers are proven: its root (as the tag carries it)
/// and its `pids/` directory (as wrapper arguments name it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub root: PathBuf,
    pub pids_dir: PathBuf,
}

impl Project {
    pub fn of(layout: &crate::layout::Layout) -> Project {
        Project {
            root: layout.project_root.clone(),
            pids_dir: layout.pids_dir(),
        }
    }

    pub fn pid_file(&self, stream: &str) -> PathBuf {
        self.pids_dir.join(format!("{stream}.pid"))
    }
}

/// A spawn the monitor recorded: the session it created is led by this
/// process, pinned to its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpawnSession {
    pub leader: i32,
    pub leader_start_ticks: u64,
}

/// How a process was proven to be the stream's worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// It carries the stream's tag; `spawn` is the spawn's nonce.
    Tag { spawn: String },
    /// Its command line is the stream's worker wrapper.
    Wrapper,
    /// It is in the session of a recorded spawn.
    Session { leader: i32 },
}

/// Why a live process is not the stream's worker (one line for the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PID {pid} is not a worker of {stream}: {why}")]
pub struct NotOurs {
    pub pid: i32,
    pub stream: String,
    pub why: String,
}

// ----- pure matching ---------------------------------------------------------

/// The tag variables found in an environment block (NUL-separated
/// `KEY=value` entries). The first occurrence counts, as for `getenv`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tag {
    pub stream: Option<Vec<u8>>,
    pub project: Option<Vec<u8>>,
    pub spawn: Option<Vec<u8>>,
}

impl Tag {
    pub fn from_environ(block: &[u8]) -> Tag {
        let mut tag = Tag::default();
        for entry in block.split(|b| *b == 0) {
            let Some(eq) = entry.iter().position(|b| *b == b'=') else {
                continue;
            };
            let (key, value) = (&entry[..eq], entry[eq + 1..].to_vec());
            let slot = match key {
                k if k == STREAM_VAR.as_bytes() => &mut tag.stream,
                k if k == PROJECT_VAR.as_bytes() => &mut tag.project,
                k if k == SPAWN_VAR.as_bytes() => &mut tag.spawn,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        tag
    }

    /// No tag variable at all (an untagged process).
    pub fn is_absent(&self) -> bool {
        self.stream.is_none() && self.project.is_none() && self.spawn.is_none()
    }
}

/// What a tag says about stream `stream` of the project at `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagSays {
    /// No tag.
    Absent,
    /// Complete, and it names this stream of this project.
    Ours { spawn: String },
    /// It names something else (or is incomplete): the reason.
    Other(String),
}

/// Judges a tag against the stream and the project root. `same_root`
/// decides whether the tag's project is ours (byte equality, or the same
/// directory through another spelling).
pub fn tag_says(tag: &Tag, stream: &str, same_root: impl Fn(&Path) -> bool) -> TagSays {
    if tag.is_absent() {
        return TagSays::Absent;
    }
    let text = |v: &Option<Vec<u8>>| {
        v.as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    let (Some(tag_stream), Some(project), Some(spawn)) =
        (text(&tag.stream), &tag.project, text(&tag.spawn))
    else {
        return TagSays::Other("its tag is incomplete".into());
    };
    if spawn.is_empty() {
        return TagSays::Other("its tag has no spawn nonce".into());
    }
    if tag_stream != stream {
        return TagSays::Other(format!("its tag names stream {tag_stream}"));
    }
    let project = Path::new(OsStr::from_bytes(project));
    if !same_root(project) {
        return TagSays::Other(format!("its tag names project {}", project.display()));
    }
    TagSays::Ours { spawn }
}

/// The first arguments of a worker wrapper's command line, if it is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrapperArgs {
    pub stream: String,
    pub pid_file: PathBuf,
}

/// Shells a wrapper script may run under (through its `#!` line or by hand).
fn is_shell(arg: &[u8]) -> bool {
    let name = arg.rsplit(|b| *b == b'/').next().unwrap_or(arg);
    matches!(
        name,
        b"bash" | b"sh" | b"dash" | b"zsh" | b"ksh" | b"busybox" | b"env"
    )
}

/// Reads a command line (`/proc/PID/cmdline` split on NUL) as a worker
/// wrapper call: `[shell [-opts]] …/worker-wrapper.sh S <pid-file> <log-dir>
/// <work-dir> …`. Anything else is `None`.
pub fn wrapper_args(argv: &[Vec<u8>]) -> Option<WrapperArgs> {
    let mut i = 0;
    while i < argv.len() && i < 4 {
        let arg = &argv[i];
        let base = arg.rsplit(|b| *b == b'/').next().unwrap_or(arg);
        if base == WRAPPER_NAME.as_bytes() {
            break;
        }
        let skippable = (i == 0 && is_shell(arg)) || (i > 0 && arg.first() == Some(&b'-'));
        if !skippable {
            return None;
        }
        i += 1;
    }
    let rest = argv.get(i + 1..)?;
    if rest.len() < 4 {
        return None;
    }
    Some(WrapperArgs {
        stream: String::from_utf8(rest[0].clone()).ok()?,
        pid_file: PathBuf::from(OsStr::from_bytes(&rest[1])),
    })
}

/// A path with `.` and repeated separators dropped and `..` applied
/// lexically (for comparing paths written by different programs).
pub fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Splits a command line block into its arguments (a trailing NUL ends the
/// last one; an empty block has none).
pub fn split_cmdline(block: &[u8]) -> Vec<Vec<u8>> {
    let trimmed = block.strip_suffix(&[0]).unwrap_or(block);
    if trimmed.is_empty() {
        return Vec::new();
    }
    trimmed.split(|b| *b == 0).map(<[u8]>::to_vec).collect()
}

// ----- reading /proc with a bound -------------------------------------------

/// What a process's /proc entries showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// `None`: the environment could not be read (EACCES, gone, too slow).
    pub environ: Option<Tag>,
    pub argv: Vec<Vec<u8>>,
}

static STUCK: AtomicUsize = AtomicUsize::new(0);

type Cache = Mutex<HashMap<(i32, u64), Arc<Evidence>>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn read_proc(pid: i32) -> (Option<Tag>, Vec<Vec<u8>>) {
    let environ = std::fs::read(format!("/proc/{pid}/environ"))
        .ok()
        .map(|b| Tag::from_environ(&b));
    let argv = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| split_cmdline(&b))
        .unwrap_or_default();
    (environ, argv)
}

type Read = (Option<Tag>, Vec<Vec<u8>>);
type Request = (i32, std::sync::mpsc::Sender<Read>);

/// The helper thread that reads /proc for proofs, kept between reads (a
/// thread per read costs more than the read). One that gets stuck on a
/// process is abandoned (`abandoned` set) and a fresh one started.
struct Reader {
    requests: std::sync::mpsc::Sender<Request>,
    abandoned: Arc<std::sync::atomic::AtomicBool>,
}

fn reader() -> &'static Mutex<Option<Reader>> {
    static READER: OnceLock<Mutex<Option<Reader>>> = OnceLock::new();
    READER.get_or_init(|| Mutex::new(None))
}

fn start_reader() -> Option<Reader> {
    let (requests, incoming) = std::sync::mpsc::channel::<Request>();
    let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = abandoned.clone();
    std::thread::Builder::new()
        .name("proof-reader".into())
        .spawn(move || {
            for (pid, reply) in incoming {
                let _ = reply.send(read_proc(pid));
            }
            // No more requests: if we were given up on, we are no longer stuck.
            if flag.load(Ordering::SeqCst) {
                STUCK.fetch_sub(1, Ordering::SeqCst);
            }
        })
        .ok()?;
    Some(Reader {
        requests,
        abandoned,
    })
}

/// Reads a process's environment and command line on the helper thread,
/// waiting at most [`READ_BOUND`]; `None` when too slow (or when too many
/// helpers are already stuck).
fn read_bounded(pid: i32) -> Option<Read> {
    let (reply, answer) = std::sync::mpsc::channel();
    let abandoned = {
        let mut slot = reader().lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            if STUCK.load(Ordering::SeqCst) >= MAX_STUCK_READERS {
                return None;
            }
            *slot = start_reader();
        }
        let current = slot.as_ref()?;
        current.requests.send((pid, reply)).ok()?;
        current.abandoned.clone()
    };
    match answer.recv_timeout(READ_BOUND) {
        Ok(read) => Some(read),
        Err(_) => {
            let mut slot = reader().lock().unwrap_or_else(|p| p.into_inner());
            // Give the stuck helper up (once), so the next read gets a fresh one.
            if !abandoned.swap(true, Ordering::SeqCst) {
                STUCK.fetch_add(1, Ordering::SeqCst);
                if slot
                    .as_ref()
                    .is_some_and(|r| Arc::ptr_eq(&r.abandoned, &abandoned))
                {
                    *slot = None;
                }
            }
            None
        }
    }
}

/// The environment tag and command line of the process `facts` describes,
/// read within [`READ_BOUND`] and cached per (PID, start time). A process
/// too slow to read shows nothing (and is not cached, so a later look may
/// read it).
pub fn evidence(facts: &ProcFacts) -> Arc<Evidence> {
    let key = (facts.pid, facts.start_ticks);
    if let Some(found) = cache().lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return found.clone();
    }
    let nothing = || {
        Arc::new(Evidence {
            environ: None,
            argv: Vec::new(),
        })
    };
    let Some((environ, argv)) = read_bounded(facts.pid) else {
        return nothing();
    };
    // The PID may have been reused while we read: keep only a consistent look.
    let same = procinfo::inspect(facts.pid).is_some_and(|f| f.start_ticks == facts.start_ticks);
    if !same {
        return nothing();
    }
    let evidence = Arc::new(Evidence { environ, argv });
    let mut cached = cache().lock().unwrap_or_else(|p| p.into_inner());
    if cached.len() >= MAX_CACHED {
        cached.clear();
    }
    cached.insert(key, evidence.clone());
    evidence
}

/// Whether two spellings name the same directory (lexically equal, or
/// equal once symlinks in them are resolved).
pub fn same_dir(a: &Path, b: &Path) -> bool {
    if lexical(a) == lexical(b) {
        return true;
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Whether `named` (a wrapper's PID-file argument) is `expected`: same file
/// name in the same directory.
pub fn same_pid_file(named: &Path, expected: &Path) -> bool {
    if !named.is_absolute() {
        return false;
    }
    let (named, expected) = (lexical(named), lexical(expected));
    if named == expected {
        return true;
    }
    named.file_name() == expected.file_name()
        && match (named.parent(), expected.parent()) {
            (Some(a), Some(b)) => same_dir(a, b),
            _ => false,
        }
}

/// The judgement on evidence already read: pure apart from resolving
/// path spellings and looking at the recorded session's leader.
pub fn judge_evidence(
    project: &Project,
    stream: &str,
    facts: &ProcFacts,
    evidence: &Evidence,
    recorded: Option<&SpawnSession>,
) -> Result<Proof, NotOurs> {
    let not_ours = |why: String| NotOurs {
        pid: facts.pid,
        stream: stream.to_string(),
        why,
    };
    let tag = evidence.environ.as_ref();
    match tag.map(|t| tag_says(t, stream, |root| same_dir(root, &project.root))) {
        Some(TagSays::Ours { spawn }) => return Ok(Proof::Tag { spawn }),
        Some(TagSays::Other(why)) => return Err(not_ours(why)),
        Some(TagSays::Absent) | None => {}
    }
    let wrapper = wrapper_args(&evidence.argv);
    if let Some(args) = &wrapper {
        if args.stream == stream && same_pid_file(&args.pid_file, &project.pid_file(stream)) {
            return Ok(Proof::Wrapper);
        }
    }
    if let Some(spawn) = recorded {
        let leader_same = procinfo::inspect(spawn.leader)
            .is_some_and(|l| l.start_ticks == spawn.leader_start_ticks && !l.is_zombie());
        if facts.session == spawn.leader && leader_same {
            return Ok(Proof::Session {
                leader: spawn.leader,
            });
        }
    }
    let tag_part = match tag {
        Some(_) => "no tag",
        None => "its environment is unreadable",
    };
    let argv_part = match wrapper {
        Some(args) if args.stream != stream => {
            format!("it is the worker wrapper of stream {}", args.stream)
        }
        Some(args) => format!(
            "it is a worker wrapper for another PID file ({})",
            args.pid_file.display()
        ),
        None => "its command line does not name it".to_string(),
    };
    Err(not_ours(format!("{tag_part}, and {argv_part}")))
}

/// Proves that the live process `facts` is `stream`'s worker of `project`.
pub fn prove(
    project: &Project,
    stream: &str,
    facts: &ProcFacts,
    recorded: Option<&SpawnSession>,
) -> Result<Proof, NotOurs> {
    judge_evidence(project, stream, facts, &evidence(facts), recorded)
}

/// Whether the live process carries `stream`'s tag (any spawn) or is in the
/// recorded session: what a descendant of a worker needs to be signalled.
pub fn tagged_or_in_session(
    project: &Project,
    stream: &str,
    facts: &ProcFacts,
    recorded: Option<&SpawnSession>,
) -> bool {
    matches!(
        prove(project, stream, facts, recorded),
        Ok(Proof::Tag { .. } | Proof::Session { .. })
    )
}

/// The live process that leads spawn `nonce` of `stream` (its session
/// leader, else the oldest carrying the nonce): what a monitor killed in the
/// middle of a restart left running. One scan of every process of ours,
/// made only when the restart journal holds an unfinished spawn.
pub fn find_spawn(project: &Project, stream: &str, nonce: &str) -> Option<ProcFacts> {
    let uid = procinfo::current_uid();
    let mut carriers: Vec<ProcFacts> = procinfo::all_facts()
        .into_iter()
        .filter(|f| f.uid == uid && !f.is_zombie())
        .filter(|f| {
            let evidence = evidence(f);
            evidence.environ.as_ref().is_some_and(|tag| {
                tag.spawn.as_deref() == Some(nonce.as_bytes())
                    && tag_says(tag, stream, |root| same_dir(root, &project.root))
                        == (TagSays::Ours {
                            spawn: nonce.to_string(),
                        })
            })
        })
        .collect();
    carriers.sort_by_key(|f| (f.pid != f.session, f.start_ticks));
    carriers.into_iter().next()
}

/// A fresh random nonce for one spawn (128 bits from the kernel; the time
/// and PID when /dev/urandom cannot be read).
pub fn new_nonce() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = (now ^ ((std::process::id() as u128) << 64)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sheds the tag variables this process inherited: a worker that runs
/// `monitor-workers` must not make the monitor (or a daemon it starts) look
/// like that worker. Removing them from our own view is not enough, since
/// `/proc/PID/environ` keeps showing the environment a process was started
/// with: the monitor starts itself again (same PID, same arguments) without
/// them. If that fails, it goes on with them removed from its own view.
/// Called once at start-up, before any thread is started.
pub fn shed_inherited_tag() {
    if TAG_VARS.iter().all(|v| std::env::var_os(v).is_none()) {
        return;
    }
    for var in TAG_VARS {
        // Start-up, main thread, before any other thread exists: no
        // concurrent reader of the environment.
        std::env::remove_var(var);
    }
    if let Ok(exe) = std::env::current_exe() {
        use std::os::unix::process::CommandExt;
        let mut args = std::env::args_os();
        let mut again = std::process::Command::new(exe);
        if let Some(arg0) = args.next() {
            again.arg0(arg0);
        }
        again.args(args);
        for var in TAG_VARS {
            again.env_remove(var);
        }
        // Only returns on failure.
        let _ = again.exec();
    }
}

#[cfg(test)]
#[path = "proof_tests.rs"]
mod tests;
