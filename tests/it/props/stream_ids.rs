//! Stream ids: an id is accepted exactly when it is safe, and every path the
//! monitor makes from an accepted id (PID file, log, lock, worktree) stays
//! inside its directory.

use std::path::{Component, Path};

use monitor_workers::layout::{Layout, PathOverrides, StreamId, MAX_STREAM_ID_BYTES};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

use crate::helpers::*;

/// Ids, many of them near the edges: separators, dots, dashes, control
/// characters, NUL, long ones.
pub(super) fn raw_stream_id() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[A-Za-z0-9_ -]{1,12}",
        1 => Just("/".to_string()),
        1 => Just("\\".to_string()),
        1 => Just(".".to_string()),
        1 => Just("..".to_string()),
        1 => Just("-".to_string()),
        1 => Just("\0".to_string()),
        1 => "[\u{1}-\u{1f}\u{7f}\u{80}-\u{9f}]",
        1 => "[\u{a0}-\u{2fff}]{1,3}",
        1 => Just("~".to_string()),
        1 => Just(":".to_string()),
    ];
    prop_oneof![
        3 => prop::collection::vec(piece, 0..8).prop_map(|p| p.concat()),
        1 => any::<String>(),
        1 => (120usize..140, "[a-z]").prop_map(|(n, c)| c.repeat(n)),
        1 => (40usize..50, "[\u{e9}\u{4e2d}]").prop_map(|(n, c)| c.repeat(n)),
    ]
}

/// Every place the monitor makes from a stream id stays in its directory.
fn assert_stays_inside(dir: &Path, path: &Path, id: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(path.parent(), Some(dir), "{:?} from id {:?}", path, id);
    let extra: Vec<_> = path.strip_prefix(dir).unwrap().components().collect();
    prop_assert_eq!(extra.len(), 1, "{:?} from id {:?}", path, id);
    prop_assert!(
        matches!(extra[0], Component::Normal(_)),
        "{:?} from id {:?}",
        path,
        id
    );
    Ok(())
}

/// A real layout, found the way the monitor finds one.
fn sandbox_layout() -> (tempfile::TempDir, Layout) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("project");
    std::fs::create_dir_all(root.join(".claude/orchestrator")).unwrap();
    let overrides = PathOverrides {
        project_root: Some(root.clone()),
        ..PathOverrides::default()
    };
    let layout = Layout::discover(&overrides, &root, None, Some(tmp.path())).unwrap();
    (tmp, layout)
}

/// Never panics; an accepted id is safe as a file name and as an argument;
/// every safe id is accepted.
#[test]
fn stream_ids_accepted_are_safe_and_safe_ids_are_accepted() {
    let (_tmp, layout) = sandbox_layout();
    let mut runner = TestRunner::new(ProptestConfig::with_cases(256));
    let result = runner.run(&raw_stream_id(), |raw| {
        let safe = !raw.is_empty()
            && raw.len() <= MAX_STREAM_ID_BYTES
            && !raw.contains('/')
            && !raw.contains('\\')
            && !raw.contains("..")
            && !raw.contains('\0')
            && !raw.chars().any(char::is_control)
            && !raw.starts_with('-')
            && !raw.starts_with('.');
        match StreamId::parse(&raw) {
            Ok(id) => {
                prop_assert!(safe, "accepted unsafe id {raw:?}");
                prop_assert_eq!(id.as_str(), raw.as_str());
                prop_assert_eq!(id.to_string(), raw.clone());
                let dir = Path::new("/srv/project/.claude/orchestrator/pids");
                assert_stays_inside(dir, &dir.join(id.as_str()), &raw)?;
                assert_stays_inside(&layout.pids_dir(), &layout.pid_file(&id), &raw)?;
                assert_stays_inside(&layout.logs_dir(), &layout.log_file(&id, INIT), &raw)?;
                assert_stays_inside(&layout.locks_dir(), &layout.stream_lock(&id), &raw)?;
                if id.as_str() == "main" {
                    prop_assert_eq!(layout.work_dir(&id), layout.project_root.clone());
                } else {
                    let worktrees = layout.project_root.join(".claude").join("worktrees");
                    assert_stays_inside(&worktrees, &layout.work_dir(&id), &raw)?;
                }
            }
            Err(why) => {
                prop_assert!(!safe, "refused safe id {raw:?}: {why}");
                prop_assert!(!why.is_empty() && !why.contains('\n'));
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
