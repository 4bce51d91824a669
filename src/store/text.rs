//! Text columns of the Copilot databases as the readers take them: any
//! stored type spelled as text, borrowed from the row when it is UTF-8 and
//! repaired (never refused) when it is not.

/// A column as text, whatever SQLite stored there (ids may be numbers);
/// `None` for NULL. Text that is not UTF-8 — SQLite's JSON functions make
/// such bytes from an escaped lone surrogate — is read lossily: one odd task
/// must not fail the whole check.
pub(crate) fn column_text(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    Ok(column_str(row, i)?.map(std::borrow::Cow::into_owned))
}

/// A text column borrowed from the row when it is valid UTF-8 (as task
/// data is), copied only to repair invalid bytes or to spell a number.
pub(crate) fn column_str<'r>(
    row: &'r rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<Option<std::borrow::Cow<'r, str>>> {
    use rusqlite::types::ValueRef;
    use std::borrow::Cow;
    Ok(match row.get_ref(i)? {
        ValueRef::Null => None,
        ValueRef::Integer(n) => Some(Cow::Owned(n.to_string())),
        ValueRef::Real(f) => Some(Cow::Owned(f.to_string())),
        ValueRef::Text(b) | ValueRef::Blob(b) => Some(utf8_or_repaired(b)),
    })
}

/// The bytes as text, repaired only when they are not UTF-8: `from_utf8`
/// checks ASCII a word at a time, while `from_utf8_lossy` walks every byte
/// even when there is nothing to repair (5% of a check at 10 000 streams).
fn utf8_or_repaired(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_borrowed_when_it_is_utf8_and_repaired_when_not() {
        use std::borrow::Cow;
        // (bytes, text, borrowed)
        let cases: [(&[u8], &str, bool); 4] = [
            (b"", "", true),
            (b"Stream-A", "Stream-A", true),
            ("B\u{e9}ta \u{2713}".as_bytes(), "B\u{e9}ta \u{2713}", true),
            (
                b"lone \xed\xa0\x80 surrogate",
                "lone \u{fffd}\u{fffd}\u{fffd} surrogate",
                false,
            ),
        ];
        for (bytes, text, borrowed) in cases {
            let got = utf8_or_repaired(bytes);
            assert_eq!(got, text, "{bytes:?}");
            assert_eq!(matches!(got, Cow::Borrowed(_)), borrowed, "{bytes:?}");
        }
    }
}
