//! Secret redaction: everything a worker log can leak — API keys, tokens,
//! passwords, AWS keys, private key blocks, credentials in URLs — is replaced
//! by `[REDACTED]` before a log tail is stored, printed or handed to the next
//! worker. Where a secret has a label (`password=`, `Authorization: Bearer`,
//! `"api_key":`), the label stays so the reader still sees what was there.
//!
//! `redact` takes whole texts, newlines included, because a private key block
//! spans lines; `redact_lines` is the same for a slice of lines. Hand-rolled
//! scanners, no regex: each pass finds its spans and the spans are replaced
//! in one sweep. Redacting twice gives the same text as redacting once.
//!
//! The rules lean towards redacting: a harmless word lost after `token:` costs
//! less than a key kept. Unquoted labelled values end at whitespace or at one
//! of `& , ; " ' < > ) ] } \``, so a password holding one of those is cut
//! there and its tail survives; quoted values are redacted whole.

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
    let text = redact_private_key_blocks(text);
    let text = redact_url_credentials(&text);
    let text = redact_prefixed_tokens(&text);
    let text = redact_bearer_tokens(&text);
    redact_labelled_values(&text)
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

/// A part of the text to replace; the parts of one pass are in order and do
/// not overlap.
struct Span {
    start: usize,
    end: usize,
}

fn replace_spans(text: &str, spans: &[Span]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied_up_to = 0;
    for span in spans {
        out.push_str(&text[copied_up_to..span.start]);
        out.push_str(REDACTED);
        copied_up_to = span.end;
    }
    out.push_str(&text[copied_up_to..]);
    out
}

fn is_alnum(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
}

/// True when no letter or digit comes right before `at`, so a prefix found
/// there starts a word ("sk-" in "task-list" does not).
fn starts_word(bytes: &[u8], at: usize) -> bool {
    at == 0 || !is_alnum(bytes[at - 1])
}

/// The end of the run of bytes satisfying `accept` from `from`.
fn run_end(bytes: &[u8], from: usize, accept: impl Fn(u8) -> bool) -> usize {
    let mut at = from;
    while at < bytes.len() && accept(bytes[at]) {
        at += 1;
    }
    at
}

fn already_redacted(value: &str) -> bool {
    value.starts_with("[REDACTED")
}

// ---------------------------------------------------------------------------
// Private key blocks

/// Where a `-----BEGIN ... PRIVATE KEY...-----` (or END) marker is in the
/// line: its start and the end of its closing dashes.
fn find_key_marker(line: &str, opening: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(found) = line[from..].find(opening) {
        let start = from + found;
        let label_start = start + opening.len();
        let label_len = line[label_start..].find("-----")?;
        let label = &line[label_start..label_start + label_len];
        if label.contains("PRIVATE KEY") {
            return Some((start, label_start + label_len + "-----".len()));
        }
        from = label_start;
    }
    None
}

const KEY_BEGIN: &str = "-----BEGIN ";
const KEY_END: &str = "-----END ";

fn is_base64_byte(byte: u8) -> bool {
    is_alnum(byte) || matches!(byte, b'+' | b'/' | b'=')
}

/// A line of a key body: base64 only, long enough not to be a stray word.
fn is_base64_line(line: &str) -> bool {
    let body = line.trim();
    body.len() >= 16 && body.bytes().all(is_base64_byte)
}

fn redact_private_key_blocks(text: &str) -> String {
    if !text.contains("PRIVATE KEY") {
        return text.to_string();
    }
    let mut pieces: Vec<String> = Vec::new();
    let mut inside_block = false;
    for line in text.split_inclusive('\n') {
        if inside_block {
            if let Some((_, end)) = find_key_marker(line, KEY_END) {
                pieces.push(line[end..].to_string());
                inside_block = false;
            }
            continue;
        }
        if let Some((begin, begin_end)) = find_key_marker(line, KEY_BEGIN) {
            let mut piece = format!("{}{REDACTED_PRIVATE_KEY}", &line[..begin]);
            let rest = &line[begin_end..];
            match find_key_marker(rest, KEY_END) {
                // A key on one line, as in JSON with escaped newlines.
                Some((_, end)) => piece.push_str(&rest[end..]),
                None => inside_block = true,
            }
            pieces.push(piece);
        } else if let Some((end_start, end)) = find_key_marker(line, KEY_END) {
            // The tail starts inside the block: its body lines came first.
            while pieces.last().is_some_and(|piece| is_base64_line(piece)) {
                pieces.pop();
            }
            let before = line[..end_start]
                .trim_end_matches(|c: char| c.is_ascii() && (is_base64_byte(c as u8) || c == '\\'));
            pieces.push(format!("{before}{REDACTED_PRIVATE_KEY}{}", &line[end..]));
        } else {
            pieces.push(line.to_string());
        }
    }
    pieces.concat()
}

// ---------------------------------------------------------------------------
// Credentials in URLs

/// Bytes that end a URL's authority (`user:pass@host:port`).
fn ends_authority(byte: u8) -> bool {
    byte.is_ascii_whitespace()
        || matches!(
            byte,
            b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'`' | b')' | b']' | b'}' | b','
        )
}

/// `scheme://user:pass@host` keeps the user and hides the password.
fn redact_url_credentials(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let authority_start = from + found + "://".len();
        let authority_end = run_end(bytes, authority_start, |b| !ends_authority(b));
        let authority = &text[authority_start..authority_end];
        if let Some(at) = authority.rfind('@') {
            if let Some(colon) = authority[..at].find(':') {
                let password = &authority[colon + 1..at];
                if !password.is_empty() && !already_redacted(password) {
                    spans.push(Span {
                        start: authority_start + colon + 1,
                        end: authority_start + at,
                    });
                }
            }
        }
        from = authority_end;
    }
    replace_spans(text, &spans)
}

// ---------------------------------------------------------------------------
// Keys recognisable by their prefix

fn is_key_body_byte(byte: u8) -> bool {
    is_alnum(byte) || byte == b'_' || byte == b'-'
}

fn is_word_byte(byte: u8) -> bool {
    is_alnum(byte) || byte == b'_'
}

fn is_aws_id_byte(byte: u8) -> bool {
    byte.is_ascii_uppercase() || byte.is_ascii_digit()
}

/// The end of the key starting at `at`, when one does.
fn prefixed_token_end(text: &str, at: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let rest = &text[at..];
    let body = |prefix_len: usize, accept: fn(u8) -> bool| {
        let start = at + prefix_len;
        (start, run_end(bytes, start, accept))
    };

    if rest.starts_with("sk-") {
        // Anthropic keys are distinctive enough by their prefix; a bare
        // `sk-` must be long and hold a digit, as random keys do and words
        // joined by hyphens do not.
        if rest.starts_with("sk-ant-") {
            let (start, end) = body("sk-ant-".len(), is_key_body_byte);
            return (end - start >= 16).then_some(end);
        }
        let prefix_len = if rest.starts_with("sk-proj-") {
            "sk-proj-".len()
        } else {
            "sk-".len()
        };
        let (start, end) = body(prefix_len, is_key_body_byte);
        let has_digit = bytes[start..end].iter().any(u8::is_ascii_digit);
        return (end - start >= 20 && has_digit).then_some(end);
    }
    if rest.starts_with("github_pat_") {
        let (start, end) = body("github_pat_".len(), is_word_byte);
        return (end - start >= 20).then_some(end);
    }
    for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
        if rest.starts_with(prefix) {
            let (start, end) = body(prefix.len(), is_alnum);
            return (end - start >= 20).then_some(end);
        }
    }
    let slack = rest.as_bytes();
    if slack.len() > 4
        && rest.starts_with("xox")
        && matches!(slack[3], b'a' | b'b' | b'p' | b'r')
        && slack[4] == b'-'
    {
        let (start, end) = body(5, |b| is_alnum(b) || b == b'-');
        return (end - start >= 10).then_some(end);
    }
    if rest.starts_with("AKIA") || rest.starts_with("ASIA") {
        let (start, end) = body(4, is_aws_id_byte);
        let whole_word = end == bytes.len() || !is_alnum(bytes[end]);
        return (end - start == 16 && whole_word).then_some(end);
    }
    None
}

/// Anthropic, OpenAI, GitHub, Slack keys and AWS access key ids.
fn redact_prefixed_tokens(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        // Every prefix starts with an ASCII letter, which is also never
        // inside a multi-byte character, so slicing there is safe.
        if bytes[at].is_ascii_alphabetic() && starts_word(bytes, at) {
            if let Some(end) = prefixed_token_end(text, at) {
                spans.push(Span { start: at, end });
                at = end;
                continue;
            }
        }
        at += 1;
    }
    replace_spans(text, &spans)
}

// ---------------------------------------------------------------------------
// Bearer tokens

fn is_bearer_token_byte(byte: u8) -> bool {
    is_alnum(byte) || matches!(byte, b'.' | b'_' | b'~' | b'+' | b'/' | b'=' | b'-')
}

/// Real tokens are long and random; the word after "Bearer" in prose
/// ("Bearer authentication") is short or holds no digit.
fn looks_like_token(token: &str) -> bool {
    token.len() >= 8 && (token.bytes().any(|b| b.is_ascii_digit()) || token.len() >= 32)
}

fn redact_bearer_tokens(text: &str) -> String {
    let bytes = text.as_bytes();
    let lower = text.to_ascii_lowercase();
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(found) = lower[from..].find("bearer") {
        let word_start = from + found;
        let word_end = word_start + "bearer".len();
        from = word_end;
        if !starts_word(bytes, word_start) {
            continue;
        }
        let token_start = run_end(bytes, word_end, |b| b == b' ' || b == b'\t');
        if token_start == word_end {
            continue;
        }
        let token_end = run_end(bytes, token_start, is_bearer_token_byte);
        if looks_like_token(&text[token_start..token_end]) {
            spans.push(Span {
                start: token_start,
                end: token_end,
            });
            from = token_end;
        }
    }
    replace_spans(text, &spans)
}

// ---------------------------------------------------------------------------
// Labelled values: password=..., "api_key": "...", Authorization: ...

/// Key names whose value is a secret, compared on the key lower-cased with
/// everything but letters and digits dropped, by ending: `DB_PASSWORD`,
/// `x-api-key` and `aws_secret_access_key` are caught, while `max_tokens`
/// (ends in "tokens") and `token_limit` are whole other keys.
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
    "authorization",
];

/// Authorization schemes kept in front of the redacted credentials.
const AUTH_SCHEMES: &[&str] = &["bearer", "basic", "token", "digest", "negotiate"];

fn is_key_name_byte(byte: u8) -> bool {
    is_alnum(byte) || matches!(byte, b'_' | b'-' | b'.')
}

fn compact_key(key: &str) -> String {
    key.bytes()
        .filter(|b| is_alnum(*b))
        .map(|b| b.to_ascii_lowercase() as char)
        .collect()
}

fn is_secret_key(key: &str) -> bool {
    let compact = compact_key(key);
    SECRET_KEY_ENDINGS
        .iter()
        .any(|ending| compact.ends_with(ending))
}

fn ends_unquoted_value(byte: u8) -> bool {
    byte.is_ascii_whitespace()
        || matches!(
            byte,
            b'&' | b',' | b';' | b'"' | b'\'' | b'<' | b'>' | b')' | b']' | b'}' | b'`'
        )
}

/// The key name right before the separator at `sep`: spaces, then an
/// optional closing quote (`"key":`, `\"key\":`), then the name.
fn key_before(text: &str, sep: usize) -> &str {
    let bytes = text.as_bytes();
    let mut at = sep;
    while at > 0 && matches!(bytes[at - 1], b' ' | b'\t') {
        at -= 1;
    }
    if at > 0 && matches!(bytes[at - 1], b'"' | b'\'') {
        at -= 1;
        if at > 0 && bytes[at - 1] == b'\\' {
            at -= 1;
        }
    }
    let name_end = at;
    while at > 0 && is_key_name_byte(bytes[at - 1]) {
        at -= 1;
    }
    &text[at..name_end]
}

/// The end of the line holding `from`.
fn line_end(bytes: &[u8], from: usize) -> usize {
    run_end(bytes, from, |b| b != b'\n' && b != b'\r')
}

/// The span of the value after the separator at `sep`, without its quotes
/// and, for an Authorization value, without its scheme.
fn value_after(text: &str, sep: usize, is_authorization: bool) -> Option<Span> {
    let bytes = text.as_bytes();
    let mut start = run_end(bytes, sep + 1, |b| b == b' ' || b == b'\t');
    let closing: Option<&str> = if text[start..].starts_with("\\\"") {
        start += 2;
        Some("\\\"")
    } else if start < bytes.len() && matches!(bytes[start], b'"' | b'\'') {
        start += 1;
        Some(if bytes[start - 1] == b'"' { "\"" } else { "'" })
    } else {
        None
    };
    if is_authorization {
        let scheme_end = run_end(bytes, start, |b| b.is_ascii_alphabetic());
        let scheme = text[start..scheme_end].to_ascii_lowercase();
        let after_spaces = run_end(bytes, scheme_end, |b| b == b' ' || b == b'\t');
        if AUTH_SCHEMES.contains(&scheme.as_str()) && after_spaces > scheme_end {
            start = after_spaces;
        }
    }
    let end = match closing {
        Some(quote) => {
            let line_end = line_end(bytes, start);
            let mut at = start;
            loop {
                match text[at..line_end].find(quote) {
                    // A backslash before a plain quote escapes it.
                    Some(found)
                        if quote.len() == 1
                            && found + at > start
                            && bytes[at + found - 1] == b'\\' =>
                    {
                        at += found + 1;
                    }
                    Some(found) => break at + found,
                    None => break line_end,
                }
            }
        }
        None => run_end(bytes, start, |b| !ends_unquoted_value(b)),
    };
    let value = &text[start..end];
    (!value.is_empty() && !already_redacted(value)).then_some(Span { start, end })
}

/// A `=` or `:` that separates a key from a value, not `==`, `!=`, `::`,
/// `:=` or the `://` of a URL.
fn is_separator(bytes: &[u8], at: usize) -> bool {
    let before = if at > 0 { bytes[at - 1] } else { b' ' };
    let after = bytes.get(at + 1).copied().unwrap_or(b' ');
    match bytes[at] {
        b'=' => !matches!(before, b'=' | b'!' | b'<' | b'>' | b':') && after != b'=',
        b':' => before != b':' && !matches!(after, b':' | b'=' | b'/'),
        _ => false,
    }
}

fn redact_labelled_values(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if is_separator(bytes, at) {
            let key = key_before(text, at);
            if !key.is_empty() && is_secret_key(key) {
                let is_authorization = compact_key(key).ends_with("authorization");
                if let Some(span) = value_after(text, at, is_authorization) {
                    at = span.end;
                    spans.push(span);
                    continue;
                }
            }
        }
        at += 1;
    }
    replace_spans(text, &spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Secrets whose redaction is known to the letter.
    #[test]
    fn redacts_secrets_exactly() {
        let cases: Vec<(&str, &str, &str)> = vec![
            (
                "anthropic key",
                "using key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_xyzAA now",
                "using key [REDACTED] now",
            ),
            (
                "openai key",
                "OPENAI sk-AbCdEfGh1234567890IjKlMnOp",
                "OPENAI [REDACTED]",
            ),
            (
                "openai project key",
                "key=sk-proj-Ab12Cd34Ef56Gh78Ij90KlMnOpQr",
                "key=[REDACTED]",
            ),
            (
                "github classic token",
                "push with ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 failed",
                "push with [REDACTED] failed",
            ),
            (
                "github oauth token",
                "gho_16C7e42F292c6912E7710c838347Ae178B4a",
                "[REDACTED]",
            ),
            (
                "github user-to-server token",
                "(ghu_16C7e42F292c6912E7710c838347Ae178B4a)",
                "([REDACTED])",
            ),
            (
                "github server token",
                "ghs_16C7e42F292c6912E7710c838347Ae178B4a,",
                "[REDACTED],",
            ),
            (
                "github refresh token",
                "ghr_1B4a2e77838347a7E420ce178F2E7c6912E169246c34E1ccbF66C46812d16D",
                "[REDACTED]",
            ),
            (
                "github fine-grained token",
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
                "[REDACTED]",
            ),
            (
                "slack bot token",
                "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKl ok",
                "slack [REDACTED] ok",
            ),
            (
                "slack user token",
                "xoxp-1234567890-abcdefghij",
                "[REDACTED]",
            ),
            (
                "aws access key id",
                "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
                "aws_access_key_id = [REDACTED]",
            ),
            (
                "aws session key id",
                "id ASIAY34FZKBOKMUTVV7A.",
                "id [REDACTED].",
            ),
            (
                "aws secret, labelled with spaces",
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "aws_secret_access_key = [REDACTED]",
            ),
            (
                "aws secret, env style",
                "export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "export AWS_SECRET_ACCESS_KEY=[REDACTED]",
            ),
            (
                "authorization bearer header",
                "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.dGVzdA",
                "Authorization: Bearer [REDACTED]",
            ),
            (
                "bearer in lower case",
                "curl -H 'authorization: bearer abc123def456ghi'",
                "curl -H 'authorization: bearer [REDACTED]'",
            ),
            (
                "bearer in upper case without header",
                "sent BEARER 0123456789abcdef0123",
                "sent BEARER [REDACTED]",
            ),
            (
                "authorization basic",
                "Authorization: Basic dXNlcjpwYXNz",
                "Authorization: Basic [REDACTED]",
            ),
            (
                "password=",
                "connect password=hunter2 host=db",
                "connect password=[REDACTED] host=db",
            ),
            ("passwd:", "passwd: s3cr3t!", "passwd: [REDACTED]"),
            (
                "quoted secret",
                "secret=\"two words\" next",
                "secret=\"[REDACTED]\" next",
            ),
            (
                "single-quoted token",
                "token='abc.def' done",
                "token='[REDACTED]' done",
            ),
            (
                "api_key upper case key",
                "API_KEY=1234abcd",
                "API_KEY=[REDACTED]",
            ),
            ("apikey colon", "apikey: qwerty12", "apikey: [REDACTED]"),
            (
                "json password",
                r#"{"user": "bob", "password": "hunter2", "n": 1}"#,
                r#"{"user": "bob", "password": "[REDACTED]", "n": 1}"#,
            ),
            (
                "json with escaped quotes inside a string",
                r#"body: "{\"password\": \"p@ss\"}""#,
                r#"body: "{\"password\": \"[REDACTED]\"}""#,
            ),
            (
                "json escaped quote inside the value",
                r#"{"token": "ab\"cd", "x": 1}"#,
                r#"{"token": "[REDACTED]", "x": 1}"#,
            ),
            (
                "token in a query string",
                "GET /cb?access_token=abc123&state=xyz",
                "GET /cb?access_token=[REDACTED]&state=xyz",
            ),
            (
                "x-api-key header",
                "x-api-key: key-1234567890",
                "x-api-key: [REDACTED]",
            ),
            (
                "github token in env var keeps its name",
                "GITHUB_TOKEN=ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
                "GITHUB_TOKEN=[REDACTED]",
            ),
            (
                "url credentials",
                "cloning https://bob:hunter2@github.com/org/repo.git",
                "cloning https://bob:[REDACTED]@github.com/org/repo.git",
            ),
            (
                "url credentials holding a token",
                "postgres://app:s3cr3t@db.internal:5432/main",
                "postgres://app:[REDACTED]@db.internal:5432/main",
            ),
            (
                "url with a token as password",
                "https://x-access-token:ghs_16C7e42F292c6912E7710c838347Ae178B4a@github.com",
                "https://x-access-token:[REDACTED]@github.com",
            ),
            (
                "private key block",
                "before\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1234567890abcdef\nQWERTYUIOPasdfghjkl0987654321zz==\n-----END RSA PRIVATE KEY-----\nafter",
                "before\n[REDACTED PRIVATE KEY]\nafter",
            ),
            (
                "openssh private key block",
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----",
                "[REDACTED PRIVATE KEY]",
            ),
            (
                "private key on one line, json-escaped",
                r#"{"private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----\n", "id": 3}"#,
                r#"{"private_key": "[REDACTED PRIVATE KEY]\n", "id": 3}"#,
            ),
            (
                "private key cut off before its end",
                "key:\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oq\n",
                "key:\n[REDACTED PRIVATE KEY]",
            ),
            (
                "tail starting inside a private key",
                "MIIEpAIBAAKCAQEA1234567890abcdef\nQWERTYUIOPasdfghjkl0987654321zz==\n-----END RSA PRIVATE KEY-----\nnext line",
                "[REDACTED PRIVATE KEY]\nnext line",
            ),
        ];
        for (name, input, expected) in cases {
            assert_eq!(redact(input), expected, "case: {name}");
        }
    }

    /// Secrets whose surroundings are long: the secret must be gone, the
    /// rest kept.
    #[test]
    fn removes_the_secret_and_keeps_the_rest() {
        let cases: Vec<(&str, &str, &str, &[&str])> = vec![
            (
                "claude error echoing a key",
                "API Error: 401 {\"error\":{\"message\":\"invalid x-api-key sk-ant-api03-ZZZZZZZZZZZZZZZZZZZZ1\"}}",
                "sk-ant-api03-ZZZZZZZZZZZZZZZZZZZZ1",
                &["API Error: 401", "invalid x-api-key"],
            ),
            (
                "two secrets on one line",
                "password=hunter2 token=abcdef123456 user=bob",
                "hunter2",
                &["user=bob", "password=[REDACTED]", "token=[REDACTED]"],
            ),
            (
                "git remote in a command",
                "$ git push https://ci:ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789@github.com/o/r main",
                "ghp_AbCd",
                &["git push https://ci:", "@github.com/o/r main"],
            ),
        ];
        for (name, input, secret, kept) in cases {
            let output = redact(input);
            assert!(!output.contains(secret), "case {name}: {output}");
            for part in kept {
                assert!(
                    output.contains(part),
                    "case {name}: {part:?} lost in {output}"
                );
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

    /// Cut anywhere, mixed with multi-byte text, the scanners must neither
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
