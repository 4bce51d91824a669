//! The local web dashboard: an HTTP server on its own thread (a small
//! current-thread tokio runtime running axum), started by `dashboard` or by
//! the daemon's `--http ADDR`. It serves the page (embedded in the binary),
//! a JSON API over the same reports and operator verbs as the CLI, a live
//! event stream, and `/metrics` for Prometheus. Every blocking step (the
//! databases, the state lock, stopping a worker) runs on the runtime's
//! blocking pool, and the daemon's loop never waits on it: the server shares
//! nothing with the loop but the files both already lock.
//!
//! Who may talk to it is decided in `guard`; the token lives in `token`.

pub mod api;
pub mod exposition;
pub mod guard;
pub mod timeline;
pub mod token;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::cli::{Cli, HttpArgs};
use crate::layout::Layout;
use crate::report::log::Logger;
use crate::Failure;

/// At most this many connections at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 32;
/// At most this many live event streams at once (each holds a connection).
pub const MAX_EVENT_STREAMS: usize = 8;
/// A client must send its request headers within this time.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request must be answered within this time (a stop waits for its grace).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request body accepted; the API's writes carry none.
pub const MAX_BODY_BYTES: u64 = 4096;

/// Where to listen and who may reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub addr: SocketAddr,
    pub allow_remote: bool,
    pub allowed_hosts: Vec<String>,
}

impl Options {
    /// From the command line; `fallback` when `--http` is not given.
    pub fn from_args(args: &HttpArgs, fallback: Option<&str>) -> Result<Option<Options>, Failure> {
        let Some(raw) = args.http.as_deref().or(fallback) else {
            if args.http_allow_remote || !args.http_allowed_host.is_empty() {
                return Err(Failure::Usage(
                    "--http-allow-remote and --http-allowed-host need --http ADDR".into(),
                ));
            }
            return Ok(None);
        };
        let addr = parse_addr(raw)?;
        for host in &args.http_allowed_host {
            if host.is_empty()
                || !host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            {
                return Err(Failure::Usage(format!(
                    "--http-allowed-host {host:?}: want a host name or IP address without a port"
                )));
            }
        }
        if !addr.ip().is_loopback() {
            if !args.http_allow_remote {
                return Err(Failure::Usage(format!(
                    "--http {addr} listens beyond this machine: add --http-allow-remote and --http-allowed-host NAME (or use 127.0.0.1)"
                )));
            }
            if args.http_allowed_host.is_empty() {
                return Err(Failure::Usage(format!(
                    "--http {addr} with --http-allow-remote needs --http-allowed-host NAME: the host name clients use"
                )));
            }
        }
        Ok(Some(Options {
            addr,
            allow_remote: args.http_allow_remote,
            allowed_hosts: args.http_allowed_host.clone(),
        }))
    }
}

/// `IP:PORT` (IPv6 in brackets) or `localhost:PORT`.
pub fn parse_addr(raw: &str) -> Result<SocketAddr, Failure> {
    let bad = || {
        Failure::Usage(format!(
            "--http {raw:?}: want IP:PORT, e.g. 127.0.0.1:8080 (port 0 picks a free one)"
        ))
    };
    if let Some(port) = raw.strip_prefix("localhost:") {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    raw.parse().map_err(|_| bad())
}

/// `state/http.json`: where the running dashboard listens (not the token).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HttpRecord {
    pub pid: u32,
    pub addr: String,
    pub url: String,
    pub started_ms: u64,
}

pub fn record_path(layout: &Layout) -> PathBuf {
    layout.state_dir().join("http.json")
}

pub fn token_path(layout: &Layout) -> PathBuf {
    layout.state_dir().join("http.token")
}

/// A running server; dropping it stops it and removes `state/http.json`.
pub struct Server {
    pub addr: SocketAddr,
    token: String,
    record: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// The page's address.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The page's address with the token in the fragment, which browsers
    /// never send to a server.
    pub fn url_with_token(&self) -> String {
        format!("{}#token={}", self.url(), self.token)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let ours = std::fs::read_to_string(&self.record)
            .ok()
            .and_then(|t| serde_json::from_str::<HttpRecord>(&t).ok())
            .is_some_and(|r| r.pid == std::process::id());
        if ours {
            let _ = std::fs::remove_file(&self.record);
        }
    }
}

/// Binds, makes the token if needed, writes `state/http.json` and starts the
/// server thread. Errors here (address in use, bad flags) are the caller's.
pub fn start(
    cli: &Cli,
    layout: &Layout,
    logger: &Logger,
    opts: &Options,
) -> Result<Server, Failure> {
    let token = token::load_or_create(&token_path(layout)).map_err(|e| {
        Failure::CouldNotRun(format!(
            "cannot make the dashboard token {}: {e}",
            token_path(layout).display()
        ))
    })?;
    let listener = TcpListener::bind(opts.addr)
        .map_err(|e| Failure::CouldNotRun(format!("cannot listen on {}: {e}", opts.addr)))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Failure::CouldNotRun(format!("cannot listen on {}: {e}", opts.addr)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::CouldNotRun(format!("cannot listen on {}: {e}", opts.addr)))?;
    if !addr.ip().is_loopback() {
        let warning = format!(
            "REMOTE ACCESS IS ON: the dashboard listens on {addr} for hosts {}; anyone who can reach it with the token can stop and restart workers, and the traffic is not encrypted (put it behind TLS or an SSH tunnel)",
            opts.allowed_hosts.join(", ")
        );
        eprintln!("monitor-workers: WARNING: {warning}");
        logger.warning(&warning);
    }
    let authorities = guard::allowed_authorities(addr, &opts.allowed_hosts);
    let app = api::App::new(cli.clone(), guard::Guard::new(authorities, token.clone()));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(4)
        .thread_name("monitor-workers-http")
        .build()
        .map_err(|e| Failure::CouldNotRun(format!("cannot start the dashboard runtime: {e}")))?;
    let thread = std::thread::Builder::new()
        .name("monitor-workers-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => api::serve(listener, Arc::new(app), stop_rx).await,
                    Err(e) => eprintln!("monitor-workers: dashboard stopped: {e}"),
                }
            });
            // Blocking steps still running (a stop waiting out its grace)
            // get a moment to finish; the rest are abandoned with the thread.
            runtime.shutdown_timeout(Duration::from_secs(2));
        })
        .map_err(|e| Failure::CouldNotRun(format!("cannot start the dashboard thread: {e}")))?;
    let server = Server {
        addr,
        token,
        record: record_path(layout),
        stop: Some(stop_tx),
        thread: Some(thread),
    };
    let record = HttpRecord {
        pid: std::process::id(),
        addr: addr.to_string(),
        url: server.url(),
        started_ms: crate::clock::now_ms(),
    };
    let text = serde_json::to_string_pretty(&record).expect("record serialises");
    if let Err(e) = crate::files::replace_atomically(
        &server.record,
        text.as_bytes(),
        crate::files::Durability::Atomic,
    ) {
        logger.warning(&format!("Cannot write {}: {e}", server.record.display()));
    }
    logger.write_file(
        crate::report::log::Level::Info,
        &format!("Dashboard listening on {}", server.url()),
    );
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(http: Option<&str>, remote: bool, hosts: &[&str]) -> HttpArgs {
        HttpArgs {
            http: http.map(str::to_string),
            http_allow_remote: remote,
            http_allowed_host: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn addresses_and_remote_rules() {
        let cases: [(HttpArgs, Result<Option<&str>, &str>); 9] = [
            (args(None, false, &[]), Ok(None)),
            (
                args(Some("127.0.0.1:0"), false, &[]),
                Ok(Some("127.0.0.1:0")),
            ),
            (
                args(Some("localhost:8080"), false, &[]),
                Ok(Some("127.0.0.1:8080")),
            ),
            (args(Some("[::1]:9"), false, &[]), Ok(Some("[::1]:9"))),
            (args(Some("8080"), false, &[]), Err("want IP:PORT")),
            (
                args(Some("0.0.0.0:8080"), false, &[]),
                Err("--http-allow-remote"),
            ),
            (
                args(Some("0.0.0.0:8080"), true, &[]),
                Err("needs --http-allowed-host"),
            ),
            (
                args(Some("0.0.0.0:8080"), true, &["box.lan"]),
                Ok(Some("0.0.0.0:8080")),
            ),
            (args(None, true, &[]), Err("need --http ADDR")),
        ];
        for (given, want) in cases {
            let got = Options::from_args(&given, None);
            match (got, want) {
                (Ok(o), Ok(w)) => assert_eq!(o.map(|o| o.addr.to_string()).as_deref(), w),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{e} lacks {w}"),
                (got, want) => panic!("{given:?}: got {got:?}, want {want:?}"),
            }
        }
        let bad_host = Options::from_args(&args(Some("0.0.0.0:1"), true, &["a:80"]), None);
        assert!(bad_host.is_err());
    }
}
