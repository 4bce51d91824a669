//! File primitives every writer shares. `replace_atomically` is the one way a
//! file the monitor owns (state, metrics, daemon record, PID files of
//! components, self-heal records) is rewritten: a temp file beside it,
//! fsync, rename over the old one, so a reader sees the old or the new
//! content and never half of either; the temp file is removed when any step
//! fails, so a full disk does not stay full of leftovers.

use std::io::Write;
use std::path::{Path, PathBuf};

/// How durable a replacement must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and its directory: survives a power loss (state).
    Synced,
    /// Rename only: readers never see a torn file (metrics, records).
    Atomic,
}

/// A failed replacement: which step, on which path.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}: {source}")]
pub struct ReplaceError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Replaces `path` with `bytes` atomically, creating its directory if needed.
pub fn replace_atomically(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
) -> Result<(), ReplaceError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| ReplaceError {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let written = write_temp(&tmp, bytes, durability).and_then(|()| {
        std::fs::rename(&tmp, path).map_err(|source| ReplaceError {
            action: "replace",
            path: path.to_path_buf(),
            source,
        })
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    if durability == Durability::Synced {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn write_temp(tmp: &Path, bytes: &[u8], durability: Durability) -> Result<(), ReplaceError> {
    let at = |action| {
        let tmp = tmp.to_path_buf();
        move |source| ReplaceError {
            action,
            path: tmp,
            source,
        }
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .or_else(|_| {
            // A leftover of a killed monitor with our PID: replace it.
            let _ = std::fs::remove_file(tmp);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(tmp)
        })
        .map_err(at("create"))?;
    file.write_all(bytes).map_err(at("write"))?;
    if durability == Durability::Synced {
        file.sync_all().map_err(at("sync"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("f.json");
        replace_atomically(&path, b"one", Durability::Synced).unwrap();
        replace_atomically(&path, b"two", Durability::Atomic).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f.json"]);
    }

    #[test]
    fn a_failed_rename_removes_the_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: the rename fails.
        let path = dir.path().join("taken");
        std::fs::create_dir(path.join("inner")).unwrap_or_else(|_| {
            std::fs::create_dir_all(path.join("inner")).unwrap();
        });
        let err = replace_atomically(&path, b"x", Durability::Synced).unwrap_err();
        assert_eq!(err.action, "replace");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["taken"], "temp file left behind");
    }
}
