//! How long redacting a 1 MB worker log tail takes: builds a log of
//! realistic lines (tool output, JSON API errors, paths, timestamps, with a
//! secret every few hundred lines), redacts it a few times and prints the
//! median, as `redact_1mb_median_ms=<ms> runs=<n> bytes=<n>`, for
//! scripts/bench. `cargo run --release --example redact_bench [RUNS]`.

use std::time::Instant;

use monitor_workers::selfheal::redact::redact;

const TARGET_BYTES: usize = 1 << 20;

fn log_tail() -> String {
    let lines = [
        "2024-01-15T10:30:00.123Z INFO reading file /home/bob/proj/src/main.rs (4213 bytes)",
        "[tool] cargo test --lib tick -- --test-threads=2",
        "test tick::tests::restarts_a_dead_worker ... ok",
        "API Error: 529 {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}",
        "  --> src/tick.rs:912:40 | let signature = selfheal::signature::signature(obs.exit_code, None);",
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Now let me check the token usage: max_tokens=4096, input_tokens: 1200\"}]}",
        "commit a1b2c3d4e5 fixed the path handling; see https://github.com/org/repo/pull/12",
        "warning: unused variable `password_hint` at src/config.rs:88:9",
    ];
    let secrets = [
        "export ANTHROPIC_API_KEY=sk-ant-api03-Zx9SECRETSECRETSECRET0123456789",
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.c2VjcmV0cGF5bG9hZA.c2lnbmF0dXJl",
        "git push https://ci:ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789@github.com/o/r main",
        "aws_access_key_id=AKIAIOSFODNN7EXAMPLE aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "{\"password\": \"hunter2\", \"user\": \"bob\"}",
    ];
    let mut text = String::with_capacity(TARGET_BYTES + 200);
    let mut n = 0;
    while text.len() < TARGET_BYTES {
        let line = if n % 300 == 299 {
            secrets[(n / 300) % secrets.len()]
        } else {
            lines[n % lines.len()]
        };
        text.push_str(line);
        text.push('\n');
        n += 1;
    }
    text
}

fn main() {
    let runs: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().unwrap_or_else(|_| {
            eprintln!("redact_bench: RUNS must be a positive number, not {arg:?}");
            std::process::exit(2)
        }),
        None => 15,
    };
    let text = log_tail();
    let warm = redact(&text); // compiles the rules once
    assert!(
        !warm.contains("hunter2") && warm.contains("[REDACTED]"),
        "the log's secrets were not redacted"
    );
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(redact(std::hint::black_box(&text)));
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "redact_1mb_median_ms={median:.2} runs={} bytes={}",
        times.len(),
        text.len()
    );
}
