//! A monitor killed with -9 while a wrapper is still starting leaves a
//! restart unfinished in the journal: the next monitor finds that wrapper by
//! its spawn nonce and adopts it, rather than starting a twin beside it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::helpers::*;

/// A wrapper that takes `delay` seconds before it writes its PID file.
fn slow_wrapper(p: &TestProject, delay: u32) {
    let script = format!(
        "#!/usr/bin/env bash\n\
         # Starts slowly: the PID file appears only after {delay}s.\n\
         sleep {delay}\n\
         echo $$ > \"$2\"\n\
         sleep 600 &\n\
         wait\n"
    );
    fs::write(p.wrapper(), script).unwrap();
    fs::set_permissions(p.wrapper(), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_wrapper_left_starting_by_a_killed_daemon_is_adopted_not_twinned() {
    let p = TestProject::new();
    p.dead_stream("api");
    slow_wrapper(&p, 3);
    let d = p.spawn_daemon(&[
        "--daemon",
        "--auto-restart",
        "--backoff-base",
        "0",
        "--interval",
        "30",
    ]);
    assert!(
        wait_for(|| p.live_wrappers("api").len() == 1, SOON),
        "the daemon started a wrapper\n{}",
        p.monitor_log()
    );
    let first = p.live_wrappers("api")[0];
    assert!(
        p.read_pid_file("api").is_none(),
        "the wrapper is still starting"
    );
    p.signal_ours(d.pid, Signal::SIGKILL);
    p.wait_exit(d.pid, SOON).expect("the daemon died");

    let run = p.run(&["--auto-restart", "--backoff-base", "0"]);
    run.no_panic().stdout_has("adopted");
    assert_eq!(
        p.live_wrappers("api"),
        [first],
        "no twin beside the adopted wrapper"
    );
    assert!(
        wait_for(
            || p.read_pid_file("api") == Some(first),
            Duration::from_secs(10)
        ),
        "the adopted wrapper wrote its PID file"
    );
    // Once it runs, later checks see it as the stream's worker.
    p.run(&["--auto-restart", "--backoff-base", "0"])
        .expect_code(0)
        .stdout_has("All workers healthy");
    assert_eq!(p.live_wrappers("api"), [first]);
    let adopted: Vec<_> = p
        .events()
        .into_iter()
        .filter(|e| e["event"] == "adopted" && e["stream"] == "api")
        .collect();
    assert_eq!(adopted.len(), 1, "{:?}", p.events());
    assert_eq!(adopted[0]["pid"], first);
}
