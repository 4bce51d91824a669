//! The test bench: a throw-away project with real SQLite databases in the
//! real schemas, the real worker wrapper, a fake `claude` on PATH, and a
//! guard that kills every process the test caused, even on panic.
//!
//! Every process a test starts carries `MW_TEST_TAG=<the test's temp dir>` in
//! its environment (inherited by the monitor, the wrappers it spawns and the
//! fake workers). That tag is how the guard proves a process is the test's own
//! before it signals it.
//!
//! This module owns the [`TestProject`] itself, the constants every test
//! shares and polling; the methods live by job in the submodules: `project`
//! (databases, PID files, config, wrapper), `procs` (spawning, signalling and
//! watching processes), `run` (running the monitor) and `logs` (reading what
//! the monitor wrote and shows).
#![allow(dead_code)]

mod logs;
mod procs;
mod project;
mod run;

pub use logs::*;
pub use procs::*;
pub use run::*;

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;

/// The monitor binary under test, and the repository it was built from.
pub const BIN: &str = env!("CARGO_BIN_EXE_monitor-workers");
pub const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// The active initiative every project starts with.
pub const INIT: &str = "3f2a9c1e-7b4d-4e8a-9c6f-1d2e3f4a5b6c";
pub const INIT8: &str = "3f2a9c1e";
/// An older initiative, for tests that need two.
pub const OLD_INIT: &str = "0b1c2d3e-4f50-4a61-8b72-93a4b5c6d7e8";

/// How long a test waits for something that should happen promptly.
pub const SOON: Duration = Duration::from_secs(15);

/// Polls `cond` every 25 ms until it holds or `timeout` passes.
pub fn wait_for(mut cond: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Now, in ms since the epoch (the unit of the state file).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// One throw-away project: `<tmp>/home` is $HOME, `<tmp>/proj` the project
/// root (workspace id "proj"), `<tmp>/bin/claude` the fake AI CLI.
pub struct TestProject {
    pub root: PathBuf,
    pub home: PathBuf,
    pub proj: PathBuf,
    pub orch: PathBuf,
    pub bin_dir: PathBuf,
    env: RefCell<Vec<(String, String)>>,
    children: RefCell<Vec<Child>>,
    next_id: Cell<u32>,
    /// Print all of monitor.log when the test panics (tests that print their own tail turn it off).
    log_on_panic: Cell<bool>,
    _tmp: TempDir,
}

impl Drop for TestProject {
    fn drop(&mut self) {
        if std::thread::panicking() && self.log_on_panic.get() {
            eprintln!("--- monitor.log of the failed test\n{}", self.monitor_log());
        }
        self.kill_everything();
    }
}
