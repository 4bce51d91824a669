//! Secret redaction: everything a worker log can leak — API keys, tokens,
//! passwords, AWS keys, private key blocks, credentials in URLs — is replaced
//! by `[REDACTED]` before a log tail is stored, printed or handed to the next
//! worker. Where a secret has a label (`password=`, `Authorization: Bearer`,
//! `"api_key":`), the label stays so the reader still sees what was there.
//!
//! The secrets are a table of named [`Rule`]s, each a regular expression
//! plus a small check for what a regex cannot say (a key must hold a digit,
//! a prefix must start a word); the rules run in table order, each over the
//! text the previous one left. Redacting twice gives the same text as
//! redacting once. `redact` takes whole texts, newlines included, because a
//! private key block spans lines; `redact_lines` is the same for lines.
//!
//! The rules lean towards redacting: a harmless word lost after `token:` costs
//! less than a key kept. Unquoted labelled values end at whitespace or at one
//! of `& , ; " ' < > ) ] } \``, so a password holding one of those is cut
//! there and its tail survives; quoted values are redacted whole.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// What a secret becomes.
pub const REDACTED: &str = "[REDACTED]";
/// What a whole private key block becomes.
pub const REDACTED_PRIVATE_KEY: &str = "[REDACTED PRIVATE KEY]";

/// The text with every secret found replaced; newlines are kept, except that
/// a private key block (its BEGIN line through its END line) becomes one
/// `[REDACTED PRIVATE KEY]`. A block whose END is missing (a log cut short)
/// is redacted to the end of the text; an END whose BEGIN is missing (a tail
/// that starts inside the block) takes the base64 lines before it along.
pub fn redact(text: &str) -> String {
    let mut text = Cow::Borrowed(text);
    // The key rules cost most and almost never match: a quick look first.
    let has_key = text.contains("PRIVATE KEY");
    for pass in RULES.chunk_by(|a, b| a.pass == b.pass) {
        if pass[0].pass <= 2 && !has_key {
            continue;
        }
        if let Cow::Owned(changed) = apply(pass, &text) {
            text = Cow::Owned(changed);
        }
    }
    text.into_owned()
}

/// `redact` over lines joined by `\n`, split again. A private key block
/// collapses to one line, so the result can be shorter than the input.
pub fn redact_lines(lines: &[&str]) -> Vec<String> {
    if lines.is_empty() {
        return Vec::new();
    }
    redact(&lines.join("\n"))
        .split('\n')
        .map(str::to_string)
        .collect()
}

/// One kind of secret.
struct Rule {
    /// Read by the tests, which give each rule its own row.
    #[cfg_attr(not(test), allow(dead_code))]
    name: &'static str,
    /// Rules of one pass scan the text together: where several match, the
    /// earliest wins, and at one place the first in the table.
    pass: u8,
    regex: Regex,
    /// Given the text and a match, what to replace, or `None` when the match
    /// is no secret after all.
    secret: SecretFn,
}

type SecretFn = fn(&str, &Captures) -> Option<Secret>;

/// A part of the text and what it becomes.
struct Secret {
    span: Range<usize>,
    with: Cow<'static, str>,
}

// Pieces of the patterns below.
const KEY_LABEL: &str = r"[^\n-]*PRIVATE KEY[^\n-]*-----";
const AUTHORITY: &str = r#"[^ \t\n\x0C\r/?#"'<>`)\]},"#;

/// The secrets, pass by pass: key blocks first, because their base64 would
/// otherwise feed the other rules; labels last, so a value a key rule
/// already replaced is left alone.
static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    #[rustfmt::skip]
    let rules: [(&str, u8, String, SecretFn); 11] = [
        // BEGIN through END, or through the end of a log cut short.
        ("private key block", 1, format!(r"-----BEGIN {KEY_LABEL}(?s:.*?)(?:-----END {KEY_LABEL}|\z)"), whole_key),
        // A tail that starts inside a block: its END and the base64 above.
        ("private key tail", 2, format!(r"(?m)(?:^[^\S\n]*[A-Za-z0-9+/=]{{16,}}[^\S\n]*\n)*(?P<keep>[^\n]*?)[A-Za-z0-9+/=\\]*-----END {KEY_LABEL}"), key_tail),
        // `scheme://user:password@host` keeps the user.
        ("url credentials", 3, format!("://{AUTHORITY}:]*:(?P<secret>{AUTHORITY}]+)@{AUTHORITY}@]*"), group),
        ("anthropic key", 4, r"sk-ant-[A-Za-z0-9_-]{16,}".into(), word),
        ("openai key", 4, r"sk-(?:proj-)?(?P<body>[A-Za-z0-9_-]{20,})".into(), openai_key),
        ("github fine-grained token", 4, r"github_pat_[A-Za-z0-9_]{20,}".into(), word),
        ("github token", 4, r"gh[pousr]_[A-Za-z0-9]{20,}".into(), word),
        ("slack token", 4, r"xox[abpr]-[A-Za-z0-9-]{10,}".into(), word),
        ("aws access key id", 4, r"(?:AKIA|ASIA)[A-Z0-9]{16}".into(), whole_word),
        ("bearer token", 5, r"(?i-u:bearer)[ \t]+(?P<secret>[A-Za-z0-9._~+/=-]+)".into(), bearer_token),
        ("labelled secret", 6, labelled_key_pattern(), labelled_value),
    ];
    rules
        .into_iter()
        .map(|(name, pass, pattern, secret)| Rule {
            name,
            pass,
            regex: Regex::new(&pattern).unwrap_or_else(|e| panic!("redaction rule {name}: {e}")),
            secret,
        })
        .collect()
});

/// Runs one pass over the text: `Borrowed` when it found nothing.
fn apply<'t>(pass: &[Rule], text: &'t str) -> Cow<'t, str> {
    let next_char = |at: usize| at + text[at..].chars().next().map_or(1, char::len_utf8);
    let find = |rule: &Rule, at: usize| {
        (at <= text.len())
            .then(|| rule.regex.captures_at(text, at))
            .flatten()
    };
    let mut found: Vec<Option<Captures>> = pass.iter().map(|rule| find(rule, 0)).collect();
    let mut out = String::new();
    let (mut copied, mut changed) = (0, false);
    while let Some(first) = (0..pass.len())
        .filter_map(|i| Some((found[i].as_ref()?.get(0)?.start(), i)))
        .min()
    {
        let (start, i) = first;
        let candidate = found[i].take().expect("a match");
        match (pass[i].secret)(text, &candidate) {
            Some(secret) => {
                out.push_str(&text[copied..secret.span.start]);
                out.push_str(&secret.with);
                copied = secret.span.end;
                changed = true;
                let at = copied.max(next_char(start));
                for (rule, slot) in pass.iter().zip(found.iter_mut()) {
                    if slot
                        .as_ref()
                        .is_none_or(|c| c.get(0).is_some_and(|m| m.start() < at))
                    {
                        *slot = find(rule, at);
                    }
                }
            }
            None => found[i] = find(&pass[i], next_char(start).max(copied)),
        }
    }
    if !changed {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

// ---------------------------------------------------------------------------
// What each rule replaces

fn redacted(span: Range<usize>) -> Option<Secret> {
    Some(Secret {
        span,
        with: Cow::Borrowed(REDACTED),
    })
}

/// True when no ASCII letter or digit comes right before `at`, so a prefix
/// found there starts a word ("sk-" in "task-list" does not).
fn starts_word(text: &str, at: usize) -> bool {
    at == 0 || !text.as_bytes()[at - 1].is_ascii_alphanumeric()
}

fn ends_word(text: &str, at: usize) -> bool {
    text.as_bytes()
        .get(at)
        .is_none_or(|b| !b.is_ascii_alphanumeric())
}

fn whole_key(_: &str, found: &Captures) -> Option<Secret> {
    Some(Secret {
        span: found.get(0)?.range(),
        with: Cow::Borrowed(REDACTED_PRIVATE_KEY),
    })
}

/// The END line's own text before the key's last base64 stays.
fn key_tail(_: &str, found: &Captures) -> Option<Secret> {
    Some(Secret {
        span: found.get(0)?.range(),
        with: Cow::Owned(format!("{}{REDACTED_PRIVATE_KEY}", &found["keep"])),
    })
}

/// The group `secret`, unless it is one a previous pass wrote.
fn group(_: &str, found: &Captures) -> Option<Secret> {
    let secret = found.name("secret")?;
    (!secret.as_str().starts_with("[REDACTED")).then_some(())?;
    redacted(secret.range())
}

fn word(text: &str, found: &Captures) -> Option<Secret> {
    let whole = found.get(0)?;
    starts_word(text, whole.start()).then_some(())?;
    redacted(whole.range())
}

fn whole_word(text: &str, found: &Captures) -> Option<Secret> {
    ends_word(text, found.get(0)?.end()).then_some(())?;
    word(text, found)
}

fn openai_key(text: &str, found: &Captures) -> Option<Secret> {
    let body = found.name("body")?.as_str();
    // `sk-ant-` keys are the rule above's; a `sk-proj-` key's body is what
    // follows `proj-`, however short.
    let prefix = &found.get(0)?.as_str()[..found.get(0)?.len() - body.len()];
    let whole_prefix =
        prefix == "sk-proj-" || !(body.starts_with("ant-") || body.starts_with("proj-"));
    (whole_prefix && body.bytes().any(|b| b.is_ascii_digit())).then_some(())?;
    word(text, found)
}

/// Real tokens are long and random; the word after "Bearer" in prose
/// ("Bearer authentication") is short or holds no digit.
fn bearer_token(text: &str, found: &Captures) -> Option<Secret> {
    let token = found.name("secret")?.as_str();
    let long_and_random =
        token.len() >= 8 && (token.bytes().any(|b| b.is_ascii_digit()) || token.len() >= 32);
    (long_and_random && starts_word(text, found.get(0)?.start())).then_some(())?;
    group(text, found)
}

// ---------------------------------------------------------------------------
// Labelled values: password=..., "api_key": "...", Authorization: ...

/// Key names whose value is a secret, by ending, ignoring case and the
/// `_ - .` between letters: `DB_PASSWORD`, `x-api-key` and
/// `aws_secret_access_key` are caught, while `max_tokens` (ends in
/// "tokens") and `token_limit` are whole other keys. `authorization` is
/// apart because its value may start with a scheme that stays.
const SECRET_KEY_ENDINGS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "secretkey",
    "secretaccesskey",
    "privatekey",
];

/// The ending as a pattern: any case, `_ - .` allowed between letters.
fn loose(ending: &str) -> String {
    let letters: Vec<String> = ending
        .chars()
        .map(|c| format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase()))
        .collect();
    letters.join("[_.-]*")
}

/// A key with a secret ending, an optional closing quote (`"key":`,
/// `\"key\":`) and the `=` or `:` after it.
fn labelled_key_pattern() -> String {
    let endings: Vec<String> = SECRET_KEY_ENDINGS.iter().map(|e| loose(e)).collect();
    format!(
        r#"[A-Za-z0-9_.-]*(?:{}|(?P<auth>{}))[_.-]*(?:\\?["'])?[ \t]*[=:]"#,
        endings.join("|"),
        loose("authorization")
    )
}

/// The value after the separator: `\"...\"` (JSON inside a string), `"..."`
/// and `'...'` (a backslash escapes the quote) to the closing quote or the
/// end of the line, else up to whitespace or punctuation. `{scheme}` is where
/// an Authorization value's scheme goes.
const VALUE: &str = r#"^[ \t]*(?:\\"{scheme}(?P<v1>[^\r\n]*?)(?:\\"|[\r\n]|$)|"{scheme}(?P<v2>(?:\\"|[^"\r\n])*)|'{scheme}(?P<v3>(?:\\'|[^'\r\n])*)|{scheme}(?P<v4>[^ \t\n\x0C\r&,;"'<>)\]}`]*))"#;
const AUTH_SCHEME: &str = r"(?:(?i-u:bearer|basic|token|digest|negotiate)[ \t]+)?";

static PLAIN_VALUE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&VALUE.replace("{scheme}", "")).expect("value pattern"));
static AUTH_VALUE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&VALUE.replace("{scheme}", AUTH_SCHEME)).expect("value pattern"));

/// The value after a secret key's separator, unless the separator is part
/// of `==`, `:=`, `::` or a URL's `://`.
fn labelled_value(text: &str, found: &Captures) -> Option<Secret> {
    let sep = found.get(0)?.end() - 1;
    let after = text.as_bytes().get(sep + 1).copied().unwrap_or(b' ');
    let separates = match text.as_bytes()[sep] {
        b'=' => after != b'=',
        _ => !matches!(after, b':' | b'=' | b'/'),
    };
    separates.then_some(())?;
    let value_regex = if found.name("auth").is_some() {
        &AUTH_VALUE
    } else {
        &PLAIN_VALUE
    };
    let value_found = value_regex.captures(&text[sep + 1..])?;
    let value = (1..=4).find_map(|i| value_found.name(&format!("v{i}")))?;
    let value_text = value.as_str();
    (!value_text.is_empty() && !value_text.starts_with("[REDACTED")).then_some(())?;
    redacted(sep + 1 + value.start()..sep + 1 + value.end())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rule, alone: a text it redacts (and what to), and a near miss
    /// it must leave alone.
    #[rustfmt::skip]
    #[test]
    fn each_rule_catches_its_secret_and_spares_its_near_miss() {
        let rows: Vec<(&str, &str, &str, &str)> = vec![
            ("private key block", "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIB\n-----END RSA PRIVATE KEY-----\nb", "a\n[REDACTED PRIVATE KEY]\nb", "-----BEGIN CERTIFICATE-----\nMIIEpAIB"),
            ("private key tail", "QWERTYUIOPasdfghjkl0987654321zz==\n-----END EC PRIVATE KEY-----\nb", "[REDACTED PRIVATE KEY]\nb", "-----END CERTIFICATE-----"),
            ("url credentials", "https://bob:hunter2@github.com/o", "https://bob:[REDACTED]@github.com/o", "ssh://git@github.com:22/o"),
            ("anthropic key", "key sk-ant-api03-AbCdEfGhIjKlMnOp", "key [REDACTED]", "sk-ant-short"),
            ("openai key", "sk-proj-Ab12Cd34Ef56Gh78Ij90KlMnOpQr", "[REDACTED]", "sk-learn-is-a-nickname-of-a-library"),
            ("github fine-grained token", "github_pat_11ABCDEFG0123456789_abc", "[REDACTED]", "github_pat_short"),
            ("github token", "ghs_16C7e42F292c6912E7710c838347Ae178B4a,", "[REDACTED],", "ghp_short"),
            ("slack token", "xoxb-123456789012-AbCdEf ok", "[REDACTED] ok", "xoxb-123"),
            ("aws access key id", "id=AKIAIOSFODNN7EXAMPLE.", "id=[REDACTED].", "AKIAIOSFODNN7EXAMPLEX"),
            ("bearer token", "sent bearer 0123456789abcdef", "sent bearer [REDACTED]", "use Bearer authentication"),
            ("labelled secret", "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "AWS_SECRET_ACCESS_KEY=[REDACTED]", "max_tokens=4096"),
        ];
        let names: Vec<&str> = RULES.iter().map(|rule| rule.name).collect();
        assert_eq!(names, rows.iter().map(|row| row.0).collect::<Vec<_>>(), "one row per rule, in order");
        for (rule, (name, secret, expected, near_miss)) in RULES.iter().zip(rows) {
            let alone = std::slice::from_ref(rule);
            assert_eq!(apply(alone, secret), expected, "rule {name} on its secret");
            assert_eq!(apply(alone, near_miss), near_miss, "rule {name} on its near miss");
        }
    }

    /// Secrets whose redaction is known to the letter.
    #[rustfmt::skip]
    #[test]
    fn redacts_secrets_exactly() {
        let cases: Vec<(&str, &str, &str)> = vec![
            ("anthropic key", "using key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_xyzAA now", "using key [REDACTED] now"),
            ("openai key", "OPENAI sk-AbCdEfGh1234567890IjKlMnOp", "OPENAI [REDACTED]"),
            ("openai project key", "key=sk-proj-Ab12Cd34Ef56Gh78Ij90KlMnOpQr", "key=[REDACTED]"),
            ("github classic token", "push with ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 failed", "push with [REDACTED] failed"),
            ("github oauth token", "gho_16C7e42F292c6912E7710c838347Ae178B4a", "[REDACTED]"),
            ("github user-to-server token", "(ghu_16C7e42F292c6912E7710c838347Ae178B4a)", "([REDACTED])"),
            ("github server token", "ghs_16C7e42F292c6912E7710c838347Ae178B4a,", "[REDACTED],"),
            ("github refresh token", "ghr_1B4a2e77838347a7E420ce178F2E7c6912E169246c34E1ccbF66C46812d16D", "[REDACTED]"),
            ("github fine-grained token", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "[REDACTED]"),
            ("slack bot token", "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKl ok", "slack [REDACTED] ok"),
            ("slack user token", "xoxp-1234567890-abcdefghij", "[REDACTED]"),
            ("aws access key id", "aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "aws_access_key_id = [REDACTED]"),
            ("aws session key id", "id ASIAY34FZKBOKMUTVV7A.", "id [REDACTED]."),
            ("aws secret, labelled with spaces", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key = [REDACTED]"),
            ("aws secret, env style", "export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "export AWS_SECRET_ACCESS_KEY=[REDACTED]"),
            ("authorization bearer header", "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.dGVzdA", "Authorization: Bearer [REDACTED]"),
            ("bearer in lower case", "curl -H 'authorization: bearer abc123def456ghi'", "curl -H 'authorization: bearer [REDACTED]'"),
            ("bearer in upper case without header", "sent BEARER 0123456789abcdef0123", "sent BEARER [REDACTED]"),
            ("authorization basic", "Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [REDACTED]"),
            ("password=", "connect password=hunter2 host=db", "connect password=[REDACTED] host=db"),
            ("passwd:", "passwd: s3cr3t!", "passwd: [REDACTED]"),
            ("quoted secret", "secret=\"two words\" next", "secret=\"[REDACTED]\" next"),
            ("single-quoted token", "token='abc.def' done", "token='[REDACTED]' done"),
            ("api_key upper case key", "API_KEY=1234abcd", "API_KEY=[REDACTED]"),
            ("apikey colon", "apikey: qwerty12", "apikey: [REDACTED]"),
            ("json password", r#"{"user": "bob", "password": "hunter2", "n": 1}"#, r#"{"user": "bob", "password": "[REDACTED]", "n": 1}"#),
            ("json with escaped quotes inside a string", r#"body: "{\"password\": \"p@ss\"}""#, r#"body: "{\"password\": \"[REDACTED]\"}""#),
            ("json escaped quote inside the value", r#"{"token": "ab\"cd", "x": 1}"#, r#"{"token": "[REDACTED]", "x": 1}"#),
            ("token in a query string", "GET /cb?access_token=abc123&state=xyz", "GET /cb?access_token=[REDACTED]&state=xyz"),
            ("x-api-key header", "x-api-key: key-1234567890", "x-api-key: [REDACTED]"),
            ("github token in env var keeps its name", "GITHUB_TOKEN=ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "GITHUB_TOKEN=[REDACTED]"),
            ("url credentials", "cloning https://bob:hunter2@github.com/org/repo.git", "cloning https://bob:[REDACTED]@github.com/org/repo.git"),
            ("url credentials holding a token", "postgres://app:s3cr3t@db.internal:5432/main", "postgres://app:[REDACTED]@db.internal:5432/main"),
            ("url with a token as password", "https://x-access-token:ghs_16C7e42F292c6912E7710c838347Ae178B4a@github.com", "https://x-access-token:[REDACTED]@github.com"),
            ("private key block", "before\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1234567890abcdef\nQWERTYUIOPasdfghjkl0987654321zz==\n-----END RSA PRIVATE KEY-----\nafter", "before\n[REDACTED PRIVATE KEY]\nafter"),
            ("openssh private key block", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----", "[REDACTED PRIVATE KEY]"),
            ("private key on one line, json-escaped", r#"{"private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----\n", "id": 3}"#, r#"{"private_key": "[REDACTED PRIVATE KEY]\n", "id": 3}"#),
            ("private key cut off before its end", "key:\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oq\n", "key:\n[REDACTED PRIVATE KEY]"),
            ("tail starting inside a private key", "MIIEpAIBAAKCAQEA1234567890abcdef\nQWERTYUIOPasdfghjkl0987654321zz==\n-----END RSA PRIVATE KEY-----\nnext line", "[REDACTED PRIVATE KEY]\nnext line"),
            ("tail inside a key, text before its end", "MIIEpAIBAAKCAQEA1234567890abcdef\nlog: QWERTYUIOP==-----END RSA PRIVATE KEY-----", "log: [REDACTED PRIVATE KEY]"),
        ];
        for (name, input, expected) in cases {
            assert_eq!(redact(input), expected, "case: {name}");
        }
    }

    /// Secrets whose surroundings are long: the secret must be gone, the
    /// rest kept.
    #[rustfmt::skip]
    #[test]
    fn removes_the_secret_and_keeps_the_rest() {
        let cases: Vec<(&str, &str, &str, &[&str])> = vec![
            ("claude error echoing a key", "API Error: 401 {\"error\":{\"message\":\"invalid x-api-key sk-ant-api03-ZZZZZZZZZZZZZZZZZZZZ1\"}}", "sk-ant-api03-ZZZZZZZZZZZZZZZZZZZZ1", &["API Error: 401", "invalid x-api-key"]),
            ("two secrets on one line", "password=hunter2 token=abcdef123456 user=bob", "hunter2", &["user=bob", "password=[REDACTED]", "token=[REDACTED]"]),
            ("git remote in a command", "$ git push https://ci:ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789@github.com/o/r main", "ghp_AbCd", &["git push https://ci:", "@github.com/o/r main"]),
        ];
        for (name, input, secret, kept) in cases {
            let output = redact(input);
            assert!(!output.contains(secret), "case {name}: {output}");
            for part in kept {
                assert!(output.contains(part), "case {name}: {part:?} lost in {output}");
            }
        }
    }

    #[test]
    fn leaves_near_misses_alone() {
        let near_misses = [
            "enter your password",
            "Password:",
            "token limit exceeded",
            "max_tokens=4096",
            "input_tokens: 1200, output_tokens: 88",
            "token_limit=200000",
            "task-list is empty; disk-usage at 80%; risk-free change",
            "sk-learn is a nickname",
            "commit a1b2c3d fixed it",
            "task 3f2a9c1e-7b4d-4e8a-9c6f-1d2e3f4a5b6c completed",
            "AKIA alone is not a key",
            "AKIAIOSFODNN7EXAMPLEX is too long to be an id",
            "the realm uses Bearer",
            "use Bearer authentication for the API.",
            "mail bob@example.com about it",
            "see /home/bob/.ssh/config and ./src/main.rs",
            "ssh://git@github.com/org/repo.git",
            "https://github.com/org/repo/pull/12",
            "if token == null { return }",
            "tokenizer::Token::new()",
            "ghp_short",
            "-----BEGIN CERTIFICATE-----",
            "10:30:00 INFO elapsed=3s",
        ];
        for text in near_misses {
            assert_eq!(redact(text), text, "near miss changed");
        }
    }

    #[test]
    fn keeps_lines_around_a_key_block_in_redact_lines() {
        let lines = [
            "start",
            "-----BEGIN PRIVATE KEY-----",
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
            "-----END PRIVATE KEY-----",
            "password=hunter2",
        ];
        assert_eq!(
            redact_lines(&lines),
            vec!["start", "[REDACTED PRIVATE KEY]", "password=[REDACTED]"]
        );
        assert!(redact_lines(&[]).is_empty());
    }

    #[test]
    fn redacting_twice_changes_nothing_more() {
        let texts = [
            "Authorization: Bearer abc123def456ghi password=x",
            "https://u:p@h/x token='q' AKIAIOSFODNN7EXAMPLE",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        ];
        for text in texts {
            let once = redact(text);
            assert_eq!(redact(&once), once);
        }
    }

    /// Cut anywhere, mixed with multi-byte text, the rules must neither
    /// panic nor leave a whole secret behind.
    #[test]
    fn survives_every_cut_of_tricky_text() {
        let text = "é password=\"mö\\\"t\" ✓sk-ant-api03-ÄÖÜ sk-proj-Ab12Cd34Ef56Gh78Ij90KlMn \
                    https://u:pä@h/ Bearer ééé12345678 AKIAIOSFODNN7EXAMPLE\n\
                    -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----";
        for (cut, _) in text.char_indices() {
            for part in [&text[..cut], &text[cut..]] {
                let once = redact(part);
                assert_eq!(redact(&once), once, "not idempotent on {part:?}");
                assert!(!once.contains("AKIAIOSFODNN7EXAMPLE"), "{once}");
                assert!(!once.contains("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"), "{once}");
            }
        }
    }

    #[test]
    fn keeps_non_ascii_text_intact() {
        assert_eq!(
            redact("été — password=mötley café ✓"),
            "été — password=[REDACTED] café ✓"
        );
    }
}
