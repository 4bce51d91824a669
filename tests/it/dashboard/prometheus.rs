//! The shipped Prometheus files against the real programs: `promtool check
//! rules` and `promtool test rules` on the alerts, and a real Prometheus on
//! loopback scraping the daemon's `/metrics` with the shipped scrape config.
//! Need Debian's prometheus (`scripts/ci-deps.sh`), so `#[ignore]`d in plain
//! `cargo test` and run by `.ci/run`.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::{free_port, http, project_with_streams, serve, templates, wait_port};
use crate::helpers::*;

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(templates())
        .output()
        .expect("promtool runs (Debian package prometheus)");
    assert!(
        out.status.success(),
        "promtool {args:?}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs promtool (Debian package prometheus); run by .ci/run"]
fn the_alert_rules_pass_promtool() {
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts.test.yml"]);
}

#[test]
#[ignore = "needs prometheus (Debian package); run by .ci/run"]
fn a_real_prometheus_scrapes_the_monitor() {
    let (p, _live) = project_with_streams();
    let s = serve(
        &p,
        &["--daemon", "--interval", "1", "--http", "127.0.0.1:0"],
    );
    let dir = p.root.join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), &s.token).unwrap();
    // The shipped scrape config, pointed at this monitor.
    let shipped = std::fs::read_to_string(templates().join("prometheus.yml")).unwrap();
    let config = shipped
        .replace(
            "/etc/prometheus/monitor-workers.token",
            &dir.join("token").display().to_string(),
        )
        .replace(
            "'host-a.example:9464', 'host-b.example:9464'",
            &format!("'{}'", s.addr),
        )
        .replace("scrape_interval: 30s", "scrape_interval: 1s")
        .replace(
            "- alerts.yml",
            &format!("- {}", templates().join("alerts.yml").display()),
        );
    assert!(
        config.contains(&s.addr),
        "the template names its targets as expected:\n{config}"
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let mut cmd = p.command("prometheus");
    cmd.arg(format!(
        "--config.file={}",
        dir.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.join("data").display()
    ))
    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap());
    p.spawn(cmd);
    assert!(wait_port(port), "prometheus did not listen");
    let prom = format!("127.0.0.1:{port}");
    let mut last = String::new();
    let up = wait_for(
        || {
            let (_, body) = http(&prom, "GET", "/api/v1/targets", &[], "");
            last = body;
            let v: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
            v["data"]["activeTargets"].as_array().is_some_and(|t| {
                t.iter().any(|t| {
                    t["health"] == "up"
                        && t["scrapeUrl"].as_str().is_some_and(|u| u.contains(&s.addr))
                })
            })
        },
        Duration::from_secs(30),
    );
    assert!(
        up,
        "the target is not up: {last}\n{}",
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    );
    let (_, body) = http(
        &prom,
        "GET",
        "/api/v1/query?query=monitor_workers_up",
        &[],
        "",
    );
    assert!(body.contains("\"monitor_workers_up\""), "{body}");
    p.stop_daemon(&s.daemon);
}
