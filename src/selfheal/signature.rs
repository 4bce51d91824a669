//! Failure signatures: what kind of failure ended a worker (rate limit, auth,
//! hang, killed, crash) and one short normalised line saying which, with a
//! stable fingerprint. Two runs that fail the same way — at other times,
//! with other PIDs, paths, request ids and numbers — get equal signatures,
//! which is what lets the self-heal circuit breaker see "the same failure
//! again". Pure: facts in, signature out; the log tail is redacted first.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

use serde::{Deserialize, Serialize};

use super::redact::redact;

mod normalise;
pub use normalise::normalise;

/// What ended a worker, in the order `classify` tries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureClass {
    /// The API refused for load or quota (429, overloaded, usage limit).
    RateLimit,
    /// The API or a host refused the credentials (401/403, not logged in).
    Auth,
    /// The worker exited non-zero, panicked or died of a crash signal.
    Crash,
    /// The worker was ended by a signal it did not raise itself.
    Killed,
    /// The supervisor stopped it: idle, no progress, heartbeat, max runtime.
    Hang,
    /// Nothing said what happened.
    Unknown,
}

impl FailureClass {
    /// The kebab-case name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::RateLimit => "rate-limit",
            FailureClass::Auth => "auth",
            FailureClass::Crash => "crash",
            FailureClass::Killed => "killed",
            FailureClass::Hang => "hang",
            FailureClass::Unknown => "unknown",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failure, folded so that repeats compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub class: FailureClass,
    /// `<exit description>: <normalised telling line>`, redacted, at most
    /// [`MAX_SIGNATURE_TEXT_CHARS`] characters.
    pub text: String,
    /// 16 hex digits of FNV-1a 64 over the class and the text.
    pub fingerprint: String,
}

/// The longest signature text; longer ones are cut.
pub const MAX_SIGNATURE_TEXT_CHARS: usize = 300;

/// Only the end of the tail decides the class: earlier lines are the
/// worker's own work, whose words (a login page, a rate limiter, a test
/// printing "error:") must not.
const CLASSIFY_WINDOW_LINES: usize = 30;

// ---------------------------------------------------------------------------
// Keywords, matched on lower-cased text

/// Numbers and words that count only whole: `14290` and `429ms` are not 429.
macro_rules! whole {
    ($words:literal) => {
        concat!("(?:^|[^a-z0-9])(?:", $words, ")(?:$|[^a-z0-9])")
    };
}

/// The words that tell each class, one rule per class; `classify` decides
/// which one is asked where (the end of the tail or the reason).
#[rustfmt::skip]
const KEYWORDS: &[(FailureClass, &str)] = &[
    // `rate_limit_error` and `quota_exceeded` count.
    (FailureClass::RateLimit, concat!(r"rate[ _-]?limit|too many requests|overloaded|quota|usage limit|", whole!("429"))),
    (FailureClass::Auth, concat!(r"unauthori[sz]ed|invalid api key|invalid x-api-key|invalid_api_key|authentication|permission denied \(publickey\)|not logged in|", whole!("401|403|login"))),
    // What the supervisor writes in the reason when it stops a stuck worker.
    (FailureClass::Hang, whole!("idle|no log output|no output|no log growth|no progress|no task progress|stalled|heartbeat|max[ _-]runtime|stuck|hung")),
    (FailureClass::Killed, "killed|signal|sigkill|sigterm|terminated"),
    (FailureClass::Crash, "panic|traceback|segmentation fault|core dumped|error:|fatal error|unhandled exception|uncaught exception"),
];

static KEYWORD_REGEXES: LazyLock<Vec<(FailureClass, Regex)>> = LazyLock::new(|| {
    KEYWORDS
        .iter()
        .map(|(class, pattern)| (*class, Regex::new(pattern).expect("keyword pattern")))
        .collect()
});

/// True when the lower-cased text holds a word of the class.
fn mentions(class: FailureClass, lower: &str) -> bool {
    KEYWORD_REGEXES
        .iter()
        .any(|(of, regex)| *of == class && regex.is_match(lower))
}

/// Signals a program raises on itself when it crashes (SIGILL, SIGTRAP,
/// SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGSYS): a crash, not a kill. Every
/// other signal (SIGKILL, SIGTERM, SIGINT, SIGHUP, ...) came from outside.
const CRASH_SIGNALS: &[i32] = &[4, 5, 6, 7, 8, 11, 31];

fn is_crash_signal(signal: i32) -> bool {
    CRASH_SIGNALS.contains(&signal)
}

/// The signal behind a shell-style exit code 128 + n.
fn signal_of_exit_code(exit_code: i32) -> Option<i32> {
    (129..=159).contains(&exit_code).then(|| exit_code - 128)
}

fn last_lines(text: &str, count: usize) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].to_vec()
}

/// The class of a failure. Precedence, first match wins:
/// 1. rate-limit — the end of the tail says 429, rate limit, too many
///    requests, overloaded, quota or usage limit (a rate-limited worker that
///    then exited 1 is rate-limited, not crashed);
/// 2. auth — 401, 403, unauthorized, invalid api key, authentication,
///    permission denied (publickey), not logged in, login;
/// 3. hang — the reason says the supervisor stopped it as stuck (idle, no
///    log output, no progress, heartbeat, max runtime), even though it then
///    died of the supervisor's signal;
/// 4. killed — a signal other than a crash signal, exit code 128 + such a
///    signal (137, 143, 130, ...), or a reason mentioning killed / signal;
/// 5. crash — a non-zero exit code, a crash signal (SIGSEGV, SIGABRT, ...),
///    or panic / traceback / segmentation fault / error: in the tail;
/// 6. unknown.
///
/// Only the last [`CLASSIFY_WINDOW_LINES`] lines of the tail are read, and
/// only the reason decides hang and killed: "rate limit" in a reason is the
/// supervisor's own restart limit, not the API's.
pub fn classify(
    exit_code: Option<i32>,
    signal: Option<i32>,
    reason: &str,
    tail: &str,
) -> FailureClass {
    let window = last_lines(tail, CLASSIFY_WINDOW_LINES)
        .join("\n")
        .to_lowercase();
    let reason = reason.to_lowercase();
    let crash_signal = signal
        .or_else(|| exit_code.and_then(signal_of_exit_code))
        .is_some_and(is_crash_signal);

    if mentions(FailureClass::RateLimit, &window) {
        FailureClass::RateLimit
    } else if mentions(FailureClass::Auth, &window) {
        FailureClass::Auth
    } else if mentions(FailureClass::Hang, &reason) {
        FailureClass::Hang
    } else if was_killed(exit_code, signal, crash_signal, &reason) {
        FailureClass::Killed
    } else if crash_signal
        || exit_code.is_some_and(|code| code != 0)
        || mentions(FailureClass::Crash, &window)
    {
        FailureClass::Crash
    } else {
        FailureClass::Unknown
    }
}

fn was_killed(
    exit_code: Option<i32>,
    signal: Option<i32>,
    crash_signal: bool,
    reason: &str,
) -> bool {
    if crash_signal {
        return false;
    }
    signal.is_some()
        || exit_code.and_then(signal_of_exit_code).is_some()
        || mentions(FailureClass::Killed, reason)
}

/// How the process ended, as the signature text starts.
fn exit_description(exit_code: Option<i32>, signal: Option<i32>) -> String {
    match (signal, exit_code) {
        (Some(signal), _) => format!("signal {signal}"),
        (None, Some(code)) => format!("exit {code}"),
        (None, None) => "no exit status".to_string(),
    }
}

fn is_wrapper_line(line: &str) -> bool {
    line.trim_start().starts_with("[wrapper]")
}

/// The line that best says what went wrong: the last one carrying the
/// class's keywords, else the last non-empty line the worker itself wrote.
/// A hang is the supervisor's finding, and the tail of a stalled worker is
/// whatever it last happened to print, so its reason is the telling line;
/// a kill with no trace in the log falls back on the reason too.
fn telling_line<'a>(class: FailureClass, reason: &'a str, lines: &[&'a str]) -> &'a str {
    let has_reason = !reason.trim().is_empty();
    if class == FailureClass::Hang && has_reason {
        return reason;
    }
    // A hang's words are the supervisor's, never the worker's.
    let carries_keywords =
        |line: &str| class != FailureClass::Hang && mentions(class, &line.to_lowercase());
    if let Some(line) = lines.iter().rev().find(|line| carries_keywords(line)) {
        return line;
    }
    if class == FailureClass::Killed && has_reason {
        return reason;
    }
    lines
        .iter()
        .rev()
        .find(|line| !line.trim().is_empty() && !is_wrapper_line(line))
        .copied()
        .unwrap_or(reason)
}

fn truncate_chars(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => text[..cut].to_string(),
        None => text.to_string(),
    }
}

/// FNV-1a 64: tiny, stable across builds and platforms (unlike std's
/// `DefaultHasher`), enough to tell a few hundred signatures apart.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

/// The signature of a failure: the tail and the reason are redacted, the
/// class decided (see [`classify`]), the telling line normalised and put
/// after the exit description (`exit 1` / `signal 9` / `no exit status`),
/// and the class and text hashed.
pub fn signature(
    exit_code: Option<i32>,
    signal: Option<i32>,
    reason: &str,
    tail: &str,
) -> Signature {
    let tail = redact(tail);
    let reason = redact(reason);
    let class = classify(exit_code, signal, &reason, &tail);
    let window = last_lines(&tail, CLASSIFY_WINDOW_LINES);
    let line = normalise(telling_line(class, &reason, &window));
    let exit = exit_description(exit_code, signal);
    let text = if line.is_empty() {
        exit
    } else {
        truncate_chars(&format!("{exit}: {line}"), MAX_SIGNATURE_TEXT_CHARS)
    };
    let fingerprint = format!("{:016x}", fnv1a_64(format!("{class}\n{text}").as_bytes()));
    Signature {
        class,
        text,
        fingerprint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a signature is made from: exit code, signal, reason, log tail.
    type Failure<'a> = (Option<i32>, Option<i32>, &'a str, &'a str);
    /// A classification row: name, exit code, signal, reason, log tail, class.
    type ClassifyRow<'a> = (
        &'a str,
        Option<i32>,
        Option<i32>,
        &'a str,
        &'a str,
        FailureClass,
    );
    /// A signature-text row: exit code, signal, reason, log tail, class, text.
    type TextRow<'a> = (
        Option<i32>,
        Option<i32>,
        &'a str,
        &'a str,
        FailureClass,
        &'a str,
    );

    /// Every class's keywords: a line that names the class, and a near
    /// miss that must not.
    #[rustfmt::skip]
    #[test]
    fn each_keyword_rule_has_its_words_and_spares_its_near_miss() {
        let rows: Vec<(FailureClass, &str, &str)> = vec![
            (FailureClass::RateLimit, "api error: 429 {\"type\":\"rate_limit_error\"}", "wrote 14290 bytes in 429ms"),
            (FailureClass::Auth, "git@github.com: permission denied (publickey).", "editing the loginpage component"),
            (FailureClass::Hang, "no log output for 1800s", "max restart limit (2) reached"),
            (FailureClass::Killed, "oom killed", "all done"),
            (FailureClass::Crash, "thread 'main' panicked at src/main.rs:3:5", "compiled without errors"),
        ];
        let classes: Vec<FailureClass> = KEYWORDS.iter().map(|(class, _)| *class).collect();
        assert_eq!(classes, rows.iter().map(|row| row.0).collect::<Vec<_>>(), "one row per rule, in order");
        for (class, words, near_miss) in rows {
            assert!(mentions(class, words), "{class}: {words:?}");
            assert!(!mentions(class, near_miss), "{class}: {near_miss:?}");
        }
    }

    #[rustfmt::skip]
    #[test]
    fn classify_by_precedence() {
        let login_then_work = format!("editing the login page\n{}", "ok\n".repeat(40));
        let cases: Vec<ClassifyRow> = vec![
            ("429 then exit 1", Some(1), None, "dead", "working\nAPI Error: 429 {\"type\":\"rate_limit_error\"}", FailureClass::RateLimit),
            ("overloaded", Some(1), None, "dead", "API Error: 529 {\"type\":\"overloaded_error\"}", FailureClass::RateLimit),
            ("usage limit", Some(0), None, "dead", "Claude AI usage limit reached|1700000000", FailureClass::RateLimit),
            ("quota", Some(2), None, "", "insufficient_quota", FailureClass::RateLimit),
            ("401", Some(1), None, "dead", "API Error: 401 {\"type\":\"authentication_error\"}", FailureClass::Auth),
            ("invalid api key", Some(1), None, "", "Invalid API key · Please run /login", FailureClass::Auth),
            ("ssh publickey", Some(128), None, "", "git@github.com: Permission denied (publickey).", FailureClass::Auth),
            ("not logged in", Some(1), None, "", "Error: Not logged in", FailureClass::Auth),
            ("idle, then SIGTERM", None, Some(15), "no log output for 1800s", "thinking...", FailureClass::Hang),
            ("heartbeat", Some(143), None, "heartbeat expired", "", FailureClass::Hang),
            ("max runtime", None, None, "over max runtime (4h)", "", FailureClass::Hang),
            ("no task progress", None, Some(15), "no task progress for 2h", "", FailureClass::Hang),
            ("the probes' own words", None, Some(15), "no progress: no task status change for 3600s (limit 3600s)", "", FailureClass::Hang),
            ("the heartbeat probe's words", Some(143), None, "heartbeat expired: last beat 95s ago (ttl 60s)", "", FailureClass::Hang),
            ("gave up on the restart budget is not a hang", Some(1), None, "max restart limit (2) reached", "", FailureClass::Crash),
            ("sigkill", None, Some(9), "dead", "working", FailureClass::Killed),
            ("exit 137", Some(137), None, "dead", "working", FailureClass::Killed),
            ("exit 143", Some(143), None, "", "", FailureClass::Killed),
            ("reason says killed", None, None, "OOM killed", "", FailureClass::Killed),
            ("sigsegv is a crash", None, Some(11), "dead", "", FailureClass::Crash),
            ("exit 139 is a crash", Some(139), None, "ended by signal", "", FailureClass::Crash),
            ("exit 1", Some(1), None, "dead", "done", FailureClass::Crash),
            ("panic, exit unknown", None, None, "dead", "thread 'main' panicked at src/main.rs:3:5", FailureClass::Crash),
            ("python traceback", None, None, "", "Traceback (most recent call last):", FailureClass::Crash),
            ("clean exit", Some(0), None, "dead", "all done", FailureClass::Unknown),
            ("nothing known", None, None, "no PID file", "", FailureClass::Unknown),
            ("restart rate limit in the reason is not the API's", Some(0), None, "restart rate limit reached", "", FailureClass::Unknown),
            ("429 inside a bigger number does not count", Some(0), None, "", "wrote 14290 bytes in 429ms", FailureClass::Unknown),
            ("a login page in early work does not count", Some(1), None, "dead", &login_then_work, FailureClass::Crash),
        ];
        for (name, exit_code, signal, reason, tail, expected) in cases {
            assert_eq!(
                classify(exit_code, signal, reason, tail),
                expected,
                "case: {name}"
            );
        }
    }

    /// Repeats of one failure, differing in what normalisation folds.
    #[rustfmt::skip]
    #[test]
    fn same_failure_same_signature() {
        let pairs: Vec<(&str, Failure, Failure)> = vec![
            ("rate limit with request ids and times", (Some(1), None, "dead", "2024-01-15T10:30:00Z API Error: 429 request_id=req_011CQx4dZ8fG3kLpR2sT\n[wrapper] 2024-01-15T10:30:01+0000 exited with code 1"), (Some(1), None, "dead", "2024-03-02T23:01:59Z API Error: 429 request_id=req_099ZZa1bC2dE3fG4hI5j\n[wrapper] 2024-03-02T23:02:00+0000 exited with code 1")),
            ("panic in other paths and lines", (Some(101), None, "dead", "thread 'main' panicked at /home/a/x/src/lib.rs:10:5:\nindex out of bounds"), (Some(101), None, "dead", "thread 'main' panicked at /tmp/build-7/src/lib.rs:12:9:\nindex out of bounds")),
            ("killed, other pids", (None, Some(9), "dead", "[wrapper] 2024-01-15T10:30:00+0000 received SIGTERM, sending SIGTERM to worker 1234"), (None, Some(9), "dead", "[wrapper] 2024-01-16T08:00:00+0000 received SIGTERM, sending SIGTERM to worker 98765")),
            ("hang, other durations, other last output", (None, Some(15), "no log output for 1805s", "reading file a.rs"), (None, Some(15), "no log output for 1812s", "running cargo test")),
            ("auth, other keys echoed", (Some(1), None, "", "API Error: 401 invalid x-api-key sk-ant-api03-AAAAAAAAAAAAAAAAAAAA1"), (Some(1), None, "", "API Error: 401 invalid x-api-key sk-ant-api03-BBBBBBBBBBBBBBBBBBBB2")),
            ("crash with other uuids", (Some(1), None, "", "error: task 3f2a9c1e-7b4d-4e8a-9c6f-1d2e3f4a5b6c not found"), (Some(1), None, "", "error: task 0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d not found")),
            ("crash with other hex addresses", (None, Some(11), "", "segmentation fault at 0x7ffe1234 in worker"), (None, Some(11), "", "segmentation fault at 0x55aa9f00 in worker")),
            ("unknown with other counts", (Some(0), None, "dead", "processed 12 files in 3.2s"), (Some(0), None, "dead", "processed 87 files in 41.9s")),
            ("date-style timestamps", (Some(2), None, "", "Mon Jan 15 10:30:00 UTC 2024 fatal error: out of memory"), (Some(2), None, "", "Fri Mar 8 07:05:09 UTC 2024 fatal error: out of memory")),
            ("trailing blank lines and wrapper lines do not matter", (Some(3), None, "", "last words\n\n"), (Some(3), None, "", "last words\n[wrapper] 2024-01-15T10:30:00+0000 exited with code 3\n")),
            ("git shas", (Some(1), None, "", "fatal: bad object a1b2c3d4e5f6"), (Some(1), None, "", "fatal: bad object 0f9e8d7c6b5a")),
        ];
        for (name, (e1, s1, r1, t1), (e2, s2, r2, t2)) in pairs {
            let first = signature(e1, s1, r1, t1);
            let second = signature(e2, s2, r2, t2);
            assert_eq!(first, second, "case: {name}");
        }
    }

    #[rustfmt::skip]
    #[test]
    fn different_failures_differ() {
        let failures: Vec<(Option<i32>, Option<i32>, &str, &str)> = vec![
            (Some(1), None, "dead", "API Error: 429 rate_limit_error"),
            (Some(1), None, "dead", "API Error: 401 authentication_error"),
            (Some(1), None, "dead", "API Error: 403 forbidden, login required"),
            (Some(1), None, "dead", "thread 'main' panicked at src/a.rs:1:1:"),
            (Some(2), None, "dead", "thread 'main' panicked at src/a.rs:1:1:"),
            (Some(1), None, "dead", "error: could not compile `foo`"),
            (None, Some(9), "dead", ""),
            (None, Some(15), "dead", ""),
            (None, Some(15), "no log output for 600s", ""),
            (None, Some(15), "no task progress for 3600s", ""),
            (None, Some(11), "", "Segmentation fault (core dumped)"),
            (Some(0), None, "dead", "all tasks done"),
            (None, None, "no PID file", ""),
        ];
        let signatures: Vec<Signature> = failures
            .iter()
            .map(|(exit_code, signal, reason, tail)| signature(*exit_code, *signal, reason, tail))
            .collect();
        for (i, first) in signatures.iter().enumerate() {
            for second in &signatures[i + 1..] {
                assert_ne!(
                    first.fingerprint, second.fingerprint,
                    "{first:?} vs {second:?}"
                );
            }
        }
    }

    #[rustfmt::skip]
    #[test]
    fn signature_text_is_prefixed_short_redacted_and_hashed() {
        let cases: Vec<TextRow> = vec![
            (Some(1), None, "dead", "working\nAPI Error: 429 Too Many Requests\nbye", FailureClass::RateLimit, "exit 1: API Error: 429 Too Many Requests"),
            (None, Some(9), "killed by operator", "still working on 5 files", FailureClass::Killed, "signal 9: killed by operator"),
            (None, None, "over max runtime of 14400s", "", FailureClass::Hang, "no exit status: over max runtime of <n>s"),
            (Some(1), None, "dead", "password=hunter2 rejected: 401 Unauthorized", FailureClass::Auth, "exit 1: password=[REDACTED] rejected: 401 Unauthorized"),
            (Some(0), None, "", "", FailureClass::Unknown, "exit 0"),
        ];
        for (exit_code, signal, reason, tail, class, text) in cases {
            let found = signature(exit_code, signal, reason, tail);
            assert_eq!((found.class, found.text.as_str()), (class, text));
            assert_eq!(found.fingerprint.len(), 16);
            assert!(found.fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
        }

        let long = format!("error: {}", "word ".repeat(200));
        let found = signature(Some(1), None, "", &long);
        assert_eq!(found.text.chars().count(), MAX_SIGNATURE_TEXT_CHARS);
    }

    #[test]
    fn fnv1a_matches_reference_values() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn class_names_are_kebab_case() {
        let cases = [
            (FailureClass::RateLimit, "rate-limit"),
            (FailureClass::Auth, "auth"),
            (FailureClass::Crash, "crash"),
            (FailureClass::Killed, "killed"),
            (FailureClass::Hang, "hang"),
            (FailureClass::Unknown, "unknown"),
        ];
        for (class, name) in cases {
            assert_eq!(class.to_string(), name);
            assert_eq!(
                serde_json::to_string(&class).unwrap(),
                format!("\"{name}\"")
            );
            assert_eq!(
                serde_json::from_str::<FailureClass>(&format!("\"{name}\"")).unwrap(),
                class
            );
        }
    }

    #[test]
    fn signature_round_trips_through_json() {
        let found = signature(Some(1), None, "dead", "error: boom");
        let json = serde_json::to_string(&found).unwrap();
        assert_eq!(serde_json::from_str::<Signature>(&json).unwrap(), found);
    }
}
