//! The self-heal toolkit (SPEC 3.4), pure text in and out: `redact` hides
//! secrets before any log text is stored, printed or passed on; `signature`
//! classifies a failure and folds it into a stable fingerprint, so the
//! circuit breaker can tell "the same failure again" from a new one; and
//! `retry_context` writes the section a soft-reset worker finds at the end of
//! its prompt. Stopping, restarting and recording attempts are the callers'.

pub mod redact;
pub mod signature;

use signature::FailureClass;

/// The most log lines a retry context quotes: enough to show the failure,
/// few enough to keep the prompt short.
pub const RETRY_CONTEXT_MAX_LINES: usize = 20;

/// The longest quoted log line, in characters; longer ones are cut with `…`.
const RETRY_CONTEXT_MAX_LINE_CHARS: usize = 400;

/// The `## Retry context` section for a restarted worker's prompt: attempt
/// number, reason and class of the last failure, the last
/// [`RETRY_CONTEXT_MAX_LINES`] lines of the previous log, redacted, in a
/// fenced block, and what to do first. The whole tail is redacted before it
/// is cut, so a private key block starting above the quoted lines is still
/// found; the fence is longer than any backtick run in the quoted lines, so
/// a log holding ``` cannot break out of it.
pub fn retry_context(
    attempt: u32,
    reason: &str,
    class: &FailureClass,
    tail_lines: &[&str],
) -> String {
    let redacted = redact::redact_lines(tail_lines);
    let mut quoted: Vec<String> = redacted
        .iter()
        .map(|line| cut_line(line.trim_end(), RETRY_CONTEXT_MAX_LINE_CHARS))
        .collect();
    while quoted.last().is_some_and(|line| line.is_empty()) {
        quoted.pop();
    }
    let quoted = &quoted[quoted.len().saturating_sub(RETRY_CONTEXT_MAX_LINES)..];
    let reason = redact::redact(reason.trim());
    let reason = if reason.is_empty() {
        "not recorded".to_string()
    } else {
        reason.replace('\n', " ")
    };

    let mut section = format!(
        "## Retry context\n\n\
         This is attempt {attempt}. The previous run failed: {reason} (class: {class}).\n\n"
    );
    if quoted.is_empty() {
        section.push_str("The previous log was empty.\n\n");
    } else {
        let fence = "`".repeat(longest_backtick_run(quoted).max(2) + 1);
        section.push_str("Last lines of the previous log (secrets redacted):\n\n");
        section.push_str(&format!("{fence}text\n"));
        for line in quoted {
            section.push_str(line);
            section.push('\n');
        }
        section.push_str(&format!("{fence}\n\n"));
    }
    section.push_str(
        "Before continuing, check the status of your tasks: some may already be \
         done or half done. If the same failure happens again, mark the task it \
         blocks as blocked with the reason instead of retrying it.\n",
    );
    section
}

fn cut_line(line: &str, max_chars: usize) -> String {
    match line.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

fn longest_backtick_run(lines: &[String]) -> usize {
    lines
        .iter()
        .flat_map(|line| line.split(|c| c != '`'))
        .map(str::len)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_attempt_reason_class_tail_and_advice() {
        let tail = ["working on task 3", "API Error: 429 Too Many Requests"];
        let section = retry_context(2, "dead", &FailureClass::RateLimit, &tail);
        let expected = "## Retry context\n\n\
            This is attempt 2. The previous run failed: dead (class: rate-limit).\n\n\
            Last lines of the previous log (secrets redacted):\n\n\
            ```text\n\
            working on task 3\n\
            API Error: 429 Too Many Requests\n\
            ```\n\n\
            Before continuing, check the status of your tasks: some may already be \
            done or half done. If the same failure happens again, mark the task it \
            blocks as blocked with the reason instead of retrying it.\n";
        assert_eq!(section, expected);
    }

    #[test]
    fn secrets_in_the_tail_never_appear() {
        let secrets = [
            "sk-ant-api03-SECRETSECRETSECRET123",
            "hunter2",
            "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
            "AKIAIOSFODNN7EXAMPLE",
            "eyJhbGciOiJIUzI1NiJ9.payload1234",
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
            "s3cretpw",
        ];
        let tail = [
            "-----BEGIN PRIVATE KEY-----",
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
            "-----END PRIVATE KEY-----",
            "export ANTHROPIC_API_KEY=sk-ant-api03-SECRETSECRETSECRET123",
            "password=hunter2",
            "git push https://ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789@github.com/o/r",
            "aws_access_key_id=AKIAIOSFODNN7EXAMPLE",
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload1234",
            "db at postgres://app:s3cretpw@db/main",
        ];
        let section = retry_context(1, "password=hunter2 rejected", &FailureClass::Auth, &tail);
        for secret in secrets {
            assert!(!section.contains(secret), "{secret} leaked:\n{section}");
        }
        assert!(section.contains("password=[REDACTED]"));
        assert!(section.contains("[REDACTED PRIVATE KEY]"));
    }

    #[test]
    fn redacts_a_key_block_that_starts_above_the_quoted_lines() {
        let mut tail = vec!["-----BEGIN RSA PRIVATE KEY-----"];
        tail.extend(std::iter::repeat_n(
            "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=",
            25,
        ));
        tail.push("-----END RSA PRIVATE KEY-----");
        tail.push("done");
        let section = retry_context(3, "dead", &FailureClass::Crash, &tail);
        assert!(!section.contains("QUJDREVG"), "{section}");
        assert!(section.contains("[REDACTED PRIVATE KEY]\ndone\n"));
    }

    #[test]
    fn quotes_at_most_twenty_lines() {
        let lines: Vec<String> = (1..=50).map(|n| format!("line {n}")).collect();
        let tail: Vec<&str> = lines.iter().map(String::as_str).collect();
        let section = retry_context(4, "no log output for 600s", &FailureClass::Hang, &tail);
        assert!(!section.contains("line 30\n"));
        assert!(section.contains("```text\nline 31\n"));
        assert!(section.contains("line 50\n```"));
        assert_eq!(
            section.lines().filter(|l| l.starts_with("line ")).count(),
            RETRY_CONTEXT_MAX_LINES
        );
    }

    #[test]
    fn handles_empty_tails_fences_and_long_lines() {
        let cases: Vec<(&[&str], &str)> = vec![
            (&[], "The previous log was empty."),
            (&["", "  "], "The previous log was empty."),
            (&["```", "code"], "````text\n```\ncode\n````\n"),
        ];
        for (tail, expected) in cases {
            let section = retry_context(1, "", &FailureClass::Unknown, tail);
            assert!(section.contains(expected), "{section}");
            assert!(section.contains("failed: not recorded (class: unknown)."));
        }
        let long = "x".repeat(1000);
        let section = retry_context(1, "dead", &FailureClass::Crash, &[&long]);
        assert!(section.contains(&format!("{}…\n", "x".repeat(RETRY_CONTEXT_MAX_LINE_CHARS))));
    }
}
