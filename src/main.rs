//! The `monitor-workers` binary: parse the command line, run, exit with the code
//! the library decided. Everything else lives in the library.

fn main() -> std::process::ExitCode {
    // Before any thread exists: a worker that runs the monitor must not make
    // the monitor look like that worker, and children get the descriptor
    // limit the monitor was given.
    monitor_workers::process::proof::shed_inherited_tag();
    monitor_workers::process::remember_descriptor_limit();
    let cli = monitor_workers::cli::Cli::parse_args();
    monitor_workers::run(cli).into()
}
