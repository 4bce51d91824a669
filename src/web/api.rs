//! The routes: the page shell and its assets (no data, no token), the JSON
//! API and `/metrics` (token), the live stream (token or the session cookie
//! traded for it), and the operator verbs (POST, token). Every request first
//! passes the guard (Host, Origin, token, body size) and a time limit; the
//! handlers run the CLI's own report and verbs (`status::collect`,
//! `control::*_in`, `tick::operator`) on the blocking pool.

use crate::process::detach::Child;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

use crate::cli::Cli;
use crate::commands::{control, status, Context};
use crate::layout::StreamId;
use crate::{Failure, Outcome};

use super::guard::{self, Guard, Refusal, Sessions};
use super::{
    timeline, HEADER_TIMEOUT, MAX_BODY_BYTES, MAX_CONNECTIONS, MAX_EVENT_STREAMS, REQUEST_TIMEOUT,
};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// How often the live stream looks for changes while someone watches.
const LIVE_EVERY: Duration = Duration::from_secs(1);
/// Seconds a worker gets between SIGTERM and SIGKILL, as the CLI's default.
const GRACE: Duration = Duration::from_secs(10);

/// What the handlers share.
pub struct App {
    cli: Cli,
    guard: Guard,
    sessions: Sessions,
    /// The latest live document and when it was made.
    live: watch::Sender<(Instant, Arc<String>)>,
    event_streams: Arc<Semaphore>,
    /// Wrappers this process started (a restart from the page), reaped here.
    adopted: Mutex<Vec<Child>>,
}

impl App {
    pub fn new(cli: Cli, guard: Guard) -> App {
        let (live, _) = watch::channel((Instant::now(), Arc::new(String::new())));
        App {
            cli,
            guard,
            sessions: Sessions::default(),
            live,
            event_streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
            adopted: Mutex::new(Vec::new()),
        }
    }

    fn reap_adopted(&self) {
        let mut adopted = self.adopted.lock().unwrap_or_else(|e| e.into_inner());
        adopted.retain_mut(|child| matches!(child.try_wait(), Ok(None)));
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/style.css",
            get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }),
        )
        .route("/metrics", get(metrics))
        .route("/api/session", post(session))
        .route("/api/status", get(status_json))
        .route("/api/streams/{id}", get(stream_detail))
        .route("/api/streams/{id}/{verb}", post(stream_verb))
        .route("/api/breaker/reset", post(breaker_reset))
        .route("/api/events", get(events))
        .route("/api/timeline", get(timeline_json))
        .route("/api/live", get(live))
        .fallback(|| async { refuse(StatusCode::NOT_FOUND, "no such page") })
        .layer(middleware::from_fn_with_state(Arc::clone(&app), guarded))
        .layer(axum::extract::DefaultBodyLimit::max(
            MAX_BODY_BYTES as usize,
        ))
        .with_state(app)
}

/// Accepts connections (at most `MAX_CONNECTIONS` at once) until `stop`,
/// with a header time-out on each.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let routes = router(Arc::clone(&app));
    tokio::spawn(refresh_live(Arc::clone(&app)));
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = &mut stop => break,
            p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let socket = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                // Out of descriptors and the like: wait, do not spin.
                Err(_) => { tokio::time::sleep(Duration::from_millis(100)).await; continue; }
            },
        };
        let service = hyper_util::service::TowerToHyperService::new(routes.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(16 * 1024);
            let _ = http.serve_connection(TokioIo::new(socket), service).await;
        });
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "ok": false, "error": message }))).into_response()
}

fn refusal(r: Refusal) -> Response {
    let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = refuse(status, r.message());
    if r == Refusal::NoToken {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// The guard in front of every route, and the time limit.
async fn guarded(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = match app.guard.host(header_str(headers, header::HOST)) {
        Ok(h) => h,
        Err(r) => return refusal(r),
    };
    if let Err(r) = app.guard.origin(header_str(headers, header::ORIGIN), &host) {
        return refusal(r);
    }
    let path = req.uri().path();
    if path.starts_with("/api/") || path == "/metrics" {
        if let Err(r) = app.guard.bearer(header_str(headers, header::AUTHORIZATION)) {
            let by_cookie = path == "/api/live"
                && req.method() == Method::GET
                && guard::session_from_cookies(header_str(headers, header::COOKIE))
                    .is_some_and(|id| app.sessions.valid(id));
            if !by_cookie {
                return refusal(r);
            }
        }
    }
    let declared = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let mut response = match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(response) => response,
        Err(_) => refuse(StatusCode::SERVICE_UNAVAILABLE, "the request took too long"),
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    response
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// Runs blocking work on the pool; a failure becomes a JSON error.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(Failure::Usage(m))) => Err(refuse(StatusCode::BAD_REQUEST, &m)),
        Ok(Err(Failure::CouldNotRun(m))) => Err(refuse(StatusCode::CONFLICT, &m)),
        Err(_) => Err(refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the request failed",
        )),
    }
}

fn json_response(value: Value) -> Response {
    axum::Json(value).into_response()
}

/// `POST /api/session`: trades the bearer token for an HttpOnly cookie that
/// only the live stream accepts (an EventSource cannot send headers).
async fn session(State(app): State<Arc<App>>) -> Response {
    let Ok(id) = super::token::random_hex(32) else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "no randomness");
    };
    app.sessions.add(id.clone());
    let cookie = format!(
        "{}={id}; HttpOnly; SameSite=Strict; Path=/api/live",
        guard::SESSION_COOKIE
    );
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn status_value(cli: &Cli) -> Result<Value, Failure> {
    status_in(cli, &Context::new(cli)?)
}

fn status_in(cli: &Cli, ctx: &Context) -> Result<Value, Failure> {
    let report = status::collect(cli, ctx, None)?;
    Ok(serde_json::to_value(&report).expect("status serialises"))
}

async fn status_json(State(app): State<Arc<App>>) -> Response {
    let cli = app.cli.clone();
    match blocking(move || status_value(&cli)).await {
        Ok(v) => json_response(v),
        Err(r) => r,
    }
}

/// The live document: the status and a mark that changes with the event log.
fn live_document(cli: &Cli) -> String {
    let ctx = match Context::new(cli) {
        Ok(ctx) => ctx,
        Err(e) => return json!({ "status": { "error": e.to_string() } }).to_string(),
    };
    let status = status_in(cli, &ctx).unwrap_or_else(|e| json!({ "error": e.to_string() }));
    let events_mark = std::fs::metadata(ctx.layout.events_log())
        .map(|m| {
            let modified = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            format!("{}-{modified}", m.len())
        })
        .unwrap_or_default();
    let breaker_until_ms = ctx.store.read_only().0.breaker_until_ms;
    json!({ "status": status, "events_mark": events_mark, "breaker_until_ms": breaker_until_ms })
        .to_string()
}

/// Refreshes the live document every second while a page watches; reaps
/// the wrappers this process started.
async fn refresh_live(app: Arc<App>) {
    let mut every = tokio::time::interval(LIVE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        app.reap_adopted();
        if app.live.receiver_count() == 0 {
            continue;
        }
        let cli = app.cli.clone();
        let Ok(doc) = tokio::task::spawn_blocking(move || live_document(&cli)).await else {
            continue;
        };
        app.live.send_if_modified(|(at, current)| {
            *at = Instant::now();
            if **current == doc {
                return false;
            }
            *current = Arc::new(doc);
            true
        });
    }
}

/// `GET /api/live`: Server-Sent Events, one `update` per change.
async fn live(State(app): State<Arc<App>>) -> Response {
    let Ok(slot) = Arc::clone(&app.event_streams).try_acquire_owned() else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "too many live views open");
    };
    let mut rx = app.live.subscribe();
    // A fresh document goes out at once; an old one waits for the next refresh.
    let fresh = {
        let current = rx.borrow();
        current.0.elapsed() < LIVE_EVERY * 2 && !current.1.is_empty()
    };
    if fresh {
        rx.mark_changed();
    }
    let updates = futures_util::stream::unfold((rx, slot), |(mut rx, slot)| async move {
        rx.changed().await.ok()?;
        let doc = Arc::clone(&rx.borrow_and_update().1);
        let event = Event::default().event("update").data(doc.as_str());
        Some((Ok::<_, Infallible>(event), (rx, slot)))
    });
    Sse::new(updates)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn parse_stream(raw: &str) -> Result<StreamId, String> {
    StreamId::parse(raw).map_err(|why| format!("invalid stream id {raw:?}: {why}"))
}

/// Redacts every string in a JSON document.
fn redact_json(value: &mut Value) {
    match value {
        Value::String(s) => *s = crate::selfheal::redact::redact(s),
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        Value::Object(map) => map.values_mut().for_each(redact_json),
        _ => {}
    }
}

/// The last restart attempts' records, newest first.
fn attempts(dir: &std::path::Path, keep: usize) -> Vec<Value> {
    let mut found: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let n = name
                .strip_prefix("attempt-")?
                .strip_suffix(".json")?
                .parse()
                .ok()?;
            Some((n, entry.path()))
        })
        .collect();
    found.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    found
        .into_iter()
        .take(keep)
        .filter_map(|(n, path)| {
            let text = crate::logtail::tail(&path, 64 * 1024)?;
            let mut value: Value = serde_json::from_str(&text).ok()?;
            redact_json(&mut value);
            Some(json!({ "n": n, "file": path.display().to_string(), "record": value }))
        })
        .collect()
}

fn detail(cli: &Cli, id: &StreamId) -> Result<Value, Failure> {
    let ctx = Context::new(cli)?;
    let report = status::collect(cli, &ctx, Some(id.as_str()))?;
    let stream = report.streams.into_iter().next();
    let initiative = report.initiative.map(|i| i.id).unwrap_or_default();
    let log = ctx.layout.log_file(id, &initiative);
    let text = crate::logtail::tail(&log, 64 * 1024).unwrap_or_default();
    let lines = crate::selfheal::redact::redact_lines(&crate::logtail::last_lines(&text, 60));
    Ok(json!({
        "stream": stream,
        "log_file": log.display().to_string(),
        "log_lines": lines,
        "attempts": attempts(&ctx.layout.self_heal_dir(id), 10),
    }))
}

async fn stream_detail(State(app): State<Arc<App>>, Path(raw): Path<String>) -> Response {
    let id = match parse_stream(&raw) {
        Ok(id) => id,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, &why),
    };
    let cli = app.cli.clone();
    match blocking(move || detail(&cli, &id)).await {
        Ok(v) => json_response(v),
        Err(r) => r,
    }
}

/// A context whose events say they came from the web.
fn web_context(cli: &Cli) -> Result<Context, Failure> {
    let mut ctx = Context::new(cli)?;
    ctx.via = Some("web");
    Ok(ctx)
}

/// `POST /api/streams/{id}/{verb}`: the CLI's verbs, recorded `via: web`.
async fn stream_verb(
    State(app): State<Arc<App>>,
    Path((raw, verb)): Path<(String, String)>,
) -> Response {
    let id = match parse_stream(&raw) {
        Ok(id) => id,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, &why),
    };
    if !matches!(
        verb.as_str(),
        "restart" | "pause" | "resume" | "reset" | "stop"
    ) {
        return refuse(StatusCode::NOT_FOUND, &format!("no verb {verb:?}"));
    }
    let cli = app.cli.clone();
    let worker = Arc::clone(&app);
    let done = blocking(move || {
        let ctx = web_context(&cli)?;
        let raw = id.as_str();
        match verb.as_str() {
            "pause" => control::pause_in(&ctx, &cli, raw),
            "resume" => control::resume_in(&ctx, &cli, Some(raw)),
            "reset" => control::reset_in(&ctx, &cli, Some(raw)),
            "stop" => control::stop_in(&ctx, &cli, Some(raw), false, GRACE),
            _ => {
                let child = control::restart_in(&ctx, &cli, raw, GRACE)?;
                if let Some(child) = child {
                    worker
                        .adopted
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(child);
                }
                Ok(Outcome::Healthy)
            }
        }
        .map(|_| format!("{verb} {id}: done"))
    })
    .await;
    match done {
        Ok(message) => json_response(json!({ "ok": true, "message": message })),
        Err(r) => r,
    }
}

async fn breaker_reset(State(app): State<Arc<App>>) -> Response {
    let cli = app.cli.clone();
    let done = blocking(move || control::lift_breaker_in(&web_context(&cli)?)).await;
    match done {
        Ok(_) => json_response(json!({ "ok": true, "message": "restart breaker lifted" })),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    limit: Option<usize>,
    stream: Option<String>,
}

async fn events(State(app): State<Arc<App>>, Query(q): Query<EventsQuery>) -> Response {
    let cli = app.cli.clone();
    let limit = q.limit.unwrap_or(200).clamp(1, 1000);
    let done = blocking(move || {
        let ctx = Context::new(&cli)?;
        let mut events = timeline::read_tail(&ctx.layout.events_log(), 512 * 1024);
        if let Some(stream) = &q.stream {
            events.retain(|e| e.stream.as_deref() == Some(stream.as_str()));
        }
        let start = events.len().saturating_sub(limit);
        let mut recent: Vec<Value> = events[start..]
            .iter()
            .rev()
            .map(|e| {
                let mut v = serde_json::to_value(e).expect("event serialises");
                redact_json(&mut v);
                v
            })
            .collect();
        recent.truncate(limit);
        Ok(Value::Array(recent))
    })
    .await;
    match done {
        Ok(v) => json_response(v),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
struct TimelineQuery {
    hours: Option<u64>,
}

async fn timeline_json(State(app): State<Arc<App>>, Query(q): Query<TimelineQuery>) -> Response {
    let cli = app.cli.clone();
    let hours = q.hours.unwrap_or(6).clamp(1, 48);
    let done = blocking(move || {
        let ctx = Context::new(&cli)?;
        let now = crate::clock::now_ms();
        let since = now.saturating_sub(hours * 3_600_000);
        let events = timeline::read_since(&ctx.layout.events_log(), since, 8 * 1024 * 1024);
        Ok(serde_json::to_value(timeline::timeline(&events, now, hours)).expect("serialises"))
    })
    .await;
    match done {
        Ok(v) => json_response(v),
        Err(r) => r,
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let cli = app.cli.clone();
    let done = blocking(move || {
        let ctx = Context::new(&cli)?;
        let file = std::fs::read_to_string(ctx.layout.metrics_file()).ok();
        let report = status::collect(&cli, &ctx, None).ok();
        let (state, _) = ctx.store.read_only();
        Ok(super::exposition::render(
            file.as_deref(),
            report.as_ref(),
            &state,
            crate::clock::now_ms(),
        ))
    })
    .await;
    match done {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            Body::from(text),
        )
            .into_response(),
        Err(r) => r,
    }
}
