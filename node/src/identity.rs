//! The node's ed25519 identity, kept in the repo with mode 0600.

use std::path::Path;

use libp2p::identity::Keypair;

use crate::NodeError;

/// Reads the key at `path`, or creates one there (readable by the owner
/// only) if there is none.
pub fn load_or_create(path: &Path) -> Result<Keypair, NodeError> {
    let io_err = |source| NodeError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            Keypair::from_protobuf_encoding(&bytes).map_err(|source| NodeError::Identity {
                path: path.to_owned(),
                source,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|source| NodeError::Identity {
                    path: path.to_owned(),
                    source,
                })?;
            write_private(path, &bytes).map_err(io_err)?;
            Ok(key)
        }
        Err(e) => Err(io_err(e)),
    }
}

/// 32 bytes from the operating system's randomness (the source of the
/// identity, wallet and channel keys).
pub fn random_secret() -> [u8; 32] {
    let fresh = libp2p::identity::ed25519::Keypair::generate();
    let mut out = [0u8; 32];
    out.copy_from_slice(&fresh.secret().as_ref()[..32]);
    out
}

/// Writes a secret to `path` readable by the owner only, atomically
/// (see `shoal_storage::files`: a random temporary name created
/// exclusively, synced, renamed over `path`).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    shoal_storage::files::write_atomically(path, bytes, true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let a = super::load_or_create(&path).unwrap();
        let b = super::load_or_create(&path).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"garbage").unwrap();
        assert!(super::load_or_create(&path).is_err());
    }
}
