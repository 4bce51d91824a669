//! From database records to streams the monitor can act on: ids validated
//! (an unsafe id is rejected and its stream skipped) and dependencies
//! resolved, including the `<sid>:...` and `[<sid>]...` forms.

use std::sync::Arc;

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

pub fn resolve(mut records: Vec<StreamRecord>) -> (Vec<Arc<StreamView>>, Vec<String>) {
    let mut warnings = Vec::new();
    // The task read gives them sorted and unique already; another source
    // may not. Of two records of one id the later wins.
    super::stream_map::sort_keeping_later(&mut records, |record| record.raw_id.as_str());
    // Then each id is checked, in id order, and a record with a bad one
    // dropped in place: no second list of 10 000 records beside the first.
    // `retain_mut` visits each record once, in order, so the ids stay
    // beside their records.
    let mut ids: Vec<StreamId> = Vec::with_capacity(records.len());
    records.retain_mut(|record| {
        // Ids starting with `@` name the components of monitor.toml: a
        // database stream of that name would share their PID file and state.
        if record.raw_id.starts_with(COMPONENT_PREFIX) {
            warnings.push(format!(
                "Skipping stream {}: ids starting with {COMPONENT_PREFIX} are reserved for the components of monitor.toml; rename it",
                quote_raw_id(&record.raw_id)
            ));
            return false;
        }
        match StreamId::from_string(std::mem::take(&mut record.raw_id)) {
            Ok(id) => {
                ids.push(id);
                true
            }
            Err((raw, why)) => {
                warnings.push(format!(
                    "Skipping stream {}: unsafe stream id ({why}); no file of it is touched",
                    quote_raw_id(&raw)
                ));
                false
            }
        }
    });
    let all_dependencies: Vec<Vec<StreamId>> = {
        let known = |name: &str| {
            ids.binary_search_by(|id| id.as_str().cmp(name))
                .ok()
                .map(|i| &ids[i])
        };
        ids.iter()
            .zip(&records)
            .map(|(id, record)| {
                // Sized for the record's list (a first push would make room
                // for four): one per stream, kept for the whole check.
                let mut dependencies: Vec<StreamId> = Vec::with_capacity(record.dependencies.len());
                for dep in &record.dependencies {
                    match dependency_target(dep, known) {
                        Some(target) if target == id => {}
                        Some(target) => {
                            if !dependencies.contains(target) {
                                dependencies.push(target.clone());
                            }
                        }
                        None => warnings.push(format!(
                            "Stream {id} depends on unknown stream {}; dependency ignored",
                            quote_raw_id(dep)
                        )),
                    }
                }
                dependencies
            })
            .collect()
    };
    // The records are moved into the views, not copied. Each view is shared
    // (the daemon keeps them between ticks), so each is its own allocation;
    // the list of them is sized for them: `collect` would reuse the records'
    // buffer in place, fifteen times the size a list of pointers needs, and
    // keep it for the whole check.
    let mut views = Vec::with_capacity(records.len());
    views.extend(ids.into_iter().zip(records).zip(all_dependencies).map(
        |((id, record), dependencies)| {
            Arc::new(StreamView {
                id,
                name: record.name,
                dependencies,
                progress: record.progress,
                last_update: record.last_update,
            })
        },
    ));
    (views, warnings)
}

/// The stream a dependency string names: a stream id itself, `<sid>:...` or
/// `[<sid>]...`; `known` finds a stream by its id.
pub fn dependency_target<'a, T: ?Sized + 'a>(
    dep: &str,
    known: impl Fn(&str) -> Option<&'a T>,
) -> Option<&'a T> {
    if let Some(hit) = known(dep) {
        return Some(hit);
    }
    if let Some((prefix, _)) = dep.split_once(':') {
        if let Some(hit) = known(prefix) {
            return Some(hit);
        }
    }
    if let Some(rest) = dep.strip_prefix('[') {
        if let Some((inner, _)) = rest.split_once(']') {
            if let Some(hit) = known(inner) {
                return Some(hit);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

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
        let names: BTreeSet<&str> = ["Stream-A", "Stream-B", "main"].into_iter().collect();
        let known = |name: &str| names.get(name).copied();
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
            assert_eq!(dependency_target(dep, known), want, "{dep:?}");
        }
    }

    #[test]
    fn streams_come_out_sorted_and_once_whatever_the_order_read() {
        let mut later = rec("Stream-A", &["Stream-C"]);
        later.name = "the later record".into();
        let (views, warnings) = resolve(vec![
            rec("Stream-C", &[]),
            rec("Stream-A", &[]),
            rec("Stream-B", &["Stream-A:task-1", "[Stream-C] setup"]),
            later,
        ]);
        assert!(warnings.is_empty(), "{warnings:?}");
        let ids: Vec<&str> = views.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["Stream-A", "Stream-B", "Stream-C"]);
        assert_eq!(views[0].name, "the later record");
        let deps = |i: usize| -> Vec<&str> {
            views[i].dependencies.iter().map(StreamId::as_str).collect()
        };
        assert_eq!(deps(0), ["Stream-C"]);
        assert_eq!(deps(1), ["Stream-A", "Stream-C"]);
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
