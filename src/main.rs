//! The `monitor-workers` binary: parse the command line, run, exit with the code
//! the library decided. Everything else lives in the library.

fn main() -> std::process::ExitCode {
    let cli = <monitor_workers::cli::Cli as clap::Parser>::parse();
    monitor_workers::run(cli).into()
}
