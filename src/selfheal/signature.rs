//! Failure signatures: what kind of failure ended a worker (rate limit, auth,
//! hang, killed, crash) and one short normalised line saying which, with a
//! stable fingerprint. Two runs that fail the same way — at other times,
//! with other PIDs, paths, request ids and numbers — get equal signatures,
//! which is what lets the self-heal circuit breaker see "the same failure
//! again". Pure: facts in, signature out; the log tail is redacted first.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::redact::redact;

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

/// Matched anywhere: `rate_limit_error` and `quota_exceeded` count.
const RATE_LIMIT_PHRASES: &[&str] = &[
    "rate limit",
    "rate_limit",
    "rate-limit",
    "ratelimit",
    "too many requests",
    "overloaded",
    "quota",
    "usage limit",
];
/// Matched as whole words, so `14290` or `429ms` do not count.
const RATE_LIMIT_WORDS: &[&str] = &["429"];

const AUTH_PHRASES: &[&str] = &[
    "unauthorized",
    "unauthorised",
    "invalid api key",
    "invalid x-api-key",
    "invalid_api_key",
    "authentication",
    "permission denied (publickey)",
    "not logged in",
];
const AUTH_WORDS: &[&str] = &["401", "403", "login"];

/// Words the supervisor puts in the reason when it stops a stuck worker.
const HANG_WORDS: &[&str] = &[
    "idle",
    "no log output",
    "no output",
    "no log growth",
    "no progress",
    "no task progress",
    "stalled",
    "heartbeat",
    "max runtime",
    "max_runtime",
    "max-runtime",
    "stuck",
    "hung",
];

const KILLED_PHRASES: &[&str] = &["killed", "signal", "sigkill", "sigterm", "terminated"];

const CRASH_PHRASES: &[&str] = &[
    "panic",
    "traceback",
    "segmentation fault",
    "core dumped",
    "error:",
    "fatal error",
    "unhandled exception",
    "uncaught exception",
];

/// Signals a program raises on itself when it crashes (SIGILL, SIGTRAP,
/// SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGSYS): a crash, not a kill. Every
/// other signal (SIGKILL, SIGTERM, SIGINT, SIGHUP, ...) came from outside.
const CRASH_SIGNALS: &[i32] = &[4, 5, 6, 7, 8, 11, 31];

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

fn contains_any(haystack: &str, phrases: &[&str]) -> bool {
    phrases.iter().any(|phrase| haystack.contains(phrase))
}

/// True when `word` occurs with no letter or digit touching either end.
fn contains_word(haystack: &str, word: &str) -> bool {
    let bytes = haystack.as_bytes();
    haystack.match_indices(word).any(|(start, _)| {
        let end = start + word.len();
        let free_before = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        let free_after = end == bytes.len() || !bytes[end].is_ascii_alphanumeric();
        free_before && free_after
    })
}

fn contains_any_word(haystack: &str, words: &[&str]) -> bool {
    words.iter().any(|word| contains_word(haystack, word))
}

fn mentions_rate_limit(lower: &str) -> bool {
    contains_any(lower, RATE_LIMIT_PHRASES) || contains_any_word(lower, RATE_LIMIT_WORDS)
}

fn mentions_auth(lower: &str) -> bool {
    contains_any(lower, AUTH_PHRASES) || contains_any_word(lower, AUTH_WORDS)
}

fn mentions_hang(lower: &str) -> bool {
    contains_any_word(lower, HANG_WORDS)
}

fn mentions_kill(lower: &str) -> bool {
    contains_any(lower, KILLED_PHRASES)
}

fn mentions_crash(lower: &str) -> bool {
    contains_any(lower, CRASH_PHRASES)
}

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

    if mentions_rate_limit(&window) {
        FailureClass::RateLimit
    } else if mentions_auth(&window) {
        FailureClass::Auth
    } else if mentions_hang(&reason) {
        FailureClass::Hang
    } else if was_killed(exit_code, signal, crash_signal, &reason) {
        FailureClass::Killed
    } else if crash_signal || exit_code.is_some_and(|code| code != 0) || mentions_crash(&window) {
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
    signal.is_some() || exit_code.and_then(signal_of_exit_code).is_some() || mentions_kill(reason)
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
    let carries_keywords = |line: &str| {
        let lower = line.to_lowercase();
        match class {
            FailureClass::RateLimit => mentions_rate_limit(&lower),
            FailureClass::Auth => mentions_auth(&lower),
            FailureClass::Crash => mentions_crash(&lower),
            FailureClass::Killed => mentions_kill(&lower),
            FailureClass::Hang | FailureClass::Unknown => false,
        }
    };
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

// ---------------------------------------------------------------------------
// Normalisation

/// The line with what varies between repeats of one failure folded:
/// timestamps (ISO-8601, `date` and syslog styles, bare `HH:MM:SS`) →
/// `<ts>`, UUIDs → `<uuid>`, absolute and `./` `../` `~/` paths → `<path>`,
/// hex ids (0x-prefixed, or 7+ hex digits mixing digits and letters) →
/// `<hex>`, long random ids (`req_011CQx…`) → `<id>`, numbers → `<n>`
/// (durations keep their unit: `1.5s` → `<n>s`), whitespace collapsed.
/// Digits inside a word (`E0425`, `sha256`, `v1`) are part of the word and
/// stay; so do 4xx/5xx three-digit numbers — HTTP statuses tell failures
/// apart — unless a word like "pid" or "port" says they are something else.
pub fn normalise(line: &str) -> String {
    let folded = fold_variable_parts(line);
    let words: Vec<&str> = folded.split_whitespace().collect();
    fold_calendar_words(&words).join(" ")
}

fn run_end(bytes: &[u8], from: usize, accept: impl Fn(u8) -> bool) -> usize {
    let mut at = from;
    while at < bytes.len() && accept(bytes[at]) {
        at += 1;
    }
    at
}

fn digits_at(bytes: &[u8], at: usize, count: usize) -> bool {
    bytes.len() >= at + count && bytes[at..at + count].iter().all(u8::is_ascii_digit)
}

/// True when no letter or digit follows `at`.
fn word_ends_at(bytes: &[u8], at: usize) -> bool {
    at >= bytes.len() || !bytes[at].is_ascii_alphanumeric()
}

fn fold_variable_parts(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while at < bytes.len() {
        let starts_word = at == 0 || !is_word_byte(bytes[at - 1]);
        if starts_word {
            if let Some(end) = fold_at(text, at, &mut out) {
                at = end;
                continue;
            }
        }
        let Some(ch) = text[at..].chars().next() else {
            break;
        };
        out.push(ch);
        at += ch.len_utf8();
    }
    out
}

/// Folds the variable part starting at `at`, a word start, into `out` and
/// returns where it ends; `None` when nothing there varies.
fn fold_at(text: &str, at: usize, out: &mut String) -> Option<usize> {
    let bytes = text.as_bytes();
    let placeholder = |out: &mut String, end: usize, name: &str| {
        out.push_str(name);
        Some(end)
    };
    if let Some(end) = timestamp_end(bytes, at) {
        return placeholder(out, end, "<ts>");
    }
    if let Some(end) = uuid_end(bytes, at) {
        return placeholder(out, end, "<uuid>");
    }
    if let Some(end) = path_end(bytes, at) {
        return placeholder(out, end, "<path>");
    }
    if bytes[at..].starts_with(b"0x") || bytes[at..].starts_with(b"0X") {
        let end = run_end(bytes, at + 2, |b| b.is_ascii_hexdigit());
        if end > at + 2 && word_ends_at(bytes, end) {
            return placeholder(out, end, "<hex>");
        }
    }
    if !is_word_byte(bytes[at]) {
        return None;
    }
    let word_end = run_end(bytes, at, is_word_byte);
    let word = &text[at..word_end];
    if is_hex_id(word) {
        return placeholder(out, word_end, "<hex>");
    }
    if is_random_id(word) {
        return placeholder(out, word_end, "<id>");
    }
    if bytes[at].is_ascii_digit() {
        return Some(fold_number(text, at, out));
    }
    // A word starting with a letter keeps its digits: `E0425`, `v1`.
    out.push_str(word);
    Some(word_end)
}

/// 7+ hex digits with at least one digit and one letter: a short git SHA, a
/// container id. All digits is a number; all letters is a word (`defaced`).
fn is_hex_id(word: &str) -> bool {
    word.len() >= 7
        && word.bytes().all(|b| b.is_ascii_hexdigit())
        && word.bytes().any(|b| b.is_ascii_digit())
        && word.bytes().any(|b| b.is_ascii_alphabetic())
}

/// A long word flipping between letters and digits again and again, as
/// base62 request and message ids do (`req_011CQx4dZ8fG3kLp`) and names
/// (`x86_64_unknown_linux_gnu`, `claude_sonnet_4`) do not.
fn is_random_id(word: &str) -> bool {
    if word.len() < 12 {
        return false;
    }
    let flips = word
        .as_bytes()
        .windows(2)
        .filter(|pair| {
            (pair[0].is_ascii_alphabetic() && pair[1].is_ascii_digit())
                || (pair[0].is_ascii_digit() && pair[1].is_ascii_alphabetic())
        })
        .count();
    flips >= 4
}

/// Units after which another number can follow in one duration: `1h30m`.
const DURATION_UNITS: &[&str] = &["ns", "us", "ms", "s", "m", "h", "d"];

/// Words saying the number after them counts things rather than being a
/// status code.
const COUNTER_WORDS: &[&str] = &[
    "pid", "ppid", "process", "port", "line", "worker", "attempt",
];

/// A three-digit 4xx or 5xx number, as HTTP statuses are.
fn looks_like_status(number: &str) -> bool {
    number.len() == 3
        && number.bytes().all(|b| b.is_ascii_digit())
        && matches!(number.as_bytes()[0], b'4' | b'5')
}

/// The lower-cased word before `at`, skipping the separators between.
fn word_before(text: &str, at: usize) -> String {
    let bytes = text.as_bytes();
    let mut end = at;
    while end > 0 && matches!(bytes[end - 1], b' ' | b'\t' | b'=' | b':' | b'#') {
        end -= 1;
    }
    let mut start = end;
    while start > 0 && bytes[start - 1].is_ascii_alphabetic() {
        start -= 1;
    }
    text[start..end].to_ascii_lowercase()
}

/// Folds the number (and any compound duration) at `at`; returns its end.
fn fold_number(text: &str, at: usize, out: &mut String) -> usize {
    let bytes = text.as_bytes();
    let mut start = at;
    loop {
        let mut end = run_end(bytes, start, |b| b.is_ascii_digit());
        if bytes.get(end) == Some(&b'.') && digits_at(bytes, end + 1, 1) {
            end = run_end(bytes, end + 1, |b| b.is_ascii_digit());
        }
        let number = &text[start..end];
        let counted = COUNTER_WORDS.contains(&word_before(text, start).as_str());
        if looks_like_status(number) && !counted {
            out.push_str(number);
        } else {
            out.push_str("<n>");
        }
        let unit_end = run_end(bytes, end, |b| b.is_ascii_lowercase());
        let unit = &text[end..unit_end];
        if DURATION_UNITS.contains(&unit) && digits_at(bytes, unit_end, 1) {
            out.push_str(unit);
            start = unit_end;
            continue;
        }
        return end;
    }
}

/// `HH:MM:SS` (hour of one or two digits), an optional fraction and zone.
fn time_end(bytes: &[u8], at: usize) -> Option<usize> {
    let hour_len = if digits_at(bytes, at, 2) {
        2
    } else if digits_at(bytes, at, 1) {
        1
    } else {
        return None;
    };
    let mut end = at + hour_len;
    for _ in 0..2 {
        if bytes.get(end) != Some(&b':') || !digits_at(bytes, end + 1, 2) {
            return None;
        }
        end += 3;
    }
    if matches!(bytes.get(end), Some(b'.' | b',')) && digits_at(bytes, end + 1, 1) {
        end = run_end(bytes, end + 1, |b| b.is_ascii_digit());
    }
    Some(zone_end(bytes, end))
}

/// `Z`, `+0000`, `+00:00` or `-05` after a time; `end` when none.
fn zone_end(bytes: &[u8], end: usize) -> usize {
    match bytes.get(end) {
        Some(b'Z') if word_ends_at(bytes, end + 1) => end + 1,
        Some(b'+' | b'-') if digits_at(bytes, end + 1, 2) => {
            let after_hours = end + 3;
            if digits_at(bytes, after_hours, 2) {
                after_hours + 2
            } else if bytes.get(after_hours) == Some(&b':') && digits_at(bytes, after_hours + 1, 2)
            {
                after_hours + 3
            } else {
                after_hours
            }
        }
        _ => end,
    }
}

/// A date (`2024-01-15`, `2024/01/15`) with an optional time, a bare time,
/// or a compact stamp (`20240115T103000`).
fn timestamp_end(bytes: &[u8], at: usize) -> Option<usize> {
    let end = if digits_at(bytes, at, 8)
        && bytes.get(at + 8) == Some(&b'T')
        && digits_at(bytes, at + 9, 6)
    {
        zone_end(bytes, at + 15)
    } else if digits_at(bytes, at, 4)
        && matches!(bytes.get(at + 4), Some(b'-' | b'/'))
        && digits_at(bytes, at + 5, 2)
        && bytes.get(at + 7) == bytes.get(at + 4)
        && digits_at(bytes, at + 8, 2)
    {
        let date_end = at + 10;
        match bytes.get(date_end) {
            Some(b'T' | b' ') => time_end(bytes, date_end + 1).unwrap_or(date_end),
            _ => date_end,
        }
    } else {
        time_end(bytes, at)?
    };
    word_ends_at(bytes, end).then_some(end)
}

/// `8-4-4-4-12` hex digits.
fn uuid_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut end = at;
    for (index, group_len) in [8, 4, 4, 4, 12].into_iter().enumerate() {
        if index > 0 {
            if bytes.get(end) != Some(&b'-') {
                return None;
            }
            end += 1;
        }
        let group_end = run_end(bytes, end, |b| b.is_ascii_hexdigit());
        if group_end - end != group_len {
            return None;
        }
        end = group_end;
    }
    word_ends_at(bytes, end).then_some(end)
}

fn is_path_byte(byte: u8) -> bool {
    !byte.is_ascii_whitespace()
        && !matches!(
            byte,
            b'"' | b'\''
                | b'`'
                | b'('
                | b')'
                | b'['
                | b']'
                | b'{'
                | b'}'
                | b'<'
                | b'>'
                | b','
                | b';'
                | b'|'
        )
}

/// An absolute path or one starting `./`, `../` or `~/`, with any
/// `:line:col` after it; trailing sentence punctuation is not part of it.
/// A `/` right after `:`, `/` or `.` is inside a URL or a word, not a path.
fn path_end(bytes: &[u8], at: usize) -> Option<usize> {
    let rest = &bytes[at..];
    let body_start = if rest.starts_with(b"../") {
        at + 3
    } else if rest.starts_with(b"./") || rest.starts_with(b"~/") {
        at + 2
    } else if rest.starts_with(b"/") {
        let previous = if at == 0 { b' ' } else { bytes[at - 1] };
        if matches!(previous, b':' | b'/' | b'.' | b'~') {
            return None;
        }
        at + 1
    } else {
        return None;
    };
    let mut end = run_end(bytes, body_start, is_path_byte);
    while end > body_start && matches!(bytes[end - 1], b'.' | b':' | b'!' | b'?') {
        end -= 1;
    }
    (end > body_start).then_some(end)
}

const MONTHS: &[&str] = &[
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
    "january",
    "february",
    "march",
    "april",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const WEEKDAYS: &[&str] = &[
    "mon",
    "tue",
    "wed",
    "thu",
    "fri",
    "sat",
    "sun",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
const TIME_ZONES: &[&str] = &[
    "UTC", "GMT", "Z", "EST", "EDT", "CST", "CDT", "MST", "MDT", "PST", "PDT", "CET", "CEST",
    "BST", "IST", "JST", "AEST", "AEDT",
];

fn is_calendar_name(word: &str) -> bool {
    let bare = word.trim_end_matches([',', '.']).to_ascii_lowercase();
    MONTHS.contains(&bare.as_str()) || WEEKDAYS.contains(&bare.as_str())
}

/// The word without the punctuation that may follow it in a sentence.
fn core(word: &str) -> &str {
    word.trim_end_matches([',', ':', '.', ';'])
}

/// True when the word ends in punctuation, which ends a timestamp too.
fn ends_in_punctuation(word: &str) -> bool {
    core(word).len() != word.len()
}

/// `Mon Jan 15 10:30:00 UTC 2024` and `Jan 15 10:30:00` become one `<ts>`:
/// the words around a folded time are taken along when a month or weekday
/// name says they are a date; a zone after a time always is.
fn fold_calendar_words(words: &[&str]) -> Vec<String> {
    let mut folded: Vec<String> = Vec::with_capacity(words.len());
    let mut index = 0;
    while index < words.len() {
        if core(words[index]) != "<ts>" {
            folded.push(words[index].to_string());
            index += 1;
            continue;
        }
        let extends_right = |last: usize, accept: &dyn Fn(&str) -> bool| {
            let mut last = last;
            while !ends_in_punctuation(words[last])
                && last + 1 < words.len()
                && accept(core(words[last + 1]))
            {
                last += 1;
            }
            last
        };
        let is_zone = |word: &str| TIME_ZONES.contains(&word);
        let mut first = index;
        while first > 0 && {
            let word = words[first - 1];
            is_calendar_name(word) || word == "<n>" || word == "<n>,"
        } {
            first -= 1;
        }
        let mut last = extends_right(index, &|word| is_zone(word) || word == "<n>");
        if !words[first..=last]
            .iter()
            .any(|word| is_calendar_name(word))
        {
            // No date around the time: take along only the zone.
            first = index;
            last = extends_right(index, &is_zone);
        }
        // The words before the time were already copied; take them back.
        folded.truncate(folded.len() - (index - first));
        let punctuation = &words[last][core(words[last]).len()..];
        folded.push(format!("<ts>{punctuation}"));
        index = last + 1;
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_folds_what_varies() {
        let cases: Vec<(&str, &str)> = vec![
            (
                "2024-01-15T10:30:00.123Z ERROR request failed",
                "<ts> ERROR request failed",
            ),
            (
                "[wrapper] 2024-01-15T10:30:00+0000 exited with code 1",
                "[wrapper] <ts> exited with code <n>",
            ),
            ("at 2024-01-15 10:30:00,123 boom", "at <ts> boom"),
            ("Mon Jan 15 10:30:00 UTC 2024: started", "<ts>: started"),
            (
                "Jan 15 10:30:00 host worker[4242]: died",
                "<ts> host worker[<n>]: died",
            ),
            ("10:30:00 tick", "<ts> tick"),
            (
                "archived to log_20240115T103000.log",
                "archived to log_20240115T103000.log",
            ),
            ("stamp 20240115T103000 done", "stamp <ts> done"),
            (
                "task 3f2a9c1e-7b4d-4e8a-9c6f-1d2e3f4a5b6c failed",
                "task <uuid> failed",
            ),
            ("commit a1b2c3d4e5 broke it", "commit <hex> broke it"),
            ("fault at 0x7ffe12ab", "fault at <hex>"),
            ("a defaced cafe", "a defaced cafe"),
            (
                "error: could not open /home/bob/proj/src/main.rs: No such file",
                "error: could not open <path>: No such file",
            ),
            (
                "thread 'main' panicked at ./src/lib.rs:42:7:",
                "thread 'main' panicked at <path>:",
            ),
            ("reading '../data/x.json'.", "reading '<path>'."),
            ("wrote ~/notes/a.md", "wrote <path>"),
            ("and/or 1/2", "and/or <n>/<n>"),
            (
                "POST https://api.anthropic.com/v1/messages failed",
                "POST https://api.anthropic.com/v1/messages failed",
            ),
            (
                "connect http://localhost:8080/x refused",
                "connect http://localhost:<n>/x refused",
            ),
            (
                "API Error: 429 Too Many Requests",
                "API Error: 429 Too Many Requests",
            ),
            ("HTTP 503 after 3 retries", "HTTP 503 after <n> retries"),
            ("pid 451 exited", "pid <n> exited"),
            ("killed pid=12345 after 30s", "killed pid=<n> after <n>s"),
            (
                "retry in 1.5s (attempt 3/10)",
                "retry in <n>s (attempt <n>/<n>)",
            ),
            ("took 1m30s and 250ms", "took <n>m<n>s and <n>ms"),
            (
                "error[E0425]: cannot find value",
                "error[E0425]: cannot find value",
            ),
            ("request_id: req_011CQx4dZ8fG3kLpR2sT", "request_id: <id>"),
            (
                "target x86_64_unknown_linux_gnu",
                "target x86_64_unknown_linux_gnu",
            ),
            ("  lots   of\t space  ", "lots of space"),
            ("été: 12 €", "été: <n> €"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalise(input), expected, "input: {input:?}");
        }
    }

    #[test]
    fn classify_by_precedence() {
        let login_then_work = format!("editing the login page\n{}", "ok\n".repeat(40));
        let cases: Vec<(&str, Option<i32>, Option<i32>, &str, &str, FailureClass)> = vec![
            (
                "429 then exit 1",
                Some(1),
                None,
                "dead",
                "working\nAPI Error: 429 {\"type\":\"rate_limit_error\"}",
                FailureClass::RateLimit,
            ),
            (
                "overloaded",
                Some(1),
                None,
                "dead",
                "API Error: 529 {\"type\":\"overloaded_error\"}",
                FailureClass::RateLimit,
            ),
            (
                "usage limit",
                Some(0),
                None,
                "dead",
                "Claude AI usage limit reached|1700000000",
                FailureClass::RateLimit,
            ),
            (
                "quota",
                Some(2),
                None,
                "",
                "insufficient_quota",
                FailureClass::RateLimit,
            ),
            (
                "401",
                Some(1),
                None,
                "dead",
                "API Error: 401 {\"type\":\"authentication_error\"}",
                FailureClass::Auth,
            ),
            (
                "invalid api key",
                Some(1),
                None,
                "",
                "Invalid API key · Please run /login",
                FailureClass::Auth,
            ),
            (
                "ssh publickey",
                Some(128),
                None,
                "",
                "git@github.com: Permission denied (publickey).",
                FailureClass::Auth,
            ),
            (
                "not logged in",
                Some(1),
                None,
                "",
                "Error: Not logged in",
                FailureClass::Auth,
            ),
            (
                "idle, then SIGTERM",
                None,
                Some(15),
                "no log output for 1800s",
                "thinking...",
                FailureClass::Hang,
            ),
            (
                "heartbeat",
                Some(143),
                None,
                "heartbeat expired",
                "",
                FailureClass::Hang,
            ),
            (
                "max runtime",
                None,
                None,
                "over max runtime (4h)",
                "",
                FailureClass::Hang,
            ),
            (
                "no task progress",
                None,
                Some(15),
                "no task progress for 2h",
                "",
                FailureClass::Hang,
            ),
            (
                "the probes' own words",
                None,
                Some(15),
                "no progress: no task status change for 3600s (limit 3600s)",
                "",
                FailureClass::Hang,
            ),
            (
                "the heartbeat probe's words",
                Some(143),
                None,
                "heartbeat expired: last beat 95s ago (ttl 60s)",
                "",
                FailureClass::Hang,
            ),
            (
                "gave up on the restart budget is not a hang",
                Some(1),
                None,
                "max restart limit (2) reached",
                "",
                FailureClass::Crash,
            ),
            (
                "sigkill",
                None,
                Some(9),
                "dead",
                "working",
                FailureClass::Killed,
            ),
            (
                "exit 137",
                Some(137),
                None,
                "dead",
                "working",
                FailureClass::Killed,
            ),
            ("exit 143", Some(143), None, "", "", FailureClass::Killed),
            (
                "reason says killed",
                None,
                None,
                "OOM killed",
                "",
                FailureClass::Killed,
            ),
            (
                "sigsegv is a crash",
                None,
                Some(11),
                "dead",
                "",
                FailureClass::Crash,
            ),
            (
                "exit 139 is a crash",
                Some(139),
                None,
                "ended by signal",
                "",
                FailureClass::Crash,
            ),
            ("exit 1", Some(1), None, "dead", "done", FailureClass::Crash),
            (
                "panic, exit unknown",
                None,
                None,
                "dead",
                "thread 'main' panicked at src/main.rs:3:5",
                FailureClass::Crash,
            ),
            (
                "python traceback",
                None,
                None,
                "",
                "Traceback (most recent call last):",
                FailureClass::Crash,
            ),
            (
                "clean exit",
                Some(0),
                None,
                "dead",
                "all done",
                FailureClass::Unknown,
            ),
            (
                "nothing known",
                None,
                None,
                "no PID file",
                "",
                FailureClass::Unknown,
            ),
            (
                "restart rate limit in the reason is not the API's",
                Some(0),
                None,
                "restart rate limit reached",
                "",
                FailureClass::Unknown,
            ),
            (
                "429 inside a bigger number does not count",
                Some(0),
                None,
                "",
                "wrote 14290 bytes in 429ms",
                FailureClass::Unknown,
            ),
            (
                "a login page in early work does not count",
                Some(1),
                None,
                "dead",
                &login_then_work,
                FailureClass::Crash,
            ),
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
    #[test]
    fn same_failure_same_signature() {
        let pairs: Vec<(&str, (Option<i32>, Option<i32>, &str, &str), (Option<i32>, Option<i32>, &str, &str))> = vec![
            (
                "rate limit with request ids and times",
                (Some(1), None, "dead", "2024-01-15T10:30:00Z API Error: 429 request_id=req_011CQx4dZ8fG3kLpR2sT\n[wrapper] 2024-01-15T10:30:01+0000 exited with code 1"),
                (Some(1), None, "dead", "2024-03-02T23:01:59Z API Error: 429 request_id=req_099ZZa1bC2dE3fG4hI5j\n[wrapper] 2024-03-02T23:02:00+0000 exited with code 1"),
            ),
            (
                "panic in other paths and lines",
                (Some(101), None, "dead", "thread 'main' panicked at /home/a/x/src/lib.rs:10:5:\nindex out of bounds"),
                (Some(101), None, "dead", "thread 'main' panicked at /tmp/build-7/src/lib.rs:12:9:\nindex out of bounds"),
            ),
            (
                "killed, other pids",
                (None, Some(9), "dead", "[wrapper] 2024-01-15T10:30:00+0000 received SIGTERM, sending SIGTERM to worker 1234"),
                (None, Some(9), "dead", "[wrapper] 2024-01-16T08:00:00+0000 received SIGTERM, sending SIGTERM to worker 98765"),
            ),
            (
                "hang, other durations, other last output",
                (None, Some(15), "no log output for 1805s", "reading file a.rs"),
                (None, Some(15), "no log output for 1812s", "running cargo test"),
            ),
            (
                "auth, other keys echoed",
                (Some(1), None, "", "API Error: 401 invalid x-api-key sk-ant-api03-AAAAAAAAAAAAAAAAAAAA1"),
                (Some(1), None, "", "API Error: 401 invalid x-api-key sk-ant-api03-BBBBBBBBBBBBBBBBBBBB2"),
            ),
            (
                "crash with other uuids",
                (Some(1), None, "", "error: task 3f2a9c1e-7b4d-4e8a-9c6f-1d2e3f4a5b6c not found"),
                (Some(1), None, "", "error: task 0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d not found"),
            ),
            (
                "crash with other hex addresses",
                (None, Some(11), "", "segmentation fault at 0x7ffe1234 in worker"),
                (None, Some(11), "", "segmentation fault at 0x55aa9f00 in worker"),
            ),
            (
                "unknown with other counts",
                (Some(0), None, "dead", "processed 12 files in 3.2s"),
                (Some(0), None, "dead", "processed 87 files in 41.9s"),
            ),
            (
                "date-style timestamps",
                (Some(2), None, "", "Mon Jan 15 10:30:00 UTC 2024 fatal error: out of memory"),
                (Some(2), None, "", "Fri Mar 8 07:05:09 UTC 2024 fatal error: out of memory"),
            ),
            (
                "trailing blank lines and wrapper lines do not matter",
                (Some(3), None, "", "last words\n\n"),
                (Some(3), None, "", "last words\n[wrapper] 2024-01-15T10:30:00+0000 exited with code 3\n"),
            ),
            (
                "git shas",
                (Some(1), None, "", "fatal: bad object a1b2c3d4e5f6"),
                (Some(1), None, "", "fatal: bad object 0f9e8d7c6b5a"),
            ),
        ];
        for (name, (e1, s1, r1, t1), (e2, s2, r2, t2)) in pairs {
            let first = signature(e1, s1, r1, t1);
            let second = signature(e2, s2, r2, t2);
            assert_eq!(first, second, "case: {name}");
        }
    }

    #[test]
    fn different_failures_differ() {
        let failures: Vec<(Option<i32>, Option<i32>, &str, &str)> = vec![
            (Some(1), None, "dead", "API Error: 429 rate_limit_error"),
            (Some(1), None, "dead", "API Error: 401 authentication_error"),
            (
                Some(1),
                None,
                "dead",
                "API Error: 403 forbidden, login required",
            ),
            (
                Some(1),
                None,
                "dead",
                "thread 'main' panicked at src/a.rs:1:1:",
            ),
            (
                Some(2),
                None,
                "dead",
                "thread 'main' panicked at src/a.rs:1:1:",
            ),
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

    #[test]
    fn signature_text_is_prefixed_short_redacted_and_hashed() {
        let cases: Vec<(Option<i32>, Option<i32>, &str, &str, FailureClass, &str)> = vec![
            (
                Some(1),
                None,
                "dead",
                "working\nAPI Error: 429 Too Many Requests\nbye",
                FailureClass::RateLimit,
                "exit 1: API Error: 429 Too Many Requests",
            ),
            (
                None,
                Some(9),
                "killed by operator",
                "still working on 5 files",
                FailureClass::Killed,
                "signal 9: killed by operator",
            ),
            (
                None,
                None,
                "over max runtime of 14400s",
                "",
                FailureClass::Hang,
                "no exit status: over max runtime of <n>s",
            ),
            (
                Some(1),
                None,
                "dead",
                "password=hunter2 rejected: 401 Unauthorized",
                FailureClass::Auth,
                "exit 1: password=[REDACTED] rejected: 401 Unauthorized",
            ),
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

    /// Any cut of tricky text, multi-byte characters included, normalises
    /// without a panic, and normalising twice changes nothing more.
    #[test]
    fn normalise_survives_every_cut() {
        let text = "Mon Jan 15 10:30:00 UTC 2024: é 0x1f 3f2a9c1e-7b4d-4e8a-9c6f-1d2e3f4a5b6c \
                    ./ä/ö.rs:1:2 1m30s ü429 2024-01-15T10:30:00+00:00 req_011CQx4dZ8fG3kLp €";
        for (cut, _) in text.char_indices() {
            for part in [&text[..cut], &text[cut..]] {
                let once = normalise(part);
                assert_eq!(normalise(&once), once, "not stable on {part:?}");
            }
        }
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
