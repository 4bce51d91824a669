//! Integration tests of `monitor-workers`: real processes, real signals, real
//! zombies, real SQLite files in the real schemas, a fake `claude` on PATH.
//! One test binary; the modules group the tests by theme.

mod adopt;
mod bad_input;
mod bench_goals;
mod chaos;
mod check;
mod daemon;
mod dashboard;
mod discovery;
mod dropin;
mod helpers;
mod identity;
mod install;
mod operator;
mod operator_record;
mod opsday;
mod probes;
mod props;
mod recovery;
mod state_compat;
mod supervise;
mod tc_schema;
mod tc_sessions;
