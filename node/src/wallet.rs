//! The node's wallet: a secp256k1 key in the repo (mode 0600), apart from
//! the libp2p identity so that either can be replaced without the other.
//! It signs receipts and cheques and pays for transactions.
//!
//! The file holds the secret as `0x` and 64 hex digits, the form wallets
//! import, and a newline.

use std::path::{Path, PathBuf};

use alloy_primitives::hex;
use shoal_protocol::receipt::Wallet;

/// What is wrong with a wallet file.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("wallet key {path} is damaged: {detail}")]
    Damaged { path: PathBuf, detail: String },
}

/// Reads the wallet at `path`, or makes a new one there.
pub fn load_or_create(path: &Path) -> Result<Wallet, WalletError> {
    let io = |source| WalletError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let wallet = generate();
            let text = format!("0x{}\n", hex::encode(wallet.to_bytes()));
            crate::identity::write_private(path, text.as_bytes()).map_err(io)?;
            Ok(wallet)
        }
        Err(e) => Err(io(e)),
    }
}

fn parse(path: &Path, text: &str) -> Result<Wallet, WalletError> {
    let damaged = |detail: String| WalletError::Damaged {
        path: path.to_owned(),
        detail,
    };
    let digits = text.trim();
    let digits = digits.strip_prefix("0x").unwrap_or(digits);
    let bytes = hex::decode(digits).map_err(|e| damaged(format!("not hex: {e}")))?;
    let secret: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| damaged(format!("{} bytes, expected 32", bytes.len())))?;
    Wallet::from_bytes(&secret).map_err(|e| damaged(e.to_string()))
}

/// A new key from the operating system's randomness.
pub(crate) fn generate() -> Wallet {
    loop {
        let secret = crate::identity::random_secret();
        // A 32-byte string is a valid secp256k1 scalar but for odds of
        // about 2^-128; draw again if not.
        if let Ok(w) = Wallet::from_bytes(&secret) {
            return w;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wallet_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.key");
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.address(), b.address());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("0x") && text.trim().len() == 66, "{text}");
    }

    #[test]
    fn a_known_key_gives_its_known_address() {
        // anvil's first development account.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.key");
        std::fs::write(
            &path,
            "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80\n",
        )
        .unwrap();
        let w = load_or_create(&path).unwrap();
        assert_eq!(
            w.address().to_string(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
    }

    #[test]
    fn a_damaged_wallet_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.key");
        for bad in ["garbage", "0x1234", &format!("0x{}", "00".repeat(32))] {
            std::fs::write(&path, bad).unwrap();
            let err = load_or_create(&path).unwrap_err().to_string();
            assert!(err.contains("damaged"), "{err}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), bad);
        }
    }
}
