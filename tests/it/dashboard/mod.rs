//! The web dashboard as programs use it: plain HTTP clients check the
//! refusals (no token, a wrong one, a foreign Origin or Host, a GET on a
//! write, a large body, a slow client: refused and nothing changed) and that
//! the API and /metrics say what `status --json` says. A person's session in
//! Chromium is in `browser`, the real Prometheus programs in `prometheus`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::helpers::*;

mod browser;
mod prometheus;

/// A dashboard (or daemon) serving the test's project.
pub(super) struct Served {
    pub addr: String,
    pub token: String,
    pub daemon: Daemon,
}

pub(super) fn state_dir(p: &TestProject) -> PathBuf {
    p.orch.join("state")
}

/// Starts the monitor with `args` and waits for its `state/http.json`.
pub(super) fn serve(p: &TestProject, args: &[&str]) -> Served {
    let record = state_dir(p).join("http.json");
    let _ = std::fs::remove_file(&record);
    let daemon = p.spawn_daemon(args);
    let mut addr = None;
    let found = wait_for(
        || {
            addr = std::fs::read_to_string(&record)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["addr"].as_str().map(str::to_string));
            addr.is_some()
        },
        SOON,
    );
    assert!(
        found,
        "no state/http.json\nstdout: {}\nstderr: {}",
        daemon.stdout_text(),
        daemon.stderr_text()
    );
    let token = std::fs::read_to_string(state_dir(p).join("http.token"))
        .unwrap()
        .trim()
        .to_string();
    Served {
        addr: addr.unwrap(),
        token,
        daemon,
    }
}

/// One HTTP/1.1 exchange on a fresh connection; `(status, body)`.
pub(super) fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(SOON)).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A request that must be refused: method, path, headers, the status wanted.
type Refused<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16);

pub(super) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A project with a running worker `worker-one` and a dead stream `dead`.
pub(super) fn project_with_streams() -> (TestProject, u32) {
    let p = TestProject::new();
    p.stream("worker-one", &["in_progress", "pending"], &[]);
    p.dead_stream("dead");
    let pid = p.spawn_worker_process("worker-one");
    (p, pid)
}

#[test]
fn refuses_reads_and_writes_without_the_token_or_from_a_foreign_origin() {
    let (p, live_pid) = project_with_streams();
    let s = serve(&p, &["dashboard", "--http", "127.0.0.1:0"]);
    let token_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(state_dir(&p).join("http.token"))
            .unwrap()
            .permissions(),
    ) & 0o777;
    assert_eq!(token_mode, 0o600, "the token file is private");
    let auth = bearer(&s.token);
    let own_origin = format!("http://{}", s.addr);
    let state_before = p.state_json();
    let events_before = p.events().len();

    // The page shell needs no token and holds no data.
    let (code, shell) = http(&s.addr, "GET", "/", &[], "");
    assert_eq!(code, 200);
    assert!(shell.contains("<script src=\"/app.js\">"), "{shell}");
    assert!(!shell.contains("worker-one") && !shell.contains(&s.token));
    assert!(!shell.contains(&p.proj.display().to_string()));

    let writes = [
        "/api/streams/worker-one/stop",
        "/api/streams/worker-one/pause",
        "/api/breaker/reset",
    ];
    let refused: Vec<Refused> = vec![
        ("GET", "/api/status", vec![], 401),
        ("GET", "/api/events", vec![], 401),
        ("GET", "/api/streams/worker-one", vec![], 401),
        ("GET", "/api/live", vec![], 401),
        ("GET", "/metrics", vec![], 401),
        (
            "GET",
            "/api/status",
            vec![("Authorization", "Bearer not-the-token")],
            403,
        ),
        (
            "GET",
            "/api/status",
            vec![("Authorization", &auth), ("Origin", "http://evil.example")],
            403,
        ),
        (
            "GET",
            "/api/status",
            vec![("Authorization", &auth), ("Host", "evil.example")],
            421,
        ),
        ("GET", "/", vec![("Host", "rebound.example:80")], 421),
        (
            "GET",
            "/api/live",
            vec![("Cookie", "mw_session=forged")],
            401,
        ),
    ];
    for (method, path, headers, want) in &refused {
        let (code, body) = http(&s.addr, method, path, headers, "");
        assert_eq!(code, *want, "{method} {path} {headers:?}: {body}");
    }
    for path in writes {
        let cases: Vec<(Vec<(&str, &str)>, u16)> = vec![
            (vec![], 401),
            (vec![("Authorization", "Bearer wrong")], 403),
            (
                vec![("Authorization", &auth), ("Origin", "http://evil.example")],
                403,
            ),
            (
                vec![("Authorization", &auth), ("Origin", "http://127.0.0.1:1")],
                403,
            ),
            (vec![("Authorization", &auth), ("Origin", "null")], 403),
            (
                vec![("Authorization", &auth), ("Host", "attacker.example:80")],
                421,
            ),
        ];
        for (headers, want) in cases {
            let (code, body) = http(&s.addr, "POST", path, &headers, "");
            assert_eq!(code, want, "POST {path} {headers:?}: {body}");
        }
        // A write is a POST: GET is not allowed even with the token.
        let (code, _) = http(&s.addr, "GET", path, &[("Authorization", &auth)], "");
        assert_eq!(code, 405, "GET {path}");
    }
    let big = "x".repeat(64 * 1024);
    let (code, _) = http(
        &s.addr,
        "POST",
        "/api/streams/worker-one/stop",
        &[("Authorization", &auth)],
        &big,
    );
    assert_eq!(code, 413, "a large body is refused");

    assert!(is_alive(live_pid), "no refused request stopped the worker");
    assert_eq!(p.state_json(), state_before, "state unchanged");
    assert_eq!(p.events().len(), events_before, "no event recorded");

    // The same request with the token and the page's own origin works.
    let (code, body) = http(
        &s.addr,
        "POST",
        "/api/streams/worker-one/pause",
        &[("Authorization", &auth), ("Origin", &own_origin)],
        "",
    );
    assert_eq!(code, 200, "{body}");
    let pause = p
        .events()
        .into_iter()
        .find(|e| e["event"] == "pause")
        .expect("pause recorded");
    assert_eq!(pause["via"], "web");
    assert_eq!(pause["stream"], "worker-one");
    assert!(pause["by"].is_string());
    assert_eq!(p.stream_status("worker-one")["state"], "paused");
    // An illegal move is refused by the state machine, as on the CLI.
    let (code, body) = http(
        &s.addr,
        "POST",
        "/api/streams/worker-one/restart",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("resume it first"), "{body}");
    let (code, body) = http(
        &s.addr,
        "POST",
        "/api/streams/nope/pause",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(code, 400, "{body}");
    // The breaker: refused while closed; reset while open, recorded.
    let (code, body) = http(
        &s.addr,
        "POST",
        "/api/breaker/reset",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(code, 400, "{body}");
    let mut state = p.state_json();
    state["breaker_until_ms"] = serde_json::json!(now_ms() + 600_000);
    p.write_state(&state);
    let (code, body) = http(
        &s.addr,
        "POST",
        "/api/breaker/reset",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(code, 200, "{body}");
    let until = p.state_json()["breaker_until_ms"].as_u64();
    assert!(
        until.is_none_or(|u| u <= now_ms()),
        "the breaker is closed: {until:?}"
    );
    let reset = p
        .events()
        .into_iter()
        .find(|e| e["event"] == "breaker_lifted");
    assert_eq!(reset.expect("breaker_lifted recorded")["via"], "web");
    assert!(is_alive(live_pid));
    p.stop_daemon(&s.daemon);
    assert!(
        !state_dir(&p).join("http.json").exists(),
        "http.json removed on exit"
    );
}

#[test]
fn the_daemon_serves_status_json_metrics_and_a_live_stream() {
    let (p, live_pid) = project_with_streams();
    let s = serve(
        &p,
        &["--daemon", "--interval", "1", "--http", "127.0.0.1:0"],
    );
    let auth = bearer(&s.token);
    assert!(wait_for(
        || p.status_json()["daemon"]["running"] == true,
        SOON
    ));
    let (code, body) = http(
        &s.addr,
        "GET",
        "/api/status",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(code, 200, "{body}");
    let web: serde_json::Value = serde_json::from_str(&body).unwrap();
    let cli = p.status_json();
    let summary = |v: &serde_json::Value| -> Vec<(String, String, String)> {
        v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_string(),
                    s["health"].as_str().unwrap().to_string(),
                    s["pid"].to_string(),
                )
            })
            .collect()
    };
    assert_eq!(summary(&web), summary(&cli), "the API is status --json");
    assert_eq!(web["version"], 1);
    assert_eq!(web["daemon"]["pid"], cli["daemon"]["pid"]);
    assert!(summary(&web).contains(&("worker-one".into(), "healthy".into(), live_pid.to_string())));

    let (code, metrics) = http(&s.addr, "GET", "/metrics", &[("Authorization", &auth)], "");
    assert_eq!(code, 200);
    let scrape = prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_string())))
        .expect("exposition format");
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert_eq!(value("monitor_workers_up"), 1.0);
    assert_eq!(value("monitor_workers_build_info"), 1.0);
    assert!(value("monitor_workers_last_tick_duration_seconds") > 0.0);
    for series in [
        "monitor_workers_restarts_total",
        "monitor_workers_deaths_total",
        "monitor_workers_workers",
        "monitor_workers_breaker_open",
        "monitor_workers_stream_state",
        "monitor_workers_stream_unattended_seconds",
    ] {
        value(series);
    }

    // A stream's detail: its last log lines, secrets redacted.
    let secret = "sk-ant-api03-AbCdEfGhIjKlMnOpQrSt";
    let mut log = std::fs::read_to_string(p.log_path("dead")).unwrap();
    log.push_str(&format!(
        "calling the API with key {secret}\nlast line of the worker\n"
    ));
    std::fs::write(p.log_path("dead"), log).unwrap();
    let (code, body) = http(
        &s.addr,
        "GET",
        "/api/streams/dead",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(code, 200, "{body}");
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    let lines: Vec<&str> = detail["log_lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert_eq!(lines.last(), Some(&"last line of the worker"), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("[REDACTED]")), "{lines:?}");
    assert!(!body.contains(secret), "the key left the server: {body}");
    assert_eq!(detail["stream"]["id"], "dead");

    // Every series the shipped alert rules and Grafana dashboard use is served.
    for file in ["alerts.yml", "grafana-dashboard.json"] {
        let text = std::fs::read_to_string(templates().join(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("monitor_workers_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let served = metrics
                .lines()
                .any(|l| l.starts_with(&format!("# TYPE {name} ")));
            assert!(served, "{file} uses {name}, which /metrics lacks");
        }
    }

    // The live stream, through the cookie traded for the token.
    let mut conn = TcpStream::connect(&s.addr).unwrap();
    let session = {
        let mut c = TcpStream::connect(&s.addr).unwrap();
        write!(
            c,
            "POST /api/session HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            s.addr
        )
        .unwrap();
        let mut text = String::new();
        let _ = c.read_to_string(&mut text);
        assert!(
            text.contains("HttpOnly") && text.contains("SameSite=Strict"),
            "{text}"
        );
        text.lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("set-cookie:")
                    .then(|| l[11..].trim().to_string())
            })
            .and_then(|c| c.split(';').next().map(str::to_string))
            .expect("a session cookie")
    };
    conn.set_read_timeout(Some(SOON)).unwrap();
    write!(
        conn,
        "GET /api/live HTTP/1.1\r\nHost: {}\r\nCookie: {session}\r\n\r\n",
        s.addr
    )
    .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + SOON;
    while !seen.contains("event: update") && Instant::now() < deadline {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("text/event-stream"), "{seen}");
    assert!(
        seen.contains("event: update") && seen.contains("\"worker-one\""),
        "{seen}"
    );
    drop(conn);
    p.stop_daemon(&s.daemon);
}

#[test]
fn listening_beyond_loopback_needs_both_flags_and_says_so() {
    let p = TestProject::new();
    p.stream("a", &["pending"], &[]);
    p.run(&["dashboard", "--http", "0.0.0.0:0"])
        .expect_code(2)
        .stderr_has("--http-allow-remote");
    p.run(&["dashboard", "--http", "0.0.0.0:0", "--http-allow-remote"])
        .expect_code(2)
        .stderr_has("--http-allowed-host");
    p.run(&["--http", "127.0.0.1:0"])
        .expect_code(2)
        .stderr_has("--daemon");
    let s = serve(
        &p,
        &[
            "dashboard",
            "--http",
            "0.0.0.0:0",
            "--http-allow-remote",
            "--http-allowed-host",
            "box.example",
        ],
    );
    assert!(
        wait_for(
            || s.daemon.stderr_text().contains("REMOTE ACCESS IS ON"),
            SOON
        ),
        "{}",
        s.daemon.stderr_text()
    );
    let port = s.addr.rsplit(':').next().unwrap().to_string();
    let local = format!("127.0.0.1:{port}");
    let auth = bearer(&s.token);
    let named = format!("box.example:{port}");
    let (code, _) = http(
        &local,
        "GET",
        "/api/status",
        &[("Authorization", &auth), ("Host", &named)],
        "",
    );
    assert_eq!(code, 200);
    let other = format!("other.example:{port}");
    let (code, _) = http(
        &local,
        "GET",
        "/api/status",
        &[("Authorization", &auth), ("Host", &other)],
        "",
    );
    assert_eq!(code, 421);
    p.stop_daemon(&s.daemon);
}

#[test]
fn slow_clients_are_cut_off_and_connections_are_bounded() {
    let p = TestProject::new();
    p.stream("a", &["pending"], &[]);
    let s = serve(&p, &["dashboard", "--http", "127.0.0.1:0"]);
    // As many clients as the server takes at once, none finishing its request.
    let mut slow: Vec<TcpStream> = (0..32)
        .map(|_| {
            let mut c = TcpStream::connect(&s.addr).unwrap();
            c.write_all(b"GET /api/status HTTP/1.1\r\nHost: ").unwrap();
            c
        })
        .collect();
    let started = Instant::now();
    // One more waits: it is not served while they hold every slot.
    let mut next = TcpStream::connect(&s.addr).unwrap();
    write!(
        next,
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        s.addr
    )
    .unwrap();
    next.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 4096];
    assert!(
        next.read(&mut buf).is_err(),
        "served beyond the connection bound"
    );
    // The slow ones are cut off after the header time-out...
    let first = slow.first_mut().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _ = first.read(&mut buf);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(25),
        "a slow client was cut off after {waited:?}"
    );
    // ...and the waiting request is answered then.
    next.set_read_timeout(Some(SOON)).unwrap();
    let mut answer = Vec::new();
    let _ = next.read_to_end(&mut answer);
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    p.stop_daemon(&s.daemon);
}

/// A free loopback port (for chromedriver and Prometheus, which want one).
pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(super) fn wait_port(port: u16) -> bool {
    wait_for(|| TcpStream::connect(("127.0.0.1", port)).is_ok(), SOON)
}

/// The shipped Prometheus files.
pub(super) fn templates() -> PathBuf {
    PathBuf::from(MANIFEST).join("templates/prometheus")
}
