//! Finding the project (SPEC 1.1) and usage errors.

use std::fs;

use crate::helpers::*;

#[test]
fn run_from_a_subdirectory_finds_the_project() {
    let p = TestProject::new();
    p.dead_stream("api");
    let deep = p.proj.join("src/deep/er");
    fs::create_dir_all(&deep).unwrap();
    p.run_in(&deep, &[])
        .expect_code(1)
        .stdout_has("Found 1 dead worker(s): api");
}

#[test]
fn outside_any_project_exits_3_and_says_how_to_point_at_one() {
    let p = TestProject::new();
    let r = p.run_in(&p.home.clone(), &[]);
    r.expect_code(3).stderr_has("--project-root").no_panic();
    assert_eq!(
        r.stderr.trim().lines().count(),
        1,
        "one clear line: {}",
        r.stderr
    );
}

#[test]
fn project_root_flag_and_env_work_from_elsewhere() {
    let p = TestProject::new();
    p.dead_stream("api");
    let root = p.proj.display().to_string();
    p.run_in(&p.home.clone(), &["--project-root", &root])
        .expect_code(1)
        .stdout_has("Found 1 dead worker(s): api");

    let mut cmd = p.monitor();
    cmd.current_dir(&p.home)
        .env("MONITOR_WORKERS_PROJECT_ROOT", &root);
    cmd.assert()
        .code(1)
        .stdout(predicates::str::contains("Found 1 dead worker(s): api"));
}

/// The drop-in location: the binary in `.claude/orchestrator/` finds its
/// project wherever it is run from, like the original script.
#[test]
fn binary_in_the_orchestrator_dir_finds_its_project() {
    let p = TestProject::new();
    p.dead_stream("api");
    let copy = p.orch.join("monitor-workers");
    fs::copy(BIN, &copy).unwrap();
    let mut cmd = p.command(&copy);
    cmd.current_dir("/");
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Found 1 dead worker(s): api"), "{stdout}");
}

#[test]
fn bad_usage_exits_2() {
    let p = TestProject::new();
    for args in [
        &["--interval", "0"][..],
        &["--max-restarts", "abc"],
        &["--interval", "abc"],
        &["--busy-timeout", "-1"],
        &["--no-such-flag"],
    ] {
        let r = p.run(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(!r.stderr.is_empty(), "{args:?}");
    }
    p.run(&["--daemon", "--interval", "0"]).expect_code(2);
    p.run(&["reset", "../../evil"])
        .expect_code(2)
        .stderr_has("invalid stream id");
    assert!(p.monitor_log().is_empty(), "a usage error runs nothing");
}
