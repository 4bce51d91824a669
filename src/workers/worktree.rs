//! A tc stream's work dir is a git worktree, as upstream's `/orchestrate
//! start` makes it: `streams.worktree_path` when that lies inside the project
//! (no `..` escape, after canonicalisation) and git lists it as a worktree,
//! else `.worktrees/<id>` on branch `stream/<id>`. A missing one is created
//! the way upstream does; a worker never runs in a folder that is not that
//! worktree. Also: is a dependency's branch merged into HEAD.

use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::layout::StreamId;
use crate::process::bounded::run_bounded;

/// Time limit of one git command (`worktree add` checks files out).
pub const GIT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorktreeError {
    #[error("{root} is not a git repository; a tc stream works in a git worktree (run `git init` there, or use the wrapper launcher)")]
    NotARepository { root: PathBuf },
    #[error("{path} exists but is not a git worktree of {root}; move it away so `git worktree add` can make it")]
    NotAWorktree { path: PathBuf, root: PathBuf },
    #[error("git {what} failed in {root}: {why}")]
    Git {
        what: String,
        root: PathBuf,
        why: String,
    },
}

fn git(root: &Path) -> Command {
    let mut command = Command::new("git");
    command.current_dir(root);
    // The monitor's own environment must not point git at another repository.
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_COMMON_DIR",
    ] {
        command.env_remove(var);
    }
    command
}

fn run_git(root: &Path, args: &[&str]) -> Result<(bool, String, String), WorktreeError> {
    let mut command = git(root);
    command.args(args);
    let done = run_bounded(&mut command, None, GIT_TIMEOUT).map_err(|e| WorktreeError::Git {
        what: args.join(" "),
        root: root.to_path_buf(),
        why: e.to_string(),
    })?;
    Ok((done.status.success(), done.stdout, done.stderr))
}

/// The worktrees git lists for the repository at `root` (canonical paths);
/// `NotARepository` when there is none.
pub fn listed(root: &Path) -> Result<Vec<PathBuf>, WorktreeError> {
    let (ok, out, err) = run_git(root, &["worktree", "list", "--porcelain"])?;
    if !ok {
        if err.contains("not a git repository") {
            return Err(WorktreeError::NotARepository {
                root: root.to_path_buf(),
            });
        }
        return Err(WorktreeError::Git {
            what: "worktree list".into(),
            root: root.to_path_buf(),
            why: err.trim().to_string(),
        });
    }
    Ok(parse_porcelain(&out))
}

/// The `worktree <path>` lines of `git worktree list --porcelain`.
pub fn parse_porcelain(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| l.strip_prefix("worktree "))
        .map(|p| {
            let p = Path::new(p);
            p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
        })
        .collect()
}

/// `streams.worktree_path` as a path inside the project: relative paths are
/// taken from the project root; `None` when it escapes the project or does
/// not exist (canonicalisation needs it to).
pub fn stored_path_inside(root: &Path, stored: &str) -> Option<PathBuf> {
    let stored = Path::new(stored);
    if stored
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return None;
    }
    let root = root.canonicalize().ok()?;
    let path = if stored.is_absolute() {
        stored.to_path_buf()
    } else {
        root.join(stored)
    };
    let path = path.canonicalize().ok()?;
    (path.starts_with(&root) && path != root).then_some(path)
}

/// The default work dir of stream `id`: `<root>/.worktrees/<id>`.
pub fn default_dir(root: &Path, id: &StreamId) -> PathBuf {
    root.join(".worktrees").join(id.as_str())
}

/// The work dir to use, without touching anything: the stored path when it
/// is inside the project and listed, else `.worktrees/<id>`.
pub fn choose(root: &Path, id: &StreamId, stored: Option<&str>, listed: &[PathBuf]) -> PathBuf {
    if let Some(path) = stored.and_then(|s| stored_path_inside(root, s)) {
        if listed.contains(&path) {
            return path;
        }
    }
    let dir = default_dir(root, id);
    dir.canonicalize().unwrap_or(dir)
}

/// The stream's worktree, created when missing (`git worktree add
/// .worktrees/<id> -b stream/<id>`, or reusing `stream/<id>` when that
/// branch exists). An existing folder that git does not list is refused.
pub fn ensure(root: &Path, id: &StreamId, stored: Option<&str>) -> Result<PathBuf, WorktreeError> {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let listed = listed(&root)?;
    let dir = choose(&root, id, stored, &listed);
    if listed.contains(&dir) {
        return Ok(dir);
    }
    if dir.exists() {
        return Err(WorktreeError::NotAWorktree { path: dir, root });
    }
    let branch = format!("stream/{}", id.as_str());
    let relative = format!(".worktrees/{}", id.as_str());
    let (exists, _, _) = run_git(
        &root,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ],
    )?;
    let args: Vec<&str> = if exists {
        vec!["worktree", "add", &relative, &branch]
    } else {
        vec!["worktree", "add", &relative, "-b", &branch]
    };
    let (ok, _, err) = run_git(&root, &args)?;
    if !ok {
        return Err(WorktreeError::Git {
            what: args.join(" "),
            root,
            why: err.trim().replace('\n', " "),
        });
    }
    let made = dir.canonicalize().unwrap_or(dir);
    Ok(made)
}

/// Whether branch `stream/<dep>` is merged into the project's HEAD
/// (`git merge-base --is-ancestor stream/<dep> HEAD`). A branch that does
/// not exist counts as merged: upstream's merge step deletes it afterwards.
pub fn branch_merged(root: &Path, dep: &StreamId) -> Result<bool, WorktreeError> {
    let branch = format!("stream/{}", dep.as_str());
    let (exists, _, _) = run_git(
        root,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ],
    )?;
    if !exists {
        return Ok(true);
    }
    let mut command = git(root);
    command.args(["merge-base", "--is-ancestor", &branch, "HEAD"]);
    let done = run_bounded(&mut command, None, GIT_TIMEOUT).map_err(|e| WorktreeError::Git {
        what: "merge-base".into(),
        root: root.to_path_buf(),
        why: e.to_string(),
    })?;
    match done.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(WorktreeError::Git {
            what: format!("merge-base --is-ancestor {branch} HEAD"),
            root: root.to_path_buf(),
            why: done.stderr.trim().replace('\n', " "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, script: &str) {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .status()
            .unwrap()
            .success();
        assert!(ok, "{script}");
    }

    fn repo() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap().join("proj");
        std::fs::create_dir_all(&root).unwrap();
        sh(
            &root,
            "git init -q -b main . && echo x > f && git add f && git commit -q -m init",
        );
        (dir, root)
    }

    fn id(s: &str) -> StreamId {
        StreamId::parse(s).unwrap()
    }

    #[test]
    fn stored_paths_inside_the_project_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap().join("proj");
        std::fs::create_dir_all(root.join("wt/a")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("link")).unwrap();
        let outside = dir.path().join("outside").display().to_string();
        let cases: [(&str, Option<PathBuf>); 7] = [
            ("wt/a", Some(root.join("wt/a"))),
            (
                &root.join("wt/a").display().to_string(),
                Some(root.join("wt/a")),
            ),
            ("wt/../wt/a", None),
            ("../outside", None),
            (&outside, None),
            ("link", None),
            ("wt/missing", None),
        ];
        for (stored, want) in cases {
            assert_eq!(stored_path_inside(&root, stored), want, "{stored}");
        }
        assert_eq!(
            stored_path_inside(&root, "."),
            None,
            "the root itself is no worktree"
        );
    }

    #[test]
    fn ensure_makes_reuses_and_refuses() {
        let (_dir, root) = repo();
        // Made as upstream makes it.
        let made = ensure(&root, &id("1"), None).unwrap();
        assert_eq!(made, root.join(".worktrees/1"));
        assert!(listed(&root).unwrap().contains(&made));
        // Found again, not made twice.
        assert_eq!(ensure(&root, &id("1"), Some(".worktrees/1")).unwrap(), made);
        // An existing branch is reused.
        sh(&root, "git branch stream/2");
        assert_eq!(
            ensure(&root, &id("2"), None).unwrap(),
            root.join(".worktrees/2")
        );
        // A stored path that git lists wins over the default.
        sh(&root, "git worktree add -q custom/three -b other");
        assert_eq!(
            ensure(&root, &id("3"), Some("custom/three")).unwrap(),
            root.join("custom/three")
        );
        // A plain folder where the worktree should be is refused.
        std::fs::create_dir_all(root.join(".worktrees/4")).unwrap();
        let err = ensure(&root, &id("4"), None).unwrap_err();
        assert!(matches!(err, WorktreeError::NotAWorktree { .. }), "{err}");
        // A stored path that is a plain folder is not used.
        std::fs::create_dir_all(root.join("plain")).unwrap();
        assert_eq!(
            ensure(&root, &id("5"), Some("plain")).unwrap(),
            root.join(".worktrees/5")
        );
    }

    #[test]
    fn not_a_repository_is_said() {
        let dir = tempfile::tempdir().unwrap();
        let err = ensure(dir.path(), &id("1"), None).unwrap_err();
        assert!(matches!(err, WorktreeError::NotARepository { .. }), "{err}");
        assert!(err.to_string().contains("not a git repository"));
    }

    #[test]
    fn merged_branches() {
        let (_dir, root) = repo();
        sh(&root, "git branch stream/1 && git checkout -q -b stream/2 && echo y > g && git add g && git commit -q -m two && git checkout -q main");
        assert!(branch_merged(&root, &id("1")).unwrap());
        assert!(!branch_merged(&root, &id("2")).unwrap());
        sh(&root, "git merge -q --no-ff -m merge stream/2");
        assert!(branch_merged(&root, &id("2")).unwrap());
        assert!(
            branch_merged(&root, &id("9")).unwrap(),
            "merged and deleted"
        );
        let err = branch_merged(&root.join("missing"), &id("1")).unwrap_err();
        assert!(err.to_string().contains("git"), "{err}");
    }
}
