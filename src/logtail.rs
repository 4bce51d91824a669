//! The end of a worker log: its last lines (bounded read from the end, so a
//! huge log costs the same as a small one) and the exit code the wrapper
//! wrote in its closing `[wrapper] ... exited with code N` line.

use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::process::safe_file;

/// Reads at most `max_bytes` from the end of the file, cut to whole lines.
/// Only a regular file is read (a FIFO in a log's place never blocks).
pub fn tail(path: &Path, max_bytes: u64) -> Option<String> {
    let (file, meta) = safe_file::open_read_with_meta(path).ok()?;
    tail_of(&file, meta.len(), max_bytes)
}

/// Like [`tail`], but of the file's first `end` bytes (what it held when
/// measured), so a follower can go on exactly where the tail stopped.
pub fn tail_until(path: &Path, end: u64, max_bytes: u64) -> Option<String> {
    tail_of(&safe_file::open_read(path).ok()?, end, max_bytes)
}

/// The tail of the first `end` bytes of a file already opened (and found
/// regular): read by offset, so neither a seek nor a second `fstat`.
pub fn tail_of(file: &std::fs::File, end: u64, max_bytes: u64) -> Option<String> {
    let start = end.saturating_sub(max_bytes);
    let mut bytes = vec![0u8; usize::try_from(end - start).ok()?];
    let mut got = 0;
    while got < bytes.len() {
        match file.read_at(&mut bytes[got..], start + got as u64) {
            Ok(0) => break, // truncated since it was measured
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    bytes.truncate(got);
    // Valid UTF-8 (the usual case) is taken as it is, without a copy.
    let text = String::from_utf8(bytes)
        .unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned());
    if start > 0 {
        // Drop the partial first line.
        return Some(
            text.split_once('\n')
                .map(|(_, rest)| rest.to_string())
                .unwrap_or_default(),
        );
    }
    Some(text)
}

/// The last `n` lines of a text.
pub fn last_lines(text: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// The exit code in the wrapper's last exit line, if the log ends with one.
pub fn wrapper_exit_code(text: &str) -> Option<i32> {
    let line = text.lines().rev().find(|l| l.starts_with("[wrapper]"))?;
    let code = line.split("exited with code ").nth(1)?;
    code.split_whitespace().next()?.parse().ok()
}

/// What a log said last before the wrapper's exit line: its last other
/// line, a wrapper line without its `[wrapper] <time> ` prefix, secrets
/// redacted (it goes to monitor.log, the console and the state file).
pub fn last_words(text: &str) -> Option<String> {
    let line = text
        .lines()
        .rev()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .find(|l| !(l.starts_with("[wrapper]") && l.contains("exited with code ")))?;
    let words = match line.strip_prefix("[wrapper] ") {
        Some(rest) => rest.split_once(' ').map_or(rest, |(_, after)| after),
        None => line,
    };
    let words: String = words.chars().take(300).collect();
    Some(crate::selfheal::redact::redact(&words))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_words_skip_the_exit_line_and_the_wrapper_prefix() {
        let cases = [
            (
                "[wrapper] 2026-01-01T00:00:00+0000 command 'claude' not found on PATH=/bin\n[wrapper] 2026-01-01T00:00:00+0000 exited with code 127\n",
                Some("command 'claude' not found on PATH=/bin"),
            ),
            ("fatal: boom\n\n[wrapper] t exited with code 1\n", Some("fatal: boom")),
            ("[wrapper] t exited with code 1\n", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(last_words(text).as_deref(), want, "{text:?}");
        }
    }

    #[test]
    fn exit_codes_from_wrapper_lines() {
        let cases = [
            ("[wrapper] 2026 started\nwork\n[wrapper] 2026-01-01T00:00:00+0000 exited with code 3\n", Some(3)),
            ("[wrapper] x exited with code 0", Some(0)),
            ("[wrapper] x started\nstill working\n", None),
            ("no wrapper at all\n", None),
            ("[wrapper] x exited with code banana\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(wrapper_exit_code(text), want, "{text:?}");
        }
    }

    #[test]
    fn tail_reads_whole_lines_from_the_end() {
        let path = std::env::temp_dir().join(format!("mw-tail-{}", std::process::id()));
        let body: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &body).unwrap();
        let t = tail(&path, 64).unwrap();
        assert!(t.ends_with("line 999\n"));
        assert!(t.starts_with("line "), "{t:?}");
        assert_eq!(last_lines(&t, 2), ["line 998", "line 999"]);
        assert_eq!(tail(&path, 1 << 20).unwrap(), body);
        std::fs::remove_file(&path).unwrap();
        assert!(tail(&path, 10).is_none());
    }

    #[test]
    fn a_tail_that_is_not_utf8_is_repaired_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.log");
        std::fs::write(&path, b"ok line\nbad \xff\xfe bytes\n").unwrap();
        assert_eq!(
            tail(&path, 1024).unwrap(),
            "ok line\nbad \u{fffd}\u{fffd} bytes\n"
        );
    }
}
