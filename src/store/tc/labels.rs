//! Stream aliases and dependency labels of a tc project: upstream's
//! generate records dependencies only as labels in task metadata
//! (`dependencies` / `streamDependencies`), naming another stream by its
//! metadata `streamId`, its name or its numeric id. Pure resolution; the
//! rows come from the reader in `tc.rs`.

use std::collections::{BTreeMap, BTreeSet};

use super::StreamRow;

/// One distinct combination of a task's metadata facts within a stream.
#[derive(Debug, Clone, Default)]
pub(super) struct MetadataRow {
    pub(super) stream: String,
    /// Set (to the task id) when the metadata is not valid JSON.
    pub(super) invalid_task: Option<String>,
    pub(super) stream_label: Option<String>,
    /// (json type, json text) of `dependencies`.
    pub(super) dependencies: (Option<String>, Option<String>),
    /// (json type, json text) of `streamDependencies`.
    pub(super) stream_dependencies: (Option<String>, Option<String>),
}

/// What the labels resolve to.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Resolved {
    /// Unambiguous alias → canonical id (metadata streamIds, names, ids).
    pub(super) aliases: BTreeMap<String, String>,
    /// Canonical id → streams its labels name.
    pub(super) dependencies: BTreeMap<String, Vec<String>>,
    /// Canonical id → labels naming no stream.
    pub(super) unknown: BTreeMap<String, Vec<String>>,
    pub(super) warnings: Vec<String>,
}

/// Resolves aliases and labels. A label names a stream by metadata
/// `streamId` first, then by name, then by numeric id.
pub(super) fn resolve_labels(streams: &[StreamRow], metadata: &[MetadataRow]) -> Resolved {
    let mut out = Resolved::default();
    let mut by_label: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut invalid: BTreeSet<&str> = BTreeSet::new();
    for row in metadata {
        if let Some(task) = &row.invalid_task {
            if invalid.insert(task) {
                out.warnings.push(format!(
                    "Task {task} of stream {} has invalid JSON metadata; its labels are ignored",
                    row.stream
                ));
            }
            continue;
        }
        if let Some(label) = &row.stream_label {
            by_label.entry(label).or_default().insert(&row.stream);
        }
    }
    let known: BTreeSet<&str> = streams.iter().map(|s| s.id.as_str()).collect();
    let mut stream_ids: BTreeMap<&str, &str> = BTreeMap::new();
    for (label, targets) in &by_label {
        let targets: Vec<&str> = targets
            .iter()
            .copied()
            .filter(|t| known.contains(t))
            .collect();
        match targets.as_slice() {
            [one] => {
                stream_ids.insert(label, one);
            }
            [] => {}
            many => out.warnings.push(format!(
                "Label streamId {label:?} is used by streams {}; it names none of them",
                many.join(", ")
            )),
        }
    }
    let names: BTreeMap<&str, &str> = streams
        .iter()
        .filter(|s| !s.name.is_empty())
        .map(|s| (s.name.as_str(), s.id.as_str()))
        .collect();
    let lookup = |label: &str| -> Option<String> {
        stream_ids
            .get(label)
            .or_else(|| names.get(label))
            .copied()
            .or_else(|| known.get(label).copied())
            .map(str::to_string)
    };
    for s in streams.iter().filter(|s| s.monitored) {
        out.aliases.insert(s.id.clone(), s.id.clone());
    }
    for (name, id) in &names {
        out.aliases
            .entry(name.to_string())
            .or_insert(id.to_string());
    }
    // A streamId wins over a name, as in `lookup`.
    for (label, id) in &stream_ids {
        out.aliases.insert(label.to_string(), id.to_string());
    }
    for row in metadata.iter().filter(|r| r.invalid_task.is_none()) {
        for (key, (kind, text)) in [
            ("dependencies", &row.dependencies),
            ("streamDependencies", &row.stream_dependencies),
        ] {
            let entries: Vec<serde_json::Value> = match kind.as_deref() {
                None | Some("null") => continue,
                Some("array") => text
                    .as_deref()
                    .and_then(|j| serde_json::from_str(j).ok())
                    .unwrap_or_default(),
                Some(other) => {
                    out.warnings.push(format!(
                        "Stream {} has {key} that are not a list ({other}); treated as none",
                        row.stream
                    ));
                    continue;
                }
            };
            for entry in entries {
                let label = match entry {
                    serde_json::Value::String(s) if !s.is_empty() => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    other => {
                        out.warnings.push(format!(
                            "Stream {} lists a {key} entry that names no stream: {other}; ignored",
                            row.stream
                        ));
                        continue;
                    }
                };
                match lookup(&label) {
                    Some(target) if target == row.stream => {}
                    Some(target) => {
                        let deps = out.dependencies.entry(row.stream.clone()).or_default();
                        if !deps.contains(&target) {
                            deps.push(target);
                        }
                    }
                    None => {
                        let unknown = out.unknown.entry(row.stream.clone()).or_default();
                        if !unknown.contains(&label) {
                            out.warnings.push(format!(
                                "Stream {} depends on {label:?}, which names no stream; it waits \
                                 until a stream has that streamId, name or id",
                                row.stream
                            ));
                            unknown.push(label);
                        }
                    }
                }
            }
        }
    }
    out
}
