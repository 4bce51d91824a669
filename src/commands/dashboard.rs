//! `dashboard [--open] [--http ADDR]`: serves the web dashboard for this
//! project until SIGINT/SIGTERM, with or without a daemon running (the page
//! reads the same files as `status`, and its buttons run the same verbs).
//! Also the daemon's `--http` hook.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cli::Cli;
use crate::web::{self, Options, Server};
use crate::{Failure, Outcome};

use super::Context;

pub fn run(cli: &Cli, open: bool) -> Result<Outcome, Failure> {
    let ctx = Context::new(cli)?;
    let opts = Options::from_args(&cli.http, Some("127.0.0.1:0"))?.expect("a default address");
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| Failure::CouldNotRun(format!("cannot install signal handlers: {e}")))?;
    }
    let server = web::start(cli, &ctx.layout, &ctx.logger, &opts)?;
    super::emit(&format!(
        "Dashboard: {} (access token in {}; Ctrl-C to stop)\n",
        server.url(),
        web::token_path(&ctx.layout).display()
    ));
    if open {
        super::emit(&format!("Open: {}\n", server.url_with_token()));
        open_browser(&server.url_with_token());
    }
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(server);
    Ok(Outcome::Healthy)
}

/// Hands the URL to the desktop's opener, if there is one; never waits.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    if let Ok(mut command) = crate::process::detached(opener, None) {
        // A missing opener is fine: the URL is printed above.
        let _ = command.arg(url).spawn();
    }
}

/// The daemon's hook: with `--http ADDR`, the dashboard server runs for as
/// long as the returned guard lives. Not started when another daemon holds
/// the project (that one's server and `state/http.json` stay as they are).
pub fn for_daemon(cli: &Cli, ctx: &Context) -> Result<Option<Server>, Failure> {
    let Some(opts) = Options::from_args(&cli.http, None)? else {
        return Ok(None);
    };
    if super::daemon_ctl::running_daemon(&ctx.layout).is_some() {
        return Ok(None);
    }
    let server = web::start(cli, &ctx.layout, &ctx.logger, &opts)?;
    ctx.logger.info(&format!(
        "Dashboard on {} (access token in {})",
        server.url(),
        web::token_path(&ctx.layout).display()
    ));
    Ok(Some(server))
}
