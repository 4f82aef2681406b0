//! Files written where someone else may have been first.
//!
//! A finished file appears at its path whole or not at all: it is written
//! under a temporary name beside its target and renamed over it. The
//! temporary name is random and created exclusively (`O_CREAT|O_EXCL`, which
//! also refuses a symlink in its place), so nothing planted at a name the
//! writer would choose — a symlink to a victim file least of all — is
//! written through. A temporary folder is made the same way (`mkdir` fails
//! on anything already there) and readable by its owner only until it is
//! renamed into place, so nothing can be planted inside it either.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Tries before giving up on finding a free temporary name (each has 64
/// random bits: a clash means something is squatting the folder).
const ATTEMPTS: usize = 16;

/// 64 bits from the process's randomly keyed hasher (seeded by the OS).
fn random_suffix() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:016x}", h.finish())
}

/// A random hidden name beside `target`: `.NAME.RANDOM.partial`.
fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "shoal".into());
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parent.join(format!(".{name}.{}.partial", random_suffix()))
}

/// Creates `path`, which must not exist (nor be a symlink); `private`:
/// readable by the owner only.
pub fn create_new(path: &Path, private: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    options.open(path)
}

/// A new temporary file beside `target`, and its path.
pub fn temp_file(target: &Path, private: bool) -> io::Result<(PathBuf, File)> {
    for _ in 0..ATTEMPTS {
        let path = temp_path(target);
        match create_new(&path, private) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temporary name beside the target",
    ))
}

/// A new temporary folder beside `target`, readable by its owner only.
pub fn temp_dir(target: &Path) -> io::Result<PathBuf> {
    for _ in 0..ATTEMPTS {
        let path = temp_path(target);
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        match builder.create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temporary name beside the target",
    ))
}

/// Writes `bytes` to `path` atomically: a temporary file beside it,
/// synced, renamed over it. `private`: readable by the owner only.
pub fn write_atomically(path: &Path, bytes: &[u8], private: bool) -> io::Result<()> {
    let (tmp, mut file) = temp_file(path, private)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_planted_at_the_target_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let target = dir.path().join("out");
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        write_atomically(&target, b"new", false).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert!(!std::fs::symlink_metadata(&target).unwrap().is_symlink());
    }

    #[test]
    fn exclusive_creation_refuses_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let planted = dir.path().join("planted");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert!(create_new(&planted, false).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn private_files_and_folders_are_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = temp_file(&dir.path().join("key"), true).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        let d = temp_dir(&dir.path().join("export")).unwrap();
        assert_eq!(mode(&d), 0o700);
        assert_ne!(temp_path(&path), temp_path(&path), "names are random");
    }
}
