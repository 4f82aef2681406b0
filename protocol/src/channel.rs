//! Live channels: who may publish, and the two signed documents they publish.
//!
//! A channel is an ed25519 key pair held by its broadcaster; its id is the
//! public key in multibase (base58btc, `z…`). The broadcaster signs
//!
//! - an [`Announcement`] for every new segment of every rendition, sent on
//!   the rendition's gossipsub topic. It carries the segment manifest inline,
//!   so a viewer can ask for shards the moment it hears of a segment, with no
//!   round trip for the manifest;
//! - a [`ChannelRecord`], kept in the DHT: renditions, HTTP origins, and the
//!   last few segments of each rendition, so that a late joiner can build a
//!   playlist at once instead of waiting for the next announcements.
//!
//! Both travel in the same [`Envelope`]: a version, the body as bytes, and a
//! signature over a domain tag and the body. Opening one checks, in order:
//! its size, the envelope's form, the signature (against the channel the
//! caller expects, never a key named inside the message), and only then
//! decodes the body — strictly, with every length bounded before it is
//! allocated and the encoding required to be canonical.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::block::Cid;
use crate::bounded;
use crate::manifest::{MAX_TEXT, ManifestError, SegmentManifest};

/// Version of the envelope and of the bodies it carries.
pub const CHANNEL_VERSION: u64 = 1;

/// Largest announcement: a segment manifest of the maximum 256 shards is
/// about 9.5 KiB; 16 KiB leaves room for the rest and keeps a flood cheap
/// to refuse (gossipsub itself stops at 64 KiB).
pub const MAX_ANNOUNCEMENT_BYTES: usize = 16 << 10;

/// Largest channel record. Kademlia refuses records over 65 KiB; 32 KiB
/// holds 32 renditions with a full window each.
pub const MAX_RECORD_BYTES: usize = 32 << 10;

/// Segments per rendition a channel record lists: enough for a late joiner
/// to start three target durations behind the live edge with room to spare.
pub const RECORD_WINDOW: usize = 6;

/// HTTP origins a channel may name.
pub const MAX_ORIGINS: usize = 8;

/// Longest origin URL.
pub const MAX_URL: usize = 1024;

/// Longest publisher peer id (a multihash of an ed25519 or larger key).
pub const MAX_PUBLISHER_ID: usize = 64;

/// Renditions of a live channel.
pub const MAX_LIVE_RENDITIONS: usize = 16;

/// Parts of one segment: 10 s segments (the longest a broadcast takes) of
/// 100 ms parts, with room to spare. The gateway names parts by their
/// place, so the bound keeps those names short.
pub const MAX_PARTS_PER_SEGMENT: u32 = 256;

const ANNOUNCEMENT_TAG: &[u8] = b"shoal/announcement/1\0";
const RECORD_TAG: &[u8] = b"shoal/channel-record/1\0";

/// Why a channel message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelError {
    #[error("message is {len} bytes, over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("version {0} is not supported (this shoal reads version {CHANNEL_VERSION})")]
    UnsupportedVersion(u64),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("not in canonical dag-cbor form")]
    NonCanonical,
    #[error("bad signature: not signed by channel {0}")]
    BadSignature(ChannelId),
    #[error("message is for channel {found}, expected {expected}")]
    WrongChannel {
        expected: ChannelId,
        found: ChannelId,
    },
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("segment manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("not a channel id: {0}")]
    BadId(String),
}

/// A channel's public key, which is its name on the network.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId([u8; 32]);

impl ChannelId {
    /// The id of a public key; `None` if the bytes are not a valid ed25519
    /// point.
    pub fn from_bytes(bytes: [u8; 32]) -> Option<Self> {
        VerifyingKey::from_bytes(&bytes)
            .ok()
            .map(|_| ChannelId(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn key(&self) -> VerifyingKey {
        // Only valid points are ever wrapped (`from_bytes`, `ChannelKey`).
        VerifyingKey::from_bytes(&self.0).expect("a channel id is a valid key")
    }

    /// The gossipsub topic of one rendition.
    pub fn topic(&self, rendition: u16) -> String {
        format!("/shoal/live/1/{self}/{rendition}")
    }

    /// The DHT key of the channel's record (and its provider records).
    pub fn record_key(&self) -> Vec<u8> {
        let mut key = RECORD_KEY_PREFIX.to_vec();
        key.extend_from_slice(&self.0);
        key
    }

    /// The DHT key of one of the channel's provider buckets
    /// ([`crate::live::PROVIDER_BUCKETS`]): the record key, `/b/` and the
    /// bucket's number.
    pub fn bucket_key(&self, bucket: u16) -> Vec<u8> {
        let mut key = self.record_key();
        key.extend_from_slice(b"/b/");
        key.extend_from_slice(&bucket.to_be_bytes());
        key
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&multibase::encode(multibase::Base::Base58Btc, self.0))
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelId({self})")
    }
}

impl FromStr for ChannelId {
    type Err = ChannelError;

    fn from_str(s: &str) -> Result<Self, ChannelError> {
        let bad = |why: &str| ChannelError::BadId(format!("{s:?}: {why}"));
        if s.len() > 128 {
            return Err(bad("too long"));
        }
        let (_, bytes) = multibase::decode(s).map_err(|e| bad(&e.to_string()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| bad("not a 32-byte ed25519 public key"))?;
        ChannelId::from_bytes(bytes).ok_or_else(|| bad("not a valid ed25519 public key"))
    }
}

/// A channel's secret key: what lets a broadcaster publish.
pub struct ChannelKey(SigningKey);

impl ChannelKey {
    /// The key whose secret is `seed` (32 random bytes, kept by the caller).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        ChannelKey(SigningKey::from_bytes(seed))
    }

    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn id(&self) -> ChannelId {
        ChannelId(self.0.verifying_key().to_bytes())
    }

    fn seal<T: Serialize>(&self, tag: &[u8], body: &T) -> Vec<u8> {
        let body = to_dag_cbor(body);
        let mut signed = Vec::with_capacity(tag.len() + body.len());
        signed.extend_from_slice(tag);
        signed.extend_from_slice(&body);
        let signature = self.0.sign(&signed).to_bytes().to_vec();
        to_dag_cbor(&Envelope {
            version: CHANNEL_VERSION,
            body,
            signature,
        })
    }

    /// Signs an announcement of `manifest` (a segment manifest block).
    pub fn announce(
        &self,
        rendition: u16,
        sequence: u64,
        published_ms: u64,
        uri: &str,
        publisher: &[u8],
        manifest: Vec<u8>,
    ) -> Vec<u8> {
        self.sign_announcement(Announcement {
            version: CHANNEL_VERSION,
            channel: Vec::new(),
            rendition,
            sequence,
            published_ms,
            uri: uri.to_owned(),
            publisher: publisher.to_vec(),
            manifest,
            part: None,
        })
    }

    /// Signs an announcement (of a part, say) as this channel: its
    /// `channel` and `version` are set here.
    pub fn sign_announcement(&self, mut a: Announcement) -> Vec<u8> {
        a.version = CHANNEL_VERSION;
        a.channel = self.id().0.to_vec();
        self.seal(ANNOUNCEMENT_TAG, &a)
    }

    /// Signs a channel record. The record's `channel` is set to this key.
    pub fn sign_record(&self, record: &ChannelRecord) -> Vec<u8> {
        let mut record = record.clone();
        record.version = CHANNEL_VERSION;
        record.channel = self.id().0.to_vec();
        self.seal(RECORD_TAG, &record)
    }
}

/// Signed wrapper of an announcement or a record.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    version: u64,
    #[serde(with = "serde_bytes_strict")]
    body: Vec<u8>,
    #[serde(with = "serde_bytes_strict")]
    signature: Vec<u8>,
}

/// A new segment on one rendition of a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announcement {
    pub version: u64,
    #[serde(with = "serde_bytes_strict")]
    pub channel: Vec<u8>,
    pub rendition: u16,
    /// The segment's media sequence number; strictly increasing per
    /// rendition.
    pub sequence: u64,
    /// When the broadcaster published it, in Unix milliseconds.
    pub published_ms: u64,
    /// The segment's file name, relative to its media playlist: where an
    /// HTTP origin serves it.
    #[serde(deserialize_with = "bounded::string::<_, MAX_TEXT>")]
    pub uri: String,
    /// The libp2p peer id (its bytes) of the node that publishes the
    /// channel: viewers take the segment's source from here, signed by the
    /// channel, not from whoever relayed the message first.
    #[serde(with = "serde_bytes_strict")]
    pub publisher: Vec<u8>,
    /// The segment manifest block (dag-cbor). Its CID is computed from
    /// these bytes rather than carried beside them, so the two cannot
    /// disagree.
    #[serde(with = "serde_bytes_strict")]
    pub manifest: Vec<u8>,
    /// Set when what is announced is a part of a segment (low-latency
    /// live): the unit the swarm moves is then the part, `sequence`
    /// counts parts, and a segment is its parts back to back. Absent for
    /// a whole segment, so those announcements read as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<PartOf>,
}

/// Where an announced part sits: its segment and its place in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartOf {
    /// The segment's media sequence number.
    pub segment: u64,
    /// Its place in the segment, from 0.
    pub index: u32,
    /// Its first sample decodes alone (`INDEPENDENT=YES`): a player may
    /// start here. A segment's first part always does.
    pub independent: bool,
}

/// An announcement whose signature and contents have been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedAnnouncement {
    pub channel: ChannelId,
    pub rendition: u16,
    pub sequence: u64,
    pub published_ms: u64,
    pub uri: String,
    pub publisher: Vec<u8>,
    pub manifest_cid: Cid,
    pub manifest_bytes: Vec<u8>,
    pub manifest: SegmentManifest,
    pub part: Option<PartOf>,
}

impl Announcement {
    /// Opens an announcement that claims to come from `channel`.
    pub fn open(channel: &ChannelId, bytes: &[u8]) -> Result<VerifiedAnnouncement, ChannelError> {
        let body = open_envelope(channel, ANNOUNCEMENT_TAG, bytes, MAX_ANNOUNCEMENT_BYTES)?;
        let a: Announcement = from_dag_cbor(&body)?;
        check_channel(channel, &a.channel)?;
        if a.version != CHANNEL_VERSION {
            return Err(ChannelError::UnsupportedVersion(a.version));
        }
        if !is_safe_relative_path(&a.uri) {
            return Err(ChannelError::Invalid(format!(
                "segment uri {:?} is not a plain relative path",
                a.uri
            )));
        }
        if a.publisher.is_empty() || a.publisher.len() > MAX_PUBLISHER_ID {
            return Err(ChannelError::Invalid(format!(
                "publisher id of {} bytes",
                a.publisher.len()
            )));
        }
        if let Some(p) = &a.part {
            if p.index >= MAX_PARTS_PER_SEGMENT {
                return Err(ChannelError::Invalid(format!(
                    "part {} of a segment; at most {MAX_PARTS_PER_SEGMENT}",
                    p.index
                )));
            }
            if p.index == 0 && !p.independent {
                return Err(ChannelError::Invalid(
                    "a segment's first part does not decode alone".into(),
                ));
            }
        }
        let manifest = SegmentManifest::from_block(&a.manifest)?;
        if manifest.index != a.sequence {
            return Err(ChannelError::Invalid(format!(
                "sequence {} announces segment manifest {}",
                a.sequence, manifest.index
            )));
        }
        Ok(VerifiedAnnouncement {
            channel: *channel,
            rendition: a.rendition,
            sequence: a.sequence,
            published_ms: a.published_ms,
            uri: a.uri,
            publisher: a.publisher,
            manifest_cid: crate::block::cid_of(crate::block::Codec::DagCbor, &a.manifest),
            manifest_bytes: a.manifest,
            manifest,
            part: a.part,
        })
    }
}

/// A recent segment listed in a channel record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(u64, Cid, u64)", into = "(u64, Cid, u64)")]
pub struct RecentSegment {
    pub sequence: u64,
    pub manifest: Cid,
    pub duration_us: u64,
}

impl From<(u64, Cid, u64)> for RecentSegment {
    fn from((sequence, manifest, duration_us): (u64, Cid, u64)) -> Self {
        RecentSegment {
            sequence,
            manifest,
            duration_us,
        }
    }
}

impl From<RecentSegment> for (u64, Cid, u64) {
    fn from(s: RecentSegment) -> Self {
        (s.sequence, s.manifest, s.duration_us)
    }
}

/// One rendition of a live channel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveRendition {
    /// The media playlist, relative to the channel's origin URLs.
    #[serde(deserialize_with = "bounded::string::<_, MAX_TEXT>")]
    pub playlist: String,
    /// Peak bits per second (EXT-X-STREAM-INF BANDWIDTH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded::opt_string::<_, MAX_TEXT>"
    )]
    pub resolution: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded::opt_string::<_, MAX_TEXT>"
    )]
    pub codecs: Option<String>,
    /// Segment manifest of the fMP4 initialisation section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Cid>,
    /// File extension of the media segments (`ts`, `m4s`).
    #[serde(deserialize_with = "bounded::string::<_, MAX_TEXT>")]
    pub segment_extension: String,
    /// Set for a low-latency rendition, whose announcements are parts:
    /// the longest part so far, in microseconds. A viewer knows from the
    /// record, before any part comes, not to proxy an origin's playlist
    /// of whole segments. Absent otherwise, so other records read as
    /// before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_target_us: Option<u64>,
    /// The newest segments, oldest first.
    #[serde(deserialize_with = "bounded::vec::<_, _, RECORD_WINDOW>")]
    pub recent: Vec<RecentSegment>,
}

/// What a late joiner needs to find a channel's live edge.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRecord {
    pub version: u64,
    #[serde(with = "serde_bytes_strict")]
    pub channel: Vec<u8>,
    #[serde(deserialize_with = "bounded::string::<_, MAX_TEXT>")]
    pub name: String,
    /// Increases with every record the broadcaster signs: a node keeps the
    /// highest it has seen.
    pub sequence: u64,
    /// Unix milliseconds after which the record is stale.
    pub expires_ms: u64,
    /// EXT-X-TARGETDURATION, in microseconds.
    pub target_duration_us: u64,
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_LIVE_RENDITIONS>")]
    pub renditions: Vec<LiveRendition>,
    /// HTTP origins serving the same segments by their encoder file names.
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_ORIGINS>")]
    pub origins: Vec<Origin>,
    /// The address the channel's creator is paid at (20 bytes), or none:
    /// bound into the content id viewers sign receipts for
    /// ([`crate::receipt::content_id`]), so that funding the channel pays
    /// this address and no other. A channel without one earns nothing.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "serde_bytes_strict"
    )]
    pub creator: Vec<u8>,
}

/// An HTTP origin (CDN) URL: the directory the encoder's playlists are
/// served from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Origin(#[serde(deserialize_with = "bounded::string::<_, MAX_URL>")] pub String);

impl ChannelRecord {
    /// The creator's address, if the record names one.
    pub fn creator(&self) -> Option<alloy_primitives::Address> {
        alloy_primitives::Address::try_from(self.creator.as_slice()).ok()
    }

    /// Opens a record that claims to describe `channel`.
    pub fn open(channel: &ChannelId, bytes: &[u8]) -> Result<ChannelRecord, ChannelError> {
        let body = open_envelope(channel, RECORD_TAG, bytes, MAX_RECORD_BYTES)?;
        let r: ChannelRecord = from_dag_cbor(&body)?;
        check_channel(channel, &r.channel)?;
        if r.version != CHANNEL_VERSION {
            return Err(ChannelError::UnsupportedVersion(r.version));
        }
        if r.renditions.is_empty() {
            return Err(ChannelError::Invalid("a channel has no renditions".into()));
        }
        if !matches!(r.creator.len(), 0 | 20) {
            return Err(ChannelError::Invalid(format!(
                "the creator's address is {} bytes, not 20",
                r.creator.len()
            )));
        }
        for o in &r.origins {
            check_origin(&o.0).map_err(ChannelError::Invalid)?;
        }
        for (i, rendition) in r.renditions.iter().enumerate() {
            if !is_safe_relative_path(&rendition.playlist) {
                return Err(ChannelError::Invalid(format!(
                    "rendition {i}: playlist {:?} is not a plain relative path",
                    rendition.playlist
                )));
            }
            if !rendition
                .recent
                .windows(2)
                .all(|w| w[0].sequence < w[1].sequence)
            {
                return Err(ChannelError::Invalid(format!(
                    "rendition {i}: recent segments are not in sequence order"
                )));
            }
        }
        Ok(r)
    }
}

/// Checks an HTTP origin's URL (a channel record's, a broadcaster's, or a
/// playlist a viewer names): http or https with a host, at most
/// [`MAX_URL`] bytes, no whitespace or control characters.
pub fn check_origin(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let host = rest.and_then(|r| r.split(['/', '?', '#']).next());
    if url.len() > MAX_URL
        || host.is_none_or(str::is_empty)
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "invalid origin {url:?}: an origin is an http:// or https:// URL"
        ));
    }
    Ok(())
}

/// The key prefix of channel records in the DHT ([`ChannelId::record_key`]).
pub const RECORD_KEY_PREFIX: &[u8] = b"/shoal/channel/";

/// Checks a record someone wants stored in the DHT: a channel record under
/// its own channel's key, within the size limit, correctly signed.
pub fn open_dht_record(
    key: &[u8],
    value: &[u8],
) -> Result<(ChannelId, ChannelRecord), ChannelError> {
    if value.len() > MAX_RECORD_BYTES {
        return Err(ChannelError::TooLarge {
            len: value.len(),
            max: MAX_RECORD_BYTES,
        });
    }
    let id = key
        .strip_prefix(RECORD_KEY_PREFIX)
        .and_then(|rest| <[u8; 32]>::try_from(rest).ok())
        .and_then(ChannelId::from_bytes)
        .ok_or_else(|| ChannelError::Malformed("not a channel record key".into()))?;
    let record = ChannelRecord::open(&id, value)?;
    Ok((id, record))
}

/// A relative path of plain file names (`a/b.ts`): nothing that climbs out
/// of the origin's directory or names another host.
pub fn is_safe_relative_path(path: &str) -> bool {
    path.len() <= MAX_TEXT && path.split('/').all(crate::manifest::is_safe_file_name)
}

fn check_channel(expected: &ChannelId, found: &[u8]) -> Result<(), ChannelError> {
    if found != expected.0 {
        let found = <[u8; 32]>::try_from(found)
            .ok()
            .and_then(ChannelId::from_bytes)
            .ok_or_else(|| ChannelError::Malformed("channel is not a public key".into()))?;
        return Err(ChannelError::WrongChannel {
            expected: *expected,
            found,
        });
    }
    Ok(())
}

/// Checks size, envelope and signature; returns the body, still encoded.
fn open_envelope(
    channel: &ChannelId,
    tag: &[u8],
    bytes: &[u8],
    max: usize,
) -> Result<Vec<u8>, ChannelError> {
    if bytes.len() > max {
        return Err(ChannelError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let envelope: Envelope = from_dag_cbor(bytes)?;
    if envelope.version != CHANNEL_VERSION {
        return Err(ChannelError::UnsupportedVersion(envelope.version));
    }
    let signature = Signature::from_slice(&envelope.signature)
        .map_err(|_| ChannelError::BadSignature(*channel))?;
    let mut signed = Vec::with_capacity(tag.len() + envelope.body.len());
    signed.extend_from_slice(tag);
    signed.extend_from_slice(&envelope.body);
    channel
        .key()
        .verify(&signed, &signature)
        .map_err(|_| ChannelError::BadSignature(*channel))?;
    Ok(envelope.body)
}

fn to_dag_cbor<T: Serialize>(value: &T) -> Vec<u8> {
    // Only integers, strings, bytes, lists and CIDs: encoding cannot fail.
    serde_ipld_dagcbor::to_vec(value).expect("channel message encodes")
}

/// Decodes strictly: the value must re-encode to the same bytes.
fn from_dag_cbor<T: Serialize + for<'de> Deserialize<'de>>(
    bytes: &[u8],
) -> Result<T, ChannelError> {
    let value: T = serde_ipld_dagcbor::from_slice(bytes)
        .map_err(|e| ChannelError::Malformed(e.to_string()))?;
    if serde_ipld_dagcbor::to_vec(&value).ok().as_deref() != Some(bytes) {
        return Err(ChannelError::NonCanonical);
    }
    Ok(value)
}

/// Byte strings as CBOR bytes (not lists of integers), bounded on decode by
/// the message's own size limit, which is checked before decoding.
mod serde_bytes_strict {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        crate::bounded::bytes::<D, { super::MAX_RECORD_BYTES }>(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{self, Codec};

    fn key(n: u8) -> ChannelKey {
        ChannelKey::from_seed(&[n; 32])
    }

    fn manifest(index: u64) -> Vec<u8> {
        let shard = block::cid_of(Codec::Raw, b"shard");
        SegmentManifest {
            version: 1,
            index,
            length: 10,
            duration_us: Some(2_000_000),
            hash: block::sha256_multihash(&block::sha256(b"0123456789")).to_bytes(),
            k: 2,
            m: 1,
            shard_size: 6,
            shards: vec![shard; 3],
        }
        .to_block()
        .1
    }

    #[test]
    fn channel_ids_round_trip_and_refuse_garbage() {
        let id = key(1).id();
        let text = id.to_string();
        assert!(text.starts_with('z'));
        assert_eq!(text.parse::<ChannelId>().unwrap(), id);
        for bad in ["", "z", "zzzz", "not a channel", &"z".repeat(200), "f00"] {
            assert!(matches!(
                bad.parse::<ChannelId>(),
                Err(ChannelError::BadId(_))
            ));
        }
    }

    #[test]
    fn announcements_open_only_under_their_channel_key() {
        let k = key(1);
        let m = manifest(7);
        let bytes = k.announce(0, 7, 1000, "seg7.ts", b"peer", m.clone());
        let a = Announcement::open(&k.id(), &bytes).unwrap();
        assert_eq!((a.rendition, a.sequence, a.published_ms), (0, 7, 1000));
        assert_eq!(a.manifest_cid, block::cid_of(Codec::DagCbor, &m));
        assert_eq!(a.manifest.index, 7);

        // Signed by somebody else, but sent on this channel's topic.
        let forged = key(2).announce(0, 8, 1000, "seg8.ts", b"peer", manifest(8));
        assert_eq!(
            Announcement::open(&k.id(), &forged),
            Err(ChannelError::BadSignature(k.id()))
        );
        // A flipped byte anywhere breaks the signature or the form.
        for i in [bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(Announcement::open(&k.id(), &bad).is_err());
        }
    }

    #[test]
    fn a_part_announcement_says_where_the_part_sits_and_is_checked() {
        let k = key(1);
        let part = |segment, index, independent| Announcement {
            version: 0,
            channel: Vec::new(),
            rendition: 0,
            sequence: 7,
            published_ms: 1000,
            uri: "3.2.m4s".into(),
            publisher: b"peer".to_vec(),
            manifest: manifest(7),
            part: Some(PartOf {
                segment,
                index,
                independent,
            }),
        };
        let a = Announcement::open(&k.id(), &k.sign_announcement(part(3, 2, false))).unwrap();
        let expected = PartOf {
            segment: 3,
            index: 2,
            independent: false,
        };
        assert_eq!(a.part, Some(expected));
        // A whole segment's announcement carries no part, and its bytes
        // are what they were before parts existed.
        let whole = k.announce(0, 7, 1000, "seg7.ts", b"peer", manifest(7));
        assert_eq!(Announcement::open(&k.id(), &whole).unwrap().part, None);
        let mut plain = part(0, 0, true);
        plain.uri = "seg7.ts".into();
        plain.part = None;
        assert_eq!(k.sign_announcement(plain), whole);
        // A first part that cannot start playback, and a part past the
        // limit, are refused although signed.
        for bad in [part(3, 0, false), part(3, MAX_PARTS_PER_SEGMENT, true)] {
            assert!(matches!(
                Announcement::open(&k.id(), &k.sign_announcement(bad)),
                Err(ChannelError::Invalid(_))
            ));
        }
    }

    #[test]
    fn announcements_refuse_bad_bodies_even_when_signed() {
        let k = key(1);
        // The sequence disagrees with the manifest it carries.
        let bytes = k.announce(0, 8, 1000, "seg8.ts", b"peer", manifest(7));
        assert!(matches!(
            Announcement::open(&k.id(), &bytes),
            Err(ChannelError::Invalid(_))
        ));
        // The manifest is not one.
        let bytes = k.announce(0, 7, 1000, "seg7.ts", b"peer", b"garbage".to_vec());
        assert!(matches!(
            Announcement::open(&k.id(), &bytes),
            Err(ChannelError::Manifest(_))
        ));
        // A segment path that climbs out of the origin's directory.
        let bytes = k.announce(0, 7, 1000, "../../etc/passwd", b"peer", manifest(7));
        assert!(matches!(
            Announcement::open(&k.id(), &bytes),
            Err(ChannelError::Invalid(_))
        ));
        // Oversized: refused before anything is decoded.
        let huge = vec![0u8; MAX_ANNOUNCEMENT_BYTES + 1];
        assert!(matches!(
            Announcement::open(&k.id(), &huge),
            Err(ChannelError::TooLarge { .. })
        ));
        // A record is not an announcement, though the key is right.
        let record = k.sign_record(&record());
        assert_eq!(
            Announcement::open(&k.id(), &record),
            Err(ChannelError::BadSignature(k.id()))
        );
    }

    fn record() -> ChannelRecord {
        ChannelRecord {
            name: "news".into(),
            sequence: 3,
            expires_ms: 99,
            target_duration_us: 2_000_000,
            renditions: vec![LiveRendition {
                playlist: "index.m3u8".into(),
                segment_extension: "ts".into(),
                recent: vec![
                    RecentSegment {
                        sequence: 4,
                        manifest: block::cid_of(Codec::DagCbor, &manifest(4)),
                        duration_us: 2_000_000,
                    },
                    RecentSegment {
                        sequence: 5,
                        manifest: block::cid_of(Codec::DagCbor, &manifest(5)),
                        duration_us: 2_000_000,
                    },
                ],
                ..LiveRendition::default()
            }],
            origins: vec![Origin("http://127.0.0.1:8080/live".into())],
            ..ChannelRecord::default()
        }
    }

    #[test]
    fn records_round_trip_and_are_checked() {
        let k = key(1);
        let bytes = k.sign_record(&record());
        let r = ChannelRecord::open(&k.id(), &bytes).unwrap();
        assert_eq!(r.name, "news");
        assert_eq!(r.channel, k.id().as_bytes().to_vec());
        assert_eq!(r.renditions[0].recent.len(), 2);
        assert_eq!(r.creator(), None);
        // A creator's address is kept; one of another length is refused.
        let mut paid = record();
        paid.creator = vec![7; 20];
        let r = ChannelRecord::open(&k.id(), &k.sign_record(&paid)).unwrap();
        assert_eq!(r.creator(), Some(alloy_primitives::Address::repeat_byte(7)));
        paid.creator = vec![7; 19];
        assert!(matches!(
            ChannelRecord::open(&k.id(), &k.sign_record(&paid)),
            Err(ChannelError::Invalid(_))
        ));
        // Another channel's record under this channel's key.
        let other = key(2).sign_record(&record());
        assert_eq!(
            ChannelRecord::open(&k.id(), &other),
            Err(ChannelError::BadSignature(k.id()))
        );
        // Signed, but nonsense inside.
        let mut bad = record();
        bad.origins = vec![Origin("file:///etc/passwd".into())];
        assert!(matches!(
            ChannelRecord::open(&k.id(), &k.sign_record(&bad)),
            Err(ChannelError::Invalid(_))
        ));
        let mut bad = record();
        bad.renditions[0].recent.reverse();
        assert!(matches!(
            ChannelRecord::open(&k.id(), &k.sign_record(&bad)),
            Err(ChannelError::Invalid(_))
        ));
        let mut bad = record();
        bad.renditions[0].recent = vec![bad.renditions[0].recent[0]; RECORD_WINDOW + 1];
        assert!(matches!(
            ChannelRecord::open(&k.id(), &k.sign_record(&bad)),
            Err(ChannelError::Malformed(_))
        ));
    }

    #[test]
    fn origins_are_http_urls_with_a_host() {
        assert!(check_origin("https://cdn.example/live/index.m3u8").is_ok());
        assert!(check_origin("http://127.0.0.1:8080").is_ok());
        for bad in [
            "ftp://x/y",
            "http://",
            "https:///x",
            "http://a b/c",
            "index.m3u8",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
        assert!(check_origin(&format!("https://a.example/{}", "x".repeat(MAX_URL))).is_err());
    }
}
