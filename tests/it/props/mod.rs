//! Property tests through the library's public API, one file per input the
//! monitor reads: PID file text, stream ids, task metadata in a real
//! tasks.db, the config file and the state file. Inputs are arbitrary text
//! and structured-but-odd values; the properties are "never panics", the
//! documented contract, and round trips. Case counts stay modest so the
//! suite stays fast. This module holds the generators several families share.

mod config;
mod metadata;
mod pidfile;
mod state;
mod stream_ids;

use proptest::prelude::*;
use serde_json::Value;

/// Any JSON value, a few levels deep.
pub(super) fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[a-z0-9:\\[\\] -]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{0,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
