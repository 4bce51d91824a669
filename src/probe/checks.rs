//! Running probe checks. Every check is bounded by its timeout (sockets get
//! connect/read timeouts, commands are killed when late), and all due probes
//! of a worker run in parallel, so a hanging probe costs one timeout and
//! counts as a failure instead of stalling the loop.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use super::{is_due, record_result, CheckSpec, ProbeSet, ProbeSpec};
use crate::process::bounded::{run_bounded, BoundedError};
use crate::process::procinfo;

/// What a check looks at.
#[derive(Debug, Clone)]
pub struct Target {
    pub pid: i32,
    pub started_at: SystemTime,
    pub log_path: Option<PathBuf>,
    pub heartbeat_path: Option<PathBuf>,
    /// Newest task status change of the stream, and whether tasks are open.
    pub last_task_change: Option<SystemTime>,
    pub tasks_open: bool,
    pub cwd: PathBuf,
}

/// One check's result; `cpu` carries the sample for the next cpu check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub ok: bool,
    pub detail: String,
    pub cpu: Option<(u64, u64)>,
}

fn pass(detail: impl Into<String>) -> CheckResult {
    CheckResult {
        ok: true,
        detail: detail.into(),
        cpu: None,
    }
}

fn fail(detail: impl Into<String>) -> CheckResult {
    CheckResult {
        ok: false,
        detail: detail.into(),
        cpu: None,
    }
}

fn age(t: SystemTime) -> u64 {
    SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Runs every due probe of a worker (in parallel) and returns the updated records.
pub fn run_due(specs: &[ProbeSpec], set: &ProbeSet, target: &Target, now_ms: u64) -> ProbeSet {
    let started_ms = crate::clock::epoch_ms(target.started_at);
    let due: Vec<(usize, &ProbeSpec)> = specs
        .iter()
        .enumerate()
        .filter(|(i, s)| is_due(set.records.get(&s.key(*i)), &s.timing, started_ms, now_ms))
        .collect();
    let mut out = set.clone();
    if due.is_empty() {
        return out;
    }
    let results: Vec<(usize, CheckResult)> = std::thread::scope(|scope| {
        let handles: Vec<_> = due
            .iter()
            .map(|(i, spec)| {
                let previous_cpu = set.records.get(&spec.key(*i)).and_then(|r| r.cpu);
                scope.spawn(move || {
                    (
                        *i,
                        run(
                            &spec.check,
                            target,
                            Duration::from_millis(spec.timing.timeout_ms),
                            previous_cpu,
                        ),
                    )
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    for (i, result) in results {
        let spec = &specs[i];
        let record = out.records.entry(spec.key(i)).or_default();
        record_result(record, result.ok, result.detail, &spec.timing, now_ms);
        if result.cpu.is_some() {
            record.cpu = result.cpu;
        }
    }
    out
}

/// Runs one check within `timeout`.
pub fn run(
    check: &CheckSpec,
    target: &Target,
    timeout: Duration,
    previous_cpu: Option<(u64, u64)>,
) -> CheckResult {
    match check {
        CheckSpec::Process => match procinfo::inspect(target.pid) {
            Some(f) if !f.is_zombie() => pass(format!("process {} is alive", target.pid)),
            Some(_) => fail(format!("process {} is a zombie", target.pid)),
            None => fail(format!("process {} does not exist", target.pid)),
        },
        CheckSpec::LogActivity { idle_secs } => {
            let Some(path) = &target.log_path else {
                return fail("no log file to watch");
            };
            // A fresh worker has until idle_secs after its start to write.
            let last = mtime(path).map_or(target.started_at, |m| m.max(target.started_at));
            let idle = age(last);
            if idle > *idle_secs {
                fail(format!("no log output for {idle}s (limit {idle_secs}s)"))
            } else {
                pass(format!("log written {idle}s ago"))
            }
        }
        CheckSpec::Heartbeat { ttl_secs, .. } => {
            let Some(path) = &target.heartbeat_path else {
                return fail("no heartbeat file configured");
            };
            match mtime(path) {
                Some(m) if age(m) <= *ttl_secs => pass(format!("heartbeat {}s ago", age(m))),
                Some(m) => fail(format!(
                    "heartbeat expired: last beat {}s ago (ttl {ttl_secs}s)",
                    age(m)
                )),
                None if age(target.started_at) <= *ttl_secs => {
                    pass("no heartbeat yet, within the ttl of the start")
                }
                None => fail(format!(
                    "heartbeat expired: no heartbeat file {} after {ttl_secs}s",
                    path.display()
                )),
            }
        }
        CheckSpec::TaskProgress { stall_secs } => {
            if !target.tasks_open {
                return pass("no open task");
            }
            let last = target
                .last_task_change
                .map_or(target.started_at, |t| t.max(target.started_at));
            let stalled = age(last);
            if stalled > *stall_secs {
                fail(format!(
                    "no progress: no task status change for {stalled}s (limit {stall_secs}s)"
                ))
            } else {
                pass(format!("last task change {stalled}s ago"))
            }
        }
        CheckSpec::MaxRuntime { max_secs } => {
            let up = age(target.started_at);
            if up > *max_secs {
                fail(format!("over max runtime: up {up}s (limit {max_secs}s)"))
            } else {
                pass(format!("up {up}s"))
            }
        }
        CheckSpec::MinUptime { secs } => {
            let up = age(target.started_at);
            match procinfo::inspect(target.pid) {
                Some(f) if !f.is_zombie() && up >= *secs => pass(format!("up {up}s")),
                Some(f) if !f.is_zombie() => fail(format!("up {up}s of the minimum {secs}s")),
                _ => fail(format!(
                    "died after {up}s, before the minimum uptime of {secs}s"
                )),
            }
        }
        CheckSpec::Rss { max_mb } => {
            let kb = group_rss_kb(target.pid);
            let mb = kb / 1024;
            if mb > *max_mb {
                fail(format!(
                    "resident memory {mb} MiB over the limit of {max_mb} MiB"
                ))
            } else {
                pass(format!("resident memory {mb} MiB"))
            }
        }
        CheckSpec::Cpu { max_percent } => {
            let now_ms = crate::clock::now_ms();
            let ticks = group_cpu_ticks(target.pid);
            let mut result = match previous_cpu {
                Some((before, at)) if now_ms > at && ticks >= before => {
                    let secs_used = (ticks - before) as f64 / ticks_per_second() as f64;
                    let percent = secs_used / ((now_ms - at) as f64 / 1000.0) * 100.0;
                    if percent > *max_percent {
                        fail(format!(
                            "CPU {percent:.0}% over the limit of {max_percent:.0}%"
                        ))
                    } else {
                        pass(format!("CPU {percent:.0}%"))
                    }
                }
                _ => pass("first CPU sample"),
            };
            result.cpu = Some((ticks, now_ms));
            result
        }
        CheckSpec::Exec { command } => exec(command, &target.cwd, timeout, target.pid),
        CheckSpec::Tcp { address } => match connect(address, timeout) {
            Ok(_) => pass(format!("connected to {address}")),
            Err(e) => fail(format!("cannot connect to {address}: {e}")),
        },
        CheckSpec::Http { url } => http_get(url, timeout),
        CheckSpec::Docker { container } => docker_state(container, timeout),
    }
}

fn ticks_per_second() -> u64 {
    #[cfg(target_os = "linux")]
    {
        procfs::ticks_per_second()
    }
    #[cfg(not(target_os = "linux"))]
    {
        100
    }
}

/// Members of the worker's process group, or the worker alone.
fn group_members(pid: i32) -> Vec<i32> {
    let Some(leader) = procinfo::inspect(pid) else {
        return Vec::new();
    };
    if leader.pgrp != pid {
        return vec![pid];
    }
    procinfo::all_facts()
        .into_iter()
        .filter(|f| f.pgrp == pid && !f.is_zombie())
        .map(|f| f.pid)
        .collect()
}

fn group_rss_kb(pid: i32) -> u64 {
    #[cfg(target_os = "linux")]
    if !procinfo::portable() {
        return group_members(pid)
            .into_iter()
            .filter_map(|p| procfs::process::Process::new(p).ok()?.status().ok()?.vmrss)
            .sum();
    }
    // The portable backend (macOS): `ps` per member.
    group_members(pid)
        .into_iter()
        .filter_map(|p| procinfo::usage(p).map(|(rss, _)| rss))
        .sum()
}

fn group_cpu_ticks(pid: i32) -> u64 {
    #[cfg(target_os = "linux")]
    if !procinfo::portable() {
        return group_members(pid)
            .into_iter()
            .filter_map(|p| procfs::process::Process::new(p).ok()?.stat().ok())
            .map(|s| s.utime + s.stime)
            .sum();
    }
    let ticks = ticks_per_second() as f64;
    group_members(pid)
        .into_iter()
        .filter_map(|p| procinfo::usage(p).map(|(_, cpu)| (cpu * ticks) as u64))
        .sum()
}

fn exec(command: &[String], cwd: &Path, timeout: Duration, pid: i32) -> CheckResult {
    let Some((program, args)) = command.split_first() else {
        return fail("empty command");
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .env("MONITOR_WORKER_PID", pid.to_string());
    match run_bounded(&mut cmd, None, timeout) {
        Ok(done) if done.status.success() => pass(format!("{program} exited 0")),
        Ok(done) => fail(format!("{program} failed ({})", done.status)),
        Err(BoundedError::TimedOut(_)) => fail(format!(
            "{program} timed out after {}ms",
            timeout.as_millis()
        )),
        Err(e) => fail(format!("{program}: {e}")),
    }
}

fn connect(address: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "address resolves to nothing");
    for addr in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A plain HTTP/1.1 GET (http:// only): the status line decides.
fn http_get(url: &str, timeout: Duration) -> CheckResult {
    let Some(rest) = url.strip_prefix("http://") else {
        return fail(format!("{url}: only http:// URLs can be probed"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let started = Instant::now();
    let mut stream = match connect(&address, timeout) {
        Ok(s) => s,
        Err(e) => return fail(format!("GET {url}: cannot connect: {e}")),
    };
    let left = timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
    let _ = stream.set_read_timeout(Some(left));
    let _ = stream.set_write_timeout(Some(left));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: monitor-workers\r\nConnection: close\r\n\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return fail(format!("GET {url}: {e}"));
    }
    let mut head = [0u8; 256];
    let mut got = 0;
    while got < head.len() && !head[..got].contains(&b'\n') {
        match stream.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => {
                return fail(format!(
                    "GET {url}: no answer within {}ms ({e})",
                    timeout.as_millis()
                ))
            }
        }
    }
    let line = String::from_utf8_lossy(&head[..got]);
    let status: Option<u16> = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    match status {
        Some(code @ 200..=399) => pass(format!("GET {url}: {code}")),
        Some(code) => fail(format!("GET {url}: {code}")),
        None => fail(format!("GET {url}: not an HTTP answer")),
    }
}

/// Asks the `docker` CLI for the container's state and health.
pub fn docker_state(container: &str, timeout: Duration) -> CheckResult {
    let format = "{{.State.Status}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}";
    let out =
        match crate::process::docker::run(&["inspect", "--format", format, container], timeout) {
            Ok(out) => out,
            Err(e) => return fail(e),
        };
    let (state, health) = out.split_once('|').unwrap_or((out.as_str(), ""));
    match (state, health) {
        ("running", "") => pass(format!("container {container} running")),
        ("running", "healthy") => pass(format!("container {container} running, healthy")),
        ("running", h) => fail(format!("container {container} running but {h}")),
        (s, _) => fail(format!("container {container} is {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn target() -> Target {
        Target {
            pid: std::process::id() as i32,
            started_at: SystemTime::now() - Duration::from_secs(100),
            log_path: None,
            heartbeat_path: None,
            last_task_change: None,
            tasks_open: true,
            cwd: std::env::temp_dir(),
        }
    }

    #[test]
    fn time_based_checks() {
        let t = target();
        let t1 = Duration::from_secs(1);
        assert!(!run(&CheckSpec::MaxRuntime { max_secs: 50 }, &t, t1, None).ok);
        assert!(run(&CheckSpec::MaxRuntime { max_secs: 500 }, &t, t1, None).ok);
        assert!(run(&CheckSpec::MinUptime { secs: 50 }, &t, t1, None).ok);
        assert!(!run(&CheckSpec::TaskProgress { stall_secs: 50 }, &t, t1, None).ok);
        let idle = Target {
            tasks_open: false,
            ..t.clone()
        };
        assert!(run(&CheckSpec::TaskProgress { stall_secs: 50 }, &idle, t1, None).ok);
        assert!(run(&CheckSpec::Process, &t, t1, None).ok);
        let cpu = run(
            &CheckSpec::Cpu {
                max_percent: 1000.0,
            },
            &t,
            t1,
            None,
        );
        assert!(cpu.ok && cpu.cpu.is_some());
    }

    #[test]
    fn tcp_and_http_against_real_listeners() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for (i, conn) in listener.incoming().take(3).enumerate() {
                let mut conn = conn.unwrap();
                let mut buf = [0u8; 512];
                let _ = conn.read(&mut buf);
                let status = if i == 1 {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = conn.write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                );
            }
        });
        let t = target();
        let second = Duration::from_secs(2);
        assert!(
            run(
                &CheckSpec::Tcp {
                    address: addr.to_string()
                },
                &t,
                second,
                None
            )
            .ok
        );
        assert!(
            run(
                &CheckSpec::Http {
                    url: format!("http://{addr}/health")
                },
                &t,
                second,
                None
            )
            .ok
        );
        let bad = run(
            &CheckSpec::Http {
                url: format!("http://{addr}/health"),
            },
            &t,
            second,
            None,
        );
        assert!(!bad.ok && bad.detail.contains("503"), "{bad:?}");
        server.join().unwrap();
        // Nothing listens there any more.
        assert!(
            !run(
                &CheckSpec::Tcp {
                    address: addr.to_string()
                },
                &t,
                second,
                None
            )
            .ok
        );
    }

    #[test]
    fn a_hanging_http_server_is_a_failure_within_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let started = Instant::now();
        let r = run(
            &CheckSpec::Http {
                url: format!("http://{addr}/"),
            },
            &target(),
            Duration::from_millis(300),
            None,
        );
        assert!(!r.ok);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded by the timeout"
        );
        drop(listener);
    }

    #[test]
    fn exec_checks_exit_codes_and_timeouts() {
        let t = target();
        let second = Duration::from_secs(1);
        assert!(
            run(
                &CheckSpec::Exec {
                    command: vec!["true".into()]
                },
                &t,
                second,
                None
            )
            .ok
        );
        assert!(
            !run(
                &CheckSpec::Exec {
                    command: vec!["false".into()]
                },
                &t,
                second,
                None
            )
            .ok
        );
        let started = Instant::now();
        let slow = run(
            &CheckSpec::Exec {
                command: vec!["sleep".into(), "5".into()],
            },
            &t,
            Duration::from_millis(200),
            None,
        );
        assert!(!slow.ok && slow.detail.contains("timed out"));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
