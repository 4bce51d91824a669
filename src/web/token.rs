//! The dashboard's access token, `state/http.token`: 32 random bytes in hex,
//! made on first start with mode 0600 and kept across restarts, so a
//! bookmarked URL (token in its fragment) and a Prometheus scrape config
//! keep working. Also the random ids of sessions.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// `n` random bytes from the kernel, in hex.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads the token, making it first if there is none; a file others may
/// read is narrowed to its owner.
pub fn load_or_create(path: &Path) -> std::io::Result<String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            let token = random_hex(32)?;
            file.write_all(format!("{token}\n").as_bytes())?;
            file.sync_all()?;
            return Ok(token);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::metadata(path)?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    let token = std::fs::read_to_string(path)?.trim().to_string();
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} does not hold a usable token (16 or more printable characters); delete it to make a new one",
                path.display()
            ),
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/http.token");
        let first = load_or_create(&path).unwrap();
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create(&path).unwrap(), first);
    }

    #[test]
    fn a_readable_file_is_narrowed_and_junk_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("http.token");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_or_create(&path).unwrap(), "0123456789abcdef0123");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "short\n").unwrap();
        assert!(load_or_create(&path).is_err());
    }

    #[test]
    fn random_hex_differs() {
        assert_ne!(random_hex(16).unwrap(), random_hex(16).unwrap());
    }
}
