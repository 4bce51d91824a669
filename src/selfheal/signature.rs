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

/// A zone after a time: `Z`, `+0000`, `+00:00`, `-05`.
const ZONE: &str = r"(?:Z|[+-]\d{2}(?:\d{2}|:\d{2})?)?";

/// What varies between repeats of a failure, tried in this order where a
/// word starts (no letter, digit or `_` before); each pattern is anchored
/// there, and its check says what a regex cannot (what comes before or
/// after, what a word holds).
#[rustfmt::skip]
static FOLD_RULES: LazyLock<Vec<FoldRule>> = LazyLock::new(|| {
    let time = format!(r"\d{{1,2}}:\d{{2}}:\d{{2}}(?:[.,]\d+)?{ZONE}");
    let rules: [(&str, String, &str, FoldCheck); 7] = [
        // `20240115T103000`, `2024-01-15` or `2024/01/15` with an optional
        // time, or a bare `HH:MM:SS`.
        ("timestamp", format!(r"^(?:\d{{8}}T\d{{6}}{ZONE}|\d{{4}}-\d{{2}}-\d{{2}}(?:[T ]{time})?|\d{{4}}/\d{{2}}/\d{{2}}(?:[T ]{time})?|{time})"), "<ts>", ends_word),
        ("uuid", r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}".into(), "<uuid>", ends_word),
        // Absolute, `./`, `../` or `~/`, with any `:line:col`; sentence
        // punctuation after it is not part of it.
        ("path", r#"^(?:\.\./|\./|~/|/)[^ \t\n\x0C\r"'`()\[\]{}<>,;|]*[^ \t\n\x0C\r"'`()\[\]{}<>,;|.:!?]"#.into(), "<path>", path),
        ("hex literal", "^0[xX][0-9a-fA-F]+".into(), "<hex>", ends_word),
        // A short git SHA, a container id: all digits is a number, all
        // letters a word (`defaced`).
        ("hex id", "^[A-Za-z0-9_]+".into(), "<hex>", hex_id),
        // Base62 request ids (`req_011CQx4dZ8fG3kLp`) flip between letters
        // and digits again and again; names (`x86_64_unknown_linux_gnu`) do not.
        ("random id", "^[A-Za-z0-9_]+".into(), "<id>", random_id),
        // A number, and the next one of a compound duration (`1h30m`); a
        // unit stays.
        ("number", r"^\d+(?:\.\d+)?(?:(?:ns|us|ms|s|m|h|d)\d+(?:\.\d+)?)*".into(), "<n>", |_, _, _| true),
    ];
    rules.into_iter().map(|(name, pattern, placeholder, check)| FoldRule {
        name,
        regex: Regex::new(&pattern).expect("fold pattern"),
        placeholder,
        check,
    }).collect()
});

/// Given the line, where the match starts and the match, whether it folds.
type FoldCheck = fn(&str, usize, &str) -> bool;

struct FoldRule {
    name: &'static str,
    regex: Regex,
    placeholder: &'static str,
    check: FoldCheck,
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// True when no letter or digit follows the match.
fn ends_word(text: &str, at: usize, found: &str) -> bool {
    text.as_bytes()
        .get(at + found.len())
        .is_none_or(|b| !b.is_ascii_alphanumeric())
}

/// A `/` right after `:`, `/`, `.` or `~` is inside a URL or a word.
fn path(text: &str, at: usize, found: &str) -> bool {
    !(found.starts_with('/') && at > 0 && b":/.~".contains(&text.as_bytes()[at - 1]))
}

fn hex_id(_: &str, _: usize, word: &str) -> bool {
    word.len() >= 7
        && word.bytes().all(|b| b.is_ascii_hexdigit())
        && word.bytes().any(|b| b.is_ascii_digit())
        && word.bytes().any(|b| b.is_ascii_alphabetic())
}

fn random_id(_: &str, _: usize, word: &str) -> bool {
    let flips = word
        .as_bytes()
        .windows(2)
        .filter(|pair| pair[0].is_ascii_alphabetic() != pair[1].is_ascii_alphabetic())
        .filter(|pair| pair.iter().all(u8::is_ascii_alphanumeric))
        .count();
    word.len() >= 12 && flips >= 4
}

/// One number of a folded number: 4xx and 5xx statuses tell failures apart
/// and stay, unless the word before says they count something.
static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\d+(?:\.\d+)?").expect("number"));
static STATUS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[45]\d\d$").expect("status"));
static COUNTED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[^A-Za-z])(?i-u:pid|ppid|process|port|line|worker|attempt)[ \t=:#]*$")
        .expect("counter words")
});

fn fold_number(text: &str, at: usize, found: &str, out: &mut String) {
    let mut copied = 0;
    for number in NUMBER.find_iter(found) {
        out.push_str(&found[copied..number.start()]);
        if STATUS.is_match(number.as_str()) && !COUNTED.is_match(&text[..at + number.start()]) {
            out.push_str(number.as_str());
        } else {
            out.push_str("<n>");
        }
        copied = number.end();
    }
}

fn fold_variable_parts(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    'scan: while at < bytes.len() {
        let starts_word = at == 0 || !is_word_byte(bytes[at - 1]);
        if starts_word && (is_word_byte(bytes[at]) || b"./~".contains(&bytes[at])) {
            for rule in FOLD_RULES.iter() {
                let Some(found) = rule.regex.find(&text[at..]) else {
                    continue;
                };
                if !(rule.check)(text, at, found.as_str()) {
                    continue;
                }
                if rule.name == "number" {
                    fold_number(text, at, found.as_str(), &mut out);
                } else {
                    out.push_str(rule.placeholder);
                }
                at += found.end();
                continue 'scan;
            }
            // A word starting with a letter keeps its digits: `E0425`, `v1`.
            let word_end = at + bytes[at..].iter().take_while(|b| is_word_byte(**b)).count();
            if word_end > at {
                out.push_str(&text[at..word_end]);
                at = word_end;
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
