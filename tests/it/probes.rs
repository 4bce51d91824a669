//! Probes and self-heal (SPEC 3.1, 3.4) through `<ORCH>/monitor.toml`:
//! stuck workers soft-reset with a retry context, the same-failure breaker,
//! readiness, startup grace, TCP and HTTP probes against real listeners,
//! process and Docker components, config errors and secret redaction.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::helpers::*;

/// Attempt records of a stream, parsed, by file name.
fn attempts(p: &TestProject, stream: &str) -> Vec<(String, serde_json::Value)> {
    let dir = p.orch.join("state/self_heal").join(stream);
    let mut out: Vec<(String, serde_json::Value)> = fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|path| path.extension().is_some_and(|x| x == "json"))
                .map(|path| {
                    let text = fs::read_to_string(&path).unwrap();
                    let value = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
                    (
                        path.file_name().unwrap().to_string_lossy().into_owned(),
                        value,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A local HTTP server answering `200 OK` to everything, until stopped.
struct Listener {
    port: u16,
    stop: Arc<AtomicBool>,
    http_requests: Arc<AtomicUsize>,
    bare_connects: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn start() -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let http_requests = Arc::new(AtomicUsize::new(0));
        let bare_connects = Arc::new(AtomicUsize::new(0));
        let (s, h, b) = (
            Arc::clone(&stop),
            Arc::clone(&http_requests),
            Arc::clone(&bare_connects),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_millis(300)));
                        let mut buf = [0u8; 1024];
                        let n = conn.read(&mut buf).unwrap_or(0);
                        if n > 0 && buf[..n].starts_with(b"GET ") {
                            h.fetch_add(1, Ordering::SeqCst);
                            let _ = conn.write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                            );
                        } else {
                            b.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            // The listener is dropped here: the port is closed.
        });
        Listener {
            port,
            stop,
            http_requests,
            bare_connects,
            thread: Some(thread),
        }
    }

    fn shut(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shut();
    }
}

/// A port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// SPEC 3.4: a worker that hangs silently fails its log-activity liveness
/// probe: it is stopped and restarted (soft reset) with a retry context.
#[test]
fn silent_worker_is_soft_reset_with_a_retry_context() {
    let p = TestProject::new();
    p.stream("api", &["completed", "pending"], &[]);
    p.write_config(
        "[monitor]\ngrace = 1\n\n\
         [[workers.probe]]\nrole = \"liveness\"\n\
         check = { kind = \"log-activity\", idle_secs = 1 }\n\
         period = 0.2\nfailure_threshold = 2\n",
    );
    let prompt_file = p.root.join("prompt.txt");
    p.set_env("FAKE_CLAUDE_PROMPT_FILE", prompt_file.to_str().unwrap());
    p.set_env("FAKE_CLAUDE_TICK", "0.3");
    // The first worker hangs; the ones the daemon starts work (and write).
    let old = p.spawn_worker_with("api", &[("FAKE_CLAUDE_MODE", "hang")]);
    assert!(wait_for(
        || fs::read_to_string(p.log_path("api")).is_ok_and(|t| t.contains("working on")),
        SOON
    ));
    let mut old_tree = descendants(old);
    old_tree.push(old);
    let d = p.spawn_daemon(&[
        "--daemon",
        "--auto-restart",
        "--interval",
        "1",
        "--backoff-base",
        "0.2",
    ]);
    assert!(
        p.wait_log(&format!("Worker api (PID {old}) is stuck"), SOON),
        "{}",
        d.stderr_text()
    );
    assert!(
        p.wait_log("Worker api restarted (PID: ", SOON),
        "{}",
        p.monitor_log()
    );
    let log = p.monitor_log();
    let stuck = log
        .lines()
        .find(|l| l.contains("is stuck"))
        .unwrap()
        .to_string();
    assert!(stuck.contains("log-activity"), "{stuck}");
    let new = restarted_pid(&log, "api").unwrap();
    assert_ne!(new, old);
    assert!(is_alive(new));
    for pid in &old_tree {
        assert!(
            !is_alive(*pid),
            "process {pid} of the stuck worker survived"
        );
    }

    let records = attempts(&p, "api");
    let first = records
        .iter()
        .find(|(name, _)| name == "attempt-1.json")
        .unwrap_or_else(|| panic!("no attempt-1.json: {records:?}"));
    assert_eq!(first.1["action"], "soft_reset", "{}", first.1);
    assert_eq!(first.1["class"], "hang", "{}", first.1);
    assert!(first.1["reason"].as_str().is_some_and(|r| !r.is_empty()));

    assert!(
        wait_for(
            || fs::read_to_string(&prompt_file).is_ok_and(|t| t.contains("## Retry context")),
            SOON
        ),
        "the new worker's prompt has no retry context: {:?}",
        fs::read_to_string(&prompt_file)
    );
    let prompt = fs::read_to_string(&prompt_file).unwrap();
    assert!(prompt.contains("attempt 1"), "{prompt}");
    assert!(
        p.events()
            .iter()
            .any(|e| e["event"] == "soft_reset" && e["stream"] == "api"),
        "no soft_reset event"
    );
    p.stop_daemon(&d);
}

/// SPEC 3.4: the same failure again and again (a rate limit) ends in a
/// give-up naming the failure, not in an endless loop.
#[test]
fn repeated_rate_limit_failures_give_up_with_that_signature() {
    let p = TestProject::new();
    p.dead_stream("api");
    // The breaker is opt-in (same_failure_limit defaults to 0).
    p.write_config("[monitor]\nsame_failure_limit = 3\n");
    p.set_env("FAKE_CLAUDE_MODE", "ratelimit");
    let d = p.spawn_daemon(&[
        "--daemon",
        "--auto-restart",
        "--interval",
        "1",
        "--backoff-base",
        "0.2",
        "--max-restarts",
        "10",
    ]);
    assert!(
        p.wait_log(
            "Worker api gave up: the same failure",
            Duration::from_secs(20)
        ),
        "{}\nstderr: {}",
        p.monitor_log(),
        d.stderr_text()
    );
    let log = p.monitor_log();
    let gave_up = log
        .lines()
        .find(|l| l.contains("gave up: the same failure"))
        .unwrap();
    assert!(gave_up.contains("rate-limit"), "{gave_up}");
    assert!(
        !log.contains("has reached max restart limit"),
        "the budget (10) was not what stopped it:\n{log}"
    );
    let restarts = p.count_in_log("Restarting worker api");
    assert!((2..=4).contains(&restarts), "{restarts} restarts:\n{log}");

    let records = attempts(&p, "api");
    let give_up = records
        .iter()
        .find(|(_, r)| r["action"] == "give_up")
        .unwrap_or_else(|| panic!("no give_up record: {records:?}"));
    assert_eq!(give_up.1["class"], "rate-limit", "{}", give_up.1);
    let st = p.stream_status("api");
    assert_eq!(st["state"], "gave_up", "{st}");
    assert!(
        st["reason"]
            .as_str()
            .is_some_and(|r| r.contains("rate-limit")),
        "{st}"
    );

    // No further restarts, by the daemon or by a one-shot.
    assert!(!wait_for(
        || p.count_in_log("Restarting worker api") > restarts,
        Duration::from_millis(1500)
    ));
    p.run(&["--auto-restart", "--max-restarts", "10"])
        .stdout_lacks("Restarting worker")
        .no_panic();
    p.stop_daemon(&d);
    assert_eq!(p.count_in_log("Restarting worker api"), restarts);
}

/// SPEC 3.1: a failing readiness probe marks the worker not ready in
/// status; it is never restarted for it.
#[test]
fn failing_readiness_shows_not_ready_and_restarts_nothing() {
    let p = TestProject::new();
    p.stream("api", &["completed", "pending"], &[]);
    let port = closed_port();
    p.write_config(&format!(
        "[[workers.probe]]\nrole = \"readiness\"\n\
         check = {{ kind = \"tcp\", address = \"127.0.0.1:{port}\" }}\n\
         period = 0.2\ntimeout = 0.5\nfailure_threshold = 1\n"
    ));
    let worker = p.spawn_worker_process("api");
    for _ in 0..3 {
        let r = p.run(&["--auto-restart"]);
        r.stdout_lacks("Restarting worker")
            .stdout_lacks("is stuck")
            .no_panic();
        std::thread::sleep(Duration::from_millis(250)); // one probe period
    }
    assert!(is_alive(worker));
    assert_eq!(p.read_pid_file("api"), Some(worker));
    assert_eq!(p.count_in_log("Restarting worker"), 0);
    let recorded = p.state_json()["streams"]["api"]["not_ready"].clone();
    assert!(
        recorded
            .as_str()
            .is_some_and(|r| r.contains("readiness") && r.contains(&port.to_string())),
        "the readiness failure was not recorded: {recorded}"
    );

    let st = p.stream_status("api");
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(st["pid"].as_u64(), Some(worker as u64), "{st}");
    let shown = st.to_string();
    assert!(
        shown.contains("not_ready") || shown.contains("not ready"),
        "status --json does not say the worker is not ready: {st}"
    );
    assert!(
        shown.contains("readiness probe tcp"),
        "status --json does not say why the worker is not ready: {st}"
    );
}

/// SPEC 3.1: no liveness verdict while the startup probe has not passed.
/// The liveness probe fails from the first second; the worker is restarted
/// only once it has been up the 2 s of its startup probe.
#[test]
fn startup_probe_holds_back_liveness_for_its_grace() {
    let p = TestProject::new();
    p.stream("api", &["completed", "pending"], &[]);
    p.write_config(
        "[monitor]\ngrace = 1\n\n\
         [[workers.probe]]\nrole = \"startup\"\n\
         check = { kind = \"min-uptime\", secs = 2 }\n\
         period = 0.2\nfailure_threshold = 20\n\n\
         [[workers.probe]]\nrole = \"liveness\"\n\
         check = { kind = \"exec\", command = [\"false\"] }\n\
         period = 0.2\nfailure_threshold = 1\n",
    );
    let before_spawn = now_ms();
    let worker = p.spawn_worker_process("api");
    // Checks back to back (each runs the due probes) until one soft-resets.
    let mut saw_starting = false;
    let mut stuck_in = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if !saw_starting {
            saw_starting = p.stream_status("api")["state"] == "starting";
        }
        let r = p.run(&["--auto-restart"]);
        r.no_panic();
        if r.stdout.contains("is stuck") {
            stuck_in = Some(r.stdout);
            break;
        }
    }
    let stdout = stuck_in.unwrap_or_else(|| {
        panic!(
            "never restarted after the startup grace:\n{}",
            p.monitor_log()
        )
    });
    assert!(saw_starting, "status never showed the worker starting");
    assert!(
        stdout.contains(&format!("Worker api (PID {worker}) is stuck")),
        "{stdout}"
    );
    assert!(stdout.contains("liveness probe exec"), "{stdout}");
    let stuck_at = log_time_ms(p.log_times("is stuck")[0]);
    let up_ms = stuck_at - before_spawn;
    assert!(
        up_ms >= 2000,
        "liveness acted {up_ms} ms after the worker started, inside the 2 s startup grace\n{}",
        p.monitor_log()
    );
    assert!(wait_for(|| !is_alive(worker), SOON));
    assert!(restarted_pid(&stdout, "api").is_some_and(|n| n != worker));
}

/// SPEC 3.1: TCP and HTTP liveness probes against real listeners pass while
/// they answer; when the listener goes, the worker is soft-reset.
#[test]
fn tcp_and_http_liveness_probes_pass_then_fail_when_the_listener_stops() {
    let p = TestProject::new();
    p.stream("api", &["completed", "pending"], &[]);
    let mut server = Listener::start();
    let port = server.port;
    p.write_config(&format!(
        "[monitor]\ngrace = 1\n\n\
         [[workers.probe]]\nrole = \"liveness\"\n\
         check = {{ kind = \"tcp\", address = \"127.0.0.1:{port}\" }}\n\
         period = 0.2\ntimeout = 0.5\nfailure_threshold = 2\n\n\
         [[workers.probe]]\nrole = \"liveness\"\n\
         check = {{ kind = \"http\", url = \"http://127.0.0.1:{port}/health\" }}\n\
         period = 0.2\ntimeout = 0.5\nfailure_threshold = 2\n"
    ));
    let old = p.spawn_worker_process("api");
    let d = p.spawn_daemon(&[
        "--daemon",
        "--auto-restart",
        "--interval",
        "1",
        "--backoff-base",
        "0.2",
    ]);
    // Three checks with both probes passing.
    assert!(
        wait_for(
            || server.http_requests.load(Ordering::SeqCst) >= 3
                && server.bare_connects.load(Ordering::SeqCst) >= 3,
            SOON
        ),
        "the probes did not reach the listener\n{}",
        p.monitor_log()
    );
    let records = p.state_json()["streams"]["api"]["probes"]["records"].clone();
    let oks: Vec<bool> = records
        .as_object()
        .map(|r| r.values().map(|v| v["last_ok"] == true).collect())
        .unwrap_or_default();
    assert_eq!(oks, vec![true, true], "{records}");
    assert_eq!(p.count_in_log("is stuck"), 0, "{}", p.monitor_log());
    assert!(is_alive(old));

    server.shut();
    assert!(
        p.wait_log(&format!("Worker api (PID {old}) is stuck"), SOON),
        "{}",
        p.monitor_log()
    );
    assert!(p.wait_log("Worker api restarted (PID: ", SOON));
    let log = p.monitor_log();
    let stuck = log.lines().find(|l| l.contains("is stuck")).unwrap();
    assert!(
        stuck.contains("liveness probe tcp") || stuck.contains("liveness probe http"),
        "{stuck}"
    );
    let new = restarted_pid(&log, "api").unwrap();
    assert_ne!(new, old);
    assert!(wait_for(|| !is_alive(old), SOON));
    p.stop_daemon(&d);
}

/// SPEC 3.1: a process component is started by the daemon, restarted when it
/// dies, and stopped with the daemon.
#[test]
fn process_component_is_started_restarted_and_stopped_with_the_daemon() {
    let p = TestProject::new();
    p.write_config(
        "[monitor]\ngrace = 1\n\n\
         [[component]]\nname = \"svc\"\ntype = \"process\"\n\
         command = [\"sleep\", \"30\"]\n",
    );
    let d = p.spawn_daemon(&[
        "--daemon",
        "--auto-restart",
        "--interval",
        "1",
        "--backoff-base",
        "0.2",
    ]);
    assert!(
        p.wait_log("Component @svc started (PID: ", SOON),
        "{}\nstderr: {}",
        p.monitor_log(),
        d.stderr_text()
    );
    let first = pid_after(&p.monitor_log(), "Component @svc started (PID:").unwrap();
    assert!(is_alive(first) && p.has_tag(first));
    assert_eq!(proc_cmdline(first), vec!["sleep", "30"]);
    assert_eq!(p.read_pid_file("@svc"), Some(first));

    p.signal_ours(first, Signal::SIGKILL);
    assert!(
        p.wait_log("Component @svc restarted (PID: ", SOON),
        "{}",
        p.monitor_log()
    );
    let second = pid_after(&p.monitor_log(), "Component @svc restarted (PID:").unwrap();
    assert_ne!(second, first);
    assert!(is_alive(second));
    assert_eq!(proc_cmdline(second), vec!["sleep", "30"]);

    p.stop_daemon(&d);
    assert!(
        wait_for(|| !is_alive(second), Duration::from_secs(3)),
        "the component outlived the daemon"
    );
}

/// The fake `docker`: a container's state lives in `<dir>/<name>.state`
/// (`running` or `exited`) and its PID in `<dir>/<name>.pid`; every call's
/// argv is appended to `<dir>/argv.log`. It answers exactly the formats the
/// monitor uses and refuses anything else.
fn install_fake_docker(p: &TestProject) -> PathBuf {
    let dir = p.root.join("docker");
    fs::create_dir_all(&dir).unwrap();
    let script = format!(
        r#"#!/usr/bin/env bash
dir='{dir}'
printf '%s\n' "$*" >> "$dir/argv.log"
case "$1" in
  inspect)
    if [ "$#" -ne 4 ] || [ "$2" != "--format" ]; then echo "fake docker: unsupported: $*" >&2; exit 2; fi
    fmt=$3; name=$4
    if [ ! -f "$dir/$name.state" ]; then echo "Error: No such object: $name" >&2; exit 1; fi
    state=$(cat "$dir/$name.state")
    pid=$(cat "$dir/$name.pid" 2>/dev/null || echo 0)
    case "$fmt" in
      '{{{{.State.Status}}}}|{{{{.State.Pid}}}}|{{{{.State.ExitCode}}}}')
        if [ "$state" = running ]; then echo "running|$pid|0"; else echo "exited|0|1"; fi ;;
      '{{{{.State.Status}}}}|{{{{if .State.Health}}}}{{{{.State.Health.Status}}}}{{{{end}}}}')
        if [ "$state" = running ]; then echo "running|"; else echo "exited|"; fi ;;
      *) echo "fake docker: unsupported format $fmt" >&2; exit 2 ;;
    esac ;;
  restart)
    name=$2
    if [ ! -f "$dir/$name.state" ]; then echo "Error: No such container: $name" >&2; exit 1; fi
    sleep 300 </dev/null >/dev/null 2>&1 &
    echo $! > "$dir/$name.pid"
    echo running > "$dir/$name.state"
    echo "$name" ;;
  stop)
    name=${{!#}}
    echo exited > "$dir/$name.state"
    echo "$name" ;;
  *) echo "fake docker: unsupported command: $*" >&2; exit 2 ;;
esac
"#,
        dir = dir.display()
    );
    let path = p.bin_dir.join("docker");
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn docker_pid(dir: &Path, name: &str) -> Option<u32> {
    fs::read_to_string(dir.join(format!("{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// SPEC 3.1: a docker component is observed through `docker inspect` and
/// restarted through `docker restart` when its container exits.
#[test]
fn docker_component_is_restarted_when_its_container_exits() {
    let p = TestProject::new();
    let dir = install_fake_docker(&p);
    let container_proc = p.spawn_sleep(300);
    fs::write(dir.join("agent-runner.state"), "running\n").unwrap();
    fs::write(dir.join("agent-runner.pid"), format!("{container_proc}\n")).unwrap();
    p.write_config(
        "[[component]]\nname = \"agent\"\ntype = \"docker\"\ncontainer = \"agent-runner\"\n",
    );
    let d = p.spawn_daemon(&[
        "--daemon",
        "--auto-restart",
        "--interval",
        "1",
        "--backoff-base",
        "0.2",
    ]);
    assert!(
        wait_for(|| p.stream_status("@agent")["state"] == "running", SOON),
        "{}\nstderr: {}",
        p.monitor_log(),
        d.stderr_text()
    );
    let argv = fs::read_to_string(dir.join("argv.log")).unwrap();
    assert!(argv.contains("inspect --format"), "{argv}");
    assert!(!argv.contains("restart"), "{argv}");
    assert!(!p.monitor_log().contains("Restarting worker @agent"));

    // The container exits.
    fs::write(dir.join("agent-runner.state"), "exited\n").unwrap();
    p.signal_ours(container_proc, Signal::SIGKILL);
    p.wait_exit(container_proc, SOON);
    assert!(
        p.wait_log("Component @agent restarted (PID: ", SOON),
        "{}",
        p.monitor_log()
    );
    let argv = fs::read_to_string(dir.join("argv.log")).unwrap();
    assert_eq!(
        argv.lines()
            .filter(|l| *l == "restart agent-runner")
            .count(),
        1,
        "{argv}"
    );
    let new = docker_pid(&dir, "agent-runner").unwrap();
    assert_ne!(new, container_proc);
    assert!(is_alive(new) && p.has_tag(new));
    assert_eq!(
        pid_after(&p.monitor_log(), "Component @agent restarted (PID:"),
        Some(new)
    );
    assert!(
        wait_for(|| p.stream_status("@agent")["state"] == "running", SOON),
        "{}",
        p.stream_status("@agent")
    );
    p.stop_daemon(&d);
}

/// SPEC 2: a config file with an unknown key is a usage error naming the key
/// and its line, for every command that reads it; nothing is started.
#[test]
fn bad_config_file_exits_2_naming_key_and_line() {
    let p = TestProject::new();
    p.dead_stream("api");
    let cases = [
        (
            "[monitor]\ninterval = 1\nbogus_key = 3\n",
            "line 3",
            "bogus_key",
        ),
        (
            "[[workers.probe]]\nrole = \"liveness\"\n\
             check = { kind = \"tcp\", adress = \"127.0.0.1:1\" }\n",
            "line 3",
            "adress",
        ),
        (
            "[monitor]\ngrace = 1\n\n[[component]]\nname = \"svc\"\ntype = \"process\"\n\
             command = [\"sleep\", \"1\"]\nrestart = \"always\"\n",
            "line 8",
            "restart",
        ),
    ];
    for (text, line, key) in cases {
        p.write_config(text);
        for args in [
            &["--auto-restart"][..],
            &["--daemon", "--auto-restart", "--interval", "1"],
            &["start", "--auto-restart"],
            &["status"],
            &["pause", "api"],
        ] {
            let r = p.run(args);
            r.expect_code(2).stderr_has(line).stderr_has(key).no_panic();
            assert!(
                r.stderr.trim().lines().count() == 1,
                "{args:?}: not one line: {}",
                r.stderr
            );
            assert!(
                r.stderr.contains("monitor.toml"),
                "{args:?}: the file is not named: {}",
                r.stderr
            );
        }
    }
    assert!(!p.pid_path("api").exists(), "a worker was started");
    assert_eq!(p.count_in_log("Restarting worker"), 0);
    assert!(!p.orch.join("state/daemon.json").exists());
}

/// SPEC 3.4: secrets a worker printed never reach the attempt records, the
/// retry context, monitor.log, events.jsonl, the state file or status.
#[test]
fn secrets_in_a_worker_log_are_redacted_everywhere() {
    let p = TestProject::new();
    p.stream("api", &["completed", "pending"], &[]);
    p.write_config("[monitor]\nsame_failure_limit = 2\n");
    let prompt_file = p.root.join("prompt.txt");
    p.set_env("FAKE_CLAUDE_PROMPT_FILE", prompt_file.to_str().unwrap());
    let secrets = [
        "sk-ant-api03-Zx9SECRETSECRETSECRET0123456789",
        "hunter2hunter2",
        "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0cGF5bG9hZA",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ];
    p.install_claude_script(
        "echo \"leaky worker: starting\"\n\
         if [ -n \"${FAKE_CLAUDE_PROMPT_FILE:-}\" ]; then printf '%s' \"$2\" > \"$FAKE_CLAUDE_PROMPT_FILE\"; fi\n\
         echo \"export ANTHROPIC_API_KEY=sk-ant-api03-Zx9SECRETSECRETSECRET0123456789\"\n\
         echo \"connecting with password=hunter2hunter2\"\n\
         echo \"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.c2VjcmV0cGF5bG9hZA.c2lnbmF0dXJl\"\n\
         echo \"aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"\n\
         echo \"fatal: request refused for ANTHROPIC_API_KEY=sk-ant-api03-Zx9SECRETSECRETSECRET0123456789\" >&2\n\
         exit 1\n",
    );
    let status = p.run_worker_to_end("api", &[]);
    assert_eq!(status.code(), Some(1));
    let worker_log = fs::read_to_string(p.log_path("api")).unwrap();
    for s in secrets {
        assert!(worker_log.contains(s), "the fake worker did not leak {s}");
    }

    let settle = |p: &TestProject| {
        assert!(wait_for(
            || !p.pid_path("api").exists() && p.live_wrappers("api").is_empty(),
            SOON
        ));
    };
    let mut said = String::new();
    let r = p.run(&["--auto-restart", "--backoff-base", "0"]);
    r.stdout_has("Restarting worker api (attempt 1/2)")
        .no_panic();
    said.push_str(&r.stdout);
    said.push_str(&r.stderr);
    assert!(
        wait_for(
            || fs::read_to_string(&prompt_file).is_ok_and(|t| t.contains("## Retry context")),
            SOON
        ),
        "no retry context"
    );
    settle(&p);
    // The same failure a second time: the stream gives up naming it.
    let r = p.run(&["--auto-restart", "--backoff-base", "0"]);
    r.stdout_has("gave up: the same failure").no_panic();
    said.push_str(&r.stdout);
    said.push_str(&r.stderr);
    let st = p.run(&["status", "--json", "--verbose"]);
    said.push_str(&st.stdout);
    let text_status = p.run(&["status", "--verbose"]);
    said.push_str(&text_status.stdout);

    let prompt = fs::read_to_string(&prompt_file).unwrap();
    assert!(prompt.contains("leaky worker: starting"), "{prompt}");
    assert!(prompt.contains("[REDACTED"), "{prompt}");
    let records = attempts(&p, "api");
    assert!(records.len() >= 2, "{records:?}");
    let mut places: Vec<(String, String)> = vec![
        ("the retry context".into(), prompt),
        ("monitor.log".into(), p.monitor_log()),
        (
            "events.jsonl".into(),
            fs::read_to_string(p.logs_dir().join("events.jsonl")).unwrap(),
        ),
        ("the state".into(), p.state_json().to_string()),
        ("the console and status".into(), said),
    ];
    for (name, record) in &records {
        places.push((name.clone(), record.to_string()));
    }
    assert!(
        records
            .iter()
            .any(|(_, r)| r["log_tail"].to_string().contains("leaky worker")),
        "the attempt records hold no log tail: {records:?}"
    );
    for (place, text) in &places {
        for s in secrets {
            assert!(!text.contains(s), "{s} leaked into {place}:\n{text}");
        }
    }
}
