//! Blocks and their content identifiers.
//!
//! Every block is addressed by a CIDv1. Shards are `raw` (0x55), manifests are
//! `dag-cbor` (0x71). shoal writes sha2-256 multihashes (what every IPFS node
//! speaks) and accepts blake3 on read.

use sha2::{Digest, Sha256};

pub use cid::Cid;

/// The largest block shoal stores or sends. IPFS implementations refuse blocks
/// above 2 MiB on Bitswap; 1 MiB leaves room for message framing and keeps a
/// single block's verification cheap.
pub const MAX_BLOCK_SIZE: usize = 1 << 20;

/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;
/// Multihash code of blake3 (32-byte digest).
pub const BLAKE3: u64 = 0x1e;

/// The IPLD codecs shoal uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Opaque bytes: shards.
    Raw,
    /// dag-cbor documents: manifests.
    DagCbor,
}

impl Codec {
    /// The multicodec code.
    pub const fn code(self) -> u64 {
        match self {
            Codec::Raw => 0x55,
            Codec::DagCbor => 0x71,
        }
    }

    /// The codec of a CID, if it is one shoal knows.
    pub fn of(cid: &Cid) -> Option<Codec> {
        match cid.codec() {
            0x55 => Some(Codec::Raw),
            0x71 => Some(Codec::DagCbor),
            _ => None,
        }
    }
}

/// Why a block was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockError {
    #[error("block {cid} is {len} bytes, over the {MAX_BLOCK_SIZE}-byte limit")]
    TooLarge { cid: Cid, len: usize },
    #[error("block bytes do not hash to {cid}")]
    HashMismatch { cid: Cid },
    #[error("{cid} uses multihash code {code:#x}, which shoal does not support")]
    UnsupportedHash { cid: Cid, code: u64 },
    #[error("{cid} uses codec {code:#x}, which shoal does not support")]
    UnsupportedCodec { cid: Cid, code: u64 },
}

/// The sha2-256 digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Wraps a sha2-256 digest as a multihash.
pub fn sha256_multihash(digest: &[u8; 32]) -> cid::multihash::Multihash<64> {
    // A 32-byte digest always fits the 64-byte multihash.
    cid::multihash::Multihash::wrap(SHA2_256, digest).expect("32-byte digest fits")
}

/// The CIDv1 (sha2-256) of `bytes` under `codec`.
pub fn cid_of(codec: Codec, bytes: &[u8]) -> Cid {
    Cid::new_v1(codec.code(), sha256_multihash(&sha256(bytes)))
}

/// Checks that `bytes` are the block `cid` names: size, codec and hash.
pub fn verify(cid: &Cid, bytes: &[u8]) -> Result<(), BlockError> {
    if bytes.len() > MAX_BLOCK_SIZE {
        return Err(BlockError::TooLarge {
            cid: *cid,
            len: bytes.len(),
        });
    }
    if Codec::of(cid).is_none() {
        return Err(BlockError::UnsupportedCodec {
            cid: *cid,
            code: cid.codec(),
        });
    }
    verify_multihash(cid.hash().code(), cid.hash().digest(), bytes).map_err(|e| match e {
        HashCheck::Mismatch => BlockError::HashMismatch { cid: *cid },
        HashCheck::Unsupported(code) => BlockError::UnsupportedHash { cid: *cid, code },
    })
}

/// Why bytes did not match a multihash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashCheck {
    /// The digest differs (or has the wrong length).
    Mismatch,
    /// The hash function is not one shoal implements.
    Unsupported(u64),
}

/// Checks `bytes` against a multihash given as its code and digest.
pub fn verify_multihash(code: u64, digest: &[u8], bytes: &[u8]) -> Result<(), HashCheck> {
    verify_multihash_parts(code, digest, &[bytes])
}

/// Checks the concatenation of `parts` against a multihash, without
/// concatenating them.
pub fn verify_multihash_parts(code: u64, digest: &[u8], parts: &[&[u8]]) -> Result<(), HashCheck> {
    let ok = match code {
        SHA2_256 => {
            let mut h = Sha256::new();
            parts.iter().for_each(|p| h.update(p));
            *digest == h.finalize()[..]
        }
        BLAKE3 => {
            let mut h = blake3::Hasher::new();
            parts.iter().for_each(|p| {
                h.update(p);
            });
            digest == h.finalize().as_bytes().as_slice()
        }
        other => return Err(HashCheck::Unsupported(other)),
    };
    if ok { Ok(()) } else { Err(HashCheck::Mismatch) }
}

/// A block whose bytes are known to hash to its CID.
///
/// The only ways to make one are to hash the bytes ([`Block::new`]) or to
/// check them against a CID ([`Block::verified`]), so a store that takes a
/// `Block` never needs to hash again.
#[derive(Clone, Copy, Debug)]
pub struct Block<'a> {
    cid: Cid,
    bytes: &'a [u8],
}

impl<'a> Block<'a> {
    /// Hashes `bytes` (sha2-256) into a block of `codec`.
    pub fn new(codec: Codec, bytes: &'a [u8]) -> Result<Self, BlockError> {
        let cid = cid_of(codec, bytes);
        if bytes.len() > MAX_BLOCK_SIZE {
            return Err(BlockError::TooLarge {
                cid,
                len: bytes.len(),
            });
        }
        Ok(Block { cid, bytes })
    }

    /// A block whose CID the caller has just computed from these very bytes
    /// with [`cid_of`], as an importer does when hashing and storing happen
    /// on different threads. Debug builds check it.
    pub fn prehashed(cid: Cid, bytes: &'a [u8]) -> Self {
        debug_assert_eq!(verify(&cid, bytes), Ok(()));
        Block { cid, bytes }
    }

    /// Checks `bytes` against `cid`.
    pub fn verified(cid: Cid, bytes: &'a [u8]) -> Result<Self, BlockError> {
        verify(&cid, bytes)?;
        Ok(Block { cid, bytes })
    }

    pub fn cid(&self) -> &Cid {
        &self.cid
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// Parses a CID typed by a user, with a message that says what is wrong.
pub fn parse_cid(text: &str) -> Result<Cid, String> {
    let cid = Cid::try_from(text.trim()).map_err(|e| format!("invalid CID {text:?}: {e}"))?;
    if Codec::of(&cid).is_none() {
        return Err(format!(
            "CID {text} has codec {:#x}; shoal stores raw (0x55) and dag-cbor (0x71) blocks",
            cid.codec()
        ));
    }
    Ok(cid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_cid_matches_ipfs() {
        // `echo -n hello | ipfs add --cid-version 1 --raw-leaves` gives this CID.
        let cid = cid_of(Codec::Raw, b"hello");
        assert_eq!(
            cid.to_string(),
            "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"
        );
        verify(&cid, b"hello").unwrap();
    }

    #[test]
    fn wrong_bytes_are_refused() {
        let cid = cid_of(Codec::Raw, b"hello");
        assert_eq!(
            verify(&cid, b"hellp"),
            Err(BlockError::HashMismatch { cid })
        );
    }

    #[test]
    fn blake3_is_accepted_on_read() {
        let mh =
            cid::multihash::Multihash::<64>::wrap(BLAKE3, blake3::hash(b"x").as_bytes()).unwrap();
        let cid = Cid::new_v1(Codec::Raw.code(), mh);
        verify(&cid, b"x").unwrap();
        assert!(verify(&cid, b"y").is_err());
    }

    #[test]
    fn unknown_codec_and_bad_text_are_clear_errors() {
        let mh = sha256_multihash(&sha256(b"x"));
        let cid = Cid::new_v1(0x70, mh);
        assert!(matches!(
            verify(&cid, b"x"),
            Err(BlockError::UnsupportedCodec { code: 0x70, .. })
        ));
        assert!(parse_cid("not-a-cid").unwrap_err().contains("invalid CID"));
        assert!(parse_cid(&cid.to_string()).unwrap_err().contains("0x70"));
    }
}
