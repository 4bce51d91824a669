//! Chaos: a daemon with `--auto-restart` supervises several real workers
//! (the real wrapper, fake claude in `work` mode) while a seeded random
//! sequence of faults hits them: kill -9 of a worker's process group,
//! SIGSTOP/SIGCONT, a real zombie or a live unrelated process (a reused PID)
//! or garbage in a PID file, tasks.db locked by an EXCLUSIVE transaction,
//! kill -9 of the daemon itself (and a new one started), one-shot
//! `--auto-restart` checks beside the daemon.
//!
//! Invariants, checked every ~100 ms throughout:
//! - never two live workers (group-leading wrappers) for one stream;
//! - the sentinels, live processes that are not workers (some named by PID
//!   files as reused PIDs, some in freshly written PID files), are never
//!   signalled: alive and not stopped;
//! - the state always loads (the store's read-only view), nothing is moved aside as
//!   corrupt, and `status --json` exits 0 or 1 (never 3: it could run);
//! - the low-budget stream never gets more restarts than its budget, across
//!   daemon kills and one-shots;
//! - no monitor panics, a daemon never ends unless killed, a one-shot exits
//!   0, 1 or 3.
//!
//! After the faults stop, every stream runs again (one worker each) within
//! interval + the longest backoff + 2 s, or — the low-budget stream only —
//! has given up at its budget.
//!
//! Short form in the suite (30 s of faults); long form:
//! `MONITOR_WORKERS_CHAOS_SECS=600 cargo test chaos -- --nocapture`.
//! The seed is printed at the start and on failure;
//! `MONITOR_WORKERS_CHAOS_SEED=<seed>` replays a sequence of faults (the
//! timing of the processes themselves is not replayed).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use monitor_workers::layout::{Layout, PathOverrides, StreamId};
use monitor_workers::process::lock;
use monitor_workers::state;
use monitor_workers::supervise::lifecycle::Lifecycle;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::helpers::*;

/// Streams with a generous budget: the chaos must never stop them for good.
const STREAMS: [&str; 6] = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
/// The stream whose budget must hold across monitor restarts.
const LOW: &str = "lowbudget";
const LOW_BUDGET: usize = 2;

const INTERVAL_SECS: u64 = 1;
const BACKOFF_MAX_SECS: f64 = 2.0;
/// The fault sequence CI replays (it passed a 600 s run of 1 145 faults).
const CI_SEED: u64 = 1_795_451_158_818_168_723;

/// Seconds of faults when MONITOR_WORKERS_CHAOS_SECS is not set.
const DEFAULT_SECS: u64 = 30;

/// Every monitor of the test runs with these settings.
const RESTART_ARGS: [&str; 10] = [
    "--auto-restart",
    "--max-restarts",
    "1000",
    "--backoff-base",
    "0.2",
    "--backoff-max",
    "2",
    "--busy-timeout",
    "0.5",
    "--quiet",
];

/// Raised limits, so that only the low-budget stream ever stops for good.
const CONFIG: &str = "\
[monitor]
rate_limit = 100000
rate_window = 600
same_failure_limit = 0
grace = 1.0

[breaker]
min_failures = 100000

[streams.lowbudget]
max_restarts = 2
";

/// What a PID file may be left holding (never 0 or 1: see bad_input for those).
const GARBAGE: [&str; 9] = [
    "",
    "\n",
    "garbage\n",
    "-42\n",
    "12abc\n",
    "0x1f\n",
    "99999999999\n",
    "4194305\n",
    "\u{1}\u{2}\u{fffd}binary",
];

/// xorshift64*: small, seeded, replayable.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn env_u64(key: &str) -> Option<u64> {
    let text = std::env::var(key).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{key}={text:?} is not a number")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillWorker,
    StopWorker,
    Zombie,
    ReusedPid,
    Garbage,
    LockDb,
    KillDaemon,
    OneShot,
    Foreign,
}

const FAULTS: [(Fault, u64); 9] = [
    (Fault::KillWorker, 30),
    (Fault::StopWorker, 10),
    (Fault::Zombie, 8),
    (Fault::ReusedPid, 8),
    (Fault::Garbage, 8),
    (Fault::LockDb, 6),
    (Fault::KillDaemon, 5),
    (Fault::OneShot, 8),
    (Fault::Foreign, 6),
];

/// Reads monitor.log as it grows.
struct LogScan {
    path: PathBuf,
    offset: u64,
    partial: String,
    low_restarts: usize,
    /// ERROR lines, digits folded, and how often each came.
    errors: BTreeMap<String, usize>,
}

impl LogScan {
    fn new(path: PathBuf) -> LogScan {
        LogScan {
            path,
            offset: 0,
            partial: String::new(),
            low_restarts: 0,
            errors: BTreeMap::new(),
        }
    }

    /// New complete lines since the last call.
    fn lines(&mut self) -> Vec<String> {
        let Ok(mut file) = fs::File::open(&self.path) else {
            return Vec::new();
        };
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut bytes).is_err()
        {
            return Vec::new();
        }
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let mut lines: Vec<String> = self.partial.split('\n').map(str::to_string).collect();
        self.partial = lines.pop().unwrap_or_default();
        lines
    }
}

struct Chaos<'a> {
    p: &'a TestProject,
    layout: Layout,
    seed: u64,
    rng: Rng,
    daemon: Daemon,
    daemons: Vec<Daemon>,
    sentinels: Vec<u32>,
    /// Stopped worker groups and when they get SIGCONT.
    stopped: Vec<(u32, Instant)>,
    db_lock: Option<JoinHandle<Result<(), String>>>,
    one_shot: Option<JoinHandle<std::io::Result<Output>>>,
    log: LogScan,
    faults: BTreeMap<Fault, usize>,
    /// Between the kill of a daemon and the start of the next.
    replacing_daemon: bool,
    one_shot_codes: BTreeMap<i32, usize>,
    last_status: Instant,
}

impl Chaos<'_> {
    /// Fails the test with the seed and the end of monitor.log.
    fn fail(&self, what: &str) -> ! {
        let log = self.p.monitor_log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        panic!(
            "chaos invariant broken (seed {seed}; replay with MONITOR_WORKERS_CHAOS_SEED={seed}): {what}\n\
             --- last {} lines of monitor.log\n{tail}",
            lines.len().min(60),
            seed = self.seed,
        );
    }

    // ----- looking -----------------------------------------------------------

    /// Live group-leading wrappers of this project, by stream.
    fn workers(&self) -> BTreeMap<String, Vec<u32>> {
        let wrapper = self.p.wrapper().display().to_string();
        let mut by_stream: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let Ok(dir) = fs::read_dir("/proc") else {
            return by_stream;
        };
        for pid in dir
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        {
            if !is_alive(pid) || proc_pgrp(pid) != Some(pid) {
                continue;
            }
            let args = proc_cmdline(pid);
            if let Some(at) = args.iter().position(|a| *a == wrapper) {
                if let Some(stream) = args.get(at + 1) {
                    by_stream.entry(stream.clone()).or_default().push(pid);
                }
            }
        }
        by_stream
    }

    fn check(&mut self) {
        // One worker per stream at most.
        for (stream, pids) in self.workers() {
            if pids.len() > 1 {
                let detail: Vec<String> = pids
                    .iter()
                    .map(|pid| format!("PID {pid} (parent {:?})", proc_ppid(*pid)))
                    .collect();
                self.fail(&format!(
                    "{} live workers for stream {stream}: {}; its PID file holds {:?}",
                    pids.len(),
                    detail.join(", "),
                    fs::read_to_string(self.p.pid_path(&stream)).ok()
                ));
            }
        }
        // Sentinels are never signalled.
        for &pid in &self.sentinels {
            match proc_state(pid) {
                Some('T' | 't') => self.fail(&format!("sentinel {pid} was stopped")),
                Some('Z' | 'X') | None => self.fail(&format!("sentinel {pid} was killed")),
                _ => {}
            }
        }
        // The state file always loads; nothing was found corrupt.
        if let (_, Some(problem)) = self.p.state_store().read_only() {
            self.fail(&format!("the state cannot be read: {problem}"));
        }
        let state_dir = self.p.orch.join("state");
        if let Ok(entries) = fs::read_dir(&state_dir) {
            for e in entries.filter_map(Result::ok) {
                if e.file_name().to_string_lossy().contains(".corrupt-") {
                    self.fail(&format!("a state file was moved aside: {:?}", e.path()));
                }
            }
        }
        // The low budget holds, whoever restarts.
        for line in self.log.lines() {
            if line.contains(&format!("Restarting worker {LOW} (")) {
                self.log.low_restarts += 1;
            }
            if line.contains("panicked") {
                self.fail(&format!("a monitor panicked: {line}"));
            }
            if let Some(at) = line.find("] [ERROR] ") {
                let folded: String = line[at + 10..]
                    .chars()
                    .map(|c| if c.is_ascii_digit() { '#' } else { c })
                    .collect();
                *self.log.errors.entry(folded).or_default() += 1;
            }
        }
        if self.log.low_restarts > LOW_BUDGET {
            self.fail(&format!(
                "stream {LOW} was restarted {} times; its budget is {LOW_BUDGET}",
                self.log.low_restarts
            ));
        }
        // The daemon only ends when the test kills it.
        if !self.replacing_daemon && !is_alive(self.daemon.pid) {
            self.fail(&format!(
                "the daemon (PID {}) ended on its own; stderr:\n{}",
                self.daemon.pid,
                self.daemon.stderr_text()
            ));
        }
        // The product loads its own state (not while the database is held:
        // status would only wait for it).
        if self.last_status.elapsed() >= Duration::from_secs(2) && self.db_lock.is_none() {
            self.status_loads();
            self.last_status = Instant::now();
        }
    }

    fn status_loads(&self) {
        let run = self.p.run(&["status", "--json"]);
        // 0, or 1 while a stream is dead or stuck; 3 would be a check that could not run.
        if !matches!(run.code, 0 | 1)
            || run.stdout.contains("panicked")
            || run.stderr.contains("panicked")
        {
            self.fail(&format!(
                "status --json exited {}:\n{}{}",
                run.code, run.stdout, run.stderr
            ));
        }
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&run.stdout) {
            self.fail(&format!(
                "status --json printed no JSON ({e}):\n{}",
                run.stdout
            ));
        }
    }

    /// Sends due SIGCONTs, collects finished helpers.
    fn service(&mut self, all: bool) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self
            .stopped
            .drain(..)
            .partition(|(_, at)| all || *at <= now);
        self.stopped = later;
        for (group, _) in due {
            if self.p.has_tag(group) && proc_pgrp(group) == Some(group) {
                let _ = killpg(Pid::from_raw(group as i32), Signal::SIGCONT);
            }
        }
        if self
            .db_lock
            .as_ref()
            .is_some_and(|h| all || h.is_finished())
        {
            match self.db_lock.take().unwrap().join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.fail(&format!("the test could not lock tasks.db: {e}")),
                Err(_) => self.fail("the tasks.db locker panicked"),
            }
        }
        if self
            .one_shot
            .as_ref()
            .is_some_and(|h| all || h.is_finished())
        {
            let out = match self.one_shot.take().unwrap().join() {
                Ok(Ok(out)) => out,
                Ok(Err(e)) => self.fail(&format!("cannot run the one-shot: {e}")),
                Err(_) => self.fail("the one-shot runner panicked"),
            };
            let code = out.status.code().unwrap_or(-1);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if ![0, 1, 3].contains(&code) || stderr.contains("panicked") {
                self.fail(&format!(
                    "a one-shot --auto-restart exited {code}:\n{}{stderr}",
                    String::from_utf8_lossy(&out.stdout)
                ));
            }
            *self.one_shot_codes.entry(code).or_default() += 1;
        }
    }

    // ----- faults ------------------------------------------------------------

    fn fault(&mut self) {
        let total: u64 = FAULTS.iter().map(|(_, w)| w).sum();
        let mut roll = self.rng.below(total);
        let mut fault = FAULTS[0].0;
        for (f, w) in FAULTS {
            if roll < w {
                fault = f;
                break;
            }
            roll -= w;
        }
        let mut pool: Vec<&str> = STREAMS.to_vec();
        pool.push(LOW);
        let stream = *self.rng.pick(&pool);
        match fault {
            Fault::KillWorker => {
                self.kill_workers(stream);
            }
            Fault::StopWorker => {
                let Some(&group) = self.workers().get(stream).and_then(|w| w.first()) else {
                    return;
                };
                if self.p.has_tag(group) {
                    let _ = killpg(Pid::from_raw(group as i32), Signal::SIGSTOP);
                    let until = Instant::now() + self.rng.ms(300, 2000);
                    self.stopped.push((group, until));
                }
            }
            Fault::Zombie => self.leave_pid_file(stream, |chaos| {
                let mut cmd = chaos.p.command("true");
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .process_group(0);
                let zombie = chaos.p.spawn(cmd);
                if !wait_for(|| proc_state(zombie) == Some('Z'), SOON) {
                    chaos.fail(&format!("no zombie from PID {zombie}"));
                }
                (format!("{zombie}\n"), None)
            }),
            Fault::ReusedPid => self.leave_pid_file(stream, |chaos| {
                let sentinel = chaos.sentinel();
                // The file was written by the worker long before: its PID was
                // reused by a process that started afterwards.
                let written = SystemTime::now() - Duration::from_secs(120);
                (format!("{sentinel}\n"), Some(written))
            }),
            Fault::Garbage => {
                self.leave_pid_file(stream, |chaos| (chaos.rng.pick(&GARBAGE).to_string(), None))
            }
            // A stranger's PID in a freshly written PID file (a `cp` or `touch`
            // after the stranger started): only proof of identity tells it is
            // no worker.
            Fault::Foreign => self.leave_pid_file(stream, |chaos| {
                let sentinel = chaos.sentinel();
                (format!("{sentinel}\n"), None)
            }),
            Fault::LockDb => {
                if self.db_lock.is_some() {
                    return;
                }
                let db = self.p.tasks_db();
                let hold = self.rng.ms(500, 1500);
                self.db_lock = Some(std::thread::spawn(move || {
                    let conn = rusqlite::Connection::open(db).map_err(|e| e.to_string())?;
                    conn.busy_timeout(Duration::from_secs(10))
                        .map_err(|e| e.to_string())?;
                    conn.execute_batch("BEGIN EXCLUSIVE")
                        .map_err(|e| e.to_string())?;
                    std::thread::sleep(hold);
                    conn.execute_batch("COMMIT").map_err(|e| e.to_string())
                }));
            }
            Fault::KillDaemon => self.replace_daemon(),
            Fault::OneShot => {
                if self.one_shot.is_some() {
                    return;
                }
                let mut cmd = self.p.monitor_std();
                cmd.args(RESTART_ARGS).stdin(Stdio::null());
                self.one_shot = Some(std::thread::spawn(move || cmd.output()));
            }
        }
        *self.faults.entry(fault).or_default() += 1;
    }

    /// kill -9 every live worker group of the stream (normally one).
    fn kill_workers(&self, stream: &str) -> Vec<u32> {
        let groups = self.workers().remove(stream).unwrap_or_default();
        for &group in &groups {
            if self.p.has_tag(group) {
                let _ = killpg(Pid::from_raw(group as i32), Signal::SIGKILL);
            }
        }
        groups
    }

    /// The stream's worker dies and leaves its PID file behind holding what
    /// `make` returns. Done under the stream's spawn lock (as a wrapper would
    /// write it), so that no monitor restarts the stream halfway: the fault
    /// is "a dead worker's PID file names X", never a race of the test's own.
    fn leave_pid_file(
        &mut self,
        stream: &str,
        make: impl FnOnce(&mut Self) -> (String, Option<SystemTime>),
    ) {
        let id = StreamId::parse(stream).unwrap();
        let held = match lock::lock_within(&self.layout.stream_lock(&id), Duration::from_secs(20)) {
            Ok(Some(held)) => held,
            Ok(None) => self.fail(&format!("the spawn lock of {stream} stayed held for 20 s")),
            Err(e) => self.fail(&format!("cannot take the spawn lock of {stream}: {e}")),
        };
        for group in self.kill_workers(stream) {
            if !wait_for(|| !is_alive(group), SOON) {
                self.fail(&format!("worker {group} of {stream} survived kill -9"));
            }
        }
        let (text, mtime) = make(self);
        let tmp = self.p.root.join("chaos-pid.tmp");
        fs::write(&tmp, &text).unwrap();
        if let Some(when) = mtime {
            self.p.set_mtime(&tmp, when);
        }
        fs::rename(&tmp, self.p.pid_path(stream)).unwrap();
        drop(held);
    }

    /// A live process that is not a worker, in a process group of its own.
    fn sentinel(&mut self) -> u32 {
        let mut cmd = self.p.command("sleep");
        cmd.arg("86400")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let pid = self.p.spawn(cmd);
        if !wait_for(
            || proc_cmdline(pid).first().is_some_and(|a| a == "sleep"),
            SOON,
        ) {
            self.fail(&format!("sentinel {pid} did not start"));
        }
        self.sentinels.push(pid);
        pid
    }

    /// kill -9 the daemon, check the state it left, start another one.
    fn replace_daemon(&mut self) {
        let old = self.daemon.clone();
        self.replacing_daemon = true;
        self.p.signal_ours(old.pid, Signal::SIGKILL);
        if self.p.wait_exit(old.pid, SOON).is_none() {
            self.fail(&format!("daemon {} survived kill -9", old.pid));
        }
        if old.stderr_text().contains("panicked") {
            self.fail(&format!(
                "daemon {} panicked:\n{}",
                old.pid,
                old.stderr_text()
            ));
        }
        self.check();
        if self.db_lock.is_none() {
            self.status_loads();
        }
        std::thread::sleep(self.rng.ms(0, 500));
        let started = self.p.count_in_log("Starting monitor daemon");
        let mut args = vec!["--daemon", "--interval", "1"];
        args.extend(RESTART_ARGS);
        self.daemon = self.p.spawn_daemon(&args);
        self.daemons.push(self.daemon.clone());
        self.replacing_daemon = false;
        let daemon = self.daemon.clone();
        if !wait_for(
            || self.p.count_in_log("Starting monitor daemon") > started || !is_alive(daemon.pid),
            SOON,
        ) || !is_alive(daemon.pid)
        {
            self.fail(&format!(
                "a new daemon did not start after kill -9 of the old one; stderr:\n{}",
                daemon.stderr_text()
            ));
        }
    }
}

#[test]
fn chaos_keeps_the_invariants() {
    let secs = env_u64("MONITOR_WORKERS_CHAOS_SECS").unwrap_or(DEFAULT_SECS);
    // CI replays one known sequence (so a landing never hangs on a fresh
    // draw); elsewhere every run draws a new one and prints it.
    let ci_seed = std::env::var_os("CI").map(|_| CI_SEED);
    let seed = env_u64("MONITOR_WORKERS_CHAOS_SEED")
        .or(ci_seed)
        .unwrap_or_else(|| {
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            nanos ^ (u64::from(std::process::id()) << 32)
        });
    eprintln!("chaos: seed {seed} (replay: MONITOR_WORKERS_CHAOS_SEED={seed}), {secs} s of faults");

    let p = TestProject::new();
    p.set_env("FAKE_CLAUDE_LIFETIME", "86400");
    for s in STREAMS.iter().chain([&LOW]) {
        p.stream(s, &["completed", "pending", "pending"], &[]);
    }
    fs::write(p.orch.join("monitor.toml"), CONFIG).unwrap();
    for s in STREAMS.iter().chain([&LOW]) {
        p.spawn_worker_process(s);
    }
    let overrides = PathOverrides {
        project_root: Some(p.proj.clone()),
        ..PathOverrides::default()
    };
    let layout = Layout::discover(&overrides, &p.proj, None, Some(&p.home)).unwrap();

    let mut args = vec!["--daemon", "--interval", "1"];
    args.extend(RESTART_ARGS);
    let daemon = p.spawn_daemon(&args);
    assert!(
        p.wait_log("All workers healthy", SOON),
        "the daemon never found the workers healthy; stderr:\n{}",
        daemon.stderr_text()
    );

    let mut chaos = Chaos {
        p: &p,
        layout,
        seed,
        rng: Rng::new(seed),
        daemon: daemon.clone(),
        daemons: vec![daemon],
        sentinels: Vec::new(),
        stopped: Vec::new(),
        db_lock: None,
        one_shot: None,
        log: LogScan::new(p.logs_dir().join("monitor.log")),
        faults: BTreeMap::new(),
        replacing_daemon: false,
        one_shot_codes: BTreeMap::new(),
        last_status: Instant::now(),
    };
    // From here on a failure prints the seed and the end of monitor.log.
    p.set_log_on_panic(false);
    // Bystanders: never named anywhere, never to be touched.
    chaos.sentinel();
    chaos.sentinel();

    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    let mut next_fault = started + chaos.rng.ms(200, 600);
    let mut last_report = started;
    while Instant::now() < end {
        chaos.check();
        chaos.service(false);
        if Instant::now() >= next_fault {
            chaos.fault();
            next_fault = Instant::now() + chaos.rng.ms(150, 700);
        }
        if last_report.elapsed() >= Duration::from_secs(60) {
            eprintln!(
                "chaos: {:.0} s, faults {:?}",
                started.elapsed().as_secs_f64(),
                chaos.faults
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Calm: every stream runs again within interval + the longest backoff
    // (with its jitter) + 2 s; the low-budget one may have given up instead.
    chaos.service(true);
    let calm = Instant::now();
    let bound = Duration::from_secs_f64(INTERVAL_SECS as f64 + BACKOFF_MAX_SECS * 1.1 + 2.0);
    let gave_up = format!("Worker {LOW} has reached max restart limit ({LOW_BUDGET})");
    let mut missing: Vec<String> = Vec::new();
    while calm.elapsed() < bound + Duration::from_secs(1) {
        chaos.check();
        let workers = chaos.workers();
        let log = p.monitor_log();
        missing = STREAMS
            .iter()
            .chain([&LOW])
            .filter(|s| {
                let running = workers
                    .get(**s)
                    .is_some_and(|w| w.len() == 1 && p.read_pid_file(s) == Some(w[0]));
                !(running || (**s == LOW && log.contains(&gave_up)))
            })
            .map(|s| s.to_string())
            .collect();
        if missing.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let recovered = calm.elapsed();
    if !missing.is_empty() || recovered > bound {
        let status = p.run(&["status"]);
        chaos.fail(&format!(
            "{} not running {:.1} s after the faults stopped (bound {:.1} s): {missing:?}\n--- status\n{}",
            if missing.len() == 1 { "a stream is" } else { "streams are" },
            recovered.as_secs_f64(),
            bound.as_secs_f64(),
            status.stdout
        ));
    }
    chaos.check();

    // The last daemon stops cleanly; no monitor panicked.
    let last = chaos.daemon.clone();
    p.signal_ours(last.pid, Signal::SIGTERM);
    let status = p.wait_exit(last.pid, SOON);
    if status.and_then(|s| s.code()) != Some(0) {
        chaos.fail(&format!(
            "the daemon did not stop cleanly on SIGTERM: {status:?}\n{}",
            last.stderr_text()
        ));
    }
    for d in &chaos.daemons {
        if d.stderr_text().contains("panicked") {
            chaos.fail(&format!("daemon {} panicked:\n{}", d.pid, d.stderr_text()));
        }
    }
    eprintln!(
        "chaos: seed {seed}: {:.0} s of faults {:?}; one-shot exit codes {:?}; {} daemons; \
         {LOW} restarted {} time(s) (budget {LOW_BUDGET}); all running again after {:.1} s",
        secs,
        chaos.faults,
        chaos.one_shot_codes,
        chaos.daemons.len(),
        chaos.log.low_restarts,
        recovered.as_secs_f64()
    );
    for (line, n) in &chaos.log.errors {
        eprintln!("chaos: monitor.log ERROR x{n}: {line}");
    }
}

/// A worker that is alive stays the stream's only worker even when its PID
/// file is overwritten: the monitor saw it running (its identity is in the
/// state file) and it still runs.
#[test]
fn a_live_worker_whose_pid_file_is_overwritten_gets_no_twin() {
    let p = TestProject::new();
    p.stream("api", &["completed", "pending"], &[]);
    p.stream("web", &["completed", "pending"], &[]);
    let api = p.spawn_worker_process("api");
    let web = p.spawn_worker_process("web");
    p.run(&["--auto-restart"]).expect_code(0);

    p.write_pid_file("api", "garbage\n");
    let other = p.spawn_sleep(600);
    p.write_pid_file("web", &format!("{other}\n"));
    p.set_mtime(
        &p.pid_path("web"),
        SystemTime::now() - Duration::from_secs(120),
    );
    p.run(&["--auto-restart"]).no_panic();

    assert!(is_alive(api) && is_alive(web) && is_alive(other));
    assert_eq!(p.live_wrappers("api"), vec![api], "a second worker for api");
    assert_eq!(p.live_wrappers("web"), vec![web], "a second worker for web");
}

/// A restart policy in monitor.toml changes when a worker is restarted, not
/// how often: the budget of `--max-restarts` still holds.
#[test]
fn a_restart_policy_in_the_config_keeps_the_budget_of_the_flags() {
    let p = TestProject::new();
    p.dead_stream("api");
    fs::write(
        p.orch.join("monitor.toml"),
        "[workers]\nrestart_policy = \"always\"\n",
    )
    .unwrap();
    p.run(&["--auto-restart", "--max-restarts", "1"])
        .expect_code(1)
        .stdout_has("Restarting worker api (attempt 1/1)");
}

/// A monitor killed -9 between recording a restart and starting the worker
/// leaves the stream `restarting` in the state file with no worker: the next
/// monitor must still restart it.
#[test]
fn a_restart_left_half_done_by_a_killed_monitor_is_done_by_the_next() {
    let p = TestProject::new();
    p.dead_stream("api");
    state::StateStore::at(
        &p.orch.join("state"),
        monitor_workers::report::log::Logger::new(None, true),
    )
    .update(|s| {
        let st = s.streams.entry("api".into()).or_default();
        st.lifecycle = Lifecycle::Restarting { attempt: 1 };
        st.restarts = 1;
        st.restarts_total = 1;
    })
    .unwrap();
    let run = p.run(&["--auto-restart", "--max-restarts", "5"]);
    run.no_panic()
        .expect_code(1)
        .stdout_lacks("refused")
        .stdout_has("Worker api restarted (PID: ");
}
