//! Reading a [`Lifecycle`] from its stored form, `{"state": "running",
//! "pid": 7, "since_ms": 1}`, without the buffering serde's derived reader
//! of an internally tagged enum does: that one copies every entry into an
//! intermediate tree before it knows the variant (a fifth of reading the
//! state at 10 000 streams). The tag is written first, so each field after
//! it is read straight into its type; entries before the tag (a hand-edited
//! record) are held as JSON values until the tag is known. Same answers as
//! the derived reader: fields of other variants are ignored, a missing or
//! repeated field and an unknown state are errors.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{Kind, Lifecycle};

/// The stored name of each state, in the order of [`Kind::ALL`].
const VARIANTS: [&str; 11] = [
    "not_started",
    "waiting_on_deps",
    "starting",
    "running",
    "unhealthy",
    "backoff",
    "restarting",
    "stopped",
    "completed",
    "gave_up",
    "paused",
];

/// The fields any state has, as read so far.
#[derive(Default)]
struct Fields {
    waiting: Option<Vec<String>>,
    pid: Option<i32>,
    since_ms: Option<u64>,
    reason: Option<String>,
    until_ms: Option<u64>,
    attempt: Option<u32>,
    by: Option<String>,
}

/// Whether `key` is a field of state `kind`.
fn has_field(kind: Kind, key: &str) -> bool {
    let fields: &[&str] = match kind {
        Kind::NotStarted | Kind::Completed => &[],
        Kind::WaitingOnDeps => &["waiting"],
        Kind::Starting | Kind::Running => &["pid", "since_ms"],
        Kind::Unhealthy => &["reason", "since_ms"],
        Kind::Backoff => &["until_ms", "reason"],
        Kind::Restarting => &["attempt"],
        Kind::Stopped | Kind::Paused => &["by"],
        Kind::GaveUp => &["reason"],
    };
    fields.contains(&key)
}

/// Where a field's value comes from: the map being read, or an entry held
/// from before the tag.
trait Source<'de> {
    type Error: de::Error;
    fn value<T: Deserialize<'de>>(self) -> Result<T, Self::Error>;
}

struct Next<'a, M>(&'a mut M);

impl<'de, M: MapAccess<'de>> Source<'de> for Next<'_, M> {
    type Error = M::Error;
    fn value<T: Deserialize<'de>>(self) -> Result<T, M::Error> {
        self.0.next_value()
    }
}

struct Held<E>(serde_json::Value, std::marker::PhantomData<E>);

impl<'de, E: de::Error> Source<'de> for Held<E> {
    type Error = E;
    fn value<T: Deserialize<'de>>(self) -> Result<T, E> {
        T::deserialize(self.0).map_err(E::custom)
    }
}

impl Fields {
    /// Takes the value of `key`, a field of state `kind`, from `source`.
    fn take<'de, S: Source<'de>>(&mut self, key: &str, source: S) -> Result<(), S::Error> {
        fn set<'de, T: Deserialize<'de>, S: Source<'de>>(
            slot: &mut Option<T>,
            name: &'static str,
            source: S,
        ) -> Result<(), S::Error> {
            if slot.is_some() {
                return Err(de::Error::duplicate_field(name));
            }
            *slot = Some(source.value()?);
            Ok(())
        }
        match key {
            "waiting" => set(&mut self.waiting, "waiting", source),
            "pid" => set(&mut self.pid, "pid", source),
            "since_ms" => set(&mut self.since_ms, "since_ms", source),
            "reason" => set(&mut self.reason, "reason", source),
            "until_ms" => set(&mut self.until_ms, "until_ms", source),
            "attempt" => set(&mut self.attempt, "attempt", source),
            "by" => set(&mut self.by, "by", source),
            _ => unreachable!("has_field admits only these"),
        }
    }

    fn into_state<E: de::Error>(self, kind: Kind) -> Result<Lifecycle, E> {
        fn need<T, E: de::Error>(v: Option<T>, name: &'static str) -> Result<T, E> {
            v.ok_or_else(|| de::Error::missing_field(name))
        }
        Ok(match kind {
            Kind::NotStarted => Lifecycle::NotStarted,
            Kind::WaitingOnDeps => Lifecycle::WaitingOnDeps {
                waiting: need(self.waiting, "waiting")?,
            },
            Kind::Starting => Lifecycle::Starting {
                pid: need(self.pid, "pid")?,
                since_ms: need(self.since_ms, "since_ms")?,
            },
            Kind::Running => Lifecycle::Running {
                pid: need(self.pid, "pid")?,
                since_ms: need(self.since_ms, "since_ms")?,
            },
            Kind::Unhealthy => Lifecycle::Unhealthy {
                reason: need(self.reason, "reason")?,
                since_ms: need(self.since_ms, "since_ms")?,
            },
            Kind::Backoff => Lifecycle::Backoff {
                until_ms: need(self.until_ms, "until_ms")?,
                reason: need(self.reason, "reason")?,
            },
            Kind::Restarting => Lifecycle::Restarting {
                attempt: need(self.attempt, "attempt")?,
            },
            Kind::Stopped => Lifecycle::Stopped {
                by: need(self.by, "by")?,
            },
            Kind::Completed => Lifecycle::Completed,
            Kind::GaveUp => Lifecycle::GaveUp {
                reason: need(self.reason, "reason")?,
            },
            Kind::Paused => Lifecycle::Paused {
                by: need(self.by, "by")?,
            },
        })
    }
}

/// A key or the state's name: borrowed from the input where it can be
/// (serde's own `Cow` always copies).
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

impl<'de> Deserialize<'de> for Lifecycle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(LifecycleVisitor)
    }
}

struct LifecycleVisitor;

impl<'de> Visitor<'de> for LifecycleVisitor {
    type Value = Lifecycle;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a worker state: an object with a \"state\" field")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Lifecycle, M::Error> {
        let mut kind: Option<Kind> = None;
        let mut before_tag: Vec<(String, serde_json::Value)> = Vec::new();
        let mut fields = Fields::default();
        while let Some(Text(key)) = map.next_key()? {
            if key == "state" {
                if kind.is_some() {
                    return Err(de::Error::duplicate_field("state"));
                }
                let Text(name) = map.next_value()?;
                let found = VARIANTS
                    .iter()
                    .position(|n| *n == name)
                    .map(|i| Kind::ALL[i])
                    .ok_or_else(|| de::Error::unknown_variant(&name, &VARIANTS))?;
                kind = Some(found);
                for (key, value) in std::mem::take(&mut before_tag) {
                    if has_field(found, &key) {
                        fields.take(&key, Held::<M::Error>(value, std::marker::PhantomData))?;
                    }
                }
                continue;
            }
            match kind {
                None => before_tag.push((key.into_owned(), map.next_value()?)),
                Some(k) if has_field(k, &key) => fields.take(&key, Next(&mut map))?,
                Some(_) => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let kind = kind.ok_or_else(|| de::Error::missing_field("state"))?;
        fields.into_state(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde's derived reader of the same enum: the reference.
    #[derive(Debug, serde::Deserialize)]
    #[serde(tag = "state", rename_all = "snake_case")]
    enum Derived {
        NotStarted,
        WaitingOnDeps { waiting: Vec<String> },
        Starting { pid: i32, since_ms: u64 },
        Running { pid: i32, since_ms: u64 },
        Unhealthy { reason: String, since_ms: u64 },
        Backoff { until_ms: u64, reason: String },
        Restarting { attempt: u32 },
        Stopped { by: String },
        Completed,
        GaveUp { reason: String },
        Paused { by: String },
    }

    impl From<Derived> for Lifecycle {
        fn from(d: Derived) -> Lifecycle {
            match d {
                Derived::NotStarted => Lifecycle::NotStarted,
                Derived::WaitingOnDeps { waiting } => Lifecycle::WaitingOnDeps { waiting },
                Derived::Starting { pid, since_ms } => Lifecycle::Starting { pid, since_ms },
                Derived::Running { pid, since_ms } => Lifecycle::Running { pid, since_ms },
                Derived::Unhealthy { reason, since_ms } => {
                    Lifecycle::Unhealthy { reason, since_ms }
                }
                Derived::Backoff { until_ms, reason } => Lifecycle::Backoff { until_ms, reason },
                Derived::Restarting { attempt } => Lifecycle::Restarting { attempt },
                Derived::Stopped { by } => Lifecycle::Stopped { by },
                Derived::Completed => Lifecycle::Completed,
                Derived::GaveUp { reason } => Lifecycle::GaveUp { reason },
                Derived::Paused { by } => Lifecycle::Paused { by },
            }
        }
    }

    #[test]
    fn reads_what_the_derived_reader_reads_and_refuses_what_it_refuses() {
        let cases = [
            // Every state as written, and written back.
            r#"{"state":"not_started"}"#,
            r#"{"state":"waiting_on_deps","waiting":["a","b"]}"#,
            r#"{"state":"starting","pid":7,"since_ms":5}"#,
            r#"{"state":"running","pid":7,"since_ms":5}"#,
            r#"{"state":"unhealthy","reason":"dead","since_ms":5}"#,
            r#"{"state":"backoff","until_ms":9,"reason":"backoff 2s"}"#,
            r#"{"state":"restarting","attempt":3}"#,
            r#"{"state":"stopped","by":"ops"}"#,
            r#"{"state":"completed"}"#,
            r#"{"state":"gave_up","reason":"budget"}"#,
            r#"{"state":"paused","by":"ops"}"#,
            // The tag after fields, or between them; escapes.
            r#"{"pid":7,"since_ms":5,"state":"running"}"#,
            r#"{"since_ms":5,"state":"running","pid":7}"#,
            r#"{"reason":"a \"quoted\" \u00e9","state":"gave_up"}"#,
            r#"{"st\u0061te":"paused","by":"x"}"#,
            // Fields of other states (any type) are ignored, before or after.
            r#"{"state":"completed","pid":"x","extra":[1,{"a":2}]}"#,
            r#"{"waiting":7,"state":"running","pid":1,"since_ms":2,"by":null}"#,
            r#"{"state":"running","pid":1,"since_ms":2,"pid2":3}"#,
            // Refused: missing, repeated or mistyped fields, unknown or
            // missing state, no object.
            r#"{"state":"running","pid":7}"#,
            r#"{"since_ms":1,"state":"running"}"#,
            r#"{"state":"running","pid":7,"pid":8,"since_ms":1}"#,
            r#"{"pid":7,"state":"running","pid":8,"since_ms":1}"#,
            r#"{"state":"running","pid":"7","since_ms":1}"#,
            r#"{"pid":"7","state":"running","since_ms":1}"#,
            r#"{"state":"running","pid":-1,"since_ms":-1}"#,
            r#"{"state":"restarting","attempt":5000000000}"#,
            r#"{"state":"sleeping"}"#,
            r#"{"state":"completed","state":"completed"}"#,
            r#"{"state":7}"#,
            r#"{"pid":7}"#,
            r#"{}"#,
            r#""running""#,
            r#"[]"#,
            r#"null"#,
            r#"{"state":"running","pid":7,"since_ms":1"#,
        ];
        for text in cases {
            let ours = serde_json::from_str::<Lifecycle>(text);
            let derived = serde_json::from_str::<Derived>(text).map(Lifecycle::from);
            match (&ours, &derived) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{text}: ours {ours:?}, derived {derived:?}"),
            }
        }
        // Every state written and read back.
        let every_state = [
            Lifecycle::NotStarted,
            Lifecycle::WaitingOnDeps {
                waiting: vec!["a".into()],
            },
            Lifecycle::Starting {
                pid: 1,
                since_ms: 2,
            },
            Lifecycle::Running {
                pid: 1,
                since_ms: 2,
            },
            Lifecycle::Unhealthy {
                reason: "r".into(),
                since_ms: 2,
            },
            Lifecycle::Backoff {
                until_ms: 3,
                reason: "r".into(),
            },
            Lifecycle::Restarting { attempt: 4 },
            Lifecycle::Stopped { by: "o".into() },
            Lifecycle::Completed,
            Lifecycle::GaveUp { reason: "r".into() },
            Lifecycle::Paused { by: "o".into() },
        ];
        for (state, kind) in every_state.iter().zip(Kind::ALL) {
            assert_eq!(state.kind(), kind, "listed in the order of Kind::ALL");
        }
        for state in every_state {
            let text = serde_json::to_string(&state).unwrap();
            assert_eq!(
                serde_json::from_str::<Lifecycle>(&text).unwrap(),
                state,
                "{text}"
            );
        }
    }
}
