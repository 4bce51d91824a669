//! The dashboard in headless Chromium through WebDriver, as a person uses
//! it: every stream in its state, a killed worker's row changing without a
//! reload, restart pressed on a dead stream, stop confirmed, the detail view,
//! dark mode; screenshots in `target/dashboard/`. Needs Debian's chromium
//! and chromium-driver (`scripts/ci-deps.sh`), so `#[ignore]`d in plain
//! `cargo test` and run by `.ci/run`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{free_port, serve, wait_port};
use crate::helpers::*;

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(MANIFEST).join("target"));
    let dir = target.join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts chromedriver (killed with the project) and a session in headless
/// Chromium with a fresh profile; `dark` asks for the dark colour scheme.
async fn browser(p: &TestProject, dark: bool) -> fantoccini::Client {
    let port = free_port();
    let mut cmd = p.command("chromedriver");
    cmd.arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    p.spawn(cmd);
    assert!(wait_port(port), "chromedriver did not listen");
    let profile = p.root.join(format!("chromium-profile-{port}"));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1500",
                format!("--user-data-dir={}", profile.display()),
                if dark { "--force-dark-mode" } else { "--no-default-browser-check" },
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    fantoccini::ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session in chromium")
}

/// Polls a script in the page until `done` accepts its result.
async fn until(
    c: &fantoccini::Client,
    what: &str,
    script: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + SOON;
    loop {
        let value = c
            .execute(script, vec![])
            .await
            .unwrap_or(serde_json::Value::Null);
        if done(&value) {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}; last: {value}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const ROWS: &str = "return Object.fromEntries([...document.querySelectorAll('#streams tbody tr')]\
    .map(r => [r.dataset.stream, {health: r.dataset.health, pid: r.querySelector('.pid').textContent}]))";

fn health_of<'v>(rows: &'v serde_json::Value, stream: &str) -> &'v str {
    rows[stream]["health"].as_str().unwrap_or("")
}

#[test]
#[ignore = "needs chromium and chromium-driver; run by .ci/run"]
fn a_person_watches_and_restarts_workers_in_the_browser() {
    let p = TestProject::new();
    // `doomed` dies and gives up at once (no restart budget) in a first check.
    p.dead_stream("doomed");
    p.stream("alive", &["in_progress", "pending"], &[]);
    p.stream("victim", &["completed", "in_progress"], &[]);
    let alive = p.spawn_worker_process("alive");
    let victim = p.spawn_worker_process("victim");
    p.run(&["--auto-restart", "--max-restarts", "0"]);
    assert_eq!(p.stream_status("doomed")["health"], "gave_up");
    // Then a dead stream and one waiting on it.
    p.dead_stream("dead");
    p.stream("waiting", &["pending"], &["dead"]);
    let s = serve(&p, &["dashboard", "--http", "127.0.0.1:0"]);
    let url = format!("http://{}/#token={}", s.addr, s.token);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let c = browser(&p, false).await;
        c.goto(&url).await.unwrap();
        // Every stream, each in its state.
        let rows = until(&c, "every stream's row", ROWS, |v| {
            ["alive", "victim", "dead", "waiting", "doomed"]
                .iter()
                .all(|s| !health_of(v, s).is_empty())
        })
        .await;
        assert_eq!(health_of(&rows, "alive"), "healthy", "{rows}");
        assert_eq!(rows["alive"]["pid"], alive.to_string());
        assert_eq!(health_of(&rows, "victim"), "healthy", "{rows}");
        assert_eq!(health_of(&rows, "dead"), "unhealthy", "{rows}");
        assert_eq!(health_of(&rows, "waiting"), "waiting", "{rows}");
        assert_eq!(health_of(&rows, "doomed"), "gave_up", "{rows}");
        let hash = c.execute("return location.href", vec![]).await.unwrap();
        assert!(!hash.as_str().unwrap().contains(&s.token), "the token left the address bar: {hash}");
        until(&c, "the live stream", "return document.getElementById('connection').dataset.state", |v| v == "live").await;

        // A worker dies: its row changes without a reload.
        c.execute("window.notReloaded = true; return true", vec![]).await.unwrap();
        p.signal_group_ours(victim, Signal::SIGKILL);
        let rows = until(&c, "the killed worker's row", ROWS, |v| health_of(v, "victim") == "unhealthy").await;
        assert_eq!(rows["victim"]["pid"], "–");
        assert_eq!(c.execute("return window.notReloaded === true", vec![]).await.unwrap(), true);
        // A check records the death; the timeline marks it.
        p.run(&[]);
        until(
            &c,
            "the death and give-up marks",
            "return [document.querySelectorAll('#timeline .mark.death[data-stream=\"victim\"]').length, \
                     document.querySelectorAll('#timeline .mark.gave_up[data-stream=\"doomed\"]').length]",
            |v| v[0].as_u64() >= Some(1) && v[1].as_u64() >= Some(1),
        )
        .await;

        // Restart the dead stream from its row.
        let button = c
            .find(fantoccini::Locator::Css("button[data-verb='restart'][data-stream='dead']"))
            .await
            .unwrap();
        button.click().await.unwrap();
        until(&c, "the restart's answer", "return document.getElementById('result').dataset.ok + ' ' + document.getElementById('result').textContent", |v| {
            v.as_str().is_some_and(|t| t.starts_with("true restart dead: done"))
        })
        .await;
        let rows = until(&c, "the restarted worker running", ROWS, |v| health_of(v, "dead") == "healthy").await;
        let new_pid: u32 = rows["dead"]["pid"].as_str().unwrap().parse().expect("a PID");
        assert!(is_alive(new_pid));
        assert_eq!(p.read_pid_file("dead"), Some(new_pid));
        until(
            &c,
            "the restart in the event feed",
            "return [...document.querySelectorAll('#events li[data-event=\"operator_restart\"][data-stream=\"dead\"]')].map(li => li.textContent).join('|')",
            |v| v.as_str().is_some_and(|t| t.contains("via web")),
        )
        .await;
        until(
            &c,
            "the restart mark",
            "return document.querySelectorAll('#timeline .mark.restart[data-stream=\"dead\"]').length",
            |v| v.as_u64() >= Some(1),
        )
        .await;
        let recorded = p.events().into_iter().find(|e| e["event"] == "operator_restart" && e["stream"] == "dead");
        assert_eq!(recorded.expect("operator_restart recorded")["via"], "web");

        // Stop asks for a confirmation first.
        let stop = "button[data-verb='stop'][data-stream='alive']";
        c.find(fantoccini::Locator::Css(stop)).await.unwrap().click().await.unwrap();
        let label = c.find(fantoccini::Locator::Css(stop)).await.unwrap().text().await.unwrap();
        assert_eq!(label, "confirm stop");
        assert!(is_alive(alive), "nothing stopped before the confirmation");
        c.find(fantoccini::Locator::Css(stop)).await.unwrap().click().await.unwrap();
        until(&c, "the stopped row", ROWS, |v| health_of(v, "alive") == "stopped").await;
        assert!(p.wait_exit(alive, SOON).is_some() || !is_alive(alive), "the worker was stopped");

        // The detail view: redacted log lines and the attempt records.
        c.find(fantoccini::Locator::Css("#streams tr[data-stream='dead'] .stream-id"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        until(
            &c,
            "the detail view",
            "return document.getElementById('detail').hidden === false && document.getElementById('detail-name').textContent",
            |v| v == "dead",
        )
        .await;

        let dir = screenshot_dir();
        std::fs::write(dir.join("dashboard.png"), c.screenshot().await.unwrap()).unwrap();
        c.set_window_size(390, 1600).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(dir.join("dashboard-phone.png"), c.screenshot().await.unwrap()).unwrap();
        c.close().await.unwrap();

        // Dark mode follows the system's preference.
        let dark = browser(&p, true).await;
        dark.goto(&url).await.unwrap();
        until(&dark, "rows in dark mode", ROWS, |v| !health_of(v, "doomed").is_empty()).await;
        let background = dark
            .execute("return getComputedStyle(document.body).backgroundColor", vec![])
            .await
            .unwrap();
        assert_eq!(background, "rgb(15, 17, 21)", "a dark page");
        std::fs::write(dir.join("dashboard-dark.png"), dark.screenshot().await.unwrap()).unwrap();
        dark.close().await.unwrap();
    });
    p.stop_daemon(&s.daemon);
}
