//! The JSON state file of earlier versions (`monitor-state.json`): read
//! only to migrate it, never following a link or blocking on a FIFO, with
//! the give-ups of older files upgraded to their typed form.

use super::*;

/// A file found by lstat must be a regular file to be read at all.
pub(super) fn check_regular(meta: &std::fs::Metadata) -> Result<(), Unusable> {
    if meta.file_type().is_file() {
        Ok(())
    } else {
        Err(Unusable::Bad(format!(
            "is not a regular file ({})",
            describe_file_type(meta)
        )))
    }
}

/// The JSON state file of earlier versions, read as it is.
pub(super) fn read_json_file(path: &Path) -> Result<State, Unusable> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => return Err(Unusable::Unreadable(e.to_string())),
    };
    check_regular(&meta)?;
    if meta.len() > MAX_STATE_BYTES {
        return Err(Unusable::Bad(format!(
            "is too large ({} bytes, at most {MAX_STATE_BYTES})",
            meta.len()
        )));
    }
    let text = read_regular(path).map_err(|e| Unusable::Unreadable(e.to_string()))?;
    parse(&text).map_err(Unusable::Bad)
}

/// Reads a file known (by lstat) to be regular without following a symlink
/// or blocking on a FIFO swapped in meanwhile.
pub(super) fn read_regular(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::other(format!(
            "not a regular file ({})",
            describe_file_type(&meta)
        )));
    }
    let mut text = String::new();
    file.by_ref()
        .take(MAX_STATE_BYTES + 1)
        .read_to_string(&mut text)?;
    Ok(text)
}

pub(super) fn describe_file_type(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    match () {
        _ if t.is_symlink() => "a symlink",
        _ if t.is_dir() => "a directory",
        _ if t.is_fifo() => "a FIFO",
        _ if t.is_socket() => "a socket",
        _ if t.is_block_device() || t.is_char_device() => "a device",
        _ => "not a regular file",
    }
}

/// Parses state text; the error says what is wrong with it.
pub fn parse(text: &str) -> Result<State, String> {
    // The version first (a newer file may not fit this State), then the
    // state itself, straight into its types: no intermediate JSON tree,
    // which would double the memory of a large state.
    #[derive(Deserialize)]
    struct Versioned {
        version: Option<serde_json::Value>,
    }
    let versioned: Versioned =
        serde_json::from_str(text).map_err(|e| format!("is corrupt ({e})"))?;
    let version = versioned
        .version
        .and_then(|v| v.as_u64())
        .ok_or("is corrupt (no version)")?;
    if version > u64::from(STATE_VERSION) {
        return Err(format!(
            "is from a newer version ({version} > {STATE_VERSION})"
        ));
    }
    let mut state: State = serde_json::from_str(text).map_err(|e| format!("is corrupt ({e})"))?;
    upgrade_give_ups(&mut state);
    Ok(state)
}

/// Files written before give-ups were typed hold only the reason text; the
/// budget's own words are recognised so the original's give-up line stays.
pub(super) fn upgrade_give_ups(state: &mut State) {
    use crate::supervise::lifecycle::Lifecycle;
    use crate::supervise::model::GiveUp;
    for st in state.streams.values_mut() {
        if let (Lifecycle::GaveUp { reason }, None) = (&st.lifecycle, &st.history().gave_up) {
            let max = reason
                .strip_prefix("max restart limit (")
                .and_then(|r| r.strip_suffix(") reached"))
                .and_then(|n| n.parse().ok());
            st.history_mut().gave_up = max.map(|max| GiveUp::Budget { max });
        }
    }
}
