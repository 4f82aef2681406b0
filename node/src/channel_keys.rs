//! Channel keys kept in the repo: `<repo>/channels/<name>.key`, the 32-byte
//! ed25519 secret of each channel this node broadcasts, mode 0600.

use std::path::{Path, PathBuf};

use shoal_protocol::channel::{ChannelId, ChannelKey};
use shoal_protocol::manifest::is_safe_file_name;

/// Why a channel key cannot be made or read.
#[derive(Debug, thiserror::Error)]
pub enum ChannelKeyError {
    #[error(
        "invalid channel name {0:?}: use letters, digits, '.', '_' and '-' (not starting with '.')"
    )]
    BadName(String),
    #[error("channel {name:?} already exists (id {id})")]
    Exists { name: String, id: ChannelId },
    #[error("no channel named {0:?} in this repo (create it with `shoal channel create {0}`)")]
    Unknown(String),
    #[error("{path}: {detail}")]
    Damaged { path: PathBuf, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn key_path(repo: &Path, name: &str) -> Result<PathBuf, ChannelKeyError> {
    if !is_safe_file_name(name) || name.len() > 64 {
        return Err(ChannelKeyError::BadName(name.to_owned()));
    }
    Ok(repo.join("channels").join(format!("{name}.key")))
}

/// Creates a channel key named `name`; refuses to replace one.
pub fn create(repo: &Path, name: &str) -> Result<ChannelId, ChannelKeyError> {
    let path = key_path(repo, name)?;
    if path.exists() {
        let id = load(repo, name)?.id();
        return Err(ChannelKeyError::Exists {
            name: name.to_owned(),
            id,
        });
    }
    let io = |source| ChannelKeyError::Io {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let seed = crate::identity::random_secret();
    let key = ChannelKey::from_seed(&seed);
    crate::identity::write_private(&path, &seed).map_err(io)?;
    Ok(key.id())
}

/// Reads the key of channel `name`.
pub fn load(repo: &Path, name: &str) -> Result<ChannelKey, ChannelKeyError> {
    let path = key_path(repo, name)?;
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ChannelKeyError::Unknown(name.to_owned()));
        }
        Err(source) => return Err(ChannelKeyError::Io { path, source }),
    };
    let seed: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| ChannelKeyError::Damaged {
            path: path.clone(),
            detail: format!("{} bytes, expected a 32-byte key", bytes.len()),
        })?;
    Ok(ChannelKey::from_seed(&seed))
}

/// The channels of this repo, by name.
pub fn list(repo: &Path) -> Result<Vec<(String, ChannelId)>, ChannelKeyError> {
    let dir = repo.join("channels");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ChannelKeyError::Io { path: dir, source }),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if let Some(name) = file.strip_suffix(".key") {
            out.push((name.to_owned(), load(repo, name)?.id()));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_created_once_kept_private_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        let id = create(dir.path(), "news").unwrap();
        assert_eq!(load(dir.path(), "news").unwrap().id(), id);
        assert!(matches!(
            create(dir.path(), "news"),
            Err(ChannelKeyError::Exists { id: same, .. }) if same == id
        ));
        assert_eq!(list(dir.path()).unwrap(), vec![("news".to_owned(), id)]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join("channels/news.key");
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        for bad in ["", "../x", ".hidden", "a/b"] {
            assert!(matches!(
                create(dir.path(), bad),
                Err(ChannelKeyError::BadName(_))
            ));
        }
        assert!(matches!(
            load(dir.path(), "nope"),
            Err(ChannelKeyError::Unknown(_))
        ));
        std::fs::write(dir.path().join("channels/bad.key"), b"short").unwrap();
        assert!(matches!(
            load(dir.path(), "bad"),
            Err(ChannelKeyError::Damaged { .. })
        ));
    }
}
