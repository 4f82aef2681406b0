//! The manifests that describe a stream, as dag-cbor.
//!
//! A [`SegmentManifest`] describes one segment: its bytes were cut into `k`
//! data shards and extended with `m` parity shards, any `k` of which rebuild
//! it. A [`StreamManifest`] lists the segments of every rendition of a stream;
//! its CID is the stream's root.
//!
//! Decoding is strict. The block size is checked first, then the version,
//! then every variable-length field against its limit before it is allocated,
//! then the meaning of the fields, and last that the bytes are the canonical
//! encoding of what they decode to, so that one manifest has one CID.

use serde::{Deserialize, Serialize};

use crate::block::{self, Cid, Codec, MAX_BLOCK_SIZE};
use crate::bounded;

/// The manifest version this code writes and reads.
pub const MANIFEST_VERSION: u64 = 1;

/// Most shards (`k + m`) per segment. Reed-Solomon over GF(2^16) allows far
/// more, but every shard is a block to announce and fetch: 256 keeps a
/// segment manifest under 10 KiB.
pub const MAX_SHARDS: usize = 256;

/// Most renditions in one stream: ladders in practice have under ten.
pub const MAX_RENDITIONS: usize = 32;

/// Most segments in one rendition. A reference costs about 45 bytes, so this
/// keeps a stream manifest under the 1 MiB block limit: 78 GiB of a file at
/// 4 MiB segments, 11 hours of video at 2 s segments.
pub const MAX_SEGMENTS: usize = 20_000;

/// Longest text field (names, media types, codecs).
pub const MAX_TEXT: usize = 256;

/// Longest multihash accepted for a segment hash (code, length, 64-byte digest).
const MAX_HASH: usize = 80;

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest is {0} bytes, over the {MAX_BLOCK_SIZE}-byte block limit")]
    TooLarge(usize),
    #[error("manifest version {0} is not supported (this shoal reads version {MANIFEST_VERSION})")]
    UnsupportedVersion(u64),
    #[error("malformed manifest: {0}")]
    Malformed(String),
    #[error("invalid manifest: {0}")]
    Invalid(String),
    #[error("manifest is not in canonical dag-cbor form")]
    NonCanonical,
}

/// One segment: a piece of a file or one HLS media segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentManifest {
    pub version: u64,
    /// Position of the segment in its rendition (0 for an init segment).
    pub index: u64,
    /// Length of the segment in bytes.
    pub length: u64,
    /// Media duration in microseconds (absent for file pieces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    /// Multihash of the whole segment, checked after it is rebuilt.
    #[serde(with = "serde_bytes_bounded")]
    pub hash: Vec<u8>,
    /// Data shards: the segment's own bytes, the last one zero-padded.
    pub k: u16,
    /// Parity shards.
    pub m: u16,
    /// Bytes in every shard.
    pub shard_size: u32,
    /// `k` data shard CIDs then `m` parity shard CIDs, all raw.
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_SHARDS>")]
    pub shards: Vec<Cid>,
}

mod serde_bytes_bounded {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        crate::bounded::bytes::<D, { super::MAX_HASH }>(d)
    }
}

impl SegmentManifest {
    /// The data shards' CIDs.
    pub fn data_shards(&self) -> &[Cid] {
        &self.shards[..usize::from(self.k)]
    }

    /// Encodes as dag-cbor, returning the block's CID and bytes.
    pub fn to_block(&self) -> (Cid, Vec<u8>) {
        encode(self)
    }

    /// Decodes and validates a block.
    pub fn from_block(bytes: &[u8]) -> Result<Self, ManifestError> {
        let manifest: Self = decode(bytes)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks that the fields agree with each other.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let invalid = |msg: String| Err(ManifestError::Invalid(msg));
        if self.version != MANIFEST_VERSION {
            return Err(ManifestError::UnsupportedVersion(self.version));
        }
        let (k, m) = (usize::from(self.k), usize::from(self.m));
        if k == 0 || k + m > MAX_SHARDS {
            return invalid(format!(
                "segment {} has k={k}, m={m}; need k >= 1 and k + m <= {MAX_SHARDS}",
                self.index
            ));
        }
        if self.shards.len() != k + m {
            return invalid(format!(
                "segment {} lists {} shards for k + m = {}",
                self.index,
                self.shards.len(),
                k + m
            ));
        }
        let shard_size = self.shard_size as usize;
        if shard_size == 0 || !shard_size.is_multiple_of(2) || shard_size > MAX_BLOCK_SIZE {
            return invalid(format!(
                "segment {} has shard size {shard_size}; need an even size in 2..={MAX_BLOCK_SIZE}",
                self.index
            ));
        }
        let capacity = (k as u64) * (shard_size as u64);
        if self.length == 0 || self.length > capacity {
            return invalid(format!(
                "segment {} is {} bytes, which {k} shards of {shard_size} bytes cannot hold",
                self.index, self.length
            ));
        }
        if let Some(cid) = self
            .shards
            .iter()
            .find(|c| Codec::of(c) != Some(Codec::Raw))
        {
            return invalid(format!("shard {cid} of segment {} is not raw", self.index));
        }
        check_segment_hash(&self.hash).map_err(ManifestError::Invalid)?;
        Ok(())
    }

    /// Checks rebuilt segment bytes against the manifest's length and hash.
    pub fn verify_segment(&self, bytes: &[u8]) -> bool {
        self.verify_segment_parts(&[bytes])
    }

    /// [`SegmentManifest::verify_segment`] for a segment in pieces.
    pub fn verify_segment_parts(&self, parts: &[&[u8]]) -> bool {
        let Ok((code, digest)) = split_multihash(&self.hash) else {
            return false;
        };
        let len: usize = parts.iter().map(|p| p.len()).sum();
        len as u64 == self.length && block::verify_multihash_parts(code, digest, parts).is_ok()
    }
}

/// Splits multihash bytes into code and digest.
fn split_multihash(bytes: &[u8]) -> Result<(u64, &[u8]), String> {
    let mh = cid::multihash::Multihash::<64>::from_bytes(bytes)
        .map_err(|e| format!("segment hash is not a multihash: {e}"))?;
    let code = mh.code();
    let start = bytes.len() - usize::from(mh.size());
    Ok((code, &bytes[start..]))
}

fn check_segment_hash(bytes: &[u8]) -> Result<(), String> {
    let (code, digest) = split_multihash(bytes)?;
    match code {
        block::SHA2_256 | block::BLAKE3 if digest.len() == 32 => Ok(()),
        block::SHA2_256 | block::BLAKE3 => Err(format!(
            "segment hash digest is {} bytes, not 32",
            digest.len()
        )),
        other => Err(format!(
            "segment hash uses unsupported multihash code {other:#x}"
        )),
    }
}

/// What a stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamKind {
    /// A file cut into fixed-size pieces.
    #[serde(rename = "file")]
    File,
    /// An HLS video-on-demand presentation.
    #[serde(rename = "hls-vod")]
    HlsVod,
}

/// A reference from a rendition to one of its segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(Cid, Option<u64>)", into = "(Cid, Option<u64>)")]
pub struct SegmentRef {
    /// The segment's manifest.
    pub cid: Cid,
    /// Media duration in microseconds, repeated here so a playlist can be
    /// written without reading every segment manifest.
    pub duration_us: Option<u64>,
}

impl From<(Cid, Option<u64>)> for SegmentRef {
    fn from((cid, duration_us): (Cid, Option<u64>)) -> Self {
        SegmentRef { cid, duration_us }
    }
}

impl From<SegmentRef> for (Cid, Option<u64>) {
    fn from(r: SegmentRef) -> Self {
        (r.cid, r.duration_us)
    }
}

/// One rendition of a stream (a file has exactly one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rendition {
    /// File name of the rendition's media playlist on export.
    #[serde(deserialize_with = "bounded::string::<_, MAX_TEXT>")]
    pub playlist: String,
    /// Peak bits per second (EXT-X-STREAM-INF BANDWIDTH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<u64>,
    /// `WIDTHxHEIGHT`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded::opt_string::<_, MAX_TEXT>"
    )]
    pub resolution: Option<String>,
    /// RFC 6381 codec list.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded::opt_string::<_, MAX_TEXT>"
    )]
    pub codecs: Option<String>,
    /// Segment manifest of the fMP4 initialisation section (EXT-X-MAP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Cid>,
    /// File extension of the media segments (`ts`, `m4s`, `bin` for files).
    #[serde(deserialize_with = "bounded::string::<_, MAX_TEXT>")]
    pub segment_extension: String,
    /// EXT-X-MEDIA-SEQUENCE of the first segment.
    pub media_sequence: u64,
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_SEGMENTS>")]
    pub segments: Vec<SegmentRef>,
}

/// The root of a stream: what `shoal add` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamManifest {
    pub version: u64,
    pub kind: StreamKind,
    /// A human name: the file name, or the playlist's.
    #[serde(deserialize_with = "bounded::string::<_, MAX_TEXT>")]
    pub name: String,
    /// MIME type of the content.
    #[serde(deserialize_with = "bounded::string::<_, MAX_TEXT>")]
    pub media_type: String,
    /// Total bytes of every segment (init segments included).
    pub size: u64,
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_RENDITIONS>")]
    pub renditions: Vec<Rendition>,
    /// The address the stream's creator is paid at (20 bytes), or none:
    /// bound into the content id viewers sign receipts for
    /// ([`crate::receipt::content_id`]), and into the root CID itself. A
    /// stream without one earns nothing.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "bounded::bytes::<_, 20>",
        serialize_with = "serialize_bytes"
    )]
    pub creator: Vec<u8>,
}

fn serialize_bytes<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(v)
}

impl StreamManifest {
    /// The creator's address, if the manifest names one.
    pub fn creator(&self) -> Option<alloy_primitives::Address> {
        alloy_primitives::Address::try_from(self.creator.as_slice()).ok()
    }

    /// Encodes as dag-cbor, returning the block's CID and bytes.
    pub fn to_block(&self) -> (Cid, Vec<u8>) {
        encode(self)
    }

    /// Decodes and validates a block.
    pub fn from_block(bytes: &[u8]) -> Result<Self, ManifestError> {
        let manifest: Self = decode(bytes)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks that the fields agree with each other.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let invalid = |msg: String| Err(ManifestError::Invalid(msg));
        if self.version != MANIFEST_VERSION {
            return Err(ManifestError::UnsupportedVersion(self.version));
        }
        if self.renditions.is_empty() {
            return invalid("stream has no rendition".into());
        }
        if !matches!(self.creator.len(), 0 | 20) {
            return invalid(format!(
                "the creator's address is {} bytes, not 20",
                self.creator.len()
            ));
        }
        if self.kind == StreamKind::File && self.renditions.len() != 1 {
            return invalid("a file stream has exactly one rendition".into());
        }
        let mut names = std::collections::HashSet::new();
        for r in &self.renditions {
            if !is_safe_file_name(&r.playlist) || !r.playlist.ends_with(".m3u8") {
                return invalid(format!(
                    "rendition playlist name {:?} is not a plain .m3u8 file name",
                    r.playlist
                ));
            }
            if self.renditions.len() > 1 && r.playlist == "index.m3u8" {
                return invalid(
                    "index.m3u8 is the master playlist of a stream with several renditions".into(),
                );
            }
            if !names.insert(r.playlist.as_str()) {
                return invalid(format!("two renditions are named {:?}", r.playlist));
            }
            if r.segment_extension.is_empty()
                || r.segment_extension.len() > 8
                || !r
                    .segment_extension
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                return invalid(format!(
                    "segment extension {:?} is not 1-8 lowercase letters or digits",
                    r.segment_extension
                ));
            }
            let links = r.init.iter().chain(r.segments.iter().map(|s| &s.cid));
            if let Some(cid) = links
                .into_iter()
                .find(|c| Codec::of(c) != Some(Codec::DagCbor))
            {
                return invalid(format!("segment link {cid} is not a dag-cbor manifest"));
            }
            let timed = self.kind == StreamKind::HlsVod;
            if r.segments.iter().any(|s| s.duration_us.is_some() != timed) {
                return invalid(format!(
                    "rendition {:?}: every segment of {} stream must {} a duration",
                    r.playlist,
                    if timed { "an HLS" } else { "a file" },
                    if timed { "have" } else { "not have" }
                ));
            }
        }
        Ok(())
    }

    /// Every manifest this one links to, in rendition order.
    pub fn segment_links(&self) -> impl Iterator<Item = Cid> + '_ {
        self.renditions.iter().flat_map(|r| {
            r.init
                .iter()
                .copied()
                .chain(r.segments.iter().map(|s| s.cid))
        })
    }
}

/// The blocks a block links to: none for a raw block, the segment manifests
/// of a stream manifest, the shards of a segment manifest.
pub fn links(cid: &Cid, bytes: &[u8]) -> Result<Vec<Cid>, ManifestError> {
    Ok(links_needed(cid, bytes)?.0)
}

/// [`links`], with how many of them make the block complete: all of a
/// stream's segments, but any `k` of a segment's shards.
pub fn links_needed(cid: &Cid, bytes: &[u8]) -> Result<(Vec<Cid>, usize), ManifestError> {
    match Codec::of(cid) {
        Some(Codec::Raw) => Ok((Vec::new(), 0)),
        Some(Codec::DagCbor) => {
            #[derive(Deserialize)]
            struct KindProbe {
                #[serde(default)]
                kind: Option<serde::de::IgnoredAny>,
            }
            let probe: KindProbe = serde_ipld_dagcbor::from_slice(bytes)
                .map_err(|e| ManifestError::Malformed(e.to_string()))?;
            if probe.kind.is_some() {
                let links: Vec<Cid> = StreamManifest::from_block(bytes)?.segment_links().collect();
                let n = links.len();
                Ok((links, n))
            } else {
                let seg = SegmentManifest::from_block(bytes)?;
                let k = usize::from(seg.k);
                Ok((seg.shards, k))
            }
        }
        None => Err(ManifestError::Invalid(format!(
            "{cid} has codec {:#x}, which is not a shoal block",
            cid.codec()
        ))),
    }
}

/// True for a name that is one path component, safe to create in a folder.
pub fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TEXT
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn encode<T: Serialize>(value: &T) -> (Cid, Vec<u8>) {
    // Manifests hold only integers, strings, bytes, lists and CIDs: encoding
    // them cannot fail.
    let bytes = serde_ipld_dagcbor::to_vec(value).expect("manifest encodes");
    (block::cid_of(Codec::DagCbor, &bytes), bytes)
}

#[derive(Deserialize)]
struct VersionProbe {
    version: u64,
}

fn decode<T: Serialize + for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ManifestError> {
    if bytes.len() > MAX_BLOCK_SIZE {
        return Err(ManifestError::TooLarge(bytes.len()));
    }
    // Read the version alone first, so that a manifest from a newer shoal says
    // so instead of failing on whichever field changed.
    let probe: VersionProbe = serde_ipld_dagcbor::from_slice(bytes)
        .map_err(|e| ManifestError::Malformed(e.to_string()))?;
    if probe.version != MANIFEST_VERSION {
        return Err(ManifestError::UnsupportedVersion(probe.version));
    }
    let value: T = serde_ipld_dagcbor::from_slice(bytes)
        .map_err(|e| ManifestError::Malformed(e.to_string()))?;
    if serde_ipld_dagcbor::to_vec(&value).ok().as_deref() != Some(bytes) {
        return Err(ManifestError::NonCanonical);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment() -> SegmentManifest {
        let shard = block::cid_of(Codec::Raw, b"shard");
        SegmentManifest {
            version: 1,
            index: 3,
            length: 10,
            duration_us: Some(2_000_000),
            hash: block::sha256_multihash(&block::sha256(b"0123456789")).to_bytes(),
            k: 2,
            m: 1,
            shard_size: 6,
            shards: vec![shard; 3],
        }
    }

    fn stream(seg: Cid) -> StreamManifest {
        StreamManifest {
            version: 1,
            creator: Vec::new(),
            kind: StreamKind::HlsVod,
            name: "show".into(),
            media_type: "application/vnd.apple.mpegurl".into(),
            size: 10,
            renditions: vec![Rendition {
                playlist: "v0.m3u8".into(),
                bandwidth: Some(800_000),
                resolution: Some("640x360".into()),
                codecs: None,
                init: None,
                segment_extension: "ts".into(),
                media_sequence: 0,
                segments: vec![SegmentRef {
                    cid: seg,
                    duration_us: Some(2_000_000),
                }],
            }],
        }
    }

    #[test]
    fn round_trip() {
        let seg = segment();
        let (cid, bytes) = seg.to_block();
        assert_eq!(SegmentManifest::from_block(&bytes).unwrap(), seg);
        assert!(seg.verify_segment(b"0123456789"));
        assert!(!seg.verify_segment(b"0123456780"));
        let s = stream(cid);
        let (_, bytes) = s.to_block();
        assert_eq!(StreamManifest::from_block(&bytes).unwrap(), s);
    }

    #[test]
    fn unknown_version_is_named() {
        let mut seg = segment();
        seg.version = 2;
        let bytes = serde_ipld_dagcbor::to_vec(&seg).unwrap();
        assert_eq!(
            SegmentManifest::from_block(&bytes),
            Err(ManifestError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn wrong_field_type_is_an_error() {
        #[derive(Serialize)]
        struct Bad {
            version: u64,
            index: &'static str,
        }
        let bytes = serde_ipld_dagcbor::to_vec(&Bad {
            version: 1,
            index: "x",
        })
        .unwrap();
        assert!(matches!(
            SegmentManifest::from_block(&bytes),
            Err(ManifestError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_list_is_refused_before_allocation() {
        // {"shards": <array header declaring 2^32 items>} and nothing more:
        // the limit must trip on the header, before any item is read.
        let mut bytes = vec![0xa1];
        bytes.extend(serde_ipld_dagcbor::to_vec(&"shards").unwrap());
        bytes.extend([0x9a, 0xff, 0xff, 0xff, 0xff]);
        let err = serde_ipld_dagcbor::from_slice::<SegmentManifest>(&bytes).unwrap_err();
        assert!(err.to_string().contains("at most 256"), "{err}");
        // Through the public entry point it is a malformed manifest.
        assert!(matches!(
            SegmentManifest::from_block(&bytes),
            Err(ManifestError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_string_is_refused() {
        let mut s = stream(segment().to_block().0);
        s.name = "x".repeat(MAX_TEXT + 1);
        let bytes = serde_ipld_dagcbor::to_vec(&s).unwrap();
        assert!(matches!(
            StreamManifest::from_block(&bytes),
            Err(ManifestError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_block_is_refused_first() {
        let bytes = vec![0u8; MAX_BLOCK_SIZE + 1];
        assert_eq!(
            StreamManifest::from_block(&bytes),
            Err(ManifestError::TooLarge(MAX_BLOCK_SIZE + 1))
        );
    }

    #[test]
    fn inconsistent_fields_are_invalid() {
        let mut seg = segment();
        seg.shards.pop();
        let bytes = serde_ipld_dagcbor::to_vec(&seg).unwrap();
        assert!(matches!(
            SegmentManifest::from_block(&bytes),
            Err(ManifestError::Invalid(_))
        ));

        let mut s = stream(segment().to_block().0);
        s.renditions[0].playlist = "../../etc/passwd.m3u8".into();
        let bytes = serde_ipld_dagcbor::to_vec(&s).unwrap();
        assert!(matches!(
            StreamManifest::from_block(&bytes),
            Err(ManifestError::Invalid(_))
        ));
    }

    #[test]
    fn non_canonical_encodings_are_refused() {
        let seg = segment();
        let canonical = serde_ipld_dagcbor::to_vec(&seg).unwrap();

        // The same map with its keys in declaration order.
        let ipld: ipld_core::ipld::Ipld = serde_ipld_dagcbor::from_slice(&canonical).unwrap();
        let ipld_core::ipld::Ipld::Map(map) = ipld else {
            panic!("a map")
        };
        let mut unordered = vec![0xa0 | map.len() as u8];
        for key in [
            "version",
            "index",
            "length",
            "duration_us",
            "hash",
            "k",
            "m",
            "shard_size",
            "shards",
        ] {
            unordered.extend(serde_ipld_dagcbor::to_vec(&key).unwrap());
            unordered.extend(serde_ipld_dagcbor::to_vec(&map[key]).unwrap());
        }
        assert_ne!(unordered, canonical);
        assert!(SegmentManifest::from_block(&unordered).is_err());

        // The version as a two-byte integer (0x18 0x01) instead of one byte.
        let key = serde_ipld_dagcbor::to_vec(&"version").unwrap();
        let at = canonical
            .windows(key.len())
            .position(|w| w == key.as_slice())
            .unwrap()
            + key.len();
        assert_eq!(canonical[at], 0x01);
        let mut wide = canonical.clone();
        wide.splice(at..at + 1, [0x18, 0x01]);
        assert!(SegmentManifest::from_block(&wide).is_err());
        assert!(SegmentManifest::from_block(&canonical).is_ok());
    }
}
