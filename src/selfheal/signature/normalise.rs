//! The normaliser of failure signatures: one log line with what varies
//! between repeats of one failure (times, ids, paths, numbers) folded into
//! placeholders, so the same failure reads the same every time. A table of
//! named regex rules tried where each word starts, then the words of a date
//! around a folded time taken along.

use std::sync::LazyLock;

use regex::Regex;

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

/// Month and weekday names, any case, with the comma or dot a date puts
/// after them; and the zones a `date` prints after the time.
static CALENDAR_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?i-u:jan|feb|mar|apr|may|jun|jul|aug|sept?|oct|nov|dec|january|february|march|april|june|july|august|september|october|november|december|mon|tue|wed|thu|fri|sat|sun|monday|tuesday|wednesday|thursday|friday|saturday|sunday)[,.]*$")
        .expect("calendar names")
});
static TIME_ZONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:UTC|GMT|Z|EST|EDT|CST|CDT|MST|MDT|PST|PDT|CET|CEST|BST|IST|JST|AEST|AEDT)$")
        .expect("time zones")
});

fn is_calendar_name(word: &str) -> bool {
    CALENDAR_NAME.is_match(word)
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
        let is_zone = |word: &str| TIME_ZONE.is_match(word);
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

    /// Every fold rule, alone where a word starts: a text it folds (and
    /// how much of it), and a near miss it must leave alone.
    #[rustfmt::skip]
    #[test]
    fn each_fold_rule_folds_its_part_and_spares_its_near_miss() {
        let rows: Vec<(&str, &str, &str, &str)> = vec![
            ("timestamp", "2024-01-15T10:30:00+00:00 x", "2024-01-15T10:30:00+00:00", "2024-01-15x"),
            ("uuid", "3f2a9c1e-7b4d-4e8a-9c6f-1d2e3f4a5b6c.", "3f2a9c1e-7b4d-4e8a-9c6f-1d2e3f4a5b6c", "3f2a9c1e-7b4d-4e8a-9c6f-1d2e3f4a5b6c7"),
            ("path", "/tmp/build-7/src/lib.rs:12:9: oops", "/tmp/build-7/src/lib.rs:12:9", "/ alone"),
            ("hex literal", "0x7ffe12ab,", "0x7ffe12ab", "0x12g"),
            ("hex id", "a1b2c3d4e5 x", "a1b2c3d4e5", "defaced"),
            ("random id", "req_011CQx4dZ8fG3kLpR2sT", "req_011CQx4dZ8fG3kLpR2sT", "x86_64_unknown_linux_gnu"),
            ("number", "1m30s", "1m30", "v1"),
        ];
        let names: Vec<&str> = FOLD_RULES.iter().map(|rule| rule.name).collect();
        assert_eq!(names, rows.iter().map(|row| row.0).collect::<Vec<_>>(), "one row per rule, in order");
        for (rule, (name, text, folded, near_miss)) in FOLD_RULES.iter().zip(rows) {
            let found = rule.regex.find(text).filter(|m| (rule.check)(text, 0, m.as_str()));
            assert_eq!(found.map(|m| m.as_str()), Some(folded), "rule {name} on {text:?}");
            let missed = rule.regex.find(near_miss).filter(|m| (rule.check)(near_miss, 0, m.as_str()));
            assert_eq!(missed.map(|m| m.as_str()), None, "rule {name} on its near miss");
        }
    }

    #[rustfmt::skip]
    #[test]
    fn normalise_folds_what_varies() {
        let cases: Vec<(&str, &str)> = vec![
            ("2024-01-15T10:30:00.123Z ERROR request failed", "<ts> ERROR request failed"),
            ("[wrapper] 2024-01-15T10:30:00+0000 exited with code 1", "[wrapper] <ts> exited with code <n>"),
            ("at 2024-01-15 10:30:00,123 boom", "at <ts> boom"),
            ("Mon Jan 15 10:30:00 UTC 2024: started", "<ts>: started"),
            ("Jan 15 10:30:00 host worker[4242]: died", "<ts> host worker[<n>]: died"),
            ("10:30:00 tick", "<ts> tick"),
            ("archived to log_20240115T103000.log", "archived to log_20240115T103000.log"),
            ("stamp 20240115T103000 done", "stamp <ts> done"),
            ("task 3f2a9c1e-7b4d-4e8a-9c6f-1d2e3f4a5b6c failed", "task <uuid> failed"),
            ("commit a1b2c3d4e5 broke it", "commit <hex> broke it"),
            ("fault at 0x7ffe12ab", "fault at <hex>"),
            ("a defaced cafe", "a defaced cafe"),
            ("error: could not open /home/bob/proj/src/main.rs: No such file", "error: could not open <path>: No such file"),
            ("thread 'main' panicked at ./src/lib.rs:42:7:", "thread 'main' panicked at <path>:"),
            ("reading '../data/x.json'.", "reading '<path>'."),
            ("wrote ~/notes/a.md", "wrote <path>"),
            ("and/or 1/2", "and/or <n>/<n>"),
            ("POST https://api.anthropic.com/v1/messages failed", "POST https://api.anthropic.com/v1/messages failed"),
            ("connect http://localhost:8080/x refused", "connect http://localhost:<n>/x refused"),
            ("API Error: 429 Too Many Requests", "API Error: 429 Too Many Requests"),
            ("HTTP 503 after 3 retries", "HTTP 503 after <n> retries"),
            ("pid 451 exited", "pid <n> exited"),
            ("killed pid=12345 after 30s", "killed pid=<n> after <n>s"),
            ("retry in 1.5s (attempt 3/10)", "retry in <n>s (attempt <n>/<n>)"),
            ("took 1m30s and 250ms", "took <n>m<n>s and <n>ms"),
            ("error[E0425]: cannot find value", "error[E0425]: cannot find value"),
            ("request_id: req_011CQx4dZ8fG3kLpR2sT", "request_id: <id>"),
            ("target x86_64_unknown_linux_gnu", "target x86_64_unknown_linux_gnu"),
            ("  lots   of\t space  ", "lots of space"),
            ("été: 12 €", "été: <n> €"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalise(input), expected, "input: {input:?}");
        }
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
}
