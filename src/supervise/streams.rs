//! From database records to streams the monitor can act on: ids validated
//! (an unsafe id is rejected and its stream skipped) and dependencies
//! resolved, including the `<sid>:...` and `[<sid>]...` forms.

use std::collections::{BTreeMap, BTreeSet};

use crate::layout::{quote_raw_id, StreamId};
use crate::store::{Progress, StreamRecord};

/// A stream ready for assessment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamView {
    pub id: StreamId,
    pub name: String,
    pub dependencies: Vec<StreamId>,
    pub progress: Progress,
    pub last_update: Option<String>,
}

/// Validates ids and resolves dependencies. Problems come back as warnings;
/// none of them stops the other streams.
/// The first character of a component's id (`@<name>`), kept out of the
/// database's stream ids.
pub const COMPONENT_PREFIX: char = '@';

pub fn resolve(records: Vec<StreamRecord>) -> (Vec<StreamView>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut valid: BTreeMap<String, (StreamId, StreamRecord)> = BTreeMap::new();
    for record in records {
        // Ids starting with `@` name the components of monitor.toml: a
        // database stream of that name would share their PID file and state.
        if record.raw_id.starts_with(COMPONENT_PREFIX) {
            warnings.push(format!(
                "Skipping stream {}: ids starting with {COMPONENT_PREFIX} are reserved for the components of monitor.toml; rename it",
                quote_raw_id(&record.raw_id)
            ));
            continue;
        }
        match StreamId::parse(&record.raw_id) {
            Ok(id) => {
                valid.insert(record.raw_id.clone(), (id, record));
            }
            Err(why) => warnings.push(format!(
                "Skipping stream {}: unsafe stream id ({why}); no file of it is touched",
                quote_raw_id(&record.raw_id)
            )),
        }
    }
    let known: BTreeSet<&str> = valid.keys().map(String::as_str).collect();
    let mut all_dependencies = Vec::with_capacity(valid.len());
    for (id, record) in valid.values() {
        let mut dependencies: Vec<StreamId> = Vec::new();
        for dep in &record.dependencies {
            match dependency_target(dep, &known) {
                Some(target) if target == id.as_str() => {}
                Some(target) => {
                    let (target_id, _) = &valid[target];
                    if !dependencies.contains(target_id) {
                        dependencies.push(target_id.clone());
                    }
                }
                None => warnings.push(format!(
                    "Stream {id} depends on unknown stream {}; dependency ignored",
                    quote_raw_id(dep)
                )),
            }
        }
        all_dependencies.push(dependencies);
    }
    drop(known);
    // The records are moved into the views, not copied.
    let views = valid
        .into_values()
        .zip(all_dependencies)
        .map(|((id, record), dependencies)| StreamView {
            id,
            name: record.name,
            dependencies,
            progress: record.progress,
            last_update: record.last_update,
        })
        .collect();
    (views, warnings)
}

/// The stream a dependency string names: a stream id itself, `<sid>:...` or `[<sid>]...`.
pub fn dependency_target<'a>(dep: &str, known: &BTreeSet<&'a str>) -> Option<&'a str> {
    if let Some(hit) = known.get(dep) {
        return Some(hit);
    }
    if let Some((prefix, _)) = dep.split_once(':') {
        if let Some(hit) = known.get(prefix) {
            return Some(hit);
        }
    }
    if let Some(rest) = dep.strip_prefix('[') {
        if let Some((inner, _)) = rest.split_once(']') {
            if let Some(hit) = known.get(inner) {
                return Some(hit);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, deps: &[&str]) -> StreamRecord {
        StreamRecord {
            raw_id: id.into(),
            name: id.into(),
            dependencies: deps.iter().map(|d| d.to_string()).collect(),
            progress: Progress::default(),
            last_update: None,
        }
    }

    #[test]
    fn dependency_forms() {
        let known: BTreeSet<&str> = ["Stream-A", "Stream-B", "main"].into_iter().collect();
        let cases = [
            ("Stream-A", Some("Stream-A")),
            ("Stream-A:task-3", Some("Stream-A")),
            ("[Stream-B] setup", Some("Stream-B")),
            ("[Stream-B]", Some("Stream-B")),
            ("main", Some("main")),
            ("Stream-C", None),
            ("Stream-C:x", None),
            ("[Stream-C]", None),
            ("", None),
        ];
        for (dep, want) in cases {
            assert_eq!(dependency_target(dep, &known), want, "{dep:?}");
        }
    }

    #[test]
    fn unsafe_ids_are_skipped_and_unknown_deps_warned() {
        let (views, warnings) = resolve(vec![
            rec("Stream-A", &[]),
            rec("../../evil", &[]),
            rec("@mcp", &[]),
            rec("Stream-B", &["Stream-A", "Ghost", "Stream-B"]),
        ]);
        let ids: Vec<&str> = views.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["Stream-A", "Stream-B"]);
        assert_eq!(
            views[1].dependencies,
            vec![StreamId::parse("Stream-A").unwrap()]
        );
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("unsafe stream id")));
        assert!(warnings
            .iter()
            .any(|w| w.contains("\"@mcp\"") && w.contains("reserved")));
        assert!(warnings
            .iter()
            .any(|w| w.contains("unknown stream \"Ghost\"")));
    }
}
