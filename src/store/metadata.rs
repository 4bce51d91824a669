//! A task's metadata as the streams are made of it: `streamId`,
//! `streamName` and `dependencies` read as SQLite's JSON functions read
//! them, from the bytes as stored, borrowed where they can be. Plain
//! metadata (the kit's own) by a small reader of its own, anything else by
//! serde.

use std::borrow::Cow;

/// The fields of a task's metadata a stream is made of (any JSON value, as
/// SQLite's JSON functions took them), borrowed from the row where they can
/// be: most tasks' metadata is read without copying a string.
#[derive(serde::Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
pub(super) struct Metadata<'a> {
    #[serde(rename = "streamId", default, borrow)]
    pub stream_id: Option<Field<'a>>,
    #[serde(rename = "streamName", default, borrow)]
    pub stream_name: Option<Field<'a>>,
    #[serde(default, borrow)]
    pub dependencies: Option<Field<'a>>,
}

/// One metadata value: a string borrowed from the row unless it has escapes,
/// a list of values, or any other JSON value (booleans, numbers, objects).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Field<'a> {
    Null,
    Text(Cow<'a, str>),
    List(Vec<Field<'a>>),
    Other(serde_json::Value),
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Field<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Field<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Field<'a>, E> {
                Ok(Field::Null)
            }
            fn visit_none<E>(self) -> Result<Field<'a>, E> {
                Ok(Field::Null)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Field<'a>, D::Error> {
                serde::Deserialize::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Field<'a>, E> {
                Ok(Field::Other(b.into()))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Field<'a>, E> {
                Ok(Field::Other(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Field<'a>, E> {
                Ok(Field::Other(n.into()))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Field<'a>, E> {
                Ok(Field::Other(
                    serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into),
                ))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Field<'a>, E> {
                Ok(Field::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Field<'a>, E> {
                Ok(Field::Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Field<'a>, E> {
                Ok(Field::Text(Cow::Owned(s)))
            }
            fn visit_seq<S: serde::de::SeqAccess<'de>>(
                self,
                mut seq: S,
            ) -> Result<Field<'a>, S::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Field<'a>>()? {
                    items.push(item);
                }
                Ok(Field::List(items))
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                map: M,
            ) -> Result<Field<'a>, M::Error> {
                let value = serde::Deserialize::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(Field::Other(value))
            }
        }
        d.deserialize_any(Visit(std::marker::PhantomData))
    }
}

impl Field<'_> {
    /// The value as SQLite's `json_extract` would give it as text.
    pub(super) fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Field::Text(s) => Some(Cow::Borrowed(s)),
            Field::Null => None,
            other => as_text(&other.to_value()).map(Cow::Owned),
        }
    }

    /// The value as JSON (for messages about odd metadata).
    pub(super) fn to_value(&self) -> serde_json::Value {
        match self {
            Field::Null => serde_json::Value::Null,
            Field::Text(s) => serde_json::Value::String(s.to_string()),
            Field::List(items) => items.iter().map(Field::to_value).collect(),
            Field::Other(v) => v.clone(),
        }
    }
}

/// A metadata value as SQLite's `json_extract` would give it as text.
fn as_text(v: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(u8::from(*b).to_string()),
        other => Some(other.to_string()),
    }
}

/// SQLite's `json_type` name of a value.
pub(super) fn json_type(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(true) => "true",
        Value::Bool(false) => "false",
        Value::Number(n) if n.is_f64() => "real",
        Value::Number(_) => "integer",
        Value::String(_) => "text",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// What a task's metadata says of its stream: `Err` for metadata that is
/// no JSON object, `Ok(None)` for a task of no stream.
pub(super) fn parse_metadata(text: &str) -> Result<Option<Metadata<'_>>, ()> {
    parse_metadata_bytes(text.as_bytes())
}

/// [`parse_metadata`] of the bytes as stored. Only the strings the parser
/// keeps are checked to be UTF-8 (not the whole text first); where a kept
/// string is not, the caller repairs the text and parses that.
pub(super) fn parse_metadata_bytes(text: &[u8]) -> Result<Option<Metadata<'_>>, ()> {
    match plain::parse(text) {
        Some(plain) => Ok(plain),
        None => parse_metadata_with_serde(text),
    }
}

/// [`parse_metadata_bytes`] by serde, whatever the text.
fn parse_metadata_with_serde(text: &[u8]) -> Result<Option<Metadata<'_>>, ()> {
    if !text.trim_ascii_start().starts_with(b"{") {
        // Valid JSON that is no object has no streamId: no stream's task.
        return match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
            Ok(_) => Ok(None),
            Err(_) => Err(()),
        };
    }
    let meta: Metadata = serde_json::from_slice(text).map_err(|_| ())?;
    Ok(meta
        .stream_id
        .as_ref()
        .is_some_and(|v| *v != Field::Null)
        .then_some(meta))
}

/// The metadata most tasks have, read without serde: one object of
/// strings, lists of strings, `true`, `false` and `null`, no escapes. It
/// answers only for text it reads whole; anything else (numbers, objects,
/// escapes, control characters, bytes that are not UTF-8 in a key or a kept
/// value, a kept key twice, no object, anything after it) is left to serde,
/// which then reads it as always. serde reading these was a tenth of a
/// check at 1 000 streams.
mod plain {
    use std::borrow::Cow;

    use super::{Field, Metadata};

    struct Cursor<'a> {
        text: &'a [u8],
        at: usize,
    }

    impl<'a> Cursor<'a> {
        fn skip_space(&mut self) {
            while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.get(self.at) {
                self.at += 1;
            }
        }

        /// Skips space, then takes `byte` if it is next.
        fn take(&mut self, byte: u8) -> bool {
            self.skip_space();
            let next = self.text.get(self.at) == Some(&byte);
            if next {
                self.at += 1;
            }
            next
        }

        fn peek(&mut self) -> Option<u8> {
            self.skip_space();
            self.text.get(self.at).copied()
        }

        /// A string without escapes or control characters, its bytes as
        /// they are (checked as UTF-8 only where kept).
        fn raw_string(&mut self) -> Option<&'a [u8]> {
            if !self.take(b'"') {
                return None;
            }
            let start = self.at;
            let end = start + first_special(&self.text[start..])?;
            if self.text[end] != b'"' {
                return None;
            }
            self.at = end + 1;
            Some(&self.text[start..end])
        }

        fn string(&mut self) -> Option<&'a str> {
            std::str::from_utf8(self.raw_string()?).ok()
        }

        fn literal(&mut self, word: &[u8]) -> bool {
            let found = self.text[self.at..].starts_with(word);
            if found {
                self.at += word.len();
            }
            found
        }

        /// A value: `None` when it is not of the plain kinds; `Some(None)`
        /// for `null` (an absent field, as serde reads a null `Option`).
        fn value(&mut self, keep: bool) -> Option<Option<Field<'a>>> {
            match self.peek()? {
                b'"' if keep => Some(Some(Field::Text(Cow::Borrowed(self.string()?)))),
                b'"' => self.raw_string().map(|_| None),
                b'[' => {
                    self.at += 1;
                    let mut items = Vec::new();
                    if !self.take(b']') {
                        loop {
                            if keep {
                                items.push(Field::Text(Cow::Borrowed(self.string()?)));
                            } else {
                                self.raw_string()?;
                            }
                            if self.take(b']') {
                                break;
                            }
                            if !self.take(b',') {
                                return None;
                            }
                        }
                    }
                    Some(keep.then_some(Field::List(items)))
                }
                b'n' if self.literal(b"null") => Some(None),
                b't' if self.literal(b"true") => Some(keep.then(|| Field::Other(true.into()))),
                b'f' if self.literal(b"false") => Some(keep.then(|| Field::Other(false.into()))),
                _ => None,
            }
        }
    }

    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;

    /// Where the first `"`, `\\` or control character of `bytes` is, looked
    /// for eight bytes at a time. In each word the lowest flagged byte is
    /// exact: a borrow can flag only bytes above a true match of the same
    /// test, so above the first match of any.
    pub(super) fn first_special(bytes: &[u8]) -> Option<usize> {
        let is_special = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
        let mut words = bytes.chunks_exact(8);
        let mut at = 0;
        for word in &mut words {
            let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            let zero_in = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
            let flagged = zero_in(w ^ (ONES * u64::from(b'"')))
                | zero_in(w ^ (ONES * u64::from(b'\\')))
                | (w.wrapping_sub(ONES * 0x20) & !w & HIGHS);
            if flagged != 0 {
                return Some(at + (flagged.trailing_zeros() / 8) as usize);
            }
            at += 8;
        }
        let rest = words.remainder();
        rest.iter().position(|&b| is_special(b)).map(|i| at + i)
    }

    /// `Some` with what serde would read, for plain metadata; `None` to
    /// leave the text to serde.
    pub(super) fn parse(text: &[u8]) -> Option<Option<Metadata<'_>>> {
        let mut cursor = Cursor { text, at: 0 };
        if !cursor.take(b'{') {
            return None;
        }
        let mut meta = Metadata {
            stream_id: None,
            stream_name: None,
            dependencies: None,
        };
        let mut seen = [false; 3];
        if !cursor.take(b'}') {
            loop {
                let key = cursor.raw_string()?;
                let slot = match key {
                    b"streamId" => Some(0),
                    b"streamName" => Some(1),
                    b"dependencies" => Some(2),
                    other => {
                        // serde reads every key as a string.
                        std::str::from_utf8(other).ok()?;
                        None
                    }
                };
                if !cursor.take(b':') {
                    return None;
                }
                let value = cursor.value(slot.is_some())?;
                if let Some(slot) = slot {
                    if std::mem::replace(&mut seen[slot], true) {
                        return None;
                    }
                    let field = match slot {
                        0 => &mut meta.stream_id,
                        1 => &mut meta.stream_name,
                        _ => &mut meta.dependencies,
                    };
                    *field = value;
                }
                if cursor.take(b'}') {
                    break;
                }
                if !cursor.take(b',') {
                    return None;
                }
            }
        }
        cursor.skip_space();
        if cursor.at != text.len() {
            return None;
        }
        Some(meta.stream_id.is_some().then_some(meta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain reader answers only as serde does: thousands of generated
    /// metadata texts, plain and not (escapes, numbers, objects, bad bytes,
    /// control characters, repeated keys, missing commas, trailing text,
    /// cut short), each either left to serde or read exactly as serde reads
    /// it; and most plain ones are read by it.
    #[test]
    fn plain_metadata_is_read_as_serde_reads_it() {
        let mut rng = crate::test_rng::Xorshift::new(0x853c_49e6_748f_ea9b);
        let mut pick = |n: usize| rng.below(n as u64) as usize;
        let keys: [&[u8]; 8] = [
            b"\"streamId\"",
            b"\"streamName\"",
            b"\"dependencies\"",
            b"\"files\"",
            b"\"x\"",
            b"\"k\xc3\xa9\"",
            b"\"bad\xff\"",
            b"\"stream\\u0049d\"",
        ];
        let values: [&[u8]; 24] = [
            b"\"Stream-1\"",
            b"\"\"",
            b"\"caf\xc3\xa9\"",
            b"\"bad\xfe\"",
            b"\"esc\\\"aped\"",
            b"\"tab\there\"",
            b"[]",
            b"[\"a\", \"b\"]",
            b"[ \"a\" ,\"\xff\" ]",
            b"[1, \"a\"]",
            b"[\"a\",]",
            b"[null]",
            b"12",
            b"-0.5e3",
            b"true",
            b"false",
            b"null",
            b"nul",
            b"{\"a\": 1}",
            b"\"unterminated",
            b"\"a value longer than two words, plain\"",
            b"\"a value longer than a word\\\"escaped\"",
            b"\"a value longer than a word\x01control\"",
            b"\"a value longer than a word \xe2\x82 cut\"",
        ];
        let spaces: [&[u8]; 4] = [b"", b" ", b"\n\t", b"\r "];
        let (mut plain, mut with_id, mut total) = (0, 0, 0);
        // Half of them clean: plain values only, well formed.
        const CLEAN_VALUES: [usize; 9] = [0, 1, 2, 6, 7, 14, 15, 16, 20];
        for _ in 0..20_000 {
            let clean = pick(2) == 0;
            let mut text: Vec<u8> = Vec::new();
            text.extend_from_slice(spaces[pick(4)]);
            text.push(b'{');
            for m in 0..pick(5) {
                if m > 0 {
                    let broken = !clean && pick(20) == 0;
                    text.extend_from_slice(if broken { b" " } else { b"," });
                }
                text.extend_from_slice(spaces[pick(4)]);
                // Kept keys and plain values most of the time.
                let key = match (clean, pick(3)) {
                    (true, _) => keys[pick(5)],
                    (false, 0) => keys[pick(8)],
                    (false, _) => keys[pick(3)],
                };
                text.extend_from_slice(key);
                text.extend_from_slice(spaces[pick(4)]);
                text.push(b':');
                text.extend_from_slice(spaces[pick(4)]);
                let value = match (clean, pick(3)) {
                    (true, _) => values[CLEAN_VALUES[pick(9)]],
                    (false, 0) => values[pick(24)],
                    (false, _) => values[pick(8)],
                };
                text.extend_from_slice(value);
                text.extend_from_slice(spaces[pick(4)]);
            }
            match if clean { 3 } else { pick(12) } {
                0 => {}
                1 => text.extend_from_slice(b"} x"),
                2 => text.extend_from_slice(b"}}"),
                _ => text.push(b'}'),
            }
            text.extend_from_slice(spaces[pick(4)]);
            total += 1;
            if let Some(read) = plain::parse(&text) {
                plain += 1;
                with_id += usize::from(read.is_some());
                assert_eq!(
                    Ok(read),
                    parse_metadata_with_serde(&text),
                    "{}",
                    String::from_utf8_lossy(&text)
                );
            }
        }
        assert!(
            plain * 5 > total && with_id * 10 > total,
            "the plain reader read {plain} of {total}, {with_id} with a stream id"
        );
    }

    /// The word-at-a-time search finds what a byte-by-byte one finds, for
    /// every special byte at every place around and between words, with
    /// bytes on either side that nearly match.
    #[test]
    fn the_first_special_byte_is_found_as_one_byte_at_a_time_would() {
        let slow = |bytes: &[u8]| {
            bytes
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        };
        let fillers: [u8; 8] = [b'a', 0x21, 0x1f + 2, b'"' + 1, b'\\' - 1, 0x80, 0xff, 0x7f];
        for len in 0..20 {
            for filler in fillers {
                let plain = vec![filler; len];
                assert_eq!(plain::first_special(&plain), slow(&plain), "{plain:?}");
                for at in 0..len {
                    for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                        let mut bytes = plain.clone();
                        bytes[at] = special;
                        // A second special byte after the first.
                        if at + 3 < len {
                            bytes[at + 3] = 0x01;
                        }
                        assert_eq!(plain::first_special(&bytes), slow(&bytes), "{bytes:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn metadata_is_read_as_sqlite_json_functions_read_it() {
        let id = |text: &str| match parse_metadata(text) {
            Ok(Some(m)) => Ok(m.stream_id.as_ref().and_then(Field::text).map(String::from)),
            Ok(None) => Ok(None),
            Err(()) => Err(()),
        };
        assert_eq!(
            id(r#"{"streamId":"Stream-A"}"#),
            Ok(Some("Stream-A".into()))
        );
        assert_eq!(id(r#"{"streamId":7}"#), Ok(Some("7".into())));
        assert_eq!(id(r#"{"streamId":true}"#), Ok(Some("1".into())));
        assert_eq!(id(r#"{"streamId":null}"#), Ok(None));
        assert_eq!(id(r#"{"other":1}"#), Ok(None));
        assert_eq!(id(r#"[1,2]"#), Ok(None));
        assert_eq!(id(r#""text""#), Ok(None));
        assert_eq!(id(r#"{"streamId":"#), Err(()));
        assert_eq!(id("not json"), Err(()));
        let types: Vec<&str> = [r#"null"#, "true", "false", "1", "1.5", r#""s""#, "[]", "{}"]
            .iter()
            .map(|t| json_type(&serde_json::from_str(t).unwrap()))
            .collect();
        assert_eq!(
            types,
            ["null", "true", "false", "integer", "real", "text", "array", "object"]
        );
    }

    /// A field read borrowed from the row gives what serde_json's `Value`
    /// gave: the same text (as SQLite's `json_extract`) and the same JSON.
    #[test]
    fn borrowed_fields_read_as_json_values_did() {
        let values = [
            r#""Stream-A""#,
            r#""tab\there \u00e9""#,
            "7",
            "-3",
            "1.5",
            "1e5",
            "true",
            "false",
            "null",
            r#"["a", 2, null, ["x"]]"#,
            r#"{"k": [1, "v"]}"#,
            "[]",
        ];
        for text in values {
            let field: Field = serde_json::from_str(text).unwrap();
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(field.to_value(), value, "{text}");
            assert_eq!(field.text().map(String::from), as_text(&value), "{text}");
        }
        // A string without escapes is not copied.
        let field: Field = serde_json::from_str(r#""plain""#).unwrap();
        assert!(matches!(field, Field::Text(Cow::Borrowed("plain"))));
    }
}
