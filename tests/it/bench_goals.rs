//! `scripts/bench`'s goals table: each performance goal judged from the
//! figures of a run, by the bench's own code (loaded by python3).

use std::path::Path;
use std::process::Command;

use crate::helpers::MANIFEST;

/// The bench's `goals()` on figures given as Python literals: one
/// `goal|measured|met` line per goal.
fn goals(checks: &str, idles: &str, restarts: &str, mass: &str) -> Vec<String> {
    let bench = Path::new(MANIFEST).join("scripts/bench");
    let program = format!(
        r#"
import importlib.machinery, importlib.util, sys
loader = importlib.machinery.SourceFileLoader("bench", sys.argv[1])
spec = importlib.util.spec_from_loader("bench", loader)
bench = importlib.util.module_from_spec(spec)
loader.exec_module(bench)
nan = float("nan")
for goal, measured, met in bench.goals({checks}, {idles}, {restarts}, {mass}):
    print(f"{{goal}}|{{measured}}|{{met}}")
"#
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(program)
        .arg(&bench)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn each_goal_is_judged_from_its_figure() {
    let met = goals(
        r#"[{"streams": 1000, "x_floor": 1.42, "median_ms": 22.4, "rss_mb": 9.0},
            {"streams": 10000, "x_floor": 0.93, "median_ms": 128.0, "rss_mb": 15.5}]"#,
        r#"[{"workers": 12, "cpu_pct": 0.004}, {"workers": 1000, "cpu_pct": 0.047}]"#,
        r#"[{"streams": 10, "median_ms": 509.0}, {"streams": 5000, "median_ms": 510.4}]"#,
        r#"{"dead": 200, "secs": 0.82}"#,
    );
    assert_eq!(
        met,
        [
            "one-shot check / floor, 1000 streams: ≤ 1.5×|1.42×|True",
            "one-shot check / floor, 10000 streams: ≤ 1.5×|0.93×|True",
            "one-shot check, 10000 streams: < 150 ms|128.0 ms|True",
            "peak RSS, 10000 streams: < 16 MB|15.5 MB|True",
            "idle daemon, 1000 workers: < 0.1% of a core|0.047%|True",
            "idle daemon, 12 and 1000 workers: ≤ 0.05 points apart|0.043 points|True",
            "restart step, 5000 streams: the same as 10|510.4 / 509.0 ms|True",
            "200 dead streams restarted, one wrapper hanging: < 1 s|0.82 s|True",
        ]
    );

    let missed = goals(
        r#"[{"streams": 1000, "x_floor": 1.51, "median_ms": 30.0, "rss_mb": 9.0},
            {"streams": 10000, "x_floor": 1.2, "median_ms": 150.0, "rss_mb": 16.0}]"#,
        r#"[{"workers": 12, "cpu_pct": 0.004}, {"workers": 1000, "cpu_pct": 0.1}]"#,
        r#"[{"streams": 10, "median_ms": 500.0}, {"streams": 5000, "median_ms": 526.0}]"#,
        r#"{"dead": 200, "secs": nan}"#,
    );
    let verdicts: Vec<&str> = missed
        .iter()
        .map(|l| l.rsplit('|').next().unwrap())
        .collect();
    // Only the 10 000-stream ratio (1.2×) is within its goal.
    assert_eq!(
        verdicts,
        ["False", "True", "False", "False", "False", "False", "False", "False"]
    );

    // A run that measured nothing judges nothing; one size, only its goals.
    assert!(goals("[]", "[]", "None", "None").is_empty());
    let one = goals(
        r#"[{"streams": 1000, "x_floor": 1.0, "median_ms": 20.0, "rss_mb": 9.0}]"#,
        "[]",
        "None",
        "None",
    );
    assert_eq!(
        one,
        ["one-shot check / floor, 1000 streams: ≤ 1.5×|1.00×|True"]
    );
}
